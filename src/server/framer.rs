//! Splitting a client's byte stream into command lines, with a hard cap.
//!
//! Lines end in CRLF (a bare LF is accepted too, as most servers do). A line
//! longer than the cap is never buffered: the framer records one
//! [`LineBatch`] entry saying "too long" as soon as the cap is passed and then
//! skips bytes up to the next LF. Complete lines go into a [`LineBatch`], one
//! contiguous buffer for many lines, so pipelined commands cost no allocation
//! each.

/// Lines waiting to be handled, in arrival order, in one buffer.
#[derive(Debug, Default)]
pub struct LineBatch {
    /// The bytes of every complete line, back to back, terminators removed.
    data: Vec<u8>,
    /// Where each line sits in `data`; `None` marks a line that was too long
    /// and has been discarded.
    spans: Vec<Option<(u32, u32)>>,
}

/// One entry of a [`LineBatch`].
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Line<'a> {
    /// A complete line without its CRLF.
    Text(&'a [u8]),
    /// A line that exceeded the cap; its bytes were dropped.
    TooLong,
}

impl LineBatch {
    /// Number of lines waiting.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether no line is waiting.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Line `i` (0-based).
    pub fn get(&self, i: usize) -> Option<Line<'_>> {
        match self.spans.get(i)? {
            Some((start, end)) => Some(Line::Text(&self.data[*start as usize..*end as usize])),
            None => Some(Line::TooLong),
        }
    }

    fn push_text(&mut self, parts: &[&[u8]]) {
        let start = self.data.len() as u32;
        for part in parts {
            self.data.extend_from_slice(part);
        }
        self.spans.push(Some((start, self.data.len() as u32)));
    }

    fn push_too_long(&mut self) {
        self.spans.push(None);
    }

    /// Removes the first `n` lines, keeping the rest in order.
    pub fn consume(&mut self, n: usize) {
        if n >= self.spans.len() {
            self.clear();
            return;
        }
        let cut = self.spans[n..]
            .iter()
            .flatten()
            .map(|(start, _)| *start)
            .next()
            .unwrap_or(self.data.len() as u32);
        self.data.drain(..cut as usize);
        self.spans.drain(..n);
        for (start, end) in self.spans.iter_mut().flatten() {
            *start -= cut;
            *end -= cut;
        }
    }

    /// Appends every line of `other` after this batch's lines and empties
    /// `other`.
    pub fn append(&mut self, other: &mut LineBatch) {
        let base = self.data.len() as u32;
        self.data.extend_from_slice(&other.data);
        self.spans.extend(
            other
                .spans
                .iter()
                .map(|span| span.map(|(start, end)| (start + base, end + base))),
        );
        other.clear();
    }

    /// Drops every line; keeps a small allocation for reuse and frees a large
    /// one, so an idle connection does not keep a burst's worth of memory.
    pub fn clear(&mut self) {
        self.data.clear();
        self.spans.clear();
        if self.data.capacity() > 4096 {
            self.data = Vec::new();
        }
        if self.spans.capacity() > 256 {
            self.spans = Vec::new();
        }
    }
}

/// Per-connection framing state: the unfinished tail of the current line.
#[derive(Debug)]
pub struct Framer {
    /// Bytes of a line whose LF has not arrived yet (never more than the
    /// cap).
    partial: Vec<u8>,
    /// Whether the current line already passed the cap and is being skipped.
    discarding: bool,
    /// Longest accepted line, terminator included (RFC 2449: 255 octets).
    max_line: usize,
}

impl Framer {
    pub fn new(max_line: usize) -> Self {
        Framer {
            partial: Vec::new(),
            discarding: false,
            max_line,
        }
    }

    /// Changes the cap for lines not yet started (SASL continuation lines
    /// need more than commands).
    pub fn set_max_line(&mut self, max_line: usize) {
        self.max_line = max_line;
    }

    /// Bytes held for an unfinished line, for memory accounting.
    pub fn buffered(&self) -> usize {
        self.partial.len()
    }

