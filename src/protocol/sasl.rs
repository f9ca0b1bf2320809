//! SASL server mechanisms for the AUTH command (RFC 5034), and APOP digest
//! checking (RFC 1939 section 7), without any I/O.
//!
//! An AUTH exchange is a chain of [`Step`]s. [`Exchange::start`] takes the
//! mechanism and the optional initial response from the AUTH command line;
//! every later client line goes to [`Exchange::respond`]. Each call consumes
//! the exchange and returns the next step, which tells the session what to do:
//!
//! - [`Step::Challenge`]: send `+ <base64>` (see [`challenge_line`]) and
//!   feed the client's next line to the returned exchange;
//! - [`Step::CheckPassword`]: PLAIN and LOGIN end here; the session checks
//!   the password with its authenticator, exactly as for USER/PASS;
//! - [`Step::NeedsSecret`]: CRAM-MD5 and SCRAM need the user's stored
//!   secret; the session asks the auth backend and passes the answer (or
//!   `None` for an unknown user) to [`SecretWanted::provide`];
//! - [`Step::Success`], [`Step::Failure`], [`Step::Cancelled`]: the end.
//!   `Failure` knows the `-ERR` text the client should see and whether it
//!   was a credential failure (answered after the failed-login delay).
//!
//! SCRAM's server-final message (`v=...`) is sent as one more challenge,
//! which the client answers with an empty line: POP3 has no "success with
//! additional data" (RFC 5034 section 4, RFC 4422 section 3.6), so the
//! mechanism handles that round itself and the session never sees it.
//!
//! ```
//! use pop3d::protocol::sasl::{Exchange, Mechanism, SaslConfig, Step};
//!
//! let config = SaslConfig::new("pop.example.org", [7; 32]);
//! // "\0tim\0tanstaaf", the RFC 4616 form of user tim's password.
//! let step = Exchange::start(Mechanism::Plain, Some("AHRpbQB0YW5zdGFhZg=="), &config);
//! let Step::CheckPassword { authcid, password } = step else { panic!() };
//! assert_eq!((authcid.as_str(), password.expose()), ("tim", &b"tanstaaf"[..]));
//! ```
//!
//! # Secrets
//! Backends that can reveal a user's secret return either the plaintext
//! password ([`Secret::plain`]) or a Dovecot-style `{SCHEME}` string
//! ([`Secret::parse`]): `{PLAIN}`, `{CRAM-MD5}` (the HMAC-MD5 context),
//! `{SCRAM-SHA-1}` and `{SCRAM-SHA-256}` (`iterations,salt,StoredKey,ServerKey`).
//! A plaintext secret serves every mechanism: for SCRAM the server derives
//! the keys with a per-user salt made from a server key and the user name,
//! so a user sees the same salt on every login. A stored SCRAM secret serves
//! only its own SCRAM variant (and PLAIN/LOGIN through
//! [`Secret::verify_password`]).
//!
//! Names and passwords are compared as sent: no SASLprep, which RFC 4616
//! allows and which matches what Dovecot stores for SCRAM. ASCII passwords,
//! the overwhelming majority, are unchanged by SASLprep anyway.
//!
//! # Layout
//! - `sasl.rs`: mechanisms, steps, failures, configuration, base64 framing.
//! - `sasl/plaintext.rs`: PLAIN (RFC 4616) and LOGIN
//!   (draft-murchison-sasl-login).
//! - `sasl/cram_md5.rs`: CRAM-MD5 (RFC 2195) and Dovecot's HMAC-MD5 context.
//! - `sasl/scram.rs`: SCRAM-SHA-1 and SCRAM-SHA-256 (RFC 5802, RFC 7677)
//!   without channel binding.
//! - `sasl/secret.rs`: [`Secret`] and the `{SCHEME}` formats.
//! - `sasl/apop.rs`: APOP timestamps and digests.

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine as _;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};
use zeroize::Zeroizing;

mod apop;
mod cram_md5;
mod plaintext;
mod scram;
mod secret;

pub use apop::{apop_timestamp, apop_verify};
pub use scram::{ScramHash, ScramKeys};
pub use secret::{Secret, SecretError};

