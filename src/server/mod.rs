//! The server: listeners, the mio event loop, and the worker pool.
//!
//! One event-loop thread does all socket I/O and timing; a pool of workers
//! runs the POP3 sessions (which call backends that may block). They talk
//! over two crossbeam channels plus a [`mio::Waker`]. See DESIGN.md.
//!
//! # Layout
//! - `framer.rs`: bytes to bounded command lines.
//! - `event_loop.rs`: accept, read, write, timers, backpressure.
//! - `worker.rs`: jobs, completions, the worker threads.
//! - `tls.rs`: certificates and per-connection TLS state (the only file that
//!   uses rustls).
//! - `handshake.rs`: threads that do TLS handshake crypto off the loop.

mod event_loop;
pub mod framer;
mod handshake;
mod tls;
mod worker;

use crate::backend::registry;
use crate::config::Config;
use crate::protocol::SessionEnv;
use event_loop::{EventLoop, ListenSocket, LoopSettings, Signalled, Stop, SIGNALS, WAKER};
use mio::{Interest, Poll};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use worker::Notifier;

pub use tls::TlsError;

/// Jobs that may wait in the channel per worker before the loop keeps them
/// in its own backlog instead.
const JOBS_PER_WORKER: usize = 256;

/// Why the server could not start or had to stop.
#[derive(Debug)]
pub enum ServerError {
    /// A listening socket could not be bound.
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// A backend refused its configuration or could not start.
    Backend(String),
    /// The TLS certificate or key could not be loaded.
    Tls(TlsError),
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
            ServerError::Tls(e) => write!(f, "{e}"),
            ServerError::Io(e) => write!(f, "event loop: {e}"),
        }
    }
}

impl std::error::Error for ServerError {}

impl From<std::io::Error> for ServerError {
    fn from(e: std::io::Error) -> Self {
        ServerError::Io(e)
    }
}

/// Loads the certificate and key as the server would at start, so
/// `check-config` can report a bad file before a restart finds it.
pub fn check_tls(files: &crate::config::TlsFiles) -> Result<(), TlsError> {
    tls::TlsAcceptor::load(files).map(drop)
}

/// Runs the server until SIGTERM or SIGINT; SIGHUP reloads the TLS
/// certificate and key. `on_ready` is called with the bound addresses once
/// every listener is up (the demo prints how to connect).
pub fn run(config: &Config, on_ready: &mut dyn FnMut(&[SocketAddr])) -> Result<(), ServerError> {
    let tls = match &config.tls {
        Some(files) => Some(tls::TlsAcceptor::load(files).map_err(ServerError::Tls)?),
        None => None,
    };
    let auth =
        registry::build_auth(&config.auth).map_err(|e| ServerError::Backend(e.to_string()))?;
    let store =
        registry::build_store(&config.store).map_err(|e| ServerError::Backend(e.to_string()))?;
    let env = Arc::new(SessionEnv {
        auth,
        store,
        auth_failure_delay: Duration::from_millis(config.limits.auth_failure_delay_ms),
        implementation: "pop3d",
    });

    let mut listeners = Vec::with_capacity(config.listen.len());
    let mut bound = Vec::with_capacity(config.listen.len());
    for listener in &config.listen {
        let socket =
            mio::net::TcpListener::bind(listener.addr).map_err(|source| ServerError::Bind {
                addr: listener.addr,
                source,
            })?;
        bound.push(socket.local_addr()?);
        listeners.push(ListenSocket {
            socket,
            implicit_tls: listener.implicit_tls,
        });
    }

    let poll = Poll::new()?;
    let notifier = Arc::new(Notifier::new(mio::Waker::new(poll.registry(), WAKER)?));
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    poll.registry()
        .register(&mut signals, SIGNALS, Interest::READABLE)?;

    let workers = match config.workers {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
        n => n,
    };
    let (job_tx, job_rx) = crossbeam_channel::bounded(workers * JOBS_PER_WORKER);
    let (done_tx, done_rx) = crossbeam_channel::unbounded();
    let mut threads = Vec::with_capacity(workers);
    for i in 0..workers {
        let jobs = job_rx.clone();
        let done = done_tx.clone();
        let notifier = Arc::clone(&notifier);
        let thread = std::thread::Builder::new()
            .name(format!("pop3d-worker-{i}"))
            .spawn(move || worker::run(jobs, done, notifier))?;
        threads.push(thread);
    }
    drop(done_tx);

    // Handshake threads exist only when TLS is configured. Half the cores:
    // a storm of new TLS clients then cannot take the CPU from sessions.
    let handshake_threads = if tls.is_some() {
        std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
    } else {
        0
    };
    let (handshake_tx, handshake_rx) =
        crossbeam_channel::bounded(config.limits.max_connections.max(1));
    let (handshake_done_tx, handshake_done_rx) = crossbeam_channel::unbounded();
    for i in 0..handshake_threads {
        let jobs = handshake_rx.clone();
        let done = handshake_done_tx.clone();
        let notifier = Arc::clone(&notifier);
        let thread = std::thread::Builder::new()
            .name(format!("pop3d-tls-{i}"))
            .spawn(move || handshake::run(jobs, done, notifier))?;
        threads.push(thread);
    }
    drop((handshake_rx, handshake_done_tx));

    let settings = LoopSettings {
        limits: config.limits.clone(),
        plaintext_auth: config.allow_plaintext_auth,
    };
    let mut event_loop = EventLoop::new(
        poll,
        listeners,
        tls,
        job_tx.clone(),
        done_rx.clone(),
        (handshake_tx, handshake_done_rx),
        notifier,
        env,
        settings,
    )?;
    log::info!("{workers} worker threads running sessions");
    if handshake_threads > 0 {
        log::info!("{handshake_threads} thread(s) for TLS handshakes");
    }
    on_ready(&bound);

    let stop = event_loop.run(&mut || {
        let mut signalled = Signalled::default();
        for signal in signals.pending() {
            match signal {
                SIGHUP => signalled.reload = true,
                other => signalled.stop = Some(other),
            }
        }
        signalled
    });
    let leftover = event_loop.shutdown();
    let Stop::Signal(signal) = stop?;
    log::info!("signal {signal} received: stopped accepting, ending sessions without UPDATE");
    for job in leftover {
        // Blocking is fine now: the loop is gone.
        let _ = job_tx.send(job);
    }
    drop(job_tx);
    for thread in threads {
        let _ = thread.join();
    }
    // Sessions that were at a worker when the loop stopped come back here;
    // release their maildrops (nothing is deleted).
    for done in done_rx.try_iter() {
        done.session.abandon("shutdown");
    }
    log::info!("pop3d stopped");
    Ok(())
}
