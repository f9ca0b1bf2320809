//! The size a message has on the wire, counted while its bytes stream past.
//!
//! The host transmits a message with every LF that is not preceded by CR
//! turned into CRLF, and adds a CRLF when a non-empty message does not end
//! in LF; dot-stuffing is not counted. STAT, LIST and RETR agree only if the
//! store reports exactly that number, so the counter here implements the
//! host's rule rather than the SDK's `WireSize`, whose empty-message case
//! (2 instead of 0) is being corrected on the SDK branch.

/// Counts wire octets of a byte stream fed in arbitrary chunks.
#[derive(Debug, Clone, Default)]
pub struct WireCounter {
    /// Octets counted so far, with the CR of every bare LF included.
    total: u64,
    /// The last byte seen, because a LF at the start of a chunk needs it.
    last: Option<u8>,
}

impl WireCounter {
    /// A counter that has seen nothing.
    pub fn new() -> WireCounter {
        WireCounter::default()
    }

    /// Counts the next chunk of message bytes.
    pub fn update(&mut self, chunk: &[u8]) {
        let Some(&final_byte) = chunk.last() else {
            return;
        };
        let bare_lf = memchr::memchr_iter(b'\n', chunk)
            .filter(|&at| {
                let before = if at == 0 {
                    self.last
                } else {
                    Some(chunk[at - 1])
                };
                before != Some(b'\r')
            })
            .count() as u64;
        self.total += chunk.len() as u64 + bare_lf;
        self.last = Some(final_byte);
    }

    /// The wire size of everything counted.
    pub fn finish(&self) -> u64 {
        match self.last {
            None => 0,
            Some(b'\n') => self.total,
            Some(_) => self.total + 2,
        }
    }
}

/// The wire size of a message held in memory.
#[cfg(test)]
pub fn wire_size_of(message: &[u8]) -> u64 {
    let mut counter = WireCounter::new();
    counter.update(message);
    counter.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_sizes() {
        let cases: &[(&[u8], u64)] = &[
            (b"", 0),
            (b"a", 3),
            (b"a\n", 3),
            (b"a\r\n", 3),
            (b"a\nb\n", 6),
            (b"a\r\nb", 6),
            (b"\n", 2),
            (b"\n\n", 4),
            (b"a\rb\n", 5),
            (b"\r", 3),
            (b"\r\r\n", 3),
        ];
        for &(message, expected) in cases {
            assert_eq!(wire_size_of(message), expected, "{message:?}");
        }
    }

    #[test]
    fn chunk_boundaries_do_not_matter() {
        let whole = b"one\r\ntwo\n\nthree\r\n\n\rx";
        for split in 0..=whole.len() {
            for split2 in split..=whole.len() {
                let mut counter = WireCounter::new();
                counter.update(&whole[..split]);
                counter.update(&whole[split..split2]);
                counter.update(&whole[split2..]);
                assert_eq!(counter.finish(), wire_size_of(whole), "{split} {split2}");
            }
        }
        assert_eq!(wire_size_of(whole), 25);
    }
}
