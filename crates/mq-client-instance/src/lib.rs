//! Layer 3 of 4: the shared RocketMQ client instance.
//!
//! One [`ClientInstance`] per client id (`ip@instance[@unit]`), handed out by the process-wide
//! [`ClientManager`] and shared by every producer and consumer of that id: one connection set,
//! one route cache, one heartbeat. It refreshes routes from the name servers, heartbeats the
//! brokers, drops brokers no route mentions, and routes the requests brokers send (transaction
//! checks, consumer-id changes, request-reply replies) to the member that owns them. Members are seen only through the
//! [`ProducerMember`] and [`ConsumerMember`] traits.
//!
//! May depend on: `mq-remoting`, `mq-client-api`. Must not depend on producers, consumers or
//! servers.
//!
//! # Layout
//! * [`config`] — [`ClientConfig`] and its validation.
//! * [`state`] — [`ServiceState`] and the checked [`StateMachine`].
//! * [`instance`] — [`ClientInstance`], [`ClientManager`], the member traits.
//! * [`error`] — [`InstanceError`].
//!
//! # Example
//! ```no_run
//! # async fn demo() -> Result<(), mq_client_instance::InstanceError> {
//! use mq_client_instance::{ClientConfig, ClientManager};
//!
//! let instance = ClientManager::global().get_or_create(&ClientConfig::new("127.0.0.1:9876"))?;
//! instance.start()?;
//! let route = instance.update_route("TopicTest", std::time::Duration::from_secs(3)).await?;
//! println!("{} queue datas", route.queue_datas.len());
//! # Ok(()) }
//! ```

pub mod config;
pub mod error;
pub mod instance;
mod reply;
pub mod state;

pub use config::{ClientConfig, ConfigError, IntoNameServers};
pub use error::InstanceError;
pub use instance::{
    CLIENT_INNER_PRODUCER, ClientInstance, ClientManager, ConsumerMember, ProducerMember,
};
pub use reply::PendingReply;
pub use state::{ServiceState, StateError, StateMachine};
