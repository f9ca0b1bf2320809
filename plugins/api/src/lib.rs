//! The SDK for pop3d plugins.
//!
//! pop3d finds out who a user is through an *auth* plugin and reads the
//! user's mail through a *store* plugin. Both sit behind one C ABI
//! ([`abi`], mirrored by `include/pop3d_plugin.h`), so a plugin may be
//! written in C or in Rust, loaded from a shared library at start-up or
//! linked into the binary as a built-in. This crate is the Rust side of that
//! ABI: implement [`AuthPlugin`] or [`StorePlugin`] with ordinary safe Rust,
//! then let [`export_auth_plugin!`] or [`export_store_plugin!`] build the
//! static header and function table. The macro wraps every call in
//! `catch_unwind`, so a panic becomes the `PANICKED` status instead of
//! undefined behaviour; the host then stops using that instance.
//!
//! # A store in a few lines
//!
//! ```
//! use pop3d_plugin_api::{export_store_plugin, Error, Maildrop, MessageInfo, StorePlugin, UserInfo};
//!
//! /// Every user has the same single, empty-bodied message.
//! pub struct OneMessage;
//!
//! pub struct Drop1 {
//!     listing: Vec<MessageInfo>,
//! }
//!
//! impl StorePlugin for OneMessage {
//!     type Maildrop = Drop1;
//!     fn create(_config: &str) -> Result<Self, Error> {
//!         Ok(OneMessage)
//!     }
//!     fn open(&self, _user: &UserInfo) -> Result<Drop1, Error> {
//!         let body: &[u8] = b"Subject: hi\r\n\r\n";
//!         let listing = vec![MessageInfo { wire_size: pop3d_plugin_api::wire_size_of(body), uid: "m1".into() }];
//!         Ok(Drop1 { listing })
//!     }
//! }
//!
//! impl Maildrop for Drop1 {
//!     type Reader = &'static [u8];
//!     fn messages(&self) -> &[MessageInfo] {
//!         &self.listing
//!     }
//!     fn open_message(&mut self, _index: usize) -> Result<Self::Reader, Error> {
//!         Ok(b"Subject: hi\r\n\r\n")
//!     }
//!     fn commit(self, _indices: &[usize]) -> Result<(), Error> {
//!         Ok(())
//!     }
//! }
//!
//! export_store_plugin!(one_message, OneMessage);
//! ```
//!
//! Built as a `cdylib`, that crate's `.so` exports `pop3d_plugin_one_message`;
//! built as an `rlib`, the binary can hand `one_message_crate::pop3d_plugin_entry`
//! to the host's `builtin_store`. One plugin per crate: the macro defines the
//! Rust item `pop3d_plugin_entry` at the place it is invoked.
//!
//! # Layout
//! - [`abi`]: the `#[repr(C)]` types, constants and function signatures.
//! - [`logging`]: logging through the host's callback into the host's log.
//! - `config` (feature `config`): reading the plugin's RON config section
//!   the way pop3d reads its own file.
//! - this file: the safe traits, the plugin-side error type and the wire
//!   size rule.
//! - `export.rs` (hidden): the trampolines the export macros instantiate.
#![deny(unsafe_op_in_unsafe_fn)]

pub mod abi;
#[cfg(feature = "config")]
pub mod config;
#[doc(hidden)]
pub mod export;
pub mod logging;
pub mod user_name;

use std::fmt;
use std::io;

pub use abi::Status;

/// Why a plugin call did not succeed; each variant is one ABI status code.
///
/// The text goes to the host's log (never to the POP3 client), so make it
/// say what the operator should look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// Wrong password or unknown user, deliberately indistinguishable.
    Denied,
    /// The thing asked for does not exist.
    NotFound(String),
    /// The maildrop is held by another session or program.
    InUse(String),
    /// May work if the client tries again later.
    TempFail(String),
    /// Will not work until an operator acts.
    PermFail(String),
}

