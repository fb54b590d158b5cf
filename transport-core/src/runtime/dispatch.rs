//! One delivery's way once its turn has come: the service is called for it
//! (synchronously, right after the consumer saw the service ready), and
//! the call's future runs with the delivery's lease served, then the
//! outcome is settled in the one place that does.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::Service;
use tracing::Instrument;

use super::context::{with_cause, Context, Lease};
use super::handler::{outcome_of, BoxError};
use super::layers::catch_panic::panic_reason;
use super::stats::Counters;
use super::waiting::{unshare, OrderingKey, Parked};
use crate::capabilities::Capabilities;
use crate::delivery::Delivery;
use crate::settle::{Outcome, Settlement};
use crate::transport::Transport;

/// What every delivery of one consumer shares.
pub(super) struct Shared {
    pub transport: Arc<dyn Transport>,
    pub counters: Arc<Counters>,
    pub capabilities: Capabilities,
    pub shutdown: CancellationToken,
}

/// The handler call of a delivery: the future `call` returned, or the
/// panic of `call` itself.
type Call<F> = Result<F, Box<dyn Any + Send>>;

/// A delivery whose turn has come, started: its handler call made, its
/// settlement still to come ([`finish`]).
pub(super) struct Handling<F> {
    parked: Parked,
    /// The call, or why the service could not be called (it failed or
    /// panicked before it was ready).
    call: Result<Call<F>, BoxError>,
    span: tracing::Span,
}

/// Call `service` (already ready) for the delivery: its context, its span,
/// the call. Returns whether `service` may serve the next delivery: not
/// after its `call` panicked (tower's contract: such a service is
/// discarded).
pub(super) fn start<S>(shared: &Shared, service: &mut S, parked: Parked) -> (Handling<S::Future>, bool)
where
    S: Service<Context, Response = Outcome>,
{
    let delivery = &parked.delivery;
    let ctx = Context::new(
        delivery.shared_message(),
        delivery.info().clone(),
        Lease::of(delivery),
        shared.shutdown.clone(),
        shared.transport.clone(),
        shared.counters.clone(),
    );
    let span = process_span(shared, delivery);
    let call = span.in_scope(|| std::panic::catch_unwind(AssertUnwindSafe(|| service.call(ctx))));
    let reusable = call.is_ok();
    let handling = Handling {
        parked,
        call: Ok(call),
        span,
    };
    (handling, reusable)
}

/// A delivery that gets no call: the service failed before it was ready.
pub(super) fn not_ready<F>(parked: Parked, error: BoxError) -> Handling<F> {
    Handling {
        parked,
        call: Err(error),
        span: tracing::Span::none(),
    }
}

/// Run the started call, then settle its outcome. Returns `key`, the
/// delivery's ordering key, whose next delivery may then start, whatever
/// happened: `call` and its future are caught by [`settle_call`]'s own
/// net, and this one catches any other panic (the delivery is then
/// redelivered), so a key's line always moves on and the consumer keeps
/// running.
pub(super) async fn finish<F, E>(
    shared: Arc<Shared>,
    handling: Handling<F>,
    key: Option<OrderingKey>,
) -> Option<OrderingKey>
where
    F: Future<Output = Result<Outcome, E>>,
    E: Into<BoxError>,
{
    if AssertUnwindSafe(settle_call(&shared, handling))
        .catch_unwind()
        .await
        .is_err()
    {
        tracing::error!("handling a delivery panicked outside the handler; the delivery will be redelivered");
    }
    key
}

async fn settle_call<F, E>(shared: &Shared, handling: Handling<F>)
where
    F: Future<Output = Result<Outcome, E>>,
    E: Into<BoxError>,
{
    let Handling { parked, call, span } = handling;
    let Parked { delivery, since } = parked;
    let ack_timeout = delivery.info().ack_timeout;
    // Not called, and shutting down: leave it unsettled for redelivery, as
    // every delivery that had not started. (A call made before shutdown
    // runs to its end within the shutdown timeout, like every running one.)
    if call.is_err() && shared.shutdown.is_cancelled() {
        return;
    }
    renew(shared, &delivery, since).await;
    let outcome = match call {
        Err(e) => {
            tracing::error!(error = %e, "the consumer's service failed before handling a message");
            Outcome::retry(format!("the consumer's service failed: {e}"))
        }
        Ok(call) => {
            let cause = delivery.shared_message();
            let handled = async {
                match call {
                    Ok(future) => {
                        let future = future.map(|r| r.map_err(Into::<BoxError>::into));
                        AssertUnwindSafe(with_cause(cause, future)).catch_unwind().await
                    }
                    Err(panic) => Err(panic),
                }
            };
            let began = std::time::Instant::now();
            let held = handled.instrument(span).await;
            shared.counters.processed(began.elapsed());
            match held {
                Ok(result) => outcome_of(result),
                // The last safety net: a panic no layer caught (in `call`
                // itself or in its future) is a failure worth a retry, and
                // the consumer keeps running.
                Err(panic) => {
                    shared.counters.panicked();
                    Outcome::retry(panic_reason(panic.as_ref()))
                }
            }
        }
    };
    // Shared with the handler's lease until now; an extension still
    // running holds it for that one call.
    if let Some(delivery) = unshare(delivery, ack_timeout).await {
        settle(shared, delivery, outcome).await;
    }
}

