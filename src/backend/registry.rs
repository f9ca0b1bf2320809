//! Builds the configured backends from their config sections.
//!
//! A section names a backend (`plugin: "maildir"`) and carries a `config`
//! value only that backend interprets. Each built-in backend reads its
//! `config` into its own struct, which refuses unknown fields, and checks it
//! before the server starts: a typo in a field name, a passwd-file with a
//! bad line, or a maildir root every user would share are errors here, not
//! surprises at the first login.
//!
//! Plugin files (a path, or a name ending in `.so`) are recognised but not
//! loaded yet; that comes with the plugin host.

use super::maildir::{MaildirConfig, MaildirStore};
use super::passwd_file::{PasswdFile, PasswdFileConfig};
use super::{Authenticator, Store};
use crate::config::PluginSection;
use serde::de::DeserializeOwned;
use std::fmt;
use std::sync::Arc;

/// The built-in authentication backends, by the name a config uses.
pub const AUTH_BACKENDS: &[&str] = &["passwd-file"];
/// The built-in store backends, by the name a config uses.
pub const STORE_BACKENDS: &[&str] = &["maildir"];

/// Which of the two config sections a backend came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// The `auth` section.
    Auth,
    /// The `store` section.
    Store,
}

impl BackendKind {
    fn known_names(self) -> &'static [&'static str] {
        match self {
            BackendKind::Auth => AUTH_BACKENDS,
            BackendKind::Store => STORE_BACKENDS,
        }
    }

    /// "an auth" or "a store", for sentences.
    fn with_article(self) -> &'static str {
        match self {
            BackendKind::Auth => "an auth",
            BackendKind::Store => "a store",
        }
    }

    fn other(self) -> BackendKind {
        match self {
            BackendKind::Auth => BackendKind::Store,
            BackendKind::Store => BackendKind::Auth,
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendKind::Auth => "auth",
            BackendKind::Store => "store",
        })
    }
}

/// Why a backend could not be built. Every message starts with the section
/// and backend it is about.
#[derive(Debug)]
pub enum RegistryError {
    /// No built-in backend has this name.
    UnknownPlugin {
        /// The section.
        kind: BackendKind,
        /// The name given.
        name: String,
    },
    /// The name is a built-in backend of the other kind (a store named in
    /// the `auth` section, or the reverse).
    WrongKind {
        /// The section.
        kind: BackendKind,
        /// The name given.
        name: String,
    },
    /// The name is a path to a plugin file, which cannot be loaded yet.
    PluginFilesUnsupported {
        /// The section.
        kind: BackendKind,
        /// The path given.
        path: String,
    },
    /// The `config` value does not fit the backend's settings.
    Config {
        /// The section.
        kind: BackendKind,
        /// The backend.
        plugin: &'static str,
        /// What does not fit, from the deserializer.
        message: String,
    },
    /// The settings parsed but the backend refused them (a file that does
    /// not exist or parse, a root every user would share).
    Backend {
        /// The section.
        kind: BackendKind,
        /// The backend.
        plugin: &'static str,
        /// The backend's own error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegistryError::UnknownPlugin { kind, name } => write!(
                f,
                "{kind}: unknown plugin {name:?}; built-in {kind} plugins: {}",
                kind.known_names().join(", ")
            ),
            RegistryError::WrongKind { kind, name } => write!(
                f,
                "{kind}: {name:?} is {} plugin, not {} plugin; built-in {kind} plugins: {}",
                kind.other().with_article(),
                kind.with_article(),
                kind.known_names().join(", ")
            ),
            RegistryError::PluginFilesUnsupported { kind, path } => write!(
                f,
                "{kind}: plugin {path:?} looks like a plugin file, but loading plugins from files \
                 is not built yet; use a built-in {kind} plugin: {}",
                kind.known_names().join(", ")
            ),
            RegistryError::Config {
                kind,
                plugin,
                message,
            } => write!(f, "{kind} {plugin}: config: {message}"),
            RegistryError::Backend {
                kind,
                plugin,
                source,
            } => write!(f, "{kind} {plugin}: {source}"),
        }
    }
}

