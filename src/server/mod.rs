//! The event loop and worker pool. STUB: implementation pending.

use crate::config::Config;
use std::fmt;

/// Why the server could not start or had to stop.
#[derive(Debug)]
pub enum ServerError {
    /// A listening socket could not be bound.
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    /// A backend refused its configuration or could not start.
    Backend(String),
    /// The event loop's own machinery failed (poll, waker, signals).
    Io(std::io::Error),
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerError::Bind { addr, source } => write!(
                f,
                "cannot listen on {addr}: {source} (is another server using the port, or does it need root?)"
            ),
            ServerError::Backend(msg) => write!(f, "backend: {msg}"),
            ServerError::Io(e) => write!(f, "event loop: {e}"),
        }
    }
}

impl std::error::Error for ServerError {}

/// Runs the server until SIGTERM or SIGINT. `on_ready` is called with the
/// bound addresses once every listener is up (the demo prints how to connect).
pub fn run(
    config: &Config,
    on_ready: &mut dyn FnMut(&[std::net::SocketAddr]),
) -> Result<(), ServerError> {
    let _ = (config, on_ready);
    todo!("event loop")
}
