//! Counting permits for in-flight bounds, taken and given back with one atomic operation each
//! while nobody waits.
//!
//! Every request takes a permit (the client's per-style bounds, a server's admission, a
//! producer's in-flight messages and bytes) and gives it back when it is answered. With
//! `tokio::sync::Semaphore` each give-back takes the semaphore's waiter lock, even when no task
//! waits; here it is one atomic add and one load. Waiting is as fair as the semaphore's: while
//! any task waits, nobody takes permits past it, and waiters are served one at a time in the
//! order they came (a FIFO lock decides whose turn it is).
//!
//! A [`Permits::pair`] keeps two bounds that are taken and given back together (a producer's
//! messages and bytes in flight) in the same word: one atomic operation serves both, so a send
//! writes one cache line where two counts would have it write two, each moving between cores
//! when two threads send.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tokio::sync::Notify;

/// Bits of the first bound of a [`Permits::pair`]: up to 16 777 215 permits.
const PAIR_LOW_BITS: u32 = 24;

/// The largest first bound of a [`Permits::pair`].
pub const PAIR_MAX_LOW: usize = (1 << PAIR_LOW_BITS) - 1;

/// The largest second bound of a [`Permits::pair`]: 2^40 - 1 (a terabyte, counted in bytes;
/// on a 32-bit target, the largest `usize`, which the cast keeps).
pub const PAIR_MAX_HIGH: usize = (u64::MAX >> PAIR_LOW_BITS) as usize;

/// A number of permits, taken with [`Permits::try_take`] or [`Permits::take`] and given back
/// with [`Permits::give`], or held by a [`Permit`] that gives them back when dropped; or two
/// such numbers taken and given back together ([`Permits::pair`]).
#[derive(Debug)]
pub struct Permits {
    /// The permits free: one count, or a pair's two, the first in the low [`Permits::split`]
    /// bits.
    free: AtomicU64,
    /// Bits of the first count of a pair; 0 for one count.
    split: u32,
    /// `free` when every permit is free.
    all: u64,
    /// Tasks in [`Permits::take`] that found too few permits; while any, the fast path is shut.
    waiting: AtomicUsize,
    /// Woken on each give-back while someone waits.
    given: Notify,
    /// Whose turn it is among the waiters (tokio's mutex is fair).
    turn: tokio::sync::Mutex<()>,
}

