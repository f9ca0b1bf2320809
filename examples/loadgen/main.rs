//! loadgen: a POP3 load generator that verifies what it measures.
//!
//! ```text
//! cargo run --release --example loadgen -- --server 127.0.0.1:110 \
//!     --users FIXTURE/users.user --mode full -c 128 --duration 10 [--json]
//! cargo run --release --example loadgen -- --server 127.0.0.1:995 --tls \
//!     --ca cert.pem --users FIXTURE/users.user --mode login -c 32
//! ```
//!
//! It drives any POP3 server, plain or over TLS (`--tls` for POP3S,
//! `--stls` for STLS after the greeting; rustls, cargo feature `tls`), with C
//! concurrent connections from one mio event loop per thread (`--threads`,
//! default 1), each connection running one session after another as a user
//! taken from a `user:password` file. Modes:
//!
//! - `full`: USER, PASS, STAT, UIDL, LIST, RETR all (or `--retr K` first),
//!   optional DELE (`--dele`: then RSET, fixture kept; `--dele-commit`),
//!   QUIT.
//! - `login`: connect, USER, PASS, QUIT.
//! - `retr`: log in, LIST, then RETR `--message N` repeatedly (big messages).
//! - `noop`: log in, then NOOP repeatedly (bare turnaround latency).
//! - `idle`: log in C connections, hold them `--duration` seconds, report;
//!   with `--server-pid` it prints the server's memory per connection.
//!
//! Every reply is verified (status lines, CRLF, dot-stuffing, RETR octets
//! against LIST, STAT against LIST, UIDL well-formed) and problems are
//! counted by kind, so a broken server cannot look fast. The exit status is
//! 1 when any error was counted.
//!
//! # Layout
//! - `client.rs`: the per-thread event loop and the session script.
//! - `reply.rs`: reply framing and line-level checks.
//! - `stats.rs`: histograms, counters, JSON helpers.
//! - `procfs.rs`: CPU and memory of this process and of the server.
//! - `tls.rs`: the rustls client configuration and per-connection state
//!   (`tls_disabled.rs` stands in without the `tls` feature).

mod client;
mod procfs;
mod reply;
mod stats;
#[cfg(feature = "tls")]
mod tls;
#[cfg(not(feature = "tls"))]
#[path = "tls_disabled.rs"]
mod tls;

use client::{Credentials, Dele, Mode, Plan, Shared, TlsMode, Worker};
use stats::{json_number, json_string, ms, Op, Stats};
use std::fmt::{self, Write as _};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

const USAGE: &str = "\
usage: loadgen --users FILE [options]
  --server HOST:PORT     POP3 server, default 127.0.0.1:110
  --tls                  implicit TLS (POP3S, port 995): handshake, then greeting
  --stls                 plain greeting, STLS, handshake, then the session over TLS
  --ca FILE              with --tls/--stls: trust the CA or self-signed certificate
                         in this PEM file
  --insecure             with --tls/--stls: accept any certificate (handshake
                         signatures are still checked); for self-signed servers
  --sni NAME             with --tls/--stls: server name sent and checked; default
                         the host of --server if it is a name, else localhost
  --no-resumption        with --tls/--stls: full handshake every session (TLS
                         session resumption is on by default, shared by all
                         connections)
  --users FILE           user:password lines (mkfixture writes ROOT/users.PREFIX)
  --mode MODE            full | login | retr | noop | idle   (default full)
  -c, --connections N    concurrent connections (default 16)
  --threads N            event-loop threads (default 1)
  --duration SECS        run time; in idle mode, how long to hold (default 10)
  --sessions N           stop after N sessions (full, login)
  --requests N           stop after N RETR/NOOP commands (retr, noop)
  --warmup SECS          discard what is measured during the first SECS
  --retr K               full: retrieve only the first K messages
  --dele                 full: DELE retrieved messages, then RSET (fixture kept)
  --dele-commit          full: DELE retrieved messages and QUIT (really deletes)
  --message N            retr: the message number to retrieve (default 1)
  --timeout SECS         longest wait for any reply (default 10)
  --share-users          let concurrent connections log in as the same user
  --login-burst N        idle: logins in flight at once per thread (default 100)
  --ramp-timeout SECS    idle: longest wait for all logins (default 120)
  --server-pid PID       report CPU and memory of PID and its descendants
  --label TEXT           tag carried into the JSON line
  --json                 print one JSON line instead of the text report
  --quiet                no progress line on stderr";

/// Why the run could not start.
#[derive(Debug)]
enum LoadgenError {
    /// A wrong command line; the text says what is wrong.
    Usage(String),
    /// The users file could not be used.
    Users(String),
    /// The OS refused something we need (poll instance, threads).
    Setup(String),
    /// TLS could not be set up (CA file, server name).
    Tls(String),
}

