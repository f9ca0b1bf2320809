//! POP3 itself, without any I/O: command parsing, the body encoder, SASL,
//! and the session state machine. The server feeds it lines and writes what it
//! returns.
//!
//! # Layout
//! - `command.rs`: one line in, a [`command::Command`] or a parse error out.
//! - `encoder.rs`: raw message bytes to the CRLF, dot-stuffed wire form.
//! - `sasl.rs`: the SASL mechanisms for AUTH, and APOP digests.
//! - `session.rs`: the AUTHORIZATION / TRANSACTION / UPDATE state machine.
//! - `guard.rs`: what a session asks of the shared brute-force defences.

pub mod command;
pub mod encoder;
pub mod guard;
pub mod sasl;
pub mod session;

pub use session::{Directive, Session, SessionEnv};
