//! Reading a group (a durable pull consumer read in batches through the
//! toolkit's pull loop) and settling messages: `+ACK`, `-NAK` with delay,
//! dead-letter (a copy published to the dead-letter stream, then
//! `+ACK`), `+WPI` to extend.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, AckKind};
use async_trait::async_trait;
use futures::stream::StreamExt;
use transport_core::backend::{on_drop, pull_subscription, Fetch, InFlightLimit, Settler, StaleGuard};
use transport_core::{
    Delivery, DeliveryInfo, ErrorKind, Message, Result, StartFrom, SubscribeOptions, Subscriber, Subscription,
};

use crate::backend::{tag, NatsTransport};
use crate::core::{self, err, other};

/// How long one pull request waits for messages.
pub(crate) const PULL_EXPIRES: Duration = Duration::from_millis(500);

#[async_trait]
impl Subscriber for NatsTransport {
    async fn subscribe(&self, topic: &str, options: SubscribeOptions) -> Result<Subscription> {
        let op = "subscribe";
        self.check_open(op)?;
        options.validate(topic).map_err(tag(op))?;
        let stream = self.ensure_stream(topic, op).await?;
        let dlq_topic = options.dlq_topic(topic);
        self.ensure_stream(&dlq_topic, op).await?;
        let durable = core::escape(&options.group);
        let config = consumer::pull::Config {
            durable_name: Some(durable.clone()),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: options.ack_timeout,
            deliver_policy: match options.start {
                StartFrom::Earliest => consumer::DeliverPolicy::All,
                StartFrom::Latest => consumer::DeliverPolicy::New,
            },
            // The library enforces max attempts (dead-letter, not drop), and
            // max_in_flight per subscription; the server limits stay wide.
            max_deliver: -1,
            max_ack_pending: 20_000,
            filter_subject: topic.to_owned(),
            ..Default::default()
        };
        let consumer: consumer::PullConsumer = stream
            .get_or_create_consumer(&durable, config)
            .await
            .map_err(|e| other(op, e))?;
        let in_flight = Arc::new(InFlightLimit::new(options.max_in_flight));
        let shared = Arc::new(Shared {
            transport: self.clone(),
            stale: StaleGuard::new(),
            topic: Arc::from(topic),
            group: Arc::from(options.group.as_str()),
            dlq_topic,
            options: options.clone(),
            in_flight: in_flight.clone(),
        });
        let fetch = NatsFetch {
            shared,
            consumer,
            batch: None,
        };
        Ok(pull_subscription(
            topic,
            options.group,
            self.inner.lifecycle.clone(),
            in_flight,
            fetch,
        ))
    }
}

pub(crate) struct Shared {
    pub(crate) transport: NatsTransport,
    /// JetStream settles by stream sequence: a handle from before a
    /// redelivery would settle the redelivery. See `StaleGuard`.
    pub(crate) stale: StaleGuard,
    pub(crate) topic: Arc<str>,
    pub(crate) group: Arc<str>,
    pub(crate) dlq_topic: String,
    pub(crate) options: SubscribeOptions,
    pub(crate) in_flight: Arc<InFlightLimit>,
}

/// Reads with pull batches of at most the free in-flight slots, one
/// message at a time as they arrive.
pub(crate) struct NatsFetch {
    pub(crate) shared: Arc<Shared>,
    pub(crate) consumer: consumer::PullConsumer,
    pub(crate) batch: Option<consumer::pull::Batch>,
}

#[async_trait]
impl Fetch for NatsFetch {
    async fn fetch(&mut self, max: usize) -> Result<Vec<Delivery>> {
        let batch = match self.batch.as_mut() {
            Some(batch) => batch,
            None => {
                let batch = self
                    .consumer
                    .batch()
                    .max_messages(max)
                    .expires(PULL_EXPIRES)
                    .messages()
                    .await
                    .map_err(|e| other("receive", e))?;
                self.batch.insert(batch)
            }
        };
        match batch.next().await {
            None => {
                self.batch = None;
                Ok(Vec::new())
            }
            Some(Ok(msg)) => Ok(vec![self.delivery(msg)]),
            Some(Err(e)) => {
                self.batch = None;
                Err(other("receive", e))
            }
        }
    }
}

impl NatsFetch {
    fn delivery(&self, msg: jetstream::Message) -> Delivery {
        let s = &self.shared;
        let (attempt, sequence) = match msg.info() {
            Ok(info) => (info.delivered.max(1) as u32, Some(info.stream_sequence)),
            Err(_) => (1, None),
        };
        // A message from another producer without `transport-id`: its
        // stream sequence, as the dead-letter operations name it too.
        let sequence = sequence.map(|s| s.to_string()).unwrap_or_default();
        let message = core::decode(msg.headers.as_ref(), msg.payload.clone(), || sequence.clone());
        let info = DeliveryInfo {
            topic: s.topic.clone(),
            group: s.group.clone(),
            attempt,
            max_attempts: s.options.dead_letter.max_attempts,
            ack_timeout: s.options.ack_timeout,
            // JetStream keeps no failure time; the publish time bounds it.
            first_failure: None,
            stable_id: true,
        };
        let settler = NatsSettler {
            shared: s.clone(),
            msg: Some(msg),
        };
        let settler = s.stale.guard(&sequence, attempt, Box::new(settler));
        transport_core::backend::delivery(Arc::new(message), info, settler)
    }
}

pub(crate) struct NatsSettler {
    pub(crate) shared: Arc<Shared>,
    pub(crate) msg: Option<jetstream::Message>,
}

impl NatsSettler {
    fn take(&mut self) -> (Arc<Shared>, jetstream::Message) {
        let s = self.shared.clone();
        s.in_flight.release();
        (s, self.msg.take().expect("settled once"))
    }
}

#[async_trait]
impl Settler for NatsSettler {
    fn abandon(mut self: Box<Self>) {
        let _ = self.take();
    }

    async fn ack(mut self: Box<Self>) -> Result<()> {
        let (s, msg) = self.take();
        let r = if s.transport.inner.config.double_ack {
            msg.double_ack().await
        } else {
            msg.ack().await
        };
        r.map_err(|e| other("ack", e))
    }

    async fn nack(mut self: Box<Self>, delay: Option<Duration>) -> Result<()> {
        let (_, msg) = self.take();
        msg.ack_with(AckKind::Nak(delay.filter(|d| !d.is_zero())))
            .await
            .map_err(|e| other("nack", e))
    }

    async fn dead_letter(mut self: Box<Self>, dead: Message) -> Result<()> {
        let (s, msg) = self.take();
        // Store the copy first, then terminate the original: a crash in
        // between duplicates the message, it never loses it.
        if let Err(e) = s.transport.publish_one("dead_letter", &s.dlq_topic, &dead, false).await {
            let _ = msg.ack_with(AckKind::Nak(None)).await;
            return Err(e);
        }
        msg.ack_with(AckKind::Term).await.map_err(|e| other("dead_letter", e))
    }

    async fn extend(&self, _by: Duration) -> Result<()> {
        match &self.msg {
            Some(m) => m.ack_with(AckKind::Progress).await.map_err(|e| other("extend", e)),
            None => Err(err(ErrorKind::InvalidArgument, "extend", "delivery already settled")),
        }
    }
}

impl Drop for NatsSettler {
    fn drop(&mut self) {
        if self.msg.is_none() {
            return;
        }
        // Dropped unsettled: hand it back now rather than after ack_wait.
        let (_, msg) = self.take();
        on_drop(async move {
            let _ = msg.ack_with(AckKind::Nak(None)).await;
        });
    }
}
