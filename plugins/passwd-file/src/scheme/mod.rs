//! Password schemes: Dovecot's `{SCHEME}data` strings, checked and made.
//!
//! A passwd-file stores each password as `{SCHEME}data`, the form Dovecot
//! uses, so files written for Dovecot (or by `doveadm pw`) work unchanged
//! and hashes made by `pop3d pw` work in Dovecot. [`StoredPassword::parse`]
//! reads one, [`StoredPassword::verify`] checks a plaintext password against
//! it, and [`hash_password`] makes a new one.
//!
//! | scheme | data | notes |
//! | --- | --- | --- |
//! | `PLAIN` (`CLEAR`, `CLEARTEXT`) | the password | |
//! | `PLAIN.BASE64` (`PLAIN.B64`) | the password in base64 | |
//! | `SHA512-CRYPT`, `SHA256-CRYPT` | `$6$…`, `$5$…` (crypt(3)) | `rounds=` honoured |
//! | `BLF-CRYPT` | `$2y$…`, `$2b$…`, `$2a$…` (bcrypt) | cost from the hash |
//! | `ARGON2ID`, `ARGON2I` | `$argon2id$v=19$m=…,t=…,p=…$salt$hash` | costs from the hash |
//! | `CRYPT`, or no `{SCHEME}` | any of the crypt(3) forms above | DES and MD5 crypt are not supported |
//! | `SSHA512`, `SSHA256`, `SSHA` | base64 of digest ‖ salt | `.HEX` suffix for hex |
//! | `CRAM-MD5` (`HMAC-MD5`) | hex of the HMAC-MD5 context | |
//! | `SCRAM-SHA-256`, `SCRAM-SHA-1` | `iterations,salt,StoredKey,ServerKey` | |
//!
//! The crypt(3) family (`CRYPT`, `SHA512-CRYPT`, `SHA256-CRYPT`,
//! `BLF-CRYPT`, `ARGON2I`, `ARGON2ID`) is told apart by the hash's own
//! `$id$` prefix, as crypt(3) does: the `{SCHEME}` label only says which
//! family. Every cost (rounds, bcrypt cost, Argon2 memory and passes, SCRAM
//! iterations) is read from the stored hash, never assumed.
//!
//! Comparisons of the computed value with the stored one are constant-time
//! ([`subtle`]), so how long a wrong password takes says nothing about how
//! close it was.

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use std::fmt;
use subtle::{Choice, ConstantTimeEq};

mod crypt;
mod digest;

/// A password scheme pop3d can check and make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// The password itself.
    Plain,
    /// The password in base64, for passwords a text file cannot hold as
    /// they are (a `:` or a newline in them).
    PlainBase64,
    /// Whatever crypt(3) form the hash has; the scheme of a password
    /// without a `{SCHEME}` prefix. `pop3d pw -s CRYPT` makes SHA512-CRYPT.
    Crypt,
    /// SHA-512 crypt, `$6$`.
    Sha512Crypt,
    /// SHA-256 crypt, `$5$`.
    Sha256Crypt,
    /// bcrypt, `$2y$`.
    BlfCrypt,
    /// Argon2id in PHC form, `$argon2id$`.
    Argon2id,
    /// Argon2i in PHC form, `$argon2i$`.
    Argon2i,
    /// Salted SHA-512.
    Ssha512,
    /// Salted SHA-256.
    Ssha256,
    /// Salted SHA-1.
    Ssha,
    /// The HMAC-MD5 context of the password, for CRAM-MD5 without the
    /// plaintext.
    CramMd5,
    /// SCRAM-SHA-256 keys (RFC 7677), for SCRAM without the plaintext.
    ScramSha256,
    /// SCRAM-SHA-1 keys (RFC 5802).
    ScramSha1,
}

impl Scheme {
    /// Every scheme, in the order `pop3d pw --help` lists them.
    pub const ALL: [Scheme; 14] = [
        Scheme::Sha512Crypt,
        Scheme::Sha256Crypt,
        Scheme::BlfCrypt,
        Scheme::Argon2id,
        Scheme::Argon2i,
        Scheme::Crypt,
        Scheme::Ssha512,
        Scheme::Ssha256,
        Scheme::Ssha,
        Scheme::CramMd5,
        Scheme::ScramSha256,
        Scheme::ScramSha1,
        Scheme::Plain,
        Scheme::PlainBase64,
    ];

