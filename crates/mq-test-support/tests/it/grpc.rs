//! Our gRPC clients against our gRPC proxy in front of the embedded cluster: the simple consumer
//! receives what the remoting producer sent, acknowledges it, gets back what it did not
//! acknowledge; the gRPC producer's messages reach remoting and gRPC consumers alike, with the
//! remoting producer's retry rules; both hear typed errors for what cannot work.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use mq_client_api::{Message, ResponseCode, SendStatus};
use mq_client_instance::ClientConfig;
use mq_consumer::{
    ConsumeFrom, ConsumerConfig, ConsumerError, PullConsumer, ReceivedMessage, SimpleConsumer,
    SimpleConsumerConfig,
};
use mq_grpc::{GrpcError, GrpcProxy, GrpcProxyConfig, v2};
use mq_producer::{
    BatchingConfig, GrpcProducer, GrpcProducerConfig, LocalTransactionState, Producer,
    ProducerConfig, ProducerError, TransactionListener,
};
use mq_remoting::SerializeType;
use mq_test_support::{Cluster, Fault};

fn proxy_config(cluster: &Cluster) -> GrpcProxyConfig {
    GrpcProxyConfig::new(&cluster.namesrv_addr()).with_listen(SocketAddr::from(([127, 0, 0, 1], 0)))
}

async fn proxy(cluster: &Cluster) -> GrpcProxy {
    GrpcProxy::start(proxy_config(cluster)).await.unwrap()
}

/// A proxy in front of `cluster` whose requests to it carry `headers`.
async fn proxy_with(cluster: &Cluster, headers: SerializeType) -> GrpcProxy {
    GrpcProxy::start(proxy_config(cluster).with_cluster_headers(headers))
        .await
        .unwrap()
}

/// A cluster, a proxy in front of it, the proxy's endpoint and a gRPC producer announcing
/// `topic` through it.
async fn producer_setup(topic: &str) -> (Cluster, GrpcProxy, String, GrpcProducer) {
    let cluster = Cluster::builder().start().await.unwrap();
    let proxy = proxy(&cluster).await;
    let endpoint = proxy.local_addr().to_string();
    let producer = GrpcProducer::start(GrpcProducerConfig::new(&endpoint).with_topic(topic))
        .await
        .unwrap();
    (cluster, proxy, endpoint, producer)
}

/// Sends `bodies` to `topic` through the remoting producer.
async fn send_all(cluster: &Cluster, topic: &str, bodies: &[String]) {
    let p = Producer::new(
        ProducerConfig::new("grpc_feed_pg", cluster.namesrv_addr()).with_client(
            ClientConfig::new(cluster.namesrv_addr()).with_instance_name(format!("feed-{topic}")),
        ),
    );
    p.start().await.unwrap();
    for b in bodies {
        p.send(Message::new(topic, b.clone().into_bytes()).with_tags("TagA"))
            .await
            .unwrap();
    }
    p.shutdown().await;
}

fn body(m: &ReceivedMessage) -> String {
    String::from_utf8(m.message.message.body.to_vec()).unwrap()
}

/// Receives until `n` messages came (each call waits at most the consumer's await duration).
async fn receive_n(c: &SimpleConsumer, n: usize, invisible: Duration) -> Vec<ReceivedMessage> {
    let mut got = Vec::new();
    for _ in 0..20 {
        if got.len() >= n {
            break;
        }
        got.extend(c.receive(32, invisible).await.unwrap());
    }
    got
}

