//! The store as the host uses it: open, list, read, commit, reopen.

mod common;

use common::*;
use pop3d_plugin_api::{Error, Maildrop, StorePlugin};
use std::fs;
use std::os::unix::fs::PermissionsExt;

#[test]
fn reads_every_message_with_exact_sizes() {
    let dir = TempDir::new("read");
    let data =
        b"From a@x Mon Jan  1 00:00:00 2024\nSubject: one\n\nbody\n>From quoted\nFrom unquoted\n\n\
From b@x Mon Jan  1 00:00:01 2024\r\nSubject: two\r\n\r\nCRLF body\r\n\r\n\
From c@x Mon Jan  1 00:00:02 2024\nSubject: three\n\nno final newline";
    fs::write(dir.mbox("alice"), data).unwrap();
    for (variant, first) in [
        (
            "mboxo",
            &b"Subject: one\n\nbody\n>From quoted\nFrom unquoted\n"[..],
        ),
        (
            "mboxrd",
            &b"Subject: one\n\nbody\nFrom quoted\nFrom unquoted\n"[..],
        ),
    ] {
        let store = store(&dir, &format!("variant: \"{variant}\""));
        let mut maildrop = store.open(&user("alice")).unwrap();
        let messages = read_all(&mut maildrop);
        let contents: Vec<&[u8]> = messages.iter().map(|(_, c)| c.as_slice()).collect();
        assert_eq!(
            contents,
            vec![
                first,
                b"Subject: two\r\n\r\nCRLF body\r\n",
                b"Subject: three\n\nno final newline"
            ],
            "{variant}"
        );
    }
}

#[test]
fn a_missing_mbox_is_an_empty_maildrop() {
    let dir = TempDir::new("missing");
    let store = store(&dir, "");
    let maildrop = store.open(&user("nobody")).unwrap();
    assert!(maildrop.messages().is_empty());
    maildrop.commit(&[]).unwrap();
    assert!(
        !dir.mbox("nobody").exists(),
        "opening must not create the mbox"
    );

    // Nor does a missing directory stop the login.
    let deep =
        pop3d_mbox::MboxStore::create("(path: \"/nonexistent/pop3d-mbox-test/%u\")").unwrap();
    assert!(deep.open(&user("nobody")).unwrap().messages().is_empty());
}

#[test]
fn a_file_that_is_not_an_mbox_is_refused_with_a_clear_message() {
    let dir = TempDir::new("notmbox");
    fs::write(
        dir.mbox("alice"),
        "Subject: where is the From line?\n\nbody\n",
    )
    .unwrap();
    let error = store(&dir, "").open(&user("alice")).unwrap_err();
    match error {
        Error::PermFail(text) => assert!(text.contains("not an mbox"), "{text}"),
        other => panic!("expected PermFail, got {other:?}"),
    }
}

#[test]
fn deleting_keeps_the_others_byte_for_byte_with_their_uidls() {
    let dir = TempDir::new("delete");
    let originals: Vec<Stored> = (0..20).map(|n| Stored::numbered(n, 300 + n * 50)).collect();
    fs::write(dir.mbox("alice"), mbox_bytes(&originals)).unwrap();
    fs::set_permissions(dir.mbox("alice"), fs::Permissions::from_mode(0o640)).unwrap();
    let store = store(&dir, "");

    let mut maildrop = store.open(&user("alice")).unwrap();
    let before = read_all(&mut maildrop);
    for (n, (_, content)) in before.iter().enumerate() {
        assert_eq!(content, &originals[n].content);
    }
    let deleted = [0, 3, 4, 10, 19];
    maildrop.commit(&deleted).unwrap();

    let expected: Vec<Stored> = originals
        .iter()
        .enumerate()
        .filter(|(n, _)| !deleted.contains(n))
        .map(|(_, m)| m.clone())
        .collect();
    assert_eq!(fs::read(dir.mbox("alice")).unwrap(), mbox_bytes(&expected));
    let mode = fs::metadata(dir.mbox("alice"))
        .unwrap()
        .permissions()
        .mode()
        & 0o7777;
    assert_eq!(mode, 0o640, "the rewrite must keep the mbox's mode");
    assert!(
        !dir.path().join("alice.lock").exists(),
        "dotlock left behind"
    );
    assert!(
        !dir.path().join(".alice.pop3d-tmp").exists(),
        "temporary file left behind"
    );

    let kept_before: Vec<(String, Vec<u8>)> = before
        .iter()
        .enumerate()
        .filter(|(n, _)| !deleted.contains(n))
        .map(|(_, m)| m.clone())
        .collect();
    let mut maildrop = store.open(&user("alice")).unwrap();
    assert_eq!(read_all(&mut maildrop), kept_before);
    drop(maildrop);

    // Without the index, the ids are derived again, and are the same.
    fs::remove_file(dir.path().join(".alice.pop3d-index")).unwrap();
    let mut maildrop = store.open(&user("alice")).unwrap();
    assert_eq!(read_all(&mut maildrop), kept_before);
}

