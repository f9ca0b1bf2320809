//! Systemd socket activation (`Accept=no`): listening sockets passed in.
//!
//! systemd binds the ports itself and starts pop3d with them as file
//! descriptors 3, 4, ... (`LISTEN_FDS` says how many, `LISTEN_PID` whom
//! they are for). pop3d then binds nothing of its own: each passed socket
//! is matched to a `listen` entry by its address to learn whether it is an
//! implicit-TLS port; a socket that matches no entry serves plain POP3
//! (with STLS when a certificate is configured), and an entry no socket
//! matches is not served (both are logged).
//!
//! Taking ownership of an inherited descriptor cannot be done without
//! `unsafe`; the `listenfd` crate does it after checking that each is a
//! TCP listening socket, and marks them close-on-exec.

use crate::config::Listener;
use std::net::{SocketAddr, TcpListener};

/// A passed socket and what it serves.
pub struct Inherited {
    pub socket: TcpListener,
    pub addr: SocketAddr,
    pub implicit_tls: bool,
}

/// The sockets passed by systemd, if any; `Ok(empty)` when pop3d was not
/// socket-activated. Must run before any thread starts (it edits the
/// environment so the variables do not leak to child processes).
pub fn take_inherited(listen: &[Listener]) -> Result<Vec<Inherited>, String> {
    let mut fds = listenfd::ListenFd::from_env();
    let mut inherited = Vec::with_capacity(fds.len());
    for i in 0..fds.len() {
        let socket = match fds.take_tcp_listener(i) {
            Ok(Some(socket)) => socket,
            Ok(None) => continue,
            Err(e) => {
                return Err(format!(
                    "socket activation: descriptor {} is not usable: {e} (pop3d takes TCP stream sockets only: ListenStream= in the .socket unit)",
                    3 + i
                ))
            }
        };
        let addr = socket
            .local_addr()
            .map_err(|e| format!("socket activation: descriptor {}: {e}", 3 + i))?;
        let implicit_tls = match listen.iter().find(|l| l.addr == addr) {
            Some(entry) => entry.implicit_tls,
            None => {
                log::warn!(
                    "socket activation: {addr} matches no `listen` entry; serving plain POP3 on it"
                );
                false
            }
        };
        inherited.push(Inherited {
            socket,
            addr,
            implicit_tls,
        });
    }
    if !inherited.is_empty() {
        for entry in listen {
            if !inherited.iter().any(|s| s.addr == entry.addr) {
                log::warn!(
                    "socket activation: no socket was passed for listen entry {}; not serving it (add ListenStream={} to the socket unit)",
                    entry.addr,
                    entry.addr
                );
            }
        }
    }
    Ok(inherited)
}
