//! TLS for the event loop: the one file that knows rustls.
//!
//! rustls is sans-I/O, which suits the loop: a [`TlsConn`] is fed TLS bytes
//! read from the socket, hands back decrypted plaintext, takes reply
//! plaintext and yields TLS records to write. Nothing here blocks or owns a
//! socket; the loop decides when to read and write. Keeping every rustls
//! type behind this file means a rustls upgrade (its API moves between
//! releases) touches nothing else.
//!
//! - [`TlsAcceptor`] holds the certificate and key loaded from the PEM files
//!   named in the config, as a shared `rustls::ServerConfig`. SIGHUP calls
//!   [`TlsAcceptor::reload`]: new connections use the new certificate,
//!   connections already open keep theirs, and a failed reload keeps the old
//!   one.
//! - [`TlsConn`] is one connection's TLS state, with its buffers bounded:
//!   rustls keeps at most [`OUTPUT_LIMIT`] of records waiting for the socket,
//!   at most 16 KiB of decrypted plaintext (rustls' own fixed cap, which makes
//!   it stop reading), and one record being deframed.
//!
//! Only the ring crypto provider is compiled in; it is passed explicitly
//! rather than installed process-wide.

use crate::config::TlsFiles;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::fmt;
use std::io::{self, Read, Write};
use std::sync::Arc;

/// This build serves TLS (see `tls_disabled.rs` for the one that does not).
pub const TLS_BUILT: bool = true;

/// TLS records one connection may hold that the socket has not taken yet
/// (and, before the handshake ends, plaintext waiting for it). Two full
/// records: enough to keep the socket busy, small enough for 10 000
/// connections.
pub const OUTPUT_LIMIT: usize = 32 * 1024;

/// Why TLS could not be set up or a connection's TLS failed.
#[derive(Debug)]
pub enum TlsError {
    /// The certificate file could not be read or holds no certificate.
    Certificate { path: String, reason: String },
    /// The key file could not be read or holds no private key.
    Key { path: String, reason: String },
    /// rustls refused the pair: usually a key that does not belong to the
    /// certificate, or a key type it does not support.
    Rejected {
        cert: String,
        key: String,
        reason: String,
    },
    /// The client broke the TLS protocol (garbage, a bad record, a failed
    /// handshake, an unsupported version); only its connection is affected.
    Protocol(String),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Certificate { path, reason } => write!(
                f,
                "cannot load the TLS certificate from {path}: {reason} (expected a PEM file with the certificate chain, leaf first)"
            ),
            TlsError::Key { path, reason } => write!(
                f,
                "cannot load the TLS private key from {path}: {reason} (expected a PEM file with one PKCS#8, PKCS#1 or SEC1 key)"
            ),
            TlsError::Rejected { cert, key, reason } => write!(
                f,
                "the TLS certificate {cert} and key {key} cannot be used together: {reason} (does the key belong to the certificate?)"
            ),
            TlsError::Protocol(reason) => write!(f, "TLS: {reason}"),
        }
    }
}

impl std::error::Error for TlsError {}

/// The server side of TLS: the loaded certificate, shared by every new
/// connection.
pub struct TlsAcceptor {
    /// Where the certificate and key come from, read again on reload.
    files: TlsFiles,
    /// What new connections are built from; replaced whole on reload, so a
    /// connection keeps the config it started with.
    config: Arc<rustls::ServerConfig>,
}

impl TlsAcceptor {
    /// Loads the certificate chain and key named in the config.
    pub fn load(files: &TlsFiles) -> Result<TlsAcceptor, TlsError> {
        Ok(TlsAcceptor {
            files: files.clone(),
            config: server_config(files)?,
        })
    }

    /// Reads the files again. On failure the certificate loaded before stays
    /// in use.
    pub fn reload(&mut self) -> Result<(), TlsError> {
        self.config = server_config(&self.files)?;
        Ok(())
    }

    /// The files the certificate and key are read from, for log lines.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// TLS state for a new connection; the client speaks first.
    pub fn accept(&self) -> Result<TlsConn, TlsError> {
        let mut conn = rustls::ServerConnection::new(Arc::clone(&self.config))
            .map_err(|e| TlsError::Protocol(e.to_string()))?;
        conn.set_buffer_limit(Some(OUTPUT_LIMIT));
        Ok(TlsConn {
            conn,
            reported_established: false,
        })
    }
}

