//! The client side: one mio event loop per thread driving many POP3
//! connections through a scripted session each.
//!
//! A thread owns a fixed number of slots. Each slot holds at most one
//! connection; when its session ends (well or badly) the slot starts the
//! next session on a fresh connection, until the run stops or the session
//! budget is spent. Every connection waits for one reply before sending the
//! next command, so a command's latency is exactly the server's turnaround.
//!
//! Tokens carry a per-slot generation in their high bits: an event for a
//! connection that has since been replaced is recognised and ignored.
//!
//! Every reply is checked (see `reply.rs` for framing, `on_reply` for
//! content: STAT against LIST, UIDL against STAT, RETR octets against
//! LIST). A problem that leaves the byte stream trustworthy is counted and
//! the session goes on; anything else drops the connection and counts the
//! session as failed.
//!
//! With TLS (`--tls`, or `--stls` after the greeting) a connection carries a
//! rustls state machine (`tls.rs`) between the socket and the reply reader:
//! the loop reads what the socket has into the thread's wire buffer, feeds
//! it through rustls record batch by record batch, and hands the decrypted
//! bytes to the same reply reader, so replies are checked exactly as on a
//! plain connection. Commands go the other way through rustls' writer.
//! Reading the socket in big chunks (rather than letting rustls read 4 KiB
//! at a time) keeps the system calls per RETR megabyte as low as in plain
//! mode.

use crate::reply::{Reply, ReplyReader};
use crate::stats::{Op, Stats};
use crate::tls::{Connector, TlsConn, TlsFailure};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use std::collections::{HashSet, VecDeque};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// What each session does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Log in, STAT, UIDL, LIST, RETR (all or the first k), optional DELE,
    /// QUIT: what a mail client does.
    Full,
    /// Connect, USER, PASS, QUIT: the cost of authentication and of opening
    /// a maildrop.
    Login,
    /// Log in, LIST, then RETR one message over and over: streaming
    /// throughput, meant for a big message.
    Retr,
    /// Log in and stay connected until the run ends: memory per connection.
    Idle,
    /// Log in, then NOOP over and over: the server's bare turnaround.
    Noop,
}

/// What happens to retrieved messages in full sessions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dele {
    /// Messages are left alone.
    Off,
    /// DELE every retrieved message, then RSET: exercises DELE without
    /// emptying the fixture.
    ThenRset,
    /// DELE every retrieved message and QUIT: the server really deletes.
    Commit,
}

/// Whether and how sessions use TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain POP3.
    None,
    /// TLS from the first byte (POP3S, port 995): the greeting comes over TLS.
    Implicit,
    /// Plain greeting, then STLS (RFC 2595) and the handshake; USER and
    /// everything after it go over TLS.
    Stls,
}

impl TlsMode {
    /// The name in reports.
    pub fn name(self) -> &'static str {
        match self {
            TlsMode::None => "none",
            TlsMode::Implicit => "implicit",
            TlsMode::Stls => "stls",
        }
    }
}

/// One user from the users file, with its commands preformatted.
pub struct Credentials {
    /// "USER name\r\n".
    pub user_command: Vec<u8>,
    /// "PASS secret\r\n".
    pub pass_command: Vec<u8>,
}

/// The run's settings, shared read-only by all threads.
pub struct Plan {
    /// What each session does.
    pub mode: Mode,
    /// Server address.
    pub addr: SocketAddr,
    /// Whether sessions start TLS, and when.
    pub tls_mode: TlsMode,
    /// Makes the TLS connections; Some exactly when `tls_mode` is not None.
    pub tls: Option<Connector>,
    /// Everyone who may log in.
    pub users: Vec<Credentials>,
    /// Full sessions retrieve only the first k messages when set.
    pub retr_limit: Option<usize>,
    /// What full sessions do after retrieving.
    pub dele: Dele,
    /// Message number retrieved in `Retr` mode.
    pub retr_message: usize,
    /// Longest wait for any reply (and for connect and close) before the
    /// session is failed as a timeout.
    pub timeout: Duration,
    /// Allow two connections to log in as the same user at once; off by
    /// default because servers that lock maildrops answer -ERR [IN-USE].
    pub share_users: bool,
    /// Idle mode: connections that may be logging in at once per thread,
    /// so ten thousand connects do not overflow the server's listen queue.
    pub login_burst: usize,
}

/// Counters the threads update for the progress line, plus the flags the
/// main thread uses to steer them.
pub struct Shared {
    /// Set when the run is over: threads finish what is in flight and end.
    pub stop: AtomicBool,
    /// Bumped when the warm-up ends: threads discard what they measured.
    pub epoch: AtomicU64,
    /// Sessions (full, login) or commands (retr, noop) still to start;
    /// i64::MAX when the run is bounded by time only.
    pub budget: AtomicI64,
    /// Sessions completed, for the progress line's rate.
    pub sessions: AtomicU64,
    /// Commands answered, for the progress line's rate.
    pub commands: AtomicU64,
    /// Bytes received, for the progress line's MB/s.
    pub rx_bytes: AtomicU64,
    /// Errors counted, so a failing run shows it while it runs.
    pub errors: AtomicU64,
    /// Connections open right now.
    pub open: AtomicI64,
    /// Idle mode: connections logged in and idle.
    pub idle_ready: AtomicU64,
    /// Idle mode: connections that failed to get there.
    pub idle_failed: AtomicU64,
}

