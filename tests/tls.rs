//! End to end: TLS against the real pop3d binary.
//!
//! Each test writes a certificate generated on the spot (rcgen), a passwd
//! file, a maildir with one message and a RON config into a temporary
//! directory, and starts pop3d with one plain listener (STLS) and one
//! implicit-TLS listener. Clients are the ones users run (Python's poplib,
//! curl) where they exist, and a raw socket plus a rustls client where the
//! test needs to control every byte (the STLS injection tests, garbage,
//! half handshakes).
//!
//! The Python and curl tests skip with a message when the tool is missing.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

#[path = "support/scratch.rs"]
mod scratch;
#[path = "support/tls_server.rs"]
mod tls_server;

use tls_server::{write_certificate, Mailbox, TlsServer, PATIENCE};

const MESSAGE: &[u8] = b"From: bob@example.org\nSubject: over TLS\n\nHello, alice.\n.dot line\n";

type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// The suite's server: alice with one message.
type Server = TlsServer;

impl TlsServer {
    /// Starts pop3d; `extra` is inserted into the config's top level.
    fn start_for_alice(label: &str, extra: &str) -> TlsServer {
        TlsServer::start(
            label,
            &[Mailbox {
                user: "alice",
                password: "secret",
                messages: &[MESSAGE],
            }],
            extra,
        )
    }

    /// A plain connection, greeting already read.
    fn connect_plain(&self) -> Plain {
        let stream = TcpStream::connect(self.plain).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut plain = Plain {
            reader: BufReader::new(stream),
        };
        let greeting = plain.line();
        assert!(greeting.starts_with("+OK"), "{greeting}");
        plain
    }

    /// A client connection to the implicit-TLS port, greeting already read.
    fn connect_implicit(&self) -> Tls {
        let stream = TcpStream::connect(self.implicit).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut tls = Tls::handshake(stream, &self.cert_path());
        let greeting = tls.line();
        assert!(greeting.starts_with("+OK"), "{greeting}");
        tls
    }
}

/// A plain POP3 connection.
struct Plain {
    reader: BufReader<TcpStream>,
}

impl Plain {
    fn send(&mut self, bytes: &[u8]) {
        self.reader.get_mut().write_all(bytes).unwrap();
    }

    fn line(&mut self) -> String {
        read_line(&mut self.reader)
    }

    fn command(&mut self, command: &str) -> String {
        self.send(format!("{command}\r\n").as_bytes());
        self.line()
    }

    /// Sends STLS, expects +OK and performs the handshake.
    fn starttls(mut self, cert: &Path) -> Tls {
        let reply = self.command("STLS");
        assert!(reply.starts_with("+OK"), "{reply}");
        assert!(
            self.reader.buffer().is_empty(),
            "the server sent bytes after +OK to STLS: {:?}",
            String::from_utf8_lossy(self.reader.buffer())
        );
        Tls::handshake(self.reader.into_inner(), cert)
    }
}

/// A POP3 connection over TLS (rustls as the client).
struct Tls {
    reader: BufReader<TlsStream>,
}

impl Tls {
    fn handshake(stream: TcpStream, cert: &Path) -> Tls {
        let mut connection =
            rustls::ClientConnection::new(client_config(cert), server_name()).unwrap();
        let mut stream = stream;
        while connection.is_handshaking() {
            connection.complete_io(&mut stream).unwrap();
        }
        Tls {
            reader: BufReader::new(rustls::StreamOwned::new(connection, stream)),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        let stream = self.reader.get_mut();
        stream.write_all(bytes).unwrap();
        stream.flush().unwrap();
    }

    fn line(&mut self) -> String {
        read_line(&mut self.reader)
    }

    fn command(&mut self, command: &str) -> String {
        self.send(format!("{command}\r\n").as_bytes());
        self.line()
    }

    /// Reads a multi-line reply after its status line, up to the final dot.
    fn body(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let line = self.line();
            if line == ".\r\n" {
                return lines;
            }
            lines.push(line);
        }
    }

    fn capabilities(&mut self) -> Vec<String> {
        let status = self.command("CAPA");
        assert!(status.starts_with("+OK"), "{status}");
        self.body()
            .iter()
            .map(|l| l.trim_end().to_owned())
            .collect()
    }

