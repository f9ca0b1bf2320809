//! The configuration operators write: one RON file.
//!
//! Every key is optional except `auth` and `store`. Parsing and validation
//! report every problem with its line and column and what was expected, so a
//! bad config never starts a server.
//!
//! Loading happens in two passes. First RON is deserialized into [`Config`];
//! a syntax error, an unknown key or a value of the wrong type stops there,
//! because nothing after it can be trusted. Then the parsed values are checked
//! against each other and against RFC 1939 ([`parse`] collects *every* such
//! problem, not just the first). The parsed structs carry no positions, so a
//! small scanner over the text (`SourceMap`) finds where each key was written
//! to point the operator at the right line.
//!
//! [`dump`] goes the other way: it prints a parsed configuration with every
//! default filled in (`pop3d dump-config`).
//!
//! ```
//! let text = r#"(
//!     auth:  (plugin: "passwd-file", config: (path: "/etc/pop3d/passwd")),
//!     store: (plugin: "maildir", config: (root: "/var/mail/%u/Maildir")),
//!     limits: (idle_timeout_secs: 60),
//! )"#;
//! let err = pop3d::config::parse(text, "pop3d.ron").unwrap_err();
//! assert!(err.to_string().starts_with("pop3d.ron:4:14: idle_timeout_secs is 60"));
//! ```

use ron::value::RawValue;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

mod dump;
pub use dump::{dump, DumpError, DumpMode};

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where to accept connections. Defaults to plain POP3 on loopback port
    /// 110, the least surprising choice for a server started by hand.
    #[serde(default = "default_listen")]
    pub listen: Vec<Listener>,
    /// Certificate and key; when set, plain listeners offer STLS.
    #[serde(default)]
    pub tls: Option<TlsFiles>,
    /// Whether USER/PASS and plaintext SASL are allowed on connections that
    /// are not encrypted.
    #[serde(default)]
    pub allow_plaintext_auth: PlaintextAuth,
    /// Worker threads running sessions; 0 means one per core.
    #[serde(default)]
    pub workers: usize,
    /// Resource limits that keep one client from hurting the others.
    #[serde(default)]
    pub limits: Limits,
    /// Client networks exempt from the password-guessing defences (growing
    /// delays, failure caps): a webmail front end or a monitoring probe
    /// would otherwise lock out every user behind it.
    #[serde(default)]
    pub trusted_networks: Vec<Network>,
    /// The account to run as once the listening sockets are bound and the
    /// TLS key is read, so a root-started server does not serve clients
    /// as root.
    #[serde(default)]
    pub user: Option<String>,
    /// The group to run as; the user's primary group when not given.
    #[serde(default)]
    pub group: Option<String>,
    /// Serving as root without `user` is refused unless this says it is
    /// meant: every bug would then be a root bug.
    #[serde(default)]
    pub allow_root: bool,
    /// Where the Prometheus metrics endpoint listens (loopback only, it has
    /// no authentication); off when not given.
    #[serde(default)]
    pub stats_listen: Option<SocketAddr>,
    /// Whether the greeting carries an RFC 1939 timestamp so clients can
    /// log in with APOP. Off by default: APOP needs the plaintext password
    /// on the server and MD5 is weak, so it is for old clients only. Only
    /// takes effect when the auth backend can supply secrets.
    #[serde(default)]
    pub apop: bool,
    /// The name this server gives itself in APOP timestamps and CRAM-MD5
    /// challenges (`<...@hostname>`); the system host name when not given.
    #[serde(default)]
    pub hostname: Option<String>,
    /// The authentication backend.
    pub auth: PluginSection,
    /// The maildrop store backend.
    pub store: PluginSection,
}

/// One listening socket.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// `IP:port` to bind.
    pub addr: SocketAddr,
    /// TLS from the first byte (POP3S, port 995) instead of STLS.
    #[serde(default)]
    pub implicit_tls: bool,
}

/// Certificate chain and private key, PEM files.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first; what clients verify us by.
    pub cert: String,
    /// PEM private key matching the leaf certificate.
    pub key: String,
}

/// Where plaintext passwords may travel over an unencrypted connection.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
pub enum PlaintextAuth {
    /// Only over TLS.
    Never,
    /// Over TLS, or unencrypted from a loopback address.
    #[default]
    LoopbackOnly,
    /// Anywhere (for networks where TLS is terminated in front of pop3d).
    Always,
}

/// An IP network in CIDR notation (`"10.0.0.0/8"`, `"2001:db8::/32"`); a bare
/// address is a network of one.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(try_from = "String", into = "String")]
pub struct Network {
    /// The address with every bit beyond the prefix cleared.
    addr: IpAddr,
    /// How many leading bits must match.
    prefix_len: u8,
}

impl Network {
    /// Whether `ip` is in this network. An IPv4 client seen on an IPv6
    /// socket (`::ffff:10.1.2.3`) matches IPv4 networks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                mask_v4(u32::from(ip), self.prefix_len) == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                mask_v6(u128::from(ip), self.prefix_len) == u128::from(net)
            }
            _ => false,
        }
    }
}

fn mask_v4(bits: u32, prefix_len: u8) -> u32 {
    if prefix_len == 0 {
        0
    } else {
        bits & (u32::MAX << (32 - u32::from(prefix_len)))
    }
}

fn mask_v6(bits: u128, prefix_len: u8) -> u128 {
    if prefix_len == 0 {
        0
    } else {
        bits & (u128::MAX << (128 - u32::from(prefix_len)))
    }
}

impl TryFrom<String> for Network {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let bad = |why: &str| {
            format!("`{text}` is not a network: {why} (expected \"IP/prefix\", e.g. \"10.0.0.0/8\" or \"2001:db8::/32\", or one address)")
        };
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text.as_str(), None),
        };
        let addr: IpAddr = addr.trim().parse().map_err(|_| bad("not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix_len = match prefix {
            None => max,
            Some(p) => match p.trim().parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(bad(&format!("the prefix length must be 0 to {max}"))),
            },
        };
        let network = match addr {
            IpAddr::V4(v4) => IpAddr::from(mask_v4(u32::from(v4), prefix_len).to_be_bytes()),
            IpAddr::V6(v6) => IpAddr::from(mask_v6(u128::from(v6), prefix_len).to_be_bytes()),
        };
        if network != addr {
            return Err(bad(&format!(
                "bits are set beyond the prefix (did you mean {network}/{prefix_len}?)"
            )));
        }
        Ok(Network { addr, prefix_len })
    }
}

