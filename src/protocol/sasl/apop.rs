//! APOP (RFC 1939 section 7): the greeting carries a unique timestamp, and
//! the client proves it knows the shared secret by sending
//! `MD5(timestamp || secret)` in hex.
//!
//! APOP needs the plaintext secret ([`Secret::plaintext`](super::Secret::plaintext)).

use super::{sanitize_hostname, unique_msg_id};
use md5::{Digest, Md5};
use subtle::ConstantTimeEq;

/// A fresh `<pid.unique.time@host>` timestamp for one session's greeting.
/// Each call gives a different one, so a digest seen on the wire cannot be
/// replayed in another session.
pub fn apop_timestamp(hostname: &str) -> String {
    unique_msg_id(&sanitize_hostname(hostname))
}

/// Whether `digest_hex` (32 hex digits, either case) is
/// `MD5(timestamp || secret)`, compared in constant time.
pub fn apop_verify(timestamp: &str, secret: &[u8], digest_hex: &str) -> bool {
    let Some(claimed) = super::cram_md5::decode_hex16(digest_hex.as_bytes()) else {
        return false;
    };
    let mut md5 = Md5::new();
    md5.update(timestamp.as_bytes());
    md5.update(secret);
    let expected: [u8; 16] = md5.finalize().into();
    bool::from(expected.ct_eq(&claimed))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC_TIMESTAMP: &str = "<1896.697170952@dbc.mtview.ca.us>";

    #[test]
    fn rfc_1939_example() {
        assert!(apop_verify(
            RFC_TIMESTAMP,
            b"tanstaaf",
            "c4c9334bac560ecc979e58001b3e22fb"
        ));
        assert!(apop_verify(
            RFC_TIMESTAMP,
            b"tanstaaf",
            "C4C9334BAC560ECC979E58001B3E22FB"
        ));
    }

    #[test]
    fn wrong_secret_timestamp_or_digest_fails() {
        assert!(!apop_verify(
            RFC_TIMESTAMP,
            b"tanstaaF",
            "c4c9334bac560ecc979e58001b3e22fb"
        ));
        assert!(!apop_verify(
            "<1896.697170953@dbc.mtview.ca.us>",
            b"tanstaaf",
            "c4c9334bac560ecc979e58001b3e22fb"
        ));
        assert!(!apop_verify(
            RFC_TIMESTAMP,
            b"tanstaaf",
            "c4c9334bac560ecc979e58001b3e22fc"
        ));
        assert!(!apop_verify(
            RFC_TIMESTAMP,
            b"tanstaaf",
            "c4c9334bac560ecc979e58001b3e22f"
        ));
        assert!(!apop_verify(
            RFC_TIMESTAMP,
            b"tanstaaf",
            "c4c9334bac560ecc979e58001b3e22fbb"
        ));
        assert!(!apop_verify(
            RFC_TIMESTAMP,
            b"tanstaaf",
            "x4c9334bac560ecc979e58001b3e22fb"
        ));
        assert!(!apop_verify(RFC_TIMESTAMP, b"tanstaaf", ""));
    }

    #[test]
    fn timestamps_are_unique_msg_ids_for_the_host() {
        let first = apop_timestamp("pop.example.org");
        let second = apop_timestamp("pop.example.org");
        assert_ne!(first, second);
        assert!(first.starts_with('<') && first.ends_with("@pop.example.org>"));
        assert!(apop_timestamp("bad host>").ends_with("@badhost>"));
    }

    #[test]
    fn digest_over_a_fresh_timestamp_round_trips() {
        let timestamp = apop_timestamp("h");
        let digest: String = Md5::digest(format!("{timestamp}secret").as_bytes())
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        assert!(apop_verify(&timestamp, b"secret", &digest));
    }
}
