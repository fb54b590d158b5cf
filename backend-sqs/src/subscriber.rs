//! Reading a group's queue (long-polling `ReceiveMessage` through the
//! toolkit's pull loop) and settling deliveries (batched deletes, visibility
//! changes, dead-lettering).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use transport_core::backend::{on_drop, pull_subscription, Fetch, InFlightLimit, Settler, StaleGuard};
use transport_core::{Delivery, DeliveryInfo, Message, Result, SubscribeOptions, Subscriber, Subscription};

use crate::backend::{secs, tag, SqsTransport};
use crate::core::{self, map_sdk};
use crate::deletes::Deleter;

pub(crate) struct Shared {
    pub(crate) transport: SqsTransport,
    /// SQS deletes by message whatever the receipt handle's age: a handle
    /// from before a redelivery would delete the redelivery. See `StaleGuard`.
    pub(crate) stale: StaleGuard,
    pub(crate) topic: Arc<str>,
    pub(crate) group: Arc<str>,
    pub(crate) queue_url: String,
    pub(crate) dlq_url: String,
    pub(crate) options: SubscribeOptions,
    pub(crate) in_flight: Arc<InFlightLimit>,
    pub(crate) deleter: Deleter,
}

#[async_trait]
impl Subscriber for SqsTransport {
    async fn subscribe(&self, topic: &str, options: SubscribeOptions) -> Result<Subscription> {
        let op = "subscribe";
        self.check_open(op)?;
        options.validate(topic).map_err(tag(op))?;
        transport_core::backend::refuse_replay(&options).map_err(tag(op))?;
        let c = &self.inner.config;
        let dlq_topic = options.dlq_topic(topic);
        let (dlq_url, dlq_arn) = self
            .queue(&core::dlq_queue_name(c, &dlq_topic), &self.fifo_attrs(), op)
            .await?;
        let name = match self.point_to_point() {
            true => core::topic_queue_name(c, topic),
            false => core::group_queue_name(c, topic, &options.group),
        };
        let mut attrs = self.fifo_attrs();
        attrs.push((
            QueueAttributeName::VisibilityTimeout,
            secs(options.ack_timeout).max(1).to_string(),
        ));
        // Native redrive one receive after the library's own limit: the
        // library dead-letters with headers first; the broker only catches
        // what no consumer of this library got to.
        attrs.push((
            QueueAttributeName::RedrivePolicy,
            serde_json::json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": options.dead_letter.max_attempts + 1})
                .to_string(),
        ));
        if self.point_to_point() && c.create {
            // Claimed before its attributes change: a refused group leaves
            // the owner's queue as it was.
            let (url, _) = self.queue(&name, &self.fifo_attrs(), op).await?;
            self.claim_queue(&url, &options.group, op).await?;
        }
        let (queue_url, queue_arn) = self.queue(&name, &attrs, op).await?;
        if !self.point_to_point() {
            let topic_arn = self.topic_arn(topic, op).await?;
            self.fan_out_to(&topic_arn, &queue_url, &queue_arn, op).await?;
        }
        let in_flight = Arc::new(InFlightLimit::new(options.max_in_flight));
        let shared = Arc::new(Shared {
            transport: self.clone(),
            stale: StaleGuard::new(),
            topic: Arc::from(topic),
            group: Arc::from(options.group.as_str()),
            deleter: Deleter::start(self.inner.sqs.clone(), queue_url.clone()),
            queue_url,
            dlq_url,
            in_flight: in_flight.clone(),
            options: options.clone(),
        });
        Ok(pull_subscription(
            topic,
            options.group,
            self.inner.lifecycle.clone(),
            in_flight,
            SqsFetch(shared),
        ))
    }
}

/// One long-polling `ReceiveMessage` of at most 10 (SQS's limit).
pub(crate) struct SqsFetch(Arc<Shared>);

#[async_trait]
impl Fetch for SqsFetch {
    async fn fetch(&mut self, max: usize) -> Result<Vec<Delivery>> {
        let s = &self.0;
        let out = s
            .transport
            .inner
            .sqs
            .receive_message()
            .queue_url(&s.queue_url)
            .max_number_of_messages(max.min(10) as i32)
            .wait_time_seconds(s.transport.inner.config.wait.as_secs() as i32)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .customize()
            .config_override(receive_timeouts(&s.transport.inner.config))
            .send()
            .await
            .map_err(|e| map_sdk("receive", e))?;
        Ok(out
            .messages
            .unwrap_or_default()
            .into_iter()
            .map(|m| delivery(s, m))
            .collect())
    }
}

