//! `server::framer::Framer` fed the same bytes in fuzzer-chosen chunks must
//! give the lines a simple whole-input reference gives: split at LF, one
//! trailing CR removed, lines of `max_line` octets or more (LF excluded)
//! reported as too long, and an unfinished last line held back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pop3d::server::framer::{Framer, Line, LineBatch};

#[derive(Debug, PartialEq, Eq)]
enum Expected {
    Text(Vec<u8>),
    TooLong,
}

fn reference(input: &[u8], max_line: usize) -> Vec<Expected> {
    let mut lines = Vec::new();
    let mut rest = input;
    while let Some(lf) = rest.iter().position(|&b| b == b'\n') {
        let line = &rest[..lf];
        rest = &rest[lf + 1..];
        if line.len() + 1 > max_line {
            lines.push(Expected::TooLong);
        } else {
            lines.push(Expected::Text(
                line.strip_suffix(b"\r").unwrap_or(line).to_vec(),
            ));
        }
    }
    if !rest.is_empty() && rest.len() >= max_line {
        lines.push(Expected::TooLong);
    }
    lines
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    // The first two bytes pick the cap (small ones exercise the edges), the
    // third how the input is cut; the rest is the client's byte stream.
    let max_line = 1 + usize::from(u16::from_le_bytes([data[0], data[1]]) % 400);
    let cut_seed = data[2];
    let input = &data[3..];

    let mut framer = Framer::new(max_line);
    let mut batch = LineBatch::default();
    let mut rest = input;
    let mut step = 0usize;
    while !rest.is_empty() {
        step += 1;
        let size = 1 + (usize::from(cut_seed) * step * 7919) % 97;
        let (chunk, tail) = rest.split_at(size.min(rest.len()));
        framer.feed(chunk, &mut batch);
        assert!(framer.buffered() < max_line.max(1));
        rest = tail;
    }
    let got: Vec<Expected> = (0..batch.len())
        .map(|i| match batch.get(i) {
            Some(Line::Text(text)) => Expected::Text(text.to_vec()),
            Some(Line::TooLong) => Expected::TooLong,
            None => panic!("line {i} missing from a batch of {}", batch.len()),
        })
        .collect();
    assert_eq!(got, reference(input, max_line));

    // Consuming lines keeps the rest intact.
    let keep = usize::from(cut_seed) % (batch.len() + 1);
    batch.consume(keep);
    let after: Vec<Expected> = (0..batch.len())
        .map(|i| match batch.get(i) {
            Some(Line::Text(text)) => Expected::Text(text.to_vec()),
            _ => Expected::TooLong,
        })
        .collect();
    assert_eq!(after, reference(input, max_line).split_off(keep));
});
