//! Queue choice: the publish queues of a topic, round-robin that avoids the broker that just
//! failed, latency fault tolerance (spec §7.8, without 4.5.1's bugs), and [`QueueSelector`]s.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use mq_client_api::body::{MASTER_ID, TopicRouteData, perm};
use mq_client_api::validate::java_hash;
use mq_client_api::{Message, MessageQueue};
use parking_lot::Mutex;
use tokio::time::Instant;

/// The writable queues of a topic. Java: `TopicPublishInfo`.
#[derive(Debug)]
pub struct TopicPublishInfo {
    /// The topic's name as sent (namespace-wrapped), shared by the headers of its sends.
    pub topic: std::sync::Arc<str>,
    /// Queues in publish order.
    pub queues: Vec<MessageQueue>,
    /// Whether the route came with an `orderTopicConf`.
    pub order_topic: bool,
    counter: AtomicUsize,
}

impl TopicPublishInfo {
    /// Publish queues from a route (spec §7.6): `orderTopicConf` when present, else writable
    /// queue data whose broker has a master, sorted by broker name.
    pub fn from_route(topic: &str, route: &TopicRouteData) -> Self {
        let mut queues = Vec::new();
        let order_conf = route.order_topic_conf.as_deref().filter(|c| !c.is_empty());
        if let Some(conf) = order_conf {
            for item in conf.split(';') {
                if let Some((broker, n)) = item.split_once(':')
                    && let Ok(n) = n.trim().parse::<i32>()
                {
                    queues.extend((0..n).map(|i| MessageQueue::new(topic, broker.trim(), i)));
                }
            }
        } else {
            let mut datas = route.queue_datas.clone();
            datas.sort_by(|a, b| a.broker_name.cmp(&b.broker_name));
            for q in datas {
                let has_master = route
                    .broker(&q.broker_name)
                    .is_some_and(|b| b.broker_addrs.contains_key(&MASTER_ID));
                if perm::is_writeable(q.perm) && has_master {
                    queues.extend(
                        (0..q.write_queue_nums)
                            .map(|i| MessageQueue::new(topic, &q.broker_name, i)),
                    );
                }
            }
        }
        Self {
            topic: topic.into(),
            queues,
            order_topic: order_conf.is_some(),
            counter: AtomicUsize::new(fastrand::usize(..1 << 20)),
        }
    }

    /// Whether any queue is writable.
    pub fn ok(&self) -> bool {
        !self.queues.is_empty()
    }

    fn next_index(&self) -> usize {
        self.counter.fetch_add(1, Ordering::Relaxed)
    }

    /// The next queue: round-robin, skipping `avoid` (the broker that just failed) when
    /// another broker has queues, and skipping unavailable brokers when `faults` is given.
    pub fn select(
        &self,
        avoid: Option<&str>,
        faults: Option<&LatencyFaultTolerance>,
    ) -> Option<&MessageQueue> {
        let n = self.queues.len();
        if n == 0 {
            return None;
        }
        let start = self.next_index();
        let probe = |ok: &dyn Fn(&MessageQueue) -> bool| {
            (0..n)
                .map(|i| &self.queues[(start + i) % n])
                .find(|q| ok(q))
        };
        let not_avoided = |q: &MessageQueue| avoid != Some(q.broker_name.as_str());
        if let Some(f) = faults {
            let available = |q: &MessageQueue| f.is_available(&q.broker_name);
            if let Some(q) = probe(&|q| available(q) && not_avoided(q)) {
                return Some(q);
            }
            if let Some(q) = probe(&available) {
                return Some(q);
            }
            // Every broker is in its penalty period: take the least bad one.
            if let Some(best) = f.least_bad(&self.brokers())
                && let Some(q) = probe(&|q| q.broker_name == best)
            {
                return Some(q);
            }
        }
        probe(&not_avoided).or_else(|| self.queues.get(start % n))
    }

    fn brokers(&self) -> Vec<String> {
        let set: HashSet<&str> = self.queues.iter().map(|q| q.broker_name.as_str()).collect();
        set.into_iter().map(str::to_owned).collect()
    }
}

