//! Which user names may become part of a file path, for stores that map a
//! user to a path through a template (`/var/mail/%u`, `%d/%n/Maildir`).
//!
//! One set of rules for every bundled store, so a name refused by one is
//! refused by all: no separators, no dot names or `..`, no `%` (so no name
//! can pass for an encoded one such as `%2e%2e`), no control characters (so
//! file names and logs stay readable), at most 255 bytes.

/// Longest user name a store puts into a path.
pub const MAX_USER_NAME_LEN: usize = 255;

/// Why `name` may not go into a path, if it may not. The text completes
/// "user name refused: ...".
pub fn check_user_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("it is empty");
    }
    if name.len() > MAX_USER_NAME_LEN {
        return Err("it is longer than 255 bytes");
    }
    if name.contains(['/', '\\']) {
        return Err("it contains a path separator");
    }
    if name.chars().any(char::is_control) {
        return Err("it contains a control character");
    }
    if name.starts_with('.') {
        return Err("it starts with a dot");
    }
    if name.contains("..") {
        return Err("it contains ..");
    }
    if name.contains('%') {
        return Err("it contains %");
    }
    Ok(())
}

/// Whether `part` (the local part `%n` or the domain `%d` of a name) can
/// stand alone as a path component: an empty or dot-led part would put the
/// maildrop on a parent directory or on another user's path.
pub fn usable_name_part(part: &str) -> bool {
    !part.is_empty() && !part.starts_with('.')
}

/// At most the first 64 characters of `text`, so a hostile name cannot
/// flood the log.
pub fn shorten_for_log(text: &str) -> &str {
    match text.char_indices().nth(64) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_leave_the_root_are_refused() {
        for bad in [
            "", ".", "..", "../x", "a/b", "a\\b", "a\0b", "a\nb", ".hidden", "a..b", "%2e%2e",
        ] {
            assert!(check_user_name(bad).is_err(), "{bad:?} accepted");
        }
        assert!(check_user_name(&"x".repeat(256)).is_err());
        for good in [
            "alice",
            "alice@example.org",
            "a.b",
            "a-b_c+d",
            &"x".repeat(255),
        ] {
            assert_eq!(check_user_name(good), Ok(()), "{good:?} refused");
        }
    }

    #[test]
    fn name_parts_must_stand_alone() {
        assert!(usable_name_part("alice"));
        assert!(!usable_name_part(""));
        assert!(!usable_name_part(".x"));
    }

    #[test]
    fn log_text_is_cut_at_64_characters() {
        assert_eq!(shorten_for_log("short"), "short");
        assert_eq!(shorten_for_log(&"é".repeat(100)).chars().count(), 64);
    }
}