impl From<Network> for String {
    fn from(network: Network) -> String {
        network.to_string()
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

/// Resource limits.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Connections open at once, all clients together.
    pub max_connections: usize,
    /// Connections open at once from one IP address.
    pub max_per_ip: usize,
    /// Seconds a logged-in client may stay silent before it is disconnected
    /// (RFC 1939 asks for at least 10 minutes).
    pub idle_timeout_secs: u64,
    /// Seconds a client may take to log in; shorter than the idle timeout so
    /// unauthenticated connections cannot pile up.
    pub login_timeout_secs: u64,
    /// Delay before answering a failed login, held by the event loop. It
    /// doubles with each further failure from the same address.
    pub auth_failure_delay_ms: u64,
    /// Most the doubling delay grows to, so a legitimate user who mistyped
    /// a few times is not kept waiting for minutes.
    pub auth_failure_delay_max_ms: u64,
    /// Failed logins from one address within the window after which logins
    /// from it are refused unchecked until the window passes; 0 = no cap.
    pub max_auth_failures_per_ip: u32,
    /// Failed logins for one user name within the window after which that
    /// user's logins are refused unchecked (from untrusted addresses); 0 =
    /// no cap. Stops guessing one password from many addresses.
    pub max_auth_failures_per_user: u32,
    /// How long failures are remembered for the caps and the delay.
    pub auth_failure_window_secs: u64,
    /// Unknown commands, syntax errors and overlong lines accepted before
    /// login; one more closes the connection. 0 = no limit.
    pub max_bad_commands: u32,
    /// Seconds SIGTERM waits for commands in progress (a RETR being sent,
    /// a QUIT's deletions) to finish before the remaining connections are
    /// cut.
    pub shutdown_grace_secs: u64,
    /// Command lines read ahead of the one being handled (pipelining); when
    /// full the server stops reading from that client.
    pub max_pipelined_lines: usize,
    /// Seconds a client may take to finish the TLS handshake (implicit TLS
    /// or after STLS), so half-open handshakes cannot hold connections and
    /// their buffers for the whole login timeout.
    pub tls_handshake_timeout_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 10_000,
            max_per_ip: 100,
            idle_timeout_secs: 600,
            login_timeout_secs: 60,
            auth_failure_delay_ms: 2000,
            auth_failure_delay_max_ms: 15_000,
            max_auth_failures_per_ip: 10,
            max_auth_failures_per_user: 10,
            auth_failure_window_secs: 300,
            max_bad_commands: 10,
            shutdown_grace_secs: 10,
            max_pipelined_lines: 128,
            tls_handshake_timeout_secs: 10,
        }
    }
}

/// A backend: a built-in name or a path to a shared library, and its own
/// settings, which only that backend interprets.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PluginSection {
    /// A built-in backend name (`passwd-file`, `checkpassword`, `maildir`)
    /// or the path of a shared library exporting a pop3d plugin.
    pub plugin: String,
    /// The backend's own settings, kept as the RON text the operator wrote
    /// and handed to the plugin's `create` as is (`get_ron()`), so a plugin
    /// can define its keys without pop3d knowing them. Raw text rather than
    /// a parsed `ron::Value`, which could not be turned back into the same
    /// text (struct names and enum variants are lost). `()` when absent.
    #[serde(default = "empty_config")]
    pub config: Box<RawValue>,
}

fn default_listen() -> Vec<Listener> {
    vec![Listener {
        addr: SocketAddr::from(([127, 0, 0, 1], 110)),
        implicit_tls: false,
    }]
}

/// The `config` of a section that has none: the empty struct, which a
/// plugin without settings accepts and one with required settings refuses
/// by naming the first missing field.
pub fn empty_config() -> Box<RawValue> {
    // `()` is valid RON, so this cannot fail.
    RawValue::from_boxed_ron("()".into()).expect("() is valid RON")
}

/// Which backend a [`PluginSection`] configures; handed to plugin checks so
/// they know what to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginRole {
    /// The `auth` section.
    Auth,
    /// The `store` section.
    Store,
}

impl PluginRole {
    /// The config key of this section.
    pub fn key(self) -> &'static str {
        match self {
            PluginRole::Auth => "auth",
            PluginRole::Store => "store",
        }
    }
}

/// Why a configuration could not be used.
#[derive(Debug)]
pub enum ConfigError {
    /// The file could not be read at all (missing, unreadable, not UTF-8).
    Read {
        /// The file we tried to read.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The text was read but is not a usable configuration. Holds every
    /// problem found, in file order, never empty.
    Invalid(Vec<Problem>),
}

/// One thing wrong with a configuration, pointing at where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file name (or other origin) the text came from, so the message can
    /// be pasted into an editor's "go to" prompt.
    pub origin: String,
    /// 1-based line of the offending key or token.
    pub line: usize,
    /// 1-based column, counted in characters.
    pub column: usize,
    /// What is wrong, in the operator's terms.
    pub message: String,
    /// What would be accepted instead, when that can be said.
    pub expected: Option<String>,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.origin, self.line, self.column, self.message
        )?;
        if let Some(expected) = &self.expected {
            write!(f, " (expected {expected})")?;
        }
        Ok(())
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { path, source } => write!(
                f,
                "{}: cannot read the configuration: {source}",
                path.display()
            ),
            ConfigError::Invalid(problems) => {
                for (i, problem) in problems.iter().enumerate() {
                    if i > 0 {
                        writeln!(f)?;
                    }
                    write!(f, "{problem}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::Read { source, .. } => Some(source),
            ConfigError::Invalid(_) => None,
        }
    }
}

/// Reads and validates the configuration file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    load_checked(path, &mut |_, _| Ok(()))
}

/// Parses and validates configuration text; `origin` names it in messages
/// (normally the file name).
pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
    parse_checked(text, origin, &mut |_, _| Ok(()))
}

/// A check of one backend section beyond what pop3d itself knows, typically
/// building the backend to see whether it accepts its settings. An `Err`
/// carries the backend's own explanation, which is shown as it is after the
/// position, so it should name the section and backend (the registry's
/// errors do: `auth passwd-file: cannot read ...`).
pub type PluginCheck<'a> = dyn FnMut(PluginRole, &PluginSection) -> Result<(), String> + 'a;

/// [`load`], plus `check_plugin` run on the `auth` and `store` sections;
/// what it reports is listed with the other problems.
pub fn load_checked(
    path: &Path,
    check_plugin: &mut PluginCheck<'_>,
) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_checked(&text, &path.display().to_string(), check_plugin)
}

