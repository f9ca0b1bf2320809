//! An open mbox maildrop: snapshot at open, streaming reads, and the
//! crash-safe rewrite at UPDATE.
//!
//! # Who holds what, when
//! A POP3 session may last many minutes, and mail must still be delivered
//! meanwhile, so the locks delivery agents honour (the configured read and
//! write locks, see [`crate::lock`]) are held only for moments:
//!
//! - **open**: read locks while the index is checked or the file scanned;
//!   the snapshot is the file up to its size at that moment.
//! - **each read** of a message (64 KiB at most): read locks, a check that
//!   the file is still the one snapshotted and that the separators around
//!   the message are still in place, the read, release. A file rewritten by
//!   another program during the session makes the read fail (TEMP-FAIL)
//!   instead of returning bytes of some other message.
//! - **commit**: write locks for the whole rewrite.
//!
//! What keeps other POP3 sessions out for the whole session is the session
//! lock ([`crate::lock::SessionLock`]), which delivery agents ignore.
//!
//! # The rewrite
//! Deleting messages means writing a new file: under the write locks, the
//! store checks that every separator of the snapshot is where it was (else
//! another program rewrote the file and the commit is refused with
//! TEMP-FAIL rather than risk damage), copies the kept messages and then
//! everything delivered after the snapshot into `.<mbox>.pop3d-tmp` in the
//! same directory, gives it the old file's owner and mode, fsyncs it,
//! records its index, renames it over the mbox and fsyncs the directory. A
//! crash at any point leaves either the old file or the new one, each
//! whole. Mail delivered during the session is kept because it is copied
//! while the write locks keep further deliveries out. The rename swaps the
//! inode, which is safe with agents that take the dotlock before opening
//! the mbox (liblockfile users, procmail, Postfix, Exim, Dovecot's LDA,
//! which also re-check the inode after locking): that is why "dotlock" is in
//! the default write locks. The rewrite needs free space for a copy of the
//! mbox; when it fails, the temporary file is removed and nothing changes.

use crate::config::{Config, UserFiles};
use crate::index::{self, Entry, Identity, IndexSettings, Snapshot};
use crate::lock::{self, Access, HeldLocks, LockKind, LockPolicy, SessionLock};
use crate::quote::Unquoter;
use crate::scan::CHUNK_LEN;
use pop3d_plugin_api::{log_debug, log_warn, Error, Maildrop, MessageInfo};
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How often the open retries when the mbox was replaced between being
/// opened and being locked.
const REOPEN_ATTEMPTS: usize = 3;

/// Everything a maildrop and its readers share. Readers hold it too, so the
/// mbox descriptor (and with it the in-process session entry) lives until
/// the last of them is gone: closing a descriptor of the mbox would drop
/// every fcntl lock this process holds on it.
#[derive(Debug)]
struct Shared {
    /// The user's paths.
    files: UserFiles,
    /// Lock kinds for reading.
    read_locks: Vec<LockKind>,
    /// Lock kinds for rewriting.
    write_locks: Vec<LockKind>,
    /// Longest wait for a lock.
    lock_timeout: Duration,
    /// When a dotlock is presumed abandoned.
    stale_dotlock: Duration,
    /// What the index depends on.
    settings: IndexSettings,
    /// The mbox, opened once; `None` when it did not exist at open.
    mbox: Option<File>,
    /// Whether `mbox` was opened for writing (needed to delete).
    writable: bool,
    /// Serialises locked operations on `mbox`: fcntl locks of one process
    /// do not exclude each other, so a reader and a commit on two threads
    /// must take turns.
    serial: Mutex<()>,
    /// The session lock; declared last so it is released last.
    session: SessionLock,
}

