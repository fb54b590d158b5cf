//! The contract suite: the JSON Schema compatibility gate on its corpus of
//! changes (each judged by the `jsonschema` validator), the Avro gate on
//! its corpus (the specification's verdicts, judged with data through Avro
//! schema resolution), and the AsyncAPI
//! document generated from a catalog, judged by the official AsyncAPI
//! parser, with `@asyncapi/diff` seeing the change the gate refuses.
//! Checks whose judges are not installed are skipped, and fail the run
//! under `CI=true`.
//!
//! Report: `target/conformance/contracts.json`.

use std::sync::Arc;
use std::time::Duration;

use conformance_tests::contracts::{avro_corpus, corpus, events, judges};
use conformance_tests::{async_case, run_trials, Case, CheckFailure, CheckResult};
use futures::FutureExt;
use libtest_mimic::Arguments;
use serde_json::Value;
use transport_contracts::{json_schema_breaks, Compatibility, Server};

const CHECK_TIMEOUT: Duration = Duration::from_secs(120);

/// A check that needs the AsyncAPI tools.
type JudgedCheck = fn() -> CheckResult;

fn servers() -> Vec<Server> {
    [
        "kafka=kafka://broker-1:9092",
        "rabbitmq=amqps://app:secret@mq:5671/%2f",
        "nats=nats://nats:4222",
        "sqs=sqs://?region=eu-west-1",
        "redis=redis://cache:6379/0",
    ]
    .iter()
    .map(|s| s.parse().expect("NAME=URL"))
    .collect()
}

fn document() -> Result<Value, CheckFailure> {
    let catalog = events::catalog()?;
    Ok(catalog.asyncapi(&servers())?)
}

/// The generated document is valid for the official parser (no errors),
/// carries no credentials, and has what the catalog declares.
fn asyncapi_document_is_valid() -> CheckResult {
    let doc = document()?;
    let (errors, warnings) = judges::validate(&doc)?;
    if !errors.is_empty() {
        return Err(CheckFailure(format!(
            "the AsyncAPI parser found {} error(s): {}",
            errors.len(),
            serde_json::to_string(&errors).unwrap_or_default()
        )));
    }
    // The judge is live: the same document with an AsyncAPI 2 verb is refused.
    let mut wrong = doc.clone();
    wrong["operations"]["send_orders"]["action"] = "publish".into();
    if judges::validate(&wrong)?.0.is_empty() {
        return Err(CheckFailure(
            "the parser accepted an operation with action \"publish\"".into(),
        ));
    }
    let text = doc.to_string();
    if text.contains("secret") {
        return Err(CheckFailure("the document carries a server's password".into()));
    }
    let ops = doc["operations"].as_object().map(|o| o.len()).unwrap_or(0);
    if ops != 3 || doc["channels"].as_object().map(|c| c.len()) != Some(2) {
        return Err(CheckFailure(format!(
            "expected 3 operations (send, receive in billing, dead-letter) and 2 channels (orders, its dead letters): {doc}"
        )));
    }
    eprintln!("asyncapi: valid, {} warning(s)", warnings.len());
    Ok(())
}

/// A breaking change to a payload schema: the gate names the field and
/// rule, and `@asyncapi/diff` reports a change at that field's schema.
fn asyncapi_diff_sees_the_change_the_gate_refuses() -> CheckResult {
    let old = document()?;
    let mut new = old.clone();
    let pointer = "/components/schemas/conformance_order_placed_v2_0/properties/amount_cents/type";
    *new.pointer_mut(pointer)
        .ok_or_else(|| CheckFailure(format!("the document has no {pointer}")))? = "string".into();
    let (old_schema, new_schema) = (
        &old["components"]["schemas"]["conformance_order_placed_v2_0"],
        &new["components"]["schemas"]["conformance_order_placed_v2_0"],
    );
    let gate = json_schema_breaks(old_schema, new_schema, Compatibility::Backward);
    let named: Vec<(String, &str)> = gate.iter().map(|b| (b.path.clone(), b.rule)).collect();
    if named != [("/amount_cents".to_owned(), "type-narrowed")] {
        return Err(CheckFailure(format!("the gate reported {named:?}")));
    }
    let answer = judges::diff(&old, &new)?;
    let all: Vec<&Value> = ["breaking", "nonBreaking", "unclassified"]
        .iter()
        .flat_map(|k| answer[*k].as_array().into_iter().flatten())
        .collect();
    // @asyncapi/diff 0.5 leaves payload changes unclassified (its standard
    // classifies the document's structure, not schema compatibility): what
    // shows is that it sees the same change at the same field.
    let seen = all.iter().find(|c| {
        c["path"]
            .as_str()
            .is_some_and(|p| p.ends_with("/payload/properties/amount_cents/type"))
            && c["before"] == "integer"
            && c["after"] == "string"
    });
    match seen {
        Some(change) => {
            eprintln!("@asyncapi/diff: {change}");
            Ok(())
        }
        None => Err(CheckFailure(format!(
            "@asyncapi/diff did not report the change at amount_cents: {answer}"
        ))),
    }
}

