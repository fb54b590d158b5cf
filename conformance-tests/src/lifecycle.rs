//! A group over time: it catches up after being offline, a new group
//! replays retained messages where the backend can, a closed transport
//! reopens where it left off, and the backlog the broker reports follows
//! what the group has left.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use transport_core::{Accuracy, Backlog, Message, StartFrom, SubscribeOptions, Transport};

use crate::support::*;
use crate::{ensure, Check};

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

/// How long an approximate figure may take to settle.
const SETTLE: Duration = Duration::from_secs(20);

/// Read the backlog until `ok` holds, failing after [`SETTLE`] with the
/// last reading.
async fn settles(
    t: &dyn Transport,
    topic: &str,
    options: &SubscribeOptions,
    what: &str,
    ok: impl Fn(&Backlog) -> bool,
) -> Result<Backlog, CheckFailure> {
    let deadline = Instant::now() + SETTLE;
    loop {
        let b = t.backlog(topic, options).await?;
        if ok(&b) {
            return Ok(b);
        }
        if Instant::now() > deadline {
            return Err(CheckFailure(format!("{what}: still {b:?} after {SETTLE:?}")));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Whether `b` says `left` messages are still to settle, given what the
/// backend can tell: waiting + in flight exactly when it knows both; when it
/// cannot see in flight, between `left - read_ahead` (what a subscription
/// may hold unsettled) and `left`.
fn left_is(b: &Backlog, left: u64, read_ahead: u64) -> bool {
    match (b.waiting, b.in_flight) {
        (Some(w), Some(f)) => w + f == left,
        (Some(w), None) => w <= left && w + read_ahead >= left,
        (None, Some(f)) => f <= left,
        (None, None) => true,
    }
}

/// The backlog follows what the group has left: `N` published are waiting;
/// after `k` are settled (acked or dead-lettered), `N - k` are left
/// (waiting plus in flight); the dead letter is counted; nothing is left
/// once all are acked. The oldest waiting message's age is at least the
/// time it has demonstrably waited and at most the time since it was
/// published (1 s slack for brokers that count in seconds). Figures the
/// backend declares `Unavailable` are `None`, the others are there.
pub async fn backlog_tracks_the_group(t: &Arc<dyn Transport>) -> CheckResult {
    let t: &dyn Transport = t.as_ref();
    let accuracy = t.capabilities().backlog;
    let read_ahead = 1;
    let options = opts("g").max_in_flight(read_ahead as usize);
    let (topic, mut sub) = fresh(t, "backlog", options.clone()).await?;

    let empty = t.backlog(&topic, &options).await?;
    for (name, declared, value) in [
        ("waiting", accuracy.waiting, empty.waiting.is_some()),
        ("in_flight", accuracy.in_flight, empty.in_flight.is_some()),
        ("dead_letters", accuracy.dead_letters, empty.dead_letters.is_some()),
        (
            "oldest_waiting_age",
            accuracy.oldest_waiting_age,
            empty.oldest_waiting_age.is_some(),
        ),
    ] {
        ensure!(
            (declared != Accuracy::Unavailable) == value,
            "{name} is declared {} but reads {empty:?}",
            declared.as_str()
        );
    }
    ensure!(left_is(&empty, 0, 0), "a new group has a backlog: {empty:?}");

    let n = 6u64;
    let published = Instant::now();
    for i in 0..n {
        t.publish(&topic, Message::new(format!("m{i}"))).await?;
    }
    settles(t, &topic, &options, "after publishing 6", |b| left_is(b, n, read_ahead)).await?;
    // The oldest has now waited at least this long.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let waited = published.elapsed();
    let b = t.backlog(&topic, &options).await?;
    if let Some(age) = b.oldest_waiting_age {
        let floor = waited.saturating_sub(Duration::from_millis(1000));
        let ceiling = published.elapsed() + Duration::from_secs(1);
        ensure!(
            age >= floor && age <= ceiling,
            "the oldest message waited {age:?}; expected between {floor:?} and {ceiling:?}"
        );
    }

    for _ in 0..2 {
        next(&mut sub).await?.ack().await?;
    }
    settles(t, &topic, &options, "after 2 acks", |b| left_is(b, n - 2, read_ahead)).await?;
    next(&mut sub).await?.dead_letter("backlog check").await?;
    let after_dead = settles(t, &topic, &options, "after a dead letter", |b| {
        left_is(b, n - 3, read_ahead) && b.dead_letters.is_none_or(|d| d == 1)
    })
    .await?;
    ensure!(after_dead.dead_letters.is_none_or(|d| d == 1), "{after_dead:?}");

    for _ in 3..n {
        next(&mut sub).await?.ack().await?;
    }
    let done = settles(t, &topic, &options, "after every message was settled", |b| {
        left_is(b, 0, 0) && b.oldest_waiting_age.is_none_or(|a| a == Duration::ZERO)
    })
    .await?;
    ensure!(done.dead_letters.is_none_or(|d| d == 1), "dead letters {done:?}");
    expect_quiet(&mut sub, "after the last ack").await
}

/// A delivery a consumer holds is in flight, not waiting, and the oldest
/// waiting age is that of the oldest message still waiting, not the
/// newest's: with one message held, one published and then, 2.5 s later,
/// another, a backend that tells both counts reads 2 waiting and 1 in
/// flight, and the age is at least the 2.5 s the older one demonstrably
/// waited (1 s slack for brokers that count in seconds) and at most the
/// time since the held one was published.
pub async fn backlog_tells_held_from_waiting(t: &Arc<dyn Transport>) -> CheckResult {
    let t: &dyn Transport = t.as_ref();
    let accuracy = t.capabilities().backlog;
    // One in flight at most, so the held delivery is all a subscription has.
    let options = opts("g").max_in_flight(1);
    let (topic, mut sub) = fresh(t, "backlog-held", options.clone()).await?;
    let first_published = Instant::now();
    t.publish(&topic, Message::new("held")).await?;
    let held = next(&mut sub).await?;
    t.publish(&topic, Message::new("older")).await?;
    let older_published = Instant::now();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    t.publish(&topic, Message::new("newer")).await?;
    let exact = accuracy.waiting == Accuracy::Exact && accuracy.in_flight == Accuracy::Exact;
    // Taken before the reading: the older message had waited this long by then.
    let waited = older_published.elapsed();
    let b = settles(t, &topic, &options, "one held, two waiting", |b| {
        if exact {
            b.waiting == Some(2) && b.in_flight == Some(1)
        } else {
            left_is(b, 3, 1)
        }
    })
    .await?;
    if let Some(age) = b.oldest_waiting_age {
        let floor = waited.saturating_sub(Duration::from_secs(1));
        let ceiling = first_published.elapsed() + Duration::from_secs(1);
        ensure!(
            age >= floor && age <= ceiling,
            "oldest waiting age {age:?} with the older message waiting 2.5 s; expected between {floor:?} and {ceiling:?}"
        );
    }
    held.ack().await?;
    let got = receive_and_ack(&mut sub, 2).await?;
    let texts: Vec<&str> = got.iter().map(|r| r.text.as_str()).collect();
    let mut sorted = texts.clone();
    sorted.sort_unstable();
    ensure!(sorted == ["newer", "older"], "received {texts:?}");
    settles(t, &topic, &options, "after every message was settled", |b| {
        left_is(b, 0, 0)
    })
    .await?;
    expect_quiet(&mut sub, "after the last ack").await
}

/// The checks of this file, each with what it needs of the backend.
pub(crate) fn checks() -> Vec<Check> {
    vec![
        check!(backlog_tracks_the_group, |c| (c.backlog == Default::default())
            .then_some("the backend reads no backlog from the broker")),
        check!(backlog_tells_held_from_waiting, |c| (c.backlog == Default::default())
            .then_some("the backend reads no backlog from the broker")),
        check!(offline_group_catches_up),
        check!(replay_for_new_group, |c| (!c.replay).then_some(
            "the backend cannot replay retained messages to a new group (earliest_without_replay_refused proves it)"
        )),
        check!(close_and_reopen_continues),
    ]
}
