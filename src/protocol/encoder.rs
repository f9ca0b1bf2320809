//! The streaming wire encoder for message bodies (RETR, TOP).
//!
//! Stored messages are raw bytes: LF or CRLF line ends, maybe no final line
//! end, any 8-bit byte, stray CRs, lines of any length. POP3 sends them as
//! the *wire form*, dot-stuffed, then a terminating `.` CRLF. The wire form
//! is defined precisely because the stores compute the sizes that STAT and
//! LIST report with the same rule, and a client that sees a different byte
//! count from RETR may refuse the message:
//!
//! - every LF not immediately preceded by CR becomes CRLF;
//! - a non-empty message that does not end with LF gets a CRLF appended;
//! - lone CRs stay as they are; an empty message has an empty wire form.
//!
//! [`wire_size_of`] and [`WireSizeCounter`] give the length of the wire form
//! (before dot-stuffing) without building it. [`BodyEncoder`] builds it chunk
//! by chunk, so a message of any size is sent with bounded memory: it carries
//! across chunk boundaries whether the last byte was a CR (the LF may be the
//! first byte of the next chunk) and whether the next byte starts a line (a
//! `.` there is stuffed).
//!
//! The encoder works on whole slices: `memchr` finds the line ends and
//! unchanged runs are copied with one `extend_from_slice`, so CRLF input
//! without leading dots is copied in a single call per chunk.
//!
//! ```
//! use pop3d::protocol::encoder::{wire_size_of, BodyEncoder, Progress};
//!
//! let message = b"Subject: hi\n\n.hidden\nlast";
//! let mut encoder = BodyEncoder::full();
//! let mut out = Vec::new();
//! for chunk in message.chunks(4) {
//!     assert_eq!(encoder.encode(chunk, &mut out), Progress::NeedMore);
//! }
//! encoder.finish(&mut out);
//! assert_eq!(out, b"Subject: hi\r\n\r\n..hidden\r\nlast\r\n.\r\n");
//! assert_eq!(wire_size_of(message), 30);
//! ```

/// Whether the encoder wants more input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Feed the next chunk of the message (or call `finish` at its end).
    NeedMore,
    /// TOP has sent its k body lines; stop reading, call `finish`.
    Done,
}

/// Converts raw message bytes to the dot-stuffed CRLF wire form, chunk by
/// chunk, carrying line state across chunk boundaries.
#[derive(Debug, Clone)]
pub struct BodyEncoder {
    /// How much of the message still goes out: all of it, or the part of a
    /// TOP that is left.
    limit: Limit,
    /// The next input byte starts a line (true at the start and after an LF).
    /// A `.` there is stuffed; at `finish` it means no CRLF is missing.
    at_line_start: bool,
    /// The last input byte was a CR, so an LF opening the next chunk is
    /// already a CRLF and must not get another CR.
    after_cr: bool,
    /// `finish` has run: the terminator is out and nothing may follow it.
    finished: bool,
}

/// What the current header line holds so far, as far as finding the blank
/// line that ends the header is concerned. It carries across chunks because
/// a CR may end one chunk and the LF start the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HeaderLine {
    /// Nothing yet: an LF now makes the blank line.
    Empty,
    /// A single CR: an LF now makes the blank line (a CRLF one).
    Cr,
    /// Anything else: this is a header line, not the blank line.
    Text,
}

impl HeaderLine {
    /// The state after the line continues with `more`.
    fn then(self, more: &[u8]) -> HeaderLine {
        match (self, more) {
            (state, []) => state,
            (HeaderLine::Empty, [b'\r']) => HeaderLine::Cr,
            _ => HeaderLine::Text,
        }
    }
}

/// The part of the message a [`BodyEncoder`] still sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Limit {
    /// RETR: everything.
    Whole,
    /// TOP, still in the header; `line` is what the current header line
    /// holds so far, which decides whether the next LF ends the header.
    Header { body_lines: u32, line: HeaderLine },
    /// TOP, in the body: this many more lines (LFs) to send, at least 1.
    Body { lines_left: u32 },
    /// TOP has sent everything it should.
    Reached,
}

