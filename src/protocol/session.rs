//! The POP3 session state machine. STUB: implementation pending.

use crate::backend::{Authenticator, Store};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// What a session needs from the server that created it, shared by all
/// sessions.
pub struct SessionEnv {
    pub auth: Arc<dyn Authenticator>,
    pub store: Arc<dyn Store>,
    pub auth_failure_delay: Duration,
    pub hostname: String,
}

/// What the connection should do after writing the bytes a call appended.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Directive {
    /// Ready for the next command line.
    Continue,
    /// A multi-line body is in progress: call [`Session::continue_body`]
    /// when the output has drained.
    MoreBody,
    /// Hold the reply back this long before sending it and reading on
    /// (failed login).
    Delay(Duration),
    /// Send the reply, then close the connection.
    Close,
}

pub struct Session {
    _env: Arc<SessionEnv>,
}

impl Session {
    pub fn new(env: Arc<SessionEnv>, peer: SocketAddr, id: u64) -> Self {
        let _ = (peer, id);
        Session { _env: env }
    }
}
