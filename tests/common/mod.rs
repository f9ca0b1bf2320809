//! Shared harness for the end-to-end tests: a real `pop3d` binary, real TCP,
//! raw bytes.
//!
//! - [`Fixture`] describes what is on disk before the server starts: users
//!   in a Dovecot-style passwd file, maildirs with messages given as raw
//!   bytes, and config limits.
//! - [`TestServer`] writes the fixture into a fresh temporary directory,
//!   starts `pop3d --config` on a free loopback port, waits for its greeting,
//!   and on drop kills the process and removes the directory. Its log
//!   (stderr, `RUST_LOG=info`) goes to a file tests can read.
//! - [`Client`] is a raw line client with timeouts, so a server that hangs
//!   fails the test instead of hanging it.
//! - [`wire_form`], [`dot_stuff`], [`unstuff`] and [`top_of`] compute what a
//!   stored message must look like on the wire, so tests compare bytes.
//!
//! Backends: the built-in `passwd-file` and `maildir` by default. With
//! `POP3D_TEST_PLUGINS=so` the same plugin crates are loaded from their
//! shared libraries instead (`libpop3d_passwd_file.so`,
//! `libpop3d_maildir.so`, built once per test binary), so the whole suite
//! can run against plugins loaded by path; see [`backend_plugins`].
//!
//! Stores: with `POP3D_TEST_STORE=mbox` the same fixtures are written as
//! one mbox file per user (`<dir>/mail/<user>`, mboxo) and served by the
//! `mbox` store instead of maildirs; see [`StoreKind`]. Byte comparisons
//! go through [`wire_form`], which knows what each store gives back.
//! Helpers that name maildir files ([`TestServer::maildir`],
//! [`TestServer::message_path`], [`TestServer::current_message_path`])
//! exist only for maildir: tests that need them start with
//! [`skip_unless_maildir`].
//!
//! Message numbering: the fixture gives each message a file name whose
//! timestamp and modification time increase in the order messages were
//! added, so a store that numbers by delivery time (name or mtime) numbers
//! them in fixture order. Tests that depend on order keep each user's
//! messages in one folder.

// Each test binary includes this module and uses a different subset of it.
#![allow(dead_code)]

#[path = "../support/plugin_build.rs"]
mod plugin_build;

use std::fmt::Display;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

/// How long any single read or wait may take before the test fails. It is a
/// guard against a hung server, not a speed assertion: generous because the
/// machine running the suite may be busy building other things.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// The failed-login delay every fixture configures unless told otherwise.
pub const AUTH_FAILURE_DELAY_MS: u64 = 200;

/// Distinguishes temporary directories of servers started by one process.
static NEXT_DIR: AtomicU32 = AtomicU32::new(0);

/// Which store the servers of this test run use (`POP3D_TEST_STORE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// One maildir per user (`<dir>/mail/<user>/Maildir`); the default.
    Maildir,
    /// One mbox file per user (`<dir>/mail/<user>`), written as mboxo:
    /// `From ` separator lines, a body line starting `From ` quoted as
    /// `>From `, an empty line after every message.
    Mbox,
}

/// The store of this test run: `POP3D_TEST_STORE` unset, empty or
/// `maildir` is [`StoreKind::Maildir`], `mbox` is [`StoreKind::Mbox`].
pub fn store_kind() -> StoreKind {
    match std::env::var("POP3D_TEST_STORE").as_deref() {
        Err(_) | Ok("") | Ok("maildir") => StoreKind::Maildir,
        Ok("mbox") => StoreKind::Mbox,
        Ok(other) => panic!("POP3D_TEST_STORE={other:?}: use \"maildir\" or \"mbox\""),
    }
}

/// True (after saying so on stderr) when the store is not maildir: a test
/// about maildir files, folders or names calls this first and returns.
pub fn skip_unless_maildir(why: &str) -> bool {
    if store_kind() == StoreKind::Maildir {
        return false;
    }
    eprintln!("skipped under POP3D_TEST_STORE=mbox: {why}");
    true
}

/// What the store gives back for a stored message, before the wire
/// conversion. Maildir: the bytes as they are. mbox (mboxo): every line
/// starting `From ` was written as `>From ` and comes back so (mboxo
/// quoting cannot be undone: a `>From ` line in the original also comes
/// back as written), and a message not ending in LF was written with one
/// added (an mbox line cannot be left open), so it comes back with it.
pub fn served_form(raw: &[u8]) -> Vec<u8> {
    match store_kind() {
        StoreKind::Maildir => raw.to_vec(),
        StoreKind::Mbox => mboxo_body(raw),
    }
}

/// `raw` as the fixture writes it into an mbox after its `From ` line:
/// `From ` at a line start quoted as `>From `, and ending in LF unless
/// empty.
fn mboxo_body(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + 16);
    for line in raw.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b"From ") {
            out.push(b'>');
        }
        out.extend_from_slice(line);
    }
    if !out.is_empty() && !out.ends_with(b"\n") {
        out.push(b'\n');
    }
    out
}

/// The `From ` line of the fixture's `i`th message (0-based): the date is
/// the message's delivery time, so every line differs.
fn mbox_from_line(i: usize) -> String {
    format!(
        "From fixture@example.org {}",
        asctime(1_700_000_000 + i as u64)
    )
}

