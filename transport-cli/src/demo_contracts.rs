//! The demo's contract step: events declared as Rust types with a version
//! and a JSON Schema, a version 2 with an upcaster from version 1, a v1
//! event still in flight upcast on arrival, an invalid event refused at
//! publish, and another from a producer that does not check dead-lettered
//! with the field named.

use std::sync::Arc;
use std::time::{Duration, Instant};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use transport::contracts::{Contract, EventType, Json, Router, Upcast, ValidatedJson, Version};
use transport::runtime::{CatchPanicLayer, Consumer, Context, HandlerError, RetryDelayLayer, RetryPolicy};
use transport::{Event, SubscribeOptions, Transport};

/// A shipment was requested (version 1: the address as one line).
#[derive(Serialize, Deserialize, JsonSchema)]
struct ShipmentRequestedV1 {
    order: u32,
    address: String,
}

impl EventType for ShipmentRequestedV1 {
    const TYPE: &'static str = "demo.shipment.requested";
    const VERSION: Version = Version::new(1, 0);
    type Codec = Json;
}

/// A shipment was requested.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct ShipmentRequested {
    order: u32,
    address: Address,
}

/// Where to ship.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct Address {
    street: String,
    city: String,
    /// ISO 3166-1 alpha-2.
    #[schemars(length(equal = 2))]
    country: String,
}

impl EventType for ShipmentRequested {
    const TYPE: &'static str = "demo.shipment.requested";
    const VERSION: Version = Version::new(2, 0);
    type Codec = ValidatedJson;
}

impl Upcast for ShipmentRequestedV1 {
    type Next = ShipmentRequested;
    fn upcast(self) -> ShipmentRequested {
        let mut parts = self.address.split(", ").map(str::to_owned);
        ShipmentRequested {
            order: self.order,
            address: Address {
                street: parts.next().unwrap_or_default(),
                city: parts.next().unwrap_or_default(),
                country: parts.next().unwrap_or_default(),
            },
        }
    }
}

fn address(street: &str, city: &str, country: &str) -> Address {
    Address {
        street: street.into(),
        city: city.into(),
        country: country.into(),
    }
}

pub async fn run(broker: Arc<dyn Transport>) -> transport::Result<()> {
    println!("\ncontracts: shipments as typed events (v2, with an upcaster from v1):");
    let topic = format!("shipments-{}", std::process::id());
    let options = SubscribeOptions::new("warehouse").max_attempts(3);
    drop(broker.subscribe(&topic, options.clone()).await?);
    let v1 = Contract::<ShipmentRequestedV1>::new()?;
    let v2 = Contract::<ShipmentRequested>::new()?;

    let old = ShipmentRequestedV1 {
        order: 11,
        address: "1 Rue Lepic, Paris, FR".into(),
    };
    broker
        .publish(&topic, v1.to_message(&v1.event("demo/legacy-checkout", old))?)
        .await?;
    println!("  published order 11 as v1 (an older producer's event, still in flight)");
    for (order, a) in [
        (12, address("5 Unter den Linden", "Berlin", "DE")),
        (13, address("9 Via Roma", "Torino", "IT")),
    ] {
        let data = ShipmentRequested { order, address: a };
        broker
            .publish(&topic, v2.to_message(&v2.event("demo/checkout", data))?)
            .await?;
    }
    println!("  published orders 12 and 13 as v2");
    let bad = ShipmentRequested {
        order: 14,
        address: address("2 Main St", "Springfield", "USA"),
    };
    if let Err(e) = v2.to_message(&v2.event("demo/checkout", bad)) {
        println!("  order 14 refused at publish, nothing sent: {e}");
    }
    let unchecked = Event::new(
        ShipmentRequested::TYPE,
        "demo/partner-feed",
        serde_json::json!({"order": 15, "address": {"street": "3 Ring Rd", "city": "Graz", "country": "Austria"}}),
    )
    .with_version("2.0");
    broker.publish(&topic, unchecked.to_message()?).await?;
    println!("  order 15 published by a partner feed that does not check its events");

    let router = Router::new()
        .route(|ctx: Context, s: ShipmentRequested| async move {
            let how = if ctx.headers().get(transport::headers::CE_DATAVERSION) == Some("1.0") {
                "v1 event upcast on arrival"
            } else {
                "v2"
            };
            println!(
                "  shipping order {} to {}, {} ({}) [{how}]",
                s.order, s.address.city, s.address.country, s.address.street
            );
            Ok::<_, HandlerError>(())
        })?
        .upcast::<ShipmentRequestedV1>()?;
    let service = tower::ServiceBuilder::new()
        .layer(RetryDelayLayer::new(RetryPolicy::default()))
        .layer(CatchPanicLayer)
        .service(router);
    let consumer = Consumer::new(broker.clone(), &topic, options.clone());
    let stats = consumer.stats_handle();
    let done = async move {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let s = stats.get();
            if s.acked >= 3 && s.dead_lettered >= 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let s = consumer.run(service, done).await?;
    for dead in broker.dead_letters(&topic, &options).await?.peek(10).await? {
        println!("  dead-lettered: {}", dead.reason.unwrap_or_default());
    }
    println!(
        "  contracts: acked {}, dead-lettered {} (an event that breaks its schema never reaches the handler)",
        s.acked, s.dead_lettered
    );
    Ok(())
}
