//! UIDLs for operators moving from Dovecot: a `uidl_format` template in the
//! style of Dovecot's `pop3_uidl_format`, and a read-only reader of the
//! `dovecot-uidlist` file its values come from.
//!
//! The default format, `%f`, is the file's base name (the part before `:`),
//! which needs nothing but the file name. A format with `%u` (IMAP UID) or
//! `%v` (UIDVALIDITY) takes them from the `dovecot-uidlist` Dovecot keeps
//! in the maildir, so `uidl_format: "%08Xu%08Xv"` gives every message the
//! UIDL Dovecot gave it with `pop3_uidl_format = %08Xu%08Xv`, and clients
//! that leave mail on the server do not download it all again.
//!
//! pop3d never writes `dovecot-uidlist` (Dovecot may still be running on
//! the same maildir). A message Dovecot has not numbered therefore has no
//! UID, and gets its base name as UIDL instead. So that no message's UIDL
//! ever changes, the first time pop3d shows such a base name it notes in
//! `pop3d-uidl-cutoff` which UIDs Dovecot had handed out so far: from then
//! on only messages Dovecot numbered before that get the template's UIDL,
//! and mail numbered later (by a Dovecot still serving IMAP, say) keeps the
//! base name pop3d showed. Until then every record of the list is used, so
//! mail Dovecot numbers while both servers run keeps Dovecot's UIDL.
//!
//! # dovecot-uidlist
//! Version 3 (Dovecot 1.0 and later): a header `3 V<uidvalidity>
//! N<nextuid> G<guid>` (fields in any order; Dovecot appends records
//! without rewriting it, so `N` may be stale), then one line per message,
//! `<uid> [<ext>...] :<file name>`, where each extension is a letter and a
//! value (`W<vsize>`, `S<size>`, `G<guid>`, `P<pop3 uidl>`, ...). Version 1:
//! a header `1 <uidvalidity> <nextuid>`, then `<uid> <file name>`. A `P`
//! extension (a UIDL Dovecot saved, e.g. from a migration) is used as the
//! message's UIDL, as Dovecot does.

use crate::io_failure;
use pop3d_plugin_api::{log_warn, Error};
use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

/// The file Dovecot keeps IMAP UIDs in, inside the maildir.
pub(crate) const DOVECOT_UIDLIST_NAME: &str = "dovecot-uidlist";
/// Where pop3d notes which Dovecot UIDs existed when it first served the
/// maildir.
pub(crate) const CUTOFF_FILE_NAME: &str = "pop3d-uidl-cutoff";
/// First line of the cutoff file; another first line is not ours.
const CUTOFF_HEADER: &str = "pop3d-uidl-cutoff 1";

/// Why a `uidl_format` was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UidlFormatError {
    /// The format is empty.
    Empty,
    /// `%` followed by something that is not a supported variable.
    UnknownVariable {
        /// The format as written.
        format: String,
        /// What followed the `%` (and its modifiers).
        variable: String,
    },
    /// The format ends in the middle of a `%` sequence.
    Unterminated(String),
    /// Nothing in the format differs between messages (no `%f`, `%u` or
    /// `%g`), so every message would get the same UIDL.
    NotPerMessage(String),
}

impl fmt::Display for UidlFormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UidlFormatError::Empty => write!(
                f,
                "uidl_format is empty; leave it out for \"%f\" (the file's base name)"
            ),
            UidlFormatError::UnknownVariable { format, variable } => write!(
                f,
                "uidl_format {format:?}: unsupported variable %{variable}; supported are %f \
                 (base file name), %u (IMAP UID), %v (UIDVALIDITY), %g (GUID) and %%, with an \
                 optional width (%08u) and the modifiers X (hex), L and U (case); Dovecot's %m \
                 (header MD5) is not supported"
            ),
            UidlFormatError::Unterminated(format) => write!(
                f,
                "uidl_format {format:?} ends inside a % variable; write %% for a literal %"
            ),
            UidlFormatError::NotPerMessage(format) => write!(
                f,
                "uidl_format {format:?} would give every message the same UIDL; it needs %f, \
                 %u or %g"
            ),
        }
    }
}

impl std::error::Error for UidlFormatError {}

/// A variable of the format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variable {
    /// `%f`: the base file name.
    FileName,
    /// `%u`: the IMAP UID from `dovecot-uidlist`.
    Uid,
    /// `%v`: the UIDVALIDITY from `dovecot-uidlist`.
    UidValidity,
    /// `%g`: the message's GUID (`G` extension), else its base name, as
    /// Dovecot's maildir does.
    Guid,
}

