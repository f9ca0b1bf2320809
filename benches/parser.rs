//! Command parser throughput over a realistic session mix.
//!
//! The mix is what a mail client sends in a typical download session (USER,
//! PASS, STAT, LIST, UIDL, RETR, TOP, DELE, NOOP, QUIT, in several casings)
//! plus a few lines a broken or hostile client sends, because the error paths
//! run on the same hot loop. Throughput is reported in commands per second.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pop3d::protocol::command::parse;
use std::hint::black_box;

const SESSION_MIX: &[&[u8]] = &[
    b"USER alice@example.org",
    b"PASS correct horse battery staple",
    b"STAT",
    b"LIST",
    b"LIST 5",
    b"UIDL",
    b"uidl 7",
    b"RETR 12",
    b"TOP 3 10",
    b"DELE 4",
    b"NOOP",
    b"QUIT",
    b"CAPA",
    b"retr 4294967295",
    // Invalid lines: unknown keyword, overflow, zero, missing and surplus
    // arguments, a NUL, a control byte.
    b"XYZZY",
    b"RETR 99999999999999999999",
    b"DELE 0",
    b"TOP 3",
    b"STAT now",
    b"USER bob\0root",
    b"LIST\t1",
];

fn parser(c: &mut Criterion) {
    let mut group = c.benchmark_group("parser");
    group.throughput(Throughput::Elements(SESSION_MIX.len() as u64));
    group.bench_function("session_mix", |b| {
        b.iter(|| {
            for line in SESSION_MIX {
                let _ = black_box(parse(black_box(line)));
            }
        })
    });
    group.finish();
}

criterion_group!(benches, parser);
criterion_main!(benches);
