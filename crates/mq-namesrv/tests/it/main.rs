//! The name server through `ClientApi` over loopback.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    unreachable_pub
)]

use std::time::Duration;

use mq_client_api::body::{RegisterBrokerBody, TopicConfig, TopicList, from_json, to_json};
use mq_client_api::header::{
    CommandHeader, PutKvConfigRequestHeader, RegisterBrokerRequestHeader,
    UnregisterBrokerRequestHeader,
};
use mq_client_api::{ApiConfig, ClientApi, RequestCode, ResponseCode};
use mq_namesrv::{NameServer, NamesrvConfig, ORDER_TOPIC_CONFIG};
use mq_remoting::{ClientConfig, RemotingClient, RemotingCommand};
use mq_test_support::eventually;

const T: Duration = Duration::from_secs(10);

fn api_for(namesrv: &NameServer) -> ClientApi {
    let remoting = RemotingClient::new(ClientConfig::default());
    remoting
        .name_servers()
        .update(vec![namesrv.local_addr().to_string()]);
    ClientApi::new(remoting, ApiConfig::default())
}

fn header(name: &str, addr: &str, id: i64, compressed: bool) -> RegisterBrokerRequestHeader {
    RegisterBrokerRequestHeader {
        broker_name: name.into(),
        broker_addr: addr.into(),
        cluster_name: "DefaultCluster".into(),
        ha_server_addr: format!("{addr}1"),
        broker_id: id,
        compressed,
        ..Default::default()
    }
}

