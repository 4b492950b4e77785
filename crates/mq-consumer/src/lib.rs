//! Layer 4 of 4: RocketMQ consumers.
//!
//! [`PushConsumer`] hands messages to a listener on a bounded pool of workers, returning
//! failures to the broker for delayed retries (and the DLQ), or strictly in order per queue
//! with broker-side queue locks; [`PullConsumer`] is the lite pull
//! consumer (`poll`, `seek`, `commit`); [`StreamConsumer`] yields messages as a
//! `futures::Stream`, each acknowledged on its own. All share one engine: subscriptions with tag filters,
//! rebalancing among the group every 20 s and whenever the broker says the group changed (with
//! the strategies of [`allocate`]), one long-polling fetch task per assigned queue with flow
//! control, and offsets kept on the brokers (clustering) or in a local file (broadcasting).
//!
//! [`SimpleConsumer`] is RocketMQ 5's simple consumer (receive, acknowledge, change the
//! invisible time) over gRPC through a proxy.
//!
//! May depend on: `mq-remoting`, `mq-client-api`, `mq-client-instance`, `mq-grpc`. Must not
//! depend on the producer or servers.
//!
//! # Layout
//! * [`config`] — [`ConsumerConfig`], [`ConsumeFrom`], tag expressions.
//! * [`allocate`] — rebalance strategies.
//! * [`offset`] — remote and local offset stores.
//! * [`push`] — [`PushConsumer`], with a blocking [`MessageListener`] (run on the blocking pool), an
//!   [`AsyncMessageListener`] (or [`async_listener`] from a closure), or a [`MessageListenerOrderly`].
//! * [`pull`] — [`PullConsumer`].
//! * [`stream`] — [`StreamConsumer`]: messages as a `Stream`, each acknowledged explicitly.
//! * [`simple`] — [`SimpleConsumer`]: RocketMQ 5's simple consumer over gRPC.
//! * [`error`] — [`ConsumerError`].
//!
//! # Example
//! ```no_run
//! # async fn demo() -> Result<(), mq_consumer::ConsumerError> {
//! use std::sync::Arc;
//! use mq_consumer::{ConsumeStatus, ConsumerConfig, PushConsumer};
//!
//! let consumer = PushConsumer::new(ConsumerConfig::new("my_group", "127.0.0.1:9876"));
//! consumer.subscribe("TopicTest", "TagA || TagB")?;
//! consumer
//!     .start(Arc::new(|msgs: &[mq_client_api::MessageExt], _ctx: &mut mq_consumer::ConsumeContext| {
//!         for m in msgs {
//!             println!("{}", String::from_utf8_lossy(&m.message.body));
//!         }
//!         ConsumeStatus::Success
//!     }))
//!     .await?;
//! # Ok(()) }
//! ```

pub mod allocate;
pub mod config;
mod core;
pub mod error;
pub mod offset;
mod pool;
pub mod pull;
pub mod push;
pub mod simple;
pub mod stream;

pub use config::{ConsumeFrom, ConsumerConfig};
pub use error::ConsumerError;
pub use pull::PullConsumer;
pub use push::{
    AsyncMessageListener, ConsumeContext, ConsumeOrderlyContext, ConsumeOrderlyStatus,
    ConsumeStatus, MessageListener, MessageListenerOrderly, PushConsumer, async_listener,
};
pub use simple::{ReceivedMessage, SimpleConsumer, SimpleConsumerConfig};
pub use stream::{MessageStream, Received, StreamConsumer};
