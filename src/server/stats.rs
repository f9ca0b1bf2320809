//! Counters and the Prometheus metrics endpoint.
//!
//! [`Metrics`] is a set of atomic counters updated where things happen:
//! the loop counts connections and bytes, workers count commands, the
//! login guard counts login outcomes and how long the auth backend took.
//! Nothing here locks, so counting costs a relaxed atomic add.
//!
//! With `stats_listen` set, the loop also serves [`StatsEndpoint`]: plain
//! HTTP/1.0, `GET /metrics` answered in the Prometheus text format
//! (version 0.0.4), one response per connection, then close. It is the
//! loop's own work, so it must never block: requests are read and answered
//! with non-blocking I/O, a request may be at most [`MAX_REQUEST`] bytes,
//! at most [`MAX_STATS_CONNECTIONS`] are served at once, and each gets
//! [`STATS_TIMEOUT`] to finish. Configuration only accepts a loopback
//! address for it: there is no authentication.

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Longest request accepted (request line and headers).
pub const MAX_REQUEST: usize = 8 * 1024;
/// Scrapers served at once; more are closed unanswered.
pub const MAX_STATS_CONNECTIONS: usize = 8;
/// Time a scraper gets to send its request and read the answer.
pub const STATS_TIMEOUT: Duration = Duration::from_secs(5);

/// Command names counted one by one; anything else counts as `other`.
const COMMANDS: [&str; 15] = [
    "USER", "PASS", "APOP", "AUTH", "QUIT", "STAT", "LIST", "RETR", "DELE", "NOOP", "RSET", "TOP",
    "UIDL", "CAPA", "STLS",
];
/// Slots after the named commands.
const OTHER: usize = COMMANDS.len();
const TOO_LONG: usize = COMMANDS.len() + 1;

/// Upper bounds (seconds) of the auth latency histogram buckets.
const AUTH_BUCKETS: [f64; 8] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0];

/// Counters shared by the loop, the workers and the login guard.
#[derive(Default)]
pub struct Metrics {
    /// Connections admitted since start.
    pub connections_total: AtomicU64,
    /// Connections turned away at once (max_connections, max_per_ip).
    pub connections_refused: AtomicU64,
    /// Octets read from client sockets (TLS records included).
    pub bytes_in: AtomicU64,
    /// Octets written to client sockets (TLS records included).
    pub bytes_out: AtomicU64,
    /// Logins whose credentials were right.
    logins_ok: AtomicU64,
    /// Logins whose credentials were wrong.
    logins_failed: AtomicU64,
    /// Logins refused unchecked by the failure caps.
    logins_refused: AtomicU64,
    /// Command lines by name (`COMMANDS`, then other, then too long).
    commands: [AtomicU64; COMMANDS.len() + 2],
    /// Auth backend calls per latency bucket (not cumulative; the last
    /// slot is beyond the largest bound).
    auth_buckets: [AtomicU64; AUTH_BUCKETS.len() + 1],
    /// Total auth backend time in microseconds.
    auth_micros: AtomicU64,
}

/// Gauges only the loop knows, read when a scrape is answered.
pub struct LoopGauges {
    /// Client connections open now.
    pub open_connections: usize,
    /// Of those, connections whose client has logged in.
    pub authenticated: usize,
    /// Jobs waiting for a worker (the channel and the loop's backlog).
    pub queued_jobs: usize,
    /// Addresses and user names the login guard tracks.
    pub guard_tracked: (usize, usize),
}

impl Metrics {
    /// Counts one command line by its first word.
    pub fn count_command(&self, line: &[u8]) {
        let word = line.split(|&b| b == b' ').next().unwrap_or_default();
        let slot = COMMANDS
            .iter()
            .position(|name| name.as_bytes().eq_ignore_ascii_case(word))
            .unwrap_or(OTHER);
        self.commands[slot].fetch_add(1, Relaxed);
    }

    /// Counts a line that was too long to be a command.
    pub fn count_too_long(&self) {
        self.commands[TOO_LONG].fetch_add(1, Relaxed);
    }

    pub fn login_succeeded(&self, took: Duration) {
        self.logins_ok.fetch_add(1, Relaxed);
        self.auth_latency(took);
    }

    pub fn login_failed(&self, took: Duration) {
        self.logins_failed.fetch_add(1, Relaxed);
        self.auth_latency(took);
    }

