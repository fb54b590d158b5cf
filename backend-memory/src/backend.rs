//! The in-memory transport: its public type, and the raw backend the core wraps,
//! which delegates to `publisher`, `subscriber` and `dead_letter_queue`
//! (the broker itself is `core`, settling a delivery `settle`).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use async_trait::async_trait;
use transport_core::backend::{Deliveries, RawTransport, SubscribeRequest};
use transport_core::{
    Backlog, BacklogAccuracy, Capabilities, DeadLetterQueue, KeyOrdering, Message, Operation, Result, SubscribeOptions,
    Transport,
};

use crate::config::MemoryConfig;
use crate::core::Broker;
use crate::dead_letter_queue::MemoryDeadLetters;
use crate::SCHEME;

/// A complete broker inside the process: groups, competing consumers,
/// per-key order, ack timeouts, nack delays, attempts and dead-letter queues.
/// Nothing survives the process.
///
/// Its constructors return the [`Transport`] every backend is, wrapped by
/// the core (validation, error context, telemetry): there is no other way
/// to have one.
#[derive(Debug)]
pub enum MemoryTransport {}

/// The raw backend: what the core's wrapper calls.
pub(crate) struct Memory {
    pub(crate) broker: Arc<Broker>,
    pub(crate) config: Arc<MemoryConfig>,
}

impl fmt::Debug for Memory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryTransport")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

pub(crate) fn named_brokers() -> &'static Mutex<HashMap<String, Weak<Broker>>> {
    static BROKERS: OnceLock<Mutex<HashMap<String, Weak<Broker>>>> = OnceLock::new();
    BROKERS.get_or_init(Default::default)
}

impl MemoryTransport {
    /// A private broker with default settings.
    #[allow(clippy::new_ret_no_self)]
    pub fn new() -> Arc<dyn Transport> {
        Self::with_config(MemoryConfig::default())
    }

    /// From a `memory://` URL (see [`MemoryConfig::from_url`]).
    pub fn from_url(url: &str) -> Result<Arc<dyn Transport>> {
        Ok(Self::with_config(MemoryConfig::from_url(url).map_err(|e| {
            e.with_backend(SCHEME).with_operation(Operation::Connect)
        })?))
    }

    /// From a configuration.
    pub fn with_config(config: MemoryConfig) -> Arc<dyn Transport> {
        let broker = match &config.name {
            None => Arc::new(Broker::default()),
            Some(name) => {
                let mut brokers = named_brokers().lock().unwrap_or_else(|e| e.into_inner());
                match brokers.get(name).and_then(Weak::upgrade) {
                    Some(b) => b,
                    None => {
                        let b = Arc::new(Broker::default());
                        brokers.insert(name.clone(), Arc::downgrade(&b));
                        b
                    }
                }
            }
        };
        transport_core::backend::transport(Memory {
            broker,
            config: Arc::new(config),
        })
    }
}

