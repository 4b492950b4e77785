//! One TCP connection and the endpoint state it shares with its siblings: a read loop that
//! decodes frames and routes them (responses to the pending table, requests to processors), and
//! a writer that coalesces queued frames into as few syscalls as possible.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::FutureExt;
use parking_lot::RwLock;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, trace, warn};

use super::executor::CallbackExecutor;
use super::pending::{PendingGuard, PendingTable, Refused, Reply, RequestGroup, RequestKey};
use super::processor::{Dispatcher, HookAction, RequestContext, RpcHook};
use crate::error::{InvokeKind, RemotingError};
use crate::permits::{Permit, Permits};
use crate::protocol::{FLAG_ONEWAY, FLAG_RESPONSE, FrameCodec, RemotingCommand, sys_code};

/// Bodies at least this large are written straight from their own buffer instead of being
/// copied into the outgoing buffer.
const DIRECT_WRITE_THRESHOLD: usize = 32 * 1024;
/// An outgoing buffer that grew past this is not kept for reuse.
const KEEP_BUFFER_LIMIT: usize = 4 * 1024 * 1024;
const READ_CHUNK: usize = 64 * 1024;
/// A frame at least this large is read up to its end and no further (`read_limit`).
const LARGE_FRAME: usize = 32 * 1024;
/// The most ordered requests handed to a processor as one group.
const ORDERED_GROUP_MAX: usize = 64;

/// Limits of the three invoke styles (spec §2.1).
#[derive(Clone, Copy, Debug)]
pub(crate) struct PermitCounts {
    pub(crate) sync: usize,
    pub(crate) async_: usize,
    pub(crate) oneway: usize,
}

/// State shared by every connection of one client or server.
pub(crate) struct Endpoint {
    pub(crate) codec: FrameCodec,
    opaque: AtomicI32,
    generation: AtomicU64,
    pub(crate) pending: Arc<PendingTable>,
    /// Whether the task that expires pending requests runs (started with the first connection).
    expiring: AtomicBool,
    pub(crate) dispatcher: Dispatcher,
    sync_permits: Arc<Permits>,
    async_permits: Arc<Permits>,
    oneway_permits: Arc<Permits>,
    permits: PermitCounts,
    pub(crate) executor: CallbackExecutor,
    /// Cancelled to stop everything at once (connections close, handlers abort), by
    /// [`Endpoint::stop`].
    pub(crate) token: CancellationToken,
    /// Set by [`Endpoint::stop`] before `token` is cancelled: read without the token's lock.
    stopped: AtomicBool,
    /// Cancelled to stop reading new requests while in-flight ones drain.
    pub(crate) drain: CancellationToken,
    /// Connection read and write loops.
    pub(crate) io_tasks: TaskTracker,
    /// Request handlers and async-invoke waiters.
    pub(crate) work_tasks: TaskTracker,
    /// Live connections by generation, so that shutdown can close them.
    pub(crate) connections: RwLock<HashMap<u64, Arc<Connection>>>,
    pub(crate) role: &'static str,
    /// Rewrites every request this endpoint sends (a client's signer), just before encoding.
    pub(crate) request_hook: Option<Arc<dyn RequestHook>>,
    /// Writers let ready tasks queue their frames before each write
    /// ([`crate::ClientConfig::with_coalesced_writes`]).
    coalesce_writes: bool,
}

