//! The callback executor (spec §2.3): a fixed set of worker tasks that run user callbacks, so
//! that no callback ever runs on a connection's read loop.

use std::sync::{Arc, OnceLock};

use tokio::sync::{Mutex, mpsc};
use tokio_util::task::TaskTracker;
use tracing::Instrument;

type Job = Box<dyn FnOnce() + Send + 'static>;

/// Runs callbacks on `workers` tasks fed by one queue.
///
/// Workers start on the first submission (so an executor can be built outside a runtime) and
/// stop once [`CallbackExecutor::close`] has been called and the queue is drained: a callback
/// submitted before the close always runs. A callback submitted after the close runs on the
/// submitting task, as Java does when its executor rejects work.
#[derive(Clone, Debug)]
pub struct CallbackExecutor {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    workers: usize,
    tx: parking_lot::Mutex<Option<mpsc::UnboundedSender<Job>>>,
    rx: Arc<Mutex<mpsc::UnboundedReceiver<Job>>>,
    started: OnceLock<()>,
    tracker: TaskTracker,
}

impl CallbackExecutor {
    /// An executor with `workers` worker tasks (at least one).
    pub fn new(workers: usize) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            inner: Arc::new(Inner {
                workers: workers.max(1),
                tx: parking_lot::Mutex::new(Some(tx)),
                rx: Arc::new(Mutex::new(rx)),
                started: OnceLock::new(),
                tracker: TaskTracker::new(),
            }),
        }
    }

    /// The default size: the number of CPUs (Java's `clientCallbackExecutorThreads`).
    pub fn default_workers() -> usize {
        std::thread::available_parallelism().map_or(4, usize::from)
    }

    /// Queues `job`. Must be called from within a tokio runtime.
    pub fn submit(&self, job: impl FnOnce() + Send + 'static) {
        self.start();
        let job: Job = Box::new(job);
        let rejected = {
            let tx = self.inner.tx.lock();
            match tx.as_ref() {
                Some(tx) => tx.send(job).err().map(|e| e.0),
                None => Some(job),
            }
        };
        if let Some(job) = rejected {
            job();
        }
    }

    /// Stops accepting work; queued callbacks still run. Await [`CallbackExecutor::wait`] to
    /// know when they have.
    pub fn close(&self) {
        self.inner.tx.lock().take();
        self.inner.tracker.close();
    }

    /// Waits until every worker has finished (after [`CallbackExecutor::close`]).
    pub async fn wait(&self) {
        self.inner.tracker.wait().await;
    }

    fn start(&self) {
        self.inner.started.get_or_init(|| {
            for id in 0..self.inner.workers {
                let rx = Arc::clone(&self.inner.rx);
                self.inner.tracker.spawn(
                    async move {
                        loop {
                            let job = rx.lock().await.recv().await;
                            match job {
                                Some(job) => job(),
                                None => break,
                            }
                        }
                    }
                    .instrument(tracing::debug_span!("callback_worker", id)),
                );
            }
        });
    }
}

impl Default for CallbackExecutor {
    fn default() -> Self {
        Self::new(Self::default_workers())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn queued_callbacks_run_before_close_completes() {
        let exec = CallbackExecutor::new(2);
        let count = Arc::new(AtomicUsize::new(0));
        for _ in 0..100 {
            let count = Arc::clone(&count);
            exec.submit(move || {
                count.fetch_add(1, Ordering::SeqCst);
            });
        }
        exec.close();
        exec.wait().await;
        assert_eq!(count.load(Ordering::SeqCst), 100);
    }

    #[tokio::test]
    async fn submission_after_close_runs_inline() {
        let exec = CallbackExecutor::new(1);
        exec.close();
        let ran = Arc::new(AtomicUsize::new(0));
        let r = Arc::clone(&ran);
        exec.submit(move || {
            r.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(ran.load(Ordering::SeqCst), 1);
    }
}
