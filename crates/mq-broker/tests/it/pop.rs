//! Pop consumption (POP_MESSAGE, ACK_MESSAGE, CHANGE_MESSAGE_INVISIBLETIME) end to end over
//! loopback: what Apache RocketMQ's gRPC proxy and Java's pop consumers rely on.

use std::time::Duration;

use mq_client_api::header::{
    AckMessageRequestHeader, ChangeInvisibleTimeRequestHeader, PopMessageRequestHeader,
    QueryConsumerOffsetRequestHeader, consume_init_mode,
};
use mq_client_api::{
    ClientApi, ClientApiError, PopResult, PopStatus, PoppedMessage, RequestCode, ResponseCode,
};
use mq_test_support::{plain_api, send_request};

use super::{T, broker, msg, parked};

fn pop_header(
    topic: &str,
    queue_id: i32,
    max: i32,
    invisible: Duration,
) -> PopMessageRequestHeader {
    PopMessageRequestHeader {
        consumer_group: "pop-g".into(),
        topic: topic.into(),
        queue_id,
        max_msg_nums: max,
        invisible_time: i64::try_from(invisible.as_millis()).unwrap(),
        poll_time: 0,
        born_time: 0,
        init_mode: consume_init_mode::MAX,
        exp_type: Some("TAG".into()),
        exp: Some("*".into()),
        order: None,
        attempt_id: None,
    }
}

async fn pop(api: &ClientApi, addr: &str, h: &PopMessageRequestHeader) -> PopResult {
    api.pop_message("broker-a", addr, h, T).await.unwrap()
}

fn ack_header(m: &PoppedMessage) -> AckMessageRequestHeader {
    AckMessageRequestHeader {
        consumer_group: "pop-g".into(),
        topic: m.message.message.topic.clone(),
        queue_id: m.message.queue_id,
        extra_info: m.checkpoint.to_string(),
        offset: m.message.queue_offset,
    }
}

fn ids(r: &PopResult) -> Vec<String> {
    r.messages.iter().map(|m| m.message.msg_id()).collect()
}

