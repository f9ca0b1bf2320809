//! End to end: the load generator (`examples/loadgen`) over TLS against the
//! real pop3d binary.
//!
//! Each test writes a certificate generated on the spot (rcgen), a passwd
//! file, maildirs and a RON config into a temporary directory, starts pop3d
//! with a plain listener (which offers STLS) and an implicit-TLS listener,
//! and runs `target/<profile>/examples/loadgen` as a benchmark would, with
//! `--json`. The JSON line says what a user would look at: sessions that
//! completed, errors by kind, whether TLS was used. loadgen verifies every
//! reply (sizes, dot-stuffing, framing), so zero errors means the bytes that
//! came through rustls were right.
//!
//! The tests build the example themselves (`cargo build --example loadgen`
//! with the same profile and target directory), so they never run a stale
//! binary.

#[path = "support/scratch.rs"]
mod scratch;
#[path = "support/tls_server.rs"]
mod tls_server;

use tls_server::{write_certificate, Mailbox, TempDir, TlsServer, PATIENCE};

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::thread;

/// Users in the fixture; loadgen needs one per concurrent connection.
const USERS: usize = 4;

/// Two messages per user: one with lines the server must dot-stuff, so a
/// broken byte anywhere in the TLS path shows up as a loadgen error.
const MESSAGES: [&[u8]; 2] = [
    b"From: bob@example.org\nSubject: over TLS\n\nHello.\n.dot line\n..two dots\n.\nend\n",
    b"From: carol@example.org\nSubject: second\n\nA second message, a bit longer than the first one.\n",
];

/// The suite's server: user1..USERS, each with [`MESSAGES`]; their
/// `user:password` list for loadgen in `users.txt`.
type Server = TlsServer;

impl TlsServer {
    fn start_for_loadgen(label: &str) -> TlsServer {
        let names: Vec<(String, String)> = (1..=USERS)
            .map(|n| (format!("user{n}"), format!("secret{n}")))
            .collect();
        let mailboxes: Vec<Mailbox<'_>> = names
            .iter()
            .map(|(user, password)| Mailbox {
                user,
                password,
                messages: &MESSAGES,
            })
            .collect();
        let server = TlsServer::start(label, &mailboxes, "");
        let users: String = names
            .iter()
            .map(|(user, password)| format!("{user}:{password}\n"))
            .collect();
        fs::write(server.dir.path.join("users.txt"), users).unwrap();
        server
    }

    /// Runs loadgen against `addr` with `--json` and the fixture's users.
    fn loadgen(&self, addr: SocketAddr, args: &[&str]) -> Run {
        let output = Command::new(loadgen_binary())
            .arg("--server")
            .arg(addr.to_string())
            .arg("--users")
            .arg(self.dir.path.join("users.txt"))
            .args(["--json", "--quiet", "--timeout", "30"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        Run {
            output,
            server_log: self.log(),
        }
    }
}

/// What one loadgen run printed, with the server's log for failure
/// messages.
struct Run {
    output: Output,
    server_log: String,
}

impl Run {
    fn json(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout)
            .trim()
            .to_string()
    }

    fn describe(&self) -> String {
        format!(
            "exit {}\nstdout: {}\nstderr: {}\npop3d log:\n{}",
            self.output.status,
            self.json(),
            String::from_utf8_lossy(&self.output.stderr),
            self.server_log
        )
    }

    /// Asserts the JSON line holds `fragment` (the line is compact, no
    /// spaces, so `"sessions_ok":6` is exact).
    fn assert_has(&self, fragment: &str) {
        assert!(
            self.json().contains(fragment),
            "expected {fragment} in the report:\n{}",
            self.describe()
        );
    }

    /// The server logged `count` logins, every one of them over TLS.
    fn assert_logins_over_tls(&self, count: usize) {
        let logins: Vec<&str> = self
            .server_log
            .lines()
            .filter(|line| line.contains(" login user="))
            .collect();
        assert_eq!(logins.len(), count, "{}", self.describe());
        assert!(
            logins.iter().all(|line| line.contains(" tls=yes ")),
            "a login went over plain TCP:\n{}",
            self.describe()
        );
    }

    /// A clean run: exit 0, no errors, TLS as asked.
    fn assert_clean(&self, tls: &str) {
        assert!(
            self.output.status.success(),
            "loadgen failed:\n{}",
            self.describe()
        );
        self.assert_has("\"errors_total\":0");
        self.assert_has("\"sessions_failed\":0");
        self.assert_has(&format!("\"tls\":\"{tls}\""));
    }
}

/// The loadgen example, built once per test run.
fn loadgen_binary() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| scratch::build_example("loadgen"))
}

