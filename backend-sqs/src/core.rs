//! The raw backend's state (the SQS and SNS clients, the configuration and
//! the caches of topic ARNs and queue URLs), the mapping of AWS errors, and
//! the message encoding every file shares (body + at most 10 message
//! attributes, and reading them back from a received message).

use std::collections::HashMap;
use std::fmt::{self, Display};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::MessageSystemAttributeName;
use base64::Engine;
use transport_core::backend::cloudevents::Binding;
use transport_core::backend::{BackendConfig, RawTransport};
use transport_core::headers::{CE_ID, CE_PREFIX, CE_SOURCE, CE_SPECVERSION, CE_TIME, CE_TYPE, CONTENT_TYPE};
use transport_core::{Bytes, Error, ErrorKind, Headers, Message};

use crate::config::SqsConfig;
use crate::SCHEME;

/// Attribute carrying the message id.
pub(crate) const A_ID: &str = "transport-id";
/// Attribute carrying the key.
pub(crate) const A_KEY: &str = "transport-key";
/// Attribute carrying every header as a JSON object (lossless, any number).
pub(crate) const A_HEADERS: &str = "transport-headers";
/// Attribute saying the body is base64 (the payload was not valid text).
pub(crate) const A_ENCODING: &str = "transport-encoding";
/// SQS and SNS accept at most this many message attributes.
const MAX_ATTRIBUTES: usize = 10;
/// SQS and SNS accept at most 256 KiB per message, body and attributes.
pub(crate) const WIRE_LIMIT: usize = 256 * 1024;

/// An error of this backend (the core's wrapper names the backend and the
/// operation).
pub(crate) fn err(kind: ErrorKind, e: impl Display) -> Error {
    Error::new(kind, e.to_string())
}

/// The error kind of an AWS error code (also the codes of failed batch entries).
pub(crate) fn kind_of_code(code: &str) -> ErrorKind {
    match code {
        c if c.contains("NonExistentQueue") || c.contains("QueueDoesNotExist") || c == "NotFound" => {
            ErrorKind::NotFound
        }
        "InvalidClientTokenId" | "SignatureDoesNotMatch" | "UnrecognizedClientException" | "InvalidAccessKeyId" => {
            ErrorKind::Unauthorized
        }
        // Known credentials, an IAM policy that does not allow the action.
        "AccessDenied" | "AccessDeniedException" | "AuthorizationError" => ErrorKind::Forbidden,
        // A receipt from an earlier receive of a message that was received
        // again since (its visibility timeout passed).
        "ReceiptHandleIsInvalid" | "InvalidReceiptHandle" => ErrorKind::DeliveryExpired,
        "InvalidParameterValue"
        | "InvalidParameter"
        | "InvalidAttributeName"
        | "InvalidAttributeValue"
        | "ValidationError" => ErrorKind::InvalidArgument,
        c if c.contains("TooLong") || c.contains("TooLarge") => ErrorKind::MessageTooLarge,
        "Throttling" | "RequestThrottled" | "ThrottlingException" | "ServiceUnavailable" => ErrorKind::Timeout,
        _ => ErrorKind::Backend,
    }
}

