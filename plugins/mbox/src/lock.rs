//! Locking an mbox the way Debian's delivery agents do, and keeping two POP3
//! sessions off the same maildrop.
//!
//! # Locks shared with delivery agents
//! - **dotlock**: the file `<mbox>.lock`, made the NFS-safe way liblockfile
//!   (and so `dotlockfile`, procmail, Exim, Postfix) makes it: a uniquely
//!   named file is created in the same directory with `O_EXCL`, hard-linked
//!   to the lock name, and the link counts only if the link call succeeded
//!   or the unique file's link count became 2 (NFS may lose the reply). If
//!   the file system has no hard links, `O_CREAT|O_EXCL` on the lock name is
//!   used instead. The file holds our pid and a newline, as liblockfile's
//!   does. A dotlock is *stale*, and is removed, when it holds the pid of a
//!   process that no longer exists on this host (liblockfile's rule), or
//!   when it was last modified more than `stale_dotlock_secs` ago (default
//!   300 s, liblockfile's age limit; Dovecot's default is 120 s). We touch
//!   our own dotlock while a long rewrite holds it, and remove it on every
//!   exit path (its `Drop`) unless someone broke it and it is no longer ours.
//! - **fcntl**: a POSIX record lock (`fcntl(F_SETLK)`) over the whole file,
//!   shared for reading, exclusive for writing. `rustix::fs::fcntl_lock` is
//!   exactly that call (`F_SETLK` with `l_start = l_len = 0`, checked in its
//!   source), not `flock`; `nix` could make the same call but needs more
//!   code and the libc crate. Two properties of these locks shape the rest
//!   of the crate: they belong to the *process*, so two threads do not
//!   exclude each other, and closing *any* descriptor of the file drops
//!   every lock the process holds on it. Hence one descriptor per mbox per
//!   process (shared by the maildrop and its readers) and the in-process
//!   session table below.
//!
//! Locks are taken in the configured order and released in reverse. A lock
//! held by someone else is retried until a deadline, then the maildrop is
//! [`Error::InUse`].
//!
//! # The POP3 session lock
//! The delivery agents' locks are held only for moments (see
//! [`crate::maildrop`]), so something else must keep a second POP3 session
//! out for a whole session: a `flock` on the maildrop's index file (which
//! also works between pop3d processes) and a table of the mboxes open in
//! this process (which also covers two user names leading to one mbox).
//! `flock` does not conflict with `fcntl` locks on Linux, and the index file
//! is not a file delivery agents lock, so deliveries go on meanwhile. (With
//! `index_dir` set, index files are named after the user, so two user
//! names that lead to one mbox are kept apart only within one process.)

use pop3d_plugin_api::{log_info, log_warn, Error};
use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// The first pause between attempts to get a busy lock; it doubles up to
/// [`MAX_RETRY_PAUSE`].
const FIRST_RETRY_PAUSE: Duration = Duration::from_millis(20);
const MAX_RETRY_PAUSE: Duration = Duration::from_millis(500);

/// A kind of lock shared with delivery agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockKind {
    /// `<mbox>.lock`.
    Dotlock,
    /// `fcntl(F_SETLK)` on the mbox.
    Fcntl,
}

impl LockKind {
    fn name(self) -> &'static str {
        match self {
            LockKind::Dotlock => "dotlock",
            LockKind::Fcntl => "fcntl",
        }
    }
}

/// Whether the holder only reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Shared: other readers may hold the lock too.
    Read,
    /// Exclusive.
    Write,
}

/// What the lock functions need to know besides the file.
#[derive(Debug, Clone, Copy)]
pub struct LockPolicy<'a> {
    /// The mbox, for messages.
    pub mbox_path: &'a Path,
    /// `<mbox>.lock`.
    pub dotlock_path: &'a Path,
    /// When a dotlock is presumed abandoned.
    pub stale_after: Duration,
}

