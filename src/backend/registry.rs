//! Builds the configured backends from their config sections.
//!
//! A section names a backend (`plugin: "maildir"`) and carries a `config`
//! section only that backend interprets, handed over as the RON text the
//! operator wrote. Every backend is a plugin:
//!
//! - a **built-in name** (`maildir`, `passwd-file`, `checkpassword`) starts
//!   the plugin crate linked into this binary, through
//!   [`plugin_host::builtin_auth`] / [`plugin_host::builtin_store`]: the same
//!   entry function, header checks and function table as a library;
//! - a **path** (anything with a `/`, or ending in `.so`) loads a shared
//!   library with [`plugin_host::load_auth`] / [`plugin_host::load_store`].
//!
//! A statically linked binary (musl, `crt-static`) has no dynamic loader,
//! so there a path is refused with a message saying so
//! ([`RegistryError::StaticallyLinked`]) instead of a loader error.
//!
//! Either way the plugin checks its settings in `create`, before the server
//! starts: a typo in a field name, a passwd-file with a bad line, or a
//! maildir root every user would share are errors here, not surprises at
//! the first login.

use super::plugin_host::{self, EntryFn, PluginError};
use super::{Authenticator, Store};
use crate::config::PluginSection;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

/// The built-in authentication backends: the name a config uses, and the
/// plugin crate's entry function.
const AUTH_BUILTINS: &[(&str, EntryFn)] = &[
    ("passwd-file", pop3d_passwd_file::pop3d_plugin_entry),
    ("checkpassword", pop3d_checkpassword::pop3d_plugin_entry),
];
/// The built-in store backends, as [`AUTH_BUILTINS`].
const STORE_BUILTINS: &[(&str, EntryFn)] = &[
    ("maildir", pop3d_maildir::pop3d_plugin_entry),
    ("mbox", pop3d_mbox::pop3d_plugin_entry),
];

/// Whether this binary is statically linked (the musl target, or any build
/// with `-C target-feature=+crt-static`): dlopen cannot work in it, so
/// plugin libraries are refused up front.
pub const STATICALLY_LINKED: bool = cfg!(target_feature = "crt-static");

/// Which of the two config sections a backend came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// The `auth` section.
    Auth,
    /// The `store` section.
    Store,
}

impl BackendKind {
    /// The built-in names of this kind, for messages and lookups.
    pub fn known_names(self) -> Vec<&'static str> {
        self.builtins().iter().map(|&(name, _)| name).collect()
    }

    fn builtins(self) -> &'static [(&'static str, EntryFn)] {
        match self {
            BackendKind::Auth => AUTH_BUILTINS,
            BackendKind::Store => STORE_BUILTINS,
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
/// it is about.
#[derive(Debug)]
pub enum RegistryError {
    /// No built-in backend has this name, and it does not look like a path.
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
    /// The name is a library path, but this binary is statically linked
    /// and cannot load libraries.
    StaticallyLinked {
        /// The section.
        kind: BackendKind,
        /// The path given.
        name: String,
    },
    /// The plugin, built-in or loaded, could not be started: the library
    /// did not load or pass the ABI checks, or the plugin refused its
    /// config.
    Plugin {
        /// The section.
        kind: BackendKind,
        /// The built-in name or path, as configured.
        name: String,
        /// What the plugin host found.
        source: PluginError,
    },
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegistryError::UnknownPlugin { kind, name } => write!(
                f,
                "{kind}: unknown plugin {name:?}; built-in {kind} plugins: {}; or give the path \
                 of a plugin library (containing a `/`, or ending in .so)",
                kind.known_names().join(", ")
            ),
            RegistryError::WrongKind { kind, name } => write!(
                f,
                "{kind}: {name:?} is {} plugin, not {} plugin; built-in {kind} plugins: {}",
                kind.other().with_article(),
                kind.with_article(),
                kind.known_names().join(", ")
            ),
            RegistryError::StaticallyLinked { kind, name } => {
                let mut builtins = STORE_BUILTINS.to_vec();
                builtins.extend_from_slice(AUTH_BUILTINS);
                let names: Vec<&str> = builtins.iter().map(|&(name, _)| name).collect();
                write!(
                    f,
                    "{kind}: cannot load plugin {name}: this pop3d is statically linked and cannot \
                     load plugin libraries; use a built-in plugin ({}) or a dynamically linked build",
                    names.join(", ")
                )
            }
            // The plugin's own explanation says what to fix; the host's
            // wrapping ("plugin X rejected its config (PERM_FAIL)") would
            // only repeat the name.
            RegistryError::Plugin {
                kind,
                name,
                source:
                    PluginError::ConfigRejected {
                        message, status, ..
                    },
            } => {
                if message.is_empty() {
                    write!(f, "{kind} {name}: the plugin rejected its config ({status}) without saying why")
                } else {
                    write!(f, "{kind} {name}: {message}")
                }
            }
            RegistryError::Plugin { kind, source, .. } => write!(f, "{kind}: {source}"),
        }
    }
}