impl BodyEncoder {
    /// For RETR: the whole message.
    pub fn full() -> Self {
        Self::with_limit(Limit::Whole)
    }

    /// For TOP n k: headers, the blank line, then `body_lines` body lines.
    /// A message without a blank line is all header and is sent whole.
    pub fn top(body_lines: u32) -> Self {
        Self::with_limit(Limit::Header {
            body_lines,
            line: HeaderLine::Empty,
        })
    }

    fn with_limit(limit: Limit) -> Self {
        BodyEncoder {
            limit,
            at_line_start: true,
            after_cr: false,
            finished: false,
        }
    }

    /// Encodes `input`, appending wire bytes to `out`.
    ///
    /// Returns [`Progress::Done`] once a TOP has sent its lines; from then on
    /// (and after [`finish`](Self::finish)) input is ignored.
    pub fn encode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Progress {
        if self.finished || self.limit == Limit::Reached {
            return Progress::Done;
        }
        let (wanted, progress) = match self.limit {
            Limit::Whole => (input, Progress::NeedMore),
            _ => match self.top_cut(input) {
                Some(end) => (&input[..end], Progress::Done),
                None => (input, Progress::NeedMore),
            },
        };
        self.encode_wire(wanted, out);
        progress
    }

    /// Ends the body: a CRLF if the last line lacked one, then `.` CRLF.
    /// Calling it again adds nothing.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.finished {
            return;
        }
        self.finished = true;
        if !self.at_line_start {
            out.extend_from_slice(b"\r\n.\r\n");
        } else {
            out.extend_from_slice(b".\r\n");
        }
    }

    /// Advances the TOP limit over `input` and returns the offset just past
    /// the LF that completes the TOP, if it is in this chunk.
    fn top_cut(&mut self, input: &[u8]) -> Option<usize> {
        // Where the current line began in `input`; 0 also covers a line that
        // began in an earlier chunk, whose state is in `Limit::Header::line`.
        let mut line_start = 0;
        for lf in memchr::memchr_iter(b'\n', input) {
            match &mut self.limit {
                Limit::Header { body_lines, line } => {
                    if line.then(&input[line_start..lf]) != HeaderLine::Text {
                        if *body_lines == 0 {
                            self.limit = Limit::Reached;
                            return Some(lf + 1);
                        }
                        self.limit = Limit::Body {
                            lines_left: *body_lines,
                        };
                    } else {
                        *line = HeaderLine::Empty;
                    }
                }
                Limit::Body { lines_left } => {
                    *lines_left -= 1;
                    if *lines_left == 0 {
                        self.limit = Limit::Reached;
                        return Some(lf + 1);
                    }
                }
                Limit::Whole | Limit::Reached => return None,
            }
            line_start = lf + 1;
        }
        if let Limit::Header { line, .. } = &mut self.limit {
            *line = line.then(&input[line_start..]);
        }
        None
    }

    /// Appends the dot-stuffed wire form of `input` to `out`, continuing the
    /// line state of the previous chunk.
    fn encode_wire(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let Some(&last) = input.last() else {
            return;
        };
        // Typical text grows by one CR per ~70 bytes; a bit more avoids a
        // second reallocation, and pathological input just grows the Vec.
        out.reserve(input.len() + input.len() / 32 + 2);

        // Bytes in input[copied_up_to..] are not yet in `out`; we copy runs
        // and only break them where a CR or a stuffing dot is inserted.
        let mut copied_up_to = 0;
        if self.at_line_start && input[0] == b'.' {
            out.push(b'.');
        }
        for lf in memchr::memchr_iter(b'\n', input) {
            let after_cr = match lf.checked_sub(1) {
                Some(before) => input[before] == b'\r',
                None => self.after_cr,
            };
            if !after_cr {
                out.extend_from_slice(&input[copied_up_to..lf]);
                out.push(b'\r');
                copied_up_to = lf;
            }
            if input.get(lf + 1) == Some(&b'.') {
                out.extend_from_slice(&input[copied_up_to..=lf]);
                out.push(b'.');
                copied_up_to = lf + 1;
            }
        }
        out.extend_from_slice(&input[copied_up_to..]);
        self.at_line_start = last == b'\n';
        self.after_cr = last == b'\r';
    }
}

