//! Logging from a plugin into the host's log.
//!
//! A plugin does not own the process's logger: in a shared library it has
//! its own copy of any logging crate, and linked in as a built-in it shares
//! the host's. So the SDK does not install a `log` crate logger at all; it
//! sends each line through the host's `log` callback, which writes it into
//! the host's log under the plugin's name. Use the macros:
//!
//! ```
//! pop3d_plugin_api::log_warn!("maildrop {} has {} unreadable files", "bob", 2);
//! ```
//!
//! During a call from the host the line is attributed to the plugin being
//! called. Outside one (a thread the plugin started), it goes to the plugin
//! that was loaded last; before any plugin was loaded it is dropped.

use crate::abi::{self, Pop3dHost};
use std::cell::Cell;
use std::fmt;
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

/// How serious a log line is; the host maps it onto its own levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Something failed.
    Error,
    /// Something is wrong but the plugin carries on.
    Warn,
    /// Normal operational events.
    Info,
    /// Detail for debugging a setup.
    Debug,
    /// Very fine detail.
    Trace,
}

impl Level {
    /// The ABI number of this level.
    pub fn to_abi(self) -> u32 {
        match self {
            Level::Error => abi::LOG_ERROR,
            Level::Warn => abi::LOG_WARN,
            Level::Info => abi::LOG_INFO,
            Level::Debug => abi::LOG_DEBUG,
            Level::Trace => abi::LOG_TRACE,
        }
    }
}

thread_local! {
    /// The host of the plugin whose call is running on this thread.
    static CURRENT_HOST: Cell<*const Pop3dHost> = const { Cell::new(ptr::null()) };
}

/// The host pointer from the most recent entry call, for lines logged
/// outside any call.
static LAST_HOST: AtomicPtr<Pop3dHost> = AtomicPtr::new(ptr::null_mut());

/// Remembers `host` as the fallback for lines logged outside a call.
pub(crate) fn remember_last_host(host: *const Pop3dHost) {
    LAST_HOST.store(host.cast_mut(), Ordering::Release);
}

/// Makes `host` the current one on this thread until the returned guard is
/// dropped; the previous one comes back then, so nested calls (a built-in
/// plugin calling another) attribute correctly.
pub(crate) fn enter_call(host: *const Pop3dHost) -> CallScope {
    let previous = CURRENT_HOST.with(|current| current.replace(host));
    CallScope { previous }
}

/// Restores the previous current host when a call ends, even by unwinding.
pub(crate) struct CallScope {
    /// The host that was current before this call began.
    previous: *const Pop3dHost,
}

impl Drop for CallScope {
    fn drop(&mut self) {
        CURRENT_HOST.with(|current| current.set(self.previous));
    }
}

/// Sends one line to the host's log. The macros call this.
pub fn log(level: Level, args: fmt::Arguments<'_>) {
    let mut host = CURRENT_HOST.with(Cell::get);
    if host.is_null() {
        host = LAST_HOST.load(Ordering::Acquire);
    }
    if host.is_null() {
        return;
    }
    let text = args.to_string();
    // SAFETY: `host` was handed to an entry function, whose contract says it
    // points to a Pop3dHost valid for the rest of the process; we only read.
    let log_fn = unsafe { (*host).log };
    if let Some(log_fn) = log_fn {
        // SAFETY: the host's callback takes a borrowed UTF-8 buffer for the
        // duration of the call; `text` outlives it.
        unsafe { log_fn(host, level.to_abi(), text.as_ptr(), text.len() as u64) };
    }
}

/// Logs at error level through the host.
#[macro_export]
macro_rules! log_error {
    ($($arg:tt)+) => { $crate::logging::log($crate::logging::Level::Error, format_args!($($arg)+)) };
}

/// Logs at warn level through the host.
#[macro_export]
macro_rules! log_warn {
    ($($arg:tt)+) => { $crate::logging::log($crate::logging::Level::Warn, format_args!($($arg)+)) };
}

/// Logs at info level through the host.
#[macro_export]
macro_rules! log_info {
    ($($arg:tt)+) => { $crate::logging::log($crate::logging::Level::Info, format_args!($($arg)+)) };
}

/// Logs at debug level through the host.
#[macro_export]
macro_rules! log_debug {
    ($($arg:tt)+) => { $crate::logging::log($crate::logging::Level::Debug, format_args!($($arg)+)) };
}

/// Logs at trace level through the host.
#[macro_export]
macro_rules! log_trace {
    ($($arg:tt)+) => { $crate::logging::log($crate::logging::Level::Trace, format_args!($($arg)+)) };
}