/// A count as a word of permits (a `usize` fits a `u64` on every target Rust supports here).
fn word(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

impl Permits {
    /// `n` permits, all free.
    pub fn new(n: usize) -> Self {
        Self::with_word(word(n), 0)
    }

    /// Two bounds, `low` and `high` permits, taken and given back together
    /// ([`Permits::try_take_pair`], [`Permits::take_pair`], [`Permits::give_pair`]); the
    /// single-count methods must not be used on them. Bounds and amounts above
    /// [`PAIR_MAX_LOW`] and [`PAIR_MAX_HIGH`] act as those.
    pub fn pair(low: usize, high: usize) -> Self {
        let low = word(low.min(PAIR_MAX_LOW));
        let high = word(high.min(PAIR_MAX_HIGH));
        Self::with_word(high << PAIR_LOW_BITS | low, PAIR_LOW_BITS)
    }

    fn with_word(all: u64, split: u32) -> Self {
        Self {
            free: AtomicU64::new(all),
            split,
            all,
            waiting: AtomicUsize::new(0),
            given: Notify::new(),
            turn: tokio::sync::Mutex::new(()),
        }
    }

    /// The word of a pair's `low` and `high` permits, each cut to the most its count can
    /// hold (as the bounds were: taking and giving back cut the same amounts).
    fn pair_word(&self, low: usize, high: usize) -> u64 {
        let low = word(low.min(PAIR_MAX_LOW));
        let high = word(high.min(PAIR_MAX_HIGH));
        high << self.split | low
    }

    /// The bits of a pair's first count.
    fn low_mask(&self) -> u64 {
        (1u64 << self.split) - 1
    }

    /// The permits free now.
    pub fn available(&self) -> usize {
        usize::try_from(self.free.load(Ordering::Acquire)).unwrap_or(usize::MAX)
    }

    /// A pair's permits free now: the first bound's and the second's.
    pub fn available_pair(&self) -> (usize, usize) {
        let free = self.free.load(Ordering::Acquire);
        let low = usize::try_from(free & self.low_mask()).unwrap_or(usize::MAX);
        let high = usize::try_from(free >> self.split).unwrap_or(usize::MAX);
        (low, high)
    }

    /// Takes `n` permits if they are free and nobody waits for permits.
    pub fn try_take(&self, n: usize) -> bool {
        self.try_take_word(word(n))
    }

    /// Takes `low` and `high` permits of a pair if both are free and nobody waits.
    pub fn try_take_pair(&self, low: usize, high: usize) -> bool {
        self.try_take_word(self.pair_word(low, high))
    }

    fn try_take_word(&self, n: u64) -> bool {
        self.waiting.load(Ordering::SeqCst) == 0 && self.take_now(n)
    }

    /// Takes `n` permits, waiting (behind earlier waiters) until they are free. Cancel-safe: a
    /// dropped wait has taken nothing. Waits forever for more permits than there are.
    pub async fn take(&self, n: usize) {
        self.take_word(word(n)).await;
    }

    /// [`Permits::take`] of a pair's `low` and `high` permits, both at once.
    pub async fn take_pair(&self, low: usize, high: usize) {
        self.take_word(self.pair_word(low, high)).await;
    }

    async fn take_word(&self, n: u64) {
        if self.try_take_word(n) {
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
        self.give_word(word(n));
    }

    /// Gives a pair's `low` and `high` permits back; whether every permit is free now.
    pub fn give_pair(&self, low: usize, high: usize) -> bool {
        self.give_word(self.pair_word(low, high))
    }

    /// Gives `n` back; whether every permit is free now.
    fn give_word(&self, n: u64) -> bool {
        let before = self.free.fetch_add(n, Ordering::SeqCst);
        // Sequentially consistent with the waiter's count and check: either the waiter's
        // check sees these permits, or this load sees the waiter and wakes it.
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.given.notify_waiters();
        }
        before.wrapping_add(n) == self.all
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

    /// Whether `n` can be taken from `free`: each count on its own, as a pair's first may not
    /// borrow from its second.
    fn fits(&self, free: u64, n: u64) -> bool {
        if self.split == 0 {
            return free >= n;
        }
        let low = self.low_mask();
        free & low >= n & low && free >> self.split >= n >> self.split
    }

    fn take_now(&self, n: u64) -> bool {
        let mut free = self.free.load(Ordering::SeqCst);
        loop {
            if !self.fits(free, n) {
                return false;
            }
            match self.free.compare_exchange_weak(
                free,
                free - n,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
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

    #[test]
    fn a_pair_takes_each_bound_on_its_own() {
        // One message and a thousand bytes: once the message is taken, no byte left can stand
        // in for it (in one word, the first count would borrow from the second).
        let p = Permits::pair(1, 1000);
        assert!(p.try_take_pair(1, 10));
        assert_eq!(p.available_pair(), (0, 990));
        assert!(!p.try_take_pair(1, 10), "no message permit is free");
        assert_eq!(p.available_pair(), (0, 990), "a refused take takes nothing");
        assert!(p.give_pair(1, 10), "every permit is back");
        // And bytes run out before messages do.
        let p = Permits::pair(3, 100);
        assert!(p.try_take_pair(1, 60));
        assert!(!p.try_take_pair(1, 60), "40 bytes are free, not 60");
        assert!(p.try_take_pair(1, 40));
        assert_eq!(p.available_pair(), (1, 0));
        assert!(!p.give_pair(1, 40), "one send still holds room");
        assert!(p.give_pair(1, 60));
        assert_eq!(p.available_pair(), (3, 100));
    }

    #[test]
    fn a_pair_bounds_past_its_widths_act_as_the_widths() {
        let p = Permits::pair(usize::MAX, usize::MAX);
        assert_eq!(p.available_pair(), (PAIR_MAX_LOW, PAIR_MAX_HIGH));
        assert!(
            p.try_take_pair(1, usize::MAX),
            "an amount past the bound is cut to it"
        );
        assert_eq!(p.available_pair(), (PAIR_MAX_LOW - 1, 0));
        assert!(p.give_pair(1, usize::MAX));
    }

    #[tokio::test(start_paused = true)]
    async fn a_pair_waiter_gets_both_once_both_are_given_back() {
        let p = Arc::new(Permits::pair(2, 100));
        assert!(p.try_take_pair(1, 100));
        let waiter = {
            let p = Arc::clone(&p);
            tokio::spawn(async move { p.take_pair(1, 50).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "a message is free, but no byte");
        assert!(
            !p.try_take_pair(1, 0),
            "the fast path is shut while a task waits"
        );
        p.give_pair(1, 100);
        waiter.await.expect("the waiter is served");
        assert_eq!(p.available_pair(), (1, 50));
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
