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

mod event_loop;
pub mod framer;
mod worker;

use crate::backend::registry;
use crate::config::Config;
use crate::protocol::SessionEnv;
use event_loop::{EventLoop, LoopSettings, Stop, SIGNALS, WAKER};
use mio::{Interest, Poll};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use worker::Notifier;

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
    /// The configuration asks for something this build cannot do.
    Unsupported(String),
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
            ServerError::Unsupported(msg) => write!(f, "{msg}"),
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

/// Runs the server until SIGTERM or SIGINT. `on_ready` is called with the
/// bound addresses once every listener is up (the demo prints how to connect).
pub fn run(config: &Config, on_ready: &mut dyn FnMut(&[SocketAddr])) -> Result<(), ServerError> {
    if config.tls.is_some() || config.listen.iter().any(|l| l.implicit_tls) {
        return Err(ServerError::Unsupported(
            "TLS (`tls`, `implicit_tls`) is not supported by this version of pop3d yet; remove those keys and terminate TLS in front of pop3d".into(),
        ));
    }
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
        listeners.push(socket);
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

    let settings = LoopSettings {
        limits: config.limits.clone(),
        plaintext_auth: config.allow_plaintext_auth,
    };
    let mut event_loop = EventLoop::new(
        poll,
        listeners,
        job_tx.clone(),
        done_rx.clone(),
        notifier,
        env,
        settings,
    )?;
    log::info!("{workers} worker threads running sessions");
    on_ready(&bound);

    let stop = event_loop.run(&mut || {
        let mut stop = None;
        for signal in signals.pending() {
            match signal {
                SIGHUP => log::warn!("SIGHUP: configuration reload is not supported yet; ignoring"),
                other => stop = Some(other),
            }
        }
        stop
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
