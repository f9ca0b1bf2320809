//! pop3d's maildir store plugin: each user's mail is a directory with
//! `cur/`, `new/` and `tmp/`, one file per message.
//!
//! pop3d links this crate as its built-in `maildir` store; the same code
//! builds as `libpop3d_maildir.so` (entry symbol `pop3d_plugin_maildir`),
//! and both are reached only through the plugin ABI.
//!
//! Config: `(root: "/var/mail/%u/Maildir")`, and optionally
//! `uidl_format: "%08Xu%08Xv"` (UIDLs from Dovecot's `dovecot-uidlist`)
//! and `move_new_to_cur: true`; see [`MaildirConfig`].
//!
//! Opening a maildrop does four things:
//!
//! 1. **Find it.** The configured root is a template (`/var/mail/%u/Maildir`,
//!    `~/Maildir`, `/srv/mail/%d/%n`). The user name is checked before it is
//!    put into a path, so no name can point outside the root.
//! 2. **Lock it.** An in-process table stops two sessions of this server, and
//!    an OS lock on `pop3d.lock` inside the maildir stops other pop3d
//!    processes. Either one held gives [`Error::InUse`]. The locks are
//!    released when the maildrop is committed or dropped, unwinding included.
//! 3. **Snapshot it.** Regular, non-hidden files in `cur/` and `new/` (never
//!    `tmp/`, where deliveries are still being written), ordered by the
//!    delivery time at the start of their names. The snapshot never changes
//!    during the session: mail delivered meanwhile waits for the next one.
//! 4. **Size it.** POP3 reports the size as transmitted, with CRLF line
//!    ends, which differs from the file size when the file uses LF. A
//!    `,W=<n>` in the file name (Dovecot, Maildir++) gives it for the price
//!    of reading the last byte (W= leaves out the CRLF pop3d adds after an
//!    unterminated last line); otherwise the file is read once (sized with
//!    the SDK's [`WireSize`](pop3d_plugin_api::WireSize) rule). Either
//!    result is kept in `pop3d-sizes` in the maildir, valid while the
//!    file's size and mtime stay the same, so a login to a large maildrop
//!    costs a `stat` per message, not a read. A name with both `,S=` and
//!    `,W=` is trusted with its cached size without the `stat`: maildir
//!    files are not rewritten in place.
//!
//! When every size came from names, the snapshot is kept in memory (up to
//! `listing_cache_messages` messages over all maildirs) and the next login
//! reuses it as long as `cur/` and `new/` have the mtimes they had: such a
//! login lists and sizes nothing. See `listing_cache.rs`.
//!
//! Unique ids are the file's base name (the part before `:`), which survives
//! the `new/` to `cur/` move and flag changes made by other mail programs.
//! Base names that are not valid POP3 unique ids get a digest instead; see
//! [`unique_ids`]. Operators moving from Dovecot can have Dovecot's UIDLs
//! instead (`uidl_format`, see [`UidlFormat`] and `uidl.rs`).
//!
//! At UPDATE, deleting a message is one `unlink`, so a crash leaves each
//! message either there, whole, or gone. When the maildir has a Maildir++
//! quota file (`maildirsize`), one `-<bytes> -<count>` line is appended for
//! what was deleted. Messages left in `new/` stay there unless
//! `move_new_to_cur` is set, so an IMAP server sharing the maildir still
//! shows them as new.
//!
//! Other programs may move or delete files while a session is open. Opening a
//! message looks it up again by base name if its path has gone, a message
//! deleted by someone else is [`Error::NotFound`], and deleting a file
//! that is already gone at commit is not an error.
//!
//! # Layout
//! - this file: the config, the store (`open`) and the plugin export.
//! - `template.rs`: the root template and the user-name checks that keep
//!   every user inside it.
//! - `snapshot.rs`: listing, ordering and sizing messages, the size cache,
//!   unique ids.
//! - `uidl.rs`: the `uidl_format` template and the `dovecot-uidlist`
//!   reader.
//! - `listing_cache.rs`: snapshots kept between sessions.
//! - `maildrop.rs`: the lock, the open maildrop, message readers, commit.
#![deny(unsafe_code)]

