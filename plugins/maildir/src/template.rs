//! The maildir root template (`/var/mail/%u/Maildir`, `~/Maildir`,
//! `/srv/mail/%d/%n`) and the checks that keep every user name inside it.
//!
//! A template is parsed and checked once, when the store is created, so
//! expanding it at a login cannot fail for configuration reasons; what can
//! still fail is the user: a name that could lead outside the root, or a
//! `~` template for a user without an absolute home.

use pop3d_plugin_api::user_name::{check_user_name, shorten_for_log, usable_name_part};
use pop3d_plugin_api::{log_warn, Error, UserInfo};
use std::fmt;
use std::path::PathBuf;

/// Why a maildir configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MaildirConfigError {
    /// `root` is the empty string.
    EmptyRoot,
    /// `root` is neither absolute nor starts with `~`; a relative path would
    /// depend on the server's working directory.
    RelativeRoot(String),
    /// `root` starts with `~name`; only the user's own home (`~` or `~/..`)
    /// is supported.
    TildeUser(String),
    /// `root` uses a `%` variable that does not exist.
    UnknownVariable { root: String, variable: char },
    /// `root` ends in a single `%`.
    TrailingPercent(String),
    /// `root` has nothing that differs between users, so every user would
    /// share one maildrop.
    NotPerUser(String),
    /// `root` varies only by domain, so all users of a domain would share one
    /// maildrop.
    DomainOnly(String),
}

impl fmt::Display for MaildirConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MaildirConfigError::EmptyRoot => {
                write!(f, "root is empty; set it to e.g. \"/var/mail/%u/Maildir\"")
            }
            MaildirConfigError::RelativeRoot(root) => write!(
                f,
                "root {root:?} is a relative path; start it with / or with ~ (the user's home)"
            ),
            MaildirConfigError::TildeUser(root) => write!(
                f,
                "root {root:?}: only a plain ~ (the logged-in user's home) is supported, not ~name"
            ),
            MaildirConfigError::UnknownVariable { root, variable } => write!(
                f,
                "root {root:?}: unknown variable %{variable}; use %u (user), %n (part before @), \
                 %d (part after @) or %% (a literal %)"
            ),
            MaildirConfigError::TrailingPercent(root) => write!(
                f,
                "root {root:?} ends in a lone %; write %% for a literal %"
            ),
            MaildirConfigError::NotPerUser(root) => write!(
                f,
                "root {root:?} is the same for every user, so all users would share one \
                 maildrop; put %u (or %n, or a leading ~) in it"
            ),
            MaildirConfigError::DomainOnly(root) => write!(
                f,
                "root {root:?} varies only by domain (%d), so all users of a domain would share \
                 one maildrop; add %n or use %u"
            ),
        }
    }
}

impl std::error::Error for MaildirConfigError {}

/// One part of a parsed root template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum TemplatePart {
    /// Text copied as is (with `%%` already turned into `%`).
    Literal(String),
    /// The user's home directory; only ever the first part.
    Home,
    /// `%u`: the full user name.
    User,
    /// `%n`: the user name up to the first `@`.
    LocalPart,
    /// `%d`: the user name after the first `@`.
    Domain,
}

/// A parsed maildir root template, checked once at start-up so expanding it
/// per login cannot fail for configuration reasons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootTemplate {
    /// The template split into text and variables, in order.
    parts: Vec<TemplatePart>,
}

