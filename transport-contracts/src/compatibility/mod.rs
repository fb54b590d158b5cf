//! The compatibility gate: whether a new schema of an event type keeps its
//! readers working, under the rules schema registries use (BACKWARD,
//! FORWARD, FULL, and their transitive forms), with the exact breaking
//! change when it does not.

#[cfg(feature = "avro")]
mod avro;
mod json_schema;

use std::fmt;
use std::str::FromStr;

#[cfg(feature = "avro")]
pub use avro::avro_schema_breaks;
pub use json_schema::json_schema_breaks;

/// Every change between two schemas of a version (JSON Schema, or Avro
/// with the feature `avro`) that breaks a reader `mode` must keep working.
pub fn schema_breaks(old: &serde_json::Value, new: &serde_json::Value, mode: Compatibility) -> Vec<Breaking> {
    let who = if mode.backward() {
        Reader::NewReadsOld
    } else {
        Reader::OldReadsNew
    };
    match (is_avro(old), is_avro(new)) {
        (false, false) => json_schema_breaks(old, new, mode),
        #[cfg(feature = "avro")]
        (true, true) => avro_schema_breaks(old, new, mode),
        #[cfg(not(feature = "avro"))]
        (true, true) => vec![Breaking {
            path: String::new(),
            rule: "avro-unsupported",
            detail: "Avro schemas are compared with the feature `avro`".into(),
            reader: who,
        }],
        _ => vec![Breaking {
            path: String::new(),
            rule: "schema-language-changed",
            detail: "one schema is Avro, the other JSON Schema".into(),
            reader: who,
        }],
    }
}

/// An Avro schema as events use them: a named record, enum or fixed, or a
/// primitive name or union at the top (JSON Schemas are objects of another
/// shape).
pub fn is_avro(schema: &serde_json::Value) -> bool {
    match schema {
        serde_json::Value::String(_) | serde_json::Value::Array(_) => true,
        serde_json::Value::Object(m) => {
            matches!(
                m.get("type").and_then(|t| t.as_str()),
                Some("record" | "enum" | "fixed")
            )
        }
        _ => false,
    }
}

/// Which readers a new schema must keep working (the names and meanings of
/// the Confluent Schema Registry's compatibility types).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compatibility {
    /// Consumers on the new schema read data written with the previous
    /// one (upgrade consumers first). The default, as in schema registries.
    #[default]
    Backward,
    /// As `Backward`, against every earlier version of the major, not only
    /// the latest.
    BackwardTransitive,
    /// Consumers still on the previous schema read data written with the
    /// new one (upgrade producers first).
    Forward,
    /// As `Forward`, against every earlier version of the major.
    ForwardTransitive,
    /// Both `Backward` and `Forward`.
    Full,
    /// Both, against every earlier version of the major.
    FullTransitive,
}

impl Compatibility {
    /// Whether new readers must read old data.
    pub fn backward(self) -> bool {
        !matches!(self, Compatibility::Forward | Compatibility::ForwardTransitive)
    }

    /// Whether old readers must read new data.
    pub fn forward(self) -> bool {
        !matches!(self, Compatibility::Backward | Compatibility::BackwardTransitive)
    }

    /// Whether every earlier version counts, not only the latest.
    pub fn transitive(self) -> bool {
        matches!(
            self,
            Compatibility::BackwardTransitive | Compatibility::ForwardTransitive | Compatibility::FullTransitive
        )
    }

    /// The registry's name: `BACKWARD`, `FULL_TRANSITIVE`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            Compatibility::Backward => "BACKWARD",
            Compatibility::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Compatibility::Forward => "FORWARD",
            Compatibility::ForwardTransitive => "FORWARD_TRANSITIVE",
            Compatibility::Full => "FULL",
            Compatibility::FullTransitive => "FULL_TRANSITIVE",
        }
    }
}

impl fmt::Display for Compatibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Compatibility {
    type Err = String;

    /// The registry's names, in any case, `-` or `_`.
    fn from_str(s: &str) -> Result<Self, String> {
        let all = [
            Compatibility::Backward,
            Compatibility::BackwardTransitive,
            Compatibility::Forward,
            Compatibility::ForwardTransitive,
            Compatibility::Full,
            Compatibility::FullTransitive,
        ];
        let wanted = s.trim().to_ascii_uppercase().replace('-', "_");
        all.into_iter().find(|c| c.as_str() == wanted).ok_or_else(|| {
            let names: Vec<&str> = all.iter().map(|c| c.as_str()).collect();
            format!("unknown compatibility {s:?}; one of {}", names.join(", "))
        })
    }
}

/// Which reader a change breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reader {
    /// A consumer on the new schema, reading data written with the old.
    NewReadsOld,
    /// A consumer on the old schema, reading data written with the new.
    OldReadsNew,
}

/// One breaking change: where (a JSON pointer into the data, `*` for every
/// item of an array), which rule, and which reader it breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Breaking {
    /// Where in the data: `/lines/*/sku`; empty for the data as a whole.
    pub path: String,
    /// The rule: `required-added`, `property-removed`, `type-narrowed`,
    /// `enum-value-removed`, `minimum-raised`, ... (see the crate's
    /// compatibility table).
    pub rule: &'static str,
    /// What changed, in words.
    pub detail: String,
    /// Which reader it breaks.
    pub reader: Reader,
}

impl fmt::Display for Breaking {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() { "/" } else { &self.path };
        let reader = match self.reader {
            Reader::NewReadsOld => "new readers of old data",
            Reader::OldReadsNew => "old readers of new data",
        };
        write!(f, "{path}: {} ({}); breaks {reader}", self.rule, self.detail)
    }
}
