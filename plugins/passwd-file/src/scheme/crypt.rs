//! The crypt(3) family: SHA-crypt (`$6$`, `$5$`), bcrypt (`$2y$`) and
//! Argon2 in PHC form (`$argon2id$`), each parsed from its string with the
//! costs the string records.
//!
//! The hash functions are RustCrypto's (`sha-crypt`, `argon2`) and the
//! `bcrypt` crate; this module reads and writes the strings and compares in
//! constant time.

use super::{random_bytes, Scheme, SchemeError};
use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine as _;
use base64ct::{Base64ShaCrypt, Encoding as _};
use subtle::{Choice, ConstantTimeEq};

/// The rounds crypt(3) uses when a SHA-crypt string does not say.
const SHA_CRYPT_DEFAULT_ROUNDS: u32 = 5000;

/// glibc's bounds for `rounds=`; values outside are clamped, not refused.
const SHA_CRYPT_ROUNDS: std::ops::RangeInclusive<u32> = 1000..=999_999_999;

/// The bcrypt cost `pop3d pw` uses unless told: 2^10 rounds, about 80 ms
/// of one core per check (Dovecot's 5 is 32 times cheaper, and cheap to
/// brute-force).
const BCRYPT_DEFAULT_COST: u32 = 10;

/// A SHA-crypt hash, `$6$[rounds=N$]salt$hash` or the same with `$5$`.
#[derive(Clone)]
pub(super) struct ShaCrypt {
    /// SHA-512 (`$6$`) rather than SHA-256 (`$5$`).
    sha512: bool,
    /// The rounds the hash was made with, clamped as glibc does.
    rounds: u32,
    /// The salt characters, as crypt(3) hashes them.
    salt: String,
    /// The expected hash, in crypt's base64 (86 or 43 characters).
    hash: String,
}

impl ShaCrypt {
    /// Parses a whole `$6$…` or `$5$…` string.
    pub(super) fn parse(text: &str) -> Result<ShaCrypt, String> {
        let sha512 = text.starts_with("$6$");
        let rest = text.get(3..).unwrap_or("");
        let (rounds, rest) = match rest.strip_prefix("rounds=") {
            Some(with_rounds) => {
                let (number, rest) = with_rounds.split_once('$').ok_or("no `$` after rounds=")?;
                let rounds: u64 = number
                    .parse()
                    .map_err(|_| format!("rounds={number} is not a number"))?;
                let clamped = rounds.clamp(
                    u64::from(*SHA_CRYPT_ROUNDS.start()),
                    u64::from(*SHA_CRYPT_ROUNDS.end()),
                );
                (
                    u32::try_from(clamped).unwrap_or(SHA_CRYPT_DEFAULT_ROUNDS),
                    rest,
                )
            }
            None => (SHA_CRYPT_DEFAULT_ROUNDS, rest),
        };
        let (salt, hash) = rest
            .split_once('$')
            .ok_or("expected $salt$hash after the prefix")?;
        let expected_len = if sha512 { 86 } else { 43 };
        let crypt_alphabet = |b: u8| b.is_ascii_alphanumeric() || b == b'.' || b == b'/';
        if hash.len() != expected_len || !hash.bytes().all(crypt_alphabet) {
            return Err(format!(
                "the hash part must be {expected_len} characters of [./0-9A-Za-z]"
            ));
        }
        Ok(ShaCrypt {
            sha512,
            rounds,
            salt: salt.to_owned(),
            hash: hash.to_owned(),
        })
    }

    /// A new hash of `password` with a random 16-character salt.
    pub(super) fn generate(
        sha512: bool,
        password: &[u8],
        rounds: Option<u32>,
    ) -> Result<ShaCrypt, SchemeError> {
        let rounds = rounds.unwrap_or(SHA_CRYPT_DEFAULT_ROUNDS);
        if !SHA_CRYPT_ROUNDS.contains(&rounds) {
            return Err(SchemeError::BadCost {
                scheme: if sha512 {
                    Scheme::Sha512Crypt
                } else {
                    Scheme::Sha256Crypt
                },
                reason: format!(
                    "rounds must be {} to {}",
                    SHA_CRYPT_ROUNDS.start(),
                    SHA_CRYPT_ROUNDS.end()
                ),
            });
        }
        let mut salt_buffer = [0u8; 16];
        let salt = Base64ShaCrypt::encode(&random_bytes(12)?, &mut salt_buffer)
            .map_err(|err| SchemeError::NoRandomness(err.to_string()))?
            .to_owned();
        let mut stored = ShaCrypt {
            sha512,
            rounds,
            salt,
            hash: String::new(),
        };
        stored.hash = stored.compute(password);
        Ok(stored)
    }