/// `seconds` since the epoch in the asctime form of `From ` lines
/// (`Tue Nov 14 22:13:20 2023`), UTC.
fn asctime(seconds: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = seconds / 86_400;
    let of_day = seconds % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{} {} {:2} {:02}:{:02}:{:02} {year}",
        DAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize],
        day,
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// Where a message file lies in its maildir.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Folder {
    /// `new/`: delivered, never seen by a mail client.
    New,
    /// `cur/` with these flags after `:2,` (e.g. `""` or `"S"`).
    Cur(&'static str),
}

#[derive(Debug, Clone)]
struct StoredMessage {
    user: String,
    folder: Folder,
    bytes: Vec<u8>,
}

/// What exists before the server starts.
#[derive(Debug, Clone)]
pub struct Fixture {
    /// `(name, password)` pairs written to the passwd file.
    users: Vec<(String, String)>,
    /// Messages in the order they were added (their delivery order).
    messages: Vec<StoredMessage>,
    /// `limits` keys of the config; defaults set in [`Fixture::new`], a later
    /// value for the same key replaces the earlier one.
    limits: Vec<(String, String)>,
    /// `RUST_LOG` of the server.
    log_filter: String,
    /// Top-level config lines (`key: value`) besides listen, limits and the
    /// backends.
    top_level: Vec<(String, String)>,
    /// Home directories for the passwd file's home field, by user;
    /// `{dir}` stands for the server's directory.
    homes: Vec<(String, String)>,
    /// Another maildir `root` (maildir only); `{dir}` stands for the
    /// server's directory. The fixture's messages are still written to
    /// `<dir>/mail/<user>/Maildir`.
    store_root: Option<String>,
    /// More `key: value` entries for the store's config section.
    store_options: Vec<String>,
    /// The host part of the listen address (`127.0.0.1` unless set); the
    /// tests still connect to 127.0.0.1.
    listen_host: Option<String>,
    /// A soft open-file limit to start the server with (through `sh -c
    /// 'ulimit -Sn N'`), to see that it raises it.
    soft_open_file_limit: Option<u64>,
}

impl Default for Fixture {
    fn default() -> Self {
        Self::new()
    }
}

impl Fixture {
    /// No users, no messages, the limits the task description prescribes.
    pub fn new() -> Self {
        Fixture {
            users: Vec::new(),
            messages: Vec::new(),
            limits: vec![
                (
                    "auth_failure_delay_ms".into(),
                    AUTH_FAILURE_DELAY_MS.to_string(),
                ),
                ("idle_timeout_secs".into(), "600".into()),
                ("login_timeout_secs".into(), "60".into()),
                ("max_pipelined_lines".into(), "128".into()),
            ],
            log_filter: std::env::var("POP3D_TEST_LOG").unwrap_or_else(|_| "info".into()),
            top_level: Vec::new(),
            homes: Vec::new(),
            store_root: None,
            store_options: Vec::new(),
            listen_host: None,
            soft_open_file_limit: None,
        }
    }

    /// Gives `user` a home directory in the passwd file (`{dir}` is
    /// replaced by the server's directory).
    pub fn home(mut self, user: &str, home: &str) -> Self {
        self.homes.push((user.into(), home.into()));
        self
    }

    /// Sets the maildir store's `root` template (`{dir}` is replaced by
    /// the server's directory). Maildir only.
    pub fn store_root(mut self, root: &str) -> Self {
        self.store_root = Some(root.into());
        self
    }

    /// Adds `key: value` to the store's config section, e.g.
    /// `uidl_format: "%08Xu%08Xv"`.
    pub fn store_option(mut self, option: &str) -> Self {
        self.store_options.push(option.into());
        self
    }

    /// Adds a user with a `{PLAIN}` password and an empty maildir.
    pub fn user(mut self, name: &str, password: &str) -> Self {
        self.users.push((name.into(), password.into()));
        self
    }

    /// Adds a message to `user`'s `new/`.
    pub fn message(self, user: &str, bytes: impl Into<Vec<u8>>) -> Self {
        self.message_in(user, Folder::New, bytes)
    }

    /// Adds a message to `user`'s maildir in `folder`.
    pub fn message_in(mut self, user: &str, folder: Folder, bytes: impl Into<Vec<u8>>) -> Self {
        self.messages.push(StoredMessage {
            user: user.into(),
            folder,
            bytes: bytes.into(),
        });
        self
    }

    /// Sets one key of the config's `limits` section.
    pub fn limit(mut self, key: &str, value: impl Display) -> Self {
        self.limits.retain(|(k, _)| k != key);
        self.limits.push((key.into(), value.to_string()));
        self
    }

    /// Starts the server with this soft open-file limit.
    pub fn soft_open_file_limit(mut self, limit: u64) -> Self {
        self.soft_open_file_limit = Some(limit);
        self
    }

    /// Listens on `host` (say `[::]`, dual-stack) instead of 127.0.0.1.
    pub fn listen_host(mut self, host: &str) -> Self {
        self.listen_host = Some(host.into());
        self
    }

    /// Sets a top-level key of the config (`value` as RON text); a later
    /// value for the same key replaces the earlier one.
    pub fn top_level(mut self, key: &str, value: impl Display) -> Self {
        self.top_level.retain(|(k, _)| k != key);
        self.top_level.push((key.into(), value.to_string()));
        self
    }

    /// Sets the server's `RUST_LOG`.
    pub fn log_filter(mut self, filter: &str) -> Self {
        self.log_filter = filter.into();
        self
    }