mod listing_cache;
mod maildrop;
mod snapshot;
mod template;
mod uidl;

pub use maildrop::{MaildirMaildrop, MessageFileReader};
pub use snapshot::unique_ids;
pub use template::{MaildirConfigError, RootTemplate};
pub use uidl::{UidlFormat, UidlFormatError};

use listing_cache::{ListingCache, ListingStamp, SharedSnapshot};
use maildrop::directory_time;
use maildrop::{MaildirLock, OpenMaildirs};
use pop3d_plugin_api::{export_store_plugin, log_debug, Error, StorePlugin, UserInfo};
use serde::Deserialize;
use snapshot::take_snapshot;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

/// The `config` section of a maildir store.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MaildirConfig {
    /// Where a user's maildir is, as a template: `%u` the full user name,
    /// `%n` the part before `@`, `%d` the part after it, `%%` a literal `%`,
    /// and a leading `~` the user's home directory.
    pub root: String,
    /// How UIDLs are made, in the syntax of Dovecot's `pop3_uidl_format`:
    /// `%f` (the default) the base file name; `%u` and `%v` the IMAP UID
    /// and UIDVALIDITY Dovecot recorded in `dovecot-uidlist`, so
    /// `"%08Xu%08Xv"` keeps the UIDLs users of such a Dovecot had.
    #[serde(default = "default_uidl_format")]
    pub uidl_format: String,
    /// Whether messages left in `new/` at UPDATE are moved to `cur/`
    /// (same base name, `:2,` with no flags). Off by default, so an IMAP
    /// server sharing the maildir still shows them as new.
    #[serde(default)]
    pub move_new_to_cur: bool,
    /// How many messages, over all maildirs, the store keeps listed
    /// between sessions, so a login to a maildir that has not changed
    /// since lists and sizes nothing (see `listing_cache.rs`); 0 turns
    /// this off. About 0.2 KiB a message plus 0.5 KiB a maildir.
    #[serde(default = "default_listing_cache_messages")]
    pub listing_cache_messages: usize,
}

fn default_listing_cache_messages() -> usize {
    20_000
}

impl MaildirConfig {
    /// The config with this root and every other key at its default.
    pub fn with_root(root: impl Into<String>) -> MaildirConfig {
        MaildirConfig {
            root: root.into(),
            uidl_format: default_uidl_format(),
            move_new_to_cur: false,
            listing_cache_messages: default_listing_cache_messages(),
        }
    }
}

fn default_uidl_format() -> String {
    "%f".into()
}

/// Why a maildir config was refused: the root or the UIDL format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// `root` is not usable.
    Root(MaildirConfigError),
    /// `uidl_format` is not usable.
    UidlFormat(UidlFormatError),
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigError::Root(err) => err.fmt(f),
            ConfigError::UidlFormat(err) => err.fmt(f),
        }
    }
}

impl std::error::Error for ConfigError {}

/// The maildir store: turns a user into an open, locked maildrop.
#[derive(Debug)]
pub struct MaildirStore {
    /// Where each user's maildir is.
    root: RootTemplate,
    /// How each message's UIDL is made.
    uidl_format: UidlFormat,
    /// Whether UPDATE moves the messages it leaves in `new/` to `cur/`.
    move_new_to_cur: bool,
    /// Maildirs held by open sessions of this store.
    open_maildirs: OpenMaildirs,
    /// Snapshots of unchanged maildirs, for the next login.
    listing_cache: ListingCache,
}

impl MaildirStore {
    /// A store for `config`, checked so that every user gets their own
    /// maildir and every message its own UIDL.
    pub fn new(config: MaildirConfig) -> Result<MaildirStore, ConfigError> {
        Ok(MaildirStore {
            root: RootTemplate::parse(&config.root).map_err(ConfigError::Root)?,
            uidl_format: UidlFormat::parse(&config.uidl_format).map_err(ConfigError::UidlFormat)?,
            move_new_to_cur: config.move_new_to_cur,
            open_maildirs: OpenMaildirs::default(),
            listing_cache: ListingCache::new(config.listing_cache_messages),
        })
    }

