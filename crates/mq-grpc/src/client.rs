//! The client side of `MessagingService`: a [`GrpcSession`] with one endpoint (a RocketMQ 5
//! proxy, or `mq serve --grpc-port`), as RocketMQ 5's clients hold one.
//!
//! A session opens the Telemetry stream, sends the client's settings on it and waits for the
//! server's answer before anything else, as the official clients do (a 5.x proxy looks the
//! client's settings up on later calls). It then keeps the stream open and sends a heartbeat
//! every [`HEARTBEAT_EVERY`] from one task that the session owns: dropping the last clone of the
//! session, or [`GrpcSession::close`], stops it.
//!
//! Every call carries the metadata headers of the contract (`x-mq-client-id`, `x-mq-language`,
//! `x-mq-protocol`, `x-mq-client-version`, `x-mq-request-id`, `x-mq-namespace`) and the
//! `grpc-timeout` of what is left of the caller's deadline, and is bounded by that deadline
//! here too. Errors name the endpoint and the call that did not answer.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use mq_remoting::ClientTls;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::metadata::{AsciiMetadataValue, MetadataMap};
use tonic::transport::{Channel, Endpoint};
use tonic::{Extensions, Request, Streaming};
use tracing::{debug, warn};

use crate::convert::duration;
use crate::v2;
use crate::v2::messaging_service_client::MessagingServiceClient;

/// How often a session sends a heartbeat (the official clients' period).
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(10);

/// Where a session connects and how it names itself.
#[derive(Clone, Debug)]
pub struct GrpcClientConfig {
    /// `host:port` of the proxy (no scheme).
    pub endpoint: String,
    /// Namespace (`x-mq-namespace`); empty for none.
    pub namespace: String,
    /// The client id (`x-mq-client-id`); one per session by default.
    pub client_id: String,
    /// The longest a call may take when the caller gives no tighter deadline.
    pub request_timeout: Duration,
    /// TLS to the proxy (ALPN `h2`); none: plain.
    pub tls: Option<ClientTls>,
    /// The ACL account every call is signed with (`x-mq-date-time` and `authorization`, as
    /// the official clients sign); none: calls are not signed.
    pub credentials: Option<mq_client_api::acl::Credentials>,
}

impl GrpcClientConfig {
    /// A session with `endpoint` (`host:port`), no namespace, a 3 s request timeout and a client
    /// id of this host, process and moment.
    pub fn new(endpoint: impl Into<String>) -> Self {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Self {
            endpoint: endpoint.into(),
            namespace: String::new(),
            client_id: format!(
                "{}@{}@{}@{}",
                host_name(),
                std::process::id(),
                SEQ.fetch_add(1, Ordering::Relaxed),
                now.as_nanos() % 1_000_000_000_000,
            ),
            request_timeout: Duration::from_secs(3),
            tls: None,
            credentials: None,
        }
    }

    /// Signs every call with `credentials`, for a proxy that checks ACL.
    #[must_use]
    pub fn with_credentials(mut self, credentials: mq_client_api::acl::Credentials) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// Connects with TLS by `tls` (the roots trusted, the name verified).
    #[must_use]
    pub fn with_tls(mut self, tls: ClientTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Sets the namespace.
    #[must_use]
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// Sets the request timeout.
    #[must_use]
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// A gRPC call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GrpcError {
    /// The endpoint is not a valid address, or no connection could be made to it.
    #[error("cannot connect to the gRPC endpoint {endpoint}: {source}")]
    Connect {
        /// The endpoint.
        endpoint: String,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
    /// The call did not end within the caller's deadline.
    #[error("{rpc} to {endpoint} got no answer within {after:?}")]
    Timeout {
        /// The endpoint.
        endpoint: String,
        /// The call.
        rpc: &'static str,
        /// How long it was given.
        after: Duration,
    },
    /// The call failed at the gRPC level (transport, or a gRPC status other than OK).
    #[error("{rpc} to {endpoint} failed: {status}")]
    Transport {
        /// The endpoint.
        endpoint: String,
        /// The call.
        rpc: &'static str,
        /// The gRPC status.
        #[source]
        status: Box<tonic::Status>,
    },
    /// The server answered with a RocketMQ status other than OK.
    #[error("{rpc} refused by {endpoint}: {} ({code}) {message}", code_name(*code))]
    Refused {
        /// The endpoint.
        endpoint: String,
        /// The call.
        rpc: &'static str,
        /// The `apache.rocketmq.v2.Code`, as a number.
        code: i32,
        /// The server's message.
        message: String,
    },
    /// The session was closed.
    #[error("the gRPC session with {endpoint} is closed")]
    Closed {
        /// The endpoint.
        endpoint: String,
    },
}

fn code_name(code: i32) -> &'static str {
    v2::Code::try_from(code).map_or("UNKNOWN_CODE", |c| c.as_str_name())
}

impl GrpcError {
    /// The RocketMQ status code of a refusal.
    pub fn code(&self) -> Option<v2::Code> {
        match self {
            Self::Refused { code, .. } => v2::Code::try_from(*code).ok(),
            _ => None,
        }
    }

