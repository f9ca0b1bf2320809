//! `pop3d pw`: makes and checks password hashes for the passwd-file, as
//! `doveadm pw` does for Dovecot.
//!
//! ```text
//! $ pop3d pw
//! Enter new password:
//! Retype new password:
//! {SHA512-CRYPT}$6$4YhlsW0mJJzNl4vC$Zt6...
//! $ echo secret | pop3d pw -s ARGON2ID
//! {ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$...
//! $ echo secret | pop3d pw --test '{ARGON2ID}$argon2id$...'
//! {ARGON2ID}$argon2id$... (verified)
//! ```
//!
//! The password is read from the terminal without echo (asked twice when
//! making a hash), or, when stdin is not a terminal, from the first line of
//! stdin, so scripts can pipe it in. It is never taken from the command
//! line, where other users could see it in the process list. The hashing
//! itself is the passwd-file plugin's ([`pop3d_passwd_file::scheme`]), so
//! what `pop3d pw` makes is exactly what the server checks.
//!
//! The default scheme is SHA512-CRYPT (5000 rounds). Dovecot 2.3's
//! `doveadm pw` defaults to `CRYPT`, which it makes as bcrypt with cost 5.
//! SHA512-CRYPT is read by every Dovecot and every glibc `crypt(3)`, and a
//! check costs about 1.5 ms of one core and no memory to speak of; POP3
//! clients log in every few minutes, each login is one check, and pop3d is
//! meant for small machines. ARGON2ID (`-s ARGON2ID`) resists guessing on
//! GPUs far better, at 64 MiB and about 0.2 s of a core per login: choose
//! it when a leaked file is the bigger worry and logins are few.

use pop3d_passwd_file::scheme::{hash_password, Scheme, SchemeError, StoredPassword};
use std::ffi::OsString;
use std::fmt;
use std::io::{self, BufRead, IsTerminal};

/// The scheme `pop3d pw` uses without `-s`.
pub const DEFAULT_SCHEME: Scheme = Scheme::Sha512Crypt;

/// Longest password line read from stdin; a longer line is refused rather
/// than cut, so a hash never silently covers only part of the input.
const MAX_PASSWORD_LEN: usize = 4096;

/// What `pop3d pw` was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PwOptions {
    /// `-s SCHEME`; with `--test`, the scheme of a HASH without a
    /// `{SCHEME}` prefix. `None` when not given.
    pub scheme: Option<Scheme>,
    /// `-r COST`: rounds, bcrypt cost, Argon2 passes or SCRAM iterations.
    pub cost: Option<u32>,
    /// `-u USER`, accepted for `doveadm pw` command lines; none of the
    /// supported schemes mixes the user name into the hash.
    pub user: Option<String>,
    /// `--test HASH` (or `-t HASH`): check a password instead of making a
    /// hash.
    pub test: Option<String>,
}

/// Why `pop3d pw` failed.
#[derive(Debug)]
pub enum PwError {
    /// The password could not be read.
    Read(io::Error),
    /// Stdin had no line to read.
    NoInput,
    /// The password typed twice differed.
    Mismatch,
    /// The password is empty, which would be a hash of nothing.
    Empty,
    /// A password line longer than [`MAX_PASSWORD_LEN`].
    TooLong,
    /// The scheme could not make the hash, or HASH could not be read.
    Scheme(SchemeError),
    /// `--test`: the password does not match.
    NotVerified,
}

impl fmt::Display for PwError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PwError::Read(err) => write!(f, "cannot read the password: {err}"),
            PwError::NoInput => f.write_str("no password on stdin (expected one line)"),
            PwError::Mismatch => f.write_str("the passwords do not match; nothing was made"),
            PwError::Empty => f.write_str("the password is empty"),
            PwError::TooLong => write!(
                f,
                "the password line is longer than {MAX_PASSWORD_LEN} bytes"
            ),
            PwError::Scheme(err) => write!(f, "{err}"),
            PwError::NotVerified => f.write_str("the password does not match the hash"),
        }
    }
}

impl std::error::Error for PwError {}

impl From<SchemeError> for PwError {
    fn from(err: SchemeError) -> Self {
        PwError::Scheme(err)
    }
}

