//! The remoting server (spec §2.6): an accept loop, a task pair per connection, processors by
//! request code, and a graceful shutdown that stops accepting, drains, then closes.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, warn};

use super::connection::{ConnectionHandle, Endpoint, PermitCounts};
use super::executor::CallbackExecutor;
use super::processor::{Dispatcher, RequestProcessor};
use super::tls::{ServerTls, TlsMode, starts_tls};
use crate::protocol::{DEFAULT_MAX_FRAME_LEN, FrameCodec, SerializeType};

/// Server settings. Build with [`ServerConfig::default`] and the `with_*` setters.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Address to listen on. Default `127.0.0.1:0` (loopback, an ephemeral port).
    pub listen: SocketAddr,
    /// Largest frame accepted or sent, prefix included. Default 16 MiB.
    pub max_frame_len: usize,
    /// Requests processed at once across all connections; beyond it requests are answered
    /// SYSTEM_BUSY (`[OVERLOAD]`). Default 65536.
    pub max_concurrent_requests: usize,
    /// Response serialisation; `None` (default) answers in the request's serialize type.
    pub response_serialize: Option<SerializeType>,
    /// Permits for requests the server sends to clients: awaited, callback, oneway.
    /// Defaults 64 / 64 / 256 (Java `serverAsyncSemaphoreValue` / `serverOnewaySemaphoreValue`).
    pub permits: (usize, usize, usize),
    /// TLS: the certificate, key and mode. Default none: plain TCP only, as before TLS existed
    /// (a TLS client's handshake then fails as an undecodable frame).
    pub tls: Option<ServerTls>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            max_concurrent_requests: 65_536,
            response_serialize: None,
            permits: (64, 64, 256),
            tls: None,
        }
    }
}

impl ServerConfig {
    /// Sets the listen address (default `127.0.0.1:0`).
    #[must_use]
    pub fn with_listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// Sets the largest frame, prefix included (default 16 MiB).
    #[must_use]
    pub fn with_max_frame_len(mut self, n: usize) -> Self {
        self.max_frame_len = n;
        self
    }

    /// Sets how many requests may be processed at once (default 65536).
    #[must_use]
    pub fn with_max_concurrent_requests(mut self, n: usize) -> Self {
        self.max_concurrent_requests = n;
        self
    }

