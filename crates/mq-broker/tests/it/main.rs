//! The broker through `ClientApi` over loopback: every processor, error paths, long polling,
//! and recovery of a torn commit log.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    unreachable_pub
)]

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use mq_broker::{Broker, BrokerConfig, FlushMode};
use mq_client_api::body::{
    ConsumeFromWhere, ConsumeType, ConsumerData, HeartbeatData, MessageModel, perm,
};
use mq_client_api::header::*;
use mq_client_api::message::{Message, decode_offset_msg_id, encode_batch, property};
use mq_client_api::{
    ApiConfig, ClientApi, MessageQueue, PullStatus, RequestCode, ResponseCode, SendStatus,
};
use mq_remoting::{ClientConfig, RemotingClient, RemotingCommand, SerializeType, processor_fn};
use mq_test_support::{plain_api, send_request};
use tokio::sync::mpsc;

mod acl;
mod advanced;
mod pop;
mod timer;

const T: Duration = Duration::from_secs(20);

async fn broker(
    dir: &std::path::Path,
    configure: impl FnOnce(BrokerConfig) -> BrokerConfig,
) -> Broker {
    Broker::start(configure(BrokerConfig::new(dir)))
        .await
        .unwrap()
}

/// Returns once a read (pull or pop) is parked on the broker, waiting for appends: a signal,
/// not a sleep.
async fn parked(b: &Broker) {
    tokio::time::timeout(T, async {
        while b.store().waiting_readers() == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("a read parks");
}

fn pull_header(topic: &str, queue_id: i32, offset: i64) -> PullMessageRequestHeader {
    mq_test_support::pull_header("cg", topic, queue_id, offset)
}

fn msg(topic: &str, i: usize) -> Message {
    let mut m = Message::new(topic, Bytes::from(format!("payload-{i}")))
        .with_tags(if i.is_multiple_of(2) { "even" } else { "odd" })
        .with_keys([format!("key-{i}")]);
    m.set_property(property::UNIQ_CLIENT_MESSAGE_ID_KEYIDX, format!("U{i:04}"));
    m
}

#[tokio::test]
async fn send_auto_creates_and_pull_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path(), |c| c).await;
    let addr = b.local_addr().to_string();
    for ty in [SerializeType::Json, SerializeType::RocketMq] {
        for v2 in [true, false] {
            let api = ClientApi::new(
                RemotingClient::new(ClientConfig::default()),
                ApiConfig::default()
                    .with_serialize_type(ty)
                    .with_send_v2(v2),
            );
            let r = api
                .send(&addr, send_request("Auto", 1, &msg("Auto", 0)), T)
                .await
                .unwrap();
            assert_eq!(r.status, SendStatus::SendOk);
            assert_eq!(r.message_queue.queue_id, 1);
            let (host, _) = decode_offset_msg_id(&r.offset_msg_id).unwrap();
            assert_eq!(host, b.local_addr());
        }
    }
    let api = plain_api();
    let r = api
        .pull(&addr, &pull_header("Auto", 1, 0), T)
        .await
        .unwrap();
    assert_eq!(r.status, PullStatus::Found);
    assert_eq!(r.messages.len(), 4);
    assert_eq!(r.next_begin_offset, 4);
    let m = &r.messages[0];
    assert_eq!(&m.message.body[..], b"payload-0");
    assert_eq!(m.message.tags(), Some("even"));
    assert_eq!(m.msg_id(), "U0000");
    assert_eq!(
        m.message.property(property::CLUSTER),
        Some("DefaultCluster")
    );
    assert_eq!(m.queue_offset, 0);
    // Auto-created with min(client 4, TBW102 8) queues.
    let route_queues = api
        .max_offset(&addr, &MessageQueue::new("Auto", "broker-a", 3), T)
        .await
        .unwrap();
    assert_eq!(route_queues, 0);
    let r = api
        .pull(&addr, &pull_header("Auto", 1, 4), T)
        .await
        .unwrap();
    assert_eq!(r.status, PullStatus::NoNewMsg);
    let r = api
        .pull(&addr, &pull_header("Auto", 1, 99), T)
        .await
        .unwrap();
    assert_eq!(r.status, PullStatus::OffsetIllegal);
    assert_eq!(r.next_begin_offset, 4);
    // 5.x lite pull consumers pull with LITE_PULL_MESSAGE (361): the same answer as a pull.
    let lite = api
        .remoting()
        .invoke(
            &addr,
            api.request(RequestCode::LITE_PULL_MESSAGE, &pull_header("Auto", 1, 0)),
            T,
        )
        .await
        .unwrap();
    assert_eq!(lite.code, ResponseCode::SUCCESS.0, "{:?}", lite.remark);
    let found = mq_client_api::message::decode_records(&lite.body, false, true);
    assert_eq!(found.len(), 4);
    assert_eq!(&found[0].message.body[..], b"payload-0");
    let _ = b.shutdown(T).await;
}

