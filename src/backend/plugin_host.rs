//! The host side of the plugin ABI: loads auth and store plugins and adapts
//! them to the [`Authenticator`](super::Authenticator) and
//! [`Store`](super::Store) traits the session calls.
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
//! host-owned sinks (the `extern "C"` callbacks in `sinks.rs`). Status
//! codes become [`BackendError`](super::BackendError)s in
//! `instance::status_to_result`, the one place that mapping happens.
//! Plugin error text goes to the log and into the error's detail, which the
//! session must not show the client. A plugin without the thread-safe flag
//! is called under a mutex, shared by the instance and every maildrop and
//! reader made from it. A `PANICKED` status
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
//!
//! # Layout
//! - this file: the public entry points.
//! - `error.rs`: [`PluginError`] and its operator-facing messages.
//! - `loader.rs`: symbol lookup, the `Pop3dHost` given to plugins, header
//!   and table checks, `create`.
//! - `instance.rs`: one live instance: status mapping, locking, poisoning.
//! - `auth.rs`, `store.rs`: the trait adapters over the two tables.
//! - `sinks.rs`: host-owned output buffers and the `extern "C"` callbacks
//!   plugins write them through.
#![allow(unsafe_code)]

mod auth;
mod error;
mod instance;
mod loader;
mod sinks;
mod store;

pub use auth::PluginAuthenticator;
pub use error::PluginError;
pub use loader::entry_symbol_candidates;
pub use pop3d_plugin_api::abi::EntryFn;
pub use store::PluginStore;

pub(crate) use sinks::wipe;

use loader::{log_target, open_library};
use std::path::Path;

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