/// [`parse`], plus `check_plugin` run on the `auth` and `store` sections;
/// what it reports is listed with the other problems.
pub fn parse_checked(
    text: &str,
    origin: &str,
    check_plugin: &mut PluginCheck<'_>,
) -> Result<Config, ConfigError> {
    let options =
        ron::Options::default().with_default_extension(ron::extensions::Extensions::IMPLICIT_SOME);
    if tokenize(text).is_empty() {
        return Err(ConfigError::Invalid(vec![Problem {
            origin: origin.to_string(),
            line: 1,
            column: 1,
            message: "the configuration is empty".to_string(),
            expected: Some(
                "( auth: (...), store: (...) ) at least; see examples/pop3d.ron".to_string(),
            ),
        }]));
    }
    let config: Config = match options.from_str(text) {
        Ok(config) => config,
        Err(err) => {
            let (message, expected) = describe_ron_error(&err.code);
            let (line, column) = skip_whitespace(text, (err.span.start.line, err.span.start.col));
            return Err(ConfigError::Invalid(vec![Problem {
                origin: origin.to_string(),
                line,
                column,
                message,
                expected,
            }]));
        }
    };

    let mut findings = semantic_findings(&config);
    for (role, section) in [
        (PluginRole::Auth, &config.auth),
        (PluginRole::Store, &config.store),
    ] {
        // An empty name is already reported; building "" would only add noise.
        if section.plugin.trim().is_empty() {
            continue;
        }
        if let Err(why) = check_plugin(role, section) {
            let key = role.key();
            findings.push(Finding {
                at: vec![format!("{key}.config"), format!("{key}.plugin")],
                message: why,
                expected: None,
            });
        }
    }
    if findings.is_empty() {
        return Ok(config);
    }

    let map = SourceMap::scan(text);
    let mut problems: Vec<Problem> = findings
        .into_iter()
        .map(|finding| {
            let (line, column) = map.locate(&finding.at);
            Problem {
                origin: origin.to_string(),
                line,
                column,
                message: finding.message,
                expected: finding.expected,
            }
        })
        .collect();
    problems.sort_by_key(|p| (p.line, p.column));
    Err(ConfigError::Invalid(problems))
}

/// A semantic problem before it has a position: `at` lists config paths
/// (`limits.max_per_ip`, `listen[1].addr`) to point at, best first.
struct Finding {
    at: Vec<String>,
    message: String,
    expected: Option<String>,
}

impl Finding {
    fn new(at: &[&str], message: String, expected: &str) -> Finding {
        Finding {
            at: at.iter().map(|p| p.to_string()).collect(),
            message,
            expected: Some(expected.to_string()),
        }
    }
}

/// Most worker threads we accept; far above any useful count, low enough that
/// a typo (an extra zero or two) is caught before it exhausts memory.
const MAX_WORKERS: usize = 1024;

/// RFC 1939 section 3: the autologout timer "MUST be of at least 10 minutes'
/// duration".
const MIN_IDLE_TIMEOUT_SECS: u64 = 600;

/// Everything wrong with values that parsed fine on their own.
fn semantic_findings(config: &Config) -> Vec<Finding> {
    let mut found = Vec::new();

    if config.listen.is_empty() {
        found.push(Finding::new(
            &["listen"],
            "no listeners: pop3d would accept no connections".to_string(),
            "at least one entry such as (addr: \"0.0.0.0:110\")",
        ));
    }
    for (i, listener) in config.listen.iter().enumerate() {
        let addr_path = format!("listen[{i}].addr");
        let earlier = config.listen[..i]
            .iter()
            .position(|other| overlaps(other.addr, listener.addr));
        if let Some(j) = earlier {
            let other = config.listen[j].addr;
            let message = if other == listener.addr {
                format!(
                    "listen address {} is listed twice (also entry {})",
                    listener.addr,
                    j + 1
                )
            } else {
                format!(
                    "listen address {} overlaps entry {} ({}): a wildcard address already takes port {} on every address of that family",
                    listener.addr,
                    j + 1,
                    other,
                    other.port()
                )
            };
            found.push(Finding::new(
                &[&addr_path, &format!("listen[{i}]")],
                message,
                "each address and port once",
            ));
        }
        if listener.implicit_tls && !crate::server::TLS_BUILT {
            found.push(Finding::new(
                &[&format!("listen[{i}].implicit_tls"), &addr_path],
                format!(
                    "listener {} has implicit_tls: true, but {}",
                    listener.addr,
                    crate::server::NO_TLS_BUILD
                ),
                "implicit_tls: false (terminate TLS in front of pop3d), or a build with TLS",
            ));
        } else if listener.implicit_tls && config.tls.is_none() {
            found.push(Finding::new(
                &[&format!("listen[{i}].implicit_tls"), &addr_path],
                format!("listener {} has implicit_tls: true but there is no `tls` section with a certificate", listener.addr),
                "tls: (cert: \"/path/cert.pem\", key: \"/path/key.pem\") at the top level, or implicit_tls: false",
            ));
        }
    }

    if config.tls.is_some() && !crate::server::TLS_BUILT {
        found.push(Finding::new(
            &["tls"],
            format!(
                "a `tls` section is set, but {}",
                crate::server::NO_TLS_BUILD
            ),
            "no `tls` section (terminate TLS in front of pop3d), or a build with TLS",
        ));
    }
    if let Some(tls) = &config.tls {
        for (key, value) in [("cert", &tls.cert), ("key", &tls.key)] {
            if value.trim().is_empty() {
                found.push(Finding::new(
                    &[&format!("tls.{key}"), "tls"],
                    format!("tls {key} is an empty path"),
                    "the path of a PEM file",
                ));
            }
        }
    }

    if config.workers > MAX_WORKERS {
        found.push(Finding::new(
            &["workers"],
            format!(
                "workers is {}, more threads than any machine can use",
                config.workers
            ),
            &format!("0 (one per core) or at most {MAX_WORKERS}"),
        ));
    }

    let limits = &config.limits;
    if limits.max_connections == 0 {
        found.push(Finding::new(
            &["limits.max_connections", "limits"],
            "max_connections is 0: no client could ever connect".to_string(),
            "1 or more",
        ));
    }
    if limits.max_per_ip == 0 {
        found.push(Finding::new(
            &["limits.max_per_ip", "limits"],
            "max_per_ip is 0: no client could ever connect".to_string(),
            "1 or more",
        ));
    }
    if limits.max_per_ip > 0
        && limits.max_connections > 0
        && limits.max_per_ip > limits.max_connections
    {
        found.push(Finding::new(
            &["limits.max_per_ip", "limits.max_connections", "limits"],
            format!(
                "max_per_ip ({}) is larger than max_connections ({}), so it could never apply",
                limits.max_per_ip, limits.max_connections
            ),
            "max_per_ip at most max_connections",
        ));
    }
    if limits.idle_timeout_secs < MIN_IDLE_TIMEOUT_SECS {
        found.push(Finding::new(
            &["limits.idle_timeout_secs", "limits"],
            format!(
                "idle_timeout_secs is {}: RFC 1939 requires the autologout timer to be at least 10 minutes, and clients on slow links rely on it",
                limits.idle_timeout_secs
            ),
            &format!("{MIN_IDLE_TIMEOUT_SECS} or more"),
        ));
    }
    if limits.login_timeout_secs == 0 {
        found.push(Finding::new(
            &["limits.login_timeout_secs", "limits"],
            "login_timeout_secs is 0: every client would be disconnected before it could log in"
                .to_string(),
            "1 or more (the default is 60)",
        ));
    }
    if limits.tls_handshake_timeout_secs == 0 {
        found.push(Finding::new(
            &["limits.tls_handshake_timeout_secs", "limits"],
            "tls_handshake_timeout_secs is 0: every TLS handshake would time out before it started"
                .to_string(),
            "1 or more (the default is 10)",
        ));
    }
    if limits.max_pipelined_lines == 0 {
        found.push(Finding::new(
            &["limits.max_pipelined_lines", "limits"],
            "max_pipelined_lines is 0: not even the command being handled would fit".to_string(),
            "1 or more (the default is 128)",
        ));
    }

    if limits.auth_failure_delay_max_ms < limits.auth_failure_delay_ms {
        found.push(Finding::new(
            &[
                "limits.auth_failure_delay_max_ms",
                "limits.auth_failure_delay_ms",
                "limits",
            ],
            format!(
                "auth_failure_delay_max_ms ({}) is smaller than auth_failure_delay_ms ({}), where the delay starts",
                limits.auth_failure_delay_max_ms, limits.auth_failure_delay_ms
            ),
            "auth_failure_delay_max_ms at least auth_failure_delay_ms (the defaults are 15000 and 2000)",
        ));
    }
    let caps_on = limits.max_auth_failures_per_ip > 0 || limits.max_auth_failures_per_user > 0;
    if limits.auth_failure_window_secs == 0 && caps_on {
        found.push(Finding::new(
            &["limits.auth_failure_window_secs", "limits"],
            "auth_failure_window_secs is 0: failures would be forgotten at once, so the failure caps could never apply".to_string(),
            "1 or more (the default is 300), or max_auth_failures_per_ip and max_auth_failures_per_user 0",
        ));
    }

    if let Some(user) = &config.user {
        if user.trim().is_empty() {
            found.push(Finding::new(
                &["user"],
                "user is an empty name".to_string(),
                "the name of the account to run as, e.g. \"pop3d\", or no `user` key",
            ));
        }
    }
    match &config.group {
        Some(group) if group.trim().is_empty() => found.push(Finding::new(
            &["group"],
            "group is an empty name".to_string(),
            "the name of the group to run as, e.g. \"pop3d\", or no `group` key",
        )),
        Some(_) if config.user.is_none() => found.push(Finding::new(
            &["group"],
            "group is set without user: pop3d changes its group only together with its user"
                .to_string(),
            "user: \"NAME\" as well, or no `group` key",
        )),
        _ => {}
    }

    if let Some(addr) = config.stats_listen {
        if !addr.ip().is_loopback() {
            found.push(Finding::new(
                &["stats_listen"],
                format!(
                    "stats_listen {addr} is not a loopback address: the metrics endpoint has no authentication"
                ),
                "an address such as \"127.0.0.1:9110\" or \"[::1]:9110\" (scrape it through a local agent or an SSH tunnel)",
            ));
        }
        if let Some(i) = config.listen.iter().position(|l| overlaps(l.addr, addr)) {
            found.push(Finding::new(
                &["stats_listen"],
                format!(
                    "stats_listen {addr} overlaps listen entry {} ({})",
                    i + 1,
                    config.listen[i].addr
                ),
                "a port of its own",
            ));
        }
    }

    if let Some(hostname) = &config.hostname {
        if let Err(why) = check_hostname(hostname) {
            found.push(Finding::new(
                &["hostname"],
                format!("hostname {hostname:?} {why}"),
                "a host name such as \"mail.example.org\", or no `hostname` key for the system's",
            ));
        }
    }

    for (role, section) in [
        (PluginRole::Auth, &config.auth),
        (PluginRole::Store, &config.store),
    ] {
        if section.plugin.trim().is_empty() {
            let key = role.key();
            let example = match role {
                PluginRole::Auth => "\"passwd-file\"",
                PluginRole::Store => "\"maildir\"",
            };
            found.push(Finding::new(
                &[&format!("{key}.plugin"), key],
                format!("{key} plugin name is empty"),
                &format!("a built-in name such as {example} or the path of a plugin library"),
            ));
        }
    }

    found
}

