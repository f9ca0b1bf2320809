//! PLAIN (RFC 4616) and LOGIN (draft-murchison-sasl-login-00): the
//! mechanisms that carry the password itself. Both end in
//! [`Step::CheckPassword`], so the authenticator sees exactly what USER/PASS
//! would give it.
//!
//! Passwords are passed through as sent, even when they are not UTF-8:
//! some user databases hold Latin-1 passwords, and PASS accepts them too.
//! NUL is refused everywhere, since a backend written in C would stop there.

use super::{check_authzid, identity, Exchange, Failure, Password, Phase, Step};

/// LOGIN's first challenge. The draft suggests "User Name", but notes that a
/// widely deployed client insists on these two strings, which every server
/// in practice sends.
const LOGIN_USER_PROMPT: &[u8] = b"Username:";

/// LOGIN's second challenge (see [`LOGIN_USER_PROMPT`]).
const LOGIN_PASSWORD_PROMPT: &[u8] = b"Password:";

/// The PLAIN message `[authzid] NUL authcid NUL passwd`.
pub(super) fn plain(message: &[u8]) -> Step {
    match parse_plain(message) {
        Ok((authcid, password)) => Step::CheckPassword { authcid, password },
        Err(failure) => Step::Failure(failure),
    }
}

fn parse_plain(message: &[u8]) -> Result<(String, Password), Failure> {
    let mut fields = message.split(|&byte| byte == 0);
    let (Some(authzid), Some(authcid), Some(password), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(Failure::Malformed(
            "PLAIN message must have exactly two NUL separators",
        ));
    };
    let authcid = identity(authcid, "empty authentication identity")?;
    if !authzid.is_empty() {
        // Checked for form before comparing, so that a malformed authzid
        // is reported as such.
        identity(authzid, "empty authorization identity")?;
    }
    check_authzid(authzid, &authcid)?;
    if password.is_empty() {
        return Err(Failure::Malformed("empty password"));
    }
    Ok((authcid, Password::new(password)))
}

/// `AUTH LOGIN` without an initial response: ask for the user name.
pub(super) fn login_start() -> Step {
    Step::Challenge {
        challenge: LOGIN_USER_PROMPT.to_vec(),
        next: Exchange {
            phase: Phase::LoginUser,
        },
    }
}

/// LOGIN's user name arrived (as a response or as the initial response):
/// ask for the password.
pub(super) fn login_user(name: &[u8]) -> Step {
    match identity(name, "empty user name") {
        Ok(authcid) => Step::Challenge {
            challenge: LOGIN_PASSWORD_PROMPT.to_vec(),
            next: Exchange {
                phase: Phase::LoginPassword { authcid },
            },
        },
        Err(failure) => Step::Failure(failure),
    }
}

