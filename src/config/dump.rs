//! `pop3d dump-config`: the effective configuration as RON.
//!
//! [`dump`] prints every key with the defaults filled in; with
//! [`DumpMode::NonDefault`] only the keys whose values differ from the
//! defaults (plus `auth` and `store`, which have none). Either output parses
//! back into the same [`Config`].
//!
//! Nothing here lists the keys: the text is derived from the config structs
//! through their `Serialize` implementations, so a key added to a struct
//! shows up in the dump (and in the documentation check that compares the
//! dump with `docs/config.md`) without anyone remembering to add it here.
//! A small serializer ([`ShapeOf`]) finds which values are sections (structs,
//! and backend settings whose keys are plain names) so they can be printed
//! one key per line and compared key by key; every other value is printed
//! by `ron` on one line.

use super::Config;
use serde::ser::{self, Impossible, Serialize, SerializeMap, SerializeStruct, Serializer};
use std::fmt;

/// Which keys [`dump`] prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DumpMode {
    /// Every key, defaults filled in.
    Full,
    /// Only keys whose values differ from the defaults, plus the required
    /// `auth` and `store` sections.
    NonDefault,
}

/// Why a configuration could not be printed. Only a bug can cause it (the
/// config structs always serialize), but it is reported, not unwrapped.
#[derive(Debug)]
pub struct DumpError(String);

impl fmt::Display for DumpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot print the configuration: {}", self.0)
    }
}

impl std::error::Error for DumpError {}

/// The RON text of `config`, ending in a newline.
pub fn dump(config: &Config, mode: DumpMode) -> Result<String, DumpError> {
    let shape = shape_of(config)?;
    let shape = match mode {
        DumpMode::Full => shape,
        DumpMode::NonDefault => {
            let defaults = shape_of(&defaults_for(config)?)?;
            // `auth` and `store` are required, so they are printed whatever
            // they hold.
            difference(&shape, &defaults, &["auth", "store"]).unwrap_or(Shape::Section(Vec::new()))
        }
    };
    let mut text = String::new();
    shape.print(0, &mut text);
    text.push('\n');
    Ok(text)
}

/// The configuration with every optional key at its default and the same
/// backends as `config`: what serde fills in for a file that sets only
/// `auth` and `store`.
fn defaults_for(config: &Config) -> Result<Config, DumpError> {
    let text = format!(
        "(auth: {}, store: {})",
        one_line(&config.auth)?,
        one_line(&config.store)?
    );
    ron::Options::default()
        .with_default_extension(ron::extensions::Extensions::IMPLICIT_SOME)
        .from_str(&text)
        .map_err(|e| DumpError(format!("the defaults do not parse: {e}")))
}

/// A value as it will be printed.
#[derive(Debug, Clone, PartialEq)]
enum Shape {
    /// A struct, or a map whose keys are all plain names: printed one key
    /// per line, `(key: value, ...)`, and compared key by key.
    Section(Vec<(String, Shape)>),
    /// Anything else, as RON on one line.
    Value(String),
}

impl Shape {
    fn print(&self, indent: usize, out: &mut String) {
        match self {
            Shape::Value(text) => out.push_str(text),
            // `()` would read back as the unit value, not an empty section.
            Shape::Section(fields) if fields.is_empty() => out.push_str("{}"),
            Shape::Section(fields) => {
                out.push_str("(\n");
                for (key, value) in fields {
                    out.push_str(&" ".repeat(indent + 4));
                    out.push_str(key);
                    out.push_str(": ");
                    value.print(indent + 4, out);
                    out.push_str(",\n");
                }
                out.push_str(&" ".repeat(indent));
                out.push(')');
            }
        }
    }
}

/// The keys of `shape` that differ from `defaults` (recursively within
/// sections), keeping those named in `always`; `None` if nothing differs.
fn difference(shape: &Shape, defaults: &Shape, always: &[&str]) -> Option<Shape> {
    match (shape, defaults) {
        (Shape::Section(fields), Shape::Section(default_fields)) => {
            let kept: Vec<(String, Shape)> = fields
                .iter()
                .filter_map(|(key, value)| {
                    if always.contains(&key.as_str()) {
                        return Some((key.clone(), value.clone()));
                    }
                    match default_fields.iter().find(|(k, _)| k == key) {
                        Some((_, default)) => {
                            difference(value, default, &[]).map(|value| (key.clone(), value))
                        }
                        None => Some((key.clone(), value.clone())),
                    }
                })
                .collect();
            (!kept.is_empty()).then_some(Shape::Section(kept))
        }
        _ if shape == defaults => None,
        _ => Some(shape.clone()),
    }
}