    /// The string, `rounds=` written only when not the default (as glibc).
    pub(super) fn to_text(&self) -> String {
        let id = if self.sha512 { 6 } else { 5 };
        let rounds = match self.rounds {
            SHA_CRYPT_DEFAULT_ROUNDS => String::new(),
            rounds => format!("rounds={rounds}$"),
        };
        format!("${id}${rounds}{}${}", self.salt, self.hash)
    }

    pub(super) fn verify(&self, password: &[u8]) -> Choice {
        self.compute(password)
            .as_bytes()
            .ct_eq(self.hash.as_bytes())
    }

    /// The hash part crypt(3) would write for `password` with this salt
    /// and these rounds.
    fn compute(&self, password: &[u8]) -> String {
        // In range by construction; the default is only a fallback.
        let params = sha_crypt::Params::new(self.rounds).unwrap_or_default();
        let salt = self.salt.as_bytes();
        // crypt(3) writes the digest's bytes in a scrambled order (the
        // tables of the SHA-crypt specification), then in its base64.
        let mut buffer = [0u8; 86];
        let encoded = if self.sha512 {
            const ORDER: [usize; 64] = [
                42, 21, 0, 1, 43, 22, 23, 2, 44, 45, 24, 3, 4, 46, 25, 26, 5, 47, 48, 27, 6, 7, 49,
                28, 29, 8, 50, 51, 30, 9, 10, 52, 31, 32, 11, 53, 54, 33, 12, 13, 55, 34, 35, 14,
                56, 57, 36, 15, 16, 58, 37, 38, 17, 59, 60, 39, 18, 19, 61, 40, 41, 20, 62, 63,
            ];
            let digest = sha_crypt::sha512_crypt(password, salt, params);
            Base64ShaCrypt::encode(&ORDER.map(|i| digest[i]), &mut buffer)
        } else {
            const ORDER: [usize; 32] = [
                20, 10, 0, 11, 1, 21, 2, 22, 12, 23, 13, 3, 14, 4, 24, 5, 25, 15, 26, 16, 6, 17, 7,
                27, 8, 28, 18, 29, 19, 9, 30, 31,
            ];
            let digest = sha_crypt::sha256_crypt(password, salt, params);
            Base64ShaCrypt::encode(&ORDER.map(|i| digest[i]), &mut buffer)
        };
        // The buffer fits the longer digest, so encoding cannot fail.
        encoded.unwrap_or_default().to_owned()
    }

    pub(super) fn cost(&self) -> String {
        let name = if self.sha512 {
            "SHA512-CRYPT"
        } else {
            "SHA256-CRYPT"
        };
        format!("{name} rounds={}", self.rounds)
    }

    pub(super) fn dummy(&self) -> ShaCrypt {
        ShaCrypt {
            hash: ".".repeat(self.hash.len()),
            ..self.clone()
        }
    }
}

/// A bcrypt hash, `$2y$CC$` and 53 characters of salt and hash.
#[derive(Clone)]
pub(super) struct Bcrypt {
    /// The whole 60-character string, which the `bcrypt` crate parses
    /// again at every check.
    text: String,
    /// The cost (log2 of the rounds), for [`Bcrypt::cost`].
    cost: u32,
}