impl Shared {
    pub fn new(budget: Option<u64>) -> Shared {
        Shared {
            stop: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
            budget: AtomicI64::new(
                budget.map_or(i64::MAX, |b| i64::try_from(b).unwrap_or(i64::MAX)),
            ),
            sessions: AtomicU64::new(0),
            commands: AtomicU64::new(0),
            rx_bytes: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            open: AtomicI64::new(0),
            idle_ready: AtomicU64::new(0),
            idle_failed: AtomicU64::new(0),
        }
    }

    fn take_budget(&self) -> bool {
        self.budget.fetch_sub(1, Relaxed) > 0
    }

    fn budget_left(&self) -> bool {
        self.budget.load(Relaxed) > 0
    }
}

/// Where a connection is in its session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// TCP handshake in progress.
    Connecting,
    /// TLS handshake in progress (right after connect, or after STLS).
    Handshaking,
    /// Waiting for the reply to `op` (the greeting counts as `Op::Connect`).
    Awaiting(Op),
    /// Logged in, holding the connection open (idle mode).
    Idle,
    /// QUIT answered; waiting for the server to close so the TIME_WAIT
    /// state lands on the server side and client ports stay reusable.
    Closing,
}

/// One live connection.
struct Conn {
    /// The socket.
    stream: TcpStream,
    /// TLS state once the session started TLS; boxed so plain connections
    /// (and 10 000 idle ones in plain mode) do not carry its size.
    tls: Option<Box<TlsConn>>,
    /// Index into `Plan::users`.
    user: usize,
    /// Session progress.
    step: Step,
    /// Reply framing and checks.
    reader: ReplyReader,
    /// Bytes of a command not yet accepted by the socket.
    out: Vec<u8>,
    /// How much of `out` was written.
    out_pos: usize,
    /// When the session began (connect), for the session latency.
    session_start: Instant,
    /// When the pending command was sent (or the TLS handshake began).
    command_start: Instant,
    /// When the pending reply (or connect, or close) times out; None while idle.
    deadline: Option<Instant>,
    /// STAT's count and size, checked against LIST.
    stat: (u64, u64),
    /// LIST sizes by message number - 1: RETR bodies must match them.
    sizes: Vec<u64>,
    /// The message the next RETR/DELE is for (1-based).
    next_message: usize,
    /// The message the pending RETR is for.
    retr_message: usize,
}

/// A slot: where one connection at a time lives.
enum Slot {
    /// Nothing to do (run over, budget spent, or idle-mode failure).
    Empty,
    /// Idle mode: not started yet, waiting for a login slot.
    Pending,
    /// Waiting before reconnecting after a connect failure, so a dead
    /// server does not make us spin.
    Backoff(Instant),
    Busy(Box<Conn>),
}

/// What to do after a reply.
enum Next {
    Send(Op),
    Idle,
    /// QUIT was answered.
    Closing,
    /// STLS was accepted: the TLS handshake starts.
    StartTls,
    /// Drop the connection and fail the session with this error kind.
    Abort(String),
}

const SLOT_BITS: u32 = 24;
const SLOT_MASK: usize = (1 << SLOT_BITS) - 1;
const READ_BUFFER: usize = 256 * 1024;
/// rustls holds at most 16 KiB of decrypted bytes, so this takes them all
/// in one call.
const PLAINTEXT_BUFFER: usize = 16 * 1024;

/// One thread's event loop and connections.
pub struct Worker<'a> {
    /// The run's settings.
    plan: &'a Plan,
    /// Progress counters and the main thread's flags.
    shared: &'a Shared,
    /// This thread's own readiness queue: threads share nothing but atomics.
    poll: Poll,
    /// This thread's connections; the slot index is the token's low bits.
    slots: Vec<Slot>,
    /// Generation per slot, for stale-event detection.
    generations: Vec<usize>,
    /// Users not logged in by any connection of this thread right now.
    free_users: VecDeque<usize>,
    /// This thread's users, for round-robin when users are shared.
    my_users: Vec<usize>,
    /// Next user in round-robin order (shared users).
    next_shared_user: usize,
    /// One read buffer for all connections: memory per connection stays
    /// small however many there are.
    buffer: Vec<u8>,
    /// Decrypted bytes on their way from rustls to the reply reader, shared
    /// for the same reason; empty when the run is plain.
    plaintext: Vec<u8>,
    /// What this thread measured, merged by the main thread at the end.
    stats: Stats,
    /// The warm-up epoch `stats` belongs to.
    epoch: u64,
    /// The stop flag was seen: start no new sessions, QUIT idle ones.
    stopping: bool,
}

