//! The life of a delivery after it was handed out: an ack is final, a nack
//! redelivers with the next attempt (not before its delay), an unsettled
//! delivery comes back after the ack timeout or when dropped, a crashed
//! consumer loses nothing, a stale handle cannot settle, a lease holds,
//! and no more than `max_in_flight` are out at once.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use transport_core::{ErrorKind, Message, Transport};

use crate::support::*;
use crate::{ensure, Check};

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

/// The checks of this file, each with what it needs of the backend.
pub(crate) fn checks() -> Vec<Check> {
    vec![
        check!(max_in_flight_respected),
        check!(ack_is_final),
        check!(nack_redelivers_with_next_attempt),
        check!(nack_delay_respected, |c| (!c.nack_delay).then_some(
            "the backend cannot delay a redelivery (nack_delay_unsupported proves it)"
        )),
        check!(ack_timeout_redelivers, |c| (!c.ack_timeout_redelivery)
            .then_some(NO_TIMEOUT)),
        check!(dropped_delivery_redelivered, |c| (!c.ack_timeout_redelivery)
            .then_some(NO_TIMEOUT)),
        check!(crashed_consumer_loses_nothing, |c| (!c.ack_timeout_redelivery)
            .then_some(NO_TIMEOUT)),
        check!(stale_handle_cannot_settle, |c| (!c.ack_timeout_redelivery)
            .then_some(NO_TIMEOUT)),
        check!(extend_holds_delivery, |c| (!(c.extend && c.ack_timeout_redelivery))
            .then_some(
                "the backend cannot extend a delivery (extend_unsupported proves it)"
            )),
    ]
}
