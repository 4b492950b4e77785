//! Sends ten messages one after the other and prints where each was stored.
//!
//! ```sh
//! mq serve &                      # or any RocketMQ cluster: NAMESRV_ADDR=host:9876
//! cargo run -p mq-producer --example sync
//! ```

use mq_client_api::Message;
use mq_producer::{Producer, ProducerConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let namesrv = std::env::var("NAMESRV_ADDR").unwrap_or_else(|_| "127.0.0.1:9876".into());
    let producer = Producer::new(ProducerConfig::new("example_sync", namesrv.as_str()));
    producer.start().await?;
    for i in 0..10 {
        let msg = Message::new("ExampleTopic", format!("sync {i}"))
            .with_tags("sync")
            .with_keys([format!("order-{i}")]);
        let r = producer.send(msg).await?;
        println!(
            "{:?} {} at {} offset {}",
            r.status, r.msg_id, r.message_queue, r.queue_offset
        );
    }
    producer.shutdown().await;
    Ok(())
}
