//! The ordered pipeline under injected failures: per-queue sequences are complete and in order
//! once duplicates (copies stored before a resend) are skipped, and every key keeps its order.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use mq_client_api::header::PullMessageRequestHeader;
use mq_client_api::{Message, PullStatus, RequestCode, ResponseCode};
use mq_client_instance::ClientConfig;
use mq_producer::{OrderedSender, Producer, ProducerConfig, SEQUENCE_PROPERTY, SelectArg};
use mq_test_support::{Cluster, Fault};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_pipeline_keeps_per_key_order_through_failures() {
    mq_test_support::trace_init();
    let cluster = Cluster::builder().start().await.unwrap();
    let p = Producer::new(
        ProducerConfig::new("ordered_pg", cluster.namesrv_addr())
            .with_client(
                ClientConfig::new(cluster.namesrv_addr()).with_instance_name("ordered-pipeline"),
            )
            .with_retries(10, 10),
    );
    p.start().await.unwrap();
    let sender = OrderedSender::new(p.clone(), "Pipeline", 32).await.unwrap();
    let keys = 8usize;
    let n = 100_000usize;
    let faults = cluster.faults(0);
    let send = RequestCode::SEND_MESSAGE_V2.0;
    let mut outstanding = VecDeque::new();
    let mut injected = 0;
    for i in 0..n {
        if i > 0 && i % 2_500 == 0 {
            let fault = if i % 12_500 == 0 {
                Fault::DropConnection
            } else {
                Fault::Respond(ResponseCode::SYSTEM_BUSY.0)
            };
            faults.inject_times(send, fault, 1);
            injected += 1;
        }
        let key = i % keys;
        let msg = Message::new("Pipeline", format!("{key}:{}", i / keys));
        outstanding.push_back(sender.send(&SelectArg::Int(key as i32), msg));
        if outstanding.len() >= 4096 {
            outstanding.pop_front().unwrap().await.unwrap();
        }
    }
    while let Some(f) = outstanding.pop_front() {
        f.await.unwrap();
    }
    sender.close().await;
    assert!(faults.hits(send) > 0 && injected > 0);

    let (per_key, stored, duplicates) = read_in_sequence(&cluster, "Pipeline").await;
    assert_eq!(
        stored - duplicates,
        n as u64,
        "every message kept exactly once"
    );
    for k in 0..keys {
        let got = &per_key[&k.to_string()];
        assert_eq!(
            got,
            &(0..n / keys).collect::<Vec<_>>(),
            "key {k} complete and in order"
        );
    }
    assert!(
        duplicates <= sender.resent(),
        "duplicates only come from resends ({duplicates} > {})",
        sender.resent()
    );
    eprintln!(
        "ordered pipeline: {n} messages, {injected} faults, {} resent, {duplicates} duplicates skipped",
        sender.resent()
    );
    p.shutdown().await;
    cluster.shutdown().await;
}

/// Reads every queue of `topic` in log order and keeps, per queue, only the next expected
/// sequence (as a consumer of the pipeline does): the kept bodies `key:index` by key, the
/// messages stored, and the duplicates skipped.
async fn read_in_sequence(
    cluster: &Cluster,
    topic: &str,
) -> (HashMap<String, Vec<usize>>, u64, u64) {
    let api = cluster.client_api();
    let mut per_key: HashMap<String, Vec<usize>> = HashMap::new();
    let mut duplicates = 0u64;
    let mut stored = 0u64;
    for q in 0..4 {
        let mut offset = 0;
        let mut expected = 1u64;
        loop {
            let h = PullMessageRequestHeader {
                consumer_group: "check".into(),
                topic: topic.into(),
                queue_id: q,
                queue_offset: offset,
                max_msg_nums: 512,
                subscription: Some("*".into()),
                ..Default::default()
            };
            let r = api
                .pull(&cluster.broker_addr(0), &h, Duration::from_secs(10))
                .await
                .unwrap();
            if r.status != PullStatus::Found {
                break;
            }
            offset = r.next_begin_offset;
            for m in r.messages {
                stored += 1;
                let seq: u64 = m
                    .message
                    .property(SEQUENCE_PROPERTY)
                    .unwrap()
                    .parse()
                    .unwrap();
                if seq != expected {
                    duplicates += 1;
                    continue;
                }
                expected += 1;
                let body = String::from_utf8(m.message.body.to_vec()).unwrap();
                let (key, idx) = body.split_once(':').unwrap();
                per_key
                    .entry(key.to_owned())
                    .or_default()
                    .push(idx.parse().unwrap());
            }
        }
    }
    (per_key, stored, duplicates)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_pipeline_recovers_order_on_a_broker_that_reorders_a_connections_sends() {
    // As Apache RocketMQ ≥ 4.9 with several send threads: one connection's sends are processed
    // concurrently. The first send is held back, so the ones written after it overtake it.
    let cluster = Cluster::builder()
        .configure(|c| c.with_ordered_sends(false))
        .start()
        .await
        .unwrap();
    let p = Producer::new(
        ProducerConfig::new("reordered_pg", cluster.namesrv_addr()).with_client(
            ClientConfig::new(cluster.namesrv_addr()).with_instance_name("reordering-broker"),
        ),
    );
    p.start().await.unwrap();
    let sender = OrderedSender::new(p.clone(), "Reordered", 8).await.unwrap();
    assert_eq!(sender.window(), 8);
    cluster.faults(0).inject_times(
        RequestCode::SEND_MESSAGE_V2.0,
        Fault::Delay(Duration::from_millis(200)),
        1,
    );
    let (keys, n) = (4usize, 2_000usize);
    let sends: Vec<_> = (0..n)
        .map(|i| {
            let key = i % keys;
            let msg = Message::new("Reordered", format!("{key}:{}", i / keys));
            sender.send(&SelectArg::Int(key as i32), msg)
        })
        .collect();
    for s in sends {
        s.await.unwrap();
    }
    sender.close().await;
    assert!(sender.reordered() >= 1, "the overtake was noticed");
    assert_eq!(sender.window(), 1, "one send in flight from then on");
    let (per_key, stored, duplicates) = read_in_sequence(&cluster, "Reordered").await;
    assert_eq!(
        stored - duplicates,
        n as u64,
        "every message kept exactly once"
    );
    for k in 0..keys {
        assert_eq!(
            per_key[&k.to_string()],
            (0..n / keys).collect::<Vec<_>>(),
            "key {k} complete and in order"
        );
    }
    assert!(duplicates >= 1 && duplicates <= sender.resent());
    p.shutdown().await;
    cluster.shutdown().await;
}
