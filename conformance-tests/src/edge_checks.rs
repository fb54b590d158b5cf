//! Checks at the edges of each promise, where a plausible bug would leave
//! the main checks green: exact size limits, the full name rules, timing
//! bounds on both sides, stale handles, leases, exhaustion without settling,
//! delayed nacks under per-key order, and dead-letter queues past a handful.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use transport_core::{ErrorKind, Message, Operation, Selection, Transport, MAX_NAME_LEN};

use crate::checks::{dlq_depth, fresh, opts, short};
use crate::ensure;
use crate::support::*;

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

/// Every portable name rule is enforced on publish, subscribe and group
/// names with a final `InvalidArgument`, as are bad header names and an
/// empty id; the longest portable name works.
pub async fn invalid_names_rejected(t: &Arc<dyn Transport>) -> CheckResult {
    let t: &dyn Transport = t.as_ref();
    let too_long = "n".repeat(MAX_NAME_LEN + 1);
    let bad = [
        "",
        "has space",
        "wild*card",
        "gt>",
        "ümlaut",
        "slash/name",
        "tab\tname",
        ".lead",
        "-lead",
        "trail.",
        "a..b",
        too_long.as_str(),
    ];
    for name in bad {
        let e = t
            .publish(name, Message::new("x"))
            .await
            .err()
            .ok_or_else(|| CheckFailure(format!("publish to {name:?} succeeded")))?;
        ensure!(e.kind() == ErrorKind::InvalidArgument, "publish to {name:?}: {e}");
        ensure!(!e.is_retryable(), "a bad name is a retryable error: {e}");
        let e = t
            .subscribe(name, opts("g"))
            .await
            .err()
            .ok_or_else(|| CheckFailure(format!("subscribe to {name:?} succeeded")))?;
        ensure!(e.kind() == ErrorKind::InvalidArgument, "subscribe to {name:?}: {e}");
        let e = t
            .subscribe(&unique("badgroup"), opts(name))
            .await
            .err()
            .ok_or_else(|| CheckFailure(format!("group {name:?} was accepted")))?;
        ensure!(e.kind() == ErrorKind::InvalidArgument, "group {name:?}: {e}");
    }
    // Header names several brokers reject or mangle, and an empty id.
    let (topic, _sub) = fresh(t, "badheader", opts("g")).await?;
    for bad in ["", "has space", "colon:name", "ctl\u{1}name", "new\nline"] {
        let e = t
            .publish(&topic, Message::new("x").with_header(bad, "v"))
            .await
            .err()
            .ok_or_else(|| CheckFailure(format!("a header named {bad:?} was accepted")))?;
        ensure!(e.kind() == ErrorKind::InvalidArgument, "header {bad:?}: {e}");
    }
    let e = t
        .publish(&topic, Message::new("x").with_id(""))
        .await
        .err()
        .ok_or_else(|| CheckFailure("a message with an empty id was accepted".into()))?;
    ensure!(e.kind() == ErrorKind::InvalidArgument, "empty id: {e}");
    // The longest portable name is no InvalidArgument on publish (a broker
    // may still refuse a topic nobody subscribed to, as RabbitMQ does).
    let base = unique("long");
    let longest = format!("{base}{}", "l".repeat(MAX_NAME_LEN - base.len()));
    if let Err(e) = t.publish(&longest, Message::new("fits")).await {
        ensure!(
            e.kind() != ErrorKind::InvalidArgument,
            "a {MAX_NAME_LEN}-character topic was refused: {e}"
        );
    }
    // A subscribed topic whose dead-letter topic (`<topic>.<group>.dlq`)
    // is just within the limit works end to end.
    let options = opts("g");
    let room = options.dlq_topic("").len();
    let long = format!("{base}{}", "l".repeat(MAX_NAME_LEN - room - base.len()));
    let mut sub = t
        .subscribe(&long, options)
        .await
        .map_err(|e| CheckFailure(format!("subscribing to a {}-character topic failed: {e}", long.len())))?;
    let m = Message::new("fits");
    t.publish(&long, m.clone()).await?;
    receive_exactly(&mut sub, &m, "the long topic").await
}

