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
//! alice:{PLAIN}secret::::/home/alice::quota=1G
//! bob:{PLAIN.BASE64}c2VjcmV0
//! ```
//!
//! Fields after the password may be left out. Blank lines and lines
//! starting with `#` are ignored. The password is `{SCHEME}secret`; `PLAIN`
//! (also spelled `CLEAR` or `CLEARTEXT`) and `PLAIN.BASE64` (`PLAIN.B64`)
//! are supported. A user whose password uses another scheme, or no scheme
//! (which Dovecot reads as `CRYPT`), is reported once when the file is
//! loaded and can never log in. Extra fields are space-separated
//! `key=value` pairs handed to the store untouched. User names are matched
//! exactly, case included, as Dovecot does by default.
//!
//! The file is checked for changes (inode, size, mtime, ctime) at every
//! login and read again when it changed, so edits take effect without a
//! restart. A file that no longer parses leaves the previous users in force
//! and is reported once in the log.
//!
//! Password checks take the same time whether the user exists or not: an
//! unknown user is compared against a dummy password. Passwords never reach
//! the log.
//!
//! The plugin also gives out secrets for challenge-response mechanisms
//! (`get_secret`): the plaintext of a `{PLAIN}`/`{CLEAR}`/`{PLAIN.BASE64}`
//! entry. A user stored in any other scheme, like an unknown user, is
//! `DENIED` there.
#![deny(unsafe_code)]

use pop3d_plugin_api::{
    export_auth_plugin, log_error, log_info, log_warn, AuthPlugin, Error, UserInfo,
};
use serde::Deserialize;
use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use subtle::{Choice, ConstantTimeEq};

/// Compared against when the user is unknown or cannot log in, so those
/// cases do the same work as a wrong password.
const DUMMY_PASSWORD: &[u8] = b"pop3d-dummy-password-for-timing";

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
#[derive(Clone, PartialEq, Eq)]
enum Credential {
    /// The password itself (decoded, for `PLAIN.BASE64`).
    Plain(Vec<u8>),
    /// A scheme this build cannot check: the user cannot log in.
    Unsupported,
}

/// Hand-written so a password can never be printed by `{:?}`.
impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Plain(_) => write!(f, "Plain(<redacted>)"),
            Credential::Unsupported => write!(f, "Unsupported"),
        }
    }
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
#[derive(Debug, Default)]
struct UserTable {
    /// Users by exact name.
    users: HashMap<String, UserEntry>,
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
    /// The users logins are checked against.
    table: UserTable,
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
        Ok(PasswdFile {
            path: config.path,
            loaded: RwLock::new(Loaded { table, seen }),
        })
    }

    /// Reads the file again if it changed since it was last looked at.
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
                loaded.table = table;
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

    fn authenticate(&self, user: &str, password: &[u8]) -> Result<UserInfo, Error> {
        self.reload_if_changed();
        let loaded = self.read_loaded();
        let entry = loaded.table.users.get(user);
        let (stored, usable) = match entry {
            Some(UserEntry {
                credential: Credential::Plain(stored),
                ..
            }) => (stored.as_slice(), Choice::from(1)),
            _ => (DUMMY_PASSWORD, Choice::from(0)),
        };
        let accepted = constant_time_eq(stored, password) & usable;
        match entry {
            Some(entry) if bool::from(accepted) => Ok(entry.info.clone()),
            _ => Err(Error::Denied),
        }
    }

    /// The plaintext for challenge-response mechanisms. An unknown user and
    /// one whose password is stored in a scheme that cannot give it back are
    /// both `Denied`, as a wrong password would be.
    fn secret(&self, user: &str) -> Result<(Vec<u8>, UserInfo), Error> {
        self.reload_if_changed();
        let loaded = self.read_loaded();
        match loaded.table.users.get(user) {
            Some(UserEntry {
                credential: Credential::Plain(secret),
                info,
            }) => Ok((secret.clone(), info.clone())),
            _ => Err(Error::Denied),
        }
    }
}

export_auth_plugin!(passwd_file, PasswdFile, "passwd-file");