/// Longest client response line (base64 text, CRLF excluded) a mechanism
/// accepts. RFC 5034 lets responses be longer than command lines; none of
/// ours needs more than a few hundred octets, so this only has to be
/// generous to long names and passwords while keeping memory bounded. The
/// server's line cap during an exchange must be at least this plus CRLF.
pub const MAX_RESPONSE_LEN: usize = 8 * 1024;

/// Longest authentication or authorization identity accepted, in octets.
/// RFC 4616 requires at least 255; longer names are almost certainly abuse.
pub const MAX_IDENTITY_LEN: usize = 255;

/// The mechanism names for the CAPA `SASL` line, most preferred first. The
/// session drops those the backend cannot serve (CRAM-MD5 and SCRAM need a
/// backend that reveals secrets) and, on connections where plaintext
/// passwords are not allowed, those [`is_plaintext`] names.
pub const MECHANISMS: &[&str] = &["SCRAM-SHA-256", "SCRAM-SHA-1", "CRAM-MD5", "PLAIN", "LOGIN"];

/// Whether `mechanism` (any case) sends the password itself over the wire,
/// so that policy may hide it on unencrypted connections (RFC 5034
/// section 4). Unknown names are not plaintext mechanisms.
pub fn is_plaintext(mechanism: &str) -> bool {
    Mechanism::from_name(mechanism).is_some_and(Mechanism::is_plaintext)
}

/// A SASL mechanism this server implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mechanism {
    /// RFC 7677: SCRAM with SHA-256; the password never crosses the wire.
    ScramSha256,
    /// RFC 5802: SCRAM with SHA-1, for clients without SHA-256.
    ScramSha1,
    /// RFC 2195: a keyed MD5 digest of a server challenge.
    CramMd5,
    /// RFC 4616: the password in one message.
    Plain,
    /// draft-murchison-sasl-login: name and password in two messages, for
    /// legacy clients.
    Login,
}

impl Mechanism {
    /// Every mechanism, most preferred first (the order of [`MECHANISMS`]).
    pub const ALL: [Mechanism; 5] = [
        Mechanism::ScramSha256,
        Mechanism::ScramSha1,
        Mechanism::CramMd5,
        Mechanism::Plain,
        Mechanism::Login,
    ];

    /// The mechanism named `name`, compared case-insensitively (RFC 5034
    /// section 5); `None` for a mechanism we do not implement.
    pub fn from_name(name: &str) -> Option<Mechanism> {
        Mechanism::ALL
            .into_iter()
            .find(|mechanism| mechanism.name().eq_ignore_ascii_case(name))
    }

