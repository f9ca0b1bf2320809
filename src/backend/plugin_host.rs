//! The host side of the plugin ABI: loads auth and store plugins and adapts
//! them to the [`Authenticator`] and [`Store`] traits the session calls.
//!
//! A plugin is either a shared library named in the config ([`load_auth`],
//! [`load_store`]) or a plugin crate linked into the binary
//! ([`builtin_auth`], [`builtin_store`]). Both go through the same entry
//! function, header validation and function table, so a built-in is held to
//! exactly the rules a `.so` is.
//!
//! # Finding the entry symbol
//! For `/path/libmy-auth.so.1` the loader looks up `pop3d_plugin_my_auth`
//! (file name up to the first `.`, without a leading `lib`, `-` written as
//! `_`), then the generic alias `pop3d_plugin_entry`. The first is what the
//! SDK's export macro defines; the alias lets a C plugin be renamed freely.
//!
//! # Validation
//! Magic number, then major version, then header size, kind, name and
//! table, then the table's size and its required functions, then `create`
//! with the plugin's config. Every refusal is a [`PluginError`] naming the
//! file (and, where versions matter, both versions), meant to stop the
//! server at start-up with a message the operator can act on.
//!
//! # Calling
//! Each call borrows its inputs for the call and receives outputs through
//! host-owned sinks (the `extern "C"` callbacks at the end of this file).
//! Status codes become [`BackendError`]s in [`status_to_result`], the one
//! place that mapping happens; plugin error text goes to the log and into
//! the error's detail, which the session must not show the client. A plugin
//! without the thread-safe flag is called under a mutex, shared by the
//! instance and every maildrop and reader made from it. A `PANICKED` status
//! poisons the instance: it is logged once, every later call answers
//! `TempFail` without entering the plugin, and its handles are leaked
//! rather than handed back to code that is known to be broken.
//!
//! # Trust
//! A plugin runs in-process; one that breaks the ABI contract (writes past a
//! buffer, frees a pointer it does not own) can corrupt pop3d and no check
//! here can prevent that. Loading a plugin is an operator's decision, like
//! installing a binary. Libraries are never unloaded: code or data of a
//! plugin may still be referenced (threads it started, its static header).
#![allow(unsafe_code)]

use super::{Authenticator, BackendError, Maildrop, MessageInfo, MessageReader, Store, UserInfo};
use libloading::Library;
use pop3d_plugin_api::abi::{
    self, status, Pop3dAuthTable, Pop3dBuf, Pop3dHost, Pop3dKeyValue, Pop3dListSink,
    Pop3dPluginHeader, Pop3dStoreTable, Pop3dStr, Pop3dUser, Pop3dUserOut, Status,
};
use std::collections::HashSet;
use std::ffi::{c_void, CStr};
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

pub use pop3d_plugin_api::abi::EntryFn;

/// Error text kept from one failed call; more is cut off, since it only
/// goes to the log.
const ERROR_TEXT_LIMIT: usize = 1024;
/// Longest secret `get_secret` may return.
const SECRET_LIMIT: usize = 1024;
/// Total bytes of name, home and extra attributes one user may have.
const USER_ATTRIBUTE_LIMIT: usize = 64 * 1024;
/// Longest UIDL RFC 1939 allows.
const UID_MAX_LEN: usize = 70;

/// Why a plugin could not be loaded. Each message names the plugin and says
/// what the operator can do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginError {
    /// The dynamic loader refused the file: missing, unreadable, not a
    /// shared library, built for another machine, or missing a dependency.
    Open {
        /// The file, as configured.
        plugin: String,
        /// The loader's own explanation.
        reason: String,
    },
    /// A shared library without a pop3d entry symbol.
    NoEntrySymbol {
        /// The file.
        plugin: String,
        /// Every symbol name tried, in order.
        tried: Vec<String>,
    },
    /// The entry function returned NULL: the plugin refused this host.
    EntryRefused {
        /// The plugin.
        plugin: String,
    },
    /// The entry symbol does not point at a pop3d plugin header.
    BadMagic {
        /// The plugin.
        plugin: String,
        /// The number found where the magic should be.
        found: u32,
    },
    /// The plugin was built for another major ABI version.
    VersionMismatch {
        /// The plugin.
        plugin: String,
        /// The plugin's major version.
        plugin_major: u16,
        /// The plugin's minor version.
        plugin_minor: u16,
    },
    /// The header is shorter than this host's header struct.
    HeaderTooSmall {
        /// The plugin.
        plugin: String,
        /// The size the plugin reported.
        size: u32,
        /// The size this host needs.
        needed: usize,
    },
    /// An auth plugin configured as a store, or the other way round.
    WrongKind {
        /// The plugin.
        plugin: String,
        /// The kind the config section needs.
        expected: &'static str,
        /// The kind number in the header.
        found: u32,
    },
    /// The function table cannot hold every required function.
    TableTooSmall {
        /// The plugin.
        plugin: String,
        /// The table size the plugin reported.
        size: u64,
        /// The size this host needs.
        needed: usize,
        /// The plugin's ABI version, for the message.
        plugin_version: (u16, u16),
    },
    /// A required function pointer is NULL.
    MissingFunction {
        /// The plugin.
        plugin: String,
        /// The table field that is NULL.
        function: &'static str,
    },
    /// The header is unusable in another way (NULL name or table).
    Malformed {
        /// The plugin.
        plugin: String,
        /// What is wrong.
        problem: &'static str,
    },
    /// `create` refused the config section.
    ConfigRejected {
        /// The plugin.
        plugin: String,
        /// The status name `create` returned.
        status: &'static str,
        /// The plugin's explanation.
        message: String,
    },
    /// `create` panicked.
    Panicked {
        /// The plugin.
        plugin: String,
        /// The panic message the plugin reported.
        message: String,
    },
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (host_major, host_minor) = (abi::ABI_MAJOR, abi::ABI_MINOR);
        match self {
            PluginError::Open { plugin, reason } => write!(
                f,
                "cannot load plugin {plugin}: {reason}; check the path in the config and that the \
                 file is a shared library built for this machine"
            ),
            PluginError::NoEntrySymbol { plugin, tried } => write!(
                f,
                "{plugin} is not a pop3d plugin: it exports none of {}; a plugin built as \
                 lib<name>.so must export pop3d_plugin_<name> (rename the file to match, or \
                 rebuild it)",
                tried.join(", ")
            ),
            PluginError::EntryRefused { plugin } => write!(
                f,
                "plugin {plugin} refused to run in this pop3d (plugin ABI {host_major}.{host_minor}); \
                 it needs a newer pop3d, or a rebuild"
            ),
            PluginError::BadMagic { plugin, found } => write!(
                f,
                "{plugin} is not a pop3d plugin: its entry symbol returned a header with magic \
                 0x{found:08X} instead of 0x{:08X}",
                abi::MAGIC
            ),
            PluginError::VersionMismatch {
                plugin,
                plugin_major,
                plugin_minor,
            } => write!(
                f,
                "plugin {plugin} was built for plugin ABI {plugin_major}.{plugin_minor}, but this \
                 pop3d speaks plugin ABI {host_major}.{host_minor}; rebuild the plugin against \
                 pop3d-plugin-api {host_major}.x"
            ),
            PluginError::HeaderTooSmall { plugin, size, needed } => write!(
                f,
                "plugin {plugin} has a {size}-byte header but pop3d (plugin ABI \
                 {host_major}.{host_minor}) needs {needed} bytes; it was built against a broken \
                 pop3d_plugin.h, rebuild it"
            ),
            PluginError::WrongKind {
                plugin,
                expected,
                found,
            } => write!(
                f,
                "plugin {plugin} is {}, but it is configured as the {expected} backend; move it \
                 to the right config section",
                kind_name(*found)
            ),
            PluginError::TableTooSmall {
                plugin,
                size,
                needed,
                plugin_version: (major, minor),
            } => write!(
                f,
                "plugin {plugin} (plugin ABI {major}.{minor}) has a {size}-byte function table, but \
                 pop3d (plugin ABI {host_major}.{host_minor}) needs at least {needed} bytes for the \
                 required functions; rebuild the plugin"
            ),
            PluginError::MissingFunction { plugin, function } => write!(
                f,
                "plugin {plugin} leaves the required function `{function}` NULL; fix the plugin"
            ),
            PluginError::Malformed { plugin, problem } => write!(f, "plugin {plugin} is malformed: {problem}"),
            PluginError::ConfigRejected {
                plugin,
                status,
                message,
            } => write!(f, "plugin {plugin} rejected its config ({status}): {message}"),
            PluginError::Panicked { plugin, message } => {
                write!(f, "plugin {plugin} panicked while starting: {message}")
            }
        }
    }
}

