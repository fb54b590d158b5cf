//! The backend's core: the raw backend every operation holds (producer,
//! admin client, the topics known to exist), the client context (logging,
//! auth failures), error mapping and the record encoding.

use std::collections::HashSet;
use std::fmt::{self, Display};
use std::sync::{Arc, Mutex};

use rdkafka::admin::AdminClient;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers as _, OwnedHeaders};
use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::Message as _;
use transport_core::backend::cloudevents::Binding;
use transport_core::backend::{BackendConfig, RawTransport};
use transport_core::headers::{header_text, repeated_header_text};
use transport_core::{Bytes, Error, ErrorKind, Headers, Message, Result};

use crate::config::KafkaConfig;
use crate::SCHEME;

/// Record header carrying the message id.
pub(crate) const H_ID: &str = "transport-id";

/// Header marking a tombstone: a record whose value is null (what a
/// compacted topic deletes a key with), which an empty payload is not.
/// Consumed tombstones carry it with an empty payload; a message published
/// with it (value `true`) and an empty payload is written as one.
pub const TOMBSTONE: &str = "transport-tombstone";

/// Whether `message` stands for a tombstone.
pub(crate) fn is_tombstone(message: &Message) -> bool {
    message.payload.is_empty() && message.headers.get(TOMBSTONE) == Some("true")
}

pub(crate) fn err(kind: ErrorKind, e: impl Display) -> Error {
    Error::new(kind, e.to_string()).with_backend(SCHEME)
}

/// The library's kind for a librdkafka error code.
pub(crate) fn kind_of(code: RDKafkaErrorCode) -> ErrorKind {
    use RDKafkaErrorCode as C;
    match code {
        C::MessageSizeTooLarge | C::MessageBatchTooLarge => ErrorKind::MessageTooLarge,
        C::Authentication | C::SaslAuthenticationFailed => ErrorKind::Unauthorized,
        C::TopicAuthorizationFailed
        | C::GroupAuthorizationFailed
        | C::ClusterAuthorizationFailed
        | C::TransactionalIdAuthorizationFailed
        | C::DelegationTokenAuthorizationFailed => ErrorKind::Forbidden,
        C::UnknownTopicOrPartition | C::UnknownTopic | C::UnknownPartition | C::UnknownTopicId => ErrorKind::NotFound,
        C::MessageTimedOut | C::RequestTimedOut | C::OperationTimedOut | C::TimedOutQueue => ErrorKind::Timeout,
        C::AllBrokersDown | C::BrokerTransportFailure | C::NetworkException | C::Resolve => ErrorKind::ConnectionLost,
        C::InvalidTopic | C::PolicyViolation | C::InvalidRecord => ErrorKind::InvalidArgument,
        _ => ErrorKind::Backend,
    }
}

/// Map a client error.
pub(crate) fn kafka(e: KafkaError) -> Error {
    let kind = match &e {
        // librdkafka refusing a setting: configuration, retrying cannot help.
        KafkaError::ClientConfig(..) => ErrorKind::InvalidArgument,
        // rdkafka reports no code for admin errors, though they carry one.
        KafkaError::AdminOp(code) => kind_of(*code),
        _ => e.rdkafka_error_code().map_or(ErrorKind::Backend, kind_of),
    };
    let hint = match kind {
        ErrorKind::Unauthorized => "; check the credentials",
        ErrorKind::Forbidden => "; the principal lacks an ACL this library needs (backend-kafka/docs.md)",
        ErrorKind::ConnectionLost => "; check that the Kafka broker is running",
        _ => "",
    };
    err(kind, format!("{e}{hint}"))
}

