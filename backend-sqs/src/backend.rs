//! The SQS + SNS transport: builder, publish, subscribe, settle and the
//! dead-letter operations.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use transport_core::backend::redrive_message;
use transport_core::backend::validate_topic;
use transport_core::backend::{pull_subscription, Fetch, InFlightLimit, Lifecycle, Settler};
use transport_core::headers::{DLQ_GROUP, REDRIVE_COUNT};
use transport_core::{
    Capabilities, DeadLetter, DeadLetterQueue, Delivery, DeliveryInfo, Error, ErrorKind, KeyOrdering, Message,
    Publisher, Redrive, Result, SubscribeOptions, Subscriber, Subscription, Transport,
};

use crate::config::SqsConfig;
use crate::core::{self, err, map_sdk, Wire};
use crate::deletes::{self, Deleter};
use crate::SCHEME;

/// Largest payload that fits 256 KiB even base64-encoded, with room for
/// the attributes.
const MAX_MESSAGE: usize = (core::WIRE_LIMIT - 8 * 1024) / 4 * 3;
/// Longest visibility timeout / nack delay SQS allows.
const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 3600);
/// Dead letters a peek or redrive looks at to find the oldest.
const DLQ_SCAN: usize = 1000;

/// Builds an [`SqsTransport`].
#[derive(Debug, Clone, Default)]
pub struct SqsBuilder {
    config: SqsConfig,
}

impl SqsBuilder {
    /// Region.
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.config.region = Some(region.into());
        self
    }
    /// Endpoint override (emulators, compatible services).
    pub fn endpoint(mut self, url: impl Into<String>) -> Self {
        self.config.endpoint = Some(url.into());
        self
    }
    /// Static credentials (otherwise the standard chain).
    pub fn credentials(mut self, access_key: impl Into<String>, secret_key: impl Into<transport_core::Secret>) -> Self {
        self.config.access_key = Some(access_key.into());
        self.config.secret_key = Some(secret_key.into());
        self
    }
    /// FIFO topics and queues.
    pub fn fifo(mut self, on: bool) -> Self {
        self.config.fifo = on;
        self
    }
    /// Create missing topics, queues and subscriptions (default on).
    pub fn create(mut self, on: bool) -> Self {
        self.config.create = on;
        self
    }
    /// Prefix of every topic and queue name.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.config.prefix = prefix.into();
        self
    }
    /// Long-poll wait of one receive (at most 20 s; zero is short polling).
    pub fn wait(mut self, wait: Duration) -> Self {
        self.config.wait = wait.min(Duration::from_secs(20));
        self
    }
    /// Point-to-point mode: a topic is one SQS queue, no SNS (see the crate docs).
    pub fn point_to_point(mut self, on: bool) -> Self {
        self.config.point_to_point = on;
        self
    }
    /// Connect.
    pub async fn connect(self) -> Result<SqsTransport> {
        SqsTransport::with_config(self.config).await
    }
}

/// An SQS + SNS transport (see the crate docs for the mapping).
#[derive(Clone)]
pub struct SqsTransport {
    inner: Arc<Inner>,
}

struct Inner {
    config: SqsConfig,
    sqs: aws_sdk_sqs::Client,
    sns: aws_sdk_sns::Client,
    topics: Mutex<HashMap<String, String>>,
    queues: Mutex<HashMap<String, (String, String)>>,
    lifecycle: Arc<Lifecycle>,
}

impl fmt::Debug for SqsTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqsTransport")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

fn tag(op: &'static str) -> impl Fn(Error) -> Error {
    move |e| e.with_backend(SCHEME).with_operation(op)
}

fn secs(d: Duration) -> i32 {
    d.min(MAX_VISIBILITY).as_secs_f64().ceil() as i32
}

fn sqs_attrs(w: &Wire) -> HashMap<String, aws_sdk_sqs::types::MessageAttributeValue> {
    w.attributes
        .iter()
        .filter_map(|(k, v)| {
            let value = aws_sdk_sqs::types::MessageAttributeValue::builder()
                .data_type("String")
                .string_value(v)
                .build()
                .ok()?;
            Some((k.clone(), value))
        })
        .collect()
}