    fn login(&mut self) {
        let reply = self.command("USER alice");
        assert!(reply.starts_with("+OK"), "{reply}");
        let reply = self.command("PASS secret");
        assert!(reply.starts_with("+OK Logged in"), "{reply}");
    }

    fn peer_certificate(&self) -> Vec<u8> {
        self.reader.get_ref().conn.peer_certificates().unwrap()[0].to_vec()
    }

    /// Reads until the server closes, returning everything it sent.
    fn read_to_close(&mut self) -> String {
        let mut rest = Vec::new();
        // An unclean close (no close_notify) is an error in rustls' eyes;
        // what was read before it is still what the server said.
        let _ = self.reader.read_to_end(&mut rest);
        String::from_utf8_lossy(&rest).into_owned()
    }
}

fn read_line(reader: &mut impl BufRead) -> String {
    let mut line = Vec::new();
    reader.read_until(b'\n', &mut line).unwrap();
    assert!(!line.is_empty(), "the server closed the connection");
    String::from_utf8(line).unwrap()
}

fn client_config(cert: &Path) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(cert).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

fn server_name() -> ServerName<'static> {
    ServerName::try_from("127.0.0.1").unwrap()
}

/// Whether the server closes `stream` (EOF or reset) before `PATIENCE`.
fn closed_by_server(stream: &mut TcpStream) -> bool {
    read_until_closed(stream).is_some()
}

/// What the server sends on `stream` until it closes it (EOF or reset), or
/// `None` if it is still open after `PATIENCE`.
fn read_until_closed(stream: &mut TcpStream) -> Option<Vec<u8>> {
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Some(seen),
            // An alert may come first; keep reading.
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return None
            }
            Err(_) => return Some(seen),
        }
    }
}

/// Checks that a full session (login, RETR, QUIT) works on the implicit
/// port: the server is still serving.
fn assert_serves_tls(server: &Server) {
    let mut tls = server.connect_implicit();
    tls.login();
    let status = tls.command("RETR 1");
    assert!(status.starts_with("+OK"), "{status}");
    let body = tls.body().concat();
    assert!(body.contains("Hello, alice."), "{body}");
    assert!(tls.command("QUIT").starts_with("+OK"));
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn python_poplib_over_implicit_tls_and_stls() {
    if !have("python3") {
        eprintln!("SKIPPED python_poplib_over_implicit_tls_and_stls: python3 is not installed");
        return;
    }
    let server = Server::start_for_alice("poplib", "");
    let script = r#"
import poplib, ssl, sys
host, plain, implicit, cafile = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
ctx = ssl.create_default_context(cafile=cafile)

p = poplib.POP3_SSL(host, implicit, context=ctx, timeout=30)
p.user("alice"); p.pass_("secret")
print("implicit stat", p.stat())
print("implicit retr", b"\n".join(p.retr(1)[1]).decode())
p.quit()

p = poplib.POP3(host, plain, timeout=30)
p.stls(context=ctx)
print("stls capa", sorted(p.capa()))
p.user("alice"); p.pass_("secret")
print("stls retr", b"\n".join(p.retr(1)[1]).decode())
p.quit()
"#;
    let output = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg("127.0.0.1")
        .arg(server.plain.port().to_string())
        .arg(server.implicit.port().to_string())
        .arg(server.cert_path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "poplib failed:\n{stdout}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&output.stderr),
        server.log()
    );
    let size = MESSAGE.len() + MESSAGE.iter().filter(|&&b| b == b'\n').count();
    assert!(
        stdout.contains(&format!("implicit stat (1, {size})")),
        "{stdout}"
    );
    assert!(
        stdout.contains("implicit retr From: bob@example.org"),
        "{stdout}"
    );
    // poplib undoes dot-stuffing: the line comes back as stored.
    assert!(stdout.contains("\n.dot line"), "{stdout}");
    assert!(
        stdout.contains("stls retr From: bob@example.org"),
        "{stdout}"
    );
    // After STLS, CAPA no longer offers STLS (poplib lists capability names).
    let capa = stdout.lines().find(|l| l.starts_with("stls capa")).unwrap();
    assert!(
        capa.contains("'USER'") && !capa.contains("'STLS'"),
        "{capa}"
    );
    server.wait_for_log("tls=yes");
    assert!(
        !server.log().contains("tls=no messages"),
        "{}",
        server.log()
    );
}

#[test]
fn curl_over_stls_and_pop3s() {
    if !have("curl") {
        eprintln!("SKIPPED curl_over_stls_and_pop3s: curl is not installed");
        return;
    }
    let server = Server::start_for_alice("curl", "");
    for url in [
        format!("pop3://127.0.0.1:{}/1", server.plain.port()),
        format!("pop3s://127.0.0.1:{}/1", server.implicit.port()),
    ] {
        let output = Command::new("curl")
            .args(["--silent", "--show-error", "--ssl-reqd", "--max-time", "30"])
            .arg("--cacert")
            .arg(server.cert_path())
            .args(["--user", "alice:secret"])
            .arg(&url)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "curl {url} failed: {}\nserver log:\n{}",
            String::from_utf8_lossy(&output.stderr),
            server.log()
        );
        assert!(stdout.contains("Hello, alice."), "{url}: {stdout}");
    }
    server.wait_for_log("tls=yes");
}

