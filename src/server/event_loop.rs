//! The single event-loop thread: accept, read, frame, write, time.
//!
//! It never blocks and never touches storage or passwords. Each connection
//! is a small state machine: its session is either here (idle, streaming,
//! or holding a delayed reply) or away at a worker. Interest in socket
//! events is registered once (readable and writable, edge-triggered), and
//! what to do next is derived from the connection's state after every
//! event: write what is pending, hand queued lines or a body request to a
//! worker when the output has drained, resume reading when there is room.
//!
//! # TLS
//! A connection's [`Transport`] says what its socket carries: plain POP3,
//! TLS records (implicit TLS from the first byte, or after STLS), or the
//! moment in between, while the `+OK` to STLS is still going out in
//! plaintext and nothing is read. With TLS, reading means "take decrypted
//! plaintext that rustls already holds, and only when there is none read
//! records from the socket"; rustls refuses more input while decrypted
//! bytes wait, so a full line queue (backpressure) also stops socket reads,
//! and on resuming the loop drains what rustls holds first (edge-triggered
//! readiness will not report it). Writing means "move reply plaintext into
//! rustls' bounded buffer, then write records to the socket"; output counts
//! as drained only when rustls holds no records either, so streaming bodies
//! are still pulled one piece at a time. During the handshake the loop only
//! moves bytes: the records it reads are processed (key exchange, signing)
//! on the handshake threads (see `handshake.rs`), while the connection's
//! transport is `Away`. Each handshake runs under its own timer.

use super::abuse::{AbuseGuard, Policy};
use super::framer::{Framer, LineBatch};
use super::handshake::{HandshakeDone, HandshakeJob};
use super::reload::{self, Outcome, Reloaded};
use super::stats::{LoopGauges, Metrics, StatsEndpoint};
use super::tls::{Plaintext, TlsAcceptor, TlsConn};
use super::worker::{ConnId, Done, Job, Notifier};
use crate::config::{Config, Limits, PlaintextAuth};
use crate::protocol::session::{canned, Peer};
use crate::protocol::{Directive, Session, SessionEnv};
use crossbeam_channel::{Receiver, Sender, TrySendError};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Token of the waker that workers poke.
pub const WAKER: Token = Token(0);
/// Token of the signal source.
pub const SIGNALS: Token = Token(1);
/// Token of the metrics listener (`stats_listen`).
const STATS_LISTENER: Token = Token(2);
/// Listener tokens start here.
const FIRST_LISTENER: usize = 3;
/// Metrics endpoint connection tokens start here.
const FIRST_STATS_CONNECTION: usize = 1 << 19;
/// Connection tokens start here (slot index + this).
const FIRST_CONNECTION: usize = 1 << 20;

/// Longest command line, CRLF included (RFC 2449 section 4).
const MAX_COMMAND_LINE: usize = 255;
/// One read from a socket into the loop's shared buffer.
const READ_BUFFER: usize = 64 * 1024;
/// An output buffer larger than this is freed rather than kept for reuse
/// once drained, so idle connections stay small.
const KEEP_OUTPUT_CAPACITY: usize = 1024;

/// Settings the loop applies to every connection; replaced on SIGHUP.
pub struct LoopSettings {
    pub limits: Limits,
    pub plaintext_auth: PlaintextAuth,
}

/// Everything the loop is built from besides its sockets.
pub struct LoopSetup {
    pub tls: Option<TlsAcceptor>,
    pub jobs: Sender<Job>,
    pub done: Receiver<Done>,
    pub handshakes: (Sender<HandshakeJob>, Receiver<HandshakeDone>),
    pub notifier: Arc<Notifier>,
    pub env: Arc<SessionEnv>,
    /// The configuration being served, as loaded (SIGHUP compares the new
    /// file with it).
    pub config: Config,
    /// Where SIGHUP reads the configuration again; `None` for the demo.
    pub config_path: Option<PathBuf>,
    pub metrics: Arc<Metrics>,
    pub guard: Arc<AbuseGuard>,
    pub stats: Option<mio::net::TcpListener>,
}

/// A bound listening socket and what its connections speak.
pub struct ListenSocket {
    pub socket: TcpListener,
    /// TLS from the first byte (POP3S) rather than plain POP3 with STLS.
    pub implicit_tls: bool,
}

/// What the signal source asked for, gathered over every pending signal.
#[derive(Debug, Default)]
pub struct Signalled {
    /// SIGTERM or SIGINT: stop with this signal.
    pub stop: Option<i32>,
    /// SIGHUP: read the configuration (or, for the demo, the certificate
    /// and key) again.
    pub reload: bool,
    /// SIGUSR1: reopen log files.
    pub reopen_logs: bool,
}

/// What the bytes on a connection's socket are.
enum Transport {
    /// Plain POP3.
    Plain,
    /// STLS was accepted: its `+OK` (and any reply before it) goes out in
    /// plaintext, and nothing is read until it has; then TLS starts. Not
    /// reading keeps the handshake's first bytes out of the line framer.
    Upgrading,
    /// TLS records, during or after the handshake.
    Tls(Box<TlsConn>),
    /// Handshaking, with the TLS state at a handshake thread: nothing is
    /// read or written until it comes back.
    Away,
}

/// What the session of a connection is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The session is here; queued lines may be dispatched.
    Ready,
    /// The session is at a worker.
    Working,
    /// The session is here with a multi-line reply in progress: ask for
    /// more once the output has drained.
    Streaming,
    /// The reply to a failed login is held until this instant.
    Delayed(Instant),
    /// Send what is pending, then close.
    Closing,
}

