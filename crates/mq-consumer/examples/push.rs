//! A push consumer with an async listener: prints messages of `ExampleTopic` from the first
//! offset until ten have arrived (run a producer example first).
//!
//! ```sh
//! cargo run -p mq-producer --example sync
//! cargo run -p mq-consumer --example push
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use mq_consumer::{ConsumeFrom, ConsumeStatus, ConsumerConfig, PushConsumer, async_listener};
use tokio::sync::Notify;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let namesrv = std::env::var("NAMESRV_ADDR").unwrap_or_else(|_| "127.0.0.1:9876".into());
    let consumer = PushConsumer::new(
        ConsumerConfig::new("example_push", namesrv.as_str())
            .with_consume_from(ConsumeFrom::FirstOffset),
    );
    consumer.subscribe("ExampleTopic", "*")?;
    let seen = Arc::new(AtomicUsize::new(0));
    let ten = Arc::new(Notify::new());
    let (s, t) = (Arc::clone(&seen), Arc::clone(&ten));
    consumer
        .start_async(async_listener(move |msgs, queue| {
            let (seen, ten) = (Arc::clone(&s), Arc::clone(&t));
            async move {
                for m in &msgs {
                    println!("{queue}: {}", String::from_utf8_lossy(&m.message.body));
                }
                if seen.fetch_add(msgs.len(), Ordering::SeqCst) + msgs.len() >= 10 {
                    ten.notify_one();
                }
                // Success moves the committed offset past these messages.
                ConsumeStatus::Success
            }
        }))
        .await?;
    tokio::time::timeout(Duration::from_secs(30), ten.notified())
        .await
        .map_err(|_| "fewer than ten messages in 30 s: run a producer example first")?;
    consumer.shutdown().await;
    Ok(())
}
