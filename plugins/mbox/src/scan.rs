//! Splitting an mbox file into messages, in one streaming pass.
//!
//! # Where messages begin and end
//! A message begins at a *separator*: a line starting with `From ` that is
//! the first line of the file or follows an empty line (`\n` or `\r\n`).
//! The separator line itself is not part of the message; the empty line
//! before a separator is not part of the preceding message either. At the
//! end of the file one trailing empty line is dropped the same way, and a
//! missing one is tolerated. `Content-Length:` headers are ignored: they are
//! often wrong after a message was edited or converted, and trusting a
//! wrong one would cut a message in two or swallow the next one. A `From `
//! line *not* after an empty line stays inside the message, so bodies
//! written by careless agents survive. The price: an mboxcl2 file, which
//! relies on `Content-Length:` and leaves `From ` lines in bodies unquoted,
//! is split wrongly where a body has an empty line followed by `From `.
//!
//! A file whose first non-empty line is not a separator is not an mbox (or
//! is damaged); the scan reports [`ScanError::NotAnMbox`] rather than
//! guessing, since a later rewrite of a misread file would damage it.
//!
//! # What is learned per message
//! Offsets, the exact wire size of the message as the reader will return it
//! (after `>From ` unquoting for mboxrd), a hash of the separator line (to
//! notice later that the file was rewritten under us), the popa3d-style
//! digest and the `X-UIDL:` header, if any (see [`crate::uidl`]).
//!
//! Memory does not depend on the size of a line or message: the file is read
//! in 64 KiB chunks and only the first [`PREFIX_LEN`] bytes of a line are
//! kept, which is enough to classify it.

use crate::quote::{Unquoter, Variant};
use crate::uidl::{Popa3dDigest, XUidlState};
use crate::wire::WireCounter;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// How much of the file one read brings in.
pub const CHUNK_LEN: usize = 64 * 1024;

/// How much of each line is kept to classify it: enough for any header name
/// we look at and for a whole valid `X-UIDL:` line.
pub const PREFIX_LEN: usize = 256;

/// One message found by [`scan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScannedMessage {
    /// Offset of the separator (`From `) line.
    pub from_offset: u64,
    /// Offset of the first byte after the separator line.
    pub content_start: u64,
    /// Offset just past the message's last byte (its trailing empty line,
    /// if any, excluded).
    pub content_end: u64,
    /// Octets the host transmits for this message.
    pub wire_size: u64,
    /// Hash of the separator line, to recognise it later.
    pub from_line_hash: u64,
    /// popa3d's UIDL for this message (16 hex digits).
    pub popa3d_uidl: String,
    /// The message's `X-UIDL:` value, if it has a usable one.
    pub x_uidl: Option<String>,
}

/// Why a scan stopped.
#[derive(Debug)]
pub enum ScanError {
    /// Text before the first separator: not an mbox, or a damaged one.
    NotAnMbox {
        /// Where the offending line starts.
        offset: u64,
    },
    /// Reading the file failed, or it became shorter than expected.
    Io(io::Error),
}

impl From<io::Error> for ScanError {
    fn from(error: io::Error) -> ScanError {
        ScanError::Io(error)
    }
}

/// Scans `file[start..end)`, where `start` is 0 or the offset of a known
/// separator, and hands every message to `each` in file order.
pub fn scan(
    file: &File,
    start: u64,
    end: u64,
    variant: Variant,
    mut each: impl FnMut(ScannedMessage),
) -> Result<(), ScanError> {
    let mut parser = Parser::new(start, variant);
    let mut chunk = vec![0u8; CHUNK_LEN];
    let mut offset = start;
    while offset < end {
        let want = usize::try_from(end - offset).map_or(CHUNK_LEN, |left| left.min(CHUNK_LEN));
        let got = match file.read_at(&mut chunk[..want], offset) {
            Ok(0) => {
                return Err(ScanError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("the file ended at byte {offset}, before the expected {end}"),
                )))
            }
            Ok(got) => got,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        parser.feed(&chunk[..got], &mut each)?;
        offset += got as u64;
    }
    parser.finish(end, &mut each)
}

