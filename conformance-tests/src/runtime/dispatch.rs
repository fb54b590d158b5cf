//! How the runtime hands deliveries to the handler: one key at a time and
//! in order, at most `concurrency` at once, follow-ups linked to their
//! cause, and a shutdown that drains what runs and leaves what waits.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use transport_core::runtime::{handler_fn, Context, HandlerError};
use transport_core::{Message, Transport};

use super::*;
use crate::support::*;
use crate::{ensure, Check};

/// Graceful shutdown: handlers running when it is asked finish and are
/// acked; deliveries waiting (behind a busy key, or not started) are not
/// acked and come back; nothing is lost.
pub async fn graceful_shutdown_drains(t: &Arc<dyn Transport>) -> CheckResult {
    let options = short("g").max_in_flight(12);
    let (topic, consumer) = consumer(t, "shutdown", &options, 4).await?;
    // Three keys: deliveries of a key queue behind the one running.
    let sent: Vec<Message> = (0..30)
        .map(|i| Message::new(format!("s{i}")).with_key(format!("k{}", i % 3)))
        .collect();
    t.publish_batch(&topic, sent.clone()).await?;
    let done = Arc::new(Mutex::new(HashSet::new()));
    let started = Arc::new(Notify::new());
    let handler = {
        let (done, started) = (done.clone(), started.clone());
        move |ctx: Context| {
            let (done, started) = (done.clone(), started.clone());
            async move {
                started.notify_one();
                tokio::time::sleep(Duration::from_millis(300)).await;
                // Shutdown was asked as the first handler started: by now
                // every running handler is told (to wrap up early).
                if ctx.is_shutting_down() {
                    done.lock().unwrap().insert(ctx.id().to_owned());
                }
                Ok::<_, HandlerError>(())
            }
        }
    };
    let stats = consumer
        .run_fn(handler, async move { started.notified().await })
        .await?;
    let finished: HashSet<String> = done.lock().unwrap().clone();
    ensure!(!finished.is_empty(), "no handler finished before shutdown completed");
    ensure!(
        stats.acked as usize == finished.len(),
        "{} handlers finished but {} deliveries were acked (waiting deliveries must not be acked)",
        finished.len(),
        stats.acked
    );
    ensure!(finished.len() < sent.len(), "shutdown did not stop fetching");
    let mut sub = t.subscribe(&topic, options).await?;
    let rest: HashSet<String> = receive_and_ack(&mut sub, sent.len() - finished.len())
        .await?
        .into_iter()
        .map(|r| r.id)
        .collect();
    ensure!(rest.is_disjoint(&finished), "messages acked before shutdown came back");
    let all: HashSet<String> = sent.iter().map(|m| m.id.clone()).collect();
    ensure!(
        rest.union(&finished).cloned().collect::<HashSet<_>>() == all,
        "messages were lost across shutdown"
    );
    expect_quiet(&mut sub, "after the rest").await
}