/// Map an SDK error by its kind and AWS error code.
pub(crate) fn map_sdk<E, R>(e: SdkError<E, R>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + 'static,
{
    if let SdkError::DispatchFailure(_) = &e {
        // A private CA not trusted, an expired certificate...: not retried.
        if let Some(tls) = transport_core::tls::handshake_error(&e) {
            return tls.with_backend(SCHEME);
        }
    }
    let (kind, text) = match &e {
        SdkError::TimeoutError(_) => (ErrorKind::Timeout, "the request timed out".to_owned()),
        SdkError::DispatchFailure(d) => (
            ErrorKind::ConnectionLost,
            format!("cannot reach the endpoint ({d:?}); check the endpoint and region"),
        ),
        SdkError::ServiceError(s) => {
            let se = s.err();
            let code = se.code().unwrap_or("");
            let message = se.message().unwrap_or("");
            (kind_of_code(code), format!("{code}: {message}"))
        }
        other => (ErrorKind::Backend, format!("{other}")),
    };
    let hint = match kind {
        ErrorKind::Unauthorized => "; check the access key and secret",
        ErrorKind::Forbidden => "; the IAM policy does not allow an action this library needs (backend-sqs/docs.md)",
        _ => "",
    };
    err(kind, format!("{text}{hint}"))
}

/// FIFO `MessageGroupId` of a message: its key (keyless messages share one group).
pub(crate) fn group_id(m: &Message) -> String {
    m.key.clone().unwrap_or_else(|| "default".into())
}

/// A message on the wire: body and string attributes.
pub(crate) struct Wire {
    pub body: String,
    pub attributes: Vec<(String, String)>,
}

impl Wire {
    pub fn size(&self) -> usize {
        self.body.len()
            + self
                .attributes
                .iter()
                .map(|(k, v)| k.len() + v.len() + 6)
                .sum::<usize>()
    }
}

fn sqs_text_ok(s: &str) -> bool {
    // Characters SQS accepts in a body: #x9 #xA #xD and #x20 and above (not the surrogates).
    s.chars()
        .all(|c| matches!(c, '\u{9}' | '\u{a}' | '\u{d}') || (c >= '\u{20}' && c != '\u{fffe}' && c != '\u{ffff}'))
}

fn attr_name_ok(name: &str) -> bool {
    name.len() <= 256
        && !name.starts_with(['.', '-'])
        && !name.to_ascii_lowercase().starts_with("aws.")
        && !name.to_ascii_lowercase().starts_with("amazon.")
        && !name.contains("..")
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// Body = the payload when it is text SQS accepts, else base64. The id, key
/// and all headers (as JSON) always travel as attributes; the remaining
/// attribute slots show common headers natively for other SQS tools.
pub(crate) fn encode(m: &Message, extra: &[(&str, String)]) -> Wire {
    // SQS and SNS refuse an empty body and most control characters.
    let (body, encoding) = match std::str::from_utf8(&m.payload) {
        _ if m.payload.is_empty() => ("-".to_owned(), Some("empty")),
        Ok(t) if sqs_text_ok(t) => (t.to_owned(), None),
        _ => (
            base64::engine::general_purpose::STANDARD.encode(&m.payload),
            Some("base64"),
        ),
    };
    let mut attributes = vec![(A_ID.to_owned(), m.id.clone())];
    if let Some(k) = &m.key {
        attributes.push((A_KEY.to_owned(), k.clone()));
    }
    if let Some(e) = encoding {
        attributes.push((A_ENCODING.to_owned(), e.to_owned()));
    }
    if !m.headers.is_empty() || !extra.is_empty() {
        // In the HTTP binding's form, like the native attributes: a foreign
        // consumer hands either to a CloudEvents SDK as they are.
        let mut all: serde_json::Map<String, serde_json::Value> = Binding::Http
            .encode(&m.headers)
            .map(|(k, v)| (k.into_owned(), v.into_owned().into()))
            .collect();
        for (k, v) in extra {
            all.insert((*k).to_owned(), v.as_str().into());
        }
        attributes.push((A_HEADERS.to_owned(), serde_json::Value::Object(all).to_string()));
    }
    // The free slots, CloudEvents' required attributes first, in the HTTP
    // binding's form (a foreign consumer reads them without the JSON).
    let mut native: Vec<_> = Binding::Http.encode(&m.headers).collect();
    native.sort_by_key(|(k, _)| native_rank(k));
    for (k, v) in native {
        if attributes.len() >= MAX_ATTRIBUTES {
            break;
        }
        // Attribute values must not be empty; names must follow SQS rules.
        if attr_name_ok(&k) && !v.is_empty() && sqs_text_ok(&v) && !k.starts_with("transport-") {
            attributes.push((k.into_owned(), v.into_owned()));
        }
    }
    Wire { body, attributes }
}

/// Which headers get the native attribute slots first: an event's required
/// attributes and content type, then its other attributes, then the rest.
fn native_rank(name: &str) -> u8 {
    match name {
        CE_SPECVERSION | CE_ID | CE_TYPE | CE_SOURCE => 0,
        CONTENT_TYPE | CE_TIME => 1,
        n if n.starts_with(CE_PREFIX) => 2,
        _ => 3,
    }
}

/// The message in a body and its attributes. Messages from other producers
/// (no `transport-headers`) get their attributes as headers, and without a
/// `transport-id` the SQS message id.
pub(crate) fn decode(body: &str, attributes: &HashMap<String, String>, fallback_id: &str) -> Message {
    let payload = match attributes.get(A_ENCODING).map(String::as_str) {
        Some("empty") => Bytes::new(),
        Some("base64") => base64::engine::general_purpose::STANDARD
            .decode(body)
            .map(Bytes::from)
            .unwrap_or_else(|_| Bytes::from(body.to_owned())),
        _ => Bytes::from(body.to_owned()),
    };
    let from_wire = |(k, v): (&String, &String)| {
        let (k, v) = Binding::Http.decode(k, v);
        (k.into_owned(), v.into_owned())
    };
    let headers: Headers = match attributes.get(A_HEADERS) {
        Some(json) => serde_json::from_str::<HashMap<String, String>>(json)
            .unwrap_or_default()
            .iter()
            .map(from_wire)
            .collect(),
        // From another producer: its attributes are the headers.
        None => attributes
            .iter()
            .filter(|(k, _)| ![A_ID, A_KEY, A_ENCODING].contains(&k.as_str()))
            .map(from_wire)
            .collect(),
    };
    Message {
        id: attributes.get(A_ID).cloned().unwrap_or_else(|| fallback_id.to_owned()),
        key: attributes.get(A_KEY).cloned(),
        headers,
        payload,
    }
}

/// The message attributes of a received message as text: String and Number
/// attributes as they are, a foreign producer's Binary attribute in the
/// lossless `base64:` form (text bytes stay text).
pub(crate) fn attributes_of(m: &aws_sdk_sqs::types::Message) -> HashMap<String, String> {
    m.message_attributes()
        .map(|a| {
            a.iter()
                .filter_map(|(k, v)| {
                    let text = match (v.string_value(), v.binary_value()) {
                        (Some(text), _) => text.to_owned(),
                        (None, Some(bytes)) => transport_core::headers::header_text(bytes.as_ref()).into_owned(),
                        (None, None) => return None,
                    };
                    Some((k.clone(), text))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A numeric system attribute of a received message.
pub(crate) fn system(m: &aws_sdk_sqs::types::Message, name: MessageSystemAttributeName) -> Option<u64> {
    m.attributes()?.get(&name)?.parse().ok()
}

/// The message a received SQS message carries.
pub(crate) fn decode_received(m: &aws_sdk_sqs::types::Message) -> Message {
    decode(m.body().unwrap_or(""), &attributes_of(m), m.message_id().unwrap_or(""))
}

/// Largest payload that fits 256 KiB even base64-encoded, with room for
/// the attributes.
pub(crate) const MAX_MESSAGE: usize = (WIRE_LIMIT - 8 * 1024) / 4 * 3;
/// Longest visibility timeout / nack delay SQS allows.
pub(crate) const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 3600);
/// Dead letters a peek or redrive looks at to find the oldest.
pub(crate) const DLQ_SCAN: usize = 1000;

/// The raw backend (cheap to clone): what the core's wrapper, the
/// subscriptions and the dead-letter queues call.
#[derive(Clone)]
pub(crate) struct Sqs {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: SqsConfig,
    pub(crate) sqs: aws_sdk_sqs::Client,
    pub(crate) sns: aws_sdk_sns::Client,
    pub(crate) topics: Mutex<HashMap<String, String>>,
    pub(crate) queues: Mutex<HashMap<String, (String, String)>>,
}

impl fmt::Debug for Sqs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqsTransport")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

pub(crate) fn secs(d: Duration) -> i32 {
    d.min(MAX_VISIBILITY).as_secs_f64().ceil() as i32
}

impl BackendConfig for SqsConfig {
    const BACKEND: &'static str = SCHEME;

    fn from_url(url: &str) -> Result<Self, Error> {
        SqsConfig::from_url(url)
    }

    async fn open(self) -> Result<impl RawTransport, Error> {
        open(self).await
    }
}

/// Make the clients and check the endpoint and credentials with one cheap
/// call.
async fn open(config: SqsConfig) -> Result<Sqs, Error> {
    config.check()?;
    let sdk = config.sdk_config().await.map_err(|e| e.with_backend(SCHEME))?;
    let t = Sqs {
        inner: Arc::new(Inner {
            sqs: aws_sdk_sqs::Client::new(&sdk),
            sns: aws_sdk_sns::Client::new(&sdk),
            config,
            topics: Mutex::default(),
            queues: Mutex::default(),
        }),
    };
    let limit = t.inner.config.connect_timeout;
    let check = t.inner.sqs.list_queues().max_results(1).send();
    match tokio::time::timeout(limit, check).await {
        Ok(answer) => answer.map_err(map_sdk)?,
        Err(_) => {
            return Err(Error::new(
                ErrorKind::Timeout,
                format!(
                    "no answer from the endpoint within {limit:?} (connect_timeout_ms); check the endpoint and region"
                ),
            ))
        }
    };
    Ok(t)
}

impl Sqs {
    pub(crate) fn fifo(&self) -> bool {
        self.inner.config.fifo
    }

    pub(crate) fn point_to_point(&self) -> bool {
        self.inner.config.point_to_point
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_binary_text_empty_and_many_headers() {
        for payload in [
            b"hello \xe2\x9c\x93".to_vec(),
            vec![0, 159, 146, 150, 255],
            Vec::new(),
            b"\x01ctrl".to_vec(),
        ] {
            let mut m = Message::new(payload).with_key("k");
            for i in 0..30 {
                m.headers.insert(format!("h{i}"), format!("v ✓ {i}"));
            }
            m.headers.insert("empty", "");
            let w = encode(&m, &[]);
            assert!(w.attributes.len() <= MAX_ATTRIBUTES);
            let attrs: HashMap<String, String> = w.attributes.into_iter().collect();
            assert_eq!(decode(&w.body, &attrs, "x"), m);
        }
    }
}
