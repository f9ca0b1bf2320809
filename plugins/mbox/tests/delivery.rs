//! Mail delivered by a real delivery agent (procmail, which takes the
//! dotlock and an fcntl lock) during a POP3 session survives the session's
//! deletions.

mod common;

use common::*;
use pop3d_plugin_api::{Maildrop, StorePlugin};
use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::Stdio;

/// Delivers `message` (headers and body, no separator) to `mbox` with
/// procmail, which writes the separator, quotes `From ` lines and locks.
fn procmail_deliver(dir: &Path, mbox: &Path, message: &[u8]) {
    let rc = dir.join("procmailrc");
    // LOCKSLEEP: retry a busy dotlock after 1 s rather than procmail's 8.
    fs::write(
        &rc,
        format!(
            "LOCKSLEEP=1\nDEFAULT={}\nLOGFILE={}/procmail.log\n",
            mbox.display(),
            dir.display()
        ),
    )
    .unwrap();
    let mut child = command("procmail", "procmail")
        .args(["-f", "sender@example.org", "-m"])
        .arg(&rc)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(message).unwrap();
    assert!(child.wait().unwrap().success(), "procmail failed");
}

#[test]
fn mail_delivered_during_a_session_survives_its_deletions() {
    let dir = TempDir::new("procmail");
    let mbox = dir.mbox("alice");
    let originals: Vec<Stored> = (0..6).map(|n| Stored::numbered(n, 400)).collect();
    fs::write(&mbox, mbox_bytes(&originals)).unwrap();
    let store = store(&dir, "");

    let mut maildrop = store.open(&user("alice")).unwrap();
    let before = read_all(&mut maildrop);
    assert_eq!(before.len(), 6);

    let new_message = b"From: someone@example.org\nMessage-ID: <new@example.org>\nSubject: arrived during the session\n\nFrom the middle of a line\nbody\n";
    procmail_deliver(dir.path(), &mbox, new_message);
    // The session still reads its snapshot while mail arrives.
    assert_eq!(read_message(&mut maildrop, 5).unwrap(), before[5].1);
    assert_eq!(maildrop.messages().len(), 6);

    maildrop.commit(&[0, 2, 5]).unwrap();

    let mut maildrop = store.open(&user("alice")).unwrap();
    let after = read_all(&mut maildrop);
    let kept: Vec<(String, Vec<u8>)> = [1, 3, 4].iter().map(|&n| before[n].clone()).collect();
    assert_eq!(after[..3], kept[..], "kept messages changed");
    assert_eq!(after.len(), 4, "the delivered message is missing");
    assert_eq!(
        after[3].1,
        b"From: someone@example.org\nMessage-ID: <new@example.org>\nSubject: arrived during the session\n\n>From the middle of a line\nbody\n",
        "procmail quotes From lines (mboxo), which this store returns as stored"
    );
    assert!(!dir.path().join("alice.lock").exists());
}

#[test]
fn procmail_delivers_after_our_rewrite() {
    let dir = TempDir::new("procmail-after");
    let mbox = dir.mbox("alice");
    fs::write(
        &mbox,
        mbox_bytes(&[Stored::numbered(1, 100), Stored::numbered(2, 100)]),
    )
    .unwrap();
    let store = store(&dir, "");
    store.open(&user("alice")).unwrap().commit(&[0]).unwrap();
    procmail_deliver(dir.path(), &mbox, b"Subject: next\n\nhello\n");
    let mut maildrop = store.open(&user("alice")).unwrap();
    let messages = read_all(&mut maildrop);
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0].1, Stored::numbered(2, 100).content);
    assert_eq!(messages[1].1, b"Subject: next\n\nhello\n");
}

/// A client downloading and deleting everything, session after session,
/// while procmail delivers: every message arrives exactly once, intact.
#[test]
fn download_and_delete_while_procmail_delivers() {
    let dir = TempDir::new("procmail-race");
    let mbox = dir.mbox("alice");
    let total = 25;
    // (No trailing empty line: procmail would not keep it.)
    let body = |n: usize| {
        format!(
            "Message-ID: <{n}@race>\nSubject: race {n}\n\n{}",
            "line\n".repeat(n * 7 + 1)
        )
        .into_bytes()
    };
    let deliverer = {
        let dir = dir.path().to_path_buf();
        let mbox = mbox.clone();
        std::thread::spawn(move || {
            for n in 0..total {
                procmail_deliver(&dir, &mbox, &body(n));
            }
        })
    };
    let store = store(&dir, "lock_timeout_secs: 20");
    let mut received: Vec<Vec<u8>> = Vec::new();
    loop {
        let finished = deliverer.is_finished();
        let mut maildrop = store.open(&user("alice")).unwrap();
        let messages = read_all(&mut maildrop);
        let all: Vec<usize> = (0..messages.len()).collect();
        maildrop.commit(&all).unwrap();
        received.extend(messages.into_iter().map(|(_, content)| content));
        if finished && fs::metadata(&mbox).map(|m| m.len() == 0).unwrap_or(true) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    deliverer.join().unwrap();
    let expected: Vec<Vec<u8>> = (0..total).map(body).collect();
    assert_eq!(received, expected, "messages lost, duplicated or damaged");
}