#[test]
fn x_uidl_headers_are_honoured_unless_disabled() {
    let dir = TempDir::new("xuidl");
    let data = b"From a\nX-UIDL: first-id\nDate: X\n\nbody\n\n\
From b\nX-UIDL: first-id\nDate: X\n\nsame header, later\n\n\
From c\nX-UIDL: 0123456789abcdef\n\nlooks generated\n\n\
From d\nX-UIDL: bad id\nDate: X\n\nspace inside\n\n";
    fs::write(dir.mbox("alice"), data).unwrap();
    let uids = |extra: &str| {
        let maildrop = store(&dir, extra).open(&user("alice")).unwrap();
        maildrop
            .messages()
            .iter()
            .map(|m| m.uid.clone())
            .collect::<Vec<_>>()
    };
    // popa3d's id of a message whose only selected header is "Date: X".
    let date_x = "c7eaac4d3400c62f";
    let none = "d98c1dd404b2008f";
    assert_eq!(
        uids(""),
        vec![
            "first-id".to_string(),
            date_x.to_string(),
            none.to_string(),
            format!("{date_x}-2")
        ]
    );
    assert_eq!(
        uids("honour_x_uidl: false"),
        vec![
            date_x.to_string(),
            format!("{date_x}-2"),
            none.to_string(),
            format!("{date_x}-3")
        ]
    );
}

#[test]
fn duplicate_messages_keep_their_ids_when_one_is_deleted() {
    let dir = TempDir::new("dups");
    let copy = Stored {
        separator: "From a@x Mon Jan  1 00:00:00 2024\n".into(),
        content: b"Subject: same\n\nsame body\n".to_vec(),
    };
    fs::write(
        dir.mbox("alice"),
        mbox_bytes(&[copy.clone(), copy.clone(), copy]),
    )
    .unwrap();
    let store = store(&dir, "");
    let maildrop = store.open(&user("alice")).unwrap();
    let uids: Vec<String> = maildrop.messages().iter().map(|m| m.uid.clone()).collect();
    assert_eq!(uids[1], format!("{}-2", uids[0]));
    assert_eq!(uids[2], format!("{}-3", uids[0]));
    maildrop.commit(&[0]).unwrap();
    let maildrop = store.open(&user("alice")).unwrap();
    let after: Vec<String> = maildrop.messages().iter().map(|m| m.uid.clone()).collect();
    assert_eq!(after, uids[1..].to_vec(), "ids carried over by the index");
}

#[test]
fn a_second_session_on_the_same_mbox_is_in_use() {
    let dir = TempDir::new("twice");
    fs::write(dir.mbox("alice"), mbox_bytes(&[Stored::numbered(1, 100)])).unwrap();
    let store = store(&dir, "lock_timeout_secs: 0");
    let first = store.open(&user("alice")).unwrap();
    assert!(matches!(store.open(&user("alice")), Err(Error::InUse(_))));
    // A symlink to the same mbox is the same maildrop.
    std::os::unix::fs::symlink(dir.mbox("alice"), dir.mbox("alias")).unwrap();
    assert!(matches!(store.open(&user("alias")), Err(Error::InUse(_))));
    drop(first);
    store.open(&user("alice")).unwrap();
}

