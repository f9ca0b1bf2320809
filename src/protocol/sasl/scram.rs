//! SCRAM-SHA-1 (RFC 5802) and SCRAM-SHA-256 (RFC 7677), server side,
//! without channel binding.
//!
//! ```text
//! C: n,,n=user,r=<client nonce>                  client-first
//!                                                (session fetches the secret)
//! S: r=<client+server nonce>,s=<salt>,i=<count>  server-first
//! C: c=biws,r=<client+server nonce>,p=<proof>    client-final
//! S: v=<server signature>                        server-final, as a challenge
//! C: (empty line)
//! ```
//!
//! Only the GS2 flags `n` (client has no channel binding) and `y` (client
//! has it but believes this server does not, which is true: no `-PLUS`
//! mechanism is offered) are accepted; `p=` is refused. An unknown user, or
//! one whose secret cannot serve this hash, gets a made-up salt derived the
//! same way as a real one and fails at the proof, so the server-first
//! message does not reveal whether the user exists.

use super::secret::{SecretError, SecretKind};
use super::{
    check_authzid, identity, random_fill, Exchange, Failure, Mechanism, Pending, Phase, SaslConfig,
    Secret, SecretWanted, Step,
};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use std::fmt;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// Random bytes in the server's nonce part (24 base64 characters).
const SERVER_NONCE_BYTES: usize = 18;

/// Length of a salt the server derives for a plaintext secret.
const DERIVED_SALT_BYTES: usize = 16;

/// Longest client nonce accepted. The server-first message echoes it, and
/// the challenge line carrying that message must stay within the 512
/// octets of a POP3 reply line (RFC 1939 section 3) together with the
/// server nonce and the longest salt; real clients send 24 to 64.
const MAX_CLIENT_NONCE: usize = 200;

/// Longest salt accepted in a stored secret (Dovecot writes 16 bytes),
/// for the same reason as [`MAX_CLIENT_NONCE`].
const MAX_SALT: usize = 64;

/// Highest iteration count accepted in a stored secret: above this a
/// login would tie up a worker (and the client) for seconds, which is a
/// misconfiguration, not security.
const MAX_ITERATIONS: u32 = 10_000_000;

/// The hash a SCRAM variant is built on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScramHash {
    /// SCRAM-SHA-1 (RFC 5802).
    Sha1,
    /// SCRAM-SHA-256 (RFC 7677).
    Sha256,
}

impl ScramHash {
    /// The SASL mechanism using this hash.
    pub fn mechanism(self) -> Mechanism {
        match self {
            ScramHash::Sha1 => Mechanism::ScramSha1,
            ScramHash::Sha256 => Mechanism::ScramSha256,
        }
    }

    /// Output size in octets: the size of every key and proof.
    pub fn output_len(self) -> usize {
        match self {
            ScramHash::Sha1 => 20,
            ScramHash::Sha256 => 32,
        }
    }

    fn hash(self, data: &[u8]) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(match self {
            ScramHash::Sha1 => Sha1::digest(data).to_vec(),
            ScramHash::Sha256 => Sha256::digest(data).to_vec(),
        })
    }

    fn hmac(self, key: &[u8], data: &[u8]) -> Zeroizing<Vec<u8>> {
        match self {
            ScramHash::Sha1 => hmac::<Hmac<Sha1>>(key, data),
            ScramHash::Sha256 => hmac::<Hmac<Sha256>>(key, data),
        }
    }

    /// RFC 5802's `Hi(password, salt, i)`: PBKDF2 with this hash's HMAC.
    fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(vec![0u8; self.output_len()]);
        match self {
            ScramHash::Sha1 => pbkdf2::pbkdf2_hmac::<Sha1>(password, salt, iterations, &mut out),
            ScramHash::Sha256 => {
                pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out)
            }
        }
        out
    }
}

fn hmac<M: Mac + KeyInit>(key: &[u8], data: &[u8]) -> Zeroizing<Vec<u8>> {
    // HMAC is defined for keys of every length, so this cannot fail.
    let mut mac = <M as KeyInit>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(data);
    Zeroizing::new(mac.finalize().into_bytes().to_vec())
}

/// What the server stores to verify a SCRAM client (RFC 5802 section 3):
/// enough to check a proof, not enough to make one.
#[derive(Clone)]
pub struct ScramKeys {
    /// Which SCRAM variant these keys serve.
    hash: ScramHash,
    /// PBKDF2 iterations the client must use.
    iterations: u32,
    /// The salt the client must use.
    salt: Vec<u8>,
    /// `H(ClientKey)`: checks the client's proof.
    stored_key: Zeroizing<Vec<u8>>,
    /// `HMAC(SaltedPassword, "Server Key")`: signs the server-final message.
    server_key: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for ScramKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ScramKeys({}, i={}, ..)",
            self.hash.mechanism(),
            self.iterations
        )
    }
}

impl ScramKeys {
    /// Derives the keys from a password (as the `hash-password` command or
    /// a server holding a plaintext secret does).
    pub fn derive(hash: ScramHash, password: &[u8], salt: &[u8], iterations: u32) -> ScramKeys {
        let salted = hash.salted_password(password, salt, iterations);
        let client_key = hash.hmac(&salted, b"Client Key");
        ScramKeys {
            hash,
            iterations,
            salt: salt.to_vec(),
            stored_key: hash.hash(&client_key),
            server_key: hash.hmac(&salted, b"Server Key"),
        }
    }

