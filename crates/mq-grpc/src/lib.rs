//! Protocol crate on Layers 1–2: RocketMQ 5's gRPC protocol
//! (`apache.rocketmq.v2.MessagingService`).
//!
//! * [`v2`] — the contract as prost messages with the tonic client and server, generated at
//!   build time from `proto/` (written from the published contract) by protox and
//!   tonic-prost-build.
//! * [`proxy`] — [`GrpcProxy`]: the service in front of a remoting cluster, as Apache
//!   RocketMQ's proxy serves it, so that RocketMQ 5's gRPC clients reach `mq serve`.
//! * [`client`] — [`GrpcSession`]: a client's session with a proxy (settings on the
//!   Telemetry stream, heartbeats, the calls), for the producer's gRPC transport and the
//!   simple consumer.
//! * [`convert`] — statuses, resources and messages between the two protocols.
//!
//! May depend on: `mq-remoting`, `mq-client-api`.

pub mod client;
pub mod codec;
pub mod convert;
pub mod fuzz_oracle;
mod offset;
mod pop;
pub mod proxy;
mod tls;
pub mod transaction;

pub use client::{GrpcClientConfig, GrpcError, GrpcSession, OrphanHandler};
pub use proxy::{GrpcProxy, GrpcProxyConfig};

/// The generated contract: messages, enums, `messaging_service_client` and
/// `messaging_service_server`.
#[allow(
    missing_docs,
    unreachable_pub,
    clippy::all,
    clippy::pedantic,
    clippy::nursery,
    unused_qualifications,
    elided_lifetimes_in_paths,
    missing_debug_implementations
)]
pub mod v2 {
    tonic::include_proto!("apache.rocketmq.v2");
}
