//! Reading a plugin's config section (feature `config`).
//!
//! pop3d hands `create` the plugin's section as RON text, exactly as the
//! operator wrote it between `config:` and the end of the section. Parsing
//! it with [`parse`] reads it with the same RON options as pop3d's own file
//! (`Option` fields may be written without `Some(..)`) and words mistakes the
//! way pop3d does (`missing field `root``), so an operator sees one style of
//! message for the whole file. The message becomes the `PERM_FAIL` text, which
//! pop3d prints after the position of the section in the file:
//!
//! ```
//! use serde::Deserialize;
//!
//! #[derive(Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct Config {
//!     root: String,
//!     verbose: Option<bool>,
//! }
//!
//! let config: Config = pop3d_plugin_api::config::parse("(root: \"/srv\", verbose: true)").unwrap();
//! assert_eq!(config.verbose, Some(true));
//! let err = pop3d_plugin_api::config::parse::<Config>("(rot: \"/srv\")").err().unwrap();
//! assert_eq!(err.message(), "config: unknown field `rot`, expected one of `root`, `verbose`");
//! ```

use crate::Error;
use serde::de::DeserializeOwned;

/// Parses a config section into `T`; see the module docs. Any mistake is
/// [`Error::PermFail`] with a message starting `config: `.
pub fn parse<T: DeserializeOwned>(text: &str) -> Result<T, Error> {
    let options =
        ron::Options::default().with_default_extension(ron::extensions::Extensions::IMPLICIT_SOME);
    options
        .from_str(text)
        .map_err(|err| Error::PermFail(format!("config: {}", describe(&err.code))))
}

/// A deserializer error in the words an operator expects ("missing field
/// `root`"); ron's own wording for everything else. The position inside the
/// section is left out: pop3d points at the section itself.
pub fn describe(err: &ron::Error) -> String {
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
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Settings {
        path: String,
        #[serde(default)]
        limit: Option<u32>,
    }

    fn message(text: &str) -> String {
        match parse::<Settings>(text) {
            Ok(settings) => panic!("{text} was accepted as {settings:?}"),
            Err(err) => {
                assert_eq!(err.status(), crate::abi::status::PERM_FAIL);
                err.message().to_string()
            }
        }
    }

    #[test]
    fn a_good_section_parses_with_implicit_some() {
        let settings: Settings = parse("(path: \"/x\", limit: 3)").unwrap();
        assert_eq!(
            settings,
            Settings {
                path: "/x".into(),
                limit: Some(3)
            }
        );
        let settings: Settings = parse("  // a comment\n (path: \"/y\") ").unwrap();
        assert_eq!(settings.limit, None);
    }

    #[test]
    fn mistakes_are_worded_for_operators() {
        assert_eq!(message("()"), "config: missing field `path`");
        assert_eq!(
            message("(path: \"/x\", limt: 1)"),
            "config: unknown field `limt`, expected one of `path`, `limit`"
        );
        assert_eq!(
            message("(path: \"/x\", path: \"/y\")"),
            "config: duplicate field `path`"
        );
        let wrong_type = message("(path: 42)");
        assert!(wrong_type.starts_with("config: "), "{wrong_type}");
        assert!(wrong_type.contains("string"), "{wrong_type}");
    }
}
