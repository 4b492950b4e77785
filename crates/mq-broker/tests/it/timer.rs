//! Timer messages (5.x `TIMER_DELIVER_MS`, `TIMER_DELAY_SEC`, `TIMER_DELAY_MS`) and their
//! recall, end to end over loopback.

use std::time::{Duration, SystemTime};

use mq_client_api::header::RecallMessageRequestHeader;
use mq_client_api::message::{MessageExt, RecallHandle, property};
use mq_client_api::{ClientApi, ClientApiError, PullStatus, ResponseCode, wire_time};

use mq_test_support::{plain_api, send_request};

use super::{T, broker, msg, pull_header};

/// Long-polls `topic` queue 0 from offset 0 until the message `last` (a unique id) has come;
/// everything read on the way, in queue order.
async fn read_until(api: &ClientApi, addr: &str, topic: &str, last: &str) -> Vec<MessageExt> {
    let mut h = pull_header(topic, 0, 0);
    h.sys_flag = mq_client_api::header::pull_sys_flag::SUSPEND;
    h.suspend_timeout_millis = 15_000;
    let mut read = Vec::new();
    while !read.iter().any(|m: &MessageExt| m.msg_id() == last) {
        let r = api.pull(addr, &h, T).await.unwrap();
        match r.status {
            PullStatus::Found => read.extend(r.messages),
            PullStatus::NoNewMsg => {}
            other => panic!("unexpected {other:?}"),
        }
        h.queue_offset = r.next_begin_offset;
    }
    read
}

fn ms(t: SystemTime) -> i64 {
    wire_time::to_millis(t)
}

fn recall_header(topic: &str, handle: &str) -> RecallMessageRequestHeader {
    RecallMessageRequestHeader {
        producer_group: Some("pg".into()),
        topic: topic.into(),
        recall_handle: handle.into(),
        broker_name: Some("broker-a".into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timer_message_comes_at_its_time_and_a_recalled_one_never() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path(), |c| c).await;
    let addr = b.local_addr().to_string();
    let api = plain_api();
    let due = SystemTime::now() + Duration::from_millis(1500);
    let on_time = msg("Timer", 1).with_deliver_time(due);
    let sent = api
        .send(&addr, send_request("Timer", 0, &on_time), T)
        .await
        .unwrap();
    let handle = RecallHandle::decode(sent.recall_handle.as_deref().unwrap()).unwrap();
    assert_eq!(
        (handle.topic.as_str(), handle.broker_name.as_str()),
        ("Timer", "broker-a")
    );
    assert_eq!(handle.message_id, "U0001");
    // Kept to the second, rounded down (the handle holds one past the time kept).
    let kept = ms(handle.deliver_time) - 1;
    assert!(
        kept % 1000 == 0 && kept <= ms(due) && ms(due) - kept <= 1000,
        "{kept}"
    );

    let recalled = msg("Timer", 2).with_deliver_time(due);
    let sent = api
        .send(&addr, send_request("Timer", 0, &recalled), T)
        .await
        .unwrap();
    let id = api
        .recall_message(
            &addr,
            &recall_header("Timer", sent.recall_handle.as_deref().unwrap()),
            T,
        )
        .await
        .unwrap();
    assert_eq!(id, "U0002");
    // Due after the other two: once it has come, they would have too.
    let last = msg("Timer", 3).with_delay(Duration::from_millis(2500));
    api.send(&addr, send_request("Timer", 0, &last), T)
        .await
        .unwrap();
    let r = api
        .pull(&addr, &pull_header("Timer", 0, 0), T)
        .await
        .unwrap();
    assert!(
        r.messages.is_empty(),
        "visible before its time: {:?}",
        r.status
    );

    let read = read_until(&api, &addr, "Timer", "U0003").await;
    let ids: Vec<String> = read.iter().map(MessageExt::msg_id).collect();
    assert_eq!(ids, ["U0001", "U0003"]);
    let first = &read[0];
    assert_eq!(&first.message.body[..], b"payload-1");
    assert!(first.store_timestamp >= kept, "stored before its time");
    assert_eq!(first.message.property(property::REAL_TOPIC), None);
    assert_eq!(
        first.message.property(property::TIMER_OUT_MS),
        Some(kept.to_string().as_str())
    );
    assert!(first.message.property(property::TIMER_DEQUEUE_MS).is_some());
    assert!(first.message.property(property::TIMER_ENQUEUE_MS).is_some());
    let _ = b.shutdown(T).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_delivers_each_timer_message_once() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path(), |c| c).await;
    let addr = b.local_addr().to_string();
    let api = plain_api();
    // The later one first: still waiting, it is where a restart reads the timer queue from,
    // so the restart reads the earlier one's record again.
    let later = msg("Restart", 2).with_delay(Duration::from_millis(2500));
    api.send(&addr, send_request("Restart", 0, &later), T)
        .await
        .unwrap();
    // Due within the second, so kept at a time already past: delivered at the next tick.
    let soon = msg("Restart", 1).with_delay(Duration::from_millis(1));
    api.send(&addr, send_request("Restart", 0, &soon), T)
        .await
        .unwrap();
    read_until(&api, &addr, "Restart", "U0001").await;
    let _ = b.shutdown(T).await;

    let b = broker(dir.path(), |c| c).await;
    let addr = b.local_addr().to_string();
    let read = read_until(&api, &addr, "Restart", "U0002").await;
    let ids: Vec<String> = read.iter().map(MessageExt::msg_id).collect();
    assert_eq!(ids, ["U0001", "U0002"], "each once, across the restart");
    let _ = b.shutdown(T).await;
}

