//! Publishing: appended to the topic's log under its lock (the core's
//! wrapper has checked the whole batch before).

use transport_core::Message;

use crate::backend::Memory;

impl Memory {
    /// Store a checked batch on `topic`.
    pub(crate) fn store(&self, topic: &str, messages: Vec<Message>) {
        self.broker.topic(topic).append(messages, self.config.replay_window);
    }
}
