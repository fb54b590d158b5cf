//! Checks of what operating a service relies on: the backlog a group reads
//! from the broker (lag, in flight, dead letters, oldest age), and
//! dead-letter operations on selected messages.

use std::sync::Arc;
use std::time::{Duration, Instant};

use transport_core::{Accuracy, Backlog, Message, Selection, SubscribeOptions, Transport};

use crate::checks::{dlq_depth, fresh, opts};
use crate::ensure;
use crate::support::*;

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
    let back = dlq
        .redrive(&Selection::all().reason_contains("timeout"))
        .await?;
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