/// The length in bytes of the wire form of a whole message (CRLF line ends,
/// a CRLF after a last line without one, before dot-stuffing). STAT and LIST
/// report this; it is what [`BodyEncoder`] sends before stuffing.
pub fn wire_size_of(data: &[u8]) -> u64 {
    let mut counter = WireSizeCounter::new();
    counter.update(data);
    counter.finish()
}

/// Computes [`wire_size_of`] chunk by chunk, for messages read in pieces.
#[derive(Debug, Clone)]
pub struct WireSizeCounter {
    /// Wire bytes counted so far: input bytes plus one CR per bare LF.
    size: u64,
    /// The last byte seen was a CR, so an LF opening the next chunk adds
    /// nothing.
    after_cr: bool,
    /// The last byte seen was an LF (or nothing was seen yet), so `finish`
    /// adds no CRLF.
    at_line_start: bool,
}

impl Default for WireSizeCounter {
    fn default() -> Self {
        Self::new()
    }
}

impl WireSizeCounter {
    /// A counter for an empty message.
    pub fn new() -> Self {
        WireSizeCounter {
            size: 0,
            after_cr: false,
            at_line_start: true,
        }
    }

    /// Counts the next chunk of the message.
    pub fn update(&mut self, chunk: &[u8]) {
        let Some(&last) = chunk.last() else {
            return;
        };
        let mut bare_lfs: u64 = 0;
        for lf in memchr::memchr_iter(b'\n', chunk) {
            let after_cr = match lf.checked_sub(1) {
                Some(before) => chunk[before] == b'\r',
                None => self.after_cr,
            };
            bare_lfs += u64::from(!after_cr);
        }
        self.size += chunk.len() as u64 + bare_lfs;
        self.after_cr = last == b'\r';
        self.at_line_start = last == b'\n';
    }