    /// Dovecot's name for the scheme, as written between the braces.
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Plain => "PLAIN",
            Scheme::PlainBase64 => "PLAIN.BASE64",
            Scheme::Crypt => "CRYPT",
            Scheme::Sha512Crypt => "SHA512-CRYPT",
            Scheme::Sha256Crypt => "SHA256-CRYPT",
            Scheme::BlfCrypt => "BLF-CRYPT",
            Scheme::Argon2id => "ARGON2ID",
            Scheme::Argon2i => "ARGON2I",
            Scheme::Ssha512 => "SSHA512",
            Scheme::Ssha256 => "SSHA256",
            Scheme::Ssha => "SSHA",
            Scheme::CramMd5 => "CRAM-MD5",
            Scheme::ScramSha256 => "SCRAM-SHA-256",
            Scheme::ScramSha1 => "SCRAM-SHA-1",
        }
    }

    /// The scheme a name stands for, in any case, Dovecot's aliases
    /// included (`CLEAR`, `CLEARTEXT`, `PLAIN.B64`, `HMAC-MD5`).
    pub fn from_name(name: &str) -> Option<Scheme> {
        let upper = name.to_ascii_uppercase();
        let scheme = match upper.as_str() {
            "CLEAR" | "CLEARTEXT" => Scheme::Plain,
            "PLAIN.B64" => Scheme::PlainBase64,
            "HMAC-MD5" => Scheme::CramMd5,
            other => *Scheme::ALL.iter().find(|scheme| scheme.name() == other)?,
        };
        Some(scheme)
    }

    /// Whether the scheme is one of crypt(3)'s forms, told apart by the
    /// hash's own `$id$` prefix.
    fn is_crypt_family(self) -> bool {
        matches!(
            self,
            Scheme::Crypt
                | Scheme::Sha512Crypt
                | Scheme::Sha256Crypt
                | Scheme::BlfCrypt
                | Scheme::Argon2id
                | Scheme::Argon2i
        )
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a `{SCHEME}data` string cannot be checked, or a hash not made.
/// Messages name the scheme, never the password or the hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemeError {
    /// A scheme, or a crypt(3) form, this build does not check. The text
    /// names it in a form that is safe to log.
    Unsupported(String),
    /// A supported scheme whose data does not parse: a typo or a truncated
    /// hash.
    Malformed {
        /// The scheme as labelled.
        scheme: Scheme,
        /// What is wrong with the data.
        reason: String,
    },
    /// A cost (`-r` of `pop3d pw`) the scheme cannot use.
    BadCost {
        /// The scheme asked for.
        scheme: Scheme,
        /// What the cost must be.
        reason: String,
    },
    /// The operating system's random number generator failed, so no salt
    /// could be made.
    NoRandomness(String),
}

impl fmt::Display for SchemeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SchemeError::Unsupported(what) => write!(
                f,
                "password scheme {what} is not supported; store the password again with \
                 `pop3d pw` (e.g. SHA512-CRYPT or ARGON2ID)"
            ),
            SchemeError::Malformed { scheme, reason } => {
                write!(f, "the {scheme} password is malformed: {reason}")
            }
            SchemeError::BadCost { scheme, reason } => write!(f, "{scheme}: {reason}"),
            SchemeError::NoRandomness(why) => {
                write!(f, "cannot get random bytes for a salt: {why}")
            }
        }
    }
}

impl std::error::Error for SchemeError {}

/// A parsed `{SCHEME}data` password, ready to check passwords against.
///
/// `Debug` shows the scheme and its cost, never the data.
#[derive(Clone)]
pub struct StoredPassword {
    /// The scheme as labelled, which is what [`StoredPassword::scheme`]
    /// reports (`CRYPT` stays `CRYPT` whatever form the hash has).
    scheme: Scheme,
    /// The parsed data, one variant per way of checking.
    form: Form,
}

/// The parsed data of a stored password.
#[derive(Clone)]
enum Form {
    /// The plaintext (decoded, for `PLAIN.BASE64`).
    Plain(Vec<u8>),
    /// `$6$` or `$5$`.
    ShaCrypt(crypt::ShaCrypt),
    /// `$2y$`, `$2b$`, `$2a$`.
    Bcrypt(crypt::Bcrypt),
    /// `$argon2id$`, `$argon2i$`.
    Argon2(crypt::Argon2Hash),
    /// `SSHA`, `SSHA256`, `SSHA512`.
    Salted(digest::Salted),
    /// `CRAM-MD5`.
    CramMd5(digest::CramMd5),
    /// `SCRAM-SHA-1`, `SCRAM-SHA-256`.
    Scram(digest::Scram),
}

impl fmt::Debug for StoredPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoredPassword({}, {})", self.scheme, self.cost())
    }
}

