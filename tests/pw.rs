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

use pop3d_passwd_file::scheme::{Scheme, StoredPassword};

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
        assert!(stored.verify(password.as_bytes()), "{label}: {password:?} refused");
        let mut wrong = password.clone().into_bytes();
        wrong[0] ^= 1;
        assert!(!stored.verify(&wrong), "{label}: a wrong password accepted");
        assert!(!stored.verify(b""), "{label}: the empty password accepted");
    }
}