/// Why `hostname` cannot go into a `<...@hostname>` challenge: the client
/// digests the challenge verbatim, so a character that the server would
/// have to drop or that ends the challenge early breaks every APOP and
/// CRAM-MD5 login.
fn check_hostname(hostname: &str) -> Result<(), &'static str> {
    if hostname.is_empty() {
        return Err("is empty");
    }
    if hostname
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err("contains spaces or control characters");
    }
    if hostname.contains(['<', '>', '@']) {
        return Err("contains '<', '>' or '@', which would end the challenge early");
    }
    // The challenge builder keeps only these; anything else would be
    // dropped silently and the operator would not recognise the name.
    if !hostname
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    {
        return Err("has characters other than letters, digits, '.', '-' and '_'");
    }
    if hostname.len() > 253 {
        return Err("is longer than the 253 characters a host name may have");
    }
    Ok(())
}

/// The host name for challenges: `configured` when set, else the kernel's
/// (`/proc/sys/kernel/hostname`), else `localhost`.
pub fn effective_hostname(configured: Option<&str>) -> String {
    if let Some(name) = configured {
        return name.to_owned();
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|text| text.trim().to_owned())
        .filter(|name| check_hostname(name).is_ok())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// Whether two listen addresses cannot both be bound: the same address, or a
/// wildcard and any address of the same family on the same port.
fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    if a.port() != b.port() || a.is_ipv4() != b.is_ipv4() {
        return false;
    }
    a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified()
}

/// Moves a 1-based position forward past whitespace: ron sometimes reports a
/// value's position as the blank before it, and the operator looks for the
/// value.
fn skip_whitespace(text: &str, (mut line, mut column): (usize, usize)) -> (usize, usize) {
    line = line.max(1);
    column = column.max(1);
    let Some(rest_of_line) = text.lines().nth(line - 1) else {
        return (line, column);
    };
    let blanks = rest_of_line
        .chars()
        .skip(column - 1)
        .take_while(|c| c.is_whitespace())
        .count();
    // Only within the line: a position at the end of a line stays put, as the
    // thing missing belongs there.
    if rest_of_line.chars().count() > column - 1 + blanks {
        column += blanks;
    }
    (line, column)
}

