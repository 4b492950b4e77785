//! Every `ClientApi` call against an `mq-remoting` server on loopback that decodes the request
//! with the same header types and answers like a broker or name server, error codes included.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use mq_client_api::body::*;
use mq_client_api::header::*;
use mq_client_api::message::{MessageExt, encode_batch, encode_record, property};
use mq_client_api::{
    ApiConfig, ClientApi, ClientApiError, Message, PullStatus, RequestCode, ResponseCode,
    SendRequest, SendStatus,
};
use mq_remoting::{
    ClientConfig, LanguageCode, RemotingClient, RemotingCommand, RemotingServer, SerializeType,
    ServerConfig, processor_fn,
};
use tokio::sync::mpsc;

const T: Duration = Duration::from_secs(10);

/// What the mock saw of requests that get no response.
type Seen = mpsc::UnboundedSender<RemotingCommand>;

fn ok(req: &RemotingCommand) -> RemotingCommand {
    RemotingCommand::response_to(req, 0, None)
}

fn err(req: &RemotingCommand, code: ResponseCode, remark: &str) -> RemotingCommand {
    RemotingCommand::response_to(req, code.0, Some(remark.to_owned()))
}

fn stored(topic: &str, queue_id: i32, offset: i64) -> MessageExt {
    let mut m = Message::new(topic, Bytes::from(format!("body-{offset}"))).with_tags("TagA");
    m.set_property(
        property::UNIQ_CLIENT_MESSAGE_ID_KEYIDX,
        format!("U{offset}"),
    );
    MessageExt {
        message: m,
        queue_id,
        queue_offset: offset,
        commit_log_offset: 1000 + offset,
        store_host: "127.0.0.1:10911".parse().unwrap(),
        born_host: "127.0.0.1:50000".parse().unwrap(),
        ..Default::default()
    }
}

