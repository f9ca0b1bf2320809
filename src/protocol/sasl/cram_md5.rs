//! CRAM-MD5 (RFC 2195): the server sends a unique `<...@host>` challenge,
//! the client answers `name SP hex(HMAC-MD5(secret, challenge))`.
//!
//! The secret may be the plaintext password or Dovecot's `{CRAM-MD5}` form,
//! which stores the HMAC-MD5 context instead: the MD5 states after the
//! key's inner and outer pad blocks. Finishing an HMAC from those states
//! needs MD5's block function with a chosen starting state, which the md-5
//! crate exposes as `block_api::compress`; the final padding is done here.

use super::secret::SecretKind;
use super::{identity, Failure, Mechanism, Pending, Secret, SecretWanted, Step};
use md5::block_api::compress;
use md5::{Digest, Md5};
use subtle::ConstantTimeEq;
use zeroize::Zeroize;

/// MD5's initial state (RFC 1321 section 3.3).
const MD5_INIT: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];

/// MD5 and HMAC-MD5 block size.
const BLOCK: usize = 64;

/// The client's answer, waiting for the user's secret.
pub(super) struct Answer {
    /// The user the client claims to be.
    authcid: String,
    /// The challenge this server sent.
    challenge: String,
    /// The client's HMAC-MD5 of the challenge.
    digest: [u8; 16],
}

/// The client's `name SP digest` answer to `challenge`.
pub(super) fn response(challenge: String, response: &[u8]) -> Step {
    // The digest is the part after the last space: a user name may itself
    // contain spaces.
    let Some(space) = response.iter().rposition(|&byte| byte == b' ') else {
        return Step::Failure(Failure::Malformed(
            "CRAM-MD5 response must be a user name, a space and a digest",
        ));
    };
    let Some(digest) = decode_hex16(&response[space + 1..]) else {
        return Step::Failure(Failure::Malformed(
            "CRAM-MD5 digest must be 32 hexadecimal digits",
        ));
    };
    let authcid = match identity(&response[..space], "empty user name") {
        Ok(authcid) => authcid,
        Err(failure) => return Step::Failure(failure),
    };
    Step::NeedsSecret {
        authcid: authcid.clone(),
        next: SecretWanted {
            pending: Pending::Cram(Answer {
                authcid,
                challenge,
                digest,
            }),
        },
    }
}

impl Answer {
    /// Compares the client's digest with the one the secret gives.
    pub(super) fn check(self, secret: Option<&Secret>) -> Step {
        let context = match secret.map(|secret| &secret.kind) {
            None => return Step::Failure(Failure::BadCredentials),
            Some(SecretKind::Plain(password)) => CramContext::from_password(password.expose()),
            Some(SecretKind::CramMd5(context)) => context.clone(),
            Some(SecretKind::Scram(_)) => {
                return Step::Failure(Failure::SecretUnusable {
                    mechanism: Mechanism::CramMd5,
                    secret: secret.map_or("unknown", Secret::kind),
                })
            }
        };
        let expected = context.digest(self.challenge.as_bytes());
        if bool::from(expected.ct_eq(&self.digest)) {
            Step::Success {
                authcid: self.authcid,
            }
        } else {
            Step::Failure(Failure::BadCredentials)
        }
    }
}

/// An HMAC-MD5 key reduced to the MD5 states after its inner and outer pad
/// blocks: enough to compute HMAC-MD5 of any message, but not the password.
#[derive(Clone)]
pub(super) struct CramContext {
    /// MD5 state after the block `key XOR ipad`.
    inner: [u32; 4],
    /// MD5 state after the block `key XOR opad`.
    outer: [u32; 4],
}

impl Drop for CramContext {
    fn drop(&mut self) {
        self.inner.zeroize();
        self.outer.zeroize();
    }
}

impl CramContext {
    /// The context of the HMAC keyed with `password` (RFC 2104: a key
    /// longer than a block is hashed first).
    pub(super) fn from_password(password: &[u8]) -> Self {
        let mut key = [0u8; BLOCK];
        if password.len() > BLOCK {
            key[..16].copy_from_slice(&Md5::digest(password));
        } else {
            key[..password.len()].copy_from_slice(password);
        }
        let mut pad = [0u8; BLOCK];
        let mut state = |xor: u8| {
            for (out, byte) in pad.iter_mut().zip(key) {
                *out = byte ^ xor;
            }
            let mut state = MD5_INIT;
            compress(&mut state, &[pad]);
            state
        };
        let context = CramContext {
            inner: state(0x36),
            outer: state(0x5c),
        };
        key.zeroize();
        pad.zeroize();
        context
    }

    /// Dovecot's stored form, 32 bytes: the outer state's four words, then
    /// the inner state's, each little-endian.
    pub(super) fn from_bytes(bytes: &[u8; 32]) -> Self {
        let word = |i: usize| {
            u32::from_le_bytes([
                bytes[i * 4],
                bytes[i * 4 + 1],
                bytes[i * 4 + 2],
                bytes[i * 4 + 3],
            ])
        };
        CramContext {
            outer: [word(0), word(1), word(2), word(3)],
            inner: [word(4), word(5), word(6), word(7)],
        }
    }

