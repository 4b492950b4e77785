//! Consumers against the embedded cluster: everything produced is consumed once, across a
//! restart; rebalancing; retries and the DLQ; broadcasting; tag filters; the pull consumer.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use mq_client_api::MessageExt;
use mq_client_api::body::MessageModel;
use mq_client_api::header::PullMessageRequestHeader;
use mq_client_instance::ClientConfig;
use mq_consumer::{
    ConsumeContext, ConsumeFrom, ConsumeOrderlyContext, ConsumeOrderlyStatus, ConsumeStatus,
    ConsumerConfig, PullConsumer, PushConsumer,
};
use mq_producer::{Producer, ProducerConfig};
use mq_test_support::Cluster;
use parking_lot::Mutex;
use tokio::sync::Notify;

const T: Duration = Duration::from_secs(60);
static NEXT: AtomicU32 = AtomicU32::new(0);

fn client(cluster: &Cluster, tag: &str) -> ClientConfig {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    ClientConfig::new(cluster.namesrv_addr()).with_instance_name(format!("{tag}-{n}"))
}

fn consumer_config(cluster: &Cluster, group: &str) -> ConsumerConfig {
    ConsumerConfig::new(group, cluster.namesrv_addr())
        .with_client(client(cluster, group))
        .with_consume_from(ConsumeFrom::FirstOffset)
}

async fn producer(cluster: &Cluster) -> Producer {
    let p = Producer::new(
        ProducerConfig::new("pg", cluster.namesrv_addr()).with_client(client(cluster, "p")),
    );
    p.start().await.unwrap();
    p
}

