//! The plugin side of the ABI: `extern "C"` trampolines that turn host calls
//! into calls on an [`AuthPlugin`] or [`StorePlugin`] implementation.
//!
//! The export macros instantiate these generics for one plugin type and put
//! pointers to them in a static table. Every trampoline:
//! - runs the plugin's code inside `catch_unwind`, so no panic unwinds into
//!   the host (which would be undefined behaviour) and the host learns of it
//!   as `PANICKED`;
//! - marks the plugin as the current one for logging;
//! - turns borrowed `ptr`/`len` inputs into slices and `Error`s into a
//!   status plus text in the host's error buffer.
//!
//! Handles are `Box`es turned into raw pointers: an instance is a
//! `Box<P>`, a maildrop a `Box<P::Maildrop>`, a reader a
//! `Box<<P::Maildrop as Maildrop>::Reader>`. The host gives each back
//! exactly once to the function that frees it.
//!
//! Not public API: only the macros should name anything here.

use crate::abi::{
    self, status, Pop3dAuthTable, Pop3dBuf, Pop3dHost, Pop3dListSink, Pop3dPluginHeader,
    Pop3dStoreTable, Pop3dStr, Pop3dUser, Pop3dUserOut, Status,
};
use crate::logging;
use crate::{AuthPlugin, Error, Maildrop, StorePlugin, UserInfo};
use std::any::Any;
use std::ffi::{c_char, c_void};
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

/// Gives each exported plugin type a slot for its host pointer. Implemented
/// by the export macros.
pub trait Exported: 'static {
    /// The slot holding the host pointer passed to this plugin's entry.
    fn host_slot() -> &'static HostSlot;
}

/// Where one plugin keeps the host pointer its entry function received.
#[derive(Debug)]
pub struct HostSlot(AtomicPtr<Pop3dHost>);

impl HostSlot {
    /// An empty slot, for a `static`.
    #[allow(clippy::new_without_default)]
    pub const fn new() -> HostSlot {
        HostSlot(AtomicPtr::new(ptr::null_mut()))
    }

    fn get(&self) -> *const Pop3dHost {
        self.0.load(Ordering::Acquire)
    }
}

/// Records the host pointer handed to `P`'s entry function.
///
/// # Safety
/// `host` is NULL or points to a `Pop3dHost` that stays valid for the rest
/// of the process (the host leaks it on purpose).
pub unsafe fn register_host<P: Exported>(host: *const Pop3dHost) {
    P::host_slot().0.store(host.cast_mut(), Ordering::Release);
    logging::remember_last_host(host);
}

/// A plugin header that can live in a `static` despite its raw pointers.
#[repr(transparent)]
#[derive(Debug)]
pub struct StaticHeader(Pop3dPluginHeader);

// SAFETY: the header is never written after construction and its pointers
// point to immutable statics (a string literal and a table), so sharing it
// between threads is sound.
unsafe impl Sync for StaticHeader {}

impl StaticHeader {
    /// A header for this SDK's ABI version. `name` must end in a NUL byte.
    pub const fn new(kind: u32, name: &'static str, table: *const c_void) -> StaticHeader {
        let bytes = name.as_bytes();
        assert!(
            !bytes.is_empty() && bytes[bytes.len() - 1] == 0,
            "plugin name must be NUL-terminated"
        );
        StaticHeader(Pop3dPluginHeader {
            magic: abi::MAGIC,
            abi_major: abi::ABI_MAJOR,
            abi_minor: abi::ABI_MINOR,
            header_size: std::mem::size_of::<Pop3dPluginHeader>() as u32,
            kind,
            // The traits require `Sync`, so Rust plugins are thread-safe.
            flags: abi::FLAG_THREAD_SAFE,
            name: bytes.as_ptr() as *const c_char,
            table,
        })
    }

    /// The pointer the entry function returns.
    pub const fn as_ptr(&'static self) -> *const Pop3dPluginHeader {
        &self.0
    }
}

