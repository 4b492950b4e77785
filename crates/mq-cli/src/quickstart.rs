//! `mq quickstart`: start an embedded name server and broker (or use the cluster behind
//! `--namesrv`), send with the producer in every
//! mode (sync, async future, callback, oneway, batch, ordered by key with a selector, and in
//! transactions that commit), consume
//! everything back with a push consumer, verify count and content, and print a table. Exits
//! non-zero when anything is missing.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mq_broker::{Broker, BrokerConfig};
use mq_client_api::{Message, MessageExt};
use mq_client_instance::ClientConfig;
use mq_consumer::{ConsumeContext, ConsumeFrom, ConsumeStatus, ConsumerConfig, PushConsumer};
use mq_namesrv::{NameServer, NamesrvConfig};
use mq_producer::{
    HashSelector, LocalTransactionState, Producer, ProducerConfig, SelectArg, TransactionListener,
    TransactionProducer,
};
use parking_lot::Mutex;

use crate::options::{Codec, Compress};
use tokio::sync::{Notify, mpsc};

const PER_MODE: usize = 200;
const BATCH: usize = 10;
const TOPIC: &str = "Quickstart";
const MODES: [&str; 7] = [
    "sync",
    "async",
    "callback",
    "oneway",
    "batch",
    "ordered",
    "transaction",
];

#[derive(Default)]
struct Row {
    sent: usize,
    acked: usize,
    latencies: Vec<Duration>,
    expected: HashMap<String, String>,
}

/// What the consumer saw: message id → (mode tag, body), counting duplicates.
#[derive(Default)]
struct Seen {
    messages: Mutex<HashMap<String, (String, String, u32)>>,
    changed: Notify,
}

/// The embedded cluster the quickstart runs on when no name server is given.
struct Embedded {
    namesrv: NameServer,
    broker: Broker,
    _store: crate::TempStore,
}

impl Embedded {
    async fn start() -> Result<Self, String> {
        let dir = std::env::temp_dir().join(format!("mq-quickstart-{}", std::process::id()));
        let store = crate::TempStore(dir.clone());
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
            "embedded cluster up in {:.1} ms: name server {}, broker {}",
            started.elapsed().as_secs_f64() * 1000.0,
            namesrv.local_addr(),
            broker.local_addr()
        );
        Ok(Self {
            namesrv,
            broker,
            _store: store,
        })
    }

    async fn shutdown(self) {
        let _ = self.broker.shutdown(Duration::from_secs(5)).await;
        let _ = self.namesrv.shutdown(Duration::from_secs(5)).await;
    }
}

/// `mq quickstart` flags.
#[derive(Debug, Default, clap::Args)]
pub(crate) struct QuickstartArgs {
    /// Run against this cluster instead (e.g. Apache RocketMQ), `host:port;host:port`.
    #[arg(long)]
    namesrv: Option<String>,
    /// Header codec of every client.
    #[arg(long, value_enum, default_value = "json")]
    codec: Codec,
    /// Compress every message body sent (batches excepted) with this codec.
    #[arg(long, value_enum, default_value = "none")]
    compression: Compress,
}

