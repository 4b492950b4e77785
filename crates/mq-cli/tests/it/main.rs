//! Tests that run the `mq` binary: `serve` comes up on loopback, survives SIGKILL without
//! losing SYNC-acknowledged messages, and bad flags give a usage error.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    unreachable_pub
)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use mq_client_api::header::PullMessageRequestHeader;
use mq_client_api::message::Message;
use mq_client_api::{PullStatus, SendRequest, SendStatus};
use mq_test_support::{plain_api, send_request};

const T: Duration = Duration::from_secs(20);

/// Kills the child when dropped, so a failing test leaves no server behind.
struct Server {
    child: Child,
    broker: String,
    namesrv: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(store: &Path) -> Server {
    serve_with(store, &[])
}

fn serve_with(store: &Path, extra: &[&str]) -> Server {
    let mut args: Vec<&str> = vec![
        "serve",
        "--namesrv-port",
        "0",
        "--broker-port",
        "0",
        "--flush",
        "sync",
        "--segment-size",
        "65536",
        "--store-dir",
    ];
    let store = store.to_str().unwrap();
    args.push(store);
    args.extend_from_slice(extra);
    let (child, lines) = spawn_until(&args, "broker listening on ");
    Server {
        child,
        broker: address(&lines, "broker listening on "),
        namesrv: address(&lines, "name server listening on "),
    }
}

/// A certificate for 127.0.0.1 written into `dir`: its path, and the flags with which `mq
/// serve` enforces TLS with it.
fn enforcing_tls(dir: &Path) -> (String, Vec<String>) {
    let (cert, key) = mq_test_support::TestCert::loopback().write_to(dir);
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let flags = [
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--tls-mode",
        "enforcing",
    ]
    .map(str::to_owned)
    .to_vec();
    (cert, flags)
}

/// `mq serve` with a gRPC port too, and `extra` arguments; the server and the gRPC address.
fn serve_grpc(store: &Path, extra: &[&str]) -> (Server, String) {
    let store = store.to_str().unwrap();
    let mut args = vec![
        "serve",
        "--namesrv-port",
        "0",
        "--broker-port",
        "0",
        "--grpc-port",
        "0",
        "--store-dir",
        store,
    ];
    args.extend_from_slice(extra);
    let (child, lines) = spawn_until(&args, "gRPC proxy listening on ");
    let server = Server {
        child,
        broker: address(&lines, "broker listening on "),
        namesrv: address(&lines, "name server listening on "),
    };
    (server, address(&lines, "gRPC proxy listening on "))
}

/// Runs `mq args`, reads its stdout up to the line that starts with `last` and returns the
/// lines read so far; the rest of its output is drained in the background.
fn spawn_until(args: &[&str], last: &str) -> (Child, Vec<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mq"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut read = Vec::new();
    loop {
        let line = lines.next().expect("mq printed its addresses").unwrap();
        let done = line.starts_with(last);
        read.push(line);
        if done {
            break;
        }
    }
    // Keep draining stdout so the server never writes into a closed pipe.
    std::thread::spawn(move || lines.for_each(drop));
    (child, read)
}

/// The address on the line that starts with `prefix`.
fn address(lines: &[String], prefix: &str) -> String {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(prefix))
        .expect("the address line")
        .to_owned()
}

