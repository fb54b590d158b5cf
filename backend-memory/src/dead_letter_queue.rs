//! A group's dead-letter queue: the retained log of its dead-letter topic.

use std::sync::Arc;

use async_trait::async_trait;
use transport_core::backend::{redrive_message, RawDeadLetters};
use transport_core::{DeadLetter, DeadLetterQueue, Result, Selection, SubscribeOptions};

use crate::backend::Memory;
use crate::core::{Broker, Topic};

#[async_trait]
impl RawDeadLetters for Memory {
    async fn dead_letters(&self, topic: &str, options: &SubscribeOptions) -> Result<Box<dyn DeadLetterQueue>> {
        Ok(Box::new(MemoryDeadLetters {
            broker: self.broker.clone(),
            name: options.dlq_topic(topic),
            replay_window: self.config.replay_window,
        }))
    }
}

/// A group's dead-letter queue: the retained log of its dead-letter topic.
pub(crate) struct MemoryDeadLetters {
    pub(crate) broker: Arc<Broker>,
    pub(crate) name: String,
    pub(crate) replay_window: usize,
}

impl MemoryDeadLetters {
    fn queue(&self) -> Option<Arc<Topic>> {
        self.broker.existing_topic(&self.name)
    }

    /// Take out what `selection` picks, the others staying in place and in
    /// order; with `redrive` the picked go back to their topics (all checked
    /// first: an error changes nothing).
    fn take(&self, selection: &Selection, redrive: bool) -> Result<u64> {
        let Some(q) = self.queue() else { return Ok(0) };
        let all = q.remove_front(usize::MAX);
        let (picked, kept) = selection.partition(all.clone(), |m| m);
        let mut targets = Vec::new();
        if redrive {
            for m in &picked {
                match redrive_message(m) {
                    Ok(target) => targets.push(target),
                    Err(e) => {
                        q.restore_front(all);
                        return Err(e);
                    }
                }
            }
        }
        q.restore_front(kept);
        for (topic, message) in targets {
            self.broker.topic(&topic).append([message], self.replay_window);
        }
        Ok(picked.len() as u64)
    }
}

#[async_trait]
impl DeadLetterQueue for MemoryDeadLetters {
    fn topic(&self) -> &str {
        &self.name
    }

    async fn depth(&self) -> Result<u64> {
        Ok(self.queue().map_or(0, |q| q.len() as u64))
    }

    async fn peek(&self, n: usize) -> Result<Vec<DeadLetter>> {
        let Some(q) = self.queue() else { return Ok(Vec::new()) };
        Ok(q.retained()
            .into_iter()
            .take(n)
            .map(|m| DeadLetter::from_message((*m).clone()))
            .collect())
    }

    async fn redrive(&self, selection: &Selection) -> Result<u64> {
        self.take(selection, true)
    }

    async fn discard(&self, selection: &Selection) -> Result<u64> {
        self.take(selection, false)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::StreamExt;
    use transport_core::{Message, Selection, SubscribeOptions};

    use crate::MemoryTransport;

    /// A redrive that cannot move one of the messages it picked (a stray
    /// message without dead-letter headers, put into the queue by hand)
    /// fails as a whole: every message stays in the queue, none goes back.
    #[tokio::test]
    async fn a_failed_redrive_changes_nothing() {
        let t = MemoryTransport::new();
        let options = SubscribeOptions::new("g");
        let mut sub = t.subscribe("orders", options.clone()).await.unwrap();
        t.publish("orders", Message::new("a")).await.unwrap();
        let d = tokio::time::timeout(Duration::from_secs(5), sub.next())
            .await
            .expect("a delivery within 5 s")
            .expect("open")
            .expect("delivery");
        d.dead_letter("bad input").await.unwrap();
        let dlq = t.dead_letters("orders", &options).await.unwrap();
        t.publish(dlq.topic(), Message::new("stray")).await.unwrap();
        assert_eq!(dlq.depth().await.unwrap(), 2);

        assert!(dlq.redrive(&Selection::all()).await.is_err());
        assert_eq!(dlq.depth().await.unwrap(), 2, "redrive_selected lost messages");
        assert!(dlq.redrive_all().await.is_err());
        assert_eq!(dlq.depth().await.unwrap(), 2, "redrive lost messages");
        let order: Vec<String> = dlq
            .peek(10)
            .await
            .unwrap()
            .iter()
            .map(|d| String::from_utf8_lossy(&d.message.payload).into_owned())
            .collect();
        assert_eq!(order, ["a", "stray"], "the queue's order changed");
        let again = tokio::time::timeout(Duration::from_millis(300), sub.next()).await;
        assert!(again.is_err(), "a failed redrive republished: {again:?}");
        // What can move still does, once picked alone.
        assert_eq!(dlq.redrive(&Selection::all().reason_contains("bad")).await.unwrap(), 1);
        assert_eq!(dlq.depth().await.unwrap(), 1);
    }
}
