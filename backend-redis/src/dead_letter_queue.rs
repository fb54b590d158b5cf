//! A group's dead-letter stream: depth, peek, redrive and discard by selection.

use std::sync::Arc;

use async_trait::async_trait;
use redis::Value;
use transport_core::backend::{redrive_message, RawDeadLetters};
use transport_core::{DeadLetter, DeadLetterQueue, Message, Result, Selection, SubscribeOptions};

use crate::core::{self, map_err, scripts, Conn, Core, Redis};
use crate::names;

#[async_trait]
impl RawDeadLetters for Redis {
    async fn dead_letters(&self, topic: &str, options: &SubscribeOptions) -> Result<Box<dyn DeadLetterQueue>> {
        let name = options.dlq_topic(topic);
        Ok(Box::new(RedisDeadLetters {
            core: self.core.clone(),
            key: names::stream(&self.core.config, &name),
            topic: name,
        }))
    }
}

/// A group's dead-letter stream.
pub(crate) struct RedisDeadLetters {
    pub(crate) core: Arc<Core>,
    pub(crate) topic: String,
    pub(crate) key: String,
}

impl RedisDeadLetters {
    fn conn(&self) -> Conn {
        self.core.conn.clone()
    }

    async fn range(&self, n: usize) -> Result<Vec<(String, Message)>> {
        let reply: Value = redis::cmd("XRANGE")
            .arg(&self.key)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(n)
            .query_async(&mut self.conn())
            .await
            .map_err(map_err)?;
        Ok(core::parse_range(reply))
    }

    /// Move one entry back to its topic: XDEL and XADD in one script, so the
    /// message is in exactly one place. Returns 1, or 0 when it was gone.
    async fn redrive_entry(&self, entry_id: &str, dead: &Message) -> Result<u64> {
        let (topic, message) = redrive_message(dead)?;
        let target = names::stream(&self.core.config, &topic);
        if !self.core.config.cluster_nodes.is_empty() {
            return self.redrive_apart(entry_id, &target, &message).await;
        }
        let mut invocation = scripts().redrive.prepare_invoke();
        invocation.key(&self.key).key(&target).arg(entry_id);
        for (f, v) in core::encode(&message) {
            invocation.arg(f).arg(v);
        }
        let done: i64 = invocation.invoke_async(&mut self.conn()).await.map_err(map_err)?;
        Ok(done as u64)
    }

    /// Redrive when the topic's stream is in another slot (a cluster): add
    /// to the topic, then delete here. A crash in between, or two redrives
    /// of one entry at once, leave a copy in both places, never in neither.
    async fn redrive_apart(&self, entry_id: &str, target: &str, message: &Message) -> Result<u64> {
        let mut conn = self.conn();
        let exists: Vec<Value> = redis::cmd("XRANGE")
            .arg(&self.key)
            .arg(entry_id)
            .arg(entry_id)
            .query_async(&mut conn)
            .await
            .map_err(map_err)?;
        if exists.is_empty() {
            return Ok(0);
        }
        core::xadd(target, None, false, message)
            .query_async::<()>(&mut conn)
            .await
            .map_err(map_err)?;
        redis::cmd("XDEL")
            .arg(&self.key)
            .arg(entry_id)
            .query_async::<u64>(&mut conn)
            .await
            .map_err(map_err)?;
        Ok(1)
    }

    /// Redrive or delete the entries `selection` picks, the others untouched.
    async fn take(&self, selection: &Selection, redrive: bool) -> Result<u64> {
        let mut done = 0;
        let (picked, _) = selection.partition(self.range(i64::MAX as usize).await?, |(_, m)| m);
        for (entry_id, dead) in picked {
            done += if redrive {
                self.redrive_entry(&entry_id, &dead).await?
            } else {
                redis::cmd("XDEL")
                    .arg(&self.key)
                    .arg(&entry_id)
                    .query_async::<u64>(&mut self.conn())
                    .await
                    .map_err(map_err)?
            };
        }
        Ok(done)
    }
}

#[async_trait]
impl DeadLetterQueue for RedisDeadLetters {
    fn topic(&self) -> &str {
        &self.topic
    }

    async fn depth(&self) -> Result<u64> {
        redis::cmd("XLEN")
            .arg(&self.key)
            .query_async(&mut self.conn())
            .await
            .map_err(map_err)
    }

    async fn peek(&self, n: usize) -> Result<Vec<DeadLetter>> {
        Ok(self
            .range(n)
            .await?
            .into_iter()
            .map(|(_, m)| DeadLetter::from_message(m))
            .collect())
    }

    async fn redrive(&self, selection: &Selection) -> Result<u64> {
        let limit = selection.limit();
        if selection.has_conditions() {
            return self.take(selection, true).await;
        }
        // Everything, or the oldest `limit`: from the head in chunks, so a
        // large queue is not read at once.
        let mut moved = 0u64;
        while moved < limit {
            let chunk = (limit - moved).min(100) as usize;
            let entries = self.range(chunk).await?;
            if entries.is_empty() {
                break;
            }
            for (entry_id, dead) in entries {
                moved += self.redrive_entry(&entry_id, &dead).await?;
                if moved >= limit {
                    break;
                }
            }
        }
        Ok(moved)
    }

    async fn discard(&self, selection: &Selection) -> Result<u64> {
        if !selection.is_everything() {
            return self.take(selection, false).await;
        }
        redis::cmd("XTRIM")
            .arg(&self.key)
            .arg("MAXLEN")
            .arg(0)
            .query_async(&mut self.conn())
            .await
            .map_err(map_err)
    }
}