/// The auth table for `P`.
pub const fn auth_table<P: AuthPlugin + Exported>() -> Pop3dAuthTable {
    Pop3dAuthTable {
        size: std::mem::size_of::<Pop3dAuthTable>() as u64,
        create: Some(auth_create::<P> as abi::CreateFn),
        destroy: Some(destroy_instance::<P> as abi::DestroyFn),
        authenticate: Some(auth_authenticate::<P> as abi::AuthenticateFn),
        get_secret: if P::SUPPORTS_SECRETS {
            Some(auth_get_secret::<P> as abi::GetSecretFn)
        } else {
            None
        },
    }
}

/// The store table for `P`.
pub const fn store_table<P: StorePlugin + Exported>() -> Pop3dStoreTable {
    Pop3dStoreTable {
        size: std::mem::size_of::<Pop3dStoreTable>() as u64,
        create: Some(store_create::<P> as abi::CreateFn),
        destroy: Some(destroy_instance::<P> as abi::DestroyFn),
        open: Some(store_open::<P> as abi::OpenFn),
        list: Some(store_list::<P> as abi::ListFn),
        open_message: Some(store_open_message::<P> as abi::OpenMessageFn),
        read: Some(store_read::<P> as abi::ReadFn),
        close_reader: Some(store_close_reader::<P> as abi::CloseReaderFn),
        commit: Some(store_commit::<P> as abi::CommitFn),
        release: Some(store_release::<P> as abi::ReleaseFn),
    }
}

type ReaderOf<P> = <<P as StorePlugin>::Maildrop as Maildrop>::Reader;

/// Runs one plugin call: logging attribution, panic capture, error text.
fn guarded<P: Exported>(err: *mut Pop3dBuf, call: impl FnOnce() -> Result<(), Error>) -> Status {
    let _scope = logging::enter_call(P::host_slot().get());
    match catch_unwind(AssertUnwindSafe(call)) {
        Ok(Ok(())) => status::OK,
        Ok(Err(error)) => {
            write_error(err, error.message());
            error.status()
        }
        Err(payload) => {
            write_error(err, &format!("plugin panicked: {}", panic_text(&payload)));
            drop_payload(payload);
            status::PANICKED
        }
    }
}

/// Runs a call that cannot report failure (freeing a handle). A panic is
/// logged; nothing else can be done with it.
fn guarded_void<P: Exported>(what: &str, call: impl FnOnce()) {
    let _scope = logging::enter_call(P::host_slot().get());
    if let Err(payload) = catch_unwind(AssertUnwindSafe(call)) {
        logging::log(
            logging::Level::Error,
            format_args!("plugin panicked in {what}: {}", panic_text(&payload)),
        );
        drop_payload(payload);
    }
}

fn panic_text(payload: &Box<dyn Any + Send>) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_string()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "(no message)".to_string()
    }
}

/// Drops a panic payload without letting a panicking destructor escape.
fn drop_payload(payload: Box<dyn Any + Send>) {
    if let Err(second) = catch_unwind(AssertUnwindSafe(move || drop(payload))) {
        std::mem::forget(second);
    }
}

/// Puts `text` into the host's error buffer, if the host gave one.
fn write_error(err: *mut Pop3dBuf, text: &str) {
    if err.is_null() || text.is_empty() {
        return;
    }
    // SAFETY: a non-NULL `err` is a host-owned buffer valid for this call.
    let append = unsafe { (*err).append };
    if let Some(append) = append {
        // SAFETY: the host's callback borrows `text` only for the call. The
        // status is ignored: error text is best-effort.
        unsafe { append(err, text.as_ptr(), text.len() as u64) };
    }
}

fn host_bug(what: &str) -> Error {
    Error::PermFail(format!("host passed an invalid {what} (pop3d bug)"))
}

