//! Configuration of the Redis backend: from a URL, or built in code
//! (`..Default::default()` for whatever is not set).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use transport_core::tls::TlsOptions;
use transport_core::{Error, Result, Secret};

/// Settings of a Redis Streams transport. The password never shows in
/// `Debug` output or logs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Database number.
    pub db: i64,
    /// ACL user name.
    pub username: Option<String>,
    /// Password (of the ACL user or `requirepass`).
    pub password: Option<Secret>,
    /// Connect with TLS (`rediss://`).
    pub tls: bool,
    /// The CA to trust and the client certificate (`tls_ca`, `tls_cert`,
    /// `tls_key`); the system's roots and no client certificate when empty.
    pub tls_options: TlsOptions,
    /// Seed nodes (`host:port`) of a Redis Cluster (`redis+cluster://`); any
    /// one of them is enough to find the others. Empty: one server at
    /// `host`:`port`. In cluster mode every key of a topic and group lives in
    /// the stream's hash slot (see "Running on a cluster" in the docs).
    pub cluster_nodes: Vec<String>,
    /// Prefix of every stream and helper key, to share a database.
    pub key_prefix: String,
    /// Approximate maximum entries per stream (`XADD MAXLEN ~`); `None` keeps all.
    pub max_len: Option<u64>,
    /// Largest message in bytes.
    pub max_message_size: usize,
    /// Replicas that must hold a publish before it returns `Ok` (`WAIT`);
    /// 0 (the default) returns once the primary has it. Redis replicates
    /// asynchronously: without this, a publish acknowledged just before its
    /// primary dies can be missing on the replica promoted in its place.
    pub wait_replicas: u32,
    /// How long a publish waits for `wait_replicas`; then it fails with a
    /// retryable `Timeout` (the message is on the primary, so a retry may
    /// store it twice).
    pub wait_timeout: Duration,
    /// How long to wait for the server to accept a connection.
    pub connect_timeout: Duration,
    /// How long one command may take.
    pub command_timeout: Duration,
    /// Create streams and consumer groups on first use (`true`, the
    /// default). With `false` nothing is created: a publish to a missing
    /// stream and a subscribe without its stream, group or dead-letter
    /// stream fail with `NotFound` (create them with `transport provision`).
    pub provision: bool,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            host: "127.0.0.1".into(),
            port: 6379,
            db: 0,
            username: None,
            password: None,
            tls: false,
            tls_options: TlsOptions::default(),
            cluster_nodes: Vec::new(),
            key_prefix: String::new(),
            max_len: None,
            max_message_size: 8 * 1024 * 1024,
            wait_replicas: 0,
            wait_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(5),
            command_timeout: Duration::from_secs(10),
            provision: true,
        }
    }
}

