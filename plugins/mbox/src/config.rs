//! The store's config section and where a user's files are.
//!
//! ```ron
//! (
//!     path: "/var/mail/%u",           // %u user, %n local part, %d domain, ~ home, %% a %
//!     variant: "mboxo",               // or "mboxrd"
//!     read_locks: ["fcntl"],          // taken while indexing and reading
//!     write_locks: ["dotlock", "fcntl"], // taken while rewriting
//!     lock_timeout_secs: 5,           // then the maildrop is IN-USE
//!     stale_dotlock_secs: 300,        // an older dotlock is broken
//!     index_dir: None,                // Some("/var/lib/pop3d/mbox") for <dir>/<user>.pop3d-index
//!     honour_x_uidl: true,            // use X-UIDL: headers as UIDLs
//! )
//! ```
//!
//! Every key is optional. `honour_x_uidl: false` gives exactly popa3d's
//! UIDLs (popa3d ignores `X-UIDL:`), which is what users moving from popa3d
//! want; it also stops a sender from choosing a message's UIDL with a
//! forged header (Dovecot's `pop3_reuse_xuidl` is off by default for that
//! reason). User names are checked before they go into a
//! path: empty names, names with `/`, `\`, NUL or other control characters,
//! names starting with `.` or containing `..` or `%`, and names longer than
//! 255 bytes are refused, so no name can reach outside its own file.

use crate::lock::LockKind;
use crate::quote::Variant;
use pop3d_plugin_api::user_name::{check_user_name, shorten_for_log, usable_name_part};
use pop3d_plugin_api::{log_warn, Error, UserInfo};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// The longest lock wait the config may ask for; longer would tie up a
/// worker thread for no good reason.
const MAX_LOCK_TIMEOUT_SECS: u64 = 300;

/// The config section as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    /// Template of the mbox path.
    #[serde(default = "default_path")]
    path: String,
    /// `mboxrd` or `mboxo`.
    #[serde(default = "default_variant")]
    variant: String,
    /// Locks held while indexing and reading.
    #[serde(default = "default_read_locks")]
    read_locks: Vec<String>,
    /// Locks held while rewriting.
    #[serde(default = "default_write_locks")]
    write_locks: Vec<String>,
    /// How long to wait for locks held by others.
    #[serde(default = "default_lock_timeout")]
    lock_timeout_secs: u64,
    /// Age after which a dotlock is presumed abandoned.
    #[serde(default = "default_stale_dotlock")]
    stale_dotlock_secs: u64,
    /// Template of the directory for index files.
    #[serde(default)]
    index_dir: Option<String>,
    /// Whether `X-UIDL:` headers are used as UIDLs.
    #[serde(default = "default_true")]
    honour_x_uidl: bool,
}

fn default_path() -> String {
    "/var/mail/%u".into()
}
/// mboxo, because that is what Debian's delivery agents write: procmail
/// (seen by experiment), Postfix's local and Exim's appendfile quote only
/// `From ` lines. Reading their files as mboxrd would strip the `>` of
/// lines that were `>From ` in the original message.
fn default_variant() -> String {
    "mboxo".into()
}
fn default_read_locks() -> Vec<String> {
    vec!["fcntl".into()]
}
fn default_write_locks() -> Vec<String> {
    vec!["dotlock".into(), "fcntl".into()]
}
fn default_lock_timeout() -> u64 {
    5
}
fn default_stale_dotlock() -> u64 {
    300
}
fn default_true() -> bool {
    true
}

/// The checked config.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where each user's mbox is.
    pub path: PathTemplate,
    /// How `>From ` lines are read.
    pub variant: Variant,
    /// Locks for indexing and reading, in the order they are taken.
    pub read_locks: Vec<LockKind>,
    /// Locks for rewriting, in the order they are taken.
    pub write_locks: Vec<LockKind>,
    /// Longest wait for a lock before answering IN-USE.
    pub lock_timeout: Duration,
    /// Age after which a dotlock is broken.
    pub stale_dotlock: Duration,
    /// Directory of index files; `None` puts them beside the mbox.
    pub index_dir: Option<PathTemplate>,
    /// Whether `X-UIDL:` headers become UIDLs.
    pub honour_x_uidl: bool,
}

