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
///
/// Reading is bounded: a datum cut short is malformed (apache-avro would
/// read a missing union or string as null), and no string, array or map of
/// one datum may claim more than [`MAX_AVRO_LENGTH`] (apache-avro reserves
/// what a length claims before reading it: eight hostile bytes could ask
/// for tens of GB). That limit is apache-avro's process-wide setting, set
/// when the first Avro codec is built unless the application set its own
/// before.
pub struct Avro {
    schema: Schema,
    json: serde_json::Value,
}

/// The largest string, bytes, array or map one Avro datum may hold (4 MiB,
/// or that many items): far above what a broker carries in one message.
pub const MAX_AVRO_LENGTH: usize = 4 << 20;

/// The data being decoded, noting whether a read asked for more than was
/// left (a datum cut short).
struct Exhaustible<'a> {
    rest: &'a [u8],
    short: bool,
}

impl std::io::Read for Exhaustible<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.len() > self.rest.len() {
            self.short = true;
        }
        self.rest.read(buf)
    }
}

impl<T: Serialize + DeserializeOwned + AvroSchema> Codec<T> for Avro {
    const CONTENT_TYPE: &'static str = "application/avro";
    const SELF_DESCRIBING: bool = false;

    fn build() -> Result<Self, ContractError> {
        apache_avro::util::max_allocation_bytes(MAX_AVRO_LENGTH);
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
        let mut input = Exhaustible {
            rest: data,
            short: false,
        };
        let value = apache_avro::from_avro_datum(&self.schema, &mut input, None)
            .map_err(|_| malformed("not an Avro datum of this schema"))?;
        if input.short {
            return Err(malformed("the datum is cut short"));
        }
        if !input.rest.is_empty() {
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

    #[derive(Debug, PartialEq, Serialize, Deserialize, AvroSchema)]
    struct Cancelled {
        order_id: String,
        reason: Option<String>,
    }

    #[test]
    fn a_datum_cut_short_is_malformed() {
        let codec = <Avro as Codec<Cancelled>>::build().unwrap();
        let full = Codec::<Cancelled>::encode(
            &codec,
            &Cancelled {
                order_id: "o-1".into(),
                reason: Some("fraud".into()),
            },
        )
        .unwrap();
        for cut in 1..full.len() {
            let e = Codec::<Cancelled>::decode(&codec, &full[..cut]).unwrap_err();
            assert_eq!(e.kind(), DataErrorKind::Malformed, "cut at {cut}: {e}");
        }
        assert!(Codec::<Cancelled>::decode(&codec, &full).is_ok());
    }

    #[test]
    fn a_length_claiming_gigabytes_is_refused_not_reserved() {
        // Empty id, amount 0, note null, then 2^29 lines.
        let e = Codec::<Order>::decode(&codec(), &[0x00, 0x00, 0x00, 0x80, 0x80, 0x80, 0x80, 0x04]).unwrap_err();
        assert_eq!(e.kind(), DataErrorKind::Malformed, "{e}");
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