    /// The raw bytes of `user`'s messages in delivery order (message 1
    /// first).
    pub fn messages_of(&self, user: &str) -> Vec<Vec<u8>> {
        self.messages
            .iter()
            .filter(|m| m.user == user)
            .map(|m| m.bytes.clone())
            .collect()
    }
}

/// A running `pop3d` with its own directory. Dropping it kills the process
/// and removes the directory (kept when `POP3D_TEST_KEEP` is set).
pub struct TestServer {
    /// The server process; `None` between a stop and a restart.
    child: Option<Child>,
    /// Loopback port the current process listens on.
    port: u16,
    /// Temporary directory holding config, passwd, maildirs and the log.
    dir: PathBuf,
    /// What was written, for tests that compare against it.
    fixture: Fixture,
    /// Current path of each message file per user, in delivery order
    /// (maildir); for mbox, the path of the user's mbox for each message.
    paths: Vec<(String, PathBuf)>,
    /// The `From ` line of each message per user, in delivery order
    /// (mbox only): what identifies a message in the file.
    from_lines: Vec<(String, String)>,
    /// Names this process's config and log files, so a second server on
    /// the same directory keeps its own.
    instance: String,
    /// Whether dropping this server removes the directory (a second
    /// instance leaves it to the first).
    owns_dir: bool,
}

impl TestServer {
    /// Writes `fixture` to a new directory and starts the server on it.
    pub fn start(fixture: Fixture) -> TestServer {
        let dir = std::env::temp_dir().join(format!(
            "pop3d-e2e-{}-{}",
            std::process::id(),
            NEXT_DIR.fetch_add(1, Ordering::Relaxed)
        ));
        if dir.exists() {
            fs::remove_dir_all(&dir).unwrap();
        }
        fs::create_dir_all(&dir).unwrap();
        let mut passwd = String::new();
        for (name, password) in &fixture.users {
            let home = fixture
                .homes
                .iter()
                .find(|(user, _)| user == name)
                .map(|(_, home)| home.replace("{dir}", &dir.display().to_string()))
                .unwrap_or_default();
            passwd.push_str(&format!("{name}:{{PLAIN}}{password}::::{home}::\n"));
        }
        fs::write(dir.join("passwd"), passwd).unwrap();
        let (paths, from_lines) = match store_kind() {
            StoreKind::Maildir => (write_maildirs(&dir, &fixture), Vec::new()),
            StoreKind::Mbox => write_mboxes(&dir, &fixture),
        };

        let mut server = TestServer {
            child: None,
            port: 0,
            dir,
            fixture,
            paths,
            from_lines,
            instance: "server".into(),
            owns_dir: true,
        };
        server.spawn();
        server
    }

    /// A second server process on the same directory (same users and
    /// maildirs, its own port, config and log). It kills its process on
    /// drop but leaves the directory to `self`.
    pub fn start_second_instance(&self) -> TestServer {
        let mut second = TestServer {
            child: None,
            port: 0,
            dir: self.dir.clone(),
            fixture: self.fixture.clone(),
            paths: self.paths.clone(),
            from_lines: self.from_lines.clone(),
            instance: "second".into(),
            owns_dir: false,
        };
        second.spawn();
        second
    }

    /// Starts the process on a free port, retrying with another port if the
    /// one picked was taken in between by someone else.
    fn spawn(&mut self) {
        const ATTEMPTS: usize = 5;
        for attempt in 1..=ATTEMPTS {
            self.port = free_port();
            let config = self.config_text();
            let config_path = self.dir.join(format!("{}.ron", self.instance));
            fs::write(&config_path, config).unwrap();
            let log = fs::File::options()
                .create(true)
                .append(true)
                .open(self.log_path())
                .unwrap();
            let mut command = match self.fixture.soft_open_file_limit {
                None => Command::new(env!("CARGO_BIN_EXE_pop3d")),
                Some(limit) => {
                    let mut shell = Command::new("/bin/sh");
                    shell
                        .arg("-c")
                        .arg(format!("ulimit -Sn {limit} && exec \"$0\" \"$@\""))
                        .arg(env!("CARGO_BIN_EXE_pop3d"));
                    shell
                }
            };
            let child = command
                .arg("--config")
                .arg(&config_path)
                .env("RUST_LOG", &self.fixture.log_filter)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("cannot run the pop3d binary");
            self.child = Some(child);
            match self.wait_ready() {
                Ok(()) => return,
                Err(status) if attempt < ATTEMPTS => {
                    eprintln!(
                        "pop3d exited early ({status}) on port {}; retrying",
                        self.port
                    );
                }
                Err(status) => panic!(
                    "pop3d did not start ({status}) after {ATTEMPTS} attempts; its log:\n{}",
                    self.log()
                ),
            }
        }
    }