    /// The SCRAM variant these keys serve.
    pub fn hash(&self) -> ScramHash {
        self.hash
    }

    /// Dovecot's stored form:
    /// `{SCRAM-SHA-256}iterations,salt,StoredKey,ServerKey` (base64).
    pub fn to_scheme_string(&self) -> String {
        format!(
            "{{{}}}{},{},{},{}",
            self.hash.mechanism().name(),
            self.iterations,
            STANDARD.encode(&self.salt),
            STANDARD.encode(self.stored_key.as_slice()),
            STANDARD.encode(self.server_key.as_slice()),
        )
    }

    /// Parses the body of a `{SCRAM-SHA-*}` secret.
    pub(super) fn parse(hash: ScramHash, body: &[u8]) -> Result<ScramKeys, SecretError> {
        let scheme = hash.mechanism().name();
        let malformed = |reason| SecretError::Malformed { scheme, reason };
        let text = std::str::from_utf8(body).map_err(|_| malformed("not ASCII"))?;
        let mut fields = text.split(',');
        let (Some(iterations), Some(salt), Some(stored_key), Some(server_key), None) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            return Err(malformed(
                "expected four comma-separated fields: iterations,salt,StoredKey,ServerKey",
            ));
        };
        let iterations = iterations
            .parse::<u32>()
            .ok()
            .filter(|count| (1..=MAX_ITERATIONS).contains(count))
            .ok_or(malformed(
                "iteration count must be a number from 1 to 10000000",
            ))?;
        let decode = |field: &str, what| {
            STANDARD
                .decode(field)
                .map(Zeroizing::new)
                .map_err(|_| malformed(what))
        };
        let salt = decode(salt, "salt is not base64")?;
        if salt.is_empty() || salt.len() > MAX_SALT {
            return Err(malformed("salt must be 1 to 64 bytes"));
        }
        let stored_key = decode(stored_key, "StoredKey is not base64")?;
        let server_key = decode(server_key, "ServerKey is not base64")?;
        if stored_key.len() != hash.output_len() || server_key.len() != hash.output_len() {
            return Err(malformed("key length does not match the hash"));
        }
        Ok(ScramKeys {
            hash,
            iterations,
            salt: salt.to_vec(),
            stored_key,
            server_key,
        })
    }

    /// Whether `password` derives these keys, in constant time.
    pub(super) fn verify_password(&self, password: &[u8]) -> bool {
        let candidate = ScramKeys::derive(self.hash, password, &self.salt, self.iterations);
        let stored = candidate.stored_key.ct_eq(&self.stored_key);
        let server = candidate.server_key.ct_eq(&self.server_key);
        bool::from(stored & server)
    }
}

/// A parsed client-first message, waiting for the user's secret.
pub(super) struct ClientFirst {
    /// The SCRAM variant.
    hash: ScramHash,
    /// The user name from `n=`.
    authcid: String,
    /// The GS2 header as sent (`n,,` or `y,a=...,`); the client-final
    /// `c=` must repeat it exactly.
    gs2_header: String,
    /// The message after the GS2 header: part of the signed AuthMessage.
    client_first_bare: String,
    /// Client nonce followed by the server's part.
    nonce: String,
}

impl ClientFirst {
    pub(super) fn mechanism(&self) -> Mechanism {
        self.hash.mechanism()
    }

    /// Chooses the keys (real or made up) and sends the server-first
    /// message.
    pub(super) fn server_first(self, secret: Option<&Secret>, config: &SaslConfig) -> Step {
        let mechanism = self.hash.mechanism();
        let derived_salt = || user_salt(config, self.hash, &self.authcid);
        let (keys, verdict) = match secret.map(|secret| &secret.kind) {
            Some(SecretKind::Plain(password)) => (
                ScramKeys::derive(
                    self.hash,
                    password.expose(),
                    &derived_salt(),
                    config.scram_iterations,
                ),
                None,
            ),
            Some(SecretKind::Scram(keys)) if keys.hash == self.hash => (keys.clone(), None),
            Some(_) => (
                made_up_keys(config, self.hash, &self.authcid),
                Some(Failure::SecretUnusable {
                    mechanism,
                    secret: secret.map_or("unknown", Secret::kind),
                }),
            ),
            None => (
                made_up_keys(config, self.hash, &self.authcid),
                Some(Failure::BadCredentials),
            ),
        };
        let server_first = format!(
            "r={},s={},i={}",
            self.nonce,
            STANDARD.encode(&keys.salt),
            keys.iterations
        );
        Step::Challenge {
            challenge: server_first.clone().into_bytes(),
            next: Exchange {
                phase: Phase::ScramClientFinal(Box::new(ServerFirstSent {
                    first: self,
                    server_first,
                    keys,
                    verdict,
                })),
            },
        }
    }
}

