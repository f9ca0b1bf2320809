//! The streaming wire encoder for message bodies (RETR, TOP).
//!
//! STUB: interface agreed; implementation pending.

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
    _private: (),
}

impl BodyEncoder {
    /// For RETR: the whole message.
    pub fn full() -> Self {
        todo!()
    }
    /// For TOP n k: headers, the blank line, then `body_lines` body lines.
    pub fn top(body_lines: u32) -> Self {
        let _ = body_lines;
        todo!()
    }
    /// Encodes `input`, appending wire bytes to `out`.
    pub fn encode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Progress {
        let _ = (input, out);
        todo!()
    }
    /// Ends the body: a CRLF if the last line lacked one, then `.` CRLF.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        let _ = out;
        todo!()
    }
}
