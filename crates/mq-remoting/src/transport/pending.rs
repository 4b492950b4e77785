//! The pending-request table: requests awaiting a response, keyed by (connection generation,
//! opaque) so that a response can only complete a request sent on the same connection.

use std::collections::HashMap;

use parking_lot::Mutex;
use tokio::sync::oneshot;

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

/// Outstanding requests of one endpoint (client or server), across all its connections.
#[derive(Debug, Default)]
pub(crate) struct PendingTable {
    map: Mutex<HashMap<RequestKey, oneshot::Sender<Reply>, foldhash::fast::RandomState>>,
}

impl PendingTable {
    /// Registers a request before it is written. Returns `None` when the key is already in use
    /// (an opaque that wrapped around onto a request still outstanding).
    pub(crate) fn register(&self, key: RequestKey) -> Option<oneshot::Receiver<Reply>> {
        let mut map = self.map.lock();
        if map.contains_key(&key) {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        map.insert(key, tx);
        Some(rx)
    }

    /// Completes a request with its response. Returns false for a late or unknown response
    /// (the caller logs it and drops it).
    pub(crate) fn complete(&self, key: RequestKey, response: RemotingCommand) -> bool {
        let entry = self.map.lock().remove(&key);
        match entry {
            // A dropped receiver means the waiter gave up at this very moment; the response is
            // as late as an unknown one.
            Some(tx) => tx.send(Ok(response)).is_ok(),
            None => false,
        }
    }

    /// Removes a request (timeout, cancellation, failed write).
    pub(crate) fn remove(&self, key: RequestKey) {
        self.map.lock().remove(&key);
    }

    /// Fails every request of one connection at once, with the error `make_error` builds.
    /// Returns how many were failed.
    pub(crate) fn fail_generation(
        &self,
        generation: u64,
        make_error: impl Fn() -> RemotingError,
    ) -> usize {
        let failed: Vec<_> = {
            let mut map = self.map.lock();
            let keys: Vec<_> = map
                .keys()
                .filter(|k| k.generation == generation)
                .copied()
                .collect();
            keys.into_iter().filter_map(|k| map.remove(&k)).collect()
        };
        let n = failed.len();
        for tx in failed {
            // The waiter may already be gone (timed out); nothing to tell it then.
            let _ = tx.send(Err(make_error()));
        }
        n
    }

    /// Number of outstanding requests.
    pub(crate) fn len(&self) -> usize {
        self.map.lock().len()
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
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.table.remove(self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(generation: u64, opaque: i32) -> RequestKey {
        RequestKey { generation, opaque }
    }

    #[test]
    fn completion_removes_the_entry_and_reaches_the_waiter() {
        let table = PendingTable::default();
        let mut rx = table.register(key(1, 7)).unwrap();
        assert!(table.complete(key(1, 7), RemotingCommand::response(0, None)));
        assert_eq!(table.len(), 0);
        assert_eq!(rx.try_recv().unwrap().unwrap().code, 0);
    }

    #[test]
    fn response_on_another_generation_does_not_match() {
        let table = PendingTable::default();
        let _rx = table.register(key(1, 7)).unwrap();
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
        let _rx = table.register(key(1, 7)).unwrap();
        assert!(table.register(key(1, 7)).is_none());
    }

    #[test]
    fn closing_a_connection_fails_only_its_entries() {
        let table = PendingTable::default();
        let mut a = table.register(key(1, 1)).unwrap();
        let mut b = table.register(key(1, 2)).unwrap();
        let mut c = table.register(key(2, 1)).unwrap();
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
        let _rx = table.register(key(3, 3)).unwrap();
        drop(PendingGuard::new(&table, key(3, 3)));
        assert_eq!(table.len(), 0);
    }
}
