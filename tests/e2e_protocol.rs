//! End-to-end protocol tests: the real `pop3d` binary over real TCP, checked
//! byte for byte.
//!
//! Each test starts its own server on its own temporary maildirs (see
//! `common`), talks raw POP3 to it, and asserts what a mail client or the
//! user would notice: reply status, message bytes, sizes, unique ids, and
//! which files are left on disk.
//!
//! Not tested here: the idle timeout of logged-in sessions. RFC 1939 asks
//! for at least 10 minutes and the config enforces that minimum, so a test
//! would have to wait 600 s. The same timer code path is exercised by the
//! login timeout test, which may be set to 1 s.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Three ordinary messages: LF line ends, CRLF line ends with a five-line
/// body, and one with dot lines and no final newline. The first and third
/// have body lines starting `From ` (an mbox separator unless quoted).
fn three_messages() -> Vec<Vec<u8>> {
    vec![
        b"From: a@example.org\nSubject: one\n\nHello\nFrom the start of a line, mbox quotes this.\nsecond line\n".to_vec(),
        b"From: b@example.org\r\nSubject: two\r\n\r\nBody line 1\r\nBody line 2\r\nBody line 3\r\nBody line 4\r\nBody line 5\r\n".to_vec(),
        b"Subject: three\n\n.dot line\n..two dots\n.\n\nFrom after an empty line\n>From quoted already\nend".to_vec(),
    ]
}

/// alice (password `secret`) with [`three_messages`] in `new/`, and bob
/// (password `hunter2`) with one message.
fn standard_fixture() -> Fixture {
    let mut fixture = Fixture::new()
        .user("alice", "secret")
        .user("bob", "hunter2");
    for m in three_messages() {
        fixture = fixture.message("alice", m);
    }
    fixture.message_in(
        "bob",
        Folder::Cur("S"),
        &b"Subject: for bob\n\nhi bob\n"[..],
    )
}

fn wire_size(raw: &[u8]) -> usize {
    wire_form(raw).len()
}

/// Whether `command` is answered with a multi-line reply when it succeeds.
fn is_multiline(command: &str) -> bool {
    let mut words = command.split(' ');
    let keyword = words.next().unwrap_or("").to_ascii_uppercase();
    let has_argument = words.next().is_some();
    match keyword.as_str() {
        "RETR" | "TOP" | "CAPA" => true,
        "LIST" | "UIDL" => !has_argument,
        _ => false,
    }
}

/// Reads the reply to `command` (single or multi-line) as wire bytes.
fn read_reply(client: &mut Client, command: &str) -> Vec<u8> {
    if is_multiline(command) {
        client.read_multiline()
    } else {
        client.read_line()
    }
}

/// Asserts RETR n delivers exactly `raw` in wire form, dot-stuffed.
#[track_caller]
fn assert_retr(client: &mut Client, n: usize, raw: &[u8]) {
    let reply = client.multiline(&format!("RETR {n}"));
    assert_bytes_eq(
        &unstuff(&reply.body),
        &wire_form(raw),
        &format!("RETR {n} after undoing dot-stuffing"),
    );
    assert_bytes_eq(
        &reply.body,
        &dot_stuff(&wire_form(raw)),
        &format!("RETR {n} on the wire"),
    );
}

/// `(count, octets)` from STAT.
fn stat(client: &mut Client) -> (usize, usize) {
    let reply = client.ok("STAT");
    let mut words = reply.split(' ').skip(1);
    let count = words.next().and_then(|w| w.parse().ok());
    let octets = words.next().and_then(|w| w.parse().ok());
    match (count, octets) {
        (Some(c), Some(o)) => (c, o),
        _ => panic!("STAT reply is not `+OK count octets`: {reply}"),
    }
}

/// LIST without argument as `(number, size)` pairs.
fn list(client: &mut Client) -> Vec<(usize, usize)> {
    client
        .multiline("LIST")
        .lines()
        .iter()
        .map(|l| {
            let (n, size) = l
                .split_once(' ')
                .unwrap_or_else(|| panic!("bad LIST line {l:?}"));
            (n.parse().unwrap(), size.parse().unwrap())
        })
        .collect()
}

/// UIDL without argument as `(number, uid)` pairs.
fn uidl(client: &mut Client) -> Vec<(usize, String)> {
    client
        .multiline("UIDL")
        .lines()
        .iter()
        .map(|l| {
            let (n, uid) = l
                .split_once(' ')
                .unwrap_or_else(|| panic!("bad UIDL line {l:?}"));
            (n.parse().unwrap(), uid.to_owned())
        })
        .collect()
}

#[test]
fn greeting_is_one_positive_line_and_quit_closes() {
    let server = TestServer::start(standard_fixture());
    let mut client = server.connect();
    let greeting = client.read_line();
    assert!(greeting.starts_with(b"+OK"), "greeting: {greeting:?}");
    assert!(greeting.ends_with(b"\r\n"), "greeting without CRLF");
    assert!(
        greeting.len() <= 512,
        "greeting longer than RFC 1939 allows"
    );
    client.ok("QUIT");
    assert_eq!(client.read_to_close(), b"", "bytes after the QUIT reply");
    assert_eq!(server.files_on_disk("alice").len(), 3);
}

#[test]
fn full_rfc1939_session() {
    let server = TestServer::start(standard_fixture());
    let raw = three_messages();
    let sizes: Vec<usize> = raw.iter().map(|m| wire_size(m)).collect();
    let total: usize = sizes.iter().sum();

    let mut c = server.connect();
    c.greeting();
    c.ok("USER alice");
    c.ok("PASS secret");

    assert_eq!(stat(&mut c), (3, total));
    assert_eq!(
        list(&mut c),
        vec![(1, sizes[0]), (2, sizes[1]), (3, sizes[2])]
    );
    assert_eq!(c.ok("LIST 2"), format!("+OK 2 {}", sizes[1]));

    let uids = uidl(&mut c);
    assert_eq!(uids.iter().map(|(n, _)| *n).collect::<Vec<_>>(), [1, 2, 3]);
    for (_, uid) in &uids {
        assert!(
            (1..=70).contains(&uid.len()) && uid.bytes().all(|b| (0x21..=0x7e).contains(&b)),
            "UIDL {uid:?} is not 1-70 printable characters (RFC 1939)"
        );
    }
    let mut distinct: Vec<&String> = uids.iter().map(|(_, u)| u).collect();
    distinct.dedup();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "UIDLs are not unique: {uids:?}");
    assert_eq!(c.ok("UIDL 2"), format!("+OK 2 {}", uids[1].1));

    for (i, m) in raw.iter().enumerate() {
        assert_retr(&mut c, i + 1, m);
    }

    // TOP: headers, the blank line, then exactly k body lines.
    for (n, k) in [
        (2, 2),
        (2, 0),
        (2, 5),
        (2, 100),
        (2, u32::MAX as usize),
        (1, 1),
        (3, 2),
    ] {
        let reply = c.multiline(&format!("TOP {n} {k}"));
        assert_bytes_eq(
            &unstuff(&reply.body),
            &top_of(&raw[n - 1], k),
            &format!("TOP {n} {k}"),
        );
    }
    let top = c.multiline("TOP 2 2");
    assert_eq!(
        top.lines(),
        [
            "From: b@example.org",
            "Subject: two",
            "",
            "Body line 1",
            "Body line 2"
        ]
    );

    c.ok("DELE 1");
    assert_eq!(stat(&mut c), (2, total - sizes[0]));
    c.ok("RSET");
    assert_eq!(stat(&mut c), (3, total));
    c.ok("NOOP");
    c.ok("DELE 3");
    c.ok("QUIT");
    assert_eq!(c.read_to_close(), b"", "bytes after the QUIT reply");

    assert!(
        !server.message_exists("alice", 3),
        "DELEted message still on disk after QUIT"
    );
    assert!(server.message_exists("alice", 1));
    assert!(server.message_exists("alice", 2));
    let mut c = server.login("alice", "secret");
    assert_eq!(stat(&mut c), (2, sizes[0] + sizes[1]));
    assert_retr(&mut c, 1, &raw[0]);
    assert_retr(&mut c, 2, &raw[1]);
}

