//! Plugins end to end: the real `pop3d` binary, a RON config naming plugin
//! libraries by path (or the built-in checkpassword), real TCP, raw bytes.
//!
//! - the C example auth plugin, compiled here with `cc -shared -fPIC`
//!   against the SDK header, with the maildir store loaded from
//!   `libpop3d_maildir.so`: a real login, LIST and RETR;
//! - the Rust dir-store example as the store;
//! - the panicky store: the session that hits the panic gets
//!   `-ERR [SYS/TEMP]`, and the server goes on answering everyone;
//! - checkpassword with helper scripts: success (with the home its next
//!   program reports), failure, a helper that hangs past the timeout and
//!   one that kills itself with SIGSEGV.
//!
//! The Rust plugin libraries are built once per run with `cargo build` into
//! `<target>/plugin-libs`, with this test binary's profile, as
//! `tests/plugins.rs` does.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "support/plugin_build.rs"]
mod plugin_build;
use plugin_build::{build_c, rust_plugin, Scratch};

/// Longest any read or start-up may take before the test fails: a guard
/// against a hung server, not a speed assertion.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------- support

impl Scratch {
    /// Writes an executable shell script.
    fn script(&self, name: &str, body: &str) -> PathBuf {
        let path = self.path(name);
        fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        path
    }
}

/// Compiles the C example auth plugin against the SDK header.
fn c_static_auth(dir: &Scratch) -> PathBuf {
    build_c(dir, "c-static-auth/static_auth.c", "libstatic_auth.so", &[])
}

/// A RON string literal for `path`.
fn ron_path(path: &Path) -> String {
    format!("{:?}", path.display().to_string())
}

/// Writes a maildir for `user` under `root` with `messages` in `cur/`, in
/// this order.
fn maildir(root: &Path, messages: &[&[u8]]) {
    for sub in ["cur", "new", "tmp"] {
        fs::create_dir_all(root.join(sub)).unwrap();
    }
    for (i, message) in messages.iter().enumerate() {
        let name = format!("{}.M{i}.e2e:2,S", 1_700_000_000 + i);
        fs::write(root.join("cur").join(name), message).unwrap();
    }
}

/// A running `pop3d --config`; killed when dropped.
struct Server {
    /// The process.
    child: Child,
    /// Where it listens.
    addr: SocketAddr,
    /// Its stderr, for failure messages.
    log: PathBuf,
}

