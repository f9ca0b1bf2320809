//! Brute force and abuse, end to end: growing delays for failed logins,
//! per-address and per-user failure caps, trusted networks, the
//! bad-command limit, odd spellings of a user name, and dropping root.
//!
//! Delays are checked as lower bounds only (the server must hold a reply
//! at least that long); how much longer a busy machine takes is not the
//! server's doing.

mod common;

use common::{Client, Fixture, TestServer};
use std::time::{Duration, Instant};

/// Alice and Bob, one message each.
fn fixture() -> Fixture {
    Fixture::new()
        .user("alice", "secret")
        .user("bob", "hunter2")
        .message("alice", &b"Subject: a\n\nfor alice\n"[..])
        .message("bob", &b"Subject: b\n\nfor bob\n"[..])
}

/// Sends USER and PASS and returns the reply to PASS and how long it took.
fn attempt(client: &mut Client, user: &str, password: &str) -> (String, Duration) {
    client.ok(&format!("USER {user}"));
    let started = Instant::now();
    let reply = client.command(&format!("PASS {password}"));
    (reply, started.elapsed())
}

#[test]
fn failed_login_delays_double_per_address_up_to_the_cap() {
    let server = TestServer::start(
        fixture()
            .limit("auth_failure_delay_ms", 100)
            .limit("auth_failure_delay_max_ms", 400)
            .limit("max_auth_failures_per_ip", 0)
            .limit("max_auth_failures_per_user", 0),
    );
    let mut c = server.connect();
    c.greeting();
    let mut took = Vec::new();
    for _ in 0..4 {
        let (reply, elapsed) = attempt(&mut c, "alice", "wrong");
        assert_eq!(reply, "-ERR [AUTH] Authentication failed");
        took.push(elapsed);
    }
    // A new connection from the same address continues the count.
    let mut again = server.connect();
    again.greeting();
    let (reply, elapsed) = attempt(&mut again, "nobody", "wrong");
    assert_eq!(reply, "-ERR [AUTH] Authentication failed");
    took.push(elapsed);
    let minimum = [100, 200, 400, 400, 400].map(Duration::from_millis);
    for (i, (took, minimum)) in took.iter().zip(minimum).enumerate() {
        assert!(
            *took >= minimum,
            "failure {} was answered after {took:?}, before the {minimum:?} penalty",
            i + 1
        );
    }
    // The client is still served normally afterwards.
    c.ok("USER alice");
    c.ok("PASS secret");
    c.ok("QUIT");
}

#[test]
fn an_address_over_its_failure_cap_is_refused_without_a_password_check() {
    let server = TestServer::start(
        fixture()
            .limit("auth_failure_delay_ms", 1)
            .limit("auth_failure_delay_max_ms", 1)
            .limit("max_auth_failures_per_ip", 3)
            .limit("max_auth_failures_per_user", 0),
    );
    let mut c = server.connect();
    c.greeting();
    for user in ["alice", "bob", "carol"] {
        let (reply, _) = attempt(&mut c, user, "wrong");
        assert_eq!(reply, "-ERR [AUTH] Authentication failed");
    }
    // Even the right password is not accepted now, on any connection.
    let (reply, _) = attempt(&mut c, "alice", "secret");
    assert_eq!(
        reply,
        "-ERR [AUTH] Too many failed logins from your address; try again later"
    );
    let mut fresh = server.connect();
    fresh.greeting();
    let (reply, _) = attempt(&mut fresh, "bob", "hunter2");
    assert!(
        reply.starts_with("-ERR [AUTH] Too many failed logins"),
        "{reply}"
    );
    let log = server.log();
    assert!(
        log.contains("login refused user=\"alice\" remote=127.0.0.1 method=USER blocked=address"),
        "{log}"
    );
}

#[test]
fn a_success_forgives_the_address_its_failures() {
    let server = TestServer::start(
        fixture()
            .limit("auth_failure_delay_ms", 1)
            .limit("auth_failure_delay_max_ms", 1)
            .limit("max_auth_failures_per_ip", 3)
            .limit("max_auth_failures_per_user", 0),
    );
    let mut c = server.connect();
    c.greeting();
    for _ in 0..2 {
        assert!(attempt(&mut c, "bob", "wrong")
            .0
            .starts_with("-ERR [AUTH] Authentication"));
    }
    let (reply, _) = attempt(&mut c, "alice", "secret");
    assert!(reply.starts_with("+OK"), "{reply}");
    c.ok("QUIT");
    // Four failures in all, but only two since the success: not blocked.
    let mut c = server.connect();
    c.greeting();
    for _ in 0..2 {
        assert!(attempt(&mut c, "bob", "wrong")
            .0
            .starts_with("-ERR [AUTH] Authentication"));
    }
    let (reply, _) = attempt(&mut c, "bob", "hunter2");
    assert!(reply.starts_with("+OK"), "{reply}");
}