fn write_command(out: &mut Vec<u8>, op: Op, conn_message: usize, plan: &Plan, user: usize) {
    match op {
        Op::User => out.extend_from_slice(&plan.users[user].user_command),
        Op::Pass => out.extend_from_slice(&plan.users[user].pass_command),
        Op::Stls => out.extend_from_slice(b"STLS\r\n"),
        Op::Stat => out.extend_from_slice(b"STAT\r\n"),
        Op::Uidl => out.extend_from_slice(b"UIDL\r\n"),
        Op::List => out.extend_from_slice(b"LIST\r\n"),
        Op::Retr => {
            let _ = write!(out, "RETR {conn_message}\r\n");
        }
        Op::Dele => {
            let _ = write!(out, "DELE {conn_message}\r\n");
        }
        Op::Rset => out.extend_from_slice(b"RSET\r\n"),
        Op::Noop => out.extend_from_slice(b"NOOP\r\n"),
        Op::Quit => out.extend_from_slice(b"QUIT\r\n"),
        Op::Connect | Op::Handshake | Op::Session => {}
    }
}

/// Parses "<a> <b>" at the start of a line (STAT's text, LIST and UIDL lines).
fn number_and_rest(line: &[u8]) -> Option<(u64, &[u8])> {
    let space = line.iter().position(|&b| b == b' ')?;
    let number = std::str::from_utf8(&line[..space]).ok()?.parse().ok()?;
    Some((number, &line[space + 1..]))
}

fn parse_u64(bytes: &[u8]) -> Option<u64> {
    let end = bytes
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(bytes.len());
    std::str::from_utf8(&bytes[..end]).ok()?.parse().ok()
}

