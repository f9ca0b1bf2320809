//! The `apop` and `hostname` config keys against the real binary: APOP is
//! offered only when configured, its timestamp and the CRAM-MD5 challenge
//! carry the configured host name, and both follow the config on SIGHUP
//! while the SCRAM salt key stays the one the process started with.

mod common;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use common::{Client, Fixture, TestServer, IO_TIMEOUT};
use md5::{Digest as _, Md5};
use std::time::{Duration, Instant};

fn fixture() -> Fixture {
    Fixture::new()
        .user("tim", "tanstaaftanstaaf")
        .message("tim", &b"Subject: hi\n\nhello\n"[..])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The `<...>` timestamp of a greeting, checked to end in `@host>`.
fn timestamp_of(greeting: &str, host: &str) -> String {
    let start = greeting
        .find('<')
        .unwrap_or_else(|| panic!("no APOP timestamp in {greeting:?}"));
    let end = greeting[start..]
        .find('>')
        .expect("an unterminated timestamp")
        + start
        + 1;
    let timestamp = &greeting[start..end];
    assert!(
        timestamp.ends_with(&format!("@{host}>")),
        "{timestamp:?} does not name {host}"
    );
    timestamp.to_owned()
}

fn apop_digest(timestamp: &str, password: &str) -> String {
    hex(&Md5::digest(format!("{timestamp}{password}").as_bytes()))
}

/// The host name inside a CRAM-MD5 challenge.
fn cram_md5_host(c: &mut Client) -> String {
    let challenge = c.command("AUTH CRAM-MD5");
    let challenge = BASE64
        .decode(challenge.strip_prefix("+ ").expect("a challenge"))
        .unwrap();
    let challenge = String::from_utf8(challenge).unwrap();
    assert_eq!(c.command("*"), "-ERR Authentication cancelled");
    let host = challenge
        .strip_suffix('>')
        .and_then(|rest| rest.rsplit_once('@'))
        .map(|(_, host)| host.to_owned());
    host.unwrap_or_else(|| panic!("challenge {challenge:?} is not <...@host>"))
}

/// The salt the server gives `user` in a SCRAM-SHA-256 exchange.
fn scram_salt(c: &mut Client, user: &str) -> String {
    let first = BASE64.encode(format!("n,,n={user},r=clientnonce"));
    let reply = c.command(&format!("AUTH SCRAM-SHA-256 {first}"));
    let server_first = BASE64
        .decode(reply.strip_prefix("+ ").expect("a server-first message"))
        .unwrap();
    let server_first = String::from_utf8(server_first).unwrap();
    assert_eq!(c.command("*"), "-ERR Authentication cancelled");
    server_first
        .split(',')
        .find_map(|field| field.strip_prefix("s="))
        .unwrap_or_else(|| panic!("no salt in {server_first:?}"))
        .to_owned()
}

fn wait_for_log(server: &TestServer, needle: &str) {
    let deadline = Instant::now() + IO_TIMEOUT;
    while !server.log().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "the log never said {needle:?}:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn apop_on_greets_with_the_configured_host_and_checks_the_digest() {
    let server = TestServer::start(
        fixture()
            .top_level("apop", "true")
            .top_level("hostname", "\"pop.example.test\""),
    );
    let mut c = server.connect();
    let timestamp = timestamp_of(&c.greeting(), "pop.example.test");
    assert_eq!(cram_md5_host(&mut c), "pop.example.test");
    let reply = c.ok(&format!(
        "APOP tim {}",
        apop_digest(&timestamp, "tanstaaftanstaaf")
    ));
    assert!(reply.starts_with("+OK Logged in, 1 message"), "{reply}");
    c.ok("QUIT");

    // A digest of the wrong password (or of another greeting's timestamp)
    // is refused after the failure delay, and the client may not go on
    // as if logged in.
    let mut c = server.connect();
    let timestamp = timestamp_of(&c.greeting(), "pop.example.test");
    assert_eq!(
        c.command(&format!("APOP tim {}", apop_digest(&timestamp, "wrong"))),
        "-ERR [AUTH] Authentication failed"
    );
    assert!(c.command("STAT").starts_with("-ERR"));
    let mut other = server.connect();
    other.greeting();
    assert_eq!(
        other.command(&format!(
            "APOP tim {}",
            apop_digest(&timestamp, "tanstaaftanstaaf")
        )),
        "-ERR [AUTH] Authentication failed",
        "a digest over another connection's timestamp was accepted"
    );
    let log = server.log();
    assert!(log.contains("login user=tim method=APOP"), "{log}");
    assert!(log.contains("login failed user=\"tim\""), "{log}");
    assert!(!log.contains("tanstaaf"), "a password reached the log");
}

#[test]
fn apop_off_by_default_has_no_timestamp_and_refuses_apop() {
    let server = TestServer::start(fixture());
    let mut c = server.connect();
    let greeting = c.greeting();
    assert!(!greeting.contains('<'), "{greeting:?}");
    let digest = apop_digest("<1.2@localhost>", "tanstaaftanstaaf");
    assert_eq!(
        c.command(&format!("APOP tim {digest}")),
        "-ERR APOP is not enabled on this server"
    );
    // The default host name is the system's.
    let system = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_default();
    let host = cram_md5_host(&mut c);
    if system
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        && !system.is_empty()
    {
        assert_eq!(host, system);
    } else {
        assert_eq!(host, "localhost");
    }
}

#[test]
fn sighup_turns_apop_on_and_renames_the_host_but_keeps_scram_salts() {
    let server = TestServer::start(fixture().top_level("hostname", "\"before.example\""));
    let mut c = server.connect();
    assert!(!c.greeting().contains('<'));
    assert_eq!(cram_md5_host(&mut c), "before.example");
    let salt_before = scram_salt(&mut c, "tim");
    c.ok("QUIT");

    let path = server.dir().join("server.ron");
    let text = std::fs::read_to_string(&path).unwrap();
    let edited = text.replace(
        "    hostname: \"before.example\",\n",
        "    hostname: \"after.example\",\n    apop: true,\n",
    );
    assert_ne!(edited, text, "the config has no hostname line:\n{text}");
    std::fs::write(&path, edited).unwrap();
    server.signal("HUP");
    wait_for_log(&server, "SIGHUP: reloaded");

    let mut c = server.connect();
    let timestamp = timestamp_of(&c.greeting(), "after.example");
    assert_eq!(cram_md5_host(&mut c), "after.example");
    assert_eq!(
        scram_salt(&mut c, "tim"),
        salt_before,
        "the SCRAM salt changed on reload: clients caching salted passwords would fail"
    );
    c.ok(&format!(
        "APOP tim {}",
        apop_digest(&timestamp, "tanstaaftanstaaf")
    ));
    c.ok("QUIT");
}