/// A simple consumer of `topic`'s `tag` in `group`, and the first `n` messages it receives:
/// body, queue offset and id, in body order.
async fn read_back(
    endpoint: &str,
    group: &str,
    topic: &str,
    tag: &str,
    n: usize,
) -> (SimpleConsumer, Vec<(String, i64, String)>) {
    let simple = SimpleConsumer::start(
        SimpleConsumerConfig::new(group, endpoint)
            .subscribe(topic, tag)
            .with_await_duration(Duration::from_secs(1)),
    )
    .await
    .unwrap();
    let got = receive_n(&simple, n, Duration::from_secs(60)).await;
    let mut read: Vec<(String, i64, String)> = got
        .iter()
        .map(|m| (body(m), m.message.queue_offset, m.message_id().to_owned()))
        .collect();
    read.sort();
    (simple, read)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simple_consumer_receives_acks_and_gets_back_what_it_did_not_ack() {
    let cluster = Cluster::builder().start().await.unwrap();
    let proxy = proxy(&cluster).await;
    let bodies: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
    send_all(&cluster, "GrpcSimple", &bodies).await;
    let consumer = SimpleConsumer::start(
        SimpleConsumerConfig::new("grpc_simple_cg", proxy.local_addr().to_string())
            .subscribe("GrpcSimple", "TagA")
            .with_await_duration(Duration::from_secs(2)),
    )
    .await
    .unwrap();
    let invisible = Duration::from_secs(60);
    let got = receive_n(&consumer, 10, invisible).await;
    let seen: BTreeSet<String> = got.iter().map(body).collect();
    assert_eq!(seen, bodies.iter().cloned().collect(), "each message once");
    assert_eq!(got.len(), 10);
    for m in &got {
        assert_eq!(m.delivery_attempt, 1);
        assert_eq!(m.message.message.topic, "GrpcSimple");
        assert_eq!(m.message.message.tags(), Some("TagA"));
        assert!(!m.message_id().is_empty());
        assert!(!m.receipt_handle().is_empty());
    }
    // Acknowledge all but two; hand one of those back at once.
    let (keep, done) = got.split_at(2);
    for m in done {
        consumer.ack(m).await.unwrap();
    }
    let mut back = keep[0].clone();
    let old = back.clone();
    consumer
        .change_invisible_duration(&mut back, Duration::ZERO)
        .await
        .unwrap();
    assert_ne!(back.receipt_handle(), old.receipt_handle());
    let again = receive_n(&consumer, 1, invisible).await;
    assert_eq!(again.len(), 1, "only the handed-back message comes again");
    assert_eq!(body(&again[0]), body(&keep[0]));
    assert_eq!(again[0].delivery_attempt, 2);
    assert_eq!(again[0].message.reconsume_times, 1);
    // The handle of an earlier delivery no longer acknowledges it.
    let stale = consumer.ack(&old).await.unwrap_err();
    assert!(
        matches!(&stale, ConsumerError::Grpc(e) if e.code() == Some(v2::Code::InvalidReceiptHandle)),
        "{stale}"
    );
    consumer.ack(&again[0]).await.unwrap();
    consumer.ack(&keep[1]).await.unwrap();
    // Nothing is left: a receive waits its await duration and comes back empty.
    assert!(consumer.receive(32, invisible).await.unwrap().is_empty());
    consumer.shutdown().await;
    proxy.shutdown().await;
    cluster.shutdown().await;
}

/// Records the code and header type of every request a server reads.
#[derive(Default)]
struct HeaderTypes(parking_lot::Mutex<Vec<(i32, SerializeType)>>);

impl HeaderTypes {
    /// The header types of the requests with `code`.
    fn of(&self, code: i32) -> Vec<SerializeType> {
        let seen = self.0.lock();
        seen.iter()
            .filter(|(c, _)| *c == code)
            .map(|(_, t)| *t)
            .collect()
    }
}

impl mq_remoting::RpcHook for HeaderTypes {
    fn before_request(
        &self,
        _ctx: &mq_remoting::RequestContext,
        request: &mq_remoting::RemotingCommand,
    ) -> futures_util::future::BoxFuture<'static, mq_remoting::HookAction> {
        self.0.lock().push((request.code, request.serialize_type));
        Box::pin(async { mq_remoting::HookAction::Continue })
    }
}