impl<'a> Worker<'a> {
    pub fn new(
        plan: &'a Plan,
        shared: &'a Shared,
        connections: usize,
        users: Vec<usize>,
    ) -> io::Result<Worker<'a>> {
        Ok(Worker {
            plan,
            shared,
            poll: Poll::new()?,
            slots: (0..connections).map(|_| Slot::Empty).collect(),
            generations: vec![0; connections],
            free_users: users.iter().copied().collect(),
            my_users: users,
            next_shared_user: 0,
            buffer: vec![0; READ_BUFFER],
            plaintext: if plan.tls.is_some() {
                vec![0; PLAINTEXT_BUFFER]
            } else {
                Vec::new()
            },
            stats: Stats::new(),
            epoch: 0,
            stopping: false,
        })
    }

    /// Runs until every slot is empty; returns what was measured since the
    /// last warm-up reset.
    pub fn run(mut self) -> io::Result<Stats> {
        let now = Instant::now();
        let burst = if self.plan.mode == Mode::Idle {
            self.plan.login_burst.max(1)
        } else {
            usize::MAX
        };
        for slot in 0..self.slots.len() {
            if slot < burst {
                self.start_session(slot, now);
            } else {
                self.slots[slot] = Slot::Pending;
            }
        }
        let mut events = Events::with_capacity(1024);
        let mut last_scan = now;
        loop {
            let epoch = self.shared.epoch.load(Relaxed);
            if epoch != self.epoch {
                self.epoch = epoch;
                self.stats = Stats::new();
            }
            if !self.stopping && self.shared.stop.load(Relaxed) {
                self.stopping = true;
                self.begin_stop(Instant::now());
            }
            if self.slots.iter().all(|s| matches!(s, Slot::Empty)) {
                break;
            }
            match self.poll.poll(&mut events, Some(Duration::from_millis(50))) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            for event in events.iter() {
                let token = event.token().0;
                let slot = token & SLOT_MASK;
                if slot < self.slots.len() && self.generations[slot] == token >> SLOT_BITS {
                    self.on_ready(slot);
                }
            }
            let now = Instant::now();
            if now.duration_since(last_scan) >= Duration::from_millis(50) {
                last_scan = now;
                self.scan_timers(now);
            }
        }
        Ok(self.stats)
    }

    fn begin_stop(&mut self, now: Instant) {
        for slot in 0..self.slots.len() {
            let idle = match &self.slots[slot] {
                Slot::Pending | Slot::Backoff(_) => {
                    self.slots[slot] = Slot::Empty;
                    false
                }
                Slot::Busy(conn) => conn.step == Step::Idle,
                Slot::Empty => false,
            };
            if idle {
                self.send(slot, Op::Quit, now);
            }
        }
    }

    fn acquire_user(&mut self) -> Option<usize> {
        if self.plan.share_users {
            if self.my_users.is_empty() {
                return None;
            }
            let user = self.my_users[self.next_shared_user % self.my_users.len()];
            self.next_shared_user += 1;
            Some(user)
        } else {
            self.free_users.pop_front()
        }
    }

    fn release_user(&mut self, user: usize) {
        if !self.plan.share_users {
            self.free_users.push_back(user);
        }
    }

    /// Opens a connection for a new session in `slot`, if the run allows.
    fn start_session(&mut self, slot: usize, now: Instant) {
        self.slots[slot] = Slot::Empty;
        if self.stopping {
            return;
        }
        let allowed = match self.plan.mode {
            Mode::Full | Mode::Login => self.shared.take_budget(),
            Mode::Retr | Mode::Noop => self.shared.budget_left(),
            Mode::Idle => true,
        };
        if !allowed {
            return;
        }
        let Some(user) = self.acquire_user() else {
            // Cannot happen when main checked users >= connections; retry later.
            self.slots[slot] = Slot::Backoff(now + Duration::from_millis(10));
            return;
        };
        let mut stream = match TcpStream::connect(self.plan.addr) {
            Ok(stream) => stream,
            Err(_) => {
                self.release_user(user);
                self.count_error("connect".into());
                self.stats.sessions_failed += 1;
                self.slots[slot] = self.after_failure(now);
                return;
            }
        };
        self.generations[slot] = (self.generations[slot] + 1) & (usize::MAX >> SLOT_BITS);
        let token = Token((self.generations[slot] << SLOT_BITS) | slot);
        if let Err(_e) = self.poll.registry().register(
            &mut stream,
            token,
            Interest::READABLE | Interest::WRITABLE,
        ) {
            self.release_user(user);
            self.count_error("register".into());
            self.slots[slot] = self.after_failure(now);
            return;
        }
        self.shared.open.fetch_add(1, Relaxed);
        // Callers pass the time of the event that ended the last session;
        // the new session's clock starts now.
        let now = Instant::now();
        self.slots[slot] = Slot::Busy(Box::new(Conn {
            stream,
            tls: None,
            user,
            step: Step::Connecting,
            reader: ReplyReader::new(),
            out: Vec::new(),
            out_pos: 0,
            session_start: now,
            command_start: now,
            deadline: Some(now + self.plan.timeout),
            stat: (0, 0),
            sizes: Vec::new(),
            next_message: 1,
            retr_message: 0,
        }));
    }

    /// The slot state after a failed session: idle-mode connections are
    /// not retried (the point is to count how many the server holds).
    fn after_failure(&self, now: Instant) -> Slot {
        if self.plan.mode == Mode::Idle {
            self.shared.idle_failed.fetch_add(1, Relaxed);
            Slot::Empty
        } else {
            Slot::Backoff(now + Duration::from_millis(100))
        }
    }

    fn count_error(&mut self, kind: String) {
        self.shared.errors.fetch_add(1, Relaxed);
        self.stats.error(kind);
    }

    /// Closes the connection in `slot` and moves on: next session, or a
    /// pending idle-mode login.
    fn finish(&mut self, slot: usize, now: Instant, failed: Option<String>) {
        let Slot::Busy(mut conn) = std::mem::replace(&mut self.slots[slot], Slot::Empty) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut conn.stream);
        drop(conn.stream);
        self.shared.open.fetch_sub(1, Relaxed);
        self.release_user(conn.user);
        let reached_idle = conn.step == Step::Closing || conn.step == Step::Idle;
        if let Some(kind) = failed {
            self.count_error(kind);
            self.stats.sessions_failed += 1;
            if self.plan.mode == Mode::Idle {
                if !reached_idle {
                    self.shared.idle_failed.fetch_add(1, Relaxed);
                    self.start_pending(now);
                }
                return;
            }
            self.slots[slot] = Slot::Backoff(now);
            return;
        }
        if self.plan.mode != Mode::Idle {
            self.start_session(slot, now);
        }
    }

    /// Idle mode: starts the next not-yet-started connection.
    fn start_pending(&mut self, now: Instant) {
        if let Some(slot) = self.slots.iter().position(|s| matches!(s, Slot::Pending)) {
            self.start_session(slot, now);
        }
    }

    fn scan_timers(&mut self, now: Instant) {
        for slot in 0..self.slots.len() {
            match &self.slots[slot] {
                Slot::Backoff(when) if *when <= now => self.start_session(slot, now),
                Slot::Busy(conn) => {
                    if let Some(deadline) = conn.deadline {
                        if deadline <= now {
                            let kind = match conn.step {
                                Step::Connecting => "timeout_connect".to_string(),
                                Step::Handshaking => "timeout_tls_handshake".to_string(),
                                Step::Awaiting(op) => format!("timeout_{}", op.name()),
                                Step::Closing => "no_close_after_quit".to_string(),
                                Step::Idle => "timeout_idle".to_string(),
                            };
                            if conn.step == Step::Closing {
                                // The session itself succeeded.
                                self.count_error(kind);
                                self.finish(slot, now, None);
                            } else {
                                self.finish(slot, now, Some(kind));
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// Sends `op`'s command and arms the reader for its reply.
    fn send(&mut self, slot: usize, op: Op, now: Instant) {
        let Slot::Busy(conn) = &mut self.slots[slot] else {
            return;
        };
        let multi = matches!(op, Op::Uidl | Op::List | Op::Retr);
        conn.reader.expect(multi, matches!(op, Op::Uidl | Op::List));
        conn.step = Step::Awaiting(op);
        conn.command_start = now;
        conn.deadline = Some(now + self.plan.timeout);
        if op == Op::Retr {
            conn.retr_message = conn.next_message;
        }
        write_command(&mut conn.out, op, conn.next_message, self.plan, conn.user);
        if let Err(kind) = flush(conn) {
            self.finish(slot, now, Some(kind));
        }
    }

    fn on_ready(&mut self, slot: usize) {
        let now = Instant::now();
        let Slot::Busy(conn) = &mut self.slots[slot] else {
            return;
        };
        if conn.step == Step::Connecting {
            match conn.stream.take_error() {
                Ok(None) => {}
                Ok(Some(_)) | Err(_) => return self.finish(slot, now, Some("connect".into())),
            }
            match conn.stream.peer_addr() {
                Ok(_) => {
                    let _ = conn.stream.set_nodelay(true);
                    if self.plan.tls_mode == TlsMode::Implicit {
                        if let Err(kind) = begin_handshake(self.plan, conn, now) {
                            return self.finish(slot, now, Some(kind));
                        }
                    } else {
                        conn.step = Step::Awaiting(Op::Connect);
                        conn.reader.expect(false, false);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(_) => return self.finish(slot, now, Some("connect".into())),
            }
        }
        if let Err(kind) = flush(conn) {
            return self.finish(slot, now, Some(kind));
        }
        let mut wire = std::mem::take(&mut self.buffer);
        let mut plaintext = std::mem::take(&mut self.plaintext);
        self.read_all(slot, &mut wire, &mut plaintext, now);
        self.buffer = wire;
        self.plaintext = plaintext;
    }

    /// The connection in `slot` if it is still the one of `generation`: a
    /// reply can end a session and start the next one in the same slot,
    /// and bytes read for the old one must not reach the new one.
    fn live(&mut self, slot: usize, generation: usize) -> Option<&mut Conn> {
        if self.generations[slot] != generation {
            return None;
        }
        match &mut self.slots[slot] {
            Slot::Busy(conn) => Some(conn),
            _ => None,
        }
    }

    /// Reads until the socket would block, handing bytes (through rustls
    /// when the connection uses TLS) to the reply reader and acting on each
    /// complete reply.
    fn read_all(&mut self, slot: usize, wire: &mut [u8], plaintext: &mut [u8], mut now: Instant) {
        let generation = self.generations[slot];
        loop {
            let Some(conn) = self.live(slot, generation) else {
                return;
            };
            let n = match conn.stream.read(wire) {
                Ok(0) => return self.peer_closed(slot, now),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let kind = if e.kind() == io::ErrorKind::ConnectionReset {
                        "connection_reset".to_string()
                    } else {
                        "read_error".to_string()
                    };
                    return self.finish(slot, now, Some(kind));
                }
            };
            let encrypted = conn.tls.is_some();
            // Replies can arrive while this loop runs: time each read.
            now = Instant::now();
            self.stats.rx_bytes += n as u64;
            self.shared.rx_bytes.fetch_add(n as u64, Relaxed);
            let alive = if encrypted {
                self.take_tls(slot, generation, &wire[..n], plaintext, now)
            } else {
                self.take_plaintext(slot, generation, &wire[..n], now)
            };
            if !alive {
                return;
            }
        }
    }

    /// The server ended the stream (TCP EOF, or TLS close_notify): the
    /// end of a good session after QUIT, a failure anywhere else.
    fn peer_closed(&mut self, slot: usize, now: Instant) {
        let Slot::Busy(conn) = &self.slots[slot] else {
            return;
        };
        let kind = match conn.step {
            Step::Closing => return self.finish(slot, now, None),
            Step::Awaiting(op) => format!("closed_during_{}", op.name()),
            Step::Handshaking => "closed_during_tls_handshake".to_string(),
            Step::Connecting | Step::Idle => "closed_while_idle".to_string(),
        };
        self.finish(slot, now, Some(kind));
    }

    /// Hands reply bytes (as read, or as decrypted) to the reply reader,
    /// acting on each complete reply. False when the connection is gone.
    ///
    /// After STLS's +OK the reader expects nothing until the handshake is
    /// done, so plaintext the server sent after that +OK counts as
    /// unsolicited and drops the connection (RFC 2595 section 4: a client
    /// must not act on it, and it is the signature of STARTTLS injection).
    fn take_plaintext(
        &mut self,
        slot: usize,
        generation: usize,
        mut data: &[u8],
        now: Instant,
    ) -> bool {
        while !data.is_empty() {
            let Some(conn) = self.live(slot, generation) else {
                return false;
            };
            match conn.reader.feed(data) {
                Err(fatal) => {
                    self.finish(slot, now, Some(fatal.name().to_string()));
                    return false;
                }
                Ok((used, reply)) => {
                    data = &data[used..];
                    if let Some(reply) = reply {
                        self.on_reply(slot, reply, now);
                    }
                }
            }
        }
        self.live(slot, generation).is_some()
    }

    /// Feeds TLS bytes read from the socket through rustls and the
    /// decrypted bytes to the reply reader, then sends what rustls wants
    /// sent (handshake messages, alerts). False when the connection is
    /// gone.
    fn take_tls(
        &mut self,
        slot: usize,
        generation: usize,
        received: &[u8],
        plaintext: &mut [u8],
        now: Instant,
    ) -> bool {
        let mut wire = received;
        while !wire.is_empty() {
            let Some(conn) = self.live(slot, generation) else {
                return false;
            };
            let Some(tls) = conn.tls.as_deref_mut() else {
                return false;
            };
            if let Err(failure) = tls.read_tls(&mut wire) {
                // rustls queued an alert saying why; the server may log it.
                let _ = flush(conn);
                let step = conn.step;
                self.tls_failed(slot, step, &failure, received, now);
                return false;
            }
            if conn.step == Step::Handshaking && !tls.is_handshaking() {
                self.handshake_done(slot, now);
            }
            loop {
                let Some(conn) = self.live(slot, generation) else {
                    return false;
                };
                let Some(tls) = conn.tls.as_deref_mut() else {
                    return false;
                };
                match tls.read_plaintext(plaintext) {
                    Ok(0) => {
                        self.peer_closed(slot, now);
                        return false;
                    }
                    Ok(n) => {
                        if !self.take_plaintext(slot, generation, &plaintext[..n], now) {
                            return false;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        self.finish(slot, now, Some("tls_protocol".into()));
                        return false;
                    }
                }
            }
        }
        let Some(conn) = self.live(slot, generation) else {
            return false;
        };
        if let Err(kind) = flush(conn) {
            self.finish(slot, now, Some(kind));
            return false;
        }
        true
    }

    /// Counts a TLS failure under a kind that says whose problem it is,
    /// with rustls' words and a hint as the sample, and drops the
    /// connection.
    fn tls_failed(
        &mut self,
        slot: usize,
        step: Step,
        failure: &TlsFailure,
        received: &[u8],
        now: Instant,
    ) {
        let (kind, hint) = if failure.certificate {
            let ca_flag = if failure.message.contains("CaUsedAsEndEntity") {
                // What `openssl req -x509` makes unless told otherwise.
                " (the server's certificate says CA:TRUE, which rustls refuses for a server; \
                 make it with -addext basicConstraints=critical,CA:FALSE, or use --insecure)"
            } else {
                " (trust it with --ca FILE, name the certificate's host with --sni NAME, \
                 or accept any certificate with --insecure)"
            };
            ("tls_certificate", ca_flag.to_string())
        } else if step == Step::Handshaking {
            let plain_pop3 = received.starts_with(b"+OK") || received.starts_with(b"-ERR");
            let hint = if plain_pop3 {
                let line = received.split(|&b| b == b'\n').next().unwrap_or_default();
                format!(
                    ": the server answered in plain POP3 ({}) instead of TLS; \
                     is this a plain port? (there, use --stls or no TLS flag)",
                    String::from_utf8_lossy(line).trim_end()
                )
            } else {
                String::new()
            };
            ("tls_handshake", hint)
        } else {
            ("tls_protocol", String::new())
        };
        let text = format!("{}{hint}", failure.message);
        self.stats.sample(kind, text.as_bytes());
        self.finish(slot, now, Some(kind.to_string()));
    }

    /// The TLS handshake ended well: with implicit TLS the greeting comes
    /// next, after STLS the session goes on with USER (RFC 2595 lets the
    /// client skip a second CAPA).
    fn handshake_done(&mut self, slot: usize, now: Instant) {
        let Slot::Busy(conn) = &mut self.slots[slot] else {
            return;
        };
        self.stats
            .record(Op::Handshake, now.duration_since(conn.command_start));
        self.stats.tls_handshakes += 1;
        if let Some(tls) = &conn.tls {
            if tls.resumed() {
                self.stats.tls_resumed += 1;
            }
            if self.stats.tls_protocol.is_none() {
                self.stats.tls_protocol = tls.describe();
            }
        }
        if self.plan.tls_mode == TlsMode::Stls {
            return self.send(slot, Op::User, now);
        }
        conn.step = Step::Awaiting(Op::Connect);
        conn.reader.expect(false, false);
        // The connect latency runs from the TCP connect to the greeting.
        conn.command_start = conn.session_start;
        conn.deadline = Some(now + self.plan.timeout);
    }

    fn on_reply(&mut self, slot: usize, reply: Reply, now: Instant) {
        let Slot::Busy(conn) = &mut self.slots[slot] else {
            return;
        };
        let Step::Awaiting(op) = conn.step else {
            return;
        };
        self.stats
            .record(op, now.duration_since(conn.command_start));
        if op != Op::Connect {
            self.stats.commands += 1;
            self.shared.commands.fetch_add(1, Relaxed);
        }
        if !reply.ok {
            self.stats.sample(&err_reply_kind(op), &reply.text);
        }
        let mut errors: Vec<String> = Vec::new();
        if reply.bare_lf {
            errors.push("bare_lf".into());
        }
        if reply.unstuffed_dots > 0 {
            errors.push("dot_stuffing".into());
        }
        let next = next_step(self.plan, conn, op, &reply, &mut errors);
        if op == Op::Retr && reply.ok {
            self.stats.retr_octets += reply.body_octets;
        }
        let next = match next {
            // Budgeted commands in the repeat modes, and the stop flag.
            Next::Send(Op::Retr | Op::Noop)
                if matches!(self.plan.mode, Mode::Retr | Mode::Noop) =>
            {
                if !self.stopping && self.shared.take_budget() {
                    next
                } else {
                    Next::Send(Op::Quit)
                }
            }
            Next::Idle if self.stopping => Next::Send(Op::Quit),
            other => other,
        };
        for kind in errors {
            self.count_error(kind);
        }
        match next {
            Next::Send(op) => self.send(slot, op, now),
            Next::Idle => {
                if let Slot::Busy(conn) = &mut self.slots[slot] {
                    conn.step = Step::Idle;
                    conn.deadline = None;
                }
                self.shared.idle_ready.fetch_add(1, Relaxed);
                self.start_pending(now);
            }
            Next::Closing => {
                if let Slot::Busy(conn) = &mut self.slots[slot] {
                    self.stats
                        .record(Op::Session, now.duration_since(conn.session_start));
                    conn.step = Step::Closing;
                    conn.deadline = Some(now + self.plan.timeout);
                }
                self.stats.sessions_ok += 1;
                self.shared.sessions.fetch_add(1, Relaxed);
            }
            Next::StartTls => {
                if let Slot::Busy(conn) = &mut self.slots[slot] {
                    if let Err(kind) =
                        begin_handshake(self.plan, conn, now).and_then(|()| flush(conn))
                    {
                        self.finish(slot, now, Some(kind));
                    }
                }
            }
            Next::Abort(kind) => self.finish(slot, now, Some(kind)),
        }
    }
}

/// Starts TLS on `conn`: rustls queues the ClientHello and the next flush
/// sends it.
fn begin_handshake(plan: &Plan, conn: &mut Conn, now: Instant) -> Result<(), String> {
    let Some(connector) = &plan.tls else {
        return Err("internal".into());
    };
    let tls = connector.connect().map_err(|_| "tls_setup".to_string())?;
    conn.tls = Some(Box::new(tls));
    conn.step = Step::Handshaking;
    conn.command_start = now;
    conn.deadline = Some(now + plan.timeout);
    Ok(())
}

/// Writes what is pending; Err carries an error kind.
fn flush(conn: &mut Conn) -> Result<(), String> {
    if conn.tls.is_some() {
        return flush_tls(conn);
    }
    while conn.out_pos < conn.out.len() {
        match conn.stream.write(&conn.out[conn.out_pos..]) {
            Ok(0) => return Err("write_error".into()),
            Ok(n) => conn.out_pos += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(()),
            Err(_) => return Err("write_error".into()),
        }
    }
    conn.out.clear();
    conn.out_pos = 0;
    Ok(())
}

/// Moves pending command bytes into rustls and writes the records it
/// makes (and any handshake messages or alerts) until the socket would
/// block.
fn flush_tls(conn: &mut Conn) -> Result<(), String> {
    let Conn {
        stream,
        tls,
        out,
        out_pos,
        ..
    } = conn;
    let Some(tls) = tls.as_deref_mut() else {
        return Ok(());
    };
    loop {
        if *out_pos < out.len() {
            // Short writes happen only when rustls' output limit is full;
            // the socket write below makes room.
            *out_pos += tls
                .write_plaintext(&out[*out_pos..])
                .map_err(|_| "tls_write_error".to_string())?;
            if *out_pos == out.len() {
                out.clear();
                *out_pos = 0;
            }
        }
        if !tls.wants_write() {
            return Ok(());
        }
        match tls.write_tls(stream) {
            Ok(0) => return Err("write_error".into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(()),
            Err(_) => return Err("write_error".into()),
        }
    }
}

/// The error kind of a -ERR reply to `op`.
fn err_reply_kind(op: Op) -> String {
    let name = if op == Op::Connect {
        "greeting"
    } else {
        op.name()
    };
    format!("err_reply_{name}")
}

/// The session script: checks a reply and decides what comes next.
/// Non-fatal findings go into `errors`.
fn next_step(
    plan: &Plan,
    conn: &mut Conn,
    op: Op,
    reply: &Reply,
    errors: &mut Vec<String>,
) -> Next {
    if !reply.ok {
        match op {
            // The session cannot go on without these.
            Op::Connect
            | Op::Stls
            | Op::User
            | Op::Pass
            | Op::Stat
            | Op::Uidl
            | Op::List
            | Op::Quit => {
                return Next::Abort(err_reply_kind(op));
            }
            _ => errors.push(err_reply_kind(op)),
        }
    }
    match op {
        Op::Connect if plan.tls_mode == TlsMode::Stls => Next::Send(Op::Stls),
        Op::Connect => Next::Send(Op::User),
        Op::Stls => Next::StartTls,
        Op::User => Next::Send(Op::Pass),
        Op::Pass => match plan.mode {
            Mode::Login => Next::Send(Op::Quit),
            Mode::Full | Mode::Retr => Next::Send(Op::Stat),
            Mode::Noop => Next::Send(Op::Noop),
            Mode::Idle => Next::Idle,
        },
        Op::Stat => {
            let parsed = number_and_rest(&reply.text)
                .and_then(|(count, rest)| Some((count, parse_u64(rest)?)));
            let Some(stat) = parsed else {
                return Next::Abort("stat_syntax".into());
            };
            conn.stat = stat;
            Next::Send(if plan.mode == Mode::Full {
                Op::Uidl
            } else {
                Op::List
            })
        }
        Op::Uidl => {
            if !uidl_is_valid(&reply.lines, conn.stat.0) {
                errors.push("uidl_invalid".into());
            }
            Next::Send(Op::List)
        }
        Op::List => {
            conn.sizes.clear();
            let mut well_formed = true;
            for (i, line) in reply.lines.iter().enumerate() {
                match number_and_rest(line).and_then(|(n, rest)| Some((n, parse_u64(rest)?))) {
                    Some((n, size)) if n == i as u64 + 1 => conn.sizes.push(size),
                    _ => well_formed = false,
                }
            }
            if !well_formed {
                errors.push("list_syntax".into());
            }
            let total: u64 = conn.sizes.iter().sum();
            if conn.sizes.len() as u64 != conn.stat.0 || total != conn.stat.1 {
                errors.push("stat_list_mismatch".into());
            }
            conn.next_message = 1;
            match plan.mode {
                Mode::Retr => {
                    if plan.retr_message > conn.sizes.len() {
                        return Next::Abort("retr_message_missing".into());
                    }
                    conn.next_message = plan.retr_message;
                    Next::Send(Op::Retr)
                }
                _ => after_retrieval(plan, conn),
            }
        }
        Op::Retr => {
            if reply.ok {
                let expected = conn.sizes.get(conn.retr_message - 1).copied();
                if expected != Some(reply.body_octets) {
                    errors.push("retr_size_mismatch".into());
                }
                // "+OK 4180 octets": when a server states a size, it must
                // be the one it sends.
                if let Some((claimed, rest)) = number_and_rest(&reply.text) {
                    if rest.starts_with(b"octets") && claimed != reply.body_octets {
                        errors.push("retr_octets_claim_mismatch".into());
                    }
                }
            }
            if plan.mode == Mode::Retr {
                return Next::Send(Op::Retr);
            }
            conn.next_message += 1;
            after_retrieval(plan, conn)
        }
        Op::Dele => {
            conn.next_message += 1;
            if conn.next_message <= retrieval_count(plan, conn) {
                Next::Send(Op::Dele)
            } else if plan.dele == Dele::ThenRset {
                Next::Send(Op::Rset)
            } else {
                Next::Send(Op::Quit)
            }
        }
        Op::Rset => Next::Send(Op::Quit),
        Op::Noop => Next::Send(Op::Noop),
        Op::Quit => Next::Closing,
        Op::Handshake | Op::Session => Next::Abort("internal".into()),
    }
}

/// How many messages a full session retrieves.
fn retrieval_count(plan: &Plan, conn: &Conn) -> usize {
    plan.retr_limit
        .map_or(conn.sizes.len(), |k| k.min(conn.sizes.len()))
}

/// In a full session after LIST or a RETR: the next RETR, or the DELE
/// phase, or QUIT.
fn after_retrieval(plan: &Plan, conn: &mut Conn) -> Next {
    let count = retrieval_count(plan, conn);
    if conn.next_message <= count {
        return Next::Send(Op::Retr);
    }
    if plan.dele != Dele::Off && count > 0 {
        conn.next_message = 1;
        return Next::Send(Op::Dele);
    }
    Next::Send(Op::Quit)
}

/// RFC 1939: one line per message in order, unique ids of 1 to 70
/// characters in 0x21..=0x7E.
fn uidl_is_valid(lines: &[Vec<u8>], expected_count: u64) -> bool {
    if lines.len() as u64 != expected_count {
        return false;
    }
    let mut seen = HashSet::with_capacity(lines.len());
    lines
        .iter()
        .enumerate()
        .all(|(i, line)| match number_and_rest(line) {
            Some((n, uid)) => {
                n == i as u64 + 1
                    && (1..=70).contains(&uid.len())
                    && uid.iter().all(|b| (0x21..=0x7E).contains(b))
                    && seen.insert(uid)
            }
            None => false,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uidl_rules() {
        let lines = |v: &[&str]| v.iter().map(|s| s.as_bytes().to_vec()).collect::<Vec<_>>();
        assert!(uidl_is_valid(&lines(&["1 abc", "2 abd"]), 2));
        assert!(!uidl_is_valid(&lines(&["1 abc", "2 abc"]), 2), "duplicate");
        assert!(!uidl_is_valid(&lines(&["1 abc", "3 abd"]), 2), "numbering");
        assert!(!uidl_is_valid(&lines(&["1 abc"]), 2), "count");
        assert!(!uidl_is_valid(&lines(&["1 a\u{7f}c"]), 1), "character");
        assert!(
            !uidl_is_valid(&lines(&[&format!("1 {}", "x".repeat(71))]), 1),
            "length"
        );
    }

    #[test]
    fn numbers() {
        assert_eq!(number_and_rest(b"3 4180"), Some((3, &b"4180"[..])));
        assert_eq!(parse_u64(b"4180 octets"), Some(4180));
        assert_eq!(number_and_rest(b"x 1"), None);
    }
}