/// Latency thresholds and how long a broker that hit one is avoided (4.5.1 tables).
const LATENCY_MAX_MS: [u64; 7] = [50, 100, 550, 1000, 2000, 3000, 15_000];
const NOT_AVAILABLE_MS: [u64; 7] = [0, 0, 30_000, 60_000, 120_000, 180_000, 600_000];
/// The latency a failure counts as ("isolation").
const ISOLATION_LATENCY: Duration = Duration::from_secs(30);

/// Per-broker penalty periods after slow or failed sends. Java: `LatencyFaultToleranceImpl`.
#[derive(Debug, Default)]
pub struct LatencyFaultTolerance {
    items: Mutex<HashMap<String, (Duration, Instant), foldhash::fast::RandomState>>,
}

impl LatencyFaultTolerance {
    /// How long a broker is avoided after a send that took `latency`.
    pub fn not_available_duration(latency: Duration) -> Duration {
        (0..LATENCY_MAX_MS.len())
            .rev()
            .find(|&i| latency >= Duration::from_millis(LATENCY_MAX_MS[i]))
            .map_or(Duration::ZERO, |i| {
                Duration::from_millis(NOT_AVAILABLE_MS[i])
            })
    }

    /// Records a send to `broker` that took `latency`; a failure (`isolation`) counts as 30 s.
    pub fn update(&self, broker: &str, latency: Duration, isolation: bool) {
        let effective = if isolation {
            ISOLATION_LATENCY
        } else {
            latency
        };
        let until = Instant::now() + Self::not_available_duration(effective);
        let mut items = self.items.lock();
        match items.get_mut(broker) {
            Some(item) => *item = (latency, until),
            None => {
                items.insert(broker.to_owned(), (latency, until));
            }
        }
    }

    /// Whether `broker` is out of its penalty period.
    pub fn is_available(&self, broker: &str) -> bool {
        self.items
            .lock()
            .get(broker)
            .is_none_or(|(_, until)| Instant::now() >= *until)
    }

    /// Among `brokers`, the one whose penalty ends first (ties: lower latency).
    pub fn least_bad(&self, brokers: &[String]) -> Option<String> {
        let items = self.items.lock();
        let now = Instant::now();
        brokers
            .iter()
            .min_by_key(|b| {
                items
                    .get(*b)
                    .map_or((now, Duration::ZERO), |(lat, until)| (*until, *lat))
            })
            .cloned()
    }

    /// Forgets a broker.
    pub fn remove(&self, broker: &str) {
        self.items.lock().remove(broker);
    }
}

/// A value to select a queue by, hashed like its Java counterpart's `hashCode()`.
#[derive(Clone, Debug, Eq, Hash, PartialEq)]
#[non_exhaustive]
pub enum SelectArg {
    /// A string: `String.hashCode()`.
    Str(String),
    /// An `int`: the value.
    Int(i32),
    /// A `long`: `(int)(v ^ (v >>> 32))`.
    Long(i64),
}

impl SelectArg {
    /// Java's `hashCode()` of the value.
    pub fn java_hash_code(&self) -> i32 {
        match self {
            Self::Str(s) => java_hash(s),
            Self::Int(v) => *v,
            Self::Long(v) => (*v ^ ((*v as u64) >> 32) as i64) as i32,
        }
    }
}

impl From<&str> for SelectArg {
    fn from(s: &str) -> Self {
        Self::Str(s.to_owned())
    }
}

impl From<String> for SelectArg {
    fn from(s: String) -> Self {
        Self::Str(s)
    }
}

impl From<i32> for SelectArg {
    fn from(v: i32) -> Self {
        Self::Int(v)
    }
}

impl From<i64> for SelectArg {
    fn from(v: i64) -> Self {
        Self::Long(v)
    }
}

/// Chooses the queue of a send. Java: `MessageQueueSelector`.
pub trait QueueSelector: Send + Sync {
    /// One of `queues` (never empty) for `msg`, or `None` to refuse.
    fn select(
        &self,
        queues: &[MessageQueue],
        msg: &Message,
        arg: &SelectArg,
    ) -> Option<MessageQueue>;
}

