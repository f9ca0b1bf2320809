//! Parsing one POP3 command line (CRLF already removed) into a [`Command`].
//!
//! The framer hands us the bytes of one line without its line end. [`parse`]
//! turns them into a [`Command`] that borrows its arguments from the line, or
//! into a [`ParseError`] whose `Display` text the session sends after `-ERR `
//! before carrying on with the next line.
//!
//! The grammar is RFC 1939's (plus CAPA/STLS/AUTH from RFC 2449, 2595 and
//! 5034): a case-insensitive keyword, then arguments separated by spaces.
//! We are lenient where real clients are sloppy (runs of spaces, trailing
//! spaces) and strict everywhere else, because a half-understood command is
//! worse than a clear `-ERR`:
//!
//! - A NUL byte anywhere is [`ParseError::Nul`]; it never ends the line
//!   early, so `USER bob\0admin` cannot smuggle a different name through.
//! - Any other control byte (below 0x20, or 0x7F) is
//!   [`ParseError::BadArgument`], in the keyword and in every argument,
//!   PASS included.
//! - Message numbers are decimal digits only (no sign), fit in a `u32` and
//!   are at least 1; TOP's line count may be 0.
//! - PASS takes everything after the first space verbatim, because passwords
//!   may contain spaces (and bytes above 0x7F).
//!
//! The parser never allocates: every argument is a slice of the input line.
//!
//! ```
//! use pop3d::protocol::command::{parse, Command, ParseError};
//!
//! assert_eq!(parse(b"top 3 10"), Ok(Command::Top { msg: 3, lines: 10 }));
//! assert_eq!(parse(b"RETR 0"), Err(ParseError::BadNumber));
//! assert_eq!(ParseError::BadNumber.to_string(), "Invalid message number");
//! ```

use std::fmt;

/// A syntactically valid command. Whether it is allowed in the current state
/// is the session's business, not the parser's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command<'a> {
    /// `USER name`: the name is printable ASCII without spaces.
    User(&'a str),
    /// Everything after `PASS ` verbatim: passwords may contain spaces.
    Pass(&'a [u8]),
    /// `APOP name digest`: the digest is 32 hex digits, in the case the
    /// client sent (compare case-insensitively).
    Apop {
        user: &'a str,
        digest: &'a str,
    },
    Quit,
    Stat,
    List(Option<u32>),
    Retr(u32),
    Dele(u32),
    Noop,
    Rset,
    Top {
        msg: u32,
        lines: u32,
    },
    Uidl(Option<u32>),
    Capa,
    Stls,
    /// `AUTH [mechanism [initial-response]]`. The mechanism is 1 to 20 of
    /// `A-Z a-z 0-9 - _` in the case the client sent; the initial response is
    /// base64 characters or `=`, not yet decoded.
    Auth {
        mechanism: Option<&'a str>,
        initial_response: Option<&'a str>,
    },
}

/// Why a line is not a valid command. `Display` is the text after `-ERR `.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// The line was empty.
    Empty,
    /// The line contains a NUL byte somewhere.
    Nul,
    /// The keyword is not a POP3 command we know.
    UnknownCommand,
    /// The command needs an argument that is not there.
    MissingArgument,
    /// The command got more arguments than it takes.
    TooManyArguments,
    /// A message number is not a decimal number from 1 to 4294967295.
    BadNumber,
    /// TOP's line count is not a decimal number from 0 to 4294967295.
    BadLineCount,
    /// An argument (or the keyword) contains a control byte, or an argument
    /// has characters its syntax does not allow.
    BadArgument,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ParseError::Empty => "Empty command",
            ParseError::Nul => "NUL byte in command",
            ParseError::UnknownCommand => "Unknown command",
            ParseError::MissingArgument => "Missing argument",
            ParseError::TooManyArguments => "Too many arguments",
            ParseError::BadNumber => "Invalid message number",
            ParseError::BadLineCount => "Invalid line count",
            ParseError::BadArgument => "Invalid argument",
        })
    }
}

