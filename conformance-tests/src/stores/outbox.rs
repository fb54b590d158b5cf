//! The outbox checks: committed rows are published (and rolled-back ones
//! never), in key order across relays, with nothing lost when a relay dies
//! mid-batch; a failing row blocks only its key, retries back off and end
//! in parking, and parked rows are listed, retried and discarded by
//! selection.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backend_memory::{MemoryConfig, MemoryTransport};
use futures::future::BoxFuture;
use transport_core::{ErrorKind, Message, Result, Selection, SubscribeOptions, Subscription, Transport};
use transport_sql::{Dialect, Outbox, OutboxStatus, Relay};

use super::faulty::Faulty;
use super::*;
use crate::ensure;
use crate::support::{
    expect_quiet_for, next, receive_and_ack, receive_exactly, receive_texts, unique, within_bounds, CheckFailure,
    CheckResult,
};

/// A check of an outbox; it gets a migrated-nowhere outbox on the database
/// under test and picks its own table.
pub type OutboxCheck<DB> = fn(Outbox<DB>) -> BoxFuture<'static, CheckResult>;

/// The outbox and relay contract, for every database.
pub fn outbox_checks<DB: Dialect>() -> Vec<(&'static str, OutboxCheck<DB>)> {
    vec![
        ("committed_rows_are_published", |o| {
            Box::pin(committed_rows_are_published(o))
        }),
        ("two_relays_keep_key_order", |o| Box::pin(two_relays_keep_key_order(o))),
        ("relay_killed_after_publish_loses_nothing", |o| {
            Box::pin(relay_killed_after_publish_loses_nothing(o))
        }),
        ("failing_row_blocks_only_its_key", |o| {
            Box::pin(failing_row_blocks_only_its_key(o))
        }),
        ("oversize_row_is_parked", |o| Box::pin(oversize_row_is_parked(o))),
        ("retries_end_in_parking", |o| Box::pin(retries_end_in_parking(o))),
        ("missing_migration_is_reported", |o| {
            Box::pin(missing_migration_is_reported(o))
        }),
        ("status_tells_the_oldest_age", |o| {
            Box::pin(status_tells_the_oldest_age(o))
        }),
        ("enqueue_rejects_bad_input", |o| Box::pin(enqueue_rejects_bad_input(o))),
        ("unlisted_error_is_retried_behind_its_key", |o| {
            Box::pin(unlisted_error_is_retried_behind_its_key(o))
        }),
        ("retry_backoff_doubles_from_the_first", |o| {
            Box::pin(retry_backoff_doubles_from_the_first(o))
        }),
        ("unattempted_rows_are_released", |o| {
            Box::pin(unattempted_rows_are_released(o))
        }),
        ("retried_rows_get_fresh_attempts", |o| {
            Box::pin(retried_rows_get_fresh_attempts(o))
        }),
        ("status_counts_pending_apart_from_parked", |o| {
            Box::pin(status_counts_pending_apart_from_parked(o))
        }),
        ("parked_rows_are_picked_by_parking_time", |o| {
            Box::pin(parked_rows_are_picked_by_parking_time(o))
        }),
    ]
}

/// `outbox` on a table of its own, migrated.
async fn fresh<DB: Dialect>(outbox: Outbox<DB>) -> Result<Outbox<DB>, CheckFailure> {
    let table = unique("outbox").replace('-', "_");
    let outbox = outbox.with_table(&table)?;
    outbox.migrate().await?;
    Ok(outbox)
}

/// Enqueue `messages` to `topic` in one transaction, committed or not.
async fn enqueue<DB: Dialect>(outbox: &Outbox<DB>, topic: &str, messages: Vec<Message>, commit: bool) -> CheckResult {
    let mut tx = outbox.pool().begin().await.map_err(sql)?;
    for m in messages {
        outbox.enqueue(&mut tx, topic, m).await?;
    }
    if commit {
        tx.commit().await.map_err(sql)
    } else {
        tx.rollback().await.map_err(sql)
    }
}