/// Six full sessions, two at a time, over `--tls` or `--stls`: every one
/// completes, every reply verified, every login made over TLS.
fn full_sessions_over(tls_flag: &str, label: &str) -> Run {
    let server = Server::start_for_loadgen(label);
    let cert = server.cert_path();
    let addr = if tls_flag == "--tls" {
        server.implicit
    } else {
        server.plain
    };
    let run = server.loadgen(
        addr,
        &[
            tls_flag,
            "--ca",
            cert.to_str().unwrap(),
            "--mode",
            "full",
            "-c",
            "2",
            "--sessions",
            "6",
        ],
    );
    run.assert_has("\"sessions_ok\":6");
    run.assert_has("\"handshakes\":6");
    // Every message of every session came through TLS and was checked.
    run.assert_has("\"RETR\":{\"count\":12,");
    run.assert_has("\"verify\":\"ca\"");
    // USER and PASS went over TLS: the server says so in each login line.
    run.assert_logins_over_tls(6);
    run
}

#[test]
fn implicit_tls_full_sessions_are_all_verified() {
    full_sessions_over("--tls", "implicit").assert_clean("implicit");
}

#[test]
fn stls_full_sessions_are_all_verified() {
    let run = full_sessions_over("--stls", "stls");
    run.assert_clean("stls");
    run.assert_has("\"STLS\":{\"count\":6,");
}

#[test]
fn every_mode_runs_over_both_kinds_of_tls() {
    let server = Server::start_for_loadgen("modes");
    let cert = server.cert_path();
    let cert = cert.to_str().unwrap();
    let modes: [&[&str]; 4] = [
        &["--mode", "login", "--sessions", "4"],
        &["--mode", "retr", "--message", "1", "--requests", "6"],
        &["--mode", "noop", "--requests", "6"],
        &["--mode", "idle", "--duration", "0.2"],
    ];
    for (flag, addr, tls) in [
        ("--tls", server.implicit, "implicit"),
        ("--stls", server.plain, "stls"),
    ] {
        for mode in modes {
            let mut args = vec![flag, "--ca", cert, "-c", "2"];
            args.extend_from_slice(mode);
            let run = server.loadgen(addr, &args);
            run.assert_clean(tls);
            if mode[1] == "idle" {
                run.assert_has("\"idle\":{\"ready\":2,\"failed\":0,");
            } else {
                run.assert_has("\"handshakes\":");
                assert!(
                    !run.json().contains("\"handshakes\":0,"),
                    "{flag} {mode:?} made no handshake:\n{}",
                    run.describe()
                );
            }
        }
    }
}

#[test]
fn implicit_tls_against_a_plain_port_fails_each_session_with_a_clear_message() {
    let server = Server::start_for_loadgen("wrong-port");
    let cert = server.cert_path();
    let run = server.loadgen(
        server.plain,
        &[
            "--tls",
            "--ca",
            cert.to_str().unwrap(),
            "--mode",
            "login",
            "-c",
            "1",
            "--sessions",
            "3",
        ],
    );
    assert_eq!(
        run.output.status.code(),
        Some(1),
        "loadgen should exit 1 when it counted errors:\n{}",
        run.describe()
    );
    run.assert_has("\"sessions_ok\":0");
    run.assert_has("\"sessions_failed\":3");
    // Counted as a handshake failure when the greeting arrives, not as a
    // timeout: the run does not hang until --timeout.
    run.assert_has("\"errors\":{\"tls_handshake\":3}");
    run.assert_has("the server answered in plain POP3 (+OK");
}

