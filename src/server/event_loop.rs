//! The single event-loop thread: accept, read, frame, write, time.
//!
//! It never blocks and never touches storage or passwords. Each connection
//! is a small state machine: its session is either here (idle, streaming,
//! or holding a delayed reply) or away at a worker. Interest in socket
//! events is registered once (readable and writable, edge-triggered), and
//! what to do next is derived from the connection's state after every
//! event: write what is pending, hand queued lines or a body request to a
//! worker when the output has drained, resume reading when there is room.

use super::framer::{Framer, LineBatch};
use super::worker::{ConnId, Done, Job, Notifier};
use crate::config::{Limits, PlaintextAuth};
use crate::protocol::session::{canned, Peer};
use crate::protocol::{Directive, Session, SessionEnv};
use crossbeam_channel::{Receiver, Sender, TrySendError};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Token of the waker that workers poke.
pub const WAKER: Token = Token(0);
/// Token of the signal source.
pub const SIGNALS: Token = Token(1);
/// Listener tokens start here.
const FIRST_LISTENER: usize = 2;
/// Connection tokens start here (slot index + this).
const FIRST_CONNECTION: usize = 1 << 20;

/// Longest command line, CRLF included (RFC 2449 section 4).
const MAX_COMMAND_LINE: usize = 255;
/// One read from a socket into the loop's shared buffer.
const READ_BUFFER: usize = 64 * 1024;
/// An output buffer larger than this is freed rather than kept for reuse
/// once drained, so idle connections stay small.
const KEEP_OUTPUT_CAPACITY: usize = 1024;

/// Settings the loop applies to every connection.
pub struct LoopSettings {
    pub limits: Limits,
    pub plaintext_auth: PlaintextAuth,
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
}

enum TimerKind {
    /// Check the connection's idle deadline.
    Idle,
    /// A delayed reply may go out.
    Delay,
}

/// Deadline, slot, generation, kind.
type Timer = (Instant, usize, u64, u8);

pub struct EventLoop {
    poll: Poll,
    listeners: Vec<TcpListener>,
    connections: Vec<Option<Connection>>,
    free_slots: Vec<usize>,
    next_generation: u64,
    per_ip: HashMap<IpAddr, usize>,
    open_connections: usize,
    timers: BinaryHeap<Reverse<Timer>>,
    jobs: Sender<Job>,
    /// Jobs the bounded channel could not take yet; sent before anything
    /// new so order per connection is kept.
    backlog: VecDeque<Job>,
    done: Receiver<Done>,
    notifier: Arc<Notifier>,
    env: Arc<SessionEnv>,
    settings: LoopSettings,
    read_buffer: Vec<u8>,
    next_session_id: u64,
}

/// What ended [`EventLoop::run`].
pub enum Stop {
    Signal(i32),
}

