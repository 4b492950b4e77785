//! Transport half of layer 1: TCP connections driving the [`crate::protocol`] codec.
//!
//! A [`RemotingClient`] and a [`RemotingServer`] share one connection driver: a read loop that
//! routes responses to the pending table and requests to processors, and a writer that drains
//! its queue into one buffer per write.

mod client;
mod connection;
mod executor;
mod namesrv;
mod pending;
mod processor;
mod server;
mod tls;

pub use client::{ClientConfig, DEFAULT_CLIENT_PERMITS, DEFAULT_CONNECT_TIMEOUT, RemotingClient};
pub use connection::{ConnectionHandle, ConnectionWatches, RequestHook};
pub use executor::CallbackExecutor;
pub use namesrv::NameServerList;
pub use pending::RequestGroup;
pub use processor::{
    BoxFuture, HookAction, RequestContext, RequestProcessor, RpcHook, processor_fn,
};
pub use server::{RemotingServer, ServerConfig, ShutdownReport};
pub use tls::{ClientTls, ServerTls, TlsError, TlsMode, starts_tls};