impl std::error::Error for PluginError {}

fn kind_name(kind: u32) -> &'static str {
    match kind {
        abi::KIND_AUTH => "an auth plugin",
        abi::KIND_STORE => "a store plugin",
        _ => "of an unknown kind",
    }
}

/// The plugin name a library's file name implies: up to the first `.`,
/// without a leading `lib`, `-` written as `_` (`libmy-auth.so.1` ->
/// `my_auth`). Empty for a name like `lib.so`.
fn name_from_file(path: &Path) -> String {
    let file_name = path
        .file_name()
        .map(|name| name.to_string_lossy())
        .unwrap_or_default();
    let stem = file_name.split('.').next().unwrap_or_default();
    stem.strip_prefix("lib").unwrap_or(stem).replace('-', "_")
}

/// The symbol names the loader tries for `path`, in order.
pub fn entry_symbol_candidates(path: &Path) -> Vec<String> {
    let name = name_from_file(path);
    let mut candidates = Vec::with_capacity(2);
    if !name.is_empty() {
        candidates.push(format!("{}{name}", abi::ENTRY_SYMBOL_PREFIX));
    }
    candidates.push(abi::GENERIC_ENTRY_SYMBOL.to_string());
    candidates
}

/// Loads an auth plugin from a shared library and creates an instance from
/// `config_ron`, the plugin's config section as RON text.
pub fn load_auth(path: &Path, config_ron: &str) -> Result<PluginAuthenticator, PluginError> {
    let (entry, target) = open_library(path)?;
    let origin = path.display().to_string();
    PluginAuthenticator::start(&origin, &target, entry, config_ron)
}

/// Loads a store plugin from a shared library; see [`load_auth`].
pub fn load_store(path: &Path, config_ron: &str) -> Result<PluginStore, PluginError> {
    let (entry, target) = open_library(path)?;
    let origin = path.display().to_string();
    PluginStore::start(&origin, &target, entry, config_ron)
}

/// Starts an auth plugin linked into the binary, through the same
/// validation and table as a loaded one. `name` is for logs and errors;
/// `entry` is the plugin crate's `pop3d_plugin_entry`.
pub fn builtin_auth(
    name: &str,
    entry: EntryFn,
    config_ron: &str,
) -> Result<PluginAuthenticator, PluginError> {
    PluginAuthenticator::start(
        &format!("built-in `{name}`"),
        &log_target(name),
        entry,
        config_ron,
    )
}

/// Starts a store plugin linked into the binary; see [`builtin_auth`].
pub fn builtin_store(
    name: &str,
    entry: EntryFn,
    config_ron: &str,
) -> Result<PluginStore, PluginError> {
    PluginStore::start(
        &format!("built-in `{name}`"),
        &log_target(name),
        entry,
        config_ron,
    )
}

fn log_target(plugin_name: &str) -> String {
    format!("pop3d::plugin::{}", plugin_name.replace('-', "_"))
}

/// Opens a library for good and finds its entry function.
fn open_library(path: &Path) -> Result<(EntryFn, String), PluginError> {
    let plugin = path.display().to_string();
    // SAFETY: loading runs the library's initializers. Which library to load
    // is the operator's decision (see "Trust" in the module docs); nothing
    // else in pop3d depends on what those initializers do.
    let library = unsafe { Library::new(path) }.map_err(|e| PluginError::Open {
        plugin: plugin.clone(),
        reason: e.to_string(),
    })?;
    let candidates = entry_symbol_candidates(path);
    let found = candidates.iter().find_map(|symbol| {
        // SAFETY: a pop3d entry symbol has the EntryFn signature by the ABI's
        // definition; only the function pointer is copied out.
        unsafe { library.get::<EntryFn>(symbol.as_bytes()) }
            .ok()
            .map(|entry| *entry)
    });
    // Never unload: the entry pointer copied above, and everything the
    // plugin hands out later, must stay valid for the rest of the process.
    std::mem::forget(library);
    let entry = found.ok_or(PluginError::NoEntrySymbol {
        plugin,
        tried: candidates,
    })?;
    Ok((entry, log_target(&name_from_file(path))))
}

/// What the host tells the log callback about the plugin that is logging.
struct HostContext {
    /// `log` target for the plugin's lines, e.g. `pop3d::plugin::dir_store`.
    target: String,
}

/// Makes the `Pop3dHost` for one plugin. It is leaked because the ABI lets
/// the plugin keep the pointer for the rest of the process.
fn new_host(target: &str) -> &'static Pop3dHost {
    let context: &'static HostContext = Box::leak(Box::new(HostContext {
        target: target.to_string(),
    }));
    Box::leak(Box::new(Pop3dHost {
        size: std::mem::size_of::<Pop3dHost>() as u32,
        abi_major: abi::ABI_MAJOR,
        abi_minor: abi::ABI_MINOR,
        host_data: context as *const HostContext as *mut c_void,
        log: Some(host_log),
    }))
}

/// A validated header: what the kind-specific start needs.
struct Header {
    /// The plugin's own name, for logs.
    name: String,
    /// The plugin's ABI version, for messages.
    version: (u16, u16),
    /// Whether the plugin may be called concurrently.
    thread_safe: bool,
    /// The function table, not yet read.
    table: *const c_void,
    /// `log` target for everything about this plugin.
    target: String,
    /// The table's size as the plugin reports it.
    table_size: u64,
}