fn sns_attrs(w: &Wire) -> HashMap<String, aws_sdk_sns::types::MessageAttributeValue> {
    w.attributes
        .iter()
        .filter_map(|(k, v)| {
            let value = aws_sdk_sns::types::MessageAttributeValue::builder()
                .data_type("String")
                .string_value(v)
                .build()
                .ok()?;
            Some((k.clone(), value))
        })
        .collect()
}

impl SqsTransport {
    /// A builder.
    pub fn builder() -> SqsBuilder {
        SqsBuilder::default()
    }

    /// Connect from an `sqs://` URL (see [`SqsConfig::from_url`]).
    pub async fn connect(url: &str) -> Result<Self> {
        Self::with_config(SqsConfig::from_url(url).map_err(tag("connect"))?).await
    }

    /// Connect with a configuration; checks the endpoint and credentials
    /// with one cheap call.
    pub async fn with_config(config: SqsConfig) -> Result<Self> {
        let sdk = config.sdk_config().await;
        let t = SqsTransport {
            inner: Arc::new(Inner {
                sqs: aws_sdk_sqs::Client::new(&sdk),
                sns: aws_sdk_sns::Client::new(&sdk),
                config,
                topics: Mutex::default(),
                queues: Mutex::default(),
                lifecycle: Arc::new(Lifecycle::new(SCHEME)),
            }),
        };
        t.inner
            .sqs
            .list_queues()
            .max_results(1)
            .send()
            .await
            .map_err(|e| map_sdk("connect", e))?;
        Ok(t)
    }

    fn check_open(&self, op: &'static str) -> Result<()> {
        self.inner.lifecycle.check(op)
    }

    fn fifo(&self) -> bool {
        self.inner.config.fifo
    }

    fn point_to_point(&self) -> bool {
        self.inner.config.point_to_point
    }

    /// The queue of a topic in point-to-point mode.
    async fn topic_queue(&self, topic: &str, op: &'static str) -> Result<String> {
        let name = core::topic_queue_name(&self.inner.config, topic);
        Ok(self.queue(&name, &self.fifo_attrs(), op).await?.0)
    }

    async fn topic_arn(&self, topic: &str, op: &'static str) -> Result<String> {
        if let Some(arn) = self.inner.topics.lock().unwrap_or_else(|e| e.into_inner()).get(topic) {
            return Ok(arn.clone());
        }
        let name = core::topic_name(&self.inner.config, topic);
        let arn = if self.inner.config.create {
            let mut req = self.inner.sns.create_topic().name(&name);
            if self.fifo() {
                req = req.attributes("FifoTopic", "true");
            }
            req.send()
                .await
                .map_err(|e| map_sdk(op, e))?
                .topic_arn()
                .unwrap_or_default()
                .to_owned()
        } else {
            let mut next = None;
            loop {
                let page = self
                    .inner
                    .sns
                    .list_topics()
                    .set_next_token(next)
                    .send()
                    .await
                    .map_err(|e| map_sdk(op, e))?;
                if let Some(arn) = page
                    .topics()
                    .iter()
                    .filter_map(|t| t.topic_arn())
                    .find(|a| a.rsplit(':').next() == Some(name.as_str()))
                {
                    break arn.to_owned();
                }
                next = page.next_token().map(str::to_owned);
                if next.is_none() {
                    return Err(err(
                        ErrorKind::NotFound,
                        op,
                        format!("SNS topic {name} does not exist (create=false)"),
                    ));
                }
            }
        };
        self.inner
            .topics
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(topic.to_owned(), arn.clone());
        Ok(arn)
    }

