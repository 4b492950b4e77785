//! Request-reply (RocketMQ 4.6+): a replier consumes `ExampleRequests` and answers each
//! request; the requester sends three requests and prints the reply to each.
//!
//! ```sh
//! mq serve &                      # or any RocketMQ cluster: NAMESRV_ADDR=host:9876
//! cargo run -p mq-producer --example request_reply
//! ```

use std::time::Duration;

use futures_util::StreamExt;
use mq_client_api::Message;
use mq_consumer::{ConsumeFrom, ConsumerConfig, StreamConsumer};
use mq_producer::{Producer, ProducerConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let namesrv = std::env::var("NAMESRV_ADDR").unwrap_or_else(|_| "127.0.0.1:9876".into());
    let requester = Producer::new(ProducerConfig::new("example_requester", namesrv.as_str()));
    requester.start().await?;
    requester
        .create_topic("TBW102", "ExampleRequests", 4)
        .await?;

    // The replier: a consumer of the requests, and a producer for the replies.
    let replies = Producer::new(ProducerConfig::new("example_replier", namesrv.as_str()));
    replies.start().await?;
    let consumer = StreamConsumer::new(
        ConsumerConfig::new("example_replier", namesrv.as_str())
            .with_consume_from(ConsumeFrom::FirstOffset),
    );
    consumer.subscribe("ExampleRequests", "*")?;
    consumer.start().await?;
    let mut requests = consumer.stream()?;
    let replier = {
        let replies = replies.clone();
        tokio::spawn(async move {
            while let Some(received) = requests.next().await {
                let question = String::from_utf8_lossy(&received.message().message.body);
                let answer = format!("{} characters", question.chars().count());
                // The reply goes to the requester's client through the broker.
                if let Err(e) = replies.reply(&received.message().message, answer).await {
                    eprintln!("reply failed: {}", e.error());
                }
                received.ack();
            }
        })
    };

    for question in ["how long is this?", "and this one?", "?"] {
        let reply = requester
            .request(
                Message::new("ExampleRequests", question),
                Duration::from_secs(30),
            )
            .await?;
        println!(
            "{question:?} -> {:?}",
            String::from_utf8_lossy(&reply.message.body)
        );
    }

    consumer.shutdown().await;
    replier.await?;
    replies.shutdown().await;
    requester.shutdown().await;
    Ok(())
}
