//! The name of every NATS object this backend derives, in one place: a
//! topic's stream and a group's durable consumer (the subjects are the topic
//! names themselves, dead-letter topics included).

use crate::config::NatsConfig;

/// Stream or consumer name for a topic or group: `_` becomes `__` and `.`
/// becomes `_d`, so distinct names never collide and the result has no `.`.
pub(crate) fn escape(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for c in name.chars() {
        match c {
            '_' => out.push_str("__"),
            '.' => out.push_str("_d"),
            c => out.push(c),
        }
    }
    out
}

/// The stream holding `topic` (a topic or a dead-letter topic).
pub(crate) fn stream(config: &NatsConfig, topic: &str) -> String {
    format!("{}{}", config.stream_prefix, escape(topic))
}

/// The durable consumer of `group`.
pub(crate) fn consumer(group: &str) -> String {
    escape(group)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_is_injective_and_dot_free() {
        let names = ["a.b", "a_b", "a_db", "a__b", "a._b", "a_.b"];
        let escaped: std::collections::HashSet<String> = names.iter().map(|n| escape(n)).collect();
        assert_eq!(escaped.len(), names.len());
        assert!(escaped.iter().all(|e| !e.contains('.')));
    }
}
