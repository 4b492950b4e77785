//! The pending-request table: requests awaiting a response, keyed by (connection generation,
//! opaque) so that a response can only complete a request sent on the same connection.
//!
//! Deadlines live in the table too: one expiry task per endpoint ([`PendingTable::expire`])
//! sleeps until the earliest of them and fails what is due, instead of a timer per request.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::RemotingError;
use crate::protocol::RemotingCommand;

/// What a waiter receives: the response, or why none will come.
pub(crate) type Reply = Result<RemotingCommand, RemotingError>;

/// Identifies one outstanding request.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub(crate) struct RequestKey {
    /// The connection the request was written to.
    pub(crate) generation: u64,
    /// The request's opaque.
    pub(crate) opaque: i32,
}

/// A set of requests that can be failed together, at once, by their owner (a producer's
/// sends, ended when the producer is dropped or its shutdown grace runs out): one tag on each
/// pending request instead of a second wait beside every request.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub struct RequestGroup(u64);

impl RequestGroup {
    /// No group: such requests end only by their answer, deadline or connection.
    pub const NONE: Self = Self(0);

    /// A group of its own, distinct from every other made in this process.
    pub fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Self(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

impl Default for RequestGroup {
    fn default() -> Self {
        Self::new()
    }
}

/// One outstanding request: where its reply goes and how long it waits.
#[derive(Debug)]
struct Waiter {
    tx: oneshot::Sender<Reply>,
    /// When the caller's wait began (what a timeout reports as elapsed).
    started: Instant,
    deadline: Instant,
    group: RequestGroup,
}

#[derive(Debug, Default)]
struct Table {
    map: HashMap<RequestKey, Waiter, foldhash::fast::RandomState>,
    /// When the expiry task looks next: never later than the earliest deadline in `map`;
    /// `None` when it waits for a registration.
    wake_at: Option<Instant>,
    /// Groups failed so far: their later requests are refused at registration (a request may
    /// begin after its group was aborted while it waited for a connection). One entry per
    /// aborted group, never removed: a group is never used again.
    aborted: HashSet<RequestGroup, foldhash::fast::RandomState>,
}

/// Why a request could not be registered.
#[derive(Debug, Eq, PartialEq)]
pub(crate) enum Refused {
    /// The key is in use (an opaque that wrapped around onto a request still outstanding).
    KeyInUse,
    /// The request's group was aborted.
    Aborted,
}

/// Outstanding requests of one endpoint (client or server), across all its connections.
#[derive(Debug, Default)]
pub(crate) struct PendingTable {
    table: Mutex<Table>,
    /// Wakes the expiry task when a registration moves `wake_at` earlier.
    earlier: Notify,
}

impl PendingTable {
    /// Registers a request of `group` before it is written, to be failed with a timeout at
    /// `deadline` unless answered first (or its group aborted).
    pub(crate) fn register(
        &self,
        key: RequestKey,
        started: Instant,
        deadline: Instant,
        group: RequestGroup,
    ) -> Result<oneshot::Receiver<Reply>, Refused> {
        let mut table = self.table.lock();
        if table.map.contains_key(&key) {
            return Err(Refused::KeyInUse);
        }
        if !table.aborted.is_empty() && table.aborted.contains(&group) {
            return Err(Refused::Aborted);
        }
        let (tx, rx) = oneshot::channel();
        table.map.insert(
            key,
            Waiter {
                tx,
                started,
                deadline,
                group,
            },
        );
        // With one timeout for every call, deadlines come in order and this is rare: the
        // expiry task already sleeps until an earlier one.
        let sooner = table.wake_at.is_none_or(|at| deadline < at);
        if sooner {
            table.wake_at = Some(deadline);
        }
        drop(table);
        if sooner {
            self.earlier.notify_one();
        }
        Ok(rx)
    }

    /// Completes a request with its response. Returns false for a late or unknown response
    /// (the caller logs it and drops it).
    pub(crate) fn complete(&self, key: RequestKey, response: RemotingCommand) -> bool {
        let entry = self.table.lock().map.remove(&key);
        match entry {
            // A dropped receiver means the waiter gave up at this very moment; the response is
            // as late as an unknown one.
            Some(w) => w.tx.send(Ok(response)).is_ok(),
            None => false,
        }
    }

    /// Removes a request (cancellation, failed write).
    pub(crate) fn remove(&self, key: RequestKey) {
        self.table.lock().map.remove(&key);
    }

    /// Fails every request of one connection at once, with the error `make_error` builds.
    /// Returns how many were failed.
    pub(crate) fn fail_generation(
        &self,
        generation: u64,
        make_error: impl Fn() -> RemotingError,
    ) -> usize {
        let failed: Vec<_> = self
            .table
            .lock()
            .map
            .extract_if(|k, _| k.generation == generation)
            .collect();
        let n = failed.len();
        for (_, w) in failed {
            // The waiter may already be gone (cancelled); nothing to tell it then.
            let _ = w.tx.send(Err(make_error()));
        }
        n
    }

    /// Fails every request of `group` with [`RemotingError::Aborted`], and refuses its later
    /// ones. Returns how many were failed.
    pub(crate) fn abort_group(&self, group: RequestGroup) -> usize {
        if group == RequestGroup::NONE {
            return 0;
        }
        let failed: Vec<_> = {
            let mut table = self.table.lock();
            table.aborted.insert(group);
            table.map.extract_if(|_, w| w.group == group).collect()
        };
        let n = failed.len();
        for (_, w) in failed {
            // The waiter may already be gone (cancelled); nothing to tell it then.
            let _ = w.tx.send(Err(RemotingError::Aborted));
        }
        n
    }

    /// Takes out the requests whose deadline is `now` or earlier, and sets when to look next.
    fn take_due(&self, now: Instant) -> Vec<(RequestKey, Waiter)> {
        let mut table = self.table.lock();
        let due: Vec<_> = table.map.extract_if(|_, w| w.deadline <= now).collect();
        table.wake_at = table.map.values().map(|w| w.deadline).min();
        due
    }

    /// Fails each request with [`RemotingError::Timeout`] at its deadline, until `stop`;
    /// `peer` names the peer of a connection generation. The endpoint runs one of these.
    pub(crate) async fn expire(&self, stop: CancellationToken, peer: impl Fn(u64) -> String) {
        loop {
            let wake_at = self.table.lock().wake_at;
            // A registration between the read above and this wait leaves a permit: the wait
            // ends at once and the table is looked at again.
            let earlier = self.earlier.notified();
            let due = async {
                match wake_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = stop.cancelled() => return,
                () = earlier => continue,
                () = due => {}
            }
            let now = Instant::now();
            for (key, w) in self.take_due(now) {
                // The waiter may already be gone (cancelled); nothing to tell it then.
                let _ = w.tx.send(Err(RemotingError::Timeout {
                    opaque: key.opaque,
                    addr: peer(key.generation),
                    elapsed: now.saturating_duration_since(w.started),
                }));
            }
        }
    }

    /// Number of outstanding requests.
    pub(crate) fn len(&self) -> usize {
        self.table.lock().map.len()
    }
}

/// Removes its entry from the table when dropped, unless disarmed: a waiter that is cancelled
/// or times out leaves nothing behind.
#[derive(Debug)]
pub(crate) struct PendingGuard<'a> {
    table: &'a PendingTable,
    key: RequestKey,
}

impl<'a> PendingGuard<'a> {
    pub(crate) fn new(table: &'a PendingTable, key: RequestKey) -> Self {
        Self { table, key }
    }

