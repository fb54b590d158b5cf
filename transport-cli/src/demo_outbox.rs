//! The demo's second part: a warehouse service that reserves stock and
//! announces it through a transactional outbox in SQLite, and a shipping
//! service whose handler records "processed" in the same SQLite transaction
//! as the shipment, so every reservation ships exactly once even when the
//! handler fails after committing and an event is published twice.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use transport::runtime::{handler_fn, Consumer, Context, HandlerError, IdempotencyLayer};
use transport::sql::sqlx::{self, Sqlite};
use transport::sql::{Outbox, SqlIdempotencyStore};
use transport::{Error, ErrorKind, Message, SubscribeOptions, Transport};

fn sql(e: sqlx::Error) -> Error {
    Error::new(ErrorKind::Backend, format!("demo database: {e}"))
}

pub async fn run(broker: Arc<dyn Transport>) -> transport::Result<()> {
    let dir = std::env::temp_dir().join(format!("transport-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| Error::new(ErrorKind::Backend, e.to_string()))?;
    let result = warehouse(broker, &format!("sqlite://{}", dir.join("shop.db").display())).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn warehouse(broker: Arc<dyn Transport>, db: &str) -> transport::Result<()> {
    println!(
        "\n== outbox and exactly-once effects (SQLite + {}) ==",
        broker.backend()
    );
    let outbox = Outbox::<Sqlite>::connect(db).await?;
    outbox.migrate().await?;
    let pool = outbox.pool().clone();
    let store = Arc::new(SqlIdempotencyStore::new(pool.clone()));
    store.migrate().await?;
    for statement in [
        "CREATE TABLE stock (sku TEXT PRIMARY KEY, available INTEGER NOT NULL CHECK (available >= 0))",
        "CREATE TABLE shipments (order_id TEXT NOT NULL)",
        "INSERT INTO stock VALUES ('lamp', 4), ('desk', 5)",
    ] {
        sqlx::query(statement).execute(&pool).await.map_err(sql)?;
    }
    let topic = format!("stock-reserved-{}", std::process::id());
    let options = SubscribeOptions::new("shipping").max_attempts(5);
    drop(broker.subscribe(&topic, options.clone()).await?);

    // Each reservation and its event commit together, or neither does.
    let mut committed = 0;
    for order in 1..=10 {
        let sku = if order % 2 == 0 { "lamp" } else { "desk" };
        let mut tx = pool.begin().await.map_err(sql)?;
        let reserved = sqlx::query("UPDATE stock SET available = available - 1 WHERE sku = ?")
            .bind(sku)
            .execute(&mut *tx)
            .await;
        let event = Message::new(format!("order-{order}")).with_key(sku);
        outbox.enqueue(&mut tx, &topic, event).await?;
        match reserved {
            Ok(_) => {
                tx.commit().await.map_err(sql)?;
                committed += 1;
            }
            Err(_) => {
                tx.rollback().await.map_err(sql)?;
                println!("  order {order:>2}: no {sku} left; reservation and its event rolled back");
            }
        }
    }
    println!("  {committed} reservations committed with their events in the outbox");

    let relay = outbox
        .relay(broker.clone())
        .poll_interval(Duration::from_millis(20))
        .spawn();

    // The first message handled fails after its commit; it is also the one
    // published again below.
    let first: Arc<Mutex<Option<(String, String)>>> = Arc::default();
    let handler = {
        let (store, first) = (store.clone(), first.clone());
        handler_fn(move |ctx: Context| {
            let (store, first) = (store.clone(), first.clone());
            async move {
                let order = String::from_utf8_lossy(ctx.payload()).into_owned();
                let Some(mut tx) = store.begin_once(&ctx).await? else {
                    println!("  {order}: shipped already; acknowledged without shipping again");
                    return Ok(());
                };
                sqlx::query("INSERT INTO shipments (order_id) VALUES (?)")
                    .bind(&order)
                    .execute(&mut *tx)
                    .await
                    .map_err(HandlerError::retry)?;
                tx.commit().await.map_err(HandlerError::retry)?;
                println!("  {order}: shipped (attempt {})", ctx.attempt());
                let is_first = {
                    let mut first = first.lock().unwrap();
                    first.is_none() && first.replace((ctx.id().to_owned(), order.clone())).is_none()
                };
                if is_first {
                    println!("  {order}: the handler fails after committing (say, its ack is lost)");
                    return Err(HandlerError::retry("lost after commit"));
                }
                Ok(())
            }
        })
    };
    let service = tower::ServiceBuilder::new()
        .layer(IdempotencyLayer::new(store.clone()))
        .service(handler);
    let consumer = Consumer::new(broker.clone(), &topic, options).concurrency(2);
    let stats = consumer.stats_handle();
    let (stop_consumer, consumer_stopped) = tokio::sync::oneshot::channel::<()>();
    let consumer_task = tokio::spawn(consumer.run(service, async {
        let _ = consumer_stopped.await;
    }));

    // Wait for every reservation to ship, then publish one event again, as a
    // relay that died between publishing and marking its rows would.
    let shipped = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM shipments")
            .fetch_one(&pool)
            .await
            .map_err(sql)
    };
    until("every reservation shipped", || async {
        Ok(shipped().await? >= committed && stats.get().duplicates >= 1)
    })
    .await?;
    let (id, payload) = first.lock().unwrap().clone().unwrap_or_default();
    println!("  {payload} is published again, as after a relay crash");
    broker.publish(&topic, Message::new(payload).with_id(id)).await?;
    if broker.capabilities().publish_dedup {
        // A broker that deduplicates publishes by id (NATS JetStream's
        // duplicate window) drops the copy before any consumer sees it;
        // should it still arrive, the idempotency layer acks it unhandled.
        let arrived = until_within("the republished event acknowledged", Duration::from_secs(1), || async {
            Ok(stats.get().duplicates >= 2)
        })
        .await
        .is_ok();
        if !arrived {
            println!("  the broker dropped it as a duplicate of a message it already has (publish deduplication)");
        }
    } else {
        until("the republished event acknowledged", || async {
            Ok(stats.get().duplicates >= 2)
        })
        .await?;
    }

    let _ = stop_consumer.send(());
    let stats = consumer_task
        .await
        .map_err(|e| Error::new(ErrorKind::Backend, e.to_string()))??;
    relay.stop().await?;
    let shipments = shipped().await?;
    let status = outbox.status().await?;
    println!("\nsummary:");
    println!("  reservations committed {committed}, rolled back {}", 10 - committed);
    println!(
        "  outbox: {} pending, {} parked after the relay ran",
        status.pending, status.parked
    );
    println!(
        "  shipments {shipments} for {committed} reservations; {} duplicate deliveries acknowledged without effect",
        stats.duplicates
    );
    Ok(())
}

/// Poll `done` every 20 ms until it holds, for up to 30 s.
async fn until<F, Fut>(what: &str, done: F) -> transport::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = transport::Result<bool>>,
{
    until_within(what, Duration::from_secs(30), done).await
}

/// Poll `done` every 20 ms until it holds, for up to `within`.
async fn until_within<F, Fut>(what: &str, within: Duration, mut done: F) -> transport::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = transport::Result<bool>>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !done().await? {
        if tokio::time::Instant::now() > deadline {
            return Err(Error::new(
                ErrorKind::Timeout,
                format!("demo: not {what} within {within:?}"),
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}
