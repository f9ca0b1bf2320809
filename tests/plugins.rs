//! The plugin ABI, exercised with real shared libraries.
//!
//! C plugins are compiled from `plugins/examples` with the system C
//! compiler into a scratch directory; the Rust example plugins are built
//! once per run with `cargo build -p dir-store -p panicky-store -p
//! pop3d-maildir` into
//! `<target>/plugin-libs`, with this test binary's profile. Then the host loads them exactly as the
//! server does and the tests drive them through the `Authenticator`,
//! `Store`, `Maildrop` and `MessageReader` traits the session uses.
//!
//! Fixtures built broken on purpose (`plugins/examples/c-fixtures`) check
//! that every way a library can be wrong gives the documented start-up
//! error, and a C file that reports the compiler's struct layout checks
//! the header against the Rust definitions.

use pop3d::backend::plugin_host::{self, PluginError};
use pop3d::backend::{Authenticator, BackendError, Store, UserInfo};
use pop3d_plugin_api::abi;
use std::fs;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};

// ---------------------------------------------------------------- support

#[path = "support/plugin_build.rs"]
mod plugin_build;
use plugin_build::{build_c, rust_plugin, Scratch, REPO};

/// One captured log record.
#[derive(Debug, Clone)]
struct Logged {
    target: String,
    level: log::Level,
    text: String,
}

/// Keeps every log record so tests can assert what an operator would see.
struct CaptureLogger;

static RECORDS: Mutex<Vec<Logged>> = Mutex::new(Vec::new());

impl log::Log for CaptureLogger {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        RECORDS.lock().unwrap().push(Logged {
            target: record.target().to_string(),
            level: record.level(),
            text: record.args().to_string(),
        });
    }
    fn flush(&self) {}
}

fn capture_logs() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        log::set_logger(&CaptureLogger).unwrap();
        log::set_max_level(log::LevelFilter::Trace);
    });
}

fn logged(target: &str) -> Vec<Logged> {
    RECORDS
        .lock()
        .unwrap()
        .iter()
        .filter(|record| record.target == target)
        .cloned()
        .collect()
}

fn user(name: &str) -> UserInfo {
    UserInfo {
        name: name.to_string(),
        home: None,
        extra: Vec::new(),
    }
}

fn load_error_auth(path: &Path, config: &str) -> PluginError {
    match plugin_host::load_auth(path, config) {
        Ok(_) => panic!("{} loaded but should have been refused", path.display()),
        Err(error) => error,
    }
}

// ------------------------------------------------------ layout and header

