//! Logging in by APOP and by AUTH: the glue between the session and the
//! SASL mechanisms in [`crate::protocol::sasl`].
//!
//! An AUTH exchange spans several lines. While it waits for the client, the
//! AUTHORIZATION state holds a [`SaslInProgress`] and
//! [`Session::handle_line`] hands the next line to it instead of the
//! command parser. Which mechanisms are offered follows two rules: those
//! that carry the password (PLAIN, LOGIN) only where plaintext passwords
//! are allowed, like USER; those that need the user's secret (CRAM-MD5,
//! SCRAM, and APOP) only when the auth backend can reveal secrets.
//!
//! Failures are answered like a failed PASS: credential failures (wrong
//! proof, unknown user) get `-ERR [AUTH]` after the failed-login delay;
//! protocol errors (bad base64, a malformed message) get `-ERR` at once,
//! since they reveal nothing about any password.

use super::{err, err_backend, ok, Authorization, Directive, Session, Sid, State};
use crate::backend::{BackendError, UserInfo};
use crate::protocol::sasl::{self, Exchange, Mechanism, Step};
use std::time::Duration;

/// An AUTH exchange waiting for the client's next line.
pub(super) struct SaslInProgress {
    /// The mechanism's own state.
    exchange: Exchange,
    /// What the session learnt so far.
    context: SaslContext,
}

/// What the session knows about an exchange beyond the mechanism's state.
struct SaslContext {
    /// The mechanism: the login method in the log.
    mechanism: Mechanism,
    /// The user name the client gave, once known, for the log.
    user: Option<String>,
    /// The user's attributes from the secret lookup: opening the maildrop
    /// after success needs them.
    info: Option<UserInfo>,
}

impl Session {
    /// Whether `mechanism` is offered on this connection.
    fn offers(&self, mechanism: Mechanism) -> bool {
        if mechanism.is_plaintext() {
            self.peer.plaintext_auth_allowed
        } else {
            self.env.auth.supports_secrets()
        }
    }

