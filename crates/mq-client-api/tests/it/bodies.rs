//! Body fixtures: fastjson-style route and cluster bodies (bare numeric keys, both flag
//! spellings), a C++ heartbeat, standard JSON out, registration bodies.

use mq_client_api::body::*;

use super::fixture;

#[test]
fn fastjson_route_with_bare_numeric_keys_parses() {
    let route: TopicRouteData = from_json("route", &fixture("route_fastjson_451.json")).unwrap();
    let broker = route.broker("broker-a").unwrap();
    assert_eq!(broker.master_addr(), Some("127.0.0.1:10911"));
    assert_eq!(broker.broker_addrs[&1], "127.0.0.2:10911");
    assert_eq!(route.queue_datas[0].write_queue_nums, 4);
    assert_eq!(route.queue_datas[0].perm, perm::READ_WRITE);
}

#[test]
fn standard_route_with_topic_sys_flag_parses() {
    let route: TopicRouteData = from_json("route", &fixture("route_standard_5x.json")).unwrap();
    assert_eq!(route.queue_datas[0].topic_sys_flag, 1);
    assert_eq!(route.order_topic_conf.as_deref(), Some("broker-b:8"));
    assert_eq!(route.broker_datas[0].zone_name.as_deref(), Some("z1"));
}

#[test]
fn emitted_route_is_standard_json_with_the_451_and_5x_field_sets() {
    let mut route: TopicRouteData =
        from_json("route", &fixture("route_fastjson_451.json")).unwrap();
    route.queue_datas[0].topic_sys_flag = 1;
    let out = to_json(&route);
    // A strict parser accepts it and keys are quoted.
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["brokerDatas"][0]["brokerAddrs"]["0"], "127.0.0.1:10911");
    // Both spellings of the flag (4.5.1 and 5.x), and 5.x's required acting-master flag.
    assert_eq!(v["queueDatas"][0]["topicSynFlag"], 1);
    assert_eq!(v["queueDatas"][0]["topicSysFlag"], 1);
    assert_eq!(v["brokerDatas"][0]["enableActingMaster"], false);
    let back: TopicRouteData = from_json("route", &out).unwrap();
    assert_eq!(back, route);
    // Either spelling alone is read; 5.x's wins when both are present.
    for (json, flag) in [
        (
            r#"{"brokerName":"b","readQueueNums":1,"writeQueueNums":1,"perm":6,"topicSynFlag":2}"#,
            2,
        ),
        (
            r#"{"brokerName":"b","readQueueNums":1,"writeQueueNums":1,"perm":6,"topicSysFlag":3}"#,
            3,
        ),
        (
            r#"{"brokerName":"b","readQueueNums":1,"writeQueueNums":1,"perm":6}"#,
            0,
        ),
        (
            r#"{"brokerName":"b","readQueueNums":1,"writeQueueNums":1,"perm":6,"topicSynFlag":4,"topicSysFlag":5}"#,
            5,
        ),
    ] {
        let q: QueueData = serde_json::from_str(json).unwrap();
        assert_eq!(q.topic_sys_flag, flag, "{json}");
    }
}

#[test]
fn fastjson_cluster_info_parses() {
    let info: ClusterInfo = from_json("cluster", &fixture("cluster_fastjson.json")).unwrap();
    assert_eq!(info.cluster_addr_table["DefaultCluster"].len(), 2);
    assert_eq!(
        info.broker_addr_table["broker-b"].broker_addrs[&1],
        "127.0.0.1:10931"
    );
}

#[test]
fn cpp_heartbeat_with_ordinals_and_missing_fields_parses() {
    let hb: HeartbeatData = from_json("heartbeat", &fixture("heartbeat_cpp.json")).unwrap();
    let c = &hb.consumer_data_set[0];
    assert_eq!(c.consume_type, ConsumeType::Passively);
    assert_eq!(c.message_model, MessageModel::Clustering);
    assert_eq!(c.consume_from_where, ConsumeFromWhere::LastOffset);
    assert!(!c.unit_mode);
    let s = &c.subscription_data_set[0];
    assert_eq!(s.sub_version, 1_560_000_000_000);
    assert_eq!(s.expression_type, "TAG");
    assert!(s.tags_set.is_empty() && !s.class_filter_mode);
}

