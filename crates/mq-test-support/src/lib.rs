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
pub mod tls;

pub use cluster::{Cluster, ClusterBuilder};
pub use fault::{Fault, FaultInjector};
pub use tls::TestCert;

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

/// Waits, without sleeping, until `cond` holds: the runtime's other tasks run between checks.
///
/// # Panics
/// When it does not hold within 20 s.
#[allow(
    clippy::expect_used,
    reason = "test helper: a condition that never holds ends the test"
)]
pub async fn eventually(mut cond: impl FnMut() -> bool) {
    tokio::time::timeout(std::time::Duration::from_secs(20), async {
        while !cond() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("condition never held");
}

/// A SEND_MESSAGE request of `msg` to queue `queue_id` of `topic` on `broker-a`, as a Java
/// producer fills it (group `pg`, template TBW102 with 4 queues).
pub fn send_request(
    topic: &str,
    queue_id: i32,
    msg: &mq_client_api::Message,
) -> mq_client_api::SendRequest {
    mq_client_api::SendRequest {
        header: mq_client_api::header::SendMessageRequestHeader {
            producer_group: "pg".into(),
            topic: topic.into(),
            default_topic: "TBW102".into(),
            default_topic_queue_nums: 4,
            queue_id,
            sys_flag: 0,
            born_timestamp: 1,
            flag: msg.flag,
            properties: Some(msg.properties_string()),
            ..Default::default()
        },
        body: msg.body.clone(),
        msg_id: msg.uniq_key().unwrap_or_default().to_owned(),
        broker_name: "broker-a".into(),
        reply: false,
    }
}

/// A PULL_MESSAGE header of `group` reading up to 32 messages of queue `queue_id` of `topic`
/// from `offset`, every tag, without long polling.
pub fn pull_header(
    group: &str,
    topic: &str,
    queue_id: i32,
    offset: i64,
) -> mq_client_api::header::PullMessageRequestHeader {
    mq_client_api::header::PullMessageRequestHeader {
        consumer_group: group.into(),
        topic: topic.into(),
        queue_id,
        queue_offset: offset,
        max_msg_nums: 32,
        sys_flag: 0,
        commit_offset: 0,
        suspend_timeout_millis: 0,
        subscription: Some("*".into()),
        sub_version: 0,
        expression_type: Some("TAG".into()),
        max_msg_bytes: None,
    }
}

/// An UPDATE_AND_CREATE_TOPIC header for `topic` with `queues` read and write queues,
/// read-write, from TBW102.
pub fn create_topic_header(
    topic: &str,
    queues: i32,
) -> mq_client_api::header::CreateTopicRequestHeader {
    mq_client_api::header::CreateTopicRequestHeader {
        topic: topic.into(),
        default_topic: "TBW102".into(),
        read_queue_nums: queues,
        write_queue_nums: queues,
        perm: 6,
        topic_filter_type: "SINGLE_TAG".into(),
        ..Default::default()
    }
}

/// Typed RPCs with no name server, for talking to one server by its address.
pub fn plain_api() -> mq_client_api::ClientApi {
    mq_client_api::ClientApi::new(
        mq_remoting::RemotingClient::new(mq_remoting::ClientConfig::default()),
        mq_client_api::ApiConfig::default(),
    )
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
