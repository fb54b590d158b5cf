//! Configuration of the in-memory backend.

use serde::{Deserialize, Serialize};
use transport_core::{Error, Result};

/// Settings of an in-memory broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MemoryConfig {
    /// Brokers with the same name in one process share their topics
    /// (`memory://orders-test`); unnamed ones are private to their handle.
    pub name: Option<String>,
    /// Largest message (payload, headers, id and key) in bytes.
    pub max_message_size: usize,
    /// Messages every group has consumed that a topic keeps for new groups
    /// starting at `Earliest` (up to a sixteenth more between trims).
    /// Messages some group has not consumed yet are never dropped.
    pub replay_window: usize,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            name: None,
            max_message_size: 1024 * 1024,
            replay_window: 100_000,
        }
    }
}

impl MemoryConfig {
    /// Parse `memory://[name][?max_message_size=N&replay_window=N]`.
    pub fn from_url(url: &str) -> Result<Self> {
        let parsed =
            url::Url::parse(url).map_err(|e| Error::invalid(format!("invalid memory URL: {e}")).with_source(e))?;
        if parsed.scheme() != crate::SCHEME {
            return Err(Error::invalid(format!(
                "expected a memory:// URL, got {}://",
                parsed.scheme()
            )));
        }
        let mut config = MemoryConfig::default();
        if let Some(host) = parsed.host_str().filter(|h| !h.is_empty()) {
            config.name = Some(host.to_owned());
        }
        for (k, v) in parsed.query_pairs() {
            let number = || {
                v.parse::<usize>()
                    .map_err(|_| Error::invalid(format!("memory URL option {k} must be a number, got {v:?}")))
            };
            match k.as_ref() {
                "max_message_size" => config.max_message_size = number()?,
                "replay_window" => config.replay_window = number()?,
                other => return Err(Error::invalid(format!("unknown memory URL option {other:?}"))),
            }
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        assert_eq!(MemoryConfig::from_url("memory://").unwrap(), MemoryConfig::default());
        let c = MemoryConfig::from_url("memory://shared?max_message_size=10&replay_window=5").unwrap();
        assert_eq!(c.name.as_deref(), Some("shared"));
        assert_eq!((c.max_message_size, c.replay_window), (10, 5));
        assert!(MemoryConfig::from_url("memory://?bogus=1").is_err());
        assert!(MemoryConfig::from_url("redis://x").is_err());
    }
}
