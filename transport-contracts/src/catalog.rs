//! A service's event types in one place: what it produces to which topic
//! and consumes from which topic in which group, each with its version and
//! schema. The compatibility gate, the lock files and (later) the AsyncAPI
//! document and the Markdown catalog are all read from it.

use std::collections::BTreeMap;
use std::path::Path;

use crate::codec::Codec;
use crate::error::ContractError;
use crate::event_type::EventType;
use crate::gate::{self, Schemas};
use crate::version::Version;

/// One declared version of an event type, and where it travels.
#[derive(Debug, Clone, PartialEq)]
pub struct Declared {
    /// `ce-type`.
    pub event_type: &'static str,
    /// Its version.
    pub version: Version,
    /// The Rust type.
    pub rust_type: &'static str,
    /// `datacontenttype`.
    pub content_type: &'static str,
    /// The schema in its codec's schema language.
    pub schema: serde_json::Value,
    /// Topics this service publishes it to.
    pub produced_to: Vec<String>,
    /// `(topic, group)` pairs this service consumes it in.
    pub consumed_in: Vec<(String, String)>,
}

/// Every event type a service produces and consumes.
///
/// ```no_run
/// # use schemars::JsonSchema;
/// # use serde::{Deserialize, Serialize};
/// # use transport_contracts::{Catalog, Compatibility, EventType, Json, Version};
/// # #[derive(Serialize, Deserialize, JsonSchema)] struct OrderPlaced { id: String }
/// # impl EventType for OrderPlaced { const TYPE: &'static str = "shop.order.placed"; const VERSION: Version = Version::new(2, 1); type Codec = Json; }
/// # #[derive(Serialize, Deserialize, JsonSchema)] struct PaymentCaptured { id: String }
/// # impl EventType for PaymentCaptured { const TYPE: &'static str = "shop.payment.captured"; const VERSION: Version = Version::new(1, 0); type Codec = Json; }
/// fn catalog() -> Result<Catalog, transport_contracts::ContractError> {
///     Ok(Catalog::new("checkout")
///         .produces::<OrderPlaced>("orders")?
///         .consumes::<PaymentCaptured>("payments", "checkout")?)
/// }
///
/// // The gate, as a test of the service: every change to the schemas
/// // must keep consumers reading (`transport contracts lock` accepts a
/// // change once it passes).
/// #[test]
/// fn contracts_stay_compatible() {
///     catalog().unwrap().check("contracts", Compatibility::Backward).unwrap();
/// }
/// ```
#[derive(Debug, Clone)]
pub struct Catalog {
    service: String,
    declared: BTreeMap<(&'static str, Version), Declared>,
}

impl Catalog {
    /// The catalog of `service`, empty.
    pub fn new(service: impl Into<String>) -> Self {
        Catalog {
            service: service.into(),
            declared: BTreeMap::new(),
        }
    }

    /// The service publishes `E` to `topic`.
    pub fn produces<E: EventType>(mut self, topic: &str) -> Result<Self, ContractError> {
        self.entry::<E>()?.produced_to.push(topic.to_owned());
        Ok(self)
    }

    /// The service consumes `E` from `topic` in `group` (an older version
    /// read through an upcaster is declared too: its schema is a contract).
    pub fn consumes<E: EventType>(mut self, topic: &str, group: &str) -> Result<Self, ContractError> {
        self.entry::<E>()?
            .consumed_in
            .push((topic.to_owned(), group.to_owned()));
        Ok(self)
    }

    fn entry<E: EventType>(&mut self) -> Result<&mut Declared, ContractError> {
        let key = (E::TYPE, E::VERSION);
        if let Some(existing) = self.declared.get(&key) {
            if existing.rust_type != std::any::type_name::<E>() {
                return Err(ContractError::Declaration(format!(
                    "{} v{} is declared by two types: {} and {}",
                    E::TYPE,
                    E::VERSION,
                    existing.rust_type,
                    std::any::type_name::<E>()
                )));
            }
        } else {
            crate::contract::check_declaration::<E>()?;
            let codec = E::Codec::build()?;
            self.declared.insert(
                key,
                Declared {
                    event_type: E::TYPE,
                    version: E::VERSION,
                    rust_type: std::any::type_name::<E>(),
                    content_type: <E::Codec as Codec<E>>::CONTENT_TYPE,
                    schema: codec.schema().clone(),
                    produced_to: Vec::new(),
                    consumed_in: Vec::new(),
                },
            );
        }
        Ok(self.declared.get_mut(&key).expect("just inserted"))
    }

    /// The service's name.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// Every declared version, by type then version.
    pub fn declared(&self) -> impl Iterator<Item = &Declared> {
        self.declared.values()
    }

    /// The schemas of every declared version.
    pub fn schemas(&self) -> Schemas {
        self.declared
            .values()
            .map(|d| ((d.event_type.to_owned(), d.version), d.schema.clone()))
            .collect()
    }

    /// Write the current schemas to `dir` (`<type>/<major>.<minor>.schema.json`),
    /// for `transport contracts check --current DIR`.
    pub fn write(&self, dir: impl AsRef<Path>) -> std::io::Result<()> {
        gate::write(dir.as_ref(), &self.schemas())
    }

    /// The compatibility gate against the accepted schemas in `locked`
    /// (written by `transport contracts lock` or [`lock`](Self::lock)):
    /// `Err` lists every breaking change.
    pub fn check(&self, locked: impl AsRef<Path>, mode: crate::Compatibility) -> Result<(), gate::GateError> {
        let accepted = gate::read(locked.as_ref())?;
        gate::verdict(&accepted, &self.schemas(), mode)
    }

    /// Run the gate, then add the current schemas to `locked`.
    pub fn lock(&self, locked: impl AsRef<Path>, mode: crate::Compatibility) -> Result<(), gate::GateError> {
        self.check(locked.as_ref(), mode)?;
        gate::write(locked.as_ref(), &self.schemas()).map_err(gate::GateError::Io)
    }
}