/// Borrows `len` bytes at `ptr` for the current call.
///
/// # Safety
/// `ptr` is NULL only if `len` is 0, and otherwise valid for `len` bytes
/// for the rest of the call.
unsafe fn bytes_arg<'a>(ptr: *const u8, len: u64, what: &str) -> Result<&'a [u8], Error> {
    if len == 0 {
        return Ok(&[]);
    }
    let len = usize::try_from(len).map_err(|_| host_bug(what))?;
    if ptr.is_null() {
        return Err(host_bug(what));
    }
    // SAFETY: the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// Like [`bytes_arg`], for text.
///
/// # Safety
/// As [`bytes_arg`].
unsafe fn str_arg<'a>(ptr: *const u8, len: u64, what: &str) -> Result<&'a str, Error> {
    // SAFETY: forwarded contract.
    let bytes = unsafe { bytes_arg(ptr, len, what) }?;
    std::str::from_utf8(bytes).map_err(|_| Error::PermFail(format!("{what} is not UTF-8")))
}

/// # Safety
/// As [`bytes_arg`], for a [`Pop3dStr`].
unsafe fn pop3d_str<'a>(text: Pop3dStr, what: &str) -> Result<&'a str, Error> {
    // SAFETY: forwarded contract.
    unsafe { str_arg(text.ptr, text.len, what) }
}

/// Stores a new handle through a host out-pointer.
///
/// # Safety
/// `out` is NULL or valid for writing one pointer.
unsafe fn put_handle<T>(out: *mut *mut c_void, value: T) -> Result<(), Error> {
    if out.is_null() {
        return Err(host_bug("out-pointer"));
    }
    // SAFETY: checked non-NULL; the caller's contract makes it writable.
    unsafe { *out = Box::into_raw(Box::new(value)).cast() };
    Ok(())
}

/// Borrows a handle made by [`put_handle`].
///
/// # Safety
/// `handle` is NULL or came from `put_handle::<T>` and was not freed, and no
/// other reference to it is live (the host uses a handle from one thread at
/// a time; instances are only borrowed shared).
unsafe fn handle_mut<'a, T>(handle: *mut c_void) -> Result<&'a mut T, Error> {
    if handle.is_null() {
        return Err(host_bug("handle"));
    }
    // SAFETY: the caller's contract.
    Ok(unsafe { &mut *handle.cast::<T>() })
}

/// # Safety
/// `handle` is NULL or came from `put_handle::<T>` and was not freed.
unsafe fn handle_ref<'a, T>(handle: *mut c_void) -> Result<&'a T, Error> {
    if handle.is_null() {
        return Err(host_bug("handle"));
    }
    // SAFETY: the caller's contract; shared access only.
    Ok(unsafe { &*handle.cast::<T>() })
}

/// Takes back ownership of a handle made by [`put_handle`].
///
/// # Safety
/// `handle` is NULL or came from `put_handle::<T>`, was not freed, and is
/// not used again.
unsafe fn take_handle<T>(handle: *mut c_void) -> Option<Box<T>> {
    if handle.is_null() {
        return None;
    }
    // SAFETY: the caller's contract: this is the Box we leaked.
    Some(unsafe { Box::from_raw(handle.cast::<T>()) })
}

/// Sends a user's attributes to the host's receiver.
///
/// # Safety
/// `out` is a host-owned receiver valid for this call.
unsafe fn write_user(out: *mut Pop3dUserOut, user: &UserInfo) -> Result<(), Error> {
    if out.is_null() {
        return Err(host_bug("user receiver"));
    }
    // SAFETY: checked non-NULL, valid for the call by the caller's contract.
    let (set_name, set_home, add_extra) =
        unsafe { ((*out).set_name, (*out).set_home, (*out).add_extra) };
    let (Some(set_name), Some(set_home), Some(add_extra)) = (set_name, set_home, add_extra) else {
        return Err(host_bug("user receiver"));
    };
    let check = |status: Status, what: &str| {
        if status == status::OK {
            Ok(())
        } else {
            Err(Error::from_status(
                status,
                format!("host refused the user's {what}"),
            ))
        }
    };
    let name = &user.name;
    check(
        // SAFETY: a host callback from a receiver valid for this call; it
        // borrows the string only for the call.
        unsafe { set_name(out, name.as_ptr(), name.len() as u64) },
        "name",
    )?;
    if let Some(home) = &user.home {
        check(
            // SAFETY: as for set_name.
            unsafe { set_home(out, home.as_ptr(), home.len() as u64) },
            "home",
        )?;
    }
    for (key, value) in &user.extra {
        // SAFETY: as for set_name.
        let status = unsafe {
            add_extra(
                out,
                key.as_ptr(),
                key.len() as u64,
                value.as_ptr(),
                value.len() as u64,
            )
        };
        check(status, "extra attributes")?;
    }
    Ok(())
}

/// Copies a borrowed `Pop3dUser` into an owned [`UserInfo`].
///
/// # Safety
/// `user` is a host-owned struct valid for this call, as are the strings
/// and the array it points to.
unsafe fn read_user(user: *const Pop3dUser) -> Result<UserInfo, Error> {
    if user.is_null() {
        return Err(host_bug("user"));
    }
    // SAFETY: checked non-NULL; the caller's contract covers what it points to.
    let user = unsafe { *user };
    // SAFETY: the caller's contract makes the strings valid for the call.
    let name = unsafe { pop3d_str(user.name, "user name") }?.to_string();
    let home = if user.home.ptr.is_null() {
        None
    } else {
        // SAFETY: as for the name; non-NULL means present.
        Some(unsafe { pop3d_str(user.home, "home") }?.to_string())
    };
    let count = usize::try_from(user.extra_count).map_err(|_| host_bug("attribute count"))?;
    let mut extra = Vec::with_capacity(count.min(1024));
    if count > 0 {
        if user.extra.is_null() {
            return Err(host_bug("attribute array"));
        }
        // SAFETY: non-NULL, `count` entries by the caller's contract.
        let pairs = unsafe { std::slice::from_raw_parts(user.extra, count) };
        for pair in pairs {
            // SAFETY: each pair's strings are valid for the call, as above.
            let key = unsafe { pop3d_str(pair.key, "attribute name") }?;
            // SAFETY: as for the key.
            let value = unsafe { pop3d_str(pair.value, "attribute value") }?;
            extra.push((key.to_string(), value.to_string()));
        }
    }
    Ok(UserInfo { name, home, extra })
}

unsafe extern "C" fn auth_create<P: AuthPlugin + Exported>(
    config: *const u8,
    config_len: u64,
    err: *mut Pop3dBuf,
    out_instance: *mut *mut c_void,
) -> Status {
    guarded::<P>(err, || {
        // SAFETY: ABI contract: config is borrowed for the call.
        let text = unsafe { str_arg(config, config_len, "config") }?;
        let instance = P::create(text)?;
        // SAFETY: ABI contract: out_instance is writable.
        unsafe { put_handle(out_instance, instance) }
    })
}

unsafe extern "C" fn store_create<P: StorePlugin + Exported>(
    config: *const u8,
    config_len: u64,
    err: *mut Pop3dBuf,
    out_instance: *mut *mut c_void,
) -> Status {
    guarded::<P>(err, || {
        // SAFETY: ABI contract: config is borrowed for the call.
        let text = unsafe { str_arg(config, config_len, "config") }?;
        let instance = P::create(text)?;
        // SAFETY: ABI contract: out_instance is writable.
        unsafe { put_handle(out_instance, instance) }
    })
}

unsafe extern "C" fn destroy_instance<P: Exported>(instance: *mut c_void) {
    guarded_void::<P>("destroy", || {
        // SAFETY: ABI contract: the instance came from create and is
        // destroyed once, after every handle made from it was closed.
        drop(unsafe { take_handle::<P>(instance) });
    });
}

unsafe extern "C" fn auth_authenticate<P: AuthPlugin + Exported>(
    instance: *mut c_void,
    user: *const u8,
    user_len: u64,
    password: *const u8,
    password_len: u64,
    out: *mut Pop3dUserOut,
    err: *mut Pop3dBuf,
) -> Status {
    guarded::<P>(err, || {
        // SAFETY: ABI contract: a live instance from create, inputs borrowed
        // for the call, `out` valid for the call.
        unsafe {
            let plugin = handle_ref::<P>(instance)?;
            let user = str_arg(user, user_len, "user name").map_err(|_| Error::Denied)?;
            let password = bytes_arg(password, password_len, "password")?;
            let info = plugin.authenticate(user, password)?;
            write_user(out, &info)
        }
    })
}

unsafe extern "C" fn auth_get_secret<P: AuthPlugin + Exported>(
    instance: *mut c_void,
    user: *const u8,
    user_len: u64,
    secret: *mut Pop3dBuf,
    out: *mut Pop3dUserOut,
    err: *mut Pop3dBuf,
) -> Status {
    guarded::<P>(err, || {
        // SAFETY: ABI contract, as for authenticate; `secret` is a host
        // buffer valid for the call.
        unsafe {
            let plugin = handle_ref::<P>(instance)?;
            let user = str_arg(user, user_len, "user name").map_err(|_| Error::Denied)?;
            let (mut bytes, info) = plugin.secret(user)?;
            let append = if secret.is_null() {
                None
            } else {
                (*secret).append
            };
            let Some(append) = append else {
                return Err(host_bug("secret buffer"));
            };
            let status = append(secret, bytes.as_ptr(), bytes.len() as u64);
            // Leave no copy of the secret in freed memory.
            bytes.fill(0);
            std::hint::black_box(&bytes);
            if status != status::OK {
                return Err(Error::from_status(status, "host refused the secret"));
            }
            write_user(out, &info)
        }
    })
}

unsafe extern "C" fn store_open<P: StorePlugin + Exported>(
    instance: *mut c_void,
    user: *const Pop3dUser,
    err: *mut Pop3dBuf,
    out_maildrop: *mut *mut c_void,
) -> Status {
    guarded::<P>(err, || {
        // SAFETY: ABI contract: a live instance, a user borrowed for the
        // call, a writable out-pointer.
        unsafe {
            let plugin = handle_ref::<P>(instance)?;
            let user = read_user(user)?;
            let maildrop = plugin.open(&user)?;
            put_handle(out_maildrop, maildrop)
        }
    })
}

unsafe extern "C" fn store_list<P: StorePlugin + Exported>(
    maildrop: *mut c_void,
    sink: *mut Pop3dListSink,
    err: *mut Pop3dBuf,
) -> Status {
    guarded::<P>(err, || {
        // SAFETY: ABI contract: a live maildrop used by one thread at a
        // time, a sink valid for the call.
        unsafe {
            let maildrop = handle_ref::<P::Maildrop>(maildrop)?;
            let message_fn = if sink.is_null() {
                None
            } else {
                (*sink).message
            };
            let Some(message_fn) = message_fn else {
                return Err(host_bug("list sink"));
            };
            for message in maildrop.messages() {
                let uid = message.uid.as_bytes();
                let status = message_fn(sink, message.wire_size, uid.as_ptr(), uid.len() as u64);
                if status != status::OK {
                    return Err(Error::from_status(
                        status,
                        format!("host refused message uid {:?}", message.uid),
                    ));
                }
            }
            Ok(())
        }
    })
}

unsafe extern "C" fn store_open_message<P: StorePlugin + Exported>(
    maildrop: *mut c_void,
    index: u64,
    err: *mut Pop3dBuf,
    out_reader: *mut *mut c_void,
) -> Status {
    guarded::<P>(err, || {
        // SAFETY: ABI contract: a live maildrop used by one thread at a
        // time, a writable out-pointer.
        unsafe {
            let maildrop = handle_mut::<P::Maildrop>(maildrop)?;
            let count = maildrop.messages().len();
            let index = usize::try_from(index)
                .ok()
                .filter(|&i| i < count)
                .ok_or_else(|| Error::NotFound(format!("message index {index} of {count}")))?;
            let reader = maildrop.open_message(index)?;
            put_handle::<ReaderOf<P>>(out_reader, reader)
        }
    })
}

unsafe extern "C" fn store_read<P: StorePlugin + Exported>(
    reader: *mut c_void,
    buf: *mut u8,
    cap: u64,
    out_len: *mut u64,
    err: *mut Pop3dBuf,
) -> Status {
    guarded::<P>(err, || {
        if out_len.is_null() || (buf.is_null() && cap > 0) {
            return Err(host_bug("read buffer"));
        }
        let cap = usize::try_from(cap).map_err(|_| host_bug("read size"))?;
        // SAFETY: ABI contract: a live reader used by one thread at a time;
        // `buf` is host memory writable for `cap` bytes during the call.
        let (reader, buf) = unsafe {
            let reader = handle_mut::<ReaderOf<P>>(reader)?;
            let buf: &mut [u8] = if cap == 0 {
                &mut []
            } else {
                std::slice::from_raw_parts_mut(buf, cap)
            };
            (reader, buf)
        };
        let filled = loop {
            match io::Read::read(reader, buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::from(e)),
            }
        };
        if filled > cap {
            return Err(Error::PermFail(format!(
                "reader claimed {filled} bytes of a {cap}-byte buffer"
            )));
        }
        // SAFETY: checked non-NULL above; writable by the ABI contract.
        unsafe { *out_len = filled as u64 };
        Ok(())
    })
}