#[test]
fn deleted_messages_are_invisible_until_rset() {
    let server = TestServer::start(standard_fixture());
    let raw = three_messages();
    let mut c = server.login("alice", "secret");
    c.ok("DELE 2");
    for command in ["LIST 2", "UIDL 2", "RETR 2", "TOP 2 0", "DELE 2"] {
        c.err(command);
    }
    assert_eq!(stat(&mut c), (2, wire_size(&raw[0]) + wire_size(&raw[2])));
    let listed: Vec<usize> = list(&mut c).iter().map(|(n, _)| *n).collect();
    assert_eq!(
        listed,
        [1, 3],
        "LIST shows a deleted message (numbers never shift)"
    );
    let uided: Vec<usize> = uidl(&mut c).iter().map(|(n, _)| *n).collect();
    assert_eq!(uided, [1, 3], "UIDL shows a deleted message");
    assert_retr(&mut c, 3, &raw[2]);

    c.ok("RSET");
    assert_eq!(stat(&mut c).0, 3);
    assert_retr(&mut c, 2, &raw[1]);
    c.ok("LIST 2");
    c.ok("QUIT");
    assert_eq!(
        server.files_on_disk("alice").len(),
        3,
        "RSET did not undelete"
    );
}

#[test]
fn deletions_happen_only_after_quit() {
    let server = TestServer::start(standard_fixture());
    let before = server.files_on_disk("alice");
    let mut c = server.login("alice", "secret");
    c.ok("DELE 1");
    c.ok("DELE 2");
    // Another command round trip, so any eager deletion has had its chance.
    c.ok("NOOP");
    assert_eq!(
        server.files_on_disk("alice"),
        before,
        "files removed before QUIT"
    );
    c.ok("QUIT");
    assert!(!server.message_exists("alice", 1));
    assert!(!server.message_exists("alice", 2));
    assert!(server.message_exists("alice", 3));
    assert_eq!(server.files_on_disk("alice").len(), 1);
}

#[test]
fn dropped_connection_deletes_nothing() {
    let server = TestServer::start(standard_fixture());
    let before = server.files_on_disk("alice");
    let mut c = server.login("alice", "secret");
    c.ok("DELE 1");
    c.ok("DELE 3");
    c.drop_connection();

    // A client that sends DELE and closes without reading the reply, too.
    let mut c = server.login_when_released("alice", "secret");
    c.send(b"DELE 2\r\n");
    c.drop_connection();

    let mut c = server.login_when_released("alice", "secret");
    assert_eq!(
        stat(&mut c).0,
        3,
        "messages lost after a dropped connection"
    );
    c.ok("QUIT");
    assert_eq!(server.files_on_disk("alice"), before);
}

#[test]
fn rset_undeletes_everything() {
    let server = TestServer::start(standard_fixture());
    let raw = three_messages();
    let mut c = server.login("alice", "secret");
    c.ok("DELE 1");
    c.ok("DELE 3");
    assert_eq!(stat(&mut c).0, 1);
    c.ok("RSET");
    let total: usize = raw.iter().map(|m| wire_size(m)).sum();
    assert_eq!(stat(&mut c), (3, total));
    assert_retr(&mut c, 1, &raw[0]);
    assert_retr(&mut c, 3, &raw[2]);
    c.ok("QUIT");
    assert_eq!(server.files_on_disk("alice").len(), 3);
}

#[test]
fn second_login_is_in_use_until_quit_or_drop() {
    let server = TestServer::start(standard_fixture());
    let mut first = server.login("alice", "secret");

    let mut second = server.connect();
    second.greeting();
    second.ok("USER alice");
    let reply = second.command("PASS secret");
    assert!(
        reply.starts_with("-ERR [IN-USE]"),
        "second login got: {reply}"
    );
    // The refused client is still in AUTHORIZATION and may try again.
    second.err("STAT");
    // Other users are not affected.
    let mut bob = server.login("bob", "hunter2");
    bob.ok("STAT");

    // QUIT releases the maildrop before its reply is sent.
    first.ok("QUIT");
    second.ok("USER alice");
    second.ok("PASS secret");
    second.ok("STAT");

    // A dropped connection releases it too (soon after the close).
    second.drop_connection();
    let mut third = server.login_when_released("alice", "secret");
    assert_eq!(stat(&mut third).0, 3);
}

#[test]
fn wrong_password_and_unknown_user_look_the_same() {
    let server = TestServer::start(standard_fixture());
    let delay = Duration::from_millis(AUTH_FAILURE_DELAY_MS);
    let mut c = server.connect();
    c.greeting();

    let user_known = c.ok("USER alice");
    let started = Instant::now();
    let wrong_password = c.command("PASS not-the-password");
    let wrong_password_took = started.elapsed();

    let user_unknown = c.ok("USER mallory");
    let started = Instant::now();
    let unknown_user = c.command("PASS secret");
    let unknown_user_took = started.elapsed();

    assert_eq!(
        user_known, user_unknown,
        "USER reveals whether a user exists"
    );
    assert!(
        wrong_password.starts_with("-ERR [AUTH] "),
        "wrong password got: {wrong_password}"
    );
    assert_eq!(
        wrong_password, unknown_user,
        "wrong password and unknown user are answered differently"
    );
    assert!(
        wrong_password_took >= delay,
        "wrong password answered after {wrong_password_took:?}, before the configured {delay:?}"
    );
    assert!(
        unknown_user_took >= delay,
        "unknown user answered after {unknown_user_took:?}, before the configured {delay:?}"
    );

    // The session goes on: the right password now works.
    c.ok("USER alice");
    c.ok("PASS secret");
    assert_eq!(stat(&mut c).0, 3);
    c.ok("QUIT");

    // Pipelined behind a failed login, later commands wait for its
    // delayed answer and keep their order.
    let mut c = server.connect();
    c.greeting();
    c.send(b"USER alice\r\nPASS wrong\r\nUSER alice\r\nPASS secret\r\nSTAT\r\n");
    let replies: Vec<String> = (0..5).map(|_| c.read_line_str()).collect();
    let statuses: Vec<&str> = replies
        .iter()
        .map(|r| &r[..r.find(' ').unwrap_or(r.len())])
        .collect();
    assert_eq!(
        statuses,
        ["+OK", "-ERR", "+OK", "+OK", "+OK"],
        "replies: {replies:?}"
    );
    assert!(replies[1].starts_with("-ERR [AUTH]"), "{}", replies[1]);
}

#[test]
fn capa_lists_the_capabilities_in_both_states() {
    let server = TestServer::start(standard_fixture());
    let mut c = server.connect();
    c.greeting();
    let expected = [
        "TOP",
        "UIDL",
        "USER",
        "RESP-CODES",
        "AUTH-RESP-CODE",
        "PIPELINING",
    ];
    for state in ["AUTHORIZATION", "TRANSACTION"] {
        let lines = c.multiline("CAPA").lines();
        for capability in expected {
            assert!(
                lines.iter().any(|l| l == capability),
                "CAPA in {state} lacks {capability}: {lines:?}"
            );
        }
        assert!(
            lines.iter().any(|l| l.starts_with("IMPLEMENTATION ")),
            "CAPA in {state} lacks IMPLEMENTATION: {lines:?}"
        );
        if state == "AUTHORIZATION" {
            c.ok("USER alice");
            c.ok("PASS secret");
        }
    }
    c.ok("NOOP");
}