fn send_req(i: usize) -> SendRequest {
    let m = Message::new("Durable", Bytes::from(format!("m-{i}")));
    send_request("Durable", 0, &m)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_acknowledged_messages_survive_sigkill() {
    let store = tempfile::tempdir().unwrap();
    let n = 300;
    {
        let mut server = serve(store.path());
        let api = plain_api();
        for i in 0..n {
            let r = api.send(&server.broker, send_req(i), T).await.unwrap();
            assert_eq!(r.status, SendStatus::SendOk);
        }
        // SIGKILL: no shutdown path runs.
        server.child.kill().unwrap();
        server.child.wait().unwrap();
    }
    let server = serve(store.path());
    let expected: Vec<Bytes> = (0..n).map(|i| Bytes::from(format!("m-{i}"))).collect();
    assert_eq!(drain_durable(&server).await, expected);
}

/// Twenty SIGKILLs, each while eight async producers have sends in flight (the kill comes once
/// a round has 100 acknowledgements, without waiting for the rest): after restarting on the
/// same store each time, every SYNC-acknowledged message is there, exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_acknowledged_messages_survive_twenty_sigkills_under_load() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let store = tempfile::tempdir().unwrap();
    let acked = Arc::new(parking_lot::Mutex::new(Vec::<Bytes>::new()));
    for round in 0..20 {
        let mut server = serve(store.path());
        // A client instance of its own per round: each server has new ports.
        let client = mq_client_instance::ClientConfig::new(&server.namesrv)
            .with_instance_name(format!("kill-{round}"));
        let producer = mq_producer::Producer::new(
            mq_producer::ProducerConfig::new("pg", &server.namesrv)
                .with_client(client)
                .with_send_timeout(T),
        );
        producer.start().await.unwrap();
        let count = Arc::new(AtomicUsize::new(0));
        let enough = Arc::new(tokio::sync::Notify::new());
        let mut senders = tokio::task::JoinSet::new();
        for task in 0..8 {
            let (producer, acked, count, enough) = (
                producer.clone(),
                Arc::clone(&acked),
                Arc::clone(&count),
                Arc::clone(&enough),
            );
            senders.spawn(async move {
                for n in 0.. {
                    let body = Bytes::from(format!("r{round}-t{task}-{n}"));
                    // Ends at the kill: the connection closes under the send.
                    let Ok(r) = producer
                        .send_async(Message::new("Durable", body.clone()))
                        .await
                    else {
                        return;
                    };
                    assert_eq!(r.status, SendStatus::SendOk);
                    acked.lock().push(body);
                    if count.fetch_add(1, Ordering::SeqCst) + 1 == 100 {
                        enough.notify_one();
                    }
                }
            });
        }
        tokio::time::timeout(T, enough.notified())
            .await
            .expect("100 acknowledgements in time");
        server.child.kill().unwrap();
        server.child.wait().unwrap();
        while let Some(r) = senders.join_next().await {
            r.unwrap();
        }
        producer.shutdown().await;
    }
    let server = serve(store.path());
    let mut stored = Vec::new();
    for queue in 0..8 {
        stored.extend(drain(&server, "Durable", queue).await);
    }
    let mut unique = stored.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), stored.len(), "a message stored twice");
    let stored: std::collections::HashSet<Bytes> = stored.into_iter().collect();
    let acked = acked.lock();
    assert!(acked.len() >= 2000);
    let lost: Vec<&Bytes> = acked.iter().filter(|b| !stored.contains(*b)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged messages lost, e.g. {:?}",
        lost.len(),
        lost.first()
    );
}

/// Every message of the Durable topic's queue 0, in queue order.
async fn drain_durable(server: &Server) -> Vec<Bytes> {
    drain(server, "Durable", 0).await
}

/// Every message of a queue, in queue order (none when the queue does not exist).
async fn drain(server: &Server, topic: &str, queue_id: i32) -> Vec<Bytes> {
    let api = plain_api();
    let mut bodies = Vec::new();
    let mut offset = 0;
    loop {
        let h = PullMessageRequestHeader {
            consumer_group: "cg".into(),
            topic: topic.into(),
            queue_id,
            queue_offset: offset,
            max_msg_nums: 64,
            subscription: Some("*".into()),
            ..Default::default()
        };
        let Ok(r) = api.pull(&server.broker, &h, T).await else {
            break;
        };
        if r.status != PullStatus::Found {
            break;
        }
        offset = r.next_begin_offset;
        bodies.extend(r.messages.into_iter().map(|m| m.message.body));
    }
    bodies
}

#[test]
fn bad_flags_give_a_usage_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_mq"))
        .args(["serve", "--flush", "sometimes"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("invalid value 'sometimes'"), "{err}");
    assert!(!err.contains("panicked"));
    // An access key without its secret key is refused before anything is sent.
    let out = Command::new(env!("CARGO_BIN_EXE_mq"))
        .args(["send", "--topic", "T", "--body", "b", "--access-key", "ak"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("--secret-key"), "{err}");
}

#[test]
fn an_occupied_port_is_one_clear_line() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_mq"))
        .args(["serve", "--namesrv-port", &port, "--broker-port", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("mq: name server cannot listen"), "{err}");
}

/// Runs `mq quickstart` with `extra` flags and checks its table: every mode sent, acknowledged
/// and consumed 200 messages.
fn check_quickstart(extra: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_mq"))
        .arg("quickstart")
        .args(extra)
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for mode in [
        "sync",
        "async",
        "callback",
        "oneway",
        "batch",
        "ordered",
        "transaction",
    ] {
        let row = stdout
            .lines()
            .find(|l| l.starts_with(mode))
            .unwrap_or_else(|| panic!("no {mode} row in {stdout}"));
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cols[1], "200", "{row}");
        assert_eq!(cols[3], "200", "{row}");
    }
    assert!(
        stdout.contains("all 1400 messages consumed once"),
        "{stdout}"
    );
}

