//! Typed domain events as CloudEvents 1.0 in binary content mode: the
//! attributes travel as headers, the payload is the event data (JSON).
//!
//! In a [`Message`] the attributes are `ce-<name>` headers holding their
//! plain values, and `datacontenttype` is the `content-type` header. Each
//! backend writes them the way its broker's CloudEvents protocol binding
//! says (Kafka `ce_` headers, the RabbitMQ `content-type` property, NATS and
//! HTTP-style percent-encoding; see
//! [`backend::cloudevents`](crate::backend::cloudevents)), and reads the
//! binding's form back into this one, so an event from any CloudEvents SDK
//! decodes here and the other way round.

use std::collections::BTreeMap;
use std::fmt;
use std::time::SystemTime;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, ErrorKind};
use crate::message::{new_id, Message, CONTENT_TYPE};
use crate::rfc3339::{format_time, parse_time};

/// Prefix of every CloudEvents attribute header.
pub const CE_PREFIX: &str = "ce-";
/// `ce-specversion`: the CloudEvents version, `1.0`.
pub const CE_SPECVERSION: &str = "ce-specversion";
/// `ce-id`: the event id (also the message id). Required.
pub const CE_ID: &str = "ce-id";
/// `ce-type`: the event type, such as `order.placed`. Required.
pub const CE_TYPE: &str = "ce-type";
/// `ce-source`: who emitted it. Required.
pub const CE_SOURCE: &str = "ce-source";
/// `ce-time`: when it happened (RFC 3339). Optional.
pub const CE_TIME: &str = "ce-time";
/// `ce-subject`: what the event is about, within the source. Optional.
pub const CE_SUBJECT: &str = "ce-subject";
/// `ce-dataschema`: the URI of the data's schema. Optional.
pub const CE_DATASCHEMA: &str = "ce-dataschema";
/// `ce-dataversion` (extension): the data schema version, `MAJOR[.MINOR]`.
pub const CE_DATAVERSION: &str = "ce-dataversion";
/// `ce-correlationid` (extension): the id shared by every event of one flow.
pub const CE_CORRELATIONID: &str = "ce-correlationid";
/// `ce-causationid` (extension): the id of the event that caused this one.
pub const CE_CAUSATIONID: &str = "ce-causationid";
/// `ce-tenantid` (extension): the tenant, for multi-tenant systems.
pub const CE_TENANTID: &str = "ce-tenantid";
/// `ce-partitionkey` (Partitioning extension): the ordering key. On Kafka
/// the binding carries it as the record key.
pub const CE_PARTITIONKEY: &str = "ce-partitionkey";

/// The attributes this type has a field for; any other `ce-*` header is an
/// [`extension`](Event::extensions).
const KNOWN: [&str; 12] = [
    CE_SPECVERSION,
    CE_ID,
    CE_TYPE,
    CE_SOURCE,
    CE_TIME,
    CE_SUBJECT,
    CE_DATASCHEMA,
    CE_DATAVERSION,
    CE_CORRELATIONID,
    CE_CAUSATIONID,
    CE_TENANTID,
    CE_PARTITIONKEY,
];

/// `ce-datacontenttype`: where the NATS binding puts the content type. The
/// backend maps it to `content-type`; a message that still has it (from a
/// producer applying the NATS rule on another broker) is read too.
const CE_DATACONTENTTYPE: &str = "ce-datacontenttype";

/// A CloudEvents 1.0 event with data of type `T` (JSON).
///
/// `id`, `event_type` and `source` are required by CloudEvents; everything
/// else is optional, so an event from another SDK with only those decodes.
#[derive(Clone, PartialEq)]
pub struct Event<T> {
    /// Unique id (a UUIDv7 by default); also the message id.
    pub id: String,
    /// Event type, such as `order.placed`.
    pub event_type: String,
    /// Who emitted it, such as `shop/checkout` (a URI reference).
    pub source: String,
    /// Schema version of `data`, `MAJOR[.MINOR]` (`dataversion` extension).
    pub version: Option<String>,
    /// When it happened.
    pub time: Option<SystemTime>,
    /// What it is about, within the source.
    pub subject: Option<String>,
    /// The URI of the data's schema.
    pub data_schema: Option<String>,
    /// Media type of the data (`datacontenttype`); `application/json` when
    /// written without one.
    pub data_content_type: Option<String>,
    /// Shared by every event of one business flow (`correlationid`).
    pub correlation_id: Option<String>,
    /// The id of the event that caused this one (`causationid`).
    pub causation_id: Option<String>,
    /// The tenant (`tenantid`).
    pub tenant: Option<String>,
    /// The ordering key of the carrying message (`partitionkey`).
    pub key: Option<String>,
    /// Extension attributes this type has no field for, by attribute name
    /// (no `ce-` prefix).
    pub extensions: BTreeMap<String, String>,
    /// The event data.
    pub data: T,
}