/// How a variable's text is changed before it is inserted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    /// As it is.
    Keep,
    /// `L`: lower case.
    Lower,
    /// `U`: upper case.
    Upper,
}

/// One part of a parsed format.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    /// Text copied as is.
    Literal(String),
    /// A variable and what Dovecot's syntax says to do with it.
    Variable {
        /// Which value.
        variable: Variable,
        /// `X`: a decimal number written in lower-case hex.
        hex: bool,
        /// `L` or `U`.
        case: Case,
        /// The width: with `zero_pad` the minimum (padded with `0`),
        /// without it the maximum (the value is cut), as in Dovecot.
        width: Option<usize>,
        /// Whether the width was written with a leading `0`.
        zero_pad: bool,
    },
}

/// A parsed `uidl_format`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UidlFormat {
    /// The format split into text and variables.
    parts: Vec<Part>,
}

/// The values one message's UIDL is made of.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UidlValues<'a> {
    /// The base file name.
    pub(crate) base: &'a [u8],
    /// The UID and UIDVALIDITY Dovecot gave the message, if it did.
    pub(crate) dovecot: Option<(u32, u32)>,
    /// The message's GUID, when Dovecot recorded one.
    pub(crate) guid: Option<&'a str>,
}

impl UidlFormat {
    /// Parses a format such as `%f` or `%08Xu%08Xv`.
    pub fn parse(format: &str) -> Result<UidlFormat, UidlFormatError> {
        if format.is_empty() {
            return Err(UidlFormatError::Empty);
        }
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = format.chars().peekable();
        while let Some(c) = chars.next() {
            if c != '%' {
                literal.push(c);
                continue;
            }
            if chars.peek() == Some(&'%') {
                chars.next();
                literal.push('%');
                continue;
            }
            let zero_pad = chars.peek() == Some(&'0');
            let mut digits = String::new();
            while let Some(&d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                digits.push(d);
                chars.next();
            }
            let width = digits.parse::<usize>().ok().filter(|&w| w > 0);
            let (mut hex, mut case) = (false, Case::Keep);
            let variable = loop {
                let Some(next) = chars.next() else {
                    return Err(UidlFormatError::Unterminated(format.to_owned()));
                };
                match next {
                    'X' => hex = true,
                    'L' => case = Case::Lower,
                    'U' => case = Case::Upper,
                    '{' => {
                        let mut name = String::new();
                        loop {
                            match chars.next() {
                                Some('}') => break,
                                Some(c) => name.push(c),
                                None => {
                                    return Err(UidlFormatError::Unterminated(format.to_owned()))
                                }
                            }
                        }
                        break match name.as_str() {
                            "filename" => Variable::FileName,
                            "uid" => Variable::Uid,
                            "uidvalidity" => Variable::UidValidity,
                            "guid" => Variable::Guid,
                            _ => {
                                return Err(UidlFormatError::UnknownVariable {
                                    format: format.to_owned(),
                                    variable: format!("{{{name}}}"),
                                })
                            }
                        };
                    }
                    'f' => break Variable::FileName,
                    'u' => break Variable::Uid,
                    'v' => break Variable::UidValidity,
                    'g' => break Variable::Guid,
                    other => {
                        return Err(UidlFormatError::UnknownVariable {
                            format: format.to_owned(),
                            variable: other.to_string(),
                        })
                    }
                }
            };
            if !literal.is_empty() {
                parts.push(Part::Literal(std::mem::take(&mut literal)));
            }
            parts.push(Part::Variable {
                variable,
                hex,
                case,
                width,
                zero_pad,
            });
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        let per_message = parts.iter().any(|part| {
            matches!(
                part,
                Part::Variable {
                    variable: Variable::FileName | Variable::Uid | Variable::Guid,
                    ..
                }
            )
        });
        if !per_message {
            return Err(UidlFormatError::NotPerMessage(format.to_owned()));
        }
        Ok(UidlFormat { parts })
    }

    /// Whether the format is exactly `%f`: UIDLs are base names, and no
    /// Dovecot file is read.
    pub(crate) fn is_base_name(&self) -> bool {
        matches!(
            self.parts.as_slice(),
            [Part::Variable {
                variable: Variable::FileName,
                hex: false,
                case: Case::Keep,
                width: None,
                ..
            }]
        )
    }

    /// Whether the format needs values from `dovecot-uidlist`.
    pub(crate) fn needs_uidlist(&self) -> bool {
        self.parts.iter().any(|part| {
            matches!(
                part,
                Part::Variable {
                    variable: Variable::Uid | Variable::UidValidity | Variable::Guid,
                    ..
                }
            )
        })
    }

    /// The UIDL of a message: the template filled in when Dovecot numbered
    /// the message, else its base name (a format using `%u` or `%v` has
    /// nothing to put there).
    pub(crate) fn expand(&self, values: &UidlValues<'_>) -> Vec<u8> {
        let needs_uid = self.parts.iter().any(|part| {
            matches!(
                part,
                Part::Variable {
                    variable: Variable::Uid | Variable::UidValidity,
                    ..
                }
            )
        });
        if needs_uid && values.dovecot.is_none() {
            return values.base.to_vec();
        }
        let mut out = Vec::new();
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.extend_from_slice(text.as_bytes()),
                Part::Variable {
                    variable,
                    hex,
                    case,
                    width,
                    zero_pad,
                } => {
                    let raw: Vec<u8> = match variable {
                        Variable::FileName => values.base.to_vec(),
                        Variable::Uid => number(values.dovecot.map_or(0, |(uid, _)| uid), *hex),
                        Variable::UidValidity => {
                            number(values.dovecot.map_or(0, |(_, validity)| validity), *hex)
                        }
                        Variable::Guid => match values.guid {
                            Some(guid) => guid.as_bytes().to_vec(),
                            None => values.base.to_vec(),
                        },
                    };
                    let mut text = match case {
                        Case::Keep => raw,
                        Case::Lower => raw.to_ascii_lowercase(),
                        Case::Upper => raw.to_ascii_uppercase(),
                    };
                    match (width, zero_pad) {
                        (Some(width), true) if text.len() < *width => {
                            out.extend(std::iter::repeat_n(b'0', width - text.len()));
                        }
                        (Some(width), false) => text.truncate(*width),
                        _ => {}
                    }
                    out.extend_from_slice(&text);
                }
            }
        }
        out
    }
}

