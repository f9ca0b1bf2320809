//! Locks shared with other programs: dotlocks (ours, stale ones, live ones
//! held by Debian's `dotlockfile`) and fcntl locks held by another process.

mod common;

use common::*;
use pop3d_mbox::lock::{self, Access, LockKind, LockPolicy};
use pop3d_plugin_api::{Error, Maildrop, StorePlugin};
use std::fs;
use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

fn policy<'a>(dir: &'a TempDir, dotlock: &'a std::path::Path) -> LockPolicy<'a> {
    LockPolicy {
        mbox_path: dir.path(),
        dotlock_path: dotlock,
        stale_after: Duration::from_secs(300),
    }
}

#[test]
fn our_dotlock_holds_our_pid_and_goes_away_when_released() {
    let dir = TempDir::new("dotlock");
    let dotlock = dir.path().join("alice.lock");
    let held = lock::acquire(
        &[LockKind::Dotlock],
        Access::Write,
        None,
        policy(&dir, &dotlock),
        Instant::now(),
    )
    .unwrap();
    assert_eq!(
        fs::read_to_string(&dotlock).unwrap(),
        format!("{}\n", std::process::id())
    );
    // Held: a second attempt is refused at its deadline.
    let second = lock::acquire(
        &[LockKind::Dotlock],
        Access::Write,
        None,
        policy(&dir, &dotlock),
        Instant::now(),
    );
    assert!(matches!(second, Err(Error::InUse(_))));
    drop(held);
    assert!(!dotlock.exists());
    let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
    assert!(
        leftovers.is_empty(),
        "temporary link files left: {leftovers:?}"
    );
}

#[test]
fn a_dotlock_replaced_after_being_broken_is_not_removed() {
    let dir = TempDir::new("replaced");
    let dotlock = dir.path().join("alice.lock");
    let held = lock::acquire(
        &[LockKind::Dotlock],
        Access::Write,
        None,
        policy(&dir, &dotlock),
        Instant::now(),
    )
    .unwrap();
    // Someone decided ours was stale and took the lock.
    fs::remove_file(&dotlock).unwrap();
    fs::write(&dotlock, "1\n").unwrap();
    drop(held);
    assert_eq!(fs::read_to_string(&dotlock).unwrap(), "1\n");
}

#[test]
fn an_old_dotlock_is_broken() {
    let dir = TempDir::new("stale");
    fs::write(dir.mbox("alice"), mbox_bytes(&[Stored::numbered(1, 100)])).unwrap();
    let dotlock = dir.path().join("alice.lock");
    // liblockfile's form of "no pid": 0.
    fs::write(&dotlock, "0\n").unwrap();
    let old = SystemTime::now() - Duration::from_secs(600);
    fs::File::options()
        .write(true)
        .open(&dotlock)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let store = store(
        &dir,
        "read_locks: [\"dotlock\", \"fcntl\"], lock_timeout_secs: 0",
    );
    let maildrop = store.open(&user("alice")).unwrap();
    assert_eq!(maildrop.messages().len(), 1);
    assert!(!dotlock.exists(), "the stale dotlock was not removed");

    // A young one without pid is respected.
    fs::write(&dotlock, "0\n").unwrap();
    drop(maildrop);
    assert!(matches!(store.open(&user("alice")), Err(Error::InUse(_))));
    fs::remove_file(&dotlock).unwrap();
}

#[test]
fn a_dotlock_of_a_dead_process_is_broken() {
    let dir = TempDir::new("deadpid");
    fs::write(dir.mbox("alice"), mbox_bytes(&[Stored::numbered(1, 100)])).unwrap();
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let dotlock = dir.path().join("alice.lock");
    fs::write(&dotlock, format!("{dead}\n")).unwrap();
    let store = store(&dir, "read_locks: [\"dotlock\"], lock_timeout_secs: 0");
    store.open(&user("alice")).unwrap();
    assert!(!dotlock.exists());
}

/// `dotlockfile -l -p <lock> sleep <seconds>` holds the lock with its own
/// (live) pid while the command runs, then removes it.
fn dotlockfile_holding(dotlock: &std::path::Path, seconds: &str) -> std::process::Child {
    let child = command("dotlockfile", "liblockfile-bin")
        .args(["-l", "-p", "-r", "0"])
        .arg(dotlock)
        .args(["sleep", seconds])
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !dotlock.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "dotlockfile did not lock"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    child
}

