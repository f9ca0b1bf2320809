//! Unique ids (UIDLs) for mbox messages, which have no id of their own.
//!
//! A message's UIDL is, in order of preference:
//!
//! 1. its `X-UIDL:` header, when the config honours it and the value is
//!    usable: 1 to 70 bytes of 0x21..=0x7E on one line, the first such
//!    header of the message, not already taken by an earlier message, and
//!    not of the form generated below (so a header can never steal a
//!    generated id);
//! 2. otherwise popa3d's id, so that users moving from popa3d keep their
//!    ids and clients do not download everything again;
//! 3. when an earlier message already has that id (popa3d itself would
//!    list the same id twice), the id with `-2`, `-3`, ... appended: the
//!    smallest suffix not yet taken.
//!
//! # popa3d's algorithm (1.0.3), reconstructed by experiment
//! popa3d's source was not at hand; running Debian's popa3d on crafted
//! mailboxes showed that its UIDL is MD5 over the raw bytes (line ends
//! included) of some header lines, in file order, printed as the first two
//! 32-bit words of the MD5 state in hex (`%08x%08x`, bytes 3,2,1,0,7,6,5,4
//! of the digest). The header section ends at the first line that is just
//! `\n`. Selected lines, names matched case-insensitively with the colon
//! right after the name:
//! - the first `Received:` header (later ones never);
//! - `Date:` and `Message-ID:`, but only before the first `Received:`;
//! - every `Delivered-To:` and `X-Delivery-ID:`;
//! - continuation lines (starting with space or tab) of a selected header.
//!
//! The `From ` line, the body, `Subject:`, `From:`, `Status:` and
//! `X-UIDL:` are not used. So `honour_x_uidl: false` reproduces popa3d's
//! list (checked against its real answer in `tests/popa3d.rs`), and two
//! copies of a message delivered without a `Received:` header get the same
//! popa3d id, which popa3d lists twice and rule 3 tells apart here.
//! popa3d ends the header section only at a bare `\n`; this store also ends
//! it at `\r\n`, so ids of CRLF files (which popa3d misreads anyway) differ.
//!
//! # Stability
//! Rules 1 and 2 depend only on the message itself, so an id survives the
//! deletion of other messages. Rule 3 depends on order: if the first of two
//! messages with the same popa3d id is deleted by another program, the
//! second one's id changes from `…-2` to `…` the next time the file is
//! indexed from scratch. This store avoids that for its own deletions by
//! carrying every id over in its index when it rewrites the file (see
//! [`crate::index`]); only a lost index or a rewrite by another program
//! re-derives ids. The same holds for a duplicated `X-UIDL:` value. And
//! once `…-2` is deleted, a later copy of the same message may get `…-2`
//! again: an id is reused only for a message whose popa3d-selected headers
//! (first `Received:` line included) are identical, in practice a copy of
//! the same delivery.

use std::collections::{HashMap, HashSet};

/// The longest UIDL RFC 1939 allows.
pub const MAX_UIDL_LEN: usize = 70;

/// Whether `uid` may be sent as a UIDL: 1 to 70 bytes of 0x21..=0x7E.
pub fn is_valid_uidl(uid: &str) -> bool {
    (1..=MAX_UIDL_LEN).contains(&uid.len()) && uid.bytes().all(|b| (0x21..=0x7E).contains(&b))
}

/// Whether `uid` looks like an id this module generates (16 lowercase hex
/// digits, optionally `-` and a number).
fn is_generated_form(uid: &str) -> bool {
    let (digest, suffix) = match uid.split_once('-') {
        Some((digest, suffix)) => (digest, Some(suffix)),
        None => (uid, None),
    };
    let digest_form = digest.len() == 16
        && digest
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let suffix_form = suffix.is_none_or(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()));
    digest_form && suffix_form
}

/// Whether `line` (its first bytes) starts with header `name` (lowercase,
/// colon included), compared case-insensitively.
fn starts_with_header(line: &[u8], name: &[u8]) -> bool {
    line.len() >= name.len() && line[..name.len()].eq_ignore_ascii_case(name)
}

/// A continuation line of a folded header.
fn is_continuation(line: &[u8]) -> bool {
    matches!(line.first(), Some(b' ') | Some(b'\t'))
}

/// popa3d's digest, fed the header section line by line.
#[derive(Clone)]
pub struct Popa3dDigest {
    /// MD5 over the selected lines so far.
    md5: md5::Context,
    /// A `Received:` header was seen: no more `Received:`, `Date:`,
    /// `Message-ID:`.
    received_seen: bool,
    /// The current line (and its continuations) goes into the digest.
    selected: bool,
}

impl std::fmt::Debug for Popa3dDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Popa3dDigest")
            .field("received_seen", &self.received_seen)
            .field("selected", &self.selected)
            .finish_non_exhaustive()
    }
}

impl Default for Popa3dDigest {
    fn default() -> Popa3dDigest {
        Popa3dDigest {
            md5: md5::Context::new(),
            received_seen: false,
            selected: false,
        }
    }
}