    /// The maildir `user`'s mail is in (it may not exist).
    pub fn maildir_of(&self, user: &UserInfo) -> Result<PathBuf, Error> {
        self.root.expand(user)
    }
}

impl MaildirStore {
    /// The snapshot of a locked, existing maildir: the one kept from an
    /// earlier session if no directory changed since, else a new listing.
    fn snapshot_of(
        &self,
        maildir: &Path,
        lock: &MaildirLock,
        user: &UserInfo,
    ) -> Result<Arc<SharedSnapshot>, Error> {
        let stamp = ListingStamp {
            cur: lock.cur_time,
            new: lock.new_time,
            // `dovecot-uidlist` and pop3d's cutoff file live here.
            maildir: if self.uidl_format.is_base_name() {
                None
            } else {
                directory_time(maildir)?
            },
        };
        if let Some(kept) = self.listing_cache.get(maildir, &stamp) {
            log_debug!(
                "maildir: opened {} for {}: {} messages, as listed before (no directory changed)",
                maildir.display(),
                user.name,
                kept.messages.len()
            );
            return Ok(kept);
        }
        let listed_at = SystemTime::now();
        let snapshot = take_snapshot(maildir, &self.uidl_format)?;
        log_debug!(
            "maildir: opened {} for {}: {} messages, {} sizes read from files",
            maildir.display(),
            user.name,
            snapshot.messages.len(),
            snapshot.sizes_computed
        );
        let shared = Arc::new(SharedSnapshot {
            messages: snapshot.messages,
            files: snapshot.files,
        });
        if snapshot.sized_by_names_only {
            self.listing_cache.offer(maildir, stamp, listed_at, &shared);
        } else {
            self.listing_cache.forget(maildir);
        }
        Ok(shared)
    }
}

impl StorePlugin for MaildirStore {
    type Maildrop = MaildirMaildrop;

    fn create(config: &str) -> Result<Self, Error> {
        let config: MaildirConfig = pop3d_plugin_api::config::parse(config)?;
        MaildirStore::new(config).map_err(|err| Error::PermFail(err.to_string()))
    }

    fn open(&self, user: &UserInfo) -> Result<MaildirMaildrop, Error> {
        let maildir = self.root.expand(user)?;
        let lock = MaildirLock::acquire(&self.open_maildirs, &maildir)?;
        let snapshot = if lock.file.is_some() {
            self.snapshot_of(&maildir, &lock, user)?
        } else {
            // No maildir (or no cur/ and new/ in it): the user has no mail
            // yet. Nothing is created, so a typo in the root cannot litter
            // the disk.
            Arc::default()
        };
        Ok(MaildirMaildrop::new(
            maildir,
            snapshot,
            lock,
            self.move_new_to_cur,
        ))
    }
}

/// The plugin error for an I/O failure: permission and layout problems need
/// an operator; anything else may pass.
pub(crate) fn io_failure(context: &str, err: &io::Error) -> Error {
    match err.kind() {
        io::ErrorKind::PermissionDenied => Error::PermFail(format!(
            "{context}: {err} (check the owner and mode of the maildir)"
        )),
        io::ErrorKind::NotADirectory | io::ErrorKind::InvalidData => {
            Error::PermFail(format!("{context}: {err}"))
        }
        _ => Error::TempFail(format!("{context}: {err}")),
    }
}

export_store_plugin!(maildir, MaildirStore);

#[cfg(test)]
mod tests {
    use super::*;
    use maildrop::{LOCK_FILE_NAME, QUOTA_FILE_NAME};
    use pop3d_plugin_api::Maildrop;
    use snapshot::{is_valid_uid, SIZE_CACHE_NAME};
    use std::collections::HashSet;
    use std::fs::{self, File, TryLockError};
    use std::io::Read;
    use std::path::Path;
    use std::sync::Arc;

    /// Creates a uniquely named directory under the system temp directory and
    /// removes it with everything in it when dropped.
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

    fn user(name: &str) -> UserInfo {
        UserInfo {
            name: name.to_owned(),
            ..UserInfo::default()
        }
    }