#[test]
fn commands_pipelined_behind_stls_are_never_answered() {
    let server = Server::start_for_alice("inject", "");
    let mut plain = server.connect_plain();
    // One write: the CAPA travels in the same segment as STLS, as an
    // attacker in the middle would inject it (CVE-2011-0411).
    plain.send(b"STLS\r\nCAPA\r\n");
    let reply = plain.line();
    assert_eq!(reply, "+OK Begin TLS negotiation\r\n");
    assert!(
        plain.reader.buffer().is_empty(),
        "plaintext after +OK: {:?}",
        String::from_utf8_lossy(plain.reader.buffer())
    );
    let mut tls = Tls::handshake(plain.reader.into_inner(), &server.cert_path());
    // The first reply over TLS must answer the first command sent over TLS.
    assert_eq!(tls.command("USER alice"), "+OK Send your password\r\n");
    assert!(tls.command("PASS secret").starts_with("+OK Logged in"));
    let rest = {
        tls.send(b"QUIT\r\n");
        tls.read_to_close()
    };
    assert!(rest.starts_with("+OK Bye"), "{rest}");
    assert!(!rest.contains("Capability"), "{rest}");
}

#[test]
fn a_partial_line_before_stls_is_discarded() {
    let server = Server::start_for_alice("partial", "");
    let mut plain = server.connect_plain();
    // "CAPA" without its CRLF sits in the framer when STLS is handled; if
    // it survived, the CRLF sent over TLS would complete it.
    plain.send(b"STLS\r\nCAPA");
    assert_eq!(plain.line(), "+OK Begin TLS negotiation\r\n");
    let mut tls = Tls::handshake(plain.reader.into_inner(), &server.cert_path());
    tls.send(b"\r\nQUIT\r\n");
    let rest = tls.read_to_close();
    assert!(!rest.contains("Capability"), "{rest}");
    assert!(rest.ends_with("+OK Bye\r\n"), "{rest}");
}

#[test]
fn plaintext_sent_after_stls_before_the_handshake_breaks_only_that_connection() {
    let server = Server::start_for_alice("late-plaintext", "");
    let mut plain = server.connect_plain();
    plain.send(b"STLS\r\n");
    assert_eq!(plain.line(), "+OK Begin TLS negotiation\r\n");
    // Plaintext where the ClientHello should be: it is TLS garbage now, not
    // a command.
    let mut stream = plain.reader.into_inner();
    stream.write_all(b"CAPA\r\nUSER alice\r\n").unwrap();
    let seen = read_until_closed(&mut stream).expect("connection left open");
    assert!(
        !String::from_utf8_lossy(&seen).contains("+OK"),
        "answered in plaintext: {seen:?}"
    );
    assert_serves_tls(&server);
}