    /// Whether another attempt may succeed: transport failures, timeouts and the server's
    /// transient codes (too many requests, internal errors, proxy and master timeouts). Bad
    /// requests, forbidden and missing resources are not retried.
    pub fn is_retriable(&self) -> bool {
        match self {
            Self::Connect { .. } | Self::Timeout { .. } | Self::Transport { .. } => true,
            Self::Closed { .. } => false,
            Self::Refused { code, .. } => {
                *code == v2::Code::TooManyRequests as i32
                    || *code == v2::Code::InternalError as i32
                    || *code == v2::Code::InternalServerError as i32
                    || *code == v2::Code::ProxyTimeout as i32
                    || *code == v2::Code::MasterPersistenceTimeout as i32
                    || *code == v2::Code::SlavePersistenceTimeout as i32
                    || *code == v2::Code::HaNotAvailable as i32
            }
        }
    }

    /// Whether the request may have taken effect (a transport failure or timeout after the
    /// request went out); a refusal took none.
    pub fn possibly_applied(&self) -> bool {
        matches!(self, Self::Timeout { .. } | Self::Transport { .. })
    }
}

/// What a producer does when the server asks about a transaction it left undecided
/// (`RecoverOrphanedTransactionCommand` on the Telemetry stream): typically ask the user and
/// answer with [`GrpcSession::end_transaction`]. The session awaits it before reading on.
pub type OrphanHandler = Arc<
    dyn Fn(GrpcSession, v2::RecoverOrphanedTransactionCommand) -> BoxFuture<'static, ()>
        + Send
        + Sync,
>;

/// One client's session with one gRPC endpoint. Clones share it.
#[derive(Clone, Debug)]
pub struct GrpcSession {
    inner: Arc<Inner>,
}

struct Inner {
    config: GrpcClientConfig,
    client: MessagingServiceClient<Channel>,
    settings: v2::Settings,
    /// The server's settings, as last sent on the Telemetry stream.
    server_settings: Mutex<Option<v2::Settings>>,
    requests: AtomicU64,
    /// The headers of every call, made once.
    headers: MetadataMap,
    /// Answers the server's questions about undecided transactions.
    orphans: Option<OrphanHandler>,
    stop: CancellationToken,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("config", &self.config)
            .field("settings", &self.settings)
            .field("answers_orphans", &self.orphans.is_some())
            .finish_non_exhaustive()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl GrpcSession {
    /// Connects to the endpoint, opens the Telemetry stream with `settings` (the client's type,
    /// and its subscription or publishing) and waits for the server's answer, all before
    /// `deadline`.
    ///
    /// # Errors
    /// [`GrpcError::Connect`] when the endpoint cannot be reached, [`GrpcError::Timeout`] when
    /// the server does not answer the settings in time, [`GrpcError::Refused`] when it refuses
    /// them.
    pub async fn connect(
        config: GrpcClientConfig,
        settings: v2::Settings,
        deadline: Instant,
    ) -> Result<Self, GrpcError> {
        Self::connect_with(config, settings, None, deadline).await
    }

    /// As [`GrpcSession::connect`], with `orphans` answering the server's questions about
    /// transactions left undecided (a transactional producer's session).
    ///
    /// # Errors
    /// As for [`GrpcSession::connect`].
    pub async fn connect_with(
        config: GrpcClientConfig,
        mut settings: v2::Settings,
        orphans: Option<OrphanHandler>,
        deadline: Instant,
    ) -> Result<Self, GrpcError> {
        let endpoint = config.endpoint.clone();
        let connect = |source| GrpcError::Connect {
            endpoint: endpoint.clone(),
            source,
        };
        let channel = Endpoint::from_shared(format!("http://{endpoint}"))
            .map_err(connect)?
            .connect_timeout(left(deadline))
            .tcp_nodelay(true);
        let started = Instant::now();
        let connecting = async {
            match config.tls.clone() {
                None => channel.connect().await,
                Some(tls) => {
                    // TLS made here (tonic's own needs its TLS features): each connection to
                    // the one endpoint, whatever the URI says.
                    let to = endpoint.clone();
                    channel
                        .connect_with_connector(tower::service_fn(move |_| {
                            crate::tls::connect(to.clone(), tls.clone())
                        }))
                        .await
                }
            }
        };
        let channel = tokio::time::timeout_at(deadline.into(), connecting)
            .await
            .map_err(|_| GrpcError::Timeout {
                endpoint: endpoint.clone(),
                rpc: "connect",
                after: started.elapsed(),
            })?
            .map_err(connect)?;
        settings.access_point = Some(endpoints_of(&endpoint));
        settings.request_timeout = Some(duration(config.request_timeout));
        settings.user_agent = Some(v2::Ua {
            language: v2::Language::Rust as i32,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            platform: std::env::consts::OS.to_owned(),
            hostname: host_name(),
        });
        let inner = Arc::new(Inner {
            headers: fixed_headers(&config),
            client: MessagingServiceClient::new(channel),
            config,
            settings,
            server_settings: Mutex::new(None),
            requests: AtomicU64::new(0),
            orphans,
            stop: CancellationToken::new(),
        });
        let session = Self { inner };
        let (outbound, inbound) = session.open_telemetry(deadline).await?;
        // The task holds only what it needs: dropping the last session handle cancels it.
        let weak = Arc::downgrade(&session.inner);
        let stop = session.inner.stop.clone();
        tokio::spawn(keep_alive(weak, stop, outbound, inbound));
        Ok(session)
    }

    /// The client id this session announces.
    pub fn client_id(&self) -> &str {
        &self.inner.config.client_id
    }

    /// The endpoint.
    pub fn endpoint(&self) -> &str {
        &self.inner.config.endpoint
    }

    /// The session's configuration.
    pub fn config(&self) -> &GrpcClientConfig {
        &self.inner.config
    }

    /// The settings the server last sent (its answer to ours, then any update).
    pub fn server_settings(&self) -> Option<v2::Settings> {
        self.inner.server_settings.lock().clone()
    }

    /// The endpoint as the contract's `Endpoints`.
    pub fn endpoints(&self) -> v2::Endpoints {
        endpoints_of(&self.inner.config.endpoint)
    }

    /// A resource of this session's namespace.
    pub fn resource(&self, name: &str) -> v2::Resource {
        v2::Resource {
            resource_namespace: self.inner.config.namespace.clone(),
            name: name.to_owned(),
        }
    }

    /// Stops the Telemetry stream and the heartbeats; later calls fail with
    /// [`GrpcError::Closed`].
    pub fn close(&self) {
        self.inner.stop.cancel();
    }

    /// The request of `message` with the contract's metadata and a `grpc-timeout` of what is
    /// left before `deadline`.
    fn request<T>(&self, message: T, deadline: Instant) -> Request<T> {
        call_request(self.metadata(), message, left(deadline))
    }

    /// The metadata of a call: a copy of the session's fixed headers, with the call's own.
    fn metadata(&self) -> MetadataMap {
        let mut md = self.inner.headers.clone();
        let id = self.inner.requests.fetch_add(1, Ordering::Relaxed);
        call_metadata(&mut md, id, self.inner.config.credentials.as_ref());
        md
    }

    /// Runs `call` within `deadline`, mapping its failures.
    async fn call<T, F>(
        &self,
        rpc: &'static str,
        deadline: Instant,
        call: F,
    ) -> Result<T, GrpcError>
    where
        F: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        if self.inner.stop.is_cancelled() {
            return Err(GrpcError::Closed {
                endpoint: self.inner.config.endpoint.clone(),
            });
        }
        let started = Instant::now();
        match tokio::time::timeout_at(deadline.into(), call).await {
            Err(_) => Err(self.timeout(rpc, started)),
            Ok(Err(status)) if status.code() == tonic::Code::DeadlineExceeded => {
                Err(self.timeout(rpc, started))
            }
            Ok(Err(status)) => Err(self.transport(rpc, status)),
            Ok(Ok(r)) => Ok(r.into_inner()),
        }
    }

