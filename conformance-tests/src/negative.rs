//! Refusals: what a backend declares it does *not* have is proven too (the
//! operation must fail loudly with a typed, final error instead of quietly
//! doing something else, so a backend cannot pass by declaring a capability
//! away), and bad input (oversize messages, invalid names) is refused.

use std::sync::Arc;
use std::time::Duration;

use transport_core::{Error, ErrorKind, Message, StartFrom, Transport, MAX_NAME_LEN};

use crate::support::*;
use crate::{ensure, Check};

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

fn unsupported(what: &str, result: Result<(), Error>) -> CheckResult {
    match result {
        Ok(()) => Err(CheckFailure(format!(
            "{what} succeeded on a backend that declares it cannot do it"
        ))),
        Err(e) if e.kind() == ErrorKind::Unsupported && !e.is_retryable() => Ok(()),
        Err(e) => Err(CheckFailure(format!(
            "{what}: expected a final Unsupported error, got {e} (kind {:?}, retryable {})",
            e.kind(),
            e.is_retryable()
        ))),
    }
}

/// No replay: a new group asking for `StartFrom::Earliest` is refused with
/// `Unsupported` instead of silently starting at the latest message.
pub async fn earliest_without_replay_refused(t: &Arc<dyn Transport>) -> CheckResult {
    let t: &dyn Transport = t.as_ref();
    let topic = unique("noreplay");
    t.publish(&topic, Message::new("before the group")).await.ok();
    let result = t
        .subscribe(&topic, opts("g").start(StartFrom::Earliest))
        .await
        .map(drop);
    unsupported("subscribing with StartFrom::Earliest", result)
}

/// Point-to-point: a second group on a topic is refused with `Unsupported`
/// (it would silently split the first group's messages), and the first
/// group keeps working.
pub async fn second_group_refused(t: &Arc<dyn Transport>) -> CheckResult {
    let t: &dyn Transport = t.as_ref();
    let (topic, mut first) = fresh(t, "p2p", opts("one")).await?;
    let result = t.subscribe(&topic, opts("two")).await.map(drop);
    unsupported("a second group on a point-to-point topic", result)?;
    let m = Message::new("still one group");
    t.publish(&topic, m.clone()).await?;
    receive_exactly(&mut first, &m, "the first group").await
}

/// No dead-letter operations: opening or using the queue and an explicit
/// dead-letter are `Unsupported`, and an exhausted message does not come
/// back forever.
pub async fn dead_letters_unsupported(t: &Arc<dyn Transport>) -> CheckResult {
    let t: &dyn Transport = t.as_ref();
    let options = short("g").max_attempts(2);
    let (topic, mut sub) = fresh(t, "nodlq", options.clone()).await?;
    let opened = match t.dead_letters(&topic, &options).await {
        Err(e) => Err(e),
        Ok(dlq) => dlq.depth().await.map(drop),
    };
    unsupported("dead-letter queue depth", opened)?;
    let m = Message::new("cannot be dead-lettered");
    t.publish(&topic, m.clone()).await?;
    let d = next(&mut sub).await?;
    unsupported("an explicit dead-letter", d.dead_letter("no queue").await)?;
    // Whatever the backend does with an exhausted message, it must not
    // hand it out past max_attempts.
    let deadline = std::time::Instant::now() + timing().short_ack * 4 + timing().receive;
    while std::time::Instant::now() < deadline {
        match tokio::time::timeout(
            timing().short_ack * 2 + timing().quiet,
            futures::StreamExt::next(&mut sub),
        )
        .await
        {
            // Quiet: it stopped coming back.
            Err(_) => return Ok(()),
            Ok(None) => return Err(CheckFailure("the subscription ended".into())),
            Ok(Some(Err(e))) => return Err(CheckFailure(format!("receive failed: {e}"))),
            Ok(Some(Ok(d))) => {
                ensure!(
                    d.attempt() <= 2,
                    "attempt {} of a message allowed 2 attempts",
                    d.attempt()
                );
                let _ = d.nack(None).await;
            }
        }
    }
    Err(CheckFailure("the exhausted message kept coming back".into()))
}

/// No leases: `extend` is `Unsupported` (a runtime relying on it must know).
pub async fn extend_unsupported(t: &Arc<dyn Transport>) -> CheckResult {
    let t: &dyn Transport = t.as_ref();
    let (topic, mut sub) = fresh(t, "noextend", opts("g")).await?;
    t.publish(&topic, Message::new("x")).await?;
    let d = next(&mut sub).await?;
    unsupported("extend", d.extend(Duration::from_secs(1)).await)?;
    d.ack().await?;
    Ok(())
}