impl Shared {
    fn policy(&self) -> LockPolicy<'_> {
        LockPolicy {
            mbox_path: &self.files.mbox,
            dotlock_path: &self.files.dotlock,
            stale_after: self.stale_dotlock,
        }
    }

    fn serialise(&self) -> MutexGuard<'_, ()> {
        match self.serial.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Checks, under a lock, that the mbox is still the file that was
    /// snapshotted, at least `end` bytes long, with each of `entries`'
    /// separators in place.
    fn verify(
        &self,
        file: &File,
        snapshot_identity: &Identity,
        end: u64,
        entries: &[&Entry],
    ) -> Result<(), Error> {
        let path = &self.files.mbox;
        let changed = |what: &str| {
            Error::TempFail(format!(
                "mbox {} was {what} by another program during the POP3 session; log in again",
                path.display()
            ))
        };
        let on_disk = match fs::metadata(path) {
            Ok(metadata) => Identity::of(&metadata),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(changed("removed")),
            Err(e) => {
                return Err(Error::TempFail(format!(
                    "cannot stat mbox {}: {e}",
                    path.display()
                )))
            }
        };
        if !on_disk.same_file(snapshot_identity) {
            return Err(changed("replaced"));
        }
        let ours = file
            .metadata()
            .map_err(|e| Error::TempFail(format!("cannot stat mbox {}: {e}", path.display())))?;
        if ours.len() < end {
            return Err(changed("truncated"));
        }
        for entry in entries {
            let in_place = index::separator_matches(file, entry)
                .map_err(|e| Error::TempFail(format!("reading mbox {}: {e}", path.display())))?;
            if !in_place {
                return Err(changed("rewritten"));
            }
        }
        Ok(())
    }
}

/// An open mbox maildrop.
#[derive(Debug)]
pub struct MboxMaildrop {
    /// The descriptor, locks and settings, shared with readers.
    shared: Arc<Shared>,
    /// The messages as of open.
    snapshot: Snapshot,
}

impl MboxMaildrop {
    /// Takes the session lock and a snapshot of `files.mbox`.
    pub fn open(config: &Config, files: UserFiles) -> Result<MboxMaildrop, Error> {
        let deadline = Instant::now() + config.lock_timeout;
        let mbox_exists = fs::symlink_metadata(&files.mbox).is_ok();
        let session = SessionLock::acquire(&files.mbox, &files.index, !mbox_exists, deadline)?;
        let settings = IndexSettings {
            variant: config.variant,
            honour_x_uidl: config.honour_x_uidl,
        };
        let mut attempts = 0;
        let (mbox, writable, snapshot) = loop {
            attempts += 1;
            let (mbox, writable) = open_mbox(&files.mbox)?;
            let policy = LockPolicy {
                mbox_path: &files.mbox,
                dotlock_path: &files.dotlock,
                stale_after: config.stale_dotlock,
            };
            let held = lock::acquire(
                &config.read_locks,
                Access::Read,
                mbox.as_ref(),
                policy,
                deadline,
            )?;
            if !still_at_path(&files.mbox, mbox.as_ref())? {
                drop(held);
                if attempts < REOPEN_ATTEMPTS {
                    continue;
                }
                return Err(Error::TempFail(format!(
                    "mbox {} keeps being replaced while it is opened; try again later",
                    files.mbox.display()
                )));
            }
            let refreshed = match &mbox {
                None => None,
                Some(file) => {
                    let metadata = file.metadata().map_err(|e| {
                        Error::TempFail(format!("cannot stat mbox {}: {e}", files.mbox.display()))
                    })?;
                    let stored = session
                        .index_file()
                        .and_then(|index| index::load(index, settings));
                    Some(index::refresh(
                        file,
                        &files.mbox,
                        Identity::of(&metadata),
                        stored,
                        settings,
                    )?)
                }
            };
            drop(held);
            let snapshot = match refreshed {
                None => Snapshot::empty(Identity {
                    dev: 0,
                    ino: 0,
                    size: 0,
                    mtime_sec: 0,
                    mtime_nsec: 0,
                }),
                Some((snapshot, changed)) => {
                    if changed {
                        if let Some(index_file) = session.index_file() {
                            if let Err(e) = index::save(index_file, &snapshot, settings) {
                                log_warn!(
                                    "mbox: cannot write index {}: {e}",
                                    files.index.display()
                                );
                            }
                        }
                    }
                    snapshot
                }
            };
            break (mbox, writable, snapshot);
        };
        log_debug!(
            "mbox: opened {} with {} messages",
            files.mbox.display(),
            snapshot.entries.len()
        );
        Ok(MboxMaildrop {
            shared: Arc::new(Shared {
                files,
                read_locks: config.read_locks.clone(),
                write_locks: config.write_locks.clone(),
                lock_timeout: config.lock_timeout,
                stale_dotlock: config.stale_dotlock,
                settings,
                mbox,
                writable,
                serial: Mutex::new(()),
                session,
            }),
            snapshot,
        })
    }
}

