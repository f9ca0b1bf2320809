//! End-to-end tests with real POP3 clients against the real `pop3d` binary:
//! Python's poplib (scripts in `tests/clients/`), curl, and Perl's
//! Net::POP3. These catch what raw-byte tests cannot: a reply a real
//! client misparses, a size it cross-checks, a terminator it waits for.
//!
//! A test whose client is not installed prints why and passes; `.ci/run`
//! installs all of them, so CI runs every test.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Messages every client must get back byte for byte: line-end variants,
/// dot-stuffing cases, 8-bit and NUL bytes, a long line, an empty message.
fn client_messages() -> Vec<Vec<u8>> {
    let mut long_line = b"Subject: long\n\n".to_vec();
    long_line.extend(std::iter::repeat_n(b'L', 10_000));
    long_line.extend_from_slice(b"\nend\n");
    let mut eight_bit = b"Subject: 8bit\n\n".to_vec();
    eight_bit.extend(0x80u8..=0xff);
    eight_bit.extend_from_slice(b"\n");
    vec![
        b"From: a@example.org\nSubject: one\n\nHello\nFrom the start of a line, mbox quotes this.\nsecond line\n".to_vec(),
        b"From: b@example.org\r\nSubject: two\r\n\r\nline 1\r\nline 2\r\nline 3\r\nline 4\r\n"
            .to_vec(),
        b"Subject: dots\n\n.hidden\n..two\n.\n...\nend".to_vec(),
        b"Subject: mixed\r\n\nA\r\nb\nc\r\n\n".to_vec(),
        eight_bit,
        b"Subject: nul\n\nbefore\0after\n\0\n".to_vec(),
        long_line,
        Vec::new(),
    ]
}

/// Starts a server with alice's [`client_messages`] and writes the raw
/// messages to `expected/1`, `expected/2`, ... for the client scripts.
fn start() -> (TestServer, PathBuf) {
    let mut fixture = Fixture::new().user("alice", "secret");
    for m in client_messages() {
        fixture = fixture.message("alice", m);
    }
    let server = TestServer::start(fixture);
    let expected = server.dir().join("expected");
    std::fs::create_dir_all(&expected).unwrap();
    for (i, m) in client_messages().iter().enumerate() {
        // What the store gives back (mbox: `From ` lines quoted).
        std::fs::write(expected.join((i + 1).to_string()), served_form(m)).unwrap();
    }
    (server, expected)
}

/// Whether `program args...` runs and succeeds; if not, prints why the test
/// is skipped.
fn available(program: &str, args: &[&str], test: &str) -> bool {
    let ok = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!(
            "SKIPPED {test}: `{program} {}` failed; install it (see .ci/run) to run this test",
            args.join(" ")
        );
    }
    ok
}

fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

/// Runs a client script with the settings in its environment (the
/// password never goes on a command line).
fn run_client(program: &str, args: &[&str], server: &TestServer, expected: &Path) -> Output {
    Command::new(program)
        .args(args)
        .env("POP3_HOST", "127.0.0.1")
        .env("POP3_PORT", server.addr().port().to_string())
        .env("POP3_USER", "alice")
        .env("POP3_PASSWORD", "secret")
        .env("POP3_EXPECT_DIR", expected)
        .current_dir(scripts_dir())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

#[track_caller]
fn assert_client_succeeded(what: &str, output: &Output) {
    assert!(
        output.status.success(),
        "{what} failed ({})\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn python(script: &str, test: &str) {
    if !available("python3", &["-c", "import poplib"], test) {
        return;
    }
    let (server, expected) = start();
    let script_path = scripts_dir().join(script);
    let output = run_client(
        "python3",
        &["-B", script_path.to_str().unwrap()],
        &server,
        &expected,
    );
    assert_client_succeeded(script, &output);
}

#[test]
fn python_poplib_downloads_and_deletes_everything() {
    python(
        "download_and_delete.py",
        "python_poplib_downloads_and_deletes_everything",
    );
}

#[test]
fn python_poplib_uidl_top_capa() {
    python("uidl_top_capa.py", "python_poplib_uidl_top_capa");
}

#[test]
fn perl_net_pop3_logs_in_lists_and_gets() {
    let test = "perl_net_pop3_logs_in_lists_and_gets";
    if !available("perl", &["-MNet::POP3", "-e", "1"], test) {
        return;
    }
    let (server, expected) = start();
    let script = scripts_dir().join("net_pop3.pl");
    let output = run_client("perl", &[script.to_str().unwrap()], &server, &expected);
    assert_client_succeeded("net_pop3.pl", &output);
    // Net::POP3 deleted nothing.
    assert_eq!(server.files_on_disk("alice").len(), client_messages().len());
}

/// Runs curl against `path` on the server (with `extra` options first) and
/// returns its output. The URL carries the password, so it is never
/// printed.
fn curl(server: &TestServer, extra: &[&str], path: &str) -> Output {
    let url = format!(
        "pop3://alice:secret@127.0.0.1:{}/{path}",
        server.addr().port()
    );
    Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "60"])
        .args(extra)
        .arg(url)
        .output()
        .unwrap_or_else(|e| panic!("cannot run curl: {e}"))
}

