//! The contract suite's material: sample event types and their catalog,
//! the JSON Schema compatibility corpus with its judge, and the official
//! AsyncAPI tools as judges of generated documents
//! (`tests/contracts.rs` runs them; the runtime check of typed routing is
//! in `runtime/contracts.rs`, so it runs on every backend).

pub mod avro_corpus;
pub mod corpus;
pub mod events;
pub mod judges;
