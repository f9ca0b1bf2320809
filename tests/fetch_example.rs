//! End to end: the `fetch` example client against a real pop3d.
//!
//! Each test writes a passwd file, a server-side maildir and a RON config into
//! a temporary directory, starts the pop3d binary on a free loopback port,
//! runs `target/<profile>/examples/fetch` as a user would, and then looks at
//! both maildirs: every message must arrive byte for byte (the server stores
//! LF line ends, the client writes LF line ends), and the server must delete
//! only what the client stored, and only when asked to.
//!
//! The tests build the example themselves (`cargo build --example fetch`
//! with the same profile and target directory), so they never run a stale
//! client.
//!
//! To check these tests against another POP3 server, set
//! `POP3D_TEST_EXTERNAL=HOST:PORT` and `POP3D_TEST_EXTERNAL_MAILDIR` to that
//! server's maildir path with `%u` for the user (for example
//! `/tmp/dove/mail/%u/Maildir`). The server must know the users `deleter`,
//! `keeper`, `dropper` and `refused`, all with password `secret`; their
//! maildirs' `cur`, `new` and `tmp` are emptied by the tests, so point this
//! only at a scratch server.

#[path = "support/scratch.rs"]
mod scratch;

use scratch::TempDir;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const PASSWORD: &str = "secret";

/// Messages as the server's store holds them: the shapes that trip up POP3
/// clients. Each one must come back unchanged.
fn fixture_messages() -> Vec<Vec<u8>> {
    let mut eight_bit = "Subject: 8-bit\n\nGr\u{fc}\u{df}e, \u{65e5}\u{672c}\n"
        .as_bytes()
        .to_vec();
    eight_bit.extend(0x80..=0xffu8);
    eight_bit.push(b'\n');
    let mut long_line = b"Subject: one long line\n\n".to_vec();
    long_line.extend(std::iter::repeat_n(b'x', 300_000));
    long_line.extend_from_slice(b"\n.\n");
    vec![
        b"From: a@example.org\nSubject: dots\n\n.leading dot\n..two dots\n.\nend\n".to_vec(),
        // POP3 must add a line break before the final dot. pop3d counts it
        // in LIST (the size is what RETR sends), so the local copy ends in a
        // newline: see `as_fetched`.
        b"Subject: no final newline\n\nlast line without newline".to_vec(),
        eight_bit,
        long_line,
        Vec::new(),
    ]
}

#[test]
fn fetch_stores_every_message_byte_exact_and_server_deletes_them() {
    let fixture = Fixture::new("deleter");
    let messages = fixture_messages();
    for message in &messages {
        fixture.deliver(message);
    }

    let output = fixture.fetch(&[]);

    assert_success(&output);
    assert!(
        stdout(&output).contains("5 messages"),
        "summary should count 5 messages: {}",
        stdout(&output)
    );
    assert_same_messages(fixture.local_messages(), messages.clone());
    assert_eq!(
        fixture.server_message_count(),
        0,
        "the server should have deleted every stored message at QUIT"
    );
    assert_no_password(&output);

    // Nothing left: a second run stores nothing and changes nothing.
    let output = fixture.fetch(&[]);
    assert_success(&output);
    assert_same_messages(fixture.local_messages(), messages);
}

#[test]
fn keep_leaves_mail_on_the_server_and_fetches_only_new_messages() {
    let fixture = Fixture::new("keeper");
    let mut messages = fixture_messages();
    messages.truncate(3);
    for message in &messages {
        fixture.deliver(message);
    }

    let first = fixture.fetch(&["--keep"]);
    assert_success(&first);
    assert_same_messages(fixture.local_messages(), messages.clone());
    assert_eq!(
        fixture.server_message_count(),
        3,
        "--keep must not delete anything"
    );

    let second = fixture.fetch(&["--keep"]);
    assert_success(&second);
    assert!(
        stdout(&second).contains("0 messages"),
        "the second run should fetch nothing: {}",
        stdout(&second)
    );
    assert_same_messages(fixture.local_messages(), messages.clone());
    assert_eq!(fixture.server_message_count(), 3);

    let newcomer = b"Subject: arrived later\n\nnew mail\n".to_vec();
    fixture.deliver(&newcomer);
    let third = fixture.fetch(&["--keep"]);
    assert_success(&third);
    assert!(
        stdout(&third).contains("1 message "),
        "the third run should fetch exactly the new message: {}",
        stdout(&third)
    );
    messages.push(newcomer);
    assert_same_messages(fixture.local_messages(), messages);
    assert_eq!(fixture.server_message_count(), 4);
}

