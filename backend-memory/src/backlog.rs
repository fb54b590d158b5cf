//! What a group has left, counted from the broker's own state.

use async_trait::async_trait;
use transport_core::backend::RawBacklog;
use transport_core::{Backlog, Result, SubscribeOptions};

use crate::backend::Memory;

#[async_trait]
impl RawBacklog for Memory {
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
}

#[cfg(test)]
mod tests {
    use transport_core::{Backlog, SubscribeOptions};

    use crate::MemoryTransport;

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
}
