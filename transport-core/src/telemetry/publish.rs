//! What every publish reports, whichever way the transport was built: a
//! `publish <topic>` span (OpenTelemetry producer kind, messaging
//! attributes), `messaging.client.sent.messages` and
//! `messaging.client.operation.duration` per backend and topic, and with the
//! `otel` feature the current trace context written into each message.

use std::borrow::BorrowMut;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use metrics::{Key, Label, Level, Metadata};
use tracing::Instrument;

use super::names::*;
use crate::error::Result;
use crate::message::Message;
use crate::names::validate_topic;
use crate::operation::Operation;

/// Topics whose metric keys a transport keeps; a service publishing to
/// more (one topic per tenant, say) builds the keys of the others on
/// every publish instead of growing the map without bound.
const KEYED_TOPICS: usize = 1024;

/// What the `metrics` macros would pass with each key.
static METADATA: Metadata<'static> = Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// The metric keys of a transport's publishes, built once per topic.
///
/// The `metrics` macros build their key (a label vector and a copy of each
/// label) on every call, recorder or not: three copies of the labels per
/// key and two keys per publish were most of what a publish allocated.
/// A key built once is handed to whichever recorder is installed at the
/// time of each publish (global or local, installed before or after the
/// transport was made), so caching the keys changes nothing a recorder
/// sees, unlike caching the recorder's handles would.
#[derive(Debug, Default)]
pub(crate) struct PublishMetrics {
    topics: RwLock<HashMap<Box<str>, Arc<TopicKeys>>>,
}

/// One topic's keys, for `publish` and `publish_batch`.
#[derive(Debug)]
struct TopicKeys {
    duration: [Key; 2],
    sent: [Key; 2],
}

impl TopicKeys {
    fn new(backend: &'static str, topic: &str) -> Self {
        let key = |name: &'static str, op: Operation| {
            Key::from_parts(
                name,
                vec![
                    Label::from_static_parts(SYSTEM, backend),
                    Label::new(DESTINATION, topic.to_owned()),
                    Label::from_static_parts(OPERATION_NAME, op.as_str()),
                ],
            )
        };
        let ops = [Operation::Publish, Operation::PublishBatch];
        TopicKeys {
            duration: ops.map(|op| key(OPERATION_DURATION, op)),
            sent: ops.map(|op| key(SENT_MESSAGES, op)),
        }
    }

    fn slot(op: Operation) -> usize {
        match op {
            Operation::Publish => 0,
            Operation::PublishBatch => 1,
            other => unreachable!("{other} is not a publish"),
        }
    }
}

impl PublishMetrics {
    fn keys(&self, backend: &'static str, topic: &str) -> Arc<TopicKeys> {
        // A poisoned lock only means a panic elsewhere while inserting: the
        // map itself is still whole.
        if let Some(keys) = self.topics.read().unwrap_or_else(|e| e.into_inner()).get(topic) {
            return keys.clone();
        }
        let keys = Arc::new(TopicKeys::new(backend, topic));
        // A refused name (a publish that failed validation) is not kept.
        if validate_topic(topic).is_err() {
            return keys;
        }
        let mut topics = self.topics.write().unwrap_or_else(|e| e.into_inner());
        if topics.len() < KEYED_TOPICS {
            topics.entry(topic.into()).or_insert_with(|| keys.clone());
        }
        keys
    }
}

/// Run `send` (the backend's publish of `messages`) inside the publish span,
/// after writing the trace context into the messages, and record its
/// duration and outcome.
pub(crate) async fn traced<M, F, Fut>(
    publish_metrics: &PublishMetrics,
    backend: &'static str,
    op: Operation,
    topic: &str,
    mut messages: M,
    send: F,
) -> Result<()>
where
    M: BorrowMut<[Message]>,
    F: FnOnce(M) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let count = messages.borrow().len();
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
        messaging.message.id = messages.borrow().first().map(|m| m.id.as_str()).unwrap_or_default(),
        error.type = tracing::field::Empty,
    );
    async {
        // A message that already carries a trace context keeps it: that is
        // where it was created (OpenTelemetry's "creation context"), e.g.
        // the request that wrote it to an outbox the relay now publishes;
        // the consumer's span joins that trace.
        #[cfg(feature = "otel")]
        for m in messages
            .borrow_mut()
            .iter_mut()
            .filter(|m| !m.headers.contains(super::propagation::TRACEPARENT))
        {
            super::propagation::inject(&tracing::Span::current(), m);
        }
        #[cfg(not(feature = "otel"))]
        let _ = &mut messages;
        let start = Instant::now();
        let result = send(messages).await;
        let elapsed = start.elapsed().as_secs_f64();
        let keys = publish_metrics.keys(backend, topic);
        let slot = TopicKeys::slot(op);
        metrics::with_recorder(|recorder| {
            recorder
                .register_histogram(&keys.duration[slot], &METADATA)
                .record(elapsed);
            if let Err(e) = &result {
                // A low-cardinality identifier: `invalid_argument`, `timeout`, ...
                let kind = e.kind().as_str().replace(' ', "_");
                tracing::Span::current().record(ERROR_TYPE, kind.as_str());
                let failed = keys.sent[slot].with_extra_labels(vec![Label::new(ERROR_TYPE, kind)]);
                recorder.register_counter(&failed, &METADATA).increment(count as u64);
            } else {
                recorder
                    .register_counter(&keys.sent[slot], &METADATA)
                    .increment(count as u64);
            }
        });
        result
    }
    .instrument(span)
    .await
}