#[test]
fn argument_errors_are_answered_and_the_session_continues() {
    let server = TestServer::start(standard_fixture());
    let mut c = server.connect();
    c.greeting();

    // AUTHORIZATION: NOOP is not allowed here, so CAPA shows the session is
    // still alive after each bad line.
    let bad_before_login: &[&[u8]] = &[
        b"USER",
        b"PASS secret",
        b"USER alice bob",
        b"STAT",
        b"LIST",
        b"FOO",
        b"",
        b"US\0ER alice",
        b"APOP alice 0123456789abcdef0123456789abcdef",
        b"AUTH X-NO-SUCH-MECHANISM",
        b"STLS",
    ];
    for line in bad_before_login {
        c.send(&[line, &b"\r\n"[..]].concat());
        let reply = c.read_line_str();
        assert!(
            reply.starts_with("-ERR"),
            "{:?} before login got {reply:?}",
            String::from_utf8_lossy(line)
        );
        c.multiline("CAPA");
    }

    c.ok("USER alice");
    c.ok("PASS secret");
    let bad_after_login: &[&[u8]] = &[
        b"LIST x",
        b"LIST 0",
        b"LIST -1",
        b"LIST +1",
        b"LIST 1x",
        b"LIST 4294967297",
        b"LIST 99999999999999999999999",
        b"LIST 1 2",
        b"LIST 4",
        b"UIDL x",
        b"UIDL 0",
        b"UIDL 1 2",
        b"RETR",
        b"RETR 0",
        b"RETR -1",
        b"RETR 1 2",
        b"RETR x",
        b"RETR 4",
        b"TOP",
        b"TOP 1",
        b"TOP 1 x",
        b"TOP 1 -1",
        b"TOP 0 1",
        b"TOP 1 2 3",
        b"TOP 1 4294967296",
        b"TOP 4 0",
        b"DELE",
        b"DELE 0",
        b"DELE -1",
        b"DELE 4294967297",
        b"DELE 1 2",
        b"DELE 4",
        b"STAT 1",
        b"NOOP 1",
        b"RSET 1",
        b"QUIT 1",
        b"USER alice",
        b"PASS secret",
        b"FOO",
        b"",
        b"NO\0OP",
        b"LIST 1\0",
        b"DELE \x001",
        b"DELE 1\0",
        b"RETR 1\0",
        b"STLS",
        b"AUTH PLAIN",
    ];
    for line in bad_after_login {
        c.send(&[line, &b"\r\n"[..]].concat());
        let reply = c.read_line_str();
        assert!(
            reply.starts_with("-ERR"),
            "{:?} after login got {reply:?}",
            String::from_utf8_lossy(line)
        );
        c.ok("NOOP");
    }
    // None of the bad DELEs deleted anything.
    assert_eq!(stat(&mut c).0, 3);
    c.ok("QUIT");
    assert_eq!(server.files_on_disk("alice").len(), 3);
}

#[test]
fn user_name_with_nul_does_not_log_in() {
    let server = TestServer::start(standard_fixture());
    let mut c = server.connect();
    c.greeting();
    c.send(b"USER alice\0x\r\n");
    let user_reply = c.read_line_str();
    let pass_reply = c.command("PASS secret");
    assert!(
        !pass_reply.starts_with("+OK"),
        "`USER alice\\0x` logged in (USER got {user_reply:?})"
    );
    c.err("STAT");

    // The same in one write, and with the NUL at the end of the name.
    c.send(b"USER alice\0\r\nPASS secret\r\nSTAT\r\n");
    c.read_line_str();
    let pass_reply = c.read_line_str();
    assert!(!pass_reply.starts_with("+OK"), "`USER alice\\0` logged in");
    let stat_reply = c.read_line_str();
    assert!(
        stat_reply.starts_with("-ERR"),
        "STAT after it: {stat_reply}"
    );

    // Nobody holds alice's maildrop: a clean login works at once.
    let mut alice = server.login("alice", "secret");
    alice.ok("STAT");
}

#[test]
fn hundred_pipelined_commands_get_hundred_replies_in_order() {
    let server = TestServer::start(standard_fixture());
    let cycle = [
        "STAT", "LIST 1", "UIDL 2", "NOOP", "LIST", "TOP 1 0", "RETR 2", "LIST 9", "UIDL",
        "DELE 99",
    ];
    let commands: Vec<&str> = cycle.iter().cycle().take(100).copied().collect();

    // What each command answers on its own.
    let mut c = server.login("alice", "secret");
    let mut expected = BTreeMap::new();
    for command in cycle {
        c.send_line(command);
        expected.insert(command, read_reply(&mut c, command));
    }

    let batch: String = commands.iter().map(|c| format!("{c}\r\n")).collect();
    c.send(batch.as_bytes());
    for (i, command) in commands.iter().enumerate() {
        let reply = read_reply(&mut c, command);
        assert_eq!(
            String::from_utf8_lossy(&reply),
            String::from_utf8_lossy(&expected[command]),
            "reply {} (to {command}) differs from its unpipelined reply",
            i + 1
        );
    }
    c.ok("NOOP");
    c.ok("QUIT");

    // Pipelining across the login, ending with QUIT.
    let mut c = server.connect();
    c.greeting();
    c.send(b"USER alice\r\nPASS secret\r\nSTAT\r\nDELE 1\r\nQUIT\r\n");
    for what in ["USER", "PASS", "STAT", "DELE", "QUIT"] {
        let reply = c.read_line_str();
        assert!(reply.starts_with("+OK"), "pipelined {what} got {reply}");
    }
    assert_eq!(c.read_to_close(), b"");
    assert_eq!(server.files_on_disk("alice").len(), 2);
}

#[test]
fn overlong_lines_get_one_error_and_the_session_continues() {
    let server = TestServer::start(standard_fixture());
    let mut c = server.connect();
    c.greeting();

    // RFC 2449: a command line is up to 255 octets including CRLF; the
    // longest allowed one must work.
    let longest = format!("USER {}\r\n", "a".repeat(255 - 7));
    assert_eq!(longest.len(), 255);
    c.send(longest.as_bytes());
    let reply = c.read_line_str();
    assert!(reply.starts_with("+OK"), "255-octet line got {reply}");

    // 300 octets, then CAPA in the same write.
    let mut long = format!("USER {}", "b".repeat(295)).into_bytes();
    long.extend_from_slice(b"\r\nCAPA\r\n");
    c.send(&long);
    let reply = c.read_line_str();
    assert!(reply.starts_with("-ERR"), "300-octet line got {reply}");
    let capa = c.read_multiline();
    assert!(
        capa.starts_with(b"+OK"),
        "CAPA after a 300-octet line got {capa:?}"
    );
    // No second error is waiting: the next reply is USER's.
    c.ok("USER alice");
    c.ok("PASS secret");

    let mut long = format!("NOOP {}", "x".repeat(295)).into_bytes();
    long.extend_from_slice(b"\r\nNOOP\r\n");
    c.send(&long);
    let reply = c.read_line_str();
    assert!(reply.starts_with("-ERR"), "300-octet line got {reply}");
    let reply = c.read_line_str();
    assert!(
        reply.starts_with("+OK"),
        "NOOP after a 300-octet line got {reply}"
    );
    // No second error is waiting.
    c.ok("NOOP");

    // One megabyte without a line end, then CRLF and NOOP.
    let huge = vec![b'Z'; 1 << 20];
    c.send(&huge);
    c.send(b"\r\nNOOP\r\n");
    let reply = c.read_line_str();
    assert!(reply.starts_with("-ERR"), "1 MB line got {reply}");
    let reply = c.read_line_str();
    assert!(
        reply.starts_with("+OK"),
        "NOOP after a 1 MB line got {reply}"
    );
    c.ok("NOOP");
    assert_eq!(stat(&mut c).0, 3);
}

#[test]
fn message_vanished_after_login_gives_an_error_for_that_message_only() {
    if skip_unless_maildir("deletes a message file under a session (an mbox keeps its messages until the session's own rewrite)") {
        return;
    }
    let server = TestServer::start(standard_fixture());
    let raw = three_messages();
    let mut c = server.login("alice", "secret");
    std::fs::remove_file(server.current_message_path("alice", 2).unwrap()).unwrap();
    c.err("RETR 2");
    c.ok("NOOP");
    c.err("TOP 2 1");
    c.ok("NOOP");
    assert_retr(&mut c, 1, &raw[0]);
    assert_retr(&mut c, 3, &raw[2]);
    c.ok("QUIT");
    assert_eq!(server.files_on_disk("alice").len(), 2);
}

/// Every message's UIDL mapped to its content, read with UIDL n and RETR n.
fn uid_to_content(c: &mut Client) -> BTreeMap<String, Vec<u8>> {
    let mut map = BTreeMap::new();
    for (n, uid) in uidl(c) {
        assert_eq!(c.ok(&format!("UIDL {n}")), format!("+OK {n} {uid}"));
        let body = unstuff(&c.multiline(&format!("RETR {n}")).body);
        assert!(
            map.insert(uid.clone(), body).is_none(),
            "duplicate UIDL {uid}"
        );
    }
    map
}