/// Why a message is not a valid event of the expected kind.
#[derive(Debug)]
#[non_exhaustive]
pub enum EventError {
    /// A required attribute header is missing (or empty).
    MissingAttribute(&'static str),
    /// An attribute is present but malformed.
    InvalidAttribute {
        /// The header.
        name: String,
        /// Its value.
        value: String,
    },
    /// The data version's major is not one this consumer understands.
    UnsupportedVersion {
        /// The version on the message.
        found: String,
        /// The major the consumer accepts.
        supported_major: u32,
    },
    /// The data is not valid JSON for the expected type.
    Payload(serde_json::Error),
}

impl fmt::Display for EventError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EventError::MissingAttribute(name) => write!(f, "event attribute {name} is missing"),
            EventError::InvalidAttribute { name, value } => {
                write!(f, "event attribute {name} has invalid value {value:?}")
            }
            EventError::UnsupportedVersion { found, supported_major } => {
                write!(
                    f,
                    "event data version {found} is not supported (this consumer reads major {supported_major})"
                )
            }
            EventError::Payload(e) => write!(f, "event data does not parse: {e}"),
        }
    }
}

impl std::error::Error for EventError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            EventError::Payload(e) => Some(e),
            _ => None,
        }
    }
}

impl From<EventError> for Error {
    fn from(e: EventError) -> Self {
        Error::new(ErrorKind::Decode, e.to_string())
            .with_operation(crate::Operation::Decode)
            .with_source(e)
    }
}

impl<T> Event<T> {
    /// A new event that starts a flow: fresh id, now, correlation id = id.
    pub fn new(event_type: impl Into<String>, source: impl Into<String>, data: T) -> Self {
        let id = new_id();
        Event {
            correlation_id: Some(id.clone()),
            id,
            event_type: event_type.into(),
            source: source.into(),
            version: None,
            time: Some(SystemTime::now()),
            subject: None,
            data_schema: None,
            data_content_type: None,
            causation_id: None,
            tenant: None,
            key: None,
            extensions: BTreeMap::new(),
            data,
        }
    }

    /// Mark this event as caused by `cause`: same correlation (the cause's
    /// own id when it has none), causation id = cause's id, its tenant
    /// unless this one has one.
    pub fn caused_by<U>(mut self, cause: &Event<U>) -> Self {
        self.correlation_id = Some(cause.correlation().to_owned());
        self.causation_id = Some(cause.id.clone());
        self.tenant = self.tenant.or_else(|| cause.tenant.clone());
        self
    }

    /// The correlation id, or the event's own id when it has none (it
    /// starts its flow).
    pub fn correlation(&self) -> &str {
        self.correlation_id.as_deref().unwrap_or(&self.id)
    }

    /// Set the data schema version, `MAJOR[.MINOR]`.
    pub fn with_version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into());
        self
    }

    /// Set the subject.
    pub fn with_subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    /// Set the tenant.
    pub fn with_tenant(mut self, tenant: impl Into<String>) -> Self {
        self.tenant = Some(tenant.into());
        self
    }

    /// Set the ordering key of the carrying message.
    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Set an extension attribute. Names are lowercase ASCII letters and
    /// digits (CloudEvents' rule), checked by [`to_message`](Self::to_message).
    pub fn with_extension(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.extensions.insert(name.into(), value.into());
        self
    }

    /// The major of [`version`](Self::version).
    pub fn major_version(&self) -> Option<u32> {
        self.version.as_deref().and_then(major_of)
    }
}

fn major_of(version: &str) -> Option<u32> {
    version.split('.').next()?.parse().ok()
}

/// CloudEvents attribute names: lowercase ASCII letters and digits.
fn valid_attribute_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

