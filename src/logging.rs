//! The log: where lines go, what they look like, and a guard against floods.
//!
//! pop3d logs through the `log` crate; this module is the one logger behind
//! it, small on purpose (no logging framework to build or audit).
//!
//! - **Targets.** [`LogTarget::Stderr`] writes one line per record. When
//!   stderr is connected to the systemd journal (`JOURNAL_STREAM` names the
//!   very file stderr is), each line starts with an sd-daemon priority prefix
//!   such as `<6>` and carries no timestamp, since the journal stamps and
//!   grades lines itself; otherwise a line is `TIMESTAMP LEVEL message` with
//!   a UTC timestamp. [`LogTarget::Syslog`] sends RFC 3164 datagrams
//!   `<PRI>pop3d[PID]: message` with facility `mail` to the local syslog
//!   socket (`/dev/log`), which rsyslog, syslog-ng and journald all read.
//!   [`LogTarget::File`] appends `TIMESTAMP LEVEL message` lines to a file
//!   (`--log-file PATH`); [`reopen`] (SIGUSR1) opens the path again, so
//!   logrotate can rename the file and have new lines go to a fresh one.
//! - **Levels.** A filter in the `RUST_LOG` style: a level (`info`), or
//!   `module=level` rules (`info,pop3d::server=debug`); the longest matching
//!   module prefix wins.
//! - **Flood guard.** A client can make the server log (every failed login
//!   is a line), so an attacker could otherwise fill the disk. Lines are
//!   grouped by *kind* (level, module, and the leading words of the message,
//!   e.g. `login failed`); at most [`LogSettings::max_per_kind_per_sec`] of a
//!   kind are written per second and the rest are counted, then reported in
//!   one `suppressed` line once that second is over.
//! - **Hygiene.** Control characters in a message (a CR or LF in a user name,
//!   say) are escaped, so one record is always one line and a client cannot
//!   forge log lines.

use log::{Level, LevelFilter, Log, Metadata, Record};
use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The local syslog socket on every Linux and BSD system.
pub const DEFAULT_SYSLOG_SOCKET: &str = "/dev/log";

/// Lines of one kind written per second before the rest are counted instead.
/// Far above what a healthy small server logs of any one kind, low enough
/// that a password-guessing flood costs kilobytes of log per second, not
/// megabytes.
pub const DEFAULT_MAX_PER_KIND_PER_SEC: u32 = 100;

/// The syslog facility `mail` (RFC 3164 section 4.1.1), as mail servers use.
const FACILITY_MAIL: u8 = 2;

/// Longest message sent to syslog; longer ones are cut. Syslog daemons
/// commonly drop or truncate datagrams beyond 8 KiB anyway.
const MAX_SYSLOG_MESSAGE: usize = 8 * 1024;

/// Kinds of lines tracked at once by the flood guard; lines of further kinds
/// share one overflow budget, so the guard's memory stays bounded whatever
/// the messages say.
const MAX_TRACKED_KINDS: usize = 1024;

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTarget {
    /// Standard error, one line per record (journald-aware).
    Stderr,
    /// The local syslog daemon, facility `mail`.
    Syslog,
    /// A file, appended to; the path is [`LogSettings::file`].
    File,
}

impl LogTarget {
    /// Reads `stderr` or `syslog` as written on the command line.
    pub fn parse(name: &str) -> Option<LogTarget> {
        match name {
            "stderr" => Some(LogTarget::Stderr),
            "syslog" => Some(LogTarget::Syslog),
            _ => None,
        }
    }
}

/// How to set up the logger.
#[derive(Debug, Clone)]
pub struct LogSettings {
    /// Where lines go.
    pub target: LogTarget,
    /// Which lines: a `RUST_LOG`-style filter such as `info` or
    /// `warn,pop3d::protocol=info`.
    pub filter: String,
    /// The syslog socket; [`DEFAULT_SYSLOG_SOCKET`] except in tests, which
    /// bind their own.
    pub syslog_socket: PathBuf,
    /// The flood guard's budget per kind of line and second.
    pub max_per_kind_per_sec: u32,
    /// The log file for [`LogTarget::File`] (`--log-file`); unused by the
    /// other targets.
    pub file: PathBuf,
}