    /// The registered name, upper case.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha1 => "SCRAM-SHA-1",
            Mechanism::CramMd5 => "CRAM-MD5",
            Mechanism::Plain => "PLAIN",
            Mechanism::Login => "LOGIN",
        }
    }

    /// Whether the password itself crosses the wire.
    pub fn is_plaintext(self) -> bool {
        matches!(self, Mechanism::Plain | Mechanism::Login)
    }

    /// Whether the session must fetch the user's secret from the backend
    /// ([`Step::NeedsSecret`]) rather than check a password: the mechanism
    /// is only offered when the backend can reveal secrets.
    pub fn needs_secret(self) -> bool {
        !self.is_plaintext()
    }

    /// The SCRAM hash, for the SCRAM mechanisms.
    fn scram_hash(self) -> Option<ScramHash> {
        match self {
            Mechanism::ScramSha256 => Some(ScramHash::Sha256),
            Mechanism::ScramSha1 => Some(ScramHash::Sha1),
            _ => None,
        }
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Server-wide settings the mechanisms need, shared by all sessions.
#[derive(Clone)]
pub struct SaslConfig {
    /// Host name in CRAM-MD5 challenges (`<random.time@host>`, RFC 2195),
    /// already reduced to characters that cannot break the challenge.
    hostname: String,
    /// Key for deriving a user's SCRAM salt from the user name when the
    /// backend only has the plaintext password. It keeps salts stable
    /// across logins (clients may cache the salted password) and makes the
    /// fake salt of an unknown user look like a real one.
    salt_key: Zeroizing<[u8; 32]>,
    /// PBKDF2 iterations when the server derives SCRAM keys from a
    /// plaintext password (RFC 7677 asks for at least 4096).
    scram_iterations: u32,
}

impl SaslConfig {
    /// Iterations used unless [`SaslConfig::with_scram_iterations`] says
    /// otherwise: the RFC 7677 minimum, which clients compute in a few
    /// milliseconds.
    pub const DEFAULT_SCRAM_ITERATIONS: u32 = 4096;

    /// Settings with a fixed salt key, e.g. one kept in the configuration
    /// so that SCRAM salts survive restarts.
    pub fn new(hostname: &str, salt_key: [u8; 32]) -> Self {
        SaslConfig {
            hostname: sanitize_hostname(hostname),
            salt_key: Zeroizing::new(salt_key),
            scram_iterations: Self::DEFAULT_SCRAM_ITERATIONS,
        }
    }

    /// Settings with a random salt key: salts then change when the server
    /// restarts, which costs clients that cache salted passwords one
    /// recomputation and nothing else.
    pub fn with_random_key(hostname: &str) -> Result<Self, RandomnessUnavailable> {
        let mut key = [0u8; 32];
        random_fill(&mut key)?;
        let config = Self::new(hostname, key);
        zeroize::Zeroize::zeroize(&mut key);
        Ok(config)
    }

    /// Changes the PBKDF2 iteration count for plaintext-derived SCRAM keys;
    /// values below 4096 are raised to 4096 (RFC 7677 section 4).
    pub fn with_scram_iterations(mut self, iterations: u32) -> Self {
        self.scram_iterations = iterations.max(Self::DEFAULT_SCRAM_ITERATIONS);
        self
    }

    /// The same key and iteration count with another host name, for a
    /// config reload: the host name may change, the salt key must not.
    pub fn with_hostname(mut self, hostname: &str) -> Self {
        self.hostname = sanitize_hostname(hostname);
        self
    }

    /// The host name as it appears in challenges and APOP timestamps.
    pub fn hostname(&self) -> &str {
        &self.hostname
    }
}

impl fmt::Debug for SaslConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SaslConfig")
            .field("hostname", &self.hostname)
            .field("salt_key", &"(redacted)")
            .field("scram_iterations", &self.scram_iterations)
            .finish()
    }
}

/// The operating system's random number generator failed. Practically
/// never happens on Linux after early boot; the session answers
/// `-ERR [SYS/TEMP]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RandomnessUnavailable;

impl fmt::Display for RandomnessUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the operating system's random number generator failed")
    }
}

impl std::error::Error for RandomnessUnavailable {}

/// Bytes that must not leak: a password or a plaintext secret. Wiped when
/// dropped and printed as `Password(..)`.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(Zeroizing<Vec<u8>>);

impl Password {
    /// Wraps a copy of `bytes`.
    pub fn new(bytes: &[u8]) -> Self {
        Password(Zeroizing::new(bytes.to_vec()))
    }

    /// The bytes, for handing to the authenticator.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(..)")
    }
}

/// What the session must do next in an AUTH exchange.
#[must_use]
#[derive(Debug)]
pub enum Step {
    /// Send `challenge` as a `+ <base64>` line ([`challenge_line`]) and give
    /// the client's next line to `next`.
    Challenge {
        /// The raw challenge; empty for the bare `+ ` line.
        challenge: Vec<u8>,
        /// The exchange waiting for the client's answer.
        next: Exchange,
    },
    /// PLAIN or LOGIN finished: check `password` for `authcid` with the
    /// authenticator; its answer is the answer to AUTH.
    CheckPassword {
        /// The authentication identity: the user name to log in as.
        authcid: String,
        /// The password as the client sent it.
        password: Password,
    },
    /// Look up `authcid`'s secret and pass it to `next`.
    NeedsSecret {
        /// The user whose secret is needed.
        authcid: String,
        /// The exchange waiting for the secret.
        next: SecretWanted,
    },
    /// The client proved it knows `authcid`'s secret.
    Success {
        /// The user to log in as (the session already has this user's
        /// attributes from the secret lookup).
        authcid: String,
    },
    /// The exchange failed; answer `-ERR` with [`Failure::reply_text`].
    Failure(Failure),
    /// The client cancelled with `*`; answer `-ERR` (RFC 5034 section 4).
    Cancelled,
}

