//! Plain JSON: serde both ways, the schema derived for documentation and
//! the compatibility gate only.

use bytes::Bytes;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::Codec;
use crate::error::{ContractError, DataError, DataErrorKind};

/// JSON data (`application/json`), not checked against its schema. Fields
/// the type does not know are ignored, missing optional ones are `None`;
/// a missing required field or a value of the wrong type is a
/// [`DataError`] naming the field.
pub struct Json {
    schema: serde_json::Value,
}

impl<T: Serialize + DeserializeOwned + JsonSchema> Codec<T> for Json {
    const CONTENT_TYPE: &'static str = "application/json";

    fn build() -> Result<Self, ContractError> {
        Ok(Json {
            schema: json_schema_of::<T>(),
        })
    }

    fn schema(&self) -> &serde_json::Value {
        &self.schema
    }

    fn encode(&self, value: &T) -> Result<Bytes, DataError> {
        serde_json::to_vec(value)
            .map(Bytes::from)
            .map_err(|e| DataError::new(DataErrorKind::Invalid, "", "serialize", e.to_string()))
    }

    fn decode(&self, data: &[u8]) -> Result<T, DataError> {
        read_json(data)
    }
}

/// The JSON Schema (2020-12) of `T`, derived by `schemars` (doc comments
/// become descriptions).
pub(crate) fn json_schema_of<T: JsonSchema>() -> serde_json::Value {
    schemars::schema_for!(T).to_value()
}

/// Deserialize `data` as `T`, naming the field that failed (the path is
/// tracked only on a second pass, once the first failed: tracking it costs
/// a third of the time of reading).
pub(crate) fn read_json<T: DeserializeOwned>(data: &[u8]) -> Result<T, DataError> {
    if let Ok(value) = serde_json::from_slice(data) {
        return Ok(value);
    }
    let de = &mut serde_json::Deserializer::from_slice(data);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = pointer(e.path());
        let e = e.into_inner();
        match e.classify() {
            serde_json::error::Category::Data => {
                let (rule, detail) = describe(&e.to_string());
                DataError::new(DataErrorKind::Invalid, field, rule, detail)
            }
            _ => DataError::new(DataErrorKind::Malformed, "", "syntax", e.to_string()),
        }
    })
}

/// The path serde reached as a JSON pointer (`/items/0/sku`).
fn pointer(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path.iter() {
        out.push('/');
        match segment {
            Segment::Seq { index } => out.push_str(&index.to_string()),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                out.push_str(&key.replace('~', "~0").replace('/', "~1"))
            }
            Segment::Unknown => out.push('?'),
        }
    }
    out
}

/// The rule a serde data error names, and its text without the offending
/// value (serde writes `invalid type: string "4111 1111", expected u64`).
fn describe(message: &str) -> (&'static str, String) {
    // The last ", expected": the value before it may contain the words.
    let without_value = |m: &str| match m.rsplit_once(", expected") {
        Some((_, expected)) => format!("expected{expected}"),
        None => m.to_owned(),
    };
    if message.starts_with("missing field") {
        ("required", message.to_owned())
    } else if message.starts_with("invalid type") {
        ("type", without_value(message))
    } else if message.starts_with("unknown variant") {
        ("enum", without_value(message))
    } else if message.starts_with("invalid value") || message.starts_with("invalid length") {
        ("value", without_value(message))
    } else {
        // A custom Deserialize (FromStr, TryFrom) refused it; its message
        // may quote the value.
        ("data", "a custom deserializer refused the value".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
    struct Line {
        sku: String,
        quantity: u32,
    }

    #[derive(Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
    struct Order {
        id: String,
        lines: Vec<Line>,
        note: Option<String>,
    }

    fn codec() -> Json {
        <Json as Codec<Order>>::build().unwrap()
    }

    #[test]
    fn reads_what_it_writes_and_ignores_unknown_fields() {
        let order = Order {
            id: "o-1".into(),
            lines: vec![Line {
                sku: "a".into(),
                quantity: 2,
            }],
            note: None,
        };
        let bytes = Codec::<Order>::encode(&codec(), &order).unwrap();
        assert_eq!(Codec::<Order>::decode(&codec(), &bytes).unwrap(), order);
        let newer = br#"{"id":"o-1","lines":[{"sku":"a","quantity":2,"gift":true}],"channel":"web"}"#;
        assert_eq!(Codec::<Order>::decode(&codec(), newer).unwrap(), order);
    }

    #[test]
    fn names_the_field_and_rule_without_the_value() {
        let e = Codec::<Order>::decode(
            &codec(),
            br#"{"id":"o-1","lines":[{"sku":"a","quantity":"4111 1111"}]}"#,
        )
        .unwrap_err();
        assert_eq!(
            (e.kind(), e.field(), e.rule()),
            (DataErrorKind::Invalid, "/lines/0/quantity", "type")
        );
        assert!(!e.to_string().contains("4111"), "{e}");
        let e = Codec::<Order>::decode(&codec(), br#"{"lines":[]}"#).unwrap_err();
        assert_eq!((e.field(), e.rule()), ("", "required"));
        assert!(e.to_string().contains("`id`"), "{e}");
        let e = Codec::<Order>::decode(&codec(), br#"{"id": "#).unwrap_err();
        assert_eq!((e.kind(), e.rule()), (DataErrorKind::Malformed, "syntax"));
    }

    #[test]
    fn derives_the_schema_with_required_fields() {
        let schema = Codec::<Order>::schema(&codec()).clone();
        let required = schema["required"].as_array().unwrap();
        assert!(
            required.contains(&"id".into()) && !required.contains(&"note".into()),
            "{schema}"
        );
    }
}
