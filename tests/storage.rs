//! Storage features an operator relies on, end to end: the real `pop3d`
//! over real TCP on maildirs laid out as other software leaves them.
//!
//! - Moving from Dovecot: a maildir and UIDL answer recorded from Debian's
//!   Dovecot (`tests/fixtures/dovecot-uidlist`) give the same UIDLs through
//!   pop3d with `uidl_format: "%08Xu%08Xv"`, and `pop3d uidl` prints them.
//! - Maildir paths from the user database: `~` from passwd-file's home
//!   field, `%u`, `%n`, `%d`.
//! - Crash safety: a server killed with SIGKILL in the middle of an UPDATE
//!   that deletes thousands of messages leaves every message whole or
//!   gone, and the UIDLs of the rest unchanged.
//! - `move_new_to_cur` and the Maildir++ `maildirsize` file.
//!
//! These are maildir tests: under `POP3D_TEST_STORE=mbox` they say so and
//! pass (the mbox store has its own in `plugins/mbox/tests`).

mod common;

use common::*;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The fixture recorded from Dovecot (see its README).
fn dovecot_fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dovecot-uidlist")
}

/// Copies the fixture's maildir into `maildir` (which has cur, new, tmp).
fn copy_dovecot_maildir(maildir: &Path) {
    let source = dovecot_fixture().join("Maildir");
    fs::copy(
        source.join("dovecot-uidlist"),
        maildir.join("dovecot-uidlist"),
    )
    .unwrap();
    for entry in fs::read_dir(source.join("cur")).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), maildir.join("cur").join(entry.file_name())).unwrap();
    }
}

