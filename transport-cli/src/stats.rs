//! `transport stats`: each group's backlog on a topic, once or redrawn.

use std::time::Duration;

use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use transport::{Accuracy, Backlog, BacklogAccuracy, SubscribeOptions, Transport};

use crate::cli::StatsArgs;
use crate::target::{connect, failed, split_url, CliError, CliResult};

pub async fn run(args: StatsArgs) -> CliResult {
    let (url, rest) = split_url(&args.args)?;
    let [topic] = rest.as_slice() else {
        return Err(CliError::new("expected [URL] TOPIC"));
    };
    let broker = connect(&url).await?;
    let accuracy = broker.capabilities().backlog;
    loop {
        let mut rows = Vec::new();
        for group in &args.group {
            let mut options = SubscribeOptions::new(group);
            if let Some(t) = &args.dlq_topic {
                options = options.dead_letter_topic(t);
            }
            let backlog = broker
                .backlog(topic, &options)
                .await
                .map_err(|e| failed(&format!("reading the backlog of {group} on {topic}"), &url, &e))?;
            rows.push((group.as_str(), backlog));
        }
        if args.json {
            for (group, b) in &rows {
                println!("{}", json(topic, group, b, &accuracy));
            }
        } else {
            if args.watch.is_some() {
                // Clear the screen and go home, then draw.
                print!("\x1b[2J\x1b[H");
            }
            println!("{}", table(broker.as_ref(), topic, &rows, &accuracy));
        }
        let Some(every) = args.watch else { return Ok(()) };
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

fn table(broker: &dyn Transport, topic: &str, rows: &[(&str, Backlog)], a: &BacklogAccuracy) -> String {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header(["group", "waiting", "in flight", "dead letters", "oldest waiting"]);
    for (group, b) in rows {
        table.add_row([
            (*group).to_owned(),
            count(b.waiting, a.waiting),
            count(b.in_flight, a.in_flight),
            count(b.dead_letters, a.dead_letters),
            match b.oldest_waiting_age {
                Some(age) => mark(
                    a.oldest_waiting_age,
                    &humantime::format_duration(round(age)).to_string(),
                ),
                None => "-".to_owned(),
            },
        ]);
    }
    format!("{} on {} ({})\n{table}", topic, broker.backend(), legend(a))
}

fn legend(a: &BacklogAccuracy) -> &'static str {
    let all = [a.waiting, a.in_flight, a.dead_letters, a.oldest_waiting_age];
    match (
        all.contains(&Accuracy::Approximate),
        all.contains(&Accuracy::Unavailable),
    ) {
        (true, true) => "~ approximate, - not told by this broker",
        (true, false) => "~ approximate",
        (false, true) => "- not told by this broker",
        (false, false) => "exact",
    }
}

fn count(v: Option<u64>, a: Accuracy) -> String {
    v.map_or_else(|| "-".to_owned(), |n| mark(a, &n.to_string()))
}

fn mark(a: Accuracy, text: &str) -> String {
    match a {
        Accuracy::Approximate => format!("~{text}"),
        _ => text.to_owned(),
    }
}

/// Whole seconds past a minute, milliseconds below it.
fn round(d: Duration) -> Duration {
    if d >= Duration::from_secs(60) {
        Duration::from_secs(d.as_secs())
    } else {
        Duration::from_millis(d.as_millis() as u64)
    }
}

fn json(topic: &str, group: &str, b: &Backlog, a: &BacklogAccuracy) -> serde_json::Value {
    serde_json::json!({
        "topic": topic,
        "group": group,
        "waiting": b.waiting,
        "in_flight": b.in_flight,
        "dead_letters": b.dead_letters,
        "oldest_waiting_ms": b.oldest_waiting_age.map(|d| d.as_millis() as u64),
        "accuracy": {
            "waiting": a.waiting.as_str(),
            "in_flight": a.in_flight.as_str(),
            "dead_letters": a.dead_letters.as_str(),
            "oldest_waiting_age": a.oldest_waiting_age.as_str(),
        },
    })
}
