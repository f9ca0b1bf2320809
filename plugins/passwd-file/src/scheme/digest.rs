//! The digest schemes: salted SHA (`SSHA`, `SSHA256`, `SSHA512`), the
//! HMAC-MD5 context of `CRAM-MD5`, and the keys of `SCRAM-SHA-1` and
//! `SCRAM-SHA-256`.
//!
//! CRAM-MD5 and SCRAM are stored in forms a challenge-response exchange
//! can work from without the plaintext; a plaintext password is checked
//! against them by deriving the same form from it and comparing.

use super::{random_bytes, Scheme, SchemeError};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{KeyInit, Mac};
use sha2::Digest;
use subtle::{Choice, ConstantTimeEq};

/// Salt length `pop3d pw` gives salted SHA (Dovecot uses 4 bytes, and
/// reads any length).
const SSHA_SALT_LEN: usize = 8;

/// SCRAM iterations `pop3d pw` uses unless told: Dovecot's, and RFC
/// 7677's minimum.
const SCRAM_DEFAULT_ITERATIONS: u32 = 4096;

/// The hash of a salted-SHA scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ShaKind {
    /// `SSHA`.
    Sha1,
    /// `SSHA256`.
    Sha256,
    /// `SSHA512`.
    Sha512,
}

impl ShaKind {
    /// `SSHA512` for anything not `SSHA` or `SSHA256`: callers pass only
    /// the three.
    fn of(scheme: Scheme) -> ShaKind {
        match scheme {
            Scheme::Ssha => ShaKind::Sha1,
            Scheme::Ssha256 => ShaKind::Sha256,
            _ => ShaKind::Sha512,
        }
    }

    fn digest_len(self) -> usize {
        match self {
            ShaKind::Sha1 => 20,
            ShaKind::Sha256 => 32,
            ShaKind::Sha512 => 64,
        }
    }

    fn digest(self, password: &[u8], salt: &[u8]) -> Vec<u8> {
        fn of<D: Digest>(password: &[u8], salt: &[u8]) -> Vec<u8> {
            D::new()
                .chain_update(password)
                .chain_update(salt)
                .finalize()
                .to_vec()
        }
        match self {
            ShaKind::Sha1 => of::<sha1::Sha1>(password, salt),
            ShaKind::Sha256 => of::<sha2::Sha256>(password, salt),
            ShaKind::Sha512 => of::<sha2::Sha512>(password, salt),
        }
    }

    fn scheme(self) -> Scheme {
        match self {
            ShaKind::Sha1 => Scheme::Ssha,
            ShaKind::Sha256 => Scheme::Ssha256,
            ShaKind::Sha512 => Scheme::Ssha512,
        }
    }
}

/// A salted SHA digest: `digest(password ‖ salt)` followed by the salt.
#[derive(Clone)]
pub(super) struct Salted {
    /// Which SHA.
    kind: ShaKind,
    /// The expected digest.
    hash: Vec<u8>,
    /// Whatever follows the digest.
    salt: Vec<u8>,
}

impl Salted {
    /// Splits decoded data into digest and salt.
    pub(super) fn from_bytes(scheme: Scheme, mut bytes: Vec<u8>) -> Result<Salted, String> {
        let kind = ShaKind::of(scheme);
        let digest_len = kind.digest_len();
        if bytes.len() <= digest_len {
            return Err(format!(
                "{} bytes is too short: the digest alone is {digest_len}, and a salt follows",
                bytes.len()
            ));
        }
        let salt = bytes.split_off(digest_len);
        Ok(Salted {
            kind,
            hash: bytes,
            salt,
        })
    }

    pub(super) fn generate(scheme: Scheme, password: &[u8]) -> Result<Salted, SchemeError> {
        let kind = ShaKind::of(scheme);
        let salt = random_bytes(SSHA_SALT_LEN)?;
        Ok(Salted {
            kind,
            hash: kind.digest(password, &salt),
            salt,
        })
    }

    pub(super) fn to_base64(&self) -> String {
        STANDARD.encode([self.hash.as_slice(), &self.salt].concat())
    }

