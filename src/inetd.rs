//! `pop3d --inetd`: one POP3 session on stdin and stdout.
//!
//! This is how popa3d and many small POP3 servers run: inetd, xinetd,
//! tcpserver or a systemd socket with `Accept=yes` accepts the connection
//! and starts one pop3d process per client with the socket as stdin and
//! stdout. There is no event loop here because there is only one client: a
//! plain blocking driver is the whole server.
//!
//! The driver applies the same rules as the daemon: command lines are framed
//! by the same bounded [`Framer`] (255 octets including CRLF, an overlong
//! line is answered and skipped, never buffered), a failed login is answered
//! after `limits.auth_failure_delay_ms` (a sleep is fine: the process serves
//! nobody else), a silent client is disconnected after
//! `limits.login_timeout_secs` before login and `limits.idle_timeout_secs`
//! after, and a session that ends in any way but QUIT deletes nothing.
//! Replies to pipelined commands are written together, one write per batch
//! of lines read; message bodies are written in pieces as the session
//! produces them, so memory stays bounded whatever the message size.
//!
//! When stdout is a socket, a write that makes no progress for
//! `limits.idle_timeout_secs` ends the session (a client that stopped
//! reading in the middle of a large RETR), as the daemon's idle timer does.
//!
//! Reading happens on a second thread that hands chunks over a channel of
//! one slot: the driver waits on it with a timeout (that is how the idle
//! timers work), and the reader never gets more than one chunk ahead.
//!
//! The client's address comes from `getpeername` on stdin when stdin is a
//! TCP socket (inetd, xinetd, systemd). When it is not (tcpserver passes a
//! pipe pair in some setups; tests use pipes), the environment is asked:
//! `TCPREMOTEIP`/`TCPREMOTEPORT` (ucspi-tcp) or `REMOTE_ADDR`/`REMOTE_PORT`
//! (systemd). Without any, the address is unknown: the log shows `0.0.0.0`
//! and `allow_plaintext_auth: LoopbackOnly` refuses USER/PASS.

use crate::backend::registry;
use crate::config::{Config, PlaintextAuth};
use crate::protocol::sasl::SaslConfig;
use crate::protocol::session::{canned, Peer, BODY_PIECE_TARGET};
use crate::protocol::{Directive, Session, SessionEnv};
use crate::server::framer::{Framer, Line, LineBatch};
use crate::server::unmapped;
use crossbeam_channel::{Receiver, RecvTimeoutError};
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest command line, CRLF included: the daemon's cap (RFC 2449
/// section 4), so a client sees the same server either way.
const MAX_COMMAND_LINE: usize = 255;

/// One read from stdin. Small: commands are short, and the reader may hold
/// one chunk in the channel and one in hand.
const READ_CHUNK: usize = 4096;

/// Sent instead of a greeting when the process cannot serve (a bad
/// configuration, a backend that does not start), so the client gets an
/// answer rather than a closed connection. The reason goes to the log.
pub const UNAVAILABLE: &[u8] =
    b"-ERR [SYS/TEMP] Server is not available right now, try again later\r\n";

/// Why `--inetd` could not serve at all.
#[derive(Debug)]
pub enum InetdError {
    /// The configuration asks for something `--inetd` does not do.
    Unsupported(String),
    /// A backend refused its configuration or could not start.
    Backend(String),
    /// stdin or stdout could not be used, or the reader thread not started.
    Io(io::Error),
}

impl fmt::Display for InetdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InetdError::Unsupported(why) => f.write_str(why),
            InetdError::Backend(why) => write!(f, "backend: {why}"),
            InetdError::Io(e) => write!(f, "--inetd: stdin/stdout: {e}"),
        }
    }
}

impl std::error::Error for InetdError {}

/// The two ends of the connection, as far as they are known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoints {
    /// The client; `None` when nothing says who it is.
    pub remote: Option<SocketAddr>,
    /// Our side (which address and port the client reached), for the log.
    pub local: Option<SocketAddr>,
}

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The session closed the connection: after QUIT, or after an error it
    /// could not recover from.
    Closed,
    /// The client closed its side or the connection broke.
    Disconnected,
    /// The client was silent longer than its timeout.
    Timeout,
    /// A reply could not be written.
    WriteFailed,
}