/// RON on one line with spaces after commas and colons.
fn one_line<T: Serialize + ?Sized>(value: &T) -> Result<String, DumpError> {
    let config = ron::ser::PrettyConfig::new()
        .compact_arrays(true)
        .compact_structs(true)
        .compact_maps(true)
        .new_line(" ")
        .indentor("");
    ron::ser::to_string_pretty(value, config).map_err(|e| DumpError(e.to_string()))
}

fn shape_of<T: Serialize + ?Sized>(value: &T) -> Result<Shape, DumpError> {
    match value.serialize(ShapeOf) {
        Ok(shape) => Ok(shape),
        Err(NotASection) => Ok(Shape::Value(one_line(value)?)),
    }
}

/// "This value is not a section": the answer of [`ShapeOf`] for everything
/// that is printed as a one-line value.
#[derive(Debug)]
struct NotASection;

impl fmt::Display for NotASection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a section")
    }
}

impl std::error::Error for NotASection {}

impl ser::Error for NotASection {
    fn custom<T: fmt::Display>(_msg: T) -> Self {
        NotASection
    }
}

/// A serializer that answers only one question: is this value a section,
/// and if so what are its keys and their shapes.
struct ShapeOf;

macro_rules! not_a_section {
    ($($method:ident($($arg:ty),*);)*) => {
        $(fn $method(self, $(_: $arg),*) -> Result<Shape, NotASection> {
            Err(NotASection)
        })*
    };
}

impl Serializer for ShapeOf {
    type Ok = Shape;
    type Error = NotASection;
    type SerializeSeq = Impossible<Shape, NotASection>;
    type SerializeTuple = Impossible<Shape, NotASection>;
    type SerializeTupleStruct = Impossible<Shape, NotASection>;
    type SerializeTupleVariant = Impossible<Shape, NotASection>;
    type SerializeMap = MapShape;
    type SerializeStruct = StructShape;
    type SerializeStructVariant = Impossible<Shape, NotASection>;

