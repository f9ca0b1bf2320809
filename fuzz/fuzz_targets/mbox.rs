//! The mbox scanner on arbitrary bytes: it must never panic; the messages
//! it finds lie inside the file, in order, without overlapping, each after
//! a `From ` line; each wire size equals an independent count of what
//! RETR sends; and where the read chunks happen to end changes nothing.
//!
//! Input: byte 0 picks the dialect (low bit) and the chunk length (the
//! rest, 1..=128, small so lines and `From ` prefixes straddle chunks);
//! the remaining bytes are the file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pop3d_mbox::quote::Variant;
use pop3d_mbox::scan::{scan_bytes, ScanError, ScannedMessage};

/// mboxrd unquoting written out line by line: a line matching `>+From `
/// loses one `>`.
fn unquote(variant: Variant, message: &[u8]) -> Vec<u8> {
    if variant == Variant::Mboxo {
        return message.to_vec();
    }
    let mut out = Vec::with_capacity(message.len());
    for line in message.split_inclusive(|&b| b == b'\n') {
        let quotes = line.iter().take_while(|&&b| b == b'>').count();
        if quotes > 0 && line[quotes..].starts_with(b"From ") {
            out.extend_from_slice(&line[1..]);
        } else {
            out.extend_from_slice(line);
        }
    }
    out
}

/// What RETR sends, not counting dot-stuffing: bare LFs become CRLF and a
/// non-empty message not ending in LF gets a CRLF.
fn wire_size(message: &[u8]) -> u64 {
    let mut size = 0u64;
    for (at, &byte) in message.iter().enumerate() {
        size += 1;
        if byte == b'\n' && (at == 0 || message[at - 1] != b'\r') {
            size += 1;
        }
    }
    match message.last() {
        None | Some(b'\n') => size,
        Some(_) => size + 2,
    }
}

fn run(data: &[u8], chunk_len: usize, variant: Variant) -> Result<Vec<ScannedMessage>, u64> {
    let mut found = Vec::new();
    match scan_bytes(data, chunk_len, variant, |message| found.push(message)) {
        Ok(()) => Ok(found),
        Err(ScanError::NotAnMbox { offset }) => Err(offset),
        Err(ScanError::Io(error)) => panic!("scanning memory failed to read: {error}"),
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&control, data)) = input.split_first() else {
        return;
    };
    let variant = if control & 1 == 0 {
        Variant::Mboxrd
    } else {
        Variant::Mboxo
    };
    let chunk_len = usize::from(control >> 1) + 1;
    let chunked = run(data, chunk_len, variant);
    let whole = run(data, data.len().max(1), variant);
    assert_eq!(chunked, whole, "the result depends on the chunk length");
    let messages = match whole {
        Ok(messages) => messages,
        Err(offset) => {
            // The offending line starts the file or follows a LF.
            let offset = usize::try_from(offset).unwrap();
            assert!(offset < data.len());
            assert!(offset == 0 || data[offset - 1] == b'\n');
            return;
        }
    };
    let len = data.len() as u64;
    let mut previous_end = 0u64;
    for message in &messages {
        assert!(message.from_offset >= previous_end, "messages overlap");
        assert!(message.from_offset <= message.content_start);
        assert!(message.content_start <= message.content_end);
        assert!(
            message.content_end <= len,
            "message past the end of the file"
        );
        let from = usize::try_from(message.from_offset).unwrap();
        let start = usize::try_from(message.content_start).unwrap();
        let end = usize::try_from(message.content_end).unwrap();
        assert!(data[from..].starts_with(b"From "));
        assert!(from == 0 || data[from - 1] == b'\n');
        // The separator line is the whole of from..start.
        let separator = &data[from..start];
        assert!(separator
            .iter()
            .position(|&b| b == b'\n')
            .is_none_or(|at| at + 1 == separator.len()));
        let content = &data[start..end];
        assert_eq!(
            message.wire_size,
            wire_size(&unquote(variant, content)),
            "wire size of the message at {from}"
        );
        assert_eq!(message.popa3d_uidl.len(), 16);
        previous_end = message.content_end;
    }
    // Nothing but empty lines before the first message, and a non-empty
    // file that scans cleanly has at least one.
    let first = messages
        .first()
        .map_or(data.len(), |m| m.from_offset as usize);
    assert!(data[..first].iter().all(|&b| b == b'\n' || b == b'\r'));
    if messages.is_empty() {
        assert!(data
            .split(|&b| b == b'\n')
            .all(|line| line.is_empty() || line == b"\r"));
    }
});