impl fmt::Display for LoadgenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadgenError::Usage(msg) => write!(f, "{msg}\n\n{USAGE}"),
            LoadgenError::Users(msg) => write!(f, "users file: {msg}"),
            LoadgenError::Setup(msg) => write!(f, "{msg}"),
            LoadgenError::Tls(msg) => write!(f, "TLS: {msg}"),
        }
    }
}

/// The command line.
struct Options {
    /// Server address.
    server: SocketAddr,
    /// The host part of --server when it was a name rather than an IP
    /// address: the default TLS server name.
    server_host: Option<String>,
    /// Plain, implicit TLS or STLS.
    tls_mode: TlsMode,
    /// PEM file of certificates to trust (--ca).
    ca_file: Option<PathBuf>,
    /// Accept any server certificate (--insecure).
    insecure: bool,
    /// TLS server name (--sni); None for the default.
    sni: Option<String>,
    /// Resume TLS sessions (on unless --no-resumption).
    resumption: bool,
    /// Path of the user:password file.
    users_file: String,
    /// What each session does.
    mode: Mode,
    /// Concurrent connections, all threads together.
    connections: usize,
    /// Event-loop threads; one drives thousands of connections, more help
    /// only when the load generator itself becomes the bottleneck.
    threads: usize,
    /// Time bound; None when only a count bounds the run.
    duration: Option<Duration>,
    /// Session or command budget.
    count: Option<u64>,
    /// Time measured and then discarded: caches and pools fill up first.
    warmup: Duration,
    /// Full sessions retrieve only the first K messages when set.
    retr_limit: Option<usize>,
    /// What full sessions do after retrieving.
    dele: Dele,
    /// The message retr mode retrieves.
    retr_message: usize,
    /// Longest wait for a reply before the session counts as failed.
    timeout: Duration,
    /// Allow concurrent logins as the same user.
    share_users: bool,
    /// Idle mode: logins in flight at once per thread.
    login_burst: usize,
    /// Idle mode: longest wait for all connections to log in.
    ramp_timeout: Duration,
    /// Server process (tree) whose CPU and memory are reported.
    server_pid: Option<u32>,
    /// Free text carried into the JSON line, to tell runs apart.
    label: String,
    /// One JSON line instead of the text report, for scripts.
    json: bool,
    /// No progress line, for scripts.
    quiet: bool,
}

fn parse_seconds(flag: &str, value: &str) -> Result<Duration, LoadgenError> {
    value
        .trim_end_matches('s')
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| {
            LoadgenError::Usage(format!("{flag} {value}: expected seconds, like 10 or 2.5"))
        })
}

fn parse_number<T: std::str::FromStr>(flag: &str, value: &str) -> Result<T, LoadgenError> {
    value
        .parse()
        .map_err(|_| LoadgenError::Usage(format!("{flag} {value}: expected a number")))
}

