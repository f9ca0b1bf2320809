//! `fetch`: a small POP3 client that moves mail from a server into a local
//! maildir, and deletes it on the server only once the local copy is on disk.
//!
//! ```text
//! POP3_PASSWORD=secret cargo run --example fetch -- \
//!     --server 127.0.0.1:1110 --user demo --maildir ./Mail [--keep] [--timeout SECS]
//! ```
//!
//! The password comes from the `POP3_PASSWORD` environment variable or the
//! first line of `--password-file FILE`; it is never printed. The client speaks
//! plain POP3 (no TLS), so use it on loopback or a trusted network.
//!
//! # How a message travels
//!
//! For each message: `RETR`, undo the dot-stuffing, turn CRLF into LF, write
//! the file into `<maildir>/tmp/`, fsync it, rename it into `<maildir>/new/`
//! and fsync that directory. Only then is its UIDL recorded as stored and
//! `DELE` sent. The server deletes at `QUIT`; if the connection drops before,
//! it deletes nothing.
//!
//! # Never the same message twice
//!
//! `<maildir>/.pop3-fetch-uidls` holds one `server user uidl` line per message
//! stored (server as given with `--server`). It is appended to and fsynced
//! after each message is stored, and rewritten atomically (temp file, fsync,
//! rename) at the start and the end of every run, which also drops entries
//! for messages no longer on the server. A crash therefore re-fetches at most
//! the one message that was being stored.
//!
//! - With `--keep`, mail stays on the server and only UIDLs not in the file
//!   are downloaded. The server must support `UIDL`.
//! - Without `--keep`, a message whose UIDL is already in the file was stored
//!   by an earlier run that lost its connection before `QUIT`: it is deleted
//!   without downloading it again. (A server without `UIDL` gets no such
//!   protection: a dropped connection means duplicates on the next run.)
//!
//! Do not run two fetches into the same maildir at once: they would race on
//! the UIDL file.
//!
//! # The last line
//!
//! POP3 cannot carry a message that does not end with a line break: the
//! server has to add CRLF before the terminating `.`. A server that follows
//! RFC 1939 announces the message's exact size in `LIST`, without that CRLF;
//! so when the received message is exactly two bytes longer than announced,
//! the added line break is removed again and the local copy is byte-exact.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Longest status or listing line accepted. RFC 2449 caps responses at 512
/// octets; this leaves room for chatty servers but stops a runaway one.
const MAX_RESPONSE_LINE: u64 = 8 * 1024;
/// Extra bytes allowed on top of twice a message's announced size before the
/// client assumes the server is misbehaving and stops reading.
const MESSAGE_SLACK: u64 = 64 * 1024;
/// Name of the record of stored UIDLs inside the maildir.
const SEEN_FILE: &str = ".pop3-fetch-uidls";

const USAGE: &str = "usage: fetch --server HOST:PORT --user NAME --maildir DIR \
[--keep] [--timeout SECS] [--password-file FILE]
  password: environment variable POP3_PASSWORD, or the first line of --password-file
  --keep     leave mail on the server and fetch only messages not fetched before
  --timeout  seconds to wait for the server before giving up (default 60)";