/// Turns ron's error into an operator's message and what was expected.
fn describe_ron_error(code: &ron::Error) -> (String, Option<String>) {
    use ron::Error as E;
    let one_of = |names: &[&str]| names.join(", ");
    match code {
        E::NoSuchStructField { expected, found, outer } => (
            format!("unknown key `{found}` in {}", section_name(outer.as_deref())),
            Some(format!("one of: {}", one_of(expected))),
        ),
        E::NoSuchEnumVariant { expected, found, outer } => (
            format!("unknown value `{found}` for {}", section_name(outer.as_deref())),
            Some(format!("one of: {}", one_of(expected))),
        ),
        E::MissingStructField { field, outer } => (
            format!("missing key `{field}` in {}", section_name(outer.as_deref())),
            Some(match *field {
                "auth" => "an auth section such as auth: (plugin: \"passwd-file\", config: (path: \"/etc/pop3d/passwd\"))".to_string(),
                "store" => "a store section such as store: (plugin: \"maildir\", config: (root: \"/var/mail/%u/Maildir\"))".to_string(),
                "plugin" => "plugin: \"<built-in name or library path>\"".to_string(),
                "addr" => "addr: \"IP:port\"".to_string(),
                "cert" => "cert: \"/path/cert.pem\"".to_string(),
                "key" => "key: \"/path/key.pem\"".to_string(),
                other => format!("`{other}: ...`"),
            }),
        ),
        E::DuplicateStructField { field, outer } => (
            format!("key `{field}` appears twice in {}", section_name(outer.as_deref())),
            Some("each key once".to_string()),
        ),
        E::Message(msg) if msg.contains("socket address") => (
            format!("not an address and port: {msg}"),
            Some("\"IP:port\", e.g. \"0.0.0.0:110\" or \"[::]:995\"".to_string()),
        ),
        E::Message(msg) => (msg.clone(), None),
        E::InvalidValueForType { expected, found } => {
            (format!("wrong type of value: found {found}"), Some(expected.clone()))
        }
        E::Eof => (
            "the file ends too early".to_string(),
            Some("the rest of the configuration; is a bracket or quote left open?".to_string()),
        ),
        E::TrailingCharacters => (
            "text after the end of the configuration".to_string(),
            Some("nothing after the closing `)`".to_string()),
        ),
        E::ExpectedComma => ("syntax error".to_string(), Some("`,` between entries".to_string())),
        E::ExpectedString | E::ExpectedStringEnd => (
            "syntax error: not a complete string".to_string(),
            Some("text in double quotes".to_string()),
        ),
        E::ExpectedInteger | E::IntegerOutOfBounds => (
            "not a usable number".to_string(),
            Some("a whole number, not negative, without quotes".to_string()),
        ),
        E::ExpectedBoolean => ("not a boolean".to_string(), Some("true or false".to_string())),
        E::ExpectedOption => (
            "not an optional value".to_string(),
            Some("None, Some(...) or the value itself".to_string()),
        ),
        E::ExpectedStructLike | E::ExpectedNamedStructLike(_) => (
            "syntax error: a section must be in parentheses".to_string(),
            Some("`(`".to_string()),
        ),
        E::ExpectedStructLikeEnd | E::ExpectedOptionEnd => {
            ("syntax error".to_string(), Some("`)` or `,`".to_string()))
        }
        E::ExpectedArray => (
            "syntax error: a list must be in square brackets".to_string(),
            Some("`[`".to_string()),
        ),
        E::ExpectedArrayEnd => ("syntax error".to_string(), Some("`]` or `,`".to_string())),
        E::ExpectedMapColon => ("syntax error".to_string(), Some("`:` after the key".to_string())),
        other => (format!("syntax error: {other}"), None),
    }
}

/// The operator's name for a part of the file, from the Rust type name ron
/// reports.
fn section_name(outer: Option<&str>) -> &'static str {
    match outer {
        Some("Config") | None => "the top level",
        Some("Limits") => "limits",
        Some("Listener") => "a listen entry",
        Some("TlsFiles") => "tls",
        Some("PluginSection") => "an auth or store section",
        Some("PlaintextAuth") => "allow_plaintext_auth",
        Some(_) => "this section",
    }
}

/// Where each key (`limits.idle_timeout_secs`) and list element
/// (`listen[1]`) of a RON text starts.
///
/// This is not a RON parser: it only tracks brackets, `key:` pairs and commas
/// while skipping strings and comments, which is enough for files that
/// already deserialized successfully.
struct SourceMap {
    /// Path and 1-based (line, column), first occurrence of each path.
    entries: Vec<(String, (usize, usize))>,
}

/// A token the scanner cares about. Everything else (numbers, strings,
/// operators) is `Value`: it only matters as the start of a list element.
#[derive(Debug, PartialEq)]
enum Token {
    Ident(String),
    Open(char),
    Close,
    Colon,
    Comma,
    Value,
}

/// One open bracket while walking the tokens.
struct Frame {
    /// Path of the value this bracket opens.
    prefix: String,
    /// `(`, `[` or `{`: keys only live in `(`, indices only in `[`.
    bracket: char,
    /// Index of the current element, for `[`.
    index: usize,
    /// Whether the current element's first token was recorded, for `[`.
    element_started: bool,
    /// The key whose value is being read, for `(`.
    key: Option<String>,
}

impl Frame {
    /// Path of the value at the current position inside this bracket.
    fn value_path(&self) -> String {
        match (self.bracket, &self.key) {
            ('(', Some(key)) => join(&self.prefix, key),
            ('[', _) => format!("{}[{}]", self.prefix, self.index),
            _ => self.prefix.clone(),
        }
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

impl SourceMap {
    fn scan(text: &str) -> SourceMap {
        let tokens = tokenize(text);
        let mut entries: Vec<(String, (usize, usize))> = Vec::new();
        let mut record = |path: String, pos: (usize, usize)| {
            if !entries.iter().any(|(p, _)| *p == path) {
                entries.push((path, pos));
            }
        };
        let mut stack: Vec<Frame> = Vec::new();
        for (i, (token, pos)) in tokens.iter().enumerate() {
            if let Some(frame) = stack.last_mut() {
                if frame.bracket == '['
                    && !frame.element_started
                    && !matches!(token, Token::Comma | Token::Close)
                {
                    frame.element_started = true;
                    record(frame.value_path(), *pos);
                }
            }
            match token {
                Token::Ident(name) => {
                    let is_key = matches!(tokens.get(i + 1), Some((Token::Colon, _)));
                    if let Some(frame) = stack.last_mut().filter(|f| f.bracket == '(' && is_key) {
                        frame.key = Some(name.clone());
                        record(join(&frame.prefix, name), *pos);
                    }
                }
                Token::Open(bracket) => {
                    let prefix = stack.last().map(Frame::value_path).unwrap_or_default();
                    stack.push(Frame {
                        prefix,
                        bracket: *bracket,
                        index: 0,
                        element_started: false,
                        key: None,
                    });
                }
                Token::Close => {
                    stack.pop();
                }
                Token::Comma => {
                    if let Some(frame) = stack.last_mut() {
                        frame.key = None;
                        frame.index += 1;
                        frame.element_started = false;
                    }
                }
                Token::Colon | Token::Value => {}
            }
        }
        SourceMap { entries }
    }

    /// Position of the first of `paths` written in the file, trying each
    /// path's enclosing sections before giving up; 1:1 if none is.
    fn locate(&self, paths: &[String]) -> (usize, usize) {
        let find = |path: &str| {
            self.entries
                .iter()
                .find(|(p, _)| p == path)
                .map(|(_, pos)| *pos)
        };
        for path in paths {
            if let Some(pos) = find(path) {
                return pos;
            }
        }
        for path in paths {
            let mut path = path.as_str();
            while let Some(cut) = path.rfind(['.', '[']) {
                path = &path[..cut];
                if let Some(pos) = find(path) {
                    return pos;
                }
            }
        }
        (1, 1)
    }
}

/// Splits RON text into the tokens [`SourceMap`] needs, with 1-based
/// positions counted in characters (as ron counts them).
fn tokenize(text: &str) -> Vec<(Token, (usize, usize))> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let (mut line, mut col) = (1usize, 1usize);
    let mut i = 0;
    // Advances over chars[i..end], keeping line and column right.
    let advance = |i: &mut usize, end: usize, line: &mut usize, col: &mut usize| {
        while *i < end.min(chars.len()) {
            if chars[*i] == '\n' {
                *line += 1;
                *col = 1;
            } else {
                *col += 1;
            }
            *i += 1;
        }
    };
    while i < chars.len() {
        let c = chars[i];
        let pos = (line, col);
        let next = chars.get(i + 1).copied();
        let end = if c == '/' && next == Some('/') {
            chars[i..]
                .iter()
                .position(|&c| c == '\n')
                .map_or(chars.len(), |n| i + n)
        } else if c == '/' && next == Some('*') {
            block_comment_end(&chars, i)
        } else if c == '"' {
            tokens.push((Token::Value, pos));
            quoted_end(&chars, i, '"')
        } else if c == '\'' {
            tokens.push((Token::Value, pos));
            quoted_end(&chars, i, '\'')
        } else if c == 'r' && starts_raw_string(&chars[i + 1..]) {
            tokens.push((Token::Value, pos));
            raw_string_end(&chars, i)
        } else if c.is_alphabetic() || c == '_' {
            let n = chars[i..]
                .iter()
                .take_while(|c| c.is_alphanumeric() || **c == '_')
                .count();
            tokens.push((Token::Ident(chars[i..i + n].iter().collect()), pos));
            i + n
        } else if c.is_whitespace() {
            i + 1
        } else {
            let token = match c {
                '(' | '[' | '{' => Token::Open(c),
                ')' | ']' | '}' => Token::Close,
                ':' => Token::Colon,
                ',' => Token::Comma,
                _ => Token::Value,
            };
            tokens.push((token, pos));
            i + 1
        };
        let stop = end.max(i + 1);
        advance(&mut i, stop, &mut line, &mut col);
    }
    tokens
}

/// Index just past a `/* */` comment starting at `start` (RON nests them).
fn block_comment_end(chars: &[char], start: usize) -> usize {
    let mut depth = 0;
    let mut i = start;
    while i + 1 < chars.len() {
        match (chars[i], chars[i + 1]) {
            ('/', '*') => {
                depth += 1;
                i += 2;
            }
            ('*', '/') => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return i;
                }
            }
            _ => i += 1,
        }
    }
    chars.len()
}