fn server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let certificate_error = |reason: String| TlsError::Certificate {
        path: files.cert.clone(),
        reason,
    };
    let chain = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| certificate_error(pem_reason(e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| certificate_error(pem_reason(e)))?;
    if chain.is_empty() {
        return Err(certificate_error(
            "no CERTIFICATE section in the file".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| TlsError::Key {
        path: files.key.clone(),
        reason: pem_reason(e),
    })?;
    let rejected = |e: rustls::Error| TlsError::Rejected {
        cert: files.cert.clone(),
        key: files.key.clone(),
        reason: e.to_string(),
    };
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(rejected)?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .map_err(rejected)?;
    Ok(Arc::new(config))
}

/// Words a PEM loading failure for an operator.
fn pem_reason(e: rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::Io(io) => io.to_string(),
        rustls::pki_types::pem::Error::NoItemsFound => "no matching PEM section in the file".into(),
        other => format!("not valid PEM: {other}"),
    }
}

/// What [`TlsConn::read_plaintext`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Plaintext {
    /// This many bytes were copied out.
    Data(usize),
    /// Nothing decrypted is waiting; read more from the socket.
    Empty,
    /// The client has closed its side (cleanly or not) and everything it
    /// sent has been read.
    Closed,
}

/// One connection's TLS state.
pub struct TlsConn {
    /// rustls' state machine and buffers.
    conn: rustls::ServerConnection,
    /// Whether [`TlsConn::newly_established`] has already said yes, so the
    /// loop logs the negotiated parameters once.
    reported_established: bool,
}

impl TlsConn {
    /// Reads TLS bytes from the socket and processes them. `Ok(0)` means the
    /// client closed the TCP connection (or sent close_notify). A protocol
    /// violation is an `InvalidData` error wrapping [`TlsError::Protocol`];
    /// the alert rustls queued for the client can still be flushed with
    /// [`TlsConn::write_tls`] before closing.
    ///
    /// Call it only after [`TlsConn::read_plaintext`] returned
    /// [`Plaintext::Empty`]: rustls refuses to read while decrypted bytes
    /// are waiting, which is what bounds its input buffer.
    pub fn read_tls(&mut self, socket: &mut dyn Read) -> io::Result<usize> {
        let n = self.receive(socket)?;
        if n > 0 {
            self.process()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        }
        Ok(n)
    }

    /// Only reads TLS bytes from the socket (at most one record's worth),
    /// leaving them for [`TlsConn::process`]: the cheap half of
    /// [`TlsConn::read_tls`], for when processing happens elsewhere. A
    /// record too large to buffer is an `InvalidData` error.
    pub fn receive(&mut self, socket: &mut dyn Read) -> io::Result<usize> {
        self.conn.read_tls(socket)
    }

    /// Processes the records [`TlsConn::receive`] read: decrypts, and during
    /// the handshake does the key exchange and signing (the expensive
    /// part), queueing the records to send back.
    pub fn process(&mut self) -> Result<(), TlsError> {
        self.conn
            .process_new_packets()
            .map(drop)
            .map_err(|e| TlsError::Protocol(e.to_string()))
    }

