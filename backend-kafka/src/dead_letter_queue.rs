//! A group's dead-letter topic: depth, peek, redrive and purge, read
//! through the operations group whose committed offset marks what was
//! handled.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::Message as _;
use transport_core::backend::{redrive_message, RawDeadLetters};
use transport_core::{DeadLetter, DeadLetterQueue, ErrorKind, Message, Result, Selection, SubscribeOptions};

use crate::core::{self, err, kafka, Context};
use crate::core::{blocking, Kafka};

#[async_trait]
impl RawDeadLetters for Kafka {
    async fn dead_letters(&self, topic: &str, options: &SubscribeOptions) -> Result<Box<dyn DeadLetterQueue>> {
        let dlq = options.dlq_topic(topic);
        self.ensure_topic(&dlq, self.inner.config.dlq_partitions).await?;
        Ok(Box::new(self.offsets_reader(dlq, &self.inner.config.dlq_group)?))
    }
}

/// A group's dead-letter topic, read with the library's own group
/// (`dlq_group`), whose committed offsets mark what was redriven or purged.
pub(crate) struct KafkaDeadLetters {
    pub(crate) kafka: Kafka,
    pub(crate) topic: String,
    pub(crate) consumer: Arc<BaseConsumer<Context>>,
}

/// A record read from the dead-letter topic.
pub(crate) struct Dead {
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) timestamp: i64,
    pub(crate) message: Message,
}

impl KafkaDeadLetters {
    /// Per partition: (first offset not yet redriven or purged, high watermark).
    pub(crate) fn ranges(&self) -> Result<Vec<(i32, i64, i64)>> {
        let timeout = self.kafka.inner.config.request_timeout;
        let metadata = self
            .consumer
            .fetch_metadata(Some(&self.topic), timeout)
            .map_err(kafka)?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .filter(|t| t.name() == self.topic && t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if partitions.is_empty() {
            return Ok(Vec::new());
        }
        let mut tpl = TopicPartitionList::new();
        for p in &partitions {
            tpl.add_partition(&self.topic, *p);
        }
        let committed = self.consumer.committed_offsets(tpl, timeout).map_err(kafka)?;
        let mut out = Vec::new();
        for p in partitions {
            let (low, high) = self.consumer.fetch_watermarks(&self.topic, p, timeout).map_err(kafka)?;
            let done = match committed.find_partition(&self.topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o,
                _ => low,
            };
            out.push((p, done.max(low).min(high), high));
        }
        Ok(out)
    }

    /// The oldest `n` records not yet redriven or purged (by timestamp
    /// across partitions), left in place.
    pub(crate) fn oldest(&self, n: u64) -> Result<Vec<Dead>> {
        let ranges: Vec<(i32, i64, i64)> = self.ranges()?.into_iter().filter(|(_, s, h)| s < h).collect();
        if ranges.is_empty() || n == 0 {
            return Ok(Vec::new());
        }
        let mut tpl = TopicPartitionList::new();
        for (p, start, _) in &ranges {
            let _ = tpl.add_partition_offset(&self.topic, *p, Offset::Offset(*start));
        }
        self.consumer.assign(&tpl).map_err(kafka)?;
        let mut out = Vec::new();
        let mut remaining: std::collections::HashMap<i32, (i64, u64)> = ranges
            .iter()
            .map(|(p, s, h)| (*p, (*h, ((h - s) as u64).min(n))))
            .collect();
        let deadline = std::time::Instant::now() + self.kafka.inner.config.request_timeout * 2;
        while remaining.values().any(|(_, left)| *left > 0) {
            if std::time::Instant::now() > deadline {
                let _ = self.consumer.unassign();
                return Err(err(ErrorKind::Timeout, "reading the dead-letter topic timed out"));
            }
            match self.consumer.poll(Duration::from_millis(100)) {
                Some(Ok(record)) => {
                    if let Some((high, left)) = remaining.get_mut(&record.partition()) {
                        if *left > 0 && record.offset() < *high {
                            *left -= 1;
                            out.push(Dead {
                                partition: record.partition(),
                                offset: record.offset(),
                                timestamp: record.timestamp().to_millis().unwrap_or(0),
                                message: core::decode(&record),
                            });
                        }
                    }
                }
                Some(Err(e)) => {
                    let _ = self.consumer.unassign();
                    return Err(kafka(e));
                }
                None => {}
            }
        }
        let _ = self.consumer.unassign();
        out.sort_by_key(|d| (d.timestamp, d.partition, d.offset));
        out.truncate(n as usize);
        Ok(out)
    }

    fn commit(&self, partition: i32, offset: i64) -> Result<()> {
        let mut tpl = TopicPartitionList::new();
        let _ = tpl.add_partition_offset(&self.topic, partition, Offset::Offset(offset));
        self.consumer.commit(&tpl, CommitMode::Sync).map_err(kafka)
    }

    pub(crate) async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(KafkaDeadLetters) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let me = KafkaDeadLetters {
            kafka: self.kafka.clone(),
            topic: self.topic.clone(),
            consumer: self.consumer.clone(),
        };
        blocking(move || f(me)).await
    }
}