/// Locks held on an mbox; dropping releases them in reverse order.
#[derive(Debug)]
pub struct HeldLocks<'a> {
    /// The mbox descriptor the fcntl lock is on.
    file: Option<&'a File>,
    /// Whether an fcntl lock is held on `file`.
    fcntl: bool,
    /// The dotlock, if held.
    dotlock: Option<DotLock>,
    /// Kinds in the order they were taken, to release in reverse.
    order: Vec<LockKind>,
}

impl HeldLocks<'_> {
    /// Touches the dotlock, if held and not touched for `interval`, so a
    /// long rewrite is not taken for an abandoned lock.
    pub fn keep_alive(&mut self, interval: Duration) {
        if let Some(dotlock) = self.dotlock.as_mut() {
            dotlock.touch_if_due(interval);
        }
    }
}

impl Drop for HeldLocks<'_> {
    fn drop(&mut self) {
        while let Some(kind) = self.order.pop() {
            match kind {
                LockKind::Fcntl => {
                    if let (true, Some(file)) = (self.fcntl, self.file) {
                        if let Err(e) = rustix::fs::fcntl_lock(
                            file,
                            rustix::fs::FlockOperation::NonBlockingUnlock,
                        ) {
                            log_warn!("mbox: cannot release an fcntl lock: {e}");
                        }
                    }
                    self.fcntl = false;
                }
                LockKind::Dotlock => self.dotlock = None,
            }
        }
    }
}

/// Takes `kinds` in order on `file` (the mbox; `None` if it does not exist,
/// in which case fcntl is skipped), waiting until `deadline` for locks
/// held by others.
pub fn acquire<'a>(
    kinds: &[LockKind],
    access: Access,
    file: Option<&'a File>,
    policy: LockPolicy<'_>,
    deadline: Instant,
) -> Result<HeldLocks<'a>, Error> {
    let mut held = HeldLocks {
        file,
        fcntl: false,
        dotlock: None,
        order: Vec::with_capacity(kinds.len()),
    };
    for &kind in kinds {
        let mut pause = FIRST_RETRY_PAUSE;
        loop {
            let got = match kind {
                LockKind::Dotlock => {
                    match DotLock::try_create(policy.dotlock_path, policy.stale_after)? {
                        Some(dotlock) => {
                            held.dotlock = Some(dotlock);
                            if access == Access::Write {
                                remove_abandoned_link_files(policy.dotlock_path);
                            }
                            true
                        }
                        None => false,
                    }
                }
                LockKind::Fcntl => match file {
                    Some(file) => {
                        let got = try_fcntl(file, access)?;
                        held.fcntl = got;
                        got
                    }
                    None => true,
                },
            };
            if got {
                held.order.push(kind);
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::InUse(format!(
                    "{} is locked by another program ({} lock); gave up waiting",
                    policy.mbox_path.display(),
                    kind.name()
                )));
            }
            std::thread::sleep(pause.min(deadline - now));
            pause = (pause * 2).min(MAX_RETRY_PAUSE);
        }
    }
    Ok(held)
}

/// One non-blocking fcntl attempt: `Ok(false)` when someone else holds a
/// conflicting lock.
fn try_fcntl(file: &File, access: Access) -> Result<bool, Error> {
    use rustix::fs::FlockOperation;
    let operation = match access {
        Access::Read => FlockOperation::NonBlockingLockShared,
        Access::Write => FlockOperation::NonBlockingLockExclusive,
    };
    match rustix::fs::fcntl_lock(file, operation) {
        Ok(()) => Ok(true),
        // POSIX allows either for "held by someone else".
        Err(e) if e == rustix::io::Errno::AGAIN || e == rustix::io::Errno::ACCESS => Ok(false),
        Err(e) if e == rustix::io::Errno::NOLCK => Err(Error::TempFail(format!(
            "the kernel has no fcntl lock to spare (ENOLCK; on NFS, is the lock daemon running?): {e}"
        ))),
        Err(e) => Err(Error::TempFail(format!("cannot take an fcntl lock: {e}"))),
    }
}

