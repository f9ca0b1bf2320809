//! Known answers and round trips for the schemes. Dovecot's own hashes of
//! every scheme are checked in the workspace's `tests/pw.rs`.

use super::*;

#[test]
fn names_and_aliases() {
    for scheme in Scheme::ALL {
        assert_eq!(Scheme::from_name(scheme.name()), Some(scheme));
        assert_eq!(
            Scheme::from_name(&scheme.name().to_ascii_lowercase()),
            Some(scheme)
        );
    }
    assert_eq!(Scheme::from_name("clear"), Some(Scheme::Plain));
    assert_eq!(Scheme::from_name("CLEARTEXT"), Some(Scheme::Plain));
    assert_eq!(Scheme::from_name("PLAIN.B64"), Some(Scheme::PlainBase64));
    assert_eq!(Scheme::from_name("HMAC-MD5"), Some(Scheme::CramMd5));
    for unknown in ["", "MD5-CRYPT", "SHA512", "DIGEST-MD5", "SSHA512.HEX"] {
        assert_eq!(Scheme::from_name(unknown), None, "{unknown}");
    }
}

#[test]
fn every_scheme_round_trips_with_a_fresh_salt() {
    for scheme in Scheme::ALL {
        // Argon2 at full cost is slow; one pass is enough to round-trip.
        let cost = matches!(scheme, Scheme::Argon2id | Scheme::Argon2i).then_some(1);
        let password = "pässwörd: 1".as_bytes();
        let first = hash_password(scheme, password, cost).unwrap();
        let second = hash_password(scheme, password, cost).unwrap();
        let label = format!("{{{scheme}}}");
        assert!(first.starts_with(&label), "{first}");
        let stored = StoredPassword::parse(&first).unwrap();
        assert_eq!(stored.scheme(), scheme);
        assert!(stored.verify(password), "{scheme}");
        assert!(!stored.verify("pässwörd: 2".as_bytes()), "{scheme}");
        assert!(!stored.verify(b""), "{scheme}");
        let salted = !matches!(
            scheme,
            Scheme::Plain | Scheme::PlainBase64 | Scheme::CramMd5
        );
        assert_eq!(first != second, salted, "{scheme}: {first} / {second}");
    }
}

#[test]
fn the_forms_written_are_the_ones_dovecot_writes() {
    let hash = |scheme, cost| hash_password(scheme, b"pw", cost).unwrap();
    let sha512 = hash(Scheme::Sha512Crypt, None);
    assert!(sha512.starts_with("{SHA512-CRYPT}$6$"), "{sha512}");
    assert_eq!(sha512.len(), "{SHA512-CRYPT}$6$".len() + 16 + 1 + 86);
    assert!(hash(Scheme::Sha512Crypt, Some(10_000)).starts_with("{SHA512-CRYPT}$6$rounds=10000$"));
    assert!(hash(Scheme::Sha256Crypt, None).starts_with("{SHA256-CRYPT}$5$"));
    // CRYPT makes SHA512-CRYPT, which every crypt(3) and Dovecot reads.
    assert!(hash(Scheme::Crypt, None).starts_with("{CRYPT}$6$"));
    assert!(hash(Scheme::BlfCrypt, None).starts_with("{BLF-CRYPT}$2y$10$"));
    assert!(hash(Scheme::BlfCrypt, Some(4)).starts_with("{BLF-CRYPT}$2y$04$"));
    assert!(
        hash(Scheme::Argon2id, Some(1)).starts_with("{ARGON2ID}$argon2id$v=19$m=65536,t=1,p=1$")
    );
    assert!(hash(Scheme::Argon2i, Some(1)).starts_with("{ARGON2I}$argon2i$v=19$m=32768,t=1,p=1$"));
    assert!(hash(Scheme::ScramSha256, None).starts_with("{SCRAM-SHA-256}4096,"));
    assert!(hash(Scheme::ScramSha1, Some(5000)).starts_with("{SCRAM-SHA-1}5000,"));
    assert_eq!(hash(Scheme::Plain, None), "{PLAIN}pw");
    assert_eq!(hash(Scheme::PlainBase64, None), "{PLAIN.BASE64}cHc=");
    // Known answer, made by `doveadm pw -s CRAM-MD5 -p secret`.
    assert_eq!(
        hash_password(Scheme::CramMd5, b"secret", None).unwrap(),
        "{CRAM-MD5}cd3ba7deaad6e5ca23448ba42e379747a9e0f7f1fbc00c8a81bbaac395731b56"
    );
    // 8 bytes of salt after the digest.
    let ssha = hash(Scheme::Ssha512, None);
    let bytes = decode_base64(ssha.strip_prefix("{SSHA512}").unwrap()).unwrap();
    assert_eq!(bytes.len(), 64 + 8);
}