    pub fn login_refused(&self) {
        self.logins_refused.fetch_add(1, Relaxed);
    }

    fn auth_latency(&self, took: Duration) {
        let secs = took.as_secs_f64();
        let slot = AUTH_BUCKETS
            .iter()
            .position(|&bound| secs <= bound)
            .unwrap_or(AUTH_BUCKETS.len());
        self.auth_buckets[slot].fetch_add(1, Relaxed);
        self.auth_micros
            .fetch_add(u64::try_from(took.as_micros()).unwrap_or(u64::MAX), Relaxed);
    }

    /// The metrics in the Prometheus text format.
    pub fn render(&self, gauges: &LoopGauges) -> String {
        let mut out = String::with_capacity(4096);
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
            let _ = writeln!(
                out,
                "# HELP pop3d_{name} {help}\n# TYPE pop3d_{name} {kind}"
            );
            for (labels, value) in samples {
                let _ = writeln!(out, "pop3d_{name}{labels} {value}");
            }
        };
        let get = |counter: &AtomicU64| counter.load(Relaxed);
        metric(
            "connections_open",
            "gauge",
            "Client connections open now.",
            &[("", gauges.open_connections as u64)],
        );
        metric(
            "sessions_authenticated",
            "gauge",
            "Open connections whose client has logged in.",
            &[("", gauges.authenticated as u64)],
        );
        metric(
            "connections_total",
            "counter",
            "Client connections accepted since start.",
            &[("", get(&self.connections_total))],
        );
        metric(
            "connections_refused_total",
            "counter",
            "Connections turned away by max_connections or max_per_ip.",
            &[("", get(&self.connections_refused))],
        );
        metric(
            "logins_total",
            "counter",
            "Login attempts by outcome (refused: over a failure cap, not checked).",
            &[
                ("{result=\"ok\"}", get(&self.logins_ok)),
                ("{result=\"failed\"}", get(&self.logins_failed)),
                ("{result=\"refused\"}", get(&self.logins_refused)),
            ],
        );
        metric(
            "received_bytes_total",
            "counter",
            "Octets read from clients.",
            &[("", get(&self.bytes_in))],
        );
        metric(
            "sent_bytes_total",
            "counter",
            "Octets written to clients.",
            &[("", get(&self.bytes_out))],
        );
        let labels: Vec<String> = COMMANDS
            .iter()
            .map(|c| c.to_ascii_lowercase())
            .chain(["other".to_string(), "too_long".to_string()])
            .map(|c| format!("{{command=\"{c}\"}}"))
            .collect();
        let samples: Vec<(&str, u64)> = labels
            .iter()
            .zip(&self.commands)
            .map(|(label, counter)| (label.as_str(), get(counter)))
            .collect();
        metric(
            "commands_total",
            "counter",
            "Command lines handled, by command.",
            &samples,
        );
        metric(
            "worker_queue_depth",
            "gauge",
            "Jobs waiting for a worker thread.",
            &[("", gauges.queued_jobs as u64)],
        );
        metric(
            "auth_guard_tracked",
            "gauge",
            "Addresses and user names with recent login failures.",
            &[
                ("{table=\"address\"}", gauges.guard_tracked.0 as u64),
                ("{table=\"user\"}", gauges.guard_tracked.1 as u64),
            ],
        );
        let _ = writeln!(
            out,
            "# HELP pop3d_auth_duration_seconds Time the auth backend took per login.\n# TYPE pop3d_auth_duration_seconds histogram"
        );
        let mut cumulative = 0;
        for (bound, counter) in AUTH_BUCKETS.iter().zip(&self.auth_buckets) {
            cumulative += get(counter);
            let _ = writeln!(
                out,
                "pop3d_auth_duration_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
            );
        }
        cumulative += get(&self.auth_buckets[AUTH_BUCKETS.len()]);
        let _ = writeln!(
            out,
            "pop3d_auth_duration_seconds_bucket{{le=\"+Inf\"}} {cumulative}\npop3d_auth_duration_seconds_sum {}\npop3d_auth_duration_seconds_count {cumulative}",
            get(&self.auth_micros) as f64 / 1e6
        );
        out
    }
}

/// One scraper connection.
struct StatsConn {
    stream: TcpStream,
    /// The request so far (at most [`MAX_REQUEST`] bytes).
    request: Vec<u8>,
    /// The whole answer once the request is complete.
    response: Option<Vec<u8>>,
    /// How much of `response` is written.
    written: usize,
    /// When the connection is closed whatever its state.
    deadline: Instant,
}

