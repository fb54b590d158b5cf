//! The name of every Redis object this backend uses, in one place: a
//! topic's stream, a group's delayed set and failure times, the dead-letter
//! stream, a consumer's name in its group, the idempotency keys.

use transport_core::SubscribeOptions;

use crate::config::RedisConfig;

/// The stream of `topic`.
pub(crate) fn stream(config: &RedisConfig, topic: &str) -> String {
    format!("{}{topic}", config.key_prefix)
}

/// A new consumer's name in its group: unique to one subscription.
pub(crate) fn consumer() -> String {
    format!("c-{}", uuid::Uuid::now_v7().simple())
}

/// The prefix of every idempotency key.
pub(crate) fn idempotency_prefix(config: &RedisConfig) -> String {
    format!("{}idem:", config.key_prefix)
}

/// The idempotency key of `(group, id)` under `prefix`. The group's length
/// goes first, so no group and id pair can be read as another (`a:b` + `c`
/// vs `a` + `b:c`).
pub(crate) fn idempotency_key(prefix: &str, group: &str, id: &str) -> String {
    format!("{prefix}{}:{group}:{id}", group.len())
}

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
        let stream = stream(config, topic);
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
            dlq: self::stream(config, &options.dlq_topic(topic)),
            dlq_apart: !config.cluster_nodes.is_empty(),
            stream,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::cluster_routing::Slot;
    use transport_core::SubscribeOptions;

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
