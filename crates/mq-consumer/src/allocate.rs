//! Rebalance strategies: which queues of a topic each consumer of a group takes (Java
//! `AllocateMessageQueueStrategy` and its implementations). Inputs are sorted first, as Java
//! does, so every member computes the same split.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use mq_client_api::MessageQueue;

/// Splits queues among the consumers of a group.
pub trait AllocateStrategy: Send + Sync {
    /// A name for logs.
    fn name(&self) -> &str;
    /// The queues `current` takes, given all queues and all consumer ids. Returns nothing when
    /// `current` is not among `cids`.
    fn allocate(&self, current: &str, mqs: &[MessageQueue], cids: &[String]) -> Vec<MessageQueue>;
}

fn sorted(mqs: &[MessageQueue], cids: &[String]) -> (Vec<MessageQueue>, Vec<String>) {
    let mut m = mqs.to_vec();
    m.sort();
    m.dedup();
    let mut c = cids.to_vec();
    c.sort();
    c.dedup();
    (m, c)
}

/// Contiguous, even blocks; the first `len % consumers` consumers take one more. Java:
/// `AllocateMessageQueueAveragely` (the default).
#[derive(Clone, Copy, Debug, Default)]
pub struct Averagely;

impl AllocateStrategy for Averagely {
    fn name(&self) -> &str {
        "AVG"
    }

    fn allocate(&self, current: &str, mqs: &[MessageQueue], cids: &[String]) -> Vec<MessageQueue> {
        let (mqs, cids) = sorted(mqs, cids);
        let Some(index) = cids.iter().position(|c| c == current) else {
            return Vec::new();
        };
        let (n, k) = (mqs.len(), cids.len());
        if n == 0 {
            return Vec::new();
        }
        let rem = n % k;
        let size = if n <= k {
            1
        } else if rem > 0 && index < rem {
            n / k + 1
        } else {
            n / k
        };
        let start = if rem > 0 && index < rem {
            index * size
        } else {
            index * size + rem
        };
        let range = size.min(n.saturating_sub(start));
        (0..range).map(|i| mqs[(start + i) % n].clone()).collect()
    }
}

/// Dealt like cards: consumer `i` takes queues `i, i + k, i + 2k, ...`. Java:
/// `AllocateMessageQueueAveragelyByCircle`.
#[derive(Clone, Copy, Debug, Default)]
pub struct AveragelyByCircle;

impl AllocateStrategy for AveragelyByCircle {
    fn name(&self) -> &str {
        "AVG_BY_CIRCLE"
    }

    fn allocate(&self, current: &str, mqs: &[MessageQueue], cids: &[String]) -> Vec<MessageQueue> {
        let (mqs, cids) = sorted(mqs, cids);
        let Some(index) = cids.iter().position(|c| c == current) else {
            return Vec::new();
        };
        mqs.iter()
            .skip(index)
            .step_by(cids.len())
            .cloned()
            .collect()
    }
}

/// A hash ring with virtual nodes: a consumer joining or leaving moves only the queues it
/// takes or gives up. Java: `AllocateMessageQueueConsistentHash` (the hash differs from
/// Java's MD5; all members of a group must use the same implementation).
#[derive(Clone, Copy, Debug)]
pub struct ConsistentHash {
    /// Virtual nodes per consumer. Default 10.
    pub virtual_nodes: usize,
}

impl Default for ConsistentHash {
    fn default() -> Self {
        Self { virtual_nodes: 10 }
    }
}