#[test]
fn capa_offers_stls_only_before_tls_and_a_second_stls_is_refused() {
    let server = Server::start_for_alice("capa", "");
    let mut plain = server.connect_plain();
    plain.send(b"CAPA\r\n");
    assert!(plain.line().starts_with("+OK"));
    let mut before = Vec::new();
    loop {
        let line = plain.line();
        if line == ".\r\n" {
            break;
        }
        before.push(line.trim_end().to_owned());
    }
    assert!(before.contains(&"STLS".to_owned()), "{before:?}");

    let mut tls = plain.starttls(&server.cert_path());
    let after = tls.capabilities();
    assert!(!after.contains(&"STLS".to_owned()), "{after:?}");
    assert!(after.contains(&"USER".to_owned()), "{after:?}");
    assert!(tls.command("STLS").starts_with("-ERR"));
    // Still a working session after the refusal.
    tls.login();
    assert!(tls.command("STAT").starts_with("+OK 1 "));
    // Releases the maildrop for the plain login below.
    assert!(tls.command("QUIT").starts_with("+OK"));

    // Implicit TLS never offers STLS.
    let mut implicit = server.connect_implicit();
    assert!(!implicit.capabilities().contains(&"STLS".to_owned()));
    assert!(implicit.command("STLS").starts_with("-ERR"));

    // After a plaintext login (allowed from loopback by default) STLS is
    // neither offered nor accepted.
    let mut plain = server.connect_plain();
    assert!(plain.command("USER alice").starts_with("+OK"));
    assert!(plain.command("PASS secret").starts_with("+OK"));
    assert!(plain.command("STLS").starts_with("-ERR"));
    plain.send(b"CAPA\r\n");
    assert!(plain.line().starts_with("+OK"));
    loop {
        let line = plain.line();
        assert_ne!(line, "STLS\r\n");
        if line == ".\r\n" {
            break;
        }
    }
    server.wait_for_log("tls=no");
}

#[test]
fn plaintext_auth_never_requires_stls_first() {
    let server = Server::start_for_alice("never", "allow_plaintext_auth: Never,");
    let mut plain = server.connect_plain();
    let refused = plain.command("USER alice");
    assert!(refused.starts_with("-ERR [AUTH] "), "{refused}");
    assert!(
        refused.contains("STLS"),
        "the refusal should hint at STLS: {refused}"
    );

    let mut tls = plain.starttls(&server.cert_path());
    assert!(tls.capabilities().contains(&"USER".to_owned()));
    tls.login();
    let status = tls.command("RETR 1");
    assert!(status.starts_with("+OK"), "{status}");
    assert!(tls.body().concat().contains("Hello, alice."));
    server.wait_for_log("tls=yes");
}

#[test]
fn garbage_and_oversized_records_cost_only_their_connection() {
    let server = Server::start_for_alice("garbage", "");
    // Pseudo-random bytes (a fixed xorshift sequence, so a failure repeats).
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let garbage: Vec<u8> = (0..8192)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    // A handshake record header announcing 65535 bytes: more than a record
    // may carry.
    let mut oversized = vec![0x16, 0x03, 0x01, 0xff, 0xff];
    oversized.extend(std::iter::repeat_n(0u8, 70_000));
    let plaintext_pop3 = b"USER alice\r\nPASS secret\r\n".to_vec();

    for (what, bytes) in [
        ("random bytes", garbage),
        ("an oversized record", oversized),
        ("plaintext POP3", plaintext_pop3),
    ] {
        let mut stream = TcpStream::connect(server.implicit).unwrap();
        // The server may close before taking everything; that is the point.
        let _ = stream.write_all(&bytes);
        assert!(
            closed_by_server(&mut stream),
            "{what}: connection left open"
        );
        assert_serves_tls(&server);
    }
    // A client that resets in the middle of the handshake.
    let mut stream = TcpStream::connect(server.implicit).unwrap();
    let mut hello = Vec::new();
    let mut client =
        rustls::ClientConnection::new(client_config(&server.cert_path()), server_name()).unwrap();
    client.write_tls(&mut hello).unwrap();
    stream.write_all(&hello).unwrap();
    drop(stream);
    assert_serves_tls(&server);
    server.wait_for_log("TLS handshake with");
}

