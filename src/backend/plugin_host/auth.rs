//! The [`Authenticator`] adapter over an auth plugin's table.

use super::error::PluginError;
use super::instance::Instance;
use super::loader::{copy_table, create_instance, read_header};
use super::sinks::{ByteSink, UserSink, SECRET_LIMIT};
use super::EntryFn;
use crate::backend::{Authenticator, BackendError, Secret, UserInfo};
use pop3d_plugin_api::abi::{self, status, Pop3dAuthTable};
use std::fmt;

/// The checked functions of an auth plugin.
#[derive(Clone, Copy)]
pub(super) struct AuthFns {
    /// Required.
    pub(super) authenticate: abi::AuthenticateFn,
    /// Optional; `None` when NULL or beyond the plugin's table.
    pub(super) get_secret: Option<abi::GetSecretFn>,
}

/// An auth plugin instance, usable as an [`Authenticator`].
pub struct PluginAuthenticator {
    /// The instance and its call discipline.
    pub(super) instance: Instance<AuthFns>,
}

impl fmt::Debug for PluginAuthenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PluginAuthenticator")
            .field("label", &self.instance.label)
            .finish_non_exhaustive()
    }
}

impl PluginAuthenticator {
    pub(super) fn start(
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

    /// `get_secret` through the ABI; see [`Authenticator::secret`]. Unknown
    /// users are `Denied`.
    fn call_get_secret(
        &self,
        get_secret: abi::GetSecretFn,
        user: &str,
    ) -> Result<(Secret, UserInfo), BackendError> {
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
        Ok((Secret::new(std::mem::take(&mut secret.bytes)), info))
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

    /// `None` when the plugin leaves `get_secret` NULL (or its table ends
    /// before it).
    fn secret(&self, user: &str) -> Option<Result<(Secret, UserInfo), BackendError>> {
        let get_secret = self.instance.fns.get_secret?;
        Some(self.call_get_secret(get_secret, user))
    }
}