    fn store_at(dir: &TestDir) -> MaildirStore {
        MaildirStore::new(MaildirConfig::with_root(format!(
            "{}/%u",
            dir.path().display()
        )))
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

    fn uids(maildrop: &MaildirMaildrop) -> Vec<String> {
        maildrop.messages().iter().map(|m| m.uid.clone()).collect()
    }

    fn sizes(maildrop: &MaildirMaildrop) -> Vec<u64> {
        maildrop.messages().iter().map(|m| m.wire_size).collect()
    }

    fn read_all(maildrop: &mut MaildirMaildrop, index: usize) -> Result<Vec<u8>, Error> {
        let mut reader = maildrop.open_message(index)?;
        let mut content = Vec::new();
        let mut buf = [0u8; 7];
        loop {
            let read = reader.read(&mut buf).map_err(Error::from)?;
            if read == 0 {
                return Ok(content);
            }
            content.extend_from_slice(&buf[..read]);
        }
    }

    fn create_error(config: &str) -> String {
        match MaildirStore::create(config) {
            Ok(store) => panic!("{config} was accepted: {store:?}"),
            Err(Error::PermFail(message)) => message,
            Err(other) => panic!("{config}: expected PermFail, got {other:?}"),
        }
    }

    #[test]
    fn create_reads_the_config_text_and_checks_the_root() {
        let store = MaildirStore::create("(root: \"/var/mail/%d/%n\")").unwrap();
        assert_eq!(
            store.maildir_of(&user("ann@example.org")).unwrap(),
            PathBuf::from("/var/mail/example.org/ann")
        );
        assert_eq!(create_error("()"), "config: missing field `root`");
        assert_eq!(
            create_error("(root: \"/m/%u\", rot: \"x\")"),
            "config: unknown field `rot`, expected one of `root`, `uidl_format`, \
             `move_new_to_cur`, `listing_cache_messages`"
        );
        let shared = create_error("(root: \"/var/mail/shared\")");
        assert!(shared.contains("share one maildrop"), "{shared}");
        assert!(create_error("(root: 42)").starts_with("config: "));
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
            uids(&maildrop),
            [
                "999.M1.host",
                "1700000001.M1.host",
                "1700000001.M2.host",
                "1700000002.M1.host",
                "no-timestamp"
            ]
        );
        assert_eq!(read_all(&mut maildrop, 0).unwrap(), b"oldest\n");
        assert_eq!(read_all(&mut maildrop, 3).unwrap(), b"third\n");
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
        let first = uids(&store.open(&user("alice")).unwrap());
        let second = uids(&store.open(&user("alice")).unwrap());
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
        assert_eq!(sizes(&maildrop), [20, 20, 20, 0, 100, 3]);
        assert_eq!(maildrop.messages()[4].uid, "5.host,S=4,W=100");
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
        assert_eq!(sizes(&store.open(&user("alice")).unwrap()), [9]);
        assert!(maildir.join(SIZE_CACHE_NAME).exists());

        let mtime = fs::metadata(&path).unwrap().modified().unwrap();
        fs::write(&path, b"ab\r\nc\r").unwrap();
        set_mtime(&path, mtime);
        assert_eq!(sizes(&store.open(&user("alice")).unwrap()), [9]);

        let later = mtime + std::time::Duration::from_secs(1);
        set_mtime(&path, later);
        assert_eq!(sizes(&store.open(&user("alice")).unwrap()), [9 - 1]);
    }

