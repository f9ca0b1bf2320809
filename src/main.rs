//! The `pop3d` command line.
//!
//! With no arguments it runs the embedded demo (a throwaway user and maildir
//! on loopback) and prints how to connect, so a fresh checkout does something
//! useful with `cargo run`. With `--config FILE` it runs a real server;
//! `--inetd --config FILE` serves one client on stdin/stdout for inetd and
//! friends; `check-config FILE` validates a file without starting anything;
//! `dump-config FILE` prints the configuration with every default filled in;
//! `pw` makes and checks passwd-file password hashes ([`pop3d::pw`]).
//!
//! Arguments are parsed by hand: there are a handful of forms, and a parser
//! crate would cost more build time than the code it saves.
//!
//! Under systemd with `Type=notify`, the daemon tells systemd it is ready
//! (`READY=1` on `$NOTIFY_SOCKET`) once every listener accepts connections.
//!
//! Exit codes: 0 success, 1 the server or the check failed, 2 the command
//! line was not understood.
#![deny(unsafe_code)]

use pop3d::config::{self, ConfigError, DumpMode, PluginRole, PluginSection};
use pop3d::demo::{self, Demo};
use pop3d::inetd;
use pop3d::logging::{self, LogSettings, LogTarget};
use std::ffi::{OsStr, OsString};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const USAGE: &str = "\
pop3d: a POP3 server (RFC 1939)

Usage:
  pop3d                      run a demo server on 127.0.0.1 (user demo, password demo)
  pop3d --config FILE        run with the configuration in FILE
                             (also: -c FILE, --config=FILE, pop3d run --config FILE)
  pop3d --inetd --config FILE
                             serve one client on stdin/stdout (inetd, xinetd, systemd
                             Accept=yes); logs go to syslog unless --log-target says else
  pop3d check-config FILE    check FILE, list every problem, exit 1 if there are any
  pop3d dump-config FILE [--non-default]
                             print FILE's configuration with every default filled in
                             (--non-default: only what differs from the defaults)
  pop3d pw [-s SCHEME] [-r COST] [-u USER]
                             print a password hash for the passwd-file, like doveadm pw;
                             the password is read from the terminal (no echo) or from
                             the first line of stdin. SCHEME (default SHA512-CRYPT):
                             SHA512-CRYPT SHA256-CRYPT BLF-CRYPT ARGON2ID ARGON2I CRYPT
                             SSHA512 SSHA256 SSHA CRAM-MD5 SCRAM-SHA-256 SCRAM-SHA-1
                             PLAIN PLAIN.BASE64. COST: rounds (SHA*-CRYPT), cost
                             (BLF-CRYPT), passes (ARGON2*), iterations (SCRAM-*)
  pop3d pw --test HASH [-s SCHEME]
                             check a password against HASH (-s: HASH's scheme if it has
                             no {SCHEME} prefix); prints HASH (verified) and exits 0,
                             or exits 1
  pop3d uidl USER --config FILE [--home DIR]
                             print USER's UIDL list as a client would see it (`<n> <uidl>`
                             lines), to compare with the old server before switching.
                             Opens the maildrop like a login (IN-USE while a session holds
                             it) and releases it without deleting anything. USER's home
                             (`~` in the store path) comes from the auth backend when it
                             can look users up without a password (passwd-file users with
                             a plaintext password); otherwise give it with --home, or
                             only the name is known.
  pop3d --help               show this help
  pop3d --version            show the version

Logging options (with any of the above):
  --log-target stderr|syslog where log lines go (default: stderr; syslog with --inetd)
  --log-file PATH            append log lines to PATH instead (also --log-target file:PATH);
                             SIGUSR1 reopens it, for logrotate
  --log-level LEVEL          error, warn, info, debug or trace (default: RUST_LOG, else info)

RUST_LOG also takes module rules, e.g. RUST_LOG=info,pop3d::server=debug.
examples/pop3d.ron is a commented configuration to start from.
";

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
enum Command {
    /// No arguments: serve the embedded demo.
    Demo,
    /// Serve with the configuration file at this path.
    Run(PathBuf),
    /// Serve one client on stdin/stdout with the configuration at this path.
    Inetd(PathBuf),
    /// Validate the configuration file at this path and exit.
    CheckConfig(PathBuf),
    /// Print the configuration at this path with defaults filled in.
    DumpConfig(PathBuf, DumpMode),
    /// Make or check a password hash.
    Pw(pop3d::pw::PwOptions),
    /// Print a user's UIDL list with the configuration at this path.
    Uidl {
        /// The user, as a client would log in.
        user: String,
        /// The configuration file.
        config: PathBuf,
        /// `--home`: the user's home, for when the auth backend cannot
        /// tell it without a password.
        home: Option<String>,
    },
    /// Print usage.
    Help,
    /// Print the version.
    Version,
}

