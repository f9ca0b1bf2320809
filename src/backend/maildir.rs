//! The maildir store: each user's mail is a directory with `cur/`, `new/`
//! and `tmp/`, one file per message.
//!
//! Opening a maildrop does four things:
//!
//! 1. **Find it.** The configured root is a template (`/var/mail/%u/Maildir`,
//!    `~/Maildir`, `/srv/mail/%d/%n`). The user name is checked before it is
//!    put into a path, so no name can point outside the root.
//! 2. **Lock it.** An in-process table stops two sessions of this server, and
//!    an OS lock on `pop3d.lock` inside the maildir stops other pop3d
//!    processes. Either one held gives [`BackendError::InUse`]. The locks are
//!    released when the maildrop is committed or dropped, unwinding included.
//! 3. **Snapshot it.** Regular, non-hidden files in `cur/` and `new/` (never
//!    `tmp/`, where deliveries are still being written), ordered by the
//!    delivery time at the start of their names. The snapshot never changes
//!    during the session: mail delivered meanwhile waits for the next one.
//! 4. **Size it.** POP3 reports the size as transmitted, with CRLF line
//!    ends, which differs from the file size when the file uses LF. A
//!    `,W=<n>` in the file name (Dovecot, Maildir++) gives it for free;
//!    otherwise the file is read once and the result kept in `pop3d-sizes`
//!    in the maildir, valid while the file's size and mtime stay the same, so
//!    a login to a large maildrop costs a `stat` per message, not a read.
//!
//! Unique ids are the file's base name (the part before `:`), which survives
//! the `new/` to `cur/` move and flag changes made by other mail programs.
//! Base names that are not valid POP3 unique ids get a digest instead; see
//! [`unique_ids`].
//!
//! Other programs may move or delete files while a session is open. Opening a
//! message looks it up again by base name if its path has gone, a message
//! deleted by someone else is [`BackendError::NotFound`], and deleting a file
//! that is already gone at commit is not an error.
//!
//! This store keeps no global state and is `Send + Sync`: it can later be
//! wrapped in the plugin ABI unchanged.

use super::{BackendError, Maildrop, MessageInfo, MessageReader, Store, UserInfo};
use serde::Deserialize;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, Write};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// The file inside a maildir that other pop3d processes lock too.
const LOCK_FILE_NAME: &str = "pop3d.lock";
/// The wire-size cache inside a maildir.
const SIZE_CACHE_NAME: &str = "pop3d-sizes";
/// The first line of the size cache; a file with another first line is
/// ignored, so the format can change without misreading old files.
const SIZE_CACHE_HEADER: &str = "pop3d-sizes 1";
/// Reads while computing a wire size use buffers of this size.
const READ_BUFFER_SIZE: usize = 64 * 1024;
/// Longest user name accepted; also the limit of most file systems for one
/// path component.
const MAX_USER_NAME_LEN: usize = 255;
/// Longest unique id POP3 allows (RFC 1939, section 7).
const MAX_UID_LEN: usize = 70;

/// The `config` section of a maildir store.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MaildirConfig {
    /// Where a user's maildir is, as a template: `%u` the full user name,
    /// `%n` the part before `@`, `%d` the part after it, `%%` a literal `%`,
    /// and a leading `~` the user's home directory.
    pub root: String,
}

/// Why a maildir configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MaildirConfigError {
    /// `root` is the empty string.
    EmptyRoot,
    /// `root` is neither absolute nor starts with `~`; a relative path would
    /// depend on the server's working directory.
    RelativeRoot(String),
    /// `root` starts with `~name`; only the user's own home (`~` or `~/..`)
    /// is supported.
    TildeUser(String),
    /// `root` uses a `%` variable that does not exist.
    UnknownVariable { root: String, variable: char },
    /// `root` ends in a single `%`.
    TrailingPercent(String),
    /// `root` has nothing that differs between users, so every user would
    /// share one maildrop.
    NotPerUser(String),
    /// `root` varies only by domain, so all users of a domain would share one
    /// maildrop.
    DomainOnly(String),
}

impl fmt::Display for MaildirConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MaildirConfigError::EmptyRoot => {
                write!(f, "root is empty; set it to e.g. \"/var/mail/%u/Maildir\"")
            }
            MaildirConfigError::RelativeRoot(root) => write!(
                f,
                "root {root:?} is a relative path; start it with / or with ~ (the user's home)"
            ),
            MaildirConfigError::TildeUser(root) => write!(
                f,
                "root {root:?}: only a plain ~ (the logged-in user's home) is supported, not ~name"
            ),
            MaildirConfigError::UnknownVariable { root, variable } => write!(
                f,
                "root {root:?}: unknown variable %{variable}; use %u (user), %n (part before @), \
                 %d (part after @) or %% (a literal %)"
            ),
            MaildirConfigError::TrailingPercent(root) => write!(
                f,
                "root {root:?} ends in a lone %; write %% for a literal %"
            ),
            MaildirConfigError::NotPerUser(root) => write!(
                f,
                "root {root:?} is the same for every user, so all users would share one \
                 maildrop; put %u (or %n, or a leading ~) in it"
            ),
            MaildirConfigError::DomainOnly(root) => write!(
                f,
                "root {root:?} varies only by domain (%d), so all users of a domain would share \
                 one maildrop; add %n or use %u"
            ),
        }
    }
}

impl std::error::Error for MaildirConfigError {}

/// One part of a parsed root template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum TemplatePart {
    /// Text copied as is (with `%%` already turned into `%`).
    Literal(String),
    /// The user's home directory; only ever the first part.
    Home,
    /// `%u`: the full user name.
    User,
    /// `%n`: the user name up to the first `@`.
    LocalPart,
    /// `%d`: the user name after the first `@`.
    Domain,
}

/// A parsed maildir root template, checked once at start-up so expanding it
/// per login cannot fail for configuration reasons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootTemplate {
    /// The template split into text and variables, in order.
    parts: Vec<TemplatePart>,
}

impl RootTemplate {
    /// Parses and checks a template such as `/var/mail/%d/%n/Maildir`.
    pub fn parse(root: &str) -> Result<RootTemplate, MaildirConfigError> {
        if root.is_empty() {
            return Err(MaildirConfigError::EmptyRoot);
        }
        let mut parts = Vec::new();
        let rest = if let Some(after_tilde) = root.strip_prefix('~') {
            if !(after_tilde.is_empty() || after_tilde.starts_with('/')) {
                return Err(MaildirConfigError::TildeUser(root.to_owned()));
            }
            parts.push(TemplatePart::Home);
            after_tilde
        } else if root.starts_with('/') {
            root
        } else {
            return Err(MaildirConfigError::RelativeRoot(root.to_owned()));
        };

        let mut literal = String::new();
        let mut chars = rest.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                literal.push(c);
                continue;
            }
            let variable = match chars.next() {
                Some('%') => {
                    literal.push('%');
                    continue;
                }
                Some('u') => TemplatePart::User,
                Some('n') => TemplatePart::LocalPart,
                Some('d') => TemplatePart::Domain,
                Some(other) => {
                    return Err(MaildirConfigError::UnknownVariable {
                        root: root.to_owned(),
                        variable: other,
                    })
                }
                None => return Err(MaildirConfigError::TrailingPercent(root.to_owned())),
            };
            if !literal.is_empty() {
                parts.push(TemplatePart::Literal(std::mem::take(&mut literal)));
            }
            parts.push(variable);
        }
        if !literal.is_empty() {
            parts.push(TemplatePart::Literal(literal));
        }

        let per_user = parts.iter().any(|part| {
            matches!(
                part,
                TemplatePart::Home | TemplatePart::User | TemplatePart::LocalPart
            )
        });
        if !per_user {
            return Err(if parts.contains(&TemplatePart::Domain) {
                MaildirConfigError::DomainOnly(root.to_owned())
            } else {
                MaildirConfigError::NotPerUser(root.to_owned())
            });
        }
        Ok(RootTemplate { parts })
    }

    /// The maildir of `user`. Refuses (with [`BackendError::PermFail`]) user
    /// names that could lead outside the root or onto another user's
    /// maildir, and `~` for users without an absolute home.
    pub fn expand(&self, user: &UserInfo) -> Result<PathBuf, BackendError> {
        let name = user.name.as_str();
        if let Err(reason) = check_user_name(name) {
            log::warn!(
                "maildir: refusing user name {:?}: {reason}",
                shorten_for_log(name)
            );
            return Err(BackendError::PermFail(format!(
                "user name refused by the maildir store: {reason}"
            )));
        }
        let (local_part, domain) = name.split_once('@').unwrap_or((name, ""));

        let mut path = String::new();
        for part in &self.parts {
            match part {
                TemplatePart::Literal(text) => path.push_str(text),
                TemplatePart::User => path.push_str(name),
                TemplatePart::LocalPart => {
                    path.push_str(checked_name_part(name, local_part, "%n", "local part")?)
                }
                TemplatePart::Domain => {
                    path.push_str(checked_name_part(name, domain, "%d", "domain")?)
                }
                TemplatePart::Home => {
                    let home = user.home.as_deref().unwrap_or("");
                    if home.is_empty() {
                        return Err(BackendError::PermFail(format!(
                            "user {name} has no home directory in the user database, but the \
                             maildir root starts with ~; give the user a home or use %u"
                        )));
                    }
                    if !home.starts_with('/') {
                        return Err(BackendError::PermFail(format!(
                            "user {name} has a relative home directory {home:?}; the maildir \
                             root starts with ~, which needs an absolute home"
                        )));
                    }
                    path.push_str(home);
                }
            }
        }
        Ok(PathBuf::from(path))
    }
}

