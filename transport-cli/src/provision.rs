//! `transport provision`.

use transport::{StartFrom, SubscribeOptions, Topology};

use crate::cli::ProvisionArgs;
use crate::target::{connect, failed, split_url, CliError, CliResult};

pub async fn run(args: ProvisionArgs) -> CliResult {
    let (url, rest) = split_url(&args.args)?;
    let [topic] = rest.as_slice() else {
        return Err(CliError::new("expected [URL] TOPIC"));
    };
    if args.dlq_topic.is_some() && args.groups.len() != 1 {
        return Err(CliError::new("--dlq-topic names the dead-letter topic of one --group"));
    }
    let options: Vec<SubscribeOptions> = args
        .groups
        .iter()
        .map(|g| {
            let mut o = SubscribeOptions::new(g)
                .ack_timeout(args.ack_timeout)
                .max_attempts(args.max_attempts)
                .start(if args.from_start {
                    StartFrom::Earliest
                } else {
                    StartFrom::Latest
                });
            if let Some(t) = &args.dlq_topic {
                o = o.dead_letter_topic(t);
            }
            o
        })
        .collect();
    let broker = connect(&url).await?;
    // The topic alone, then each group (which names the topic again: an
    // object already listed is not printed twice).
    let mut wanted: Vec<Option<&SubscribeOptions>> = vec![None];
    wanted.extend(options.iter().map(Some));
    let mut all = Topology::new();
    for group in wanted {
        let t = if args.print {
            broker.topology(topic, group)
        } else {
            broker.provision(topic, group).await
        }
        .map_err(|e| failed("provisioning", &url, &e))?;
        for o in t.objects() {
            if !all.objects().contains(o) {
                all = all.with(o.kind, o.name.clone(), o.settings.clone());
            }
        }
    }
    if args.json {
        for o in all.objects() {
            println!(
                "{}",
                serde_json::json!({"kind": o.kind, "name": o.name, "settings": o.settings})
            );
        }
    } else if all.is_empty() {
        println!("nothing to create on {}", broker.backend());
    } else {
        print!("{all}");
    }
    let _ = broker.close().await;
    Ok(())
}
