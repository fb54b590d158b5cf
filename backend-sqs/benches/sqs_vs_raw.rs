//! The same publish -> consume -> ack workload (1 KiB messages) through this
//! backend and through the AWS SDK directly (SNS publish batches of 10, SQS
//! receive of 10, delete per message), side by side.
//!
//! `scripts/brokers up sqs && SQS_URL="$(scripts/brokers url sqs)" cargo bench -p backend-sqs --bench sqs_vs_raw`

use std::sync::Arc;
use std::time::{Duration, Instant};

use conformance_tests::throughput::{compare, publish_consume_ack};

use aws_sdk_sqs::types::QueueAttributeName;
use backend_sqs::{SqsConfig, SqsTransport};
use transport_core::Transport;

const SIZE: usize = 1024;
const MAX_IN_FLIGHT: usize = 100;
const BATCH: usize = 10;

fn main() {
    let url = std::env::var("SQS_URL").unwrap_or_else(|_| {
        "sqs://?region=us-east-1&endpoint=http://127.0.0.1:4566&access_key=test&secret_key=test".into()
    });
    compare(
        &format!(
            "sqs + sns: {SIZE}-byte messages, publish batches of {BATCH}, publish -> consume -> ack (raw: aws-sdk)"
        ),
        500,
        0,
        |n| raw(&url, n),
        |n| library(&url, n),
    );
}

fn name(what: &str) -> String {
    format!(
        "bench-{what}-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

async fn library(url: &str, n: usize) -> Duration {
    let t: Arc<dyn Transport> = SqsTransport::connect(url).await.unwrap();
    publish_consume_ack(t, n, SIZE, BATCH, MAX_IN_FLIGHT).await
}

async fn raw(url: &str, n: usize) -> Duration {
    let cfg = SqsConfig::from_url(url).unwrap().sdk_config().await.unwrap();
    let (sqs, sns) = (aws_sdk_sqs::Client::new(&cfg), aws_sdk_sns::Client::new(&cfg));
    let topic_arn = sns
        .create_topic()
        .name(name("raw"))
        .send()
        .await
        .unwrap()
        .topic_arn()
        .unwrap()
        .to_owned();
    let queue_url = sqs
        .create_queue()
        .queue_name(name("rawq"))
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_owned();
    let queue_arn = sqs
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes()
        .unwrap()[&QueueAttributeName::QueueArn]
        .clone();
    sns.subscribe()
        .topic_arn(&topic_arn)
        .protocol("sqs")
        .endpoint(queue_arn)
        .attributes("RawMessageDelivery", "true")
        .send()
        .await
        .unwrap();
    let body = "x".repeat(SIZE);
    let start = Instant::now();
    let publisher = tokio::spawn(async move {
        for chunk in (0..n).collect::<Vec<_>>().chunks(10) {
            let entries = chunk
                .iter()
                .map(|i| {
                    aws_sdk_sns::types::PublishBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message(body.clone())
                        .build()
                        .unwrap()
                })
                .collect();
            sns.publish_batch()
                .topic_arn(&topic_arn)
                .set_publish_batch_request_entries(Some(entries))
                .send()
                .await
                .unwrap();
        }
    });
    let mut got = 0;
    while got < n {
        let out = sqs
            .receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        for m in out.messages() {
            sqs.delete_message()
                .queue_url(&queue_url)
                .receipt_handle(m.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
            got += 1;
        }
    }
    let elapsed = start.elapsed();
    publisher.await.unwrap();
    elapsed
}
