//! Publishing: appended to the topic's log under its lock (the core's
//! wrapper has checked the whole batch before).

use transport_core::backend::RawPublish;
use transport_core::{Message, Result};

use crate::backend::Memory;

impl RawPublish for Memory {
    async fn publish(&self, topic: &str, messages: Vec<Message>) -> Result<()> {
        self.broker.topic(topic).append(messages, self.config.replay_window);
        Ok(())
    }

    async fn publish_one(&self, topic: &str, message: Message) -> Result<()> {
        self.broker.topic(topic).append_one(message, self.config.replay_window);
        Ok(())
    }
}
