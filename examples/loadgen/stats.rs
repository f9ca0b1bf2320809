//! What a run measured: counters, latency histograms and errors by kind.
//!
//! Each client thread fills its own [`Stats`] without locks; the main thread
//! merges them at the end. Latencies go into a log-linear histogram with
//! fixed memory and under 1% relative error, so recording costs an index
//! computation and an increment whatever the run length.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

/// The kinds of timed operation, each with its own latency histogram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// TCP connect until the greeting has arrived (with implicit TLS,
    /// the handshake included).
    Connect,
    /// The TLS handshake alone: from TCP connect (implicit TLS) or STLS's
    /// +OK until rustls says it is done.
    Handshake,
    Stls,
    User,
    Pass,
    Stat,
    Uidl,
    List,
    Retr,
    Dele,
    Rset,
    Noop,
    Quit,
    /// A whole session, connect to QUIT's reply.
    Session,
}

impl Op {
    pub const ALL: [Op; 14] = [
        Op::Session,
        Op::Connect,
        Op::Handshake,
        Op::Stls,
        Op::User,
        Op::Pass,
        Op::Stat,
        Op::Uidl,
        Op::List,
        Op::Retr,
        Op::Dele,
        Op::Rset,
        Op::Noop,
        Op::Quit,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Op::Connect => "connect",
            Op::Handshake => "handshake",
            Op::Stls => "STLS",
            Op::User => "USER",
            Op::Pass => "PASS",
            Op::Stat => "STAT",
            Op::Uidl => "UIDL",
            Op::List => "LIST",
            Op::Retr => "RETR",
            Op::Dele => "DELE",
            Op::Rset => "RSET",
            Op::Noop => "NOOP",
            Op::Quit => "QUIT",
            Op::Session => "session",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Sub-buckets per power of two: 2^7 = 128 gives < 0.8% error.
const SUB_BITS: u32 = 7;
const BUCKETS: usize = ((64 - SUB_BITS as usize) << SUB_BITS) + (1 << SUB_BITS);

/// Log-linear latency histogram over nanoseconds.
#[derive(Clone)]
pub struct Histogram {
    /// Count per bucket; see [`bucket_of`] for the layout.
    counts: Vec<u64>,
    /// Number of recorded values, kept so percentiles need no extra pass.
    total: u64,
    /// The exact largest value, because the tail is what people look at.
    max: u64,
}

fn bucket_of(value: u64) -> usize {
    if value < (2 << SUB_BITS) {
        return value as usize;
    }
    let high_bit = 63 - value.leading_zeros();
    let shift = high_bit - SUB_BITS;
    ((shift as usize) << SUB_BITS) + (value >> shift) as usize
}

/// A representative value (the middle) of a bucket.
fn value_of(bucket: usize) -> u64 {
    if bucket < (2 << SUB_BITS) {
        return bucket as u64;
    }
    let shift = (bucket >> SUB_BITS) - 1;
    let mantissa = (bucket - (shift << SUB_BITS)) as u64;
    (mantissa << shift) + ((1u64 << shift) >> 1)
}

impl Histogram {
    pub fn new() -> Histogram {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
            max: 0,
        }
    }

    pub fn record(&mut self, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.counts[bucket_of(nanos)] += 1;
        self.total += 1;
        self.max = self.max.max(nanos);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    /// The value below which a fraction `q` of the recorded values lie, in
    /// nanoseconds; 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (bucket, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return value_of(bucket).min(self.max);
            }
        }
        self.max
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }
}

/// Everything one client thread measured.
#[derive(Clone)]
pub struct Stats {
    /// Sessions that ran their whole script and got QUIT's +OK.
    pub sessions_ok: u64,
    /// Sessions cut short by an error (counted in `errors` too).
    pub sessions_failed: u64,
    /// Commands that got a complete reply (including -ERR replies).
    pub commands: u64,
    /// Bytes read from servers, replies and bodies alike; with TLS, the
    /// encrypted bytes as they crossed the wire.
    pub rx_bytes: u64,
    /// Body octets of RETR replies after removing dot-stuffing, the payload
    /// a mail client would store.
    pub retr_octets: u64,
    /// TLS handshakes completed.
    pub tls_handshakes: u64,
    /// Of those, how many resumed an earlier session: resumed handshakes
    /// cost the server far less, so a TLS figure means little without it.
    pub tls_resumed: u64,
    /// Version and cipher suite of the first handshake, for the report
    /// (the cipher decides much of the server's CPU per byte).
    pub tls_protocol: Option<String>,
    /// Latency per [`Op`], indexed by `Op as usize`.
    pub latency: Vec<Histogram>,
    /// Error counts by kind name (see `next_step` in client.rs).
    pub errors: BTreeMap<String, u64>,
    /// The first -ERR text per error kind: "err_reply_PASS 6" says little,
    /// "[SYS/TEMP] ..." says where to look.
    pub samples: BTreeMap<String, String>,
}

