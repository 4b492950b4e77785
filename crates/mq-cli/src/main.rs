//! The `mq` tool (not a library layer): `mq quickstart` runs the main job on an embedded
//! cluster; `mq serve` runs a name server and a broker in one process. Further commands arrive
//! with the producer and consumer.

mod bench;
mod commands;
mod options;
mod quickstart;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

/// The binary's allocator (libraries never choose one): mimalloc's v2 line, built to be malloc
/// itself (its `override` feature), so that Rust's allocations (through `System`, which asks
/// `malloc` for any block aligned to 16 bytes or less) and those of the C code linked in (zstd)
/// come from one allocator by its plain small-block path. `mimalloc::MiMalloc` asks for every
/// block by `mi_malloc_aligned`, about 25 instructions more per allocation; a send makes about
/// 17 on each side. Callgrind, instructions per message (`cargo xtask instructions`' method):
/// client async 1 KiB 15,722 → 15,285, auto-batch 100 B 5,792 → 5,481; broker async 1 KiB
/// 13,657 → 13,442.
///
/// glibc's malloc before it was about a quarter of the client's CPU profile; A/B with `mq serve`
/// and `mq bench` as separate processes, 64 senders, 1 KiB, three paired rounds: client CPU
/// per message −17 to −31 % (sync) and −10 to −31 % (async), broker −1 to −14 %, throughput +8
/// to +28 %.
#[global_allocator]
static GLOBAL: std::alloc::System = std::alloc::System;
// Linked for its `malloc`, which `System` calls; nothing names it.
use mimalloc as _;
use mq_broker::{Broker, BrokerConfig, FlushMode};
use mq_namesrv::{NameServer, NamesrvConfig};