#[test]
fn uidls_are_stable_across_sessions_restarts_moves_and_deletions() {
    let mut server = TestServer::start(standard_fixture());
    let mut c = server.login("alice", "secret");
    let first = uid_to_content(&mut c);
    assert_eq!(first.len(), 3);
    c.ok("QUIT");

    let mut c = server.login("alice", "secret");
    assert_eq!(
        uid_to_content(&mut c),
        first,
        "UIDLs changed between sessions"
    );
    c.ok("QUIT");

    server.restart();
    let mut c = server.login("alice", "secret");
    assert_eq!(
        uid_to_content(&mut c),
        first,
        "UIDLs changed across a restart"
    );
    c.ok("QUIT");

    // A mail client marks message 2 as seen: new/NAME -> cur/NAME:2,S (or,
    // if the store already moved it to cur/, just the flag change).
    // (maildir only: an mbox has no such moves)
    if store_kind() == StoreKind::Maildir {
        let old = server.current_message_path("alice", 2).unwrap();
        let name = old.file_name().unwrap().to_string_lossy().into_owned();
        let base = name.split(':').next().unwrap();
        let moved = server
            .maildir("alice")
            .join("cur")
            .join(format!("{base}:2,S"));
        std::fs::rename(&old, &moved).unwrap();
    }
    let mut c = server.login("alice", "secret");
    assert_eq!(
        uid_to_content(&mut c),
        first,
        "UIDL changed when the file moved from new/ to cur/ with flags"
    );
    // Deleting one message leaves the others' UIDLs alone.
    c.ok("DELE 1");
    c.ok("QUIT");
    let mut c = server.login("alice", "secret");
    let after = uid_to_content(&mut c);
    let mut expected = first.clone();
    expected.retain(|_, body| *body != wire_form(&three_messages()[0]));
    assert_eq!(expected.len(), 2);
    assert_eq!(
        after, expected,
        "UIDLs changed after another message was deleted"
    );
}

/// Messages that try to break the size computation and the wire encoding.
/// The 64 KiB ones put a CRLF and a dot line across the boundary of the
/// store's 64 KiB reads.
fn hostile_messages() -> Vec<(&'static str, Vec<u8>)> {
    let mut chunk_crlf = vec![b'a'; 65535];
    chunk_crlf.extend_from_slice(b"\r\n.dot after the boundary\r\n");
    let mut chunk_dot = vec![b'b'; 65535];
    chunk_dot.extend_from_slice(b"\n.x\n..y\n");
    let mut chunk_lf = vec![b'c'; 65536];
    chunk_lf.extend_from_slice(b"\n.\n");
    let mut eight_bit = b"Subject: 8bit\n\n".to_vec();
    eight_bit.extend(0x80u8..=0xff);
    eight_bit.extend_from_slice("\nGr\u{fc}\u{df}e \u{2603}\n".as_bytes());
    let mut long_line = b"Subject: long\n\n".to_vec();
    long_line.extend(std::iter::repeat_n(b'L', 10_000));
    long_line.extend_from_slice(b"\nshort\n");
    let mut huge_line = b"Subject: huge line\n\n.".to_vec();
    huge_line.extend(std::iter::repeat_n(b'H', 200_000));
    huge_line.extend_from_slice(b"\n");
    vec![
        (
            "dot lines",
            b"Subject: dots\n\n.hidden\n.. two\n...three\nnormal\n.".to_vec(),
        ),
        (
            "lone dot line",
            b"Subject: lone\n\nbefore\n.\nafter\n".to_vec(),
        ),
        ("only a dot", b".\n".to_vec()),
        ("only two dots", b"..\n".to_vec()),
        ("a dot without newline", b".".to_vec()),
        ("LF only", b"Subject: lf\n\nline 1\nline 2\n".to_vec()),
        (
            "CRLF",
            b"Subject: crlf\r\n\r\nline 1\r\nline 2\r\n".to_vec(),
        ),
        (
            "mixed",
            b"Subject: mixed\r\n\nA\r\nb\nc\r\n\n\r\nd\n".to_vec(),
        ),
        (
            "no final newline",
            b"Subject: nofinal\n\nlast line without newline".to_vec(),
        ),
        ("8-bit bytes", eight_bit),
        (
            "NUL bytes",
            b"Subject: nul\n\nbefore\0after\n\0\n\0.\n.\0\n".to_vec(),
        ),
        ("line over 8 KiB", long_line),
        ("line over 64 KiB starting with a dot", huge_line),
        ("CRLF split at 64 KiB", chunk_crlf),
        ("dot line at 64 KiB", chunk_dot),
        ("LF and dot at 64 KiB", chunk_lf),
        ("empty", Vec::new()),
        ("blank lines only", b"\n\n\n".to_vec()),
        (
            "From lines",
            b"Subject: from\n\nFrom the start\n\nFrom after a blank line\n>From quoted\n>>From twice\nFrom\nFrom \n".to_vec(),
        ),
        ("a From line first", b"From someone\nSubject: odd\n\nbody\n".to_vec()),
    ]
}

#[test]
fn sizes_and_bytes_of_hostile_messages() {
    let messages = hostile_messages();
    let mut fixture = Fixture::new().user("alice", "secret");
    for (_, raw) in &messages {
        fixture = fixture.message("alice", raw.clone());
    }
    let server = TestServer::start(fixture);
    let mut c = server.login("alice", "secret");

    let total: usize = messages.iter().map(|(_, m)| wire_size(m)).sum();
    assert_eq!(stat(&mut c), (messages.len(), total), "STAT");
    let listed = list(&mut c);
    assert_eq!(listed.len(), messages.len());

    for (i, (name, raw)) in messages.iter().enumerate() {
        let n = i + 1;
        let expected = wire_form(raw);
        assert_eq!(
            listed[i],
            (n, expected.len()),
            "LIST size of message {n} ({name})"
        );
        assert_eq!(
            c.ok(&format!("LIST {n}")),
            format!("+OK {n} {}", expected.len()),
            "LIST {n} ({name})"
        );
        let reply = c.multiline(&format!("RETR {n}"));
        let delivered = unstuff(&reply.body);
        assert_eq!(
            delivered.len(),
            expected.len(),
            "LIST size of {name} differs from the octets RETR delivers"
        );
        assert_bytes_eq(&delivered, &expected, &format!("RETR of {name}"));
        assert_bytes_eq(
            &reply.body,
            &dot_stuff(&expected),
            &format!("dot-stuffing of {name}"),
        );
        let top = c.multiline(&format!("TOP {n} 1"));
        assert_bytes_eq(
            &unstuff(&top.body),
            &top_of(raw, 1),
            &format!("TOP of {name}"),
        );
    }
    c.ok("QUIT");
}

#[test]
fn twenty_megabyte_message_is_delivered_byte_exact() {
    let big = big_message(20 << 20);
    let small = b"Subject: small\n\nafter the big one\n".to_vec();
    let server = TestServer::start(
        Fixture::new()
            .user("alice", "secret")
            .message("alice", big.clone())
            .message("alice", small.clone()),
    );
    let mut c = server.login("alice", "secret");
    let expected = wire_form(&big);
    assert_eq!(c.ok("LIST 1"), format!("+OK 1 {}", expected.len()));

    let reply = c.multiline("RETR 1");
    let delivered = unstuff(&reply.body);
    assert_eq!(
        delivered.len(),
        expected.len(),
        "LIST size differs from RETR octets"
    );
    assert_bytes_eq(&delivered, &expected, "RETR of the 20 MB message");
    assert_bytes_eq(
        &reply.body,
        &dot_stuff(&expected),
        "dot-stuffing of the 20 MB message",
    );

    // Commands pipelined behind a streamed body are answered after its
    // terminator, in order.
    c.send(b"RETR 1\r\nLIST 2\r\nNOOP\r\n");
    let again = split_multiline(&c.read_multiline()).expect("second RETR 1");
    assert_eq!(again.body.len(), reply.body.len(), "second RETR 1 differs");
    assert_eq!(
        c.read_line_str(),
        format!("+OK 2 {}", wire_form(&small).len())
    );
    assert!(c.read_line_str().starts_with("+OK"), "NOOP after RETR");

    // TOP stops early and the session carries on.
    let top = c.multiline("TOP 1 3");
    assert_bytes_eq(&unstuff(&top.body), &top_of(&big, 3), "TOP 1 3");
    assert_retr(&mut c, 2, &small);
    c.ok("QUIT");
}

