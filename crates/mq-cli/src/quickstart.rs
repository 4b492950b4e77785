//! `mq quickstart`: start an embedded name server and broker, send messages in every mode the
//! layers below the producer offer, read them all back, verify count and content, and print a
//! table. Exits non-zero when anything is missing.
//!
//! It drives `ClientApi` directly; once the producer and consumer crates land it moves onto them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mq_broker::{Broker, BrokerConfig};
use mq_client_api::header::{PullMessageRequestHeader, SendMessageRequestHeader, pull_sys_flag};
use mq_client_api::message::{Message, UniqueIdGenerator, encode_batch, property};
use mq_client_api::{ApiConfig, ClientApi, PullStatus, SendRequest};
use mq_namesrv::{NameServer, NamesrvConfig};
use mq_remoting::{ClientConfig, RemotingClient};
use tokio::sync::mpsc;

const PER_MODE: usize = 200;
const BATCH: usize = 10;
const QUEUES: i32 = 4;
const T: Duration = Duration::from_secs(10);

struct Row {
    mode: &'static str,
    sent: usize,
    acked: usize,
    consumed: usize,
    latencies: Vec<Duration>,
}

/// Runs the quickstart; `Err` carries the one-line reason for a non-zero exit.
pub(crate) async fn run() -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("mq-quickstart-{}", std::process::id()));
    let _cleanup = crate::TempStore(dir.clone());
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let started = Instant::now();
    let namesrv = NameServer::start(NamesrvConfig::default().with_listen(loopback))
        .await
        .map_err(|e| format!("name server cannot start: {e}"))?;
    let broker = Broker::start(
        BrokerConfig::new(&dir)
            .with_listen(loopback)
            .with_name_servers(vec![namesrv.local_addr().to_string()]),
    )
    .await
    .map_err(|e| format!("broker cannot start: {e}"))?;
    println!(
        "embedded cluster up in {:?}: name server {}, broker {}",
        started.elapsed(),
        namesrv.local_addr(),
        broker.local_addr()
    );
    let remoting = RemotingClient::new(ClientConfig::default());
    remoting
        .name_servers()
        .update(vec![namesrv.local_addr().to_string()]);
    let api = ClientApi::new(remoting, ApiConfig::default());
    let addr = broker.local_addr().to_string();
    let ids = Arc::new(UniqueIdGenerator::new(Some(broker.local_addr().ip())));

    let mut rows = Vec::new();
    for mode in ["sync", "async", "oneway", "batch"] {
        rows.push(run_mode(&api, &addr, &ids, mode).await?);
    }
    print_table(&rows);
    let _ = api.remoting().shutdown(T).await;
    let _ = broker.shutdown(T).await;
    let _ = namesrv.shutdown(T).await;
    let missing: Vec<&str> = rows
        .iter()
        .filter(|r| r.consumed != r.sent || (r.mode != "oneway" && r.acked != r.sent))
        .map(|r| r.mode)
        .collect();
    if missing.is_empty() {
        println!(
            "all {} messages consumed once, content verified",
            rows.iter().map(|r| r.sent).sum::<usize>()
        );
        Ok(())
    } else {
        Err(format!(
            "messages missing or unacknowledged in mode(s): {}",
            missing.join(", ")
        ))
    }
}

fn message(topic: &str, ids: &UniqueIdGenerator, i: usize) -> Message {
    let mut m =
        Message::new(topic, Bytes::from(format!("{topic} message {i}"))).with_tags("quickstart");
    m.set_property(property::UNIQ_CLIENT_MESSAGE_ID_KEYIDX, ids.next_id());
    m
}

fn request(topic: &str, queue_id: i32, msgs: &[Message]) -> Result<SendRequest, String> {
    let batch = msgs.len() > 1;
    let (body, properties) = if batch {
        (encode_batch(msgs).map_err(|e| e.to_string())?, None)
    } else {
        (msgs[0].body.clone(), Some(msgs[0].properties_string()))
    };
    Ok(SendRequest {
        header: SendMessageRequestHeader {
            producer_group: "quickstart".into(),
            topic: topic.into(),
            default_topic: "TBW102".into(),
            default_topic_queue_nums: QUEUES,
            queue_id,
            born_timestamp: 0,
            properties,
            batch,
            ..Default::default()
        },
        body,
        msg_id: msgs
            .iter()
            .filter_map(Message::uniq_key)
            .collect::<Vec<_>>()
            .join(","),
        broker_name: "broker-a".into(),
    })
}