    fn config_text(&self) -> String {
        let limits = self
            .fixture
            .limits
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join(", ");
        let (auth, store) = backend_plugins();
        // The suite runs as root in CI; the fixture's files belong to the
        // test, so serving them as root is what is meant (a test may set
        // `user` to see privileges dropped).
        let mut top_level = vec![("allow_root".to_string(), "true".to_string())];
        for (key, value) in &self.fixture.top_level {
            top_level.retain(|(k, _)| k != key);
            top_level.push((key.clone(), value.clone()));
        }
        let top_level: String = top_level
            .iter()
            .map(|(k, v)| format!("    {k}: {v},\n"))
            .collect();
        let dir = self.dir.display().to_string();
        let mut store_config = match store_kind() {
            StoreKind::Maildir => match &self.fixture.store_root {
                Some(root) => format!("(root: {:?}", root.replace("{dir}", &dir)),
                None => format!("(root: \"{dir}/mail/%u/Maildir\""),
            },
            StoreKind::Mbox => format!("(path: \"{dir}/mail/%u\""),
        };
        for option in &self.fixture.store_options {
            store_config.push_str(", ");
            store_config.push_str(option);
        }
        store_config.push(')');
        format!(
            "(\n    listen: [(addr: \"{host}:{port}\")],\n{top_level}    limits: ({limits}),\n    auth: (plugin: {auth:?}, config: (path: \"{passwd}\")),\n    store: (plugin: {store:?}, config: {store_config}),\n)\n",
            host = self.fixture.listen_host.as_deref().unwrap_or("127.0.0.1"),
            port = self.port,
            passwd = self.dir.join("passwd").display(),
        )
    }

    /// Waits until the server greets on its port. `Err` carries the exit
    /// status if the process ended first; a server that neither greets nor
    /// exits fails the test.
    fn wait_ready(&mut self) -> Result<(), ExitStatus> {
        let deadline = Instant::now() + IO_TIMEOUT;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                return Err(status);
            }
            if let Ok(stream) = TcpStream::connect_timeout(&self.addr(), Duration::from_millis(500))
            {
                let mut probe = Client::from_stream(stream);
                if let Ok(Some(line)) = probe.try_read_line() {
                    assert!(
                        line.starts_with(b"+OK"),
                        "greeting is not +OK: {:?}",
                        String::from_utf8_lossy(&line)
                    );
                    // Leave cleanly and wait for the close, so the probe no
                    // longer counts against per-IP limits when the test runs.
                    probe.send(b"QUIT\r\n");
                    let _ = probe.stream.set_read_timeout(Some(Duration::from_secs(5)));
                    let mut sink = Vec::new();
                    let _ = probe.stream.read_to_end(&mut sink);
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "pop3d did not greet on port {} within {IO_TIMEOUT:?}; its log:\n{}",
                    self.port,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Server process id (for `/proc`).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server is not running").id()
    }

    /// A connection whose greeting has not been read yet.
    pub fn connect(&self) -> Client {
        Client::connect(self.addr())
    }

    /// A connection past the greeting, logged in as `user`.
    pub fn login(&self, user: &str, password: &str) -> Client {
        let mut client = self.connect();
        client.greeting();
        client.ok(&format!("USER {user}"));
        client.ok(&format!("PASS {password}"));
        client
    }

    /// Logs in, retrying while the answer is `-ERR [IN-USE]`: a session
    /// that ended by a dropped connection releases its maildrop a moment
    /// after the client sees the close.
    pub fn login_when_released(&self, user: &str, password: &str) -> Client {
        let deadline = Instant::now() + IO_TIMEOUT;
        loop {
            let mut client = self.connect();
            client.greeting();
            client.ok(&format!("USER {user}"));
            let reply = client.command(&format!("PASS {password}"));
            if reply.starts_with("+OK") {
                return client;
            }
            assert!(
                reply.starts_with("-ERR [IN-USE]"),
                "login of {user} failed with: {reply}"
            );
            assert!(
                Instant::now() < deadline,
                "maildrop of {user} still in use after {IO_TIMEOUT:?}"
            );
            drop(client);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Everything the server has logged so far (all runs of it).
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&fs::read(self.log_path()).unwrap_or_default()).into_owned()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join(format!("{}.log", self.instance))
    }

    /// The server's temporary directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `user`'s maildir (the directory holding `cur`, `new`, `tmp`).
    /// Maildir only: see [`skip_unless_maildir`].
    pub fn maildir(&self, user: &str) -> PathBuf {
        assert_maildir("TestServer::maildir");
        maildir_of(&self.dir, user)
    }

    /// Creates an empty maildrop for `user` (a maildir with `cur`, `new`
    /// and `tmp`, or an empty mbox file), as an operator adding a user
    /// would.
    pub fn create_empty_maildrop(&self, user: &str) {
        match store_kind() {
            StoreKind::Maildir => {
                for sub in ["cur", "new", "tmp"] {
                    fs::create_dir_all(maildir_of(&self.dir, user).join(sub)).unwrap();
                }
            }
            StoreKind::Mbox => fs::write(self.dir.join("mail").join(user), b"").unwrap(),
        }
    }

    /// `user`'s mbox file (mbox only).
    pub fn mbox(&self, user: &str) -> PathBuf {
        assert_eq!(
            store_kind(),
            StoreKind::Mbox,
            "TestServer::mbox is for mbox runs"
        );
        self.dir.join("mail").join(user)
    }

    /// The fixture the server was started with.
    pub fn fixture(&self) -> &Fixture {
        &self.fixture
    }

    /// Path of `user`'s message `n` (1-based, delivery order) as the fixture
    /// wrote it (see [`TestServer::current_message_path`] for where it is
    /// now).
    pub fn message_path(&self, user: &str, n: usize) -> PathBuf {
        assert_maildir("TestServer::message_path");
        self.paths
            .iter()
            .filter(|(u, _)| u == user)
            .nth(n - 1)
            .map(|(_, p)| p.clone())
            .unwrap_or_else(|| panic!("fixture has no message {n} for {user}"))
    }

    /// What identifies each message of `user` on disk, sorted: for
    /// maildir the unique names (file name up to the `:2,` info) in `new/`
    /// and `cur/` (a store may move a message from `new/` to `cur/` or
    /// change its flags, the maildir convention; that is not a change a
    /// user sees, so it does not show here); for mbox the `From ` lines of
    /// the user's mbox file.
    pub fn files_on_disk(&self, user: &str) -> Vec<String> {
        let mut names: Vec<String> = match store_kind() {
            StoreKind::Maildir => self
                .message_files(user)
                .iter()
                .map(|p| unique_name(p))
                .collect(),
            StoreKind::Mbox => mbox_from_lines(&self.dir.join("mail").join(user)),
        };
        names.sort();
        names
    }

    /// Paths of all files in `user`'s `new/` and `cur/`.
    fn message_files(&self, user: &str) -> Vec<PathBuf> {
        let mut paths = Vec::new();
        for sub in ["new", "cur"] {
            for entry in fs::read_dir(self.maildir(user).join(sub)).unwrap() {
                paths.push(entry.unwrap().path());
            }
        }
        paths
    }

    /// Where `user`'s message `n` (fixture numbering) is now, wherever the
    /// store may have moved it; `None` if it was deleted.
    pub fn current_message_path(&self, user: &str, n: usize) -> Option<PathBuf> {
        assert_maildir("TestServer::current_message_path");
        let wanted = unique_name(&self.message_path(user, n));
        self.message_files(user)
            .into_iter()
            .find(|p| unique_name(p) == wanted)
    }

    /// Whether `user`'s message `n` (fixture numbering) is still on disk.
    pub fn message_exists(&self, user: &str, n: usize) -> bool {
        match store_kind() {
            StoreKind::Maildir => self.current_message_path(user, n).is_some(),
            StoreKind::Mbox => {
                let wanted = self
                    .from_lines
                    .iter()
                    .filter(|(u, _)| u == user)
                    .nth(n - 1)
                    .map(|(_, line)| line.clone())
                    .unwrap_or_else(|| panic!("fixture has no message {n} for {user}"));
                mbox_from_lines(&self.dir.join("mail").join(user)).contains(&wanted)
            }
        }
    }

    /// Resident memory of the server process in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("no VmRSS in /proc/PID/status")
    }