#[tokio::test]
async fn timers_and_recalls_that_cannot_be_kept_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path(), |c| {
        c.with_timer_max_delay(Duration::from_secs(60))
    })
    .await;
    let addr = b.local_addr().to_string();
    let api = plain_api();
    fn refused<R: std::fmt::Debug>(r: Result<R, ClientApiError>) -> (ResponseCode, String) {
        match r {
            Err(ClientApiError::Broker { code, remark, .. }) => (code, remark.unwrap_or_default()),
            other => panic!("not refused: {other:?}"),
        }
    }
    let too_far = msg("Refused", 1).with_delay(Duration::from_secs(61));
    let (code, remark) = refused(
        api.send(&addr, send_request("Refused", 0, &too_far), T)
            .await,
    );
    assert_eq!(code, ResponseCode::MESSAGE_ILLEGAL);
    assert!(remark.contains("max delay 60000ms"), "{remark}");
    let mut not_a_number = msg("Refused", 2);
    not_a_number.set_property(property::TIMER_DELAY_SEC, "soon");
    let (code, _) = refused(
        api.send(&addr, send_request("Refused", 0, &not_a_number), T)
            .await,
    );
    assert_eq!(code, ResponseCode::MESSAGE_ILLEGAL);
    // A time already past is a plain message; a delay level wins over a timer.
    let past = msg("Refused", 3).with_deliver_time(SystemTime::now() - Duration::from_secs(1));
    let sent = api
        .send(&addr, send_request("Refused", 0, &past), T)
        .await
        .unwrap();
    assert_eq!(sent.recall_handle, None);
    let leveled = msg("Refused", 4)
        .with_delay(Duration::from_secs(30))
        .with_delay_level(1);
    let sent = api
        .send(&addr, send_request("Refused", 0, &leveled), T)
        .await
        .unwrap();
    assert_eq!(sent.recall_handle, None, "a delay level, not a timer");

    let timer = msg("Refused", 5).with_delay(Duration::from_secs(30));
    let sent = api
        .send(&addr, send_request("Refused", 0, &timer), T)
        .await
        .unwrap();
    let good = sent.recall_handle.unwrap();
    let handle = RecallHandle::decode(&good).unwrap();
    let other_broker = RecallHandle {
        broker_name: "broker-b".into(),
        ..handle.clone()
    }
    .encode();
    let past = RecallHandle {
        deliver_time: SystemTime::now() - Duration::from_secs(1),
        ..handle
    }
    .encode();
    for (topic, handle, remark) in [
        ("Refused", "garbage", "recall handle is invalid"),
        (
            "Other",
            good.as_str(),
            "recall failed, the topic[Other] not exist",
        ),
        (
            "Refused",
            other_broker.as_str(),
            "recall failed, broker service not available",
        ),
        ("Refused", past.as_str(), "recall failed, timestamp invalid"),
    ] {
        let (code, got) = refused(
            api.recall_message(&addr, &recall_header(topic, handle), T)
                .await,
        );
        let want = if topic == "Other" {
            ResponseCode::TOPIC_NOT_EXIST
        } else {
            ResponseCode::ILLEGAL_OPERATION
        };
        assert_eq!((code, got.as_str()), (want, remark));
    }
    let _ = b.shutdown(T).await;

    // Off, as a Java broker's `recallMessageEnable` is by default.
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path(), |c| c.with_recall(false)).await;
    let addr = b.local_addr().to_string();
    let sent = api
        .send(&addr, send_request("Refused", 0, &timer), T)
        .await
        .unwrap();
    let (code, remark) = refused(
        api.recall_message(
            &addr,
            &recall_header("Refused", &sent.recall_handle.unwrap()),
            T,
        )
        .await,
    );
    assert_eq!(
        (code, remark.as_str()),
        (
            ResponseCode::NO_PERMISSION,
            "recall failed, operation is forbidden"
        )
    );
    let _ = b.shutdown(T).await;
}