impl StoredPassword {
    /// Parses a passwd-file password field. Without a `{SCHEME}` prefix it
    /// is `CRYPT`, as in Dovecot's passwd-file.
    pub fn parse(field: &str) -> Result<StoredPassword, SchemeError> {
        StoredPassword::parse_with_default(field, Scheme::Crypt)
    }

    /// Parses `field`, reading it as `default` when it has no `{SCHEME}`
    /// prefix (`doveadm pw -t HASH -s SCHEME` does the same).
    pub fn parse_with_default(field: &str, default: Scheme) -> Result<StoredPassword, SchemeError> {
        let (scheme, encoding, data) = match split_scheme(field) {
            Some((label, data)) => {
                let unsupported = || SchemeError::Unsupported(loggable_scheme(label));
                let (scheme, encoding) = scheme_and_encoding(label).ok_or_else(unsupported)?;
                // Only the digest schemes have an encoding to choose.
                let digest = matches!(
                    scheme,
                    Scheme::Ssha | Scheme::Ssha256 | Scheme::Ssha512 | Scheme::CramMd5
                );
                if encoding.is_some() && !digest {
                    return Err(unsupported());
                }
                (scheme, encoding, data)
            }
            None => (default, None, field),
        };
        let malformed = |reason: String| SchemeError::Malformed { scheme, reason };
        let form = match scheme {
            Scheme::Plain => Form::Plain(data.as_bytes().to_vec()),
            Scheme::PlainBase64 => Form::Plain(
                decode_base64(data).ok_or_else(|| malformed("not valid base64".to_owned()))?,
            ),
            _ if scheme.is_crypt_family() => parse_crypt(scheme, data)?,
            Scheme::Ssha | Scheme::Ssha256 | Scheme::Ssha512 => {
                let bytes = match encoding {
                    Some(Encoding::Hex) => decode_hex(data),
                    _ => decode_base64(data),
                }
                .ok_or_else(|| malformed("not valid base64 (or hex with .HEX)".to_owned()))?;
                Form::Salted(digest::Salted::from_bytes(scheme, bytes).map_err(malformed)?)
            }
            Scheme::CramMd5 => {
                let bytes = match encoding {
                    Some(Encoding::Base64) => decode_base64(data),
                    _ => decode_hex(data),
                }
                .ok_or_else(|| malformed("expected 64 hexadecimal digits".to_owned()))?;
                Form::CramMd5(digest::CramMd5::from_bytes(&bytes).map_err(malformed)?)
            }
            Scheme::ScramSha256 | Scheme::ScramSha1 => {
                Form::Scram(digest::Scram::parse(scheme, data).map_err(malformed)?)
            }
            // The crypt family is matched by the guard above.
            _ => return Err(SchemeError::Unsupported(scheme.name().to_owned())),
        };
        Ok(StoredPassword { scheme, form })
    }

    /// The scheme as labelled in the stored string.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// Whether `password` is the stored one. The work done depends on the
    /// stored scheme and its costs and on the length of `password`, not on
    /// whether or where it differs.
    pub fn verify(&self, password: &[u8]) -> bool {
        bool::from(self.verify_ct(password))
    }

    /// [`StoredPassword::verify`] as a [`Choice`], for callers that combine
    /// it with other conditions without branching.
    pub fn verify_ct(&self, password: &[u8]) -> Choice {
        match &self.form {
            Form::Plain(stored) => constant_time_eq(stored, password),
            Form::ShaCrypt(hash) => hash.verify(password),
            Form::Bcrypt(hash) => hash.verify(password),
            Form::Argon2(hash) => hash.verify(password),
            Form::Salted(hash) => hash.verify(password),
            Form::CramMd5(context) => context.verify(password),
            Form::Scram(keys) => keys.verify(password),
        }
    }

    /// The scheme and the costs that decide how long a check takes, e.g.
    /// `SHA512-CRYPT rounds=5000`: two passwords with the same cost take
    /// the same time to check. Safe to log.
    pub fn cost(&self) -> String {
        match &self.form {
            Form::Plain(_) => "PLAIN".to_owned(),
            Form::ShaCrypt(hash) => hash.cost(),
            Form::Bcrypt(hash) => hash.cost(),
            Form::Argon2(hash) => hash.cost(),
            Form::Salted(hash) => hash.cost(),
            Form::CramMd5(_) => "CRAM-MD5".to_owned(),
            Form::Scram(keys) => keys.cost(),
        }
    }

