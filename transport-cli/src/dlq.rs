//! `transport dlq`.

use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use transport::{format_time, parse_time};
use transport::{Selection, SubscribeOptions};

use crate::cli::{DlqArgs, DlqOp, PickArgs, SelectArgs};
use crate::target::{connect, failed, split_url, CliError, CliResult};

pub async fn run(args: DlqArgs) -> CliResult {
    let (url, rest) = split_url(&args.args)?;
    let [topic] = rest.as_slice() else {
        return Err(CliError::new("expected [URL] TOPIC"));
    };
    let broker = connect(&url).await?;
    let mut options = SubscribeOptions::new(&args.group);
    if let Some(t) = &args.dlq_topic {
        options = options.dead_letter_topic(t);
    }
    let dlq = broker
        .dead_letters(topic, &options)
        .await
        .map_err(|e| failed("opening the dead-letter queue", &url, &e))?;
    let name = dlq.topic().to_owned();
    let fail = |what: &str, e: transport::Error| failed(&format!("{what} {name}"), &url, &e);
    match args.op {
        DlqOp::Depth => {
            let depth = dlq.depth().await.map_err(|e| fail("reading the depth of", e))?;
            if args.json {
                println!("{}", serde_json::json!({"dlq": name, "depth": depth}));
            } else {
                println!("{depth}");
            }
        }
        DlqOp::Peek { n } => {
            let letters = dlq.peek(n).await.map_err(|e| fail("peeking into", e))?;
            if args.json {
                for d in &letters {
                    let headers: serde_json::Map<String, serde_json::Value> = d
                        .message
                        .headers
                        .iter()
                        .map(|(k, v)| (k.to_owned(), v.into()))
                        .collect();
                    println!(
                        "{}",
                        serde_json::json!({
                            "id": d.message.id,
                            "key": d.message.key,
                            "original_topic": d.original_topic,
                            "group": d.group,
                            "attempts": d.attempts,
                            "reason": d.reason,
                            "first_failure": d.first_failure.map(format_time),
                            "last_failure": d.last_failure.map(format_time),
                            "headers": headers,
                            "payload": String::from_utf8_lossy(&d.message.payload),
                        })
                    );
                }
            } else if letters.is_empty() {
                println!("{name} is empty");
            } else {
                let mut table = Table::new();
                table.load_preset(UTF8_FULL_CONDENSED);
                table.set_header(["id", "attempts", "reason", "last failure", "payload"]);
                for d in &letters {
                    let payload = String::from_utf8_lossy(&d.message.payload);
                    let short: String = payload.chars().take(40).collect();
                    table.add_row([
                        d.message.id.clone(),
                        d.attempts.map(|a| a.to_string()).unwrap_or_default(),
                        d.reason.clone().unwrap_or_default(),
                        d.last_failure.map(format_time).unwrap_or_default(),
                        if payload.chars().count() > 40 {
                            format!("{short}…")
                        } else {
                            short
                        },
                    ]);
                }
                println!("{table}");
            }
        }
        DlqOp::Redrive { n, all, select } => {
            let moved = if select.any() {
                dlq.redrive(&selection(&select)?).await
            } else if all {
                dlq.redrive_all().await
            } else {
                dlq.redrive(&Selection::all().oldest(n.unwrap_or(0))).await
            }
            .map_err(|e| fail("redriving", e))?;
            if args.json {
                println!("{}", serde_json::json!({"dlq": name, "redriven": moved}));
            } else {
                println!(
                    "redrove {moved} message(s) from {name} to {topic} for group {}",
                    args.group
                );
            }
        }
        DlqOp::Discard { pick } => {
            let discarded = dlq
                .discard(&picked(&pick)?)
                .await
                .map_err(|e| fail("discarding from", e))?;
            if args.json {
                println!("{}", serde_json::json!({"dlq": name, "discarded": discarded}));
            } else {
                println!("discarded {discarded} message(s) from {name}");
            }
        }
        DlqOp::Purge => {
            let purged = dlq.purge().await.map_err(|e| fail("purging", e))?;
            if args.json {
                println!("{}", serde_json::json!({"dlq": name, "purged": purged}));
            } else {
                println!("purged {purged} message(s) from {name}");
            }
        }
    }
    let _ = broker.close().await;
    Ok(())
}

/// The selection `--all` or the selectors give; an error when neither is
/// given, so nothing is discarded by default.
pub(crate) fn picked(pick: &PickArgs) -> Result<Selection, CliError> {
    if !pick.all && !pick.select.any() {
        return Err(CliError::new(
            "say which ones: --id, --reason, --failed-before, or --all for every one",
        ));
    }
    selection(&pick.select)
}

/// The library's selection for `--id`, `--reason` and `--failed-before`.
fn selection(select: &SelectArgs) -> Result<Selection, CliError> {
    let mut s = if select.ids.is_empty() {
        Selection::all()
    } else {
        Selection::ids(select.ids.iter().cloned())
    };
    if let Some(text) = &select.reason {
        s = s.reason_contains(text.clone());
    }
    if let Some(time) = &select.failed_before {
        let at = parse_time(time)
            .or_else(|| {
                humantime::parse_duration(time)
                    .ok()
                    .map(|ago| std::time::SystemTime::now() - ago)
            })
            .ok_or_else(|| {
                CliError::new(format!(
                    "--failed-before {time:?} is neither RFC 3339 nor a duration (2h)"
                ))
            })?;
        s = s.failed_before(at);
    }
    Ok(s)
}