fn main() -> ExitCode {
    let options = match Options::parse(std::env::args().skip(1)) {
        Ok(Some(options)) => options,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            eprintln!("fetch: {err}");
            return ExitCode::from(2);
        }
    };
    match run(&options) {
        Ok(summary) => {
            println!("fetch: {summary}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("fetch: {err}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------
// Errors

/// Everything that stops a run. Each message says what went wrong and, where
/// there is one, what to do about it.
#[derive(Debug)]
enum FetchError {
    /// The command line is wrong.
    Usage(String),
    /// No password, or the password file could not be read.
    Password(String),
    /// No TCP connection to the server.
    Connect { server: String, source: io::Error },
    /// Reading from or writing to the server failed (includes timeouts).
    Network { doing: String, source: io::Error },
    /// The server closed the connection.
    Closed { doing: String },
    /// The server answered `-ERR`; `reply` is its whole status line.
    Refused { what: String, reply: String },
    /// The server said something that is not POP3.
    Protocol(String),
    /// `--keep` without a server that can name its messages.
    NoUidl,
    /// A message grew far beyond the size the server announced.
    MessageTooLarge {
        number: u32,
        announced: u64,
        limit: u64,
    },
    /// The local maildir or UIDL file could not be written.
    Local {
        path: PathBuf,
        doing: &'static str,
        source: io::Error,
    },
}

impl FetchError {
    /// Whether the conversation with the server is still at a command
    /// boundary, so that `QUIT` can be sent to commit earlier deletions.
    fn server_still_in_step(&self) -> bool {
        matches!(
            self,
            FetchError::Refused { .. } | FetchError::Local { .. } | FetchError::NoUidl
        )
    }
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FetchError::Usage(msg) => write!(f, "{msg}\n{USAGE}"),
            FetchError::Password(msg) => f.write_str(msg),
            FetchError::Connect { server, source } => {
                write!(f, "cannot connect to {server}: {source}")
            }
            // A socket timeout surfaces as WouldBlock on Unix, which reads
            // like a bug; say what happened instead.
            FetchError::Network { doing, source }
                if matches!(
                    source.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                write!(
                    f,
                    "{doing}: the server did not answer in time (see --timeout)"
                )
            }
            FetchError::Network { doing, source } => write!(f, "{doing}: {source}"),
            FetchError::Closed { doing } => {
                write!(f, "{doing}: the server closed the connection")
            }
            FetchError::Refused { what, reply } => write!(f, "server refused {what}: {reply}"),
            FetchError::Protocol(msg) => write!(f, "not a POP3 reply: {msg}"),
            FetchError::NoUidl => f.write_str(
                "--keep needs the UIDL command to tell new messages from old ones, \
                 and this server does not offer it; run without --keep to download \
                 and delete instead",
            ),
            FetchError::MessageTooLarge {
                number,
                announced,
                limit,
            } => write!(
                f,
                "message {number}: LIST announced {announced} bytes but the server sent \
                 more than {limit}; stopped reading it (nothing of this session is \
                 deleted; messages already stored are remembered and deleted next run)"
            ),
            FetchError::Local {
                path,
                doing,
                source,
            } => {
                write!(f, "cannot {doing} {}: {source}", path.display())
            }
        }
    }
}

/// Shorthand for a failed local file operation.
fn local(path: &Path, doing: &'static str) -> impl FnOnce(io::Error) -> FetchError {
    let path = path.to_path_buf();
    move |source| FetchError::Local {
        path,
        doing,
        source,
    }
}

// ---------------------------------------------------------------------------
// Command line

/// A password that never shows up in debug output or logs.
struct Password(String);

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// What the user asked for.
#[derive(Debug)]
struct Options {
    /// `HOST:PORT` as typed; also the server's name in the UIDL file.
    server: String,
    /// POP3 user name.
    user: String,
    /// Local maildir that receives the mail.
    maildir: PathBuf,
    /// Leave mail on the server and fetch only what is new.
    keep: bool,
    /// How long to wait for the server at any step before giving up.
    timeout: Duration,
    /// The account's password.
    password: Password,
}

impl Options {
    /// Parses the arguments; `Ok(None)` means help was asked for.
    fn parse(args: impl Iterator<Item = String>) -> Result<Option<Options>, FetchError> {
        let mut server = None;
        let mut user = None;
        let mut maildir = None;
        let mut keep = false;
        let mut timeout_secs = 60;
        let mut password_file = None;
        let mut args = args;
        while let Some(arg) = args.next() {
            let (flag, inline_value) = match arg.split_once('=') {
                Some((flag, value)) if flag.starts_with("--") => (flag.to_string(), Some(value)),
                _ => (arg.clone(), None),
            };
            let mut value = |name: &str| -> Result<String, FetchError> {
                match inline_value {
                    Some(value) => Ok(value.to_string()),
                    None => args
                        .next()
                        .ok_or_else(|| FetchError::Usage(format!("{name} needs a value"))),
                }
            };
            match flag.as_str() {
                "--server" => server = Some(value("--server")?),
                "--user" => user = Some(value("--user")?),
                "--maildir" => maildir = Some(PathBuf::from(value("--maildir")?)),
                "--password-file" => password_file = Some(PathBuf::from(value("--password-file")?)),
                "--timeout" => {
                    let text = value("--timeout")?;
                    timeout_secs = match text.parse::<u64>() {
                        Ok(secs) if secs > 0 => secs,
                        _ => {
                            return Err(FetchError::Usage(format!(
                                "--timeout wants a whole number of seconds above 0, not {text:?}"
                            )))
                        }
                    };
                }
                "--keep" if inline_value.is_none() => keep = true,
                "--help" | "-h" => return Ok(None),
                _ => return Err(FetchError::Usage(format!("unknown argument {arg:?}"))),
            }
        }
        let missing = |name: &str| FetchError::Usage(format!("{name} is required"));
        let server = server.ok_or_else(|| missing("--server"))?;
        let user = user.ok_or_else(|| missing("--user"))?;
        let maildir = maildir.ok_or_else(|| missing("--maildir"))?;
        // A line break in a command argument would smuggle in a second command.
        if user.is_empty() || user.contains(['\r', '\n', ' ']) {
            return Err(FetchError::Usage(
                "--user must be non-empty, without spaces or line breaks".into(),
            ));
        }
        let password = read_password(password_file.as_deref())?;
        Ok(Some(Options {
            server,
            user,
            maildir,
            keep,
            timeout: Duration::from_secs(timeout_secs),
            password,
        }))
    }
}

/// `--password-file` wins over `POP3_PASSWORD` because it was asked for
/// explicitly on this command line.
fn read_password(file: Option<&Path>) -> Result<Password, FetchError> {
    let password = match file {
        Some(path) => {
            let text = fs::read_to_string(path).map_err(|err| {
                FetchError::Password(format!(
                    "cannot read the password file {}: {err}",
                    path.display()
                ))
            })?;
            let first_line = text.lines().next().unwrap_or("");
            if first_line.is_empty() {
                return Err(FetchError::Password(format!(
                    "the password file {} is empty; put the password on its first line",
                    path.display()
                )));
            }
            first_line.to_string()
        }
        None => match std::env::var("POP3_PASSWORD") {
            Ok(password) => password,
            Err(_) => {
                return Err(FetchError::Password(
                    "no password: set the environment variable POP3_PASSWORD or pass \
                     --password-file FILE (the password on its first line)"
                        .into(),
                ))
            }
        },
    };
    if password.contains(['\r', '\n']) {
        return Err(FetchError::Password(
            "the password contains a line break, which POP3 cannot send".into(),
        ));
    }
    Ok(Password(password))
}

// ---------------------------------------------------------------------------
// The run

/// What a successful run did, printed at the end.
struct Summary {
    /// Messages downloaded and stored by this run.
    stored: usize,
    /// Bytes written to the maildir for them.
    bytes: u64,
    /// Messages already stored earlier, deleted now without downloading.
    deleted_from_earlier: usize,
    /// Messages left on the server because an earlier run stored them.
    skipped: usize,
    /// Whether the messages stay on the server.
    keep: bool,
    /// Where they went.
    new_dir: PathBuf,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plural = if self.stored == 1 { "" } else { "s" };
        write!(
            f,
            "{} message{plural} ({} bytes) stored in {}",
            self.stored,
            self.bytes,
            self.new_dir.display()
        )?;
        if self.keep {
            write!(f, ", kept on the server")?;
            if self.skipped > 0 {
                write!(f, "; {} fetched by earlier runs skipped", self.skipped)?;
            }
        } else {
            write!(f, ", deleted on the server")?;
            if self.deleted_from_earlier > 0 {
                write!(
                    f,
                    "; {} stored by earlier runs deleted without downloading them again",
                    self.deleted_from_earlier
                )?;
            }
        }
        Ok(())
    }
}

