//! plugin_ab: sessions per second with the bundled backends linked in
//! (`plugin: "maildir"`) versus loaded from their shared libraries
//! (`plugin: "/path/libpop3d_maildir.so"`), measured in one run.
//!
//! It starts two pop3d processes on loopback over the same users and
//! maildirs, A with the built-in names and B with the `.so` paths, and runs
//! rounds of complete sessions against them in interleaved order (A B, B A,
//! A B, ...), so drift in machine load hits both alike. Each session is
//! `USER`, `PASS`, `STAT`, `LIST`, `RETR` of every message, `QUIT`, and
//! checks every reply; `--concurrency` clients run at once, each with a
//! user of its own (a maildrop is locked by one session at a time). It
//! prints sessions/s per round, the medians, and the median of the
//! per-round ratios B/A (the two runs of a round are adjacent in time), and
//! the same for the server's CPU time per session (all its threads, from
//! `/proc`), which a busy machine disturbs less than wall-clock throughput.
//!
//! ```sh
//! cargo build --release --bin pop3d -p pop3d-maildir -p pop3d-passwd-file
//! cargo run --release --example plugin_ab -- --pop3d target/release/pop3d \
//!     --libs target/release --sessions 2000 --concurrency 4 --rounds 7
//! ```
//!
//! Until the general load generator lands this is the tool for that one
//! comparison; it uses only the standard library.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

/// Messages in each user's maildir.
const MESSAGES: usize = 20;

/// What the command line asks for.
struct Options {
    /// The pop3d binary.
    pop3d: PathBuf,
    /// Directory holding libpop3d_maildir.so and libpop3d_passwd_file.so.
    libs: PathBuf,
    /// Sessions per round and server.
    sessions: usize,
    /// Clients running sessions at once.
    concurrency: usize,
    /// Rounds (each runs both servers once).
    rounds: usize,
    /// Size of each message body in bytes.
    message_size: usize,
}

