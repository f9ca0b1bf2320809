//! The server: listeners, the mio event loop, and the worker pool.
//!
//! One event-loop thread does all socket I/O and timing; a pool of workers
//! runs the POP3 sessions (which call backends that may block). They talk
//! over two crossbeam channels plus a [`mio::Waker`]. See DESIGN.md.
//!
//! Start-up order matters: listening sockets are bound (or taken from
//! systemd) and the TLS key is read first, while the process may still be
//! root; then privileges are dropped; only then are the backends built and
//! threads started, so nothing ever serves a client as root.
//!
//! Signals: SIGHUP reads the configuration again (`reload.rs`), SIGTERM and
//! SIGINT stop gracefully (commands in progress finish, within
//! `limits.shutdown_grace_secs`), SIGUSR1 asks for log files to be reopened.
//!
//! # Layout
//! - `framer.rs`: bytes to bounded command lines.
//! - `event_loop.rs`: accept, read, write, timers, backpressure, signals.
//! - `worker.rs`: jobs, completions, the worker threads.
//! - `tls.rs`: certificates and per-connection TLS state (the only file that
//!   uses rustls); `tls_disabled.rs` stands in for it when the cargo feature
//!   `tls` is off.
//! - `handshake.rs`: threads that do TLS handshake crypto off the loop.
//! - `abuse.rs`: failed-login penalties and caps shared by all sessions.
//! - `stats.rs`: counters and the Prometheus endpoint.
//! - `reload.rs`: SIGHUP's configuration reload, off the loop.
//! - `privileges.rs`: dropping root.
//! - `activation.rs`: systemd socket activation.

pub mod abuse;
mod activation;
mod event_loop;
pub mod framer;
mod handshake;
mod privileges;
mod reload;
pub mod stats;
// The one place the `tls` feature is looked at: without it, a module with
// the same API that refuses every certificate, so the rest of the server
// compiles unchanged and simply never has a TLS connection.
#[cfg_attr(not(feature = "tls"), path = "tls_disabled.rs")]
mod tls;
mod worker;

use crate::backend::registry;
use crate::backend::{Authenticator, Store};
use crate::config::Config;
use crate::protocol::guard::{Defences, LoginGuard};
use crate::protocol::sasl::SaslConfig;
use crate::protocol::SessionEnv;
use abuse::{AbuseGuard, Policy};
use event_loop::{EventLoop, ListenSocket, LoopSetup, Signalled, Stop, SIGNALS, WAKER};
use mio::{Interest, Poll};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use signal_hook_mio::v1_0::Signals;
use stats::Metrics;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use worker::Notifier;

pub use privileges::PrivilegeError;
pub use tls::TlsError;
/// Whether this binary can serve TLS (cargo feature `tls`); the
/// configuration check refuses `tls` and `implicit_tls` when it cannot.
pub use tls::TLS_BUILT;

/// What a build without TLS says when a configuration asks for TLS.
pub const NO_TLS_BUILD: &str = "this pop3d was built without TLS (cargo feature `tls`)";

