//! Publishing: appended to the topic's log under its lock (the core's
//! wrapper has checked the whole batch before).

use async_trait::async_trait;
use transport_core::backend::RawPublish;
use transport_core::{Message, Result};

use crate::backend::Memory;

#[async_trait]
impl RawPublish for Memory {
    async fn publish(&self, topic: &str, messages: Vec<Message>) -> Result<()> {
        self.broker.topic(topic).append(messages, self.config.replay_window);
        Ok(())
    }
}