unsafe extern "C" fn store_close_reader<P: StorePlugin + Exported>(reader: *mut c_void) {
    guarded_void::<P>("close_reader", || {
        // SAFETY: ABI contract: the reader came from open_message and is
        // closed once.
        drop(unsafe { take_handle::<ReaderOf<P>>(reader) });
    });
}

unsafe extern "C" fn store_commit<P: StorePlugin + Exported>(
    maildrop: *mut c_void,
    indices: *const u64,
    count: u64,
    err: *mut Pop3dBuf,
) -> Status {
    guarded::<P>(err, || {
        // SAFETY: ABI contract: the maildrop came from open and is given
        // back once; `indices` holds `count` entries for the call.
        let (maildrop, raw) = unsafe {
            let Some(maildrop) = take_handle::<P::Maildrop>(maildrop) else {
                return Err(host_bug("maildrop"));
            };
            let raw: &[u64] = if count == 0 {
                &[]
            } else {
                let count = usize::try_from(count).map_err(|_| host_bug("index count"))?;
                if indices.is_null() {
                    return Err(host_bug("index array"));
                }
                std::slice::from_raw_parts(indices, count)
            };
            (maildrop, raw)
        };
        let total = maildrop.messages().len();
        let mut converted = Vec::with_capacity(raw.len());
        for &index in raw {
            let index = usize::try_from(index).ok().filter(|&i| i < total);
            match (index, converted.last()) {
                (Some(i), None) => converted.push(i),
                (Some(i), Some(&previous)) if i > previous => converted.push(i),
                // Dropping the maildrop releases it without deleting.
                _ => return Err(host_bug("deletion list")),
            }
        }
        maildrop.commit(&converted)
    })
}

unsafe extern "C" fn store_release<P: StorePlugin + Exported>(maildrop: *mut c_void) {
    guarded_void::<P>("release", || {
        // SAFETY: ABI contract: the maildrop came from open and is given
        // back once.
        drop(unsafe { take_handle::<P::Maildrop>(maildrop) });
    });
}