/// Index just past a string or char literal opened by `quote` at `start`.
fn quoted_end(chars: &[char], start: usize, quote: char) -> usize {
    let mut i = start + 1;
    while i < chars.len() {
        match chars[i] {
            '\\' => i += 2,
            c if c == quote => return i + 1,
            _ => i += 1,
        }
    }
    chars.len()
}

/// Whether the text after an `r` makes it a raw string (`r"`, `r#"`) rather
/// than an identifier or a raw identifier (`r#name`).
fn starts_raw_string(after_r: &[char]) -> bool {
    let hashes = after_r.iter().take_while(|&&c| c == '#').count();
    after_r.get(hashes) == Some(&'"')
}

/// Index just past a raw string `r#"..."#` starting at `start`.
fn raw_string_end(chars: &[char], start: usize) -> usize {
    let hashes = chars[start + 1..].iter().take_while(|&&c| c == '#').count();
    let mut i = start + 2 + hashes;
    while i < chars.len() {
        if chars[i] == '"'
            && chars[i + 1..]
                .iter()
                .take(hashes)
                .filter(|&&c| c == '#')
                .count()
                == hashes
        {
            return i + 1 + hashes;
        }
        i += 1;
    }
    chars.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The two required sections, so each test shows only what it is about.
    const BACKENDS: &str = "    auth: (plugin: \"passwd-file\", config: (path: \"/etc/pop3d/passwd\")),\n    store: (plugin: \"maildir\", config: (root: \"/var/mail/%u/Maildir\")),\n";

    /// A config whose lines 2 and 3 are the backends and whose line 4 on is
    /// `rest` (which closes the outer parenthesis itself).
    fn with_backends(rest: &str) -> String {
        format!("(\n{BACKENDS}{rest}")
    }

    fn problems(text: &str) -> Vec<String> {
        match parse(text, "pop3d.ron") {
            Ok(config) => panic!("accepted a bad config: {config:?}"),
            Err(err) => err.to_string().lines().map(str::to_string).collect(),
        }
    }

    #[test]
    #[cfg_attr(
        not(feature = "tls"),
        ignore = "its configurations use TLS, which a build without the `tls` feature refuses"
    )]
    fn bad_configs_are_reported_with_position_and_expectation() {
        let table: &[(&str, &str)] = &[
            (
                "    limits: (idle_timeout: 900),\n)",
                "pop3d.ron:4:14: unknown key `idle_timeout` in limits (expected one of: max_connections, max_per_ip, idle_timeout_secs, login_timeout_secs, auth_failure_delay_ms, auth_failure_delay_max_ms, max_auth_failures_per_ip, max_auth_failures_per_user, auth_failure_window_secs, max_bad_commands, shutdown_grace_secs, max_pipelined_lines, tls_handshake_timeout_secs)",
            ),
            (
                "    bogus: 1,\n)",
                "pop3d.ron:4:5: unknown key `bogus` in the top level (expected one of: listen, tls, allow_plaintext_auth, workers, limits, trusted_networks, user, group, allow_root, stats_listen, apop, hostname, auth, store)",
            ),
            (
                "    allow_plaintext_auth: Sometimes,\n)",
                "pop3d.ron:4:27: unknown value `Sometimes` for allow_plaintext_auth (expected one of: Never, LoopbackOnly, Always)",
            ),
            (
                "    listen: [(addr: \"1.2.3.4\")],\n)",
                "pop3d.ron:4:22: not an address and port: invalid socket address syntax (expected \"IP:port\", e.g. \"0.0.0.0:110\" or \"[::]:995\")",
            ),
            (
                "    listen: [(addr: \"1.2.3.4:110\", tls: true)],\n)",
                "pop3d.ron:4:36: unknown key `tls` in a listen entry (expected one of: addr, implicit_tls)",
            ),
            (
                "    tls: Some((cert: \"/c.pem\")),\n)",
                "pop3d.ron:4:30: missing key `key` in tls (expected key: \"/path/key.pem\")",
            ),
            (
                "    workers: 4\n    limits: (),\n)",
                "pop3d.ron:5:5: syntax error (expected `,` between entries)",
            ),
            (
                "    workers: 1,\n    workers: 2,\n)",
                "pop3d.ron:5:5: key `workers` appears twice in the top level (expected each key once)",
            ),
            (
                "    workers: \"4\",\n)",
                "pop3d.ron:4:14: not a usable number (expected a whole number, not negative, without quotes)",
            ),
            (
                "    listen: [(addr: \"1.2.3.4:110\", implicit_tls: yes)],\n)",
                "pop3d.ron:4:50: not a boolean (expected true or false)",
            ),
            (
                ")\n)",
                "pop3d.ron:4:2: text after the end of the configuration (expected nothing after the closing `)`)",
            ),
            (
                "    listen: [],\n)",
                "pop3d.ron:4:5: no listeners: pop3d would accept no connections (expected at least one entry such as (addr: \"0.0.0.0:110\"))",
            ),
            (
                "    listen: [\n        (addr: \"127.0.0.1:1110\"),\n        (addr: \"127.0.0.1:1110\"),\n    ],\n)",
                "pop3d.ron:6:10: listen address 127.0.0.1:1110 is listed twice (also entry 1) (expected each address and port once)",
            ),
            (
                "    listen: [(addr: \"0.0.0.0:110\"), (addr: \"10.0.0.1:110\")],\n)",
                "pop3d.ron:4:38: listen address 10.0.0.1:110 overlaps entry 1 (0.0.0.0:110): a wildcard address already takes port 110 on every address of that family (expected each address and port once)",
            ),
            (
                "    listen: [(addr: \"0.0.0.0:110\"), (addr: \"0.0.0.0:995\", implicit_tls: true)],\n)",
                "pop3d.ron:4:59: listener 0.0.0.0:995 has implicit_tls: true but there is no `tls` section with a certificate (expected tls: (cert: \"/path/cert.pem\", key: \"/path/key.pem\") at the top level, or implicit_tls: false)",
            ),
            (
                "    workers: 100000,\n)",
                "pop3d.ron:4:5: workers is 100000, more threads than any machine can use (expected 0 (one per core) or at most 1024)",
            ),
            (
                "    limits: (\n        idle_timeout_secs: 300,\n    ),\n)",
                "pop3d.ron:5:9: idle_timeout_secs is 300: RFC 1939 requires the autologout timer to be at least 10 minutes, and clients on slow links rely on it (expected 600 or more)",
            ),
            (
                "    limits: (max_connections: 0),\n)",
                "pop3d.ron:4:14: max_connections is 0: no client could ever connect (expected 1 or more)",
            ),
            (
                "    limits: (max_per_ip: 0),\n)",
                "pop3d.ron:4:14: max_per_ip is 0: no client could ever connect (expected 1 or more)",
            ),
            (
                "    limits: (login_timeout_secs: 0),\n)",
                "pop3d.ron:4:14: login_timeout_secs is 0: every client would be disconnected before it could log in (expected 1 or more (the default is 60))",
            ),
            (
                "    limits: (max_pipelined_lines: 0),\n)",
                "pop3d.ron:4:14: max_pipelined_lines is 0: not even the command being handled would fit (expected 1 or more (the default is 128))",
            ),
            (
                "    limits: (tls_handshake_timeout_secs: 0),\n)",
                "pop3d.ron:4:14: tls_handshake_timeout_secs is 0: every TLS handshake would time out before it started (expected 1 or more (the default is 10))",
            ),
            (
                // max_per_ip keeps its default of 100: point at what was written.
                "    limits: (max_connections: 50),\n)",
                "pop3d.ron:4:14: max_per_ip (100) is larger than max_connections (50), so it could never apply (expected max_per_ip at most max_connections)",
            ),
            (
                "    limits: (auth_failure_delay_ms: 3000, auth_failure_delay_max_ms: 1000),\n)",
                "pop3d.ron:4:43: auth_failure_delay_max_ms (1000) is smaller than auth_failure_delay_ms (3000), where the delay starts (expected auth_failure_delay_max_ms at least auth_failure_delay_ms (the defaults are 15000 and 2000))",
            ),
            (
                "    limits: (auth_failure_window_secs: 0),\n)",
                "pop3d.ron:4:14: auth_failure_window_secs is 0: failures would be forgotten at once, so the failure caps could never apply (expected 1 or more (the default is 300), or max_auth_failures_per_ip and max_auth_failures_per_user 0)",
            ),
            (
                "    group: \"mail\",\n)",
                "pop3d.ron:4:5: group is set without user: pop3d changes its group only together with its user (expected user: \"NAME\" as well, or no `group` key)",
            ),
            (
                "    stats_listen: \"0.0.0.0:9110\",\n)",
                "pop3d.ron:4:5: stats_listen 0.0.0.0:9110 is not a loopback address: the metrics endpoint has no authentication (expected an address such as \"127.0.0.1:9110\" or \"[::1]:9110\" (scrape it through a local agent or an SSH tunnel))",
            ),
            (
                "    hostname: \"mail@example.org\",\n)",
                "pop3d.ron:4:5: hostname \"mail@example.org\" contains '<', '>' or '@', which would end the challenge early (expected a host name such as \"mail.example.org\", or no `hostname` key for the system's)",
            ),
            (
                "    hostname: \"\",\n)",
                "pop3d.ron:4:5: hostname \"\" is empty (expected a host name such as \"mail.example.org\", or no `hostname` key for the system's)",
            ),
            (
                "    hostname: \"mail example\",\n)",
                "pop3d.ron:4:5: hostname \"mail example\" contains spaces or control characters (expected a host name such as \"mail.example.org\", or no `hostname` key for the system's)",
            ),
            (
                "    trusted_networks: [\"10.0.0.1/8\"],\n)",
                "pop3d.ron:4:25: `10.0.0.1/8` is not a network: bits are set beyond the prefix (did you mean 10.0.0.0/8?) (expected \"IP/prefix\", e.g. \"10.0.0.0/8\" or \"2001:db8::/32\", or one address)",
            ),
            (
                "    tls: (cert: \"\", key: \"/k.pem\"),\n)",
                "pop3d.ron:4:11: tls cert is an empty path (expected the path of a PEM file)",
            ),
        ];
        for (rest, expected) in table {
            let text = with_backends(rest);
            assert_eq!(
                problems(&text),
                vec![expected.to_string()],
                "config:\n{text}"
            );
        }
    }

    #[test]
    fn missing_and_empty_backend_sections_are_reported() {
        assert_eq!(
            problems("(auth: (plugin: \"passwd-file\"))"),
            vec!["pop3d.ron:1:31: missing key `store` in the top level (expected a store section such as store: (plugin: \"maildir\", config: (root: \"/var/mail/%u/Maildir\")))"]
        );
        assert_eq!(
            problems("(\n  auth: (plugin: \"\"),\n  store: (plugin: \" \"),\n)"),
            vec![
                "pop3d.ron:2:10: auth plugin name is empty (expected a built-in name such as \"passwd-file\" or the path of a plugin library)",
                "pop3d.ron:3:11: store plugin name is empty (expected a built-in name such as \"maildir\" or the path of a plugin library)",
            ]
        );
        assert_eq!(
            problems("// nothing but a comment\n"),
            vec!["pop3d.ron:1:1: the configuration is empty (expected ( auth: (...), store: (...) ) at least; see examples/pop3d.ron)"]
        );
    }

    #[test]
    fn every_semantic_problem_is_listed_in_file_order() {
        let text = with_backends(
            "    workers: 2048,\n    limits: (\n        max_pipelined_lines: 0,\n        idle_timeout_secs: 10,\n    ),\n    listen: [(addr: \"127.0.0.1:1\"), (addr: \"127.0.0.1:1\")],\n)",
        );
        let found = problems(&text);
        let positions: Vec<&str> = found
            .iter()
            .map(|line| line.split(": ").next().unwrap())
            .collect();
        assert_eq!(
            positions,
            vec![
                "pop3d.ron:4:5",
                "pop3d.ron:6:9",
                "pop3d.ron:7:9",
                "pop3d.ron:9:38"
            ],
            "{found:#?}"
        );
    }

    #[test]
    #[cfg_attr(
        not(feature = "tls"),
        ignore = "its configurations use TLS, which a build without the `tls` feature refuses"
    )]
    fn keys_in_comments_and_strings_do_not_mislead_positions() {
        let text = with_backends(
            "    // idle_timeout_secs: 60 was too short\n    /* limits: ( idle_timeout_secs: 1 ) /* nested */ */\n    tls: Some((cert: \"idle_timeout_secs: 5\", key: r#\"k\"idle_timeout_secs:\"#)),\n    limits: (max_per_ip: 1, idle_timeout_secs: 60),\n)",
        );
        let found = problems(&text);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(
            found[0].starts_with("pop3d.ron:7:29: idle_timeout_secs is 60"),
            "{found:#?}"
        );
    }

    #[test]
    fn plugin_check_failures_are_listed_at_their_section() {
        let text = with_backends(")");
        let mut seen = Vec::new();
        let err = parse_checked(&text, "pop3d.ron", &mut |role, section| {
            seen.push((role, section.plugin.clone()));
            match role {
                PluginRole::Auth => {
                    Err("auth passwd-file: cannot read /etc/pop3d/passwd".to_string())
                }
                PluginRole::Store => Ok(()),
            }
        })
        .unwrap_err();
        assert_eq!(
            seen,
            vec![
                (PluginRole::Auth, "passwd-file".to_string()),
                (PluginRole::Store, "maildir".to_string())
            ]
        );
        assert_eq!(
            err.to_string(),
            "pop3d.ron:2:35: auth passwd-file: cannot read /etc/pop3d/passwd"
        );
    }

    #[test]
    fn minimal_config_gets_the_documented_defaults() {
        let config = parse(&with_backends(")"), "pop3d.ron").unwrap();
        assert_eq!(
            config.listen,
            vec![Listener {
                addr: "127.0.0.1:110".parse().unwrap(),
                implicit_tls: false
            }]
        );
        assert_eq!(config.tls, None);
        assert_eq!(config.allow_plaintext_auth, PlaintextAuth::LoopbackOnly);
        assert_eq!(config.workers, 0);
        assert_eq!(config.limits, Limits::default());
        assert_eq!(config.auth.plugin, "passwd-file");
        assert_eq!(
            config.auth.config.get_ron(),
            "(path: \"/etc/pop3d/passwd\")"
        );
    }

    #[test]
    fn plugin_config_text_reaches_the_plugin_as_written() {
        let text = "(\n    auth: (plugin: \"/usr/lib/pop3d/libldap.so\", config: LdapConfig(\n        \
                    url: \"ldap://x\", // the directory\n        scope: Subtree, bind: Some(\"cn=a\"),\n    )),\n    \
                    store: (plugin: \"maildir\"),\n)";
        let config = parse(text, "t").unwrap();
        assert_eq!(
            config.auth.config.get_ron(),
            "LdapConfig(\n        url: \"ldap://x\", // the directory\n        scope: Subtree, \
             bind: Some(\"cn=a\"),\n    )"
        );
        assert_eq!(config.store.config.get_ron(), "()");
        // And it survives being written out and read back.
        let again = parse(&ron::to_string(&config).unwrap(), "again").unwrap();
        assert_eq!(again, config);
    }

    #[test]
    fn tls_may_be_written_with_or_without_some() {
        for tls in [
            "tls: Some((cert: \"/c\", key: \"/k\"))",
            "tls: (cert: \"/c\", key: \"/k\")",
        ] {
            let text = with_backends(&format!("    {tls},\n)"));
            if !crate::server::TLS_BUILT {
                let err = parse(&text, "t").unwrap_err().to_string();
                assert!(err.contains(crate::server::NO_TLS_BUILD), "{err}");
                continue;
            }
            let config = parse(&text, "t").unwrap();
            assert_eq!(
                config.tls,
                Some(TlsFiles {
                    cert: "/c".into(),
                    key: "/k".into()
                }),
                "{tls}"
            );
        }
    }

    #[test]
    fn the_example_config_parses() {
        let config = parse(include_str!("../examples/pop3d.ron"), "examples/pop3d.ron")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.listen[0].addr, "0.0.0.0:110".parse().unwrap());
        assert_eq!(config.auth.plugin, "passwd-file");
        assert_eq!(config.store.plugin, "maildir");
    }

    #[test]
    fn the_readme_config_parses() {
        let readme = include_str!("../README.md");
        let start = readme
            .find("```ron\n(")
            .expect("README has a full ```ron example")
            + 7;
        let len = readme[start..].find("```").unwrap();
        let config =
            parse(&readme[start..start + len], "README.md").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.store.plugin, "maildir");
    }

    #[test]
    fn trusted_networks_match_what_they_cover() {
        let net = |s: &str| Network::try_from(s.to_string()).unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let table = [
            ("127.0.0.0/8", "127.0.0.1", true),
            ("127.0.0.0/8", "127.255.1.2", true),
            ("127.0.0.0/8", "128.0.0.1", false),
            ("10.1.2.3", "10.1.2.3", true),
            ("10.1.2.3", "10.1.2.4", false),
            ("0.0.0.0/0", "192.0.2.1", true),
            ("0.0.0.0/0", "::1", false),
            ("192.168.0.0/16", "::ffff:192.168.7.7", true),
            ("::1/128", "::1", true),
            ("2001:db8::/32", "2001:db8:ffff::1", true),
            ("2001:db8::/32", "2001:db9::1", false),
            ("::/0", "2001:db9::1", true),
        ];
        for (network, addr, inside) in table {
            assert_eq!(net(network).contains(ip(addr)), inside, "{network} {addr}");
        }
        assert_eq!(net("10.0.0.0/8").to_string(), "10.0.0.0/8");
        assert_eq!(net("::1").to_string(), "::1/128");
        for bad in ["10.0.0.0/33", "::/129", "10.0.0/8", "bogus", "10.0.0.0/x"] {
            assert!(Network::try_from(bad.to_string()).is_err(), "{bad}");
        }
    }

    #[test]
    fn load_names_the_file_it_cannot_read() {
        let err = load(Path::new("/nonexistent/pop3d.ron")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("/nonexistent/pop3d.ron: cannot read the configuration: "),
            "{err}"
        );
    }
}