#[async_trait]
impl RawTransport for Memory {
    fn backend(&self) -> &'static str {
        SCHEME
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            extend: true,
            ordering: KeyOrdering::PerKey,
            ordering_across_nack: true,
            nack_delay: true,
            dead_letter_ops: true,
            first_failure_time: true,
            replay: true,
            ack_timeout_redelivery: true,
            max_message_size: Some(self.config.max_message_size),
            backlog: BacklogAccuracy::EXACT,
            ..Capabilities::default()
        }
    }

    async fn publish(&self, topic: &str, messages: Vec<Message>) -> Result<()> {
        self.store(topic, messages);
        Ok(())
    }

    async fn subscribe(&self, request: SubscribeRequest) -> Result<Deliveries> {
        Ok(self.read(request))
    }

    async fn dead_letters(&self, topic: &str, options: &SubscribeOptions) -> Result<Box<dyn DeadLetterQueue>> {
        Ok(Box::new(MemoryDeadLetters {
            broker: self.broker.clone(),
            name: options.dlq_topic(topic),
            replay_window: self.config.replay_window,
        }))
    }

    async fn backlog(&self, topic: &str, options: &SubscribeOptions) -> Result<Backlog> {
        let (waiting, in_flight, oldest) = self
            .broker
            .existing_topic(topic)
            .map_or((0, 0, None), |t| t.backlog(&options.group));
        let dead = self
            .broker
            .existing_topic(&options.dlq_topic(topic))
            .map_or(0, |q| q.len() as u64);
        Ok(Backlog::new(
            Some(waiting),
            Some(in_flight),
            Some(dead),
            Some(Backlog::waited_since(oldest)),
        ))
    }

    async fn close(&self) -> Result<()> {
        self.broker.notify_all();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the README's capability table says of this backend: declaring
    /// less would make the conformance suite skip the checks that prove it.
    #[test]
    fn declares_what_the_docs_say() {
        let c = MemoryTransport::new().capabilities();
        assert_eq!(MemoryTransport::new().backend(), SCHEME);
        assert_eq!(c.ordering, KeyOrdering::PerKey);
        assert!(c.ordering_across_nack && c.nack_delay && c.extend && c.replay);
        assert!(c.dead_letter_ops && c.first_failure_time && c.ack_timeout_redelivery);
        assert!(!c.single_group && !c.duplicates_possible && !c.durable && !c.publish_dedup);
        assert_eq!(c.max_message_size, Some(1024 * 1024));
    }

    /// Everything the group has left is counted once: a message waiting out
    /// a nack delay or held behind its key waits; only what a consumer
    /// holds is in flight; the oldest waiting age is the oldest message's.
    #[tokio::test]
    async fn backlog_counts_what_is_left() {
        use futures::StreamExt;
        use std::time::{Duration, Instant};
        use transport_core::Message;
        async fn next(sub: &mut transport_core::Subscription) -> transport_core::Delivery {
            tokio::time::timeout(Duration::from_secs(5), sub.next())
                .await
                .expect("a delivery within 5 s")
                .expect("open")
                .expect("delivery")
        }
        let t = MemoryTransport::new();
        let options = SubscribeOptions::new("g").max_in_flight(1);
        let mut sub = t.subscribe("left", options.clone()).await.unwrap();
        let published = Instant::now();
        t.publish("left", Message::new("a1").with_key("a")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        for m in [Message::new("a2").with_key("a"), Message::new("b1")] {
            t.publish("left", m).await.unwrap();
        }
        let figures = |b: Backlog| (b.waiting, b.in_flight, b.dead_letters);
        let b = t.backlog("left", &options).await.unwrap();
        assert_eq!(figures(b), (Some(3), Some(0), Some(0)));
        let age = b.oldest_waiting_age.unwrap();
        assert!(
            age >= Duration::from_millis(300) && age <= published.elapsed(),
            "oldest waiting age {age:?}: not the first message's"
        );

        let a1 = next(&mut sub).await;
        assert_eq!(a1.payload().as_ref(), b"a1");
        let b = t.backlog("left", &options).await.unwrap();
        assert_eq!(figures(b), (Some(2), Some(1), Some(0)), "one held, two waiting");
        // a2 and b1 were published 300 ms after a1, which is no longer waiting.
        let age = b.oldest_waiting_age.unwrap();
        let ceiling = published.elapsed().saturating_sub(Duration::from_millis(280));
        assert!(
            age <= ceiling,
            "oldest waiting age {age:?} counts the held message (at most {ceiling:?})"
        );

        // a1 waits out its delay, a2 waits behind it, b1 is handed out.
        a1.nack(Some(Duration::from_secs(30))).await.unwrap();
        let b1 = next(&mut sub).await;
        assert_eq!(b1.payload().as_ref(), b"b1");
        let b = t.backlog("left", &options).await.unwrap();
        assert_eq!(
            figures(b),
            (Some(2), Some(1), Some(0)),
            "delayed and blocked still wait"
        );
        let age = b.oldest_waiting_age.unwrap();
        assert!(
            age >= Duration::from_millis(300),
            "the delayed first message's age, got {age:?}"
        );
        b1.ack().await.unwrap();
        let b = t.backlog("left", &options).await.unwrap();
        assert_eq!(figures(b), (Some(2), Some(0), Some(0)));
    }

    /// After `close`, every operation is a final `Closed`, and an open
    /// subscription ends instead of waiting forever.
    #[tokio::test]
    async fn closed_transport_refuses() {
        use futures::StreamExt;
        use transport_core::{ErrorKind, Message};
        let t = MemoryTransport::new();
        let mut sub = t.subscribe("t", SubscribeOptions::new("g")).await.unwrap();
        t.close().await.unwrap();
        let e = t.publish("t", Message::new("x")).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Closed);
        assert!(!e.is_retryable());
        let e = t.subscribe("t", SubscribeOptions::new("g")).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Closed);
        let e = t.dead_letters("t", &SubscribeOptions::new("g")).await.err().unwrap();
        assert_eq!(e.kind(), ErrorKind::Closed);
        let end = tokio::time::timeout(std::time::Duration::from_secs(5), sub.next()).await;
        assert!(matches!(end, Ok(None)), "the subscription did not end: {end:?}");
    }
}
