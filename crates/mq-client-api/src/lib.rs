//! Layer 2 of 4: the RocketMQ protocol vocabulary and typed RPCs.
//!
//! Everything a client (and our servers) says on the wire, encoded exactly as Apache RocketMQ
//! does: request and response codes, custom headers, JSON bodies, messages and their stored,
//! batch and compressed forms, message ids and validators; plus [`ClientApi`], one async method
//! per RPC over an `mq-remoting` client.
//!
//! May depend on: `mq-remoting`, bytes, serde, compression and CRC crates. Must not depend on
//! `mq-client-instance`, producers, consumers or servers, and keeps no client state (routes,
//! registries) of its own.
//!
//! # Layout
//! * [`code`] — [`RequestCode`], [`ResponseCode`], [`SendStatus`], [`PullStatus`], retry rules.
//! * [`header`] — one struct per Java header class, each a [`header::CommandHeader`].
//! * [`body`] — JSON bodies and the fastjson-tolerant reader.
//! * [`message`] — [`Message`], properties, sysFlag, compression, records, ids, batches.
//! * [`validate`] — topic, group and message checks; Java `String.hashCode`.
//! * [`wire_time`] — `SystemTime` to and from the wire's epoch milliseconds.
//! * [`api`] — [`ClientApi`] and its results.
//! * [`error`] — [`ClientApiError`].
//!
//! # Example
//! ```no_run
//! use std::time::Duration;
//! use mq_client_api::{ApiConfig, ClientApi};
//! use mq_remoting::{ClientConfig, RemotingClient};
//!
//! # async fn demo() -> Result<(), mq_client_api::ClientApiError> {
//! let remoting = RemotingClient::new(ClientConfig::default());
//! remoting.name_servers().update(vec!["127.0.0.1:9876".into()]);
//! let api = ClientApi::new(remoting, ApiConfig::default());
//! let route = api.topic_route("TopicTest", Duration::from_secs(3)).await?;
//! println!("{} brokers", route.broker_datas.len());
//! # Ok(()) }
//! ```

pub mod acl;
pub mod answer;
pub mod api;
pub mod body;
pub mod code;
pub mod error;
pub mod header;
pub mod message;
pub mod names;
pub mod validate;
pub mod wire_time;

#[doc(hidden)]
pub mod fuzz_oracle;

pub use api::{
    ApiConfig, ClientApi, PopResult, PoppedMessage, PullResult, RegisterBrokerResult, SendRequest,
    SendResult,
};
pub use body::MessageQueue;
pub use code::{PopStatus, PullStatus, RequestCode, ResponseCode, SendStatus};
pub use error::ClientApiError;
pub use message::{Message, MessageExt};