struct Connection {
    /// Distinguishes this connection from earlier ones in the same slot.
    generation: u64,
    stream: TcpStream,
    /// Plain, switching to TLS, TLS, or TLS state away for a handshake step.
    transport: Transport,
    /// Client address, for per-IP accounting and the session's log lines.
    peer: SocketAddr,
    /// `None` exactly while a worker holds the session.
    session: Option<Box<Session>>,
    phase: Phase,
    framer: Framer,
    /// Complete lines not yet handed to a worker.
    queued: LineBatch,
    /// Reply bytes not yet written, from `written` on.
    out: Vec<u8>,
    written: usize,
    /// Reading stopped because the queue is full (backpressure); the loop
    /// must read by itself when it resumes, as no new edge will come.
    read_paused: bool,
    /// The client closed its sending side; finish queued lines, then close.
    peer_closed: bool,
    /// Last time the client sent something or accepted output.
    last_activity: Instant,
    /// Whether the client has logged in (selects the idle timeout).
    authenticated: bool,
    /// Session id, on the connect and disconnect log lines.
    id: u64,
    /// Our address the client connected to, for the log.
    local: Option<SocketAddr>,
    /// When the connection was accepted, for the disconnect line.
    opened: Instant,
    /// Octets read from the socket, for the disconnect line.
    bytes_in: u64,
    /// Octets written to the socket, for the disconnect line.
    bytes_out: u64,
    /// Why the connection is closing, when not because the session said
    /// so (shown on the disconnect line).
    close_reason: Option<&'static str>,
}

enum TimerKind {
    /// Check the connection's idle deadline.
    Idle,
    /// A delayed reply may go out.
    Delay,
    /// The TLS handshake must have finished by now.
    Handshake,
}

/// A SIGTERM (or SIGINT) being honoured.
struct Stopping {
    signal: i32,
    /// When connections still busy are cut.
    deadline: Instant,
}

/// SIGHUP's configuration reload: where from, and the result channel.
struct Reloader {
    path: PathBuf,
    results: (Sender<Outcome>, Receiver<Outcome>),
    /// A reload thread is running.
    in_flight: bool,
    /// Another SIGHUP came while one was running: read again after it.
    again: bool,
}

/// Deadline, slot, generation, kind.
type Timer = (Instant, usize, u64, u8);

pub struct EventLoop {
    poll: Poll,
    listeners: Vec<ListenSocket>,
    /// The certificate for new TLS connections, when one is configured;
    /// replaced on SIGHUP.
    tls: Option<TlsAcceptor>,
    connections: Vec<Option<Connection>>,
    free_slots: Vec<usize>,
    next_generation: u64,
    per_ip: HashMap<IpAddr, usize>,
    open_connections: usize,
    timers: BinaryHeap<Reverse<Timer>>,
    jobs: Sender<Job>,
    /// Handshake steps for the handshake threads; one in flight per
    /// connection at most, and the channel holds max_connections, so a send
    /// never finds it full.
    handshakes: Sender<HandshakeJob>,
    /// Processed handshake steps coming back.
    handshakes_done: Receiver<HandshakeDone>,
    /// Jobs the bounded channel could not take yet; sent before anything
    /// new so order per connection is kept.
    backlog: VecDeque<Job>,
    done: Receiver<Done>,
    notifier: Arc<Notifier>,
    /// What new sessions are created with; replaced on SIGHUP (sessions
    /// keep the one they started with).
    env: Arc<SessionEnv>,
    settings: LoopSettings,
    read_buffer: Vec<u8>,
    next_session_id: u64,
    /// The configuration in force, with the keys that need a restart as
    /// they were at start.
    current: Config,
    /// `None` when there is no file to read again (the demo).
    reloader: Option<Reloader>,
    /// The handshake channel's capacity, which max_connections may not
    /// exceed after a reload (a handshake send must never find it full).
    max_connections_ceiling: usize,
    metrics: Arc<Metrics>,
    /// The brute-force defences, shared with every session and kept
    /// across reloads.
    guard: Arc<AbuseGuard>,
    stats: Option<StatsEndpoint>,
    /// Connections open now whose client has logged in.
    authenticated_open: usize,
    /// Set once SIGTERM or SIGINT arrived.
    stopping: Option<Stopping>,
}

/// What ended [`EventLoop::run`].
pub enum Stop {
    Signal(i32),
}

impl EventLoop {
    pub fn new(poll: Poll, listeners: Vec<ListenSocket>, setup: LoopSetup) -> io::Result<Self> {
        let mut listeners = listeners;
        for (i, listener) in listeners.iter_mut().enumerate() {
            poll.registry().register(
                &mut listener.socket,
                Token(FIRST_LISTENER + i),
                Interest::READABLE,
            )?;
        }
        let stats = match setup.stats {
            Some(mut listener) => {
                poll.registry()
                    .register(&mut listener, STATS_LISTENER, Interest::READABLE)?;
                Some(StatsEndpoint::new(listener, FIRST_STATS_CONNECTION))
            }
            None => None,
        };
        let reloader = setup.config_path.map(|path| Reloader {
            path,
            results: crossbeam_channel::unbounded(),
            in_flight: false,
            again: false,
        });
        Ok(EventLoop {
            poll,
            listeners,
            tls: setup.tls,
            connections: Vec::new(),
            free_slots: Vec::new(),
            next_generation: 1,
            per_ip: HashMap::new(),
            open_connections: 0,
            timers: BinaryHeap::new(),
            jobs: setup.jobs,
            handshakes: setup.handshakes.0,
            handshakes_done: setup.handshakes.1,
            backlog: VecDeque::new(),
            done: setup.done,
            notifier: setup.notifier,
            env: setup.env,
            settings: LoopSettings {
                limits: setup.config.limits.clone(),
                plaintext_auth: setup.config.allow_plaintext_auth,
            },
            read_buffer: vec![0; READ_BUFFER],
            next_session_id: session_id_seed(),
            max_connections_ceiling: setup.config.limits.max_connections.max(1),
            current: setup.config,
            reloader,
            metrics: setup.metrics,
            guard: setup.guard,
            stats,
            authenticated_open: 0,
            stopping: None,
        })
    }

