//! Strict order per key with many sends in flight: every message of a key goes to the key's
//! queue with the next sequence number, and the outcomes of one key resolve in order.
//!
//! ```sh
//! cargo run -p mq-producer --example ordered
//! ```

use mq_client_api::Message;
use mq_producer::{OrderedSender, Producer, ProducerConfig, SelectArg};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let namesrv = std::env::var("NAMESRV_ADDR").unwrap_or_else(|_| "127.0.0.1:9876".into());
    let producer = Producer::new(ProducerConfig::new("example_ordered", namesrv.as_str()));
    producer.start().await?;
    let sender = OrderedSender::new(producer.clone(), "ExampleTopic", 8).await?;
    // Queued in call order: the order of each customer's events is the order of these calls.
    let sends: Vec<_> = (0..40)
        .map(|i| {
            let customer = i % 4;
            let msg = Message::new(
                "ExampleTopic",
                format!("customer {customer} event {}", i / 4),
            )
            .with_tags("ordered");
            (customer, sender.send(&SelectArg::Int(customer), msg))
        })
        .collect();
    let mut last = [None::<i64>; 4];
    for (customer, send) in sends {
        let r = send.await?;
        let key = usize::try_from(customer)?;
        // One queue per key, offsets rising in call order.
        assert!(last[key].is_none_or(|o| o < r.queue_offset));
        last[key] = Some(r.queue_offset);
    }
    println!("40 events of 4 customers stored in order: last offsets {last:?}");
    sender.close().await;
    producer.shutdown().await;
    Ok(())
}