fn body(topics: &[(&str, i32)]) -> RegisterBrokerBody {
    let mut b = RegisterBrokerBody::default();
    for (t, q) in topics {
        b.topic_config_serialize_wrapper
            .topic_config_table
            .insert((*t).into(), TopicConfig::new(*t, *q));
    }
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_routes_cluster_and_unregistration() {
    let ns = NameServer::start(NamesrvConfig::default()).await.unwrap();
    let api = api_for(&ns);
    let addr = ns.local_addr().to_string();
    let e = api.topic_route("TopicTest", T).await.unwrap_err();
    assert_eq!(e.response_code(), Some(ResponseCode::TOPIC_NOT_EXIST));

    api.register_broker(
        &addr,
        header("broker-a", "127.0.0.1:10911", 0, false),
        &body(&[("TopicTest", 8)]),
        T,
    )
    .await
    .unwrap();
    api.register_broker(
        &addr,
        header("broker-b", "127.0.0.1:10921", 0, true),
        &body(&[("TopicTest", 4), ("Other", 2)]),
        T,
    )
    .await
    .unwrap();
    let slave = api
        .register_broker(
            &addr,
            header("broker-b", "127.0.0.1:10931", 1, true),
            &body(&[("TopicTest", 4)]),
            T,
        )
        .await
        .unwrap();
    assert_eq!(slave.master_addr.as_deref(), Some("127.0.0.1:10921"));
    assert_eq!(slave.ha_server_addr.as_deref(), Some("127.0.0.1:109211"));

    let route = api.topic_route("TopicTest", T).await.unwrap();
    assert_eq!(route.queue_datas.len(), 2);
    let b = route.broker("broker-b").unwrap();
    assert_eq!(b.broker_addrs.len(), 2, "the slave is kept in the route");
    assert_eq!(b.master_addr(), Some("127.0.0.1:10921"));
    let qa = route
        .queue_datas
        .iter()
        .find(|q| q.broker_name == "broker-a")
        .unwrap();
    assert_eq!(
        (qa.read_queue_nums, qa.write_queue_nums, qa.perm),
        (8, 8, 6)
    );

    let info = api.cluster_info(T).await.unwrap();
    assert_eq!(
        info.cluster_addr_table["DefaultCluster"],
        vec!["broker-a", "broker-b"]
    );

    let list = api
        .remoting()
        .invoke(
            &addr,
            RemotingCommand::request(RequestCode::GET_ALL_TOPIC_LIST_FROM_NAMESERVER.0),
            T,
        )
        .await
        .unwrap();
    let list: TopicList = from_json("TopicList", &list.body).unwrap();
    assert_eq!(list.topic_list, vec!["Other", "TopicTest"]);

    api.unregister_broker(
        &addr,
        &UnregisterBrokerRequestHeader {
            broker_name: "broker-a".into(),
            broker_addr: "127.0.0.1:10911".into(),
            cluster_name: "DefaultCluster".into(),
            broker_id: 0,
        },
        T,
    )
    .await
    .unwrap();
    let route = api.topic_route("TopicTest", T).await.unwrap();
    assert!(route.broker("broker-a").is_none());
    let _ = ns.shutdown(T).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crc_mismatch_and_bad_headers_are_refused() {
    let ns = NameServer::start(NamesrvConfig::default()).await.unwrap();
    let api = api_for(&ns);
    let addr = ns.local_addr().to_string();
    let mut h = header("broker-a", "127.0.0.1:10911", 0, false);
    h.body_crc32 = 12345;
    let req = RemotingCommand::request(RequestCode::REGISTER_BROKER.0)
        .with_ext_fields(h.to_ext_fields())
        .with_body(body(&[("T", 4)]).encode_json());
    let resp = api.remoting().invoke(&addr, req, T).await.unwrap();
    assert_eq!(resp.code, ResponseCode::SYSTEM_ERROR.0);
    assert_eq!(resp.remark.as_deref(), Some("crc32 not match"));

    let mut ext = h.to_ext_fields();
    ext.remove("brokerAddr");
    let req = RemotingCommand::request(RequestCode::REGISTER_BROKER.0).with_ext_fields(ext);
    let resp = api.remoting().invoke(&addr, req, T).await.unwrap();
    assert_eq!(resp.code, ResponseCode::SYSTEM_ERROR.0);
    assert!(resp.remark.unwrap().contains("brokerAddr"));
    assert!(
        api.topic_route("T", T).await.is_err(),
        "nothing was registered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_brokers_register_with_a_bare_topic_wrapper() {
    let ns = NameServer::start(NamesrvConfig::default()).await.unwrap();
    let api = api_for(&ns);
    let wrapper = body(&[("Legacy", 4)]).topic_config_serialize_wrapper;
    let mut req = RemotingCommand::request(RequestCode::REGISTER_BROKER.0)
        .with_ext_fields(header("old", "127.0.0.1:10911", 0, false).to_ext_fields())
        .with_body(to_json(&wrapper));
    req.version = 36;
    let resp = api
        .remoting()
        .invoke(&ns.local_addr().to_string(), req, T)
        .await
        .unwrap();
    assert_eq!(resp.code, 0);
    assert!(api.topic_route("Legacy", T).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_broker_connection_removes_the_broker() {
    let ns = NameServer::start(NamesrvConfig::default()).await.unwrap();
    let client_api = api_for(&ns);
    let broker_api = api_for(&ns);
    let addr = ns.local_addr().to_string();
    broker_api
        .register_broker(
            &addr,
            header("broker-a", "127.0.0.1:10911", 0, false),
            &body(&[("T", 4)]),
            T,
        )
        .await
        .unwrap();
    assert!(client_api.topic_route("T", T).await.is_ok());
    let _ = broker_api.remoting().shutdown(T).await;
    eventually(|| ns.routes().route("T").is_none()).await;
    let e = client_api.topic_route("T", T).await.unwrap_err();
    assert_eq!(e.response_code(), Some(ResponseCode::TOPIC_NOT_EXIST));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_topic_config_reaches_routes_when_enabled() {
    let ns = NameServer::start(NamesrvConfig::default().with_order_message_enable(true))
        .await
        .unwrap();
    let api = api_for(&ns);
    let addr = ns.local_addr().to_string();
    api.register_broker(
        &addr,
        header("broker-a", "127.0.0.1:10911", 0, false),
        &body(&[("Ordered", 4)]),
        T,
    )
    .await
    .unwrap();
    let put = PutKvConfigRequestHeader {
        namespace: ORDER_TOPIC_CONFIG.into(),
        key: "Ordered".into(),
        value: "broker-a:4".into(),
    };
    let resp = api
        .remoting()
        .invoke(
            &addr,
            RemotingCommand::request(RequestCode::PUT_KV_CONFIG.0)
                .with_ext_fields(put.to_ext_fields()),
            T,
        )
        .await
        .unwrap();
    assert_eq!(resp.code, 0);
    let route = api.topic_route("Ordered", T).await.unwrap();
    assert_eq!(route.order_topic_conf.as_deref(), Some("broker-a:4"));
}