/// The server-first message is out; the client-final comes next.
pub(super) struct ServerFirstSent {
    /// What the client said first.
    first: ClientFirst,
    /// What the server answered: part of the signed AuthMessage.
    server_first: String,
    /// The keys the proof is checked against (made up for unknown users).
    keys: ScramKeys,
    /// A failure decided before the proof arrived (unknown user, unusable
    /// secret), reported only once the proof has been checked so that
    /// every failure takes the same path.
    verdict: Option<Failure>,
}

impl ServerFirstSent {
    pub(super) fn mechanism(&self) -> Mechanism {
        self.first.mechanism()
    }

    /// Checks the client-final message and answers with the server-final
    /// one.
    pub(super) fn client_final(self, message: &[u8]) -> Step {
        match self.verify(message) {
            Ok(server_signature) => {
                let mut server_final = b"v=".to_vec();
                server_final.extend_from_slice(STANDARD.encode(&*server_signature).as_bytes());
                Step::Challenge {
                    challenge: server_final,
                    next: Exchange {
                        phase: Phase::ScramAcknowledge {
                            authcid: self.first.authcid,
                            mechanism: self.first.hash.mechanism(),
                        },
                    },
                }
            }
            Err(failure) => Step::Failure(failure),
        }
    }

    /// The server signature when the proof is right.
    fn verify(&self, message: &[u8]) -> Result<Zeroizing<Vec<u8>>, Failure> {
        let hash = self.first.hash;
        let text = scram_text(message)?;
        // The proof is the last attribute; everything before it is signed.
        let Some(proof_at) = text.rfind(",p=") else {
            return Err(Failure::Malformed(
                "SCRAM client-final message has no proof",
            ));
        };
        let (without_proof, proof) = (&text[..proof_at], &text[proof_at + 3..]);
        if proof.contains(',') {
            return Err(Failure::Malformed("SCRAM proof must be the last attribute"));
        }
        let mut attributes = without_proof.split(',');
        let binding = attributes
            .next()
            .and_then(|attribute| attribute.strip_prefix("c="))
            .ok_or(Failure::Malformed(
                "SCRAM client-final message must start with c=",
            ))?;
        let binding = STANDARD
            .decode(binding)
            .map_err(|_| Failure::Malformed("SCRAM channel binding is not base64"))?;
        if binding != self.first.gs2_header.as_bytes() {
            return Err(Failure::Malformed(
                "SCRAM channel binding does not repeat the GS2 header",
            ));
        }
        let nonce = attributes
            .next()
            .and_then(|attribute| attribute.strip_prefix("r="))
            .ok_or(Failure::Malformed("SCRAM client-final message lacks r="))?;
        if !bool::from(nonce.as_bytes().ct_eq(self.first.nonce.as_bytes())) {
            return Err(Failure::NonceMismatch);
        }
        extensions(attributes)?;
        let proof = STANDARD
            .decode(proof)
            .map(Zeroizing::new)
            .map_err(|_| Failure::Malformed("SCRAM proof is not base64"))?;
        if proof.len() != hash.output_len() {
            return Err(Failure::Malformed("SCRAM proof has the wrong length"));
        }
        let auth_message = format!(
            "{},{},{}",
            self.first.client_first_bare, self.server_first, without_proof
        );
        let client_signature = hash.hmac(&self.keys.stored_key, auth_message.as_bytes());
        let client_key: Zeroizing<Vec<u8>> = Zeroizing::new(
            proof
                .iter()
                .zip(client_signature.iter())
                .map(|(p, s)| p ^ s)
                .collect(),
        );
        let proof_ok = bool::from(hash.hash(&client_key).ct_eq(&self.keys.stored_key));
        if let Some(verdict) = &self.verdict {
            return Err(verdict.clone());
        }
        if !proof_ok {
            return Err(Failure::BadCredentials);
        }
        Ok(hash.hmac(&self.keys.server_key, auth_message.as_bytes()))
    }
}

/// Parses a client-first message. `server_nonce` fixes the server's nonce
/// part (tests replaying RFC examples); `None` draws a random one.
pub(super) fn client_first(hash: ScramHash, message: &[u8], server_nonce: Option<&str>) -> Step {
    let first = match parse_client_first(hash, message, server_nonce) {
        Ok(first) => first,
        Err(failure) => return Step::Failure(failure),
    };
    Step::NeedsSecret {
        authcid: first.authcid.clone(),
        next: SecretWanted {
            pending: Pending::Scram(Box::new(first)),
        },
    }
}