#[test]
fn quickstart_verifies_every_mode_and_exits_zero() {
    check_quickstart(&[]);
}

#[test]
fn quickstart_runs_against_a_running_cluster_twice() {
    let store = tempfile::tempdir().unwrap();
    let server = serve(store.path());
    // Each run uses a topic and groups of its own: the second does not see the first's.
    check_quickstart(&["--namesrv", &server.namesrv]);
    check_quickstart(&["--namesrv", &server.namesrv]);
}

fn mq(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mq"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// `mq topic create` of `topic` with `queues` queues per broker and `extra` arguments, checked;
/// what it printed.
fn create_topic(ns: &str, topic: &str, queues: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "topic",
        "create",
        "--namesrv",
        ns,
        "--topic",
        topic,
        "--queues",
        queues,
    ];
    args.extend_from_slice(extra);
    let (ok, out, err) = mq(&args);
    assert!(ok, "{err}");
    assert!(
        out.contains(&format!("created {topic} with {queues} queues")),
        "{out}"
    );
    out
}

/// The bodies `mq consume` prints for `count` messages of `topic` from the first offset,
/// sorted, and its whole output.
fn consume_bodies(ns: &str, topic: &str, count: usize) -> (Vec<String>, String) {
    let count = count.to_string();
    let (ok, out, err) = mq(&[
        "consume",
        "--namesrv",
        ns,
        "--topic",
        topic,
        "--from-first",
        "--count",
        &count,
        "--wait-secs",
        "10",
    ]);
    assert!(ok, "{err}");
    let mut bodies: Vec<String> = out
        .lines()
        .filter_map(|l| l.split(" body ").nth(1))
        .map(str::to_owned)
        .collect();
    bodies.sort_unstable();
    (bodies, out)
}

#[test]
fn send_consume_route_topic_and_cluster_against_mq_serve() {
    let store = tempfile::tempdir().unwrap();
    let server = serve(store.path());
    let ns = server.namesrv.as_str();
    create_topic(ns, "CliTopic", "2", &[]);
    // A topic for RocketMQ 5's typed sends: its message type reaches the broker's config,
    // which Apache RocketMQ's proxy checks sends against.
    let out = create_topic(ns, "CliFifo", "4", &["--message-type", "fifo"]);
    assert!(out.contains("(+message.type=FIFO)"), "{out}");
    let config = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let api = plain_api();
        let header = mq_client_api::header::GetTopicConfigRequestHeader {
            topic: "CliFifo".into(),
        };
        let request = api.request(mq_client_api::RequestCode::GET_TOPIC_CONFIG, &header);
        api.remoting()
            .invoke(&server.broker, request, Duration::from_secs(5))
            .await
            .unwrap()
    });
    let tc: serde_json::Value = serde_json::from_slice(&config.body).unwrap();
    assert_eq!(tc["attributes"]["message.type"], "FIFO", "{tc}");
    let send = |body: &str, extra: &[&str]| {
        let mut args = vec![
            "send",
            "--namesrv",
            ns,
            "--topic",
            "CliTopic",
            "--body",
            body,
        ];
        args.extend_from_slice(extra);
        let (ok, out, err) = mq(&args);
        assert!(ok, "{err}");
        out
    };
    let out = send("hello", &["--tag", "t1", "--count", "3"]);
    assert_eq!(
        out.lines().filter(|l| l.starts_with("SEND_OK")).count(),
        3,
        "{out}"
    );
    let (bodies, out) = consume_bodies(ns, "CliTopic", 3);
    assert_eq!(bodies, vec!["hello 0", "hello 1", "hello 2"], "{out}");
    // Signed requests (ACL credentials) go through as well.
    let signed = send(
        "signed",
        &["--access-key", "RocketMQ", "--secret-key", "12345678"],
    );
    assert!(signed.starts_with("SEND_OK"), "{signed}");
    assert!(out.lines().all(|l| l.contains("tags t1")));
    // A timer message, recalled by the handle its send printed.
    let timer = send("later", &["--deliver-in", "1h"]);
    let field = |name: &str| {
        let mut words = timer.split_whitespace();
        words.find(|w| *w == name);
        words.next().unwrap_or_default().to_owned()
    };
    let (id, handle) = (field("msgId"), field("recallHandle"));
    assert!(!handle.is_empty(), "{timer}");
    let recall = |handle: &str| {
        mq(&[
            "recall",
            "--namesrv",
            ns,
            "--topic",
            "CliTopic",
            "--handle",
            handle,
        ])
    };
    let (ok, out, err) = recall(&handle);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), format!("recalled {id}"));
    let (ok, _, err) = recall("garbage");
    assert!(!ok);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("recall handle is invalid"), "{err}");
    let (ok, out, _) = mq(&["route", "--namesrv", ns, "--topic", "CliTopic"]);
    assert!(ok);
    let route: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(route["queueDatas"][0]["writeQueueNums"], 2);
    let (ok, out, _) = mq(&["topic", "list", "--namesrv", ns]);
    assert!(ok && out.lines().any(|l| l == "CliTopic"), "{out}");
    let (ok, out, _) = mq(&["cluster", "--namesrv", ns]);
    assert!(ok && out.contains(&server.broker), "{out}");
    // A FIFO consumer group, listed, then deleted.
    let (ok, out, err) = mq(&[
        "group",
        "create",
        "--namesrv",
        ns,
        "--group",
        "CliFifo",
        "--fifo",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("group CliFifo (FIFO, 16 deliveries)"), "{out}");
    let listed = || {
        let (ok, out, err) = mq(&["group", "list", "--namesrv", ns]);
        assert!(ok, "{err}");
        out.lines()
            .filter(|l| l.split_whitespace().nth(1) == Some("CliFifo"))
            .map(|l| l.split_whitespace().skip(2).collect::<Vec<_>>().join(" "))
            .collect::<Vec<_>>()
    };
    assert_eq!(listed(), ["true 16"]);
    let (ok, _, err) = mq(&["group", "delete", "--namesrv", ns, "--group", "CliFifo"]);
    assert!(ok, "{err}");
    assert!(listed().is_empty());
    let (ok, _, err) = mq(&["group", "create", "--namesrv", ns, "--group", "bad group!"]);
    assert!(!ok);
    assert_eq!(err.lines().count(), 1, "{err}");
    let (ok, _, err) = mq(&["route", "--namesrv", ns, "--topic", "Missing"]);
    assert!(!ok);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("TOPIC_NOT_EXIST"), "{err}");
}