#[tokio::test]
async fn batches_are_split_and_tags_filter_pulls() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path(), |c| c).await;
    let addr = b.local_addr().to_string();
    let api = plain_api();
    let mut msgs: Vec<Message> = (0..6).map(|i| msg("Batch", i)).collect();
    // A message that names another cluster (relayed from one) is stored naming this one.
    msgs[1].set_property(property::CLUSTER, "ElsewhereCluster");
    let mut req = send_request("Batch", 0, &msgs[0]);
    req.header.batch = true;
    req.header.properties = None;
    req.body = encode_batch(&msgs).unwrap();
    let r = api.send(&addr, req, T).await.unwrap();
    assert_eq!(r.queue_offset, 0);
    assert_eq!(r.offset_msg_id.split(',').count(), 6);
    let mut h = pull_header("Batch", 0, 0);
    h.subscription = Some("odd".into());
    let r = api.pull(&addr, &h, T).await.unwrap();
    let bodies: Vec<&[u8]> = r.messages.iter().map(|m| &m.message.body[..]).collect();
    assert_eq!(bodies, vec![&b"payload-1"[..], b"payload-3", b"payload-5"]);
    // Every stored message names the broker's cluster (a replier's reply goes to its reply
    // topic), its own properties kept.
    for m in &r.messages {
        assert_eq!(
            m.message.property(property::CLUSTER),
            Some("DefaultCluster")
        );
        assert_eq!(m.message.tags(), Some("odd"));
    }
    let _ = b.shutdown(T).await;
}

