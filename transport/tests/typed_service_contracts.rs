//! The typed service example's contracts, as a service keeps them: the
//! gate passes against its accepted schemas (`contracts/`), and its
//! AsyncAPI document and event catalog are what its declarations generate.
//! `UPDATE_CONTRACTS=1` rewrites the two documents and accepts the current
//! schemas after the gate passes (`transport contracts lock` does the same
//! from a written catalog).

#[path = "../examples/typed_service/events.rs"]
mod events;

use std::path::PathBuf;

use transport::contracts::{Compatibility, Server};

fn folder() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/typed_service")
}

fn update() -> bool {
    std::env::var_os("UPDATE_CONTRACTS").is_some()
}

#[test]
fn the_schemas_pass_the_gate_against_the_accepted_ones() {
    let catalog = events::catalog().unwrap();
    let locked = folder().join("contracts");
    if update() {
        catalog.lock(&locked, Compatibility::FullTransitive).unwrap();
    }
    if let Err(e) = catalog.check(&locked, Compatibility::FullTransitive) {
        panic!("{e}");
    }
    assert!(locked.join("shop.order.placed/2.0.schema.json").is_file());
}

#[test]
fn the_documents_are_what_the_declarations_generate() {
    let catalog = events::catalog().unwrap();
    let servers: Vec<Server> = [
        "production=kafka://kafka-1:9092,kafka-2:9092",
        "local=nats://127.0.0.1:4222",
    ]
    .iter()
    .map(|s| s.parse().unwrap())
    .collect();
    let mut asyncapi = serde_json::to_string_pretty(&catalog.asyncapi(&servers).unwrap()).unwrap();
    asyncapi.push('\n');
    for (file, generated) in [("asyncapi.json", asyncapi), ("EVENTS.md", catalog.markdown())] {
        let path = folder().join(file);
        if update() {
            std::fs::write(&path, &generated).unwrap();
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "{} is not what the declarations generate: run UPDATE_CONTRACTS=1 cargo test -p transport \
             --features contracts --test typed_service_contracts",
            path.display()
        );
    }
}
