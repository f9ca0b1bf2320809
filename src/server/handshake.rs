//! Threads that run the expensive part of TLS handshakes off the event loop.
//!
//! A handshake's first flight costs real CPU (key exchange and a signature:
//! about 0.1 ms with an ECDSA certificate, over 1 ms with RSA-2048). Done on
//! the loop, a burst of new TLS clients would hold up every other client's
//! replies for the sum of those costs. So while a connection is handshaking,
//! the loop only moves bytes: it reads TLS records into the connection's
//! [`TlsConn`], sends the `TlsConn` here to be processed, and gets it back
//! with the reply records ready to write. Once the handshake is over,
//! record encryption stays on the loop (it is cheap).
//!
//! These threads are separate from the session workers so logged-in clients
//! never queue behind a storm of handshakes, and few (half the cores), so a
//! storm cannot take every core either.

use super::tls::{TlsConn, TlsError};
use super::worker::{ConnId, Notifier};
use crossbeam_channel::{Receiver, Sender};
use std::sync::Arc;

/// A handshake step to run.
pub struct HandshakeJob {
    /// Which connection the TLS state belongs to.
    pub conn: ConnId,
    /// The connection's TLS state, with unprocessed records in it.
    pub tls: Box<TlsConn>,
}

/// A processed handshake step, back to the loop.
pub struct HandshakeDone {
    /// Which connection the TLS state belongs to (it may have closed since).
    pub conn: ConnId,
    /// The TLS state, with the records to send back queued in it.
    pub tls: Box<TlsConn>,
    /// Whether the client's records were acceptable; on failure the alert
    /// explaining why is queued in `tls`.
    pub result: Result<(), TlsError>,
}

/// Processes handshake records until the job channel closes.
pub fn run(jobs: Receiver<HandshakeJob>, done: Sender<HandshakeDone>, notifier: Arc<Notifier>) {
    for HandshakeJob { conn, mut tls } in jobs {
        let result = tls.process();
        if done.send(HandshakeDone { conn, tls, result }).is_err() {
            // The loop has gone away (shutdown).
            return;
        }
        notifier.notify();
    }
}