#[tokio::test]
async fn send_error_paths() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path(), |c| c.with_auto_create_topic(false)).await;
    let addr = b.local_addr().to_string();
    let api = plain_api();
    let e = api
        .send(&addr, send_request("Unknown", 0, &msg("Unknown", 0)), T)
        .await
        .unwrap_err();
    assert_eq!(e.response_code(), Some(ResponseCode::TOPIC_NOT_EXIST));

    let create = CreateTopicRequestHeader {
        topic: "Known".into(),
        default_topic: "TBW102".into(),
        read_queue_nums: 2,
        write_queue_nums: 2,
        perm: perm::READ_WRITE,
        topic_filter_type: "SINGLE_TAG".into(),
        topic_sys_flag: None,
        order: false,
        attributes: None,
    };
    api.create_topic(&addr, &create, T).await.unwrap();
    let e = api
        .send(&addr, send_request("Known", 5, &msg("Known", 0)), T)
        .await
        .unwrap_err();
    assert_eq!(e.response_code(), Some(ResponseCode::SYSTEM_ERROR));

    let mut empty = send_request("Known", 0, &msg("Known", 0));
    empty.body = Bytes::new();
    let e = api.send(&addr, empty, T).await.unwrap_err();
    assert_eq!(e.response_code(), Some(ResponseCode::MESSAGE_ILLEGAL));

    let mut big = send_request("Known", 0, &msg("Known", 0));
    big.body = Bytes::from(vec![0u8; mq_broker::MAX_MESSAGE_SIZE + 1]);
    let e = api.send(&addr, big, T).await.unwrap_err();
    assert_eq!(e.response_code(), Some(ResponseCode::MESSAGE_ILLEGAL));

    let e = api
        .send(&addr, send_request("TBW102", 0, &msg("TBW102", 0)), T)
        .await
        .unwrap_err();
    assert_eq!(e.response_code(), Some(ResponseCode::SYSTEM_ERROR));

    // A header without its required fields is refused explicitly.
    let mut ext =
        SendMessageRequestHeaderV2::from(send_request("Known", 0, &msg("Known", 0)).header)
            .to_ext_fields();
    ext.remove("e");
    let raw = api
        .remoting()
        .invoke(
            &addr,
            RemotingCommand::request(RequestCode::SEND_MESSAGE_V2.0)
                .with_ext_fields(ext)
                .with_body("x"),
            T,
        )
        .await
        .unwrap();
    assert_eq!(raw.code, ResponseCode::SYSTEM_ERROR.0);
    assert!(raw.remark.unwrap().contains("`e`"));

    let e = api
        .pull(&addr, &pull_header("Nope", 0, 0), T)
        .await
        .unwrap_err();
    assert_eq!(e.response_code(), Some(ResponseCode::TOPIC_NOT_EXIST));
    let e = api
        .pull(&addr, &pull_header("Known", 9, 0), T)
        .await
        .unwrap_err();
    assert_eq!(e.response_code(), Some(ResponseCode::SYSTEM_ERROR));
    let _ = b.shutdown(T).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_pull_returns_as_soon_as_a_message_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path(), |c| c).await;
    let addr = b.local_addr().to_string();
    let api = plain_api();
    api.send(&addr, send_request("Poll", 0, &msg("Poll", 0)), T)
        .await
        .unwrap();
    let mut h = pull_header("Poll", 0, 1);
    h.sys_flag = pull_sys_flag::SUSPEND;
    // Far longer than the test's own bound: only an arrival can end this pull in time.
    h.suspend_timeout_millis = 600_000;
    let (a, ad) = (api.clone(), addr.clone());
    let pull = tokio::spawn(async move { a.pull(&ad, &h, Duration::from_secs(700)).await });
    parked(&b).await;
    api.send(&addr, send_request("Poll", 0, &msg("Poll", 1)), T)
        .await
        .unwrap();
    let r = tokio::time::timeout(T, pull)
        .await
        .expect("woken by the send")
        .unwrap()
        .unwrap();
    assert_eq!(r.status, PullStatus::Found);
    assert_eq!(&r.messages[0].message.body[..], b"payload-1");
    let _ = b.shutdown(T).await;
}