impl Config {
    /// Parses and checks the RON text of the config section.
    pub fn parse(text: &str) -> Result<Config, Error> {
        let raw: RawConfig = ron::from_str(text).map_err(|e| {
            config_error(format!(
                "{e}; expected something like (path: \"/var/mail/%u\", variant: \"mboxrd\")"
            ))
        })?;
        let variant = match raw.variant.as_str() {
            "mboxrd" => Variant::Mboxrd,
            "mboxo" => Variant::Mboxo,
            other => {
                return Err(config_error(format!(
                    "variant {other:?} is unknown; use \"mboxrd\" or \"mboxo\""
                )))
            }
        };
        let read_locks = parse_locks("read_locks", &raw.read_locks)?;
        let write_locks = parse_locks("write_locks", &raw.write_locks)?;
        if !write_locks.contains(&LockKind::Dotlock) {
            log_warn!(
                "mbox: write_locks has no \"dotlock\": a delivery agent that opened the mbox before \
                 this store renamed its rewritten copy into place could append to the old file. \
                 Keep \"dotlock\" unless every writer checks the file after locking it"
            );
        }
        if raw.lock_timeout_secs > MAX_LOCK_TIMEOUT_SECS {
            return Err(config_error(format!(
                "lock_timeout_secs is {}; use at most {MAX_LOCK_TIMEOUT_SECS}",
                raw.lock_timeout_secs
            )));
        }
        if raw.stale_dotlock_secs == 0 {
            return Err(config_error(
                "stale_dotlock_secs is 0, which would break every dotlock at once; 300 is usual"
                    .into(),
            ));
        }
        let path = PathTemplate::parse("path", &raw.path)?;
        if !path.is_per_user() {
            return Err(config_error(format!(
                "path {:?} is the same file for every user; put %u, %n or ~ in it",
                raw.path
            )));
        }
        let index_dir = match raw.index_dir {
            Some(dir) => Some(PathTemplate::parse("index_dir", &dir)?),
            None => None,
        };
        Ok(Config {
            path,
            variant,
            read_locks,
            write_locks,
            lock_timeout: Duration::from_secs(raw.lock_timeout_secs),
            stale_dotlock: Duration::from_secs(raw.stale_dotlock_secs),
            index_dir,
            honour_x_uidl: raw.honour_x_uidl,
        })
    }

    /// The files of `user`'s maildrop, refusing names that could reach
    /// another user's file.
    pub fn files_for(&self, user: &UserInfo) -> Result<UserFiles, Error> {
        if let Err(reason) = check_user_name(&user.name) {
            log_warn!(
                "mbox: refusing user name {:?}: {reason}",
                shorten_for_log(&user.name)
            );
            return Err(Error::PermFail(format!(
                "user name refused by the mbox store: {reason}"
            )));
        }
        let mbox = self.path.expand(user)?;
        let Some(file_name) = mbox.file_name().and_then(|name| name.to_str()) else {
            return Err(Error::PermFail(format!(
                "mbox path {} has no file name; fix `path` in the store config",
                mbox.display()
            )));
        };
        let index = match &self.index_dir {
            Some(dir) => dir.expand(user)?.join(format!("{}.pop3d-index", user.name)),
            None => mbox.with_file_name(format!(".{file_name}.pop3d-index")),
        };
        let rewrite = mbox.with_file_name(format!(".{file_name}.pop3d-tmp"));
        let mut dotlock = mbox.clone().into_os_string();
        dotlock.push(".lock");
        Ok(UserFiles {
            mbox,
            index,
            rewrite,
            dotlock: PathBuf::from(dotlock),
        })
    }
}

/// The paths that make up one user's maildrop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserFiles {
    /// The mbox itself.
    pub mbox: PathBuf,
    /// The index cache, also locked (`flock`) for the whole session.
    pub index: PathBuf,
    /// Where the rewritten mbox is built before it is renamed into place.
    pub rewrite: PathBuf,
    /// The dotlock that delivery agents also use: `<mbox>.lock`.
    pub dotlock: PathBuf,
}

fn config_error(text: String) -> Error {
    Error::PermFail(format!("mbox store config: {text}"))
}

