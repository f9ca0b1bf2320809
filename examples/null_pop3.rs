//! null_pop3: the "speed of light" POP3 responder for benchmarks.
//!
//! ```text
//! cargo run --release --example null_pop3 -- --listen 127.0.0.1:21112 \
//!     [--maildrop PREFIX:COUNT:SIZE]... [--seed 1] [--fault KIND]...
//! ```
//!
//! One thread, one mio loop, no authentication, no storage: every user gets
//! the maildrop of the longest `--maildrop` prefix matching their name
//! (default `:20:4096`, twenty 4 KiB messages for anyone), rendered once at
//! start from the same generator as `mkfixture`, already CRLF and
//! dot-stuffed. Every command is answered +OK (unknown ones too). It is the
//! floor a real server is compared with: what the load generator, the
//! kernel and loopback TCP cost on their own.
//!
//! `--fault` makes it deliberately wrong so the load generator's checks can
//! be seen to work: `list-size` (LIST and STAT report one octet more per
//! message than RETR sends), `no-dot-stuffing`, `bare-lf` (RETR bodies with
//! LF line ends), `stat-count` (STAT counts one message too many),
//! `uidl-dup` (every message has the same UIDL).
//!
//! Not a POP3 server: TOP returns the whole message, there is no state
//! machine and nothing is ever deleted.

#[path = "shared/message.rs"]
mod message;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::process::ExitCode;

/// Deliberate mistakes, for testing the load generator.
#[derive(Default, Clone, Copy)]
struct Faults {
    /// LIST and STAT sizes one octet larger than what RETR sends.
    list_size: bool,
    /// RETR bodies sent without doubling leading dots.
    no_dot_stuffing: bool,
    /// RETR bodies with LF line ends.
    bare_lf: bool,
    /// STAT counts one message more than LIST lists.
    stat_count: bool,
    /// Every UIDL is the same string.
    uidl_dup: bool,
}

/// One maildrop served to every user whose name starts with `prefix`.
struct Maildrop {
    /// User-name prefix this maildrop is for; "" matches everyone.
    prefix: String,
    /// Wire form of each message (CRLF, dot-stuffed, no terminator).
    bodies: Vec<Vec<u8>>,
    /// Size of each message as LIST reports it (CRLF, before stuffing).
    sizes: Vec<u64>,
}

/// A piece of pending output.
enum Segment {
    /// A reply head or a short reply.
    Bytes(Vec<u8>),
    /// A message body streamed straight from the maildrop: (maildrop,
    /// message index, bytes already written).
    Body(usize, usize, usize),
}

/// One client.
struct Conn {
    /// The client socket.
    stream: TcpStream,
    /// Received bytes not yet ending in LF.
    input: Vec<u8>,
    /// Replies not yet written, in order.
    output: VecDeque<Segment>,
    /// Which maildrop USER chose.
    maildrop: usize,
    /// QUIT was answered: close once the output is written.
    quitting: bool,
}

/// Input lines longer than this close the connection (RFC 2449 allows 255).
const MAX_COMMAND: usize = 8192;

struct Server {
    /// Rendered once at start; every connection serves from them.
    maildrops: Vec<Maildrop>,
    /// Deliberate mistakes to make.
    faults: Faults,
    /// The one readiness queue.
    poll: Poll,
    /// The listening socket (token 0).
    listener: TcpListener,
    /// Connections by token - 1; None marks a free slot.
    conns: Vec<Option<Conn>>,
    /// Free indices in `conns`.
    free: Vec<usize>,
    /// One read buffer for every connection.
    buffer: Vec<u8>,
}

fn parse_maildrop(spec: &str, seed: u64, faults: Faults) -> Option<Maildrop> {
    let mut parts = spec.splitn(3, ':');
    let prefix = parts.next()?.to_string();
    let count: usize = parts.next()?.parse().ok()?;
    let size = message::parse_size(parts.next()?)?.max(message::MIN_SIZE);
    let mut bodies = Vec::with_capacity(count);
    let mut sizes = Vec::with_capacity(count);
    for n in 1..=count as u64 {
        let lf = message::render(seed, 1, "user", n, size);
        sizes.push(message::crlf_size(&lf) as u64 + u64::from(faults.list_size));
        let wire = if faults.bare_lf {
            let mut stuffed = message::wire_body(&lf);
            stuffed.retain(|&b| b != b'\r');
            stuffed
        } else if faults.no_dot_stuffing {
            lf.iter().fold(Vec::new(), |mut out, &b| {
                if b == b'\n' {
                    out.push(b'\r');
                }
                out.push(b);
                out
            })
        } else {
            message::wire_body(&lf)
        };
        bodies.push(wire);
    }
    Some(Maildrop {
        prefix,
        bodies,
        sizes,
    })
}

