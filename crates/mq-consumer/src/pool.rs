//! The threads that run a push consumer's blocking listener (Java's consume thread pool).
//!
//! Up to `workers` threads of tokio's blocking pool, started as calls come and kept while
//! calls keep coming, each take the next call from one queue. Handing a call to a thread that
//! is running costs a lock; to a waiting one, one wake-up. A call of its own on the blocking
//! pool (`spawn_blocking` for each batch) cost a hand-off to another thread and back for
//! every message: about 2.4 context switches per message, most of a consumed message's CPU.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use mq_client_api::body::MessageModel;
use mq_client_api::{MessageExt, MessageQueue};
use parking_lot::{Condvar, Mutex};
use tokio::sync::OwnedSemaphorePermit;
use tracing::warn;

use crate::core::{Core, ProcessQueue};
use crate::push::{ConsumeContext, ConsumeStatus, Listener, MessageListener, settle_failed, shown};

/// One listener call: a batch of a queue's messages, and the room it takes among the calls
/// in flight (given back when the batch is settled).
pub(crate) struct Call {
    pub(crate) mq: Arc<MessageQueue>,
    pub(crate) pq: Arc<ProcessQueue>,
    pub(crate) batch: Vec<MessageExt>,
    pub(crate) permit: OwnedSemaphorePermit,
}

#[derive(Default)]
struct Queue {
    calls: VecDeque<Call>,
    closed: bool,
    /// Threads running, and how many of them wait for a call.
    threads: usize,
    waiting: usize,
}

#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
}

/// How long a thread with nothing to do stays (tokio keeps its idle blocking threads as
/// long): an idle consumer holds none.
const KEEP_ALIVE: Duration = Duration::from_secs(10);

/// The threads; [`CallPool::close`] (or dropping it) lets them finish the calls queued and
/// end.
pub(crate) struct CallPool {
    shared: Arc<Shared>,
    core: Arc<Core>,
    listener: Arc<dyn MessageListener>,
}

impl CallPool {
    /// A pool calling `listener`, of up to `core.config.workers` threads, started as calls
    /// come and owned by the consumer's task tracker (its shutdown waits for them).
    pub(crate) fn new(core: &Arc<Core>, listener: &Arc<dyn MessageListener>) -> Self {
        Self {
            shared: Arc::default(),
            core: Arc::clone(core),
            listener: Arc::clone(listener),
        }
    }

    /// Queues `call` for the next free thread, starting one when every thread is busy and
    /// there are fewer than `workers`.
    pub(crate) fn submit(&self, call: Call) {
        let start = {
            let mut queue = self.shared.queue.lock();
            queue.calls.push_back(call);
            // More calls queued than threads waiting for one: one more thread, if allowed.
            let start =
                queue.calls.len() > queue.waiting && queue.threads < self.core.config.workers;
            if start {
                queue.threads += 1;
            }
            start
        };
        if start {
            let (shared, core, listener) = (
                Arc::clone(&self.shared),
                Arc::clone(&self.core),
                Arc::clone(&self.listener),
            );
            self.core
                .tasks
                .spawn_blocking(move || work(&shared, &core, &listener));
        } else {
            self.shared.ready.notify_one();
        }
    }

    /// No more calls: the threads finish those queued, then end.
    pub(crate) fn close(&self) {
        self.shared.queue.lock().closed = true;
        self.shared.ready.notify_all();
    }
}

impl Drop for CallPool {
    fn drop(&mut self) {
        self.close();
    }
}

/// A thread's loop: the next call, until the pool is closed and its queue empty, or nothing
/// came for [`KEEP_ALIVE`].
fn work(shared: &Shared, core: &Arc<Core>, listener: &Arc<dyn MessageListener>) {
    loop {
        let call = {
            let mut queue = shared.queue.lock();
            loop {
                if let Some(call) = queue.calls.pop_front() {
                    break call;
                }
                if queue.closed {
                    queue.threads -= 1;
                    return;
                }
                queue.waiting += 1;
                let idle = shared.ready.wait_for(&mut queue, KEEP_ALIVE).timed_out();
                queue.waiting -= 1;
                if idle && queue.calls.is_empty() {
                    queue.threads -= 1;
                    return;
                }
            }
        };
        run(call, core, listener);
    }
}

/// Calls the listener on a batch and settles it: acknowledged when consumed, else handed to
/// the runtime to be sent back to the broker (or consumed again here later).
fn run(call: Call, core: &Arc<Core>, listener: &Arc<dyn MessageListener>) {
    let Call {
        mq,
        pq,
        batch,
        permit,
    } = call;
    if pq.dropped.is_cancelled() || batch.is_empty() {
        return;
    }
    let mut ctx = ConsumeContext {
        queue: MessageQueue::clone(&mq),
        delay_level: 0,
    };
    let restored = shown(core, &batch);
    let msgs = restored.as_deref().unwrap_or(&batch);
    let status = match std::panic::catch_unwind(AssertUnwindSafe(|| {
        listener.consume(msgs, &mut ctx)
    })) {
        Ok(status) => status,
        Err(_) => {
            warn!(queue = %mq, cause = "the listener panicked", "listener failed; reconsuming later");
            ctx.delay_level = 0;
            ConsumeStatus::ReconsumeLater
        }
    };
    if status == ConsumeStatus::Success || core.config.message_model == MessageModel::Broadcasting {
        core.ack(&mq, &pq, &batch);
        return;
    }
    // Sending back is async: on the runtime, whose context this thread of its blocking pool
    // has.
    let (core2, listener) = (Arc::clone(core), Listener::Blocking(Arc::clone(listener)));
    core.tasks.spawn(async move {
        settle_failed(&core2, &listener, &mq, &pq, batch, ctx.delay_level).await;
        drop(permit);
    });
}
