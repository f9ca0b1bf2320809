//! pop3d's passwd-file auth plugin: a Dovecot-compatible passwd-file.
//!
//! pop3d links this crate as its built-in `passwd-file` auth backend; the
//! same code builds as `libpop3d_passwd_file.so` (entry symbol
//! `pop3d_plugin_passwd_file`), and both are reached only through the plugin
//! ABI. Config: `(path: "/etc/pop3d/passwd")`; see [`PasswdFileConfig`].
//!
//! One user per line, fields separated by `:`:
//!
//! ```text
//! user:password:uid:gid:(gecos):home:(shell):extra_fields
//! alice:{SHA512-CRYPT}$6$3Cq5nd0XYuWn1rNk$...::::/home/alice::quota=1G
//! bob:{PLAIN}secret
//! carol:$2y$10$...
//! ```
//!
//! Fields after the password may be left out. Blank lines and lines
//! starting with `#` are ignored. The password is `{SCHEME}data` in any of
//! Dovecot's schemes listed in [`scheme`] (SHA512-CRYPT, BLF-CRYPT,
//! ARGON2ID, SSHA512, CRAM-MD5, SCRAM-SHA-256, PLAIN, …); without a
//! `{SCHEME}` prefix it is `CRYPT`, a crypt(3) hash, as in Dovecot. `pop3d
//! pw` makes them, and so does `doveadm pw`. A user whose password uses a
//! scheme this build does not check (DES or MD5 crypt, for instance) is
//! reported once when the file is loaded and can never log in; a supported
//! scheme with malformed data is an error in the file, like a malformed
//! line. Extra fields are space-separated `key=value` pairs handed to the
//! store untouched. User names are matched exactly, case included, as
//! Dovecot does by default.
//!
//! The file is checked for changes (inode, size, mtime, ctime) at every
//! login and read again when it changed, so edits take effect without a
//! restart. A file that no longer parses leaves the previous users in force
//! and is reported once in the log.
//!
//! An unknown user (or one who cannot log in) is checked against a dummy
//! hash of the most common scheme and cost in the file, so a login for a
//! name that does not exist costs what a wrong password for a typical user
//! costs and timing does not tell which names exist. (A user stored in a
//! rarer scheme still takes that scheme's time: pick one scheme per file.)
//! Passwords never reach the log.
//!
//! The plugin also gives out secrets for challenge-response mechanisms
//! (`get_secret`), as Dovecot-style `{SCHEME}data` strings: `{PLAIN}pw`
//! for the plaintext schemes, and the stored `{CRAM-MD5}…`,
//! `{SCRAM-SHA-256}…` and `{SCRAM-SHA-1}…` strings, from which those
//! mechanisms work without the plaintext. A user stored as a one-way hash
//! (the crypt family, salted SHA), like an unknown user, is `DENIED` there.
#![deny(unsafe_code)]

pub mod scheme;

use pop3d_plugin_api::{
    export_auth_plugin, log_debug, log_error, log_info, log_warn, AuthPlugin, Error, UserInfo,
};
use scheme::{SchemeError, StoredPassword};
use serde::Deserialize;
use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use subtle::Choice;

/// The `config` section of a passwd-file authenticator.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PasswdFileConfig {
    /// The passwd-file to read.
    pub path: PathBuf,
}

/// Why a passwd-file could not be used.
#[derive(Debug)]
pub enum PasswdFileError {
    /// The file could not be read.
    Read {
        /// The passwd-file.
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },
    /// A line is malformed; nothing of the file is used until it is fixed.
    BadLine {
        /// The passwd-file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it (never includes the password).
        reason: String,
    },
}

impl fmt::Display for PasswdFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PasswdFileError::Read { path, source } => {
                write!(f, "cannot read {}: {source}", path.display())
            }
            PasswdFileError::BadLine { path, line, reason } => {
                write!(f, "{}:{line}: {reason}", path.display())
            }
        }
    }
}

impl std::error::Error for PasswdFileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PasswdFileError::Read { source, .. } => Some(source),
            PasswdFileError::BadLine { .. } => None,
        }
    }
}

/// How a user's password is checked.
#[derive(Debug, Clone)]
enum Credential {
    /// A password in a scheme this build checks.
    Checked(StoredPassword),
    /// A scheme this build cannot check: the user cannot log in.
    Unsupported,
}

/// One user of the file.
#[derive(Debug, Clone)]
struct UserEntry {
    /// What a successful login returns.
    info: UserInfo,
    /// What the password is checked against.
    credential: Credential,
}

