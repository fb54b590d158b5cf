//! A group's dead-letter stream: depth, peek, redrive and purge.

use async_trait::async_trait;
use redis::Value;
use transport_core::backend::redrive_message;
use transport_core::backend::validate_topic;
use transport_core::{DeadLetter, DeadLetterQueue, Message, Redrive, Result, Selection};

use crate::backend::{tag, RedisTransport};
use crate::core::{self, map_err, scripts, Conn};

/// A group's dead-letter stream.
pub(crate) struct RedisDeadLetters {
    pub(crate) transport: RedisTransport,
    pub(crate) topic: String,
    pub(crate) key: String,
}

impl RedisDeadLetters {
    fn conn(&self) -> Conn {
        self.transport.inner.conn.clone()
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
            .map_err(|e| map_err("peek", e))?;
        Ok(core::parse_range(reply))
    }

    /// Move one entry back to its topic: XDEL and XADD in one script, so the
    /// message is in exactly one place. Returns 1, or 0 when it was gone.
    async fn redrive_entry(&self, op: &'static str, entry_id: &str, dead: &Message) -> Result<u64> {
        let (topic, message) = redrive_message(dead).map_err(tag(op))?;
        validate_topic(&topic).map_err(tag(op))?;
        let target = format!("{}{topic}", self.transport.inner.config.key_prefix);
        if !self.transport.inner.config.cluster_nodes.is_empty() {
            return self.redrive_apart(op, entry_id, &target, &message).await;
        }
        let mut invocation = scripts().redrive.prepare_invoke();
        invocation.key(&self.key).key(&target).arg(entry_id);
        for (f, v) in core::encode(&message) {
            invocation.arg(f).arg(v);
        }
        let done: i64 = invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| map_err(op, e))?;
        Ok(done as u64)
    }

    /// Redrive when the topic's stream is in another slot (a cluster): add
    /// to the topic, then delete here. A crash in between, or two redrives
    /// of one entry at once, leave a copy in both places, never in neither.
    async fn redrive_apart(&self, op: &'static str, entry_id: &str, target: &str, message: &Message) -> Result<u64> {
        let mut conn = self.conn();
        let exists: Vec<Value> = redis::cmd("XRANGE")
            .arg(&self.key)
            .arg(entry_id)
            .arg(entry_id)
            .query_async(&mut conn)
            .await
            .map_err(|e| map_err(op, e))?;
        if exists.is_empty() {
            return Ok(0);
        }
        core::xadd(target, None, message)
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| map_err(op, e))?;
        redis::cmd("XDEL")
            .arg(&self.key)
            .arg(entry_id)
            .query_async::<u64>(&mut conn)
            .await
            .map_err(|e| map_err(op, e))?;
        Ok(1)
    }

    /// Redrive or delete the entries `selection` picks, the others untouched.
    async fn take_selected(&self, op: &'static str, selection: &Selection, redrive: bool) -> Result<u64> {
        let mut done = 0;
        for (entry_id, dead) in self.range(i64::MAX as usize).await? {
            if !selection.matches(&DeadLetter::from_message(dead.clone())) {
                continue;
            }
            done += if redrive {
                self.redrive_entry(op, &entry_id, &dead).await?
            } else {
                redis::cmd("XDEL")
                    .arg(&self.key)
                    .arg(&entry_id)
                    .query_async::<u64>(&mut self.conn())
                    .await
                    .map_err(|e| map_err(op, e))?
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
            .map_err(|e| map_err("depth", e))
    }

    async fn peek(&self, n: usize) -> Result<Vec<DeadLetter>> {
        Ok(self
            .range(n)
            .await?
            .into_iter()
            .map(|(_, m)| DeadLetter::from_message(m))
            .collect())
    }

    async fn redrive(&self, count: Redrive) -> Result<u64> {
        let mut moved = 0u64;
        let limit = count.limit();
        while moved < limit {
            let chunk = (limit - moved).min(100) as usize;
            let entries = self.range(chunk).await?;
            if entries.is_empty() {
                break;
            }
            for (entry_id, dead) in entries {
                moved += self.redrive_entry("redrive", &entry_id, &dead).await?;
                if moved >= limit {
                    break;
                }
            }
        }
        Ok(moved)
    }

    async fn redrive_selected(&self, selection: &Selection) -> Result<u64> {
        self.take_selected("redrive", selection, true).await
    }

    async fn discard(&self, selection: &Selection) -> Result<u64> {
        self.take_selected("discard", selection, false).await
    }

    async fn purge(&self) -> Result<u64> {
        redis::cmd("XTRIM")
            .arg(&self.key)
            .arg("MAXLEN")
            .arg(0)
            .query_async(&mut self.conn())
            .await
            .map_err(|e| map_err("purge", e))
    }
}
