//! Topics on the broker: created on demand through the admin API with the
//! configured partitions and replication (or `NotFound` with
//! `provision=false`), and remembered once known. A consumer group is not
//! an object to create: the broker makes it when the first member joins.

use std::time::Duration;

use rdkafka::admin::{NewTopic, TopicReplication};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::Producer;
use transport_core::backend::{not_provisioned, RawProvision};
use transport_core::{async_trait, ErrorKind, Result, SubscribeOptions, Topology};

use crate::core::{self, err, kafka};
use crate::core::{blocking, Kafka};

impl Kafka {
    pub(crate) fn known(&self, topic: &str) -> bool {
        self.inner
            .topics
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(topic)
    }

    /// Make sure `topic` exists: create it (with `partitions`) when allowed,
    /// otherwise `NotFound` when missing.
    /// One metadata request bounded by the request timeout: a broker that
    /// stopped answering fails a subscribe here, in seconds, instead of
    /// after the whole group-join patience.
    pub(crate) async fn probe(&self, topic: &str) -> Result<()> {
        let t = self.clone();
        let name = topic.to_owned();
        let timeout = self.inner.config.request_timeout;
        blocking(move || {
            t.inner
                .producer
                .client()
                .fetch_metadata(Some(&name), timeout)
                .map(drop)
                .map_err(kafka)
        })
        .await
    }

    /// Make sure `topic` exists: created (with `partitions`) unless it
    /// exists, or with `provision=false` only looked up.
    pub(crate) async fn ensure_topic(&self, topic: &str, partitions: i32) -> Result<()> {
        if self.known(topic) {
            return Ok(());
        }
        self.topic(topic, partitions, self.inner.config.provision).await
    }

    async fn topic(&self, topic: &str, partitions: i32, create: bool) -> Result<()> {
        let c = &self.inner.config;
        if create {
            let min_insync = c.topic_min_insync().map(|n| n.to_string());
            let mut new = NewTopic::new(topic, partitions, TopicReplication::Fixed(c.replication));
            if let Some(n) = &min_insync {
                new = new.set("min.insync.replicas", n);
            }
            let options = core::admin_options(c);
            let results = self.inner.admin.create_topics([&new], &options).await.map_err(kafka)?;
            for r in results {
                match r {
                    Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                    Err((name, code)) => {
                        return Err(err(core::kind_of(code), format!("creating topic {name}: {code}")));
                    }
                }
            }
        }
        // Wait until the topic shows in metadata with its partitions, so a
        // consumer or producer started next finds it.
        let t = self.clone();
        let name = topic.to_owned();
        let timeout = c.request_timeout;
        blocking(move || {
            let deadline = std::time::Instant::now() + timeout;
            loop {
                let metadata = t
                    .inner
                    .producer
                    .client()
                    .fetch_metadata(Some(&name), timeout)
                    .map_err(kafka)?;
                let error = match metadata.topics().iter().find(|m| m.name() == name) {
                    Some(m) if m.error().is_none() && !m.partitions().is_empty() => return Ok(()),
                    Some(m) => m.error().map(RDKafkaErrorCode::from),
                    None => None,
                };
                let late = std::time::Instant::now() > deadline;
                match error {
                    // Missing: created above, so wait for it; or not ours to create.
                    None | Some(RDKafkaErrorCode::UnknownTopicOrPartition) if !create || late => {
                        return Err(not_provisioned("topic", &name));
                    }
                    None | Some(RDKafkaErrorCode::UnknownTopicOrPartition) => {}
                    // Refused, or not ready (a leader being elected): said as such.
                    Some(code) if !create || late || core::kind_of(code) != ErrorKind::Backend => {
                        let kind = core::kind_of(code);
                        // A topic error the broker gives no kind for (a
                        // leader being elected) passes: worth retrying.
                        let retry = kind == ErrorKind::Backend || kind.default_retryable();
                        return Err(err(kind, format!("topic {name}: {code}")).with_retryable(retry));
                    }
                    Some(_) => {}
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
        .await?;
        self.inner
            .topics
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(topic.to_owned());
        Ok(())
    }
}

#[async_trait]
impl RawProvision for Kafka {
    fn topology(&self, topic: &str, group: Option<&SubscribeOptions>) -> Topology {
        let c = &self.inner.config;
        let settings = |partitions: i32| {
            let mut s = format!("{partitions} partition(s), replication factor {}", c.replication);
            if let Some(n) = c.topic_min_insync() {
                s.push_str(&format!(", min.insync.replicas={n}"));
            }
            s
        };
        let t = Topology::new().with("topic", topic, settings(c.partitions));
        match group {
            None => t,
            Some(options) => t
                .with(
                    "consumer group",
                    c.group_id(topic, &options.group),
                    "made by the broker when the first member joins: nothing to create",
                )
                .with("topic", options.dlq_topic(topic), settings(c.dlq_partitions)),
        }
    }

    async fn provision(&self, topic: &str, group: Option<&SubscribeOptions>) -> Result<Topology> {
        let c = &self.inner.config;
        self.topic(topic, c.partitions, true).await?;
        if let Some(options) = group {
            self.topic(&options.dlq_topic(topic), c.dlq_partitions, true).await?;
        }
        Ok(self.topology(topic, group))
    }
}
