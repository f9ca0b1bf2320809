//! TLS for the load generator: the one file that knows rustls.
//!
//! rustls is sans-I/O, which suits the event loop: a [`TlsConn`] is fed TLS
//! bytes the loop has read from the socket, hands back decrypted plaintext,
//! takes command plaintext and yields TLS records for the loop to write.
//! Nothing here blocks or owns a socket.
//!
//! - [`Connector`] holds one `rustls::ClientConfig` shared by every thread
//!   and connection, and the server name to present. Sharing the config
//!   shares its session cache, so TLS session resumption works across
//!   connections unless `--no-resumption` turns it off.
//! - Trust comes from `--ca FILE` (a CA or the server's self-signed
//!   certificate, PEM) or, for benchmarks against throw-away certificates,
//!   from `--insecure`: any certificate is accepted, but the handshake
//!   signatures are still checked, so the TLS work the server does is the
//!   real work.
//! - Memory per connection stays bounded: at most [`OUTPUT_LIMIT`] of
//!   records waiting for the socket, at most 16 KiB of decrypted plaintext
//!   (rustls' own cap; the loop drains it after every record batch), and one
//!   record being deframed.
//!
//! Only the ring provider is compiled in; it is passed explicitly rather
//! than installed process-wide. `tls_disabled.rs` stands in for this file
//! when the crate is built without the `tls` feature.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::Resumption;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, HandshakeKind, RootCertStore,
    SignatureScheme,
};
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

/// This build speaks TLS (`tls_disabled.rs` says false).
pub const BUILT: bool = true;

/// TLS records (and, during the handshake, plaintext) one connection may
/// hold that the socket has not taken yet. POP3 commands are short; one
/// full record of room is plenty and keeps 10 000 connections small.
const OUTPUT_LIMIT: usize = 16 * 1024;

/// What the command line says about trust and names.
pub struct Settings {
    /// PEM file whose certificates are trusted as roots.
    pub ca_file: Option<PathBuf>,
    /// Accept any certificate (handshake signatures are still verified).
    pub insecure: bool,
    /// Name sent as SNI and checked against the certificate.
    pub server_name: String,
    /// Let connections resume earlier TLS sessions (rustls' default).
    pub resumption: bool,
}

/// Makes client TLS connections; shared read-only by all threads.
pub struct Connector {
    /// The shared configuration, whose session cache makes resumption work
    /// across connections.
    config: Arc<ClientConfig>,
    /// SNI and certificate name, parsed once.
    server_name: ServerName<'static>,
}

impl Connector {
    /// Builds the configuration; the error says what to fix.
    pub fn new(settings: &Settings) -> Result<Connector, String> {
        let server_name = ServerName::try_from(settings.server_name.clone()).map_err(|_| {
            format!(
                "--sni {}: not a valid DNS name or IP address",
                settings.server_name
            )
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("cannot set up TLS: {e}"))?;
        let mut config = if settings.insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate {
                    algorithms: provider.signature_verification_algorithms,
                }))
                .with_no_client_auth()
        } else {
            let path = settings.ca_file.as_ref().ok_or_else(|| {
                "TLS needs --ca FILE (the server's CA or self-signed certificate, PEM) or --insecure"
                    .to_string()
            })?;
            builder
                .with_root_certificates(load_roots(path)?)
                .with_no_client_auth()
        };
        if !settings.resumption {
            config.resumption = Resumption::disabled();
        }
        Ok(Connector {
            config: Arc::new(config),
            server_name,
        })
    }

    /// A fresh client connection; its ClientHello is ready to be written.
    pub fn connect(&self) -> Result<TlsConn, String> {
        let mut conn = ClientConnection::new(self.config.clone(), self.server_name.clone())
            .map_err(|e| e.to_string())?;
        conn.set_buffer_limit(Some(OUTPUT_LIMIT));
        Ok(TlsConn { conn })
    }
}

fn load_roots(path: &PathBuf) -> Result<RootCertStore, String> {
    let shown = path.display();
    let mut roots = RootCertStore::empty();
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("--ca {shown}: {e}"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("--ca {shown}: {e}"))?;
    if certificates.is_empty() {
        return Err(format!(
            "--ca {shown}: no certificate in it (expected PEM, -----BEGIN CERTIFICATE-----)"
        ));
    }
    for certificate in certificates {
        roots
            .add(certificate)
            .map_err(|e| format!("--ca {shown}: {e}"))?;
    }
    Ok(roots)
}

/// `--insecure`: trusts whatever certificate the server shows, but still
/// checks that the server holds its key (the handshake signatures), so a
/// benchmark pays for the same cryptography a real client does.
#[derive(Debug)]
struct AcceptAnyCertificate {
    /// The provider's signature algorithms, for the handshake signatures.
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Why a connection's TLS failed, sorted the way the report counts it.
pub struct TlsFailure {
    /// The server's certificate was not accepted (unknown issuer, wrong
    /// name, expired): a setup problem, not a server bug.
    pub certificate: bool,
    /// rustls' own words.
    pub message: String,
}

/// One connection's TLS state.
pub struct TlsConn {
    /// rustls' client state machine.
    conn: ClientConnection,
}

impl TlsConn {
    /// Takes TLS bytes from `wire` (at most what rustls can hold; call
    /// again with the rest) and processes every complete record.
    pub fn read_tls(&mut self, wire: &mut &[u8]) -> Result<(), TlsFailure> {
        self.conn.read_tls(wire).map_err(|e| TlsFailure {
            certificate: false,
            message: e.to_string(),
        })?;
        self.conn.process_new_packets().map_err(|e| TlsFailure {
            certificate: matches!(e, rustls::Error::InvalidCertificate(_)),
            message: e.to_string(),
        })?;
        Ok(())
    }

    /// Decrypted bytes: Ok(0) once the server sent close_notify,
    /// WouldBlock when there are none now.
    pub fn read_plaintext(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        self.conn.reader().read(buffer)
    }

    /// Queues plaintext to send; returns how much fit.
    pub fn write_plaintext(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.conn.writer().write(bytes)
    }

    /// Whether records are waiting for the socket.
    pub fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// Writes waiting records to `socket`.
    pub fn write_tls(&mut self, socket: &mut dyn Write) -> io::Result<usize> {
        self.conn.write_tls(socket)
    }

    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Whether the finished handshake resumed an earlier session.
    pub fn resumed(&self) -> bool {
        self.conn.handshake_kind() == Some(HandshakeKind::Resumed)
    }

    /// TLS version and cipher suite, for the report.
    pub fn describe(&self) -> Option<String> {
        let version = self.conn.protocol_version()?;
        let suite = self.conn.negotiated_cipher_suite()?;
        Some(format!("{version:?} {:?}", suite.suite()))
    }
}
