//! The client side of RabbitMQ: the raw backend's state (`Rabbit`), the
//! (re)connecting connection, error mapping, and the message encoding
//! (properties, headers, typed header values). Names are in `names`,
//! declarations in `provision`.

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::Ordering as AtomicOrdering;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use lapin::options::ConfirmSelectOptions;
use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use tokio::sync::Mutex;
use transport_core::backend::cloudevents::Binding;
use transport_core::backend::{BackendConfig, RawTransport};
use transport_core::headers::{header_text, CONTENT_TYPE};
use transport_core::{Bytes, Error, ErrorKind, Headers, Message};

use crate::acks::Outstanding;
use crate::config::RabbitConfig;
use crate::SCHEME;

/// Header carrying the key.
pub(crate) const H_KEY: &str = "transport-key";

/// Header carrying the deliveries a message had before a delayed retry
/// re-published it (the broker's count starts again for the copy).
pub(crate) const H_ATTEMPTS: &str = "transport-attempts";

/// Header carrying the first failure time across delayed retries (ms).
pub(crate) const H_FIRST_FAILURE: &str = "transport-first-failure-ms";

pub(crate) fn err(kind: ErrorKind, e: impl std::fmt::Display) -> Error {
    Error::new(kind, e.to_string())
}

/// A failed connect: a TLS handshake failure is told apart from a lost
/// connection (it is not retried on the next node).
fn connect_error(e: lapin::Error, tls: bool) -> Error {
    if let Some(tls) = transport_core::tls::handshake_error(&e) {
        return tls.with_backend(SCHEME);
    }
    let reset = tls && e.to_string().contains("reset by peer");
    let e = map_err(e);
    if !reset {
        return e;
    }
    // Over TLS 1.3 RabbitMQ checks the client certificate after the
    // handshake and closes at once: the client often sees the reset before
    // the alert that says why. A reset is also what a restarting broker
    // does, so it stays retryable; the message says what else it may be.
    Error::new(
        e.kind(),
        format!(
            "{}; over TLS this is also how RabbitMQ refuses a missing or untrusted client certificate (tls_cert, tls_key)",
            e.message()
        ),
    )
    .with_backend(SCHEME)
}

pub(crate) fn map_err(e: lapin::Error) -> Error {
    let text = e.to_string();
    let kind = if text.contains("ACCESS_REFUSED") && text.contains("refused for user") {
        // "access to queue 'q' in vhost '/' refused for user 'u'": the user
        // is known and lacks a configure, write or read permission.
        ErrorKind::Forbidden
    } else if text.contains("ACCESS_REFUSED") || text.contains("403") || text.contains("authentication") {
        ErrorKind::Unauthorized
    } else if text.contains("NOT_ALLOWED") || text.contains("530") {
        // An unknown vhost (or one the user may not use): configuration,
        // retrying cannot help.
        ErrorKind::InvalidArgument
    } else if text.contains("NOT_FOUND") || text.contains("404") {
        ErrorKind::NotFound
    } else if text.contains("PRECONDITION_FAILED") || text.contains("406") {
        ErrorKind::InvalidArgument
    } else if text.contains("FRAME_ERROR") || text.contains("message too large") || text.contains("max_message_size") {
        ErrorKind::MessageTooLarge
    } else if text.to_ascii_lowercase().contains("timeout") || text.contains("timed out") {
        ErrorKind::Timeout
    } else {
        ErrorKind::ConnectionLost
    };
    let hint = match kind {
        ErrorKind::Unauthorized => "; check the user, password and vhost in the URL",
        ErrorKind::Forbidden => {
            "; the user lacks a configure, write or read permission this library needs (backend-rabbitmq/docs.md, \"Permissions\")"
        }
        ErrorKind::InvalidArgument if text.contains("vhost") => {
            "; check the vhost (the URL's path, %2f for the default \"/\") exists and the user may use it"
        }
        ErrorKind::ConnectionLost => "; check that RabbitMQ is running and reachable",
        _ => "",
    };
    err(kind, format!("{text}{hint}"))
}