/// Calls the entry function and checks the header up to the table size.
fn read_header(
    plugin: &str,
    target: &str,
    entry: EntryFn,
    kind: u32,
) -> Result<Header, PluginError> {
    let host = new_host(target);
    // SAFETY: `entry` has the EntryFn signature (found under a pop3d entry
    // symbol, or handed to builtin_* by the binary) and `host` lives forever.
    let header = unsafe { entry(host) };
    if header.is_null() {
        return Err(PluginError::EntryRefused {
            plugin: plugin.to_string(),
        });
    }
    // SAFETY: the ABI says a non-NULL return points to a header. The fixed
    // leading fields are read one at a time, without assuming the rest of
    // the struct is there, so a wrong magic or version is reported before
    // anything else is read.
    let (magic, major, minor, size) = unsafe {
        (
            ptr::addr_of!((*header).magic).read(),
            ptr::addr_of!((*header).abi_major).read(),
            ptr::addr_of!((*header).abi_minor).read(),
            ptr::addr_of!((*header).header_size).read(),
        )
    };
    let plugin = plugin.to_string();
    if magic != abi::MAGIC {
        return Err(PluginError::BadMagic {
            plugin,
            found: magic,
        });
    }
    if major != abi::ABI_MAJOR {
        return Err(PluginError::VersionMismatch {
            plugin,
            plugin_major: major,
            plugin_minor: minor,
        });
    }
    let needed = std::mem::size_of::<Pop3dPluginHeader>();
    if (size as usize) < needed {
        return Err(PluginError::HeaderTooSmall {
            plugin,
            size,
            needed,
        });
    }
    // SAFETY: the plugin says the header is at least as big as ours.
    let header = unsafe { header.read() };
    if header.kind != kind {
        return Err(PluginError::WrongKind {
            plugin,
            expected: if kind == abi::KIND_AUTH {
                "auth"
            } else {
                "store"
            },
            found: header.kind,
        });
    }
    if header.name.is_null() {
        return Err(PluginError::Malformed {
            plugin,
            problem: "its header has no name",
        });
    }
    if header.table.is_null() {
        return Err(PluginError::Malformed {
            plugin,
            problem: "its header has no function table",
        });
    }
    // SAFETY: the ABI makes `name` a static NUL-terminated string.
    let name = unsafe { CStr::from_ptr(header.name) }
        .to_string_lossy()
        .into_owned();
    // SAFETY: every table starts with its u64 size.
    let table_size = unsafe { header.table.cast::<u64>().read() };
    Ok(Header {
        name,
        version: (major, minor),
        thread_safe: header.flags & abi::FLAG_THREAD_SAFE != 0,
        table: header.table,
        target: target.to_string(),
        table_size,
    })
}

/// Copies the part of a plugin's table that the plugin says exists into a
/// host table whose other fields are NULL. Only whole pointer-sized fields
/// are copied, so a field the table only partly covers stays NULL.
///
/// # Safety
/// `table` points to at least `table_size` readable bytes, and `T` is a
/// `#[repr(C)]` table of a u64 and nullable function pointers whose
/// all-NULL value is `empty`.
unsafe fn copy_table<T: Copy>(table: *const c_void, table_size: u64, empty: T) -> T {
    let mut copy = empty;
    let whole = usize::try_from(table_size).unwrap_or(usize::MAX);
    let len = whole.min(std::mem::size_of::<T>()) / std::mem::size_of::<usize>()
        * std::mem::size_of::<usize>();
    // SAFETY: `len` is within both the plugin's table and `copy`; any bit
    // pattern of whole fields is valid for u64 and Option<fn> (NULL = None).
    unsafe {
        ptr::copy_nonoverlapping(
            table.cast::<u8>(),
            ptr::addr_of_mut!(copy).cast::<u8>(),
            len,
        )
    };
    copy
}

/// Runs `create` and turns its outcome into an instance handle.
fn create_instance(
    plugin: &str,
    create: abi::CreateFn,
    config_ron: &str,
) -> Result<*mut c_void, PluginError> {
    let mut err = ByteSink::error_text();
    let mut err_buf = err.as_buf();
    let mut instance: *mut c_void = ptr::null_mut();
    // SAFETY: `create` comes from a validated table; the config is borrowed
    // for the call; `err_buf` and `instance` outlive the call.
    let code = unsafe {
        create(
            config_ron.as_ptr(),
            config_ron.len() as u64,
            &mut err_buf,
            &mut instance,
        )
    };
    let message = err.text();
    match code {
        status::OK => Ok(instance),
        status::PANICKED => Err(PluginError::Panicked {
            plugin: plugin.to_string(),
            message,
        }),
        other => Err(PluginError::ConfigRejected {
            plugin: plugin.to_string(),
            status: status::name(other),
            message,
        }),
    }
}

/// The one place plugin statuses become backend errors. Unknown statuses
/// are temporary failures; `PANICKED` is too (the caller poisons).
fn status_to_result(code: Status, detail: String) -> Result<(), BackendError> {
    match code {
        status::OK => Ok(()),
        status::DENIED => Err(BackendError::Denied),
        status::NOT_FOUND => Err(BackendError::NotFound(detail)),
        status::IN_USE => Err(BackendError::InUse(detail)),
        status::PERM_FAIL => Err(BackendError::PermFail(detail)),
        status::TEMP_FAIL | status::PANICKED => Err(BackendError::TempFail(detail)),
        unknown => Err(BackendError::TempFail(format!(
            "(unknown status {unknown}) {detail}"
        ))),
    }
}

/// One live plugin instance and what every call into it needs.
struct Instance<F> {
    /// "plugin `name` (origin)", the prefix of every log line and error.
    label: String,
    /// `log` target of everything logged about this plugin, the same one
    /// its own lines use, so one filter shows all of it.
    target: String,
    /// The plugin's functions, copied out of its table and checked.
    fns: F,
    /// Frees the instance when the last user is gone.
    destroy: abi::DestroyFn,
    /// The plugin's opaque instance pointer.
    handle: *mut c_void,
    /// Serializes every call into a plugin that is not thread-safe; `None`
    /// for one that is.
    serial: Option<Mutex<()>>,
    /// Set when the plugin reported a panic; no call enters it afterwards.
    poisoned: AtomicBool,
}

// SAFETY: the plugin's instance pointer is only used through `enter`, which
// holds `serial` for plugins that did not declare themselves thread-safe;
// those that did promise (FLAG_THREAD_SAFE) that concurrent calls from any
// thread are fine. The ABI lets an instance be used from any thread.
unsafe impl<F: Send> Send for Instance<F> {}
// SAFETY: as for Send.
unsafe impl<F: Sync> Sync for Instance<F> {}