    /// A unary call: `call` on a client handle and the request of `message`, within
    /// `deadline`; the answer once its RocketMQ status is OK.
    async fn unary<T, R, F, Fut>(
        &self,
        rpc: &'static str,
        message: T,
        deadline: Instant,
        call: F,
    ) -> Result<R, GrpcError>
    where
        R: Answer,
        F: FnOnce(MessagingServiceClient<Channel>, Request<T>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    {
        let client = self.inner.client.clone();
        let r = self
            .call(rpc, deadline, call(client, self.request(message, deadline)))
            .await?;
        self.check(rpc, r.status())?;
        Ok(r)
    }

    fn transport(&self, rpc: &'static str, status: tonic::Status) -> GrpcError {
        GrpcError::Transport {
            endpoint: self.inner.config.endpoint.clone(),
            rpc,
            status: Box::new(status),
        }
    }

    fn timeout(&self, rpc: &'static str, started: Instant) -> GrpcError {
        GrpcError::Timeout {
            endpoint: self.inner.config.endpoint.clone(),
            rpc,
            after: started.elapsed(),
        }
    }

    /// Checks a RocketMQ status (absent reads as OK, as the clients read it).
    fn check(&self, rpc: &'static str, status: Option<&v2::Status>) -> Result<(), GrpcError> {
        match status {
            Some(s) if s.code != v2::Code::Ok as i32 => Err(GrpcError::Refused {
                endpoint: self.inner.config.endpoint.clone(),
                rpc,
                code: s.code,
                message: s.message.clone(),
            }),
            _ => Ok(()),
        }
    }

    async fn open_telemetry(
        &self,
        deadline: Instant,
    ) -> Result<
        (
            mpsc::Sender<v2::TelemetryCommand>,
            Streaming<v2::TelemetryCommand>,
        ),
        GrpcError,
    > {
        let (tx, rx) = mpsc::channel(8);
        let first = v2::TelemetryCommand {
            status: None,
            command: Some(v2::telemetry_command::Command::Settings(
                self.inner.settings.clone(),
            )),
        };
        // The channel has room: the first command cannot wait.
        let _ = tx.try_send(first);
        let outbound =
            futures_util::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|c| (c, rx)) },
            );
        let mut client = self.inner.client.clone();
        // The stream lives as long as the session: no `grpc-timeout`, or a server that keeps
        // it (Apache RocketMQ's proxy) cancels it once the opening deadline passes, and can no
        // longer ask about orphaned transactions. Opening it is bounded by `call`.
        let request = Request::from_parts(self.metadata(), Extensions::default(), outbound);
        let mut inbound = self
            .call("Telemetry", deadline, client.telemetry(request))
            .await?;
        let started = Instant::now();
        loop {
            let next = tokio::time::timeout_at(deadline.into(), inbound.next())
                .await
                .map_err(|_| self.timeout("Telemetry settings", started))?;
            let command = match next {
                Some(Ok(c)) => c,
                Some(Err(status)) => return Err(self.transport("Telemetry", status)),
                None => {
                    return Err(GrpcError::Closed {
                        endpoint: self.inner.config.endpoint.clone(),
                    });
                }
            };
            self.check("Telemetry", command.status.as_ref())?;
            if let Some(v2::telemetry_command::Command::Settings(s)) = command.command {
                *self.inner.server_settings.lock() = Some(s);
                return Ok((tx, inbound));
            }
        }
    }

    /// Sends a heartbeat for `group` (none for a producer).
    ///
    /// # Errors
    /// As for every call: timeout, transport, refusal.
    pub async fn heartbeat(&self, deadline: Instant) -> Result<(), GrpcError> {
        let s = &self.inner.settings;
        let group = match &s.pub_sub {
            Some(v2::settings::PubSub::Subscription(sub)) => sub.group.clone(),
            _ => None,
        };
        let request = v2::HeartbeatRequest {
            group,
            client_type: s.client_type.unwrap_or_default(),
        };
        self.unary("Heartbeat", request, deadline, |mut c, r| async move {
            c.heartbeat(r).await
        })
        .await
        .map(drop)
    }

    /// The queues of `topic`.
    ///
    /// # Errors
    /// As for every call; TOPIC_NOT_FOUND as a refusal.
    pub async fn query_route(
        &self,
        topic: &str,
        deadline: Instant,
    ) -> Result<Vec<v2::MessageQueue>, GrpcError> {
        let request = v2::QueryRouteRequest {
            topic: Some(self.resource(topic)),
            endpoints: Some(self.endpoints()),
        };
        let r = self
            .unary("QueryRoute", request, deadline, |mut c, r| async move {
                c.query_route(r).await
            })
            .await?;
        Ok(r.message_queues)
    }

    /// Sends `messages` in one request; the result entries, one per message.
    ///
    /// # Errors
    /// As for every call; a refusal of the whole request (every entry refused alike) as
    /// [`GrpcError::Refused`].
    pub async fn send(
        &self,
        messages: Vec<v2::Message>,
        deadline: Instant,
    ) -> Result<Vec<v2::SendResultEntry>, GrpcError> {
        let mut client = self.inner.client.clone();
        let request = v2::SendMessageRequest { messages };
        let r = self
            .call(
                "SendMessage",
                deadline,
                client.send_message(self.request(request, deadline)),
            )
            .await?;
        if r.status.as_ref().map(|s| s.code) != Some(v2::Code::MultipleResults as i32) {
            self.check("SendMessage", r.status.as_ref())?;
        }
        Ok(r.entries)
    }

    /// The queues of `topic` that `group` may receive from.
    ///
    /// # Errors
    /// As for every call.
    pub async fn query_assignment(
        &self,
        topic: &str,
        group: &str,
        deadline: Instant,
    ) -> Result<Vec<v2::MessageQueue>, GrpcError> {
        let request = v2::QueryAssignmentRequest {
            topic: Some(self.resource(topic)),
            group: Some(self.resource(group)),
            endpoints: Some(self.endpoints()),
        };
        let r = self
            .unary(
                "QueryAssignment",
                request,
                deadline,
                |mut c, r| async move { c.query_assignment(r).await },
            )
            .await?;
        Ok(r.assignments
            .into_iter()
            .filter_map(|a| a.message_queue)
            .collect())
    }

    /// Receives what `request` asks for: the messages, none when the server had none
    /// (MESSAGE_NOT_FOUND). The deadline must leave room for the long poll.
    ///
    /// # Errors
    /// As for every call; a refusal other than MESSAGE_NOT_FOUND.
    pub async fn receive(
        &self,
        request: v2::ReceiveMessageRequest,
        deadline: Instant,
    ) -> Result<Vec<v2::Message>, GrpcError> {
        let mut client = self.inner.client.clone();
        let started = Instant::now();
        let mut stream = self
            .call(
                "ReceiveMessage",
                deadline,
                client.receive_message(self.request(request, deadline)),
            )
            .await?;
        let mut messages = Vec::new();
        let mut status = None;
        loop {
            let item = tokio::time::timeout_at(deadline.into(), stream.next())
                .await
                .map_err(|_| self.timeout("ReceiveMessage", started))?;
            match item {
                None => break,
                Some(Err(s)) => return Err(self.transport("ReceiveMessage", s)),
                Some(Ok(r)) => match r.content {
                    Some(v2::receive_message_response::Content::Message(m)) => messages.push(m),
                    Some(v2::receive_message_response::Content::Status(s)) => status = Some(s),
                    _ => {}
                },
            }
        }
        match status {
            Some(s) if s.code == v2::Code::MessageNotFound as i32 => Ok(messages),
            s if messages.is_empty() => self.check("ReceiveMessage", s.as_ref()).map(|()| messages),
            // Messages came: they are the consumer's now, whatever the closing status says.
            _ => Ok(messages),
        }
    }

    /// Commits or rolls back the transactional message `message_id` of `topic`, sent under
    /// `transaction_id`; `source` says whether the client decided on its own or was asked.
    ///
    /// # Errors
    /// As for every call; a transaction the server does not know (already decided, or
    /// expired) as a refusal.
    pub async fn end_transaction(
        &self,
        topic: &str,
        message_id: &str,
        transaction_id: &str,
        resolution: v2::TransactionResolution,
        source: v2::TransactionSource,
        deadline: Instant,
    ) -> Result<(), GrpcError> {
        let request = v2::EndTransactionRequest {
            topic: Some(self.resource(topic)),
            message_id: message_id.to_owned(),
            transaction_id: transaction_id.to_owned(),
            resolution: resolution as i32,
            source: source as i32,
            trace_context: String::new(),
        };
        self.unary("EndTransaction", request, deadline, |mut c, r| async move {
            c.end_transaction(r).await
        })
        .await
        .map(drop)
    }

    /// Recalls a timer message of `topic` before it is delivered, by the handle its send
    /// answered with; the message's unique id.
    ///
    /// # Errors
    /// As for every call; a handle the server refuses (invalid, another topic's, or for a time
    /// already past) as a refusal.
    pub async fn recall_message(
        &self,
        topic: &str,
        recall_handle: &str,
        deadline: Instant,
    ) -> Result<String, GrpcError> {
        let request = v2::RecallMessageRequest {
            topic: Some(self.resource(topic)),
            recall_handle: recall_handle.to_owned(),
        };
        let r = self
            .unary("RecallMessage", request, deadline, |mut c, r| async move {
                c.recall_message(r).await
            })
            .await?;
        Ok(r.message_id)
    }

    /// Acknowledges the messages of `entries`.
    ///
    /// # Errors
    /// As for every call; a refused entry (an expired or unknown receipt handle:
    /// INVALID_RECEIPT_HANDLE) as [`GrpcError::Refused`].
    pub async fn ack(
        &self,
        group: &str,
        topic: &str,
        entries: Vec<v2::AckMessageEntry>,
        deadline: Instant,
    ) -> Result<(), GrpcError> {
        let request = v2::AckMessageRequest {
            group: Some(self.resource(group)),
            topic: Some(self.resource(topic)),
            entries,
        };
        let r = self
            .unary("AckMessage", request, deadline, |mut c, r| async move {
                c.ack_message(r).await
            })
            .await?;
        for e in &r.entries {
            self.check("AckMessage", e.status.as_ref())?;
        }
        Ok(())
    }

    /// Makes a received message invisible for `invisible` from now (zero: visible again at
    /// once); the new receipt handle, which replaces the old one.
    ///
    /// # Errors
    /// As for every call; an expired or unknown receipt handle as a refusal.
    pub async fn change_invisible_duration(
        &self,
        group: &str,
        topic: &str,
        message_id: &str,
        receipt_handle: &str,
        invisible: Duration,
        deadline: Instant,
    ) -> Result<String, GrpcError> {
        let request = v2::ChangeInvisibleDurationRequest {
            group: Some(self.resource(group)),
            topic: Some(self.resource(topic)),
            receipt_handle: receipt_handle.to_owned(),
            invisible_duration: Some(duration(invisible)),
            message_id: message_id.to_owned(),
            lite_topic: None,
            suspend: None,
        };
        let r = self
            .unary(
                "ChangeInvisibleDuration",
                request,
                deadline,
                |mut c, r| async move { c.change_invisible_duration(r).await },
            )
            .await?;
        Ok(r.receipt_handle)
    }

    /// Tells the server this client is leaving (`group` for a consumer), then closes the
    /// session.
    ///
    /// # Errors
    /// As for every call; the session is closed either way.
    pub async fn terminate(&self, group: Option<&str>, deadline: Instant) -> Result<(), GrpcError> {
        let request = v2::NotifyClientTerminationRequest {
            group: group.map(|g| self.resource(g)),
        };
        let r = self
            .unary(
                "NotifyClientTermination",
                request,
                deadline,
                |mut c, r| async move { c.notify_client_termination(r).await },
            )
            .await;
        self.close();
        r.map(drop)
    }
}