fn answer(req: RemotingCommand, seen: &Seen) -> Option<RemotingCommand> {
    let ext = &req.ext_fields;
    let code = RequestCode(req.code);
    let resp = match code {
        RequestCode::GET_ROUTEINFO_BY_TOPIC => {
            let h = GetRouteInfoRequestHeader::decode(ext).unwrap();
            if h.topic != "TopicTest" {
                return Some(err(&req, ResponseCode::TOPIC_NOT_EXIST, "No topic route info"));
            }
            // Answer the way a 4.5.1 name server does: fastjson with bare numeric keys.
            ok(&req).with_body(
                r#"{"brokerDatas":[{"brokerAddrs":{0:"127.0.0.1:10911"},"brokerName":"broker-a","cluster":"C"}],"filterServerTable":{},"queueDatas":[{"brokerName":"broker-a","perm":6,"readQueueNums":4,"topicSynFlag":0,"writeQueueNums":4}]}"#,
            )
        }
        RequestCode::GET_BROKER_CLUSTER_INFO => ok(&req).with_body(
            r#"{"brokerAddrTable":{"broker-a":{"brokerAddrs":{0:"127.0.0.1:10911"},"brokerName":"broker-a","cluster":"C"}},"clusterAddrTable":{"C":["broker-a"]}}"#,
        ),
        RequestCode::REGISTER_BROKER => {
            let h = RegisterBrokerRequestHeader::decode(ext).unwrap();
            if h.body_crc32 != 0 && h.body_crc32 != body_crc32(&req.body) {
                return Some(err(&req, ResponseCode::SYSTEM_ERROR, "crc32 not match"));
            }
            let body = RegisterBrokerBody::decode(&req.body, h.compressed).unwrap();
            let n = body.topic_config_serialize_wrapper.topic_config_table.len();
            let mut kv = KvTable::default();
            kv.table.insert("topics".into(), n.to_string());
            ok(&req)
                .with_ext("masterAddr", "127.0.0.1:10911")
                .with_body(to_json(&kv))
        }
        RequestCode::UNREGISTER_BROKER => {
            UnregisterBrokerRequestHeader::decode(ext).unwrap();
            ok(&req)
        }
        RequestCode::SEND_MESSAGE | RequestCode::SEND_MESSAGE_V2 | RequestCode::SEND_BATCH_MESSAGE => {
            let h: SendMessageRequestHeader = if code == RequestCode::SEND_MESSAGE {
                SendMessageRequestHeader::decode(ext).unwrap()
            } else {
                SendMessageRequestHeaderV2::decode(ext).unwrap().into()
            };
            if req.is_oneway() {
                seen.send(req).unwrap();
                return None;
            }
            let response_code = match &*h.topic {
                "Busy" => return Some(err(&req, ResponseCode::SYSTEM_BUSY, "busy")),
                "Slow" => ResponseCode::FLUSH_DISK_TIMEOUT,
                _ => ResponseCode::SUCCESS,
            };
            // "NoId" is answered without its offset id, "BadOffset" with an offset that is not
            // a number, "Plain" with an empty region, tracing off and the optional fields.
            let topic = &*h.topic;
            let mut answer = RemotingCommand::response_to(&req, response_code.0, None)
                .with_ext("queueId", h.queue_id.to_string())
                .with_ext(
                    "queueOffset",
                    if topic == "BadOffset" {
                        "x".to_owned()
                    } else {
                        (10 * i64::from(code.0)).to_string()
                    },
                )
                .with_ext("MSG_REGION", if topic == "Plain" { "" } else { "DefaultRegion" })
                .with_ext("TRACE_ON", if topic == "Plain" { "false" } else { "true" });
            if topic != "NoId" {
                answer = answer.with_ext("msgId", "7F00000100002A9F0000000000001234");
            }
            if topic == "Plain" {
                answer = answer
                    .with_ext("transactionId", "T1")
                    .with_ext("recallHandle", "")
                    .with_ext("batchUniqId", "B1");
            }
            answer
        }
        RequestCode::HEART_BEAT => {
            let hb: HeartbeatData = from_json("heartbeat", &req.body).unwrap();
            assert_eq!(req.language, LanguageCode::Other);
            let mut r = ok(&req);
            r.version = if hb.client_id == "c@1" { 479 } else { 0 };
            r
        }
        RequestCode::UNREGISTER_CLIENT => {
            UnregisterClientRequestHeader::decode(ext).unwrap();
            ok(&req)
        }
        RequestCode::GET_CONSUMER_LIST_BY_GROUP => {
            let h = GetConsumerListByGroupRequestHeader::decode(ext).unwrap();
            if h.consumer_group != "cg" {
                return Some(err(&req, ResponseCode::SYSTEM_ERROR, "no consumer for this group"));
            }
            ok(&req).with_body(to_json(&ConsumerListByGroupBody {
                consumer_id_list: vec!["a@1".into(), "b@2".into()],
            }))
        }
        RequestCode::LOCK_BATCH_MQ => {
            let body: LockBatchRequestBody = from_json("lock", &req.body).unwrap();
            ok(&req).with_body(to_json(&LockBatchResponseBody {
                lock_ok_mq_set: body.mq_set.into_iter().take(1).collect(),
            }))
        }
        RequestCode::UNLOCK_BATCH_MQ => ok(&req),
        RequestCode::PULL_MESSAGE => {
            let h = PullMessageRequestHeader::decode(ext).unwrap();
            let (code, body) = match h.topic.as_str() {
                "TopicTest" => {
                    let mut body = BytesMut::new();
                    for i in 0..3 {
                        body.extend_from_slice(
                            &encode_record(&stored("TopicTest", h.queue_id, h.queue_offset + i)).unwrap(),
                        );
                    }
                    (ResponseCode::SUCCESS, body.freeze())
                }
                "Empty" => (ResponseCode::PULL_NOT_FOUND, Bytes::new()),
                _ => return Some(err(&req, ResponseCode::TOPIC_NOT_EXIST, "no topic")),
            };
            RemotingCommand::response_to(&req, code.0, None)
                .with_ext("suggestWhichBrokerId", "0")
                .with_ext("nextBeginOffset", (h.queue_offset + 3).to_string())
                .with_ext("minOffset", "0")
                .with_ext("maxOffset", "100")
                .with_body(body)
        }
        RequestCode::QUERY_CONSUMER_OFFSET => {
            let h = QueryConsumerOffsetRequestHeader::decode(ext).unwrap();
            if h.consumer_group == "new" {
                return Some(err(&req, ResponseCode::QUERY_NOT_FOUND, "Not found"));
            }
            ok(&req).with_ext("offset", "42")
        }
        RequestCode::UPDATE_CONSUMER_OFFSET => {
            UpdateConsumerOffsetRequestHeader::decode(ext).unwrap();
            if req.is_oneway() {
                seen.send(req).unwrap();
                return None;
            }
            ok(&req)
        }
        RequestCode::GET_MAX_OFFSET => {
            let h = GetMaxOffsetRequestHeader::decode(ext).unwrap();
            if h.topic == "Bare" {
                // A response that lacks its required header field.
                return Some(ok(&req));
            }
            ok(&req).with_ext("offset", "100")
        }
        RequestCode::GET_MIN_OFFSET => {
            GetMinOffsetRequestHeader::decode(ext).unwrap();
            ok(&req).with_ext("offset", "7")
        }
        RequestCode::SEARCH_OFFSET_BY_TIMESTAMP => {
            let h = SearchOffsetRequestHeader::decode(ext).unwrap();
            ok(&req).with_ext("offset", (h.timestamp / 1000).to_string())
        }
        RequestCode::GET_EARLIEST_MSG_STORETIME => {
            GetEarliestMsgStoretimeRequestHeader::decode(ext).unwrap();
            ok(&req).with_ext("timestamp", "1700000000000")
        }
        RequestCode::CONSUMER_SEND_MSG_BACK => {
            let h = ConsumerSendMsgBackRequestHeader::decode(ext).unwrap();
            if h.group == "gone" {
                return Some(err(&req, ResponseCode::SUBSCRIPTION_GROUP_NOT_EXIST, "no group"));
            }
            ok(&req)
        }
        RequestCode::END_TRANSACTION => {
            EndTransactionRequestHeader::decode(ext).unwrap();
            seen.send(req).unwrap();
            return None;
        }
        RequestCode::VIEW_MESSAGE_BY_ID => {
            let h = ViewMessageRequestHeader::decode(ext).unwrap();
            ok(&req).with_body(encode_record(&stored("TopicTest", 0, h.offset - 1000)).unwrap())
        }
        RequestCode::QUERY_MESSAGE => {
            let h = QueryMessageRequestHeader::decode(ext).unwrap();
            if h.key != "k" {
                return Some(err(&req, ResponseCode::QUERY_NOT_FOUND, "nothing"));
            }
            ok(&req)
                .with_ext("indexLastUpdateTimestamp", "0")
                .with_ext("indexLastUpdatePhyoffset", "0")
                .with_body(encode_record(&stored("TopicTest", 1, 5)).unwrap())
        }
        RequestCode::UPDATE_AND_CREATE_TOPIC => match CreateTopicRequestHeader::decode(ext) {
            Ok(_) => ok(&req),
            Err(e) => err(&req, ResponseCode::SYSTEM_ERROR, &e.to_string()),
        },
        _ => err(&req, ResponseCode::REQUEST_CODE_NOT_SUPPORTED, "nope"),
    };
    Some(resp)
}

