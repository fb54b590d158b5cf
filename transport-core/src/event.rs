//! Typed domain events carried in CloudEvents binary content mode: the
//! attributes travel as `ce-*` headers, the payload is the event data.

use std::fmt;
use std::time::SystemTime;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::dead_letter::{format_time, parse_time};
use crate::error::{Error, ErrorKind};
use crate::message::{new_id, Message};

/// `ce-specversion`: the CloudEvents version, always `1.0`.
pub const CE_SPECVERSION: &str = "ce-specversion";
/// `ce-id`: the event id (also the message id).
pub const CE_ID: &str = "ce-id";
/// `ce-type`: the event type, such as `order.placed`.
pub const CE_TYPE: &str = "ce-type";
/// `ce-source`: who emitted it.
pub const CE_SOURCE: &str = "ce-source";
/// `ce-time`: when it happened (RFC 3339).
pub const CE_TIME: &str = "ce-time";
/// `ce-dataversion` (extension): the data schema version, `MAJOR[.MINOR]`.
pub const CE_DATAVERSION: &str = "ce-dataversion";
/// `ce-correlationid` (extension): the id shared by every event of one flow.
pub const CE_CORRELATIONID: &str = "ce-correlationid";
/// `ce-causationid` (extension): the id of the event that caused this one.
pub const CE_CAUSATIONID: &str = "ce-causationid";
/// `ce-tenantid` (extension): the tenant, for multi-tenant systems.
pub const CE_TENANTID: &str = "ce-tenantid";

/// A domain event with data of type `T`.
#[derive(Clone, PartialEq)]
pub struct Event<T> {
    /// Unique id (a UUIDv7 by default); also the message id.
    pub id: String,
    /// Event type, such as `order.placed`.
    pub event_type: String,
    /// Schema version of `data`, `MAJOR[.MINOR]`; consumers accept a major.
    pub version: String,
    /// Who emitted it, such as `shop/checkout`.
    pub source: String,
    /// When it happened.
    pub time: SystemTime,
    /// Shared by every event of one business flow; the event's own id when it starts one.
    pub correlation_id: String,
    /// The id of the event that caused this one.
    pub causation_id: Option<String>,
    /// The tenant.
    pub tenant: Option<String>,
    /// The ordering key of the message that carries it.
    pub key: Option<String>,
    /// The event data.
    pub data: T,
}

/// Why a message is not a valid event of the expected kind.
#[derive(Debug)]
#[non_exhaustive]
pub enum EventError {
    /// A required attribute header is missing.
    MissingAttribute(&'static str),
    /// An attribute is present but malformed.
    InvalidAttribute {
        /// The header.
        name: &'static str,
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
            .with_operation("decode event")
            .with_source(e)
    }
}

impl<T> Event<T> {
    /// A new event that starts a flow: fresh id, now, correlation id = id.
    pub fn new(event_type: impl Into<String>, version: impl Into<String>, source: impl Into<String>, data: T) -> Self {
        let id = new_id();
        Event {
            correlation_id: id.clone(),
            id,
            event_type: event_type.into(),
            version: version.into(),
            source: source.into(),
            time: SystemTime::now(),
            causation_id: None,
            tenant: None,
            key: None,
            data,
        }
    }