#[test]
fn a_run_cut_off_before_quit_never_duplicates_mail() {
    let fixture = Fixture::new("dropper");
    let mut messages = fixture_messages();
    messages.truncate(3);
    for message in &messages {
        fixture.deliver(message);
    }
    // The client talks to the server through a relay that hangs up when it
    // sees QUIT on the first connection and relays faithfully afterwards, so
    // both runs use the same --server address.
    let relay = Relay::start(fixture.server_addr);

    let cut_off = fixture.fetch_via(relay.addr, &[]);
    assert!(
        !cut_off.status.success(),
        "a connection lost before the +OK to QUIT must be reported as a failure"
    );
    assert!(
        stderr(&cut_off).contains("QUIT"),
        "the error should name QUIT: {}",
        stderr(&cut_off)
    );
    assert_same_messages(fixture.local_messages(), messages.clone());
    assert_eq!(
        fixture.server_message_count(),
        3,
        "without QUIT the server must not delete anything"
    );

    let retried = fixture.fetch_via(relay.addr, &[]);
    assert_success(&retried);
    assert_same_messages(fixture.local_messages(), messages);
    assert_eq!(fixture.server_message_count(), 0);
}

#[test]
fn a_wrong_password_is_reported_without_echoing_it() {
    let fixture = Fixture::new("refused");
    fixture.deliver(b"Subject: stays\n\nbody\n");
    let wrong = "not-the-password-42";

    let output = fixture.fetch_with_password(fixture.server_addr, wrong, &[]);

    assert!(
        !output.status.success(),
        "a refused login must fail the run"
    );
    assert!(
        stderr(&output).contains("server refused password: -ERR"),
        "the error should say the password was refused: {}",
        stderr(&output)
    );
    for text in [stdout(&output), stderr(&output)] {
        assert!(!text.contains(wrong), "the password was printed: {text}");
    }
    assert!(fixture.local_messages().is_empty());
    assert_eq!(fixture.server_message_count(), 1);
}

// ---------------------------------------------------------------------------
// Fixture

/// One test's world: a POP3 server with one user, and a local maildir.
struct Fixture {
    /// The user the test logs in as.
    user: &'static str,
    /// Where the server listens.
    server_addr: SocketAddr,
    /// The server-side maildir of `user` (holds `cur`, `new`, `tmp`).
    server_maildir: PathBuf,
    /// The client's maildir.
    local_maildir: PathBuf,
    /// Distinguishes fixture files delivered by this test.
    delivered: AtomicU32,
    /// Declared before `_dir` so the server stops before its files vanish.
    _server: Option<ServerProcess>,
    /// Removes everything when the test ends.
    _dir: TempDir,
}