    /// A queue's URL and ARN, created with `attrs` when allowed and missing
    /// (an existing queue gets `attrs` set).
    async fn queue(
        &self,
        name: &str,
        attrs: &[(QueueAttributeName, String)],
        op: &'static str,
    ) -> Result<(String, String)> {
        // A cached queue is reused only for lookups: attributes (visibility
        // timeout, redrive policy) are set again by every caller that has some.
        let sets_attributes = attrs.iter().any(|(k, _)| *k != QueueAttributeName::FifoQueue);
        if !sets_attributes {
            if let Some(q) = self.inner.queues.lock().unwrap_or_else(|e| e.into_inner()).get(name) {
                return Ok(q.clone());
            }
        }
        let sqs = &self.inner.sqs;
        let existing = sqs.get_queue_url().queue_name(name).send().await;
        let url = match existing {
            Ok(out) => {
                let url = out.queue_url().unwrap_or_default().to_owned();
                let settable: Vec<_> = attrs
                    .iter()
                    .filter(|(k, _)| *k != QueueAttributeName::FifoQueue)
                    .collect();
                if !settable.is_empty() {
                    let mut req = sqs.set_queue_attributes().queue_url(&url);
                    for (k, v) in settable {
                        req = req.attributes(k.clone(), v);
                    }
                    req.send().await.map_err(|e| map_sdk(op, e))?;
                }
                url
            }
            Err(e) => {
                let mapped = map_sdk(op, e);
                if mapped.kind() != ErrorKind::NotFound || !self.inner.config.create {
                    return Err(mapped);
                }
                let mut req = sqs.create_queue().queue_name(name);
                for (k, v) in attrs {
                    req = req.attributes(k.clone(), v);
                }
                req.send()
                    .await
                    .map_err(|e| map_sdk(op, e))?
                    .queue_url()
                    .unwrap_or_default()
                    .to_owned()
            }
        };
        let arn = sqs
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(|e| map_sdk(op, e))?
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
            .unwrap_or_default();
        let q = (url, arn);
        self.inner
            .queues
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_owned(), q.clone());
        Ok(q)
    }

    fn fifo_attrs(&self) -> Vec<(QueueAttributeName, String)> {
        if self.fifo() {
            vec![(QueueAttributeName::FifoQueue, "true".into())]
        } else {
            Vec::new()
        }
    }

    fn wire(&self, m: &Message, extra: &[(&str, String)], op: &'static str) -> Result<Wire> {
        m.validate().map_err(tag(op))?;
        m.check_size(MAX_MESSAGE).map_err(tag(op))?;
        let w = core::encode(m, extra);
        if w.size() > core::WIRE_LIMIT {
            return Err(err(
                ErrorKind::MessageTooLarge,
                op,
                format!("message {} is {} bytes on the wire, SQS takes 256 KiB", m.id, w.size()),
            ));
        }
        Ok(w)
    }

    /// Send straight to a queue (dead letters, redrives).
    async fn send_to_queue(&self, url: &str, m: &Message, dedup: &str, op: &'static str) -> Result<()> {
        let w = self.wire(m, &[], op)?;
        let mut req = self
            .inner
            .sqs
            .send_message()
            .queue_url(url)
            .message_body(w.body.clone())
            .set_message_attributes(Some(sqs_attrs(&w)));
        if self.fifo() {
            req = req.message_group_id(core::group_id(m)).message_deduplication_id(dedup);
        }
        req.send().await.map_err(|e| map_sdk(op, e))?;
        Ok(())
    }
}

#[async_trait]
impl Publisher for SqsTransport {
    async fn publish(&self, topic: &str, message: Message) -> Result<()> {
        let op = "publish";
        self.check_open(op)?;
        validate_topic(topic).map_err(tag(op))?;
        if self.point_to_point() {
            let url = self.topic_queue(topic, op).await?;
            return self.send_to_queue(&url, &message, &message.id, op).await;
        }
        let w = self.wire(&message, &[], op)?;
        let arn = self.topic_arn(topic, op).await?;
        let mut req = self
            .inner
            .sns
            .publish()
            .topic_arn(arn)
            .message(w.body.clone())
            .set_message_attributes(Some(sns_attrs(&w)));
        if self.fifo() {
            req = req
                .message_group_id(core::group_id(&message))
                .message_deduplication_id(&message.id);
        }
        req.send().await.map_err(|e| map_sdk(op, e))?;
        Ok(())
    }

