//! pop3d: a POP3 server (RFC 1939 and extensions).
//!
//! # Layout
//! - [`config`]: the RON configuration operators write, and its validation.
//! - [`server`]: the mio event loop, connections, line framing, timers and
//!   the worker pool. It knows lines, bytes and time, not POP3.
//! - [`protocol`]: command parsing, the body encoder and the session state
//!   machine. It does no I/O.
//! - [`backend`]: the authentication and storage traits the session calls,
//!   the plugin host every backend runs behind, and the registry that maps
//!   built-in names (the plugin crates under `plugins/`) and library paths
//!   to plugins.
//! - [`inetd`]: one session on stdin/stdout, for `pop3d --inetd` under
//!   inetd, xinetd or a systemd `Accept=yes` socket.
//! - [`logging`]: the logger (stderr, syslog or a file reopened on SIGUSR1) with its flood guard.
//! - [`pw`]: `pop3d pw`, which makes and checks passwd-file password hashes.
#![deny(unsafe_code)]

pub mod backend;
pub mod config;
pub mod demo;
pub mod inetd;
pub mod logging;
pub mod protocol;
pub mod pw;
pub mod server;