/// `extend` holds a delivery past several ack timeouts: nothing comes back
/// while it is extended, and after the ack nothing comes back at all.
/// Extending by zero or by more than the ack timeout is `InvalidArgument`.
pub async fn extend_holds_delivery(t: &Arc<dyn Transport>) -> CheckResult {
    let t: &dyn Transport = t.as_ref();
    let ack = timing().short_ack;
    let (topic, mut sub) = fresh(t, "extend", short("g").max_in_flight(4)).await?;
    let m = Message::new("long job");
    t.publish(&topic, m.clone()).await?;
    let d = next(&mut sub).await?;
    for bad in [Duration::ZERO, ack * 2] {
        let e = d
            .extend(bad)
            .await
            .err()
            .ok_or_else(|| CheckFailure(format!("extend({bad:?}) with a {ack:?} ack timeout succeeded")))?;
        ensure!(e.kind() == ErrorKind::InvalidArgument, "extend({bad:?}): {e}");
    }
    // Renew every half timeout for three timeouts; a redelivery would show
    // up on this subscription (it has room for more in flight).
    let until = Instant::now() + ack * 3;
    while Instant::now() < until {
        d.extend(ack).await?;
        expect_quiet_for(&mut sub, ack / 2, "while the delivery was extended").await?;
    }
    d.ack().await?;
    expect_quiet_for(
        &mut sub,
        ack * 2 + timing().quiet,
        "after the extended delivery was acked",
    )
    .await
}

/// A handle from before a redelivery cannot settle the redelivery: after the
/// ack timeout hands the message out again, extending the stale handle is
/// `DeliveryExpired` and acking it leaves the live one in charge (its nack
/// still brings the message back).
pub async fn stale_handle_cannot_settle(t: &Arc<dyn Transport>) -> CheckResult {
    let t: &dyn Transport = t.as_ref();
    let (topic, mut sub) = fresh(t, "stale", short("g").max_in_flight(4)).await?;
    let m = Message::new("contested");
    t.publish(&topic, m.clone()).await?;
    let stale = next(&mut sub).await?;
    let live = next_within(&mut sub, timing().short_ack + timing().receive).await?;
    ensure!(
        live.id() == m.id && live.attempt() == 2,
        "expected the redelivery, got {} attempt {}",
        live.id(),
        live.attempt()
    );
    // The stale lease is lost: extending it is `DeliveryExpired` (it must
    // not extend the live one's).
    let e = stale
        .extend(timing().short_ack)
        .await
        .err()
        .ok_or_else(|| CheckFailure("extending a stale handle succeeded".into()))?;
    ensure!(e.kind() == ErrorKind::DeliveryExpired, "extending a stale handle: {e}");
    // Either an error or a no-op; what it must not do is settle `live`.
    let _ = stale.ack().await;
    live.nack(None).await?;
    let again = next(&mut sub)
        .await
        .map_err(|e| CheckFailure(format!("acking a stale handle settled the live redelivery: {e}")))?;
    // The point is that it comes back; how redeliveries are counted is
    // nack_redelivers_with_next_attempt's (NATS once counted 4 here).
    ensure!(
        again.id() == m.id && again.attempt() >= 3,
        "expected attempt 3 (or later) of {}, got {} attempt {}",
        m.id,
        again.id(),
        again.attempt()
    );
    again.ack().await?;
    expect_quiet(&mut sub, "after the live delivery was acked").await
}

