//! Server on Layers 1–2: an embeddable RocketMQ-compatible name server.
//!
//! Brokers register their topic configs (REGISTER_BROKER, plain or compressed body, CRC
//! checked); clients ask for routes (GET_ROUTEINFO_BY_TOPIC) and cluster membership
//! (GET_BROKER_CLUSTER_INFO). Brokers silent for 120 s, or whose connection closes, are
//! dropped. Routes are answered in standard JSON, which every Java client accepts.
//!
//! May depend on: `mq-remoting`, `mq-client-api`. Must not depend on the client instance,
//! producers, consumers or the broker.
//!
//! # Layout
//! * [`routes`] — [`RouteInfoManager`], the tables and the liveness rules.
//! * [`server`] — [`NameServer`], the processors, scan and connection watches.
//!
//! # Example
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use std::time::Duration;
//! use mq_namesrv::{NameServer, NamesrvConfig};
//!
//! let namesrv = NameServer::start(NamesrvConfig::default()).await?;
//! println!("name server on {}", namesrv.local_addr());
//! let _ = namesrv.shutdown(Duration::from_secs(1)).await;
//! # Ok(()) }
//! ```

pub mod routes;
pub mod server;

pub use routes::{RegisterOutcome, Registration, RouteInfoManager};
pub use server::{NameServer, NamesrvConfig, ORDER_TOPIC_CONFIG};
