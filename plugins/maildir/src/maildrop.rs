//! An open maildrop: the lock that makes it exclusive, the snapshot it
//! serves, message readers, and the deletions of the UPDATE state.

use crate::io_failure;
use crate::listing_cache::{dir_time, DirTime, SharedSnapshot};
use crate::snapshot::{base_name, list_message_files, MessageFile};
use pop3d_plugin_api::{log_debug, log_error, Error, Maildrop, MessageInfo};
use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// The file inside a maildir that other pop3d processes lock too.
pub(crate) const LOCK_FILE_NAME: &str = "pop3d.lock";
/// The Maildir++ quota file; updated when present, never created.
pub(crate) const QUOTA_FILE_NAME: &str = "maildirsize";

/// Maildirs open in this process. Shared by the store and its maildrops so a
/// maildrop can release its entry when it is dropped.
pub(crate) type OpenMaildirs = Arc<Mutex<HashSet<PathBuf>>>;

/// Locks `open`, ignoring poisoning: the set is only ever changed by a
/// single `insert` or `remove`, so a panic elsewhere cannot leave it
/// half-updated.
fn lock_table(open: &OpenMaildirs) -> MutexGuard<'_, HashSet<PathBuf>> {
    open.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The hold one session has on one maildir: an entry in the in-process
/// table and, when the maildir exists, an OS lock on its `pop3d.lock`.
/// Dropping it releases both.
#[derive(Debug)]
pub(crate) struct MaildirLock {
    /// The table the entry is in.
    open_maildirs: OpenMaildirs,
    /// The entry: the maildir's path.
    maildir: PathBuf,
    /// The locked `pop3d.lock`, kept open because closing it releases the OS
    /// lock. `None` when there is no maildir yet (no `cur/` or `new/`):
    /// there is nothing on disk to protect, and nothing is created.
    pub(crate) file: Option<File>,
    /// The mtimes of `cur/` and `new/`, read before the lock was taken
    /// (the look that decides whether there is a maildir at all), for
    /// reusing a kept snapshot.
    pub(crate) cur_time: DirTime,
    pub(crate) new_time: DirTime,
}