impl<F> Instance<F> {
    fn new(
        header: &Header,
        origin: &str,
        fns: F,
        destroy: abi::DestroyFn,
        handle: *mut c_void,
    ) -> Self {
        Instance {
            label: format!("plugin `{}` ({origin})", header.name),
            target: header.target.clone(),
            fns,
            destroy,
            handle,
            serial: if header.thread_safe {
                None
            } else {
                Some(Mutex::new(()))
            },
            poisoned: AtomicBool::new(false),
        }
    }

    /// Permission to call into the plugin: the serializing lock if needed,
    /// or `TempFail` when the instance is poisoned.
    fn enter(&self) -> Result<Option<MutexGuard<'_, ()>>, BackendError> {
        let guard = self
            .serial
            .as_ref()
            .map(|lock| lock.lock().unwrap_or_else(|poison| poison.into_inner()));
        if self.poisoned.load(Ordering::Acquire) {
            return Err(BackendError::TempFail(format!(
                "{} is disabled after a panic; restart pop3d once it is fixed",
                self.label
            )));
        }
        Ok(guard)
    }

    /// Like [`Instance::enter`], for freeing handles: `None` when poisoned,
    /// since a plugin known to be broken gets no more calls.
    fn enter_for_cleanup(&self) -> Option<Option<MutexGuard<'_, ()>>> {
        self.enter().ok()
    }

    /// Maps a call's status, logs failures and poisons on `PANICKED`.
    fn finish(&self, call: &str, code: Status, err: &ByteSink) -> Result<(), BackendError> {
        if code == status::OK {
            return Ok(());
        }
        let text = err.text();
        let detail = if text.is_empty() {
            format!("{}: {call} returned {}", self.label, status::name(code))
        } else {
            format!("{}: {call}: {text}", self.label)
        };
        match code {
            status::PANICKED => {
                if !self.poisoned.swap(true, Ordering::AcqRel) {
                    log::error!(
                        target: &self.target,
                        "{detail}; the plugin panicked and is disabled until pop3d restarts"
                    );
                }
            }
            status::DENIED => log::debug!(target: &self.target, "{detail}"),
            status::NOT_FOUND | status::IN_USE => log::info!(target: &self.target, "{detail}"),
            _ => log::warn!(target: &self.target, "{detail}"),
        }
        status_to_result(code, detail)
    }

    fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }
}

impl<F> Drop for Instance<F> {
    fn drop(&mut self) {
        if self.enter_for_cleanup().is_some() {
            // SAFETY: the instance came from this plugin's create; this is the
            // last reference (maildrops and readers hold an Arc to us).
            unsafe { (self.destroy)(self.handle) };
        }
    }
}

/// The checked functions of an auth plugin.
#[derive(Clone, Copy)]
struct AuthFns {
    /// Required.
    authenticate: abi::AuthenticateFn,
    /// Optional; `None` when NULL or beyond the plugin's table.
    get_secret: Option<abi::GetSecretFn>,
}

/// An auth plugin instance, usable as an [`Authenticator`].
pub struct PluginAuthenticator {
    /// The instance and its call discipline.
    instance: Instance<AuthFns>,
}

impl fmt::Debug for PluginAuthenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PluginAuthenticator")
            .field("label", &self.instance.label)
            .finish_non_exhaustive()
    }
}

impl PluginAuthenticator {
    fn start(
        origin: &str,
        target: &str,
        entry: EntryFn,
        config_ron: &str,
    ) -> Result<Self, PluginError> {
        let header = read_header(origin, target, entry, abi::KIND_AUTH)?;
        let plugin = origin.to_string();
        if (header.table_size as usize) < abi::AUTH_TABLE_REQUIRED_SIZE {
            return Err(PluginError::TableTooSmall {
                plugin,
                size: header.table_size,
                needed: abi::AUTH_TABLE_REQUIRED_SIZE,
                plugin_version: header.version,
            });
        }
        let empty = Pop3dAuthTable {
            size: 0,
            create: None,
            destroy: None,
            authenticate: None,
            get_secret: None,
        };
        // SAFETY: the table is `table_size` bytes by the plugin's header.
        let table = unsafe { copy_table(header.table, header.table_size, empty) };
        let missing = |function| PluginError::MissingFunction {
            plugin: plugin.clone(),
            function,
        };
        let create = table.create.ok_or_else(|| missing("create"))?;
        let destroy = table.destroy.ok_or_else(|| missing("destroy"))?;
        let authenticate = table.authenticate.ok_or_else(|| missing("authenticate"))?;
        let handle = create_instance(origin, create, config_ron)?;
        let fns = AuthFns {
            authenticate,
            get_secret: table.get_secret,
        };
        let instance = Instance::new(&header, origin, fns, destroy, handle);
        log::info!(
            target: &instance.target,
            "loaded {} (auth, plugin ABI {}.{}, {}{})",
            instance.label,
            header.version.0,
            header.version.1,
            if header.thread_safe { "thread-safe" } else { "calls serialized" },
            if fns.get_secret.is_some() { ", reveals secrets" } else { "" },
        );
        Ok(PluginAuthenticator { instance })
    }

    /// Whether the plugin can reveal shared secrets (for APOP, CRAM-MD5).
    pub fn supports_secrets(&self) -> bool {
        self.instance.fns.get_secret.is_some()
    }

    /// Whether the instance was disabled by a panic.
    pub fn is_poisoned(&self) -> bool {
        self.instance.is_poisoned()
    }

    /// The user's plaintext shared secret and attributes, for challenge
    /// mechanisms. Unknown users are `Denied`; a plugin without
    /// `get_secret` gives `PermFail`.
    pub fn secret(&self, user: &str) -> Result<(Secret, UserInfo), BackendError> {
        let Some(get_secret) = self.instance.fns.get_secret else {
            return Err(BackendError::PermFail(format!(
                "{} cannot reveal secrets",
                self.instance.label
            )));
        };
        let _guard = self.instance.enter()?;
        let mut secret = ByteSink::secret();
        let mut secret_buf = secret.as_buf();
        let mut attributes = UserSink::new(user);
        let mut out = attributes.as_out();
        let mut err = ByteSink::error_text();
        let mut err_buf = err.as_buf();
        // SAFETY: a validated function of a live instance (enter checked it
        // is not poisoned, and holds the lock if it must be serialized);
        // every pointer is to host data that outlives the call.
        let code = unsafe {
            get_secret(
                self.instance.handle,
                user.as_ptr(),
                user.len() as u64,
                &mut secret_buf,
                &mut out,
                &mut err_buf,
            )
        };
        if code != status::PANICKED {
            // The host's reason for refusing an attribute beats the
            // plugin's echo of it.
            if let Some(refusal) = attributes.refusal(&self.instance) {
                return Err(refusal);
            }
        }
        match self.instance.finish("get_secret", code, &err) {
            Ok(()) => {}
            Err(BackendError::NotFound(_)) => return Err(BackendError::Denied),
            Err(other) => return Err(other),
        }
        if secret.overflowed {
            return Err(BackendError::PermFail(format!(
                "{}: get_secret returned a secret longer than {SECRET_LIMIT} bytes",
                self.instance.label
            )));
        }
        let info = attributes.finish(&self.instance)?;
        Ok((Secret(std::mem::take(&mut secret.bytes)), info))
    }
}