impl Fixture {
    fn new(user: &'static str) -> Fixture {
        let dir = TempDir::new(&format!("fetch-{user}"));
        let local_maildir = dir.path.join("local");
        match std::env::var("POP3D_TEST_EXTERNAL") {
            Ok(addr) => {
                let template = std::env::var("POP3D_TEST_EXTERNAL_MAILDIR")
                    .expect("POP3D_TEST_EXTERNAL needs POP3D_TEST_EXTERNAL_MAILDIR (with %u)");
                let server_maildir = PathBuf::from(template.replace("%u", user));
                for sub in ["cur", "new", "tmp"] {
                    let sub_dir = server_maildir.join(sub);
                    fs::create_dir_all(&sub_dir).unwrap();
                    for entry in fs::read_dir(&sub_dir).unwrap() {
                        fs::remove_file(entry.unwrap().path()).unwrap();
                    }
                }
                Fixture {
                    user,
                    server_addr: addr.parse().expect("POP3D_TEST_EXTERNAL is HOST:PORT"),
                    server_maildir,
                    local_maildir,
                    delivered: AtomicU32::new(0),
                    _server: None,
                    _dir: dir,
                }
            }
            Err(_) => {
                let server_maildir = dir.path.join("mail").join(user).join("Maildir");
                for sub in ["cur", "new", "tmp"] {
                    fs::create_dir_all(server_maildir.join(sub)).unwrap();
                }
                let passwd = dir.path.join("passwd");
                fs::write(&passwd, format!("{user}:{{PLAIN}}{PASSWORD}\n")).unwrap();
                let server = ServerProcess::start(&dir.path, &passwd);
                Fixture {
                    user,
                    server_addr: server.addr,
                    server_maildir,
                    local_maildir,
                    delivered: AtomicU32::new(0),
                    _server: Some(server),
                    _dir: dir,
                }
            }
        }
    }

    /// Puts a message into the server's maildir as a delivery agent would:
    /// written in `tmp/`, then moved into `new/`.
    fn deliver(&self, message: &[u8]) {
        let number = self.delivered.fetch_add(1, Ordering::Relaxed);
        let name = format!("{}.fixture{number}.test", unix_secs());
        let tmp = self.server_maildir.join("tmp").join(&name);
        fs::write(&tmp, message).unwrap();
        fs::rename(&tmp, self.server_maildir.join("new").join(&name)).unwrap();
    }

    fn fetch(&self, extra: &[&str]) -> Output {
        self.fetch_with_password(self.server_addr, PASSWORD, extra)
    }

    fn fetch_via(&self, addr: SocketAddr, extra: &[&str]) -> Output {
        self.fetch_with_password(addr, PASSWORD, extra)
    }

    fn fetch_with_password(&self, addr: SocketAddr, password: &str, extra: &[&str]) -> Output {
        Command::new(fetch_binary())
            .arg("--server")
            .arg(addr.to_string())
            .arg("--user")
            .arg(self.user)
            .arg("--maildir")
            .arg(&self.local_maildir)
            .arg("--timeout")
            .arg("30")
            .args(extra)
            .env("POP3_PASSWORD", password)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Contents of every message the client stored (in `new/`).
    fn local_messages(&self) -> Vec<Vec<u8>> {
        files_in(&self.local_maildir.join("new"))
            .iter()
            .map(|path| fs::read(path).unwrap())
            .collect()
    }

    /// Messages still in the server's maildir, wherever the store moved them.
    fn server_message_count(&self) -> usize {
        files_in(&self.server_maildir.join("new")).len()
            + files_in(&self.server_maildir.join("cur")).len()
    }
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    match fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.is_file())
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The fetch example, built once per test run.
fn fetch_binary() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| scratch::build_example("fetch"))
}

// ---------------------------------------------------------------------------
// Assertions

fn assert_success(output: &Output) {
    assert!(
        output.status.success(),
        "fetch failed ({}):\nstdout: {}\nstderr: {}",
        output.status,
        stdout(output),
        stderr(output)
    );
}

/// Same messages, in any order (maildir names carry no order we can use).
/// What a message looks like after a trip through POP3: a last line
/// without a line break gains one (the wire cannot tell them apart, and
/// pop3d's LIST size includes it). Against a server that announces sizes
/// without it (Dovecot), fetch strips it again and copies are exact.
fn as_fetched(message: &[u8]) -> Vec<u8> {
    let mut copy = message.to_vec();
    if std::env::var_os("POP3D_TEST_EXTERNAL").is_none()
        && !copy.is_empty()
        && !copy.ends_with(b"\n")
    {
        copy.push(b'\n');
    }
    copy
}

