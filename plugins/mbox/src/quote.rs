//! `>From ` quoting: which mbox dialect this is and how to undo its quoting.
//!
//! In an mbox a line starting with `From ` after a blank line starts a new
//! message, so delivery agents quote such lines inside a message by
//! prefixing `>`. The two dialects differ in whether that can be undone:
//!
//! - **mboxrd** quotes every line matching `>*From ` with one more `>`, so
//!   the reader removes exactly one `>` from every line matching `>+From `
//!   and gets the original back.
//! - **mboxo** quotes only `From ` itself, so `>From ` in the file may be a
//!   quoted `From ` or an original `>From `; nothing can be undone safely and
//!   the reader passes every byte through.
//!
//! [`Unquoter`] undoes mboxrd quoting on a stream of arbitrary chunks in
//! constant memory: however long a run of `>` is, it holds back at most one
//! `>` and the five bytes of `From `.

/// The mbox dialect of the files, from the store config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// `>+From ` lines lose one `>` when read.
    Mboxrd,
    /// Lines are read as stored.
    Mboxo,
}

impl Variant {
    /// The name used in the config file and the index.
    pub fn name(self) -> &'static str {
        match self {
            Variant::Mboxrd => "mboxrd",
            Variant::Mboxo => "mboxo",
        }
    }
}

const FROM_SPACE: &[u8; 5] = b"From ";

/// Where the unquoter is within the current line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing of the current line seen yet.
    LineStart,
    /// The line began with `>`; one `>` is held back, later ones were
    /// passed on (they are all alike, so which one is dropped is moot).
    HeldQuote,
    /// As `HeldQuote`, followed by this many bytes of `From `, also held.
    Matching(usize),
    /// Past the point where the line could be a quoted `From ` line.
    Inside,
}

/// Streams message bytes through mboxrd unquoting (or none, for mboxo).
#[derive(Debug, Clone)]
pub struct Unquoter {
    /// Whether lines are unquoted at all.
    variant: Variant,
    /// Progress through the current line.
    state: State,
}

impl Unquoter {
    /// An unquoter positioned at the start of a message (a line start).
    pub fn new(variant: Variant) -> Unquoter {
        Unquoter {
            variant,
            state: State::LineStart,
        }
    }

    /// Appends the unquoted form of `input` to `out`. `out` grows by at most
    /// `input.len() + 6` bytes.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        if self.variant == Variant::Mboxo {
            out.extend_from_slice(input);
            return;
        }
        let mut at = 0;
        while at < input.len() {
            match self.state {
                State::Inside => {
                    // The hot path: copy up to and including the next LF.
                    match memchr::memchr(b'\n', &input[at..]) {
                        Some(offset) => {
                            out.extend_from_slice(&input[at..at + offset + 1]);
                            at += offset + 1;
                            self.state = State::LineStart;
                        }
                        None => {
                            out.extend_from_slice(&input[at..]);
                            at = input.len();
                        }
                    }
                }
                State::LineStart => {
                    let byte = input[at];
                    at += 1;
                    if byte == b'>' {
                        self.state = State::HeldQuote;
                    } else {
                        out.push(byte);
                        self.state = after(byte);
                    }
                }
                State::HeldQuote => {
                    let byte = input[at];
                    at += 1;
                    if byte == b'>' {
                        out.push(b'>');
                    } else if byte == FROM_SPACE[0] {
                        self.state = State::Matching(1);
                    } else {
                        out.push(b'>');
                        out.push(byte);
                        self.state = after(byte);
                    }
                }
                State::Matching(matched) => {
                    let byte = input[at];
                    at += 1;
                    if byte == FROM_SPACE[matched] {
                        if matched + 1 == FROM_SPACE.len() {
                            // A quoted `From ` line: drop the held `>`.
                            out.extend_from_slice(FROM_SPACE);
                            self.state = State::Inside;
                        } else {
                            self.state = State::Matching(matched + 1);
                        }
                    } else {
                        out.push(b'>');
                        out.extend_from_slice(&FROM_SPACE[..matched]);
                        out.push(byte);
                        self.state = after(byte);
                    }
                }
            }
        }
    }

    /// Releases whatever is held back at the end of the message (a message
    /// ending in `>Fro`, say) and gets ready for the next message.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        match self.state {
            State::HeldQuote => out.push(b'>'),
            State::Matching(matched) => {
                out.push(b'>');
                out.extend_from_slice(&FROM_SPACE[..matched]);
            }
            State::LineStart | State::Inside => {}
        }
        self.state = State::LineStart;
    }
}

/// The state after passing `byte` on in the middle of a line.
fn after(byte: u8) -> State {
    if byte == b'\n' {
        State::LineStart
    } else {
        State::Inside
    }
}

/// Unquotes a whole message held in memory.
#[cfg(test)]
pub fn unquote_all(variant: Variant, message: &[u8]) -> Vec<u8> {
    let mut unquoter = Unquoter::new(variant);
    let mut out = Vec::new();
    unquoter.feed(message, &mut out);
    unquoter.finish(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A line-by-line statement of the mboxrd rule, to compare against.
    fn reference(message: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
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

    #[test]
    fn mboxrd_table() {
        let cases: &[(&[u8], &[u8])] = &[
            (b">From a\n", b"From a\n"),
            (b">>From a\n", b">From a\n"),
            (b">>>From a\r\n", b">>From a\r\n"),
            (b"x\n>From a\n", b"x\nFrom a\n"),
            (b"x >From a\n", b"x >From a\n"),
            (b">Frox\n", b">Frox\n"),
            (b">From", b">From"),
            (b">", b">"),
            (b">>", b">>"),
            (b">Fr", b">Fr"),
            (b">\n>From \n", b">\nFrom \n"),
            (b"From a\n", b"From a\n"),
            (b">from a\n", b">from a\n"),
            (b"", b""),
        ];
        for &(input, expected) in cases {
            assert_eq!(
                unquote_all(Variant::Mboxrd, input),
                expected,
                "{:?}",
                String::from_utf8_lossy(input)
            );
            assert_eq!(reference(input), expected);
        }
    }

    #[test]
    fn mboxo_passes_everything_through() {
        let input = b">From a\n>>From b\nFrom c\n";
        assert_eq!(unquote_all(Variant::Mboxo, input), input);
    }

    #[test]
    fn any_chunking_gives_the_same_bytes() {
        let message = b">From x\n>>From y\n>>>Frox\n>\n>F\nabc >From\n>From ";
        let expected = reference(message);
        for split in 0..=message.len() {
            for split2 in split..=message.len() {
                let mut unquoter = Unquoter::new(Variant::Mboxrd);
                let mut out = Vec::new();
                for part in [
                    &message[..split],
                    &message[split..split2],
                    &message[split2..],
                ] {
                    unquoter.feed(part, &mut out);
                }
                unquoter.finish(&mut out);
                assert_eq!(out, expected, "{split} {split2}");
            }
        }
    }

    #[test]
    fn a_long_run_of_quotes_is_streamed_not_held() {
        let mut unquoter = Unquoter::new(Variant::Mboxrd);
        let mut out = Vec::new();
        let run = vec![b'>'; 100_000];
        unquoter.feed(&run, &mut out);
        assert_eq!(out.len(), run.len() - 1, "only one '>' may be held back");
        unquoter.feed(b"From x\n", &mut out);
        unquoter.finish(&mut out);
        assert_eq!(out.len(), run.len() - 1 + 7);
    }
}
