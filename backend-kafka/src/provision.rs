//! Topics on the broker: created on demand through the admin API with the
//! configured partitions and replication (or `NotFound` when creating is
//! off), and remembered once known.

use std::time::Duration;

use rdkafka::admin::{NewTopic, TopicReplication};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::Producer;
use transport_core::{ErrorKind, Result};

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

    pub(crate) async fn ensure_topic(&self, topic: &str, partitions: i32) -> Result<()> {
        if self.known(topic) {
            return Ok(());
        }
        let c = &self.inner.config;
        if c.create_topics {
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
        let create = c.create_topics;
        let timeout = c.request_timeout;
        blocking(move || {
            let deadline = std::time::Instant::now() + timeout;
            loop {
                let found = t
                    .inner
                    .producer
                    .client()
                    .fetch_metadata(Some(&name), timeout)
                    .map_err(kafka)?
                    .topics()
                    .iter()
                    .any(|m| m.name() == name && m.error().is_none() && !m.partitions().is_empty());
                if found {
                    return Ok(());
                }
                if !create || std::time::Instant::now() > deadline {
                    return Err(err(
                        ErrorKind::NotFound,
                        format!("topic {name} does not exist (and creating topics is off)"),
                    ));
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
