//! The gRPC proxy over loopback, in front of an in-process cluster, driven by the generated
//! tonic client as RocketMQ 5's clients drive it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    unreachable_pub
)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::StreamExt;
use mq_client_api::header::PullMessageRequestHeader;
use mq_client_api::message::property;
use mq_grpc::v2;
use mq_grpc::v2::messaging_service_client::MessagingServiceClient;
use mq_grpc::{GrpcProxy, GrpcProxyConfig};
use mq_test_support::{Cluster, plain_api};
use tonic::transport::Channel;

const T: Duration = Duration::from_secs(10);

struct Setup {
    cluster: Cluster,
    proxy: GrpcProxy,
    client: MessagingServiceClient<Channel>,
}

async fn setup() -> Setup {
    setup_with(|c| c).await
}

/// [`setup`] with the proxy configured by `configure`.
async fn setup_with(configure: impl FnOnce(GrpcProxyConfig) -> GrpcProxyConfig) -> Setup {
    let cluster = Cluster::builder().start().await.unwrap();
    let proxy = GrpcProxy::start(configure(
        GrpcProxyConfig::new(&cluster.namesrv_addr())
            .with_listen(SocketAddr::from(([127, 0, 0, 1], 0))),
    ))
    .await
    .unwrap();
    let client = MessagingServiceClient::connect(format!("http://{}", proxy.local_addr()))
        .await
        .unwrap();
    Setup {
        cluster,
        proxy,
        client,
    }
}

/// Creates `topic` with `queues` queues on the first broker, and has the broker tell the name
/// server at once.
async fn create_topic(cluster: &Cluster, topic: &str, queues: i32) {
    plain_api()
        .create_topic(
            &cluster.broker_addr(0),
            &mq_test_support::create_topic_header(topic, queues),
            T,
        )
        .await
        .unwrap();
    cluster.broker(0).register_now().await;
}

fn resource(name: &str) -> Option<v2::Resource> {
    Some(v2::Resource {
        resource_namespace: String::new(),
        name: name.into(),
    })
}

fn message(topic: &str, body: &[u8], sys: v2::SystemProperties) -> v2::Message {
    v2::Message {
        topic: resource(topic),
        user_properties: HashMap::from([("color".to_owned(), "blue".to_owned())]),
        system_properties: Some(sys),
        body: bytes::Bytes::copy_from_slice(body),
    }
}

fn code(s: Option<&v2::Status>) -> v2::Code {
    v2::Code::try_from(s.map_or(0, |s| s.code)).unwrap_or(v2::Code::Unspecified)
}

async fn send(
    client: &mut MessagingServiceClient<Channel>,
    messages: Vec<v2::Message>,
) -> v2::SendMessageResponse {
    client
        .send_message(v2::SendMessageRequest { messages })
        .await
        .unwrap()
        .into_inner()
}

/// Everything stored in queue `queue` of `topic` on the cluster's broker.
async fn stored(cluster: &Cluster, topic: &str, queue: i32) -> Vec<mq_client_api::MessageExt> {
    let header = mq_test_support::pull_header("check", topic, queue, 0);
    plain_api()
        .pull(&cluster.broker_addr(0), &header, T)
        .await
        .map(|r| r.messages)
        .unwrap_or_default()
}

