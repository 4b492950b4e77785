//! The pending-request table: requests awaiting a response, keyed by (connection generation,
//! opaque) so that a response can only complete a request sent on the same connection.
//!
//! Deadlines live in the table too: one expiry task per endpoint ([`PendingTable::expire`])
//! sleeps until the earliest of them and fails what is due, instead of a timer per request.

use std::collections::HashMap;

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

/// One outstanding request: where its reply goes and how long it waits.
#[derive(Debug)]
struct Waiter {
    tx: oneshot::Sender<Reply>,
    /// When the caller's wait began (what a timeout reports as elapsed).
    started: Instant,
    deadline: Instant,
}

#[derive(Debug, Default)]
struct Table {
    map: HashMap<RequestKey, Waiter, foldhash::fast::RandomState>,
    /// When the expiry task looks next: never later than the earliest deadline in `map`;
    /// `None` when it waits for a registration.
    wake_at: Option<Instant>,
}

/// Outstanding requests of one endpoint (client or server), across all its connections.
#[derive(Debug, Default)]
pub(crate) struct PendingTable {
    table: Mutex<Table>,
    /// Wakes the expiry task when a registration moves `wake_at` earlier.
    earlier: Notify,
}

impl PendingTable {
    /// Registers a request before it is written, to be failed with a timeout at `deadline`
    /// unless answered first. Returns `None` when the key is already in use (an opaque that
    /// wrapped around onto a request still outstanding).
    pub(crate) fn register(
        &self,
        key: RequestKey,
        started: Instant,
        deadline: Instant,
    ) -> Option<oneshot::Receiver<Reply>> {
        let mut table = self.table.lock();
        if table.map.contains_key(&key) {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        table.map.insert(
            key,
            Waiter {
                tx,
                started,
                deadline,
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
        Some(rx)
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
            self.register(key, now, now + Duration::from_secs(3600))
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
        table.register(key(1, opaque), now, now + timeout).unwrap()
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