#[test]
fn an_unreachable_name_server_is_one_clear_line() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let (ok, _, err) = mq(&["cluster", "--namesrv", &dead]);
    assert!(!ok);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("mq: could not connect"), "{err}");
}

/// A bench whose first send fails says why, in one line, and exits non-zero.
#[test]
fn a_bench_whose_warm_up_send_fails_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve_with(dir.path(), &["--auto-create-topic", "false"]);
    let (ok, _, err) = mq(&[
        "bench",
        "produce",
        "--namesrv",
        &server.namesrv,
        "--topic",
        "NoSuchTopic",
        "--count",
        "1",
        "--json",
    ]);
    assert!(!ok);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("mq: warm-up send failed: no route info of this topic NoSuchTopic"),
        "{err}"
    );
}

#[test]
fn bench_json_reports_sane_numbers_and_a_plot() {
    let dir = tempfile::tempdir().unwrap();
    let plot = dir.path().join("bench.svg");
    let (ok, out, err) = mq(&[
        "bench",
        "produce",
        "--count",
        "2000",
        "--tasks",
        "8",
        "--size",
        "256",
        "--mode",
        "async",
        "--json",
        "--baseline",
        "echo",
        "--plot",
        plot.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["ok"], 2000);
    assert_eq!(v["send_failed"], 0);
    assert!(v["tps"].as_f64().unwrap() > 0.0);
    let (p50, p99) = (v["p50_ms"].as_f64().unwrap(), v["p99_ms"].as_f64().unwrap());
    assert!(p50 > 0.0 && p50 <= p99, "{v}");
    assert!(v["ratio_to_echo"].as_f64().unwrap() > 0.0);
    assert_eq!(v["echo"], "in-process", "{v}");
    // The echo's CPU, both its ends in this process (10 ms ticks: a short run may read 0).
    assert_eq!(v["echo_cpu_scope"], "client+server", "{v}");
    assert!(v["echo_cpu_us_per_round_trip"].as_f64().is_some(), "{v}");
    assert!(v["echo_server_cpu_us_per_round_trip"].is_null(), "{v}");
    // The process's memory, read at the end (Linux).
    #[cfg(target_os = "linux")]
    assert!(v["rss_mb"].as_f64().is_some_and(|mb| mb > 0.0), "{v}");
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("polyline"));
    // Requests are counted only where auto-batching decides how many messages each holds.
    assert!(v["requests"].is_null(), "{v}");
    let (ok, out, err) = mq(&[
        "bench",
        "produce",
        "--count",
        "2000",
        "--tasks",
        "8",
        "--size",
        "100",
        "--mode",
        "auto-batch",
        "--json",
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["ok"], 2000, "{v}");
    let requests = v["requests"].as_u64().unwrap();
    assert!(
        (1..2000).contains(&requests),
        "2000 messages in {requests} requests: {v}"
    );
    let each = v["msgs_per_request"].as_f64().unwrap();
    assert!(
        (each * requests as f64 - 2000.0).abs() < requests as f64 * 0.1,
        "{v}"
    );
    // One send at a time per task (sync, window 1, each send awaited): every send counted once,
    // with the writes coalesced (the default) and not.
    for writes in [&[][..], &["--coalesce-writes", "false"][..]] {
        let mut args = vec![
            "bench", "produce", "--count", "300", "--tasks", "3", "--mode", "sync", "--window",
            "1", "--json",
        ];
        args.extend(writes);
        let (ok, out, err) = mq(&args);
        assert!(ok, "{writes:?}: {err}");
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(
            (v["ok"].as_u64(), v["send_failed"].as_u64()),
            (Some(300), Some(0)),
            "{writes:?}: {v}"
        );
    }
    // The echo served by a process of its own: named and measured. (The child shares the
    // bench's stderr, so `output()` returns only once the child has gone too.)
    let (ok, out, err) = mq(&[
        "bench",
        "produce",
        "--count",
        "300",
        "--tasks",
        "1",
        "--mode",
        "sync",
        "--json",
        "--baseline",
        "echo-process",
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["echo"], "separate-process", "{v}");
    assert!(v["echo_tps"].as_f64().unwrap() > 0.0, "{v}");
    assert!(v["ratio_to_echo"].as_f64().unwrap() > 0.0, "{v}");
    // Each end's CPU: this process's, and the echo process's.
    assert_eq!(v["echo_cpu_scope"], "client", "{v}");
    assert!(v["echo_cpu_us_per_round_trip"].as_f64().is_some(), "{v}");
    assert!(
        v["echo_server_cpu_us_per_round_trip"].as_f64().is_some(),
        "{v}"
    );
    let (ok, _, err) = mq(&["bench", "produce", "--mode", "sideways"]);
    assert!(!ok && err.contains("invalid value 'sideways'"));
    // Over gRPC, through a proxy started in front of the embedded cluster, one by one and
    // auto-batched: every send counted and answered, and a mode gRPC has no word for is a
    // clear error.
    for (mode, name) in [
        ("async", "produce async grpc"),
        ("auto-batch", "produce autobatch grpc"),
    ] {
        let (ok, out, err) = mq(&[
            "bench",
            "produce",
            "--transport",
            "grpc",
            "--count",
            "500",
            "--tasks",
            "4",
            "--mode",
            mode,
            "--window",
            "4",
            "--json",
        ]);
        assert!(ok, "{err}");
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(v["ok"], 500, "{v}");
        assert_eq!(v["send_failed"], 0, "{v}");
        assert_eq!(v["bench"], name);
    }
    let (ok, _, err) = mq(&[
        "bench",
        "produce",
        "--transport",
        "grpc",
        "--mode",
        "oneway",
    ]);
    assert!(!ok && err.contains("no Oneway mode"), "{err}");
}

/// Sends SIGSTOP or SIGCONT to the server process.
fn signal(server: &Server, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &server.child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig}");
}

/// `kill`, systemd and container runtimes stop a server with SIGTERM: `mq serve` then shuts
/// down as on Ctrl-C, exits with success and removes the temporary store it made — also when
/// the signal comes while it is still starting (here: right after its first line, while the
/// broker opens its store).
#[test]
fn serve_stops_cleanly_on_sigterm_and_removes_its_temporary_store() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mq"))
        .args(["serve", "--namesrv-port", "0", "--broker-port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Lines as they come, until the process closes its output; each wait bounded by `T`.
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let first = rx.recv_timeout(T).expect("a first line within T");
    assert!(first.starts_with("name server listening on "), "{first}");
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    // The rest of what it prints, to its end.
    let mut rest = Vec::new();
    loop {
        match rx.recv_timeout(T) {
            Ok(line) => rest.push(line),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                panic!("mq serve still runs {T:?} after SIGTERM; printed {rest:?}");
            }
        }
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}; printed {rest:?}");
    assert!(rest.iter().any(|l| l == "shutting down"), "{rest:?}");
    let store = PathBuf::from(address(&rest, "store at "));
    assert!(!store.exists(), "{} is left behind", store.display());
}

#[test]
fn send_and_consume_against_a_stopped_server_end_by_their_timeout_naming_the_name_server() {
    let store = tempfile::tempdir().unwrap();
    let server = serve(store.path());
    let ns = server.namesrv.clone();
    // The process is alive and its sockets accept, but nothing answers.
    signal(&server, "-STOP");
    // Each command fails alone, in one line naming the name server, by its 500 ms timeout
    // plus the process's start and exit. Before, a send's route lookup and TBW102 fallback
    // waited 3 s each whatever its deadline, and consume reported zero messages.
    for command in [
        &["send", "--topic", "Stopped", "--body", "x"][..],
        &["consume", "--topic", "Stopped"][..],
    ] {
        let started = std::time::Instant::now();
        let (ok, _, err) = mq(&[command, &["--namesrv", &ns, "--timeout", "500ms"]].concat());
        let took = started.elapsed();
        assert!(!ok, "{command:?}");
        assert_eq!(err.lines().count(), 1, "{command:?}: {err}");
        assert!(
            err.contains(&format!("name server {ns} did not answer")),
            "{command:?}: {err}"
        );
        assert!(took < Duration::from_secs(3), "{command:?} took {took:?}");
    }
    signal(&server, "-CONT");
}

/// `mq namesrv` and two `mq broker`s, each its own process, make one cluster: both brokers
/// are listed, a topic is created on both, messages sent to it spread over both and all come
/// back, and `mq bench consume` feeds and drains a topic of both.
#[test]
fn separate_name_server_and_broker_processes_make_a_cluster() {
    let (namesrv, lines) = spawn_until(&["namesrv", "--port", "0"], "name server listening on ");
    let namesrv = Server {
        child: namesrv,
        broker: String::new(),
        namesrv: address(&lines, "name server listening on "),
    };
    let ns = namesrv.namesrv.as_str();
    let stores = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let brokers: Vec<Server> = ["broker-a", "broker-b"]
        .iter()
        .zip(&stores)
        .map(|(name, store)| {
            let (child, lines) = spawn_until(
                &[
                    "broker",
                    "--namesrv",
                    ns,
                    "--name",
                    name,
                    "--port",
                    "0",
                    "--store-dir",
                    store.path().to_str().unwrap(),
                ],
                "broker listening on ",
            );
            Server {
                child,
                broker: address(&lines, "broker listening on "),
                namesrv: ns.to_owned(),
            }
        })
        .collect();
    let (ok, out, err) = mq(&["cluster", "--namesrv", ns]);
    assert!(ok, "{err}");
    for b in &brokers {
        assert!(out.contains(&b.broker), "{out}");
    }
    create_topic(ns, "Spread", "2", &[]);
    let (ok, out, _) = mq(&["route", "--namesrv", ns, "--topic", "Spread"]);
    assert!(ok);
    let route: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(route["brokerDatas"].as_array().unwrap().len(), 2, "{out}");
    let (ok, out, err) = mq(&[
        "send",
        "--namesrv",
        ns,
        "--topic",
        "Spread",
        "--body",
        "m",
        "--count",
        "8",
    ]);
    assert!(ok, "{err}");
    for name in ["broker-a", "broker-b"] {
        assert!(out.contains(name), "no send went to {name}: {out}");
    }
    let (bodies, out) = consume_bodies(ns, "Spread", 8);
    let expected: Vec<String> = (0..8).map(|i| format!("m {i}")).collect();
    assert_eq!(bodies, expected, "{out}");
    // `mq bench consume` feeds a topic of both brokers and drains it again.
    create_topic(ns, "BenchSpread", "2", &[]);
    let report = bench_consume(ns, "BenchSpread", &["--tasks", "4", "--size", "100"]);
    assert_eq!(report["ok"], 2000, "{report}");
    assert_eq!(report["send_failed"], 0, "{report}");
    // Again, from the messages already there (a group of its own reads them from the first
    // offset), with the consumer's CPU per message.
    let report = bench_consume(ns, "BenchSpread", &["--preloaded"]);
    assert_eq!(report["ok"], 2000, "{report}");
    assert!(report["cpu_us_per_msg"].as_f64().is_some(), "{report}");
    // And with an orderly listener.
    let report = bench_consume(ns, "BenchSpread", &["--preloaded", "--orderly"]);
    assert_eq!(report["bench"], "consume orderly", "{report}");
    assert_eq!(report["ok"], 2000, "{report}");
}

/// The JSON report of `mq bench consume` of 2000 messages of `topic`, with `extra` flags.
fn bench_consume(ns: &str, topic: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "bench",
        "consume",
        "--namesrv",
        ns,
        "--topic",
        topic,
        "--count",
        "2000",
        "--json",
    ];
    args.extend_from_slice(extra);
    let (ok, out, err) = mq(&args);
    assert!(ok, "{err}");
    serde_json::from_str(out.trim()).unwrap()
}