/// Every size and offset the C compiler computes from pop3d_plugin.h must
/// equal Rust's for abi.rs, or the two sides would read each other's
/// structs wrongly.
#[test]
fn c_header_layout_matches_the_rust_abi() {
    use abi::*;
    use std::mem::{offset_of, size_of};

    let dir = Scratch::new("layout");
    let library_path = build_c(&dir, "c-fixtures/layout_probe.c", "liblayout_probe.so", &[]);
    // SAFETY: our own fixture, with no initializers.
    let library = unsafe { libloading::Library::new(&library_path) }.unwrap();
    // SAFETY: the fixture defines the function with this signature.
    let report_fn = unsafe {
        library
            .get::<unsafe extern "C" fn(*mut std::ffi::c_char, u64) -> u64>(b"pop3d_layout_report")
    }
    .unwrap();
    let mut buf = vec![0u8; 8192];
    // SAFETY: the buffer is writable for its length.
    let len = unsafe { report_fn(buf.as_mut_ptr().cast(), buf.len() as u64) } as usize;
    assert!(len < buf.len());
    let c_report = String::from_utf8(buf[..len].to_vec()).unwrap();

    let mut rust_report = String::new();
    macro_rules! size {
        ($t:ident) => {
            rust_report += &format!("{}={}\n", stringify!($t), size_of::<$t>());
        };
    }
    macro_rules! field {
        ($t:ident, $f:ident) => {
            rust_report += &format!(
                "{}.{}@{}\n",
                stringify!($t),
                stringify!($f),
                offset_of!($t, $f)
            );
        };
    }
    size!(Pop3dHost);
    field!(Pop3dHost, size);
    field!(Pop3dHost, abi_major);
    field!(Pop3dHost, abi_minor);
    field!(Pop3dHost, host_data);
    field!(Pop3dHost, log);
    size!(Pop3dPluginHeader);
    field!(Pop3dPluginHeader, magic);
    field!(Pop3dPluginHeader, abi_major);
    field!(Pop3dPluginHeader, abi_minor);
    field!(Pop3dPluginHeader, header_size);
    field!(Pop3dPluginHeader, kind);
    field!(Pop3dPluginHeader, flags);
    field!(Pop3dPluginHeader, name);
    field!(Pop3dPluginHeader, table);
    size!(Pop3dBuf);
    field!(Pop3dBuf, host);
    field!(Pop3dBuf, append);
    size!(Pop3dStr);
    field!(Pop3dStr, ptr);
    field!(Pop3dStr, len);
    size!(Pop3dKeyValue);
    field!(Pop3dKeyValue, key);
    field!(Pop3dKeyValue, value);
    size!(Pop3dUser);
    field!(Pop3dUser, name);
    field!(Pop3dUser, home);
    field!(Pop3dUser, extra);
    field!(Pop3dUser, extra_count);
    size!(Pop3dUserOut);
    field!(Pop3dUserOut, host);
    field!(Pop3dUserOut, set_name);
    field!(Pop3dUserOut, set_home);
    field!(Pop3dUserOut, add_extra);
    size!(Pop3dListSink);
    field!(Pop3dListSink, host);
    field!(Pop3dListSink, message);
    size!(Pop3dAuthTable);
    field!(Pop3dAuthTable, size);
    field!(Pop3dAuthTable, create);
    field!(Pop3dAuthTable, destroy);
    field!(Pop3dAuthTable, authenticate);
    field!(Pop3dAuthTable, get_secret);
    size!(Pop3dStoreTable);
    field!(Pop3dStoreTable, size);
    field!(Pop3dStoreTable, create);
    field!(Pop3dStoreTable, destroy);
    field!(Pop3dStoreTable, open);
    field!(Pop3dStoreTable, list);
    field!(Pop3dStoreTable, open_message);
    field!(Pop3dStoreTable, read);
    field!(Pop3dStoreTable, close_reader);
    field!(Pop3dStoreTable, commit);
    field!(Pop3dStoreTable, release);
    rust_report += &format!(
        "magic={} major={} minor={} thread_safe={}\n",
        MAGIC, ABI_MAJOR, ABI_MINOR, FLAG_THREAD_SAFE
    );
    rust_report += &format!(
        "status {} {} {} {} {} {} {}\n",
        status::OK,
        status::DENIED,
        status::NOT_FOUND,
        status::IN_USE,
        status::TEMP_FAIL,
        status::PERM_FAIL,
        status::PANICKED
    );
    rust_report += &format!(
        "kind {} {} log {} {} {} {} {}\n",
        KIND_AUTH, KIND_STORE, LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG, LOG_TRACE
    );
    let drift: Vec<String> = c_report
        .lines()
        .zip(rust_report.lines())
        .filter(|(c, rust)| c != rust)
        .map(|(c, rust)| format!("C: {c}  Rust: {rust}"))
        .collect();
    assert!(
        drift.is_empty(),
        "pop3d_plugin.h and abi.rs disagree:\n{}",
        drift.join("\n")
    );
    assert_eq!(c_report.lines().count(), rust_report.lines().count());
}

// ------------------------------------------------------- the C auth plugin

#[test]
fn c_static_auth_checks_passwords_and_returns_attributes() {
    capture_logs();
    let dir = Scratch::new("static-auth");
    let path = build_c(
        &dir,
        "c-static-auth/static_auth.c",
        "libstatic_auth.so",
        &[],
    );
    let auth = plugin_host::load_auth(&path, "()").unwrap();

    let alice = auth.authenticate("alice", b"wonderland").unwrap();
    assert_eq!(alice.name, "alice");
    assert_eq!(alice.home.as_deref(), Some("/home/alice"));
    assert_eq!(
        alice.extra,
        vec![("failed_logins".to_string(), "0".to_string())]
    );

    // The canonical spelling comes from the plugin, not from the client.
    assert_eq!(
        auth.authenticate("ALICE", b"wonderland").unwrap().name,
        "alice"
    );
    assert_eq!(auth.authenticate("bob", b"builder").unwrap().home, None);

    assert_eq!(
        auth.authenticate("alice", b"Wonderland"),
        Err(BackendError::Denied)
    );
    assert_eq!(
        auth.authenticate("mallory", b"wonderland"),
        Err(BackendError::Denied)
    );
    assert_eq!(auth.authenticate("", b""), Err(BackendError::Denied));

    // The optional get_secret is there, and unknown users are Denied.
    assert!(auth.supports_secrets());
    let (secret, bob) = auth.secret("bob").unwrap().unwrap();
    assert_eq!(secret.expose(), b"{PLAIN}builder");
    assert_eq!(bob.name, "bob");
    assert_eq!(format!("{secret:?}"), "Secret(..)");
    assert_eq!(
        auth.secret("nobody").unwrap().unwrap_err(),
        BackendError::Denied
    );

    // The plugin's own log line arrives in the host's log under its name.
    let lines = logged("pop3d::plugin::static_auth");
    assert!(
        lines
            .iter()
            .any(|l| l.level == log::Level::Info && l.text == "static-auth ready with 2 users"),
        "{lines:?}"
    );
}

