//! The checks. Each takes any [`Transport`], uses fresh topic names and
//! settles everything it receives.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::future::join_all;
use futures::StreamExt;
use transport_core::headers::DLQ_PREFIX;
use transport_core::{
    Bytes, Capabilities, ErrorKind, KeyOrdering, Message, Selection, StartFrom, SubscribeOptions, Subscription, Transport,
};

use crate::ensure;
use crate::support::*;

pub(crate) fn opts(group: &str) -> SubscribeOptions {
    SubscribeOptions::new(group).ack_timeout(Duration::from_secs(30))
}

pub(crate) fn short(group: &str) -> SubscribeOptions {
    SubscribeOptions::new(group).ack_timeout(timing().short_ack)
}

pub(crate) async fn fresh(
    t: &dyn Transport,
    what: &str,
    options: SubscribeOptions,
) -> Result<(String, Subscription), CheckFailure> {
    let topic = unique(what);
    let sub = t.subscribe(&topic, options).await?;
    Ok((topic, sub))
}

async fn round_trip(t: &dyn Transport, what: &str, message: Message) -> CheckResult {
    let (topic, mut sub) = fresh(t, what, opts("g")).await?;
    t.publish(&topic, message.clone()).await?;
    let d = next(&mut sub).await?;
    ensure!(d.id() == message.id, "id: sent {}, received {}", message.id, d.id());
    ensure!(
        d.key() == message.key.as_deref(),
        "key: sent {:?}, received {:?}",
        message.key,
        d.key()
    );
    ensure!(
        d.headers() == &message.headers,
        "headers: sent {:?}, received {:?}",
        message.headers,
        d.headers()
    );
    ensure!(
        d.payload() == &message.payload,
        "payload: sent {} bytes, received {} bytes (equal prefix: {})",
        message.payload.len(),
        d.payload().len(),
        d.payload()
            .iter()
            .zip(message.payload.iter())
            .take_while(|(a, b)| a == b)
            .count()
    );
    ensure!(d.topic() == topic, "topic: expected {topic}, got {}", d.topic());
    ensure!(d.group() == "g", "group: expected g, got {}", d.group());
    ensure!(
        sub.topic() == topic && sub.group() == "g",
        "the subscription names topic {} and group {}",
        sub.topic(),
        sub.group()
    );
    ensure!(d.attempt() == 1, "first delivery has attempt {}", d.attempt());
    d.ack().await?;
    expect_quiet(&mut sub, "after ack").await
}

/// An empty payload survives the round trip.
pub async fn round_trip_empty_payload(t: &Arc<dyn Transport>) -> CheckResult {
    let t: &dyn Transport = t.as_ref();
    round_trip(t, "empty", Message::new(Bytes::new())).await
}

/// Every byte value survives the round trip.
pub async fn round_trip_binary_payload(t: &Arc<dyn Transport>) -> CheckResult {
    let t: &dyn Transport = t.as_ref();
    let mut payload: Vec<u8> = (0..=255u8).collect();
    payload.extend((0..=255u8).rev());
    payload.extend_from_slice(&[0, 0, 0xff, 0xfe, b'\r', b'\n', 0]);
    round_trip(t, "binary", Message::new(payload)).await
}

/// A payload just under the backend's size limit survives the round trip.
pub async fn round_trip_near_max_size(t: &Arc<dyn Transport>) -> CheckResult {
    let t: &dyn Transport = t.as_ref();
    let max = t.capabilities().max_message_size.unwrap_or(1 << 20).min(4 << 20);
    // Leave room for the id, key and headers the limit also counts.
    let size = max.saturating_sub(1024);
    let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    round_trip(t, "large", Message::new(payload)).await
}

