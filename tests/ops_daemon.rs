//! Running the daemon: SIGHUP reloads, graceful SIGTERM, the metrics
//! endpoint, systemd socket activation and SIGUSR1's log file reopening,
//! end to end against the real binary.

mod common;

use common::{big_message, free_port, unstuff, wire_form, Fixture, TestServer, IO_TIMEOUT};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn fixture() -> Fixture {
    Fixture::new()
        .user("alice", "secret")
        .user("bob", "hunter2")
        .message("alice", &b"Subject: a\n\nfor alice\n"[..])
        .message("alice", &b"Subject: a2\n\nagain for alice\n"[..])
        .message("bob", &b"Subject: b\n\nfor bob\n"[..])
}

/// Waits until the server's log contains `needle` `count` times; fails the
/// test with the log if it does not within [`IO_TIMEOUT`].
fn wait_for_log(server: &TestServer, needle: &str, count: usize) {
    let deadline = Instant::now() + IO_TIMEOUT;
    while server.log().matches(needle).count() < count {
        assert!(
            Instant::now() < deadline,
            "the log never said {needle:?} ({count} times):\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The server's config file (the harness writes it as `server.ron`).
fn config_path(server: &TestServer) -> PathBuf {
    server.dir().join("server.ron")
}

/// Rewrites the server's config with `edit` and sends SIGHUP.
fn reload_with(server: &TestServer, edit: impl FnOnce(String) -> String) {
    let path = config_path(server);
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, edit(text)).unwrap();
    server.signal("HUP");
}

#[test]
fn sighup_switches_new_logins_to_a_new_passwd_file_while_open_sessions_go_on() {
    let server = TestServer::start(fixture());
    let mut open = server.login("alice", "secret");
    open.ok("DELE 1");

    let old_passwd = server.dir().join("passwd");
    let new_passwd = server.dir().join("passwd-new");
    std::fs::write(&new_passwd, "alice:{PLAIN}changed::::::\n").unwrap();
    reload_with(&server, |text| {
        text.replace(
            &old_passwd.display().to_string(),
            &new_passwd.display().to_string(),
        )
    });
    wait_for_log(&server, "SIGHUP: reloaded", 1);

    // The open session is untouched and its deletion still happens.
    assert!(open.ok("STAT").starts_with("+OK 1 "));
    open.ok("QUIT");
    assert!(!server.message_exists("alice", 1));
    // New logins go by the new file: the old password and bob are gone.
    let mut c = server.connect();
    c.greeting();
    c.ok("USER alice");
    c.err("PASS secret");
    c.ok("USER alice");
    c.ok("PASS changed");
    c.ok("QUIT");
    let mut c = server.connect();
    c.greeting();
    c.ok("USER bob");
    c.err("PASS hunter2");
}

#[test]
fn sighup_with_a_broken_config_keeps_the_old_one_and_says_why() {
    let server = TestServer::start(fixture());
    let mut open = server.login("alice", "secret");
    reload_with(&server, |text| {
        text.replace("limits: (", "limits: (max_per_ipp: 2, ")
            .replace("plugin: \"maildir\"", "plugin: \"no-such-store\"")
    });
    wait_for_log(
        &server,
        "still serving with the configuration loaded before",
        1,
    );
    let log = server.log();
    assert!(
        log.contains("SIGHUP: ") && log.contains("unknown key `max_per_ipp` in limits"),
        "{log}"
    );
    // Still serving, old and new sessions alike.
    assert!(open.ok("STAT").starts_with("+OK 2 "));
    server.login("bob", "hunter2").ok("QUIT");

    // A config that parses but whose backend cannot be built is refused as
    // a whole too, with the backend's reason.
    reload_with(&server, |text| text.replace("max_per_ipp: 2, ", ""));
    wait_for_log(
        &server,
        "still serving with the configuration loaded before",
        2,
    );
    assert!(server.log().contains("no-such-store"), "{}", server.log());
    server.login("bob", "hunter2").ok("QUIT");
    open.ok("QUIT");
}

#[test]
fn sighup_applies_new_limits_to_new_connections() {
    let server = TestServer::start(fixture().limit("max_per_ip", 10));
    let mut first = server.login("alice", "secret");
    let mut second = server.connect();
    second.greeting();
    reload_with(&server, |text| {
        text.replace("max_per_ip: 10", "max_per_ip: 2")
    });
    wait_for_log(&server, "SIGHUP: reloaded", 1);

    let mut third = server.connect();
    assert_eq!(
        third.read_line_str(),
        "-ERR [SYS/TEMP] Too many connections from your address, try again later"
    );
    // The connections already open are not affected.
    assert!(first.ok("STAT").starts_with("+OK 2 "));
    second.ok("USER bob");
    second.ok("PASS hunter2");
    second.ok("QUIT");
    first.ok("QUIT");

    // A change of listeners is reported and not applied.
    reload_with(&server, |text| {
        text.replace(
            "listen: [(addr: ",
            "listen: [(addr: \"127.0.0.1:1\"), (addr: ",
        )
    });
    wait_for_log(&server, "`listen` changed", 1);
    server.login("bob", "hunter2").ok("QUIT");
}

#[test]
fn sigterm_closes_idle_sessions_deletes_nothing_and_exits_0() {
    let mut server = TestServer::start(fixture().limit("shutdown_grace_secs", 5));
    let before = server.files_on_disk("alice");
    let mut deleter = server.login("alice", "secret");
    deleter.ok("DELE 1");
    deleter.ok("DELE 2");
    let mut waiting = server.connect();
    waiting.greeting();

    let status = server.terminate();
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIGTERM: {status}"
    );
    for client in [&mut deleter, &mut waiting] {
        assert_eq!(
            client.read_to_close(),
            b"-ERR [SYS/TEMP] Server shutting down, nothing was deleted\r\n"
        );
    }
    assert_eq!(server.files_on_disk("alice"), before);
    assert!(server.log().contains("disconnect reason=shutdown"));
}

#[test]
fn a_retr_in_progress_at_sigterm_is_finished_before_the_close() {
    let big = big_message(16 << 20);
    let mut server = TestServer::start(
        fixture()
            .message("bob", big.clone())
            .limit("shutdown_grace_secs", 30),
    );
    let mut c = server.login("bob", "hunter2");
    // The reply is far larger than the socket buffers: while the client
    // does not read, the server is in the middle of sending it.
    c.send(b"RETR 2\r\n");
    let status = c.read_line_str();
    assert!(status.starts_with("+OK"), "{status}");
    server.signal("TERM");
    wait_for_log(&server, "stopped accepting", 1);
    // New clients are turned away at once.
    assert!(TcpStream::connect_timeout(&server.addr(), Duration::from_secs(5)).is_err());

    let rest = c.read_to_close();
    let end = b"\r\n.\r\n";
    let split = rest
        .windows(end.len())
        .position(|w| w == end)
        .expect("the message was cut off")
        + 2;
    let body = unstuff(&rest[..split]);
    common::assert_bytes_eq(
        &body,
        &wire_form(&big),
        "RETR body finished during shutdown",
    );
    assert_eq!(
        &rest[split + 3..],
        b"-ERR [SYS/TEMP] Server shutting down, nothing was deleted\r\n"
    );
    let status = server.wait_for_exit("SIGTERM");
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIGTERM: {status}"
    );
}