    /// Sends a signal (`"TERM"`, `"INT"`, `"HUP"`) to the server.
    pub fn signal(&self, name: &str) {
        // `kill` as a shell builtin: no libc binding needed in the tests.
        let sent = Command::new("sh")
            .arg("-c")
            .arg(format!("kill -{name} {}", self.pid()))
            .status()
            .unwrap();
        assert!(sent.success(), "could not send SIG{name}");
    }

    /// Sends SIGTERM and waits for the process to end.
    pub fn terminate(&mut self) -> ExitStatus {
        self.stop_with("TERM")
    }

    /// Sends the signal `name` and waits for the process to end.
    pub fn stop_with(&mut self, name: &str) -> ExitStatus {
        self.signal(name);
        self.wait_for_exit(&format!("SIG{name}"))
    }

    /// Waits for the process to end by itself (after a signal sent
    /// earlier); `after` names the cause in the failure message.
    pub fn wait_for_exit(&mut self, after: &str) -> ExitStatus {
        let name = after;
        let mut child = self.child.take().expect("server is not running");
        let deadline = Instant::now() + IO_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "pop3d did not exit within {IO_TIMEOUT:?} of {name}; its log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGKILL straight from this process (no `kill` program started
    /// first, so the moment is precise to well under a millisecond) and
    /// waits for the process to end.
    pub fn kill_now(&mut self) {
        let mut child = self.child.take().expect("server is not running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// The config file the server runs with (for `pop3d uidl` and other
    /// commands that take one).
    pub fn config_path(&self) -> PathBuf {
        self.dir.join(format!("{}.ron", self.instance))
    }

    /// Starts the server again after [`TestServer::stop_with`], on the
    /// same directory (a new port).
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "the server is still running");
        self.spawn();
    }

    /// Stops the server with SIGTERM (asserting a clean exit) and starts it
    /// again on the same directory.
    pub fn restart(&mut self) {
        let status = self.terminate();
        assert!(status.success(), "pop3d exited with {status} on SIGTERM");
        self.spawn();
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(60)..];
            eprintln!(
                "--- last lines of the pop3d log ({}) ---\n{}\n---",
                self.log_path().display(),
                tail.join("\n")
            );
        }
        if self.owns_dir && std::env::var_os("POP3D_TEST_KEEP").is_none() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Fails a test that uses a maildir-only helper under another store.
#[track_caller]
fn assert_maildir(helper: &str) {
    assert_eq!(
        store_kind(),
        StoreKind::Maildir,
        "{helper} is about maildir files; start the test with skip_unless_maildir"
    );
}

/// Writes each user's maildir (`cur`, `new`, `tmp`) and the fixture's
/// messages into them, with names and mtimes that increase in fixture
/// order; returns each message's path per user.
fn write_maildirs(dir: &Path, fixture: &Fixture) -> Vec<(String, PathBuf)> {
    for (name, _) in &fixture.users {
        for sub in ["cur", "new", "tmp"] {
            fs::create_dir_all(maildir_of(dir, name).join(sub)).unwrap();
        }
    }
    let mut paths = Vec::new();
    for (i, message) in fixture.messages.iter().enumerate() {
        let seconds = 1_700_000_000 + i as u64;
        let base = format!("{seconds}.M{i}P4242.e2e-host");
        let path = match message.folder {
            Folder::New => maildir_of(dir, &message.user).join("new").join(base),
            Folder::Cur(flags) => maildir_of(dir, &message.user)
                .join("cur")
                .join(format!("{base}:2,{flags}")),
        };
        fs::write(&path, &message.bytes).unwrap();
        let file = fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(seconds))
            .unwrap();
        paths.push((message.user.clone(), path));
    }
    paths
}

