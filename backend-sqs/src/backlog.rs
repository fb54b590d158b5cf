//! A group's backlog from its queue's approximate counts
//! (`GetQueueAttributes`): visible (and delayed) messages wait, messages
//! not visible are in flight (a nack with a delay hides a message, so it
//! counts here until it shows again). SQS settles these counts within about
//! a minute on AWS; the age of the oldest message is a CloudWatch metric,
//! not an SQS attribute.

use async_trait::async_trait;
use aws_sdk_sqs::types::QueueAttributeName as A;
use transport_core::backend::RawBacklog;
use transport_core::{Backlog, DeadLetterQueue, ErrorKind, Result, SubscribeOptions};

use crate::core::{map_sdk, Sqs};
use crate::dead_letter_queue::SqsDeadLetters;
use crate::names;

#[async_trait]
impl RawBacklog for Sqs {
    async fn backlog(&self, topic: &str, options: &SubscribeOptions) -> Result<Backlog> {
        let c = &self.inner.config;
        let dead = SqsDeadLetters::new(self, options.dlq_topic(topic)).depth().await?;
        let name = if c.point_to_point {
            names::topic_queue_name(c, topic)
        } else {
            names::group_queue_name(c, topic, &options.group)
        };
        let url = match self.inner.sqs.get_queue_url().queue_name(&name).send().await {
            Ok(out) => out.queue_url().unwrap_or_default().to_owned(),
            Err(e) => {
                let e = map_sdk(e);
                if e.kind() == ErrorKind::NotFound {
                    return Ok(Backlog::new(Some(0), Some(0), Some(dead), None));
                }
                return Err(e);
            }
        };
        let out = self
            .inner
            .sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(A::ApproximateNumberOfMessages)
            .attribute_names(A::ApproximateNumberOfMessagesDelayed)
            .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .map_err(map_sdk)?;
        let get = |k: A| {
            out.attributes()
                .and_then(|a| a.get(&k))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok(Backlog::new(
            Some(get(A::ApproximateNumberOfMessages) + get(A::ApproximateNumberOfMessagesDelayed)),
            Some(get(A::ApproximateNumberOfMessagesNotVisible)),
            Some(dead),
            None,
        ))
    }
}