#[derive(Debug, Parser)]
#[command(name = "mq", version, about = "A RocketMQ-compatible messaging tool")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start an embedded cluster, send in every mode, consume everything back and verify it.
    Quickstart(quickstart::QuickstartArgs),
    /// Run a name server and a broker in this process until Ctrl-C or SIGTERM.
    Serve(ServeArgs),
    /// Run a name server alone until Ctrl-C or SIGTERM (Java `mqnamesrv`); brokers join it with
    /// `mq broker`.
    Namesrv {
        /// Address to listen on and advertise (loopback by default; widen deliberately).
        #[arg(long, default_value = "127.0.0.1")]
        host: IpAddr,
        /// Port (0 = any free port).
        #[arg(long, default_value_t = 9876)]
        port: u16,
        #[command(flatten)]
        tls: options::ServerTlsArgs,
    },
    /// Run a broker alone until Ctrl-C or SIGTERM, registered with running name servers (Java
    /// `mqbroker`). Several, with other names, ports and stores, make a cluster.
    Broker {
        /// Name servers to register with, `host:port;host:port`.
        #[arg(long)]
        namesrv: String,
        /// Broker port (0 = any free port).
        #[arg(long, default_value_t = 10911)]
        port: u16,
        #[command(flatten)]
        broker: BrokerArgs,
    },
    /// Run RocketMQ 5's gRPC proxy alone until Ctrl-C or SIGTERM, in front of a running cluster
    /// (ours or Apache RocketMQ's), for RocketMQ 5's gRPC clients.
    Proxy {
        /// The cluster's name servers, `host:port;host:port`.
        #[arg(long)]
        namesrv: String,
        /// Address to listen on (loopback by default; widen deliberately).
        #[arg(long, default_value = "127.0.0.1")]
        host: IpAddr,
        /// Port (0 = any free port).
        #[arg(long, default_value_t = 8081)]
        port: u16,
        /// TLS on the gRPC port (ALPN h2).
        #[command(flatten)]
        tls: options::ServerTlsArgs,
        /// Check every gRPC call against the accounts of this ACL file (the shape of Apache
        /// RocketMQ's `plain_acl.yml`): its signature, and the topics and groups it touches.
        #[arg(long)]
        acl: Option<PathBuf>,
        /// The account the proxy signs its requests to the cluster with, when the cluster
        /// checks ACL (with --secret-key).
        #[arg(long, requires = "secret_key")]
        access_key: Option<String>,
        /// The secret key of --access-key.
        #[arg(long, requires = "access_key")]
        secret_key: Option<String>,
        /// Speak TLS to the cluster, trusting the certificates in this PEM file as roots.
        #[arg(long)]
        cluster_tls_ca: Option<PathBuf>,
        /// Serve a message's delivery time with the default delay levels (1s … 2h, the first
        /// not earlier than it) instead of as a timer message: for a cluster of 4.x brokers,
        /// which have no timer.
        #[arg(long)]
        delay_levels_for_delivery: bool,
    },
    /// Send messages.
    Send {
        #[command(flatten)]
        target: Target,
        /// Topic.
        #[arg(long)]
        topic: String,
        /// Body text.
        #[arg(long)]
        body: String,
        /// Tag.
        #[arg(long)]
        tag: Option<String>,
        /// Business key.
        #[arg(long)]
        key: Option<String>,
        /// How many messages (numbered when more than one).
        #[arg(long, default_value_t = 1)]
        count: usize,
        /// Make them timer messages (RocketMQ 5), delivered this long from now (e.g. `30s`,
        /// to the broker's second); each send prints its recall handle.
        #[arg(long, value_parser = humantime::parse_duration)]
        deliver_in: Option<Duration>,
    },
    /// Recall a timer message before it is delivered, by the handle its send printed.
    Recall {
        #[command(flatten)]
        target: Target,
        /// The message's topic.
        #[arg(long)]
        topic: String,
        /// The recall handle.
        #[arg(long)]
        handle: String,
    },
    /// Consume and print messages.
    Consume {
        #[command(flatten)]
        target: Target,
        /// Topic.
        #[arg(long)]
        topic: String,
        /// Consumer group.
        #[arg(long, default_value = "mq_cli_consumer")]
        group: String,
        /// Tag expression.
        #[arg(long, default_value = "*")]
        tags: String,
        /// Stop after this many messages.
        #[arg(long, default_value_t = 32)]
        count: usize,
        /// Stop when nothing arrives for this many seconds.
        #[arg(long, default_value_t = 5)]
        wait_secs: u64,
        /// A new group starts at the first offset (default: the last).
        #[arg(long)]
        from_first: bool,
    },
    /// Print a topic's route.
    Route {
        #[command(flatten)]
        target: Target,
        /// Topic.
        #[arg(long)]
        topic: String,
    },
    /// Create or list topics.
    Topic {
        #[command(subcommand)]
        action: TopicAction,
    },
    /// Create, list or delete consumer groups' configs (FIFO or not, retries).
    Group {
        #[command(subcommand)]
        action: GroupAction,
    },
    /// List the brokers of the cluster.
    Cluster {
        #[command(flatten)]
        target: Target,
    },
    /// Measure throughput and latency.
    Bench {
        #[command(subcommand)]
        which: BenchCommand,
    },
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Producer load.
    Produce {
        #[command(flatten)]
        args: bench::BenchArgs,
        /// Send mode.
        #[arg(long, value_enum, default_value = "sync")]
        mode: bench::Mode,
        /// Protocol: remoting (our producer) or RocketMQ 5's gRPC (through a proxy).
        #[arg(long, value_enum, default_value = "remoting")]
        transport: bench::Transport,
        /// With `--transport grpc`: the proxy to send through (e.g. `mq serve --grpc-port`'s);
        /// default: one started in this process in front of the cluster.
        #[arg(long)]
        grpc_endpoint: Option<String>,
    },
    /// Consumer load (preloads the messages first).
    Consume {
        #[command(flatten)]
        args: bench::BenchArgs,
    },
    /// The raw framed echo of `--baseline echo-process`, served until standard input closes
    /// (started by `mq bench` itself).
    #[command(hide = true)]
    EchoServer,
}

#[derive(Debug, clap::Args)]
pub(crate) struct Target {
    /// Name servers, `host:port;host:port` (default: `mq serve`'s).
    #[arg(long, default_value = "127.0.0.1:9876")]
    pub(crate) namesrv: String,
    /// Deadline of each call, route lookups and retries included (e.g. `500ms`, `3s`).
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub(crate) timeout: Duration,
    #[command(flatten)]
    pub(crate) security: options::Security,
}