/// Reads the arguments after `pw`. `Err` says what is wrong, for the usage
/// message.
pub fn parse_args(args: &[OsString]) -> Result<PwOptions, String> {
    let mut options = PwOptions {
        scheme: None,
        cost: None,
        user: None,
        test: None,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let arg = arg.to_string_lossy();
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) if name.starts_with("--") => (name, Some(value.to_owned())),
            _ => (arg.as_ref(), None),
        };
        let mut value = |what: &str| {
            inline
                .clone()
                .or_else(|| args.next().map(|v| v.to_string_lossy().into_owned()))
                .filter(|v| !v.is_empty())
                .ok_or_else(|| format!("pw: {name} needs {what}"))
        };
        match name {
            "-s" | "--scheme" => {
                let text = value("a SCHEME")?;
                let scheme = Scheme::from_name(&text).ok_or_else(|| {
                    let known: Vec<&str> = Scheme::ALL.iter().map(|s| s.name()).collect();
                    format!("pw: unknown scheme `{text}` (known: {})", known.join(", "))
                })?;
                options.scheme = Some(scheme);
            }
            "-r" | "--rounds" => {
                let text = value("a COST (rounds, bcrypt cost, Argon2 passes, iterations)")?;
                let cost = text
                    .parse()
                    .map_err(|_| format!("pw: -r {text} is not a number"))?;
                options.cost = Some(cost);
            }
            "-u" | "--user" => options.user = Some(value("a USER")?),
            "-t" | "--test" => options.test = Some(value("a HASH to check")?),
            "-p" => {
                return Err(
                    "pw: -p would put the password in the process list; type it when asked \
                     or pipe it on stdin (echo ... | pop3d pw)"
                        .to_owned(),
                )
            }
            _ => return Err(format!("pw: unknown argument `{arg}`")),
        }
    }
    if options.test.is_some() && options.cost.is_some() {
        return Err("pw: -r makes no sense with --test (the cost is in the HASH)".to_owned());
    }
    Ok(options)
}

/// Does what `options` ask with `password`: the new `{SCHEME}hash`, or
/// for `--test` the HASH followed by ` (verified)`.
pub fn execute(options: &PwOptions, password: &[u8]) -> Result<String, PwError> {
    match &options.test {
        Some(hash) => {
            let default = options.scheme.unwrap_or(Scheme::Crypt);
            let stored = StoredPassword::parse_with_default(hash, default)?;
            if stored.verify(password) {
                Ok(format!("{hash} (verified)"))
            } else {
                Err(PwError::NotVerified)
            }
        }
        None => {
            if password.is_empty() {
                return Err(PwError::Empty);
            }
            let scheme = options.scheme.unwrap_or(DEFAULT_SCHEME);
            Ok(hash_password(scheme, password, options.cost)?)
        }
    }
}

/// `pop3d pw`: reads the password and does what `options` ask. The line
/// to print on success.
pub fn run(options: &PwOptions) -> Result<String, PwError> {
    let password = read_password(options.test.is_none())?;
    execute(options, &password)
}

/// From the terminal without echo (twice when `confirm`), or the first
/// line of stdin when it is not a terminal.
fn read_password(confirm: bool) -> Result<Vec<u8>, PwError> {
    let stdin = io::stdin();
    if !stdin.is_terminal() {
        return first_line(&mut stdin.lock());
    }
    let prompt = if confirm {
        "Enter new password: "
    } else {
        "Enter password to verify: "
    };
    let password = rpassword::prompt_password(prompt).map_err(PwError::Read)?;
    if confirm {
        let again = rpassword::prompt_password("Retype new password: ").map_err(PwError::Read)?;
        if again != password {
            return Err(PwError::Mismatch);
        }
    }
    Ok(password.into_bytes())
}

