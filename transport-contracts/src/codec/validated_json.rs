//! JSON checked against the JSON Schema derived from its type, when written
//! and when read.

use bytes::Bytes;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::json::{json_schema_of, read_json};
use super::Codec;
use crate::error::{ContractError, DataError, DataErrorKind};

/// JSON data (`application/json`) checked against `T`'s JSON Schema: what
/// breaks it is not written (publish fails with `InvalidArgument`, nothing
/// sent) and, when read, is a [`DataError`] naming the field (a JSON
/// pointer) and the keyword broken, without the offending value.
///
/// The schema is derived by `schemars` and so says what serde reads:
/// `Option` fields are optional, unknown fields are allowed (a newer
/// minor version's additions), and `#[schemars(range(min = 1))]`,
/// `length` or `regex` attributes add rules serde alone would not check.
pub struct ValidatedJson {
    schema: serde_json::Value,
    validator: jsonschema::Validator,
}

impl ValidatedJson {
    fn check(&self, value: &serde_json::Value) -> Result<(), DataError> {
        match self.validator.iter_errors(value).next() {
            None => Ok(()),
            Some(e) => {
                let keyword = e.schema_path().to_string();
                let rule = keyword.rsplit('/').next().unwrap_or_default().to_owned();
                Err(DataError::new(
                    DataErrorKind::Invalid,
                    e.instance_path().to_string(),
                    rule,
                    e.masked().to_string(),
                ))
            }
        }
    }
}

impl<T: Serialize + DeserializeOwned + JsonSchema> Codec<T> for ValidatedJson {
    const CONTENT_TYPE: &'static str = "application/json";

    fn build() -> Result<Self, ContractError> {
        let schema = json_schema_of::<T>();
        // Formats are checked (`date-time`, `email`, `uuid`: what schemars
        // derives for such types); formats unknown to the validator, such
        // as schemars' `int64` annotations, are not.
        let validator = jsonschema::options()
            .should_validate_formats(true)
            .should_ignore_unknown_formats(true)
            .build(&schema)
            .map_err(|e| {
                ContractError::Declaration(format!(
                    "the JSON Schema of {} does not compile: {e}",
                    std::any::type_name::<T>()
                ))
            })?;
        Ok(ValidatedJson { schema, validator })
    }

    fn schema(&self) -> &serde_json::Value {
        &self.schema
    }

    fn encode(&self, value: &T) -> Result<Bytes, DataError> {
        let json = serde_json::to_value(value)
            .map_err(|e| DataError::new(DataErrorKind::Invalid, "", "serialize", e.to_string()))?;
        self.check(&json)?;
        serde_json::to_vec(&json)
            .map(Bytes::from)
            .map_err(|e| DataError::new(DataErrorKind::Invalid, "", "serialize", e.to_string()))
    }

    fn decode(&self, data: &[u8]) -> Result<T, DataError> {
        let json: serde_json::Value = serde_json::from_slice(data)
            .map_err(|e| DataError::new(DataErrorKind::Malformed, "", "syntax", e.to_string()))?;
        self.check(&json)?;
        // The schema passed, so serde only fails where the schema says less
        // than the type (a custom Deserialize): then named by field.
        T::deserialize(&json).or_else(|_| read_json(data))
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
    struct Payment {
        order_id: String,
        #[schemars(range(min = 1))]
        amount_cents: i64,
        #[schemars(length(equal = 3))]
        currency: String,
    }

    fn codec() -> ValidatedJson {
        <ValidatedJson as Codec<Payment>>::build().unwrap()
    }

    #[test]
    fn refuses_to_write_what_breaks_the_schema() {
        let bad = Payment {
            order_id: "o-1".into(),
            amount_cents: 0,
            currency: "EUR".into(),
        };
        let e = Codec::<Payment>::encode(&codec(), &bad).unwrap_err();
        assert_eq!((e.field(), e.rule()), ("/amount_cents", "minimum"), "{e}");
        let good = Payment { amount_cents: 1, ..bad };
        let bytes = Codec::<Payment>::encode(&codec(), &good).unwrap();
        assert_eq!(Codec::<Payment>::decode(&codec(), &bytes).unwrap(), good);
    }

    #[test]
    fn names_field_and_keyword_when_reading() {
        let cases: [(&[u8], &str, &str); 4] = [
            (
                br#"{"order_id":"o","amount_cents":5,"currency":"EURO"}"#,
                "/currency",
                "maxLength",
            ),
            (
                br#"{"order_id":"o","amount_cents":-3,"currency":"EUR"}"#,
                "/amount_cents",
                "minimum",
            ),
            (br#"{"order_id":"o","currency":"EUR"}"#, "", "required"),
            (
                br#"{"order_id":7,"amount_cents":5,"currency":"EUR"}"#,
                "/order_id",
                "type",
            ),
        ];
        for (data, field, rule) in cases {
            let e = Codec::<Payment>::decode(&codec(), data).unwrap_err();
            assert_eq!(
                (e.kind(), e.field(), e.rule()),
                (DataErrorKind::Invalid, field, rule),
                "{e}"
            );
            assert!(!e.to_string().contains("EURO") && !e.to_string().contains("-3"), "{e}");
        }
        let e = Codec::<Payment>::decode(&codec(), b"{not json").unwrap_err();
        assert_eq!(e.kind(), DataErrorKind::Malformed);
        // Unknown fields are a newer minor version's additions: read.
        let newer = br#"{"order_id":"o","amount_cents":5,"currency":"EUR","method":"card"}"#;
        assert!(Codec::<Payment>::decode(&codec(), newer).is_ok());
    }
}
