//! Produce and consume over TLS on an enforcing cluster; a plain client is refused.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use mq_client_api::Message;
use mq_client_instance::ClientConfig;
use mq_consumer::{ConsumeFrom, ConsumeStatus, ConsumerConfig, PushConsumer, async_listener};
use mq_producer::{Producer, ProducerConfig};
use mq_remoting::{ClientTls, TlsMode};
use mq_test_support::{Cluster, TestCert};
use parking_lot::Mutex;
use tokio::sync::Notify;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_and_consume_over_tls_while_plain_clients_are_refused() {
    mq_test_support::trace_init();
    let cert = TestCert::loopback();
    let cluster = Cluster::builder()
        .tls(cert.clone(), TlsMode::Enforcing)
        .start()
        .await
        .unwrap();
    let tls = ClientTls::with_roots_pem(cert.cert_pem.as_bytes()).unwrap();
    let client = |name: &str| {
        ClientConfig::new(cluster.namesrv_addr())
            .with_instance_name(name)
            .with_tls(tls.clone())
    };
    let p = Producer::new(
        ProducerConfig::new("tls_pg", cluster.namesrv_addr()).with_client(client("tls-p")),
    );
    p.start().await.unwrap();
    let n = 50;
    let mut sent = HashSet::new();
    for i in 0..n {
        let r = p
            .send(Message::new("Secret", format!("over tls {i}")))
            .await
            .unwrap();
        sent.insert(r.msg_id);
    }

    let seen: Arc<Mutex<HashSet<String>>> = Arc::default();
    let arrived = Arc::new(Notify::new());
    let c = PushConsumer::new(
        ConsumerConfig::new("tls_cg", cluster.namesrv_addr())
            .with_client(client("tls-c"))
            .with_consume_from(ConsumeFrom::FirstOffset),
    );
    c.subscribe("Secret", "*").unwrap();
    let (s, a) = (Arc::clone(&seen), Arc::clone(&arrived));
    c.start_async(async_listener(move |msgs, _q| {
        let (s, a) = (Arc::clone(&s), Arc::clone(&a));
        async move {
            s.lock().extend(
                msgs.iter()
                    .filter_map(|m| m.message.uniq_key().map(str::to_owned)),
            );
            a.notify_one();
            ConsumeStatus::Success
        }
    }))
    .await
    .unwrap();
    tokio::time::timeout(Duration::from_secs(30), async {
        while seen.lock().len() < n {
            arrived.notified().await;
        }
    })
    .await
    .expect("every message consumed over TLS");
    assert_eq!(*seen.lock(), sent);

    // A plain client of the same cluster cannot even look a route up.
    let plain = Producer::new(
        ProducerConfig::new("plain_pg", cluster.namesrv_addr())
            .with_client(ClientConfig::new(cluster.namesrv_addr()).with_instance_name("plain"))
            .with_send_timeout(Duration::from_secs(2)),
    );
    plain.start().await.unwrap();
    let refused = plain
        .send(Message::new("Secret", "in clear"))
        .await
        .unwrap_err();
    assert!(!refused.error().possibly_delivered(), "{}", refused.error());

    plain.shutdown().await;
    c.shutdown().await;
    p.shutdown().await;
    cluster.shutdown().await;
}