/// `value` in decimal, or in lower-case hex for `X` (Dovecot's `%x`
/// printing of the number).
fn number(value: u32, hex: bool) -> Vec<u8> {
    if hex {
        format!("{value:x}").into_bytes()
    } else {
        value.to_string().into_bytes()
    }
}

/// What pop3d uses of one `dovecot-uidlist` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UidlistRecord {
    /// The IMAP UID.
    pub(crate) uid: u32,
    /// The `G` extension: the message's GUID.
    pub(crate) guid: Option<String>,
    /// The `P` extension: a POP3 UIDL Dovecot saved for the message.
    pub(crate) pop3_uidl: Option<String>,
}

/// A `dovecot-uidlist`, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DovecotUidlist {
    /// The mailbox's UIDVALIDITY.
    pub(crate) uid_validity: u32,
    /// The UID Dovecot gives the next message it sees.
    pub(crate) next_uid: u32,
    /// The messages, by base file name.
    pub(crate) records: HashMap<Vec<u8>, UidlistRecord>,
}

impl DovecotUidlist {
    /// Reads `<maildir>/dovecot-uidlist`; `Ok(None)` when there is none. A
    /// file pop3d cannot understand is logged and treated as absent, so the
    /// messages get their base names rather than the user no mail.
    pub(crate) fn read(maildir: &Path) -> Result<Option<DovecotUidlist>, Error> {
        let path = maildir.join(DOVECOT_UIDLIST_NAME);
        let text = match fs::read(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(io_failure(&format!("cannot read {}", path.display()), &err)),
        };
        match parse_uidlist(&text) {
            Ok(list) => Ok(Some(list)),
            Err(why) => {
                log_warn!(
                    "maildir: ignoring {}: {why}; messages get their base file names as UIDLs",
                    path.display()
                );
                Ok(None)
            }
        }
    }
}

