//! One event type's contract, built: the codec with its compiled schema,
//! used to write events of the type and to read them back.

use std::fmt;
use std::sync::Arc;

use transport_core::headers::{CE_DATAVERSION, CONTENT_TYPE};
use transport_core::{Error, Event, Message};

use crate::codec::Codec;
use crate::error::ContractError;
use crate::event_type::EventType;
use crate::version::Version;

/// The contract of event type `E`: writes its events (checked, with the
/// CloudEvents attributes its declaration implies) and reads them. Build
/// once per type (the schema is derived and compiled there); clones share it.
pub struct Contract<E: EventType> {
    codec: Arc<E::Codec>,
}

impl<E: EventType> Clone for Contract<E> {
    fn clone(&self) -> Self {
        Contract {
            codec: self.codec.clone(),
        }
    }
}

impl<E: EventType> Contract<E> {
    /// Build the contract: derive and compile `E`'s schema. An empty type
    /// name or a schema that does not compile is a
    /// [`ContractError::Declaration`].
    pub fn new() -> Result<Self, ContractError> {
        check_declaration::<E>()?;
        Ok(Contract {
            codec: Arc::new(E::Codec::build()?),
        })
    }

    /// A new event of this type from `source` (id, time, type, version and
    /// content type set).
    pub fn event(&self, source: impl Into<String>, data: E) -> Event<E> {
        let mut event = Event::new(E::TYPE, source, data).with_version(E::VERSION.to_string());
        event.data_content_type = Some(<E::Codec as Codec<E>>::CONTENT_TYPE.to_owned());
        event
    }

    /// The message carrying `event`, its data written by the codec and
    /// checked: data its schema refuses, or attributes that contradict the
    /// declaration (another type, major version or content type), are an
    /// `InvalidArgument` error and nothing is written.
    pub fn to_message(&self, event: &Event<E>) -> Result<Message, Error> {
        let content_type = <E::Codec as Codec<E>>::CONTENT_TYPE;
        let contradiction = if event.event_type != E::TYPE {
            Some(format!("its type is {:?}", event.event_type))
        } else if let Some(v) = event.version.as_deref().filter(|v| {
            // Data that needs its writer's schema (Avro) is written with
            // exactly the declared version's.
            let exact = !<E::Codec as Codec<E>>::SELF_DESCRIBING;
            match Version::parse(v) {
                Some(v) if exact => v != E::VERSION,
                Some(v) => v.major != E::VERSION.major,
                None => true,
            }
        }) {
            Some(format!("its dataversion is {v:?}"))
        } else {
            event
                .data_content_type
                .as_deref()
                .filter(|ct| *ct != content_type)
                .map(|ct| format!("its datacontenttype is {ct:?}"))
        };
        if let Some(why) = contradiction {
            return Err(Error::invalid(format!(
                "an event written with the contract of {} v{}, but {why}",
                E::TYPE,
                E::VERSION
            )));
        }
        let data = self.codec.encode(&event.data).map_err(|error| ContractError::Data {
            event_type: E::TYPE.to_owned(),
            version: E::VERSION,
            error,
        })?;
        let mut message = event.to_message_with(data)?;
        message.headers.insert(CONTENT_TYPE, content_type);
        if event.version.is_none() {
            message.headers.insert(CE_DATAVERSION, E::VERSION.to_string());
        }
        Ok(message)
    }

    /// Read the event `message` carries, which must be of this type and
    /// major version (a [`Router`](crate::Router) reads every version it
    /// has an upcaster for).
    pub fn decode(&self, message: &Message) -> Result<Event<E>, ContractError> {
        let raw = Event::raw(message).map_err(ContractError::NotAnEvent)?;
        if raw.event_type != E::TYPE {
            return Err(ContractError::UnknownType {
                event_type: raw.event_type,
            });
        }
        let major = major_of(raw.version.as_deref());
        let exact = !<E::Codec as Codec<E>>::SELF_DESCRIBING;
        let minor = raw.version.as_deref().and_then(Version::parse).map_or(0, |v| v.minor);
        if major != Some(E::VERSION.major) || (exact && minor != E::VERSION.minor) {
            let readable = if exact {
                format!("{}.{} only", E::VERSION.major, E::VERSION.minor)
            } else {
                E::VERSION.major.to_string()
            };
            return Err(ContractError::UnknownVersion {
                event_type: raw.event_type,
                version: raw.version.unwrap_or_default(),
                readable: vec![readable],
            });
        }
        let data = self.codec.decode(&raw.data).map_err(|error| ContractError::Data {
            event_type: E::TYPE.to_owned(),
            version: E::VERSION,
            error,
        })?;
        Ok(raw.map(|_| data))
    }

    /// `E`'s schema in its codec's schema language.
    pub fn schema(&self) -> &serde_json::Value {
        self.codec.schema()
    }
}

impl<E: EventType> fmt::Debug for Contract<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Contract({} v{})", E::TYPE, E::VERSION)
    }
}

/// The major version a `ce-dataversion` names: an event without one is
/// read as version 1 (events written before versions were declared), a
/// malformed one as none.
pub(crate) fn major_of(version: Option<&str>) -> Option<u32> {
    match version {
        None => Some(1),
        Some(v) => Version::parse(v).map(|v| v.major),
    }
}

/// A type name CloudEvents accepts: not empty, printable ASCII.
pub(crate) fn check_declaration<E: EventType>() -> Result<(), ContractError> {
    let name = E::TYPE;
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ContractError::Declaration(format!(
            "{}: the event type {name:?} must be printable ASCII without spaces, and not empty",
            std::any::type_name::<E>()
        )));
    }
    Ok(())
}
