//! A user's stored secret, as an auth backend hands it over, and the
//! Dovecot-style `{SCHEME}` strings it may come in.
//!
//! | scheme | body | serves |
//! |---|---|---|
//! | `PLAIN`, `CLEAR`, `CLEARTEXT` | the password | every mechanism, APOP |
//! | `PLAIN.BASE64`, `PLAIN.B64` | the password in base64 | every mechanism, APOP |
//! | `CRAM-MD5`, `HMAC-MD5` | 64 hex digits: HMAC-MD5 context | CRAM-MD5 |
//! | `SCRAM-SHA-1`, `SCRAM-SHA-256` | `iterations,salt,StoredKey,ServerKey` (base64) | that SCRAM |
//!
//! Every kind can also check a plaintext password
//! ([`Secret::verify_password`]), so a user database may store only SCRAM
//! keys and still serve PLAIN, LOGIN and USER/PASS.

use super::cram_md5::{decode_hex, CramContext};
use super::scram::{ScramHash, ScramKeys};
use super::{Mechanism, Password};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use std::fmt;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// A user's secret: a plaintext password or something derived from it.
/// Never printed by `Debug`.
pub struct Secret {
    /// What kind of secret, with its data.
    pub(super) kind: SecretKind,
}

pub(super) enum SecretKind {
    /// The password itself.
    Plain(Password),
    /// Dovecot's HMAC-MD5 context, for CRAM-MD5.
    CramMd5(CramContext),
    /// SCRAM keys for one hash.
    Scram(ScramKeys),
}

/// Why a `{SCHEME}` string is not a usable secret. `Display` is for the
/// operator: it names the scheme, never the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretError {
    /// No `{SCHEME}` prefix.
    MissingScheme,
    /// A scheme that cannot serve challenge mechanisms (a one-way hash such
    /// as `{SHA512-CRYPT}`), or an unknown one. Holds the scheme name when
    /// it looks like one, so it is safe to log.
    UnsupportedScheme(String),
    /// A supported scheme whose body does not parse.
    Malformed {
        /// The scheme, upper case.
        scheme: &'static str,
        /// What is wrong with the body.
        reason: &'static str,
    },
}

impl fmt::Display for SecretError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretError::MissingScheme => {
                f.write_str("stored secret has no {SCHEME} prefix; write {PLAIN}password for a plaintext one")
            }
            SecretError::UnsupportedScheme(scheme) => write!(
                f,
                "stored secret scheme {scheme} cannot be used for challenge-response authentication; store {{PLAIN}}, {{CRAM-MD5}} or {{SCRAM-SHA-256}} secrets, or offer only PLAIN and LOGIN"
            ),
            SecretError::Malformed { scheme, reason } => {
                write!(f, "stored {{{scheme}}} secret is malformed: {reason}")
            }
        }
    }
}

impl std::error::Error for SecretError {}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({}, ..)", self.kind())
    }
}

impl Secret {
    /// A plaintext password, as backends that store passwords in the clear
    /// reveal it.
    pub fn plain(password: &[u8]) -> Secret {
        Secret {
            kind: SecretKind::Plain(Password::new(password)),
        }
    }

    /// SCRAM keys, e.g. freshly derived by [`ScramKeys::derive`].
    pub fn scram(keys: ScramKeys) -> Secret {
        Secret {
            kind: SecretKind::Scram(keys),
        }
    }