/// A dotlock we created; removing it on drop releases it.
#[derive(Debug)]
pub struct DotLock {
    /// `<mbox>.lock`.
    path: PathBuf,
    /// Device, inode and change time of our lock file, so we never remove
    /// a lock that replaced ours after ours was broken (the inode number
    /// alone may be reused at once).
    identity: LockIdentity,
    /// When we last touched it.
    touched: Instant,
}

/// Makes the unique names of the files dotlocks are linked from.
static UNIQUE: AtomicU64 = AtomicU64::new(0);

impl DotLock {
    /// One attempt to create the dotlock, breaking a stale one first.
    /// `Ok(None)` when someone else holds it.
    pub fn try_create(path: &Path, stale_after: Duration) -> Result<Option<DotLock>, Error> {
        for _ in 0..2 {
            match create_linked(path)? {
                Some(identity) => {
                    return Ok(Some(DotLock {
                        path: path.to_path_buf(),
                        identity,
                        touched: Instant::now(),
                    }))
                }
                None => {
                    if !is_stale(path, stale_after) {
                        return Ok(None);
                    }
                    match fs::remove_file(path) {
                        Ok(()) => log_info!("mbox: removed stale dotlock {}", path.display()),
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(dotlock_error(path, e)),
                    }
                }
            }
        }
        Ok(None)
    }

    fn touch_if_due(&mut self, interval: Duration) {
        if self.touched.elapsed() < interval {
            return;
        }
        self.touched = Instant::now();
        match fs::symlink_metadata(&self.path) {
            Ok(metadata) if LockIdentity::of(&metadata) == self.identity => {}
            _ => {
                log_warn!("mbox: our dotlock {} was taken away", self.path.display());
                return;
            }
        }
        let touched = OpenOptions::new()
            .write(true)
            .open(&self.path)
            .and_then(|file| {
                file.set_modified(SystemTime::now())?;
                file.metadata()
            });
        match touched {
            // Touching changed the change time we recognise the lock by.
            Ok(metadata) => self.identity = LockIdentity::of(&metadata),
            Err(e) => log_warn!("mbox: cannot touch dotlock {}: {e}", self.path.display()),
        }
    }
}

impl Drop for DotLock {
    fn drop(&mut self) {
        match fs::symlink_metadata(&self.path) {
            Ok(metadata) if LockIdentity::of(&metadata) == self.identity => {
                if let Err(e) = fs::remove_file(&self.path) {
                    log_warn!("mbox: cannot remove dotlock {}: {e}", self.path.display());
                }
            }
            Ok(_) => log_warn!(
                "mbox: dotlock {} was replaced while we held it (broken as stale?); left alone",
                self.path.display()
            ),
            Err(e) => log_warn!("mbox: our dotlock {} vanished: {e}", self.path.display()),
        }
    }
}

/// What tells our dotlock from one made after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LockIdentity {
    /// Device.
    dev: u64,
    /// Inode number.
    ino: u64,
    /// Change time, seconds and nanoseconds.
    ctime: (i64, i64),
}

impl LockIdentity {
    fn of(metadata: &fs::Metadata) -> LockIdentity {
        LockIdentity {
            dev: metadata.dev(),
            ino: metadata.ino(),
            ctime: (metadata.ctime(), metadata.ctime_nsec()),
        }
    }
}

