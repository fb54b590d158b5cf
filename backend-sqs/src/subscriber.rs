//! Reading a group's queue: long-polling `ReceiveMessage` through the
//! toolkit's pull loop; each delivery is settled by `settle`.

use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_sqs::types::MessageSystemAttributeName;
use transport_core::backend::{
    pull_deliveries, Deliveries, Fetch, InFlightLimit, RawSubscribe, StaleGuard, SubscribeRequest,
};
use transport_core::{Delivery, Result};

use crate::core::{self, map_sdk, secs, Sqs};
use crate::deletes::Deleter;
use crate::provision::GroupQueues;
use crate::settle::{Shared, SqsSettler};

#[async_trait]
impl RawSubscribe for Sqs {
    async fn subscribe(&self, request: SubscribeRequest) -> Result<Deliveries> {
        let (topic, options) = (request.topic(), request.options());
        let GroupQueues { queue_url, dlq_url } = self.group_queues(topic, options, self.mode()).await?;
        let in_flight = Arc::new(InFlightLimit::new(options.max_in_flight));
        let shared = Arc::new(Shared {
            sqs: self.clone(),
            stale: StaleGuard::new(),
            deleter: Deleter::start(self.inner.sqs.clone(), queue_url.clone()),
            queue_url,
            dlq_url,
            in_flight: in_flight.clone(),
        });
        let fetch = SqsFetch {
            shared,
            request: request.clone(),
        };
        Ok(pull_deliveries(&request, in_flight, fetch))
    }
}

/// One long-polling `ReceiveMessage` of at most 10 (SQS's limit).
struct SqsFetch {
    shared: Arc<Shared>,
    request: SubscribeRequest,
}

#[async_trait]
impl Fetch for SqsFetch {
    async fn fetch(&mut self, max: usize) -> Result<Vec<Delivery>> {
        let s = &self.shared;
        let out = s
            .sqs
            .inner
            .sqs
            .receive_message()
            .queue_url(&s.queue_url)
            .max_number_of_messages(max.min(10) as i32)
            .wait_time_seconds(s.sqs.inner.config.wait.as_secs() as i32)
            // The subscription's ack timeout, whatever the queue's default
            // (which provision=false leaves as the operator set it).
            .visibility_timeout(secs(self.request.options().ack_timeout).max(1))
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .customize()
            .config_override(receive_timeouts(&s.sqs.inner.config))
            .send()
            .await
            .map_err(map_sdk)?;
        Ok(out
            .messages
            .unwrap_or_default()
            .into_iter()
            .map(|m| delivery(s, &self.request, m))
            .collect())
    }
}

fn delivery(s: &Arc<Shared>, request: &SubscribeRequest, m: aws_sdk_sqs::types::Message) -> Delivery {
    let message = core::decode_received(&m);
    let attempt = core::system(&m, MessageSystemAttributeName::ApproximateReceiveCount)
        .unwrap_or(1)
        .max(1) as u32;
    let info = request.info(attempt, None);
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
