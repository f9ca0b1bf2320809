//! Shared helpers for the integration tests: scratch directories, mbox
//! builders, the host's transmission rule restated independently, and
//! reading a maildrop the way the host does.
#![allow(dead_code)]

use pop3d_mbox::MboxStore;
use pop3d_plugin_api::{Error, Maildrop, StorePlugin, UserInfo};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

/// A directory under the system temp dir, removed when dropped.
pub struct TempDir(PathBuf);

static NEXT: AtomicU64 = AtomicU64::new(0);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!(
            "pop3d-mbox-it-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The mbox of `user` under the `(path: "<dir>/%u")` config.
    pub fn mbox(&self, user: &str) -> PathBuf {
        self.0.join(user)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The bytes the host sends for `message` (before dot-stuffing): bare LF
/// becomes CRLF, and a non-empty message not ending in LF gets a CRLF.
pub fn transmitted(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + message.len() / 16 + 2);
    let mut previous = None;
    for &byte in message {
        if byte == b'\n' && previous != Some(b'\r') {
            out.push(b'\r');
        }
        out.push(byte);
        previous = Some(byte);
    }
    if !message.is_empty() && previous != Some(b'\n') {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// One message to put in an mbox: its separator line and its content
/// (which must end in LF), as a delivery agent would store it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub separator: String,
    pub content: Vec<u8>,
}

impl Stored {
    /// A message numbered `n` with a unique `Message-ID:` (so its popa3d
    /// UIDL is unique) and a body of `body_len` bytes.
    pub fn numbered(n: usize, body_len: usize) -> Stored {
        let mut content = format!(
            "Return-Path: <sender{n}@example.org>\nReceived: from relay by mx.example.org with id {n}\n\
             Message-ID: <{n}@example.org>\nFrom: sender{n}@example.org\nSubject: message {n}\n\n"
        )
        .into_bytes();
        let line = format!("body of message {n}, filler filler filler filler\n");
        while content.len() < body_len {
            content.extend_from_slice(line.as_bytes());
        }
        Stored {
            separator: format!("From sender{n}@example.org Mon Jan  1 00:00:00 2024\n"),
            content,
        }
    }

    /// The stored form: separator, content, empty line.
    pub fn bytes(&self) -> Vec<u8> {
        let mut out = self.separator.clone().into_bytes();
        out.extend_from_slice(&self.content);
        out.push(b'\n');
        out
    }
}

/// An mbox holding `messages` in order.
pub fn mbox_bytes(messages: &[Stored]) -> Vec<u8> {
    messages.iter().flat_map(Stored::bytes).collect()
}

/// A store reading `<dir>/%u`, with `extra` config keys appended.
pub fn store(dir: &TempDir, extra: &str) -> MboxStore {
    let config = format!("(path: \"{}/%u\", {extra})", dir.path().display());
    MboxStore::create(&config).unwrap_or_else(|e| panic!("config {config}: {e}"))
}

pub fn user(name: &str) -> UserInfo {
    UserInfo {
        name: name.into(),
        home: None,
        extra: Vec::new(),
    }
}

/// Reads message `index` in 64 KiB reads, as the host does.
pub fn read_message<M: Maildrop>(maildrop: &mut M, index: usize) -> Result<Vec<u8>, Error> {
    let mut reader = maildrop.open_message(index)?;
    let mut out = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = reader.read(&mut chunk).map_err(Error::from)?;
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&chunk[..n]);
    }
}

/// Every message of the maildrop with its UIDL, checking on the way that
/// each reported size is what the host would transmit.
pub fn read_all<M: Maildrop>(maildrop: &mut M) -> Vec<(String, Vec<u8>)> {
    let listing = maildrop.messages().to_vec();
    let mut out = Vec::new();
    for (index, info) in listing.iter().enumerate() {
        let bytes = read_message(maildrop, index).unwrap();
        assert_eq!(
            info.wire_size,
            transmitted(&bytes).len() as u64,
            "message {index}: reported size differs from what the host sends"
        );
        out.push((info.uid.clone(), bytes));
    }
    out
}

/// Runs a program from a Debian package the test needs, with a clear
/// message when it is missing.
pub fn command(program: &str, package: &str) -> Command {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "this test needs `{program}`: apt-get install -y {package}"
    );
    Command::new(program)
}

/// A Python process holding an fcntl (`lockf`) write lock on `path` until
/// it is dropped.
pub struct FcntlHolder {
    child: Child,
}

impl FcntlHolder {
    pub fn lock(path: &Path) -> FcntlHolder {
        let mut child = command("python3", "python3")
            .arg("-c")
            .arg(
                "import fcntl, sys\n\
                 f = open(sys.argv[1], 'r+')\n\
                 fcntl.lockf(f, fcntl.LOCK_EX)\n\
                 print('locked', flush=True)\n\
                 sys.stdin.read()\n",
            )
            .arg(path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = [0u8; 7];
        child
            .stdout
            .as_mut()
            .unwrap()
            .read_exact(&mut line)
            .unwrap();
        assert_eq!(&line, b"locked\n");
        FcntlHolder { child }
    }
}

impl Drop for FcntlHolder {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}