    not_a_section! {
        serialize_bool(bool);
        serialize_i8(i8);
        serialize_i16(i16);
        serialize_i32(i32);
        serialize_i64(i64);
        serialize_u8(u8);
        serialize_u16(u16);
        serialize_u32(u32);
        serialize_u64(u64);
        serialize_f32(f32);
        serialize_f64(f64);
        serialize_char(char);
        serialize_str(&str);
        serialize_bytes(&[u8]);
        serialize_none();
        serialize_unit();
        serialize_unit_struct(&'static str);
        serialize_unit_variant(&'static str, u32, &'static str);
    }

    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<Shape, NotASection> {
        Err(NotASection)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<Shape, NotASection> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<Shape, NotASection> {
        Err(NotASection)
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, NotASection> {
        Err(NotASection)
    }

    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, NotASection> {
        Err(NotASection)
    }

    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, NotASection> {
        Err(NotASection)
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, NotASection> {
        Err(NotASection)
    }

    fn serialize_map(self, _: Option<usize>) -> Result<MapShape, NotASection> {
        Ok(MapShape {
            fields: Vec::new(),
            key: None,
        })
    }

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<StructShape, NotASection> {
        Ok(StructShape(Vec::new()))
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, NotASection> {
        Err(NotASection)
    }
}

/// The fields of a struct being walked.
struct StructShape(Vec<(String, Shape)>);

impl SerializeStruct for StructShape {
    type Ok = Shape;
    type Error = NotASection;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), NotASection> {
        let shape = shape_of(value).map_err(|_| NotASection)?;
        self.0.push((key.to_string(), shape));
        Ok(())
    }

    fn end(self) -> Result<Shape, NotASection> {
        Ok(Shape::Section(self.0))
    }
}

/// The entries of a map being walked (a backend's `config`). It is a
/// section only if every key is a string that is a plain name, which RON
/// can write as `name: value` inside parentheses and reads back the same.
struct MapShape {
    fields: Vec<(String, Shape)>,
    /// The key waiting for its value.
    key: Option<String>,
}

impl SerializeMap for MapShape {
    type Ok = Shape;
    type Error = NotASection;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), NotASection> {
        let text = one_line(key).map_err(|_| NotASection)?;
        let name = text
            .strip_prefix('"')
            .and_then(|t| t.strip_suffix('"'))
            .filter(|name| is_plain_name(name))
            .ok_or(NotASection)?;
        self.key = Some(name.to_string());
        Ok(())
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), NotASection> {
        let key = self.key.take().ok_or(NotASection)?;
        let shape = shape_of(value).map_err(|_| NotASection)?;
        self.fields.push((key, shape));
        Ok(())
    }

    fn end(self) -> Result<Shape, NotASection> {
        Ok(Shape::Section(self.fields))
    }
}

/// A name RON accepts as a bare identifier and does not read as a value.
fn is_plain_name(name: &str) -> bool {
    let mut chars = name.chars();
    let starts_well = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    starts_well
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !matches!(
            name,
            "true"
                | "false"
                | "Some"
                | "None"
                | "inf"
                | "inff32"
                | "inff64"
                | "NaN"
                | "NaNf32"
                | "NaNf64"
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    const BACKENDS: &str = "    auth: (plugin: \"passwd-file\", config: (path: \"/etc/pop3d/passwd\")),\n    store: (plugin: \"maildir\", config: (root: \"/var/mail/%u/Maildir\")),\n";

    fn config(rest: &str) -> Config {
        parse(&format!("(\n{BACKENDS}{rest})"), "t.ron").unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn full_dump_lists_every_key_and_reads_back_the_same() {
        let config = config("    workers: 3,\n    allow_plaintext_auth: Always,\n");
        let text = dump(&config, DumpMode::Full).unwrap();
        assert_eq!(
            text,
            r#"(
    listen: [(addr: "127.0.0.1:110", implicit_tls: false)],
    tls: None,
    allow_plaintext_auth: Always,
    workers: 3,
    limits: (
        max_connections: 10000,
        max_per_ip: 100,
        idle_timeout_secs: 600,
        login_timeout_secs: 60,
        auth_failure_delay_ms: 2000,
        auth_failure_delay_max_ms: 15000,
        max_auth_failures_per_ip: 10,
        max_auth_failures_per_user: 10,
        auth_failure_window_secs: 300,
        max_bad_commands: 10,
        shutdown_grace_secs: 10,
        max_pipelined_lines: 128,
        tls_handshake_timeout_secs: 10,
    ),
    trusted_networks: [],
    user: None,
    group: None,
    allow_root: false,
    stats_listen: None,
    apop: false,
    hostname: None,
    auth: (
        plugin: "passwd-file",
        config: (path: "/etc/pop3d/passwd"),
    ),
    store: (
        plugin: "maildir",
        config: (root: "/var/mail/%u/Maildir"),
    ),
)
"#
        );
        assert_eq!(parse(&text, "dump").unwrap(), config);
    }

    #[test]
    #[cfg_attr(
        not(feature = "tls"),
        ignore = "its configurations use TLS, which a build without the `tls` feature refuses"
    )]
    fn non_default_dump_keeps_only_changes_and_the_backends() {
        let config = config(
            "    tls: (cert: \"/c.pem\", key: \"/k.pem\"),\n    limits: (max_per_ip: 5, idle_timeout_secs: 600),\n",
        );
        let text = dump(&config, DumpMode::NonDefault).unwrap();
        assert_eq!(
            text,
            r#"(
    tls: Some((cert: "/c.pem", key: "/k.pem")),
    limits: (
        max_per_ip: 5,
    ),
    auth: (
        plugin: "passwd-file",
        config: (path: "/etc/pop3d/passwd"),
    ),
    store: (
        plugin: "maildir",
        config: (root: "/var/mail/%u/Maildir"),
    ),
)
"#
        );
        assert_eq!(parse(&text, "dump").unwrap(), config);
    }

    #[test]
    fn backend_settings_that_are_not_plain_names_stay_as_written() {
        let text = "(\n    auth: (plugin: \"x\", config: {\"odd key\": [1, 2], \"n\": Some(1)}),\n    store: (plugin: \"maildir\", config: {}),\n)";
        let config = parse(text, "t.ron").unwrap();
        for mode in [DumpMode::Full, DumpMode::NonDefault] {
            let dumped = dump(&config, mode).unwrap();
            assert!(dumped.contains("config: {}"), "{dumped}");
            assert_eq!(parse(&dumped, "dump").unwrap(), config, "{dumped}");
        }
    }
}