#[test]
fn another_process_holding_the_session_lock_means_in_use() {
    let dir = TempDir::new("flock");
    fs::write(dir.mbox("alice"), mbox_bytes(&[Stored::numbered(1, 100)])).unwrap();
    let store = store(&dir, "lock_timeout_secs: 1");
    drop(store.open(&user("alice")).unwrap());
    let index = dir.path().join(".alice.pop3d-index");
    let mut holder = command("flock", "util-linux")
        .arg(&index)
        .args(["sh", "-c", "echo held; read line"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut held = [0u8; 5];
    std::io::Read::read_exact(holder.stdout.as_mut().unwrap(), &mut held).unwrap();
    assert!(matches!(store.open(&user("alice")), Err(Error::InUse(_))));
    drop(holder.stdin.take());
    holder.wait().unwrap();
    store.open(&user("alice")).unwrap();
}

#[test]
fn appended_mail_is_indexed_without_losing_old_entries() {
    let dir = TempDir::new("append");
    let mut messages: Vec<Stored> = (0..5).map(|n| Stored::numbered(n, 200)).collect();
    fs::write(dir.mbox("alice"), mbox_bytes(&messages)).unwrap();
    let store = store(&dir, "");
    let mut maildrop = store.open(&user("alice")).unwrap();
    let before = read_all(&mut maildrop);
    drop(maildrop);

    messages.push(Stored::numbered(5, 200));
    let mut file = fs::OpenOptions::new()
        .append(true)
        .open(dir.mbox("alice"))
        .unwrap();
    std::io::Write::write_all(&mut file, &messages[5].bytes()).unwrap();
    drop(file);

    let mut maildrop = store.open(&user("alice")).unwrap();
    let after = read_all(&mut maildrop);
    assert_eq!(after[..5], before[..]);
    assert_eq!(after[5].1, messages[5].content);
}

#[test]
fn a_file_rewritten_in_place_is_indexed_again() {
    let dir = TempDir::new("inplace");
    let messages: Vec<Stored> = (0..3).map(|n| Stored::numbered(n, 200)).collect();
    fs::write(dir.mbox("alice"), mbox_bytes(&messages)).unwrap();
    let store = store(&dir, "");
    drop(store.open(&user("alice")).unwrap());
    // Same inode, the first message removed, then grown past the old size.
    let mut changed = mbox_bytes(&messages[1..]);
    for n in 3..6 {
        changed.extend(Stored::numbered(n, 200).bytes());
    }
    fs::write(dir.mbox("alice"), &changed).unwrap();
    let mut maildrop = store.open(&user("alice")).unwrap();
    let contents: Vec<Vec<u8>> = read_all(&mut maildrop)
        .into_iter()
        .map(|(_, c)| c)
        .collect();
    let expected: Vec<Vec<u8>> = (1..6).map(|n| Stored::numbered(n, 200).content).collect();
    assert_eq!(contents, expected);
}

#[test]
fn changes_by_another_program_during_the_session_are_refused() {
    let dir = TempDir::new("foreign");
    let messages: Vec<Stored> = (0..4).map(|n| Stored::numbered(n, 200)).collect();
    fs::write(dir.mbox("alice"), mbox_bytes(&messages)).unwrap();
    let store = store(&dir, "");
    let mut maildrop = store.open(&user("alice")).unwrap();
    // Another program (a mail reader, say) deletes the first message.
    let rewritten = mbox_bytes(&messages[1..]);
    fs::write(dir.mbox("alice"), &rewritten).unwrap();
    assert!(matches!(
        read_message(&mut maildrop, 2),
        Err(Error::TempFail(_))
    ));
    assert!(matches!(maildrop.commit(&[1]), Err(Error::TempFail(_))));
    assert_eq!(
        fs::read(dir.mbox("alice")).unwrap(),
        rewritten,
        "the file must be left alone"
    );
}

#[test]
fn mail_appended_after_a_last_message_without_blank_line_is_kept() {
    let dir = TempDir::new("noblank");
    let data = b"From a\nMessage-ID: <1@x>\n\none\n\nFrom b\nMessage-ID: <2@x>\n\ntwo without final newline";
    fs::write(dir.mbox("alice"), data).unwrap();
    let store = store(&dir, "");
    let mut maildrop = store.open(&user("alice")).unwrap();
    let before = read_all(&mut maildrop);
    // A careless agent appends right after the last byte.
    let late = b"From c\nMessage-ID: <3@x>\n\nthree\n\n";
    let mut file = fs::OpenOptions::new()
        .append(true)
        .open(dir.mbox("alice"))
        .unwrap();
    std::io::Write::write_all(&mut file, late).unwrap();
    drop(file);
    maildrop.commit(&[0]).unwrap();

    assert_eq!(
        fs::read(dir.mbox("alice")).unwrap(),
        b"From b\nMessage-ID: <2@x>\n\ntwo without final newline\n\nFrom c\nMessage-ID: <3@x>\n\nthree\n\n"
    );
    let mut maildrop = store.open(&user("alice")).unwrap();
    let after = read_all(&mut maildrop);
    assert_eq!(after[0].0, before[1].0);
    assert_eq!(
        transmitted(&after[0].1),
        transmitted(&before[1].1),
        "the kept message is sent exactly as before"
    );
    assert_eq!(after[1].1, b"Message-ID: <3@x>\n\nthree\n");
    drop(maildrop);
    // The index written at the rewrite agrees with a fresh scan.
    fs::remove_file(dir.path().join(".alice.pop3d-index")).unwrap();
    let mut maildrop = store.open(&user("alice")).unwrap();
    assert_eq!(read_all(&mut maildrop), after);
}

#[test]
fn deleting_everything_leaves_an_empty_file() {
    let dir = TempDir::new("all");
    fs::write(
        dir.mbox("alice"),
        mbox_bytes(&[Stored::numbered(1, 100), Stored::numbered(2, 100)]),
    )
    .unwrap();
    let store = store(&dir, "");
    store.open(&user("alice")).unwrap().commit(&[0, 1]).unwrap();
    assert_eq!(fs::read(dir.mbox("alice")).unwrap(), b"");
    assert!(store.open(&user("alice")).unwrap().messages().is_empty());
}

#[test]
fn a_symlinked_mbox_is_rewritten_at_its_target() {
    let dir = TempDir::new("link");
    let target = dir.path().join("real");
    fs::create_dir(&target).unwrap();
    fs::write(
        target.join("mbox"),
        mbox_bytes(&[Stored::numbered(1, 100), Stored::numbered(2, 100)]),
    )
    .unwrap();
    std::os::unix::fs::symlink(target.join("mbox"), dir.mbox("alice")).unwrap();
    let store = store(&dir, "");
    store.open(&user("alice")).unwrap().commit(&[0]).unwrap();
    assert!(fs::symlink_metadata(dir.mbox("alice"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(
        fs::read(target.join("mbox")).unwrap(),
        Stored::numbered(2, 100).bytes()
    );
}