/// Why an AUTH exchange failed. `Display` is the detailed reason for the
/// log; [`Failure::reply_text`] is what the client may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// A response is not base64 (RFC 5034: must be rejected, not ignored).
    BadBase64,
    /// A response is longer than [`MAX_RESPONSE_LEN`].
    TooLong,
    /// A response breaks the mechanism's syntax; the text says how.
    Malformed(&'static str),
    /// An initial response was given to a mechanism that starts with a
    /// server challenge (CRAM-MD5); RFC 5034 requires `-ERR`.
    UnexpectedInitialResponse(Mechanism),
    /// The authorization identity names someone else: acting as another
    /// user is not supported.
    Impersonation,
    /// SCRAM: the client requires channel binding (`p=`), which this server
    /// does not offer (no `-PLUS` mechanisms).
    ChannelBindingUnsupported,
    /// SCRAM: the client's final message does not carry the nonce the
    /// server sent.
    NonceMismatch,
    /// Wrong password, digest or proof, or no such user.
    BadCredentials,
    /// The user's stored secret cannot serve this mechanism (say a
    /// `{SCRAM-SHA-1}` secret and SCRAM-SHA-256). The client sees the same
    /// reply as for a wrong password; the log says what to fix.
    SecretUnusable {
        /// The mechanism the client chose.
        mechanism: Mechanism,
        /// The kind of secret the backend holds ([`Secret::kind`]).
        secret: &'static str,
    },
    /// No randomness for a nonce.
    RandomnessUnavailable,
}

impl Failure {
    /// Whether the client presented credentials that did not verify: the
    /// session then applies the failed-login delay, as for a wrong PASS.
    pub fn is_credential_failure(&self) -> bool {
        matches!(
            self,
            Failure::BadCredentials | Failure::SecretUnusable { .. } | Failure::NonceMismatch
        )
    }

    /// The text after `-ERR `, response code included.
    pub fn reply_text(&self) -> &'static str {
        match self {
            Failure::BadBase64 => "Invalid base64 in SASL response",
            Failure::TooLong => "SASL response too long",
            Failure::Malformed(_) => "Malformed SASL response",
            Failure::UnexpectedInitialResponse(_) => {
                "This mechanism does not take an initial response"
            }
            Failure::Impersonation => {
                "[AUTH] Authorization identity must be empty or the same as the user name"
            }
            Failure::ChannelBindingUnsupported => {
                "Channel binding is not supported; use a mechanism without -PLUS"
            }
            Failure::NonceMismatch | Failure::BadCredentials | Failure::SecretUnusable { .. } => {
                "[AUTH] Authentication failed"
            }
            Failure::RandomnessUnavailable => {
                "[SYS/TEMP] Authentication is temporarily unavailable, try again later"
            }
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::BadBase64 => f.write_str("response is not valid base64"),
            Failure::TooLong => write!(f, "response longer than {MAX_RESPONSE_LEN} octets"),
            Failure::Malformed(reason) => write!(f, "malformed response: {reason}"),
            Failure::UnexpectedInitialResponse(mechanism) => {
                write!(f, "initial response given to {mechanism}")
            }
            Failure::Impersonation => {
                f.write_str("authorization identity differs from the authentication identity")
            }
            Failure::ChannelBindingUnsupported => f.write_str("client requires channel binding"),
            Failure::NonceMismatch => f.write_str("SCRAM nonce changed between messages"),
            Failure::BadCredentials => f.write_str("credentials did not verify"),
            Failure::SecretUnusable { mechanism, secret } => write!(
                f,
                "the user's {secret} secret cannot be used with {mechanism}; store a {{PLAIN}} or matching secret, or stop offering {mechanism}"
            ),
            Failure::RandomnessUnavailable => RandomnessUnavailable.fmt(f),
        }
    }
}

impl std::error::Error for Failure {}

/// An AUTH exchange waiting for the client's next response line.
pub struct Exchange {
    /// Where the mechanism stands, with the data only that point needs.
    phase: Phase,
}