/// Unicode headers, key and a caller-chosen id survive the round trip.
pub async fn round_trip_headers_key_id(t: &Arc<dyn Transport>) -> CheckResult {
    let t: &dyn Transport = t.as_ref();
    let message = Message::new("body")
        .with_id(format!("order-{}", unique("id")))
        .with_key("clé-ключ-键-🔑")
        .with_header("greeting", "héllo wörld ✓ 你好 🚀")
        .with_header("x-trace-id", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        .with_header("empty", "")
        .with_header("multi-word", "a = b; c, d \"quoted\"");
    round_trip(t, "headers", message).await
}

/// Messages on one topic never reach subscribers of another.
pub async fn topic_isolation(t: &Arc<dyn Transport>) -> CheckResult {
    let t: &dyn Transport = t.as_ref();
    let (a, mut sub_a) = fresh(t, "iso-a", opts("g")).await?;
    let (b, mut sub_b) = fresh(t, "iso-b", opts("g")).await?;
    for i in 0..3 {
        t.publish(&a, Message::new(format!("a{i}"))).await?;
        t.publish(&b, Message::new(format!("b{i}"))).await?;
    }
    for (sub, prefix) in [(&mut sub_a, "a"), (&mut sub_b, "b")] {
        let got = receive_and_ack(sub, 3).await?;
        ensure!(
            got.iter().all(|r| r.text.starts_with(prefix)),
            "subscriber of topic {prefix} received {:?}",
            got.iter().map(|r| &r.text).collect::<Vec<_>>()
        );
        expect_quiet(sub, "after the topic's own messages").await?;
    }
    Ok(())
}

/// Two groups on one topic each receive every message.
pub async fn fan_out_two_groups(t: &Arc<dyn Transport>) -> CheckResult {
    let t: &dyn Transport = t.as_ref();
    let (topic, mut one) = fresh(t, "fanout", opts("one")).await?;
    let mut two = t.subscribe(&topic, opts("two")).await?;
    let sent: Vec<Message> = (0..20).map(|i| Message::new(format!("m{i}"))).collect();
    let ids: HashSet<String> = sent.iter().map(|m| m.id.clone()).collect();
    t.publish_batch(&topic, sent).await?;
    for (name, sub) in [("one", &mut one), ("two", &mut two)] {
        let got: HashSet<String> = receive_and_ack(sub, 20).await?.into_iter().map(|r| r.id).collect();
        ensure!(got == ids, "group {name} received a different set of messages");
        expect_quiet(sub, name).await?;
    }
    Ok(())
}

/// Two consumers of one group share the messages: each gets some, together
/// all, none twice.
pub async fn competing_consumers(t: &Arc<dyn Transport>) -> CheckResult {
    let t: &dyn Transport = t.as_ref();
    let (topic, first) = fresh(t, "compete", opts("workers").max_in_flight(5)).await?;
    let second = t.subscribe(&topic, opts("workers").max_in_flight(5)).await?;
    let total = 200;
    let sent: Vec<Message> = (0..total)
        .map(|i| Message::new(format!("job{i}")).with_key(format!("k{i}")))
        .collect();
    let ids: HashSet<String> = sent.iter().map(|m| m.id.clone()).collect();
    t.publish_batch(&topic, sent).await?;
    let mut merged = futures::stream::select(first.map(|d| (0usize, d)), second.map(|d| (1usize, d)));
    let mut per_consumer = [0usize; 2];
    let mut seen = HashSet::new();
    let duplicates_ok = t.capabilities().duplicates_possible;
    while seen.len() < total {
        let (who, d) = tokio::time::timeout(timing().receive, merged.next())
            .await
            .map_err(|_| CheckFailure(format!("only {} of {total} jobs arrived", seen.len())))?
            .ok_or_else(|| CheckFailure("a subscription ended".into()))?;
        let d = d?;
        let first = seen.insert(d.id().to_owned());
        ensure!(first || duplicates_ok, "job {} delivered twice", d.id());
        per_consumer[who] += 1;
        // Handing work out takes time on a real consumer; a short pause lets
        // the other consumer fetch too.
        if seen.len() % 10 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        d.ack().await?;
    }
    ensure!(seen == ids, "the jobs received are not the jobs sent");
    ensure!(
        per_consumer[0] > 0 && per_consumer[1] > 0,
        "one consumer did all the work: {per_consumer:?}"
    );
    Ok(())
}

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
) -> Result<transport_core::backend::Deliveries, CheckFailure> {
    let mut subs = Vec::new();
    for _ in 0..n {
        subs.push(t.subscribe(topic, options.clone()).await?);
    }
    Ok(futures::stream::select_all(subs).boxed())
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

/// `publish_batch` delivers every message (order not required).
pub async fn batch_publish_complete(t: &Arc<dyn Transport>) -> CheckResult {
    let t: &dyn Transport = t.as_ref();
    let (topic, mut sub) = fresh(t, "batchall", opts("g").max_in_flight(50)).await?;
    let batch: Vec<Message> = (0..100).map(|i| Message::new(format!("b{i}"))).collect();
    let ids: HashSet<String> = batch.iter().map(|m| m.id.clone()).collect();
    t.publish_batch(&topic, batch).await?;
    let got: HashSet<String> = receive_and_ack(&mut sub, 100)
        .await?
        .into_iter()
        .map(|r| r.id)
        .collect();
    ensure!(got == ids, "the batch received differs from the batch sent");
    expect_quiet(&mut sub, "after the batch").await
}

/// An acked message never comes back, even after the ack timeout.
pub async fn ack_is_final(t: &Arc<dyn Transport>) -> CheckResult {
    let t: &dyn Transport = t.as_ref();
    let (topic, mut sub) = fresh(t, "ackfinal", short("g")).await?;
    t.publish(&topic, Message::new("once")).await?;
    next(&mut sub).await?.ack().await?;
    expect_quiet_for(&mut sub, timing().short_ack * 2 + timing().quiet, "after ack").await
}

/// A nack redelivers the message with attempt + 1.
pub async fn nack_redelivers_with_next_attempt(t: &Arc<dyn Transport>) -> CheckResult {
    let t: &dyn Transport = t.as_ref();
    let (topic, mut sub) = fresh(t, "nack", opts("g")).await?;
    let m = Message::new("retry me");
    t.publish(&topic, m.clone()).await?;
    let first = next(&mut sub).await?;
    ensure!(first.attempt() == 1, "first attempt is {}", first.attempt());
    first.nack(None).await?;
    let second = next(&mut sub).await?;
    ensure!(second.id() == m.id, "redelivered {} instead of {}", second.id(), m.id);
    ensure!(second.attempt() == 2, "redelivery has attempt {}", second.attempt());
    ensure!(second.payload() == &m.payload, "redelivery changed the payload");
    second.nack(None).await?;
    let third = next(&mut sub).await?;
    ensure!(
        third.attempt() == 3,
        "second redelivery has attempt {}",
        third.attempt()
    );
    third.ack().await?;
    expect_quiet(&mut sub, "after ack").await
}

/// A nack with a delay does not redeliver before the delay.
pub async fn nack_delay_respected(t: &Arc<dyn Transport>) -> CheckResult {
    let t: &dyn Transport = t.as_ref();
    let (topic, mut sub) = fresh(t, "nackdelay", opts("g")).await?;
    t.publish(&topic, Message::new("later")).await?;
    let d = next(&mut sub).await?;
    let (id, first_attempt) = (d.id().to_owned(), d.attempt());
    let delay = Duration::from_millis(2_000);
    let start = Instant::now();
    d.nack(Some(delay)).await?;
    let again = next_within(&mut sub, delay + timing().receive).await?;
    let waited = start.elapsed();
    // Brokers round delays up (RabbitMQ to 100 ms buckets, SQS to whole
    // seconds) and deliver after a poll; 2.5 s on top is "not far longer".
    within_bounds("redelivered", waited, delay, delay + Duration::from_millis(2_500))?;
    ensure!(again.id() == id, "received {} instead of the nacked {id}", again.id());
    ensure!(
        again.attempt() == first_attempt + 1,
        "redelivery after {waited:?} has attempt {}, the nacked delivery had {first_attempt}",
        again.attempt()
    );
    again.ack().await?;
    Ok(())
}

/// A delivery nobody settles is redelivered after the ack timeout, to
/// another consumer of the group.
pub async fn ack_timeout_redelivers(t: &Arc<dyn Transport>) -> CheckResult {
    let t: &dyn Transport = t.as_ref();
    let (topic, mut first) = fresh(t, "acktimeout", short("g").max_in_flight(1)).await?;
    let m = Message::new("stuck");
    t.publish(&topic, m.clone()).await?;
    let held = next(&mut first).await?;
    let start = Instant::now();
    let mut second = t.subscribe(&topic, short("g")).await?;
    let again = next_within(&mut second, timing().short_ack + timing().receive).await?;
    let waited = start.elapsed();
    ensure!(
        again.id() == m.id,
        "received {} instead of the stuck message",
        again.id()
    );
    ensure!(again.attempt() == 2, "redelivery has attempt {}", again.attempt());
    // The deadline started when the broker handed the message out, a little
    // before `start`; brokers poll for expired deliveries, so allow up to
    // one more timeout plus 2 s on top. 60 % or 5x of the timeout both fail.
    let ack = timing().short_ack;
    within_bounds("redelivered", waited, ack * 4 / 5, ack * 2 + Duration::from_secs(2))?;
    again.ack().await?;
    // Settling the stale handle must not bring the message back.
    let _ = held.nack(None).await;
    expect_quiet(&mut second, "after the redelivery was acked").await
}

/// A delivery dropped without settling counts as not acked and comes back.
pub async fn dropped_delivery_redelivered(t: &Arc<dyn Transport>) -> CheckResult {
    let t: &dyn Transport = t.as_ref();
    let (topic, mut sub) = fresh(t, "dropped", short("g")).await?;
    let m = Message::new("dropped");
    t.publish(&topic, m.clone()).await?;
    drop(next(&mut sub).await?);
    let again = next_within(&mut sub, timing().short_ack + timing().receive).await?;
    ensure!(
        again.id() == m.id,
        "received {} instead of the dropped message",
        again.id()
    );
    ensure!(again.attempt() == 2, "redelivery has attempt {}", again.attempt());
    again.ack().await?;
    Ok(())
}

/// A consumer that dies mid-stream (deliveries neither settled nor dropped
/// cleanly) loses nothing: another consumer gets everything not acked.
pub async fn crashed_consumer_loses_nothing(t: &Arc<dyn Transport>) -> CheckResult {
    let t: &dyn Transport = t.as_ref();
    crash_recovery(t, false).await
}

/// The body of [`crashed_consumer_loses_nothing`]. With
/// `acked_may_return`, records the crashed consumer acked may come again
/// (at-least-once without exact handover, e.g. a Kafka-protocol broker that
/// drops commit metadata); nothing unacked may be missing either way.
pub async fn crash_recovery(t: &dyn Transport, acked_may_return: bool) -> CheckResult {
    let topic = unique("crash");
    let mut doomed = t.subscribe(&topic, short("g").max_in_flight(10)).await?;
    let sent: Vec<Message> = (0..20).map(|i| Message::new(format!("c{i}"))).collect();
    t.publish_batch(&topic, sent.clone()).await?;
    let mut acked = HashSet::new();
    for i in 0..6 {
        let d = next(&mut doomed).await?;
        match i % 3 {
            0 => {
                acked.insert(d.id().to_owned());
                d.ack().await?;
            }
            // A crash runs no destructor: the broker alone must bring it back.
            1 => std::mem::forget(d),
            _ => drop(d),
        }
    }
    drop(doomed);
    let mut survivor = t.subscribe(&topic, short("g").max_in_flight(10)).await?;
    let expected: HashSet<String> = sent
        .iter()
        .map(|m| m.id.clone())
        .filter(|id| !acked.contains(id))
        .collect();
    let mut got = HashSet::new();
    while got.len() < expected.len() {
        let d = next_within(&mut survivor, timing().short_ack + timing().receive)
            .await
            .map_err(|e| CheckFailure(format!("{e} ({} of {} recovered)", got.len(), expected.len())))?;
        let returned = acked.contains(d.id());
        ensure!(!returned || acked_may_return, "acked message {} came back", d.id());
        if !returned {
            got.insert(d.id().to_owned());
        }
        d.ack().await?;
    }
    ensure!(got == expected, "recovered a different set of messages");
    expect_quiet(&mut survivor, "after recovery").await
}

pub(crate) async fn dlq_depth(t: &dyn Transport, topic: &str, options: &SubscribeOptions, want: u64) -> CheckResult {
    let dlq = t.dead_letters(topic, options).await?;
    let deadline = Instant::now() + timing().receive;
    loop {
        let depth = dlq.depth().await?;
        if depth == want {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "dead-letter depth is {depth}, expected {want} within {:?}",
            timing().receive
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// After `max_attempts` failed deliveries the message goes to the
/// dead-letter queue with the documented headers, and stops coming on the topic.
pub async fn max_attempts_dead_letters(t: &Arc<dyn Transport>) -> CheckResult {
    let t: &dyn Transport = t.as_ref();
    let options = opts("g").max_attempts(3);
    let (topic, mut sub) = fresh(t, "maxattempts", options.clone()).await?;
    let m = Message::new("poison").with_key("k1").with_header("h", "v ✓");
    let before = SystemTime::now() - Duration::from_secs(1);
    t.publish(&topic, m.clone()).await?;
    let mut first_nack = before;
    for attempt in 1..=3 {
        let d = next(&mut sub).await?;
        ensure!(
            d.attempt() == attempt,
            "expected attempt {attempt}, got {}",
            d.attempt()
        );
        ensure!(
            d.is_last_attempt() == (attempt == 3),
            "is_last_attempt wrong on attempt {attempt}"
        );
        if attempt == 1 {
            first_nack = SystemTime::now();
        } else {
            // The handler works a while on later attempts, so the first
            // failure is well apart from the last one.
            tokio::time::sleep(Duration::from_millis(750)).await;
        }
        d.nack(None).await?;
    }
    expect_quiet(&mut sub, "after the last attempt").await?;
    dlq_depth(t, &topic, &options, 1).await?;
    let dlq = t.dead_letters(&topic, &options).await?;
    ensure!(
        dlq.topic() == options.dlq_topic(&topic),
        "dead-letter topic is {}",
        dlq.topic()
    );
    let peeked = dlq.peek(10).await?;
    ensure!(peeked.len() == 1, "peek returned {} messages", peeked.len());
    let dead = &peeked[0];
    ensure!(dead.message.id == m.id, "dead letter has id {}", dead.message.id);
    ensure!(dead.message.payload == m.payload, "dead letter payload changed");
    ensure!(dead.message.key == m.key, "dead letter key is {:?}", dead.message.key);
    ensure!(dead.message.headers.get("h") == Some("v ✓"), "application header lost");
    ensure!(
        dead.original_topic.as_deref() == Some(topic.as_str()),
        "original topic is {:?}",
        dead.original_topic
    );
    ensure!(dead.group.as_deref() == Some("g"), "group is {:?}", dead.group);
    ensure!(dead.attempts == Some(3), "attempts is {:?}", dead.attempts);
    ensure!(dead.reason.as_deref().is_some_and(|r| !r.is_empty()), "no reason");
    let last = dead
        .last_failure
        .ok_or_else(|| CheckFailure("no last-failure time".into()))?;
    let tolerance = Duration::from_millis(500);
    ensure!(
        last >= first_nack + Duration::from_millis(1_000) && last <= SystemTime::now() + tolerance,
        "last failure {} is not the last attempt's failure",
        transport_core::format_time(last)
    );
    // Declared: it must be there. Given: it must be right (a backend that
    // cannot know must leave it out, not invent "now").
    match (t.capabilities().first_failure_time, dead.first_failure) {
        (true, None) => return Err(CheckFailure("no first-failure time".into())),
        (_, Some(first)) => ensure!(
            first + tolerance >= first_nack && first <= first_nack + tolerance,
            "first failure is {}, the first attempt failed at {} (last failure {})",
            transport_core::format_time(first),
            transport_core::format_time(first_nack),
            transport_core::format_time(last)
        ),
        (false, None) => {}
    }
    dlq.purge().await?;
    Ok(())
}

/// An explicit dead-letter moves the message at once, with its reason.
pub async fn explicit_dead_letter(t: &Arc<dyn Transport>) -> CheckResult {
    let t: &dyn Transport = t.as_ref();
    let options = opts("g");
    let (topic, mut sub) = fresh(t, "explicitdlq", options.clone()).await?;
    let m = Message::new("{not json");
    t.publish(&topic, m.clone()).await?;
    next(&mut sub).await?.dead_letter("payload is not valid JSON").await?;
    expect_quiet(&mut sub, "after dead-lettering").await?;
    dlq_depth(t, &topic, &options, 1).await?;
    let dlq = t.dead_letters(&topic, &options).await?;
    let dead = dlq
        .peek(1)
        .await?
        .pop()
        .ok_or_else(|| CheckFailure("peek returned nothing".into()))?;
    ensure!(dead.message.id == m.id, "wrong message dead-lettered");
    ensure!(
        dead.reason.as_deref() == Some("payload is not valid JSON"),
        "reason is {:?}",
        dead.reason
    );
    ensure!(dead.attempts == Some(1), "attempts is {:?}", dead.attempts);
    // It failed once, now: first and last failure are that moment.
    let (first, last) = (
        dead.first_failure
            .ok_or_else(|| CheckFailure("no first-failure time on a first-attempt dead letter".into()))?,
        dead.last_failure
            .ok_or_else(|| CheckFailure("no last-failure time".into()))?,
    );
    ensure!(
        first == last && last <= SystemTime::now() + Duration::from_millis(500),
        "first failure {} and last failure {} of a single failure",
        transport_core::format_time(first),
        transport_core::format_time(last)
    );
    dlq.purge().await?;
    Ok(())
}

/// Depth, peek (oldest first, non-destructive), redrive (to the failing group
/// only, headers kept, attempts reset) and purge.
pub async fn dead_letter_operations(t: &Arc<dyn Transport>) -> CheckResult {
    let t: &dyn Transport = t.as_ref();
    let options = opts("g");
    let (topic, mut sub) = fresh(t, "dlqops", options.clone()).await?;
    // Another group shows that a redrive reaches only the failing group
    // (point-to-point topics have no other group).
    let mut other = match t.capabilities().single_group {
        false => Some(t.subscribe(&topic, opts("other")).await?),
        true => None,
    };
    let dlq = t.dead_letters(&topic, &options).await?;
    ensure!(dlq.depth().await? == 0, "a new dead-letter queue is not empty");
    let sent: Vec<Message> = (0..4)
        .map(|i| {
            Message::new(format!("d{i}"))
                .with_key(format!("dkey{i}"))
                .with_header("n", i.to_string())
        })
        .collect();
    for m in &sent {
        t.publish(&topic, m.clone()).await?;
        let d = next(&mut sub).await?;
        ensure!(d.id() == m.id, "expected {}, got {}", m.id, d.id());
        d.dead_letter(format!("failed {}", m.id)).await?;
    }
    if let Some(other) = other.as_mut() {
        receive_and_ack(other, 4).await?;
    }
    dlq_depth(t, &topic, &options, 4).await?;

    let peeked = dlq.peek(2).await?;
    let ids: Vec<&str> = peeked.iter().map(|d| d.message.id.as_str()).collect();
    ensure!(
        ids == [sent[0].id.as_str(), sent[1].id.as_str()],
        "peek(2) returned {ids:?}"
    );
    ensure!(dlq.depth().await? == 4, "peek removed messages");

    ensure!(
        dlq.redrive(&Selection::all().oldest(1)).await? == 1,
        "redrive(1) did not move one message"
    );
    let back = next(&mut sub).await?;
    ensure!(
        back.id() == sent[0].id,
        "redrive returned {} instead of the oldest",
        back.id()
    );
    ensure!(back.attempt() == 1, "redriven message has attempt {}", back.attempt());
    ensure!(back.headers().get("n") == Some("0"), "redrive lost a header");
    ensure!(
        back.headers().get(transport_core::headers::REDRIVE_COUNT) == Some("1"),
        "a first redrive has {} = {:?}",
        transport_core::headers::REDRIVE_COUNT,
        back.headers().get(transport_core::headers::REDRIVE_COUNT)
    );
    ensure!(
        back.payload() == &sent[0].payload && back.key() == sent[0].key.as_deref(),
        "redrive changed the message: payload {:?}, key {:?}",
        String::from_utf8_lossy(back.payload()),
        back.key()
    );
    ensure!(
        back.headers().iter().all(|(k, _)| !k.starts_with(DLQ_PREFIX)),
        "redriven message still has dead-letter headers: {:?}",
        back.headers()
    );
    // It fails again: a fresh dead letter, nothing of the redrive left on it.
    back.dead_letter("failed again").await?;
    if let Some(other) = other.as_mut() {
        expect_quiet(other, "group 'other' after a redrive for group 'g'").await?;
    }
    dlq_depth(t, &topic, &options, 4).await?;
    let again = dlq
        .peek(4)
        .await?
        .into_iter()
        .find(|d| d.message.id == sent[0].id)
        .ok_or_else(|| CheckFailure("the message dead-lettered again is not in the queue".into()))?;
    ensure!(
        again.reason.as_deref() == Some("failed again") && again.attempts == Some(1),
        "dead-lettered again with reason {:?} and attempts {:?}",
        again.reason,
        again.attempts
    );
    ensure!(
        !again.message.headers.contains(transport_core::headers::REDRIVE_GROUP),
        "a dead letter still names the group of an earlier redrive"
    );

    ensure!(
        dlq.redrive_all().await? == 4,
        "redrive(all) did not move four messages"
    );
    let rest: HashSet<String> = receive_and_ack(&mut sub, 4).await?.into_iter().map(|r| r.id).collect();
    let expected: HashSet<String> = sent.iter().map(|m| m.id.clone()).collect();
    ensure!(rest == expected, "redrive(all) returned other messages");
    dlq_depth(t, &topic, &options, 0).await?;
    ensure!(dlq.purge().await? == 0, "purging an empty queue removed something");

    for i in 0..2 {
        t.publish(&topic, Message::new(format!("p{i}"))).await?;
        next(&mut sub).await?.dead_letter("to purge").await?;
    }
    if let Some(other) = other.as_mut() {
        receive_and_ack(other, 2).await?;
    }
    dlq_depth(t, &topic, &options, 2).await?;
    ensure!(dlq.purge().await? == 2, "purge did not report two messages");
    ensure!(dlq.depth().await? == 0, "purge left messages");
    expect_quiet(&mut sub, "after purge").await?;
    match other.as_mut() {
        Some(other) => expect_quiet(other, "after purge").await,
        None => Ok(()),
    }
}

/// A group receives what was published while none of its consumers ran.
pub async fn offline_group_catches_up(t: &Arc<dyn Transport>) -> CheckResult {
    let t: &dyn Transport = t.as_ref();
    let (topic, mut sub) = fresh(t, "offline", opts("g")).await?;
    t.publish(&topic, Message::new("online")).await?;
    receive_and_ack(&mut sub, 1).await?;
    drop(sub);
    let sent: Vec<Message> = (0..5).map(|i| Message::new(format!("offline{i}"))).collect();
    for m in &sent {
        t.publish(&topic, m.clone()).await?;
    }
    let mut sub = t.subscribe(&topic, opts("g")).await?;
    let got = receive_and_ack(&mut sub, 5).await?;
    let ids: HashSet<&str> = got.iter().map(|r| r.id.as_str()).collect();
    ensure!(
        ids == sent.iter().map(|m| m.id.as_str()).collect(),
        "missed messages published while offline: received {:?} (attempts {:?})",
        got.iter().map(|r| r.text.as_str()).collect::<Vec<_>>(),
        got.iter().map(|r| r.attempt).collect::<Vec<_>>()
    );
    expect_quiet(&mut sub, "after catching up").await
}

/// A new group starting at `Earliest` receives what was published before it
/// existed; one starting at `Latest` does not.
pub async fn replay_for_new_group(t: &Arc<dyn Transport>) -> CheckResult {
    let t: &dyn Transport = t.as_ref();
    let topic = unique("replay");
    let sent: Vec<Message> = (0..5)
        .map(|i| Message::new(format!("old:{i}")).with_key("replay"))
        .collect();
    t.publish_batch(&topic, sent.clone()).await?;
    let mut latest = t.subscribe(&topic, opts("late").start(StartFrom::Latest)).await?;
    let mut earliest = t.subscribe(&topic, opts("early").start(StartFrom::Earliest)).await?;
    let got = receive_and_ack(&mut earliest, 5).await?;
    let ids: Vec<&str> = got.iter().map(|r| r.id.as_str()).collect();
    let want: Vec<&str> = sent.iter().map(|m| m.id.as_str()).collect();
    ensure!(ids == want, "replayed {ids:?}, published {want:?}");
    expect_quiet(&mut latest, "group starting at latest").await?;
    let fresh_message = Message::new("new");
    t.publish(&topic, fresh_message.clone()).await?;
    let d = next(&mut latest).await?;
    ensure!(d.id() == fresh_message.id, "latest group received {}", d.id());
    d.ack().await?;
    Ok(())
}

/// An oversize message is `MessageTooLarge`, and the connection still works.
pub async fn oversize_rejected(t: &Arc<dyn Transport>) -> CheckResult {
    let t: &dyn Transport = t.as_ref();
    let max = t
        .capabilities()
        .max_message_size
        .ok_or_else(|| CheckFailure("no max_message_size declared".into()))?;
    let (topic, mut sub) = fresh(t, "oversize", opts("g")).await?;
    let err = t
        .publish(&topic, Message::new(vec![b'x'; max + 1]))
        .await
        .err()
        .ok_or_else(|| CheckFailure(format!("a {} byte message was accepted", max + 1)))?;
    ensure!(
        err.kind() == ErrorKind::MessageTooLarge,
        "got {err} instead of MessageTooLarge"
    );
    ensure!(!err.is_retryable(), "MessageTooLarge must not be retryable");
    let batch = vec![Message::new("small"), Message::new(vec![b'x'; max + 1])];
    let err = t
        .publish_batch(&topic, batch)
        .await
        .err()
        .ok_or_else(|| CheckFailure("a batch with an oversize message was accepted".into()))?;
    ensure!(
        err.kind() == ErrorKind::MessageTooLarge,
        "batch: got {err} instead of MessageTooLarge"
    );
    let ok = Message::new("fits");
    t.publish(&topic, ok.clone()).await?;
    // The batch was checked before anything was sent, so only "fits" arrives.
    let d = next(&mut sub).await?;
    ensure!(
        d.id() == ok.id,
        "received {:?} instead of the message after the rejected ones",
        d.payload()
    );
    d.ack().await?;
    expect_quiet(&mut sub, "after the rejected messages").await
}

/// 8 concurrent publishers x 500 messages (`CONFORMANCE_MESSAGES_PER_PUBLISHER`
/// lowers the 500 for slow emulators): every one arrives, none twice.
pub async fn concurrent_publishers(t: &Arc<dyn Transport>) -> CheckResult {
    let t: &dyn Transport = t.as_ref();
    let (topic, mut sub) = fresh(t, "concurrent", opts("g").max_in_flight(200)).await?;
    let publishers = 8;
    let each: usize = std::env::var("CONFORMANCE_MESSAGES_PER_PUBLISHER")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let mut ids = HashSet::new();
    let mut work = Vec::new();
    for p in 0..publishers {
        let messages: Vec<Message> = (0..each).map(|i| Message::new(format!("p{p}:{i}"))).collect();
        ids.extend(messages.iter().map(|m| m.id.clone()));
        let topic = topic.clone();
        work.push(async move {
            for m in messages {
                t.publish(&topic, m).await?;
            }
            Ok::<_, transport_core::Error>(())
        });
    }
    for r in join_all(work).await {
        r?;
    }
    let mut got = HashSet::new();
    let duplicates_ok = t.capabilities().duplicates_possible;
    while got.len() < ids.len() {
        let d = next(&mut sub)
            .await
            .map_err(|e| CheckFailure(format!("{e} ({} of {} received)", got.len(), ids.len())))?;
        let first = got.insert(d.id().to_owned());
        ensure!(first || duplicates_ok, "{} delivered twice", d.id());
        d.ack().await?;
    }
    ensure!(got == ids, "received messages that were not sent");
    expect_quiet(&mut sub, "after all messages").await
}

/// Closing a subscription and opening it again continues where the group
/// left off: acked messages stay gone, the rest arrive.
pub async fn close_and_reopen_continues(t: &Arc<dyn Transport>) -> CheckResult {
    let t: &dyn Transport = t.as_ref();
    let (topic, mut sub) = fresh(t, "reopen", opts("g").max_in_flight(5)).await?;
    let sent: Vec<Message> = (0..10).map(|i| Message::new(format!("r{i}"))).collect();
    t.publish_batch(&topic, sent.clone()).await?;
    let first: HashSet<String> = receive_and_ack(&mut sub, 5).await?.into_iter().map(|r| r.id).collect();
    sub.close();
    let mut sub = t.subscribe(&topic, opts("g")).await?;
    let rest: HashSet<String> = receive_and_ack(&mut sub, 5).await?.into_iter().map(|r| r.id).collect();
    ensure!(first.is_disjoint(&rest), "acked messages came back after reopening");
    let all: HashSet<String> = sent.iter().map(|m| m.id.clone()).collect();
    ensure!(
        first.union(&rest).cloned().collect::<HashSet<_>>() == all,
        "messages lost across reopen"
    );
    expect_quiet(&mut sub, "after the rest").await
}

/// A typed event survives the trip with every CloudEvents attribute, values
/// that the bindings must encode (space, quote, `%`, non-ASCII) included,
/// and a consumer asking for another major version gets a typed error.
pub async fn events_round_trip(t: &Arc<dyn Transport>) -> CheckResult {
    use transport_core::{Event, EventError};
    let t: &dyn Transport = t.as_ref();
    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Placed {
        order: u64,
        total_cents: i64,
    }
    let (topic, mut sub) = fresh(t, "events", opts("g")).await?;
    let cause = Event::new("order.requested", "web", ()).with_tenant("acme");
    let mut event = Event::new(
        "order.placed",
        "/shop/checkout €1 \"eu\" 100%",
        Placed {
            order: 42,
            total_cents: 1999,
        },
    )
    .with_version("1.3")
    .caused_by(&cause)
    .with_key("customer-7")
    .with_subject("orders/42 ünïcode")
    .with_extension("region", "eu west %41");
    event.data_schema = Some("https://example.com/schemas/placed.json".into());
    event.data_content_type = Some("application/json; charset=utf-8".into());
    t.publish(&topic, event.to_message()?).await?;
    let d = next(&mut sub).await?;
    let back: Event<Placed> =
        Event::decode_version(d.message(), 1).map_err(|e| CheckFailure(format!("decode failed: {e}")))?;
    ensure!(
        back.data == event.data && back.id == event.id,
        "event changed: {back:?}"
    );
    let same_text = back.event_type == event.event_type
        && back.source == event.source
        && back.version == event.version
        && back.subject == event.subject
        && back.data_schema == event.data_schema
        && back.data_content_type == event.data_content_type
        && back.correlation_id == event.correlation_id
        && back.causation_id == event.causation_id
        && back.tenant.as_deref() == Some("acme")
        && back.key.as_deref() == Some("customer-7")
        && back.extensions == event.extensions;
    ensure!(same_text, "attributes changed: sent {event:?}, got {back:?}");
    let skew = match (back.time, event.time) {
        (Some(a), Some(b)) => a.duration_since(b).unwrap_or_else(|e| e.duration()),
        _ => return Err(CheckFailure(format!("time lost: {back:?}"))),
    };
    ensure!(skew < Duration::from_millis(2), "time moved by {skew:?}");
    let wrong_major = Event::<Placed>::decode_version(d.message(), 2);
    ensure!(
        matches!(wrong_major, Err(EventError::UnsupportedVersion { .. })),
        "major 2 consumer accepted a 1.3 event"
    );
    d.ack().await?;
    Ok(())
}