fn parse_client_first(
    hash: ScramHash,
    message: &[u8],
    server_nonce: Option<&str>,
) -> Result<ClientFirst, Failure> {
    let text = scram_text(message)?;
    let (flag, rest) = text.split_once(',').ok_or(Failure::Malformed(
        "SCRAM client-first message lacks a GS2 header",
    ))?;
    match flag {
        "n" | "y" => {}
        _ if flag.starts_with("p=") => return Err(Failure::ChannelBindingUnsupported),
        _ => return Err(Failure::Malformed("SCRAM GS2 flag must be n, y or p=")),
    }
    let (authzid, bare) = rest.split_once(',').ok_or(Failure::Malformed(
        "SCRAM client-first message lacks a GS2 header",
    ))?;
    let gs2_header = &text[..flag.len() + authzid.len() + 2];
    let authzid = match authzid {
        "" => String::new(),
        _ => {
            let name = authzid.strip_prefix("a=").ok_or(Failure::Malformed(
                "SCRAM authorization identity must be a=",
            ))?;
            identity(&sasl_name(name)?, "empty authorization identity")?
        }
    };
    let mut attributes = bare.split(',');
    let username = match attributes.next() {
        Some(attribute) if attribute.starts_with("m=") => {
            return Err(Failure::Malformed(
                "SCRAM mandatory extension (m=) is not supported",
            ))
        }
        Some(attribute) => attribute
            .strip_prefix("n=")
            .ok_or(Failure::Malformed("SCRAM client-first message lacks n="))?,
        None => return Err(Failure::Malformed("SCRAM client-first message lacks n=")),
    };
    let authcid = identity(&sasl_name(username)?, "empty user name")?;
    check_authzid(authzid.as_bytes(), &authcid)?;
    let client_nonce = attributes
        .next()
        .and_then(|attribute| attribute.strip_prefix("r="))
        .ok_or(Failure::Malformed("SCRAM client-first message lacks r="))?;
    if client_nonce.is_empty()
        || !client_nonce
            .bytes()
            .all(|byte| (0x21..=0x7e).contains(&byte))
    {
        return Err(Failure::Malformed(
            "SCRAM client nonce is not printable ASCII",
        ));
    }
    if client_nonce.len() > MAX_CLIENT_NONCE {
        return Err(Failure::Malformed(
            "SCRAM client nonce longer than 200 characters",
        ));
    }
    extensions(attributes)?;
    let server_nonce = match server_nonce {
        Some(fixed) => fixed.to_owned(),
        None => {
            let mut random = [0u8; SERVER_NONCE_BYTES];
            random_fill(&mut random).map_err(|_| Failure::RandomnessUnavailable)?;
            STANDARD.encode(random)
        }
    };
    Ok(ClientFirst {
        hash,
        authcid,
        gs2_header: gs2_header.to_owned(),
        client_first_bare: bare.to_owned(),
        nonce: format!("{client_nonce}{server_nonce}"),
    })
}

/// A SCRAM message as text: UTF-8 without NUL.
fn scram_text(message: &[u8]) -> Result<&str, Failure> {
    if message.contains(&0) {
        return Err(Failure::Malformed("NUL in SCRAM message"));
    }
    std::str::from_utf8(message).map_err(|_| Failure::Malformed("SCRAM message is not UTF-8"))
}

/// Decodes a `saslname`: `=2C` is a comma, `=3D` an equals sign, and any
/// other `=` is an error (RFC 5802 section 5.1).
fn sasl_name(encoded: &str) -> Result<Vec<u8>, Failure> {
    let bad = Failure::Malformed("SCRAM name has an invalid = escape");
    let mut name = Vec::with_capacity(encoded.len());
    let mut rest = encoded.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        if byte == b'=' {
            let decoded = match tail.get(..2) {
                Some(b"2C") => b',',
                Some(b"3D") => b'=',
                _ => return Err(bad),
            };
            name.push(decoded);
            rest = &tail[2..];
        } else {
            name.push(byte);
            rest = tail;
        }
    }
    Ok(name)
}

/// Optional extensions: `letter=value` each, ignored (RFC 5802 section 7:
/// unknown optional attributes MUST be ignored).
fn extensions<'a>(attributes: impl Iterator<Item = &'a str>) -> Result<(), Failure> {
    for attribute in attributes {
        let bytes = attribute.as_bytes();
        let well_formed = bytes.len() >= 3 && bytes[0].is_ascii_alphabetic() && bytes[1] == b'=';
        if !well_formed {
            return Err(Failure::Malformed("SCRAM attribute is not letter=value"));
        }
    }
    Ok(())
}

/// The salt for `user` when the server derives keys itself: stable across
/// logins and restarts with the same key, different per user and hash.
fn user_salt(config: &SaslConfig, hash: ScramHash, user: &str) -> Vec<u8> {
    let mut input = b"pop3d SCRAM salt\0".to_vec();
    input.extend_from_slice(hash.mechanism().name().as_bytes());
    input.push(0);
    input.extend_from_slice(user.as_bytes());
    let mut salt = ScramHash::Sha256
        .hmac(config.salt_key.as_slice(), &input)
        .to_vec();
    salt.truncate(DERIVED_SALT_BYTES);
    salt
}

/// Keys for a user who does not exist (or whose secret cannot serve this
/// hash): the derived salt a real plaintext user would get, and keys from a
/// password nobody knows. Derived with the same PBKDF2 work, so the reply
/// does not come noticeably sooner than for a real plaintext user.
fn made_up_keys(config: &SaslConfig, hash: ScramHash, user: &str) -> ScramKeys {
    let mut input = b"pop3d SCRAM unknown user\0".to_vec();
    input.extend_from_slice(user.as_bytes());
    let password = ScramHash::Sha256.hmac(config.salt_key.as_slice(), &input);
    ScramKeys::derive(
        hash,
        &password,
        &user_salt(config, hash, user),
        config.scram_iterations,
    )
}