/// Parses the text of a `dovecot-uidlist`, version 1 or 3.
fn parse_uidlist(text: &[u8]) -> Result<DovecotUidlist, String> {
    let mut lines = text.split(|&b| b == b'\n');
    let header = lines.next().unwrap_or_default();
    let header = std::str::from_utf8(header).map_err(|_| "the header is not UTF-8".to_owned())?;
    let mut fields = header.split(' ');
    let version = fields.next().unwrap_or_default();
    let (uid_validity, next_uid) = match version {
        "1" => {
            let validity = fields.next().and_then(|f| f.parse().ok());
            let next = fields.next().and_then(|f| f.parse().ok());
            match (validity, next) {
                (Some(v), Some(n)) => (v, n),
                _ => return Err(format!("bad version 1 header {header:?}")),
            }
        }
        "3" => {
            let (mut validity, mut next) = (None, None);
            for field in fields {
                match field.split_at_checked(1) {
                    Some(("V", value)) => validity = value.parse().ok(),
                    Some(("N", value)) => next = value.parse().ok(),
                    _ => {}
                }
            }
            match (validity, next) {
                (Some(v), Some(n)) => (v, n),
                _ => {
                    return Err(format!(
                        "header {header:?} lacks V<uidvalidity> or N<nextuid>"
                    ))
                }
            }
        }
        other => {
            return Err(format!(
                "version {other:?} is not one pop3d reads (1 and 3 are)"
            ))
        }
    };
    let mut records = HashMap::new();
    for (number, line) in lines.enumerate() {
        if line.is_empty() {
            continue;
        }
        let line_number = number + 2;
        let (uid, rest) = match line.iter().position(|&b| b == b' ') {
            Some(space) => (&line[..space], &line[space + 1..]),
            None => return Err(format!("line {line_number} has no file name")),
        };
        let uid: u32 = std::str::from_utf8(uid)
            .ok()
            .and_then(|uid| uid.parse().ok())
            .ok_or_else(|| format!("line {line_number} does not start with a UID"))?;
        let mut record = UidlistRecord {
            uid,
            guid: None,
            pop3_uidl: None,
        };
        let name = if version == "1" {
            rest
        } else {
            // Extensions up to " :", then the file name. The name is
            // everything after the first ':' that starts a field.
            let Some(colon) = find_name_start(rest) else {
                return Err(format!("line {line_number} has no `:<file name>`"));
            };
            let extensions = std::str::from_utf8(&rest[..colon]).unwrap_or_default();
            for extension in extensions.split(' ') {
                match extension.split_at_checked(1) {
                    Some(("G", value)) if !value.is_empty() => record.guid = Some(value.to_owned()),
                    Some(("P", value)) if !value.is_empty() => {
                        record.pop3_uidl = Some(value.to_owned())
                    }
                    _ => {}
                }
            }
            &rest[colon + 1..]
        };
        let base = crate::snapshot::base_name(name).to_vec();
        records.insert(base, record);
    }
    // Dovecot appends records without rewriting the header, so its N can
    // be behind the UIDs listed below it.
    let listed_next = records.values().map(|r| r.uid.saturating_add(1)).max();
    Ok(DovecotUidlist {
        uid_validity,
        next_uid: listed_next.map_or(next_uid, |listed| listed.max(next_uid)),
        records,
    })
}

/// Where the `:` that starts the file name is: at the start of `rest` or
/// after a space.
fn find_name_start(rest: &[u8]) -> Option<usize> {
    if rest.first() == Some(&b':') {
        return Some(0);
    }
    rest.windows(2)
        .position(|pair| pair == b" :")
        .map(|space| space + 1)
}

/// The Dovecot UIDs pop3d may use: those Dovecot had handed out, under
/// this UIDVALIDITY, when pop3d first showed a base name for a message
/// Dovecot had not numbered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cutoff {
    /// The UIDVALIDITY the UIDs belong to.
    pub(crate) uid_validity: u32,
    /// UIDs below this were Dovecot's before pop3d served the maildir.
    pub(crate) next_uid: u32,
}

