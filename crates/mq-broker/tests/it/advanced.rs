//! Delay levels, retries and the DLQ, and transactions, end to end over loopback.

use std::sync::Arc;
use std::time::Duration;

use mq_broker::BrokerConfig;
use mq_client_api::body::{HeartbeatData, ProducerData};
use mq_client_api::header::*;
use mq_client_api::message::{Message, MessageExt, decode_record, property, sys_flag};
use mq_client_api::{ClientApi, PullStatus, RequestCode};
use mq_remoting::{RemotingCommand, processor_fn};

use mq_test_support::{plain_api, send_request};

use super::{T, broker, msg, pull_header};

fn fast(c: BrokerConfig) -> BrokerConfig {
    c.with_delay_levels(vec![Duration::from_millis(200)])
        .with_transaction_timeout(Duration::from_millis(300))
}

/// Long-polls `topic` queue 0 from `offset` until messages come (bounded by the suspend).
async fn wait_for(api: &ClientApi, addr: &str, topic: &str, offset: i64) -> Vec<MessageExt> {
    let mut h = pull_header(topic, 0, offset);
    h.sys_flag = pull_sys_flag::SUSPEND;
    h.suspend_timeout_millis = 15_000;
    loop {
        let r = api.pull(addr, &h, T).await.unwrap();
        match r.status {
            PullStatus::Found => return r.messages,
            PullStatus::NoNewMsg => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_messages_become_visible_when_their_level_elapses() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path(), fast).await;
    let addr = b.local_addr().to_string();
    let api = plain_api();
    // Level 5 is clamped to the single configured level.
    let m = msg("Delayed", 1).with_delay_level(5);
    let sent = api
        .send(&addr, send_request("Delayed", 0, &m), T)
        .await
        .unwrap();
    let r = api
        .pull(&addr, &pull_header("Delayed", 0, 0), T)
        .await
        .unwrap();
    assert!(
        r.messages.is_empty(),
        "not visible before its delay: {:?}",
        r.status
    );
    let got = wait_for(&api, &addr, "Delayed", 0).await;
    assert_eq!(&got[0].message.body[..], b"payload-1");
    assert_eq!(got[0].message.property(property::DELAY_TIME_LEVEL), None);
    assert_eq!(got[0].message.property(property::REAL_TOPIC), None);
    assert_eq!(got[0].msg_id(), "U0001");
    let (_, parked) = mq_client_api::message::decode_offset_msg_id(&sent.offset_msg_id).unwrap();
    assert!(
        got[0].commit_log_offset > parked,
        "delivered as a new record"
    );
    let _ = b.shutdown(T).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_back_retries_then_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path(), fast).await;
    let addr = b.local_addr().to_string();
    let api = plain_api();
    api.send(&addr, send_request("Work", 0, &msg("Work", 7)), T)
        .await
        .unwrap();
    let first = api
        .pull(&addr, &pull_header("Work", 0, 0), T)
        .await
        .unwrap()
        .messages;
    let back = |m: &MessageExt, max: i32| ConsumerSendMsgBackRequestHeader {
        offset: m.commit_log_offset,
        group: "cg".into(),
        delay_level: 0,
        origin_msg_id: Some(m.msg_id()),
        origin_topic: Some(m.message.topic.clone()),
        unit_mode: false,
        max_reconsume_times: Some(max),
    };
    api.consumer_send_back(&addr, &back(&first[0], 1), T)
        .await
        .unwrap();
    let retried = wait_for(&api, &addr, "%RETRY%cg", 0).await;
    let r = &retried[0];
    assert_eq!(&r.message.body[..], b"payload-7");
    assert_eq!(r.reconsume_times, 1);
    assert_eq!(r.message.property(property::RETRY_TOPIC), Some("Work"));
    assert_eq!(
        r.message.property(property::ORIGIN_MESSAGE_ID),
        Some("U0007")
    );
    // Failing again past max reconsume times lands in the DLQ, without delay.
    api.consumer_send_back(&addr, &back(r, 1), T).await.unwrap();
    let dead = wait_for(&api, &addr, "%DLQ%cg", 0).await;
    assert_eq!(&dead[0].message.body[..], b"payload-7");
    assert_eq!(dead[0].reconsume_times, 2);
    assert_eq!(
        dead[0].message.property(property::RETRY_TOPIC),
        Some("Work")
    );
    let _ = b.shutdown(T).await;
}

