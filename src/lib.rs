//! pop3d: a POP3 server (RFC 1939 and extensions).
//!
//! # Layout
//! - [`config`]: the RON configuration operators write, and its validation.
//! - [`server`]: the mio event loop, connections, line framing, timers and
//!   the worker pool. It knows lines, bytes and time, not POP3.
//! - [`protocol`]: command parsing, the body encoder and the session state
//!   machine. It does no I/O.
//! - [`backend`]: the authentication and storage traits the session calls,
//!   and the bundled backends.
#![deny(unsafe_code)]

pub mod backend;
pub mod config;
pub mod demo;
pub mod protocol;
pub mod server;