    async fn publish_batch(&self, topic: &str, messages: Vec<Message>) -> Result<()> {
        let op = "publish_batch";
        self.check_open(op)?;
        validate_topic(topic).map_err(tag(op))?;
        let wires = messages
            .iter()
            .map(|m| self.wire(m, &[], op))
            .collect::<Result<Vec<_>>>()?;
        if messages.is_empty() {
            return Ok(());
        }
        let target = match self.point_to_point() {
            true => Target::Queue(self.topic_queue(topic, op).await?),
            false => Target::Topic(self.topic_arn(topic, op).await?),
        };
        // Chunks of 10 (the SNS and SQS limit), in order; failed entries are
        // retried once, and what still fails is reported by id, never
        // dropped silently.
        for (chunk_m, chunk_w) in messages.chunks(10).zip(wires.chunks(10)) {
            let mut pending: Vec<usize> = (0..chunk_m.len()).collect();
            for round in 0..2 {
                let failed = match &target {
                    Target::Topic(arn) => self.sns_batch(arn, chunk_m, chunk_w, &pending, op).await?,
                    Target::Queue(url) => self.sqs_batch(url, chunk_m, chunk_w, &pending, op).await?,
                };
                if failed.is_empty() {
                    break;
                }
                if round == 1 {
                    let list: Vec<String> = failed
                        .iter()
                        .map(|(i, why)| format!("{} ({why})", chunk_m[*i].id))
                        .collect();
                    return Err(err(
                        ErrorKind::PartialFailure,
                        op,
                        format!("not published: {}", list.join(", ")),
                    ));
                }
                pending = failed.into_iter().map(|(i, _)| i).collect();
            }
        }
        Ok(())
    }
}

/// Where a batch goes.
enum Target {
    /// An SNS topic ARN (fan-out mode).
    Topic(String),
    /// An SQS queue URL (point-to-point mode).
    Queue(String),
}

impl SqsTransport {
    /// One `PublishBatch` of the `pending` entries of a chunk; the entries
    /// that failed, with why.
    async fn sns_batch(
        &self,
        arn: &str,
        messages: &[Message],
        wires: &[Wire],
        pending: &[usize],
        op: &'static str,
    ) -> Result<Vec<(usize, String)>> {
        let entries = pending
            .iter()
            .map(|&i| {
                let (m, w) = (&messages[i], &wires[i]);
                let mut e = aws_sdk_sns::types::PublishBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message(w.body.clone())
                    .set_message_attributes(Some(sns_attrs(w)));
                if self.fifo() {
                    e = e.message_group_id(core::group_id(m)).message_deduplication_id(&m.id);
                }
                e.build().map_err(|e| err(ErrorKind::InvalidArgument, op, e))
            })
            .collect::<Result<Vec<_>>>()?;
        let out = self
            .inner
            .sns
            .publish_batch()
            .topic_arn(arn)
            .set_publish_batch_request_entries(Some(entries))
            .send()
            .await
            .map_err(|e| map_sdk(op, e))?;
        Ok(out
            .failed()
            .iter()
            .filter_map(|f| {
                Some((
                    f.id().parse().ok()?,
                    format!("{}: {}", f.code(), f.message().unwrap_or("")),
                ))
            })
            .collect())
    }

