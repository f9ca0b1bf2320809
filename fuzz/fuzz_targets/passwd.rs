//! The passwd-file parser on arbitrary file contents: it must never panic,
//! and every user it accepts must survive a round trip through the scheme
//! parser, because the session re-parses the `{SCHEME}data` strings the
//! plugin hands out (challenge secrets for SASL and APOP).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pop3d_passwd_file::parse_text;
use pop3d_passwd_file::scheme::{Scheme, StoredPassword};

fuzz_target!(|text: &[u8]| {
    let Ok(file) = parse_text(text) else {
        return;
    };
    let text = String::from_utf8_lossy(text);
    for user in &file.users {
        assert!(!user.name.is_empty());
        assert!(!user.name.contains(':') && !user.name.contains('\n'));
        // The user came from exactly one line that starts with `name:`;
        // its password field parses again to the same scheme and cost.
        let prefix = format!("{}:", user.name);
        let lines: Vec<&str> = text
            .split('\n')
            .map(|line| line.strip_suffix('\r').unwrap_or(line))
            .filter(|line| line.starts_with(&prefix))
            .collect();
        assert_eq!(
            lines.len(),
            1,
            "user {:?} defined on {} lines",
            user.name,
            lines.len()
        );
        let field = lines[0][prefix.len()..].split(':').next().unwrap();
        let again = StoredPassword::parse(field);
        let Some(stored) = &user.password else {
            assert!(again.is_err(), "an unsupported password parsed on its own");
            continue;
        };
        let again = again.expect("an accepted password field no longer parses");
        assert_eq!(again.scheme(), stored.scheme());
        assert_eq!(again.cost(), stored.cost());
        // The scheme's name is the one the parser reads back.
        assert_eq!(
            Scheme::from_name(stored.scheme().name()),
            Some(stored.scheme())
        );
        // A challenge secret is a `{SCHEME}data` string the session can
        // parse, and parsing it gives the same secret again.
        if let Some(secret) = stored.challenge_secret() {
            let secret_text = std::str::from_utf8(&secret);
            if let Ok(secret_text) = secret_text {
                let reparsed =
                    StoredPassword::parse(secret_text).expect("a challenge secret does not parse");
                assert_eq!(reparsed.challenge_secret(), Some(secret.clone()));
            } else {
                // Only a plaintext password may be arbitrary bytes.
                assert!(secret.starts_with(b"{PLAIN}"));
            }
        }
        // Unknown users cost what a user of the same form costs.
        assert_eq!(stored.dummy_like().cost(), stored.cost());
    }
    assert!(file
        .users
        .windows(2)
        .all(|pair| pair[0].name < pair[1].name));
});