/// Why `name` may not be used in a path, if it may not.
///
/// Besides separators and dot names, `%` is refused so a name can never be
/// mistaken for something that decodes to one (`%2e%2e`), and control
/// characters so logs and file names stay readable.
fn check_user_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("it is empty");
    }
    if name.len() > MAX_USER_NAME_LEN {
        return Err("it is longer than 255 bytes");
    }
    if name.contains(['/', '\\']) {
        return Err("it contains a path separator");
    }
    if name.chars().any(char::is_control) {
        return Err("it contains a control character");
    }
    if name.starts_with('.') {
        return Err("it starts with a dot");
    }
    if name.contains("..") {
        return Err("it contains ..");
    }
    if name.contains('%') {
        return Err("it contains %");
    }
    Ok(())
}

/// `value` (the `%n` or `%d` of `name`), if it is usable as a path
/// component on its own: an empty or dot-led part would put the maildir on a
/// parent directory or on another user's path.
fn checked_name_part<'a>(
    name: &str,
    value: &'a str,
    variable: &str,
    what: &str,
) -> Result<&'a str, BackendError> {
    if value.is_empty() || value.starts_with('.') {
        log::warn!(
            "maildir: refusing user name {:?}: its {what} ({variable}) is empty or starts with a dot",
            shorten_for_log(name)
        );
        return Err(BackendError::PermFail(format!(
            "user name refused by the maildir store: its {what} ({variable}) is empty or starts \
             with a dot"
        )));
    }
    Ok(value)
}

/// At most the first 64 characters of `text`, so a hostile name cannot
/// flood the log.
fn shorten_for_log(text: &str) -> &str {
    match text.char_indices().nth(64) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

/// Maildirs open in this process. Shared by the store and its maildrops so a
/// maildrop can release its entry when it is dropped.
type OpenMaildirs = Arc<Mutex<HashSet<PathBuf>>>;

/// Locks `open`, ignoring poisoning: the set is only ever changed by a
/// single `insert` or `remove`, so a panic elsewhere cannot leave it
/// half-updated.
fn lock_table(open: &OpenMaildirs) -> MutexGuard<'_, HashSet<PathBuf>> {
    open.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The maildir store: turns a user into an open, locked maildrop.
#[derive(Debug)]
pub struct MaildirStore {
    /// Where each user's maildir is.
    root: RootTemplate,
    /// Maildirs held by open sessions of this store.
    open_maildirs: OpenMaildirs,
}

impl MaildirStore {
    /// A store for `config`, checked so that every user gets their own
    /// maildir.
    pub fn new(config: MaildirConfig) -> Result<MaildirStore, MaildirConfigError> {
        Ok(MaildirStore {
            root: RootTemplate::parse(&config.root)?,
            open_maildirs: Arc::default(),
        })
    }

    /// The maildir `user`'s mail is in (it may not exist).
    pub fn maildir_of(&self, user: &UserInfo) -> Result<PathBuf, BackendError> {
        self.root.expand(user)
    }
}

impl Store for MaildirStore {
    fn open(&self, user: &UserInfo) -> Result<Box<dyn Maildrop>, BackendError> {
        let maildir = self.root.expand(user)?;
        let lock = MaildirLock::acquire(&self.open_maildirs, &maildir)?;
        let snapshot = if lock.file.is_some() {
            take_snapshot(&maildir)?
        } else {
            // No maildir (or no cur/ and new/ in it): the user has no mail
            // yet. Nothing is created, so a typo in the root cannot litter
            // the disk.
            Snapshot::default()
        };
        log::debug!(
            "maildir: opened {} for {}: {} messages, {} sizes read from files",
            maildir.display(),
            user.name,
            snapshot.messages.len(),
            snapshot.sizes_computed
        );
        Ok(Box::new(MaildirMaildrop {
            maildir,
            messages: snapshot.messages,
            files: snapshot.files,
            _lock: lock,
        }))
    }
}

/// The hold one session has on one maildir: an entry in the in-process
/// table and, when the maildir exists, an OS lock on its `pop3d.lock`.
/// Dropping it releases both.
#[derive(Debug)]
struct MaildirLock {
    /// The table the entry is in.
    open_maildirs: OpenMaildirs,
    /// The entry: the maildir's path.
    maildir: PathBuf,
    /// The locked `pop3d.lock`, kept open because closing it releases the OS
    /// lock. `None` when there is no maildir yet (no `cur/` or `new/`):
    /// there is nothing on disk to protect, and nothing is created.
    file: Option<File>,
}

impl MaildirLock {
    fn acquire(open_maildirs: &OpenMaildirs, maildir: &Path) -> Result<MaildirLock, BackendError> {
        if !lock_table(open_maildirs).insert(maildir.to_path_buf()) {
            return Err(BackendError::InUse(format!(
                "{} is open in another session",
                maildir.display()
            )));
        }
        // From here on, dropping `lock` on any error path frees the entry.
        let mut lock = MaildirLock {
            open_maildirs: Arc::clone(open_maildirs),
            maildir: maildir.to_path_buf(),
            file: None,
        };
        // A directory without `cur/` and `new/` holds no mail yet: nothing
        // on disk needs protecting, and nothing is created in it.
        if !is_directory(&maildir.join("cur"))? && !is_directory(&maildir.join("new"))? {
            return Ok(lock);
        }
        let lock_path = maildir.join(LOCK_FILE_NAME);
        let file = match OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
        {
            Ok(file) => file,
            // Removed since the check above: no mail either.
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(lock),
            Err(err) => {
                return Err(io_failure(
                    &format!("cannot open lock file {}", lock_path.display()),
                    &err,
                ))
            }
        };
        match file.try_lock() {
            Ok(()) => {
                lock.file = Some(file);
                Ok(lock)
            }
            Err(TryLockError::WouldBlock) => Err(BackendError::InUse(format!(
                "{} is locked by another process",
                lock_path.display()
            ))),
            Err(TryLockError::Error(err)) => Err(io_failure(
                &format!("cannot lock {}", lock_path.display()),
                &err,
            )),
        }
    }
}

/// Whether `path` is a directory; missing is `false`, but a path that
/// cannot be looked at is an error, so a maildir the server may not read is
/// reported rather than shown as empty.
fn is_directory(path: &Path) -> Result<bool, BackendError> {
    match fs::metadata(path) {
        Ok(metadata) => Ok(metadata.is_dir()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(err) => Err(io_failure(
            &format!("cannot look at {}", path.display()),
            &err,
        )),
    }
}

impl Drop for MaildirLock {
    fn drop(&mut self) {
        // The OS lock goes first: a session that finds the table entry gone
        // must not then find the file still locked and answer IN-USE.
        drop(self.file.take());
        lock_table(&self.open_maildirs).remove(&self.maildir);
    }
}

/// One message file of the snapshot, as needed to find it again.
#[derive(Debug, Clone)]
struct MessageFile {
    /// The file name up to the first `:`; stays the same when another
    /// program moves the file to `cur/` or changes its flags.
    base: Vec<u8>,
    /// Where the file was last seen.
    path: PathBuf,
}

/// What [`take_snapshot`] found.
#[derive(Debug, Default)]
struct Snapshot {
    /// Sizes and unique ids, in message-number order.
    messages: Vec<MessageInfo>,
    /// The file behind each entry of `messages`.
    files: Vec<MessageFile>,
    /// How many files had to be read to learn their size (for the log).
    sizes_computed: usize,
}

/// A file found in `cur/` or `new/`, before it is sized.
#[derive(Debug)]
struct Found {
    /// Seconds at the start of the name, for ordering by delivery time.
    delivered: u64,
    /// The name up to the first `:`.
    base: Vec<u8>,
    /// The full file name, to break ties deterministically.
    name: Vec<u8>,
    /// Where it is; its `metadata` is a `stat` relative to the open
    /// directory, cheaper than one by full path.
    dir_entry: fs::DirEntry,
}

/// Lists, orders, sizes and names the messages of an existing maildir.
fn take_snapshot(maildir: &Path) -> Result<Snapshot, BackendError> {
    let mut found = Vec::new();
    let mut seen_bases = HashSet::new();
    // `cur/` before `new/`: a file moved from `new/` to `cur/` between the
    // two listings is then missed (it shows up next session) rather than
    // listed twice.
    for subdir in ["cur", "new"] {
        for (name, dir_entry) in list_message_files(&maildir.join(subdir))? {
            let base = base_name(&name).to_vec();
            if seen_bases.insert(base.clone()) {
                found.push(Found {
                    delivered: delivery_time(&base),
                    base,
                    name,
                    dir_entry,
                });
            }
        }
    }
    found.sort_by(|a, b| (a.delivered, &a.base, &a.name).cmp(&(b.delivered, &b.base, &b.name)));

    let mut cache = SizeCache::load(maildir);
    let mut sizes_computed = 0;
    let mut files = Vec::with_capacity(found.len());
    let mut wire_sizes = Vec::with_capacity(found.len());
    for entry in found {
        let wire_size = {
            match size_from_cache_or_file(&entry, &mut cache) {
                Ok((wire_size, computed)) => {
                    sizes_computed += usize::from(computed);
                    wire_size
                }
                // Deleted by another program since the listing: it is
                // simply not part of this snapshot.
                Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
                Err(err) => {
                    // One unreadable file should not lock the user out of
                    // the rest of their mail; the operator learns of it here.
                    log::error!(
                        "maildir: leaving {} out of the maildrop: cannot read it: {err}",
                        entry.dir_entry.path().display()
                    );
                    continue;
                }
            }
        };
        wire_sizes.push(wire_size);
        files.push(MessageFile {
            base: entry.base,
            path: entry.dir_entry.path(),
        });
    }
    cache.save_if_changed(maildir);

    let bases: Vec<&[u8]> = files.iter().map(|file| file.base.as_slice()).collect();
    let messages = unique_ids(&bases)
        .into_iter()
        .zip(wire_sizes)
        .map(|(uid, wire_size)| MessageInfo { wire_size, uid })
        .collect();
    Ok(Snapshot {
        messages,
        files,
        sizes_computed,
    })
}

/// The regular, non-hidden files of `dir` (names and entries). A missing
/// directory has none.
fn list_message_files(dir: &Path) -> Result<Vec<(Vec<u8>, fs::DirEntry)>, BackendError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(io_failure(&format!("cannot list {}", dir.display()), &err)),
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry =
            entry.map_err(|err| io_failure(&format!("cannot list {}", dir.display()), &err))?;
        let name = entry.file_name().into_vec();
        if name.starts_with(b".") {
            continue;
        }
        // Symlinks are skipped too (file_type does not follow them): a link
        // to a file outside the maildir must not be served as mail.
        match entry.file_type() {
            Ok(file_type) if file_type.is_file() => files.push((name, entry)),
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => {
                return Err(io_failure(
                    &format!("cannot inspect {}", entry.path().display()),
                    &err,
                ))
            }
        }
    }
    Ok(files)
}