    pub(super) fn verify(&self, password: &[u8]) -> Choice {
        self.kind.digest(password, &self.salt).ct_eq(&self.hash)
    }

    pub(super) fn cost(&self) -> String {
        self.kind.scheme().name().to_owned()
    }

    pub(super) fn dummy(&self) -> Salted {
        Salted {
            hash: vec![0; self.hash.len()],
            ..self.clone()
        }
    }
}

/// MD5's initial state (RFC 1321, 3.3).
const MD5_INITIAL_STATE: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];

/// Dovecot's CRAM-MD5 form: the MD5 states of HMAC-MD5 keyed with the
/// password after its outer and inner pad blocks, each as four
/// little-endian words (outer first). Enough to compute any HMAC-MD5 with
/// that key, so it is as good as the password for CRAM-MD5, but not for
/// anything else.
#[derive(Clone)]
pub(super) struct CramMd5 {
    /// The 32 bytes, as stored.
    context: [u8; 32],
}

impl CramMd5 {
    pub(super) fn from_bytes(bytes: &[u8]) -> Result<CramMd5, String> {
        let context = bytes
            .try_into()
            .map_err(|_| format!("expected 32 bytes (64 hex digits), not {}", bytes.len()))?;
        Ok(CramMd5 { context })
    }

    /// The context of HMAC-MD5 keyed with `password` (RFC 2104: a key
    /// longer than MD5's 64-byte block is replaced by its MD5 first).
    ///
    /// Needs MD5's block function from a chosen state, which md-5 exposes
    /// as `block_api::compress`; the states are never finalised, so no
    /// MD5 padding is involved.
    pub(super) fn from_password(password: &[u8]) -> CramMd5 {
        let mut key = [0u8; 64];
        if password.len() > key.len() {
            key[..16].copy_from_slice(&md5::Md5::digest(password));
        } else {
            key[..password.len()].copy_from_slice(password);
        }
        let state_after = |pad: u8| {
            let block = key.map(|byte| byte ^ pad);
            let mut state = MD5_INITIAL_STATE;
            md5::block_api::compress(&mut state, &[block]);
            state
        };
        let (outer, inner) = (state_after(0x5c), state_after(0x36));
        let mut context = [0u8; 32];
        for (bytes, word) in context.chunks_exact_mut(4).zip(outer.iter().chain(&inner)) {
            bytes.copy_from_slice(&word.to_le_bytes());
        }
        key.fill(0);
        CramMd5 { context }
    }

    pub(super) fn to_hex(&self) -> String {
        super::encode_hex(&self.context)
    }

    pub(super) fn verify(&self, password: &[u8]) -> Choice {
        CramMd5::from_password(password)
            .context
            .ct_eq(&self.context)
    }

    pub(super) fn dummy() -> CramMd5 {
        CramMd5 { context: [0; 32] }
    }
}

/// SCRAM keys (RFC 5802): `iterations,salt,StoredKey,ServerKey` with the
/// three values in base64, as Dovecot stores them.
#[derive(Clone)]
pub(super) struct Scram {
    /// SCRAM-SHA-256 rather than SCRAM-SHA-1.
    sha256: bool,
    /// PBKDF2 iterations.
    iterations: u32,
    /// PBKDF2 salt.
    salt: Vec<u8>,
    /// H(HMAC(SaltedPassword, "Client Key")).
    stored_key: Vec<u8>,
    /// HMAC(SaltedPassword, "Server Key").
    server_key: Vec<u8>,
}

