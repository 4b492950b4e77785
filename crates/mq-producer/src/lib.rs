//! Layer 4 of 4: the RocketMQ producer.
//!
//! [`Producer`] is the facade (Java `DefaultMQProducer`) over an engine (Java
//! `DefaultMQProducerImpl`) that every send mode shares: sync ([`Producer::send`]), a plain
//! future ([`Producer::send_async`], no thread pool: the I/O is the async path), a callback
//! ([`Producer::send_with_callback`]), oneway, to an explicit queue, through a
//! [`QueueSelector`], and batches. Each send has one deadline, fixed when the call is made,
//! that covers the route lookup and every attempt; retries move to another broker (also with
//! latency fault tolerance on, unlike 4.5.1), async sends retry by the sync rules (broker codes
//! included), and every failure is one [`ProducerError`] naming the topic, attempts, brokers
//! tried, time spent and last cause. A failed send hands its message back in a [`SendError`]
//! (as rdkafka does), to be sent again with the same id.
//!
//! [`GrpcProducer`] sends by the same rules through a RocketMQ 5 proxy over gRPC.
//!
//! May depend on: `mq-remoting`, `mq-client-api`, `mq-client-instance`, `mq-grpc`. Must not
//! depend on consumers or servers.
//!
//! # Layout
//! * [`config`] — [`ProducerConfig`], [`BatchingConfig`].
//! * [`batching`] — the opt-in accumulator of async sends.
//! * [`producer`] — [`Producer`] and its engine.
//! * [`select`] — publish queues, round-robin, [`LatencyFaultTolerance`], selectors.
//! * [`hook`] — [`SendHook`] and [`SendContext`].
//! * [`transaction`] — [`TransactionProducer`] and [`TransactionListener`].
//! * [`ordered`] — [`OrderedSender`]: per-key order with pipelined sends.
//! * [`request`] — request-reply: [`Producer::request`], [`reply_message`].
//! * [`grpc`] — [`GrpcProducer`]: sends through a RocketMQ 5 proxy over gRPC.
//! * [`error`] — [`ProducerError`], and [`SendError`] with the message handed back.
//!
//! # Example
//! ```no_run
//! # async fn demo() -> Result<(), mq_producer::ProducerError> {
//! use mq_client_api::Message;
//! use mq_producer::{Producer, ProducerConfig};
//!
//! let producer = Producer::new(ProducerConfig::new("my_group", "127.0.0.1:9876"));
//! producer.start().await?;
//! let result = producer.send(Message::new("TopicTest", "hello").with_tags("TagA")).await?;
//! println!("{} stored at {} offset {}", result.msg_id, result.message_queue, result.queue_offset);
//! producer.shutdown().await;
//! # Ok(()) }
//! ```

mod attempt;
pub mod batching;
pub mod config;
pub mod error;
pub mod grpc;
pub mod hook;
pub mod ordered;
pub mod producer;
pub mod request;
pub mod select;
pub mod transaction;

pub use config::{BatchingConfig, ProducerConfig};
pub use error::{DeliveryState, ProducerError, SendError};
pub use grpc::{GrpcProducer, GrpcProducerConfig};
pub use hook::{CommunicationMode, SendContext, SendHook};
pub use ordered::{OrderedSender, SEQUENCE_PROPERTY};
pub use producer::Producer;
pub use request::{RequestFuture, reply_message};
pub use select::{
    HashSelector, LatencyFaultTolerance, MachineRoomSelector, QueueSelector, RandomSelector,
    SelectArg, TopicPublishInfo,
};
pub use transaction::{
    LocalTransactionState, TransactionListener, TransactionProducer, TransactionSendResult,
};