/// The metrics listener and its connections.
pub struct StatsEndpoint {
    listener: TcpListener,
    /// Slots for scrapers; token `first_token + index`.
    conns: Vec<Option<StatsConn>>,
    first_token: usize,
}

impl StatsEndpoint {
    /// Serves on `listener`; connections get tokens from `first_token` on.
    pub fn new(listener: TcpListener, first_token: usize) -> StatsEndpoint {
        StatsEndpoint {
            listener,
            conns: (0..MAX_STATS_CONNECTIONS).map(|_| None).collect(),
            first_token,
        }
    }

    pub fn listener(&mut self) -> &mut TcpListener {
        &mut self.listener
    }

    /// Whether `token` is one of this endpoint's connections.
    pub fn owns(&self, token: Token) -> bool {
        (self.first_token..self.first_token + MAX_STATS_CONNECTIONS).contains(&token.0)
    }

    /// Accepts waiting scrapers; `render` answers those whose request
    /// came with the connection.
    pub fn accept(&mut self, registry: &Registry, render: &mut dyn FnMut() -> String) {
        loop {
            let mut stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("stats endpoint: accept failed: {e}");
                    return;
                }
            };
            let Some(index) = self.conns.iter().position(Option::is_none) else {
                log::debug!("stats endpoint: too many scrapers at once; closing one");
                continue;
            };
            let token = Token(self.first_token + index);
            if registry
                .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
                .is_err()
            {
                continue;
            }
            self.conns[index] = Some(StatsConn {
                stream,
                request: Vec::new(),
                response: None,
                written: 0,
                deadline: Instant::now() + STATS_TIMEOUT,
            });
            // Requests often arrive with the connection: no new edge will
            // announce what is already there.
            self.progress(index, registry, render);
        }
    }

    /// Reads the request or writes the answer of connection `token`;
    /// `render` produces the metrics text when a request asks for it.
    pub fn ready(&mut self, token: Token, registry: &Registry, render: &mut dyn FnMut() -> String) {
        let index = token.0 - self.first_token;
        self.progress(index, registry, render);
    }

    fn progress(&mut self, index: usize, registry: &Registry, render: &mut dyn FnMut() -> String) {
        let Some(conn) = self.conns.get_mut(index).and_then(Option::as_mut) else {
            return;
        };
        let done = match step(conn, render) {
            Ok(done) => done,
            Err(e) => {
                log::debug!("stats endpoint: {e}");
                true
            }
        };
        if done {
            self.close(index, registry);
        }
    }

    fn close(&mut self, index: usize, registry: &Registry) {
        if let Some(mut conn) = self.conns.get_mut(index).and_then(Option::take) {
            let _ = registry.deregister(&mut conn.stream);
        }
    }

    /// Closes scrapers past their deadline.
    pub fn expire(&mut self, now: Instant, registry: &Registry) {
        for index in 0..self.conns.len() {
            if self.conns[index]
                .as_ref()
                .is_some_and(|c| c.deadline <= now)
            {
                self.close(index, registry);
            }
        }
    }

    /// The earliest deadline of an open scraper connection.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.conns.iter().flatten().map(|c| c.deadline).min()
    }
}