/// Creates `path` the liblockfile way. `Ok(None)` if it already exists;
/// otherwise the identity of the new lock.
fn create_linked(path: &Path) -> Result<Option<LockIdentity>, Error> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("mbox.lock");
    let unique = dir.join(format!(
        ".{name}.{}.{}.{}.pop3d",
        hostname(),
        std::process::id(),
        UNIQUE.fetch_add(1, Ordering::Relaxed)
    ));
    let mut temp = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&unique)
        .map_err(|e| dotlock_error(path, e))?;
    let written = writeln!(temp, "{}", std::process::id());
    drop(temp);
    if let Err(e) = written {
        let _ = fs::remove_file(&unique);
        return Err(dotlock_error(path, e));
    }
    let linked = fs::hard_link(&unique, path);
    let temp_metadata = fs::symlink_metadata(&unique);
    let _ = fs::remove_file(&unique);
    match linked {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            // NFS may report failure for a link that was made.
            if !matches!(&temp_metadata, Ok(metadata) if metadata.nlink() == 2) {
                return Ok(None);
            }
        }
        Err(_) => return create_exclusive(path),
    }
    // Removing the unique name changed the lock's change time: ask again.
    let metadata = fs::symlink_metadata(path).map_err(|e| dotlock_error(path, e))?;
    match temp_metadata {
        Ok(temp) if (temp.dev(), temp.ino()) == (metadata.dev(), metadata.ino()) => {
            Ok(Some(LockIdentity::of(&metadata)))
        }
        Ok(_) => Ok(None),
        Err(e) => Err(dotlock_error(path, e)),
    }
}

/// Removes the uniquely named files that processes of this host killed
/// while making the dotlock left behind (liblockfile leaves its own the
/// same way). Done while writing, when we hold the dotlock and the
/// directory listing is cheap next to the rewrite.
fn remove_abandoned_link_files(dotlock: &Path) {
    let (Some(dir), Some(name)) = (
        dotlock.parent(),
        dotlock.file_name().and_then(|n| n.to_str()),
    ) else {
        return;
    };
    if !Path::new("/proc/self").exists() {
        return;
    }
    let prefix = format!(".{name}.{}.", hostname());
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(rest) = file_name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .and_then(|n| n.strip_suffix(".pop3d"))
        else {
            continue;
        };
        let owner = rest
            .split('.')
            .next()
            .and_then(|pid| pid.parse::<u32>().ok());
        if let Some(pid) = owner {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}

/// `O_CREAT|O_EXCL` on the lock name itself, for file systems without
/// hard links.
fn create_exclusive(path: &Path) -> Result<Option<LockIdentity>, Error> {
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)
    {
        Ok(mut file) => {
            if let Err(e) = writeln!(file, "{}", std::process::id()) {
                let _ = fs::remove_file(path);
                return Err(dotlock_error(path, e));
            }
            let metadata = file.metadata().map_err(|e| dotlock_error(path, e))?;
            Ok(Some(LockIdentity::of(&metadata)))
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(None),
        Err(e) => Err(dotlock_error(path, e)),
    }
}

fn dotlock_error(path: &Path, error: io::Error) -> Error {
    let advice = match error.kind() {
        io::ErrorKind::PermissionDenied => {
            "; pop3d needs write access to the mbox directory (group mail on Debian), \
             or remove \"dotlock\" from the store's lock lists"
        }
        _ => "",
    };
    let text = format!("cannot create dotlock {}: {error}{advice}", path.display());
    match error.kind() {
        io::ErrorKind::PermissionDenied => Error::PermFail(text),
        _ => Error::TempFail(text),
    }
}

/// Whether the dotlock at `path` may be broken: its owner (by the pid it
/// holds) is gone from this host, or it is older than `stale_after`.
fn is_stale(path: &Path, stale_after: Duration) -> bool {
    let Ok(metadata) = fs::symlink_metadata(path) else {
        // Gone already: the next attempt will tell.
        return false;
    };
    if let Some(pid) = read_pid(path) {
        if Path::new("/proc/self").exists() && !Path::new(&format!("/proc/{pid}")).exists() {
            return true;
        }
    }
    match metadata.modified().map(|m| m.elapsed()) {
        Ok(Ok(age)) => age > stale_after,
        // A time in the future (clock skew on NFS): not stale.
        _ => false,
    }
}

/// The positive pid a lock file holds, if it holds one (liblockfile writes
/// `0` when it has none).
fn read_pid(path: &Path) -> Option<u32> {
    let mut text = String::new();
    File::open(path)
        .ok()?
        .take(32)
        .read_to_string(&mut text)
        .ok()?;
    text.trim().parse::<u32>().ok().filter(|&pid| pid > 0)
}

/// This host's name, for unique file names on shared file systems.
fn hostname() -> String {
    let name = fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let clean: String = name
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(64)
        .collect();
    if clean.is_empty() {
        "localhost".into()
    } else {
        clean
    }
}

/// The mboxes open in this process, by canonical path.
static OPEN_HERE: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());

