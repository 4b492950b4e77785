//! Server on Layers 1–2: an embeddable, durable RocketMQ-compatible broker.
//!
//! A commit log of fixed-size segment files holding §6.5 records with CRCs, consume queues per
//! topic and queue, ASYNC or SYNC (group-commit) flushing, and crash recovery that verifies
//! every CRC and cuts off a torn tail. Processors answer what Java, Go and Node clients send:
//! sends (V1, V2, batch) with TBW102 auto-creation, pulls with long polling, consumer offsets,
//! heartbeats and consumer groups, offset lookups, view and query by key, topic creation,
//! delay levels, retries and the DLQ, transactional half messages with producer checks, and
//! request-reply. Optionally it checks requests against ACL accounts and serves TLS. The
//! broker registers with its name servers on start and every 30 s.
//!
//! May depend on: `mq-remoting`, `mq-client-api`. Must not depend on the client instance,
//! producers, consumers or the name server.
//!
//! # Layout
//! * [`store`] — [`MessageStore`]: commit log, consume queues, flushing, recovery.
//! * [`state`] — topic configs and consumer offsets (persisted atomically), client registry.
//! * [`broker`] — [`Broker`], its configuration and request processors.
//! * [`acl`] — [`Acl`]: accounts in the shape of Java's `plain_acl.yml`, checked per request.
//! * `schedule` — delay levels and consumer send-back (retry topics, DLQ).
//! * `transaction` — half messages, END_TRANSACTION, CHECK_TRANSACTION_STATE.
//!
//! # Example
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use std::time::Duration;
//! use mq_broker::{Broker, BrokerConfig};
//!
//! let broker = Broker::start(
//!     BrokerConfig::new("/tmp/mq-store").with_name_servers(vec!["127.0.0.1:9876".into()]),
//! )
//! .await?;
//! println!("broker on {}", broker.local_addr());
//! let _ = broker.shutdown(Duration::from_secs(5)).await;
//! # Ok(()) }
//! ```

pub mod acl;
pub mod broker;
mod pop;
mod schedule;
pub mod state;
pub mod store;
mod timer;
mod transaction;

pub use acl::{Acl, AclError};
pub use broker::{Broker, BrokerConfig, MAX_MESSAGE_SIZE, default_delay_levels};
pub use store::{FlushMode, MessageStore, QueueWatch, StoreConfig};