fn assert_same_messages(mut actual: Vec<Vec<u8>>, expected: Vec<Vec<u8>>) {
    let mut expected: Vec<Vec<u8>> = expected.iter().map(|m| as_fetched(m)).collect();
    actual.sort();
    expected.sort();
    if actual == expected {
        return;
    }
    let describe = |messages: &[Vec<u8>]| {
        messages
            .iter()
            .map(|m| {
                let head: String = String::from_utf8_lossy(&m[..m.len().min(40)]).into();
                format!("  {} bytes: {head:?}", m.len())
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    panic!(
        "local maildir differs from what the server held.\n\
         stored:\n{}\nexpected:\n{}",
        describe(&actual),
        describe(&expected)
    );
}

fn assert_no_password(output: &Output) {
    for text in [stdout(output), stderr(output)] {
        assert!(!text.contains(PASSWORD), "the password was printed: {text}");
    }
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

// ---------------------------------------------------------------------------
// Processes and sockets

/// A running pop3d, killed when the test ends however it ends.
struct ServerProcess {
    /// The child process.
    child: Child,
    /// Where it listens.
    addr: SocketAddr,
}

impl ServerProcess {
    fn start(dir: &Path, passwd: &Path) -> ServerProcess {
        // Free now; the small window before pop3d binds it is acceptable
        // for a test.
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let config = dir.join("pop3d.ron");
        fs::write(
            &config,
            format!(
                "(\n    listen: [(addr: \"{addr}\")],\n    allow_root: true,\n    limits: (auth_failure_delay_ms: 100),\n    \
                 auth: (plugin: \"passwd-file\", config: (path: \"{}\")),\n    \
                 store: (plugin: \"maildir\", config: (root: \"{}\")),\n)\n",
                passwd.display(),
                dir.join("mail").join("%u").join("Maildir").display()
            ),
        )
        .unwrap();
        let log = dir.join("pop3d.log");
        let child = Command::new(env!("CARGO_BIN_EXE_pop3d"))
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(fs::File::create(dir.join("pop3d.out")).unwrap())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut server = ServerProcess { child, addr };
        server.wait_until_accepting(&log);
        server
    }

    fn wait_until_accepting(&mut self, log: &Path) {
        // Generous: this is readiness, not a performance assertion.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if TcpStream::connect(self.addr).is_ok() {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "pop3d exited ({status}) before accepting connections:\n{}",
                    fs::read_to_string(log).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "pop3d did not accept connections on {} within 30 s:\n{}",
                    self.addr,
                    fs::read_to_string(log).unwrap_or_default()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP relay in front of the server that hangs up, instead of passing it
/// on, the first QUIT it sees: the connection drop a client must survive.
struct Relay {
    /// Where clients connect.
    addr: SocketAddr,
}

impl Relay {
    fn start(server: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // The thread ends with the test process; it holds no files.
        thread::spawn(move || {
            for (index, client) in listener.incoming().enumerate() {
                let Ok(client) = client else { return };
                let Ok(upstream) = TcpStream::connect(server) else {
                    return;
                };
                relay_connection(client, upstream, index == 0);
            }
        });
        Relay { addr }
    }
}

fn relay_connection(client: TcpStream, upstream: TcpStream, drop_at_quit: bool) {
    let (mut to_client, mut from_upstream) =
        (client.try_clone().unwrap(), upstream.try_clone().unwrap());
    let downstream = thread::spawn(move || {
        let _ = std::io::copy(&mut from_upstream, &mut to_client);
        let _ = to_client.shutdown(Shutdown::Both);
    });
    let mut to_upstream = upstream;
    let mut lines = BufReader::new(client.try_clone().unwrap());
    let mut line = Vec::new();
    loop {
        line.clear();
        match lines.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if drop_at_quit && line.to_ascii_uppercase().starts_with(b"QUIT") {
            break;
        }
        if to_upstream.write_all(&line).is_err() {
            break;
        }
    }
    // Half-close towards the server and wait for it to hang up in turn, so
    // the next connection is only relayed once the server has seen this one
    // end; the client learns of the drop when the downstream copy stops.
    let _ = to_upstream.shutdown(Shutdown::Write);
    let _ = downstream.join();
    let _ = client.shutdown(Shutdown::Both);
}