impl Authenticator for PluginAuthenticator {
    fn authenticate(&self, user: &str, password: &[u8]) -> Result<UserInfo, BackendError> {
        let _guard = self.instance.enter()?;
        let mut attributes = UserSink::new(user);
        let mut out = attributes.as_out();
        let mut err = ByteSink::error_text();
        let mut err_buf = err.as_buf();
        // SAFETY: a validated function of a live, unpoisoned instance, called
        // under its lock if it needs one; inputs are borrowed for the call
        // and the sinks outlive it.
        let code = unsafe {
            (self.instance.fns.authenticate)(
                self.instance.handle,
                user.as_ptr(),
                user.len() as u64,
                password.as_ptr(),
                password.len() as u64,
                &mut out,
                &mut err_buf,
            )
        };
        if code != status::PANICKED {
            // The host's reason for refusing an attribute beats the
            // plugin's echo of it.
            if let Some(refusal) = attributes.refusal(&self.instance) {
                return Err(refusal);
            }
        }
        match self.instance.finish("authenticate", code, &err) {
            Ok(()) => attributes.finish(&self.instance),
            // Never tell "no such user" apart from "wrong password".
            Err(BackendError::NotFound(_)) => Err(BackendError::Denied),
            Err(other) => Err(other),
        }
    }
}

/// A shared secret from an auth plugin. Zeroed when dropped, and never
/// printed by `Debug`.
pub struct Secret(Vec<u8>);

impl Secret {
    /// The secret's bytes, for computing a challenge response.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        wipe(&mut self.0);
    }
}

/// Overwrites bytes about to be freed, so a secret does not linger in the
/// allocator's free memory.
fn wipe(bytes: &mut [u8]) {
    for byte in bytes.iter_mut() {
        // SAFETY: a valid, exclusively borrowed byte; volatile so the
        // compiler cannot drop the write to memory about to be freed.
        unsafe { ptr::write_volatile(byte, 0) };
    }
}

/// The checked functions of a store plugin.
#[derive(Clone, Copy)]
struct StoreFns {
    /// Locks a maildrop and snapshots it.
    open: abi::OpenFn,
    /// Reports the snapshot, right after `open`.
    list: abi::ListFn,
    /// Starts streaming one message.
    open_message: abi::OpenMessageFn,
    /// Pulls the next chunk of a message.
    read: abi::ReadFn,
    /// Frees a reader.
    close_reader: abi::CloseReaderFn,
    /// Deletes, releases and frees a maildrop.
    commit: abi::CommitFn,
    /// Releases and frees a maildrop without deleting.
    release: abi::ReleaseFn,
}

/// A store plugin instance, usable as a [`Store`].
pub struct PluginStore {
    /// Shared with every maildrop and reader, so the instance is destroyed
    /// only after the last of them is closed.
    instance: Arc<Instance<StoreFns>>,
}

impl fmt::Debug for PluginStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PluginStore")
            .field("label", &self.instance.label)
            .finish_non_exhaustive()
    }
}

impl PluginStore {
    fn start(
        origin: &str,
        target: &str,
        entry: EntryFn,
        config_ron: &str,
    ) -> Result<Self, PluginError> {
        let header = read_header(origin, target, entry, abi::KIND_STORE)?;
        let plugin = origin.to_string();
        if (header.table_size as usize) < abi::STORE_TABLE_REQUIRED_SIZE {
            return Err(PluginError::TableTooSmall {
                plugin,
                size: header.table_size,
                needed: abi::STORE_TABLE_REQUIRED_SIZE,
                plugin_version: header.version,
            });
        }
        let empty = Pop3dStoreTable {
            size: 0,
            create: None,
            destroy: None,
            open: None,
            list: None,
            open_message: None,
            read: None,
            close_reader: None,
            commit: None,
            release: None,
        };
        // SAFETY: the table is `table_size` bytes by the plugin's header.
        let table = unsafe { copy_table(header.table, header.table_size, empty) };
        let missing = |function| PluginError::MissingFunction {
            plugin: plugin.clone(),
            function,
        };
        let create = table.create.ok_or_else(|| missing("create"))?;
        let destroy = table.destroy.ok_or_else(|| missing("destroy"))?;
        let fns = StoreFns {
            open: table.open.ok_or_else(|| missing("open"))?,
            list: table.list.ok_or_else(|| missing("list"))?,
            open_message: table.open_message.ok_or_else(|| missing("open_message"))?,
            read: table.read.ok_or_else(|| missing("read"))?,
            close_reader: table.close_reader.ok_or_else(|| missing("close_reader"))?,
            commit: table.commit.ok_or_else(|| missing("commit"))?,
            release: table.release.ok_or_else(|| missing("release"))?,
        };
        let handle = create_instance(origin, create, config_ron)?;
        let instance = Instance::new(&header, origin, fns, destroy, handle);
        log::info!(
            target: &instance.target,
            "loaded {} (store, plugin ABI {}.{}, {})",
            instance.label,
            header.version.0,
            header.version.1,
            if header.thread_safe { "thread-safe" } else { "calls serialized" },
        );
        Ok(PluginStore {
            instance: Arc::new(instance),
        })
    }

    /// Whether the instance was disabled by a panic.
    pub fn is_poisoned(&self) -> bool {
        self.instance.is_poisoned()
    }

    /// Lists a freshly opened maildrop; releases it if listing fails.
    fn list(&self, handle: *mut c_void) -> Result<Vec<MessageInfo>, BackendError> {
        let instance = &self.instance;
        let mut sink = ListSink::default();
        let mut raw_sink = sink.as_sink();
        let mut err = ByteSink::error_text();
        let mut err_buf = err.as_buf();
        let code = {
            let _guard = instance.enter()?;
            // SAFETY: a validated function; `handle` is a maildrop this
            // plugin just opened; the sinks outlive the call.
            unsafe { (instance.fns.list)(handle, &mut raw_sink, &mut err_buf) }
        };
        // What the host refused explains a failure better than the plugin's
        // echo of it, and counts even if the plugin ignored the refusal.
        let outcome = match sink.problem.take() {
            Some(problem) if code != status::PANICKED => {
                let detail = format!("{}: list: {problem}", instance.label);
                log::warn!(target: &instance.target, "{detail}");
                Err(BackendError::PermFail(detail))
            }
            _ => instance.finish("list", code, &err),
        };
        match outcome {
            Ok(()) => Ok(sink.messages),
            Err(error) => {
                if let Some(_guard) = instance.enter_for_cleanup() {
                    // SAFETY: the maildrop is live and is given back once.
                    unsafe { (instance.fns.release)(handle) };
                }
                Err(error)
            }
        }
    }
}

