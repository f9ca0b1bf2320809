//! dir-store: an example pop3d store plugin.
//!
//! Each user's maildrop is a directory, `<root>/<user name>`, and each
//! regular file in it is one message, stored as it would be sent (LF or CRLF
//! line ends). The file name is the message's UIDL, so it is stable for the
//! message's life; messages are numbered in file-name order. Files whose
//! names start with `.` are not messages (the lock file is `.lock`), nor are
//! files whose names are not valid UIDLs (1 to 70 bytes of 0x21..=0x7E).
//!
//! Exclusive access uses an advisory lock (`flock`) on `<dir>/.lock`, which
//! the kernel drops if the process dies, so a crash leaves no stale lock.
//!
//! Config: `(root: "/var/spool/pop3d")`. The root must exist; a user's
//! directory is created on first open.
//!
//! The crate builds as a `cdylib` (`libdir_store.so`, entry symbol
//! `pop3d_plugin_dir_store`) and as an `rlib` whose
//! [`pop3d_plugin_entry`] the host can register as a built-in.
#![deny(unsafe_code)]

use pop3d_plugin_api::{
    export_store_plugin, log_debug, log_warn, Error, Maildrop, MessageInfo, StorePlugin, UserInfo,
};
use serde::Deserialize;
use std::fs::{self, File, TryLockError};
use std::io;
use std::path::{Path, PathBuf};

/// The plugin's config section.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Directory holding one subdirectory per user.
    root: PathBuf,
}

/// One configured dir-store.
#[derive(Debug)]
pub struct DirStore {
    /// Directory holding one subdirectory per user.
    root: PathBuf,
}

impl StorePlugin for DirStore {
    type Maildrop = DirMaildrop;

    fn create(config: &str) -> Result<Self, Error> {
        let config: Config = ron::from_str(config).map_err(|e| {
            Error::PermFail(format!(
                "dir-store config: {e}; expected (root: \"/path/to/maildrops\")"
            ))
        })?;
        let metadata = fs::metadata(&config.root).map_err(|e| {
            Error::PermFail(format!(
                "dir-store root {}: {e}; create it or fix `root` in the store config",
                config.root.display()
            ))
        })?;
        if !metadata.is_dir() {
            return Err(Error::PermFail(format!(
                "dir-store root {} is not a directory; fix `root` in the store config",
                config.root.display()
            )));
        }
        Ok(DirStore { root: config.root })
    }

    fn open(&self, user: &UserInfo) -> Result<DirMaildrop, Error> {
        let dir = self.user_dir(&user.name)?;
        if let Err(e) = fs::create_dir(&dir) {
            if e.kind() != io::ErrorKind::AlreadyExists {
                return Err(Error::from(e));
            }
        }
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(".lock"))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(Error::InUse(format!(
                    "{} is locked by another session",
                    dir.display()
                )));
            }
            Err(TryLockError::Error(e)) => return Err(Error::from(e)),
        }
        let (files, listing) = snapshot(&dir)?;
        log_debug!("opened {} with {} messages", dir.display(), listing.len());
        Ok(DirMaildrop {
            files,
            listing,
            _lock: lock,
        })
    }
}

impl DirStore {
    /// The user's directory, refusing names that would escape the root.
    fn user_dir(&self, name: &str) -> Result<PathBuf, Error> {
        if name.is_empty() || name.starts_with('.') || name.contains(['/', '\\', '\0']) {
            return Err(Error::PermFail(format!(
                "user name {name:?} cannot be a dir-store directory name"
            )));
        }
        Ok(self.root.join(name))
    }
}

/// Lists the messages of `dir`: sorted by name, with wire sizes.
fn snapshot(dir: &Path) -> Result<(Vec<PathBuf>, Vec<MessageInfo>), Error> {
    let mut entries = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            log_warn!("skipping {}: name is not UTF-8", entry.path().display());
            continue;
        };
        if name.starts_with('.') || !entry.file_type()?.is_file() {
            continue;
        }
        if !is_valid_uid(name) {
            log_warn!(
                "skipping {}: name is not a valid UIDL",
                entry.path().display()
            );
            continue;
        }
        entries.push(name.to_string());
    }
    entries.sort();
    let mut files = Vec::with_capacity(entries.len());
    let mut listing = Vec::with_capacity(entries.len());
    for name in entries {
        let path = dir.join(&name);
        let wire_size = pop3d_plugin_api::wire_size_of_reader(File::open(&path)?)?;
        files.push(path);
        listing.push(MessageInfo {
            wire_size,
            uid: name,
        });
    }
    Ok((files, listing))
}

fn is_valid_uid(name: &str) -> bool {
    (1..=70).contains(&name.len()) && name.bytes().all(|b| (0x21..=0x7E).contains(&b))
}

/// An open, locked user directory.
#[derive(Debug)]
pub struct DirMaildrop {
    /// Path of each message, in message-number order.
    files: Vec<PathBuf>,
    /// The snapshot reported to the host, parallel to `files`.
    listing: Vec<MessageInfo>,
    /// Holds the `flock`; closing the file on drop releases the maildrop.
    _lock: File,
}

impl Maildrop for DirMaildrop {
    type Reader = File;

    fn messages(&self) -> &[MessageInfo] {
        &self.listing
    }

    fn open_message(&mut self, index: usize) -> Result<File, Error> {
        let path = self
            .files
            .get(index)
            .ok_or_else(|| Error::NotFound(format!("message index {index}")))?;
        File::open(path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => Error::NotFound(format!("{} vanished", path.display())),
            _ => Error::from(e),
        })
    }

    fn commit(self, indices: &[usize]) -> Result<(), Error> {
        let mut first_error = None;
        for &index in indices {
            let Some(path) = self.files.get(index) else {
                continue;
            };
            match fs::remove_file(path) {
                Ok(()) => {}
                // Someone else deleted it already: the client's wish holds.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    log_warn!("cannot delete {}: {e}", path.display());
                    first_error.get_or_insert(Error::from(e));
                }
            }
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

export_store_plugin!(dir_store, DirStore);
