//! A real pop3d for the TLS suites: a certificate made on the spot
//! (rcgen), a passwd file, maildirs and a RON config in a temporary
//! directory, one plain listener (which offers STLS) and one implicit-TLS
//! listener.
//!
//! Shared by `tests/tls.rs` and `tests/loadgen_tls.rs` through `#[path]`
//! (with `support/scratch.rs` as the crate's `scratch` module); each suite
//! adds its own client helpers to [`TlsServer`].
#![allow(dead_code)] // each suite uses part of it

pub use crate::scratch::TempDir;
use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How long a test waits for the server to start or to log something. This
/// bounds a failing test; it is not a performance assertion.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// A user of the fixture and the messages in their maildir's `cur/`.
pub struct Mailbox<'a> {
    pub user: &'a str,
    pub password: &'a str,
    pub messages: &'a [&'a [u8]],
}

/// A running pop3d with its files; killed when dropped.
pub struct TlsServer {
    pub dir: TempDir,
    child: Child,
    /// Plain POP3 (STLS offered).
    pub plain: SocketAddr,
    /// Implicit TLS (POP3S).
    pub implicit: SocketAddr,
}

impl TlsServer {
    /// Starts pop3d for `mailboxes`; `extra` is inserted into the config's
    /// top level (say `allow_plaintext_auth: Never,`).
    pub fn start(label: &str, mailboxes: &[Mailbox<'_>], extra: &str) -> TlsServer {
        let dir = TempDir::new(&format!("tls-{label}"));
        write_certificate(&dir.path, "cert");
        let mut passwd = String::new();
        for mailbox in mailboxes {
            passwd.push_str(&format!(
                "{}:{{PLAIN}}{}::::::\n",
                mailbox.user, mailbox.password
            ));
            let maildir = dir.path.join(format!("mail/{}/Maildir", mailbox.user));
            for sub in ["cur", "new", "tmp"] {
                fs::create_dir_all(maildir.join(sub)).unwrap();
            }
            for (i, message) in mailbox.messages.iter().enumerate() {
                let name = format!("100000000{}.M{}P1.host:2,", i + 1, i + 1);
                fs::write(maildir.join("cur").join(name), message).unwrap();
            }
        }
        fs::write(dir.path.join("passwd"), passwd).unwrap();
        let plain = free_port();
        let implicit = free_port();
        let config = dir.path.join("pop3d.ron");
        fs::write(
            &config,
            format!(
                "(\n    listen: [(addr: \"{plain}\"), (addr: \"{implicit}\", implicit_tls: true)],\n    \
                 tls: Some((cert: \"{cert}\", key: \"{key}\")),\n    allow_root: true,\n    \
                 {extra}\n    \
                 auth: (plugin: \"passwd-file\", config: (path: \"{passwd}\")),\n    \
                 store: (plugin: \"maildir\", config: (root: \"{root}\")),\n)\n",
                cert = dir.path.join("cert.pem").display(),
                key = dir.path.join("cert.key").display(),
                passwd = dir.path.join("passwd").display(),
                root = dir.path.join("mail/%u/Maildir").display(),
            ),
        )
        .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_pop3d"))
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.path.join("pop3d.log")).unwrap())
            .spawn()
            .unwrap();
        let mut server = TlsServer {
            dir,
            child,
            plain,
            implicit,
        };
        server.wait_until_accepting();
        server
    }

    fn wait_until_accepting(&mut self) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if TcpStream::connect(self.plain).is_ok() && TcpStream::connect(self.implicit).is_ok() {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("pop3d exited ({status}) before accepting:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "pop3d did not start:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path.join("pop3d.log")).unwrap_or_default()
    }

    /// The certificate the server presents (PEM), for clients to trust.
    pub fn cert_path(&self) -> PathBuf {
        self.dir.path.join("cert.pem")
    }

    /// Waits until the log contains `needle` (the server logs asynchronously
    /// to the test's actions).
    pub fn wait_for_log(&self, needle: &str) {
        let deadline = Instant::now() + PATIENCE;
        while !self.log().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "log never showed {needle:?}:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Signals the server (`SIGHUP` to reload, say).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} failed");
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes a fresh self-signed certificate for 127.0.0.1 and localhost as
/// `NAME.pem` and `NAME.key` in `dir`, returning the certificate's DER.
/// Written then renamed, as an operator's renewal tool would, so a server
/// reloading never reads a half-written file.
pub fn write_certificate(dir: &Path, name: &str) -> Vec<u8> {
    let pair =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    let (pem, key) = (format!("{name}.pem"), format!("{name}.key"));
    fs::write(dir.join(format!("{pem}.new")), pair.cert.pem()).unwrap();
    fs::write(
        dir.join(format!("{key}.new")),
        pair.signing_key.serialize_pem(),
    )
    .unwrap();
    fs::rename(dir.join(format!("{key}.new")), dir.join(&key)).unwrap();
    fs::rename(dir.join(format!("{pem}.new")), dir.join(&pem)).unwrap();
    pair.cert.der().to_vec()
}

/// A loopback address free right now; the small window before pop3d binds
/// it is acceptable here.
pub fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}