/// Opens the mbox for reading and, if allowed, writing. `None` if it does
/// not exist.
fn open_mbox(path: &Path) -> Result<(Option<File>, bool), Error> {
    match fs::metadata(path) {
        Ok(metadata) if !metadata.is_file() => {
            return Err(Error::PermFail(format!(
                "mbox {} is not a regular file; fix `path` in the store config",
                path.display()
            )))
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((None, false)),
        Err(e) => return Err(open_error(path, e)),
    }
    match OpenOptions::new().read(true).write(true).open(path) {
        Ok(file) => Ok((Some(file), true)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok((None, false)),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            let file = File::open(path).map_err(|e| open_error(path, e))?;
            log_warn!(
                "mbox: {} is not writable by pop3d; messages can be read but not deleted",
                path.display()
            );
            Ok((Some(file), false))
        }
        Err(e) => Err(open_error(path, e)),
    }
}

fn open_error(path: &Path, error: io::Error) -> Error {
    let text = format!("cannot open mbox {}: {error}", path.display());
    match error.kind() {
        io::ErrorKind::PermissionDenied => Error::PermFail(text),
        _ => Error::TempFail(text),
    }
}

/// Whether `file` (or its absence) is still what `path` names.
fn still_at_path(path: &Path, file: Option<&File>) -> Result<bool, Error> {
    let on_disk = match fs::metadata(path) {
        Ok(metadata) => Some(metadata),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(open_error(path, e)),
    };
    Ok(match (file, on_disk) {
        (None, None) => true,
        (Some(file), Some(on_disk)) => {
            let ours = file.metadata().map_err(|e| open_error(path, e))?;
            (ours.dev(), ours.ino()) == (on_disk.dev(), on_disk.ino())
        }
        _ => false,
    })
}

impl Maildrop for MboxMaildrop {
    type Reader = MessageReader;

    fn messages(&self) -> &[MessageInfo] {
        &self.snapshot.listing
    }

    fn open_message(&mut self, index: usize) -> Result<MessageReader, Error> {
        let Some(&entry) = self.snapshot.entries.get(index) else {
            return Err(Error::NotFound(format!("message index {index}")));
        };
        let mut reader = MessageReader {
            shared: Arc::clone(&self.shared),
            snapshot_identity: self.snapshot.identity,
            snapshot_end: self.snapshot.identity.size,
            entry,
            next: self.snapshot.entries.get(index + 1).copied(),
            position: entry.content_start,
            unquoter: Unquoter::new(self.shared.settings.variant),
            raw: Vec::new(),
            pending: Vec::new(),
            pending_at: 0,
            finished: false,
        };
        // Fail now, before the host answers +OK, if the file changed.
        reader.check_unchanged()?;
        Ok(reader)
    }

    fn commit(self, indices: &[usize]) -> Result<(), Error> {
        if indices.is_empty() {
            return Ok(());
        }
        let shared = &self.shared;
        let Some(file) = shared.mbox.as_ref() else {
            return Ok(());
        };
        if !shared.writable {
            return Err(Error::PermFail(format!(
                "mbox {} is not writable by pop3d, so messages cannot be deleted",
                shared.files.mbox.display()
            )));
        }
        let _turn = shared.serialise();
        let deadline = Instant::now() + shared.lock_timeout;
        let mut held = lock::acquire(
            &shared.write_locks,
            Access::Write,
            Some(file),
            shared.policy(),
            deadline,
        )?;
        let snapshot = &self.snapshot;
        let all: Vec<&Entry> = snapshot.entries.iter().collect();
        shared.verify(file, &snapshot.identity, snapshot.identity.size, &all)?;
        let started = Instant::now();
        let deleted = indices.len();
        rewrite(shared, file, snapshot, indices, &mut held)?;
        drop(held);
        log_debug!(
            "mbox: deleted {deleted} of {} messages from {} in {:?}",
            snapshot.entries.len(),
            shared.files.mbox.display(),
            started.elapsed()
        );
        Ok(())
    }
}

/// Removes the temporary file on every exit path but success.
struct TempFile {
    /// Its path; `None` once it was renamed into place.
    path: Option<PathBuf>,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            if let Err(e) = fs::remove_file(&path) {
                log_warn!("mbox: cannot remove {}: {e}", path.display());
            }
        }
    }
}