/// What librdkafka's (OpenSSL's) handshake failure means, in the words the
/// other backends use. librdkafka reports a failed verification without
/// OpenSSL's reason, so an unknown CA, an expired certificate and a wrong
/// host name read the same.
fn tls_error(reason: &str) -> Error {
    let (kind, what) = if reason.contains("timed out in state SSL_HANDSHAKE") {
        // A plain-text port waits for more of what it took as a request.
        (
            ErrorKind::Timeout,
            "the TLS handshake did not finish in time (is this port plain text?)",
        )
    } else if reason.contains("certificate verify failed") {
        (
            ErrorKind::Tls,
            "the server's certificate could not be verified: not signed by a CA in tls_ca (or the system's), expired, or not for the host name in the URL",
        )
    } else if reason.contains("alert certificate required") {
        (
            ErrorKind::Tls,
            "the server demands a client certificate (set tls_cert and tls_key)",
        )
    } else if reason.contains("alert handshake failure") {
        (
            ErrorKind::Tls,
            "the server ended the handshake: it may demand a client certificate (tls_cert, tls_key) \
             or share no protocol version or cipher with this client",
        )
    } else if reason.contains("alert unknown ca") || reason.contains("alert bad certificate") {
        (
            ErrorKind::Tls,
            "the server refused the client certificate (not signed by a CA it trusts)",
        )
    } else if reason.contains("wrong version number") || reason.contains("packet length too long") {
        (
            ErrorKind::Tls,
            "the server did not answer with TLS (is this port plain text?)",
        )
    } else {
        // A reset or a disconnect mid-handshake (a broker restarting):
        // passing, so retryable.
        (ErrorKind::ConnectionLost, "the TLS handshake was cut off")
    };
    err(kind, format!("{what}: {reason}"))
}

/// Client context shared by every client of a transport: forwards
/// librdkafka's log to `tracing` and remembers the last authentication
/// failure, which librdkafka otherwise only retries silently.
#[derive(Default, Clone)]
pub(crate) struct Context {
    auth_failure: Arc<Mutex<Option<String>>>,
    tls_failure: Arc<Mutex<Option<String>>>,
}

impl Context {
    /// The last authentication failure seen, if any.
    pub fn auth_failure(&self) -> Option<String> {
        self.auth_failure.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The last TLS handshake failure seen, if any: librdkafka only logs
    /// it and tries again, so a connect would otherwise end as "no broker
    /// answered".
    pub fn tls_failure(&self) -> Option<String> {
        self.tls_failure.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn note_error(&self, error: &KafkaError, reason: &str) {
        if reason.contains("SSL handshake failed")
            || reason.contains("certificate verify failed")
            || reason.contains("SSL alert number")
            || reason.contains("in state SSL_HANDSHAKE")
        {
            *self.tls_failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason.to_owned());
        }
        let code = error.rdkafka_error_code();
        let auth = code.map(kind_of) == Some(ErrorKind::Unauthorized)
            || reason.contains("SASL authentication")
            || reason.contains("Authentication failed");
        if auth {
            *self.auth_failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason.to_owned());
        }
        match code {
            // Normal while brokers restart; librdkafka reconnects by itself.
            Some(RDKafkaErrorCode::BrokerTransportFailure | RDKafkaErrorCode::AllBrokersDown) => {
                tracing::debug!(target: "transport::kafka", error = %error, "{reason}")
            }
            _ => tracing::warn!(target: "transport::kafka", error = %error, "{reason}"),
        }
    }
}

impl ClientContext for Context {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical | RDKafkaLogLevel::Error => {
                tracing::error!(target: "transport::kafka", "librdkafka {fac}: {log_message}")
            }
            RDKafkaLogLevel::Warning => tracing::warn!(target: "transport::kafka", "librdkafka {fac}: {log_message}"),
            _ => tracing::debug!(target: "transport::kafka", "librdkafka {fac}: {log_message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.note_error(&error, reason);
    }
}

impl rdkafka::consumer::ConsumerContext for Context {}

/// Admin request options: the broker-side operation and the client-side
/// wait both bounded by the request timeout (the client's own default is
/// a minute, which a silent broker would use up).
pub(crate) fn admin_options(c: &KafkaConfig) -> rdkafka::admin::AdminOptions {
    rdkafka::admin::AdminOptions::new()
        .operation_timeout(Some(c.request_timeout))
        .request_timeout(Some(c.request_timeout))
}

