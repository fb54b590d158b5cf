//! The backend's core: the raw backend every operation holds (client,
//! JetStream context, the streams known to exist), connecting (with the
//! JetStream check), error mapping and the header encoding.

use std::collections::{HashSet, VecDeque};
use std::fmt::{self, Display};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use async_nats::{ConnectErrorKind, HeaderMap};
use transport_core::backend::cloudevents::Binding;
use transport_core::backend::{BackendConfig, RawTransport};
use transport_core::{Bytes, Error, ErrorKind, Headers, Message};

use crate::config::NatsConfig;
use crate::SCHEME;

/// Header carrying the message id (also sent as `Nats-Msg-Id` on plain publishes).
pub(crate) const H_ID: &str = "transport-id";
/// Header carrying the key.
pub(crate) const H_KEY: &str = "transport-key";
const NATS_MSG_ID: &str = "Nats-Msg-Id";

pub(crate) fn err(kind: ErrorKind, e: impl Display) -> Error {
    Error::new(kind, e.to_string()).with_backend(SCHEME)
}

/// Map an error by its text where the client gives no kind.
pub(crate) fn other(e: impl Display) -> Error {
    let text = e.to_string();
    let lower = text.to_ascii_lowercase();
    let kind = if lower.contains("timed out") || lower.contains("timeout") {
        ErrorKind::Timeout
    } else if lower.contains("broken pipe") || lower.contains("disconnect") || lower.contains("no responders") {
        ErrorKind::ConnectionLost
    } else if lower.contains("permissions violation") || lower.contains("permission denied") {
        // The user is known; a subject is not theirs (the text names it).
        ErrorKind::Forbidden
    } else if lower.contains("authorization") || lower.contains("permission") {
        ErrorKind::Unauthorized
    } else if lower.contains("not found") {
        ErrorKind::NotFound
    } else if lower.contains("maximum payload") || lower.contains("max payload") {
        ErrorKind::MessageTooLarge
    } else {
        ErrorKind::Backend
    };
    err(kind, text)
}

/// The permission violations the server reported on this connection. NATS
/// refuses a subject the user may not publish to (or subscribe to) with an
/// `-ERR 'Permissions Violation for Publish to "<subject>"'` on the
/// connection, apart from the request it refuses, which would only time
/// out; an operation waits for either, so a refusal is a prompt `Forbidden`
/// naming the subject instead of a retryable `Timeout`.
#[derive(Default)]
pub(crate) struct Violations {
    /// How many were ever reported: the hot path only reads this.
    reported: std::sync::atomic::AtomicU64,
    seen: Mutex<VecDeque<(Instant, String)>>,
    changed: tokio::sync::Notify,
}

/// How long a violation is kept: longer than any request waits.
const VIOLATION_KEPT: Duration = Duration::from_secs(120);

impl Violations {
    fn record(&self, text: String) {
        tracing::warn!(backend = SCHEME, "the server refused a subject: {text}");
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.retain(|(at, _)| now.duration_since(*at) < VIOLATION_KEPT);
        seen.push_back((now, text));
        while seen.len() > 64 {
            seen.pop_front();
        }
        drop(seen);
        self.reported.fetch_add(1, std::sync::atomic::Ordering::Release);
        self.changed.notify_waiters();
    }

    /// A violation reported since `since` that concerns the operation:
    /// one naming a subject `wanted` accepts, or a refused subscription (on
    /// this connection only the replies' inbox is subscribed to: no reply
    /// can arrive then).
    fn since(&self, since: Instant, wanted: &(dyn Fn(&str) -> bool + Sync)) -> Option<String> {
        if self.reported.load(std::sync::atomic::Ordering::Acquire) == 0 {
            return None;
        }
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.iter()
            .rev()
            .take_while(|(at, _)| *at >= since)
            .find(|(_, text)| text.contains("for Subscription to") || refused_subject(text).is_some_and(wanted))
            .map(|(_, text)| text.clone())
    }