/// Writes the mbox without the messages at `deleted` (sorted), plus
/// whatever was appended after the snapshot, and renames it into place.
/// The write locks are held.
fn rewrite(
    shared: &Shared,
    file: &File,
    snapshot: &Snapshot,
    deleted: &[usize],
    held: &mut HeldLocks<'_>,
) -> Result<(), Error> {
    let mbox_path = &shared.files.mbox;
    let target = rename_target(mbox_path)?;
    let temp_path = match (&target, target.file_name().and_then(|n| n.to_str())) {
        (target, Some(name)) if target != mbox_path => {
            target.with_file_name(format!(".{name}.pop3d-tmp"))
        }
        _ => shared.files.rewrite.clone(),
    };
    let write_error = |what: &str, e: io::Error| {
        let text = format!("{what} {}: {e}", temp_path.display());
        match e.kind() {
            io::ErrorKind::PermissionDenied => Error::PermFail(format!(
                "{text}; pop3d needs write access to the mbox directory"
            )),
            _ => Error::TempFail(text),
        }
    };
    let original = file
        .metadata()
        .map_err(|e| Error::TempFail(format!("cannot stat mbox {}: {e}", mbox_path.display())))?;
    let end_now = original.len();
    let snapshot_end = snapshot.identity.size;
    let appended_start = if end_now > snapshot_end {
        Some(appended_messages_start(
            file,
            snapshot_end,
            end_now,
            mbox_path,
        )?)
    } else {
        None
    };

    // A leftover from a crash, or a planted link: never write through it.
    match fs::remove_file(&temp_path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(write_error("cannot remove the old", e)),
    }
    let out = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp_path)
        .map_err(|e| write_error("cannot create", e))?;
    let mut temp = TempFile {
        path: Some(temp_path.clone()),
    };
    if let Err(e) = std::os::unix::fs::fchown(&out, Some(original.uid()), Some(original.gid())) {
        log_debug!(
            "mbox: cannot give {} the owner of {} ({e}); it will belong to pop3d",
            temp_path.display(),
            mbox_path.display()
        );
    }
    out.set_permissions(Permissions::from_mode(original.mode() & 0o7777))
        .map_err(|e| write_error("cannot set the mode of", e))?;

    let touch_every = (shared.stale_dotlock / 4).max(Duration::from_secs(1));
    let mut writer = &out;
    let mut written = 0u64;
    let mut kept = Snapshot::empty(snapshot.identity);
    let mut deleted = deleted.iter().copied().peekable();
    for (index, entry) in snapshot.entries.iter().enumerate() {
        if deleted.peek() == Some(&index) {
            deleted.next();
            continue;
        }
        // The message with the empty line that separates it from the next.
        let chunk_end = snapshot
            .entries
            .get(index + 1)
            .map_or(snapshot_end, |next| next.from_offset);
        copy_range(file, entry.from_offset, chunk_end, &mut writer, || {
            held.keep_alive(touch_every)
        })
        .map_err(|e| write_error("cannot write", e))?;
        let shift = |offset: u64| written + (offset - entry.from_offset);
        kept.entries.push(Entry {
            from_offset: written,
            content_start: shift(entry.content_start),
            content_end: shift(entry.content_end),
            ..*entry
        });
        kept.listing.push(snapshot.listing[index].clone());
        written += chunk_end - entry.from_offset;
    }
    if appended_start.is_some() && written > 0 {
        // The last kept message may lack the empty line before the
        // newly delivered ones; add it so the file stays well formed.
        let tail_len = written.min(4);
        let mut tail = [0u8; 4];
        out.read_exact_at(&mut tail[..tail_len as usize], written - tail_len)
            .map_err(|e| write_error("cannot read back", e))?;
        let tail = &tail[..tail_len as usize];
        let separator: &[u8] = if tail.ends_with(b"\n\n") || tail.ends_with(b"\n\r\n") {
            b""
        } else if tail.ends_with(b"\r\n") {
            b"\r\n"
        } else if tail.ends_with(b"\n") {
            b"\n"
        } else {
            // The message lacked its final line end: it gets one, which
            // changes neither its wire size nor its UIDL.
            if let Some(last) = kept.entries.last_mut() {
                last.content_end += 1;
            }
            b"\n\n"
        };
        writer
            .write_all(separator)
            .map_err(|e| write_error("cannot write", e))?;
        written += separator.len() as u64;
    }
    let indexed_end = written;
    if let Some(start) = appended_start {
        copy_range(file, start, end_now, &mut writer, || {
            held.keep_alive(touch_every)
        })
        .map_err(|e| write_error("cannot write", e))?;
    }
    out.sync_all().map_err(|e| write_error("cannot fsync", e))?;

    let metadata = out.metadata().map_err(|e| write_error("cannot stat", e))?;
    kept.identity = Identity {
        size: indexed_end,
        ..Identity::of(&metadata)
    };
    let tail_len = indexed_end.min(index::TAIL_LEN);
    let mut tail = vec![0u8; tail_len as usize];
    out.read_exact_at(&mut tail, indexed_end - tail_len)
        .map_err(|e| write_error("cannot read back", e))?;
    kept.tail = tail;
    if let Some(index_file) = shared.session.index_file() {
        // Written before the rename: if we die in between, the index names
        // a file that is not the mbox and is simply rebuilt.
        if let Err(e) = index::save(index_file, &kept, shared.settings) {
            log_warn!(
                "mbox: cannot write index {}: {e}",
                shared.files.index.display()
            );
        }
    }
    drop(out);

    fs::rename(&temp_path, &target).map_err(|e| write_error("cannot rename", e))?;
    temp.path = None;
    let directory = target.parent().unwrap_or(Path::new("/"));
    if let Err(e) = File::open(directory).and_then(|dir| dir.sync_all()) {
        // The rename is done; only its durability across a power cut is
        // in doubt, which the next login cannot fix either.
        log_warn!("mbox: cannot fsync directory {}: {e}", directory.display());
    }
    Ok(())
}

