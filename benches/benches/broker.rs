//! Broker figures: embedded cluster start to first accepted send, and append throughput of
//! 1 KiB sends (64 in flight) under ASYNC and SYNC flush, next to the raw framed TCP echo of
//! the same size and depth measured in the same run.

#![allow(missing_docs, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mq_benches::{raw_echo_run, raw_echo_server, spread};
use mq_broker::FlushMode;
use mq_client_api::header::SendMessageRequestHeader;
use mq_client_api::{ClientApi, SendRequest};
use mq_test_support::Cluster;

const DEPTH: usize = 64;
const SIZE: usize = 1024;

fn send_req() -> SendRequest {
    SendRequest {
        header: SendMessageRequestHeader {
            producer_group: "bench".into(),
            topic: "Bench".into(),
            default_topic: "TBW102".into(),
            default_topic_queue_nums: 4,
            queue_id: -1,
            born_timestamp: 1,
            properties: Some("WAIT\u{1}true\u{2}".into()),
            ..Default::default()
        },
        body: Bytes::from(vec![b'x'; SIZE]),
        msg_id: String::new(),
        broker_name: "broker-a".into(),
        reply: false,
    }
}

async fn send_many(api: &ClientApi, addr: &str, count: u64) -> Duration {
    spread(count, DEPTH, |n| {
        let (api, addr) = (api.clone(), addr.to_owned());
        async move {
            let req = send_req();
            for _ in 0..n {
                api.send(&addr, req.clone(), Duration::from_secs(30))
                    .await
                    .unwrap();
            }
        }
    })
    .await
}

fn startup(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("cluster");
    g.sample_size(10);
    g.bench_function("start_to_first_send", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let started = Instant::now();
                    let cluster = Cluster::builder().start().await.unwrap();
                    let api = cluster.client_api();
                    api.send(&cluster.broker_addr(0), send_req(), Duration::from_secs(10))
                        .await
                        .unwrap();
                    total += started.elapsed();
                    cluster.shutdown().await;
                }
                total
            })
        });
    });
    g.finish();
}

fn append(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let echo = rt.block_on(raw_echo_server());
    let mut g = c.benchmark_group("append_1KiB");
    g.throughput(Throughput::Elements(1));
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("raw_echo", |b| {
        b.iter_custom(|iters| rt.block_on(raw_echo_run(echo, SIZE, DEPTH, iters)));
    });
    for (name, mode) in [("async", FlushMode::Async), ("sync", FlushMode::Sync)] {
        let cluster = rt
            .block_on(
                Cluster::builder()
                    .flush_mode(mode)
                    .segment_size(256 * 1024 * 1024)
                    .start(),
            )
            .unwrap();
        let api = cluster.client_api();
        let addr = cluster.broker_addr(0);
        g.bench_function(BenchmarkId::new("broker", name), |b| {
            b.iter_custom(|iters| rt.block_on(send_many(&api, &addr, iters)));
        });
        rt.block_on(cluster.shutdown());
    }
    g.finish();
}

criterion_group!(benches, startup, append);
criterion_main!(benches);