fn run(options: &Options) -> Result<Summary, FetchError> {
    let mut maildir = Maildir::open(&options.maildir)?;
    let mut server = Connection::open(&options.server, options.timeout)?;
    match transfer(options, &mut maildir, &mut server) {
        Ok(summary) => Ok(summary),
        Err(err) => {
            // Deletions already sent only take effect at QUIT; when the
            // failure was local or a single refused command, committing them
            // is safe (those messages are on disk) and saves work next run.
            if err.server_still_in_step() {
                let _ = server.command("QUIT", "QUIT");
            }
            Err(err)
        }
    }
}

/// The POP3 conversation from greeting to QUIT.
fn transfer(
    options: &Options,
    maildir: &mut Maildir,
    server: &mut Connection,
) -> Result<Summary, FetchError> {
    server.greeting()?;
    // CAPA is only a courtesy here: old servers without it still work.
    match server.capabilities() {
        Ok(capabilities) => {
            if !capabilities
                .iter()
                .any(|cap| cap.eq_ignore_ascii_case("USER"))
            {
                eprintln!("fetch: warning: the server does not list USER; trying it anyway");
            }
        }
        Err(FetchError::Refused { .. }) => {}
        Err(err) => return Err(err),
    }
    if !server.peer.ip().is_loopback() {
        eprintln!(
            "fetch: warning: sending the password unencrypted to {} (this client has no TLS)",
            server.peer
        );
    }
    server.command(&format!("USER {}", options.user), "user name")?;
    server.send_password(&options.password)?;

    let (count, _total) = server.stat()?;
    let uidls = server.uidls(count)?;
    if uidls.is_none() {
        if options.keep {
            return Err(FetchError::NoUidl);
        }
        eprintln!(
            "fetch: warning: the server has no UIDL; if the connection drops before QUIT, \
             the next run downloads the messages stored so far again"
        );
    }
    let sizes = server.list(count)?;

    let mut seen = match &uidls {
        Some(uidls) => {
            let mut seen = SeenLog::load(&maildir.root, &options.server, &options.user)?;
            let on_server: HashSet<&str> = uidls.values().map(String::as_str).collect();
            seen.compact(|uidl| on_server.contains(uidl))?;
            Some(seen)
        }
        None => None,
    };

    let mut summary = Summary {
        stored: 0,
        bytes: 0,
        deleted_from_earlier: 0,
        skipped: 0,
        keep: options.keep,
        new_dir: maildir.root.join("new"),
    };
    let mut deleted_uidls = Vec::new();
    for (&number, &announced) in &sizes {
        let uidl = uidls.as_ref().and_then(|uidls| uidls.get(&number));
        let already_stored = match (uidl, &seen) {
            (Some(uidl), Some(seen)) => seen.contains(uidl),
            _ => false,
        };
        if already_stored && options.keep {
            summary.skipped += 1;
            continue;
        }
        if already_stored {
            summary.deleted_from_earlier += 1;
        } else {
            let message = server.retrieve(number, announced)?;
            let size = maildir.deliver(&message)?;
            summary.stored += 1;
            summary.bytes += size;
            if let (Some(uidl), Some(seen)) = (uidl, seen.as_mut()) {
                seen.record(uidl)?;
            }
        }
        if !options.keep {
            server.command(
                &format!("DELE {number}"),
                &format!("to delete message {number}"),
            )?;
            deleted_uidls.extend(uidl.cloned());
        }
    }

    // The server deletes at QUIT; only its +OK means the deletions happened.
    server.command("QUIT", "QUIT (the server did not delete anything)")?;
    if let Some(seen) = seen.as_mut() {
        // Deleted messages are gone from the server, so their lines are no
        // longer needed; the rewrite also folds this run's appends in.
        let deleted: HashSet<String> = deleted_uidls.into_iter().collect();
        seen.compact(|uidl| !deleted.contains(uidl))?;
    }
    Ok(summary)
}