/// Deliveries that reach `max_attempts` without ever being settled (the
/// consumer hangs each time) end in the dead-letter queue; no attempt past
/// the maximum reaches the consumer.
pub async fn unsettled_exhaustion_dead_letters(t: &Arc<dyn Transport>) -> CheckResult {
    let t: &dyn Transport = t.as_ref();
    let ack = timing().short_ack;
    let options = short("g").max_attempts(2).max_in_flight(4);
    let (topic, mut sub) = fresh(t, "hang", options.clone()).await?;
    let m = Message::new("hangs the handler");
    t.publish(&topic, m.clone()).await?;
    for attempt in 1..=2 {
        let d = next_within(&mut sub, ack + timing().receive).await?;
        ensure!(
            d.id() == m.id && d.attempt() == attempt,
            "expected attempt {attempt} of {}, got {} attempt {}",
            m.id,
            d.id(),
            d.attempt()
        );
        // A hung handler settles nothing, and a crash runs no destructor.
        std::mem::forget(d);
    }
    expect_quiet_for(&mut sub, ack * 2 + timing().quiet, "after the last allowed attempt").await?;
    let (dlq, dead) = only_dead_letter(t, &topic, &options, "after the last allowed attempt").await?;
    ensure!(
        dead.message.id == m.id,
        "dead-lettered {} instead of {}",
        dead.message.id,
        m.id
    );
    ensure!(dead.message.payload == m.payload, "the dead letter's payload changed");
    dlq.purge().await?;
    Ok(())
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

/// Depth, peek and redrive stay exact past a handful of dead letters: 40 in,
/// depth 40, peek returns each once (and at most what was asked), a partial
/// redrive moves exactly that many, purge the rest.
pub async fn dead_letter_queue_counts_many(t: &Arc<dyn Transport>) -> CheckResult {
    let t: &dyn Transport = t.as_ref();
    let n = 40;
    let options = opts("g").max_in_flight(10);
    let (topic, mut sub) = fresh(t, "dlqmany", options.clone()).await?;
    let sent: Vec<Message> = (0..n)
        .map(|i| Message::new(format!("dead{i}")).with_key(format!("dk{i}")))
        .collect();
    let ids: HashSet<String> = sent.iter().map(|m| m.id.clone()).collect();
    t.publish_batch(&topic, sent).await?;
    for _ in 0..n {
        next(&mut sub).await?.dead_letter("counted").await?;
    }
    dlq_depth(t, &topic, &options, n as u64).await?;
    let dlq = t.dead_letters(&topic, &options).await?;
    let ten = dlq.peek(10).await?;
    ensure!(ten.len() == 10, "peek(10) returned {} of {n}", ten.len());
    let all = dlq.peek(100).await?;
    let peeked: HashSet<String> = all.iter().map(|d| d.message.id.clone()).collect();
    ensure!(
        all.len() == n && peeked == ids,
        "peek(100) returned {} messages ({} distinct, {} of those sent)",
        all.len(),
        peeked.len(),
        peeked.intersection(&ids).count()
    );
    // A quorum queue (RabbitMQ on a cluster) takes peeked messages back
    // through its log, so the depth may lag a moment: it must come back to
    // n, not merely read n at once.
    dlq_depth(t, &topic, &options, n as u64)
        .await
        .map_err(|e| CheckFailure(format!("peek changed the depth: {}", e.0)))?;
    let moved = dlq.redrive(&Selection::all().oldest(10)).await?;
    ensure!(moved == 10, "redrive(First(10)) moved {moved}");
    let back = receive_and_ack(&mut sub, 10).await?;
    ensure!(
        back.iter().all(|r| ids.contains(&r.id)) && back.iter().map(|r| &r.id).collect::<HashSet<_>>().len() == 10,
        "the redriven messages are not ten distinct dead letters"
    );
    dlq_depth(t, &topic, &options, (n - 10) as u64).await?;
    let purged = dlq.purge().await?;
    ensure!(
        purged == (n - 10) as u64,
        "purge reported {purged}, {} were left",
        n - 10
    );
    dlq_depth(t, &topic, &options, 0).await?;
    expect_quiet(&mut sub, "after the purge").await
}

/// A subscription never holds more than `max_in_flight` unsettled
/// deliveries: with 3 held, a 4th does not arrive until one is settled.
pub async fn max_in_flight_respected(t: &Arc<dyn Transport>) -> CheckResult {
    let t: &dyn Transport = t.as_ref();
    let (topic, mut sub) = fresh(t, "inflight", opts("g").max_in_flight(3)).await?;
    t.publish_batch(&topic, (0..6).map(|i| Message::new(format!("f{i}"))).collect())
        .await?;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(next(&mut sub).await?);
    }
    let seen: Vec<(String, u32)> = held.iter().map(|d| (d.id().to_owned(), d.attempt())).collect();
    ensure!(
        seen.iter().map(|(id, _)| id).collect::<HashSet<_>>().len() == 3 && seen.iter().all(|(_, a)| *a == 1),
        "three first deliveries of three messages expected, got {seen:?}"
    );
    expect_quiet(&mut sub, "with max_in_flight(3) deliveries unsettled").await?;
    held.remove(0).ack().await?;
    held.push(next(&mut sub).await?);
    expect_quiet(&mut sub, "with max_in_flight(3) deliveries unsettled again").await?;
    for d in held {
        d.ack().await?;
    }
    let rest = receive_and_ack(&mut sub, 2).await?;
    ensure!(rest.len() == 2, "the last two did not arrive");
    expect_quiet(&mut sub, "after all six").await
}