    /// Mark this event as caused by `cause`: same correlation id, causation id = cause's id.
    pub fn caused_by<U>(mut self, cause: &Event<U>) -> Self {
        self.correlation_id = cause.correlation_id.clone();
        self.causation_id = Some(cause.id.clone());
        self.tenant = self.tenant.or_else(|| cause.tenant.clone());
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

    /// The major of [`version`](Self::version).
    pub fn major_version(&self) -> Option<u32> {
        major_of(&self.version)
    }
}

fn major_of(version: &str) -> Option<u32> {
    version.split('.').next()?.parse().ok()
}

impl<T: Serialize> Event<T> {
    /// The message carrying this event: JSON data, attributes as `ce-*` headers.
    pub fn to_message(&self) -> Result<Message, Error> {
        let mut m = Message::json(&self.data)?.with_id(self.id.clone());
        m.key = self.key.clone();
        let h = &mut m.headers;
        h.insert(CE_SPECVERSION, "1.0");
        h.insert(CE_ID, self.id.clone());
        h.insert(CE_TYPE, self.event_type.clone());
        h.insert(CE_SOURCE, self.source.clone());
        h.insert(CE_TIME, format_time(self.time));
        h.insert(CE_DATAVERSION, self.version.clone());
        h.insert(CE_CORRELATIONID, self.correlation_id.clone());
        if let Some(c) = &self.causation_id {
            h.insert(CE_CAUSATIONID, c.clone());
        }
        if let Some(t) = &self.tenant {
            h.insert(CE_TENANTID, t.clone());
        }
        Ok(m)
    }
}

impl<T: DeserializeOwned> Event<T> {
    /// Decode an event whose data version has major `supported_major`.
    pub fn decode(message: &Message, supported_major: u32) -> Result<Self, EventError> {
        let h = &message.headers;
        let req = |name: &'static str| h.get(name).ok_or(EventError::MissingAttribute(name));
        let spec = req(CE_SPECVERSION)?;
        if spec != "1.0" {
            return Err(EventError::InvalidAttribute {
                name: CE_SPECVERSION,
                value: spec.to_owned(),
            });
        }
        let id = req(CE_ID)?.to_owned();
        let event_type = req(CE_TYPE)?.to_owned();
        let source = req(CE_SOURCE)?.to_owned();
        let time_text = req(CE_TIME)?;
        let time = parse_time(time_text).ok_or_else(|| EventError::InvalidAttribute {
            name: CE_TIME,
            value: time_text.to_owned(),
        })?;
        let version = req(CE_DATAVERSION)?.to_owned();
        match major_of(&version) {
            Some(m) if m == supported_major => {}
            Some(_) => {
                return Err(EventError::UnsupportedVersion {
                    found: version,
                    supported_major,
                })
            }
            None => {
                return Err(EventError::InvalidAttribute {
                    name: CE_DATAVERSION,
                    value: version,
                })
            }
        }
        let data = serde_json::from_slice(&message.payload).map_err(EventError::Payload)?;
        Ok(Event {
            correlation_id: h.get(CE_CORRELATIONID).unwrap_or(&id).to_owned(),
            causation_id: h.get(CE_CAUSATIONID).map(str::to_owned),
            tenant: h.get(CE_TENANTID).map(str::to_owned),
            key: message.key.clone(),
            id,
            event_type,
            version,
            source,
            time,
            data,
        })
    }
}

impl<T: fmt::Debug> fmt::Debug for Event<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("id", &self.id)
            .field("type", &self.event_type)
            .field("version", &self.version)
            .field("source", &self.source)
            .field("correlation_id", &self.correlation_id)
            .field("causation_id", &self.causation_id)
            .field("tenant", &self.tenant)
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
        let first = Event::new("order.placed", "1.2", "shop", Placed { order: 7 }).with_tenant("acme");
        let second = Event::new("order.paid", "1", "billing", Placed { order: 7 })
            .caused_by(&first)
            .with_key("7");
        let m = second.to_message().unwrap();
        assert_eq!(m.id, second.id);
        assert_eq!(m.headers.get(CE_TYPE), Some("order.paid"));
        let back: Event<Placed> = Event::decode(&m, 1).unwrap();
        assert_eq!(back.data, Placed { order: 7 });
        assert_eq!(back.correlation_id, first.id);
        assert_eq!(back.causation_id.as_deref(), Some(first.id.as_str()));
        assert_eq!(back.tenant.as_deref(), Some("acme"));
        assert_eq!(back.key.as_deref(), Some("7"));
        let skew = back.time.duration_since(second.time).unwrap_or_else(|e| e.duration());
        assert!(skew.as_millis() < 2);
    }

    #[test]
    fn typed_errors() {
        let m = Event::new("order.placed", "2.0", "shop", Placed { order: 1 })
            .to_message()
            .unwrap();
        assert!(matches!(
            Event::<Placed>::decode(&m, 1),
            Err(EventError::UnsupportedVersion { supported_major: 1, .. })
        ));
        let mut missing = m.clone();
        missing.headers.remove(CE_SOURCE);
        assert!(matches!(
            Event::<Placed>::decode(&missing, 2),
            Err(EventError::MissingAttribute(CE_SOURCE))
        ));
        let mut bad = m.clone();
        bad.payload = bytes::Bytes::from_static(b"{\"order\":\"x\"}");
        let err = Event::<Placed>::decode(&bad, 2).unwrap_err();
        assert!(matches!(err, EventError::Payload(_)));
        assert_eq!(Error::from(err).kind(), ErrorKind::Decode);
    }
}