// ---------------------------------------------------------------------------
// POP3 over TCP

/// One connection to the server, in lockstep: a command, then its reply.
struct Connection {
    /// Buffered reader over the socket; replies are read line by line.
    reader: BufReader<TcpStream>,
    /// The same socket for commands.
    writer: TcpStream,
    /// The address actually connected to, for the plaintext warning.
    peer: SocketAddr,
}

/// A message as received: ready for the maildir.
struct Message {
    /// The message with LF line ends, dot-stuffing undone.
    text: Vec<u8>,
}

impl Connection {
    fn open(server: &str, timeout: Duration) -> Result<Connection, FetchError> {
        let connect_error = |source| FetchError::Connect {
            server: server.to_string(),
            source,
        };
        let addrs = server.to_socket_addrs().map_err(connect_error)?;
        let mut last_error =
            io::Error::new(io::ErrorKind::NotFound, "the name resolved to no address");
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, timeout) {
                Ok(stream) => {
                    let setup = |stream: &TcpStream| -> io::Result<TcpStream> {
                        stream.set_read_timeout(Some(timeout))?;
                        stream.set_write_timeout(Some(timeout))?;
                        stream.set_nodelay(true)?;
                        stream.try_clone()
                    };
                    let writer = setup(&stream).map_err(connect_error)?;
                    return Ok(Connection {
                        reader: BufReader::with_capacity(64 * 1024, stream),
                        writer,
                        peer: addr,
                    });
                }
                Err(err) => last_error = err,
            }
        }
        Err(connect_error(last_error))
    }

    fn greeting(&mut self) -> Result<String, FetchError> {
        self.status("the greeting")
    }

    /// Sends one command and reads its status line; `what` names the
    /// command in errors ("server refused {what}: -ERR ...").
    fn command(&mut self, line: &str, what: &str) -> Result<String, FetchError> {
        self.send(line, what)?;
        self.status(what)
    }

    fn send_password(&mut self, password: &Password) -> Result<(), FetchError> {
        // The password goes to the socket only, never into an error message.
        self.send(&format!("PASS {}", password.0), "password")?;
        self.status("password").map(drop)
    }

    fn send(&mut self, line: &str, what: &str) -> Result<(), FetchError> {
        let mut bytes = Vec::with_capacity(line.len() + 2);
        bytes.extend_from_slice(line.as_bytes());
        bytes.extend_from_slice(b"\r\n");
        self.writer
            .write_all(&bytes)
            .map_err(|source| FetchError::Network {
                doing: format!("sending {what}"),
                source,
            })
    }

    /// Reads a status line: `Ok` with the text after `+OK`, or `Refused`.
    fn status(&mut self, what: &str) -> Result<String, FetchError> {
        let line = self.response_line(what)?;
        if let Some(rest) = line.strip_prefix("+OK") {
            Ok(rest.trim_start().to_string())
        } else if line.starts_with("-ERR") {
            Err(FetchError::Refused {
                what: what.to_string(),
                reply: line,
            })
        } else {
            Err(FetchError::Protocol(format!(
                "answer to {what} was {line:?}"
            )))
        }
    }

    /// One line of a status or listing, without its line end, made safe to
    /// print (a server's text must not drive the user's terminal).
    fn response_line(&mut self, what: &str) -> Result<String, FetchError> {
        let mut line = Vec::new();
        let read = (&mut self.reader)
            .take(MAX_RESPONSE_LINE)
            .read_until(b'\n', &mut line)
            .map_err(|source| FetchError::Network {
                doing: format!("reading the answer to {what}"),
                source,
            })?;
        if read == 0 {
            return Err(FetchError::Closed {
                doing: format!("waiting for the answer to {what}"),
            });
        }
        if !line.ends_with(b"\n") {
            return Err(if read as u64 >= MAX_RESPONSE_LINE {
                FetchError::Protocol(format!(
                    "a line of the answer to {what} is longer than {MAX_RESPONSE_LINE} bytes"
                ))
            } else {
                FetchError::Closed {
                    doing: format!("reading the answer to {what}"),
                }
            });
        }
        Ok(String::from_utf8_lossy(strip_line_end(&line))
            .chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect())
    }

    /// Lines of a multi-line listing up to the terminating `.`, at most
    /// `max_lines` of them.
    fn listing(&mut self, what: &str, max_lines: usize) -> Result<Vec<String>, FetchError> {
        let mut lines = Vec::new();
        loop {
            let line = self.response_line(what)?;
            if line == "." {
                return Ok(lines);
            }
            if lines.len() == max_lines {
                return Err(FetchError::Protocol(format!(
                    "the answer to {what} has more than {max_lines} lines"
                )));
            }
            let unstuffed = line.strip_prefix('.').unwrap_or(&line);
            lines.push(unstuffed.to_string());
        }
    }

    fn capabilities(&mut self) -> Result<Vec<String>, FetchError> {
        self.command("CAPA", "CAPA")?;
        self.listing("CAPA", 1000)
    }

    /// `STAT`: number of messages and their total size.
    fn stat(&mut self) -> Result<(usize, u64), FetchError> {
        let reply = self.command("STAT", "STAT")?;
        let mut fields = reply.split_ascii_whitespace();
        match (
            fields.next().and_then(|f| f.parse().ok()),
            fields.next().and_then(|f| f.parse().ok()),
        ) {
            (Some(count), Some(size)) => Ok((count, size)),
            _ => Err(FetchError::Protocol(format!("STAT answered {reply:?}"))),
        }
    }

    /// `UIDL`: message number to unique id, or `None` if the server has no
    /// UIDL command.
    fn uidls(&mut self, count: usize) -> Result<Option<BTreeMap<u32, String>>, FetchError> {
        match self.command("UIDL", "UIDL") {
            Ok(_) => {}
            Err(FetchError::Refused { .. }) => return Ok(None),
            Err(err) => return Err(err),
        }
        let mut uidls = BTreeMap::new();
        for line in self.listing("UIDL", count)? {
            let (number, uidl) = parse_pair(&line, "UIDL")?;
            uidls.insert(number, uidl.to_string());
        }
        Ok(Some(uidls))
    }

    /// `LIST`: message number to size in bytes (CRLF line ends, unstuffed).
    fn list(&mut self, count: usize) -> Result<BTreeMap<u32, u64>, FetchError> {
        self.command("LIST", "LIST")?;
        let mut sizes = BTreeMap::new();
        for line in self.listing("LIST", count)? {
            let (number, size) = parse_pair(&line, "LIST")?;
            let size = size
                .parse()
                .map_err(|_| FetchError::Protocol(format!("LIST line {line:?}")))?;
            sizes.insert(number, size);
        }
        Ok(sizes)
    }

    /// `RETR`: downloads one message. Lines may be of any length, but the
    /// whole reply may not exceed twice the announced size plus some slack,
    /// so a misbehaving server cannot exhaust memory.
    fn retrieve(&mut self, number: u32, announced: u64) -> Result<Message, FetchError> {
        let what = format!("RETR {number}");
        self.command(&what, &format!("to send message {number}"))?;
        let limit = announced.saturating_mul(2).saturating_add(MESSAGE_SLACK);
        let network = |source| FetchError::Network {
            doing: format!("receiving message {number}"),
            source,
        };
        let mut text = Vec::with_capacity(announced.min(16 * 1024 * 1024) as usize);
        let mut wire_size: u64 = 0;
        let mut received: u64 = 0;
        let mut line = Vec::new();
        loop {
            line.clear();
            let budget = limit - received;
            let read = (&mut self.reader)
                .take(budget)
                .read_until(b'\n', &mut line)
                .map_err(network)?;
            received += read as u64;
            if !line.ends_with(b"\n") {
                return Err(if read > 0 && received >= limit {
                    FetchError::MessageTooLarge {
                        number,
                        announced,
                        limit,
                    }
                } else {
                    FetchError::Closed {
                        doing: format!("receiving message {number}"),
                    }
                });
            }
            let content = strip_line_end(&line);
            if content == b"." {
                break;
            }
            let content = content.strip_prefix(b".").unwrap_or(content);
            wire_size += content.len() as u64 + 2;
            text.extend_from_slice(content);
            text.push(b'\n');
        }
        if wire_size == announced + 2 && text.ends_with(b"\n") {
            // The server added the line break POP3 needs before the final
            // dot to a message that had none (see the module docs).
            text.pop();
        } else if wire_size != announced {
            eprintln!(
                "fetch: warning: message {number}: LIST announced {announced} bytes, \
                 received {wire_size}; stored as received"
            );
        }
        Ok(Message { text })
    }
}