#[tokio::test]
async fn offsets_lookups_view_and_query() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path(), |c| c).await;
    let addr = b.local_addr().to_string();
    let api = plain_api();
    let mut offsets = Vec::new();
    for i in 0..5 {
        offsets.push(
            api.send(&addr, send_request("Look", 2, &msg("Look", i)), T)
                .await
                .unwrap(),
        );
    }
    let mq = MessageQueue::new("Look", "broker-a", 2);
    assert_eq!(api.max_offset(&addr, &mq, T).await.unwrap(), 5);
    assert_eq!(api.min_offset(&addr, &mq, T).await.unwrap(), 0);
    let earliest = api.earliest_msg_store_time(&addr, &mq, T).await.unwrap();
    assert_eq!(api.search_offset(&addr, &mq, earliest, T).await.unwrap(), 0);
    let later = std::time::SystemTime::now() + Duration::from_secs(3600);
    assert_eq!(api.search_offset(&addr, &mq, later, T).await.unwrap(), 5);

    let (_, phys) = decode_offset_msg_id(&offsets[3].offset_msg_id).unwrap();
    let viewed = api.view_message(&addr, phys, T).await.unwrap();
    assert_eq!(&viewed.message.body[..], b"payload-3");
    let e = api.view_message(&addr, 1 << 40, T).await.unwrap_err();
    assert_eq!(e.response_code(), Some(ResponseCode::SYSTEM_ERROR));

    let q = |key: &str| QueryMessageRequestHeader {
        topic: "Look".into(),
        key: key.into(),
        max_num: 32,
        begin_timestamp: 0,
        end_timestamp: i64::MAX,
        unique_key_query: None,
    };
    let found = api.query_message(&addr, &q("key-2"), T).await.unwrap();
    assert_eq!(&found[0].message.body[..], b"payload-2");
    let found = api.query_message(&addr, &q("U0004"), T).await.unwrap();
    assert_eq!(&found[0].message.body[..], b"payload-4");
    let e = api
        .query_message(&addr, &q("missing"), T)
        .await
        .unwrap_err();
    assert_eq!(e.response_code(), Some(ResponseCode::QUERY_NOT_FOUND));

    let update = UpdateConsumerOffsetRequestHeader {
        consumer_group: "cg".into(),
        topic: "Look".into(),
        queue_id: 2,
        commit_offset: 3,
    };
    let query = QueryConsumerOffsetRequestHeader {
        consumer_group: "cg".into(),
        topic: "Look".into(),
        queue_id: 2,
        set_zero_if_not_found: None,
    };
    assert_eq!(
        api.query_consumer_offset(&addr, &query, T).await.unwrap(),
        0
    );
    api.update_consumer_offset(&addr, &update, T).await.unwrap();
    assert_eq!(
        api.query_consumer_offset(&addr, &query, T).await.unwrap(),
        3
    );
    let _ = b.shutdown(T).await;

    // Offsets survive a restart.
    let b = broker(dir.path(), |c| c).await;
    let addr = b.local_addr().to_string();
    let api = plain_api();
    assert_eq!(
        api.query_consumer_offset(&addr, &query, T).await.unwrap(),
        3
    );
    assert_eq!(api.max_offset(&addr, &mq, T).await.unwrap(), 5);
    let _ = b.shutdown(T).await;
}

/// Subscription group configs are stored, read back one by one and all at once, survive a
/// restart, and go (with the group's offsets when asked) when deleted; a config that is not
/// JSON is refused with nothing stored.
#[tokio::test]
async fn group_configs_are_kept_across_restarts_and_deleted_with_their_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path(), |c| c).await;
    let addr = b.local_addr().to_string();
    let api = plain_api();
    let fifo = mq_client_api::body::SubscriptionGroupConfig::new("ordered_cg").with_orderly(true);
    let mut retries = mq_client_api::body::SubscriptionGroupConfig::new("retry_cg");
    retries.retry_max_times = 3;
    for c in [&fifo, &retries] {
        api.update_subscription_group(&addr, c, T).await.unwrap();
    }
    let bad = RemotingCommand::request(RequestCode::UPDATE_AND_CREATE_SUBSCRIPTIONGROUP.0)
        .with_body(Bytes::from_static(b"{not json"));
    let answer = api.remoting().invoke(&addr, bad, T).await.unwrap();
    assert_eq!(answer.code, ResponseCode::SYSTEM_ERROR.0);
    let offset = |group: &str| UpdateConsumerOffsetRequestHeader {
        consumer_group: group.into(),
        topic: "Grouped".into(),
        queue_id: 0,
        commit_offset: 7,
    };
    for g in ["ordered_cg", "retry_cg"] {
        api.update_consumer_offset(&addr, &offset(g), T)
            .await
            .unwrap();
    }
    let _ = b.shutdown(T).await;

    let b = broker(dir.path(), |c| c).await;
    let addr = b.local_addr().to_string();
    assert_eq!(
        api.subscription_group(&addr, "ordered_cg", T)
            .await
            .unwrap(),
        fifo
    );
    let all = api.all_subscription_groups(&addr, T).await.unwrap();
    assert_eq!(
        all.subscription_group_table.keys().collect::<Vec<_>>(),
        ["ordered_cg", "retry_cg"]
    );
    assert_eq!(all.subscription_group_table["retry_cg"], retries);
    // Deleted: the first with its offsets, the second without.
    api.delete_subscription_group(&addr, "ordered_cg", true, T)
        .await
        .unwrap();
    api.delete_subscription_group(&addr, "retry_cg", false, T)
        .await
        .unwrap();
    assert!(
        api.all_subscription_groups(&addr, T)
            .await
            .unwrap()
            .subscription_group_table
            .is_empty()
    );
    let committed = |group: &str| QueryConsumerOffsetRequestHeader {
        consumer_group: group.into(),
        topic: "Grouped".into(),
        queue_id: 0,
        set_zero_if_not_found: Some(false),
    };
    let gone = api
        .query_consumer_offset(&addr, &committed("ordered_cg"), T)
        .await
        .unwrap_err();
    assert_eq!(gone.response_code(), Some(ResponseCode::QUERY_NOT_FOUND));
    assert_eq!(
        api.query_consumer_offset(&addr, &committed("retry_cg"), T)
            .await
            .unwrap(),
        7
    );
    let _ = b.shutdown(T).await;
}

