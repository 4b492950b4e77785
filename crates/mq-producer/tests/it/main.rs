//! The producer against the real embedded cluster: the 4.5.1 DefaultMQProducerTest cases
//! (each checking what the broker stored), fault injection, lifecycle, shared instances.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    unreachable_pub
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use mq_client_api::header::PullMessageRequestHeader;
use mq_client_api::message::{decode_offset_msg_id, decode_record, sys_flag};
use mq_client_api::validate::ValidationError;
use mq_client_api::{
    ClientApiError, Message, MessageQueue, PullStatus, RequestCode, ResponseCode, SendResult,
    SendStatus,
};
use mq_client_instance::{ClientConfig, InstanceError, ServiceState};
use mq_producer::{
    HashSelector, Producer, ProducerConfig, ProducerError, SelectArg, SendContext, SendHook,
};
use mq_remoting::RemotingError;
use mq_test_support::{Cluster, Fault, alive_tasks, tasks_settle_to, with_cluster_apart};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A config with a fresh instance name, so tests do not share client instances by accident.
fn config(cluster: &Cluster, group: &str) -> ProducerConfig {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    ProducerConfig::new(group, cluster.namesrv_addr()).with_client(
        ClientConfig::new(cluster.namesrv_addr()).with_instance_name(format!("it-{n}")),
    )
}

async fn started(cluster: &Cluster, group: &str) -> Producer {
    let p = Producer::new(config(cluster, group));
    p.start().await.unwrap();
    p
}