/// The proxy's requests to the cluster carry the header type it is configured with (ROCKETMQ
/// by default): its sends, and the pulls that serve its consumers' receives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_speaks_to_the_cluster_in_its_header_type() {
    use mq_client_api::RequestCode;
    for headers in [SerializeType::RocketMq, SerializeType::Json] {
        let cluster = Cluster::builder().start().await.unwrap();
        let seen = std::sync::Arc::new(HeaderTypes::default());
        cluster.broker(0).add_rpc_hook(seen.clone());
        let proxy = proxy_with(&cluster, headers).await;
        let endpoint = proxy.local_addr().to_string();
        let producer =
            GrpcProducer::start(GrpcProducerConfig::new(&endpoint).with_topic("GrpcHeaders"))
                .await
                .unwrap();
        producer
            .send(Message::new("GrpcHeaders", "h").with_tags("TagA"))
            .await
            .unwrap();
        let (consumer, read) =
            read_back(&endpoint, "grpc_headers_cg", "GrpcHeaders", "TagA", 1).await;
        assert_eq!(read.len(), 1, "{headers:?}");
        for code in [RequestCode::SEND_MESSAGE_V2, RequestCode::PULL_MESSAGE] {
            let types = seen.of(code.0);
            assert!(
                !types.is_empty() && types.iter().all(|t| *t == headers),
                "{headers:?}, code {}: {types:?}",
                code.0
            );
        }
        consumer.shutdown().await;
        producer.shutdown().await;
        proxy.shutdown().await;
        cluster.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simple_consumer_names_what_is_wrong() {
    // Nothing listens on this port: the error names the endpoint.
    let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = unused.local_addr().unwrap().to_string();
    drop(unused);
    let e = SimpleConsumer::start(
        SimpleConsumerConfig::new("g", addr.clone())
            .subscribe("T", "*")
            .with_request_timeout(Duration::from_secs(2)),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&e, ConsumerError::Grpc(GrpcError::Connect { endpoint, .. } | GrpcError::Timeout { endpoint, .. }) if *endpoint == addr),
        "{e}"
    );
    assert!(e.to_string().contains(&addr), "{e}");
    // Bad settings are refused before any connection.
    let e = SimpleConsumer::start(SimpleConsumerConfig::new("g", addr.clone()))
        .await
        .unwrap_err();
    assert!(matches!(e, ConsumerError::Subscription(_)), "{e}");
    let e = SimpleConsumer::start(SimpleConsumerConfig::new("g", addr).subscribe("bad topic", "*"))
        .await
        .unwrap_err();
    assert!(matches!(e, ConsumerError::Subscription(_)), "{e}");

    let cluster = Cluster::builder().start().await.unwrap();
    let proxy = proxy(&cluster).await;
    let consumer = SimpleConsumer::start(
        SimpleConsumerConfig::new("grpc_err_cg", proxy.local_addr().to_string())
            .subscribe("NoSuchTopicHere", "*")
            .with_await_duration(Duration::from_secs(1)),
    )
    .await
    .unwrap();
    let e = consumer
        .receive(0, Duration::from_secs(30))
        .await
        .unwrap_err();
    assert!(matches!(e, ConsumerError::Subscription(_)), "{e}");
    let e = consumer
        .receive(8, Duration::from_secs(30))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ConsumerError::Grpc(g) if g.code() == Some(v2::Code::TopicNotFound)),
        "{e}"
    );
    consumer.shutdown().await;
    proxy.shutdown().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grpc_producer_sends_what_both_kinds_of_consumer_read() {
    let (cluster, proxy, endpoint, producer) = producer_setup("GrpcOut").await;
    let mut ids = Vec::new();
    for i in 0..6 {
        let mut m = Message::new("GrpcOut", format!("g{i}").into_bytes())
            .with_tags("TagG")
            .with_keys(["k1", "k2"]);
        m.put_user_property("color", "blue").unwrap();
        let r = producer.send(m).await.unwrap();
        assert_eq!(r.status, SendStatus::SendOk);
        assert_eq!(r.message_queue.topic, "GrpcOut");
        assert!(r.queue_offset >= 0);
        ids.push(r.msg_id);
    }
    // A FIFO group keeps one queue.
    let mut fifo_queues = BTreeSet::new();
    for i in 0..4 {
        let mut m = Message::new("GrpcOut", format!("f{i}").into_bytes());
        m.set_property(mq_grpc::convert::SHARDING_KEY, "order-1");
        fifo_queues.insert(producer.send(m).await.unwrap().message_queue.queue_id);
    }
    assert_eq!(fifo_queues.len(), 1, "{fifo_queues:?}");
    // The remoting pull consumer reads them, with tag, keys, id and user property.
    let pull = PullConsumer::new(
        ConsumerConfig::new("grpc_out_pull_cg", cluster.namesrv_addr())
            .with_client(ClientConfig::new(cluster.namesrv_addr()).with_instance_name("grpc-out"))
            .with_consume_from(ConsumeFrom::FirstOffset),
    );
    pull.subscribe("GrpcOut", "TagG").unwrap();
    pull.start().await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..20 {
        if seen.len() >= 6 {
            break;
        }
        seen.extend(pull.poll(Duration::from_secs(1)).await.unwrap());
    }
    let mut got_ids: Vec<String> = seen
        .iter()
        .map(|m| m.message.uniq_key().unwrap().to_owned())
        .collect();
    got_ids.sort();
    ids.sort();
    assert_eq!(got_ids, ids);
    for m in &seen {
        assert_eq!(m.message.keys(), vec!["k1", "k2"]);
        assert_eq!(m.message.property("color"), Some("blue"));
    }
    pull.shutdown().await;
    // And so does the simple consumer.
    let simple = SimpleConsumer::start(
        SimpleConsumerConfig::new("grpc_out_simple_cg", &endpoint)
            .subscribe("GrpcOut", "TagG")
            .with_await_duration(Duration::from_secs(1)),
    )
    .await
    .unwrap();
    let got = receive_n(&simple, 6, Duration::from_secs(60)).await;
    let bodies: BTreeSet<String> = got.iter().map(body).collect();
    assert_eq!(bodies, (0..6).map(|i| format!("g{i}")).collect());
    assert!(
        got.iter()
            .all(|m| m.message.message.property("color") == Some("blue"))
    );
    simple.shutdown().await;
    producer.shutdown().await;
    proxy.shutdown().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_batch_is_stored_together_and_a_bad_one_not_at_all() {
    let (cluster, proxy, endpoint, producer) = producer_setup("GrpcBatch").await;
    let batch: Vec<Message> = (0..5)
        .map(|i| Message::new("GrpcBatch", format!("b{i}").into_bytes()).with_tags("TagB"))
        .collect();
    let results = producer.send_batch(batch).await.unwrap();
    assert_eq!(results.len(), 5);
    let queue = &results[0].message_queue;
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r.status, SendStatus::SendOk);
        assert_eq!(&r.message_queue, queue, "one queue for the whole batch");
        assert_eq!(r.queue_offset, results[0].queue_offset + i as i64);
    }
    let ids: BTreeSet<&str> = results.iter().map(|r| r.msg_id.as_str()).collect();
    assert_eq!(ids.len(), 5, "each message its own id");
    // Refused before anything is sent, the messages handed back: a delay inside a batch, two
    // topics, no message at all.
    let delayed = vec![
        Message::new("GrpcBatch", b"x".to_vec()),
        Message::new("GrpcBatch", b"y".to_vec()).with_delay_level(2),
    ];
    let e = producer.send_batch(delayed).await.unwrap_err();
    assert!(matches!(e.error(), ProducerError::Batch(_)), "{e}");
    assert_eq!(e.into_message().len(), 2);
    let mixed = vec![
        Message::new("GrpcBatch", b"x".to_vec()),
        Message::new("GrpcOther", b"y".to_vec()),
    ];
    assert!(matches!(
        producer.send_batch(mixed).await.unwrap_err().error(),
        ProducerError::Batch(_)
    ));
    assert!(matches!(
        producer.send_batch(Vec::new()).await.unwrap_err().error(),
        ProducerError::Batch(_)
    ));
    // The proxy refuses a batch with a transactional message whole: nothing of it is stored.
    let half = {
        let mut m = Message::new("GrpcBatch", b"h".to_vec()).with_tags("TagB");
        m.set_property(
            mq_client_api::message::property::TRANSACTION_PREPARED,
            "true",
        );
        m
    };
    let e = producer
        .send_batch(vec![
            Message::new("GrpcBatch", b"t".to_vec()).with_tags("TagB"),
            half,
        ])
        .await
        .unwrap_err();
    assert!(!e.error().possibly_delivered(), "{e}");
    // What a consumer reads is the good batch, in order, with the ids the producer reported.
    let (simple, read) = read_back(&endpoint, "grpc_batch_cg", "GrpcBatch", "TagB", 5).await;
    let expected: Vec<(String, i64, String)> = results
        .iter()
        .enumerate()
        .map(|(i, r)| (format!("b{i}"), r.queue_offset, r.msg_id.clone()))
        .collect();
    assert_eq!(read, expected);
    assert!(
        simple
            .receive(32, Duration::from_secs(60))
            .await
            .unwrap()
            .is_empty(),
        "nothing of the refused batches was stored"
    );
    simple.shutdown().await;
    producer.shutdown().await;
    proxy.shutdown().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grpc_producer_gathers_sends_into_batches_and_answers_each() {
    let cluster = Cluster::builder().start().await.unwrap();
    let proxy = proxy(&cluster).await;
    let endpoint = proxy.local_addr().to_string();
    let start = |linger: Duration| {
        GrpcProducer::start(
            GrpcProducerConfig::new(&endpoint)
                .with_topic("GrpcGather")
                .with_batching(BatchingConfig::new(linger, 1 << 20, 8)),
        )
    };
    // Batches close at 8 messages, or after a linger longer than a send may take.
    let producer = start(Duration::from_secs(60)).await.unwrap();
    let gathered =
        |i: usize| Message::new("GrpcGather", format!("g{i}").into_bytes()).with_tags("TagG");
    // Eight sends at once fill one batch, which goes at once: one request, so one queue and
    // consecutive offsets; each send its own result.
    let results: Vec<_> =
        futures_util::future::join_all((0..8).map(|i| producer.send(gathered(i))))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
    let queue = &results[0].message_queue;
    assert!(
        results.iter().all(|r| &r.message_queue == queue),
        "{results:?}"
    );
    let first = results.iter().map(|r| r.queue_offset).min().unwrap();
    let offsets: BTreeSet<i64> = results.iter().map(|r| r.queue_offset).collect();
    assert_eq!(offsets, (first..first + 8).collect(), "{results:?}");
    // A send its caller gave up on after it joined a batch still goes: dropped, the producer
    // cuts its batches' lingers short.
    let mut given_up = Box::pin(producer.send(gathered(9)));
    assert!(
        futures_util::FutureExt::now_or_never(&mut given_up).is_none(),
        "waits for its batch"
    );
    drop(given_up);
    drop(producer);
    // With a short linger, a send alone goes when it is up.
    let producer = start(Duration::from_millis(20)).await.unwrap();
    let alone = tokio::time::timeout(Duration::from_secs(10), producer.send(gathered(8)))
        .await
        .expect("a lone send is sent after the linger")
        .unwrap();
    assert_eq!(alone.status, SendStatus::SendOk);
    // What may not share a request is still sent: a delayed message, one of a message group.
    let delayed = producer
        .send(Message::new("GrpcGather", "later").with_delay_level(1))
        .await
        .unwrap();
    assert_eq!(delayed.status, SendStatus::SendOk);
    let mut in_group = Message::new("GrpcGather", "in a group");
    in_group.set_property(mq_grpc::convert::SHARDING_KEY, "group-1");
    let grouped = producer.send(in_group).await.unwrap();
    assert_eq!(grouped.status, SendStatus::SendOk);
    // What a consumer reads of the batches: each body at the offset and with the id its send
    // was answered with.
    let (simple, mut read) = read_back(&endpoint, "grpc_gather_cg", "GrpcGather", "TagG", 10).await;
    let given_up = read.iter().position(|(b, ..)| b == "g9");
    assert!(given_up.is_some(), "the given-up send was stored: {read:?}");
    read.retain(|(b, ..)| b != "g9");
    let mut expected: Vec<(String, i64, String)> = results
        .iter()
        .chain([&alone])
        .enumerate()
        .map(|(i, r)| (format!("g{i}"), r.queue_offset, r.msg_id.clone()))
        .collect();
    expected.sort();
    assert_eq!(read, expected);
    simple.shutdown().await;
    // A batch refused: each send hears it, with its own message back.
    let send_batch = mq_client_api::RequestCode::SEND_BATCH_MESSAGE.0;
    cluster
        .faults(0)
        .inject(send_batch, Fault::Respond(ResponseCode::NO_PERMISSION.0));
    let failed = futures_util::future::join_all((0..3).map(|i| {
        producer.send(Message::new(
            "GrpcGather",
            format!("refused {i}").into_bytes(),
        ))
    }))
    .await;
    for (i, outcome) in failed.into_iter().enumerate() {
        let e = outcome.unwrap_err();
        match e.error() {
            ProducerError::BatchFailed { topic, size, cause } => {
                assert_eq!(topic, "GrpcGather");
                assert_eq!(*size, 3);
                assert!(
                    matches!(**cause, ProducerError::GrpcSendFailed { .. }),
                    "{cause}"
                );
            }
            other => panic!("{other}"),
        }
        assert!(!e.error().possibly_delivered(), "{e}");
        let back = e.into_message();
        assert_eq!(back.body, format!("refused {i}").into_bytes());
        assert!(back.uniq_key().is_some());
    }
    cluster.faults(0).clear();
    producer.shutdown().await;
    proxy.shutdown().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grpc_producer_retries_what_may_pass_and_hands_back_what_cannot() {
    let (cluster, proxy, _, producer) = producer_setup("GrpcRetry").await;
    let send_v2 = mq_client_api::RequestCode::SEND_MESSAGE_V2.0;
    // A busy broker (TOO_MANY_REQUESTS through the proxy) is tried again.
    cluster
        .faults(0)
        .inject_times(send_v2, Fault::Respond(ResponseCode::SYSTEM_BUSY.0), 1);
    let r = producer
        .send(Message::new("GrpcRetry", "busy once"))
        .await
        .unwrap();
    assert_eq!(r.status, SendStatus::SendOk);
    assert_eq!(cluster.faults(0).hits(send_v2), 1, "the fault was met");
    // A refusal (FORBIDDEN) is not retried, and the message comes back with its id.
    cluster
        .faults(0)
        .inject(send_v2, Fault::Respond(ResponseCode::NO_PERMISSION.0));
    let e = producer
        .send(Message::new("GrpcRetry", "refused"))
        .await
        .unwrap_err();
    match e.error() {
        ProducerError::GrpcSendFailed {
            attempts, source, ..
        } => {
            assert_eq!(*attempts, 1);
            assert_eq!(
                source.as_ref().and_then(|s| s.code()),
                Some(v2::Code::Forbidden)
            );
        }
        other => panic!("{other}"),
    }
    assert!(!e.error().possibly_delivered());
    let back = e.into_message();
    assert_eq!(back.body.as_ref(), b"refused");
    assert!(back.uniq_key().is_some());
    cluster.faults(0).clear();
    // An empty body never leaves.
    let e = producer
        .send(Message::new("GrpcRetry", ""))
        .await
        .unwrap_err();
    assert!(
        matches!(e.error(), ProducerError::Validation(_)),
        "{}",
        e.error()
    );
    producer.shutdown().await;
    // No proxy: the error names the endpoint.
    let gone = proxy.local_addr().to_string();
    proxy.shutdown().await;
    let e = GrpcProducer::start(
        GrpcProducerConfig::new(&gone).with_send_timeout(Duration::from_secs(2)),
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains(&gone), "{e}");
    cluster.shutdown().await;
}

/// Decides a transaction by its argument, and commits what the proxy asks about.
struct ByArg {
    checked: std::sync::atomic::AtomicUsize,
}

impl TransactionListener for ByArg {
    fn execute(&self, _msg: &Message, arg: &str) -> LocalTransactionState {
        match arg {
            "commit" => LocalTransactionState::Commit,
            "rollback" => LocalTransactionState::Rollback,
            _ => LocalTransactionState::Unknown,
        }
    }

    fn check(&self, msg: &mq_client_api::MessageExt) -> LocalTransactionState {
        self.checked
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(msg.message.body.as_ref(), b"tx unknown");
        LocalTransactionState::Commit
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grpc_producer_commits_rolls_back_and_answers_the_proxys_checks() {
    // The proxy asks about the undecided message well after the producer's send timeout: its
    // Telemetry stream must outlive the deadline it was opened under.
    let cluster = Cluster::builder()
        .configure(|c| c.with_transaction_timeout(Duration::from_millis(2500)))
        .start()
        .await
        .unwrap();
    let proxy = proxy(&cluster).await;
    let endpoint = proxy.local_addr().to_string();
    let topic = "GrpcTx";
    let listener = std::sync::Arc::new(ByArg {
        checked: std::sync::atomic::AtomicUsize::new(0),
    });
    let producer = GrpcProducer::start_transactional(
        GrpcProducerConfig::new(&endpoint)
            .with_topic(topic)
            .with_send_timeout(Duration::from_secs(1)),
        listener.clone(),
    )
    .await
    .unwrap();
    for (arg, state) in [
        ("commit", LocalTransactionState::Commit),
        ("rollback", LocalTransactionState::Rollback),
        ("unknown", LocalTransactionState::Unknown),
    ] {
        let r = producer
            .send_in_transaction(Message::new(topic, format!("tx {arg}").into_bytes()), arg)
            .await
            .unwrap();
        assert_eq!(r.local_state, state);
        assert!(r.send.transaction_id.is_some(), "{arg}: {:?}", r.send);
    }
    // The committed message at once; the undecided one once the proxy asked and the listener
    // committed it; the rolled back one never.
    let consumer = SimpleConsumer::start(
        SimpleConsumerConfig::new("grpc_tx_cg", &endpoint)
            .subscribe(topic, "*")
            .with_await_duration(Duration::from_secs(2)),
    )
    .await
    .unwrap();
    let got = receive_n(&consumer, 2, Duration::from_secs(60)).await;
    let seen: BTreeSet<String> = got.iter().map(body).collect();
    assert_eq!(
        seen,
        ["tx commit", "tx unknown"].map(String::from).into(),
        "{got:?}"
    );
    assert!(listener.checked.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    for m in &got {
        consumer.ack(m).await.unwrap();
    }
    assert!(
        consumer
            .receive(32, Duration::from_secs(60))
            .await
            .unwrap()
            .is_empty(),
        "the rolled back message never comes"
    );
    consumer.shutdown().await;
    producer.shutdown().await;
    proxy.shutdown().await;
    cluster.shutdown().await;
}

/// A topic made with RocketMQ 5 attributes carries them (what a 5.x proxy checks a send's
/// message type against).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_is_created_with_its_attributes() {
    use mq_client_api::RequestCode;
    use mq_client_api::header::{CommandHeader, GetTopicConfigRequestHeader};
    use mq_remoting::RemotingCommand;

    let cluster = Cluster::builder().start().await.unwrap();
    let admin = Producer::new(ProducerConfig::new("attr_pg", cluster.namesrv_addr()));
    admin.start().await.unwrap();
    admin
        .create_topic_with_attributes("TBW102", "TxTyped", 2, &[("message.type", "TRANSACTION")])
        .await
        .unwrap();
    let request = RemotingCommand::request(RequestCode::GET_TOPIC_CONFIG.0).with_ext_fields(
        GetTopicConfigRequestHeader {
            topic: "TxTyped".into(),
        }
        .to_ext_fields(),
    );
    let r = cluster
        .client_api()
        .remoting()
        .invoke(&cluster.broker_addr(0), request, Duration::from_secs(3))
        .await
        .unwrap();
    assert_eq!(r.code, ResponseCode::SUCCESS.0, "{:?}", r.remark);
    let config: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(config["readQueueNums"], 2);
    assert_eq!(config["attributes"]["message.type"], "TRANSACTION");
    admin.shutdown().await;
    cluster.shutdown().await;
}

/// Through a proxy that enforces TLS: the gRPC producer and the simple consumer, given the
/// proxy's certificate as their root, send, receive and acknowledge; without TLS the producer
/// does not start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grpc_clients_speak_tls_to_a_proxy_that_enforces_it() {
    use mq_remoting::{ClientTls, ServerTls, TlsMode};
    // The cluster enforces TLS too: the proxy reaches it over TLS, or not at all.
    let cert = mq_test_support::TestCert::loopback();
    let cluster = Cluster::builder()
        .tls(cert.clone(), TlsMode::Enforcing)
        .start()
        .await
        .unwrap();
    let tls = ClientTls::with_roots_pem(cert.cert_pem.as_bytes()).unwrap();
    let proxy_config = || {
        GrpcProxyConfig::new(&cluster.namesrv_addr())
            .with_listen(SocketAddr::from(([127, 0, 0, 1], 0)))
            .with_tls(
                ServerTls::from_pem(cert.cert_pem.as_bytes(), cert.key_pem.as_bytes())
                    .unwrap()
                    .with_mode(TlsMode::Enforcing),
            )
    };
    let plain_behind = GrpcProxy::start(proxy_config()).await.unwrap();
    let e = GrpcProducer::start(
        GrpcProducerConfig::new(plain_behind.local_addr().to_string())
            .with_topic("GrpcTls")
            .with_tls(tls.clone()),
    )
    .await
    .err()
    .unwrap();
    assert!(
        e.to_string().contains(&cluster.namesrv_addr()),
        "the refusal names the name server that did not answer: {e}"
    );
    plain_behind.shutdown().await;
    let proxy = GrpcProxy::start(proxy_config().with_cluster_tls(tls.clone()))
        .await
        .unwrap();
    let endpoint = proxy.local_addr().to_string();
    let plain = GrpcProducer::start(
        GrpcProducerConfig::new(&endpoint)
            .with_topic("GrpcTls")
            .with_send_timeout(Duration::from_secs(2)),
    )
    .await;
    assert!(plain.is_err(), "a plain producer started");
    let producer = GrpcProducer::start(
        GrpcProducerConfig::new(&endpoint)
            .with_topic("GrpcTls")
            .with_tls(tls.clone()),
    )
    .await
    .unwrap();
    let bodies: Vec<String> = (0..3).map(|i| format!("tls {i}")).collect();
    for b in &bodies {
        let sent = producer
            .send(Message::new("GrpcTls", b.clone().into_bytes()).with_tags("TagT"))
            .await
            .unwrap();
        assert_eq!(sent.status, SendStatus::SendOk);
    }
    let consumer = SimpleConsumer::start(
        SimpleConsumerConfig::new("grpc_tls_cg", &endpoint)
            .subscribe("GrpcTls", "TagT")
            .with_await_duration(Duration::from_secs(2))
            .with_tls(tls),
    )
    .await
    .unwrap();
    let got = receive_n(&consumer, 3, Duration::from_secs(60)).await;
    let seen: BTreeSet<String> = got.iter().map(body).collect();
    assert_eq!(seen, bodies.iter().cloned().collect());
    for m in &got {
        consumer.ack(m).await.unwrap();
    }
    consumer.shutdown().await;
    producer.shutdown().await;
    proxy.shutdown().await;
    cluster.shutdown().await;
}

/// Accounts of the ACL tests: one may publish to `GrpcAclTopic`, one may consume it in
/// `GrpcAclGroup`; nothing else is allowed to either.
const GRPC_ACL: &str = "
accounts:
  - accessKey: grpcPublisher
    secretKey: publisher-secret
    defaultTopicPerm: DENY
    defaultGroupPerm: DENY
    topicPerms:
      - GrpcAclTopic=PUB
  - accessKey: grpcConsumer
    secretKey: consumer-secret
    defaultTopicPerm: DENY
    defaultGroupPerm: DENY
    topicPerms:
      - GrpcAclTopic=SUB
    groupPerms:
      - GrpcAclGroup=SUB
";

fn grpc_acl() -> mq_broker::Acl {
    mq_broker::Acl::from_yaml(GRPC_ACL).unwrap()
}

/// The account the proxy reaches the broker with.
fn proxy_account() -> mq_client_api::acl::Credentials {
    mq_client_api::acl::Credentials::new("grpcProxyInner", "proxy-inner-secret")
}

fn broker_with_acl(c: mq_broker::BrokerConfig) -> mq_broker::BrokerConfig {
    c.with_acl(grpc_acl().with_inner_account(&proxy_account()).unwrap())
}

fn refused_code(e: &ProducerError) -> Option<v2::Code> {
    match e {
        ProducerError::Grpc(g) => g.code(),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_with_acl_lets_each_account_do_what_it_may_and_names_what_it_may_not() {
    use mq_client_api::acl::Credentials;
    let cluster = Cluster::builder()
        .configure(broker_with_acl)
        .start()
        .await
        .unwrap();
    let proxy = GrpcProxy::start(
        GrpcProxyConfig::new(&cluster.namesrv_addr())
            .with_listen(SocketAddr::from(([127, 0, 0, 1], 0)))
            .with_access_control(std::sync::Arc::new(grpc_acl()))
            .with_credentials(proxy_account()),
    )
    .await
    .unwrap();
    let endpoint = proxy.local_addr().to_string();
    let producer_as = |who: Option<Credentials>| {
        let mut config = GrpcProducerConfig::new(&endpoint).with_topic("GrpcAclTopic");
        config.credentials = who;
        GrpcProducer::start(config)
    };

    // The publisher sends; the proxy reaches the broker, which checks ACL too, as its own
    // account.
    let producer = producer_as(Some(Credentials::new("grpcPublisher", "publisher-secret")))
        .await
        .unwrap();
    let r = producer
        .send(Message::new("GrpcAclTopic", &b"signed"[..]))
        .await
        .unwrap();
    assert_eq!(r.status, SendStatus::SendOk);
    producer.shutdown().await;

    // No account, a wrong secret, and an account that may only consume: each is refused at
    // start (the settings name the topic to publish to), with the reason.
    for (who, reason) in [
        (None, "No accessKey"),
        (
            Some(Credentials::new("grpcPublisher", "not-the-secret")),
            "Check signature failed",
        ),
        (
            Some(Credentials::new("grpcConsumer", "consumer-secret")),
            "topic:GrpcAclTopic",
        ),
    ] {
        let e = producer_as(who).await.err().unwrap();
        assert_eq!(refused_code(&e), Some(v2::Code::Unauthorized), "{e}");
        assert!(e.to_string().contains(reason), "{e}");
    }

    // The consumer receives what the publisher sent; the publisher may not consume.
    let consumer_as = |who: Credentials| {
        let mut config = SimpleConsumerConfig::new("GrpcAclGroup", &endpoint)
            .subscribe("GrpcAclTopic", "*")
            .with_await_duration(Duration::from_secs(2));
        config.credentials = Some(who);
        SimpleConsumer::start(config)
    };
    let consumer = consumer_as(Credentials::new("grpcConsumer", "consumer-secret"))
        .await
        .unwrap();
    let got = receive_n(&consumer, 1, Duration::from_secs(30)).await;
    assert_eq!(got.iter().map(body).collect::<Vec<_>>(), ["signed"]);
    consumer.ack(&got[0]).await.unwrap();
    consumer.shutdown().await;
    let e = consumer_as(Credentials::new("grpcPublisher", "publisher-secret"))
        .await
        .err()
        .unwrap();
    assert!(
        matches!(&e, ConsumerError::Grpc(g) if g.code() == Some(v2::Code::Unauthorized)),
        "{e}"
    );
    assert!(e.to_string().contains("group:GrpcAclGroup"), "{e}");

    proxy.shutdown().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_timer_message_comes_at_its_time_and_a_recalled_one_never() {
    let (cluster, proxy, endpoint, producer) = producer_setup("GrpcTimer").await;
    let due = std::time::SystemTime::now() + Duration::from_millis(1500);
    let timer = |body: &str| Message::new("GrpcTimer", body.to_owned().into_bytes());
    producer
        .send(timer("on time").with_deliver_time(due))
        .await
        .unwrap();
    let recalled = producer
        .send(timer("recalled").with_deliver_time(due))
        .await
        .unwrap();
    let handle = recalled.recall_handle.as_deref().expect("a recall handle");
    let id = producer.recall_message("GrpcTimer", handle).await.unwrap();
    assert_eq!(id, recalled.msg_id);
    let bad = producer
        .recall_message("GrpcTimer", "not a handle")
        .await
        .unwrap_err();
    assert!(
        matches!(&bad, ProducerError::Grpc(e) if e.code() == Some(v2::Code::BadRequest)),
        "{bad}"
    );
    // Due after the other two: once it has come, they would have too.
    producer
        .send(timer("last").with_delay(Duration::from_millis(2500)))
        .await
        .unwrap();
    let consumer = SimpleConsumer::start(
        SimpleConsumerConfig::new("grpc_timer_cg", endpoint)
            .subscribe("GrpcTimer", "*")
            .with_await_duration(Duration::from_secs(2)),
    )
    .await
    .unwrap();
    let mut got: Vec<(String, std::time::SystemTime)> = Vec::new();
    for _ in 0..20 {
        if got.iter().any(|(b, _)| b == "last") {
            break;
        }
        for m in consumer.receive(32, Duration::from_secs(60)).await.unwrap() {
            got.push((body(&m), std::time::SystemTime::now()));
            consumer.ack(&m).await.unwrap();
        }
    }
    let bodies: Vec<&str> = got.iter().map(|(b, _)| b.as_str()).collect();
    assert_eq!(bodies, ["on time", "last"]);
    // Kept to the second, rounded down: never more than a second early.
    assert!(got[0].1 + Duration::from_secs(1) >= due, "came too early");
    consumer.shutdown().await;
    producer.shutdown().await;
    proxy.shutdown().await;
    cluster.shutdown().await;
}