/// Rewrites every request a client sends, just before it is encoded: how credentials sign
/// requests (Java's client-side `RPCHook.doBeforeRequest`).
pub trait RequestHook: Send + Sync + fmt::Debug + 'static {
    /// Adjusts `request` (ext fields, typically) before it is written.
    fn before_request(&self, request: &mut RemotingCommand);
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("role", &self.role)
            .field("pending", &self.pending.len())
            .field("connections", &self.connections.read().len())
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// Stops everything at once: every connection counts as closed from here, and `token`'s
    /// waiters wake.
    pub(crate) fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        self.token.cancel();
    }

    pub(crate) fn new(
        role: &'static str,
        codec: FrameCodec,
        permits: PermitCounts,
        dispatcher: Dispatcher,
        executor: CallbackExecutor,
        request_hook: Option<Arc<dyn RequestHook>>,
    ) -> Self {
        Self {
            codec,
            opaque: AtomicI32::new(0),
            generation: AtomicU64::new(1),
            pending: Arc::default(),
            expiring: AtomicBool::new(false),
            dispatcher,
            sync_permits: Arc::new(Permits::new(permits.sync)),
            async_permits: Arc::new(Permits::new(permits.async_)),
            oneway_permits: Arc::new(Permits::new(permits.oneway)),
            permits,
            executor,
            token: CancellationToken::new(),
            stopped: AtomicBool::new(false),
            drain: CancellationToken::new(),
            io_tasks: TaskTracker::new(),
            work_tasks: TaskTracker::new(),
            connections: RwLock::new(HashMap::new()),
            role,
            request_hook,
            coalesce_writes: false,
        }
    }

    /// Sets whether writers coalesce ([`crate::ClientConfig::with_coalesced_writes`]).
    pub(crate) fn with_coalesced_writes(mut self, on: bool) -> Self {
        self.coalesce_writes = on;
        self
    }

    fn next_opaque(&self) -> i32 {
        // Wraps around on overflow, as Java's counter does; negative opaques are legal.
        self.opaque.fetch_add(1, Ordering::Relaxed)
    }

    /// Requests this endpoint's callers have in flight: the permits taken, each held until its
    /// request is answered (or, oneway, written). Read without a lock, unlike the pending
    /// table's count.
    fn in_flight(&self) -> usize {
        let taken = |permits: &Permits, size: usize| size.saturating_sub(permits.available());
        taken(&self.sync_permits, self.permits.sync)
            + taken(&self.async_permits, self.permits.async_)
            + taken(&self.oneway_permits, self.permits.oneway)
    }

    /// Waits up to `timeout` for a permit of `kind`.
    pub(crate) async fn acquire(
        &self,
        kind: InvokeKind,
        timeout: Duration,
    ) -> Result<Permit, RemotingError> {
        let (sem, size) = match kind {
            InvokeKind::Sync => (&self.sync_permits, self.permits.sync),
            InvokeKind::Async => (&self.async_permits, self.permits.async_),
            InvokeKind::Oneway => (&self.oneway_permits, self.permits.oneway),
        };
        let too_many = || RemotingError::TooManyRequests {
            kind,
            permits: size,
        };
        if let Some(p) = sem.try_acquire(1) {
            return Ok(p);
        }
        // Waiting is rare: boxed, so that the timer does not weigh on the future of every call.
        Box::pin(tokio::time::timeout(timeout, sem.acquire(1)))
            .await
            .map_err(|_| too_many())
    }

    /// Starts the read and write loops of a freshly connected or accepted TCP stream.
    pub(crate) fn attach(self: &Arc<Self>, stream: TcpStream) -> Arc<Connection> {
        let peer_socket = stream.peer_addr().ok();
        // TCP_NODELAY as Java sets it; failure only costs latency.
        let _ = stream.set_nodelay(true);
        let (read, write) = stream.into_split();
        self.attach_halves(peer_socket, read, write)
    }

    /// Starts the read and write loops of a TLS stream (its TCP stream was set up by the
    /// caller).
    pub(crate) fn attach_tls<S>(
        self: &Arc<Self>,
        peer_socket: Option<SocketAddr>,
        stream: S,
    ) -> Arc<Connection>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (read, write) = tokio::io::split(stream);
        self.attach_halves(peer_socket, read, write)
    }

    fn attach_halves<R, W>(
        self: &Arc<Self>,
        peer_socket: Option<SocketAddr>,
        read: R,
        write: W,
    ) -> Arc<Connection>
    where
        R: AsyncRead + Send + Unpin + 'static,
        W: AsyncWrite + Send + Unpin + 'static,
    {
        if !self.expiring.swap(true, Ordering::Relaxed) {
            self.start_expiry();
        }
        let generation = self.generation.fetch_add(1, Ordering::Relaxed);
        let peer = peer_socket.map_or_else(|| "unknown".to_owned(), |a| a.to_string());
        let conn = Arc::new(Connection {
            generation,
            peer,
            peer_socket,
            out: parking_lot::Mutex::new(Outgoing::default()),
            out_ready: tokio::sync::Notify::new(),
            closed: self.token.child_token(),
            closed_flag: AtomicBool::new(false),
            endpoint: Arc::clone(self),
            ordered: parking_lot::Mutex::new(None),
        });
        self.connections
            .write()
            .insert(generation, Arc::clone(&conn));
        let span =
            tracing::debug_span!("conn", role = self.role, id = generation, addr = %conn.peer);
        let reader = Arc::clone(&conn);
        self.io_tasks
            .spawn(reader.read_loop(read).instrument(span.clone()));
        let writer = Arc::clone(&conn);
        self.io_tasks
            .spawn(writer.write_loop(write).instrument(span));
        conn
    }

    /// Starts the task that fails requests at their deadlines. It holds the endpoint weakly, to
    /// name the peer of what it fails, and ends with the endpoint's token.
    fn start_expiry(self: &Arc<Self>) {
        let pending = Arc::clone(&self.pending);
        let stop = self.token.clone();
        let endpoint = Arc::downgrade(self);
        let peer = move |generation| {
            endpoint
                .upgrade()
                .and_then(|e| {
                    let connections = e.connections.read();
                    connections.get(&generation).map(|c| c.peer.clone())
                })
                .unwrap_or_else(|| "unknown".to_owned())
        };
        self.io_tasks.spawn(
            async move { pending.expire(stop, peer).await }
                .instrument(tracing::debug_span!("expiry", role = self.role)),
        );
    }
}