fn consumer_heartbeat(client_id: &str) -> HeartbeatData {
    HeartbeatData {
        client_id: client_id.into(),
        producer_data_set: vec![],
        consumer_data_set: vec![ConsumerData {
            group_name: "cg".into(),
            consume_type: ConsumeType::Passively,
            message_model: MessageModel::Clustering,
            consume_from_where: ConsumeFromWhere::LastOffset,
            subscription_data_set: vec![],
            unit_mode: false,
        }],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_groups_and_change_notifications() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path(), |c| c).await;
    let addr = b.local_addr().to_string();
    let first = plain_api();
    let (tx, mut notified) = mpsc::unbounded_channel();
    let tx = Arc::new(tx);
    first.remoting().register_processor(
        RequestCode::NOTIFY_CONSUMER_IDS_CHANGED.0,
        processor_fn(move |_ctx, req: RemotingCommand| {
            let tx = Arc::clone(&tx);
            async move {
                tx.send((req.is_oneway(), req.ext("consumerGroup").map(str::to_owned)))
                    .unwrap();
                None
            }
        }),
    );
    first
        .heartbeat(&addr, &consumer_heartbeat("a@1"), T)
        .await
        .unwrap();
    assert_eq!(notified.recv().await.unwrap(), (true, Some("cg".into())));
    let e = first
        .consumer_list_by_group(&addr, "other", T)
        .await
        .unwrap_err();
    assert_eq!(e.response_code(), Some(ResponseCode::SYSTEM_ERROR));

    let second = plain_api();
    second
        .heartbeat(&addr, &consumer_heartbeat("b@2"), T)
        .await
        .unwrap();
    assert_eq!(notified.recv().await.unwrap().1.as_deref(), Some("cg"));
    assert_eq!(
        first.consumer_list_by_group(&addr, "cg", T).await.unwrap(),
        vec!["a@1".to_owned(), "b@2".to_owned()]
    );
    // The retry topic of the group exists now.
    assert_eq!(
        first
            .max_offset(&addr, &MessageQueue::new("%RETRY%cg", "broker-a", 0), T)
            .await
            .unwrap(),
        0
    );
    // Leaving by closing the connection is noticed too.
    let _ = second.remoting().shutdown(T).await;
    assert_eq!(notified.recv().await.unwrap().1.as_deref(), Some("cg"));
    assert_eq!(
        first.consumer_list_by_group(&addr, "cg", T).await.unwrap(),
        vec!["a@1".to_owned()]
    );
    let un = UnregisterClientRequestHeader {
        client_id: "a@1".into(),
        producer_group: None,
        consumer_group: Some("cg".into()),
    };
    first.unregister_client(&addr, &un, T).await.unwrap();
    assert!(first.consumer_list_by_group(&addr, "cg", T).await.is_err());
    let _ = b.shutdown(T).await;
}