/// Splits `"<number> <rest>"` from a LIST or UIDL listing.
fn parse_pair<'a>(line: &'a str, what: &str) -> Result<(u32, &'a str), FetchError> {
    let bad = || FetchError::Protocol(format!("{what} line {line:?}"));
    let (number, rest) = line.split_once(' ').ok_or_else(bad)?;
    let number = number.parse().map_err(|_| bad())?;
    let rest = rest.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    Ok((number, rest))
}

/// A line without its CRLF (or bare LF, from lenient servers).
fn strip_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

// ---------------------------------------------------------------------------
// The local maildir

/// A maildir the client delivers into.
struct Maildir {
    /// The directory holding `cur`, `new` and `tmp`.
    root: PathBuf,
    /// Host name part of unique file names, already made safe for them.
    hostname: String,
    /// Distinguishes files delivered by this process within one microsecond.
    counter: u64,
}

impl Maildir {
    /// Opens the maildir, creating it and its subdirectories if missing
    /// (private to the user: mail is nobody else's business).
    fn open(root: &Path) -> Result<Maildir, FetchError> {
        for sub in ["cur", "new", "tmp"] {
            let dir = root.join(sub);
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(local(&dir, "create the maildir directory"))?;
        }
        Ok(Maildir {
            root: root.to_path_buf(),
            hostname: maildir_hostname(),
            counter: 0,
        })
    }