#[cfg(test)]
mod tests {
    use super::super::tests::{b64, challenge, config};
    use super::*;

    /// RFC 5802 section 5.
    const SHA1_SALT: &str = "QSXCR+Q6sek8bf92";
    const SHA1_CLIENT_FIRST: &str = "n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL";
    const SHA1_SERVER_NONCE: &str = "3rfcNHYJY1ZVvWVs7j";
    const SHA1_SERVER_FIRST: &str =
        "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096";
    const SHA1_CLIENT_FINAL: &str =
        "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=";
    const SHA1_SERVER_FINAL: &str = "v=rmF9pqV8S7suAoZWja4dJRkFsKQ=";

    /// RFC 7677 section 3.
    const SHA256_SALT: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";
    const SHA256_CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
    const SHA256_SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    const SHA256_SERVER_FIRST: &str =
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    const SHA256_CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    const SHA256_SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

    /// The same keys as gsasl's `--mkpasswd` output for RFC 7677's
    /// example (an independent implementation), in Dovecot's form.
    const SHA256_STORED: &[u8] = b"{SCRAM-SHA-256}4096,W22ZaJ0SNY7soEsUEjb6gQ==,WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=,wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";

    fn needs_secret(step: Step) -> (String, SecretWanted) {
        match step {
            Step::NeedsSecret { authcid, next } => (authcid, next),
            other => panic!("expected NeedsSecret, got {other:?}"),
        }
    }