    /// A name with `,S=` and `,W=` is trusted with its cached size without
    /// a `stat`: after the first open the file is rewritten (another length,
    /// another mtime, no final newline any more) and the second open still
    /// reports the cached size. A cache line that disagrees with the name's
    /// `,S=` is not trusted: the file is measured again.
    #[test]
    fn sizes_of_files_named_with_s_and_w_are_trusted_from_the_cache() {
        let dir = TestDir::new("named");
        let maildir = make_maildir(&dir, "alice");
        let path = deliver(&maildir, "cur", "1.host,S=4,W=6:2,S", b"a\nb\n");
        let store = store_at(&dir);
        assert_eq!(sizes(&store.open(&user("alice")).unwrap()), [6]);

        fs::write(&path, b"ab").unwrap();
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
        set_mtime(&path, later);
        assert_eq!(sizes(&store.open(&user("alice")).unwrap()), [6]);

        let cache_path = maildir.join(SIZE_CACHE_NAME);
        let cache = fs::read_to_string(&cache_path).unwrap();
        fs::write(
            &cache_path,
            cache.replace("1.host,S=4,W=6 4 ", "1.host,S=4,W=6 3 "),
        )
        .unwrap();
        // Measured now: the W= hint plus the CRLF after the unterminated line.
        assert_eq!(sizes(&store.open(&user("alice")).unwrap()), [6 + 2]);
    }

    /// Sets the mtime of `dir` to `age` ago.
    fn age_directory(dir: &Path, age: std::time::Duration) {
        set_mtime(dir, std::time::SystemTime::now() - age);
    }

    /// Sets the mtime of a file or directory.
    fn set_mtime(path: impl AsRef<Path>, time: std::time::SystemTime) {
        File::open(path).unwrap().set_modified(time).unwrap();
    }

    /// A login to a maildir whose directories have not changed reuses the
    /// last listing: a file slipped into `new/` with the directory's mtime
    /// put back is not seen, which only a reused listing can explain; once
    /// the mtime moves, it is.
    #[test]
    fn an_unchanged_maildir_is_not_listed_again() {
        let dir = TestDir::new("reuse");
        let maildir = make_maildir(&dir, "alice");
        deliver(&maildir, "cur", "1.host,S=4,W=6:2,S", b"a\nb\n");
        deliver(&maildir, "new", "2.host,S=2,W=3", b"c\n");
        let ten_seconds = std::time::Duration::from_secs(10);
        for sub in ["cur", "new"] {
            age_directory(&maildir.join(sub), ten_seconds);
        }
        let old_new_mtime = fs::metadata(maildir.join("new"))
            .unwrap()
            .modified()
            .unwrap();
        let store = store_at(&dir);
        // The first open sizes the files (and fills `pop3d-sizes`); the
        // second finds every size by name and keeps its listing.
        assert_eq!(sizes(&store.open(&user("alice")).unwrap()), [6, 3]);
        assert_eq!(sizes(&store.open(&user("alice")).unwrap()), [6, 3]);

        deliver(&maildir, "new", "3.host,S=2,W=3", b"d\n");
        set_mtime(maildir.join("new"), old_new_mtime);
        assert_eq!(sizes(&store.open(&user("alice")).unwrap()), [6, 3]);

        age_directory(&maildir.join("new"), std::time::Duration::from_secs(5));
        assert_eq!(sizes(&store.open(&user("alice")).unwrap()), [6, 3, 3]);
    }

    /// Listings that could miss a change are not kept: one made right after
    /// a directory changed (a coarse mtime could hide the next change), and
    /// one with a file sized by a `stat` (rewriting it changes no
    /// directory). The same slipped-in file is then seen at once.
    #[test]
    fn listings_that_could_miss_a_change_are_not_reused() {
        let dir = TestDir::new("noreuse");
        let fresh = make_maildir(&dir, "fresh");
        deliver(&fresh, "new", "1.host,S=2,W=3", b"c\n");
        let unnamed = make_maildir(&dir, "unnamed");
        deliver(&unnamed, "new", "1.plain", b"c\n");
        age_directory(&unnamed.join("new"), std::time::Duration::from_secs(10));
        age_directory(&unnamed.join("cur"), std::time::Duration::from_secs(10));
        let store = store_at(&dir);
        for (name, maildir) in [("fresh", &fresh), ("unnamed", &unnamed)] {
            assert_eq!(sizes(&store.open(&user(name)).unwrap()), [3], "{name}");
            assert_eq!(sizes(&store.open(&user(name)).unwrap()), [3], "{name}");
            let mtime = fs::metadata(maildir.join("new"))
                .unwrap()
                .modified()
                .unwrap();
            deliver(maildir, "new", "2.host,S=2,W=3", b"d\n");
            set_mtime(maildir.join("new"), mtime);
            assert_eq!(sizes(&store.open(&user(name)).unwrap()), [3, 3], "{name}");
        }
        // Off: nothing is reused even when it could be.
        let off = store_with(&dir, "listing_cache_messages: 0");
        let quiet = make_maildir(&dir, "quiet");
        deliver(&quiet, "new", "1.host,S=2,W=3", b"c\n");
        age_directory(&quiet.join("new"), std::time::Duration::from_secs(10));
        age_directory(&quiet.join("cur"), std::time::Duration::from_secs(10));
        assert_eq!(sizes(&off.open(&user("quiet")).unwrap()), [3]);
        assert_eq!(sizes(&off.open(&user("quiet")).unwrap()), [3]);
        let mtime = fs::metadata(quiet.join("new")).unwrap().modified().unwrap();
        deliver(&quiet, "new", "2.host,S=2,W=3", b"d\n");
        set_mtime(quiet.join("new"), mtime);
        assert_eq!(sizes(&off.open(&user("quiet")).unwrap()), [3, 3]);
    }

