//! Publishing: appended to the topic's log under its lock; a batch is
//! checked whole before any of it is stored.

use async_trait::async_trait;
use transport_core::backend::validate_topic;
use transport_core::{Error, Message, Publisher, Result};

use crate::backend::MemoryTransport;
use crate::SCHEME;

impl MemoryTransport {
    pub(crate) fn check_message(&self, message: &Message) -> Result<()> {
        message.validate()?;
        message.check_size(self.config.max_message_size)
    }
}

#[async_trait]
impl Publisher for MemoryTransport {
    async fn publish(&self, topic: &str, message: Message) -> Result<()> {
        let tag = |e: Error| e.with_backend(SCHEME).with_operation("publish");
        self.check_open("publish")?;
        validate_topic(topic).map_err(tag)?;
        self.check_message(&message).map_err(tag)?;
        self.broker.topic(topic).append([message], self.config.replay_window);
        Ok(())
    }

    async fn publish_batch(&self, topic: &str, messages: Vec<Message>) -> Result<()> {
        let tag = |e: Error| e.with_backend(SCHEME).with_operation("publish_batch");
        self.check_open("publish_batch")?;
        validate_topic(topic).map_err(tag)?;
        // All or nothing: check every message before storing any.
        for m in &messages {
            self.check_message(m).map_err(tag)?;
        }
        self.broker.topic(topic).append(messages, self.config.replay_window);
        Ok(())
    }
}
