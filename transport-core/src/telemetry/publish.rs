//! What every publish reports, whichever way the transport was built: a
//! `publish <topic>` span (OpenTelemetry producer kind, messaging
//! attributes), `messaging.client.sent.messages` and
//! `messaging.client.operation.duration` per backend and topic, and with the
//! `otel` feature the current trace context written into each message.

use std::future::Future;
use std::time::Instant;

use tracing::Instrument;

use super::names::*;
use crate::error::Result;
use crate::message::Message;
use crate::operation::Operation;

/// Run `send` (the backend's publish of `messages`) inside the publish span,
/// after writing the trace context into the messages, and record its
/// duration and outcome.
pub(crate) async fn traced<F, Fut>(
    backend: &'static str,
    op: Operation,
    topic: &str,
    mut messages: Vec<Message>,
    send: F,
) -> Result<()>
where
    F: FnOnce(Vec<Message>) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let count = messages.len();
    // The field values are only evaluated when a subscriber wants the span.
    let span = tracing::info_span!(
        "publish",
        otel.name = format!("{op} {topic}"),
        otel.kind = "producer",
        messaging.system = backend,
        messaging.destination.name = topic,
        messaging.operation.name = op.as_str(),
        messaging.operation.type = "send",
        messaging.batch.message_count = count,
        messaging.message.id = messages.first().map(|m| m.id.as_str()).unwrap_or_default(),
        error.type = tracing::field::Empty,
    );
    async {
        // A message that already carries a trace context keeps it: that is
        // where it was created (OpenTelemetry's "creation context"), e.g.
        // the request that wrote it to an outbox the relay now publishes;
        // the consumer's span joins that trace.
        #[cfg(feature = "otel")]
        for m in messages
            .iter_mut()
            .filter(|m| !m.headers.contains(super::propagation::TRACEPARENT))
        {
            super::propagation::inject(&tracing::Span::current(), m);
        }
        #[cfg(not(feature = "otel"))]
        let _ = &mut messages;
        let start = Instant::now();
        let result = send(messages).await;
        let labels = [
            (SYSTEM, backend.to_owned()),
            (DESTINATION, topic.to_owned()),
            (OPERATION_NAME, op.as_str().to_owned()),
        ];
        metrics::histogram!(OPERATION_DURATION, &labels).record(start.elapsed().as_secs_f64());
        match &result {
            Ok(()) => metrics::counter!(SENT_MESSAGES, &labels).increment(count as u64),
            Err(e) => {
                // A low-cardinality identifier: `invalid_argument`, `timeout`, ...
                let kind = e.kind().as_str().replace(' ', "_");
                tracing::Span::current().record(ERROR_TYPE, kind.as_str());
                let mut failed = labels.to_vec();
                failed.push((ERROR_TYPE, kind));
                metrics::counter!(SENT_MESSAGES, &failed).increment(count as u64);
            }
        }
        result
    }
    .instrument(span)
    .await
}