    /// A plaintext stored password, for a dummy when there is nothing to
    /// model one on.
    pub fn plain_dummy() -> StoredPassword {
        StoredPassword {
            scheme: Scheme::Plain,
            form: Form::Plain(b"pop3d-dummy-password-for-timing".to_vec()),
        }
    }

    /// A stored password of the same form and costs that no password
    /// matches in practice (its expected value is all zeros), for checking
    /// unknown users with the same work as known ones.
    pub fn dummy_like(&self) -> StoredPassword {
        let form = match &self.form {
            Form::Plain(_) => return StoredPassword::plain_dummy(),
            Form::ShaCrypt(hash) => Form::ShaCrypt(hash.dummy()),
            Form::Bcrypt(hash) => Form::Bcrypt(hash.dummy()),
            Form::Argon2(hash) => Form::Argon2(hash.dummy()),
            Form::Salted(hash) => Form::Salted(hash.dummy()),
            Form::CramMd5(_) => Form::CramMd5(digest::CramMd5::dummy()),
            Form::Scram(keys) => Form::Scram(keys.dummy()),
        };
        StoredPassword {
            scheme: self.scheme,
            form,
        }
    }

    /// The secret a challenge-response mechanism can work from, as a
    /// Dovecot-style `{SCHEME}data` string: `{PLAIN}password` for the
    /// plaintext schemes (`PLAIN.BASE64` decoded), `{CRAM-MD5}hex`, and
    /// `{SCRAM-SHA-256}iterations,salt,StoredKey,ServerKey` (or SHA-1).
    /// `None` for one-way hashes, from which no mechanism can work.
    pub fn challenge_secret(&self) -> Option<Vec<u8>> {
        let (scheme, data) = match &self.form {
            Form::Plain(password) => (Scheme::Plain, password.clone()),
            Form::CramMd5(context) => (Scheme::CramMd5, context.to_hex().into_bytes()),
            Form::Scram(keys) => (self.scheme, keys.to_text().into_bytes()),
            _ => return None,
        };
        let mut secret = format!("{{{scheme}}}").into_bytes();
        secret.extend_from_slice(&data);
        Some(secret)
    }
}

/// Makes a `{SCHEME}data` string for `password` with a fresh random salt.
///
/// `cost` overrides the scheme's default work factor: rounds for
/// SHA*-CRYPT (default 5000), the bcrypt cost (default 10), Argon2 passes
/// (default `t=3` with 64 MiB for ARGON2ID, `t=4` with 32 MiB for ARGON2I,
/// as Dovecot makes them), SCRAM iterations (default 4096). Schemes without
/// a cost refuse one.
pub fn hash_password(
    scheme: Scheme,
    password: &[u8],
    cost: Option<u32>,
) -> Result<String, SchemeError> {
    let no_cost = || match cost {
        Some(_) => Err(SchemeError::BadCost {
            scheme,
            reason: "this scheme has no cost to set; leave out -r".to_owned(),
        }),
        None => Ok(()),
    };
    let data = match scheme {
        Scheme::Plain => {
            no_cost()?;
            // Kept as bytes, so a password that is not UTF-8 survives.
            let mut out = b"{PLAIN}".to_vec();
            out.extend_from_slice(password);
            return String::from_utf8(out).map_err(|_| SchemeError::Malformed {
                scheme,
                reason: "the password is not UTF-8; use PLAIN.BASE64".to_owned(),
            });
        }
        Scheme::PlainBase64 => {
            no_cost()?;
            base64::engine::general_purpose::STANDARD.encode(password)
        }
        Scheme::Crypt | Scheme::Sha512Crypt => {
            crypt::ShaCrypt::generate(true, password, cost)?.to_text()
        }
        Scheme::Sha256Crypt => crypt::ShaCrypt::generate(false, password, cost)?.to_text(),
        Scheme::BlfCrypt => crypt::Bcrypt::generate(password, cost)?.to_text(),
        Scheme::Argon2id | Scheme::Argon2i => {
            crypt::Argon2Hash::generate(scheme, password, cost)?.to_text()
        }
        Scheme::Ssha | Scheme::Ssha256 | Scheme::Ssha512 => {
            no_cost()?;
            digest::Salted::generate(scheme, password)?.to_base64()
        }
        Scheme::CramMd5 => {
            no_cost()?;
            digest::CramMd5::from_password(password).to_hex()
        }
        Scheme::ScramSha256 | Scheme::ScramSha1 => {
            digest::Scram::generate(scheme, password, cost)?.to_text()
        }
    };
    Ok(format!("{{{scheme}}}{data}"))
}