impl BackendConfig for RabbitConfig {
    const BACKEND: &'static str = SCHEME;

    fn from_url(url: &str) -> Result<Self, Error> {
        RabbitConfig::from_url(url)
    }

    async fn open(self) -> Result<impl RawTransport, Error> {
        self.check()?;
        let conn = Conn::open(self).await?;
        Ok(Rabbit {
            inner: Arc::new(Inner {
                conn,
                acks: std::sync::Mutex::default(),
            }),
        })
    }
}

/// A connection that is opened again when it drops, with the topology this
/// process declared forgotten so it is declared again.
pub(crate) struct Conn {
    pub(crate) config: RabbitConfig,
    pub(crate) state: Mutex<Option<(Arc<Connection>, Channel)>>,
    pub(crate) declared: std::sync::Mutex<HashSet<String>>,
    /// One permit per publish sent and not confirmed yet (`publish_window`).
    pub(crate) window: tokio::sync::Semaphore,
    /// Where the next connection attempt starts in the node list.
    pub(crate) next_node: std::sync::atomic::AtomicUsize,
}

impl Conn {
    pub async fn open(config: RabbitConfig) -> Result<Self, Error> {
        let conn = Conn {
            window: tokio::sync::Semaphore::new(config.publish_window.max(1)),
            config,
            state: Mutex::new(None),
            declared: Default::default(),
            next_node: Default::default(),
        };
        conn.publisher().await?;
        Ok(conn)
    }

    /// The connection, reconnecting when it dropped.
    pub async fn connection(&self) -> Result<Arc<Connection>, Error> {
        Ok(self.current().await?.0)
    }

    /// A channel in confirm mode for publishing.
    pub async fn publisher(&self) -> Result<Channel, Error> {
        Ok(self.current().await?.1)
    }

    pub(crate) async fn current(&self) -> Result<(Arc<Connection>, Channel), Error> {
        let mut state = self.state.lock().await;
        if let Some((c, ch)) = state.as_ref() {
            if c.status().connected() && ch.status().connected() {
                return Ok((c.clone(), ch.clone()));
            }
        }
        let connection = match state.take() {
            Some((c, _)) if c.status().connected() => c,
            _ => {
                self.declared.lock().unwrap_or_else(|e| e.into_inner()).clear();
                Arc::new(self.connect_any().await?)
            }
        };
        let channel = self.confirm_channel(&connection).await?;
        *state = Some((connection.clone(), channel.clone()));
        Ok((connection, channel))
    }

    async fn confirm_channel(&self, connection: &Connection) -> Result<Channel, Error> {
        let open_channel = async {
            let channel = connection.create_channel().await.map_err(map_err)?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .map_err(map_err)?;
            Ok::<_, Error>(channel)
        };
        tokio::time::timeout(self.config.connect_timeout, open_channel)
            .await
            .map_err(|_| err(ErrorKind::Timeout, "RabbitMQ did not open a channel in time"))?
    }

    /// Publish on a new channel from now on, closing the old one. After a
    /// publish was refused (nack): RabbitMQ 3.10 keeps refusing every
    /// publish of a channel that was opened while a quorum queue it routes
    /// to had no leader, long after a new leader was elected; a new channel
    /// finds the leader.
    pub async fn renew_publisher(&self) {
        let mut state = self.state.lock().await;
        let Some((connection, old)) = state.as_ref() else {
            return;
        };
        if !connection.status().connected() {
            return;
        }
        let (connection, old) = (connection.clone(), old.clone());
        if let Ok(channel) = self.confirm_channel(&connection).await {
            *state = Some((connection, channel));
            drop(state);
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), old.close(200, "renewed".into())).await;
        }
    }
}