/// The part of a maildir file name before the flags (`:2,S`).
fn base_name(name: &[u8]) -> &[u8] {
    match memchr::memchr(b':', name) {
        Some(colon) => &name[..colon],
        None => name,
    }
}

/// The delivery time in seconds that maildir names start with; names that
/// do not start with digits sort after all others.
fn delivery_time(base: &[u8]) -> u64 {
    let digits = base.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return u64::MAX;
    }
    base[..digits].iter().fold(0u64, |seconds, digit| {
        seconds
            .saturating_mul(10)
            .saturating_add(u64::from(digit - b'0'))
    })
}

/// The `,W=<n>` size in a base name: the size with CRLF line ends, which
/// Dovecot and other Maildir++ deliverers record at delivery.
///
/// Dovecot's W= does not count the CRLF pop3d sends after a last line
/// without a newline, so the caller checks the file's last byte once (and
/// caches the result) instead of trusting the hint alone.
fn wire_size_hint(base: &[u8]) -> Option<u64> {
    let mut rest = base;
    while let Some(start) = memchr::memmem::find(rest, b",W=") {
        let after = &rest[start + 3..];
        let digits = after.iter().take_while(|b| b.is_ascii_digit()).count();
        let ends_cleanly = after.get(digits).is_none_or(|&b| b == b',');
        if digits > 0 && ends_cleanly {
            let text = std::str::from_utf8(&after[..digits]).ok()?;
            return text.parse().ok();
        }
        rest = after;
    }
    None
}

/// The wire size of `entry`, from the cache when the file's size and mtime
/// match, else by reading the file (and then cached). The flag says whether
/// the file was read.
fn size_from_cache_or_file(entry: &Found, cache: &mut SizeCache) -> io::Result<(u64, bool)> {
    // Does not follow symlinks, like `fs::symlink_metadata`.
    let metadata = entry.dir_entry.metadata()?;
    let stamp = FileStamp::of(&metadata);
    if let Some(wire_size) = cache.lookup(&entry.base, stamp) {
        return Ok((wire_size, false));
    }
    let mut file = open_regular_file(&entry.dir_entry.path())?;
    let wire_size = match wire_size_hint(&entry.base) {
        Some(hint) => hint + unterminated_last_line_extra(&mut file, metadata.len())?,
        None => wire_size_of(file)?,
    };
    cache.insert(&entry.base, stamp, wire_size);
    Ok((wire_size, true))
}

/// The CRLF the wire adds after a non-empty message whose last byte is not a
/// LF: 2 octets, or 0. Reads one byte.
fn unterminated_last_line_extra(file: &mut File, len: u64) -> io::Result<u64> {
    if len == 0 {
        return Ok(0);
    }
    file.seek(io::SeekFrom::Start(len - 1))?;
    let mut last = [0u8; 1];
    file.read_exact(&mut last)?;
    Ok(if last[0] == b'\n' { 0 } else { 2 })
}

/// The number of octets RETR sends for a message with these raw bytes,
/// before dot-stuffing: every LF not preceded by CR becomes CRLF, and a
/// non-empty message not ending in LF gets a CRLF appended. A lone CR is
/// sent as is.
///
/// Reads `message` to its end in 64 KiB reads.
pub fn wire_size_of(mut message: impl Read) -> io::Result<u64> {
    let mut buffer = vec![0u8; READ_BUFFER_SIZE];
    let mut total: u64 = 0;
    let mut bare_line_feeds: u64 = 0;
    let mut last_byte: Option<u8> = None;
    loop {
        let read = match message.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => read,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        };
        let chunk = &buffer[..read];
        for position in memchr::memchr_iter(b'\n', chunk) {
            let before = if position == 0 {
                last_byte
            } else {
                Some(chunk[position - 1])
            };
            if before != Some(b'\r') {
                bare_line_feeds += 1;
            }
        }
        last_byte = Some(chunk[read - 1]);
        total += read as u64;
    }
    let final_line_end = match last_byte {
        Some(b'\n') | None => 0,
        Some(_) => 2,
    };
    Ok(total + bare_line_feeds + final_line_end)
}

