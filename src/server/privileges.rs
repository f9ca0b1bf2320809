//! Running as root only as long as needed.
//!
//! Started as root, pop3d binds its ports and reads the TLS key, then
//! becomes the configured `user` and `group` for good (supplementary groups
//! cleared, then group, then user: in that order, since only root may
//! change groups) before any worker starts and before the first client is
//! accepted. Afterwards it checks that root cannot be regained.
//!
//! The switch goes through the C library (`nix`), whose `setuid` applies
//! to every thread of the process; the Linux system call alone would change
//! only the calling thread. It is done before any thread is started anyway.
//!
//! Serving as root is refused unless `user` is set or `allow_root: true`
//! says it is meant; the demo (no configuration file) runs as whoever
//! started it and says so itself.

use crate::config::Config;
use nix::unistd::{self, Gid, Group, Uid, User};
use std::fmt;

/// The account to become.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The user name as configured, for messages.
    pub user: String,
    pub uid: Uid,
    pub gid: Gid,
}

/// Why the process could not take on the configured identity.
#[derive(Debug)]
pub enum PrivilegeError {
    /// Running as root and nothing says to switch or that root is meant.
    RootWithoutUser,
    /// The configured user does not exist (or could not be looked up).
    UnknownUser(String, String),
    /// The configured group does not exist (or could not be looked up).
    UnknownGroup(String, String),
    /// A system call refused the switch.
    Switch(String),
}

impl fmt::Display for PrivilegeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PrivilegeError::RootWithoutUser => write!(
                f,
                "refusing to serve clients as root: set `user` (and `group`) in the configuration to the account pop3d should run as once its ports are bound, or `allow_root: true` if running as root is really meant"
            ),
            PrivilegeError::UnknownUser(name, why) => {
                write!(f, "user `{name}` (config key `user`): {why}")
            }
            PrivilegeError::UnknownGroup(name, why) => {
                write!(f, "group `{name}` (config key `group`): {why}")
            }
            PrivilegeError::Switch(why) => write!(f, "cannot drop privileges: {why}"),
        }
    }
}

impl std::error::Error for PrivilegeError {}

/// Looks up the configured account, before anything is bound, so a typo
/// is reported before the server does anything. `Ok(None)` when the
/// process stays as it is. `demo` exempts the embedded demo from the
/// root check.
pub fn plan(config: &Config, demo: bool) -> Result<Option<Account>, PrivilegeError> {
    let Some(name) = &config.user else {
        if unistd::geteuid().is_root() && !config.allow_root && !demo {
            return Err(PrivilegeError::RootWithoutUser);
        }
        return Ok(None);
    };
    let user = match User::from_name(name) {
        Ok(Some(user)) => user,
        Ok(None) => {
            return Err(PrivilegeError::UnknownUser(
                name.clone(),
                "no such user on this system (create it, e.g. useradd --system pop3d)".into(),
            ))
        }
        Err(e) => return Err(PrivilegeError::UnknownUser(name.clone(), e.to_string())),
    };
    let gid = match &config.group {
        None => user.gid,
        Some(group_name) => match Group::from_name(group_name) {
            Ok(Some(group)) => group.gid,
            Ok(None) => {
                return Err(PrivilegeError::UnknownGroup(
                    group_name.clone(),
                    "no such group on this system".into(),
                ))
            }
            Err(e) => {
                return Err(PrivilegeError::UnknownGroup(
                    group_name.clone(),
                    e.to_string(),
                ))
            }
        },
    };
    Ok(Some(Account {
        user: name.clone(),
        uid: user.uid,
        gid,
    }))
}

/// Becomes `account` for good. Already being it (started by systemd with
/// `User=`) is fine; being someone else without root is an error, since
/// the switch cannot happen.
pub fn become_account(account: &Account) -> Result<(), PrivilegeError> {
    let already = unistd::getuid() == account.uid
        && unistd::geteuid() == account.uid
        && unistd::getgid() == account.gid
        && unistd::getegid() == account.gid;
    if already {
        log::info!(
            "running as user {} (uid {}, gid {}) already",
            account.user,
            account.uid,
            account.gid
        );
        return Ok(());
    }
    if !unistd::geteuid().is_root() {
        return Err(PrivilegeError::Switch(format!(
            "pop3d runs as uid {}, not root, so it cannot become user {}; start it as root or as {} itself, or remove `user`",
            unistd::geteuid(),
            account.user,
            account.user
        )));
    }
    let step = |what: &str, result: nix::Result<()>| {
        result.map_err(|e| PrivilegeError::Switch(format!("{what}: {e}")))
    };
    step("setgroups", unistd::setgroups(&[account.gid]))?;
    step("setgid", unistd::setgid(account.gid))?;
    step("setuid", unistd::setuid(account.uid))?;
    if !account.uid.is_root() && unistd::setuid(Uid::from_raw(0)).is_ok() {
        return Err(PrivilegeError::Switch(
            "root could be regained after setuid; refusing to go on".into(),
        ));
    }
    log::info!(
        "dropped privileges: now user {} (uid {}, gid {})",
        account.user,
        account.uid,
        account.gid
    );
    Ok(())
}

/// Says so when the server keeps running as root.
pub fn warn_if_root(demo: bool) {
    if unistd::geteuid().is_root() && !demo {
        log::warn!("serving clients as root (allow_root: true); set `user` to drop privileges");
    }
}