#[test]
fn client_that_never_reads_does_not_grow_server_memory() {
    let big = big_message(20 << 20);
    let server = TestServer::start(
        Fixture::new()
            .user("alice", "secret")
            .user("bob", "hunter2")
            .message("alice", big)
            .message("bob", &b"Subject: x\n\ny\n"[..]),
    );
    // Warm up: one full RETR, so buffers the server keeps for good (worker
    // read buffers, allocator arenas) are in the baseline.
    let mut warm = server.login("alice", "secret");
    warm.multiline("RETR 1");
    warm.ok("QUIT");

    let mut stalled = server.login("alice", "secret");
    let baseline = server.rss_kib();
    stalled.send("RETR 1\r\n".repeat(100).as_bytes());
    // The server now fills the socket buffers and must then wait. Watch its
    // memory for a while and keep the peak.
    let mut peak = baseline;
    for _ in 0..30 {
        std::thread::sleep(Duration::from_millis(100));
        peak = peak.max(server.rss_kib());
    }
    // The event loop is not stuck on the stalled client.
    let mut bob = server.login("bob", "hunter2");
    bob.ok("STAT");
    peak = peak.max(server.rss_kib());

    // The bound: per connection the server needs one body piece (128 KiB)
    // plus a 64 KiB read buffer per worker and allocator slack, a few MiB
    // at most. 16 MiB is less than one copy of the 20 MB message, so a
    // server that holds a whole message in memory fails, and one that
    // queues the 100 replies (2 GB) fails by far.
    let growth_kib = peak.saturating_sub(baseline);
    eprintln!("server RSS: baseline {baseline} KiB, peak {peak} KiB, growth {growth_kib} KiB");
    assert!(
        growth_kib < 16 * 1024,
        "server RSS grew by {growth_kib} KiB (from {baseline} KiB) while a client sent 100 \
         RETRs of a 20 MB message without reading"
    );
    drop(stalled);
}

#[test]
fn third_connection_from_one_ip_is_refused_when_max_per_ip_is_two() {
    let server = TestServer::start(standard_fixture().limit("max_per_ip", 2));
    let mut first = server.connect();
    first.greeting();
    let mut second = server.connect();
    second.greeting();
    let mut third = server.connect();
    let reply = third.read_line_str();
    assert!(
        reply.starts_with("-ERR [SYS/TEMP]"),
        "third connection got {reply:?}"
    );
    assert_eq!(third.read_to_close(), b"", "refused connection stays open");

    // The first two work normally, and a freed place can be taken again.
    second.ok("USER alice");
    second.ok("PASS secret");
    first.ok("QUIT");
    assert_eq!(first.read_to_close(), b"");
    let mut fourth = server.connect();
    fourth.greeting();
    fourth.ok("QUIT");
}

#[test]
fn login_timeout_closes_an_idle_unauthenticated_connection() {
    let server = TestServer::start(standard_fixture().limit("login_timeout_secs", 1));
    let mut idle = server.connect();
    idle.greeting();
    // Nothing sent: the server must close it (IO_TIMEOUT is the guard).
    let said = idle.read_to_close();
    assert!(
        said.is_empty() || said.starts_with(b"-ERR"),
        "before closing the server said {said:?}"
    );

    // Once logged in, the longer idle timeout applies instead.
    let mut busy = server.login("alice", "secret");
    std::thread::sleep(Duration::from_millis(2500));
    busy.ok("NOOP");
    busy.ok("QUIT");
}

#[test]
fn sigterm_with_open_sessions_exits_cleanly_and_deletes_nothing() {
    let mut server = TestServer::start(
        standard_fixture()
            .user("carol", "secret")
            .message("carol", big_message(8 << 20)),
    );
    let before = server.files_on_disk("alice");
    let mut deleter = server.login("alice", "secret");
    deleter.ok("DELE 1");
    deleter.ok("DELE 2");
    let mut waiting = server.connect();
    waiting.greeting();
    let mut reader = server.login("bob", "hunter2");
    reader.multiline("RETR 1");
    // A session in the middle of streaming a large message to a client
    // that stopped reading.
    let mut streaming = server.login("carol", "secret");
    streaming.send(b"RETR 1\r\n");
    streaming.read_line();

    let status = server.terminate();
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIGTERM: {status}"
    );
    for client in [&mut deleter, &mut waiting, &mut reader] {
        let said = client.read_to_close();
        assert!(
            said.is_empty() || said.starts_with(b"-ERR"),
            "at shutdown a client got {said:?}"
        );
    }
    assert_eq!(
        server.files_on_disk("alice"),
        before,
        "SIGTERM deleted messages of a session that had not sent QUIT"
    );
    assert_eq!(server.files_on_disk("bob").len(), 1);
    assert_eq!(server.files_on_disk("carol").len(), 1);
    drop(streaming);
}

#[test]
fn passwords_never_appear_in_the_log() {
    let right = "Rt-9zQ4-carol-pw";
    let wrong = "Wr-7kX2-not-carol";
    let mut server = TestServer::start(
        standard_fixture()
            .user("carol", right)
            .message("carol", &b"Subject: c\n\nc\n"[..])
            .log_filter("trace"),
    );
    let mut c = server.connect();
    c.greeting();
    c.ok("USER carol");
    c.err(&format!("PASS {wrong}"));
    c.ok("USER nobody");
    c.err(&format!("PASS {right}"));
    c.send(format!("USER carol\r\nPASS {wrong} {}\r\n", "p".repeat(300)).as_bytes());
    c.read_line_str();
    c.read_line_str();
    c.ok("USER carol");
    c.ok(&format!("PASS {right}"));
    c.ok("STAT");
    c.ok("QUIT");
    server.terminate();

    let log = server.log();
    assert!(
        log.contains("carol"),
        "the log does not mention the user at all:\n{log}"
    );
    assert!(
        !log.contains(right),
        "the right password appears in the log"
    );
    assert!(!log.contains(wrong), "a wrong password appears in the log");
}

#[test]
fn client_that_stalls_and_resumes_gets_every_byte() {
    let big = big_message(4 << 20);
    let server = TestServer::start(
        Fixture::new()
            .user("alice", "secret")
            .message("alice", big.clone()),
    );
    let mut c = server.login("alice", "secret");
    c.send(b"RETR 1\r\nRETR 1\r\nRETR 1\r\nNOOP\r\n");
    // Stop reading long enough for the socket buffers to fill and the
    // server to wait for the client; then read everything.
    std::thread::sleep(Duration::from_millis(1500));
    let expected = dot_stuff(&wire_form(&big));
    for i in 1..=3 {
        let reply = split_multiline(&c.read_multiline())
            .unwrap_or_else(|| panic!("RETR number {i} is not a multi-line +OK"));
        assert_bytes_eq(
            &reply.body,
            &expected,
            &format!("RETR number {i} after the client resumed reading"),
        );
    }
    assert!(c.read_line_str().starts_with("+OK"), "NOOP after the RETRs");
    c.ok("QUIT");
}

#[test]
fn commands_are_case_insensitive() {
    let server = TestServer::start(standard_fixture());
    let raw = three_messages();
    let mut c = server.connect();
    c.greeting();
    c.ok("user alice");
    c.ok("Pass secret");
    assert_eq!(
        c.ok("stat"),
        format!("+OK 3 {}", raw.iter().map(|m| wire_size(m)).sum::<usize>())
    );
    let reply = c.multiline("rEtR 1");
    assert_bytes_eq(&unstuff(&reply.body), &wire_form(&raw[0]), "rEtR 1");
    c.ok("list 2");
    c.ok("uidl 2");
    c.multiline("top 2 1");
    c.ok("dele 3");
    c.ok("rset");
    c.ok("noop");
    c.multiline("capa");
    c.ok("quit");
    assert_eq!(server.files_on_disk("alice").len(), 3);
}

