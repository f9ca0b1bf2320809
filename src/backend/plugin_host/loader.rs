//! Finding, calling and checking a plugin's entry point: symbol lookup,
//! the host struct handed to the plugin, header and table validation, and
//! `create`.

use super::error::PluginError;
use super::sinks::{host_log, ByteSink};
use super::EntryFn;
use libloading::Library;
use pop3d_plugin_api::abi::{self, status, Pop3dHost, Pop3dPluginHeader};
use std::ffi::{c_void, CStr};
use std::path::Path;
use std::ptr;

/// The plugin name a library's file name implies: up to the first `.`,
/// without a leading `lib`, `-` written as `_` (`libmy-auth.so.1` ->
/// `my_auth`). Empty for a name like `lib.so`.
pub(super) fn name_from_file(path: &Path) -> String {
    let file_name = path
        .file_name()
        .map(|name| name.to_string_lossy())
        .unwrap_or_default();
    let stem = file_name.split('.').next().unwrap_or_default();
    stem.strip_prefix("lib").unwrap_or(stem).replace('-', "_")
}

/// The package prefix of pop3d's own plugin crates: `pop3d-maildir`
/// builds `libpop3d_maildir.so` but exports `pop3d_plugin_maildir`, the
/// name it has as a built-in.
const PACKAGE_PREFIX: &str = "pop3d_";

/// The symbol names the loader tries for `path`, in order: the file's
/// plugin name, that name without a `pop3d_` package prefix, then the
/// generic alias.
pub fn entry_symbol_candidates(path: &Path) -> Vec<String> {
    let name = name_from_file(path);
    let mut candidates = Vec::with_capacity(3);
    if !name.is_empty() {
        candidates.push(format!("{}{name}", abi::ENTRY_SYMBOL_PREFIX));
    }
    if let Some(unprefixed) = name.strip_prefix(PACKAGE_PREFIX) {
        if !unprefixed.is_empty() {
            candidates.push(format!("{}{unprefixed}", abi::ENTRY_SYMBOL_PREFIX));
        }
    }
    candidates.push(abi::GENERIC_ENTRY_SYMBOL.to_string());
    candidates
}

pub(super) fn log_target(plugin_name: &str) -> String {
    format!("pop3d::plugin::{}", plugin_name.replace('-', "_"))
}

/// Opens a library for good and finds its entry function.
pub(super) fn open_library(path: &Path) -> Result<(EntryFn, String), PluginError> {
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
            .map(|entry| (*entry, symbol))
    });
    // Never unload: the entry pointer copied above, and everything the
    // plugin hands out later, must stay valid for the rest of the process.
    std::mem::forget(library);
    let (entry, symbol) = found.ok_or_else(|| PluginError::NoEntrySymbol {
        plugin,
        tried: candidates.clone(),
    })?;
    // The name in the symbol found, so `libpop3d_maildir.so` logs under
    // the same target as the built-in `maildir`.
    let name = match symbol.strip_prefix(abi::ENTRY_SYMBOL_PREFIX) {
        Some(name) if symbol != abi::GENERIC_ENTRY_SYMBOL => name.to_string(),
        _ => name_from_file(path),
    };
    Ok((entry, log_target(&name)))
}

/// What the host tells the log callback about the plugin that is logging.
pub(super) struct HostContext {
    /// `log` target for the plugin's lines, e.g. `pop3d::plugin::dir_store`.
    pub(super) target: String,
}

/// Makes the `Pop3dHost` for one plugin. It is leaked because the ABI lets
/// the plugin keep the pointer for the rest of the process.
pub(super) fn new_host(target: &str) -> &'static Pop3dHost {
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
pub(super) struct Header {
    /// The plugin's own name, for logs.
    pub(super) name: String,
    /// The plugin's ABI version, for messages.
    pub(super) version: (u16, u16),
    /// Whether the plugin may be called concurrently.
    pub(super) thread_safe: bool,
    /// The function table, not yet read.
    pub(super) table: *const c_void,
    /// `log` target for everything about this plugin.
    pub(super) target: String,
    /// The table's size as the plugin reports it.
    pub(super) table_size: u64,
}

/// Calls the entry function and checks the header up to the table size.
pub(super) fn read_header(
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
pub(super) unsafe fn copy_table<T: Copy>(table: *const c_void, table_size: u64, empty: T) -> T {
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
pub(super) fn create_instance(
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
    fn pop3d_plugin_crates_are_found_under_their_built_in_names() {
        assert_eq!(
            entry_symbol_candidates(Path::new("target/debug/libpop3d_passwd_file.so")),
            [
                "pop3d_plugin_pop3d_passwd_file",
                "pop3d_plugin_passwd_file",
                "pop3d_plugin_entry"
            ]
        );
        assert_eq!(
            entry_symbol_candidates(Path::new("libpop3d_.so")),
            ["pop3d_plugin_pop3d_", "pop3d_plugin_entry"]
        );
    }
}