impl Error {
    /// The ABI status code for this error.
    pub fn status(&self) -> Status {
        match self {
            Error::Denied => abi::status::DENIED,
            Error::NotFound(_) => abi::status::NOT_FOUND,
            Error::InUse(_) => abi::status::IN_USE,
            Error::TempFail(_) => abi::status::TEMP_FAIL,
            Error::PermFail(_) => abi::status::PERM_FAIL,
        }
    }

    /// The text that goes into the host's error buffer.
    pub fn message(&self) -> &str {
        match self {
            Error::Denied => "",
            Error::NotFound(text)
            | Error::InUse(text)
            | Error::TempFail(text)
            | Error::PermFail(text) => text,
        }
    }

    /// Rebuilds an error from a status a host callback returned, so it can
    /// travel back with `?`. Unknown statuses count as temporary failures,
    /// the same rule the host applies.
    pub fn from_status(status: Status, text: impl Into<String>) -> Error {
        let text = text.into();
        match status {
            abi::status::DENIED => Error::Denied,
            abi::status::NOT_FOUND => Error::NotFound(text),
            abi::status::IN_USE => Error::InUse(text),
            abi::status::PERM_FAIL => Error::PermFail(text),
            _ => Error::TempFail(text),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Denied => write!(f, "authentication failed"),
            Error::NotFound(text) => write!(f, "not found: {text}"),
            Error::InUse(text) => write!(f, "in use: {text}"),
            Error::TempFail(text) => write!(f, "temporary failure: {text}"),
            Error::PermFail(text) => write!(f, "permanent failure: {text}"),
        }
    }
}

impl std::error::Error for Error {}

/// I/O errors become `NotFound` (the file went away), `PermFail` (the
/// operator must fix permissions) or `TempFail` (anything else may pass).
impl From<io::Error> for Error {
    fn from(error: io::Error) -> Error {
        // A reader may smuggle one of our errors through `io::Read`.
        if error.get_ref().is_some_and(|inner| inner.is::<Error>()) {
            if let Some(inner) = error.into_inner() {
                if let Ok(ours) = inner.downcast::<Error>() {
                    return *ours;
                }
            }
            return Error::TempFail("I/O error".into());
        }
        match error.kind() {
            io::ErrorKind::NotFound => Error::NotFound(error.to_string()),
            io::ErrorKind::PermissionDenied => Error::PermFail(error.to_string()),
            _ => Error::TempFail(error.to_string()),
        }
    }
}

/// Lets a message reader, which speaks `io::Read`, report a specific status:
/// `Err(Error::PermFail(..).into())` arrives at the host as PERM_FAIL.
impl From<Error> for io::Error {
    fn from(error: Error) -> io::Error {
        io::Error::other(error)
    }
}

/// What authentication learned about a user; the host passes it on to the
/// store. Mirrors the host's own `UserInfo`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserInfo {
    /// Canonical user name, which the store and the logs use.
    pub name: String,
    /// Home directory, when the user database has one.
    pub home: Option<String>,
    /// Extra `key=value` attributes for the store (a maildrop path, say).
    pub extra: Vec<(String, String)>,
}

/// One message of a maildrop snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageInfo {
    /// The exact number of octets RETR transmits; see [`WireSize`].
    pub wire_size: u64,
    /// Unique id: 1 to 70 bytes in 0x21..=0x7E, unique in the maildrop and
    /// stable for the life of the message, across sessions and restarts.
    pub uid: String,
}

/// An authentication plugin.
///
/// One instance serves every worker thread at once (hence `Sync`); the
/// export macro declares it thread-safe.
pub trait AuthPlugin: Send + Sync + Sized + 'static {
    /// Whether [`AuthPlugin::secret`] is implemented. When false the table's
    /// `get_secret` is NULL and the host offers no APOP or CRAM-MD5.
    const SUPPORTS_SECRETS: bool = false;

    /// Builds an instance from the plugin's config section, as RON text. An
    /// `Err` stops the server from starting and shows the operator the text.
    fn create(config: &str) -> Result<Self, Error>;

    /// Checks a password. Wrong passwords and unknown users both return
    /// [`Error::Denied`], after the same amount of work.
    fn authenticate(&self, user: &str, password: &[u8]) -> Result<UserInfo, Error>;

    /// The user's shared secret as a Dovecot-style `{SCHEME}data` string
    /// (`{PLAIN}password`, `{CRAM-MD5}hex`, `{SCRAM-SHA-256}...`; see the
    /// plugin guide, "Secrets") and attributes, for challenge mechanisms. Only called when [`AuthPlugin::SUPPORTS_SECRETS`] is true.
    fn secret(&self, user: &str) -> Result<(Vec<u8>, UserInfo), Error> {
        let _ = user;
        Err(Error::PermFail(
            "this auth plugin cannot reveal secrets".into(),
        ))
    }
}