    /// Serves TLS as `tls` says: its mode decides whether plain clients are served too.
    #[must_use]
    pub fn with_tls(mut self, tls: ServerTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Answers every request in `ty` instead of mirroring the request.
    #[must_use]
    pub fn with_response_serialize(mut self, ty: SerializeType) -> Self {
        self.response_serialize = Some(ty);
        self
    }
}

/// What a shutdown achieved.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
#[must_use]
pub struct ShutdownReport {
    /// Whether everything finished within the grace period.
    pub completed: bool,
    /// Tasks still running when the grace period ended (they were told to stop).
    pub unfinished_tasks: usize,
}

/// A running remoting server.
#[derive(Debug)]
pub struct RemotingServer {
    endpoint: Arc<Endpoint>,
    local_addr: SocketAddr,
    accept_token: CancellationToken,
    accept_task: TaskTracker,
}

impl RemotingServer {
    /// Binds `config.listen` and starts accepting connections. Register processors right
    /// after; requests with codes nobody handles are answered REQUEST_CODE_NOT_SUPPORTED.
    ///
    /// # Errors
    /// The bind error.
    pub async fn bind(config: ServerConfig) -> io::Result<Self> {
        let listener = TcpListener::bind(config.listen).await?;
        let local_addr = listener.local_addr()?;
        let endpoint = Arc::new(Endpoint::new(
            "server",
            FrameCodec::new(config.max_frame_len),
            PermitCounts {
                sync: config.permits.0,
                async_: config.permits.1,
                oneway: config.permits.2,
            },
            Dispatcher::new(config.max_concurrent_requests, config.response_serialize),
            CallbackExecutor::new(2),
            None,
        ));
        let accept_token = CancellationToken::new();
        let accept_task = TaskTracker::new();
        accept_task.spawn(
            accept_loop(
                listener,
                Arc::clone(&endpoint),
                config.tls.clone(),
                accept_token.clone(),
            )
            .instrument(tracing::info_span!("server", addr = %local_addr)),
        );
        info!(addr = %local_addr, "remoting server listening");
        Ok(Self {
            endpoint,
            local_addr,
            accept_token,
            accept_task,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Registers the processor for `code`, replacing any earlier one.
    pub fn register_processor(&self, code: i32, processor: Arc<dyn RequestProcessor>) {
        self.endpoint.dispatcher.register(code, processor);
    }

    /// Sets the processor for codes without their own.
    pub fn set_default_processor(&self, processor: Arc<dyn RequestProcessor>) {
        self.endpoint.dispatcher.set_default(processor);
    }

    /// Processes requests with `code` one at a time per connection, in arrival order (other
    /// codes run concurrently). A broker uses it for sends, as Java's single send thread does,
    /// so that pipelined sends on one connection are stored in the order they were written.
    pub fn set_ordered(&self, code: i32) {
        self.endpoint.dispatcher.set_ordered(code);
    }

    /// Adds a hook that sees every request before its processor.
    pub fn add_rpc_hook(&self, hook: Arc<dyn super::processor::RpcHook>) {
        self.endpoint.dispatcher.add_hook(hook);
    }

    /// Handles on the live connections.
    pub fn connections(&self) -> Vec<ConnectionHandle> {
        self.endpoint
            .connections
            .read()
            .values()
            .map(|c| ConnectionHandle(Arc::clone(c)))
            .collect()
    }

    /// Graceful shutdown: stop accepting, stop reading new requests, let requests in progress
    /// finish and their responses be written until `grace` has passed, then close every
    /// connection and abort what is left (those requests get no response; their clients see the
    /// connection close).
    pub async fn shutdown(&self, grace: Duration) -> ShutdownReport {
        let deadline = Instant::now() + grace;
        self.accept_token.cancel();
        self.accept_task.close();
        self.accept_task.wait().await;
        let endpoint = &self.endpoint;
        endpoint.drain.cancel();
        endpoint.work_tasks.close();
        let drained = tokio::time::timeout_at(deadline, endpoint.work_tasks.wait())
            .await
            .is_ok();
        if !drained {
            warn!(
                in_flight = endpoint.work_tasks.len(),
                "requests still in progress at the shutdown deadline; aborting them"
            );
        }
        let unfinished = endpoint.work_tasks.len();
        endpoint.stop();
        endpoint.io_tasks.close();
        // Connection loops stop as soon as they see the token; a short wait lets writers flush.
        let closed = tokio::time::timeout(Duration::from_secs(1), async {
            endpoint.io_tasks.wait().await;
            endpoint.work_tasks.wait().await;
        })
        .await
        .is_ok();
        endpoint.executor.close();
        endpoint.executor.wait().await;
        debug!(drained, closed, "server shut down");
        ShutdownReport {
            completed: drained && closed,
            unfinished_tasks: unfinished,
        }
    }
}

impl RemotingServer {
    /// Stops at once, as a crashed process would: the listener closes (new connections are
    /// refused), every connection closes, requests in progress get no response.
    pub fn abort(&self) {
        self.accept_token.cancel();
        self.endpoint.drain.cancel();
        self.endpoint.stop();
    }
}

impl Drop for RemotingServer {
    fn drop(&mut self) {
        // Only cancellation here; the tasks notice and end on their own.
        self.accept_token.cancel();
        self.endpoint.stop();
    }
}

async fn accept_loop(
    listener: TcpListener,
    endpoint: Arc<Endpoint>,
    tls: Option<ServerTls>,
    token: CancellationToken,
) {
    loop {
        tokio::select! {
            () = token.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    debug!(peer = %peer, "accepted");
                    match &tls {
                        None => {
                            endpoint.attach(stream);
                        }
                        // The handshake runs beside the accept loop: a slow client holds up
                        // no other.
                        Some(tls) => {
                            let (endpoint, tls) = (Arc::clone(&endpoint), tls.clone());
                            let io = endpoint.io_tasks.clone();
                            io.spawn(
                                serve_tls(stream, peer, endpoint, tls)
                                    .instrument(tracing::debug_span!("tls_accept", %peer)),
                            );
                        }
                    }
                }
                Err(e) => {
                    // Typically EMFILE; back off briefly instead of spinning.
                    warn!(cause = %e, "accept failed");
                    tokio::select! {
                        () = token.cancelled() => break,
                        () = tokio::time::sleep(Duration::from_millis(50)) => {}
                    }
                }
            },
        }
    }
}

/// How long an accepted connection may take to show what it speaks and, for TLS, to finish its
/// handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Tells a TLS client from a plain one by its first byte (a TLS handshake record starts with
/// 0x16; a remoting frame with its length's high byte, 0 for any frame under 16 MiB) and serves
/// it as the mode allows; a connection the mode refuses, or that stays silent, is closed.
async fn serve_tls(stream: TcpStream, peer: SocketAddr, endpoint: Arc<Endpoint>, tls: ServerTls) {
    let token = endpoint.token.clone();
    let classify = async { starts_tls(&stream).await.ok().flatten() };
    let is_tls = tokio::select! {
        () = token.cancelled() => return,
        r = tokio::time::timeout(HANDSHAKE_TIMEOUT, classify) => match r {
            Ok(Some(is_tls)) => is_tls,
            Ok(None) => return,
            Err(_) => {
                debug!("silent connection closed");
                return;
            }
        },
    };
    match (is_tls, tls.mode) {
        (false, TlsMode::Disabled | TlsMode::Permissive) => {
            endpoint.attach(stream);
        }
        (false, TlsMode::Enforcing) => {
            debug!("plain connection refused: TLS is enforced");
        }
        (true, TlsMode::Disabled) => {
            debug!("TLS connection refused: TLS is disabled");
        }
        (true, TlsMode::Permissive | TlsMode::Enforcing) => {
            let _ = stream.set_nodelay(true);
            let accept = tls.accept(stream);
            tokio::select! {
                () = token.cancelled() => {}
                r = tokio::time::timeout(HANDSHAKE_TIMEOUT, accept) => match r {
                    Ok(Ok(stream)) => {
                        endpoint.attach_tls(Some(peer), stream);
                    }
                    Ok(Err(e)) => debug!(cause = %e, "TLS handshake failed"),
                    Err(_) => debug!("TLS handshake timed out"),
                },
            }
        }
    }
}