impl std::error::Error for RegistryError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RegistryError::Backend { source, .. } => Some(source.as_ref()),
            _ => None,
        }
    }
}

/// Builds the authentication backend the `auth` section names.
pub fn build_auth(section: &PluginSection) -> Result<Arc<dyn Authenticator>, RegistryError> {
    const KIND: BackendKind = BackendKind::Auth;
    match section.plugin.as_str() {
        "passwd-file" => {
            const PLUGIN: &str = "passwd-file";
            let config: PasswdFileConfig = parse_config(KIND, PLUGIN, &section.config)?;
            let passwd = PasswdFile::new(config).map_err(|err| backend_error(KIND, PLUGIN, err))?;
            Ok(Arc::new(passwd))
        }
        other => Err(unknown_plugin(KIND, other)),
    }
}

/// Builds the maildrop store the `store` section names.
pub fn build_store(section: &PluginSection) -> Result<Arc<dyn Store>, RegistryError> {
    const KIND: BackendKind = BackendKind::Store;
    match section.plugin.as_str() {
        "maildir" => {
            const PLUGIN: &str = "maildir";
            let config: MaildirConfig = parse_config(KIND, PLUGIN, &section.config)?;
            let store =
                MaildirStore::new(config).map_err(|err| backend_error(KIND, PLUGIN, err))?;
            Ok(Arc::new(store))
        }
        other => Err(unknown_plugin(KIND, other)),
    }
}

fn backend_error(
    kind: BackendKind,
    plugin: &'static str,
    err: impl std::error::Error + Send + Sync + 'static,
) -> RegistryError {
    RegistryError::Backend {
        kind,
        plugin,
        source: Box::new(err),
    }
}

fn unknown_plugin(kind: BackendKind, name: &str) -> RegistryError {
    if name.contains('/') || name.ends_with(".so") {
        RegistryError::PluginFilesUnsupported {
            kind,
            path: name.to_owned(),
        }
    } else if kind.other().known_names().contains(&name) {
        RegistryError::WrongKind {
            kind,
            name: name.to_owned(),
        }
    } else {
        RegistryError::UnknownPlugin {
            kind,
            name: name.to_owned(),
        }
    }
}

/// Reads a backend's `config` value into its settings struct.
fn parse_config<T: DeserializeOwned>(
    kind: BackendKind,
    plugin: &'static str,
    value: &ron::Value,
) -> Result<T, RegistryError> {
    value
        .clone()
        .into_rust()
        .map_err(|err| RegistryError::Config {
            kind,
            plugin,
            message: describe_config_error(&err),
        })
}

