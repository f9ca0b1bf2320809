//! Defences against password guessing and junk input, as a session sees
//! them.
//!
//! A session asks its [`LoginGuard`] before it checks a password
//! ([`LoginGuard::admit`]) and reports the outcome afterwards
//! ([`LoginGuard::failed`], [`LoginGuard::succeeded`]). The guard decides
//! how long a failed login is held back and when an address or a user name
//! has failed so often that further attempts are refused without asking the
//! auth backend at all. It keeps its counters across sessions, so it is
//! shared (`Arc`) and thread-safe: sessions run on many workers at once.
//!
//! The counters, the trusted networks and the bounds on memory belong to
//! the server (`server::abuse`); the session only needs these calls. The
//! delay itself is not slept by the session: it returns it in a
//! [`Directive::Delay`](super::Directive::Delay) and the event loop holds
//! the reply with a timer.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// Shared brute-force protection consulted around every credentials check.
pub trait LoginGuard: Send + Sync {
    /// Whether a login attempt for `user` from `ip` may be checked at all.
    /// A refusal is answered without calling the auth backend, so a
    /// blocked attacker learns nothing, not even from timing.
    fn admit(&self, ip: IpAddr, user: &str) -> Result<(), Refusal>;

    /// The credentials were wrong; `took` is how long the backend needed.
    /// Returns how long to hold back the `-ERR`.
    fn failed(&self, ip: IpAddr, user: &str, took: Duration) -> Duration;

    /// The credentials were right: the address's failures are forgiven.
    fn succeeded(&self, ip: IpAddr, user: &str, took: Duration);
}

/// Why an attempt was refused unchecked, and how long to hold the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// Whose failures caused it.
    pub blocked: Blocked,
    /// How long to hold back the answer: a refused guesser gets no faster
    /// answers than a failing one.
    pub delay: Duration,
}

/// Whose failures are over the cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blocked {
    /// The client's address failed too often.
    Address,
    /// The user name failed too often (from any untrusted address).
    User,
}

impl Blocked {
    /// The reply after `-ERR `. An address over its cap most likely has a
    /// wrong password saved, so `[AUTH]` makes its client ask the user.
    /// A user over the cap may be the victim of someone else's guessing:
    /// `[SYS/TEMP]` makes the client retry later instead of discarding a
    /// password that is right (RFC 3206).
    pub fn reply(self) -> &'static str {
        match self {
            Blocked::Address => "[AUTH] Too many failed logins from your address; try again later",
            Blocked::User => "[SYS/TEMP] Too many failed logins for this user; try again later",
        }
    }

    /// A word for the log line.
    pub fn as_str(self) -> &'static str {
        match self {
            Blocked::Address => "address",
            Blocked::User => "user",
        }
    }
}

/// The defences a session applies itself; the default applies none beyond
/// [`SessionEnv::auth_failure_delay`](super::SessionEnv::auth_failure_delay).
#[derive(Clone, Default)]
pub struct Defences {
    /// Shared failure counters; `None` (tests, one-off sessions) means a
    /// fixed delay and no caps.
    pub guard: Option<Arc<dyn LoginGuard>>,
    /// Bad commands (unknown, malformed, overlong) before login after which
    /// the connection is closed: the one that reaches this count gets the
    /// closing reply. 0 = no limit. Nothing a real client sends before
    /// login is malformed ten times; a scanner or a confused protocol on
    /// the wrong port is.
    pub max_bad_commands: u32,
}