enum Phase {
    /// PLAIN without an initial response: the message comes next.
    PlainMessage,
    /// LOGIN: the user name comes next.
    LoginUser,
    /// LOGIN: the password for `authcid` comes next.
    LoginPassword { authcid: String },
    /// CRAM-MD5: the answer to `challenge` comes next.
    CramResponse { challenge: String },
    /// SCRAM without an initial response: the client-first message comes
    /// next.
    ScramClientFirst { hash: ScramHash },
    /// SCRAM: the client-final message comes next.
    ScramClientFinal(Box<scram::ServerFirstSent>),
    /// SCRAM: the server-final message went out as a challenge; an empty
    /// line ends the exchange.
    ScramAcknowledge {
        authcid: String,
        mechanism: Mechanism,
    },
}

impl fmt::Debug for Exchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Phases hold keys and nonces: show only where the exchange is.
        let phase = match &self.phase {
            Phase::PlainMessage => "PLAIN message",
            Phase::LoginUser => "LOGIN user name",
            Phase::LoginPassword { .. } => "LOGIN password",
            Phase::CramResponse { .. } => "CRAM-MD5 response",
            Phase::ScramClientFirst { .. } => "SCRAM client-first",
            Phase::ScramClientFinal(_) => "SCRAM client-final",
            Phase::ScramAcknowledge { .. } => "SCRAM acknowledgement",
        };
        write!(f, "Exchange({} awaiting {phase})", self.mechanism())
    }
}

impl Exchange {
    /// Starts `mechanism` for `AUTH <mechanism> [initial_response]`.
    /// `initial_response` is the base64 text from the command line, `=`
    /// for an empty one.
    pub fn start(
        mechanism: Mechanism,
        initial_response: Option<&str>,
        config: &SaslConfig,
    ) -> Step {
        let initial = match initial_response.map(decode_initial_response).transpose() {
            Ok(initial) => initial,
            Err(failure) => return Step::Failure(failure),
        };
        match mechanism {
            Mechanism::Plain => match initial {
                Some(message) => plaintext::plain(&message),
                None => Exchange::challenge(Vec::new(), Phase::PlainMessage),
            },
            Mechanism::Login => match initial {
                // Not in the draft, but Cyrus SASL and Dovecot take the
                // user name as an initial response, and clients send it.
                Some(user) => plaintext::login_user(&user),
                None => plaintext::login_start(),
            },
            Mechanism::CramMd5 => match initial {
                Some(_) => Step::Failure(Failure::UnexpectedInitialResponse(mechanism)),
                None => {
                    let challenge = unique_msg_id(&config.hostname);
                    Exchange::challenge(
                        challenge.clone().into_bytes(),
                        Phase::CramResponse { challenge },
                    )
                }
            },
            Mechanism::ScramSha256 | Mechanism::ScramSha1 => {
                let hash = match mechanism.scram_hash() {
                    Some(hash) => hash,
                    None => return Step::Failure(Failure::Malformed("not a SCRAM mechanism")),
                };
                match initial {
                    Some(message) => scram::client_first(hash, &message, None),
                    None => Exchange::challenge(Vec::new(), Phase::ScramClientFirst { hash }),
                }
            }
        }
    }

    /// Takes the client's next line (CRLF removed): base64, or `*` to
    /// cancel.
    pub fn respond(self, line: &[u8]) -> Step {
        if line == b"*" {
            return Step::Cancelled;
        }
        let response = match decode_response(line) {
            Ok(response) => response,
            Err(failure) => return Step::Failure(failure),
        };
        match self.phase {
            Phase::PlainMessage => plaintext::plain(&response),
            Phase::LoginUser => plaintext::login_user(&response),
            Phase::LoginPassword { authcid } => plaintext::login_password(authcid, &response),
            Phase::CramResponse { challenge } => cram_md5::response(challenge, &response),
            Phase::ScramClientFirst { hash } => scram::client_first(hash, &response, None),
            Phase::ScramClientFinal(state) => state.client_final(&response),
            Phase::ScramAcknowledge { authcid, .. } => {
                if response.is_empty() {
                    Step::Success { authcid }
                } else {
                    Step::Failure(Failure::Malformed(
                        "expected an empty response to the server-final message",
                    ))
                }
            }
        }
    }

