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

/// A portable name in a broker that allows no `.` in its object names
/// (NATS streams and consumers, SNS topics, SQS queues): `_` becomes `__`
/// and `.` becomes `_d`, so distinct names never collide. An escaped name
/// read pair by pair never holds the pair `_s`, so a backend can use it to
/// separate parts.
pub fn escape_dots(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for c in name.chars() {
        match c {
            '_' => out.push_str("__"),
            '.' => out.push_str("_d"),
            c => out.push(c),
        }
    }
    out
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
    fn escaped_names_have_no_dot_and_never_collide() {
        let names = ["a.b", "a_b", "a_db", "a__b", "a._b", "a_.b", "a..b", "a_d.b"];
        let escaped: std::collections::HashSet<_> = names.iter().map(|n| escape_dots(n)).collect();
        assert_eq!(escaped.len(), names.len(), "{escaped:?}");
        assert!(escaped.iter().all(|e| !e.contains('.')));
        assert_eq!(escape_dots("orders.placed_v1"), "orders_dplaced__v1");
    }

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