/// An endpoint dropped without being stopped still ends its tasks.
impl Drop for Endpoint {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

/// Frames waiting for the writer, encoded in place: senders append under the lock, the writer
/// takes everything at once and writes it with as few syscalls as it can.
#[derive(Default)]
struct Outgoing {
    /// Large bodies (and the bytes queued before each), to write before `buf`.
    segments: Vec<Bytes>,
    /// Encoded frames after the last segment.
    buf: BytesMut,
    /// Released once what is queued is written (oneway permits, spec §2.1).
    permits: Vec<Permit>,
    /// The writer has stopped: nothing more can be sent.
    closed: bool,
}

impl Outgoing {
    fn is_empty(&self) -> bool {
        self.segments.is_empty() && self.buf.is_empty()
    }
}

/// One TCP connection, client side or server side.
pub(crate) struct Connection {
    generation: u64,
    peer: String,
    peer_socket: Option<SocketAddr>,
    out: parking_lot::Mutex<Outgoing>,
    /// Wakes the writer when `out` stops being empty.
    out_ready: tokio::sync::Notify,
    closed: CancellationToken,
    /// Set with `closed` by [`Connection::close`] and [`Connection::shut`], before the pending
    /// table is failed. With the endpoint's `stopped` (`closed` is a child of its token), what
    /// [`Connection::is_closed`] reads on every call, since a token's state is read under a lock.
    closed_flag: AtomicBool,
    endpoint: Arc<Endpoint>,
    /// Queue of the worker that runs this connection's ordered requests one at a time.
    ordered: parking_lot::Mutex<Option<mpsc::UnboundedSender<RemotingCommand>>>,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("generation", &self.generation)
            .field("peer", &self.peer)
            .field("closed", &self.closed.is_cancelled())
            .finish_non_exhaustive()
    }
}

impl Connection {
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    pub(crate) fn peer(&self) -> &str {
        &self.peer
    }

    pub(crate) fn peer_socket(&self) -> Option<SocketAddr> {
        self.peer_socket
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed_flag.load(Ordering::Acquire) || self.endpoint.stopped.load(Ordering::Acquire)
    }

    pub(crate) fn close(&self) {
        self.closed_flag.store(true, Ordering::Release);
        self.closed.cancel();
    }

    pub(crate) async fn closed(&self) {
        self.closed.cancelled().await;
    }

    fn closed_error(&self) -> RemotingError {
        RemotingError::ConnectionClosed {
            addr: self.peer.clone(),
        }
    }

    /// Encodes `cmd` straight into the outgoing buffer and wakes the writer.
    fn send(&self, cmd: &RemotingCommand, permit: Option<Permit>) -> Result<(), RemotingError> {
        let mut out = self.out.lock();
        if out.closed {
            return Err(self.closed_error());
        }
        let was_empty = out.is_empty();
        // On error the buffer is left as it was.
        self.endpoint.codec.encode_head(cmd, &mut out.buf)?;
        if cmd.body.len() >= DIRECT_WRITE_THRESHOLD {
            let before = out.buf.split().freeze();
            out.segments.push(before);
            out.segments.push(cmd.body.clone());
        } else {
            out.buf.extend_from_slice(&cmd.body);
        }
        out.permits.extend(permit);
        drop(out);
        if was_empty {
            self.out_ready.notify_one();
        }
        Ok(())
    }

    /// Sends `cmd` and waits for its response until `deadline`; `started` is when the caller's
    /// wait began (what a timeout reports as elapsed). The entry is registered before the write
    /// and removed on every exit path (response, timeout, cancellation).
    pub(crate) async fn request(
        &self,
        cmd: RemotingCommand,
        started: Instant,
        deadline: Instant,
    ) -> Reply {
        let (key, rx) = self.begin(cmd, started, deadline, RequestGroup::NONE)?;
        self.finish(key, rx).await
    }

    /// Registers a request and queues its frame for the writer, now: frames of successive
    /// calls go out in call order. The entry is removed again if the request cannot be queued;
    /// otherwise it fails with a timeout at `deadline` unless answered first (`started` is when
    /// the caller's wait began, what the timeout reports as elapsed).
    pub(crate) fn begin(
        &self,
        mut cmd: RemotingCommand,
        started: Instant,
        deadline: Instant,
        group: RequestGroup,
    ) -> Result<(RequestKey, oneshot::Receiver<Reply>), RemotingError> {
        cmd.flag &= !(FLAG_RESPONSE | FLAG_ONEWAY);
        if let Some(hook) = &self.endpoint.request_hook {
            hook.before_request(&mut cmd);
        }
        let mut opaque = self.endpoint.next_opaque();
        let key_for = |opaque| RequestKey {
            generation: self.generation,
            opaque,
        };
        let rx = loop {
            match self
                .endpoint
                .pending
                .register(key_for(opaque), started, deadline, group)
            {
                Ok(rx) => break rx,
                Err(Refused::KeyInUse) => opaque = self.endpoint.next_opaque(),
                Err(Refused::Aborted) => return Err(RemotingError::Aborted),
            }
        };
        let key = key_for(opaque);
        let guard = PendingGuard::new(&self.endpoint.pending, key);
        cmd.opaque = opaque;
        // The read loop marks the connection closed before it fails the table, so either it saw
        // our entry or we see the mark here.
        if self.is_closed() {
            return Err(self.closed_error());
        }
        self.send(&cmd, None)?;
        // Queued: from here the entry is the waiter's to remove.
        guard.disarm();
        Ok((key, rx))
    }

