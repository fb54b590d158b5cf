//! A group's backlog from offsets: per partition, the high watermark minus
//! the group's committed offset. The library commits a partition's oldest
//! record not yet acked, so `waiting` also counts records delivered and not
//! settled, and records acked out of order above that one (approximate; no
//! figure for in flight alone). The oldest waiting record's age comes from
//! its timestamp, read at the committed offset.

use std::time::{Duration, UNIX_EPOCH};

use async_trait::async_trait;
use rdkafka::consumer::Consumer;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use transport_core::{Backlog, Result, SubscribeOptions};

use transport_core::backend::{RawBacklog, RawDeadLetters};

use crate::core::kafka;
use crate::core::Kafka;

#[async_trait]
impl RawBacklog for Kafka {
    async fn backlog(&self, topic: &str, options: &SubscribeOptions) -> Result<Backlog> {
        let dead = RawDeadLetters::dead_letters(self, topic, options)
            .await?
            .depth()
            .await?;
        let config = &self.inner.config;
        let reader = self.offsets_reader(topic.to_owned(), &config.group_id(topic, &options.group))?;
        let timeout = config.request_timeout;
        let topic = topic.to_owned();
        let (waiting, oldest_ms) = reader
            .run(move |r| {
                let ranges = r.ranges()?;
                // A group that never committed has not subscribed yet.
                let mut tpl = TopicPartitionList::new();
                for (p, _, _) in &ranges {
                    tpl.add_partition(&topic, *p);
                }
                let committed = r.consumer.committed_offsets(tpl, timeout).map_err(kafka)?;
                let joined = committed
                    .elements()
                    .iter()
                    .any(|e| matches!(e.offset(), Offset::Offset(_)));
                if !joined {
                    return Ok((0, None));
                }
                let waiting: u64 = ranges.iter().map(|(_, s, h)| (h - s) as u64).sum();
                let oldest = if waiting > 0 {
                    r.oldest(1)?.first().map(|d| d.timestamp)
                } else {
                    None
                };
                Ok((waiting, oldest))
            })
            .await?;
        let age = Backlog::waited_since(
            oldest_ms
                .filter(|ms| *ms > 0)
                .map(|ms| UNIX_EPOCH + Duration::from_millis(ms as u64)),
        );
        Ok(Backlog::new(Some(waiting), None, Some(dead), Some(age)))
    }
}
