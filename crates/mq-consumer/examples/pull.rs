//! A lite pull consumer: polls `ExampleTopic` from the first offset and commits after each
//! batch, until ten messages have arrived (run a producer example first).
//!
//! ```sh
//! cargo run -p mq-producer --example sync
//! cargo run -p mq-consumer --example pull
//! ```

use std::time::{Duration, Instant};

use mq_consumer::{ConsumeFrom, ConsumerConfig, PullConsumer};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let namesrv = std::env::var("NAMESRV_ADDR").unwrap_or_else(|_| "127.0.0.1:9876".into());
    let consumer = PullConsumer::new(
        ConsumerConfig::new("example_pull", namesrv.as_str())
            .with_consume_from(ConsumeFrom::FirstOffset)
            .with_auto_commit(false),
    );
    consumer.subscribe("ExampleTopic", "*")?;
    consumer.start().await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = 0;
    while seen < 10 {
        if Instant::now() >= deadline {
            return Err("fewer than ten messages in 30 s: run a producer example first".into());
        }
        let batch = consumer.poll(Duration::from_secs(1)).await?;
        for m in &batch {
            println!(
                "{} #{}: {}",
                m.message.topic,
                m.queue_offset,
                String::from_utf8_lossy(&m.message.body)
            );
        }
        seen += batch.len();
        // What poll returned counts as consumed once committed.
        consumer.commit().await;
    }
    consumer.shutdown().await;
    Ok(())
}