impl Bcrypt {
    /// Parses a whole `$2y$`, `$2b$` or `$2a$` string.
    pub(super) fn parse(text: &str) -> Result<Bcrypt, String> {
        if text.len() != 60 || !text.is_ascii() || text.as_bytes()[6] != b'$' {
            return Err("expected 60 characters: $2y$, a two-digit cost, $, 53 more".to_owned());
        }
        let cost: u32 = text[4..6]
            .parse()
            .map_err(|_| "the cost is not a number".to_owned())?;
        if !(4..=31).contains(&cost) {
            return Err(format!("cost {cost} is outside bcrypt's 4 to 31"));
        }
        let mut salt = [0u8; 16];
        let mut hash = [0u8; 23];
        let decodes = bcrypt::BASE_64
            .decode_slice(&text[7..29], &mut salt)
            .is_ok()
            && bcrypt::BASE_64.decode_slice(&text[29..], &mut hash).is_ok();
        if !decodes {
            return Err("the salt or hash is not in bcrypt's base64".to_owned());
        }
        Ok(Bcrypt {
            text: text.to_owned(),
            cost,
        })
    }

    /// A new `$2y$` hash of `password` with a random salt.
    pub(super) fn generate(password: &[u8], cost: Option<u32>) -> Result<Bcrypt, SchemeError> {
        let cost = cost.unwrap_or(BCRYPT_DEFAULT_COST);
        let bad_cost = || SchemeError::BadCost {
            scheme: Scheme::BlfCrypt,
            reason: "the cost must be 4 to 31 (each step doubles the time)".to_owned(),
        };
        if !(4..=31).contains(&cost) {
            return Err(bad_cost());
        }
        let mut salt = [0u8; 16];
        salt.copy_from_slice(&random_bytes(16)?);
        let parts = bcrypt::hash_with_salt(password, cost, salt).map_err(|_| bad_cost())?;
        Ok(Bcrypt {
            text: parts.format_for_version(bcrypt::Version::TwoY),
            cost,
        })
    }

    pub(super) fn to_text(&self) -> String {
        self.text.clone()
    }

    /// Like crypt(3), only the first 72 bytes of `password` count.
    pub(super) fn verify(&self, password: &[u8]) -> Choice {
        // The crate compares with `subtle` and returns the outcome as a
        // bool; an error is a string it cannot parse, which `parse`
        // already refused.
        Choice::from(u8::from(
            bcrypt::verify(password, &self.text).unwrap_or(false),
        ))
    }

    pub(super) fn cost(&self) -> String {
        format!("BLF-CRYPT cost={}", self.cost)
    }

    pub(super) fn dummy(&self) -> Bcrypt {
        Bcrypt {
            text: format!("$2y${:02}${}", self.cost, ".".repeat(53)),
            cost: self.cost,
        }
    }
}

/// An Argon2 hash in PHC form: `$argon2id$v=19$m=65536,t=3,p=1$salt$hash`.
#[derive(Clone)]
pub(super) struct Argon2Hash {
    /// Argon2id or Argon2i.
    variant: argon2::Algorithm,
    /// 0x13, or 0x10 for strings without `v=`.
    version: argon2::Version,
    /// Memory in KiB, passes and lanes, exactly as the string records them.
    params: argon2::Params,
    /// The salt bytes.
    salt: Vec<u8>,
    /// The expected output; its length is part of the computation.
    hash: Vec<u8>,
}

