//! mkfixture: writes a deterministic benchmark fixture of maildirs and users.
//!
//! ```text
//! cargo run --release --example mkfixture -- --root /tmp/fx --prefix user \
//!     --users 200 --messages 20 --size 4096 [--seed 1] [--no-size-in-name]
//! ```
//!
//! For users `<prefix>1 ..= <prefix>N` it writes
//! - `ROOT/<prefix>N/Maildir/{cur,new,tmp}`, with M LF-only messages of
//!   exactly `--size` bytes in `cur/` (names carry `,S=<size>,W=<crlf size>`
//!   as Dovecot's deliveries do, unless `--no-size-in-name`);
//! - `ROOT/passwd.<prefix>`: Dovecot-style passwd-file lines
//!   `<prefix>N:{PLAIN}passN::::::`;
//! - `ROOT/users.<prefix>`: `<prefix>N:passN` lines for the load generator;
//! - `ROOT/passwd`: every `ROOT/passwd.*` concatenated, so several prefixes
//!   (small mailboxes, one big message, many idle users) share one
//!   passwd-file and one maildir root that servers are configured with.
//!
//! Running it again with the same arguments recreates the same bytes: each
//! user's directory is removed first (including any index files a server
//! left there), so a benchmark always starts from the same state.

#[path = "shared/message.rs"]
mod message;

use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// What the operator asked for.
struct Options {
    /// Directory holding every user's maildir and the user lists.
    root: PathBuf,
    /// User names are this prefix followed by 1..=users.
    prefix: String,
    /// How many users to create.
    users: u64,
    /// Messages per user.
    messages: u64,
    /// Size of each message file in bytes (LF line ends).
    size: usize,
    /// Seed of every random choice, so fixtures are reproducible.
    seed: u64,
    /// Whether file names carry S= and W= sizes; off to make a server read
    /// the files to learn sizes, as it must for maildirs delivered by others.
    size_in_name: bool,
}

#[derive(Debug)]
enum FixtureError {
    /// The command line was wrong; the text says how.
    Usage(String),
    /// Writing the fixture failed.
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl fmt::Display for FixtureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FixtureError::Usage(msg) => write!(f, "{msg}\n\n{USAGE}"),
            FixtureError::Io { path, source } => write!(
                f,
                "cannot write {}: {source} (is the disk full or the directory not writable?)",
                path.display()
            ),
        }
    }
}

const USAGE: &str = "usage: mkfixture --root DIR [--prefix user] [--users 200] [--messages 20] \
[--size 4096|4K|20M] [--seed 1] [--no-size-in-name]";

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> FixtureError + '_ {
    move |source| FixtureError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn parse_args() -> Result<Options, FixtureError> {
    let mut options = Options {
        root: PathBuf::new(),
        prefix: "user".into(),
        users: 200,
        messages: 20,
        size: 4096,
        seed: 1,
        size_in_name: true,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--no-size-in-name" {
            options.size_in_name = false;
            continue;
        }
        if flag == "-h" || flag == "--help" {
            return Err(FixtureError::Usage(
                "mkfixture writes benchmark maildirs".into(),
            ));
        }
        let value = args
            .next()
            .ok_or_else(|| FixtureError::Usage(format!("{flag} needs a value")))?;
        let bad = |what: &str| FixtureError::Usage(format!("{flag} {value}: expected {what}"));
        match flag.as_str() {
            "--root" => options.root = PathBuf::from(&value),
            "--prefix" => {
                if value.is_empty() || !value.chars().all(|c| c.is_ascii_alphanumeric()) {
                    return Err(bad("letters and digits"));
                }
                options.prefix = value.clone();
            }
            "--users" => options.users = value.parse().map_err(|_| bad("a number"))?,
            "--messages" => options.messages = value.parse().map_err(|_| bad("a number"))?,
            "--size" => {
                options.size =
                    message::parse_size(&value).ok_or_else(|| bad("a size like 4096, 4K or 20M"))?
            }
            "--seed" => options.seed = value.parse().map_err(|_| bad("a number"))?,
            _ => return Err(FixtureError::Usage(format!("unknown option {flag}"))),
        }
    }
    if options.root.as_os_str().is_empty() {
        return Err(FixtureError::Usage("--root is required".into()));
    }
    if options.size < message::MIN_SIZE {
        return Err(FixtureError::Usage(format!(
            "--size must be at least {} bytes (the headers alone take most of that)",
            message::MIN_SIZE
        )));
    }
    Ok(options)
}

/// Writes one user's maildir from scratch.
fn write_maildir(options: &Options, user_index: u64, user: &str) -> Result<(), FixtureError> {
    let home = options.root.join(user);
    if home.exists() {
        fs::remove_dir_all(&home).map_err(io_err(&home))?;
    }
    let maildir = home.join("Maildir");
    for sub in ["cur", "new", "tmp"] {
        let dir = maildir.join(sub);
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    }
    // Delivery times one minute apart, so the order of names is the order
    // of delivery, as in a real maildir.
    let base_time = 1_780_000_000 + user_index * 10_000;
    for n in 1..=options.messages {
        let body = message::render(options.seed, user_index, user, n, options.size);
        let time = base_time + n * 60;
        let sizes = if options.size_in_name {
            format!(",S={},W={}", body.len(), message::crlf_size(&body))
        } else {
            String::new()
        };
        let name = format!("{time}.M{n}P{user_index}.fixture{sizes}:2,S");
        let path = maildir.join("cur").join(name);
        fs::write(&path, &body).map_err(io_err(&path))?;
    }
    Ok(())
}

/// Rebuilds ROOT/passwd from every ROOT/passwd.<prefix>.
fn merge_passwd(root: &Path) -> Result<(), FixtureError> {
    let mut parts: Vec<PathBuf> = fs::read_dir(root)
        .map_err(io_err(root))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("passwd."))
        })
        .collect();
    parts.sort();
    let mut merged = Vec::new();
    for part in parts {
        merged.extend(fs::read(&part).map_err(io_err(&part))?);
    }
    let path = root.join("passwd");
    fs::write(&path, merged).map_err(io_err(&path))
}

fn run(options: &Options) -> Result<(), FixtureError> {
    fs::create_dir_all(&options.root).map_err(io_err(&options.root))?;
    let mut passwd = Vec::new();
    let mut users = Vec::new();
    for i in 1..=options.users {
        let user = format!("{}{i}", options.prefix);
        write_maildir(options, i, &user)?;
        writeln!(passwd, "{user}:{{PLAIN}}pass{i}::::::").map_err(io_err(&options.root))?;
        writeln!(users, "{user}:pass{i}").map_err(io_err(&options.root))?;
    }
    let passwd_path = options.root.join(format!("passwd.{}", options.prefix));
    fs::write(&passwd_path, passwd).map_err(io_err(&passwd_path))?;
    let users_path = options.root.join(format!("users.{}", options.prefix));
    fs::write(&users_path, users).map_err(io_err(&users_path))?;
    merge_passwd(&options.root)?;
    eprintln!(
        "mkfixture: {} users x {} messages x {} bytes under {} (users file {})",
        options.users,
        options.messages,
        options.size,
        options.root.display(),
        users_path.display()
    );
    Ok(())
}

fn main() -> ExitCode {
    match parse_args().and_then(|options| run(&options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mkfixture: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::message::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("4K"), Some(4096));
        assert_eq!(parse_size("20MiB"), Some(20 << 20));
        assert_eq!(parse_size("1kb"), Some(1024));
        assert_eq!(parse_size("x"), None);
        assert_eq!(parse_size("4T"), None);
    }
}
