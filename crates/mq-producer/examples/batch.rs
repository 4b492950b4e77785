//! Sends ten messages in one request (one topic, no delay levels, at most 4 MiB together).
//!
//! ```sh
//! cargo run -p mq-producer --example batch
//! ```

use mq_client_api::Message;
use mq_producer::{Producer, ProducerConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let namesrv = std::env::var("NAMESRV_ADDR").unwrap_or_else(|_| "127.0.0.1:9876".into());
    let producer = Producer::new(ProducerConfig::new("example_batch", namesrv.as_str()));
    producer.start().await?;
    let batch = (0..10)
        .map(|i| Message::new("ExampleTopic", format!("batch {i}")).with_tags("batch"))
        .collect();
    let r = producer.send_batch(batch).await?;
    // One id per message, comma-joined; the first message's queue offset.
    println!(
        "{:?} at {} from offset {}: {}",
        r.status, r.message_queue, r.queue_offset, r.msg_id
    );
    producer.shutdown().await;
    Ok(())
}