impl RootTemplate {
    /// Parses and checks a template such as `/var/mail/%d/%n/Maildir`.
    pub fn parse(root: &str) -> Result<RootTemplate, MaildirConfigError> {
        if root.is_empty() {
            return Err(MaildirConfigError::EmptyRoot);
        }
        let mut parts = Vec::new();
        let rest = if let Some(after_tilde) = root.strip_prefix('~') {
            if !(after_tilde.is_empty() || after_tilde.starts_with('/')) {
                return Err(MaildirConfigError::TildeUser(root.to_owned()));
            }
            parts.push(TemplatePart::Home);
            after_tilde
        } else if root.starts_with('/') {
            root
        } else {
            return Err(MaildirConfigError::RelativeRoot(root.to_owned()));
        };

        let mut literal = String::new();
        let mut chars = rest.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                literal.push(c);
                continue;
            }
            let variable = match chars.next() {
                Some('%') => {
                    literal.push('%');
                    continue;
                }
                Some('u') => TemplatePart::User,
                Some('n') => TemplatePart::LocalPart,
                Some('d') => TemplatePart::Domain,
                Some(other) => {
                    return Err(MaildirConfigError::UnknownVariable {
                        root: root.to_owned(),
                        variable: other,
                    })
                }
                None => return Err(MaildirConfigError::TrailingPercent(root.to_owned())),
            };
            if !literal.is_empty() {
                parts.push(TemplatePart::Literal(std::mem::take(&mut literal)));
            }
            parts.push(variable);
        }
        if !literal.is_empty() {
            parts.push(TemplatePart::Literal(literal));
        }

        let per_user = parts.iter().any(|part| {
            matches!(
                part,
                TemplatePart::Home | TemplatePart::User | TemplatePart::LocalPart
            )
        });
        if !per_user {
            return Err(if parts.contains(&TemplatePart::Domain) {
                MaildirConfigError::DomainOnly(root.to_owned())
            } else {
                MaildirConfigError::NotPerUser(root.to_owned())
            });
        }
        Ok(RootTemplate { parts })
    }

    /// The maildir of `user`. Refuses (with [`Error::PermFail`]) user
    /// names that could lead outside the root or onto another user's
    /// maildir, and `~` for users without an absolute home.
    pub fn expand(&self, user: &UserInfo) -> Result<PathBuf, Error> {
        let name = user.name.as_str();
        if let Err(reason) = check_user_name(name) {
            log_warn!(
                "maildir: refusing user name {:?}: {reason}",
                shorten_for_log(name)
            );
            return Err(Error::PermFail(format!(
                "user name refused by the maildir store: {reason}"
            )));
        }
        let (local_part, domain) = name.split_once('@').unwrap_or((name, ""));

        let mut path = String::new();
        for part in &self.parts {
            match part {
                TemplatePart::Literal(text) => path.push_str(text),
                TemplatePart::User => path.push_str(name),
                TemplatePart::LocalPart => {
                    path.push_str(checked_name_part(name, local_part, "%n", "local part")?)
                }
                TemplatePart::Domain => {
                    path.push_str(checked_name_part(name, domain, "%d", "domain")?)
                }
                TemplatePart::Home => {
                    let home = user.home.as_deref().unwrap_or("");
                    if home.is_empty() {
                        return Err(Error::PermFail(format!(
                            "user {name} has no home directory in the user database, but the \
                             maildir root starts with ~; give the user a home or use %u"
                        )));
                    }
                    if !home.starts_with('/') {
                        return Err(Error::PermFail(format!(
                            "user {name} has a relative home directory {home:?}; the maildir \
                             root starts with ~, which needs an absolute home"
                        )));
                    }
                    path.push_str(home);
                }
            }
        }
        Ok(PathBuf::from(path))
    }
}

