//! Publishing: `XADD`, batches in one `MULTI`/`EXEC` (whole or not at all).

use async_trait::async_trait;
use transport_core::backend::validate_topic;
use transport_core::{Message, Publisher, Result};

use crate::backend::{tag, RedisTransport};
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

    pub(crate) fn check_message(&self, message: &Message) -> Result<()> {
        message.validate()?;
        message.check_size(self.inner.config.max_message_size)
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
        self.check_open(op)?;
        validate_topic(topic).map_err(tag(op))?;
        for m in &messages {
            self.check_message(m).map_err(tag(op))?;
        }
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
