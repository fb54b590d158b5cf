//! End to end on every broker: N state changes, each committed with its
//! outbox row in PostgreSQL → relay → broker → consumer runtime with the
//! SQL idempotency layer, whose handler marks the message processed in the
//! same transaction as its effect. Duplicates are forced on both sides: a
//! relay is killed after publishing a batch and before deleting it (its
//! rows are published again), and the handler fails a third of the
//! messages after committing (they are redelivered). The effects applied
//! must be exactly the N committed changes; rolled-back changes none.
//!
//! On memory:// and on each broker whose URL scripts/test exports
//! (`REDIS_URL`, `NATS_URL`, `RABBITMQ_URL`, `SQS_URL`, `KAFKA_URL`), with
//! the database at `POSTGRES_URL`; skipped with a message without them, a
//! failure under `CI=true`.

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use conformance_tests::stores::Faulty;
use conformance_tests::{live_env as live, unique};
use transport::runtime::{handler_fn, Consumer, Context, HandlerError, IdempotencyLayer};
use transport::{Message, SubscribeOptions};
use transport_sql::sqlx::{self, PgPool, Postgres};
use transport_sql::{Outbox, SqlIdempotencyStore};

const N: usize = 30;

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar::<_, i64>(sql).fetch_one(pool).await.expect("count")
}