/// Runs the quickstart on an embedded cluster, or on the cluster behind `--namesrv` (e.g. an
/// Apache RocketMQ one); `Err` carries the one-line reason for a non-zero exit.
pub(crate) async fn run(args: QuickstartArgs) -> Result<(), String> {
    let namesrv = args.namesrv.as_deref();
    let embedded = match namesrv {
        Some(_) => None,
        None => Some(Embedded::start().await?),
    };
    let ns = match (namesrv, &embedded) {
        (Some(ns), _) => ns.to_owned(),
        (None, Some(e)) => e.namesrv.local_addr().to_string(),
        (None, None) => return Err("no cluster".into()),
    };
    // A run against a shared cluster uses names of its own, so earlier runs do not count.
    let run_id = format!(
        "{}-{}",
        std::process::id(),
        mq_client_api::wire_time::now_millis()
    );
    let topic = format!("{TOPIC}-{run_id}");
    let client = |name: &str| {
        ClientConfig::new(&ns)
            .with_instance_name(format!("quickstart-{name}-{run_id}"))
            .with_serialize_type(args.codec.serialize_type())
    };
    let producer_config = |group: &str, name: &str| {
        args.compression
            .apply(ProducerConfig::new(group, &ns).with_client(client(name)), 0)
    };
    if namesrv.is_some() {
        // On a real cluster the topic may not be auto-created; create it on every broker.
        crate::commands::create_topic_everywhere(
            &ns,
            &crate::options::Security::default(),
            &topic,
            4,
            None,
            Duration::from_secs(10),
        )
        .await?;
    }

    let seen = Arc::new(Seen::default());
    let consumer = PushConsumer::new(
        ConsumerConfig::new("quickstart_consumer", &ns)
            .with_client(client("consumer"))
            .with_consume_from(ConsumeFrom::FirstOffset),
    );
    consumer.subscribe(&topic, "*").map_err(|e| e.to_string())?;
    let s = Arc::clone(&seen);
    consumer
        .start(Arc::new(
            move |msgs: &[MessageExt], _ctx: &mut ConsumeContext| {
                let mut map = s.messages.lock();
                for m in msgs {
                    let entry = map.entry(m.msg_id()).or_insert_with(|| {
                        (
                            m.message.tags().unwrap_or_default().to_owned(),
                            String::from_utf8_lossy(&m.message.body).into_owned(),
                            0,
                        )
                    });
                    entry.2 += 1;
                }
                s.changed.notify_waiters();
                ConsumeStatus::Success
            },
        ))
        .await
        .map_err(|e| format!("consumer cannot start: {e}"))?;

    let producer = Producer::new(producer_config("quickstart_producer", "producer"));
    producer
        .start()
        .await
        .map_err(|e| format!("producer cannot start: {e}"))?;
    let transactions = TransactionProducer::new(
        Producer::new(producer_config("quickstart_tx_producer", "tx")),
        Arc::new(CommitAll),
    );
    transactions
        .start()
        .await
        .map_err(|e| format!("transaction producer cannot start: {e}"))?;
    let mut rows: HashMap<&str, Row> = HashMap::new();
    for mode in MODES {
        let row = if mode == "transaction" {
            send_transactions(&transactions, &topic).await?
        } else {
            send_mode(&producer, &topic, mode).await?
        };
        rows.insert(mode, row);
    }
    transactions.shutdown().await;
    let expected: usize = rows.values().map(|r| r.expected.len()).sum();
    wait_for(&seen, expected, Duration::from_secs(30)).await;

    let messages = seen.messages.lock().clone();
    println!();
    println!(
        "{:<11} {:>6} {:>6} {:>9} {:>10} {:>10}",
        "mode", "sent", "acked", "consumed", "p50", "p99"
    );
    let mut problems = Vec::new();
    for mode in MODES {
        let row = &rows[mode];
        let consumed = row
            .expected
            .iter()
            .filter(|(id, body)| {
                messages
                    .get(*id)
                    .is_some_and(|(tag, b, _)| tag == mode && b == *body)
            })
            .count();
        let duplicates = row
            .expected
            .keys()
            .filter(|id| messages.get(*id).is_some_and(|m| m.2 > 1))
            .count();
        let mut l = row.latencies.clone();
        l.sort();
        let acked = if mode == "oneway" {
            "-".to_owned()
        } else {
            row.acked.to_string()
        };
        println!(
            "{:<11} {:>6} {:>6} {:>9} {:>10} {:>10}",
            mode,
            row.sent,
            acked,
            consumed,
            percentile(&l, 0.5),
            percentile(&l, 0.99)
        );
        if consumed != row.sent || (mode != "oneway" && row.acked != row.sent) || duplicates > 0 {
            problems.push(mode);
        }
    }
    println!();
    producer.shutdown().await;
    consumer.shutdown().await;
    if let Some(e) = embedded {
        e.shutdown().await;
    }
    if problems.is_empty() {
        println!("all {expected} messages consumed once, content verified");
        Ok(())
    } else {
        Err(format!(
            "messages missing, unacknowledged or duplicated in mode(s): {}",
            problems.join(", ")
        ))
    }
}

/// Commits every local transaction.
struct CommitAll;

impl TransactionListener for CommitAll {
    fn execute(&self, _msg: &Message, _arg: &str) -> LocalTransactionState {
        LocalTransactionState::Commit
    }

    fn check(&self, _msg: &MessageExt) -> LocalTransactionState {
        LocalTransactionState::Commit
    }
}

