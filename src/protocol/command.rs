//! Parsing one POP3 command line (CRLF already removed) into a [`Command`].
//!
//! STUB: interface agreed; implementation pending.

use std::fmt;

/// A syntactically valid command. Whether it is allowed in the current state
/// is the session's business, not the parser's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command<'a> {
    User(&'a str),
    /// Everything after `PASS ` verbatim: passwords may contain spaces.
    Pass(&'a [u8]),
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
    Auth {
        mechanism: Option<&'a str>,
        initial_response: Option<&'a str>,
    },
}

/// Why a line is not a valid command. `Display` is the text after `-ERR `.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    Empty,
    Nul,
    UnknownCommand,
    MissingArgument,
    TooManyArguments,
    BadNumber,
    BadArgument,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

/// Parses one command line without its CRLF.
pub fn parse(line: &[u8]) -> Result<Command<'_>, ParseError> {
    let _ = line;
    todo!("command parser")
}
