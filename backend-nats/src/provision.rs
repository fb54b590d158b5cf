//! The streams behind topics (one JetStream stream per topic and per
//! dead-letter topic) and a group's durable pull consumer: created on first
//! use and remembered, or with `provision=false` looked up and checked,
//! never created.

use async_nats::jetstream::consumer::{self, PullConsumer};
use async_nats::jetstream::context::GetStreamErrorKind;
use async_nats::jetstream::stream;
use async_nats::jetstream::ErrorCode;
use transport_core::backend::{not_provisioned, RawProvision};
use transport_core::{async_trait, Error, Result, StartFrom, SubscribeOptions, Topology};

use crate::config::Storage;
use crate::core::{consumer_api, other, stream_api, Nats};
use crate::names;

impl Nats {
    pub(crate) fn stream_name(&self, topic: &str) -> String {
        names::stream(&self.inner.config, topic)
    }

    fn stream_config(&self, topic: &str) -> stream::Config {
        let c = &self.inner.config;
        stream::Config {
            name: self.stream_name(topic),
            subjects: vec![topic.to_owned()],
            storage: match c.storage {
                Storage::File => stream::StorageType::File,
                Storage::Memory => stream::StorageType::Memory,
            },
            num_replicas: c.replicas,
            max_age: c.max_age.unwrap_or_default(),
            duplicate_window: c.duplicate_window,
            ..Default::default()
        }
    }

    /// The topic's stream: created unless it exists (or, without
    /// provisioning, looked up and checked), then remembered.
    pub(crate) async fn ensure_stream(&self, topic: &str) -> Result<stream::Stream> {
        let s = if self.inner.config.provision {
            self.create_stream(topic).await?
        } else {
            self.existing_stream(topic).await?
        };
        self.inner
            .streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(self.stream_name(topic));
        Ok(s)
    }

    async fn create_stream(&self, topic: &str) -> Result<stream::Stream> {
        let config = self.stream_config(topic);
        let name = config.name.clone();
        let create = async { self.inner.js.get_or_create_stream(config).await.map_err(other) };
        self.refusable(stream_api(&name), create).await
    }

    /// The stream of `topic`, which must exist and take the topic's subject.
    async fn existing_stream(&self, topic: &str) -> Result<stream::Stream> {
        let name = self.stream_name(topic);
        let s = self
            .refusable(stream_api(&name), async { Ok(self.inner.js.get_stream(&name).await) })
            .await?;
        let s = match s {
            Ok(s) => s,
            Err(e) => match e.kind() {
                GetStreamErrorKind::JetStream(j) if j.error_code() == ErrorCode::STREAM_NOT_FOUND => {
                    return Err(not_provisioned("stream", &name));
                }
                _ => return Err(other(e)),
            },
        };
        let subjects = &s.cached_info().config.subjects;
        if !subjects.iter().any(|s| s == topic) {
            return Err(Error::invalid(format!(
                "stream {name} exists but does not take subject {topic} (it takes {subjects:?}); \
                 provision=false uses streams as they are, so fix or recreate it"
            )));
        }
        Ok(s)
    }

    /// The durable pull consumer of a group: created with the subscription's
    /// settings unless it exists, or without provisioning looked up and
    /// checked (its subject and explicit acks; its `ack_wait` is the one
    /// the server redelivers after).
    pub(crate) async fn ensure_consumer(
        &self,
        stream: &stream::Stream,
        topic: &str,
        options: &SubscribeOptions,
    ) -> Result<PullConsumer> {
        let stream_name = self.stream_name(topic);
        let durable = names::consumer(&options.group);
        self.refusable(
            consumer_api(&stream_name, &durable),
            self.consumer_of(stream, topic, options),
        )
        .await
    }