impl Server {
    /// Starts pop3d with `auth` and `store` sections on a free loopback
    /// port and waits for its greeting.
    fn start(dir: &Scratch, auth: &str, store: &str) -> Server {
        for _attempt in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let config = format!(
                "(\n    listen: [(addr: \"127.0.0.1:{port}\")],\n    allow_root: true,\n    \
                 limits: (auth_failure_delay_ms: 50),\n    auth: {auth},\n    store: {store},\n)\n"
            );
            let config_path = dir.path("pop3d.ron");
            fs::write(&config_path, &config).unwrap();
            let log = dir.path("pop3d.log");
            let child = Command::new(env!("CARGO_BIN_EXE_pop3d"))
                .arg("--config")
                .arg(&config_path)
                .env("RUST_LOG", "info")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(fs::File::create(&log).unwrap())
                .spawn()
                .unwrap();
            let mut server = Server {
                child,
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                log,
            };
            if server.wait_for_greeting() {
                return server;
            }
            // Port taken in between: try another.
        }
        panic!("pop3d did not start in 5 attempts");
    }

    /// True once the server greets; false if it exited (a taken port).
    fn wait_for_greeting(&mut self) -> bool {
        let deadline = Instant::now() + IO_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let log = self.log();
                assert!(
                    log.contains("bind") || log.contains("in use"),
                    "pop3d exited ({status}) at start-up:\n{log}"
                );
                return false;
            }
            if TcpStream::connect(self.addr).is_ok() {
                return true;
            }
            assert!(
                Instant::now() < deadline,
                "pop3d did not listen within {IO_TIMEOUT:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn connect(&self) -> Client {
        let stream = TcpStream::connect(self.addr).unwrap();
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut client = Client {
            reader: BufReader::new(stream.try_clone().unwrap()),
            stream,
        };
        let greeting = client.line();
        assert!(greeting.starts_with("+OK"), "greeting: {greeting}");
        client
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the process is still running.
    fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A raw POP3 client.
struct Client {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Client {
    /// One reply line, without its CRLF.
    fn line(&mut self) -> String {
        let mut line = Vec::new();
        self.reader.read_until(b'\n', &mut line).unwrap();
        assert!(line.ends_with(b"\r\n"), "not a CRLF line: {line:?}");
        line.truncate(line.len() - 2);
        String::from_utf8(line).unwrap()
    }

    /// Sends one command and returns the first reply line.
    fn command(&mut self, command: &str) -> String {
        self.stream
            .write_all(format!("{command}\r\n").as_bytes())
            .unwrap();
        self.line()
    }

    /// Sends a command expecting `+OK`, returns the reply line.
    fn ok(&mut self, command: &str) -> String {
        let reply = self.command(command);
        assert!(reply.starts_with("+OK"), "{command}: {reply}");
        reply
    }

    /// The body of a multi-line reply, raw (still dot-stuffed, CRLF line
    /// ends), without the terminating `.` line.
    fn body(&mut self) -> Vec<u8> {
        let mut body = Vec::new();
        loop {
            let mut line = Vec::new();
            self.reader.read_until(b'\n', &mut line).unwrap();
            assert!(
                !line.is_empty(),
                "connection closed inside a multi-line reply"
            );
            if line == b".\r\n" {
                return body;
            }
            body.extend_from_slice(&line);
        }
    }

    fn login(&mut self, user: &str, password: &str) -> String {
        self.ok(&format!("USER {user}"));
        self.command(&format!("PASS {password}"))
    }

    /// QUIT, and the server closes the connection.
    fn quit(mut self) {
        self.ok("QUIT");
        let mut rest = Vec::new();
        self.reader.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "bytes after QUIT: {rest:?}");
    }
}

// ---------------------------------------------------------------- tests

#[test]
fn c_auth_plugin_and_maildir_library_serve_a_real_session() {
    let dir = Scratch::new("c-auth-maildir");
    let auth_library = c_static_auth(&dir);
    let maildir_library = rust_plugin("libpop3d_maildir.so");
    let first: &[u8] = b"Subject: one\n\nfirst body\n.dotted line\n";
    let second: &[u8] = b"Subject: two\r\n\r\nsecond body, no final newline";
    maildir(&dir.path("mail/alice"), &[first, second]);
    let server = Server::start(
        &dir,
        &format!("(plugin: {}, config: ())", ron_path(&auth_library)),
        &format!(
            "(plugin: {}, config: (root: {}))",
            ron_path(&maildir_library),
            ron_path(&dir.path("mail/%u"))
        ),
    );

    let mut client = server.connect();
    // static-auth matches names case-insensitively and hands the store its
    // canonical spelling: the maildir of "alice" is found for "ALICE".
    assert_eq!(
        client.login("ALICE", "wonderland"),
        "+OK Logged in, 2 messages (89 octets)"
    );
    assert_eq!(client.ok("STAT"), "+OK 2 89");
    client.ok("LIST");
    assert_eq!(client.body(), b"1 42\r\n2 47\r\n");
    assert_eq!(client.ok("RETR 1"), "+OK 42 octets");
    assert_eq!(
        client.body(),
        b"Subject: one\r\n\r\nfirst body\r\n..dotted line\r\n"
    );
    assert_eq!(client.ok("RETR 2"), "+OK 47 octets");
    assert_eq!(
        client.body(),
        b"Subject: two\r\n\r\nsecond body, no final newline\r\n"
    );
    client.quit();

    let mut wrong = server.connect();
    assert!(wrong.login("alice", "nope").starts_with("-ERR [AUTH]"));
    let log = server.log();
    assert!(log.contains("libpop3d_maildir.so"), "{log}");
}

#[test]
fn rust_dir_store_library_serves_a_session_with_the_built_in_passwd_file() {
    let dir = Scratch::new("dir-store");
    let store_library = rust_plugin("libdir_store.so");
    fs::write(dir.path("passwd"), "carol:{PLAIN}pw\n").unwrap();
    fs::create_dir_all(dir.path("spool/carol")).unwrap();
    fs::write(dir.path("spool/carol/001-a"), b"Subject: a\n\nA\n").unwrap();
    fs::write(dir.path("spool/carol/002-b"), b"Subject: b\n\nB\n").unwrap();
    let server = Server::start(
        &dir,
        &format!(
            "(plugin: \"passwd-file\", config: (path: {}))",
            ron_path(&dir.path("passwd"))
        ),
        &format!(
            "(plugin: {}, config: (root: {}))",
            ron_path(&store_library),
            ron_path(&dir.path("spool"))
        ),
    );

    let mut client = server.connect();
    assert!(client.login("carol", "pw").starts_with("+OK"));
    client.ok("UIDL");
    assert_eq!(client.body(), b"1 001-a\r\n2 002-b\r\n");
    assert_eq!(client.ok("RETR 2"), "+OK 17 octets");
    assert_eq!(client.body(), b"Subject: b\r\n\r\nB\r\n");
    client.ok("DELE 1");
    client.quit();
    assert!(!dir.path("spool/carol/001-a").exists());
    assert!(dir.path("spool/carol/002-b").exists());
}

#[test]
fn a_panicking_store_fails_one_session_and_the_server_carries_on() {
    let dir = Scratch::new("panicky");
    let store_library = rust_plugin("libpanicky_store.so");
    fs::write(dir.path("passwd"), "erin:{PLAIN}pw\nfrank:{PLAIN}pw2\n").unwrap();
    let mut server = Server::start(
        &dir,
        &format!(
            "(plugin: \"passwd-file\", config: (path: {}))",
            ron_path(&dir.path("passwd"))
        ),
        &format!("(plugin: {}, config: ())", ron_path(&store_library)),
    );

    let mut erin = server.connect();
    let reply = erin.login("erin", "pw");
    assert!(reply.starts_with("-ERR [SYS/TEMP]"), "{reply}");
    // The session goes on after the failed login.
    erin.ok("CAPA");
    erin.body();
    erin.quit();

    // Other connections are answered: greeting, CAPA, the auth backend
    // still tells wrong passwords apart, and the disabled store fails
    // temporarily without being called again.
    let mut frank = server.connect();
    frank.ok("CAPA");
    assert!(!frank.body().is_empty());
    assert!(frank.login("frank", "wrong").starts_with("-ERR [AUTH]"));
    let reply = frank.login("frank", "pw2");
    assert!(reply.starts_with("-ERR [SYS/TEMP]"), "{reply}");
    frank.quit();
    assert!(server.is_running());

    let log = server.log();
    assert_eq!(
        log.matches("panicked and is disabled").count(),
        1,
        "the panic is logged once:\n{log}"
    );
    assert!(
        log.contains("panicky-store panics in open (user erin)"),
        "{log}"
    );
}

/// A checkpassword in shell. It reads fd 3; alice/secret gets a HOME in
/// the scratch directory and runs the next program; some passwords pick
/// another outcome; anything else exits 1.
const CHECKER: &str = r#"
input=$(tr '\0' '\n' <&3)
user=$(printf '%s\n' "$input" | sed -n 1p)
pass=$(printf '%s\n' "$input" | sed -n 2p)
case "$pass" in
  hang) exec sleep 60 ;;
  crash) kill -SEGV $$ ;;
  busy) exit 111 ;;
