//! panicky-store: a test fixture, a store plugin that panics in every call.
//!
//! It exists to show that a panic inside a plugin never unwinds into pop3d:
//! the SDK's export macro catches it and returns `PANICKED`, and the host
//! then disables the instance. `create` succeeds unless the config text
//! contains `panic_in_create: true`, so both a panic at start-up and one
//! in a live instance can be tested.
#![deny(unsafe_code)]

use pop3d_plugin_api::{export_store_plugin, Error, Maildrop, MessageInfo, StorePlugin, UserInfo};

/// The plugin instance; it holds nothing because it never gets far.
#[derive(Debug)]
pub struct PanickyStore;

impl StorePlugin for PanickyStore {
    type Maildrop = PanickyMaildrop;

    fn create(config: &str) -> Result<Self, Error> {
        if config.contains("panic_in_create: true") {
            panic!("panicky-store panics in create, as configured");
        }
        Ok(PanickyStore)
    }

    fn open(&self, user: &UserInfo) -> Result<PanickyMaildrop, Error> {
        panic!("panicky-store panics in open (user {})", user.name);
    }
}

/// Never constructed: `open` panics first. It only completes the types.
#[derive(Debug)]
pub struct PanickyMaildrop;

impl Maildrop for PanickyMaildrop {
    type Reader = std::io::Empty;

    fn messages(&self) -> &[MessageInfo] {
        panic!("panicky-store panics in messages");
    }

    fn open_message(&mut self, _index: usize) -> Result<Self::Reader, Error> {
        panic!("panicky-store panics in open_message");
    }

    fn commit(self, _indices: &[usize]) -> Result<(), Error> {
        panic!("panicky-store panics in commit");
    }
}

export_store_plugin!(panicky_store, PanickyStore);