    /// Once a violation concerning the operation is reported after `since`.
    async fn wait(&self, since: Instant, wanted: &(dyn Fn(&str) -> bool + Sync)) -> String {
        loop {
            let changed = self.changed.notified();
            if let Some(text) = self.since(since, wanted) {
                return text;
            }
            changed.await;
        }
    }
}

/// The subject a violation names: `Permissions Violation for Publish to
/// "orders"` names `orders`.
fn refused_subject(text: &str) -> Option<&str> {
    let start = text.find('"')? + 1;
    let len = text[start..].find('"')?;
    Some(&text[start..start + len])
}

/// Whether `subject` is a JetStream API request about stream `stream`
/// (`$JS.API.STREAM.<op>.<stream>`).
pub(crate) fn stream_api(stream: &str) -> impl Fn(&str) -> bool + '_ {
    move |subject| {
        subject
            .strip_prefix("$JS.API.STREAM.")
            .and_then(|rest| rest.split_once('.'))
            .is_some_and(|(_, name)| name == stream)
    }
}

/// Whether `subject` is a JetStream API request about consumer `durable`
/// of `stream` (`$JS.API.CONSUMER.<op>.<stream>.<durable>[.<filter>]`,
/// pulls included; stream and consumer names hold no dots).
pub(crate) fn consumer_api<'a>(stream: &'a str, durable: &'a str) -> impl Fn(&str) -> bool + 'a {
    move |subject| {
        subject.strip_prefix("$JS.API.CONSUMER.").is_some_and(|rest| {
            let tokens: Vec<&str> = rest.split('.').collect();
            tokens.windows(2).any(|w| w[0] == stream && w[1] == durable)
        })
    }
}

/// `Forbidden` for a violation the server reported.
fn forbidden(text: &str) -> Error {
    err(
        ErrorKind::Forbidden,
        format!("{text} (the server's permissions for this user do not allow it)"),
    )
    .with_retryable(false)
}

impl Nats {
    /// Run `operation`, which sends on the subjects `wanted` accepts (a
    /// topic, or the JetStream API subjects of a stream or consumer),
    /// failing at once with `Forbidden` when the server reports one of them
    /// refused meanwhile (the operation cannot succeed then).
    pub(crate) async fn refusable<T>(
        &self,
        wanted: impl Fn(&str) -> bool + Sync,
        operation: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        let since = Instant::now();
        let violations = &self.inner.violations;
        tokio::select! {
            result = operation => result.map_err(|e| match violations.since(since, &wanted) {
                Some(text) if e.is_retryable() => forbidden(&text),
                _ => e,
            }),
            text = violations.wait(since, &wanted) => Err(forbidden(&text)),
        }
    }
}