impl<F> QueueSelector for F
where
    F: Fn(&[MessageQueue], &Message, &SelectArg) -> Option<MessageQueue> + Send + Sync,
{
    fn select(
        &self,
        queues: &[MessageQueue],
        msg: &Message,
        arg: &SelectArg,
    ) -> Option<MessageQueue> {
        self(queues, msg, arg)
    }
}

/// `queues[abs(hashCode(arg)) % len]`, Java-compatible, so a Java and a Rust producer put the
/// same key on the same queue. (Java's `abs(Integer.MIN_VALUE)` stays negative and fails; we
/// use the unsigned magnitude.) Java: `SelectMessageQueueByHash`.
#[derive(Clone, Copy, Debug, Default)]
pub struct HashSelector;

impl QueueSelector for HashSelector {
    fn select(
        &self,
        queues: &[MessageQueue],
        _msg: &Message,
        arg: &SelectArg,
    ) -> Option<MessageQueue> {
        let h = arg.java_hash_code().unsigned_abs() as usize;
        queues.get(h % queues.len().max(1)).cloned()
    }
}

/// A uniformly random queue. Java: `SelectMessageQueueByRandom`.
#[derive(Clone, Copy, Debug, Default)]
pub struct RandomSelector;

impl QueueSelector for RandomSelector {
    fn select(
        &self,
        queues: &[MessageQueue],
        _msg: &Message,
        _arg: &SelectArg,
    ) -> Option<MessageQueue> {
        queues.get(fastrand::usize(..queues.len().max(1))).cloned()
    }
}

/// Queues of brokers in the given machine rooms, hashed by the argument. A broker's room is the
/// part of its name before the first `@` (`room@broker`). Java's `SelectMessageQueueByMachineRoom`
/// is unimplemented (always null); this one works, and refuses (`None`) when no queue is in a
/// listed room.
#[derive(Clone, Debug, Default)]
pub struct MachineRoomSelector {
    /// Accepted rooms.
    pub rooms: HashSet<String>,
}

impl QueueSelector for MachineRoomSelector {
    fn select(
        &self,
        queues: &[MessageQueue],
        msg: &Message,
        arg: &SelectArg,
    ) -> Option<MessageQueue> {
        let local: Vec<MessageQueue> = queues
            .iter()
            .filter(|q| {
                q.broker_name
                    .split_once('@')
                    .is_some_and(|(room, _)| self.rooms.contains(room))
            })
            .cloned()
            .collect();
        if local.is_empty() {
            return None;
        }
        HashSelector.select(&local, msg, arg)
    }
}

#[cfg(test)]
mod tests {
    use mq_client_api::body::{BrokerData, QueueData};

    use super::*;

