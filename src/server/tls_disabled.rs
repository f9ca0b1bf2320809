//! TLS for a build without the cargo feature `tls`: the API of `tls.rs`,
//! with no TLS in it.
//!
//! Hosts that terminate TLS elsewhere (a proxy, stunnel, a load balancer)
//! can leave rustls and its crypto out of the binary. The event loop and
//! the handshake threads compile against this module unchanged: loading a
//! certificate always fails with [`TlsError::NotBuilt`], so no
//! [`TlsAcceptor`] and hence no [`TlsConn`] can ever exist, and the
//! connection code that would use one is never reached. The configuration
//! check refuses `tls` and `implicit_tls` on such a build before that (see
//! [`TLS_BUILT`]), so the error here is a second line of defence.

use crate::config::TlsFiles;
use std::convert::Infallible;
use std::fmt;
use std::io::{self, Read, Write};

/// This build cannot serve TLS.
pub const TLS_BUILT: bool = false;

/// Why TLS could not be set up: in this build, always because it is not
/// compiled in.
#[derive(Debug)]
pub enum TlsError {
    /// The configuration asked for TLS, which this binary does not have.
    NotBuilt,
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::NotBuilt => write!(
                f,
                "{}; remove the `tls` section and implicit_tls, or rebuild with the default features",
                super::NO_TLS_BUILD
            ),
        }
    }
}

impl std::error::Error for TlsError {}

/// Stands for a loaded certificate; never constructed in this build.
pub struct TlsAcceptor {
    /// Makes the type uninhabited: [`TlsAcceptor::load`] is the only way to
    /// get one, and it always fails.
    never: Infallible,
}

impl TlsAcceptor {
    /// Always fails: there is no TLS in this build.
    pub fn load(_files: &TlsFiles) -> Result<TlsAcceptor, TlsError> {
        Err(TlsError::NotBuilt)
    }

    /// Unreachable: no acceptor exists.
    pub fn reload(&mut self) -> Result<(), TlsError> {
        match self.never {}
    }

    /// Unreachable: no acceptor exists.
    pub fn files(&self) -> &TlsFiles {
        match self.never {}
    }

    /// Unreachable: no acceptor exists.
    pub fn accept(&self) -> Result<TlsConn, TlsError> {
        match self.never {}
    }
}

/// What [`TlsConn::read_plaintext`] found (kept for the loop's code).
// The loop matches on these; with no TLS connection none is ever made.
#[allow(dead_code)]
#[derive(Debug, PartialEq, Eq)]
pub enum Plaintext {
    /// This many bytes were copied out.
    Data(usize),
    /// Nothing decrypted is waiting.
    Empty,
    /// The client has closed its side.
    Closed,
}

/// Stands for one connection's TLS state; never constructed in this build.
pub struct TlsConn {
    /// Makes the type uninhabited (only [`TlsAcceptor::accept`] makes one).
    never: Infallible,
}

impl TlsConn {
    /// Unreachable: no TLS connection exists.
    pub fn read_tls(&mut self, _socket: &mut dyn Read) -> io::Result<usize> {
        match self.never {}
    }

    /// Unreachable: no TLS connection exists.
    pub fn receive(&mut self, _socket: &mut dyn Read) -> io::Result<usize> {
        match self.never {}
    }

    /// Unreachable: no TLS connection exists.
    pub fn process(&mut self) -> Result<(), TlsError> {
        match self.never {}
    }

    /// Unreachable: no TLS connection exists.
    pub fn read_plaintext(&mut self, _buf: &mut [u8]) -> Plaintext {
        match self.never {}
    }

    /// Unreachable: no TLS connection exists.
    pub fn write_plaintext(&mut self, _data: &[u8]) -> usize {
        match self.never {}
    }

    /// Unreachable: no TLS connection exists.
    pub fn write_tls(&mut self, _socket: &mut dyn Write) -> io::Result<usize> {
        match self.never {}
    }

    /// Unreachable: no TLS connection exists.
    pub fn wants_write(&self) -> bool {
        match self.never {}
    }

    /// Unreachable: no TLS connection exists.
    pub fn is_handshaking(&self) -> bool {
        match self.never {}
    }

    /// Unreachable: no TLS connection exists.
    pub fn newly_established(&mut self) -> Option<String> {
        match self.never {}
    }

    /// Unreachable: no TLS connection exists.
    pub fn close_notify(&mut self) {
        match self.never {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loading_a_certificate_says_tls_is_not_built_in() {
        let files = TlsFiles {
            cert: "/c.pem".into(),
            key: "/k.pem".into(),
        };
        let err = TlsAcceptor::load(&files).err().unwrap().to_string();
        assert!(
            err.contains("built without TLS (cargo feature `tls`)"),
            "{err}"
        );
    }
}