/// The parsed file.
#[derive(Debug)]
struct UserTable {
    /// Users by exact name.
    users: HashMap<String, UserEntry>,
    /// What unknown users and users who cannot log in are checked against:
    /// a hash of the file's most common scheme and cost that no password
    /// matches, so their logins cost what a typical user's does.
    dummy: StoredPassword,
    /// Lines that load but whose users cannot log in, as log messages.
    warnings: Vec<String>,
}

/// What was seen of the file the last time it was looked at; a different
/// observation means it must be read again.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Observation {
    /// The file's identity and change stamps.
    File {
        /// Device, with `inode`: a file replaced by rename is a new file.
        device: u64,
        /// Inode number.
        inode: u64,
        /// Size in bytes.
        size: u64,
        /// Modification time, (seconds, nanoseconds).
        mtime: (i64, i64),
        /// Status change time, which also moves when mtime is set back.
        ctime: (i64, i64),
    },
    /// The file could not be looked at (deleted, no permission).
    Unavailable(io::ErrorKind),
}

impl Observation {
    fn of(path: &Path) -> Observation {
        match fs::metadata(path) {
            Ok(metadata) => Observation::File {
                device: metadata.dev(),
                inode: metadata.ino(),
                size: metadata.len(),
                mtime: (metadata.mtime(), metadata.mtime_nsec()),
                ctime: (metadata.ctime(), metadata.ctime_nsec()),
            },
            Err(err) => Observation::Unavailable(err.kind()),
        }
    }
}

/// The users in force and the state of the file they came from.
#[derive(Debug)]
struct Loaded {
    /// The users logins are checked against. Shared, so a login holds the
    /// lock only long enough to clone the `Arc`, not for the whole hash
    /// check (an ARGON2ID check at Dovecot's costs takes about 0.2 s), and
    /// a reload never waits for logins in progress.
    table: Arc<UserTable>,
    /// The file as it was when last read or last found unreadable, so an
    /// unchanged file is neither read again nor reported again.
    seen: Observation,
}

/// Authenticates against a passwd-file, re-reading it when it changes.
#[derive(Debug)]
pub struct PasswdFile {
    /// The passwd-file.
    path: PathBuf,
    /// The users in force; many logins read it at once, a reload writes it.
    loaded: RwLock<Loaded>,
}

impl PasswdFile {
    /// Reads the file named in `config`; any unreadable file or malformed
    /// line is an error, so a broken file never starts a server.
    pub fn new(config: PasswdFileConfig) -> Result<PasswdFile, PasswdFileError> {
        let seen = Observation::of(&config.path);
        let table = load(&config.path)?;
        log_warnings(&table);
        log_debug!(
            "passwd-file: {}: {} users; unknown users are checked against a {} dummy",
            config.path.display(),
            table.users.len(),
            table.dummy.cost()
        );
        Ok(PasswdFile {
            path: config.path,
            loaded: RwLock::new(Loaded {
                table: Arc::new(table),
                seen,
            }),
        })
    }

    /// The users in force, after reading the file again if it changed
    /// since it was last looked at.
    fn current_table(&self) -> Arc<UserTable> {
        self.reload_if_changed();
        Arc::clone(&self.read_loaded().table)
    }

    fn reload_if_changed(&self) {
        let now = Observation::of(&self.path);
        if self.read_loaded().seen == now {
            return;
        }
        let mut loaded = self.write_loaded();
        // Another login may have reloaded it while this one waited.
        if loaded.seen == now {
            return;
        }
        // Recording the observation made before the read is safe: the read
        // sees this version or a newer one, and a newer one has a different
        // observation, so it is read again at the next login.
        loaded.seen = now;
        match load(&self.path) {
            Ok(table) => {
                log_warnings(&table);
                log_info!(
                    "passwd-file: reloaded {}: {} users",
                    self.path.display(),
                    table.users.len()
                );
                loaded.table = Arc::new(table);
            }
            Err(err) => log_error!(
                "passwd-file: {err}; keeping the {} users loaded before until the file is fixed",
                loaded.table.users.len()
            ),
        }
    }

