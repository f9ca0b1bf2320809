//! [`PluginError`]: why a plugin could not be started, in words an
//! operator can act on.

use pop3d_plugin_api::abi::{self};
use std::fmt;

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

pub(super) fn kind_name(kind: u32) -> &'static str {
    match kind {
        abi::KIND_AUTH => "an auth plugin",
        abi::KIND_STORE => "a store plugin",
        _ => "of an unknown kind",
    }
}