impl Cutoff {
    /// Reads the cutoff file; `None` when there is none (or it is not
    /// ours, which is logged).
    pub(crate) fn read(maildir: &Path) -> Option<Cutoff> {
        let path = maildir.join(CUTOFF_FILE_NAME);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) => {
                if err.kind() != io::ErrorKind::NotFound {
                    log_warn!("maildir: cannot read {}: {err}", path.display());
                }
                return None;
            }
        };
        let mut lines = text.lines();
        let parsed = (|| {
            if lines.next()? != CUTOFF_HEADER {
                return None;
            }
            let (validity, next) = lines.next()?.split_once(' ')?;
            Some(Cutoff {
                uid_validity: validity.strip_prefix('V')?.parse().ok()?,
                next_uid: next.strip_prefix('N')?.parse().ok()?,
            })
        })();
        if parsed.is_none() {
            log_warn!(
                "maildir: ignoring {}: not a pop3d cutoff file; remove it if it is not needed",
                path.display()
            );
        }
        parsed
    }

    /// Writes the cutoff file (to a temporary name, then renamed). A
    /// failure is returned: without the file, a UIDL could change later.
    pub(crate) fn write(&self, maildir: &Path) -> Result<(), Error> {
        let final_path = maildir.join(CUTOFF_FILE_NAME);
        let temporary_path = maildir.join(format!("{CUTOFF_FILE_NAME}.tmp"));
        let text = format!(
            "{CUTOFF_HEADER}\nV{} N{}\n",
            self.uid_validity, self.next_uid
        );
        let written = File::create(&temporary_path)
            .and_then(|mut file| {
                file.write_all(text.as_bytes())?;
                file.sync_all()
            })
            .and_then(|()| fs::rename(&temporary_path, &final_path));
        written.map_err(|err| {
            let _ = fs::remove_file(&temporary_path);
            io_failure(&format!("cannot write {}", final_path.display()), &err)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(format: &str, base: &str, dovecot: Option<(u32, u32)>) -> String {
        let format = UidlFormat::parse(format).unwrap();
        String::from_utf8(format.expand(&UidlValues {
            base: base.as_bytes(),
            dovecot,
            guid: None,
        }))
        .unwrap()
    }

    #[test]
    fn formats_expand_like_dovecot() {
        let ids = Some((26, 1_700_000_000));
        assert_eq!(expand("%08Xu%08Xv", "1.a", ids), "0000001a6553f100");
        assert_eq!(expand("%u.%v", "1.a", ids), "26.1700000000");
        assert_eq!(expand("%Xu", "1.a", ids), "1a");
        assert_eq!(expand("%UXu", "1.a", ids), "1A");
        assert_eq!(expand("%{uid}-%{filename}", "1.a", ids), "26-1.a");
        assert_eq!(expand("%3f", "1700.M1", ids), "170");
        assert_eq!(expand("%08f", "1.a", ids), "000001.a");
        assert_eq!(expand("%f", "1.a", None), "1.a");
        assert_eq!(expand("x%%%f", "1.a", None), "x%1.a");
        // Not numbered by Dovecot: the base name.
        assert_eq!(expand("%08Xu%08Xv", "1.a", None), "1.a");
        assert!(UidlFormat::parse("%f").unwrap().is_base_name());
        assert!(!UidlFormat::parse("%f").unwrap().needs_uidlist());
        assert!(UidlFormat::parse("%08Xu%08Xv").unwrap().needs_uidlist());
    }

    #[test]
    fn bad_formats_are_refused() {
        assert_eq!(UidlFormat::parse(""), Err(UidlFormatError::Empty));
        assert!(matches!(
            UidlFormat::parse("%m"),
            Err(UidlFormatError::UnknownVariable { .. })
        ));
        assert!(matches!(
            UidlFormat::parse("%{md5}"),
            Err(UidlFormatError::UnknownVariable { .. })
        ));
        assert!(matches!(
            UidlFormat::parse("%08X"),
            Err(UidlFormatError::Unterminated(_))
        ));
        assert!(matches!(
            UidlFormat::parse("%v"),
            Err(UidlFormatError::NotPerMessage(_))
        ));
        let message = UidlFormat::parse("%m").unwrap_err().to_string();
        assert!(
            message.contains("%m (header MD5) is not supported"),
            "{message}"
        );
    }

    #[test]
    fn uidlists_of_version_3_and_1_are_read() {
        let v3 = b"3 V1700000000 N4 G0123abcd\n\
                   1 W120 S118 :1700000001.M1P1.host,S=118,W=120\n\
                   2 G99ff P0000beef :1700000002.M2P1.host:2,S\n\
                   3 :no-extensions\n";
        let list = parse_uidlist(v3).unwrap();
        assert_eq!((list.uid_validity, list.next_uid), (1_700_000_000, 4));
        assert_eq!(list.records.len(), 3);
        assert_eq!(
            list.records[&b"1700000001.M1P1.host,S=118,W=120"[..]].uid,
            1
        );
        let second = &list.records[&b"1700000002.M2P1.host"[..]];
        assert_eq!(second.uid, 2);
        assert_eq!(second.guid.as_deref(), Some("99ff"));
        assert_eq!(second.pop3_uidl.as_deref(), Some("0000beef"));
        assert_eq!(list.records[&b"no-extensions"[..]].uid, 3);
        // A stale header N (Dovecot appends without rewriting it).
        let stale = parse_uidlist(b"3 V9 N1 G0\n1 :1.a\n2 :2.b\n").unwrap();
        assert_eq!(stale.next_uid, 3);

        let v1 = b"1 1234 3\n1 1.a:2,S\n2 2.b\n";
        let list = parse_uidlist(v1).unwrap();
        assert_eq!((list.uid_validity, list.next_uid), (1234, 3));
        assert_eq!(list.records[&b"1.a"[..]].uid, 1);
        assert_eq!(list.records[&b"2.b"[..]].uid, 2);

        assert!(parse_uidlist(b"2 1 2\n").is_err());
        assert!(parse_uidlist(b"3 N4\n").is_err());
        assert!(parse_uidlist(b"3 V1 N2\nx :name\n").is_err());
        assert!(parse_uidlist(b"3 V1 N2\n1 W12\n").is_err());
    }
}
