//! `protocol::encoder::BodyEncoder` against a byte-at-a-time reference, with
//! the message cut into fuzzer-chosen chunks: RETR and TOP output, and the
//! wire size STAT and LIST report.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pop3d::protocol::encoder::{wire_size_of, BodyEncoder, Progress, WireSizeCounter};

/// Bare LFs become CRLF; a last line without LF gets CRLF.
fn wire_form(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, &byte) in message.iter().enumerate() {
        if byte == b'\n' && (i == 0 || message[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(byte);
    }
    if !message.is_empty() && message.last() != Some(&b'\n') {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Dot-stuffing plus the terminator.
fn stuffed(wire: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at_line_start = true;
    for &byte in wire {
        if at_line_start && byte == b'.' {
            out.push(b'.');
        }
        out.push(byte);
        at_line_start = byte == b'\n';
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// TOP's part of the message: through the blank line (a line that is empty
/// or a lone CR) and `body_lines` more lines; all of it without a blank
/// line or when it ends first.
fn top_part(message: &[u8], body_lines: u32) -> &[u8] {
    let mut start = 0;
    let mut in_body = false;
    let mut left = body_lines;
    for (i, &byte) in message.iter().enumerate() {
        if byte != b'\n' {
            continue;
        }
        if in_body {
            left -= 1;
            if left == 0 {
                return &message[..=i];
            }
        } else {
            let line = &message[start..i];
            if line.is_empty() || line == b"\r" {
                if body_lines == 0 {
                    return &message[..=i];
                }
                in_body = true;
            }
        }
        start = i + 1;
    }
    message
}

fn encode(mut encoder: BodyEncoder, message: &[u8], cut_seed: u8) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = message;
    let mut step = 0usize;
    while !rest.is_empty() {
        step += 1;
        // Empty chunks happen (a reader may return nothing); progress is
        // still guaranteed by the one-byte chunk after them.
        let size = (usize::from(cut_seed) * step * 31) % 67;
        if size == 0 && encoder.encode(&[], &mut out) == Progress::Done {
            break;
        }
        let (chunk, tail) = rest.split_at(size.clamp(1, rest.len()));
        rest = tail;
        if encoder.encode(chunk, &mut out) == Progress::Done {
            break;
        }
    }
    encoder.finish(&mut out);
    out
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let (cut_seed, top_lines) = (data[0], u32::from(data[1] % 6));
    let message = &data[2..];

    let wire = wire_form(message);
    assert_eq!(wire_size_of(message), wire.len() as u64);
    let mut counter = WireSizeCounter::new();
    for chunk in message.chunks(1 + usize::from(cut_seed) % 13) {
        counter.update(chunk);
    }
    assert_eq!(counter.finish(), wire.len() as u64);

    assert_eq!(
        encode(BodyEncoder::full(), message, cut_seed),
        stuffed(&wire)
    );
    assert_eq!(
        encode(BodyEncoder::top(top_lines), message, cut_seed),
        stuffed(&wire_form(top_part(message, top_lines)))
    );
});
