//! The remoting client (spec §2.1–§2.5): one cached connection per address, lazy connect with a
//! connect timeout, the three invoke styles, and name-server selection.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::{Instrument, debug, instrument};

use super::connection::{Connection, ConnectionHandle, Endpoint, PermitCounts, RequestHook};
use super::executor::CallbackExecutor;
use super::namesrv::NameServerList;
use super::pending::RequestGroup;
use super::processor::{Dispatcher, RequestProcessor};
use super::server::ShutdownReport;
use super::tls::ClientTls;
use crate::error::{InvokeKind, RemotingError};
use crate::protocol::{DEFAULT_MAX_FRAME_LEN, FrameCodec, RemotingCommand, SerializeType};

/// Default connect timeout (Java `connectTimeoutMillis`, 3000 ms).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Default permits per invoke style (Java `clientAsyncSemaphoreValue` / `clientOnewaySemaphoreValue`).
pub const DEFAULT_CLIENT_PERMITS: usize = 65_535;

/// Client settings. Build with [`ClientConfig::default`] and the `with_*` setters.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ClientConfig {
    /// Connect timeout. Default [`DEFAULT_CONNECT_TIMEOUT`]. Java: `connectTimeoutMillis`.
    pub connect_timeout: Duration,
    /// Permits for awaited requests. Default [`DEFAULT_CLIENT_PERMITS`].
    pub sync_permits: usize,
    /// Permits for callback requests. Default [`DEFAULT_CLIENT_PERMITS`].
    /// Java: `com.rocketmq.remoting.clientAsyncSemaphoreValue`.
    pub async_permits: usize,
    /// Permits for oneway requests. Default [`DEFAULT_CLIENT_PERMITS`].
    /// Java: `com.rocketmq.remoting.clientOnewaySemaphoreValue`.
    pub oneway_permits: usize,
    /// Callback executor workers. Default: the number of CPUs.
    /// Java: `clientCallbackExecutorThreads`.
    pub callback_workers: usize,
    /// Largest frame accepted or sent, prefix included. Default 16 MiB.
    /// Java: `com.rocketmq.remoting.frameMaxLength`.
    pub max_frame_len: usize,
    /// Serialisation of responses to server-initiated requests; `None` mirrors the request.
    pub response_serialize: Option<SerializeType>,
    /// Rewrites every request just before it is written (e.g. an ACL signer). Default none.
    pub request_hook: Option<Arc<dyn RequestHook>>,
    /// Speak TLS to every server (Java `tls.enable`). Default none: plain TCP.
    pub tls: Option<ClientTls>,
    /// Before each write, let the tasks that are ready now queue their frames too, so that
    /// one write carries them all. Default true. Pays when many tasks each await one
    /// request at a time (fewer, larger writes: less CPU per request, more requests per
    /// second); skipped while more than 128 requests await answers, where writes are full
    /// already. See [`ClientConfig::with_coalesced_writes`].
    pub coalesce_writes: bool,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            sync_permits: DEFAULT_CLIENT_PERMITS,
            async_permits: DEFAULT_CLIENT_PERMITS,
            oneway_permits: DEFAULT_CLIENT_PERMITS,
            callback_workers: CallbackExecutor::default_workers(),
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            response_serialize: None,
            request_hook: None,
            tls: None,
            coalesce_writes: true,
        }
    }
}

impl ClientConfig {
    /// Sets the connect timeout (default 3 s).
    #[must_use]
    pub fn with_connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// Sets the permits of each invoke style (defaults 65535 each).
    #[must_use]
    pub fn with_permits(mut self, sync: usize, async_: usize, oneway: usize) -> Self {
        self.sync_permits = sync;
        self.async_permits = async_;
        self.oneway_permits = oneway;
        self
    }

    /// Sets the number of callback workers (default: CPUs).
    #[must_use]
    pub fn with_callback_workers(mut self, n: usize) -> Self {
        self.callback_workers = n;
        self
    }

    /// Sets the largest frame, prefix included (default 16 MiB).
    #[must_use]
    pub fn with_max_frame_len(mut self, n: usize) -> Self {
        self.max_frame_len = n;
        self
    }