    /// One `SendMessageBatch` of the `pending` entries of a chunk; the
    /// entries that failed, with why.
    async fn sqs_batch(
        &self,
        url: &str,
        messages: &[Message],
        wires: &[Wire],
        pending: &[usize],
        op: &'static str,
    ) -> Result<Vec<(usize, String)>> {
        let entries = pending
            .iter()
            .map(|&i| {
                let (m, w) = (&messages[i], &wires[i]);
                let mut e = aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(w.body.clone())
                    .set_message_attributes(Some(sqs_attrs(w)));
                if self.fifo() {
                    e = e.message_group_id(core::group_id(m)).message_deduplication_id(&m.id);
                }
                e.build().map_err(|e| err(ErrorKind::InvalidArgument, op, e))
            })
            .collect::<Result<Vec<_>>>()?;
        let out = self
            .inner
            .sqs
            .send_message_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| map_sdk(op, e))?;
        Ok(out
            .failed()
            .iter()
            .filter_map(|f| {
                Some((
                    f.id().parse().ok()?,
                    format!("{}: {}", f.code(), f.message().unwrap_or("")),
                ))
            })
            .collect())
    }

    /// Point-to-point: the queue belongs to the first group that subscribed
    /// (a queue tag); another group would silently split its messages, so
    /// it is refused.
    async fn claim_queue(&self, url: &str, group: &str, op: &'static str) -> Result<()> {
        let tags = self
            .inner
            .sqs
            .list_queue_tags()
            .queue_url(url)
            .send()
            .await
            .map_err(|e| map_sdk(op, e))?;
        match tags.tags().and_then(|t| t.get(GROUP_TAG)) {
            Some(owner) if owner == group => Ok(()),
            Some(owner) => Err(err(
                ErrorKind::Unsupported,
                op,
                format!(
                    "point-to-point mode: this topic's queue belongs to group {owner:?}; \
                     a second group would split its messages (use mode=topic for fan-out)"
                ),
            )),
            None => self
                .inner
                .sqs
                .tag_queue()
                .queue_url(url)
                .tags(GROUP_TAG, group)
                .send()
                .await
                .map(drop)
                .map_err(|e| map_sdk(op, e)),
        }
    }
}

/// Queue tag naming the group of a point-to-point queue.
const GROUP_TAG: &str = "transport-group";

struct Shared {
    transport: SqsTransport,
    topic: Arc<str>,
    group: Arc<str>,
    queue_url: String,
    dlq_url: String,
    options: SubscribeOptions,
    in_flight: Arc<InFlightLimit>,
    deleter: Deleter,
}

