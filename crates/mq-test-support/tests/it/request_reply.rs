//! Request-reply on the embedded cluster: a requester's request answered by a consumer's reply,
//! many at once across two brokers; the deadline when nobody replies; replies nobody waits for.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use mq_client_api::message::property;
use mq_client_api::{Message, ResponseCode};
use mq_client_instance::ClientConfig;
use mq_consumer::{ConsumeFrom, ConsumeStatus, ConsumerConfig, PushConsumer, async_listener};
use mq_producer::{Producer, ProducerConfig, ProducerError, reply_message};
use mq_test_support::Cluster;
use tokio::time::Instant;

static NEXT: AtomicU32 = AtomicU32::new(0);

fn client(cluster: &Cluster, tag: &str) -> ClientConfig {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    ClientConfig::new(cluster.namesrv_addr()).with_instance_name(format!("{tag}-{n}"))
}

async fn producer(cluster: &Cluster, group: &str) -> Producer {
    let p = Producer::new(
        ProducerConfig::new(group, cluster.namesrv_addr()).with_client(client(cluster, group)),
    );
    p.start().await.unwrap();
    p
}

/// A consumer of `topic` that answers every request with `re:` and its body.
async fn replier(cluster: &Cluster, topic: &str) -> (PushConsumer, Producer) {
    let replies = producer(cluster, "replier_pg").await;
    let consumer = PushConsumer::new(
        ConsumerConfig::new("replier_cg", cluster.namesrv_addr())
            .with_client(client(cluster, "replier"))
            .with_consume_from(ConsumeFrom::FirstOffset),
    );
    consumer.subscribe(topic, "*").unwrap();
    let p = replies.clone();
    consumer
        .start_async(async_listener(move |msgs, _queue| {
            let p = p.clone();
            async move {
                for m in msgs {
                    let mut body = b"re:".to_vec();
                    body.extend_from_slice(&m.message.body);
                    if let Err(e) = p.reply(&m.message, body).await {
                        eprintln!("reply failed: {}", e.error());
                        return ConsumeStatus::ReconsumeLater;
                    }
                }
                ConsumeStatus::Success
            }
        }))
        .await
        .unwrap();
    (consumer, replies)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_across_two_brokers_each_get_their_own_reply() {
    mq_test_support::trace_init();
    let cluster = Cluster::builder().brokers(2).start().await.unwrap();
    let requester = producer(&cluster, "requester_pg").await;
    requester.create_topic("TBW102", "Rpc", 4).await.unwrap();
    let (consumer, replies) = replier(&cluster, "Rpc").await;
    let timeout = Duration::from_secs(30);

    // One, awaited.
    let reply = requester
        .request(Message::new("Rpc", "ping"), timeout)
        .await
        .unwrap();
    assert_eq!(&reply.message.body[..], b"re:ping");
    assert_eq!(reply.message.topic, "DefaultCluster_REPLY_TOPIC");
    assert_eq!(
        reply.message.property(property::MSG_TYPE),
        Some(property::REPLY_MESSAGE_FLAG)
    );
    assert!(reply.message.property(property::ARRIVE_TIME).is_some());
    assert!(reply.message.property(property::PUSH_REPLY_TIME).is_some());

    // Many in flight at once, as futures and as callbacks: each gets the reply to its own body.
    let n = 200;
    let futures: Vec<_> = (0..n)
        .map(|i| requester.request_async(Message::new("Rpc", format!("f{i}")), timeout))
        .collect();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for i in 0..n {
        let tx = tx.clone();
        requester
            .request_with_callback(Message::new("Rpc", format!("c{i}")), timeout, move |r| {
                let _ = tx.send((i, r));
            })
            .unwrap();
    }
    drop(tx);
    for (i, f) in futures.into_iter().enumerate() {
        let reply = f.await.unwrap();
        assert_eq!(reply.message.body, format!("re:f{i}").as_bytes());
    }
    let mut called = 0;
    while let Some((i, r)) = rx.recv().await {
        assert_eq!(r.unwrap().message.body, format!("re:c{i}").as_bytes());
        called += 1;
    }
    assert_eq!(called, n);
    let instance = requester.instance().unwrap();
    assert_eq!(instance.pending_replies(), 0, "every wait removed");

    consumer.shutdown().await;
    replies.shutdown().await;
    requester.shutdown().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_nobody_answers_fails_by_its_deadline_and_a_late_reply_is_dropped() {
    mq_test_support::trace_init();
    let cluster = Cluster::builder().start().await.unwrap();
    let requester = producer(&cluster, "lonely_pg").await;
    let timeout = Duration::from_millis(800);
    let started = Instant::now();
    let failed = requester
        .request(Message::new("Unanswered", "anyone?"), timeout)
        .await
        .unwrap_err();
    let elapsed = started.elapsed();
    assert!(
        matches!(failed.error(), ProducerError::NoReply { topic, .. } if topic == "Unanswered"),
        "{}",
        failed.error()
    );
    assert!(
        failed.error().possibly_delivered(),
        "the request was stored"
    );
    assert!(elapsed >= timeout, "waited the whole timeout: {elapsed:?}");
    assert!(
        elapsed < timeout + Duration::from_secs(2),
        "not much past the deadline: {elapsed:?}"
    );
    let instance = requester.instance().unwrap();
    assert_eq!(instance.pending_replies(), 0);

    // The request handed back carries what a replier needs once stored, except the cluster,
    // which its broker stamps: the stored copy has it.
    let request = failed.into_message();
    let id = request
        .property(property::CORRELATION_ID)
        .unwrap()
        .to_owned();
    assert_eq!(request.property(property::TTL), Some("800"));
    assert_eq!(
        request.property(property::REPLY_TO_CLIENT),
        Some(instance.client_id())
    );
    assert!(matches!(
        reply_message(&request, "late"),
        Err(ProducerError::NotARequest { missing: "CLUSTER" })
    ));
    let mut stored = request.clone();
    stored.set_property(property::CLUSTER, "DefaultCluster");
    let late = reply_message(&stored, "late").unwrap();
    assert_eq!(late.property(property::CORRELATION_ID), Some(id.as_str()));

    // A late reply still reaches the requester's client (the push succeeds) and is dropped.
    let replies = producer(&cluster, "late_pg").await;
    replies.send(late).await.unwrap();
    assert_eq!(instance.pending_replies(), 0);

    // A reply to a client no broker knows is refused: nobody to push it to.
    let mut orphan = stored;
    orphan.set_property(property::REPLY_TO_CLIENT, "10.0.0.1@gone");
    let refused = replies.reply(&orphan, "to nobody").await.unwrap_err();
    assert_eq!(
        refused.error().response_code(),
        Some(ResponseCode::SYSTEM_ERROR),
        "{}",
        refused.error()
    );

    replies.shutdown().await;
    requester.shutdown().await;
    cluster.shutdown().await;
}

#[test]
fn a_reply_to_something_that_is_not_a_request_is_a_typed_error() {
    let plain = Message::new("T", "x");
    let e = reply_message(&plain, "y").unwrap_err();
    assert!(matches!(
        e,
        ProducerError::NotARequest { missing: "CLUSTER" }
    ));
    let mut half = plain;
    half.set_property(property::CLUSTER, "C");
    half.set_property(property::CORRELATION_ID, "id");
    let e = reply_message(&half, "y").unwrap_err();
    assert!(matches!(
        e,
        ProducerError::NotARequest {
            missing: "REPLY_TO_CLIENT"
        }
    ));
}