struct Fixture {
    _server: RemotingServer,
    addr: String,
    api: ClientApi,
    seen: mpsc::UnboundedReceiver<RemotingCommand>,
}

async fn fixture(config: ApiConfig) -> Fixture {
    let server = RemotingServer::bind(ServerConfig::default()).await.unwrap();
    let (tx, seen) = mpsc::unbounded_channel();
    let tx = Arc::new(tx);
    server.set_default_processor(processor_fn(move |_ctx, req| {
        let tx = Arc::clone(&tx);
        async move { answer(req, &tx) }
    }));
    let addr: SocketAddr = server.local_addr();
    let remoting = RemotingClient::new(ClientConfig::default());
    remoting.name_servers().update(vec![addr.to_string()]);
    Fixture {
        _server: server,
        addr: addr.to_string(),
        api: ClientApi::new(remoting, config),
        seen,
    }
}

fn send_request(topic: &str, batch: bool) -> SendRequest {
    let body = if batch {
        encode_batch(&[Message::new(topic, "a"), Message::new(topic, "b")]).unwrap()
    } else {
        Bytes::from_static(b"hello")
    };
    SendRequest {
        header: SendMessageRequestHeader {
            producer_group: "pg".into(),
            topic: topic.into(),
            default_topic: "TBW102".into(),
            default_topic_queue_nums: 4,
            queue_id: 2,
            born_timestamp: 1,
            batch,
            ..Default::default()
        },
        body,
        msg_id: if batch { "U1,U2".into() } else { "U1".into() },
        broker_name: "broker-a".into(),
        reply: false,
    }
}

