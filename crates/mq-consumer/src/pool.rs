//! The threads that run a push consumer's blocking listener (Java's consume thread pool).
//!
//! Up to `workers` threads of tokio's blocking pool, started as calls come and kept while
//! calls keep coming, each take the next call from one queue. Handing a call to a thread that
//! is running costs a lock; to a waiting one, one wake-up, and one thread at a time is woken
//! (see [`Pool::wake`]). A call of its own on the blocking pool (`spawn_blocking` for each
//! batch) cost a hand-off to another thread and back for every message: about 2.4 context
//! switches per message, most of a consumed message's CPU.

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
    /// Waiting threads woken for a call that have not yet looked at the queue.
    notified: usize,
    /// Threads woken or started for a call that have not yet taken one: at most one, except
    /// for a moment.
    searching: usize,
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
    pool: Arc<Pool>,
}

/// What the pool's threads share, and start more threads with.
struct Pool {
    shared: Shared,
    core: Arc<Core>,
    listener: Arc<dyn MessageListener>,
}

impl CallPool {
    /// A pool calling `listener`, of up to `core.config.workers` threads, started as calls
    /// come and owned by the consumer's task tracker (its shutdown waits for them).
    pub(crate) fn new(core: &Arc<Core>, listener: &Arc<dyn MessageListener>) -> Self {
        Self {
            pool: Arc::new(Pool {
                shared: Shared::default(),
                core: Arc::clone(core),
                listener: Arc::clone(listener),
            }),
        }
    }

    /// Queues `call` for the next free thread, waking or starting one unless one is already
    /// on its way to the queue.
    pub(crate) fn submit(&self, call: Call) {
        let start = {
            let mut queue = self.pool.shared.queue.lock();
            queue.calls.push_back(call);
            self.pool.wake(&mut queue)
        };
        if start {
            Pool::start(&self.pool);
        }
    }

    /// No more calls: the threads finish those queued, then end.
    pub(crate) fn close(&self) {
        self.pool.shared.queue.lock().closed = true;
        self.pool.shared.ready.notify_all();
    }
}

impl Drop for CallPool {
    fn drop(&mut self) {
        self.close();
    }
}

impl Pool {
    /// Sends a thread to the queue, which holds a call, unless one is on its way already:
    /// wakes a waiting one, or says to start one (returns `true`) when there is none and fewer
    /// than `workers` run.
    ///
    /// One thread at a time is sent: a thread that takes a call and sees more queued sends
    /// the next (`work`). Calls of a fast listener are then mostly taken by threads that
    /// just finished one, without a wake-up each (a burst of a pull's 32 messages woke up to
    /// 32 threads, most of a consumed message's CPU); those of a slow one still reach
    /// `workers` threads, one wake-up after another.
    fn wake(&self, queue: &mut Queue) -> bool {
        if queue.searching > 0 {
            return false;
        }
        if queue.waiting > queue.notified && self.shared.ready.notify_one() {
            queue.notified += 1;
            queue.searching += 1;
            return false;
        }
        if queue.threads < self.core.config.workers {
            queue.threads += 1;
            queue.searching += 1;
            return true;
        }
        // Every thread is busy: the first to finish takes the call.
        false
    }

    /// Starts a thread, already counted in `threads` and `searching`.
    fn start(pool: &Arc<Self>) {
        let pool2 = Arc::clone(pool);
        pool.core.tasks.spawn_blocking(move || pool2.work());
    }

    /// A thread's loop: the next call, until the pool is closed and its queue empty, or
    /// nothing came for [`KEEP_ALIVE`].
    fn work(self: &Arc<Self>) {
        // Started for a call.
        let mut searching = true;
        let mut last = None;
        let mut idle = false;
        loop {
            let (call, start) = {
                let mut queue = self.shared.queue.lock();
                loop {
                    if let Some(call) = queue.calls.pop_front() {
                        let mut start = false;
                        if searching {
                            searching = false;
                            queue.searching -= 1;
                            if !queue.calls.is_empty() {
                                start = self.wake(&mut queue);
                            }
                        }
                        break (call, start);
                    }
                    if searching {
                        searching = false;
                        queue.searching -= 1;
                    }
                    if queue.closed || idle {
                        queue.threads -= 1;
                        return;
                    }
                    queue.waiting += 1;
                    idle = self
                        .shared
                        .ready
                        .wait_for(&mut queue, KEEP_ALIVE)
                        .timed_out();
                    queue.waiting -= 1;
                    if queue.notified > 0 {
                        // This thread stands for the one woken (which may be another, just
                        // timed out: either goes on looking, and the count stays right).
                        queue.notified -= 1;
                        searching = true;
                    }
                }
            };
            idle = false;
            if start {
                Self::start(self);
            }
            run(call, &self.core, &self.listener, &mut last);
        }
    }
}

/// Calls the listener on a batch and settles it: acknowledged when consumed, else handed to
/// the runtime to be sent back to the broker (or consumed again here later).
///
/// `last` is the thread's context of its last call: it serves again for a call of the same
/// queue (a pull's messages come one call each), without a copy of the queue's names.
fn run(
    call: Call,
    core: &Arc<Core>,
    listener: &Arc<dyn MessageListener>,
    last: &mut Option<ConsumeContext>,
) {
    let Call {
        mq,
        pq,
        batch,
        permit,
    } = call;
    if pq.dropped.is_cancelled() || batch.is_empty() {
        return;
    }
    let ctx = match last {
        Some(ctx) if ctx.queue == *mq => {
            ctx.delay_level = 0;
            ctx
        }
        _ => last.insert(ConsumeContext {
            queue: MessageQueue::clone(&mq),
            delay_level: 0,
        }),
    };
    let restored = shown(core, &batch);
    let msgs = restored.as_deref().unwrap_or(&batch);
    let status = match std::panic::catch_unwind(AssertUnwindSafe(|| listener.consume(msgs, ctx))) {
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
    let delay_level = ctx.delay_level;
    core.tasks.spawn(async move {
        settle_failed(&core2, &listener, &mq, &pq, batch, delay_level).await;
        drop(permit);
    });
}