    /// Stores one message: write to `tmp/`, fsync, rename into `new/`, fsync
    /// `new/`. Returns the bytes written. When it returns, the message
    /// survives a crash.
    fn deliver(&mut self, message: &Message) -> Result<u64, FetchError> {
        let size = message.text.len() as u64;
        let name = format!("{},S={size}", self.unique_name());
        let tmp_path = self.root.join("tmp").join(&name);
        let new_dir = self.root.join("new");
        let new_path = new_dir.join(&name);
        let written = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp_path)?;
            file.write_all(&message.text)?;
            file.sync_all()
        })();
        if let Err(source) = written {
            let _ = fs::remove_file(&tmp_path);
            return Err(FetchError::Local {
                path: tmp_path,
                doing: "write",
                source,
            });
        }
        if let Err(source) = fs::rename(&tmp_path, &new_path) {
            let _ = fs::remove_file(&tmp_path);
            return Err(FetchError::Local {
                path: new_path,
                doing: "move the message to",
                source,
            });
        }
        sync_dir(&new_dir)?;
        Ok(size)
    }

    /// `<secs>.M<micros>P<pid>Q<counter>.<host>`, the usual maildir shape:
    /// unique across hosts, processes and deliveries within one process.
    fn unique_name(&mut self) -> String {
        self.counter += 1;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        format!(
            "{}.M{}P{}Q{}.{}",
            now.as_secs(),
            now.subsec_micros(),
            std::process::id(),
            self.counter,
            self.hostname
        )
    }
}