    /// The inverse of [`CramContext::from_bytes`].
    pub(super) fn to_bytes(&self) -> [u8; 32] {
        let mut bytes = [0u8; 32];
        for (chunk, word) in bytes
            .chunks_exact_mut(4)
            .zip(self.outer.iter().chain(&self.inner))
        {
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        bytes
    }

    /// HMAC-MD5 of `message` under this context's key.
    pub(super) fn digest(&self, message: &[u8]) -> [u8; 16] {
        let inner = md5_after_one_block(self.inner, message);
        md5_after_one_block(self.outer, &inner)
    }
}

/// MD5 of `block || data`, given the state after the 64-byte `block`.
fn md5_after_one_block(mut state: [u32; 4], data: &[u8]) -> [u8; 16] {
    let mut blocks = data.chunks_exact(BLOCK);
    for block in blocks.by_ref() {
        let mut full = [0u8; BLOCK];
        full.copy_from_slice(block);
        compress(&mut state, &[full]);
    }
    // RFC 1321 padding: 0x80, zeros, then the total bit length
    // (little-endian) in the last 8 bytes, spilling into a second block
    // when fewer than 9 bytes are left.
    let tail = blocks.remainder();
    let bit_length = ((BLOCK + data.len()) as u64).wrapping_mul(8);
    let mut last = [[0u8; BLOCK]; 2];
    let flat = last.as_flattened_mut();
    flat[..tail.len()].copy_from_slice(tail);
    flat[tail.len()] = 0x80;
    let used = if tail.len() < BLOCK - 8 { 1 } else { 2 };
    flat[used * BLOCK - 8..used * BLOCK].copy_from_slice(&bit_length.to_le_bytes());
    compress(&mut state, &last[..used]);
    last.as_flattened_mut().zeroize();
    let mut digest = [0u8; 16];
    for (chunk, word) in digest.chunks_exact_mut(4).zip(state) {
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    digest
}

/// 32 hex digits, either case, to 16 bytes.
pub(super) fn decode_hex16(text: &[u8]) -> Option<[u8; 16]> {
    let mut out = [0u8; 16];
    decode_hex(text, &mut out)?;
    Some(out)
}

/// Exactly `2 * out.len()` hex digits, either case, into `out`.
pub(super) fn decode_hex(text: &[u8], out: &mut [u8]) -> Option<()> {
    if text.len() != out.len() * 2 {
        return None;
    }
    fn nibble(digit: u8) -> Option<u8> {
        char::from(digit)
            .to_digit(16)
            .and_then(|value| u8::try_from(value).ok())
    }
    for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        *byte = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::super::tests::{b64, challenge, config};
    use super::super::{Exchange, SaslConfig};
    use super::*;
    use hmac::{Hmac, KeyInit, Mac};

    /// RFC 2195 section 2's example.
    const RFC_CHALLENGE: &str = "<1896.697170952@postoffice.reston.mci.net>";
    const RFC_RESPONSE: &[u8] = b"tim b913a602c7eda7a495b4e6e7334d3890";

    fn answer(step: Step) -> (String, SecretWanted) {
        match step {
            Step::NeedsSecret { authcid, next } => (authcid, next),
            other => panic!("expected NeedsSecret, got {other:?}"),
        }
    }

    fn rfc_answer() -> (String, SecretWanted) {
        answer(response(RFC_CHALLENGE.to_owned(), RFC_RESPONSE))
    }

    #[test]
    fn rfc_2195_example_with_a_plaintext_secret() {
        let (authcid, wanted) = rfc_answer();
        assert_eq!(authcid, "tim");
        let secret = Secret::plain(b"tanstaaftanstaaf");
        assert!(matches!(
            wanted.provide(Some(&secret), &config()),
            Step::Success { authcid } if authcid == "tim"
        ));
    }

    #[test]
    fn rfc_2195_example_with_a_stored_context() {
        let context = CramContext::from_password(b"tanstaaftanstaaf");
        let stored = format!("{{CRAM-MD5}}{}", hex(&context.to_bytes()));
        let secret = Secret::parse(stored.as_bytes()).unwrap();
        let (_, wanted) = rfc_answer();
        assert!(matches!(
            wanted.provide(Some(&secret), &config()),
            Step::Success { .. }
        ));
    }

    #[test]
    fn dovecot_stored_context_for_test() {
        // Dovecot's own test vector for the password "test".
        let secret = Secret::parse(
            b"{CRAM-MD5}e02d374fde0dc75a17a557039a3a5338c7743304777dccd376f332bee68d2cf6",
        )
        .unwrap();
        assert!(secret.verify_password(b"test"));
        assert!(!secret.verify_password(b"tesT"));
        let context = CramContext::from_password(b"test");
        assert_eq!(
            hex(&context.to_bytes()),
            "e02d374fde0dc75a17a557039a3a5338c7743304777dccd376f332bee68d2cf6"
        );
    }

    #[test]
    fn context_digest_matches_hmac_md5_for_all_lengths() {
        // Message lengths around the padding boundaries, keys short and
        // longer than a block.
        for key in [&b"k"[..], &[7u8; 64], &[9u8; 100]] {
            let context = CramContext::from_password(key);
            for length in [0, 1, 55, 56, 63, 64, 65, 119, 120, 128, 200] {
                let message = vec![0xa5u8; length];
                let mut mac = <Hmac<Md5> as KeyInit>::new_from_slice(key).unwrap();
                mac.update(&message);
                let expected: [u8; 16] = mac.finalize().into_bytes().into();
                assert_eq!(
                    context.digest(&message),
                    expected,
                    "key {} len {length}",
                    key.len()
                );
            }
        }
    }

    #[test]
    fn wrong_digest_unknown_user_and_unusable_secret_fail() {
        let (_, wanted) = rfc_answer();
        assert!(matches!(
            wanted.provide(Some(&Secret::plain(b"tanstaaf")), &config()),
            Step::Failure(Failure::BadCredentials)
        ));
        let (_, wanted) = rfc_answer();
        assert!(matches!(
            wanted.provide(None, &config()),
            Step::Failure(Failure::BadCredentials)
        ));
        let scram = Secret::parse(
            b"{SCRAM-SHA-1}4096,GetyLXdBuHzf1FWf8SLz2Q==,NA/OqmF4hhrsrB9KR7po+dliTGM=,QBiURvQaE6H6qYTmeghDHLANBFQ=",
        )
        .unwrap();
        let (_, wanted) = rfc_answer();
        assert!(matches!(
            wanted.provide(Some(&scram), &config()),
            Step::Failure(Failure::SecretUnusable {
                mechanism: Mechanism::CramMd5,
                secret: "SCRAM-SHA-1"
            })
        ));
    }

    #[test]
    fn digest_case_does_not_matter_and_names_may_hold_spaces() {
        let (authcid, wanted) = answer(response(
            RFC_CHALLENGE.to_owned(),
            b"tim B913A602C7EDA7A495B4E6E7334D3890",
        ));
        assert_eq!(authcid, "tim");
        assert!(matches!(
            wanted.provide(Some(&Secret::plain(b"tanstaaftanstaaf")), &config()),
            Step::Success { .. }
        ));
        let (authcid, _) = answer(response(
            "<x@y>".to_owned(),
            b"tim smith b913a602c7eda7a495b4e6e7334d3890",
        ));
        assert_eq!(authcid, "tim smith");
    }

    #[test]
    fn malformed_responses_fail() {
        for bad in [
            &b"timb913a602c7eda7a495b4e6e7334d3890"[..],
            b"tim b913a602c7eda7a495b4e6e7334d389",
            b"tim b913a602c7eda7a495b4e6e7334d38900",
            b"tim g913a602c7eda7a495b4e6e7334d3890",
            b" b913a602c7eda7a495b4e6e7334d3890",
            b"tim ",
            b"",
        ] {
            assert!(
                matches!(
                    response("<c@h>".to_owned(), bad),
                    Step::Failure(Failure::Malformed(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn full_exchange_through_the_public_api() {
        let config = SaslConfig::new("mail.example.net", [1; 32]);
        let (challenge_bytes, exchange) =
            challenge(Exchange::start(Mechanism::CramMd5, None, &config));
        let text = String::from_utf8(challenge_bytes).unwrap();
        assert!(text.starts_with('<') && text.ends_with("@mail.example.net>"));
        let digest = CramContext::from_password(b"secret").digest(text.as_bytes());
        let reply = format!("alice {}", hex(&digest));
        let (authcid, wanted) = answer(exchange.respond(b64(reply.as_bytes()).as_bytes()));
        assert_eq!(authcid, "alice");
        assert!(matches!(
            wanted.provide(Some(&Secret::plain(b"secret")), &config),
            Step::Success { .. }
        ));
        // Each exchange gets a fresh challenge, so that answer is useless
        // against the next one.
        let (second, _) = challenge(Exchange::start(Mechanism::CramMd5, None, &config));
        assert_ne!(second, text.as_bytes());
    }

    #[test]
    fn initial_response_is_refused() {
        assert!(matches!(
            Exchange::start(Mechanism::CramMd5, Some("dGlt"), &config()),
            Step::Failure(Failure::UnexpectedInitialResponse(Mechanism::CramMd5))
        ));
        assert!(matches!(
            Exchange::start(Mechanism::CramMd5, Some("="), &config()),
            Step::Failure(Failure::UnexpectedInitialResponse(Mechanism::CramMd5))
        ));
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|byte| format!("{byte:02x}")).collect()
    }
}
