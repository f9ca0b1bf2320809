//! Reading POP3 replies off the wire and checking their framing.
//!
//! A [`ReplyReader`] is told what the next reply looks like (one status
//! line, or a status line followed by a dot-terminated body when it is
//! +OK), then fed bytes as they arrive in any split. It returns a [`Reply`]
//! when the reply is complete. Bodies are never stored whole: RETR bodies
//! are only counted (after undoing dot-stuffing), and only the short LIST
//! and UIDL bodies are kept line by line. The reader keeps at most one
//! partial line between reads, so ten thousand idle connections cost ten
//! thousand empty vectors.
//!
//! What it checks, because a server that gets these wrong must not look
//! fast: status lines start with "+OK" or "-ERR"; lines end in CRLF; a body
//! line starting with '.' is either the terminator or stuffed with a second
//! '.'; no line is absurdly long; nothing arrives that was not asked for.

use memchr::memchr;

/// Longest line accepted. Far above RFC 1939's 512-octet status lines and
/// RFC 5322's 998-octet message lines, so only a runaway server hits it.
const MAX_LINE: usize = 1 << 20;

/// Errors after which the byte stream can no longer be trusted, so the
/// connection must be dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fatal {
    /// A status line started with neither "+OK" nor "-ERR".
    BadStatus,
    /// A line longer than [`MAX_LINE`].
    LineTooLong,
    /// Bytes arrived while no reply was expected.
    Unsolicited,
}

impl Fatal {
    pub fn name(self) -> &'static str {
        match self {
            Fatal::BadStatus => "bad_status_line",
            Fatal::LineTooLong => "line_too_long",
            Fatal::Unsolicited => "unsolicited_data",
        }
    }
}

/// One complete reply.
#[derive(Debug, Default)]
pub struct Reply {
    /// +OK (true) or -ERR (false).
    pub ok: bool,
    /// The status line after "+OK"/"-ERR" and one space, without CRLF;
    /// STAT's counts and RETR's "N octets" are read from it.
    pub text: Vec<u8>,
    /// Body octets as the message is defined (CRLF line ends, dot-stuffing
    /// removed, terminator excluded): what LIST announced for a RETR.
    pub body_octets: u64,
    /// Body lines (unstuffed, without CRLF) when the caller asked for them.
    pub lines: Vec<Vec<u8>>,
    /// Some line ended in a bare LF instead of CRLF.
    pub bare_lf: bool,
    /// Body lines starting with a single '.' that were not the terminator:
    /// the server forgot to dot-stuff them.
    pub unstuffed_dots: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing expected: any byte is unsolicited.
    Idle,
    /// Waiting for a status line; `multi` says whether +OK opens a body.
    Status { multi: bool },
    /// Inside a multi-line body.
    Body,
}

/// Incremental reply parser for one connection.
pub struct ReplyReader {
    /// Bytes of a line whose end has not arrived yet.
    partial: Vec<u8>,
    /// Where in a reply we are.
    state: State,
    /// Whether body lines are kept (LIST, UIDL) or only counted (RETR).
    keep_lines: bool,
    /// The reply being assembled.
    reply: Reply,
}

impl ReplyReader {
    pub fn new() -> ReplyReader {
        ReplyReader {
            partial: Vec::new(),
            state: State::Idle,
            keep_lines: false,
            reply: Reply::default(),
        }
    }

    /// Announces the next reply: `multi` for commands whose +OK is followed
    /// by a body, `keep_lines` to get the body lines back.
    pub fn expect(&mut self, multi: bool, keep_lines: bool) {
        self.state = State::Status { multi };
        self.keep_lines = keep_lines;
        self.reply = Reply::default();
    }

    /// Consumes bytes up to the end of the current reply. Returns how many
    /// bytes were used and the reply if it completed; the caller feeds the
    /// rest after announcing the next reply.
    pub fn feed(&mut self, data: &[u8]) -> Result<(usize, Option<Reply>), Fatal> {
        if self.state == State::Idle && !data.is_empty() {
            return Err(Fatal::Unsolicited);
        }
        let mut pos = 0;
        while pos < data.len() {
            let Some(offset) = memchr(b'\n', &data[pos..]) else {
                if self.partial.len() + data.len() - pos > MAX_LINE {
                    return Err(Fatal::LineTooLong);
                }
                self.partial.extend_from_slice(&data[pos..]);
                return Ok((data.len(), None));
            };
            let end = pos + offset + 1;
            let done = if self.partial.is_empty() {
                self.line(&data[pos..end])?
            } else {
                if self.partial.len() + end - pos > MAX_LINE {
                    return Err(Fatal::LineTooLong);
                }
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(&data[pos..end]);
                let done = self.line(&line);
                line.clear();
                self.partial = line;
                done?
            };
            pos = end;
            if done {
                self.state = State::Idle;
                return Ok((pos, Some(std::mem::take(&mut self.reply))));
            }
        }
        Ok((pos, None))
    }