/// The consumer's last extension of a waiting delivery may be up to half a
/// timeout old, and a lease layer extends half a timeout after the call
/// starts: together a whole one. A delivery that waited gets a fresh lease
/// before its call so it cannot expire in between.
async fn renew(shared: &Shared, delivery: &Delivery, since: Instant) {
    let ack_timeout = delivery.info().ack_timeout;
    if shared.capabilities.extend && since.elapsed() >= ack_timeout / 4 {
        if let Err(e) = delivery.extend(ack_timeout).await {
            tracing::warn!(id = delivery.id(), error = %e, "renewing the lease of a delivery that waited failed");
        }
    }
}

/// The handler call's span (OpenTelemetry consumer kind, messaging
/// attributes); with the `otel` feature its parent is the trace context
/// the message carries, so the call joins the publisher's trace.
fn process_span(shared: &Shared, delivery: &Delivery) -> tracing::Span {
    let info = delivery.info();
    let span = tracing::info_span!(
        "process",
        otel.name = format!("process {}", info.topic),
        otel.kind = "consumer",
        messaging.system = shared.transport.backend(),
        messaging.destination.name = &*info.topic,
        messaging.consumer.group.name = &*info.group,
        messaging.operation.type = "process",
        messaging.message.id = delivery.id(),
        messaging.message.delivery_attempt = info.attempt,
    );
    in_message_trace(span, delivery)
}

/// `span`, made (feature `otel`) a child of the trace context the message
/// carries, so the consumer's work joins the publisher's trace.
fn in_message_trace(span: tracing::Span, delivery: &Delivery) -> tracing::Span {
    #[cfg(feature = "otel")]
    if let Some(parent) = crate::telemetry::propagation::extract(delivery.message()) {
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        let _ = span.set_parent(parent);
    }
    #[cfg(not(feature = "otel"))]
    let _ = delivery;
    span
}

/// The settlement's span (`ack`, `nack` or `dead_letter`, operation type
/// `settle`), in the message's trace like the process span.
fn settle_span(shared: &Shared, delivery: &Delivery, outcome: &Outcome) -> tracing::Span {
    let info = delivery.info();
    let name = match outcome {
        Outcome::Ack => "ack",
        Outcome::Retry { .. } if !delivery.is_last_attempt() => "nack",
        _ => "dead_letter",
    };
    let span = tracing::info_span!(
        "settle",
        otel.name = format!("{name} {}", info.topic),
        otel.kind = "client",
        messaging.system = shared.transport.backend(),
        messaging.destination.name = &*info.topic,
        messaging.consumer.group.name = &*info.group,
        messaging.operation.type = "settle",
        messaging.operation.name = name,
        messaging.message.id = delivery.id(),
    );
    in_message_trace(span, delivery)
}

/// The runtime's one settlement: the outcome goes to
/// [`Delivery::settle`], which owns the "last attempt dead-letters" rule.
async fn settle(shared: &Shared, delivery: Delivery, outcome: Outcome) {
    let caps = &shared.capabilities;
    let outcome = match outcome {
        Outcome::Retry {
            delay: Some(delay),
            reason,
        } if !caps.nack_delay && !delivery.is_last_attempt() => {
            // The broker cannot delay a redelivery: hold the message for the
            // delay (within its ack timeout) and then hand it back.
            tokio::time::sleep(delay.min(delivery.info().ack_timeout / 2)).await;
            Outcome::Retry { delay: None, reason }
        }
        other => other,
    };
    // For the log lines after settling, which consumes the delivery: the
    // shared message, not a copy of its id.
    let message = delivery.shared_message();
    let id = message.id.as_str();
    let attempt = delivery.attempt();
    let reason = outcome.reason().map(str::to_owned);
    let counters = &shared.counters;
    let span = settle_span(shared, &delivery, &outcome);
    match delivery.settle(outcome).instrument(span).await {
        Ok(Settlement::Acked) => counters.acked(),
        Ok(Settlement::Retried) => {
            counters.retried();
            tracing::debug!(id, attempt, reason = reason.as_deref(), "retrying later");
        }
        Ok(Settlement::DeadLettered) => {
            counters.dead_lettered();
            tracing::warn!(id, attempt, reason = reason.as_deref(), "dead-lettered");
        }
        Err(e) => {
            counters.settle_error();
            tracing::warn!(id, error = %e, "settling failed; the message will be redelivered");
        }
    }
}
