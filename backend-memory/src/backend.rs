//! The in-memory transport: its public type, and the raw backend the core
//! wraps (its name, capabilities and close here; publishing, reading, the
//! dead-letter queue and the backlog each in its own file, the broker itself
//! in `core`, settling a delivery in `settle`).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use async_trait::async_trait;
use transport_core::backend::RawTransport;
use transport_core::{BacklogAccuracy, Capabilities, KeyOrdering, Operation, Result, Transport};

use crate::config::MemoryConfig;
use crate::core::Broker;
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

    /// After `close`, every operation is a final `Closed`, and an open
    /// subscription ends instead of waiting forever.
    #[tokio::test]
    async fn closed_transport_refuses() {
        use futures::StreamExt;
        use transport_core::{ErrorKind, Message, SubscribeOptions};
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
