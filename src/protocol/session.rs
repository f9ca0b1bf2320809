//! The POP3 session state machine (RFC 1939 section 3, RFC 2449).
//!
//! A [`Session`] takes one command line at a time and appends its reply to an
//! output buffer the caller owns; it returns a [`Directive`] saying what the
//! connection must do next. It performs no socket I/O: the server moves the
//! session into a worker thread for each batch of lines (backend calls may
//! block there) and back to its connection afterwards.
//!
//! States are enum variants holding only their own data. The TRANSACTION
//! state owns the open maildrop; UPDATE is the single call to
//! [`Maildrop::commit`] made by QUIT, so a session that ends any other way
//! (dropped connection, timeout, shutdown) deletes nothing: dropping the
//! maildrop releases it untouched.
//!
//! Multi-line replies (RETR, TOP, LIST, UIDL) are produced in bounded pieces:
//! the first piece goes out with the status line, and while more remains the
//! session answers [`Directive::MoreBody`]; the server calls
//! [`Session::continue_body`] once the client has drained what was sent.
//!
//! Logging in (USER/PASS, APOP, and AUTH with its SASL exchanges) lives in
//! `session/login.rs`.

use crate::backend::{Authenticator, BackendError, Maildrop, MessageReader, Store, UserInfo};
use crate::protocol::command::{self, Command};
use crate::protocol::encoder::{BodyEncoder, Progress};
use crate::protocol::guard::{Defences, Refusal};
use crate::protocol::sasl::SaslConfig;
use std::cell::RefCell;
use std::fmt;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod login;

/// Longest command line, CRLF included (RFC 2449 section 4).
pub const COMMAND_LINE_LIMIT: usize = 255;

/// Longest line while an AUTH exchange waits for the client's response,
/// CRLF included: SASL responses may exceed command lines (RFC 5034
/// section 4).
pub const SASL_LINE_LIMIT: usize = crate::protocol::sasl::MAX_RESPONSE_LEN + 2;

/// How much reply a single call aims to produce before handing control back,
/// so one client's large message cannot make a worker build an unbounded
/// buffer. The server writes this out before asking for more.
///
/// Each piece costs a round trip between the loop and a worker (two context
/// switches when they share a core). Measured on a 20 MiB RETR pinned to one
/// core: 128 KiB pieces gave 1.25-1.32 GB/s, 256 KiB 1.42-1.45, 512 KiB
/// 1.73-1.90, 1 MiB 1.52-1.61 (no longer fits the CPU caches). The cost is
/// that much memory per connection while it streams, returned when the
/// reply is done.
pub const BODY_PIECE_TARGET: usize = 512 * 1024;

/// Size of one read from a message reader (DESIGN.md: 64 KiB pulls).
const READ_CHUNK: usize = 64 * 1024;

/// Fixed replies the server sends on its own, outside any command (it knows
/// no POP3 beyond these lines).
pub mod canned {
    /// Sent and then closed when a connection would exceed a limit.
    pub const TOO_MANY_CONNECTIONS: &[u8] =
        b"-ERR [SYS/TEMP] Too many connections, try again later\r\n";
    /// Sent and then closed when an IP exceeds its connection share.
    pub const TOO_MANY_FROM_IP: &[u8] =
        b"-ERR [SYS/TEMP] Too many connections from your address, try again later\r\n";
    /// Sent before closing an idle connection (RFC 1939 autologout timer).
    pub const IDLE_TIMEOUT: &[u8] = b"-ERR Disconnected for inactivity\r\n";
    /// Sent to every open connection when the server stops.
    pub const SHUTTING_DOWN: &[u8] =
        b"-ERR [SYS/TEMP] Server shutting down, nothing was deleted\r\n";
    /// The reply that ends a connection over `max_bad_commands`.
    pub const TOO_MANY_BAD_COMMANDS: &str = "Too many bad commands, closing";
}

