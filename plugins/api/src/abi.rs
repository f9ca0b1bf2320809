//! The C ABI between pop3d and its plugins, exactly as `include/pop3d_plugin.h`
//! declares it.
//!
//! Everything here crosses the boundary, so only fixed-width integers, raw
//! pointers, nullable function pointers (`Option<extern "C" fn>`, which Rust
//! guarantees has the layout of a C function pointer that may be NULL) and
//! `#[repr(C)]` structs appear. A test compiles a C file against the header
//! and compares every size and field offset with the ones below, so the two
//! cannot drift apart silently.
//!
//! # Versioning
//! [`ABI_MAJOR`] changes when anything already published changes meaning or
//! place; the host refuses a plugin with another major version.
//! [`ABI_MINOR`] grows when optional functions are appended to the end of a
//! table or fields to the end of a host-provided struct. A table carries its
//! own size, so a host reads an appended function only when the plugin's
//! table is long enough to hold it and treats it as absent (NULL) otherwise.
//! A plugin that wants a host-provided field added in minor version N checks
//! `Pop3dHost::abi_minor >= N` before touching it.
//!
//! # Memory
//! Inputs (`ptr` + `len` pairs, [`Pop3dUser`]) are borrowed for the duration
//! of one call. Outputs are written into memory the host owns: small values
//! through the host's append callbacks ([`Pop3dBuf`], [`Pop3dUserOut`],
//! [`Pop3dListSink`]), message bytes into the caller's buffer passed to
//! `read`. Whoever allocates frees: handles the plugin returns (instance,
//! maildrop, reader) go back to the plugin's own `destroy`, `commit` /
//! `release` and `close_reader`.

use std::ffi::{c_char, c_void};

/// First field of every plugin header: "POP3" in ASCII, read as a big-endian
/// number. Anything else means the symbol does not point at a pop3d header.
pub const MAGIC: u32 = 0x504F_5033;

/// Incompatible-change counter; host and plugin must agree exactly.
pub const ABI_MAJOR: u16 = 1;

/// Append-only-change counter; any combination of minors works together.
pub const ABI_MINOR: u16 = 0;

/// Symbol every plugin may export in addition to (or instead of) its own
/// `pop3d_plugin_<name>`, so an operator can rename a `.so` file freely.
/// Plugins meant to be linked into the binary as built-ins must not export
/// it, since two of them would clash.
pub const GENERIC_ENTRY_SYMBOL: &str = "pop3d_plugin_entry";

/// Prefix of the per-plugin entry symbol, followed by the plugin's name with
/// every `-` replaced by `_`.
pub const ENTRY_SYMBOL_PREFIX: &str = "pop3d_plugin_";

/// Outcome of a plugin call. Plain integers rather than an enum so that a
/// value this host does not know (from a newer plugin) is still
/// representable; the host treats unknown values as [`status::TEMP_FAIL`].
pub type Status = i32;

/// The status codes a plugin returns and the host callbacks return.
pub mod status {
    use super::Status;

    /// The call did what was asked.
    pub const OK: Status = 0;
    /// Wrong credentials or unknown user (never distinguished).
    pub const DENIED: Status = 1;
    /// The named thing (user for `get_secret`, message) does not exist.
    pub const NOT_FOUND: Status = 2;
    /// The maildrop is held by another session or program.
    pub const IN_USE: Status = 3;
    /// May work later: I/O error, timeout, overload.
    pub const TEMP_FAIL: Status = 4;
    /// Will not work until an operator acts: bad config, permissions,
    /// corrupt data, a plugin bug.
    pub const PERM_FAIL: Status = 5;
    /// The plugin caught a panic (or a C plugin an equivalent internal
    /// failure) and its state can no longer be trusted. The host stops
    /// calling that instance.
    pub const PANICKED: Status = 6;

    /// A short name for logs and error messages.
    pub fn name(status: Status) -> &'static str {
        match status {
            OK => "OK",
            DENIED => "DENIED",
            NOT_FOUND => "NOT_FOUND",
            IN_USE => "IN_USE",
            TEMP_FAIL => "TEMP_FAIL",
            PERM_FAIL => "PERM_FAIL",
            PANICKED => "PANICKED",
            _ => "unknown status",
        }
    }
}