#[test]
fn costs_outside_a_schemes_range_are_refused() {
    for (scheme, cost, says) in [
        (Scheme::Sha512Crypt, 999, "rounds must be 1000 to 999999999"),
        (Scheme::BlfCrypt, 3, "the cost must be 4 to 31"),
        (Scheme::BlfCrypt, 32, "the cost must be 4 to 31"),
        (Scheme::Argon2id, 0, "passes is unusable"),
        (Scheme::ScramSha256, 4095, "at least 4096 iterations"),
        (Scheme::Ssha512, 5, "no cost to set"),
        (Scheme::Plain, 5, "no cost to set"),
    ] {
        let err = hash_password(scheme, b"pw", Some(cost)).unwrap_err();
        assert!(
            matches!(err, SchemeError::BadCost { .. }),
            "{scheme} {cost}: {err:?}"
        );
        assert!(err.to_string().contains(says), "{err}");
    }
}

#[test]
fn costs_come_from_the_stored_string() {
    let cost = |field: &str| StoredPassword::parse(field).unwrap().cost();
    assert_eq!(
        cost(&hash_password(Scheme::Sha256Crypt, b"pw", Some(2000)).unwrap()),
        "SHA256-CRYPT rounds=2000"
    );
    // glibc clamps rounds below 1000 rather than refusing them.
    let low = "$6$rounds=10$salt$".to_owned() + &".".repeat(86);
    assert_eq!(cost(&low), "SHA512-CRYPT rounds=1000");
    assert_eq!(
        cost("$2b$07$......................012345678901234567890123456789."),
        "BLF-CRYPT cost=7"
    );
    assert_eq!(
        cost("{ARGON2I}$argon2i$m=4096,t=2,p=2$c2FsdHNhbHQ$AAAAAAAAAAAAAAAAAAAAAA"),
        "ARGON2I m=4096 t=2 p=2"
    );
    assert_eq!(
        cost(&hash_password(Scheme::ScramSha1, b"pw", Some(8192)).unwrap()),
        "SCRAM-SHA-1 iterations=8192"
    );
    assert_eq!(cost("{SSHA}AAAAAAAAAAAAAAAAAAAAAAAAAAAA"), "SSHA");
}

#[test]
fn dummies_keep_the_cost_and_match_nothing_real() {
    for scheme in Scheme::ALL {
        let cost = matches!(scheme, Scheme::Argon2id | Scheme::Argon2i).then_some(1);
        let stored = StoredPassword::parse(&hash_password(scheme, b"pw", cost).unwrap()).unwrap();
        let dummy = stored.dummy_like();
        assert_eq!(dummy.cost(), stored.cost());
        assert!(!dummy.verify(b"pw"), "{scheme}");
        assert!(!dummy.verify(b""), "{scheme}");
    }
}

#[test]
fn the_crypt_family_goes_by_the_hashs_own_prefix() {
    let sha256 = hash_password(Scheme::Sha256Crypt, b"pw", None).unwrap();
    let data = sha256.strip_prefix("{SHA256-CRYPT}").unwrap();
    for field in [
        data.to_owned(),
        format!("{{CRYPT}}{data}"),
        format!("{{crypt}}{data}"),
        format!("{{SHA512-CRYPT}}{data}"),
    ] {
        let stored = StoredPassword::parse(&field).unwrap();
        assert!(stored.verify(b"pw"), "{field}");
        assert_eq!(stored.cost(), "SHA256-CRYPT rounds=5000");
    }
    assert_eq!(StoredPassword::parse(data).unwrap().scheme(), Scheme::Crypt);
    // -s of `pop3d pw --test` names the scheme of a hash without a prefix.
    let plain = StoredPassword::parse_with_default("pw", Scheme::Plain).unwrap();
    assert!(plain.verify(b"pw"));
}

#[test]
fn unsupported_forms_are_named_for_the_operator() {
    for (field, named) in [
        ("$1$salt$hash", "MD5-CRYPT"),
        ("{CRYPT}abJnggxhB/yWI", "DES-CRYPT"),
        ("abJnggxhB/yWI", "DES-CRYPT"),
        ("{DES-CRYPT}abJnggxhB/yWI", "DES-CRYPT"),
        ("$y$j9T$salt$hash", "yescrypt"),
        ("$2x$05$abc", "$2x$"),
        ("{MD5-CRYPT}$1$salt$hash", "MD5-CRYPT"),
        ("{SHA512.HEX}00", "SHA512.HEX"),
        ("{SHA512-CRYPT.HEX}00", "SHA512-CRYPT.HEX"),
        ("{my secret}pass", "(an unrecognised {...} prefix)"),
    ] {
        match StoredPassword::parse(field) {
            Err(SchemeError::Unsupported(what)) => {
                assert!(what.contains(named), "{field}: {what}");
                assert!(!what.contains("salt") && !what.contains("secret"), "{what}");
            }
            other => panic!("{field}: {other:?}"),
        }
    }
}

