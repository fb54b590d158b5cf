//! Compatibility of two Avro schemas, decided by Avro's own schema
//! resolution rules as `apache-avro` implements them (the reference: a
//! reader schema can read a writer's data when resolution succeeds), with
//! each refusal named by field and rule.

use apache_avro::error::CompatibilityError;
use apache_avro::schema_compatibility::SchemaCompatibility;
use apache_avro::Schema;
use serde_json::Value;

use super::{Breaking, Compatibility, Reader};

/// Every change between `old` and `new` (Avro schemas as JSON) that breaks
/// a reader `mode` must keep working.
pub fn avro_schema_breaks(old: &Value, new: &Value, mode: Compatibility) -> Vec<Breaking> {
    let parse = |v: &Value, which: &str, who: Reader| {
        Schema::parse(v).map_err(|e| Breaking {
            path: String::new(),
            rule: "invalid-schema",
            detail: format!("the {which} Avro schema does not parse: {e}"),
            reader: who,
        })
    };
    let mut out = Vec::new();
    for (who, wanted) in [
        (Reader::NewReadsOld, mode.backward()),
        (Reader::OldReadsNew, mode.forward()),
    ] {
        if !wanted {
            continue;
        }
        let (writer, reader) = match who {
            Reader::NewReadsOld => (parse(old, "old", who), parse(new, "new", who)),
            Reader::OldReadsNew => (parse(new, "new", who), parse(old, "old", who)),
        };
        match (writer, reader) {
            (Ok(w), Ok(r)) => {
                if let Err(e) = SchemaCompatibility::can_read(&w, &r) {
                    out.push(named(String::new(), &e, who));
                }
            }
            (w, r) => out.extend(w.err().into_iter().chain(r.err())),
        }
    }
    out
}

/// The refusal as a breaking change: the field path and the rule.
fn named(path: String, e: &CompatibilityError, who: Reader) -> Breaking {
    let rule = match e {
        CompatibilityError::FieldTypeMismatch(field, inner) => {
            return named(format!("{path}/{field}"), inner, who);
        }
        CompatibilityError::MissingDefaultValue(field) => {
            return Breaking {
                path: format!("{path}/{field}"),
                rule: "required-added",
                detail: "the reader has the field without a default, the writer does not write it".into(),
                reader: who,
            };
        }
        // Inconclusive: the reader's type does not take the writer's
        // (apache-avro's word for some of these, such as double read as int).
        CompatibilityError::WrongType { .. }
        | CompatibilityError::TypeExpected { .. }
        | CompatibilityError::Inconclusive(_) => "type-changed",
        CompatibilityError::MissingSymbols => "enum-value-removed",
        CompatibilityError::MissingUnionElements => "union-branch-removed",
        CompatibilityError::FixedMismatch => "fixed-changed",
        CompatibilityError::NameMismatch { .. } => "name-changed",
    };
    Breaking {
        path,
        rule,
        detail: e.to_string(),
        reader: who,
    }
}
