//! Producer figures: sync and async 1 KiB sends (64 in flight) through `mq-producer` to the
//! embedded broker, next to the raw framed TCP echo of the same size and depth.

#![allow(missing_docs, clippy::unwrap_used)]

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mq_benches::{raw_echo_run, raw_echo_server, spread};
use mq_client_api::Message;
use mq_client_instance::ClientConfig;
use mq_producer::{Producer, ProducerConfig};
use mq_test_support::Cluster;

const DEPTH: usize = 64;
const SIZE: usize = 1024;

async fn run(producer: &Producer, count: u64, asynchronous: bool) -> Duration {
    spread(count, DEPTH, |n| {
        let p = producer.clone();
        async move {
            for _ in 0..n {
                let msg = Message::new("BenchProducer", vec![b'x'; SIZE]);
                if asynchronous {
                    p.send_async(msg).await.unwrap();
                } else {
                    p.send(msg).await.unwrap();
                }
            }
        }
    })
    .await
}

fn producer(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let echo = rt.block_on(raw_echo_server());
    let cluster = rt
        .block_on(Cluster::builder().segment_size(256 * 1024 * 1024).start())
        .unwrap();
    let p = Producer::new(
        ProducerConfig::new("bench", cluster.namesrv_addr())
            .with_client(ClientConfig::new(cluster.namesrv_addr()).with_instance_name("bench")),
    );
    rt.block_on(p.start()).unwrap();
    let mut g = c.benchmark_group("producer_1KiB");
    g.throughput(Throughput::Elements(1));
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("raw_echo", |b| {
        b.iter_custom(|iters| rt.block_on(raw_echo_run(echo, SIZE, DEPTH, iters)));
    });
    g.bench_function("sync", |b| {
        b.iter_custom(|iters| rt.block_on(run(&p, iters, false)))
    });
    g.bench_function("async", |b| {
        b.iter_custom(|iters| rt.block_on(run(&p, iters, true)))
    });
    g.finish();
    rt.block_on(async {
        p.shutdown().await;
        cluster.shutdown().await;
    });
}

criterion_group!(benches, producer);
criterion_main!(benches);