/// How a digest scheme's data is written, from a `.HEX` / `.B64` suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    /// `.HEX`.
    Hex,
    /// `.B64`, `.BASE64`.
    Base64,
}

/// The label between the braces and what follows them; `None` when the
/// field has no `{...}` prefix.
fn split_scheme(field: &str) -> Option<(&str, &str)> {
    field.strip_prefix('{')?.split_once('}')
}

/// The scheme and optional encoding suffix a label names.
fn scheme_and_encoding(label: &str) -> Option<(Scheme, Option<Encoding>)> {
    if let Some(scheme) = Scheme::from_name(label) {
        return Some((scheme, None));
    }
    let (base, suffix) = label.rsplit_once('.')?;
    let encoding = match suffix.to_ascii_uppercase().as_str() {
        "HEX" => Encoding::Hex,
        "B64" | "BASE64" => Encoding::Base64,
        _ => return None,
    };
    Some((Scheme::from_name(base)?, Some(encoding)))
}

/// Reads a crypt(3) hash by its own `$id$` prefix.
fn parse_crypt(scheme: Scheme, data: &str) -> Result<Form, SchemeError> {
    let malformed = |reason: String| SchemeError::Malformed { scheme, reason };
    let unsupported = |what: &str| Err(SchemeError::Unsupported(what.to_owned()));
    if data.starts_with("$6$") || data.starts_with("$5$") {
        return crypt::ShaCrypt::parse(data)
            .map(Form::ShaCrypt)
            .map_err(malformed);
    }
    if data.starts_with("$2y$") || data.starts_with("$2b$") || data.starts_with("$2a$") {
        return crypt::Bcrypt::parse(data)
            .map(Form::Bcrypt)
            .map_err(malformed);
    }
    if data.starts_with("$argon2id$") || data.starts_with("$argon2i$") {
        return crypt::Argon2Hash::parse(data)
            .map(Form::Argon2)
            .map_err(malformed);
    }
    match data {
        _ if data.starts_with("$1$") => unsupported("MD5-CRYPT ($1$)"),
        _ if data.starts_with("$2x$") => {
            unsupported("bcrypt $2x$ (made by crypt_blowfish before 1.1, with its 8-bit bug)")
        }
        _ if data.starts_with("$y$") => unsupported("yescrypt ($y$)"),
        _ if data.starts_with("$7$") => unsupported("scrypt ($7$)"),
        _ if data.starts_with("$argon2d$") => unsupported("Argon2d ($argon2d$)"),
        _ if data.starts_with('$') => unsupported("crypt(3) with an unknown $id$ prefix"),
        _ if data.len() == 13 || data.starts_with('_') => {
            unsupported("DES-CRYPT (traditional crypt(3), which reads only 8 characters)")
        }
        _ => Err(malformed(
            "not a crypt(3) hash; a plaintext password needs the {PLAIN} prefix".to_owned(),
        )),
    }
}

/// `label` if it looks like a scheme name; otherwise the braces may hold
/// part of a password written without a scheme, which must not be logged.
fn loggable_scheme(label: &str) -> String {
    let looks_like_scheme = !label.is_empty()
        && label.len() <= 32
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    if looks_like_scheme {
        label.to_ascii_uppercase()
    } else {
        "(an unrecognised {...} prefix)".to_owned()
    }
}

/// Whether `given` equals `stored`, in time that depends on the length of
/// `given` (which the client knows) and not on where the two differ.
fn constant_time_eq(stored: &[u8], given: &[u8]) -> Choice {
    let same_length = (stored.len() as u64).ct_eq(&(given.len() as u64));
    let mut difference = 0u8;
    for (index, &byte) in given.iter().enumerate() {
        difference |= byte ^ stored.get(index).copied().unwrap_or(0);
    }
    same_length & difference.ct_eq(&0)
}

/// Standard base64 that accepts data with or without `=` padding, as
/// Dovecot's decoder does.
const BASE64_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

fn decode_base64(text: &str) -> Option<Vec<u8>> {
    BASE64_LENIENT.decode(text).ok()
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let digit = |byte: u8| char::from(byte).to_digit(16);
    text.as_bytes()
        .chunks_exact(2)
        .map(|pair| Some((digit(pair[0])? * 16 + digit(pair[1])?) as u8))
        .collect()
}

fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// `len` bytes from the operating system's random number generator.
fn random_bytes(len: usize) -> Result<Vec<u8>, SchemeError> {
    let mut bytes = vec![0u8; len];
    getrandom::fill(&mut bytes).map_err(|err| SchemeError::NoRandomness(err.to_string()))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests;
