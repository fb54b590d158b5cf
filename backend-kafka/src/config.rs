//! Configuration of the Kafka backend: from a URL, or built in code
//! (`..Default::default()` for whatever is not set).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use transport_core::tls::{Pem, TlsOptions};
use transport_core::{Error, Result, Secret};

/// SASL mechanism for authenticating to the brokers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SaslMechanism {
    /// `PLAIN` (use with TLS: the password crosses the wire as is).
    Plain,
    /// `SCRAM-SHA-256`.
    ScramSha256,
    /// `SCRAM-SHA-512`.
    ScramSha512,
}

impl SaslMechanism {
    /// The name librdkafka expects in `sasl.mechanism`.
    pub fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }

    fn parse(s: &str) -> Result<Self> {
        match s.to_ascii_uppercase().replace('_', "-").as_str() {
            "PLAIN" => Ok(SaslMechanism::Plain),
            "SCRAM-SHA-256" => Ok(SaslMechanism::ScramSha256),
            "SCRAM-SHA-512" => Ok(SaslMechanism::ScramSha512),
            other => Err(Error::invalid(format!(
                "sasl must be plain, scram-sha-256 or scram-sha-512, got {other:?}"
            ))),
        }
    }
}

/// Settings of a Kafka transport. The password never shows in `Debug`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap brokers (`host:port`).
    pub brokers: Vec<String>,
    /// Connect with TLS (`kafka+ssl://`).
    pub tls: bool,
    /// The CA to trust and the client certificate (`tls_ca`, `tls_cert`,
    /// `tls_key`), handed to librdkafka (`ssl.ca.location` or
    /// `ssl.ca.pem`, and so on); the system's roots when empty.
    pub tls_options: TlsOptions,
    /// SASL mechanism; set together with `user` and `password`.
    pub sasl: Option<SaslMechanism>,
    /// SASL user name.
    pub user: Option<String>,
    /// SASL password.
    pub password: Option<Secret>,
    /// Create missing topics (`true`, the default). With `false` nothing is
    /// created: publishing to or subscribing to a missing topic (or one
    /// without its dead-letter topic) is `NotFound` (create them with
    /// `transport provision`).
    pub provision: bool,
    /// Partitions of topics created on demand.
    pub partitions: i32,
    /// Partitions of dead-letter topics created on demand (1 keeps the
    /// dead-letter queue in one order).
    pub dlq_partitions: i32,
    /// Replication factor of topics created on demand.
    pub replication: i32,
    /// `min.insync.replicas` of topics created on demand: how many replicas
    /// must have a publish (the producer asks for `acks=all`) before it
    /// returns. `None`: one less than `replication` when that is 3 or more
    /// (a topic keeps taking publishes with one broker down, and no
    /// acknowledged publish rests on one broker alone), else the broker's
    /// default.
    pub min_insync_replicas: Option<i32>,
    /// Largest message accepted by `publish` (payload, headers, id and key).
    /// Must not exceed the broker's `message.max.bytes`.
    pub max_message_bytes: usize,
    /// How long a publish may take before it fails with `Timeout`
    /// (librdkafka `message.timeout.ms`).
    pub publish_timeout: Duration,
    /// Consumer-group session timeout: how soon a crashed consumer's
    /// partitions move to the others, and the floor of a group join.
    pub session_timeout: Duration,
    /// Consumer group of the dead-letter operations (its committed offset on
    /// a dead-letter topic marks what was already redriven or purged).
    pub dlq_group: String,
    /// Timeout of metadata, admin and offset requests.
    pub request_timeout: Duration,
    /// librdkafka `client.id`.
    pub client_id: String,
    /// The Kafka consumer group of a subscription is `<topic>.<group>`
    /// (default), like the queue per topic and group of the other backends:
    /// members of one group on different topics then never rebalance each
    /// other. Off: the group name is used as is.
    pub scoped_groups: bool,
    /// The partition assignment strategies this member offers the group
    /// (librdkafka `partition.assignment.strategy`), in preference order:
    /// `range` and `roundrobin`. Every member of a group must share one, so
    /// foreign members (kafkajs, the Java client, ...) must offer one of
    /// these; a member that offers none of them makes joining fail with
    /// `InvalidArgument`. Cooperative rebalancing (`cooperative-sticky`) is
    /// not supported: the library takes over partitions whole.
    pub assignment: Vec<String>,
    /// `purge` also asks the broker to `DeleteRecords` up to the purged
    /// offset (off for brokers without it, such as Tansu 0.6 on SQLite,
    /// where the request crashes the broker's storage).
    pub purge_deletes_records: bool,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: vec!["127.0.0.1:9092".into()],
            tls: false,
            tls_options: TlsOptions::default(),
            sasl: None,
            user: None,
            password: None,
            provision: true,
            partitions: 4,
            dlq_partitions: 1,
            replication: 1,
            min_insync_replicas: None,
            max_message_bytes: 1_000_000,
            publish_timeout: Duration::from_secs(30),
            session_timeout: Duration::from_secs(10),
            dlq_group: "transport-dlq".into(),
            request_timeout: Duration::from_secs(10),
            client_id: "transport".into(),
            purge_deletes_records: true,
            scoped_groups: true,
            assignment: vec!["range".into(), "roundrobin".into()],
        }
    }
}