/// `value` (the `%n` or `%d` of `name`), if it is usable as a path
/// component on its own: an empty or dot-led part would put the maildir on a
/// parent directory or on another user's path.
fn checked_name_part<'a>(
    name: &str,
    value: &'a str,
    variable: &str,
    what: &str,
) -> Result<&'a str, Error> {
    if !usable_name_part(value) {
        log_warn!(
            "maildir: refusing user name {:?}: its {what} ({variable}) is empty or starts with a dot",
            shorten_for_log(name)
        );
        return Err(Error::PermFail(format!(
            "user name refused by the maildir store: its {what} ({variable}) is empty or starts \
             with a dot"
        )));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> UserInfo {
        UserInfo {
            name: name.to_owned(),
            ..UserInfo::default()
        }
    }

    #[test]
    fn template_variables_expand() {
        let expand = |root: &str, info: &UserInfo| RootTemplate::parse(root).unwrap().expand(info);
        let alice = user("alice@example.org");
        assert_eq!(
            expand("/var/mail/%u/Maildir", &alice).unwrap(),
            PathBuf::from("/var/mail/alice@example.org/Maildir")
        );
        assert_eq!(
            expand("/srv/%d/%n", &alice).unwrap(),
            PathBuf::from("/srv/example.org/alice")
        );
        assert_eq!(
            expand("/srv/100%%/%n", &alice).unwrap(),
            PathBuf::from("/srv/100%/alice")
        );
        assert_eq!(
            expand("/srv/%n", &user("bob")).unwrap(),
            PathBuf::from("/srv/bob")
        );
        let with_home = UserInfo {
            home: Some("/home/carol".to_owned()),
            ..user("carol")
        };
        assert_eq!(
            expand("~/Maildir", &with_home).unwrap(),
            PathBuf::from("/home/carol/Maildir")
        );
        assert_eq!(
            expand("~", &with_home).unwrap(),
            PathBuf::from("/home/carol")
        );
    }

    #[test]
    fn template_needs_a_usable_home_and_domain() {
        let home_template = RootTemplate::parse("~/Maildir").unwrap();
        let no_home = home_template.expand(&user("carol")).unwrap_err();
        assert!(
            matches!(&no_home, Error::PermFail(m) if m.contains("no home directory")),
            "{no_home:?}"
        );
        let relative = UserInfo {
            home: Some("home/carol".to_owned()),
            ..user("carol")
        };
        assert!(matches!(
            home_template.expand(&relative),
            Err(Error::PermFail(_))
        ));
        // "bob" has no domain: /srv//bob would be the domain directory of
        // users @bob.
        let domain_template = RootTemplate::parse("/srv/%d/%n").unwrap();
        assert!(matches!(
            domain_template.expand(&user("bob")),
            Err(Error::PermFail(_))
        ));
        assert!(matches!(
            domain_template.expand(&user("@example.org")),
            Err(Error::PermFail(_))
        ));
        assert!(matches!(
            domain_template.expand(&user("bob@.")),
            Err(Error::PermFail(_))
        ));
    }

    #[test]
    fn templates_that_are_not_per_user_are_refused() {
        use MaildirConfigError as E;
        let owned = |root: &str| root.to_owned();
        let cases = [
            ("", E::EmptyRoot),
            ("/var/mail", E::NotPerUser(owned("/var/mail"))),
            ("/var/mail/%%u", E::NotPerUser(owned("/var/mail/%%u"))),
            ("/var/mail/%d", E::DomainOnly(owned("/var/mail/%d"))),
            ("var/mail/%u", E::RelativeRoot(owned("var/mail/%u"))),
            ("~alice/Maildir", E::TildeUser(owned("~alice/Maildir"))),
            (
                "/var/mail/%x",
                E::UnknownVariable {
                    root: owned("/var/mail/%x"),
                    variable: 'x',
                },
            ),
            ("/var/mail/%u%", E::TrailingPercent(owned("/var/mail/%u%"))),
        ];
        for (root, expected) in cases {
            assert_eq!(RootTemplate::parse(root), Err(expected), "{root:?}");
        }
        let err = RootTemplate::parse("/var/mail").unwrap_err().to_string();
        assert!(err.contains("share one maildrop"), "{err}");
    }

    #[test]
    fn unsafe_user_names_are_refused() {
        let template = RootTemplate::parse("/srv/mail/%u").unwrap();
        let long = "a".repeat(256);
        for name in [
            "",
            ".",
            "..",
            ".hidden",
            "a/b",
            "../etc",
            "a\\b",
            "a\0b",
            "a\nb",
            "a\u{7f}b",
            "a..b",
            "%2e%2e",
            "x%2fy",
            long.as_str(),
        ] {
            assert!(
                matches!(template.expand(&user(name)), Err(Error::PermFail(_))),
                "{name:?} was accepted"
            );
        }
        assert!(template.expand(&user(&"a".repeat(255))).is_ok());
    }

    /// Every name of up to four characters from an alphabet of path-ish
    /// characters, in three templates: any accepted name stays under the
    /// root, and in no path component of its own is "", "." or "..".
    #[test]
    fn no_user_name_reaches_outside_the_root() {
        let alphabet = ['.', '/', '\\', '%', '@', 'a', '2', 'e', '\0', '\n', ' '];
        let mut names = vec![String::new()];
        let mut frontier = vec![String::new()];
        for _ in 0..4 {
            let mut next = Vec::new();
            for prefix in &frontier {
                for c in alphabet {
                    next.push(format!("{prefix}{c}"));
                }
            }
            names.extend(next.iter().cloned());
            frontier = next;
        }
        let mut accepted = 0;
        for root in ["/srv/mail/%u", "/srv/mail/%d/%n", "/srv/mail/%n/box"] {
            let template = RootTemplate::parse(root).unwrap();
            for name in &names {
                let Ok(path) = template.expand(&user(name)) else {
                    continue;
                };
                accepted += 1;
                let text = path.to_str().unwrap();
                let below_root = text.strip_prefix("/srv/mail/").unwrap();
                for component in below_root.split('/') {
                    assert!(
                        !matches!(component, "" | "." | ".."),
                        "{name:?} in {root} gave {text}"
                    );
                }
            }
        }
        assert!(accepted > 1000, "the alphabet should allow many names");
    }
}
