//! One live plugin instance: the status mapping, the call discipline
//! (serializing lock, poisoning) and destruction.

use super::loader::Header;
use super::sinks::ByteSink;
use crate::backend::BackendError;
use pop3d_plugin_api::abi::{self, status, Status};
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

/// The one place plugin statuses become backend errors. Unknown statuses
/// are temporary failures; `PANICKED` is too (the caller poisons).
pub(super) fn status_to_result(code: Status, detail: String) -> Result<(), BackendError> {
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
pub(super) struct Instance<F> {
    /// "plugin `name` (origin)", the prefix of every log line and error.
    pub(super) label: String,
    /// `log` target of everything logged about this plugin, the same one
    /// its own lines use, so one filter shows all of it.
    pub(super) target: String,
    /// The plugin's functions, copied out of its table and checked.
    pub(super) fns: F,
    /// Frees the instance when the last user is gone.
    pub(super) destroy: abi::DestroyFn,
    /// The plugin's opaque instance pointer.
    pub(super) handle: *mut c_void,
    /// Serializes every call into a plugin that is not thread-safe; `None`
    /// for one that is.
    pub(super) serial: Option<Mutex<()>>,
    /// Set when the plugin reported a panic; no call enters it afterwards.
    pub(super) poisoned: AtomicBool,
}

// SAFETY: the plugin's instance pointer is only used through `enter`, which
// holds `serial` for plugins that did not declare themselves thread-safe;
// those that did promise (FLAG_THREAD_SAFE) that concurrent calls from any
// thread are fine. The ABI lets an instance be used from any thread.
unsafe impl<F: Send> Send for Instance<F> {}
// SAFETY: as for Send.
unsafe impl<F: Sync> Sync for Instance<F> {}

impl<F> Instance<F> {
    pub(super) fn new(
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
    pub(super) fn enter(&self) -> Result<Option<MutexGuard<'_, ()>>, BackendError> {
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
    pub(super) fn enter_for_cleanup(&self) -> Option<Option<MutexGuard<'_, ()>>> {
        self.enter().ok()
    }

    /// Maps a call's status, logs failures and poisons on `PANICKED`.
    pub(super) fn finish(
        &self,
        call: &str,
        code: Status,
        err: &ByteSink,
    ) -> Result<(), BackendError> {
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

    pub(super) fn is_poisoned(&self) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