esac
if [ "$user" = alice ] && [ "$pass" = secret ]; then
  HOME="$(dirname "$0")/home/alice"
  export HOME
  exec "$@"
fi
exit 1
"#;

#[test]
fn checkpassword_helpers_log_in_refuse_time_out_and_crash() {
    let dir = Scratch::new("checkpassword");
    let checker = dir.script("checker", CHECKER);
    maildir(
        &dir.path("home/alice/Maildir"),
        &[b"Subject: hi\n\nhello\n"],
    );
    let server = Server::start(
        &dir,
        &format!(
            "(plugin: \"checkpassword\", config: (program: {}, args: [\"/usr/bin/env\"], \
             timeout_ms: 500, max_concurrent: 4))",
            ron_path(&checker)
        ),
        "(plugin: \"maildir\", config: (root: \"~/Maildir\"))",
    );

    // Success: the home the next program printed finds the maildir.
    let mut alice = server.connect();
    assert!(alice.login("alice", "secret").starts_with("+OK"));
    assert_eq!(alice.ok("STAT"), "+OK 1 22");
    alice.quit();

    for (password, expected) in [
        ("wrong", "-ERR [AUTH]"),
        ("hang", "-ERR [SYS/TEMP]"),
        ("crash", "-ERR [SYS/TEMP]"),
        ("busy", "-ERR [SYS/TEMP]"),
    ] {
        let mut client = server.connect();
        let reply = client.login("alice", password);
        assert!(reply.starts_with(expected), "{password}: {reply}");
        client.quit();
    }

    // And the server still logs people in afterwards.
    let mut again = server.connect();
    assert!(again.login("alice", "secret").starts_with("+OK"));
    again.quit();
    let log = server.log();
    assert!(log.contains("did not answer within 500 ms"), "{log}");
    assert!(log.contains("killed by signal 11"), "{log}");
    assert!(
        !log.contains("secret"),
        "a password reached the log:\n{log}"
    );
}