/// `Pop3dPluginHeader::kind` of an authentication plugin; its table is a
/// [`Pop3dAuthTable`].
pub const KIND_AUTH: u32 = 1;
/// `Pop3dPluginHeader::kind` of a store plugin; its table is a
/// [`Pop3dStoreTable`].
pub const KIND_STORE: u32 = 2;

/// `Pop3dPluginHeader::flags` bit: the instance may be called from several
/// threads at once. Without it the host serializes every call into the
/// instance and the handles made from it.
pub const FLAG_THREAD_SAFE: u64 = 1;

/// Log levels of [`LogFn`], numbered as the Rust `log` crate numbers them.
pub const LOG_ERROR: u32 = 1;
/// Something is wrong but the plugin carries on.
pub const LOG_WARN: u32 = 2;
/// Normal operational events worth keeping.
pub const LOG_INFO: u32 = 3;
/// Detail for whoever is debugging a setup.
pub const LOG_DEBUG: u32 = 4;
/// Very fine detail.
pub const LOG_TRACE: u32 = 5;

/// `pop3d_plugin_<name>(host)`: the one symbol the host looks up. Returns the
/// plugin's static header, or NULL to refuse this host (for example when it
/// needs a newer minor version than `host.abi_minor`). It may be called more
/// than once; `host` stays valid for the life of the process.
pub type EntryFn = unsafe extern "C" fn(host: *const Pop3dHost) -> *const Pop3dPluginHeader;

/// Host log callback. `message` is UTF-8 (invalid bytes are replaced),
/// borrowed for the call, without a trailing newline.
pub type LogFn =
    unsafe extern "C" fn(host: *const Pop3dHost, level: u32, message: *const u8, len: u64);

/// What the host hands the entry function.
#[repr(C)]
#[derive(Debug)]
pub struct Pop3dHost {
    /// `sizeof(Pop3dHost)` as the host was built, so a plugin can tell which
    /// appended fields exist.
    pub size: u32,
    /// The host's ABI major version; a plugin may refuse a host it does not
    /// know by returning NULL.
    pub abi_major: u16,
    /// The host's ABI minor version: which appended fields and optional
    /// behaviours the host provides.
    pub abi_minor: u16,
    /// Opaque to the plugin; tells the host which plugin a log line is from.
    pub host_data: *mut c_void,
    /// Writes one line into the host's log. Never NULL.
    pub log: Option<LogFn>,
}

/// The static description a plugin returns from its entry function.
#[repr(C)]
#[derive(Debug)]
pub struct Pop3dPluginHeader {
    /// Must be [`MAGIC`].
    pub magic: u32,
    /// The ABI major version the plugin was built against.
    pub abi_major: u16,
    /// The ABI minor version the plugin was built against.
    pub abi_minor: u16,
    /// `sizeof(Pop3dPluginHeader)` as the plugin was built; the host needs at
    /// least its own size.
    pub header_size: u32,
    /// [`KIND_AUTH`] or [`KIND_STORE`].
    pub kind: u32,
    /// Bit set of `FLAG_*` values; unknown bits are ignored.
    pub flags: u64,
    /// NUL-terminated name for logs, static.
    pub name: *const c_char,
    /// The function table for `kind`; static. It starts with its own size.
    pub table: *const c_void,
}

/// A host-owned output buffer that the plugin appends bytes to. Used for
/// error text (capped by the host, excess is dropped) and secrets.
#[repr(C)]
#[derive(Debug)]
pub struct Pop3dBuf {
    /// Opaque to the plugin: the host's storage behind this buffer.
    pub host: *mut c_void,
    /// Appends `len` bytes. Returns OK, or PERM_FAIL when the host refuses
    /// more (a secret longer than the host accepts). Never NULL.
    pub append: Option<AppendFn>,
}

/// See [`Pop3dBuf::append`].
pub type AppendFn = unsafe extern "C" fn(buf: *mut Pop3dBuf, data: *const u8, len: u64) -> Status;

