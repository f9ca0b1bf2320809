//! The embedded demo: what `pop3d` with no arguments serves.
//!
//! A first-time user should get a working server without writing a config or
//! creating users. [`Demo::create`] makes a throwaway directory holding a
//! passwd-file with one user (`demo`, password `demo`) and that user's
//! maildir with three sample messages, and returns a [`Config`] that serves
//! it on loopback. Dropping the [`Demo`] deletes the directory again.
//! [`connect_hint`] is the text the binary prints once the server is up.
//!
//! Everything here goes through the same config, backends and server as a
//! real deployment; only the files are temporary.

use crate::config::{Config, Limits, Listener, PlaintextAuth, PluginSection};
use ron::value::RawValue;
use std::collections::hash_map::RandomState;
use std::fs;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The port tried first: 110 needs root, 1110 is easy to remember.
const PREFERRED_PORT: u16 = 1110;

/// Ports tried after [`PREFERRED_PORT`] before asking the kernel for any.
const FALLBACK_PORTS: std::ops::RangeInclusive<u16> = 1111..=1130;

/// The demo user's name and password (the same, so nobody has to look it up).
const DEMO_USER: &str = "demo";

/// The temporary files behind a running demo; deletes them when dropped.
#[derive(Debug)]
pub struct Demo {
    /// The directory holding the passwd-file and the maildirs; everything
    /// the demo created is under it, so removing it cleans up completely.
    dir: PathBuf,
}

impl Demo {
    /// Creates the demo files and the config that serves them.
    ///
    /// The listener is 127.0.0.1 port 1110, or the first free port of
    /// 1111..=1130, or else any free port the kernel picks. A port is only
    /// probed, not held, so another program may still take it before the
    /// server binds; the server then reports that clearly.
    pub fn create() -> Result<(Demo, Config), io::Error> {
        let demo = Demo {
            dir: create_private_dir()?,
        };
        // From here on `demo` is dropped on error, which removes the
        // half-made directory.
        let passwd = demo.dir.join("passwd");
        write_private(
            &passwd,
            format!("{DEMO_USER}:{{PLAIN}}{DEMO_USER}\n").as_bytes(),
        )?;

        let maildir = demo.dir.join("mail").join(DEMO_USER).join("Maildir");
        for sub in ["cur", "new", "tmp"] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(maildir.join(sub))?;
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        // One second apart, oldest first: stores order a maildir by the
        // delivery time at the start of each name, so the welcome message
        // is message 1.
        let first_delivery = now.as_secs().saturating_sub(2);
        for (n, message) in sample_messages(first_delivery).iter().enumerate() {
            let delivered = first_delivery + n as u64;
            let name = maildir_file_name(delivered, now.subsec_micros(), n, message.as_bytes());
            write_private(&maildir.join("cur").join(name), message.as_bytes())?;
        }

        let port = probe_free_port()?;
        // `%` is a template character in the maildir root; the temp dir's
        // own must stay literal.
        let root = format!(
            "{}/mail/%u/Maildir",
            demo.dir.display().to_string().replace('%', "%%")
        );
        let config = Config {
            listen: vec![Listener {
                addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
                implicit_tls: false,
            }],
            tls: None,
            allow_plaintext_auth: PlaintextAuth::LoopbackOnly,
            workers: 0,
            limits: Limits {
                // Long enough to notice that a wrong password is punished,
                // short enough not to make a first try feel broken.
                auth_failure_delay_ms: 500,
                ..Limits::default()
            },
            trusted_networks: Vec::new(),
            // The demo runs as whoever starts it (and says so when that is
            // root): it binds a high port and serves files it made itself.
            user: None,
            group: None,
            allow_root: false,
            stats_listen: None,
            // APOP stays off as in any default config; the demo is for
            // trying USER/PASS and SASL.
            apop: false,
            hostname: None,
            auth: plugin_section("passwd-file", "path", &passwd.display().to_string())?,
            store: plugin_section("maildir", "root", &root)?,
        };
        Ok((demo, config))
    }

