//! Per-key order: messages of one key arrive in publish order, across
//! consumers where the backend promises it, across nacks (delayed or not)
//! and for batches.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use transport_core::{Capabilities, KeyOrdering, Message, SubscribeOptions, Transport};

use crate::support::*;
use crate::{ensure, Check};

fn key_consumers(caps: &Capabilities) -> usize {
    if caps.ordering == KeyOrdering::PerKey {
        2
    } else {
        1
    }
}

async fn subscribe_n(
    t: &dyn Transport,
    topic: &str,
    options: SubscribeOptions,
    n: usize,
) -> Result<Merged, CheckFailure> {
    let mut subs = Vec::new();
    for _ in 0..n {
        subs.push(t.subscribe(topic, options.clone()).await?);
    }
    Ok(Merged::new(topic, subs))
}

fn parse_seq(text: &str) -> Result<(String, usize), CheckFailure> {
    let (k, s) = text
        .rsplit_once(':')
        .ok_or_else(|| CheckFailure(format!("unexpected payload {text:?}")))?;
    let seq = s
        .parse()
        .map_err(|_| CheckFailure(format!("unexpected payload {text:?}")))?;
    Ok((k.to_owned(), seq))
}

/// 16 keys x 64 messages, published concurrently per key: each key's
/// messages arrive in publish order (with two consumers where ordering holds
/// across consumers, one otherwise).
pub async fn per_key_order(t: &Arc<dyn Transport>) -> CheckResult {
    let t: &dyn Transport = t.as_ref();
    let (keys, per_key) = (16, 64);
    let topic = unique("order");
    let mut sub = subscribe_n(t, &topic, opts("g").max_in_flight(32), key_consumers(&t.capabilities())).await?;
    let publishers = (0..keys).map(|k| {
        let topic = topic.clone();
        async move {
            for i in 0..per_key {
                t.publish(&topic, Message::new(format!("key{k}:{i}")).with_key(format!("key{k}")))
                    .await?;
            }
            Ok::<_, transport_core::Error>(())
        }
    });
    for r in join_all(publishers).await {
        r?;
    }
    let got = receive_and_ack(&mut sub, keys * per_key).await?;
    let mut last: HashMap<String, usize> = HashMap::new();
    for r in &got {
        let (key, seq) = parse_seq(&r.text)?;
        ensure!(
            r.key.as_deref() == Some(key.as_str()),
            "message {} carries key {:?}",
            r.text,
            r.key
        );
        let expected = last.get(&key).map_or(0, |s| s + 1);
        ensure!(seq == expected, "key {key}: received #{seq} where #{expected} was due");
        last.insert(key, seq);
    }
    expect_quiet(&mut sub, "after all keyed messages").await
}

/// A nacked message comes back before the later messages of its key.
pub async fn per_key_order_across_nack(t: &Arc<dyn Transport>) -> CheckResult {
    let t: &dyn Transport = t.as_ref();
    let (keys, per_key) = (4, 16);
    let topic = unique("ordernack");
    let mut sub = subscribe_n(t, &topic, opts("g").max_in_flight(8), key_consumers(&t.capabilities())).await?;
    for i in 0..per_key {
        let batch = (0..keys)
            .map(|k| Message::new(format!("key{k}:{i}")).with_key(format!("key{k}")))
            .collect();
        t.publish_batch(&topic, batch).await?;
    }
    let mut acked: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut nacked = 0;
    while acked.values().map(Vec::len).sum::<usize>() < keys * per_key {
        let d = next(&mut sub).await?;
        let (key, seq) = parse_seq(&String::from_utf8_lossy(d.payload()))?;
        if seq == 3 && d.attempt() == 1 {
            nacked += 1;
            d.nack(None).await?;
            continue;
        }
        acked.entry(key).or_default().push(seq);
        d.ack().await?;
    }
    ensure!(nacked == keys, "expected {keys} nacks, made {nacked}");
    for (key, seqs) in &acked {
        ensure!(
            seqs.iter().copied().eq(0..per_key),
            "key {key}: acked in order {seqs:?} (message 3 was nacked once)"
        );
    }
    expect_quiet(&mut sub, "after all keyed messages").await
}

/// `publish_batch` keeps the order of messages with one key.
pub async fn batch_publish_order(t: &Arc<dyn Transport>) -> CheckResult {
    let t: &dyn Transport = t.as_ref();
    let (topic, mut sub) = fresh(t, "batch", opts("g").max_in_flight(50)).await?;
    let n = 100;
    let batch: Vec<Message> = (0..n)
        .map(|i| Message::new(format!("batch:{i}")).with_key("batch"))
        .collect();
    t.publish_batch(&topic, batch).await?;
    let got = receive_and_ack(&mut sub, n).await?;
    let seqs: Vec<usize> = got
        .iter()
        .map(|r| parse_seq(&r.text).map(|(_, s)| s))
        .collect::<Result<_, _>>()?;
    ensure!(seqs.iter().copied().eq(0..n), "batch arrived as {seqs:?}");
    // An empty batch is a no-op, not an error.
    t.publish_batch(&topic, Vec::new()).await?;
    expect_quiet(&mut sub, "after the batch").await
}

/// Where order holds across a nack, a *delayed* nack holds the key back:
/// the later messages of the key wait for the redelivery, which comes after
/// the delay and not far later.
pub async fn per_key_order_across_delayed_nack(t: &Arc<dyn Transport>) -> CheckResult {
    let t: &dyn Transport = t.as_ref();
    let (topic, mut sub) = fresh(t, "delayorder", opts("g").max_in_flight(8)).await?;
    let batch: Vec<Message> = (0..6)
        .map(|i| Message::new(format!("held:{i}")).with_key("held"))
        .collect();
    t.publish_batch(&topic, batch.clone()).await?;
    let delay = Duration::from_millis(1_000);
    let mut order = Vec::new();
    let mut nacked_at = None;
    while order.len() < batch.len() {
        let d = next(&mut sub).await?;
        let seq = batch
            .iter()
            .position(|m| m.id == d.id())
            .ok_or_else(|| CheckFailure(format!("unexpected message {}", d.id())))?;
        if seq == 2 && d.attempt() == 1 {
            nacked_at = Some(Instant::now());
            d.nack(Some(delay)).await?;
            continue;
        }
        if seq == 2 {
            let waited = nacked_at.map(|at| at.elapsed()).unwrap_or_default();
            within_bounds(
                "the delayed redelivery came",
                waited,
                delay,
                delay + Duration::from_millis(2_500),
            )?;
        }
        order.push(seq);
        d.ack().await?;
    }
    ensure!(
        order == [0, 1, 2, 3, 4, 5],
        "acked in order {order:?}: messages after the delayed nack of #2 overtook it"
    );
    expect_quiet(&mut sub, "after the key's messages").await
}

/// The checks of this file, each with what it needs of the backend.
pub(crate) fn checks() -> Vec<Check> {
    vec![
        check!(per_key_order, |c| (!c.ordered_per_key_single_consumer())
            .then_some("the backend declares no per-key ordering")),
        check!(per_key_order_across_nack, |c| (!(c.ordered_per_key_single_consumer()
            && c.ordering_across_nack))
            .then_some("the backend does not keep per-key order across a nack")),
        check!(per_key_order_across_delayed_nack, |c| (!(c
            .ordered_per_key_single_consumer()
            && c.ordering_across_nack
            && c.nack_delay))
            .then_some("the backend does not keep per-key order across a delayed nack")),
        check!(batch_publish_order, |c| (!c.ordered_per_key_single_consumer())
            .then_some("the backend declares no per-key ordering")),
    ]
}
