//! Transcript tests: `C:` / `S:` dialogues replayed against the session state
//! machine, without sockets, over the real maildir and passwd-file backends
//! in a temporary directory.
//!
//! Each `C:` line is one command; the `S:` lines after it are exactly the
//! reply lines expected (without CRLF). Multi-line replies are pumped to the
//! end, as the server would.

use pop3d::backend::registry;
use pop3d::config::PluginSection;
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