/// Scans an mbox held in memory, feeding it to the parser `chunk_len`
/// bytes at a time, so a caller (the fuzz target, tests) can check that
/// where the chunks happen to end changes nothing. The same parser as
/// [`scan`]; `chunk_len` 0 is taken as 1.
pub fn scan_bytes(
    data: &[u8],
    chunk_len: usize,
    variant: Variant,
    mut each: impl FnMut(ScannedMessage),
) -> Result<(), ScanError> {
    let mut parser = Parser::new(0, variant);
    for chunk in data.chunks(chunk_len.max(1)) {
        parser.feed(chunk, &mut each)?;
    }
    parser.finish(data.len() as u64, &mut each)
}

/// What the first bytes of a line say about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineKind {
    /// `\n` or `\r\n`.
    Blank,
    /// The rest of the current message's separator line.
    FromLine,
    /// A line of the current message.
    Content,
}

/// Header-section state of the message being scanned.
#[derive(Debug)]
struct Message {
    /// See [`ScannedMessage::from_offset`].
    from_offset: u64,
    /// Set when the separator line ends.
    content_start: u64,
    /// Hashes the separator line.
    from_hash: Fnv64,
    /// Still inside the header section (no empty line seen yet).
    in_headers: bool,
    /// popa3d's digest over the header lines it selects.
    popa3d: Popa3dDigest,
    /// The `X-UIDL:` header seen so far.
    x_uidl: XUidlState,
    /// mboxrd unquoting of the content, so the size counts what is sent.
    unquoter: Unquoter,
    /// Wire size of the (unquoted) content.
    wire: WireCounter,
}

/// The scan's state between chunks.
#[derive(Debug)]
struct Parser {
    /// Where scanning began: a separator there needs no empty line before.
    region_start: u64,
    /// Dialect, for unquoting.
    variant: Variant,
    /// Offset of the next byte fed.
    position: u64,
    /// Offset where the current line starts.
    line_start: u64,
    /// The first bytes of the current line.
    prefix: Vec<u8>,
    /// The current line's kind, once the prefix is long enough to tell.
    kind: Option<LineKind>,
    /// An empty line not yet known to be content or the separator's: its
    /// offset and its bytes (`\n` or `\r\n`).
    pending_blank: Option<(u64, &'static [u8])>,
    /// The message being scanned, once the first separator was seen.
    message: Option<Message>,
    /// Reused output buffer of the unquoter.
    scratch: Vec<u8>,
}

impl Parser {
    fn new(region_start: u64, variant: Variant) -> Parser {
        Parser {
            region_start,
            variant,
            position: region_start,
            line_start: region_start,
            prefix: Vec::with_capacity(PREFIX_LEN),
            kind: None,
            pending_blank: None,
            message: None,
            scratch: Vec::with_capacity(CHUNK_LEN + 8),
        }
    }

    fn feed(
        &mut self,
        chunk: &[u8],
        each: &mut impl FnMut(ScannedMessage),
    ) -> Result<(), ScanError> {
        let mut rest = chunk;
        while !rest.is_empty() {
            let (piece, ends_line) = match memchr::memchr(b'\n', rest) {
                Some(at) => (&rest[..=at], true),
                None => (rest, false),
            };
            rest = &rest[piece.len()..];
            self.piece(piece, ends_line, each)?;
        }
        Ok(())
    }

    /// Handles part of a line; `ends_line` when it ends with the LF.
    fn piece(
        &mut self,
        piece: &[u8],
        ends_line: bool,
        each: &mut impl FnMut(ScannedMessage),
    ) -> Result<(), ScanError> {
        let mut body = piece;
        if self.kind.is_none() {
            let take = body.len().min(PREFIX_LEN - self.prefix.len());
            self.prefix.extend_from_slice(&body[..take]);
            body = &body[take..];
            let complete = ends_line && body.is_empty();
            if complete || self.prefix.len() == PREFIX_LEN {
                self.classify(complete, each)?;
            }
        }
        if !body.is_empty() {
            self.line_bytes(body);
        }
        self.position += piece.len() as u64;
        if ends_line {
            self.end_line();
        }
        Ok(())
    }