/// The lines of a multi-line answer recorded in the fixture.
fn recorded(name: &str) -> Vec<String> {
    fs::read_to_string(dovecot_fixture().join(name))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn dovecot_uidls_survive_the_move_to_pop3d() {
    if skip_unless_maildir("reads a maildir left by Dovecot") {
        return;
    }
    let server = TestServer::start(
        Fixture::new()
            .user("migrant", "secret")
            .store_option("uidl_format: \"%08Xu%08Xv\""),
    );
    let maildir = server.maildir("migrant");
    copy_dovecot_maildir(&maildir);
    let dovecot_uidl = recorded("dovecot-uidl.txt");
    let dovecot_list = recorded("dovecot-list.txt");
    assert_eq!(dovecot_uidl.len(), 5, "the fixture has five messages");

    let mut c = server.login("migrant", "secret");
    assert_eq!(
        c.multiline("UIDL").lines(),
        dovecot_uidl,
        "pop3d's UIDL differs from Dovecot's for the same maildir"
    );
    assert_eq!(
        c.multiline("LIST").lines(),
        dovecot_list,
        "pop3d's sizes differ from Dovecot's"
    );
    c.ok("QUIT");

    // The operator compares before switching: `pop3d uidl` prints the same.
    let output = Command::new(env!("CARGO_BIN_EXE_pop3d"))
        .args(["uidl", "migrant", "--config"])
        .arg(server.config_path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "pop3d uidl failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed: Vec<String> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(printed, dovecot_uidl, "pop3d uidl prints another list");

    // Mail delivered after the switch, which Dovecot never numbered, gets
    // its base name; the migrated messages keep Dovecot's UIDLs.
    let late = "1795758300.M2P4242.after-the-switch";
    fs::write(
        maildir.join("new").join(late),
        b"Subject: new mail\n\nDelivered after the switch.\n",
    )
    .unwrap();
    let mut c = server.login("migrant", "secret");
    let mut expected = dovecot_uidl.clone();
    expected.push(format!("6 {late}"));
    assert_eq!(c.multiline("UIDL").lines(), expected);
    // Deleting a migrated message leaves the others' UIDLs alone.
    c.ok("DELE 1");
    c.ok("QUIT");
    let mut c = server.login("migrant", "secret");
    let after: Vec<String> = c
        .multiline("UIDL")
        .lines()
        .iter()
        .map(|line| line.split_once(' ').unwrap().1.to_owned())
        .collect();
    let expected_after: Vec<String> = expected[1..]
        .iter()
        .map(|line| line.split_once(' ').unwrap().1.to_owned())
        .collect();
    assert_eq!(after, expected_after);
    c.ok("QUIT");

    // Dovecot's file was only read.
    assert_eq!(
        fs::read(maildir.join("dovecot-uidlist")).unwrap(),
        fs::read(dovecot_fixture().join("Maildir/dovecot-uidlist")).unwrap(),
        "pop3d changed dovecot-uidlist"
    );
}

#[test]
fn maildir_paths_come_from_the_user_database_and_the_name() {
    if skip_unless_maildir("about maildir root templates") {
        return;
    }
    // Each user's messages are put where their template says; a login
    // sees exactly that message, so a wrong expansion shows as a wrong or
    // missing message.
    let cases: &[(&str, &str, Option<&str>, &str)] = &[
        // (root template, user, home, where the maildir must be)
        (
            "~/Maildir",
            "ann",
            Some("{dir}/home/ann"),
            "{dir}/home/ann/Maildir",
        ),
        (
            "~/Maildir",
            "bea@example.org",
            Some("{dir}/home/bea"),
            "{dir}/home/bea/Maildir",
        ),
        (
            "{dir}/vmail/%d/%n",
            "cid@example.org",
            None,
            "{dir}/vmail/example.org/cid",
        ),
        (
            "{dir}/spool/%u",
            "dan@example.net",
            None,
            "{dir}/spool/dan@example.net",
        ),
        ("{dir}/users/%n/mail", "eve", None, "{dir}/users/eve/mail"),
    ];
    for &(root, user, home, location) in cases {
        let mut fixture = Fixture::new().user(user, "pw").store_root(root);
        if let Some(home) = home {
            fixture = fixture.home(user, home);
        }
        let server = TestServer::start(fixture);
        let maildir = PathBuf::from(location.replace("{dir}", &server.dir().display().to_string()));
        for sub in ["cur", "new", "tmp"] {
            fs::create_dir_all(maildir.join(sub)).unwrap();
        }
        let body = format!("Subject: for {user}\n\nfound via {root}\n");
        fs::write(maildir.join("new/1700000000.M1P1.host"), &body).unwrap();
        let mut c = server.login(user, "pw");
        let reply = c.multiline("RETR 1");
        assert_bytes_eq(
            &unstuff(&reply.body),
            &wire_form(body.as_bytes()),
            &format!("{user} with root {root}"),
        );
        c.ok("QUIT");
    }

    // `~` for a user the database gives no home: refused for the operator
    // to fix, not an empty maildrop.
    let server = TestServer::start(
        Fixture::new()
            .user("homeless", "pw")
            .store_root("~/Maildir"),
    );
    let mut c = server.connect();
    c.greeting();
    c.ok("USER homeless");
    let reply = c.command("PASS pw");
    assert!(reply.starts_with("-ERR [SYS/PERM]"), "{reply}");
}

/// A small deterministic generator for kill delays; the seed is printed
/// so a failure can be replayed.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// The message of `user` number `i` of the crash test: distinct content,
/// a few hundred bytes, some dot lines.
fn crash_message(i: usize) -> Vec<u8> {
    let mut message =
        format!("Subject: message {i}\nMessage-ID: <{i}@crash.test>\n\n").into_bytes();
    for line in 0..(i % 7 + 3) {
        message.extend_from_slice(format!("line {line} of message {i}\n").as_bytes());
    }
    message.extend_from_slice(b".a dot line\n");
    message
}

/// UIDL -> message bytes (as retrieved, dot-stuffing undone) of a session.
/// The RETRs are pipelined in batches, which keeps thousands of them quick.
fn uidl_to_content(c: &mut Client) -> BTreeMap<String, Vec<u8>> {
    let listing = c.multiline("UIDL").lines();
    let mut map = BTreeMap::new();
    for batch in listing.chunks(200) {
        let commands: String = batch
            .iter()
            .map(|line| format!("RETR {}\r\n", line.split_once(' ').unwrap().0))
            .collect();
        c.send(commands.as_bytes());
        for line in batch {
            let uid = line.split_once(' ').unwrap().1;
            let reply = split_multiline(&c.read_multiline())
                .unwrap_or_else(|| panic!("RETR of {uid} failed"));
            let body = unstuff(&reply.body);
            assert!(
                map.insert(uid.to_owned(), body).is_none(),
                "duplicate UIDL {uid}"
            );
        }
    }
    map
}

#[test]
fn sigkill_during_a_big_update_leaves_every_message_whole_or_gone() {
    if skip_unless_maildir("maildir deletions are unlinks (mbox: plugins/mbox/tests)") {
        return;
    }
    const MESSAGES: usize = 3000;
    const DELETED: usize = 2000;
    const ROUNDS: usize = 10;
    const DELAY_LIMIT_MICROS: u64 = 8_000;
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("kill delays from seed {seed}");
    let mut random = XorShift(seed);
    let mut fixture = Fixture::new().user("alice", "secret");
    for i in 0..MESSAGES {
        fixture = fixture.message("alice", crash_message(i));
    }
    let original: BTreeMap<Vec<u8>, Vec<u8>> = (0..MESSAGES)
        .map(|i| {
            let wire = wire_form(&crash_message(i));
            (wire.clone(), wire)
        })
        .collect();

    let mut interrupted = 0;
    // The fixture names its files the same way every round, so the UIDLs
    // and contents before the crash are the same every round.
    let mut before = BTreeMap::new();
    for round in 0..ROUNDS {
        let mut server = TestServer::start(fixture.clone());
        let mut c = server.login("alice", "secret");
        if round == 0 {
            before = uidl_to_content(&mut c);
            assert_eq!(before.len(), MESSAGES);
        }
        let numbered: Vec<String> = c
            .multiline("UIDL")
            .lines()
            .iter()
            .map(|line| line.split_once(' ').unwrap().1.to_owned())
            .collect();
        // Delete messages spread over the whole maildrop, pipelined.
        let doomed: Vec<usize> = (1..=MESSAGES).filter(|n| n % 3 != 0).collect();
        assert_eq!(doomed.len(), DELETED);
        let doomed_uids: std::collections::BTreeSet<&String> =
            doomed.iter().map(|n| &numbered[n - 1]).collect();
        assert!(numbered.iter().all(|uid| before.contains_key(uid)));
        let dele: String = doomed.iter().map(|n| format!("DELE {n}\r\n")).collect();
        c.send(dele.as_bytes());
        for _ in &doomed {
            let reply = c.read_line_str();
            assert!(reply.starts_with("+OK"), "{reply}");
        }
        // Unlinking 2000 files takes a few milliseconds here, so the
        // delays are spread over 0-DELAY_LIMIT: kills land before, during
        // or just after the deletions rather than long after them.
        let delay = Duration::from_micros(random.next() % DELAY_LIMIT_MICROS);
        c.send(b"QUIT\r\n");
        std::thread::sleep(delay);
        server.kill_now();

        // On disk: only whole original messages, nothing in tmp/.
        let maildir = server.maildir("alice");
        let mut on_disk = 0;
        for sub in ["cur", "new"] {
            for entry in fs::read_dir(maildir.join(sub)).unwrap() {
                let bytes = fs::read(entry.unwrap().path()).unwrap();
                assert!(
                    original.contains_key(&wire_form(&bytes)),
                    "round {round}: a file that is not one whole original message"
                );
                on_disk += 1;
            }
        }
        assert_eq!(fs::read_dir(maildir.join("tmp")).unwrap().count(), 0);
        if on_disk > MESSAGES - DELETED && on_disk < MESSAGES {
            interrupted += 1;
        }

        // After a restart: the survivors, byte for byte, under the UIDLs
        // they had; and only deleted messages are missing.
        server.start_again();
        let mut c = server.login_when_released("alice", "secret");
        let after = uidl_to_content(&mut c);
        assert_eq!(after.len(), on_disk, "round {round}");
        for (uid, body) in &after {
            assert_eq!(
                before.get(uid),
                Some(body),
                "round {round}: message {uid} changed its UIDL or its content"
            );
        }
        for uid in before.keys().filter(|uid| !after.contains_key(*uid)) {
            assert!(
                doomed_uids.contains(uid),
                "round {round}: message {uid} is gone but was not deleted"
            );
        }
        eprintln!(
            "round {round}: killed {} us after QUIT, {on_disk} of {MESSAGES} messages left",
            delay.as_micros()
        );
        c.ok("QUIT");
    }
    eprintln!("{interrupted} of {ROUNDS} kills landed in the middle of the deletions");
}

#[test]
fn update_moves_new_mail_to_cur_only_when_configured_and_updates_the_quota_file() {
    if skip_unless_maildir("about maildir folders and maildirsize") {
        return;
    }
    let fixture = Fixture::new()
        .user("alice", "secret")
        .message("alice", &b"Subject: one\n\n1\n"[..])
        .message("alice", &b"Subject: two\n\n2\n"[..])
        .message("alice", &b"Subject: three\n\n3\n"[..]);

    // Default: what is left stays in new/, for an IMAP server to show as
    // new; a maildir without maildirsize gets none.
    let server = TestServer::start(fixture.clone());
    let mut c = server.login("alice", "secret");
    c.ok("DELE 1");
    c.ok("QUIT");
    let maildir = server.maildir("alice");
    assert_eq!(fs::read_dir(maildir.join("new")).unwrap().count(), 2);
    assert!(!maildir.join("maildirsize").exists());

    let server = TestServer::start(fixture.store_option("move_new_to_cur: true"));
    let maildir = server.maildir("alice");
    fs::write(maildir.join("maildirsize"), "100000S,1000C\n45 3\n").unwrap();
    let uids = |c: &mut Client| -> Vec<String> {
        c.multiline("UIDL")
            .lines()
            .iter()
            .map(|line| line.split_once(' ').unwrap().1.to_owned())
            .collect()
    };
    let mut c = server.login("alice", "secret");
    let uids_before = uids(&mut c);
    c.ok("DELE 2");
    c.ok("QUIT");
    assert_eq!(fs::read_dir(maildir.join("new")).unwrap().count(), 0);
    let mut in_cur: Vec<String> = fs::read_dir(maildir.join("cur"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    in_cur.sort();
    assert_eq!(in_cur.len(), 2);
    assert!(
        in_cur.iter().all(|name| name.ends_with(":2,")),
        "{in_cur:?}"
    );
    assert_eq!(
        fs::read_to_string(maildir.join("maildirsize")).unwrap(),
        "100000S,1000C\n45 3\n-16 -1\n"
    );
    let mut c = server.login("alice", "secret");
    assert_eq!(
        uids(&mut c),
        [uids_before[0].clone(), uids_before[2].clone()],
        "moving to cur/ changed a UIDL"
    );
}

/// Prints how long a login and STAT take on a maildir of 100,000
/// messages, first (sizes read from every file) and cached, and the
/// server's memory. Run with
/// `cargo test --release --test storage -- --ignored --nocapture`.
#[test]
#[ignore = "measurement, prints figures"]
fn measure_a_hundred_thousand_message_maildir() {
    if skip_unless_maildir("maildir measurement") {
        return;
    }
    const COUNT: usize = 100_000;
    let server = TestServer::start(Fixture::new().user("alice", "secret"));
    let maildir = server.maildir("alice");
    let mut body = Vec::new();
    for line in 0..40 {
        body.extend_from_slice(format!("Line {line} of a typical message body.\n").as_bytes());
    }
    for i in 0..COUNT {
        fs::write(
            maildir
                .join("cur")
                .join(format!("{}.M{i}P1.host:2,S", 1_700_000_000 + i)),
            &body,
        )
        .unwrap();
    }
    let rss_idle = server.rss_kib();
    let mut timings = Vec::new();
    for _ in 0..3 {
        let start = std::time::Instant::now();
        let mut c = server.login("alice", "secret");
        let stat = c.ok("STAT");
        let login = start.elapsed();
        let listed = c.multiline("UIDL").lines().len();
        let with_uidl = start.elapsed();
        assert_eq!(listed, COUNT, "{stat}");
        let rss_open = server.rss_kib();
        c.ok("QUIT");
        timings.push((login, with_uidl, rss_open));
    }
    for (round, (login, with_uidl, rss)) in timings.iter().enumerate() {
        println!(
            "100,000 messages, round {round}: login+STAT {login:?}, +UIDL {with_uidl:?}, \
             RSS with the maildrop open {rss} KiB (idle {rss_idle} KiB)"
        );
    }
}