#[test]
fn password_with_spaces_and_symbols_logs_in() {
    let password = "correct horse  battery staple %u {x} \\";
    let server = TestServer::start(
        standard_fixture()
            .user("dave", password)
            .message("dave", &b"Subject: d\n\nd\n"[..]),
    );
    let mut c = server.connect();
    c.greeting();
    c.ok("USER dave");
    c.err("PASS correct horse battery staple");
    c.ok("USER dave");
    c.ok(&format!("PASS {password}"));
    assert_eq!(stat(&mut c).0, 1);
    c.ok("QUIT");

    // 8-bit passwords are compared as the bytes the client sends.
    let server = TestServer::start(Fixture::new().user("ida", "p\u{e4}ssw\u{f6}rd\u{20ac}"));
    let mut c = server.connect();
    c.greeting();
    c.ok("USER ida");
    c.err("PASS passwort");
    c.ok("USER ida");
    c.ok("PASS p\u{e4}ssw\u{f6}rd\u{20ac}");
}

#[test]
fn commands_then_half_close_are_all_carried_out() {
    // `printf 'USER..\r\nPASS..\r\nDELE 1\r\nQUIT\r\n' | nc host 110`: the
    // client sends everything and closes its sending side at once.
    let server = TestServer::start(standard_fixture());
    let mut c = server.connect();
    c.send(b"USER alice\r\nPASS secret\r\nDELE 1\r\nQUIT\r\n");
    c.stream().shutdown(std::net::Shutdown::Write).unwrap();
    c.greeting();
    for what in ["USER", "PASS", "DELE", "QUIT"] {
        let reply = c.read_line_str();
        assert!(reply.starts_with("+OK"), "{what} got {reply}");
    }
    assert_eq!(c.read_to_close(), b"");
    assert!(
        !server.message_exists("alice", 1),
        "QUIT after half-close did not delete"
    );
    assert_eq!(server.files_on_disk("alice").len(), 2);
}

#[test]
fn mail_arriving_during_a_session_is_left_alone() {
    if skip_unless_maildir(
        "delivers into new/ (the mbox store has its own delivery tests, with procmail)",
    ) {
        return;
    }
    let server = TestServer::start(standard_fixture());
    let mut c = server.login("alice", "secret");
    let (count, octets) = stat(&mut c);
    // The MTA delivers a new message while alice is logged in.
    let arrived = server
        .maildir("alice")
        .join("new")
        .join("1800000000.M99P1.mta-host");
    std::fs::write(&arrived, b"Subject: late\n\narrived during the session\n").unwrap();
    assert_eq!(stat(&mut c), (count, octets), "the session's view changed");
    c.err("RETR 4");
    for n in 1..=3 {
        c.ok(&format!("DELE {n}"));
    }
    c.ok("QUIT");
    let names = server.files_on_disk("alice");
    assert_eq!(
        names,
        ["1800000000.M99P1.mta-host"],
        "QUIT removed a message the session never saw"
    );
    let mut c = server.login("alice", "secret");
    assert_eq!(stat(&mut c).0, 1);
    let reply = c.multiline("RETR 1");
    assert_bytes_eq(
        &unstuff(&reply.body),
        b"Subject: late\r\n\r\narrived during the session\r\n",
        "the message that arrived during the previous session",
    );
}

#[test]
fn many_concurrent_sessions_each_get_their_own_mail() {
    const USERS: usize = 16;
    let mut fixture = Fixture::new();
    let mut bodies = Vec::new();
    for u in 0..USERS {
        let name = format!("user{u}");
        fixture = fixture.user(&name, &format!("pw{u}"));
        let mut body = format!("Subject: for {name}\n\n").into_bytes();
        body.extend(big_message(256 * 1024 + u * 1000));
        fixture = fixture.message(&name, body.clone());
        bodies.push(body);
    }
    let server = TestServer::start(fixture);
    std::thread::scope(|scope| {
        for (u, body) in bodies.iter().enumerate() {
            let server = &server;
            scope.spawn(move || {
                let name = format!("user{u}");
                let mut c = server.login(&name, &format!("pw{u}"));
                for round in 0..3 {
                    let reply = c.multiline("RETR 1");
                    assert_bytes_eq(
                        &unstuff(&reply.body),
                        &wire_form(body),
                        &format!("{name} RETR round {round}"),
                    );
                }
                c.ok("DELE 1");
                c.ok("QUIT");
            });
        }
    });
    for u in 0..USERS {
        assert!(server.files_on_disk(&format!("user{u}")).is_empty());
    }
}

#[test]
fn more_pipelined_commands_than_the_queue_holds_are_all_answered() {
    // max_pipelined_lines is 128: the server must stop reading, answer,
    // and come back for the rest of what is waiting in the socket.
    let server = TestServer::start(standard_fixture());
    let mut c = server.login("alice", "secret");
    let expected_list = c.ok("LIST 2");
    let mut batch = String::new();
    for i in 0..1000 {
        batch.push_str(if i % 2 == 0 { "NOOP\r\n" } else { "LIST 2\r\n" });
    }
    batch.push_str("STAT\r\n");
    c.send(batch.as_bytes());
    for i in 0..1000 {
        let reply = c.read_line_str();
        if i % 2 == 0 {
            assert!(reply.starts_with("+OK"), "reply {i} (NOOP): {reply}");
        } else {
            assert_eq!(reply, expected_list, "reply {i} (LIST 2)");
        }
    }
    assert!(
        c.read_line_str().starts_with("+OK 3 "),
        "STAT after 1000 commands"
    );
    c.ok("QUIT");
}

#[test]
fn client_vanishing_mid_retr_leaves_the_server_working() {
    let big = big_message(8 << 20);
    let server = TestServer::start(
        Fixture::new()
            .user("alice", "secret")
            .message("alice", big.clone())
            .message("alice", &b"Subject: s\n\ns\n"[..]),
    );
    for _ in 0..3 {
        let mut c = server.login_when_released("alice", "secret");
        c.ok("DELE 2");
        c.send(b"RETR 1\r\n");
        c.read_line();
        let mut some = [0u8; 4096];
        std::io::Read::read(&mut c.stream(), &mut some).unwrap();
        // Closing with unread data makes the kernel send a reset.
        drop(c);
    }
    let mut c = server.login_when_released("alice", "secret");
    assert_eq!(
        stat(&mut c).0,
        2,
        "a vanished client's DELE was carried out"
    );
    let reply = c.multiline("RETR 1");
    assert_bytes_eq(&unstuff(&reply.body), &wire_form(&big), "RETR after resets");
    c.ok("QUIT");
}

#[test]
fn empty_maildrop() {
    let server = TestServer::start(Fixture::new().user("erin", "secret"));
    let mut c = server.login("erin", "secret");
    assert_eq!(stat(&mut c), (0, 0));
    assert!(
        c.multiline("LIST").body.is_empty(),
        "LIST of an empty maildrop"
    );
    assert!(
        c.multiline("UIDL").body.is_empty(),
        "UIDL of an empty maildrop"
    );
    c.err("LIST 1");
    c.err("RETR 1");
    c.err("DELE 1");
    c.ok("RSET");
    c.ok("QUIT");
}

