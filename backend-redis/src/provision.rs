//! The keys of a topic and group, and creating the consumer group
//! (`XGROUP CREATE ... MKSTREAM`).

use redis::aio::ConnectionManager;
use transport_core::{Result, StartFrom, SubscribeOptions};

use crate::core::map_err;

/// The keys of one topic and group.
#[derive(Clone)]
pub(crate) struct Keys {
    pub(crate) stream: String,
    pub(crate) delayed: String,
    pub(crate) failures: String,
    pub(crate) dlq: String,
}

impl Keys {
    pub(crate) fn new(prefix: &str, topic: &str, options: &SubscribeOptions) -> Self {
        // ':' is not allowed in topic names, so these never collide with a stream.
        Keys {
            stream: format!("{prefix}{topic}"),
            delayed: format!("{prefix}{topic}:{}:delayed", options.group),
            failures: format!("{prefix}{topic}:{}:failures", options.group),
            dlq: format!("{prefix}{}", options.dlq_topic(topic)),
        }
    }
}

pub(crate) async fn create_group(
    conn: &mut ConnectionManager,
    keys: &Keys,
    group: &str,
    start: StartFrom,
) -> Result<()> {
    let id = match start {
        StartFrom::Earliest => "0",
        StartFrom::Latest => "$",
    };
    let r = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&keys.stream)
        .arg(group)
        .arg(id)
        .arg("MKSTREAM")
        .query_async::<()>(conn)
        .await;
    match r {
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        other => other.map_err(|e| map_err("subscribe", e)),
    }
}