    /// Runs until `on_signal` asks to stop.
    pub fn run(&mut self, on_signal: &mut dyn FnMut() -> Signalled) -> io::Result<Stop> {
        let mut events = Events::with_capacity(1024);
        loop {
            if let Some(stopping) = &self.stopping {
                if self.open_connections == 0 {
                    return Ok(Stop::Signal(stopping.signal));
                }
                if Instant::now() >= stopping.deadline {
                    log::info!(
                        "shutdown grace period over: cutting {} connection(s) still busy",
                        self.open_connections
                    );
                    return Ok(Stop::Signal(stopping.signal));
                }
            }
            let timeout = self.next_timer_in();
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            for event in events.iter() {
                match event.token() {
                    WAKER => {}
                    SIGNALS => {
                        let signalled = on_signal();
                        if signalled.reopen_logs {
                            // A quick open(2) on the loop: logrotate sends
                            // this rarely, and a log line written meanwhile
                            // must land in one file or the other, whole.
                            match crate::logging::reopen() {
                                Ok(crate::logging::Reopened::File(path)) => log::info!(
                                    "SIGUSR1: reopened the log file {}",
                                    path.display()
                                ),
                                Ok(crate::logging::Reopened::NotAFile) => log::info!(
                                    "SIGUSR1: pop3d writes its log to stderr or syslog, which need no reopening; nothing to do"
                                ),
                                Err(e) => log::error!(
                                    "SIGUSR1: {e}; still writing to the file opened before (is its directory writable by the user pop3d runs as?)"
                                ),
                            }
                        }
                        if signalled.reload {
                            self.reload();
                        }
                        if let Some(signal) = signalled.stop {
                            if let Some(stopping) = &self.stopping {
                                log::info!("signal {signal} again: stopping now");
                                return Ok(Stop::Signal(stopping.signal));
                            }
                            self.begin_stop(signal);
                        }
                    }
                    STATS_LISTENER => {
                        let gauges = self.gauges();
                        let metrics = &self.metrics;
                        if let Some(stats) = self.stats.as_mut() {
                            stats.accept(self.poll.registry(), &mut || metrics.render(&gauges));
                        }
                    }
                    Token(t) if (FIRST_STATS_CONNECTION..FIRST_CONNECTION).contains(&t) => {
                        let gauges = self.gauges();
                        let metrics = &self.metrics;
                        if let Some(stats) = self.stats.as_mut() {
                            stats.ready(Token(t), self.poll.registry(), &mut || {
                                metrics.render(&gauges)
                            });
                        }
                    }
                    Token(t) if t >= FIRST_CONNECTION => {
                        let slot = t - FIRST_CONNECTION;
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            if let Some(reason) = self.read(slot) {
                                self.close(slot, reason);
                                continue;
                            }
                        }
                        self.advance(slot);
                    }
                    Token(t) => self.accept(t - FIRST_LISTENER),
                }
            }
            self.drain_completions();
            self.fire_timers();
            if let Some(stats) = self.stats.as_mut() {
                stats.expire(Instant::now(), self.poll.registry());
            }
            self.flush_backlog();
        }
    }

    /// The gauges of the metrics endpoint that only the loop knows.
    fn gauges(&self) -> LoopGauges {
        LoopGauges {
            open_connections: self.open_connections,
            authenticated: self.authenticated_open,
            queued_jobs: self.jobs.len() + self.backlog.len(),
            guard_tracked: self.guard.tracked(),
        }
    }

    /// SIGTERM or SIGINT: accept nothing more, let commands in progress
    /// finish (a RETR being sent, the UPDATE of a QUIT), and close every
    /// connection as soon as it is between commands. `run` returns once
    /// none is left or the grace period is over.
    fn begin_stop(&mut self, signal: i32) {
        let grace = Duration::from_secs(self.settings.limits.shutdown_grace_secs);
        for listener in &mut self.listeners {
            let _ = self.poll.registry().deregister(&mut listener.socket);
        }
        // Closing the sockets makes new clients fail at once rather than
        // wait in the kernel's backlog.
        self.listeners.clear();
        log::info!(
            "signal {signal} received: stopped accepting; finishing commands in progress (at most {} s), then closing; nothing is deleted without QUIT",
            grace.as_secs()
        );
        if let Some(mut stats) = self.stats.take() {
            let _ = self.poll.registry().deregister(stats.listener());
        }
        self.stopping = Some(Stopping {
            signal,
            deadline: Instant::now() + grace,
        });
        for slot in 0..self.connections.len() {
            self.advance(slot);
        }
    }

    /// Ends every connection left (those still busy when the grace period
    /// ended) without UPDATE and hands open maildrops to the workers for
    /// release.
    pub fn shutdown(mut self) -> Vec<Job> {
        for slot in 0..self.connections.len() {
            if let Some(conn) = self.connections[slot].as_mut() {
                // Best effort: a client that is not reading simply misses
                // it. Not in the middle of a reply, where the line would
                // read as part of it.
                let mid_reply = has_pending_output(conn)
                    || matches!(conn.phase, Phase::Streaming | Phase::Working);
                if !mid_reply {
                    send_best_effort(conn, canned::SHUTTING_DOWN);
                }
            }
            self.close(slot, "shutdown");
        }
        self.backlog.into_iter().collect()
    }

    /// SIGHUP: read the configuration file again on a thread of its own
    /// (see `reload.rs`); without a file (the demo), the certificate.
    fn reload(&mut self) {
        let Some(reloader) = self.reloader.as_mut() else {
            self.reload_tls();
            return;
        };
        if reloader.in_flight {
            reloader.again = true;
            return;
        }
        log::info!("SIGHUP: reading {} again", reloader.path.display());
        match reload::start(
            reloader.path.clone(),
            reloader.results.0.clone(),
            Arc::clone(&self.notifier),
        ) {
            Ok(()) => reloader.in_flight = true,
            Err(e) => log::error!("SIGHUP: cannot start reloading: {e}; nothing changed"),
        }
    }

    /// A reload finished: apply it, or say why not.
    fn reload_done(&mut self, outcome: Outcome) {
        let Some(reloader) = self.reloader.as_mut() else {
            return;
        };
        reloader.in_flight = false;
        let again = std::mem::take(&mut reloader.again);
        let path = reloader.path.display().to_string();
        match outcome {
            Ok(reloaded) => self.apply_reload(*reloaded, &path),
            Err(problems) => {
                for problem in &problems {
                    log::error!("SIGHUP: {problem}");
                }
                log::error!(
                    "SIGHUP: {path} is not usable ({} problem(s) above); still serving with the configuration loaded before",
                    problems.len()
                );
            }
        }
        if again {
            self.reload();
        }
    }

    /// Applies a reloaded configuration to new connections. Open sessions
    /// keep their backends and settings. What needs a restart (listeners,
    /// workers, user, stats endpoint) is kept as it is, with a line each.
    fn apply_reload(&mut self, reloaded: Reloaded, path: &str) {
        let Reloaded {
            mut config,
            auth,
            store,
            tls,
        } = reloaded;
        if tls.is_none() {
            if let Some(l) = self.listeners.iter().find(|l| l.implicit_tls) {
                let addr = l
                    .socket
                    .local_addr()
                    .map_or_else(|_| "?".to_string(), |a| a.to_string());
                log::error!(
                    "SIGHUP: {path} has no `tls` section, but pop3d still listens with implicit TLS on {addr} (listener changes need a restart); still serving with the configuration loaded before"
                );
                return;
            }
        }
        let old = &self.current;
        let restart_only: [(&str, bool); 6] = [
            ("listen", config.listen != old.listen),
            ("workers", config.workers != old.workers),
            ("user", config.user != old.user),
            ("group", config.group != old.group),
            ("allow_root", config.allow_root != old.allow_root),
            ("stats_listen", config.stats_listen != old.stats_listen),
        ];
        for (key, changed) in restart_only {
            if changed {
                log::warn!("SIGHUP: `{key}` changed; listen and process changes need a restart, keeping the current value");
            }
        }
        config.listen = old.listen.clone();
        config.workers = old.workers;
        config.user = old.user.clone();
        config.group = old.group.clone();
        config.allow_root = old.allow_root;
        config.stats_listen = old.stats_listen;
        if config.limits.max_connections > self.max_connections_ceiling {
            log::warn!(
                "SIGHUP: max_connections can rise to {} (its value at start) without a restart; using {}",
                self.max_connections_ceiling,
                self.max_connections_ceiling
            );
            config.limits.max_connections = self.max_connections_ceiling;
        }
        if config.apop != old.apop || config.hostname != old.hostname {
            log::info!(
                "SIGHUP: apop {} with host name {}; new connections use them",
                if config.apop { "on" } else { "off" },
                crate::config::effective_hostname(config.hostname.as_deref())
            );
        }
        self.guard.set_policy(Policy::from_config(&config));
        self.env = super::session_env(&config, auth, store, &self.guard, self.env.sasl.clone());
        self.settings = LoopSettings {
            limits: config.limits.clone(),
            plaintext_auth: config.allow_plaintext_auth,
        };
        match (tls, self.tls.is_some()) {
            (Some(acceptor), _) => {
                log::info!(
                    "SIGHUP: reloaded TLS certificate {} and key {}; new connections use them",
                    acceptor.files().cert,
                    acceptor.files().key
                );
                self.tls = Some(acceptor);
            }
            (None, true) => {
                log::info!(
                    "SIGHUP: no `tls` section any more; STLS is not offered to new connections"
                );
                self.tls = None;
            }
            (None, false) => {}
        }
        self.current = config;
        log::info!(
            "SIGHUP: reloaded {path}; new connections use its settings, open sessions keep theirs"
        );
    }

    /// SIGHUP without a configuration file (the demo): new connections get
    /// the certificate and key as they are on disk now; open ones keep
    /// theirs. Reading two small local files is the only blocking this
    /// thread does, once per signal.
    fn reload_tls(&mut self) {
        let Some(acceptor) = self.tls.as_mut() else {
            log::info!("SIGHUP: no configuration file and no `tls` section: nothing to reload");
            return;
        };
        match acceptor.reload() {
            Ok(()) => log::info!(
                "SIGHUP: reloaded TLS certificate {} and key {}; new connections use them",
                acceptor.files().cert,
                acceptor.files().key
            ),
            Err(e) => log::error!("SIGHUP: {e}; still using the certificate loaded before"),
        }
    }

    fn next_timer_in(&self) -> Option<Duration> {
        let timer = self.timers.peek().map(|Reverse((at, ..))| *at);
        let stats = self.stats.as_ref().and_then(StatsEndpoint::next_deadline);
        let stop = self.stopping.as_ref().map(|s| s.deadline);
        [timer, stats, stop]
            .into_iter()
            .flatten()
            .min()
            .map(|at| at.saturating_duration_since(Instant::now()))
    }

    fn accept(&mut self, listener: usize) {
        loop {
            let Some(l) = self.listeners.get(listener) else {
                return;
            };
            let (stream, peer) = match l.socket.accept() {
                Ok(pair) => pair,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and friends: this connection waits in the
                    // backlog; the next accept event retries.
                    log::warn!("accept failed: {e} (raise the file-descriptor limit?)");
                    return;
                }
            };
            let implicit_tls = l.implicit_tls;
            self.admit(stream, super::unmapped(peer), implicit_tls);
        }
    }

    fn admit(&mut self, mut stream: TcpStream, peer: SocketAddr, implicit_tls: bool) {
        let limits = &self.settings.limits;
        if self.open_connections >= limits.max_connections {
            log::warn!(
                "refused {peer}: max_connections ({}) reached",
                limits.max_connections
            );
            refuse(&mut stream, implicit_tls, canned::TOO_MANY_CONNECTIONS);
            self.metrics.connections_refused.fetch_add(1, Relaxed);
            return;
        }
        let from_ip = self.per_ip.get(&peer.ip()).copied().unwrap_or(0);
        if from_ip >= limits.max_per_ip {
            log::warn!("refused {peer}: max_per_ip ({}) reached", limits.max_per_ip);
            refuse(&mut stream, implicit_tls, canned::TOO_MANY_FROM_IP);
            self.metrics.connections_refused.fetch_add(1, Relaxed);
            return;
        }
        // Replies are written whole; Nagle would only delay the last
        // segment of each one waiting for an ACK.
        if let Err(e) = stream.set_nodelay(true) {
            log::debug!("set_nodelay for {peer}: {e}");
        }
        let transport = if implicit_tls {
            match self.tls.as_ref().map(TlsAcceptor::accept) {
                Some(Ok(tls)) => Transport::Tls(Box::new(tls)),
                Some(Err(e)) => {
                    log::error!("cannot start TLS for {peer}: {e}");
                    return;
                }
                None => {
                    // Config validation requires `tls` for implicit
                    // listeners, so this is a bug, not an operator error.
                    log::error!("implicit TLS listener without a certificate; refusing {peer}");
                    return;
                }
            }
        } else {
            Transport::Plain
        };
        let slot = self.free_slots.pop().unwrap_or_else(|| {
            self.connections.push(None);
            self.connections.len() - 1
        });
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            Token(FIRST_CONNECTION + slot),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            log::warn!("cannot register connection from {peer}: {e}");
            self.free_slots.push(slot);
            return;
        }
        let plaintext_auth_allowed = implicit_tls
            || match self.settings.plaintext_auth {
                PlaintextAuth::Always => true,
                PlaintextAuth::LoopbackOnly => peer.ip().is_loopback(),
                PlaintextAuth::Never => false,
            };
        let id = self.next_session_id;
        self.next_session_id = self.next_session_id.wrapping_add(1);
        let local = stream.local_addr().ok().map(super::unmapped);
        let session = Session::new(
            Arc::clone(&self.env),
            Peer {
                addr: peer,
                local,
                plaintext_auth_allowed,
                tls: implicit_tls,
                stls_available: !implicit_tls && self.tls.is_some(),
            },
            id,
        );
        log::debug!(
            "session={id:08x} connect remote={peer} local={} tls={}",
            local.map_or_else(|| "?".to_string(), |a| a.to_string()),
            if implicit_tls { "yes" } else { "no" }
        );
        self.metrics.connections_total.fetch_add(1, Relaxed);
        let mut out = Vec::new();
        session.greeting(&mut out);
        let generation = self.next_generation;
        self.next_generation += 1;
        let now = Instant::now();
        self.connections[slot] = Some(Connection {
            generation,
            stream,
            transport,
            peer,
            session: Some(Box::new(session)),
            phase: Phase::Ready,
            framer: Framer::new(MAX_COMMAND_LINE),
            queued: LineBatch::default(),
            out,
            written: 0,
            read_paused: false,
            peer_closed: false,
            last_activity: now,
            authenticated: false,
            id,
            local,
            opened: now,
            bytes_in: 0,
            bytes_out: 0,
            close_reason: None,
        });
        *self.per_ip.entry(peer.ip()).or_insert(0) += 1;
        self.open_connections += 1;
        let deadline = now + Duration::from_secs(self.settings.limits.login_timeout_secs);
        self.timers
            .push(Reverse((deadline, slot, generation, TimerKind::Idle as u8)));
        if implicit_tls {
            self.start_handshake_timer(slot, generation);
        }
        self.advance(slot);
    }

    fn start_handshake_timer(&mut self, slot: usize, generation: u64) {
        let deadline =
            Instant::now() + Duration::from_secs(self.settings.limits.tls_handshake_timeout_secs);
        self.timers.push(Reverse((
            deadline,
            slot,
            generation,
            TimerKind::Handshake as u8,
        )));
    }

    /// Reads until the socket would block or the queue is full. Returns a
    /// reason when the connection must close at once (a TLS failure).
    fn read(&mut self, slot: usize) -> Option<&'static str> {
        let max_lines = self.settings.limits.max_pipelined_lines;
        let conn = self.connections.get_mut(slot).and_then(Option::as_mut)?;
        if conn.peer_closed || conn.phase == Phase::Closing {
            // Nothing more will be read; a pause no longer matters.
            conn.read_paused = false;
            return None;
        }
        if matches!(conn.transport, Transport::Upgrading | Transport::Away) {
            // `advance` reads again once TLS is on or back.
            conn.read_paused = true;
            return None;
        }
        loop {
            if conn.queued.len() >= max_lines {
                conn.read_paused = true;
                return None;
            }
            let result = match &mut conn.transport {
                Transport::Tls(tls) => {
                    // Plaintext rustls already holds comes first: it may be
                    // left from before a pause, and no readiness event will
                    // announce it.
                    match tls.read_plaintext(&mut self.read_buffer) {
                        Plaintext::Data(n) => {
                            conn.framer.feed(&self.read_buffer[..n], &mut conn.queued);
                            continue;
                        }
                        Plaintext::Closed => {
                            conn.peer_closed = true;
                            return None;
                        }
                        Plaintext::Empty => {}
                    }
                    if tls.is_handshaking() {
                        // Read only; the processing goes to a handshake
                        // thread.
                        match tls.receive(&mut conn.stream) {
                            Ok(n) if n > 0 => {
                                conn.last_activity = Instant::now();
                                conn.bytes_in += n as u64;
                                self.metrics.bytes_in.fetch_add(n as u64, Relaxed);
                                return send_to_handshake_thread(&self.handshakes, conn, slot);
                            }
                            other => other,
                        }
                    } else {
                        tls.read_tls(&mut conn.stream)
                    }
                }
                _ => {
                    let result = conn.stream.read(&mut self.read_buffer);
                    if let Ok(n) = result {
                        conn.framer.feed(&self.read_buffer[..n], &mut conn.queued);
                    }
                    result
                }
            };
            match result {
                Ok(0) => {
                    conn.peer_closed = true;
                    if handshaking(conn) {
                        log::debug!(
                            "{} closed the connection during the TLS handshake",
                            conn.peer
                        );
                        return Some("closed during TLS handshake");
                    }
                    return None;
                }
                Ok(n) => {
                    conn.last_activity = Instant::now();
                    conn.bytes_in += n as u64;
                    self.metrics.bytes_in.fetch_add(n as u64, Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    conn.read_paused = false;
                    return None;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                    if let Transport::Tls(tls) = &mut conn.transport {
                        if tls.is_handshaking() {
                            log::info!("TLS handshake with {} failed: {e}", conn.peer);
                        } else {
                            log::debug!("TLS error from {}: {e}", conn.peer);
                        }
                        // Tell the client why (rustls queued an alert); one
                        // try, the connection is going anyway.
                        let _ = tls.write_tls(&mut conn.stream);
                    }
                    return Some("TLS error");
                }
                Err(e) => {
                    log::debug!("read from {}: {e}", conn.peer);
                    conn.peer_closed = true;
                    // A reset connection gets no more replies.
                    conn.phase = match conn.phase {
                        Phase::Working => Phase::Working,
                        _ => Phase::Closing,
                    };
                    conn.out.clear();
                    conn.written = 0;
                    return None;
                }
            }
        }
    }

    /// Derives the next step from the connection's state.
    fn advance(&mut self, slot: usize) {
        loop {
            let max_lines = self.settings.limits.max_pipelined_lines;
            let Some(conn) = self.connections.get_mut(slot).and_then(Option::as_mut) else {
                return;
            };
            if self.stopping.is_some() {
                if let Phase::Delayed(_) = conn.phase {
                    // A held failed-login reply goes out now, followed by
                    // the shutdown line.
                    conn.phase = Phase::Ready;
                }
                if handshaking(conn) {
                    self.close(slot, "shutdown");
                    return;
                }
            }
            if !matches!(conn.phase, Phase::Delayed(_)) && has_pending_output(conn) {
                let before = conn.bytes_out;
                let written = write_pending(conn);
                self.metrics
                    .bytes_out
                    .fetch_add(conn.bytes_out - before, Relaxed);
                match written {
                    Ok(()) => {}
                    Err(e) => {
                        log::debug!("write to {}: {e}", conn.peer);
                        self.close(slot, "write error");
                        return;
                    }
                }
            }
            let drained = !has_pending_output(conn);
            if drained && !conn.out.is_empty() {
                conn.out.clear();
                conn.written = 0;
                // A large buffer goes back to the allocator once a reply is
                // done, so an idle connection stays small; while a body is
                // streaming it is kept for the next piece.
                if conn.out.capacity() > KEEP_OUTPUT_CAPACITY
                    && !matches!(conn.phase, Phase::Streaming)
                {
                    conn.out = Vec::new();
                }
            }
            if drained && matches!(conn.transport, Transport::Upgrading) && self.stopping.is_some()
            {
                self.close(slot, "shutdown");
                return;
            }
            if drained && matches!(conn.transport, Transport::Upgrading) {
                // The +OK to STLS is out: from here on the socket carries
                // TLS. Whatever the client sent before is already gone.
                match self.tls.as_ref().map(TlsAcceptor::accept) {
                    Some(Ok(tls)) => conn.transport = Transport::Tls(Box::new(tls)),
                    Some(Err(e)) => {
                        log::error!("cannot start TLS for {}: {e}", conn.peer);
                        self.close(slot, "TLS unavailable");
                        return;
                    }
                    None => {
                        log::error!("STLS accepted without a certificate; closing {}", conn.peer);
                        self.close(slot, "TLS unavailable");
                        return;
                    }
                }
                // The ClientHello may already be waiting; no new edge will
                // say so.
                conn.read_paused = true;
                let generation = conn.generation;
                self.start_handshake_timer(slot, generation);
                continue;
            }
            match conn.phase {
                Phase::Closing if drained => {
                    send_close_notify(conn);
                    let reason = conn.close_reason.unwrap_or("closed");
                    self.close(slot, reason);
                    return;
                }
                Phase::Streaming if drained => {
                    self.dispatch_body(slot);
                    return;
                }
                Phase::Ready if drained && self.stopping.is_some() => {
                    // Between commands: the command in progress (if any)
                    // is answered; queued ones are not started.
                    conn.out.extend_from_slice(canned::SHUTTING_DOWN);
                    conn.phase = Phase::Closing;
                    conn.close_reason = Some("shutdown");
                    continue;
                }
                Phase::Ready if drained && !conn.queued.is_empty() => {
                    self.dispatch_lines(slot);
                    return;
                }
                Phase::Ready if drained && conn.peer_closed => {
                    send_close_notify(conn);
                    self.close(slot, "disconnected");
                    return;
                }
                _ => {}
            }
            if conn.read_paused
                && conn.queued.len() < max_lines
                && !matches!(conn.transport, Transport::Upgrading | Transport::Away)
            {
                if let Some(reason) = self.read(slot) {
                    self.close(slot, reason);
                    return;
                }
                // Reading may have queued lines or seen the end; go round.
                continue;
            }
            return;
        }
    }

    fn dispatch_lines(&mut self, slot: usize) {
        let Some(conn) = self.connections.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        let Some(session) = conn.session.take() else {
            return;
        };
        conn.phase = Phase::Working;
        let lines = std::mem::take(&mut conn.queued);
        let job = Job::Lines {
            conn: ConnId {
                slot,
                generation: conn.generation,
            },
            session,
            lines,
            out: std::mem::take(&mut conn.out),
        };
        self.submit(job);
    }

    fn dispatch_body(&mut self, slot: usize) {
        let Some(conn) = self.connections.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        let Some(session) = conn.session.take() else {
            return;
        };
        conn.phase = Phase::Working;
        let job = Job::Body {
            conn: ConnId {
                slot,
                generation: conn.generation,
            },
            session,
            out: std::mem::take(&mut conn.out),
        };
        self.submit(job);
    }

    fn submit(&mut self, job: Job) {
        if !self.backlog.is_empty() {
            self.backlog.push_back(job);
            return;
        }
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(job)) => self.backlog.push_back(job),
            Err(TrySendError::Disconnected(_)) => {
                log::error!("worker pool has stopped; dropping job");
            }
        }
    }

    fn flush_backlog(&mut self) {
        while let Some(job) = self.backlog.pop_front() {
            match self.jobs.try_send(job) {
                Ok(()) => {}
                Err(TrySendError::Full(job)) => {
                    self.backlog.push_front(job);
                    return;
                }
                Err(TrySendError::Disconnected(_)) => return,
            }
        }
    }

    fn drain_completions(&mut self) {
        self.notifier.rearm();
        while let Ok(done) = self.done.try_recv() {
            self.complete(done);
        }
        while let Ok(done) = self.handshakes_done.try_recv() {
            self.complete_handshake(done);
        }
        let reloaded = self
            .reloader
            .as_ref()
            .and_then(|r| r.results.1.try_recv().ok());
        if let Some(outcome) = reloaded {
            self.reload_done(outcome);
        }
    }

    /// A handshake step came back: send what it produced, read on.
    fn complete_handshake(&mut self, done: HandshakeDone) {
        let HandshakeDone {
            conn: id,
            mut tls,
            result,
        } = done;
        let Some(conn) = self
            .connections
            .get_mut(id.slot)
            .and_then(Option::as_mut)
            .filter(|c| c.generation == id.generation)
        else {
            // Closed meanwhile (timeout, shutdown): nothing to do.
            return;
        };
        if let Err(e) = result {
            log::info!("TLS handshake with {} failed: {e}", conn.peer);
            // The alert saying why; one try, the connection is going anyway.
            let _ = tls.write_tls(&mut conn.stream);
            self.close(id.slot, "TLS error");
            return;
        }
        if let Some(negotiated) = tls.newly_established() {
            log::debug!("TLS established with {}: {negotiated}", conn.peer);
        }
        conn.transport = Transport::Tls(tls);
        self.advance(id.slot);
    }

    fn complete(&mut self, done: Done) {
        let Done {
            conn: id,
            session,
            out,
            mut unhandled,
            directive,
        } = done;
        let Some(conn) = self
            .connections
            .get_mut(id.slot)
            .and_then(Option::as_mut)
            .filter(|c| c.generation == id.generation)
        else {
            // The connection closed while its session was away.
            self.abandon(session, "disconnected");
            return;
        };
        let now_authenticated = session.is_authenticated();
        if now_authenticated && !conn.authenticated {
            conn.authenticated = true;
            self.authenticated_open += 1;
        }
        // An AUTH exchange waiting for a response allows longer lines.
        conn.framer.set_max_line(session.line_limit());
        conn.session = Some(session);
        conn.out = out;
        conn.written = 0;
        // Lines the worker did not reach go back in front of newer ones.
        unhandled.append(&mut conn.queued);
        conn.queued = unhandled;
        let closing = conn.phase == Phase::Closing;
        conn.phase = match directive {
            _ if closing => Phase::Closing,
            Directive::Continue => Phase::Ready,
            Directive::MoreBody => Phase::Streaming,
            Directive::Close => Phase::Closing,
            Directive::StartTls if !matches!(conn.transport, Transport::Plain) => {
                // The session offers STLS only on plain connections.
                log::error!(
                    "STLS on a connection that is not plain; closing {}",
                    conn.peer
                );
                Phase::Closing
            }
            Directive::StartTls => {
                // CVE-2011-0411: nothing the client sent before the
                // handshake may be answered after it. Drop the lines queued
                // behind STLS (the worker's leftovers and whatever was read
                // since) and the framer's partial line; the socket is not
                // read again until TLS is on.
                conn.queued.clear();
                conn.framer = Framer::new(MAX_COMMAND_LINE);
                conn.transport = Transport::Upgrading;
                Phase::Ready
            }
            Directive::Delay(delay) => {
                let at = Instant::now() + delay;
                self.timers.push(Reverse((
                    at,
                    id.slot,
                    id.generation,
                    TimerKind::Delay as u8,
                )));
                Phase::Delayed(at)
            }
        };
        if closing {
            conn.out.clear();
        }
        self.advance(id.slot);
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((at, slot, generation, kind))) = self.timers.peek().copied() {
            if at > now {
                return;
            }
            self.timers.pop();
            let login_timeout = Duration::from_secs(self.settings.limits.login_timeout_secs);
            let idle_timeout = Duration::from_secs(self.settings.limits.idle_timeout_secs);
            let Some(conn) = self
                .connections
                .get_mut(slot)
                .and_then(Option::as_mut)
                .filter(|c| c.generation == generation)
            else {
                continue;
            };
            if kind == TimerKind::Delay as u8 {
                if conn.phase == Phase::Delayed(at) {
                    conn.phase = Phase::Ready;
                    self.advance(slot);
                }
                continue;
            }
            if kind == TimerKind::Handshake as u8 {
                if handshaking(conn) {
                    log::info!(
                        "TLS handshake with {} not finished after {} s; closing",
                        conn.peer,
                        self.settings.limits.tls_handshake_timeout_secs
                    );
                    self.close(slot, "TLS handshake timeout");
                }
                continue;
            }
            let limit = if conn.authenticated {
                idle_timeout
            } else {
                login_timeout
            };
            let deadline = conn.last_activity + limit;
            if deadline > now {
                self.timers
                    .push(Reverse((deadline, slot, generation, TimerKind::Idle as u8)));
                continue;
            }
            log::info!(
                "session={:08x} closing idle connection from {}",
                conn.id,
                conn.peer
            );
            send_best_effort(conn, canned::IDLE_TIMEOUT);
            self.close(slot, "idle timeout");
        }
    }

    /// Closes the socket now; the session, wherever it is, ends without
    /// UPDATE.
    fn close(&mut self, slot: usize, reason: &'static str) {
        let Some(mut conn) = self.connections.get_mut(slot).and_then(Option::take) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut conn.stream);
        self.free_slots.push(slot);
        self.open_connections -= 1;
        if conn.authenticated {
            self.authenticated_open -= 1;
        }
        log::info!(
            "session={:08x} disconnect reason={} remote={} local={} tls={} bytes_in={} bytes_out={} duration_ms={}",
            conn.id,
            reason.replace(' ', "_"),
            conn.peer.ip(),
            conn.local.map_or_else(|| "?".to_string(), |a| a.to_string()),
            if matches!(conn.transport, Transport::Plain) { "no" } else { "yes" },
            conn.bytes_in,
            conn.bytes_out,
            conn.opened.elapsed().as_millis()
        );
        if let Some(count) = self.per_ip.get_mut(&conn.peer.ip()) {
            *count -= 1;
            if *count == 0 {
                self.per_ip.remove(&conn.peer.ip());
            }
        }
        if let Some(session) = conn.session.take() {
            self.abandon(session, reason);
        }
    }

    /// Ends a session; one that holds a maildrop is released on a worker,
    /// since releasing may block.
    fn abandon(&mut self, session: Box<Session>, reason: &'static str) {
        if session.holds_maildrop() {
            self.submit(Job::Abandon { session, reason });
        }
    }
}