fn parse_args(args: impl Iterator<Item = String>) -> Result<Options, LoadgenError> {
    let mut options = Options {
        server: SocketAddr::from(([127, 0, 0, 1], 110)),
        server_host: None,
        tls_mode: TlsMode::None,
        ca_file: None,
        insecure: false,
        sni: None,
        resumption: true,
        users_file: String::new(),
        mode: Mode::Full,
        connections: 16,
        threads: 1,
        duration: None,
        count: None,
        warmup: Duration::ZERO,
        retr_limit: None,
        dele: Dele::Off,
        retr_message: 1,
        timeout: Duration::from_secs(10),
        share_users: false,
        login_burst: 100,
        ramp_timeout: Duration::from_secs(120),
        server_pid: None,
        label: String::new(),
        json: false,
        quiet: false,
    };
    let mut sessions = None;
    let mut requests = None;
    let mut tls_flags: Vec<String> = Vec::new();
    let mut args = args.peekable();
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--dele" => options.dele = Dele::ThenRset,
            "--dele-commit" => options.dele = Dele::Commit,
            "--share-users" => options.share_users = true,
            "--json" => options.json = true,
            "--quiet" => options.quiet = true,
            "--tls" | "--stls" => {
                let mode = if flag == "--tls" {
                    TlsMode::Implicit
                } else {
                    TlsMode::Stls
                };
                if options.tls_mode != TlsMode::None && options.tls_mode != mode {
                    return Err(LoadgenError::Usage(
                        "--tls and --stls exclude each other: --tls for a POP3S port (995), \
                         --stls for a plain port that offers STLS"
                            .into(),
                    ));
                }
                options.tls_mode = mode;
                tls_flags.push(flag);
            }
            "--insecure" => {
                options.insecure = true;
                tls_flags.push(flag);
            }
            "--no-resumption" => {
                options.resumption = false;
                tls_flags.push(flag);
            }
            "-h" | "--help" => {
                return Err(LoadgenError::Usage("loadgen drives a POP3 server".into()))
            }
            _ => {
                let value = args
                    .next()
                    .ok_or_else(|| LoadgenError::Usage(format!("{flag} needs a value")))?;
                match flag.as_str() {
                    "--server" => (options.server, options.server_host) = parse_server(&value)?,
                    "--ca" => {
                        options.ca_file = Some(PathBuf::from(value));
                        tls_flags.push(flag);
                    }
                    "--sni" => {
                        options.sni = Some(value);
                        tls_flags.push(flag);
                    }
                    "--users" => options.users_file = value,
                    "--mode" => {
                        options.mode = match value.as_str() {
                            "full" => Mode::Full,
                            "login" => Mode::Login,
                            "retr" => Mode::Retr,
                            "noop" => Mode::Noop,
                            "idle" => Mode::Idle,
                            _ => {
                                return Err(LoadgenError::Usage(format!(
                                    "--mode {value}: expected full, login, retr, noop or idle"
                                )))
                            }
                        }
                    }
                    "-c" | "--connections" => options.connections = parse_number(&flag, &value)?,
                    "--threads" => options.threads = parse_number(&flag, &value)?,
                    "--duration" => options.duration = Some(parse_seconds(&flag, &value)?),
                    "--sessions" => sessions = Some(parse_number(&flag, &value)?),
                    "--requests" => requests = Some(parse_number(&flag, &value)?),
                    "--warmup" => options.warmup = parse_seconds(&flag, &value)?,
                    "--retr" => options.retr_limit = Some(parse_number(&flag, &value)?),
                    "--message" => options.retr_message = parse_number(&flag, &value)?,
                    "--timeout" => options.timeout = parse_seconds(&flag, &value)?,
                    "--login-burst" => options.login_burst = parse_number(&flag, &value)?,
                    "--ramp-timeout" => options.ramp_timeout = parse_seconds(&flag, &value)?,
                    "--server-pid" => options.server_pid = Some(parse_number(&flag, &value)?),
                    "--label" => options.label = value,
                    _ => return Err(LoadgenError::Usage(format!("unknown option {flag}"))),
                }
            }
        }
    }
    if options.users_file.is_empty() {
        return Err(LoadgenError::Usage("--users FILE is required".into()));
    }
    check_tls_flags(&options, &tls_flags)?;
    if options.connections == 0 || options.threads == 0 {
        return Err(LoadgenError::Usage(
            "--connections and --threads must be at least 1".into(),
        ));
    }
    options.threads = options.threads.min(options.connections);
    if options.retr_message == 0 {
        return Err(LoadgenError::Usage("--message counts from 1".into()));
    }
    options.count = match options.mode {
        Mode::Full | Mode::Login => {
            if requests.is_some() {
                return Err(LoadgenError::Usage(
                    "--requests is for retr and noop modes; use --sessions".into(),
                ));
            }
            sessions
        }
        Mode::Retr | Mode::Noop => {
            if sessions.is_some() {
                return Err(LoadgenError::Usage(
                    "--sessions is for full and login modes; use --requests".into(),
                ));
            }
            requests
        }
        Mode::Idle => {
            if sessions.is_some() || requests.is_some() {
                return Err(LoadgenError::Usage(
                    "idle mode is bounded by --duration only".into(),
                ));
            }
            None
        }
    };
    if options.duration.is_none() && (options.count.is_none() || options.mode == Mode::Idle) {
        options.duration = Some(Duration::from_secs(10));
    }
    Ok(options)
}

/// `--server`: IP:PORT as is, or HOST:PORT resolved now (the first
/// address); the host name is kept as the default TLS server name.
fn parse_server(value: &str) -> Result<(SocketAddr, Option<String>), LoadgenError> {
    if let Ok(addr) = value.parse() {
        return Ok((addr, None));
    }
    let wrong = || {
        LoadgenError::Usage(format!(
            "--server {value}: expected HOST:PORT or IP:PORT, like 127.0.0.1:110 or localhost:995"
        ))
    };
    let (host, _port) = value.rsplit_once(':').ok_or_else(wrong)?;
    if host.is_empty() {
        return Err(wrong());
    }
    let addr = value
        .to_socket_addrs()
        .map_err(|e| LoadgenError::Usage(format!("--server {value}: cannot resolve it: {e}")))?
        .next()
        .ok_or_else(|| LoadgenError::Usage(format!("--server {value}: no address for it")))?;
    Ok((addr, Some(host.to_string())))
}

/// The TLS flags need a TLS build, one of --tls/--stls, and exactly one
/// source of trust.
fn check_tls_flags(options: &Options, tls_flags: &[String]) -> Result<(), LoadgenError> {
    if tls_flags.is_empty() {
        return Ok(());
    }
    if !tls::BUILT {
        return Err(LoadgenError::Usage(format!(
            "{}: this loadgen was built without TLS (cargo feature `tls` is off); \
             rebuild it without --no-default-features",
            tls_flags.join(" ")
        )));
    }
    if options.tls_mode == TlsMode::None {
        return Err(LoadgenError::Usage(format!(
            "{} only make sense with --tls or --stls",
            tls_flags.join(" ")
        )));
    }
    match (&options.ca_file, options.insecure) {
        (Some(_), true) => Err(LoadgenError::Usage(
            "--ca and --insecure exclude each other: --ca checks the certificate, --insecure does not"
                .into(),
        )),
        (None, false) => Err(LoadgenError::Usage(
            "TLS needs --ca FILE (the server's CA or self-signed certificate, PEM) \
             or --insecure (accept any certificate)"
                .into(),
        )),
        _ => Ok(()),
    }
}