    fn route(brokers: &[(&str, i32, i32)]) -> TopicRouteData {
        TopicRouteData {
            queue_datas: brokers
                .iter()
                .map(|(b, n, p)| QueueData {
                    broker_name: (*b).into(),
                    read_queue_nums: *n,
                    write_queue_nums: *n,
                    perm: *p,
                    topic_sys_flag: 0,
                })
                .collect(),
            broker_datas: brokers
                .iter()
                .map(|(b, _, _)| BrokerData {
                    cluster: "C".into(),
                    broker_name: (*b).into(),
                    broker_addrs: [(0, format!("{b}:1"))].into_iter().collect(),
                    zone_name: None,
                    enable_acting_master: false,
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn publish_info_sorts_brokers_and_skips_read_only() {
        let info =
            TopicPublishInfo::from_route("T", &route(&[("b", 2, 6), ("a", 1, 6), ("c", 3, 4)]));
        let names: Vec<String> = info
            .queues
            .iter()
            .map(|q| format!("{}{}", q.broker_name, q.queue_id))
            .collect();
        assert_eq!(names, vec!["a0", "b0", "b1"]);
        let mut ordered = route(&[("a", 4, 6)]);
        ordered.order_topic_conf = Some("a:2;b:1".into());
        let info = TopicPublishInfo::from_route("T", &ordered);
        assert!(info.order_topic);
        assert_eq!(info.queues.len(), 3);
    }

    #[test]
    fn round_robin_avoids_the_broker_that_failed() {
        let info = TopicPublishInfo::from_route("T", &route(&[("a", 4, 6), ("b", 4, 6)]));
        for _ in 0..20 {
            assert_eq!(info.select(Some("a"), None).unwrap().broker_name, "b");
        }
        let single = TopicPublishInfo::from_route("T", &route(&[("a", 2, 6)]));
        assert_eq!(
            single.select(Some("a"), None).unwrap().broker_name,
            "a",
            "no other broker"
        );
        let mut seen = HashSet::new();
        for _ in 0..8 {
            seen.insert(info.select(None, None).unwrap());
        }
        assert_eq!(seen.len(), 8, "round-robin visits every queue");
    }

    #[test]
    fn latency_table_matches_the_spec() {
        let d = LatencyFaultTolerance::not_available_duration;
        assert_eq!(d(Duration::from_millis(10)), Duration::ZERO);
        assert_eq!(d(Duration::from_millis(549)), Duration::ZERO);
        assert_eq!(d(Duration::from_millis(550)), Duration::from_secs(30));
        assert_eq!(d(Duration::from_millis(2500)), Duration::from_secs(120));
        assert_eq!(d(Duration::from_secs(30)), Duration::from_secs(600));
    }

    #[tokio::test(start_paused = true)]
    async fn fault_tolerance_moves_retries_to_another_broker_and_recovers() {
        let f = LatencyFaultTolerance::default();
        let info = TopicPublishInfo::from_route("T", &route(&[("a", 4, 6), ("b", 4, 6)]));
        f.update("a", Duration::from_millis(5), true);
        assert!(!f.is_available("a"));
        for _ in 0..10 {
            // Unlike 4.5.1, a retry never prefers the broker that just failed.
            assert_eq!(info.select(Some("a"), Some(&f)).unwrap().broker_name, "b");
            assert_eq!(info.select(None, Some(&f)).unwrap().broker_name, "b");
        }
        tokio::time::advance(Duration::from_secs(601)).await;
        assert!(f.is_available("a"));
        f.update("b", Duration::from_millis(600), false);
        f.update("a", Duration::from_millis(3000), false);
        assert_eq!(f.least_bad(&["a".into(), "b".into()]).as_deref(), Some("b"));
    }

    #[test]
    fn selectors() {
        let queues: Vec<MessageQueue> = (0..4).map(|i| MessageQueue::new("T", "a", i)).collect();
        let m = Message::new("T", "x");
        let key = SelectArg::from("order-42");
        let q1 = HashSelector.select(&queues, &m, &key).unwrap();
        assert_eq!(q1, HashSelector.select(&queues, &m, &key).unwrap());
        assert_eq!(q1.queue_id as u32, java_hash("order-42").unsigned_abs() % 4);
        assert_eq!(
            HashSelector
                .select(&queues, &m, &SelectArg::Int(6))
                .unwrap()
                .queue_id,
            2
        );
        assert_eq!(SelectArg::Long(1 << 32).java_hash_code(), 1);
        assert!(RandomSelector.select(&queues, &m, &key).is_some());
        let rooms = MachineRoomSelector {
            rooms: ["hz".to_owned()].into_iter().collect(),
        };
        assert!(rooms.select(&queues, &m, &key).is_none());
        let mixed = vec![
            MessageQueue::new("T", "sh@b1", 0),
            MessageQueue::new("T", "hz@b2", 1),
        ];
        assert_eq!(rooms.select(&mixed, &m, &key).unwrap().broker_name, "hz@b2");
        let custom = |qs: &[MessageQueue], _: &Message, _: &SelectArg| qs.last().cloned();
        assert_eq!(custom.select(&queues, &m, &key).unwrap().queue_id, 3);
    }
}
