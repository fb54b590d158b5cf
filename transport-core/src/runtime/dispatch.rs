//! One delivery's way through a worker, once its turn has come: wait for
//! the service's readiness while keeping its lease, call the service, and
//! settle the outcome in the one place that does.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::{Service, ServiceExt};
use tracing::Instrument;

use super::context::{with_cause, Context, Lease, LeaseRequest};
use super::handler::{outcome_of, BoxError};
use super::layers::catch_panic::panic_reason;
use super::stats::Counters;
use crate::capabilities::Capabilities;
use crate::delivery::Delivery;
use crate::settle::{Outcome, Settlement};
use crate::transport::Transport;

/// What the workers of one consumer share.
pub(super) struct Shared {
    pub transport: Arc<dyn Transport>,
    pub counters: Arc<Counters>,
    pub capabilities: Capabilities,
    pub shutdown: CancellationToken,
}

/// Handle one delivery that may start (its key's turn has come and a
/// worker is free), which the consumer took at `since`. Returns whether
/// `service` may serve the next delivery: not after its readiness failed
/// or its `call` panicked (tower's contract: such a service is discarded).
pub(super) async fn process<S>(shared: &Shared, service: &mut S, delivery: Delivery, since: Instant) -> bool
where
    S: Service<Context, Response = Outcome> + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    // Taken just as shutdown began: leave it unsettled for redelivery, as
    // every delivery that had not started.
    if shared.shutdown.is_cancelled() {
        return true;
    }
    let ack_timeout = delivery.info().ack_timeout;
    let (lease, mut requests) = Lease::channel(ack_timeout);
    // While the delivery waits for the service (a breaker holding calls)
    // nobody works on it, so its lease is kept here; while the handler runs,
    // extending is the handler's (or the lease layer's) decision, so a hung
    // handler is not held forever.
    let heartbeat = shared.capabilities.extend.then_some(ack_timeout / 2);
    // The consumer's last extension of a waiting delivery may be up to half
    // a timeout old; a wait for the service or a lease layer may add half a
    // timeout before the next: together a whole one. A fresh lease before
    // either keeps a delivery that waited from expiring.
    let renew = |since: Instant| {
        let delivery = &delivery;
        async move {
            if heartbeat.is_some() && since.elapsed() >= ack_timeout / 4 {
                if let Err(e) = delivery.extend(ack_timeout).await {
                    tracing::warn!(id = delivery.id(), error = %e, "renewing the lease of a delivery that waited failed");
                }
            }
        }
    };

    // Most of the time the service is ready at once: no lease keeping, no
    // timer for that.
    let at_once = ServiceExt::<Context>::ready(&mut *service)
        .now_or_never()
        .map(|ready| ready.map(drop).map_err(Into::<BoxError>::into));
    let ready = match at_once {
        Some(ready) => {
            renew(since).await;
            Some(ready)
        }
        None => {
            renew(since).await;
            let held_from = Instant::now();
            let service = &mut *service;
            let shutdown = &shared.shutdown;
            let waiting = async move {
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => None,
                    ready = ServiceExt::<Context>::ready(service) => {
                        Some(ready.map(drop).map_err(Into::<BoxError>::into))
                    }
                }
            };
            let ready = hold(&delivery, &mut requests, heartbeat, waiting).await;
            // The heartbeat's last extension may be up to half a timeout old.
            renew(held_from).await;
            ready
        }
    };
    let reusable;
    let outcome = match ready {
        // Shutting down before the handler started: leave it unsettled, the
        // broker hands it out again.
        None => return true,
        Some(Err(e)) => {
            tracing::error!(error = %e, "the consumer's service failed before handling a message");
            reusable = false;
            Outcome::retry(format!("the consumer's service failed: {e}"))
        }
        Some(Ok(())) => {
            let ctx = Context::new(
                delivery.shared_message(),
                delivery.info().clone(),
                lease,
                shared.shutdown.clone(),
                shared.transport.clone(),
                shared.counters.clone(),
            );
            let cause = delivery.shared_message();
            let span = process_span(shared, &delivery);
            let started = std::time::Instant::now();
            // The last safety net: a panic no layer caught (in `call` itself
            // or in its future) is a failure worth a retry, and the consumer
            // keeps running.
            let call = span.in_scope(|| std::panic::catch_unwind(AssertUnwindSafe(|| service.call(ctx))));
            reusable = call.is_ok();
            let handled = async {
                match call {
                    Ok(future) => {
                        let future = future.map(|r| r.map_err(Into::<BoxError>::into));
                        AssertUnwindSafe(with_cause(cause, future)).catch_unwind().await
                    }
                    Err(panic) => Err(panic),
                }
            };
            let held = hold(&delivery, &mut requests, None, handled).instrument(span).await;
            shared.counters.processed(started.elapsed());
            match held {
                Ok(result) => outcome_of(result),
                Err(panic) => {
                    shared.counters.panicked();
                    Outcome::retry(panic_reason(panic.as_ref()))
                }
            }
        }
    };
    settle(shared, delivery, outcome).await;
    reusable
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

/// Run `work` while serving the delivery's lease: extension requests from
/// the handler, and a heartbeat every `heartbeat` when given.
async fn hold<T>(
    delivery: &Delivery,
    requests: &mut mpsc::Receiver<LeaseRequest>,
    heartbeat: Option<Duration>,
    work: impl std::future::Future<Output = T>,
) -> T {
    tokio::pin!(work);
    // A sleep pinned here rather than an `Interval` (which boxes its
    // sleep): this runs for every delivery's call.
    let period = heartbeat.unwrap_or(Duration::from_secs(3600));
    let beat = tokio::time::sleep(period);
    tokio::pin!(beat);
    let mut listening = true;
    loop {
        tokio::select! {
            biased;
            out = &mut work => return out,
            request = requests.recv(), if listening => match request {
                Some(LeaseRequest { by, reply }) => {
                    let _ = reply.send(delivery.extend(by).await);
                }
                None => listening = false,
            },
            _ = &mut beat, if heartbeat.is_some() => {
                beat.as_mut().reset(tokio::time::Instant::now() + period);
                if let Err(e) = delivery.extend(delivery.info().ack_timeout).await {
                    tracing::warn!(id = delivery.id(), error = %e, "keeping a waiting delivery's lease failed; it may be redelivered");
                }
            }
        }
    }
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