/// The TLS server name: --sni, else the host of --server when it was a
/// name, else "localhost" (what a self-signed test certificate names).
fn server_name(options: &Options) -> String {
    options
        .sni
        .clone()
        .or_else(|| options.server_host.clone())
        .unwrap_or_else(|| "localhost".to_string())
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Full => "full",
        Mode::Login => "login",
        Mode::Retr => "retr",
        Mode::Noop => "noop",
        Mode::Idle => "idle",
    }
}

fn read_users(path: &str) -> Result<Vec<Credentials>, LoadgenError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        LoadgenError::Users(format!(
            "cannot read {path}: {e} (mkfixture writes ROOT/users.PREFIX)"
        ))
    })?;
    let mut users = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((user, pass)) = line.split_once(':') else {
            return Err(LoadgenError::Users(format!(
                "{path} line {}: expected user:password",
                number + 1
            )));
        };
        if user.is_empty() || user.contains([' ', '\t']) {
            return Err(LoadgenError::Users(format!(
                "{path} line {}: a POP3 user name cannot be empty or contain spaces",
                number + 1
            )));
        }
        users.push(Credentials {
            user_command: format!("USER {user}\r\n").into_bytes(),
            pass_command: format!("PASS {pass}\r\n").into_bytes(),
        });
    }
    if users.is_empty() {
        return Err(LoadgenError::Users(format!("{path} has no users")));
    }
    Ok(users)
}

/// Numbers with k/M suffixes for the progress line.
fn short(value: f64) -> String {
    if value >= 1e6 {
        format!("{:.2}M", value / 1e6)
    } else if value >= 1e4 {
        format!("{:.1}k", value / 1e3)
    } else {
        format!("{value:.0}")
    }
}

/// Prints a progress line every second until `done` says stop.
struct Progress {
    /// Print nothing (the counters still advance).
    quiet: bool,
    /// Start of the run, for the elapsed-time column.
    start: Instant,
    /// Time of the previous line: rates are per interval, not cumulative,
    /// so a stall shows at once.
    last: Instant,
    /// Counters at the previous line.
    last_sessions: u64,
    last_commands: u64,
    last_rx: u64,
}

impl Progress {
    fn tick(&mut self, shared: &Shared, idle_target: Option<usize>) {
        let now = Instant::now();
        let interval = now.duration_since(self.last).as_secs_f64().max(1e-9);
        let sessions = shared.sessions.load(Relaxed);
        let commands = shared.commands.load(Relaxed);
        let rx = shared.rx_bytes.load(Relaxed);
        if !self.quiet {
            let mut line = format!(
                "[{:6.1}s] sessions {} ({}/s)  commands {} ({}/s)  rx {:.1} MB/s  errors {}  open {}",
                now.duration_since(self.start).as_secs_f64(),
                short(sessions as f64),
                short((sessions - self.last_sessions) as f64 / interval),
                short(commands as f64),
                short((commands - self.last_commands) as f64 / interval),
                (rx - self.last_rx) as f64 / interval / 1e6,
                shared.errors.load(Relaxed),
                shared.open.load(Relaxed),
            );
            if let Some(target) = idle_target {
                let _ = write!(
                    line,
                    "  idle {}/{target} failed {}",
                    shared.idle_ready.load(Relaxed),
                    shared.idle_failed.load(Relaxed)
                );
            }
            eprintln!("{line}");
        }
        self.last = now;
        self.last_sessions = sessions;
        self.last_commands = commands;
        self.last_rx = rx;
    }
}

/// What the main thread learned besides the workers' stats.
struct RunInfo {
    /// Measured wall time (after warm-up; the hold time in idle mode).
    elapsed: Duration,
    /// Wall time over which CPU seconds were counted: the measured part
    /// of the run, or the whole run in idle mode (logins cost CPU too).
    cpu_window: Duration,
    /// Host load average at the end: other work on the machine skews
    /// every figure, so the report says how busy it was.
    host_load: Option<f64>,
    /// This process's CPU seconds over `cpu_window`: the load generator
    /// must not be the bottleneck, and this shows whether it was.
    loadgen_cpu_s: Option<f64>,
    /// The server at the start of the window (before any connection in
    /// idle mode).
    server_before: Option<procfs::TreeSample>,
    /// The server at the end (with every idle connection open).
    server_after: Option<procfs::TreeSample>,
    /// Idle mode: connections logged in, failed, and how long it took.
    idle: Option<(u64, u64, Duration)>,
}