impl std::error::Error for ParseError {}

/// Parses one command line without its CRLF.
pub fn parse(line: &[u8]) -> Result<Command<'_>, ParseError> {
    if line.is_empty() {
        return Err(ParseError::Empty);
    }
    // NUL is checked on the whole line first so that it wins over every other
    // diagnosis: it is the one byte some C backends would treat as the end.
    if memchr::memchr(0, line).is_some() {
        return Err(ParseError::Nul);
    }
    if line.iter().any(|&byte| is_control(byte)) {
        return Err(ParseError::BadArgument);
    }

    let (keyword, rest) = match memchr::memchr(b' ', line) {
        Some(space) => (&line[..space], &line[space + 1..]),
        None => (line, &line[line.len()..]),
    };
    let keyword = keyword_code(keyword).ok_or(ParseError::UnknownCommand)?;
    let mut args = Arguments::new(rest);

    let command = match &keyword {
        b"USER" => {
            let name = args.required()?;
            args.no_more()?;
            Command::User(user_name(name)?)
        }
        // PASS does not go through `Arguments`: its argument is verbatim.
        b"PASS" if rest.is_empty() => return Err(ParseError::MissingArgument),
        b"PASS" => Command::Pass(rest),
        b"APOP" => {
            let name = args.required()?;
            let digest = args.required()?;
            args.no_more()?;
            Command::Apop {
                user: user_name(name)?,
                digest: apop_digest(digest)?,
            }
        }
        b"QUIT" => args.none(Command::Quit)?,
        b"STAT" => args.none(Command::Stat)?,
        b"NOOP" => args.none(Command::Noop)?,
        b"RSET" => args.none(Command::Rset)?,
        b"CAPA" => args.none(Command::Capa)?,
        b"STLS" => args.none(Command::Stls)?,
        b"LIST" => Command::List(args.optional_message_number()?),
        b"UIDL" => Command::Uidl(args.optional_message_number()?),
        b"RETR" => Command::Retr(args.message_number()?),
        b"DELE" => Command::Dele(args.message_number()?),
        b"TOP " => {
            let msg = args.required()?;
            let lines = args.required()?;
            args.no_more()?;
            Command::Top {
                msg: message_number(msg)?,
                lines: decimal_u32(lines).ok_or(ParseError::BadLineCount)?,
            }
        }
        b"AUTH" => {
            let mechanism = args.optional()?;
            let initial_response = args.optional()?;
            args.no_more()?;
            Command::Auth {
                mechanism: mechanism.map(sasl_mechanism).transpose()?,
                initial_response: initial_response.map(sasl_initial_response).transpose()?,
            }
        }
        _ => return Err(ParseError::UnknownCommand),
    };
    Ok(command)
}

/// Bytes that have no business in a command line. CR and LF are among them:
/// the framer removed the line end, so one left inside is an attack or a bug.
fn is_control(byte: u8) -> bool {
    byte < 0x20 || byte == 0x7F
}

/// The keyword upper-cased into a fixed 4-byte code (3-letter keywords get a
/// trailing space) so that dispatch is one match on a small array, without
/// allocating. `None` when it cannot be a keyword at all.
fn keyword_code(keyword: &[u8]) -> Option<[u8; 4]> {
    let mut code = [b' '; 4];
    if !(3..=4).contains(&keyword.len()) {
        return None;
    }
    for (slot, &byte) in code.iter_mut().zip(keyword) {
        *slot = byte.to_ascii_uppercase();
    }
    Some(code)
}

/// The arguments after the keyword, split on runs of spaces.
struct Arguments<'a> {
    /// What is left of the line to split; shrinks as arguments are taken.
    rest: &'a [u8],
}

impl<'a> Arguments<'a> {
    fn new(rest: &'a [u8]) -> Self {
        Arguments { rest }
    }