    /// Speaks TLS to every server, as `tls` says (default: plain TCP).
    #[must_use]
    pub fn with_tls(mut self, tls: ClientTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Sets the hook that rewrites every request just before it is written.
    #[must_use]
    pub fn with_request_hook(mut self, hook: Arc<dyn RequestHook>) -> Self {
        self.request_hook = Some(hook);
        self
    }

    /// Coalesces writes (default on): woken by a first frame while little is queued, a
    /// connection's writer lets the tasks that are ready now queue theirs before it writes.
    /// With many tasks that each await one request at a time, writes then carry tens of
    /// frames instead of one or two. Where waiting gains no frame, the writer stops waiting
    /// and tries again only now and then; a lone caller's latency was not hurt by that in our
    /// runs (its p50 was lower, see `docs/performance.md`). While more than 128 requests
    /// await answers (pipelined sends, many in flight per task) it writes at once: there the
    /// wait lasted until every ready task had run, and cost throughput.
    #[must_use]
    pub fn with_coalesced_writes(mut self, on: bool) -> Self {
        self.coalesce_writes = on;
        self
    }
}

/// A RocketMQ remoting client. Cheap to clone; clones share connections and state.
///
/// Responses are matched to requests by (connection generation, opaque). Connections are
/// opened on first use and reopened after they close. Requests the server sends to the client
/// (spec §2.7) go to processors registered with [`RemotingClient::register_processor`].
#[derive(Clone, Debug)]
pub struct RemotingClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: ClientConfig,
    endpoint: Arc<Endpoint>,
    /// Live connection per address.
    cache: Mutex<HashMap<String, Arc<Connection>, foldhash::fast::RandomState>>,
    /// One connect attempt at a time per address.
    connecting: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    name_servers: NameServerList,
}

/// A client dropped without [`RemotingClient::shutdown`] still ends what it started: its
/// connections' tasks hold the endpoint, not the client, and would otherwise keep the
/// connections (and, through the endpoint, the callback threads) for as long as the peers do.
/// Cancelling is enough: the loops end on their own, failing what is pending on them with
/// [`RemotingError::ConnectionClosed`] (a pending call's future borrows the client, so only
/// callbacks can be left waiting, and they hear of it).
impl Drop for Inner {
    fn drop(&mut self) {
        self.endpoint.stop();
    }
}

impl RemotingClient {
    /// A client with `config`. Needs no runtime until the first request.
    pub fn new(config: ClientConfig) -> Self {
        let endpoint = Endpoint::new(
            "client",
            FrameCodec::new(config.max_frame_len),
            PermitCounts {
                sync: config.sync_permits,
                async_: config.async_permits,
                oneway: config.oneway_permits,
            },
            Dispatcher::new(usize::MAX >> 4, config.response_serialize),
            CallbackExecutor::new(config.callback_workers),
            config.request_hook.clone(),
        )
        .with_coalesced_writes(config.coalesce_writes);
        Self {
            inner: Arc::new(Inner {
                config,
                endpoint: Arc::new(endpoint),
                cache: Mutex::new(HashMap::default()),
                connecting: Mutex::new(HashMap::new()),
                name_servers: NameServerList::default(),
            }),
        }
    }

    /// The client's configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// Registers the processor for server-initiated requests with `code`.
    pub fn register_processor(&self, code: i32, processor: Arc<dyn RequestProcessor>) {
        self.inner.endpoint.dispatcher.register(code, processor);
    }

    /// The name-server list used by [`RemotingClient::invoke_name_server`].
    pub fn name_servers(&self) -> &NameServerList {
        &self.inner.name_servers
    }

    /// The executor that runs callbacks.
    pub fn callback_executor(&self) -> &CallbackExecutor {
        &self.inner.endpoint.executor
    }

    /// Number of requests awaiting a response.
    pub fn pending_requests(&self) -> usize {
        self.inner.endpoint.pending.len()
    }