/// Where the configuration being served came from.
#[derive(Debug, Clone, Copy)]
pub enum ConfigSource<'a> {
    /// A file, read again on SIGHUP.
    File(&'a Path),
    /// The embedded demo: nothing to read again, and it runs as whoever
    /// started it.
    Demo,
}

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
    /// The configured user or group could not be taken on, or root was
    /// not meant.
    Privileges(PrivilegeError),
    /// Sockets passed by systemd could not be used.
    Activation(String),
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
            ServerError::Privileges(e) => write!(f, "{e}"),
            ServerError::Activation(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ServerError {}

impl From<std::io::Error> for ServerError {
    fn from(e: std::io::Error) -> Self {
        ServerError::Io(e)
    }
}

/// An IPv4 client reaching an IPv6 socket shows as `::ffff:a.b.c.d`; as
/// `a.b.c.d` it reads better in the log and `127.0.0.1` counts as loopback
/// for `allow_plaintext_auth`, and it counts
/// against the same per-address limits and trusted networks as over IPv4.
pub fn unmapped(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

/// Loads the certificate and key as the server would at start, so
/// `check-config` can report a bad file before a restart finds it.
pub fn check_tls(files: &crate::config::TlsFiles) -> Result<(), TlsError> {
    tls::TlsAcceptor::load(files).map(drop)
}

/// The environment of new sessions: backends, settings, and the shared
/// login guard. Built at start and again on each SIGHUP, so `apop` and
/// `hostname` follow the config; `sasl` carries the SCRAM salt key, which
/// must outlive reloads, and gets the configured host name here.
pub(crate) fn session_env(
    config: &Config,
    auth: Arc<dyn Authenticator>,
    store: Arc<dyn Store>,
    guard: &Arc<AbuseGuard>,
    sasl: SaslConfig,
) -> Arc<SessionEnv> {
    let guard: Arc<dyn LoginGuard> = guard.clone();
    if config.apop && !auth.supports_secrets() {
        log::warn!(
            "apop: true, but the auth backend cannot give back passwords, so APOP stays off; \
             store {{PLAIN}} passwords or remove the key"
        );
    }
    Arc::new(SessionEnv {
        auth,
        store,
        auth_failure_delay: Duration::from_millis(config.limits.auth_failure_delay_ms),
        implementation: "pop3d",
        sasl: sasl.with_hostname(&crate::config::effective_hostname(
            config.hostname.as_deref(),
        )),
        apop: config.apop,
        defences: Defences {
            guard: Some(guard),
            max_bad_commands: config.limits.max_bad_commands,
        },
    })
}

/// Descriptors a logged-in session may hold: its socket and, with the
/// maildir store, the locked `pop3d.lock`.
const DESCRIPTORS_PER_SESSION: u64 = 2;
/// Descriptors besides sessions: listeners, epoll, the waker, logs,
/// message files being read, plugins' own.
const DESCRIPTORS_SPARE: u64 = 256;

/// Raises the open-file limit to what `max_connections` needs, or at least
/// the soft limit to the hard one: the usual soft limit (1024) would stop a
/// server at about 500 logged-in sessions, long before `max_connections`.
/// Says so when even that is too low.
fn raise_open_file_limit(max_connections: usize, warn_if_short: bool) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(limits) => limits,
        Err(e) => {
            log::warn!("cannot read the open-file limit: {e}");
            return;
        }
    };
    let wanted = (max_connections as u64)
        .saturating_mul(DESCRIPTORS_PER_SESSION)
        .saturating_add(DESCRIPTORS_SPARE);
    // Started as root (before dropping privileges) the hard limit itself
    // may be raised, up to the kernel's fs.nr_open; elsewhere this fails
    // with EPERM and the hard limit is as far as it goes.
    if hard < wanted && setrlimit(Resource::RLIMIT_NOFILE, wanted, wanted).is_ok() {
        log::debug!("open-file limit raised from {soft}/{hard} to {wanted}");
        return;
    }
    let limit = if soft < hard {
        match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => {
                log::debug!("open-file limit raised from {soft} to {hard}");
                hard
            }
            Err(e) => {
                log::warn!("cannot raise the open-file limit from {soft} to {hard}: {e}");
                soft
            }
        }
    } else {
        soft
    };
    if warn_if_short && limit < wanted {
        log::warn!(
            "the open-file limit is {limit}, but limits.max_connections ({max_connections}) \
             needs about {wanted}: logins beyond about {} sessions will fail with [SYS/TEMP]; \
             raise LimitNOFILE= in the systemd unit (or ulimit -n) or lower max_connections",
            limit.saturating_sub(DESCRIPTORS_SPARE) / DESCRIPTORS_PER_SESSION
        );
    }
}