/// The session's background work: reads the Telemetry stream (settings updates; commands this
/// client does not serve are logged) and sends a heartbeat every [`HEARTBEAT_EVERY`], until the
/// session is closed or dropped, or the server ends the stream.
async fn keep_alive(
    session: std::sync::Weak<Inner>,
    stop: CancellationToken,
    outbound: mpsc::Sender<v2::TelemetryCommand>,
    mut inbound: Streaming<v2::TelemetryCommand>,
) {
    let mut beat = tokio::time::interval(HEARTBEAT_EVERY);
    beat.tick().await;
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = beat.tick() => {
                let Some(inner) = session.upgrade() else { break };
                let s = GrpcSession { inner };
                let deadline = Instant::now() + s.inner.config.request_timeout;
                if let Err(e) = s.heartbeat(deadline).await {
                    debug!(endpoint = %s.endpoint(), error = %e, "gRPC heartbeat failed");
                }
            }
            next = inbound.next() => match next {
                Some(Ok(command)) => {
                    let Some(inner) = session.upgrade() else { break };
                    match command.command {
                        Some(v2::telemetry_command::Command::Settings(s)) => {
                            *inner.server_settings.lock() = Some(s);
                        }
                        Some(v2::telemetry_command::Command::RecoverOrphanedTransactionCommand(c)) => {
                            match inner.orphans.clone() {
                                Some(answer) => {
                                    // Answered before reading on, each within its own
                                    // deadline, and abandoned when the session stops.
                                    let s = GrpcSession { inner };
                                    tokio::select! {
                                        () = stop.cancelled() => break,
                                        () = answer(s, c) => {}
                                    }
                                }
                                None => debug!(endpoint = %inner.config.endpoint, "asked about a transaction by a session that sends none"),
                            }
                        }
                        Some(other) => {
                            debug!(endpoint = %inner.config.endpoint, command = ?other, "telemetry command not served by this client");
                        }
                        None => {}
                    }
                }
                Some(Err(status)) => {
                    if let Some(inner) = session.upgrade() {
                        warn!(endpoint = %inner.config.endpoint, %status, "telemetry stream failed");
                    }
                    break;
                }
                None => break,
            },
        }
    }
    drop(outbound);
}