fn half(i: usize) -> Message {
    let mut m = msg("Tx", i);
    m.set_property(property::TRANSACTION_PREPARED, "true");
    m.set_property(property::PRODUCER_GROUP, "tpg");
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_commit_rollback_and_check() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path(), fast).await;
    let addr = b.local_addr().to_string();
    let producer = plain_api();
    // The producer answers checks by committing (after recording what it was asked).
    let (tx, mut checked) = tokio::sync::mpsc::unbounded_channel();
    let tx = Arc::new(tx);
    let p = producer.clone();
    let a = addr.clone();
    producer.remoting().register_processor(
        RequestCode::CHECK_TRANSACTION_STATE.0,
        processor_fn(move |_ctx, req: RemotingCommand| {
            let (p, a, tx) = (p.clone(), a.clone(), Arc::clone(&tx));
            async move {
                let h = CheckTransactionStateRequestHeader::decode(&req.ext_fields).unwrap();
                let real = decode_record(&mut req.body.clone(), true, false).unwrap();
                let end = EndTransactionRequestHeader {
                    producer_group: "tpg".into(),
                    tran_state_table_offset: h.tran_state_table_offset,
                    commit_log_offset: h.commit_log_offset,
                    commit_or_rollback: transaction_type::COMMIT,
                    from_transaction_check: Some(true),
                    msg_id: h.msg_id.clone().unwrap_or_default(),
                    transaction_id: h.transaction_id.clone(),
                    topic: None,
                };
                p.end_transaction_oneway(&a, &end, None, T).await.unwrap();
                tx.send((req.is_oneway(), real.message.topic, h.msg_id))
                    .unwrap();
                None
            }
        }),
    );
    let hb = HeartbeatData {
        client_id: "p@1".into(),
        producer_data_set: vec![ProducerData {
            group_name: "tpg".into(),
        }],
        consumer_data_set: vec![],
    };
    producer.heartbeat(&addr, &hb, T).await.unwrap();

    let mut results = Vec::new();
    for i in 0..3 {
        let mut req = send_request("Tx", 0, &half(i));
        req.header.sys_flag = sys_flag::TRANSACTION_PREPARED_TYPE;
        results.push(producer.send(&addr, req, T).await.unwrap());
    }
    // Each answer names its transaction (its unique key), as a Java 5 broker's does: Apache
    // RocketMQ's proxy hands it to its gRPC producer to end the transaction with.
    let ids: Vec<_> = results
        .iter()
        .map(|r| r.transaction_id.as_deref())
        .collect();
    assert_eq!(ids, [Some("U0000"), Some("U0001"), Some("U0002")]);
    let real = plain_api();
    let r = real.pull(&addr, &pull_header("Tx", 0, 0), T).await.unwrap();
    assert!(r.messages.is_empty(), "half messages are invisible");

    let end = |i: usize, decision: i32| {
        let (_, phys) =
            mq_client_api::message::decode_offset_msg_id(&results[i].offset_msg_id).unwrap();
        EndTransactionRequestHeader {
            producer_group: "tpg".into(),
            tran_state_table_offset: results[i].queue_offset,
            commit_log_offset: phys,
            commit_or_rollback: decision,
            from_transaction_check: Some(false),
            msg_id: format!("U{i:04}"),
            transaction_id: None,
            topic: None,
        }
    };
    producer
        .end_transaction_oneway(&addr, &end(0, transaction_type::COMMIT), None, T)
        .await
        .unwrap();
    producer
        .end_transaction_oneway(&addr, &end(1, transaction_type::ROLLBACK), None, T)
        .await
        .unwrap();
    producer
        .end_transaction_oneway(&addr, &end(2, transaction_type::NOT_TYPE), None, T)
        .await
        .unwrap();

    let committed = wait_for(&real, &addr, "Tx", 0).await;
    assert_eq!(&committed[0].message.body[..], b"payload-0");
    assert_eq!(
        committed[0].message.transaction_id.as_deref(),
        Some("U0000")
    );
    // The unknown one is checked with the producer, which commits it.
    let (oneway, topic, id) = checked.recv().await.unwrap();
    assert!(oneway);
    assert_eq!(topic, "Tx", "the check carries the real topic");
    assert_eq!(id.as_deref(), Some("U0002"));
    let later = wait_for(&real, &addr, "Tx", 1).await;
    assert_eq!(&later[0].message.body[..], b"payload-2");
    let all = real.pull(&addr, &pull_header("Tx", 0, 0), T).await.unwrap();
    let bodies: Vec<&[u8]> = all.messages.iter().map(|m| &m.message.body[..]).collect();
    assert_eq!(
        bodies,
        vec![&b"payload-0"[..], b"payload-2"],
        "the rollback stays invisible"
    );
    let _ = b.shutdown(T).await;
}