/// Fetches `http://addr/path` with curl; `None` if curl is not installed.
fn curl(addr: SocketAddr, path: &str) -> Option<String> {
    let output = Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "20"])
        .arg(format!("http://{addr}{path}"))
        .output()
        .ok()?;
    assert!(
        output.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Some(String::from_utf8(output.stdout).unwrap())
}

#[test]
fn the_metrics_endpoint_counts_what_clients_did() {
    let stats = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let server = TestServer::start(
        fixture()
            .top_level("stats_listen", format!("Some(\"{stats}\")"))
            .limit("auth_failure_delay_ms", 1),
    );
    let mut c = server.login("alice", "secret");
    c.multiline("RETR 1");
    let mut failed = server.connect();
    failed.greeting();
    failed.ok("USER bob");
    failed.err("PASS wrong");
    failed.err("XYZZY");

    let Some(text) = curl(stats, "/metrics") else {
        eprintln!("skipped: curl is not installed");
        return;
    };
    for expected in [
        "pop3d_logins_total{result=\"ok\"} 1\n",
        "pop3d_logins_total{result=\"failed\"} 1\n",
        "pop3d_commands_total{command=\"retr\"} 1\n",
        "pop3d_commands_total{command=\"other\"} 1\n",
        "pop3d_connections_open 2\n",
        "pop3d_sessions_authenticated 1\n",
        "pop3d_auth_duration_seconds_count 2\n",
        "# TYPE pop3d_auth_duration_seconds histogram\n",
    ] {
        assert!(text.contains(expected), "{expected:?} not in:\n{text}");
    }
    let sent: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("pop3d_sent_bytes_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(sent > 20, "{text}");

    // Anything else gets a 404; a request that never ends is cut off.
    let mut raw = TcpStream::connect(stats).unwrap();
    raw.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut answer = String::new();
    raw.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.0 404 "), "{answer}");
    let mut raw = TcpStream::connect(stats).unwrap();
    raw.write_all(&vec![b'a'; 20_000]).unwrap_or(());
    let mut answer = String::new();
    let _ = raw.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.0 431 "), "{answer}");
    // POP3 clients were not disturbed.
    c.ok("QUIT");
}

#[test]
fn socket_activation_serves_the_socket_systemd_passes() {
    let Ok(tool) = which("systemd-socket-activate") else {
        eprintln!("skipped: systemd-socket-activate is not installed (Debian package systemd)");
        return;
    };
    // The fixture's files; its own server is not the one under test.
    let fixture_server = TestServer::start(fixture());
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let text = std::fs::read_to_string(config_path(&fixture_server)).unwrap();
    let port = fixture_server.addr().port();
    let config = fixture_server.dir().join("activated.ron");
    std::fs::write(
        &config,
        text.replace(&format!("127.0.0.1:{port}"), &addr.to_string()),
    )
    .unwrap();
    let log = fixture_server.dir().join("activated.log");
    let log_file = std::fs::File::create(&log).unwrap();
    let mut child = Command::new(tool)
        .arg("--listen")
        .arg(addr.to_string())
        .arg(env!("CARGO_BIN_EXE_pop3d"))
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
        .unwrap();
    // systemd-socket-activate binds first, then starts pop3d on the
    // socket; a connection made once it listens waits in the backlog until
    // pop3d accepts it.
    let deadline = Instant::now() + IO_TIMEOUT;
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut c = common::Client::connect(addr);
    c.greeting();
    c.ok("USER alice");
    c.ok("PASS secret");
    assert!(c.ok("STAT").starts_with("+OK 2 "));
    c.ok("QUIT");
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + IO_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("pop3d did not stop");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{status}\n{log}");
    assert!(
        log.contains(&format!("socket activation: serving {addr}")),
        "{log}"
    );
}

/// Polls `path` until it contains `needle`; fails with what it holds.
fn wait_for_file_text(path: &std::path::Path, needle: &str) -> String {
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{} never said {needle:?}; it holds:\n{text}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigusr1_reopens_the_log_file_after_logrotate_renamed_it() {
    // The fixture's files; its own server is not the one under test.
    let fixture_server = TestServer::start(fixture());
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let text = std::fs::read_to_string(config_path(&fixture_server)).unwrap();
    let port = fixture_server.addr().port();
    let config = fixture_server.dir().join("logfile.ron");
    std::fs::write(
        &config,
        text.replace(&format!("127.0.0.1:{port}"), &addr.to_string()),
    )
    .unwrap();
    let log = fixture_server.dir().join("pop3d.log");
    let rotated = fixture_server.dir().join("pop3d.log.1");
    let stderr = fixture_server.dir().join("logfile-stderr.log");
    let stderr_file = std::fs::File::create(&stderr).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_pop3d"))
        .arg("--log-file")
        .arg(&log)
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(stderr_file.try_clone().unwrap())
        .stderr(stderr_file)
        .spawn()
        .unwrap();
    let kill = |child: &std::process::Child, signal: &str| {
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    };
    let before = wait_for_file_text(&log, &format!("listening on {addr}"));
    assert!(!before.contains("bob"), "{before}");

    // What logrotate does: rename, then the postrotate SIGUSR1.
    std::fs::rename(&log, &rotated).unwrap();
    kill(&child, "USR1");
    wait_for_file_text(&log, "SIGUSR1: reopened the log file");

    // Lines from now on go to the new file, none to the renamed one.
    let mut c = common::Client::connect(addr);
    c.greeting();
    c.ok("USER bob");
    c.err("PASS wrong");
    c.ok("QUIT");
    let after = wait_for_file_text(&log, "login failed user=\"bob\"");
    assert!(!after.contains("listening on"), "{after}");
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert!(old.contains(&format!("listening on {addr}")), "{old}");
    assert!(!old.contains("bob") && !old.contains("SIGUSR1"), "{old}");

    kill(&child, "TERM");
    let deadline = Instant::now() + IO_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("pop3d did not stop");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    // Nothing went to stderr: the file took every line.
    let stray = std::fs::read_to_string(&stderr).unwrap();
    assert!(stray.is_empty(), "{stray}");
}

fn which(tool: &str) -> Result<PathBuf, ()> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join(tool))
        .find(|path| path.is_file())
        .ok_or(())
}