    /// Parses a Dovecot-style `{SCHEME}body` string (scheme in any case).
    pub fn parse(text: &[u8]) -> Result<Secret, SecretError> {
        let Some(rest) = text.strip_prefix(b"{") else {
            return Err(SecretError::MissingScheme);
        };
        let Some(close) = rest.iter().position(|&byte| byte == b'}') else {
            return Err(SecretError::MissingScheme);
        };
        let (scheme, body) = (&rest[..close], &rest[close + 1..]);
        let upper = scheme.to_ascii_uppercase();
        let kind = match upper.as_slice() {
            b"PLAIN" | b"CLEAR" | b"CLEARTEXT" => SecretKind::Plain(Password::new(body)),
            b"PLAIN.BASE64" | b"PLAIN.B64" => {
                let decoded = STANDARD.decode(body).map(Zeroizing::new).map_err(|_| {
                    SecretError::Malformed {
                        scheme: "PLAIN.BASE64",
                        reason: "not valid base64",
                    }
                })?;
                SecretKind::Plain(Password::new(&decoded))
            }
            b"CRAM-MD5" | b"HMAC-MD5" => {
                let mut bytes = Zeroizing::new([0u8; 32]);
                decode_hex(body, bytes.as_mut_slice()).ok_or(SecretError::Malformed {
                    scheme: "CRAM-MD5",
                    reason: "expected 64 hexadecimal digits",
                })?;
                SecretKind::CramMd5(CramContext::from_bytes(&bytes))
            }
            b"SCRAM-SHA-1" => SecretKind::Scram(ScramKeys::parse(ScramHash::Sha1, body)?),
            b"SCRAM-SHA-256" => SecretKind::Scram(ScramKeys::parse(ScramHash::Sha256, body)?),
            _ => return Err(SecretError::UnsupportedScheme(loggable_scheme(scheme))),
        };
        Ok(Secret { kind })
    }

    /// The scheme name of this kind of secret, for log lines.
    pub fn kind(&self) -> &'static str {
        match &self.kind {
            SecretKind::Plain(_) => "PLAIN",
            SecretKind::CramMd5(_) => "CRAM-MD5",
            SecretKind::Scram(keys) => keys.hash().mechanism().name(),
        }
    }

    /// Whether this secret can serve `mechanism` (PLAIN and LOGIN through
    /// [`Secret::verify_password`]).
    pub fn serves(&self, mechanism: Mechanism) -> bool {
        match &self.kind {
            SecretKind::Plain(_) => true,
            SecretKind::CramMd5(_) => {
                matches!(mechanism, Mechanism::CramMd5) || mechanism.is_plaintext()
            }
            SecretKind::Scram(keys) => {
                mechanism == keys.hash().mechanism() || mechanism.is_plaintext()
            }
        }
    }

    /// The plaintext password, when this secret is one (APOP needs it).
    pub fn plaintext(&self) -> Option<&[u8]> {
        match &self.kind {
            SecretKind::Plain(password) => Some(password.expose()),
            _ => None,
        }
    }

    /// Whether `password` is the password this secret was made from,
    /// compared in constant time.
    pub fn verify_password(&self, password: &[u8]) -> bool {
        match &self.kind {
            SecretKind::Plain(stored) => {
                // Length is not secret; the content comparison is.
                stored.expose().len() == password.len()
                    && bool::from(stored.expose().ct_eq(password))
            }
            SecretKind::CramMd5(stored) => {
                let candidate = Zeroizing::new(CramContext::from_password(password).to_bytes());
                let stored = Zeroizing::new(stored.to_bytes());
                bool::from(candidate.ct_eq(&*stored))
            }
            SecretKind::Scram(keys) => keys.verify_password(password),
        }
    }
}