    /// The mechanism this exchange runs, for log lines.
    pub fn mechanism(&self) -> Mechanism {
        match &self.phase {
            Phase::PlainMessage => Mechanism::Plain,
            Phase::LoginUser | Phase::LoginPassword { .. } => Mechanism::Login,
            Phase::CramResponse { .. } => Mechanism::CramMd5,
            Phase::ScramClientFirst { hash } => hash.mechanism(),
            Phase::ScramClientFinal(state) => state.mechanism(),
            Phase::ScramAcknowledge { mechanism, .. } => *mechanism,
        }
    }

    fn challenge(challenge: Vec<u8>, phase: Phase) -> Step {
        Step::Challenge {
            challenge,
            next: Exchange { phase },
        }
    }
}

/// An exchange waiting for the user's secret from the auth backend.
pub struct SecretWanted {
    /// What the mechanism will do with the secret.
    pending: Pending,
}

enum Pending {
    /// CRAM-MD5: the client's digest of `challenge`, to check.
    Cram(cram_md5::Answer),
    /// SCRAM: the client-first message, to answer with the server-first.
    Scram(Box<scram::ClientFirst>),
}

impl fmt::Debug for SecretWanted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mechanism = match &self.pending {
            Pending::Cram(_) => Mechanism::CramMd5,
            Pending::Scram(first) => first.mechanism(),
        };
        write!(f, "SecretWanted({mechanism})")
    }
}

impl SecretWanted {
    /// Continues with the user's secret, or with `None` when the backend
    /// knows no such user. An unknown user is not revealed early: SCRAM
    /// goes on with a made-up salt and fails at the proof, just as a wrong
    /// password does.
    pub fn provide(self, secret: Option<&Secret>, config: &SaslConfig) -> Step {
        match self.pending {
            Pending::Cram(answer) => answer.check(secret),
            Pending::Scram(first) => first.server_first(secret, config),
        }
    }
}