impl LogSettings {
    /// `target` with the default filter `info` and the default socket and
    /// budget.
    pub fn new(target: LogTarget) -> LogSettings {
        LogSettings {
            target,
            filter: "info".to_string(),
            syslog_socket: PathBuf::from(DEFAULT_SYSLOG_SOCKET),
            max_per_kind_per_sec: DEFAULT_MAX_PER_KIND_PER_SEC,
            file: PathBuf::new(),
        }
    }
}

/// What [`init`] has to tell the operator once logging works.
#[derive(Debug, Default)]
pub struct InitReport {
    /// Parts of the filter that were not understood and were ignored.
    pub ignored_filter_parts: Vec<String>,
    /// Why the syslog socket could not be reached at start, if it could not;
    /// lines are dropped until it can (the logger keeps trying).
    pub syslog_unreachable: Option<String>,
    /// Why the log file could not be opened at start, if it could not;
    /// lines are dropped until a [`reopen`] succeeds.
    pub file_unwritable: Option<String>,
}

/// The installed logger, for [`reopen`].
static INSTALLED: OnceLock<&'static Logger> = OnceLock::new();

/// Installs the logger. Call once, before anything logs; a second call
/// fails with `Err` and changes nothing.
pub fn init(settings: &LogSettings) -> Result<InitReport, log::SetLoggerError> {
    let (filter, ignored) = Filter::parse(&settings.filter);
    let mut report = InitReport {
        ignored_filter_parts: ignored,
        syslog_unreachable: None,
        file_unwritable: None,
    };
    let sink = match settings.target {
        LogTarget::Stderr => Sink::Stderr {
            journal: stderr_is_journal(),
        },
        LogTarget::Syslog => {
            let mut syslog = Syslog::new(settings.syslog_socket.clone());
            if let Err(e) = syslog.connect() {
                report.syslog_unreachable =
                    Some(format!("{}: {e}", settings.syslog_socket.display()));
            }
            Sink::Syslog(syslog)
        }
        LogTarget::File => {
            let file = open_log_file(&settings.file);
            if let Err(e) = &file {
                report.file_unwritable = Some(format!("{}: {e}", settings.file.display()));
            }
            Sink::File {
                path: settings.file.clone(),
                file: file.ok(),
            }
        }
    };
    let max = filter.max();
    let logger = Logger {
        filter,
        state: Mutex::new(State {
            sink,
            guard: FloodGuard::new(settings.max_per_kind_per_sec),
        }),
    };
    let logger: &'static Logger = Box::leak(Box::new(logger));
    log::set_logger(logger)?;
    let _ = INSTALLED.set(logger);
    log::set_max_level(max);
    Ok(report)
}

/// What [`reopen`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Reopened {
    /// The log does not go to a file (stderr, syslog): nothing to reopen.
    NotAFile,
    /// The file at this path is open again; new lines go to it.
    File(PathBuf),
}

/// Opens the log file again at its configured path (SIGUSR1, after
/// logrotate renamed it). Lines already written stay where they were; the
/// next line goes to the file now at the path, created if missing. If it
/// cannot be opened (permissions after dropping root, say), the old file
/// stays in use and the error says why.
pub fn reopen() -> io::Result<Reopened> {
    let Some(logger) = INSTALLED.get() else {
        return Ok(Reopened::NotAFile);
    };
    let mut state = match logger.state.lock() {
        Ok(state) => state,
        Err(poisoned) => poisoned.into_inner(),
    };
    match &mut state.sink {
        Sink::File { path, file } => {
            let fresh = open_log_file(path).map_err(|e| {
                io::Error::new(e.kind(), format!("cannot reopen {}: {e}", path.display()))
            })?;
            *file = Some(fresh);
            Ok(Reopened::File(path.clone()))
        }
        Sink::Stderr { .. } | Sink::Syslog(_) => Ok(Reopened::NotAFile),
    }
}

