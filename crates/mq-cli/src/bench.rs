//! `mq bench produce|consume`: load against a cluster (the embedded one by default), over
//! remoting or RocketMQ 5's gRPC (`--transport grpc`, through a proxy), the Java benchmark tool's
//! periodic line, an HDR latency histogram, optional JSON, an SVG plot, and a raw framed TCP
//! echo baseline measured in the same run.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use mq_broker::{Broker, BrokerConfig};
use mq_client_api::{Message, MessageExt};
use mq_client_instance::ClientConfig;
use mq_consumer::{
    ConsumeContext, ConsumeFrom, ConsumeOrderlyContext, ConsumeOrderlyStatus, ConsumeStatus,
    ConsumerConfig, PushConsumer,
};
use mq_namesrv::{NameServer, NamesrvConfig};
use mq_producer::{Producer, ProducerConfig};
use parking_lot::Mutex;

/// How the producer sends.
#[derive(Clone, Copy, Debug, Eq, PartialEq, clap::ValueEnum)]
pub(crate) enum Mode {
    /// Await each send.
    Sync,
    /// Send futures (same retry rules).
    Async,
    /// No acknowledgement.
    Oneway,
    /// Batches of 16 messages.
    Batch,
    /// Async sends gathered by the producer's accumulator (linger 5 ms).
    AutoBatch,
}

pub(crate) use crate::options::{Codec, Compress};

/// The protocol `mq bench produce` sends with.
#[derive(Clone, Copy, Debug, Eq, PartialEq, clap::ValueEnum)]
pub(crate) enum Transport {
    /// Remoting, with our producer.
    Remoting,
    /// RocketMQ 5's gRPC, through a proxy (`SendMessage` per send; in auto-batch mode the
    /// producer gathers sends into batches).
    Grpc,
}

/// One send of the load: how many messages it carried, or why it failed.
type SendFn = Arc<
    dyn Fn(bytes::Bytes) -> mq_remoting::BoxFuture<'static, Result<u64, SendFailed>> + Send + Sync,
>;

/// Why a send of the load failed: whether it may have stored its messages, and the error.
struct SendFailed {
    maybe_stored: bool,
    cause: String,
}

impl SendFailed {
    fn producer(e: &mq_producer::ProducerError) -> Self {
        Self {
            maybe_stored: e.possibly_delivered(),
            cause: e.to_string(),
        }
    }
}

/// Baselines.
#[derive(Clone, Copy, Debug, Eq, PartialEq, clap::ValueEnum)]
pub(crate) enum Baseline {
    /// A raw framed TCP echo with the same size and in-flight depth, served in this process.
    Echo,
    /// The same echo served by a process of its own (`mq bench echo-server`), so that each
    /// round trip crosses processes as ours does to a separate broker.
    EchoProcess,
}

/// Settings shared by both benchmarks.
#[derive(Debug, clap::Args)]
pub(crate) struct BenchArgs {
    /// Name servers; default: an embedded cluster started for the run.
    #[arg(long)]
    namesrv: Option<String>,
    /// Topic.
    #[arg(long, default_value = "BenchTopic")]
    topic: String,
    /// Concurrent senders.
    #[arg(long, default_value_t = 64)]
    tasks: usize,
    /// Sends each sender keeps in flight (requests in flight = tasks × window).
    #[arg(long, default_value_t = 1)]
    window: usize,
    /// Body size in bytes.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Run time in seconds (ignored when --count is given).
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Number of messages instead of a duration.
    #[arg(long)]
    count: Option<u64>,
    /// Header codec.
    #[arg(long, value_enum, default_value = "json")]
    codec: Codec,
    /// Body compression (bodies of 4 KiB and more).
    #[arg(long, value_enum, default_value = "none")]
    compress: Compress,
    /// Coalesce the client's writes (`ClientConfig::with_coalesced_writes`, on by default):
    /// `--coalesce-writes false` writes as soon as the writer is woken.
    #[arg(
        long,
        default_value_t = true,
        num_args = 0..=1,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    coalesce_writes: bool,
    /// Print the results as JSON on stdout (and no periodic lines).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    security: crate::options::Security,
    /// Write an SVG plot of throughput and latency over time, and the latency distribution.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Also measure a baseline in the same run and report our ratio to it.
    #[arg(long, value_enum)]
    baseline: Option<Baseline>,
    /// The broker's process id (a separate `mq serve`, or a Java broker): its CPU over the
    /// measured window is reported per message beside ours.
    #[arg(long)]
    broker_pid: Option<u32>,
    /// `consume` only: the topic already holds the messages (from an earlier `mq bench
    /// produce --topic`), so none are sent first; the consumer reads --count of them from the
    /// first offset.
    #[arg(long)]
    preloaded: bool,
    /// `consume` only: an orderly listener (`PushConsumer::start_orderly`: each queue locked
    /// on its broker, one call at a time per queue).
    #[arg(long)]
    orderly: bool,
}

/// Counters of a run.
#[derive(Default)]
struct Stats {
    ok: AtomicU64,
    send_failed: AtomicU64,
    response_failed: AtomicU64,
    latency: Mutex<Option<Histogram<u64>>>,
    window_max_us: AtomicU64,
    window_sum_us: AtomicU64,
    window_n: AtomicU64,
    /// Requests the producer made in the measured window, when counted (auto-batch: how
    /// many messages went in each).
    requests: Mutex<Option<u64>>,
}

/// Counts the producer's requests (attempts), through its send hook.
#[derive(Default)]
struct RequestCounter(AtomicU64);