async fn run_mode(
    api: &ClientApi,
    addr: &str,
    ids: &UniqueIdGenerator,
    mode: &'static str,
) -> Result<Row, String> {
    let topic = format!("Quickstart_{mode}");
    let sent: Vec<Message> = (0..PER_MODE).map(|i| message(&topic, ids, i)).collect();
    let mut latencies = Vec::new();
    let mut acked = 0;
    match mode {
        "sync" => {
            for (i, m) in sent.iter().enumerate() {
                let t = Instant::now();
                api.send(
                    addr,
                    &request(&topic, i as i32 % QUEUES, std::slice::from_ref(m))?,
                    T,
                )
                .await
                .map_err(|e| format!("sync send failed: {e}"))?;
                latencies.push(t.elapsed());
                acked += 1;
            }
        }
        "async" => {
            let (tx, mut rx) = mpsc::unbounded_channel();
            for (i, m) in sent.iter().enumerate() {
                let tx = tx.clone();
                let t = Instant::now();
                api.send_with_callback(
                    addr,
                    request(&topic, i as i32 % QUEUES, std::slice::from_ref(m))?,
                    T,
                    move |r| {
                        let _ = tx.send(r.map(|_| t.elapsed()));
                    },
                )
                .await
                .map_err(|e| format!("async send failed: {e}"))?;
            }
            drop(tx);
            while let Some(r) = rx.recv().await {
                latencies.push(r.map_err(|e| format!("async send failed: {e}"))?);
                acked += 1;
            }
        }
        "oneway" => {
            for (i, m) in sent.iter().enumerate() {
                api.send_oneway(
                    addr,
                    &request(&topic, i as i32 % QUEUES, std::slice::from_ref(m))?,
                    T,
                )
                .await
                .map_err(|e| format!("oneway send failed: {e}"))?;
            }
        }
        _ => {
            for (i, chunk) in sent.chunks(BATCH).enumerate() {
                let t = Instant::now();
                api.send(addr, &request(&topic, i as i32 % QUEUES, chunk)?, T)
                    .await
                    .map_err(|e| format!("batch send failed: {e}"))?;
                latencies.push(t.elapsed());
                acked += chunk.len();
            }
        }
    }
    let consumed = consume_and_verify(api, addr, &topic, &sent).await?;
    Ok(Row {
        mode,
        sent: sent.len(),
        acked,
        consumed,
        latencies,
    })
}

/// Pulls every queue of `topic` until all of `sent` arrived (long polling, bounded), checking
/// that each arrives once with its own body.
async fn consume_and_verify(
    api: &ClientApi,
    addr: &str,
    topic: &str,
    sent: &[Message],
) -> Result<usize, String> {
    let expected: HashMap<&str, &Bytes> = sent
        .iter()
        .filter_map(|m| m.uniq_key().map(|k| (k, &m.body)))
        .collect();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut offsets = [0i64; QUEUES as usize];
    let deadline = Instant::now() + T;
    while seen.len() < expected.len() && Instant::now() < deadline {
        for q in 0..QUEUES {
            let h = PullMessageRequestHeader {
                consumer_group: "quickstart".into(),
                topic: topic.into(),
                queue_id: q,
                queue_offset: offsets[q as usize],
                max_msg_nums: 64,
                sys_flag: pull_sys_flag::SUSPEND,
                suspend_timeout_millis: 50,
                subscription: Some("quickstart".into()),
                ..Default::default()
            };
            let r = match api.pull(addr, &h, T).await {
                Ok(r) => r,
                // A oneway send may not have created the topic yet.
                Err(e)
                    if e.response_code() == Some(mq_client_api::ResponseCode::TOPIC_NOT_EXIST) =>
                {
                    continue;
                }
                Err(e) => return Err(format!("pull failed: {e}")),
            };
            offsets[q as usize] = r.next_begin_offset;
            if r.status != PullStatus::Found {
                continue;
            }
            for m in r.messages {
                let key = m.msg_id();
                match expected.get(key.as_str()) {
                    Some(body) if **body == m.message.body => *seen.entry(key).or_default() += 1,
                    Some(_) => {
                        return Err(format!("message {key} came back with a different body"));
                    }
                    None => return Err(format!("unexpected message {key} in {topic}")),
                }
            }
        }
    }
    if let Some((k, n)) = seen.iter().find(|(_, n)| **n > 1) {
        return Err(format!("message {k} was consumed {n} times"));
    }
    Ok(seen.len())
}

fn percentile(sorted: &[Duration], p: f64) -> String {
    if sorted.is_empty() {
        return "-".into();
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    format!("{:.2} ms", sorted[i].as_secs_f64() * 1000.0)
}

fn print_table(rows: &[Row]) {
    println!();
    println!(
        "{:<8} {:>6} {:>6} {:>9} {:>10} {:>10}",
        "mode", "sent", "acked", "consumed", "p50", "p99"
    );
    for r in rows {
        let mut l = r.latencies.clone();
        l.sort();
        let acked = if r.mode == "oneway" {
            "-".to_owned()
        } else {
            r.acked.to_string()
        };
        println!(
            "{:<8} {:>6} {:>6} {:>9} {:>10} {:>10}",
            r.mode,
            r.sent,
            acked,
            r.consumed,
            percentile(&l, 0.5),
            percentile(&l, 0.99)
        );
    }
    println!();
}