impl Ending {
    /// The word used in log lines.
    pub fn reason(self) -> &'static str {
        match self {
            Ending::Closed => "closed",
            Ending::Disconnected => "disconnected",
            Ending::Timeout => "idle timeout",
            Ending::WriteFailed => "write error",
        }
    }
}

/// Serves one session on this process's stdin and stdout with `config`.
/// If the backends cannot be built, the client is told the server is
/// unavailable before the error is returned.
pub fn run(config: &Config) -> Result<Ending, InetdError> {
    let input = File::from(
        io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .map_err(InetdError::Io)?,
    );
    let mut output = File::from(
        io::stdout()
            .as_fd()
            .try_clone_to_owned()
            .map_err(InetdError::Io)?,
    );
    // A client that stops reading would otherwise block a write, and this
    // process with its maildrop lock, forever; the daemon's idle timer
    // covers that case there. On a pipe this fails and changes nothing.
    if let Ok(fd) = io::stdout().as_fd().try_clone_to_owned() {
        let idle = Duration::from_secs(config.limits.idle_timeout_secs);
        let _ = TcpStream::from(fd).set_write_timeout(Some(idle));
    }
    let env = match build_env(config) {
        Ok(env) => env,
        Err(e) => {
            // Best effort: the client may already be gone.
            let _ = output.write_all(UNAVAILABLE);
            return Err(e);
        }
    };
    serve(config, env, endpoints_of_stdin(), input, output)
}

/// The backends and settings every session of `config` shares; refuses what
/// `--inetd` cannot do.
pub fn build_env(config: &Config) -> Result<Arc<SessionEnv>, InetdError> {
    if config.tls.is_some() || config.listen.iter().any(|l| l.implicit_tls) {
        return Err(InetdError::Unsupported(
            "--inetd does not serve TLS (`tls`, `implicit_tls`) yet; remove those keys for --inetd, or run pop3d as a daemon".into(),
        ));
    }
    let auth =
        registry::build_auth(&config.auth).map_err(|e| InetdError::Backend(e.to_string()))?;
    let store =
        registry::build_store(&config.store).map_err(|e| InetdError::Backend(e.to_string()))?;
    Ok(Arc::new(SessionEnv {
        auth,
        store,
        auth_failure_delay: Duration::from_millis(config.limits.auth_failure_delay_ms),
        implementation: "pop3d",
        sasl: SaslConfig::with_random_key(&crate::config::effective_hostname(
            config.hostname.as_deref(),
        ))
        .map_err(|e| InetdError::Io(io::Error::other(e)))?,
        apop: config.apop,
        // Processes under inetd share no memory, so there are no failure
        // counters to keep: the delay stays fixed and only the per-connection
        // bad-command limit applies.
        defences: crate::protocol::guard::Defences {
            guard: None,
            max_bad_commands: config.limits.max_bad_commands,
        },
    }))
}

/// Serves one session: greets on `output`, reads commands from `input` until
/// QUIT, end of input, a timeout or a write error, and logs one line about
/// the connection at the end.
pub fn serve<R, W>(
    config: &Config,
    env: Arc<SessionEnv>,
    endpoints: Endpoints,
    input: R,
    output: W,
) -> Result<Ending, InetdError>
where
    R: Read + Send + 'static,
    W: Write,
{
    let plaintext_auth_allowed = match config.allow_plaintext_auth {
        PlaintextAuth::Always => true,
        PlaintextAuth::LoopbackOnly => endpoints.remote.is_some_and(|a| a.ip().is_loopback()),
        PlaintextAuth::Never => false,
    };
    let remote = endpoints
        .remote
        .unwrap_or(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)));
    let local = endpoints
        .local
        .map_or_else(|| "unknown".to_string(), |a| a.to_string());
    let id = session_id();
    let chunks = spawn_reader(input).map_err(InetdError::Io)?;
    log::debug!("session={id:08x} connect remote={remote} local={local} mode=inetd");
    let mut driver = Driver {
        session: Session::new(
            env,
            Peer {
                addr: remote,
                local: endpoints.local,
                plaintext_auth_allowed,
                // inetd mode has no TLS layer: STLS is never offered.
                tls: false,
                stls_available: false,
            },
            id,
        ),
        output,
        out: Vec::new(),
        bytes_in: 0,
        bytes_out: 0,
        last_activity: Instant::now(),
    };
    let started = Instant::now();
    let ending = driver.run(config, &chunks);
    let Driver {
        session,
        bytes_in,
        bytes_out,
        ..
    } = driver;
    // Anything but a completed QUIT releases the maildrop untouched.
    session.abandon(ending.reason());
    log::info!(
        "session={id:08x} end reason={} remote={} local={local} bytes_in={bytes_in} bytes_out={bytes_out} duration_ms={}",
        ending.reason(),
        remote.ip(),
        started.elapsed().as_millis()
    );
    Ok(ending)
}

