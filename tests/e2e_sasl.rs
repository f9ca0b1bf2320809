//! AUTH and APOP against the real binary over loopback TCP: what the
//! transcript tests cannot show is the server's side of an exchange, above
//! all that a SASL response may be longer than a command line.

mod common;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use common::{Fixture, TestServer};
use hmac::{Hmac, KeyInit, Mac};
use md5::{Digest as _, Md5};

fn fixture() -> Fixture {
    Fixture::new()
        .user("alice", "secret")
        .user("tim", "tanstaaftanstaaf")
        // A password long enough that PLAIN's response exceeds 255 octets.
        .user("long", &"p".repeat(300))
        .message("alice", &b"Subject: hi\n\nhello\n"[..])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[test]
fn a_sasl_response_may_exceed_the_command_line_limit() {
    let server = TestServer::start(fixture());
    let mut c = server.connect();
    c.greeting();
    let capa = c.multiline("CAPA").lines();
    assert!(
        capa.iter()
            .any(|l| l == "SASL SCRAM-SHA-256 SCRAM-SHA-1 CRAM-MD5 PLAIN LOGIN"),
        "{capa:?}"
    );
    assert_eq!(c.command("AUTH PLAIN"), "+ ");
    let response = BASE64.encode(format!("\0long\0{}", "p".repeat(300)));
    assert!(response.len() > 255);
    let reply = c.ok(&response);
    assert_eq!(reply, "+OK Logged in, 0 messages (0 octets)");
    // Commands are capped at 255 octets again.
    assert_eq!(
        c.command(&format!("NOOP {}", "x".repeat(300))),
        "-ERR Line too long"
    );
    c.ok("QUIT");
}

#[test]
fn cram_md5_logs_in_over_tcp_and_apop_is_not_offered() {
    let server = TestServer::start(fixture());
    let mut c = server.connect();
    // docs/security.md: no APOP, so no timestamp in the greeting.
    let greeting = c.greeting();
    assert!(!greeting.contains('<'), "{greeting:?}");
    let digest = hex(&Md5::digest(b"<1.2@x>tanstaaftanstaaf"));
    assert_eq!(
        c.command(&format!("APOP tim {digest}")),
        "-ERR APOP is not enabled on this server"
    );
    let challenge = c.command("AUTH CRAM-MD5");
    let challenge = BASE64
        .decode(challenge.strip_prefix("+ ").expect("a challenge"))
        .unwrap();
    let mut mac = <Hmac<Md5> as KeyInit>::new_from_slice(b"tanstaaftanstaaf").unwrap();
    mac.update(&challenge);
    let answer = format!("tim {}", hex(&mac.finalize().into_bytes()));
    c.ok(&BASE64.encode(answer));
    c.ok("QUIT");
    let log = server.log();
    assert!(log.contains("login user=tim method=CRAM-MD5"), "{log}");
    assert!(!log.contains("tanstaaf"), "a password reached the log");
}