#[tokio::test]
async fn sync_flush_survives_a_torn_tail_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let segment = 4096;
    let n = 60; // ~100-byte records: several segments
    {
        let b = broker(dir.path(), |c| {
            c.with_flush_mode(FlushMode::Sync)
                .with_segment_size(segment)
        })
        .await;
        let addr = b.local_addr().to_string();
        let api = plain_api();
        for i in 0..n {
            let r = api
                .send(&addr, send_request("Durable", 0, &msg("Durable", i)), T)
                .await
                .unwrap();
            assert_eq!(r.status, SendStatus::SendOk);
        }
        // No graceful shutdown of the store's state files matters here: the commit log is the
        // truth. Simulate a crash mid-append by leaving half a record at the tail.
        let _ = b.shutdown(T).await;
    }
    let log_dir = dir.path().join("commitlog");
    let mut segments: Vec<_> = std::fs::read_dir(&log_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    segments.sort();
    assert!(segments.len() > 1, "records span several segments");
    let last = segments.last().unwrap();
    let len_before = std::fs::metadata(last).unwrap().len();
    let mut torn = std::fs::read(segments[0].clone()).unwrap();
    torn.truncate(60); // the first 60 bytes of a valid record
    std::fs::OpenOptions::new()
        .append(true)
        .open(last)
        .unwrap()
        .write_all(&torn)
        .unwrap();

    let b = broker(dir.path(), |c| {
        c.with_flush_mode(FlushMode::Sync)
            .with_segment_size(segment)
    })
    .await;
    assert_eq!(
        std::fs::metadata(last).unwrap().len(),
        len_before,
        "torn tail truncated"
    );
    let addr = b.local_addr().to_string();
    let api = plain_api();
    let mut got = Vec::new();
    let mut offset = 0;
    loop {
        let r = api
            .pull(&addr, &pull_header("Durable", 0, offset), T)
            .await
            .unwrap();
        if r.status != PullStatus::Found {
            break;
        }
        offset = r.next_begin_offset;
        got.extend(r.messages.into_iter().map(|m| m.message.body));
    }
    let expected: Vec<Bytes> = (0..n)
        .map(|i| Bytes::from(format!("payload-{i}")))
        .collect();
    assert_eq!(got, expected);
    // Appends continue after the recovered tail.
    let r = api
        .send(&addr, send_request("Durable", 0, &msg("Durable", n)), T)
        .await
        .unwrap();
    assert_eq!(r.queue_offset, n as i64);
    let _ = b.shutdown(T).await;
}

#[tokio::test]
async fn a_sync_flush_that_misses_its_deadline_answers_flush_disk_timeout() {
    let dir = tempfile::tempdir().unwrap();
    // A zero deadline: the fsync cannot have happened when the send checks for it. The
    // message is stored all the same, and the client sees a stored status, not an error.
    let b = broker(dir.path(), |mut c| {
        c.store.flush_mode = FlushMode::Sync;
        c.store.sync_flush_timeout = Duration::ZERO;
        c
    })
    .await;
    let addr = b.local_addr().to_string();
    let api = plain_api();
    let r = api
        .send(&addr, send_request("Slow", 0, &msg("Slow", 0)), T)
        .await
        .unwrap();
    assert_eq!(r.status, SendStatus::FlushDiskTimeout);
    let got = api
        .pull(&addr, &pull_header("Slow", 0, 0), T)
        .await
        .unwrap();
    assert_eq!(got.messages.len(), 1);
    let _ = b.shutdown(T).await;
}

