//! Request processors (spec §2.6): code → processor, a default, and admission control.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use parking_lot::RwLock;

use super::connection::ConnectionHandle;
use crate::permits::{Permit, Permits};
use crate::protocol::{RemotingCommand, SerializeType};

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Handles requests of one or more codes.
///
/// Returning `None` sends no response (the right answer to oneway requests such as
/// CHECK_TRANSACTION_STATE). The transport fills in the response's opaque, RESPONSE flag and
/// serialize type, and never answers a oneway request whatever the processor returns. A panic
/// inside the future is caught and answered with SYSTEM_ERROR.
pub trait RequestProcessor: Send + Sync + 'static {
    /// Processes one request.
    fn process(
        &self,
        ctx: RequestContext,
        request: RemotingCommand,
    ) -> BoxFuture<'static, Option<RemotingCommand>>;

    /// Processes ordered requests (see `RemotingServer::set_ordered`) that were already
    /// waiting, back to back, on one connection: one answer per request, in request order.
    ///
    /// The default awaits [`RequestProcessor::process`] for each in turn. A processor can do
    /// better for a group, e.g. a broker appending every message with one write.
    fn process_ordered(
        &self,
        ctx: RequestContext,
        requests: Vec<RemotingCommand>,
    ) -> BoxFuture<'static, Vec<Option<RemotingCommand>>> {
        // Futures are lazy: made now, they run one after the other below.
        let each: Vec<_> = requests
            .into_iter()
            .map(|r| self.process(ctx.clone(), r))
            .collect();
        Box::pin(async move {
            let mut out = Vec::with_capacity(each.len());
            for f in each {
                out.push(f.await);
            }
            out
        })
    }

    /// Whether to refuse work for now; refused requests get SYSTEM_BUSY (Java `rejectRequest`).
    fn reject_request(&self) -> bool {
        false
    }
}

/// What an [`RpcHook`] decides about a request before its processor runs.
#[derive(Debug)]
#[non_exhaustive]
pub enum HookAction {
    /// Go on to the processor.
    Continue,
    /// Answer with this response instead (its opaque and flags are filled in).
    Respond(RemotingCommand),
    /// Close the connection without answering.
    CloseConnection,
}

/// Runs before every request a server (or client) receives, like Java's `RPCHook`
/// `doBeforeRequest`. A hook may delay the request by not completing at once, answer it
/// itself, or close the connection. Used for auditing, access control and fault injection.
pub trait RpcHook: Send + Sync + 'static {
    /// Inspects one request.
    fn before_request(
        &self,
        ctx: &RequestContext,
        request: &RemotingCommand,
    ) -> BoxFuture<'static, HookAction>;
}

/// Builds a [`RequestProcessor`] from an async closure.
pub fn processor_fn<F, Fut>(f: F) -> Arc<dyn RequestProcessor>
where
    F: Fn(RequestContext, RemotingCommand) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Option<RemotingCommand>> + Send + 'static,
{
    struct FnProcessor<F>(F);
    impl<F, Fut> RequestProcessor for FnProcessor<F>
    where
        F: Fn(RequestContext, RemotingCommand) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Option<RemotingCommand>> + Send + 'static,
    {
        fn process(
            &self,
            ctx: RequestContext,
            request: RemotingCommand,
        ) -> BoxFuture<'static, Option<RemotingCommand>> {
            Box::pin((self.0)(ctx, request))
        }
    }
    Arc::new(FnProcessor(f))
}

/// What a processor knows about the request besides the command itself.
#[derive(Clone, Debug)]
pub struct RequestContext {
    connection: ConnectionHandle,
}

impl RequestContext {
    pub(crate) fn new(connection: ConnectionHandle) -> Self {
        Self { connection }
    }

    /// The connection the request arrived on; use it to send requests back to the peer.
    pub fn connection(&self) -> &ConnectionHandle {
        &self.connection
    }

    /// The peer's `ip:port`.
    pub fn peer_addr(&self) -> &str {
        self.connection.peer_addr()
    }
}

/// Routes inbound requests to processors.
pub(crate) struct Dispatcher {
    by_code: RwLock<HashMap<i32, Arc<dyn RequestProcessor>>>,
    default: RwLock<Option<Arc<dyn RequestProcessor>>>,
    admission: Arc<Permits>,
    hooks: RwLock<Vec<Arc<dyn RpcHook>>>,
    ordered: RwLock<std::collections::HashSet<i32>>,
    pub(crate) response_serialize: Option<SerializeType>,
}

impl fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut codes: Vec<_> = self.by_code.read().keys().copied().collect();
        codes.sort_unstable();
        f.debug_struct("Dispatcher")
            .field("codes", &codes)
            .field("has_default", &self.default.read().is_some())
            .finish_non_exhaustive()
    }
}

impl Dispatcher {
    pub(crate) fn new(max_concurrent: usize, response_serialize: Option<SerializeType>) -> Self {
        Self {
            by_code: RwLock::new(HashMap::new()),
            default: RwLock::new(None),
            admission: Arc::new(Permits::new(max_concurrent)),
            hooks: RwLock::new(Vec::new()),
            ordered: RwLock::new(std::collections::HashSet::new()),
            response_serialize,
        }
    }

    pub(crate) fn register(&self, code: i32, p: Arc<dyn RequestProcessor>) {
        self.by_code.write().insert(code, p);
    }

    pub(crate) fn set_default(&self, p: Arc<dyn RequestProcessor>) {
        *self.default.write() = Some(p);
    }

    pub(crate) fn set_ordered(&self, code: i32) {
        self.ordered.write().insert(code);
    }

    pub(crate) fn is_ordered(&self, code: i32) -> bool {
        self.ordered.read().contains(&code)
    }

    pub(crate) fn add_hook(&self, hook: Arc<dyn RpcHook>) {
        self.hooks.write().push(hook);
    }

    pub(crate) fn hooks(&self) -> Vec<Arc<dyn RpcHook>> {
        self.hooks.read().clone()
    }

    pub(crate) fn processor(&self, code: i32) -> Option<Arc<dyn RequestProcessor>> {
        self.by_code
            .read()
            .get(&code)
            .cloned()
            .or_else(|| self.default.read().clone())
    }

    /// A slot for one more concurrent request; `None` when the endpoint is saturated.
    pub(crate) fn try_admit(&self) -> Option<Permit> {
        self.admission.try_acquire(1)
    }
}
