//! Reading a group: a durable pull consumer read in batches through the
//! toolkit's pull loop; each delivery is settled by `settle`.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use async_trait::async_trait;
use futures::stream::StreamExt;
use transport_core::backend::{
    pull_deliveries, Deliveries, Fetch, InFlightLimit, RawSubscribe, StaleGuard, SubscribeRequest,
};
use transport_core::{Delivery, Result};

use crate::core::{self, consumer_api, other, Nats};
use crate::names;
use crate::settle::{NatsSettler, Shared};

/// How long one pull request waits for messages.
pub(crate) const PULL_EXPIRES: Duration = Duration::from_millis(500);

#[async_trait]
impl RawSubscribe for Nats {
    async fn subscribe(&self, request: SubscribeRequest) -> Result<Deliveries> {
        let (topic, options) = (request.topic(), request.options());
        let stream = self.ensure_stream(topic).await?;
        let dlq_topic = request.dlq_topic();
        self.ensure_stream(&dlq_topic).await?;
        let consumer = self.ensure_consumer(&stream, topic, options).await?;
        let in_flight = Arc::new(InFlightLimit::new(options.max_in_flight));
        let shared = Arc::new(Shared {
            nats: self.clone(),
            stale: StaleGuard::new(),
            dlq_topic,
            in_flight: in_flight.clone(),
        });
        let fetch = NatsFetch {
            stream: self.stream_name(topic).into(),
            durable: names::consumer(&options.group).into(),
            shared,
            request: request.clone(),
            consumer,
            batch: None,
        };
        Ok(pull_deliveries(&request, in_flight, fetch))
    }
}

/// Reads with pull batches of at most the free in-flight slots, one
/// message at a time as they arrive.
pub(crate) struct NatsFetch {
    pub(crate) shared: Arc<Shared>,
    pub(crate) request: SubscribeRequest,
    pub(crate) consumer: consumer::PullConsumer,
    pub(crate) batch: Option<consumer::pull::Batch>,
    /// The consumer's stream and name, which its pulls' subject carries.
    pub(crate) stream: Arc<str>,
    pub(crate) durable: Arc<str>,
}

#[async_trait]
impl Fetch for NatsFetch {
    async fn fetch(&mut self, max: usize) -> Result<Vec<Delivery>> {
        // A pull the user may not make is refused on the connection, not
        // answered: without the violation the subscription would wait on.
        let nats = self.shared.nats.clone();
        let (stream, durable) = (self.stream.clone(), self.durable.clone());
        nats.refusable(consumer_api(&stream, &durable), self.fetch_batch(max))
            .await
    }
}

impl NatsFetch {
    async fn fetch_batch(&mut self, max: usize) -> Result<Vec<Delivery>> {
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
                    .map_err(other)?;
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
                Err(other(e))
            }
        }
    }

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
        // JetStream keeps no failure time; the publish time bounds it.
        let info = self.request.info(attempt, None);
        let settler = NatsSettler {
            shared: s.clone(),
            msg: Some(msg),
        };
        let settler = s.stale.guard(&sequence, attempt, Box::new(settler));
        transport_core::backend::delivery(Arc::new(message), info, settler)
    }
}