impl<T: Serialize> Event<T> {
    /// The message carrying this event: JSON data, attributes as `ce-*`
    /// headers, `content-type` the data's media type.
    pub fn to_message(&self) -> Result<Message, Error> {
        let json = Message::json(&self.data)?;
        self.to_message_with(json.payload)
    }
}

impl<T> Event<T> {
    /// The message carrying this event with `data` as its payload, already
    /// encoded (Avro, Protobuf, validated JSON: see the contracts layer):
    /// attributes as `ce-*` headers, `content-type` the data's media type
    /// (`data_content_type`, which the caller sets to match the encoding).
    pub fn to_message_with(&self, data: impl Into<Bytes>) -> Result<Message, Error> {
        let mut m = Message::new(data).with_id(self.id.clone());
        if self.data_content_type.is_none() {
            m.headers.insert(CONTENT_TYPE, "application/json");
        }
        m.key = self.key.clone();
        let h = &mut m.headers;
        if let Some(ct) = &self.data_content_type {
            h.insert(CONTENT_TYPE, ct.clone());
        }
        h.insert(CE_SPECVERSION, "1.0");
        h.insert(CE_ID, self.id.clone());
        h.insert(CE_TYPE, self.event_type.clone());
        h.insert(CE_SOURCE, self.source.clone());
        let optional = [
            (CE_TIME, self.time.map(format_time)),
            (CE_SUBJECT, self.subject.clone()),
            (CE_DATASCHEMA, self.data_schema.clone()),
            (CE_DATAVERSION, self.version.clone()),
            (CE_CORRELATIONID, self.correlation_id.clone()),
            (CE_CAUSATIONID, self.causation_id.clone()),
            (CE_TENANTID, self.tenant.clone()),
            (CE_PARTITIONKEY, self.key.clone()),
        ];
        for (name, value) in optional {
            if let Some(v) = value {
                h.insert(name, v);
            }
        }
        for (name, value) in &self.extensions {
            let header = format!("{CE_PREFIX}{name}");
            if !valid_attribute_name(name) || KNOWN.contains(&header.as_str()) || header == CE_DATACONTENTTYPE {
                return Err(Error::invalid(format!(
                    "event extension {name:?}: names are lowercase ASCII letters and digits, \
                     and not those of the attributes Event has a field for"
                )));
            }
            h.insert(header, value.clone());
        }
        Ok(m)
    }

    /// This event with its data turned into another (the attributes kept).
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Event<U> {
        Event {
            id: self.id,
            event_type: self.event_type,
            source: self.source,
            version: self.version,
            time: self.time,
            subject: self.subject,
            data_schema: self.data_schema,
            data_content_type: self.data_content_type,
            correlation_id: self.correlation_id,
            causation_id: self.causation_id,
            tenant: self.tenant,
            key: self.key,
            extensions: self.extensions,
            data: f(self.data),
        }
    }
}

impl Event<Bytes> {
    /// The event a message carries with its data still encoded, for
    /// decoders other than JSON: the attributes are checked as
    /// [`decode`](Event::decode) checks them.
    pub fn raw(message: &Message) -> Result<Self, EventError> {
        let attributes = Attributes::read(message)?;
        Ok(attributes.into_event_with(message, message.payload.clone()))
    }
}

impl<T: DeserializeOwned> Event<T> {
    /// Decode the event a message carries, whatever its data version.
    pub fn decode(message: &Message) -> Result<Self, EventError> {
        let attributes = Attributes::read(message)?;
        attributes.into_event(message)
    }

    /// Decode an event whose data version has major `supported_major`: one
    /// without a `dataversion`, or of another major, is refused before its
    /// data is parsed.
    pub fn decode_version(message: &Message, supported_major: u32) -> Result<Self, EventError> {
        let attributes = Attributes::read(message)?;
        let version = attributes
            .version
            .as_deref()
            .ok_or(EventError::MissingAttribute(CE_DATAVERSION))?;
        match major_of(version) {
            Some(m) if m == supported_major => attributes.into_event(message),
            Some(_) => Err(EventError::UnsupportedVersion {
                found: version.to_owned(),
                supported_major,
            }),
            None => Err(EventError::InvalidAttribute {
                name: CE_DATAVERSION.into(),
                value: version.to_owned(),
            }),
        }
    }
}