/// The first line of `input` without its line end, as bytes (a password
/// need not be UTF-8).
fn first_line(input: &mut impl BufRead) -> Result<Vec<u8>, PwError> {
    let mut line = Vec::new();
    let limit = u64::try_from(MAX_PASSWORD_LEN).unwrap_or(u64::MAX) + 2;
    let read = io::Read::take(input, limit)
        .read_until(b'\n', &mut line)
        .map_err(PwError::Read)?;
    if read == 0 {
        return Err(PwError::NoInput);
    }
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    }
    if line.len() > MAX_PASSWORD_LEN {
        return Err(PwError::TooLong);
    }
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<PwOptions, String> {
        parse_args(&args.iter().map(OsString::from).collect::<Vec<_>>())
    }

    #[test]
    fn arguments_that_are_understood() {
        assert_eq!(
            parse(&[]).unwrap(),
            PwOptions {
                scheme: None,
                cost: None,
                user: None,
                test: None
            }
        );
        let options = parse(&["-s", "argon2id", "-r", "4", "-u", "alice"]).unwrap();
        assert_eq!(options.scheme, Some(Scheme::Argon2id));
        assert_eq!(options.cost, Some(4));
        assert_eq!(options.user.as_deref(), Some("alice"));
        let options = parse(&["--scheme=CLEAR", "--test", "{PLAIN}x"]).unwrap();
        assert_eq!(options.scheme, Some(Scheme::Plain));
        assert_eq!(options.test.as_deref(), Some("{PLAIN}x"));
        assert_eq!(
            parse(&["-t", "$6$a$b"]).unwrap().test.as_deref(),
            Some("$6$a$b")
        );
    }

    #[test]
    fn arguments_that_are_refused_say_why() {
        for (args, says) in [
            (&["-s"][..], "pw: -s needs a SCHEME"),
            (
                &["-s", "MD5-CRYPT"],
                "pw: unknown scheme `MD5-CRYPT` (known: SHA512-CRYPT,",
            ),
            (&["-r", "many"], "pw: -r many is not a number"),
            (&["--test"], "pw: --test needs a HASH"),
            (&["--test="], "pw: --test needs a HASH"),
            (
                &["-t", "{PLAIN}x", "-r", "5"],
                "pw: -r makes no sense with --test",
            ),
            (
                &["-p", "secret"],
                "pw: -p would put the password in the process list",
            ),
            (&["extra"], "pw: unknown argument `extra`"),
        ] {
            let err = parse(args).unwrap_err();
            assert!(err.starts_with(says), "{args:?}: {err}");
            assert!(!err.contains("secret"), "{err}");
        }
    }

    #[test]
    fn execute_makes_and_checks() {
        let made = execute(&parse(&[]).unwrap(), b"pw").unwrap();
        assert!(made.starts_with("{SHA512-CRYPT}$6$"), "{made}");
        let test = parse(&["--test", &made]).unwrap();
        assert_eq!(execute(&test, b"pw").unwrap(), format!("{made} (verified)"));
        assert!(matches!(execute(&test, b"pW"), Err(PwError::NotVerified)));
        assert!(matches!(
            execute(&parse(&[]).unwrap(), b""),
            Err(PwError::Empty)
        ));
        // A HASH without a prefix is CRYPT, or the -s scheme.
        let bare = made.strip_prefix("{SHA512-CRYPT}").unwrap();
        assert!(execute(&parse(&["-t", bare]).unwrap(), b"pw").is_ok());
        assert!(execute(&parse(&["-t", "pw", "-s", "PLAIN"]).unwrap(), b"pw").is_ok());
        let err = execute(&parse(&["-t", "$1$ab$cd"]).unwrap(), b"pw").unwrap_err();
        assert!(err.to_string().contains("MD5-CRYPT"), "{err}");
    }

    #[test]
    fn stdin_gives_its_first_line_without_the_line_end() {
        let read = |input: &[u8]| first_line(&mut &input[..]);
        assert_eq!(read(b"secret\n").unwrap(), b"secret");
        assert_eq!(read(b"secret\r\nmore\n").unwrap(), b"secret");
        assert_eq!(read(b"no newline").unwrap(), b"no newline");
        assert_eq!(read(b" spaced \n").unwrap(), b" spaced ");
        assert_eq!(read(b"\xff\xfe\n").unwrap(), b"\xff\xfe");
        assert!(matches!(read(b""), Err(PwError::NoInput)));
        assert_eq!(read(b"\n").unwrap(), b"");
        let long = vec![b'x'; MAX_PASSWORD_LEN];
        assert_eq!(read(&long).unwrap(), long);
        let mut too_long = vec![b'x'; MAX_PASSWORD_LEN + 1];
        too_long.push(b'\n');
        assert!(matches!(read(&too_long), Err(PwError::TooLong)));
    }
}