/// Sends `count` messages with bodies `prefix-i`, 64 at a time; returns their ids.
async fn produce(
    p: &Producer,
    topic: &str,
    prefix: &str,
    range: std::ops::Range<usize>,
) -> HashSet<String> {
    let mut tasks = tokio::task::JoinSet::new();
    let ids = Arc::new(Mutex::new(HashSet::new()));
    let chunk: Vec<usize> = range.collect();
    for lane in chunk.chunks(chunk.len().div_ceil(64).max(1)) {
        let (p, ids, lane, topic, prefix) = (
            p.clone(),
            Arc::clone(&ids),
            lane.to_vec(),
            topic.to_owned(),
            prefix.to_owned(),
        );
        tasks.spawn(async move {
            for i in lane {
                let tag = if i % 2 == 0 { "TagA" } else { "TagB" };
                let m = mq_client_api::Message::new(topic.clone(), format!("{prefix}-{i}"))
                    .with_tags(tag);
                let r = p.send_async(m).await.unwrap();
                ids.lock().insert(r.msg_id);
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    Arc::try_unwrap(ids).unwrap().into_inner()
}

/// A listener that records every message id it sees and signals when `target` distinct ids
/// have arrived.
#[derive(Default)]
struct Collector {
    seen: Mutex<HashMap<String, u32>>,
    target: Mutex<usize>,
    done: Notify,
}

impl Collector {
    fn expect(self: &Arc<Self>, n: usize) {
        *self.target.lock() = n;
    }

    async fn wait(&self) {
        loop {
            let notified = self.done.notified();
            if self.seen.lock().len() >= *self.target.lock() {
                return;
            }
            tokio::time::timeout(T, notified)
                .await
                .expect("messages arrived in time");
        }
    }

    /// Counts `msgs`, signalling once the target is reached.
    fn record(&self, msgs: &[MessageExt]) {
        let mut seen = self.seen.lock();
        for m in msgs {
            *seen.entry(m.msg_id()).or_default() += 1;
        }
        if seen.len() >= *self.target.lock() {
            self.done.notify_waiters();
        }
    }

    fn listener(self: &Arc<Self>) -> Arc<dyn mq_consumer::MessageListener> {
        let me = Arc::clone(self);
        Arc::new(move |msgs: &[MessageExt], _ctx: &mut ConsumeContext| {
            me.record(msgs);
            ConsumeStatus::Success
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_is_consumed_once_across_a_restart() {
    let cluster = Cluster::builder().brokers(2).start().await.unwrap();
    let p = producer(&cluster).await;
    let n = 100_000;
    let sent = produce(&p, "Bulk", "m", 0..n).await;
    assert_eq!(sent.len(), n);

    let collector = Arc::new(Collector::default());
    collector.expect(n);
    let c = PushConsumer::new(consumer_config(&cluster, "bulk"));
    c.subscribe("Bulk", "*").unwrap();
    c.start(collector.listener()).await.unwrap();
    collector.wait().await;
    assert_eq!(
        c.assigned_queues()
            .iter()
            .filter(|q| q.topic == "Bulk")
            .count(),
        8,
        "8 queues over 2 brokers"
    );
    c.shutdown().await;
    {
        let seen = collector.seen.lock();
        assert_eq!(seen.keys().cloned().collect::<HashSet<_>>(), sent);
        assert!(seen.values().all(|n| *n == 1), "steady state delivers once");
    }

    // A restart resumes from the committed offsets: only new messages arrive.
    let more = produce(&p, "Bulk", "n", n..n + 1000).await;
    let again = Arc::new(Collector::default());
    again.expect(1000);
    let c = PushConsumer::new(consumer_config(&cluster, "bulk"));
    c.subscribe("Bulk", "*").unwrap();
    c.start(again.listener()).await.unwrap();
    again.wait().await;
    c.shutdown().await;
    let seen: HashSet<String> = again.seen.lock().keys().cloned().collect();
    let replayed = seen.difference(&more).count();
    assert_eq!(replayed, 0, "no replay after a clean stop");
    assert_eq!(seen, more, "no loss after a restart");
    p.shutdown().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_are_split_when_a_member_joins_and_taken_back_when_it_leaves() {
    let cluster = Cluster::builder().brokers(2).start().await.unwrap();
    let p = producer(&cluster).await;
    // 4 queues on each broker, known to the name server before the consumers start (auto-
    // creation would register each broker's share in the background, so the first consumer
    // could start with half the route).
    p.create_topic("TBW102", "Split", 4).await.unwrap();
    produce(&p, "Split", "s", 0..16).await;
    let noop: Arc<dyn mq_consumer::MessageListener> =
        Arc::new(|_: &[MessageExt], _: &mut ConsumeContext| ConsumeStatus::Success);
    let a = PushConsumer::new(consumer_config(&cluster, "split"));
    a.subscribe("Split", "*").unwrap();
    a.start(Arc::clone(&noop)).await.unwrap();
    let topic_queues = |c: &PushConsumer| {
        c.assigned_queues()
            .into_iter()
            .filter(|q| q.topic == "Split")
            .collect::<Vec<_>>()
    };
    assert_eq!(topic_queues(&a).len(), 8);
    let b = PushConsumer::new(consumer_config(&cluster, "split"));
    b.subscribe("Split", "*").unwrap();
    b.start(Arc::clone(&noop)).await.unwrap();
    mq_test_support::eventually(|| topic_queues(&a).len() == 4 && topic_queues(&b).len() == 4)
        .await;
    let mut union: Vec<_> = topic_queues(&a)
        .into_iter()
        .chain(topic_queues(&b))
        .collect();
    union.sort();
    union.dedup();
    assert_eq!(union.len(), 8, "disjoint halves");
    b.shutdown().await;
    mq_test_support::eventually(|| topic_queues(&a).len() == 8).await;
    a.shutdown().await;
    p.shutdown().await;
    cluster.shutdown().await;
}

fn fast_retries(c: mq_broker::BrokerConfig) -> mq_broker::BrokerConfig {
    c.with_delay_levels(vec![Duration::from_millis(100)])
}

/// A one-broker cluster whose retries come back after 100 ms.
async fn fast_retry_cluster() -> Cluster {
    Cluster::builder()
        .configure(fast_retries)
        .start()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_come_back_with_reconsume_times_then_land_in_the_dlq() {
    let cluster = fast_retry_cluster().await;
    let p = producer(&cluster).await;
    let mq_msg = mq_client_api::Message::new("Flaky", "fail-twice").with_tags("A");
    p.send(mq_msg).await.unwrap();
    p.send(mq_client_api::Message::new("Flaky", "always-fails").with_tags("A"))
        .await
        .unwrap();

    let attempts: Arc<Mutex<Vec<(String, i32, String)>>> = Arc::default();
    let done = Arc::new(Notify::new());
    let (a, d) = (Arc::clone(&attempts), Arc::clone(&done));
    let listener = Arc::new(move |msgs: &[MessageExt], _ctx: &mut ConsumeContext| {
        let m = &msgs[0];
        let body = String::from_utf8_lossy(&m.message.body).into_owned();
        a.lock()
            .push((body.clone(), m.reconsume_times, m.message.topic.clone()));
        if body == "fail-twice" && m.reconsume_times >= 2 {
            d.notify_waiters();
            return ConsumeStatus::Success;
        }
        ConsumeStatus::ReconsumeLater
    });
    let c = PushConsumer::new(consumer_config(&cluster, "flaky").with_max_reconsume_times(2));
    c.subscribe("Flaky", "*").unwrap();
    let notified = done.notified();
    c.start(listener).await.unwrap();
    tokio::time::timeout(T, notified).await.unwrap();
    let log = attempts.lock().clone();
    let twice: Vec<i32> = log
        .iter()
        .filter(|(b, _, _)| b == "fail-twice")
        .map(|(_, r, _)| *r)
        .collect();
    assert_eq!(
        twice,
        vec![0, 1, 2],
        "redelivered with reconsume times incremented"
    );
    assert!(
        log.iter().all(|(_, _, topic)| topic == "Flaky"),
        "the retry topic is hidden from the listener"
    );

    // The other message exceeds max reconsume times and lands in the DLQ.
    let api = cluster.client_api();
    let h = PullMessageRequestHeader {
        consumer_group: "check".into(),
        topic: "%DLQ%flaky".into(),
        queue_id: 0,
        queue_offset: 0,
        max_msg_nums: 8,
        sys_flag: mq_client_api::header::pull_sys_flag::SUSPEND,
        suspend_timeout_millis: 20_000,
        subscription: Some("*".into()),
        ..Default::default()
    };
    let mut dead = Vec::new();
    while dead.is_empty() {
        match api.pull(&cluster.broker_addr(0), &h, T).await {
            Ok(r) => dead = r.messages,
            Err(e) if e.response_code() == Some(mq_client_api::ResponseCode::TOPIC_NOT_EXIST) => {
                tokio::task::yield_now().await
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(&dead[0].message.body[..], b"always-fails");
    c.shutdown().await;
    p.shutdown().await;
    cluster.shutdown().await;
}

/// Each call's context names the queue its messages came from, also when one thread takes
/// the calls of several queues in turn (it keeps its context from one call to the next).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_call_sees_the_queue_of_its_messages() {
    let cluster = Cluster::builder().start().await.unwrap();
    let p = producer(&cluster).await;
    let sent = produce(&p, "Queues", "q", 0..16).await;
    // (queue id the context named, queue id of the message), for every message.
    let seen: Arc<Mutex<Vec<(i32, i32)>>> = Arc::default();
    let done = Arc::new(Collector::default());
    done.expect(16);
    let (s, d) = (Arc::clone(&seen), Arc::clone(&done));
    let listener = Arc::new(move |msgs: &[MessageExt], ctx: &mut ConsumeContext| {
        assert_eq!(ctx.queue.topic, "Queues");
        s.lock()
            .extend(msgs.iter().map(|m| (ctx.queue.queue_id, m.queue_id)));
        d.record(msgs);
        ConsumeStatus::Success
    });
    let c = PushConsumer::new(consumer_config(&cluster, "queues").with_workers(1));
    c.subscribe("Queues", "*").unwrap();
    c.start(listener).await.unwrap();
    done.wait().await;
    c.shutdown().await;
    assert_eq!(
        done.seen.lock().keys().cloned().collect::<HashSet<_>>(),
        sent
    );
    let seen = std::mem::take(&mut *seen.lock());
    let queues: HashSet<i32> = seen.iter().map(|&(_, q)| q).collect();
    assert!(queues.len() > 1, "the messages came from several queues");
    assert!(
        seen.iter().all(|&(named, from)| named == from),
        "each context named its messages' queue: {seen:?}"
    );
    p.shutdown().await;
    cluster.shutdown().await;
}

/// A listener that holds one message's call until a later message is consumed: the later
/// message, pulled while the first call runs, gets a thread of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_holding_one_message_still_gets_the_next() {
    let cluster = Cluster::builder().start().await.unwrap();
    let p = producer(&cluster).await;
    p.send(mq_client_api::Message::new("Held", "first"))
        .await
        .unwrap();
    // Whether "second" was consumed, and whether the call of "first" gave up waiting for it.
    let second = Arc::new((
        std::sync::Mutex::new((false, false)),
        std::sync::Condvar::new(),
    ));
    let first_in = Arc::new(Notify::new());
    let done = Arc::new(Collector::default());
    done.expect(2);
    let (s, f, d) = (
        Arc::clone(&second),
        Arc::clone(&first_in),
        Arc::clone(&done),
    );
    let listener = Arc::new(move |msgs: &[MessageExt], _ctx: &mut ConsumeContext| {
        let (lock, consumed) = &*s;
        for m in msgs {
            if m.message.body.as_ref() == b"first" {
                f.notify_one();
                let state = lock.lock().unwrap();
                let (mut state, timeout) = consumed
                    .wait_timeout_while(state, Duration::from_secs(20), |(seen, _)| !*seen)
                    .unwrap();
                state.1 |= timeout.timed_out();
            } else {
                lock.lock().unwrap().0 = true;
                consumed.notify_all();
            }
        }
        d.record(msgs);
        ConsumeStatus::Success
    });
    let c = PushConsumer::new(consumer_config(&cluster, "held").with_workers(2));
    c.subscribe("Held", "*").unwrap();
    c.start(listener).await.unwrap();
    tokio::time::timeout(T, first_in.notified())
        .await
        .expect("the first message was consumed");
    p.send(mq_client_api::Message::new("Held", "second"))
        .await
        .unwrap();
    done.wait().await;
    c.shutdown().await;
    assert_eq!(
        *second.0.lock().unwrap(),
        (true, false),
        "the second message was consumed while the first one's call waited"
    );
    p.shutdown().await;
    cluster.shutdown().await;
}

/// A blocking listener gets up to `workers` calls at once (slow code does not hold up the
/// other messages), and a call that panics has its message delivered again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_listener_gets_workers_calls_at_once_and_a_panic_is_retried() {
    const WORKERS: usize = 4;
    let cluster = fast_retry_cluster().await;
    let p = producer(&cluster).await;
    let sent = produce(&p, "Workers", "w", 0..8).await;
    // The first WORKERS calls wait (at most 20 s) until WORKERS are running together: calls
    // so far, calls among the first WORKERS that have come, whether one of them gave up.
    let running = Arc::new((
        std::sync::Mutex::new((0usize, 0usize, false)),
        std::sync::Condvar::new(),
    ));
    let attempts: Arc<Mutex<Vec<(String, i32)>>> = Arc::default();
    let done = Arc::new(Collector::default());
    done.expect(8);
    let (r, a, d) = (
        Arc::clone(&running),
        Arc::clone(&attempts),
        Arc::clone(&done),
    );
    let listener = Arc::new(move |msgs: &[MessageExt], _ctx: &mut ConsumeContext| {
        let (lock, all_in) = &*r;
        let mut state = lock.lock().unwrap();
        let (calls, together, _) = &mut *state;
        *calls += 1;
        if *calls <= WORKERS {
            *together += 1;
            if *together == WORKERS {
                all_in.notify_all();
            }
            let wait = Duration::from_secs(20);
            let (mut waited, timeout) = all_in
                .wait_timeout_while(state, wait, |(_, n, _)| *n < WORKERS)
                .unwrap();
            waited.2 |= timeout.timed_out();
            state = waited;
        }
        drop(state);
        let m = &msgs[0];
        let body = String::from_utf8_lossy(&m.message.body).into_owned();
        a.lock().push((body.clone(), m.reconsume_times));
        assert!(
            !(body == "w-5" && m.reconsume_times == 0),
            "the first delivery of w-5 fails"
        );
        d.record(msgs);
        ConsumeStatus::Success
    });
    let c = PushConsumer::new(consumer_config(&cluster, "workers").with_workers(WORKERS));
    c.subscribe("Workers", "*").unwrap();
    c.start(listener).await.unwrap();
    done.wait().await;
    c.shutdown().await;
    let (_, together, gave_up) = *running.0.lock().unwrap();
    assert!(
        together == WORKERS && !gave_up,
        "{WORKERS} calls ran together"
    );
    assert_eq!(
        done.seen.lock().keys().cloned().collect::<HashSet<_>>(),
        sent
    );
    let w5: Vec<i32> = attempts
        .lock()
        .iter()
        .filter(|(b, _)| b == "w-5")
        .map(|(_, r)| *r)
        .collect();
    assert_eq!(w5, [0, 1], "the panicked call's message came again");
    p.shutdown().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcasting_delivers_every_message_to_every_member() {
    let cluster = Cluster::builder().start().await.unwrap();
    let p = producer(&cluster).await;
    let sent = produce(&p, "Cast", "c", 0..200).await;
    let dir = tempfile::tempdir().unwrap();
    let mut consumers = Vec::new();
    let mut collectors = Vec::new();
    for i in 0..2 {
        let col = Arc::new(Collector::default());
        col.expect(200);
        let c = PushConsumer::new(
            consumer_config(&cluster, "cast")
                .with_message_model(MessageModel::Broadcasting)
                .with_offset_dir(dir.path().join(format!("m{i}"))),
        );
        c.subscribe("Cast", "*").unwrap();
        c.start(col.listener()).await.unwrap();
        consumers.push(c);
        collectors.push(col);
    }
    for col in &collectors {
        col.wait().await;
        assert_eq!(
            col.seen.lock().keys().cloned().collect::<HashSet<_>>(),
            sent
        );
    }
    for c in &consumers {
        c.shutdown().await;
    }
    assert!(
        dir.path().join("m0/offsets.json").exists(),
        "offsets kept locally"
    );
    p.shutdown().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_filters_and_the_pull_consumer() {
    let cluster = Cluster::builder().start().await.unwrap();
    let p = producer(&cluster).await;
    produce(&p, "Lite", "l", 0..100).await;
    let c = PullConsumer::new(consumer_config(&cluster, "lite").with_auto_commit(false));
    c.subscribe("Lite", "TagA").unwrap();
    c.start().await.unwrap();
    let mut got = Vec::new();
    while got.len() < 50 {
        got.extend(c.poll(T).await.unwrap());
    }
    assert_eq!(got.len(), 50);
    assert!(got.iter().all(|m| m.message.tags() == Some("TagA")));
    c.commit().await;
    // Seek back on one queue: its messages come again.
    let q = got[0].message.topic.clone();
    let mq = c
        .assignment()
        .into_iter()
        .find(|x| x.topic == q && x.queue_id == got[0].queue_id)
        .unwrap();
    c.seek(&mq, 0).unwrap();
    let again = c.poll(T).await.unwrap();
    assert!(!again.is_empty());
    assert!(again.iter().all(|m| m.queue_id == mq.queue_id));
    assert!(
        c.seek(&mq_client_api::MessageQueue::new("Nope", "broker-a", 0), 0)
            .is_err()
    );
    c.shutdown().await;

    // The committed offsets hold for the group: nothing of the first pass comes back.
    let c = PullConsumer::new(consumer_config(&cluster, "lite"));
    c.subscribe("Lite", "TagA").unwrap();
    c.start().await.unwrap();
    let rest = c.poll(Duration::from_millis(500)).await.unwrap();
    assert!(rest.is_empty(), "{} messages replayed", rest.len());
    c.shutdown().await;
    p.shutdown().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orderly_consumption_keeps_per_key_order_through_suspends() {
    let cluster = Cluster::builder().start().await.unwrap();
    let p = producer(&cluster).await;
    let keys = ["k0", "k1", "k2", "k3"];
    let per_key = 100;
    // Concurrent producers, one per key, each in order on its key's queue.
    let mut tasks = tokio::task::JoinSet::new();
    for key in keys {
        let p = p.clone();
        tasks.spawn(async move {
            for seq in 0..per_key {
                let m = mq_client_api::Message::new("Ordered", format!("{key}:{seq}"));
                p.send_with_selector(
                    m,
                    &mq_producer::HashSelector,
                    &mq_producer::SelectArg::from(key),
                )
                .await
                .unwrap();
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let consumed: Arc<Mutex<HashMap<String, Vec<u32>>>> = Arc::default();
    let suspended: Arc<Mutex<HashSet<String>>> = Arc::default();
    let panicked: Arc<Mutex<HashSet<String>>> = Arc::default();
    let done = Arc::new(Notify::new());
    let (c_, s_, p_, d_) = (
        Arc::clone(&consumed),
        Arc::clone(&suspended),
        Arc::clone(&panicked),
        Arc::clone(&done),
    );
    let listener = Arc::new(
        move |msgs: &[MessageExt], ctx: &mut ConsumeOrderlyContext| {
            let body = String::from_utf8_lossy(&msgs[0].message.body).into_owned();
            let (key, seq) = body.split_once(':').unwrap();
            let seq: u32 = seq.parse().unwrap();
            // Refuse message 37 of every key once: it must come again before 38.
            if seq == 37 && s_.lock().insert(key.to_owned()) {
                ctx.suspend = Duration::from_millis(10);
                return ConsumeOrderlyStatus::SuspendCurrentQueueAMoment;
            }
            // A panic suspends the queue as well: message 55 of every key comes again too.
            let first = seq == 55 && p_.lock().insert(key.to_owned());
            assert!(!first, "the first delivery of {key}:55 fails");
            let mut c = c_.lock();
            c.entry(key.to_owned()).or_default().push(seq);
            if c.values().map(Vec::len).sum::<usize>() == keys.len() * per_key as usize {
                d_.notify_waiters();
            }
            ConsumeOrderlyStatus::Success
        },
    );
    let c = PushConsumer::new(consumer_config(&cluster, "ordered"));
    c.subscribe("Ordered", "*").unwrap();
    let notified = done.notified();
    c.start_orderly(listener).await.unwrap();
    tokio::time::timeout(T, notified)
        .await
        .expect("all consumed");
    let consumed = consumed.lock().clone();
    for key in keys {
        assert_eq!(
            consumed[key],
            (0..per_key).collect::<Vec<_>>(),
            "order of {key}"
        );
    }
    assert_eq!(suspended.lock().len(), 4);
    assert_eq!(panicked.lock().len(), 4);
    c.shutdown().await;
    p.shutdown().await;
    cluster.shutdown().await;
}

/// The default `#[tokio::test]` runtime has one thread: a blocking listener runs on the
/// blocking pool, an async one on that thread, and a listener that panics has its message
/// redelivered (through the retry topic) rather than stopping the consumer.
#[tokio::test]
async fn push_consumers_work_on_a_current_thread_runtime() {
    let cluster = fast_retry_cluster().await;
    let p = producer(&cluster).await;
    let sent = produce(&p, "OneThread", "o", 0..50).await;

    // Blocking listener.
    let blocking = Arc::new(Collector::default());
    blocking.expect(50);
    let c1 = PushConsumer::new(consumer_config(&cluster, "one-thread-blocking"));
    c1.subscribe("OneThread", "*").unwrap();
    c1.start(blocking.listener()).await.unwrap();
    blocking.wait().await;

    // Async listener that panics on the first delivery of one message.
    let seen = Arc::new(Collector::default());
    seen.expect(50);
    let s = Arc::clone(&seen);
    let listener = mq_consumer::async_listener(move |msgs, _queue| {
        let s = Arc::clone(&s);
        async move {
            tokio::task::yield_now().await;
            for m in &msgs {
                assert!(
                    !(&m.message.body[..] == b"o-7" && m.reconsume_times == 0),
                    "first delivery of o-7 fails"
                );
            }
            s.record(&msgs);
            ConsumeStatus::Success
        }
    });
    // One message per call (the default batch size), so only o-7 is redelivered.
    let c2 = PushConsumer::new(consumer_config(&cluster, "one-thread-async"));
    c2.subscribe("OneThread", "*").unwrap();
    c2.start_async(listener).await.unwrap();
    seen.wait().await;

    // Orderly listener (blocking code too).
    let ordered = Arc::new(Collector::default());
    ordered.expect(50);
    let o = Arc::clone(&ordered);
    let c3 = PushConsumer::new(consumer_config(&cluster, "one-thread-orderly"));
    c3.subscribe("OneThread", "*").unwrap();
    c3.start_orderly(Arc::new(
        move |msgs: &[MessageExt], _: &mut ConsumeOrderlyContext| {
            o.record(msgs);
            ConsumeOrderlyStatus::Success
        },
    ))
    .await
    .unwrap();
    ordered.wait().await;

    c1.shutdown().await;
    c2.shutdown().await;
    c3.shutdown().await;
    assert_eq!(
        blocking.seen.lock().keys().cloned().collect::<HashSet<_>>(),
        sent
    );
    assert_eq!(
        ordered.seen.lock().keys().cloned().collect::<HashSet<_>>(),
        sent
    );
    assert_eq!(
        seen.seen.lock().keys().cloned().collect::<HashSet<_>>(),
        sent
    );
    // Each recorded once: o-7 only at its redelivery (the first delivery panicked first).
    assert!(seen.seen.lock().values().all(|n| *n == 1));
    p.shutdown().await;
    cluster.shutdown().await;
}

/// A push or pull consumer dropped without a shutdown stops: its instance ends, and no task
/// of the client outlives it. What the pull consumer polled but did not commit comes again to
/// the next consumer of its group.
#[test]
fn dropped_consumers_stop_and_leave_no_task() {
    mq_test_support::with_cluster_apart(Cluster::builder(), |namesrv| async move {
        let before = mq_test_support::alive_tasks();
        let config = |group: &str| {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            ConsumerConfig::new(group, &namesrv)
                .with_client(ClientConfig::new(&namesrv).with_instance_name(format!("drop-{n}")))
                .with_consume_from(ConsumeFrom::FirstOffset)
        };
        let p = Producer::new(
            ProducerConfig::new("pg", &namesrv)
                .with_client(ClientConfig::new(&namesrv).with_instance_name("drop-producer")),
        );
        p.start().await.unwrap();
        for i in 0..20 {
            let m = mq_client_api::Message::new("DropConsumers", format!("d-{i}"));
            p.send(m).await.unwrap();
        }
        p.shutdown().await;

        let seen = Arc::new(Collector::default());
        seen.expect(20);
        let push = PushConsumer::new(config("drop-push"));
        push.subscribe("DropConsumers", "*").unwrap();
        push.start(seen.listener()).await.unwrap();
        seen.wait().await;
        let instance = push.instance().unwrap();
        drop(push);
        tokio::time::timeout(T, instance.stopped())
            .await
            .expect("the push consumer's instance stopped");

        let pull = PullConsumer::new(config("drop-pull").with_auto_commit(false));
        pull.subscribe("DropConsumers", "*").unwrap();
        pull.start().await.unwrap();
        let mut polled = 0;
        while polled == 0 {
            polled = pull.poll(T).await.unwrap().len();
        }
        let instance = pull.instance().unwrap();
        drop(pull);
        tokio::time::timeout(T, instance.stopped())
            .await
            .expect("the pull consumer's instance stopped");
        assert_eq!(
            mq_test_support::tasks_settle_to(before, T).await,
            before,
            "tasks outlived the dropped consumers"
        );

        // Nothing was committed: the group's next consumer gets every message.
        let again = PullConsumer::new(config("drop-pull"));
        again.subscribe("DropConsumers", "*").unwrap();
        again.start().await.unwrap();
        let mut bodies = HashSet::new();
        while bodies.len() < 20 {
            for m in again.poll(T).await.unwrap() {
                bodies.insert(m.message.body.clone());
            }
        }
        again.shutdown().await;
    });
}

/// The stream consumer yields every message under its own topic; a message handed back
/// comes again through the retry topic; one never acknowledged holds its queue's committed
/// offset, so the group's next consumer gets it (and what followed it in its queue) again,
/// and nothing of the other queues.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_consumer_acks_retries_and_redelivers_what_was_not_acked() {
    use futures_util::StreamExt;
    use mq_consumer::StreamConsumer;

    async fn next(stream: &mut mq_consumer::MessageStream) -> mq_consumer::Received {
        tokio::time::timeout(T, stream.next())
            .await
            .expect("a message in time")
            .expect("the stream goes on")
    }

    let cluster = fast_retry_cluster().await;
    let p = producer(&cluster).await;
    let n = 40;
    produce(&p, "Streamed", "s", 0..n).await;
    let body =
        |r: &mq_consumer::Received| String::from_utf8_lossy(&r.message().message.body).into_owned();

    let c = StreamConsumer::new(consumer_config(&cluster, "streamed"));
    c.subscribe("Streamed", "*").unwrap();
    assert!(c.stream().is_err(), "no stream before start");
    c.start().await.unwrap();
    let mut stream = c.stream().unwrap();
    assert!(c.stream().is_err(), "one stream per consumer");

    let mut seen: HashMap<String, (mq_client_api::MessageQueue, i64)> = HashMap::new();
    let mut held = None;
    while seen.len() < n {
        let r = next(&mut stream).await;
        assert_eq!(r.message().message.topic, "Streamed");
        let b = body(&r);
        assert!(
            seen.insert(b.clone(), (r.queue().clone(), r.message().queue_offset))
                .is_none(),
            "{b} delivered twice"
        );
        match b.as_str() {
            "s-7" => r.retry_later(0).await.unwrap(),
            "s-9" => held = Some(r),
            _ => r.ack(),
        }
    }
    // The one handed back comes again, through the retry topic, as a redelivery of its own.
    let again = next(&mut stream).await;
    assert_eq!(body(&again), "s-7");
    assert_eq!(again.message().message.topic, "Streamed");
    assert_eq!(again.message().reconsume_times, 1);
    assert!(
        again.queue().topic.starts_with("%RETRY%"),
        "{}",
        again.queue()
    );
    again.ack();

    c.shutdown().await;
    assert!(
        stream.next().await.is_none(),
        "the stream ends with the consumer"
    );
    drop(held);

    // s-9 was never acknowledged: its queue's committed offset stayed at it.
    let (queue, offset) = seen["s-9"].clone();
    let expected: HashSet<String> = seen
        .iter()
        .filter(|(_, (q, o))| *q == queue && *o >= offset)
        .map(|(b, _)| b.clone())
        .collect();
    let c2 = StreamConsumer::new(consumer_config(&cluster, "streamed"));
    c2.subscribe("Streamed", "*").unwrap();
    c2.start().await.unwrap();
    let mut stream = c2.stream().unwrap();
    let mut redelivered = HashSet::new();
    while redelivered.len() < expected.len() {
        let r = next(&mut stream).await;
        assert_eq!(*r.queue(), queue, "only the held-back queue comes again");
        redelivered.insert(body(&r));
        r.ack();
    }
    assert_eq!(redelivered, expected);
    c2.shutdown().await;
    p.shutdown().await;
    cluster.shutdown().await;
}
