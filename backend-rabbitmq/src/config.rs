//! Configuration of the RabbitMQ backend: from a URL, or built in code
//! (`..Default::default()` for whatever is not set).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use transport_core::tls::TlsOptions;
use transport_core::{Error, Result, Secret};

/// Settings of a RabbitMQ transport. The password never shows in `Debug`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RabbitConfig {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Virtual host.
    pub vhost: String,
    /// User name.
    pub user: String,
    /// Password.
    pub password: Secret,
    /// Use TLS (`amqps://`).
    pub tls: bool,
    /// The CA to trust (added to the system's roots) and the client
    /// certificate (`tls_ca`, `tls_cert`, `tls_key`).
    pub tls_options: TlsOptions,
    /// Let only one consumer of a group receive at a time
    /// (`x-single-active-consumer`): strict per-key order, no competition.
    pub single_active_consumer: bool,
    /// Largest message in bytes.
    pub max_message_size: usize,
    /// Connection timeout.
    pub connect_timeout: Duration,
    /// Longest a publish (until the broker's confirm) or a dead-letter
    /// operation may take before it fails with `Timeout`; the connection is
    /// then opened again, so a broker that died without closing its sockets
    /// cannot hang the transport.
    pub request_timeout: Duration,
    /// Most publishes sent and not yet confirmed by the broker, across every
    /// caller of the transport (default 1024). Publishing keeps this many in
    /// flight instead of waiting for each confirm, and waits for the oldest
    /// confirm when the window is full, which bounds the memory a slow broker
    /// can make the client hold.
    pub publish_window: usize,
    /// Nodes of a cluster (`host:port`), tried in turn when connecting and
    /// after a connection is lost; empty: `host`:`port` only. With more than
    /// one, every queue the backend declares is a replicated quorum queue.
    pub nodes: Vec<String>,
    /// Members of each quorum queue the backend declares
    /// (`x-quorum-initial-group-size`); `None`: the broker's default (every
    /// node of the cluster). Setting it also makes the dead-letter and
    /// delay queues quorum queues.
    pub quorum_group_size: Option<u32>,
    /// The delays nacks are parked for (`retry_delays_ms=1000,30000`): a
    /// nack's delay is rounded up to the next of these (the longest one
    /// above them all), so a group uses these retry queues only, which
    /// `provision` creates and `provision=false` checks at subscribe.
    /// Empty (the default): rounded to 100 ms steps below 1 s, seconds
    /// below a minute, minutes above, each bucket's queue declared on
    /// first use.
    pub retry_delays: Vec<Duration>,
    /// Declare exchanges, queues and bindings on first use (`true`, the
    /// default). With `false` nothing is declared: each is checked with a
    /// passive declaration (no configure permission needed) and a missing
    /// one is `NotFound` (create them with `transport provision`).
    pub provision: bool,
}

impl Default for RabbitConfig {
    fn default() -> Self {
        RabbitConfig {
            host: "127.0.0.1".into(),
            port: 5672,
            vhost: "/".into(),
            user: "guest".into(),
            password: Secret::new("guest"),
            tls: false,
            tls_options: TlsOptions::default(),
            single_active_consumer: false,
            max_message_size: 16 * 1024 * 1024,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            publish_window: 1024,
            nodes: Vec::new(),
            quorum_group_size: None,
            retry_delays: Vec::new(),
            provision: true,
        }
    }
}

impl RabbitConfig {
    /// Parse `amqp://[user:password@]host[:port][,host:port...][/vhost][?options]`
    /// or `amqps://` (TLS); several hosts are the nodes of a cluster. The
    /// vhost is percent-encoded (`%2f` is `/`, the default). Options:
    /// `single_active_consumer=true`, `max_message_size`,
    /// `connect_timeout_ms`, `request_timeout_ms`, `publish_window`,
    /// `quorum_group_size`, `retry_delays_ms` (comma-separated), `provision`
    /// (`true`|`false`).
    pub fn from_url(url: &str) -> Result<Self> {
        let Some((first, hosts)) = transport_core::backend::split_hosts(url)? else {
            return Self::from_single_url(url);
        };
        let mut c = Self::from_single_url(&first)?;
        c.nodes = hosts
            .into_iter()
            .map(|h| {
                if h.contains(':') {
                    h
                } else {
                    format!("{h}:{}", if c.tls { 5671 } else { 5672 })
                }
            })
            .collect();
        Ok(c)
    }

    /// What a URL's parser refuses, refused for a configuration built in
    /// code too.
    pub(crate) fn check(&self) -> Result<()> {
        if self.publish_window == 0 {
            return Err(Error::invalid("publish_window must be at least 1"));
        }
        if self.quorum_group_size == Some(0) {
            return Err(Error::invalid("quorum_group_size must be at least 1"));
        }
        if self.request_timeout.is_zero() {
            return Err(Error::invalid("request_timeout must be more than zero"));
        }
        Ok(())
    }