/// Where the rewritten file goes: the mbox itself, or the file its path
/// links to (a rename over the link would replace the link).
fn rename_target(mbox: &Path) -> Result<PathBuf, Error> {
    let metadata = fs::symlink_metadata(mbox)
        .map_err(|e| Error::TempFail(format!("cannot stat mbox {}: {e}", mbox.display())))?;
    if metadata.file_type().is_symlink() {
        fs::canonicalize(mbox).map_err(|e| {
            Error::TempFail(format!("cannot resolve mbox link {}: {e}", mbox.display()))
        })
    } else {
        Ok(mbox.to_path_buf())
    }
}

/// Where the messages delivered after the snapshot begin: at the snapshot
/// end, after any empty lines. Anything else there means someone changed
/// the last message, and the rewrite is refused.
fn appended_messages_start(file: &File, from: u64, end: u64, path: &Path) -> Result<u64, Error> {
    let mut probe = [0u8; 256];
    let len = (end - from).min(probe.len() as u64) as usize;
    file.read_exact_at(&mut probe[..len], from)
        .map_err(|e| Error::TempFail(format!("reading mbox {}: {e}", path.display())))?;
    let mut at = 0;
    loop {
        let rest = &probe[at..len];
        if rest.starts_with(b"\n") {
            at += 1;
        } else if rest.starts_with(b"\r\n") {
            at += 2;
        } else if rest.starts_with(b"From ") {
            return Ok(from + at as u64);
        } else if rest.is_empty() && len < probe.len() {
            // Only empty lines were appended.
            return Ok(end);
        } else {
            return Err(Error::TempFail(format!(
                "mbox {} was changed after byte {from} by a program that did not append a \
                 \"From \" separator; not rewriting it",
                path.display()
            )));
        }
    }
}

/// How much is copied between two touches of our dotlock.
const COPY_PIECE: u64 = 64 << 20;

