//! A service's event types in one place: what it produces to which topic
//! and consumes from which topic in which group, each with its version and
//! schema. The compatibility gate, the AsyncAPI document and the Markdown
//! catalog are read from it; written to a folder (`catalog.json` beside one
//! schema file per version), the `transport contracts` commands read it
//! without the service's code.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::codec::Codec;
use crate::error::ContractError;
use crate::event_type::EventType;
use crate::gate::{self, GateError, Schemas};
use crate::version::Version;

/// The file beside the schemas that holds the whole catalog.
pub const MANIFEST: &str = "catalog.json";

/// One declared version of an event type, and where it travels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Declared {
    /// `ce-type`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Its version.
    pub version: Version,
    /// The Rust type that declares it (its path within its crate).
    pub rust_type: String,
    /// `datacontenttype`.
    pub content_type: String,
    /// The schema in its codec's schema language.
    pub schema: serde_json::Value,
    /// Topics this service publishes it to.
    #[serde(default)]
    pub produced_to: Vec<String>,
    /// Where this service consumes it.
    #[serde(default)]
    pub consumed_in: Vec<Consumed>,
}

/// A topic and the consumer group reading it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consumed {
    /// The topic.
    pub topic: String,
    /// The consumer group.
    pub group: String,
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
///     Catalog::new("checkout")
///         .produces::<OrderPlaced>("orders")?
///         .consumes::<PaymentCaptured>("payments", "checkout")
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Catalog {
    service: String,
    #[serde(default = "first_version")]
    version: String,
    #[serde(with = "by_version")]
    events: BTreeMap<(String, Version), Declared>,
}

impl Catalog {
    /// The catalog of `service`, empty.
    pub fn new(service: impl Into<String>) -> Self {
        Catalog {
            service: service.into(),
            version: first_version(),
            events: BTreeMap::new(),
        }
    }

    /// The service's own version (the AsyncAPI document's `info.version`;
    /// `env!("CARGO_PKG_VERSION")` in a service). `0.1.0` until set.
    pub fn service_version(mut self, version: impl Into<String>) -> Self {
        self.version = version.into();
        self
    }

    /// The service's version.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The service publishes `E` to `topic`.
    pub fn produces<E: EventType>(mut self, topic: &str) -> Result<Self, ContractError> {
        let d = self.entry::<E>()?;
        if !d.produced_to.iter().any(|t| t == topic) {
            d.produced_to.push(topic.to_owned());
        }
        Ok(self)
    }

    /// The service consumes `E` from `topic` in `group` (an older version
    /// read through an upcaster is declared too: its schema is a contract).
    pub fn consumes<E: EventType>(mut self, topic: &str, group: &str) -> Result<Self, ContractError> {
        let consumed = Consumed {
            topic: topic.to_owned(),
            group: group.to_owned(),
        };
        let d = self.entry::<E>()?;
        if !d.consumed_in.contains(&consumed) {
            d.consumed_in.push(consumed);
        }
        Ok(self)
    }

    fn entry<E: EventType>(&mut self) -> Result<&mut Declared, ContractError> {
        let key = (E::TYPE.to_owned(), E::VERSION);
        // Without the crate's name: the same declarations read from a
        // test or a binary of the service name their types alike.
        let full = std::any::type_name::<E>();
        let rust_type = full.split_once("::").map_or(full, |(_, path)| path);
        if let Some(existing) = self.events.get(&key) {
            if existing.rust_type != rust_type {
                return Err(ContractError::Declaration(format!(
                    "{} v{} is declared by two types: {} and {rust_type}",
                    E::TYPE,
                    E::VERSION,
                    existing.rust_type,
                )));
            }
        } else {
            crate::contract::check_declaration::<E>()?;
            let codec = E::Codec::build()?;
            self.events.insert(
                key.clone(),
                Declared {
                    event_type: E::TYPE.to_owned(),
                    version: E::VERSION,
                    rust_type: rust_type.to_owned(),
                    content_type: <E::Codec as Codec<E>>::CONTENT_TYPE.to_owned(),
                    schema: codec.schema().clone(),
                    produced_to: Vec::new(),
                    consumed_in: Vec::new(),
                },
            );
        }
        Ok(self.events.get_mut(&key).expect("just inserted"))
    }

    /// The service's name.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// Every declared version, by type then version.
    pub fn events(&self) -> impl Iterator<Item = &Declared> {
        self.events.values()
    }

    /// The schemas of every declared version.
    pub fn schemas(&self) -> Schemas {
        self.events
            .iter()
            .map(|(key, d)| (key.clone(), d.schema.clone()))
            .collect()
    }

    /// Write the catalog to `dir`: `catalog.json` and one schema file per
    /// version (`<type>/<major>.<minor>.schema.json`), which the
    /// `transport contracts` commands read.
    ///
    /// Schema files already there are removed first, so a version no longer
    /// declared does not linger as current (the folder is generated: keep
    /// it apart from the accepted `contracts/`).
    pub fn write(&self, dir: impl AsRef<Path>) -> std::io::Result<()> {
        let dir = dir.as_ref();
        gate::clear(dir)?;
        gate::write(dir, &self.schemas())?;
        let mut text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        text.push('\n');
        std::fs::write(dir.join(MANIFEST), text)
    }

    /// Read what [`write`](Self::write) wrote.
    pub fn read(dir: impl AsRef<Path>) -> Result<Self, GateError> {
        let path = dir.as_ref().join(MANIFEST);
        let unreadable = |why: String| GateError::Unreadable {
            path: path.clone(),
            why,
        };
        let text = std::fs::read_to_string(&path).map_err(|e| unreadable(e.to_string()))?;
        serde_json::from_str(&text).map_err(|e| unreadable(e.to_string()))
    }

    /// The compatibility gate against the accepted schemas in `locked`
    /// (written by `transport contracts lock` or [`lock`](Self::lock)):
    /// `Err` lists every breaking change.
    pub fn check(&self, locked: impl AsRef<Path>, mode: crate::Compatibility) -> Result<(), GateError> {
        let accepted = gate::read(locked.as_ref())?;
        gate::verdict(&accepted, &self.schemas(), mode)
    }

    /// Run the gate, then add the current schemas to `locked`.
    pub fn lock(&self, locked: impl AsRef<Path>, mode: crate::Compatibility) -> Result<(), GateError> {
        self.check(locked.as_ref(), mode)?;
        gate::write(locked.as_ref(), &self.schemas()).map_err(GateError::Io)
    }
}

fn first_version() -> String {
    "0.1.0".to_owned()
}

/// The events as a list in `catalog.json` (JSON objects have string keys).
mod by_version {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::Declared;
    use crate::version::Version;

    pub fn serialize<S: Serializer>(events: &BTreeMap<(String, Version), Declared>, s: S) -> Result<S::Ok, S::Error> {
        events.values().collect::<Vec<_>>().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<(String, Version), Declared>, D::Error> {
        let list = Vec::<Declared>::deserialize(d)?;
        Ok(list
            .into_iter()
            .map(|e| ((e.event_type.clone(), e.version), e))
            .collect())
    }
}