#[derive(Debug, Subcommand)]
enum TopicAction {
    /// Create a topic on every master broker.
    Create {
        #[command(flatten)]
        target: Target,
        /// Topic.
        #[arg(long)]
        topic: String,
        /// Read and write queues per broker.
        #[arg(long, default_value_t = 4)]
        queues: i32,
        /// The kind of messages the topic takes (RocketMQ 5's `message.type` attribute), which
        /// Apache RocketMQ's proxy checks every send against; a topic without one takes normal
        /// messages only there.
        #[arg(long, value_enum)]
        message_type: Option<MessageType>,
    },
    /// List the topics the name server knows.
    List {
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Debug, Subcommand)]
enum GroupAction {
    /// Create or update a consumer group's config on every master broker.
    Create {
        #[command(flatten)]
        target: Target,
        /// Group.
        #[arg(long)]
        group: String,
        /// FIFO: a queue's next message goes out only once the one before it is acknowledged
        /// (what RocketMQ 5 clients consume in order through a proxy).
        #[arg(long)]
        fifo: bool,
        /// Deliveries before a message goes to the group's dead-letter queue.
        #[arg(long, default_value_t = 16)]
        retry_max_times: i32,
    },
    /// List the group configs of every master broker.
    List {
        #[command(flatten)]
        target: Target,
    },
    /// Delete a group's config (and, with `--clean-offset`, its committed offsets) on every
    /// master broker.
    Delete {
        #[command(flatten)]
        target: Target,
        /// Group.
        #[arg(long)]
        group: String,
        /// Also forget the group's committed offsets.
        #[arg(long)]
        clean_offset: bool,
    },
}

/// A RocketMQ 5 topic's message type (`TopicMessageType`).
#[derive(Clone, Copy, Debug, ValueEnum)]
enum MessageType {
    Normal,
    Fifo,
    Delay,
    Transaction,
    Mixed,
}