#[test]
fn a_live_dotlock_makes_open_wait_then_answer_in_use() {
    let dir = TempDir::new("live");
    fs::write(dir.mbox("alice"), mbox_bytes(&[Stored::numbered(1, 100)])).unwrap();
    let dotlock = dir.path().join("alice.lock");
    let mut holder = dotlockfile_holding(&dotlock, "3");
    let store = store(&dir, "read_locks: [\"dotlock\"], lock_timeout_secs: 1");
    let error = store.open(&user("alice")).unwrap_err();
    assert!(matches!(error, Error::InUse(_)), "{error:?}");
    assert!(dotlock.exists(), "a live lock must not be broken");
    holder.wait().unwrap();
    assert!(!dotlock.exists());

    // A lock released while we wait is taken.
    let mut holder = dotlockfile_holding(&dotlock, "1");
    let store = common::store(&dir, "read_locks: [\"dotlock\"], lock_timeout_secs: 20");
    let maildrop = store.open(&user("alice")).unwrap();
    assert_eq!(maildrop.messages().len(), 1);
    holder.wait().unwrap();
}

#[test]
fn an_fcntl_lock_held_by_another_process_means_in_use() {
    let dir = TempDir::new("fcntl");
    let messages = [Stored::numbered(1, 100), Stored::numbered(2, 100)];
    fs::write(dir.mbox("alice"), mbox_bytes(&messages)).unwrap();
    let store = store(&dir, "lock_timeout_secs: 1");

    let holder = FcntlHolder::lock(&dir.mbox("alice"));
    assert!(matches!(store.open(&user("alice")), Err(Error::InUse(_))));
    drop(holder);

    // Held during a session: reading waits, then fails; the commit too,
    // and leaves the file alone.
    let mut maildrop = store.open(&user("alice")).unwrap();
    let holder = FcntlHolder::lock(&dir.mbox("alice"));
    assert!(matches!(
        read_message(&mut maildrop, 0),
        Err(Error::InUse(_))
    ));
    assert!(matches!(maildrop.commit(&[0]), Err(Error::InUse(_))));
    assert!(
        !dir.path().join("alice.lock").exists(),
        "dotlock left after a failed commit"
    );
    drop(holder);
    assert_eq!(fs::read(dir.mbox("alice")).unwrap(), mbox_bytes(&messages));
}

#[test]
fn our_fcntl_lock_keeps_another_process_out() {
    let dir = TempDir::new("ourfcntl");
    let messages: Vec<Stored> = (0..3).map(|n| Stored::numbered(n, 100)).collect();
    fs::write(dir.mbox("alice"), mbox_bytes(&messages)).unwrap();
    let file = fs::File::options()
        .read(true)
        .write(true)
        .open(dir.mbox("alice"))
        .unwrap();
    let dotlock = dir.path().join("alice.lock");
    let held = lock::acquire(
        &[LockKind::Fcntl],
        Access::Write,
        Some(&file),
        policy(&dir, &dotlock),
        Instant::now(),
    )
    .unwrap();
    let probe = |dir: &TempDir| {
        let mut child = command("python3", "python3")
            .arg("-c")
            .arg(
                "import fcntl, sys\n\
                 f = open(sys.argv[1], 'r+')\n\
                 try:\n    fcntl.lockf(f, fcntl.LOCK_SH | fcntl.LOCK_NB)\n    print('free')\n\
                 except OSError:\n    print('busy')\n",
            )
            .arg(dir.mbox("alice"))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut answer = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut answer)
            .unwrap();
        child.wait().unwrap();
        answer
    };
    assert_eq!(probe(&dir), "busy\n");
    drop(held);
    assert_eq!(probe(&dir), "free\n");
}

#[test]
fn link_files_of_killed_processes_are_cleaned_up_when_writing() {
    let dir = TempDir::new("linkfiles");
    let dotlock = dir.path().join("alice.lock");
    let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let host: String = host
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let abandoned = dir
        .path()
        .join(format!(".alice.lock.{host}.{dead}.7.pop3d"));
    let live = dir.path().join(format!(".alice.lock.{host}.1.7.pop3d"));
    fs::write(&abandoned, "").unwrap();
    fs::write(&live, "").unwrap();
    let held = lock::acquire(
        &[LockKind::Dotlock],
        Access::Read,
        None,
        policy(&dir, &dotlock),
        Instant::now(),
    )
    .unwrap();
    drop(held);
    assert!(abandoned.exists(), "reading does not list the directory");
    let held = lock::acquire(
        &[LockKind::Dotlock],
        Access::Write,
        None,
        policy(&dir, &dotlock),
        Instant::now(),
    )
    .unwrap();
    drop(held);
    assert!(!abandoned.exists());
    assert!(live.exists(), "pid 1 is alive: its file must stay");
}