    /// Splits `input` into lines appended to `batch`.
    pub fn feed(&mut self, mut input: &[u8], batch: &mut LineBatch) {
        while !input.is_empty() {
            let newline = memchr::memchr(b'\n', input);
            let (segment, rest, complete) = match newline {
                Some(at) => (&input[..at], &input[at + 1..], true),
                None => (input, &input[input.len()..], false),
            };
            input = rest;
            if self.discarding {
                if complete {
                    self.discarding = false;
                }
                continue;
            }
            // The terminator counts against the cap: CRLF is two octets, but
            // only the LF has been cut off `segment` so far.
            let length_with_lf = self.partial.len() + segment.len() + 1;
            if complete && length_with_lf <= self.max_line {
                let line = strip_cr(&self.partial, segment);
                batch.push_text(&line);
                self.partial.clear();
            } else if !complete && self.partial.len() + segment.len() < self.max_line {
                self.partial.extend_from_slice(segment);
            } else {
                batch.push_too_long();
                self.partial = Vec::new();
                self.discarding = !complete;
            }
        }
        if self.partial.is_empty() && self.partial.capacity() > 0 {
            self.partial = Vec::new();
        }
    }
}

/// The line made of `head` + `tail` without a trailing CR.
fn strip_cr<'a>(head: &'a [u8], tail: &'a [u8]) -> [&'a [u8]; 2] {
    if let Some(stripped) = tail.strip_suffix(b"\r") {
        [head, stripped]
    } else if tail.is_empty() {
        [head.strip_suffix(b"\r").unwrap_or(head), tail]
    } else {
        [head, tail]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(batch: &LineBatch) -> Vec<Line<'_>> {
        (0..batch.len()).filter_map(|i| batch.get(i)).collect()
    }

    #[test]
    fn splits_crlf_and_bare_lf_lines() {
        let mut framer = Framer::new(255);
        let mut batch = LineBatch::default();
        framer.feed(b"USER a\r\nPASS b c\nSTAT\r\n", &mut batch);
        assert_eq!(
            lines(&batch),
            vec![
                Line::Text(b"USER a"),
                Line::Text(b"PASS b c"),
                Line::Text(b"STAT")
            ]
        );
    }

    #[test]
    fn joins_a_line_split_across_reads_even_between_cr_and_lf() {
        let mut framer = Framer::new(255);
        let mut batch = LineBatch::default();
        framer.feed(b"LI", &mut batch);
        framer.feed(b"ST 1\r", &mut batch);
        assert!(batch.is_empty());
        framer.feed(b"\nNOOP\r\n", &mut batch);
        assert_eq!(
            lines(&batch),
            vec![Line::Text(b"LIST 1"), Line::Text(b"NOOP")]
        );
    }

    #[test]
    fn keeps_nul_bytes_inside_the_line() {
        let mut framer = Framer::new(255);
        let mut batch = LineBatch::default();
        framer.feed(b"USER a\0b\r\n", &mut batch);
        assert_eq!(lines(&batch), vec![Line::Text(b"USER a\0b")]);
    }

    #[test]
    fn a_line_of_exactly_the_cap_passes_and_one_more_octet_does_not() {
        let mut framer = Framer::new(255);
        let mut batch = LineBatch::default();
        let exact = [vec![b'A'; 253], b"\r\n".to_vec()].concat();
        framer.feed(&exact, &mut batch);
        let over = [vec![b'A'; 254], b"\r\n".to_vec()].concat();
        framer.feed(&over, &mut batch);
        assert_eq!(batch.len(), 2);
        assert!(matches!(batch.get(0), Some(Line::Text(t)) if t.len() == 253));
        assert_eq!(batch.get(1), Some(Line::TooLong));
    }

    #[test]
    fn an_endless_line_is_reported_once_and_never_buffered() {
        let mut framer = Framer::new(255);
        let mut batch = LineBatch::default();
        for _ in 0..1000 {
            framer.feed(&[b'x'; 1000], &mut batch);
            assert!(framer.buffered() < 255);
        }
        framer.feed(b"tail\r\nNOOP\r\n", &mut batch);
        assert_eq!(lines(&batch), vec![Line::TooLong, Line::Text(b"NOOP")]);
    }

    #[test]
    fn consume_and_append_keep_order() {
        let mut framer = Framer::new(255);
        let mut first = LineBatch::default();
        framer.feed(b"A\r\nB\r\nC\r\n", &mut first);
        first.consume(1);
        let mut second = LineBatch::default();
        framer.feed(b"D\r\n", &mut second);
        first.append(&mut second);
        assert!(second.is_empty());
        assert_eq!(
            lines(&first),
            vec![Line::Text(b"B"), Line::Text(b"C"), Line::Text(b"D")]
        );
    }
}