    /// A reused listing is shared, not changed: deleting in one session is
    /// seen by the next (the deletion changes the directory), and a file
    /// another program moved is still found and deleted.
    #[test]
    fn deletions_and_moves_work_on_a_reused_listing() {
        let dir = TestDir::new("reusedel");
        let maildir = make_maildir(&dir, "alice");
        deliver(&maildir, "new", "1.host,S=2,W=3", b"a\n");
        deliver(&maildir, "new", "2.host,S=2,W=3", b"b\n");
        for sub in ["cur", "new"] {
            age_directory(&maildir.join(sub), std::time::Duration::from_secs(10));
        }
        let store = store_at(&dir);
        drop(store.open(&user("alice")).unwrap());
        drop(store.open(&user("alice")).unwrap());
        let mut maildrop = store.open(&user("alice")).unwrap();
        // Moved to cur/ by an IMAP server while the session is open.
        fs::rename(
            maildir.join("new/1.host,S=2,W=3"),
            maildir.join("cur/1.host,S=2,W=3:2,S"),
        )
        .unwrap();
        assert_eq!(read_all(&mut maildrop, 0).unwrap(), b"a\n");
        maildrop.commit(&[0]).unwrap();
        assert_eq!(
            uids(&store.open(&user("alice")).unwrap()),
            ["2.host,S=2,W=3"]
        );
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
            assert_eq!(sizes(&maildrop), [6]);
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
        assert_eq!(sizes(&store.open(&user("alice")).unwrap()), [3]);
        fs::rename(&path, maildir.join("cur/1.msg:2,S")).unwrap();
        let maildrop = store.open(&user("alice")).unwrap();
        assert_eq!(uids(&maildrop), ["1.msg"]);
        assert_eq!(sizes(&maildrop), [3]);
    }

    #[test]
    fn a_second_open_is_in_use_until_the_first_is_dropped() {
        let dir = TestDir::new("inuse");
        make_maildir(&dir, "alice");
        let store = store_at(&dir);
        let first = store.open(&user("alice")).unwrap();
        let second = store.open(&user("alice"));
        assert!(matches!(second, Err(Error::InUse(_))), "{:?}", second.err());
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
        assert!(matches!(store.open(&user("nobody")), Err(Error::InUse(_))));
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
            matches!(refused, Err(Error::InUse(_))),
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
            matches!(&result, Err(Error::PermFail(m)) if m.contains("alice")),
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
        assert_eq!(uids(&after), ["0.late", "2.two"]);
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
            matches!(&result, Err(Error::TempFail(m)) if m.contains("1.stuck")),
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

        assert_eq!(read_all(&mut maildrop, 0).unwrap(), b"moved\n");
        assert!(matches!(
            read_all(&mut maildrop, 1),
            Err(Error::NotFound(_))
        ));
        // The session goes on.
        assert_eq!(read_all(&mut maildrop, 2).unwrap(), b"stays\n");
        assert!(matches!(maildrop.open_message(3), Err(Error::NotFound(_))));
    }

