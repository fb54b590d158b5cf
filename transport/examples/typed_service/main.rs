//! A typed service: its events declared once (type, version, JSON Schema
//! derived from the Rust type), checked when published and when consumed,
//! an older version still in flight upcast on arrival, and an event that
//! breaks its schema dead-lettered with the field named.
//!
//! ```sh
//! cargo run -p transport --features contracts --example typed_service
//! cargo run -p transport --features contracts,nats --example typed_service -- nats://127.0.0.1:4222
//! ```
//!
//! Its contracts live beside it: `events.rs` declares the event types and
//! the service's catalog; `contracts/` holds the accepted schemas (the
//! gate's lock files), `asyncapi.json` and `EVENTS.md` are generated from
//! the catalog. `transport/tests/typed_service_contracts.rs` runs the gate
//! against `contracts/` and checks both documents are up to date
//! (`UPDATE_CONTRACTS=1` rewrites them).

use std::time::{Duration, Instant};

mod events;

use events::{OrderPlaced, OrderPlacedV1};
use transport::contracts::{Contract, EventType, Router, Unroutable};
use transport::runtime::{Consumer, Context, HandlerError};
use transport::{Event, SubscribeOptions};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args().nth(1).unwrap_or_else(|| "memory://".to_owned());
    let broker = transport::connect(&url).await?;
    let topic = format!("orders-typed-{}", std::process::id());
    let options = SubscribeOptions::new("billing").max_attempts(3);
    drop(broker.subscribe(&topic, options.clone()).await?);

    let catalog = events::catalog()?;
    println!(
        "{} {}: {} event version(s) declared",
        catalog.service(),
        catalog.version(),
        catalog.events().count()
    );
    let v1 = Contract::<OrderPlacedV1>::new()?;
    let placed = Contract::<OrderPlaced>::new()?;
    // An older producer's event, still in flight.
    let old = v1.event(
        "shop/legacy-checkout",
        OrderPlacedV1 {
            order_id: "o-1".into(),
            amount: 19.99,
        },
    );
    broker.publish(&topic, v1.to_message(&old)?).await?;
    for (id, cents) in [("o-2", 4_500), ("o-3", 120)] {
        let data = OrderPlaced {
            order_id: id.into(),
            amount_cents: cents,
            currency: "EUR".into(),
        };
        broker
            .publish(&topic, placed.to_message(&placed.event("shop/checkout", data))?)
            .await?;
    }
    // Checked at publish: this one is refused and nothing is sent.
    let free = OrderPlaced {
        order_id: "o-4".into(),
        amount_cents: 0,
        currency: "EUR".into(),
    };
    match placed.to_message(&placed.event("shop/checkout", free)) {
        Err(e) => println!("refused at publish: {e}"),
        Ok(_) => unreachable!("the schema says amount_cents >= 1"),
    }
    // A producer that does not check: caught when consumed.
    let unchecked = Event::new(
        OrderPlaced::TYPE,
        "shop/other",
        serde_json::json!({"order_id": "o-5", "amount_cents": 300, "currency": "EURO"}),
    )
    .with_version("2.0");
    broker.publish(&topic, unchecked.to_message()?).await?;

    let router = Router::new()
        .route(|ctx: Context, order: OrderPlaced| async move {
            println!(
                "order {} for {} {} (attempt {})",
                order.order_id,
                order.amount_cents,
                order.currency,
                ctx.attempt()
            );
            Ok::<_, HandlerError>(())
        })?
        .upcast::<OrderPlacedV1>()?
        .unknown_types(Unroutable::Skip);
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
    let stats = consumer.run(router, done).await?;
    println!("acked {}, dead-lettered {}", stats.acked, stats.dead_lettered);
    for dead in broker.dead_letters(&topic, &options).await?.peek(10).await? {
        println!("dead-lettered: {}", dead.reason.unwrap_or_default());
    }
    Ok(())
}
