//! The event types the contract checks use: an order placed in two major
//! versions (v1 upcast into v2) and an order cancelled.

use apache_avro::AvroSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use transport_contracts::{Avro, Catalog, ContractError, EventType, Json, Upcast, ValidatedJson, Version};

/// Version 1: the amount as a decimal number.
#[derive(Serialize, Deserialize, JsonSchema)]
pub struct OrderPlacedV1 {
    /// The order.
    pub order_id: String,
    /// The amount, in euros.
    pub amount: f64,
}

impl EventType for OrderPlacedV1 {
    const TYPE: &'static str = "conformance.order.placed";
    const VERSION: Version = Version::new(1, 0);
    type Codec = Json;
}

/// Version 2: the amount in cents, at least 1.
#[derive(Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OrderPlaced {
    /// The order.
    pub order_id: String,
    /// The amount, in cents.
    #[schemars(range(min = 1))]
    pub amount_cents: i64,
}

impl EventType for OrderPlaced {
    const TYPE: &'static str = "conformance.order.placed";
    const VERSION: Version = Version::new(2, 0);
    type Codec = ValidatedJson;
}

impl Upcast for OrderPlacedV1 {
    type Next = OrderPlaced;
    fn upcast(self) -> OrderPlaced {
        OrderPlaced {
            order_id: self.order_id,
            amount_cents: (self.amount * 100.0).round() as i64,
        }
    }
}

/// An order was cancelled (Avro data: a binary payload on every broker).
#[derive(Serialize, Deserialize, AvroSchema)]
pub struct OrderCancelled {
    /// The order.
    pub order_id: String,
    /// Why, when said.
    pub reason: Option<String>,
    /// Who cancelled, and for whom (one named type used twice).
    pub by: Party,
    /// The customer.
    pub customer: Party,
}

/// A person or system in an event.
#[derive(Serialize, Deserialize, AvroSchema)]
pub struct Party {
    /// Their name.
    pub name: String,
}

impl EventType for OrderCancelled {
    const TYPE: &'static str = "conformance.order.cancelled";
    const VERSION: Version = Version::new(1, 0);
    type Codec = Avro;
}

/// The catalog of a service that publishes orders and bills them: both
/// versions of `OrderPlaced` (v1 is still read), and cancellations.
pub fn catalog() -> Result<Catalog, ContractError> {
    Catalog::new("shop-checkout")
        .service_version("1.4.0")
        .produces::<OrderPlaced>("orders")?
        .produces::<OrderCancelled>("orders")?
        .consumes::<OrderPlaced>("orders", "billing")?
        .consumes::<OrderPlacedV1>("orders", "billing")?
        .consumes::<OrderCancelled>("orders", "billing")
}
