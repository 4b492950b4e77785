//! Header golden tests: exact ext-field keys and values per the spec's field tables, frames
//! byte for byte, V1↔V2 conversion, and explicit rejection of missing or bad fields.

use bytes::BytesMut;
use mq_client_api::header::*;
use mq_remoting::{ExtFields, FrameCodec, RemotingCommand, SerializeType};

fn map(pairs: &[(&str, &str)]) -> ExtFields {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn v1() -> SendMessageRequestHeader {
    SendMessageRequestHeader {
        producer_group: "pg".into(),
        topic: "TopicTest".into(),
        default_topic: "TBW102".into(),
        default_topic_queue_nums: 4,
        queue_id: 3,
        sys_flag: 0,
        born_timestamp: 1_700_000_000_000,
        flag: 0,
        properties: Some("WAIT\u{1}true\u{2}".into()),
        reconsume_times: Some(0),
        unit_mode: false,
        batch: false,
        max_reconsume_times: None,
        broker_name: None,
    }
}

#[test]
fn send_v2_uses_single_letter_keys_and_always_sends_k_and_m() {
    let v2 = SendMessageRequestHeaderV2::from(v1());
    assert_eq!(
        v2.to_ext_fields(),
        map(&[
            ("a", "pg"),
            ("b", "TopicTest"),
            ("c", "TBW102"),
            ("d", "4"),
            ("e", "3"),
            ("f", "0"),
            ("g", "1700000000000"),
            ("h", "0"),
            ("i", "WAIT\u{1}true\u{2}"),
            ("j", "0"),
            ("k", "false"),
            ("m", "false"),
        ])
    );
}

#[test]
fn send_v1_uses_java_field_names() {
    let ext = v1().to_ext_fields();
    let keys: Vec<&str> = ext.keys().collect();
    assert_eq!(
        keys,
        vec![
            "batch",
            "bornTimestamp",
            "defaultTopic",
            "defaultTopicQueueNums",
            "flag",
            "producerGroup",
            "properties",
            "queueId",
            "reconsumeTimes",
            "sysFlag",
            "topic",
            "unitMode",
        ]
    );
    assert_eq!(&ext["batch"], "false");
}

#[test]
fn v1_and_v2_convert_both_ways() {
    let mut h = v1();
    h.broker_name = Some("broker-a".into());
    h.max_reconsume_times = Some(16);
    h.batch = true;
    let v2 = SendMessageRequestHeaderV2::from(h.clone());
    assert_eq!(
        (v2.n.as_deref(), v2.l, v2.m),
        (Some("broker-a"), Some(16), true)
    );
    assert_eq!(SendMessageRequestHeader::from(v2.clone()), h);
    // The send path writes V2 keys straight from a V1 header: same fields, same text.
    for header in [v1(), h.clone()] {
        let mut direct = ExtFields::new();
        header.encode_v2(&mut direct);
        assert_eq!(
            direct,
            SendMessageRequestHeaderV2::from(header).to_ext_fields()
        );
    }
    // And through the wire form.
    let back = SendMessageRequestHeaderV2::decode(&v2.to_ext_fields()).unwrap();
    assert_eq!(back, v2);
}

#[test]
fn route_request_frame_matches_the_spec_byte_for_byte() {
    let header = GetRouteInfoRequestHeader {
        topic: "TopicTest".into(),
        accept_standard_json_only: None,
    };
    let cmd = RemotingCommand::request(105)
        .with_opaque(1)
        .with_serialize_type(SerializeType::RocketMq)
        .with_ext_fields(header.to_ext_fields());
    let mut buf = BytesMut::new();
    FrameCodec::default().encode(&cmd, &mut buf).unwrap();
    let expected: [u8; 49] = [
        0x00, 0x00, 0x00, 0x2d, 0x01, 0x00, 0x00, 0x29, 0x00, 0x69, 0x00, 0x01, 0x3b, 0x00, 0x00,
        0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x14, 0x00,
        0x05, b't', b'o', b'p', b'i', b'c', 0x00, 0x00, 0x00, 0x09, b'T', b'o', b'p', b'i', b'c',
        b'T', b'e', b's', b't',
    ];
    assert_eq!(&buf[..], &expected[..]);
}

#[test]
fn send_response_header_reads_region_and_trace() {
    let h = SendMessageResponseHeader::decode(&map(&[
        ("msgId", "7F00000100002A9F0000000000001234"),
        ("queueId", "2"),
        ("queueOffset", "17"),
        ("MSG_REGION", "DefaultRegion"),
        ("TRACE_ON", "true"),
    ]))
    .unwrap();
    assert_eq!((h.queue_id, h.queue_offset), (2, 17));
    assert_eq!(h.msg_region.as_deref(), Some("DefaultRegion"));
    assert_eq!(h.transaction_id, None);
}

#[test]
fn missing_required_field_is_a_typed_error() {
    let mut ext = v1().to_ext_fields();
    ext.remove("queueId");
    assert_eq!(
        SendMessageRequestHeader::decode(&ext),
        Err(HeaderError::MissingField {
            header: "SendMessageRequestHeader",
            field: "queueId"
        })
    );
    let mut ext = v1().to_ext_fields();
    ext.insert("bornTimestamp", "yesterday");
    assert!(matches!(
        SendMessageRequestHeader::decode(&ext),
        Err(HeaderError::InvalidField {
            field: "bornTimestamp",
            ..
        })
    ));
}

#[test]
fn booleans_parse_like_java() {
    // The C++ client sends "1"/"0"; Java's parseBoolean reads anything but "true" as false.
    let mut ext = v1().to_ext_fields();
    ext.insert("batch", "1");
    ext.insert("unitMode", "TRUE");
    let h = SendMessageRequestHeader::decode(&ext).unwrap();
    assert!(!h.batch);
    assert!(h.unit_mode);
    // Primitive booleans a peer leaves out default to false.
    ext.remove("batch");
    assert!(!SendMessageRequestHeader::decode(&ext).unwrap().batch);
}

#[test]
fn pull_request_header_keys() {
    let h = PullMessageRequestHeader {
        consumer_group: "cg".into(),
        topic: "T".into(),
        queue_id: 1,
        queue_offset: 100,
        max_msg_nums: 32,
        sys_flag: pull_sys_flag::SUSPEND | pull_sys_flag::SUBSCRIPTION,
        commit_offset: 0,
        suspend_timeout_millis: 15_000,
        subscription: Some("*".into()),
        sub_version: 1,
        expression_type: Some("TAG".into()),
        max_msg_bytes: None,
    };
    assert_eq!(
        h.to_ext_fields(),
        map(&[
            ("commitOffset", "0"),
            ("consumerGroup", "cg"),
            ("expressionType", "TAG"),
            ("maxMsgNums", "32"),
            ("queueId", "1"),
            ("queueOffset", "100"),
            ("subVersion", "1"),
            ("subscription", "*"),
            ("suspendTimeoutMillis", "15000"),
            ("sysFlag", "6"),
            ("topic", "T"),
        ])
    );
    assert_eq!(
        PullMessageRequestHeader::decode(&h.to_ext_fields()).unwrap(),
        h
    );
}

#[test]
fn unregister_client_key_is_client_id_with_capital_id() {
    let h = UnregisterClientRequestHeader {
        client_id: "10.0.0.5@1".into(),
        producer_group: Some("pg".into()),
        consumer_group: None,
    };
    assert_eq!(
        h.to_ext_fields(),
        map(&[("clientID", "10.0.0.5@1"), ("producerGroup", "pg")])
    );
}

#[test]
fn register_broker_header_always_carries_compressed_and_crc() {
    let h = RegisterBrokerRequestHeader {
        broker_name: "broker-a".into(),
        broker_addr: "127.0.0.1:10911".into(),
        cluster_name: "DefaultCluster".into(),
        ha_server_addr: "127.0.0.1:10912".into(),
        broker_id: 0,
        ..Default::default()
    };
    let ext = h.to_ext_fields();
    assert_eq!(&ext["compressed"], "false");
    assert_eq!(&ext["bodyCrc32"], "0");
    assert_eq!(&ext["brokerId"], "0");
}

#[test]
fn end_transaction_checks_commit_or_rollback() {
    let h = EndTransactionRequestHeader {
        producer_group: "pg".into(),
        tran_state_table_offset: 5,
        commit_log_offset: 1024,
        commit_or_rollback: transaction_type::COMMIT,
        from_transaction_check: Some(false),
        msg_id: "ABC".into(),
        transaction_id: None,
        topic: None,
    };
    let mut ext = h.to_ext_fields();
    assert_eq!(&ext["commitOrRollback"], "8");
    assert_eq!(EndTransactionRequestHeader::decode(&ext).unwrap(), h);
    ext.insert("commitOrRollback", "4");
    assert!(matches!(
        EndTransactionRequestHeader::decode(&ext),
        Err(HeaderError::InvalidField {
            field: "commitOrRollback",
            ..
        })
    ));
}

#[test]
fn create_topic_checks_filter_type() {
    let h = CreateTopicRequestHeader {
        topic: "T".into(),
        default_topic: "TBW102".into(),
        read_queue_nums: 8,
        write_queue_nums: 8,
        perm: 6,
        topic_filter_type: "SINGLE_TAG".into(),
        topic_sys_flag: Some(0),
        order: false,
        attributes: None,
    };
    let mut ext = h.to_ext_fields();
    assert_eq!(&ext["order"], "false");
    assert_eq!(CreateTopicRequestHeader::decode(&ext).unwrap(), h);
    ext.insert("topicFilterType", "WHATEVER");
    assert!(CreateTopicRequestHeader::decode(&ext).is_err());
}

#[test]
fn query_message_carries_unique_key_flag() {
    let h = QueryMessageRequestHeader {
        topic: "T".into(),
        key: "k".into(),
        max_num: 32,
        begin_timestamp: 0,
        end_timestamp: i64::MAX,
        unique_key_query: Some(true),
    };
    assert_eq!(&h.to_ext_fields()["_UNIQUE_KEY_QUERY"], "true");
}
