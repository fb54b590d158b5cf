//! Dead letters: after `max_attempts` (settled or not, and past any limit
//! the broker has of its own), on request, with their headers, and the
//! operations on the queue (depth, peek, redrive, discard) by selection
//! and at scale.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use transport_core::headers::DLQ_PREFIX;
use transport_core::{Message, Selection, Transport};

use crate::support::*;
use crate::{ensure, Check};

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

    ensure!(dlq.redrive_all().await? == 4, "redrive(all) did not move four messages");
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

/// Dead letters are redriven and discarded by selection, the others left in
/// place: an id that is not there takes nothing; discarding one id takes
/// exactly that one; redriving by reason brings exactly those back to the
/// group (and no other); a failure time after every failure takes the rest.
pub async fn dead_letters_by_selection(t: &Arc<dyn Transport>) -> CheckResult {
    let t: &dyn Transport = t.as_ref();
    let options = opts("g");
    let (topic, mut sub) = fresh(t, "dlqsel", options.clone()).await?;
    let reasons = ["bad input 0", "timeout 1", "bad input 2", "timeout 3"];
    let mut ids = Vec::new();
    for i in 0..reasons.len() {
        let m = Message::new(i.to_string());
        ids.push(m.id.clone());
        t.publish(&topic, m).await?;
    }
    for _ in 0..reasons.len() {
        let d = next(&mut sub).await?;
        let i: usize = String::from_utf8_lossy(&d.message().payload).parse().unwrap_or(0);
        d.dead_letter(reasons[i]).await?;
    }
    dlq_depth(t, &topic, &options, 4).await?;
    let dlq = t.dead_letters(&topic, &options).await?;
    let none = dlq.discard(&Selection::ids(["no-such-id"])).await?;
    ensure!(none == 0, "discarding an id that is not there took {none}");
    let one = dlq.discard(&Selection::ids([ids[0].clone()])).await?;
    ensure!(one == 1, "discarding one id took {one}");
    dlq_depth(t, &topic, &options, 3).await?;
    let back = dlq.redrive(&Selection::all().reason_contains("timeout")).await?;
    ensure!(back == 2, "redriving the two timeouts moved {back}");
    let mut again = Vec::new();
    for _ in 0..2 {
        let d = next(&mut sub).await?;
        again.push(d.id().to_owned());
        d.ack().await?;
    }
    again.sort();
    let mut want = vec![ids[1].clone(), ids[3].clone()];
    want.sort();
    ensure!(again == want, "redriven {again:?}, selected {want:?}");
    expect_quiet(&mut sub, "after the two redriven messages").await?;
    dlq_depth(t, &topic, &options, 1).await?;
    let left = dlq.peek(10).await?;
    ensure!(
        left.len() == 1 && left[0].message.id == ids[2] && left[0].reason.as_deref() == Some(reasons[2]),
        "left in the queue: {left:?}"
    );
    let later = std::time::SystemTime::now() + Duration::from_secs(3600);
    let rest = dlq.discard(&Selection::all().failed_before(later)).await?;
    ensure!(rest == 1, "discarding by failure time took {rest}");
    dlq_depth(t, &topic, &options, 0).await
}

/// `oldest(n)` picks the earliest dead-lettered: redriving the oldest one
/// brings back the first message dead-lettered (and only it), discarding
/// the oldest one then drops the second, and the third is left.
pub async fn dead_letters_oldest_first(t: &Arc<dyn Transport>) -> CheckResult {
    let t: &dyn Transport = t.as_ref();
    let options = opts("g");
    let (topic, mut sub) = fresh(t, "dlqoldest", options.clone()).await?;
    for i in 0..3 {
        t.publish(&topic, Message::new(format!("o{i}"))).await?;
    }
    // One at a time, in the order received, each dead-lettered in a later
    // millisecond than the one before: brokers without a queue order (SQS
    // standard, Kafka's partitions) order dead letters by a millisecond
    // timestamp.
    let mut order = Vec::new();
    for _ in 0..3 {
        let d = next(&mut sub).await?;
        order.push(d.id().to_owned());
        d.dead_letter("oldest first").await?;
        let settled = SystemTime::now();
        while SystemTime::now() < settled + Duration::from_millis(2) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    dlq_depth(t, &topic, &options, 3).await?;
    let dlq = t.dead_letters(&topic, &options).await?;
    let moved = dlq.redrive(&Selection::all().oldest(1)).await?;
    ensure!(moved == 1, "redriving the oldest one moved {moved}");
    let back = next(&mut sub).await?;
    ensure!(
        back.id() == order[0],
        "redriven {}, but the first dead-lettered was {} (order {order:?})",
        back.id(),
        order[0]
    );
    back.ack().await?;
    expect_quiet(&mut sub, "after the one redriven message").await?;
    dlq_depth(t, &topic, &options, 2).await?;
    let dropped = dlq.discard(&Selection::all().oldest(1)).await?;
    ensure!(dropped == 1, "discarding the oldest one dropped {dropped}");
    dlq_depth(t, &topic, &options, 1).await?;
    let left: Vec<String> = dlq.peek(10).await?.into_iter().map(|d| d.message.id).collect();
    ensure!(
        left == [order[2].clone()],
        "left in the queue: {left:?}; only the last dead-lettered ({}) was expected",
        order[2]
    );
    dlq.purge().await?;
    dlq_depth(t, &topic, &options, 0).await
}

/// The checks of this file, each with what it needs of the backend.
pub(crate) fn checks() -> Vec<Check> {
    vec![
        check!(max_attempts_dead_letters, |c| (!c.dead_letter_ops).then_some(NO_DLQ)),
        check!(unsettled_exhaustion_dead_letters, |c| (!(c.dead_letter_ops
            && c.ack_timeout_redelivery))
            .then_some("needs dead-letter operations and ack-timeout redelivery")),
        check!(redelivered_past_broker_limits, |c| (!c.dead_letter_ops)
            .then_some(NO_DLQ)),
        check!(explicit_dead_letter, |c| (!c.dead_letter_ops).then_some(NO_DLQ)),
        check!(dead_letter_operations, |c| (!c.dead_letter_ops).then_some(NO_DLQ)),
        check!(dead_letter_queue_counts_many, |c| (!c.dead_letter_ops)
            .then_some(NO_DLQ)),
        check!(dead_letters_by_selection, |c| (!c.dead_letter_ops).then_some(NO_DLQ)),
        check!(dead_letters_oldest_first, |c| (!c.dead_letter_ops).then_some(NO_DLQ)),
    ]
}