/// The headers every call of a session carries, made once: each call starts from a copy,
/// rather than checking and hashing each name again.
fn fixed_headers(config: &GrpcClientConfig) -> MetadataMap {
    let mut headers = vec![
        ("x-mq-client-id", config.client_id.as_str()),
        ("x-mq-language", "RUST"),
        ("x-mq-protocol", "v2"),
        ("x-mq-client-version", env!("CARGO_PKG_VERSION")),
    ];
    if !config.namespace.is_empty() {
        headers.push(("x-mq-namespace", config.namespace.as_str()));
    }
    let mut md = MetadataMap::with_capacity(headers.len() + 4);
    for (key, value) in headers {
        // Values made of ids and names; one that is not ASCII is left out rather than failing
        // every call.
        if let Ok(value) = AsciiMetadataValue::try_from(value) {
            md.insert(key, value);
        }
    }
    md
}

/// A unary call's request: `message` with `metadata` and a `grpc-timeout` of `timeout`, sent
/// never indexed (what is left differs on every call).
fn call_request<T>(metadata: MetadataMap, message: T, timeout: Duration) -> Request<T> {
    let mut r = Request::from_parts(metadata, Extensions::default(), message);
    r.set_timeout(timeout);
    if let Some(timeout) = r.metadata_mut().get_mut("grpc-timeout") {
        never_indexed(timeout);
    }
    r
}