    /// Decides what the current line is from its prefix and passes the
    /// prefix on. `complete` when the prefix is the whole line.
    fn classify(
        &mut self,
        complete: bool,
        each: &mut impl FnMut(ScannedMessage),
    ) -> Result<(), ScanError> {
        let prefix = std::mem::take(&mut self.prefix);
        let result = self.classify_prefix(&prefix, complete, each);
        self.prefix = prefix;
        result
    }

    fn classify_prefix(
        &mut self,
        prefix: &[u8],
        complete: bool,
        each: &mut impl FnMut(ScannedMessage),
    ) -> Result<(), ScanError> {
        if complete && (prefix == b"\n" || prefix == b"\r\n") {
            self.kind = Some(LineKind::Blank);
            return Ok(());
        }
        let may_separate = self.pending_blank.is_some() || self.line_start == self.region_start;
        if prefix.starts_with(b"From ") && may_separate {
            let content_end = self.pending_blank.map_or(self.line_start, |(at, _)| at);
            self.pending_blank = None;
            if let Some(finished) = self.message.take() {
                each(finish_message(finished, content_end, &mut self.scratch));
            }
            self.message = Some(Message {
                from_offset: self.line_start,
                content_start: self.line_start,
                from_hash: Fnv64::new(),
                in_headers: true,
                popa3d: Popa3dDigest::new(),
                x_uidl: XUidlState::default(),
                unquoter: Unquoter::new(self.variant),
                wire: WireCounter::new(),
            });
            self.kind = Some(LineKind::FromLine);
            self.line_bytes(prefix);
            return Ok(());
        }
        if self.message.is_none() {
            return Err(ScanError::NotAnMbox {
                offset: self.line_start,
            });
        }
        if let Some((_, blank)) = self.pending_blank.take() {
            self.content(blank);
        }
        if let Some(message) = self.message.as_mut() {
            if message.in_headers {
                message.popa3d.header_line_starts(prefix);
                message.x_uidl.header_line(prefix, complete);
            }
        }
        self.kind = Some(LineKind::Content);
        self.line_bytes(prefix);
        Ok(())
    }

    /// Passes bytes of the current (classified) line to whoever wants them.
    fn line_bytes(&mut self, bytes: &[u8]) {
        match self.kind {
            Some(LineKind::FromLine) => {
                if let Some(message) = self.message.as_mut() {
                    message.from_hash.update(bytes);
                }
            }
            Some(LineKind::Content) => self.content(bytes),
            // Blank lines are held whole in the prefix; nothing else
            // reaches here before classification.
            Some(LineKind::Blank) | None => {}
        }
    }

    /// Feeds message content to the digest and the wire counter.
    fn content(&mut self, bytes: &[u8]) {
        let Some(message) = self.message.as_mut() else {
            return;
        };
        if message.in_headers {
            message.popa3d.header_bytes(bytes);
        }
        self.scratch.clear();
        message.unquoter.feed(bytes, &mut self.scratch);
        message.wire.update(&self.scratch);
    }

    fn end_line(&mut self) {
        match self.kind {
            Some(LineKind::Blank) => {
                let blank: &'static [u8] = if self.prefix.len() == 1 {
                    b"\n"
                } else {
                    b"\r\n"
                };
                if let Some(message) = self.message.as_mut() {
                    message.in_headers = false;
                }
                if let Some((_, earlier)) = self.pending_blank.take() {
                    self.content(earlier);
                }
                self.pending_blank = Some((self.line_start, blank));
            }
            Some(LineKind::FromLine) => {
                if let Some(message) = self.message.as_mut() {
                    message.content_start = self.position;
                }
            }
            Some(LineKind::Content) | None => {}
        }
        self.line_start = self.position;
        self.prefix.clear();
        self.kind = None;
    }

