//! Password schemes against Dovecot, and the `pop3d pw` command.
//!
//! - Every hash `doveadm pw` made in `tests/fixtures/doveadm-pw/hashes.txt`
//!   (Dovecot 2.3; `make.sh` there regenerates them) is accepted with its
//!   password and refused with another, through the passwd-file crate's
//!   public API.
//! - `pop3d pw` makes hashes that `pop3d pw --test` accepts, for every
//!   scheme, reading the password from stdin as a script would.
//! - A passwd-file mixing schemes, behind the real server: right passwords
//!   log in, wrong ones and unknown users get the same reply.

mod common;

use common::{Fixture, TestServer};
use pop3d_passwd_file::scheme::{hash_password, Scheme, StoredPassword};
use std::io::Write;
use std::process::{Command, Output, Stdio};

/// One line of the doveadm fixture.
struct DoveadmHash {
    /// What was passed to `doveadm pw -s` (and `-r`).
    label: String,
    /// The password hashed.
    password: String,
    /// doveadm's output.
    hash: String,
}

fn doveadm_hashes() -> Vec<DoveadmHash> {
    let text = include_str!("fixtures/doveadm-pw/hashes.txt");
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            assert_eq!(fields.len(), 3, "bad fixture line: {line}");
            DoveadmHash {
                label: fields[0].to_owned(),
                password: fields[1].to_owned(),
                hash: fields[2].to_owned(),
            }
        })
        .collect()
}

#[test]
fn every_doveadm_hash_verifies_with_its_password_only() {
    let hashes = doveadm_hashes();
    assert!(hashes.len() > 40, "the fixture lost lines");
    for DoveadmHash {
        label,
        password,
        hash,
    } in &hashes
    {
        let stored = StoredPassword::parse(hash)
            .unwrap_or_else(|err| panic!("{label}: doveadm's hash does not parse: {err}"));
        let scheme_name = label.split(' ').next().unwrap();
        assert_eq!(
            Some(stored.scheme()),
            Scheme::from_name(scheme_name),
            "{label}"
        );
        assert!(
            stored.verify(password.as_bytes()),
            "{label}: {password:?} refused"
        );
        let mut wrong = password.clone().into_bytes();
        wrong[0] ^= 1;
        assert!(!stored.verify(&wrong), "{label}: a wrong password accepted");
        assert!(!stored.verify(b""), "{label}: the empty password accepted");
    }
}