    /// Waits for the response of a request started with [`Connection::begin`]: the response,
    /// the timeout at its deadline, or the connection's failure. Dropped before that, it
    /// removes the entry.
    pub(crate) async fn finish(&self, key: RequestKey, rx: oneshot::Receiver<Reply>) -> Reply {
        let guard = PendingGuard::new(&self.endpoint.pending, key);
        let reply = rx.await;
        // Whoever ended the wait (response, failure, expiry) took the entry out first; a
        // sender dropped unsent went with its entry too.
        guard.disarm();
        reply.unwrap_or_else(|_| Err(self.closed_error()))
    }

    /// Sends a oneway request; `permit` is released once it is written.
    pub(crate) fn send_oneway(
        &self,
        mut cmd: RemotingCommand,
        permit: Option<Permit>,
    ) -> Result<(), RemotingError> {
        cmd.flag = (cmd.flag & !FLAG_RESPONSE) | FLAG_ONEWAY;
        if let Some(hook) = &self.endpoint.request_hook {
            hook.before_request(&mut cmd);
        }
        cmd.opaque = self.endpoint.next_opaque();
        if self.is_closed() {
            return Err(self.closed_error());
        }
        self.send(&cmd, permit)
    }

    async fn read_loop<R: AsyncRead + Unpin>(self: Arc<Self>, mut read: R) {
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        // Whether the last frame seen was large: the next one likely is too (pull responses).
        let mut large = false;
        let reason = 'outer: loop {
            loop {
                if let Some(len) = frame_len(&buf) {
                    large = len >= LARGE_FRAME;
                }
                match self.endpoint.codec.decode(&mut buf) {
                    Ok(Some(cmd)) => self.route(cmd),
                    Ok(None) => break,
                    Err(e) => {
                        warn!(cause = %e, "undecodable frame; closing connection");
                        break 'outer "decode error";
                    }
                }
            }
            // A large frame is read up to its end (`read_limit`), and the frame after it
            // starts a buffer with room for it: started in the room left behind the last one,
            // it would be copied out when the buffer grows for it.
            let least = if large && buf.is_empty() {
                READ_CHUNK
            } else {
                4096
            };
            if buf.capacity() - buf.len() < least {
                buf.reserve(READ_CHUNK);
            }
            let limit = read_limit(&buf);
            let mut room = (&mut buf).limit(limit);
            tokio::select! {
                biased;
                () = self.closed.cancelled() => break "closed",
                () = self.endpoint.drain.cancelled() => break "draining",
                r = read.read_buf(&mut room) => match r {
                    Ok(0) => break "eof",
                    Ok(_) => {}
                    Err(e) => {
                        debug!(cause = %e, "read error");
                        break "read error";
                    }
                },
            }
        };
        debug!(reason, "read loop ended");
        // No request arrives after this: the ordered worker runs what is queued, then ends (a
        // drain must not wait on a worker parked on an empty queue).
        drop(self.ordered.lock().take());
        if reason != "draining" {
            self.shut();
        }
    }

    /// Marks the connection closed and fails everything still waiting on it.
    fn shut(&self) {
        self.close();
        let failed = self
            .endpoint
            .pending
            .fail_generation(self.generation, || self.closed_error());
        if failed > 0 {
            debug!(failed, "failed pending requests of closed connection");
        }
        self.endpoint.connections.write().remove(&self.generation);
    }

    fn route(self: &Arc<Self>, cmd: RemotingCommand) {
        if cmd.is_response() {
            let key = RequestKey {
                generation: self.generation,
                opaque: cmd.opaque,
            };
            let code = cmd.code;
            if !self.endpoint.pending.complete(key, cmd) {
                debug!(
                    opaque = key.opaque,
                    code, "late or unknown response dropped"
                );
            }
            return;
        }
        if self.endpoint.dispatcher.is_ordered(cmd.code) {
            self.route_ordered(cmd);
            return;
        }
        let conn = Arc::clone(self);
        let span = tracing::debug_span!("request", opaque = cmd.opaque, code = cmd.code, addr = %self.peer);
        let token = self.endpoint.token.clone();
        self.endpoint.work_tasks.spawn(
            async move {
                tokio::select! {
                    () = token.cancelled() => debug!("handler aborted by shutdown"),
                    () = conn.handle_request(cmd) => {}
                }
            }
            .instrument(span),
        );
    }

    /// Hands an ordered request to this connection's ordered worker (started on first use).
    fn route_ordered(self: &Arc<Self>, cmd: RemotingCommand) {
        let mut slot = self.ordered.lock();
        let tx = slot.get_or_insert_with(|| {
            let (tx, mut rx) = mpsc::unbounded_channel::<RemotingCommand>();
            let conn = Arc::clone(self);
            let token = self.endpoint.token.clone();
            let span = tracing::debug_span!("ordered_requests", addr = %self.peer);
            self.endpoint.work_tasks.spawn(
                async move {
                    loop {
                        let next = tokio::select! {
                            () = token.cancelled() => break,
                            () = conn.closed.cancelled() => break,
                            next = rx.recv() => next,
                        };
                        let Some(cmd) = next else { break };
                        // Requests already queued behind it go with it, as one group, in a
                        // list made once to their number (grown a push at a time, it was
                        // copied five times on the way to 64 requests of 160 bytes).
                        let mut group = Vec::with_capacity((1 + rx.len()).min(ORDERED_GROUP_MAX));
                        group.push(cmd);
                        while group.len() < ORDERED_GROUP_MAX {
                            match rx.try_recv() {
                                Ok(cmd) => group.push(cmd),
                                Err(_) => break,
                            }
                        }
                        tokio::select! {
                            () = token.cancelled() => break,
                            () = Arc::clone(&conn).handle_ordered(group) => {}
                        }
                    }
                }
                .instrument(span),
            );
            tx
        });
        // The worker ends when the read loop drops the sender (after running what is queued),
        // or with the connection or the endpoint. Only the read loop routes requests, so the
        // send cannot fail while it runs.
        let _ = tx.send(cmd);
    }

    /// Runs a group of ordered requests: hooks one by one, then the processor once for each run
    /// of requests it serves, in arrival order.
    async fn handle_ordered(self: Arc<Self>, group: Vec<RemotingCommand>) {
        let dispatcher = &self.endpoint.dispatcher;
        // The hook list is read once for the group; without hooks the group goes on as it
        // came (each request moved through the hooks' future and into a new list cost four
        // copies of it: callgrind, ~110 instructions a message on a broker's send path).
        let hooks = dispatcher.hooks();
        let admitted = if hooks.is_empty() {
            group
        } else {
            let mut admitted = Vec::with_capacity(group.len());
            for request in group {
                if let Some(request) = self.run_hooks(&hooks, request).await {
                    admitted.push(request);
                } else if self.is_closed() {
                    return;
                }
            }
            admitted
        };
        // Consecutive requests of one processor go to it together, each request moved at most
        // once: a run that is all that is left keeps the group's list (a connection's sends
        // mostly are one run: no copy at all), a shorter one is moved into a list of its own.
        // A processor is looked up only where the code changes.
        let mut rest = admitted.into_iter();
        while let Some(first) = rest.as_slice().first() {
            let code = first.code;
            let Some(p) = dispatcher.processor(code) else {
                if let Some(request) = rest.next() {
                    Arc::clone(&self).handle_unhooked(request).await;
                }
                continue;
            };
            let mut end = 1;
            let mut last_code = code;
            while let Some(next) = rest.as_slice().get(end) {
                if next.code != last_code {
                    match dispatcher.processor(next.code) {
                        Some(q) if Arc::ptr_eq(&p, &q) => last_code = next.code,
                        _ => break,
                    }
                }
                end += 1;
            }
            let run: Vec<RemotingCommand> = if end == rest.len() {
                // By value: collecting a list's own iterator keeps its allocation.
                std::mem::take(&mut rest).collect()
            } else {
                rest.by_ref().take(end).collect()
            };
            if p.reject_request() || run.len() == 1 {
                for request in run {
                    Arc::clone(&self).handle_unhooked(request).await;
                }
                continue;
            }
            // One admission slot per request, held while the group runs; the requests past the
            // last slot taken are answered as overloaded. The run goes on as it is (not copied
            // request by request into a new list).
            let mut permits = Vec::with_capacity(run.len());
            while permits.len() < run.len() {
                match dispatcher.try_admit() {
                    Some(permit) => permits.push(permit),
                    None => break,
                }
            }
            let mut go = run;
            for request in go.split_off(permits.len()) {
                self.answer_request(overloaded(), &request);
            }
            let heads: Vec<_> = go
                .iter()
                .map(|r| (r.opaque, r.is_oneway(), r.serialize_type, r.code))
                .collect();
            let ctx = RequestContext::new(ConnectionHandle(Arc::clone(&self)));
            let answers = AssertUnwindSafe(p.process_ordered(ctx, go))
                .catch_unwind()
                .await;
            drop(permits);
            let mut answers = match answers {
                Ok(answers) => answers,
                Err(_) => heads.iter().map(|h| Some(processor_failed(h.3))).collect(),
            };
            // A processor that answers fewer requests than it got leaves the rest unanswered.
            answers.resize_with(heads.len(), || None);
            for ((opaque, oneway, ty, _), response) in heads.into_iter().zip(answers) {
                if let Some(response) = response {
                    self.answer(response, opaque, oneway, ty);
                }
            }
        }
    }

    async fn handle_request(self: Arc<Self>, request: RemotingCommand) {
        let hooks = self.endpoint.dispatcher.hooks();
        let request = if hooks.is_empty() {
            request
        } else {
            match self.run_hooks(&hooks, request).await {
                Some(request) => request,
                None => return,
            }
        };
        self.handle_unhooked(request).await;
    }

    /// Runs `hooks` (the dispatcher's, read once by the caller) on `request`; `None` when a
    /// hook answered it or closed the connection.
    async fn run_hooks(
        self: &Arc<Self>,
        hooks: &[Arc<dyn RpcHook>],
        request: RemotingCommand,
    ) -> Option<RemotingCommand> {
        for hook in hooks {
            let ctx = RequestContext::new(ConnectionHandle(Arc::clone(self)));
            match hook.before_request(&ctx, &request).await {
                HookAction::Continue => {}
                HookAction::CloseConnection => {
                    debug!(code = request.code, "hook closed the connection");
                    self.close();
                    return None;
                }
                HookAction::Respond(response) => {
                    self.answer_request(response, &request);
                    return None;
                }
            }
        }
        Some(request)
    }

    /// Runs the processor of a request that passed the hooks, and answers.
    async fn handle_unhooked(self: Arc<Self>, request: RemotingCommand) {
        let (oneway, opaque, request_type, code) = (
            request.is_oneway(),
            request.opaque,
            request.serialize_type,
            request.code,
        );
        let dispatcher = &self.endpoint.dispatcher;
        let response = match dispatcher.processor(code) {
            None => Some(RemotingCommand::response(
                sys_code::REQUEST_CODE_NOT_SUPPORTED,
                Some(format!(" request type {code} not supported")),
            )),
            Some(p) if p.reject_request() => Some(RemotingCommand::response(
                sys_code::SYSTEM_BUSY,
                Some("[REJECTREQUEST]system busy, start flow control for a while".to_owned()),
            )),
            Some(p) => match dispatcher.try_admit() {
                None => Some(overloaded()),
                Some(_admitted) => {
                    let ctx = RequestContext::new(ConnectionHandle(Arc::clone(&self)));
                    match AssertUnwindSafe(p.process(ctx, request))
                        .catch_unwind()
                        .await
                    {
                        Ok(r) => r,
                        Err(_) => Some(processor_failed(code)),
                    }
                }
            },
        };
        if let Some(response) = response {
            self.answer(response, opaque, oneway, request_type);
        }
    }

    /// [`Connection::answer`] for `request`.
    fn answer_request(&self, response: RemotingCommand, request: &RemotingCommand) {
        self.answer(
            response,
            request.opaque,
            request.is_oneway(),
            request.serialize_type,
        );
    }

    /// Sends `response` to the request `opaque`, unless the request was oneway.
    fn answer(
        &self,
        mut response: RemotingCommand,
        opaque: i32,
        oneway: bool,
        request_type: crate::protocol::SerializeType,
    ) {
        let dispatcher = &self.endpoint.dispatcher;
        if oneway {
            trace!("no response to a oneway request");
            return;
        }
        response.opaque = opaque;
        response.flag = (response.flag | FLAG_RESPONSE) & !FLAG_ONEWAY;
        response.serialize_type = dispatcher.response_serialize.unwrap_or(request_type);
        if let Err(e) = self.send(&response, None) {
            debug!(cause = %e, "response not sent");
        }
    }

    async fn write_loop<W: AsyncWrite + Unpin>(self: Arc<Self>, mut write: W) {
        // Two buffers in turn: senders fill one while the other is written.
        let mut spare = BytesMut::with_capacity(64 * 1024);
        let mut coalescing = Coalescing::new(self.endpoint.coalesce_writes);
        let result: std::io::Result<()> = async {
            loop {
                let last = tokio::select! {
                    biased;
                    () = self.out_ready.notified() => false,
                    // Flush what was queued before the close, then stop.
                    () = self.closed.cancelled() => true,
                };
                if !last && coalescing.wait_now(|| self.endpoint.in_flight()) {
                    let queued = self.out.lock().buf.len();
                    if queued < COALESCE_BELOW {
                        // The runtime runs a woken task next: the writer, woken by the first
                        // frame, would write it alone. Yielding lets the tasks that are
                        // ready now queue theirs first.
                        tokio::task::yield_now().await;
                        coalescing.gained(self.out.lock().buf.len() > queued);
                    }
                }
                let (segments, permits) = {
                    let mut out = self.out.lock();
                    if last {
                        out.closed = true;
                    }
                    std::mem::swap(&mut out.buf, &mut spare);
                    (
                        std::mem::take(&mut out.segments),
                        std::mem::take(&mut out.permits),
                    )
                };
                for segment in &segments {
                    write.write_all(segment).await?;
                }
                if !spare.is_empty() {
                    write.write_all(&spare).await?;
                }
                // TLS holds the last record until flushed; for TCP this is a no-op.
                write.flush().await?;
                if spare.capacity() > KEEP_BUFFER_LIMIT {
                    spare = BytesMut::with_capacity(64 * 1024);
                } else {
                    spare.clear();
                }
                drop(permits);
                if last {
                    return Ok(());
                }
            }
        }
        .await;
        if let Err(e) = result {
            debug!(cause = %e, "write error; closing connection");
        }
        self.out.lock().closed = true;
        let _ = write.shutdown().await;
        self.shut();
    }
}

