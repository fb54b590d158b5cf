//! `transport monitor` against a real Redis, scraped by a real Prometheus
//! server (`scripts/brokers up prometheus`, which scrapes 127.0.0.1:9464
//! every second): the test queries Prometheus's HTTP API until the backlog
//! series shows what the group has waiting. `--once` mode's alerts and exit
//! status are checked too. Skipped with a message without `REDIS_URL` /
//! `PROMETHEUS_URL`, a failure under `CI`.

use std::process::{Child, Command as Std, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::Command;
use predicates::prelude::*;

fn transport() -> Command {
    let mut c = Command::cargo_bin("transport").unwrap();
    c.env_remove("TRANSPORT_URL");
    c
}

fn env(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) => Some(v),
        Err(_) if std::env::var("CI").is_ok() => panic!("{var} is not set"),
        Err(_) => {
            eprintln!("skipped: {var} is not set");
            None
        }
    }
}

/// A topic whose group `g` has three messages waiting.
fn three_waiting(url: &str) -> String {
    let topic = format!("monitor-{}-{}", std::process::id(), uuid_ish());
    transport()
        .args(["consume", url, &topic, "--group", "g", "--timeout", "200ms"])
        .assert()
        .success();
    transport()
        .args(["publish", url, &topic, "--lines"])
        .write_stdin("a\nb\nc\n")
        .assert()
        .success();
    topic
}

fn uuid_ish() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

#[test]
fn once_prints_the_gauges_and_fails_on_an_alert() {
    let Some(url) = env("REDIS_URL") else { return };
    let topic = three_waiting(&url);
    let series = format!(
        "transport_backlog_waiting{{messaging_system=\"redis\",messaging_destination_name=\"{topic}\",messaging_consumer_group_name=\"g\"}} 3"
    );
    transport()
        .args([
            "monitor",
            &url,
            "--topic",
            &topic,
            "--group",
            "g",
            "--once",
            "--alert-lag",
            "10",
            "--alert-dlq",
            "0",
        ])
        .assert()
        .success()
        .stdout(predicate::str::contains(series.as_str()))
        .stderr(predicate::str::contains("ALERT").not());
    transport()
        .args([
            "monitor",
            &url,
            "--topic",
            &topic,
            "--group",
            "g",
            "--once",
            "--alert-lag",
            "2",
        ])
        .assert()
        .failure()
        .stderr(predicate::str::contains(format!(
            "ALERT lag {topic}/g: 3 messages waiting (more than 2)"
        )));
    transport()
        .args([
            "monitor",
            &url,
            "--topic",
            &topic,
            "--group",
            "g",
            "--once",
            "--alert-lag",
            "1h",
        ])
        .assert()
        .success();
}

/// Kills the monitor when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Prometheus's answer to an instant query, as text.
fn query(prometheus: &str, promql: &str) -> String {
    let out = Std::new("curl")
        .args([
            "-sf",
            "--max-time",
            "5",
            &format!("{prometheus}/api/v1/query"),
            "--data-urlencode",
        ])
        .arg(format!("query={promql}"))
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn prometheus_scrapes_the_backlog() {
    let (Some(url), Some(prometheus)) = (env("REDIS_URL"), env("PROMETHEUS_URL")) else {
        return;
    };
    let topic = three_waiting(&url);
    let bin = assert_cmd::cargo::cargo_bin("transport");
    let _monitor = Running(
        Std::new(bin)
            .args([
                "monitor",
                &url,
                "--topic",
                &topic,
                "--group",
                "g",
                "--listen",
                "127.0.0.1:9464",
            ])
            .args(["--interval", "500ms"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("monitor"),
    );
    let promql = format!(
        "transport_backlog_waiting{{messaging_destination_name=\"{topic}\",messaging_consumer_group_name=\"g\"}}"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = query(&prometheus, &promql);
        if answer.contains("\"messaging_system\":\"redis\"") && answer.contains(",\"3\"]") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus has no series {promql} = 3 after 30 s; last answer: {answer}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // The job's own health: Prometheus reached the monitor.
    let up = query(&prometheus, "up{job=\"transport-monitor\"}");
    assert!(up.contains(",\"1\"]"), "{up}");
}