impl Stats {
    pub fn new() -> Stats {
        Stats {
            sessions_ok: 0,
            sessions_failed: 0,
            commands: 0,
            rx_bytes: 0,
            retr_octets: 0,
            tls_handshakes: 0,
            tls_resumed: 0,
            tls_protocol: None,
            latency: (0..Op::ALL.len()).map(|_| Histogram::new()).collect(),
            errors: BTreeMap::new(),
            samples: BTreeMap::new(),
        }
    }

    pub fn record(&mut self, op: Op, elapsed: Duration) {
        self.latency[op.index()].record(elapsed);
    }

    pub fn latency(&self, op: Op) -> &Histogram {
        &self.latency[op.index()]
    }

    pub fn error(&mut self, kind: String) {
        *self.errors.entry(kind).or_insert(0) += 1;
    }

    pub fn sample(&mut self, kind: &str, text: &[u8]) {
        if !self.samples.contains_key(kind) {
            let text = String::from_utf8_lossy(&text[..text.len().min(200)]).into_owned();
            self.samples.insert(kind.to_string(), text);
        }
    }

    pub fn error_total(&self) -> u64 {
        self.errors.values().sum()
    }

    pub fn merge(&mut self, other: &Stats) {
        self.sessions_ok += other.sessions_ok;
        self.sessions_failed += other.sessions_failed;
        self.commands += other.commands;
        self.rx_bytes += other.rx_bytes;
        self.retr_octets += other.retr_octets;
        self.tls_handshakes += other.tls_handshakes;
        self.tls_resumed += other.tls_resumed;
        if self.tls_protocol.is_none() {
            self.tls_protocol.clone_from(&other.tls_protocol);
        }
        for (mine, theirs) in self.latency.iter_mut().zip(&other.latency) {
            mine.merge(theirs);
        }
        for (kind, count) in &other.errors {
            *self.errors.entry(kind.clone()).or_insert(0) += count;
        }
        for (kind, text) in &other.samples {
            self.samples
                .entry(kind.clone())
                .or_insert_with(|| text.clone());
        }
    }
}

/// Milliseconds with enough digits for sub-millisecond loopback latencies.
pub fn ms(nanos: u64) -> f64 {
    nanos as f64 / 1e6
}

/// A JSON string literal (names and addresses only; no control characters
/// are expected, but they are escaped anyway).
pub fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A JSON number; JSON has no NaN or infinity, so those become null.
pub fn json_number(value: f64) -> String {
    if value.is_finite() {
        format!("{:.6}", value)
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    } else {
        "null".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_accurate() {
        let mut previous = 0;
        for value in (0..100_000u64).chain([1 << 40, u64::MAX]) {
            let bucket = bucket_of(value);
            assert!(bucket >= previous && bucket < BUCKETS);
            previous = bucket;
            let back = value_of(bucket);
            let error = (back as f64 - value as f64).abs() / (value.max(1) as f64);
            assert!(error < 0.01, "{value} -> {back}");
        }
    }

    #[test]
    fn quantiles() {
        let mut h = Histogram::new();
        for micros in 1..=1000u64 {
            h.record(Duration::from_micros(micros));
        }
        let p50 = h.quantile(0.5) as f64 / 1000.0;
        let p99 = h.quantile(0.99) as f64 / 1000.0;
        assert!((p50 - 500.0).abs() < 5.0, "{p50}");
        assert!((p99 - 990.0).abs() < 10.0, "{p99}");
        assert_eq!(h.max(), 1_000_000);
    }

    #[test]
    fn json_escaping() {
        assert_eq!(json_string("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
        assert_eq!(json_number(1.5), "1.5");
        assert_eq!(json_number(2.0), "2");
        assert_eq!(json_number(f64::NAN), "null");
    }
}
