//! Test support, outside the Layers (it may use every crate): an in-process cluster of a real name
//! server and real brokers on ephemeral loopback ports, per-broker fault injection, and tracing
//! set-up for tests.
//!
//! Integration tests that need several crates together live in this crate's `tests/`.
//!
//! # Layout
//! * [`cluster`] — [`Cluster`] and [`ClusterBuilder`].
//! * [`fault`] — [`FaultInjector`] and [`Fault`].
//!
//! # Example
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use mq_test_support::{Cluster, Fault};
//!
//! let cluster = Cluster::builder().brokers(2).start().await?;
//! cluster.faults(0).inject(310, Fault::Respond(2)); // SEND_MESSAGE_V2 → SYSTEM_BUSY
//! cluster.shutdown().await;
//! # Ok(()) }
//! ```

pub mod cluster;
pub mod fault;

pub use cluster::{Cluster, ClusterBuilder};
pub use fault::{Fault, FaultInjector};

/// Runs `body` on a current-thread runtime of its own, with the cluster of `builder` on
/// another runtime (one worker thread), so that the body's runtime holds only the client's
/// tasks: [`tokio::runtime::RuntimeMetrics::num_alive_tasks`] then counts what the client
/// left behind. `body` gets the name server address.
///
/// # Panics
/// When a runtime cannot be built or the cluster does not start.
#[allow(clippy::expect_used, reason = "test set-up: a failure ends the test")]
pub fn with_cluster_apart<F, Fut>(builder: ClusterBuilder, body: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = ()>,
{
    let servers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("server runtime");
    let cluster = servers.block_on(builder.start()).expect("cluster start");
    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");
    client.block_on(body(cluster.namesrv_addr()));
    drop(client);
    servers.block_on(cluster.shutdown());
}

/// Tasks alive on the current runtime (see [`with_cluster_apart`]).
///
/// # Panics
/// Outside a Tokio runtime.
pub fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// Lets the current runtime run its other tasks until at most `n` are alive, for up to
/// `within`; returns how many are alive then. Tasks that were just told to stop end once they
/// are polled: this polls them, it does not guess a time.
pub async fn tasks_settle_to(n: usize, within: std::time::Duration) -> usize {
    let settle = async {
        while alive_tasks() > n {
            tokio::task::yield_now().await;
        }
    };
    let _ = tokio::time::timeout(within, settle).await;
    alive_tasks()
}

/// Installs a test-writer tracing subscriber filtered by `RUST_LOG` (once per process).
pub fn trace_init() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// The README's Rust snippets, compiled as doc tests so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeSnippets;