fn parse_locks(key: &str, names: &[String]) -> Result<Vec<LockKind>, Error> {
    let mut kinds = Vec::with_capacity(names.len());
    for name in names {
        let kind = match name.as_str() {
            "dotlock" => LockKind::Dotlock,
            "fcntl" => LockKind::Fcntl,
            other => {
                return Err(config_error(format!(
                    "{key} has {other:?}; the lock kinds are \"dotlock\" and \"fcntl\""
                )))
            }
        };
        if kinds.contains(&kind) {
            return Err(config_error(format!("{key} lists {name:?} twice")));
        }
        kinds.push(kind);
    }
    Ok(kinds)
}

/// One piece of a path template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// Text copied as is.
    Literal(String),
    /// `%u`: the whole user name.
    User,
    /// `%n`: the part before `@`.
    LocalPart,
    /// `%d`: the part after `@`.
    Domain,
    /// A leading `~`: the user's home directory.
    Home,
}

/// A path with `%u`, `%n`, `%d` and a leading `~`, checked once at start-up
/// so expanding it per login cannot fail for configuration reasons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    /// The template split into text and variables, in order.
    parts: Vec<Segment>,
}

impl PathTemplate {
    /// Parses the template given for `key`.
    pub fn parse(key: &str, text: &str) -> Result<PathTemplate, Error> {
        let mut parts = Vec::new();
        let rest = if let Some(after) = text.strip_prefix('~') {
            if !(after.is_empty() || after.starts_with('/')) {
                return Err(config_error(format!(
                    "{key} {text:?}: ~user is not supported; use ~/ (the user's home) or %u"
                )));
            }
            parts.push(Segment::Home);
            after
        } else if text.starts_with('/') {
            text
        } else {
            return Err(config_error(format!(
                "{key} {text:?} is not absolute; start it with / or ~/"
            )));
        };
        let mut literal = String::new();
        let mut chars = rest.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                literal.push(c);
                continue;
            }
            let part = match chars.next() {
                Some('%') => {
                    literal.push('%');
                    continue;
                }
                Some('u') => Segment::User,
                Some('n') => Segment::LocalPart,
                Some('d') => Segment::Domain,
                Some(other) => {
                    return Err(config_error(format!(
                        "{key} {text:?} has %{other}; the variables are %u, %n, %d and %%"
                    )))
                }
                None => {
                    return Err(config_error(format!(
                        "{key} {text:?} ends with a lone %; write %% for a percent sign"
                    )))
                }
            };
            if !literal.is_empty() {
                parts.push(Segment::Literal(std::mem::take(&mut literal)));
            }
            parts.push(part);
        }
        if !literal.is_empty() {
            parts.push(Segment::Literal(literal));
        }
        Ok(PathTemplate { parts })
    }

    /// Whether two users can never get the same path.
    fn is_per_user(&self) -> bool {
        self.parts
            .iter()
            .any(|part| matches!(part, Segment::User | Segment::LocalPart | Segment::Home))
    }

    /// The path for `user`, whose name was already checked.
    fn expand(&self, user: &UserInfo) -> Result<PathBuf, Error> {
        let name = user.name.as_str();
        let (local_part, domain) = name.split_once('@').unwrap_or((name, ""));
        let mut path = String::new();
        for part in &self.parts {
            match part {
                Segment::Literal(text) => path.push_str(text),
                Segment::User => path.push_str(name),
                Segment::LocalPart => {
                    path.push_str(name_part(name, local_part, "%n", "local part")?)
                }
                Segment::Domain => path.push_str(name_part(name, domain, "%d", "domain")?),
                Segment::Home => {
                    let home = user.home.as_deref().unwrap_or("");
                    if !home.starts_with('/') {
                        return Err(Error::PermFail(format!(
                            "user {name} has no absolute home directory, but the mbox store's \
                             path starts with ~; give the user a home or use %u"
                        )));
                    }
                    path.push_str(home);
                }
            }
        }
        Ok(PathBuf::from(path))
    }
}