#[tokio::test]
async fn route_and_cluster_from_the_name_server() {
    for ty in [SerializeType::Json, SerializeType::RocketMq] {
        let f = fixture(ApiConfig::default().with_serialize_type(ty)).await;
        let route = f.api.topic_route("TopicTest", T).await.unwrap();
        assert_eq!(
            route.broker("broker-a").unwrap().master_addr(),
            Some("127.0.0.1:10911")
        );
        let err = f.api.topic_route("Nope", T).await.unwrap_err();
        assert_eq!(err.response_code(), Some(ResponseCode::TOPIC_NOT_EXIST));
        assert!(
            matches!(&err, ClientApiError::Broker { remark: Some(r), .. } if r.starts_with("No topic route"))
        );
        let route = f
            .api
            .topic_route_from(&f.addr, "TopicTest", T)
            .await
            .unwrap();
        assert_eq!(route.queue_datas.len(), 1);
        let info = f.api.cluster_info(T).await.unwrap();
        assert_eq!(info.cluster_addr_table["C"], vec!["broker-a".to_owned()]);
    }
}

#[tokio::test]
async fn no_name_server_is_a_typed_error() {
    let api = ClientApi::new(
        RemotingClient::new(ClientConfig::default()),
        ApiConfig::default(),
    );
    let err = api.topic_route("TopicTest", T).await.unwrap_err();
    assert!(matches!(
        err,
        ClientApiError::Remoting(mq_remoting::RemotingError::NoNameServer)
    ));
}

#[tokio::test]
async fn broker_registration_plain_and_compressed() {
    let f = fixture(ApiConfig::default()).await;
    let mut body = RegisterBrokerBody::default();
    for t in ["A", "B", "C"] {
        body.topic_config_serialize_wrapper
            .topic_config_table
            .insert(t.into(), TopicConfig::new(t, 4));
    }
    for compressed in [false, true] {
        let header = RegisterBrokerRequestHeader {
            broker_name: "broker-a".into(),
            broker_addr: "127.0.0.1:10911".into(),
            cluster_name: "C".into(),
            ha_server_addr: "127.0.0.1:10912".into(),
            broker_id: 1,
            compressed,
            ..Default::default()
        };
        let r = f
            .api
            .register_broker(&f.addr, header, &body, T)
            .await
            .unwrap();
        assert_eq!(r.master_addr.as_deref(), Some("127.0.0.1:10911"));
        assert_eq!(r.kv_table.table["topics"], "3");
    }
    let unregister = UnregisterBrokerRequestHeader {
        broker_name: "broker-a".into(),
        broker_addr: "127.0.0.1:10911".into(),
        cluster_name: "C".into(),
        broker_id: 1,
    };
    f.api
        .unregister_broker(&f.addr, &unregister, T)
        .await
        .unwrap();
}