/// A borrowed byte string; `ptr` may be NULL only where a field says so.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Pop3dStr {
    /// First byte, valid for `len` bytes during the call.
    pub ptr: *const u8,
    /// Number of bytes; no NUL terminator is implied.
    pub len: u64,
}

/// One `key=value` attribute of a user.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Pop3dKeyValue {
    /// Attribute name, UTF-8.
    pub key: Pop3dStr,
    /// Attribute value, UTF-8.
    pub value: Pop3dStr,
}

/// What authentication learned about a user, lent to a store's `open`.
/// All strings are UTF-8.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Pop3dUser {
    /// Canonical user name.
    pub name: Pop3dStr,
    /// Home directory; `ptr` is NULL when the user database has none.
    pub home: Pop3dStr,
    /// `extra_count` extra attributes, in the order auth produced them.
    pub extra: *const Pop3dKeyValue,
    /// Number of entries at `extra`.
    pub extra_count: u64,
}

/// Host-owned receiver for the user attributes an auth plugin produces.
/// Unset name means "the name the client typed"; unset home means none.
#[repr(C)]
#[derive(Debug)]
pub struct Pop3dUserOut {
    /// Opaque to the plugin.
    pub host: *mut c_void,
    /// Sets the canonical name (UTF-8). Never NULL.
    pub set_name: Option<SetAttrFn>,
    /// Sets the home directory (UTF-8). Never NULL.
    pub set_home: Option<SetAttrFn>,
    /// Adds one extra `key=value` attribute (UTF-8). Never NULL.
    pub add_extra: Option<AddExtraFn>,
}

/// See [`Pop3dUserOut::set_name`]. Returns OK or PERM_FAIL (not UTF-8, or
/// the attributes exceed the host's limit).
pub type SetAttrFn =
    unsafe extern "C" fn(out: *mut Pop3dUserOut, value: *const u8, len: u64) -> Status;

/// See [`Pop3dUserOut::add_extra`].
pub type AddExtraFn = unsafe extern "C" fn(
    out: *mut Pop3dUserOut,
    key: *const u8,
    key_len: u64,
    value: *const u8,
    value_len: u64,
) -> Status;

/// Host-owned receiver for a maildrop listing, one call per message in
/// message-number order.
#[repr(C)]
#[derive(Debug)]
pub struct Pop3dListSink {
    /// Opaque to the plugin.
    pub host: *mut c_void,
    /// Records one message. Returns OK, or PERM_FAIL when the uid is not
    /// 1..=70 bytes of 0x21..=0x7E or repeats an earlier one; the plugin
    /// should then stop and return that status. Never NULL.
    pub message: Option<ListMessageFn>,
}

/// See [`Pop3dListSink::message`].
pub type ListMessageFn = unsafe extern "C" fn(
    sink: *mut Pop3dListSink,
    wire_size: u64,
    uid: *const u8,
    uid_len: u64,
) -> Status;

/// `create(config, config_len, err, &instance)`: parses the plugin's RON
/// config text and makes an instance. Both kinds share it.
pub type CreateFn = unsafe extern "C" fn(
    config: *const u8,
    config_len: u64,
    err: *mut Pop3dBuf,
    out_instance: *mut *mut c_void,
) -> Status;

/// `destroy(instance)`: frees an instance; called once, after every handle
/// made from it was closed.
pub type DestroyFn = unsafe extern "C" fn(instance: *mut c_void);

/// `authenticate(instance, user, password, out, err)`. DENIED for a wrong
/// password and an unknown user alike, after the same work.
pub type AuthenticateFn = unsafe extern "C" fn(
    instance: *mut c_void,
    user: *const u8,
    user_len: u64,
    password: *const u8,
    password_len: u64,
    out: *mut Pop3dUserOut,
    err: *mut Pop3dBuf,
) -> Status;

/// `get_secret(instance, user, secret, out, err)`: the user's shared
/// secret as a Dovecot-style `{SCHEME}data` string (`{PLAIN}password`,
/// `{CRAM-MD5}hex`, `{SCRAM-SHA-256}iter,salt,StoredKey,ServerKey`; see
/// plugins/README.md "Secrets"), for APOP, CRAM-MD5 and SCRAM, and the
/// user's attributes. DENIED or NOT_FOUND
/// for an unknown user.
pub type GetSecretFn = unsafe extern "C" fn(
    instance: *mut c_void,
    user: *const u8,
    user_len: u64,
    secret: *mut Pop3dBuf,
    out: *mut Pop3dUserOut,
    err: *mut Pop3dBuf,
) -> Status;