/// static_auth keeps a plain, non-atomic counter and does not claim to be
/// thread-safe, so the host must serialize calls: hammered from 8 threads,
/// the counter must not lose a single increment.
#[test]
fn calls_into_a_plugin_without_the_thread_safe_flag_are_serialized() {
    let dir = Scratch::new("serialized");
    let path = build_c(
        &dir,
        "c-static-auth/static_auth.c",
        "libstatic_auth.so",
        &[],
    );
    let auth = Arc::new(plugin_host::load_auth(&path, "()").unwrap());
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let auth = Arc::clone(&auth);
            std::thread::spawn(move || {
                for _ in 0..500 {
                    assert_eq!(
                        auth.authenticate("bob", b"wrong"),
                        Err(BackendError::Denied)
                    );
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let bob = auth.authenticate("bob", b"builder").unwrap();
    assert_eq!(
        bob.extra,
        vec![("failed_logins".to_string(), "4000".to_string())]
    );
}

/// The minimal C plugin in plugins/README.md compiles and works, so the
/// guide cannot rot.
#[test]
fn the_c_example_in_the_plugin_guide_works() {
    let guide = fs::read_to_string(Path::new(REPO).join("plugins/README.md")).unwrap();
    let start = guide.find("```c\n").expect("the guide has a C example") + "```c\n".len();
    let end = start + guide[start..].find("```").unwrap();
    let dir = Scratch::new("guide");
    fs::write(dir.path("demo_auth.c"), &guide[start..end]).unwrap();
    // build_c resolves sources under plugins/examples; an absolute path wins.
    let path = build_c(
        &dir,
        dir.path("demo_auth.c").to_str().unwrap(),
        "libdemo_auth.so",
        &[],
    );
    let auth = plugin_host::load_auth(&path, "()").unwrap();
    assert_eq!(auth.authenticate("demo", b"demo").unwrap().name, "demo");
    assert_eq!(
        auth.authenticate("demo", b"demO"),
        Err(BackendError::Denied)
    );
    assert!(!auth.supports_secrets());
}

#[test]
fn generic_entry_alias_finds_a_renamed_c_plugin() {
    let dir = Scratch::new("renamed");
    let built = build_c(
        &dir,
        "c-static-auth/static_auth.c",
        "libstatic_auth.so",
        &[],
    );
    let renamed = dir.path("site-auth.so");
    fs::copy(&built, &renamed).unwrap();
    let auth = plugin_host::load_auth(&renamed, "()").unwrap();
    assert_eq!(
        auth.authenticate("alice", b"wonderland").unwrap().name,
        "alice"
    );
}

#[test]
fn a_config_the_plugin_rejects_stops_start_up_with_its_message() {
    let dir = Scratch::new("config");
    let path = build_c(
        &dir,
        "c-static-auth/static_auth.c",
        "libstatic_auth.so",
        &[],
    );
    let error = load_error_auth(&path, "(users: [\"eve\"])");
    assert!(
        matches!(
            error,
            PluginError::ConfigRejected {
                status: "PERM_FAIL",
                ..
            }
        ),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(
        message.contains("static-auth takes no settings; write its config as ()"),
        "{message}"
    );
}

#[test]
fn an_auth_plugin_configured_as_store_is_refused() {
    let dir = Scratch::new("kind");
    let path = build_c(
        &dir,
        "c-static-auth/static_auth.c",
        "libstatic_auth.so",
        &[],
    );
    let error = plugin_host::load_store(&path, "()").unwrap_err();
    assert!(
        matches!(
            error,
            PluginError::WrongKind {
                expected: "store",
                found: 1,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error
        .to_string()
        .contains("is an auth plugin, but it is configured as the store backend"));
}

// ------------------------------------------------ libraries built broken

#[test]
fn a_plugin_for_another_major_version_is_refused_naming_both_versions() {
    let dir = Scratch::new("major");
    let path = build_c(
        &dir,
        "c-fixtures/broken_auth.c",
        "libbroken_auth.so",
        &["FIX_MAJOR=2", "FIX_MINOR=3"],
    );
    let error = load_error_auth(&path, "()");
    assert_eq!(
        error,
        PluginError::VersionMismatch {
            plugin: path.display().to_string(),
            plugin_major: 2,
            plugin_minor: 3
        }
    );
    let message = error.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("built for plugin ABI 2.3"), "{message}");
    assert!(message.contains("speaks plugin ABI 1.0"), "{message}");
}

#[test]
fn a_header_with_the_wrong_magic_is_refused() {
    let dir = Scratch::new("magic");
    let path = build_c(
        &dir,
        "c-fixtures/broken_auth.c",
        "libbroken_auth.so",
        &["FIX_MAGIC=0x12345678u"],
    );
    let error = load_error_auth(&path, "()");
    assert!(
        matches!(
            error,
            PluginError::BadMagic {
                found: 0x1234_5678,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("is not a pop3d plugin"));
}

#[test]
fn a_library_whose_entry_symbol_does_not_match_its_name_is_refused() {
    let dir = Scratch::new("symbol");
    let path = build_c(
        &dir,
        "c-fixtures/broken_auth.c",
        "libbroken_auth.so",
        &["ENTRY=pop3d_plugin_something_else"],
    );
    let error = load_error_auth(&path, "()");
    assert_eq!(
        error,
        PluginError::NoEntrySymbol {
            plugin: path.display().to_string(),
            tried: vec![
                "pop3d_plugin_broken_auth".to_string(),
                "pop3d_plugin_entry".to_string()
            ],
        }
    );
    assert!(error
        .to_string()
        .contains("it exports none of pop3d_plugin_broken_auth, pop3d_plugin_entry"));
}

#[test]
fn a_shared_library_that_is_not_a_plugin_is_refused() {
    let dir = Scratch::new("not-a-plugin");
    let path = build_c(&dir, "c-fixtures/not_a_plugin.c", "libnot_a_plugin.so", &[]);
    let error = load_error_auth(&path, "()");
    assert!(
        matches!(error, PluginError::NoEntrySymbol { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("is not a pop3d plugin"));

    let text = dir.path("libnotes.so");
    fs::write(&text, "not ELF at all\n").unwrap();
    let error = load_error_auth(&text, "()");
    assert!(matches!(error, PluginError::Open { .. }), "{error:?}");
    assert!(error
        .to_string()
        .starts_with(&format!("cannot load plugin {}", text.display())));

    let missing = dir.path("libmissing.so");
    assert!(matches!(
        load_error_auth(&missing, "()"),
        PluginError::Open { .. }
    ));
}

#[test]
fn a_table_too_small_for_the_required_functions_is_refused() {
    let dir = Scratch::new("small-table");
    let path = build_c(
        &dir,
        "c-fixtures/broken_auth.c",
        "libbroken_auth.so",
        &["FIX_TABLE_SIZE=24"],
    );
    let error = load_error_auth(&path, "()");
    assert!(
        matches!(
            error,
            PluginError::TableTooSmall {
                size: 24,
                needed: 32,
                plugin_version: (1, 0),
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("has a 24-byte function table"));
}

#[test]
fn a_null_required_function_is_refused() {
    let dir = Scratch::new("null-fn");
    let path = build_c(
        &dir,
        "c-fixtures/broken_auth.c",
        "libbroken_auth.so",
        &["NULL_AUTHENTICATE"],
    );
    let error = load_error_auth(&path, "()");
    assert!(
        matches!(
            error,
            PluginError::MissingFunction {
                function: "authenticate",
                ..
            }
        ),
        "{error:?}"
    );
}

#[test]
fn a_plugin_may_refuse_the_host() {
    let dir = Scratch::new("refuse");
    let path = build_c(
        &dir,
        "c-fixtures/broken_auth.c",
        "libbroken_auth.so",
        &["REFUSE_HOST"],
    );
    assert!(matches!(
        load_error_auth(&path, "()"),
        PluginError::EntryRefused { .. }
    ));
}

/// A table that ends before an optional function (an older minor version)
/// has that function absent, even if memory after the table holds a
/// pointer.
#[test]
fn an_optional_function_beyond_the_table_size_is_absent() {
    let dir = Scratch::new("old-minor");
    let path = build_c(
        &dir,
        "c-fixtures/broken_auth.c",
        "libbroken_auth.so",
        &["FIX_TABLE_SIZE=32"],
    );
    let auth = plugin_host::load_auth(&path, "()").unwrap();
    assert!(!auth.supports_secrets());
    assert!(auth.secret("x").is_none());
    assert_eq!(auth.authenticate("x", b"x").unwrap().name, "x");
    assert_eq!(auth.authenticate("x", b"y"), Err(BackendError::Denied));
}

/// A plugin from a newer minor version, with a longer table, still loads;
/// what this host does not know is ignored.
#[test]
fn a_newer_minor_version_with_a_longer_table_loads() {
    let dir = Scratch::new("new-minor");
    let path = build_c(
        &dir,
        "c-fixtures/broken_auth.c",
        "libbroken_auth.so",
        &["FUTURE_TABLE", "FIX_MINOR=9"],
    );
    let auth = plugin_host::load_auth(&path, "()").unwrap();
    assert!(auth.supports_secrets());
    assert_eq!(auth.secret("carol").unwrap().unwrap().0.expose(), b"carol");
    assert_eq!(auth.authenticate("carol", b"carol").unwrap().name, "carol");
}

// ------------------------------------------------ the Rust store plugin

/// Wire size by the rule in plugins/README.md, computed independently of
/// the SDK: bare LF -> CRLF, plus CRLF when a non-empty message does not end
/// in LF.
fn expected_wire_size(message: &[u8]) -> u64 {
    let mut size = 0u64;
    for (i, &byte) in message.iter().enumerate() {
        if byte == b'\n' && (i == 0 || message[i - 1] != b'\r') {
            size += 1;
        }
        size += 1;
    }
    if message.last().is_some_and(|&last| last != b'\n') {
        size += 2;
    }
    size
}

fn read_to_end(reader: &mut dyn pop3d::backend::MessageReader) -> (Vec<u8>, usize) {
    let mut chunk = vec![0u8; 64 * 1024];
    let mut all = Vec::new();
    let mut reads = 0;
    loop {
        let n = reader.read(&mut chunk).unwrap();
        if n == 0 {
            return (all, reads);
        }
        reads += 1;
        all.extend_from_slice(&chunk[..n]);
    }
}

#[test]
fn dir_store_lists_streams_locks_and_deletes_through_the_abi() {
    capture_logs();
    let dir = Scratch::new("dir-store");
    let root = dir.path("spool");
    let carol = root.join("carol");
    fs::create_dir_all(&carol).unwrap();
    let hello = b"Subject: hello\n\nbare LF lines\n.leading dot\n".to_vec();
    let crlf = b"Subject: crlf\r\n\r\nalready CRLF\r\n".to_vec();
    let big: Vec<u8> = (0..200_000u32)
        .map(|i| {
            if i % 77 == 76 {
                b'\n'
            } else {
                b'a' + (i % 26) as u8
            }
        })
        .chain(*b"no newline at the end")
        .collect();
    fs::write(carol.join("001-hello"), &hello).unwrap();
    fs::write(carol.join("002-crlf"), &crlf).unwrap();
    fs::write(carol.join("003-big"), &big).unwrap();
    fs::write(carol.join(".hidden"), b"not a message").unwrap();
    fs::write(carol.join("has space"), b"not a valid uid").unwrap();

    let config = format!("(root: {:?})", root.display().to_string());
    let store = plugin_host::load_store(&rust_plugin("libdir_store.so"), &config).unwrap();

    let mut maildrop = store.open(&user("carol")).unwrap();
    let uids: Vec<&str> = maildrop.messages().iter().map(|m| m.uid.as_str()).collect();
    assert_eq!(uids, ["001-hello", "002-crlf", "003-big"]);
    let sizes: Vec<u64> = maildrop.messages().iter().map(|m| m.wire_size).collect();
    assert_eq!(
        sizes,
        [
            expected_wire_size(&hello),
            expected_wire_size(&crlf),
            expected_wire_size(&big)
        ]
    );
    assert_eq!(sizes[1], crlf.len() as u64);

    // Streaming returns the raw bytes, in several 64 KiB pulls for a big one.
    let (bytes, reads) = read_to_end(maildrop.open_message(2).unwrap().as_mut());
    assert_eq!(bytes, big);
    assert!(reads >= 4, "{reads} reads");
    let (bytes, _) = read_to_end(maildrop.open_message(0).unwrap().as_mut());
    assert_eq!(bytes, hello);
    assert!(matches!(
        maildrop.open_message(3),
        Err(BackendError::NotFound(_))
    ));

    // Exclusive: a second session is told the maildrop is in use.
    let second = store.open(&user("carol"));
    assert!(
        matches!(second, Err(BackendError::InUse(_))),
        "{:?}",
        second.err()
    );
    assert_eq!(second.err().unwrap().response_code(), "[IN-USE]");

    // Dropping the maildrop releases it without deleting anything.
    drop(maildrop);
    let maildrop = store.open(&user("carol")).unwrap();
    assert_eq!(maildrop.messages().len(), 3);

    // A reader outlives the commit of its maildrop.
    let mut maildrop = maildrop;
    let mut late_reader = maildrop.open_message(1).unwrap();
    maildrop.commit(&[0, 2]).unwrap();
    assert!(!carol.join("001-hello").exists());
    assert!(!carol.join("003-big").exists());
    assert_eq!(read_to_end(late_reader.as_mut()).0, crlf);
    drop(late_reader);

    // UIDLs are stable: the survivor keeps its uid in the next session.
    let maildrop = store.open(&user("carol")).unwrap();
    assert_eq!(maildrop.messages().len(), 1);
    assert_eq!(maildrop.messages()[0].uid, "002-crlf");
    assert_eq!(maildrop.messages()[0].wire_size, crlf.len() as u64);
    drop(maildrop);

    // A new user gets an empty maildrop, and names cannot escape the root.
    assert!(store.open(&user("dave")).unwrap().messages().is_empty());
    let escape = store.open(&user("../carol"));
    assert!(
        matches!(escape, Err(BackendError::PermFail(_))),
        "{:?}",
        escape.err()
    );

    // The SDK's log macros reach the host's log under the plugin's name.
    let lines = logged("pop3d::plugin::dir_store");
    assert!(
        lines.iter().any(|l| l.level == log::Level::Warn
            && l.text.contains("has space: name is not a valid UIDL")),
        "{lines:?}"
    );
    assert!(lines
        .iter()
        .any(|l| l.level == log::Level::Debug && l.text.contains("with 3 messages")));
}

/// Reads every message of a maildrop, in order.
fn read_all_messages(maildrop: &mut dyn pop3d::backend::Maildrop) -> Vec<Vec<u8>> {
    (0..maildrop.messages().len())
        .map(|index| read_to_end(maildrop.open_message(index).unwrap().as_mut()).0)
        .collect()
}

#[test]
fn the_maildir_library_and_the_built_in_maildir_are_the_same_plugin() {
    capture_logs();
    let dir = Scratch::new("maildir-so");
    let maildir = dir.path("mail/dora");
    for sub in ["cur", "new", "tmp"] {
        fs::create_dir_all(maildir.join(sub)).unwrap();
    }
    fs::write(
        maildir.join("cur/1700000001.a:2,S"),
        b"Subject: a\n\nbare LF\n",
    )
    .unwrap();
    fs::write(
        maildir.join("new/1700000002.b"),
        b"Subject: b\r\n\r\nno end",
    )
    .unwrap();
    fs::write(maildir.join("new/1700000003.c,S=0,W=0"), b"").unwrap();
    let config = format!("(root: {:?})", dir.path("mail/%u").display().to_string());

    let loaded = plugin_host::load_store(&rust_plugin("libpop3d_maildir.so"), &config).unwrap();
    let built_in =
        plugin_host::builtin_store("maildir", pop3d_maildir::pop3d_plugin_entry, &config).unwrap();
    let mut from_library = loaded.open(&user("dora")).unwrap();
    let listing = from_library.messages().to_vec();
    let messages = read_all_messages(from_library.as_mut());
    drop(from_library);
    let mut from_binary = built_in.open(&user("dora")).unwrap();
    assert_eq!(from_binary.messages(), listing.as_slice());
    assert_eq!(read_all_messages(from_binary.as_mut()), messages);

    let sizes: Vec<u64> = listing.iter().map(|m| m.wire_size).collect();
    let expected: Vec<u64> = messages.iter().map(|m| expected_wire_size(m)).collect();
    assert_eq!(sizes, expected);
    assert_eq!(sizes, [23, 22, 0]);

    // Both log under the built-in's name.
    let lines = logged("pop3d::plugin::maildir");
    assert!(
        lines.iter().any(|l| l.text.contains("libpop3d_maildir.so")),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.text.contains("built-in `maildir`")),
        "{lines:?}"
    );
}

#[test]
fn dir_store_refuses_a_bad_config_with_its_own_message() {
    let dir = Scratch::new("dir-store-config");
    let library = rust_plugin("libdir_store.so");

    let missing = dir.path("nowhere");
    let config = format!("(root: {:?})", missing.display().to_string());
    let error = plugin_host::load_store(&library, &config).unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(error, PluginError::ConfigRejected { .. }),
        "{error:?}"
    );
    assert!(
        message.contains(&format!("dir-store root {}", missing.display())),
        "{message}"
    );
    assert!(
        message.contains("fix `root` in the store config"),
        "{message}"
    );

    let error = plugin_host::load_store(&library, "(rot: \"/tmp\")").unwrap_err();
    assert!(
        error
            .to_string()
            .contains("expected (root: \"/path/to/maildrops\")"),
        "{error}"
    );
}

// ------------------------------------------------------------- panics

/// A panic inside a loaded Rust plugin comes back as PANICKED: the host
/// answers TempFail ([SYS/TEMP]), disables the instance, and logs it once.
#[test]
fn a_panicking_store_plugin_is_poisoned_and_logged_once() {
    capture_logs();
    let library = rust_plugin("libpanicky_store.so");
    let store = plugin_host::load_store(&library, "()").unwrap();
    assert!(!store.is_poisoned());

    let first = store.open(&user("erin")).err().unwrap();
    assert_eq!(first.response_code(), "[SYS/TEMP]");
    assert!(
        first.to_string().contains("panics in open (user erin)"),
        "{first}"
    );
    assert!(store.is_poisoned());

    for _ in 0..3 {
        let later = store.open(&user("erin")).err().unwrap();
        assert_eq!(later.response_code(), "[SYS/TEMP]");
        assert!(
            later.to_string().contains("is disabled after a panic"),
            "{later}"
        );
    }
    let panics: Vec<_> = logged("pop3d::plugin::panicky_store")
        .into_iter()
        .filter(|l| l.level == log::Level::Error)
        .collect();
    assert_eq!(panics.len(), 1, "{panics:?}");
    assert!(
        panics[0].text.contains("panicked and is disabled"),
        "{panics:?}"
    );
}

#[test]
fn a_plugin_that_panics_while_starting_stops_start_up() {
    let library = rust_plugin("libpanicky_store.so");
    let error = plugin_host::load_store(&library, "(panic_in_create: true)").unwrap_err();
    assert!(matches!(error, PluginError::Panicked { .. }), "{error:?}");
    assert!(
        error
            .to_string()
            .contains("panics in create, as configured"),
        "{error}"
    );
}

// ------------------------------------------------- a built-in plugin

/// An auth plugin linked into this test binary, registered as a built-in:
/// it goes through the same header, table and catch_unwind as a loaded one.
/// It accepts any user whose password is the name reversed, and panics for
/// the user "boom".
mod builtin {
    use pop3d_plugin_api::{export_auth_plugin, log_info, AuthPlugin, Error, UserInfo};

    pub struct Mirror;

    impl AuthPlugin for Mirror {
        const SUPPORTS_SECRETS: bool = true;

        fn create(config: &str) -> Result<Self, Error> {
            log_info!("mirror auth created with config {config}");
            Ok(Mirror)
        }

        fn authenticate(&self, user: &str, password: &[u8]) -> Result<UserInfo, Error> {
            if user == "boom" {
                panic!("mirror auth cannot handle boom");
            }
            if user == "huge" {
                let value = "x".repeat(70 * 1024);
                return Ok(UserInfo {
                    name: user.into(),
                    home: None,
                    extra: vec![("blob".into(), value)],
                });
            }
            let reversed: String = user.chars().rev().collect();
            if reversed.as_bytes() != password {
                return Err(Error::Denied);
            }
            Ok(UserInfo {
                name: user.to_lowercase(),
                home: Some(format!("/home/{user}")),
                extra: vec![("mail".into(), format!("maildir:/var/mail/{user}"))],
            })
        }

        fn secret(&self, user: &str) -> Result<(Vec<u8>, UserInfo), Error> {
            if user.is_empty() {
                return Err(Error::NotFound("no such user".into()));
            }
            let info = UserInfo {
                name: user.to_lowercase(),
                ..UserInfo::default()
            };
            Ok((user.chars().rev().collect::<String>().into_bytes(), info))
        }
    }

    export_auth_plugin!(mirror_auth, Mirror);
}

#[test]
fn a_builtin_rust_plugin_goes_through_the_abi_and_is_poisoned_by_a_panic() {
    capture_logs();
    let auth = plugin_host::builtin_auth("mirror-auth", builtin::pop3d_plugin_entry, "()").unwrap();
    assert!(auth.supports_secrets());
    let (secret, info) = auth.secret("Ann").unwrap().unwrap();
    assert_eq!((secret.expose(), info.name.as_str()), (&b"nnA"[..], "ann"));
    assert_eq!(auth.secret("").unwrap().unwrap_err(), BackendError::Denied);

    let info = auth.authenticate("Ann", b"nnA").unwrap();
    assert_eq!(
        info,
        UserInfo {
            name: "ann".into(),
            home: Some("/home/Ann".into()),
            extra: vec![("mail".into(), "maildir:/var/mail/Ann".into())],
        }
    );
    assert_eq!(auth.authenticate("Ann", b"Ann"), Err(BackendError::Denied));
    // The host bounds what a plugin may hand it, and says why it refused.
    let huge = auth.authenticate("huge", b"").unwrap_err();
    assert!(
        huge.to_string()
            .contains("user attributes exceed 65536 bytes"),
        "{huge}"
    );

    let panicked = auth.authenticate("boom", b"x").unwrap_err();
    assert!(matches!(panicked, BackendError::TempFail(_)));
    assert!(auth.is_poisoned());
    // Poisoned: even a correct password is now a temporary failure.
    assert_eq!(
        auth.authenticate("Ann", b"nnA")
            .unwrap_err()
            .response_code(),
        "[SYS/TEMP]"
    );

    let lines = logged("pop3d::plugin::mirror_auth");
    assert!(
        lines
            .iter()
            .any(|l| l.text == "mirror auth created with config ()"),
        "{lines:?}"
    );
    let errors = lines
        .iter()
        .filter(|l| l.level == log::Level::Error)
        .count();
    assert_eq!(errors, 1, "{lines:?}");
}

/// A store linked in as a built-in whose listing comes from its config, to
/// check what the host does with a store that reports bad UIDs or fails
/// while streaming.
mod listing_store {
    use pop3d_plugin_api::{
        export_store_plugin, Error, Maildrop, MessageInfo, StorePlugin, UserInfo,
    };
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Maildrops handed back to the plugin (released or committed).
    pub static CLOSED: AtomicUsize = AtomicUsize::new(0);

    pub struct Listing(Vec<String>);

    pub struct Drop1(Vec<MessageInfo>);

    /// Fails every read with a status of its own choosing.
    pub struct Corrupt;

    impl std::io::Read for Corrupt {
        fn read(&mut self, _buf: &mut [u8]) -> std::io::Result<usize> {
            Err(Error::PermFail("message file is corrupt".into()).into())
        }
    }

    impl StorePlugin for Listing {
        type Maildrop = Drop1;

        fn create(config: &str) -> Result<Self, Error> {
            ron::from_str(config)
                .map(Listing)
                .map_err(|e| Error::PermFail(e.to_string()))
        }

        fn open(&self, _user: &UserInfo) -> Result<Drop1, Error> {
            let listing = self.0.iter().map(|uid| MessageInfo {
                wire_size: 2,
                uid: uid.clone(),
            });
            Ok(Drop1(listing.collect()))
        }
    }

    impl Maildrop for Drop1 {
        type Reader = Corrupt;

        fn messages(&self) -> &[MessageInfo] {
            &self.0
        }

        fn open_message(&mut self, _index: usize) -> Result<Corrupt, Error> {
            Ok(Corrupt)
        }

        fn commit(self, _indices: &[usize]) -> Result<(), Error> {
            Ok(())
        }
    }

    impl Drop for Drop1 {
        fn drop(&mut self) {
            CLOSED.fetch_add(1, Ordering::SeqCst);
        }
    }

    export_store_plugin!(listing_store, Listing);
}

#[test]
fn the_host_refuses_bad_uids_and_reports_reader_failures() {
    use listing_store::CLOSED;
    let start = |uids: &str| {
        plugin_host::builtin_store("listing-store", listing_store::pop3d_plugin_entry, uids)
            .unwrap()
    };
    let closed_before = CLOSED.load(Ordering::SeqCst);

    let with_space = start(r#"["ok-1", "bad uid"]"#)
        .open(&user("fay"))
        .err()
        .unwrap();
    assert_eq!(with_space.response_code(), "[SYS/PERM]");
    assert!(
        with_space.to_string().contains("invalid uid \"bad uid\""),
        "{with_space}"
    );

    let repeated = start(r#"["same", "same"]"#)
        .open(&user("fay"))
        .err()
        .unwrap();
    assert!(
        repeated.to_string().contains("repeats the uid \"same\""),
        "{repeated}"
    );

    let too_long = format!("[{:?}]", "x".repeat(71));
    assert!(matches!(
        start(&too_long).open(&user("fay")),
        Err(BackendError::PermFail(_))
    ));
    // Each refused maildrop was handed back to the plugin, not leaked.
    assert_eq!(CLOSED.load(Ordering::SeqCst) - closed_before, 3);

    let store = start(r#"["m1"]"#);
    let mut maildrop = store.open(&user("fay")).unwrap();
    let mut reader = maildrop.open_message(0).unwrap();
    let failure = reader.read(&mut [0u8; 64]).unwrap_err();
    assert_eq!(failure.response_code(), "[SYS/PERM]");
    assert!(
        failure.to_string().contains("message file is corrupt"),
        "{failure}"
    );
    assert!(!store.is_poisoned());
}