/// A user and the path of one of their messages (or their mbox).
type UserPath = (String, PathBuf);

/// Writes each user's mbox (`<dir>/mail/<user>`, empty without messages),
/// mboxo: a `From ` line, the message quoted by [`served_form`]'s rule,
/// an empty line. Returns each message's mbox path and `From ` line per
/// user.
fn write_mboxes(dir: &Path, fixture: &Fixture) -> (Vec<UserPath>, Vec<(String, String)>) {
    let mail = dir.join("mail");
    fs::create_dir_all(&mail).unwrap();
    let mut contents: Vec<(String, Vec<u8>)> = fixture
        .users
        .iter()
        .map(|(name, _)| (name.clone(), Vec::new()))
        .collect();
    let mut paths = Vec::new();
    let mut from_lines = Vec::new();
    for (i, message) in fixture.messages.iter().enumerate() {
        let from_line = mbox_from_line(i);
        let content = match contents.iter_mut().find(|(name, _)| *name == message.user) {
            Some((_, content)) => content,
            None => {
                contents.push((message.user.clone(), Vec::new()));
                &mut contents.last_mut().unwrap().1
            }
        };
        content.extend_from_slice(from_line.as_bytes());
        content.push(b'\n');
        content.extend_from_slice(&mboxo_body(&message.bytes));
        content.push(b'\n');
        paths.push((message.user.clone(), mail.join(&message.user)));
        from_lines.push((message.user.clone(), from_line));
    }
    for (name, content) in contents {
        fs::write(mail.join(name), content).unwrap();
    }
    (paths, from_lines)
}

/// The `From ` separator lines of an mbox file, in file order (every line
/// starting `From ` is one: the fixture quotes them in bodies, and the
/// store copies kept messages verbatim).
fn mbox_from_lines(path: &Path) -> Vec<String> {
    let bytes = fs::read(path).unwrap_or_default();
    bytes
        .split(|&b| b == b'\n')
        .filter(|line| line.starts_with(b"From "))
        .map(|line| String::from_utf8_lossy(line).into_owned())
        .collect()
}

/// A maildir file name without its `:2,flags` info part.
fn unique_name(path: &Path) -> String {
    let name = path.file_name().unwrap().to_string_lossy();
    name.split(':').next().unwrap_or_default().to_owned()
}

fn maildir_of(dir: &Path, user: &str) -> PathBuf {
    dir.join("mail").join(user).join("Maildir")
}

/// A port nobody listens on right now (the kernel's choice for port 0).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

/// A raw POP3 connection. Every read has [`IO_TIMEOUT`]; reaching it fails
/// the test with what was received so far.
pub struct Client {
    stream: TcpStream,
    /// Bytes received but not yet returned, from `start` on.
    pending: Vec<u8>,
    start: usize,
}

/// A positive multi-line reply split into its parts.
#[derive(Debug, Clone)]
pub struct Multiline {
    /// The status line without CRLF.
    pub status: String,
    /// The body as sent (dot-stuffed, CRLF), without the `.` CRLF terminator.
    pub body: Vec<u8>,
}

impl Multiline {
    /// The body's lines without CRLF and with the dot-stuffing undone, as
    /// strings (for LIST, UIDL and CAPA).
    pub fn lines(&self) -> Vec<String> {
        let plain = unstuff(&self.body);
        if plain.is_empty() {
            return Vec::new();
        }
        plain
            .strip_suffix(b"\r\n")
            .expect("body does not end in CRLF")
            .split(|&b| b == b'\n')
            .map(|l| String::from_utf8_lossy(l.strip_suffix(b"\r").unwrap_or(l)).into_owned())
            .collect()
    }
}