/// The record headers of a message: the id, then the application headers,
/// CloudEvents attributes as the Kafka binding names them (`ce_*`). The key
/// travels as the record key.
pub(crate) fn encode_headers(message: &Message) -> OwnedHeaders {
    let mut h = OwnedHeaders::new_with_capacity(message.headers.len() + 1).insert(Header {
        key: H_ID,
        value: Some(message.id.as_str()),
    });
    for (name, value) in Binding::Kafka.encode(&message.headers) {
        if name == TOMBSTONE {
            continue;
        }
        h = h.insert(Header {
            key: &name,
            value: Some(value.as_ref()),
        });
    }
    h
}

/// The message in a consumed record. Records written by other producers
/// (no id header) get `<topic>-<partition>-<offset>` as id.
pub(crate) fn decode(record: &BorrowedMessage<'_>) -> Message {
    let mut headers = Headers::new();
    let mut id = None;
    // In arrival order; a name a foreign producer repeated keeps every
    // value (see `repeated_header_text`).
    let mut received: Vec<(String, Vec<String>)> = Vec::new();
    if let Some(h) = record.headers() {
        for header in h.iter() {
            let value = header.value.map(header_text).unwrap_or_default().into_owned();
            if header.key == H_ID {
                id = Some(value);
            } else {
                let (name, value) = Binding::Kafka.decode(header.key, &value);
                let name = name.into_owned();
                match received.iter_mut().find(|(n, _)| *n == name) {
                    Some((_, values)) => values.push(value.into_owned()),
                    None => received.push((name, vec![value.into_owned()])),
                }
            }
        }
    }
    for (name, values) in received {
        headers.insert(name, repeated_header_text(&values));
    }
    if record.payload().is_none() {
        headers.insert(TOMBSTONE, "true");
    }
    Message {
        id: id.unwrap_or_else(|| format!("{}-{}-{}", record.topic(), record.partition(), record.offset())),
        key: record.key().map(|k| header_text(k).into_owned()),
        headers,
        payload: record.payload().map(Bytes::copy_from_slice).unwrap_or_default(),
    }
}

/// The raw backend (cheap to clone): what the core's wrapper, the
/// subscriptions and the dead-letter queues call.
#[derive(Clone)]
pub(crate) struct Kafka {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: KafkaConfig,
    pub(crate) context: Context,
    pub(crate) producer: FutureProducer<Context>,
    pub(crate) admin: AdminClient<Context>,
    /// Topics known to exist.
    pub(crate) topics: Mutex<HashSet<String>>,
}

impl fmt::Debug for Kafka {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaTransport")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// Run a blocking librdkafka call off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| err(ErrorKind::Backend, e))?
}

/// Room librdkafka needs above the largest message for the record batch.
const BATCH_OVERHEAD: usize = 64 * 1024;

impl BackendConfig for KafkaConfig {
    const BACKEND: &'static str = SCHEME;

    fn from_url(url: &str) -> Result<Self> {
        KafkaConfig::from_url(url)
    }

    async fn open(self) -> Result<impl RawTransport> {
        Kafka::open(self).await
    }
}

impl Kafka {
    async fn open(config: KafkaConfig) -> Result<Kafka> {
        config.validate()?;
        // librdkafka would read the files too, but say only "system lib".
        config.tls_options.load().map_err(|e| e.with_backend(SCHEME))?;
        let context = Context::default();
        let mut pc = config.client_config();
        pc.set("acks", "all")
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", config.publish_timeout.as_millis().to_string())
            .set(
                "message.max.bytes",
                (config.max_message_bytes + BATCH_OVERHEAD).to_string(),
            )
            .set("partitioner", "murmur2_random")
            .set("linger.ms", "2")
            .set("allow.auto.create.topics", "false");
        let producer: FutureProducer<Context> = pc.create_with_context(context.clone()).map_err(kafka)?;
        let admin: AdminClient<Context> = config
            .client_config()
            .create_with_context(context.clone())
            .map_err(kafka)?;
        let transport = Kafka {
            inner: Arc::new(Inner {
                config,
                context,
                producer,
                admin,
                topics: Mutex::default(),
            }),
        };
        // Metadata is the cheapest request that proves the brokers answer and
        // accept the credentials; librdkafka would otherwise retry quietly.
        let t = transport.clone();
        let timeout = t.inner.config.request_timeout;
        let probe = blocking(move || {
            t.inner
                .producer
                .client()
                .fetch_metadata(None, timeout)
                .map(drop)
                .map_err(|e| t.connect_error(e))
        })
        .await;
        probe?;
        Ok(transport)
    }
}