/// The context describes the delivery (id, key, headers, payload, topic,
/// group, attempt, max attempts, last attempt, first failure, ack timeout,
/// shutdown), and messages published from a handler, alone, in a batch or
/// from code without the context, carry the flow's correlation id and name
/// the handled message as their cause (an existing flow's correlation id is
/// kept).
pub async fn runtime_follow_up_is_linked(t: &Arc<dyn Transport>) -> CheckResult {
    let options = short("g").max_attempts(2);
    let (topic, consumer) = consumer(t, "followup", &options, 2).await?;
    let (next_topic, mut next_sub) = fresh(t.as_ref(), "followup-next", short("g")).await?;
    let first = Message::new("order placed")
        .with_key("customer-9")
        .with_header("ce-correlationid", "flow-42")
        .with_header("h", "v");
    t.publish(&topic, first.clone()).await?;
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let failed_at: Arc<Mutex<Option<std::time::SystemTime>>> = Arc::default();
    let service = handler_fn({
        let (seen, failed_at, topic) = (seen.clone(), failed_at.clone(), topic.clone());
        move |ctx: Context| {
            let (next_topic, seen, failed_at, topic) =
                (next_topic.clone(), seen.clone(), failed_at.clone(), topic.clone());
            async move {
                let mut problems = Vec::new();
                let mut expect = |ok: bool, what: &str| {
                    if !ok {
                        problems.push(what.to_owned());
                    }
                };
                expect(ctx.key() == Some("customer-9"), "key");
                expect(ctx.headers().get("h") == Some("v"), "headers");
                expect(ctx.payload().as_ref() == b"order placed", "payload");
                expect(ctx.message().id == ctx.id(), "message");
                expect(ctx.topic() == topic, "topic");
                expect(ctx.group() == "g", "group");
                expect(ctx.max_attempts() == 2, "max_attempts");
                expect(ctx.is_last_attempt() == (ctx.attempt() == 2), "is_last_attempt");
                expect(ctx.ack_timeout() == timing().short_ack, "ack_timeout");
                expect(ctx.lease().ack_timeout() == timing().short_ack, "lease ack_timeout");
                expect(!ctx.is_shutting_down(), "is_shutting_down");
                if ctx.attempt() == 1 {
                    expect(ctx.first_failure().is_none(), "first_failure on attempt 1");
                    seen.lock().unwrap().extend(problems);
                    *failed_at.lock().unwrap() = Some(std::time::SystemTime::now());
                    return Err(HandlerError::retry("fail once"));
                }
                let failed = failed_at.lock().unwrap().unwrap_or(std::time::UNIX_EPOCH);
                if ctx.transport().capabilities().first_failure_time {
                    expect(
                        ctx.first_failure().is_some_and(|f| {
                            f + Duration::from_millis(500) >= failed && f <= failed + Duration::from_millis(500)
                        }),
                        "first_failure on attempt 2",
                    );
                }
                seen.lock().unwrap().extend(problems);
                ctx.publish(&next_topic, Message::new("payment requested")).await?;
                ctx.publish_batch(
                    &next_topic,
                    vec![Message::new("stock reserved"), Message::new("mail queued")],
                )
                .await?;
                // Code without the context links through the task; a message
                // that would start its own flow (correlation = its own id,
                // as a fresh event) joins the handled one's.
                let audit = Message::new("audit");
                let own = audit.id.clone();
                let linked = transport_core::runtime::link_to_current(audit.with_header("ce-correlationid", own));
                ctx.transport().publish(&next_topic, linked).await?;
                Ok::<_, HandlerError>(())
            }
        }
    });
    let (s, reached) = run_until(consumer, service, timing().receive, |s| s.acked >= 1).await?;
    ensure!(reached, "the handler did not finish: {s:?}");
    let problems = seen.lock().unwrap().clone();
    ensure!(
        problems.is_empty(),
        "the context described the delivery wrongly: {problems:?}"
    );
    let mut texts = HashSet::new();
    for _ in 0..4 {
        let d = next(&mut next_sub).await?;
        let text = String::from_utf8_lossy(d.payload()).into_owned();
        let h = d.headers();
        // The handled message belonged to flow-42: the flow goes on.
        ensure!(
            h.get("ce-correlationid") == Some("flow-42") && h.get("ce-causationid") == Some(first.id.as_str()),
            "follow-up {text:?} has headers {h:?}, expected correlation flow-42 and causation {}",
            first.id
        );
        texts.insert(text);
        d.ack().await?;
    }
    ensure!(
        texts == HashSet::from(["payment requested", "stock reserved", "mail queued", "audit"].map(String::from)),
        "follow-ups received: {texts:?}"
    );
    expect_quiet(&mut next_sub, "after the follow-ups").await
}