/// Runs the server until SIGTERM or SIGINT (see the module docs for the
/// other signals). `on_ready` is called with the bound addresses once
/// every listener is up (the demo prints how to connect).
pub fn run(
    config: &Config,
    source: ConfigSource<'_>,
    on_ready: &mut dyn FnMut(&[SocketAddr]),
) -> Result<(), ServerError> {
    let demo = matches!(source, ConfigSource::Demo);
    // The demo serves one user on loopback: no capacity to warn about.
    raise_open_file_limit(config.limits.max_connections, !demo);
    // Names are looked up first: a typo stops the server before it binds.
    let account = privileges::plan(config, demo).map_err(ServerError::Privileges)?;

    // Privileged part: sockets and the TLS key.
    let tls = match &config.tls {
        Some(files) => Some(tls::TlsAcceptor::load(files).map_err(ServerError::Tls)?),
        None => None,
    };
    let inherited = activation::take_inherited(&config.listen).map_err(ServerError::Activation)?;
    let mut listeners = Vec::with_capacity(config.listen.len());
    let mut bound = Vec::with_capacity(config.listen.len());
    if inherited.is_empty() {
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
    } else {
        for passed in inherited {
            passed.socket.set_nonblocking(true)?;
            log::info!(
                "socket activation: serving {}{}",
                passed.addr,
                if passed.implicit_tls {
                    " (implicit TLS)"
                } else {
                    ""
                }
            );
            bound.push(passed.addr);
            listeners.push(ListenSocket {
                socket: mio::net::TcpListener::from_std(passed.socket),
                implicit_tls: passed.implicit_tls,
            });
        }
    }
    let stats_listener = match config.stats_listen {
        Some(addr) => Some(
            mio::net::TcpListener::bind(addr)
                .map_err(|source| ServerError::Bind { addr, source })?,
        ),
        None => None,
    };

    // From here on the process is what it will stay. No thread has been
    // started yet (the switch applies to the whole process regardless).
    match &account {
        Some(account) => privileges::become_account(account).map_err(ServerError::Privileges)?,
        None => privileges::warn_if_root(demo),
    }

    let auth =
        registry::build_auth(&config.auth).map_err(|e| ServerError::Backend(e.to_string()))?;
    let store =
        registry::build_store(&config.store).map_err(|e| ServerError::Backend(e.to_string()))?;
    let metrics = Arc::new(Metrics::default());
    let guard = Arc::new(AbuseGuard::new(
        Policy::from_config(config),
        Arc::clone(&metrics),
    ));
    // One SCRAM salt key for the life of the process (kept across SIGHUP),
    // so the salts of users with plaintext secrets stay stable.
    // The host name is set from the config by `session_env`.
    let sasl = SaslConfig::with_random_key("localhost").map_err(std::io::Error::other)?;
    let env = session_env(config, auth, store, &guard, sasl);

    let poll = Poll::new()?;
    let notifier = Arc::new(Notifier::new(mio::Waker::new(poll.registry(), WAKER)?));
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP, SIGUSR1])?;
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
        let metrics = Arc::clone(&metrics);
        let thread = std::thread::Builder::new()
            .name(format!("pop3d-worker-{i}"))
            .spawn(move || worker::run(jobs, done, notifier, metrics))?;
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

    let mut event_loop = EventLoop::new(
        poll,
        listeners,
        LoopSetup {
            tls,
            jobs: job_tx.clone(),
            done: done_rx.clone(),
            handshakes: (handshake_tx, handshake_done_rx),
            notifier,
            env,
            config: config.clone(),
            config_path: match source {
                ConfigSource::File(path) => Some(path.to_path_buf()),
                ConfigSource::Demo => None,
            },
            metrics,
            guard,
            stats: stats_listener,
        },
    )?;
    log::info!("{workers} worker threads running sessions");
    if handshake_threads > 0 {
        log::info!("{handshake_threads} thread(s) for TLS handshakes");
    }
    if let Some(addr) = config.stats_listen {
        log::info!("metrics at http://{addr}/metrics");
    }
    on_ready(&bound);

    let stop = event_loop.run(&mut || {
        let mut signalled = Signalled::default();
        for signal in signals.pending() {
            match signal {
                SIGHUP => signalled.reload = true,
                SIGUSR1 => signalled.reopen_logs = true,
                other => signalled.stop = Some(other),
            }
        }
        signalled
    });
    let leftover = event_loop.shutdown();
    let Stop::Signal(signal) = stop?;
    log::info!("signal {signal}: all connections closed; releasing maildrops");
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