    /// The directory holding the demo's passwd-file and maildirs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        // Best effort: a leftover directory in the temp dir is harmless, and
        // there is nobody to report the failure to at exit.
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The lines the binary prints once the demo server listens on `addrs`.
pub fn connect_hint(addrs: &[SocketAddr]) -> String {
    let Some(addr) = addrs.first() else {
        return "pop3d demo: the server reported no listening address.\n".to_string();
    };
    let (host, port) = (addr.ip(), addr.port());
    let user = match current_uid() {
        Some(0) => {
            "Running as root. The demo needs no privileges: run it as an ordinary user.".to_string()
        }
        Some(uid) => format!("Running as the current user (uid {uid}), with no extra privileges."),
        None => "Running as the current user.".to_string(),
    };
    let commands = [
        (
            format!("curl pop3://demo:demo@{addr}/"),
            "list the messages".to_string(),
        ),
        (
            format!("curl pop3://demo:demo@{addr}/1"),
            "fetch message 1".to_string(),
        ),
        (
            format!("nc -C {host} {port}"),
            format!("talk POP3 by hand (or: telnet {host} {port}),"),
        ),
        (
            String::new(),
            "then type USER demo, PASS demo, LIST, RETR 1, QUIT".to_string(),
        ),
    ];
    let width = commands.iter().map(|(c, _)| c.len()).max().unwrap_or(0);
    let commands: String = commands
        .iter()
        .map(|(command, what)| format!("  {command:<width$}   {what}\n"))
        .collect();
    format!(
        "\
pop3d demo: a throwaway POP3 server on {addr} (loopback only), serving a
temporary maildir that is deleted when it stops. Not for production: for real
use write a config (see examples/pop3d.ron) and run `pop3d --config FILE`.

  user: demo   password: demo

{commands}
{user}
Stop the server with Ctrl-C.
"
    )
}

/// A config section `(plugin: name, config: (key: "value"))`, with the
/// config as the RON text an operator would write, so the plugin sees no
/// difference from a config file.
fn plugin_section(plugin: &str, key: &str, value: &str) -> Result<PluginSection, io::Error> {
    // ron's serializer quotes and escapes the string as RON expects.
    let quoted = ron::to_string(value).map_err(io::Error::other)?;
    let config =
        RawValue::from_boxed_ron(format!("({key}: {quoted})").into()).map_err(io::Error::other)?;
    Ok(PluginSection {
        plugin: plugin.to_string(),
        config,
    })
}

/// Makes `<temp>/pop3d-demo-<pid>-<random>`, readable only by us because it
/// holds a password file. Retries on the (unlikely) name collision.
fn create_private_dir() -> Result<PathBuf, io::Error> {
    let mut last_err = None;
    for _ in 0..8 {
        let dir = std::env::temp_dir().join(format!(
            "pop3d-demo-{}-{:08x}",
            std::process::id(),
            random_u64() as u32
        ));
        match fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last_err = Some(e),
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("cannot create the demo directory {}: {e}", dir.display()),
                ))
            }
        }
    }
    Err(last_err.unwrap_or_else(|| io::Error::other("cannot create the demo directory")))
}

/// A random number from the standard library's per-process hash keys: enough
/// to keep two demos from choosing the same directory, without a dependency.
fn random_u64() -> u64 {
    RandomState::new().build_hasher().finish()
}

/// Writes a new file readable only by us.
fn write_private(path: &Path, contents: &[u8]) -> Result<(), io::Error> {
    use std::io::Write;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents)
}

/// A free loopback port, preferring the memorable ones.
fn probe_free_port() -> Result<u16, io::Error> {
    let preferred = std::iter::once(PREFERRED_PORT).chain(FALLBACK_PORTS);
    for port in preferred {
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return Ok(port);
        }
    }
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// A maildir file name in the usual `time.unique.host,S=size,W=wiresize:2,`
/// form. `S=` is the size on disk and `W=` the size on the wire (CRLF line
/// ends), which some stores read instead of the file.
fn maildir_file_name(secs: u64, micros: u32, n: usize, contents: &[u8]) -> String {
    format!(
        "{secs}.M{micros}P{pid}Q{q}.demo,S={size},W={wire}:2,",
        pid = std::process::id(),
        q = n + 1,
        size = contents.len(),
        wire = wire_size(contents),
    )
}

/// Octets a message takes on the wire: bare LF becomes CRLF and a last line
/// without an end gets one (dot-stuffing is not counted, as in LIST).
fn wire_size(contents: &[u8]) -> usize {
    let bare_lf = contents
        .iter()
        .enumerate()
        .filter(|&(i, &b)| b == b'\n' && (i == 0 || contents[i - 1] != b'\r'))
        .count();
    let unterminated = !contents.is_empty() && !contents.ends_with(b"\n");
    contents.len() + bare_lf + if unterminated { 2 } else { 0 }
}