/// Queued bytes below which a coalescing writer waits for ready tasks before it writes.
const COALESCE_BELOW: usize = 4 * 1024;

/// Requests in flight (on the endpoint) above which a coalescing writer does not wait.
///
/// Its wait (`yield_now`) lasts until its worker has run every other task that is ready. With
/// few requests in flight that is the tasks an answer just woke, whose requests then share a
/// write. With many, the worker always has more to run: writes came seldom and large, and
/// 64 tasks of 16 sends each went 2–15 % slower than with no wait. At 128 and below, 64
/// tasks of 1 or 2 sends each went 14–36 % faster, for a quarter to a third less CPU a
/// message on each side.
const COALESCE_IN_FLIGHT: usize = 128;

/// While waiting gains no frame, a coalescing writer waits once in this many wake-ups.
const COALESCE_PROBE: u32 = 16;

/// When a coalescing writer waits before a write ([`Endpoint::coalesce_writes`]): while at
/// most [`COALESCE_IN_FLIGHT`] requests are in flight, at every wake-up while waiting gains
/// frames, else once in [`COALESCE_PROBE`] wake-ups, to notice when it pays again.
struct Coalescing {
    on: bool,
    pays: bool,
    wakes: u32,
}

impl Coalescing {
    fn new(on: bool) -> Self {
        Self {
            on,
            pays: true,
            wakes: 0,
        }
    }