    /// Handles one whole line including its LF; true when the reply is done.
    fn line(&mut self, line: &[u8]) -> Result<bool, Fatal> {
        let content = match line.strip_suffix(b"\r\n") {
            Some(content) => content,
            None => {
                self.reply.bare_lf = true;
                &line[..line.len() - 1]
            }
        };
        match self.state {
            State::Idle => Err(Fatal::Unsolicited),
            State::Status { multi } => {
                let (ok, rest) = if let Some(rest) = content.strip_prefix(b"+OK") {
                    (true, rest)
                } else if let Some(rest) = content.strip_prefix(b"-ERR") {
                    (false, rest)
                } else {
                    return Err(Fatal::BadStatus);
                };
                let text = match rest.split_first() {
                    None => &[][..],
                    Some((b' ', text)) => text,
                    Some(_) => return Err(Fatal::BadStatus),
                };
                self.reply.ok = ok;
                self.reply.text = text.to_vec();
                if ok && multi {
                    self.state = State::Body;
                    Ok(false)
                } else {
                    Ok(true)
                }
            }
            State::Body => {
                if content == b"." {
                    return Ok(true);
                }
                let unstuffed = match content {
                    [b'.', b'.', ..] => &content[1..],
                    [b'.', ..] => {
                        self.reply.unstuffed_dots += 1;
                        content
                    }
                    _ => content,
                };
                // Counted as if CRLF-terminated: a bare LF is reported once
                // as such rather than again as a size mismatch.
                self.reply.body_octets += unstuffed.len() as u64 + 2;
                if self.keep_lines {
                    self.reply.lines.push(unstuffed.to_vec());
                }
                Ok(false)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `wire` split at every possible point and returns the replies.
    fn parse_all_splits(wire: &[u8], multi: bool) -> Vec<Result<Reply, Fatal>> {
        (0..=wire.len())
            .map(|split| {
                let mut reader = ReplyReader::new();
                reader.expect(multi, true);
                let mut result = None;
                for chunk in [&wire[..split], &wire[split..]] {
                    match reader.feed(chunk) {
                        Err(e) => return Err(e),
                        Ok((used, Some(reply))) => {
                            assert_eq!(used, chunk.len());
                            result = Some(reply);
                        }
                        Ok((used, None)) => assert_eq!(used, chunk.len()),
                    }
                }
                result.ok_or(Fatal::Unsolicited)
            })
            .collect()
    }

    #[test]
    fn retr_body_is_unstuffed_and_counted() {
        let wire = b"+OK 16 octets\r\nab\r\n..\r\n...x\r\n\r\n.\r\n";
        for reply in parse_all_splits(wire, true) {
            let reply = reply.unwrap();
            assert!(reply.ok);
            assert_eq!(reply.text, b"16 octets");
            // "ab" "." "..x" "" with CRLF each: 4 + 3 + 5 + 2
            assert_eq!(reply.body_octets, 14);
            assert_eq!(
                reply.lines,
                vec![b"ab".to_vec(), b".".to_vec(), b"..x".to_vec(), vec![]]
            );
            assert!(!reply.bare_lf);
            assert_eq!(reply.unstuffed_dots, 0);
        }
    }

    #[test]
    fn detects_missing_dot_stuffing_and_bare_lf() {
        let reply = parse_all_splits(b"+OK\r\n.oops\nfine\r\n.\r\n", true)
            .pop()
            .unwrap()
            .unwrap();
        assert_eq!(reply.unstuffed_dots, 1);
        assert!(reply.bare_lf);
    }

    #[test]
    fn err_reply_has_no_body_and_bad_status_is_fatal() {
        let reply = parse_all_splits(b"-ERR [IN-USE] locked\r\n", true)
            .pop()
            .unwrap()
            .unwrap();
        assert!(!reply.ok);
        assert_eq!(reply.text, b"[IN-USE] locked");
        for result in parse_all_splits(b"+OKAY\r\n", false) {
            assert_eq!(result.err(), Some(Fatal::BadStatus));
        }
        for result in parse_all_splits(b"HELLO\r\n", false) {
            assert_eq!(result.err(), Some(Fatal::BadStatus));
        }
    }

    #[test]
    fn extra_bytes_are_left_for_the_caller_then_unsolicited() {
        let mut reader = ReplyReader::new();
        reader.expect(false, false);
        let (used, reply) = reader.feed(b"+OK\r\n+OK\r\n").unwrap();
        assert_eq!(used, 5);
        assert!(reply.is_some());
        assert_eq!(reader.feed(b"+OK\r\n").err(), Some(Fatal::Unsolicited));
    }
}