    /// Leaves the entry alone: it is gone already (answered, failed or expired, each of which
    /// takes it out before telling the waiter), or now the waiter's to remove.
    pub(crate) fn disarm(self) {
        std::mem::forget(self);
    }
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.table.remove(self.key);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    fn key(generation: u64, opaque: i32) -> RequestKey {
        RequestKey { generation, opaque }
    }

    impl PendingTable {
        /// Registers with a deadline far off.
        fn add(&self, key: RequestKey) -> Option<oneshot::Receiver<Reply>> {
            let now = Instant::now();
            self.register(
                key,
                now,
                now + Duration::from_secs(3600),
                RequestGroup::NONE,
            )
            .ok()
        }
    }

    #[test]
    fn completion_removes_the_entry_and_reaches_the_waiter() {
        let table = PendingTable::default();
        let mut rx = table.add(key(1, 7)).unwrap();
        assert!(table.complete(key(1, 7), RemotingCommand::response(0, None)));
        assert_eq!(table.len(), 0);
        assert_eq!(rx.try_recv().unwrap().unwrap().code, 0);
    }

    #[test]
    fn response_on_another_generation_does_not_match() {
        let table = PendingTable::default();
        let _rx = table.add(key(1, 7)).unwrap();
        assert!(!table.complete(key(2, 7), RemotingCommand::response(0, None)));
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn late_or_unknown_response_is_reported_as_unmatched() {
        let table = PendingTable::default();
        assert!(!table.complete(key(1, 9), RemotingCommand::response(0, None)));
    }

    #[test]
    fn duplicate_key_is_refused() {
        let table = PendingTable::default();
        let _rx = table.add(key(1, 7)).unwrap();
        assert!(table.add(key(1, 7)).is_none());
    }

    #[test]
    fn closing_a_connection_fails_only_its_entries() {
        let table = PendingTable::default();
        let mut a = table.add(key(1, 1)).unwrap();
        let mut b = table.add(key(1, 2)).unwrap();
        let mut c = table.add(key(2, 1)).unwrap();
        let n = table.fail_generation(1, || RemotingError::ConnectionClosed { addr: "x".into() });
        assert_eq!(n, 2);
        assert!(matches!(
            a.try_recv().unwrap(),
            Err(RemotingError::ConnectionClosed { .. })
        ));
        assert!(b.try_recv().unwrap().is_err());
        assert!(c.try_recv().is_err(), "other connection's entry untouched");
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn aborting_a_group_fails_its_requests_and_refuses_its_later_ones() {
        let table = PendingTable::default();
        let (a, b) = (RequestGroup::new(), RequestGroup::new());
        let far = Instant::now() + Duration::from_secs(3600);
        let now = Instant::now();
        let mut in_a = table.register(key(1, 1), now, far, a).unwrap();
        let mut in_b = table.register(key(1, 2), now, far, b).unwrap();
        let mut none = table
            .register(key(2, 3), now, far, RequestGroup::NONE)
            .unwrap();
        assert_eq!(table.abort_group(a), 1);
        assert!(matches!(in_a.try_recv(), Ok(Err(RemotingError::Aborted))));
        assert!(
            in_b.try_recv().is_err(),
            "another group's request still waits"
        );
        assert!(none.try_recv().is_err(), "an ungrouped request still waits");
        assert_eq!(table.len(), 2);
        assert_eq!(
            table.register(key(1, 4), now, far, a).err(),
            Some(Refused::Aborted),
            "a request of the aborted group made later is refused"
        );
        assert!(table.register(key(1, 5), now, far, b).is_ok());
        assert_eq!(
            table.abort_group(RequestGroup::NONE),
            0,
            "NONE is never aborted"
        );
        assert_eq!(table.len(), 3);
    }

    #[test]
    fn guard_removes_entry_on_drop() {
        let table = PendingTable::default();
        let _rx = table.add(key(3, 3)).unwrap();
        drop(PendingGuard::new(&table, key(3, 3)));
        assert_eq!(table.len(), 0);
    }

    /// The table with its expiry task running; the task ends when the token is dropped.
    fn expiring() -> (Arc<PendingTable>, tokio_util::sync::DropGuard) {
        let table = Arc::new(PendingTable::default());
        let stop = CancellationToken::new();
        let (t, s) = (Arc::clone(&table), stop.clone());
        tokio::spawn(async move { t.expire(s, |g| format!("peer-{g}")).await });
        (table, stop.drop_guard())
    }

    fn register_for(
        table: &PendingTable,
        opaque: i32,
        timeout: Duration,
    ) -> oneshot::Receiver<Reply> {
        let now = Instant::now();
        table
            .register(key(1, opaque), now, now + timeout, RequestGroup::NONE)
            .unwrap()
    }

    /// Registers a request for `timeout`, and checks that it fails with a timeout exactly then,
    /// naming its peer.
    async fn times_out(table: &PendingTable, opaque: i32, timeout: Duration) {
        let started = Instant::now();
        let rx = register_for(table, opaque, timeout);
        match rx.await.unwrap() {
            Err(RemotingError::Timeout {
                opaque: o,
                addr,
                elapsed,
            }) => assert_eq!((o, addr.as_str(), elapsed), (opaque, "peer-1", timeout)),
            other => panic!("expected a timeout, got {other:?}"),
        }
        assert_eq!(started.elapsed(), timeout);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_fails_with_a_timeout_at_its_deadline_and_not_before() {
        let (table, _stop) = expiring();
        times_out(&table, 7, Duration::from_secs(3)).await;
        assert_eq!(table.len(), 0, "the entry is gone before the waiter hears");
    }

    #[tokio::test(start_paused = true)]
    async fn a_shorter_timeout_registered_later_fires_first() {
        let (table, _stop) = expiring();
        let mut long = register_for(&table, 1, Duration::from_secs(3));
        // Let the expiry task settle on the long deadline first.
        tokio::time::sleep(Duration::from_millis(10)).await;
        times_out(&table, 2, Duration::from_millis(100)).await;
        assert!(long.try_recv().is_err(), "the long one still waits");
        assert_eq!(table.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn answered_requests_are_not_expired_and_later_ones_still_are() {
        let (table, _stop) = expiring();
        let first = register_for(&table, 1, Duration::from_secs(1));
        assert!(table.complete(key(1, 1), RemotingCommand::response(0, None)));
        assert!(first.await.unwrap().is_ok());
        // Registered after the answer, while the task still waits for the first deadline.
        tokio::time::sleep(Duration::from_millis(500)).await;
        times_out(&table, 2, Duration::from_secs(1)).await;
    }
}