#[test]
fn fifteen_thousand_messages_list_uidl_and_delete() {
    const COUNT: usize = 15_000;
    let mut fixture = Fixture::new().user("alice", "secret");
    for i in 0..COUNT {
        fixture = fixture.message("alice", format!("Subject: {i}\n\nbody {i}\n"));
    }
    let server = TestServer::start(fixture);
    let mut c = server.login("alice", "secret");
    let sizes: Vec<usize> = (0..COUNT)
        .map(|i| format!("Subject: {i}\r\n\r\nbody {i}\r\n").len())
        .collect();
    assert_eq!(stat(&mut c), (COUNT, sizes.iter().sum()));
    let listed = list(&mut c);
    assert_eq!(listed.len(), COUNT);
    for (i, (n, size)) in listed.iter().enumerate() {
        assert_eq!((*n, *size), (i + 1, sizes[i]), "LIST line {}", i + 1);
    }
    let uids = uidl(&mut c);
    assert_eq!(uids.len(), COUNT);
    let mut distinct: Vec<&str> = uids.iter().map(|(_, u)| u.as_str()).collect();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), COUNT, "UIDLs are not unique");
    assert_eq!(
        c.ok(&format!("UIDL {COUNT}")),
        format!("+OK {COUNT} {}", uids[COUNT - 1].1)
    );
    let last = c.multiline(&format!("RETR {COUNT}"));
    assert_eq!(
        unstuff(&last.body),
        format!("Subject: {}\r\n\r\nbody {}\r\n", COUNT - 1, COUNT - 1).into_bytes()
    );

    // Delete every other message, pipelined.
    let dele: String = (1..=COUNT)
        .step_by(2)
        .map(|n| format!("DELE {n}\r\n"))
        .collect();
    c.send(dele.as_bytes());
    for n in (1..=COUNT).step_by(2) {
        let reply = c.read_line_str();
        assert!(reply.starts_with("+OK"), "DELE {n}: {reply}");
    }
    assert_eq!(list(&mut c).len(), COUNT / 2);
    c.ok("QUIT");
    assert_eq!(server.files_on_disk("alice").len(), COUNT / 2);
    let mut c = server.login("alice", "secret");
    let remaining = uidl(&mut c);
    let expected: Vec<&str> = uids
        .iter()
        .skip(1)
        .step_by(2)
        .map(|(_, u)| u.as_str())
        .collect();
    assert_eq!(
        remaining
            .iter()
            .map(|(_, u)| u.as_str())
            .collect::<Vec<_>>(),
        expected,
        "UIDLs of the kept messages changed"
    );
}

/// Writes `bytes` as `user`'s maildir file `sub/name`, with an mtime that
/// orders it after the fixture's messages.
fn deliver_named(server: &TestServer, user: &str, sub: &str, name: &str, bytes: &[u8]) {
    let path = server.maildir(user).join(sub).join(name);
    std::fs::write(&path, bytes).unwrap();
}

/// Asserts that LIST, STAT and RETR agree for every message of the session
/// and that each UIDL is 1-70 printable characters and unique; returns the
/// UIDL -> delivered bytes map.
fn assert_consistent(c: &mut Client) -> BTreeMap<String, Vec<u8>> {
    let listed = list(c);
    let total: usize = listed.iter().map(|(_, s)| s).sum();
    assert_eq!(stat(c), (listed.len(), total), "STAT disagrees with LIST");
    let uids = uidl(c);
    assert_eq!(
        uids.len(),
        listed.len(),
        "UIDL and LIST list different messages"
    );
    let mut map = BTreeMap::new();
    for ((n, size), (_, uid)) in listed.iter().zip(&uids) {
        assert!(
            (1..=70).contains(&uid.len()) && uid.bytes().all(|b| (0x21..=0x7e).contains(&b)),
            "UIDL of message {n} is {uid:?}: not 1-70 printable characters (RFC 1939)"
        );
        let delivered = unstuff(&c.multiline(&format!("RETR {n}")).body);
        assert_eq!(
            delivered.len(),
            *size,
            "message {n}: LIST says {size} octets, RETR delivered {}",
            delivered.len()
        );
        assert!(
            map.insert(uid.clone(), delivered).is_none(),
            "UIDL {uid} given to two messages"
        );
    }
    map
}

#[test]
fn dovecot_size_in_file_names_agrees_with_what_retr_sends() {
    if skip_unless_maildir("about W= in maildir file names") {
        return;
    }
    // Maildirs written by Dovecot carry `,S=<file size>,W=<virtual size>` in
    // file names; Dovecot's virtual size counts LF as CRLF and adds nothing
    // at the end. Users migrating from Dovecot keep these files.
    let server = TestServer::start(Fixture::new().user("alice", "secret"));
    let messages: [&[u8]; 3] = [
        b"Subject: w1\n\nends with a newline\n",
        b"Subject: w2\r\n\r\nCRLF, ends with one\r\n",
        b"Subject: w3\n\nno newline at the end",
    ];
    for (i, m) in messages.iter().enumerate() {
        let lf = m.iter().filter(|&&b| b == b'\n').count();
        let crlf = m.windows(2).filter(|w| w == b"\r\n").count();
        let virtual_size = m.len() + lf - crlf;
        let name = format!(
            "{}.M{i}P1.dovecot-host,S={},W={virtual_size}:2,S",
            1_700_000_000 + i,
            m.len()
        );
        deliver_named(&server, "alice", "cur", &name, m);
    }
    let mut c = server.login("alice", "secret");
    let delivered = assert_consistent(&mut c);
    let mut got: Vec<Vec<u8>> = delivered.into_values().collect();
    got.sort();
    let mut expected: Vec<Vec<u8>> = messages.iter().map(|m| wire_form(m)).collect();
    expected.sort();
    assert_eq!(got, expected);
}

#[test]
fn message_rewritten_between_sessions_gets_its_new_size() {
    if skip_unless_maildir("rewrites a maildir file in place") {
        return;
    }
    let server = TestServer::start(
        Fixture::new()
            .user("alice", "secret")
            .message("alice", &b"Subject: r\n\na\nb\nc\nd\n"[..]),
    );
    let mut c = server.login("alice", "secret");
    assert_consistent(&mut c);
    c.ok("QUIT");
    // Same file size, different number of line ends, new mtime.
    let path = server.current_message_path("alice", 1).unwrap();
    std::fs::write(&path, b"Subject: r\r\n\r\nabcd\n").unwrap();
    let file = std::fs::File::options().write(true).open(&path).unwrap();
    file.set_modified(std::time::SystemTime::now()).unwrap();
    drop(file);
    let mut c = server.login("alice", "secret");
    let delivered = assert_consistent(&mut c);
    assert_eq!(
        delivered.into_values().collect::<Vec<_>>(),
        [b"Subject: r\r\n\r\nabcd\r\n".to_vec()]
    );
}

#[test]
fn odd_file_names_still_get_valid_unique_stable_uidls() {
    if skip_unless_maildir("about maildir file names") {
        return;
    }
    let server = TestServer::start(Fixture::new().user("alice", "secret"));
    let long_a = format!("1700000001.M1P1.{}a", "h".repeat(80));
    let long_b = format!("1700000001.M1P1.{}b", "h".repeat(80));
    let names = [
        ("new", long_a.clone()),
        ("new", long_b.clone()),
        ("new", "1700000002.M2P1.my host".to_owned()),
        ("new", "1700000003.M3P1.h\u{f4}st".to_owned()),
        ("cur", "1700000004.M4P1.tab\there:2,S".to_owned()),
        ("new", "no-timestamp-at-all".to_owned()),
    ];
    for (i, (sub, name)) in names.iter().enumerate() {
        deliver_named(
            &server,
            "alice",
            sub,
            name,
            format!("Subject: odd {i}\n\n{name}\n").as_bytes(),
        );
    }
    let mut c = server.login("alice", "secret");
    let first = assert_consistent(&mut c);
    assert_eq!(
        first.len(),
        names.len(),
        "messages missing from the maildrop"
    );
    c.ok("QUIT");

    // Stable across sessions, and across new/ -> cur/ for odd names too.
    let mut c = server.login("alice", "secret");
    assert_eq!(
        assert_consistent(&mut c),
        first,
        "UIDLs changed between sessions"
    );
    c.ok("QUIT");
    for (_, name) in names.iter().filter(|(sub, _)| *sub == "new") {
        let from = server.maildir("alice").join("new").join(name);
        let to = server
            .maildir("alice")
            .join("cur")
            .join(format!("{name}:2,S"));
        std::fs::rename(from, to).unwrap();
    }
    let mut c = server.login("alice", "secret");
    assert_eq!(
        assert_consistent(&mut c),
        first,
        "UIDLs of odd names changed when the files moved to cur/"
    );
}