/// The session and its output, for one connection.
struct Driver<W> {
    /// The POP3 state machine.
    session: Session,
    /// Where replies go.
    output: W,
    /// Reply bytes not yet written.
    out: Vec<u8>,
    /// Octets read from the client, for the log.
    bytes_in: u64,
    /// Octets written to the client, for the log.
    bytes_out: u64,
    /// When the client last sent something or a reply was written: the
    /// timeouts count from here, as in the daemon.
    last_activity: Instant,
}

impl<W: Write> Driver<W> {
    fn run(&mut self, config: &Config, chunks: &Receiver<Vec<u8>>) -> Ending {
        let login_timeout = Duration::from_secs(config.limits.login_timeout_secs);
        let idle_timeout = Duration::from_secs(config.limits.idle_timeout_secs);
        let mut framer = Framer::new(MAX_COMMAND_LINE);
        let mut lines = LineBatch::default();
        self.session.greeting(&mut self.out);
        if let Err(ending) = self.flush() {
            return ending;
        }
        loop {
            let limit = if self.session.is_authenticated() {
                idle_timeout
            } else {
                login_timeout
            };
            let wait = (self.last_activity + limit).saturating_duration_since(Instant::now());
            match chunks.recv_timeout(wait) {
                Ok(chunk) => {
                    self.bytes_in += chunk.len() as u64;
                    self.last_activity = Instant::now();
                    framer.feed(&chunk, &mut lines);
                    let handled = self.handle(&lines);
                    lines.clear();
                    // An AUTH exchange waiting for a response allows longer
                    // lines.
                    framer.set_max_line(self.session.line_limit());
                    if let Err(ending) = handled {
                        return ending;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.out.extend_from_slice(canned::IDLE_TIMEOUT);
                    // The client is not listening anyway if this fails.
                    let _ = self.flush();
                    return Ending::Timeout;
                }
                Err(RecvTimeoutError::Disconnected) => return Ending::Disconnected,
            }
        }
    }

    /// Handles a batch of lines in order, then writes what is left of the
    /// replies. `Err` ends the connection.
    fn handle(&mut self, lines: &LineBatch) -> Result<(), Ending> {
        for i in 0..lines.len() {
            let directive = match lines.get(i) {
                Some(Line::Text(text)) => self.session.handle_line(text, &mut self.out),
                Some(Line::TooLong) => self.session.line_too_long(&mut self.out),
                None => Directive::Continue,
            };
            self.follow(directive)?;
            // Many small replies to a long pipeline: write them in pieces
            // rather than collect them all.
            if self.out.len() >= BODY_PIECE_TARGET {
                self.flush()?;
            }
        }
        self.flush()
    }

    /// Does what the session asked until it is ready for the next line.
    fn follow(&mut self, mut directive: Directive) -> Result<(), Ending> {
        loop {
            match directive {
                Directive::Continue => return Ok(()),
                Directive::MoreBody => {
                    self.flush()?;
                    directive = self.session.continue_body(&mut self.out);
                }
                Directive::Delay(delay) => {
                    // Nobody else is served by this process: sleeping here
                    // holds back the reply and every pipelined command after
                    // it, exactly as the daemon's timer does.
                    std::thread::sleep(delay);
                    return self.flush();
                }
                Directive::Close => {
                    self.flush()?;
                    return Err(Ending::Closed);
                }
                // The session only asks for TLS where STLS was offered, and
                // it never is here; should it ask anyway, refusing the
                // upgrade silently would desynchronise the client: close.
                Directive::StartTls => return Err(Ending::Closed),
            }
        }
    }

    /// Writes all pending reply bytes.
    fn flush(&mut self) -> Result<(), Ending> {
        if self.out.is_empty() {
            return Ok(());
        }
        let written = self
            .output
            .write_all(&self.out)
            .and_then(|()| self.output.flush());
        if let Err(e) = written {
            log::debug!("write to the client failed: {e}");
            return Err(Ending::WriteFailed);
        }
        self.bytes_out += self.out.len() as u64;
        self.out.clear();
        self.last_activity = Instant::now();
        Ok(())
    }
}

/// Starts the thread that reads `input` and hands over chunks; the channel
/// closes at end of input or on a read error.
fn spawn_reader<R: Read + Send + 'static>(mut input: R) -> io::Result<Receiver<Vec<u8>>> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::Builder::new()
        .name("pop3d-stdin".into())
        .spawn(move || {
            let mut buf = vec![0; READ_CHUNK];
            loop {
                match input.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => {
                        if tx.send(buf[..n].to_vec()).is_err() {
                            return;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        log::debug!("read from the client failed: {e}");
                        return;
                    }
                }
            }
        })?;
    Ok(rx)
}