/// Opens `path` for appending, creating it readable by owner and group
/// only (log lines name users and addresses).
fn open_log_file(path: &std::path::Path) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .open(path)
}

/// The installed logger.
struct Logger {
    /// Which records pass.
    filter: Filter,
    /// Everything that changes per line, behind one lock so a line is
    /// written whole and the flood guard counts exactly.
    state: Mutex<State>,
}

struct State {
    /// Where lines go.
    sink: Sink,
    /// Counts lines per kind and holds back floods.
    guard: FloodGuard,
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= self.filter.level_for(metadata.target())
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let message = escape_controls(&record.args().to_string());
        let kind = kind_of(record.level(), record.target(), &message);
        // A panic elsewhere while holding the lock must not silence the log.
        let mut state = match self.state.lock() {
            Ok(state) => state,
            Err(poisoned) => poisoned.into_inner(),
        };
        let State { sink, guard } = &mut *state;
        for line in guard.admit(kind, record.level(), message, Instant::now()) {
            sink.write(line.level, &line.text);
        }
    }

    fn flush(&self) {
        let _ = io::stderr().flush();
    }
}

/// Where the lines go, with what that needs.
enum Sink {
    /// Standard error; `journal` when it is the systemd journal.
    Stderr { journal: bool },
    /// The syslog socket.
    Syslog(Syslog),
    /// A file opened for appending; `file` is `None` while it cannot be
    /// opened (lines are dropped until a reopen works).
    File { path: PathBuf, file: Option<File> },
}

impl Sink {
    fn write(&mut self, level: Level, text: &str) {
        match self {
            Sink::Stderr { journal } => {
                let line = if *journal {
                    format!("<{}>{text}\n", severity(level))
                } else {
                    format!("{} {:<5} {text}\n", utc_timestamp(SystemTime::now()), level)
                };
                // One write per line, so lines of different threads never
                // interleave; if stderr is gone there is nowhere to report it.
                let _ = io::stderr().lock().write_all(line.as_bytes());
            }
            Sink::Syslog(syslog) => syslog.send(level, text),
            Sink::File { file, .. } => {
                if let Some(file) = file {
                    let line =
                        format!("{} {:<5} {text}\n", utc_timestamp(SystemTime::now()), level);
                    // One append per line: whole lines even if another
                    // process writes to the same file. A full disk loses
                    // the line; there is nowhere to report that.
                    let _ = file.write_all(line.as_bytes());
                }
            }
        }
    }
}

/// A connection to the local syslog socket that heals itself: a syslog
/// daemon that restarts takes its socket with it, so a failed send
/// reconnects (at most once a second) before giving up on that line.
struct Syslog {
    /// The socket's path.
    path: PathBuf,
    /// Connected datagram socket, `None` until a connect works.
    socket: Option<UnixDatagram>,
    /// When the last connect was tried, to pace retries.
    last_attempt: Option<Instant>,
    /// Lines lost since the last line that got through (socket full or
    /// unreachable); reported in the next line that gets through.
    dropped: u64,
    /// Our process id, part of every line's tag.
    pid: u32,
}

impl Syslog {
    fn new(path: PathBuf) -> Syslog {
        Syslog {
            path,
            socket: None,
            last_attempt: None,
            dropped: 0,
            pid: std::process::id(),
        }
    }

    fn connect(&mut self) -> io::Result<()> {
        self.last_attempt = Some(Instant::now());
        let socket = UnixDatagram::unbound()?;
        socket.connect(&self.path)?;
        // A stuck syslog daemon must not stall the server: when its socket
        // is full, lines are dropped and counted instead.
        socket.set_nonblocking(true)?;
        self.socket = Some(socket);
        Ok(())
    }

    fn send(&mut self, level: Level, text: &str) {
        if self.dropped > 0 {
            let note = format!(
                "{} log lines were lost: the syslog socket was full or unreachable",
                self.dropped
            );
            if self.try_send(Level::Warn, &note) {
                self.dropped = 0;
            }
        }
        if !self.try_send(level, text) {
            self.dropped += 1;
        }
    }

