//! The [`Store`], [`Maildrop`] and [`MessageReader`] adapters over a
//! store plugin's table.

use super::error::PluginError;
use super::instance::Instance;
use super::loader::{copy_table, create_instance, read_header};
use super::sinks::{ByteSink, ListSink};
use super::EntryFn;
use crate::backend::{BackendError, Maildrop, MessageInfo, MessageReader, Store, UserInfo};
use pop3d_plugin_api::abi::{self, status, Pop3dKeyValue, Pop3dStoreTable, Pop3dStr, Pop3dUser};
use std::ffi::c_void;
use std::fmt;
use std::ptr;
use std::sync::Arc;

/// The checked functions of a store plugin.
#[derive(Clone, Copy)]
pub(super) struct StoreFns {
    /// Locks a maildrop and snapshots it.
    pub(super) open: abi::OpenFn,
    /// Reports the snapshot, right after `open`.
    pub(super) list: abi::ListFn,
    /// Starts streaming one message.
    pub(super) open_message: abi::OpenMessageFn,
    /// Pulls the next chunk of a message.
    pub(super) read: abi::ReadFn,
    /// Frees a reader.
    pub(super) close_reader: abi::CloseReaderFn,
    /// Deletes, releases and frees a maildrop.
    pub(super) commit: abi::CommitFn,
    /// Releases and frees a maildrop without deleting.
    pub(super) release: abi::ReleaseFn,
}

/// A store plugin instance, usable as a [`Store`].
pub struct PluginStore {
    /// Shared with every maildrop and reader, so the instance is destroyed
    /// only after the last of them is closed.
    pub(super) instance: Arc<Instance<StoreFns>>,
}

impl fmt::Debug for PluginStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PluginStore")
            .field("label", &self.instance.label)
            .finish_non_exhaustive()
    }
}

impl PluginStore {
    pub(super) fn start(
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
    pub(super) fn list(&self, handle: *mut c_void) -> Result<Vec<MessageInfo>, BackendError> {
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

pub(super) fn borrowed(text: &str) -> Pop3dStr {
    Pop3dStr {
        ptr: text.as_ptr(),
        len: text.len() as u64,
    }
}

/// An open maildrop of a store plugin.
pub(super) struct PluginMaildrop {
    /// Keeps the instance alive and carries its call discipline.
    pub(super) instance: Arc<Instance<StoreFns>>,
    /// The plugin's maildrop handle; NULL once given back.
    pub(super) handle: *mut c_void,
    /// The snapshot listed at open.
    pub(super) messages: Vec<MessageInfo>,
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
pub(super) struct PluginReader {
    /// Keeps the instance alive and carries its call discipline.
    pub(super) instance: Arc<Instance<StoreFns>>,
    /// The plugin's reader handle.
    pub(super) handle: *mut c_void,
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