/// No delayed redelivery: `nack` with a delay is `Unsupported` rather than
/// an immediate redelivery that would turn backoff into a hot loop.
pub async fn nack_delay_unsupported(t: &Arc<dyn Transport>) -> CheckResult {
    let t: &dyn Transport = t.as_ref();
    let (topic, mut sub) = fresh(t, "nodelay", opts("g")).await?;
    t.publish(&topic, Message::new("x")).await?;
    let d = next(&mut sub).await?;
    unsupported("nack with a delay", d.nack(Some(Duration::from_secs(1))).await)?;
    Ok(())
}

/// Whether a backend's capabilities include one named capability.
pub type HasCapability = fn(&transport_core::Capabilities) -> bool;

/// Capability names `CONFORMANCE_REQUIRE` accepts, and what each means.
pub const CAPABILITY_NAMES: &[(&str, HasCapability)] = &[
    ("per_key_order", |c| c.ordered_per_key_single_consumer()),
    ("per_key_order_across_consumers", |c| c.ordered_per_key()),
    ("order_across_nack", |c| c.ordering_across_nack),
    ("nack_delay", |c| c.nack_delay),
    ("extend", |c| c.extend),
    ("ack_timeout_redelivery", |c| c.ack_timeout_redelivery),
    ("dead_letter_ops", |c| c.dead_letter_ops),
    ("native_dead_letter", |c| c.native_dead_letter),
    ("first_failure_time", |c| c.first_failure_time),
    ("replay", |c| c.replay),
    ("publish_dedup", |c| c.publish_dedup),
    ("no_duplicates", |c| !c.duplicates_possible),
    ("fan_out", |c| !c.single_group),
    ("durable", |c| c.durable),
    // Not booleans, so a backend could drop them silently: the size limit
    // the wrapper enforces, and a backlog read from the broker (the backlog
    // checks are skipped without one).
    ("size_limit", |c| c.max_message_size.is_some()),
    ("backlog", |c| c.backlog != transport_core::BacklogAccuracy::default()),
];

fn required() -> Vec<String> {
    std::env::var("CONFORMANCE_REQUIRE")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Skip reason of [`required_capabilities_declared`]: nothing required.
pub(crate) fn no_requirements(_: &transport_core::Capabilities) -> Option<&'static str> {
    required().is_empty().then_some("no CONFORMANCE_REQUIRE given")
}

/// The backend declares every capability `CONFORMANCE_REQUIRE` names
/// (comma-separated, see [`CAPABILITY_NAMES`]). A backend cannot pass by
/// declaring a capability away (its checks would be skipped), and a service
/// pins what it relies on: run with the capabilities your code needs.
pub async fn required_capabilities_declared(t: &Arc<dyn Transport>) -> CheckResult {
    let caps = t.capabilities();
    let mut missing = Vec::new();
    for name in required() {
        match CAPABILITY_NAMES.iter().find(|(n, _)| *n == name) {
            Some((_, has)) if has(&caps) => {}
            Some(_) => missing.push(name),
            None => {
                return Err(CheckFailure(format!(
                    "unknown capability {name:?} in CONFORMANCE_REQUIRE; known: {}",
                    CAPABILITY_NAMES.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                )))
            }
        }
    }
    ensure!(missing.is_empty(), "required but not declared: {}", missing.join(", "));
    Ok(())
}

/// The checks of this file, each with what it needs of the backend.
pub(crate) fn checks() -> Vec<Check> {
    vec![
        check!(required_capabilities_declared, no_requirements),
        check!(second_group_refused, |c| (!c.single_group)
            .then_some("topics fan out to every group (fan_out_two_groups proves it)")),
        check!(nack_delay_unsupported, |c| c.nack_delay.then_some(
            "the backend delays redeliveries (nack_delay_respected proves it)"
        )),
        check!(extend_unsupported, |c| c.extend.then_some(
            "the backend extends deliveries (extend_holds_delivery proves it)"
        )),
        check!(dead_letters_unsupported, |c| c.dead_letter_ops.then_some(
            "the backend has dead-letter operations (the dead-letter checks prove them)"
        )),
        check!(earliest_without_replay_refused, |c| c
            .replay
            .then_some("the backend replays (replay_for_new_group proves it)")),
        check!(oversize_rejected, |c| c.max_message_size.is_none().then_some(
            "no size limit declared (large_messages_without_limit probes it)"
        )),
        check!(invalid_names_rejected),
    ]
}
