//! Configuration of the NATS backend: from a URL, or built in code
//! (`..Default::default()` for whatever is not set).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use transport_core::tls::TlsOptions;
use transport_core::{Error, Result, Secret};

/// Where JetStream keeps a topic's messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Storage {
    /// On disk (survives a server restart).
    #[default]
    File,
    /// In memory.
    Memory,
}

/// Settings of a NATS JetStream transport. Secrets never show in `Debug`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsConfig {
    /// Server addresses (`host:port`).
    pub servers: Vec<String>,
    /// Require TLS (`tls://`).
    pub tls: bool,
    /// The CA to trust and the client certificate (`tls_ca`, `tls_cert`,
    /// `tls_key`); the system's roots and no client certificate when empty.
    pub tls_options: TlsOptions,
    /// User name (with `password`).
    pub user: Option<String>,
    /// Password.
    pub password: Option<Secret>,
    /// Token authentication.
    pub token: Option<Secret>,
    /// NKey seed.
    pub nkey: Option<Secret>,
    /// Path of a `.creds` file.
    pub credentials_file: Option<String>,
    /// Prefix of every stream name this backend creates.
    pub stream_prefix: String,
    /// Storage of streams created on demand.
    pub storage: Storage,
    /// Replicas of streams created on demand.
    pub replicas: usize,
    /// Maximum age of messages in streams created on demand (`None`: keep).
    pub max_age: Option<Duration>,
    /// Publish-deduplication window of streams created on demand.
    pub duplicate_window: Duration,
    /// Send the message id as `Nats-Msg-Id`, so a publish retried within
    /// the duplicate window is stored once. Off, the server skips its
    /// duplicate lookup (about a tenth more publishes per second on one
    /// connection) and a retried publish may be stored twice.
    pub dedup: bool,
    /// Wait for the server's confirmation of every ack (`AckAck`).
    pub double_ack: bool,
    /// Connection timeout.
    pub connect_timeout: Duration,
    /// How long any request to the server (a JetStream publish ack, a stream
    /// or consumer lookup, a fetch) may go unanswered before it fails with
    /// `Timeout`.
    pub request_timeout: Duration,
    /// Create streams and durable consumers on first use (`true`, the
    /// default). With `false` nothing is created: a missing stream or
    /// consumer is `NotFound` (create them with `transport provision`).
    pub provision: bool,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            servers: vec!["127.0.0.1:4222".into()],
            tls: false,
            tls_options: TlsOptions::default(),
            user: None,
            password: None,
            token: None,
            nkey: None,
            credentials_file: None,
            stream_prefix: "TRANSPORT_".into(),
            storage: Storage::File,
            replicas: 1,
            max_age: None,
            duplicate_window: Duration::from_secs(120),
            dedup: true,
            double_ack: false,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            provision: true,
        }
    }
}

