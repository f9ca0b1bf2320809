//! Stands in for `tls.rs` when the crate is built without the `tls`
//! feature: the same names, so the event loop needs no `cfg`, but nothing
//! can be constructed. `--tls` and `--stls` are refused on the command line
//! (see [`BUILT`]); [`Connector::new`] refuses too, should anything get
//! that far.

use std::io;
use std::path::PathBuf;

/// This build has no TLS: the command line refuses the TLS flags.
pub const BUILT: bool = false;

/// What the command line says about trust and names. The command line
/// fills it the same way in both builds; nothing reads it in this one.
#[allow(dead_code)]
pub struct Settings {
    /// PEM file whose certificates would be trusted.
    pub ca_file: Option<PathBuf>,
    /// Accept any certificate.
    pub insecure: bool,
    /// Name for SNI and the certificate check.
    pub server_name: String,
    /// Session resumption.
    pub resumption: bool,
}

/// Cannot exist in this build: no value of an empty enum can be made.
pub enum Connector {}

impl Connector {
    pub fn new(_settings: &Settings) -> Result<Connector, String> {
        Err(
            "this loadgen was built without TLS (cargo feature `tls` is off); \
             rebuild it without --no-default-features"
                .into(),
        )
    }

    pub fn connect(&self) -> Result<TlsConn, String> {
        match *self {}
    }
}

/// Why a connection's TLS failed (never, here).
pub struct TlsFailure {
    /// The certificate was refused.
    pub certificate: bool,
    /// What went wrong.
    pub message: String,
}

/// Cannot exist in this build.
pub enum TlsConn {}

impl TlsConn {
    pub fn read_tls(&mut self, _wire: &mut &[u8]) -> Result<(), TlsFailure> {
        match *self {}
    }

    pub fn read_plaintext(&mut self, _buffer: &mut [u8]) -> io::Result<usize> {
        match *self {}
    }

    pub fn write_plaintext(&mut self, _bytes: &[u8]) -> io::Result<usize> {
        match *self {}
    }

    pub fn wants_write(&self) -> bool {
        match *self {}
    }

    pub fn write_tls(&mut self, _socket: &mut dyn io::Write) -> io::Result<usize> {
        match *self {}
    }

    pub fn is_handshaking(&self) -> bool {
        match *self {}
    }

    pub fn resumed(&self) -> bool {
        match *self {}
    }

    pub fn describe(&self) -> Option<String> {
        match *self {}
    }
}