async fn committed(api: &ClientApi, addr: &str, topic: &str, queue_id: i32) -> i64 {
    api.query_consumer_offset(
        addr,
        &QueryConsumerOffsetRequestHeader {
            consumer_group: "pop-g".into(),
            topic: topic.into(),
            queue_id,
            set_zero_if_not_found: Some(false),
        },
        T,
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn popped_messages_stay_invisible_until_acked_and_come_again_with_their_count_raised() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path(), |c| c).await;
    let addr = b.local_addr().to_string();
    let api = plain_api();
    for i in 0..3 {
        api.send(&addr, send_request("Pop", 2, &msg("Pop", i)), T)
            .await
            .unwrap();
    }
    let invisible = Duration::from_millis(1500);
    let first = pop(&api, &addr, &pop_header("Pop", -1, 32, invisible)).await;
    assert_eq!(first.status, PopStatus::Found);
    assert_eq!(ids(&first), ["U0000", "U0001", "U0002"]);
    assert_eq!(first.rest, 0);
    for m in &first.messages {
        assert_eq!(m.message.reconsume_times, 0);
        assert_eq!(m.checkpoint.queue_id, 2);
        assert_eq!(m.checkpoint.checkpoint_offset, 0);
        assert_eq!(m.checkpoint.broker_name, "broker-a");
    }
    // Invisible to the group's next pop; acked ones are gone for good.
    let none = pop(&api, &addr, &pop_header("Pop", -1, 32, invisible)).await;
    assert_eq!(none.status, PopStatus::NoNewMsg);
    for m in [&first.messages[0], &first.messages[2]] {
        api.ack_message(&addr, &ack_header(m), T).await.unwrap();
    }
    assert_eq!(committed(&api, &addr, "Pop", 2).await, 1);
    // A pop that may wait is woken when the unacknowledged message becomes visible again.
    let mut waiting = pop_header("Pop", -1, 32, invisible);
    waiting.poll_time = 15_000;
    let again = pop(&api, &addr, &waiting).await;
    assert_eq!(ids(&again), ["U0001"]);
    let m = &again.messages[0];
    assert_eq!(m.message.reconsume_times, 1);
    assert!(again.popped_at >= first.popped_at + invisible);
    // The first checkpoint no longer acknowledges it: it comes a third time.
    api.ack_message(&addr, &ack_header(&first.messages[1]), T)
        .await
        .unwrap();
    let third = pop(&api, &addr, &waiting).await;
    assert_eq!(ids(&third), ["U0001"]);
    assert_eq!(third.messages[0].message.reconsume_times, 2);
    api.ack_message(&addr, &ack_header(&third.messages[0]), T)
        .await
        .unwrap();
    assert_eq!(committed(&api, &addr, "Pop", 2).await, 3);
    let none = pop(&api, &addr, &pop_header("Pop", -1, 32, invisible)).await;
    assert_eq!(none.status, PopStatus::NoNewMsg);
    let _ = b.shutdown(T).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pop_waits_for_a_message_and_a_changed_invisible_time_brings_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path(), |c| c).await;
    let addr = b.local_addr().to_string();
    let api = plain_api();
    // The topic exists, empty.
    api.send(&addr, send_request("PopWait", 0, &msg("PopWait", 0)), T)
        .await
        .unwrap();
    let first = pop(
        &api,
        &addr,
        &pop_header("PopWait", 0, 1, Duration::from_secs(60)),
    )
    .await;
    api.ack_message(&addr, &ack_header(&first.messages[0]), T)
        .await
        .unwrap();
    let mut h = pop_header("PopWait", -1, 4, Duration::from_secs(60));
    // Far longer than the test's own bound: only an arrival can end this pop in time.
    h.poll_time = 600_000;
    let (a, ad) = (api.clone(), addr.clone());
    let waiting = tokio::spawn(async move {
        a.pop_message("broker-a", &ad, &h, Duration::from_secs(700))
            .await
    });
    parked(&b).await;
    api.send(&addr, send_request("PopWait", 3, &msg("PopWait", 1)), T)
        .await
        .unwrap();
    let got = tokio::time::timeout(T, waiting)
        .await
        .expect("woken by the send")
        .unwrap()
        .unwrap();
    assert_eq!(ids(&got), ["U0001"]);
    let m = &got.messages[0];
    // Invisible for a minute; changed to a second from now, it comes back then.
    let change = ChangeInvisibleTimeRequestHeader {
        consumer_group: "pop-g".into(),
        topic: "PopWait".into(),
        queue_id: 3,
        extra_info: m.checkpoint.to_string(),
        offset: m.message.queue_offset,
        invisible_time: 1000,
    };
    let changed = api.change_invisible_time(&addr, &change, T).await.unwrap();
    assert_eq!(changed.invisible_time, 1000);
    assert!(changed.pop_time >= m.checkpoint.pop_time);
    // The old checkpoint no longer names it.
    let stale = api.change_invisible_time(&addr, &change, T).await;
    match stale {
        Err(ClientApiError::Broker { code, .. }) => assert_eq!(code, ResponseCode::NO_MESSAGE),
        other => panic!("expected NO_MESSAGE, got {other:?}"),
    }
    let mut again = pop_header("PopWait", -1, 4, Duration::from_secs(60));
    again.poll_time = 15_000;
    let back = pop(&api, &addr, &again).await;
    assert_eq!(ids(&back), ["U0001"]);
    assert_eq!(back.messages[0].message.reconsume_times, 1);
    let _ = b.shutdown(T).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orderly_pop_holds_a_queue_until_its_messages_are_acked() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path(), |c| c).await;
    let addr = b.local_addr().to_string();
    let api = plain_api();
    for i in 0..3 {
        api.send(&addr, send_request("PopFifo", 1, &msg("PopFifo", i)), T)
            .await
            .unwrap();
    }
    let mut h = pop_header("PopFifo", 1, 2, Duration::from_secs(60));
    h.order = Some(true);
    let first = pop(&api, &addr, &h).await;
    assert_eq!(ids(&first), ["U0000", "U0001"]);
    assert!(first.messages[0].checkpoint.is_order());
    // The queue is held: nothing more while the two are in flight, even when one is acked.
    api.ack_message(&addr, &ack_header(&first.messages[0]), T)
        .await
        .unwrap();
    assert_eq!(pop(&api, &addr, &h).await.status, PopStatus::NoNewMsg);
    api.ack_message(&addr, &ack_header(&first.messages[1]), T)
        .await
        .unwrap();
    assert_eq!(ids(&pop(&api, &addr, &h).await), ["U0002"]);
    let _ = b.shutdown(T).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_every_unacknowledged_message_comes_again() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path(), |c| c).await;
    let addr = b.local_addr().to_string();
    let api = plain_api();
    for i in 0..3 {
        api.send(&addr, send_request("PopRe", 0, &msg("PopRe", i)), T)
            .await
            .unwrap();
    }
    let h = pop_header("PopRe", 0, 32, Duration::from_secs(300));
    let first = pop(&api, &addr, &h).await;
    assert_eq!(ids(&first), ["U0000", "U0001", "U0002"]);
    api.ack_message(&addr, &ack_header(&first.messages[0]), T)
        .await
        .unwrap();
    let _ = b.shutdown(T).await;
    let b = broker(dir.path(), |c| c).await;
    let addr = b.local_addr().to_string();
    let again = pop(&api, &addr, &h).await;
    assert_eq!(ids(&again), ["U0001", "U0002"]);
    let _ = b.shutdown(T).await;
}