    /// Whether to wait at this wake-up, with `in_flight` counting the requests in flight
    /// (asked only when the rest says to wait).
    fn wait_now(&mut self, in_flight: impl FnOnce() -> usize) -> bool {
        self.wakes = self.wakes.wrapping_add(1);
        self.on
            && (self.pays || self.wakes.is_multiple_of(COALESCE_PROBE))
            && in_flight() <= COALESCE_IN_FLIGHT
    }

    /// Notes whether the last wait gained frames.
    fn gained(&mut self, more: bool) {
        self.pays = more;
    }
}

/// The answer to a request the endpoint has no room for.
fn overloaded() -> RemotingCommand {
    RemotingCommand::response(
        sys_code::SYSTEM_BUSY,
        Some("[OVERLOAD]system busy, start flow control for a while".to_owned()),
    )
}

/// The answer to a request whose processor panicked.
fn processor_failed(code: i32) -> RemotingCommand {
    warn!(code, "request processor panicked");
    RemotingCommand::response(
        sys_code::SYSTEM_ERROR,
        Some(format!("processor for request code {code} failed")),
    )
}

/// A handle on one live connection, given to processors so that a server can send requests
/// back to the client that connected (e.g. a broker's CHECK_TRANSACTION_STATE).
#[derive(Clone, Debug)]
pub struct ConnectionHandle(pub(crate) Arc<Connection>);