/// Sleeps up to `until`, ticking progress every second; returns early when
/// `done()` holds.
fn wait_until(
    until: Instant,
    progress: &mut Progress,
    shared: &Shared,
    idle: Option<usize>,
    done: &dyn Fn() -> bool,
) {
    loop {
        let now = Instant::now();
        if now >= until || done() {
            return;
        }
        let next_tick = progress.last + Duration::from_secs(1);
        if now >= next_tick {
            progress.tick(shared, idle);
        }
        std::thread::sleep(Duration::from_millis(20).min(until - now));
    }
}

fn run(options: &Options) -> Result<(Stats, RunInfo), LoadgenError> {
    let users = read_users(&options.users_file)?;
    let needs_distinct = !options.share_users;
    if needs_distinct && users.len() < options.connections {
        return Err(LoadgenError::Usage(format!(
            "{} connections need {} distinct users (servers may lock a maildrop per user) but {} has {}; \
             make more users or pass --share-users",
            options.connections,
            options.connections,
            options.users_file,
            users.len()
        )));
    }
    let tls = match options.tls_mode {
        TlsMode::None => None,
        TlsMode::Implicit | TlsMode::Stls => Some(
            tls::Connector::new(&tls::Settings {
                ca_file: options.ca_file.clone(),
                insecure: options.insecure,
                server_name: server_name(options),
                resumption: options.resumption,
            })
            .map_err(LoadgenError::Tls)?,
        ),
    };
    let plan = Plan {
        mode: options.mode,
        addr: options.server,
        tls_mode: options.tls_mode,
        tls,
        users,
        retr_limit: options.retr_limit,
        dele: options.dele,
        retr_message: options.retr_message,
        timeout: options.timeout,
        share_users: options.share_users,
        login_burst: options.login_burst,
    };
    let shared = Shared::new(options.count);
    let threads = options.threads;
    let mut server_before = options.server_pid.and_then(procfs::sample_tree);
    if options.server_pid.is_some() && server_before.is_none() {
        return Err(LoadgenError::Setup(format!(
            "--server-pid {}: no such process readable in /proc",
            options.server_pid.unwrap_or(0)
        )));
    }
    let mut cpu_before = procfs::cpu_seconds("self");
    let start = Instant::now();
    let idle_target = (options.mode == Mode::Idle).then_some(options.connections);
    let mut progress = Progress {
        quiet: options.quiet,
        start,
        last: start,
        last_sessions: 0,
        last_commands: 0,
        last_rx: 0,
    };
    let mut server_after = None;
    let mut idle = None;
    let mut measure_start = start;
    let results: Vec<std::io::Result<Stats>> = std::thread::scope(|scope| {
        let mut handles = Vec::new();
        for t in 0..threads {
            let slots =
                options.connections / threads + usize::from(t < options.connections % threads);
            let my_users: Vec<usize> = (t..plan.users.len()).step_by(threads).collect();
            let (plan, shared) = (&plan, &shared);
            let handle = std::thread::Builder::new()
                .name(format!("loadgen-{t}"))
                .spawn_scoped(scope, move || {
                    Worker::new(plan, shared, slots, my_users)?.run()
                });
            match handle {
                Ok(handle) => handles.push(handle),
                Err(e) => {
                    shared.stop.store(true, Relaxed);
                    return vec![Err(e)];
                }
            }
        }
        let all_done = || handles.iter().all(|h| h.is_finished());
        let far = start + Duration::from_secs(86_400 * 365);
        if options.mode == Mode::Idle {
            let target = options.connections as u64;
            let ramp_done = || {
                shared.idle_ready.load(Relaxed) + shared.idle_failed.load(Relaxed) >= target
                    || all_done()
            };
            wait_until(
                start + options.ramp_timeout,
                &mut progress,
                &shared,
                idle_target,
                &ramp_done,
            );
            let ramp = start.elapsed();
            measure_start = Instant::now();
            let hold = options.duration.unwrap_or(Duration::ZERO);
            wait_until(
                measure_start + hold,
                &mut progress,
                &shared,
                idle_target,
                &all_done,
            );
            server_after = options.server_pid.and_then(procfs::sample_tree);
            idle = Some((
                shared.idle_ready.load(Relaxed),
                shared.idle_failed.load(Relaxed),
                ramp,
            ));
        } else {
            if !options.warmup.is_zero() {
                wait_until(
                    start + options.warmup,
                    &mut progress,
                    &shared,
                    None,
                    &all_done,
                );
                shared.epoch.fetch_add(1, Relaxed);
                measure_start = Instant::now();
                server_before = options.server_pid.and_then(procfs::sample_tree);
                cpu_before = procfs::cpu_seconds("self");
            }
            let end = options.duration.map_or(far, |d| measure_start + d);
            wait_until(end, &mut progress, &shared, None, &all_done);
        }
        shared.stop.store(true, Relaxed);
        // In-flight sessions finish (each reply is bounded by --timeout).
        wait_until(far, &mut progress, &shared, idle_target, &all_done);
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("a client thread panicked")))
            })
            .collect()
    });
    let elapsed = measure_start.elapsed();
    let cpu_window = if options.mode == Mode::Idle {
        start.elapsed()
    } else {
        elapsed
    };
    if options.mode != Mode::Idle {
        server_after = options.server_pid.and_then(procfs::sample_tree);
    }
    let loadgen_cpu_s = match (cpu_before, procfs::cpu_seconds("self")) {
        (Some(before), Some(after)) => Some(after - before),
        _ => None,
    };
    let mut total = Stats::new();
    for result in results {
        let stats = result.map_err(|e| LoadgenError::Setup(format!("client thread: {e}")))?;
        total.merge(&stats);
    }
    Ok((
        total,
        RunInfo {
            elapsed,
            cpu_window,
            host_load: procfs::load_average(),
            loadgen_cpu_s,
            server_before,
            server_after,
            idle,
        },
    ))
}