    /// The lock is only poisoned by a panic during a reload, which replaces
    /// the table in one assignment; the table is whole either way.
    fn read_loaded(&self) -> RwLockReadGuard<'_, Loaded> {
        self.loaded
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write_loaded(&self) -> RwLockWriteGuard<'_, Loaded> {
        self.loaded
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl AuthPlugin for PasswdFile {
    const SUPPORTS_SECRETS: bool = true;

    fn create(config: &str) -> Result<Self, Error> {
        let config: PasswdFileConfig = pop3d_plugin_api::config::parse(config)?;
        PasswdFile::new(config).map_err(|err| Error::PermFail(err.to_string()))
    }

    /// Runs on a worker thread (pop3d never checks passwords on its event
    /// loop), so a slow hash delays only this login.
    fn authenticate(&self, user: &str, password: &[u8]) -> Result<UserInfo, Error> {
        let table = self.current_table();
        let entry = table.users.get(user);
        let (stored, usable) = match entry {
            Some(UserEntry {
                credential: Credential::Checked(stored),
                ..
            }) => (stored, Choice::from(1)),
            _ => (&table.dummy, Choice::from(0)),
        };
        let accepted = stored.verify_ct(password) & usable;
        match entry {
            Some(entry) if bool::from(accepted) => Ok(entry.info.clone()),
            _ => Err(Error::Denied),
        }
    }

    /// The secret for challenge-response mechanisms, as a `{SCHEME}data`
    /// string (see the crate docs). An unknown user and one whose password
    /// is a one-way hash are both `Denied`, as a wrong password would be.
    fn secret(&self, user: &str) -> Result<(Vec<u8>, UserInfo), Error> {
        let table = self.current_table();
        let Some(UserEntry {
            credential: Credential::Checked(stored),
            info,
        }) = table.users.get(user)
        else {
            return Err(Error::Denied);
        };
        match stored.challenge_secret() {
            Some(secret) => Ok((secret, info.clone())),
            None => Err(Error::Denied),
        }
    }
}

export_auth_plugin!(passwd_file, PasswdFile, "passwd-file");

fn log_warnings(table: &UserTable) {
    for warning in &table.warnings {
        log_warn!("passwd-file: {warning}");
    }
}

fn load(path: &Path) -> Result<UserTable, PasswdFileError> {
    let text = fs::read(path).map_err(|source| PasswdFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(path, &text)
}

/// Parses a whole file. `path` is only used in messages.
fn parse(path: &Path, text: &[u8]) -> Result<UserTable, PasswdFileError> {
    let mut users = HashMap::new();
    let mut warnings = Vec::new();
    // How many users have each cost, in order of first appearance, to
    // pick the dummy: one stored password of each cost, and its count.
    let mut costs: Vec<(String, StoredPassword, usize)> = Vec::new();
    let mut first_line_of: HashMap<String, usize> = HashMap::new();
    for (index, raw_line) in text.split(|&b| b == b'\n').enumerate() {
        let line_number = index + 1;
        let bad_line = |reason: String| PasswdFileError::BadLine {
            path: path.to_path_buf(),
            line: line_number,
            reason,
        };
        let raw_line = raw_line.strip_suffix(b"\r").unwrap_or(raw_line);
        let line =
            std::str::from_utf8(raw_line).map_err(|_| bad_line("not valid UTF-8".to_owned()))?;
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let mut fields = line.splitn(8, ':');
        let name = fields.next().unwrap_or("");
        let Some(password) = fields.next() else {
            return Err(bad_line(
                "no password field; expected user:{SCHEME}password[:uid:gid:gecos:home:shell:extra]"
                    .to_owned(),
            ));
        };
        if name.is_empty() {
            return Err(bad_line("empty user name".to_owned()));
        }
        if let Some(first) = first_line_of.insert(name.to_owned(), line_number) {
            return Err(bad_line(format!(
                "user {name} is already defined on line {first}; remove one of the two"
            )));
        }
        let _uid = fields.next();
        let _gid = fields.next();
        let _gecos = fields.next();
        let home = fields
            .next()
            .filter(|home| !home.is_empty())
            .map(str::to_owned);
        let _shell = fields.next();
        let extra = fields.next().map(parse_extra_fields).unwrap_or_default();

        let credential = match StoredPassword::parse(password) {
            Ok(stored) => {
                let cost = stored.cost();
                match costs.iter_mut().find(|(seen, ..)| *seen == cost) {
                    Some((_, _, count)) => *count += 1,
                    None => costs.push((cost, stored.clone(), 1)),
                }
                Credential::Checked(stored)
            }
            Err(SchemeError::Unsupported(scheme)) => {
                warnings.push(format!(
                    "{}:{line_number}: user {name}: password scheme {scheme} is not supported; \
                     this user cannot log in until the password is stored again with \
                     `pop3d pw` (e.g. as SHA512-CRYPT)",
                    path.display()
                ));
                Credential::Unsupported
            }
            Err(err) => return Err(bad_line(format!("user {name}: {err}"))),
        };
        users.insert(
            name.to_owned(),
            UserEntry {
                info: UserInfo {
                    name: name.to_owned(),
                    home,
                    extra,
                },
                credential,
            },
        );
    }
    // The most common cost; the first seen of those tied. A file with no
    // checkable password gets a plaintext dummy.
    let mut most_common: Option<&(String, StoredPassword, usize)> = None;
    for candidate in &costs {
        if most_common.is_none_or(|best| candidate.2 > best.2) {
            most_common = Some(candidate);
        }
    }
    let dummy = match most_common {
        Some((_, stored, _)) => stored.dummy_like(),
        None => StoredPassword::plain_dummy(),
    };
    Ok(UserTable {
        users,
        dummy,
        warnings,
    })
}

/// One user a passwd-file defines, as [`parse_text`] reports it.
#[derive(Debug, Clone)]
pub struct ParsedUser {
    /// The user name, exactly as on its line.
    pub name: String,
    /// The home directory field, when not empty.
    pub home: Option<String>,
    /// The stored password; `None` when its scheme is one this build
    /// cannot check (such a user cannot log in, and the file still loads).
    pub password: Option<StoredPassword>,
}

/// What [`parse_text`] makes of a whole file.
#[derive(Debug, Clone)]
pub struct ParsedFile {
    /// Every user the file defines, sorted by name.
    pub users: Vec<ParsedUser>,
    /// What unknown users are checked against, so a fuzzer or a test can
    /// see that it costs what the file's typical user costs.
    pub dummy: StoredPassword,
}

/// Parses passwd-file text exactly as the plugin does when it loads a
/// file, without touching the filesystem: the entry point of the `passwd`
/// fuzz target. Errors name the file as `<text>`.
pub fn parse_text(text: &[u8]) -> Result<ParsedFile, PasswdFileError> {
    let table = parse(Path::new("<text>"), text)?;
    let mut users: Vec<ParsedUser> = table
        .users
        .into_values()
        .map(|entry| ParsedUser {
            name: entry.info.name,
            home: entry.info.home,
            password: match entry.credential {
                Credential::Checked(stored) => Some(stored),
                Credential::Unsupported => None,
            },
        })
        .collect();
    users.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(ParsedFile {
        users,
        dummy: table.dummy,
    })
}

/// `key=value` pairs separated by spaces; a bare `key` has an empty value
/// (Dovecot uses those as flags, e.g. `nodelay`).
fn parse_extra_fields(text: &str) -> Vec<(String, String)> {
    text.split_whitespace()
        .map(|field| match field.split_once('=') {
            Some((key, value)) => (key.to_owned(), value.to_owned()),
            None => (field.to_owned(), String::new()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A uniquely named directory under the system temp directory, removed
    /// with everything in it when dropped.
    struct TestDir(
        /// The directory, removed on drop.
        PathBuf,
    );

    impl TestDir {
        fn new(tag: &str) -> TestDir {
            use std::sync::atomic::{AtomicUsize, Ordering};
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let path = std::env::temp_dir().join(format!(
                "pop3d-test-{tag}-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&path);
            fs::create_dir_all(&path).unwrap();
            TestDir(path)
        }

        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TestDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn authenticator(dir: &TestDir, content: &str) -> (PasswdFile, PathBuf) {
        let path = dir.path().join("passwd");
        fs::write(&path, content).unwrap();
        let passwd = PasswdFile::new(PasswdFileConfig { path: path.clone() }).unwrap();
        (passwd, path)
    }

    fn warnings(passwd: &PasswdFile) -> Vec<String> {
        passwd.read_loaded().table.warnings.clone()
    }

    const SAMPLE: &str = "\
# users of the test domain

alice:{PLAIN}wonderland:1000:1000:Alice:/home/alice:/bin/sh:quota=1G nodelay mail=maildir:~/Mail
bob:{CLEAR}builder
   # an indented comment
carol:{plain.base64}c2VjcmV0OndpdGg6Y29sb25z::::/home/carol
dave@example.org:{PLAIN}dave-pw:::::
eve:{SHA512-CRYPT}$6$R4Sdkw.ebcXYiYOf$557TFm2IH9HW/kGkoBBRP6rAprsTXtNR0pPrZ.ENQP1ilDdEfmNlyB3.tGcB2PSLPraVdBG7qehWqrVkmyTKj1::::/home/eve
frank:$1$oldstyle$crypt
gina:$2y$04$YMP0oq81HkdBwsSz3vM9uOycKOHBWpa1KIwqGt3S0dBAdGuaHM9Sy
hal:{CRAM-MD5}b00ebdebd13d7e4a3439500d915233e2bd6315442fa6bb85ae238cc58b5c04b2
ida:{scram-sha-256}4096,jn1vvcHYecycypQ5qSr8Cw==,eG9U+EA5Wp53eVnQTjELVMKIIDPtdBUxCJY/h4addYM=,5SdGhZ+LhC3GvIn8zYrNQBpV65Za6Cx7Hebd6sZnfRE=
jo:{SSHA256}5pYeNY3FL795TuUnsfsgJc6CsIezgsBBUhEvgQF/ZpaBwtXB
kim:{DES-CRYPT}abJnggxhB/yWI
";

    /// The dummy password compared against for unknown users of SAMPLE,
    /// where PLAIN is the most common scheme.
    const DUMMY_PASSWORD: &[u8] = b"pop3d-dummy-password-for-timing";

    #[test]
    fn parse_text_reports_users_sorted_with_their_passwords() {
        let file = parse_text(
            b"# comment\nzed:{PLAIN}pw::::/home/zed\nann:{MD5-CRYPT}$1$salt$hash\nbob:{PLAIN.BASE64}cHc=\n",
        )
        .unwrap();
        let names: Vec<&str> = file.users.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["ann", "bob", "zed"]);
        assert!(
            file.users[0].password.is_none(),
            "MD5-CRYPT is not checkable"
        );
        assert!(file.users[1].password.as_ref().unwrap().verify(b"pw"));
        assert_eq!(file.users[2].home.as_deref(), Some("/home/zed"));
        assert_eq!(file.dummy.cost(), "PLAIN");
        let error = parse_text(b"ann:{PLAIN}a\nann:{PLAIN}b\n").unwrap_err();
        assert!(error.to_string().contains("<text>:2"), "{error}");
    }

    #[test]
    fn a_good_login_returns_the_users_details() {
        let dir = TestDir::new("passwd-good");
        let (passwd, _) = authenticator(&dir, SAMPLE);
        let alice = passwd.authenticate("alice", b"wonderland").unwrap();
        assert_eq!(
            alice,
            UserInfo {
                name: "alice".to_owned(),
                home: Some("/home/alice".to_owned()),
                extra: vec![
                    ("quota".to_owned(), "1G".to_owned()),
                    ("nodelay".to_owned(), String::new()),
                    ("mail".to_owned(), "maildir:~/Mail".to_owned()),
                ],
            }
        );
    }

    #[test]
    fn optional_fields_may_be_missing_or_empty() {
        let dir = TestDir::new("passwd-optional");
        let (passwd, _) = authenticator(&dir, SAMPLE);
        let bob = passwd.authenticate("bob", b"builder").unwrap();
        assert_eq!(bob.home, None);
        assert!(bob.extra.is_empty());
        let dave = passwd.authenticate("dave@example.org", b"dave-pw").unwrap();
        assert_eq!(dave.name, "dave@example.org");
        assert_eq!(dave.home, None);
        assert!(dave.extra.is_empty());
    }

    #[test]
    fn base64_passwords_may_contain_colons() {
        let dir = TestDir::new("passwd-b64");
        let (passwd, _) = authenticator(&dir, SAMPLE);
        let carol = passwd.authenticate("carol", b"secret:with:colons").unwrap();
        assert_eq!(carol.home.as_deref(), Some("/home/carol"));
        assert_eq!(
            passwd.authenticate("carol", b"c2VjcmV0OndpdGg6Y29sb25z"),
            Err(Error::Denied)
        );
    }

    #[test]
    fn wrong_passwords_and_unknown_users_are_both_denied() {
        let dir = TestDir::new("passwd-denied");
        let (passwd, _) = authenticator(&dir, SAMPLE);
        for (user, password) in [
            ("alice", &b"wrong"[..]),
            ("alice", b"wonderlan"),
            ("alice", b"wonderland!"),
            ("alice", b""),
            ("Alice", b"wonderland"),
            ("mallory", b"wonderland"),
            ("", b""),
            // The dummy password must not let unknown users in.
            ("mallory", DUMMY_PASSWORD),
        ] {
            assert_eq!(
                passwd.authenticate(user, password),
                Err(Error::Denied),
                "{user}"
            );
        }
    }

    #[test]
    fn hashed_schemes_log_in_with_their_password_only() {
        let dir = TestDir::new("passwd-hashed");
        let (passwd, _) = authenticator(&dir, SAMPLE);
        for (user, password) in [
            ("eve", "eve-pw"),
            ("gina", "gina-pw"),
            ("hal", "hal-pw"),
            ("ida", "ida-pw"),
            ("jo", "jo-pw"),
        ] {
            let info = passwd.authenticate(user, password.as_bytes()).unwrap();
            assert_eq!(info.name, user);
            assert_eq!(
                passwd.authenticate(user, b"wrong"),
                Err(Error::Denied),
                "{user}"
            );
        }
        let eve = passwd.authenticate("eve", b"eve-pw").unwrap();
        assert_eq!(eve.home.as_deref(), Some("/home/eve"));
        // The stored string is not a password.
        assert_eq!(
            passwd.authenticate("jo", b"5pYeNY3FL795TuUnsfsgJc6CsIezgsBBUhEvgQF/ZpaBwtXB"),
            Err(Error::Denied)
        );
    }

    #[test]
    fn unsupported_schemes_are_denied_and_reported_once_at_load() {
        let dir = TestDir::new("passwd-schemes");
        let (passwd, path) = authenticator(&dir, SAMPLE);
        assert_eq!(
            passwd.authenticate("frank", b"$1$oldstyle$crypt"),
            Err(Error::Denied)
        );
        // Nor does the dummy compared against in their place let them in.
        for user in ["frank", "kim"] {
            assert_eq!(
                passwd.authenticate(user, DUMMY_PASSWORD),
                Err(Error::Denied)
            );
        }
        let warnings = warnings(&passwd);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        let file = path.display().to_string();
        assert!(
            warnings[0].contains(&format!("{file}:9: user frank: password scheme MD5-CRYPT")),
            "{}",
            warnings[0]
        );
        assert!(
            warnings[1].contains(&format!("{file}:14: user kim: password scheme DES-CRYPT")),
            "{}",
            warnings[1]
        );
        for warning in &warnings {
            assert!(warning.contains("pop3d pw"), "{warning}");
            assert!(!warning.contains("oldstyle") && !warning.contains("abJngg"));
        }
    }

    #[test]
    fn unknown_users_are_checked_against_the_most_common_cost() {
        let dir = TestDir::new("passwd-dummy");
        let bcrypt4 = "$2y$04$YMP0oq81HkdBwsSz3vM9uOycKOHBWpa1KIwqGt3S0dBAdGuaHM9Sy";
        let sha512 = "{SHA512-CRYPT}$6$R4Sdkw.ebcXYiYOf$557TFm2IH9HW/kGkoBBRP6rAprsTXtNR0pPrZ.ENQP1ilDdEfmNlyB3.tGcB2PSLPraVdBG7qehWqrVkmyTKj1";
        let dummy_cost = |content: &str| {
            let (passwd, _) = authenticator(&dir, content);
            let cost = passwd.read_loaded().table.dummy.cost();
            assert_eq!(
                passwd.authenticate("nobody", DUMMY_PASSWORD),
                Err(Error::Denied)
            );
            cost
        };
        assert_eq!(
            dummy_cost(&format!(
                "a:{{PLAIN}}x\nb:{sha512}\nc:{bcrypt4}\nd:{bcrypt4}\ne:{{PLAIN}}y\nf:{{BLF-CRYPT}}{bcrypt4}\n"
            )),
            "BLF-CRYPT cost=4"
        );
        // Ties go to the first seen.
        assert_eq!(
            dummy_cost(&format!(
                "a:{sha512}\nb:{{PLAIN}}x\nc:{{PLAIN}}y\nd:{sha512}\n"
            )),
            "SHA512-CRYPT rounds=5000"
        );
        assert_eq!(dummy_cost("# nobody\nfrank:$1$oldstyle$crypt\n"), "PLAIN");
    }

    #[test]
    fn malformed_hashes_are_bad_lines() {
        let dir = TestDir::new("passwd-malformed");
        let path = dir.path().join("passwd");
        for (content, reason) in [
            (
                "a:{SHA512-CRYPT}$6$salt$hash\n",
                "the SHA512-CRYPT password is malformed",
            ),
            ("a:{SSHA256}AAAA\n", "the SSHA256 password is malformed"),
            ("a:{CRAM-MD5}00ff\n", "the CRAM-MD5 password is malformed"),
            (
                "a:{SCRAM-SHA-1}4096,c2FsdA==\n",
                "the SCRAM-SHA-1 password is malformed",
            ),
            (
                "a:no-scheme-password\n",
                "a plaintext password needs the {PLAIN} prefix",
            ),
        ] {
            fs::write(&path, content).unwrap();
            let message = PasswdFile::new(PasswdFileConfig { path: path.clone() })
                .unwrap_err()
                .to_string();
            assert!(
                message.starts_with(&format!("{}:1: user a: ", path.display())),
                "{message}"
            );
            assert!(message.contains(reason), "{message}");
            assert!(!message.contains("no-scheme-password"), "{message}");
        }
    }

    #[test]
    fn bad_lines_are_reported_with_their_line_number() {
        let dir = TestDir::new("passwd-bad");
        let path = dir.path().join("passwd");
        for (content, line, reason) in [
            ("alice:{PLAIN}a\nbob\n", 2, "no password field"),
            ("# header\n\n:{PLAIN}x\n", 3, "empty user name"),
            (
                "a:{PLAIN}x\nb:{PLAIN}y\na:{PLAIN}z\n",
                3,
                "already defined on line 1",
            ),
            ("a:{PLAIN.BASE64}!!!!\n", 1, "not valid base64"),
            ("a:{PLAIN}x\nb:{PLAIN}\u{0}\n\u{ff}", 3, "not valid UTF-8"),
        ] {
            let bytes: Vec<u8> = content
                .chars()
                .map(|c| if c == '\u{ff}' { 0xff } else { c as u8 })
                .collect();
            fs::write(&path, bytes).unwrap();
            let err = PasswdFile::new(PasswdFileConfig { path: path.clone() }).unwrap_err();
            let message = err.to_string();
            assert!(
                message.starts_with(&format!("{}:{line}: ", path.display())),
                "{message}"
            );
            assert!(message.contains(reason), "{message}");
        }
    }

    #[test]
    fn a_missing_file_is_an_error_naming_it() {
        let dir = TestDir::new("passwd-missing");
        let path = dir.path().join("absent");
        let err = PasswdFile::new(PasswdFileConfig { path: path.clone() }).unwrap_err();
        assert!(matches!(err, PasswdFileError::Read { .. }));
        assert!(err.to_string().contains(&path.display().to_string()));
    }

    #[test]
    fn edits_take_effect_without_a_restart() {
        let dir = TestDir::new("passwd-reload");
        let (passwd, path) = authenticator(&dir, "alice:{PLAIN}one\n");
        assert!(passwd.authenticate("alice", b"one").is_ok());

        fs::write(&path, "alice:{PLAIN}two-two\nbob:{PLAIN}new\n").unwrap();
        assert_eq!(passwd.authenticate("alice", b"one"), Err(Error::Denied));
        assert!(passwd.authenticate("alice", b"two-two").is_ok());
        assert!(passwd.authenticate("bob", b"new").is_ok());

        // Replaced by rename (as editors and config tools do).
        let replacement = dir.path().join("passwd.new");
        fs::write(&replacement, "alice:{PLAIN}three\n").unwrap();
        fs::rename(&replacement, &path).unwrap();
        assert!(passwd.authenticate("alice", b"three").is_ok());
        assert_eq!(passwd.authenticate("bob", b"new"), Err(Error::Denied));
    }

    #[test]
    fn a_broken_edit_keeps_the_previous_users() {
        let dir = TestDir::new("passwd-broken");
        let (passwd, path) = authenticator(&dir, "alice:{PLAIN}one\n");
        fs::write(&path, "alice:{PLAIN}two\nbroken line\n").unwrap();
        assert!(passwd.authenticate("alice", b"one").is_ok());
        assert_eq!(passwd.authenticate("alice", b"two"), Err(Error::Denied));

        fs::remove_file(&path).unwrap();
        assert!(passwd.authenticate("alice", b"one").is_ok());

        fs::write(&path, "alice:{PLAIN}fixed\n").unwrap();
        assert!(passwd.authenticate("alice", b"fixed").is_ok());
    }

    #[test]
    fn concurrent_logins_during_reloads_see_a_whole_table() {
        let dir = TestDir::new("passwd-threads");
        let (passwd, path) = authenticator(&dir, "alice:{PLAIN}a\nbob:{PLAIN}b\n");
        let passwd = std::sync::Arc::new(passwd);
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let passwd = std::sync::Arc::clone(&passwd);
                std::thread::spawn(move || {
                    for _ in 0..500 {
                        // bob is in every version of the file.
                        assert!(passwd.authenticate("bob", b"b").is_ok());
                    }
                })
            })
            .collect();
        // Written aside and renamed into place, as an operator should: an
        // in-place write can be seen half-done.
        let staging = dir.path().join("passwd.new");
        for round in 0..50 {
            let extra = "x".repeat(round);
            fs::write(
                &staging,
                format!("alice:{{PLAIN}}a{extra}\nbob:{{PLAIN}}b\n"),
            )
            .unwrap();
            fs::rename(&staging, &path).unwrap();
        }
        for worker in workers {
            worker.join().unwrap();
        }
    }

    #[test]
    fn secrets_are_scheme_strings_of_the_reversible_schemes_only() {
        let dir = TestDir::new("passwd-secret");
        let (passwd, path) = authenticator(&dir, SAMPLE);
        let (secret, alice) = passwd.secret("alice").unwrap();
        assert_eq!(secret, b"{PLAIN}wonderland");
        assert_eq!(alice.home.as_deref(), Some("/home/alice"));
        assert_eq!(passwd.secret("bob").unwrap().0, b"{PLAIN}builder");
        assert_eq!(
            passwd.secret("carol").unwrap().0,
            b"{PLAIN}secret:with:colons"
        );
        assert_eq!(
            passwd.secret("hal").unwrap().0,
            b"{CRAM-MD5}b00ebdebd13d7e4a3439500d915233e2bd6315442fa6bb85ae238cc58b5c04b2"
        );
        // The scheme name comes out in Dovecot's spelling, whatever the
        // file's case.
        assert_eq!(
            passwd.secret("ida").unwrap().0,
            b"{SCRAM-SHA-256}4096,jn1vvcHYecycypQ5qSr8Cw==,eG9U+EA5Wp53eVnQTjELVMKIIDPtdBUxCJY/h4addYM=,5SdGhZ+LhC3GvIn8zYrNQBpV65Za6Cx7Hebd6sZnfRE="
        );
        for no_secret in ["eve", "frank", "gina", "jo", "kim", "mallory", "Alice", ""] {
            assert_eq!(passwd.secret(no_secret), Err(Error::Denied), "{no_secret}");
        }
        fs::write(&path, "alice:{PLAIN}changed\n").unwrap();
        assert_eq!(passwd.secret("alice").unwrap().0, b"{PLAIN}changed");
        assert_eq!(passwd.secret("bob"), Err(Error::Denied));
    }

    fn create_error(config: &str) -> String {
        match PasswdFile::create(config) {
            Ok(_) => panic!("{config} was accepted"),
            Err(Error::PermFail(message)) => message,
            Err(other) => panic!("{config}: expected PermFail, got {other:?}"),
        }
    }

    #[test]
    fn create_reads_the_config_text_and_the_file() {
        let dir = TestDir::new("passwd-create");
        let path = dir.path().join("passwd");
        fs::write(&path, "alice:{PLAIN}pw\n").unwrap();
        let config = format!("(path: {:?})", path.display().to_string());
        let passwd = PasswdFile::create(&config).unwrap();
        assert!(passwd.authenticate("alice", b"pw").is_ok());

        assert_eq!(create_error("()"), "config: missing field `path`");
        assert_eq!(
            create_error("(file: \"/etc/passwd\")"),
            "config: unknown field `file`, expected `path`"
        );
        fs::write(&path, "alice:{PLAIN}pw\n\nbob\n").unwrap();
        let bad_line = create_error(&config);
        assert!(
            bad_line.starts_with(&format!("{}:3: ", path.display())),
            "{bad_line}"
        );
        let missing = format!(
            "(path: {:?})",
            dir.path().join("absent").display().to_string()
        );
        assert!(create_error(&missing).contains("cannot read"));
    }

    #[test]
    fn debug_output_never_shows_a_password() {
        let dir = TestDir::new("passwd-debug");
        let (passwd, _) = authenticator(&dir, SAMPLE);
        let printed = format!("{passwd:?}");
        assert!(printed.contains("alice"));
        assert!(!printed.contains("wonderland"), "{printed}");
        assert!(!printed.contains("builder"));
        assert!(
            !printed.contains("R4Sdkw") && !printed.contains("b00ebd"),
            "{printed}"
        );
    }
}