impl Popa3dDigest {
    pub fn new() -> Popa3dDigest {
        Popa3dDigest::default()
    }

    /// A header line begins; `prefix` is at least its first 256 bytes (or
    /// all of it). Its bytes follow through [`Popa3dDigest::header_bytes`].
    pub fn header_line_starts(&mut self, prefix: &[u8]) {
        if is_continuation(prefix) {
            return;
        }
        self.selected = if starts_with_header(prefix, b"received:") {
            let first = !self.received_seen;
            self.received_seen = true;
            first
        } else if starts_with_header(prefix, b"date:") || starts_with_header(prefix, b"message-id:")
        {
            !self.received_seen
        } else {
            starts_with_header(prefix, b"delivered-to:")
                || starts_with_header(prefix, b"x-delivery-id:")
        };
    }

    /// Bytes of the current header line.
    pub fn header_bytes(&mut self, bytes: &[u8]) {
        if self.selected {
            self.md5.consume(bytes);
        }
    }

    /// The id, as popa3d prints it.
    pub fn finish(self) -> String {
        let digest = self.md5.finalize().0;
        let word = |at: usize| {
            u32::from_le_bytes([digest[at], digest[at + 1], digest[at + 2], digest[at + 3]])
        };
        format!("{:08x}{:08x}", word(0), word(4))
    }
}

/// The `X-UIDL:` header of a message, as its header lines go by.
#[derive(Debug, Clone, Default)]
pub struct XUidlState {
    /// The value of the first `X-UIDL:` header, if valid so far.
    value: Option<String>,
    /// The first `X-UIDL:` header was seen (later ones are ignored).
    seen: bool,
    /// The previous header line was that `X-UIDL:` header, so a
    /// continuation line would fold it (which makes it unusable).
    in_header: bool,
}

impl XUidlState {
    /// A header line begins. `complete` when `prefix` is the whole line.
    pub fn header_line(&mut self, prefix: &[u8], complete: bool) {
        if is_continuation(prefix) {
            if self.in_header {
                self.value = None;
            }
            return;
        }
        self.in_header = false;
        if self.seen || !starts_with_header(prefix, b"x-uidl:") {
            return;
        }
        self.seen = true;
        self.in_header = true;
        if !complete {
            return;
        }
        let value = prefix[b"x-uidl:".len()..].trim_ascii();
        if let Ok(value) = std::str::from_utf8(value) {
            if is_valid_uidl(value) {
                self.value = Some(value.to_owned());
            }
        }
    }

    /// The usable value, if any.
    pub fn finish(self) -> Option<String> {
        self.value
    }
}

/// Hands out ids, unique within one maildrop.
///
/// It remembers 64-bit hashes of the ids it has seen rather than the ids:
/// a hash collision can only make it skip a free id (and pick the next
/// suffix), never hand out a taken one, and 100,000 messages cost 100,000
/// small numbers instead of as many strings.
#[derive(Debug, Default)]
pub struct UidAllocator {
    /// Hashes of the ids already given to messages of this maildrop.
    taken: HashSet<u64>,
    /// For each popa3d id that had to get a suffix (by hash), the next
    /// suffix to try: every smaller one is taken, and `taken` only grows,
    /// so starting there still finds the smallest free one. Without it, n
    /// messages with one popa3d id (no `Received:`, `Date:` or
    /// `Message-ID:` headers, say) cost n²/2 tries.
    next_suffix: HashMap<u64, u64>,
}

/// A fixed-key hash, so the same id always gives the same number.
fn id_hash(uid: &str) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    std::hash::Hasher::write(&mut hasher, uid.as_bytes());
    std::hash::Hasher::finish(&hasher)
}

impl UidAllocator {
    pub fn new() -> UidAllocator {
        UidAllocator::default()
    }

    /// Records an id carried over from the index; false if already seen.
    pub fn reserve(&mut self, uid: &str) -> bool {
        self.taken.insert(id_hash(uid))
    }