impl Kafka {
    /// The backend's own connection errors are named by `with_config`.
    pub(crate) fn connect_error(&self, e: KafkaError) -> Error {
        if let Some(why) = self.inner.context.auth_failure() {
            return err(ErrorKind::Unauthorized, format!("{why}; check the credentials"));
        }
        if let Some(why) = self.inner.context.tls_failure() {
            return tls_error(&why);
        }
        let mut e = kafka(e);
        if e.kind() == ErrorKind::Timeout || e.kind() == ErrorKind::Backend {
            e = err(
                ErrorKind::ConnectionLost,
                format!(
                    "{e}; no Kafka broker answered at {}",
                    self.inner.config.brokers.join(",")
                ),
            )
            .with_retryable(true);
        }
        e
    }

    pub(crate) fn config(&self) -> &KafkaConfig {
        &self.inner.config
    }

    pub(crate) fn context(&self) -> Context {
        self.inner.context.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SaslMechanism;
    use transport_core::Secret;

    #[test]
    fn error_codes_map_to_kinds() {
        assert_eq!(
            kind_of(RDKafkaErrorCode::MessageSizeTooLarge),
            ErrorKind::MessageTooLarge
        );
        assert_eq!(
            kind_of(RDKafkaErrorCode::SaslAuthenticationFailed),
            ErrorKind::Unauthorized
        );
        assert_eq!(kind_of(RDKafkaErrorCode::UnknownTopicOrPartition), ErrorKind::NotFound);
        assert_eq!(kind_of(RDKafkaErrorCode::MessageTimedOut), ErrorKind::Timeout);
        assert_eq!(kind_of(RDKafkaErrorCode::AllBrokersDown), ErrorKind::ConnectionLost);
        assert!(kafka(KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut)).is_retryable());
    }

    #[test]
    fn client_config_carries_sasl_and_tls_but_debug_hides_the_password() {
        let config = KafkaConfig {
            tls: true,
            sasl: Some(SaslMechanism::ScramSha256),
            user: Some("app".into()),
            password: Some(Secret::new("s3cr3t")),
            ..KafkaConfig::default()
        };
        let c = config.client_config();
        assert_eq!(c.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(c.get("sasl.mechanism"), Some("SCRAM-SHA-256"));
        assert_eq!(c.get("sasl.password"), Some("s3cr3t"));
        assert!(!format!("{config:?}").contains("s3cr3t"));
    }

    #[test]
    fn tls_options_reach_librdkafka_by_path_or_text() {
        use transport_core::tls::Pem;
        let files = KafkaConfig::from_url("kafka+ssl://h:9093?tls_ca=/ca.pem&tls_cert=/c.pem&tls_key=/c.key").unwrap();
        let c = files.client_config();
        assert_eq!(c.get("security.protocol"), Some("ssl"));
        assert_eq!(c.get("ssl.ca.location"), Some("/ca.pem"));
        assert_eq!(c.get("ssl.certificate.location"), Some("/c.pem"));
        assert_eq!(c.get("ssl.key.location"), Some("/c.key"));
        let mut text = KafkaConfig {
            tls: true,
            ..KafkaConfig::default()
        };
        text.tls_options.cert = Some(Pem::Text("CERT".into()));
        text.tls_options.key = Some(Pem::Text("SECRETBODY".into()));
        assert_eq!(text.client_config().get("ssl.key.pem"), Some("SECRETBODY"));
        assert!(!format!("{text:?}").contains("SECRETBODY"));
        for bad in ["kafka://h?tls_ca=/ca.pem", "kafka+ssl://h?tls_cert=/c.pem"] {
            let e = KafkaConfig::from_url(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{bad}: {e}");
        }
    }
}