pub(crate) async fn connect(config: &NatsConfig, violations: Arc<Violations>) -> Result<async_nats::Client, Error> {
    // Also for nats://: a server that demands TLS gets it.
    transport_core::tls::install_default_provider();
    let mut options = async_nats::ConnectOptions::new()
        .event_callback(move |event| {
            let violations = violations.clone();
            async move {
                match event {
                    async_nats::Event::ServerError(async_nats::ServerError::Other(text))
                        if text.to_ascii_lowercase().contains("permissions violation") =>
                    {
                        violations.record(text)
                    }
                    other => tracing::debug!(backend = SCHEME, "connection event: {other}"),
                }
            }
        })
        .connection_timeout(config.connect_timeout)
        .request_timeout(Some(config.request_timeout))
        .require_tls(config.tls)
        .name("transport");
    if let (Some(user), Some(pass)) = (&config.user, &config.password) {
        options = options.user_and_password(user.clone(), pass.expose().to_owned());
    }
    if let Some(token) = &config.token {
        options = options.token(token.expose().to_owned());
    }
    if let Some(seed) = &config.nkey {
        options = options.nkey(seed.expose().to_owned());
    }
    // Else a server that does not demand TLS would be spoken to in plain
    // text, the options unused.
    config
        .tls_options
        .require_tls(config.tls, "tls://")
        .map_err(|e| e.with_backend(SCHEME))?;
    if config.tls_options.is_set() {
        let material = config.tls_options.load().map_err(|e| e.with_backend(SCHEME))?;
        options = options.tls_client_config(material.rustls_config().map_err(|e| e.with_backend(SCHEME))?);
    }
    if let Some(path) = &config.credentials_file {
        options = options
            .credentials_file(path)
            .await
            .map_err(|e| err(ErrorKind::InvalidArgument, format!("credentials file {path}: {e}")))?;
    }
    options.connect(config.servers.clone()).await.map_err(|e| {
        if let Some(tls) = transport_core::tls::handshake_error(&e) {
            return tls.with_backend(SCHEME);
        }
        let kind = match e.kind() {
            ConnectErrorKind::AuthorizationViolation | ConnectErrorKind::Authentication => ErrorKind::Unauthorized,
            ConnectErrorKind::TimedOut => ErrorKind::Timeout,
            ConnectErrorKind::ServerParse => ErrorKind::InvalidArgument,
            ConnectErrorKind::Tls => ErrorKind::Tls,
            _ => ErrorKind::ConnectionLost,
        };
        let hint = match kind {
            ErrorKind::Unauthorized => "; check the credentials in the URL",
            ErrorKind::ConnectionLost => "; check that nats-server is running with JetStream (-js)",
            _ => "",
        };
        err(kind, format!("{e}{hint}"))
    })
}

/// NATS headers for a message. `dedup` adds `Nats-Msg-Id` (plain publishes;
/// dead-letter and redrive copies must not be dropped as duplicates).
pub(crate) fn encode(message: &Message, dedup: bool) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(H_ID, message.id.as_str());
    if dedup {
        h.insert(NATS_MSG_ID, message.id.as_str());
    }
    if let Some(k) = &message.key {
        h.insert(H_KEY, k.as_str());
    }
    for (name, value) in Binding::Nats.encode(&message.headers) {
        h.insert(name.as_ref(), value.as_ref());
    }
    h
}

/// The message in a JetStream message's headers and payload.
pub(crate) fn decode(headers: Option<&HeaderMap>, payload: Bytes, fallback_id: impl FnOnce() -> String) -> Message {
    let mut out = Headers::new();
    let mut id = None;
    let mut key = None;
    if let Some(h) = headers {
        for (name, values) in h.iter() {
            let value = values.first().map(|v| v.as_str().to_owned()).unwrap_or_default();
            match name.as_ref() {
                H_ID => id = Some(value),
                H_KEY => key = Some(value),
                n if n.eq_ignore_ascii_case(NATS_MSG_ID) => {}
                n => {
                    let (n, v) = Binding::Nats.decode(n, &value);
                    out.insert(n, v);
                }
            }
        }
    }
    Message {
        id: id.unwrap_or_else(fallback_id),
        key,
        headers: out,
        payload,
    }
}

/// Header names and values NATS can carry: no CR or LF anywhere.
pub(crate) fn check_headers(message: &Message) -> Result<(), Error> {
    let bad = |s: &str| s.contains(['\r', '\n']);
    if message.headers.iter().any(|(k, v)| bad(k) || bad(v))
        || bad(&message.id)
        || message.key.as_deref().is_some_and(bad)
    {
        return Err(Error::invalid("NATS headers cannot contain CR or LF"));
    }
    Ok(())
}

/// The raw backend (cheap to clone): what the core's wrapper, the
/// subscriptions and the dead-letter queues call.
#[derive(Clone)]
pub(crate) struct Nats {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: NatsConfig,
    pub(crate) client: async_nats::Client,
    pub(crate) js: jetstream::Context,
    /// Streams known to exist, by name.
    pub(crate) streams: Mutex<HashSet<String>>,
    /// Subjects the server refused this connection.
    pub(crate) violations: Arc<Violations>,
    pub(crate) max_message_size: usize,
}

