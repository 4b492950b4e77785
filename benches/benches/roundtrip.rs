//! Loopback round trips through mq-remoting next to a raw framed TCP echo with the same
//! payload size and the same number of requests in flight. Our throughput divided by the
//! echo's is the figure to report (both are measured in the same run).

#![allow(missing_docs, clippy::unwrap_used)]

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mq_benches::{
    raw_echo_run, raw_echo_server, remoting_client, remoting_echo_server, remoting_run,
};

const DEPTH: usize = 64;

fn roundtrip(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (echo_addr, server) =
        rt.block_on(async { (raw_echo_server().await, remoting_echo_server().await) });
    let addr = server.local_addr().to_string();
    let client = remoting_client();
    let mut g = c.benchmark_group("roundtrip");
    g.measurement_time(Duration::from_secs(5));
    for size in [128usize, 1024, 64 * 1024] {
        g.throughput(Throughput::Elements(1));
        g.bench_function(BenchmarkId::new("raw_echo", size), |b| {
            b.iter_custom(|iters| rt.block_on(raw_echo_run(echo_addr, size, DEPTH, iters)));
        });
        g.bench_function(BenchmarkId::new("mq_remoting", size), |b| {
            b.iter_custom(|iters| rt.block_on(remoting_run(&client, &addr, size, DEPTH, iters)));
        });
    }
    g.finish();
    rt.block_on(async {
        let _ = client.shutdown(Duration::from_secs(5)).await;
        let _ = server.shutdown(Duration::from_secs(5)).await;
    });
}

criterion_group!(benches, roundtrip);
criterion_main!(benches);
