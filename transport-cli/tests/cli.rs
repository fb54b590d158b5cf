//! Runs the `transport` binary: against memory:// always, against the Redis
//! at `REDIS_URL` when set (the project's test command sets it; CI fails
//! without it).

use assert_cmd::Command;
use predicates::prelude::*;

fn transport() -> Command {
    let mut c = Command::cargo_bin("transport").unwrap();
    c.env_remove("TRANSPORT_URL");
    c
}

fn redis() -> Option<String> {
    match std::env::var("REDIS_URL") {
        Ok(u) => Some(u),
        Err(_) if std::env::var("CI").is_ok() => panic!("REDIS_URL is not set"),
        Err(_) => {
            eprintln!("skipped: REDIS_URL is not set");
            None
        }
    }
}

fn unique(what: &str) -> String {
    format!(
        "cli-{what}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

#[test]
fn every_subcommand_has_help_with_examples() {
    for sub in [
        "publish",
        "consume",
        "dlq",
        "stats",
        "monitor",
        "check",
        "bench",
        "demo",
        "contracts",
    ] {
        transport()
            .args([sub, "--help"])
            .assert()
            .success()
            .stdout(predicate::str::contains("EXAMPLES"));
    }
}

#[test]
fn demo_runs_on_memory() {
    transport()
        .arg("demo")
        .timeout(std::time::Duration::from_secs(120))
        .assert()
        .success()
        .stdout(predicate::str::contains("order 7 has a negative total"))
        .stdout(predicate::str::contains("moved 2, then acked 2"))
        .stdout(predicate::str::contains("[circuit breaker open]"))
        .stdout(predicate::str::contains("order 5 delivered twice, charged 1 time(s)"))
        .stdout(predicate::str::contains("dead-letter queue now holds 0"))
        .stdout(predicate::str::contains(
            "shipping order 11 to Paris, FR (1 Rue Lepic) [v1 event upcast on arrival]",
        ))
        .stdout(predicate::str::contains("order 14 refused at publish, nothing sent"))
        .stdout(predicate::str::contains(
            "dead-lettered: demo.shipment.requested v2.0: field /address/country breaks `maxLength`",
        ))
        .stdout(predicate::str::contains("contracts: acked 3, dead-lettered 1"));
}

/// The demo works on the brokers too, including NATS, whose duplicate
/// window drops the event the demo publishes again (it once exited 1 there
/// waiting for the duplicate to arrive).
#[test]
fn demo_runs_on_the_brokers() {
    for var in ["NATS_URL", "REDIS_URL", "RABBITMQ_URL"] {
        let url = match std::env::var(var) {
            Ok(u) => u,
            Err(_) if std::env::var("CI").is_ok() => panic!("{var} is not set"),
            Err(_) => {
                eprintln!("skipped on {var}: not set");
                continue;
            }
        };
        transport()
            .args(["demo", "--url", &url])
            .timeout(std::time::Duration::from_secs(180))
            .assert()
            .success()
            .stdout(predicate::str::contains("order 5 ").and(predicate::str::contains("charged 1 time(s)")))
            .stdout(predicate::str::contains("dead-letter queue now holds 0"))
            .stdout(predicate::str::contains("shipments 9 for 9 reservations"));
    }
}

#[test]
fn check_on_memory_writes_a_report() {
    let dir = std::env::temp_dir().join(unique("report"));
    transport()
        .args(["check", "memory://", "--filter", "round_trip", "--report-dir"])
        .arg(&dir)
        .assert()
        .success()
        .stdout(predicate::str::contains("round_trip_binary_payload"))
        .stdout(predicate::str::contains("5 passed, 0 failed"));
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("memory.json")).unwrap()).unwrap();
    assert_eq!(report["backend"], "memory");
    assert_eq!(report["checks"].as_array().unwrap().len(), 5);
    assert!(report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["status"] == "passed"));
    // The matrix of existing reports, without running anything.
    transport()
        .args(["check", "--from-reports"])
        .arg(&dir)
        .assert()
        .success()
        .stdout(predicate::str::contains("round_trip_binary_payload"))
        .stdout(predicate::str::contains("memory: 5 passed, 0 failed"));
    // The contract suite's report is a matrix of its own, not a broker's column.
    let contracts = serde_json::json!({"backend": "contracts", "checks": [
        {"name": "json_schema/unchanged", "status": "passed", "millis": 1}
    ]});
    std::fs::write(dir.join("contracts.json"), contracts.to_string()).unwrap();
    let out = transport()
        .args(["check", "--from-reports"])
        .arg(&dir)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let out = String::from_utf8(out).unwrap();
    let header = |table: &str| {
        table
            .lines()
            .find(|l| l.contains("check"))
            .unwrap_or_default()
            .to_owned()
    };
    let tables: Vec<&str> = out.split("\n\n").filter(|t| t.contains("check")).collect();
    assert_eq!(tables.len(), 2, "{out}");
    assert!(
        header(tables[0]).contains("memory") && !header(tables[0]).contains("contracts"),
        "{out}"
    );
    assert!(
        header(tables[1]).contains("contracts") && tables[1].contains("json_schema/unchanged"),
        "{out}"
    );
    // The TLS failure cases join the suite's run over TLS: one column.
    for (file, check) in [
        ("redis-tls", "round_trip_binary_payload"),
        ("tls-failures-redis", "expired_certificate_refused"),
    ] {
        let report = serde_json::json!({"backend": "redis", "checks": [
            {"name": check, "status": "passed", "millis": 1}
        ]});
        std::fs::write(dir.join(format!("{file}.json")), report.to_string()).unwrap();
    }
    let out = transport()
        .args(["check", "--from-reports"])
        .arg(&dir)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let out = String::from_utf8(out).unwrap();
    let brokers = out.split("\n\n").next().unwrap_or_default();
    assert!(header(brokers).contains("redis-tls"), "{out}");
    assert!(!out.contains("tls-failures"), "{out}");
    assert!(brokers.contains("expired_certificate_refused"), "{out}");
}