#[test]
fn an_untrusted_certificate_is_refused_unless_insecure() {
    let server = Server::start_for_loadgen("trust");
    write_certificate(&server.dir.path, "other");
    let other = server.dir.path.join("other.pem");
    let base = ["--mode", "login", "-c", "1", "--sessions", "2"];

    let mut args = vec!["--tls", "--ca", other.to_str().unwrap()];
    args.extend_from_slice(&base);
    let run = server.loadgen(server.implicit, &args);
    assert_eq!(run.output.status.code(), Some(1), "{}", run.describe());
    run.assert_has("\"sessions_ok\":0");
    run.assert_has("\"errors\":{\"tls_certificate\":2}");
    run.assert_has("--insecure");

    let mut args = vec!["--stls", "--insecure"];
    args.extend_from_slice(&base);
    let run = server.loadgen(server.plain, &args);
    run.assert_clean("stls");
    run.assert_has("\"sessions_ok\":2");
    run.assert_has("\"verify\":\"insecure\"");

    // The certificate names 127.0.0.1 and localhost, not this.
    let cert = server.cert_path();
    let mut args = vec![
        "--tls",
        "--ca",
        cert.to_str().unwrap(),
        "--sni",
        "mail.example.org",
    ];
    args.extend_from_slice(&base);
    let run = server.loadgen(server.implicit, &args);
    assert_eq!(run.output.status.code(), Some(1), "{}", run.describe());
    run.assert_has("\"errors\":{\"tls_certificate\":2}");
}

/// STARTTLS injection: a server (or a man in the middle) that sends more
/// after STLS's +OK. Those bytes must not be taken as the answer to a later
/// command, and the session must not go on; whichever way they arrive
/// (with the +OK or after the ClientHello) the session fails and the
/// password is never sent.
#[test]
fn bytes_after_the_stls_ok_fail_the_session() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let fake = thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        stream.write_all(b"+OK fake server ready\r\n").unwrap();
        let mut command = [0u8; 6];
        stream.read_exact(&mut command).unwrap();
        assert_eq!(&command, b"STLS\r\n");
        stream
            .write_all(b"+OK Begin TLS negotiation\r\n+OK Logged in, 0 messages\r\n")
            .unwrap();
        // Whatever loadgen sends until it closes (a ClientHello, and USER
        // or PASS if it were fooled).
        let mut after = Vec::new();
        let _ = stream.read_to_end(&mut after);
        after
    });
    let dir = TempDir::new("injection");
    fs::write(dir.path.join("users.txt"), "alice:secret\n").unwrap();
    let output = Command::new(loadgen_binary())
        .arg("--server")
        .arg(addr.to_string())
        .arg("--users")
        .arg(dir.path.join("users.txt"))
        .args([
            "--json",
            "--quiet",
            "--timeout",
            "30",
            "--stls",
            "--insecure",
        ])
        .args(["--mode", "login", "-c", "1", "--sessions", "1"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let run = Run {
        output,
        server_log: String::new(),
    };
    let after = fake.join().unwrap();
    assert_eq!(run.output.status.code(), Some(1), "{}", run.describe());
    run.assert_has("\"sessions_ok\":0");
    assert!(
        run.json().contains("\"errors\":{\"unsolicited_data\":1}")
            || run.json().contains("\"errors\":{\"tls_handshake\":1}"),
        "expected the injected line to fail the session:\n{}",
        run.describe()
    );
    let sent = String::from_utf8_lossy(&after);
    assert!(
        !sent.contains("USER") && !sent.contains("secret"),
        "loadgen went on with the session: {sent:?}"
    );
}