/// Keeps other POP3 sessions off one maildrop while it lives.
#[derive(Debug)]
pub struct SessionLock {
    /// Our entry in [`OPEN_HERE`].
    key: PathBuf,
    /// The index file, `flock`ed; `None` when it could not exist (the
    /// mbox directory is missing, so there is nothing to protect).
    index: Option<File>,
}

impl SessionLock {
    /// Takes the session lock for the mbox at `mbox` whose index is at
    /// `index`, waiting until `deadline` for another session to end.
    /// `index_optional` allows going on without an index file when its
    /// directory does not exist.
    pub fn acquire(
        mbox: &Path,
        index: &Path,
        index_optional: bool,
        deadline: Instant,
    ) -> Result<SessionLock, Error> {
        let key = canonical_key(mbox);
        let mut pause = FIRST_RETRY_PAUSE;
        loop {
            let inserted = match OPEN_HERE.lock() {
                Ok(mut open) => open.insert(key.clone()),
                Err(poisoned) => poisoned.into_inner().insert(key.clone()),
            };
            if inserted {
                break;
            }
            wait_or_give_up(&mut pause, deadline, || {
                format!("{} is open in another POP3 session", mbox.display())
            })?;
        }
        // From here on, dropping `lock` removes the table entry.
        let mut lock = SessionLock { key, index: None };
        let file = match OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(index)
        {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound && index_optional => return Ok(lock),
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                return Err(Error::PermFail(format!(
                    "cannot open the mbox index {}: {e}; give pop3d write access there or set \
                     index_dir in the store config",
                    index.display()
                )))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::PermFail(format!(
                    "cannot create the mbox index {}: its directory does not exist; create it \
                     or fix index_dir in the store config",
                    index.display()
                )))
            }
            Err(e) => {
                return Err(Error::TempFail(format!(
                    "cannot open the mbox index {}: {e}",
                    index.display()
                )))
            }
        };
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) => wait_or_give_up(&mut pause, deadline, || {
                    format!(
                        "{} is open in another POP3 session (another process)",
                        mbox.display()
                    )
                })?,
                Err(TryLockError::Error(e)) => {
                    return Err(Error::TempFail(format!(
                        "cannot lock {}: {e}",
                        index.display()
                    )))
                }
            }
        }
        lock.index = Some(file);
        Ok(lock)
    }

    /// The index file, locked by us; `None` when there is none.
    pub fn index_file(&self) -> Option<&File> {
        self.index.as_ref()
    }
}

impl Drop for SessionLock {
    fn drop(&mut self) {
        // The flock goes with the descriptor; only the table needs us.
        match OPEN_HERE.lock() {
            Ok(mut open) => open.remove(&self.key),
            Err(poisoned) => poisoned.into_inner().remove(&self.key),
        };
    }
}

/// Sleeps before the next attempt, or fails with IN-USE at the deadline.
fn wait_or_give_up(
    pause: &mut Duration,
    deadline: Instant,
    why: impl FnOnce() -> String,
) -> Result<(), Error> {
    let now = Instant::now();
    if now >= deadline {
        return Err(Error::InUse(why()));
    }
    std::thread::sleep((*pause).min(deadline - now));
    *pause = (*pause * 2).min(MAX_RETRY_PAUSE);
    Ok(())
}

/// The mbox's path with symlinks resolved, so two names for one file
/// share one table entry.
fn canonical_key(mbox: &Path) -> PathBuf {
    if let Ok(real) = fs::canonicalize(mbox) {
        return real;
    }
    match (mbox.parent(), mbox.file_name()) {
        (Some(dir), Some(name)) => match fs::canonicalize(dir) {
            Ok(dir) => dir.join(name),
            Err(_) => mbox.to_path_buf(),
        },
        _ => mbox.to_path_buf(),
    }
}