/// Reads the stored message a send result points at, through a pull.
async fn stored(cluster: &Cluster, r: &SendResult) -> mq_client_api::MessageExt {
    let api = cluster.client_api();
    let i = (0..cluster.len())
        .find(|i| cluster.broker(*i).name() == r.message_queue.broker_name)
        .unwrap();
    let h = PullMessageRequestHeader {
        consumer_group: "check".into(),
        topic: r.message_queue.topic.clone(),
        queue_id: r.message_queue.queue_id,
        queue_offset: r.queue_offset,
        max_msg_nums: 1,
        subscription: Some("*".into()),
        ..Default::default()
    };
    let pulled = api
        .pull(&cluster.broker_addr(i), &h, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(pulled.status, PullStatus::Found);
    pulled.messages.into_iter().next().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_message_is_refused_before_any_io() {
    let cluster = Cluster::builder().start().await.unwrap();
    let p = started(&cluster, "zero").await;
    let e = p
        .send(Message::new("FooBar", ""))
        .await
        .unwrap_err()
        .into_error();
    assert!(
        matches!(e, ProducerError::Validation(ValidationError::EmptyBody)),
        "{e:?}"
    );
    assert!(e.to_string().contains("message body length is zero"));
    assert!(!e.possibly_delivered());
    // A property set without a check that would corrupt the properties string is refused too,
    // in a single send and in a batch.
    let mut bad = Message::new("FooBar", "a");
    bad.set_property("Custom", "one\u{2}two");
    // A refused send hands the message back: fixed, it can go again.
    let (e, back) = p.send(bad).await.unwrap_err().into_parts();
    assert!(
        matches!(&e, ProducerError::Validation(ValidationError::BadProperty { name }) if name == "Custom"),
        "{e:?}"
    );
    let mut back = back;
    assert_eq!(back.property("Custom"), Some("one\u{2}two"));
    let (e, batch) = p
        .send_batch(vec![Message::new("FooBar", "ok"), back.clone()])
        .await
        .unwrap_err()
        .into_parts();
    assert!(
        matches!(
            e,
            ProducerError::Validation(ValidationError::BadProperty { .. })
        ),
        "{e:?}"
    );
    assert_eq!(batch.len(), 2, "the batch is handed back");
    back.set_property("Custom", "one two");
    assert_eq!(p.send(back).await.unwrap().status, SendStatus::SendOk);
    p.shutdown().await;
    cluster.shutdown().await;
}

#[tokio::test]
async fn no_name_server_is_a_typed_error() {
    let p = Producer::new(
        ProducerConfig::new("nons", "")
            .with_client(ClientConfig::default().with_instance_name("nons")),
    );
    p.start().await.unwrap();
    let e = p
        .send(Message::new("FooBar", "a"))
        .await
        .unwrap_err()
        .into_error();
    assert!(matches!(e, ProducerError::NoNameServer), "{e:?}");
    assert!(e.to_string().contains("no name server address"));
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_route_names_what_was_tried() {
    let cluster = Cluster::builder()
        .auto_create_topic(false)
        .start()
        .await
        .unwrap();
    let p = started(&cluster, "noroute").await;
    let e = p
        .send(Message::new("FooBar", "a"))
        .await
        .unwrap_err()
        .into_error();
    match &e {
        ProducerError::NoRoute {
            topic,
            name_servers,
            template,
        } => {
            assert_eq!(topic, "FooBar");
            assert_eq!(name_servers, &vec![cluster.namesrv_addr()]);
            assert_eq!(template, "TBW102");
        }
        other => panic!("expected NoRoute, got {other:?}"),
    }
    p.shutdown().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_send_is_stored_as_sent() {
    let cluster = Cluster::builder().start().await.unwrap();
    let p = started(&cluster, "sync").await;
    let msg = Message::new("FooBar", "a")
        .with_tags("TagA")
        .with_keys(["k1"]);
    let r = p.send(msg).await.unwrap();
    assert_eq!(r.status, SendStatus::SendOk);
    assert_eq!(r.message_queue.topic, "FooBar");
    assert_eq!(r.msg_id.len(), 32);
    let m = stored(&cluster, &r).await;
    assert_eq!(&m.message.body[..], b"a");
    assert_eq!(m.message.tags(), Some("TagA"));
    assert_eq!(m.msg_id(), r.msg_id, "UNIQ_KEY stored as reported");
    assert_eq!(m.offset_msg_id(), r.offset_msg_id);
    p.shutdown().await;
    cluster.shutdown().await;
}

fn big() -> Message {
    Message::new("FooBar", "This is a very huge message!")
}

async fn assert_stored_compressed(cluster: &Cluster, r: &SendResult) {
    let (_, phys) = decode_offset_msg_id(&r.offset_msg_id).unwrap();
    let raw = cluster.broker(0).store().read_record(phys).unwrap();
    let rec = decode_record(&mut raw.clone(), true, false).unwrap();
    assert_ne!(rec.sys_flag & sys_flag::COMPRESSED, 0, "stored compressed");
    assert_ne!(&rec.message.body[..], b"This is a very huge message!");
    let m = stored(cluster, r).await;
    assert_eq!(
        &m.message.body[..],
        b"This is a very huge message!",
        "inflated on read"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_send_with_compressed_body() {
    let cluster = Cluster::builder().start().await.unwrap();
    let p = Producer::new(config(&cluster, "compress").with_compress_over(16));
    p.start().await.unwrap();
    let r = p.send(big()).await.unwrap();
    assert_stored_compressed(&cluster, &r).await;
    p.shutdown().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_sends_as_future_and_callback() {
    let cluster = Cluster::builder().start().await.unwrap();
    let p = Producer::new(config(&cluster, "async").with_compress_over(16));
    p.start().await.unwrap();
    let r = p.send_async(Message::new("FooBar", "a")).await.unwrap();
    assert_eq!(&stored(&cluster, &r).await.message.body[..], b"a");
    let r = p.send_async(big()).await.unwrap();
    assert_stored_compressed(&cluster, &r).await;
    let (tx, rx) = tokio::sync::oneshot::channel();
    p.send_with_callback(Message::new("FooBar", "cb"), move |r| {
        tx.send(r).unwrap();
    })
    .unwrap();
    let r = rx.await.unwrap().unwrap();
    assert_eq!(&stored(&cluster, &r).await.message.body[..], b"cb");
    p.shutdown().await;
    cluster.shutdown().await;
}

#[derive(Default)]
struct Recorder {
    before: AtomicU32,
    after_ok: AtomicU32,
    after_err: AtomicU32,
    codes: parking_lot::Mutex<Vec<Option<ResponseCode>>>,
    ids: parking_lot::Mutex<Vec<String>>,
    /// The body of each attempt (a batch's: its records).
    bodies: parking_lot::Mutex<Vec<usize>>,
}

impl SendHook for Recorder {
    fn name(&self) -> &str {
        "recorder"
    }
    fn before(&self, ctx: &SendContext<'_>) {
        assert!(ctx.result.is_none() && ctx.error.is_none());
        // A batch's context carries the batch wrapper, which has no id of its own.
        if let Some(id) = ctx.message.uniq_key() {
            self.ids.lock().push(id.to_owned());
        }
        self.bodies.lock().push(ctx.message.body.len());
        self.before.fetch_add(1, Ordering::SeqCst);
    }
    fn after(&self, ctx: &SendContext<'_>) {
        match (ctx.result, ctx.error) {
            (Some(r), None) => {
                assert_eq!(r.message_queue, *ctx.queue);
                if let Some(id) = ctx.message.uniq_key() {
                    assert_eq!(id, r.msg_id);
                }
                self.after_ok.fetch_add(1, Ordering::SeqCst);
            }
            (None, Some(e)) => {
                self.codes.lock().push(e.response_code());
                self.after_err.fetch_add(1, Ordering::SeqCst);
            }
            other => panic!("after-hook with {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_see_each_sync_attempt() {
    let cluster = Cluster::builder().start().await.unwrap();
    let p = started(&cluster, "hooked").await;
    let rec = Arc::new(Recorder::default());
    p.add_hook(rec.clone());
    let r = p.send(Message::new("FooBar", "a")).await.unwrap();
    assert_eq!(&stored(&cluster, &r).await.message.body[..], b"a");
    assert_eq!(rec.before.load(Ordering::SeqCst), 1);
    assert_eq!(rec.after_ok.load(Ordering::SeqCst), 1);
    p.shutdown().await;
    cluster.shutdown().await;
}

/// With a namespace the broker stores under `ns%topic`, while the result and the hooks speak of
/// the user's topic, with and without hooks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_wraps_the_stored_topic_but_not_the_result() {
    let cluster = Cluster::builder().start().await.unwrap();
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let p = Producer::new(
        ProducerConfig::new("spaced", cluster.namesrv_addr()).with_client(
            ClientConfig::new(cluster.namesrv_addr())
                .with_instance_name(format!("it-{n}"))
                .with_namespace("ns1"),
        ),
    );
    p.start().await.unwrap();
    let plain = p.send(Message::new("Spaced", "a")).await.unwrap();
    let rec = Arc::new(Recorder::default());
    p.add_hook(rec.clone());
    let hooked = p.send(Message::new("Spaced", "b")).await.unwrap();
    for (r, body) in [(&plain, b"a"), (&hooked, b"b")] {
        assert_eq!(r.message_queue.topic, "Spaced");
        let mut wrapped = r.clone();
        wrapped.message_queue.topic = "ns1%Spaced".into();
        let m = stored(&cluster, &wrapped).await;
        assert_eq!(&m.message.body[..], body);
        assert_eq!(m.message.topic, "ns1%Spaced");
    }
    // The recorder checks that the after-hook's queue is the result's queue.
    assert_eq!(rec.after_ok.load(Ordering::SeqCst), 1);
    p.shutdown().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_is_a_checked_state_machine() {
    let cluster = Cluster::builder().start().await.unwrap();
    let p = Producer::new(config(&cluster, "states"));
    assert_eq!(p.state(), ServiceState::Created);
    assert!(matches!(
        p.send(Message::new("T", "a"))
            .await
            .map_err(ProducerError::from),
        Err(ProducerError::State(ServiceState::Created))
    ));
    p.start().await.unwrap();
    assert!(matches!(
        p.start().await,
        Err(ProducerError::State(ServiceState::Running))
    ));
    p.shutdown().await;
    assert_eq!(p.state(), ServiceState::ShutdownAlready);
    assert!(matches!(
        p.send(Message::new("T", "a"))
            .await
            .map_err(ProducerError::from),
        Err(ProducerError::State(ServiceState::ShutdownAlready))
    ));
    let bad = Producer::new(config(&cluster, "DEFAULT_PRODUCER"));
    assert!(matches!(bad.start().await, Err(ProducerError::Config(_))));
    assert_eq!(bad.state(), ServiceState::StartFailed);
    assert!(matches!(
        bad.start().await,
        Err(ProducerError::State(ServiceState::StartFailed))
    ));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producers_of_one_client_id_share_an_instance() {
    let cluster = Cluster::builder().start().await.unwrap();
    let cfg = config(&cluster, "shared-a");
    let a = Producer::new(cfg.clone());
    let mut cfg_b = cfg.clone();
    cfg_b.group = "shared-b".into();
    let b = Producer::new(cfg_b);
    a.start().await.unwrap();
    b.start().await.unwrap();
    assert!(Arc::ptr_eq(&a.instance().unwrap(), &b.instance().unwrap()));
    let dup = Producer::new(cfg);
    assert!(
        matches!(dup.start().await, Err(ProducerError::Instance(_))),
        "same group twice"
    );
    a.shutdown().await;
    let r = b.send(Message::new("FooBar", "still")).await.unwrap();
    assert_eq!(&stored(&cluster, &r).await.message.body[..], b"still");
    assert_eq!(b.instance().unwrap().state(), ServiceState::Running);
    b.shutdown().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_busy_on_one_broker_moves_the_retry_to_the_other() {
    let cluster = Cluster::builder().brokers(2).start().await.unwrap();
    cluster.faults(0).inject(
        RequestCode::SEND_MESSAGE_V2.0,
        Fault::Respond(ResponseCode::SYSTEM_BUSY.0),
    );
    let p = started(&cluster, "busy").await;
    // On both brokers (creation is not a send, so broker-a's fault does not refuse it):
    // auto-creation would put the topic on broker-b alone, and round-robin would never try a.
    p.create_topic("TBW102", "Spread", 4).await.unwrap();
    let rec = Arc::new(Recorder::default());
    p.add_hook(rec.clone());
    for i in 0..20 {
        let r = p
            .send(Message::new("Spread", format!("m{i}")))
            .await
            .unwrap();
        assert_eq!(r.message_queue.broker_name, "broker-b");
        assert_eq!(
            stored(&cluster, &r).await.message.body,
            Bytes::from(format!("m{i}"))
        );
    }
    let busy = cluster.faults(0).hits(RequestCode::SEND_MESSAGE_V2.0);
    assert!(busy > 0, "round-robin tried broker-a");
    assert_eq!(
        rec.after_err.load(Ordering::SeqCst) as u64,
        busy,
        "hooks saw every failed attempt"
    );
    assert!(
        rec.codes
            .lock()
            .iter()
            .all(|c| *c == Some(ResponseCode::SYSTEM_BUSY))
    );
    assert_eq!(rec.after_ok.load(Ordering::SeqCst), 20);
    // The unique id is set once per message and kept across its retries.
    let mut ids = rec.ids.lock().clone();
    assert_eq!(ids.len() as u64, 20 + busy);
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 20);
    // Both busy: the error names every attempt's broker, each retry on the other one.
    cluster.faults(1).inject(
        RequestCode::SEND_MESSAGE_V2.0,
        Fault::Respond(ResponseCode::SYSTEM_BUSY.0),
    );
    match p
        .send(Message::new("Spread", "refused"))
        .await
        .map_err(ProducerError::from)
    {
        Err(ProducerError::SendFailed {
            attempts, brokers, ..
        }) => {
            assert_eq!(attempts, 3);
            assert_eq!(brokers.len(), 3, "{brokers:?}");
            assert!(brokers.windows(2).all(|w| w[0] != w[1]), "{brokers:?}");
        }
        other => panic!("expected SendFailed, got {other:?}"),
    }
    p.shutdown().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_sends_retry_on_broker_codes() {
    let cluster = Cluster::builder().start().await.unwrap();
    let p = started(&cluster, "async-retry").await;
    // Warm the route so the injected answer meets the send itself.
    p.send(Message::new("Retry", "warm")).await.unwrap();
    let rec = Arc::new(Recorder::default());
    p.add_hook(rec.clone());
    cluster.faults(0).inject_times(
        RequestCode::SEND_MESSAGE_V2.0,
        Fault::Respond(ResponseCode::SYSTEM_BUSY.0),
        1,
    );
    let r = p
        .send_async(Message::new("Retry", "after-busy"))
        .await
        .unwrap();
    assert_eq!(&stored(&cluster, &r).await.message.body[..], b"after-busy");
    assert_eq!(rec.after_err.load(Ordering::SeqCst), 1);
    assert_eq!(rec.after_ok.load(Ordering::SeqCst), 1);
    // A code that is not retryable ends the send at once, with the code as data.
    cluster.faults(0).inject_times(
        RequestCode::SEND_MESSAGE_V2.0,
        Fault::Respond(ResponseCode::MESSAGE_ILLEGAL.0),
        1,
    );
    let e = p
        .send_async(Message::new("Retry", "x"))
        .await
        .unwrap_err()
        .into_error();
    assert_eq!(e.response_code(), Some(ResponseCode::MESSAGE_ILLEGAL));
    assert_eq!(e.attempts(), 1);
    p.shutdown().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_broker_fails_the_send_by_its_deadline() {
    let cluster = Cluster::builder().start().await.unwrap();
    let deadline = Duration::from_secs(1);
    let p = Producer::new(config(&cluster, "stall").with_send_timeout(deadline));
    p.start().await.unwrap();
    p.send(Message::new("Stall", "warm")).await.unwrap();
    cluster
        .faults(0)
        .inject(RequestCode::SEND_MESSAGE_V2.0, Fault::Stall);
    let started = Instant::now();
    let e = p
        .send(Message::new("Stall", "x"))
        .await
        .unwrap_err()
        .into_error();
    let elapsed = started.elapsed();
    assert!(
        matches!(&e, ProducerError::SendFailed { source, .. }
            if matches!(**source, ClientApiError::Remoting(RemotingError::Timeout { .. })))
            || matches!(e, ProducerError::DeadlineExceeded { .. }),
        "{e:?}"
    );
    assert!(e.possibly_delivered());
    // The bound a caller relies on: the deadline plus scheduling slack, not 3 × the timeout.
    assert!(
        elapsed < deadline + Duration::from_millis(500),
        "took {elapsed:?}"
    );
    cluster.faults(0).clear();
    p.shutdown().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_continue_on_the_survivor_when_a_broker_dies() {
    let cluster = Cluster::builder().brokers(2).start().await.unwrap();
    let p = started(&cluster, "survive").await;
    // On both brokers before the first send: auto-creation through TBW102 would put the topic
    // on whichever broker took the first send only, and there would be no failover to test.
    p.create_topic("TBW102", "Survive", 4).await.unwrap();
    let mut by_broker = std::collections::HashMap::<String, u32>::new();
    for i in 0..40 {
        if i == 20 {
            cluster.stop_broker(1).await;
        }
        let r = p
            .send(Message::new("Survive", format!("m{i}")))
            .await
            .unwrap();
        if i >= 20 {
            assert_eq!(r.message_queue.broker_name, "broker-a", "message {i}");
        }
        *by_broker.entry(r.message_queue.broker_name).or_default() += 1;
    }
    assert!(
        by_broker["broker-b"] > 0,
        "both brokers served before the stop"
    );
    p.shutdown().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_selectors_explicit_queues_and_oneway() {
    let cluster = Cluster::builder().start().await.unwrap();
    let p = started(&cluster, "modes").await;
    let msgs: Vec<Message> = (0..10)
        .map(|i| Message::new("Modes", format!("b{i}")))
        .collect();
    let r = p.send_batch(msgs).await.unwrap();
    assert_eq!(r.msg_id.split(',').count(), 10);
    let api = cluster.client_api();
    let h = PullMessageRequestHeader {
        consumer_group: "check".into(),
        topic: "Modes".into(),
        queue_id: r.message_queue.queue_id,
        queue_offset: r.queue_offset,
        max_msg_nums: 32,
        subscription: Some("*".into()),
        ..Default::default()
    };
    let pulled = api
        .pull(&cluster.broker_addr(0), &h, Duration::from_secs(5))
        .await
        .unwrap();
    let bodies: Vec<Bytes> = pulled
        .messages
        .iter()
        .map(|m| m.message.body.clone())
        .collect();
    let expected: Vec<Bytes> = (0..10).map(|i| Bytes::from(format!("b{i}"))).collect();
    assert_eq!(bodies, expected);
    let ids: Vec<String> = pulled.messages.iter().map(|m| m.msg_id()).collect();
    assert_eq!(ids.join(","), r.msg_id);
    assert!(matches!(
        p.send_batch(vec![]).await.map_err(ProducerError::from),
        Err(ProducerError::Batch(_))
    ));

    let key = SelectArg::from("order-7");
    let first = p
        .send_with_selector(Message::new("Modes", "s1"), &HashSelector, &key)
        .await
        .unwrap();
    let second = p
        .send_with_selector(Message::new("Modes", "s2"), &HashSelector, &key)
        .await
        .unwrap();
    assert_eq!(first.message_queue, second.message_queue);
    assert_eq!(
        second.queue_offset,
        first.queue_offset + 1,
        "same queue, in order"
    );

    let q = MessageQueue::new("Modes", "broker-a", 3);
    let r = p
        .send_to_queue(Message::new("Modes", "q"), q.clone())
        .await
        .unwrap();
    assert_eq!(r.message_queue, q);
    let e = p
        .send_to_queue(Message::new("Other", "q"), q)
        .await
        .unwrap_err()
        .into_error();
    assert!(matches!(e, ProducerError::TopicMismatch { .. }));

    p.send_oneway(Message::new("Oneway", "o")).await.unwrap();
    assert_eq!(p.state(), ServiceState::Running);
    p.shutdown().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_operations() {
    let cluster = Cluster::builder().brokers(2).start().await.unwrap();
    let p = started(&cluster, "admin").await;
    p.create_topic("TBW102", "Created", 2).await.unwrap();
    // Once create_topic returns, the name server routes the topic to every broker (each
    // registered it before answering).
    let route = cluster
        .client_api()
        .topic_route("Created", Duration::from_secs(5))
        .await
        .unwrap();
    let mut brokers: Vec<&str> = route
        .queue_datas
        .iter()
        .map(|q| q.broker_name.as_str())
        .collect();
    brokers.sort_unstable();
    assert_eq!(brokers, ["broker-a", "broker-b"]);
    let before = mq_client_api::wire_time::now_millis();
    let r = p.send(Message::new("Created", "x")).await.unwrap();
    let after = mq_client_api::wire_time::now_millis();
    assert!(
        r.message_queue.queue_id < 2,
        "the topic has the queues asked for"
    );
    assert_eq!(
        p.max_offset(&r.message_queue).await.unwrap(),
        r.queue_offset + 1
    );
    assert_eq!(p.min_offset(&r.message_queue).await.unwrap(), 0);
    let t = p.earliest_msg_store_time(&r.message_queue).await.unwrap();
    assert_eq!(p.search_offset(&r.message_queue, t).await.unwrap(), 0);
    let viewed = p.view_message(&r.offset_msg_id).await.unwrap();
    assert_eq!(&viewed.message.body[..], b"x");
    assert_eq!(viewed.msg_id(), r.msg_id);
    // Born while it was being sent (the time its id was made of).
    let born = viewed.born_timestamp;
    assert!(
        (before..=after).contains(&born),
        "{before} <= {born} <= {after}"
    );
    p.shutdown().await;
    cluster.shutdown().await;
}

struct Tx;

impl mq_producer::TransactionListener for Tx {
    fn execute(&self, msg: &Message, arg: &str) -> mq_producer::LocalTransactionState {
        assert_eq!(arg, "ctx");
        assert!(msg.transaction_id.is_some());
        match &msg.body[..] {
            b"commit" => mq_producer::LocalTransactionState::Commit,
            b"rollback" => mq_producer::LocalTransactionState::Rollback,
            _ => mq_producer::LocalTransactionState::Unknown,
        }
    }
    fn check(&self, msg: &mq_client_api::MessageExt) -> mq_producer::LocalTransactionState {
        assert_eq!(&msg.message.body[..], b"unknown");
        assert_eq!(msg.message.topic, "TxP", "the check carries the real topic");
        mq_producer::LocalTransactionState::Commit
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_commit_roll_back_and_answer_checks() {
    let cluster = Cluster::builder()
        .configure(|c| c.with_transaction_timeout(Duration::from_millis(200)))
        .start()
        .await
        .unwrap();
    let tp =
        mq_producer::TransactionProducer::new(Producer::new(config(&cluster, "txp")), Arc::new(Tx));
    tp.start().await.unwrap();
    let mut states = Vec::new();
    for body in ["commit", "rollback", "unknown"] {
        let r = tp
            .send_in_transaction(Message::new("TxP", body), "ctx")
            .await
            .unwrap();
        assert_eq!(r.send.status, SendStatus::SendOk);
        states.push(r.local_state);
    }
    assert_eq!(
        states,
        vec![
            mq_producer::LocalTransactionState::Commit,
            mq_producer::LocalTransactionState::Rollback,
            mq_producer::LocalTransactionState::Unknown
        ]
    );
    // Read every queue of the topic (long polling) until the two committed messages arrived.
    let api = cluster.client_api();
    let mut bodies = Vec::new();
    let mut offsets = [0i64; 4];
    let started = Instant::now();
    while bodies.len() < 2 && started.elapsed() < Duration::from_secs(30) {
        for q in 0..4 {
            let h = PullMessageRequestHeader {
                consumer_group: "check".into(),
                topic: "TxP".into(),
                queue_id: q,
                queue_offset: offsets[q as usize],
                max_msg_nums: 8,
                sys_flag: mq_client_api::header::pull_sys_flag::SUSPEND,
                suspend_timeout_millis: 200,
                subscription: Some("*".into()),
                ..Default::default()
            };
            let r = api
                .pull(&cluster.broker_addr(0), &h, Duration::from_secs(5))
                .await
                .unwrap();
            offsets[q as usize] = r.next_begin_offset;
            bodies.extend(r.messages.into_iter().map(|m| m.message.body));
        }
    }
    bodies.sort();
    assert_eq!(
        bodies,
        vec![
            Bytes::from_static(b"commit"),
            Bytes::from_static(b"unknown")
        ]
    );
    let total: i64 = offsets.iter().sum();
    assert_eq!(total, 2, "the rolled-back message never became visible");
    tp.shutdown().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_batching_gathers_async_sends_and_keeps_per_message_results() {
    let cluster = Cluster::builder().start().await.unwrap();
    let p = Producer::new(config(&cluster, "batched").with_batching(
        mq_producer::BatchingConfig::new(Duration::from_millis(20), 1 << 20, 64),
    ));
    p.start().await.unwrap();
    let rec = Arc::new(Recorder::default());
    p.add_hook(rec.clone());
    let futures: Vec<_> = (0..1000)
        .map(|i| p.send_async(Message::new("Gathered", format!("g{i}"))))
        .collect();
    let mut results = Vec::new();
    for f in futures {
        results.push(f.await.unwrap());
    }
    let attempts = rec.before.load(Ordering::SeqCst);
    assert!(attempts < 100, "1000 sends went out in {attempts} requests");
    let mut offsets: Vec<&str> = results.iter().map(|r| r.offset_msg_id.as_str()).collect();
    offsets.sort_unstable();
    offsets.dedup();
    assert_eq!(offsets.len(), 1000, "every message has its own offset id");
    for i in [0usize, 1, 499, 999] {
        let m = stored(&cluster, &results[i]).await;
        assert_eq!(
            m.message.body,
            Bytes::from(format!("g{i}")),
            "result {i} points at its own message"
        );
        assert_eq!(m.msg_id(), results[i].msg_id);
        assert_eq!(m.offset_msg_id(), results[i].offset_msg_id);
    }
    // A timer message goes alone, so the broker keeps its time (and answers its recall
    // handle); in a batch it would be delivered at once.
    let timer = p
        .send_async(Message::new("Gathered", "later").with_delay(Duration::from_secs(60)))
        .await
        .unwrap();
    assert!(timer.recall_handle.is_some(), "{timer:?}");
    p.shutdown().await;
    cluster.shutdown().await;
}

/// A batched send gives its room in the in-flight bounds back with its outcome, not when the
/// caller drops its future: a caller that keeps finished futures around can still send.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batched_send_frees_its_room_with_its_outcome() {
    let cluster = Cluster::builder().start().await.unwrap();
    let p = Producer::new(
        config(&cluster, "batched-room")
            .with_max_in_flight(1, 1 << 20)
            .with_batching(mq_producer::BatchingConfig::new(
                Duration::from_millis(1),
                1 << 20,
                16,
            )),
    );
    p.start().await.unwrap();
    let mut kept = Vec::new();
    for i in 0..3 {
        let mut f = p.send_async(Message::new("Room", format!("r{i}")));
        let r = (&mut f).await.unwrap();
        assert_eq!(r.message_queue.topic, "Room");
        assert_eq!(p.in_flight(), 0, "send {i}: {f:?} still holds room");
        kept.push(f);
    }
    p.flush(Duration::from_secs(5)).await.unwrap();
    drop(kept);
    p.shutdown().await;
    cluster.shutdown().await;
}

/// With auto-batching on, `try_send_async` gathers sends as `send_async` does, and still
/// refuses at once past the in-flight bounds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_send_async_joins_the_auto_batch() {
    let cluster = Cluster::builder().start().await.unwrap();
    let p = Producer::new(
        config(&cluster, "batched-try")
            .with_max_in_flight(100, 1 << 20)
            .with_batching(mq_producer::BatchingConfig::new(
                Duration::from_millis(20),
                1 << 20,
                64,
            )),
    );
    p.start().await.unwrap();
    let rec = Arc::new(Recorder::default());
    p.add_hook(rec.clone());
    let futures: Vec<_> = (0..100)
        .map(|i| {
            p.try_send_async(Message::new("TryGathered", format!("t{i}")))
                .unwrap()
        })
        .collect();
    assert!(matches!(
        p.try_send_async(Message::new("TryGathered", "over"))
            .map_err(ProducerError::from),
        Err(ProducerError::QueueFull { messages: 100, .. })
    ));
    let mut results = Vec::new();
    for f in futures {
        results.push(f.await.unwrap());
    }
    let attempts = rec.before.load(Ordering::SeqCst);
    assert!(attempts <= 10, "100 sends went out in {attempts} requests");
    for i in [0usize, 63, 64, 99] {
        let m = stored(&cluster, &results[i]).await;
        assert_eq!(m.message.body, Bytes::from(format!("t{i}")));
        assert_eq!(m.msg_id(), results[i].msg_id);
    }
    p.shutdown().await;
    cluster.shutdown().await;
}

/// Messages that joined a batch before the shutdown began are sent within its grace, not
/// failed because the batch's linger ended after it began; a send after it is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_sends_the_batch_its_messages_joined_before() {
    let cluster = Cluster::builder().start().await.unwrap();
    let p = Producer::new(config(&cluster, "batched-shutdown").with_batching(
        mq_producer::BatchingConfig::new(Duration::from_millis(500), 1 << 20, 64),
    ));
    p.start().await.unwrap();
    // The route is known first: the batch's send then waits on nothing but the broker.
    p.send(Message::new("Lingering", "warm")).await.unwrap();
    let futures: Vec<_> = (0..3)
        .map(|i| p.send_async(Message::new("Lingering", format!("l{i}"))))
        .collect();
    let (cut_short, results) = tokio::join!(
        p.shutdown_with_deadline(Duration::from_secs(20)),
        futures_util::future::join_all(futures)
    );
    assert_eq!(cut_short, 0);
    for (i, r) in results.into_iter().enumerate() {
        let r = r.unwrap_or_else(|e| panic!("message {i}: {e:?}"));
        let m = stored(&cluster, &r).await;
        assert_eq!(m.message.body, Bytes::from(format!("l{i}")));
    }
    let refused = p.send_async(Message::new("Lingering", "late")).await;
    assert!(
        matches!(
            refused.as_ref().map_err(|e| e.error()),
            Err(ProducerError::State(_))
        ),
        "{refused:?}"
    );
    cluster.shutdown().await;
}

/// Sends to two topics, with and without waiting for the store, interleaved: every batch holds
/// messages of one topic and one flag, and each result points at its own message, stored with
/// its own flag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_batching_keeps_topics_and_wait_flags_apart() {
    let cluster = Cluster::builder().start().await.unwrap();
    let p = Producer::new(config(&cluster, "batched-apart").with_batching(
        mq_producer::BatchingConfig::new(Duration::from_millis(20), 1 << 20, 16),
    ));
    p.start().await.unwrap();
    let sent: Vec<(&str, bool, String)> = (0..200)
        .map(|i| {
            let topic = if i % 2 == 0 { "ApartA" } else { "ApartB" };
            (topic, i % 3 != 0, format!("a{i}"))
        })
        .collect();
    // Twice the batch size of each kind, and a rest that only the linger timer sends.
    let futures: Vec<_> = sent
        .iter()
        .map(|(topic, wait, body)| {
            p.send_async(Message::new(*topic, body.clone()).with_wait_store_msg_ok(*wait))
        })
        .collect();
    let mut results = Vec::new();
    for f in futures {
        results.push(f.await.unwrap());
    }
    for ((topic, wait, body), r) in sent.iter().zip(&results) {
        assert_eq!(r.message_queue.topic, *topic, "{body}");
        let m = stored(&cluster, r).await;
        assert_eq!(m.message.body, Bytes::from(body.clone()));
        assert_eq!(m.message.wait_store_msg_ok(), *wait, "{body}");
        assert_eq!(m.msg_id(), r.msg_id);
    }
    p.shutdown().await;
    cluster.shutdown().await;
}

/// A message that breaks a rule is refused alone: its batchmates are sent, in one request,
/// and it comes back with its own error and body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_breaks_a_rule_is_refused_alone_in_its_batch() {
    let cluster = Cluster::builder().start().await.unwrap();
    let p = Producer::new(config(&cluster, "batched-rule").with_batching(
        mq_producer::BatchingConfig::new(Duration::from_secs(1), 1 << 20, 64),
    ));
    p.start().await.unwrap();
    // The topic's route is known first: the count below is then the batch's requests alone.
    p.send(Message::new("Ruled", "warm")).await.unwrap();
    let rec = Arc::new(Recorder::default());
    p.add_hook(rec.clone());
    let mut bad = Message::new("Ruled", "bad");
    bad.set_property("Custom", "one\u{2}two");
    let mut futures: Vec<_> = (0..5)
        .map(|i| p.send_async(Message::new("Ruled", format!("r{i}"))))
        .collect();
    let refused = p.send_async(bad);
    futures.extend((5..10).map(|i| p.send_async(Message::new("Ruled", format!("r{i}")))));
    let (e, back) = refused.await.unwrap_err().into_parts();
    assert!(
        matches!(&e, ProducerError::Validation(ValidationError::BadProperty { name }) if name == "Custom"),
        "{e:?}"
    );
    assert_eq!(back.body, Bytes::from("bad"), "the message is handed back");
    for (i, f) in futures.into_iter().enumerate() {
        let r = f.await.unwrap();
        let m = stored(&cluster, &r).await;
        assert_eq!(m.message.body, Bytes::from(format!("r{i}")));
    }
    assert_eq!(rec.before.load(Ordering::SeqCst), 1, "ten sends, one batch");
    p.shutdown().await;
    cluster.shutdown().await;
}

/// A batch body never outgrows the largest message a producer sends: a batch with no room
/// for the next message's record is sent as it is, and that message opens the next one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_batches_stay_within_the_largest_message() {
    let cluster = Cluster::builder().start().await.unwrap();
    let p = Producer::new(
        config(&cluster, "batched-size")
            .with_max_message_size(1024)
            .with_batching(mq_producer::BatchingConfig::new(
                Duration::from_millis(50),
                1 << 20,
                64,
            )),
    );
    p.start().await.unwrap();
    p.send(Message::new("Sized", "warm")).await.unwrap();
    let rec = Arc::new(Recorder::default());
    p.add_hook(rec.clone());
    let bodies: Vec<String> = (0..20).map(|i| format!("{i:0>300}")).collect();
    let futures: Vec<_> = bodies
        .iter()
        .map(|b| p.send_async(Message::new("Sized", b.clone())))
        .collect();
    for (body, f) in bodies.iter().zip(futures) {
        let r = f.await.unwrap();
        assert_eq!(
            stored(&cluster, &r).await.message.body,
            Bytes::from(body.clone())
        );
    }
    // Two records of 300-byte bodies fit in 1024 bytes, three do not: at least 10 requests
    // (more if a linger timer ended a batch of one first), none past the size.
    let bodies = rec.bodies.lock().clone();
    assert!(bodies.len() >= 10, "{bodies:?}");
    assert!(bodies.iter().all(|&n| n <= 1024), "{bodies:?}");
    p.shutdown().await;
    cluster.shutdown().await;
}

/// A failed batch hands each sender its own message back, with its id, so that it can be
/// sent again as the same message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_batch_hands_each_message_back() {
    let cluster = Cluster::builder().start().await.unwrap();
    let p = Producer::new(
        config(&cluster, "batched-failed")
            .with_retries(0, 0)
            .with_batching(mq_producer::BatchingConfig::new(
                Duration::from_secs(1),
                1 << 20,
                64,
            )),
    );
    p.start().await.unwrap();
    p.send(Message::new("Refusing", "warm")).await.unwrap();
    cluster.faults(0).inject(
        RequestCode::SEND_BATCH_MESSAGE.0,
        Fault::Respond(ResponseCode::SYSTEM_ERROR.0),
    );
    let futures: Vec<_> = (0..8)
        .map(|i| p.send_async(Message::new("Refusing", format!("f{i}"))))
        .collect();
    let mut ids = Vec::new();
    for (i, f) in futures.into_iter().enumerate() {
        let (e, back) = f.await.unwrap_err().into_parts();
        assert!(
            matches!(&e, ProducerError::BatchFailed { topic, size: 8, .. } if topic == "Refusing"),
            "{e:?}"
        );
        assert_eq!(back.body, Bytes::from(format!("f{i}")), "its own message");
        ids.push(back.uniq_key().map(str::to_owned).expect("an id was given"));
    }
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 8, "each message has its own id");
    cluster.faults(0).clear();
    p.shutdown().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backpressure_flush_and_shutdown_account_for_every_send() {
    let cluster = Cluster::builder().start().await.unwrap();
    let p = Producer::new(
        config(&cluster, "bounded")
            .with_max_in_flight(4, 1 << 20)
            .with_send_timeout(Duration::from_secs(30)),
    );
    p.start().await.unwrap();
    p.send(Message::new("Bounded", "warm")).await.unwrap();

    // flush waits until every callback has run.
    let done = Arc::new(AtomicU32::new(0));
    for i in 0..50 {
        let d = Arc::clone(&done);
        p.send_with_callback(Message::new("Bounded", format!("f{i}")), move |r| {
            r.unwrap();
            d.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    }
    p.flush(Duration::from_secs(20)).await.unwrap();
    assert_eq!(done.load(Ordering::SeqCst), 50);

    // A stalled broker: four sends fill the bounds and wait.
    cluster
        .faults(0)
        .inject(RequestCode::SEND_MESSAGE_V2.0, Fault::Stall);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for i in 0..4 {
        let tx = tx.clone();
        p.send_with_callback(Message::new("Bounded", format!("s{i}")), move |r| {
            tx.send(r).unwrap();
        })
        .unwrap();
    }
    tokio::time::timeout(Duration::from_secs(20), async {
        while p.in_flight() < 4 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap();
    assert!(matches!(
        p.try_send_async(Message::new("Bounded", "x"))
            .map_err(ProducerError::from),
        Err(ProducerError::QueueFull { messages: 4, .. })
    ));
    // A further send waits for room, within its own deadline.
    let started = Instant::now();
    let e = p
        .send_with_timeout(Message::new("Bounded", "y"), Duration::from_millis(200))
        .await
        .unwrap_err()
        .into_error();
    assert!(
        matches!(e, ProducerError::DeadlineExceeded { attempts: 0, .. }),
        "{e:?}"
    );
    assert_eq!(e.delivery_state(), mq_producer::DeliveryState::NotSent);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(p.in_flight(), 4, "nothing queued past the bound");
    assert!(matches!(
        p.flush(Duration::from_millis(50)).await,
        Err(ProducerError::FlushTimedOut { in_flight: 4 })
    ));

    // Shutdown gives them a grace period, then ends each one with a typed error: at once,
    // not when their 30 s send timeout would end them.
    let cut_short = tokio::time::timeout(
        Duration::from_secs(10),
        p.shutdown_with_deadline(Duration::from_millis(100)),
    )
    .await
    .expect("the shutdown ends once its grace is over");
    assert_eq!(cut_short, 4);
    drop(tx);
    let mut ended = 0;
    while let Some(r) = rx.recv().await {
        // Each message comes back with its error, to be sent again or kept.
        let (e, msg) = r.unwrap_err().into_parts();
        assert!(!msg.body.is_empty(), "the message is handed back");
        assert!(matches!(e, ProducerError::ShutDown), "{e:?}");
        assert_eq!(
            e.delivery_state(),
            mq_producer::DeliveryState::PossiblyStored
        );
        ended += 1;
    }
    assert_eq!(ended, 4, "every callback ran");
    cluster.faults(0).clear();
    cluster.shutdown().await;
}

/// A cluster whose name server answers no route lookup, and a started producer with `deadline`.
async fn with_a_silent_name_server(group: &str, deadline: Duration) -> (Cluster, Producer) {
    let cluster = Cluster::builder().start().await.unwrap();
    let p = Producer::new(config(&cluster, group).with_send_timeout(deadline));
    p.start().await.unwrap();
    cluster
        .namesrv_faults()
        .inject(RequestCode::GET_ROUTEINFO_BY_TOPIC.0, Fault::Stall);
    (cluster, p)
}

#[tokio::test(start_paused = true)]
async fn a_send_fails_within_its_deadline_naming_a_silent_name_server() {
    let deadline = Duration::from_millis(500);
    let (cluster, p) = with_a_silent_name_server("silent-ns", deadline).await;
    let started = tokio::time::Instant::now();
    let e = p
        .send(Message::new("Silent", "x"))
        .await
        .unwrap_err()
        .into_error();
    // Paused time: the clock moves only to the next timer, so this is the send's own bound
    // (before, the lookup and the TBW102 fallback each waited 3 s).
    assert!(
        started.elapsed() <= deadline,
        "took {:?}",
        started.elapsed()
    );
    match &e {
        ProducerError::RouteLookup {
            topic,
            source: InstanceError::NameServerTimeout { addr, .. },
            ..
        } => {
            assert_eq!(topic, "Silent");
            assert_eq!(addr, &cluster.namesrv_addr());
        }
        other => panic!("{other:?}"),
    }
    assert!(
        e.to_string().contains(&format!(
            "name server {} did not answer",
            cluster.namesrv_addr()
        )),
        "{e}"
    );
    assert!(!e.possibly_delivered());
    assert_eq!(
        cluster
            .namesrv_faults()
            .hits(RequestCode::GET_ROUTEINFO_BY_TOPIC.0),
        1
    );

    // The name server answers again: the next send finds the route and is stored.
    cluster.namesrv_faults().clear();
    let r = p.send(Message::new("Silent", "y")).await.unwrap();
    assert_eq!(r.status, SendStatus::SendOk);
    let shutdown_started = tokio::time::Instant::now();
    p.shutdown().await;
    assert!(shutdown_started.elapsed() <= deadline);
    cluster.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn admin_calls_end_within_their_deadline_when_the_name_server_is_silent() {
    let deadline = Duration::from_millis(300);
    let (cluster, p) = with_a_silent_name_server("silent-admin", deadline).await;
    let started = tokio::time::Instant::now();
    let e = p.create_topic("TBW102", "Admin", 2).await.unwrap_err();
    assert!(
        started.elapsed() <= deadline,
        "took {:?}",
        started.elapsed()
    );
    assert!(
        matches!(
            e,
            ProducerError::Instance(InstanceError::NameServerTimeout { .. })
        ),
        "{e:?}"
    );
    let started = tokio::time::Instant::now();
    let e = p
        .max_offset(&MessageQueue::new("Admin", "broker-a", 0))
        .await
        .unwrap_err();
    assert!(
        started.elapsed() <= deadline,
        "took {:?}",
        started.elapsed()
    );
    assert!(e.to_string().contains("did not answer"), "{e}");
    cluster.namesrv_faults().clear();
    p.shutdown().await;
    cluster.shutdown().await;
}

/// What one sync send of the steady load saw.
struct Outcome {
    after_fault: bool,
    elapsed: Duration,
    result: Result<SendResult, ProducerError>,
}

/// 8 senders × 60 sync sends to a topic on both brokers; once 120 are acknowledged, `fault`
/// strikes broker-b. Checks that every send ended within `deadline`; returns the outcomes.
async fn steady_load_with_a_fault(
    cluster: &Cluster,
    p: &Producer,
    deadline: Duration,
    fault: impl AsyncFnOnce(&Cluster),
) -> Vec<Outcome> {
    const SENDERS: usize = 8;
    const PER_SENDER: usize = 60;
    p.create_topic("TBW102", "Steady", 4).await.unwrap();
    let acked = Arc::new(AtomicU32::new(0));
    let enough = Arc::new(tokio::sync::Notify::new());
    // Set once the fault is in place. (Paused time cannot order events: the clock moves only
    // to the next timer.)
    let struck = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut senders = Vec::new();
    for t in 0..SENDERS {
        let (p, acked, enough) = (p.clone(), Arc::clone(&acked), Arc::clone(&enough));
        let struck = Arc::clone(&struck);
        senders.push(tokio::spawn(async move {
            let mut seen = Vec::with_capacity(PER_SENDER);
            for i in 0..PER_SENDER {
                let after_fault = struck.load(Ordering::SeqCst);
                let started = tokio::time::Instant::now();
                let result = p.send(Message::new("Steady", format!("{t}-{i}"))).await;
                if result.is_ok() && acked.fetch_add(1, Ordering::SeqCst) + 1 == 120 {
                    enough.notify_one();
                }
                seen.push(Outcome {
                    after_fault,
                    elapsed: started.elapsed(),
                    result: result.map_err(ProducerError::from),
                });
            }
            seen
        }));
    }
    enough.notified().await;
    fault(cluster).await;
    struck.store(true, Ordering::SeqCst);
    let mut outcomes = Vec::new();
    for s in senders {
        outcomes.extend(s.await.unwrap());
    }
    assert_eq!(outcomes.len(), SENDERS * PER_SENDER);
    // Every send has an outcome within its own deadline, failed or not.
    for o in &outcomes {
        assert!(
            o.elapsed <= deadline,
            "took {:?}: {:?}",
            o.elapsed,
            o.result
        );
    }
    outcomes
}

fn acked_on(outcomes: &[Outcome], broker: &str) -> usize {
    outcomes
        .iter()
        .filter(|o| matches!(&o.result, Ok(r) if r.message_queue.broker_name == broker))
        .count()
}

/// Messages stored in broker-a's queues of the steady-load topic.
async fn stored_on_a(p: &Producer) -> usize {
    let mut stored = 0;
    for q in 0..4 {
        stored += p
            .max_offset(&MessageQueue::new("Steady", "broker-a", q))
            .await
            .unwrap();
    }
    usize::try_from(stored).unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_broker_killed_under_steady_sync_load_fails_over_and_reports_within_deadlines() {
    let cluster = Cluster::builder().brokers(2).start().await.unwrap();
    let deadline = Duration::from_secs(1);
    let p = Producer::new(config(&cluster, "kill").with_send_timeout(deadline));
    p.start().await.unwrap();
    let outcomes =
        steady_load_with_a_fault(&cluster, &p, deadline, async |c| c.kill_broker(1).await).await;
    let failed = outcomes.iter().filter(|o| o.result.is_err()).count();
    eprintln!(
        "kill: {} acked on broker-a, {} on broker-b, {failed} failed",
        acked_on(&outcomes, "broker-a"),
        acked_on(&outcomes, "broker-b"),
    );
    assert!(
        acked_on(&outcomes, "broker-b") > 0,
        "both brokers served before the kill"
    );
    // Sends made after the kill all move to the survivor, and they succeed: connection refused
    // is retried on the other broker.
    let after: Vec<&Outcome> = outcomes.iter().filter(|o| o.after_fault).collect();
    assert!(after.len() >= 8, "the load went on after the kill");
    for o in &after {
        match &o.result {
            Ok(r) => assert_eq!(r.message_queue.broker_name, "broker-a"),
            Err(e) => panic!("a send after the kill failed: {e}"),
        }
    }
    // What broker-a acknowledged is there.
    assert!(stored_on_a(&p).await >= acked_on(&outcomes, "broker-a"));
    p.shutdown().await;
    cluster.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_broker_stalled_under_steady_sync_load_fails_sends_by_their_deadline_then_is_avoided() {
    let cluster = Cluster::builder().brokers(2).start().await.unwrap();
    let deadline = Duration::from_secs(1);
    let p = Producer::new(
        config(&cluster, "stall-load")
            .with_send_timeout(deadline)
            .with_latency_fault_tolerance(true),
    );
    p.start().await.unwrap();
    // As SIGSTOP would: broker-b keeps its connections and answers nothing.
    let outcomes = steady_load_with_a_fault(&cluster, &p, deadline, async |c| {
        c.faults(1)
            .inject(RequestCode::SEND_MESSAGE_V2.0, Fault::Stall);
    })
    .await;
    let failed: Vec<&ProducerError> = outcomes
        .iter()
        .filter_map(|o| o.result.as_ref().err())
        .collect();
    eprintln!(
        "stall: {} acked on broker-a, {} on broker-b, {} failed",
        acked_on(&outcomes, "broker-a"),
        acked_on(&outcomes, "broker-b"),
        failed.len()
    );
    // A send stalled on broker-b spends its whole deadline there: it fails, reported as a
    // timeout that may have stored the message.
    assert!(!failed.is_empty());
    for e in &failed {
        assert!(
            matches!(e, ProducerError::SendFailed { source, .. }
                if matches!(**source, ClientApiError::Remoting(RemotingError::Timeout { .. })))
                || matches!(e, ProducerError::DeadlineExceeded { .. }),
            "{e:?}"
        );
        assert!(e.possibly_delivered());
    }
    // Fault tolerance then keeps sends away from broker-b: no more than one stalled send per
    // sender, and the rest of the load is stored on broker-a.
    assert!(failed.len() <= 8, "{} failed", failed.len());
    assert_eq!(
        acked_on(&outcomes, "broker-a") + acked_on(&outcomes, "broker-b") + failed.len(),
        outcomes.len()
    );
    assert!(stored_on_a(&p).await >= acked_on(&outcomes, "broker-a"));
    cluster.faults(1).clear();
    p.shutdown().await;
    cluster.shutdown().await;
}

#[test]
fn dropping_the_last_handle_stops_the_producer_once_its_sends_are_answered() {
    with_cluster_apart(Cluster::builder(), |namesrv| async move {
        let tasks = alive_tasks;
        let before = tasks();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let producer =
            Producer::new(ProducerConfig::new("drop_group", &namesrv).with_client(
                ClientConfig::new(&namesrv).with_instance_name(format!("it-drop-{n}")),
            ));
        producer.start().await.unwrap();
        producer
            .send(Message::new("DropTopic", Bytes::from_static(b"first")))
            .await
            .unwrap();
        let instance = producer.instance().unwrap();
        assert!(tasks() > before, "a running producer has tasks");

        // A clone going away changes nothing.
        let clone = producer.clone();
        drop(clone);
        assert_eq!(producer.state(), ServiceState::Running);

        // Sends made before the drop still get their answer: the future and the callback keep
        // the producer running until then.
        let pending = producer.send_async(Message::new("DropTopic", Bytes::from_static(b"f")));
        let (tx, rx) = tokio::sync::oneshot::channel();
        producer
            .send_with_callback(Message::new("DropTopic", Bytes::from_static(b"c")), |r| {
                let _ = tx.send(r);
            })
            .unwrap();
        drop(producer);
        assert_eq!(pending.await.unwrap().status, SendStatus::SendOk);
        assert_eq!(rx.await.unwrap().unwrap().status, SendStatus::SendOk);

        // Then nothing is left: the instance stopped, and no task of the client is alive.
        tokio::time::timeout(Duration::from_secs(10), instance.stopped())
            .await
            .expect("the instance's tasks outlived the dropped producer");
        assert_eq!(instance.state(), ServiceState::ShutdownAlready);
        assert_eq!(
            tasks_settle_to(before, Duration::from_secs(10)).await,
            before,
            "tasks outlived the dropped producer"
        );
    });
}

#[test]
fn dropping_an_unstarted_producer_or_an_ordered_sender_leaves_no_task() {
    with_cluster_apart(Cluster::builder(), |namesrv| async move {
        let tasks = alive_tasks;
        let before = tasks();
        drop(Producer::new(ProducerConfig::new(
            "never_started",
            &namesrv,
        )));
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let producer =
            Producer::new(ProducerConfig::new("ordered_drop", &namesrv).with_client(
                ClientConfig::new(&namesrv).with_instance_name(format!("it-drop-{n}")),
            ));
        producer.start().await.unwrap();
        let instance = producer.instance().unwrap();
        let sender = mq_producer::OrderedSender::new(producer.clone(), "OrderedDropTopic", 4)
            .await
            .unwrap();
        drop(producer);
        // Queued messages still go out after the sender is dropped, in order.
        let outcomes: Vec<_> = (0..8)
            .map(|i| {
                sender.send(
                    &SelectArg::Str("k".into()),
                    Message::new("OrderedDropTopic", Bytes::from(format!("m{i}"))),
                )
            })
            .collect();
        drop(sender);
        let mut last = None;
        for o in outcomes {
            let offset = o.await.unwrap().queue_offset;
            assert!(last.is_none_or(|l| l < offset), "out of order");
            last = Some(offset);
        }
        tokio::time::timeout(Duration::from_secs(10), instance.stopped())
            .await
            .expect("the instance's tasks outlived the dropped sender");
        assert_eq!(
            tasks_settle_to(before, Duration::from_secs(10)).await,
            before,
            "tasks outlived the dropped sender"
        );
    });
}

/// The ordered sender goes through the producer's own send path: messages are checked and
/// get their `UNIQ_KEY`, hooks see every write, and a message of another topic is refused
/// rather than redirected.
#[tokio::test]
async fn ordered_sends_take_the_producers_path() {
    let cluster = Cluster::builder().start().await.unwrap();
    let p = started(&cluster, "ordered_path").await;
    let hook = Arc::new(Recorder::default());
    p.add_hook(hook.clone());
    let sender = mq_producer::OrderedSender::new(p.clone(), "OrderedPath", 4)
        .await
        .unwrap();
    let key = SelectArg::Int(7);

    let other = sender
        .send(
            &key,
            Message::new("SomeOtherTopic", Bytes::from_static(b"x")),
        )
        .await;
    assert!(
        matches!(other, Err(ProducerError::TopicMismatch { ref message_topic, .. }) if message_topic == "SomeOtherTopic"),
        "{other:?}"
    );
    let empty = sender
        .send(&key, Message::new("OrderedPath", Bytes::new()))
        .await;
    assert!(
        matches!(
            empty,
            Err(ProducerError::Validation(ValidationError::EmptyBody))
        ),
        "{empty:?}"
    );
    assert_eq!(
        hook.before.load(Ordering::SeqCst),
        0,
        "refused before any write"
    );

    let sends: Vec<_> = (0..5)
        .map(|i| sender.send(&key, Message::new("OrderedPath", format!("m{i}"))))
        .collect();
    let mut results = Vec::new();
    for s in sends {
        results.push(s.await.unwrap());
    }
    for r in &results {
        assert!(!r.msg_id.is_empty());
        let m = stored(&cluster, r).await;
        assert_eq!(m.message.uniq_key(), Some(r.msg_id.as_str()));
        assert_eq!(r.message_queue.topic, "OrderedPath");
    }
    assert_eq!(hook.before.load(Ordering::SeqCst), 5);
    assert_eq!(hook.after_ok.load(Ordering::SeqCst), 5);
    assert_eq!(
        *hook.ids.lock(),
        results.iter().map(|r| r.msg_id.clone()).collect::<Vec<_>>()
    );
    sender.close().await;
    p.shutdown().await;
    cluster.shutdown().await;
}
