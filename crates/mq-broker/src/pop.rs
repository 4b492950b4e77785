//! Pop consumption's bookkeeping (RocketMQ 5's POP_MESSAGE, ACK_MESSAGE and
//! CHANGE_MESSAGE_INVISIBLETIME): for each group and queue, how far its pops have read and which
//! popped messages are still unacknowledged, with the time each becomes visible again.
//!
//! A Java broker writes checkpoints and acks to a revive topic and moves expired messages to a
//! retry topic. This broker keeps the same facts in memory and hands an expired message out
//! again from its own queue, with its reconsume count raised. The group's committed offset is
//! the lowest offset still in flight, so after a restart every unacknowledged message comes
//! again (at least once, as Java).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use parking_lot::{Mutex, MutexGuard};

/// Unacknowledged messages a queue may have per group before its pops stop reading new ones
/// (Java's `popInflightMessageThreshold`).
pub(crate) const MAX_IN_FLIGHT_PER_QUEUE: usize = 10_000;

/// One group's pop position in one queue.
#[derive(Debug)]
pub(crate) struct QueuePop {
    /// The next offset never popped.
    pub(crate) cursor: i64,
    /// Popped and not yet acknowledged, by queue offset.
    in_flight: BTreeMap<i64, InFlight>,
}

/// A popped message awaiting its ack.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
struct InFlight {
    /// When it was last popped (or its invisible time last changed): its checkpoint's pop
    /// time, which an ack must name.
    popped_at: SystemTime,
    /// When it may be popped again.
    visible_at: SystemTime,
    /// How many times it was handed out again after becoming visible.
    redeliveries: i32,
}

/// A message a pop hands out again: its offset and how many times before it was.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(crate) struct Redelivery {
    pub(crate) offset: i64,
    pub(crate) redeliveries: i32,
}

/// Why a checkpoint does not name a message in flight.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(crate) enum Stale {
    /// Acknowledged already, or never popped here (or before a restart).
    NotInFlight,
    /// Popped again (or its invisible time changed) since: a newer checkpoint holds it.
    Superseded,
}

impl QueuePop {
    fn new(cursor: i64) -> Self {
        Self {
            cursor,
            in_flight: BTreeMap::new(),
        }
    }

    /// The offset the group has consumed up to: its lowest unacknowledged message, else how
    /// far it read.
    pub(crate) fn committed(&self) -> i64 {
        self.in_flight
            .keys()
            .next()
            .copied()
            .map_or(self.cursor, |o| o.min(self.cursor))
    }

    /// Whether an orderly pop must pass this queue by: something popped is still invisible
    /// (its order holds the queue until it is acknowledged or visible again).
    pub(crate) fn held(&self, now: SystemTime) -> bool {
        self.in_flight.values().any(|f| f.visible_at > now)
    }

    /// Whether the queue has as many messages in flight as it may.
    pub(crate) fn full(&self) -> bool {
        self.in_flight.len() >= MAX_IN_FLIGHT_PER_QUEUE
    }

    /// Up to `max` messages visible again at `now`, lowest offset first.
    pub(crate) fn visible_again(&self, now: SystemTime, max: usize) -> Vec<Redelivery> {
        self.in_flight
            .iter()
            .filter(|(_, f)| f.visible_at <= now)
            .take(max)
            .map(|(&offset, f)| Redelivery {
                offset,
                redeliveries: f.redeliveries,
            })
            .collect()
    }

    /// Marks `offset` popped at `now`, invisible for `invisible`; a message popped again counts
    /// one more redelivery.
    pub(crate) fn popped(&mut self, offset: i64, now: SystemTime, invisible: Duration) {
        let visible_at = now + invisible;
        self.in_flight
            .entry(offset)
            .and_modify(|f| {
                f.redeliveries += 1;
                f.popped_at = now;
                f.visible_at = visible_at;
            })
            .or_insert(InFlight {
                popped_at: now,
                visible_at,
                redeliveries: 0,
            });
    }

    /// Forgets `offset` (the store no longer holds it).
    pub(crate) fn drop_offset(&mut self, offset: i64) {
        self.in_flight.remove(&offset);
    }

    /// Acknowledges the message at `offset` popped at `popped_at`.
    pub(crate) fn ack(&mut self, offset: i64, popped_at: SystemTime) -> Result<(), Stale> {
        match self.in_flight.get(&offset) {
            None => Err(Stale::NotInFlight),
            Some(f) if f.popped_at != popped_at => Err(Stale::Superseded),
            Some(_) => {
                self.in_flight.remove(&offset);
                Ok(())
            }
        }
    }