/// Moves one connection on; `Ok(true)` when it is finished.
fn step(conn: &mut StatsConn, render: &mut dyn FnMut() -> String) -> io::Result<bool> {
    if conn.response.is_none() {
        let mut buf = [0u8; 1024];
        let mut ended = false;
        loop {
            match conn.stream.read(&mut buf) {
                Ok(0) => {
                    ended = true;
                    break;
                }
                Ok(n) => {
                    let room = MAX_REQUEST.saturating_sub(conn.request.len());
                    conn.request.extend_from_slice(&buf[..n.min(room)]);
                    if n > room {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let complete = memchr::memmem::find(&conn.request, b"\r\n\r\n").is_some()
            || memchr::memmem::find(&conn.request, b"\n\n").is_some();
        if conn.request.len() >= MAX_REQUEST {
            conn.response = Some(answer(
                431,
                "Request Header Fields Too Large",
                "request too large\n",
            ));
        } else if complete || ended {
            match route(&conn.request) {
                Route::Metrics { head } => {
                    let mut response = answer(200, "OK", &render());
                    if head {
                        let end = memchr::memmem::find(&response, b"\r\n\r\n").map_or(0, |i| i + 4);
                        response.truncate(end);
                    }
                    conn.response = Some(response);
                }
                Route::NotFound => {
                    conn.response = Some(answer(404, "Not Found", "pop3d serves /metrics only\n"));
                }
                Route::BadMethod => {
                    conn.response = Some(answer(405, "Method Not Allowed", "use GET\n"));
                }
            }
        } else {
            return Ok(false);
        }
    }
    let Some(response) = &conn.response else {
        return Ok(false);
    };
    while conn.written < response.len() {
        match conn.stream.write(&response[conn.written..]) {
            Ok(0) => return Ok(true),
            Ok(n) => conn.written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

enum Route {
    Metrics { head: bool },
    NotFound,
    BadMethod,
}

fn route(request: &[u8]) -> Route {
    let line = request.split(|&b| b == b'\n').next().unwrap_or_default();
    let mut words = line
        .split(|&b| b == b' ' || b == b'\r')
        .filter(|w| !w.is_empty());
    let method = words.next().unwrap_or_default();
    let path = words.next().unwrap_or_default();
    let path = path.split(|&b| b == b'?').next().unwrap_or_default();
    let head = match method {
        b"GET" => false,
        b"HEAD" => true,
        _ => return Route::BadMethod,
    };
    if path == b"/metrics" {
        Route::Metrics { head }
    } else {
        Route::NotFound
    }
}

fn answer(status: u16, reason: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.0 {status} {reason}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_counted_by_name_whatever_their_case() {
        let m = Metrics::default();
        for line in [
            &b"retr 1"[..],
            b"RETR 2",
            b"Top 1 2",
            b"XYZZY",
            b"",
            b"USER\x00x",
        ] {
            m.count_command(line);
        }
        m.count_too_long();
        let text = m.render(&LoopGauges {
            open_connections: 2,
            authenticated: 1,
            queued_jobs: 0,
            guard_tracked: (0, 0),
        });
        for expected in [
            "pop3d_commands_total{command=\"retr\"} 2\n",
            "pop3d_commands_total{command=\"top\"} 1\n",
            "pop3d_commands_total{command=\"other\"} 3\n",
            "pop3d_commands_total{command=\"too_long\"} 1\n",
            "pop3d_connections_open 2\n",
        ] {
            assert!(text.contains(expected), "{expected:?} missing from\n{text}");
        }
    }

    #[test]
    fn auth_latency_is_a_cumulative_histogram() {
        let m = Metrics::default();
        m.login_succeeded(Duration::from_micros(500));
        m.login_failed(Duration::from_millis(30));
        m.login_failed(Duration::from_secs(9));
        let text = m.render(&LoopGauges {
            open_connections: 0,
            authenticated: 0,
            queued_jobs: 0,
            guard_tracked: (0, 0),
        });
        for expected in [
            "pop3d_auth_duration_seconds_bucket{le=\"0.001\"} 1\n",
            "pop3d_auth_duration_seconds_bucket{le=\"0.01\"} 1\n",
            "pop3d_auth_duration_seconds_bucket{le=\"0.05\"} 2\n",
            "pop3d_auth_duration_seconds_bucket{le=\"5\"} 2\n",
            "pop3d_auth_duration_seconds_bucket{le=\"+Inf\"} 3\n",
            "pop3d_auth_duration_seconds_count 3\n",
            "pop3d_logins_total{result=\"ok\"} 1\n",
            "pop3d_logins_total{result=\"failed\"} 2\n",
        ] {
            assert!(text.contains(expected), "{expected:?} missing from\n{text}");
        }
    }

    #[test]
    fn requests_are_routed_by_method_and_path() {
        assert!(matches!(
            route(b"GET /metrics HTTP/1.0\r\n\r\n"),
            Route::Metrics { head: false }
        ));
        assert!(matches!(
            route(b"HEAD /metrics?x=1 HTTP/1.1\r\n"),
            Route::Metrics { head: true }
        ));
        assert!(matches!(route(b"GET / HTTP/1.0\r\n"), Route::NotFound));
        assert!(matches!(
            route(b"POST /metrics HTTP/1.0\r\n"),
            Route::BadMethod
        ));
        assert!(matches!(route(b""), Route::BadMethod));
    }
}