/// A store plugin: opens maildrops.
///
/// One instance serves every worker thread at once (hence `Sync`).
pub trait StorePlugin: Send + Sync + Sized + 'static {
    /// An open, exclusively held maildrop.
    type Maildrop: Maildrop;

    /// Builds an instance from the plugin's config section, as RON text.
    fn create(config: &str) -> Result<Self, Error>;

    /// Locks `user`'s maildrop and takes a snapshot of it. A maildrop held
    /// elsewhere is [`Error::InUse`].
    fn open(&self, user: &UserInfo) -> Result<Self::Maildrop, Error>;
}

/// An open maildrop. Dropping it releases the lock without deleting
/// anything; only [`Maildrop::commit`] deletes. Used by one thread at a
/// time, possibly a different one from call to call.
pub trait Maildrop: Send + 'static {
    /// Raw bytes of one message (LF or CRLF line ends, as stored). It must
    /// not borrow the maildrop: the host may close a reader after the
    /// maildrop it came from was committed or released.
    type Reader: io::Read + Send + 'static;

    /// The snapshot taken at open, in message-number order. It must not
    /// change while the maildrop is open.
    fn messages(&self) -> &[MessageInfo];

    /// Opens message `index` (0-based, already checked to be in range).
    fn open_message(&mut self, index: usize) -> Result<Self::Reader, Error>;

    /// Deletes the messages at `indices` (0-based, sorted, no duplicates,
    /// in range), then releases the maildrop.
    fn commit(self, indices: &[usize]) -> Result<(), Error>;
}

/// Counts a message's size on the wire while its raw bytes stream past.
///
/// The rule (the same for every store, and the one pop3d's encoder applies,
/// so STAT, LIST and RETR agree): every LF not preceded by CR becomes CRLF,
/// and a CRLF is added when a *non-empty* message does not end in LF. An
/// empty message has wire size 0 (RETR sends `+OK 0 octets` and the
/// terminating `.` line only). Dot-stuffing is not counted. A CR and its LF
/// may arrive in different chunks.
#[derive(Debug, Clone, Default)]
pub struct WireSize {
    /// Octets counted so far, conversions included.
    total: u64,
    /// The last byte seen, because a LF at the start of a chunk needs it.
    last: Option<u8>,
}

impl WireSize {
    /// A counter that has seen nothing.
    pub fn new() -> WireSize {
        WireSize::default()
    }

    /// Counts the next chunk of raw bytes.
    pub fn update(&mut self, chunk: &[u8]) {
        let (Some(&first), Some(&last)) = (chunk.first(), chunk.last()) else {
            return;
        };
        // Bare LFs = all LFs - those after a CR. Counted as whole-slice
        // passes (which compile to vector code) rather than byte by byte,
        // since a store may size every message of a large maildrop.
        let line_feeds = chunk.iter().filter(|&&byte| byte == b'\n').count();
        let after_cr = chunk.windows(2).filter(|pair| pair == b"\r\n").count();
        let split_crlf = usize::from(first == b'\n' && self.last == Some(b'\r'));
        let bare = line_feeds - after_cr - split_crlf;
        self.total += (chunk.len() + bare) as u64;
        self.last = Some(last);
    }

    /// The wire size of everything counted.
    pub fn finish(&self) -> u64 {
        match self.last {
            // Nothing seen: an empty message gets no line end.
            None | Some(b'\n') => self.total,
            Some(_) => self.total + 2,
        }
    }
}

/// The wire size of a message held in memory; see [`WireSize`].
pub fn wire_size_of(message: &[u8]) -> u64 {
    let mut counter = WireSize::new();
    counter.update(message);
    counter.finish()
}