#[async_trait]
impl Subscriber for SqsTransport {
    async fn subscribe(&self, topic: &str, options: SubscribeOptions) -> Result<Subscription> {
        let op = "subscribe";
        self.check_open(op)?;
        options.validate(topic).map_err(tag(op))?;
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
struct SqsFetch(Arc<Shared>);

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

impl SqsTransport {
    /// Let the SNS topic deliver to the group's queue (policy and raw
    /// subscription), when creating is allowed.
    async fn fan_out_to(&self, topic_arn: &str, queue_url: &str, queue_arn: &str, op: &'static str) -> Result<()> {
        if self.inner.config.create {
            let policy = serde_json::json!({
                "Version": "2012-10-17",
                "Statement": [{
                    "Effect": "Allow",
                    "Principal": {"Service": "sns.amazonaws.com"},
                    "Action": "sqs:SendMessage",
                    "Resource": queue_arn,
                    "Condition": {"ArnEquals": {"aws:SourceArn": topic_arn}}
                }]
            });
            self.inner
                .sqs
                .set_queue_attributes()
                .queue_url(queue_url)
                .attributes(QueueAttributeName::Policy, policy.to_string())
                .send()
                .await
                .map_err(|e| map_sdk(op, e))?;
            self.inner
                .sns
                .subscribe()
                .topic_arn(topic_arn)
                .protocol("sqs")
                .endpoint(queue_arn)
                .attributes("RawMessageDelivery", "true")
                .return_subscription_arn(true)
                .send()
                .await
                .map_err(|e| map_sdk(op, e))?;
        }
        Ok(())
    }
}

fn attributes_of(m: &aws_sdk_sqs::types::Message) -> HashMap<String, String> {
    m.message_attributes()
        .map(|a| {
            a.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.string_value()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

fn system(m: &aws_sdk_sqs::types::Message, name: MessageSystemAttributeName) -> Option<u64> {
    m.attributes()?.get(&name)?.parse().ok()
}

fn delivery(s: &Arc<Shared>, m: aws_sdk_sqs::types::Message) -> Delivery {
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
    };
    let settler = SqsSettler {
        shared: s.clone(),
        receipt: m.receipt_handle().unwrap_or_default().to_owned(),
        settled: false,
    };
    transport_core::backend::delivery(Arc::new(message), info, Box::new(settler))
}

struct SqsSettler {
    shared: Arc<Shared>,
    receipt: String,
    settled: bool,
}

impl SqsSettler {
    fn begin(&mut self) -> (Arc<Shared>, String) {
        self.settled = true;
        self.shared.in_flight.release();
        (self.shared.clone(), std::mem::take(&mut self.receipt))
    }
}

/// Acks and dead-letters delete through the subscription's batcher.
async fn delete(s: &Shared, receipt: String, op: &'static str) -> Result<()> {
    s.deleter.delete(receipt, op).await
}

async fn set_visibility(s: &Shared, receipt: &str, d: Duration, op: &'static str) -> Result<()> {
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
        if let Ok(h) = tokio::runtime::Handle::try_current() {
            h.spawn(async move {
                let _ = set_visibility(&s, &r, Duration::ZERO, "nack").await;
            });
        }
    }
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// A group's dead-letter queue.
struct SqsDeadLetters {
    transport: SqsTransport,
    topic: String,
    queue_name: String,
}

impl SqsDeadLetters {
    async fn url(&self, op: &'static str) -> Result<String> {
        Ok(self
            .transport
            .queue(&self.queue_name, &self.transport.fifo_attrs(), op)
            .await?
            .0)
    }

    /// Receive (and hide) up to `DLQ_SCAN` messages, oldest first by
    /// `SentTimestamp`, since a standard queue hands them out in any order.
    async fn scan(&self, url: &str, op: &'static str) -> Result<Vec<aws_sdk_sqs::types::Message>> {
        let sqs = &self.transport.inner.sqs;
        let mut all = Vec::new();
        while all.len() < DLQ_SCAN {
            let out = sqs
                .receive_message()
                .queue_url(url)
                .max_number_of_messages(10)
                .visibility_timeout(60)
                .wait_time_seconds(if all.is_empty() { 1 } else { 0 })
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .message_attribute_names("All")
                .send()
                .await
                .map_err(|e| map_sdk(op, e))?;
            let got = out.messages.unwrap_or_default();
            if got.is_empty() {
                break;
            }
            all.extend(got);
        }
        all.sort_by_key(|m| system(m, MessageSystemAttributeName::SentTimestamp).unwrap_or(u64::MAX));
        Ok(all)
    }

    async fn release(&self, url: &str, messages: &[aws_sdk_sqs::types::Message]) {
        for m in messages {
            let _ = self
                .transport
                .inner
                .sqs
                .change_message_visibility()
                .queue_url(url)
                .receipt_handle(m.receipt_handle().unwrap_or_default())
                .visibility_timeout(0)
                .send()
                .await;
        }
    }
}

#[async_trait]
impl DeadLetterQueue for SqsDeadLetters {
    fn topic(&self) -> &str {
        &self.topic
    }

    async fn depth(&self) -> Result<u64> {
        let url = self.url("depth").await?;
        let out = self
            .transport
            .inner
            .sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .map_err(|e| map_sdk("depth", e))?;
        let a = out.attributes();
        let get = |k: QueueAttributeName| {
            a.and_then(|a| a.get(&k))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok(get(QueueAttributeName::ApproximateNumberOfMessages)
            + get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible))
    }

    async fn peek(&self, n: usize) -> Result<Vec<DeadLetter>> {
        let url = self.url("peek").await?;
        let all = self.scan(&url, "peek").await?;
        let out = all
            .iter()
            .take(n)
            .map(|m| {
                DeadLetter::from_message(core::decode(
                    m.body().unwrap_or(""),
                    &attributes_of(m),
                    m.message_id().unwrap_or(""),
                ))
            })
            .collect();
        self.release(&url, &all).await;
        Ok(out)
    }

    async fn redrive(&self, count: Redrive) -> Result<u64> {
        let op = "redrive";
        let url = self.url(op).await?;
        let all = self.scan(&url, op).await?;
        let take = usize::try_from(count.limit()).unwrap_or(usize::MAX).min(all.len());
        let mut moved = 0;
        let result = async {
            for m in &all[..take] {
                let dead = core::decode(m.body().unwrap_or(""), &attributes_of(m), m.message_id().unwrap_or(""));
                let (topic, message) = redrive_message(&dead).map_err(tag(op))?;
                validate_topic(&topic).map_err(tag(op))?;
                let dedup = format!("{}-r{}", message.id, message.headers.get(REDRIVE_COUNT).unwrap_or("1"));
                match dead.headers.get(DLQ_GROUP) {
                    // Straight into the failing group's queue: other groups never see it.
                    Some(group) => {
                        let c = &self.transport.inner.config;
                        let name = match c.point_to_point {
                            true => core::topic_queue_name(c, &topic),
                            false => core::group_queue_name(c, &topic, group),
                        };
                        let (target, _) = self.transport.queue(&name, &self.transport.fifo_attrs(), op).await?;
                        self.transport.send_to_queue(&target, &message, &dedup, op).await?;
                    }
                    None => self.transport.publish(&topic, message).await?,
                }
                self.transport
                    .inner
                    .sqs
                    .delete_message()
                    .queue_url(&url)
                    .receipt_handle(m.receipt_handle().unwrap_or_default())
                    .send()
                    .await
                    .map_err(|e| map_sdk(op, e))?;
                moved += 1;
            }
            Ok::<_, Error>(())
        }
        .await;
        self.release(&url, &all[moved..]).await;
        result.map(|()| moved as u64)
    }

    async fn purge(&self) -> Result<u64> {
        // Receive-and-delete rather than PurgeQueue: it reports how many,
        // and has no once-a-minute limit.
        let url = self.url("purge").await?;
        let all = self.scan(&url, "purge").await?;
        let receipts: Vec<&str> = all.iter().map(|m| m.receipt_handle().unwrap_or_default()).collect();
        deletes::delete_all(&self.transport.inner.sqs, &url, &receipts, "purge").await?;
        Ok(all.len() as u64)
    }
}

#[async_trait]
impl Transport for SqsTransport {
    fn backend(&self) -> &'static str {
        SCHEME
    }

    fn capabilities(&self) -> Capabilities {
        let fifo = self.fifo();
        Capabilities {
            extend: true,
            ordering: if fifo { KeyOrdering::PerKey } else { KeyOrdering::None },
            ordering_across_nack: fifo,
            nack_delay: true,
            max_nack_delay: Some(MAX_VISIBILITY),
            native_dead_letter: true,
            dead_letter_ops: true,
            ack_timeout_redelivery: true,
            publish_dedup: fifo,
            duplicates_possible: !fifo,
            durable: true,
            max_message_size: Some(MAX_MESSAGE),
            max_batch_size: Some(10),
            single_group: self.point_to_point(),
            ..Capabilities::default()
        }
    }

    async fn dead_letters(&self, topic: &str, options: &SubscribeOptions) -> Result<Box<dyn DeadLetterQueue>> {
        self.check_open("dead_letters")?;
        options.validate(topic).map_err(tag("dead_letters"))?;
        let name = options.dlq_topic(topic);
        Ok(Box::new(SqsDeadLetters {
            transport: self.clone(),
            queue_name: core::dlq_queue_name(&self.inner.config, &name),
            topic: name,
        }))
    }

    async fn close(&self) -> Result<()> {
        self.inner.lifecycle.close();
        Ok(())
    }
}