fn rate(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(1e-9)
}

fn text_report(options: &Options, stats: &Stats, info: &RunInfo) -> String {
    let mut out = String::new();
    let secs = info.elapsed.as_secs_f64();
    let _ = writeln!(
        out,
        "loadgen: mode {} server {} tls {} connections {} threads {} measured {:.2}s{}",
        mode_name(options.mode),
        options.server,
        options.tls_mode.name(),
        options.connections,
        options.threads,
        secs,
        if options.label.is_empty() {
            String::new()
        } else {
            format!(" ({})", options.label)
        }
    );
    if options.tls_mode != TlsMode::None {
        let _ = writeln!(
            out,
            "tls:       {}; server name {}, {}; {} handshakes, {} resumed (resumption {})",
            stats
                .tls_protocol
                .as_deref()
                .unwrap_or("no handshake completed"),
            server_name(options),
            if options.insecure {
                "any certificate accepted (--insecure)".to_string()
            } else {
                format!(
                    "certificate checked against {}",
                    options
                        .ca_file
                        .as_ref()
                        .map_or(String::new(), |p| p.display().to_string())
                )
            },
            stats.tls_handshakes,
            stats.tls_resumed,
            if options.resumption { "on" } else { "off" }
        );
    }
    if let Some((ready, failed, ramp)) = info.idle {
        let _ = writeln!(
            out,
            "idle:      {ready} connections logged in and held, {failed} failed; ramp {:.2}s ({:.0} logins/s)",
            ramp.as_secs_f64(),
            rate(ready, ramp)
        );
    }
    let _ = writeln!(
        out,
        "sessions:  {} ok, {} failed, {:.1}/s",
        stats.sessions_ok,
        stats.sessions_failed,
        rate(stats.sessions_ok, info.elapsed)
    );
    let _ = writeln!(
        out,
        "commands:  {}, {:.1}/s",
        stats.commands,
        rate(stats.commands, info.elapsed)
    );
    let _ = writeln!(
        out,
        "received:  {:.1} MB, {:.2} MB/s (RETR bodies {:.2} MB/s; MB = 10^6 bytes)",
        stats.rx_bytes as f64 / 1e6,
        rate(stats.rx_bytes, info.elapsed) / 1e6,
        rate(stats.retr_octets, info.elapsed) / 1e6
    );
    let _ = writeln!(
        out,
        "latency ms        count        p50        p99        max"
    );
    for op in Op::ALL {
        let h = stats.latency(op);
        if h.count() > 0 {
            let _ = writeln!(
                out,
                "  {:<12} {:>10} {:>10.3} {:>10.3} {:>10.3}",
                op.name(),
                h.count(),
                ms(h.quantile(0.5)),
                ms(h.quantile(0.99)),
                ms(h.max())
            );
        }
    }
    if stats.errors.is_empty() {
        let _ = writeln!(out, "errors:    none");
    } else {
        let list: Vec<String> = stats
            .errors
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let _ = writeln!(
            out,
            "errors:    {} ({})",
            stats.error_total(),
            list.join(", ")
        );
        for (kind, text) in &stats.samples {
            let _ = writeln!(out, "  first {kind}: {text}");
        }
    }
    let cpu_line = |cpu: f64| {
        format!(
            "{cpu:.2}s ({:.0}% of one core over {:.1}s)",
            100.0 * cpu / info.cpu_window.as_secs_f64().max(1e-9),
            info.cpu_window.as_secs_f64()
        )
    };
    let mut cpu = format!(
        "cpu:       loadgen {}",
        info.loadgen_cpu_s.map_or("unknown".into(), cpu_line)
    );
    if let (Some(before), Some(after)) = (info.server_before, info.server_after) {
        let _ = write!(cpu, ", server {}", cpu_line(after.cpu_s - before.cpu_s));
    }
    if let Some(load) = info.host_load {
        let _ = write!(cpu, "; host load average {load:.2}");
    }
    let _ = writeln!(out, "{cpu}");
    if let (Some(before), Some(after)) = (info.server_before, info.server_after) {
        let _ = writeln!(
            out,
            "server:    {} -> {} processes; RSS {} -> {} KiB; PSS {} -> {} KiB",
            before.processes,
            after.processes,
            before.rss_kib,
            after.rss_kib,
            before.pss_kib,
            after.pss_kib
        );
        if let Some((ready, _, _)) = info.idle {
            if ready > 0 {
                let per = |b: u64, a: u64| (a as f64 - b as f64) / ready as f64;
                let _ = writeln!(
                    out,
                    "memory:    {:.1} KiB RSS, {:.1} KiB PSS per idle connection",
                    per(before.rss_kib, after.rss_kib),
                    per(before.pss_kib, after.pss_kib)
                );
            }
        }
    }
    out
}