/// The wire size of a message read to its end in 64 KiB chunks; see
/// [`WireSize`].
pub fn wire_size_of_reader(mut reader: impl io::Read) -> io::Result<u64> {
    let mut counter = WireSize::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        match reader.read(&mut chunk) {
            Ok(0) => return Ok(counter.finish()),
            Ok(n) => counter.update(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Builds the static header and function table of an auth plugin from an
/// [`AuthPlugin`] implementation and exports its entry symbol
/// `pop3d_plugin_<name>`.
///
/// `export_auth_plugin!(my_auth, MyAuth);` defines
/// `pub unsafe extern "C" fn pop3d_plugin_entry` (symbol
/// `pop3d_plugin_my_auth`) where it is invoked. Every call through the
/// table runs inside `catch_unwind`; a panic returns `PANICKED`.
///
/// The header's name, which pop3d's log shows, is `my_auth`; a third
/// argument sets another (`export_auth_plugin!(my_auth, MyAuth, "my-auth")`),
/// for a name a symbol cannot spell.
#[macro_export]
macro_rules! export_auth_plugin {
    ($name:ident, $plugin:ty) => {
        $crate::export_auth_plugin!($name, $plugin, stringify!($name));
    };
    ($name:ident, $plugin:ty, $display:expr) => {
        $crate::__export_plugin_common!($name, $plugin);

        /// Entry point of this pop3d auth plugin (see `pop3d_plugin_api`).
        ///
        /// # Safety
        /// `host` is NULL or points to a `Pop3dHost` that stays valid for
        /// the rest of the process.
        #[allow(unsafe_code)]
        #[export_name = concat!("pop3d_plugin_", stringify!($name))]
        pub unsafe extern "C" fn pop3d_plugin_entry(
            host: *const $crate::abi::Pop3dHost,
        ) -> *const $crate::abi::Pop3dPluginHeader {
            static TABLE: $crate::abi::Pop3dAuthTable = $crate::export::auth_table::<$plugin>();
            static HEADER: $crate::export::StaticHeader = $crate::export::StaticHeader::new(
                $crate::abi::KIND_AUTH,
                concat!($display, "\0"),
                &TABLE as *const $crate::abi::Pop3dAuthTable as *const ::std::ffi::c_void,
            );
            // SAFETY: this function's own contract is the one register_host
            // needs.
            unsafe { $crate::export::register_host::<$plugin>(host) };
            HEADER.as_ptr()
        }
    };
}

/// Builds the static header and function table of a store plugin from a
/// [`StorePlugin`] implementation and exports its entry symbol
/// `pop3d_plugin_<name>`. See [`export_auth_plugin!`], also for the
/// optional third argument.
#[macro_export]
macro_rules! export_store_plugin {
    ($name:ident, $plugin:ty) => {
        $crate::export_store_plugin!($name, $plugin, stringify!($name));
    };
    ($name:ident, $plugin:ty, $display:expr) => {
        $crate::__export_plugin_common!($name, $plugin);

        /// Entry point of this pop3d store plugin (see `pop3d_plugin_api`).
        ///
        /// # Safety
        /// `host` is NULL or points to a `Pop3dHost` that stays valid for
        /// the rest of the process.
        #[allow(unsafe_code)]
        #[export_name = concat!("pop3d_plugin_", stringify!($name))]
        pub unsafe extern "C" fn pop3d_plugin_entry(
            host: *const $crate::abi::Pop3dHost,
        ) -> *const $crate::abi::Pop3dPluginHeader {
            static TABLE: $crate::abi::Pop3dStoreTable = $crate::export::store_table::<$plugin>();
            static HEADER: $crate::export::StaticHeader = $crate::export::StaticHeader::new(
                $crate::abi::KIND_STORE,
                concat!($display, "\0"),
                &TABLE as *const $crate::abi::Pop3dStoreTable as *const ::std::ffi::c_void,
            );
            // SAFETY: this function's own contract is the one register_host
            // needs.
            unsafe { $crate::export::register_host::<$plugin>(host) };
            HEADER.as_ptr()
        }
    };
}

/// Shared part of the export macros: gives the plugin type its own slot for
/// the host pointer, so that several plugins linked into one binary log
/// under their own names.
#[doc(hidden)]
#[macro_export]
macro_rules! __export_plugin_common {
    ($name:ident, $plugin:ty) => {
        impl $crate::export::Exported for $plugin {
            fn host_slot() -> &'static $crate::export::HostSlot {
                static SLOT: $crate::export::HostSlot = $crate::export::HostSlot::new();
                &SLOT
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_size_follows_the_crlf_rule() {
        let cases: &[(&[u8], u64)] = &[
            (b"", 0),
            (b"a", 3),
            (b"\r", 3),
            (b"\n", 2),
            (b"a\n", 3),
            (b"a\r\n", 3),
            (b"a\nb\n", 6),
            (b"a\r\nb", 6),
            (b"\n\n", 4),
            (b"a\rb\n", 5),
            (b".\n", 3),
        ];
        for &(message, expected) in cases {
            assert_eq!(
                wire_size_of(message),
                expected,
                "{:?}",
                String::from_utf8_lossy(message)
            );
        }
    }

    #[test]
    fn wire_size_sees_a_crlf_split_across_chunks() {
        let whole = b"line one\r\nline two\nend\r\n";
        for split in 0..=whole.len() {
            let mut counter = WireSize::new();
            counter.update(&whole[..split]);
            counter.update(&[]);
            counter.update(&whole[split..]);
            assert_eq!(counter.finish(), wire_size_of(whole), "split at {split}");
        }
        assert_eq!(wire_size_of(whole), 25);
    }

    #[test]
    fn an_empty_message_stays_empty_however_it_arrives() {
        let mut counter = WireSize::new();
        counter.update(&[]);
        counter.update(&[]);
        assert_eq!(counter.finish(), 0);
        assert_eq!(wire_size_of_reader(io::empty()).unwrap(), 0);
    }

    /// Hands out at most `step` bytes a read, so CR and LF land on either
    /// side of read boundaries.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl io::Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    /// The wire size by the definition, one byte at a time.
    fn reference_wire_size(data: &[u8]) -> u64 {
        let mut size = 0;
        for (i, &b) in data.iter().enumerate() {
            size += if b == b'\n' && (i == 0 || data[i - 1] != b'\r') {
                2
            } else {
                1
            };
        }
        if data.last().is_some_and(|&b| b != b'\n') {
            size += 2;
        }
        size
    }

    #[test]
    fn wire_size_of_a_reader_is_right_across_read_boundaries() {
        let pieces: [&[u8]; 6] = [b"\r\n", b"\n", b"\r", b"ab", b".", b"\n\r"];
        let mut data = Vec::new();
        let mut state: u32 = 12345;
        for _ in 0..80_000 {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            data.extend_from_slice(pieces[(state >> 16) as usize % pieces.len()]);
        }
        // A CRLF exactly on the 64 KiB read boundary too.
        data[64 * 1024 - 1] = b'\r';
        data[64 * 1024] = b'\n';
        let expected = reference_wire_size(&data);
        assert_eq!(wire_size_of_reader(data.as_slice()).unwrap(), expected);
        for step in [1, 2, 3, 4096] {
            let trickle = Trickle { data: &data, step };
            assert_eq!(
                wire_size_of_reader(trickle).unwrap(),
                expected,
                "step {step}"
            );
        }
    }

    #[test]
    fn io_errors_keep_a_smuggled_status() {
        let smuggled: io::Error = Error::PermFail("corrupt".into()).into();
        assert_eq!(Error::from(smuggled), Error::PermFail("corrupt".into()));
        let gone = io::Error::from(io::ErrorKind::NotFound);
        assert_eq!(Error::from(gone).status(), abi::status::NOT_FOUND);
    }

    #[test]
    fn unknown_statuses_are_temporary() {
        assert_eq!(Error::from_status(77, "x"), Error::TempFail("x".into()));
        assert_eq!(
            Error::from_status(abi::status::IN_USE, "x").status(),
            abi::status::IN_USE
        );
    }
}