/// `mq send` of one message with `extra` flags and a 3 s deadline.
fn send_one(ns: &str, topic: &str, body: &str, extra: &[&str]) -> (bool, String, String) {
    let mut args = vec![
        "send",
        "--namesrv",
        ns,
        "--topic",
        topic,
        "--body",
        body,
        "--timeout",
        "3s",
    ];
    args.extend_from_slice(extra);
    mq(&args)
}

#[test]
fn serve_enforcing_tls_takes_tls_clients_and_refuses_plain_ones() {
    let store = tempfile::tempdir().unwrap();
    let certs = tempfile::tempdir().unwrap();
    let (cert, enforcing) = enforcing_tls(certs.path());
    let cert = cert.as_str();
    let server = serve_with(
        store.path(),
        &enforcing.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let ns = server.namesrv.as_str();
    let send = |extra: &[&str]| send_one(ns, "TlsTopic", "secret", extra);
    let (ok, out, err) = send(&["--tls-ca", cert]);
    assert!(ok && out.starts_with("SEND_OK"), "{out}{err}");
    let (ok, out, err) = send(&["--tls-insecure"]);
    assert!(ok && out.starts_with("SEND_OK"), "{out}{err}");
    let (ok, _, err) = send(&[]);
    assert!(!ok, "a plain client was served");
    assert_eq!(err.lines().count(), 1, "{err}");
    // A client that trusts another root hears that TLS failed.
    let stranger = tempfile::tempdir().unwrap();
    let (other, _) = mq_test_support::TestCert::loopback().write_to(stranger.path());
    let (ok, _, err) = send(&["--tls-ca", other.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("TLS"), "{err}");
    let (ok, _, err) = mq(&["serve", "--tls-cert", cert]);
    assert!(!ok && err.contains("--tls-key"), "{err}");
}

#[test]
fn serve_with_an_acl_file_takes_signed_sends_and_refuses_the_rest() {
    let store = tempfile::tempdir().unwrap();
    let acl = store.path().join("plain_acl.yml");
    std::fs::write(
        &acl,
        "accounts:\n  - accessKey: RocketMQ\n    secretKey: 12345678\n    defaultTopicPerm: PUB|SUB\n    defaultGroupPerm: SUB\n",
    )
    .unwrap();
    let server = serve_with(
        &store.path().join("store"),
        &["--acl", acl.to_str().unwrap()],
    );
    let ns = server.namesrv.as_str();
    let send = |extra: &[&str]| send_one(ns, "AclTopic", "x", extra);
    let (ok, out, err) = send(&["--access-key", "RocketMQ", "--secret-key", "12345678"]);
    assert!(ok && out.starts_with("SEND_OK"), "{out}{err}");
    let (ok, _, err) = send(&[]);
    assert!(!ok);
    assert!(
        err.contains("NO_PERMISSION") && err.contains("No accessKey"),
        "{err}"
    );
    let (ok, _, err) = send(&["--access-key", "RocketMQ", "--secret-key", "87654321"]);
    assert!(!ok && err.contains("Check signature failed"), "{err}");
    let (ok, _, err) = mq(&["serve", "--acl", "/nonexistent/plain_acl.yml"]);
    assert!(!ok && err.contains("plain_acl.yml"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_a_grpc_port_answers_rocketmq_5_clients() {
    let store = tempfile::tempdir().unwrap();
    let (server, grpc) = serve_grpc(store.path(), &[]);
    let mut client = mq_grpc::v2::messaging_service_client::MessagingServiceClient::connect(
        format!("http://{grpc}"),
    )
    .await
    .unwrap();
    let sent = client
        .send_message(mq_grpc::v2::SendMessageRequest {
            messages: vec![mq_grpc::v2::Message {
                topic: Some(mq_grpc::v2::Resource {
                    resource_namespace: String::new(),
                    name: "CliGrpc".into(),
                }),
                body: b"over grpc".to_vec().into(),
                ..Default::default()
            }],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        sent.status.map(|s| s.code),
        Some(mq_grpc::v2::Code::Ok as i32)
    );
    let (bodies, out) = consume_bodies(&server.namesrv, "CliGrpc", 1);
    assert_eq!(bodies, vec!["over grpc"], "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_acl_and_a_grpc_port_checks_grpc_calls_against_the_same_accounts() {
    use mq_client_api::acl::{self, Credentials};
    use mq_grpc::v2;
    let store = tempfile::tempdir().unwrap();
    let acl_file = store.path().join("plain_acl.yml");
    std::fs::write(
        &acl_file,
        "accounts:\n  - accessKey: RocketMQ\n    secretKey: 12345678\n    defaultTopicPerm: PUB|SUB\n    defaultGroupPerm: SUB\n",
    )
    .unwrap();
    let (server, grpc) = serve_grpc(
        &store.path().join("store"),
        &["--acl", acl_file.to_str().unwrap()],
    );
    let mut client =
        v2::messaging_service_client::MessagingServiceClient::connect(format!("http://{grpc}"))
            .await
            .unwrap();
    let send = |signer: Option<Credentials>| {
        let mut request = tonic::Request::new(v2::SendMessageRequest {
            messages: vec![v2::Message {
                topic: Some(v2::Resource {
                    resource_namespace: String::new(),
                    name: "CliGrpcAcl".into(),
                }),
                body: b"signed over grpc".to_vec().into(),
                ..Default::default()
            }],
        });
        if let Some(credentials) = signer {
            let now = acl::grpc_date_time(std::time::SystemTime::now());
            let signed = acl::grpc_authorization(&credentials, &now);
            let md = request.metadata_mut();
            md.insert(acl::GRPC_DATE_TIME, now.parse().unwrap());
            md.insert(acl::GRPC_AUTHORIZATION, signed.parse().unwrap());
        }
        request
    };
    // Signed with the file's account: the proxy lets it through and reaches the broker, which
    // checks ACL too, with an account of its own.
    let sent = client
        .send_message(send(Some(Credentials::new("RocketMQ", "12345678"))))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sent.status.map(|s| s.code), Some(v2::Code::Ok as i32));
    for signer in [None, Some(Credentials::new("RocketMQ", "87654321"))] {
        let refused = client
            .send_message(send(signer))
            .await
            .unwrap()
            .into_inner()
            .status
            .unwrap();
        assert_eq!(refused.code, v2::Code::Unauthorized as i32, "{refused:?}");
    }
    // One message was stored: the signed one.
    let (ok, out, err) = mq(&[
        "consume",
        "--namesrv",
        &server.namesrv,
        "--topic",
        "CliGrpcAcl",
        "--from-first",
        "--count",
        "1",
        "--wait-secs",
        "10",
        "--access-key",
        "RocketMQ",
        "--secret-key",
        "12345678",
    ]);
    assert!(ok, "{err}");
    let bodies: Vec<&str> = out
        .lines()
        .filter_map(|l| l.split(" body ").nth(1))
        .collect();
    assert_eq!(bodies, ["signed over grpc"], "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_enforcing_tls_with_a_grpc_port_reaches_its_own_broker_over_tls() {
    let store = tempfile::tempdir().unwrap();
    let certs = tempfile::tempdir().unwrap();
    let (cert, enforcing) = enforcing_tls(certs.path());
    let cert = cert.as_str();
    let (server, grpc) = serve_grpc(
        store.path(),
        &enforcing.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    // A gRPC client over TLS: the proxy takes the call and sends it on to the broker, which
    // takes TLS only.
    let tls = mq_remoting::ClientTls::with_roots_pem_file(Path::new(cert)).unwrap();
    let producer = mq_producer::GrpcProducer::start(
        mq_producer::GrpcProducerConfig::new(&grpc)
            .with_topic("CliGrpcTls")
            .with_tls(tls),
    )
    .await
    .unwrap();
    let sent = producer
        .send(Message::new("CliGrpcTls", &b"tls all the way"[..]))
        .await
        .unwrap();
    assert_eq!(sent.status, SendStatus::SendOk);
    producer.shutdown().await;
    let (ok, out, err) = mq(&[
        "consume",
        "--namesrv",
        &server.namesrv,
        "--topic",
        "CliGrpcTls",
        "--from-first",
        "--count",
        "1",
        "--wait-secs",
        "10",
        "--tls-ca",
        cert,
    ]);
    assert!(ok, "{err}");
    let bodies: Vec<&str> = out
        .lines()
        .filter_map(|l| l.split(" body ").nth(1))
        .collect();
    assert_eq!(bodies, ["tls all the way"], "{out}");
}
