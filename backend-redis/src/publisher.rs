//! Publishing: `XADD`, batches in one `MULTI`/`EXEC` (whole or not at all).

use async_trait::async_trait;
use transport_core::{Message, Publisher, Result};

use crate::backend::RedisTransport;
use crate::core::{self, map_err};

impl RedisTransport {
    pub(crate) fn xadd(&self, pipe: &mut redis::Pipeline, stream: &str, message: &Message) {
        let cmd = pipe.cmd("XADD").arg(stream);
        if let Some(n) = self.inner.config.max_len {
            cmd.arg("MAXLEN").arg("~").arg(n);
        }
        cmd.arg("*");
        for (k, v) in core::encode(message) {
            cmd.arg(k).arg(v);
        }
    }

    /// Everything a publish checks before it reaches the broker.
    pub(crate) fn check_publish(&self, op: &'static str, topic: &str, messages: &[Message]) -> Result<()> {
        self.inner
            .lifecycle
            .check_publish(op, topic, messages, self.inner.config.max_message_size)?;
        Ok(())
    }
}

#[async_trait]
impl Publisher for RedisTransport {
    async fn publish(&self, topic: &str, message: Message) -> Result<()> {
        self.publish_batch_inner("publish", topic, vec![message]).await
    }

    async fn publish_batch(&self, topic: &str, messages: Vec<Message>) -> Result<()> {
        self.publish_batch_inner("publish_batch", topic, messages).await
    }
}

impl RedisTransport {
    async fn publish_batch_inner(&self, op: &'static str, topic: &str, messages: Vec<Message>) -> Result<()> {
        self.check_publish(op, topic, &messages)?;
        if messages.is_empty() {
            return Ok(());
        }
        let stream = format!("{}{topic}", self.inner.config.key_prefix);
        // MULTI/EXEC: a batch is stored whole or not at all, in order.
        let mut pipe = redis::pipe();
        if messages.len() > 1 {
            pipe.atomic();
        }
        for m in &messages {
            self.xadd(&mut pipe, &stream, m);
            pipe.ignore();
        }
        let mut conn = self.inner.conn.clone();
        pipe.query_async::<()>(&mut conn).await.map_err(|e| map_err(op, e))
    }
}
