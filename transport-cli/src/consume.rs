//! `transport consume`.

use std::time::Duration;

use base64::Engine;
use futures::StreamExt;
use transport::{Delivery, StartFrom, SubscribeOptions};

use crate::cli::ConsumeArgs;
use crate::target::{connect, failed, split_url, CliError, CliResult};

pub async fn run(args: ConsumeArgs) -> CliResult {
    let (url, rest) = split_url(&args.args)?;
    let [topic] = rest.as_slice() else {
        return Err(CliError::new("expected [URL] TOPIC"));
    };
    let broker = connect(&url).await?;
    let options = SubscribeOptions::new(&args.group)
        .ack_timeout(args.ack_timeout)
        .max_in_flight(args.max.map_or(64, |m| m.clamp(1, 64) as usize))
        .start(if args.from_start {
            StartFrom::Earliest
        } else {
            StartFrom::Latest
        });
    let mut sub = broker
        .subscribe(topic, options)
        .await
        .map_err(|e| failed(&format!("subscribing to {topic}"), &url, &e))?;
    let mut received = 0u64;
    loop {
        if args.max.is_some_and(|m| received >= m) {
            break;
        }
        let next = match args.timeout {
            Some(t) => match tokio::time::timeout(t, sub.next()).await {
                Ok(n) => n,
                Err(_) => break,
            },
            None => tokio::select! {
                n = sub.next() => n,
                _ = tokio::signal::ctrl_c() => break,
            },
        };
        let delivery = match next {
            None => break,
            Some(Ok(d)) => d,
            Some(Err(e)) if e.is_retryable() => {
                eprintln!("warning: {e}; retrying");
                continue;
            }
            Some(Err(e)) => return Err(failed(&format!("receiving from {topic}"), &url, &e)),
        };
        print_delivery(&delivery, args.json);
        received += 1;
        let settled = if args.no_ack {
            // Leave it in flight: it returns after the ack timeout.
            std::mem::forget(delivery);
            Ok(())
        } else if let Some(reason) = &args.dead_letter {
            delivery.dead_letter(reason.clone()).await
        } else if let Some(delay) = args.nack {
            delivery.nack((!delay.is_zero()).then_some(delay)).await
        } else {
            delivery.ack().await
        };
        settled.map_err(|e| failed("settling a message", &url, &e))?;
    }
    // Give fire-and-forget acks a moment to leave before closing.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let _ = broker.close().await;
    if received == 0 && args.timeout.is_some() {
        eprintln!(
            "no message within {}",
            humantime::format_duration(args.timeout.unwrap_or_default())
        );
    }
    Ok(())
}

fn print_delivery(d: &Delivery, json: bool) {
    if json {
        let (payload, encoding) = match std::str::from_utf8(d.payload()) {
            Ok(text) => (text.to_owned(), "utf-8"),
            Err(_) => (base64::engine::general_purpose::STANDARD.encode(d.payload()), "base64"),
        };
        let headers: serde_json::Map<String, serde_json::Value> =
            d.headers().iter().map(|(k, v)| (k.to_owned(), v.into())).collect();
        println!(
            "{}",
            serde_json::json!({
                "id": d.id(),
                "key": d.key(),
                "topic": d.topic(),
                "attempt": d.attempt(),
                "headers": headers,
                "payload": payload,
                "payload_encoding": encoding,
            })
        );
    } else {
        let body = match std::str::from_utf8(d.payload()) {
            Ok(text) => text.to_owned(),
            Err(_) => format!("<{} binary bytes>", d.payload().len()),
        };
        let key = d.key().map(|k| format!(" key={k}")).unwrap_or_default();
        println!("{} attempt={}{key}  {body}", d.id(), d.attempt());
    }
}