    fn try_send(&mut self, level: Level, text: &str) -> bool {
        let datagram = syslog_datagram(level, self.pid, text);
        // Without a socket, try again at most once a second: connecting to
        // a missing socket for every line would cost a syscall per line for
        // nothing.
        let may_reconnect = self
            .last_attempt
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(1));
        if self.socket.is_none() && !may_reconnect {
            return false;
        }
        for _ in 0..2 {
            if self.socket.is_none() && self.connect().is_err() {
                return false;
            }
            let Some(socket) = &self.socket else {
                return false;
            };
            match socket.send(datagram.as_bytes()) {
                Ok(_) => return true,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(_) => {
                    // ECONNREFUSED, ENOENT...: the daemon went away or was
                    // restarted; reconnect at once and try one more time.
                    self.socket = None;
                }
            }
        }
        false
    }
}

/// One RFC 3164 line as sent to a local syslog daemon. The header's
/// timestamp and host name are left out, as local daemons stamp lines
/// themselves on arrival.
fn syslog_datagram(level: Level, pid: u32, text: &str) -> String {
    let priority = FACILITY_MAIL * 8 + severity(level);
    let mut end = text.len().min(MAX_SYSLOG_MESSAGE);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("<{priority}>pop3d[{pid}]: {}", &text[..end])
}

/// The syslog severity of a level (RFC 3164 table 2), which is also the
/// sd-daemon prefix number.
fn severity(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

/// Whether stderr is the stream systemd set up to the journal: systemd sets
/// `JOURNAL_STREAM=DEVICE:INODE` of that stream, and only if stderr is still
/// that file (not redirected by a wrapper) are the prefixes understood.
fn stderr_is_journal() -> bool {
    let Some(wanted) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = wanted.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    let Ok(fd) = io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    let Ok(meta) = std::fs::File::from(fd).metadata() else {
        return false;
    };
    dev.parse() == Ok(meta.dev()) && ino.parse() == Ok(meta.ino())
}

/// Replaces control characters with escapes (`\n`, `\u{1b}`), so a message
/// holding client input stays one line and cannot fake another.
fn escape_controls(message: &str) -> String {
    if !message.chars().any(char::is_control) {
        return message.to_string();
    }
    let mut escaped = String::with_capacity(message.len() + 8);
    for c in message.chars() {
        if c.is_control() {
            let _ = write!(escaped, "{}", c.escape_default());
        } else {
            escaped.push(c);
        }
    }
    escaped
}

/// The flood guard's name for a line: its level, its module, and the
/// leading plain words of its message after any `key=value` fields, e.g.
/// `INFO pop3d::protocol::session login failed` for
/// `session=0a1b2c3d login failed user="x" remote=192.0.2.7`. Words stop at
/// the first one that is not purely letters, so addresses, numbers and
/// quoted client input never make kinds of their own.
fn kind_of(level: Level, target: &str, message: &str) -> String {
    let words: Vec<&str> = message
        .split(' ')
        .skip_while(|w| w.contains('='))
        .take_while(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_alphabetic() || c == '-'))
        .take(4)
        .collect();
    format!("{level} {target} {}", words.join(" "))
}

/// A line the flood guard lets through.
#[derive(Debug, PartialEq, Eq)]
struct Admitted {
    level: Level,
    text: String,
}

/// Per-kind budget of lines per second.
struct FloodGuard {
    /// Lines of one kind let through per second.
    limit: u32,
    /// Each kind's current one-second window.
    kinds: HashMap<String, Window>,
    /// When expired windows were last swept for pending reports.
    last_sweep: Option<Instant>,
}

/// One kind's count in its current second.
struct Window {
    /// When this second started (at the first line of the kind after the
    /// previous second ended).
    start: Instant,
    /// Lines let through in this second.
    written: u32,
    /// Lines held back in this second, to be reported.
    suppressed: u64,
    /// Level of the kind, for the report line.
    level: Level,
}