/// Adds to `md` the request's id, and its signature when there are `credentials`: each sent
/// never indexed.
fn call_metadata(
    md: &mut MetadataMap,
    id: u64,
    credentials: Option<&mq_client_api::acl::Credentials>,
) {
    // Digits only: always ASCII.
    if let Ok(mut v) = AsciiMetadataValue::try_from(id.to_string()) {
        never_indexed(&mut v);
        md.insert("x-mq-request-id", v);
    }
    if let Some(credentials) = credentials {
        use mq_client_api::acl;
        let now = acl::grpc_date_time(std::time::SystemTime::now());
        let signed = acl::grpc_authorization(credentials, &now);
        // Digits and letters, and an access key that is not ASCII signs nothing: the proxy
        // then answers that no account is named.
        if let (Ok(mut now), Ok(mut signed)) = (
            AsciiMetadataValue::try_from(now),
            AsciiMetadataValue::try_from(signed),
        ) {
            never_indexed(&mut now);
            never_indexed(&mut signed);
            md.insert(acl::GRPC_DATE_TIME, now);
            md.insert(acl::GRPC_AUTHORIZATION, signed);
        }
    }
}

/// Sends `value` as an HPACK literal that is never indexed (RFC 7541 §6.2.3), for a header
/// whose value differs on every call (the request id, the timeout, the signature's time) or is
/// a credential (the signature).
///
/// Indexed, each such value entered the dynamic tables of both ends: every call then compared
/// its value with the ones before it (the table's entries of the same name), and pushed out
/// the headers that do repeat (the client id, language, version), which went out as literals
/// again.
fn never_indexed(value: &mut AsciiMetadataValue) {
    value.set_sensitive(true);
}