impl RedisConfig {
    /// Parse `redis://[user[:password]@]host[:port][/db][?options]`,
    /// `rediss://` (TLS), or for a Redis Cluster
    /// `redis+cluster://[user[:password]@]host:port[,host:port...][?options]`
    /// (`rediss+cluster://` with TLS; no database number). Options:
    /// `key_prefix`, `max_len`, `max_message_size`, `connect_timeout_ms`,
    /// `command_timeout_ms`, `wait_replicas`, `wait_timeout_ms`, `provision`
    /// (`true`|`false`), and with
    /// `rediss://` the TLS options `tls_ca`, `tls_cert`, `tls_key` (file
    /// paths).
    pub fn from_url(url: &str) -> Result<Self> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| Error::invalid("a Redis URL looks like redis://host:6379"))?;
        let (single, cluster) = match scheme {
            "redis+cluster" => ("redis", true),
            "rediss+cluster" => ("rediss", true),
            "redis" | "rediss" => (scheme, false),
            other => {
                return Err(Error::invalid(format!(
                    "expected redis://, rediss:// or redis+cluster://, got {other}://"
                )))
            }
        };
        if !cluster {
            return Self::from_single_url(url);
        }
        if rest.starts_with(['/', '?']) || rest.is_empty() {
            return Err(Error::invalid("a redis+cluster:// URL needs at least one host:port"));
        }
        // Several seeds are a host list (`split_hosts`); one parses as is.
        let single_url = url.replacen(scheme, single, 1);
        let (first, seeds) = match transport_core::backend::split_hosts(&single_url)? {
            Some(split) => split,
            None => {
                let c = Self::from_single_url(&single_url)?;
                (single_url, vec![format!("{}:{}", c.host, c.port)])
            }
        };
        let mut c = Self::from_single_url(&first)?;
        if c.db != 0 {
            return Err(Error::invalid(
                "Redis Cluster has only database 0; drop the /db from the URL",
            ));
        }
        c.cluster_nodes = seeds
            .into_iter()
            .map(|h| if h.contains(':') { h } else { format!("{h}:6379") })
            .collect();
        c.check_cluster()?;
        Ok(c)
    }

    /// What cluster mode needs of the rest of the configuration.
    pub(crate) fn check_cluster(&self) -> Result<()> {
        if self.cluster_nodes.is_empty() {
            return Ok(());
        }
        if self.db != 0 {
            return Err(Error::invalid("Redis Cluster has only database 0"));
        }
        // The backend places hash tags itself (`{<prefix><topic>}`); a brace
        // in the prefix would move keys of one topic to different slots.
        if self.key_prefix.contains(['{', '}']) {
            return Err(Error::invalid(format!(
                "key_prefix {:?} contains a brace; in cluster mode the backend sets the hash tags itself",
                self.key_prefix
            )));
        }
        Ok(())
    }

    fn from_single_url(url: &str) -> Result<Self> {
        let parsed = url::Url::parse(url).map_err(|e| Error::invalid(format!("invalid Redis URL: {e}")))?;
        let mut c = RedisConfig::default();
        if parsed.scheme() == "rediss" {
            c.tls = true;
        }
        if let Some(host) = parsed.host_str().filter(|h| !h.is_empty()) {
            c.host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        }
        if let Some(port) = parsed.port() {
            c.port = port;
        }
        // Percent-decoding, not form decoding: a `+` in a password is a `+`.
        let decode = transport_core::backend::decode_userinfo;
        if !parsed.username().is_empty() {
            c.username = Some(decode(parsed.username())?);
        }
        if let Some(p) = parsed.password() {
            c.password = Some(Secret::new(decode(p)?));
        }
        let path = parsed.path().trim_start_matches('/');
        if !path.is_empty() {
            c.db = path
                .parse()
                .map_err(|_| Error::invalid(format!("Redis database must be a number, got {path:?}")))?;
        }
        for (k, v) in parsed.query_pairs() {
            let num = |what: &str| {
                v.parse::<u64>()
                    .map_err(|_| Error::invalid(format!("Redis URL option {what} must be a number, got {v:?}")))
            };
            if c.tls_options.url_option(&k, &v)? {
                c.tls_options.require_tls(c.tls, "rediss://")?;
                continue;
            }
            match k.as_ref() {
                "key_prefix" => c.key_prefix = v.to_string(),
                "max_len" => c.max_len = Some(num("max_len")?),
                "max_message_size" => c.max_message_size = num("max_message_size")? as usize,
                "connect_timeout_ms" => c.connect_timeout = Duration::from_millis(num("connect_timeout_ms")?),
                "command_timeout_ms" => c.command_timeout = Duration::from_millis(num("command_timeout_ms")?),
                "wait_replicas" => c.wait_replicas = num("wait_replicas")? as u32,
                "wait_timeout_ms" => c.wait_timeout = Duration::from_millis(num("wait_timeout_ms")?),
                "provision" => c.provision = transport_core::backend::provision_option(&v)?,
                other => return Err(Error::invalid(format!("unknown Redis URL option {other:?}"))),
            }
        }
        Ok(c)
    }

    /// The connection URL of each cluster seed (credentials included: never log them).
    pub(crate) fn cluster_urls(&self) -> Vec<String> {
        let single = self.client_url();
        let (head, _) = single.rsplit_once('@').unwrap_or(("", ""));
        let scheme = if self.tls { "rediss://" } else { "redis://" };
        let auth = if head.is_empty() {
            String::new()
        } else {
            format!("{}@", head.trim_start_matches(scheme))
        };
        self.cluster_nodes
            .iter()
            .map(|n| format!("{scheme}{auth}{n}"))
            .collect()
    }

    /// The connection URL for the redis client (credentials included: never log it).
    pub(crate) fn client_url(&self) -> String {
        let enc = transport_core::backend::encode_userinfo;
        let auth = match (&self.username, &self.password) {
            (Some(u), Some(p)) => format!("{}:{}@", enc(u), enc(p.expose())),
            (None, Some(p)) => format!(":{}@", enc(p.expose())),
            (Some(u), None) => format!("{}@", enc(u)),
            (None, None) => String::new(),
        };
        let scheme = if self.tls { "rediss" } else { "redis" };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!("{scheme}://{auth}{host}:{}/{}", self.port, self.db)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_everything_and_hides_the_password() {
        let c =
            RedisConfig::from_url("rediss://app:s%40cret@cache.example:6380/3?key_prefix=svc:&max_len=1000").unwrap();
        assert!(c.tls);
        assert_eq!((c.host.as_str(), c.port, c.db), ("cache.example", 6380, 3));
        assert_eq!(c.username.as_deref(), Some("app"));
        assert_eq!(c.password.as_ref().unwrap().expose(), "s@cret");
        assert_eq!((c.key_prefix.as_str(), c.max_len), ("svc:", Some(1000)));
        assert!(!format!("{c:?}").contains("cret"));
        assert_eq!(c.client_url(), "rediss://app:s%40cret@cache.example:6380/3");
        // Userinfo is percent-encoded: `+` is a plus, `%20` a space.
        let c = RedisConfig::from_url("redis://:p+ss%20w%2B@h").unwrap();
        assert_eq!(c.password.as_ref().unwrap().expose(), "p+ss w+");
        assert_eq!(c.client_url(), "redis://:p%2Bss%20w%2B@h:6379/0");
        assert!(RedisConfig::from_url("redis://h/notanumber").is_err());
        assert!(RedisConfig::from_url("redis://h?nope=1").is_err());
        assert!(RedisConfig::from_url("http://h").is_err());
    }

    #[test]
    fn parses_cluster_seeds() {
        let c = RedisConfig::from_url(
            "redis+cluster://u:p%40ss@a:7001,b:7002,c?command_timeout_ms=3000&wait_replicas=1&wait_timeout_ms=200",
        )
        .unwrap();
        assert_eq!(c.cluster_nodes, ["a:7001", "b:7002", "c:6379"]);
        assert_eq!((c.wait_replicas, c.wait_timeout), (1, Duration::from_millis(200)));
        assert_eq!(c.command_timeout, Duration::from_millis(3000));
        assert_eq!(
            c.cluster_urls(),
            [
                "redis://u:p%40ss@a:7001",
                "redis://u:p%40ss@b:7002",
                "redis://u:p%40ss@c:6379"
            ]
        );
        assert!(!format!("{c:?}").contains("p@ss"));
        let t = RedisConfig::from_url("rediss+cluster://h:7000/").unwrap();
        assert!(t.tls);
        assert_eq!(t.cluster_urls(), ["rediss://h:7000"]);
        for bad in [
            "redis+cluster://h:7000/2",
            "redis+cluster://",
            "redis+cluster://h:7000?key_prefix=%7Bx%7D",
            "redis+cluster://h:7000?bogus=1",
        ] {
            let e = RedisConfig::from_url(bad).unwrap_err();
            assert_eq!(e.kind(), transport_core::ErrorKind::InvalidArgument, "{bad}: {e}");
        }
    }

    #[test]
    fn tls_options_from_the_url_and_never_their_key_text() {
        use transport_core::tls::Pem;
        let c = RedisConfig::from_url("rediss://h:6380?tls_ca=/ca.pem&tls_cert=/c.pem&tls_key=/c.key").unwrap();
        assert_eq!(c.tls_options.ca, Some(Pem::File("/ca.pem".into())));
        assert_eq!(c.tls_options.key, Some(Pem::File("/c.key".into())));
        // On a plain URL they would be ignored: refused instead.
        let e = RedisConfig::from_url("redis://h?tls_ca=/ca.pem").unwrap_err();
        assert_eq!(e.kind(), transport_core::ErrorKind::InvalidArgument, "{e}");
        let mut c = RedisConfig::default();
        c.tls_options.key = Some(Pem::Text(
            "-----BEGIN PRIVATE KEY-----\nSECRETBODY\n-----END PRIVATE KEY-----".into(),
        ));
        assert!(!format!("{c:?}").contains("SECRETBODY"));
    }
}
