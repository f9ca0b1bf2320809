//! Large mailboxes, for figures rather than pass/fail on speed (ignored by
//! default; run with
//! `cargo test --release -p pop3d-mbox --test big -- --ignored --nocapture --test-threads=1`).
//! They check that results are right and print times and memory: peak
//! resident memory (VmHWM, reset before each step) grows with the number
//! of messages (the listing the host needs), never with the bytes.

mod common;

use common::*;
use pop3d_plugin_api::{Maildrop, StorePlugin};
use std::fs;
use std::io::{BufWriter, Read, Write};
use std::time::Instant;

/// Peak resident memory since the last reset, in KiB.
fn peak_rss_kib() -> u64 {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn current_rss_kib() -> u64 {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Resets the peak (needs a kernel that allows it; figures are then
/// peaks since start).
fn reset_peak() {
    let _ = fs::write("/proc/self/clear_refs", "5");
}

/// Runs `step`, printing its time and the peak memory above the baseline.
fn measure<T>(name: &str, step: impl FnOnce() -> T) -> T {
    reset_peak();
    let base = current_rss_kib();
    let started = Instant::now();
    let result = step();
    let elapsed = started.elapsed();
    eprintln!(
        "{name:<44} {:>10.1} ms   peak RSS +{:>7} KiB",
        elapsed.as_secs_f64() * 1000.0,
        peak_rss_kib().saturating_sub(base)
    );
    result
}

#[test]
#[ignore = "figures: 100,000 messages"]
fn hundred_thousand_messages() {
    let dir = TempDir::new("big100k");
    let mbox = dir.mbox("alice");
    let count = 100_000;
    {
        let mut out = BufWriter::new(fs::File::create(&mbox).unwrap());
        for n in 0..count {
            out.write_all(&Stored::numbered(n, 250).bytes()).unwrap();
        }
        out.flush().unwrap();
    }
    eprintln!(
        "mbox: {count} messages, {} bytes",
        fs::metadata(&mbox).unwrap().len()
    );
    let store = store(&dir, "");

    let maildrop = measure("first open (full scan, index written)", || {
        store.open(&user("alice")).unwrap()
    });
    assert_eq!(maildrop.messages().len(), count);
    let first: Vec<_> = maildrop.messages().to_vec();
    drop(maildrop);

    let maildrop = measure("second open (index reused)", || {
        store.open(&user("alice")).unwrap()
    });
    assert_eq!(maildrop.messages(), &first[..]);
    drop(maildrop);

    let mut file = fs::OpenOptions::new().append(true).open(&mbox).unwrap();
    file.write_all(&Stored::numbered(count, 250).bytes())
        .unwrap();
    drop(file);
    let maildrop = measure("open after one delivery (index extended)", || {
        store.open(&user("alice")).unwrap()
    });
    assert_eq!(maildrop.messages()[..count], first[..]);
    assert_eq!(maildrop.messages().len(), count + 1);

    let half: Vec<usize> = (0..count).step_by(2).collect();
    measure("commit deleting 50,000 (rewrite)", || {
        maildrop.commit(&half).unwrap()
    });
    let maildrop = measure("open after the rewrite (index from commit)", || {
        store.open(&user("alice")).unwrap()
    });
    assert_eq!(maildrop.messages().len(), count / 2 + 1);
    assert_eq!(maildrop.messages()[0], first[1]);
    drop(maildrop);
    fs::remove_file(dir.path().join(".alice.pop3d-index")).unwrap();
    let maildrop = measure("open without index (full scan again)", || {
        store.open(&user("alice")).unwrap()
    });
    assert_eq!(maildrop.messages()[0], first[1]);
}

#[test]
#[ignore = "figures: a 2 GiB mbox"]
fn two_gigabytes() {
    let dir = TempDir::new("big2g");
    let mbox = dir.mbox("alice");
    let message_size = 64 << 20;
    let count = 32;
    {
        let mut out = BufWriter::new(fs::File::create(&mbox).unwrap());
        let line = b"0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\n";
        for n in 0..count {
            out.write_all(
                format!(
                    "From big{n}@example.org Mon Jan  1 00:00:00 2024\nMessage-ID: <big{n}@x>\n\n"
                )
                .as_bytes(),
            )
            .unwrap();
            for _ in 0..message_size / line.len() {
                out.write_all(line).unwrap();
            }
            out.write_all(b"\n").unwrap();
        }
        out.flush().unwrap();
    }
    let size = fs::metadata(&mbox).unwrap().len();
    eprintln!("mbox: {count} messages, {size} bytes");
    let store = store(&dir, "");
    let mut maildrop = measure("first open (full scan)", || {
        store.open(&user("alice")).unwrap()
    });
    assert_eq!(maildrop.messages().len(), count);
    let expected = maildrop.messages()[5].wire_size;
    let streamed = measure("read one 64 MiB message in 64 KiB reads", || {
        let mut reader = maildrop.open_message(5).unwrap();
        let mut chunk = vec![0u8; 64 * 1024];
        let mut counted = 0u64;
        let mut previous = None;
        loop {
            let n = reader.read(&mut chunk).unwrap();
            if n == 0 {
                break;
            }
            for &byte in &chunk[..n] {
                counted += 1 + u64::from(byte == b'\n' && previous != Some(b'\r'));
                previous = Some(byte);
            }
        }
        counted + if previous == Some(b'\n') { 0 } else { 2 }
    });
    assert_eq!(streamed, expected);
    measure("commit deleting one message (2 GiB rewrite)", || {
        maildrop.commit(&[0]).unwrap()
    });
    let maildrop = measure("open after the rewrite", || {
        store.open(&user("alice")).unwrap()
    });
    assert_eq!(maildrop.messages().len(), count - 1);
}
