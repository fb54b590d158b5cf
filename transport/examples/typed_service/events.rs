//! The event types of the typed service, and its catalog: what it
//! publishes and consumes, read by the gate and the documents.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use transport::contracts::{Catalog, ContractError, EventType, Json, Upcast, ValidatedJson, Version};

/// An order was placed (version 1: the amount as a decimal number). Older
/// producers still write it.
#[derive(Serialize, Deserialize, JsonSchema)]
pub struct OrderPlacedV1 {
    /// The order's id.
    pub order_id: String,
    /// What it costs, in euros.
    pub amount: f64,
}

impl EventType for OrderPlacedV1 {
    const TYPE: &'static str = "shop.order.placed";
    const VERSION: Version = Version::new(1, 0);
    type Codec = Json;
}

/// An order was placed.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct OrderPlaced {
    /// The order's id.
    pub order_id: String,
    /// What it costs, in the currency's smallest unit.
    #[schemars(range(min = 1))]
    pub amount_cents: i64,
    /// ISO 4217 code.
    #[schemars(length(equal = 3))]
    pub currency: String,
}

impl EventType for OrderPlaced {
    const TYPE: &'static str = "shop.order.placed";
    const VERSION: Version = Version::new(2, 0);
    type Codec = ValidatedJson;
}

impl Upcast for OrderPlacedV1 {
    type Next = OrderPlaced;
    fn upcast(self) -> OrderPlaced {
        OrderPlaced {
            order_id: self.order_id,
            amount_cents: (self.amount * 100.0).round() as i64,
            // Version 1 only ever sold in euros.
            currency: "EUR".into(),
        }
    }
}

/// What the service publishes and consumes.
pub fn catalog() -> Result<Catalog, ContractError> {
    Catalog::new("shop-billing")
        .service_version("1.2.0")
        .produces::<OrderPlaced>("orders")?
        .consumes::<OrderPlaced>("orders", "billing")?
        .consumes::<OrderPlacedV1>("orders", "billing")
}