/// What the size cache remembers of a file to know it has not changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    /// Size in bytes.
    size: u64,
    /// Modification time, seconds since the epoch.
    mtime_seconds: i64,
    /// Modification time, nanoseconds within the second.
    mtime_nanos: i64,
}

impl FileStamp {
    fn of(metadata: &fs::Metadata) -> FileStamp {
        FileStamp {
            size: metadata.len(),
            mtime_seconds: metadata.mtime(),
            mtime_nanos: metadata.mtime_nsec(),
        }
    }
}

/// The per-maildir cache of computed wire sizes (`pop3d-sizes`).
///
/// Format, one line each after the header line `pop3d-sizes 1`:
/// `<base name> <file size> <mtime seconds>.<mtime nanoseconds> <wire size>`.
/// Only base names of printable ASCII without spaces are cached. A file
/// that does not parse is ignored as a whole (and rewritten): the cache is
/// only ever an optimisation.
#[derive(Debug, Default)]
struct SizeCache {
    /// Entries read from the file, by base name.
    loaded: HashMap<Vec<u8>, (FileStamp, u64)>,
    /// Entries for the files of this snapshot, to be written back.
    current: Vec<(Vec<u8>, FileStamp, u64)>,
    /// Whether `current` differs from what the file holds.
    changed: bool,
}

impl SizeCache {
    fn load(maildir: &Path) -> SizeCache {
        let path = maildir.join(SIZE_CACHE_NAME);
        let text = match fs::read(&path) {
            Ok(text) => text,
            Err(err) => {
                if err.kind() != io::ErrorKind::NotFound {
                    log::warn!("maildir: ignoring size cache {}: {err}", path.display());
                }
                return SizeCache::default();
            }
        };
        match parse_size_cache(&text) {
            Some(loaded) => SizeCache {
                loaded,
                ..SizeCache::default()
            },
            None => {
                log::warn!(
                    "maildir: ignoring corrupt size cache {}; it will be rewritten",
                    path.display()
                );
                SizeCache {
                    changed: true,
                    ..SizeCache::default()
                }
            }
        }
    }

    fn lookup(&mut self, base: &[u8], stamp: FileStamp) -> Option<u64> {
        match self.loaded.get(base) {
            Some(&(cached_stamp, wire_size)) if cached_stamp == stamp => {
                self.current.push((base.to_vec(), stamp, wire_size));
                Some(wire_size)
            }
            _ => None,
        }
    }

    fn insert(&mut self, base: &[u8], stamp: FileStamp, wire_size: u64) {
        if is_valid_uid(base) {
            self.current.push((base.to_vec(), stamp, wire_size));
            self.changed = true;
        }
    }

    /// Writes the cache back if it gained, lost or changed entries. Written
    /// to a temporary file and renamed, so a reader never sees half a file;
    /// a failure only costs speed, so it is logged and otherwise ignored.
    fn save_if_changed(&self, maildir: &Path) {
        if !self.changed && self.current.len() == self.loaded.len() {
            return;
        }
        let mut text = Vec::with_capacity(SIZE_CACHE_HEADER.len() + 64 * self.current.len());
        text.extend_from_slice(SIZE_CACHE_HEADER.as_bytes());
        text.push(b'\n');
        for (base, stamp, wire_size) in &self.current {
            text.extend_from_slice(base);
            text.extend_from_slice(
                format!(
                    " {} {}.{:09} {wire_size}\n",
                    stamp.size, stamp.mtime_seconds, stamp.mtime_nanos
                )
                .as_bytes(),
            );
        }
        let final_path = maildir.join(SIZE_CACHE_NAME);
        let temporary_path = maildir.join(format!("{SIZE_CACHE_NAME}.tmp"));
        let written = File::create(&temporary_path)
            .and_then(|mut file| file.write_all(&text))
            .and_then(|()| fs::rename(&temporary_path, &final_path));
        if let Err(err) = written {
            let _ = fs::remove_file(&temporary_path);
            log::warn!(
                "maildir: cannot write size cache {}: {err}; sizes will be recomputed next time",
                final_path.display()
            );
        }
    }
}

/// The entries of a size cache file, or `None` if it is not one.
fn parse_size_cache(text: &[u8]) -> Option<HashMap<Vec<u8>, (FileStamp, u64)>> {
    let text = std::str::from_utf8(text).ok()?;
    let mut lines = text.lines();
    if lines.next()? != SIZE_CACHE_HEADER {
        return None;
    }
    let mut entries = HashMap::new();
    for line in lines {
        let mut fields = line.split(' ');
        let base = fields.next()?;
        let size = fields.next()?.parse().ok()?;
        let (seconds, nanos) = fields.next()?.split_once('.')?;
        let wire_size = fields.next()?.parse().ok()?;
        if fields.next().is_some() || !is_valid_uid(base.as_bytes()) {
            return None;
        }
        let stamp = FileStamp {
            size,
            mtime_seconds: seconds.parse().ok()?,
            mtime_nanos: nanos.parse().ok()?,
        };
        entries.insert(base.as_bytes().to_vec(), (stamp, wire_size));
    }
    Some(entries)
}

/// Whether `bytes` can be a POP3 unique id as is: 1 to 70 octets in
/// 0x21..=0x7E (RFC 1939, section 7).
fn is_valid_uid(bytes: &[u8]) -> bool {
    (1..=MAX_UID_LEN).contains(&bytes.len()) && bytes.iter().all(|b| (0x21..=0x7E).contains(b))
}

/// The unique ids of messages with these base names (all different), in
/// the same order.
///
/// A base name that is a valid POP3 unique id is used as is. Any other (too
/// long, or with spaces or non-ASCII bytes) gets the 64-bit FNV-1a hash of
/// its bytes as 16 lowercase hex digits. Should that collide with another
/// message's id, the hash is taken again over the name followed by a 0xFF
/// byte and a counter (1, 2, ...) until it is free; valid names claim their
/// ids first and digests are assigned in message order, so the result
/// depends only on the set of names in the maildrop.
pub fn unique_ids(bases: &[&[u8]]) -> Vec<String> {
    let mut taken: HashSet<String> = bases
        .iter()
        .filter(|base| is_valid_uid(base))
        .map(|base| String::from_utf8_lossy(base).into_owned())
        .collect();
    bases
        .iter()
        .map(|base| {
            if is_valid_uid(base) {
                return String::from_utf8_lossy(base).into_owned();
            }
            let mut attempt: u64 = 0;
            loop {
                let mut hash = Fnv1a64::new();
                hash.write(base);
                if attempt > 0 {
                    hash.write(&[0xFF]);
                    hash.write(&attempt.to_le_bytes());
                }
                let candidate = format!("{:016x}", hash.finish());
                if taken.insert(candidate.clone()) {
                    return candidate;
                }
                attempt += 1;
            }
        })
        .collect()
}

/// 64-bit FNV-1a: small, fixed by its specification, and stable across
/// Rust versions and platforms (unlike `std`'s `DefaultHasher`), which is
/// what a unique id that must outlive restarts needs.
struct Fnv1a64(
    /// The hash state so far.
    u64,
);

impl Fnv1a64 {
    fn new() -> Fnv1a64 {
        Fnv1a64(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 ^= u64::from(byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Opens `path` for reading if it is a regular file, refusing a symlink or
/// special file put in its place since the snapshot (a FIFO would block the
/// worker; a symlink could point anywhere).
fn open_regular_file(path: &Path) -> io::Result<File> {
    let before = fs::symlink_metadata(path)?;
    if !before.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a regular file",
        ));
    }
    let file = File::open(path)?;
    let opened = file.metadata()?;
    // Same device and inode: the file opened is the regular file checked,
    // not something swapped in between the check and the open.
    if opened.dev() != before.dev() || opened.ino() != before.ino() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "file was replaced while being opened",
        ));
    }
    Ok(file)
}

