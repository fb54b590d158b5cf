//! Declaring a Rust type an event type: its name, its version and its
//! codec; and how an older version turns into the next.

use crate::codec::Codec;
use crate::version::Version;

/// A Rust type that is the data of an event type.
///
/// ```
/// use schemars::JsonSchema;
/// use serde::{Deserialize, Serialize};
/// use transport_contracts::{EventType, ValidatedJson, Version};
///
/// /// An order was placed.
/// #[derive(Serialize, Deserialize, JsonSchema)]
/// struct OrderPlaced {
///     /// The order's id.
///     order_id: String,
///     /// What it costs, in cents.
///     #[schemars(range(min = 1))]
///     amount_cents: i64,
/// }
///
/// impl EventType for OrderPlaced {
///     const TYPE: &'static str = "order.placed";
///     const VERSION: Version = Version::new(2, 0);
///     type Codec = ValidatedJson;
/// }
/// ```
pub trait EventType: Sized + Send + Sync + 'static {
    /// The event type (`ce-type`), such as `order.placed`.
    const TYPE: &'static str;
    /// The version of the data this type reads and writes (`ce-dataversion`).
    const VERSION: Version;
    /// How the data is written, and the language of its schema.
    type Codec: Codec<Self>;
}

/// An older major version of an event type, turned into the next version
/// when read, so a handler only sees the newest shape.
///
/// Each step is written once (v1 into v2, v2 into v3); a router chains them.
///
/// ```
/// # use schemars::JsonSchema;
/// # use serde::{Deserialize, Serialize};
/// # use transport_contracts::{EventType, Json, Upcast, Version};
/// #[derive(Serialize, Deserialize, JsonSchema)]
/// struct OrderPlacedV1 { order_id: String, amount: f64 }
/// # #[derive(Serialize, Deserialize, JsonSchema)]
/// # struct OrderPlaced { order_id: String, amount_cents: i64 }
/// # impl EventType for OrderPlaced {
/// #     const TYPE: &'static str = "order.placed";
/// #     const VERSION: Version = Version::new(2, 0);
/// #     type Codec = Json;
/// # }
///
/// impl EventType for OrderPlacedV1 {
///     const TYPE: &'static str = "order.placed";
///     const VERSION: Version = Version::new(1, 0);
///     type Codec = Json;
/// }
///
/// impl Upcast for OrderPlacedV1 {
///     type Next = OrderPlaced;
///     fn upcast(self) -> OrderPlaced {
///         OrderPlaced { order_id: self.order_id, amount_cents: (self.amount * 100.0).round() as i64 }
///     }
/// }
/// ```
pub trait Upcast: EventType {
    /// The version this one becomes.
    type Next: EventType;

    /// Turn this version's data into the next version's.
    fn upcast(self) -> Self::Next;
}