fn parse_options() -> Result<Options, String> {
    let mut options = Options {
        pop3d: PathBuf::from("target/release/pop3d"),
        libs: PathBuf::from("target/release"),
        sessions: 2000,
        concurrency: 4,
        rounds: 7,
        message_size: 4096,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = || {
            value
                .parse::<usize>()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| format!("{flag}: {value:?} is not a positive number"))
        };
        match flag.as_str() {
            "--pop3d" => options.pop3d = PathBuf::from(&value),
            "--libs" => options.libs = PathBuf::from(&value),
            "--sessions" => options.sessions = number()?,
            "--concurrency" => options.concurrency = number()?,
            "--rounds" => options.rounds = number()?,
            "--message-size" => options.message_size = number()?,
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(options)
}

/// A pop3d process, killed when dropped.
struct Server {
    /// The process.
    child: Child,
    /// Where it listens.
    addr: SocketAddr,
}

impl Server {
    fn start(
        pop3d: &Path,
        dir: &Path,
        name: &str,
        auth: &str,
        store: &str,
    ) -> Result<Server, String> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map_err(|e| format!("cannot find a free port: {e}"))?
            .port();
        let config = format!(
            "(listen: [(addr: \"127.0.0.1:{port}\")], allow_root: true, \
             limits: (max_per_ip: 1000, auth_failure_delay_ms: 0),\n \
             auth: (plugin: {auth:?}, config: (path: {:?})),\n \
             store: (plugin: {store:?}, config: (root: {:?})))\n",
            dir.join("passwd").display().to_string(),
            dir.join("mail/%u").display().to_string(),
        );
        let config_path = dir.join(format!("{name}.ron"));
        fs::write(&config_path, config).map_err(|e| e.to_string())?;
        let log = fs::File::create(dir.join(format!("{name}.log"))).map_err(|e| e.to_string())?;
        let child = Command::new(pop3d)
            .arg("--config")
            .arg(&config_path)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", pop3d.display()))?;
        let mut server = Server {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(server.addr).is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!("server {name} exited ({status}); see {name}.log"));
            }
            if Instant::now() > deadline {
                return Err(format!("server {name} did not listen within 30 s"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes `users` users (password "pw") with `MESSAGES` messages each.
fn write_fixture(dir: &Path, users: usize, message_size: usize) -> Result<(), std::io::Error> {
    let mut passwd = String::new();
    let line = "All work and no play makes a benchmark a dull program.\n";
    let body: String = line.repeat(message_size / line.len() + 1)[..message_size].to_string();
    for user in 0..users {
        passwd.push_str(&format!("user{user}:{{PLAIN}}pw\n"));
        let maildir = dir.join(format!("mail/user{user}"));
        for sub in ["cur", "new", "tmp"] {
            fs::create_dir_all(maildir.join(sub))?;
        }
        for n in 0..MESSAGES {
            let message = format!("Subject: message {n}\nFrom: a@example.org\n\n{body}");
            fs::write(
                maildir
                    .join("cur")
                    .join(format!("{}.M{n}.bench:2,S", 1_700_000_000 + n)),
                message,
            )?;
        }
    }
    fs::write(dir.join("passwd"), passwd)
}

/// One connection's reader and writer.
struct Connection {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    line: Vec<u8>,
}

impl Connection {
    fn open(addr: SocketAddr) -> Result<Connection, String> {
        let stream = TcpStream::connect(addr).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        let writer = stream.try_clone().map_err(|e| e.to_string())?;
        let mut connection = Connection {
            reader: BufReader::new(stream),
            writer,
            line: Vec::new(),
        };
        connection.expect_ok("greeting")?;
        Ok(connection)
    }

    fn read_line(&mut self) -> Result<&[u8], String> {
        self.line.clear();
        let n = self
            .reader
            .read_until(b'\n', &mut self.line)
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed".into());
        }
        Ok(&self.line)
    }

    fn expect_ok(&mut self, what: &str) -> Result<(), String> {
        let line = self.read_line()?;
        if line.starts_with(b"+OK") {
            Ok(())
        } else {
            Err(format!(
                "{what}: {}",
                String::from_utf8_lossy(line).trim_end()
            ))
        }
    }

    fn command(&mut self, command: &str) -> Result<(), String> {
        self.writer
            .write_all(command.as_bytes())
            .map_err(|e| e.to_string())?;
        self.expect_ok(command.trim_end())
    }

    /// Reads a multi-line body to its terminator; returns its lines.
    fn body(&mut self) -> Result<usize, String> {
        let mut lines = 0;
        loop {
            if self.read_line()? == b".\r\n" {
                return Ok(lines);
            }
            lines += 1;
        }
    }
}

/// One full session as `user`.
fn session(addr: SocketAddr, user: usize) -> Result<(), String> {
    let mut connection = Connection::open(addr)?;
    connection.command(&format!("USER user{user}\r\n"))?;
    connection.command("PASS pw\r\n")?;
    connection.command("STAT\r\n")?;
    connection.command("LIST\r\n")?;
    if connection.body()? != MESSAGES {
        return Err("LIST did not list every message".into());
    }
    for n in 1..=MESSAGES {
        connection.command(&format!("RETR {n}\r\n"))?;
        connection.body()?;
    }
    connection.command("QUIT\r\n")
}

/// CPU time the process `pid` has used, all its threads together, in
/// nanoseconds (Linux `/proc/<pid>/task/*/schedstat`); `None` elsewhere.
/// pop3d's threads live as long as the server, so nothing is lost to
/// threads that ended.
fn cpu_ns(pid: u32) -> Option<u64> {
    let mut total = 0u64;
    for task in fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let stat = fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        total += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

/// What one round against one server measured.
struct Measured {
    /// Sessions per second of wall-clock time.
    per_second: f64,
    /// Server CPU time per session in microseconds, if it can be read.
    cpu_us: Option<f64>,
}

/// Runs `sessions` sessions against `server` with `concurrency` clients.
fn measure(server: &Server, sessions: usize, concurrency: usize) -> Result<Measured, String> {
    let pid = server.child.id();
    let cpu_before = cpu_ns(pid);
    let per_second = round(server.addr, sessions, concurrency)?;
    let cpu_us = match (cpu_before, cpu_ns(pid)) {
        (Some(before), Some(after)) => Some((after - before) as f64 / 1000.0 / sessions as f64),
        _ => None,
    };
    Ok(Measured { per_second, cpu_us })
}

/// Runs `sessions` sessions with `concurrency` clients; sessions/s.
fn round(addr: SocketAddr, sessions: usize, concurrency: usize) -> Result<f64, String> {
    let start = Instant::now();
    let clients: Vec<_> = (0..concurrency)
        .map(|client| {
            let share = sessions / concurrency + usize::from(client < sessions % concurrency);
            std::thread::spawn(move || -> Result<(), String> {
                for _ in 0..share {
                    session(addr, client)?;
                }
                Ok(())
            })
        })
        .collect();
    for client in clients {
        client
            .join()
            .map_err(|_| "a client thread panicked".to_string())??;
    }
    Ok(sessions as f64 / start.elapsed().as_secs_f64())
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    if values.len() % 2 == 1 {
        values[middle]
    } else {
        (values[middle - 1] + values[middle]) / 2.0
    }
}

fn run(options: &Options) -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("pop3d-plugin-ab-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let result = (|| {
        write_fixture(&dir, options.concurrency, options.message_size)
            .map_err(|e| format!("cannot write the fixture: {e}"))?;
        let library = |name: &str| -> Result<String, String> {
            let path = options.libs.join(name);
            fs::canonicalize(&path)
                .map(|path| path.display().to_string())
                .map_err(|e| format!("{}: {e}; build it first", path.display()))
        };
        let builtin = Server::start(&options.pop3d, &dir, "builtin", "passwd-file", "maildir")?;
        let loaded = Server::start(
            &options.pop3d,
            &dir,
            "loaded",
            &library("libpop3d_passwd_file.so")?,
            &library("libpop3d_maildir.so")?,
        )?;
        // Warm-up: fills both size caches and the page cache.
        round(builtin.addr, options.concurrency * 2, options.concurrency)?;
        round(loaded.addr, options.concurrency * 2, options.concurrency)?;

        let (mut a, mut b) = (Vec::<Measured>::new(), Vec::<Measured>::new());
        println!(
            "{} sessions/round, {} clients, {MESSAGES} messages of {} bytes per maildrop",
            options.sessions, options.concurrency, options.message_size
        );
        let cpu = |m: &Measured| m.cpu_us.map_or("n/a".to_string(), |us| format!("{us:.1}"));
        for n in 0..options.rounds {
            let a_first = n % 2 == 0;
            for run_a in [a_first, !a_first] {
                let (server, results) = if run_a {
                    (&builtin, &mut a)
                } else {
                    (&loaded, &mut b)
                };
                results.push(measure(server, options.sessions, options.concurrency)?);
            }
            println!(
                "round {:2}: built-in {:7.1} sessions/s {:>6} us CPU/session   \
                 .so {:7.1} sessions/s {:>6} us CPU/session",
                n + 1,
                a[n].per_second,
                cpu(&a[n]),
                b[n].per_second,
                cpu(&b[n]),
            );
        }
        // Each round's two runs are adjacent in time, so their ratio
        // cancels slow drift in machine load; its median is the figure.
        let mut rate_ratios: Vec<f64> = a
            .iter()
            .zip(&b)
            .map(|(a, b)| b.per_second / a.per_second)
            .collect();
        let mut rates_a: Vec<f64> = a.iter().map(|m| m.per_second).collect();
        let mut rates_b: Vec<f64> = b.iter().map(|m| m.per_second).collect();
        println!(
            "throughput: median built-in {:.1} sessions/s, .so {:.1} sessions/s; \
             median per-round ratio .so/built-in {:.3}",
            median(&mut rates_a),
            median(&mut rates_b),
            median(&mut rate_ratios)
        );
        let cpu_pairs: Vec<(f64, f64)> = a
            .iter()
            .zip(&b)
            .filter_map(|(a, b)| Some((a.cpu_us?, b.cpu_us?)))
            .collect();
        if !cpu_pairs.is_empty() {
            // Sessions per CPU-second: built-in CPU per session over .so's.
            let mut cpu_ratios: Vec<f64> = cpu_pairs.iter().map(|(a, b)| a / b).collect();
            let mut cpu_a: Vec<f64> = cpu_pairs.iter().map(|(a, _)| *a).collect();
            let mut cpu_b: Vec<f64> = cpu_pairs.iter().map(|(_, b)| *b).collect();
            println!(
                "server CPU: median built-in {:.1} us/session, .so {:.1} us/session; \
                 median per-round ratio of sessions per CPU-second .so/built-in {:.3}",
                median(&mut cpu_a),
                median(&mut cpu_b),
                median(&mut cpu_ratios)
            );
        }
        Ok(())
    })();
    let _ = fs::remove_dir_all(&dir);
    result
}

fn main() -> ExitCode {
    let options = match parse_options() {
        Ok(options) => options,
        Err(why) => {
            eprintln!("plugin_ab: {why}");
            return ExitCode::from(2);
        }
    };
    match run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("plugin_ab: {why}");
            ExitCode::FAILURE
        }
    }
}
