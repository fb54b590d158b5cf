//! Publishing: appended to the topic's log under its lock; a batch is
//! checked whole before any of it is stored.

use async_trait::async_trait;
use transport_core::{Message, Publisher, Result};

use crate::backend::MemoryTransport;

impl MemoryTransport {
    /// Everything a publish checks before it reaches the broker.
    pub(crate) fn check_publish(&self, op: &'static str, topic: &str, messages: &[Message]) -> Result<()> {
        self.lifecycle
            .check_publish(op, topic, messages, self.config.max_message_size)?;
        Ok(())
    }
}

#[async_trait]
impl Publisher for MemoryTransport {
    async fn publish(&self, topic: &str, message: Message) -> Result<()> {
        self.check_publish("publish", topic, std::slice::from_ref(&message))?;
        self.broker.topic(topic).append([message], self.config.replay_window);
        Ok(())
    }

    async fn publish_batch(&self, topic: &str, messages: Vec<Message>) -> Result<()> {
        self.check_publish("publish_batch", topic, &messages)?;
        self.broker.topic(topic).append(messages, self.config.replay_window);
        Ok(())
    }
}