/// The host name with `/` and `:` escaped as the maildir convention asks
/// (`:` starts the info part, `/` would be a directory).
fn maildir_hostname() -> String {
    let raw = ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|path| fs::read_to_string(path).ok())
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_string());
    let mut safe = String::with_capacity(raw.len());
    for c in raw.chars() {
        match c {
            '/' => safe.push_str("\\057"),
            ':' => safe.push_str("\\072"),
            c if c.is_whitespace() || c.is_control() || c == ',' => safe.push('_'),
            c => safe.push(c),
        }
    }
    safe
}

/// Makes a directory's entries (a rename into it) durable.
fn sync_dir(dir: &Path) -> Result<(), FetchError> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(local(dir, "sync the directory"))
}

// ---------------------------------------------------------------------------
// The record of stored UIDLs

/// `<maildir>/.pop3-fetch-uidls`: which messages of which server and user
/// are already in the maildir.
///
/// Each line is `server user uidl`, each field percent-encoded so that a
/// space or line break in it cannot break the format. Recording a message
/// appends one line and fsyncs; a crash can at worst leave a torn last line
/// without its line end, which loading ignores (that one message is then
/// fetched again). Compacting rewrites the file atomically, which also
/// clears any torn line before new lines are appended.
struct SeenLog {
    /// The file itself.
    path: PathBuf,
    /// Encoded `server user ` prefix of this run's lines.
    prefix: String,
    /// Lines for other servers or users, kept as they are.
    others: Vec<String>,
    /// UIDLs stored for this server and user.
    stored: HashSet<String>,
    /// Open for appending once the file has been compacted.
    append: Option<File>,
}

