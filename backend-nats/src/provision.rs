//! The streams behind topics: one JetStream stream per topic (and per
//! dead-letter topic), created on first use and remembered.

use async_nats::jetstream::stream;
use transport_core::Result;

use crate::config::Storage;
use crate::core::{other, Nats};
use crate::names;

impl Nats {
    pub(crate) fn stream_name(&self, topic: &str) -> String {
        names::stream(&self.inner.config, topic)
    }

    /// Create the topic's stream unless known to exist.
    pub(crate) async fn ensure_stream(&self, topic: &str) -> Result<stream::Stream> {
        let name = self.stream_name(topic);
        let c = &self.inner.config;
        let config = stream::Config {
            name: name.clone(),
            subjects: vec![topic.to_owned()],
            storage: match c.storage {
                Storage::File => stream::StorageType::File,
                Storage::Memory => stream::StorageType::Memory,
            },
            num_replicas: c.replicas,
            max_age: c.max_age.unwrap_or_default(),
            duplicate_window: c.duplicate_window,
            ..Default::default()
        };
        let s = self.inner.js.get_or_create_stream(config).await.map_err(other)?;
        self.inner
            .streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name);
        Ok(s)
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