impl Store for PluginStore {
    fn open(&self, user: &UserInfo) -> Result<Box<dyn Maildrop>, BackendError> {
        let instance = &self.instance;
        let extra: Vec<Pop3dKeyValue> = user
            .extra
            .iter()
            .map(|(key, value)| Pop3dKeyValue {
                key: borrowed(key),
                value: borrowed(value),
            })
            .collect();
        let raw_user = Pop3dUser {
            name: borrowed(&user.name),
            home: user.home.as_deref().map_or(
                Pop3dStr {
                    ptr: ptr::null(),
                    len: 0,
                },
                borrowed,
            ),
            extra: extra.as_ptr(),
            extra_count: extra.len() as u64,
        };
        let mut err = ByteSink::error_text();
        let mut err_buf = err.as_buf();
        let mut handle: *mut c_void = ptr::null_mut();
        let code = {
            let _guard = instance.enter()?;
            // SAFETY: a validated function of a live, unpoisoned instance
            // under its lock if needed; `raw_user` and the strings it points
            // to outlive the call.
            unsafe { (instance.fns.open)(instance.handle, &raw_user, &mut err_buf, &mut handle) }
        };
        instance.finish("open", code, &err)?;
        let messages = self.list(handle)?;
        log::debug!(
            target: &instance.target,
            "{}: opened maildrop of {} ({} messages)",
            instance.label,
            user.name,
            messages.len()
        );
        Ok(Box::new(PluginMaildrop {
            instance: Arc::clone(&self.instance),
            handle,
            messages,
        }))
    }
}

fn borrowed(text: &str) -> Pop3dStr {
    Pop3dStr {
        ptr: text.as_ptr(),
        len: text.len() as u64,
    }
}

/// An open maildrop of a store plugin.
struct PluginMaildrop {
    /// Keeps the instance alive and carries its call discipline.
    instance: Arc<Instance<StoreFns>>,
    /// The plugin's maildrop handle; NULL once given back.
    handle: *mut c_void,
    /// The snapshot listed at open.
    messages: Vec<MessageInfo>,
}

// SAFETY: the ABI lets a maildrop handle move between threads as long as one
// thread uses it at a time, which `&mut self`/ownership guarantees; calls
// into a non-thread-safe plugin are serialized by the instance's lock.
unsafe impl Send for PluginMaildrop {}

impl Maildrop for PluginMaildrop {
    fn messages(&self) -> &[MessageInfo] {
        &self.messages
    }

    fn open_message(&mut self, index: usize) -> Result<Box<dyn MessageReader>, BackendError> {
        if index >= self.messages.len() {
            return Err(BackendError::NotFound(format!(
                "message index {index} of {}",
                self.messages.len()
            )));
        }
        let instance = &self.instance;
        let mut err = ByteSink::error_text();
        let mut err_buf = err.as_buf();
        let mut reader: *mut c_void = ptr::null_mut();
        let code = {
            let _guard = instance.enter()?;
            // SAFETY: a validated function; `self.handle` is a live maildrop
            // (NULL only after commit, which consumed self).
            unsafe {
                (instance.fns.open_message)(self.handle, index as u64, &mut err_buf, &mut reader)
            }
        };
        instance.finish("open_message", code, &err)?;
        Ok(Box::new(PluginReader {
            instance: Arc::clone(&self.instance),
            handle: reader,
        }))
    }

    fn commit(mut self: Box<Self>, indices: &[usize]) -> Result<(), BackendError> {
        let handle = std::mem::replace(&mut self.handle, ptr::null_mut());
        let indices: Vec<u64> = indices.iter().map(|&index| index as u64).collect();
        let instance = &self.instance;
        let mut err = ByteSink::error_text();
        let mut err_buf = err.as_buf();
        let code = {
            // If this fails the handle is leaked: the plugin is poisoned.
            let _guard = instance.enter()?;
            // SAFETY: a validated function; the maildrop is live and given
            // back exactly once (the handle field was cleared above).
            unsafe {
                (instance.fns.commit)(handle, indices.as_ptr(), indices.len() as u64, &mut err_buf)
            }
        };
        instance.finish("commit", code, &err)
    }
}

impl Drop for PluginMaildrop {
    fn drop(&mut self) {
        if self.handle.is_null() {
            return;
        }
        if let Some(_guard) = self.instance.enter_for_cleanup() {
            // SAFETY: the maildrop is live and given back exactly once.
            unsafe { (self.instance.fns.release)(self.handle) };
        }
    }
}

/// An open message of a store plugin.
struct PluginReader {
    /// Keeps the instance alive and carries its call discipline.
    instance: Arc<Instance<StoreFns>>,
    /// The plugin's reader handle.
    handle: *mut c_void,
}

// SAFETY: as for PluginMaildrop.
unsafe impl Send for PluginReader {}

impl MessageReader for PluginReader {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, BackendError> {
        let instance = &self.instance;
        let mut err = ByteSink::error_text();
        let mut err_buf = err.as_buf();
        let mut filled: u64 = 0;
        let code = {
            let _guard = instance.enter()?;
            // SAFETY: a validated function; a live reader; `buf` is writable
            // for its length during the call.
            unsafe {
                (instance.fns.read)(
                    self.handle,
                    buf.as_mut_ptr(),
                    buf.len() as u64,
                    &mut filled,
                    &mut err_buf,
                )
            }
        };
        instance.finish("read", code, &err)?;
        match usize::try_from(filled) {
            Ok(filled) if filled <= buf.len() => Ok(filled),
            _ => {
                let detail = format!(
                    "{}: read claims {filled} bytes in a {}-byte buffer",
                    instance.label,
                    buf.len()
                );
                log::error!(target: &instance.target, "{detail}");
                Err(BackendError::PermFail(detail))
            }
        }
    }
}

impl Drop for PluginReader {
    fn drop(&mut self) {
        if let Some(_guard) = self.instance.enter_for_cleanup() {
            // SAFETY: the reader is live and given back exactly once.
            unsafe { (self.instance.fns.close_reader)(self.handle) };
        }
    }
}

/// Host storage behind a [`Pop3dBuf`].
struct ByteSink {
    /// What the plugin appended.
    bytes: Vec<u8>,
    /// Most bytes kept.
    limit: usize,
    /// Past the limit: keep what fits and say OK (error text), or refuse
    /// with PERM_FAIL (secrets, which must not be cut).
    truncate: bool,
    /// Set when an append was refused.
    overflowed: bool,
}

impl ByteSink {
    fn error_text() -> ByteSink {
        ByteSink {
            bytes: Vec::new(),
            limit: ERROR_TEXT_LIMIT,
            truncate: true,
            overflowed: false,
        }
    }

    fn secret() -> ByteSink {
        ByteSink {
            // Allocated once up front so no copy is left behind by growth.
            bytes: Vec::with_capacity(SECRET_LIMIT),
            limit: SECRET_LIMIT,
            truncate: false,
            overflowed: false,
        }
    }

    /// The ABI view of this sink; valid while `self` does not move.
    fn as_buf(&mut self) -> Pop3dBuf {
        Pop3dBuf {
            host: (self as *mut ByteSink).cast(),
            append: Some(host_buf_append),
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).trim().to_string()
    }
}

