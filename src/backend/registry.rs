//! TEMPORARY stub until the backends land.
use crate::backend::{Authenticator, Store};
use crate::config::PluginSection;
use std::sync::Arc;

#[derive(Debug)]
pub struct RegistryError(pub String);
impl std::fmt::Display for RegistryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
pub fn build_auth(section: &PluginSection) -> Result<Arc<dyn Authenticator>, RegistryError> {
    Err(RegistryError(format!("unknown {}", section.plugin)))
}
pub fn build_store(section: &PluginSection) -> Result<Arc<dyn Store>, RegistryError> {
    Err(RegistryError(format!("unknown {}", section.plugin)))
}