/// Who is connected, from the socket on stdin or else the environment.
pub fn endpoints_of_stdin() -> Endpoints {
    if let Ok(fd) = io::stdin().as_fd().try_clone_to_owned() {
        // Only a view of fd 0 through a duplicate: dropping it closes the
        // duplicate, not stdin. On a pipe, `peer_addr` simply fails.
        let socket = TcpStream::from(fd);
        if let Ok(remote) = socket.peer_addr() {
            // Replies are written whole; Nagle would only delay the last
            // segment of each.
            let _ = socket.set_nodelay(true);
            return Endpoints {
                remote: Some(unmapped(remote)),
                local: socket.local_addr().ok().map(unmapped),
            };
        }
    }
    endpoints_from_env(|name| std::env::var(name).ok())
}

/// The endpoints described by ucspi-tcp's `TCPREMOTEIP`/`TCPREMOTEPORT`,
/// `TCPLOCALIP`/`TCPLOCALPORT`, or systemd's `REMOTE_ADDR`/`REMOTE_PORT`.
pub fn endpoints_from_env(var: impl Fn(&str) -> Option<String>) -> Endpoints {
    let addr = |ip: &str, port: &str| {
        let ip: IpAddr = var(ip)?.trim().parse().ok()?;
        let port = var(port).and_then(|p| p.trim().parse().ok()).unwrap_or(0);
        Some(unmapped(SocketAddr::new(ip, port)))
    };
    Endpoints {
        remote: addr("TCPREMOTEIP", "TCPREMOTEPORT").or_else(|| addr("REMOTE_ADDR", "REMOTE_PORT")),
        local: addr("TCPLOCALIP", "TCPLOCALPORT"),
    }
}

/// A session id for the log that differs between processes: with one
/// process per connection, the time and the process id together do that.
fn session_id() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    (nanos ^ (u64::from(std::process::id()) << 20)) & 0xffff_ffff
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn endpoints_come_from_ucspi_tcp_or_systemd_variables() {
        let tcpserver = endpoints_from_env(env_of(&[
            ("TCPREMOTEIP", "192.0.2.7"),
            ("TCPREMOTEPORT", "40000"),
            ("TCPLOCALIP", "198.51.100.1"),
            ("TCPLOCALPORT", "110"),
            ("REMOTE_ADDR", "203.0.113.9"),
        ]));
        assert_eq!(tcpserver.remote, Some("192.0.2.7:40000".parse().unwrap()));
        assert_eq!(tcpserver.local, Some("198.51.100.1:110".parse().unwrap()));

        let systemd = endpoints_from_env(env_of(&[("REMOTE_ADDR", "::ffff:127.0.0.1")]));
        assert_eq!(systemd.remote, Some("127.0.0.1:0".parse().unwrap()));
        assert_eq!(systemd.local, None);

        let nothing = endpoints_from_env(env_of(&[("TCPREMOTEIP", "not an address")]));
        assert_eq!(nothing.remote, None);
    }

    #[test]
    fn ipv6_addresses_stay_ipv6_unless_they_are_mapped_ipv4() {
        let v6: SocketAddr = "[2001:db8::1]:110".parse().unwrap();
        assert_eq!(unmapped(v6), v6);
        let mapped: SocketAddr = "[::ffff:192.0.2.1]:110".parse().unwrap();
        assert_eq!(unmapped(mapped), "192.0.2.1:110".parse().unwrap());
    }
}