impl Conn {
    /// Open a connection to the first node that takes it, starting after
    /// the one used last, so a lost node is skipped and load spreads over a
    /// cluster. A refused credential or vhost is final: every node would
    /// answer the same.
    async fn connect_any(&self) -> Result<Connection, Error> {
        let addresses = self.config.addresses();
        // With several rustls providers linked in, lapin's TLS would not
        // know which to use.
        transport_core::tls::install_default_provider();
        let tls = self.tls_config()?;
        let start = self.next_node.load(AtomicOrdering::Relaxed);
        let mut last = None;
        for i in 0..addresses.len() {
            let at = (start + i) % addresses.len();
            let attempt = tokio::time::timeout(
                self.config.connect_timeout,
                Connection::connect_with_config(
                    &self.config.client_uri(&addresses[at]),
                    ConnectionProperties::default(),
                    tls.clone(),
                    lapin::runtime::default_runtime().map_err(map_err)?,
                ),
            )
            .await
            .map_err(|_| {
                err(
                    ErrorKind::Timeout,
                    format!("RabbitMQ at {} did not answer in time", addresses[at]),
                )
            })
            .and_then(|r| r.map_err(|e| connect_error(e, self.config.tls)));
            match attempt {
                Ok(c) => {
                    self.next_node.store(at + 1, AtomicOrdering::Relaxed);
                    return Ok(c);
                }
                Err(e) if !e.is_retryable() => return Err(e),
                Err(e) => {
                    if addresses.len() > 1 {
                        tracing::warn!(node = %addresses[at], error = %e, "connecting failed; trying the next node");
                    }
                    last = Some(e);
                }
            }
        }
        self.next_node.store(start + 1, AtomicOrdering::Relaxed);
        Err(last.unwrap_or_else(|| err(ErrorKind::InvalidArgument, "no RabbitMQ node configured")))
    }

    /// The operator's CA and client certificate, read at every connect of
    /// this library's (a rotated certificate is picked up by the next one).
    /// lapin keeps the configuration, key text included, for the life of
    /// the connection and its `Debug` would show it: it is never logged.
    fn tls_config(&self) -> Result<OwnedTLSConfig, Error> {
        if !self.config.tls_options.is_set() {
            return Ok(OwnedTLSConfig::default());
        }
        // Else lapin would connect in plain text, the options unused.
        self.config
            .tls_options
            .require_tls(self.config.tls, "amqps://")
            .map_err(|e| e.with_backend(SCHEME))?;
        let material = self.config.tls_options.load().map_err(|e| e.with_backend(SCHEME))?;
        Ok(OwnedTLSConfig {
            identity: material.identity_pem().map(|(cert, key)| OwnedIdentity::PKCS8 {
                pem: cert.to_vec(),
                key: key.to_vec(),
            }),
            cert_chain: material.ca_pem().map(|pem| String::from_utf8_lossy(pem).into_owned()),
        })
    }

    pub fn config(&self) -> &RabbitConfig {
        &self.config
    }

    /// Forget the connection (closing it in the background), so the next
    /// operation opens a new one: after a request timed out, the old one
    /// may be dead without knowing it.
    pub async fn reset(&self) {
        if let Some((c, _)) = self.state.lock().await.take() {
            self.declared.lock().unwrap_or_else(|e| e.into_inner()).clear();
            tokio::spawn(async move {
                let _ = tokio::time::timeout(std::time::Duration::from_secs(1), c.close(320, "reset".into())).await;
            });
        }
    }

    pub async fn close(&self) {
        if let Some((c, _)) = self.state.lock().await.take() {
            let _ = c.close(200, "closed".into()).await;
        }
    }
}