    /// Whether every queue is declared as a quorum queue (a cluster).
    /// The retry queue's delay for a nack delayed `ms`: the next of
    /// `retry_delays` (the longest when above them all), or the default
    /// bucket.
    pub(crate) fn retry_delay_ms(&self, ms: u64) -> u64 {
        let mut configured = self.retry_delays.iter().map(|d| d.as_millis() as u64);
        match configured.clone().find(|d| *d >= ms).or_else(|| configured.next_back()) {
            Some(d) => d,
            None => crate::core::delay_bucket_ms(ms),
        }
    }

    pub(crate) fn replicated(&self) -> bool {
        self.nodes.len() > 1 || self.quorum_group_size.is_some()
    }

    /// The nodes to connect to, in order.
    pub(crate) fn addresses(&self) -> Vec<String> {
        if self.nodes.is_empty() {
            vec![format!("{}:{}", self.host, self.port)]
        } else {
            self.nodes.clone()
        }
    }

    fn from_single_url(url: &str) -> Result<Self> {
        let parsed = url::Url::parse(url).map_err(|e| Error::invalid(format!("invalid AMQP URL: {e}")))?;
        let mut c = RabbitConfig::default();
        match parsed.scheme() {
            "amqp" => {}
            "amqps" => {
                c.tls = true;
                c.port = 5671;
            }
            other => return Err(Error::invalid(format!("expected amqp:// or amqps://, got {other}://"))),
        }
        // Percent-decoding (RFC 3986), like every backend: `+` is a plus.
        let decode = transport_core::backend::decode_userinfo;
        if let Some(h) = parsed.host_str().filter(|h| !h.is_empty()) {
            c.host = h.to_owned();
        }
        if let Some(p) = parsed.port() {
            c.port = p;
        }
        if !parsed.username().is_empty() {
            c.user = decode(parsed.username())?;
        }
        if let Some(p) = parsed.password() {
            c.password = Secret::new(decode(p)?);
        }
        let path = parsed.path().strip_prefix('/').unwrap_or("");
        if !path.is_empty() {
            c.vhost = decode(path)?;
        }
        for (k, v) in parsed.query_pairs() {
            if c.tls_options.url_option(&k, &v)? {
                c.tls_options.require_tls(c.tls, "amqps://")?;
                continue;
            }
            match k.as_ref() {
                "single_active_consumer" => c.single_active_consumer = v == "true",
                "max_message_size" => {
                    c.max_message_size = v
                        .parse()
                        .map_err(|_| Error::invalid(format!("max_message_size must be a number, got {v:?}")))?
                }
                "connect_timeout_ms" => {
                    c.connect_timeout = Duration::from_millis(
                        v.parse()
                            .map_err(|_| Error::invalid(format!("connect_timeout_ms must be a number, got {v:?}")))?,
                    )
                }
                "request_timeout_ms" => {
                    c.request_timeout = v
                        .parse()
                        .ok()
                        .filter(|ms| *ms > 0)
                        .map(Duration::from_millis)
                        .ok_or_else(|| {
                            Error::invalid(format!("request_timeout_ms must be a positive number, got {v:?}"))
                        })?
                }
                "publish_window" => {
                    c.publish_window =
                        v.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                            Error::invalid(format!("publish_window must be a positive number, got {v:?}"))
                        })?
                }
                "quorum_group_size" => {
                    c.quorum_group_size = Some(v.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                        Error::invalid(format!("quorum_group_size must be a positive number, got {v:?}"))
                    })?)
                }
                "retry_delays_ms" => {
                    let mut delays = v
                        .split(',')
                        .map(|d| {
                            d.trim()
                                .parse::<u64>()
                                .ok()
                                .filter(|ms| *ms > 0)
                                .map(Duration::from_millis)
                        })
                        .collect::<Option<Vec<_>>>()
                        .ok_or_else(|| {
                            Error::invalid(format!(
                                "retry_delays_ms must be positive numbers of milliseconds, comma-separated, got {v:?}"
                            ))
                        })?;
                    delays.sort();
                    delays.dedup();
                    c.retry_delays = delays;
                }
                "provision" => c.provision = transport_core::backend::provision_option(&v)?,
                other => return Err(Error::invalid(format!("unknown AMQP URL option {other:?}"))),
            }
        }
        Ok(c)
    }

    /// The URI for the client (credentials included: never log it).
    /// The URI for the client to reach `address` (`host:port`, one of
    /// [`Self::addresses`]).
    pub(crate) fn client_uri(&self, address: &str) -> String {
        let enc = transport_core::backend::encode_userinfo;
        let scheme = if self.tls { "amqps" } else { "amqp" };
        format!(
            "{scheme}://{}:{}@{address}/{}?connection_timeout={}",
            enc(&self.user),
            enc(self.password.expose()),
            enc(&self.vhost),
            self.connect_timeout.as_millis()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_built_in_code_is_checked_like_a_url() {
        assert!(RabbitConfig::default().check().is_ok());
        for bad in [
            RabbitConfig {
                publish_window: 0,
                ..RabbitConfig::default()
            },
            RabbitConfig {
                quorum_group_size: Some(0),
                ..RabbitConfig::default()
            },
            RabbitConfig {
                request_timeout: Duration::ZERO,
                ..RabbitConfig::default()
            },
        ] {
            let e = bad.check().unwrap_err();
            assert_eq!(e.kind(), transport_core::ErrorKind::InvalidArgument, "{e}");
            assert!(!e.is_retryable(), "{e}");
        }
    }

    #[test]
    fn parses_and_hides_the_password() {
        let c = RabbitConfig::from_url("amqps://app:s%40cret@mq.example/orders%2Fprod?single_active_consumer=true")
            .unwrap();
        assert!(c.tls && c.single_active_consumer);
        assert_eq!(
            (c.host.as_str(), c.port, c.vhost.as_str()),
            ("mq.example", 5671, "orders/prod")
        );
        assert_eq!((c.user.as_str(), c.password.expose()), ("app", "s@cret"));
        assert!(!format!("{c:?}").contains("cret"));
        let d = RabbitConfig::from_url("amqp://127.0.0.1:5672/%2f").unwrap();
        assert_eq!(d.vhost, "/");
        assert!(RabbitConfig::from_url("amqp://h?x=1").is_err());
        assert_eq!(d.addresses(), ["127.0.0.1:5672"]);
        assert!(!d.replicated());
    }

    #[test]
    fn nack_delays_round_up_to_the_configured_retry_delays() {
        let c = RabbitConfig::from_url("amqp://h/%2f?retry_delays_ms=30000,1000,1000").unwrap();
        assert_eq!(c.retry_delays, [Duration::from_secs(1), Duration::from_secs(30)]);
        assert_eq!(c.retry_delay_ms(1), 1_000);
        assert_eq!(c.retry_delay_ms(1_000), 1_000);
        assert_eq!(c.retry_delay_ms(1_001), 30_000);
        assert_eq!(c.retry_delay_ms(90_000), 30_000, "above them all: the longest");
        assert_eq!(
            RabbitConfig::default().retry_delay_ms(1_500),
            2_000,
            "the default buckets"
        );
        for bad in ["", "0", "1000,x", "-5"] {
            let e = RabbitConfig::from_url(&format!("amqp://h/%2f?retry_delays_ms={bad}")).unwrap_err();
            assert_eq!(e.kind(), transport_core::ErrorKind::InvalidArgument, "{bad:?}");
        }
    }

    #[test]
    fn parses_cluster_nodes() {
        let c = RabbitConfig::from_url("amqp://app:p%40ss@a:5681,b,c:5683/prod?quorum_group_size=3").unwrap();
        assert_eq!(c.addresses(), ["a:5681", "b:5672", "c:5683"]);
        assert_eq!((c.vhost.as_str(), c.quorum_group_size), ("prod", Some(3)));
        assert!(c.replicated());
        assert_eq!(
            c.client_uri("b:5672"),
            "amqp://app:p%40ss@b:5672/prod?connection_timeout=5000"
        );
        assert!(!format!("{c:?}").contains("p@ss"));
        for bad in ["amqp://a,,b/", "amqp://a,b/?quorum_group_size=0", "http://a,b"] {
            let e = RabbitConfig::from_url(bad).unwrap_err();
            assert_eq!(e.kind(), transport_core::ErrorKind::InvalidArgument, "{bad}: {e}");
        }
    }

    #[test]
    fn tls_options_from_the_url_and_never_their_key_text() {
        use transport_core::tls::Pem;
        let c = RabbitConfig::from_url("amqps://h?tls_ca=/ca.pem&tls_cert=/c.pem&tls_key=/c.key").unwrap();
        assert_eq!(c.tls_options.ca, Some(Pem::File("/ca.pem".into())));
        assert_eq!(c.tls_options.cert, Some(Pem::File("/c.pem".into())));
        // On a plain URL they would be ignored: refused instead.
        let e = RabbitConfig::from_url("amqp://h?tls_ca=/ca.pem").unwrap_err();
        assert_eq!(e.kind(), transport_core::ErrorKind::InvalidArgument, "{e}");
        let c = RabbitConfig {
            tls_options: transport_core::tls::TlsOptions {
                key: Some(Pem::Text(
                    "-----BEGIN PRIVATE KEY-----\nSECRETBODY\n-----END PRIVATE KEY-----".into(),
                )),
                ..Default::default()
            },
            ..RabbitConfig::default()
        };
        assert!(!format!("{c:?}").contains("SECRETBODY"));
    }
}