impl MaildirLock {
    pub(crate) fn acquire(
        open_maildirs: &OpenMaildirs,
        maildir: &Path,
    ) -> Result<MaildirLock, Error> {
        if !lock_table(open_maildirs).insert(maildir.to_path_buf()) {
            return Err(Error::InUse(format!(
                "{} is open in another session",
                maildir.display()
            )));
        }
        // From here on, dropping `lock` on any error path frees the entry.
        let mut lock = MaildirLock {
            open_maildirs: Arc::clone(open_maildirs),
            maildir: maildir.to_path_buf(),
            file: None,
            cur_time: None,
            new_time: None,
        };
        lock.cur_time = directory_time(&maildir.join("cur"))?;
        lock.new_time = directory_time(&maildir.join("new"))?;
        // A directory without `cur/` and `new/` holds no mail yet: nothing
        // on disk needs protecting, and nothing is created in it.
        if lock.cur_time.is_none() && lock.new_time.is_none() {
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
            Err(TryLockError::WouldBlock) => Err(Error::InUse(format!(
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

/// The mtime of `path` if it is a directory; missing (or not a directory)
/// is `None`, but a path that cannot be looked at is an error, so a maildir
/// the server may not read is reported rather than shown as empty.
pub(crate) fn directory_time(path: &Path) -> Result<DirTime, Error> {
    match fs::metadata(path) {
        Ok(metadata) if metadata.is_dir() => Ok(dir_time(&metadata)),
        Ok(_) => Ok(None),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
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

/// Opens `path` for reading if it is a regular file, refusing a symlink or
/// special file put in its place since the snapshot (a FIFO would block the
/// worker; a symlink could point anywhere).
///
/// One `open` and one `fstat` of the descriptor: `O_NOFOLLOW` refuses a
/// symlink and `O_NONBLOCK` keeps a FIFO from blocking the open, and the
/// type is checked on what was actually opened, so nothing can be swapped
/// in between a check and the open. (A separate `lstat` by path first would
/// cost a second path walk per message read.)
pub(crate) fn open_regular_file(path: &Path) -> io::Result<File> {
    let not_regular = not_regular_file;
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(file) => file,
        Err(err) if err.raw_os_error() == Some(libc::ELOOP) => return Err(not_regular()),
        Err(err) => return Err(err),
    };
    if !file.metadata()?.is_file() {
        return Err(not_regular());
    }
    Ok(file)
}

/// The open `cur/` or `new/` of `maildir` that `path` is directly in,
/// opening it on first use; `None` for any other path or when it cannot be
/// opened (the caller then opens by path).
fn open_directory_of<'a>(
    maildir: &Path,
    path: &Path,
    directories: &'a mut [Option<File>; 2],
) -> Option<&'a File> {
    let parent = path.parent()?;
    if parent.parent()? != maildir {
        return None;
    }
    let slot = match parent.file_name()?.as_encoded_bytes() {
        b"cur" => 0,
        b"new" => 1,
        _ => return None,
    };
    if directories[slot].is_none() {
        directories[slot] = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
            .open(parent)
            .ok();
    }
    directories[slot].as_ref()
}

/// [`open_regular_file`] for the file `name` in the open `directory`.
fn open_regular_file_in(directory: &File, name: &OsStr) -> io::Result<File> {
    use nix::fcntl::{openat, OFlag};
    use nix::sys::stat::Mode;
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    let file = match openat(directory, name, flags, Mode::empty()) {
        Ok(fd) => File::from(fd),
        Err(nix::errno::Errno::ELOOP) => return Err(not_regular_file()),
        Err(errno) => return Err(io::Error::from(errno)),
    };
    if !file.metadata()?.is_file() {
        return Err(not_regular_file());
    }
    Ok(file)
}

fn not_regular_file() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "not a regular file")
}

/// Where the message with base name `base` is now, if it is still in `cur/`
/// or `new/` (another program may have moved it or changed its flags).
fn find_by_base(maildir: &Path, base: &[u8]) -> Result<Option<PathBuf>, Error> {
    for subdir in ["cur", "new"] {
        for (name, dir_entry) in list_message_files(&maildir.join(subdir))? {
            if base_name(&name) == base {
                return Ok(Some(dir_entry.path()));
            }
        }
    }
    Ok(None)
}

/// An open maildir: its snapshot and the lock that makes it exclusive.
#[derive(Debug)]
pub struct MaildirMaildrop {
    /// The maildir, for finding moved files again.
    maildir: PathBuf,
    /// Sizes, unique ids and files, in message-number order; possibly
    /// shared with other sessions (see [`crate::listing_cache`]).
    snapshot: Arc<SharedSnapshot>,
    /// Where files of the snapshot were found after another program moved
    /// them, by message index (the shared snapshot is never changed).
    moved: HashMap<usize, PathBuf>,
    /// `cur/` and `new/`, opened at the first message read, so each message
    /// is opened relative to its directory (a one-component lookup) rather
    /// than by its full path. `None` until needed or if it cannot be opened.
    directories: [Option<File>; 2],
    /// Whether commit moves the messages it keeps from `new/` to `cur/`.
    move_new_to_cur: bool,
    /// Held for the life of the maildrop; released on drop.
    _lock: MaildirLock,
}

impl MaildirMaildrop {
    pub(crate) fn new(
        maildir: PathBuf,
        snapshot: Arc<SharedSnapshot>,
        lock: MaildirLock,
        move_new_to_cur: bool,
    ) -> MaildirMaildrop {
        MaildirMaildrop {
            maildir,
            snapshot,
            moved: HashMap::new(),
            directories: [None, None],
            move_new_to_cur,
            _lock: lock,
        }
    }
}

impl Maildrop for MaildirMaildrop {
    type Reader = MessageFileReader;

    fn messages(&self) -> &[MessageInfo] {
        &self.snapshot.messages
    }

    fn open_message(&mut self, index: usize) -> Result<MessageFileReader, Error> {
        let maildir = &self.maildir;
        let file = self
            .snapshot
            .files
            .get(index)
            .ok_or_else(|| Error::NotFound(format!("no message {}", index + 1)))?;
        let path = self.moved.get(&index).unwrap_or(&file.path);
        let directory = open_directory_of(maildir, path, &mut self.directories);
        let gone = || {
            Error::NotFound(format!(
                "message {} ({}) was deleted by another program",
                index + 1,
                String::from_utf8_lossy(&file.base)
            ))
        };
        let first_try = match (directory, path.file_name()) {
            (Some(directory), Some(name)) => open_regular_file_in(directory, name),
            _ => open_regular_file(path),
        };
        let (opened, path) = match first_try {
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                let Some(moved_to) = find_by_base(maildir, &file.base)? else {
                    return Err(gone());
                };
                let reopened = open_regular_file(&moved_to);
                self.moved.insert(index, moved_to.clone());
                (reopened, moved_to)
            }
            other => (other, path.clone()),
        };
        match opened {
            Ok(opened) => Ok(MessageFileReader { file: opened, path }),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Err(gone()),
            Err(err) => Err(io_failure(&format!("cannot open {}", path.display()), &err)),
        }
    }

    fn commit(self, indices: &[usize]) -> Result<(), Error> {
        let mut failures: Vec<(PathBuf, io::Error)> = Vec::new();
        // What this commit removed, for the quota file.
        let (mut deleted_bytes, mut deleted_count) = (0u64, 0u64);
        // Built on the first file not found where it was, then reused, so
        // many files moved by another program cost one listing, not one each.
        let mut current_locations: Option<HashMap<Vec<u8>, PathBuf>> = None;
        for &index in indices {
            let Some(file) = self.snapshot.files.get(index) else {
                log_error!(
                    "maildir: asked to delete message {} of {}, which does not exist",
                    index + 1,
                    self.snapshot.files.len()
                );
                continue;
            };
            let path = self.path_of(index, file);
            let err = match fs::remove_file(path) {
                Ok(()) => {
                    deleted_bytes += file.quota_size;
                    deleted_count += 1;
                    continue;
                }
                Err(err) => err,
            };
            if err.kind() != io::ErrorKind::NotFound {
                failures.push((path.to_path_buf(), err));
                continue;
            }
            let locations = current_locations.get_or_insert_with(|| locate_all(&self.maildir));
            match locations.get(&file.base) {
                Some(moved_to) => match fs::remove_file(moved_to) {
                    Ok(()) => {
                        deleted_bytes += file.quota_size;
                        deleted_count += 1;
                    }
                    Err(err) if err.kind() == io::ErrorKind::NotFound => log_debug!(
                        "maildir: {} was already deleted by another program",
                        moved_to.display()
                    ),
                    Err(err) => failures.push((moved_to.clone(), err)),
                },
                None => log_debug!(
                    "maildir: {} was already deleted by another program",
                    path.display()
                ),
            }
        }
        if deleted_count > 0 {
            update_quota_file(&self.maildir, deleted_bytes, deleted_count);
        }
        if self.move_new_to_cur {
            self.move_kept_to_cur(indices);
        }
        // `self` (and with it the lock) is released when this returns.
        if failures.is_empty() {
            return Ok(());
        }
        for (path, err) in &failures {
            log_error!("maildir: cannot delete {}: {err}", path.display());
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

impl MaildirMaildrop {
    /// Where the file of message `index` was last seen.
    fn path_of<'a>(&'a self, index: usize, file: &'a MessageFile) -> &'a Path {
        self.moved.get(&index).unwrap_or(&file.path)
    }

    /// Moves the messages of the snapshot that are still in `new/` and
    /// not in `deleted` to `cur/`, as `<name>:2,`: a mail client has now
    /// seen them. A failure is logged; the message stays where it was.
    fn move_kept_to_cur(&self, deleted: &[usize]) {
        let cur = self.maildir.join("cur");
        for (index, file) in self.snapshot.files.iter().enumerate() {
            if deleted.binary_search(&index).is_ok() {
                continue;
            }
            let path = self.path_of(index, file);
            let in_new = path
                .parent()
                .and_then(Path::file_name)
                .is_some_and(|dir| dir == "new");
            let Some(name) = path.file_name() else {
                continue;
            };
            if !in_new {
                continue;
            }
            let mut target = name.to_os_string();
            if !name.as_encoded_bytes().contains(&b':') {
                target.push(":2,");
            }
            let target = cur.join(target);
            // Never replace a file already there (link + unlink would be
            // the strict way; rename after a check is enough here, since
            // the maildir is locked against other pop3d sessions and
            // deliverers only ever write unique names).
            if target.exists() {
                log_error!(
                    "maildir: not moving {} to cur/: {} exists",
                    path.display(),
                    target.display()
                );
                continue;
            }
            match fs::rename(path, &target) {
                Ok(()) => {}
                // Moved or deleted by another program meanwhile.
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => log_error!(
                    "maildir: cannot move {} to {}: {err}",
                    path.display(),
                    target.display()
                ),
            }
        }
    }
}

/// Appends `-<bytes> -<count>` to the maildir's Maildir++ quota file, if
/// it has one, as the Maildir++ specification asks of whoever deletes
/// mail. One `write` of the whole line on a file opened for appending, so
/// lines of concurrent writers do not interleave. A failure is logged: the
/// quota is then too high until the next recalculation, which Maildir++
/// readers do when the file looks wrong or grows past 5120 bytes.
fn update_quota_file(maildir: &Path, bytes: u64, count: u64) {
    let path = maildir.join(QUOTA_FILE_NAME);
    let line = format!("-{bytes} -{count}\n");
    let appended = OpenOptions::new()
        .append(true)
        .open(&path)
        .and_then(|mut file| file.write_all(line.as_bytes()));
    match appended {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => log_error!(
            "maildir: cannot update the quota file {}: {err}; the quota stays too high until \
             it is recalculated",
            path.display()
        ),
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
            Err(err) => log_error!("maildir: {err}"),
        }
    }
    locations
}

/// Streams one message file.
#[derive(Debug)]
pub struct MessageFileReader {
    /// The open message.
    file: File,
    /// Its path, for error messages.
    path: PathBuf,
}

/// A read error carries the file's name and the status the maildir store
/// gives I/O failures, through the SDK's `io::Error` wrapping.
impl Read for MessageFileReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.file.read(buf) {
                Ok(read) => return Ok(read),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => {
                    return Err(
                        io_failure(&format!("cannot read {}", self.path.display()), &err).into(),
                    )
                }
            }
        }
    }
}