impl Client {
    /// Connects to `addr`.
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
            .unwrap_or_else(|e| panic!("cannot connect to pop3d at {addr}: {e}"));
        Client::from_stream(stream)
    }

    fn from_stream(stream: TcpStream) -> Client {
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            stream,
            pending: Vec::new(),
            start: 0,
        }
    }

    /// Sends bytes exactly as given.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("cannot send to pop3d: {e}"));
    }

    /// Sends `line` followed by CRLF.
    pub fn send_line(&mut self, line: &str) {
        self.send(format!("{line}\r\n").as_bytes());
    }

    /// Reads more bytes into `pending`; `Ok(0)` at the end of the stream.
    fn fill(&mut self) -> io::Result<usize> {
        if self.start > 0 && self.start == self.pending.len() {
            self.pending.clear();
            self.start = 0;
        } else if self.start > (1 << 20) {
            self.pending.drain(..self.start);
            self.start = 0;
        }
        let len = self.pending.len();
        self.pending.resize(len + 256 * 1024, 0);
        let result = loop {
            match self.stream.read(&mut self.pending[len..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        self.pending.truncate(len + *result.as_ref().unwrap_or(&0));
        result
    }

    /// One line including its CRLF; `Ok(None)` if the server closed the
    /// connection before sending anything more.
    pub fn try_read_line(&mut self) -> io::Result<Option<Vec<u8>>> {
        let mut scanned = self.start;
        loop {
            if let Some(i) = memchr::memchr(b'\n', &self.pending[scanned..]) {
                let end = scanned + i + 1;
                let line = self.pending[self.start..end].to_vec();
                self.start = end;
                return Ok(Some(line));
            }
            scanned = self.pending.len();
            let offset = self.start;
            let n = self.fill()?;
            // `fill` may have moved the unread bytes to the front.
            scanned -= offset - self.start;
            if n == 0 {
                if self.start < self.pending.len() {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "connection closed in the middle of a line: {:?}",
                            String::from_utf8_lossy(&self.pending[self.start..])
                        ),
                    ));
                }
                return Ok(None);
            }
        }
    }

    /// One line including its CRLF. Fails the test on timeout or close.
    pub fn read_line(&mut self) -> Vec<u8> {
        match self.try_read_line() {
            Ok(Some(line)) => line,
            Ok(None) => panic!("pop3d closed the connection instead of replying"),
            Err(e) => panic!("no complete reply line from pop3d: {e}"),
        }
    }

    /// A status line as text without CRLF (lossy for non-UTF-8 bytes),
    /// after checking it ends in CRLF and fits RFC 1939's 512 octets.
    pub fn read_line_str(&mut self) -> String {
        let line = self.read_line();
        assert!(
            line.len() <= 512,
            "reply line of {} octets; RFC 1939 allows 512 with CRLF: {:?}",
            line.len(),
            String::from_utf8_lossy(&line[..80])
        );
        let text = line
            .strip_suffix(b"\r\n")
            .unwrap_or_else(|| {
                panic!(
                    "reply line does not end in CRLF: {:?}",
                    String::from_utf8_lossy(&line)
                )
            })
            .to_vec();
        String::from_utf8_lossy(&text).into_owned()
    }

    /// A whole reply as wire bytes: the status line and, if it is `+OK`,
    /// the body up to and including the `.` CRLF line.
    pub fn read_multiline(&mut self) -> Vec<u8> {
        let mut raw = self.read_line();
        if !raw.starts_with(b"+OK") {
            return raw;
        }
        loop {
            let line = self.read_line();
            let last = line == b".\r\n";
            raw.extend_from_slice(&line);
            if last {
                return raw;
            }
        }
    }

    /// Reads the greeting and checks it is positive.
    pub fn greeting(&mut self) -> String {
        let line = self.read_line_str();
        assert!(line.starts_with("+OK"), "greeting is not +OK: {line}");
        line
    }

    /// Sends a command and returns its single-line reply without CRLF.
    pub fn command(&mut self, line: &str) -> String {
        self.send_line(line);
        self.read_line_str()
    }

    /// Sends a command and checks the reply is `+OK`.
    pub fn ok(&mut self, line: &str) -> String {
        let reply = self.command(line);
        assert!(
            reply.starts_with("+OK"),
            "expected +OK for {:?}, got {reply:?}",
            redact(line)
        );
        reply
    }

    /// Sends a command and checks the reply is `-ERR`.
    pub fn err(&mut self, line: &str) -> String {
        let reply = self.command(line);
        assert!(
            reply.starts_with("-ERR"),
            "expected -ERR for {:?}, got {reply:?}",
            redact(line)
        );
        reply
    }

    /// Sends a command with a multi-line reply and checks it is `+OK`.
    pub fn multiline(&mut self, line: &str) -> Multiline {
        self.send_line(line);
        let raw = self.read_multiline();
        split_multiline(&raw)
            .unwrap_or_else(|| panic!("expected a multi-line +OK for {line:?}, got {raw:?}"))
    }

    /// Reads until the server closes the connection and returns what came
    /// before the close. Fails the test if it stays open.
    pub fn read_to_close(&mut self) -> Vec<u8> {
        let mut rest = self.pending[self.start..].to_vec();
        self.pending.clear();
        self.start = 0;
        match self.stream.read_to_end(&mut rest) {
            Ok(_) => rest,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => rest,
            Err(e) => panic!(
                "pop3d did not close the connection (got {:?}): {e}",
                String::from_utf8_lossy(&rest)
            ),
        }
    }

    /// Closes both directions now, as a client that vanishes would.
    pub fn drop_connection(self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    /// The socket, for tests that need more control.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }
}

/// Hides the argument of PASS in messages: test output never shows a
/// password.
fn redact(line: &str) -> String {
    if line.len() >= 5 && line[..5].eq_ignore_ascii_case("PASS ") {
        "PASS <redacted>".into()
    } else {
        line.into()
    }
}

/// Splits a positive multi-line reply into status and body; `None` if it
/// is not one (an `-ERR`, or no terminator).
pub fn split_multiline(raw: &[u8]) -> Option<Multiline> {
    if !raw.starts_with(b"+OK") {
        return None;
    }
    let status_end = memchr::memchr(b'\n', raw)? + 1;
    let status = raw[..status_end].strip_suffix(b"\r\n")?;
    let rest = &raw[status_end..];
    let body = rest.strip_suffix(b".\r\n")?;
    if !(body.is_empty() || body.ends_with(b"\r\n")) {
        return None;
    }
    Some(Multiline {
        status: String::from_utf8_lossy(status).into_owned(),
        body: body.to_vec(),
    })
}