    /// The id of the next message in file order.
    pub fn assign(&mut self, x_uidl: Option<&str>, popa3d: &str) -> String {
        if let Some(header) = x_uidl {
            if !is_generated_form(header) && self.taken.insert(id_hash(header)) {
                return header.to_owned();
            }
        }
        if self.taken.insert(id_hash(popa3d)) {
            return popa3d.to_owned();
        }
        let next = self.next_suffix.entry(id_hash(popa3d)).or_insert(2);
        loop {
            let candidate = format!("{popa3d}-{next}");
            *next += 1;
            if self.taken.insert(id_hash(&candidate)) {
                return candidate;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The popa3d id of a header section given as lines.
    fn popa3d(lines: &[&str]) -> String {
        let mut digest = Popa3dDigest::new();
        for line in lines {
            let line = format!("{line}\n");
            digest.header_line_starts(line.as_bytes());
            digest.header_bytes(line.as_bytes());
        }
        digest.finish()
    }

    /// Ids printed by Debian's popa3d 1.0.3 for messages with these
    /// header lines (plus `From:` and `Subject:`, which it ignores).
    #[test]
    fn matches_ids_seen_from_popa3d() {
        let cases: &[(&[&str], &str)] = &[
            (&["From: a@x", "Subject: s"], "d98c1dd404b2008f"),
            (&["Date: X"], "c7eaac4d3400c62f"),
            (&["date: X"], "23596018b8e1842b"),
            (&["Date: X", "Message-ID: X"], "510634cb2ff7c171"),
            (&["Message-ID: X", "Date: X"], "454f506ff4b7e8b4"),
            (&["Date: X", " cont"], "1d30fff0d8065352"),
            (&["Received: X", "Received: Y"], "4bece0a8f15ca265"),
            (
                &["Received: A", "Date: X", "Received: B"],
                "b52c75d97cbd0aec",
            ),
            (
                &["Delivered-To: a", "Received: A", "Delivered-To: b"],
                "0a8ca1e0a55f15cd",
            ),
            (
                &[
                    "Message-ID: m",
                    "Received: A",
                    "Date: d",
                    "X-Delivery-ID: x",
                ],
                "f021f60acd09b9f8",
            ),
            (&["Received: A", " Received: B"], "acc8e3e02d1082d5"),
            (&["Subject: X", " cont"], "d98c1dd404b2008f"),
            (
                &["X-UIDL: abc", "Status: RO", "Return-Path: <a@x>"],
                "d98c1dd404b2008f",
            ),
            (&["Date : X"], "d98c1dd404b2008f"),
        ];
        for (lines, expected) in cases {
            assert_eq!(popa3d(lines), *expected, "{lines:?}");
        }
    }

    #[test]
    fn x_uidl_rules() {
        let value = |lines: &[&str]| {
            let mut state = XUidlState::default();
            for line in lines {
                state.header_line(line.as_bytes(), true);
            }
            state.finish()
        };
        assert_eq!(value(&["X-UIDL: abc\n"]), Some("abc".into()));
        assert_eq!(value(&["x-uidl:\tabc \r\n"]), Some("abc".into()));
        assert_eq!(value(&["X-UIDL: a b\n"]), None);
        assert_eq!(value(&["X-UIDL: \n"]), None);
        assert_eq!(value(&["X-UIDL: abc\n", " def\n"]), None);
        assert_eq!(
            value(&["X-UIDL: abc\n", "Subject: x\n", " def\n"]),
            Some("abc".into())
        );
        assert_eq!(
            value(&["X-UIDL: abc\n", "X-UIDL: def\n"]),
            Some("abc".into())
        );
        let long = format!("X-UIDL: {}\n", "a".repeat(71));
        assert_eq!(value(&[&long]), None);
        let longest = format!("X-UIDL: {}\n", "a".repeat(70));
        assert_eq!(value(&[&longest]), Some("a".repeat(70)));
        assert_eq!(value(&["X-UIDL: caf\u{e9}\n"]), None);
    }

    #[test]
    fn many_messages_with_one_digest_get_the_smallest_free_suffixes() {
        let mut ids = UidAllocator::new();
        assert!(ids.reserve("00000000000000aa-4"));
        let given: Vec<String> = (0..20_000)
            .map(|_| ids.assign(None, "00000000000000aa"))
            .collect();
        assert_eq!(given[0], "00000000000000aa");
        assert_eq!(given[1], "00000000000000aa-2");
        assert_eq!(given[2], "00000000000000aa-3");
        // -4 was carried over from the index.
        assert_eq!(given[3], "00000000000000aa-5");
        assert_eq!(given[19_999], "00000000000000aa-20001");
    }

    #[test]
    fn allocator_keeps_ids_unique() {
        let mut ids = UidAllocator::new();
        assert_eq!(ids.assign(None, "0123456789abcdef"), "0123456789abcdef");
        assert_eq!(ids.assign(None, "0123456789abcdef"), "0123456789abcdef-2");
        assert_eq!(ids.assign(Some("mine"), "0123456789abcdef"), "mine");
        // A duplicate header falls back to the digest.
        assert_eq!(
            ids.assign(Some("mine"), "fedcba9876543210"),
            "fedcba9876543210"
        );
        // A header in the generated form is not trusted.
        assert_eq!(
            ids.assign(Some("0123456789abcdef-3"), "1111111111111111"),
            "1111111111111111"
        );
        assert_eq!(ids.assign(None, "0123456789abcdef"), "0123456789abcdef-3");
        assert!(!ids.reserve("mine"));
    }

    #[test]
    fn generated_form() {
        assert!(is_generated_form("0123456789abcdef"));
        assert!(is_generated_form("0123456789abcdef-12"));
        assert!(!is_generated_form("0123456789ABCDEF"));
        assert!(!is_generated_form("0123456789abcdef-"));
        assert!(!is_generated_form("0123456789abcde"));
        assert!(!is_generated_form("0123456789abcdef-x"));
    }
}