/// What is left before `deadline` (at least a millisecond, so a `grpc-timeout` is never zero).
fn left(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1))
}

/// `host:port` as the contract's `Endpoints` (IPv4, or a domain name).
fn endpoints_of(endpoint: &str) -> v2::Endpoints {
    let (host, port) = endpoint.rsplit_once(':').unwrap_or((endpoint, "8081"));
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let scheme = match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => v2::AddressScheme::IPv4,
        Ok(std::net::IpAddr::V6(_)) => v2::AddressScheme::IPv6,
        Err(_) => v2::AddressScheme::DomainName,
    };
    v2::Endpoints {
        scheme: scheme as i32,
        addresses: vec![v2::Address {
            host: host.to_owned(),
            port: port.parse().unwrap_or(8081),
        }],
    }
}

/// An answer that carries a RocketMQ status.
trait Answer {
    fn status(&self) -> Option<&v2::Status>;
}

macro_rules! answers {
    ($($t:ty),*) => {$(
        impl Answer for $t {
            fn status(&self) -> Option<&v2::Status> {
                self.status.as_ref()
            }
        }
    )*};
}

answers!(
    v2::HeartbeatResponse,
    v2::QueryRouteResponse,
    v2::QueryAssignmentResponse,
    v2::AckMessageResponse,
    v2::ChangeInvisibleDurationResponse,
    v2::NotifyClientTerminationResponse,
    v2::EndTransactionResponse,
    v2::RecallMessageResponse
);