impl Drop for ByteSink {
    /// A secret sink may be dropped on an error path before its bytes were
    /// moved into a [`Secret`]; wiping every sink covers that too.
    fn drop(&mut self) {
        wipe(&mut self.bytes);
    }
}

/// Host storage behind a [`Pop3dUserOut`].
struct UserSink {
    /// What the client typed; the canonical name unless the plugin sets one.
    typed_name: String,
    /// Canonical name set by the plugin.
    name: Option<String>,
    /// Home directory set by the plugin.
    home: Option<String>,
    /// Extra attributes, in the order the plugin added them.
    extra: Vec<(String, String)>,
    /// Bytes accepted so far, against [`USER_ATTRIBUTE_LIMIT`].
    used: usize,
    /// The first thing the host refused, reported even if the plugin
    /// ignores the callback's status.
    problem: Option<String>,
}

impl UserSink {
    fn new(typed_name: &str) -> UserSink {
        UserSink {
            typed_name: typed_name.to_string(),
            name: None,
            home: None,
            extra: Vec::new(),
            used: 0,
            problem: None,
        }
    }

    /// The ABI view of this sink; valid while `self` does not move.
    fn as_out(&mut self) -> Pop3dUserOut {
        Pop3dUserOut {
            host: (self as *mut UserSink).cast(),
            set_name: Some(host_user_set_name),
            set_home: Some(host_user_set_home),
            add_extra: Some(host_user_add_extra),
        }
    }

    /// Accepts `len` more bytes of attributes, or records why not.
    fn accept(&mut self, bytes: &[&[u8]]) -> Result<Vec<String>, Status> {
        let len: usize = bytes.iter().map(|b| b.len()).sum();
        if self.used + len > USER_ATTRIBUTE_LIMIT {
            self.problem.get_or_insert(format!(
                "user attributes exceed {USER_ATTRIBUTE_LIMIT} bytes"
            ));
            return Err(status::PERM_FAIL);
        }
        let mut texts = Vec::with_capacity(bytes.len());
        for b in bytes {
            match std::str::from_utf8(b) {
                Ok(text) => texts.push(text.to_string()),
                Err(_) => {
                    self.problem
                        .get_or_insert("a user attribute is not UTF-8".to_string());
                    return Err(status::PERM_FAIL);
                }
            }
        }
        self.used += len;
        Ok(texts)
    }

    /// The error for an attribute the host refused, logged, if there was
    /// one.
    fn refusal<F>(&mut self, instance: &Instance<F>) -> Option<BackendError> {
        let problem = self.problem.take()?;
        let detail = format!("{}: {problem}", instance.label);
        log::warn!(target: &instance.target, "{detail}");
        Some(BackendError::PermFail(detail))
    }

    fn finish<F>(&mut self, instance: &Instance<F>) -> Result<UserInfo, BackendError> {
        if let Some(refusal) = self.refusal(instance) {
            return Err(refusal);
        }
        Ok(UserInfo {
            name: self.name.take().unwrap_or_else(|| self.typed_name.clone()),
            home: self.home.take(),
            extra: std::mem::take(&mut self.extra),
        })
    }
}

/// Host storage behind a [`Pop3dListSink`].
#[derive(Default)]
struct ListSink {
    /// The listing so far, in message-number order.
    messages: Vec<MessageInfo>,
    /// UIDs seen, to refuse duplicates.
    seen: HashSet<String>,
    /// The first thing the host refused.
    problem: Option<String>,
}

impl ListSink {
    /// The ABI view of this sink; valid while `self` does not move.
    fn as_sink(&mut self) -> Pop3dListSink {
        Pop3dListSink {
            host: (self as *mut ListSink).cast(),
            message: Some(host_list_message),
        }
    }

    fn add(&mut self, wire_size: u64, uid: &[u8]) -> Status {
        let valid =
            (1..=UID_MAX_LEN).contains(&uid.len()) && uid.iter().all(|b| (0x21..=0x7E).contains(b));
        if !valid {
            let shown = String::from_utf8_lossy(&uid[..uid.len().min(80)]).into_owned();
            self.problem.get_or_insert(format!(
                "message {} has an invalid uid {shown:?} (must be 1 to {UID_MAX_LEN} bytes of 0x21..=0x7E)",
                self.messages.len() + 1
            ));
            return status::PERM_FAIL;
        }
        // Checked above: printable ASCII.
        let uid = String::from_utf8_lossy(uid).into_owned();
        if !self.seen.insert(uid.clone()) {
            self.problem.get_or_insert(format!(
                "message {} repeats the uid {uid:?}",
                self.messages.len() + 1
            ));
            return status::PERM_FAIL;
        }
        self.messages.push(MessageInfo { wire_size, uid });
        status::OK
    }
}

