//! Crash safety of the rewrite: a child process deletes half of a large
//! mbox and is killed with SIGKILL at many different moments; after each
//! kill the mbox must be exactly the old file or exactly the new one, with
//! every message whole and its UIDL unchanged.
//!
//! The child is this test binary itself, run with [`CHILD_ENV`] set, so no
//! helper program has to be built and found.

mod common;

use common::*;
use pop3d_mbox::MboxStore;
use pop3d_plugin_api::{Maildrop, StorePlugin};
use std::fs;
use std::process::{Command, Stdio};
use std::time::Instant;

/// Set to the scratch directory when this binary runs as the child.
const CHILD_ENV: &str = "POP3D_MBOX_CRASH_CHILD";

/// The child's work (only when run as the child; otherwise it does
/// nothing): open the maildrop and delete every second message.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let store = MboxStore::create(&format!("(path: \"{}/%u\")", dir.to_string_lossy())).unwrap();
    let maildrop = store.open(&user("crash")).unwrap();
    let every_second: Vec<usize> = (0..maildrop.messages().len()).step_by(2).collect();
    // Tells the parent the UPDATE starts now.
    println!("opened");
    std::io::Write::flush(&mut std::io::stdout()).unwrap();
    maildrop.commit(&every_second).unwrap();
}

fn run_child(dir: &TempDir) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash_child",
            "--test-threads=1",
            "--quiet",
            "--nocapture",
        ])
        .env(CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// Waits until the child says its UPDATE begins.
fn wait_until_opened(child: &mut std::process::Child) {
    let mut line = String::new();
    let stdout = child.stdout.as_mut().unwrap();
    let mut reader = std::io::BufReader::new(stdout);
    while !line.contains("opened") {
        line.clear();
        let n = std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
        assert!(n > 0, "the child ended before opening the maildrop");
    }
}

#[test]
fn kill_9_during_an_update_never_loses_or_halves_a_message() {
    let dir = TempDir::new("crash");
    let mbox = dir.mbox("crash");
    let originals: Vec<Stored> = (0..3000)
        .map(|n| Stored::numbered(n, 200 + (n * 37) % 1800))
        .collect();
    let old_file = mbox_bytes(&originals);
    let kept: Vec<usize> = (1..originals.len()).step_by(2).collect();
    let new_file = mbox_bytes(
        &kept
            .iter()
            .map(|&n| originals[n].clone())
            .collect::<Vec<_>>(),
    );

    let store = store(&dir, "");
    fs::write(&mbox, &old_file).unwrap();
    let mut maildrop = store.open(&user("crash")).unwrap();
    let old_listing = read_all(&mut maildrop);
    drop(maildrop);
    for (n, (_, content)) in old_listing.iter().enumerate() {
        assert_eq!(content, &originals[n].content);
    }
    let new_listing: Vec<(String, Vec<u8>)> =
        kept.iter().map(|&n| old_listing[n].clone()).collect();

    // How long an undisturbed child takes, to spread the kills over it.
    let fresh = |path: &std::path::Path| {
        let _ = fs::remove_file(path);
        fs::write(path, &old_file).unwrap();
    };
    fresh(&mbox);
    let mut child = run_child(&dir);
    wait_until_opened(&mut child);
    let started = Instant::now();
    assert!(
        child.wait().unwrap().success(),
        "the child failed on its own"
    );
    let update = started.elapsed();
    assert_eq!(fs::read(&mbox).unwrap(), new_file);

    let kills = 40;
    let (mut saw_old, mut saw_new) = (0, 0);
    for round in 0..=kills {
        fresh(&mbox);
        let mut child = run_child(&dir);
        wait_until_opened(&mut child);
        if round < kills {
            std::thread::sleep(update.mul_f64(1.2 * round as f64 / kills as f64));
            let _ = child.kill();
        }
        child.wait().unwrap();

        let on_disk = fs::read(&mbox).unwrap();
        let expected = if on_disk == old_file {
            saw_old += 1;
            &old_listing
        } else if on_disk == new_file {
            saw_new += 1;
            &new_listing
        } else {
            panic!(
                "round {round}: the mbox is neither the old nor the new file ({} bytes)",
                on_disk.len()
            );
        };
        let mut maildrop = store.open(&user("crash")).unwrap();
        assert!(
            read_all(&mut maildrop) == *expected,
            "round {round}: messages or UIDLs differ from the originals"
        );
    }
    eprintln!(
        "undisturbed update: {update:?}; after {kills} kills and one full run: {saw_old} old files, {saw_new} new files"
    );
    assert!(
        saw_old > 0 && saw_new > 0,
        "the kills did not land on both sides of the rename"
    );
    // A later update cleans up whatever the killed ones left.
    fresh(&mbox);
    assert!(run_child(&dir).wait().unwrap().success());
    let leftovers: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name != "crash" && name != ".crash.pop3d-index")
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
}
