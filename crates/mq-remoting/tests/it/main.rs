//! Loopback integration tests of the remoting client and server.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    unreachable_pub
)]

mod client;
mod fuzz_corpus;
mod server;
mod tls;

use std::sync::Arc;

use mq_remoting::{
    ClientConfig, RemotingClient, RemotingCommand, RemotingServer, RequestProcessor, ServerConfig,
    processor_fn, sys_code,
};

/// Request code answered by [`echo`].
pub const ECHO: i32 = 1000;

/// Answers with SUCCESS, the request's ext fields and body.
pub fn echo() -> Arc<dyn RequestProcessor> {
    processor_fn(|_ctx, req: RemotingCommand| async move {
        Some(
            RemotingCommand::response_to(&req, sys_code::SUCCESS, None)
                .with_ext_fields(req.ext_fields.clone())
                .with_body(req.body.clone()),
        )
    })
}

pub async fn echo_server() -> RemotingServer {
    let server = RemotingServer::bind(ServerConfig::default()).await.unwrap();
    server.register_processor(ECHO, echo());
    server
}

pub fn client() -> RemotingClient {
    RemotingClient::new(ClientConfig::default())
}
