//! UIDLs and sizes compared with what Debian's popa3d 1.0.3 answered for
//! the same mbox.
//!
//! `fixtures/popa3d.mbox` holds 62 messages with the header mixes seen in
//! real mail (several `Received:` headers, folded lines, `Delivered-To:`,
//! `X-Delivery-ID:`, missing `Date:` or `Message-ID:`, `X-UIDL:`,
//! duplicates). `fixtures/popa3d-uidl-list.txt` is popa3d's answer to
//! `UIDL` and `LIST` for it, one `uidl size` line per message, taken by
//! running popa3d over a pipe as a throwaway system user whose
//! `/var/mail` file was this mbox.

mod common;

use common::*;
use pop3d_plugin_api::{Maildrop, StorePlugin};
use std::collections::HashMap;
use std::fs;
use std::path::Path;

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn popa3d_answer() -> Vec<(String, u64)> {
    fs::read_to_string(fixture("popa3d-uidl-list.txt"))
        .unwrap()
        .lines()
        .map(|line| {
            let (uid, size) = line.split_once(' ').unwrap();
            (uid.to_string(), size.parse().unwrap())
        })
        .collect()
}

#[test]
fn uidls_and_sizes_match_popa3d() {
    let dir = TempDir::new("popa3d");
    fs::copy(fixture("popa3d.mbox"), dir.mbox("popt")).unwrap();
    let expected = popa3d_answer();
    assert_eq!(expected.len(), 62);

    // Without X-UIDL (popa3d ignores it) every id is popa3d's, except that
    // popa3d repeats an id where this store must not.
    let maildrop = store(&dir, "honour_x_uidl: false")
        .open(&user("popt"))
        .unwrap();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut repeated = 0;
    for (ours, (theirs, size)) in maildrop.messages().iter().zip(&expected) {
        assert_eq!(ours.wire_size, *size, "size of {theirs}");
        let count = seen.entry(theirs).or_default();
        *count += 1;
        if *count == 1 {
            assert_eq!(&ours.uid, theirs);
        } else {
            repeated += 1;
            assert_eq!(ours.uid, format!("{theirs}-{count}"));
        }
    }
    assert_eq!(
        repeated, 2,
        "the fixture has three messages without any header popa3d hashes"
    );
    drop(maildrop);

    // With X-UIDL honoured (the default), only the messages carrying the
    // header differ.
    fs::remove_file(dir.path().join(".popt.pop3d-index")).unwrap();
    let maildrop = store(&dir, "").open(&user("popt")).unwrap();
    let differing = maildrop
        .messages()
        .iter()
        .zip(&expected)
        .filter(|(ours, (theirs, _))| !ours.uid.starts_with(theirs.as_str()))
        .count();
    assert_eq!(differing, 6);
}
