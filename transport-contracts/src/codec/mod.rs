//! How an event type's data is written on the wire, and its schema in that
//! codec's schema language: one declaration per type
//! ([`EventType::Codec`](crate::EventType::Codec)), no schema written by hand.
//!
//! - [`Json`]: JSON, its JSON Schema derived from the type (for the
//!   documents and the compatibility gate), not checked on the way.
//! - [`ValidatedJson`]: JSON checked against that schema when written and
//!   when read, so a producer cannot send what breaks it and a consumer
//!   dead-letters what another producer sent that breaks it, with the field
//!   and the rule.
//! - [`Avro`] (feature `avro`): Avro binary data, its schema derived by
//!   `apache-avro`'s `AvroSchema` derive.

#[cfg(feature = "avro")]
mod avro;
mod json;
mod validated_json;

use bytes::Bytes;

#[cfg(feature = "avro")]
pub use avro::{Avro, MAX_AVRO_LENGTH};
pub use json::Json;
pub use validated_json::ValidatedJson;

use crate::error::{ContractError, DataError};

/// A codec for data of type `T`. Built once per event type (schemas are
/// derived and compiled there), then shared by every message.
pub trait Codec<T>: Sized + Send + Sync + 'static {
    /// The media type of the data, written as `datacontenttype`.
    const CONTENT_TYPE: &'static str;

    /// Whether data of another minor version of the same major reads with
    /// this codec (JSON: unknown fields are ignored). Avro data cannot be
    /// read without its writer's schema: a router refuses other minors.
    const SELF_DESCRIBING: bool = true;

    /// Derive (and compile) `T`'s schema. A schema that does not compile is
    /// a [`ContractError::Declaration`].
    fn build() -> Result<Self, ContractError>;

    /// `T`'s schema in this codec's schema language, as a JSON document.
    fn schema(&self) -> &serde_json::Value;

    /// Write `value`; data its schema refuses is an error and nothing is written.
    fn encode(&self, value: &T) -> Result<Bytes, DataError>;

    /// Read `data`, ignoring fields the schema does not know (a newer
    /// minor version's additions).
    fn decode(&self, data: &[u8]) -> Result<T, DataError>;
}