impl Server {
    fn pick_maildrop(&self, user: &[u8]) -> usize {
        let mut best = 0;
        let mut best_len = None;
        for (i, drop) in self.maildrops.iter().enumerate() {
            if user.starts_with(drop.prefix.as_bytes())
                && best_len.is_none_or(|l| drop.prefix.len() > l)
            {
                best = i;
                best_len = Some(drop.prefix.len());
            }
        }
        best
    }

    /// Answers one command line (without CRLF).
    fn answer(&self, conn: &mut Conn, line: &[u8]) {
        let mut words = line.split(|&b| b == b' ').filter(|w| !w.is_empty());
        let verb = words.next().unwrap_or(b"").to_ascii_uppercase();
        let arg = words.next();
        let number = arg
            .and_then(|a| std::str::from_utf8(a).ok())
            .and_then(|a| a.parse::<usize>().ok())
            .filter(|&n| n >= 1);
        let drop = &self.maildrops[conn.maildrop];
        let count = drop.sizes.len();
        let in_range = |n: usize| n <= count;
        let mut out = Vec::with_capacity(64);
        match verb.as_slice() {
            b"USER" => {
                conn.maildrop = self.pick_maildrop(arg.unwrap_or(b""));
                out.extend_from_slice(b"+OK\r\n");
            }
            b"STAT" => {
                let total: u64 = drop.sizes.iter().sum();
                let shown = count + usize::from(self.faults.stat_count);
                out.extend_from_slice(format!("+OK {shown} {total}\r\n").as_bytes());
            }
            b"LIST" | b"UIDL" => {
                let uidl = verb.as_slice() == b"UIDL";
                let value = |i: usize| {
                    if uidl {
                        if self.faults.uidl_dup {
                            "same".to_string()
                        } else {
                            format!("uid{:08}", i + 1)
                        }
                    } else {
                        drop.sizes[i].to_string()
                    }
                };
                match number {
                    Some(n) if in_range(n) => {
                        out.extend_from_slice(format!("+OK {n} {}\r\n", value(n - 1)).as_bytes())
                    }
                    Some(_) => out.extend_from_slice(b"-ERR no such message\r\n"),
                    None => {
                        out.extend_from_slice(b"+OK\r\n");
                        for i in 0..count {
                            out.extend_from_slice(format!("{} {}\r\n", i + 1, value(i)).as_bytes());
                        }
                        out.extend_from_slice(b".\r\n");
                    }
                }
            }
            b"RETR" | b"TOP" => match number {
                Some(n) if in_range(n) => {
                    let real = drop.sizes[n - 1] - u64::from(self.faults.list_size);
                    conn.output.push_back(Segment::Bytes(
                        format!("+OK {real} octets\r\n").into_bytes(),
                    ));
                    conn.output
                        .push_back(Segment::Body(conn.maildrop, n - 1, 0));
                    out.extend_from_slice(b".\r\n");
                }
                _ => out.extend_from_slice(b"-ERR no such message\r\n"),
            },
            b"CAPA" => out.extend_from_slice(b"+OK\r\nUSER\r\nUIDL\r\nTOP\r\n.\r\n"),
            b"QUIT" => {
                conn.quitting = true;
                out.extend_from_slice(b"+OK bye\r\n");
            }
            _ => out.extend_from_slice(b"+OK\r\n"),
        }
        conn.output.push_back(Segment::Bytes(out));
    }

    /// Writes pending output; Ok(true) when all of it went out.
    fn flush(&self, conn: &mut Conn) -> io::Result<bool> {
        while let Some(segment) = conn.output.front_mut() {
            let (bytes, written): (&[u8], &mut usize) = match segment {
                Segment::Bytes(bytes) => {
                    let n = match conn.stream.write(bytes) {
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e),
                    };
                    bytes.drain(..n);
                    if bytes.is_empty() {
                        conn.output.pop_front();
                    }
                    continue;
                }
                Segment::Body(drop, message, written) => {
                    (&self.maildrops[*drop].bodies[*message], written)
                }
            };
            match conn.stream.write(&bytes[*written..]) {
                Ok(n) => *written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            if *written == bytes.len() {
                conn.output.pop_front();
            }
        }
        Ok(true)
    }

    /// Answers complete input lines while nothing is queued, so a client
    /// that pipelines cannot make us buffer without bound.
    fn process(&self, conn: &mut Conn) -> io::Result<()> {
        loop {
            if !self.flush(conn)? {
                return Ok(());
            }
            if conn.quitting {
                return Err(io::Error::other("quit"));
            }
            let Some(end) = memchr::memchr(b'\n', &conn.input) else {
                if conn.input.len() > MAX_COMMAND {
                    return Err(io::Error::other("command line too long"));
                }
                return Ok(());
            };
            let line: Vec<u8> = conn.input.drain(..=end).collect();
            let line = line.strip_suffix(b"\n").unwrap_or(&line);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            self.answer(conn, line);
        }
    }