#[tokio::test]
async fn unserved_5x_client_codes_are_answered_with_the_missing_feature() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path(), |c| c).await;
    let addr = b.local_addr().to_string();
    let api = plain_api();
    for (code, feature) in [
        (
            RequestCode::BATCH_ACK_MESSAGE.0,
            "BATCH_ACK_MESSAGE (200151): acknowledging popped messages in batches",
        ),
        (
            3543,
            "BATCH_ACK_MESSAGE (3543): acknowledging popped messages in batches",
        ),
        (
            RequestCode::PEEK_MESSAGE.0,
            "PEEK_MESSAGE (200052): peeking at messages",
        ),
        (
            RequestCode::QUERY_ASSIGNMENT.0,
            "QUERY_ASSIGNMENT (400): server-side queue assignment",
        ),
    ] {
        let r = api
            .remoting()
            .invoke(&addr, RemotingCommand::request(code), T)
            .await
            .unwrap();
        assert_eq!(r.code, ResponseCode::REQUEST_CODE_NOT_SUPPORTED.0);
        let remark = r.remark.unwrap_or_default();
        assert!(remark.starts_with(feature), "{code}: {remark}");
        assert!(
            remark.ends_with("is not supported by this broker"),
            "{remark}"
        );
    }
    // Codes nobody knows keep Java's generic answer.
    let r = api
        .remoting()
        .invoke(&addr, RemotingCommand::request(4242), T)
        .await
        .unwrap();
    assert_eq!(r.code, ResponseCode::REQUEST_CODE_NOT_SUPPORTED.0);
    assert_eq!(
        r.remark.as_deref(),
        Some(" request type 4242 not supported")
    );
    let _ = b.shutdown(T).await;
}

/// Sends pipelined on one connection (the broker may take them as one group with one write)
/// are stored in arrival order with contiguous offsets, and each gets its own answer: a bad
/// one among them is refused alone.
#[tokio::test]
async fn pipelined_sends_are_answered_one_by_one_and_stored_in_order() {
    use mq_remoting::FrameCodec;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path(), |c| c).await;
    let mut frames = bytes::BytesMut::new();
    for i in 0..20 {
        let mut m = msg("Piped", i);
        if i == 7 {
            m.body = Bytes::new(); // refused: MESSAGE_ILLEGAL
        }
        let req = send_request("Piped", 1, &m);
        let mut cmd = RemotingCommand::request(RequestCode::SEND_MESSAGE_V2.0)
            .with_opaque(100 + i as i32)
            .with_body(req.body.clone());
        req.header.encode_v2(&mut cmd.ext_fields);
        FrameCodec::default().encode(&cmd, &mut frames).unwrap();
    }
    let mut stream = tokio::net::TcpStream::connect(b.local_addr())
        .await
        .unwrap();
    stream.write_all(&frames).await.unwrap();
    let mut buf = bytes::BytesMut::new();
    let mut answers = std::collections::BTreeMap::new();
    while answers.len() < 20 {
        match FrameCodec::default().decode(&mut buf).unwrap() {
            Some(r) => {
                answers.insert(r.opaque - 100, r);
            }
            None => assert_ne!(stream.read_buf(&mut buf).await.unwrap(), 0),
        }
    }
    let mut expected_offset = 0;
    for (i, r) in &answers {
        if *i == 7 {
            assert_eq!(r.code, ResponseCode::MESSAGE_ILLEGAL.0);
            continue;
        }
        assert_eq!(r.code, ResponseCode::SUCCESS.0, "{i}: {r:?}");
        assert_eq!(
            r.ext("queueOffset"),
            Some(expected_offset.to_string().as_str())
        );
        expected_offset += 1;
    }
    let api = plain_api();
    let pulled = api
        .pull(&b.local_addr().to_string(), &pull_header("Piped", 1, 0), T)
        .await
        .unwrap();
    let bodies: Vec<String> = pulled
        .messages
        .iter()
        .map(|m| String::from_utf8(m.message.body.to_vec()).unwrap())
        .collect();
    let sent: Vec<String> = (0..20)
        .filter(|i| *i != 7)
        .map(|i| format!("payload-{i}"))
        .collect();
    assert_eq!(bodies, sent);
}

