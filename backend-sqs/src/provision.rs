//! Creating what a topic and a group need on the broker: the SNS topic, the
//! group's queue with its visibility timeout and redrive policy, the
//! subscription that fans the topic out to it, the dead-letter queue, and
//! the claim on a point-to-point queue.

use aws_sdk_sqs::types::QueueAttributeName;
use transport_core::{ErrorKind, Result};

use crate::core::{err, map_sdk, Sqs};
use crate::names;

impl Sqs {
    /// The queue of a topic in point-to-point mode.
    pub(crate) async fn topic_queue(&self, topic: &str) -> Result<String> {
        let name = names::topic_queue_name(&self.inner.config, topic);
        Ok(self.queue(&name, &self.fifo_attrs()).await?.0)
    }

    pub(crate) async fn topic_arn(&self, topic: &str) -> Result<String> {
        if let Some(arn) = self.inner.topics.lock().unwrap_or_else(|e| e.into_inner()).get(topic) {
            return Ok(arn.clone());
        }
        let name = names::topic_name(&self.inner.config, topic);
        let arn = if self.inner.config.create {
            let mut req = self.inner.sns.create_topic().name(&name);
            if self.fifo() {
                req = req.attributes("FifoTopic", "true");
            }
            req.send()
                .await
                .map_err(map_sdk)?
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
                    .map_err(map_sdk)?;
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
    pub(crate) async fn queue(&self, name: &str, attrs: &[(QueueAttributeName, String)]) -> Result<(String, String)> {
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
                    req.send().await.map_err(map_sdk)?;
                }
                url
            }
            Err(e) => {
                let mapped = map_sdk(e);
                if mapped.kind() != ErrorKind::NotFound || !self.inner.config.create {
                    return Err(mapped);
                }
                let mut req = sqs.create_queue().queue_name(name);
                for (k, v) in attrs {
                    req = req.attributes(k.clone(), v);
                }
                req.send()
                    .await
                    .map_err(map_sdk)?
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
            .map_err(map_sdk)?
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

    pub(crate) fn fifo_attrs(&self) -> Vec<(QueueAttributeName, String)> {
        if self.fifo() {
            vec![(QueueAttributeName::FifoQueue, "true".into())]
        } else {
            Vec::new()
        }
    }
}

impl Sqs {
    /// Point-to-point: the queue belongs to the first group that subscribed
    /// (a queue tag); another group would silently split its messages, so
    /// it is refused.
    pub(crate) async fn claim_queue(&self, url: &str, group: &str) -> Result<()> {
        let tags = self
            .inner
            .sqs
            .list_queue_tags()
            .queue_url(url)
            .send()
            .await
            .map_err(map_sdk)?;
        match tags.tags().and_then(|t| t.get(GROUP_TAG)) {
            Some(owner) if owner == group => Ok(()),
            Some(owner) => Err(err(
                ErrorKind::Unsupported,
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
                .map_err(map_sdk),
        }
    }
}

/// Queue tag naming the group of a point-to-point queue.
pub(crate) const GROUP_TAG: &str = "transport-group";

impl Sqs {
    /// Let the SNS topic deliver to the group's queue (policy and raw
    /// subscription), when creating is allowed.
    pub(crate) async fn fan_out_to(&self, topic_arn: &str, queue_url: &str, queue_arn: &str) -> Result<()> {
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
                .map_err(map_sdk)?;
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
                .map_err(map_sdk)?;
        }
        Ok(())
    }
}