async fn send_transactions(producer: &TransactionProducer, topic: &str) -> Result<Row, String> {
    let mut row = Row::default();
    for i in 0..PER_MODE {
        let t = Instant::now();
        let r = producer
            .send_in_transaction(message(topic, "transaction", i), "quickstart")
            .await
            .map_err(|e| format!("transaction send failed: {e}"))?;
        row.latencies.push(t.elapsed());
        if r.local_state == LocalTransactionState::Commit {
            row.acked += 1;
        }
        row.expected
            .insert(r.send.msg_id, format!("transaction message {i}"));
        row.sent += 1;
    }
    Ok(row)
}

fn message(topic: &str, mode: &str, i: usize) -> Message {
    Message::new(topic, format!("{mode} message {i}")).with_tags(mode)
}

async fn send_mode(producer: &Producer, topic: &str, mode: &'static str) -> Result<Row, String> {
    let mut row = Row::default();
    let fail = |e: mq_producer::ProducerError| format!("{mode} send failed: {e}");
    match mode {
        "sync" | "ordered" => {
            for i in 0..PER_MODE {
                let m = message(topic, mode, i);
                let body = format!("{mode} message {i}");
                let t = Instant::now();
                let r = if mode == "ordered" {
                    let key = SelectArg::from(format!("key-{}", i % 4));
                    producer.send_with_selector(m, &HashSelector, &key).await
                } else {
                    producer.send(m).await
                }
                .map_err(|e| fail(e.into()))?;
                row.latencies.push(t.elapsed());
                row.expected.insert(r.msg_id, body);
                row.acked += 1;
                row.sent += 1;
            }
        }
        "async" => {
            let futures: Vec<_> = (0..PER_MODE)
                .map(|i| {
                    let t = Instant::now();
                    let f = producer.send_async(message(topic, mode, i));
                    async move { (i, f.await, t.elapsed()) }
                })
                .collect();
            let mut tasks = tokio::task::JoinSet::new();
            for f in futures {
                tasks.spawn(f);
            }
            while let Some(done) = tasks.join_next().await {
                let (i, r, latency) = done.map_err(|e| e.to_string())?;
                let r = r.map_err(|e| fail(e.into()))?;
                row.latencies.push(latency);
                row.expected.insert(r.msg_id, format!("{mode} message {i}"));
                row.acked += 1;
                row.sent += 1;
            }
        }
        "callback" => {
            let (tx, mut rx) = mpsc::unbounded_channel();
            for i in 0..PER_MODE {
                let (tx, t) = (tx.clone(), Instant::now());
                producer
                    .send_with_callback(message(topic, mode, i), move |r| {
                        let _ = tx.send((i, r, t.elapsed()));
                    })
                    .map_err(|e| fail(e.into()))?;
                row.sent += 1;
            }
            drop(tx);
            while let Some((i, r, latency)) = rx.recv().await {
                let r = r.map_err(|e| fail(e.into()))?;
                row.latencies.push(latency);
                row.expected.insert(r.msg_id, format!("{mode} message {i}"));
                row.acked += 1;
            }
        }
        "oneway" => {
            for i in 0..PER_MODE {
                let mut m = message(topic, mode, i);
                let id = format!("ONEWAY{:026}", i);
                m.set_property(
                    mq_client_api::message::property::UNIQ_CLIENT_MESSAGE_ID_KEYIDX,
                    id.clone(),
                );
                producer.send_oneway(m).await.map_err(|e| fail(e.into()))?;
                row.expected.insert(id, format!("{mode} message {i}"));
                row.sent += 1;
            }
        }
        _ => {
            for chunk in 0..PER_MODE / BATCH {
                let msgs: Vec<Message> = (0..BATCH)
                    .map(|j| message(topic, mode, chunk * BATCH + j))
                    .collect();
                let t = Instant::now();
                let r = producer
                    .send_batch(msgs)
                    .await
                    .map_err(|e| fail(e.into()))?;
                row.latencies.push(t.elapsed());
                for (j, id) in r.msg_id.split(',').enumerate() {
                    row.expected.insert(
                        id.to_owned(),
                        format!("{mode} message {}", chunk * BATCH + j),
                    );
                }
                row.acked += BATCH;
                row.sent += BATCH;
            }
        }
    }
    Ok(row)
}

async fn wait_for(seen: &Seen, expected: usize, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let changed = seen.changed.notified();
        if seen.messages.lock().len() >= expected {
            return;
        }
        if tokio::time::timeout_at(deadline, changed).await.is_err() {
            return;
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> String {
    if sorted.is_empty() {
        return "-".into();
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    format!("{:.2} ms", sorted[i].as_secs_f64() * 1000.0)
}