impl RequestCounter {
    fn count(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl mq_producer::SendHook for RequestCounter {
    fn name(&self) -> &str {
        "bench-requests"
    }

    fn before(&self, _: &mq_producer::SendContext<'_>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    fn after(&self, _: &mq_producer::SendContext<'_>) {}
}

impl Stats {
    fn new() -> Arc<Self> {
        let s = Self::default();
        *s.latency.lock() = new_histogram();
        Arc::new(s)
    }

    fn record(&self, latency: Duration, n: u64) {
        let us = micros(latency);
        if let Some(h) = self.latency.lock().as_mut() {
            let _ = h.record(us);
        }
        self.ok.fetch_add(n, Ordering::Relaxed);
        self.window_max_us.fetch_max(us, Ordering::Relaxed);
        self.window_sum_us.fetch_add(us, Ordering::Relaxed);
        self.window_n.fetch_add(1, Ordering::Relaxed);
    }
}

/// 1 µs .. 60 s with 3 significant digits: the bounds are constants, so creation succeeds.
fn new_histogram() -> Option<Histogram<u64>> {
    Histogram::new_with_bounds(1, 60_000_000, 3).ok()
}

/// A latency in whole microseconds, within the histogram's bounds.
fn micros(latency: Duration) -> u64 {
    u64::try_from(latency.as_micros())
        .unwrap_or(u64::MAX)
        .clamp(1, 60_000_000)
}

/// What one sender has counted and not yet added to the run's [`Stats`]: kept by the sender
/// alone, so that the senders' counting does not contend, and handed over every
/// [`LocalStats::FLUSH_EVERY`] sends (the counters) and when the sender ends (the latencies).
struct LocalStats {
    latency: Option<Histogram<u64>>,
    ok: u64,
    window_max_us: u64,
    window_sum_us: u64,
    window_n: u64,
    /// When the counters were last handed over.
    flushed: Instant,
}

impl LocalStats {
    /// Often enough for the once-a-second report line: every this many sends, or every
    /// [`LocalStats::FLUSH_AFTER`] for a sender slower than that.
    const FLUSH_EVERY: u64 = 64;
    const FLUSH_AFTER: Duration = Duration::from_millis(100);

    fn new() -> Self {
        Self {
            latency: new_histogram(),
            ok: 0,
            window_max_us: 0,
            window_sum_us: 0,
            window_n: 0,
            flushed: Instant::now(),
        }
    }

    /// Counts a send that took `latency` from `started`, which is when it ended, without
    /// reading the clock again.
    fn record(&mut self, shared: &Stats, started: Instant, latency: Duration, n: u64) {
        let us = micros(latency);
        if let Some(h) = self.latency.as_mut() {
            let _ = h.record(us);
        }
        self.ok += n;
        self.window_max_us = self.window_max_us.max(us);
        self.window_sum_us += us;
        self.window_n += 1;
        let ended = started + latency;
        if self.window_n >= Self::FLUSH_EVERY
            || ended.saturating_duration_since(self.flushed) >= Self::FLUSH_AFTER
        {
            self.flush_counts(shared);
            self.flushed = ended;
        }
    }

    fn flush_counts(&mut self, shared: &Stats) {
        shared
            .ok
            .fetch_add(std::mem::take(&mut self.ok), Ordering::Relaxed);
        shared
            .window_max_us
            .fetch_max(std::mem::take(&mut self.window_max_us), Ordering::Relaxed);
        shared
            .window_sum_us
            .fetch_add(std::mem::take(&mut self.window_sum_us), Ordering::Relaxed);
        shared
            .window_n
            .fetch_add(std::mem::take(&mut self.window_n), Ordering::Relaxed);
    }

    /// Hands everything over; called when the sender ends.
    fn finish(mut self, shared: &Stats) {
        self.flush_counts(shared);
        if let (Some(all), Some(mine)) = (shared.latency.lock().as_mut(), &self.latency) {
            // Same bounds on both sides, so adding cannot fail.
            let _ = all.add(mine);
        }
    }
}

/// One sample per second.
#[derive(Clone, Copy, Debug)]
struct Sample {
    second: u64,
    tps: f64,
    avg_ms: f64,
    max_ms: f64,
    /// Messages acknowledged since the start.
    ok: u64,
    /// This process's anonymous resident memory, bytes ([`rss_anon`]).
    rss: Option<u64>,
}

/// This process's anonymous resident memory in bytes (`RssAnon` in `/proc/self/status`): its
/// heap and stacks, not its code or mapped files. `None` where there is no such file.
fn rss_anon() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// Anonymous memory gained per acknowledged message from a third into the run (past start-up
/// and the first round of buffers) to its last sample, in bytes: near zero when the process
/// does not grow with the messages it sends. `None` without three samples, memory readings or
/// messages between them.
fn rss_growth_per_msg(samples: &[Sample]) -> Option<f64> {
    if samples.len() < 3 {
        return None;
    }
    let from = samples.get(samples.len() / 3)?;
    let to = samples.last()?;
    let msgs = to.ok.checked_sub(from.ok).filter(|n| *n > 0)?;
    Some((to.rss? as f64 - from.rss? as f64) / msgs as f64)
}

struct Cluster {
    namesrv: Option<NameServer>,
    broker: Option<Broker>,
    addr: String,
    _store: Option<crate::TempStore>,
}

async fn cluster(namesrv: Option<&str>) -> Result<Cluster, String> {
    if let Some(ns) = namesrv {
        return Ok(Cluster {
            namesrv: None,
            broker: None,
            addr: ns.to_owned(),
            _store: None,
        });
    }
    let dir = std::env::temp_dir().join(format!("mq-bench-{}", std::process::id()));
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let namesrv = NameServer::start(NamesrvConfig::default().with_listen(loopback))
        .await
        .map_err(|e| format!("name server cannot start: {e}"))?;
    let addr = namesrv.local_addr().to_string();
    let broker = Broker::start(
        BrokerConfig::new(&dir)
            .with_listen(loopback)
            .with_name_servers(vec![addr.clone()])
            .with_segment_size(256 * 1024 * 1024),
    )
    .await
    .map_err(|e| format!("broker cannot start: {e}"))?;
    Ok(Cluster {
        namesrv: Some(namesrv),
        broker: Some(broker),
        addr,
        _store: Some(crate::TempStore(dir)),
    })
}

impl Cluster {
    async fn shutdown(self) {
        if let Some(b) = self.broker {
            let _ = b.shutdown(Duration::from_secs(5)).await;
        }
        if let Some(n) = self.namesrv {
            let _ = n.shutdown(Duration::from_secs(5)).await;
        }
    }
}

fn producer_config(
    args: &BenchArgs,
    ns: &str,
    mode: Option<Mode>,
) -> Result<ProducerConfig, String> {
    let mut client = args.security.apply(
        ClientConfig::new(ns).with_instance_name(format!("mq-bench-{}", std::process::id())),
    )?;
    client.serialize_type = args.codec.serialize_type();
    client.coalesce_writes = args.coalesce_writes;
    let mut config = ProducerConfig::new("mq_bench_producer", ns).with_client(client);
    if mode == Some(Mode::AutoBatch) {
        config = config.with_batching(mq_producer::BatchingConfig::default());
    }
    // Bodies of 4 KiB and more, Java's default threshold.
    Ok(args.compress.apply(config, 4096))
}

/// `mq bench produce`.
pub(crate) async fn produce(
    args: BenchArgs,
    mode: Mode,
    transport: Transport,
    grpc_endpoint: Option<String>,
) -> Result<(), String> {
    let cluster = cluster(args.namesrv.as_deref()).await?;
    let warm = bytes::Bytes::from(vec![b'w'; args.size.max(1)]);
    let in_process_proxy = transport == Transport::Grpc && grpc_endpoint.is_none();
    // Auto-batching decides how many messages go in a request: counted, not assumed.
    let requests = (transport == Transport::Remoting && mode == Mode::AutoBatch)
        .then(|| Arc::new(RequestCounter::default()));
    let (send, stop): (SendFn, Stop) = match transport {
        Transport::Remoting => {
            let producer = Producer::new(producer_config(&args, &cluster.addr, Some(mode))?);
            producer.start().await.map_err(|e| e.to_string())?;
            if let Some(counter) = &requests {
                producer.add_hook(Arc::clone(counter) as Arc<dyn mq_producer::SendHook>);
            }
            (
                remoting_send(&producer, &args.topic, mode),
                Stop::Producer(producer),
            )
        }
        Transport::Grpc => {
            let (send, proxy) = grpc_send(&args, &cluster.addr, grpc_endpoint, mode).await?;
            (send, Stop::Proxy(proxy))
        }
    };
    // Warm the route (and let the broker create the topic) before measuring.
    if let Err(e) = send(warm).await {
        stop.shutdown().await;
        return Err(format!("warm-up send failed: {}", e.cause));
    }
    let stats = Stats::new();
    let body = bytes::Bytes::from(vec![b'x'; args.size.max(1)]);
    let requests_start = requests.as_ref().map(|c| c.count());
    let cpu_start = process_cpu();
    let broker_start = args.broker_pid.map(cpu_of);
    let stop_at = Instant::now() + Duration::from_secs(args.duration);
    let remaining = Arc::new(AtomicU64::new(args.count.unwrap_or(u64::MAX)));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.tasks.max(1) {
        let (send, s, body, remaining, limited) = (
            Arc::clone(&send),
            Arc::clone(&stats),
            body.clone(),
            Arc::clone(&remaining),
            args.count.is_some(),
        );
        let window = args.window.max(1);
        // Each sender keeps `window` sends in flight as futures it polls itself (no task per
        // send), as an application pipelining its sends would.
        tasks.spawn(async move {
            use futures_util::StreamExt;
            let mut inflight = futures_util::stream::FuturesUnordered::new();
            let mut mine = LocalStats::new();
            // One clock reading: the send's start, and the time limit's check.
            let next = || {
                let t = Instant::now();
                let exhausted = if limited {
                    remaining
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                        .is_err()
                } else {
                    t >= stop_at
                };
                (!exhausted).then_some(t)
            };
            let mut outcome = |r: Result<u64, SendFailed>, t: Instant, latency: Duration| match r {
                Ok(n) => mine.record(&s, t, latency, n),
                Err(e) if e.maybe_stored => {
                    s.response_failed.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => {
                    s.send_failed.fetch_add(1, Ordering::Relaxed);
                }
            };
            if window == 1 {
                // One send at a time, awaited as an application awaits it. (A set of futures
                // would wake this task again after every poll that leaves its only send
                // pending, and that extra wake moves work to the other worker thread.)
                while let Some(t) = next() {
                    let r = send(body.clone()).await;
                    outcome(r, t, t.elapsed());
                }
            } else {
                loop {
                    while inflight.len() < window {
                        let Some(t) = next() else {
                            break;
                        };
                        let fut = send(body.clone());
                        inflight.push(async move { (fut.await, t, t.elapsed()) });
                    }
                    match inflight.next().await {
                        Some((r, t, latency)) => outcome(r, t, latency),
                        None => break,
                    }
                }
            }
            mine.finish(&s);
        });
    }
    let (samples, elapsed) = report_loop(&args, &stats, &mut tasks, "Send").await;
    *stats.requests.lock() = requests
        .zip(requests_start)
        .map(|(c, start)| c.count().saturating_sub(start));
    let cpu = process_cpu().saturating_sub(cpu_start);
    let broker_cpu = args
        .broker_pid
        .zip(broker_start)
        .map(|(pid, start)| cpu_of(pid).saturating_sub(start));
    stop.shutdown().await;
    let baseline = match args.baseline {
        Some(which) => Some(echo_baseline(&args, which).await?),
        None => None,
    };
    let name = match transport {
        Transport::Remoting => format!("produce {mode:?}").to_lowercase(),
        Transport::Grpc => format!("produce {mode:?} grpc").to_lowercase(),
    };
    finish(
        &args,
        &name,
        &stats,
        &samples,
        elapsed,
        baseline,
        Some(CpuUse {
            client: cpu,
            scope: match (cpu_scope(&args), in_process_proxy) {
                (scope, false) => scope,
                ("client", true) => "client+proxy",
                (_, true) => "client+proxy+broker",
            },
            broker: broker_cpu,
        }),
    )?;
    cluster.shutdown().await;
    Ok(())
}

/// What to stop once the load is over.
enum Stop {
    Producer(Producer),
    Proxy(Option<mq_grpc::GrpcProxy>),
}

impl Stop {
    async fn shutdown(self) {
        match self {
            Self::Producer(p) => p.shutdown().await,
            Self::Proxy(Some(p)) => p.shutdown().await,
            Self::Proxy(None) => {}
        }
    }
}

/// Sends of `mode` with our producer.
fn remoting_send(producer: &Producer, topic: &str, mode: Mode) -> SendFn {
    let (p, topic) = (producer.clone(), topic.to_owned());
    Arc::new(move |body| {
        let m = Message::new(topic.clone(), body);
        match mode {
            Mode::Sync => {
                let p = p.clone();
                Box::pin(async move {
                    p.send(m)
                        .await
                        .map(|_| 1)
                        .map_err(|e| SendFailed::producer(&e.into_error()))
                })
            }
            Mode::Async | Mode::AutoBatch => {
                let f = p.send_async(m);
                Box::pin(async move {
                    f.await
                        .map(|_| 1)
                        .map_err(|e| SendFailed::producer(&e.into_error()))
                })
            }
            Mode::Oneway => {
                let p = p.clone();
                Box::pin(async move {
                    p.send_oneway(m)
                        .await
                        .map(|()| 1)
                        .map_err(|e| SendFailed::producer(&e.into_error()))
                })
            }
            Mode::Batch => {
                let p = p.clone();
                Box::pin(async move {
                    let msgs = (0..16).map(|_| m.clone()).collect();
                    p.send_batch(msgs)
                        .await
                        .map(|_| 16)
                        .map_err(|e| SendFailed::producer(&e.into_error()))
                })
            }
        }
    })
}

/// Sends of `mode` as gRPC `SendMessage` requests through `endpoint`, or through a proxy started
/// here in front of the cluster of `namesrv` (returned, to be stopped). Sync and async are both
/// one message per request through [`mq_producer::GrpcProducer`] (the window sets the depth);
/// batch is 16 per request.
async fn grpc_send(
    args: &BenchArgs,
    namesrv: &str,
    endpoint: Option<String>,
    mode: Mode,
) -> Result<(SendFn, Option<mq_grpc::GrpcProxy>), String> {
    use mq_grpc::v2;
    let (endpoint, proxy) = match endpoint {
        Some(e) => (e, None),
        None => {
            let proxy = mq_grpc::GrpcProxy::start(
                mq_grpc::GrpcProxyConfig::new(namesrv)
                    .with_listen(SocketAddr::from(([127, 0, 0, 1], 0))),
            )
            .await
            .map_err(|e| format!("gRPC proxy cannot start: {e}"))?;
            (proxy.local_addr().to_string(), Some(proxy))
        }
    };
    let per_request = match mode {
        Mode::Sync | Mode::Async | Mode::AutoBatch => 1,
        Mode::Batch => 16,
        Mode::Oneway => {
            return Err(format!(
                "--transport grpc has no {mode:?} mode: use sync, async, auto-batch or batch"
            ));
        }
    };
    let topic = args.topic.clone();
    if per_request == 1 {
        // One message per send: our gRPC producer, with its rules (ids, deadline, retries);
        // in auto-batch mode it gathers the sends to the topic into batches.
        let mut config = mq_producer::GrpcProducerConfig::new(&endpoint).with_topic(&topic);
        if mode == Mode::AutoBatch {
            config = config.with_batching(mq_producer::BatchingConfig::default());
        }
        let producer = Arc::new(
            mq_producer::GrpcProducer::start(config)
                .await
                .map_err(|e| e.to_string())?,
        );
        let send: SendFn = Arc::new(move |body: bytes::Bytes| {
            let (producer, topic) = (Arc::clone(&producer), topic.clone());
            Box::pin(async move {
                match producer.send(Message::new(topic, body)).await {
                    Ok(_) => Ok(1),
                    Err(e) => Err(SendFailed::producer(e.error())),
                }
            })
        });
        return Ok((send, proxy));
    }
    // Batches: 16 messages per SendMessage request through the generated client.
    let client =
        v2::messaging_service_client::MessagingServiceClient::connect(format!("http://{endpoint}"))
            .await
            .map_err(|e| format!("cannot connect to the gRPC proxy at {endpoint}: {e}"))?;
    let send: SendFn = Arc::new(move |body: bytes::Bytes| {
        let mut client = client.clone();
        let message = v2::Message {
            topic: Some(v2::Resource {
                resource_namespace: String::new(),
                name: topic.clone(),
            }),
            body,
            ..Default::default()
        };
        Box::pin(async move {
            let request = v2::SendMessageRequest {
                messages: vec![message; per_request],
            };
            match client.send_message(request).await {
                Ok(r)
                    if r.get_ref().status.as_ref().map(|s| s.code) == Some(v2::Code::Ok as i32) =>
                {
                    Ok(u64::try_from(per_request).unwrap_or(1))
                }
                // Refused with a status: not stored. A transport failure: maybe stored.
                Ok(r) => Err(SendFailed {
                    maybe_stored: false,
                    cause: format!("refused: {:?}", r.get_ref().status),
                }),
                Err(status) => Err(SendFailed {
                    maybe_stored: true,
                    cause: status.to_string(),
                }),
            }
        })
    });
    Ok((send, proxy))
}

/// This process's CPU time (user + system) so far (zero where there is no `/proc`).
fn process_cpu() -> Duration {
    cpu_of(std::process::id())
}

/// A process's CPU time (user + system) so far, from `/proc/PID/stat` (zero where there is
/// none).
fn cpu_of(pid: u32) -> Duration {
    // Fields 14 and 15 (utime, stime), in USER_HZ ticks (100 a second on Linux), counted from
    // after the command name, which may hold spaces.
    let ticks = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let rest = stat.rsplit_once(')')?.1;
            let mut f = rest.split_whitespace().skip(11);
            let user: u64 = f.next()?.parse().ok()?;
            let system: u64 = f.next()?.parse().ok()?;
            Some(user + system)
        })
        .unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// Whose CPU the process measure covers: with an embedded cluster the broker runs in this
/// process too.
fn cpu_scope(args: &BenchArgs) -> &'static str {
    if args.namesrv.is_some() {
        "client"
    } else {
        "client+broker"
    }
}

/// Sends `total` messages of `args.size` bytes to `args.topic`, from `args.tasks` senders.
async fn preload(args: &BenchArgs, namesrv: &str, total: u64) -> Result<(), String> {
    let producer = Producer::new(producer_config(args, namesrv, None)?);
    producer.start().await.map_err(|e| e.to_string())?;
    let body = bytes::Bytes::from(vec![b'x'; args.size.max(1)]);
    let mut senders = tokio::task::JoinSet::new();
    let tasks = args.tasks.max(1) as u64;
    for lane in 0..tasks {
        let n = total / tasks + u64::from(lane < total % tasks);
        let (p, body, topic) = (producer.clone(), body.clone(), args.topic.clone());
        senders.spawn(async move {
            for _ in 0..n {
                p.send_async(Message::new(topic.clone(), body.clone()))
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok::<(), String>(())
        });
    }
    while let Some(r) = senders.join_next().await {
        r.map_err(|e| e.to_string())??;
    }
    producer.shutdown().await;
    Ok(())
}

/// `mq bench consume`: preloads `count` (default 100 000) messages (unless `--preloaded`),
/// then measures how fast a push consumer takes them; latency is send-to-consume (born
/// timestamp to listener).
pub(crate) async fn consume(args: BenchArgs) -> Result<(), String> {
    let cluster = cluster(args.namesrv.as_deref()).await?;
    let total = args.count.unwrap_or(100_000);
    if !args.preloaded {
        preload(&args, &cluster.addr, total).await?;
    }
    let stats = Stats::new();
    // CPU from here on: the consumer's start, its pulls and its listener, not the preload.
    let cpu_start = process_cpu();
    let broker_start = args.broker_pid.map(cpu_of);
    let consumer = PushConsumer::new(
        ConsumerConfig::new(
            format!("mq_bench_consumer_{}", std::process::id()),
            &cluster.addr,
        )
        .with_client(
            args.security.apply(
                ClientConfig::new(&cluster.addr)
                    .with_instance_name(format!("mq-bench-c-{}", std::process::id())),
            )?,
        )
        .with_consume_from(ConsumeFrom::FirstOffset),
    );
    consumer
        .subscribe(&args.topic, "*")
        .map_err(|e| e.to_string())?;
    let s = Arc::clone(&stats);
    // Latency from each message's born timestamp.
    let record = move |msgs: &[MessageExt]| {
        let now = mq_client_api::wire_time::now_millis();
        for m in msgs {
            let ms = u64::try_from((now - m.born_timestamp).max(0)).unwrap_or(0);
            s.record(Duration::from_millis(ms), 1);
        }
    };
    let started = if args.orderly {
        consumer
            .start_orderly(Arc::new(
                move |msgs: &[MessageExt], _ctx: &mut ConsumeOrderlyContext| {
                    record(msgs);
                    ConsumeOrderlyStatus::Success
                },
            ))
            .await
    } else {
        consumer
            .start(Arc::new(
                move |msgs: &[MessageExt], _ctx: &mut ConsumeContext| {
                    record(msgs);
                    ConsumeStatus::Success
                },
            ))
            .await
    };
    started.map_err(|e| e.to_string())?;
    let mut waiter = tokio::task::JoinSet::new();
    let (s, limit) = (
        Arc::clone(&stats),
        Duration::from_secs(args.duration.max(60)),
    );
    waiter.spawn(async move {
        let started = Instant::now();
        while s.ok.load(Ordering::Relaxed) < total && started.elapsed() < limit {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let (samples, elapsed) = report_loop(&args, &stats, &mut waiter, "Consume").await;
    let cpu = CpuUse {
        client: process_cpu().saturating_sub(cpu_start),
        scope: cpu_scope(&args),
        broker: args
            .broker_pid
            .zip(broker_start)
            .map(|(pid, start)| cpu_of(pid).saturating_sub(start)),
    };
    consumer.shutdown().await;
    let name = if args.orderly {
        "consume orderly"
    } else {
        "consume"
    };
    finish(&args, name, &stats, &samples, elapsed, None, Some(cpu))?;
    cluster.shutdown().await;
    Ok(())
}

/// Prints the periodic line every second until the tasks end; returns the samples.
async fn report_loop(
    args: &BenchArgs,
    stats: &Stats,
    tasks: &mut tokio::task::JoinSet<impl Send + 'static>,
    verb: &str,
) -> (Vec<Sample>, Duration) {
    let bar = if args.json {
        ProgressBar::hidden()
    } else {
        let b = match args.count {
            Some(n) => ProgressBar::new(n),
            None => ProgressBar::new(args.duration),
        };
        b.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b
    };
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut last_ok = 0;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tokio::select! {
            r = tasks.join_next() => {
                if r.is_none() { break; }
            }
            _ = tick.tick() => {
                let ok = stats.ok.load(Ordering::Relaxed);
                let n = stats.window_n.swap(0, Ordering::Relaxed).max(1);
                let sample = Sample {
                    second: started.elapsed().as_secs(),
                    tps: (ok - last_ok) as f64,
                    avg_ms: stats.window_sum_us.swap(0, Ordering::Relaxed) as f64 / n as f64 / 1000.0,
                    max_ms: stats.window_max_us.swap(0, Ordering::Relaxed) as f64 / 1000.0,
                    ok,
                    rss: rss_anon(),
                };
                last_ok = ok;
                samples.push(sample);
                let line = format!(
                    "{verb} TPS: {:.0} Max RT(ms): {:.3} Average RT(ms): {:.3} {verb} Failed: {} Response Failed: {}",
                    sample.tps,
                    sample.max_ms,
                    sample.avg_ms,
                    stats.send_failed.load(Ordering::Relaxed),
                    stats.response_failed.load(Ordering::Relaxed)
                );
                if !args.json {
                    bar.suspend(|| println!("{line}"));
                    match args.count {
                        Some(_) => bar.set_position(ok),
                        None => bar.set_position(sample.second),
                    }
                }
            }
        }
    }
    bar.finish_and_clear();
    (samples, started.elapsed())
}

/// Runs the raw framed echo with the same size and depth, for the same message count or about
/// the same time, served here or by a child process (`which`); returns what it measured.
async fn echo_baseline(args: &BenchArgs, which: Baseline) -> Result<Echoed, String> {
    // The child, when there is one, lives as long as this value (killed on drop).
    let (addr, child) = match which {
        Baseline::Echo => (mq_benches::raw_echo_server().await, None),
        Baseline::EchoProcess => {
            let (addr, child) = echo_process().await?;
            (addr, Some(child))
        }
    };
    let depth = args.tasks.max(1) * args.window.max(1);
    let count = match args.count {
        Some(n) => n.max(1),
        None => {
            // Size the run to last about as long as ours, at echo speed.
            let probe = mq_benches::raw_echo_run(addr, args.size, depth, 10_000).await;
            let per_sec = 10_000.0 / probe.as_secs_f64().max(1e-9);
            ((per_sec * args.duration.clamp(1, 10) as f64) as u64).max(10_000)
        }
    };
    let (served, cpu_scope) = match which {
        Baseline::Echo => ("in-process", "client+server"),
        Baseline::EchoProcess => ("separate-process", "client"),
    };
    let server_pid = child.as_ref().and_then(tokio::process::Child::id);
    let (cpu_start, server_start) = (process_cpu(), server_pid.map(cpu_of));
    let took = mq_benches::raw_echo_run(addr, args.size, depth, count).await;
    let per_round_trip = |used: Duration| used.as_secs_f64() * 1e6 / count as f64;
    Ok(Echoed {
        tps: count as f64 / took.as_secs_f64().max(1e-9),
        served,
        cpu_scope,
        cpu_us: per_round_trip(process_cpu().saturating_sub(cpu_start)),
        server_cpu_us: server_pid
            .zip(server_start)
            .map(|(pid, start)| per_round_trip(cpu_of(pid).saturating_sub(start))),
    })
}

/// What the echo baseline measured.
#[derive(Clone, Copy, Debug)]
struct Echoed {
    /// Round trips per second.
    tps: f64,
    /// Where the echo ran: `in-process` or `separate-process`.
    served: &'static str,
    /// Whose CPU [`Echoed::cpu_us`] covers: `client+server` when the echo is served here,
    /// `client` when a process of its own serves it.
    cpu_scope: &'static str,
    /// This process's CPU µs per round trip.
    cpu_us: f64,
    /// The echo server process's CPU µs per round trip, when it has one.
    server_cpu_us: Option<f64>,
}

/// How long a child echo server may take to say where it listens.
const ECHO_START_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts `mq bench echo-server` as a child of this process and reads the address it listens
/// on. The child is killed when the returned handle drops, and ends by itself when this
/// process goes away (its standard input closes).
async fn echo_process() -> Result<(SocketAddr, tokio::process::Child), String> {
    use tokio::io::AsyncBufReadExt as _;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let mut child = tokio::process::Command::new(exe)
        .args(["bench", "echo-server"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start the echo server process: {e}"))?;
    let stdout = child
        .stdout
        .take()
        .ok_or("the echo server process has no standard output")?;
    let mut line = String::new();
    let mut stdout = tokio::io::BufReader::new(stdout);
    let read = stdout.read_line(&mut line);
    match tokio::time::timeout(ECHO_START_TIMEOUT, read).await {
        Ok(Ok(n)) if n > 0 => {}
        Ok(Ok(_)) => return Err("the echo server process ended before it listened".into()),
        Ok(Err(e)) => return Err(format!("cannot read the echo server's address: {e}")),
        Err(_) => {
            return Err(format!(
                "the echo server process did not say where it listens within {ECHO_START_TIMEOUT:?}"
            ));
        }
    }
    let addr = line
        .trim()
        .strip_prefix(ECHO_LISTENING)
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| format!("unexpected line from the echo server process: {line:?}"))?;
    Ok((addr, child))
}

/// The first line `mq bench echo-server` prints, before its address.
const ECHO_LISTENING: &str = "echo listening on ";

/// `mq bench echo-server`: serves the raw framed echo on a free loopback port, prints
/// `echo listening on ADDR`, and serves until its standard input closes or `stop` ends.
pub(crate) async fn echo_server(stop: impl Future<Output = ()>) -> Result<(), String> {
    use tokio::io::AsyncReadExt as _;
    let addr = mq_benches::raw_echo_server().await;
    {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        writeln!(out, "{ECHO_LISTENING}{addr}")
            .and_then(|()| out.flush())
            .map_err(|e| format!("cannot print the echo server's address: {e}"))?;
    }
    let stdin_closed = async {
        match stdin_pipe() {
            Some(mut pipe) => {
                let mut sink = [0u8; 64];
                while let Ok(n) = pipe.read(&mut sink).await
                    && n > 0
                {}
            }
            // Not a pipe (a terminal, say): only a stop signal ends the server.
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = stdin_closed => {}
        () = stop => {}
    }
    Ok(())
}

/// Standard input as a pipe read through the runtime's reactor, when it is one. Unlike
/// `tokio::io::stdin`, whose read blocks a thread that the runtime then waits for on shutdown,
/// a stop signal ends the server at once.
#[cfg(unix)]
fn stdin_pipe() -> Option<tokio::net::unix::pipe::Receiver> {
    use std::os::fd::AsFd as _;
    let fd = std::io::stdin().as_fd().try_clone_to_owned().ok()?;
    tokio::net::unix::pipe::Receiver::from_file(std::fs::File::from(fd)).ok()
}

#[cfg(not(unix))]
fn stdin_pipe() -> Option<tokio::io::Empty> {
    None
}

/// CPU spent over the measured window.
struct CpuUse {
    /// This process's.
    client: Duration,
    /// Whose this process's figure covers ([`cpu_scope`]).
    scope: &'static str,
    /// The broker process's, when its pid was given.
    broker: Option<Duration>,
}

fn finish(
    args: &BenchArgs,
    name: &str,
    stats: &Stats,
    samples: &[Sample],
    elapsed: Duration,
    baseline: Option<Echoed>,
    cpu: Option<CpuUse>,
) -> Result<(), String> {
    let ok = stats.ok.load(Ordering::Relaxed);
    let per_msg = |used: Duration| used.as_secs_f64() * 1e6 / ok.max(1) as f64;
    // CPU microseconds per acknowledged message, and whose.
    let cpu_per_msg = cpu.as_ref().map(|c| (per_msg(c.client), c.scope));
    let broker_per_msg = cpu.and_then(|c| c.broker).map(per_msg);
    let hist = stats.latency.lock().clone();
    let q = |p: f64| {
        hist.as_ref()
            .map_or(0.0, |h| h.value_at_quantile(p) as f64 / 1000.0)
    };
    // Messages over the whole run: exact for short runs that end between samples.
    let tps = stats.ok.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64().max(1e-9);
    let ratio = baseline.map(|b| tps / b.tps.max(1e-9));
    let rss_mb = rss_anon().map(|b| b as f64 / (1024.0 * 1024.0));
    let rss_growth = rss_growth_per_msg(samples);
    // Requests, and the messages each held on average.
    let requests = stats
        .requests
        .lock()
        .map(|n| (n, ok as f64 / n.max(1) as f64));
    if let Some(path) = &args.plot {
        std::fs::write(path, svg(name, samples, hist.as_ref()))
            .map_err(|e| format!("cannot write the plot to {}: {e}", path.display()))?;
    }
    if args.json {
        let mut out = format!(
            "{{\"bench\":\"{name}\",\"size\":{},\"tasks\":{},\"tps\":{tps:.1},\"p50_ms\":{:.3},\"p99_ms\":{:.3},\"p999_ms\":{:.3},\"ok\":{},\"send_failed\":{},\"response_failed\":{}",
            args.size,
            args.tasks,
            q(0.5),
            q(0.99),
            q(0.999),
            stats.ok.load(Ordering::Relaxed),
            stats.send_failed.load(Ordering::Relaxed),
            stats.response_failed.load(Ordering::Relaxed)
        );
        if let (Some(b), Some(r)) = (baseline, ratio) {
            let _ = write!(
                out,
                ",\"echo_tps\":{:.1},\"echo\":\"{}\",\"ratio_to_echo\":{r:.3},\"echo_cpu_us_per_round_trip\":{:.2},\"echo_cpu_scope\":\"{}\"",
                b.tps, b.served, b.cpu_us, b.cpu_scope
            );
            if let Some(us) = b.server_cpu_us {
                let _ = write!(out, ",\"echo_server_cpu_us_per_round_trip\":{us:.2}");
            }
        }
        if let Some((us, scope)) = cpu_per_msg {
            let _ = write!(out, ",\"cpu_us_per_msg\":{us:.2},\"cpu_scope\":\"{scope}\"");
        }
        if let Some(us) = broker_per_msg {
            let _ = write!(out, ",\"broker_cpu_us_per_msg\":{us:.2}");
        }
        if let Some(mb) = rss_mb {
            let _ = write!(out, ",\"rss_mb\":{mb:.1}");
        }
        if let Some(b) = rss_growth {
            let _ = write!(out, ",\"rss_growth_bytes_per_msg\":{b:.3}");
        }
        if let Some((n, each)) = requests {
            let _ = write!(out, ",\"requests\":{n},\"msgs_per_request\":{each:.1}");
        }
        out.push('}');
        println!("{out}");
    } else {
        println!(
            "{name}: {tps:.0} msg/s  p50 {:.3} ms  p99 {:.3} ms  p999 {:.3} ms  ok {}  failed {}",
            q(0.5),
            q(0.99),
            q(0.999),
            stats.ok.load(Ordering::Relaxed),
            stats.send_failed.load(Ordering::Relaxed)
                + stats.response_failed.load(Ordering::Relaxed)
        );
        if let Some((us, scope)) = cpu_per_msg {
            println!("CPU per message ({scope}): {us:.1} µs");
        }
        if let Some(us) = broker_per_msg {
            println!("broker CPU per message: {us:.1} µs");
        }
        if let Some((n, each)) = requests {
            println!("requests: {n}, {each:.1} messages each");
        }
        if let Some(mb) = rss_mb {
            match rss_growth {
                Some(b) => println!("anon RSS: {mb:.1} MB, {b:.3} bytes more per message"),
                None => println!("anon RSS: {mb:.1} MB"),
            }
        }
        if let (Some(b), Some(r)) = (baseline, ratio) {
            println!(
                "raw framed TCP echo ({}): {:.0} msg/s; ratio {r:.3}",
                b.served, b.tps
            );
            println!(
                "echo CPU per round trip ({}): {:.1} µs",
                b.cpu_scope, b.cpu_us
            );
            if let Some(us) = b.server_cpu_us {
                println!("echo server CPU per round trip: {us:.1} µs");
            }
        }
    }
    Ok(())
}

/// A self-contained SVG: throughput and average latency per second, and the latency
/// distribution (percentile curve).
fn svg(name: &str, samples: &[Sample], hist: Option<&Histogram<u64>>) -> String {
    let (w, h) = (720.0, 240.0);
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"12\">",
        h * 3.0 + 60.0
    );
    let _ = write!(
        s,
        "<text x=\"10\" y=\"20\" font-size=\"16\">mq bench {name}</text>"
    );
    let series = |vals: Vec<(f64, f64)>,
                  top: f64,
                  title: &str,
                  color: &str,
                  unit: &str,
                  out: &mut String| {
        let max_x = vals.iter().map(|v| v.0).fold(1.0, f64::max);
        let max_y = vals.iter().map(|v| v.1).fold(1e-9, f64::max);
        let _ = write!(
            out,
            "<g transform=\"translate(60,{top})\"><rect width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#999\"/>",
            w - 80.0,
            h - 40.0
        );
        let _ = write!(
            out,
            "<text x=\"0\" y=\"-6\">{title} (max {max_y:.2} {unit})</text>"
        );
        let pts: Vec<String> = vals
            .iter()
            .map(|(x, y)| {
                format!(
                    "{:.1},{:.1}",
                    x / max_x * (w - 80.0),
                    (h - 40.0) - y / max_y * (h - 40.0)
                )
            })
            .collect();
        let _ = write!(
            out,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/></g>",
            pts.join(" ")
        );
    };
    series(
        samples.iter().map(|p| (p.second as f64, p.tps)).collect(),
        50.0,
        "throughput per second",
        "#1f77b4",
        "msg/s",
        &mut s,
    );
    series(
        samples
            .iter()
            .map(|p| (p.second as f64, p.avg_ms))
            .collect(),
        50.0 + h,
        "average latency per second",
        "#d62728",
        "ms",
        &mut s,
    );
    let dist: Vec<(f64, f64)> = hist
        .map(|h| {
            (0..=100)
                .map(|i| {
                    (
                        f64::from(i),
                        h.value_at_quantile(f64::from(i) / 100.0) as f64 / 1000.0,
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    series(
        dist,
        50.0 + 2.0 * h,
        "latency by percentile (x: percentile)",
        "#2ca02c",
        "ms",
        &mut s,
    );
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(ok: u64, rss: Option<u64>) -> Sample {
        Sample {
            second: 0,
            tps: 0.0,
            avg_ms: 0.0,
            max_ms: 0.0,
            ok,
            rss,
        }
    }

    /// Growth is measured from a third into the run to its end: what start-up allocated does
    /// not count, what the messages after it added does, per message.
    #[test]
    fn rss_growth_is_the_slope_after_the_first_third() {
        let mib = 1 << 20;
        // Start-up takes 50 MiB in the first second, then each message adds 2 bytes.
        let samples = [
            sample(0, Some(mib)),
            sample(500, Some(51 * mib)),
            sample(1000, Some(51 * mib + 1000)),
            sample(1500, Some(51 * mib + 2000)),
            sample(2000, Some(51 * mib + 3000)),
        ];
        assert_eq!(rss_growth_per_msg(&samples), Some(2.0));
        // Memory given back reads as negative growth.
        let shrinking = [
            sample(0, Some(10 * mib)),
            sample(100, Some(10 * mib)),
            sample(200, Some(10 * mib - 400)),
        ];
        assert_eq!(rss_growth_per_msg(&shrinking), Some(-4.0));
        // Too few samples, a missing reading, or no message in between: no figure.
        assert_eq!(rss_growth_per_msg(&samples[..2]), None);
        let unread = [sample(0, None), sample(10, None), sample(20, None)];
        assert_eq!(rss_growth_per_msg(&unread), None);
        let stalled = [sample(5, Some(1)), sample(5, Some(2)), sample(5, Some(3))];
        assert_eq!(rss_growth_per_msg(&stalled), None);
    }

    /// The reading is this process's anonymous memory: it grows by at least what is allocated
    /// and touched.
    #[cfg(target_os = "linux")]
    #[test]
    fn rss_anon_sees_touched_memory() {
        let before = rss_anon().unwrap_or(0);
        let block = vec![1u8; 64 << 20];
        let after = rss_anon().unwrap_or(0);
        assert!(std::hint::black_box(&block).iter().all(|b| *b == 1));
        assert!(after >= before + (60 << 20), "{before} -> {after}");
    }
}
