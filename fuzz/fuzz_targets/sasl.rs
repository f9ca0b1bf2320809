//! The SASL mechanisms driven through whole exchanges with fuzzer-chosen
//! responses and secrets, plus the `{SCHEME}` secret parser and APOP. They
//! must never panic, every challenge must fit a response line, and an
//! unknown user must never authenticate.
//!
//! Input: a selector byte (mechanism, secret, whether the first line is an
//! initial response), then response lines separated by LF. A line's first
//! byte says whether the rest goes out base64-encoded (reaching the
//! mechanism's parser) or raw. `@N` in a line stands for the SCRAM nonce
//! the server last sent, which is random and could never be guessed, so
//! that the client-final parser is reached. `seeds/sasl` holds one valid
//! exchange per mechanism.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pop3d::protocol::sasl::{
    apop_verify, challenge_line, Exchange, Mechanism, SaslConfig, Secret, Step,
};

/// Secrets a backend might hand over. SCRAM ones use one iteration so the
/// fuzzer spends its time in parsing, not in PBKDF2.
const SECRETS: &[&[u8]] = &[
    b"{PLAIN}pencil",
    b"{CRAM-MD5}e02d374fde0dc75a17a557039a3a5338c7743304777dccd376f332bee68d2cf6",
    b"{SCRAM-SHA-1}1,QSXCR+Q6sek8bf92,NA/OqmF4hhrsrB9KR7po+dliTGM=,QBiURvQaE6H6qYTmeghDHLANBFQ=",
    b"{SCRAM-SHA-256}1,W22ZaJ0SNY7soEsUEjb6gQ==,WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=,wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
];

fn base64(bytes: &[u8]) -> String {
    // The challenge line encoder doubles as a base64 encoder here.
    let mut line = Vec::new();
    challenge_line(bytes, &mut line);
    String::from_utf8(line[2..line.len() - 2].to_vec()).unwrap_or_default()
}

/// `line` with every `@N` replaced by `nonce`.
fn replace_nonce(line: &[u8], nonce: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(line.len());
    let mut rest = line;
    while let Some(at) = rest.windows(2).position(|pair| pair == b"@N") {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(nonce);
        rest = &rest[at + 2..];
    }
    out.extend_from_slice(rest);
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    // Side targets on the same input: the secret parser and APOP.
    if let Ok(secret) = Secret::parse(rest) {
        let _ = secret.kind();
        if !matches!(secret.kind(), "SCRAM-SHA-1" | "SCRAM-SHA-256") {
            let _ = secret.verify_password(b"pencil");
        }
    }
    if let Ok(text) = std::str::from_utf8(rest) {
        let (timestamp, digest) = text.split_once(' ').unwrap_or((text, ""));
        let _ = apop_verify(timestamp, b"tanstaaf", digest);
    }

    let config = SaslConfig::new("fuzz.example", [3; 32]);
    let mechanism = Mechanism::ALL[usize::from(selector % 5)];
    let secret_choice = usize::from(selector / 5) % (SECRETS.len() + 1);
    let secret = SECRETS
        .get(secret_choice)
        .map(|text| Secret::parse(text).expect("fixture secrets parse"));

    let nonce = std::cell::RefCell::new(Vec::new());
    let mut lines = rest.split(|&b| b == b'\n').map(|line| {
        let line = replace_nonce(line, &nonce.borrow());
        match line.split_first() {
            Some((&mode, payload)) if mode % 4 != 0 => base64(payload).into_bytes(),
            Some((_, payload)) => payload.to_vec(),
            None => Vec::new(),
        }
    });
    let initial = match selector & 0x80 {
        0 => None,
        _ => lines.next().map(|line| match line.as_slice() {
            b"" => "=".to_owned(),
            other => String::from_utf8_lossy(other).into_owned(),
        }),
    };
    // AUTH only carries base64 or "="; the command parser guarantees it.
    let initial = initial.filter(|text| {
        text == "="
            || text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b))
    });

    let mut step = Exchange::start(mechanism, initial.as_deref(), &config);
    for _round in 0..16 {
        step = match step {
            Step::Challenge { challenge, next } => {
                if let Some(sent) = challenge.strip_prefix(b"r=") {
                    let end = sent.iter().position(|&b| b == b',').unwrap_or(sent.len());
                    *nonce.borrow_mut() = sent[..end].to_vec();
                }
                let mut line = Vec::new();
                challenge_line(&challenge, &mut line);
                // RFC 1939 section 3: a reply line is at most 512 octets.
                assert!(line.len() <= 512, "challenge line of {} octets", line.len());
                match lines.next() {
                    Some(response) => next.respond(&response),
                    None => return,
                }
            }
            Step::NeedsSecret { authcid, next } => {
                assert!(!authcid.is_empty());
                let step = next.provide(secret.as_ref(), &config);
                if secret.is_none() {
                    // Whatever follows must not be a success.
                    let mut step = step;
                    for _ in 0..4 {
                        step = match step {
                            Step::Challenge { next, .. } => match lines.next() {
                                Some(response) => next.respond(&response),
                                None => return,
                            },
                            Step::Success { .. } => panic!("unknown user authenticated"),
                            _ => return,
                        };
                    }
                    return;
                }
                step
            }
            Step::CheckPassword { authcid, password } => {
                assert!(!authcid.is_empty() && !password.expose().contains(&0));
                return;
            }
            Step::Success { authcid } => {
                assert!(!authcid.is_empty());
                return;
            }
            Step::Failure(failure) => {
                assert!(!failure.reply_text().is_empty());
                return;
            }
            Step::Cancelled => return,
        };
    }
});