/// The kind whose budget lines of untracked kinds share once
/// [`MAX_TRACKED_KINDS`] are tracked.
const OVERFLOW_KIND: &str = "(other kinds)";

impl FloodGuard {
    fn new(limit: u32) -> FloodGuard {
        FloodGuard {
            limit: limit.max(1),
            kinds: HashMap::new(),
            last_sweep: None,
        }
    }

    /// The lines to write for one record at `now`: reports of earlier
    /// suppression, then the record itself unless its kind is over budget.
    fn admit(&mut self, kind: String, level: Level, text: String, now: Instant) -> Vec<Admitted> {
        let second = Duration::from_secs(1);
        let mut out = Vec::new();
        if self
            .last_sweep
            .is_none_or(|at| now.duration_since(at) >= second)
        {
            self.last_sweep = Some(now);
            self.sweep(now, &mut out);
        }
        let kind = if self.kinds.contains_key(&kind) || self.kinds.len() < MAX_TRACKED_KINDS {
            kind
        } else {
            OVERFLOW_KIND.to_string()
        };
        let limit = self.limit;
        let window = self.kinds.entry(kind.clone()).or_insert(Window {
            start: now,
            written: 0,
            suppressed: 0,
            level,
        });
        if now.duration_since(window.start) >= second {
            if let Some(report) = report(&kind, window, limit) {
                out.push(report);
            }
            *window = Window {
                start: now,
                written: 0,
                suppressed: 0,
                level,
            };
        }
        if window.written < limit {
            window.written += 1;
            out.push(Admitted { level, text });
        } else {
            window.suppressed += 1;
        }
        out
    }

    /// Reports every finished second that held lines back, and forgets
    /// finished seconds, so a flood that stops is still reported and quiet
    /// kinds cost no memory.
    fn sweep(&mut self, now: Instant, out: &mut Vec<Admitted>) {
        let limit = self.limit;
        self.kinds.retain(|kind, window| {
            if now.duration_since(window.start) < Duration::from_secs(1) {
                return true;
            }
            if let Some(report) = report(kind, window, limit) {
                out.push(report);
            }
            false
        });
    }
}

/// The line saying how many lines of `kind` a finished window held back.
fn report(kind: &str, window: &Window, limit: u32) -> Option<Admitted> {
    (window.suppressed > 0).then(|| Admitted {
        level: window.level,
        text: format!(
            "log flood guard: {} more lines of the kind \"{kind}\" were suppressed (at most {limit} of a kind are logged per second)",
            window.suppressed
        ),
    })
}

/// A `RUST_LOG`-style level filter.
#[derive(Debug, Clone, PartialEq)]
struct Filter {
    /// Level for modules no rule names.
    default: LevelFilter,
    /// `(module prefix, level)`; the longest matching prefix wins.
    rules: Vec<(String, LevelFilter)>,
}

impl Filter {
    /// Parses `level` and `module=level` parts separated by commas; parts
    /// that are not understood are returned so they can be reported.
    fn parse(spec: &str) -> (Filter, Vec<String>) {
        let mut filter = Filter {
            default: LevelFilter::Info,
            rules: Vec::new(),
        };
        let mut ignored = Vec::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.split_once('=') {
                None => match part.parse() {
                    Ok(level) => filter.default = level,
                    // A bare module name means "everything from it".
                    Err(_) if is_module_path(part) => {
                        filter.rules.push((part.to_string(), LevelFilter::Trace))
                    }
                    Err(_) => ignored.push(part.to_string()),
                },
                Some((module, level)) => match level.parse() {
                    Ok(level) if is_module_path(module) => {
                        filter.rules.push((module.to_string(), level))
                    }
                    _ => ignored.push(part.to_string()),
                },
            }
        }
        (filter, ignored)
    }

    fn level_for(&self, target: &str) -> LevelFilter {
        self.rules
            .iter()
            .filter(|(module, _)| {
                target == module
                    || target
                        .strip_prefix(module.as_str())
                        .is_some_and(|rest| rest.starts_with("::"))
            })
            .max_by_key(|(module, _)| module.len())
            .map_or(self.default, |(_, level)| *level)
    }

    /// The most verbose level any module may log at.
    fn max(&self) -> LevelFilter {
        self.rules
            .iter()
            .map(|(_, level)| *level)
            .fold(self.default, Ord::max)
    }
}

