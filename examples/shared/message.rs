//! Deterministic synthetic mail messages for benchmarks.
//!
//! `mkfixture` writes these to maildirs and `null_pop3` serves them from
//! memory, so both produce the same bytes for the same seed, user and message
//! number. A message is LF-only (as maildir files are), has realistic
//! headers, and its body deliberately contains lines that a POP3 server must
//! dot-stuff: lines starting with '.', a line that is a lone ".", and a line
//! "..". Without them a server that forgets dot-stuffing would pass every
//! benchmark.
//!
//! Shared between examples with `#[path]` because examples cannot depend on
//! each other and this is test-data code, not part of the pop3d library.

// Each example uses a different subset of these helpers.
#![allow(dead_code)]

/// The smallest message size we can generate: the headers of the longest
/// variant plus a blank line and a short body.
pub const MIN_SIZE: usize = 1024;

/// splitmix64: tiny, good enough for test data, and identical on every
/// platform, which is what makes fixtures reproducible from a seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// A generator for one message, so a message's bytes depend only on
    /// (seed, user, message) and not on the order messages are generated in.
    pub fn for_message(seed: u64, user: u64, message: u64) -> Rng {
        let mut mix = Rng(seed ^ user.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let a = mix.next_u64();
        Rng(a ^ message.wrapping_mul(0xD1B5_4A32_D192_ED03))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `0..n` (n > 0); the modulo bias is irrelevant for test data.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

const WORDS: &[&str] = &[
    "the",
    "server",
    "mail",
    "message",
    "delivery",
    "queue",
    "report",
    "meeting",
    "budget",
    "invoice",
    "attached",
    "please",
    "review",
    "tomorrow",
    "thanks",
    "regards",
    "project",
    "update",
    "schedule",
    "customer",
    "order",
    "shipping",
    "account",
    "password",
    "reset",
    "network",
    "latency",
    "benchmark",
    "throughput",
    "quarterly",
    "results",
    "draft",
    "final",
    "version",
    "question",
    "answer",
    "about",
    "with",
    "from",
    "into",
    "over",
    "under",
    "and",
    "or",
    "but",
    "not",
    "yes",
    "no",
    "maybe",
    "soon",
    "later",
    "today",
    "a",
    "an",
    "of",
    "to",
    "in",
    "on",
    "for",
    "is",
    "are",
    "was",
    "were",
    "be",
    "been",
    "this",
    "that",
    "these",
];

const FIRST: &[&str] = &[
    "Alice", "Bob", "Carol", "Dave", "Erin", "Frank", "Grace", "Heidi",
];
const LAST: &[&str] = &[
    "Martin", "Dupont", "Schmidt", "Rossi", "Garcia", "Novak", "Silva",
];
const DOMAINS: &[&str] = &[
    "example.com",
    "example.org",
    "example.net",
    "mail.example.com",
];
const SUBJECTS: &[&str] = &[
    "Quarterly report",
    "Re: meeting tomorrow",
    "Invoice attached",
    "Fwd: shipping update",
    "Your order has shipped",
    "Re: Re: budget question",
    "Weekly status",
];

/// Lines a server must dot-stuff. A lone "." in particular would end the
/// reply early if it were sent unstuffed.
const DOT_LINES: &[&str] = &[
    ".",
    "..",
    ".hidden line",
    "...and so on",
    ". starts with a dot",
];

const DAYS: &[&str] = &["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const MONTHS: &[&str] = &[
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// The headers of one message, each line ending in LF, with the blank line
/// that ends the header block.
fn headers(rng: &mut Rng, user: &str, message: u64) -> String {
    let from_first = rng.pick(FIRST);
    let from_last = rng.pick(LAST);
    let from_domain = rng.pick(DOMAINS);
    let day = rng.pick(DAYS);
    let month = rng.pick(MONTHS);
    let date = format!(
        "{day}, {:02} {month} 2026 {:02}:{:02}:{:02} +0000",
        1 + rng.below(28),
        rng.below(24),
        rng.below(60),
        rng.below(60)
    );
    let id = rng.next_u64();
    let relay = 1 + rng.below(9);
    format!(
        "Return-Path: <{f}.{l}@{d}>\n\
         Delivered-To: {user}@example.com\n\
         Received: from mx{relay}.{d} (mx{relay}.{d} [192.0.2.{relay}])\n\
         \tby mail.example.com with ESMTPS id {id:016x}\n\
         \tfor <{user}@example.com>; {date}\n\
         Received: from [198.51.100.{relay}] by mx{relay}.{d} with ESMTPSA; {date}\n\
         Date: {date}\n\
         From: {first} {last} <{f}.{l}@{d}>\n\
         To: <{user}@example.com>\n\
         Subject: {subject} #{message}\n\
         Message-ID: <{id:016x}.{message}@{d}>\n\
         MIME-Version: 1.0\n\
         Content-Type: text/plain; charset=utf-8\n\
         Content-Transfer-Encoding: 7bit\n\
         \n",
        f = from_first.to_lowercase(),
        l = from_last.to_lowercase(),
        d = from_domain,
        first = from_first,
        last = from_last,
        subject = rng.pick(SUBJECTS),
    )
}

/// One message of exactly `size` bytes, LF line ends, the last line ending
/// in LF. `size` must be at least [`MIN_SIZE`].
pub fn render(seed: u64, user_index: u64, user: &str, message: u64, size: usize) -> Vec<u8> {
    let mut rng = Rng::for_message(seed, user_index, message);
    let mut out = headers(&mut rng, user, message).into_bytes();
    out.reserve(size.saturating_sub(out.len()));
    let mut line_number = 0u64;
    // Leave room for the final line, which pads the message to the exact size.
    while out.len() + 160 < size {
        line_number += 1;
        if line_number % 17 == 5 {
            out.extend_from_slice(
                DOT_LINES[(line_number / 17) as usize % DOT_LINES.len()].as_bytes(),
            );
            out.push(b'\n');
            continue;
        }
        if line_number.is_multiple_of(23) {
            out.push(b'\n'); // paragraph break
            continue;
        }
        let width = 40 + rng.below(37) as usize;
        let start = out.len();
        while out.len() - start < width {
            if out.len() > start {
                out.push(b' ');
            }
            out.extend_from_slice(rng.pick(WORDS).as_bytes());
        }
        out.push(b'\n');
    }
    // Pad with one or two lines of 'x' to land on the exact size (a single
    // line may not exceed 80 characters).
    while out.len() < size {
        let remaining = size - out.len();
        let take = remaining.min(80);
        out.extend(std::iter::repeat_n(b'x', take - 1));
        out.push(b'\n');
    }
    out
}

/// The number of LF line ends, which is how many bytes converting the
/// message to CRLF adds: the size a POP3 server reports in LIST and STAT.
pub fn crlf_size(lf_message: &[u8]) -> usize {
    lf_message.len() + lf_message.iter().filter(|&&b| b == b'\n').count()
}

/// The message as it travels in a RETR reply body: CRLF line ends and every
/// line starting with '.' prefixed with another '.', without the final
/// ".\r\n" terminator.
pub fn wire_body(lf_message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(crlf_size(lf_message) + 64);
    for line in lf_message.split_inclusive(|&b| b == b'\n') {
        let content = line.strip_suffix(b"\n").unwrap_or(line);
        if content.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(content);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Parses "4096", "4K"/"4KiB", "20M"/"20MiB" (binary units).
pub fn parse_size(text: &str) -> Option<usize> {
    let upper = text.trim().to_ascii_uppercase();
    let digits = upper.trim_end_matches("IB").trim_end_matches('B');
    let (number, unit) = match digits.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => (&digits[..i], &digits[i..]),
        None => (digits, ""),
    };
    let multiplier = match unit {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        _ => return None,
    };
    number.parse::<usize>().ok()?.checked_mul(multiplier)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_size_and_deterministic() {
        for size in [MIN_SIZE, 4096, 4097, 100_000] {
            let a = render(7, 3, "user3", 1, size);
            assert_eq!(a.len(), size);
            assert_eq!(a, render(7, 3, "user3", 1, size));
            assert!(a.ends_with(b"\n"));
        }
        assert_ne!(
            render(7, 3, "user3", 1, 4096),
            render(7, 3, "user3", 2, 4096)
        );
    }
}