    #[test]
    fn a_symlink_swapped_in_after_the_snapshot_is_not_served() {
        let dir = TestDir::new("swap");
        let maildir = make_maildir(&dir, "alice");
        let path = deliver(&maildir, "new", "1.msg", b"mail\n");
        let mut maildrop = store_at(&dir).open(&user("alice")).unwrap();
        fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", &path).unwrap();
        assert!(matches!(maildrop.open_message(0), Err(Error::PermFail(_))));
    }

    #[test]
    fn a_fifo_swapped_in_after_the_snapshot_neither_blocks_nor_is_served() {
        let dir = TestDir::new("fifo");
        let maildir = make_maildir(&dir, "alice");
        let path = deliver(&maildir, "new", "1.msg", b"mail\n");
        let mut maildrop = store_at(&dir).open(&user("alice")).unwrap();
        fs::remove_file(&path).unwrap();
        let made = std::process::Command::new("mkfifo")
            .arg(&path)
            .status()
            .unwrap();
        assert!(made.success());
        // Opening a FIFO without a writer would hang here if it blocked.
        assert!(matches!(maildrop.open_message(0), Err(Error::PermFail(_))));
    }

    fn store_with(dir: &TestDir, extra: &str) -> MaildirStore {
        MaildirStore::create(&format!("(root: \"{}/%u\", {extra})", dir.path().display())).unwrap()
    }

    #[test]
    fn uidls_come_from_dovecot_uidlist_for_the_messages_dovecot_numbered() {
        let dir = TestDir::new("uidlist");
        let maildir = make_maildir(&dir, "alice");
        deliver(&maildir, "cur", "1700000001.M1P1.host,S=2,W=3:2,S", b"a\n");
        deliver(&maildir, "new", "1700000002.M2P1.host,S=2,W=3", b"b\n");
        deliver(&maildir, "cur", "1700000003.M3P1.host:2,", b"c\n");
        // Not in the list: delivered after Dovecot last looked.
        deliver(&maildir, "new", "1700000004.M4P1.host", b"d\n");
        fs::write(
            maildir.join("dovecot-uidlist"),
            "3 V1700000000 N28 Gabc\n\
             7 W3 S2 :1700000001.M1P1.host,S=2,W=3\n\
             26 :1700000002.M2P1.host,S=2,W=3\n\
             27 P0000beef :1700000003.M3P1.host\n",
        )
        .unwrap();
        let store = store_with(&dir, "uidl_format: \"%08Xu%08Xv\"");
        let expected = [
            "000000076553f100",
            "0000001a6553f100",
            "0000beef",
            "1700000004.M4P1.host",
        ];
        assert_eq!(uids(&store.open(&user("alice")).unwrap()), expected);

        // Dovecot (still serving IMAP) numbers the fourth message later:
        // its UIDL stays the base name pop3d already showed.
        fs::write(
            maildir.join("dovecot-uidlist"),
            "3 V1700000000 N29 Gabc\n\
             7 W3 S2 :1700000001.M1P1.host,S=2,W=3\n\
             26 :1700000002.M2P1.host,S=2,W=3\n\
             27 P0000beef :1700000003.M3P1.host\n\
             28 :1700000004.M4P1.host\n",
        )
        .unwrap();
        assert_eq!(uids(&store.open(&user("alice")).unwrap()), expected);
        // Nothing of Dovecot's was written.
        assert!(fs::read_to_string(maildir.join("dovecot-uidlist"))
            .unwrap()
            .contains("28 :1700000004"));

        // Without a uidlist, a maildir already served keeps base names
        // even when one appears later.
        let bob = make_maildir(&dir, "bob");
        deliver(&bob, "new", "1.one", b"1\n");
        assert_eq!(uids(&store.open(&user("bob")).unwrap()), ["1.one"]);
        fs::write(bob.join("dovecot-uidlist"), "3 V5 N2\n1 :1.one\n").unwrap();
        assert_eq!(uids(&store.open(&user("bob")).unwrap()), ["1.one"]);

        // While every message is Dovecot's, nothing is pinned: mail Dovecot
        // numbers while both servers run gets Dovecot's UIDL too.
        let carol = make_maildir(&dir, "carol");
        deliver(&carol, "cur", "1.one:2,S", b"1\n");
        fs::write(carol.join("dovecot-uidlist"), "3 V16 N2\n1 :1.one\n").unwrap();
        assert_eq!(
            uids(&store.open(&user("carol")).unwrap()),
            ["0000000100000010"]
        );
        assert!(!carol.join(uidl::CUTOFF_FILE_NAME).exists());
        deliver(&carol, "new", "2.two", b"2\n");
        fs::write(
            carol.join("dovecot-uidlist"),
            "3 V16 N3\n1 :1.one\n2 :2.two\n",
        )
        .unwrap();
        assert_eq!(
            uids(&store.open(&user("carol")).unwrap()),
            ["0000000100000010", "0000000200000010"]
        );
    }