/// Says why a connection is refused before it is admitted. A client on an
/// implicit-TLS port expects a handshake, not a POP3 line, so it only sees
/// the close.
fn refuse(stream: &mut TcpStream, implicit_tls: bool, line: &[u8]) {
    if !implicit_tls {
        let _ = stream.write(line);
    }
}

/// Hands a handshaking connection's TLS state, with the records just read,
/// to a handshake thread; the connection reads again when it is back.
fn send_to_handshake_thread(
    handshakes: &Sender<HandshakeJob>,
    conn: &mut Connection,
    slot: usize,
) -> Option<&'static str> {
    let Transport::Tls(tls) = std::mem::replace(&mut conn.transport, Transport::Away) else {
        return None;
    };
    conn.read_paused = true;
    let id = ConnId {
        slot,
        generation: conn.generation,
    };
    match handshakes.try_send(HandshakeJob { conn: id, tls }) {
        Ok(()) => None,
        Err(_) => {
            log::error!("handshake threads unavailable; closing {}", conn.peer);
            Some("handshake threads unavailable")
        }
    }
}

/// Whether reply bytes or TLS records are still waiting for the socket.
fn has_pending_output(conn: &Connection) -> bool {
    conn.written < conn.out.len()
        || matches!(&conn.transport, Transport::Tls(tls) if tls.wants_write())
}