pub(crate) fn attributes_of(m: &aws_sdk_sqs::types::Message) -> HashMap<String, String> {
    m.message_attributes()
        .map(|a| {
            a.iter()
                // String and Number attributes as their text; a foreign
                // producer's Binary attribute in the lossless `base64:`
                // form (text bytes stay text).
                .filter_map(|(k, v)| {
                    let text = match (v.string_value(), v.binary_value()) {
                        (Some(text), _) => text.to_owned(),
                        (None, Some(bytes)) => transport_core::headers::header_text(bytes.as_ref()).into_owned(),
                        (None, None) => return None,
                    };
                    Some((k.clone(), text))
                })
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) fn system(m: &aws_sdk_sqs::types::Message, name: MessageSystemAttributeName) -> Option<u64> {
    m.attributes()?.get(&name)?.parse().ok()
}

pub(crate) fn delivery(s: &Arc<Shared>, m: aws_sdk_sqs::types::Message) -> Delivery {
    let message = core::decode(m.body().unwrap_or(""), &attributes_of(&m), m.message_id().unwrap_or(""));
    let attempt = system(&m, MessageSystemAttributeName::ApproximateReceiveCount)
        .unwrap_or(1)
        .max(1) as u32;
    let info = DeliveryInfo {
        topic: s.topic.clone(),
        group: s.group.clone(),
        attempt,
        max_attempts: s.options.dead_letter.max_attempts,
        ack_timeout: s.options.ack_timeout,
        first_failure: None,
        stable_id: true,
    };
    let settler = SqsSettler {
        shared: s.clone(),
        receipt: m.receipt_handle().unwrap_or_default().to_owned(),
        settled: false,
    };
    let settler = s
        .stale
        .guard(m.message_id().unwrap_or_default(), attempt, Box::new(settler));
    transport_core::backend::delivery(Arc::new(message), info, settler)
}

pub(crate) struct SqsSettler {
    pub(crate) shared: Arc<Shared>,
    pub(crate) receipt: String,
    pub(crate) settled: bool,
}

impl SqsSettler {
    fn begin(&mut self) -> (Arc<Shared>, String) {
        self.settled = true;
        self.shared.in_flight.release();
        (self.shared.clone(), std::mem::take(&mut self.receipt))
    }
}

/// Acks and dead-letters delete through the subscription's batcher.
pub(crate) async fn delete(s: &Shared, receipt: String, op: &'static str) -> Result<()> {
    s.deleter.delete(receipt, op).await
}

pub(crate) async fn set_visibility(s: &Shared, receipt: &str, d: Duration, op: &'static str) -> Result<()> {
    s.transport
        .inner
        .sqs
        .change_message_visibility()
        .queue_url(&s.queue_url)
        .receipt_handle(receipt)
        .visibility_timeout(secs(d))
        .send()
        .await
        .map(drop)
        .map_err(|e| map_sdk(op, e))
}

#[async_trait]
impl Settler for SqsSettler {
    fn abandon(mut self: Box<Self>) {
        self.begin();
    }

    async fn ack(mut self: Box<Self>) -> Result<()> {
        let (s, r) = self.begin();
        delete(&s, r, "ack").await
    }

    async fn nack(mut self: Box<Self>, delay: Option<Duration>) -> Result<()> {
        let (s, r) = self.begin();
        set_visibility(&s, &r, delay.unwrap_or_default(), "nack").await
    }

    async fn dead_letter(mut self: Box<Self>, dead: Message) -> Result<()> {
        let (s, r) = self.begin();
        let dedup = format!("{}-dlq-{}", dead.id, now_ms());
        // Stored first, then deleted: a crash in between duplicates, never loses.
        s.transport
            .send_to_queue(&s.dlq_url, &dead, &dedup, "dead_letter")
            .await?;
        delete(&s, r, "dead_letter").await
    }

    async fn extend(&self, by: Duration) -> Result<()> {
        set_visibility(&self.shared, &self.receipt, by, "extend").await
    }
}

impl Drop for SqsSettler {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let (s, r) = self.begin();
        on_drop(async move {
            let _ = set_visibility(&s, &r, Duration::ZERO, "nack").await;
        });
    }
}

pub(crate) fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// A receive long-polls for `wait` before answering: its time limit is the
/// request timeout on top of that, so `request_timeout_ms` can stay short.
fn receive_timeouts(c: &crate::config::SqsConfig) -> aws_sdk_sqs::config::Builder {
    let limit = c.wait + c.request_timeout;
    aws_sdk_sqs::config::Builder::default().timeout_config(
        aws_sdk_sqs::config::timeout::TimeoutConfig::builder()
            .operation_attempt_timeout(limit)
            .operation_timeout(limit)
            .build(),
    )
}