impl std::error::Error for RegistryError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RegistryError::Plugin { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Builds the authentication backend the `auth` section names.
pub fn build_auth(section: &PluginSection) -> Result<Arc<dyn Authenticator>, RegistryError> {
    const KIND: BackendKind = BackendKind::Auth;
    let name = section.plugin.as_str();
    let config = section.config.get_ron();
    let started = if is_path(name) {
        refuse_if_static(KIND, name)?;
        plugin_host::load_auth(Path::new(name), config)
    } else {
        let entry = builtin_entry(KIND, name)?;
        plugin_host::builtin_auth(name, entry, config)
    };
    let auth = started.map_err(|source| plugin_error(KIND, name, source))?;
    Ok(Arc::new(auth))
}

/// Builds the maildrop store the `store` section names.
pub fn build_store(section: &PluginSection) -> Result<Arc<dyn Store>, RegistryError> {
    const KIND: BackendKind = BackendKind::Store;
    let name = section.plugin.as_str();
    let config = section.config.get_ron();
    let started = if is_path(name) {
        refuse_if_static(KIND, name)?;
        plugin_host::load_store(Path::new(name), config)
    } else {
        let entry = builtin_entry(KIND, name)?;
        plugin_host::builtin_store(name, entry, config)
    };
    let store = started.map_err(|source| plugin_error(KIND, name, source))?;
    Ok(Arc::new(store))
}

/// Whether a configured plugin name means a shared library rather than a
/// built-in.
fn is_path(name: &str) -> bool {
    name.contains('/') || name.ends_with(".so")
}

/// Refuses a library path in a statically linked binary, where dlopen
/// would fail with an obscure loader message (or not at all, and crash).
fn refuse_if_static(kind: BackendKind, name: &str) -> Result<(), RegistryError> {
    if STATICALLY_LINKED {
        return Err(RegistryError::StaticallyLinked {
            kind,
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// The entry function of the built-in `name` of this kind.
fn builtin_entry(kind: BackendKind, name: &str) -> Result<EntryFn, RegistryError> {
    if let Some(&(_, entry)) = kind.builtins().iter().find(|(known, _)| *known == name) {
        return Ok(entry);
    }
    let name = name.to_owned();
    if kind.other().known_names().contains(&name.as_str()) {
        Err(RegistryError::WrongKind { kind, name })
    } else {
        Err(RegistryError::UnknownPlugin { kind, name })
    }
}

fn plugin_error(kind: BackendKind, name: &str, source: PluginError) -> RegistryError {
    RegistryError::Plugin {
        kind,
        name: name.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{BackendError, UserInfo};
    use std::path::PathBuf;

    /// A scratch directory, removed when dropped.
    struct TestDir(PathBuf);

    impl TestDir {
        fn new(tag: &str) -> TestDir {
            use std::sync::atomic::{AtomicUsize, Ordering};
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let path = std::env::temp_dir().join(format!(
                "pop3d-registry-{tag}-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).unwrap();
            TestDir(path)
        }

        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TestDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

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
        // passwd-file gives out secrets, through the ABI's get_secret, as
        // Dovecot-style `{SCHEME}data` strings.
        let (secret, _) = auth.secret("alice").unwrap().unwrap();
        assert_eq!(secret.expose(), b"{PLAIN}pw");
        assert_eq!(
            auth.secret("bob").unwrap().unwrap_err(),
            BackendError::Denied
        );
    }

    #[test]
    fn checkpassword_is_built_in_and_offers_no_secrets() {
        let auth = build_auth(&section(
            "(plugin: \"checkpassword\", config: (program: \"/bin/sh\", args: [\"-c\", \"exit 1\"]))",
        ))
        .unwrap();
        assert!(auth.secret("alice").is_none());
        let message = auth_error("(plugin: \"checkpassword\", config: (program: \"/nope\"))");
        assert!(
            message.starts_with("auth checkpassword: program /nope: "),
            "{message}"
        );
    }

    #[test]
    fn unknown_names_list_the_known_ones() {
        let message = auth_error("(plugin: \"ldap\")");
        assert_eq!(
            message,
            "auth: unknown plugin \"ldap\"; built-in auth plugins: passwd-file, checkpassword; \
             or give the path of a plugin library (containing a `/`, or ending in .so)"
        );
        let message = store_error("(plugin: \"imap\")");
        assert!(
            message.contains("built-in store plugins: maildir, mbox;"),
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
             built-in store plugins: maildir, mbox"
        );
    }

    #[test]
    fn paths_are_loaded_as_plugin_libraries() {
        let dir = TestDir::new("registry-paths");
        if STATICALLY_LINKED {
            let message = store_error("(plugin: \"./libstore.so\")");
            assert_eq!(
                message,
                "store: cannot load plugin ./libstore.so: this pop3d is statically linked and \
                 cannot load plugin libraries; use a built-in plugin (maildir, mbox, \
                 passwd-file, checkpassword) or a dynamically linked build"
            );
            return;
        }
        let missing = dir.path().join("libauth.so").display().to_string();
        for name in [missing.as_str(), "./store", "libmine.so"] {
            let message = store_error(&format!("(plugin: {name:?})"));
            assert!(
                message.starts_with(&format!("store: cannot load plugin {name}: ")),
                "{message}"
            );
        }
        // A file that is there but no library: the loader's own words.
        let text = dir.path().join("notes.so");
        std::fs::write(&text, "not a library").unwrap();
        let message = auth_error(&format!("(plugin: {:?})", text.display().to_string()));
        assert!(
            message.starts_with("auth: cannot load plugin "),
            "{message}"
        );
    }

    #[test]
    fn config_errors_name_the_section_the_backend_and_the_field() {
        assert_eq!(
            store_error("(plugin: \"maildir\")"),
            "store maildir: config: missing field `root`"
        );
        assert_eq!(
            store_error("(plugin: \"maildir\", config: (root: \"/m/%u\", rot: \"x\"))"),
            "store maildir: config: unknown field `rot`, expected one of `root`, \
             `uidl_format`, `move_new_to_cur`, `listing_cache_messages`"
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
}
