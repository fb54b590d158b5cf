//! Topic and group name rules shared by every backend.
//!
//! The portable set is what every supported broker accepts once mapped:
//! ASCII letters, digits, `.`, `_` and `-`, 1 to 200 characters, not starting
//! with `.` or `-`. Backends with stricter rules check more on top.

use crate::error::{Error, Result};

/// Longest portable topic or group name.
pub const MAX_NAME_LEN: usize = 200;

/// Check a topic name against the portable rules.
pub fn validate_topic(name: &str) -> Result<()> {
    validate("topic", name)
}

/// Check a consumer group name against the portable rules.
pub fn validate_group(name: &str) -> Result<()> {
    validate("group", name)
}

fn validate(what: &str, name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::invalid(format!("{what} name must not be empty")));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(Error::invalid(format!(
            "{what} name is {} characters long, at most {MAX_NAME_LEN} are allowed",
            name.len()
        )));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(Error::invalid(format!(
            "{what} name {name:?} contains {bad:?}; use ASCII letters, digits, '.', '_' or '-'"
        )));
    }
    if name.starts_with(['.', '-']) || name.ends_with('.') || name.contains("..") {
        return Err(Error::invalid(format!(
            "{what} name {name:?} must not start with '.' or '-', end with '.' or contain '..'"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn accepts_portable_names() {
        for ok in ["orders", "orders.placed", "a-b_c.9", &"x".repeat(200)] {
            validate_topic(ok).unwrap();
        }
    }

    #[test]
    fn rejects_everything_else() {
        for bad in [
            "",
            "has space",
            "wild*",
            "a>b",
            "ümlaut",
            ".hidden",
            "-flag",
            "-",
            "a..b",
            "end.",
            &"x".repeat(201),
        ] {
            let err = validate_topic(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{bad:?}");
        }
    }
}
