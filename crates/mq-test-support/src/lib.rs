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

/// Installs a test-writer tracing subscriber filtered by `RUST_LOG` (once per process).
pub fn trace_init() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}