#[test]
fn digest_schemes_take_dovecots_encoding_suffixes() {
    let b64 = hash_password(Scheme::Ssha256, b"pw", None).unwrap();
    let bytes = decode_base64(b64.strip_prefix("{SSHA256}").unwrap()).unwrap();
    let hex = format!("{{SSHA256.HEX}}{}", encode_hex(&bytes));
    assert!(StoredPassword::parse(&hex).unwrap().verify(b"pw"));
    let cram = hash_password(Scheme::CramMd5, b"pw", None).unwrap();
    let bytes = decode_hex(cram.strip_prefix("{CRAM-MD5}").unwrap()).unwrap();
    let b64 = format!(
        "{{CRAM-MD5.B64}}{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    );
    assert!(StoredPassword::parse(&b64).unwrap().verify(b"pw"));
}

#[test]
fn challenge_secrets_are_scheme_strings() {
    let secret = |field: &str| StoredPassword::parse(field).unwrap().challenge_secret();
    assert_eq!(secret("{CLEAR}pw").unwrap(), b"{PLAIN}pw");
    assert_eq!(secret("{PLAIN.BASE64}/w==").unwrap(), b"{PLAIN}\xff");
    let cram = hash_password(Scheme::CramMd5, b"pw", None).unwrap();
    assert_eq!(secret(&cram).unwrap(), cram.as_bytes());
    assert_eq!(
        secret(&cram.replace("{CRAM-MD5}", "{hmac-md5}")).unwrap(),
        cram.as_bytes()
    );
    let scram = hash_password(Scheme::ScramSha1, b"pw", None).unwrap();
    assert_eq!(secret(&scram).unwrap(), scram.as_bytes());
    for one_way in [Scheme::Sha512Crypt, Scheme::BlfCrypt, Scheme::Ssha512] {
        let field = hash_password(
            one_way,
            b"pw",
            Some(4).filter(|_| one_way == Scheme::BlfCrypt),
        )
        .unwrap();
        assert_eq!(secret(&field), None, "{one_way}");
    }
}

#[test]
fn debug_shows_the_cost_not_the_data() {
    let stored = StoredPassword::parse("{PLAIN}hunter2").unwrap();
    assert_eq!(format!("{stored:?}"), "StoredPassword(PLAIN, PLAIN)");
    let field = hash_password(Scheme::Sha512Crypt, b"pw", None).unwrap();
    let printed = format!("{:?}", StoredPassword::parse(&field).unwrap());
    assert_eq!(
        printed,
        "StoredPassword(SHA512-CRYPT, SHA512-CRYPT rounds=5000)"
    );
}

#[test]
fn constant_time_eq_known_answers() {
    let check = |a: &[u8], b: &[u8]| bool::from(constant_time_eq(a, b));
    assert!(check(b"secret", b"secret"));
    assert!(check(b"", b""));
    assert!(!check(b"secret", b"secreT"));
    assert!(!check(b"secret", b"secret\0"));
    assert!(!check(b"secret\0", b"secret"));
    assert!(!check(b"secret", b""));
    assert!(!check(b"", b"\0"));
}

#[test]
fn base64_with_or_without_padding() {
    assert_eq!(decode_base64("").unwrap(), b"");
    assert_eq!(decode_base64("Zg==").unwrap(), b"f");
    assert_eq!(decode_base64("Zg").unwrap(), b"f");
    assert_eq!(decode_base64("Zm8=").unwrap(), b"fo");
    assert_eq!(decode_base64("Zm9v").unwrap(), b"foo");
    assert_eq!(decode_base64("+/+/").unwrap(), [0xfb, 0xff, 0xbf]);
    for bad in ["Z", "Zh==", "Zm9v=", "Zg===", "Zm 9v", "Zm9v!", "=Zg="] {
        assert_eq!(decode_base64(bad), None, "{bad}");
    }
}

#[test]
fn hex_known_answers() {
    assert_eq!(decode_hex("00ffA0").unwrap(), [0, 255, 160]);
    assert_eq!(encode_hex(&[0, 255, 160]), "00ffa0");
    for bad in ["0", "0g", "+1", " 1"] {
        assert_eq!(decode_hex(bad), None, "{bad}");
    }
}
