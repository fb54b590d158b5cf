//! Creating what a topic and a group need on the broker: the SNS topic, the
//! group's queue with its visibility timeout and redrive policy, the
//! subscription that fans the topic out to it, the dead-letter queue, and
//! the claim on a point-to-point queue. With `provision=false` nothing is
//! created or changed: each object is looked up, a queue's redrive policy
//! is checked, and what is missing is `NotFound` naming it.

use aws_sdk_sqs::types::QueueAttributeName;
use transport_core::backend::{not_provisioned, RawProvision};
use transport_core::{async_trait, Error, ErrorKind, Result, SubscribeOptions, Topology};

use crate::core::{err, map_sdk, secs, Sqs};
use crate::names;

/// What a call may do to the broker's objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Look up and check only (`provision=false`).
    Check,
    /// Create what is missing; leave what exists as it is (`provision`).
    CreateMissing,
    /// Create what is missing and set a queue's attributes to the
    /// subscription's on every subscribe (the default).
    CreateAndSet,
}

impl Mode {
    fn creates(self) -> bool {
        self != Mode::Check
    }
}

/// What a subscription reads and dead-letters into.
pub(crate) struct GroupQueues {
    pub(crate) queue_url: String,
    pub(crate) dlq_url: String,
}

impl Sqs {
    /// What a publish or subscribe may do: set by `provision`.
    pub(crate) fn mode(&self) -> Mode {
        if self.inner.config.provision {
            Mode::CreateAndSet
        } else {
            Mode::Check
        }
    }

    /// The queue of a topic in point-to-point mode.
    pub(crate) async fn topic_queue(&self, topic: &str) -> Result<String> {
        let name = names::topic_queue_name(&self.inner.config, topic);
        Ok(self.queue(&name, &self.fifo_attrs(), self.mode()).await?.0)
    }

    pub(crate) async fn topic_arn(&self, topic: &str) -> Result<String> {
        self.topic_arn_with(topic, self.mode().creates()).await
    }