/// The octets a stored message becomes on the wire before dot-stuffing:
/// what the store gives back ([`served_form`]: the bytes themselves for
/// maildir, the mboxo-quoted form for mbox), with every LF not preceded by
/// CR turned into CRLF and a CRLF appended to a non-empty message not
/// ending in LF. Its length is what LIST must report.
pub fn wire_form(raw: &[u8]) -> Vec<u8> {
    let served = served_form(raw);
    let raw = served.as_slice();
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 32 + 2);
    let mut previous = 0u8;
    for &b in raw {
        if b == b'\n' && previous != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        previous = b;
    }
    if !raw.is_empty() && !raw.ends_with(b"\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Dot-stuffs CRLF text: a line starting with `.` gets another `.` in front.
pub fn dot_stuff(wire: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(wire.len() + 64);
    for line in wire.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b".") {
            out.push(b'.');
        }
        out.extend_from_slice(line);
    }
    out
}

/// Undoes dot-stuffing of a body (without its terminator): the first `.` of
/// every line starting with `.` is removed.
pub fn unstuff(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    for line in body.split_inclusive(|&b| b == b'\n') {
        out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
    }
    out
}

/// What `TOP n k` must deliver for a message (wire form, before stuffing):
/// the headers, the blank line after them, and the first `k` body lines.
/// A message without a blank line is all headers.
pub fn top_of(raw: &[u8], k: usize) -> Vec<u8> {
    let wire = wire_form(raw);
    let header_end = if wire.starts_with(b"\r\n") {
        2
    } else {
        match memchr::memmem::find(&wire, b"\r\n\r\n") {
            Some(i) => i + 4,
            None => return wire,
        }
    };
    let mut out = wire[..header_end].to_vec();
    for line in wire[header_end..].split_inclusive(|&b| b == b'\n').take(k) {
        out.extend_from_slice(line);
    }
    out
}

/// Shows where two byte strings first differ, for assertion messages about
/// large bodies (printing 20 MB helps nobody).
pub fn first_difference(got: &[u8], expected: &[u8]) -> String {
    let at = got
        .iter()
        .zip(expected)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(expected.len()));
    let from = at.saturating_sub(40);
    format!(
        "lengths got {} expected {}; first difference at {at}: got {:?} expected {:?}",
        got.len(),
        expected.len(),
        String::from_utf8_lossy(&got[from..(at + 40).min(got.len())]),
        String::from_utf8_lossy(&expected[from..(at + 40).min(expected.len())]),
    )
}

/// Asserts two byte strings are equal, describing the first difference.
#[track_caller]
pub fn assert_bytes_eq(got: &[u8], expected: &[u8], what: &str) {
    if got != expected {
        panic!("{what}: {}", first_difference(got, expected));
    }
}

/// A deterministic message of about `size` bytes with LF line ends, lines of
/// varied length, and lines starting with `.` (to exercise dot-stuffing).
pub fn big_message(size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(size + 200);
    out.extend_from_slice(b"From: big@example.org\nSubject: a large message\n\n");
    let mut state: u32 = 0x2545_f491;
    let mut line_no = 0u64;
    while out.len() < size {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        line_no += 1;
        let len = (state % 120) as usize;
        match line_no % 17 {
            0 => out.push(b'.'),
            5 => out.extend_from_slice(b".."),
            11 => {
                out.extend_from_slice(b".\n");
                continue;
            }
            _ => {}
        }
        let fill = b'a' + (line_no % 26) as u8;
        out.extend(std::iter::repeat_n(fill, len));
        out.push(b'\n');
    }
    out
}

/// The `plugin` values of the auth and store sections every server gets:
/// `("passwd-file", "maildir")` (`"mbox"` under `POP3D_TEST_STORE=mbox`),
/// or with `POP3D_TEST_PLUGINS=so` the paths of those plugin crates'
/// shared libraries, built here (once per test binary) with the profile
/// and target directory of this test binary.
pub fn backend_plugins() -> &'static (String, String) {
    static PLUGINS: OnceLock<(String, String)> = OnceLock::new();
    let (store_name, store_crate, store_library) = match store_kind() {
        StoreKind::Maildir => ("maildir", "pop3d-maildir", "libpop3d_maildir.so"),
        StoreKind::Mbox => ("mbox", "pop3d-mbox", "libpop3d_mbox.so"),
    };
    PLUGINS.get_or_init(|| match std::env::var("POP3D_TEST_PLUGINS").as_deref() {
        Err(_) | Ok("") | Ok("builtin") => ("passwd-file".into(), store_name.into()),
        Ok("so") => {
            let libs_dir = plugin_build::build_plugin_crates(&["pop3d-passwd-file", store_crate]);
            let library = |name: &str| {
                let path = libs_dir.join(name);
                assert!(path.exists(), "{} was not built", path.display());
                path.display().to_string()
            };
            (library("libpop3d_passwd_file.so"), library(store_library))
        }
        Ok(other) => panic!("POP3D_TEST_PLUGINS={other:?}: use \"so\" or \"builtin\""),
    })
}