fn json_report(options: &Options, stats: &Stats, info: &RunInfo) -> String {
    let mut out = String::from("{");
    let field = |out: &mut String, name: &str, value: String| {
        if !out.ends_with('{') {
            out.push(',');
        }
        let _ = write!(out, "{}:{}", json_string(name), value);
    };
    let num = |v: f64| json_number(v);
    field(&mut out, "label", json_string(&options.label));
    field(&mut out, "mode", json_string(mode_name(options.mode)));
    field(&mut out, "server", json_string(&options.server.to_string()));
    field(&mut out, "tls", json_string(options.tls_mode.name()));
    if options.tls_mode != TlsMode::None {
        field(
            &mut out,
            "tls_detail",
            format!(
                "{{\"protocol\":{},\"server_name\":{},\"verify\":{},\"resumption\":{},\
                 \"handshakes\":{},\"resumed\":{}}}",
                stats
                    .tls_protocol
                    .as_deref()
                    .map_or("null".into(), json_string),
                json_string(&server_name(options)),
                json_string(if options.insecure { "insecure" } else { "ca" }),
                options.resumption,
                stats.tls_handshakes,
                stats.tls_resumed
            ),
        );
    }
    field(&mut out, "connections", options.connections.to_string());
    field(&mut out, "threads", options.threads.to_string());
    field(&mut out, "elapsed_s", num(info.elapsed.as_secs_f64()));
    field(&mut out, "sessions_ok", stats.sessions_ok.to_string());
    field(
        &mut out,
        "sessions_failed",
        stats.sessions_failed.to_string(),
    );
    field(
        &mut out,
        "sessions_per_s",
        num(rate(stats.sessions_ok, info.elapsed)),
    );
    field(&mut out, "commands", stats.commands.to_string());
    field(
        &mut out,
        "commands_per_s",
        num(rate(stats.commands, info.elapsed)),
    );
    field(&mut out, "rx_bytes", stats.rx_bytes.to_string());
    field(
        &mut out,
        "rx_mb_per_s",
        num(rate(stats.rx_bytes, info.elapsed) / 1e6),
    );
    field(
        &mut out,
        "retr_mb_per_s",
        num(rate(stats.retr_octets, info.elapsed) / 1e6),
    );
    field(&mut out, "errors_total", stats.error_total().to_string());
    let errors: Vec<String> = stats
        .errors
        .iter()
        .map(|(k, v)| format!("{}:{v}", json_string(k)))
        .collect();
    field(&mut out, "errors", format!("{{{}}}", errors.join(",")));
    let samples: Vec<String> = stats
        .samples
        .iter()
        .map(|(k, v)| format!("{}:{}", json_string(k), json_string(v)))
        .collect();
    field(
        &mut out,
        "error_samples",
        format!("{{{}}}", samples.join(",")),
    );
    let latencies: Vec<String> = Op::ALL
        .iter()
        .filter(|op| stats.latency(**op).count() > 0)
        .map(|op| {
            let h = stats.latency(*op);
            format!(
                "{}:{{\"count\":{},\"p50\":{},\"p99\":{},\"max\":{}}}",
                json_string(op.name()),
                h.count(),
                num(ms(h.quantile(0.5))),
                num(ms(h.quantile(0.99))),
                num(ms(h.max()))
            )
        })
        .collect();
    field(
        &mut out,
        "latency_ms",
        format!("{{{}}}", latencies.join(",")),
    );
    let server_cpu = match (info.server_before, info.server_after) {
        (Some(b), Some(a)) => num(a.cpu_s - b.cpu_s),
        _ => "null".into(),
    };
    field(
        &mut out,
        "cpu_s",
        format!(
            "{{\"loadgen\":{},\"server\":{server_cpu},\"window_s\":{}}}",
            info.loadgen_cpu_s.map_or("null".into(), num),
            num(info.cpu_window.as_secs_f64())
        ),
    );
    field(
        &mut out,
        "host_loadavg_1m",
        info.host_load.map_or("null".into(), num),
    );
    if let Some((ready, failed, ramp)) = info.idle {
        field(
            &mut out,
            "idle",
            format!(
                "{{\"ready\":{ready},\"failed\":{failed},\"ramp_s\":{}}}",
                num(ramp.as_secs_f64())
            ),
        );
    }
    if let (Some(b), Some(a)) = (info.server_before, info.server_after) {
        let ready = info.idle.map_or(0, |(ready, _, _)| ready);
        let per = |before: u64, after: u64| {
            if ready == 0 {
                "null".to_string()
            } else {
                num((after as f64 - before as f64) / ready as f64)
            }
        };
        field(
            &mut out,
            "server_memory_kib",
            format!(
                "{{\"processes_before\":{},\"processes_after\":{},\"rss_before\":{},\"rss_after\":{},\
                 \"pss_before\":{},\"pss_after\":{},\"rss_per_conn\":{},\"pss_per_conn\":{}}}",
                b.processes,
                a.processes,
                b.rss_kib,
                a.rss_kib,
                b.pss_kib,
                a.pss_kib,
                per(b.rss_kib, a.rss_kib),
                per(b.pss_kib, a.pss_kib)
            ),
        );
    }
    out.push('}');
    out
}