/// AMQP properties for a message: persistent, id as `message_id`, the
/// content type as `content_type` (the RabbitMQ CloudEvents binding puts it
/// there, and so do other AMQP clients), the other headers (with the key)
/// as the header table. `extra` adds library headers.
pub(crate) fn properties(message: &Message, extra: &[(&str, String)]) -> BasicProperties {
    let mut table = FieldTable::default();
    let mut content_type = None;
    for (k, v) in Binding::RabbitMq.encode(&message.headers) {
        // A short string holds 255 bytes; a longer type stays a header.
        if k == CONTENT_TYPE && v.len() <= 255 {
            content_type = Some(v);
            continue;
        }
        table.insert(
            k.as_ref().into(),
            AMQPValue::LongString(LongString::from(v.as_bytes().to_vec())),
        );
    }
    if let Some(key) = &message.key {
        table.insert(H_KEY.into(), AMQPValue::LongString(key.as_bytes().to_vec().into()));
    }
    for (k, v) in extra {
        table.insert((*k).into(), AMQPValue::LongString(v.as_bytes().to_vec().into()));
    }
    let properties = BasicProperties::default()
        .with_message_id(ShortString::from(message.id.as_str()))
        .with_delivery_mode(2)
        .with_headers(table);
    match content_type {
        Some(ct) => properties.with_content_type(ShortString::from(ct.as_ref())),
        None => properties,
    }
}

/// What a delivery carries besides the message.
pub(crate) struct Decoded {
    pub message: Message,
    /// Deliveries before this one (broker count plus earlier delayed retries).
    pub previous_attempts: u32,
    pub first_failure_ms: Option<u64>,
    /// Whether the id came with the message (`message_id`), so every
    /// redelivery carries it.
    pub stable_id: bool,
}

/// A header value as text, in the form backend-rabbitmq/docs.md documents
/// for foreign producers' typed values, lossless for every AMQP type:
/// strings and bytes as themselves when UTF-8 (else `base64:` and their
/// base64), booleans `true`/`false`, integers and timestamps in decimal,
/// floats in Rust's shortest round-trip form (`1.5`, `NaN`, `inf`),
/// decimals as `<digits>` with the point at their scale (`123.45`), void
/// as the empty string, arrays and tables as JSON (bytes and decimals in
/// them as strings of those forms).
pub(crate) fn value_text(v: &AMQPValue) -> String {
    match v {
        AMQPValue::LongString(s) => header_text(s.as_bytes()).into_owned(),
        AMQPValue::ShortString(s) => s.as_str().to_owned(),
        AMQPValue::ByteArray(b) => header_text(b.as_slice()).into_owned(),
        AMQPValue::Boolean(b) => b.to_string(),
        AMQPValue::ShortShortInt(i) => i.to_string(),
        AMQPValue::ShortShortUInt(i) => i.to_string(),
        AMQPValue::ShortInt(i) => i.to_string(),
        AMQPValue::ShortUInt(i) => i.to_string(),
        AMQPValue::LongInt(i) => i.to_string(),
        AMQPValue::LongUInt(i) => i.to_string(),
        AMQPValue::LongLongInt(i) => i.to_string(),
        AMQPValue::Timestamp(t) => t.to_string(),
        AMQPValue::Float(f) => f.to_string(),
        AMQPValue::Double(d) => d.to_string(),
        AMQPValue::DecimalValue(d) => decimal_text(d.scale, d.value),
        AMQPValue::Void => String::new(),
        AMQPValue::FieldArray(_) | AMQPValue::FieldTable(_) => json_of(v).to_string(),
    }
}

/// `value` × 10^-`scale` in decimal, every digit kept (`12345`, 2 -> `123.45`).
fn decimal_text(scale: u8, value: u32) -> String {
    let digits = value.to_string();
    let scale = scale as usize;
    if scale == 0 {
        return digits;
    }
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (whole, fraction) = padded.split_at(padded.len() - scale);
    format!("{whole}.{fraction}")
}