/// Where the message with base name `base` is now, if it is still in `cur/`
/// or `new/` (another program may have moved it or changed its flags).
fn find_by_base(maildir: &Path, base: &[u8]) -> Result<Option<PathBuf>, BackendError> {
    for subdir in ["cur", "new"] {
        for (name, dir_entry) in list_message_files(&maildir.join(subdir))? {
            if base_name(&name) == base {
                return Ok(Some(dir_entry.path()));
            }
        }
    }
    Ok(None)
}

/// A backend error for an I/O failure: permission and layout problems need
/// an operator; anything else may pass.
fn io_failure(context: &str, err: &io::Error) -> BackendError {
    match err.kind() {
        io::ErrorKind::PermissionDenied => BackendError::PermFail(format!(
            "{context}: {err} (check the owner and mode of the maildir)"
        )),
        io::ErrorKind::NotADirectory | io::ErrorKind::InvalidData => {
            BackendError::PermFail(format!("{context}: {err}"))
        }
        _ => BackendError::TempFail(format!("{context}: {err}")),
    }
}

/// An open maildir: its snapshot and the lock that makes it exclusive.
#[derive(Debug)]
struct MaildirMaildrop {
    /// The maildir, for finding moved files again.
    maildir: PathBuf,
    /// Sizes and unique ids, in message-number order.
    messages: Vec<MessageInfo>,
    /// The file behind each message, same order.
    files: Vec<MessageFile>,
    /// Held for the life of the maildrop; released on drop.
    _lock: MaildirLock,
}

impl Maildrop for MaildirMaildrop {
    fn messages(&self) -> &[MessageInfo] {
        &self.messages
    }

    fn open_message(&mut self, index: usize) -> Result<Box<dyn MessageReader>, BackendError> {
        let maildir = &self.maildir;
        let file = self
            .files
            .get_mut(index)
            .ok_or_else(|| BackendError::NotFound(format!("no message {}", index + 1)))?;
        let gone = || {
            BackendError::NotFound(format!(
                "message {} ({}) was deleted by another program",
                index + 1,
                String::from_utf8_lossy(&file.base)
            ))
        };
        let opened = match open_regular_file(&file.path) {
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                let Some(moved_to) = find_by_base(maildir, &file.base)? else {
                    return Err(gone());
                };
                let reopened = open_regular_file(&moved_to);
                file.path = moved_to;
                reopened
            }
            other => other,
        };
        match opened {
            Ok(opened) => Ok(Box::new(MessageFileReader {
                file: opened,
                path: file.path.clone(),
            })),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Err(gone()),
            Err(err) => Err(io_failure(
                &format!("cannot open {}", file.path.display()),
                &err,
            )),
        }
    }

    fn commit(self: Box<Self>, indices: &[usize]) -> Result<(), BackendError> {
        let mut failures: Vec<(PathBuf, io::Error)> = Vec::new();
        // Built on the first file not found where it was, then reused, so
        // many files moved by another program cost one listing, not one each.
        let mut current_locations: Option<HashMap<Vec<u8>, PathBuf>> = None;
        for &index in indices {
            let Some(file) = self.files.get(index) else {
                log::error!(
                    "maildir: asked to delete message {} of {}, which does not exist",
                    index + 1,
                    self.files.len()
                );
                continue;
            };
            let err = match fs::remove_file(&file.path) {
                Ok(()) => continue,
                Err(err) => err,
            };
            if err.kind() != io::ErrorKind::NotFound {
                failures.push((file.path.clone(), err));
                continue;
            }
            let locations = current_locations.get_or_insert_with(|| locate_all(&self.maildir));
            match locations.get(&file.base) {
                Some(moved_to) => match fs::remove_file(moved_to) {
                    Ok(()) => {}
                    Err(err) if err.kind() == io::ErrorKind::NotFound => log::debug!(
                        "maildir: {} was already deleted by another program",
                        moved_to.display()
                    ),
                    Err(err) => failures.push((moved_to.clone(), err)),
                },
                None => log::debug!(
                    "maildir: {} was already deleted by another program",
                    file.path.display()
                ),
            }
        }
        // `self` (and with it the lock) is released when this returns.
        if failures.is_empty() {
            return Ok(());
        }
        for (path, err) in &failures {
            log::error!("maildir: cannot delete {}: {err}", path.display());
        }
        let (first_path, first_err) = &failures[0];
        let context = format!(
            "could not delete {} of {} messages, first {}",
            failures.len(),
            indices.len(),
            first_path.display()
        );
        Err(io_failure(&context, first_err))
    }
}

/// Base name to current path for every message file in the maildir; empty
/// (with a log line) if the maildir cannot be listed.
fn locate_all(maildir: &Path) -> HashMap<Vec<u8>, PathBuf> {
    let mut locations = HashMap::new();
    for subdir in ["cur", "new"] {
        match list_message_files(&maildir.join(subdir)) {
            Ok(files) => {
                for (name, dir_entry) in files {
                    locations
                        .entry(base_name(&name).to_vec())
                        .or_insert_with(|| dir_entry.path());
                }
            }
            Err(err) => log::error!("maildir: {err}"),
        }
    }
    locations
}

/// Streams one message file.
#[derive(Debug)]
struct MessageFileReader {
    /// The open message.
    file: File,
    /// Its path, for error messages.
    path: PathBuf,
}

impl MessageReader for MessageFileReader {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, BackendError> {
        loop {
            match self.file.read(buf) {
                Ok(read) => return Ok(read),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => {
                    return Err(io_failure(
                        &format!("cannot read {}", self.path.display()),
                        &err,
                    ))
                }
            }
        }
    }
}

/// Creates a uniquely named directory under the system temp directory and
/// removes it with everything in it when dropped.
#[cfg(test)]
pub(crate) struct TestDir(
    /// The directory, removed on drop.
    PathBuf,
);