#[tokio::test]
async fn sends_in_every_header_form() {
    for v2 in [true, false] {
        let f = fixture(ApiConfig::default().with_send_v2(v2)).await;
        let r = f
            .api
            .send(&f.addr, send_request("TopicTest", false), T)
            .await
            .unwrap();
        assert_eq!(r.status, SendStatus::SendOk);
        assert_eq!(r.msg_id, "U1");
        assert_eq!(r.offset_msg_id, "7F00000100002A9F0000000000001234");
        assert_eq!(r.message_queue.queue_id, 2);
        assert_eq!(r.message_queue.broker_name, "broker-a");
        // The mock encodes the request code it saw in the queue offset.
        assert_eq!(r.queue_offset, if v2 { 3100 } else { 100 });
        assert_eq!(r.region_id, "DefaultRegion");
        assert!(r.trace_on);
    }
    let f = fixture(ApiConfig::default()).await;
    let r = f
        .api
        .send(&f.addr, send_request("TopicTest", true), T)
        .await
        .unwrap();
    assert_eq!(r.queue_offset, 3200, "batches use SEND_BATCH_MESSAGE");
    assert_eq!(r.msg_id, "U1,U2");
}

#[tokio::test]
async fn send_answers_are_read_by_the_response_header_rules() {
    let f = fixture(ApiConfig::default()).await;
    let r = f
        .api
        .send(&f.addr, send_request("Plain", false), T)
        .await
        .unwrap();
    assert_eq!(r.offset_msg_id, "7F00000100002A9F0000000000001234");
    assert_eq!(
        r.region_id, "DefaultRegion",
        "an empty region is the default one"
    );
    assert!(!r.trace_on);
    assert_eq!(r.transaction_id.as_deref(), Some("T1"));
    assert_eq!(r.recall_handle, None, "an empty recall handle is none");
    // What a send to `topic` fails with: the answer's header, read by its rules.
    let header_error = |topic| {
        let f = &f;
        async move {
            match f.api.send(&f.addr, send_request(topic, false), T).await {
                Err(ClientApiError::Header { source, .. }) => source,
                other => panic!("{topic}: {other:?}"),
            }
        }
    };
    assert_eq!(
        header_error("NoId").await,
        HeaderError::MissingField {
            header: "SendMessageResponseHeader",
            field: "msgId"
        }
    );
    assert_eq!(
        header_error("BadOffset").await,
        HeaderError::InvalidField {
            header: "SendMessageResponseHeader",
            field: "queueOffset",
            value: "x".into()
        }
    );
}

#[tokio::test]
async fn send_outcomes_map_to_status_or_broker_error() {
    let f = fixture(ApiConfig::default()).await;
    let r = f
        .api
        .send(&f.addr, send_request("Slow", false), T)
        .await
        .unwrap();
    assert_eq!(r.status, SendStatus::FlushDiskTimeout);
    let e = f
        .api
        .send(&f.addr, send_request("Busy", false), T)
        .await
        .unwrap_err();
    assert_eq!(e.response_code(), Some(ResponseCode::SYSTEM_BUSY));
    assert!(e.is_retryable());
    // The callback form reports the same outcomes.
    let (tx, mut rx) = mpsc::unbounded_channel();
    for topic in ["TopicTest", "Busy"] {
        let tx = tx.clone();
        f.api
            .send_with_callback(&f.addr, send_request(topic, false), T, move |r| {
                tx.send(r).unwrap();
            })
            .await
            .unwrap();
    }
    let mut outcomes = [rx.recv().await.unwrap(), rx.recv().await.unwrap()];
    outcomes.sort_by_key(Result::is_err);
    assert_eq!(outcomes[0].as_ref().unwrap().status, SendStatus::SendOk);
    assert_eq!(
        outcomes[1].as_ref().unwrap_err().response_code(),
        Some(ResponseCode::SYSTEM_BUSY)
    );
}