/// Once retention has deleted the oldest segments, the queue's min offset moves up and a pull
/// below it is answered PULL_OFFSET_MOVED with the min as the next offset, as Java does.
#[tokio::test]
async fn pulls_below_what_retention_kept_are_moved_to_the_min_offset() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path(), |c| c.with_segment_size(2048)).await;
    let addr = b.local_addr().to_string();
    let api = plain_api();
    for i in 0..40 {
        api.send(&addr, send_request("Aged", 0, &msg("Aged", i)), T)
            .await
            .unwrap();
    }
    let later = std::time::SystemTime::now() + Duration::from_secs(3600);
    assert!(b.store().delete_expired(later, 0).unwrap() > 0);
    let mq = MessageQueue::new("Aged", "broker-a", 0);
    let min = api.min_offset(&addr, &mq, T).await.unwrap();
    assert!(min > 0 && min < 40, "min {min}");
    assert_eq!(api.max_offset(&addr, &mq, T).await.unwrap(), 40);
    let pull = |offset: i64| PullMessageRequestHeader {
        consumer_group: "aged".into(),
        topic: "Aged".into(),
        queue_id: 0,
        queue_offset: offset,
        max_msg_nums: 64,
        subscription: Some("*".into()),
        ..Default::default()
    };
    let moved = api.pull(&addr, &pull(0), T).await.unwrap();
    assert_eq!(moved.status, PullStatus::OffsetIllegal);
    assert_eq!(moved.next_begin_offset, min);
    assert_eq!(moved.min_offset, min);
    let found = api.pull(&addr, &pull(min), T).await.unwrap();
    assert_eq!(found.status, PullStatus::Found);
    let want = format!("payload-{min}");
    assert_eq!(&found.messages[0].message.body[..], want.as_bytes());
    // Keys of deleted messages are gone; those kept are found.
    let q = |key: &str| QueryMessageRequestHeader {
        topic: "Aged".into(),
        key: key.into(),
        max_num: 32,
        begin_timestamp: 0,
        end_timestamp: i64::MAX,
        unique_key_query: None,
    };
    let gone = api.query_message(&addr, &q("key-0"), T).await.unwrap_err();
    assert_eq!(gone.response_code(), Some(ResponseCode::QUERY_NOT_FOUND));
    let kept = api.query_message(&addr, &q("key-39"), T).await.unwrap();
    assert_eq!(&kept[0].message.body[..], b"payload-39");
    let _ = b.shutdown(T).await;
}

/// GET_TOPIC_CONFIG answers a topic's config with its 5.x attributes (Java's proxy reads the
/// message type from it), and TOPIC_NOT_EXIST for a topic the broker lacks; the topics named
/// after the cluster and the broker exist from the start, as on a Java broker.
#[tokio::test]
async fn topic_configs_carry_their_attributes_and_the_cluster_is_a_topic() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path(), |c| c).await;
    let addr = b.local_addr().to_string();
    let api = plain_api();
    let create = CreateTopicRequestHeader {
        attributes: Some("+message.type=FIFO".into()),
        ..mq_test_support::create_topic_header("Fifo", 2)
    };
    api.create_topic(&addr, &create, T).await.unwrap();
    let config = |topic: &str| {
        RemotingCommand::request(RequestCode::GET_TOPIC_CONFIG.0).with_ext_fields(
            GetTopicConfigRequestHeader {
                topic: topic.into(),
            }
            .to_ext_fields(),
        )
    };
    let r = api
        .remoting()
        .invoke(&addr, config("Fifo"), T)
        .await
        .unwrap();
    assert_eq!(r.code, ResponseCode::SUCCESS.0);
    let json: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(json["topicName"], "Fifo");
    assert_eq!(json["readQueueNums"], 2);
    assert_eq!(json["attributes"]["message.type"], "FIFO");
    let r = api
        .remoting()
        .invoke(&addr, config("Nowhere"), T)
        .await
        .unwrap();
    assert_eq!(r.code, ResponseCode::TOPIC_NOT_EXIST.0);
    for (topic, queues) in [("DefaultCluster", 16), ("broker-a", 1)] {
        let r = api
            .remoting()
            .invoke(&addr, config(topic), T)
            .await
            .unwrap();
        assert_eq!(r.code, ResponseCode::SUCCESS.0, "{topic}");
        let json: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(json["writeQueueNums"], queues, "{topic}");
        assert_eq!(json["perm"], perm::INHERIT | perm::READ_WRITE, "{topic}");
    }
    let _ = b.shutdown(T).await;
}