/// Attempts the library counts, not the broker: a message redelivered more
/// often than any broker's own default limit (RabbitMQ 4.0 removes a quorum
/// queue's message after 20 deliveries unless told otherwise) is handed out
/// exactly `max_attempts` (30) times and then dead-lettered, never removed
/// unseen and never dead-lettered early. Once by nacks without delay, once
/// (where the backend redelivers on ack timeout) by deliveries never settled,
/// on topics of their own at the same time.
pub async fn redelivered_past_broker_limits(t: &Arc<dyn Transport>) -> CheckResult {
    const LIMIT: u32 = 30;
    let t: &dyn Transport = t.as_ref();
    let by_nack = async {
        let options = opts("g").max_attempts(LIMIT);
        let (topic, mut sub) = fresh(t, "manynacks", options.clone()).await?;
        let m = Message::new("nacked thirty times");
        t.publish(&topic, m.clone()).await?;
        for attempt in 1..=LIMIT {
            let d = next(&mut sub).await?;
            ensure!(
                d.id() == m.id && d.attempt() == attempt,
                "by nack: expected attempt {attempt} of {}, got {} attempt {} (was it removed or dead-lettered early?)",
                m.id,
                d.id(),
                d.attempt()
            );
            ensure!(
                d.is_last_attempt() == (attempt == LIMIT),
                "by nack: is_last_attempt wrong on attempt {attempt}"
            );
            d.nack(None).await?;
        }
        expect_quiet(&mut sub, "by nack, after the last attempt").await?;
        let (dlq, dead) = only_dead_letter(t, &topic, &options, "by nack").await?;
        ensure!(dead.message.id == m.id, "by nack: dead-lettered {}", dead.message.id);
        ensure!(
            dead.attempts == Some(LIMIT),
            "by nack: the dead letter records {:?} attempts, expected {LIMIT}",
            dead.attempts
        );
        dlq.purge().await?;
        Ok::<(), CheckFailure>(())
    };
    let by_timeout = async {
        if !t.capabilities().ack_timeout_redelivery {
            return Ok(());
        }
        let ack = timing().short_ack;
        // Room for every forgotten delivery: a slot held by one must not be
        // what stops the redeliveries.
        let options = short("g").max_attempts(LIMIT).max_in_flight(64);
        let (topic, mut sub) = fresh(t, "manytimeouts", options.clone()).await?;
        let m = Message::new("never settled");
        t.publish(&topic, m.clone()).await?;
        for attempt in 1..=LIMIT {
            let d = next_within(&mut sub, ack * 2 + timing().receive).await?;
            ensure!(
                d.id() == m.id && d.attempt() == attempt,
                "by ack timeout: expected attempt {attempt} of {}, got {} attempt {} (was it removed or dead-lettered early?)",
                m.id,
                d.id(),
                d.attempt()
            );
            // A handler that hangs settles nothing.
            std::mem::forget(d);
        }
        expect_quiet_for(
            &mut sub,
            ack * 2 + timing().quiet,
            "by ack timeout, after the last attempt",
        )
        .await?;
        let (dlq, dead) = only_dead_letter(t, &topic, &options, "by ack timeout").await?;
        ensure!(
            dead.message.id == m.id,
            "by ack timeout: dead-lettered {}",
            dead.message.id
        );
        // The 31st arrival is the one that finds the message exhausted; a
        // backend may count it, so 30 or 31, never fewer.
        ensure!(
            matches!(dead.attempts, Some(n) if n == LIMIT || n == LIMIT + 1),
            "by ack timeout: the dead letter records {:?} attempts, expected {LIMIT} (or {} counting the arrival that found it exhausted)",
            dead.attempts,
            LIMIT + 1
        );
        dlq.purge().await?;
        Ok(())
    };
    let (nacked, timed_out) = futures::join!(by_nack, by_timeout);
    nacked.and(timed_out)
}

/// The one dead letter of `topic` for `options`, once the dead-letter
/// queue holds exactly one (waiting for it with the suite's deadline).
async fn only_dead_letter(
    t: &dyn Transport,
    topic: &str,
    options: &transport_core::SubscribeOptions,
    context: &str,
) -> Result<(Box<dyn transport_core::DeadLetterQueue>, transport_core::DeadLetter), CheckFailure> {
    dlq_depth(t, topic, options, 1).await?;
    let dlq = t.dead_letters(topic, options).await?;
    let dead = dlq
        .peek(1)
        .await?
        .pop()
        .ok_or_else(|| CheckFailure(format!("{context}: peek returned nothing")))?;
    Ok((dlq, dead))
}