#[tokio::test]
async fn oneway_calls_arrive_flagged_and_unanswered() {
    let mut f = fixture(ApiConfig::default()).await;
    f.api
        .send_oneway(&f.addr, send_request("TopicTest", false), T)
        .await
        .unwrap();
    let seen = f.seen.recv().await.unwrap();
    assert!(seen.is_oneway());
    assert_eq!(seen.code, RequestCode::SEND_MESSAGE_V2.0);

    let offset = UpdateConsumerOffsetRequestHeader {
        consumer_group: "cg".into(),
        topic: "TopicTest".into(),
        queue_id: 1,
        commit_offset: 9,
    };
    f.api
        .update_consumer_offset(&f.addr, &offset, T)
        .await
        .unwrap();
    f.api
        .update_consumer_offset_oneway(&f.addr, &offset, T)
        .await
        .unwrap();
    assert!(f.seen.recv().await.unwrap().is_oneway());

    let end = EndTransactionRequestHeader {
        producer_group: "pg".into(),
        tran_state_table_offset: 1,
        commit_log_offset: 2,
        commit_or_rollback: transaction_type::ROLLBACK,
        from_transaction_check: Some(false),
        msg_id: "U1".into(),
        transaction_id: None,
        topic: None,
    };
    f.api
        .end_transaction_oneway(&f.addr, &end, Some("local tx failed".into()), T)
        .await
        .unwrap();
    let seen = f.seen.recv().await.unwrap();
    assert_eq!(seen.code, RequestCode::END_TRANSACTION.0);
    assert_eq!(seen.remark.as_deref(), Some("local tx failed"));
    assert_eq!(seen.ext("commitOrRollback"), Some("12"));
}

#[tokio::test]
async fn client_management_calls() {
    let f = fixture(ApiConfig::default().with_language(LanguageCode::Other)).await;
    let hb = HeartbeatData {
        client_id: "c@1".into(),
        producer_data_set: vec![ProducerData {
            group_name: "pg".into(),
        }],
        consumer_data_set: vec![],
    };
    assert_eq!(f.api.heartbeat(&f.addr, &hb, T).await.unwrap(), 479);
    let un = UnregisterClientRequestHeader {
        client_id: "c@1".into(),
        producer_group: Some("pg".into()),
        consumer_group: None,
    };
    f.api.unregister_client(&f.addr, &un, T).await.unwrap();
    assert_eq!(
        f.api
            .consumer_list_by_group(&f.addr, "cg", T)
            .await
            .unwrap(),
        vec!["a@1".to_owned(), "b@2".to_owned()]
    );
    let e = f
        .api
        .consumer_list_by_group(&f.addr, "other", T)
        .await
        .unwrap_err();
    assert_eq!(e.response_code(), Some(ResponseCode::SYSTEM_ERROR));
    let lock = LockBatchRequestBody {
        consumer_group: "cg".into(),
        client_id: "c@1".into(),
        mq_set: vec![
            MessageQueue::new("T", "broker-a", 0),
            MessageQueue::new("T", "broker-a", 1),
        ],
    };
    let locked = f.api.lock_batch_mq(&f.addr, &lock, T).await.unwrap();
    assert_eq!(locked, vec![MessageQueue::new("T", "broker-a", 0)]);
    f.api.unlock_batch_mq(&f.addr, &lock, T).await.unwrap();
}

fn pull_header(topic: &str) -> PullMessageRequestHeader {
    PullMessageRequestHeader {
        consumer_group: "cg".into(),
        topic: topic.into(),
        queue_id: 1,
        queue_offset: 10,
        max_msg_nums: 32,
        sys_flag: pull_sys_flag::SUSPEND,
        commit_offset: 0,
        suspend_timeout_millis: 1000,
        subscription: Some("*".into()),
        sub_version: 0,
        expression_type: None,
        max_msg_bytes: None,
    }
}

#[tokio::test]
async fn pull_statuses_and_messages() {
    let f = fixture(ApiConfig::default()).await;
    let r = f
        .api
        .pull(&f.addr, &pull_header("TopicTest"), T)
        .await
        .unwrap();
    assert_eq!(r.status, PullStatus::Found);
    assert_eq!(r.next_begin_offset, 13);
    let offsets: Vec<i64> = r.messages.iter().map(|m| m.queue_offset).collect();
    assert_eq!(offsets, vec![10, 11, 12]);
    let m = &r.messages[0];
    assert_eq!(&m.message.body[..], b"body-10");
    assert_eq!(m.message.property(property::MAX_OFFSET), Some("100"));
    assert_eq!(m.msg_id(), "U10");
    assert_eq!(m.offset_msg_id(), "7F00000100002A9F00000000000003F2");

    let r = f.api.pull(&f.addr, &pull_header("Empty"), T).await.unwrap();
    assert_eq!(r.status, PullStatus::NoNewMsg);
    assert!(r.messages.is_empty());
    let e = f
        .api
        .pull(&f.addr, &pull_header("Other"), T)
        .await
        .unwrap_err();
    assert_eq!(e.response_code(), Some(ResponseCode::TOPIC_NOT_EXIST));
}