impl NatsConfig {
    /// Parse `nats://[user:password@|token@]host[:port][,host2:port][?options]`
    /// or `tls://...`. Options: `nkey`, `creds` (file path), `stream_prefix`,
    /// `storage` (`file`|`memory`), `replicas`, `max_age_ms`,
    /// `duplicate_window_ms`, `dedup`, `double_ack` and `provision` (`true`|`false`), `connect_timeout_ms`,
    /// `request_timeout_ms`, and with `tls://` the TLS options `tls_ca`,
    /// `tls_cert`, `tls_key` (file paths).
    pub fn from_url(url: &str) -> Result<Self> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| Error::invalid("a NATS URL looks like nats://host:4222"))?;
        let mut c = NatsConfig::default();
        match scheme {
            "nats" => {}
            "tls" => c.tls = true,
            other => return Err(Error::invalid(format!("expected nats:// or tls://, got {other}://"))),
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
        match userinfo.map(|u| u.split_once(':')) {
            Some(Some((user, pass))) => {
                c.user = Some(decode(user)?);
                c.password = Some(Secret::new(decode(pass)?));
            }
            Some(None) => c.token = Some(Secret::new(decode(userinfo.unwrap_or_default())?)),
            None => {}
        }
        if !hosts.is_empty() {
            c.servers = hosts
                .split(',')
                .map(|h| {
                    if h.contains(':') {
                        h.to_owned()
                    } else {
                        format!("{h}:4222")
                    }
                })
                .collect();
        }
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            let num = |what: &str| {
                v.parse::<u64>()
                    .map_err(|_| Error::invalid(format!("NATS URL option {what} must be a number, got {v:?}")))
            };
            let flag = |what: &str| {
                v.parse::<bool>()
                    .map_err(|_| Error::invalid(format!("NATS URL option {what} must be true or false, got {v:?}")))
            };
            if c.tls_options.url_option(&k, &v)? {
                c.tls_options.require_tls(c.tls, "tls://")?;
                continue;
            }
            match k.as_ref() {
                "nkey" => c.nkey = Some(Secret::new(v.to_string())),
                "creds" => c.credentials_file = Some(v.to_string()),
                "stream_prefix" => c.stream_prefix = v.to_string(),
                "storage" => {
                    c.storage = match v.as_ref() {
                        "file" => Storage::File,
                        "memory" => Storage::Memory,
                        other => return Err(Error::invalid(format!("storage must be file or memory, got {other:?}"))),
                    }
                }
                "replicas" => {
                    c.replicas = num("replicas")? as usize;
                    // JetStream's own limit; checked here so a typo is a
                    // configuration error, not a failed stream creation later.
                    if !(1..=5).contains(&c.replicas) {
                        return Err(Error::invalid(format!("replicas must be 1 to 5, got {v}")));
                    }
                }
                "max_age_ms" => c.max_age = Some(Duration::from_millis(num("max_age_ms")?)),
                "duplicate_window_ms" => c.duplicate_window = Duration::from_millis(num("duplicate_window_ms")?),
                "dedup" => c.dedup = flag("dedup")?,
                "double_ack" => c.double_ack = flag("double_ack")?,
                "provision" => c.provision = transport_core::backend::provision_option(&v)?,
                "connect_timeout_ms" => c.connect_timeout = Duration::from_millis(num("connect_timeout_ms")?),
                "request_timeout_ms" => c.request_timeout = Duration::from_millis(num("request_timeout_ms")?),
                other => return Err(Error::invalid(format!("unknown NATS URL option {other:?}"))),
            }
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls_and_hides_secrets() {
        let c = NatsConfig::from_url("nats://app:p%40ss@a:4222,b?storage=memory&replicas=3").unwrap();
        assert_eq!(c.servers, ["a:4222", "b:4222"]);
        assert_eq!(c.user.as_deref(), Some("app"));
        assert_eq!(c.password.as_ref().unwrap().expose(), "p@ss");
        assert_eq!((c.storage, c.replicas), (Storage::Memory, 3));
        assert!(!format!("{c:?}").contains("p@ss"));
        // Percent-decoding: a `+` in a password stays a `+`.
        let plus = NatsConfig::from_url("nats://u:a+b%2Bc@h").unwrap();
        assert_eq!(plus.password.as_ref().unwrap().expose(), "a+b+c");
        let t = NatsConfig::from_url("tls://s3cr3t@h:4443").unwrap();
        assert!(t.tls);
        assert_eq!(t.token.as_ref().unwrap().expose(), "s3cr3t");
        assert!(!format!("{t:?}").contains("s3cr3t"));
        assert!(NatsConfig::from_url("nats://h?bogus=1").is_err());
        assert!(NatsConfig::from_url("http://h").is_err());
        for bad in ["0", "6", "three"] {
            let e = NatsConfig::from_url(&format!("nats://h?replicas={bad}")).unwrap_err();
            assert_eq!(e.kind(), transport_core::ErrorKind::InvalidArgument, "{e}");
        }
    }

    #[test]
    fn flags_are_true_or_false() {
        assert!(NatsConfig::from_url("nats://h").unwrap().dedup, "on by default");
        let c = NatsConfig::from_url("nats://h?dedup=false&double_ack=true").unwrap();
        assert!(!c.dedup && c.double_ack);
        for bad in ["dedup=no", "double_ack=yes", "dedup="] {
            let e = NatsConfig::from_url(&format!("nats://h?{bad}")).unwrap_err();
            assert_eq!(e.kind(), transport_core::ErrorKind::InvalidArgument, "{bad}: {e}");
        }
    }

    #[test]
    fn tls_options_from_the_url_and_never_their_key_text() {
        use transport_core::tls::Pem;
        let c = NatsConfig::from_url("tls://h:4443?tls_ca=/ca.pem&tls_cert=/c.pem&tls_key=/c.key").unwrap();
        assert_eq!(c.tls_options.ca, Some(Pem::File("/ca.pem".into())));
        assert_eq!(c.tls_options.key, Some(Pem::File("/c.key".into())));
        // On a plain URL they would be ignored: refused instead.
        let e = NatsConfig::from_url("nats://h?tls_ca=/ca.pem").unwrap_err();
        assert_eq!(e.kind(), transport_core::ErrorKind::InvalidArgument, "{e}");
        let mut c = NatsConfig::default();
        c.tls_options.key = Some(Pem::Text(
            "-----BEGIN PRIVATE KEY-----\nSECRETBODY\n-----END PRIVATE KEY-----".into(),
        ));
        assert!(!format!("{c:?}").contains("SECRETBODY"));
    }
}