/// The Markdown catalog lists every version with its fields, rules and
/// doc comments, what changed between versions, and an example payload
/// that its schema accepts (judged by the validator).
fn event_catalog_lists_fields_and_valid_examples() -> CheckResult {
    let catalog = events::catalog()?;
    let text = catalog.markdown();
    if std::env::var_os("CONTRACTS_PRINT").is_some() {
        eprintln!("{text}");
    }
    for want in [
        "# Events of shop-checkout 1.4.0",
        "| [`conformance.order.placed`](#conformanceorderplaced) | 1.0, 2.0 | orders | orders (billing) |",
        "| `amount_cents` | integer (int64) | yes | The amount, in cents. (>= 1) |",
        "Changed from 1.0 (a new major version after it):",
        "- `amount_cents` added",
        "- `amount` removed",
        "Consumed from: orders (group billing).",
    ] {
        if !text.contains(want) {
            return Err(CheckFailure(format!("the catalog lacks {want:?}:\n{text}")));
        }
    }
    let examples: Vec<&str> = text
        .split("```json\n")
        .skip(1)
        .filter_map(|b| b.split("\n```").next())
        .collect();
    let declared: Vec<_> = catalog.events().collect();
    if examples.len() != declared.len() {
        return Err(CheckFailure(format!(
            "{} examples for {} versions",
            examples.len(),
            declared.len()
        )));
    }
    // Versions are listed newest first within each type, types in order.
    let mut in_order: Vec<_> = declared.clone();
    in_order.sort_by(|a, b| a.event_type.cmp(&b.event_type).then(b.version.cmp(&a.version)));
    for (example, d) in examples.iter().zip(in_order) {
        let value: Value = serde_json::from_str(example).map_err(|e| {
            CheckFailure(format!(
                "the example of {} {} is not JSON: {e}",
                d.event_type, d.version
            ))
        })?;
        let refused = if transport_contracts::is_avro(&d.schema) {
            let schema = apache_avro::Schema::parse(&d.schema).map_err(|e| CheckFailure(e.to_string()))?;
            apache_avro::types::Value::from(value.clone())
                .resolve(&schema)
                .err()
                .map(|e| e.to_string())
        } else {
            let validator = jsonschema::validator_for(&d.schema).map_err(|e| CheckFailure(e.to_string()))?;
            validator.validate(&value).err().map(|e| e.to_string())
        };
        if let Some(e) = refused {
            return Err(CheckFailure(format!(
                "the example of {} {} breaks its schema: {e}: {value}",
                d.event_type, d.version
            )));
        }
    }
    Ok(())
}

fn main() {
    let args = Arguments::from_args();
    let rt = Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime"),
    );
    let mut cases: Vec<Case> = corpus::corpus()
        .into_iter()
        .map(|case| {
            let name: &'static str = Box::leak(format!("json_schema/{}", case.name.replace(' ', "_")).into_boxed_str());
            async_case(name, rt.clone(), CHECK_TIMEOUT, None, move || {
                async move { corpus::judge(&case) }.boxed()
            })
        })
        .collect();
    cases.extend(avro_corpus::corpus().into_iter().map(|case| {
        let name: &'static str = Box::leak(format!("avro/{}", case.name.replace(' ', "_")).into_boxed_str());
        async_case(name, rt.clone(), CHECK_TIMEOUT, None, move || {
            async move { avro_corpus::judge(&case) }.boxed()
        })
    }));
    let absent = judges::absent();
    cases.push(async_case(
        "event_catalog_lists_fields_and_valid_examples",
        rt.clone(),
        CHECK_TIMEOUT,
        None,
        || async { event_catalog_lists_fields_and_valid_examples() }.boxed(),
    ));
    let judged: [(&'static str, JudgedCheck); 2] = [
        ("asyncapi_document_is_valid", asyncapi_document_is_valid),
        (
            "asyncapi_diff_sees_the_change_the_gate_refuses",
            asyncapi_diff_sees_the_change_the_gate_refuses,
        ),
    ];
    for (name, check) in judged {
        cases.push(async_case(name, rt.clone(), CHECK_TIMEOUT, absent.clone(), move || {
            async move { check() }.boxed()
        }));
    }
    let failed = run_trials(&args, "contracts", "contracts", cases).has_failed();
    if let Some(why) = absent {
        eprintln!("the AsyncAPI judges could not run: {why}");
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            eprintln!("CI=true: a test that cannot run fails");
            std::process::exit(2);
        }
    }
    std::process::exit(i32::from(failed) * 101);
}