/// A value inside an array or table, as JSON.
fn json_of(v: &AMQPValue) -> serde_json::Value {
    use serde_json::Value;
    match v {
        AMQPValue::Boolean(b) => Value::Bool(*b),
        AMQPValue::ShortShortInt(i) => (*i).into(),
        AMQPValue::ShortShortUInt(i) => (*i).into(),
        AMQPValue::ShortInt(i) => (*i).into(),
        AMQPValue::ShortUInt(i) => (*i).into(),
        AMQPValue::LongInt(i) => (*i).into(),
        AMQPValue::LongUInt(i) => (*i).into(),
        AMQPValue::LongLongInt(i) => (*i).into(),
        AMQPValue::Timestamp(t) => (*t).into(),
        // JSON has no NaN or infinity: those stay strings.
        AMQPValue::Float(f) => {
            serde_json::Number::from_f64(f64::from(*f)).map_or_else(|| Value::String(f.to_string()), Value::Number)
        }
        AMQPValue::Double(d) => {
            serde_json::Number::from_f64(*d).map_or_else(|| Value::String(d.to_string()), Value::Number)
        }
        AMQPValue::Void => Value::Null,
        AMQPValue::FieldArray(a) => Value::Array(a.as_slice().iter().map(json_of).collect()),
        AMQPValue::FieldTable(t) => Value::Object(
            t.inner()
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), json_of(v)))
                .collect(),
        ),
        other => Value::String(value_text(other)),
    }
}

/// The message a delivery carries. A foreign message without `message_id`
/// (amqplib's and pika's default) gets a fresh id, unique to this delivery:
/// AMQP 0-9-1 gives a queued message no id of its own that survives a
/// redelivery (the delivery tag is a per-channel counter, reused by every
/// channel and changed by every redelivery), so `Decoded::stable_id` says
/// the id cannot deduplicate.
pub(crate) fn decode(properties: &BasicProperties, payload: Vec<u8>) -> Decoded {
    let mut headers = Headers::new();
    let mut key = None;
    let mut broker_count = 0u32;
    let mut earlier = 0u32;
    let mut first_failure_ms = None;
    if let Some(table) = properties.headers() {
        for (name, value) in table.inner() {
            let name = name.as_str();
            match name {
                "x-delivery-count" => broker_count = value_text(value).parse().unwrap_or(0),
                H_KEY => key = Some(value_text(value)),
                H_ATTEMPTS => earlier = value_text(value).parse().unwrap_or(0),
                H_FIRST_FAILURE => first_failure_ms = value_text(value).parse().ok(),
                // The broker's own bookkeeping of dead-lettering and retries.
                n if n == "x-death" || n.starts_with("x-first-death") || n.starts_with("x-last-death") => {}
                n => {
                    let text = value_text(value);
                    let (n, v) = Binding::RabbitMq.decode(n, &text);
                    headers.insert(n, v);
                }
            }
        }
    }
    if let Some(ct) = properties.content_type() {
        headers.insert(CONTENT_TYPE, ct.as_str());
    }
    let id = properties.message_id().as_ref().map(|s| s.as_str().to_owned());
    Decoded {
        message: Message {
            id: id
                .clone()
                .unwrap_or_else(|| format!("amqp-unidentified-{}", uuid::Uuid::now_v7())),
            key,
            headers,
            payload: Bytes::from(payload),
        },
        previous_attempts: broker_count + earlier,
        first_failure_ms,
        stable_id: id.is_some(),
    }
}

/// Delay rounded up to a bucket, so a few retry queues serve every delay:
/// 100 ms steps below 1 s, whole seconds below 1 min, whole minutes above.
pub(crate) fn delay_bucket_ms(ms: u64) -> u64 {
    let up = |step: u64| ms.div_ceil(step) * step;
    if ms <= 1_000 {
        up(100).max(100)
    } else if ms <= 60_000 {
        up(1_000)
    } else {
        up(60_000)
    }
}

/// The raw backend (cheap to clone): what the core's wrapper, the
/// subscriptions and the dead-letter queues call.
#[derive(Clone)]
pub(crate) struct Rabbit {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) conn: Conn,
    /// Every subscription's batched acks, so that `close` sends them
    /// before the connection goes.
    pub(crate) acks: std::sync::Mutex<Vec<std::sync::Weak<Outstanding>>>,
}

impl Rabbit {
    /// The ack table of a new subscription, registered for `close`.
    pub(crate) fn outstanding(&self, prefetch: usize) -> Arc<Outstanding> {
        let outstanding = Arc::new(Outstanding::new(prefetch));
        let mut all = self.inner.acks.lock().unwrap_or_else(|e| e.into_inner());
        all.retain(|w| w.strong_count() > 0);
        all.push(Arc::downgrade(&outstanding));
        outstanding
    }
}

