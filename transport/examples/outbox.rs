//! A service with a transactional outbox and an exactly-once consumer, on
//! SQLite and any broker:
//!
//! ```sh
//! cargo run -p transport --features sqlite --example outbox                  # memory://
//! cargo run -p transport --features sqlite,redis --example outbox -- redis://127.0.0.1:6379
//! ```
//!
//! `place_order` writes the order and its `order.placed` event in one
//! transaction; a relay publishes committed events; the billing consumer
//! records each event as processed in the same transaction as the invoice
//! it writes, so an event delivered twice is invoiced once.

use std::sync::Arc;
use std::time::Duration;

use transport::runtime::{handler_fn, Consumer, Context, HandlerError, IdempotencyLayer};
use transport::sql::sqlx::{self, Sqlite};
use transport::sql::{Outbox, SqlIdempotencyStore};
use transport::{Message, SubscribeOptions};

#[derive(serde::Serialize, serde::Deserialize)]
struct OrderPlaced {
    order: String,
    cents: i64,
}

/// The order and its event commit together, or neither does.
async fn place_order(outbox: &Outbox<Sqlite>, order: &str, cents: i64) -> transport::Result<()> {
    let mut tx = outbox.pool().begin().await.map_err(db)?;
    sqlx::query("INSERT INTO orders (id, cents) VALUES (?, ?)")
        .bind(order)
        .bind(cents)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    let placed = OrderPlaced {
        order: order.to_owned(),
        cents,
    };
    let event = Message::json(&placed)?.with_key(order);
    outbox.enqueue(&mut tx, "orders", event).await?;
    tx.commit().await.map_err(db)
}

/// The billing handler: the processed mark and the invoice in one transaction.
async fn bill(store: Arc<SqlIdempotencyStore<Sqlite>>, ctx: Context) -> Result<(), HandlerError> {
    let placed: OrderPlaced = ctx.message().decode_json().map_err(HandlerError::permanent)?;
    let Some(mut tx) = store.begin_once(&ctx).await? else {
        return Ok(()); // invoiced by an earlier delivery: nothing to write
    };
    sqlx::query("INSERT INTO invoices (order_id, cents) VALUES (?, ?)")
        .bind(&placed.order)
        .bind(placed.cents)
        .execute(&mut *tx)
        .await
        .map_err(HandlerError::retry)?;
    tx.commit().await.map_err(HandlerError::retry)
}

fn db(e: sqlx::Error) -> transport::Error {
    transport::Error::new(transport::ErrorKind::Backend, e.to_string())
}

#[tokio::main]
async fn main() -> transport::Result<()> {
    let url = std::env::args().nth(1).unwrap_or_else(|| "memory://".to_owned());
    let broker = transport::connect(&url).await?;
    let file = std::env::temp_dir().join(format!("outbox-example-{}.db", std::process::id()));
    let outbox = Outbox::<Sqlite>::connect(&format!("sqlite://{}", file.display())).await?;
    outbox.migrate().await?;
    let pool = outbox.pool().clone();
    let store = Arc::new(SqlIdempotencyStore::new(pool.clone()));
    store.migrate().await?;
    for table in [
        "CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY, cents INTEGER NOT NULL)",
        "CREATE TABLE IF NOT EXISTS invoices (order_id TEXT NOT NULL, cents INTEGER NOT NULL)",
    ] {
        sqlx::query(table).execute(&pool).await.map_err(db)?;
    }
    let options = SubscribeOptions::new("billing").max_attempts(5);
    drop(broker.subscribe("orders", options.clone()).await?);

    for (i, cents) in [1200, 3400, 560].into_iter().enumerate() {
        place_order(&outbox, &format!("order-{}-{i}", std::process::id()), cents).await?;
    }

    // The relay: in the service, or as its own process (`transport outbox relay`).
    let relay = outbox.relay(broker.clone()).spawn();

    let service = tower::ServiceBuilder::new()
        .layer(IdempotencyLayer::new(store.clone()))
        .service(handler_fn({
            let store = store.clone();
            move |ctx| bill(store.clone(), ctx)
        }));
    let consumer = Consumer::new(broker.clone(), "orders", options);
    let stats = consumer.stats_handle();
    let done = async move {
        while stats.get().acked < 3 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let stats = tokio::time::timeout(Duration::from_secs(30), consumer.run(service, done))
        .await
        .map_err(|_| transport::Error::new(transport::ErrorKind::Timeout, "orders not billed within 30 s"))??;
    relay.stop().await?;

    let invoiced: i64 = sqlx::query_scalar("SELECT count(*) FROM invoices")
        .fetch_one(&pool)
        .await
        .map_err(db)?;
    println!("3 orders placed, {invoiced} invoiced; consumer {stats:?}");
    println!("outbox after the relay: {:?}", outbox.status().await?);
    let _ = std::fs::remove_file(&file);
    broker.close().await
}