fn is_module_path(text: &str) -> bool {
    !text.is_empty()
        && text
            .split("::")
            .all(|seg| !seg.is_empty() && seg.chars().all(|c| c.is_alphanumeric() || c == '_'))
}

/// `2024-05-01T12:34:56Z`: UTC, so no time-zone database is needed and lines
/// from machines in different zones sort together.
fn utc_timestamp(at: SystemTime) -> impl fmt::Display {
    let secs = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Year, month, day of a day count since 1970-01-01 (the proleptic
/// Gregorian calendar; Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        let at = |secs| utc_timestamp(UNIX_EPOCH + Duration::from_secs(secs)).to_string();
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(at(4_107_542_399), "2100-02-28T23:59:59Z");
    }

    #[test]
    fn syslog_lines_carry_facility_mail_and_severity() {
        assert_eq!(
            syslog_datagram(Level::Info, 42, "session=1 login user=a"),
            "<22>pop3d[42]: session=1 login user=a"
        );
        assert_eq!(syslog_datagram(Level::Error, 7, "x"), "<19>pop3d[7]: x");
        assert_eq!(syslog_datagram(Level::Warn, 7, "x"), "<20>pop3d[7]: x");
        assert_eq!(syslog_datagram(Level::Debug, 7, "x"), "<23>pop3d[7]: x");
        let long = "é".repeat(MAX_SYSLOG_MESSAGE);
        let datagram = syslog_datagram(Level::Info, 1, &long);
        assert!(datagram.len() <= MAX_SYSLOG_MESSAGE + "<22>pop3d[1]: ".len());
    }

    #[test]
    fn syslog_survives_a_restarted_daemon_and_reports_what_was_lost() {
        let path = std::env::temp_dir().join(format!("pop3d-syslog-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let receive = |daemon: &UnixDatagram| {
            let mut buf = [0u8; 512];
            let n = daemon.recv(&mut buf).unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        };
        let daemon = UnixDatagram::bind(&path).unwrap();
        daemon
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut syslog = Syslog::new(path.clone());
        syslog.send(Level::Info, "one");
        assert!(receive(&daemon).ends_with("]: one"));

        // The daemon goes away: lines are counted, not blocked on.
        drop(daemon);
        std::fs::remove_file(&path).unwrap();
        syslog.send(Level::Info, "two");
        syslog.send(Level::Info, "three");
        assert_eq!(syslog.dropped, 2);

        // It comes back; once the retry pause is over (simulated here), the
        // next line reconnects and first reports the loss.
        let daemon = UnixDatagram::bind(&path).unwrap();
        daemon
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        syslog.last_attempt = None;
        syslog.send(Level::Error, "four");
        let note = receive(&daemon);
        assert!(note.starts_with("<20>pop3d["), "{note}");
        assert!(
            note.ends_with("]: 2 log lines were lost: the syslog socket was full or unreachable"),
            "{note}"
        );
        assert!(receive(&daemon).starts_with("<19>"));
        assert_eq!(syslog.dropped, 0);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn control_characters_cannot_start_a_new_line() {
        assert_eq!(
            escape_controls("login failed user=\"a\r\nINFO fake\""),
            "login failed user=\"a\\r\\nINFO fake\""
        );
        assert_eq!(escape_controls("plain"), "plain");
    }

    #[test]
    fn kinds_ignore_fields_addresses_and_client_text() {
        let kind = |m| kind_of(Level::Info, "pop3d::protocol::session", m);
        assert_eq!(
            kind("session=0a1b login failed user=\"x\" remote=192.0.2.1"),
            kind("session=ffff login failed user=\"other\" remote=198.51.100.9")
        );
        assert_eq!(
            kind("session=0a1b login failed user=\"x\""),
            "INFO pop3d::protocol::session login failed"
        );
        assert_ne!(
            kind("session=1 login user=a"),
            kind("session=1 login failed user=a")
        );
        assert_eq!(
            kind_of(
                Level::Warn,
                "pop3d::server",
                "refused 192.0.2.1:4000: max_per_ip"
            ),
            "WARN pop3d::server refused"
        );
    }

    #[test]
    fn a_flood_is_cut_to_the_budget_and_reported_once_its_second_is_over() {
        let mut guard = FloodGuard::new(3);
        let t0 = Instant::now();
        let mut written = Vec::new();
        for i in 0..10 {
            written.extend(guard.admit("k".into(), Level::Info, format!("line {i}"), t0));
        }
        let texts: Vec<&str> = written.iter().map(|a| a.text.as_str()).collect();
        assert_eq!(texts, ["line 0", "line 1", "line 2"]);

        // Another kind has its own budget.
        let other = guard.admit("j".into(), Level::Warn, "other".into(), t0);
        assert_eq!(other.len(), 1);

        let later = guard.admit(
            "k".into(),
            Level::Info,
            "after".into(),
            t0 + Duration::from_millis(1500),
        );
        assert_eq!(later.len(), 2, "{later:?}");
        assert!(
            later[0]
                .text
                .starts_with("log flood guard: 7 more lines of the kind \"k\" were suppressed"),
            "{later:?}"
        );
        assert_eq!(later[1].text, "after");
    }

    #[test]
    fn a_flood_that_stops_is_reported_by_the_next_line_of_any_kind() {
        let mut guard = FloodGuard::new(1);
        let t0 = Instant::now();
        for _ in 0..5 {
            guard.admit("flood".into(), Level::Info, "x".into(), t0);
        }
        let next = guard.admit(
            "quiet".into(),
            Level::Info,
            "hello".into(),
            t0 + Duration::from_secs(2),
        );
        assert_eq!(next.len(), 2, "{next:?}");
        assert!(next[0].text.contains("4 more lines of the kind \"flood\""));
        assert_eq!(next[1].text, "hello");
        // Reported once only.
        let again = guard.admit(
            "quiet".into(),
            Level::Info,
            "hello".into(),
            t0 + Duration::from_secs(4),
        );
        assert_eq!(again.len(), 1, "{again:?}");
    }

    #[test]
    fn untracked_kinds_share_one_budget() {
        let mut guard = FloodGuard::new(2);
        let t0 = Instant::now();
        for i in 0..MAX_TRACKED_KINDS {
            guard.admit(format!("kind {i}"), Level::Info, "x".into(), t0);
        }
        let mut written = 0;
        for i in 0..50 {
            written += guard
                .admit(format!("new kind {i}"), Level::Info, "x".into(), t0)
                .len();
        }
        assert_eq!(written, 2);
        assert!(guard.kinds.len() <= MAX_TRACKED_KINDS + 1);
    }

    #[test]
    fn filters_pick_the_most_specific_rule() {
        let (filter, ignored) =
            Filter::parse("warn,pop3d::protocol=debug,pop3d::protocol::session=error");
        assert!(ignored.is_empty());
        assert_eq!(filter.level_for("pop3d::server"), LevelFilter::Warn);
        assert_eq!(
            filter.level_for("pop3d::protocol::command"),
            LevelFilter::Debug
        );
        assert_eq!(
            filter.level_for("pop3d::protocol::session"),
            LevelFilter::Error
        );
        assert_eq!(filter.level_for("pop3d::protocolx"), LevelFilter::Warn);
        assert_eq!(filter.max(), LevelFilter::Debug);

        let (filter, ignored) = Filter::parse("trace");
        assert_eq!(filter.level_for("anything"), LevelFilter::Trace);
        assert!(ignored.is_empty());

        let (filter, ignored) = Filter::parse("loud, pop3d=sometimes, =info");
        assert_eq!(filter.default, LevelFilter::Info);
        assert_eq!(filter.rules, vec![("loud".to_string(), LevelFilter::Trace)]);
        assert_eq!(ignored, ["pop3d=sometimes", "=info"]);
    }
}
