//! Operations, against the real binary: `--inetd` over pipes and over a
//! socket handed in as stdin, systemd readiness, `dump-config`, the
//! configuration reference in docs/config.md, and the log on syslog.

mod common;

use common::{big_message, dot_stuff, first_difference, free_port, wire_form, Client, IO_TIMEOUT};
use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const POP3D: &str = env!("CARGO_BIN_EXE_pop3d");

/// Passwords the tests use; no log line may ever contain them.
const RIGHT: &str = "Pw-right-7Qz";
const WRONG: &str = "Pw-wrong-3Kx";

static NEXT_DIR: AtomicU32 = AtomicU32::new(0);

/// A temporary directory with a passwd-file (alice, with [`RIGHT`]), alice's
/// maildir holding the given messages in delivery order, and a config.
struct Site {
    dir: PathBuf,
    /// Paths of alice's messages, message 1 first.
    messages: Vec<PathBuf>,
}

impl Site {
    fn new(messages: &[&[u8]]) -> Site {
        let dir = std::env::temp_dir().join(format!(
            "pop3d-ops-{}-{}",
            std::process::id(),
            NEXT_DIR.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        let maildir = dir.join("mail/alice/Maildir");
        for sub in ["cur", "new", "tmp"] {
            fs::create_dir_all(maildir.join(sub)).unwrap();
        }
        fs::write(dir.join("passwd"), format!("alice:{{PLAIN}}{RIGHT}\n")).unwrap();
        let mut paths = Vec::new();
        for (i, message) in messages.iter().enumerate() {
            let path = maildir
                .join("new")
                .join(format!("{}.M{i}P1.ops-host", 1_700_000_000 + i));
            fs::write(&path, message).unwrap();
            paths.push(path);
        }
        Site {
            dir,
            messages: paths,
        }
    }

    /// Writes a config whose top level holds `extra` besides the backends.
    fn config(&self, extra: &str) -> PathBuf {
        let text = format!(
            "(\n{extra}\n    auth: (plugin: \"passwd-file\", config: (path: \"{}\")),\n    store: (plugin: \"maildir\", config: (root: \"{}\")),\n)\n",
            self.dir.join("passwd").display(),
            self.dir.join("mail/%u/Maildir").display()
        );
        let path = self.dir.join(format!(
            "pop3d-{}.ron",
            NEXT_DIR.fetch_add(1, Ordering::Relaxed)
        ));
        fs::write(&path, text).unwrap();
        path
    }

    /// Whether message `n` (1-based) is still in the maildir, in `new/` or
    /// moved to `cur/`.
    fn has_message(&self, n: usize) -> bool {
        let name = self.messages[n - 1]
            .file_name()
            .unwrap()
            .to_string_lossy()
            .to_string();
        ["new", "cur"].iter().any(|sub| {
            fs::read_dir(self.dir.join("mail/alice/Maildir").join(sub))
                .unwrap()
                .any(|e| e.unwrap().file_name().to_string_lossy().starts_with(&name))
        })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        if std::env::var_os("POP3D_TEST_KEEP").is_none() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// `pop3d --inetd` on pipes: the test writes its stdin and reads its stdout
/// line by line (with a timeout, so a hung server fails the test).
struct Inetd {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<Vec<u8>>,
    log: PathBuf,
}

impl Inetd {
    /// Starts `pop3d --inetd --config CONFIG ARGS...` with `env` set and
    /// stderr going to a file.
    fn start(site: &Site, config: &Path, args: &[&str], env: &[(&str, &str)]) -> Inetd {
        let log = site.path(&format!(
            "inetd-{}.log",
            NEXT_DIR.fetch_add(1, Ordering::Relaxed)
        ));
        let mut command = Command::new(POP3D);
        command
            .arg("--inetd")
            .arg("--config")
            .arg(config)
            .args(args)
            .env_remove("TCPREMOTEIP")
            .env_remove("REMOTE_ADDR")
            .env_remove("RUST_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(fs::File::create(&log).unwrap());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("cannot run the pop3d binary");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            loop {
                let mut line = Vec::new();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        if tx.send(line).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Inetd {
            stdin: child.stdin.take(),
            child,
            lines,
            log,
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin already closed");
        stdin.write_all(bytes).unwrap();
        stdin.flush().unwrap();
    }

    /// The next reply line with its CRLF; `None` once stdout is closed.
    fn try_line(&mut self) -> Option<Vec<u8>> {
        match self.lines.recv_timeout(IO_TIMEOUT) {
            Ok(line) => Some(line),
            Err(mpsc::RecvTimeoutError::Disconnected) => None,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!(
                    "pop3d --inetd sent no line within {IO_TIMEOUT:?}; log:\n{}",
                    self.log()
                )
            }
        }
    }

    fn line(&mut self) -> String {
        let line = self
            .try_line()
            .unwrap_or_else(|| panic!("pop3d --inetd closed stdout; log:\n{}", self.log()));
        let text = String::from_utf8_lossy(&line).into_owned();
        text.strip_suffix("\r\n")
            .unwrap_or_else(|| panic!("reply line without CRLF: {text:?}"))
            .to_string()
    }

    fn command(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        self.line()
    }

    fn ok(&mut self, line: &str) -> String {
        let reply = self.command(line);
        assert!(reply.starts_with("+OK"), "{line:?} got {reply:?}");
        reply
    }

    /// A multi-line reply's status line and raw body (still dot-stuffed,
    /// without the terminating `.` line).
    fn multiline(&mut self, line: &str) -> (String, Vec<u8>) {
        let status = self.ok(line);
        let mut body = Vec::new();
        loop {
            let line = self.try_line().expect("stdout closed inside a body");
            if line == b".\r\n" {
                return (status, body);
            }
            body.extend_from_slice(&line);
        }
    }

    /// Closes stdin (the client hangs up).
    fn hang_up(&mut self) {
        self.stdin = None;
    }

    /// Waits for the process to end (it must, by itself).
    fn wait(&mut self) -> ExitStatus {
        self.hang_up();
        wait_with_deadline(&mut self.child, &self.log)
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Inetd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_with_deadline(child: &mut Child, log: &Path) -> ExitStatus {
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "pop3d did not exit within {IO_TIMEOUT:?}; log:\n{}",
                fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

const FIRST: &[u8] = b"From: a@example.org\nSubject: first\n\nhello\n.a line with a dot\n";
const SECOND: &[u8] = b"From: b@example.org\nSubject: second\n\nbye\n";

#[test]
fn inetd_session_over_pipes_retrieves_deletes_and_quits() {
    let big = big_message(1 << 20);
    let site = Site::new(&[FIRST, SECOND, &big]);
    let config = site.config("    limits: (auth_failure_delay_ms: 20),");
    let mut pop = Inetd::start(
        &site,
        &config,
        &["--log-target", "stderr"],
        &[("TCPREMOTEIP", "127.0.0.1"), ("TCPREMOTEPORT", "40001")],
    );
    assert!(pop.line().starts_with("+OK"));
    pop.ok("USER alice");
    assert_eq!(
        pop.command(&format!("PASS {WRONG}")),
        "-ERR [AUTH] Authentication failed"
    );
    pop.ok("USER alice");
    pop.ok(&format!("PASS {RIGHT}"));
    let total = wire_form(FIRST).len() + wire_form(SECOND).len() + wire_form(&big).len();
    assert_eq!(pop.command("STAT"), format!("+OK 3 {total}"));

    let (status, body) = pop.multiline("RETR 1");
    assert_eq!(status, format!("+OK {} octets", wire_form(FIRST).len()));
    assert_eq!(body, dot_stuff(&wire_form(FIRST)));
    // A body larger than one piece is streamed in several writes.
    let (_, body) = pop.multiline("RETR 3");
    let expected = dot_stuff(&wire_form(&big));
    assert!(
        body == expected,
        "RETR 3: {}",
        first_difference(&body, &expected)
    );

    pop.ok("DELE 1");
    assert_eq!(pop.command("QUIT"), "+OK Bye, 1 messages deleted, 2 left");
    assert!(pop.try_line().is_none(), "stdout stays open after QUIT");
    assert!(pop.wait().success());

    assert!(!site.has_message(1), "message 1 was not deleted at QUIT");
    assert!(site.has_message(2) && site.has_message(3));
    let log = pop.log();
    assert!(
        log.contains("login user=alice method=USER remote=127.0.0.1"),
        "{log}"
    );
    assert!(log.contains("reason=quit retr=2"), "{log}");
    assert!(
        !log.contains(RIGHT) && !log.contains(WRONG),
        "a password is in the log:\n{log}"
    );
}

#[test]
fn inetd_pipelined_commands_are_answered_in_order() {
    let site = Site::new(&[FIRST, SECOND]);
    let config = site.config("    limits: (auth_failure_delay_ms: 20),");
    let mut pop = Inetd::start(
        &site,
        &config,
        &["--log-target", "stderr"],
        &[("TCPREMOTEIP", "::1")],
    );
    assert!(pop.line().starts_with("+OK"));
    pop.send(
        format!(
            "USER alice\r\nPASS {WRONG}\r\nUSER alice\r\nPASS {RIGHT}\r\nLIST\r\n{}\r\nUIDL 2\r\nNOOP\r\nQUIT\r\n",
            "X".repeat(300)
        )
        .as_bytes(),
    );
    let mut replies = Vec::new();
    while let Some(line) = pop.try_line() {
        replies.push(String::from_utf8_lossy(&line).trim_end().to_string());
    }
    let size = |m: &[u8]| wire_form(m).len();
    assert_eq!(replies[0], "+OK Send your password");
    assert_eq!(replies[1], "-ERR [AUTH] Authentication failed");
    assert_eq!(replies[2], "+OK Send your password");
    assert!(replies[3].starts_with("+OK Logged in, 2 messages"));
    assert_eq!(
        replies[4..8],
        [
            format!("+OK 2 messages ({} octets)", size(FIRST) + size(SECOND)),
            format!("1 {}", size(FIRST)),
            format!("2 {}", size(SECOND)),
            ".".to_string()
        ]
    );
    assert_eq!(replies[8], "-ERR Line too long");
    assert!(replies[9].starts_with("+OK 2 "), "{replies:?}");
    assert_eq!(
        replies[10..],
        ["+OK", "+OK Bye, 0 messages deleted, 2 left"]
    );
    assert!(pop.wait().success());
}

#[test]
fn inetd_client_that_hangs_up_deletes_nothing() {
    let site = Site::new(&[FIRST, SECOND]);
    let config = site.config("");
    let mut pop = Inetd::start(
        &site,
        &config,
        &["--log-target", "stderr"],
        &[("TCPREMOTEIP", "127.0.0.1")],
    );
    assert!(pop.line().starts_with("+OK"));
    pop.ok("USER alice");
    pop.ok(&format!("PASS {RIGHT}"));
    pop.ok("DELE 1");
    pop.ok("DELE 2");
    pop.hang_up();
    assert!(pop.try_line().is_none());
    assert!(pop.wait().success());
    assert!(
        site.has_message(1) && site.has_message(2),
        "a hang-up deleted mail"
    );
    let log = pop.log();
    assert!(log.contains("reason=disconnected"), "{log}");
    assert!(log.contains("nothing deleted"), "{log}");

    // The maildrop was released: the next session sees both messages.
    let mut again = Inetd::start(
        &site,
        &config,
        &["--log-target", "stderr"],
        &[("TCPREMOTEIP", "127.0.0.1")],
    );
    assert!(again.line().starts_with("+OK"));
    again.ok("USER alice");
    assert!(again.ok(&format!("PASS {RIGHT}")).contains("2 messages"));
    again.ok("QUIT");
    assert!(again.wait().success());
}

#[test]
fn inetd_without_a_loopback_peer_refuses_plaintext_passwords() {
    let site = Site::new(&[FIRST]);
    let config = site.config("");
    // A pipe and no address in the environment: the client is unknown.
    let mut pop = Inetd::start(&site, &config, &["--log-target", "stderr"], &[]);
    assert!(pop.line().starts_with("+OK"));
    assert!(pop
        .command("USER alice")
        .starts_with("-ERR [AUTH] Plaintext authentication is not allowed"),);
    pop.ok("QUIT");
    assert!(pop.wait().success());

    let mut remote = Inetd::start(
        &site,
        &config,
        &["--log-target", "stderr"],
        &[("TCPREMOTEIP", "192.0.2.10")],
    );
    assert!(remote.line().starts_with("+OK"));
    assert!(remote.command("USER alice").starts_with("-ERR [AUTH]"));
    remote.ok("QUIT");
    assert!(remote.wait().success());
    assert!(
        remote.log().contains("remote=192.0.2.10"),
        "{}",
        remote.log()
    );
}

#[test]
fn inetd_silent_client_is_disconnected_at_the_login_timeout() {
    let site = Site::new(&[FIRST]);
    let config = site.config("    limits: (login_timeout_secs: 1),");
    let mut pop = Inetd::start(
        &site,
        &config,
        &["--log-target", "stderr"],
        &[("TCPREMOTEIP", "127.0.0.1")],
    );
    assert!(pop.line().starts_with("+OK"));
    // Say nothing, keep stdin open.
    assert_eq!(pop.line(), "-ERR Disconnected for inactivity");
    assert!(pop.try_line().is_none());
    let status = wait_with_deadline(&mut pop.child, &pop.log);
    assert!(status.success());
    assert!(pop.log().contains("reason=idle timeout"), "{}", pop.log());
}

#[test]
fn inetd_with_an_unusable_config_turns_the_client_away_and_logs_why() {
    let site = Site::new(&[]);
    let config = site.config("    limits: (idle_timeout_secs: 30),");
    let mut pop = Inetd::start(&site, &config, &["--log-target", "stderr"], &[]);
    assert_eq!(
        pop.line(),
        "-ERR [SYS/TEMP] Server is not available right now, try again later"
    );
    let status = pop.wait();
    assert_eq!(status.code(), Some(1));
    assert!(
        pop.log().contains("idle_timeout_secs is 30"),
        "{}",
        pop.log()
    );
}

/// What inetd, xinetd and systemd do: the accepted TCP socket is stdin and
/// stdout. The client's address then comes from the socket itself.
#[test]
fn inetd_on_a_real_socket_knows_the_client_address() {
    let site = Site::new(&[FIRST]);
    let config = site.config("");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut client = Client::connect(addr);
    let (accepted, _) = listener.accept().unwrap();
    let log = site.path("socket.log");
    let mut child = Command::new(POP3D)
        .args(["--inetd", "--log-target", "stderr", "--config"])
        .arg(&config)
        .env_remove("TCPREMOTEIP")
        .env_remove("REMOTE_ADDR")
        .env_remove("RUST_LOG")
        .stdin(Stdio::from(OwnedFd::from(accepted.try_clone().unwrap())))
        .stdout(Stdio::from(OwnedFd::from(accepted)))
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    client.greeting();
    client.ok("USER alice");
    client.ok(&format!("PASS {RIGHT}"));
    let reply = client.multiline("RETR 1");
    assert_eq!(reply.body, dot_stuff(&wire_form(FIRST)));
    client.ok("QUIT");
    assert!(wait_with_deadline(&mut child, &log).success());
    let log = fs::read_to_string(&log).unwrap();
    assert!(
        log.contains("login user=alice method=USER remote=127.0.0.1"),
        "{log}"
    );
    assert!(log.contains(&format!("local={addr}")), "{log}");
}

/// A daemon started with `args`, stopped on drop.
struct Daemon {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Daemon {
    fn start(site: &Site, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let port = free_port();
        let config = site.config(&format!(
            "    listen: [(addr: \"127.0.0.1:{port}\")],\n    allow_root: true,\n    limits: (auth_failure_delay_ms: 20),"
        ));
        let log = site.path(&format!("daemon-{port}.log"));
        let mut command = Command::new(POP3D);
        command
            .arg("--config")
            .arg(&config)
            .args(args)
            .env_remove("NOTIFY_SOCKET")
            .env_remove("JOURNAL_STREAM")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap());
        for (key, value) in env {
            command.env(key, value);
        }
        Daemon {
            child: command.spawn().unwrap(),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            log,
        }
    }

    /// Waits until the port greets.
    fn wait_listening(&mut self) {
        let deadline = Instant::now() + IO_TIMEOUT;
        while std::net::TcpStream::connect(self.addr).is_err() {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("pop3d exited ({status}); log:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "pop3d never listened; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self) -> ExitStatus {
        let sent = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(sent.success());
        wait_with_deadline(&mut self.child, &self.log)
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads datagrams until one satisfies `done`; fails the test after
/// [`IO_TIMEOUT`] without one.
fn receive_until(socket: &UnixDatagram, mut done: impl FnMut(&str) -> bool) -> Vec<String> {
    socket.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0; 65536];
    loop {
        let n = socket.recv(&mut buf).unwrap_or_else(|e| {
            panic!("no datagram within {IO_TIMEOUT:?} ({e}); so far: {got:#?}")
        });
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        let finished = done(&text);
        got.push(text);
        if finished {
            return got;
        }
    }
}

#[test]
fn systemd_readiness_is_sent_once_the_port_accepts() {
    let site = Site::new(&[FIRST]);
    let notify_path = site.path("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    let notify_env = notify_path.to_str().unwrap().to_string();
    let mut daemon = Daemon::start(&site, &[], &[("NOTIFY_SOCKET", &notify_env)]);
    let messages = receive_until(&notify, |m| m.contains("READY=1"));
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert!(
        messages[0].contains(&format!("STATUS=listening on {}", daemon.addr)),
        "{messages:?}"
    );
    // No retry: when systemd hears READY=1 the port must already answer.
    let mut client = Client::connect(daemon.addr);
    client.greeting();
    client.ok("QUIT");
    assert!(daemon.stop().success());
}

#[cfg(target_os = "linux")]
#[test]
fn systemd_readiness_reaches_an_abstract_notify_socket() {
    use std::os::linux::net::SocketAddrExt;
    let site = Site::new(&[FIRST]);
    let name = format!("pop3d-ops-notify-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let notify = UnixDatagram::bind_addr(&addr).unwrap();
    let mut daemon = Daemon::start(&site, &[], &[("NOTIFY_SOCKET", &format!("@{name}"))]);
    let messages = receive_until(&notify, |m| m.contains("READY=1"));
    assert!(messages[0].starts_with("READY=1\n"), "{messages:?}");
    Client::connect(daemon.addr).greeting();
    assert!(daemon.stop().success());
}

/// Parses the fields `key=value` of a log line.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split(' ')
        .find_map(|part| part.strip_prefix(key)?.strip_prefix('='))
}

#[test]
fn daemon_logs_to_syslog_with_session_fields_and_never_a_password() {
    let site = Site::new(&[FIRST, SECOND]);
    let syslog_path = site.path("syslog.sock");
    let syslog = UnixDatagram::bind(&syslog_path).unwrap();
    let mut daemon = Daemon::start(
        &site,
        &[
            "--log-target",
            "syslog",
            "--syslog-socket",
            syslog_path.to_str().unwrap(),
        ],
        &[],
    );
    daemon.wait_listening();
    let mut c = Client::connect(daemon.addr);
    c.greeting();
    c.ok("USER alice");
    c.err(&format!("PASS {WRONG}"));
    c.ok("USER alice");
    c.ok(&format!("PASS {RIGHT}"));
    c.multiline("RETR 2");
    c.multiline("TOP 1 0");
    c.ok("DELE 1");
    c.ok("QUIT");
    let lines = receive_until(&syslog, |m| m.contains(" logout "));
    assert!(daemon.stop().success());

    let pid = daemon.child.id();
    let prefix_info = format!("<22>pop3d[{pid}]: ");
    for line in &lines {
        let priority: u32 = line
            .strip_prefix('<')
            .and_then(|rest| rest.split_once('>'))
            .and_then(|(number, _)| number.parse().ok())
            .unwrap_or_else(|| panic!("no <PRI> in {line:?}"));
        assert_eq!(priority / 8, 2, "not facility mail: {line:?}");
        assert!(line.contains(&format!(">pop3d[{pid}]: ")), "{line:?}");
        assert!(
            !line.contains(RIGHT) && !line.contains(WRONG),
            "password in {line:?}"
        );
    }
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&prefix_info) && l.contains("listening on")),
        "{lines:#?}"
    );
    let failed = lines
        .iter()
        .find(|l| l.contains(" login failed "))
        .expect("no failed-login line");
    assert_eq!(field(failed, "user"), Some("\"alice\""));
    assert_eq!(field(failed, "remote"), Some("127.0.0.1"));

    let login = lines
        .iter()
        .find(|l| l.contains(" login user="))
        .expect("no login line");
    let logout = lines
        .iter()
        .find(|l| l.contains(" logout "))
        .expect("no logout line");
    let session = field(login, "session").expect("login line without session=");
    assert_eq!(session.len(), 8, "{login}");
    assert_eq!(field(failed, "session"), Some(session));
    assert_eq!(field(logout, "session"), Some(session));
    assert_eq!(field(login, "user"), Some("alice"));
    assert_eq!(field(login, "method"), Some("USER"));
    assert_eq!(field(login, "remote"), Some("127.0.0.1"));
    // Which listener the client reached, as the disconnect line says too.
    let local = daemon.addr.to_string();
    assert_eq!(field(login, "local"), Some(local.as_str()));
    assert_eq!(field(login, "tls"), Some("no"));
    assert_eq!(field(login, "messages"), Some("2"));
    let octets = wire_form(FIRST).len() + wire_form(SECOND).len();
    assert_eq!(field(login, "octets"), Some(octets.to_string().as_str()));
    assert_eq!(field(logout, "user"), Some("alice"));
    assert_eq!(field(logout, "reason"), Some("quit"));
    assert_eq!(field(logout, "retr"), Some("1"));
    assert_eq!(
        field(logout, "retr_octets"),
        Some(wire_form(SECOND).len().to_string().as_str())
    );
    assert_eq!(field(logout, "top"), Some("1"));
    assert_eq!(field(logout, "dele"), Some("1"));
    assert_eq!(field(logout, "deleted"), Some("1"));
}

#[test]
fn inetd_logs_to_syslog_by_default_with_byte_counts() {
    let site = Site::new(&[FIRST]);
    let syslog_path = site.path("syslog.sock");
    let syslog = UnixDatagram::bind(&syslog_path).unwrap();
    let config = site.config("");
    let mut pop = Inetd::start(
        &site,
        &config,
        &["--syslog-socket", syslog_path.to_str().unwrap()],
        &[
            ("TCPREMOTEIP", "127.0.0.1"),
            ("TCPLOCALIP", "127.0.0.1"),
            ("TCPLOCALPORT", "110"),
        ],
    );
    let mut received = pop.line().len() + 2;
    let mut sent = 0;
    for line in [
        "USER alice".to_string(),
        format!("PASS {RIGHT}"),
        "NOOP".into(),
        "QUIT".into(),
    ] {
        sent += line.len() + 2;
        received += pop.ok(&line).len() + 2;
    }
    assert!(pop.wait().success());
    let lines = receive_until(&syslog, |m| m.contains(" end "));
    assert!(
        pop.log().is_empty(),
        "--inetd wrote to stderr: {}",
        pop.log()
    );
    let end = lines.last().unwrap();
    assert!(end.starts_with("<22>pop3d["), "{end}");
    assert_eq!(field(end, "reason"), Some("closed"));
    assert_eq!(field(end, "remote"), Some("127.0.0.1"));
    assert_eq!(field(end, "local"), Some("127.0.0.1:110"));
    assert_eq!(
        field(end, "bytes_in"),
        Some(sent.to_string().as_str()),
        "{end}"
    );
    assert_eq!(
        field(end, "bytes_out"),
        Some(received.to_string().as_str()),
        "{end}"
    );
    assert!(lines.iter().all(|l| !l.contains(RIGHT)), "{lines:#?}");
}

fn dump_config(path: &Path, extra: &[&str]) -> String {
    let output = Command::new(POP3D)
        .arg("dump-config")
        .arg(path)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "dump-config failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// A configuration that sets every key pop3d knows, most of them to values
/// other than the defaults, and the bundled backends.
fn everything_config(site: &Site) -> PathBuf {
    site.config(
        r#"    listen: [(addr: "127.0.0.1:1110"), (addr: "[::1]:1995", implicit_tls: true)],
    tls: (cert: "/etc/pop3d/cert.pem", key: "/etc/pop3d/key.pem"),
    allow_plaintext_auth: Never,
    workers: 3,
    limits: (
        max_connections: 500, max_per_ip: 20, idle_timeout_secs: 900,
        login_timeout_secs: 30, auth_failure_delay_ms: 1500, max_pipelined_lines: 64,
    ),"#,
    )
}

#[test]
fn dump_config_output_reads_back_as_the_same_configuration() {
    let site = Site::new(&[]);
    for path in [everything_config(&site), site.config("    workers: 2,")] {
        let original = pop3d::config::load(&path).unwrap();
        for mode in [&[][..], &["--non-default"][..]] {
            let text = dump_config(&path, mode);
            let dumped = pop3d::config::parse(&text, "dump-config output")
                .unwrap_or_else(|e| panic!("{e}\n{text}"));
            assert_eq!(dumped, original, "{mode:?}:\n{text}");
            // Printing the printed file changes nothing but the file name.
            let again = site.path("again.ron");
            fs::write(&again, &text).unwrap();
            let body = |t: &str| t.lines().skip(1).collect::<Vec<_>>().join("\n");
            assert_eq!(body(&dump_config(&again, mode)), body(&text));
        }
    }
    let minimal = dump_config(&site.config(""), &["--non-default"]);
    let keys = key_paths(&minimal);
    assert!(
        keys.iter()
            .all(|k| k.starts_with("auth") || k.starts_with("store")),
        "a default key is printed with --non-default: {keys:?}"
    );
    let full = key_paths(&dump_config(&site.config(""), &[]));
    assert!(
        full.contains("limits.max_pipelined_lines") && full.contains("listen[].addr"),
        "{full:?}"
    );
}

#[test]
fn configuration_reference_lists_exactly_the_keys_pop3d_knows() {
    let site = Site::new(&[]);
    let dumped = key_paths(&dump_config(&everything_config(&site), &[]));
    let doc =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/config.md")).unwrap();
    let documented: BTreeSet<String> = doc
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split('`').next())
        .map(str::to_string)
        .collect();
    let undocumented: Vec<_> = dumped.difference(&documented).collect();
    let unknown: Vec<_> = documented.difference(&dumped).collect();
    assert!(
        undocumented.is_empty() && unknown.is_empty(),
        "docs/config.md is out of step with the config structs.\nkeys pop3d knows but the reference does not list: {undocumented:?}\nkeys the reference lists but pop3d does not know: {unknown:?}"
    );
}

/// Every key path of a RON text: `limits.max_per_ip`, `listen[].addr`,
/// `tls.cert` (inside `Some(...)`), `auth.config.path`. Strings and
/// comments are skipped.
fn key_paths(text: &str) -> BTreeSet<String> {
    struct Frame {
        prefix: String,
        bracket: char,
        key: Option<String>,
    }
    impl Frame {
        fn value_path(&self) -> String {
            match (self.bracket, &self.key) {
                ('(', Some(key)) if self.prefix.is_empty() => key.clone(),
                ('(', Some(key)) => format!("{}.{key}", self.prefix),
                ('[', _) => format!("{}[]", self.prefix),
                _ => self.prefix.clone(),
            }
        }
    }
    let chars: Vec<char> = text.chars().collect();
    let mut stack: Vec<Frame> = Vec::new();
    let mut keys = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '/' && chars.get(i + 1) == Some(&'/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut j = i;
            while j < chars.len() && chars[j].is_whitespace() {
                j += 1;
            }
            if chars.get(j) == Some(&':') {
                if let Some(frame) = stack.last_mut().filter(|f| f.bracket == '(') {
                    frame.key = Some(word);
                    keys.insert(frame.value_path());
                }
            }
        } else {
            match c {
                '(' | '[' | '{' => {
                    let prefix = stack.last().map(Frame::value_path).unwrap_or_default();
                    stack.push(Frame {
                        prefix,
                        bracket: c,
                        key: None,
                    });
                }
                ')' | ']' | '}' => {
                    stack.pop();
                }
                ',' => {
                    if let Some(frame) = stack.last_mut() {
                        frame.key = None;
                    }
                }
                _ => {}
            }
            i += 1;
        }
    }
    keys
}

#[test]
fn key_paths_sees_through_options_lists_and_comments() {
    let keys = key_paths(
        "// note: a comment\n(a: 1, b: Some((c: \"x: y\", d: [(e: 1)])), f: [(g: 2), (g: 3)], h: { \"k\": 1 })",
    );
    let expected: BTreeSet<String> = ["a", "b", "b.c", "b.d", "b.d[].e", "f", "f[].g", "h"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(keys, expected);
}

#[test]
fn stderr_lines_carry_priority_prefixes_only_when_stderr_is_the_journal() {
    use std::os::unix::fs::MetadataExt;
    let site = Site::new(&[FIRST]);
    let config = site.config("");
    let run = |journal_stream: &dyn Fn(&Path) -> String| {
        let log = site.path(&format!(
            "journal-{}.log",
            NEXT_DIR.fetch_add(1, Ordering::Relaxed)
        ));
        let file = fs::File::create(&log).unwrap();
        let output = Command::new(POP3D)
            .args(["--inetd", "--log-target", "stderr", "--config"])
            .arg(&config)
            .env_remove("RUST_LOG")
            .env("JOURNAL_STREAM", journal_stream(&log))
            .env("TCPREMOTEIP", "127.0.0.1")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .and_then(|mut child| {
                child.stdin.take().unwrap().write_all(b"QUIT\r\n")?;
                child.wait()
            })
            .unwrap();
        assert!(output.success());
        fs::read_to_string(&log).unwrap()
    };
    // What systemd sets: the device and inode of the stream stderr is.
    let journal = run(&|log| {
        let meta = fs::metadata(log).unwrap();
        format!("{}:{}", meta.dev(), meta.ino())
    });
    assert!(
        journal.lines().all(|line| line.starts_with('<')),
        "{journal}"
    );
    assert!(journal.contains("\n<6>session="), "{journal}");
    // A JOURNAL_STREAM inherited by a process whose stderr was redirected.
    let plain = run(&|_| "1:2".to_string());
    assert!(plain.contains("Z INFO  session="), "{plain}");
    assert!(!plain.starts_with('<'), "{plain}");
}
