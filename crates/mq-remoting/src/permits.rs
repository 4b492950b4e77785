//! Counting permits for in-flight bounds, taken and given back with one atomic operation each
//! while nobody waits.
//!
//! Every request takes a permit (the client's per-style bounds, a server's admission, a
//! producer's in-flight messages and bytes) and gives it back when it is answered. With
//! `tokio::sync::Semaphore` each give-back takes the semaphore's waiter lock, even when no task
//! waits; here it is one atomic add and one load. Waiting is as fair as the semaphore's: while
//! any task waits, nobody takes permits past it, and waiters are served one at a time in the
//! order they came (a FIFO lock decides whose turn it is).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

/// A number of permits, taken with [`Permits::try_take`] or [`Permits::take`] and given back
/// with [`Permits::give`], or held by a [`Permit`] that gives them back when dropped.
#[derive(Debug)]
pub struct Permits {
    free: AtomicUsize,
    /// Tasks in [`Permits::take`] that found too few permits; while any, the fast path is shut.
    waiting: AtomicUsize,
    /// Woken on each give-back while someone waits.
    given: Notify,
    /// Whose turn it is among the waiters (tokio's mutex is fair).
    turn: tokio::sync::Mutex<()>,
}

impl Permits {
    /// `n` permits, all free.
    pub fn new(n: usize) -> Self {
        Self {
            free: AtomicUsize::new(n),
            waiting: AtomicUsize::new(0),
            given: Notify::new(),
            turn: tokio::sync::Mutex::new(()),
        }
    }

    /// The permits free now.
    pub fn available(&self) -> usize {
        self.free.load(Ordering::Acquire)
    }

    /// Takes `n` permits if they are free and nobody waits for permits.
    pub fn try_take(&self, n: usize) -> bool {
        self.waiting.load(Ordering::SeqCst) == 0 && self.take_now(n)
    }

    /// Takes `n` permits, waiting (behind earlier waiters) until they are free. Cancel-safe: a
    /// dropped wait has taken nothing. Waits forever for more permits than there are.
    pub async fn take(&self, n: usize) {
        if self.try_take(n) {
            return;
        }
        let _waiting = Waiting::enter(&self.waiting);
        let _turn = self.turn.lock().await;
        loop {
            // Made before the check: a give-back after it wakes this one even before it is
            // polled.
            let given = self.given.notified();
            if self.take_now(n) {
                return;
            }
            given.await;
        }
    }

    /// Gives `n` permits back.
    pub fn give(&self, n: usize) {
        if n == 0 {
            return;
        }
        self.free.fetch_add(n, Ordering::SeqCst);
        // Sequentially consistent with the waiter's count and check: either the waiter's
        // check sees these permits, or this load sees the waiter and wakes it.
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.given.notify_waiters();
        }
    }

    /// [`Permits::try_take`], held by a guard.
    pub fn try_acquire(self: &Arc<Self>, n: usize) -> Option<Permit> {
        self.try_take(n).then(|| Permit::new(Arc::clone(self), n))
    }

    /// [`Permits::take`], held by a guard.
    pub async fn acquire(self: &Arc<Self>, n: usize) -> Permit {
        self.take(n).await;
        Permit::new(Arc::clone(self), n)
    }

    /// [`Permits::take`], given back when the returned guard is dropped unless it is kept
    /// ([`Taken::keep`]): for a caller that takes from several bounds in turn and may be
    /// cancelled between them.
    pub async fn take_guarded(&self, n: usize) -> Taken<'_> {
        self.take(n).await;
        Taken { permits: self, n }
    }

    fn take_now(&self, n: usize) -> bool {
        let mut free = self.free.load(Ordering::SeqCst);
        loop {
            let Some(left) = free.checked_sub(n) else {
                return false;
            };
            match self
                .free
                .compare_exchange_weak(free, left, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => return true,
                Err(now) => free = now,
            }
        }
    }
}

/// Counts a waiter in, and out again however its wait ends.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn enter(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Permits taken from a borrowed [`Permits`]: given back when dropped, unless kept.
#[derive(Debug)]
#[must_use = "the permits are given back at once when the guard is dropped"]
pub struct Taken<'a> {
    permits: &'a Permits,
    n: usize,
}

