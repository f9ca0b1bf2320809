//! SIGHUP: the configuration file read again, off the event loop.
//!
//! Reading the file, building the backends (a plugin may load a library or
//! read a large passwd-file) and loading the certificate may block, so a
//! short-lived thread does it and hands the result to the loop through a
//! channel and the loop's waker. The loop then applies what can change
//! while running (see `EventLoop::apply_reload`): limits, the plaintext
//! policy, the trusted networks, the backends and the certificate, all for
//! new connections; sessions already open keep what they started with.
//!
//! A configuration with any problem is not applied at all: the loop logs
//! every problem, one per line, and keeps serving with what it has.

use super::tls::TlsAcceptor;
use super::worker::Notifier;
use crate::backend::registry;
use crate::backend::{Authenticator, Store};
use crate::config::{self, Config};
use crossbeam_channel::Sender;
use std::path::PathBuf;
use std::sync::Arc;

/// A configuration read again and everything built from it.
pub struct Reloaded {
    pub config: Config,
    pub auth: Arc<dyn Authenticator>,
    pub store: Arc<dyn Store>,
    /// The certificate, when the new configuration has one.
    pub tls: Option<TlsAcceptor>,
}

/// What a reload produced: the new pieces, or every problem found.
pub type Outcome = Result<Box<Reloaded>, Vec<String>>;

/// Starts reading `path` on a new thread; the outcome arrives on `done`.
pub fn start(path: PathBuf, done: Sender<Outcome>, notifier: Arc<Notifier>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("pop3d-reload".into())
        .spawn(move || {
            let outcome = build(&path);
            // The loop may be gone (shutdown): nobody to tell.
            if done.send(outcome).is_ok() {
                notifier.notify();
            }
        })
        .map(drop)
}

fn build(path: &std::path::Path) -> Outcome {
    let config = config::load(path).map_err(|e| {
        e.to_string()
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>()
    })?;
    let mut problems = Vec::new();
    let auth = registry::build_auth(&config.auth)
        .map_err(|e| problems.push(e.to_string()))
        .ok();
    let store = registry::build_store(&config.store)
        .map_err(|e| problems.push(e.to_string()))
        .ok();
    let tls = match &config.tls {
        Some(files) => match TlsAcceptor::load(files) {
            Ok(acceptor) => Some(acceptor),
            Err(e) => {
                problems.push(format!("{e}; still using the certificate loaded before"));
                None
            }
        },
        None => None,
    };
    match (auth, store) {
        (Some(auth), Some(store)) if problems.is_empty() => Ok(Box::new(Reloaded {
            config,
            auth,
            store,
            tls,
        })),
        _ => Err(problems),
    }
}
