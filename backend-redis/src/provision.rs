//! The keys of a topic and group, and creating the consumer group
//! (`XGROUP CREATE ... MKSTREAM`).

use transport_core::{Result, StartFrom, SubscribeOptions};

use crate::config::RedisConfig;
use crate::core::{map_err, Conn};

/// The keys of one topic and group.
#[derive(Clone)]
pub(crate) struct Keys {
    pub(crate) stream: String,
    pub(crate) delayed: String,
    pub(crate) failures: String,
    pub(crate) dlq: String,
    /// On a cluster the dead-letter stream (a topic of its own) hashes to
    /// another slot than the stream, so no script may touch both.
    pub(crate) dlq_apart: bool,
}

impl Keys {
    pub(crate) fn new(config: &RedisConfig, topic: &str, options: &SubscribeOptions) -> Self {
        let prefix = &config.key_prefix;
        let stream = format!("{prefix}{topic}");
        // ':' is not allowed in topic names, so these never collide with a
        // stream. On a cluster the helper keys carry the stream's name as
        // their hash tag: `{orders}:g:delayed` hashes like `orders` itself,
        // so the stream keeps its plain name (what other producers XADD to)
        // and every script's keys share one slot. A single server keeps the
        // names it always had, so existing deployments need no migration.
        let helper = if config.cluster_nodes.is_empty() {
            stream.clone()
        } else {
            format!("{{{stream}}}")
        };
        Keys {
            delayed: format!("{helper}:{}:delayed", options.group),
            failures: format!("{helper}:{}:failures", options.group),
            dlq: format!("{prefix}{}", options.dlq_topic(topic)),
            dlq_apart: !config.cluster_nodes.is_empty(),
            stream,
        }
    }
}

pub(crate) async fn create_group(conn: &mut Conn, keys: &Keys, group: &str, start: StartFrom) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use redis::cluster_routing::Slot;

    #[test]
    fn cluster_keys_share_the_stream_slot_and_single_names_stay() {
        let options = SubscribeOptions::new("billing");
        let single = Keys::new(&RedisConfig::default(), "orders", &options);
        assert_eq!(
            (
                single.stream.as_str(),
                single.delayed.as_str(),
                single.failures.as_str()
            ),
            ("orders", "orders:billing:delayed", "orders:billing:failures")
        );
        assert!(!single.dlq_apart);
        let cluster = RedisConfig {
            cluster_nodes: vec!["h:7001".into()],
            key_prefix: "shop:".into(),
            ..RedisConfig::default()
        };
        let k = Keys::new(&cluster, "orders.eu", &options);
        assert_eq!(
            k.stream, "shop:orders.eu",
            "the stream keeps the name other producers use"
        );
        assert_eq!(k.delayed, "{shop:orders.eu}:billing:delayed");
        let slot = |key: &str| Slot::for_key(key);
        assert_eq!(slot(&k.delayed), slot(&k.stream));
        assert_eq!(slot(&k.failures), slot(&k.stream));
        assert!(k.dlq_apart);
    }
}
