//! The callback executor (spec §2.3): a fixed set of worker threads that run user callbacks, so
//! that no callback ever runs on a connection's read loop, and a callback that blocks never
//! blocks a runtime thread.

use std::sync::{Arc, Mutex, OnceLock, mpsc};

use tokio::runtime::Handle;
use tracing::{debug, warn};

type Job = Box<dyn FnOnce() + Send + 'static>;

/// Runs callbacks on `workers` dedicated threads fed by one queue (Java's callback executor
/// is a thread pool too). Callbacks may block; they run inside the submitting runtime's
/// context, so they may spawn tasks.
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
    tx: parking_lot::Mutex<Option<mpsc::Sender<Job>>>,
    rx: Arc<Mutex<mpsc::Receiver<Job>>>,
    started: OnceLock<()>,
    /// Every worker holds a clone; `wait` ends when the last one (and this one, dropped by
    /// `close`) is gone.
    done_tx: parking_lot::Mutex<Option<tokio::sync::mpsc::Sender<()>>>,
    done_rx: tokio::sync::Mutex<tokio::sync::mpsc::Receiver<()>>,
}

impl CallbackExecutor {
    /// An executor with `workers` worker threads (at least one).
    pub fn new(workers: usize) -> Self {
        let (tx, rx) = mpsc::channel();
        let (done_tx, done_rx) = tokio::sync::mpsc::channel(1);
        Self {
            inner: Arc::new(Inner {
                workers: workers.max(1),
                tx: parking_lot::Mutex::new(Some(tx)),
                rx: Arc::new(Mutex::new(rx)),
                started: OnceLock::new(),
                done_tx: parking_lot::Mutex::new(Some(done_tx)),
                done_rx: tokio::sync::Mutex::new(done_rx),
            }),
        }
    }

    /// The default size: the number of CPUs (Java's `clientCallbackExecutorThreads`).
    pub fn default_workers() -> usize {
        std::thread::available_parallelism().map_or(4, usize::from)
    }

    /// Queues `job`.
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
        self.inner.done_tx.lock().take();
    }

    /// Waits until every worker has finished (after [`CallbackExecutor::close`]).
    pub async fn wait(&self) {
        // Ends with `None` once every sender is dropped; nothing is ever sent.
        let _ = self.inner.done_rx.lock().await.recv().await;
    }

    fn start(&self) {
        self.inner.started.get_or_init(|| {
            let runtime = Handle::try_current().ok();
            let mut running = 0;
            for id in 0..self.inner.workers {
                let Some(done) = self.inner.done_tx.lock().clone() else {
                    // Closed before the first submission: jobs run inline.
                    return;
                };
                let rx = Arc::clone(&self.inner.rx);
                let runtime = runtime.clone();
                let spawned = std::thread::Builder::new()
                    .name(format!("mq-callback-{id}"))
                    .spawn(move || {
                        let _context = runtime.as_ref().map(Handle::enter);
                        loop {
                            // A poisoned lock only means another worker's callback panicked
                            // while it held the queue, which it never does: it takes a job and
                            // lets go before running it.
                            let job = match rx.lock() {
                                Ok(rx) => rx.recv(),
                                Err(poisoned) => poisoned.into_inner().recv(),
                            };
                            let Ok(job) = job else { break };
                            // A panicking callback costs its own outcome, not the worker.
                            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err()
                            {
                                warn!(id, "a callback panicked");
                            }
                        }
                        drop(done);
                        debug!(id, "callback worker stopped");
                    });
                match spawned {
                    Ok(_) => running += 1,
                    Err(e) => warn!(id, cause = %e, "cannot start a callback worker thread"),
                }
            }
            if running == 0 {
                // No thread at all: close the queue, so that `submit` runs every job inline.
                self.inner.tx.lock().take();
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
    async fn a_panicking_callback_does_not_stop_its_worker() {
        let exec = CallbackExecutor::new(1);
        exec.submit(|| panic!("user callback"));
        let (tx, rx) = tokio::sync::oneshot::channel();
        exec.submit(move || {
            let _ = tx.send(());
        });
        rx.await.unwrap();
        exec.close();
        exec.wait().await;
    }

    #[tokio::test]
    async fn callbacks_run_in_the_runtime_context() {
        let exec = CallbackExecutor::new(1);
        let (tx, rx) = tokio::sync::oneshot::channel();
        exec.submit(move || {
            tokio::spawn(async move {
                let _ = tx.send(());
            });
        });
        rx.await.unwrap();
        exec.close();
        exec.wait().await;
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