fn ring_hash(s: &str) -> u64 {
    // FNV-1a: stable across processes and platforms.
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

impl AllocateStrategy for ConsistentHash {
    fn name(&self) -> &str {
        "CONSISTENT_HASH"
    }

    fn allocate(&self, current: &str, mqs: &[MessageQueue], cids: &[String]) -> Vec<MessageQueue> {
        let (mqs, cids) = sorted(mqs, cids);
        if !cids.iter().any(|c| c == current) {
            return Vec::new();
        }
        let mut ring = BTreeMap::new();
        for c in &cids {
            for v in 0..self.virtual_nodes.max(1) {
                ring.insert(ring_hash(&format!("{c}-{v}")), c.as_str());
            }
        }
        mqs.into_iter()
            .filter(|mq| {
                let h = ring_hash(&mq.to_string());
                let owner = ring
                    .range(h..)
                    .next()
                    .or_else(|| ring.iter().next())
                    .map(|(_, c)| *c);
                owner == Some(current)
            })
            .collect()
    }
}

/// A fixed list of queues, whatever the group looks like. Java: `AllocateMessageQueueByConfig`.
#[derive(Clone, Debug, Default)]
pub struct ByConfig {
    /// The queues to take.
    pub queues: Vec<MessageQueue>,
}

impl AllocateStrategy for ByConfig {
    fn name(&self) -> &str {
        "CONFIG"
    }

    fn allocate(
        &self,
        _current: &str,
        _mqs: &[MessageQueue],
        _cids: &[String],
    ) -> Vec<MessageQueue> {
        self.queues.clone()
    }
}

/// The machine room of a broker named `room@name`.
fn broker_room(mq: &MessageQueue) -> Option<&str> {
    mq.broker_name.split_once('@').map(|(room, _)| room)
}

/// Only queues of brokers in the consumer's machine rooms (brokers named `room@name`), split
/// by index modulo among the group. Java: `AllocateMessageQueueByMachineRoom`.
#[derive(Clone, Debug, Default)]
pub struct ByMachineRoom {
    /// The rooms this consumer serves.
    pub rooms: HashSet<String>,
}

impl AllocateStrategy for ByMachineRoom {
    fn name(&self) -> &str {
        "MACHINE_ROOM"
    }

    fn allocate(&self, current: &str, mqs: &[MessageQueue], cids: &[String]) -> Vec<MessageQueue> {
        let (mqs, cids) = sorted(mqs, cids);
        let Some(index) = cids.iter().position(|c| c == current) else {
            return Vec::new();
        };
        let premium: Vec<MessageQueue> = mqs
            .into_iter()
            .filter(|mq| broker_room(mq).is_some_and(|r| self.rooms.contains(r)))
            .collect();
        let k = cids.len();
        let (size, rem) = (premium.len() / k, premium.len() % k);
        let start = size * index;
        let mut out: Vec<MessageQueue> = premium[start..start + size].to_vec();
        if index < rem {
            out.push(premium[size * k + index].clone());
        }
        out
    }
}

/// Resolves the machine room of a consumer id or a queue.
pub type RoomResolver = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Queues go to consumers in the same machine room (split by `inner`); queues of rooms with
/// no consumer are split among everyone. Java: `AllocateMachineRoomNearby`.
#[derive(Clone)]
pub struct MachineRoomNearby {
    /// The strategy used within a room.
    pub inner: Arc<dyn AllocateStrategy>,
    /// Room of a consumer id.
    pub consumer_room: RoomResolver,
    /// Room of a broker name.
    pub broker_room: RoomResolver,
}

impl fmt::Debug for MachineRoomNearby {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MachineRoomNearby")
            .field("inner", &self.inner.name())
            .finish_non_exhaustive()
    }
}

impl AllocateStrategy for MachineRoomNearby {
    fn name(&self) -> &str {
        "MACHINE_ROOM_NEARBY"
    }

