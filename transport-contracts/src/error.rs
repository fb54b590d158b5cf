//! What can break a contract: data that does not meet its schema, a message
//! that is no event, an event type or version nobody declared, and
//! declarations that contradict each other.

use std::fmt;

use transport_core::{Error, ErrorKind, EventError};

use crate::version::Version;

/// How data failed its codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DataErrorKind {
    /// Not readable in the codec's format at all (not JSON, truncated).
    Malformed,
    /// Readable, but it breaks the schema: a required field missing, a
    /// value of the wrong type or out of range.
    Invalid,
}

/// Why one event's data was refused, naming the field and the rule broken.
///
/// The offending value itself is not repeated: events carry personal data,
/// and this text ends up in dead-letter reasons and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataError {
    kind: DataErrorKind,
    field: String,
    rule: String,
    detail: String,
}

impl DataError {
    /// `field` is a JSON pointer (`/items/0/sku`, empty for the whole data);
    /// `rule` the schema keyword broken (`required`, `minimum`, `type`) or,
    /// for malformed data, `syntax`.
    pub fn new(
        kind: DataErrorKind,
        field: impl Into<String>,
        rule: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        DataError {
            kind,
            field: field.into(),
            rule: rule.into(),
            detail: detail.into(),
        }
    }

    /// Malformed or invalid.
    pub fn kind(&self) -> DataErrorKind {
        self.kind
    }

    /// The JSON pointer of the offending field; empty for the data as a whole.
    pub fn field(&self) -> &str {
        &self.field
    }

    /// The rule broken (a JSON Schema keyword such as `required` or
    /// `minimum`, or `syntax` for data that is not in the codec's format).
    pub fn rule(&self) -> &str {
        &self.rule
    }
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let field = if self.field.is_empty() { "/" } else { &self.field };
        write!(f, "field {field} breaks `{}`: {}", self.rule, self.detail)
    }
}

impl std::error::Error for DataError {}

/// Why an event could not be written, read or routed, or why declarations
/// were refused.
#[derive(Debug)]
#[non_exhaustive]
pub enum ContractError {
    /// The data of an event of a declared type does not meet its contract.
    Data {
        /// `ce-type`.
        event_type: String,
        /// The version whose schema it broke.
        version: Version,
        /// The field and the rule.
        error: DataError,
    },
    /// The message is not a CloudEvent (an attribute missing or malformed).
    NotAnEvent(EventError),
    /// No route reads this `ce-type`.
    UnknownType {
        /// `ce-type`.
        event_type: String,
    },
    /// The type is known, but not this major version (a newer one this
    /// consumer was not built for, or an older one with no upcaster).
    UnknownVersion {
        /// `ce-type`.
        event_type: String,
        /// `ce-dataversion` as the message carries it (empty if absent).
        version: String,
        /// The versions this consumer reads, ascending: majors (`2`), or a
        /// single minor where the codec needs its writer's schema (`2.1 only`).
        readable: Vec<String>,
    },
    /// Declarations that contradict each other or a schema that does not
    /// compile: a configuration error, never worth a retry.
    Declaration(String),
}

impl ContractError {
    /// The label of this failure in metrics and logs: `malformed`,
    /// `invalid`, `not_an_event`, `unknown_type`, `unknown_version` or
    /// `declaration`.
    pub fn label(&self) -> &'static str {
        match self {
            ContractError::Data { error, .. } => match error.kind {
                DataErrorKind::Malformed => "malformed",
                DataErrorKind::Invalid => "invalid",
            },
            ContractError::NotAnEvent(_) => "not_an_event",
            ContractError::UnknownType { .. } => "unknown_type",
            ContractError::UnknownVersion { .. } => "unknown_version",
            ContractError::Declaration(_) => "declaration",
        }
    }
}

impl fmt::Display for ContractError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ContractError::Data {
                event_type,
                version,
                error,
            } => write!(f, "{event_type} v{version}: {error}"),
            ContractError::NotAnEvent(e) => write!(f, "not a CloudEvent: {e}"),
            ContractError::UnknownType { event_type } => {
                write!(f, "event type {event_type:?} has no route here")
            }
            ContractError::UnknownVersion {
                event_type,
                version,
                readable,
            } => {
                let readable: Vec<String> = readable.iter().map(|m| format!("v{m}")).collect();
                let version = if version.is_empty() {
                    "without a dataversion"
                } else {
                    version
                };
                write!(
                    f,
                    "{event_type} {version}: this consumer reads {} of it",
                    readable.join(", ")
                )
            }
            ContractError::Declaration(why) => write!(f, "contract declarations: {why}"),
        }
    }
}

impl std::error::Error for ContractError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ContractError::Data { error, .. } => Some(error),
            ContractError::NotAnEvent(e) => Some(e),
            _ => None,
        }
    }
}

impl From<ContractError> for Error {
    /// Every contract error is the caller's input or configuration, never
    /// worth a retry: `InvalidArgument` (or `Decode` for what was read).
    fn from(e: ContractError) -> Self {
        let kind = match e {
            ContractError::NotAnEvent(_) | ContractError::UnknownType { .. } | ContractError::UnknownVersion { .. } => {
                ErrorKind::Decode
            }
            _ => ErrorKind::InvalidArgument,
        };
        Error::new(kind, e.to_string()).with_source(e)
    }
}