impl ConnectionHandle {
    /// The peer's `ip:port`.
    pub fn peer_addr(&self) -> &str {
        self.0.peer()
    }

    /// The peer's socket address, when known.
    pub fn peer_socket_addr(&self) -> Option<SocketAddr> {
        self.0.peer_socket()
    }

    /// A number identifying this connection within its endpoint (its generation).
    pub fn id(&self) -> u64 {
        self.0.generation()
    }

    /// Whether the connection has closed.
    pub fn is_closed(&self) -> bool {
        self.0.is_closed()
    }

    /// Closes the connection; pending requests on it fail at once.
    pub fn close(&self) {
        self.0.close();
    }

    /// Completes when the connection has closed.
    pub async fn closed(&self) {
        self.0.closed().await;
    }

    /// Sends a request over this connection and waits up to `timeout` for the response.
    ///
    /// # Errors
    /// [`RemotingError::TooManyRequests`], [`RemotingError::Timeout`],
    /// [`RemotingError::ConnectionClosed`] or [`RemotingError::Encode`].
    pub async fn invoke(&self, request: RemotingCommand, timeout: Duration) -> Reply {
        let started = Instant::now();
        let _permit = self.0.endpoint.acquire(InvokeKind::Sync, timeout).await?;
        self.0.request(request, started, started + timeout).await
    }