#[cfg(test)]
mod tests {
    use super::*;

    /// Values that differ on every call, and the signature, go out never indexed; the headers
    /// that repeat stay indexable, so each call sends them as a table index.
    #[test]
    fn per_call_values_and_the_signature_are_never_indexed() {
        let config = GrpcClientConfig::new("127.0.0.1:1")
            .with_credentials(mq_client_api::acl::Credentials::new("ak", "sk"));
        let mut md = fixed_headers(&config);
        call_metadata(&mut md, 7, config.credentials.as_ref());
        let request = call_request(md, (), Duration::from_secs(3));
        let md = request.metadata();
        let sensitive = |key: &str| md.get(key).map(AsciiMetadataValue::is_sensitive);
        assert_eq!(
            md.get("x-mq-request-id").map(|v| v.as_encoded_bytes()),
            Some(&b"7"[..])
        );
        for key in [
            "x-mq-request-id",
            "grpc-timeout",
            mq_client_api::acl::GRPC_DATE_TIME,
            mq_client_api::acl::GRPC_AUTHORIZATION,
        ] {
            assert_eq!(sensitive(key), Some(true), "{key}");
        }
        assert_eq!(
            md.get("x-mq-client-id").map(|v| v.as_encoded_bytes()),
            Some(config.client_id.as_bytes())
        );
        for key in [
            "x-mq-client-id",
            "x-mq-language",
            "x-mq-protocol",
            "x-mq-client-version",
        ] {
            assert_eq!(sensitive(key), Some(false), "{key}");
        }
    }
}
