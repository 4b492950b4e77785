//! The client instance against the embedded cluster: scheduled heartbeats, and requests the
//! broker sends routed to the member that owns them.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    unreachable_pub
)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use mq_client_api::body::{
    ConsumeFromWhere, ConsumeType, ConsumerData, MessageModel, TopicRouteData,
};
use mq_client_api::header::{CheckTransactionStateRequestHeader, SendMessageRequestHeader};
use mq_client_api::message::{Message, MessageExt, property, sys_flag};
use mq_client_api::{SendRequest, SendStatus};
use mq_client_instance::{ClientConfig, ClientInstance, ConsumerMember, ProducerMember};
use mq_test_support::Cluster;
use tokio::sync::mpsc;

const T: Duration = Duration::from_secs(20);

struct Producer(&'static str, mpsc::UnboundedSender<(String, MessageExt)>);

impl ProducerMember for Producer {
    fn group(&self) -> String {
        self.0.into()
    }
    fn topics(&self) -> Vec<String> {
        vec!["TxTopic".into()]
    }
    fn route_updated(&self, _topic: &str, _route: &TopicRouteData) {}
    fn check_transaction_state(
        &self,
        broker_addr: String,
        message: MessageExt,
        _h: CheckTransactionStateRequestHeader,
    ) {
        self.1.send((broker_addr, message)).unwrap();
    }
}

struct Consumer(mpsc::UnboundedSender<()>);

impl ConsumerMember for Consumer {
    fn group(&self) -> String {
        "cg".into()
    }
    fn consumer_data(&self) -> ConsumerData {
        ConsumerData {
            group_name: "cg".into(),
            consume_type: ConsumeType::Passively,
            message_model: MessageModel::Clustering,
            consume_from_where: ConsumeFromWhere::LastOffset,
            subscription_data_set: vec![],
            unit_mode: false,
        }
    }
    fn route_updated(&self, _topic: &str, _route: &TopicRouteData) {}
    fn ids_changed(&self) {
        let _ = self.0.send(());
    }
}

fn instance(cluster: &Cluster, name: &str) -> Arc<ClientInstance> {
    ClientInstance::new(
        ClientConfig::new(cluster.namesrv_addr())
            .with_instance_name(name)
            .with_heartbeat_interval(Duration::from_millis(50))
            .with_poll_name_server_interval(Duration::from_millis(50)),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_heartbeats_register_members_and_notifications_reach_them() {
    let cluster = Cluster::builder().start().await.unwrap();
    let first = instance(&cluster, "first");
    let (tx, mut changed) = mpsc::unbounded_channel();
    first.register_consumer(Arc::new(Consumer(tx))).unwrap();
    // The instance learns brokers from routes; the producer's topic route is refreshed on the
    // schedule, and heartbeats follow.
    let (ptx, _checks) = mpsc::unbounded_channel();
    first
        .register_producer(Arc::new(Producer("pg", ptx)))
        .unwrap();
    first
        .update_route("TBW102", Duration::from_secs(3))
        .await
        .unwrap();
    first.start().unwrap();
    changed
        .recv()
        .await
        .expect("the broker announced the group change");
    let api = cluster.client_api();
    let ids = api
        .consumer_list_by_group(&cluster.broker_addr(0), "cg", T)
        .await
        .unwrap();
    assert_eq!(ids, vec![first.client_id().to_owned()]);

    let second = instance(&cluster, "second");
    second
        .register_consumer(Arc::new(Consumer(mpsc::unbounded_channel().0)))
        .unwrap();
    second
        .update_route("TBW102", Duration::from_secs(3))
        .await
        .unwrap();
    second.heartbeat_all().await;
    changed
        .recv()
        .await
        .expect("the first member hears of the second");
    second
        .unregister_consumer("cg", Duration::from_secs(3))
        .await;
    changed.recv().await.expect("and of its leaving");
    first.shutdown().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_checks_reach_the_owning_producer() {
    let cluster = Cluster::builder()
        .configure(|c| c.with_transaction_timeout(Duration::from_millis(100)))
        .start()
        .await
        .unwrap();
    let inst = instance(&cluster, "tx");
    let (tx, mut checks) = mpsc::unbounded_channel();
    inst.register_producer(Arc::new(Producer("tpg", tx)))
        .unwrap();
    inst.update_route("TBW102", Duration::from_secs(3))
        .await
        .unwrap();
    inst.start().unwrap();
    inst.heartbeat_all().await;
    let mut half = Message::new("TxTopic", Bytes::from_static(b"half"));
    half.set_property(property::TRANSACTION_PREPARED, "true");
    half.set_property(property::PRODUCER_GROUP, "tpg");
    half.set_property(property::UNIQ_CLIENT_MESSAGE_ID_KEYIDX, "HALF0001");
    let req = SendRequest {
        header: SendMessageRequestHeader {
            producer_group: "tpg".into(),
            topic: "TxTopic".into(),
            default_topic: "TBW102".into(),
            default_topic_queue_nums: 4,
            queue_id: 0,
            sys_flag: sys_flag::TRANSACTION_PREPARED_TYPE,
            properties: Some(half.properties_string()),
            ..Default::default()
        },
        body: half.body.clone(),
        msg_id: "HALF0001".into(),
        broker_name: "broker-a".into(),
        reply: false,
    };
    let r = inst
        .api()
        .send(&cluster.broker_addr(0), req, T)
        .await
        .unwrap();
    assert_eq!(r.status, SendStatus::SendOk);
    let (broker, msg) = checks.recv().await.expect("the broker checked with us");
    assert_eq!(broker, cluster.broker_addr(0));
    assert_eq!(msg.message.topic, "TxTopic");
    assert_eq!(msg.msg_id(), "HALF0001");
    inst.shutdown().await;
    cluster.shutdown().await;
}