/// What a session needs from the server that created it, shared by all
/// sessions.
pub struct SessionEnv {
    /// Checks USER/PASS credentials.
    pub auth: Arc<dyn Authenticator>,
    /// Opens maildrops after a successful login.
    pub store: Arc<dyn Store>,
    /// How long the server holds back the answer to a failed login. Applied
    /// identically for unknown users and wrong passwords.
    pub auth_failure_delay: Duration,
    /// The IMPLEMENTATION capability (RFC 2449 6.9): name and version, so
    /// an operator debugging a client knows what answered.
    pub implementation: &'static str,
    /// What the SASL mechanisms need server-wide (the key for SCRAM salts,
    /// the host name in challenges and APOP timestamps).
    pub sasl: SaslConfig,
    /// Whether to offer APOP (a timestamp in the greeting) when the auth
    /// backend can reveal secrets. Off in the server: APOP protects little
    /// (docs/security.md) and changes the greeting every client sees.
    pub apop: bool,
    /// Growing delays, failure caps and the bad-command limit (see
    /// `guard.rs`); the default is none of them.
    pub defences: Defences,
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
    /// Send the reply (the `+OK` to STLS) in plaintext, then start TLS.
    /// Every byte the client sent before the handshake must be discarded:
    /// lines queued behind STLS would otherwise be answered as if they had
    /// come over TLS (CVE-2011-0411).
    StartTls,
}

/// Per-connection facts the session needs that only the server knows.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    /// The client's address, for the log.
    pub addr: SocketAddr,
    /// The server address the client reached (which listener, on a host
    /// with several), for the login line; `None` when the socket cannot
    /// say (inetd on a pipe).
    pub local: Option<SocketAddr>,
    /// Whether plaintext passwords (USER/PASS) are acceptable on this
    /// connection under the configured policy. Always true once TLS is on.
    pub plaintext_auth_allowed: bool,
    /// Whether the connection is encrypted (implicit TLS, or after STLS);
    /// shown in the login log line.
    pub tls: bool,
    /// Whether STLS may be offered: a certificate is configured and TLS is
    /// not on yet.
    pub stls_available: bool,
}

/// One client's POP3 session.
pub struct Session {
    /// Backends and settings shared by all sessions.
    env: Arc<SessionEnv>,
    /// Short id printed on every log line of this session.
    id: u64,
    /// Who is connected and what they may do.
    peer: Peer,
    /// The RFC 1939 state with the data only that state needs.
    state: State,
    /// Bad commands seen before login, against `max_bad_commands`.
    bad_commands: u32,
}

enum State {
    Authorization(Authorization),
    Transaction(Box<Transaction>),
    /// After QUIT (UPDATE done) or a fatal error; the connection is closing.
    Finished,
}

#[derive(Default)]
struct Authorization {
    /// Name given by USER, waiting for PASS.
    user: Option<String>,
    /// The timestamp announced in the greeting, which APOP digests cover;
    /// `None` when APOP is not offered (the backend cannot reveal secrets).
    apop_timestamp: Option<String>,
    /// An AUTH exchange waiting for the client's next response line.
    sasl: Option<login::SaslInProgress>,
}

struct Transaction {
    /// Canonical name from the auth backend, for the log.
    user: String,
    /// The open, exclusively held maildrop.
    maildrop: Box<dyn Maildrop>,
    /// Marked for deletion by DELE, indexed by message number - 1.
    deleted: Vec<bool>,
    /// Number of `true` entries in `deleted`, kept so STAT is O(1).
    deleted_count: usize,
    /// Total wire size of messages marked deleted.
    deleted_octets: u64,
    /// Total wire size of the whole snapshot.
    total_octets: u64,
    /// A multi-line reply still being produced.
    body: Option<Body>,
    /// Counters for the logout line.
    stats: Stats,
}

#[derive(Default, Debug)]
struct Stats {
    retr: u64,
    retr_octets: u64,
    top: u64,
    dele: u64,
}

/// A multi-line reply in progress.
enum Body {
    /// RETR or TOP: a message streamed through the wire encoder.
    Message {
        reader: Box<dyn MessageReader>,
        encoder: BodyEncoder,
        /// Message number, for log lines about failures mid-stream.
        number: usize,
    },
    /// LIST or UIDL without argument: one line per undeleted message.
    Listing { kind: ListingKind, next: usize },
}

