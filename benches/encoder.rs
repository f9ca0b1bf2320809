//! Body encoder throughput (MB/s of stored message bytes), against a naive
//! byte-at-a-time encoder run in the same process so the ratio is measured
//! under the same conditions.
//!
//! Inputs, generated deterministically:
//! - `typical_4k_lf`: a 4 KiB LF message (headers, blank line, ~70-char
//!   lines), one chunk, as a small RETR sends it.
//! - `large_20m_lf`: 20 MiB of ~70-char LF lines with a '.'-leading line
//!   every 40 lines, fed in 64 KiB chunks as the store streams it.
//! - `large_20m_crlf`: the same text with CRLF line ends, 64 KiB chunks.
//!
//! Each chunk's output goes into one reused buffer that is cleared per
//! chunk, as the server's output buffer drains between chunks.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pop3d::protocol::encoder::{BodyEncoder, WireSizeCounter};
use std::hint::black_box;
use std::time::Duration;

const CHUNK: usize = 64 * 1024;

/// Deterministic message text: headers, blank line, then body lines of
/// 60 to 79 characters, every 40th starting with '.'.
fn lf_message(size: usize) -> Vec<u8> {
    let mut message = b"Return-Path: <alice@example.org>\nFrom: Alice <alice@example.org>\n\
To: bob@example.net\nSubject: Quarterly figures\nDate: Mon, 4 May 2026 10:00:00 +0000\n\
Message-ID: <20260504100000.1234@example.org>\n\n"
        .to_vec();
    let words: &[&[u8]] = &[
        b"lorem ",
        b"ipsum ",
        b"dolor ",
        b"sit ",
        b"amet ",
        b"consectetur ",
    ];
    let mut seed: u32 = 12345;
    let mut line_number = 0;
    while message.len() < size {
        line_number += 1;
        let target = 60 + (line_number * 7) % 20;
        let mut line = Vec::with_capacity(80);
        if line_number % 40 == 0 {
            line.push(b'.');
        }
        while line.len() < target {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
            line.extend_from_slice(words[(seed >> 16) as usize % words.len()]);
        }
        line.truncate(target);
        line.push(b'\n');
        message.extend_from_slice(&line);
    }
    message.truncate(size);
    message
}

fn to_crlf(lf: &[u8]) -> Vec<u8> {
    let mut crlf = Vec::with_capacity(lf.len() + lf.len() / 32);
    for &byte in lf {
        if byte == b'\n' {
            crlf.push(b'\r');
        }
        crlf.push(byte);
    }
    crlf
}

/// The obvious encoder: look at every byte, push every byte.
struct NaiveEncoder {
    at_line_start: bool,
    after_cr: bool,
}

impl NaiveEncoder {
    fn new() -> Self {
        NaiveEncoder {
            at_line_start: true,
            after_cr: false,
        }
    }

    fn encode(&mut self, input: &[u8], out: &mut Vec<u8>) {
        for &byte in input {
            if self.at_line_start && byte == b'.' {
                out.push(b'.');
            }
            if byte == b'\n' && !self.after_cr {
                out.push(b'\r');
            }
            out.push(byte);
            self.at_line_start = byte == b'\n';
            self.after_cr = byte == b'\r';
        }
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        if !self.at_line_start {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
    }
}

fn encode_streaming(message: &[u8], out: &mut Vec<u8>) -> usize {
    let mut encoder = BodyEncoder::full();
    let mut sent = 0;
    for chunk in message.chunks(CHUNK) {
        out.clear();
        encoder.encode(chunk, out);
        sent += black_box(&*out).len();
    }
    out.clear();
    encoder.finish(out);
    sent + out.len()
}

fn encode_naive(message: &[u8], out: &mut Vec<u8>) -> usize {
    let mut encoder = NaiveEncoder::new();
    let mut sent = 0;
    for chunk in message.chunks(CHUNK) {
        out.clear();
        encoder.encode(chunk, out);
        sent += black_box(&*out).len();
    }
    out.clear();
    encoder.finish(out);
    sent + out.len()
}

fn wire_size_streaming(message: &[u8]) -> u64 {
    let mut counter = WireSizeCounter::new();
    for chunk in message.chunks(CHUNK) {
        counter.update(chunk);
    }
    counter.finish()
}

fn encoder(c: &mut Criterion) {
    let typical = lf_message(4096);
    let large_lf = lf_message(20 * 1024 * 1024);
    let large_crlf = to_crlf(&large_lf);

    // The naive encoder is the reference the fast one must agree with.
    for message in [&typical, &large_lf, &large_crlf] {
        let (mut fast, mut naive) = (Vec::new(), Vec::new());
        let mut encoder = BodyEncoder::full();
        let mut reference = NaiveEncoder::new();
        for chunk in message.chunks(CHUNK) {
            encoder.encode(chunk, &mut fast);
            reference.encode(chunk, &mut naive);
        }
        encoder.finish(&mut fast);
        reference.finish(&mut naive);
        assert!(fast == naive, "encoder and naive baseline disagree");
    }

    let inputs: [(&str, &[u8]); 3] = [
        ("typical_4k_lf", &typical),
        ("large_20m_lf", &large_lf),
        ("large_20m_crlf", &large_crlf),
    ];
    let mut group = c.benchmark_group("encoder");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    let mut out = Vec::with_capacity(CHUNK * 2);
    for (name, message) in inputs {
        group.throughput(Throughput::Bytes(message.len() as u64));
        group.bench_function(format!("{name}/memchr"), |b| {
            b.iter(|| encode_streaming(black_box(message), &mut out))
        });
        group.bench_function(format!("{name}/naive"), |b| {
            b.iter(|| encode_naive(black_box(message), &mut out))
        });
        group.bench_function(format!("{name}/wire_size"), |b| {
            b.iter(|| wire_size_streaming(black_box(message)))
        });
    }
    group.finish();
}

criterion_group!(benches, encoder);
criterion_main!(benches);