impl Scram {
    pub(super) fn parse(scheme: Scheme, text: &str) -> Result<Scram, String> {
        let sha256 = scheme == Scheme::ScramSha256;
        let fields: Vec<&str> = text.split(',').collect();
        let [iterations, salt, stored_key, server_key] = fields[..] else {
            return Err("expected iterations,salt,StoredKey,ServerKey".to_owned());
        };
        let iterations: u32 = iterations
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .ok_or("the iteration count is not a positive number")?;
        let key_len = if sha256 { 32 } else { 20 };
        let decode_key = |text: &str, name: &str| {
            super::decode_base64(text)
                .filter(|key| key.len() == key_len)
                .ok_or_else(|| format!("{name} is not {key_len} bytes of base64"))
        };
        Ok(Scram {
            sha256,
            iterations,
            salt: super::decode_base64(salt)
                .filter(|salt| !salt.is_empty())
                .ok_or("the salt is empty or not base64")?,
            stored_key: decode_key(stored_key, "StoredKey")?,
            server_key: decode_key(server_key, "ServerKey")?,
        })
    }

    pub(super) fn generate(
        scheme: Scheme,
        password: &[u8],
        iterations: Option<u32>,
    ) -> Result<Scram, SchemeError> {
        let iterations = iterations.unwrap_or(SCRAM_DEFAULT_ITERATIONS);
        if iterations < SCRAM_DEFAULT_ITERATIONS {
            return Err(SchemeError::BadCost {
                scheme,
                reason: format!(
                    "at least {SCRAM_DEFAULT_ITERATIONS} iterations (RFC 7677's minimum)"
                ),
            });
        }
        let mut keys = Scram {
            sha256: scheme == Scheme::ScramSha256,
            iterations,
            salt: random_bytes(16)?,
            stored_key: Vec::new(),
            server_key: Vec::new(),
        };
        (keys.stored_key, keys.server_key) = keys.derive(password);
        Ok(keys)
    }

    /// StoredKey and ServerKey for `password` with this salt and count.
    fn derive(&self, password: &[u8]) -> (Vec<u8>, Vec<u8>) {
        if self.sha256 {
            derive_keys::<sha2::Sha256>(password, &self.salt, self.iterations)
        } else {
            derive_keys::<sha1::Sha1>(password, &self.salt, self.iterations)
        }
    }

    pub(super) fn to_text(&self) -> String {
        format!(
            "{},{},{},{}",
            self.iterations,
            STANDARD.encode(&self.salt),
            STANDARD.encode(&self.stored_key),
            STANDARD.encode(&self.server_key)
        )
    }

    /// Both keys must match: a ServerKey that does not belong to the
    /// password would fail every SCRAM login, so it is not a good password.
    pub(super) fn verify(&self, password: &[u8]) -> Choice {
        let (stored_key, server_key) = self.derive(password);
        stored_key.ct_eq(&self.stored_key) & server_key.ct_eq(&self.server_key)
    }

    pub(super) fn cost(&self) -> String {
        let name = if self.sha256 {
            "SCRAM-SHA-256"
        } else {
            "SCRAM-SHA-1"
        };
        format!("{name} iterations={}", self.iterations)
    }

    pub(super) fn dummy(&self) -> Scram {
        Scram {
            stored_key: vec![0; self.stored_key.len()],
            server_key: vec![0; self.server_key.len()],
            ..self.clone()
        }
    }
}

/// RFC 5802: SaltedPassword = PBKDF2-HMAC-H(password, salt, i); StoredKey =
/// H(HMAC(SaltedPassword, "Client Key")); ServerKey = HMAC(SaltedPassword,
/// "Server Key"). The password is used as it is (no SASLprep), as Dovecot
/// does.
fn derive_keys<D>(password: &[u8], salt: &[u8], iterations: u32) -> (Vec<u8>, Vec<u8>)
where
    D: hmac::EagerHash + Digest,
{
    let mut salted = vec![0u8; <D as Digest>::output_size()];
    pbkdf2::pbkdf2_hmac::<D>(password, salt, iterations, &mut salted);
    let hmac = |message: &[u8]| {
        // HMAC takes a key of any length.
        let mut mac = <hmac::Hmac<D> as KeyInit>::new_from_slice(&salted)
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        mac.update(message);
        mac.finalize().into_bytes().to_vec()
    };
    let client_key = hmac(b"Client Key");
    let server_key = hmac(b"Server Key");
    let stored_key = D::digest(&client_key).to_vec();
    salted.fill(0);
    (stored_key, server_key)
}
