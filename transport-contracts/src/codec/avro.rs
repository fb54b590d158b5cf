//! Avro binary data, its schema derived from the type (`apache-avro`'s
//! `AvroSchema` derive).

use apache_avro::{AvroSchema, Schema};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::Codec;
use crate::error::{ContractError, DataError, DataErrorKind};

/// Avro binary data (`application/avro`), one datum per message.
///
/// Avro data does not carry its schema: a reader decodes with the schema of
/// the version it declares, so this codec reads only data of exactly its
/// declared `MAJOR.MINOR` (the router refuses another minor version with
/// the unknown-version policy, naming it, rather than misread it). To
/// evolve an Avro type, route the new version beside the old one (a new
/// major with an upcaster), and check the change with the gate's Avro
/// rules. Values never appear in errors.
pub struct Avro {
    schema: Schema,
    json: serde_json::Value,
}

impl<T: Serialize + DeserializeOwned + AvroSchema> Codec<T> for Avro {
    const CONTENT_TYPE: &'static str = "application/avro";
    const SELF_DESCRIBING: bool = false;

    fn build() -> Result<Self, ContractError> {
        let schema = T::get_schema();
        let json = serde_json::to_value(&schema).map_err(|e| {
            ContractError::Declaration(format!(
                "the Avro schema of {} does not serialize: {e}",
                std::any::type_name::<T>()
            ))
        })?;
        Ok(Avro { schema, json })
    }

    fn schema(&self) -> &serde_json::Value {
        &self.json
    }

    fn encode(&self, value: &T) -> Result<Bytes, DataError> {
        let invalid = |rule: &str| {
            DataError::new(
                DataErrorKind::Invalid,
                "",
                rule,
                "the value does not match the Avro schema",
            )
        };
        let value = apache_avro::to_value(value).map_err(|_| invalid("serialize"))?;
        let value = value.resolve(&self.schema).map_err(|_| invalid("type"))?;
        apache_avro::to_avro_datum(&self.schema, value)
            .map(Bytes::from)
            .map_err(|_| invalid("type"))
    }

    fn decode(&self, data: &[u8]) -> Result<T, DataError> {
        let malformed = |detail: &str| DataError::new(DataErrorKind::Malformed, "", "syntax", detail);
        let mut rest = data;
        let value = apache_avro::from_avro_datum(&self.schema, &mut rest, None)
            .map_err(|_| malformed("not an Avro datum of this schema"))?;
        if !rest.is_empty() {
            return Err(malformed("bytes left after the datum (written with another schema?)"));
        }
        apache_avro::from_value(&value)
            .map_err(|_| DataError::new(DataErrorKind::Invalid, "", "type", "the datum does not fit the type"))
    }
}

#[cfg(test)]
mod tests {
    use apache_avro::AvroSchema;
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize, AvroSchema)]
    struct Order {
        id: String,
        amount_cents: i64,
        note: Option<String>,
        lines: Vec<Line>,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize, AvroSchema)]
    struct Line {
        sku: String,
        quantity: i32,
    }

    fn codec() -> Avro {
        <Avro as Codec<Order>>::build().unwrap()
    }

    #[test]
    fn reads_what_it_writes() {
        let order = Order {
            id: "o-1".into(),
            amount_cents: 1250,
            note: Some("gift".into()),
            lines: vec![Line {
                sku: "a".into(),
                quantity: 2,
            }],
        };
        let bytes = Codec::<Order>::encode(&codec(), &order).unwrap();
        assert!(bytes.len() < 30, "Avro is compact: {} bytes", bytes.len());
        assert_eq!(Codec::<Order>::decode(&codec(), &bytes).unwrap(), order);
        assert_eq!(Codec::<Order>::schema(&codec())["type"], "record");
    }

    #[test]
    fn refuses_what_is_not_its_datum_without_repeating_it() {
        for data in [
            &b""[..],
            b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
            b"\x06o-1\xc4\x13\x00\x00\x00extra",
        ] {
            let e = Codec::<Order>::decode(&codec(), data).unwrap_err();
            assert_eq!(e.kind(), DataErrorKind::Malformed, "{data:?}: {e}");
            assert!(!e.to_string().contains("o-1"), "{e}");
        }
    }
}
