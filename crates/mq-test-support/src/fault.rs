//! Fault injection: an [`RpcHook`] that delays, answers, drops or stalls requests by code.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use mq_remoting::{BoxFuture, HookAction, RemotingCommand, RequestContext, RpcHook};
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

/// What to do to a request.
#[derive(Clone, Debug, Eq, PartialEq)]
#[non_exhaustive]
pub enum Fault {
    /// Wait, then process normally.
    Delay(Duration),
    /// Answer with this response code (e.g. SYSTEM_BUSY 2, FLUSH_DISK_TIMEOUT 10) instead of
    /// processing.
    Respond(i32),
    /// Close the connection without answering.
    DropConnection,
    /// Never answer, until [`FaultInjector::clear`] or the connection closes.
    Stall,
}

#[derive(Debug)]
struct Rule {
    fault: Fault,
    remaining: Option<u32>,
}

#[derive(Debug, Default)]
struct Inner {
    rules: Mutex<HashMap<i32, Rule>>,
    hits: Mutex<HashMap<i32, u64>>,
    release: Mutex<CancellationToken>,
}

/// Per-request-code faults for one server. Cheap to clone; install with
/// `Broker::add_rpc_hook`/`RemotingServer::add_rpc_hook` (the cluster builder does).
#[derive(Clone, Debug, Default)]
pub struct FaultInjector {
    inner: Arc<Inner>,
}

impl FaultInjector {
    /// Applies `fault` to every request with `code` until cleared.
    pub fn inject(&self, code: i32, fault: Fault) {
        self.inner.rules.lock().insert(
            code,
            Rule {
                fault,
                remaining: None,
            },
        );
    }

    /// Applies `fault` to the next `times` requests with `code`.
    pub fn inject_times(&self, code: i32, fault: Fault, times: u32) {
        self.inner.rules.lock().insert(
            code,
            Rule {
                fault,
                remaining: Some(times),
            },
        );
    }

    /// Removes every rule and releases stalled requests (they are then processed).
    pub fn clear(&self) {
        self.inner.rules.lock().clear();
        let old = std::mem::take(&mut *self.inner.release.lock());
        old.cancel();
    }

    /// How many requests with `code` a fault was applied to.
    pub fn hits(&self, code: i32) -> u64 {
        self.inner.hits.lock().get(&code).copied().unwrap_or(0)
    }

    fn take(&self, code: i32) -> Option<Fault> {
        let mut rules = self.inner.rules.lock();
        let rule = rules.get_mut(&code)?;
        let fault = rule.fault.clone();
        if let Some(n) = &mut rule.remaining {
            *n -= 1;
            if *n == 0 {
                rules.remove(&code);
            }
        }
        *self.inner.hits.lock().entry(code).or_default() += 1;
        Some(fault)
    }
}

impl RpcHook for FaultInjector {
    fn before_request(
        &self,
        ctx: &RequestContext,
        request: &RemotingCommand,
    ) -> BoxFuture<'static, HookAction> {
        let fault = self.take(request.code);
        let release = self.inner.release.lock().clone();
        let connection = ctx.connection().clone();
        let code = request.code;
        Box::pin(async move {
            match fault {
                None => HookAction::Continue,
                Some(Fault::Delay(d)) => {
                    tokio::time::sleep(d).await;
                    HookAction::Continue
                }
                Some(Fault::Respond(response_code)) => {
                    HookAction::Respond(RemotingCommand::response(
                        response_code,
                        Some(format!("injected fault for request code {code}")),
                    ))
                }
                Some(Fault::DropConnection) => HookAction::CloseConnection,
                Some(Fault::Stall) => {
                    tokio::select! {
                        () = release.cancelled() => HookAction::Continue,
                        () = connection.closed() => HookAction::CloseConnection,
                    }
                }
            }
        })
    }
}
