//! The same code on any broker: the scheme of the URL picks the backend,
//! a cargo feature compiles it in.
//!
//! ```sh
//! cargo run -p transport --example swap                                    # memory://
//! cargo run -p transport --features redis --example swap -- redis://127.0.0.1:6379
//! cargo run -p transport --features nats --example swap -- nats://127.0.0.1:4222
//! cargo run -p transport --features rabbitmq --example swap -- amqp://guest:guest@127.0.0.1:5672/%2f
//! ```
//!
//! A scheme whose feature is off fails with `Unsupported`, naming the
//! feature and the schemes compiled in.

use std::time::Duration;

use futures::StreamExt;
use transport::{Message, SubscribeOptions};

#[tokio::main]
async fn main() -> transport::Result<()> {
    let url = std::env::args().nth(1).unwrap_or_else(|| "memory://".to_owned());
    println!("compiled in: {}", transport::schemes().join(", "));
    let broker = transport::connect(&url).await?;
    let caps = broker.capabilities();
    println!(
        "{}: ordering {:?}, nack delay {}, dead-letter operations {}, replay {}",
        broker.backend(),
        caps.ordering,
        caps.nack_delay,
        caps.dead_letter_ops,
        caps.replay
    );

    let topic = format!("swap-example-{}", std::process::id());
    let options = SubscribeOptions::new("example").ack_timeout(Duration::from_secs(10));
    let mut sub = broker.subscribe(&topic, options.clone()).await?;
    broker
        .publish(&topic, Message::new("hello from any broker").with_key("k"))
        .await?;
    let delivery = tokio::time::timeout(Duration::from_secs(30), sub.next())
        .await
        .map_err(|_| transport::Error::new(transport::ErrorKind::Timeout, "nothing arrived in 30 s"))?
        .expect("the subscription is open")?;
    println!(
        "received {:?} (attempt {})",
        String::from_utf8_lossy(delivery.payload()),
        delivery.attempt()
    );
    delivery.ack().await?;
    broker.close().await
}