    fn failure(step: Step) -> Failure {
        match step {
            Step::Failure(failure) => failure,
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    fn rfc_keys(hash: ScramHash, salt: &str) -> Secret {
        Secret::scram(ScramKeys::derive(
            hash,
            b"pencil",
            &STANDARD.decode(salt).unwrap(),
            4096,
        ))
    }

    /// Runs an exchange from the client-first message with a fixed server
    /// nonce, returning the server-first challenge and the exchange.
    fn to_server_first(
        hash: ScramHash,
        client_first_message: &str,
        server_nonce: &str,
        secret: Option<&Secret>,
    ) -> (String, Exchange) {
        let (authcid, wanted) = needs_secret(client_first(
            hash,
            client_first_message.as_bytes(),
            Some(server_nonce),
        ));
        assert_eq!(authcid, "user");
        let (server_first, exchange) = challenge(wanted.provide(secret, &config()));
        (String::from_utf8(server_first).unwrap(), exchange)
    }

    fn replay_rfc(hash: ScramHash, secret: &Secret, lines: [&str; 5]) {
        let [client_first_message, server_nonce, server_first, client_final, server_final] = lines;
        let (sent, exchange) =
            to_server_first(hash, client_first_message, server_nonce, Some(secret));
        assert_eq!(sent, server_first);
        let (sent, exchange) = challenge(exchange.respond(b64(client_final.as_bytes()).as_bytes()));
        assert_eq!(String::from_utf8(sent).unwrap(), server_final);
        assert_eq!(exchange.mechanism(), hash.mechanism());
        assert!(matches!(exchange.respond(b""), Step::Success { authcid } if authcid == "user"));
    }

    const SHA1_RFC: [&str; 5] = [
        SHA1_CLIENT_FIRST,
        SHA1_SERVER_NONCE,
        SHA1_SERVER_FIRST,
        SHA1_CLIENT_FINAL,
        SHA1_SERVER_FINAL,
    ];
    const SHA256_RFC: [&str; 5] = [
        SHA256_CLIENT_FIRST,
        SHA256_SERVER_NONCE,
        SHA256_SERVER_FIRST,
        SHA256_CLIENT_FINAL,
        SHA256_SERVER_FINAL,
    ];

    #[test]
    fn rfc_5802_scram_sha_1_example() {
        replay_rfc(
            ScramHash::Sha1,
            &rfc_keys(ScramHash::Sha1, SHA1_SALT),
            SHA1_RFC,
        );
    }

    #[test]
    fn rfc_7677_scram_sha_256_example() {
        replay_rfc(
            ScramHash::Sha256,
            &rfc_keys(ScramHash::Sha256, SHA256_SALT),
            SHA256_RFC,
        );
    }

    #[test]
    fn rfc_7677_example_with_a_stored_dovecot_secret() {
        let secret = Secret::parse(SHA256_STORED).unwrap();
        replay_rfc(ScramHash::Sha256, &secret, SHA256_RFC);
        // And the keys derived here print as that same stored form.
        let derived = ScramKeys::derive(
            ScramHash::Sha256,
            b"pencil",
            &STANDARD.decode(SHA256_SALT).unwrap(),
            4096,
        );
        assert_eq!(derived.to_scheme_string().as_bytes(), SHA256_STORED);
    }

    #[test]
    fn wrong_proof_fails() {
        let secret = Secret::parse(SHA256_STORED).unwrap();
        let (_, exchange) = to_server_first(
            ScramHash::Sha256,
            SHA256_CLIENT_FIRST,
            SHA256_SERVER_NONCE,
            Some(&secret),
        );
        let tampered = SHA256_CLIENT_FINAL.replace("p=dHzb", "p=dHza");
        assert_eq!(
            failure(exchange.respond(b64(tampered.as_bytes()).as_bytes())),
            Failure::BadCredentials
        );
        // The right proof for another password fails too.
        let wrong = Secret::scram(ScramKeys::derive(
            ScramHash::Sha256,
            b"pencil2",
            &STANDARD.decode(SHA256_SALT).unwrap(),
            4096,
        ));
        let (_, exchange) = to_server_first(
            ScramHash::Sha256,
            SHA256_CLIENT_FIRST,
            SHA256_SERVER_NONCE,
            Some(&wrong),
        );
        assert_eq!(
            failure(exchange.respond(b64(SHA256_CLIENT_FINAL.as_bytes()).as_bytes())),
            Failure::BadCredentials
        );
    }

    #[test]
    fn tampered_nonce_fails() {
        let secret = rfc_keys(ScramHash::Sha1, SHA1_SALT);
        let (_, exchange) = to_server_first(
            ScramHash::Sha1,
            SHA1_CLIENT_FIRST,
            SHA1_SERVER_NONCE,
            Some(&secret),
        );
        let tampered = SHA1_CLIENT_FINAL.replace("Vs7j,", "Vs7k,");
        assert_eq!(
            failure(exchange.respond(b64(tampered.as_bytes()).as_bytes())),
            Failure::NonceMismatch
        );
        // Only the client part echoed back is also a mismatch.
        let (_, exchange) = to_server_first(
            ScramHash::Sha1,
            SHA1_CLIENT_FIRST,
            SHA1_SERVER_NONCE,
            Some(&secret),
        );
        let truncated = SHA1_CLIENT_FINAL.replace("3rfcNHYJY1ZVvWVs7j", "");
        assert_eq!(
            failure(exchange.respond(b64(truncated.as_bytes()).as_bytes())),
            Failure::NonceMismatch
        );
    }

    #[test]
    fn channel_binding_requested_is_refused() {
        let step = client_first(
            ScramHash::Sha256,
            b"p=tls-unique,,n=user,r=rOprNGfwEbeRWgbNEkqO",
            None,
        );
        assert_eq!(failure(step), Failure::ChannelBindingUnsupported);
        // Through the public entry point, as an initial response.
        let step = Exchange::start(
            Mechanism::ScramSha256,
            Some(&b64(b"p=tls-server-end-point,,n=user,r=abc")),
            &config(),
        );
        assert_eq!(failure(step), Failure::ChannelBindingUnsupported);
    }

    #[test]
    fn y_flag_is_accepted_and_must_be_repeated_in_c() {
        let secret = rfc_keys(ScramHash::Sha1, SHA1_SALT);
        // The proof depends on the exact messages, so compute it as a
        // client would.
        let (server_first, exchange) = to_server_first(
            ScramHash::Sha1,
            "y,,n=user,r=fyko+d2lbbFgONRv9qkxdawL",
            SHA1_SERVER_NONCE,
            Some(&secret),
        );
        assert_eq!(server_first, SHA1_SERVER_FIRST);
        let final_message = client_final_message(
            ScramHash::Sha1,
            b"pencil",
            "n=user,r=fyko+d2lbbFgONRv9qkxdawL",
            &server_first,
            "y,,",
        );
        let (_, exchange) = challenge(exchange.respond(b64(final_message.as_bytes()).as_bytes()));
        assert!(matches!(exchange.respond(b""), Step::Success { .. }));

        // c=biws ("n,,") after a "y,," header is a downgrade: refused.
        let (server_first, exchange) = to_server_first(
            ScramHash::Sha1,
            "y,,n=user,r=fyko+d2lbbFgONRv9qkxdawL",
            SHA1_SERVER_NONCE,
            Some(&secret),
        );
        let final_message = client_final_message(
            ScramHash::Sha1,
            b"pencil",
            "n=user,r=fyko+d2lbbFgONRv9qkxdawL",
            &server_first,
            "n,,",
        );
        assert!(matches!(
            failure(exchange.respond(b64(final_message.as_bytes()).as_bytes())),
            Failure::Malformed(_)
        ));
    }

    #[test]
    fn plaintext_secret_gets_a_stable_derived_salt() {
        let secret = Secret::plain(b"pencil");
        let first = to_server_first(ScramHash::Sha256, SHA256_CLIENT_FIRST, "x", Some(&secret)).0;
        let second = to_server_first(ScramHash::Sha256, SHA256_CLIENT_FIRST, "x", Some(&secret)).0;
        assert_eq!(first, second);
        assert!(first.ends_with(",i=4096"));
        // A full round trip with a client computing from the password.
        let (server_first, exchange) =
            to_server_first(ScramHash::Sha256, SHA256_CLIENT_FIRST, "x", Some(&secret));
        let final_message = client_final_message(
            ScramHash::Sha256,
            b"pencil",
            "n=user,r=rOprNGfwEbeRWgbNEkqO",
            &server_first,
            "n,,",
        );
        let (server_final, exchange) =
            challenge(exchange.respond(b64(final_message.as_bytes()).as_bytes()));
        assert!(server_final.starts_with(b"v="));
        assert!(matches!(exchange.respond(b""), Step::Success { .. }));
    }

    #[test]
    fn unknown_user_looks_like_a_plaintext_user_until_the_proof() {
        let known = to_server_first(
            ScramHash::Sha256,
            SHA256_CLIENT_FIRST,
            "x",
            Some(&Secret::plain(b"pencil")),
        );
        let (unknown_first, exchange) =
            to_server_first(ScramHash::Sha256, SHA256_CLIENT_FIRST, "x", None);
        // Same user name, same derived salt and count: nothing to tell
        // them apart by.
        assert_eq!(known.0, unknown_first);
        let final_message = client_final_message(
            ScramHash::Sha256,
            b"pencil",
            "n=user,r=rOprNGfwEbeRWgbNEkqO",
            &unknown_first,
            "n,,",
        );
        assert_eq!(
            failure(exchange.respond(b64(final_message.as_bytes()).as_bytes())),
            Failure::BadCredentials
        );
    }

    #[test]
    fn secret_for_another_hash_is_unusable() {
        let sha1 = rfc_keys(ScramHash::Sha1, SHA1_SALT);
        let (_, exchange) = to_server_first(
            ScramHash::Sha256,
            SHA256_CLIENT_FIRST,
            SHA256_SERVER_NONCE,
            Some(&sha1),
        );
        assert_eq!(
            failure(exchange.respond(b64(SHA256_CLIENT_FINAL.as_bytes()).as_bytes())),
            Failure::SecretUnusable {
                mechanism: Mechanism::ScramSha256,
                secret: "SCRAM-SHA-1"
            }
        );
    }

    #[test]
    fn authzid_must_match_and_names_are_unescaped() {
        assert_eq!(
            failure(client_first(
                ScramHash::Sha1,
                b"n,a=admin,n=user,r=abc",
                None
            )),
            Failure::Impersonation
        );
        let (authcid, _) = needs_secret(client_first(
            ScramHash::Sha1,
            b"n,a=user,n=user,r=abc",
            None,
        ));
        assert_eq!(authcid, "user");
        let (authcid, _) =
            needs_secret(client_first(ScramHash::Sha1, b"n,,n=a=2Cb=3Dc,r=abc", None));
        assert_eq!(authcid, "a,b=c");
    }

    #[test]
    fn malformed_client_first_messages_fail() {
        for message in [
            &b""[..],
            b"n",
            b"n,",
            b"x,,n=user,r=abc",
            b"n,b=admin,n=user,r=abc",
            b"n,,m=ext,n=user,r=abc",
            b"n,,r=abc,n=user",
            b"n,,n=user",
            b"n,,n=user,r=",
            b"n,,n=,r=abc",
            b"n,,n=us=2Der,r=abc",
            b"n,,n=user=,r=abc",
            b"n,,n=user,r=a bc",
            b"n,,n=user,r=abc,bogus",
            b"n,,n=us\0er,r=abc",
            b"n,,n=us\xffer,r=abc",
        ] {
            assert!(
                matches!(
                    client_first(ScramHash::Sha256, message, None),
                    Step::Failure(Failure::Malformed(_))
                ),
                "{:?}",
                String::from_utf8_lossy(message)
            );
        }
        // Optional extensions are ignored.
        assert!(matches!(
            client_first(ScramHash::Sha256, b"n,,n=user,r=abc,x=whatever", None),
            Step::NeedsSecret { .. }
        ));
    }

    #[test]
    fn malformed_client_final_messages_fail() {
        let secret = rfc_keys(ScramHash::Sha1, SHA1_SALT);
        let nonce = "fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j";
        for message in [
            String::new(),
            format!("c=biws,r={nonce}"),
            format!("r={nonce},c=biws,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="),
            format!("c=biws,r={nonce},p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=,x=1"),
            format!("c=!!!!,r={nonce},p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="),
            format!("c=eSws,r={nonce},p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="),
            format!("c=biws,r={nonce},p=v0X8v3Bz2T0CJGbJ"),
            format!("c=biws,r={nonce},p=v0X8v3Bz2T0CJGbJQyF0X+HI4T"),
            format!("c=biws,r={nonce},bad,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="),
        ] {
            let (_, exchange) = to_server_first(
                ScramHash::Sha1,
                SHA1_CLIENT_FIRST,
                SHA1_SERVER_NONCE,
                Some(&secret),
            );
            assert!(
                matches!(
                    exchange.respond(b64(message.as_bytes()).as_bytes()),
                    Step::Failure(Failure::Malformed(_))
                ),
                "{message}"
            );
        }
        // An optional extension before the proof is signed and accepted.
        let (server_first, exchange) = to_server_first(
            ScramHash::Sha1,
            SHA1_CLIENT_FIRST,
            SHA1_SERVER_NONCE,
            Some(&secret),
        );
        let with_extension = client_final_message_with(
            ScramHash::Sha1,
            b"pencil",
            "n=user,r=fyko+d2lbbFgONRv9qkxdawL",
            &server_first,
            "n,,",
            ",x=ext",
        );
        assert!(matches!(
            exchange.respond(b64(with_extension.as_bytes()).as_bytes()),
            Step::Challenge { .. }
        ));
    }

    #[test]
    fn acknowledgement_must_be_empty() {
        let secret = rfc_keys(ScramHash::Sha1, SHA1_SALT);
        let (_, exchange) = to_server_first(
            ScramHash::Sha1,
            SHA1_CLIENT_FIRST,
            SHA1_SERVER_NONCE,
            Some(&secret),
        );
        let (_, exchange) =
            challenge(exchange.respond(b64(SHA1_CLIENT_FINAL.as_bytes()).as_bytes()));
        assert!(matches!(
            failure(exchange.respond(b"eA==")),
            Failure::Malformed(_)
        ));
    }

    #[test]
    fn without_initial_response_the_first_challenge_is_empty() {
        let (prompt, exchange) = challenge(Exchange::start(Mechanism::ScramSha1, None, &config()));
        assert!(prompt.is_empty());
        let (authcid, _) =
            needs_secret(exchange.respond(b64(SHA1_CLIENT_FIRST.as_bytes()).as_bytes()));
        assert_eq!(authcid, "user");
    }

    /// Found by the `sasl` fuzz target: a client nonce of 900 characters
    /// came back in a 1128-octet challenge line, beyond the 512 octets of a
    /// POP3 reply line that clients may rely on.
    #[test]
    fn client_nonces_are_bounded_so_challenges_fit_a_reply_line() {
        let long = format!("n,,n=user,r={}", "~".repeat(MAX_CLIENT_NONCE + 1));
        assert!(matches!(
            failure(client_first(ScramHash::Sha256, long.as_bytes(), None)),
            Failure::Malformed(_)
        ));
        // The worst case accepted: longest nonce, longest stored salt,
        // largest iteration count.
        let salt = STANDARD.encode([7u8; MAX_SALT]);
        let key = STANDARD.encode([1u8; 32]);
        let secret =
            Secret::parse(format!("{{SCRAM-SHA-256}}10000000,{salt},{key},{key}").as_bytes())
                .unwrap();
        let longest = format!("n,,n=user,r={}", "~".repeat(MAX_CLIENT_NONCE));
        let (_, wanted) = needs_secret(client_first(ScramHash::Sha256, longest.as_bytes(), None));
        let (server_first, _) = challenge(wanted.provide(Some(&secret), &config()));
        let mut line = Vec::new();
        super::super::challenge_line(&server_first, &mut line);
        assert!(line.len() <= 512, "challenge line of {} octets", line.len());
        assert!(Secret::parse(
            format!(
                "{{SCRAM-SHA-256}}4096,{},{key},{key}",
                STANDARD.encode([7u8; MAX_SALT + 1])
            )
            .as_bytes()
        )
        .is_err());
    }

    #[test]
    fn random_server_nonces_extend_the_client_nonce() {
        let (_, wanted) = needs_secret(Exchange::start(
            Mechanism::ScramSha256,
            Some(&b64(SHA256_CLIENT_FIRST.as_bytes())),
            &config(),
        ));
        let (first, _) = challenge(wanted.provide(Some(&Secret::plain(b"pencil")), &config()));
        let (_, wanted) = needs_secret(Exchange::start(
            Mechanism::ScramSha256,
            Some(&b64(SHA256_CLIENT_FIRST.as_bytes())),
            &config(),
        ));
        let (second, _) = challenge(wanted.provide(Some(&Secret::plain(b"pencil")), &config()));
        let nonce = |message: &[u8]| {
            String::from_utf8(message.to_vec())
                .unwrap()
                .split(',')
                .next()
                .unwrap()
                .to_owned()
        };
        assert!(nonce(&first).starts_with("r=rOprNGfwEbeRWgbNEkqO"));
        assert_eq!(nonce(&first).len(), "r=rOprNGfwEbeRWgbNEkqO".len() + 24);
        assert_ne!(nonce(&first), nonce(&second));
    }

    /// A client-final message as a client computes it from the password.
    fn client_final_message(
        hash: ScramHash,
        password: &[u8],
        client_first_bare: &str,
        server_first: &str,
        gs2_header: &str,
    ) -> String {
        client_final_message_with(
            hash,
            password,
            client_first_bare,
            server_first,
            gs2_header,
            "",
        )
    }

    fn client_final_message_with(
        hash: ScramHash,
        password: &[u8],
        client_first_bare: &str,
        server_first: &str,
        gs2_header: &str,
        extension: &str,
    ) -> String {
        let mut fields = server_first.split(',');
        let nonce = fields.next().unwrap().strip_prefix("r=").unwrap();
        let salt = STANDARD
            .decode(fields.next().unwrap().strip_prefix("s=").unwrap())
            .unwrap();
        let iterations: u32 = fields
            .next()
            .unwrap()
            .strip_prefix("i=")
            .unwrap()
            .parse()
            .unwrap();
        let salted = hash.salted_password(password, &salt, iterations);
        let client_key = hash.hmac(&salted, b"Client Key");
        let stored_key = hash.hash(&client_key);
        let without_proof = format!(
            "c={},r={nonce}{extension}",
            STANDARD.encode(gs2_header.as_bytes())
        );
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let signature = hash.hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(signature.iter())
            .map(|(k, s)| k ^ s)
            .collect();
        format!("{without_proof},p={}", STANDARD.encode(proof))
    }
}