impl Taken<'_> {
    /// Keeps the permits taken: the caller now gives them back itself
    /// ([`Permits::give`]). Returns how many they are.
    pub fn keep(self) -> usize {
        let n = self.n;
        std::mem::forget(self);
        n
    }
}

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        self.permits.give(self.n);
    }
}

/// Permits taken, given back when this is dropped.
#[derive(Debug)]
#[must_use = "the permits are given back at once when the guard is dropped"]
pub struct Permit {
    permits: Arc<Permits>,
    n: usize,
}

impl Permit {
    fn new(permits: Arc<Permits>, n: usize) -> Self {
        Self { permits, n }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.permits.give(self.n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A task waiting for `n` permits of `p`.
    fn waiter(p: &Arc<Permits>, n: usize) -> tokio::task::JoinHandle<Permit> {
        let p = Arc::clone(p);
        tokio::spawn(async move { p.acquire(n).await })
    }

    #[test]
    fn permits_are_taken_and_given_back() {
        let p = Arc::new(Permits::new(3));
        let a = p.try_acquire(2).expect("two of three are free");
        assert_eq!(p.available(), 1);
        assert!(p.try_acquire(2).is_none(), "only one is free");
        assert!(p.try_take(1));
        assert_eq!(p.available(), 0);
        drop(a);
        p.give(1);
        assert_eq!(p.available(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_gets_permits_given_back_and_keeps_its_turn() {
        let p = Arc::new(Permits::new(4));
        let held = p.try_acquire(4).expect("all are free");
        // A large request waits first; a small one after it must not take permits past it.
        let big = waiter(&p, 3);
        tokio::task::yield_now().await;
        let small = waiter(&p, 1);
        tokio::task::yield_now().await;
        assert!(!p.try_take(1), "the fast path is shut while a task waits");
        drop(held);
        let big = big.await.expect("the first waiter is served");
        let small = small.await.expect("the second waiter is served");
        assert_eq!(p.available(), 0);
        drop((big, small));
        assert_eq!(p.available(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_wait_takes_nothing_and_lets_the_next_waiter_through() {
        let p = Arc::new(Permits::new(2));
        let held = p.try_acquire(2).expect("all are free");
        let first = waiter(&p, 2);
        tokio::task::yield_now().await;
        let second = waiter(&p, 1);
        tokio::task::yield_now().await;
        first.abort();
        assert!(first.await.is_err(), "the first wait was cancelled");
        drop(held);
        let second = second.await.expect("the second waiter is served");
        assert_eq!(p.available(), 1);
        drop(second);
        assert!(
            p.try_take(2),
            "nobody waits any more: the fast path is open"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_guard_gives_back_unless_kept() {
        let p = Permits::new(3);
        let taken = p.take_guarded(2).await;
        assert_eq!(p.available(), 1);
        drop(taken);
        assert_eq!(p.available(), 3, "dropped: given back");
        assert_eq!(p.take_guarded(2).await.keep(), 2);
        assert_eq!(p.available(), 1, "kept: still taken");
    }

    /// Many tasks on several threads take and give back permits: the bound holds at every
    /// moment and every permit comes back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn the_bound_holds_under_contention() {
        const LIMIT: usize = 5;
        let p = Arc::new(Permits::new(LIMIT));
        let inside = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..32)
            .map(|i| {
                let (p, inside) = (Arc::clone(&p), Arc::clone(&inside));
                tokio::spawn(async move {
                    for _ in 0..200 {
                        let n = 1 + i % 2;
                        let permit = p.acquire(n).await;
                        let now = inside.fetch_add(n, Ordering::SeqCst) + n;
                        assert!(now <= LIMIT, "{now} permits held of {LIMIT}");
                        tokio::task::yield_now().await;
                        inside.fetch_sub(n, Ordering::SeqCst);
                        drop(permit);
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("no task panics");
        }
        assert_eq!(p.available(), LIMIT);
    }
}