/// Messages of one key are handled one at a time and in order, the next
/// one only after the one before it is settled. Two deliveries held at a
/// time: the second of a key waits behind the first, and every settlement
/// lets the next one in while one of its key is still held (a key forgotten
/// too early shows as two of it running at once).
pub async fn runtime_keys_run_one_at_a_time_in_order(t: &Arc<dyn Transport>) -> CheckResult {
    let options = short("g").max_in_flight(2);
    let (topic, consumer) = consumer(t, "keys", &options, 4).await?;
    let caps = t.capabilities();
    let per_key = 5;
    let mut sent = Vec::new();
    for key in ["a", "b"] {
        for seq in 0..per_key {
            sent.push(
                Message::new(format!("{key}{seq}"))
                    .with_key(key)
                    .with_header("seq", seq.to_string()),
            );
        }
        sent.push(Message::new(format!("{key}-unkeyed")));
    }
    t.publish_batch(&topic, sent.clone()).await?;
    let running: Arc<Mutex<HashSet<String>>> = Arc::default();
    let overlaps: Arc<Mutex<Vec<String>>> = Arc::default();
    let order: Arc<Mutex<HashMap<String, Vec<u32>>>> = Arc::default();
    let service = handler_fn({
        let (running, overlaps, order) = (running.clone(), overlaps.clone(), order.clone());
        move |ctx: Context| {
            let (running, overlaps, order) = (running.clone(), overlaps.clone(), order.clone());
            async move {
                let key = ctx.key().map(str::to_owned);
                if let Some(key) = &key {
                    if !running.lock().unwrap().insert(key.clone()) {
                        overlaps.lock().unwrap().push(ctx.id().to_owned());
                    }
                    let seq = ctx
                        .headers()
                        .get("seq")
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(u32::MAX);
                    order.lock().unwrap().entry(key.clone()).or_default().push(seq);
                }
                tokio::time::sleep(Duration::from_millis(40)).await;
                if let Some(key) = &key {
                    running.lock().unwrap().remove(key);
                }
                Ok::<_, HandlerError>(())
            }
        }
    });
    let n = sent.len() as u64;
    let (s, reached) = run_until(consumer, service, timing().receive, move |s| s.acked >= n).await?;
    ensure!(reached, "not every message was acked: {s:?}");
    let overlaps = overlaps.lock().unwrap().clone();
    ensure!(
        overlaps.is_empty(),
        "{overlaps:?} started while another message of their key was running"
    );
    let order = order.lock().unwrap().clone();
    ensure!(order.len() == 2, "handled keys {order:?}");
    if caps.ordered_per_key_single_consumer() {
        for (key, seqs) in &order {
            let mut expected: Vec<u32> = (0..per_key).collect();
            if caps.duplicates_possible {
                expected = seqs.clone();
                expected.sort();
            }
            ensure!(seqs == &expected, "key {key} handled in the order {seqs:?}");
        }
    }
    ensure!(
        s.received == n || (caps.duplicates_possible && s.received > n),
        "{} deliveries counted as received, {n} handed out: {s:?}",
        s.received
    );
    ensure!(s.acked == n && s.retried == 0, "stats: {s:?}");
    Ok(())
}

/// At most `concurrency` handler calls run at once, and that many do.
pub async fn runtime_concurrency_is_bounded(t: &Arc<dyn Transport>) -> CheckResult {
    let limit = 3;
    let options = short("g").max_in_flight(16);
    let (topic, consumer) = consumer(t, "concurrency", &options, limit).await?;
    let sent: Vec<Message> = (0..3 * limit).map(|i| Message::new(format!("c{i}"))).collect();
    t.publish_batch(&topic, sent.clone()).await?;
    // (running now, most at once)
    let counts: Arc<Mutex<(usize, usize)>> = Arc::default();
    let service = handler_fn({
        let counts = counts.clone();
        move |_ctx: Context| {
            let counts = counts.clone();
            async move {
                {
                    let mut c = counts.lock().unwrap();
                    c.0 += 1;
                    c.1 = c.1.max(c.0);
                }
                tokio::time::sleep(Duration::from_millis(150)).await;
                counts.lock().unwrap().0 -= 1;
                Ok::<_, HandlerError>(())
            }
        }
    });
    let n = sent.len() as u64;
    let (s, reached) = run_until(consumer, service, timing().receive, move |s| s.acked >= n).await?;
    ensure!(reached, "not every message was acked: {s:?}");
    let peak = counts.lock().unwrap().1;
    ensure!(
        peak == limit,
        "{peak} handler calls ran at once with a concurrency of {limit} (and {} messages ready)",
        sent.len()
    );
    Ok(())
}