    async fn consumer_of(
        &self,
        stream: &stream::Stream,
        topic: &str,
        options: &SubscribeOptions,
    ) -> Result<PullConsumer> {
        let durable = names::consumer(&options.group);
        if self.inner.config.provision {
            return stream
                .get_or_create_consumer(&durable, consumer_config(topic, options))
                .await
                .map_err(other);
        }
        let info = stream.consumer_info(&durable).await.map_err(|e| {
            use async_nats::jetstream::context::ConsumerInfoErrorKind as K;
            match e.kind() {
                K::NotFound => not_provisioned(
                    "consumer",
                    &format!("{durable} of stream {}", stream.cached_info().config.name),
                ),
                _ => other(e),
            }
        })?;
        let c = &info.config;
        if c.ack_policy != consumer::AckPolicy::Explicit || c.filter_subject != topic {
            return Err(Error::invalid(format!(
                "consumer {durable} exists but is not a pull consumer of {topic} with explicit acks \
                 (filter {:?}, ack policy {:?}); provision=false uses consumers as they are",
                c.filter_subject, c.ack_policy
            )));
        }
        // A server limit below the library's own would stop redeliveries
        // before a message could be dead-lettered: it would stall unacked.
        let attempts = i64::from(options.dead_letter.max_attempts);
        if c.deliver_subject.is_some() || (c.max_deliver != -1 && c.max_deliver <= attempts) {
            return Err(Error::invalid(format!(
                "consumer {durable} exists but is a push consumer or stops redelivering after {} deliveries, \
                 at or below max_attempts {attempts}: the library dead-letters at max_attempts itself, so the \
                 consumer needs max_deliver -1 (or above it) and no deliver subject",
                c.max_deliver
            )));
        }
        if c.ack_wait != options.ack_timeout {
            tracing::warn!(
                consumer = %durable,
                "consumer {durable} redelivers after {:?} (its ack_wait), not the subscription's ack timeout {:?}",
                c.ack_wait,
                options.ack_timeout
            );
        }
        stream.get_consumer(&durable).await.map_err(other)
    }

    pub(crate) fn stream_known(&self, topic: &str) -> bool {
        let name = self.stream_name(topic);
        self.inner
            .streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&name)
    }

    pub(crate) fn forget_stream(&self, topic: &str) {
        let name = self.stream_name(topic);
        self.inner
            .streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&name);
    }
}

/// A group's durable pull consumer, as a subscription creates it.
fn consumer_config(topic: &str, options: &SubscribeOptions) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(names::consumer(&options.group)),
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
    }
}

fn describe_stream(config: &stream::Config) -> String {
    format!(
        "subject {}, {:?} storage, {} replica(s), duplicate window {:?}",
        config.subjects.join(","),
        config.storage,
        config.num_replicas,
        config.duplicate_window
    )
}

#[async_trait]
impl RawProvision for Nats {
    fn topology(&self, topic: &str, group: Option<&SubscribeOptions>) -> Topology {
        let main = self.stream_config(topic);
        let t = Topology::new().with("stream", main.name.clone(), describe_stream(&main));
        let Some(options) = group else {
            return t;
        };
        let c = consumer_config(topic, options);
        let dlq = self.stream_config(&options.dlq_topic(topic));
        t.with(
            "consumer",
            format!("{} of stream {}", names::consumer(&options.group), main.name),
            format!(
                "durable pull, explicit ack, ack_wait {:?}, deliver {:?}, filter {topic}",
                c.ack_wait, c.deliver_policy
            ),
        )
        .with("stream", dlq.name.clone(), describe_stream(&dlq))
    }

    async fn provision(&self, topic: &str, group: Option<&SubscribeOptions>) -> Result<Topology> {
        let stream = self.create_stream(topic).await?;
        if let Some(options) = group {
            stream
                .get_or_create_consumer(&names::consumer(&options.group), consumer_config(topic, options))
                .await
                .map_err(other)?;
            self.create_stream(&options.dlq_topic(topic)).await?;
        }
        Ok(self.topology(topic, group))
    }
}
