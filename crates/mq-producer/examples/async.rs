//! Keeps a hundred sends in flight at once: each `send_async` is a plain future (no thread
//! pool), and the producer bounds what is in flight.
//!
//! ```sh
//! cargo run -p mq-producer --example async
//! ```

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use mq_client_api::Message;
use mq_producer::{Producer, ProducerConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let namesrv = std::env::var("NAMESRV_ADDR").unwrap_or_else(|_| "127.0.0.1:9876".into());
    let producer = Producer::new(ProducerConfig::new("example_async", namesrv.as_str()));
    producer.start().await?;
    let mut sends: FuturesUnordered<_> = (0..100)
        .map(|i| {
            producer
                .send_async(Message::new("ExampleTopic", format!("async {i}")).with_tags("async"))
        })
        .collect();
    let mut stored = 0;
    while let Some(r) = sends.next().await {
        r?;
        stored += 1;
    }
    println!("{stored} messages stored");
    producer.shutdown().await;
    Ok(())
}