/// LOGIN's password arrived.
pub(super) fn login_password(authcid: String, password: &[u8]) -> Step {
    if password.contains(&0) {
        return Step::Failure(Failure::Malformed("NUL in password"));
    }
    if password.is_empty() {
        return Step::Failure(Failure::Malformed("empty password"));
    }
    Step::CheckPassword {
        authcid,
        password: Password::new(password),
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{b64, challenge, config};
    use super::super::Mechanism;
    use super::*;

    fn start_plain(message: &[u8]) -> Step {
        Exchange::start(Mechanism::Plain, Some(&b64(message)), &config())
    }

    fn check_password(step: Step) -> (String, Vec<u8>) {
        match step {
            Step::CheckPassword { authcid, password } => (authcid, password.expose().to_vec()),
            other => panic!("expected CheckPassword, got {other:?}"),
        }
    }

    fn failure(step: Step) -> Failure {
        match step {
            Step::Failure(failure) => failure,
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[test]
    fn plain_without_authzid() {
        assert_eq!(
            check_password(start_plain(b"\0tim\0tanstaaftanstaaf")),
            ("tim".to_owned(), b"tanstaaftanstaaf".to_vec())
        );
    }

    #[test]
    fn plain_with_authzid_equal_to_authcid() {
        // RFC 5034 section 6's example: "test\0test\0test".
        let step = Exchange::start(Mechanism::Plain, Some("dGVzdAB0ZXN0AHRlc3Q="), &config());
        assert_eq!(check_password(step), ("test".to_owned(), b"test".to_vec()));
    }

    #[test]
    fn plain_refuses_impersonation_before_looking_at_the_password() {
        assert_eq!(
            failure(start_plain(b"admin\0tim\0tanstaaf")),
            Failure::Impersonation
        );
        // Case matters: "Tim" is not "tim" to this module; a backend that
        // folds case canonicalises after the check.
        assert_eq!(
            failure(start_plain(b"Tim\0tim\0tanstaaf")),
            Failure::Impersonation
        );
    }

    #[test]
    fn plain_needs_exactly_two_nuls() {
        for message in [
            &b"tim\0tanstaaf"[..],
            b"timtanstaaf",
            b"\0tim\0tan\0staaf",
            b"\0\0tim\0tanstaaf",
        ] {
            assert!(
                matches!(failure(start_plain(message)), Failure::Malformed(_)),
                "{message:?}"
            );
        }
    }

    #[test]
    fn plain_fields_must_not_be_empty_or_invalid() {
        for message in [
            &b"\0\0tanstaaf"[..],
            b"\0tim\0",
            b"\0ti\xffm\0tanstaaf",
            b"\xff\0tim\0tanstaaf",
            b"\0tim\r\nx\0tanstaaf",
        ] {
            assert!(
                matches!(failure(start_plain(message)), Failure::Malformed(_)),
                "{message:?}"
            );
        }
        // A Latin-1 password goes to the backend as sent.
        assert_eq!(
            check_password(start_plain(b"\0tim\0p\xe4ss")).1,
            b"p\xe4ss".to_vec()
        );
    }

    #[test]
    fn plain_accepts_255_octet_fields() {
        let name = "n".repeat(255);
        let password = vec![b'p'; 255];
        let mut message = format!("{name}\0{name}\0").into_bytes();
        message.extend_from_slice(&password);
        assert_eq!(check_password(start_plain(&message)), (name, password));
    }

    #[test]
    fn plain_empty_initial_response_is_a_malformed_message() {
        let step = Exchange::start(Mechanism::Plain, Some("="), &config());
        assert!(matches!(failure(step), Failure::Malformed(_)));
    }

    #[test]
    fn plain_without_initial_response_sends_an_empty_challenge() {
        let (prompt, exchange) = challenge(Exchange::start(Mechanism::Plain, None, &config()));
        assert!(prompt.is_empty());
        let step = exchange.respond(b64(b"\0tim\0tanstaaf").as_bytes());
        assert_eq!(
            check_password(step),
            ("tim".to_owned(), b"tanstaaf".to_vec())
        );
    }

    #[test]
    fn login_asks_for_name_then_password() {
        // The draft's example: "tim" / "tanstaaftanstaaf".
        let (prompt, exchange) = challenge(Exchange::start(Mechanism::Login, None, &config()));
        assert_eq!(prompt, b"Username:");
        let (prompt, exchange) = challenge(exchange.respond(b"dGlt"));
        assert_eq!(prompt, b"Password:");
        assert_eq!(
            check_password(exchange.respond(b"dGFuc3RhYWZ0YW5zdGFhZg==")),
            ("tim".to_owned(), b"tanstaaftanstaaf".to_vec())
        );
    }

    #[test]
    fn login_takes_the_user_name_as_initial_response() {
        let (prompt, exchange) =
            challenge(Exchange::start(Mechanism::Login, Some("dGlt"), &config()));
        assert_eq!(prompt, b"Password:");
        assert_eq!(check_password(exchange.respond(b"dGFuc3RhYWY=")).0, "tim");
    }

    #[test]
    fn login_refuses_empty_names_and_nul_in_passwords() {
        let (_, exchange) = challenge(Exchange::start(Mechanism::Login, None, &config()));
        assert!(matches!(
            failure(exchange.respond(b"")),
            Failure::Malformed(_)
        ));
        let (_, exchange) = challenge(Exchange::start(Mechanism::Login, Some("dGlt"), &config()));
        assert!(matches!(
            failure(exchange.respond(b64(b"tan\0staaf").as_bytes())),
            Failure::Malformed(_)
        ));
        let (_, exchange) = challenge(Exchange::start(Mechanism::Login, Some("dGlt"), &config()));
        assert!(matches!(
            failure(exchange.respond(b"")),
            Failure::Malformed(_)
        ));
    }
}