impl EventLoop {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        poll: Poll,
        listeners: Vec<TcpListener>,
        jobs: Sender<Job>,
        done: Receiver<Done>,
        notifier: Arc<Notifier>,
        env: Arc<SessionEnv>,
        settings: LoopSettings,
    ) -> io::Result<Self> {
        let mut listeners = listeners;
        for (i, listener) in listeners.iter_mut().enumerate() {
            poll.registry()
                .register(listener, Token(FIRST_LISTENER + i), Interest::READABLE)?;
        }
        Ok(EventLoop {
            poll,
            listeners,
            connections: Vec::new(),
            free_slots: Vec::new(),
            next_generation: 1,
            per_ip: HashMap::new(),
            open_connections: 0,
            timers: BinaryHeap::new(),
            jobs,
            backlog: VecDeque::new(),
            done,
            notifier,
            env,
            settings,
            read_buffer: vec![0; READ_BUFFER],
            next_session_id: session_id_seed(),
        })
    }

    /// Runs until `on_signal` returns `Some`.
    pub fn run(&mut self, on_signal: &mut dyn FnMut() -> Option<i32>) -> io::Result<Stop> {
        let mut events = Events::with_capacity(1024);
        loop {
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
                        if let Some(signal) = on_signal() {
                            return Ok(Stop::Signal(signal));
                        }
                    }
                    Token(t) if t >= FIRST_CONNECTION => {
                        let slot = t - FIRST_CONNECTION;
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.read(slot);
                        }
                        self.advance(slot);
                    }
                    Token(t) => self.accept(t - FIRST_LISTENER),
                }
            }
            self.drain_completions();
            self.fire_timers();
            self.flush_backlog();
        }
    }

    /// Ends every connection without UPDATE and hands open maildrops to the
    /// workers for release.
    pub fn shutdown(mut self) -> Vec<Job> {
        for slot in 0..self.connections.len() {
            if let Some(conn) = self.connections[slot].as_mut() {
                // Best effort: a client that is not reading simply misses it.
                let _ = conn.stream.write(canned::SHUTTING_DOWN);
            }
            self.close(slot, "shutdown");
        }
        self.backlog.into_iter().collect()
    }

    fn next_timer_in(&self) -> Option<Duration> {
        self.timers
            .peek()
            .map(|Reverse((at, ..))| at.saturating_duration_since(Instant::now()))
    }

    fn accept(&mut self, listener: usize) {
        loop {
            let Some(l) = self.listeners.get(listener) else {
                return;
            };
            let (stream, peer) = match l.accept() {
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
            self.admit(stream, peer);
        }
    }

    fn admit(&mut self, mut stream: TcpStream, peer: SocketAddr) {
        let limits = &self.settings.limits;
        if self.open_connections >= limits.max_connections {
            log::warn!(
                "refused {peer}: max_connections ({}) reached",
                limits.max_connections
            );
            let _ = stream.write(canned::TOO_MANY_CONNECTIONS);
            return;
        }
        let from_ip = self.per_ip.get(&peer.ip()).copied().unwrap_or(0);
        if from_ip >= limits.max_per_ip {
            log::warn!("refused {peer}: max_per_ip ({}) reached", limits.max_per_ip);
            let _ = stream.write(canned::TOO_MANY_FROM_IP);
            return;
        }
        // Replies are written whole; Nagle would only delay the last
        // segment of each one waiting for an ACK.
        if let Err(e) = stream.set_nodelay(true) {
            log::debug!("set_nodelay for {peer}: {e}");
        }
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
        let plaintext_auth_allowed = match self.settings.plaintext_auth {
            PlaintextAuth::Always => true,
            PlaintextAuth::LoopbackOnly => peer.ip().is_loopback(),
            PlaintextAuth::Never => false,
        };
        let id = self.next_session_id;
        self.next_session_id = self.next_session_id.wrapping_add(1);
        let session = Session::new(
            Arc::clone(&self.env),
            Peer {
                addr: peer,
                plaintext_auth_allowed,
            },
            id,
        );
        log::debug!("session={id:08x} connect remote={peer}");
        let mut out = Vec::new();
        session.greeting(&mut out);
        let generation = self.next_generation;
        self.next_generation += 1;
        let now = Instant::now();
        self.connections[slot] = Some(Connection {
            generation,
            stream,
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
        });
        *self.per_ip.entry(peer.ip()).or_insert(0) += 1;
        self.open_connections += 1;
        let deadline = now + Duration::from_secs(self.settings.limits.login_timeout_secs);
        self.timers
            .push(Reverse((deadline, slot, generation, TimerKind::Idle as u8)));
        self.advance(slot);
    }

    /// Reads until the socket would block or the queue is full.
    fn read(&mut self, slot: usize) {
        let max_lines = self.settings.limits.max_pipelined_lines;
        let Some(conn) = self.connections.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        if conn.peer_closed || conn.phase == Phase::Closing {
            return;
        }
        loop {
            if conn.queued.len() >= max_lines {
                conn.read_paused = true;
                return;
            }
            match conn.stream.read(&mut self.read_buffer) {
                Ok(0) => {
                    conn.peer_closed = true;
                    return;
                }
                Ok(n) => {
                    conn.last_activity = Instant::now();
                    conn.framer.feed(&self.read_buffer[..n], &mut conn.queued);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    conn.read_paused = false;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
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
                    return;
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
            if !matches!(conn.phase, Phase::Delayed(_)) && conn.written < conn.out.len() {
                match write_pending(conn) {
                    Ok(()) => {}
                    Err(e) => {
                        log::debug!("write to {}: {e}", conn.peer);
                        self.close(slot, "write error");
                        return;
                    }
                }
            }
            let drained = conn.written >= conn.out.len();
            if drained && !conn.out.is_empty() {
                conn.out.clear();
                conn.written = 0;
                if conn.out.capacity() > KEEP_OUTPUT_CAPACITY {
                    conn.out = Vec::new();
                }
            }
            match conn.phase {
                Phase::Closing if drained => {
                    self.close(slot, "closed");
                    return;
                }
                Phase::Streaming if drained => {
                    self.dispatch_body(slot);
                    return;
                }
                Phase::Ready if drained && !conn.queued.is_empty() => {
                    self.dispatch_lines(slot);
                    return;
                }
                Phase::Ready if drained && conn.peer_closed => {
                    self.close(slot, "disconnected");
                    return;
                }
                _ => {}
            }
            if conn.read_paused && conn.queued.len() < max_lines {
                self.read(slot);
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
        }
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
            log::info!("closing idle connection from {}", conn.peer);
            let _ = conn.stream.write(canned::IDLE_TIMEOUT);
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

/// Writes as much pending output as the socket takes.
fn write_pending(conn: &mut Connection) -> io::Result<()> {
    while conn.written < conn.out.len() {
        match conn.stream.write(&conn.out[conn.written..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                conn.written += n;
                conn.last_activity = Instant::now();
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
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