#[cfg(test)]
impl TestDir {
    pub(crate) fn new(tag: &str) -> TestDir {
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

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

#[cfg(test)]
impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> UserInfo {
        UserInfo {
            name: name.to_owned(),
            ..UserInfo::default()
        }
    }

    fn store_at(dir: &TestDir) -> MaildirStore {
        MaildirStore::new(MaildirConfig {
            root: format!("{}/%u", dir.path().display()),
        })
        .unwrap()
    }

    /// Creates `name`'s maildir (cur, new, tmp) and returns its path.
    fn make_maildir(dir: &TestDir, name: &str) -> PathBuf {
        let maildir = dir.path().join(name);
        for subdir in ["cur", "new", "tmp"] {
            fs::create_dir_all(maildir.join(subdir)).unwrap();
        }
        maildir
    }

    fn deliver(maildir: &Path, subdir: &str, name: &str, content: &[u8]) -> PathBuf {
        let path = maildir.join(subdir).join(name);
        fs::write(&path, content).unwrap();
        path
    }

    fn uids(maildrop: &dyn Maildrop) -> Vec<String> {
        maildrop.messages().iter().map(|m| m.uid.clone()).collect()
    }

    fn sizes(maildrop: &dyn Maildrop) -> Vec<u64> {
        maildrop.messages().iter().map(|m| m.wire_size).collect()
    }

    fn read_all(maildrop: &mut dyn Maildrop, index: usize) -> Result<Vec<u8>, BackendError> {
        let mut reader = maildrop.open_message(index)?;
        let mut content = Vec::new();
        let mut buf = [0u8; 7];
        loop {
            let read = reader.read(&mut buf)?;
            if read == 0 {
                return Ok(content);
            }
            content.extend_from_slice(&buf[..read]);
        }
    }

    #[test]
    fn template_variables_expand() {
        let expand = |root: &str, info: &UserInfo| RootTemplate::parse(root).unwrap().expand(info);
        let alice = user("alice@example.org");
        assert_eq!(
            expand("/var/mail/%u/Maildir", &alice).unwrap(),
            PathBuf::from("/var/mail/alice@example.org/Maildir")
        );
        assert_eq!(
            expand("/srv/%d/%n", &alice).unwrap(),
            PathBuf::from("/srv/example.org/alice")
        );
        assert_eq!(
            expand("/srv/100%%/%n", &alice).unwrap(),
            PathBuf::from("/srv/100%/alice")
        );
        assert_eq!(
            expand("/srv/%n", &user("bob")).unwrap(),
            PathBuf::from("/srv/bob")
        );
        let with_home = UserInfo {
            home: Some("/home/carol".to_owned()),
            ..user("carol")
        };
        assert_eq!(
            expand("~/Maildir", &with_home).unwrap(),
            PathBuf::from("/home/carol/Maildir")
        );
        assert_eq!(
            expand("~", &with_home).unwrap(),
            PathBuf::from("/home/carol")
        );
    }

    #[test]
    fn template_needs_a_usable_home_and_domain() {
        let home_template = RootTemplate::parse("~/Maildir").unwrap();
        let no_home = home_template.expand(&user("carol")).unwrap_err();
        assert!(
            matches!(&no_home, BackendError::PermFail(m) if m.contains("no home directory")),
            "{no_home:?}"
        );
        let relative = UserInfo {
            home: Some("home/carol".to_owned()),
            ..user("carol")
        };
        assert!(matches!(
            home_template.expand(&relative),
            Err(BackendError::PermFail(_))
        ));
        // "bob" has no domain: /srv//bob would be the domain directory of
        // users @bob.
        let domain_template = RootTemplate::parse("/srv/%d/%n").unwrap();
        assert!(matches!(
            domain_template.expand(&user("bob")),
            Err(BackendError::PermFail(_))
        ));
        assert!(matches!(
            domain_template.expand(&user("@example.org")),
            Err(BackendError::PermFail(_))
        ));
        assert!(matches!(
            domain_template.expand(&user("bob@.")),
            Err(BackendError::PermFail(_))
        ));
    }

    #[test]
    fn templates_that_are_not_per_user_are_refused() {
        use MaildirConfigError as E;
        let owned = |root: &str| root.to_owned();
        let cases = [
            ("", E::EmptyRoot),
            ("/var/mail", E::NotPerUser(owned("/var/mail"))),
            ("/var/mail/%%u", E::NotPerUser(owned("/var/mail/%%u"))),
            ("/var/mail/%d", E::DomainOnly(owned("/var/mail/%d"))),
            ("var/mail/%u", E::RelativeRoot(owned("var/mail/%u"))),
            ("~alice/Maildir", E::TildeUser(owned("~alice/Maildir"))),
            (
                "/var/mail/%x",
                E::UnknownVariable {
                    root: owned("/var/mail/%x"),
                    variable: 'x',
                },
            ),
            ("/var/mail/%u%", E::TrailingPercent(owned("/var/mail/%u%"))),
        ];
        for (root, expected) in cases {
            assert_eq!(RootTemplate::parse(root), Err(expected), "{root:?}");
        }
        let err = RootTemplate::parse("/var/mail").unwrap_err().to_string();
        assert!(err.contains("share one maildrop"), "{err}");
    }

    #[test]
    fn unsafe_user_names_are_refused() {
        let template = RootTemplate::parse("/srv/mail/%u").unwrap();
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
            long.as_str(),
        ] {
            assert!(
                matches!(template.expand(&user(name)), Err(BackendError::PermFail(_))),
                "{name:?} was accepted"
            );
        }
        assert!(template.expand(&user(&"a".repeat(255))).is_ok());
    }

    /// Every name of up to four characters from an alphabet of path-ish
    /// characters, in three templates: any accepted name stays under the
    /// root, and in no path component of its own is "", "." or "..".
    #[test]
    fn no_user_name_reaches_outside_the_root() {
        let alphabet = ['.', '/', '\\', '%', '@', 'a', '2', 'e', '\0', '\n', ' '];
        let mut names = vec![String::new()];
        let mut frontier = vec![String::new()];
        for _ in 0..4 {
            let mut next = Vec::new();
            for prefix in &frontier {
                for c in alphabet {
                    next.push(format!("{prefix}{c}"));
                }
            }
            names.extend(next.iter().cloned());
            frontier = next;
        }
        let mut accepted = 0;
        for root in ["/srv/mail/%u", "/srv/mail/%d/%n", "/srv/mail/%n/box"] {
            let template = RootTemplate::parse(root).unwrap();
            for name in &names {
                let Ok(path) = template.expand(&user(name)) else {
                    continue;
                };
                accepted += 1;
                let text = path.to_str().unwrap();
                let below_root = text.strip_prefix("/srv/mail/").unwrap();
                for component in below_root.split('/') {
                    assert!(
                        !matches!(component, "" | "." | ".."),
                        "{name:?} in {root} gave {text}"
                    );
                }
            }
        }
        assert!(accepted > 1000, "the alphabet should allow many names");
    }