    #[test]
    fn a_bad_uidl_format_is_refused_at_create() {
        let message = create_error("(root: \"/m/%u\", uidl_format: \"%m\")");
        assert!(message.contains("uidl_format \"%m\""), "{message}");
        let message = create_error("(root: \"/m/%u\", uidl_format: \"%08Xv\")");
        assert!(message.contains("same UIDL"), "{message}");
    }

    #[test]
    fn new_messages_stay_in_new_unless_configured() {
        let dir = TestDir::new("move");
        let maildir = make_maildir(&dir, "alice");
        let kept = deliver(&maildir, "new", "1.kept", b"1\n");
        let deleted = deliver(&maildir, "new", "2.deleted", b"2\n");
        let seen = deliver(&maildir, "cur", "3.seen:2,S", b"3\n");
        store_at(&dir)
            .open(&user("alice"))
            .unwrap()
            .commit(&[1])
            .unwrap();
        assert!(kept.exists());
        assert!(!deleted.exists());

        let store = store_with(&dir, "move_new_to_cur: true");
        let maildrop = store.open(&user("alice")).unwrap();
        let before = uids(&maildrop);
        drop(maildrop);
        // Released without commit: nothing moves.
        assert!(kept.exists());
        store.open(&user("alice")).unwrap().commit(&[]).unwrap();
        assert!(!kept.exists());
        assert!(maildir.join("cur/1.kept:2,").exists());
        assert!(seen.exists());
        assert_eq!(uids(&store.open(&user("alice")).unwrap()), before);
    }

    #[test]
    fn deletions_are_recorded_in_a_maildirsize_file_when_there_is_one() {
        let dir = TestDir::new("quota");
        let maildir = make_maildir(&dir, "alice");
        deliver(&maildir, "new", "1.a,S=1000", b"short\n");
        deliver(&maildir, "new", "2.b", b"twelve bytes");
        deliver(&maildir, "new", "3.c", b"kept\n");
        let store = store_at(&dir);
        store.open(&user("alice")).unwrap().commit(&[0]).unwrap();
        assert!(
            !maildir.join(QUOTA_FILE_NAME).exists(),
            "must not be created"
        );

        fs::write(maildir.join(QUOTA_FILE_NAME), "10000S,100C\n1018 2\n").unwrap();
        store.open(&user("alice")).unwrap().commit(&[0]).unwrap();
        assert_eq!(
            fs::read_to_string(maildir.join(QUOTA_FILE_NAME)).unwrap(),
            "10000S,100C\n1018 2\n-12 -1\n"
        );
        // Nothing deleted, nothing appended.
        store.open(&user("alice")).unwrap().commit(&[]).unwrap();
        let maildrop = store.open(&user("alice")).unwrap();
        deliver(&maildir, "new", "4.d,S=7", b"1234567");
        drop(maildrop);
        let maildrop = store.open(&user("alice")).unwrap();
        maildrop.commit(&[0, 1]).unwrap();
        assert_eq!(
            fs::read_to_string(maildir.join(QUOTA_FILE_NAME)).unwrap(),
            "10000S,100C\n1018 2\n-12 -1\n-12 -2\n"
        );
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