    /// Sends `request` to `addr` and waits for the response. `timeout` covers waiting for a
    /// permit, connecting, writing and the response; a zero timeout (or, for
    /// [`RemotingClient::invoke_until`], a deadline already past) fails with
    /// [`RemotingError::Timeout`] without sending anything.
    ///
    /// # Errors
    /// [`RemotingError::Connect`], [`RemotingError::Timeout`], [`RemotingError::ConnectionClosed`],
    /// [`RemotingError::TooManyRequests`], [`RemotingError::Encode`], [`RemotingError::Shutdown`].
    ///
    /// # Cancel safety
    /// Dropping the future removes the pending entry; a response arriving later is dropped.
    pub fn invoke<'a>(
        &'a self,
        addr: &'a str,
        request: RemotingCommand,
        timeout: Duration,
    ) -> impl Future<Output = Result<RemotingCommand, RemotingError>> + Send + 'a {
        self.invoke_in(addr, request, timeout, RequestGroup::NONE)
    }

    /// [`RemotingClient::invoke`] as a request of `group`: it also ends, with
    /// [`RemotingError::Aborted`], when the group is aborted ([`RemotingClient::abort_group`]),
    /// and is refused when it begins after that.
    ///
    /// # Errors
    /// As for [`RemotingClient::invoke`], and [`RemotingError::Aborted`].
    pub fn invoke_in<'a>(
        &'a self,
        addr: &'a str,
        request: RemotingCommand,
        timeout: Duration,
        group: RequestGroup,
    ) -> impl Future<Output = Result<RemotingCommand, RemotingError>> + Send + 'a {
        self.invoke_within(addr, request, Budget::Timeout(timeout), group)
    }

    /// [`RemotingClient::invoke_in`] within a deadline rather than a timeout: for a caller
    /// that keeps one deadline over several steps, which then needs no clock reading of its
    /// own to turn what is left of it into a timeout.
    ///
    /// # Errors
    /// As for [`RemotingClient::invoke_in`].
    pub fn invoke_until<'a>(
        &'a self,
        addr: &'a str,
        request: RemotingCommand,
        deadline: Instant,
        group: RequestGroup,
    ) -> impl Future<Output = Result<RemotingCommand, RemotingError>> + Send + 'a {
        self.invoke_within(addr, request, Budget::Deadline(deadline), group)
    }

    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn would hold the request twice in its state"
    )]
    fn invoke_within<'a>(
        &'a self,
        addr: &'a str,
        request: RemotingCommand,
        budget: Budget,
        group: RequestGroup,
    ) -> impl Future<Output = Result<RemotingCommand, RemotingError>> + Send + 'a {
        // A block, not an async fn: an async fn keeps its arguments twice in its state (as
        // passed and as bound), and this future sits inside every send's. The request is
        // written before the last wait, which then holds only its key.
        async move {
            let started = Instant::now();
            let (timeout, deadline) = match budget {
                Budget::Timeout(t) => (t, started + t),
                Budget::Deadline(d) => (d.saturating_duration_since(started), d),
            };
            if timeout.is_zero() {
                return Err(out_of_time(&request, addr));
            }
            let (_permit, conn) = self
                .ready(InvokeKind::Sync, addr, timeout, deadline)
                .await?;
            let (key, rx) = conn.begin(request, started, deadline, group)?;
            conn.finish(key, rx).await
        }
    }

    /// Ends every request of `group` now with [`RemotingError::Aborted`], on every
    /// connection, and refuses the group's later requests. Returns how many were ended.
    pub fn abort_group(&self, group: RequestGroup) -> usize {
        self.inner.endpoint.pending.abort_group(group)
    }

    /// Sends `request` without expecting a response (the ONEWAY flag is set). Returns once the
    /// frame is queued for writing; the permit is released when it has been written.
    ///
    /// # Errors
    /// As for [`RemotingClient::invoke`], except that no response is awaited.
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn would hold the request twice in its state"
    )]
    pub fn invoke_oneway<'a>(
        &'a self,
        addr: &'a str,
        request: RemotingCommand,
        timeout: Duration,
    ) -> impl Future<Output = Result<(), RemotingError>> + Send + 'a {
        // A block, as in `invoke`: the request is kept once.
        async move {
            let deadline = Instant::now() + timeout;
            let (permit, conn) = self
                .ready(InvokeKind::Oneway, addr, timeout, deadline)
                .await?;
            conn.send_oneway(request, Some(permit))
        }
    }

    /// Sends `request` and hands the outcome to `callback` on the callback executor, never on
    /// the read loop. Returns once the request is queued for writing — successive calls are
    /// written in call order, so a caller can pipeline — and the callback then runs exactly once,
    /// with the response, a timeout, or the connection's failure.
    ///
    /// # Errors
    /// Failures before the write (no permit, connect failure, encode error, no time left of
    /// `timeout` once ready to write) are returned and the callback is not called.
    pub async fn invoke_with_callback<F>(
        &self,
        addr: &str,
        request: RemotingCommand,
        timeout: Duration,
        callback: F,
    ) -> Result<(), RemotingError>
    where
        F: FnOnce(Result<RemotingCommand, RemotingError>) + Send + 'static,
    {
        let deadline = Instant::now() + timeout;
        let endpoint = &self.inner.endpoint;
        let (permit, conn) = self
            .ready(InvokeKind::Async, addr, timeout, deadline)
            .await?;
        let executor = endpoint.executor.clone();
        let started = Instant::now();
        if started >= deadline {
            return Err(out_of_time(&request, addr));
        }
        // Written now, in call order; only the wait for the response runs in the background.
        let (key, rx) = conn.begin(request, started, deadline, RequestGroup::NONE)?;
        endpoint.work_tasks.spawn(
            async move {
                let reply = conn.finish(key, rx).await;
                executor.submit(move || {
                    callback(reply);
                    // The permit is released after the callback (Java's `finally`).
                    drop(permit);
                });
            }
            .in_current_span(),
        );
        Ok(())
    }

    /// Sends `request` to a name server: the one in use if its connection is alive, otherwise
    /// the next one in rotation that accepts a connection (spec §2.5). A transport failure makes
    /// the next call rotate.
    ///
    /// # Errors
    /// [`RemotingError::NoNameServer`] when the list is empty; otherwise as for
    /// [`RemotingClient::invoke`] (the last connect error when none accepts a connection).
    pub async fn invoke_name_server(
        &self,
        request: RemotingCommand,
        timeout: Duration,
    ) -> Result<RemotingCommand, RemotingError> {
        let deadline = Instant::now() + timeout;
        let addr = self.choose_name_server(deadline).await?;
        let remaining = deadline.saturating_duration_since(Instant::now());
        let result = self.invoke(&addr, request, remaining).await;
        if let Err(e) = &result
            && e.is_transport()
        {
            self.inner.name_servers.forget(&addr);
        }
        result
    }

    async fn choose_name_server(&self, deadline: Instant) -> Result<String, RemotingError> {
        let list = &self.inner.name_servers;
        if let Some(addr) = list.chosen()
            && self.cached(&addr).is_some()
        {
            return Ok(addr);
        }
        let mut last_error = RemotingError::NoNameServer;
        for addr in list.rotation() {
            match self.connection(&addr, deadline).await {
                Ok(_) => {
                    list.choose(&addr);
                    return Ok(addr);
                }
                Err(e) => {
                    debug!(addr = %addr, cause = %e, "name server unreachable; rotating");
                    last_error = e;
                }
            }
        }
        Err(last_error)
    }

    /// The live connection to `addr`, opening one if needed.
    ///
    /// # Errors
    /// [`RemotingError::Connect`] when the connection cannot be made before the connect timeout
    /// or `deadline`, whichever is first; [`RemotingError::Shutdown`] after shutdown.
    pub async fn connect(
        &self,
        addr: &str,
        timeout: Duration,
    ) -> Result<ConnectionHandle, RemotingError> {
        self.connection(addr, Instant::now() + timeout)
            .await
            .map(ConnectionHandle)
    }

    /// Closes the connection to `addr`, if any; its pending requests fail at once.
    pub fn close_connection(&self, addr: &str) {
        if let Some(c) = self.inner.cache.lock().remove(addr) {
            c.close();
        }
    }

    fn cached(&self, addr: &str) -> Option<Arc<Connection>> {
        let mut cache = self.inner.cache.lock();
        match cache.get(addr) {
            Some(c) if !c.is_closed() => Some(Arc::clone(c)),
            Some(_) => {
                cache.remove(addr);
                None
            }
            None => None,
        }
    }

    /// A permit for a request of `kind` (waited for at most `timeout`), then the connection
    /// to `addr` (by `deadline`).
    async fn ready(
        &self,
        kind: InvokeKind,
        addr: &str,
        timeout: Duration,
        deadline: Instant,
    ) -> Result<(crate::permits::Permit, Arc<Connection>), RemotingError> {
        let permit = self.inner.endpoint.acquire(kind, timeout).await?;
        let conn = self.connection(addr, deadline).await?;
        Ok((permit, conn))
    }

    async fn connection(
        &self,
        addr: &str,
        deadline: Instant,
    ) -> Result<Arc<Connection>, RemotingError> {
        if let Some(c) = self.cached(addr) {
            return Ok(c);
        }
        // Connecting is rare: boxed, so that it does not weigh on the future of every call.
        Box::pin(self.open_connection(addr, deadline)).await
    }

    /// Connects to `addr` unless another caller does so first.
    #[instrument(level = "debug", skip(self, deadline))]
    async fn open_connection(
        &self,
        addr: &str,
        deadline: Instant,
    ) -> Result<Arc<Connection>, RemotingError> {
        let endpoint = &self.inner.endpoint;
        if endpoint.token.is_cancelled() {
            return Err(RemotingError::Shutdown);
        }
        let lock = Arc::clone(
            self.inner
                .connecting
                .lock()
                .entry(addr.to_owned())
                .or_default(),
        );
        let connect_error = |source: std::io::Error| RemotingError::Connect {
            addr: addr.to_owned(),
            source,
        };
        let timed_out =
            |what: &str| connect_error(std::io::Error::new(std::io::ErrorKind::TimedOut, what));
        let _guard = tokio::time::timeout_at(deadline, lock.lock())
            .await
            .map_err(|_| timed_out("timed out waiting for another connect attempt"))?;
        // Another caller may have connected while we waited.
        if let Some(c) = self.cached(addr) {
            return Ok(c);
        }
        let connect_deadline = deadline.min(Instant::now() + self.inner.config.connect_timeout);
        let stream = match tokio::time::timeout_at(connect_deadline, TcpStream::connect(addr)).await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(connect_error(e)),
            Err(_) => return Err(timed_out("connect timed out")),
        };
        if endpoint.token.is_cancelled() {
            return Err(RemotingError::Shutdown);
        }
        let conn = match &self.inner.config.tls {
            None => endpoint.attach(stream),
            Some(tls) => {
                let peer = stream.peer_addr().ok();
                let _ = stream.set_nodelay(true);
                let tls_error = |source: std::io::Error| RemotingError::Tls {
                    addr: addr.to_owned(),
                    source,
                };
                let handshake = tls.connect(addr, stream);
                let stream = match tokio::time::timeout_at(connect_deadline, handshake).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => return Err(tls_error(e)),
                    Err(_) => return Err(timed_out("TLS handshake timed out")),
                };
                endpoint.attach_tls(peer, stream)
            }
        };
        debug!(addr, id = conn.generation(), "connected");
        self.inner
            .cache
            .lock()
            .insert(addr.to_owned(), Arc::clone(&conn));
        Ok(conn)
    }

    /// Closes the client now, without waiting: new calls fail with [`RemotingError::Shutdown`],
    /// connections close (their pending requests fail with [`RemotingError::ConnectionClosed`],
    /// and the callbacks of async requests still run with that error). For a drop, where
    /// nothing can be awaited; [`RemotingClient::closed`] waits for the tasks to end.
    pub fn close(&self) {
        self.close_connections();
        // Callbacks of requests still finishing run inline, on the task that completes them.
        self.inner.endpoint.executor.close();
    }

    /// Refuses new calls and closes every connection; their tasks end by themselves.
    fn close_connections(&self) {
        let endpoint = &self.inner.endpoint;
        endpoint.stop();
        self.inner.cache.lock().clear();
        endpoint.io_tasks.close();
        endpoint.work_tasks.close();
    }

    /// Waits until the tasks of a closed (or shut down) client have ended: connection loops,
    /// waits for responses, and queued callbacks.
    pub async fn closed(&self) {
        let endpoint = &self.inner.endpoint;
        endpoint.io_tasks.wait().await;
        endpoint.work_tasks.wait().await;
        endpoint.executor.wait().await;
    }

    /// Shuts the client down: new calls fail with [`RemotingError::Shutdown`], connections
    /// close (their pending requests fail with [`RemotingError::ConnectionClosed`], and the
    /// callbacks of async requests run with that error), queued callbacks run, and background
    /// tasks are awaited up to `grace`.
    pub async fn shutdown(&self, grace: Duration) -> ShutdownReport {
        let endpoint = &self.inner.endpoint;
        let deadline = Instant::now() + grace;
        self.close_connections();
        let io_done = tokio::time::timeout_at(deadline, endpoint.io_tasks.wait())
            .await
            .is_ok();
        let work_done = tokio::time::timeout_at(deadline, endpoint.work_tasks.wait())
            .await
            .is_ok();
        endpoint.executor.close();
        let callbacks_done = tokio::time::timeout_at(deadline, endpoint.executor.wait())
            .await
            .is_ok();
        ShutdownReport {
            unfinished_tasks: endpoint.io_tasks.len() + endpoint.work_tasks.len(),
            completed: io_done && work_done && callbacks_done,
        }
    }
}

/// The error of a request whose caller has no time left when it would be written: it is not
/// sent, as Java's client refuses a request whose time is spent (an answer could not be
/// waited for, and the peer would act on a request the caller was told had failed).
fn out_of_time(request: &RemotingCommand, addr: &str) -> RemotingError {
    RemotingError::Timeout {
        opaque: request.opaque,
        addr: addr.to_owned(),
        elapsed: Duration::ZERO,
    }
}

/// How long a request may take: a timeout from when it starts, or a deadline.
#[derive(Clone, Copy)]
enum Budget {
    Timeout(Duration),
    Deadline(Instant),
}