/// Shutdown drains the running calls and leaves the deliveries waiting for
/// their turn unsettled: with two calls at a time, two running (until
/// shutdown, one of them wrapping up for a while after it) and three held
/// waiting when shutdown is asked, both running ones finish and are acked,
/// and the three waiting come back.
pub async fn runtime_shutdown_leaves_queued_deliveries(t: &Arc<dyn Transport>) -> CheckResult {
    let options = short("g").max_in_flight(8);
    let (topic, consumer) = consumer(t, "shutdown-queued", &options, 2).await?;
    let sent: Vec<Message> = (0..5).map(|i| Message::new(format!("q{i}"))).collect();
    t.publish_batch(&topic, sent.clone()).await?;
    let handled: Arc<Mutex<Vec<String>>> = Arc::default();
    let service = handler_fn({
        let handled = handled.clone();
        move |ctx: Context| {
            let handled = handled.clone();
            async move {
                let second = {
                    let mut handled = handled.lock().unwrap();
                    handled.push(ctx.id().to_owned());
                    handled.len() == 2
                };
                // Busy until told to stop (renewing, where the backend can):
                // the others wait for the two calls allowed.
                while tokio::time::timeout(ctx.ack_timeout() / 2, ctx.shutdown())
                    .await
                    .is_err()
                {
                    let _ = ctx.lease().renew().await;
                }
                if second {
                    // Wrapping up takes a while, well within the shutdown timeout.
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                Ok::<_, HandlerError>(())
            }
        }
    });
    let n = sent.len() as u64;
    // Shut down once all five are held: two running, three waiting.
    let (s, reached) = run_until(consumer, service, timing().receive, move |s| s.received >= n).await?;
    ensure!(reached, "the consumer did not take all {n} deliveries: {s:?}");
    let handled = handled.lock().unwrap().clone();
    ensure!(
        handled.len() == 2 && s.acked == 2,
        "handled {handled:?} and acked {}: the two running calls, and only they, must finish and be acked",
        s.acked
    );
    let mut sub = t.subscribe(&topic, options).await?;
    let rest: HashSet<String> = receive_and_ack(&mut sub, sent.len() - 2)
        .await?
        .into_iter()
        .map(|r| r.id)
        .collect();
    let expected: HashSet<String> = sent
        .iter()
        .map(|m| m.id.clone())
        .filter(|id| !handled.contains(id))
        .collect();
    ensure!(
        rest == expected,
        "after shutdown {rest:?} came back, the queued {expected:?} were due (the consumer's counts: {s:?})"
    );
    expect_quiet(&mut sub, "after the queued deliveries").await
}

/// Two deliveries of one key never run at once in the runtime, also when
/// the broker hands the key out again: a handler that outlives its lease
/// gets its message redelivered (a broker that locks keys hands out the
/// redelivery as the key's one delivery), and that redelivery waits for the
/// running call; so does the next one behind it.
pub async fn runtime_redelivered_key_waits_for_the_running_call(t: &Arc<dyn Transport>) -> CheckResult {
    let ack_timeout = timing().short_ack;
    let options = short("g").max_attempts(10);
    let (topic, consumer) = consumer(t, "key-redelivered", &options, 4).await?;
    t.publish(&topic, Message::new("slow").with_key("k")).await?;
    // (attempt, started, ended) of each call.
    type Spans = Arc<Mutex<Vec<(u32, Instant, Option<Instant>)>>>;
    let spans: Spans = Arc::default();
    let service = handler_fn({
        let spans = spans.clone();
        move |ctx: Context| {
            let spans = spans.clone();
            async move {
                let i = {
                    let mut spans = spans.lock().unwrap();
                    spans.push((ctx.attempt(), Instant::now(), None));
                    spans.len() - 1
                };
                // The first two calls outlive their leases (no lease layer).
                if ctx.attempt() <= 2 {
                    tokio::time::sleep(ack_timeout * 3 / 2).await;
                }
                spans.lock().unwrap()[i].2 = Some(Instant::now());
                Ok::<_, HandlerError>(())
            }
        }
    });
    let (s, reached) = run_until(consumer, service, timing().receive + ack_timeout * 4, |s| s.acked >= 1).await?;
    ensure!(reached, "no call of the message was acked: {s:?}");
    let spans = spans.lock().unwrap().clone();
    let attempts: Vec<u32> = spans.iter().map(|(a, _, _)| *a).collect();
    ensure!(
        spans.len() >= 3 && attempts.windows(2).all(|w| w[0] < w[1]),
        "calls at attempts {attempts:?}: three, in order, were due"
    );
    for pair in spans.windows(2) {
        let ((a, _, ended), (b, started, _)) = (pair[0], pair[1]);
        ensure!(
            ended.is_some_and(|e| e <= started),
            "attempt {b} of the key started while attempt {a} was still running"
        );
    }
    Ok(())
}

/// The checks of this file, each with what it needs of the backend.
pub(crate) fn checks() -> Vec<Check> {
    vec![
        check!(graceful_shutdown_drains, |c| (!c.ack_timeout_redelivery)
            .then_some(NO_TIMEOUT)),
        check!(runtime_follow_up_is_linked),
        check!(runtime_keys_run_one_at_a_time_in_order),
        check!(runtime_concurrency_is_bounded),
        check!(runtime_shutdown_leaves_queued_deliveries, |c| (!c
            .ack_timeout_redelivery)
            .then_some(NO_TIMEOUT)),
        check!(runtime_redelivered_key_waits_for_the_running_call, |c| (!c
            .ack_timeout_redelivery)
            .then_some(NO_TIMEOUT)),
    ]
}