async fn exactly_once(url: &str) {
    let Some(db) = live("POSTGRES_URL") else { return };
    let broker = transport::connect(url).await.expect("broker");
    let run = unique("eo").replace('-', "_");
    let outbox = Outbox::<Postgres>::connect(&db).await.expect("database");
    let outbox = outbox.with_table(&format!("{run}_outbox")).expect("table name");
    outbox.migrate().await.expect("outbox migration");
    let pool = outbox.pool().clone();
    let store = SqlIdempotencyStore::new(pool.clone())
        .with_table(&format!("{run}_processed"))
        .expect("table name");
    store.migrate().await.expect("idempotency migration");
    let store = Arc::new(store);
    let (orders, effects) = (format!("{run}_orders"), format!("{run}_effects"));
    sqlx::query(&format!("CREATE TABLE {orders} (id TEXT PRIMARY KEY)"))
        .execute(&pool)
        .await
        .unwrap();
    // No unique constraint: a second effect of one order would be counted.
    sqlx::query(&format!("CREATE TABLE {effects} (order_id TEXT NOT NULL)"))
        .execute(&pool)
        .await
        .unwrap();

    let topic = unique("orders");
    let options = SubscribeOptions::new("billing").max_attempts(20);
    drop(
        broker
            .subscribe(&topic, options.clone())
            .await
            .expect("create the group"),
    );

    // N committed state changes with their events, and 3 rolled back.
    let mut committed = BTreeSet::new();
    for i in 0..N + 3 {
        let id = format!("order-{i}");
        let mut tx = pool.begin().await.unwrap();
        sqlx::query(&format!("INSERT INTO {orders} (id) VALUES ($1)"))
            .bind(&id)
            .execute(&mut *tx)
            .await
            .unwrap();
        let event = Message::new(id.clone()).with_key(format!("customer-{}", i % 3));
        outbox.enqueue(&mut tx, &topic, event).await.unwrap();
        if i < N {
            tx.commit().await.unwrap();
            committed.insert(id);
        } else {
            tx.rollback().await.unwrap();
        }
    }

    // A relay killed after its first batch reached the broker, before it
    // deleted the rows: they stay leased for 1 s, then go out again.
    let faulty = Faulty::new(broker.clone());
    faulty.halt_after_publish.store(true, Ordering::SeqCst);
    let first = outbox.relay(faulty.clone()).batch_size(5).lease(Duration::from_secs(1));
    let killed = tokio::spawn(async move { first.run_once().await });
    tokio::time::timeout(Duration::from_secs(30), faulty.halted.notified())
        .await
        .expect("the first relay published its batch");
    killed.abort();
    let relay = outbox
        .relay(broker.clone())
        .poll_interval(Duration::from_millis(20))
        .spawn();

    // The consumer: mark + effect in one transaction; a third of the first
    // attempts fail after committing.
    let failed_after_commit = Arc::new(Mutex::new(HashSet::new()));
    let handler = {
        let (store, effects, failed) = (store.clone(), effects.clone(), failed_after_commit.clone());
        handler_fn(move |ctx: Context| {
            let (store, effects, failed) = (store.clone(), effects.clone(), failed.clone());
            async move {
                let order = String::from_utf8_lossy(ctx.payload()).into_owned();
                let Some(mut tx) = store.begin_once(&ctx).await? else {
                    return Ok(());
                };
                sqlx::query(&format!("INSERT INTO {effects} (order_id) VALUES ($1)"))
                    .bind(&order)
                    .execute(&mut *tx)
                    .await
                    .map_err(HandlerError::retry)?;
                tx.commit().await.map_err(HandlerError::retry)?;
                let number: usize = order.trim_start_matches("order-").parse().unwrap_or(0);
                if ctx.attempt() == 1 && number % 3 == 0 {
                    failed.lock().unwrap().insert(order);
                    return Err(HandlerError::retry("failing after the effect committed"));
                }
                Ok(())
            }
        })
    };
    let service = tower::ServiceBuilder::new()
        .layer(IdempotencyLayer::new(store.clone()))
        .service(handler);
    let consumer = Consumer::new(broker.clone(), &topic, options.clone()).concurrency(4);
    let stats = consumer.stats_handle();
    let (stop_consumer, consumer_stopped) = tokio::sync::oneshot::channel::<()>();
    let consumer_task = tokio::spawn(consumer.run(service, async {
        let _ = consumer_stopped.await;
    }));

    // Until every committed change has its effect, the outbox is empty, and
    // the duplicates came: each message failed after its commit, and the
    // killed relay's batch of 5 unless the broker deduplicates publishes by
    // message id (then the republished batch is absorbed).
    let relay_duplicates = if broker.capabilities().publish_dedup { 0 } else { 5 };
    let expected_duplicates = || failed_after_commit.lock().unwrap().len() + relay_duplicates;
    let start = Instant::now();
    let applied = format!("SELECT count(*) FROM {effects}");
    loop {
        let done = count(&pool, &applied).await as usize >= N
            && outbox.status().await.unwrap().pending == 0
            && stats.get().duplicates as usize >= expected_duplicates();
        if done {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "{url}: not settled in 90 s: {} effects, outbox {:?}, {:?}",
            count(&pool, &applied).await,
            outbox.status().await,
            stats.get()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Late redeliveries (the killed relay's republished batch) have time to
    // arrive and must change nothing.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = stop_consumer.send(());
    let stats = consumer_task.await.unwrap().expect("consumer");
    relay.stop().await.expect("relay");

    let applied_orders: Vec<String> = sqlx::query_scalar(&format!("SELECT order_id FROM {effects} ORDER BY order_id"))
        .fetch_all(&pool)
        .await
        .unwrap();
    let distinct: BTreeSet<String> = applied_orders.iter().cloned().collect();
    assert_eq!(
        applied_orders.len(),
        N,
        "{url}: {} effects for {N} changes ({stats:?})",
        applied_orders.len()
    );
    assert_eq!(
        distinct, committed,
        "{url}: effects of other orders than the committed ones"
    );
    let forced = failed_after_commit.lock().unwrap().len();
    assert!(
        forced >= N / 3,
        "{url}: only {forced} messages failed after their commit"
    );
    assert_eq!(
        stats.duplicates as usize,
        forced + relay_duplicates,
        "{url}: duplicates acknowledged without effect ({stats:?})"
    );
    eprintln!("{url}: {N} effects exactly; {stats:?}; {forced} failed after commit");
    for table in [&orders, &effects, &format!("{run}_outbox"), &format!("{run}_processed")] {
        let _ = sqlx::query(&format!("DROP TABLE {table}")).execute(&pool).await;
    }
    let _ = broker.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory() {
    exactly_once("memory://").await;
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis() {
    if let Some(url) = live("REDIS_URL") {
        exactly_once(&url).await;
    }
}

#[cfg(feature = "nats")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats() {
    if let Some(url) = live("NATS_URL") {
        exactly_once(&url).await;
    }
}

#[cfg(feature = "rabbitmq")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq() {
    if let Some(url) = live("RABBITMQ_URL") {
        exactly_once(&url).await;
    }
}

#[cfg(feature = "sqs")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs() {
    if let Some(url) = live("SQS_URL") {
        exactly_once(&url).await;
    }
}

#[cfg(feature = "kafka")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka() {
    if let Some(url) = live("KAFKA_URL") {
        exactly_once(&url).await;
    }
}