/// Whether `given` equals `stored`, in time that depends on the length of
/// `given` (which the client knows) and not on where the two differ.
///
/// The stored password's length is compared without a branch too, though
/// a plaintext scheme cannot hide it entirely from a patient attacker
/// measuring the byte loop; hashed schemes will not have that problem.
fn constant_time_eq(stored: &[u8], given: &[u8]) -> Choice {
    let same_length = (stored.len() as u64).ct_eq(&(given.len() as u64));
    let mut difference = 0u8;
    for (index, &byte) in given.iter().enumerate() {
        difference |= byte ^ stored.get(index).copied().unwrap_or(0);
    }
    same_length & difference.ct_eq(&0)
}

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
    let mut table = UserTable::default();
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

        let credential = match parse_password(password) {
            Ok(credential) => credential,
            Err(PasswordProblem::Undecodable(scheme)) => {
                return Err(bad_line(format!(
                    "user {name}: the {scheme} password is not valid base64"
                )))
            }
            Err(PasswordProblem::Unsupported(scheme)) => {
                table.warnings.push(format!(
                    "{}:{line_number}: user {name}: password scheme {scheme} is not supported \
                     yet; this user cannot log in until the password is stored as {{PLAIN}}",
                    path.display()
                ));
                Credential::Unsupported
            }
        };
        table.users.insert(
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
    Ok(table)
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

/// Why a password field gives no usable credential. Each carries a name of
/// the scheme that is safe to log.
#[derive(Debug, PartialEq, Eq)]
enum PasswordProblem {
    /// A scheme this build does not check.
    Unsupported(String),
    /// A supported encoding that does not decode: a typo in the file.
    Undecodable(String),
}

fn parse_password(field: &str) -> Result<Credential, PasswordProblem> {
    let scheme_and_secret = field
        .strip_prefix('{')
        .and_then(|rest| rest.split_once('}'));
    let Some((scheme, secret)) = scheme_and_secret else {
        return Err(PasswordProblem::Unsupported(
            "CRYPT (the default when there is no {SCHEME} prefix)".to_owned(),
        ));
    };
    let scheme_upper = scheme.to_ascii_uppercase();
    match scheme_upper.as_str() {
        "PLAIN" | "CLEAR" | "CLEARTEXT" => Ok(Credential::Plain(secret.as_bytes().to_vec())),
        "PLAIN.BASE64" | "PLAIN.B64" => decode_base64(secret)
            .map(Credential::Plain)
            .ok_or(PasswordProblem::Undecodable(scheme_upper)),
        _ => Err(PasswordProblem::Unsupported(loggable_scheme(scheme))),
    }
}

/// `scheme` if it looks like a scheme name; otherwise the braces may hold
/// part of a password written without a scheme, which must not be logged.
fn loggable_scheme(scheme: &str) -> String {
    let looks_like_scheme = !scheme.is_empty()
        && scheme.len() <= 32
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    if looks_like_scheme {
        scheme.to_ascii_uppercase()
    } else {
        "(an unrecognised {...} prefix)".to_owned()
    }
}

/// Standard base64 (RFC 4648, `+` and `/`), with or without `=` padding.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    fn value(symbol: u8) -> Option<u32> {
        match symbol {
            b'A'..=b'Z' => Some(u32::from(symbol - b'A')),
            b'a'..=b'z' => Some(u32::from(symbol - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(symbol - b'0') + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    let symbols = text.trim_end_matches('=').as_bytes();
    let padding = text.len() - symbols.len();
    if padding > 2 || (padding > 0 && !text.len().is_multiple_of(4)) || symbols.len() % 4 == 1 {
        return None;
    }
    let mut decoded = Vec::with_capacity(symbols.len() * 3 / 4);
    for group in symbols.chunks(4) {
        let mut bits: u32 = 0;
        for &symbol in group {
            bits = (bits << 6) | value(symbol)?;
        }
        // A group of n symbols carries n*6 bits: 3 bytes for 4, 2 for 3, 1
        // for 2. Bits left over below the last byte must be zero.
        let (bytes, spare_bits) = match group.len() {
            4 => (3, 0),
            3 => (2, 2),
            _ => (1, 4),
        };
        if bits & ((1 << spare_bits) - 1) != 0 {
            return None;
        }
        let bits = bits >> spare_bits;
        for byte_index in (0..bytes).rev() {
            decoded.push((bits >> (8 * byte_index)) as u8);
        }
    }
    Some(decoded)
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
eve:{SHA512-CRYPT}$6$salt$hash
frank:$1$oldstyle$crypt
";

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
    fn unsupported_schemes_are_denied_and_reported_once_at_load() {
        let dir = TestDir::new("passwd-schemes");
        let (passwd, path) = authenticator(&dir, SAMPLE);
        assert_eq!(
            passwd.authenticate("eve", b"$6$salt$hash"),
            Err(Error::Denied)
        );
        assert_eq!(
            passwd.authenticate("frank", b"$1$oldstyle$crypt"),
            Err(Error::Denied)
        );
        // Nor does the dummy compared against in their place let them in.
        assert_eq!(
            passwd.authenticate("eve", DUMMY_PASSWORD),
            Err(Error::Denied)
        );
        let warnings = warnings(&passwd);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        let file = path.display().to_string();
        assert!(
            warnings[0].contains(&format!("{file}:8:")),
            "{}",
            warnings[0]
        );
        assert!(warnings[0].contains("SHA512-CRYPT"));
        assert!(
            warnings[1].contains(&format!("{file}:9:")),
            "{}",
            warnings[1]
        );
        assert!(warnings[1].contains("CRYPT"));
        for warning in &warnings {
            assert!(!warning.contains("hash") && !warning.contains("oldstyle"));
        }
    }

    #[test]
    fn a_password_in_braces_is_not_logged_as_a_scheme() {
        assert_eq!(
            parse_password("{my secret}pass"),
            Err(PasswordProblem::Unsupported(
                "(an unrecognised {...} prefix)".to_owned()
            ))
        );
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
    fn secrets_are_the_plaintext_of_plain_entries_only() {
        let dir = TestDir::new("passwd-secret");
        let (passwd, path) = authenticator(&dir, SAMPLE);
        let (secret, alice) = passwd.secret("alice").unwrap();
        assert_eq!(secret, b"wonderland");
        assert_eq!(alice.home.as_deref(), Some("/home/alice"));
        assert_eq!(passwd.secret("bob").unwrap().0, b"builder");
        assert_eq!(passwd.secret("carol").unwrap().0, b"secret:with:colons");
        for no_secret in ["eve", "frank", "mallory", "Alice", ""] {
            assert_eq!(passwd.secret(no_secret), Err(Error::Denied), "{no_secret}");
        }
        fs::write(&path, "alice:{PLAIN}changed\n").unwrap();
        assert_eq!(passwd.secret("alice").unwrap().0, b"changed");
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
    fn constant_time_eq_known_answers() {
        let check = |a: &[u8], b: &[u8]| bool::from(constant_time_eq(a, b));
        assert!(check(b"secret", b"secret"));
        assert!(check(b"", b""));
        assert!(!check(b"secret", b"secreT"));
        assert!(!check(b"secret", b"secret\0"));
        assert!(!check(b"secret\0", b"secret"));
        assert!(!check(b"secret", b""));
        assert!(!check(b"", b"\0"));
    }

    #[test]
    fn base64_known_answers() {
        assert_eq!(decode_base64("").unwrap(), b"");
        assert_eq!(decode_base64("Zg==").unwrap(), b"f");
        assert_eq!(decode_base64("Zg").unwrap(), b"f");
        assert_eq!(decode_base64("Zm8=").unwrap(), b"fo");
        assert_eq!(decode_base64("Zm9v").unwrap(), b"foo");
        assert_eq!(decode_base64("Zm9vYmFy").unwrap(), b"foobar");
        assert_eq!(decode_base64("+/+/").unwrap(), [0xfb, 0xff, 0xbf]);
        for bad in ["Z", "Zh==", "Zm9v=", "Zg===", "Zm 9v", "Zm9v!", "=Zg="] {
            assert_eq!(decode_base64(bad), None, "{bad}");
        }
    }

    #[test]
    fn debug_output_never_shows_a_password() {
        let dir = TestDir::new("passwd-debug");
        let (passwd, _) = authenticator(&dir, SAMPLE);
        let printed = format!("{passwd:?}");
        assert!(printed.contains("alice"));
        assert!(!printed.contains("wonderland"), "{printed}");
        assert!(!printed.contains("builder"));
    }
}