/// The logging options of a command line; `None` where nothing was said.
#[derive(Debug, Default, PartialEq, Eq)]
struct LogOptions {
    /// `--log-target`.
    target: Option<LogTarget>,
    /// `--log-file PATH` or `--log-target file:PATH`: the file to append
    /// to, which makes the target [`LogTarget::File`].
    file: Option<PathBuf>,
    /// `--log-level`, already checked to be a level name.
    level: Option<String>,
    /// `--syslog-socket PATH`, not in the usage: tests point syslog at a
    /// socket of their own with it.
    syslog_socket: Option<PathBuf>,
}

/// A whole command line, understood.
#[derive(Debug, PartialEq, Eq)]
struct Invocation {
    command: Command,
    log: LogOptions,
}

/// A command line we did not understand; the text says what was wrong.
#[derive(Debug, PartialEq, Eq)]
struct UsageError(String);

fn main() -> ExitCode {
    let Invocation { command, log } = match parse_args(std::env::args_os().skip(1)) {
        Ok(invocation) => invocation,
        Err(UsageError(why)) => {
            eprint!("pop3d: {why}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match command {
        Command::Help => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        Command::Version => {
            println!("pop3d {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::CheckConfig(path) => {
            init_logging(&log, LogTarget::Stderr, true);
            match check_config(&path) {
                Ok(report) => {
                    println!("{report}");
                    ExitCode::SUCCESS
                }
                Err(report) => {
                    eprintln!("{report}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::DumpConfig(path, mode) => {
            init_logging(&log, LogTarget::Stderr, true);
            match dump_config(&path, mode) {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(report) => {
                    eprintln!("{report}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Uidl { user, config, home } => {
            init_logging(&log, LogTarget::Stderr, true);
            match print_uidls(&user, &config, home) {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(report) => {
                    eprintln!("{report}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run(path) => {
            let target = init_logging(&log, LogTarget::Stderr, true);
            run_with_config(&path, target)
        }
        Command::Inetd(path) => {
            // Under inetd stderr is usually the client's socket too, so
            // nothing may be written there unless asked for.
            init_logging(&log, LogTarget::Syslog, false);
            run_inetd(&path)
        }
        Command::Demo => {
            init_logging(&log, LogTarget::Stderr, true);
            run_demo()
        }
        Command::Pw(options) => match pop3d::pw::run(&options) {
            Ok(line) => {
                println!("{line}");
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("pop3d pw: {err}");
                ExitCode::FAILURE
            }
        },
    }
}

/// Reads the command line (without the program name).
fn parse_args(args: impl IntoIterator<Item = OsString>) -> Result<Invocation, UsageError> {
    let args: Vec<OsString> = args.into_iter().collect();
    let is = |arg: &OsString, names: &[&str]| names.iter().any(|name| arg == name);
    let plain = |command| Invocation {
        command,
        log: LogOptions::default(),
    };
    if args.iter().any(|a| is(a, &["-h", "--help"])) {
        return Ok(plain(Command::Help));
    }
    if args.iter().any(|a| is(a, &["-V", "--version"])) {
        return Ok(plain(Command::Version));
    }
    let (args, log, inetd) = take_global_options(args)?;
    let command = parse_command(&args)?;
    let command = match (inetd, command) {
        (false, command) => command,
        (true, Command::Run(path)) => Command::Inetd(path),
        (true, _) => {
            return Err(UsageError(
                "--inetd goes with --config FILE only (pop3d --inetd --config FILE)".to_string(),
            ))
        }
    };
    Ok(Invocation { command, log })
}

/// Removes the options that may appear with any command (`--inetd` and
/// the logging options) and returns the rest in order.
fn take_global_options(
    args: Vec<OsString>,
) -> Result<(Vec<OsString>, LogOptions, bool), UsageError> {
    let mut rest = Vec::with_capacity(args.len());
    let mut log = LogOptions::default();
    let mut inetd = false;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let text = arg.to_string_lossy();
        let (name, inline) = match text.split_once('=') {
            Some((name, value)) if name.starts_with("--") => (name.to_string(), Some(value)),
            _ => (text.to_string(), None),
        };
        let mut value = |what: &str| -> Result<OsString, UsageError> {
            let value = match inline {
                Some(v) => Some(OsString::from(v)),
                None => args.next(),
            };
            value
                .filter(|v| !v.is_empty())
                .ok_or_else(|| UsageError(format!("{name} needs {what}")))
        };
        match name.as_str() {
            "--inetd" if inline.is_none() => inetd = true,
            "--log-file" => log.file = Some(PathBuf::from(value("a PATH")?)),
            "--log-target" => {
                let v = value("stderr, syslog or file:PATH")?;
                if let Some(path) = v.to_string_lossy().strip_prefix("file:") {
                    if path.is_empty() {
                        return Err(UsageError(
                            "--log-target file: needs a PATH (file:/var/log/pop3d.log)".to_string(),
                        ));
                    }
                    log.file = Some(PathBuf::from(path));
                    continue;
                }
                log.target = Some(LogTarget::parse(&v.to_string_lossy()).ok_or_else(|| {
                    UsageError(format!(
                        "unknown log target `{}` (expected stderr, syslog or file:PATH)",
                        v.to_string_lossy()
                    ))
                })?);
            }
            "--log-level" => {
                let v = value("a LEVEL (error, warn, info, debug or trace)")?;
                let level = v.to_string_lossy().to_ascii_lowercase();
                if !["off", "error", "warn", "info", "debug", "trace"].contains(&level.as_str()) {
                    return Err(UsageError(format!(
                        "unknown log level `{level}` (expected error, warn, info, debug or trace)"
                    )));
                }
                log.level = Some(level);
            }
            "--syslog-socket" => log.syslog_socket = Some(PathBuf::from(value("a PATH")?)),
            _ => rest.push(arg),
        }
    }
    if log.file.is_some() && log.target.is_some() {
        return Err(UsageError(
            "--log-file and --log-target both say where log lines go; give one".to_string(),
        ));
    }
    Ok((rest, log, inetd))
}

/// Reads what is left of the command line once the global options are out.
fn parse_command(args: &[OsString]) -> Result<Command, UsageError> {
    let is = |arg: &OsString, names: &[&str]| names.iter().any(|name| arg == name);
    let Some(first) = args.first() else {
        return Ok(Command::Demo);
    };
    if is(first, &["run"]) {
        if let Some(file) = args.get(1).filter(|a| !is_option(a)) {
            return Err(UsageError(format!(
                "`run` takes --config FILE, not a bare file (try: pop3d run --config {})",
                file.to_string_lossy()
            )));
        }
        return match config_option(&args[1..])? {
            Some(path) => Ok(Command::Run(path)),
            None => Err(UsageError(
                "`run` needs --config FILE (without any arguments pop3d starts the demo)"
                    .to_string(),
            )),
        };
    }
    if is(first, &["check-config"]) {
        return match &args[1..] {
            [file] if !is_option(file) => Ok(Command::CheckConfig(PathBuf::from(file))),
            [file, extra, ..] if !is_option(file) => Err(UsageError(format!(
                "unknown argument `{}` (check-config takes one FILE)",
                extra.to_string_lossy()
            ))),
            [] => Err(UsageError("check-config needs a FILE to check".to_string())),
            rest => match config_option(rest)? {
                Some(path) => Ok(Command::CheckConfig(path)),
                None => Err(UsageError("check-config needs a FILE to check".to_string())),
            },
        };
    }
    if is(first, &["pw"]) {
        return pop3d::pw::parse_args(&args[1..])
            .map(Command::Pw)
            .map_err(UsageError);
    }
    if is(first, &["dump-config"]) {
        let mut mode = DumpMode::Full;
        let mut file = None;
        for arg in &args[1..] {
            if arg == "--non-default" {
                mode = DumpMode::NonDefault;
            } else if file.is_none() && !is_option(arg) {
                file = Some(PathBuf::from(arg));
            } else {
                return Err(UsageError(format!(
                    "unknown argument `{}` (dump-config takes one FILE and maybe --non-default)",
                    arg.to_string_lossy()
                )));
            }
        }
        return match file {
            Some(path) => Ok(Command::DumpConfig(path, mode)),
            None => Err(UsageError("dump-config needs a FILE to print".to_string())),
        };
    }
    if is(first, &["uidl"]) {
        return parse_uidl(&args[1..]);
    }
    match config_option(args)? {
        Some(path) => Ok(Command::Run(path)),
        None => Err(UsageError(format!(
            "unknown argument `{}`",
            first.to_string_lossy()
        ))),
    }
}

/// Reads the arguments of `uidl`: USER, `--config FILE` and maybe
/// `--home DIR`, in any order.
fn parse_uidl(args: &[OsString]) -> Result<Command, UsageError> {
    let mut user = None;
    let mut home = None;
    let mut rest = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let text = arg.to_string_lossy();
        if text == "--home" {
            let Some(dir) = args.next() else {
                return Err(UsageError("--home needs a DIR".to_string()));
            };
            home = Some(dir.to_string_lossy().into_owned());
        } else if let Some(dir) = text.strip_prefix("--home=") {
            home = Some(dir.to_owned());
        } else if text == "--config" || text == "-c" {
            rest.push(arg.clone());
            if let Some(file) = args.next() {
                rest.push(file.clone());
            }
        } else if user.is_none() && !is_option(arg) {
            user = Some(text.into_owned());
        } else {
            rest.push(arg.clone());
        }
    }
    let Some(user) = user else {
        return Err(UsageError(
            "uidl needs a USER (pop3d uidl USER --config FILE)".to_string(),
        ));
    };
    match config_option(&rest)? {
        Some(config) => Ok(Command::Uidl { user, config, home }),
        None => Err(UsageError(
            "uidl needs --config FILE (pop3d uidl USER --config FILE)".to_string(),
        )),
    }
}

fn is_option(arg: &OsString) -> bool {
    arg.to_string_lossy().starts_with('-')
}

/// Reads `--config FILE`, `-c FILE` or `--config=FILE`, which must be all of
/// `args`. `Ok(None)` if `args` is empty.
fn config_option(args: &[OsString]) -> Result<Option<PathBuf>, UsageError> {
    let unknown =
        |arg: &OsString| UsageError(format!("unknown argument `{}`", arg.to_string_lossy()));
    match args {
        [] => Ok(None),
        [flag] if flag == "--config" || flag == "-c" => Err(UsageError(format!(
            "{} needs a FILE",
            flag.to_string_lossy()
        ))),
        [flag] => match flag.to_str().and_then(|f| f.strip_prefix("--config=")) {
            Some("") => Err(UsageError("--config= needs a FILE".to_string())),
            Some(file) => Ok(Some(PathBuf::from(file))),
            None => Err(unknown(flag)),
        },
        [flag, file] if flag == "--config" || flag == "-c" => Ok(Some(PathBuf::from(file))),
        [flag, ..] if flag != "--config" && flag != "-c" => Err(unknown(flag)),
        [_, _, extra, ..] => Err(unknown(extra)),
        // The guards above cover every shape, but the compiler cannot see
        // through guards.
        [flag, ..] => Err(unknown(flag)),
    }
}

/// Installs the logger: `--log-target` or else `default_target`; the level
/// from `--log-level`, else `RUST_LOG`, else `info`. Returns the target in
/// use. `stderr_is_ours` says whether problems with logging itself may be
/// reported on stderr (not under inetd, where stderr is often the client).
fn init_logging(
    options: &LogOptions,
    default_target: LogTarget,
    stderr_is_ours: bool,
) -> LogTarget {
    let target = match &options.file {
        Some(_) => LogTarget::File,
        None => options.target.unwrap_or(default_target),
    };
    let mut settings = LogSettings::new(target);
    if let Some(path) = &options.file {
        settings.file = path.clone();
    }
    if let Some(level) = &options.level {
        settings.filter = level.clone();
    } else if let Ok(filter) = std::env::var("RUST_LOG") {
        settings.filter = filter;
    }
    if let Some(path) = &options.syslog_socket {
        settings.syslog_socket = path.clone();
    }
    // Only a second call can fail, and there is none.
    if let Ok(report) = logging::init(&settings) {
        for part in report.ignored_filter_parts {
            log::warn!("RUST_LOG: ignoring `{part}` (expected LEVEL or module=LEVEL)");
        }
        if let (Some(why), true) = (report.file_unwritable, stderr_is_ours) {
            eprintln!("pop3d: cannot open the log file {why}; log lines are lost until SIGUSR1 reopens it");
        }
        if let (Some(why), true) = (report.syslog_unreachable, stderr_is_ours) {
            eprintln!(
                "pop3d: cannot reach the syslog socket {why}; log lines are lost until it can be reached (or use --log-target stderr)"
            );
        }
    }
    target
}

/// Validates the configuration at `path` including the backends' own
/// sections: `Ok("FILE: OK")` or `Err` with one problem per line.
fn check_config(path: &Path) -> Result<String, String> {
    match config::load_checked(path, &mut check_plugin) {
        Ok(_) => Ok(format!("{}: OK", path.display())),
        Err(err @ ConfigError::Read { .. }) => Err(format!("pop3d: {err}")),
        Err(err) => Err(err.to_string()),
    }
}

/// The configuration at `path` as RON with defaults filled in, or the
/// problems that keep it from being one. The backends are not built: a
/// configuration prepared for another machine can be printed here.
fn dump_config(path: &Path, mode: DumpMode) -> Result<String, String> {
    let config = match config::load(path) {
        Ok(config) => config,
        Err(err @ ConfigError::Read { .. }) => return Err(format!("pop3d: {err}")),
        Err(err) => return Err(err.to_string()),
    };
    let header = match mode {
        DumpMode::Full => "every key, defaults filled in",
        DumpMode::NonDefault => "only the keys that differ from the defaults",
    };
    let body = config::dump(&config, mode).map_err(|e| format!("pop3d: {e}"))?;
    Ok(format!(
        "// pop3d {}: configuration of {} ({header})\n{body}",
        env!("CARGO_PKG_VERSION"),
        path.display()
    ))
}

/// `pop3d uidl USER --config FILE`: USER's UIDL list as `<n> <uidl>` lines,
/// the way UIDL without an argument lists it, or why it cannot be had.
/// Notes on where USER's attributes came from go to the log (stderr).
fn print_uidls(user: &str, path: &Path, home: Option<String>) -> Result<String, String> {
    use pop3d::backend::{registry, UserInfo};
    let config = match config::load(path) {
        Ok(config) => config,
        Err(err @ ConfigError::Read { .. }) => return Err(format!("pop3d: {err}")),
        Err(err) => return Err(err.to_string()),
    };
    let auth = registry::build_auth(&config.auth).map_err(|e| format!("pop3d: {e}"))?;
    let store = registry::build_store(&config.store).map_err(|e| format!("pop3d: {e}"))?;
    let name_only = || UserInfo {
        name: user.to_owned(),
        ..UserInfo::default()
    };
    // The secret lookup is the one way the auth interface gives a user's
    // attributes without a password; the secret itself is dropped unused.
    let mut info =
        match auth.secret(user) {
            Some(Ok((_secret, info))) => info,
            Some(Err(pop3d::backend::BackendError::Denied)) => {
                log::warn!(
                "the auth backend has no attributes of {user} without a password (unknown user, \
                 or a password stored as a hash); using the name alone{}",
                if home.is_some() { " and --home" } else { "" }
            );
                name_only()
            }
            Some(Err(err)) => return Err(format!("pop3d: looking up {user}: {err}")),
            None => {
                log::info!(
                "the auth backend cannot look users up without a password; using the name {user}\
                 {}",
                if home.is_some() { " and --home" } else { " alone" }
            );
                name_only()
            }
        };
    if let Some(home) = home {
        info.home = Some(home);
    }
    let maildrop = store.open(&info).map_err(|err| {
        let hint = if info.home.is_none() {
            " (if the store's path starts with ~, give the home with --home DIR)"
        } else {
            ""
        };
        format!("pop3d: cannot open the maildrop of {user}: {err}{hint}")
    })?;
    let mut text = String::new();
    for (index, message) in maildrop.messages().iter().enumerate() {
        text.push_str(&format!("{} {}\n", index + 1, message.uid));
    }
    // Dropping releases the maildrop without deleting anything.
    drop(maildrop);
    Ok(text)
}

/// check-config asks each backend whether it accepts its configuration
/// section, by building it exactly as the server would.
fn check_plugin(role: PluginRole, section: &PluginSection) -> Result<(), String> {
    match role {
        PluginRole::Auth => pop3d::backend::registry::build_auth(section).map(drop),
        PluginRole::Store => pop3d::backend::registry::build_store(section).map(drop),
    }
    .map_err(|err| err.to_string())
}

/// `pop3d --config FILE`: serves until SIGTERM or SIGINT.
fn run_with_config(path: &Path, log_target: LogTarget) -> ExitCode {
    // With syslog, stderr may lead nowhere (an init script's /dev/null):
    // why nothing started goes to the log as well.
    let also_log = |text: &str| {
        if log_target == LogTarget::Syslog {
            text.lines().for_each(|line| log::error!("{line}"));
        }
    };
    let config = match config::load(path) {
        Ok(config) => config,
        Err(err @ ConfigError::Read { .. }) => {
            let text = format!("pop3d: {err}");
            eprintln!("{text}");
            also_log(&text);
            return ExitCode::FAILURE;
        }
        Err(err) => {
            let text = format!(
                "{err}\npop3d: {} is not a usable configuration; nothing was started",
                path.display()
            );
            eprintln!("{text}");
            also_log(&text);
            return ExitCode::FAILURE;
        }
    };
    let source = pop3d::server::ConfigSource::File(path);
    let result = pop3d::server::run(&config, source, &mut |addrs: &[SocketAddr]| {
        log::info!(
            "pop3d {} listening on {}",
            env!("CARGO_PKG_VERSION"),
            list(addrs)
        );
        notify_ready(addrs);
    });
    if let Err(err) = &result {
        also_log(&format!("pop3d: {err}"));
    }
    exit_code(result)
}

/// `pop3d --inetd --config FILE`: one session on stdin/stdout. Problems are
/// logged (stderr may be the client's socket) and the client is told the
/// server is unavailable.
fn run_inetd(path: &Path) -> ExitCode {
    let config = match config::load(path) {
        Ok(config) => config,
        Err(err) => {
            for line in err.to_string().lines() {
                log::error!("{line}");
            }
            log::error!(
                "pop3d --inetd: {} is not a usable configuration; the client was turned away",
                path.display()
            );
            // The client may be gone already; nothing more to do then.
            let _ = io::stdout().write_all(inetd::UNAVAILABLE);
            return ExitCode::FAILURE;
        }
    };
    match inetd::run(&config) {
        Ok(_) => ExitCode::SUCCESS,
        Err(err) => {
            log::error!("pop3d --inetd: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Tells systemd the server is ready (`Type=notify`): once every listener
/// accepts connections, so units ordered after pop3d find it answering.
/// Without `$NOTIFY_SOCKET` (not started by systemd) it does nothing.
fn notify_ready(addrs: &[SocketAddr]) {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let message = format!("READY=1\nSTATUS=listening on {}", list(addrs));
    if let Err(e) = sd_notify(&socket, &message) {
        log::warn!(
            "cannot tell systemd that pop3d is ready (NOTIFY_SOCKET={}): {e}",
            socket.to_string_lossy()
        );
    }
}

/// Sends one sd_notify datagram to `socket`: a path, or an abstract socket
/// name written with a leading `@`.
fn sd_notify(socket: &OsStr, message: &str) -> io::Result<()> {
    let sender = UnixDatagram::unbound()?;
    match socket.as_bytes().strip_prefix(b"@") {
        Some(name) => send_abstract(&sender, name, message),
        None => sender.send_to(message.as_bytes(), socket).map(drop),
    }
}

#[cfg(target_os = "linux")]
fn send_abstract(sender: &UnixDatagram, name: &[u8], message: &str) -> io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    sender.send_to_addr(message.as_bytes(), &addr).map(drop)
}

#[cfg(not(target_os = "linux"))]
fn send_abstract(_: &UnixDatagram, _: &[u8], _: &str) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract socket names exist only on Linux",
    ))
}

/// `pop3d` alone: serves the demo until SIGTERM or SIGINT, then deletes its
/// files.
fn run_demo() -> ExitCode {
    let (demo, config) = match Demo::create() {
        Ok(created) => created,
        Err(err) => {
            eprintln!("pop3d: cannot set up the demo: {err}");
            return ExitCode::FAILURE;
        }
    };
    log::info!("demo files are in {}", demo.dir().display());
    let source = pop3d::server::ConfigSource::Demo;
    let result = pop3d::server::run(&config, source, &mut |addrs: &[SocketAddr]| {
        log::info!(
            "pop3d {} listening on {}",
            env!("CARGO_PKG_VERSION"),
            list(addrs)
        );
        let mut out = std::io::stdout().lock();
        // If stdout is closed nobody is reading the hint; the server still
        // runs.
        let _ = write!(out, "\n{}\n", demo::connect_hint(addrs));
        let _ = out.flush();
    });
    // The server is down: nothing reads the files any more.
    drop(demo);
    exit_code(result)
}

fn exit_code(result: Result<(), pop3d::server::ServerError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("pop3d: {err}");
            ExitCode::FAILURE
        }
    }
}

fn list(addrs: &[SocketAddr]) -> String {
    addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Command, UsageError> {
        parse_args(args.iter().map(OsString::from)).map(|i| i.command)
    }

    fn parse_log(args: &[&str]) -> Result<LogOptions, UsageError> {
        parse_args(args.iter().map(OsString::from)).map(|i| i.log)
    }

    #[test]
    fn command_lines_that_are_understood() {
        let run = |p: &str| Ok(Command::Run(PathBuf::from(p)));
        let inetd = |p: &str| Ok(Command::Inetd(PathBuf::from(p)));
        let check = |p: &str| Ok(Command::CheckConfig(PathBuf::from(p)));
        let table: &[(&[&str], Result<Command, UsageError>)] = &[
            (&[], Ok(Command::Demo)),
            (&["--config", "a.ron"], run("a.ron")),
            (&["-c", "a.ron"], run("a.ron")),
            (&["--config=a.ron"], run("a.ron")),
            (&["run", "--config", "a.ron"], run("a.ron")),
            (&["run", "-c", "a.ron"], run("a.ron")),
            (&["check-config", "a.ron"], check("a.ron")),
            (&["check-config", "--config", "a.ron"], check("a.ron")),
            (&["--help"], Ok(Command::Help)),
            (&["-h"], Ok(Command::Help)),
            (&["check-config", "--help"], Ok(Command::Help)),
            (&["--version"], Ok(Command::Version)),
            (&["-V"], Ok(Command::Version)),
            (&["--inetd", "--config", "a.ron"], inetd("a.ron")),
            (&["-c", "a.ron", "--inetd"], inetd("a.ron")),
            (&["run", "--inetd", "--config=a.ron"], inetd("a.ron")),
            (
                &["dump-config", "a.ron"],
                Ok(Command::DumpConfig("a.ron".into(), DumpMode::Full)),
            ),
            (
                &["dump-config", "--non-default", "a.ron"],
                Ok(Command::DumpConfig("a.ron".into(), DumpMode::NonDefault)),
            ),
            (
                &["dump-config", "a.ron", "--non-default"],
                Ok(Command::DumpConfig("a.ron".into(), DumpMode::NonDefault)),
            ),
            (
                &["--log-target", "syslog", "--config", "a.ron"],
                run("a.ron"),
            ),
            (&["--config", "a.ron", "--log-level=debug"], run("a.ron")),
            (
                &["pw", "-s", "BLF-CRYPT", "-r", "12"],
                Ok(Command::Pw(pop3d::pw::PwOptions {
                    scheme: Some(pop3d_passwd_file::scheme::Scheme::BlfCrypt),
                    cost: Some(12),
                    user: None,
                    test: None,
                })),
            ),
            (
                &["pw", "--test={SCRAM-SHA-1}4096,c2FsdA==,a2V5,a2V5"],
                Ok(Command::Pw(pop3d::pw::PwOptions {
                    scheme: None,
                    cost: None,
                    user: None,
                    test: Some("{SCRAM-SHA-1}4096,c2FsdA==,a2V5,a2V5".into()),
                })),
            ),
            (
                &["uidl", "alice", "--config", "a.ron"],
                Ok(Command::Uidl {
                    user: "alice".into(),
                    config: "a.ron".into(),
                    home: None,
                }),
            ),
            (
                &["uidl", "-c", "a.ron", "--home=/home/b", "bob@example.org"],
                Ok(Command::Uidl {
                    user: "bob@example.org".into(),
                    config: "a.ron".into(),
                    home: Some("/home/b".into()),
                }),
            ),
        ];
        for (args, expected) in table {
            assert_eq!(&parse(args), expected, "{args:?}");
        }
    }

    #[test]
    fn command_lines_that_are_refused_say_why() {
        let table: &[(&[&str], &str)] = &[
            (&["--bogus"], "unknown argument `--bogus`"),
            (&["serve"], "unknown argument `serve`"),
            (&["--config"], "--config needs a FILE"),
            (&["-c"], "-c needs a FILE"),
            (&["--config="], "--config= needs a FILE"),
            (&["--config", "a.ron", "extra"], "unknown argument `extra`"),
            (
                &["run"],
                "`run` needs --config FILE (without any arguments pop3d starts the demo)",
            ),
            (
                &["run", "a.ron"],
                "`run` takes --config FILE, not a bare file (try: pop3d run --config a.ron)",
            ),
            (&["check-config"], "check-config needs a FILE to check"),
            (
                &["check-config", "a.ron", "b.ron"],
                "unknown argument `b.ron` (check-config takes one FILE)",
            ),
            (&["check-config", "-x"], "unknown argument `-x`"),
            (
                &["--inetd"],
                "--inetd goes with --config FILE only (pop3d --inetd --config FILE)",
            ),
            (
                &["check-config", "a.ron", "--inetd"],
                "--inetd goes with --config FILE only (pop3d --inetd --config FILE)",
            ),
            (&["dump-config"], "dump-config needs a FILE to print"),
            (
                &["dump-config", "a.ron", "b.ron"],
                "unknown argument `b.ron` (dump-config takes one FILE and maybe --non-default)",
            ),
            (&["--log-target"], "--log-target needs stderr, syslog or file:PATH"),
            (
                &["--log-target", "file", "-c", "a.ron"],
                "unknown log target `file` (expected stderr, syslog or file:PATH)",
            ),
            (
                &["--log-level=loud", "-c", "a.ron"],
                "unknown log level `loud` (expected error, warn, info, debug or trace)",
            ),
            (&["--syslog-socket"], "--syslog-socket needs a PATH"),
            (
                &["--log-target", "file:", "-c", "a.ron"],
                "--log-target file: needs a PATH (file:/var/log/pop3d.log)",
            ),
            (
                &["--log-file", "/l", "--log-target", "stderr", "-c", "a.ron"],
                "--log-file and --log-target both say where log lines go; give one",
            ),
            (&["pw", "-s", "DES"], "pw: unknown scheme `DES` (known: SHA512-CRYPT, SHA256-CRYPT, BLF-CRYPT, ARGON2ID, ARGON2I, CRYPT, SSHA512, SSHA256, SSHA, CRAM-MD5, SCRAM-SHA-256, SCRAM-SHA-1, PLAIN, PLAIN.BASE64)"),
            (
                &["uidl", "--config", "a.ron"],
                "uidl needs a USER (pop3d uidl USER --config FILE)",
            ),
            (
                &["uidl", "alice"],
                "uidl needs --config FILE (pop3d uidl USER --config FILE)",
            ),
            (
                &["uidl", "alice", "-c", "a.ron", "--home"],
                "--home needs a DIR",
            ),
        ];
        for (args, why) in table {
            assert_eq!(parse(args), Err(UsageError(why.to_string())), "{args:?}");
        }
    }

    #[test]
    fn logging_options_are_read_with_any_command() {
        assert_eq!(
            parse_log(&[
                "--log-target=syslog",
                "--log-level",
                "DEBUG",
                "check-config",
                "a.ron"
            ]),
            Ok(LogOptions {
                target: Some(LogTarget::Syslog),
                level: Some("debug".into()),
                syslog_socket: None,
                file: None,
            })
        );
        assert_eq!(
            parse_log(&["--inetd", "-c", "a.ron", "--syslog-socket", "/tmp/log"]),
            Ok(LogOptions {
                target: None,
                level: None,
                syslog_socket: Some("/tmp/log".into()),
                file: None,
            })
        );
        let to_file = || LogOptions {
            file: Some("/var/log/pop3d.log".into()),
            ..LogOptions::default()
        };
        for args in [
            &["--log-file", "/var/log/pop3d.log", "-c", "a.ron"][..],
            &["-c", "a.ron", "--log-file=/var/log/pop3d.log"],
            &["--log-target", "file:/var/log/pop3d.log", "-c", "a.ron"],
            &["--log-target=file:/var/log/pop3d.log", "-c", "a.ron"],
        ] {
            assert_eq!(parse_log(args), Ok(to_file()), "{args:?}");
        }
    }

    #[test]
    fn check_config_accepts_a_config_whose_files_exist() {
        // The demo's files exist, so this stays true once check-config also
        // asks the backends (the example's /etc/pop3d/passwd may not exist).
        let (demo, config) = Demo::create().unwrap();
        let path = demo.dir().join("pop3d.ron");
        std::fs::write(&path, ron::to_string(&config).unwrap()).unwrap();
        assert_eq!(check_config(&path), Ok(format!("{}: OK", path.display())));
    }

    #[test]
    fn check_config_lists_every_problem() {
        let path = std::env::temp_dir().join(format!("pop3d-check-{}.ron", std::process::id()));
        std::fs::write(
            &path,
            "(\n  auth: (plugin: \"passwd-file\"),\n  store: (plugin: \"\"),\n  limits: (idle_timeout_secs: 30),\n)\n",
        )
        .unwrap();
        let report = check_config(&path);
        std::fs::remove_file(&path).unwrap();
        let report = report.unwrap_err();
        let lines: Vec<&str> = report.lines().collect();
        assert_eq!(lines.len(), 3, "{report}");
        assert!(
            lines[0].starts_with(&format!(
                "{}:2:10: auth passwd-file: config: missing field `path`",
                path.display()
            )),
            "{report}"
        );
        assert!(
            lines[1].starts_with(&format!(
                "{}:3:11: store plugin name is empty",
                path.display()
            )),
            "{report}"
        );
        assert!(
            lines[2].starts_with(&format!("{}:4:12: idle_timeout_secs is 30", path.display())),
            "{report}"
        );
    }

    #[test]
    fn check_config_names_a_missing_file() {
        let report = check_config(Path::new("/nonexistent/pop3d.ron")).unwrap_err();
        assert!(
            report.starts_with("pop3d: /nonexistent/pop3d.ron: cannot read the configuration:"),
            "{report}"
        );
    }
}
