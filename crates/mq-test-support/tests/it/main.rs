//! Cross-crate tests on the in-process cluster: registration and routes, fault injection, and
//! consumers fed by the producer.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    unreachable_pub
)]

mod consumer;
mod grpc;
mod ordered;
mod request_reply;
mod tls;

use std::time::Duration;

use bytes::Bytes;
use mq_client_api::message::Message;
use mq_client_api::{ClientApiError, RequestCode, ResponseCode, SendRequest, SendStatus};
use mq_remoting::RemotingError;
use mq_test_support::{Cluster, Fault, eventually, send_request};

const T: Duration = Duration::from_secs(20);

/// A SEND_MESSAGE request of a "hello" message to queue 0 of `topic`.
fn hello(topic: &str) -> SendRequest {
    send_request(topic, 0, &Message::new(topic, Bytes::from_static(b"hello")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brokers_register_and_auto_created_topics_get_routes() {
    let cluster = Cluster::builder().brokers(2).start().await.unwrap();
    let api = cluster.client_api();
    let route = api.topic_route("TBW102", T).await.unwrap();
    let mut names: Vec<_> = route
        .broker_datas
        .iter()
        .map(|b| b.broker_name.clone())
        .collect();
    names.sort();
    assert_eq!(names, vec!["broker-a", "broker-b"]);
    let r = api
        .send(&cluster.broker_addr(1), hello("Fresh"), T)
        .await
        .unwrap();
    assert_eq!(r.status, SendStatus::SendOk);
    // The broker re-registers after auto-creating the topic.
    eventually(|| cluster.namesrv().routes().route("Fresh").is_some()).await;
    let route = api.topic_route("Fresh", T).await.unwrap();
    assert_eq!(route.queue_datas[0].broker_name, "broker-b");
    assert_eq!(route.queue_datas[0].write_queue_nums, 4);

    cluster.stop_broker(1).await;
    let e = api.topic_route("Fresh", T).await.unwrap_err();
    assert_eq!(e.response_code(), Some(ResponseCode::TOPIC_NOT_EXIST));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_faults_reach_the_client() {
    let cluster = Cluster::builder().start().await.unwrap();
    let api = cluster.client_api();
    let addr = cluster.broker_addr(0);
    let faults = cluster.faults(0);
    let send = RequestCode::SEND_MESSAGE_V2.0;

    faults.inject_times(send, Fault::Respond(ResponseCode::SYSTEM_BUSY.0), 1);
    let e = api.send(&addr, hello("F"), T).await.unwrap_err();
    assert_eq!(e.response_code(), Some(ResponseCode::SYSTEM_BUSY));
    assert!(api.send(&addr, hello("F"), T).await.is_ok(), "only once");

    faults.inject_times(send, Fault::Respond(ResponseCode::FLUSH_DISK_TIMEOUT.0), 1);
    let e = api.send(&addr, hello("F"), T).await.unwrap_err();
    // Injected answers carry no send header, so even a "stored" code is a header error.
    assert!(matches!(e, ClientApiError::Header { .. }), "{e:?}");

    faults.inject_times(send, Fault::DropConnection, 1);
    let e = api.send(&addr, hello("F"), T).await.unwrap_err();
    assert!(
        matches!(
            e,
            ClientApiError::Remoting(RemotingError::ConnectionClosed { .. })
        ),
        "{e:?}"
    );

    faults.inject(send, Fault::Stall);
    let e = api
        .send(&addr, hello("F"), Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(
        matches!(e, ClientApiError::Remoting(RemotingError::Timeout { .. })),
        "{e:?}"
    );
    faults.clear();
    assert!(api.send(&addr, hello("F"), T).await.is_ok());

    faults.inject_times(send, Fault::Delay(Duration::from_millis(1)), 1);
    assert!(api.send(&addr, hello("F"), T).await.is_ok());
    assert_eq!(faults.hits(send), 5);
    cluster.shutdown().await;
}

/// Two producers that share a client id (the same instance name in one process) but name
/// different clusters each send to their own: the shared-instance registry keys instances by
/// name servers, so neither gets the other's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_of_one_client_id_with_other_name_servers_each_reach_their_own() {
    use mq_client_instance::ClientConfig;
    use mq_producer::{Producer, ProducerConfig};
    let east = Cluster::builder().start().await.unwrap();
    let west = Cluster::builder().start().await.unwrap();
    let mut producers = Vec::new();
    for cluster in [&east, &west] {
        let p = Producer::new(
            ProducerConfig::new("shared_id_pg", cluster.namesrv_addr()).with_client(
                ClientConfig::new(cluster.namesrv_addr()).with_instance_name("one-id"),
            ),
        );
        p.start().await.unwrap();
        producers.push(p);
    }
    for (p, body) in producers.iter().zip(["to east", "to west"]) {
        p.send(Message::new("SharedId", body)).await.unwrap();
    }
    for (cluster, body) in [(&east, "to east"), (&west, "to west")] {
        let api = cluster.client_api();
        let mut bodies = Vec::new();
        for q in 0..4 {
            let h = mq_test_support::pull_header("check", "SharedId", q, 0);
            if let Ok(r) = api.pull(&cluster.broker_addr(0), &h, T).await {
                bodies.extend(r.messages.into_iter().map(|m| m.message.body));
            }
        }
        assert_eq!(bodies, vec![Bytes::from(body)], "{body}");
    }
    for p in producers {
        p.shutdown().await;
    }
    east.shutdown().await;
    west.shutdown().await;
}