    #[test]
    fn snapshot_is_ordered_by_delivery_time_and_skips_non_messages() {
        let dir = TestDir::new("order");
        let maildir = make_maildir(&dir, "alice");
        deliver(&maildir, "new", "1700000002.M1.host", b"third\n");
        deliver(&maildir, "cur", "1700000001.M2.host:2,S", b"second\n");
        deliver(&maildir, "cur", "1700000001.M1.host:2,", b"first\n");
        // 999 seconds is earlier than 1700000001 although it sorts after it
        // as text.
        deliver(&maildir, "new", "999.M1.host", b"oldest\n");
        deliver(&maildir, "new", "no-timestamp", b"last\n");
        deliver(&maildir, "tmp", "1.M1.host", b"being delivered\n");
        deliver(&maildir, "new", ".hidden", b"not mail\n");
        fs::create_dir(maildir.join("cur/1.subdir")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", maildir.join("new/2.symlink")).unwrap();

        let mut maildrop = store_at(&dir).open(&user("alice")).unwrap();
        assert_eq!(
            uids(maildrop.as_ref()),
            [
                "999.M1.host",
                "1700000001.M1.host",
                "1700000001.M2.host",
                "1700000002.M1.host",
                "no-timestamp"
            ]
        );
        assert_eq!(read_all(maildrop.as_mut(), 0).unwrap(), b"oldest\n");
        assert_eq!(read_all(maildrop.as_mut(), 3).unwrap(), b"third\n");
    }

    #[test]
    fn unusable_base_names_get_stable_unique_digests() {
        let dir = TestDir::new("digest");
        let maildir = make_maildir(&dir, "alice");
        let long = format!("1700000000.{}", "x".repeat(80));
        deliver(&maildir, "new", &long, b"a\n");
        deliver(&maildir, "new", "1700000001.with space", b"b\n");
        deliver(&maildir, "new", "1700000002.caf\u{e9}:2,S", b"c\n");
        deliver(&maildir, "new", "1700000003.plain", b"d\n");

        let store = store_at(&dir);
        let first = uids(store.open(&user("alice")).unwrap().as_ref());
        let second = uids(store.open(&user("alice")).unwrap().as_ref());
        assert_eq!(first, second, "unique ids must be stable across sessions");
        assert_eq!(first[3], "1700000003.plain");
        for uid in &first {
            assert!(is_valid_uid(uid.as_bytes()), "{uid:?}");
        }
        for uid in &first[..3] {
            assert_eq!(uid.len(), 16, "{uid:?}");
            assert!(uid.bytes().all(|b| b.is_ascii_hexdigit()));
        }
        let distinct: HashSet<_> = first.iter().collect();
        assert_eq!(distinct.len(), first.len());
    }

    #[test]
    fn digest_collisions_are_resolved_deterministically() {
        let bad: &[u8] = b"has space";
        let digest = unique_ids(&[bad])[0].clone();
        // A valid name equal to the digest keeps it; the bad name moves on.
        let ids = unique_ids(&[bad, digest.as_bytes()]);
        assert_eq!(ids[1], digest);
        assert_ne!(ids[0], digest);
        assert!(is_valid_uid(ids[0].as_bytes()));
        assert_eq!(ids, unique_ids(&[bad, digest.as_bytes()]));
    }

    /// Reads through a reader that hands out at most `step` bytes a call, so
    /// CR and LF land on either side of read boundaries.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    /// The wire size by the definition, one byte at a time.
    fn reference_wire_size(data: &[u8]) -> u64 {
        let mut size = 0;
        for (i, &b) in data.iter().enumerate() {
            size += if b == b'\n' && (i == 0 || data[i - 1] != b'\r') {
                2
            } else {
                1
            };
        }
        if data.last().is_some_and(|&b| b != b'\n') {
            size += 2;
        }
        size
    }

    #[test]
    fn wire_size_known_answers() {
        let cases: [(&[u8], u64); 9] = [
            (b"", 0),
            (b"a\nb\n", 6),
            (b"a\r\nb\r\n", 6),
            (b"a\nb", 6),
            (b"a\r\nb", 6),
            (b"a\rb\n", 5),
            (b"\n", 2),
            (b"\r", 3),
            (b"x", 3),
        ];
        for (data, expected) in cases {
            assert_eq!(
                wire_size_of(data).unwrap(),
                expected,
                "{:?}",
                String::from_utf8_lossy(data)
            );
        }
    }

    #[test]
    fn wire_size_is_right_across_read_boundaries() {
        let pieces: [&[u8]; 6] = [b"\r\n", b"\n", b"\r", b"ab", b".", b"\n\r"];
        let mut data = Vec::new();
        let mut state: u32 = 12345;
        for _ in 0..80_000 {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            data.extend_from_slice(pieces[(state >> 16) as usize % pieces.len()]);
        }
        // Put a CRLF exactly on the 64 KiB read boundary too.
        data[READ_BUFFER_SIZE - 1] = b'\r';
        data[READ_BUFFER_SIZE] = b'\n';
        let expected = reference_wire_size(&data);
        assert_eq!(wire_size_of(data.as_slice()).unwrap(), expected);
        for step in [1, 2, 3, 4096] {
            let trickle = Trickle { data: &data, step };
            assert_eq!(wire_size_of(trickle).unwrap(), expected, "step {step}");
        }
    }

    #[test]
    fn sizes_come_from_the_file_or_the_w_hint() {
        let dir = TestDir::new("sizes");
        let maildir = make_maildir(&dir, "alice");
        deliver(&maildir, "new", "1.lf", b"Subject: x\n\nbody\n");
        deliver(&maildir, "new", "2.crlf", b"Subject: x\r\n\r\nbody\r\n");
        deliver(&maildir, "new", "3.nofinal", b"Subject: x\n\nbody");
        deliver(&maildir, "new", "4.empty", b"");
        // The hint is trusted, even though this file's CRLF size is 6.
        deliver(&maildir, "cur", "5.host,S=4,W=100:2,S", b"a\nb\n");
        deliver(&maildir, "new", "6.host,W=12x", b"a\n");

        let maildrop = store_at(&dir).open(&user("alice")).unwrap();
        assert_eq!(sizes(maildrop.as_ref()), [20, 20, 20, 0, 100, 3]);
        assert_eq!(maildrop.messages()[4].uid, "5.host,S=4,W=100");
    }

    #[test]
    fn wire_size_hint_parsing() {
        assert_eq!(wire_size_hint(b"1.host,S=10,W=12"), Some(12));
        assert_eq!(wire_size_hint(b"1.host,W=12,S=10"), Some(12));
        assert_eq!(wire_size_hint(b"1.host,W=x,W=7"), Some(7));
        assert_eq!(wire_size_hint(b"1.host,S=10"), None);
        assert_eq!(wire_size_hint(b"1.host,W="), None);
        assert_eq!(wire_size_hint(b"1.host,W=99999999999999999999999"), None);
    }

    /// The cache is used: after a first open, the file's content is swapped
    /// for content of the same length with a different wire size and its
    /// mtime put back. A second open still reports the cached size, which it
    /// could not have learned from the file. Changing the mtime then makes
    /// it read the file again.
    #[test]
    fn sizes_are_cached_while_size_and_mtime_match() {
        let dir = TestDir::new("cache");
        let maildir = make_maildir(&dir, "alice");
        let path = deliver(&maildir, "new", "1.msg", b"a\nb\nc\n");
        let store = store_at(&dir);
        assert_eq!(sizes(store.open(&user("alice")).unwrap().as_ref()), [9]);
        assert!(maildir.join(SIZE_CACHE_NAME).exists());

        let mtime = fs::metadata(&path).unwrap().modified().unwrap();
        fs::write(&path, b"ab\r\nc\r").unwrap();
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        assert_eq!(sizes(store.open(&user("alice")).unwrap().as_ref()), [9]);

        let later = mtime + std::time::Duration::from_secs(1);
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(later)
            .unwrap();
        assert_eq!(sizes(store.open(&user("alice")).unwrap().as_ref()), [9 - 1]);
    }

    #[test]
    fn a_corrupt_cache_is_ignored_and_rewritten() {
        let dir = TestDir::new("corrupt");
        let maildir = make_maildir(&dir, "alice");
        deliver(&maildir, "new", "1.msg", b"a\nb\n");
        let cache_path = maildir.join(SIZE_CACHE_NAME);
        for garbage in [
            &b"not a cache"[..],
            b"pop3d-sizes 1\n1.msg 4 nonsense 999\n",
            b"pop3d-sizes 1\n1.msg 4\n",
            b"\xff\xfe",
        ] {
            fs::write(&cache_path, garbage).unwrap();
            let maildrop = store_at(&dir).open(&user("alice")).unwrap();
            assert_eq!(sizes(maildrop.as_ref()), [6]);
            drop(maildrop);
            let rewritten = fs::read_to_string(&cache_path).unwrap();
            assert!(
                rewritten.starts_with("pop3d-sizes 1\n1.msg 4 "),
                "{rewritten}"
            );
        }
    }

    #[test]
    fn cache_keeps_working_when_flags_change() {
        let dir = TestDir::new("flags");
        let maildir = make_maildir(&dir, "alice");
        let path = deliver(&maildir, "new", "1.msg", b"a\n");
        let store = store_at(&dir);
        assert_eq!(sizes(store.open(&user("alice")).unwrap().as_ref()), [3]);
        fs::rename(&path, maildir.join("cur/1.msg:2,S")).unwrap();
        let maildrop = store.open(&user("alice")).unwrap();
        assert_eq!(uids(maildrop.as_ref()), ["1.msg"]);
        assert_eq!(sizes(maildrop.as_ref()), [3]);
    }

    #[test]
    fn a_second_open_is_in_use_until_the_first_is_dropped() {
        let dir = TestDir::new("inuse");
        make_maildir(&dir, "alice");
        let store = store_at(&dir);
        let first = store.open(&user("alice")).unwrap();
        let second = store.open(&user("alice"));
        assert!(
            matches!(second, Err(BackendError::InUse(_))),
            "{:?}",
            second.err()
        );
        // Another user is not affected.
        assert!(store.open(&user("bob")).is_ok());
        drop(first);
        assert!(store.open(&user("alice")).is_ok());
    }

    #[test]
    fn a_missing_maildir_is_in_use_too_while_open() {
        let dir = TestDir::new("inuse-missing");
        let store = store_at(&dir);
        let _first = store.open(&user("nobody")).unwrap();
        assert!(matches!(
            store.open(&user("nobody")),
            Err(BackendError::InUse(_))
        ));
    }

    /// Another process holding the lock file is simulated with a second
    /// open file description of it, which `flock` treats the same way.
    #[test]
    fn a_lock_held_by_another_process_gives_in_use() {
        let dir = TestDir::new("flock");
        let maildir = make_maildir(&dir, "alice");
        let other = File::create(maildir.join(LOCK_FILE_NAME)).unwrap();
        other.lock().unwrap();
        let store = store_at(&dir);
        let refused = store.open(&user("alice"));
        assert!(
            matches!(refused, Err(BackendError::InUse(_))),
            "{:?}",
            refused.err()
        );
        other.unlock().unwrap();
        let maildrop = store.open(&user("alice")).unwrap();
        // And while we hold it, the other process cannot take it.
        assert!(matches!(other.try_lock(), Err(TryLockError::WouldBlock)));
        drop(maildrop);
        other.try_lock().unwrap();
    }

    #[test]
    fn the_lock_is_released_when_a_session_panics() {
        let dir = TestDir::new("panic");
        make_maildir(&dir, "alice");
        let store = Arc::new(store_at(&dir));
        let in_thread = Arc::clone(&store);
        let outcome = std::thread::spawn(move || {
            let _maildrop = in_thread.open(&user("alice")).unwrap();
            panic!("session crashed while holding the maildrop");
        })
        .join();
        assert!(outcome.is_err());
        assert!(store.open(&user("alice")).is_ok());
    }

    #[test]
    fn a_missing_maildir_is_empty_and_nothing_is_created() {
        let dir = TestDir::new("missing");
        let store = store_at(&dir);
        let maildrop = store.open(&user("nobody")).unwrap();
        assert!(maildrop.messages().is_empty());
        maildrop.commit(&[]).unwrap();
        assert!(!dir.path().join("nobody").exists());

        // A directory without cur/ and new/ is empty too, and stays as it is.
        fs::create_dir(dir.path().join("bare")).unwrap();
        let maildrop = store.open(&user("bare")).unwrap();
        assert!(maildrop.messages().is_empty());
        drop(maildrop);
        assert_eq!(fs::read_dir(dir.path().join("bare")).unwrap().count(), 0);
    }

    #[test]
    fn a_maildir_that_is_a_file_is_reported_not_shown_empty() {
        let dir = TestDir::new("not-a-dir");
        fs::write(dir.path().join("alice"), b"oops").unwrap();
        let result = store_at(&dir).open(&user("alice"));
        assert!(
            matches!(&result, Err(BackendError::PermFail(m)) if m.contains("alice")),
            "{:?}",
            result.err()
        );
    }

    #[test]
    fn commit_deletes_only_the_chosen_messages() {
        let dir = TestDir::new("commit");
        let maildir = make_maildir(&dir, "alice");
        let one = deliver(&maildir, "new", "1.one", b"1\n");
        let two = deliver(&maildir, "cur", "2.two:2,S", b"2\n");
        let three = deliver(&maildir, "new", "3.three", b"3\n");
        let store = store_at(&dir);
        let maildrop = store.open(&user("alice")).unwrap();
        let delivered_during_session = deliver(&maildir, "new", "0.late", b"late\n");
        maildrop.commit(&[0, 2]).unwrap();

        assert!(!one.exists());
        assert!(two.exists());
        assert!(!three.exists());
        assert!(delivered_during_session.exists());
        // The lock is gone and the survivors are there.
        let after = store.open(&user("alice")).unwrap();
        assert_eq!(uids(after.as_ref()), ["0.late", "2.two"]);
    }

    #[test]
    fn dropping_without_commit_deletes_nothing() {
        let dir = TestDir::new("nocommit");
        let maildir = make_maildir(&dir, "alice");
        let one = deliver(&maildir, "new", "1.one", b"1\n");
        let store = store_at(&dir);
        drop(store.open(&user("alice")).unwrap());
        assert!(one.exists());
        assert_eq!(store.open(&user("alice")).unwrap().messages().len(), 1);
    }

    #[test]
    fn commit_follows_moved_files_and_accepts_vanished_ones() {
        let dir = TestDir::new("commit-moved");
        let maildir = make_maildir(&dir, "alice");
        let moved = deliver(&maildir, "new", "1.moved", b"1\n");
        let vanished = deliver(&maildir, "new", "2.vanished", b"2\n");
        let kept = deliver(&maildir, "new", "3.kept", b"3\n");
        let maildrop = store_at(&dir).open(&user("alice")).unwrap();
        // Another mail client reads message 1 and deletes message 2.
        let moved_to = maildir.join("cur/1.moved:2,S");
        fs::rename(&moved, &moved_to).unwrap();
        fs::remove_file(&vanished).unwrap();
        maildrop.commit(&[0, 1]).unwrap();
        assert!(!moved_to.exists());
        assert!(kept.exists());
    }

    #[test]
    fn commit_reports_a_file_it_cannot_delete_after_deleting_the_rest() {
        let dir = TestDir::new("commit-fail");
        let maildir = make_maildir(&dir, "alice");
        let stuck = deliver(&maildir, "new", "1.stuck", b"1\n");
        let other = deliver(&maildir, "new", "2.other", b"2\n");
        let store = store_at(&dir);
        let maildrop = store.open(&user("alice")).unwrap();
        // A directory in the file's place cannot be removed with unlink.
        fs::remove_file(&stuck).unwrap();
        fs::create_dir(&stuck).unwrap();
        let result = maildrop.commit(&[0, 1]);
        assert!(
            matches!(&result, Err(BackendError::TempFail(m)) if m.contains("1.stuck")),
            "{result:?}"
        );
        assert!(!other.exists());
        assert!(store.open(&user("alice")).is_ok(), "lock must be released");
    }

    #[test]
    fn open_message_follows_moves_and_reports_vanished_files() {
        let dir = TestDir::new("open-message");
        let maildir = make_maildir(&dir, "alice");
        let moved = deliver(&maildir, "new", "1.moved", b"moved\n");
        let vanished = deliver(&maildir, "new", "2.vanished", b"gone\n");
        deliver(&maildir, "new", "3.stays", b"stays\n");
        let mut maildrop = store_at(&dir).open(&user("alice")).unwrap();
        fs::rename(&moved, maildir.join("cur/1.moved:2,S")).unwrap();
        fs::remove_file(&vanished).unwrap();

        assert_eq!(read_all(maildrop.as_mut(), 0).unwrap(), b"moved\n");
        assert!(matches!(
            read_all(maildrop.as_mut(), 1),
            Err(BackendError::NotFound(_))
        ));
        // The session goes on.
        assert_eq!(read_all(maildrop.as_mut(), 2).unwrap(), b"stays\n");
        assert!(matches!(
            maildrop.open_message(3),
            Err(BackendError::NotFound(_))
        ));
    }

    #[test]
    fn a_symlink_swapped_in_after_the_snapshot_is_not_served() {
        let dir = TestDir::new("swap");
        let maildir = make_maildir(&dir, "alice");
        let path = deliver(&maildir, "new", "1.msg", b"mail\n");
        let mut maildrop = store_at(&dir).open(&user("alice")).unwrap();
        fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", &path).unwrap();
        assert!(matches!(
            maildrop.open_message(0),
            Err(BackendError::PermFail(_))
        ));
    }

    /// Prints how long opening a 10,000-message maildir takes without and
    /// with the size cache. Run with
    /// `cargo test --release --lib maildir -- --ignored --nocapture`.
    #[test]
    #[ignore = "measurement, prints figures"]
    fn measure_open_of_ten_thousand_messages() {
        use std::time::Instant;
        let dir = TestDir::new("measure");
        let maildir = make_maildir(&dir, "alice");
        let mut body = Vec::new();
        for line in 0..60 {
            body.extend_from_slice(format!("Line {line} of a typical message body.\n").as_bytes());
        }
        for i in 0..10_000 {
            deliver(
                &maildir,
                "cur",
                &format!("{}.M{i}.host:2,S", 1_700_000_000 + i),
                &body,
            );
        }
        let hinted = make_maildir(&dir, "bob");
        for i in 0..10_000 {
            let name = format!(
                "{}.M{i}.host,S={},W=4000:2,S",
                1_700_000_000 + i,
                body.len()
            );
            deliver(&hinted, "cur", &name, &body);
        }
        let store = store_at(&dir);
        let timed = |name: &str| {
            let start = Instant::now();
            let maildrop = store.open(&user(name)).unwrap();
            let elapsed = start.elapsed();
            assert_eq!(maildrop.messages().len(), 10_000);
            elapsed
        };
        let first = timed("alice");
        let cached = timed("alice");
        let cached_again = timed("alice");
        let hint = timed("bob");
        println!(
            "10,000 messages of {} bytes: first open {first:?}, cached {cached:?} and \
             {cached_again:?}, W= names {hint:?}",
            body.len()
        );
    }
}