/// Run `relay` round by round until the outbox has nothing pending (parked
/// rows are not pending), within 30 s.
async fn drain<DB: Dialect>(outbox: &Outbox<DB>, relay: &Relay<DB>) -> Result<OutboxStatus, CheckFailure> {
    let start = Instant::now();
    loop {
        relay.run_once().await?;
        let status = outbox.status().await?;
        if status.pending == 0 {
            return Ok(status);
        }
        ensure!(
            start.elapsed() < Duration::from_secs(30),
            "outbox not drained within 30 s: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Receive `n` deliveries (acking them) as whole messages (headers,
/// binary payloads), to compare with what was enqueued.
async fn receive_messages(sub: &mut Subscription, n: usize) -> Result<Vec<Message>, CheckFailure> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        let d = next(sub).await?;
        got.push(d.message().clone());
        d.ack().await?;
    }
    Ok(got)
}

fn memory() -> Arc<dyn Transport> {
    MemoryTransport::new()
}

async fn subscribe(t: &Arc<dyn Transport>, topic: &str) -> Result<Subscription, CheckFailure> {
    Ok(t.subscribe(topic, SubscribeOptions::new("g")).await?)
}

async fn committed_rows_are_published<DB: Dialect>(outbox: Outbox<DB>) -> CheckResult {
    let outbox = fresh(outbox).await?;
    let (t, topic) = (memory(), unique("orders"));
    let mut sub = subscribe(&t, &topic).await?;
    let sent = vec![
        Message::new((0..=255u8).collect::<Vec<u8>>())
            .with_key("k1")
            .with_header("x-name", "Zoë \"q\" %41"),
        Message::new("second").with_key("k1"),
        Message::new(Vec::<u8>::new()),
    ];
    enqueue(&outbox, &topic, sent.clone(), true).await?;
    enqueue(
        &outbox,
        &topic,
        vec![Message::new("rolled back"), Message::new("rolled back too")],
        false,
    )
    .await?;
    ensure!(
        outbox.status().await?.pending == 3,
        "pending after 3 committed and 2 rolled back rows: {:?}",
        outbox.status().await?
    );
    let status = drain(&outbox, &outbox.relay(t.clone())).await?;
    ensure!(status == OutboxStatus::default(), "status after draining: {status:?}");
    let mut got = receive_messages(&mut sub, 3).await?;
    // Order holds per key (k1); the keyless row may come anywhere.
    let k1: Vec<&str> = got.iter().filter(|m| m.key.is_some()).map(|m| m.id.as_str()).collect();
    ensure!(
        k1 == [sent[0].id.as_str(), sent[1].id.as_str()],
        "key k1 published out of order"
    );
    let mut sent = sent;
    got.sort_by(|a, b| a.id.cmp(&b.id));
    sent.sort_by(|a, b| a.id.cmp(&b.id));
    ensure!(
        got == sent,
        "published {got:?}, enqueued {sent:?} (ids, keys, headers, payloads)"
    );

    expect_quiet_for(
        &mut sub,
        Duration::from_millis(500),
        "rows of a rolled-back transaction",
    )
    .await
}

async fn two_relays_keep_key_order<DB: Dialect>(outbox: Outbox<DB>) -> CheckResult {
    let outbox = fresh(outbox).await?;
    let (t, topic) = (memory(), unique("orders"));
    let mut sub = subscribe(&t, &topic).await?;
    let keys = ["a", "b", "c", "d", "e", "f"];
    let mut sent: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for tx in 0..30 {
        let batch: Vec<Message> = (0..10)
            .map(|i| {
                let key = keys[(tx * 10 + i) % keys.len()];
                let m = Message::new(format!("{tx}-{i}")).with_key(key);
                sent.entry(key.to_owned()).or_default().push(m.id.clone());
                m
            })
            .collect();
        enqueue(&outbox, &topic, batch, true).await?;
    }
    // Publishes take a random 0-15 ms: a relay that took later rows of a
    // key another relay holds would overtake it.
    let slow = Faulty::new(t.clone());
    slow.jitter(Duration::from_millis(15));
    let relays: Vec<_> = (0..2)
        .map(|_| {
            let relay = outbox
                .relay(slow.clone())
                .batch_size(16)
                .poll_interval(Duration::from_millis(10));
            let outbox = outbox.clone();
            tokio::spawn(async move { drain(&outbox, &relay).await })
        })
        .collect();
    for r in relays {
        r.await.map_err(|e| CheckFailure(format!("relay task failed: {e}")))??;
    }
    let got = receive_and_ack(&mut sub, 300).await?;
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut per_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for m in &got {
        *seen.entry(m.id.as_str()).or_default() += 1;
        per_key
            .entry(m.key.clone().unwrap_or_default())
            .or_default()
            .push(m.id.clone());
    }
    ensure!(
        seen.values().all(|n| *n == 1),
        "a row was published twice by two relays in the normal case"
    );
    ensure!(per_key == sent, "per-key order not kept by two relays");
    expect_quiet_for(
        &mut sub,
        Duration::from_millis(300),
        "after every row was published once",
    )
    .await
}

async fn relay_killed_after_publish_loses_nothing<DB: Dialect>(outbox: Outbox<DB>) -> CheckResult {
    let outbox = fresh(outbox).await?;
    let (t, topic) = (memory(), unique("orders"));
    let mut sub = subscribe(&t, &topic).await?;
    // Distinct keys: rows the killed relay does not hold are free at once.
    let sent: Vec<Message> = (0..20)
        .map(|i| Message::new(format!("m{i}")).with_key(format!("k{i}")))
        .collect();
    enqueue(&outbox, &topic, sent.clone(), true).await?;
    // The first relay's transport publishes its first batch, then hangs
    // forever: the relay is killed there, after publishing, before deleting.
    let faulty = Faulty::new(t.clone());
    faulty.halt_after_publish.store(true, Ordering::SeqCst);
    let lease = Duration::from_millis(800);
    let before_claim = Instant::now();
    let first = outbox.relay(faulty.clone()).batch_size(5).lease(lease);
    let task = tokio::spawn(async move { first.run_once().await });
    tokio::time::timeout(Duration::from_secs(10), faulty.halted.notified())
        .await
        .map_err(|_| CheckFailure("the first relay did not publish within 10 s".into()))?;
    let killed = Instant::now();
    task.abort();
    ensure!(
        outbox.status().await?.pending == 20,
        "rows deleted by a relay killed before it marked them"
    );
    let second = outbox
        .relay(t.clone())
        .batch_size(5)
        .poll_interval(Duration::from_millis(10));
    let mut first_republish = None;
    let start = Instant::now();
    while outbox.status().await?.pending > 0 {
        let step = second.run_once().await?;
        if step.published > 0 && first_republish.is_none() {
            first_republish = Some(killed.elapsed());
        }
        ensure!(start.elapsed() < Duration::from_secs(30), "not drained within 30 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let got = receive_and_ack(&mut sub, 25).await?;
    let mut count: HashMap<String, usize> = HashMap::new();
    for m in &got {
        *count.entry(m.id.clone()).or_default() += 1;
    }
    ensure!(
        sent.iter().all(|m| count.contains_key(&m.id)),
        "a committed row was never published"
    );
    let twice = count.values().filter(|n| **n == 2).count();
    ensure!(
        twice == 5,
        "{twice} rows published twice, expected the 5 of the killed relay's batch"
    );
    // The killed relay's rows wait for its lease; the rest go at once.
    ensure!(
        first_republish.is_some_and(|t| t < lease),
        "the second relay waited for rows nobody held"
    );
    ensure!(
        before_claim.elapsed() >= lease,
        "the killed relay's rows were published again before its lease ran out"
    );
    expect_quiet_for(&mut sub, Duration::from_millis(300), "after the outbox drained").await
}

async fn failing_row_blocks_only_its_key<DB: Dialect>(outbox: Outbox<DB>) -> CheckResult {
    let outbox = fresh(outbox).await?;
    let (t, topic) = (memory(), unique("orders"));
    let mut sub = subscribe(&t, &topic).await?;
    let a1 = Message::new("a1").with_key("a");
    let sent = vec![
        a1.clone(),
        Message::new("a2").with_key("a"),
        Message::new("b1").with_key("b"),
        Message::new("b2").with_key("b"),
    ];
    enqueue(&outbox, &topic, sent.clone(), true).await?;
    let faulty = Faulty::new(t.clone());
    faulty.fail(&a1.id, 2);
    let backoff = Duration::from_millis(300);
    let relay = outbox
        .relay(faulty.clone())
        .retry_backoff(backoff, backoff)
        .poll_interval(Duration::from_millis(10));
    let start = Instant::now();
    let step = relay.run_once().await?;
    ensure!(
        step.retrying == 1 && step.published == 0,
        "first round (a1 fails): {step:?}"
    );
    let status = outbox.status().await?;
    ensure!(
        status.retrying == 1 && status.pending == 4,
        "status after a1 failed: {status:?}"
    );
    // Key b goes on while a1 backs off; a2 waits behind a1.
    relay.run_once().await?;
    receive_texts(&mut sub, &["b1", "b2"], "while a1 backs off").await?;
    let status = drain(&outbox, &relay).await?;
    ensure!(status == OutboxStatus::default(), "status after draining: {status:?}");
    // a1 failed twice, each followed by a 300 ms backoff.
    within_bounds(
        "a1 published",
        start.elapsed(),
        backoff * 2 - Duration::from_millis(50),
        Duration::from_secs(10),
    )?;
    receive_texts(&mut sub, &["a1", "a2"], "key a").await?;
    Ok(())
}

async fn oversize_row_is_parked<DB: Dialect>(outbox: Outbox<DB>) -> CheckResult {
    let outbox = fresh(outbox).await?;
    let t: Arc<dyn Transport> = MemoryTransport::with_config(MemoryConfig {
        max_message_size: 1024,
        ..MemoryConfig::default()
    });
    let topic = unique("orders");
    let mut sub = subscribe(&t, &topic).await?;
    let big = Message::new(vec![7u8; 4096]).with_key("k");
    enqueue(
        &outbox,
        &topic,
        vec![
            Message::new("before").with_key("k"),
            big.clone(),
            Message::new("after").with_key("k"),
        ],
        true,
    )
    .await?;
    let relay = outbox.relay(t.clone());
    let step = relay.run_once().await?;
    ensure!(
        step.parked == 1 && step.published == 2,
        "round with an oversize row: {step:?}"
    );
    receive_texts(&mut sub, &["before", "after"], "the small rows around the parked one").await?;
    let status = outbox.status().await?;
    ensure!(status.parked == 1 && status.pending == 0, "status: {status:?}");
    let parked = outbox.parked(10).await?;
    ensure!(parked.len() == 1 && parked[0].id == big.id, "parked rows: {parked:?}");
    ensure!(
        parked[0].error_kind.as_deref() == Some(ErrorKind::MessageTooLarge.as_str()) && parked[0].attempts == 1,
        "parked with {:?} after {} attempts, expected message too large after 1",
        parked[0].error_kind,
        parked[0].attempts
    );
    ensure!(
        outbox.retry(&Selection::ids(["no-such-id"])).await? == 0,
        "retry of an unknown id picked a row"
    );
    ensure!(
        outbox.retry(&Selection::all().reason_contains("is 4")).await? == 1,
        "retry by error text"
    );
    ensure!(outbox.status().await?.pending == 1, "a retried row is pending again");
    let step = relay.run_once().await?;
    ensure!(
        step.parked == 1,
        "the retried oversize row was not parked again: {step:?}"
    );
    ensure!(
        outbox.discard(&Selection::ids([big.id.clone()])).await? == 1,
        "discard by id"
    );
    ensure!(
        outbox.status().await? == OutboxStatus::default(),
        "status after discard: {:?}",
        outbox.status().await?
    );
    expect_quiet_for(&mut sub, Duration::from_millis(300), "an oversize row").await
}

async fn retries_end_in_parking<DB: Dialect>(outbox: Outbox<DB>) -> CheckResult {
    let outbox = fresh(outbox).await?;
    let (t, topic) = (memory(), unique("orders"));
    let mut sub = subscribe(&t, &topic).await?;
    let doomed = Message::new("doomed");
    enqueue(&outbox, &topic, vec![doomed.clone(), Message::new("fine")], true).await?;
    let faulty = Faulty::new(t.clone());
    faulty.fail(&doomed.id, u32::MAX);
    let relay = outbox
        .relay(faulty)
        .max_attempts(Some(3))
        .retry_backoff(Duration::from_millis(50), Duration::from_millis(100));
    let status = drain(&outbox, &relay).await?;
    ensure!(status.parked == 1, "status after draining: {status:?}");
    let parked = outbox.parked(10).await?;
    ensure!(
        parked.len() == 1 && parked[0].id == doomed.id && parked[0].attempts == 3,
        "parked: {parked:?}, expected the failing row after 3 attempts"
    );
    ensure!(
        parked[0].error_kind.as_deref() == Some(ErrorKind::Timeout.as_str()),
        "error kind {:?}",
        parked[0].error_kind
    );
    let got = receive_and_ack(&mut sub, 1).await?;
    ensure!(got[0].text == "fine", "the other row was not published");
    Ok(())
}

async fn missing_migration_is_reported<DB: Dialect>(outbox: Outbox<DB>) -> CheckResult {
    let outbox = outbox.with_table(&unique("never_migrated").replace('-', "_"))?;
    let not_found = |what: &str, r: Result<()>| -> CheckResult {
        match r {
            Err(e) if e.kind() == ErrorKind::NotFound && !e.is_retryable() && e.message().contains("migrat") => Ok(()),
            Err(e) => Err(CheckFailure(format!(
                "{what} on a missing table: {e} (kind {:?}), expected NotFound naming the migration",
                e.kind()
            ))),
            Ok(()) => Err(CheckFailure(format!("{what} on a missing table succeeded"))),
        }
    };
    not_found("check", outbox.check().await)?;
    not_found("status", outbox.status().await.map(drop))?;
    let mut tx = outbox.pool().begin().await.map_err(sql)?;
    not_found("enqueue", outbox.enqueue(&mut tx, "orders", Message::new("x")).await)?;
    drop(tx);
    let start = Instant::now();
    let run = tokio::time::timeout(
        Duration::from_secs(10),
        outbox.relay(memory()).run(std::future::pending()),
    )
    .await
    .map_err(|_| CheckFailure("a relay on a missing table still runs after 10 s".into()))?;
    not_found("relay", run)?;
    within_bounds("relay stopped", start.elapsed(), Duration::ZERO, Duration::from_secs(5))
}

async fn status_tells_the_oldest_age<DB: Dialect>(outbox: Outbox<DB>) -> CheckResult {
    let outbox = fresh(outbox).await?;
    ensure!(
        outbox.status().await?.oldest_pending_age.is_none(),
        "an empty outbox has an oldest age"
    );
    let start = Instant::now();
    enqueue(&outbox, "orders", vec![Message::new("old")], true).await?;
    tokio::time::sleep(Duration::from_millis(400)).await;
    enqueue(&outbox, "orders", vec![Message::new("new")], true).await?;
    let age = outbox.status().await?.oldest_pending_age;
    let high = start.elapsed() + Duration::from_millis(50);
    within_bounds(
        "oldest pending age",
        age.unwrap_or_default(),
        Duration::from_millis(350),
        high,
    )
}

async fn enqueue_rejects_bad_input<DB: Dialect>(outbox: Outbox<DB>) -> CheckResult {
    let outbox = fresh(outbox).await?;
    let invalid = |what: &str, r: Result<()>| -> CheckResult {
        match r {
            Err(e) if e.kind() == ErrorKind::InvalidArgument && !e.is_retryable() => Ok(()),
            Err(e) => Err(CheckFailure(format!(
                "{what}: {e} (kind {:?}), expected InvalidArgument",
                e.kind()
            ))),
            Ok(()) => Err(CheckFailure(format!("{what} was accepted"))),
        }
    };
    let mut tx = outbox.pool().begin().await.map_err(sql)?;
    invalid("empty topic", outbox.enqueue(&mut tx, "", Message::new("x")).await)?;
    invalid(
        "header name with a space",
        outbox
            .enqueue(&mut tx, "t", Message::new("x").with_header("a b", "v"))
            .await,
    )?;
    drop(tx);
    let m = Message::new("x");
    enqueue(&outbox, "t", vec![m.clone()], true).await?;
    let mut tx = outbox.pool().begin().await.map_err(sql)?;
    invalid("duplicate id", outbox.enqueue(&mut tx, "t", m).await)?;
    drop(tx);
    ensure!(outbox.status().await?.pending == 1, "rejected rows were written");
    Ok(())
}

/// An error the relay has no rule for (a non-retryable `Backend` error) is
/// retried with backoff, not parked, and while it waits the later rows of
/// its key wait too, also in the one-by-one publishing after the batch
/// failed; other keys go on in the same round.
async fn unlisted_error_is_retried_behind_its_key<DB: Dialect>(outbox: Outbox<DB>) -> CheckResult {
    let outbox = fresh(outbox).await?;
    let (t, topic) = (memory(), unique("orders"));
    let mut sub = subscribe(&t, &topic).await?;
    let a1 = Message::new("a1").with_key("a");
    let sent = vec![
        a1.clone(),
        Message::new("a2").with_key("a"),
        Message::new("b1").with_key("b"),
    ];
    enqueue(&outbox, &topic, sent, true).await?;
    let faulty = Faulty::new(t.clone());
    faulty.fail_with(&a1.id, 1, ErrorKind::Backend);
    let relay = outbox
        .relay(faulty.clone())
        .retry_backoff(Duration::from_millis(200), Duration::from_millis(200));
    let step = relay.run_once().await?;
    ensure!(
        step.retrying == 1 && step.parked == 0 && step.published == 1 && !step.broker_failed,
        "round where a1 fails with a non-retryable backend error: {step:?}, expected a1 retrying, b1 published"
    );
    let status = outbox.status().await?;
    ensure!(
        status.retrying == 1 && status.parked == 0 && status.pending == 2,
        "status after a1 failed: {status:?}"
    );
    let got = receive_and_ack(&mut sub, 1).await?;
    ensure!(got[0].text == "b1", "published {:?} while a1 waits", got[0].text);
    let status = drain(&outbox, &relay).await?;
    ensure!(status == OutboxStatus::default(), "status after draining: {status:?}");
    receive_texts(&mut sub, &["a1", "a2"], "key a").await?;
    Ok(())
}

/// A failed row waits `first`, then twice that, never `max` from the start.
async fn retry_backoff_doubles_from_the_first<DB: Dialect>(outbox: Outbox<DB>) -> CheckResult {
    let outbox = fresh(outbox).await?;
    let (t, topic) = (memory(), unique("orders"));
    let mut sub = subscribe(&t, &topic).await?;
    let row = Message::new("twice");
    enqueue(&outbox, &topic, vec![row.clone()], true).await?;
    let faulty = Faulty::new(t.clone());
    faulty.fail(&row.id, 2);
    let first = Duration::from_millis(500);
    let relay = outbox.relay(faulty).retry_backoff(first, Duration::from_secs(20));
    let start = Instant::now();
    drain(&outbox, &relay).await?;
    // 500 ms after the first failure, 1 s after the second.
    within_bounds(
        "a row failing twice published",
        start.elapsed(),
        first * 3 - Duration::from_millis(50),
        first * 3 + Duration::from_millis(1200),
    )?;
    receive_exactly(&mut sub, &row, "the retried row").await
}

/// When the broker fails on one topic, the round's rows of other topics
/// are handed back at once: another relay publishes them without waiting
/// for the lease.
async fn unattempted_rows_are_released<DB: Dialect>(outbox: Outbox<DB>) -> CheckResult {
    let outbox = fresh(outbox).await?;
    let t = memory();
    let (down, up) = (unique("down"), unique("up"));
    let mut sub = subscribe(&t, &up).await?;
    let failing = Message::new("fails");
    enqueue(&outbox, &down, vec![failing.clone()], true).await?;
    enqueue(&outbox, &up, vec![Message::new("u1"), Message::new("u2")], true).await?;
    let faulty = Faulty::new(t.clone());
    faulty.fail(&failing.id, 1);
    let lease = Duration::from_secs(60);
    let step = outbox
        .relay(faulty.clone())
        .lease(lease)
        .retry_backoff(Duration::from_secs(30), Duration::from_secs(30))
        .run_once()
        .await?;
    ensure!(
        step.claimed == 3 && step.published == 0 && step.broker_failed,
        "round where the first topic's publish times out: {step:?}"
    );
    let other = outbox.relay(t.clone()).lease(lease).run_once().await?;
    ensure!(
        other.published == 2,
        "another relay right after: {other:?}, expected the two rows the first handed back"
    );
    receive_texts(&mut sub, &["u1", "u2"], "the rows handed back").await?;
    Ok(())
}

/// `retry` gives a parked row its attempts afresh: it is parked again only
/// after `max_attempts` more failures.
async fn retried_rows_get_fresh_attempts<DB: Dialect>(outbox: Outbox<DB>) -> CheckResult {
    let outbox = fresh(outbox).await?;
    let (t, topic) = (memory(), unique("orders"));
    let mut sub = subscribe(&t, &topic).await?;
    let row = Message::new("flaky");
    enqueue(&outbox, &topic, vec![row.clone()], true).await?;
    let faulty = Faulty::new(t.clone());
    faulty.fail(&row.id, 3);
    let relay = outbox
        .relay(faulty)
        .max_attempts(Some(2))
        .retry_backoff(Duration::from_millis(20), Duration::from_millis(20));
    let status = drain(&outbox, &relay).await?;
    ensure!(status.parked == 1, "status after 2 failures: {status:?}");
    ensure!(
        outbox.retry(&Selection::ids([row.id.clone()])).await? == 1,
        "retry by id"
    );
    let step = relay.run_once().await?;
    ensure!(
        step.retrying == 1 && step.parked == 0,
        "a retried row failing once more: {step:?}, expected it retrying (attempt 1 of 2)"
    );
    let status = drain(&outbox, &relay).await?;
    ensure!(status == OutboxStatus::default(), "status after draining: {status:?}");
    receive_exactly(&mut sub, &row, "the retried row").await
}

/// `pending`, `retrying` and the oldest age are about rows still to
/// publish: a parked row is counted as parked only, however old it is.
async fn status_counts_pending_apart_from_parked<DB: Dialect>(outbox: Outbox<DB>) -> CheckResult {
    let outbox = fresh(outbox).await?;
    let t: Arc<dyn Transport> = MemoryTransport::with_config(MemoryConfig {
        max_message_size: 1024,
        ..MemoryConfig::default()
    });
    let topic = unique("orders");
    enqueue(&outbox, &topic, vec![Message::new(vec![0u8; 4096])], true).await?;
    let step = outbox.relay(t.clone()).run_once().await?;
    ensure!(step.parked == 1, "the oversize row was not parked: {step:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let young = Instant::now();
    // No relay runs after this: the row stays pending.
    enqueue(&outbox, &topic, vec![Message::new("young")], true).await?;
    let status = outbox.status().await?;
    let high = young.elapsed() + Duration::from_millis(50);
    ensure!(
        status.pending == 1 && status.retrying == 0 && status.parked == 1,
        "status with one parked and one new row: {status:?}"
    );
    within_bounds(
        "oldest pending age beside an older parked row",
        status.oldest_pending_age.unwrap_or(Duration::MAX),
        Duration::ZERO,
        high,
    )
}

/// Parked rows are listed oldest first, and `failed_before` picks them by
/// when they were parked, not when they were enqueued.
async fn parked_rows_are_picked_by_parking_time<DB: Dialect>(outbox: Outbox<DB>) -> CheckResult {
    let outbox = fresh(outbox).await?;
    let t: Arc<dyn Transport> = MemoryTransport::with_config(MemoryConfig {
        max_message_size: 1024,
        ..MemoryConfig::default()
    });
    let topic = unique("orders");
    let big = |n: u8| Message::new(vec![n; 4096]);
    let (first, second) = (big(1), big(2));
    enqueue(&outbox, &topic, vec![first.clone(), second.clone()], true).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // After both were enqueued, before either was parked.
    let between = std::time::SystemTime::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let step = outbox.relay(t.clone()).run_once().await?;
    ensure!(step.parked == 2, "the oversize rows were not parked: {step:?}");
    let parked = outbox.parked(10).await?;
    let ids: Vec<&str> = parked.iter().map(|p| p.id.as_str()).collect();
    ensure!(
        ids == [first.id.as_str(), second.id.as_str()],
        "parked rows listed as {ids:?}, expected oldest first"
    );
    let oldest = outbox.parked(1).await?;
    ensure!(oldest.len() == 1 && oldest[0].id == first.id, "parked(1): {oldest:?}");
    ensure!(
        parked.iter().all(|p| p.parked_at > between && p.enqueued_at < between),
        "parking and enqueue times: {parked:?}"
    );
    let early = outbox.discard(&Selection::all().failed_before(between)).await?;
    ensure!(
        early == 0,
        "discarding rows parked before a time before their parking took {early}"
    );
    let later = std::time::SystemTime::now() + Duration::from_secs(3600);
    let all = outbox.discard(&Selection::all().failed_before(later)).await?;
    ensure!(all == 2, "discarding by parking time took {all}");
    ensure!(
        outbox.status().await? == OutboxStatus::default(),
        "status after discarding: {:?}",
        outbox.status().await?
    );
    Ok(())
}