/// The settings the proxy answers `settings` with on a Telemetry stream, as every client
/// waits for before anything else.
async fn settings_back(
    client: &mut MessagingServiceClient<Channel>,
    settings: v2::Settings,
) -> v2::Settings {
    let command = v2::TelemetryCommand {
        status: None,
        command: Some(v2::telemetry_command::Command::Settings(settings)),
    };
    // The stream stays open until the answer is read, as a client's does.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(command).await.unwrap();
    let stream =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    let mut answers = client.telemetry(stream).await.unwrap().into_inner();
    let answer = tokio::time::timeout(T, answers.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    drop(tx);
    assert_eq!(code(answer.status.as_ref()), v2::Code::Ok);
    let Some(v2::telemetry_command::Command::Settings(back)) = answer.command else {
        panic!("no settings back: {answer:?}");
    };
    back
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_route_and_sends_as_a_5x_producer_sees_them() {
    let mut s = setup().await;
    // Telemetry: a producer's settings come back with the server's limits and policy.
    let back = settings_back(
        &mut s.client,
        v2::Settings {
            client_type: Some(v2::ClientType::Producer as i32),
            pub_sub: Some(v2::settings::PubSub::Publishing(v2::Publishing {
                topics: vec![resource("GrpcTopic").unwrap()],
                ..Default::default()
            })),
            ..Default::default()
        },
    )
    .await;
    let Some(v2::settings::PubSub::Publishing(publishing)) = back.pub_sub else {
        panic!("no publishing back");
    };
    assert!(publishing.max_body_size > 0, "Python copies it");
    assert!(matches!(
        back.backoff_policy.and_then(|p| p.strategy),
        Some(v2::retry_policy::Strategy::ExponentialBackoff(_))
    ));

    // The route of a topic to be auto-created: TBW102's brokers, the proxy as endpoint.
    let asked = v2::Endpoints {
        scheme: v2::AddressScheme::IPv4 as i32,
        addresses: vec![v2::Address {
            host: "127.0.0.1".into(),
            port: i32::from(s.proxy.local_addr().port()),
        }],
    };
    let route = s
        .client
        .query_route(v2::QueryRouteRequest {
            topic: resource("GrpcTopic"),
            endpoints: Some(asked.clone()),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code(route.status.as_ref()), v2::Code::Ok);
    assert_eq!(route.message_queues.len(), 4);
    for q in &route.message_queues {
        assert_eq!(q.broker.as_ref().unwrap().endpoints.as_ref(), Some(&asked));
    }

    // A normal message, stored with its tag, keys, id and user property.
    let sent = send(
        &mut s.client,
        vec![message(
            "GrpcTopic",
            b"hello over grpc",
            v2::SystemProperties {
                tag: Some("TagA".into()),
                keys: vec!["k1".into(), "k2".into()],
                message_id: "01ABCDEF0123456789".into(),
                ..Default::default()
            },
        )],
    )
    .await;
    assert_eq!(code(sent.status.as_ref()), v2::Code::Ok, "{sent:?}");
    assert_eq!(sent.entries[0].message_id, "01ABCDEF0123456789");
    let mut found = Vec::new();
    for q in 0..4 {
        found.extend(stored(&s.cluster, "GrpcTopic", q).await);
    }
    assert_eq!(found.len(), 1);
    let m = &found[0].message;
    assert_eq!(&m.body[..], b"hello over grpc");
    assert_eq!(m.tags(), Some("TagA"));
    assert_eq!(m.property(property::KEYS), Some("k1 k2"));
    assert_eq!(m.uniq_key(), Some("01ABCDEF0123456789"));
    assert_eq!(m.property("color"), Some("blue"));

    // A message group keeps to one queue.
    let fifo: Vec<v2::Message> = (0..12)
        .map(|i| {
            message(
                "GrpcFifo",
                format!("fifo {i}").as_bytes(),
                v2::SystemProperties {
                    message_group: Some("order-42".into()),
                    message_type: v2::MessageType::Fifo as i32,
                    ..Default::default()
                },
            )
        })
        .collect();
    for m in fifo {
        let r = send(&mut s.client, vec![m]).await;
        assert_eq!(code(r.status.as_ref()), v2::Code::Ok, "{r:?}");
    }
    let mut per_queue = Vec::new();
    for q in 0..4 {
        per_queue.push(stored(&s.cluster, "GrpcFifo", q).await);
    }
    let used: Vec<&Vec<_>> = per_queue.iter().filter(|q| !q.is_empty()).collect();
    assert_eq!(used.len(), 1, "one queue for the group");
    let bodies: Vec<String> = used[0]
        .iter()
        .map(|m| String::from_utf8_lossy(&m.message.body).into_owned())
        .collect();
    assert_eq!(
        bodies,
        (0..12).map(|i| format!("fifo {i}")).collect::<Vec<_>>(),
        "in order"
    );

    // A gzip body is stored inflated.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, b"compressed by the client").unwrap();
    let r = send(
        &mut s.client,
        vec![message(
            "GrpcGzip",
            &gz.finish().unwrap(),
            v2::SystemProperties {
                body_encoding: v2::Encoding::Gzip as i32,
                ..Default::default()
            },
        )],
    )
    .await;
    assert_eq!(code(r.status.as_ref()), v2::Code::Ok, "{r:?}");
    let mut gz_found = Vec::new();
    for q in 0..4 {
        gz_found.extend(stored(&s.cluster, "GrpcGzip", q).await);
    }
    assert_eq!(&gz_found[0].message.body[..], b"compressed by the client");

    s.proxy.shutdown().await;
    s.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_messages_and_unserved_rpcs_get_a_status_and_nothing_is_stored() {
    let mut s = setup().await;
    let cases = [
        (
            message("GrpcBad", b"", v2::SystemProperties::default()),
            v2::Code::MessageBodyEmpty,
        ),
        (
            message("bad topic!", b"x", v2::SystemProperties::default()),
            v2::Code::IllegalTopic,
        ),
        (
            message(
                "GrpcBad",
                b"not gzip at all",
                v2::SystemProperties {
                    body_encoding: v2::Encoding::Gzip as i32,
                    ..Default::default()
                },
            ),
            v2::Code::MessageCorrupted,
        ),
        (
            message(
                "GrpcBad",
                b"x",
                v2::SystemProperties {
                    tag: Some("a|b".into()),
                    ..Default::default()
                },
            ),
            v2::Code::IllegalMessageTag,
        ),
        (
            message(
                "GrpcBad",
                b"x",
                v2::SystemProperties {
                    delivery_timestamp: Some(prost_types::Timestamp {
                        seconds: 4_000_000_000,
                        nanos: 0,
                    }),
                    ..Default::default()
                },
            ),
            v2::Code::IllegalDeliveryTime,
        ),
    ];
    for (m, want) in cases {
        let r = send(&mut s.client, vec![m]).await;
        assert_eq!(code(r.status.as_ref()), want, "{r:?}");
    }
    let r = send(&mut s.client, Vec::new()).await;
    assert_eq!(code(r.status.as_ref()), v2::Code::BadRequest);
    for q in 0..8 {
        assert!(stored(&s.cluster, "GrpcBad", q).await.is_empty());
    }
    // Several messages in one request are one batch, as Apache RocketMQ's proxy sends them:
    // one good and one bad, and the bad one's status refuses the call, with no entry and
    // nothing stored.
    let r = send(
        &mut s.client,
        vec![
            message("GrpcMixed", b"good", v2::SystemProperties::default()),
            message("GrpcMixed", b"", v2::SystemProperties::default()),
        ],
    )
    .await;
    assert_eq!(code(r.status.as_ref()), v2::Code::MessageBodyEmpty);
    assert!(r.entries.is_empty(), "{r:?}");
    for q in 0..8 {
        assert!(stored(&s.cluster, "GrpcMixed", q).await.is_empty());
    }
    // A good batch is answered as Apache RocketMQ's proxy answers one: one entry, the
    // messages' ids joined by a comma, the first one's offset.
    let r = send(
        &mut s.client,
        vec![
            message("GrpcMixed", b"one", v2::SystemProperties::default()),
            message("GrpcMixed", b"two", v2::SystemProperties::default()),
        ],
    )
    .await;
    assert_eq!(code(r.status.as_ref()), v2::Code::Ok);
    assert_eq!(r.entries.len(), 1, "{r:?}");
    assert_eq!(r.entries[0].message_id.split(',').count(), 2, "{r:?}");
    // A receive without a queue, or without an invisible time, is a bad request.
    for req in [
        v2::ReceiveMessageRequest {
            group: resource("g"),
            ..Default::default()
        },
        v2::ReceiveMessageRequest {
            group: resource("g"),
            message_queue: Some(v2::MessageQueue {
                topic: resource("GrpcBad"),
                id: -1,
                ..Default::default()
            }),
            ..Default::default()
        },
    ] {
        let mut receive = s.client.receive_message(req).await.unwrap().into_inner();
        let first = receive.next().await.unwrap().unwrap();
        let Some(v2::receive_message_response::Content::Status(st)) = first.content else {
            panic!("{first:?}");
        };
        assert!(
            matches!(
                code(Some(&st)),
                v2::Code::BadRequest | v2::Code::IllegalInvisibleTime
            ),
            "{st:?}"
        );
    }
    // A route or an assignment for a name no topic may have is ILLEGAL_TOPIC, as a send to it.
    let route = s
        .client
        .query_route(v2::QueryRouteRequest {
            topic: resource("bad topic!"),
            endpoints: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        code(route.status.as_ref()),
        v2::Code::IllegalTopic,
        "{route:?}"
    );
    assert!(route.message_queues.is_empty());
    let assigned = s
        .client
        .query_assignment(v2::QueryAssignmentRequest {
            topic: resource(&"t".repeat(200)),
            group: resource("g"),
            endpoints: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code(assigned.status.as_ref()), v2::Code::IllegalTopic);
    // An RPC not served yet says so, in a status.
    let sync = s
        .client
        .sync_lite_subscription(v2::SyncLiteSubscriptionRequest::default())
        .await
        .unwrap()
        .into_inner();
    let st = sync.status.unwrap();
    assert_eq!(code(Some(&st)), v2::Code::NotImplemented);
    assert!(st.message.contains("SyncLiteSubscription"));
    s.proxy.shutdown().await;
    s.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_time_is_served_by_the_first_delay_level_not_before_it() {
    // As in front of 4.x brokers, which have no timer.
    let mut s =
        setup_with(|c| c.with_delay_levels(mq_client_api::names::default_delay_levels())).await;
    // One queue, so that a long-polling pull of it sees the delivery.
    let create = mq_test_support::create_topic_header("GrpcDelay", 1);
    plain_api()
        .create_topic(&s.cluster.broker_addr(0), &create, T)
        .await
        .unwrap();
    s.cluster.broker(0).register_now().await;
    let at = mq_client_api::wire_time::now_millis() + 800;
    let r = send(
        &mut s.client,
        vec![message(
            "GrpcDelay",
            b"later",
            v2::SystemProperties {
                delivery_timestamp: Some(prost_types::Timestamp {
                    seconds: at / 1000,
                    nanos: i32::try_from(at % 1000).unwrap() * 1_000_000,
                }),
                message_type: v2::MessageType::Delay as i32,
                ..Default::default()
            },
        )],
    )
    .await;
    assert_eq!(code(r.status.as_ref()), v2::Code::Ok, "{r:?}");
    // Held in the schedule topic at level 1 (1 s): a pull that waits for it sees it arrive.
    let header = PullMessageRequestHeader {
        sys_flag: mq_client_api::header::pull_sys_flag::SUSPEND,
        suspend_timeout_millis: 8_000,
        ..mq_test_support::pull_header("check", "GrpcDelay", 0, 0)
    };
    let pulled = plain_api()
        .pull(&s.cluster.broker_addr(0), &header, T)
        .await
        .unwrap();
    assert_eq!(pulled.messages.len(), 1, "delivered: {:?}", pulled.status);
    assert!(
        pulled.messages[0].store_timestamp >= at,
        "not before the delivery time"
    );
    s.proxy.shutdown().await;
    s.cluster.shutdown().await;
}

/// Replays the fuzz corpus of the gRPC request decoding through the fuzz target's oracle.
#[test]
fn grpc_request_corpus_holds_its_invariants() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/grpc_request");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        mq_grpc::fuzz_oracle::check_request(&data);
        n += 1;
    }
    assert!(n >= 3, "the seed corpus is present");
}

async fn receive(
    client: &mut MessagingServiceClient<Channel>,
    group: &str,
    queue: &v2::MessageQueue,
    invisible: Duration,
    poll: Duration,
) -> (Vec<v2::Message>, v2::Code) {
    receive_tagged(client, group, queue, invisible, poll, "*").await
}

/// [`receive`] of the messages whose tag `expression` takes.
async fn receive_tagged(
    client: &mut MessagingServiceClient<Channel>,
    group: &str,
    queue: &v2::MessageQueue,
    invisible: Duration,
    poll: Duration,
    expression: &str,
) -> (Vec<v2::Message>, v2::Code) {
    let mut stream = client
        .receive_message(v2::ReceiveMessageRequest {
            group: resource(group),
            message_queue: Some(queue.clone()),
            filter_expression: Some(v2::FilterExpression {
                r#type: v2::FilterType::Tag as i32,
                expression: expression.into(),
            }),
            batch_size: 32,
            invisible_duration: Some(prost_types::Duration::try_from(invisible).unwrap()),
            auto_renew: false,
            long_polling_timeout: Some(prost_types::Duration::try_from(poll).unwrap()),
            attempt_id: None,
        })
        .await
        .unwrap()
        .into_inner();
    // As Apache RocketMQ's proxy answers: one status first, the messages, then the time of
    // delivery.
    let mut items = Vec::new();
    while let Some(item) = stream.next().await {
        items.push(item.unwrap().content.unwrap());
    }
    use v2::receive_message_response::Content;
    let Some(Content::Status(status)) = items.first() else {
        panic!("the status comes first: {items:?}");
    };
    let Some(Content::DeliveryTimestamp(_)) = items.last() else {
        panic!("the delivery time comes last: {items:?}");
    };
    let messages = items[1..items.len() - 1]
        .iter()
        .map(|c| match c {
            Content::Message(m) => m.clone(),
            other => panic!("only messages between: {other:?}"),
        })
        .collect();
    (messages, code(Some(status)))
}

fn handle(m: &v2::Message) -> String {
    m.system_properties
        .as_ref()
        .and_then(|s| s.receipt_handle.clone())
        .unwrap()
}

fn attempt(m: &v2::Message) -> i32 {
    m.system_properties
        .as_ref()
        .and_then(|s| s.delivery_attempt)
        .unwrap()
}

async fn ack(
    client: &mut MessagingServiceClient<Channel>,
    group: &str,
    topic: &str,
    m: &v2::Message,
) -> v2::Code {
    let r = client
        .ack_message(v2::AckMessageRequest {
            group: resource(group),
            topic: resource(topic),
            entries: vec![v2::AckMessageEntry {
                message_id: m.system_properties.as_ref().unwrap().message_id.clone(),
                receipt_handle: handle(m),
                lite_topic: None,
            }],
        })
        .await
        .unwrap()
        .into_inner();
    code(r.status.as_ref())
}

/// Makes `m` visible again at once (ChangeInvisibleDuration to zero).
async fn visible_now(
    client: &mut MessagingServiceClient<Channel>,
    group: &str,
    topic: &str,
    m: &v2::Message,
) -> v2::ChangeInvisibleDurationResponse {
    client
        .change_invisible_duration(v2::ChangeInvisibleDurationRequest {
            group: resource(group),
            topic: resource(topic),
            receipt_handle: handle(m),
            invisible_duration: Some(prost_types::Duration::default()),
            message_id: String::new(),
            lite_topic: None,
            suspend: None,
        })
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simple_consumer_receives_acks_and_gets_back_what_it_did_not_ack() {
    let mut s = setup().await;
    let (group, topic) = ("simple_cg", "GrpcPop");
    create_topic(&s.cluster, topic, 2).await;
    let sent: Vec<v2::Message> = (0..6)
        .map(|i| {
            message(
                topic,
                format!("pop {i}").as_bytes(),
                v2::SystemProperties {
                    tag: Some("TagA".into()),
                    ..Default::default()
                },
            )
        })
        .collect();
    let r = send(&mut s.client, sent).await;
    assert_eq!(code(r.status.as_ref()), v2::Code::Ok, "{r:?}");

    let assigned = assignments(&mut s.client, topic, group).await;
    assert_eq!(assigned.len(), 1, "one broker");
    let queue = assigned[0].clone();

    // Everything comes in one receive, once, first attempt, with an MD5 body digest.
    let (got, last) = receive(&mut s.client, group, &queue, Duration::from_secs(30), T).await;
    assert_eq!(last, v2::Code::Ok);
    let mut bodies: Vec<String> = got
        .iter()
        .map(|m| String::from_utf8_lossy(&m.body).into_owned())
        .collect();
    bodies.sort();
    assert_eq!(
        bodies,
        (0..6).map(|i| format!("pop {i}")).collect::<Vec<_>>()
    );
    for m in &got {
        assert_eq!(attempt(m), 1);
        let sys = m.system_properties.as_ref().unwrap();
        assert_eq!(sys.tag.as_deref(), Some("TagA"));
        assert_eq!(
            m.user_properties.get("color").map(String::as_str),
            Some("blue")
        );
        let digest = sys.body_digest.as_ref().unwrap();
        assert_eq!(digest.r#type, v2::DigestType::Md5 as i32);
        assert_eq!(digest.checksum.len(), 32);
        assert!(
            digest
                .checksum
                .chars()
                .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
        );
        assert_eq!(sys.body_encoding, v2::Encoding::Identity as i32);
    }
    // Nothing else while they are invisible.
    let (none, last) = receive(
        &mut s.client,
        group,
        &queue,
        Duration::from_secs(30),
        Duration::from_millis(300),
    )
    .await;
    assert!(none.is_empty());
    assert_eq!(last, v2::Code::MessageNotFound);

    // Four acknowledged (twice the same handle: the second is stale).
    for m in &got[..4] {
        assert_eq!(ack(&mut s.client, group, topic, m).await, v2::Code::Ok);
    }
    assert_eq!(
        ack(&mut s.client, group, topic, &got[0]).await,
        v2::Code::InvalidReceiptHandle
    );
    // One made visible again at once; the other left to expire.
    let changed = visible_now(&mut s.client, group, topic, &got[4]).await;
    assert_eq!(code(changed.status.as_ref()), v2::Code::Ok);
    assert_ne!(changed.receipt_handle, handle(&got[4]));
    let (again, _) = receive(&mut s.client, group, &queue, Duration::from_millis(400), T).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].body, got[4].body);
    assert_eq!(attempt(&again[0]), 2, "a second attempt");
    // The old handle no longer acknowledges; the new one does.
    assert_eq!(
        ack(&mut s.client, group, topic, &got[4]).await,
        v2::Code::InvalidReceiptHandle
    );
    assert_eq!(
        ack(&mut s.client, group, topic, &again[0]).await,
        v2::Code::Ok
    );
    // The last one comes back once its 30 s would pass: make it expire now, then forward it to
    // the dead-letter queue.
    let changed = visible_now(&mut s.client, group, topic, &got[5]).await;
    assert_eq!(code(changed.status.as_ref()), v2::Code::Ok);
    let (last_one, _) = receive(&mut s.client, group, &queue, Duration::from_secs(30), T).await;
    assert_eq!(last_one.len(), 1);
    assert_eq!(last_one[0].body, got[5].body);
    let forwarded = s
        .client
        .forward_message_to_dead_letter_queue(v2::ForwardMessageToDeadLetterQueueRequest {
            group: resource(group),
            topic: resource(topic),
            receipt_handle: handle(&last_one[0]),
            message_id: String::new(),
            delivery_attempt: 2,
            max_delivery_attempts: 2,
            lite_topic: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        code(forwarded.status.as_ref()),
        v2::Code::Ok,
        "{forwarded:?}"
    );
    let dlq = stored(&s.cluster, &format!("%DLQ%{group}"), 0).await;
    assert_eq!(dlq.len(), 1);
    assert_eq!(dlq[0].message.body.to_vec(), got[5].body);

    // Every message is settled: the group's committed offsets cover both queues' messages.
    let mut committed = 0;
    for q in 0..2 {
        committed += plain_api()
            .query_consumer_offset(
                &s.cluster.broker_addr(0),
                &mq_client_api::header::QueryConsumerOffsetRequestHeader {
                    consumer_group: group.into(),
                    topic: topic.into(),
                    queue_id: q,
                    set_zero_if_not_found: None,
                },
                T,
            )
            .await
            .unwrap();
    }
    assert_eq!(committed, 6);
    s.proxy.shutdown().await;
    s.cluster.shutdown().await;
}

/// The message ids stored in `topic` (every queue) on the cluster's broker.
async fn stored_bodies(cluster: &Cluster, topic: &str) -> Vec<String> {
    let mut out = Vec::new();
    for q in 0..8 {
        out.extend(
            stored(cluster, topic, q)
                .await
                .into_iter()
                .map(|m| String::from_utf8_lossy(&m.message.body).into_owned()),
        );
    }
    out.sort();
    out
}

fn transactional(topic: &str, body: &str) -> v2::Message {
    message(
        topic,
        body.as_bytes(),
        v2::SystemProperties {
            message_type: v2::MessageType::Transaction as i32,
            ..Default::default()
        },
    )
}

async fn end(
    client: &mut MessagingServiceClient<Channel>,
    topic: &str,
    entry: &v2::SendResultEntry,
    resolution: v2::TransactionResolution,
    source: v2::TransactionSource,
) -> v2::Code {
    let r = client
        .end_transaction(v2::EndTransactionRequest {
            topic: resource(topic),
            message_id: entry.message_id.clone(),
            transaction_id: entry.transaction_id.clone(),
            resolution: resolution as i32,
            source: source as i32,
            trace_context: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    code(r.status.as_ref())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_commit_roll_back_and_recover_through_telemetry() {
    let cluster = Cluster::builder()
        .configure(|c| c.with_transaction_timeout(Duration::from_millis(300)))
        .start()
        .await
        .unwrap();
    let proxy = GrpcProxy::start(
        GrpcProxyConfig::new(&cluster.namesrv_addr())
            .with_listen(SocketAddr::from(([127, 0, 0, 1], 0))),
    )
    .await
    .unwrap();
    let mut client = MessagingServiceClient::connect(format!("http://{}", proxy.local_addr()))
        .await
        .unwrap();
    let topic = "GrpcTx";
    create_topic(&cluster, topic, 1).await;

    // A producer on Telemetry, publishing the topic: it will be asked about orphans.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(v2::TelemetryCommand {
        status: None,
        command: Some(v2::telemetry_command::Command::Settings(v2::Settings {
            client_type: Some(v2::ClientType::Producer as i32),
            pub_sub: Some(v2::settings::PubSub::Publishing(v2::Publishing {
                topics: vec![resource(topic).unwrap()],
                ..Default::default()
            })),
            ..Default::default()
        })),
    })
    .await
    .unwrap();
    let mut request = tonic::Request::new(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|c| (c, rx))
    }));
    request
        .metadata_mut()
        .insert("x-mq-client-id", "test-producer@1".parse().unwrap());
    let mut commands = client.telemetry(request).await.unwrap().into_inner();
    let settings = commands.next().await.unwrap().unwrap();
    assert_eq!(code(settings.status.as_ref()), v2::Code::Ok);

    // Committed: delivered; rolled back: never.
    let committed = send(&mut client, vec![transactional(topic, "commit me")]).await;
    let rolled = send(&mut client, vec![transactional(topic, "roll me back")]).await;
    let (committed, rolled) = (&committed.entries[0], &rolled.entries[0]);
    assert_eq!(
        code(committed.status.as_ref()),
        v2::Code::Ok,
        "{committed:?}"
    );
    assert!(!committed.transaction_id.is_empty());
    assert!(
        stored_bodies(&cluster, topic).await.is_empty(),
        "half messages stay hidden"
    );
    let local = v2::TransactionSource::SourceClient;
    assert_eq!(
        end(
            &mut client,
            topic,
            committed,
            v2::TransactionResolution::Commit,
            local
        )
        .await,
        v2::Code::Ok
    );
    assert_eq!(
        end(
            &mut client,
            topic,
            rolled,
            v2::TransactionResolution::Rollback,
            local
        )
        .await,
        v2::Code::Ok
    );
    // A transaction id the proxy never made is refused.
    let fake = v2::SendResultEntry {
        transaction_id: "nonsense".into(),
        ..committed.clone()
    };
    assert_eq!(
        end(
            &mut client,
            topic,
            &fake,
            v2::TransactionResolution::Commit,
            local
        )
        .await,
        v2::Code::InvalidTransactionId
    );

    // Left undecided: the broker's check reaches the producer over Telemetry, which commits.
    let orphan = send(&mut client, vec![transactional(topic, "orphan")]).await;
    assert_eq!(code(orphan.status.as_ref()), v2::Code::Ok);
    let recover = tokio::time::timeout(T, async {
        loop {
            let c = commands.next().await.unwrap().unwrap();
            if let Some(v2::telemetry_command::Command::RecoverOrphanedTransactionCommand(r)) =
                c.command
            {
                break r;
            }
        }
    })
    .await
    .expect("the broker's check reaches the producer");
    assert_eq!(
        recover.message.as_ref().map(|m| m.body.clone()),
        Some(bytes::Bytes::from_static(b"orphan"))
    );
    let check = v2::SendResultEntry {
        message_id: orphan.entries[0].message_id.clone(),
        transaction_id: recover.transaction_id.clone(),
        ..Default::default()
    };
    assert_eq!(
        end(
            &mut client,
            topic,
            &check,
            v2::TransactionResolution::Commit,
            v2::TransactionSource::SourceServerCheck
        )
        .await,
        v2::Code::Ok
    );
    // Both committed messages arrive; the rolled back one never does.
    let header = PullMessageRequestHeader {
        sys_flag: mq_client_api::header::pull_sys_flag::SUSPEND,
        suspend_timeout_millis: 8_000,
        ..mq_test_support::pull_header("check", topic, 0, 1)
    };
    let later = plain_api()
        .pull(&cluster.broker_addr(0), &header, T)
        .await
        .unwrap();
    assert_eq!(
        later.messages.len(),
        1,
        "the recovered one: {:?}",
        later.status
    );
    assert_eq!(
        stored_bodies(&cluster, topic).await,
        vec!["commit me".to_owned(), "orphan".to_owned()]
    );
    drop(tx);
    proxy.shutdown().await;
    cluster.shutdown().await;
}

/// Sends "kept 0" to "kept 2" to `topic`.
async fn send_kept(client: &mut MessagingServiceClient<Channel>, topic: &str) {
    let messages = (0..3)
        .map(|i| {
            message(
                topic,
                format!("kept {i}").as_bytes(),
                v2::SystemProperties::default(),
            )
        })
        .collect();
    let r = send(client, messages).await;
    assert_eq!(code(r.status.as_ref()), v2::Code::Ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_drops_its_receive_loses_nothing() {
    let mut s = setup().await;
    let (group, topic) = ("dropping_cg", "GrpcDrop");
    create_topic(&s.cluster, topic, 1).await;
    send_kept(&mut s.client, topic).await;
    let queue = v2::MessageQueue {
        topic: resource(topic),
        id: -1,
        broker: Some(v2::Broker {
            name: "broker-a".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    // A receive whose client gives up while it long-polls an empty queue leaves the queue free:
    // here the queue's messages were all taken by an earlier receive, so this one waits.
    let (taken, _) = receive(&mut s.client, group, &queue, Duration::from_secs(30), T).await;
    assert_eq!(taken.len(), 3);
    let gave_up = tokio::time::timeout(
        Duration::from_millis(300),
        receive(&mut s.client, group, &queue, Duration::from_secs(30), T),
    )
    .await;
    assert!(gave_up.is_err(), "nothing to receive: it waits");
    for m in &taken {
        assert_eq!(ack(&mut s.client, group, topic, m).await, v2::Code::Ok);
    }
    send_kept(&mut s.client, topic).await;
    // A receive whose client goes away before reading a single message.
    let stream = s
        .client
        .receive_message(v2::ReceiveMessageRequest {
            group: resource(group),
            message_queue: Some(queue.clone()),
            batch_size: 32,
            invisible_duration: Some(
                prost_types::Duration::try_from(Duration::from_millis(300)).unwrap(),
            ),
            long_polling_timeout: Some(prost_types::Duration::try_from(T).unwrap()),
            ..Default::default()
        })
        .await
        .unwrap();
    drop(stream);
    // The messages it was handed come back once their invisible time is over.
    let (again, last) = receive(&mut s.client, group, &queue, Duration::from_secs(30), T).await;
    assert_eq!(last, v2::Code::Ok);
    let mut bodies: Vec<String> = again
        .iter()
        .map(|m| String::from_utf8_lossy(&m.body).into_owned())
        .collect();
    bodies.sort();
    assert_eq!(bodies, ["kept 0", "kept 1", "kept 2"]);
    assert!(again.iter().all(|m| attempt(m) == 2), "second attempts");
    s.proxy.shutdown().await;
    s.cluster.shutdown().await;
}

/// The offset RPCs: a queue's first and next offsets and the first at a time (QueryOffset),
/// and a group's committed offset, kept by the broker where remoting consumers read it too
/// (UpdateOffset, GetOffset); bad requests get a status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_are_queried_and_committed_on_the_queue_s_broker() {
    let mut s = setup().await;
    let before = std::time::SystemTime::now();
    let bodies: Vec<String> = (0..6).map(|i| format!("offset {i}")).collect();
    for body in &bodies {
        send_plain(&mut s.client, "OffsetTopic", body).await;
    }
    let route = s
        .client
        .query_route(v2::QueryRouteRequest {
            topic: resource("OffsetTopic"),
            endpoints: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code(route.status.as_ref()), v2::Code::Ok);
    let query = |mq: &v2::MessageQueue, policy: v2::QueryOffsetPolicy, at| {
        let mut client = s.client.clone();
        let request = v2::QueryOffsetRequest {
            message_queue: Some(mq.clone()),
            query_offset_policy: policy as i32,
            timestamp: at,
        };
        async move { client.query_offset(request).await.unwrap().into_inner() }
    };
    // Each queue's END is what it holds (as the broker counts it), BEGINNING 0, and the first
    // offset at a time before every send is 0 too.
    let mut total = 0;
    for mq in &route.message_queues {
        let end = query(mq, v2::QueryOffsetPolicy::End, None).await;
        assert_eq!(code(end.status.as_ref()), v2::Code::Ok, "{end:?}");
        let held = stored(&s.cluster, "OffsetTopic", mq.id).await.len() as i64;
        assert_eq!(end.offset, held, "queue {}", mq.id);
        total += end.offset;
        let beginning = query(mq, v2::QueryOffsetPolicy::Beginning, None).await;
        assert_eq!(
            (code(beginning.status.as_ref()), beginning.offset),
            (v2::Code::Ok, 0)
        );
        if held > 0 {
            let at = query(
                mq,
                v2::QueryOffsetPolicy::Timestamp,
                Some(prost_types::Timestamp::from(before)),
            )
            .await;
            assert_eq!(
                (code(at.status.as_ref()), at.offset),
                (v2::Code::Ok, 0),
                "{at:?}"
            );
        }
    }
    assert_eq!(total, 6);

    // A group's offset: none at first, then what was committed, also for a remoting reader.
    let mq = route.message_queues[0].clone();
    let get = |group: &str| {
        let mut client = s.client.clone();
        let request = v2::GetOffsetRequest {
            group: resource(group),
            message_queue: Some(mq.clone()),
        };
        async move { client.get_offset(request).await.unwrap().into_inner() }
    };
    let none = get("OffsetGroup").await;
    assert_eq!(
        code(none.status.as_ref()),
        v2::Code::OffsetNotFound,
        "{none:?}"
    );
    let update = |group: &str, offset: i64, queue: v2::MessageQueue| {
        let mut client = s.client.clone();
        let request = v2::UpdateOffsetRequest {
            group: resource(group),
            message_queue: Some(queue),
            offset,
        };
        async move { client.update_offset(request).await.unwrap().into_inner() }
    };
    let done = update("OffsetGroup", 2, mq.clone()).await;
    assert_eq!(code(done.status.as_ref()), v2::Code::Ok, "{done:?}");
    let got = get("OffsetGroup").await;
    assert_eq!((code(got.status.as_ref()), got.offset), (v2::Code::Ok, 2));
    let remoting = plain_api()
        .query_consumer_offset(
            &s.cluster.broker_addr(0),
            &mq_client_api::header::QueryConsumerOffsetRequestHeader {
                consumer_group: "OffsetGroup".into(),
                topic: "OffsetTopic".into(),
                queue_id: mq.id,
                set_zero_if_not_found: None,
            },
            T,
        )
        .await
        .unwrap();
    assert_eq!(remoting, 2);

    // Bad requests: a negative offset, no group, a queue the topic does not have, a time
    // policy without a time.
    let negative = update("OffsetGroup", -1, mq.clone()).await;
    assert_eq!(code(negative.status.as_ref()), v2::Code::IllegalOffset);
    let nameless = update("", 1, mq.clone()).await;
    assert_eq!(
        code(nameless.status.as_ref()),
        v2::Code::IllegalConsumerGroup
    );
    let mut missing = mq.clone();
    missing.id = 99;
    let absent = update("OffsetGroup", 1, missing).await;
    assert_eq!(
        code(absent.status.as_ref()),
        v2::Code::BadRequest,
        "{absent:?}"
    );
    let timeless = query(&mq, v2::QueryOffsetPolicy::Timestamp, None).await;
    assert_eq!(code(timeless.status.as_ref()), v2::Code::BadRequest);
    let unchanged = get("OffsetGroup").await;
    assert_eq!(unchanged.offset, 2);

    // Pulls: from an offset, in order; at the end nothing; past it an illegal offset.
    let mut best = (route.message_queues[0].clone(), 0);
    for mq in &route.message_queues {
        let held = stored(&s.cluster, "OffsetTopic", mq.id).await.len() as i64;
        if held > best.1 {
            best = (mq.clone(), held);
        }
    }
    let (mq, held) = best;
    assert!(held >= 2);
    let in_queue: Vec<String> = stored(&s.cluster, "OffsetTopic", mq.id)
        .await
        .iter()
        .map(|m| String::from_utf8_lossy(&m.message.body).into_owned())
        .collect();
    let pull = |offset: i64, batch_size: i32, wait: Option<Duration>| {
        let mut client = s.client.clone();
        let request = v2::PullMessageRequest {
            group: resource("OffsetGroup"),
            message_queue: Some(mq.clone()),
            offset,
            batch_size,
            filter_expression: None,
            long_polling_timeout: wait.map(|w| prost_types::Duration::try_from(w).unwrap()),
        };
        async move { pulled(client.pull_message(request).await.unwrap().into_inner()).await }
    };
    let (st, bodies, next) = pull(0, 2, None).await;
    assert_eq!(code(Some(&st)), v2::Code::Ok, "{st:?}");
    assert_eq!(bodies, in_queue[..2]);
    assert_eq!(next, Some(2));
    let (st, bodies, next) = pull(held, 0, None).await;
    assert_eq!(code(Some(&st)), v2::Code::MessageNotFound, "{st:?}");
    assert!(bodies.is_empty());
    assert_eq!(next, Some(held));
    let (st, _, _) = pull(held + 100, 0, None).await;
    assert_eq!(code(Some(&st)), v2::Code::IllegalOffset, "{st:?}");
    let (st, _, _) = pull(0, MAX_BATCH + 1, None).await;
    assert_eq!(code(Some(&st)), v2::Code::BadRequest, "{st:?}");
    // A long poll at the end answers with the next message to arrive in the queue.
    let waiting = tokio::spawn(pull(held, 0, Some(Duration::from_secs(20))));
    let mut sent_bodies = Vec::new();
    while stored(&s.cluster, "OffsetTopic", mq.id).await.len() as i64 == held {
        let body = format!("late {}", sent_bodies.len());
        send_plain(&mut s.client, "OffsetTopic", &body).await;
        sent_bodies.push(body);
        assert!(sent_bodies.len() <= 8, "no send reached queue {}", mq.id);
    }
    let (st, bodies, next) = tokio::time::timeout(T, waiting).await.unwrap().unwrap();
    assert_eq!(code(Some(&st)), v2::Code::Ok, "{st:?}");
    assert_eq!(bodies.len(), 1);
    assert!(sent_bodies.contains(&bodies[0]), "{bodies:?}");
    assert_eq!(next, Some(held + 1));
    s.proxy.shutdown().await;
    s.cluster.shutdown().await;
}

/// The most messages a PullMessage may ask for.
const MAX_BATCH: i32 = 1024;

/// A PullMessage answer: its status, the bodies pulled, and the next offset.
async fn pulled(
    mut answer: tonic::Streaming<v2::PullMessageResponse>,
) -> (v2::Status, Vec<String>, Option<i64>) {
    use v2::pull_message_response::Content;
    let mut status = None;
    let mut bodies = Vec::new();
    let mut next = None;
    while let Some(item) = answer.next().await {
        match item.unwrap().content {
            Some(Content::Status(st)) => status = Some(st),
            Some(Content::Message(m)) => {
                bodies.push(String::from_utf8_lossy(&m.body).into_owned());
            }
            Some(Content::NextOffset(n)) => next = Some(n),
            None => {}
        }
    }
    (status.expect("a status"), bodies, next)
}

/// Sends one message of `body` to `topic`, which must be stored.
async fn send_plain(client: &mut MessagingServiceClient<Channel>, topic: &str, body: &str) {
    let sent = send(
        client,
        vec![message(
            topic,
            body.as_bytes(),
            v2::SystemProperties::default(),
        )],
    )
    .await;
    assert_eq!(code(sent.status.as_ref()), v2::Code::Ok, "{sent:?}");
}

/// A proxy with TLS: our session connects over TLS (ALPN h2) trusting the proxy's certificate
/// and sends; a plain client is refused when TLS is enforced and served when it is permissive;
/// a client that does not trust the certificate does not connect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_serves_tls_by_its_mode_and_our_session_speaks_it() {
    use mq_grpc::{GrpcClientConfig, GrpcSession};
    use mq_remoting::{ClientTls, ServerTls, TlsMode};
    use mq_test_support::TestCert;

    let cluster = Cluster::builder().start().await.unwrap();
    let cert = TestCert::loopback();
    let server_tls = ServerTls::from_pem(cert.cert_pem.as_bytes(), cert.key_pem.as_bytes())
        .unwrap()
        .with_mode(TlsMode::Enforcing);
    let proxy = GrpcProxy::start(
        GrpcProxyConfig::new(&cluster.namesrv_addr())
            .with_listen(SocketAddr::from(([127, 0, 0, 1], 0)))
            .with_tls(server_tls.clone()),
    )
    .await
    .unwrap();
    let endpoint = proxy.local_addr().to_string();
    let trusted = ClientTls::with_roots_pem(cert.cert_pem.as_bytes()).unwrap();
    let deadline = std::time::Instant::now() + T;
    let settings = v2::Settings {
        client_type: Some(v2::ClientType::Producer as i32),
        ..Default::default()
    };
    let session = GrpcSession::connect(
        GrpcClientConfig::new(&endpoint).with_tls(trusted.clone()),
        settings.clone(),
        deadline,
    )
    .await
    .unwrap();
    let entries = session
        .send(
            vec![message(
                "TlsTopic",
                b"over tls",
                v2::SystemProperties {
                    message_id: "01TLS0000000000001".into(),
                    ..Default::default()
                },
            )],
            deadline,
        )
        .await
        .unwrap();
    assert_eq!(
        code(entries[0].status.as_ref()),
        v2::Code::Ok,
        "{entries:?}"
    );
    assert!(
        stored_bodies(&cluster, "TlsTopic")
            .await
            .contains(&"over tls".to_owned())
    );
    session.close();

    // Enforced: a plain client gets no answer: an error, or nothing in time. One soak run in
    // several hundred never ended; the sockets it left (this proxy still listening, holding
    // only the TLS session's connection, the plain one closed at its first byte) put it here,
    // in tonic's client, whose wait had no bound.
    let refused = tokio::time::timeout(T, plain_route(&endpoint, "TlsTopic")).await;
    assert!(!matches!(refused, Ok(Ok(_))), "{refused:?}");
    // A client trusting another certificate does not connect.
    let stranger = ClientTls::with_roots_pem(TestCert::loopback().cert_pem.as_bytes()).unwrap();
    let untrusted = GrpcSession::connect(
        GrpcClientConfig::new(&endpoint).with_tls(stranger),
        settings.clone(),
        deadline,
    )
    .await;
    assert!(untrusted.is_err());
    tokio::time::timeout(T, proxy.shutdown())
        .await
        .expect("the proxy shuts down in time");

    // Permissive: plain and TLS clients both, in time of their own.
    let deadline = std::time::Instant::now() + T;
    let proxy = GrpcProxy::start(
        GrpcProxyConfig::new(&cluster.namesrv_addr())
            .with_listen(SocketAddr::from(([127, 0, 0, 1], 0)))
            .with_tls(server_tls.with_mode(TlsMode::Permissive)),
    )
    .await
    .unwrap();
    let endpoint = proxy.local_addr().to_string();
    let route = tokio::time::timeout(T, plain_route(&endpoint, "TlsTopic"))
        .await
        .expect("a plain client is answered in time")
        .unwrap();
    assert_eq!(code(route.status.as_ref()), v2::Code::Ok);
    let session = GrpcSession::connect(
        GrpcClientConfig::new(&endpoint).with_tls(trusted),
        settings,
        deadline,
    )
    .await
    .unwrap();
    let routed = session.query_route("TlsTopic", deadline).await.unwrap();
    assert!(!routed.is_empty());
    session.close();
    tokio::time::timeout(T, proxy.shutdown())
        .await
        .expect("the proxy shuts down in time");
    cluster.shutdown().await;
}

/// The route of `topic` asked by a plain (no TLS) client of the proxy at `endpoint`.
async fn plain_route(endpoint: &str, topic: &str) -> Result<v2::QueryRouteResponse, tonic::Status> {
    let mut plain = MessagingServiceClient::connect(format!("http://{endpoint}"))
        .await
        .unwrap();
    plain
        .query_route(v2::QueryRouteRequest {
            topic: resource(topic),
            endpoints: None,
        })
        .await
        .map(tonic::Response::into_inner)
}

/// The queues QueryAssignment gives `group` on `topic` (the answer's status OK).
async fn assignments(
    client: &mut MessagingServiceClient<Channel>,
    topic: &str,
    group: &str,
) -> Vec<v2::MessageQueue> {
    let answer = client
        .query_assignment(v2::QueryAssignmentRequest {
            topic: resource(topic),
            group: resource(group),
            endpoints: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code(answer.status.as_ref()), v2::Code::Ok);
    answer
        .assignments
        .into_iter()
        .map(|a| a.message_queue.unwrap())
        .collect()
}

fn bodies(ms: &[v2::Message]) -> Vec<String> {
    ms.iter()
        .map(|m| String::from_utf8_lossy(&m.body).into_owned())
        .collect()
}

/// What a FIFO consumer group (`consumeMessageOrderly` in its config on the broker) sees: one
/// assignment per queue, `fifo` in its settings, and a queue's messages strictly in turn —
/// nothing after what is unacknowledged, and what comes back comes back in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_group_gets_a_queue_s_next_messages_only_after_the_ones_before() {
    let mut s = setup().await;
    let (fifo_group, concurrent_group, topic) = ("fifo_cg", "concurrent_cg", "GrpcFifo");
    let broker = s.cluster.broker_addr(0);
    plain_api()
        .create_topic(&broker, &mq_test_support::create_topic_header(topic, 1), T)
        .await
        .unwrap();
    s.cluster.broker(0).register_now().await;
    let config = mq_client_api::body::SubscriptionGroupConfig::new(fifo_group).with_orderly(true);
    plain_api()
        .update_subscription_group(&broker, &config, T)
        .await
        .unwrap();
    assert_eq!(
        plain_api()
            .subscription_group(&broker, fifo_group, T)
            .await
            .unwrap(),
        config
    );
    let all = plain_api()
        .all_subscription_groups(&broker, T)
        .await
        .unwrap();
    assert_eq!(all.subscription_group_table.get(fifo_group), Some(&config));
    // A group never configured reads as the defaults: concurrent.
    assert!(
        !plain_api()
            .subscription_group(&broker, concurrent_group, T)
            .await
            .unwrap()
            .consume_message_orderly
    );

    let fifo_message = |body: &str| {
        message(
            topic,
            body.as_bytes(),
            v2::SystemProperties {
                message_group: Some("order-1".into()),
                ..Default::default()
            },
        )
    };
    let r = send(
        &mut s.client,
        (0..3).map(|i| fifo_message(&format!("step {i}"))).collect(),
    )
    .await;
    assert_eq!(code(r.status.as_ref()), v2::Code::Ok, "{r:?}");

    // One assignment per queue for the FIFO group, one per broker (-1) for the other.
    let ids = |qs: &[v2::MessageQueue]| qs.iter().map(|q| q.id).collect::<Vec<_>>();
    let queues = assignments(&mut s.client, topic, fifo_group).await;
    assert_eq!(ids(&queues), [0]);
    assert_eq!(
        ids(&assignments(&mut s.client, topic, concurrent_group).await),
        [-1]
    );
    // A consumer of each group is told whether it consumes in order.
    for (group, fifo) in [(fifo_group, true), (concurrent_group, false)] {
        let back = settings_back(
            &mut s.client,
            v2::Settings {
                client_type: Some(v2::ClientType::SimpleConsumer as i32),
                pub_sub: Some(v2::settings::PubSub::Subscription(v2::Subscription {
                    group: resource(group),
                    subscriptions: vec![v2::SubscriptionEntry {
                        topic: resource(topic),
                        expression: None,
                    }],
                    ..Default::default()
                })),
                ..Default::default()
            },
        )
        .await;
        let Some(v2::settings::PubSub::Subscription(sub)) = back.pub_sub else {
            panic!("no subscription back");
        };
        assert_eq!(sub.fifo, Some(fifo), "{group}");
    }
    let queue = &queues[0];
    let long = Duration::from_secs(30);
    let short = Duration::from_millis(300);

    let (first, _) = receive(&mut s.client, fifo_group, queue, long, T).await;
    assert_eq!(bodies(&first), ["step 0", "step 1", "step 2"]);
    // Sent after them: it waits while they are out.
    let r = send(&mut s.client, vec![fifo_message("step 3")]).await;
    assert_eq!(code(r.status.as_ref()), v2::Code::Ok, "{r:?}");
    let (none, last) = receive(&mut s.client, fifo_group, queue, long, short).await;
    assert!(none.is_empty(), "{:?}", bodies(&none));
    assert_eq!(last, v2::Code::MessageNotFound);
    // A concurrent group on the same topic is not held back.
    let (everything, _) = receive(&mut s.client, concurrent_group, queue, long, T).await;
    let mut got = bodies(&everything);
    got.sort();
    assert_eq!(got, ["step 0", "step 1", "step 2", "step 3"]);

    // The first acknowledged and the second given back; the third is still out, so nothing
    // comes, not even the one given back.
    assert_eq!(
        ack(&mut s.client, fifo_group, topic, &first[0]).await,
        v2::Code::Ok
    );
    let changed = visible_now(&mut s.client, fifo_group, topic, &first[1]).await;
    assert_eq!(code(changed.status.as_ref()), v2::Code::Ok);
    let (none, _) = receive(&mut s.client, fifo_group, queue, long, short).await;
    assert!(none.is_empty(), "{:?}", bodies(&none));
    // Once the third is back too, both come again, in order, before the fourth.
    let changed = visible_now(&mut s.client, fifo_group, topic, &first[2]).await;
    assert_eq!(code(changed.status.as_ref()), v2::Code::Ok);
    let (again, _) = receive(&mut s.client, fifo_group, queue, long, T).await;
    assert_eq!(bodies(&again), ["step 1", "step 2"]);
    assert!(again.iter().all(|m| attempt(m) == 2));
    for m in &again {
        assert_eq!(ack(&mut s.client, fifo_group, topic, m).await, v2::Code::Ok);
    }
    let (last_one, _) = receive(&mut s.client, fifo_group, queue, long, T).await;
    assert_eq!(bodies(&last_one), ["step 3"]);
    assert_eq!(attempt(&last_one[0]), 1);

    // Deleting the config (with its offsets) leaves a concurrent group behind.
    plain_api()
        .delete_subscription_group(&broker, fifo_group, true, T)
        .await
        .unwrap();
    assert!(
        !plain_api()
            .all_subscription_groups(&broker, T)
            .await
            .unwrap()
            .subscription_group_table
            .contains_key(fifo_group)
    );
    s.proxy.shutdown().await;
    s.cluster.shutdown().await;
}

/// The proxy keeps a consumer group's state on a topic while it is needed, and no longer: an
/// acknowledgement that names a group and topic nothing was received for is refused and makes
/// no state; a state with a message still handed out is kept; once everything is acknowledged
/// and it went unused, it is forgotten with its offsets committed, and the group's next
/// receive starts after what it acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_forgets_a_consumer_s_state_only_once_it_holds_nothing() {
    let mut s = setup().await;
    let (group, topic) = ("forget_cg", "GrpcForget");
    create_topic(&s.cluster, topic, 1).await;

    // Bad input: acknowledgements and invisibility changes for strangers make no state.
    let stranger = v2::Message {
        system_properties: Some(v2::SystemProperties {
            receipt_handle: Some("no-such-handle".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    for i in 0..3 {
        let g = format!("nobody_{i}");
        assert_eq!(
            ack(&mut s.client, &g, topic, &stranger).await,
            v2::Code::InvalidReceiptHandle
        );
        let changed = visible_now(&mut s.client, &g, topic, &stranger).await;
        assert_eq!(
            code(changed.status.as_ref()),
            v2::Code::InvalidReceiptHandle
        );
    }
    assert_eq!(s.proxy.consumer_states(), 0);

    for i in 0..2 {
        send_plain(&mut s.client, topic, &format!("first {i}")).await;
    }
    let queue = assignments(&mut s.client, topic, group).await[0].clone();
    let (got, _) = receive(&mut s.client, group, &queue, Duration::from_secs(60), T).await;
    assert_eq!(got.len(), 2);
    assert_eq!(s.proxy.consumer_states(), 1);
    // One still handed out: kept, however idle.
    assert_eq!(
        ack(&mut s.client, group, topic, &got[0]).await,
        v2::Code::Ok
    );
    s.proxy.forget_idle_consumers(Duration::ZERO).await;
    assert_eq!(s.proxy.consumer_states(), 1);
    // Both acknowledged: forgotten, its offset on the broker.
    assert_eq!(
        ack(&mut s.client, group, topic, &got[1]).await,
        v2::Code::Ok
    );
    s.proxy
        .forget_idle_consumers(Duration::from_secs(3600))
        .await;
    assert_eq!(s.proxy.consumer_states(), 1, "used just now");
    s.proxy.forget_idle_consumers(Duration::ZERO).await;
    assert_eq!(s.proxy.consumer_states(), 0);
    // A message no receive's tag takes is read past, not handed out: forgetting commits past
    // it too.
    let tagged = |tag: &str| v2::SystemProperties {
        tag: Some(tag.into()),
        ..Default::default()
    };
    let r = send(
        &mut s.client,
        vec![message(topic, b"skipped", tagged("TagA"))],
    )
    .await;
    assert_eq!(code(r.status.as_ref()), v2::Code::Ok, "{r:?}");
    let (got, _) = receive_tagged(
        &mut s.client,
        group,
        &queue,
        Duration::from_secs(60),
        Duration::from_secs(1),
        "TagB",
    )
    .await;
    assert!(got.is_empty(), "{got:?}");
    s.proxy.forget_idle_consumers(Duration::ZERO).await;
    assert_eq!(s.proxy.consumer_states(), 0);
    let committed = plain_api()
        .query_consumer_offset(
            &s.cluster.broker_addr(0),
            &mq_client_api::header::QueryConsumerOffsetRequestHeader {
                consumer_group: group.into(),
                topic: topic.into(),
                queue_id: 0,
                set_zero_if_not_found: None,
            },
            T,
        )
        .await
        .unwrap();
    assert_eq!(committed, 3);
    // The next receive starts after what was acknowledged or read past: only the new message
    // comes.
    send_plain(&mut s.client, topic, "second").await;
    let (got, _) = receive(&mut s.client, group, &queue, Duration::from_secs(60), T).await;
    let bodies: Vec<String> = got
        .iter()
        .map(|m| String::from_utf8_lossy(&m.body).into_owned())
        .collect();
    assert_eq!(bodies, ["second"]);
}