/// Whether a TLS handshake is still in progress on this connection.
fn handshaking(conn: &Connection) -> bool {
    match &conn.transport {
        Transport::Tls(tls) => tls.is_handshaking(),
        Transport::Away => true,
        Transport::Plain | Transport::Upgrading => false,
    }
}

/// Writes as much pending output as the socket takes. With TLS, reply
/// bytes move into rustls' bounded buffer (not before the handshake has
/// finished) and records move to the socket, until either stops.
fn write_pending(conn: &mut Connection) -> io::Result<()> {
    if matches!(conn.transport, Transport::Away) {
        // The TLS state is at a handshake thread; replies wait for it.
        return Ok(());
    }
    if let Transport::Tls(tls) = &mut conn.transport {
        loop {
            if conn.written < conn.out.len() {
                conn.written += tls.write_plaintext(&conn.out[conn.written..]);
            }
            if !tls.wants_write() {
                return Ok(());
            }
            match tls.write_tls(&mut conn.stream) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    conn.last_activity = Instant::now();
                    conn.bytes_out += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
    while conn.written < conn.out.len() {
        match conn.stream.write(&conn.out[conn.written..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                conn.written += n;
                conn.last_activity = Instant::now();
                conn.bytes_out += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Sends a line the loop says on its own (timeout, shutdown) just before
/// closing: one write attempt, through TLS when the connection has it.
fn send_best_effort(conn: &mut Connection, line: &[u8]) {
    match &mut conn.transport {
        Transport::Tls(tls) => {
            if !tls.is_handshaking() {
                tls.write_plaintext(line);
                tls.close_notify();
                let _ = tls.write_tls(&mut conn.stream);
            }
        }
        Transport::Plain | Transport::Upgrading => {
            let _ = conn.stream.write(line);
        }
        Transport::Away => {}
    }
}

/// Ends TLS politely before a normal close (after QUIT or the client's own
/// close). Clients do not depend on it, so one write attempt is enough.
fn send_close_notify(conn: &mut Connection) {
    if let Transport::Tls(tls) = &mut conn.transport {
        tls.close_notify();
        let _ = tls.write_tls(&mut conn.stream);
    }
}

/// Session ids start at a time-derived value so ids from different runs of
/// the server do not repeat in the same log.
fn session_id_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    (nanos ^ u64::from(std::process::id())) & 0xffff_ffff
}
