//! The stream consumer: messages of `ExampleTopic` as a `futures::Stream`, each acknowledged
//! on its own, until ten have arrived (run a producer example first).
//!
//! ```sh
//! cargo run -p mq-producer --example sync
//! cargo run -p mq-consumer --example stream
//! ```

use std::time::Duration;

use futures_util::StreamExt;
use mq_consumer::{ConsumeFrom, ConsumerConfig, StreamConsumer};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let namesrv = std::env::var("NAMESRV_ADDR").unwrap_or_else(|_| "127.0.0.1:9876".into());
    let consumer = StreamConsumer::new(
        ConsumerConfig::new("example_stream", namesrv.as_str())
            .with_consume_from(ConsumeFrom::FirstOffset),
    );
    consumer.subscribe("ExampleTopic", "*")?;
    consumer.start().await?;
    let mut messages = consumer.stream()?.take(10);
    let read = async {
        while let Some(received) = messages.next().await {
            let m = received.message();
            println!(
                "{} #{}: {}",
                received.queue(),
                m.queue_offset,
                String::from_utf8_lossy(&m.message.body)
            );
            // The committed offset moves past a message once it and those before it are acked.
            received.ack();
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .map_err(|_| "fewer than ten messages in 30 s: run a producer example first")?;
    consumer.shutdown().await;
    Ok(())
}