impl Argon2Hash {
    /// Parses a whole `$argon2id$…` or `$argon2i$…` string.
    pub(super) fn parse(text: &str) -> Result<Argon2Hash, String> {
        let mut fields = text.split('$').skip(1);
        let variant = match fields.next() {
            Some("argon2id") => argon2::Algorithm::Argon2id,
            Some("argon2i") => argon2::Algorithm::Argon2i,
            _ => return Err("expected $argon2id$ or $argon2i$".to_owned()),
        };
        let mut field = fields.next().ok_or("no parameters")?;
        let version = match field.strip_prefix("v=") {
            Some(number) => {
                let version = match number {
                    "19" => argon2::Version::V0x13,
                    "16" => argon2::Version::V0x10,
                    _ => return Err(format!("unknown version v={number}")),
                };
                field = fields.next().ok_or("no parameters")?;
                version
            }
            None => argon2::Version::V0x10,
        };
        let (mut m, mut t, mut p) = (None, None, None);
        for pair in field.split(',') {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| format!("parameter `{pair}` is not key=value"))?;
            let slot = match key {
                "m" => &mut m,
                "t" => &mut t,
                "p" => &mut p,
                _ => return Err(format!("parameter `{key}` is not supported (only m, t, p)")),
            };
            let number: u32 = value
                .parse()
                .map_err(|_| format!("{key}={value} is not a number"))?;
            if slot.replace(number).is_some() {
                return Err(format!("parameter `{key}` is given twice"));
            }
        }
        let (Some(m), Some(t), Some(p)) = (m, t, p) else {
            return Err("m, t and p must all be given".to_owned());
        };
        let salt = fields
            .next()
            .and_then(super::decode_base64)
            .ok_or("the salt is missing or not base64")?;
        let hash = fields
            .next()
            .and_then(super::decode_base64)
            .ok_or("the hash is missing or not base64")?;
        if fields.next().is_some() {
            return Err("unexpected `$` after the hash".to_owned());
        }
        if !(argon2::MIN_SALT_LEN..=argon2::MAX_SALT_LEN).contains(&salt.len()) {
            return Err(format!(
                "a {}-byte salt is too short or too long",
                salt.len()
            ));
        }
        let params = argon2::Params::new(m, t, p, Some(hash.len()))
            .map_err(|err| format!("unusable parameters: {err}"))?;
        Ok(Argon2Hash {
            variant,
            version,
            params,
            salt,
            hash,
        })
    }

    /// A new hash of `password` with a random 16-byte salt and Dovecot's
    /// parameters for the variant; `passes` overrides `t`.
    pub(super) fn generate(
        scheme: Scheme,
        password: &[u8],
        passes: Option<u32>,
    ) -> Result<Argon2Hash, SchemeError> {
        let (variant, memory_kib, default_passes) = match scheme {
            Scheme::Argon2i => (argon2::Algorithm::Argon2i, 32 * 1024, 4),
            _ => (argon2::Algorithm::Argon2id, 64 * 1024, 3),
        };
        let bad_cost = |reason: String| SchemeError::BadCost { scheme, reason };
        let params = argon2::Params::new(memory_kib, passes.unwrap_or(default_passes), 1, Some(32))
            .map_err(|err| bad_cost(format!("the number of passes is unusable: {err}")))?;
        let mut stored = Argon2Hash {
            variant,
            version: argon2::Version::V0x13,
            params,
            salt: random_bytes(16)?,
            hash: vec![0; 32],
        };
        let mut hash = vec![0; 32];
        stored
            .compute(password, &mut hash)
            .map_err(|err| bad_cost(err.to_string()))?;
        stored.hash = hash;
        Ok(stored)
    }

    pub(super) fn to_text(&self) -> String {
        format!(
            "${}$v={}$m={},t={},p={}${}${}",
            self.variant.as_str(),
            u32::from(self.version),
            self.params.m_cost(),
            self.params.t_cost(),
            self.params.p_cost(),
            STANDARD_NO_PAD.encode(&self.salt),
            STANDARD_NO_PAD.encode(&self.hash)
        )
    }

    pub(super) fn verify(&self, password: &[u8]) -> Choice {
        let mut computed = vec![0u8; self.hash.len()];
        match self.compute(password, &mut computed) {
            Ok(()) => computed.ct_eq(&self.hash),
            // Out of memory (the string asks for more than there is): no
            // password can be checked against it.
            Err(_) => Choice::from(0),
        }
    }

    fn compute(&self, password: &[u8], out: &mut [u8]) -> Result<(), argon2::Error> {
        argon2::Argon2::new(self.variant, self.version, self.params.clone())
            .hash_password_into(password, &self.salt, out)
    }

    pub(super) fn cost(&self) -> String {
        format!(
            "{} m={} t={} p={}",
            self.variant.as_str().to_ascii_uppercase(),
            self.params.m_cost(),
            self.params.t_cost(),
            self.params.p_cost()
        )
    }

    pub(super) fn dummy(&self) -> Argon2Hash {
        Argon2Hash {
            hash: vec![0; self.hash.len()],
            ..self.clone()
        }
    }
}
