//! Transcript tests: `C:` / `S:` dialogues replayed against the session state
//! machine, without sockets, over the real maildir and passwd-file backends
//! in a temporary directory.
//!
//! Each `C:` line is one command; the `S:` lines after it are exactly the
//! reply lines expected (without CRLF). Multi-line replies are pumped to the
//! end, as the server would.

use pop3d::backend::registry;
use pop3d::config::PluginSection;
use pop3d::protocol::sasl::SaslConfig;
use pop3d::protocol::session::Peer;
use pop3d::protocol::{Directive, Session, SessionEnv};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A temporary maildir + passwd file, removed on drop.
struct Fixture {
    dir: PathBuf,
    env: Arc<SessionEnv>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// The two messages of RFC 1939's example maildrop, roughly: sizes are
/// chosen so the transcript below can state them.
const MSG1: &[u8] = b"Subject: first\n\nline one\n.hidden dot\nline three\n";
const MSG2: &[u8] = b"Subject: second\r\nX: y\r\n\r\nbody\r\n";

fn fixture(messages: &[(&str, &[u8])]) -> Fixture {
    let dir = std::env::temp_dir().join(format!(
        "pop3d-transcript-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    ));
    let maildir = dir.join("mail/alice/Maildir");
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(maildir.join(sub)).unwrap();
    }
    for (name, body) in messages {
        std::fs::write(maildir.join("cur").join(name), body).unwrap();
    }
    std::fs::write(dir.join("passwd"), "alice:{PLAIN}secret::::::\n").unwrap();
    let auth = registry::build_auth(&section(
        "passwd-file",
        &format!("(path: {:?})", dir.join("passwd")),
    ))
    .unwrap();
    let store = registry::build_store(&section(
        "maildir",
        &format!("(root: {:?})", dir.join("mail/%u/Maildir")),
    ))
    .unwrap();
    let env = Arc::new(SessionEnv {
        auth,
        store,
        auth_failure_delay: Duration::from_millis(1),
        implementation: "pop3d",
        sasl: SaslConfig::new("pop.example.org", [7; 32]),
        apop: true,
        defences: Default::default(),
    });
    Fixture { dir, env }
}

fn section(plugin: &str, config: &str) -> PluginSection {
    PluginSection {
        plugin: plugin.into(),
        config: ron::from_str(config).unwrap(),
    }
}

fn standard() -> Fixture {
    fixture(&[
        ("1000000001.A.host:2,", MSG1),
        ("1000000002.B.host:2,S", MSG2),
    ])
}

fn new_session(fixture: &Fixture) -> Session {
    Session::new(
        Arc::clone(&fixture.env),
        Peer {
            addr: "127.0.0.1:40000".parse().unwrap(),
            local: None,
            plaintext_auth_allowed: true,
            tls: false,
            stls_available: false,
        },
        1,
    )
}

/// Runs one command, pumping multi-line bodies to their end.
fn exchange(session: &mut Session, line: &[u8]) -> (Vec<u8>, Directive) {
    let mut out = Vec::new();
    let mut directive = session.handle_line(line, &mut out);
    while directive == Directive::MoreBody {
        directive = session.continue_body(&mut out);
    }
    (out, directive)
}

/// Replays `transcript` and panics at the first difference.
fn replay(session: &mut Session, transcript: &str) {
    let mut lines = transcript
        .lines()
        .map(str::trim_start)
        .filter(|l| !l.is_empty())
        .peekable();
    while let Some(line) = lines.next() {
        let command = line
            .strip_prefix("C: ")
            .unwrap_or_else(|| panic!("expected a C: line, got {line:?}"));
        let mut expected = Vec::new();
        while let Some(reply) = lines.peek().and_then(|l| l.strip_prefix("S:")) {
            expected.push(reply.strip_prefix(' ').unwrap_or(reply).to_owned());
            lines.next();
        }
        let command = command.replace("<NUL>", "\0");
        let (out, _) = exchange(session, command.as_bytes());
        let got = String::from_utf8_lossy(&out);
        assert!(
            got.ends_with("\r\n"),
            "reply to {command:?} does not end in CRLF: {got:?}"
        );
        let got: Vec<&str> = got.trim_end_matches("\r\n").split("\r\n").collect();
        assert_eq!(got, expected, "after C: {command:?}");
    }
}

// Sizes: MSG1 is 48 octets with LF ends, 5 lines -> 53 on the wire.
// MSG2 is 31 octets with CRLF ends -> 31 on the wire. Total 84.

#[test]
fn rfc1939_session_with_every_transaction_command() {
    let f = standard();
    let mut s = new_session(&f);
    replay(
        &mut s,
        "
        C: CAPA
        S: +OK Capability list follows
        S: TOP
        S: UIDL
        S: USER
        S: SASL SCRAM-SHA-256 SCRAM-SHA-1 CRAM-MD5 PLAIN LOGIN
        S: RESP-CODES
        S: AUTH-RESP-CODE
        S: PIPELINING
        S: IMPLEMENTATION pop3d
        S: .
        C: USER alice
        S: +OK Send your password
        C: PASS secret
        S: +OK Logged in, 2 messages (84 octets)
        C: STAT
        S: +OK 2 84
        C: LIST
        S: +OK 2 messages (84 octets)
        S: 1 53
        S: 2 31
        S: .
        C: LIST 2
        S: +OK 2 31
        C: UIDL
        S: +OK Unique-ID listing follows
        S: 1 1000000001.A.host
        S: 2 1000000002.B.host
        S: .
        C: UIDL 1
        S: +OK 1 1000000001.A.host
        C: RETR 1
        S: +OK 53 octets
        S: Subject: first
        S:
        S: line one
        S: ..hidden dot
        S: line three
        S: .
        C: TOP 2 0
        S: +OK Top of message follows
        S: Subject: second
        S: X: y
        S:
        S: .
        C: TOP 1 1
        S: +OK Top of message follows
        S: Subject: first
        S:
        S: line one
        S: .
        C: NOOP
        S: +OK
        C: DELE 1
        S: +OK Message 1 deleted
        C: DELE 1
        S: -ERR Message 1 is deleted
        C: RETR 1
        S: -ERR Message 1 is deleted
        C: LIST 1
        S: -ERR Message 1 is deleted
        C: STAT
        S: +OK 1 31
        C: LIST
        S: +OK 1 messages (31 octets)
        S: 2 31
        S: .
        C: UIDL
        S: +OK Unique-ID listing follows
        S: 2 1000000002.B.host
        S: .
        C: RSET
        S: +OK Maildrop has 2 messages (84 octets)
        C: STAT
        S: +OK 2 84
        C: DELE 2
        S: +OK Message 2 deleted
        C: QUIT
        S: +OK Bye, 1 messages deleted, 1 left
        ",
    );
    let cur = f.dir.join("mail/alice/Maildir/cur");
    assert!(cur.join("1000000001.A.host:2,").exists());
    assert!(!cur.join("1000000002.B.host:2,S").exists());
}

#[test]
fn commands_are_refused_in_the_wrong_state() {
    let f = standard();
    let mut s = new_session(&f);
    replay(
        &mut s,
        "
        C: STAT
        S: -ERR Not logged in; use USER and PASS first
        C: RETR 1
        S: -ERR Not logged in; use USER and PASS first
        C: PASS secret
        S: -ERR Send USER first
        C: user alice
        S: +OK Send your password
        C: pass secret
        S: +OK Logged in, 2 messages (84 octets)
        C: USER alice
        S: -ERR Already logged in
        C: PASS secret
        S: -ERR Already logged in
        C: QUIT
        S: +OK Bye, 0 messages deleted, 2 left
        ",
    );
}

#[test]
fn failed_login_is_delayed_and_identical_for_unknown_user_and_wrong_password() {
    let f = standard();
    let mut s = new_session(&f);
    let mut replies = Vec::new();
    for (user, pass) in [("alice", "wrong"), ("mallory", "secret")] {
        let (out, d) = exchange(&mut s, format!("USER {user}").as_bytes());
        assert_eq!(d, Directive::Continue);
        assert_eq!(out, b"+OK Send your password\r\n");
        let (out, d) = exchange(&mut s, format!("PASS {pass}").as_bytes());
        assert_eq!(d, Directive::Delay(Duration::from_millis(1)));
        replies.push(out);
    }
    assert_eq!(replies[0], b"-ERR [AUTH] Authentication failed\r\n");
    assert_eq!(replies[0], replies[1]);
    // Still in AUTHORIZATION, and a good login works afterwards.
    replay(
        &mut s,
        "
        C: USER alice
        S: +OK Send your password
        C: PASS secret
        S: +OK Logged in, 2 messages (84 octets)
        ",
    );
}

#[test]
fn argument_errors_leave_the_session_usable() {
    let f = standard();
    let mut s = new_session(&f);
    replay(
        &mut s,
        "
        C: USER alice
        S: +OK Send your password
        C: PASS secret
        S: +OK Logged in, 2 messages (84 octets)
        C: RETR 3
        S: -ERR No such message 3
        ",
    );
    for bad in [
        "LIST 0",
        "LIST -1",
        "LIST 4294967297",
        "RETR",
        "RETR x",
        "RETR 1 2",
        "TOP 1",
        "TOP 1 -1",
        "STAT 1",
        "DELE",
        "NOOP x",
        "XYZZY",
        "LIST 1\0",
        "",
    ] {
        let (out, d) = exchange(&mut s, bad.as_bytes());
        assert!(out.starts_with(b"-ERR "), "{bad:?} got {out:?}");
        assert_eq!(d, Directive::Continue, "{bad:?}");
        let (out, _) = exchange(&mut s, b"NOOP");
        assert_eq!(out, b"+OK\r\n", "session unusable after {bad:?}");
    }
    replay(
        &mut s,
        "
        C: STAT
        S: +OK 2 84
        ",
    );
}

#[test]
fn a_nul_in_user_never_logs_in_as_the_prefix() {
    let f = standard();
    let mut s = new_session(&f);
    let (out, _) = exchange(&mut s, b"USER alice\0x");
    assert!(out.starts_with(b"-ERR"), "{out:?}");
    let (out, _) = exchange(&mut s, b"PASS secret");
    assert!(out.starts_with(b"-ERR"), "{out:?}");
    assert!(!s.is_authenticated());
}

#[test]
fn a_second_session_for_the_same_user_is_in_use_until_the_first_ends() {
    let f = standard();
    let mut first = new_session(&f);
    replay(
        &mut first,
        "
        C: USER alice
        S: +OK Send your password
        C: PASS secret
        S: +OK Logged in, 2 messages (84 octets)
        C: DELE 1
        S: +OK Message 1 deleted
        ",
    );
    let mut second = new_session(&f);
    replay(
        &mut second,
        "
        C: USER alice
        S: +OK Send your password
        C: PASS secret
        S: -ERR [IN-USE] Maildrop is in use by another session
        ",
    );
    // The first session is dropped without QUIT: nothing is deleted, and the
    // lock is released.
    first.abandon("test");
    replay(
        &mut second,
        "
        C: USER alice
        S: +OK Send your password
        C: PASS secret
        S: +OK Logged in, 2 messages (84 octets)
        ",
    );
}

#[test]
fn quit_before_login_ends_without_touching_mail() {
    let f = standard();
    let mut s = new_session(&f);
    let (out, d) = exchange(&mut s, b"QUIT");
    assert_eq!(out, b"+OK Bye\r\n");
    assert_eq!(d, Directive::Close);
    assert!(Path::new(&f.dir.join("mail/alice/Maildir/cur/1000000001.A.host:2,")).exists());
}

#[test]
fn plaintext_login_is_refused_where_the_policy_forbids_it() {
    let f = standard();
    let mut s = Session::new(
        Arc::clone(&f.env),
        Peer {
            addr: "192.0.2.7:40000".parse().unwrap(),
            local: None,
            plaintext_auth_allowed: false,
            tls: false,
            stls_available: false,
        },
        2,
    );
    let (out, _) = exchange(&mut s, b"CAPA");
    assert!(!String::from_utf8_lossy(&out).contains("\r\nUSER\r\n"));
    let (out, _) = exchange(&mut s, b"USER alice");
    assert!(out.starts_with(b"-ERR [AUTH] "), "{out:?}");
}

// AUTH (RFC 5034) and APOP (RFC 1939 section 7). alice's password is
// "secret"; "AGFsaWNlAHNlY3JldA==" is PLAIN's "\0alice\0secret".

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use md5::{Digest as _, Md5};
use sha2::Sha256;

/// Sends `line` and returns the reply as text, for exchanges whose
/// challenges are random.
fn say(session: &mut Session, line: &str) -> (String, Directive) {
    let (out, directive) = exchange(session, line.as_bytes());
    (String::from_utf8(out).unwrap(), directive)
}

/// The base64 payload of a `+ ` challenge line, decoded.
fn challenge_of(reply: &str) -> Vec<u8> {
    let payload = reply
        .strip_prefix("+ ")
        .and_then(|rest| rest.strip_suffix("\r\n"))
        .unwrap_or_else(|| panic!("not a challenge: {reply:?}"));
    BASE64.decode(payload).unwrap()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap();
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn restricted_session(f: &Fixture) -> Session {
    Session::new(
        Arc::clone(&f.env),
        Peer {
            addr: "192.0.2.7:40000".parse().unwrap(),
            local: None,
            plaintext_auth_allowed: false,
            tls: false,
            stls_available: true,
        },
        3,
    )
}

#[test]
fn auth_plain_with_and_without_initial_response() {
    let f = standard();
    let mut s = new_session(&f);
    replay(
        &mut s,
        "
        C: AUTH PLAIN AGFsaWNlAHNlY3JldA==
        S: +OK Logged in, 2 messages (84 octets)
        C: AUTH PLAIN AGFsaWNlAHNlY3JldA==
        S: -ERR Already logged in
        C: QUIT
        S: +OK Bye, 0 messages deleted, 2 left
        ",
    );
    let mut s = new_session(&f);
    assert_eq!(s.line_limit(), 255);
    replay(
        &mut s,
        "
        C: auth plain
        S: + 
        ",
    );
    // A response may be longer than a command line.
    assert_eq!(s.line_limit(), 8 * 1024 + 2);
    replay(
        &mut s,
        "
        C: AGFsaWNlAHNlY3JldA==
        S: +OK Logged in, 2 messages (84 octets)
        ",
    );
    assert_eq!(s.line_limit(), 255);
}

#[test]
fn auth_login_asks_for_name_and_password() {
    let f = standard();
    let mut s = new_session(&f);
    replay(
        &mut s,
        "
        C: AUTH LOGIN
        S: + VXNlcm5hbWU6
        C: YWxpY2U=
        S: + UGFzc3dvcmQ6
        C: c2VjcmV0
        S: +OK Logged in, 2 messages (84 octets)
        ",
    );
}

#[test]
fn auth_failures_cancel_and_errors_leave_authorization_usable() {
    let f = standard();
    let mut s = new_session(&f);
    // "\0alice\0wrong": a credential failure, answered after the delay.
    let (out, d) = say(&mut s, "AUTH PLAIN AGFsaWNlAHdyb25n");
    assert_eq!(out, "-ERR [AUTH] Authentication failed\r\n");
    assert_eq!(d, Directive::Delay(Duration::from_millis(1)));
    // "admin\0alice\0secret": acting as someone else is refused even with
    // the right password.
    let (out, d) = say(&mut s, "AUTH PLAIN YWRtaW4AYWxpY2UAc2VjcmV0");
    assert_eq!(
        out,
        "-ERR [AUTH] Authorization identity must be empty or the same as the user name\r\n"
    );
    assert_eq!(d, Directive::Continue);
    replay(
        &mut s,
        "
        C: AUTH LOGIN
        S: + VXNlcm5hbWU6
        C: *
        S: -ERR Authentication cancelled
        C: AUTH PLAIN
        S: + 
        C: not base64!
        S: -ERR Invalid base64 in SASL response
        C: AUTH PLAIN
        S: + 
        C: AGFsaWNlAHNlY3JldAB4
        S: -ERR Malformed SASL response
        C: AUTH DIGEST-MD5
        S: -ERR Unsupported authentication mechanism
        C: AUTH CRAM-MD5 dGlt
        S: -ERR This mechanism does not take an initial response
        C: STAT
        S: -ERR Not logged in; use USER and PASS first
        ",
    );
    // A response longer than the server takes ends the exchange.
    let (out, _) = say(&mut s, "AUTH LOGIN");
    assert_eq!(out, "+ VXNlcm5hbWU6\r\n");
    let mut out = Vec::new();
    assert_eq!(s.line_too_long(&mut out), Directive::Continue);
    assert_eq!(out, b"-ERR SASL response too long\r\n");
    assert_eq!(s.line_limit(), 255);
    replay(
        &mut s,
        "
        C: AUTH PLAIN AGFsaWNlAHNlY3JldA==
        S: +OK Logged in, 2 messages (84 octets)
        ",
    );
}

#[test]
fn bare_auth_lists_the_offered_mechanisms() {
    let f = standard();
    let mut s = new_session(&f);
    replay(
        &mut s,
        "
        C: AUTH
        S: +OK Supported mechanisms follow
        S: SCRAM-SHA-256
        S: SCRAM-SHA-1
        S: CRAM-MD5
        S: PLAIN
        S: LOGIN
        S: .
        ",
    );
}

#[test]
fn plaintext_mechanisms_are_hidden_and_refused_where_the_policy_forbids_them() {
    let f = standard();
    let mut s = restricted_session(&f);
    replay(
        &mut s,
        "
        C: CAPA
        S: +OK Capability list follows
        S: TOP
        S: UIDL
        S: STLS
        S: SASL SCRAM-SHA-256 SCRAM-SHA-1 CRAM-MD5
        S: RESP-CODES
        S: AUTH-RESP-CODE
        S: PIPELINING
        S: IMPLEMENTATION pop3d
        S: .
        C: AUTH PLAIN AGFsaWNlAHNlY3JldA==
        S: -ERR [AUTH] Plaintext authentication is not allowed on this connection; use STLS first
        C: AUTH LOGIN
        S: -ERR [AUTH] Plaintext authentication is not allowed on this connection; use STLS first
        ",
    );
}

#[test]
fn auth_cram_md5_rfc_2195_exchange() {
    let f = standard();
    let mut s = new_session(&f);
    let (reply, _) = say(&mut s, "AUTH CRAM-MD5");
    let challenge = challenge_of(&reply);
    assert!(challenge.starts_with(b"<") && challenge.ends_with(b"@pop.example.org>"));
    let mut mac = <Hmac<Md5> as KeyInit>::new_from_slice(b"secret").unwrap();
    mac.update(&challenge);
    let answer = format!("alice {}", hex(&mac.finalize().into_bytes()));
    let (reply, _) = say(&mut s, &BASE64.encode(&answer));
    assert_eq!(reply, "+OK Logged in, 2 messages (84 octets)\r\n");

    // The same answer to a fresh challenge is worthless.
    let mut s = new_session(&f);
    let (reply, _) = say(&mut s, "AUTH CRAM-MD5");
    assert_ne!(challenge_of(&reply), challenge);
    let (reply, d) = say(&mut s, &BASE64.encode(&answer));
    assert_eq!(reply, "-ERR [AUTH] Authentication failed\r\n");
    assert_eq!(d, Directive::Delay(Duration::from_millis(1)));
}

/// Runs SCRAM-SHA-256 as a client with `password` for `user`; returns the
/// server's last reply and the directive.
fn scram_sha256_login(s: &mut Session, user: &str, password: &[u8]) -> (String, Directive) {
    let client_first_bare = format!("n={user},r=rOprNGfwEbeRWgbNEkqO");
    let (reply, _) = say(
        s,
        &format!(
            "AUTH SCRAM-SHA-256 {}",
            BASE64.encode(format!("n,,{client_first_bare}"))
        ),
    );
    let server_first = String::from_utf8(challenge_of(&reply)).unwrap();
    let mut fields = server_first.split(',');
    let nonce = fields.next().unwrap().strip_prefix("r=").unwrap();
    assert!(nonce.starts_with("rOprNGfwEbeRWgbNEkqO") && nonce.len() > 20);
    let salt = BASE64
        .decode(fields.next().unwrap().strip_prefix("s=").unwrap())
        .unwrap();
    let iterations: u32 = fields
        .next()
        .unwrap()
        .strip_prefix("i=")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(iterations, 4096);

    let mut salted = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(password, &salt, iterations, &mut salted);
    let client_key = hmac_sha256(&salted, b"Client Key");
    let stored_key = sha2::Sha256::digest(&client_key);
    let without_proof = format!("c=biws,r={nonce}");
    let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
    let signature = hmac_sha256(&stored_key, auth_message.as_bytes());
    let proof: Vec<u8> = client_key
        .iter()
        .zip(&signature)
        .map(|(k, s)| k ^ s)
        .collect();
    let client_final = format!("{without_proof},p={}", BASE64.encode(proof));
    let (reply, directive) = say(s, &BASE64.encode(client_final));
    if !reply.starts_with("+ ") {
        return (reply, directive);
    }
    // The server proves it knows the key too, before +OK.
    let server_key = hmac_sha256(&salted, b"Server Key");
    let expected = format!(
        "v={}",
        BASE64.encode(hmac_sha256(&server_key, auth_message.as_bytes()))
    );
    assert_eq!(String::from_utf8(challenge_of(&reply)).unwrap(), expected);
    say(s, "")
}

#[test]
fn auth_scram_sha_256_with_server_signature() {
    let f = standard();
    let mut s = new_session(&f);
    let (reply, d) = scram_sha256_login(&mut s, "alice", b"secret");
    assert_eq!(reply, "+OK Logged in, 2 messages (84 octets)\r\n");
    assert_eq!(d, Directive::Continue);
    assert!(s.is_authenticated());
}

#[test]
fn auth_scram_fails_alike_for_wrong_password_and_unknown_user() {
    let f = standard();
    let mut s = new_session(&f);
    let wrong = scram_sha256_login(&mut s, "alice", b"wrong");
    let unknown = scram_sha256_login(&mut s, "mallory", b"secret");
    for (reply, d) in [&wrong, &unknown] {
        assert_eq!(reply, "-ERR [AUTH] Authentication failed\r\n");
        assert_eq!(*d, Directive::Delay(Duration::from_millis(1)));
    }
    assert!(!s.is_authenticated());
    // Channel binding is not offered.
    let (reply, _) = say(
        &mut s,
        &format!(
            "AUTH SCRAM-SHA-1 {}",
            BASE64.encode("p=tls-unique,,n=alice,r=abc")
        ),
    );
    assert_eq!(
        reply,
        "-ERR Channel binding is not supported; use a mechanism without -PLUS\r\n"
    );
    let (reply, _) = scram_sha256_login(&mut s, "alice", b"secret");
    assert_eq!(reply, "+OK Logged in, 2 messages (84 octets)\r\n");
}

#[test]
fn apop_with_the_greeting_timestamp() {
    let f = standard();
    let mut s = new_session(&f);
    let mut greeting = Vec::new();
    s.greeting(&mut greeting);
    let greeting = String::from_utf8(greeting).unwrap();
    let timestamp = greeting
        .strip_prefix("+OK POP3 server ready ")
        .and_then(|rest| rest.strip_suffix("\r\n"))
        .unwrap_or_else(|| panic!("no APOP timestamp in {greeting:?}"));
    assert!(timestamp.starts_with('<') && timestamp.ends_with("@pop.example.org>"));
    let digest = |secret: &str| hex(&Md5::digest(format!("{timestamp}{secret}")));

    let (reply, d) = say(&mut s, &format!("APOP alice {}", digest("wrong")));
    assert_eq!(reply, "-ERR [AUTH] Authentication failed\r\n");
    assert_eq!(d, Directive::Delay(Duration::from_millis(1)));
    let (reply, _) = say(&mut s, &format!("APOP mallory {}", digest("secret")));
    assert_eq!(reply, "-ERR [AUTH] Authentication failed\r\n");
    let (reply, _) = say(
        &mut s,
        &format!("APOP alice {}", digest("secret").to_uppercase()),
    );
    assert_eq!(reply, "+OK Logged in, 2 messages (84 octets)\r\n");

    // Another session has another timestamp, so the digest does not replay.
    let mut other = new_session(&f);
    let (reply, _) = say(&mut other, &format!("APOP alice {}", digest("secret")));
    assert_eq!(reply, "-ERR [AUTH] Authentication failed\r\n");
}

#[test]
fn apop_is_not_offered_unless_enabled() {
    let f = standard();
    let env = Arc::new(SessionEnv {
        auth: Arc::clone(&f.env.auth),
        store: Arc::clone(&f.env.store),
        auth_failure_delay: Duration::from_millis(1),
        implementation: "pop3d",
        sasl: SaslConfig::new("pop.example.org", [7; 32]),
        apop: false,
        defences: Default::default(),
    });
    let mut s = Session::new(
        env,
        Peer {
            addr: "127.0.0.1:40000".parse().unwrap(),
            local: None,
            plaintext_auth_allowed: true,
            tls: false,
            stls_available: false,
        },
        4,
    );
    let mut greeting = Vec::new();
    s.greeting(&mut greeting);
    assert_eq!(greeting, b"+OK POP3 server ready\r\n");
    replay(
        &mut s,
        "
        C: APOP alice c4c9334bac560ecc979e58001b3e22fb
        S: -ERR APOP is not enabled on this server
        ",
    );
}
