//! The Rust-side view of authentication and storage.
//!
//! The session state machine talks only to the traits in this module. Every
//! backend is a plugin behind the C ABI: the bundled ones (`maildir`,
//! `passwd-file`, `checkpassword`, crates under `plugins/`) are linked in
//! and started through the same entry function, checks and function table
//! as a shared library named by path, and [`plugin_host`] adapts either to
//! these traits. Nothing above this module knows which kind it talks to.
//!
//! Every call here may block (disk, password hashing, external programs):
//! they are only ever made from worker threads, never from the event loop.
//!
//! # Layout
//! - `mod.rs`: the traits, the backend error type, and the mapping of that
//!   error to RFC 3206 response codes.
//! - `plugin_host.rs` (+ `plugin_host/`): loads and validates plugins and
//!   adapts them to the traits.
//! - `registry.rs`: builds the configured backends: built-in names to the
//!   linked plugin crates, paths to shared libraries.

use std::fmt;

pub mod plugin_host;
pub mod registry;

/// What authentication learned about a user, handed to the store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserInfo {
    /// Canonical user name: the name the store and the logs use, which may
    /// differ in case or form from what the client typed.
    pub name: String,
    /// Home directory from the user database, if it has one (`~` in store
    /// templates).
    pub home: Option<String>,
    /// Extra `key=value` fields from the user database, passed through to the
    /// store untouched (e.g. a per-user maildrop location).
    pub extra: Vec<(String, String)>,
}

/// Why a backend call did not succeed.
///
/// These are the same outcomes the plugin ABI carries as status codes, so a
/// plugin and a built-in backend fail in the same ways.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendError {
    /// Wrong password or unknown user. Deliberately one variant for both so
    /// the session cannot answer them differently.
    Denied,
    /// The thing asked for does not exist (a message file vanished).
    NotFound(String),
    /// The maildrop is held by another session or program.
    InUse(String),
    /// A failure that may go away if the client tries later (I/O error,
    /// timeout of an external helper, a poisoned plugin).
    TempFail(String),
    /// A failure that will not go away without an operator (bad
    /// permissions, a corrupt maildrop, a misconfigured backend).
    PermFail(String),
}

impl BackendError {
    /// The RFC 2449/3206 response code a client sees for this failure.
    ///
    /// This is the one place backend failures become protocol codes.
    pub fn response_code(&self) -> &'static str {
        match self {
            BackendError::Denied => "[AUTH]",
            BackendError::InUse(_) => "[IN-USE]",
            BackendError::NotFound(_) | BackendError::TempFail(_) => "[SYS/TEMP]",
            BackendError::PermFail(_) => "[SYS/PERM]",
        }
    }
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendError::Denied => write!(f, "authentication failed"),
            BackendError::NotFound(detail) => write!(f, "not found: {detail}"),
            BackendError::InUse(detail) => write!(f, "maildrop in use: {detail}"),
            BackendError::TempFail(detail) => write!(f, "temporary failure: {detail}"),
            BackendError::PermFail(detail) => write!(f, "permanent failure: {detail}"),
        }
    }
}

impl std::error::Error for BackendError {}

/// Checks credentials. Implementations must be callable from many worker
/// threads at once (a backend that is not thread-safe serializes itself).
pub trait Authenticator: Send + Sync {
    /// Checks `user`/`password`. An unknown user and a wrong password must
    /// both give `Err(BackendError::Denied)` after the same amount of work.
    fn authenticate(&self, user: &str, password: &[u8]) -> Result<UserInfo, BackendError>;

    /// The user's shared secret, a Dovecot-style `{SCHEME}data` string
    /// (`{PLAIN}password`, `{CRAM-MD5}hex`, `{SCRAM-SHA-256}...`), and
    /// attributes, for challenge-response mechanisms (APOP, CRAM-MD5, SCRAM)
    /// where the server must compute the expected answer itself.
    ///
    /// `None`: this backend cannot supply secrets at all (it stores only
    /// hashes, or asks an external program), so those mechanisms must not
    /// be offered. `Some(Err(Denied))`: no secret for this user, whether the
    /// user is unknown or stored in a form that cannot give one back; the
    /// caller must not answer that differently from a wrong response.
    fn secret(&self, user: &str) -> Option<Result<(Secret, UserInfo), BackendError>> {
        let _ = user;
        None
    }

    /// Whether [`Authenticator::secret`] can ever give a secret, without
    /// asking about a user: the session decides from this whether to offer
    /// APOP, CRAM-MD5 and SCRAM in the greeting and CAPA, before any user
    /// is named.
    fn supports_secrets(&self) -> bool {
        false
    }
}

/// A shared secret from an auth backend. Zeroed when dropped, and never
/// printed by `Debug`.
pub struct Secret(
    /// The secret's bytes; only [`Secret::expose`] hands them out.
    Vec<u8>,
);

impl Secret {
    /// Takes ownership of `bytes` as a secret.
    pub fn new(bytes: Vec<u8>) -> Secret {
        Secret(bytes)
    }

    /// The secret's bytes, for computing a challenge response.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        plugin_host::wipe(&mut self.0);
    }
}

/// One message in a maildrop snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageInfo {
    /// Exact octet count RETR transmits: CRLF line ends, a CRLF added after a
    /// last line without one, before dot-stuffing. STAT and LIST report this.
    pub wire_size: u64,
    /// Unique id: 1 to 70 characters in 0x21..=0x7E, unique in the maildrop,
    /// stable for the life of the message.
    pub uid: String,
}

/// Opens maildrops. Shared by all workers.
pub trait Store: Send + Sync {
    /// Opens `user`'s maildrop exclusively and takes a snapshot of it.
    /// A maildrop already held gives `Err(BackendError::InUse(..))`.
    fn open(&self, user: &UserInfo) -> Result<Box<dyn Maildrop>, BackendError>;
}

/// An open, exclusively held maildrop. Dropping it releases the lock and
/// deletes nothing: only [`Maildrop::commit`] deletes.
///
/// Used by one thread at a time, but may move between worker threads.
pub trait Maildrop: Send {
    /// The snapshot taken at open, in message-number order (index 0 is
    /// message 1). It never changes during a session.
    fn messages(&self) -> &[MessageInfo];

    /// Opens message `index` (0-based) for streaming its raw bytes.
    fn open_message(&mut self, index: usize) -> Result<Box<dyn MessageReader>, BackendError>;

    /// The UPDATE state: deletes the messages at `indices` (0-based, sorted,
    /// no duplicates), then releases the maildrop.
    fn commit(self: Box<Self>, indices: &[usize]) -> Result<(), BackendError>;
}

/// Raw bytes of one message, as stored (LF or CRLF line ends). The host does
/// the line-end conversion and dot-stuffing while streaming.
pub trait MessageReader: Send {
    /// Reads up to `buf.len()` bytes; `Ok(0)` means the end of the message.
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, BackendError>;
}