    fn optional(&mut self) -> Result<Option<&'a [u8]>, ParseError> {
        let start = self.rest.iter().position(|&byte| byte != b' ');
        let Some(start) = start else {
            self.rest = &[];
            return Ok(None);
        };
        let tail = &self.rest[start..];
        let end = memchr::memchr(b' ', tail).unwrap_or(tail.len());
        self.rest = &tail[end..];
        Ok(Some(&tail[..end]))
    }

    fn required(&mut self) -> Result<&'a [u8], ParseError> {
        self.optional()?.ok_or(ParseError::MissingArgument)
    }

    fn no_more(&mut self) -> Result<(), ParseError> {
        match self.optional()? {
            Some(_) => Err(ParseError::TooManyArguments),
            None => Ok(()),
        }
    }

    /// For commands without arguments: `command` if nothing follows.
    fn none(&mut self, command: Command<'a>) -> Result<Command<'a>, ParseError> {
        self.no_more()?;
        Ok(command)
    }

    fn message_number(&mut self) -> Result<u32, ParseError> {
        let number = self.required()?;
        self.no_more()?;
        message_number(number)
    }

    fn optional_message_number(&mut self) -> Result<Option<u32>, ParseError> {
        let number = self.optional()?;
        self.no_more()?;
        number.map(message_number).transpose()
    }
}

/// A message number: decimal digits only, 1 to `u32::MAX`.
fn message_number(text: &[u8]) -> Result<u32, ParseError> {
    match decimal_u32(text) {
        Some(0) | None => Err(ParseError::BadNumber),
        Some(number) => Ok(number),
    }
}

/// Decimal digits only (no sign, no spaces), leading zeros allowed,
/// `None` on anything else or on overflow.
fn decimal_u32(text: &[u8]) -> Option<u32> {
    if text.is_empty() {
        return None;
    }
    text.iter().try_fold(0u32, |value, &byte| {
        let digit = byte.checked_sub(b'0').filter(|digit| *digit <= 9)?;
        value.checked_mul(10)?.checked_add(u32::from(digit))
    })
}

/// A user name for USER/APOP: printable ASCII. Non-ASCII names wait for
/// RFC 6856 UTF8 support, which must be negotiated first.
fn user_name(name: &[u8]) -> Result<&str, ParseError> {
    ascii_str(name, |byte| byte.is_ascii_graphic())
}

/// An APOP digest: the 32 hex digits of an MD5 sum.
fn apop_digest(digest: &[u8]) -> Result<&str, ParseError> {
    if digest.len() != 32 {
        return Err(ParseError::BadArgument);
    }
    ascii_str(digest, |byte| byte.is_ascii_hexdigit())
}

/// A SASL mechanism name (RFC 4422 section 3.1), accepted in either case
/// because some clients lower-case it.
fn sasl_mechanism(name: &[u8]) -> Result<&str, ParseError> {
    if name.len() > 20 {
        return Err(ParseError::BadArgument);
    }
    ascii_str(name, |byte| {
        byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_'
    })
}

/// An AUTH initial response (RFC 5034): base64 characters, or `=` for an
/// empty one. Decoding and padding checks are the SASL layer's job.
fn sasl_initial_response(response: &[u8]) -> Result<&str, ParseError> {
    ascii_str(response, |byte| {
        byte.is_ascii_alphanumeric() || byte == b'+' || byte == b'/' || byte == b'='
    })
}