fn curl_available(test: &str) -> bool {
    available("curl", &["--version"], test)
}

#[test]
fn curl_retrieves_every_message_byte_exact() {
    if !curl_available("curl_retrieves_every_message_byte_exact") {
        return;
    }
    let (server, _) = start();
    for (i, raw) in client_messages().iter().enumerate() {
        let output = curl(&server, &[], &(i + 1).to_string());
        assert_client_succeeded(&format!("curl RETR {}", i + 1), &output);
        // curl writes the CRLF that starts the terminator (CRLF . CRLF) as
        // part of the message; for an empty message that CRLF is the one
        // ending the status line, so curl prints a lone CRLF whatever the
        // server. (The raw test checks pop3d sends `+OK ...` CRLF `.` CRLF.)
        let mut expected = wire_form(raw);
        if expected.is_empty() {
            expected = b"\r\n".to_vec();
        }
        assert_bytes_eq(&output.stdout, &expected, &format!("curl RETR {}", i + 1));
    }
    // curl QUITs after each transfer; RETR deletes nothing.
    assert_eq!(server.files_on_disk("alice").len(), client_messages().len());
}

#[test]
fn curl_lists_sizes_and_uidls() {
    if !curl_available("curl_lists_sizes_and_uidls") {
        return;
    }
    let (server, _) = start();
    let output = curl(&server, &[], "");
    assert_client_succeeded("curl LIST", &output);
    let expected: String = client_messages()
        .iter()
        .enumerate()
        .map(|(i, m)| format!("{} {}\r\n", i + 1, wire_form(m).len()))
        .collect();
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        expected,
        "curl LIST"
    );

    let output = curl(&server, &["--request", "UIDL"], "");
    assert_client_succeeded("curl UIDL", &output);
    let mut raw = server.login("alice", "secret");
    let listing = raw.multiline("UIDL");
    raw.ok("QUIT");
    assert_eq!(
        output.stdout,
        unstuff(&listing.body),
        "curl UIDL differs from the raw listing"
    );
    assert_eq!(listing.lines().len(), client_messages().len());
}

#[test]
fn curl_custom_top_command() {
    if !curl_available("curl_custom_top_command") {
        return;
    }
    let (server, _) = start();
    let messages = client_messages();
    for k in [0, 2] {
        let output = curl(&server, &["--request", &format!("TOP 2 {k}")], "");
        assert_client_succeeded(&format!("curl TOP 2 {k}"), &output);
        assert_bytes_eq(
            &output.stdout,
            &top_of(&messages[1], k),
            &format!("curl TOP 2 {k}"),
        );
    }
}

#[test]
fn curl_dele_removes_the_message_after_quit() {
    if !curl_available("curl_dele_removes_the_message_after_quit") {
        return;
    }
    let (server, _) = start();
    let messages = client_messages();
    // DELE has a single-line reply: --head tells curl to expect no body.
    let output = curl(&server, &["--request", "DELE", "--head"], "2");
    assert_client_succeeded("curl DELE 2", &output);
    assert!(
        !server.message_exists("alice", 2),
        "message 2 still on disk after curl's DELE and QUIT"
    );
    let mut c = server.login("alice", "secret");
    let listed = c.multiline("LIST").lines();
    assert_eq!(listed.len(), messages.len() - 1);
    // The former message 3 is now message 2.
    let reply = c.multiline("RETR 2");
    assert_bytes_eq(
        &unstuff(&reply.body),
        &wire_form(&messages[2]),
        "RETR 2 after DELE",
    );
}
