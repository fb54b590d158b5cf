//! A group's backlog: `XINFO GROUPS` (lag and pending), the group's
//! delayed set (nacked entries waiting out a delay count as waiting, not in
//! flight, though they stay pending), `XLEN` of the dead-letter stream, and
//! the age of the oldest waiting entry from its id, against the server's
//! clock (`TIME`).

use std::collections::HashMap;
use std::time::{Duration, UNIX_EPOCH};

use async_trait::async_trait;
use redis::Value;
use transport_core::backend::RawBacklog;
use transport_core::{Backlog, Result, SubscribeOptions};

use crate::core::{map_err, Redis};
use crate::names::Keys;

#[async_trait]
impl RawBacklog for Redis {
    async fn backlog(&self, topic: &str, options: &SubscribeOptions) -> Result<Backlog> {
        let keys = Keys::new(&self.core.config, topic, options);
        let mut conn = self.core.conn.clone();
        // The dead-letter stream is a topic of its own (another slot on a
        // cluster): read apart from the pipeline on the stream's node.
        let (exists, delayed, (secs, micros)): (bool, u64, (u64, u64)) = redis::pipe()
            .exists(&keys.stream)
            .zcard(&keys.delayed)
            .cmd("TIME")
            .query_async(&mut conn)
            .await
            .map_err(map_err)?;
        let dead: u64 = redis::cmd("XLEN")
            .arg(&keys.dlq)
            .query_async(&mut conn)
            .await
            .map_err(map_err)?;
        let now = UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros);
        let group = if exists {
            let groups: Vec<HashMap<String, Value>> = redis::cmd("XINFO")
                .arg("GROUPS")
                .arg(&keys.stream)
                .query_async::<Vec<Value>>(&mut conn)
                .await
                .map_err(map_err)?
                .into_iter()
                .map(fields)
                .collect();
            groups
                .into_iter()
                .find(|g| text(g.get("name")).as_deref() == Some(&options.group))
        } else {
            None
        };
        let Some(group) = group else {
            // No such group yet: nothing waits for it.
            return Ok(Backlog::new(Some(0), Some(0), Some(dead), Some(Duration::ZERO)));
        };
        let pending = number(group.get("pending")).unwrap_or(0);
        let last = text(group.get("last-delivered-id")).unwrap_or_else(|| "0-0".into());
        // `lag` is nil when Redis cannot tell (entries deleted in the
        // group's range); then count what follows the group's position.
        let unread = match number(group.get("lag")) {
            Some(lag) => lag,
            None => {
                let ids: Vec<Value> = redis::cmd("XRANGE")
                    .arg(&keys.stream)
                    .arg(format!("({last}"))
                    .arg("+")
                    .query_async(&mut conn)
                    .await
                    .map_err(map_err)?;
                ids.len() as u64
            }
        };
        let mut oldest: Option<u64> = None;
        if unread > 0 {
            let next: Vec<(String, Value)> = redis::cmd("XRANGE")
                .arg(&keys.stream)
                .arg(format!("({last}"))
                .arg("+")
                .arg("COUNT")
                .arg(1)
                .query_async::<Vec<(String, Value)>>(&mut conn)
                .await
                .map_err(map_err)?;
            oldest = next.first().and_then(|(id, _)| id_ms(id));
        }
        if delayed > 0 {
            let ids: Vec<String> = redis::cmd("ZRANGE")
                .arg(&keys.delayed)
                .arg(0)
                .arg(-1)
                .query_async(&mut conn)
                .await
                .map_err(map_err)?;
            let first = ids.iter().filter_map(|id| id_ms(id)).min();
            oldest = oldest.into_iter().chain(first).min();
        }
        let age = oldest
            .map(|ms| {
                now.duration_since(UNIX_EPOCH + Duration::from_millis(ms))
                    .unwrap_or_default()
            })
            .unwrap_or_default();
        Ok(Backlog::new(
            Some(unread + delayed),
            Some(pending.saturating_sub(delayed)),
            Some(dead),
            Some(age),
        ))
    }
}

/// The milliseconds part of an entry id (`<ms>-<seq>`).
fn id_ms(id: &str) -> Option<u64> {
    id.split('-').next()?.parse().ok()
}

/// A reply of field/value pairs (RESP2 array or RESP3 map) as a map.
fn fields(v: Value) -> HashMap<String, Value> {
    let pairs: Vec<(Value, Value)> = match v {
        Value::Map(m) => m,
        Value::Array(items) => {
            let mut it = items.into_iter();
            let mut out = Vec::new();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                out.push((k, v));
            }
            out
        }
        _ => Vec::new(),
    };
    pairs
        .into_iter()
        .filter_map(|(k, v)| text(Some(&k)).map(|k| (k, v)))
        .collect()
}

fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        _ => None,
    }
}

fn number(v: Option<&Value>) -> Option<u64> {
    match v? {
        Value::Int(i) => u64::try_from(*i).ok(),
        other => text(Some(other))?.parse().ok(),
    }
}