#[test]
fn a_user_over_its_failure_cap_is_refused_but_others_are_not() {
    let server = TestServer::start(
        fixture()
            .limit("auth_failure_delay_ms", 1)
            .limit("auth_failure_delay_max_ms", 1)
            .limit("max_auth_failures_per_ip", 0)
            .limit("max_auth_failures_per_user", 2),
    );
    let mut c = server.connect();
    c.greeting();
    for _ in 0..2 {
        let (reply, _) = attempt(&mut c, "alice", "guess");
        assert_eq!(reply, "-ERR [AUTH] Authentication failed");
    }
    let (reply, _) = attempt(&mut c, "alice", "secret");
    assert_eq!(
        reply,
        "-ERR [SYS/TEMP] Too many failed logins for this user; try again later"
    );
    let (reply, _) = attempt(&mut c, "bob", "hunter2");
    assert!(reply.starts_with("+OK"), "{reply}");
}

#[test]
fn trusted_networks_are_exempt_from_caps() {
    let server = TestServer::start(
        fixture()
            .top_level("trusted_networks", "[\"127.0.0.0/8\", \"::1/128\"]")
            .limit("auth_failure_delay_ms", 1)
            .limit("auth_failure_delay_max_ms", 1)
            .limit("max_auth_failures_per_ip", 2)
            .limit("max_auth_failures_per_user", 2),
    );
    let mut c = server.connect();
    c.greeting();
    for _ in 0..5 {
        let (reply, _) = attempt(&mut c, "alice", "guess");
        assert_eq!(reply, "-ERR [AUTH] Authentication failed");
    }
    let (reply, _) = attempt(&mut c, "alice", "secret");
    assert!(reply.starts_with("+OK"), "{reply}");
}

#[test]
fn too_many_bad_commands_before_login_close_the_connection() {
    let server = TestServer::start(fixture().limit("max_bad_commands", 3));
    let mut c = server.connect();
    c.greeting();
    c.err("XYZZY");
    let long = format!("NOOP {}", "x".repeat(400));
    c.err(&long);
    c.ok("CAPA");
    while c.read_line() != b".\r\n" {}
    assert_eq!(c.command("RETR x"), "-ERR Too many bad commands, closing");
    assert_eq!(c.read_to_close(), b"");

    // After login, mistakes do not count: a client may be buggy but it
    // has proved who it is.
    let mut c = server.login("alice", "secret");
    for _ in 0..5 {
        c.err("XYZZY");
    }
    c.ok("STAT");
    c.ok("QUIT");
}

#[test]
fn odd_spellings_of_a_user_name_never_log_in_as_that_user() {
    let server = TestServer::start(
        fixture()
            .limit("auth_failure_delay_ms", 1)
            .limit("auth_failure_delay_max_ms", 1)
            .limit("max_auth_failures_per_ip", 0)
            .limit("max_auth_failures_per_user", 0)
            .limit("max_bad_commands", 0),
    );
    let long = "alice".repeat(60);
    let spellings: [&[u8]; 7] = [
        b"alice\0x",
        b"alice\0",
        b"ALICE",
        b"Alice",
        b"alice\t",
        b"alice\x0bx",
        long.as_bytes(),
    ];
    for name in spellings {
        let mut c = server.connect();
        c.greeting();
        let mut line = b"USER ".to_vec();
        line.extend_from_slice(name);
        line.extend_from_slice(b"\r\n");
        c.send(&line);
        let user_reply = c.read_line_str();
        // The name is refused at USER, or the password is at PASS; either
        // way nobody is logged in.
        let pass_reply = c.command("PASS secret");
        assert!(
            pass_reply.starts_with("-ERR"),
            "USER {:?} (reply {user_reply:?}) then alice's password logged in: {pass_reply}",
            String::from_utf8_lossy(name)
        );
        assert!(c.command("STAT").starts_with("-ERR"));
    }
    // Blanks around the name separate it from the command (RFC 1939
    // syntax); they are not part of it, so these are alice herself, and
    // still only with her password.
    for spelling in ["USER  alice", "USER alice "] {
        let mut c = server.connect();
        c.greeting();
        c.ok(spelling);
        assert!(c.command("PASS hunter2").starts_with("-ERR"));
        c.ok(spelling);
        c.ok("PASS secret");
        c.ok("QUIT");
    }
}