/// Runs `pop3d pw ARGS` with `stdin` piped in.
fn pop3d_pw(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pop3d"))
        .arg("pw")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run the pop3d binary");
    // The command may exit before reading (a usage error): ignore EPIPE.
    let _ = child.stdin.take().unwrap().write_all(stdin);
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn pop3d_pw_makes_hashes_that_pop3d_pw_test_accepts_for_every_scheme() {
    let password = "pässwörd: with spaces";
    for scheme in Scheme::ALL {
        // Full-cost Argon2 is checked against Dovecot's hashes above; one
        // pass keeps this quick.
        let cost: &[&str] = match scheme {
            Scheme::Argon2id | Scheme::Argon2i => &["-r", "1"],
            _ => &[],
        };
        let made = pop3d_pw(
            &[&["-s", scheme.name()], cost].concat(),
            format!("{password}\n").as_bytes(),
        );
        assert!(made.status.success(), "{scheme}: {}", text(&made.stderr));
        let hash = text(&made.stdout);
        let hash = hash.strip_suffix('\n').expect("one line");
        assert!(hash.starts_with(&format!("{{{scheme}}}")), "{hash}");
        assert!(!hash.contains('\n'), "{hash}");
        if !matches!(scheme, Scheme::Plain) {
            assert!(
                !hash.contains("wörd"),
                "{scheme}: the password shows in {hash}"
            );
        }
        // What the server will check: the library reads it back.
        assert!(StoredPassword::parse(hash)
            .unwrap()
            .verify(password.as_bytes()));

        let verified = pop3d_pw(&["--test", hash], format!("{password}\r\n").as_bytes());
        assert!(
            verified.status.success(),
            "{scheme}: {}",
            text(&verified.stderr)
        );
        assert_eq!(text(&verified.stdout), format!("{hash} (verified)\n"));

        let refused = pop3d_pw(&["--test", hash], b"p\xc3\xa4ssw\xc3\xb6rd: with space\n");
        assert_eq!(refused.status.code(), Some(1), "{scheme}");
        assert_eq!(text(&refused.stdout), "");
        assert_eq!(
            text(&refused.stderr),
            "pop3d pw: the password does not match the hash\n"
        );
    }
}

#[test]
fn pop3d_pw_defaults_to_sha512_crypt_and_checks_doveadm_hashes() {
    let made = pop3d_pw(&[], b"secret\n");
    assert!(made.status.success(), "{}", text(&made.stderr));
    assert!(text(&made.stdout).starts_with("{SHA512-CRYPT}$6$"));

    for DoveadmHash {
        label,
        password,
        hash,
    } in doveadm_hashes()
        .into_iter()
        .filter(|h| h.label.starts_with("BLF-CRYPT") || h.label.starts_with("SCRAM-SHA-1"))
    {
        let verified = pop3d_pw(&["-t", &hash], format!("{password}\n").as_bytes());
        assert!(
            verified.status.success(),
            "{label}: {}",
            text(&verified.stderr)
        );
    }
}

#[test]
fn pop3d_pw_refuses_what_it_cannot_do() {
    let no_password = pop3d_pw(&[], b"");
    assert_eq!(no_password.status.code(), Some(1));
    assert_eq!(
        text(&no_password.stderr),
        "pop3d pw: no password on stdin (expected one line)\n"
    );
    let empty = pop3d_pw(&["-s", "SSHA512"], b"\n");
    assert_eq!(empty.status.code(), Some(1));
    assert_eq!(text(&empty.stderr), "pop3d pw: the password is empty\n");
    let bad_cost = pop3d_pw(&["-s", "BLF-CRYPT", "-r", "40"], b"pw\n");
    assert_eq!(bad_cost.status.code(), Some(1));
    assert!(text(&bad_cost.stderr).contains("the cost must be 4 to 31"));
    let unsupported = pop3d_pw(&["--test", "{CRYPT}abJnggxhB/yWI"], b"pw\n");
    assert_eq!(unsupported.status.code(), Some(1));
    assert!(
        text(&unsupported.stderr).contains("DES-CRYPT"),
        "{}",
        text(&unsupported.stderr)
    );
    // Usage errors exit 2, with the usage.
    let usage = pop3d_pw(&["-s", "NTLM"], b"pw\n");
    assert_eq!(usage.status.code(), Some(2));
    let stderr = text(&usage.stderr);
    assert!(
        stderr.starts_with("pop3d: pw: unknown scheme `NTLM`"),
        "{stderr}"
    );
    assert!(stderr.contains("pop3d pw [-s SCHEME]"), "{stderr}");
}

/// A user of the end-to-end passwd-file: name, password, stored field.
struct MixedUser {
    name: &'static str,
    password: &'static str,
    field: String,
}

/// Users stored in every kind of scheme: Dovecot's own hashes from the
/// fixture, and hashes `pop3d pw` makes, with and without a prefix.
fn mixed_users() -> Vec<MixedUser> {
    let doveadm = doveadm_hashes();
    let from_doveadm = |label: &str| {
        let found = doveadm
            .iter()
            .find(|h| h.label == label && h.password == "secret")
            .unwrap();
        found.hash.clone()
    };
    let made =
        |scheme, password: &str, cost| hash_password(scheme, password.as_bytes(), cost).unwrap();
    vec![
        MixedUser {
            name: "sha512",
            password: "secret",
            field: from_doveadm("SHA512-CRYPT"),
        },
        MixedUser {
            name: "bcrypt",
            password: "secret",
            field: from_doveadm("BLF-CRYPT"),
        },
        MixedUser {
            name: "argon2",
            password: "secret",
            field: from_doveadm("ARGON2ID"),
        },
        MixedUser {
            name: "ssha",
            password: "secret",
            field: from_doveadm("SSHA512"),
        },
        MixedUser {
            name: "cram",
            password: "secret",
            field: from_doveadm("CRAM-MD5"),
        },
        MixedUser {
            name: "scram",
            password: "secret",
            field: from_doveadm("SCRAM-SHA-256"),
        },
        MixedUser {
            name: "plain",
            password: "secret",
            field: "{PLAIN}secret".to_owned(),
        },
        MixedUser {
            name: "bare-crypt",
            password: "other pw",
            field: made(Scheme::Sha256Crypt, "other pw", None)
                .strip_prefix("{SHA256-CRYPT}")
                .unwrap()
                .to_owned(),
        },
        MixedUser {
            name: "scram1",
            password: "other pw",
            field: made(Scheme::ScramSha1, "other pw", None),
        },
    ]
}

#[test]
fn a_passwd_file_mixing_schemes_logs_in_through_the_server() {
    let users = mixed_users();
    let mut fixture = Fixture::new();
    for user in &users {
        fixture = fixture.user(user.name, "replaced below");
    }
    let server = TestServer::start(fixture.user("des", "replaced below"));
    // The harness writes {PLAIN} users; the real file replaces it, and the
    // server reads it again at the next login.
    let mut passwd = String::from("# schemes mixed, as a migrated file would be\n");
    for user in &users {
        passwd.push_str(&format!("{}:{}::::::\n", user.name, user.field));
    }
    passwd.push_str("des:{CRYPT}abJnggxhB/yWI\n");
    std::fs::write(server.dir().join("passwd"), passwd).unwrap();

    for user in &users {
        let mut client = server.login(user.name, user.password);
        client.ok("STAT");
        client.ok("QUIT");
    }

    // A wrong password, an unknown user and a user whose scheme cannot be
    // checked get the same replies, byte for byte.
    let replies = |name: &str, password: &str| {
        let mut client = server.connect();
        client.greeting();
        let user_reply = client.command(&format!("USER {name}"));
        let pass_reply = client.command(&format!("PASS {password}"));
        (user_reply, pass_reply)
    };
    let wrong_password = replies("sha512", "not the password");
    assert!(wrong_password.0.starts_with("+OK"), "{wrong_password:?}");
    assert!(
        wrong_password.1.starts_with("-ERR [AUTH]"),
        "{wrong_password:?}"
    );
    for (name, password) in [
        ("nobody", "not the password"),
        ("nobody", "secret"),
        ("des", "secret"),
        ("argon2", "Secret"),
        ("scram", "x"),
        ("SHA512", "secret"),
    ] {
        assert_eq!(replies(name, password), wrong_password, "{name}");
    }
    let log = server.log();
    assert!(log.contains("password scheme DES-CRYPT"), "{log}");
    // Neither passwords nor stored hashes reach the log.
    assert!(!log.contains("not the password"), "{log}");
    for user in &users {
        let data = user.field.rsplit('$').next().unwrap();
        assert!(!log.contains(data), "{}: {log}", user.name);
    }
    assert!(!log.contains("abJngg"), "{log}");
}
