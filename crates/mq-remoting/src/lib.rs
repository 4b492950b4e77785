//! Layer 1 of 4: framed RocketMQ remoting transport.
//!
//! Encodes and decodes RocketMQ `RemotingCommand` frames ([`protocol`], sans-IO, no tokio) and
//! runs them over TCP, or TLS with rustls ([`transport`]): a client that correlates responses by
//! (connection generation, opaque), a server that dispatches requests to processors by request
//! code, and a callback executor that keeps user code off the read loops.
//!
//! May depend on: std, bytes, tokio, tokio-util, tracing, thiserror, serde, rustls. Must not depend on
//! any other `mq-*` crate, and knows nothing about topics, queues, producers or brokers.
//!
//! # Layout
//! * [`protocol`]: [`RemotingCommand`], [`LanguageCode`], [`SerializeType`] and the
//!   [`FrameCodec`] for JSON and ROCKETMQ headers; pure functions over byte buffers.
//! * [`transport`]: [`RemotingClient`], [`RemotingServer`], the connection driver with its
//!   pending-request table and coalescing writer, the name-server list, the callback executor,
//!   and TLS ([`ServerTls`], [`ClientTls`], [`TlsMode`]).
//! * [`error`]: [`RemotingError`], [`DecodeError`], [`EncodeError`].
//! * [`permits`]: [`Permits`], the counting bound every request passes (also the producer's
//!   in-flight bounds).
//!
//! # Example
//! ```no_run
//! use std::time::Duration;
//! use mq_remoting::{ClientConfig, RemotingClient, RemotingCommand};
//!
//! # async fn demo() -> Result<(), mq_remoting::RemotingError> {
//! let client = RemotingClient::new(ClientConfig::default());
//! let request = RemotingCommand::request(105).with_ext("topic", "TopicTest");
//! let response = client
//!     .invoke("127.0.0.1:9876", request, Duration::from_secs(3))
//!     .await?;
//! println!("code {} remark {:?}", response.code, response.remark);
//! client.shutdown(Duration::from_secs(1)).await;
//! # Ok(()) }
//! ```

pub mod error;
#[doc(hidden)]
pub mod fuzz_oracle;
pub mod permits;
pub mod protocol;
pub mod transport;

pub use error::{DecodeError, EncodeError, InvokeKind, RemotingError};
pub use permits::{PAIR_MAX_HIGH, PAIR_MAX_LOW, Permit, Permits, Taken};
pub use protocol::{
    ExtFields, ExtFieldsIter, FieldSink, FrameCodec, LanguageCode, RemotingCommand, SerializeType,
    TypedFields, sys_code,
};
pub use transport::{
    BoxFuture, CallbackExecutor, ClientConfig, ClientTls, ConnectionHandle, ConnectionWatches,
    HookAction, NameServerList, RemotingClient, RemotingServer, RequestContext, RequestGroup,
    RequestHook, RequestProcessor, RpcHook, ServerConfig, ServerTls, ShutdownReport, TlsError,
    TlsMode, processor_fn, starts_tls,
};