/// `value`, the `%n` or `%d` of `name`, if it can stand alone in a path.
fn name_part<'a>(name: &str, value: &'a str, variable: &str, what: &str) -> Result<&'a str, Error> {
    if !usable_name_part(value) {
        log_warn!(
            "mbox: refusing user name {:?}: its {what} ({variable}) is empty or starts with a dot",
            shorten_for_log(name)
        );
        return Err(Error::PermFail(format!(
            "user name refused by the mbox store: its {what} ({variable}) is empty or starts with a dot"
        )));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> UserInfo {
        UserInfo {
            name: name.into(),
            home: Some(format!("/home/{name}")),
            extra: Vec::new(),
        }
    }

    #[test]
    fn defaults() {
        let config = Config::parse("()").unwrap();
        assert_eq!(config.variant, Variant::Mboxo);
        assert_eq!(config.read_locks, vec![LockKind::Fcntl]);
        assert_eq!(config.write_locks, vec![LockKind::Dotlock, LockKind::Fcntl]);
        assert_eq!(config.lock_timeout, Duration::from_secs(5));
        assert_eq!(config.stale_dotlock, Duration::from_secs(300));
        assert!(config.honour_x_uidl);
        let files = config.files_for(&user("alice")).unwrap();
        assert_eq!(files.mbox, PathBuf::from("/var/mail/alice"));
        assert_eq!(files.dotlock, PathBuf::from("/var/mail/alice.lock"));
        assert_eq!(files.index, PathBuf::from("/var/mail/.alice.pop3d-index"));
        assert_eq!(files.rewrite, PathBuf::from("/var/mail/.alice.pop3d-tmp"));
    }

    #[test]
    fn full_config() {
        let config = Config::parse(
            r#"(path: "~/mail/%d/%n%%", variant: "mboxrd", read_locks: [], write_locks: ["fcntl", "dotlock"],
                lock_timeout_secs: 0, stale_dotlock_secs: 60, index_dir: Some("/var/lib/pop3d/%d"),
                honour_x_uidl: false)"#,
        )
        .unwrap();
        assert_eq!(config.variant, Variant::Mboxrd);
        assert!(config.read_locks.is_empty());
        assert_eq!(config.write_locks, vec![LockKind::Fcntl, LockKind::Dotlock]);
        let files = config.files_for(&user("bob@example.org")).unwrap();
        assert_eq!(
            files.mbox,
            PathBuf::from("/home/bob@example.org/mail/example.org/bob%")
        );
        assert_eq!(
            files.index,
            PathBuf::from("/var/lib/pop3d/example.org/bob@example.org.pop3d-index")
        );
    }

    #[test]
    fn config_errors_say_what_to_fix() {
        let cases = [
            ("(pathh: \"/x/%u\")", "pathh"),
            ("(variant: \"mboxcl2\")", "mboxcl2"),
            ("(read_locks: [\"flock\"])", "flock"),
            ("(write_locks: [\"fcntl\", \"fcntl\"])", "twice"),
            ("(lock_timeout_secs: 1000)", "at most"),
            ("(stale_dotlock_secs: 0)", "stale_dotlock_secs"),
            ("(path: \"/var/mail/all\")", "every user"),
            ("(path: \"var/%u\")", "absolute"),
            ("(path: \"/var/%x\")", "%x"),
            ("(path: \"/var/%u%\")", "lone %"),
            ("(path: \"~bob/mbox\")", "~user"),
            ("(index_dir: Some(\"rel\"))", "absolute"),
        ];
        for (text, needle) in cases {
            let error = Config::parse(text).unwrap_err();
            assert!(matches!(error, Error::PermFail(_)), "{text}");
            assert!(
                error.message().contains(needle),
                "{text}: {}",
                error.message()
            );
        }
    }

    #[test]
    fn dangerous_user_names_are_refused() {
        let config = Config::parse("(path: \"/var/mail/%d/%n\")").unwrap();
        let long = "a".repeat(256);
        for name in [
            "",
            ".",
            "..",
            ".hidden",
            "a/b",
            "../etc",
            "a\\b",
            "a\0b",
            "a\nb",
            "a\u{7f}b",
            "a..b",
            "%2e%2e",
            "x%2fy",
            "nodomain",
            "@example.org",
            "bob@.hidden",
            long.as_str(),
        ] {
            assert!(
                matches!(config.files_for(&user(name)), Err(Error::PermFail(_))),
                "{name:?} was accepted"
            );
        }
        assert!(config.files_for(&user("bob@example.org")).is_ok());
        let homeless = UserInfo {
            name: "carol".into(),
            home: None,
            extra: Vec::new(),
        };
        let config = Config::parse("(path: \"~/mbox\")").unwrap();
        assert!(matches!(
            config.files_for(&homeless),
            Err(Error::PermFail(_))
        ));
    }
}