    /// Mechanisms offered here, most preferred first.
    fn offered_mechanisms(&self) -> impl Iterator<Item = Mechanism> + '_ {
        Mechanism::ALL
            .into_iter()
            .filter(|&mechanism| self.offers(mechanism))
    }

    /// Why USER or a plaintext mechanism is refused here, with what to do.
    pub(super) fn plaintext_refusal(&self) -> &'static str {
        if self.peer.stls_available {
            "[AUTH] Plaintext authentication is not allowed on this connection; use STLS first"
        } else {
            "[AUTH] Plaintext authentication is not allowed on this connection; connect to the POP3S (TLS) port instead"
        }
    }

    /// The CAPA `SASL` line (RFC 5034 section 3), if any mechanism is
    /// offered.
    pub(super) fn sasl_capability(&self, out: &mut Vec<u8>) {
        let mut offered = self.offered_mechanisms().peekable();
        if offered.peek().is_none() {
            return;
        }
        out.extend_from_slice(b"SASL");
        for mechanism in offered {
            out.push(b' ');
            out.extend_from_slice(mechanism.name().as_bytes());
        }
        out.extend_from_slice(b"\r\n");
    }

    /// `AUTH` without a mechanism. RFC 5034 does not define it, but clients
    /// from RFC 1734's days probe with it and servers answer with the list.
    pub(super) fn list_mechanisms(&self, out: &mut Vec<u8>) {
        ok(out, "Supported mechanisms follow");
        for mechanism in self.offered_mechanisms() {
            out.extend_from_slice(mechanism.name().as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
    }

    /// `AUTH mechanism [initial-response]`.
    pub(super) fn start_auth(
        &mut self,
        name: &str,
        initial_response: Option<&str>,
        out: &mut Vec<u8>,
    ) -> Directive {
        let Some(mechanism) = Mechanism::from_name(name) else {
            err(out, "Unsupported authentication mechanism");
            return Directive::Continue;
        };
        if mechanism.is_plaintext() && !self.peer.plaintext_auth_allowed {
            err(out, self.plaintext_refusal());
            return Directive::Continue;
        }
        if !self.offers(mechanism) {
            err(out, "Unsupported authentication mechanism");
            return Directive::Continue;
        }
        let step = Exchange::start(mechanism, initial_response, &self.env.sasl);
        let context = SaslContext {
            mechanism,
            user: None,
            info: None,
        };
        self.sasl_step(step, context, out)
    }

    /// The client's next line in an AUTH exchange.
    pub(super) fn sasl_response(
        &mut self,
        in_progress: SaslInProgress,
        line: &[u8],
        out: &mut Vec<u8>,
    ) -> Directive {
        let step = in_progress.exchange.respond(line);
        self.sasl_step(step, in_progress.context, out)
    }

    /// A response line longer than the server accepts: the exchange ends
    /// (RFC 5034: the server must answer `-ERR`).
    pub(super) fn sasl_response_too_long(
        &mut self,
        in_progress: SaslInProgress,
        out: &mut Vec<u8>,
    ) -> Directive {
        self.sasl_step(
            Step::Failure(sasl::Failure::TooLong),
            in_progress.context,
            out,
        )
    }

    /// Does what a step of the exchange asks.
    fn sasl_step(&mut self, step: Step, mut context: SaslContext, out: &mut Vec<u8>) -> Directive {
        let sid = Sid(self.id);
        let method = context.mechanism.name();
        match step {
            Step::Challenge { challenge, next } => {
                sasl::challenge_line(&challenge, out);
                if let State::Authorization(auth) = &mut self.state {
                    auth.sasl = Some(SaslInProgress {
                        exchange: next,
                        context,
                    });
                }
                Directive::Continue
            }
            Step::CheckPassword { authcid, password } => {
                self.login(&authcid, password.expose(), method, out)
            }
            Step::NeedsSecret { authcid, next } => {
                if let Err(refusal) = self.guard_admit(&authcid, method) {
                    err(out, refusal.blocked.reply());
                    return Directive::Delay(refusal.delay);
                }
                let secret = match self.env.auth.secret(&authcid) {
                    // The plugin ABI hands over Dovecot-style `{SCHEME}data`
                    // strings. A secret that cannot serve this mechanism
                    // (SCRAM keys for CRAM-MD5, say) fails exactly like an
                    // unknown user: the mechanism runs on with no secret.
                    Some(Ok((secret, info))) => match sasl::Secret::parse(secret.expose()) {
                        Ok(parsed) if parsed.serves(context.mechanism) => {
                            context.info = Some(info);
                            Some(parsed)
                        }
                        Ok(_) => None,
                        Err(e) => {
                            log::warn!(
                                "session={sid} unusable secret for user={authcid:?} from the auth backend: {e}"
                            );
                            None
                        }
                    },
                    Some(Err(BackendError::Denied | BackendError::NotFound(_))) => None,
                    Some(Err(e)) => {
                        log::warn!(
                            "session={sid} auth backend failed to give the secret of user={authcid:?}: {e}"
                        );
                        err_backend(
                            out,
                            &e,
                            "Authentication is temporarily unavailable, try again later",
                        );
                        return Directive::Continue;
                    }
                    None => {
                        // Only offered when the backend said it can.
                        log::error!(
                            "session={sid} auth backend offers secrets but gave none for {method}"
                        );
                        err(out, "[SYS/PERM] Authentication mechanism unavailable");
                        return Directive::Continue;
                    }
                };
                context.user = Some(authcid);
                let step = next.provide(secret.as_ref(), &self.env.sasl);
                self.sasl_step(step, context, out)
            }
            Step::Success { authcid } => {
                match context.info {
                    Some(info) => {
                        self.guard_succeeded(&authcid, Duration::ZERO);
                        self.enter_transaction(info, method, out)
                    }
                    None => {
                        // A mechanism succeeds only after a secret lookup,
                        // which set `info`; refuse rather than guess.
                        log::error!("session={sid} {method} succeeded for {authcid:?} without user attributes");
                        err(out, "[SYS/PERM] Authentication failed on the server side");
                        Directive::Continue
                    }
                }
            }
            Step::Failure(failure) => {
                log::info!(
                    "session={sid} login failed user={:?} remote={} method={method} reason={:?}",
                    context.user.as_deref().unwrap_or(""),
                    self.peer.addr.ip(),
                    failure.to_string(),
                );
                err(out, failure.reply_text());
                if failure.is_credential_failure() {
                    let user = context.user.as_deref().unwrap_or("");
                    Directive::Delay(self.guard_failed(user, Duration::ZERO))
                } else {
                    Directive::Continue
                }
            }
            Step::Cancelled => {
                err(out, "Authentication cancelled");
                Directive::Continue
            }
        }
    }

    /// `APOP name digest` (RFC 1939 section 7).
    pub(super) fn apop(&mut self, user: &str, digest: &str, out: &mut Vec<u8>) -> Directive {
        let sid = Sid(self.id);
        let timestamp = match &self.state {
            State::Authorization(Authorization {
                apop_timestamp: Some(timestamp),
                ..
            }) => timestamp.clone(),
            _ => {
                err(out, "APOP is not enabled on this server");
                return Directive::Continue;
            }
        };
        if let Err(refusal) = self.guard_admit(user, "APOP") {
            err(out, refusal.blocked.reply());
            return Directive::Delay(refusal.delay);
        }
        // APOP needs the plaintext itself: a `{PLAIN}` secret.
        let verified = |secret: &[u8]| {
            sasl::Secret::parse(secret)
                .ok()
                .and_then(|s| {
                    s.plaintext()
                        .map(|p| sasl::apop_verify(&timestamp, p, digest))
                })
                .unwrap_or(false)
        };
        match self.env.auth.secret(user) {
            Some(Ok((secret, info))) if verified(secret.expose()) => {
                self.guard_succeeded(user, Duration::ZERO);
                self.enter_transaction(info, "APOP", out)
            }
            Some(Ok(_)) | Some(Err(BackendError::Denied | BackendError::NotFound(_))) => {
                log::info!(
                    "session={sid} login failed user={user:?} remote={} method=APOP",
                    self.peer.addr.ip()
                );
                err(out, "[AUTH] Authentication failed");
                Directive::Delay(self.guard_failed(user, Duration::ZERO))
            }
            Some(Err(e)) => {
                log::warn!("session={sid} auth backend failed for user={user:?}: {e}");
                err_backend(
                    out,
                    &e,
                    "Authentication is temporarily unavailable, try again later",
                );
                Directive::Continue
            }
            None => {
                err(out, "APOP is not enabled on this server");
                Directive::Continue
            }
        }
    }
}