/// `text` as a `&str` if every byte passes `allowed` (which must only admit
/// ASCII, so the conversion cannot fail in practice).
fn ascii_str(text: &[u8], allowed: impl Fn(u8) -> bool) -> Result<&str, ParseError> {
    if !text.iter().all(|&byte| allowed(byte)) {
        return Err(ParseError::BadArgument);
    }
    std::str::from_utf8(text).map_err(|_| ParseError::BadArgument)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Command::*;
    use ParseError::*;

    /// Runs a known-answer table, naming the failing line.
    fn check(table: &[(&[u8], Result<Command<'_>, ParseError>)]) {
        for (line, expected) in table {
            assert_eq!(
                &parse(line),
                expected,
                "line {:?}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn rfc1939_example_commands() {
        check(&[
            (
                b"APOP mrose c4c9334bac560ecc979e58001b3e22fb",
                Ok(Apop {
                    user: "mrose",
                    digest: "c4c9334bac560ecc979e58001b3e22fb",
                }),
            ),
            (b"USER frated", Ok(User("frated"))),
            (b"USER mrose", Ok(User("mrose"))),
            (b"PASS secret", Ok(Pass(b"secret"))),
            (b"STAT", Ok(Stat)),
            (b"LIST", Ok(List(None))),
            (b"LIST 2", Ok(List(Some(2)))),
            (b"LIST 3", Ok(List(Some(3)))),
            (b"RETR 1", Ok(Retr(1))),
            (b"RETR 2", Ok(Retr(2))),
            (b"DELE 1", Ok(Dele(1))),
            (b"DELE 2", Ok(Dele(2))),
            (b"NOOP", Ok(Noop)),
            (b"RSET", Ok(Rset)),
            (b"TOP 1 10", Ok(Top { msg: 1, lines: 10 })),
            (b"TOP 100 3", Ok(Top { msg: 100, lines: 3 })),
            (b"UIDL", Ok(Uidl(None))),
            (b"UIDL 2", Ok(Uidl(Some(2)))),
            (b"UIDL 3", Ok(Uidl(Some(3)))),
            (b"QUIT", Ok(Quit)),
        ]);
    }

    #[test]
    fn every_command_and_casing() {
        check(&[
            (b"user bob", Ok(User("bob"))),
            (b"UsEr bob", Ok(User("bob"))),
            (b"USER Bob@Example.COM", Ok(User("Bob@Example.COM"))),
            (b"pass x", Ok(Pass(b"x"))),
            (
                b"apop a 0123456789ABCDEFabcdef0123456789",
                Ok(Apop {
                    user: "a",
                    digest: "0123456789ABCDEFabcdef0123456789",
                }),
            ),
            (b"quit", Ok(Quit)),
            (b"stat", Ok(Stat)),
            (b"list", Ok(List(None))),
            (b"LiSt 7", Ok(List(Some(7)))),
            (b"retr 12", Ok(Retr(12))),
            (b"dele 4", Ok(Dele(4))),
            (b"noop", Ok(Noop)),
            (b"rset", Ok(Rset)),
            (b"top 3 0", Ok(Top { msg: 3, lines: 0 })),
            (b"tOp 3 10", Ok(Top { msg: 3, lines: 10 })),
            (b"uidl", Ok(Uidl(None))),
            (b"uidl 9", Ok(Uidl(Some(9)))),
            (b"capa", Ok(Capa)),
            (b"CAPA", Ok(Capa)),
            (b"stls", Ok(Stls)),
            (b"STLS", Ok(Stls)),
            (
                b"AUTH",
                Ok(Auth {
                    mechanism: None,
                    initial_response: None,
                }),
            ),
            (
                b"auth PLAIN",
                Ok(Auth {
                    mechanism: Some("PLAIN"),
                    initial_response: None,
                }),
            ),
            (
                b"AUTH plain",
                Ok(Auth {
                    mechanism: Some("plain"),
                    initial_response: None,
                }),
            ),
            (
                b"AUTH SCRAM-SHA-256",
                Ok(Auth {
                    mechanism: Some("SCRAM-SHA-256"),
                    initial_response: None,
                }),
            ),
            (
                b"AUTH PLAIN AGJvYgBzZWNyZXQ=",
                Ok(Auth {
                    mechanism: Some("PLAIN"),
                    initial_response: Some("AGJvYgBzZWNyZXQ="),
                }),
            ),
            (
                b"AUTH EXTERNAL =",
                Ok(Auth {
                    mechanism: Some("EXTERNAL"),
                    initial_response: Some("="),
                }),
            ),
        ]);
    }

    #[test]
    fn number_limits() {
        check(&[
            (b"RETR 4294967295", Ok(Retr(u32::MAX))),
            (b"RETR 0004", Ok(Retr(4))),
            (
                b"TOP 1 4294967295",
                Ok(Top {
                    msg: 1,
                    lines: u32::MAX,
                }),
            ),
            (b"LIST 4294967296", Err(BadNumber)),
            (b"LIST 4294967297", Err(BadNumber)),
            (b"RETR 99999999999999999999", Err(BadNumber)),
            (b"TOP 1 4294967296", Err(BadLineCount)),
            (b"RETR 0", Err(BadNumber)),
            (b"DELE 00", Err(BadNumber)),
            (b"LIST 0", Err(BadNumber)),
            (b"UIDL 0", Err(BadNumber)),
            (b"TOP 0 1", Err(BadNumber)),
            (b"RETR -1", Err(BadNumber)),
            (b"RETR +5", Err(BadNumber)),
            (b"RETR 5a", Err(BadNumber)),
            (b"RETR abc", Err(BadNumber)),
            (b"RETR 1.0", Err(BadNumber)),
            (b"RETR \xd9\xa1", Err(BadNumber)),
            (b"TOP 1 -1", Err(BadLineCount)),
            (b"TOP 1 +1", Err(BadLineCount)),
            (b"TOP 1 x", Err(BadLineCount)),
            (b"TOP x 1", Err(BadNumber)),
        ]);
    }

    #[test]
    fn spaces() {
        check(&[
            (b"LIST  5", Ok(List(Some(5)))),
            (b"LIST 5   ", Ok(List(Some(5)))),
            (b"LIST ", Ok(List(None))),
            (b"STAT ", Ok(Stat)),
            (b"QUIT   ", Ok(Quit)),
            (b"TOP   3    10  ", Ok(Top { msg: 3, lines: 10 })),
            (b"USER  bob ", Ok(User("bob"))),
            (
                b"AUTH  PLAIN   = ",
                Ok(Auth {
                    mechanism: Some("PLAIN"),
                    initial_response: Some("="),
                }),
            ),
            // A leading space means there is no keyword.
            (b" STAT", Err(UnknownCommand)),
            (b" ", Err(UnknownCommand)),
            (b"USER ", Err(MissingArgument)),
            (b"RETR   ", Err(MissingArgument)),
        ]);
    }

    #[test]
    fn pass_is_verbatim() {
        check(&[
            (b"PASS secret with spaces", Ok(Pass(b"secret with spaces"))),
            (b"PASS  leading", Ok(Pass(b" leading"))),
            (b"PASS trailing ", Ok(Pass(b"trailing "))),
            (b"PASS  ", Ok(Pass(b" "))),
            (b"pass p\xc3\xa4ss", Ok(Pass("päss".as_bytes()))),
            (b"PASS", Err(MissingArgument)),
            (b"PASS ", Err(MissingArgument)),
            (b"PASS a\tb", Err(BadArgument)),
            (b"PASS a\rb", Err(BadArgument)),
            (b"PASS a\0b", Err(Nul)),
        ]);
    }

    #[test]
    fn missing_and_surplus_arguments() {
        check(&[
            (b"USER", Err(MissingArgument)),
            (b"USER a b", Err(TooManyArguments)),
            (b"APOP", Err(MissingArgument)),
            (b"APOP mrose", Err(MissingArgument)),
            (
                b"APOP mrose c4c9334bac560ecc979e58001b3e22fb x",
                Err(TooManyArguments),
            ),
            (b"RETR", Err(MissingArgument)),
            (b"RETR 1 2", Err(TooManyArguments)),
            (b"DELE", Err(MissingArgument)),
            (b"DELE 1 2", Err(TooManyArguments)),
            (b"TOP", Err(MissingArgument)),
            (b"TOP 1", Err(MissingArgument)),
            (b"TOP 1 2 3", Err(TooManyArguments)),
            (b"LIST 1 2", Err(TooManyArguments)),
            (b"UIDL 1 2", Err(TooManyArguments)),
            // Arity is judged before the values.
            (b"RETR x y", Err(TooManyArguments)),
            (b"AUTH PLAIN = x", Err(TooManyArguments)),
            (b"QUIT now", Err(TooManyArguments)),
            (b"STAT 1", Err(TooManyArguments)),
            (b"NOOP x", Err(TooManyArguments)),
            (b"RSET x", Err(TooManyArguments)),
            (b"CAPA x", Err(TooManyArguments)),
            (b"STLS x", Err(TooManyArguments)),
        ]);
    }

    #[test]
    fn bad_arguments() {
        check(&[
            (b"USER b\xc3\xb6b", Err(BadArgument)),
            (b"USER bob\x7f", Err(BadArgument)),
            (b"USER bob\tx", Err(BadArgument)),
            (b"USER bob\rx", Err(BadArgument)),
            (b"USER bob\nx", Err(BadArgument)),
            (b"STAT\x01", Err(BadArgument)),
            (b"RETR\t1", Err(BadArgument)),
            (
                b"APOP mrose c4c9334bac560ecc979e58001b3e22f",
                Err(BadArgument),
            ),
            (
                b"APOP mrose c4c9334bac560ecc979e58001b3e22fbb",
                Err(BadArgument),
            ),
            (
                b"APOP mrose g4c9334bac560ecc979e58001b3e22fb",
                Err(BadArgument),
            ),
            (
                b"APOP m\xc3\xb6se c4c9334bac560ecc979e58001b3e22fb",
                Err(BadArgument),
            ),
            (b"AUTH PL@IN", Err(BadArgument)),
            (b"AUTH ABCDEFGHIJKLMNOPQRSTU", Err(BadArgument)),
            (b"AUTH PLAIN abc!", Err(BadArgument)),
        ]);
    }

    #[test]
    fn nul_wins_everywhere() {
        check(&[
            (b"\0", Err(Nul)),
            (b"USER bob\0admin", Err(Nul)),
            (b"\0USER bob", Err(Nul)),
            (b"RETR 1\0", Err(Nul)),
            (b"XYZZY\0\x01", Err(Nul)),
        ]);
    }

    #[test]
    fn empty_and_unknown() {
        check(&[
            (b"", Err(Empty)),
            (b"XYZ", Err(UnknownCommand)),
            (b"HELO", Err(UnknownCommand)),
            (b"RETRIEVE 1", Err(UnknownCommand)),
            (b"RE", Err(UnknownCommand)),
            (b"TO 1 2", Err(UnknownCommand)),
            (b"R\xc3\xa9TR 1", Err(UnknownCommand)),
            (b"TOP1 1", Err(UnknownCommand)),
        ]);
    }

    #[test]
    fn messages_are_short_ascii_without_prefix() {
        let all = [
            Empty,
            Nul,
            UnknownCommand,
            MissingArgument,
            TooManyArguments,
            BadNumber,
            BadLineCount,
            BadArgument,
        ];
        for error in all {
            let text = error.to_string();
            assert!(!text.is_empty() && text.len() <= 40, "{text:?}");
            assert!(text
                .bytes()
                .all(|byte| byte.is_ascii_graphic() || byte == b' '));
            assert!(!text.starts_with("-ERR"), "{text:?}");
        }
        assert_eq!(UnknownCommand.to_string(), "Unknown command");
        assert_eq!(MissingArgument.to_string(), "Missing argument");
        assert_eq!(TooManyArguments.to_string(), "Too many arguments");
        assert_eq!(BadNumber.to_string(), "Invalid message number");
        assert_eq!(Nul.to_string(), "NUL byte in command");
        assert_eq!(BadArgument.to_string(), "Invalid argument");
    }
}