/// Functions of an auth plugin. Append-only: see the module docs.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Pop3dAuthTable {
    /// `sizeof` of the table as the plugin was built.
    pub size: u64,
    /// Required.
    pub create: Option<CreateFn>,
    /// Required.
    pub destroy: Option<DestroyFn>,
    /// Required.
    pub authenticate: Option<AuthenticateFn>,
    /// Optional (NULL: the plugin cannot reveal secrets, so APOP and
    /// CRAM-MD5 are not offered).
    pub get_secret: Option<GetSecretFn>,
}

/// `open(instance, user, err, &maildrop)`: locks the user's maildrop and
/// takes a snapshot. IN_USE when it is held elsewhere.
pub type OpenFn = unsafe extern "C" fn(
    instance: *mut c_void,
    user: *const Pop3dUser,
    err: *mut Pop3dBuf,
    out_maildrop: *mut *mut c_void,
) -> Status;

/// `list(maildrop, sink, err)`: reports the snapshot, one `sink.message`
/// call per message in order. Called once, right after `open`.
pub type ListFn = unsafe extern "C" fn(
    maildrop: *mut c_void,
    sink: *mut Pop3dListSink,
    err: *mut Pop3dBuf,
) -> Status;

/// `open_message(maildrop, index, err, &reader)`: `index` is 0-based.
pub type OpenMessageFn = unsafe extern "C" fn(
    maildrop: *mut c_void,
    index: u64,
    err: *mut Pop3dBuf,
    out_reader: *mut *mut c_void,
) -> Status;

/// `read(reader, buf, cap, &len, err)`: writes up to `cap` raw message bytes
/// into the host's `buf` and sets `len`; `len == 0` means the end.
pub type ReadFn = unsafe extern "C" fn(
    reader: *mut c_void,
    buf: *mut u8,
    cap: u64,
    out_len: *mut u64,
    err: *mut Pop3dBuf,
) -> Status;

/// `close_reader(reader)`. May come after the maildrop the reader came from
/// was committed or released: a reader keeps alive what it needs.
pub type CloseReaderFn = unsafe extern "C" fn(reader: *mut c_void);

/// `commit(maildrop, indices, count, err)`: deletes the messages at the
/// given 0-based indices (sorted, no duplicates), then releases the
/// maildrop. The handle is gone afterwards, whatever the status.
pub type CommitFn = unsafe extern "C" fn(
    maildrop: *mut c_void,
    indices: *const u64,
    count: u64,
    err: *mut Pop3dBuf,
) -> Status;

/// `release(maildrop)`: unlocks and frees the maildrop, deleting nothing.
pub type ReleaseFn = unsafe extern "C" fn(maildrop: *mut c_void);

/// Functions of a store plugin. Append-only: see the module docs.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Pop3dStoreTable {
    /// `sizeof` of the table as the plugin was built.
    pub size: u64,
    /// Required.
    pub create: Option<CreateFn>,
    /// Required.
    pub destroy: Option<DestroyFn>,
    /// Required.
    pub open: Option<OpenFn>,
    /// Required.
    pub list: Option<ListFn>,
    /// Required.
    pub open_message: Option<OpenMessageFn>,
    /// Required.
    pub read: Option<ReadFn>,
    /// Required.
    pub close_reader: Option<CloseReaderFn>,
    /// Required.
    pub commit: Option<CommitFn>,
    /// Required.
    pub release: Option<ReleaseFn>,
}

/// Size of an auth table holding every required function: the host refuses
/// shorter tables.
pub const AUTH_TABLE_REQUIRED_SIZE: usize = std::mem::offset_of!(Pop3dAuthTable, get_secret);

/// Size of a store table holding every required function.
pub const STORE_TABLE_REQUIRED_SIZE: usize = std::mem::size_of::<Pop3dStoreTable>();