    fn finish(mut self, end: u64, each: &mut impl FnMut(ScannedMessage)) -> Result<(), ScanError> {
        if self.position != self.line_start {
            // A last line without LF.
            if self.kind.is_none() {
                self.classify(true, each)?;
            }
            self.end_line();
        }
        let content_end = self.pending_blank.map_or(end, |(at, _)| at);
        if let Some(message) = self.message.take() {
            each(finish_message(message, content_end, &mut self.scratch));
        }
        Ok(())
    }
}

fn finish_message(mut message: Message, content_end: u64, scratch: &mut Vec<u8>) -> ScannedMessage {
    scratch.clear();
    message.unquoter.finish(scratch);
    message.wire.update(scratch);
    ScannedMessage {
        from_offset: message.from_offset,
        content_start: message.content_start,
        content_end: content_end.max(message.content_start),
        wire_size: message.wire.finish(),
        from_line_hash: message.from_hash.finish(),
        popa3d_uidl: message.popa3d.finish(),
        x_uidl: message.x_uidl.finish(),
    }
}

/// FNV-1a, 64 bits: a quick fingerprint of a separator line. It guards
/// against accidents (another program rewriting the file), not attackers:
/// a rewrite also has to keep every offset to go unnoticed.
#[derive(Debug, Clone)]
pub struct Fnv64(u64);