/// The effective uid of this process (the one that decides what it may do),
/// read from procfs to avoid `unsafe` libc calls. `None` where there
/// is no procfs.
fn current_uid() -> Option<u32> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    // Real, effective, saved, filesystem.
    line.split_whitespace().nth(2)?.parse().ok()
}

/// The three sample messages, LF line ends as maildirs store them; message
/// n (1-based) is dated `first_delivery + n - 1`.
fn sample_messages(first_delivery: u64) -> [String; 3] {
    let header = |n: u64, subject: &str| {
        let delivered = first_delivery + n - 1;
        let date = rfc2822_date(delivered);
        format!(
            "From: pop3d demo <postmaster@pop3d.invalid>\n\
             To: demo <demo@pop3d.invalid>\n\
             Subject: {subject}\n\
             Date: {date}\n\
             Message-ID: <{delivered}.{n}.demo@pop3d.invalid>\n\
             MIME-Version: 1.0\n\
             Content-Type: text/plain; charset=us-ascii\n\
             \n"
        )
    };

    let welcome = header(1, "Welcome to pop3d")
        + "\
Hello,

this message comes from pop3d, a small POP3 server (RFC 1939) written in
Rust. You are reading it from the demo that `pop3d` starts when it is run
without a configuration: one user, demo/demo, and a temporary maildir that
disappears when the server stops.

To serve real mail, write a configuration file and start pop3d with it:

    pop3d check-config /etc/pop3d/pop3d.ron
    pop3d --config /etc/pop3d/pop3d.ron

The configuration is one RON file. It names where to listen, the limits,
and two backends: `auth` (who may log in, e.g. a Dovecot-style passwd-file)
and `store` (where the mail is, e.g. one maildir per user). The file
examples/pop3d.ron and the README describe every key.

Messages you delete here (DELE, then QUIT) are really removed from the
demo maildir, so try it.

-- pop3d
";

    let dots = header(2, "Lines that start with a dot")
        + "\
POP3 ends a multi-line reply with a line holding a single dot, so a line of
the message that starts with a dot is sent with one more dot in front, and
the client takes it off again (\"dot-stuffing\", RFC 1939 section 3).

The next lines start with dots; your mail client should show them exactly
as written here:

.
..
.hidden-file
... and so on.

Seen on the wire (nc, telnet) each of them has one dot more.
";

    let mut long = header(3, "A longer message: the POP3 commands");
    long.push_str(
        "\
The commands a POP3 server answers, as a longer message to scroll through.
Try `TOP 3 5` by hand: the headers and the first 5 lines of this message.

USER name         who you are
PASS secret       your password
STAT              number of messages and their total size
LIST [n]          size of each message, or of message n
UIDL [n]          unique id of each message, stable across sessions
RETR n            the whole message n
TOP n lines       the headers of message n and its first lines
DELE n            mark message n for deletion (done at QUIT)
RSET              unmark all deletions
NOOP              do nothing, keep the connection alive
CAPA              list the optional features the server supports
QUIT              apply deletions and log out

Some numbered lines follow, so the message is long enough to watch a
client stream it:

",
    );
    for line in 1..=200 {
        long.push_str(&format!(
            "Line {line:03} of 200: the quick brown fox jumps over the lazy dog.\n"
        ));
    }
    long.push_str("\nThe end.\n");

    [welcome, dots, long]
}

/// `secs` since the Unix epoch as an RFC 5322 date in UTC, e.g.
/// `Tue, 14 Nov 2023 22:13:20 +0000`.
fn rfc2822_date(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil date from a day count (Howard Hinnant's algorithm), with eras of
    // 400 years starting on 1 March 0000 so leap days fall at the era's end.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} +0000",
        DAYS[(days % 7) as usize],
        day,
        MONTHS[(month - 1) as usize],
        year,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_creates_a_user_and_a_maildir_and_removes_them() {
        let (demo, config) = Demo::create().unwrap();
        let dir = demo.dir().to_path_buf();
        assert!(dir
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(&format!("pop3d-demo-{}-", std::process::id())));

        assert_eq!(
            fs::read_to_string(dir.join("passwd")).unwrap(),
            "demo:{PLAIN}demo\n"
        );
        let maildir = dir.join("mail/demo/Maildir");
        for sub in ["cur", "new", "tmp"] {
            assert!(maildir.join(sub).is_dir(), "{sub} missing");
        }
        let mut names: Vec<String> = fs::read_dir(maildir.join("cur"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names.len(), 3, "{names:?}");
        for name in &names {
            // S= and W= must be true: a store may trust them over the file.
            let contents = fs::read(maildir.join("cur").join(name)).unwrap();
            assert!(name.ends_with(":2,"), "{name}");
            assert!(
                name.contains(&format!(
                    ",S={},W={}:",
                    contents.len(),
                    wire_size(&contents)
                )),
                "{name}"
            );
        }
        // Sorted by name is sorted by delivery time.
        let welcome = fs::read_to_string(maildir.join("cur").join(&names[0])).unwrap();
        assert!(welcome.contains("Subject: Welcome to pop3d\n"), "{welcome}");
        let dots = fs::read_to_string(maildir.join("cur").join(&names[1])).unwrap();
        assert!(dots.contains("\n.\n..\n.hidden-file\n"), "{dots}");

        assert_eq!(config.auth.plugin, "passwd-file");
        assert_eq!(
            config.auth.config.get_ron(),
            format!("(path: {:?})", dir.join("passwd").display().to_string())
        );
        assert_eq!(config.store.plugin, "maildir");
        assert_eq!(
            config.store.config.get_ron(),
            format!("(root: \"{}/mail/%u/Maildir\")", dir.display())
        );
        assert_eq!(config.listen.len(), 1);
        assert!(config.listen[0].addr.ip().is_loopback());
        assert_eq!(config.limits.auth_failure_delay_ms, 500);

        drop(demo);
        assert!(!dir.exists(), "{} left behind", dir.display());
    }

    #[test]
    fn demo_config_passes_the_same_validation_as_a_file() {
        let (_demo, config) = Demo::create().unwrap();
        let text = ron::to_string(&config).unwrap();
        let parsed = crate::config::parse(&text, "demo").unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(parsed, config);
    }

    #[test]
    fn two_demos_do_not_share_files() {
        let (a, _) = Demo::create().unwrap();
        let (b, _) = Demo::create().unwrap();
        assert_ne!(a.dir(), b.dir());
    }

    #[test]
    fn demo_avoids_a_busy_port() {
        // Hold whatever port the demo would pick; a second demo must not
        // pick it too.
        let (_first, config) = Demo::create().unwrap();
        let held = TcpListener::bind(config.listen[0].addr).unwrap();
        let (_second, config) = Demo::create().unwrap();
        assert_ne!(config.listen[0].addr, held.local_addr().unwrap());
    }

    #[test]
    fn hint_names_the_real_port_and_the_credentials() {
        let addr: SocketAddr = "127.0.0.1:1117".parse().unwrap();
        let hint = connect_hint(&[addr]);
        assert!(
            hint.contains("curl pop3://demo:demo@127.0.0.1:1117/ "),
            "{hint}"
        );
        assert!(
            hint.contains("curl pop3://demo:demo@127.0.0.1:1117/1 "),
            "{hint}"
        );
        assert!(hint.contains("nc -C 127.0.0.1 1117"), "{hint}");
        assert!(hint.contains("telnet 127.0.0.1 1117"), "{hint}");
        assert!(hint.contains("password: demo"), "{hint}");
        assert!(hint.contains("Not for production"), "{hint}");
        assert!(hint.contains("--config"), "{hint}");
        assert!(!hint.contains("1110"), "{hint}");
    }

    #[test]
    fn hint_says_who_we_run_as() {
        let hint = connect_hint(&["127.0.0.1:1110".parse().unwrap()]);
        match current_uid() {
            Some(0) => assert!(hint.contains("Running as root"), "{hint}"),
            Some(uid) => assert!(hint.contains(&format!("uid {uid}")), "{hint}"),
            None => assert!(hint.contains("current user"), "{hint}"),
        }
    }

    #[test]
    fn wire_size_counts_crlf_line_ends() {
        assert_eq!(wire_size(b""), 0);
        assert_eq!(wire_size(b"a\n"), 3);
        assert_eq!(wire_size(b"a\r\n"), 3);
        assert_eq!(wire_size(b"a\nb"), 6);
        assert_eq!(wire_size(b"\n\n"), 4);
    }

    #[test]
    fn dates_are_rfc_5322() {
        assert_eq!(rfc2822_date(0), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(
            rfc2822_date(1_700_000_000),
            "Tue, 14 Nov 2023 22:13:20 +0000"
        );
        assert_eq!(rfc2822_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 +0000");
        // 2100 is not a leap year.
        assert_eq!(
            rfc2822_date(4_107_542_399),
            "Sun, 28 Feb 2100 23:59:59 +0000"
        );
    }
}