    async fn topic_arn_with(&self, topic: &str, create: bool) -> Result<String> {
        if let Some(arn) = self.inner.topics.lock().unwrap_or_else(|e| e.into_inner()).get(topic) {
            return Ok(arn.clone());
        }
        let name = names::topic_name(&self.inner.config, topic);
        let arn = if create {
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
                    return Err(not_provisioned("SNS topic", &name));
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

    /// A queue's URL and ARN. A missing queue is created with `attrs`
    /// unless `mode` only checks; an existing one gets `attrs` set with
    /// `CreateAndSet`, and with `Check` its redrive policy must be the one
    /// in `attrs`.
    pub(crate) async fn queue(
        &self,
        name: &str,
        attrs: &[(QueueAttributeName, String)],
        mode: Mode,
    ) -> Result<(String, String)> {
        let create = mode.creates();
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
                if mode == Mode::CreateAndSet && !settable.is_empty() {
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
                if mapped.kind() == ErrorKind::NotFound && !create {
                    return Err(not_provisioned("SQS queue", name));
                }
                if mapped.kind() != ErrorKind::NotFound {
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
        let mut wanted = vec![QueueAttributeName::QueueArn];
        if !create {
            wanted.push(QueueAttributeName::RedrivePolicy);
        }
        let found = sqs
            .get_queue_attributes()
            .queue_url(&url)
            .set_attribute_names(Some(wanted))
            .send()
            .await
            .map_err(map_sdk)?;
        let found = found.attributes();
        let arn = found
            .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
            .unwrap_or_default();
        if !create {
            let expected = attrs.iter().find(|(k, _)| *k == QueueAttributeName::RedrivePolicy);
            if let Some((_, expected)) = expected {
                let actual = found.and_then(|a| a.get(&QueueAttributeName::RedrivePolicy));
                check_redrive(name, expected, actual.map(String::as_str))?;
            }
        }
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

    /// The queues of `options.group` on `topic` (and, fanning out, the
    /// subscription feeding its queue), created when `create`, otherwise
    /// checked.
    pub(crate) async fn group_queues(
        &self,
        topic: &str,
        options: &SubscribeOptions,
        mode: Mode,
    ) -> Result<GroupQueues> {
        let create = mode.creates();
        let c = &self.inner.config;
        let dlq_topic = options.dlq_topic(topic);
        let (dlq_url, dlq_arn) = self
            .queue(&names::dlq_queue_name(c, &dlq_topic), &self.fifo_attrs(), mode)
            .await?;
        let name = self.group_queue_name(topic, options);
        let attrs = self.group_queue_attrs(options, &dlq_arn);
        if self.point_to_point() {
            // Claimed before its attributes change: a refused group leaves
            // the owner's queue as it was.
            let (url, _) = self.queue(&name, &self.fifo_attrs(), mode).await?;
            self.claim_queue(&url, &options.group, create).await?;
        }
        let (queue_url, queue_arn) = self.queue(&name, &attrs, mode).await?;
        if !self.point_to_point() {
            let topic_arn = self.topic_arn_with(topic, create).await?;
            self.fan_out_to(&topic_arn, &queue_url, &queue_arn, mode).await?;
        }
        Ok(GroupQueues { queue_url, dlq_url })
    }

    fn group_queue_name(&self, topic: &str, options: &SubscribeOptions) -> String {
        let c = &self.inner.config;
        match self.point_to_point() {
            true => names::topic_queue_name(c, topic),
            false => names::group_queue_name(c, topic, &options.group),
        }
    }

    /// The group queue's visibility timeout and redrive policy.
    fn group_queue_attrs(&self, options: &SubscribeOptions, dlq_arn: &str) -> Vec<(QueueAttributeName, String)> {
        let mut attrs = self.fifo_attrs();
        attrs.push((
            QueueAttributeName::VisibilityTimeout,
            secs(options.ack_timeout).max(1).to_string(),
        ));
        // Native redrive one receive after the library's own limit: the
        // library dead-letters with headers first; the broker only catches
        // what no consumer of this library got to.
        attrs.push((QueueAttributeName::RedrivePolicy, redrive_policy(dlq_arn, options)));
        attrs
    }
}

fn redrive_policy(dlq_arn: &str, options: &SubscribeOptions) -> String {
    serde_json::json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": options.dead_letter.max_attempts + 1})
        .to_string()
}

/// Without provisioning, a group queue's redrive policy must lead to its
/// dead-letter queue, and not before the library's own limit: a broker
/// that dead-letters first would skip the library's headers, and no
/// redrive at all would leave poison messages to circle.
fn check_redrive(queue: &str, expected: &str, actual: Option<&str>) -> Result<()> {
    let parse = |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap_or_default();
    let expected = parse(expected);
    let Some(actual) = actual.map(parse) else {
        return Err(not_provisioned("redrive policy of SQS queue", queue));
    };
    let count = |v: &serde_json::Value| {
        v["maxReceiveCount"]
            .as_u64()
            .or_else(|| v["maxReceiveCount"].as_str().and_then(|s| s.parse().ok()))
    };
    if actual["deadLetterTargetArn"] != expected["deadLetterTargetArn"] || count(&actual) < count(&expected) {
        return Err(Error::invalid(format!(
            "SQS queue {queue} has redrive policy {actual}, expected {expected} (provision=false uses queues \
             as they are: fix it, or run `transport provision`)"
        )));
    }
    Ok(())
}

impl Sqs {
    /// Point-to-point: the queue belongs to the first group that subscribed
    /// (a queue tag); another group would silently split its messages, so
    /// it is refused. Without `create` the tag is only read.
    pub(crate) async fn claim_queue(&self, url: &str, group: &str, create: bool) -> Result<()> {
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
            None if !create => Ok(()),
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
    /// subscription): set on every subscribe with `CreateAndSet`, only when
    /// the subscription is missing with `CreateMissing` (the queue policy
    /// is replaced then); with `Check` the subscription must exist.
    async fn fan_out_to(&self, topic_arn: &str, queue_url: &str, queue_arn: &str, mode: Mode) -> Result<()> {
        match mode {
            Mode::Check => return self.check_subscription(topic_arn, queue_arn).await,
            Mode::CreateMissing => match self.check_subscription(topic_arn, queue_arn).await {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            },
            Mode::CreateAndSet => {}
        }
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
        Ok(())
    }

    /// The topic's subscription of `queue_arn`, with raw message delivery
    /// (without it SNS wraps every message in a JSON envelope).
    async fn check_subscription(&self, topic_arn: &str, queue_arn: &str) -> Result<()> {
        let what = || format!("of queue {queue_arn} to topic {topic_arn}");
        let mut next = None;
        let subscription = loop {
            let page = self
                .inner
                .sns
                .list_subscriptions_by_topic()
                .topic_arn(topic_arn)
                .set_next_token(next)
                .send()
                .await
                .map_err(map_sdk)?;
            let found = page
                .subscriptions()
                .iter()
                .find(|s| s.protocol() == Some("sqs") && s.endpoint() == Some(queue_arn))
                .and_then(|s| s.subscription_arn().map(str::to_owned));
            if let Some(arn) = found {
                break arn;
            }
            next = page.next_token().map(str::to_owned);
            if next.is_none() {
                return Err(not_provisioned("SNS subscription", &what()));
            }
        };
        let attributes = self
            .inner
            .sns
            .get_subscription_attributes()
            .subscription_arn(&subscription)
            .send()
            .await
            .map_err(map_sdk)?;
        let raw = attributes
            .attributes()
            .and_then(|a| a.get("RawMessageDelivery"))
            .is_some_and(|v| v == "true");
        if !raw {
            return Err(Error::invalid(format!(
                "the SNS subscription {} has no RawMessageDelivery=true: messages would arrive wrapped in \
                 SNS's JSON envelope",
                what()
            )));
        }
        Ok(())
    }
}

#[async_trait]
impl RawProvision for Sqs {
    fn topology(&self, topic: &str, group: Option<&SubscribeOptions>) -> Topology {
        let c = &self.inner.config;
        let fifo = if self.fifo() { "FIFO" } else { "standard" };
        let mut t = Topology::new();
        if self.point_to_point() {
            t = t.with("SQS queue", names::topic_queue_name(c, topic), fifo);
        } else {
            t = t.with("SNS topic", names::topic_name(c, topic), fifo);
        }
        let Some(options) = group else {
            return t;
        };
        let dlq = names::dlq_queue_name(c, &options.dlq_topic(topic));
        let queue = self.group_queue_name(topic, options);
        let settings = format!(
            "{fifo}, VisibilityTimeout={}, RedrivePolicy to {dlq} with maxReceiveCount={}",
            secs(options.ack_timeout).max(1),
            options.dead_letter.max_attempts + 1
        );
        t = t.with("SQS queue", dlq, fifo);
        if self.point_to_point() {
            return t.with("SQS queue", queue.clone(), settings).with(
                "queue tag",
                format!("{queue} {GROUP_TAG}"),
                options.group.clone(),
            );
        }
        t.with("SQS queue", queue.clone(), settings)
            .with("queue policy", queue.clone(), "lets the SNS topic send to it")
            .with(
                "SNS subscription",
                format!("{} -> {queue}", names::topic_name(c, topic)),
                "protocol sqs, RawMessageDelivery=true",
            )
    }

    async fn provision(&self, topic: &str, group: Option<&SubscribeOptions>) -> Result<Topology> {
        match group {
            Some(options) => {
                if self.point_to_point() {
                    let name = names::topic_queue_name(&self.inner.config, topic);
                    self.queue(&name, &self.fifo_attrs(), Mode::CreateMissing).await?;
                } else {
                    self.topic_arn_with(topic, true).await?;
                }
                self.group_queues(topic, options, Mode::CreateMissing).await?;
            }
            None if self.point_to_point() => {
                let name = names::topic_queue_name(&self.inner.config, topic);
                self.queue(&name, &self.fifo_attrs(), Mode::CreateMissing).await?;
            }
            None => {
                self.topic_arn_with(topic, true).await?;
            }
        }
        Ok(self.topology(topic, group))
    }
}