impl SeenLog {
    fn load(maildir: &Path, server: &str, user: &str) -> Result<SeenLog, FetchError> {
        let path = maildir.join(SEEN_FILE);
        let prefix = format!("{} {} ", percent_encode(server), percent_encode(user));
        let mut log = SeenLog {
            path,
            prefix,
            others: Vec::new(),
            stored: HashSet::new(),
            append: None,
        };
        let text = match fs::read(&log.path) {
            Ok(text) => text,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(log),
            Err(source) => {
                return Err(FetchError::Local {
                    path: log.path,
                    doing: "read",
                    source,
                })
            }
        };
        // Only lines with their line end are complete; a torn tail is dropped.
        let complete = match text.iter().rposition(|&b| b == b'\n') {
            Some(end) => &text[..end],
            None => &[][..],
        };
        for line in String::from_utf8_lossy(complete).lines() {
            if line.split(' ').count() != 3 {
                continue;
            }
            match line.strip_prefix(&log.prefix) {
                Some(uidl) => {
                    log.stored.insert(percent_decode(uidl));
                }
                None => log.others.push(line.to_string()),
            }
        }
        Ok(log)
    }

    fn contains(&self, uidl: &str) -> bool {
        self.stored.contains(uidl)
    }

    /// Remembers that the message with this UIDL is safely stored.
    fn record(&mut self, uidl: &str) -> Result<(), FetchError> {
        let line = format!("{}{}\n", self.prefix, percent_encode(uidl));
        let path = &self.path;
        let file = match &mut self.append {
            Some(file) => file,
            None => self.append.insert(
                OpenOptions::new()
                    .append(true)
                    .create(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(local(path, "open"))?,
            ),
        };
        file.write_all(line.as_bytes())
            .and_then(|()| file.sync_data())
            .map_err(local(path, "append to"))?;
        self.stored.insert(uidl.to_string());
        Ok(())
    }

    /// Keeps only this user's UIDLs for which `keep` says yes, and rewrites
    /// the file atomically: temp file, fsync, rename, fsync the directory.
    fn compact(&mut self, keep: impl Fn(&str) -> bool) -> Result<(), FetchError> {
        self.stored.retain(|uidl| keep(uidl));
        let mut text = String::new();
        for line in &self.others {
            text.push_str(line);
            text.push('\n');
        }
        let mut mine: Vec<&String> = self.stored.iter().collect();
        mine.sort();
        for uidl in mine {
            text.push_str(&self.prefix);
            text.push_str(&percent_encode(uidl));
            text.push('\n');
        }
        let tmp_path = self
            .path
            .with_file_name(format!("{SEEN_FILE}.{}.tmp", std::process::id()));
        let written = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp_path)?;
            file.write_all(text.as_bytes())?;
            file.sync_all()
        })();
        if let Err(source) = written {
            let _ = fs::remove_file(&tmp_path);
            return Err(FetchError::Local {
                path: tmp_path,
                doing: "write",
                source,
            });
        }
        // The old append handle would write into the replaced file.
        self.append = None;
        fs::rename(&tmp_path, &self.path).map_err(local(&self.path, "replace"))?;
        match self.path.parent() {
            Some(dir) => sync_dir(dir),
            None => Ok(()),
        }
    }
}

/// Percent-encodes everything but printable ASCII other than `%`, so a field
/// never contains a space or line break.
fn percent_encode(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    for &byte in field.as_bytes() {
        if byte.is_ascii_graphic() && byte != b'%' {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn percent_decode(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
