//! Minimal reproduction, with the raw AWS SDK, of a moto defect that breaks
//! per-key order in FIFO mode: while any message of a message group is in
//! flight, AWS hands out no later message of that group, but moto does when
//! two ReceiveMessage calls run at once. moto (5.x, `moto/sqs/models.py`,
//! `receive_message`) takes a snapshot of the in-flight groups when a call
//! starts and checks against it for the whole call (long-poll iterations
//! included), so a group another call marks in flight meanwhile is not seen
//! as locked. The first part shows the lock holding for one receiver; the
//! second, a delayed retry (visibility changed on the first message), shows
//! whether the lock holds during the delay; the third, 16 groups x 60
//! messages and two receivers polling at once, shows later messages handed
//! out while an earlier one is still held, and messages handed to both
//! receivers (moto marks a message received without a lock).
//!
//! ```sh
//! scripts/brokers up sqs
//! cargo run -p backend-sqs --example moto_fifo_repro [endpoint]
//! ```

use aws_sdk_sqs::types::QueueAttributeName;
use backend_sqs::SqsConfig;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let endpoint = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:4566".into());
    let config = SqsConfig::from_url(&format!(
        "sqs://?region=us-east-1&endpoint={endpoint}&access_key=test&secret_key=test"
    ))
    .expect("endpoint")
    .sdk_config()
    .await
    .expect("SDK configuration");
    let sqs = aws_sdk_sqs::Client::new(&config);
    let url = fifo_queue(&sqs, "").await;
    for (i, body) in ["first", "second", "third"].iter().enumerate() {
        sqs.send_message()
            .queue_url(&url)
            .message_body(*body)
            .message_group_id("one-key")
            .message_deduplication_id(i.to_string())
            .send()
            .await
            .expect("send");
    }
    let held = receive(&sqs, &url, 2).await;
    println!("first receive: {:?}", held.iter().map(|m| &m.0).collect::<Vec<_>>());
    let (_, receipt) = held.first().expect("a message").clone();
    sqs.delete_message()
        .queue_url(&url)
        .receipt_handle(receipt)
        .send()
        .await
        .expect("delete");
    println!("deleted the first; the second stays in flight");
    let next = receive(&sqs, &url, 1).await;
    println!("next receive: {:?}", next.iter().map(|m| &m.0).collect::<Vec<_>>());
    if next.is_empty() {
        println!("=> the group is locked while a message is in flight, as on AWS");
    } else {
        println!("=> the endpoint handed out a later message of the same group (AWS returns nothing here)");
    }
    let _ = sqs.delete_queue().queue_url(&url).send().await;

    // A delayed retry: the first message's visibility is changed (it stays
    // in flight, so on AWS its group stays locked until it is visible again
    // and received), then the queue is polled at once.
    let url = fifo_queue(&sqs, "-delay").await;
    for (i, body) in ["first", "second"].iter().enumerate() {
        sqs.send_message()
            .queue_url(&url)
            .message_body(*body)
            .message_group_id("one-key")
            .message_deduplication_id(format!("d{i}"))
            .send()
            .await
            .expect("send");
    }
    let first = receive(&sqs, &url, 1).await;
    let (_, receipt) = first.first().expect("the first message").clone();
    sqs.change_message_visibility()
        .queue_url(&url)
        .receipt_handle(receipt)
        .visibility_timeout(2)
        .send()
        .await
        .expect("change visibility");
    let after = receive(&sqs, &url, 1).await;
    println!(
        "after a 2 s visibility change of the first: {:?}",
        after.iter().map(|m| &m.0).collect::<Vec<_>>()
    );
    if after.is_empty() {
        println!("=> the group stays locked during the delay, as on AWS");
    } else {
        println!(
            "=> the endpoint handed out a later message while the first waits out its delay (AWS returns nothing here)"
        );
    }
    let _ = sqs.delete_queue().queue_url(&url).send().await;

    // Two receivers polling at once, as two consumers of a group do, over
    // many message groups. A receiver must never get message s of a group
    // before the deletion of message s-1 was at least sent.
    let url = fifo_queue(&sqs, "-race").await;
    const GROUPS: usize = 16;
    const PER_GROUP: usize = 60;
    for i in 0..PER_GROUP {
        for g in 0..GROUPS {
            sqs.send_message()
                .queue_url(&url)
                .message_body(format!("{g}:{i}"))
                .message_group_id(format!("g{g}"))
                .message_deduplication_id(format!("{g}-{i}"))
                .send()
                .await
                .expect("send");
        }
    }
    // Per group: how many messages, from the first, had their deletion sent.
    let released = std::sync::Arc::new(std::sync::Mutex::new(vec![0usize; GROUPS]));
    let violations = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    // Message ids received so far: one received twice while the visibility
    // timeout (30 s) still hides it was handed to both receivers.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
    let twice = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let receivers = (0..2).map(|r| {
        let (sqs, url) = (sqs.clone(), url.clone());
        let (released, violations) = (released.clone(), violations.clone());
        let (seen, twice) = (seen.clone(), twice.clone());
        tokio::spawn(async move {
            let mut empty = 0;
            while empty < 3 {
                let got = sqs
                    .receive_message()
                    .queue_url(&url)
                    .max_number_of_messages(10)
                    .wait_time_seconds(1)
                    .send()
                    .await
                    .expect("receive");
                let messages = got.messages().to_vec();
                if messages.is_empty() {
                    empty += 1;
                    continue;
                }
                empty = 0;
                for m in &messages {
                    let id = m.message_id().unwrap_or("").to_owned();
                    if !seen.lock().unwrap().insert(id) {
                        twice
                            .lock()
                            .unwrap()
                            .push(format!("receiver {r} got {} again", m.body().unwrap_or("")));
                    }
                }
                let parse = |m: &aws_sdk_sqs::types::Message| {
                    let (g, i) = m.body().unwrap_or("0:0").split_once(':').unwrap_or(("0", "0"));
                    (g.parse::<usize>().unwrap_or(0), i.parse::<usize>().unwrap_or(0))
                };
                {
                    let released = released.lock().unwrap();
                    let mut batch_next = vec![None; GROUPS];
                    for m in &messages {
                        let (g, i) = parse(m);
                        // Within one batch a group's messages come in order.
                        let due = batch_next[g].unwrap_or(released[g]);
                        if i != due {
                            violations
                                .lock()
                                .unwrap()
                                .push(format!("receiver {r} got {g}:{i} while {g}:{due} was not yet deleted"));
                        }
                        batch_next[g] = Some(i + 1);
                    }
                }
                for m in &messages {
                    let (g, i) = parse(m);
                    {
                        let mut released = released.lock().unwrap();
                        released[g] = released[g].max(i + 1);
                    }
                    sqs.delete_message()
                        .queue_url(&url)
                        .receipt_handle(m.receipt_handle().unwrap_or(""))
                        .send()
                        .await
                        .expect("delete");
                }
            }
        })
    });
    for r in receivers.collect::<Vec<_>>() {
        r.await.expect("receiver");
    }
    let violations = violations.lock().unwrap().clone();
    println!(
        "two receivers, {GROUPS} groups x {PER_GROUP}: {} order violations",
        violations.len()
    );
    for v in violations.iter().take(5) {
        println!("  {v}");
    }
    if !violations.is_empty() {
        println!("=> with concurrent receives the group order does not hold (AWS: none)");
    }
    // moto's receive_message checks each message's visibility and marks it
    // received without a lock: two calls at once can both take it.
    let twice = twice.lock().unwrap().clone();
    println!(
        "two receivers: {} messages handed out twice within their visibility timeout",
        twice.len()
    );
    for t in twice.iter().take(5) {
        println!("  {t}");
    }
    if !twice.is_empty() {
        println!(
            "=> with concurrent receives a FIFO message can go to two consumers at once (AWS: exactly-once processing)"
        );
    }
    let _ = sqs.delete_queue().queue_url(&url).send().await;
}

/// One receive of at most `n` messages, as (body, receipt handle).
async fn receive(sqs: &aws_sdk_sqs::Client, url: &str, n: i32) -> Vec<(String, String)> {
    sqs.receive_message()
        .queue_url(url)
        .max_number_of_messages(n)
        .send()
        .await
        .expect("receive")
        .messages()
        .iter()
        .map(|m| {
            (
                m.body().unwrap_or("").to_owned(),
                m.receipt_handle().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

/// A new FIFO queue (60 s visibility, so nothing reappears during a run).
async fn fifo_queue(sqs: &aws_sdk_sqs::Client, suffix: &str) -> String {
    sqs.create_queue()
        .queue_name(format!("repro-{}{suffix}.fifo", std::process::id()))
        .attributes(QueueAttributeName::FifoQueue, "true")
        .attributes(QueueAttributeName::VisibilityTimeout, "60")
        .send()
        .await
        .expect("create queue")
        .queue_url()
        .unwrap_or_default()
        .to_owned()
}