/// Borrows `len` bytes a plugin passed to a host callback.
///
/// # Safety
/// `ptr` is valid for `len` bytes for the rest of the callback (NULL only
/// when `len` is 0).
unsafe fn callback_bytes<'a>(ptr: *const u8, len: u64) -> Option<&'a [u8]> {
    if len == 0 {
        return Some(&[]);
    }
    let len = usize::try_from(len).ok()?;
    if ptr.is_null() {
        return None;
    }
    // SAFETY: the caller's contract.
    Some(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// Runs a host callback body so that no panic unwinds into the plugin.
fn callback(body: impl FnOnce() -> Status) -> Status {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or(status::TEMP_FAIL)
}

unsafe extern "C" fn host_log(host: *const Pop3dHost, level: u32, message: *const u8, len: u64) {
    let _ = callback(|| {
        // SAFETY: `host` is one of ours (made by new_host, never freed) and
        // its host_data a leaked HostContext; the message is borrowed for
        // the call.
        let (context, bytes) = unsafe {
            if host.is_null() || (*host).host_data.is_null() {
                return status::PERM_FAIL;
            }
            let context = &*((*host).host_data as *const HostContext);
            match callback_bytes(message, len) {
                Some(bytes) => (context, bytes),
                None => return status::PERM_FAIL,
            }
        };
        let level = match level {
            abi::LOG_ERROR => log::Level::Error,
            abi::LOG_WARN => log::Level::Warn,
            abi::LOG_INFO => log::Level::Info,
            abi::LOG_DEBUG => log::Level::Debug,
            _ => log::Level::Trace,
        };
        log::log!(target: &context.target, level, "{}", String::from_utf8_lossy(bytes));
        status::OK
    });
}

unsafe extern "C" fn host_buf_append(buf: *mut Pop3dBuf, data: *const u8, len: u64) -> Status {
    callback(|| {
        // SAFETY: `buf` is a Pop3dBuf made by ByteSink::as_buf for the
        // running call, whose sink is alive and not otherwise borrowed while
        // the plugin runs; the data is borrowed for the callback.
        let (sink, bytes) = unsafe {
            if buf.is_null() || (*buf).host.is_null() {
                return status::PERM_FAIL;
            }
            let sink = &mut *((*buf).host as *mut ByteSink);
            match callback_bytes(data, len) {
                Some(bytes) => (sink, bytes),
                None => return status::PERM_FAIL,
            }
        };
        let room = sink.limit - sink.bytes.len();
        if bytes.len() <= room {
            sink.bytes.extend_from_slice(bytes);
            status::OK
        } else if sink.truncate {
            sink.bytes.extend_from_slice(&bytes[..room]);
            status::OK
        } else {
            sink.overflowed = true;
            status::PERM_FAIL
        }
    })
}

/// Finds the UserSink behind a `Pop3dUserOut`.
///
/// # Safety
/// `out` is NULL or a Pop3dUserOut made by UserSink::as_out for the running
/// call, whose sink is alive and not otherwise borrowed while the plugin
/// runs.
unsafe fn user_sink<'a>(out: *mut Pop3dUserOut) -> Option<&'a mut UserSink> {
    // SAFETY: the caller's contract.
    unsafe {
        if out.is_null() || (*out).host.is_null() {
            return None;
        }
        Some(&mut *((*out).host as *mut UserSink))
    }
}

unsafe extern "C" fn host_user_set_name(
    out: *mut Pop3dUserOut,
    value: *const u8,
    len: u64,
) -> Status {
    callback(|| {
        // SAFETY: plugin callback contract (see user_sink, callback_bytes).
        let (Some(sink), Some(value)) = (unsafe { user_sink(out) }, unsafe {
            callback_bytes(value, len)
        }) else {
            return status::PERM_FAIL;
        };
        match sink.accept(&[value]) {
            Ok(mut texts) => {
                sink.name = texts.pop();
                status::OK
            }
            Err(code) => code,
        }
    })
}

unsafe extern "C" fn host_user_set_home(
    out: *mut Pop3dUserOut,
    value: *const u8,
    len: u64,
) -> Status {
    callback(|| {
        // SAFETY: plugin callback contract (see user_sink, callback_bytes).
        let (Some(sink), Some(value)) = (unsafe { user_sink(out) }, unsafe {
            callback_bytes(value, len)
        }) else {
            return status::PERM_FAIL;
        };
        match sink.accept(&[value]) {
            Ok(mut texts) => {
                sink.home = texts.pop();
                status::OK
            }
            Err(code) => code,
        }
    })
}

unsafe extern "C" fn host_user_add_extra(
    out: *mut Pop3dUserOut,
    key: *const u8,
    key_len: u64,
    value: *const u8,
    value_len: u64,
) -> Status {
    callback(|| {
        // SAFETY: plugin callback contract (see user_sink, callback_bytes).
        let (Some(sink), Some(key), Some(value)) = (
            unsafe { user_sink(out) },
            unsafe { callback_bytes(key, key_len) },
            unsafe { callback_bytes(value, value_len) },
        ) else {
            return status::PERM_FAIL;
        };
        match sink.accept(&[key, value]) {
            Ok(mut texts) => {
                let value = texts.pop().unwrap_or_default();
                let key = texts.pop().unwrap_or_default();
                sink.extra.push((key, value));
                status::OK
            }
            Err(code) => code,
        }
    })
}

unsafe extern "C" fn host_list_message(
    sink: *mut Pop3dListSink,
    wire_size: u64,
    uid: *const u8,
    uid_len: u64,
) -> Status {
    callback(|| {
        // SAFETY: `sink` is a Pop3dListSink made by ListSink::as_sink for the
        // running list call, whose ListSink is alive and not otherwise
        // borrowed while the plugin runs; the uid is borrowed.
        let (list, uid) = unsafe {
            if sink.is_null() || (*sink).host.is_null() {
                return status::PERM_FAIL;
            }
            let list = &mut *((*sink).host as *mut ListSink);
            match callback_bytes(uid, uid_len) {
                Some(uid) => (list, uid),
                None => return status::PERM_FAIL,
            }
        };
        list.add(wire_size, uid)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_symbols_follow_the_file_name() {
        let cases = [
            ("/usr/lib/pop3d/libdir_store.so", "pop3d_plugin_dir_store"),
            ("libmy-auth.so.1.2", "pop3d_plugin_my_auth"),
            ("static_auth.so", "pop3d_plugin_static_auth"),
            ("./plugins/liblib.so", "pop3d_plugin_lib"),
        ];
        for (path, expected) in cases {
            assert_eq!(
                entry_symbol_candidates(Path::new(path)),
                vec![expected.to_string(), "pop3d_plugin_entry".to_string()],
                "{path}"
            );
        }
    }

    #[test]
    fn statuses_map_to_backend_errors_in_one_place() {
        let detail = || "why".to_string();
        assert_eq!(status_to_result(status::OK, detail()), Ok(()));
        assert_eq!(
            status_to_result(status::DENIED, detail()),
            Err(BackendError::Denied)
        );
        let cases = [
            (status::NOT_FOUND, "[SYS/TEMP]"),
            (status::IN_USE, "[IN-USE]"),
            (status::TEMP_FAIL, "[SYS/TEMP]"),
            (status::PERM_FAIL, "[SYS/PERM]"),
            (status::PANICKED, "[SYS/TEMP]"),
            (99, "[SYS/TEMP]"),
            (-1, "[SYS/TEMP]"),
        ];
        for (code, response) in cases {
            let error = status_to_result(code, detail()).unwrap_err();
            assert_eq!(error.response_code(), response, "status {code}");
        }
    }

    #[test]
    fn uids_are_checked_as_rfc_1939_says() {
        let mut sink = ListSink::default();
        assert_eq!(sink.add(10, b"a"), status::OK);
        assert_eq!(sink.add(10, &[b'x'; 70]), status::OK);
        assert_eq!(sink.add(10, &[b'y'; 71]), status::PERM_FAIL);
        let mut sink = ListSink::default();
        assert_eq!(sink.add(10, b""), status::PERM_FAIL);
        let mut sink = ListSink::default();
        assert_eq!(sink.add(10, b"has space"), status::PERM_FAIL);
        let mut sink = ListSink::default();
        assert_eq!(sink.add(10, b"dup"), status::OK);
        assert_eq!(sink.add(10, b"dup"), status::PERM_FAIL);
    }

    #[test]
    fn error_text_is_capped_but_secrets_are_refused_whole() {
        let mut err = ByteSink::error_text();
        let mut buf = err.as_buf();
        let long = vec![b'e'; ERROR_TEXT_LIMIT + 10];
        // SAFETY: a sink of ours and a borrowed slice, as a plugin would pass.
        let code = unsafe { host_buf_append(&mut buf, long.as_ptr(), long.len() as u64) };
        assert_eq!(code, status::OK);
        assert_eq!(err.bytes.len(), ERROR_TEXT_LIMIT);

        let mut secret = ByteSink::secret();
        let mut buf = secret.as_buf();
        let long = vec![b's'; SECRET_LIMIT + 1];
        // SAFETY: as above.
        let code = unsafe { host_buf_append(&mut buf, long.as_ptr(), long.len() as u64) };
        assert_eq!(code, status::PERM_FAIL);
        assert!(secret.overflowed);
    }
}