impl Default for Fnv64 {
    fn default() -> Fnv64 {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv64 {
    pub fn new() -> Fnv64 {
        Fnv64::default()
    }

    pub fn update(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 ^= u64::from(byte);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    pub fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quote::unquote_all;
    use crate::test_support::{transmitted, TempDir};

    /// Scans `data` as a file; the messages as the reader returns them.
    fn split(data: &[u8], variant: Variant) -> Result<Vec<(Vec<u8>, ScannedMessage)>, u64> {
        let dir = TempDir::new("scan");
        let path = dir.path().join("mbox");
        std::fs::write(&path, data).unwrap();
        let file = File::open(&path).unwrap();
        let mut messages = Vec::new();
        match scan(&file, 0, data.len() as u64, variant, |m| messages.push(m)) {
            Ok(()) => {}
            Err(ScanError::NotAnMbox { offset }) => return Err(offset),
            Err(ScanError::Io(e)) => panic!("{e}"),
        }
        Ok(messages
            .into_iter()
            .map(|m| {
                let raw = &data[m.content_start as usize..m.content_end as usize];
                (unquote_all(variant, raw), m)
            })
            .collect())
    }

    #[test]
    fn scanning_memory_in_any_chunks_agrees_with_scanning_the_file() {
        let data = b"\nFrom a@b Mon Jan  1 00:00:00 2024\nX-UIDL: u1\nSubject: x\n\n>From q\n\nFrom c@d Mon Jan  1 00:00:01 2024\r\n\r\nbody";
        let from_file: Vec<ScannedMessage> = split(data, Variant::Mboxrd)
            .unwrap()
            .into_iter()
            .map(|(_, m)| m)
            .collect();
        assert_eq!(from_file.len(), 2);
        for chunk_len in [0, 1, 2, 5, 7, data.len()] {
            let mut found = Vec::new();
            scan_bytes(data, chunk_len, Variant::Mboxrd, |m| found.push(m)).unwrap();
            assert_eq!(found, from_file, "chunks of {chunk_len}");
        }
        let mut found = Vec::new();
        let refused = scan_bytes(b"\nnot a separator\n", 3, Variant::Mboxo, |m| found.push(m));
        assert!(matches!(refused, Err(ScanError::NotAnMbox { offset: 1 })));
    }

    #[test]
    fn parsing_table() {
        use Variant::{Mboxo, Mboxrd};
        type Case = (
            &'static str,
            Variant,
            &'static [u8],
            &'static [&'static [u8]],
        );
        let cases: &[Case] = &[
            (
                "two messages",
                Mboxrd,
                b"From a Mon Jan  1 00:00:00 2024\nSubject: 1\n\nbody 1\n\nFrom b Mon Jan  1 00:00:01 2024\nSubject: 2\n\nbody 2\n\n",
                &[b"Subject: 1\n\nbody 1\n", b"Subject: 2\n\nbody 2\n"],
            ),
            (
                "missing final blank line",
                Mboxrd,
                b"From a\nS: 1\n\nx\n\nFrom b\nS: 2\n\ny\n",
                &[b"S: 1\n\nx\n", b"S: 2\n\ny\n"],
            ),
            (
                "last line without LF",
                Mboxrd,
                b"From a\nS: 1\n\nx",
                &[b"S: 1\n\nx"],
            ),
            (
                "From inside a body, not after an empty line",
                Mboxrd,
                b"From a\nS: 1\n\nline\nFrom here on\n\nFrom b\nS: 2\n\n",
                &[b"S: 1\n\nline\nFrom here on\n", b"S: 2\n"],
            ),
            (
                "quoted From unquoted by mboxrd",
                Mboxrd,
                b"From a\nS: 1\n\n>From x\n>>From y\n>Fromage\n\n",
                &[b"S: 1\n\nFrom x\n>From y\n>Fromage\n"],
            ),
            (
                "quoted From kept by mboxo",
                Mboxo,
                b"From a\nS: 1\n\n>From x\n>>From y\n\n",
                &[b"S: 1\n\n>From x\n>>From y\n"],
            ),
            (
                "quoted From after an empty line does not separate",
                Mboxrd,
                b"From a\nS: 1\n\n>From x\n\n",
                &[b"S: 1\n\nFrom x\n"],
            ),
            (
                "CRLF file",
                Mboxrd,
                b"From a\r\nS: 1\r\n\r\nbody\r\n>From q\r\n\r\nFrom b\r\nS: 2\r\n\r\nbody 2\r\n\r\n",
                &[b"S: 1\r\n\r\nbody\r\nFrom q\r\n", b"S: 2\r\n\r\nbody 2\r\n"],
            ),
            (
                "lying Content-Length, too short and too long",
                Mboxrd,
                b"From a\nContent-Length: 2\n\nlonger than two\n\nFrom b\nContent-Length: 9999\n\nshort\n\nFrom c\n\n",
                &[
                    b"Content-Length: 2\n\nlonger than two\n",
                    b"Content-Length: 9999\n\nshort\n",
                    b"",
                ],
            ),
            ("empty file", Mboxrd, b"", &[]),
            ("only empty lines", Mboxrd, b"\n\r\n\n", &[]),
            (
                "empty lines before the first message",
                Mboxrd,
                b"\n\nFrom a\nS: 1\n\n",
                &[b"S: 1\n"],
            ),
            (
                "several trailing empty lines keep all but one",
                Mboxrd,
                b"From a\nS: 1\n\nx\n\n\n\n",
                &[b"S: 1\n\nx\n\n\n"],
            ),
            (
                "separator line at the very end without LF",
                Mboxrd,
                b"From a\nS: 1\n\nFrom b",
                &[b"S: 1\n", b""],
            ),
            (
                "message that is only a separator",
                Mboxrd,
                b"From a\n\nFrom b\nS: 2\n\n",
                &[b"", b"S: 2\n"],
            ),
            (
                "lone CR is not a line end",
                Mboxrd,
                b"From a\nS: 1\r\rFrom x\n\n",
                &[b"S: 1\r\rFrom x\n"],
            ),
        ];
        for (name, variant, data, expected) in cases {
            let messages = split(data, *variant)
                .unwrap_or_else(|offset| panic!("{name}: not an mbox at {offset}"));
            let contents: Vec<&[u8]> = messages.iter().map(|(c, _)| c.as_slice()).collect();
            assert_eq!(&contents, expected, "{name}");
            for (content, message) in &messages {
                assert_eq!(
                    message.wire_size,
                    transmitted(content).len() as u64,
                    "{name}"
                );
            }
        }
    }

    #[test]
    fn text_before_the_first_separator_is_not_an_mbox() {
        assert_eq!(
            split(b"Subject: no separator\n\nbody\n", Variant::Mboxrd).unwrap_err(),
            0
        );
        assert_eq!(
            split(b"\n\nhello\nFrom a\n", Variant::Mboxrd).unwrap_err(),
            2
        );
        // "From " must start the line exactly.
        assert_eq!(split(b" From a\n", Variant::Mboxrd).unwrap_err(), 0);
        assert_eq!(split(b"from a\n", Variant::Mboxrd).unwrap_err(), 0);
    }

    #[test]
    fn x_uidl_and_popa3d_id_come_from_the_header_section_only() {
        let data = b"From a\nX-UIDL: abc\nDate: X\n\nX-UIDL: body\nDate: Y\n\nFrom b\nSubject: s\n\nX-UIDL: late\n";
        let messages = split(data, Variant::Mboxrd).unwrap();
        assert_eq!(messages[0].1.x_uidl.as_deref(), Some("abc"));
        assert_eq!(messages[0].1.popa3d_uidl, "c7eaac4d3400c62f");
        assert_eq!(messages[1].1.x_uidl, None);
        assert_eq!(messages[1].1.popa3d_uidl, "d98c1dd404b2008f");
    }

    #[test]
    fn an_overlong_x_uidl_line_is_ignored() {
        let mut data = b"From a\nX-UIDL: ".to_vec();
        data.extend(std::iter::repeat_n(b'x', 300));
        data.extend_from_slice(b"\n\nbody\n");
        let messages = split(&data, Variant::Mboxrd).unwrap();
        assert_eq!(messages[0].1.x_uidl, None);
    }

    /// The splitting rule restated over whole lines in memory.
    fn reference(data: &[u8]) -> Vec<(usize, usize, usize)> {
        let mut messages = Vec::new();
        let mut current: Option<(usize, usize)> = None;
        let mut pending_blank: Option<usize> = None;
        let mut offset = 0;
        for line in data.split_inclusive(|&b| b == b'\n') {
            let blank = line == b"\n" || line == b"\r\n";
            if line.starts_with(b"From ") && (offset == 0 || pending_blank.is_some()) {
                if let Some((from, start)) = current.take() {
                    messages.push((from, start, pending_blank.unwrap_or(offset)));
                }
                current = Some((offset, offset + line.len()));
                pending_blank = None;
            } else if blank {
                pending_blank = Some(offset);
            } else {
                pending_blank = None;
            }
            offset += line.len();
        }
        if let Some((from, start)) = current {
            messages.push((from, start, pending_blank.unwrap_or(data.len()).max(start)));
        }
        messages
    }

    /// Random files around the 64 KiB chunk size, compared with the
    /// in-memory statement of the rule: chunk boundaries must not matter.
    #[test]
    fn chunk_boundaries_do_not_change_the_split() {
        let pieces: &[&[u8]] = &[
            b"From x\n",
            b"From y\r\n",
            b"\n",
            b"\r\n",
            b">From q\n",
            b">>From r\r\n",
            b"Subject: s\n",
            b"\r",
            b"F",
            b"rom ",
            b"abc",
            b"X-UIDL: u\n",
            b">",
            b"Date: d\n",
        ];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..40 {
            let mut data = b"From first\n".to_vec();
            let target = CHUNK_LEN - 200
                + (next() % 400) as usize
                + if round % 2 == 0 { 0 } else { CHUNK_LEN };
            while data.len() < target {
                let piece = pieces[(next() % pieces.len() as u64) as usize];
                if next() % 50 == 0 {
                    let filler = (next() % 3000) as usize;
                    data.extend(std::iter::repeat_n(b'z', filler));
                }
                data.extend_from_slice(piece);
            }
            let expected = reference(&data);
            for variant in [Variant::Mboxrd, Variant::Mboxo] {
                let messages = split(&data, variant).unwrap();
                let got: Vec<(usize, usize, usize)> = messages
                    .iter()
                    .map(|(_, m)| {
                        (
                            m.from_offset as usize,
                            m.content_start as usize,
                            m.content_end as usize,
                        )
                    })
                    .collect();
                assert_eq!(got, expected, "round {round}");
                for (content, message) in &messages {
                    assert_eq!(
                        message.wire_size,
                        transmitted(content).len() as u64,
                        "round {round}"
                    );
                }
            }
        }
    }
}