impl fmt::Debug for Nats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsTransport")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// Headers and framing NATS adds on top of what `Message::encoded_len` counts.
pub(crate) const HEADER_OVERHEAD: usize = 4096;

impl BackendConfig for NatsConfig {
    const BACKEND: &'static str = SCHEME;

    fn from_url(url: &str) -> Result<Self, Error> {
        NatsConfig::from_url(url)
    }

    /// Connect, and check that the server has JetStream for this account.
    async fn open(self) -> Result<impl RawTransport, Error> {
        open(self).await
    }
}

async fn open(config: NatsConfig) -> Result<Nats, Error> {
    if !(1..=5).contains(&config.replicas) {
        return Err(Error::invalid(format!(
            "replicas must be 1 to 5, got {}",
            config.replicas
        )));
    }
    let violations = Arc::new(Violations::default());
    let client = connect(&config, violations.clone()).await?;
    let mut js = jetstream::new(client.clone());
    js.set_timeout(config.request_timeout);
    // Fail now, clearly, when the server has no JetStream: the API
    // answers even for a stream that does not exist.
    let probe = client
        .request("$JS.API.INFO", transport_core::Bytes::new())
        .await
        .map_err(|e| {
            err(
                ErrorKind::Unsupported,
                format!("JetStream is not available ({e}); start nats-server with -js"),
            )
        })?;
    if String::from_utf8_lossy(&probe.payload).contains("\"error\"") {
        return Err(err(
            ErrorKind::Unauthorized,
            format!(
                "JetStream refused the account: {}",
                String::from_utf8_lossy(&probe.payload)
            ),
        ));
    }
    let max_message_size = client.server_info().max_payload.saturating_sub(HEADER_OVERHEAD);
    Ok(Nats {
        inner: Arc::new(Inner {
            config,
            client,
            js,
            streams: Mutex::default(),
            violations,
            max_message_size,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn violations_are_matched_by_their_exact_subject() {
        let publish = r#"Permissions Violation for Publish to "orders.eu""#;
        assert_eq!(refused_subject(publish), Some("orders.eu"));
        let stream = stream_api("TRANSPORT_orders");
        assert!(stream("$JS.API.STREAM.INFO.TRANSPORT_orders"));
        assert!(stream("$JS.API.STREAM.CREATE.TRANSPORT_orders"));
        assert!(!stream("$JS.API.STREAM.INFO.TRANSPORT_orders_dbilling_ddlq"));
        let consumer = consumer_api("S", "billing");
        assert!(consumer("$JS.API.CONSUMER.MSG.NEXT.S.billing"));
        assert!(consumer("$JS.API.CONSUMER.CREATE.S.billing.orders.eu"));
        assert!(consumer("$JS.API.CONSUMER.DURABLE.CREATE.S.billing"));
        assert!(!consumer("$JS.API.CONSUMER.MSG.NEXT.S.audit"));
        assert!(!consumer("$JS.ACK.S.billing.1.2.3.4.5"));

        let v = Violations::default();
        let t0 = Instant::now();
        v.record(publish.to_owned());
        assert!(v.since(t0, &|s| s == "orders").is_none(), "a prefix is another subject");
        assert!(v.since(t0, &|s| s == "orders.eu").is_some());
        let later = Instant::now() + Duration::from_millis(1);
        assert!(
            v.since(later, &|s| s == "orders.eu").is_none(),
            "only violations since the operation began"
        );
    }

    #[test]
    fn headers_round_trip() {
        let m = Message::new("p").with_key("k").with_header("x-a", "✓");
        let h = encode(&m, true);
        let back = decode(Some(&h), m.payload.clone(), || "none".into());
        assert_eq!(back, m);
    }
}