#[test]
fn publish_lines_from_a_file() {
    let file = std::env::temp_dir().join(unique("lines"));
    std::fs::write(&file, "one\ntwo\r\n\nthree\n").unwrap();
    transport()
        .args(["publish", "memory://", "orders", "--lines", "--file"])
        .arg(&file)
        .assert()
        .success()
        .stdout(predicate::function(|s: &str| s.lines().count() == 3));
}

#[test]
fn bench_on_memory_reports_json() {
    let out = transport()
        .args(["bench", "memory://", "--count", "2000", "--size", "64", "--json"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["count"], 2000);
    assert!(v["messages_per_second"].as_f64().unwrap() > 0.0);
    assert!(v["latency_ms"]["p99"].as_f64().unwrap() >= v["latency_ms"]["p50"].as_f64().unwrap());
}

/// The sweep writes one CSV row per point (the size over the message limit
/// is left out), draws it, and `--plot` redraws from the CSV.
#[test]
fn bench_sweep_writes_csv_and_svg() {
    let dir = std::env::temp_dir().join(format!("sweep-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = dir.to_str().unwrap();
    transport()
        .args([
            "bench",
            "memory://",
            "--sweep",
            "--seconds",
            "0.1",
            "--batch",
            "10",
            "--out",
            out,
        ])
        .args([
            "--sizes",
            "100,4000000",
            "--consumer-counts",
            "1,4",
            "--key-counts",
            "0,8",
            "--batches",
            "1,10",
        ])
        .timeout(std::time::Duration::from_secs(120))
        .assert()
        .success()
        .stderr(predicate::str::contains("left out, over memory's message limit"));
    let csv = std::fs::read_to_string(dir.join("sweep-memory.csv")).unwrap();
    let rows: Vec<Vec<&str>> = csv.lines().skip(1).map(|l| l.split(',').collect()).collect();
    let points: Vec<(&str, &str)> = rows.iter().map(|r| (r[1], r[2])).collect();
    assert_eq!(
        points,
        [
            ("size", "100"),
            ("consumers", "1"),
            ("consumers", "4"),
            ("keys", "0"),
            ("keys", "8"),
            ("batch", "1"),
            ("batch", "10")
        ]
    );
    for r in &rows {
        assert!(r[8].parse::<u64>().unwrap() > 0, "no messages: {r:?}");
        // Latency measured in a second run paced at half the throughput.
        let (rate, paced): (f64, f64) = (r[10].parse().unwrap(), r[12].parse().unwrap());
        assert!(paced > 0.0 && paced < rate * 0.75, "not paced: {r:?}");
        let (p50, p99): (f64, f64) = (r[13].parse().unwrap(), r[14].parse().unwrap());
        assert!(p50 <= p99, "{r:?}");
    }
    let svg = std::fs::read_to_string(dir.join("sweep-memory.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("throughput by keys"));
    std::fs::remove_file(dir.join("sweep-memory.svg")).unwrap();
    transport()
        .args([
            "bench",
            "--plot",
            dir.join("sweep-memory.csv").to_str().unwrap(),
            "--out",
            out,
        ])
        .assert()
        .success();
    assert!(dir.join("sweep-memory.svg").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn publish_on_memory_prints_the_id() {
    transport()
        .args(["publish", "memory://", "orders", "hello", "--id", "order-1"])
        .assert()
        .success()
        .stdout("order-1\n");
}

#[test]
fn errors_are_one_line_and_hide_secrets() {
    let out = transport()
        .args(["publish", "bogus://h", "t", "x"])
        .assert()
        .failure()
        .get_output()
        .stderr
        .clone();
    let text = String::from_utf8(out).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.starts_with("error: connecting on bogus://h failed"), "{text}");

    transport()
        .args(["publish", "orders", "x"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("TRANSPORT_URL"));

    transport()
        .args(["publish", "memory://", "bad topic!", "x"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("invalid argument"));
}

#[test]
fn redis_publish_consume_and_dead_letter_across_processes() {
    let Some(url) = redis() else { return };
    let topic = unique("flow");
    // Create the group first so it sees the messages.
    transport()
        .args(["consume", &url, &topic, "--group", "g", "--timeout", "200ms"])
        .assert()
        .success();
    transport()
        .env("TRANSPORT_URL", &url)
        .args(["publish", &topic, "--lines", "--key", "k"])
        .write_stdin("one\ntwo\nthree\n")
        .assert()
        .success()
        .stdout(predicate::function(|s: &str| s.lines().count() == 3));
    let stats = |field: &str, want: u64| {
        let out = transport()
            .args(["stats", &url, &topic, "--group", "g", "--json"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v[field], want, "{v}");
    };
    stats("waiting", 3);
    stats("in_flight", 0);
    transport()
        .args(["stats", &url, &topic, "--group", "g"])
        .assert()
        .success()
        .stdout(predicate::str::contains("waiting").and(predicate::str::contains("oldest waiting")));
    let out = transport()
        .args([
            "consume",
            &url,
            &topic,
            "--group",
            "g",
            "--max",
            "2",
            "--json",
            "--timeout",
            "10s",
        ])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let lines: Vec<serde_json::Value> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["payload"], "one");
    assert_eq!(lines[0]["key"], "k");
    assert_eq!(lines[0]["attempt"], 1);
    transport()
        .args([
            "consume",
            &url,
            &topic,
            "--group",
            "g",
            "--max",
            "1",
            "--dead-letter",
            "bad order",
            "--timeout",
            "10s",
        ])
        .assert()
        .success()
        .stdout(predicate::str::contains("three"));
    transport()
        .args(["dlq", &url, &topic, "--group", "g", "depth"])
        .assert()
        .success()
        .stdout("1\n");
    stats("dead_letters", 1);
    stats("waiting", 0);
    transport()
        .args(["dlq", &url, &topic, "--group", "g", "peek"])
        .assert()
        .success()
        .stdout(predicate::str::contains("bad order"));
    // Selected: nothing matches this reason, and discard wants a selection.
    transport()
        .args([
            "dlq",
            &url,
            &topic,
            "--group",
            "g",
            "redrive",
            "--reason",
            "no such reason",
            "--json",
        ])
        .assert()
        .success()
        .stdout(predicate::str::contains("\"redriven\":0"));
    transport()
        .args(["dlq", &url, &topic, "--group", "g", "discard"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("--id, --reason, --failed-before, or --all"));
    transport()
        .args([
            "dlq",
            &url,
            &topic,
            "--group",
            "g",
            "discard",
            "--id",
            "no-such-id",
            "--json",
        ])
        .assert()
        .success()
        .stdout(predicate::str::contains("\"discarded\":0"));
    transport()
        .args([
            "dlq",
            &url,
            &topic,
            "--group",
            "g",
            "redrive",
            "--reason",
            "bad order",
            "--failed-before",
            "0s",
            "--json",
        ])
        .assert()
        .success()
        .stdout(predicate::str::contains("\"redriven\":1"));
    transport()
        .args(["dlq", &url, &topic, "--group", "g", "redrive", "--all", "--json"])
        .assert()
        .success()
        .stdout(predicate::str::contains("\"redriven\":0"));
    transport()
        .args([
            "consume",
            &url,
            &topic,
            "--group",
            "g",
            "--max",
            "1",
            "--json",
            "--timeout",
            "10s",
        ])
        .assert()
        .success()
        .stdout(predicate::str::contains("\"payload\":\"three\"").and(predicate::str::contains("\"attempt\":1")));
    transport()
        .args(["dlq", &url, &topic, "--group", "g", "purge"])
        .assert()
        .success();
    transport()
        .args(["dlq", &url, &topic, "--group", "g", "depth"])
        .assert()
        .success()
        .stdout("0\n");
}

#[test]
fn redis_check_and_secrets() {
    let Some(url) = redis() else { return };
    transport()
        .args(["check", &url, "--filter", "explicit_dead_letter", "--report-dir"])
        .arg(std::env::temp_dir().join(unique("redis-report")))
        .assert()
        .success()
        .stdout(predicate::str::contains("1 passed, 0 failed"));
    transport()
        .args(["publish", "redis://app:supersecret@127.0.0.1:1", "t", "x"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("supersecret").not());
}

/// `transport contracts`: lock accepts the first schemas, check passes a
/// compatible minor and refuses a breaking one with exit 1 naming it, and a
/// folder without schemas is an error.
#[test]
fn contracts_gate_checks_and_locks_schema_files() {
    let root = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(unique("contracts"));
    let (locked, current) = (root.join("contracts"), root.join("current"));
    let write = |version: &str, schema: serde_json::Value| {
        let folder = current.join("shop.order.placed");
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join(format!("{version}.schema.json")), schema.to_string()).unwrap();
    };
    let gate = |command: &str, mode: &str| {
        let mut c = transport();
        c.args(["contracts", command, "--locked"])
            .arg(&locked)
            .arg("--current")
            .arg(&current)
            .args(["--compatibility", mode]);
        c
    };
    let v10 = serde_json::json!({"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]});
    write("1.0", v10);
    gate("lock", "BACKWARD")
        .assert()
        .success()
        .stdout(predicate::str::contains("new: shop.order.placed 1.0"));
    assert!(locked.join("shop.order.placed/1.0.schema.json").is_file());

    let v11 = serde_json::json!({"type": "object", "properties": {
        "id": {"type": "string"}, "note": {"type": "string"}}, "required": ["id"]});
    write("1.1", v11);
    gate("check", "full")
        .assert()
        .success()
        .stdout(predicate::str::contains("new: shop.order.placed 1.1"));

    let v12 = serde_json::json!({"type": "object", "properties": {
        "id": {"type": "integer"}, "note": {"type": "string"}}, "required": ["id"]});
    std::fs::remove_file(current.join("shop.order.placed/1.1.schema.json")).unwrap();
    write("1.2", v12);
    gate("lock", "BACKWARD").assert().code(1).stderr(
        predicate::str::contains("shop.order.placed 1.0 -> 1.2: /id: type-narrowed")
            .and(predicate::str::contains("breaks new readers of old data")),
    );
    assert!(!locked.join("shop.order.placed/1.2.schema.json").exists());

    gate("check", "SIDEWAYS")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("BACKWARD"));
    let mut empty = transport();
    empty
        .args(["contracts", "check", "--current"])
        .arg(root.join("nothing"))
        .assert()
        .code(1)
        .stderr(predicate::str::contains("no schemas"));
}

/// `transport contracts asyncapi` and `catalog` read what a service wrote
/// (catalog.json) and write the document and the Markdown; servers carry no
/// credentials; without a catalog the error says how to write one.
#[test]
fn contracts_documents_come_from_the_written_catalog() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(unique("catalog"));
    std::fs::create_dir_all(&dir).unwrap();
    let catalog = serde_json::json!({
        "service": "checkout",
        "version": "2.3.1",
        "events": [{
            "type": "shop.order.placed", "version": "1.0", "rustType": "checkout::OrderPlaced",
            "contentType": "application/json",
            "schema": {"type": "object", "description": "An order was placed.",
                       "properties": {"id": {"type": "string", "description": "The order."}}, "required": ["id"]},
            "producedTo": ["orders"], "consumedIn": [{"topic": "orders", "group": "billing"}]
        }]
    });
    std::fs::write(dir.join("catalog.json"), catalog.to_string()).unwrap();
    let out = transport()
        .args([
            "contracts",
            "asyncapi",
            "--server",
            "prod=kafka://app:pw@k1:9092",
            "--current",
        ])
        .arg(&dir)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let doc: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(doc["asyncapi"], "3.0.0");
    assert_eq!(doc["info"]["version"], "2.3.1");
    assert_eq!(doc["servers"]["prod"]["host"], "k1:9092");
    assert!(!String::from_utf8_lossy(&out).contains("pw"));
    assert_eq!(doc["operations"]["receive_orders__billing"]["action"], "receive");
    transport()
        .args(["contracts", "catalog", "--current"])
        .arg(&dir)
        .assert()
        .success()
        .stdout(predicate::str::contains("| `id` | string | yes | The order. |"));
    transport()
        .args(["contracts", "catalog", "--current"])
        .arg(dir.join("absent"))
        .assert()
        .code(1)
        .stderr(predicate::str::contains("Catalog::write"));
}
