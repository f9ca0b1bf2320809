//! pop3d-mbox: a pop3d store plugin for mbox files, the format of
//! `/var/mail/<user>` on Debian and most Unix systems.
//!
//! Each user's mail is one file of messages, each starting with a `From `
//! separator line. The store reads it in place, shares it safely with the
//! delivery agents that append to it (dotlock and fcntl locks, held only
//! for moments so mail keeps arriving during a session), deletes messages
//! by writing a new file and renaming it into place (so a crash never
//! leaves half a message), gives every message a UIDL that popa3d users
//! already know, and keeps an index beside the mbox so a large file is not
//! read at every login.
//!
//! ```
//! use pop3d_mbox::MboxStore;
//! use pop3d_plugin_api::{Maildrop, StorePlugin, UserInfo};
//! use std::io::Read;
//!
//! let dir = std::env::temp_dir().join(format!("pop3d-mbox-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! std::fs::write(dir.join("alice"), "From a@example.org Mon Jan  1 00:00:00 2024\nSubject: hi\n\nHello\n\n").unwrap();
//! let store = MboxStore::create(&format!("(path: \"{}/%u\")", dir.display())).unwrap();
//! let user = UserInfo { name: "alice".into(), ..UserInfo::default() };
//! let mut maildrop = store.open(&user).unwrap();
//! assert_eq!(maildrop.messages()[0].wire_size, 22);
//! let mut text = String::new();
//! maildrop.open_message(0).unwrap().read_to_string(&mut text).unwrap();
//! assert_eq!(text, "Subject: hi\n\nHello\n");
//! maildrop.commit(&[0]).unwrap();
//! # std::fs::remove_dir_all(&dir).unwrap();
//! ```
//!
//! The crate builds as an `rlib`, whose [`pop3d_plugin_entry`] the host can
//! register as the built-in store `mbox`, and as a `cdylib` exporting
//! `pop3d_plugin_mbox`.
//!
//! # Layout
//! - [`config`]: the config section and user-name checks.
//! - [`scan`]: splitting the file into messages; [`quote`]: `>From `
//!   unquoting; [`wire`]: the size the host transmits.
//! - [`uidl`]: UIDLs (X-UIDL, popa3d's digest, duplicates).
//! - [`index`]: the snapshot and its cache file.
//! - [`lock`]: dotlock, fcntl and the POP3 session lock.
//! - [`maildrop`]: open, read, and the crash-safe rewrite.
#![deny(unsafe_code)]

pub mod config;
pub mod index;
pub mod lock;
pub mod maildrop;
pub mod quote;
pub mod scan;
pub mod uidl;
pub mod wire;

#[cfg(test)]
mod test_support;

use config::Config;
use maildrop::MboxMaildrop;
use pop3d_plugin_api::{export_store_plugin, Error, StorePlugin, UserInfo};

/// The mbox store, configured.
#[derive(Debug)]
pub struct MboxStore {
    /// The checked config section.
    config: Config,
}

impl StorePlugin for MboxStore {
    type Maildrop = MboxMaildrop;

    fn create(config: &str) -> Result<Self, Error> {
        Ok(MboxStore {
            config: Config::parse(config)?,
        })
    }

    fn open(&self, user: &UserInfo) -> Result<MboxMaildrop, Error> {
        let files = self.config.files_for(user)?;
        MboxMaildrop::open(&self.config, files)
    }
}

export_store_plugin!(mbox, MboxStore);