impl KafkaDeadLetters {
    /// Kafka cannot delete one record. The picked ones are redriven (or
    /// skipped), and in each partition holding a picked record, the others
    /// before the last picked one are produced again to the topic's end
    /// (delivery report awaited) before the operations group's offset moves
    /// past them: they stay, behind the later dead letters of their
    /// partition; what follows the last picked record is not touched. A
    /// crash midway duplicates, never loses.
    async fn take_selected(&self, selection: &Selection, redrive: bool) -> Result<u64> {
        let mut all = self.run(move |d| d.oldest(u64::MAX)).await?;
        all.sort_by_key(|d| (d.partition, d.offset));
        let mut left = selection.limit();
        let picked: Vec<bool> = all
            .iter()
            .map(|d| {
                let pick = left > 0 && selection.matches(&DeadLetter::from_message(d.message.clone()));
                left -= u64::from(pick);
                pick
            })
            .collect();
        let mut last_picked = std::collections::HashMap::new();
        for (d, _) in all.iter().zip(&picked).filter(|(_, p)| **p) {
            last_picked.insert(d.partition, d.offset);
        }
        let mut done = 0;
        for (d, picked) in all.iter().zip(picked) {
            if last_picked.get(&d.partition).is_none_or(|last| d.offset > *last) {
                continue;
            }
            if !picked {
                self.kafka.produce(&self.topic, &d.message).await?;
            } else if redrive {
                let (topic, message) = redrive_message(&d.message)?;
                self.kafka.produce(&topic, &message).await?;
            }
            let (partition, next) = (d.partition, d.offset + 1);
            self.run(move |q| q.commit(partition, next)).await?;
            done += u64::from(picked);
        }
        Ok(done)
    }
}

impl Kafka {
    /// A reader of `topic` as consumer group `group` sees it (committed
    /// offsets, records from there), that never joins the group: the
    /// dead-letter operations (as `dlq_group`) and the backlog (as the
    /// subscribers' group) use it.
    pub(crate) fn offsets_reader(&self, topic: String, group: &str) -> Result<KafkaDeadLetters> {
        let mut cc = self.inner.config.client_config();
        cc.set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "100");
        let consumer: BaseConsumer<Context> = cc.create_with_context(self.context()).map_err(kafka)?;
        Ok(KafkaDeadLetters {
            kafka: self.clone(),
            topic,
            consumer: Arc::new(consumer),
        })
    }
}

#[async_trait]
impl DeadLetterQueue for KafkaDeadLetters {
    fn topic(&self) -> &str {
        &self.topic
    }

    async fn depth(&self) -> Result<u64> {
        self.run(|d| Ok(d.ranges()?.iter().map(|(_, s, h)| (h - s) as u64).sum()))
            .await
    }

    async fn peek(&self, n: usize) -> Result<Vec<DeadLetter>> {
        let dead = self.run(move |d| d.oldest(n as u64)).await?;
        Ok(dead.into_iter().map(|d| DeadLetter::from_message(d.message)).collect())
    }

    async fn redrive(&self, selection: &Selection) -> Result<u64> {
        if selection.has_conditions() {
            return self.take_selected(selection, true).await;
        }
        // The oldest ones: no record needs moving aside.
        let limit = selection.limit();
        let dead = self.run(move |d| d.oldest(limit)).await?;
        let mut moved = 0;
        for d in dead {
            let (topic, message) = redrive_message(&d.message)?;
            // Published (report awaited) before the offset moves past it:
            // never lost, at worst redriven twice.
            self.kafka.produce(&topic, &message).await?;
            let (partition, next) = (d.partition, d.offset + 1);
            self.run(move |q| q.commit(partition, next)).await?;
            moved += 1;
        }
        Ok(moved)
    }

    async fn discard(&self, selection: &Selection) -> Result<u64> {
        if !selection.is_everything() {
            return self.take_selected(selection, false).await;
        }
        // Kafka cannot delete single records: the ops group's offset moves to
        // the end (what depth, peek and redrive see), and the records are
        // also deleted up to there where the broker supports DeleteRecords.
        let (count, ends) = self
            .run(|d| {
                let ranges = d.ranges()?;
                let count = ranges.iter().map(|(_, s, h)| (h - s) as u64).sum::<u64>();
                for (p, s, h) in &ranges {
                    if s < h {
                        d.commit(*p, *h)?;
                    }
                }
                Ok((count, ranges))
            })
            .await?;
        if count > 0 && self.kafka.inner.config.purge_deletes_records {
            let mut tpl = TopicPartitionList::new();
            for (p, _, h) in &ends {
                let _ = tpl.add_partition_offset(&self.topic, *p, Offset::Offset(*h));
            }
            let options = core::admin_options(&self.kafka.inner.config);
            if let Err(e) = self.kafka.inner.admin.delete_records(&tpl, &options).await {
                tracing::debug!(error = %e, topic = %self.topic, "DeleteRecords not applied; records stay until retention");
            }
        }
        Ok(count)
    }
}
