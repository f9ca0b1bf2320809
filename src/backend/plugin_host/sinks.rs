//! Host-owned receivers for plugin output and the `extern "C"` callbacks
//! that fill them. Every callback catches panics, so none unwinds into a
//! plugin.

use super::instance::Instance;
use super::loader::HostContext;
use crate::backend::{BackendError, MessageInfo, UserInfo};
use pop3d_plugin_api::abi::{
    self, status, Pop3dBuf, Pop3dHost, Pop3dListSink, Pop3dUserOut, Status,
};
use std::collections::HashSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;

/// Error text kept from one failed call; more is cut off, since it only
/// goes to the log.
pub(super) const ERROR_TEXT_LIMIT: usize = 1024;
/// Longest secret `get_secret` may return.
pub(super) const SECRET_LIMIT: usize = 1024;
/// Total bytes of name, home and extra attributes one user may have.
pub(super) const USER_ATTRIBUTE_LIMIT: usize = 64 * 1024;
/// Longest UIDL RFC 1939 allows.
pub(super) const UID_MAX_LEN: usize = 70;

/// Host storage behind a [`Pop3dBuf`].
pub(super) struct ByteSink {
    /// What the plugin appended.
    pub(super) bytes: Vec<u8>,
    /// Most bytes kept.
    pub(super) limit: usize,
    /// Past the limit: keep what fits and say OK (error text), or refuse
    /// with PERM_FAIL (secrets, which must not be cut).
    pub(super) truncate: bool,
    /// Set when an append was refused.
    pub(super) overflowed: bool,
}

impl ByteSink {
    pub(super) fn error_text() -> ByteSink {
        ByteSink {
            bytes: Vec::new(),
            limit: ERROR_TEXT_LIMIT,
            truncate: true,
            overflowed: false,
        }
    }

    pub(super) fn secret() -> ByteSink {
        ByteSink {
            // Allocated once up front so no copy is left behind by growth.
            bytes: Vec::with_capacity(SECRET_LIMIT),
            limit: SECRET_LIMIT,
            truncate: false,
            overflowed: false,
        }
    }

    /// The ABI view of this sink; valid while `self` does not move.
    pub(super) fn as_buf(&mut self) -> Pop3dBuf {
        Pop3dBuf {
            host: (self as *mut ByteSink).cast(),
            append: Some(host_buf_append),
        }
    }

    pub(super) fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).trim().to_string()
    }
}

impl Drop for ByteSink {
    /// A secret sink may be dropped on an error path before its bytes were
    /// moved into a [`Secret`](crate::backend::Secret); wiping every sink covers that too.
    fn drop(&mut self) {
        wipe(&mut self.bytes);
    }
}

/// Host storage behind a [`Pop3dUserOut`].
pub(super) struct UserSink {
    /// What the client typed; the canonical name unless the plugin sets one.
    pub(super) typed_name: String,
    /// Canonical name set by the plugin.
    pub(super) name: Option<String>,
    /// Home directory set by the plugin.
    pub(super) home: Option<String>,
    /// Extra attributes, in the order the plugin added them.
    pub(super) extra: Vec<(String, String)>,
    /// Bytes accepted so far, against [`USER_ATTRIBUTE_LIMIT`].
    pub(super) used: usize,
    /// The first thing the host refused, reported even if the plugin
    /// ignores the callback's status.
    pub(super) problem: Option<String>,
}

impl UserSink {
    pub(super) fn new(typed_name: &str) -> UserSink {
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
    pub(super) fn as_out(&mut self) -> Pop3dUserOut {
        Pop3dUserOut {
            host: (self as *mut UserSink).cast(),
            set_name: Some(host_user_set_name),
            set_home: Some(host_user_set_home),
            add_extra: Some(host_user_add_extra),
        }
    }

    /// Accepts `len` more bytes of attributes, or records why not.
    pub(super) fn accept(&mut self, bytes: &[&[u8]]) -> Result<Vec<String>, Status> {
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
    pub(super) fn refusal<F>(&mut self, instance: &Instance<F>) -> Option<BackendError> {
        let problem = self.problem.take()?;
        let detail = format!("{}: {problem}", instance.label);
        log::warn!(target: &instance.target, "{detail}");
        Some(BackendError::PermFail(detail))
    }

    pub(super) fn finish<F>(&mut self, instance: &Instance<F>) -> Result<UserInfo, BackendError> {
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
pub(super) struct ListSink {
    /// The listing so far, in message-number order.
    pub(super) messages: Vec<MessageInfo>,
    /// UIDs seen, to refuse duplicates.
    pub(super) seen: HashSet<String>,
    /// The first thing the host refused.
    pub(super) problem: Option<String>,
}

impl ListSink {
    /// The ABI view of this sink; valid while `self` does not move.
    pub(super) fn as_sink(&mut self) -> Pop3dListSink {
        Pop3dListSink {
            host: (self as *mut ListSink).cast(),
            message: Some(host_list_message),
        }
    }

    pub(super) fn add(&mut self, wire_size: u64, uid: &[u8]) -> Status {
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
pub(super) unsafe fn callback_bytes<'a>(ptr: *const u8, len: u64) -> Option<&'a [u8]> {
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
pub(super) fn callback(body: impl FnOnce() -> Status) -> Status {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or(status::TEMP_FAIL)
}

pub(super) unsafe extern "C" fn host_log(
    host: *const Pop3dHost,
    level: u32,
    message: *const u8,
    len: u64,
) {
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

pub(super) unsafe extern "C" fn host_buf_append(
    buf: *mut Pop3dBuf,
    data: *const u8,
    len: u64,
) -> Status {
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
pub(super) unsafe fn user_sink<'a>(out: *mut Pop3dUserOut) -> Option<&'a mut UserSink> {
    // SAFETY: the caller's contract.
    unsafe {
        if out.is_null() || (*out).host.is_null() {
            return None;
        }
        Some(&mut *((*out).host as *mut UserSink))
    }
}

pub(super) unsafe extern "C" fn host_user_set_name(
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

pub(super) unsafe extern "C" fn host_user_set_home(
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

pub(super) unsafe extern "C" fn host_user_add_extra(
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

pub(super) unsafe extern "C" fn host_list_message(
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

/// Overwrites bytes about to be freed, so a secret does not linger in the
/// allocator's free memory.
pub(crate) fn wipe(bytes: &mut [u8]) {
    for byte in bytes.iter_mut() {
        // SAFETY: a valid, exclusively borrowed byte; volatile so the
        // compiler cannot drop the write to memory about to be freed.
        unsafe { ptr::write_volatile(byte, 0) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