impl MessageType {
    /// The topic attribute that says it.
    fn attribute(self) -> String {
        let name = match self {
            Self::Normal => "NORMAL",
            Self::Fifo => "FIFO",
            Self::Delay => "DELAY",
            Self::Transaction => "TRANSACTION",
            Self::Mixed => "MIXED",
        };
        format!("+message.type={name}")
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Flush {
    Async,
    Sync,
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Name server port (0 = any free port).
    #[arg(long, default_value_t = 9876)]
    namesrv_port: u16,
    /// Broker port (0 = any free port).
    #[arg(long, default_value_t = 10911)]
    broker_port: u16,
    /// Also serve RocketMQ 5's gRPC protocol on this port (8081 is the proxy's usual one; 0 =
    /// any free port), for RocketMQ 5's gRPC clients.
    #[arg(long)]
    grpc_port: Option<u16>,
    #[command(flatten)]
    broker: BrokerArgs,
}

/// How a broker runs, for `mq serve` and `mq broker`.
#[derive(Debug, clap::Args)]
struct BrokerArgs {
    /// Address to listen on and advertise (loopback by default; widen deliberately).
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Store directory (default: a fresh temporary directory, removed on exit).
    #[arg(long)]
    store_dir: Option<PathBuf>,
    /// When sends are acknowledged relative to the disk.
    #[arg(long, value_enum, default_value = "async")]
    flush: Flush,
    /// Create unknown topics on first send.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    auto_create_topic: bool,
    /// Broker name (brokers of one name are one master and its slaves).
    #[arg(long, alias = "name", default_value = "broker-a")]
    broker_name: String,
    /// Commit-log segment size in bytes.
    #[arg(long, default_value_t = 64 * 1024 * 1024)]
    segment_size: i64,
    #[command(flatten)]
    tls: options::ServerTlsArgs,
    /// Check every request against the accounts of this ACL file (the shape of Apache
    /// RocketMQ's `plain_acl.yml`); refusals answer NO_PERMISSION.
    #[arg(long)]
    acl: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mq: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Quickstart(args) => quickstart::run(args).await,
            Command::Serve(args) => serve(args).await,
            Command::Namesrv { host, port, tls } => {
                let stop = StopSignal::listen()?;
                let namesrv = start_namesrv(host, port, &tls).await?;
                stop.wait().await?;
                let _ = namesrv.shutdown(Duration::from_secs(5)).await;
                Ok(())
            }
            Command::Broker {
                namesrv,
                port,
                broker,
            } => {
                let stop = StopSignal::listen()?;
                let name_servers = namesrv
                    .split(';')
                    .map(str::trim)
                    .filter(|a| !a.is_empty())
                    .map(str::to_owned)
                    .collect();
                let acl = load_acl(broker.acl.as_deref())?;
                let (_temp, broker) = start_broker(broker, port, name_servers, acl).await?;
                stop.wait().await?;
                let _ = broker.shutdown(Duration::from_secs(5)).await;
                Ok(())
            }
            Command::Proxy {
                namesrv,
                host,
                port,
                tls,
                acl,
                access_key,
                secret_key,
                cluster_tls_ca,
                delay_levels_for_delivery,
            } => {
                let stop = StopSignal::listen()?;
                let acl = load_acl(acl.as_deref())?;
                let credentials = access_key
                    .zip(secret_key)
                    .map(|(ak, sk)| mq_client_api::acl::Credentials::new(ak, sk));
                let cluster_tls = cluster_tls_ca
                    .as_deref()
                    .map(mq_remoting::ClientTls::with_roots_pem_file)
                    .transpose()
                    .map_err(|e| format!("TLS: {e}"))?;
                let proxy = start_grpc_proxy(
                    &namesrv,
                    host,
                    port,
                    GrpcSecurity {
                        tls: tls.server()?,
                        acl,
                        credentials,
                        cluster_tls,
                        delay_levels: delay_levels_for_delivery,
                    },
                )
                .await?;
                stop.wait().await?;
                proxy.shutdown().await;
                Ok(())
            }
            Command::Send {
                target,
                topic,
                body,
                tag,
                key,
                count,
                deliver_in,
            } => {
                let what = commands::Sends {
                    tag: tag.as_deref(),
                    key: key.as_deref(),
                    count,
                    deliver_in,
                };
                commands::send(&target, &topic, &body, &what).await
            }
            Command::Recall {
                target,
                topic,
                handle,
            } => commands::recall(&target, &topic, &handle).await,
            Command::Consume {
                target,
                topic,
                group,
                tags,
                count,
                wait_secs,
                from_first,
            } => {
                commands::consume(
                    &target,
                    &topic,
                    &group,
                    &tags,
                    count,
                    Duration::from_secs(wait_secs),
                    from_first,
                )
                .await
            }
            Command::Route { target, topic } => commands::route(&target, &topic).await,
            Command::Topic {
                action:
                    TopicAction::Create {
                        target,
                        topic,
                        queues,
                        message_type,
                    },
            } => {
                commands::topic_create(
                    &target,
                    &topic,
                    queues,
                    message_type.map(MessageType::attribute),
                )
                .await
            }
            Command::Topic {
                action: TopicAction::List { target },
            } => commands::topic_list(&target).await,
            Command::Group {
                action:
                    GroupAction::Create {
                        target,
                        group,
                        fifo,
                        retry_max_times,
                    },
            } => commands::group_create(&target, &group, fifo, retry_max_times).await,
            Command::Group {
                action: GroupAction::List { target },
            } => commands::group_list(&target).await,
            Command::Group {
                action:
                    GroupAction::Delete {
                        target,
                        group,
                        clean_offset,
                    },
            } => commands::group_delete(&target, &group, clean_offset).await,
            Command::Cluster { target } => commands::cluster(&target).await,
            Command::Bench {
                which:
                    BenchCommand::Produce {
                        args,
                        mode,
                        transport,
                        grpc_endpoint,
                    },
            } => bench::produce(args, mode, transport, grpc_endpoint).await,
            Command::Bench {
                which: BenchCommand::Consume { args },
            } => bench::consume(args).await,
            Command::Bench {
                which: BenchCommand::EchoServer,
            } => {
                let stop = StopSignal::listen()?;
                bench::echo_server(async {
                    let _ = stop.wait().await;
                })
                .await
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, whatever the peer put into its remark.
            eprintln!("mq: {}", e.replace(['\n', '\r'], " "));
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> Result<(), String> {
    let stop = StopSignal::listen()?;
    let namesrv = start_namesrv(args.broker.host, args.namesrv_port, &args.broker.tls).await?;
    let ns_addr = namesrv.local_addr().to_string();
    let host = args.broker.host;
    // The gRPC port takes the broker's certificate and mode, and its ACL: the proxy checks
    // each gRPC call against the broker's accounts, and reaches the broker as an account of
    // its own that no one else knows, over TLS as the broker registers when it serves TLS.
    let grpc_tls = args.broker.tls.server()?;
    let cluster_tls = args.broker.tls.registration()?;
    let acl = load_acl(args.broker.acl.as_deref())?;
    let (broker_acl, grpc_acl) = match (acl, args.grpc_port) {
        (Some(acl), Some(_)) => {
            let inner = inner_credentials()?;
            let broker_acl = acl
                .clone()
                .with_inner_account(&inner)
                .map_err(|e| e.to_string())?;
            (Some(broker_acl), Some((acl, inner)))
        }
        (acl, _) => (acl, None),
    };
    let (_temp, broker) = start_broker(
        args.broker,
        args.broker_port,
        vec![ns_addr.clone()],
        broker_acl,
    )
    .await?;
    let grpc = match args.grpc_port {
        Some(port) => {
            let (acl, credentials) = grpc_acl.unzip();
            let security = GrpcSecurity {
                tls: grpc_tls,
                acl,
                credentials,
                cluster_tls,
                delay_levels: false,
            };
            Some(start_grpc_proxy(&ns_addr, host, port, security).await?)
        }
        None => None,
    };
    stop.wait().await?;
    if let Some(proxy) = grpc {
        proxy.shutdown().await;
    }
    let _ = broker.shutdown(Duration::from_secs(5)).await;
    let _ = namesrv.shutdown(Duration::from_secs(5)).await;
    Ok(())
}

/// How a gRPC proxy secures its port and its way to the cluster, and what its cluster serves.
struct GrpcSecurity {
    /// TLS on the gRPC port.
    tls: Option<mq_remoting::ServerTls>,
    /// The ACL every call is checked against.
    acl: Option<mq_broker::Acl>,
    /// The account the proxy signs its requests to the cluster with.
    credentials: Option<mq_client_api::acl::Credentials>,
    /// TLS to the cluster.
    cluster_tls: Option<mq_remoting::ClientTls>,
    /// Serve delivery times with the default delay levels (a 4.x cluster: no timer).
    delay_levels: bool,
}

/// Starts the gRPC proxy in front of the cluster of `namesrv`, secured as `security` says,
/// and says where it listens.
async fn start_grpc_proxy(
    namesrv: &str,
    host: IpAddr,
    port: u16,
    security: GrpcSecurity,
) -> Result<mq_grpc::GrpcProxy, String> {
    let mut config =
        mq_grpc::GrpcProxyConfig::new(namesrv).with_listen(SocketAddr::new(host, port));
    if let Some(tls) = security.tls {
        config = config.with_tls(tls);
    }
    if let Some(acl) = security.acl {
        config = config.with_access_control(std::sync::Arc::new(acl));
    }
    if let Some(credentials) = security.credentials {
        config = config.with_credentials(credentials);
    }
    if let Some(tls) = security.cluster_tls {
        config = config.with_cluster_tls(tls);
    }
    if security.delay_levels {
        config = config.with_delay_levels(mq_client_api::names::default_delay_levels());
    }
    let proxy = mq_grpc::GrpcProxy::start(config)
        .await
        .map_err(|e| format!("gRPC proxy cannot listen on {host}:{port}: {e}"))?;
    say(&format!("gRPC proxy listening on {}", proxy.local_addr()));
    Ok(proxy)
}

/// The ACL file of `--acl`, read.
fn load_acl(path: Option<&std::path::Path>) -> Result<Option<mq_broker::Acl>, String> {
    path.map(mq_broker::Acl::load)
        .transpose()
        .map_err(|e| e.to_string())
}

/// An account for the gRPC proxy to reach its broker with: 24 random bytes from the
/// operating system, as hex, for both keys.
fn inner_credentials() -> Result<mq_client_api::acl::Credentials, String> {
    use std::io::Read;
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| format!("cannot make the gRPC proxy's account (/dev/urandom): {e}"))?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(mq_client_api::acl::Credentials::new(
        format!("mq-grpc-proxy-{}", &hex[..16]),
        &hex[16..],
    ))
}

/// Starts a name server and says where it listens.
async fn start_namesrv(
    host: IpAddr,
    port: u16,
    tls: &options::ServerTlsArgs,
) -> Result<NameServer, String> {
    let mut config = NamesrvConfig::default().with_listen(SocketAddr::new(host, port));
    if let Some(tls) = tls.server()? {
        config = config.with_tls(tls);
    }
    let namesrv = NameServer::start(config)
        .await
        .map_err(|e| format!("name server cannot listen on {host}:{port}: {e}"))?;
    say(&format!(
        "name server listening on {}",
        namesrv.local_addr()
    ));
    Ok(namesrv)
}

/// Starts a broker registered with `name_servers` and says where it listens and stores; a
/// store of its own in a temporary directory (removed when the guard drops) unless one is
/// given.
async fn start_broker(
    args: BrokerArgs,
    port: u16,
    name_servers: Vec<String>,
    acl: Option<mq_broker::Acl>,
) -> Result<(Option<TempStore>, Broker), String> {
    let (temp, dir) = match args.store_dir {
        Some(d) => (None, d),
        None => {
            let t = std::env::temp_dir().join(format!(
                "mq-store-{}-{}",
                std::process::id(),
                args.broker_name
            ));
            (Some(TempStore(t.clone())), t)
        }
    };
    let mut config = BrokerConfig::new(&dir)
        .with_listen(SocketAddr::new(args.host, port))
        .with_broker_name(args.broker_name)
        .with_name_servers(name_servers)
        .with_flush_mode(match args.flush {
            Flush::Async => FlushMode::Async,
            Flush::Sync => FlushMode::Sync,
        })
        .with_segment_size(args.segment_size)
        .with_auto_create_topic(args.auto_create_topic);
    if let Some(tls) = args.tls.server()? {
        config = config.with_tls(tls);
    }
    if let Some(tls) = args.tls.registration()? {
        config = config.with_name_server_tls(tls);
    }
    if let Some(acl) = acl {
        config = config.with_acl(acl);
    }
    let broker = Broker::start(config)
        .await
        .map_err(|e| format!("broker cannot start (store {}): {e}", dir.display()))?;
    say(&format!("broker listening on {}", broker.local_addr()));
    say(&format!("store at {}", dir.display()));
    Ok((temp, broker))
}

/// Ctrl-C (SIGINT) or, on Unix, SIGTERM (what `kill`, systemd and container runtimes send):
/// either stops a server the same orderly way, removing its temporary store. A server listens
/// before it starts, so that a signal that comes while it starts (right after its first
/// lines, say) is kept for [`StopSignal::wait`] instead of killing the process outright.
struct StopSignal {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl StopSignal {
    /// Starts listening (on Unix; elsewhere Ctrl-C is listened for by `wait`).
    fn listen() -> Result<Self, String> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let listen =
                |kind, name| signal(kind).map_err(|e| format!("cannot listen for {name}: {e}"));
            Ok(Self {
                interrupt: listen(SignalKind::interrupt(), "Ctrl-C")?,
                terminate: listen(SignalKind::terminate(), "SIGTERM")?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// Waits for either signal, received since [`StopSignal::listen`].
    async fn wait(mut self) -> Result<(), String> {
        #[cfg(unix)]
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
        #[cfg(not(unix))]
        tokio::signal::ctrl_c()
            .await
            .map_err(|e| format!("cannot wait for Ctrl-C: {e}"))?;
        say("shutting down");
        Ok(())
    }
}

/// Prints a status line; a closed stdout (the reader went away) must not stop the server.
fn say(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Removes a temporary store directory on exit.
pub(crate) struct TempStore(pub(crate) PathBuf);

impl Drop for TempStore {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
