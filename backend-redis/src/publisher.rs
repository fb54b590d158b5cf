//! Publishing: `XADD`, batches in one `MULTI`/`EXEC` (whole or not at all),
//! then `WAIT` for replicas when `wait_replicas` asks for them.

use redis::Value;
use transport_core::backend::RawPublish;
use transport_core::{Error, ErrorKind, Message, Result};

use crate::core::{self, map_err, Redis};
use crate::names;
use transport_core::backend::not_provisioned;

impl RawPublish for Redis {
    async fn publish(&self, topic: &str, messages: Vec<Message>) -> Result<()> {
        let stream = names::stream(&self.core.config, topic);
        let c = &self.core.config;
        let mut conn = self.core.conn.clone();
        let batch = messages.len() > 1;
        let wait = c.wait_replicas > 0;
        // MULTI/EXEC: a batch is stored whole or not at all, in order.
        // WAIT counts the replicas holding what was written before it on
        // the same connection, so it rides in the same pipeline (on a
        // cluster the pipeline goes, and is redirected, as a whole to the
        // stream's primary); it cannot go inside MULTI, hence the
        // transaction spelled out around the XADDs then.
        // Without provisioning, XADD NOMKSTREAM: a missing stream is not
        // created, its reply is nil, and (in MULTI) nothing of the batch is
        // stored; so the replies are read instead of ignored.
        let check = !c.provision;
        let mut pipe = redis::pipe();
        if batch && !wait {
            pipe.atomic();
        }
        if batch && wait {
            pipe.cmd("MULTI").ignore();
        }
        for m in &messages {
            let xadd = pipe.add_command(core::xadd(&stream, c.max_len, check, m));
            if !check {
                xadd.ignore();
            }
        }
        if !wait {
            if !check {
                return pipe.query_async::<()>(&mut conn).await.map_err(map_err);
            }
            let replies: Vec<Value> = pipe.query_async(&mut conn).await.map_err(map_err)?;
            return stream_existed(&stream, &replies);
        }
        if batch {
            pipe.cmd("EXEC");
        }
        pipe.cmd("WAIT")
            .arg(c.wait_replicas)
            .arg(c.wait_timeout.as_millis() as u64);
        let mut replies: Vec<Value> = pipe.query_async(&mut conn).await.map_err(map_err)?;
        let held = replies.pop().unwrap_or(Value::Nil);
        if let Some(exec) = replies.last() {
            // An XADD refused at EXEC time is an error inside EXEC's reply.
            exec.clone().extract_error().map_err(map_err)?;
        }
        if check {
            stream_existed(&stream, &replies)?;
        }
        let held: u32 = redis::from_redis_value(held).map_err(|e| map_err(e.into()))?;
        if held < c.wait_replicas {
            return Err(Error::new(
                ErrorKind::Timeout,
                format!(
                    "stored on the primary, but only {held} of {} replicas had it within {:?} \
                     (wait_replicas); a retry may store it twice",
                    c.wait_replicas, c.wait_timeout
                ),
            )
            .with_retryable(true));
        }
        Ok(())
    }
}

/// `NotFound` when an `XADD NOMKSTREAM` found no stream (a nil reply, also
/// inside `EXEC`'s): nothing of the batch was stored.
fn stream_existed(stream: &str, replies: &[Value]) -> Result<()> {
    fn nil(v: &Value) -> bool {
        match v {
            Value::Nil => true,
            Value::Array(items) => items.iter().any(nil),
            _ => false,
        }
    }
    if replies.iter().any(nil) {
        return Err(not_provisioned("stream", stream));
    }
    Ok(())
}