#[tokio::test]
async fn pops_and_acks_that_cannot_be_served_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path(), |c| c).await;
    let addr = b.local_addr().to_string();
    let api = plain_api();
    api.send(&addr, send_request("PopBad", 0, &msg("PopBad", 0)), T)
        .await
        .unwrap();
    let refused = |r: Result<PopResult, ClientApiError>| match r {
        Err(ClientApiError::Broker { code, remark, .. }) => (code, remark.unwrap_or_default()),
        other => panic!("expected a refusal, got {other:?}"),
    };
    let d = Duration::from_secs(30);
    let (code, remark) = refused(
        api.pop_message("broker-a", &addr, &pop_header("PopBad", 0, 33, d), T)
            .await,
    );
    assert_eq!(code, ResponseCode::INVALID_PARAMETER);
    assert!(remark.contains("greater than 32"), "{remark}");
    let (code, _) = refused(
        api.pop_message("broker-a", &addr, &pop_header("NoSuchTopic", -1, 1, d), T)
            .await,
    );
    assert_eq!(code, ResponseCode::TOPIC_NOT_EXIST);
    let (code, remark) = refused(
        api.pop_message("broker-a", &addr, &pop_header("PopBad", 4, 1, d), T)
            .await,
    );
    assert_eq!(code, ResponseCode::INVALID_PARAMETER);
    assert!(remark.contains("queueId[4] is illegal"), "{remark}");
    let popped = pop(&api, &addr, &pop_header("PopBad", 0, 1, d)).await;
    let mut ack = ack_header(&popped.messages[0]);
    ack.extra_info = "not a checkpoint".into();
    match api.ack_message(&addr, &ack, T).await {
        Err(ClientApiError::Broker { code, remark, .. }) => {
            let remark = remark.unwrap_or_default();
            assert_eq!(code, ResponseCode::MESSAGE_ILLEGAL);
            assert!(remark.contains("extraInfo"), "{remark}");
        }
        other => panic!("expected MESSAGE_ILLEGAL, got {other:?}"),
    }
    ack = ack_header(&popped.messages[0]);
    ack.offset = 7;
    match api.ack_message(&addr, &ack, T).await {
        Err(ClientApiError::Broker { code, remark, .. }) => {
            let remark = remark.unwrap_or_default();
            assert_eq!(code, ResponseCode::NO_MESSAGE);
            assert!(remark.starts_with("offset is illegal"), "{remark}");
        }
        other => panic!("expected NO_MESSAGE, got {other:?}"),
    }
    // The newer numbering of the pop codes (3442…, for ROCKETMQ headers) is served alike.
    let r = api
        .remoting()
        .invoke(
            &addr,
            api.request(RequestCode(3443), &ack_header(&popped.messages[0])),
            T,
        )
        .await
        .unwrap();
    assert_eq!(r.code, ResponseCode::SUCCESS.0, "{:?}", r.remark);
    let none = pop(&api, &addr, &pop_header("PopBad", 0, 1, d)).await;
    assert_eq!(none.status, PopStatus::NoNewMsg);
    let _ = b.shutdown(T).await;
}

/// A client that sends ROCKETMQ headers (`-Drocketmq.serialize.type=ROCKETMQ` in Java) pops,
/// acknowledges and hands back messages too, although the pop codes (200050 and up) do not
/// fit a ROCKETMQ header's 16-bit code: those requests go with JSON headers, and every other
/// request of the same client keeps its binary headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_of_rocketmq_headers_pops_acks_and_hands_back() {
    use mq_client_api::ApiConfig;
    use mq_remoting::{ClientConfig, RemotingClient, SerializeType};

    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path(), |c| c).await;
    let addr = b.local_addr().to_string();
    let api = ClientApi::new(
        RemotingClient::new(ClientConfig::default()),
        ApiConfig::default().with_serialize_type(SerializeType::RocketMq),
    );
    assert_eq!(
        api.header_type(RequestCode::POP_MESSAGE),
        SerializeType::Json
    );
    assert_eq!(
        api.header_type(RequestCode::SEND_MESSAGE_V2),
        SerializeType::RocketMq
    );
    for i in 0..2 {
        api.send(&addr, send_request("PopBin", 1, &msg("PopBin", i)), T)
            .await
            .unwrap();
    }
    let invisible = Duration::from_secs(60);
    let first = pop(&api, &addr, &pop_header("PopBin", -1, 32, invisible)).await;
    assert_eq!(ids(&first), ["U0000", "U0001"]);
    api.ack_message(&addr, &ack_header(&first.messages[0]), T)
        .await
        .unwrap();
    let m = &first.messages[1];
    api.change_invisible_time(
        &addr,
        &ChangeInvisibleTimeRequestHeader {
            consumer_group: "pop-g".into(),
            topic: "PopBin".into(),
            queue_id: m.message.queue_id,
            extra_info: m.checkpoint.to_string(),
            offset: m.message.queue_offset,
            invisible_time: 0,
        },
        T,
    )
    .await
    .unwrap();
    // Visible again from now on: a pop that may wait is woken when it is.
    let mut waiting = pop_header("PopBin", -1, 32, invisible);
    waiting.poll_time = 15_000;
    let again = pop(&api, &addr, &waiting).await;
    assert_eq!(
        ids(&again),
        ["U0001"],
        "handed back at once, the acked one gone"
    );
    assert_eq!(committed(&api, &addr, "PopBin", 1).await, 1);
    let _ = b.shutdown(T).await;
}