impl KafkaConfig {
    /// Parse `kafka://[user:password@]host[:port][,host2:port][?options]` or
    /// `kafka+ssl://...` (TLS). Options: `sasl` (`plain`, `scram-sha-256`,
    /// `scram-sha-512`), `tls_ca`, `tls_cert`, `tls_key` (file paths, with
    /// TLS), `provision` (`true`|`false`), `partitions`,
    /// `dlq_partitions`, `replication`, `min_insync_replicas`, `max_message_bytes`,
    /// `publish_timeout_ms`, `session_timeout_ms`, `request_timeout_ms`,
    /// `dlq_group`, `client_id`, `delete_records` (`false`: `purge` only
    /// moves the dead-letter group's offset), `scoped_groups` (`false`: the
    /// Kafka group id is the group name, not `<topic>.<group>`), `assignment`
    /// (`range`, `roundrobin` or both, comma-separated: the strategies this
    /// member offers its group). User and password without `sasl` mean
    /// `scram-sha-512`.
    pub fn from_url(url: &str) -> Result<Self> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| Error::invalid("a Kafka URL looks like kafka://host:9092"))?;
        let mut c = KafkaConfig::default();
        match scheme {
            "kafka" => {}
            "kafka+ssl" | "kafkas" => c.tls = true,
            other => {
                return Err(Error::invalid(format!(
                    "expected kafka:// or kafka+ssl://, got {other}://"
                )))
            }
        }
        let (authority, query) = match rest.split_once('?') {
            Some((a, q)) => (a.trim_end_matches('/'), q),
            None => (rest.trim_end_matches('/'), ""),
        };
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        // Percent-decoding, not form decoding: a `+` in a password is a `+`.
        let decode = transport_core::backend::decode_userinfo;
        if let Some(u) = userinfo {
            let (user, pass) = u
                .split_once(':')
                .ok_or_else(|| Error::invalid("Kafka URL credentials look like user:password@"))?;
            c.user = Some(decode(user)?);
            c.password = Some(Secret::new(decode(pass)?));
        }
        if !hosts.is_empty() {
            c.brokers = hosts
                .split(',')
                .map(|h| {
                    if h.contains(':') {
                        h.to_owned()
                    } else {
                        format!("{h}:9092")
                    }
                })
                .collect();
        }
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            let num = |what: &str| {
                v.parse::<u64>()
                    .map_err(|_| Error::invalid(format!("Kafka URL option {what} must be a number, got {v:?}")))
            };
            if c.tls_options.url_option(&k, &v)? {
                continue;
            }
            match k.as_ref() {
                "sasl" => c.sasl = Some(SaslMechanism::parse(&v)?),
                "tls" => c.tls = v == "true",
                "provision" => c.provision = transport_core::backend::provision_option(&v)?,
                "create" => {
                    return Err(Error::invalid(
                        "URL option create was renamed provision (provision=false)",
                    ))
                }
                "partitions" => c.partitions = num("partitions")? as i32,
                "dlq_partitions" => c.dlq_partitions = num("dlq_partitions")? as i32,
                "replication" => c.replication = num("replication")? as i32,
                "min_insync_replicas" => c.min_insync_replicas = Some(num("min_insync_replicas")? as i32),
                "max_message_bytes" => c.max_message_bytes = num("max_message_bytes")? as usize,
                "publish_timeout_ms" => c.publish_timeout = Duration::from_millis(num("publish_timeout_ms")?),
                "session_timeout_ms" => c.session_timeout = Duration::from_millis(num("session_timeout_ms")?),
                "request_timeout_ms" => c.request_timeout = Duration::from_millis(num("request_timeout_ms")?),
                "dlq_group" => c.dlq_group = v.into_owned(),
                "client_id" => c.client_id = v.into_owned(),
                "delete_records" => c.purge_deletes_records = v != "false",
                "scoped_groups" => c.scoped_groups = v != "false",
                "assignment" => c.assignment = v.split(',').map(|s| s.trim().to_owned()).collect(),
                other => return Err(Error::invalid(format!("unknown Kafka URL option {other:?}"))),
            }
        }
        if c.user.is_some() && c.sasl.is_none() {
            c.sasl = Some(SaslMechanism::ScramSha512);
        }
        c.validate()?;
        Ok(c)
    }

    /// librdkafka settings these give every client (brokers, client id,
    /// TLS, SASL), for raw rdkafka clients that should reach the same
    /// cluster as the transport. Holds the password, and a private key
    /// given as text (`Pem::Text` in `tls_options`; a file is passed by
    /// path): do not log it (rdkafka's `Debug` of it hides the password,
    /// not `ssl.key.pem`).
    pub fn client_config(&self) -> rdkafka::config::ClientConfig {
        let config = self;
        let mut c = rdkafka::config::ClientConfig::new();
        c.set("bootstrap.servers", config.brokers.join(","))
            .set("client.id", &config.client_id)
            .set("socket.keepalive.enable", "true")
            .set(
                "socket.connection.setup.timeout.ms",
                config.request_timeout.as_millis().to_string(),
            )
            .set_log_level(rdkafka::config::RDKafkaLogLevel::Warning);
        let protocol = match (config.tls, config.sasl.is_some()) {
            (false, false) => "plaintext",
            (true, false) => "ssl",
            (false, true) => "sasl_plaintext",
            (true, true) => "sasl_ssl",
        };
        c.set("security.protocol", protocol);
        // Files by path (librdkafka reads them at connect); text as is.
        let tls = &config.tls_options;
        for (pem, location, text) in [
            (&tls.ca, "ssl.ca.location", "ssl.ca.pem"),
            (&tls.cert, "ssl.certificate.location", "ssl.certificate.pem"),
            (&tls.key, "ssl.key.location", "ssl.key.pem"),
        ] {
            match pem {
                Some(Pem::File(path)) => c.set(location, path.display().to_string()),
                Some(Pem::Text(pem)) => c.set(text, pem),
                None => &mut c,
            };
        }
        if let (Some(mechanism), Some(user), Some(password)) = (config.sasl, &config.user, &config.password) {
            c.set("sasl.mechanism", mechanism.as_str())
                .set("sasl.username", user)
                .set("sasl.password", password.expose());
        }
        c
    }

    /// The Kafka consumer group id of `group` on `topic`.
    pub fn group_id(&self, topic: &str, group: &str) -> String {
        if self.scoped_groups {
            format!("{topic}.{group}")
        } else {
            group.to_owned()
        }
    }

    /// The `min.insync.replicas` to create topics with, if any.
    pub(crate) fn topic_min_insync(&self) -> Option<i32> {
        self.min_insync_replicas
            .or((self.replication >= 3).then_some(self.replication - 1))
    }

    /// Check the numbers and combinations.
    pub fn validate(&self) -> Result<()> {
        self.tls_options.require_tls(self.tls, "kafka+ssl://")?;
        if self.tls_options.cert.is_some() != self.tls_options.key.is_some() {
            return Err(Error::invalid(
                "tls_cert and tls_key go together: a client certificate needs its private key",
            ));
        }
        if self.brokers.is_empty() {
            return Err(Error::invalid("at least one Kafka broker is needed"));
        }
        if self.partitions < 1 || self.dlq_partitions < 1 || self.replication < 1 {
            return Err(Error::invalid(
                "partitions, dlq_partitions and replication must be at least 1",
            ));
        }
        if let Some(n) = self.min_insync_replicas {
            if n < 1 || n > self.replication {
                return Err(Error::invalid(format!(
                    "min_insync_replicas must be 1 to replication ({}), got {n}",
                    self.replication
                )));
            }
        }
        if self.sasl.is_some() && (self.user.is_none() || self.password.is_none()) {
            return Err(Error::invalid("SASL needs a user and a password"));
        }
        if self.session_timeout < Duration::from_secs(1) {
            return Err(Error::invalid("session_timeout must be at least 1 s"));
        }
        if self.assignment.is_empty() || self.assignment.iter().any(String::is_empty) {
            return Err(Error::invalid(
                "assignment needs at least one strategy: range, roundrobin",
            ));
        }
        for strategy in &self.assignment {
            match strategy.as_str() {
                "range" | "roundrobin" => {}
                "cooperative-sticky" => {
                    return Err(Error::invalid(
                        "assignment cooperative-sticky is not supported: the library takes over partitions whole \
                         (eager rebalancing); use range or roundrobin, and have the group's other members offer one of them",
                    ))
                }
                other => {
                    return Err(Error::invalid(format!(
                        "unknown assignment strategy {other:?}: range or roundrobin"
                    )))
                }
            }
        }
        // librdkafka's socket.connection.setup.timeout.ms floor.
        if self.request_timeout < Duration::from_secs(1) {
            return Err(Error::invalid("request_timeout_ms must be at least 1000"));
        }
        if self.max_message_bytes < 1024 {
            return Err(Error::invalid("max_message_bytes must be at least 1024"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls_and_hides_secrets() {
        let c =
            KafkaConfig::from_url("kafka+ssl://app:p%40ss@a:9093,b?sasl=scram-sha-256&partitions=8&provision=false")
                .unwrap();
        assert_eq!(c.brokers, ["a:9093", "b:9092"]);
        assert!(c.tls && !c.provision);
        assert_eq!(c.sasl, Some(SaslMechanism::ScramSha256));
        assert_eq!(c.partitions, 8);
        assert_eq!(c.password.as_ref().unwrap().expose(), "p@ss");
        assert!(!format!("{c:?}").contains("p@ss"));
        // Percent-decoding: a `+` in a password stays a `+`.
        let plus = KafkaConfig::from_url("kafka://u:a+b%2Bc@h").unwrap();
        assert_eq!(plus.password.as_ref().unwrap().expose(), "a+b+c");
        let d = KafkaConfig::from_url("kafka://u:pw@h").unwrap();
        assert_eq!(d.sasl, Some(SaslMechanism::ScramSha512));
        assert!(KafkaConfig::from_url("kafka://h?bogus=1").is_err());
        assert!(KafkaConfig::from_url("kafka://h?partitions=0").is_err());
        let three = KafkaConfig::from_url("kafka://a,b,c?replication=3").unwrap();
        assert_eq!(three.topic_min_insync(), Some(2));
        let set = KafkaConfig::from_url("kafka://a,b,c?replication=3&min_insync_replicas=3").unwrap();
        assert_eq!(set.topic_min_insync(), Some(3));
        assert_eq!(KafkaConfig::from_url("kafka://a").unwrap().topic_min_insync(), None);
        for bad in [
            "kafka://a?replication=3&min_insync_replicas=4",
            "kafka://a?min_insync_replicas=0",
        ] {
            let e = KafkaConfig::from_url(bad)
                .and_then(|c| c.validate().map(|_| c))
                .unwrap_err();
            assert_eq!(e.kind(), transport_core::ErrorKind::InvalidArgument, "{bad}: {e}");
        }
        assert!(KafkaConfig::from_url("kafka://h?sasl=plain").is_err());
        assert!(KafkaConfig::from_url("http://h").is_err());
        assert_eq!(KafkaConfig::from_url("kafka://").unwrap().brokers, ["127.0.0.1:9092"]);
        assert_eq!(d.group_id("orders", "billing"), "orders.billing");
        let e = KafkaConfig::from_url("kafka://h?scoped_groups=false&delete_records=false").unwrap();
        assert_eq!(e.group_id("orders", "billing"), "billing");
        assert!(!e.purge_deletes_records);
    }

    #[test]
    fn assignment_strategies_are_checked() {
        assert_eq!(KafkaConfig::default().assignment, ["range", "roundrobin"]);
        let c = KafkaConfig::from_url("kafka://h?assignment=roundrobin").unwrap();
        assert_eq!(c.assignment, ["roundrobin"]);
        let both = KafkaConfig::from_url("kafka://h?assignment=roundrobin,%20range").unwrap();
        assert_eq!(both.assignment, ["roundrobin", "range"]);
        for bad in ["cooperative-sticky", "sticky", "", "range,"] {
            let e = KafkaConfig::from_url(&format!("kafka://h?assignment={bad}")).unwrap_err();
            assert_eq!(e.kind(), transport_core::ErrorKind::InvalidArgument, "{bad}: {e}");
            assert!(!e.is_retryable());
        }
        let e = KafkaConfig::from_url("kafka://h?assignment=cooperative-sticky").unwrap_err();
        assert!(e.to_string().contains("not supported"), "{e}");
    }
}