    /// Copies decrypted bytes into `buf`.
    pub fn read_plaintext(&mut self, buf: &mut [u8]) -> Plaintext {
        match self.conn.reader().read(buf) {
            Ok(0) => Plaintext::Closed,
            Ok(n) => Plaintext::Data(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Plaintext::Empty,
            // UnexpectedEof: TCP closed without close_notify, which is how
            // most POP3 clients hang up after QUIT.
            Err(_) => Plaintext::Closed,
        }
    }

    /// Takes as much of `data` as the bounded output buffer allows; 0 while
    /// the handshake is still going (the caller keeps its bytes until then,
    /// so rustls never holds unencrypted replies).
    pub fn write_plaintext(&mut self, data: &[u8]) -> usize {
        if self.conn.is_handshaking() {
            return 0;
        }
        self.conn.writer().write(data).unwrap_or(0)
    }

    /// Writes pending TLS records to the socket.
    pub fn write_tls(&mut self, socket: &mut dyn Write) -> io::Result<usize> {
        self.conn.write_tls(socket)
    }

    /// Whether TLS records are waiting for the socket.
    pub fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// Whether the handshake has not finished yet.
    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// The negotiated version and cipher suite, the first time this is
    /// called after the handshake finished; `None` otherwise.
    pub fn newly_established(&mut self) -> Option<String> {
        if self.reported_established || self.conn.is_handshaking() {
            return None;
        }
        self.reported_established = true;
        let version = self
            .conn
            .protocol_version()
            .map_or_else(|| "?".to_owned(), |v| format!("{v:?}"));
        let suite = self
            .conn
            .negotiated_cipher_suite()
            .map_or_else(|| "?".to_owned(), |s| format!("{:?}", s.suite()));
        Some(format!("{version} {suite}"))
    }

    /// Queues a close_notify alert (a polite end; clients do not need it).
    pub fn close_notify(&mut self) {
        if !self.conn.is_handshaking() {
            self.conn.send_close_notify();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    /// A fresh directory under the system temp dir, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(label: &str) -> Scratch {
            let dir = std::env::temp_dir().join(format!(
                "pop3d-tls-unit-{label}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }

        fn path(&self, name: &str) -> String {
            self.0.join(name).display().to_string()
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Writes a self-signed certificate and its key; returns the files.
    fn write_pair(dir: &Scratch, stem: &str) -> TlsFiles {
        let pair = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let files = TlsFiles {
            cert: dir.path(&format!("{stem}.crt")),
            key: dir.path(&format!("{stem}.key")),
        };
        std::fs::write(&files.cert, pair.cert.pem()).unwrap();
        std::fs::write(&files.key, pair.signing_key.serialize_pem()).unwrap();
        files
    }

    /// Runs a handshake between a fresh server connection and a client that
    /// trusts `trusted`, returning the certificate the server presented.
    fn presented_certificate(acceptor: &TlsAcceptor, trusted: &Path) -> Vec<u8> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(trusted).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let client_config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut client =
            rustls::ClientConnection::new(Arc::new(client_config), "localhost".try_into().unwrap())
                .unwrap();
        let mut server = acceptor.accept().unwrap();
        for _ in 0..10 {
            let mut wire = Vec::new();
            client.write_tls(&mut wire).unwrap();
            let mut input = &wire[..];
            while !input.is_empty() {
                server.read_tls(&mut input).unwrap();
            }
            let mut wire = Vec::new();
            while server.wants_write() {
                server.write_tls(&mut wire).unwrap();
            }
            let mut input = &wire[..];
            while !input.is_empty() {
                client.read_tls(&mut input).unwrap();
                client.process_new_packets().unwrap();
            }
            if !client.is_handshaking() && !server.is_handshaking() {
                break;
            }
        }
        assert!(server.newly_established().is_some());
        assert_eq!(server.newly_established(), None, "reported once");
        client.peer_certificates().unwrap()[0].to_vec()
    }

    #[test]
    fn a_generated_pair_loads_and_completes_a_handshake() {
        let dir = Scratch::new("load");
        let files = write_pair(&dir, "a");
        let acceptor = TlsAcceptor::load(&files).unwrap();
        let presented = presented_certificate(&acceptor, Path::new(&files.cert));
        let on_disk: Vec<u8> = CertificateDer::from_pem_file(&files.cert).unwrap().to_vec();
        assert_eq!(presented, on_disk);
    }

    #[test]
    fn a_key_from_another_pair_is_rejected_naming_both_files() {
        let dir = Scratch::new("mismatch");
        let a = write_pair(&dir, "a");
        let b = write_pair(&dir, "b");
        let mixed = TlsFiles {
            cert: a.cert.clone(),
            key: b.key.clone(),
        };
        let err = TlsAcceptor::load(&mixed).err().unwrap().to_string();
        assert!(err.contains(&a.cert) && err.contains(&b.key), "{err}");
    }

    #[test]
    fn missing_or_empty_files_are_named() {
        let dir = Scratch::new("missing");
        let files = write_pair(&dir, "a");
        let missing_cert = TlsFiles {
            cert: dir.path("nope.crt"),
            key: files.key.clone(),
        };
        let err = TlsAcceptor::load(&missing_cert).err().unwrap().to_string();
        assert!(err.contains("nope.crt"), "{err}");
        std::fs::write(dir.path("empty.key"), "").unwrap();
        let empty_key = TlsFiles {
            cert: files.cert.clone(),
            key: dir.path("empty.key"),
        };
        let err = TlsAcceptor::load(&empty_key).err().unwrap().to_string();
        assert!(
            err.contains("empty.key") && err.contains("private key"),
            "{err}"
        );
    }

    #[test]
    fn reload_switches_certificates_and_a_failed_reload_keeps_the_old_one() {
        let dir = Scratch::new("reload");
        let files = write_pair(&dir, "live");
        let mut acceptor = TlsAcceptor::load(&files).unwrap();
        let first = presented_certificate(&acceptor, Path::new(&files.cert));

        // Replace both files with a new pair, as an operator renewing would.
        let renewed = write_pair(&dir, "renewed");
        std::fs::rename(&renewed.cert, &files.cert).unwrap();
        std::fs::rename(&renewed.key, &files.key).unwrap();
        acceptor.reload().unwrap();
        let second = presented_certificate(&acceptor, Path::new(&files.cert));
        assert_ne!(first, second);

        std::fs::write(&files.key, "not a key").unwrap();
        assert!(acceptor.reload().is_err());
        let still = presented_certificate(&acceptor, Path::new(&files.cert));
        assert_eq!(still, second);
    }

    #[test]
    fn garbage_is_a_protocol_error_with_an_alert_to_send() {
        let dir = Scratch::new("garbage");
        let acceptor = TlsAcceptor::load(&write_pair(&dir, "a")).unwrap();
        let mut server = acceptor.accept().unwrap();
        let mut input: &[u8] = b"USER alice\r\nPASS secret\r\n";
        let err = server.read_tls(&mut input).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(server.wants_write(), "an alert should be queued");
    }
}