#[tokio::test]
async fn offsets_and_lookups() {
    let f = fixture(ApiConfig::default().with_serialize_type(SerializeType::RocketMq)).await;
    let mq = MessageQueue::new("TopicTest", "broker-a", 1);
    let q = |group: &str| QueryConsumerOffsetRequestHeader {
        consumer_group: group.into(),
        topic: "TopicTest".into(),
        queue_id: 1,
        set_zero_if_not_found: None,
    };
    assert_eq!(
        f.api
            .query_consumer_offset(&f.addr, &q("cg"), T)
            .await
            .unwrap(),
        42
    );
    let e = f
        .api
        .query_consumer_offset(&f.addr, &q("new"), T)
        .await
        .unwrap_err();
    assert_eq!(e.response_code(), Some(ResponseCode::QUERY_NOT_FOUND));
    assert_eq!(f.api.max_offset(&f.addr, &mq, T).await.unwrap(), 100);
    assert_eq!(f.api.min_offset(&f.addr, &mq, T).await.unwrap(), 7);
    let epoch_ms = |ms| std::time::UNIX_EPOCH + Duration::from_millis(ms);
    assert_eq!(
        f.api
            .search_offset(&f.addr, &mq, epoch_ms(5000), T)
            .await
            .unwrap(),
        5
    );
    assert_eq!(
        f.api
            .earliest_msg_store_time(&f.addr, &mq, T)
            .await
            .unwrap(),
        epoch_ms(1_700_000_000_000)
    );
    let m = f.api.view_message(&f.addr, 1004, T).await.unwrap();
    assert_eq!(m.queue_offset, 4);
    let found = f
        .api
        .query_message(
            &f.addr,
            &QueryMessageRequestHeader {
                topic: "TopicTest".into(),
                key: "k".into(),
                max_num: 32,
                begin_timestamp: 0,
                end_timestamp: i64::MAX,
                unique_key_query: None,
            },
            T,
        )
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
}

#[tokio::test]
async fn send_back_and_create_topic() {
    let f = fixture(ApiConfig::default()).await;
    let back = |group: &str| ConsumerSendMsgBackRequestHeader {
        offset: 1000,
        group: group.into(),
        delay_level: 0,
        origin_msg_id: Some("U1".into()),
        origin_topic: Some("TopicTest".into()),
        unit_mode: false,
        max_reconsume_times: Some(16),
    };
    f.api
        .consumer_send_back(&f.addr, &back("cg"), T)
        .await
        .unwrap();
    let e = f
        .api
        .consumer_send_back(&f.addr, &back("gone"), T)
        .await
        .unwrap_err();
    assert_eq!(
        e.response_code(),
        Some(ResponseCode::SUBSCRIPTION_GROUP_NOT_EXIST)
    );
    let create = CreateTopicRequestHeader {
        topic: "New".into(),
        default_topic: "TBW102".into(),
        read_queue_nums: 8,
        write_queue_nums: 8,
        perm: perm::READ_WRITE,
        topic_filter_type: "SINGLE_TAG".into(),
        topic_sys_flag: None,
        order: false,
        attributes: None,
    };
    f.api.create_topic(&f.addr, &create, T).await.unwrap();
}

#[tokio::test]
async fn response_missing_a_required_header_field_is_a_typed_error() {
    let f = fixture(ApiConfig::default()).await;
    let e = f
        .api
        .max_offset(&f.addr, &MessageQueue::new("Bare", "broker-a", 0), T)
        .await
        .unwrap_err();
    assert!(
        matches!(
            &e,
            ClientApiError::Header {
                source: HeaderError::MissingField {
                    header: "GetMaxOffsetResponseHeader",
                    field: "offset"
                },
                ..
            }
        ),
        "{e:?}"
    );
    assert!(!e.is_retryable());
}