    /// Sends a oneway request over this connection.
    ///
    /// # Errors
    /// [`RemotingError::TooManyRequests`] when no oneway permit frees up within `timeout`,
    /// [`RemotingError::ConnectionClosed`] or [`RemotingError::Encode`].
    pub async fn invoke_oneway(
        &self,
        request: RemotingCommand,
        timeout: Duration,
    ) -> Result<(), RemotingError> {
        let permit = self.0.endpoint.acquire(InvokeKind::Oneway, timeout).await?;
        self.0.send_oneway(request, Some(permit))
    }
}

/// Runs something once a peer's connection closes, at most one watch per connection: how a
/// server forgets what a peer registered (a name server its brokers, a broker its clients).
#[derive(Debug, Default)]
pub struct ConnectionWatches {
    watched: Arc<parking_lot::Mutex<std::collections::HashSet<u64>>>,
}

impl ConnectionWatches {
    /// Watches `connection` unless it is watched already: when it closes, `on_close` runs with
    /// its id. The watch is a task of `tasks` and ends with `stop` too (without `on_close`).
    pub fn watch<F, Fut>(
        &self,
        connection: ConnectionHandle,
        tasks: &TaskTracker,
        stop: &CancellationToken,
        on_close: F,
    ) where
        F: FnOnce(u64) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let id = connection.id();
        if !self.watched.lock().insert(id) {
            return;
        }
        let (watched, stop) = (Arc::clone(&self.watched), stop.clone());
        tasks.spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                () = connection.closed() => on_close(id).await,
            }
            watched.lock().remove(&id);
        });
    }
}

/// How much the next read may take into `buf`, whose front holds what has come of a frame.
///
/// All of its room, unless that frame is large and not complete: then only the bytes it
/// still lacks. Read further, the start of the next frame would sit behind it, and be copied
/// into a new buffer when the buffer grows for that frame, since the messages cut from the
/// large one (a pull's, say) still hold the old buffer: about every byte of a stream of pull
/// responses was copied once so.
fn read_limit(buf: &BytesMut) -> usize {
    match frame_len(buf) {
        Some(len) if len >= LARGE_FRAME && len > buf.len() => len - buf.len(),
        _ => usize::MAX,
    }
}

/// The length of the frame at the front of `buf`, prefix included, once its prefix is in.
fn frame_len(buf: &[u8]) -> Option<usize> {
    let &[a, b, c, d, ..] = buf else {
        return None;
    };
    Some(u32::from_be_bytes([a, b, c, d]) as usize + 4)
}

#[cfg(test)]
mod tests {
    use bytes::{BufMut, BytesMut};

    use super::{COALESCE_IN_FLIGHT, COALESCE_PROBE, Coalescing, LARGE_FRAME, read_limit};

    /// `len` bytes of a frame of `total` bytes (prefix included).
    fn partial(total: usize, len: usize) -> BytesMut {
        let mut buf = BytesMut::new();
        buf.put_u32(u32::try_from(total - 4).unwrap());
        buf.resize(len, 0);
        buf
    }

    #[test]
    fn a_large_frame_is_read_up_to_its_end_and_no_further() {
        assert_eq!(read_limit(&partial(LARGE_FRAME, 100)), LARGE_FRAME - 100);
        assert_eq!(read_limit(&partial(100_000, 99_999)), 1);
        // Small frames, a complete one, and a prefix not yet in: reads take all the room.
        assert_eq!(read_limit(&partial(LARGE_FRAME - 1, 100)), usize::MAX);
        assert_eq!(read_limit(&partial(LARGE_FRAME, LARGE_FRAME)), usize::MAX);
        assert_eq!(read_limit(&BytesMut::from(&[0u8, 1, 0][..])), usize::MAX);
    }

    #[test]
    fn a_coalescing_writer_waits_only_while_few_requests_await_answers_and_waiting_pays() {
        let few = || COALESCE_IN_FLIGHT;
        let many = || COALESCE_IN_FLIGHT + 1;
        let mut off = Coalescing::new(false);
        assert!(!off.wait_now(few));
        let mut c = Coalescing::new(true);
        assert!(c.wait_now(few));
        // A deep pipeline writes at once.
        assert!(!c.wait_now(many));
        // A wait that gained no frame: the next ones are skipped, but for one in a few.
        c.gained(false);
        let waits = (0..COALESCE_PROBE * 2).filter(|_| c.wait_now(few)).count();
        assert_eq!(waits, 2);
        c.gained(true);
        assert!(c.wait_now(few));
    }
}
