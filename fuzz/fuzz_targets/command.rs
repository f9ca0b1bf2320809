//! `protocol::command::parse` on arbitrary lines: it must never panic, and
//! its answer must not depend on the case of the keyword.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pop3d::protocol::command::{parse, Command, ParseError};

fuzz_target!(|line: &[u8]| {
    let parsed = parse(line);
    if line.contains(&0) {
        assert_eq!(parsed, Err(ParseError::Nul));
    }
    if let Ok(Command::Pass(password)) = &parsed {
        // PASS keeps everything after the first space, verbatim.
        assert!(line.ends_with(password));
        assert!(!password.is_empty());
    }
    // Keywords are case-insensitive; arguments keep their case.
    let keyword_end = line.iter().position(|&b| b == b' ').unwrap_or(line.len());
    let mut upper = line.to_vec();
    upper[..keyword_end].make_ascii_uppercase();
    assert_eq!(parse(&upper), parsed);
});