    fn accept(&mut self) {
        loop {
            let (mut stream, _) = match self.listener.accept() {
                Ok(pair) => pair,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Typically EMFILE: log and keep serving the others.
                    eprintln!("null_pop3: accept: {e} (raise ulimit -n?)");
                    return;
                }
            };
            let index = self.free.pop().unwrap_or_else(|| {
                self.conns.push(None);
                self.conns.len() - 1
            });
            if self
                .poll
                .registry()
                .register(
                    &mut stream,
                    Token(index + 1),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .is_err()
            {
                self.free.push(index);
                continue;
            }
            let _ = stream.set_nodelay(true);
            let mut conn = Conn {
                stream,
                input: Vec::new(),
                output: VecDeque::new(),
                maildrop: 0,
                quitting: false,
            };
            conn.output
                .push_back(Segment::Bytes(b"+OK null_pop3 ready\r\n".to_vec()));
            let keep = self.flush(&mut conn).is_ok();
            self.conns[index] = Some(conn);
            if !keep {
                self.close(index);
            }
        }
    }

    fn close(&mut self, index: usize) {
        if let Some(mut conn) = self.conns[index].take() {
            let _ = self.poll.registry().deregister(&mut conn.stream);
            self.free.push(index);
        }
    }

    /// Reads everything available and answers it.
    fn on_ready(&mut self, index: usize) {
        let Some(mut conn) = self.conns.get_mut(index).and_then(Option::take) else {
            return;
        };
        let mut open = true;
        loop {
            match conn.stream.read(&mut self.buffer) {
                Ok(0) => {
                    open = false;
                    break;
                }
                Ok(n) => conn.input.extend_from_slice(&self.buffer[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    open = false;
                    break;
                }
            }
        }
        if open && self.process(&mut conn).is_err() {
            open = false;
        }
        self.conns[index] = Some(conn);
        if !open {
            self.close(index);
        }
    }

    fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            match self.poll.poll(&mut events, None) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            for event in events.iter() {
                match event.token() {
                    Token(0) => self.accept(),
                    Token(n) => self.on_ready(n - 1),
                }
            }
        }
    }
}

const USAGE: &str =
    "usage: null_pop3 [--listen 127.0.0.1:21112] [--maildrop PREFIX:COUNT:SIZE]... \
[--seed 1] [--fault list-size|no-dot-stuffing|bare-lf|stat-count|uidl-dup]...";

fn main() -> ExitCode {
    let mut listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 21112));
    let mut specs = Vec::new();
    let mut seed = 1u64;
    let mut faults = Faults::default();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let Some(value) = args.next() else {
            eprintln!("null_pop3: {flag} needs a value\n{USAGE}");
            return ExitCode::from(2);
        };
        let ok = match flag.as_str() {
            "--listen" => value.parse().map(|a| listen = a).is_ok(),
            "--maildrop" => {
                specs.push(value.clone());
                true
            }
            "--seed" => value.parse().map(|s| seed = s).is_ok(),
            "--fault" => value.split(',').all(|fault| {
                match fault {
                    "list-size" => faults.list_size = true,
                    "no-dot-stuffing" => faults.no_dot_stuffing = true,
                    "bare-lf" => faults.bare_lf = true,
                    "stat-count" => faults.stat_count = true,
                    "uidl-dup" => faults.uidl_dup = true,
                    _ => return false,
                }
                true
            }),
            _ => false,
        };
        if !ok {
            eprintln!("null_pop3: bad option {flag} {value}\n{USAGE}");
            return ExitCode::from(2);
        }
    }
    if specs.is_empty() {
        specs.push(":20:4096".into());
    }
    let mut maildrops = Vec::new();
    for spec in &specs {
        match parse_maildrop(spec, seed, faults) {
            Some(drop) => maildrops.push(drop),
            None => {
                eprintln!("null_pop3: --maildrop {spec}: expected PREFIX:COUNT:SIZE, like big:1:20M\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let setup = || -> io::Result<Server> {
        let poll = Poll::new()?;
        let mut listener = TcpListener::bind(listen)?;
        poll.registry()
            .register(&mut listener, Token(0), Interest::READABLE)?;
        Ok(Server {
            maildrops,
            faults,
            poll,
            listener,
            conns: Vec::new(),
            free: Vec::new(),
            buffer: vec![0; 64 * 1024],
        })
    };
    let mut server = match setup() {
        Ok(server) => server,
        Err(e) => {
            eprintln!("null_pop3: cannot listen on {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!("null_pop3: listening on {listen}");
    match server.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("null_pop3: {e}");
            ExitCode::FAILURE
        }
    }
}