#[derive(Clone, Copy)]
enum ListingKind {
    Sizes,
    Uids,
}

thread_local! {
    /// One read buffer per worker thread rather than per connection, so an
    /// idle connection holds no body buffer at all.
    static READ_BUF: RefCell<Vec<u8>> = RefCell::new(vec![0; READ_CHUNK]);
}

/// Formats a session id the way every log line shows it.
#[derive(Clone, Copy)]
struct Sid(u64);

impl fmt::Display for Sid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

fn ok(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(b"+OK");
    if !text.is_empty() {
        out.push(b' ');
        out.extend_from_slice(text.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

fn err(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(b"-ERR ");
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn err_backend(out: &mut Vec<u8>, e: &BackendError, text: &str) {
    out.extend_from_slice(b"-ERR ");
    out.extend_from_slice(e.response_code().as_bytes());
    out.push(b' ');
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(b"\r\n");
}

impl Session {
    /// A new session in the AUTHORIZATION state. Pure: no I/O happens until
    /// the first command.
    pub fn new(env: Arc<SessionEnv>, peer: Peer, id: u64) -> Self {
        let apop_timestamp = (env.apop && env.auth.supports_secrets())
            .then(|| crate::protocol::sasl::apop_timestamp(env.sasl.hostname()));
        Session {
            env,
            id,
            peer,
            state: State::Authorization(Authorization {
                apop_timestamp,
                ..Authorization::default()
            }),
            bad_commands: 0,
        }
    }

    /// The greeting the server sends on connect, with the APOP timestamp
    /// when APOP is offered (RFC 1939 section 7).
    pub fn greeting(&self, out: &mut Vec<u8>) {
        match &self.state {
            State::Authorization(Authorization {
                apop_timestamp: Some(timestamp),
                ..
            }) => ok(out, &format!("POP3 server ready {timestamp}")),
            _ => ok(out, "POP3 server ready"),
        }
    }

    /// The longest line the server should accept next, CRLF included: a
    /// SASL response may be longer than a command. The server applies it
    /// to lines it has not started framing yet.
    pub fn line_limit(&self) -> usize {
        match &self.state {
            State::Authorization(Authorization { sasl: Some(_), .. }) => SASL_LINE_LIMIT,
            _ => COMMAND_LINE_LIMIT,
        }
    }

    /// Whether the client has logged in (the server picks the idle timeout
    /// from this).
    pub fn is_authenticated(&self) -> bool {
        matches!(self.state, State::Transaction(_))
    }

    /// Whether handling `line` may take long: a password check (hashes
    /// are slow on purpose), opening a maildrop, or an UPDATE that deletes
    /// files (one that deletes nothing only releases the lock). A worker sends out the replies it has ready before it starts
    /// such a line, so they do not wait behind it.
    pub fn may_block_on(&self, line: &[u8]) -> bool {
        let keyword = line.get(..4).unwrap_or(line);
        match &self.state {
            State::Authorization(authorization) => {
                authorization.sasl.is_some()
                    || [&b"PASS"[..], b"APOP", b"AUTH"]
                        .iter()
                        .any(|slow| keyword.eq_ignore_ascii_case(slow))
            }
            State::Transaction(transaction) => {
                transaction.deleted_count > 0 && keyword.eq_ignore_ascii_case(b"QUIT")
            }
            State::Finished => false,
        }
    }

    /// Handles one command line (CRLF removed), appending the reply.
    pub fn handle_line(&mut self, line: &[u8], out: &mut Vec<u8>) -> Directive {
        // During an AUTH exchange the line is the client's SASL response,
        // not a command.
        if let State::Authorization(Authorization { sasl, .. }) = &mut self.state {
            if let Some(in_progress) = sasl.take() {
                return self.sasl_response(in_progress, line, out);
            }
        }
        let command = match command::parse(line) {
            Ok(command) => command,
            Err(e) => return self.bad_command(&e.to_string(), out),
        };
        match &mut self.state {
            State::Authorization(_) => self.authorization(command, out),
            State::Transaction(_) => self.transaction(command, out),
            State::Finished => {
                err(out, "Session has ended");
                Directive::Close
            }
        }
    }

    /// Answers a line that exceeded the length limit; the server has already
    /// discarded it.
    pub fn line_too_long(&mut self, out: &mut Vec<u8>) -> Directive {
        if let State::Authorization(Authorization { sasl, .. }) = &mut self.state {
            if let Some(in_progress) = sasl.take() {
                return self.sasl_response_too_long(in_progress, out);
            }
        }
        self.bad_command("Line too long", out)
    }

    /// Ends the session without UPDATE (disconnect, timeout, shutdown):
    /// releases the maildrop, deletes nothing, writes the logout line.
    /// May block on the backend, so the server calls it on a worker.
    pub fn abandon(mut self, reason: &str) {
        if let State::Transaction(t) = std::mem::replace(&mut self.state, State::Finished) {
            log::info!(
                "session={} logout user={} reason={} retr={} retr_octets={} top={} dele={} deleted=0 (no QUIT, nothing deleted)",
                Sid(self.id),
                t.user,
                reason,
                t.stats.retr,
                t.stats.retr_octets,
                t.stats.top,
                t.stats.dele,
            );
            // Dropping the maildrop releases it without deleting.
            drop(t);
        }
    }

    /// Whether dropping this session would touch a backend (an open
    /// maildrop), so the server must hand it to a worker to drop.
    pub fn holds_maildrop(&self) -> bool {
        matches!(self.state, State::Transaction(_))
    }

    fn authorization(&mut self, command: Command<'_>, out: &mut Vec<u8>) -> Directive {
        let State::Authorization(auth) = &mut self.state else {
            return Directive::Continue;
        };
        match command {
            Command::Capa => {
                self.capabilities(out);
                Directive::Continue
            }
            Command::Quit => {
                ok(out, "Bye");
                self.state = State::Finished;
                Directive::Close
            }
            Command::User(name) => {
                if !self.peer.plaintext_auth_allowed {
                    err(out, self.plaintext_refusal());
                    return Directive::Continue;
                }
                auth.user = Some(name.to_owned());
                // Same answer for every name: whether a user exists is not
                // revealed before the password is checked.
                ok(out, "Send your password");
                Directive::Continue
            }
            Command::Pass(password) => {
                let Some(user) = auth.user.take() else {
                    err(out, "Send USER first");
                    return Directive::Continue;
                };
                self.login(&user, password, "USER", out)
            }
            Command::Apop { user, digest } => {
                auth.user = None;
                self.apop(user, digest, out)
            }
            Command::Auth {
                mechanism: None, ..
            } => {
                self.list_mechanisms(out);
                Directive::Continue
            }
            Command::Auth {
                mechanism: Some(mechanism),
                initial_response,
            } => {
                auth.user = None;
                self.start_auth(mechanism, initial_response, out)
            }
            Command::Stls if self.peer.tls => {
                err(out, "Command not permitted when TLS active");
                Directive::Continue
            }
            Command::Stls if !self.peer.stls_available => {
                err(out, "TLS is not configured on this server");
                Directive::Continue
            }
            Command::Stls => {
                ok(out, "Begin TLS negotiation");
                // Whatever follows arrives over TLS or not at all (a failed
                // handshake closes the connection), so the session can count
                // itself encrypted now. A USER given before STLS is forgotten
                // (RFC 2595 section 4: nothing learnt before TLS carries
                // over). The greeting's APOP timestamp stays: it is the only
                // one the client has.
                *auth = Authorization {
                    apop_timestamp: auth.apop_timestamp.take(),
                    ..Authorization::default()
                };
                self.peer.tls = true;
                self.peer.stls_available = false;
                self.peer.plaintext_auth_allowed = true;
                Directive::StartTls
            }
            Command::Stat
            | Command::List(_)
            | Command::Retr(_)
            | Command::Dele(_)
            | Command::Noop
            | Command::Rset
            | Command::Top { .. }
            | Command::Uidl(_) => {
                err(out, "Not logged in; use USER and PASS first");
                Directive::Continue
            }
        }
    }

    /// Checks a password (USER/PASS, AUTH PLAIN or LOGIN) and logs in.
    fn login(&mut self, user: &str, password: &[u8], method: &str, out: &mut Vec<u8>) -> Directive {
        let sid = Sid(self.id);
        let info: UserInfo = match self.check_credentials(user, password, method) {
            Ok(info) => info,
            Err(NotLoggedIn::Refused(refusal)) => {
                err(out, refusal.blocked.reply());
                return Directive::Delay(refusal.delay);
            }
            Err(NotLoggedIn::Denied(delay)) => {
                err(out, "[AUTH] Authentication failed");
                return Directive::Delay(delay);
            }
            Err(NotLoggedIn::Backend(e)) => {
                log::warn!("session={sid} auth backend failed for user={user:?}: {e}");
                err_backend(
                    out,
                    &e,
                    "Authentication is temporarily unavailable, try again later",
                );
                return Directive::Continue;
            }
        };
        self.enter_transaction(info, method, out)
    }

    /// Opens the maildrop of an authenticated user and enters TRANSACTION.
    fn enter_transaction(&mut self, info: UserInfo, method: &str, out: &mut Vec<u8>) -> Directive {
        let sid = Sid(self.id);
        let maildrop = match self.env.store.open(&info) {
            Ok(maildrop) => maildrop,
            Err(e) => {
                let text = match e {
                    BackendError::InUse(_) => "Maildrop is in use by another session",
                    BackendError::PermFail(_) => {
                        "Maildrop cannot be opened; contact the administrator"
                    }
                    _ => "Maildrop is temporarily unavailable, try again later",
                };
                log::warn!(
                    "session={sid} cannot open maildrop of user={}: {e}",
                    info.name
                );
                err_backend(out, &e, text);
                return Directive::Continue;
            }
        };
        let count = maildrop.messages().len();
        let total_octets = maildrop.messages().iter().map(|m| m.wire_size).sum();
        log::info!(
            "session={sid} login user={} method={method} remote={} local={} tls={} messages={count} octets={total_octets}",
            info.name,
            self.peer.addr.ip(),
            self.peer
                .local
                .map_or_else(|| "?".to_string(), |local| local.to_string()),
            if self.peer.tls { "yes" } else { "no" },
        );
        let _ = write!(
            out,
            "+OK Logged in, {count} messages ({total_octets} octets)\r\n"
        );
        self.state = State::Transaction(Box::new(Transaction {
            user: info.name,
            maildrop,
            deleted: vec![false; count],
            deleted_count: 0,
            deleted_octets: 0,
            total_octets,
            body: None,
            stats: Stats::default(),
        }));
        Directive::Continue
    }

    fn capabilities(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"+OK Capability list follows\r\nTOP\r\nUIDL\r\n");
        if self.peer.plaintext_auth_allowed {
            out.extend_from_slice(b"USER\r\n");
        }
        // RFC 2595: STLS is listed only where it is permitted, which is
        // before login and before TLS.
        if self.peer.stls_available && matches!(self.state, State::Authorization(_)) {
            out.extend_from_slice(b"STLS\r\n");
        }
        // Like STLS, SASL is only of use before login.
        if matches!(self.state, State::Authorization(_)) {
            self.sasl_capability(out);
        }
        out.extend_from_slice(b"RESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\n");
        let _ = write!(out, "IMPLEMENTATION {}\r\n.\r\n", self.env.implementation);
    }

    fn transaction(&mut self, command: Command<'_>, out: &mut Vec<u8>) -> Directive {
        if matches!(command, Command::Capa) {
            self.capabilities(out);
            return Directive::Continue;
        }
        let sid = Sid(self.id);
        let State::Transaction(t) = &mut self.state else {
            return Directive::Continue;
        };
        match command {
            Command::Stat => {
                let _ = write!(
                    out,
                    "+OK {} {}\r\n",
                    t.deleted.len() - t.deleted_count,
                    t.total_octets - t.deleted_octets
                );
                Directive::Continue
            }
            Command::List(Some(n)) => {
                if let Some(i) = t.visible(n, out) {
                    let size = t.maildrop.messages()[i].wire_size;
                    let _ = write!(out, "+OK {n} {size}\r\n");
                }
                Directive::Continue
            }
            Command::Uidl(Some(n)) => {
                if let Some(i) = t.visible(n, out) {
                    let _ = write!(out, "+OK {n} {}\r\n", t.maildrop.messages()[i].uid);
                }
                Directive::Continue
            }
            Command::List(None) => {
                let _ = write!(
                    out,
                    "+OK {} messages ({} octets)\r\n",
                    t.deleted.len() - t.deleted_count,
                    t.total_octets - t.deleted_octets
                );
                t.body = Some(Body::Listing {
                    kind: ListingKind::Sizes,
                    next: 0,
                });
                t.pump(sid, out)
            }
            Command::Uidl(None) => {
                ok(out, "Unique-ID listing follows");
                t.body = Some(Body::Listing {
                    kind: ListingKind::Uids,
                    next: 0,
                });
                t.pump(sid, out)
            }
            Command::Retr(n) => {
                let Some(i) = t.visible(n, out) else {
                    return Directive::Continue;
                };
                let Some(reader) = t.open(sid, i, out) else {
                    return Directive::Continue;
                };
                let size = t.maildrop.messages()[i].wire_size;
                let _ = write!(out, "+OK {size} octets\r\n");
                t.stats.retr += 1;
                t.stats.retr_octets += size;
                t.body = Some(Body::Message {
                    reader,
                    encoder: BodyEncoder::full(),
                    number: i + 1,
                });
                t.pump(sid, out)
            }
            Command::Top { msg, lines } => {
                let Some(i) = t.visible(msg, out) else {
                    return Directive::Continue;
                };
                let Some(reader) = t.open(sid, i, out) else {
                    return Directive::Continue;
                };
                ok(out, "Top of message follows");
                t.stats.top += 1;
                t.body = Some(Body::Message {
                    reader,
                    encoder: BodyEncoder::top(lines),
                    number: i + 1,
                });
                t.pump(sid, out)
            }
            Command::Dele(n) => {
                if let Some(i) = t.visible(n, out) {
                    t.deleted[i] = true;
                    t.deleted_count += 1;
                    t.deleted_octets += t.maildrop.messages()[i].wire_size;
                    t.stats.dele += 1;
                    let _ = write!(out, "+OK Message {n} deleted\r\n");
                }
                Directive::Continue
            }
            Command::Noop => {
                ok(out, "");
                Directive::Continue
            }
            Command::Rset => {
                t.deleted.iter_mut().for_each(|d| *d = false);
                t.deleted_count = 0;
                t.deleted_octets = 0;
                let _ = write!(
                    out,
                    "+OK Maildrop has {} messages ({} octets)\r\n",
                    t.deleted.len(),
                    t.total_octets
                );
                Directive::Continue
            }
            Command::Quit => self.update(out),
            Command::User(_) | Command::Pass(_) | Command::Apop { .. } | Command::Auth { .. } => {
                err(out, "Already logged in");
                Directive::Continue
            }
            Command::Stls => {
                err(out, "STLS is only allowed before login");
                Directive::Continue
            }
            Command::Capa => Directive::Continue,
        }
    }

    /// QUIT in TRANSACTION: the UPDATE state.
    fn update(&mut self, out: &mut Vec<u8>) -> Directive {
        let State::Transaction(t) = std::mem::replace(&mut self.state, State::Finished) else {
            return Directive::Close;
        };
        let t = *t;
        let doomed: Vec<usize> = t
            .deleted
            .iter()
            .enumerate()
            .filter_map(|(i, &d)| d.then_some(i))
            .collect();
        let remaining = t.deleted.len() - doomed.len();
        let result = t.maildrop.commit(&doomed);
        let outcome = match &result {
            Ok(()) => "ok".to_owned(),
            Err(e) => format!("failed: {e}"),
        };
        log::info!(
            "session={} logout user={} reason=quit retr={} retr_octets={} top={} dele={} deleted={} update={}",
            Sid(self.id),
            t.user,
            t.stats.retr,
            t.stats.retr_octets,
            t.stats.top,
            t.stats.dele,
            if result.is_ok() { doomed.len() } else { 0 },
            outcome
        );
        match result {
            Ok(()) => {
                let _ = write!(
                    out,
                    "+OK Bye, {} messages deleted, {remaining} left\r\n",
                    doomed.len()
                );
            }
            Err(e) => err_backend(
                out,
                &e,
                "Some deleted messages could not be removed; they will reappear",
            ),
        }
        Directive::Close
    }

    /// Produces the next piece of a multi-line reply.
    pub fn continue_body(&mut self, out: &mut Vec<u8>) -> Directive {
        let sid = Sid(self.id);
        match &mut self.state {
            State::Transaction(t) => t.pump(sid, out),
            _ => Directive::Continue,
        }
    }
}

impl Transaction {
    /// Maps a message number to an index if that message exists and is not
    /// deleted; otherwise answers `-ERR` itself.
    fn visible(&self, n: u32, out: &mut Vec<u8>) -> Option<usize> {
        let i = (n as usize).checked_sub(1)?;
        match self.deleted.get(i) {
            Some(false) => Some(i),
            Some(true) => {
                let _ = write!(out, "-ERR Message {n} is deleted\r\n");
                None
            }
            None => {
                let _ = write!(out, "-ERR No such message {n}\r\n");
                None
            }
        }
    }

    fn open(&mut self, sid: Sid, i: usize, out: &mut Vec<u8>) -> Option<Box<dyn MessageReader>> {
        match self.maildrop.open_message(i) {
            Ok(reader) => Some(reader),
            Err(e) => {
                log::warn!(
                    "session={sid} user={} cannot open message {}: {e}",
                    self.user,
                    i + 1
                );
                let text = match e {
                    BackendError::NotFound(_) => "Message has vanished from the maildrop",
                    _ => "Message cannot be read right now",
                };
                err_backend(out, &e, text);
                None
            }
        }
    }

    /// Appends up to about [`BODY_PIECE_TARGET`] bytes of the body in
    /// progress.
    fn pump(&mut self, sid: Sid, out: &mut Vec<u8>) -> Directive {
        let Some(body) = self.body.as_mut() else {
            return Directive::Continue;
        };
        let finished = match body {
            Body::Listing { kind, next } => {
                let messages = self.maildrop.messages();
                while *next < messages.len() && out.len() < BODY_PIECE_TARGET {
                    let i = *next;
                    *next += 1;
                    if self.deleted[i] {
                        continue;
                    }
                    let _ = match kind {
                        ListingKind::Sizes => {
                            write!(out, "{} {}\r\n", i + 1, messages[i].wire_size)
                        }
                        ListingKind::Uids => write!(out, "{} {}\r\n", i + 1, messages[i].uid),
                    };
                }
                if *next >= messages.len() {
                    out.extend_from_slice(b".\r\n");
                    true
                } else {
                    false
                }
            }
            Body::Message {
                reader,
                encoder,
                number,
            } => {
                // Room for the whole piece at once (the last read may double
                // in size: LF to CRLF, dot-stuffing), so a large message is
                // not copied over and over as the buffer grows; but no more
                // than the message needs (its wire size, plus some for
                // stuffing dots), so a small RETR does not allocate, and
                // fault in, a large buffer.
                let piece_at_most = BODY_PIECE_TARGET + 2 * READ_CHUNK + 8;
                let message_needs = self
                    .maildrop
                    .messages()
                    .get(*number - 1)
                    .and_then(|message| {
                        usize::try_from(message.wire_size + message.wire_size / 16 + 8).ok()
                    })
                    .unwrap_or(piece_at_most);
                out.reserve(piece_at_most.min(message_needs + 8));
                let step = READ_BUF.with(|buf| {
                    let mut buf = buf.borrow_mut();
                    while out.len() < BODY_PIECE_TARGET {
                        let n = reader.read(&mut buf)?;
                        if n == 0 {
                            return Ok(true);
                        }
                        if encoder.encode(&buf[..n], out) == Progress::Done {
                            return Ok(true);
                        }
                    }
                    Ok(false)
                });
                match step {
                    Ok(true) => {
                        encoder.finish(out);
                        true
                    }
                    Ok(false) => false,
                    Err(e) => {
                        // The status line already said +OK; the only honest
                        // signal left is to cut the connection so the client
                        // sees an unterminated reply instead of a short
                        // message.
                        let e: BackendError = e;
                        log::error!(
                            "session={sid} user={} reading message {number} failed mid-stream, closing: {e}",
                            self.user
                        );
                        self.body = None;
                        return Directive::Close;
                    }
                }
            }
        };
        if finished {
            self.body = None;
            Directive::Continue
        } else {
            Directive::MoreBody
        }
    }
}

// --- Defences: bad commands and the login guard -------------------------
//
// Kept apart from the state machine above: every way of checking
// credentials (USER/PASS, and SASL mechanisms) goes through
// `check_credentials`, so the guard sees every attempt.

/// Why a credentials check logged nobody in.
enum NotLoggedIn {
    /// The guard refused the attempt without asking the backend.
    Refused(Refusal),
    /// Wrong credentials; hold the answer back this long.
    Denied(Duration),
    /// The backend could not answer (temporary or permanent failure).
    Backend(BackendError),
}

impl Session {
    /// Asks the guard, then the auth backend, then tells the guard how it
    /// went. Logs failures and refusals (the caller logs a login).
    fn check_credentials(
        &self,
        user: &str,
        password: &[u8],
        method: &str,
    ) -> Result<UserInfo, NotLoggedIn> {
        let sid = Sid(self.id);
        let ip = self.peer.addr.ip();
        if let Err(refusal) = self.guard_admit(user, method) {
            return Err(NotLoggedIn::Refused(refusal));
        }
        let started = Instant::now();
        let result = self.env.auth.authenticate(user, password);
        let took = started.elapsed();
        match result {
            Ok(info) => {
                self.guard_succeeded(user, took);
                Ok(info)
            }
            Err(BackendError::Denied) => {
                log::info!("session={sid} login failed user={user:?} remote={ip} method={method}");
                Err(NotLoggedIn::Denied(self.guard_failed(user, took)))
            }
            Err(e) => Err(NotLoggedIn::Backend(e)),
        }
    }

    /// Asks the guard whether `user` may try from this address at all;
    /// logs a refusal. Every login method goes through here first.
    fn guard_admit(&self, user: &str, method: &str) -> Result<(), Refusal> {
        let Some(guard) = self.env.defences.guard.as_deref() else {
            return Ok(());
        };
        let ip = self.peer.addr.ip();
        guard.admit(ip, user).inspect_err(|refusal| {
            log::info!(
                "session={} login refused user={user:?} remote={ip} method={method} blocked={} (too many failures)",
                Sid(self.id),
                refusal.blocked.as_str()
            );
        })
    }

    /// Tells the guard about wrong credentials; returns how long to hold
    /// back the `-ERR`.
    fn guard_failed(&self, user: &str, took: Duration) -> Duration {
        match self.env.defences.guard.as_deref() {
            Some(guard) => guard.failed(self.peer.addr.ip(), user, took),
            None => self.env.auth_failure_delay,
        }
    }

    /// Tells the guard about right credentials (forgives the address).
    fn guard_succeeded(&self, user: &str, took: Duration) {
        if let Some(guard) = self.env.defences.guard.as_deref() {
            guard.succeeded(self.peer.addr.ip(), user, took);
        }
    }

    /// Answers a line that is not a command (unknown, malformed, too long).
    /// Before login these count towards `max_bad_commands`; the one that
    /// reaches it gets the closing reply instead of its own error.
    fn bad_command(&mut self, why: &str, out: &mut Vec<u8>) -> Directive {
        let limit = self.env.defences.max_bad_commands;
        if limit > 0 && matches!(self.state, State::Authorization(_)) {
            self.bad_commands += 1;
            if self.bad_commands >= limit {
                log::info!(
                    "session={} closing after {} bad commands before login remote={}",
                    Sid(self.id),
                    self.bad_commands,
                    self.peer.addr.ip()
                );
                err(out, canned::TOO_MANY_BAD_COMMANDS);
                self.state = State::Finished;
                return Directive::Close;
            }
        }
        err(out, why);
        Directive::Continue
    }
}