#[test]
fn an_unfinished_handshake_times_out() {
    // The login timeout is long, so a close within PATIENCE comes from the
    // handshake timer.
    let server = Server::start_for_alice(
        "timeout",
        "limits: (tls_handshake_timeout_secs: 1, login_timeout_secs: 600),",
    );
    // Connected, never says anything.
    let mut silent = TcpStream::connect(server.implicit).unwrap();
    // Half a ClientHello.
    let mut half = TcpStream::connect(server.implicit).unwrap();
    let mut hello = Vec::new();
    let mut client =
        rustls::ClientConnection::new(client_config(&server.cert_path()), server_name()).unwrap();
    client.write_tls(&mut hello).unwrap();
    half.write_all(&hello[..hello.len() / 2]).unwrap();
    // STLS accepted, then silence.
    let mut plain = server.connect_plain();
    assert!(plain.command("STLS").starts_with("+OK"));
    let mut after_stls = plain.reader.into_inner();

    assert!(closed_by_server(&mut silent), "silent client kept");
    assert!(closed_by_server(&mut half), "half handshake kept");
    assert!(closed_by_server(&mut after_stls), "silent STLS client kept");
    server.wait_for_log("not finished after 1 s");
    assert_serves_tls(&server);
}

#[test]
fn large_messages_and_deep_pipelines_work_over_tls() {
    let server = Server::start_for_alice("bulk", "");
    // 3 MiB with long and dotted lines: streamed in pieces through rustls.
    let mut big = b"Subject: big\n\n".to_vec();
    for i in 0..60_000 {
        big.extend_from_slice(format!(".line {i} ").as_bytes());
        big.extend(std::iter::repeat_n(b'x', 40));
        big.push(b'\n');
    }
    let maildir = server.dir.path.join("mail/alice/Maildir/cur");
    fs::write(maildir.join("1000000002.M2P1.host:2,"), &big).unwrap();

    let mut tls = server.connect_implicit();
    tls.login();
    // Far more lines than the server queues (128 by default), in several
    // TLS records: it must stop reading with records still waiting in the
    // socket and come back to them by itself (no new readiness edge will
    // come). 60 KB of commands and 50 KB of replies fit in loopback socket
    // buffers, so the test cannot deadlock on its own writes.
    let mut burst = Vec::new();
    for _ in 0..10_000 {
        burst.extend_from_slice(b"NOOP\r\n");
    }
    burst.extend_from_slice(b"RETR 2\r\n");
    tls.send(&burst);
    for i in 0..10_000 {
        assert_eq!(tls.line(), "+OK\r\n", "NOOP {i}");
    }
    let status = tls.line();
    assert!(status.starts_with("+OK"), "{status}");
    let body = tls.body();
    assert_eq!(body.len(), 60_002);
    assert_eq!(body[2], "..line 0 ".to_owned() + &"x".repeat(40) + "\r\n");
    assert!(tls.command("QUIT").starts_with("+OK"));
}

#[test]
fn sighup_reloads_the_certificate_without_dropping_sessions() {
    let server = Server::start_for_alice("reload", "");
    let mut old = server.connect_implicit();
    let old_certificate = old.peer_certificate();
    old.login();

    let new_certificate = write_certificate(&server.dir.path, "cert");
    assert_ne!(old_certificate, new_certificate);
    server.signal("HUP");
    server.wait_for_log("SIGHUP: reloaded TLS certificate");

    // A new connection trusts only the new certificate and gets it.
    let fresh = server.connect_implicit();
    assert_eq!(fresh.peer_certificate(), new_certificate);
    // The old session goes on under the old certificate.
    assert!(old.command("STAT").starts_with("+OK 1 "));
    let status = old.command("RETR 1");
    assert!(status.starts_with("+OK"), "{status}");
    assert!(old.body().concat().contains("Hello, alice."));

    // A broken file on the next reload keeps the current certificate.
    fs::write(server.dir.path.join("cert.key"), "garbage").unwrap();
    server.signal("HUP");
    server.wait_for_log("still using the certificate loaded before");
    assert_eq!(
        server.connect_implicit().peer_certificate(),
        new_certificate
    );
}