fn main() -> ExitCode {
    let options = match parse_args(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(e) => {
            eprintln!("loadgen: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&options) {
        Ok((stats, info)) => {
            if options.json {
                println!("{}", json_report(&options, &stats, &info));
            } else {
                print!("{}", text_report(&options, &stats, &info));
            }
            if stats.error_total() > 0 {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> impl Iterator<Item = String> + '_ {
        line.split_whitespace().map(String::from)
    }

    #[test]
    fn defaults_and_bounds() {
        let o = parse_args(args("--users u")).unwrap();
        assert_eq!(o.duration, Some(Duration::from_secs(10)));
        let o = parse_args(args("--users u --sessions 5")).unwrap();
        assert_eq!((o.duration, o.count), (None, Some(5)));
        assert!(parse_args(args("--users u --mode retr --sessions 5")).is_err());
        assert!(parse_args(args("--users u --mode nope")).is_err());
        assert!(parse_args(args("--mode full")).is_err());
        let o = parse_args(args("--users u -c 4 --threads 9 --duration 2.5s")).unwrap();
        assert_eq!(
            (o.threads, o.duration),
            (4, Some(Duration::from_millis(2500)))
        );
    }

    fn usage_error(line: &str) -> String {
        match parse_args(args(line)) {
            Err(LoadgenError::Usage(msg)) => msg,
            Err(other) => panic!("{line}: expected a usage error, got {other}"),
            Ok(_) => panic!("{line}: expected a usage error"),
        }
    }

    #[test]
    fn plain_by_default() {
        let o = parse_args(args("--users u")).unwrap();
        assert_eq!(o.tls_mode, TlsMode::None);
        assert!(o.resumption);
    }

    #[cfg(feature = "tls")]
    #[test]
    fn tls_flags() {
        let o = parse_args(args("--users u --tls --ca c.pem")).unwrap();
        assert_eq!(o.tls_mode, TlsMode::Implicit);
        assert_eq!(o.ca_file, Some(PathBuf::from("c.pem")));
        assert_eq!(server_name(&o), "localhost");
        let o = parse_args(args(
            "--users u --stls --insecure --sni mail.example.org --no-resumption",
        ))
        .unwrap();
        assert_eq!(o.tls_mode, TlsMode::Stls);
        assert!(o.insecure && !o.resumption);
        assert_eq!(server_name(&o), "mail.example.org");
        let o = parse_args(args("--users u --server localhost:995 --tls --insecure")).unwrap();
        assert_eq!(o.server_host.as_deref(), Some("localhost"));
        assert_eq!(o.server.port(), 995);
        assert_eq!(server_name(&o), "localhost");

        assert!(usage_error("--users u --tls --stls --insecure").contains("exclude"));
        assert!(usage_error("--users u --tls").contains("--ca FILE"));
        assert!(usage_error("--users u --tls --ca c --insecure").contains("exclude"));
        assert!(usage_error("--users u --ca c.pem").contains("only make sense with --tls"));
        assert!(usage_error("--users u --insecure").contains("only make sense"));
    }

    #[cfg(not(feature = "tls"))]
    #[test]
    fn tls_flags_without_tls() {
        for line in [
            "--users u --tls --ca c.pem",
            "--users u --stls --insecure",
            "--users u --insecure",
        ] {
            assert!(usage_error(line).contains("built without TLS"), "{line}");
        }
    }

    #[cfg(feature = "tls")]
    #[test]
    fn ca_file_problems_are_explained() {
        let dir = std::env::temp_dir().join(format!("loadgen-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let settings = |ca: PathBuf| tls::Settings {
            ca_file: Some(ca),
            insecure: false,
            server_name: "localhost".into(),
            resumption: true,
        };
        let err = tls::Connector::new(&settings(empty.clone())).err().unwrap();
        assert!(err.contains("no certificate"), "{err}");
        let err = tls::Connector::new(&settings(dir.join("missing.pem")))
            .err()
            .unwrap();
        assert!(err.contains("missing.pem"), "{err}");
        let bad_name = tls::Settings {
            server_name: "not a name".into(),
            ..settings(empty)
        };
        let err = tls::Connector::new(&bad_name).err().unwrap();
        assert!(err.contains("--sni"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