    /// Makes the message at `offset` popped at `popped_at` invisible for `invisible` from
    /// `now`, which becomes its checkpoint's pop time (a millisecond later than the old one at
    /// least, so that the old checkpoint no longer names it). Returns the new pop time.
    pub(crate) fn change_invisible(
        &mut self,
        offset: i64,
        popped_at: SystemTime,
        now: SystemTime,
        invisible: Duration,
    ) -> Result<SystemTime, Stale> {
        match self.in_flight.get_mut(&offset) {
            None => Err(Stale::NotInFlight),
            Some(f) if f.popped_at != popped_at => Err(Stale::Superseded),
            Some(f) => {
                f.popped_at = now.max(popped_at + Duration::from_millis(1));
                f.visible_at = f.popped_at + invisible;
                Ok(f.popped_at)
            }
        }
    }

    /// When the next message in flight becomes visible again.
    pub(crate) fn next_visible(&self) -> Option<SystemTime> {
        self.in_flight.values().map(|f| f.visible_at).min()
    }
}

/// Which group's pops of which queue.
pub(crate) type PopKey = (String, String, i32);

/// Every group's pop positions.
#[derive(Debug, Default)]
pub(crate) struct PopState {
    queues: Mutex<HashMap<PopKey, QueuePop>>,
    /// Where the next pop of any queue starts looking, so that pops spread over the queues.
    rotation: AtomicUsize,
}

impl PopState {
    /// The positions, locked. Read the store while holding them, so two pops of one queue
    /// never hand out the same message.
    pub(crate) fn lock(&self) -> PopGuard<'_> {
        PopGuard(self.queues.lock())
    }

    /// A starting index for a pop over `n` queues.
    pub(crate) fn next_start(&self, n: usize) -> usize {
        self.rotation.fetch_add(1, Ordering::Relaxed) % n.max(1)
    }

    /// Forgets a group's positions (its subscription group was deleted).
    pub(crate) fn remove_group(&self, group: &str) {
        self.queues.lock().retain(|(g, _, _), _| g != group);
    }
}

/// The locked positions.
pub(crate) struct PopGuard<'a>(MutexGuard<'a, HashMap<PopKey, QueuePop>>);

impl PopGuard<'_> {
    /// The group's position in the queue, starting at `start()` when it has none.
    pub(crate) fn queue(&mut self, key: PopKey, start: impl FnOnce() -> i64) -> &mut QueuePop {
        self.0.entry(key).or_insert_with(|| QueuePop::new(start()))
    }

    /// The group's position in the queue, if it popped there.
    pub(crate) fn get_mut(&mut self, key: &PopKey) -> Option<&mut QueuePop> {
        self.0.get_mut(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + s)
    }

    #[test]
    fn an_unacknowledged_message_comes_again_after_its_invisible_time() {
        let mut q = QueuePop::new(0);
        let d = Duration::from_secs(10);
        q.popped(0, at(0), d);
        q.popped(1, at(0), d);
        q.cursor = 2;
        assert_eq!(q.ack(1, at(0)), Ok(()));
        assert!(q.visible_again(at(9), 8).is_empty());
        assert_eq!(q.committed(), 0);
        assert_eq!(
            q.visible_again(at(10), 8),
            vec![Redelivery {
                offset: 0,
                redeliveries: 0
            }]
        );
        q.popped(0, at(10), d);
        // The first checkpoint no longer acknowledges it; the second does.
        assert_eq!(q.ack(0, at(0)), Err(Stale::Superseded));
        assert_eq!(
            q.visible_again(at(20), 8),
            vec![Redelivery {
                offset: 0,
                redeliveries: 1
            }]
        );
        assert_eq!(q.ack(0, at(10)), Ok(()));
        assert_eq!(q.ack(0, at(10)), Err(Stale::NotInFlight));
        assert_eq!(q.committed(), 2);
    }

    #[test]
    fn a_changed_invisible_time_counts_from_the_change_and_holds_an_orderly_queue() {
        let mut q = QueuePop::new(5);
        q.popped(5, at(0), Duration::from_secs(10));
        q.cursor = 6;
        assert!(q.held(at(5)));
        assert_eq!(
            q.change_invisible(5, at(0), at(8), Duration::from_secs(30)),
            Ok(at(8))
        );
        assert_eq!(
            q.change_invisible(5, at(0), at(9), Duration::from_secs(30)),
            Err(Stale::Superseded)
        );
        assert!(q.visible_again(at(37), 8).is_empty());
        assert!(q.held(at(37)));
        assert_eq!(q.next_visible(), Some(at(38)));
        assert!(!q.held(at(38)));
        assert_eq!(q.visible_again(at(38), 8).len(), 1);
        assert_eq!(q.committed(), 5);
        // A change within the millisecond of the pop still gives a new checkpoint.
        let later = at(8) + Duration::from_millis(1);
        assert_eq!(
            q.change_invisible(5, at(8), at(8), Duration::from_secs(1)),
            Ok(later)
        );
        assert_eq!(
            q.change_invisible(5, at(8), at(8), Duration::from_secs(1)),
            Err(Stale::Superseded)
        );
    }
}