/// Copies `file[start..end)` to `out`, in the kernel where it can, keeping
/// our dotlock fresh on the way.
fn copy_range(
    file: &File,
    start: u64,
    end: u64,
    out: &mut &File,
    mut keep_alive: impl FnMut(),
) -> io::Result<()> {
    let mut source = file;
    source.seek(SeekFrom::Start(start))?;
    let mut at = start;
    while at < end {
        let piece = (end - at).min(COPY_PIECE);
        let copied = io::copy(&mut source.take(piece), out)?;
        if copied != piece {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the mbox became shorter while it was being copied",
            ));
        }
        at += piece;
        keep_alive();
    }
    Ok(())
}

/// Streams one message: the bytes after its separator line, up to its end,
/// with mboxrd quoting undone, LF or CRLF as stored.
#[derive(Debug)]
pub struct MessageReader {
    /// The descriptor and locks of the maildrop.
    shared: Arc<Shared>,
    /// The file as snapshotted, to notice it was replaced.
    snapshot_identity: Identity,
    /// End of the snapshot: the file must stay at least this long.
    snapshot_end: u64,
    /// The message.
    entry: Entry,
    /// The next message, whose separator marks where this one ends.
    next: Option<Entry>,
    /// Offset of the next raw byte to read.
    position: u64,
    /// Undoes `>From ` quoting.
    unquoter: Unquoter,
    /// Raw bytes of the current chunk.
    raw: Vec<u8>,
    /// Unquoted bytes not yet handed out.
    pending: Vec<u8>,
    /// How much of `pending` was handed out.
    pending_at: usize,
    /// The unquoter was flushed at the end of the message.
    finished: bool,
}

impl MessageReader {
    /// Checks, under the read locks, that the message is still in place.
    fn check_unchanged(&mut self) -> Result<(), Error> {
        let shared = Arc::clone(&self.shared);
        let _turn = shared.serialise();
        let file = self.file(&shared)?;
        let _held = lock::acquire(
            &shared.read_locks,
            Access::Read,
            Some(file),
            shared.policy(),
            Instant::now() + shared.lock_timeout,
        )?;
        self.verify(&shared, file)
    }

    fn file<'a>(&self, shared: &'a Shared) -> Result<&'a File, Error> {
        shared
            .mbox
            .as_ref()
            .ok_or_else(|| Error::NotFound("the mbox does not exist".into()))
    }

    fn verify(&self, shared: &Shared, file: &File) -> Result<(), Error> {
        let mut entries = vec![&self.entry];
        entries.extend(self.next.as_ref());
        shared.verify(file, &self.snapshot_identity, self.snapshot_end, &entries)
    }

    /// Reads the next raw chunk of the message into `raw`, under the read
    /// locks and after checking the message is still in place.
    fn read_chunk(&mut self) -> Result<(), Error> {
        let shared = Arc::clone(&self.shared);
        let _turn = shared.serialise();
        let file = self.file(&shared)?;
        let _held = lock::acquire(
            &shared.read_locks,
            Access::Read,
            Some(file),
            shared.policy(),
            Instant::now() + shared.lock_timeout,
        )?;
        self.verify(&shared, file)?;
        let want = (self.entry.content_end - self.position).min(CHUNK_LEN as u64) as usize;
        self.raw.resize(want, 0);
        file.read_exact_at(&mut self.raw, self.position)
            .map_err(|e| {
                Error::TempFail(format!("reading mbox {}: {e}", shared.files.mbox.display()))
            })?;
        self.position += want as u64;
        Ok(())
    }
}

impl Read for MessageReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.pending_at < self.pending.len() {
                let n = buf.len().min(self.pending.len() - self.pending_at);
                buf[..n].copy_from_slice(&self.pending[self.pending_at..self.pending_at + n]);
                self.pending_at += n;
                return Ok(n);
            }
            if buf.is_empty() {
                return Ok(0);
            }
            self.pending.clear();
            self.pending_at = 0;
            if self.position < self.entry.content_end {
                self.read_chunk()?;
                self.unquoter.feed(&self.raw, &mut self.pending);
            } else if !self.finished {
                self.finished = true;
                self.unquoter.finish(&mut self.pending);
            } else {
                return Ok(0);
            }
        }
    }
}