/// The attributes of an event, read before its data.
struct Attributes {
    id: String,
    event_type: String,
    source: String,
    version: Option<String>,
    time: Option<SystemTime>,
    extensions: BTreeMap<String, String>,
}

impl Attributes {
    fn read(message: &Message) -> Result<Self, EventError> {
        let h = &message.headers;
        let required = |name: &'static str| match h.get(name) {
            Some(v) if !v.is_empty() => Ok(v.to_owned()),
            _ => Err(EventError::MissingAttribute(name)),
        };
        let spec = required(CE_SPECVERSION)?;
        if spec != "1.0" {
            return Err(EventError::InvalidAttribute {
                name: CE_SPECVERSION.into(),
                value: spec,
            });
        }
        let time = match h.get(CE_TIME) {
            None => None,
            Some(text) => Some(parse_time(text).ok_or_else(|| EventError::InvalidAttribute {
                name: CE_TIME.into(),
                value: text.to_owned(),
            })?),
        };
        let extensions = h
            .iter()
            .filter(|(name, _)| name.starts_with(CE_PREFIX) && !KNOWN.contains(name) && *name != CE_DATACONTENTTYPE)
            .map(|(name, value)| (name[CE_PREFIX.len()..].to_owned(), value.to_owned()))
            .collect();
        Ok(Attributes {
            id: required(CE_ID)?,
            event_type: required(CE_TYPE)?,
            source: required(CE_SOURCE)?,
            version: h.get(CE_DATAVERSION).map(str::to_owned),
            time,
            extensions,
        })
    }

    fn into_event<T: DeserializeOwned>(self, message: &Message) -> Result<Event<T>, EventError> {
        // CloudEvents data is optional: no payload reads as JSON `null`, so
        // an `Event<Option<T>>` or `Event<()>` takes an event without data.
        let payload: &[u8] = if message.payload.is_empty() {
            b"null"
        } else {
            &message.payload
        };
        let data = serde_json::from_slice(payload).map_err(EventError::Payload)?;
        Ok(self.into_event_with(message, data))
    }

    fn into_event_with<T>(self, message: &Message, data: T) -> Event<T> {
        let h = &message.headers;
        let owned = |name: &str| h.get(name).map(str::to_owned);
        Event {
            id: self.id,
            event_type: self.event_type,
            source: self.source,
            version: self.version,
            time: self.time,
            subject: owned(CE_SUBJECT),
            data_schema: owned(CE_DATASCHEMA),
            data_content_type: owned(CONTENT_TYPE).or_else(|| owned(CE_DATACONTENTTYPE)),
            correlation_id: owned(CE_CORRELATIONID),
            causation_id: owned(CE_CAUSATIONID),
            tenant: owned(CE_TENANTID),
            key: message.key.clone().or_else(|| owned(CE_PARTITIONKEY)),
            extensions: self.extensions,
            data,
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for Event<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("id", &self.id)
            .field("type", &self.event_type)
            .field("source", &self.source)
            .field("version", &self.version)
            .field("time", &self.time.map(format_time))
            .field("subject", &self.subject)
            .field("correlation_id", &self.correlation_id)
            .field("causation_id", &self.causation_id)
            .field("tenant", &self.tenant)
            .field("key", &self.key)
            .field("extensions", &self.extensions)
            .field("data", &self.data)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Placed {
        order: u64,
    }

    #[test]
    fn round_trip_keeps_every_attribute() {
        let first = Event::new("order.placed", "shop", Placed { order: 7 })
            .with_version("1.2")
            .with_tenant("acme");
        let mut second = Event::new("order.paid", "billing", Placed { order: 7 })
            .with_version("1")
            .caused_by(&first)
            .with_key("7")
            .with_subject("orders/7")
            .with_extension("traceparent", "00-abc-def-01");
        second.data_schema = Some("https://example.com/paid.json".into());
        let m = second.to_message().unwrap();
        assert_eq!(m.id, second.id);
        assert_eq!(m.headers.get(CE_TYPE), Some("order.paid"));
        assert_eq!(m.headers.get(CONTENT_TYPE), Some("application/json"));
        let back: Event<Placed> = Event::decode_version(&m, 1).unwrap();
        assert_eq!(back.data, Placed { order: 7 });
        assert_eq!(back.correlation(), first.id);
        assert_eq!(back.causation_id.as_deref(), Some(first.id.as_str()));
        assert_eq!(back.tenant.as_deref(), Some("acme"));
        assert_eq!(back.key.as_deref(), Some("7"));
        assert_eq!(back.subject.as_deref(), Some("orders/7"));
        assert_eq!(back.data_schema, second.data_schema);
        assert_eq!(back.data_content_type.as_deref(), Some("application/json"));
        assert_eq!(
            back.extensions.get("traceparent").map(String::as_str),
            Some("00-abc-def-01")
        );
        let skew = back
            .time
            .unwrap()
            .duration_since(second.time.unwrap())
            .unwrap_or_else(|e| e.duration());
        assert!(skew.as_millis() < 2);
    }

    /// What another SDK sends with only the required attributes, and no data.
    fn minimal(extra: &[(&str, &str)], payload: &'static [u8]) -> Message {
        let mut m = Message::new(payload);
        for (n, v) in [
            (CE_SPECVERSION, "1.0"),
            (CE_ID, "A-1"),
            (CE_TYPE, "t"),
            (CE_SOURCE, "/s"),
        ] {
            m.headers.insert(n, v);
        }
        for (n, v) in extra {
            m.headers.insert(*n, *v);
        }
        m
    }

    #[test]
    fn optional_attributes_are_optional() {
        let e: Event<Option<Placed>> = Event::decode(&minimal(&[], b"")).unwrap();
        assert_eq!(
            (e.id.as_str(), e.time, e.version.as_deref(), e.data.as_ref()),
            ("A-1", None, None, None)
        );
        assert_eq!(e.correlation(), "A-1");
        assert!(e.extensions.is_empty());
        // The version check is the caller's choice.
        assert!(matches!(
            Event::<Option<Placed>>::decode_version(&minimal(&[], b""), 1),
            Err(EventError::MissingAttribute(CE_DATAVERSION))
        ));
        // Re-encoding does not invent attributes the event did not have.
        let again = e.to_message().unwrap();
        assert_eq!(again.headers.get(CE_TIME), None);
        assert_eq!(again.headers.get(CE_CORRELATIONID), None);
    }

    #[test]
    fn time_with_offset_names_its_instant() {
        let utc: Event<Placed> =
            Event::decode(&minimal(&[(CE_TIME, "2026-11-24T20:00:00.250Z")], b"{\"order\":1}")).unwrap();
        for form in ["2026-11-24T22:00:00.250+02:00", "2026-11-24t20:00:00.25z"] {
            let e: Event<Placed> = Event::decode(&minimal(&[(CE_TIME, form)], b"{\"order\":1}")).unwrap();
            assert_eq!(e.time, utc.time, "{form}");
        }
        let bad = Event::<Placed>::decode(&minimal(&[(CE_TIME, "2026-11-24 late")], b"{\"order\":1}"));
        assert!(matches!(bad, Err(EventError::InvalidAttribute { ref name, .. }) if name == CE_TIME));
    }

    #[test]
    fn partitionkey_and_nats_content_type_are_read() {
        let m = minimal(
            &[(CE_PARTITIONKEY, "k"), (CE_DATACONTENTTYPE, "application/json")],
            b"1",
        );
        let e: Event<u32> = Event::decode(&m).unwrap();
        assert_eq!(e.key.as_deref(), Some("k"));
        assert_eq!(e.data_content_type.as_deref(), Some("application/json"));
        assert!(e.extensions.is_empty(), "{:?}", e.extensions);
    }

    #[test]
    fn causation_names_the_direct_cause() {
        let placed = Event::new("order.placed", "shop", 1).with_tenant("acme");
        let paid = Event::new("order.paid", "billing", 2).caused_by(&placed);
        let shipped = Event::new("order.shipped", "warehouse", 3)
            .with_tenant("acme-eu")
            .caused_by(&paid);
        // The flow's id stays the first event's; the cause is the event just before.
        assert_eq!(shipped.correlation(), placed.id);
        assert_eq!(shipped.causation_id.as_deref(), Some(paid.id.as_str()));
        assert_eq!(
            paid.tenant.as_deref(),
            Some("acme"),
            "a tenantless event takes its cause's"
        );
        assert_eq!(
            shipped.tenant.as_deref(),
            Some("acme-eu"),
            "the event's own tenant was replaced"
        );
    }

    #[test]
    fn a_new_event_starts_its_flow() {
        let e = Event::new("order.placed", "shop", 1);
        assert_eq!(e.correlation_id.as_deref(), Some(e.id.as_str()));
        let m = e.to_message().unwrap();
        // Written out, so that consumers in other SDKs see the flow too.
        assert_eq!(m.headers.get(CE_CORRELATIONID), Some(e.id.as_str()));
    }

    #[test]
    fn the_message_key_is_the_event_key() {
        // Kafka carries partitionkey as the record key only: the backend
        // hands the message over with a key and no ce-partitionkey header.
        let mut m = minimal(&[], b"1");
        m.key = Some("order-7".into());
        let e: Event<u32> = Event::decode(&m).unwrap();
        assert_eq!(e.key.as_deref(), Some("order-7"));
        let both = minimal(&[(CE_PARTITIONKEY, "header")], b"1").with_key("record");
        assert_eq!(Event::<u32>::decode(&both).unwrap().key.as_deref(), Some("record"));
    }

    #[test]
    fn only_the_supported_major_decodes() {
        let of = |v: &str| Event::new("t", "s", 1).with_version(v).to_message().unwrap();
        assert!(Event::<u32>::decode_version(&of("2.3"), 2).is_ok());
        assert!(Event::<u32>::decode_version(&of("2"), 2).is_ok());
        for (older_or_newer, major) in [("1.9", 2), ("3.0", 2), ("12", 1), ("0.1", 1)] {
            assert!(
                matches!(
                    Event::<u32>::decode_version(&of(older_or_newer), major),
                    Err(EventError::UnsupportedVersion { .. })
                ),
                "version {older_or_newer} decoded by a consumer of major {major}"
            );
        }
        assert!(matches!(
            Event::<u32>::decode_version(&of("x.1"), 1),
            Err(EventError::InvalidAttribute { .. })
        ));
    }

    #[test]
    fn extensions_cannot_pose_as_the_content_type() {
        // ce-datacontenttype is where NATS carries the content type: an
        // extension by that name would change the event's media type.
        let e = Event::new("t", "s", 1).with_extension("datacontenttype", "text/plain");
        assert_eq!(e.to_message().unwrap_err().kind(), ErrorKind::InvalidArgument);
        let fine = Event::new("t", "s", 1)
            .with_extension("region9", "eu")
            .to_message()
            .unwrap();
        assert_eq!(fine.headers.get("ce-region9"), Some("eu"));
    }

    #[test]
    fn typed_errors() {
        let m = Event::new("order.placed", "shop", Placed { order: 1 })
            .with_version("2.0")
            .to_message()
            .unwrap();
        assert!(matches!(
            Event::<Placed>::decode_version(&m, 1),
            Err(EventError::UnsupportedVersion { supported_major: 1, .. })
        ));
        let mut missing = m.clone();
        missing.headers.remove(CE_SOURCE);
        assert!(matches!(
            Event::<Placed>::decode(&missing),
            Err(EventError::MissingAttribute(CE_SOURCE))
        ));
        let mut empty = m.clone();
        empty.headers.insert(CE_ID, "");
        assert!(matches!(
            Event::<Placed>::decode(&empty),
            Err(EventError::MissingAttribute(CE_ID))
        ));
        let mut old = m.clone();
        old.headers.insert(CE_SPECVERSION, "0.3");
        assert!(matches!(
            Event::<Placed>::decode(&old),
            Err(EventError::InvalidAttribute { .. })
        ));
        let mut bad = m.clone();
        bad.payload = bytes::Bytes::from_static(b"{\"order\":\"x\"}");
        let err = Event::<Placed>::decode(&bad).unwrap_err();
        assert!(matches!(err, EventError::Payload(_)));
        assert_eq!(Error::from(err).kind(), ErrorKind::Decode);
        let invalid_ext = Event::new("t", "s", 1).with_extension("Trace-Id", "x").to_message();
        assert_eq!(invalid_ext.unwrap_err().kind(), ErrorKind::InvalidArgument);
        let shadowing = Event::new("t", "s", 1).with_extension("tenantid", "x").to_message();
        assert_eq!(shadowing.unwrap_err().kind(), ErrorKind::InvalidArgument);
    }
}