impl fmt::Debug for Rabbit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RabbitTransport")
            .field("config", self.inner.conn.config())
            .finish_non_exhaustive()
    }
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_never_shorten_a_delay() {
        for ms in [1, 99, 100, 101, 999, 1_000, 1_001, 59_999, 60_001, 3_600_000] {
            let b = delay_bucket_ms(ms);
            assert!(b >= ms, "{ms} -> {b}");
        }
        assert_eq!(delay_bucket_ms(1_500), 2_000);
        assert_eq!(delay_bucket_ms(61_000), 120_000);
    }

    #[test]
    fn typed_header_values_have_a_lossless_text_form() {
        use lapin::types::{ByteArray, DecimalValue, FieldArray};
        let cases: Vec<(AMQPValue, &str)> = vec![
            (AMQPValue::Double(1.5), "1.5"),
            (AMQPValue::Float(0.1), "0.1"),
            (AMQPValue::Double(f64::NAN), "NaN"),
            (AMQPValue::Boolean(false), "false"),
            (AMQPValue::LongLongInt(-9_007_199_254_740_993), "-9007199254740993"),
            (AMQPValue::Timestamp(1_700_000_000), "1700000000"),
            (
                AMQPValue::DecimalValue(DecimalValue { scale: 2, value: 12345 }),
                "123.45",
            ),
            (AMQPValue::DecimalValue(DecimalValue { scale: 3, value: 5 }), "0.005"),
            (AMQPValue::DecimalValue(DecimalValue { scale: 0, value: 7 }), "7"),
            (AMQPValue::ByteArray(ByteArray::from(vec![255u8, 0])), "base64:/wA="),
            (AMQPValue::ByteArray(ByteArray::from(b"text".to_vec())), "text"),
            (
                AMQPValue::LongString(LongString::from(vec![0xc3u8, 0x28])),
                "base64:wyg=",
            ),
            (AMQPValue::Void, ""),
            (
                AMQPValue::FieldArray(FieldArray::from(vec![
                    AMQPValue::LongInt(1),
                    AMQPValue::LongString("a".into()),
                    AMQPValue::ByteArray(ByteArray::from(vec![255u8])),
                    AMQPValue::Void,
                ])),
                r#"[1,"a","base64:/w==",null]"#,
            ),
        ];
        for (value, text) in cases {
            assert_eq!(value_text(&value), text, "{value:?}");
        }
        let mut table = FieldTable::default();
        table.insert("n".into(), AMQPValue::Double(2.25));
        table.insert("t".into(), AMQPValue::FieldTable(FieldTable::default()));
        assert_eq!(value_text(&AMQPValue::FieldTable(table)), r#"{"n":2.25,"t":{}}"#);
    }

    #[test]
    fn properties_round_trip() {
        let m = Message::new(vec![0u8, 255])
            .with_key("k")
            .with_header("h", "✓")
            .with_header("e", "");
        let p = properties(&m, &[(H_ATTEMPTS, "2".into())]);
        let d = decode(&p, m.payload.to_vec());
        assert_eq!(d.message, m);
        assert_eq!(d.previous_attempts, 2);
        assert!(d.stable_id);
    }

    /// A foreign message without `message_id` gets an id unique to the
    /// delivery (not the channel's delivery tag, which every channel
    /// reuses), marked as not stable.
    #[test]
    fn a_message_without_message_id_gets_a_unique_unstable_id() {
        let first = decode(&BasicProperties::default(), b"a".to_vec());
        let second = decode(&BasicProperties::default(), b"a".to_vec());
        assert!(!first.stable_id && !second.stable_id);
        assert_ne!(first.message.id, second.message.id);
        assert!(
            first.message.id.starts_with("amqp-unidentified-"),
            "{}",
            first.message.id
        );
    }
}
