//! Events as contracts: a Rust type declared an event type (its name, its
//! version, its codec and the schema derived from it), checked when written
//! and when read, upcast from older versions, and routed by type to typed
//! handlers in the consumer runtime.
//!
//! - [`EventType`]: the declaration, once per type; [`Upcast`]: how an
//!   older major version becomes the next.
//! - [`Contract`]: one type's contract built (schema derived and
//!   compiled): writes its events as CloudEvents (`ce-type`,
//!   `ce-dataversion`, `content-type`) and refuses data its schema refuses.
//! - [`Router`]: a tower service for the runtime that dispatches on
//!   `ce-type` and major version to `async fn(Context, E)` handlers,
//!   upcasting on the way; what it cannot read is dead-lettered with the
//!   field and rule named, and counted ([`VALIDATION_FAILURES`]).
//! - Codecs: [`Json`] and [`ValidatedJson`] (JSON Schema derived by
//!   `schemars`, checked by `jsonschema`).
//!
//! ```no_run
//! use schemars::JsonSchema;
//! use serde::{Deserialize, Serialize};
//! use transport_contracts::{Contract, EventType, Router, ValidatedJson, Version};
//! use transport_core::runtime::{Consumer, Context, HandlerError};
//! use transport_core::{SubscribeOptions, Transport};
//!
//! /// An order was placed.
//! #[derive(Serialize, Deserialize, JsonSchema)]
//! struct OrderPlaced {
//!     order_id: String,
//!     #[schemars(range(min = 1))]
//!     amount_cents: i64,
//! }
//!
//! impl EventType for OrderPlaced {
//!     const TYPE: &'static str = "order.placed";
//!     const VERSION: Version = Version::new(1, 0);
//!     type Codec = ValidatedJson;
//! }
//!
//! # async fn run(transport: std::sync::Arc<dyn Transport>) -> Result<(), Box<dyn std::error::Error>> {
//! // Publish: the data is checked against the schema before anything is sent.
//! let placed = Contract::<OrderPlaced>::new()?;
//! let event = placed.event("shop/checkout", OrderPlaced { order_id: "o-1".into(), amount_cents: 1250 });
//! transport.publish("orders", placed.to_message(&event)?).await?;
//!
//! // Consume: typed handlers; invalid events are dead-lettered with the field named.
//! let router = Router::new().route(|_ctx: Context, order: OrderPlaced| async move {
//!     println!("{} costs {} cents", order.order_id, order.amount_cents);
//!     Ok::<_, HandlerError>(())
//! })?;
//! let consumer = Consumer::new(transport.clone(), "orders", SubscribeOptions::new("billing"));
//! let shutdown = std::future::pending(); // the service's own shutdown signal
//! consumer.run(router, shutdown).await?;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod asyncapi;
mod catalog;
mod codec;
mod compatibility;
mod contract;
mod error;
mod event_type;
mod failures;
pub mod gate;
mod markdown;
mod router;
mod version;

/// The Avro crate, for `#[derive(AvroSchema)]` (feature `avro`).
#[cfg(feature = "avro")]
pub use apache_avro;
pub use asyncapi::Server;
pub use catalog::{Catalog, Consumed, Declared, MANIFEST};
#[cfg(feature = "avro")]
pub use codec::{Avro, MAX_AVRO_LENGTH};
pub use codec::{Codec, Json, ValidatedJson};
#[cfg(feature = "avro")]
pub use compatibility::avro_schema_breaks;
pub use compatibility::{is_avro, json_schema_breaks, schema_breaks, Breaking, Compatibility, Reader};
pub use contract::Contract;
pub use error::{ContractError, DataError, DataErrorKind};
pub use event_type::{EventType, Upcast};
pub use failures::{EVENT_TYPE, FAILURE, VALIDATION_FAILURES};
pub use router::{Router, Unroutable};
/// The crate that derives the JSON Schemas, for `#[derive(JsonSchema)]`
/// without a direct dependency: `#[schemars(crate = "transport_contracts::schemars")]`.
pub use schemars;
pub use version::Version;