/// A directory removed when the test ends.
/// Experiment, not a check: how much does a storm of TLS handshakes (run
/// on the event-loop thread) delay an already logged-in plain client?
/// Prints NOOP round-trip percentiles without and with 200 clients doing
/// handshakes in a loop, for an ECDSA P-256 certificate and, when the
/// `openssl` command exists, an RSA-2048 one. Run it on a release build:
///
/// ```text
/// cargo test --release --test tls -- --ignored --nocapture handshake_storm
/// ```
#[test]
#[ignore = "experiment: prints figures, asserts nothing about speed"]
fn handshake_storm_latency() {
    let server = Server::start_for_alice("storm", "limits: (max_per_ip: 1000),");
    let mut kinds = vec!["ECDSA P-256"];
    if have_openssl() {
        kinds.push("RSA-2048");
    }
    for kind in kinds {
        if kind == "RSA-2048" {
            let dir = &server.dir.path;
            let status = Command::new("openssl")
                .args([
                    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                ])
                .args([
                    "-subj",
                    "/CN=127.0.0.1",
                    "-addext",
                    "subjectAltName=IP:127.0.0.1",
                ])
                // webpki refuses a CA certificate as the server's own.
                .args(["-addext", "basicConstraints=critical,CA:FALSE"])
                .arg("-keyout")
                .arg(dir.join("cert.key"))
                .arg("-out")
                .arg(dir.join("cert.pem"))
                .stderr(Stdio::null())
                .status()
                .unwrap();
            assert!(status.success());
            server.signal("HUP");
            server.wait_for_log("SIGHUP: reloaded TLS certificate");
        }
        let mut probe = server.connect_plain();
        assert!(probe.command("USER alice").starts_with("+OK"));
        assert!(probe.command("PASS secret").starts_with("+OK"));
        let quiet = noop_round_trips(&mut probe);

        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let done = Arc::new(AtomicU32::new(0));
        let failed = Arc::new(AtomicU32::new(0));
        let config = client_config(&server.cert_path());
        let storm: Vec<_> = (0..200)
            .map(|_| {
                let (stop, done, failed, config) = (
                    Arc::clone(&stop),
                    Arc::clone(&done),
                    Arc::clone(&failed),
                    Arc::clone(&config),
                );
                let addr = server.implicit;
                thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let ok = (|| -> Option<()> {
                            let mut stream = TcpStream::connect(addr).ok()?;
                            stream.set_read_timeout(Some(PATIENCE)).ok()?;
                            let mut conn =
                                rustls::ClientConnection::new(Arc::clone(&config), server_name())
                                    .ok()?;
                            while conn.is_handshaking() {
                                conn.complete_io(&mut stream).ok()?;
                            }
                            let mut tls = BufReader::new(rustls::StreamOwned::new(conn, stream));
                            let mut greeting = String::new();
                            tls.read_line(&mut greeting).ok()?;
                            greeting.starts_with("+OK").then_some(())
                        })();
                        let counter = if ok.is_some() { &done } else { &failed };
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        // Let the storm build up before measuring.
        thread::sleep(Duration::from_millis(500));
        let before = done.load(Ordering::Relaxed);
        let started = Instant::now();
        let stormy = noop_round_trips(&mut probe);
        let rate =
            f64::from(done.load(Ordering::Relaxed) - before) / started.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        for thread in storm {
            thread.join().unwrap();
        }
        assert!(probe.command("QUIT").starts_with("+OK"));
        println!("{kind}: quiet      NOOP RTT {}", percentiles(quiet));
        println!(
            "{kind}: 200-client handshake storm ({rate:.0} handshakes/s, {} failed) NOOP RTT {}",
            failed.load(Ordering::Relaxed),
            percentiles(stormy)
        );
    }
}

fn have_openssl() -> bool {
    Command::new("openssl")
        .arg("version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// NOOP round trips on a logged-in connection, one every 2 ms, for 5 s.
fn noop_round_trips(probe: &mut Plain) -> Vec<Duration> {
    let start = Instant::now();
    let mut samples = Vec::new();
    while start.elapsed() < Duration::from_secs(5) {
        thread::sleep(Duration::from_millis(2));
        let sent = Instant::now();
        let reply = probe.command("NOOP");
        samples.push(sent.elapsed());
        assert_eq!(reply, "+OK\r\n");
    }
    samples
}

fn percentiles(mut samples: Vec<Duration>) -> String {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    format!(
        "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} samples)",
        at(0.50).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        samples[samples.len() - 1].as_secs_f64() * 1e3,
        samples.len()
    )
}