#[test]
fn heartbeat_emits_every_field_a_strict_server_wants() {
    let hb = HeartbeatData {
        client_id: "10.0.0.5@1".into(),
        producer_data_set: vec![ProducerData {
            group_name: "pg".into(),
        }],
        consumer_data_set: vec![ConsumerData {
            group_name: "cg".into(),
            consume_type: ConsumeType::Passively,
            message_model: MessageModel::Clustering,
            consume_from_where: ConsumeFromWhere::FirstOffset,
            subscription_data_set: vec![SubscriptionData {
                class_filter_mode: false,
                topic: "T".into(),
                sub_string: "TagA".into(),
                tags_set: vec!["TagA".into()],
                code_set: vec![mq_client_api::validate::java_hash("TagA")],
                sub_version: 1,
                expression_type: "TAG".into(),
            }],
            unit_mode: false,
        }],
    };
    let v: serde_json::Value = serde_json::from_slice(&to_json(&hb)).unwrap();
    assert_eq!(v["clientID"], "10.0.0.5@1");
    let c = &v["consumerDataSet"][0];
    assert_eq!(c["consumeType"], "CONSUME_PASSIVELY");
    assert_eq!(c["consumeFromWhere"], "CONSUME_FROM_FIRST_OFFSET");
    assert_eq!(c["unitMode"], false);
    let s = &c["subscriptionDataSet"][0];
    for key in [
        "classFilterMode",
        "topic",
        "subString",
        "tagsSet",
        "codeSet",
        "subVersion",
        "expressionType",
    ] {
        assert!(!s[key].is_null(), "{key} missing");
    }
    assert_eq!(s["codeSet"][0], 2_598_919);
}

fn register_body() -> RegisterBrokerBody {
    let mut body = RegisterBrokerBody::default();
    let w = &mut body.topic_config_serialize_wrapper;
    w.data_version = DataVersion {
        counter: 3,
        timestamp: 1_700_000_000_000,
    };
    for (name, q) in [("TopicTest", 8), ("TBW102", 4)] {
        w.topic_config_table
            .insert(name.into(), TopicConfig::new(name, q));
    }
    body.filter_server_list = vec!["127.0.0.1:20000".into()];
    body
}

#[test]
fn register_body_round_trips_plain_and_compressed() {
    let body = register_body();
    assert_eq!(
        RegisterBrokerBody::decode(&body.encode_json(), false).unwrap(),
        body
    );
    let compressed = body.encode_compressed();
    assert_eq!(compressed[0], 0x78, "a zlib stream");
    assert_eq!(RegisterBrokerBody::decode(&compressed, true).unwrap(), body);
    assert!(RegisterBrokerBody::decode(b"garbage", true).is_err());
    // The CRC is masked to 31 bits.
    assert!(body_crc32(&compressed) >= 0);
}

#[test]
fn topic_config_defaults_match_java() {
    let tc: TopicConfig = from_json("tc", br#"{"topicName":"T"}"#).unwrap();
    assert_eq!(
        (tc.read_queue_nums, tc.write_queue_nums, tc.perm),
        (16, 16, 6)
    );
    assert_eq!(tc.topic_filter_type, "SINGLE_TAG");
}

#[test]
fn lock_bodies_use_java_names() {
    let body = LockBatchResponseBody {
        lock_ok_mq_set: vec![MessageQueue::new("T", "b", 0)],
    };
    let text = String::from_utf8(to_json(&body)).unwrap();
    assert_eq!(
        text,
        r#"{"lockOKMQSet":[{"topic":"T","brokerName":"b","queueId":0}]}"#
    );
}

#[test]
fn malformed_bodies_are_typed_errors() {
    assert!(matches!(
        from_json::<TopicRouteData>("route", b"{\"queueDatas\":7}"),
        Err(BodyError::Json { what: "route", .. })
    ));
    assert!(matches!(
        from_json::<TopicRouteData>("route", &[0xff, 0xfe]),
        Err(BodyError::Utf8("route"))
    ));
}