/// A deserializer error in the words an operator expects ("missing field
/// `root`"); ron's own wording is kept for everything else.
fn describe_config_error(err: &ron::Error) -> String {
    match err {
        ron::Error::MissingStructField { field, .. } => format!("missing field `{field}`"),
        ron::Error::NoSuchStructField {
            expected, found, ..
        } => {
            let expected: Vec<String> = expected.iter().map(|name| format!("`{name}`")).collect();
            format!(
                "unknown field `{found}`, expected {}",
                match expected.as_slice() {
                    [only] => only.clone(),
                    _ => format!("one of {}", expected.join(", ")),
                }
            )
        }
        ron::Error::DuplicateStructField { field, .. } => format!("duplicate field `{field}`"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::maildir::TestDir;
    use crate::backend::{BackendError, UserInfo};

    /// A section as an operator would write it in the config file.
    fn section(ron_text: &str) -> PluginSection {
        ron::from_str(ron_text).unwrap()
    }

    fn auth_error(ron_text: &str) -> String {
        match build_auth(&section(ron_text)) {
            Ok(_) => panic!("{ron_text} was accepted"),
            Err(err) => err.to_string(),
        }
    }

    fn store_error(ron_text: &str) -> String {
        match build_store(&section(ron_text)) {
            Ok(_) => panic!("{ron_text} was accepted"),
            Err(err) => err.to_string(),
        }
    }

    #[test]
    fn builds_both_backends_and_they_work_together() {
        let dir = TestDir::new("registry");
        let passwd = dir.path().join("passwd");
        std::fs::write(&passwd, "alice:{PLAIN}pw\n").unwrap();
        let mail = dir.path().join("mail");
        std::fs::create_dir_all(mail.join("alice/new")).unwrap();
        std::fs::write(mail.join("alice/new/1.msg"), "Subject: hi\n\nhello\n").unwrap();

        let auth = build_auth(&section(&format!(
            "(plugin: \"passwd-file\", config: (path: {:?}))",
            passwd.display().to_string()
        )))
        .unwrap();
        let store = build_store(&section(&format!(
            "(plugin: \"maildir\", config: (root: \"{}/%u\"))",
            mail.display()
        )))
        .unwrap();

        assert_eq!(
            auth.authenticate("alice", b"nope"),
            Err(BackendError::Denied)
        );
        let user: UserInfo = auth.authenticate("alice", b"pw").unwrap();
        let maildrop = store.open(&user).unwrap();
        assert_eq!(maildrop.messages().len(), 1);
        assert_eq!(maildrop.messages()[0].wire_size, 22);
    }

    #[test]
    fn unknown_names_list_the_known_ones() {
        let message = auth_error("(plugin: \"ldap\")");
        assert_eq!(
            message,
            "auth: unknown plugin \"ldap\"; built-in auth plugins: passwd-file"
        );
        let message = store_error("(plugin: \"mbox\")");
        assert!(
            message.contains("built-in store plugins: maildir"),
            "{message}"
        );
    }

    #[test]
    fn a_backend_of_the_other_kind_is_named_as_such() {
        let message = auth_error("(plugin: \"maildir\", config: (root: \"/m/%u\"))");
        assert!(
            message.contains("\"maildir\" is a store plugin"),
            "{message}"
        );
        let message = store_error("(plugin: \"passwd-file\")");
        assert_eq!(
            message,
            "store: \"passwd-file\" is an auth plugin, not a store plugin; \
             built-in store plugins: maildir"
        );
    }

    #[test]
    fn plugin_files_are_not_loaded_yet() {
        for name in ["/usr/lib/pop3d/libauth.so", "./store", "libmine.so"] {
            let message = store_error(&format!("(plugin: {name:?})"));
            assert!(
                message.contains("loading plugins from files is not built yet"),
                "{message}"
            );
            assert!(message.contains(name));
        }
    }

    #[test]
    fn config_errors_name_the_section_the_backend_and_the_field() {
        assert_eq!(
            store_error("(plugin: \"maildir\")"),
            "store maildir: config: missing field `root`"
        );
        assert_eq!(
            store_error("(plugin: \"maildir\", config: (root: \"/m/%u\", rot: \"x\"))"),
            "store maildir: config: unknown field `rot`, expected `root`"
        );
        assert_eq!(
            auth_error("(plugin: \"passwd-file\", config: (file: \"/etc/passwd\"))"),
            "auth passwd-file: config: unknown field `file`, expected `path`"
        );
        let message = store_error("(plugin: \"maildir\", config: (root: 42))");
        assert!(message.starts_with("store maildir: config: "), "{message}");
    }

    #[test]
    fn backends_check_their_settings_at_build_time() {
        let message = store_error("(plugin: \"maildir\", config: (root: \"/var/mail/shared\"))");
        assert!(
            message.starts_with("store maildir: ") && message.contains("share one maildrop"),
            "{message}"
        );

        let dir = TestDir::new("registry-bad-passwd");
        let passwd = dir.path().join("passwd");
        std::fs::write(&passwd, "alice:{PLAIN}pw\n\nbob\n").unwrap();
        let message = auth_error(&format!(
            "(plugin: \"passwd-file\", config: (path: {:?}))",
            passwd.display().to_string()
        ));
        assert!(
            message.starts_with(&format!("auth passwd-file: {}:3: ", passwd.display())),
            "{message}"
        );

        let missing = dir.path().join("absent");
        let message = auth_error(&format!(
            "(plugin: \"passwd-file\", config: (path: {:?}))",
            missing.display().to_string()
        ));
        assert!(message.contains("cannot read"), "{message}");
    }

    #[test]
    fn backends_are_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<MaildirStore>();
        assert_send_sync::<PasswdFile>();
    }
}