/// Uid and Gid lines of /proc/PID/status: real, effective, saved, fs.
fn ids(pid: u32) -> (String, String) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    (line("Uid:"), line("Gid:"))
}

/// The id of `name` in /etc/passwd or /etc/group.
fn id_of(file: &str, name: &str) -> Option<String> {
    std::fs::read_to_string(file)
        .ok()?
        .lines()
        .find(|l| l.starts_with(&format!("{name}:")))
        .and_then(|l| l.split(':').nth(2))
        .map(str::to_string)
}

#[test]
fn started_as_root_it_serves_as_the_configured_user() {
    let (uid, _) = ids(std::process::id());
    if !uid.starts_with("0 ") {
        eprintln!("skipped: privileges can only be dropped when the tests run as root");
        return;
    }
    let (Some(nobody), Some(nogroup)) = (
        id_of("/etc/passwd", "nobody"),
        id_of("/etc/group", "nogroup"),
    ) else {
        eprintln!("skipped: no user nobody or group nogroup on this system");
        return;
    };
    let server = TestServer::start(
        fixture()
            .top_level("user", "Some(\"nobody\")")
            .top_level("group", "Some(\"nogroup\")"),
    );
    let (uid, gid) = ids(server.pid());
    assert_eq!(
        uid,
        [nobody.as_str(); 4].join(" "),
        "Uid line of the server"
    );
    assert_eq!(
        gid,
        [nogroup.as_str(); 4].join(" "),
        "Gid line of the server"
    );
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
    let groups = status.lines().find(|l| l.starts_with("Groups:")).unwrap();
    assert_eq!(
        groups.split_whitespace().nth(1),
        Some(nogroup.as_str()),
        "{groups}"
    );
    for thread in std::fs::read_dir(format!("/proc/{}/task", server.pid())).unwrap() {
        let tid: u32 = thread
            .unwrap()
            .file_name()
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(ids(tid).0, [nobody.as_str(); 4].join(" "), "thread {tid}");
    }

    // As nobody it can serve a maildir nobody may use; one it may not use
    // is refused rather than served with root's rights.
    let chmod = |mode: &str| {
        let ok = std::process::Command::new("chmod")
            .args(["-R", mode])
            .arg(server.dir().join("mail"))
            .status()
            .unwrap()
            .success();
        assert!(ok, "chmod failed");
    };
    chmod("a+rwX");
    let mut c = server.login("alice", "secret");
    let body = c.multiline("RETR 1").lines();
    assert!(body.contains(&"for alice".to_string()), "{body:?}");
    c.ok("DELE 1");
    c.ok("QUIT");
    assert!(!server.message_exists("alice", 1));
    chmod("go-rwx");
    let mut c = server.connect();
    c.greeting();
    c.ok("USER bob");
    let reply = c.command("PASS hunter2");
    assert!(
        reply.starts_with("-ERR"),
        "bob's root-only maildir was opened: {reply}"
    );
}

#[test]
fn started_as_root_without_user_it_refuses_to_serve() {
    let (uid, _) = ids(std::process::id());
    if !uid.starts_with("0 ") {
        eprintln!("skipped: the root check only applies when the tests run as root");
        return;
    }
    // The fixture's files and config, with allow_root turned off and a port
    // of its own.
    let server = TestServer::start(fixture());
    let text = std::fs::read_to_string(server.dir().join("server.ron")).unwrap();
    let port = common::free_port();
    let config = server.dir().join("as-root.ron");
    std::fs::write(
        &config,
        text.replace("allow_root: true", "allow_root: false")
            .replace(&server.addr().to_string(), &format!("127.0.0.1:{port}")),
    )
    .unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_pop3d"))
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("refusing to serve clients as root: set `user`"),
        "{stderr}"
    );
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}
