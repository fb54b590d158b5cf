//! What goes in comes out: payloads of every shape and size up to the
//! declared limit, headers, key and id, typed events, topics apart, every
//! group receiving its own copy, competing consumers sharing one, complete
//! batches and concurrent publishers.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use futures::StreamExt;
use transport_core::{Bytes, ErrorKind, Message, Operation, Transport};

use crate::support::*;
use crate::{ensure, Check};

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

/// A message of exactly the size limit (payload, id, key and headers
/// together) is accepted and arrives whole; one byte more, made of headers
/// while the payload alone would fit, is `MessageTooLarge`.
pub async fn size_limit_is_exact(t: &Arc<dyn Transport>) -> CheckResult {
    let t: &dyn Transport = t.as_ref();
    let max = t
        .capabilities()
        .max_message_size
        .ok_or_else(|| CheckFailure("no max_message_size declared".into()))?;
    let (topic, mut sub) = fresh(t, "exactsize", opts("g")).await?;
    let shaped = |payload_len: usize| {
        Message::new((0..payload_len).map(|i| (i % 253) as u8).collect::<Vec<u8>>())
            .with_key("size-key")
            .with_header("size-header", "x".repeat(64))
    };
    // The documented size, computed here rather than by `encoded_len`, so a
    // wrong formula there cannot agree with itself.
    let size = |m: &Message| {
        m.payload.len()
            + m.id.len()
            + m.key.as_ref().map_or(0, String::len)
            + m.headers.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
    };
    let overhead = size(&shaped(0));
    ensure!(overhead < max, "the limit {max} leaves no room for a payload");
    let exact = shaped(max - overhead);
    ensure!(size(&exact) == max, "test message is not exactly {max} bytes");
    t.publish(&topic, exact.clone())
        .await
        .map_err(|e| CheckFailure(format!("a message of exactly the limit ({max} bytes) was refused: {e}")))?;
    let d = next(&mut sub).await?;
    ensure!(
        d.id() == exact.id,
        "received {} instead of the exact-size message",
        d.id()
    );
    ensure!(
        d.payload() == &exact.payload && d.headers() == &exact.headers && d.key() == exact.key.as_deref(),
        "the exact-size message changed on the way ({} payload bytes received of {})",
        d.payload().len(),
        exact.payload.len()
    );
    d.ack().await?;

    // One byte over, but only because of the headers: a limit that counts
    // the payload alone would let it through.
    let over = shaped(max - overhead).with_header("z", "");
    ensure!(size(&over) == max + 1, "test message is not one byte over");
    ensure!(over.payload.len() < max, "the payload alone must fit");
    let err = t
        .publish(&topic, over)
        .await
        .err()
        .ok_or_else(|| CheckFailure(format!("a message of {} bytes (limit {max}) was accepted", max + 1)))?;
    ensure!(
        err.kind() == ErrorKind::MessageTooLarge && !err.is_retryable(),
        "one byte over the limit gave {err} (retryable: {}) instead of a final MessageTooLarge",
        err.is_retryable()
    );
    // A clear error names where it came from.
    ensure!(
        err.backend() == t.backend() && err.operation() == Some(Operation::Publish),
        "the error names backend {:?} and operation {:?}",
        err.backend(),
        err.operation()
    );
    expect_quiet(&mut sub, "after the rejected message").await
}

/// No declared size limit: then large messages must work; 8 MiB (payload)
/// round-trips intact.
pub async fn large_messages_without_limit(t: &Arc<dyn Transport>) -> CheckResult {
    let t: &dyn Transport = t.as_ref();
    let (topic, mut sub) = fresh(t, "nolimit", opts("g")).await?;
    let m = Message::new((0..8usize << 20).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    t.publish(&topic, m.clone()).await.map_err(|e| {
        CheckFailure(format!(
            "an 8 MiB message was refused by a backend that declares no limit: {e}"
        ))
    })?;
    let d = next(&mut sub).await?;
    ensure!(
        d.id() == m.id && d.payload() == &m.payload,
        "the 8 MiB message changed on the way"
    );
    d.ack().await?;
    Ok(())
}

/// The checks of this file, each with what it needs of the backend.
pub(crate) fn checks() -> Vec<Check> {
    vec![
        check!(round_trip_empty_payload),
        check!(round_trip_binary_payload),
        check!(round_trip_near_max_size),
        check!(round_trip_headers_key_id),
        check!(size_limit_is_exact, |c| c.max_message_size.is_none().then_some(
            "no size limit declared (large_messages_without_limit probes it)"
        )),
        check!(large_messages_without_limit, |c| c
            .max_message_size
            .is_some()
            .then_some(
                "the backend declares a size limit (size_limit_is_exact proves it)"
            )),
        check!(events_round_trip),
        check!(topic_isolation),
        check!(fan_out_two_groups, |c| c.single_group.then_some(
            "point-to-point: a topic has one group (second_group_refused proves it)"
        )),
        check!(competing_consumers),
        check!(batch_publish_complete),
        check!(concurrent_publishers),
    ]
}
