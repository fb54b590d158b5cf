//! Events as contracts through the runtime: a typed router dispatches on
//! `ce-type` and major version, upcasts an older version in flight,
//! dead-letters data that breaks its schema (naming the field and rule), a
//! newer major version and a message that is no event, and skips a type it
//! was told to skip; the cancellation is Avro (a binary payload). On every
//! broker, because each carries the CloudEvents attributes in its own
//! binding (Kafka `ce_` headers, AMQP properties) and binary data its own
//! way (SQS in base64).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::json;
use transport_contracts::{Contract, EventType, Router, Unroutable};
use transport_core::runtime::{Context, HandlerError};
use transport_core::{Event, Message, Transport};

use super::*;
use crate::contracts::events::{OrderCancelled, OrderPlaced, OrderPlacedV1, Party};
use crate::support::*;
use crate::{ensure, Check};

const SOURCE: &str = "conformance/contracts";

/// An event written without the contract (as a foreign or older producer
/// would), so nothing checks it on the way out.
fn unchecked(case: &str, event_type: &str, version: &str, data: serde_json::Value) -> Result<Message, CheckFailure> {
    Ok(Event::new(event_type, SOURCE, data)
        .with_version(version)
        .to_message()?
        .with_header("case", case))
}

/// A v1 event in flight is upcast and reaches the v2 handler; a v2.3 event
/// with a field v2.0 does not know is read; each type reaches its own
/// handler; data breaking the v2 schema, a v3 event and a message without
/// `ce-type` are dead-lettered with reasons naming the field and rule, the
/// version, the missing attribute; a type the router skips is acked unread.
pub async fn runtime_routes_typed_events_by_type_and_version(t: &Arc<dyn Transport>) -> CheckResult {
    let options = opts("g").max_attempts(2);
    let (topic, consumer) = consumer(t, "contracts", &options, 4).await?;
    let v1 = Contract::<OrderPlacedV1>::new()?;
    let v2 = Contract::<OrderPlaced>::new()?;
    let cancelled = Contract::<OrderCancelled>::new()?;
    let old = v1.event(
        SOURCE,
        OrderPlacedV1 {
            order_id: "o-1".into(),
            amount: 12.5,
        },
    );
    let messages = vec![
        v1.to_message(&old)?.with_header("case", "v1"),
        unchecked(
            "v2.3",
            OrderPlaced::TYPE,
            "2.3",
            json!({"order_id": "o-2", "amount_cents": 700, "channel": "web"}),
        )?,
        cancelled
            .to_message(&cancelled.event(
                SOURCE,
                OrderCancelled {
                    order_id: "o-3".into(),
                    reason: Some("out of stock".into()),
                    by: Party { name: "support".into() },
                    customer: Party { name: "c-1".into() },
                },
            ))?
            .with_header("case", "cancelled"),
        unchecked(
            "invalid",
            OrderPlaced::TYPE,
            "2.0",
            json!({"order_id": "o-4", "amount_cents": -5}),
        )?,
        unchecked(
            "v3",
            OrderPlaced::TYPE,
            "3.0",
            json!({"order_id": "o-5", "total": {"cents": 5}}),
        )?,
        unchecked(
            "refunded",
            "conformance.order.refunded",
            "1.0",
            json!({"order_id": "o-6"}),
        )?,
        Message::new("not an event").with_header("case", "plain"),
    ];
    // Refused at publish: data breaking the v2 schema never leaves.
    let refused = v2.to_message(&v2.event(
        SOURCE,
        OrderPlaced {
            order_id: "o-7".into(),
            amount_cents: 0,
        },
    ));
    ensure!(
        matches!(&refused, Err(e) if e.kind() == transport_core::ErrorKind::InvalidArgument && e.to_string().contains("/amount_cents")),
        "publishing data that breaks the schema gave {refused:?}"
    );
    for m in messages {
        t.publish(&topic, m).await?;
    }

    let placed: Arc<Mutex<Vec<OrderPlaced>>> = Arc::default();
    let cancels: Arc<Mutex<Vec<String>>> = Arc::default();
    let router = Router::new()
        .route({
            let placed = placed.clone();
            move |_ctx: Context, order: OrderPlaced| {
                let placed = placed.clone();
                async move {
                    placed.lock().unwrap().push(order);
                    Ok::<_, HandlerError>(())
                }
            }
        })?
        .upcast::<OrderPlacedV1>()?
        .route({
            let cancels = cancels.clone();
            move |_ctx: Context, cancel: OrderCancelled| {
                let cancels = cancels.clone();
                async move {
                    cancels.lock().unwrap().push(cancel.order_id);
                    Ok::<_, HandlerError>(())
                }
            }
        })?
        .unknown_types(Unroutable::Skip);
    let (s, reached) = run_until(consumer, router, timing().receive, |s| {
        s.acked >= 4 && s.dead_lettered >= 3
    })
    .await?;
    ensure!(
        reached && s.acked == 4 && s.dead_lettered == 3 && s.retried == 0,
        "expected 4 acked (v1, v2.3, cancelled, refunded skipped) and 3 dead-lettered: {s:?}"
    );
    let mut placed = std::mem::take(&mut *placed.lock().unwrap());
    placed.sort_by(|a, b| a.order_id.cmp(&b.order_id));
    let want = vec![
        OrderPlaced {
            order_id: "o-1".into(),
            amount_cents: 1250,
        },
        OrderPlaced {
            order_id: "o-2".into(),
            amount_cents: 700,
        },
    ];
    ensure!(placed == want, "the v2 handler saw {placed:?}, expected {want:?}");
    let cancels = cancels.lock().unwrap().clone();
    ensure!(cancels == ["o-3"], "the cancellation handler saw {cancels:?}");

    dlq_depth(t.as_ref(), &topic, &options, 3).await?;
    let dlq = t.dead_letters(&topic, &options).await?;
    let reasons: HashMap<String, String> = dlq
        .peek(10)
        .await?
        .into_iter()
        .map(|d| {
            (
                d.message.headers.get("case").unwrap_or("").to_owned(),
                d.reason.clone().unwrap_or_default(),
            )
        })
        .collect();
    let expect = [
        (
            "invalid",
            "conformance.order.placed v2.0: field /amount_cents breaks `minimum`",
        ),
        ("v3", "conformance.order.placed 3.0: this consumer reads v1, v2 of it"),
        ("plain", "not a CloudEvent"),
    ];
    for (case, start) in expect {
        let reason = reasons.get(case).map(String::as_str).unwrap_or("(not dead-lettered)");
        ensure!(
            reason.starts_with(start),
            "the {case} event's dead-letter reason is {reason:?}, expected it to start with {start:?}"
        );
    }
    ensure!(
        !reasons["invalid"].contains("-5"),
        "the reason repeats the offending value: {:?}",
        reasons["invalid"]
    );
    dlq.purge().await?;
    Ok(())
}

pub(crate) fn checks() -> Vec<Check> {
    vec![check!(runtime_routes_typed_events_by_type_and_version, |c| (!c
        .dead_letter_ops)
        .then_some(NO_DLQ))]
}