/// Appends the challenge line `+ <base64>` (or `+ ` for an empty
/// challenge, RFC 5034 section 4) with its CRLF.
pub fn challenge_line(challenge: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(b"+ ");
    out.extend_from_slice(STANDARD.encode(challenge).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// The initial response from the AUTH line: `=` is the empty response.
fn decode_initial_response(text: &str) -> Result<Zeroizing<Vec<u8>>, Failure> {
    if text == "=" {
        return Ok(Zeroizing::new(Vec::new()));
    }
    if text.is_empty() {
        // Empty here can only mean a caller bug; AUTH cannot carry it.
        return Err(Failure::BadBase64);
    }
    decode_response(text.as_bytes())
}

/// A response line's base64 decoded. Characters outside the alphabet and
/// misplaced or partial padding are refused as RFC 5034 requires; padding
/// left out altogether is tolerated, as Dovecot does, since it loses
/// nothing.
fn decode_response(line: &[u8]) -> Result<Zeroizing<Vec<u8>>, Failure> {
    if line.len() > MAX_RESPONSE_LEN {
        return Err(Failure::TooLong);
    }
    let engine = if line.ends_with(b"=") {
        &STANDARD
    } else {
        &STANDARD_NO_PAD
    };
    engine
        .decode(line)
        .map(Zeroizing::new)
        .map_err(|_| Failure::BadBase64)
}

/// An authentication or authorization identity as sent: UTF-8, 1 to
/// [`MAX_IDENTITY_LEN`] octets, no control characters (backends written in
/// C and log lines both deserve that).
fn identity(bytes: &[u8], what: &'static str) -> Result<String, Failure> {
    if bytes.is_empty() {
        return Err(Failure::Malformed(what));
    }
    if bytes.len() > MAX_IDENTITY_LEN {
        return Err(Failure::Malformed("identity longer than 255 octets"));
    }
    let text =
        std::str::from_utf8(bytes).map_err(|_| Failure::Malformed("identity is not UTF-8"))?;
    if text.chars().any(char::is_control) {
        return Err(Failure::Malformed("control character in identity"));
    }
    Ok(text.to_owned())
}

/// Refuses an authorization identity that names someone other than the
/// authentication identity. Empty (absent) is fine.
fn check_authzid(authzid: &[u8], authcid: &str) -> Result<(), Failure> {
    if authzid.is_empty() || authzid == authcid.as_bytes() {
        Ok(())
    } else {
        Err(Failure::Impersonation)
    }
}

/// Fills `buf` from the operating system's generator.
fn random_fill(buf: &mut [u8]) -> Result<(), RandomnessUnavailable> {
    getrandom::getrandom(buf).map_err(|_| RandomnessUnavailable)
}

/// A `<process.unique.time@host>` string for CRAM-MD5 challenges and APOP
/// timestamps. These must never repeat (a repeat would let a recorded
/// answer be replayed); the process id, a per-process counter and the time
/// guarantee that, and a random part, when the system gives one, makes
/// them unguessable too.
fn unique_msg_id(hostname: &str) -> String {
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    let sequence = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    let mut random = [0u8; 8];
    // Without randomness the id is still unique; only unpredictability is
    // lost, which neither RFC 1939 nor RFC 2195 requires.
    let random = match random_fill(&mut random) {
        Ok(()) => u64::from_le_bytes(random),
        Err(RandomnessUnavailable) => 0,
    };
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0);
    format!(
        "<{}.{random:016x}{sequence:x}.{seconds}@{hostname}>",
        std::process::id()
    )
}

/// Keeps the characters of a host name that cannot end or corrupt a
/// `<...@host>` challenge; an empty result becomes `localhost`.
fn sanitize_hostname(hostname: &str) -> String {
    let kept: String = hostname
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .take(253)
        .collect();
    if kept.is_empty() {
        "localhost".to_owned()
    } else {
        kept
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn config() -> SaslConfig {
        SaslConfig::new("pop.example.org", [42; 32])
    }

    pub(super) fn b64(bytes: &[u8]) -> String {
        STANDARD.encode(bytes)
    }

    /// Unwraps a challenge step, for tests.
    pub(super) fn challenge(step: Step) -> (Vec<u8>, Exchange) {
        match step {
            Step::Challenge { challenge, next } => (challenge, next),
            other => panic!("expected a challenge, got {other:?}"),
        }
    }

    #[test]
    fn mechanisms_list_matches_the_enum_in_preference_order() {
        let names: Vec<&str> = Mechanism::ALL.iter().map(|m| m.name()).collect();
        assert_eq!(names, MECHANISMS);
        for name in MECHANISMS {
            assert_eq!(Mechanism::from_name(name).map(Mechanism::name), Some(*name));
            assert_eq!(
                Mechanism::from_name(&name.to_ascii_lowercase()).map(Mechanism::name),
                Some(*name)
            );
        }
        assert_eq!(Mechanism::from_name("DIGEST-MD5"), None);
        assert_eq!(Mechanism::from_name("SCRAM-SHA-256-PLUS"), None);
        assert_eq!(Mechanism::from_name(""), None);
    }

    #[test]
    fn only_plain_and_login_are_plaintext() {
        assert!(is_plaintext("PLAIN"));
        assert!(is_plaintext("login"));
        assert!(!is_plaintext("CRAM-MD5"));
        assert!(!is_plaintext("SCRAM-SHA-1"));
        assert!(!is_plaintext("SCRAM-SHA-256"));
        assert!(!is_plaintext("XOAUTH2"));
        assert!(Mechanism::CramMd5.needs_secret());
        assert!(!Mechanism::Login.needs_secret());
    }

    #[test]
    fn challenge_lines_are_plus_space_base64() {
        let mut out = Vec::new();
        challenge_line(b"", &mut out);
        challenge_line(b"Username:", &mut out);
        assert_eq!(out, b"+ \r\n+ VXNlcm5hbWU6\r\n");
    }

    #[test]
    fn base64_is_strict_about_the_alphabet_and_padding_position() {
        assert_eq!(decode_response(b"").unwrap().as_slice(), b"");
        assert_eq!(decode_response(b"dGVzdA==").unwrap().as_slice(), b"test");
        assert_eq!(decode_response(b"dGVzdA").unwrap().as_slice(), b"test");
        for bad in [
            &b"=AAA"[..],
            b"AAA=BBB",
            b"dGVz dA==",
            b"dGVzdA==\r",
            b"dGVzdA=",
            b"dG*zdA==",
            b"dGVzdA-_",
            b"=",
        ] {
            assert_eq!(
                decode_response(bad).map(|ok| ok.to_vec()),
                Err(Failure::BadBase64),
                "{bad:?}"
            );
        }
        let long = vec![b'A'; MAX_RESPONSE_LEN + 4];
        assert_eq!(decode_response(&long).unwrap_err(), Failure::TooLong);
        assert!(decode_response(&long[..MAX_RESPONSE_LEN]).is_ok());
    }

    #[test]
    fn identities_must_be_utf8_without_controls() {
        assert_eq!(identity("jürgen".as_bytes(), "x").unwrap(), "jürgen");
        assert_eq!(identity(b"a b", "x").unwrap(), "a b");
        assert!(identity(b"", "empty").is_err());
        assert!(identity(b"\xff", "x").is_err());
        assert!(identity(b"bob\nadmin", "x").is_err());
        assert!(identity(b"bob\x7f", "x").is_err());
        assert!(identity(&[b'a'; MAX_IDENTITY_LEN], "x").is_ok());
        assert!(identity(&[b'a'; MAX_IDENTITY_LEN + 1], "x").is_err());
    }

    #[test]
    fn msg_ids_are_unique_and_well_formed() {
        let first = unique_msg_id("pop.example.org");
        let second = unique_msg_id("pop.example.org");
        assert_ne!(first, second);
        for id in [&first, &second] {
            assert!(id.starts_with(&format!("<{}.", std::process::id())));
            assert!(id.ends_with("@pop.example.org>"));
            assert_eq!(id.matches('<').count(), 1);
            assert!(!id.contains(' '));
        }
    }

    #[test]
    fn hostnames_cannot_break_challenges() {
        assert_eq!(sanitize_hostname("pop.example.org"), "pop.example.org");
        assert_eq!(sanitize_hostname("evil> host\r\n"), "evilhost");
        assert_eq!(sanitize_hostname("<>"), "localhost");
        assert_eq!(sanitize_hostname(""), "localhost");
    }

    #[test]
    fn failures_tell_the_client_little_and_the_log_more() {
        let unusable = Failure::SecretUnusable {
            mechanism: Mechanism::ScramSha256,
            secret: "SCRAM-SHA-1",
        };
        assert_eq!(unusable.reply_text(), Failure::BadCredentials.reply_text());
        assert!(unusable.to_string().contains("SCRAM-SHA-1"));
        assert!(unusable.is_credential_failure());
        assert!(!Failure::BadBase64.is_credential_failure());
        assert!(!Failure::Impersonation.is_credential_failure());
        assert!(Failure::BadCredentials.reply_text().starts_with("[AUTH] "));
    }

    #[test]
    fn debug_output_never_shows_secrets() {
        let password = Password::new(b"hunter2");
        assert_eq!(format!("{password:?}"), "Password(..)");
        let step = Step::CheckPassword {
            authcid: "bob".into(),
            password,
        };
        assert!(!format!("{step:?}").contains("hunter2"));
        let config = config();
        assert!(!format!("{config:?}").contains("42"));
    }

    #[test]
    fn star_cancels_every_mechanism_at_every_challenge() {
        let config = config();
        for mechanism in Mechanism::ALL {
            let (_, exchange) = challenge(Exchange::start(mechanism, None, &config));
            assert!(
                matches!(exchange.respond(b"*"), Step::Cancelled),
                "{mechanism}"
            );
        }
        // LOGIN's second challenge too.
        let (_, exchange) = challenge(Exchange::start(Mechanism::Login, Some("dGlt"), &config));
        assert!(matches!(exchange.respond(b"*"), Step::Cancelled));
    }

    #[test]
    fn bad_base64_fails_every_mechanism() {
        let config = config();
        for mechanism in Mechanism::ALL {
            let (_, exchange) = challenge(Exchange::start(mechanism, None, &config));
            assert!(
                matches!(
                    exchange.respond(b"not base64!"),
                    Step::Failure(Failure::BadBase64)
                ),
                "{mechanism}"
            );
            assert!(
                matches!(
                    Exchange::start(mechanism, Some("AAA=BBB"), &config),
                    Step::Failure(Failure::BadBase64)
                ),
                "{mechanism}"
            );
        }
    }
}