    /// The wire size of everything passed to `update`.
    pub fn finish(self) -> u64 {
        if self.at_line_start {
            self.size
        } else {
            self.size + 2
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` to `encoder` cut at the given chunk lengths (the rest as
    /// a last chunk), stopping at `Done` as the session does, then finishes.
    fn encode_in_chunks(mut encoder: BodyEncoder, input: &[u8], chunk_lens: &[usize]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = input;
        let mut lens = chunk_lens.iter();
        loop {
            let len = lens.next().map_or(rest.len(), |&len| len.min(rest.len()));
            let (chunk, tail) = rest.split_at(len);
            rest = tail;
            if encoder.encode(chunk, &mut out) == Progress::Done || rest.is_empty() {
                break;
            }
        }
        encoder.finish(&mut out);
        out
    }

    /// Every way to cut `input` in two, and byte by byte, must give
    /// `expected`; so must the whole input in one chunk.
    fn check(make: impl Fn() -> BodyEncoder, input: &[u8], expected: &[u8]) {
        let show = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        let whole = encode_in_chunks(make(), input, &[]);
        assert_eq!(
            show(&whole),
            show(expected),
            "input {:?} whole",
            show(input)
        );
        for cut in 0..=input.len() {
            let split = encode_in_chunks(make(), input, &[cut]);
            assert_eq!(
                show(&split),
                show(expected),
                "input {:?} cut at {cut}",
                show(input)
            );
        }
        let bytewise = encode_in_chunks(make(), input, &vec![1; input.len()]);
        assert_eq!(
            show(&bytewise),
            show(expected),
            "input {:?} byte by byte",
            show(input)
        );
    }

    #[test]
    fn retr_known_answers() {
        let table: &[(&[u8], &[u8])] = &[
            (b"", b".\r\n"),
            (b"a", b"a\r\n.\r\n"),
            (b"a\n", b"a\r\n.\r\n"),
            (b"a\r\n", b"a\r\n.\r\n"),
            (b"\n", b"\r\n.\r\n"),
            (b"\n\n", b"\r\n\r\n.\r\n"),
            (b"a\nb", b"a\r\nb\r\n.\r\n"),
            (b"a\nb\n", b"a\r\nb\r\n.\r\n"),
            (b"a\r\nb\r\n", b"a\r\nb\r\n.\r\n"),
            (b"a\r\nb\nc\r\n", b"a\r\nb\r\nc\r\n.\r\n"),
            // Dot-stuffing: any line starting with '.', the first one too.
            (b".", b"..\r\n.\r\n"),
            (b".\n", b"..\r\n.\r\n"),
            (b".\r\n", b"..\r\n.\r\n"),
            (b"..", b"...\r\n.\r\n"),
            (b"..\n", b"...\r\n.\r\n"),
            (b"a\n.\nb", b"a\r\n..\r\nb\r\n.\r\n"),
            (b"a\n.b\n..c\n", b"a\r\n..b\r\n...c\r\n.\r\n"),
            (b"a.\n b.\n", b"a.\r\n b.\r\n.\r\n"),
            // Lone CRs stay and do not start a line.
            (b"a\rb\n", b"a\rb\r\n.\r\n"),
            (b"a\r.b\n", b"a\r.b\r\n.\r\n"),
            (b"a\r", b"a\r\r\n.\r\n"),
            (b"\r", b"\r\r\n.\r\n"),
            (b"\r\r\n", b"\r\r\n.\r\n"),
            (b"\r\n\r", b"\r\n\r\r\n.\r\n"),
            (b"\n\r\n", b"\r\n\r\n.\r\n"),
            // 8-bit bytes pass through.
            (b"\xff\xfe\x80\n\x00", b"\xff\xfe\x80\r\n\x00\r\n.\r\n"),
        ];
        for (input, expected) in table {
            check(BodyEncoder::full, input, expected);
        }
    }

    #[test]
    fn top_known_answers() {
        let message: &[u8] = b"From: a\nSubject: b\n\nline 1\n.line 2\nline 3\n";
        let table: &[(u32, &[u8], &[u8])] = &[
            (0, message, b"From: a\r\nSubject: b\r\n\r\n.\r\n"),
            (1, message, b"From: a\r\nSubject: b\r\n\r\nline 1\r\n.\r\n"),
            (
                2,
                message,
                b"From: a\r\nSubject: b\r\n\r\nline 1\r\n..line 2\r\n.\r\n",
            ),
            (
                3,
                message,
                b"From: a\r\nSubject: b\r\n\r\nline 1\r\n..line 2\r\nline 3\r\n.\r\n",
            ),
            (
                100,
                message,
                b"From: a\r\nSubject: b\r\n\r\nline 1\r\n..line 2\r\nline 3\r\n.\r\n",
            ),
            (
                u32::MAX,
                message,
                b"From: a\r\nSubject: b\r\n\r\nline 1\r\n..line 2\r\nline 3\r\n.\r\n",
            ),
            // CRLF input, blank line as CRLF.
            (1, b"A: 1\r\n\r\nx\r\ny\r\n", b"A: 1\r\n\r\nx\r\n.\r\n"),
            (0, b"A: 1\r\n\r\nx\r\n", b"A: 1\r\n\r\n.\r\n"),
            // Header only: all of it, with or without a final line end.
            (5, b"A: 1\nB: 2\n", b"A: 1\r\nB: 2\r\n.\r\n"),
            (0, b"A: 1\nB: 2", b"A: 1\r\nB: 2\r\n.\r\n"),
            (0, b"A: 1", b"A: 1\r\n.\r\n"),
            (3, b"", b".\r\n"),
            // Header and blank line, no body.
            (3, b"A: 1\n\n", b"A: 1\r\n\r\n.\r\n"),
            (0, b"A: 1\n\n", b"A: 1\r\n\r\n.\r\n"),
            // A last body line without line end gets one.
            (4, b"A: 1\n\nx\ny", b"A: 1\r\n\r\nx\r\ny\r\n.\r\n"),
            // Empty header: the message starts with the blank line.
            (1, b"\nx\ny\n", b"\r\nx\r\n.\r\n"),
            (0, b"\r\nx\r\n", b"\r\n.\r\n"),
            // CR CR LF and a lone CR are not blank lines.
            (0, b"A\n\r\r\nB\n\nx\n", b"A\r\n\r\r\nB\r\n\r\n.\r\n"),
            (0, b"A\n\rB\n\nx\n", b"A\r\n\rB\r\n\r\n.\r\n"),
            // Empty body lines count as lines.
            (2, b"A\n\n\n\nx\n", b"A\r\n\r\n\r\n\r\n.\r\n"),
            // Dot-leading header lines and the dot after the last line sent.
            (0, b".A\n\n.x\n", b"..A\r\n\r\n.\r\n"),
        ];
        for &(lines, input, expected) in table {
            check(|| BodyEncoder::top(lines), input, expected);
        }
    }

    #[test]
    fn top_reports_done_and_then_ignores_input() {
        let mut encoder = BodyEncoder::top(1);
        let mut out = Vec::new();
        assert_eq!(encoder.encode(b"A: 1\n", &mut out), Progress::NeedMore);
        assert_eq!(
            encoder.encode(b"\nbody 1\nbody 2\n", &mut out),
            Progress::Done
        );
        assert_eq!(encoder.encode(b"body 3\n", &mut out), Progress::Done);
        encoder.finish(&mut out);
        assert_eq!(out, b"A: 1\r\n\r\nbody 1\r\n.\r\n");
        // A RETR never reports Done, even at a line end.
        let mut encoder = BodyEncoder::full();
        assert_eq!(encoder.encode(b"A: 1\n\nb\n", &mut out), Progress::NeedMore);
    }

    #[test]
    fn finish_twice_sends_one_terminator() {
        let mut encoder = BodyEncoder::full();
        let mut out = Vec::new();
        encoder.encode(b"x", &mut out);
        encoder.finish(&mut out);
        encoder.finish(&mut out);
        assert_eq!(encoder.encode(b"y", &mut out), Progress::Done);
        assert_eq!(out, b"x\r\n.\r\n");
    }

    #[test]
    fn long_lines_across_many_chunks() {
        let mut message = b".".repeat(100_000);
        message.push(b'\n');
        message.extend_from_slice(&b"y".repeat(70_000));
        let mut expected = b".".repeat(100_001);
        expected.extend_from_slice(b"\r\n");
        expected.extend_from_slice(&b"y".repeat(70_000));
        expected.extend_from_slice(b"\r\n.\r\n");
        let out = encode_in_chunks(BodyEncoder::full(), &message, &[65536, 65536, 65536]);
        assert_eq!(out, expected);
        assert_eq!(wire_size_of(&message), 170_004);
    }

    #[test]
    fn wire_size_known_answers() {
        let table: &[(&[u8], u64)] = &[
            (b"", 0),
            (b"a", 3),
            (b"a\n", 3),
            (b"a\r\n", 3),
            (b"\n", 2),
            (b"\r", 3),
            (b"a\r", 4),
            (b"\r\r\n", 3),
            (b".\n", 3),
            (b"a\nb\r\nc", 9),
        ];
        for &(input, expected) in table {
            assert_eq!(wire_size_of(input), expected, "{input:?}");
            let mut counter = WireSizeCounter::new();
            for byte in input.chunks(1) {
                counter.update(byte);
            }
            assert_eq!(counter.finish(), expected, "{input:?} byte by byte");
        }
    }

    /// SplitMix64: small, deterministic, good enough to generate test input.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        fn below(&mut self, bound: usize) -> usize {
            (self.next() % bound as u64) as usize
        }
    }

    /// Input rich in the bytes that matter: LF, CR, '.', plus text and 8-bit.
    fn random_message(rng: &mut Rng) -> Vec<u8> {
        const ALPHABET: &[u8] = b"\n\n\n\r\r...a b\xff\x00";
        let len = match rng.below(10) {
            0 => 0,
            1 => rng.below(2000),
            _ => rng.below(60),
        };
        (0..len)
            .map(|_| ALPHABET[rng.below(ALPHABET.len())])
            .collect()
    }

    fn random_chunk_lens(rng: &mut Rng, total: usize) -> Vec<usize> {
        let mut lens = Vec::new();
        let mut covered = 0;
        while covered < total {
            let len = rng.below(20);
            lens.push(len);
            covered += len;
        }
        lens
    }

    /// The wire form, one byte at a time, straight from the definition.
    fn reference_wire_form(data: &[u8]) -> Vec<u8> {
        let mut wire = Vec::new();
        let mut previous = None;
        for &byte in data {
            if byte == b'\n' && previous != Some(b'\r') {
                wire.push(b'\r');
            }
            wire.push(byte);
            previous = Some(byte);
        }
        if !data.is_empty() && previous != Some(b'\n') {
            wire.extend_from_slice(b"\r\n");
        }
        wire
    }

    /// The wire lines TOP sends: header lines through the first blank line
    /// (`\r\n`), then `body_lines` more; everything if there is no blank line.
    fn reference_top(wire: &[u8], body_lines: u32) -> Vec<u8> {
        let mut lines = wire.split_inclusive(|&byte| byte == b'\n');
        let mut sent = Vec::new();
        for line in lines.by_ref() {
            sent.extend_from_slice(line);
            if line == b"\r\n" {
                for line in lines.by_ref().take(body_lines as usize) {
                    sent.extend_from_slice(line);
                }
                break;
            }
        }
        sent
    }

    /// Removes the terminator and the stuffing, as a client does; panics if
    /// the output is not a well-terminated dot-stuffed body.
    fn unstuff(output: &[u8]) -> Vec<u8> {
        let body = output
            .strip_suffix(b".\r\n")
            .expect("output ends with the terminator");
        assert!(
            body.is_empty() || body.ends_with(b"\r\n"),
            "terminator on its own line"
        );
        let mut unstuffed = Vec::new();
        for line in body.split_inclusive(|&byte| byte == b'\n') {
            assert_ne!(line, b".\r\n", "unstuffed terminator inside the body");
            unstuffed.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
        }
        unstuffed
    }

    #[test]
    fn random_messages_and_chunkings_match_the_reference() {
        let mut rng = Rng(0x5EED_0F90_3300);
        for round in 0..20_000 {
            let message = random_message(&mut rng);
            let lens = random_chunk_lens(&mut rng, message.len());
            let wire = reference_wire_form(&message);

            let whole = encode_in_chunks(BodyEncoder::full(), &message, &[]);
            let chunked = encode_in_chunks(BodyEncoder::full(), &message, &lens);
            assert_eq!(chunked, whole, "round {round}: RETR depends on chunking");
            assert_eq!(unstuff(&whole), wire, "round {round}: RETR wire form");

            let body_lines = match rng.below(8) {
                7 => u32::MAX,
                lines => lines as u32,
            };
            let whole = encode_in_chunks(BodyEncoder::top(body_lines), &message, &[]);
            let chunked = encode_in_chunks(BodyEncoder::top(body_lines), &message, &lens);
            assert_eq!(chunked, whole, "round {round}: TOP depends on chunking");
            assert_eq!(
                unstuff(&whole),
                reference_top(&wire, body_lines),
                "round {round}: TOP {body_lines} of {message:?}"
            );

            assert_eq!(wire_size_of(&message), wire.len() as u64, "round {round}");
            let mut counter = WireSizeCounter::new();
            let mut rest = message.as_slice();
            for &len in &lens {
                let (chunk, tail) = rest.split_at(len.min(rest.len()));
                counter.update(chunk);
                rest = tail;
            }
            assert_eq!(
                counter.finish(),
                wire.len() as u64,
                "round {round}: counter"
            );
        }
    }
}