/// `scheme` if it looks like a scheme name; otherwise the braces may hold
/// part of a password written without a scheme, which must not be logged.
fn loggable_scheme(scheme: &[u8]) -> String {
    let looks_like_scheme = !scheme.is_empty()
        && scheme.len() <= 32
        && scheme
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    if looks_like_scheme {
        String::from_utf8_lossy(scheme).to_ascii_uppercase()
    } else {
        "(an unrecognised {...} prefix)".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_schemes() {
        for text in [
            &b"{PLAIN}pencil"[..],
            b"{plain}pencil",
            b"{CLEARTEXT}pencil",
            b"{PLAIN.B64}cGVuY2ls",
        ] {
            let secret = Secret::parse(text).unwrap();
            assert_eq!(secret.plaintext(), Some(&b"pencil"[..]), "{text:?}");
            assert!(secret.verify_password(b"pencil"));
            assert!(!secret.verify_password(b"pencil "));
            assert!(!secret.verify_password(b"pencik"));
            assert!(Mechanism::ALL.iter().all(|&m| secret.serves(m)));
        }
        // Braces after the scheme belong to the password.
        assert_eq!(
            Secret::parse(b"{PLAIN}{x}y").unwrap().plaintext(),
            Some(&b"{x}y"[..])
        );
    }

    #[test]
    fn dovecot_scram_vectors_verify_their_password() {
        // Dovecot's own test vectors for the password "test".
        let sha1 = Secret::parse(
            b"{SCRAM-SHA-1}4096,GetyLXdBuHzf1FWf8SLz2Q==,NA/OqmF4hhrsrB9KR7po+dliTGM=,QBiURvQaE6H6qYTmeghDHLANBFQ=",
        )
        .unwrap();
        let sha256 = Secret::parse(
            b"{SCRAM-SHA-256}4096,LfNGSFqiFykEZ1xDAYlnKQ==,HACNf9CII7cMz3XjRy/Oh3Ae2LHApoDyNw74d3YtFws=,AQH0j7Hf8J12g8eNBadvzlNB2am3PxgNwFCFd3RxEaw=",
        )
        .unwrap();
        for (secret, kind, mechanism) in [
            (&sha1, "SCRAM-SHA-1", Mechanism::ScramSha1),
            (&sha256, "SCRAM-SHA-256", Mechanism::ScramSha256),
        ] {
            assert_eq!(secret.kind(), kind);
            assert!(secret.verify_password(b"test"));
            assert!(!secret.verify_password(b"Test"));
            assert!(secret.serves(mechanism));
            assert!(secret.serves(Mechanism::Plain));
            assert!(!secret.serves(Mechanism::CramMd5));
            assert_eq!(secret.plaintext(), None);
        }
        assert!(!sha1.serves(Mechanism::ScramSha256));
    }

    #[test]
    fn malformed_and_unsupported_schemes_are_reported_without_the_secret() {
        assert_eq!(
            Secret::parse(b"pencil").unwrap_err(),
            SecretError::MissingScheme
        );
        assert_eq!(
            Secret::parse(b"{PLAIN").unwrap_err(),
            SecretError::MissingScheme
        );
        assert_eq!(
            Secret::parse(b"{SHA512-CRYPT}$6$abc").unwrap_err(),
            SecretError::UnsupportedScheme("SHA512-CRYPT".into())
        );
        let hidden = Secret::parse(b"{my pass}word").unwrap_err();
        assert!(!hidden.to_string().contains("my pass"));
        for (text, scheme) in [
            (&b"{PLAIN.BASE64}!!"[..], "PLAIN.BASE64"),
            (b"{CRAM-MD5}e02d", "CRAM-MD5"),
            (b"{CRAM-MD5}z02d374fde0dc75a17a557039a3a5338c7743304777dccd376f332bee68d2cf6", "CRAM-MD5"),
            (b"{SCRAM-SHA-256}4096,c2FsdA==,AAAA", "SCRAM-SHA-256"),
            (b"{SCRAM-SHA-256}0,c2FsdA==,AAAA,AAAA", "SCRAM-SHA-256"),
            (b"{SCRAM-SHA-1}4096,,NA/OqmF4hhrsrB9KR7po+dliTGM=,QBiURvQaE6H6qYTmeghDHLANBFQ=", "SCRAM-SHA-1"),
            (b"{SCRAM-SHA-1}x,GetyLXdBuHzf1FWf8SLz2Q==,NA/OqmF4hhrsrB9KR7po+dliTGM=,QBiURvQaE6H6qYTmeghDHLANBFQ=", "SCRAM-SHA-1"),
            // A SHA-1 sized key under the SHA-256 scheme.
            (b"{SCRAM-SHA-256}4096,GetyLXdBuHzf1FWf8SLz2Q==,NA/OqmF4hhrsrB9KR7po+dliTGM=,QBiURvQaE6H6qYTmeghDHLANBFQ=", "SCRAM-SHA-256"),
        ] {
            match Secret::parse(text) {
                Err(SecretError::Malformed { scheme: got, .. }) => assert_eq!(got, scheme, "{text:?}"),
                other => panic!("{text:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn debug_shows_the_kind_only() {
        let secret = Secret::parse(b"{PLAIN}pencil").unwrap();
        assert_eq!(format!("{secret:?}"), "Secret(PLAIN, ..)");
    }
}