#[test]
fn same_base_name_in_new_and_cur_still_gives_unique_uidls() {
    if skip_unless_maildir("about maildir folders") {
        return;
    }
    // Not a healthy maildir (a crashed mail client may leave one), but
    // a client that keeps mail on the server skips a message for good if
    // two share a UIDL.
    let server = TestServer::start(Fixture::new().user("alice", "secret"));
    deliver_named(
        &server,
        "alice",
        "new",
        "1700000001.M1P1.host",
        b"Subject: a\n\nfirst copy\n",
    );
    deliver_named(
        &server,
        "alice",
        "cur",
        "1700000001.M1P1.host:2,S",
        b"Subject: a\n\nsecond copy\n",
    );
    let mut c = server.login("alice", "secret");
    let listed = list(&mut c);
    let uids = uidl(&mut c);
    assert_eq!(listed.len(), uids.len());
    if uids.len() == 2 {
        assert_ne!(
            uids[0].1, uids[1].1,
            "two messages share the UIDL {}",
            uids[0].1
        );
    }
    assert_consistent(&mut c);
}

#[test]
fn files_in_tmp_and_hidden_files_are_not_mail() {
    if skip_unless_maildir("about maildir folders") {
        return;
    }
    let server = TestServer::start(standard_fixture());
    deliver_named(
        &server,
        "alice",
        "tmp",
        "1700000100.M9P1.host",
        b"Subject: half\n\nstill being writ",
    );
    deliver_named(
        &server,
        "alice",
        "new",
        ".1700000101.M9P2.host",
        b"Subject: hidden\n\n",
    );
    deliver_named(
        &server,
        "alice",
        "cur",
        ".hidden:2,",
        b"Subject: hidden\n\n",
    );
    let mut c = server.login("alice", "secret");
    assert_eq!(
        stat(&mut c).0,
        3,
        "a file in tmp/ or a hidden file was offered as mail"
    );
}

#[test]
fn passwd_file_edits_take_effect_without_a_restart() {
    let server = TestServer::start(standard_fixture().user("frank", "old-pw"));
    let mut c = server.login("frank", "old-pw");
    c.ok("QUIT");

    // The operator changes frank's password and adds grace (in the short
    // form the README shows), replacing the file as editors do.
    let passwd = server.dir().join("passwd");
    let text = std::fs::read_to_string(&passwd)
        .unwrap()
        .replace("frank:{PLAIN}old-pw", "frank:{PLAIN}new-pw");
    let replacement = server.dir().join("passwd.new");
    std::fs::write(&replacement, format!("{text}grace:{{PLAIN}}grace-pw\n")).unwrap();
    std::fs::rename(&replacement, &passwd).unwrap();
    server.create_empty_maildrop("grace");

    let mut c = server.connect();
    c.greeting();
    c.ok("USER frank");
    let reply = c.command("PASS old-pw");
    assert!(
        reply.starts_with("-ERR [AUTH]"),
        "the old password still works: {reply}"
    );
    c.ok("USER frank");
    c.ok("PASS new-pw");
    c.ok("QUIT");
    let mut c = server.login("grace", "grace-pw");
    assert_eq!(stat(&mut c), (0, 0));
    // Users that did not change are unaffected.
    server.login("bob", "hunter2").ok("QUIT");
}

#[test]
fn sighup_does_not_stop_the_server_and_sigint_stops_it_cleanly() {
    let mut server = TestServer::start(standard_fixture());
    let mut c = server.login("alice", "secret");
    c.ok("DELE 1");
    server.signal("HUP");
    // Still serving, same session and new ones.
    c.ok("NOOP");
    server.login("bob", "hunter2").ok("QUIT");
    let status = server.stop_with("INT");
    assert_eq!(status.code(), Some(0), "exit status after SIGINT: {status}");
    c.read_to_close();
    assert_eq!(server.files_on_disk("alice").len(), 3);
}

#[test]
fn a_bad_config_starts_nothing_and_says_where_the_problem_is() {
    let dir = std::env::temp_dir().join(format!("pop3d-e2e-badconf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let config = dir.join("bad.ron");
    std::fs::write(
        &config,
        format!(
            "(\n    listen: [(addr: \"127.0.0.1:{port}\")],\n    limits: (max_per_ipp: 2),\n    auth: (plugin: \"passwd-file\", config: (path: \"{d}/passwd\")),\n    store: (plugin: \"maildir\", config: (root: \"{d}/%u\")),\n)\n",
            d = dir.display()
        ),
    )
    .unwrap();
    std::fs::write(dir.join("passwd"), "alice:{PLAIN}secret\n").unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_pop3d"))
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(!output.status.success(), "pop3d started with a bad config");
    assert!(
        stderr.contains("bad.ron:3:"),
        "the error does not name the file and line: {stderr}"
    );
    assert!(
        stderr.contains("max_per_ipp"),
        "the error does not name the key: {stderr}"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "something listens on the configured port"
    );
}

#[test]
fn a_second_server_process_sees_the_maildrop_in_use() {
    let server = TestServer::start(standard_fixture());
    let other = server.start_second_instance();
    let mut first = server.login("alice", "secret");
    first.ok("DELE 1");

    let mut second = other.connect();
    second.greeting();
    second.ok("USER alice");
    let reply = second.command("PASS secret");
    assert!(
        reply.starts_with("-ERR [IN-USE]"),
        "a second pop3d process opened a maildrop already in use: {reply}"
    );
    first.ok("QUIT");
    second.ok("USER alice");
    second.ok("PASS secret");
    assert_eq!(
        stat(&mut second).0,
        2,
        "the other process does not see the QUIT's deletion"
    );
    second.drop_connection();
    // Released by a drop in the other process too.
    let mut again = server.login_when_released("alice", "secret");
    again.ok("QUIT");
}

#[test]
fn connections_over_max_connections_are_refused() {
    let server = TestServer::start(
        standard_fixture()
            .limit("max_connections", 3)
            .limit("max_per_ip", 3),
    );
    let mut open: Vec<Client> = (0..3)
        .map(|_| {
            let mut c = server.connect();
            c.greeting();
            c
        })
        .collect();
    let mut refused = server.connect();
    let reply = refused.read_line_str();
    assert!(
        reply.starts_with("-ERR [SYS/TEMP]"),
        "fourth connection got {reply:?}"
    );
    assert_eq!(refused.read_to_close(), b"");
    open[0].ok("QUIT");
    open[0].read_to_close();
    let mut c = server.connect();
    c.greeting();
    open[1].ok("USER alice");
}

/// On a dual-stack `[::]` listener an IPv4 client arrives as
/// `::ffff:127.0.0.1`; it is still loopback for the default
/// `allow_plaintext_auth: LoopbackOnly`, and the log names it as IPv4.
#[test]
fn ipv4_clients_of_a_dual_stack_listener_are_seen_as_ipv4() {
    // A machine without IPv6 (or with bindv6only) cannot have the case.
    let dual_stack = std::net::TcpListener::bind("[::]:0").and_then(|listener| {
        let port = listener.local_addr()?.port();
        std::net::TcpStream::connect(("127.0.0.1", port))
    });
    if let Err(e) = dual_stack {
        eprintln!("skipped: no dual-stack IPv6 listener here ({e})");
        return;
    }
    let server = TestServer::start(
        Fixture::new()
            .user("alice", "secret")
            .message("alice", &b"Subject: v4\n\nhi\n"[..])
            .listen_host("[::]")
            .log_filter("info"),
    );
    let mut c = server.connect();
    let user = c.command("USER alice");
    assert!(user.starts_with("+OK"), "plaintext refused: {user}");
    c.ok("PASS secret");
    c.ok("QUIT");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.log().contains("remote=127.0.0.1") {
        assert!(
            Instant::now() < deadline,
            "no IPv4 remote in:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!server.log().contains("::ffff:"), "{}", server.log());
}

/// Started with a soft open-file limit of 64 (a logged-in maildir session
/// holds two descriptors), the server raises it to the hard limit, so 60
/// sessions held open at once all log in.
#[test]
fn the_soft_open_file_limit_does_not_cap_sessions() {
    const SESSIONS: usize = 60;
    let mut fixture = Fixture::new().soft_open_file_limit(64);
    for i in 0..SESSIONS {
        let user = format!("user{i}");
        fixture = fixture
            .user(&user, "pw")
            .message(&user, &b"Subject: fd\n\nhi\n"[..]);
    }
    let server = TestServer::start(fixture);
    let sessions: Vec<Client> = (0..SESSIONS)
        .map(|i| server.login(&format!("user{i}"), "pw"))
        .collect();
    for mut session in sessions {
        let status = session.command("STAT");
        assert!(status.starts_with("+OK 1 "), "{status}");
    }
}
