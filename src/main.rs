//! The `pop3d` command line.
//!
//! With no arguments it runs the embedded demo (a throwaway user and maildir
//! on loopback) and prints how to connect, so a fresh checkout does something
//! useful with `cargo run`. With `--config FILE` it runs a real server;
//! `check-config FILE` validates a file without starting anything.
//!
//! Arguments are parsed by hand: there are five forms, and a parser crate
//! would cost more build time than the code it saves.
//!
//! Exit codes: 0 success, 1 the server or the check failed, 2 the command
//! line was not understood.
#![deny(unsafe_code)]

use pop3d::config::{self, ConfigError, PluginRole, PluginSection};
use pop3d::demo::{self, Demo};
use std::ffi::OsString;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const USAGE: &str = "\
pop3d: a POP3 server (RFC 1939)

Usage:
  pop3d                      run a demo server on 127.0.0.1 (user demo, password demo)
  pop3d --config FILE        run with the configuration in FILE
                             (also: -c FILE, --config=FILE, pop3d run --config FILE)
  pop3d check-config FILE    check FILE, list every problem, exit 1 if there are any
  pop3d --help               show this help
  pop3d --version            show the version

The log goes to stderr; RUST_LOG sets its level (default info), e.g. RUST_LOG=debug.
examples/pop3d.ron is a commented configuration to start from.
";

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
enum Command {
    /// No arguments: serve the embedded demo.
    Demo,
    /// Serve with the configuration file at this path.
    Run(PathBuf),
    /// Validate the configuration file at this path and exit.
    CheckConfig(PathBuf),
    /// Print usage.
    Help,
    /// Print the version.
    Version,
}

/// A command line we did not understand; the text says what was wrong.
#[derive(Debug, PartialEq, Eq)]
struct UsageError(String);

fn main() -> ExitCode {
    let command = match parse_args(std::env::args_os().skip(1)) {
        Ok(command) => command,
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
            init_logging();
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
        Command::Run(path) => {
            init_logging();
            run_with_config(&path)
        }
        Command::Demo => {
            init_logging();
            run_demo()
        }
    }
}

/// Reads the command line (without the program name).
fn parse_args(args: impl IntoIterator<Item = OsString>) -> Result<Command, UsageError> {
    let args: Vec<OsString> = args.into_iter().collect();
    let is = |arg: &OsString, names: &[&str]| names.iter().any(|name| arg == name);
    if args.iter().any(|a| is(a, &["-h", "--help"])) {
        return Ok(Command::Help);
    }
    if args.iter().any(|a| is(a, &["-V", "--version"])) {
        return Ok(Command::Version);
    }
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
    match config_option(&args)? {
        Some(path) => Ok(Command::Run(path)),
        None => Err(UsageError(format!(
            "unknown argument `{}`",
            first.to_string_lossy()
        ))),
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

/// Log lines on stderr with a timestamp and level; RUST_LOG overrides the
/// default level of `info`.
fn init_logging() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_secs()
        .format_target(false)
        .init();
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
fn run_with_config(path: &Path) -> ExitCode {
    let config = match config::load(path) {
        Ok(config) => config,
        Err(err @ ConfigError::Read { .. }) => {
            eprintln!("pop3d: {err}");
            return ExitCode::FAILURE;
        }
        Err(err) => {
            eprintln!("{err}");
            eprintln!(
                "pop3d: {} is not a usable configuration; nothing was started",
                path.display()
            );
            return ExitCode::FAILURE;
        }
    };
    let result = pop3d::server::run(&config, &mut |addrs: &[SocketAddr]| {
        log::info!(
            "pop3d {} listening on {}",
            env!("CARGO_PKG_VERSION"),
            list(addrs)
        );
    });
    exit_code(result)
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
    let result = pop3d::server::run(&config, &mut |addrs: &[SocketAddr]| {
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
        parse_args(args.iter().map(OsString::from))
    }

    #[test]
    fn command_lines_that_are_understood() {
        let run = |p: &str| Ok(Command::Run(PathBuf::from(p)));
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
        ];
        for (args, why) in table {
            assert_eq!(parse(args), Err(UsageError(why.to_string())), "{args:?}");
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
