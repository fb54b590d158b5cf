//! Table names. They are spliced into SQL text (placeholders cannot name
//! tables), so only plain identifiers are accepted.

use transport_core::{Error, Result};

/// A checked SQL identifier, optionally schema-qualified (`app.outbox`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableName(String);

impl TableName {
    /// `name` if it is one or two dot-separated identifiers of ASCII
    /// letters, digits and `_` (not starting with a digit), up to 63 bytes
    /// each (PostgreSQL's limit).
    pub(crate) fn new(name: &str) -> Result<Self> {
        let parts: Vec<&str> = name.split('.').collect();
        let ok = parts.len() <= 2
            && parts.iter().all(|p| {
                !p.is_empty()
                    && p.len() <= 63
                    && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                    && !p.as_bytes()[0].is_ascii_digit()
            });
        if !ok {
            return Err(Error::invalid(format!(
                "table name {name:?} must be an identifier (letters, digits, '_'), optionally schema-qualified"
            )));
        }
        Ok(TableName(name.to_owned()))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    /// A name for an index on this table (unqualified: PostgreSQL puts an
    /// index in its table's schema).
    pub(crate) fn index(&self, suffix: &str) -> String {
        let table = self.0.rsplit('.').next().unwrap_or(&self.0);
        format!("{table}_{suffix}")
    }
}

impl std::fmt::Display for TableName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_only() {
        assert!(TableName::new("transport_outbox").is_ok());
        assert!(TableName::new("app.outbox_2").is_ok());
        for bad in [
            "",
            "a b",
            "x;drop table y",
            "1abc",
            "a.b.c",
            "a.",
            "\"q\"",
            &"x".repeat(64),
        ] {
            assert!(TableName::new(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(TableName::new("app.outbox").unwrap().index("ready"), "outbox_ready");
    }
}
