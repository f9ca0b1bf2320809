//! The configuration operators write: one RON file.
//!
//! Every key is optional except `auth` and `store`. Parsing and validation
//! report every problem with its line and column and what was expected, so a
//! bad config never starts a server.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where to accept connections. Defaults to plain POP3 on loopback port
    /// 110, the least surprising choice for a server started by hand.
    #[serde(default = "default_listen")]
    pub listen: Vec<Listener>,
    /// Certificate and key; when set, plain listeners offer STLS.
    #[serde(default)]
    pub tls: Option<TlsFiles>,
    /// Whether USER/PASS and plaintext SASL are allowed on connections that
    /// are not encrypted.
    #[serde(default)]
    pub allow_plaintext_auth: PlaintextAuth,
    /// Worker threads running sessions; 0 means one per core.
    #[serde(default)]
    pub workers: usize,
    /// Resource limits that keep one client from hurting the others.
    #[serde(default)]
    pub limits: Limits,
    /// The authentication backend.
    pub auth: PluginSection,
    /// The maildrop store backend.
    pub store: PluginSection,
}

/// One listening socket.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// `IP:port` to bind.
    pub addr: SocketAddr,
    /// TLS from the first byte (POP3S, port 995) instead of STLS.
    #[serde(default)]
    pub implicit_tls: bool,
}

/// Certificate chain and private key, PEM files.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    pub cert: String,
    pub key: String,
}

/// Where plaintext passwords may travel over an unencrypted connection.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
pub enum PlaintextAuth {
    /// Only over TLS.
    Never,
    /// Over TLS, or unencrypted from a loopback address.
    #[default]
    LoopbackOnly,
    /// Anywhere (for networks where TLS is terminated in front of pop3d).
    Always,
}

/// Resource limits.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Connections open at once, all clients together.
    pub max_connections: usize,
    /// Connections open at once from one IP address.
    pub max_per_ip: usize,
    /// Seconds a logged-in client may stay silent before it is disconnected
    /// (RFC 1939 asks for at least 10 minutes).
    pub idle_timeout_secs: u64,
    /// Seconds a client may take to log in; shorter than the idle timeout so
    /// unauthenticated connections cannot pile up.
    pub login_timeout_secs: u64,
    /// Delay before answering a failed login, held by the event loop.
    pub auth_failure_delay_ms: u64,
    /// Command lines read ahead of the one being handled (pipelining); when
    /// full the server stops reading from that client.
    pub max_pipelined_lines: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 10_000,
            max_per_ip: 100,
            idle_timeout_secs: 600,
            login_timeout_secs: 60,
            auth_failure_delay_ms: 2000,
            max_pipelined_lines: 128,
        }
    }
}

/// A backend: a built-in name or a path to a shared library, and its own
/// settings, which only that backend interprets.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PluginSection {
    pub plugin: String,
    #[serde(default = "empty_map")]
    pub config: ron::Value,
}

fn default_listen() -> Vec<Listener> {
    vec![Listener {
        addr: SocketAddr::from(([127, 0, 0, 1], 110)),
        implicit_tls: false,
    }]
}

fn empty_map() -> ron::Value {
    ron::Value::Map(ron::Map::new())
}