    fn allocate(&self, current: &str, mqs: &[MessageQueue], cids: &[String]) -> Vec<MessageQueue> {
        let (mqs, cids) = sorted(mqs, cids);
        if !cids.iter().any(|c| c == current) {
            return Vec::new();
        }
        let mut queues_by_room: HashMap<Option<String>, Vec<MessageQueue>> = HashMap::new();
        for mq in mqs {
            queues_by_room
                .entry((self.broker_room)(&mq.broker_name))
                .or_default()
                .push(mq);
        }
        let mut consumers_by_room: HashMap<Option<String>, Vec<String>> = HashMap::new();
        for c in &cids {
            consumers_by_room
                .entry((self.consumer_room)(c))
                .or_default()
                .push(c.clone());
        }
        let mine = (self.consumer_room)(current);
        let mut out = Vec::new();
        if let Some(local) = queues_by_room.get(&mine)
            && let Some(local_consumers) = consumers_by_room.get(&mine)
        {
            out.extend(self.inner.allocate(current, local, local_consumers));
        }
        let orphans: Vec<MessageQueue> = queues_by_room
            .iter()
            .filter(|(room, _)| !consumers_by_room.contains_key(*room))
            .flat_map(|(_, q)| q.iter().cloned())
            .collect();
        out.extend(self.inner.allocate(current, &orphans, &cids));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queues(n: i32) -> Vec<MessageQueue> {
        (0..n).map(|i| MessageQueue::new("T", "b", i)).collect()
    }

    fn cids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("c{i}")).collect()
    }

    fn ids(v: &[MessageQueue]) -> Vec<i32> {
        v.iter().map(|q| q.queue_id).collect()
    }

    /// Every queue is taken by exactly one consumer.
    fn assert_partition(s: &dyn AllocateStrategy, mqs: &[MessageQueue], cids: &[String]) {
        let mut all: Vec<MessageQueue> =
            cids.iter().flat_map(|c| s.allocate(c, mqs, cids)).collect();
        all.sort();
        let mut want = mqs.to_vec();
        want.sort();
        assert_eq!(all, want, "{}", s.name());
    }

    #[test]
    fn averagely_gives_contiguous_blocks() {
        let (m, c) = (queues(8), cids(3));
        assert_eq!(ids(&Averagely.allocate("c0", &m, &c)), vec![0, 1, 2]);
        assert_eq!(ids(&Averagely.allocate("c1", &m, &c)), vec![3, 4, 5]);
        assert_eq!(ids(&Averagely.allocate("c2", &m, &c)), vec![6, 7]);
        // More consumers than queues: the last ones get nothing.
        assert_eq!(
            ids(&Averagely.allocate("c3", &queues(2), &cids(4))),
            Vec::<i32>::new()
        );
        assert!(Averagely.allocate("stranger", &m, &c).is_empty());
        for k in 1..6 {
            assert_partition(&Averagely, &m, &cids(k));
        }
    }

    #[test]
    fn by_circle_deals_like_cards() {
        let (m, c) = (queues(8), cids(3));
        assert_eq!(
            ids(&AveragelyByCircle.allocate("c0", &m, &c)),
            vec![0, 3, 6]
        );
        assert_eq!(ids(&AveragelyByCircle.allocate("c2", &m, &c)), vec![2, 5]);
        for k in 1..6 {
            assert_partition(&AveragelyByCircle, &m, &cids(k));
        }
    }

    #[test]
    fn consistent_hash_partitions_and_moves_little() {
        let m: Vec<MessageQueue> = (0..64)
            .map(|i| MessageQueue::new("T", format!("b{}", i % 4), i))
            .collect();
        let s = ConsistentHash::default();
        for k in 1..6 {
            assert_partition(&s, &m, &cids(k));
        }
        let before = s.allocate("c0", &m, &cids(4));
        let after = s.allocate("c0", &m, &cids(5));
        // c0 only loses queues to the newcomer; it gains none.
        assert!(after.iter().all(|q| before.contains(q)));
    }

    #[test]
    fn by_config_and_machine_rooms() {
        let fixed = ByConfig { queues: queues(2) };
        assert_eq!(fixed.allocate("anyone", &queues(8), &cids(3)).len(), 2);
        let m = vec![
            MessageQueue::new("T", "hz@b1", 0),
            MessageQueue::new("T", "hz@b1", 1),
            MessageQueue::new("T", "sh@b2", 0),
            MessageQueue::new("T", "sh@b2", 1),
            MessageQueue::new("T", "hz@b3", 0),
        ];
        let hz = ByMachineRoom {
            rooms: ["hz".to_owned()].into_iter().collect(),
        };
        let c = cids(2);
        let mut taken: Vec<MessageQueue> = c.iter().flat_map(|x| hz.allocate(x, &m, &c)).collect();
        taken.sort();
        assert_eq!(taken.len(), 3);
        assert!(taken.iter().all(|q| q.broker_name.starts_with("hz@")));

        let nearby = MachineRoomNearby {
            inner: Arc::new(Averagely),
            consumer_room: Arc::new(|cid: &str| cid.split_once('#').map(|(r, _)| r.to_owned())),
            broker_room: Arc::new(|b: &str| b.split_once('@').map(|(r, _)| r.to_owned())),
        };
        let c = vec!["hz#1".to_owned(), "gz#1".to_owned()];
        let hz_got = nearby.allocate("hz#1", &m, &c);
        let gz_got = nearby.allocate("gz#1", &m, &c);
        assert!(
            hz_got
                .iter()
                .filter(|q| q.broker_name.starts_with("hz@"))
                .count()
                == 3
        );
        // The sh queues have no local consumer and are shared by everyone.
        let sh: usize = [&hz_got, &gz_got]
            .iter()
            .map(|v| {
                v.iter()
                    .filter(|q| q.broker_name.starts_with("sh@"))
                    .count()
            })
            .sum();
        assert_eq!(sh, 2);
        assert_partition(&nearby, &m, &c);
    }
}
