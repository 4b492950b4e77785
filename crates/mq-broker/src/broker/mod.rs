//! The broker: configuration, start and shutdown, name-server registration, and the dispatch
//! of each request code to its handler, one module per family: `send.rs`, `reply.rs`,
//! `pull.rs`, `offsets.rs`, `clients.rs` and `admin.rs`.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mq_client_api::answer::respond;
use mq_client_api::body::RegisterBrokerBody;
use mq_client_api::header::{RegisterBrokerRequestHeader, UnregisterBrokerRequestHeader};
use mq_client_api::{ApiConfig, ClientApi, RequestCode, ResponseCode};
use mq_remoting::{
    ClientConfig, RemotingClient, RemotingCommand, RemotingServer, RequestContext, ServerConfig,
    ShutdownReport,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, warn};

use crate::state::{ClientRegistry, OffsetTable, TopicTable};
use crate::store::{FlushMode, MessageStore, StoreConfig};

/// Largest body the broker stores (Java `maxMessageSize`).
pub const MAX_MESSAGE_SIZE: usize = 4 * 1024 * 1024;
/// Longest properties string a record can carry.
const MAX_PROPERTIES_LEN: usize = 32_767;

/// Broker settings. Build with [`BrokerConfig::new`] and the `with_*` setters.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct BrokerConfig {
    /// Listen address. Default `127.0.0.1:0`; Java's default port is 10911.
    pub listen: SocketAddr,
    /// Broker name. Default `broker-a`.
    pub broker_name: String,
    /// Cluster name. Default `DefaultCluster`.
    pub cluster_name: String,
    /// Name servers to register with.
    pub name_servers: Vec<String>,
    /// How often to re-register. Default 30 s.
    pub register_interval: Duration,
    /// Create unknown topics from TBW102. Default true (Java `autoCreateTopicEnable`).
    pub auto_create_topic: bool,
    /// Queues of TBW102, the upper bound for auto-created topics. Default 8.
    pub default_topic_queue_nums: i32,
    /// Store settings.
    pub store: StoreConfig,
    /// How often consumer offsets are persisted. Default 5 s.
    pub persist_interval: Duration,
    /// Delay of each delay level, level 1 first. Default `1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m
    /// 8m 9m 10m 20m 30m 1h 2h` (Java `messageDelayLevel`).
    pub delay_levels: Vec<Duration>,
    /// Timer messages (5.x `TIMER_DELIVER_MS`, `TIMER_DELAY_SEC`, `TIMER_DELAY_MS`) may wait at
    /// most this long. Default 3 days (Java `timerMaxDelaySec`).
    pub timer_max_delay: Duration,
    /// Serve RECALL_MESSAGE (recalling a timer message before it is due). Default on; a Java
    /// 5.3 broker's `recallMessageEnable` is off by default.
    pub recall_enabled: bool,
    /// Reconsume count after which a returned message goes to the DLQ when the client does
    /// not say. Default 16.
    pub max_reconsume_times: i32,
    /// A half message undecided for this long is checked with its producer. Default 6 s
    /// (Java `transactionTimeOut`).
    pub transaction_timeout: Duration,
    /// How often half messages are checked. Default 1 s (Java: 60 s).
    pub transaction_check_interval: Duration,
    /// Checks after which a half message is rolled back. Default 15.
    pub transaction_max_checks: u32,
    /// Store the sends of one connection in arrival order (Java 4.5.1's single send thread),
    /// so a client may pipeline sends to a queue and keep their order. Default on. Off, sends
    /// are processed concurrently, as Apache RocketMQ ≥ 4.9 does with its default
    /// `sendMessageThreadPoolNums` (min(cores, 4)): pipelined sends may then be stored out of
    /// order.
    pub ordered_sends: bool,
    /// Store replies (request-reply) in the cluster's reply topic besides pushing them to the
    /// requester. Default on (Java `storeReplyMessageEnable`).
    pub store_replies: bool,
    /// TLS for the clients of this broker: certificate, key and mode. Default none: plain TCP.
    pub tls: Option<mq_remoting::ServerTls>,
    /// TLS to the name servers this broker registers with. Default none: plain TCP.
    pub name_server_tls: Option<mq_remoting::ClientTls>,
    /// Access control: every request is checked against these accounts. Default none.
    pub acl: Option<Arc<crate::acl::Acl>>,
}

pub use mq_client_api::names::default_delay_levels;

impl BrokerConfig {
    /// Defaults with the store in `store_dir`.
    pub fn new(store_dir: impl Into<PathBuf>) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            broker_name: "broker-a".into(),
            cluster_name: "DefaultCluster".into(),
            name_servers: Vec::new(),
            register_interval: Duration::from_secs(30),
            auto_create_topic: true,
            default_topic_queue_nums: 8,
            store: StoreConfig::new(store_dir),
            persist_interval: Duration::from_secs(5),
            delay_levels: default_delay_levels(),
            timer_max_delay: Duration::from_secs(3 * 24 * 3600),
            recall_enabled: true,
            max_reconsume_times: 16,
            transaction_timeout: Duration::from_secs(6),
            transaction_check_interval: Duration::from_secs(1),
            transaction_max_checks: 15,
            ordered_sends: true,
            store_replies: true,
            tls: None,
            name_server_tls: None,
            acl: None,
        }
    }

    /// Sets retention: how long commit-log segments are kept after their last write, and the
    /// use of the disk above which expired segments are deleted at once (10 points above it,
    /// the oldest whatever their age). See [`StoreConfig`].
    #[must_use]
    pub fn with_retention(mut self, reserved: Duration, disk_max_used_ratio: f64) -> Self {
        self.store.file_reserved_time = reserved;
        self.store.disk_max_used_ratio = disk_max_used_ratio;
        self
    }

    /// Sets the listen address.
    #[must_use]
    pub fn with_listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// Sets the broker name.
    #[must_use]
    pub fn with_broker_name(mut self, name: impl Into<String>) -> Self {
        self.broker_name = name.into();
        self
    }

    /// Sets the name servers.
    #[must_use]
    pub fn with_name_servers(mut self, addrs: Vec<String>) -> Self {
        self.name_servers = addrs;
        self
    }

    /// Sets the flush mode.
    #[must_use]
    pub fn with_flush_mode(mut self, mode: FlushMode) -> Self {
        self.store.flush_mode = mode;
        self
    }

    /// Sets the commit-log segment size.
    #[must_use]
    pub fn with_segment_size(mut self, bytes: i64) -> Self {
        self.store.segment_size = bytes;
        self
    }

    /// Sets the delay levels (level 1 first).
    #[must_use]
    pub fn with_delay_levels(mut self, levels: Vec<Duration>) -> Self {
        self.delay_levels = levels;
        self
    }

    /// Sets how long a timer message may wait at most.
    #[must_use]
    pub fn with_timer_max_delay(mut self, d: Duration) -> Self {
        self.timer_max_delay = d;
        self
    }

    /// Serves RECALL_MESSAGE or, off, refuses it with NO_PERMISSION as a Java broker does by
    /// default.
    #[must_use]
    pub fn with_recall(mut self, enabled: bool) -> Self {
        self.recall_enabled = enabled;
        self
    }

    /// Sets how long a half message may stay undecided before its producer is asked.
    #[must_use]
    pub fn with_transaction_timeout(mut self, d: Duration) -> Self {
        self.transaction_timeout = d;
        self
    }

    /// Enables or disables topic auto-creation.
    #[must_use]
    pub fn with_auto_create_topic(mut self, on: bool) -> Self {
        self.auto_create_topic = on;
        self
    }

    /// Serves TLS to clients as `tls` says (its mode decides whether plain clients are served
    /// too).
    #[must_use]
    pub fn with_tls(mut self, tls: mq_remoting::ServerTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Checks every request against `acl` (Java `aclEnable=true` with `plain_acl.yml`).
    #[must_use]
    pub fn with_acl(mut self, acl: crate::acl::Acl) -> Self {
        self.acl = Some(Arc::new(acl));
        self
    }

    /// Registers with the name servers over TLS.
    #[must_use]
    pub fn with_name_server_tls(mut self, tls: mq_remoting::ClientTls) -> Self {
        self.name_server_tls = Some(tls);
        self
    }

    /// Stores replies besides pushing them, or not (see [`BrokerConfig::store_replies`]).
    #[must_use]
    pub fn with_store_replies(mut self, on: bool) -> Self {
        self.store_replies = on;
        self
    }

    /// Stores one connection's sends in arrival order, or not (see
    /// [`BrokerConfig::ordered_sends`]).
    #[must_use]
    pub fn with_ordered_sends(mut self, on: bool) -> Self {
        self.ordered_sends = on;
        self
    }
}

pub(crate) struct Core {
    pub(crate) config: BrokerConfig,
    pub(crate) addr: SocketAddr,
    pub(crate) store: MessageStore,
    pub(crate) topics: TopicTable,
    pub(crate) offsets: OffsetTable,
    pub(crate) groups: crate::state::GroupTable,
    pub(crate) clients: ClientRegistry,
    pub(crate) api: ClientApi,
    watched: mq_remoting::ConnectionWatches,
    pub(crate) transactions: crate::transaction::TransactionState,
    pub(crate) timers: crate::timer::Timers,
    /// `CLUSTER` and the cluster's name as a properties string: what every message taken from
    /// a producer is stored with.
    pub(crate) cluster_stamp: String,
    /// Pop consumption's positions and messages in flight.
    pub(crate) pop: crate::pop::PopState,
    /// Orderly-consumption queue locks: (group, queue) → (client id, expiry).
    locks: parking_lot::Mutex<
        std::collections::HashMap<(String, mq_client_api::MessageQueue), (String, Instant)>,
    >,
    pub(crate) token: CancellationToken,
    pub(crate) tasks: TaskTracker,
}

/// A running broker.
#[derive(Debug)]
pub struct Broker {
    server: RemotingServer,
    core: Arc<CoreHandle>,
}

pub(crate) struct CoreHandle(pub(crate) Core);

impl std::fmt::Debug for CoreHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("addr", &self.0.addr)
            .field("name", &self.0.config.broker_name)
            .finish_non_exhaustive()
    }
}

impl Broker {
    /// Opens the store (recovering it), binds, registers with the name servers and starts the
    /// periodic tasks.
    ///
    /// # Errors
    /// Store and bind errors.
    pub async fn start(config: BrokerConfig) -> io::Result<Self> {
        let dir = config.store.dir.clone();
        let store = MessageStore::open(config.store.clone())?;
        let topics = TopicTable::load(
            dir.join("config/topics.json"),
            config.auto_create_topic,
            config.default_topic_queue_nums,
        )?;
        // The topics a Java broker makes at start: the cluster's reply topic (one queue, for
        // request-reply), and topics named after the cluster (16 queues) and the broker (one
        // queue), readable, writable and inherited. Tools and Java's proxy ask the name server
        // for the cluster's name as a topic to find its brokers.
        let reply_topic = mq_client_api::names::reply_topic(&config.cluster_name);
        let inherit_rw = mq_client_api::body::perm::INHERIT
            | mq_client_api::body::perm::READ
            | mq_client_api::body::perm::WRITE;
        for (topic, queues, perm) in [
            (reply_topic, 1, None),
            (config.cluster_name.clone(), 16, Some(inherit_rw)),
            (config.broker_name.clone(), 1, Some(inherit_rw)),
        ] {
            if topics.get(&topic).is_none() {
                let mut t = mq_client_api::body::TopicConfig::new(topic, queues);
                if let Some(perm) = perm {
                    t.perm = perm;
                }
                topics.put(t)?;
            }
        }
        let offsets = OffsetTable::load(dir.join("config/consumerOffset.json"))?;
        let groups = crate::state::GroupTable::load(dir.join("config/subscriptionGroup.json"))?;
        let mut server_config = ServerConfig::default().with_listen(config.listen);
        if let Some(tls) = &config.tls {
            server_config = server_config.with_tls(tls.clone());
        }
        let server = RemotingServer::bind(server_config).await?;
        let mut client_config = ClientConfig::default();
        if let Some(tls) = &config.name_server_tls {
            client_config = client_config.with_tls(tls.clone());
        }
        let remoting = RemotingClient::new(client_config);
        let cluster_stamp = mq_client_api::message::encode_properties(
            &[(
                mq_client_api::message::property::CLUSTER,
                config.cluster_name.as_str(),
            )]
            .into_iter()
            .collect(),
        );
        let core = Arc::new(CoreHandle(Core {
            addr: server.local_addr(),
            cluster_stamp,
            config,
            store,
            topics,
            offsets,
            groups,
            clients: ClientRegistry::default(),
            api: ClientApi::new(remoting, ApiConfig::default()),
            watched: mq_remoting::ConnectionWatches::default(),
            transactions: crate::transaction::TransactionState::default(),
            timers: crate::timer::Timers::default(),
            pop: crate::pop::PopState::default(),
            locks: parking_lot::Mutex::new(std::collections::HashMap::new()),
            token: CancellationToken::new(),
            tasks: TaskTracker::new(),
        }));
        // Sends of one connection are stored in arrival order (Java 4.5.1's single send
        // thread), so a client may pipeline sends to a queue and keep their order.
        if core.0.config.ordered_sends {
            for code in [
                RequestCode::SEND_MESSAGE,
                RequestCode::SEND_MESSAGE_V2,
                RequestCode::SEND_BATCH_MESSAGE,
            ] {
                server.set_ordered(code.0);
            }
        }
        server.set_default_processor(Arc::new(Processor(Arc::clone(&core))));
        if let Some(acl) = &core.0.config.acl {
            server.add_rpc_hook(Arc::new(crate::acl::AclHook(Arc::clone(acl))));
        }
        core.recover_transactions();
        core.register_all().await;
        core.spawn_periodic();
        core.spawn_scheduler();
        core.spawn_timers();
        core.spawn_transaction_checker();
        info!(addr = %core.0.addr, name = %core.0.config.broker_name, "broker started");
        Ok(Self { server, core })
    }

    /// The address clients use.
    pub fn local_addr(&self) -> SocketAddr {
        self.core.0.addr
    }

    /// The broker name.
    pub fn name(&self) -> &str {
        &self.core.0.config.broker_name
    }

    /// The store.
    pub fn store(&self) -> &MessageStore {
        &self.core.0.store
    }

    /// Adds a hook that sees every request before its processor (auditing, fault injection).
    pub fn add_rpc_hook(&self, hook: Arc<dyn mq_remoting::RpcHook>) {
        self.server.add_rpc_hook(hook);
    }

    /// Registers with every name server now (also done periodically).
    pub async fn register_now(&self) {
        self.core.register_all().await;
    }

    /// Stops at once, as `kill -9` would: no unregistration, no drain, no final flush. Every
    /// connection closes (so the name server drops this broker as it does for a dead one) and
    /// the port refuses connections. What reached the store's files stays; recover it by
    /// starting a broker on the same directory.
    pub async fn kill(&self) {
        let core = &self.core.0;
        core.token.cancel();
        self.server.abort();
        let _ = core.api.remoting().shutdown(Duration::ZERO).await;
        core.tasks.close();
        core.tasks.wait().await;
    }

    /// Shuts down: unregisters from the name servers, drains requests for up to `grace`,
    /// persists offsets and flushes the store.
    pub async fn shutdown(&self, grace: Duration) -> ShutdownReport {
        let core = &self.core.0;
        core.token.cancel();
        self.core.unregister_all().await;
        let report = self.server.shutdown(grace).await;
        core.tasks.close();
        core.tasks.wait().await;
        if let Err(e) = core.offsets.persist() {
            warn!(cause = %e, "persisting consumer offsets failed");
        }
        core.store.shutdown().await;
        let _ = core.api.remoting().shutdown(grace).await;
        report
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.core.0.token.cancel();
    }
}

/// The pop codes in their newer numbering (3442…, which fits a ROCKETMQ header) read as 5.3's
/// (200050…, above 16 bits, so JSON headers only); other codes as they are.
pub(crate) fn pop_code(code: RequestCode) -> RequestCode {
    match code.0 {
        3442 => RequestCode::POP_MESSAGE,
        3443 => RequestCode::ACK_MESSAGE,
        3444 => RequestCode::PEEK_MESSAGE,
        3445 => RequestCode::CHANGE_MESSAGE_INVISIBLETIME,
        3446 => RequestCode::NOTIFICATION,
        3447 => RequestCode::POLLING_INFO,
        3543 => RequestCode::BATCH_ACK_MESSAGE,
        _ => code,
    }
}

/// The 5.x client-facing codes this broker does not serve, with their name and the feature each
/// belongs to, so that a client hears what is missing (spec §10 #9).
fn unsupported_feature(code: RequestCode) -> Option<(&'static str, &'static str)> {
    let feature = match pop_code(code) {
        RequestCode::BATCH_ACK_MESSAGE => {
            "acknowledging popped messages in batches (ack them one by one)"
        }
        RequestCode::PEEK_MESSAGE => "peeking at messages without popping them",
        RequestCode::NOTIFICATION | RequestCode::POLLING_INFO => {
            "pop notifications (pop with a poll time instead)"
        }
        RequestCode::QUERY_ASSIGNMENT
        | RequestCode::SET_MESSAGE_REQUEST_MODE
        | RequestCode::GET_ALL_MESSAGE_REQUEST_MODE => "server-side queue assignment (pop mode)",
        _ => return None,
    };
    Some((pop_code(code).name()?, feature))
}

/// The request header of type `$ty`, or (from the handler) the answer saying why it is not one.
macro_rules! decode_or_answer {
    ($ty:ty, $req:expr) => {
        match <$ty as mq_client_api::header::CommandHeader>::decode(&$req.ext_fields) {
            Ok(h) => h,
            Err(e) => return mq_client_api::answer::header_error(&$req, &e),
        }
    };
}

mod admin;
mod clients;
mod offsets;
mod pop;
mod pull;
mod reply;
mod send;

impl CoreHandle {
    fn spawn_periodic(self: &Arc<Self>) {
        let c = Arc::clone(self);
        self.0.tasks.spawn(
            async move {
                let mut register = tokio::time::interval(c.0.config.register_interval);
                let mut persist = tokio::time::interval(c.0.config.persist_interval);
                register.tick().await;
                persist.tick().await;
                loop {
                    tokio::select! {
                        () = c.0.token.cancelled() => break,
                        _ = register.tick() => c.register_all().await,
                        _ = persist.tick() => {
                            if let Err(e) = c.0.offsets.persist() {
                                warn!(cause = %e, "persisting consumer offsets failed");
                            }
                        }
                    }
                }
            }
            .instrument(tracing::debug_span!("broker_periodic")),
        );
    }

    fn register_header(&self) -> RegisterBrokerRequestHeader {
        RegisterBrokerRequestHeader {
            broker_name: self.0.config.broker_name.clone(),
            broker_addr: self.0.addr.to_string(),
            cluster_name: self.0.config.cluster_name.clone(),
            ha_server_addr: format!(
                "{}:{}",
                self.0.addr.ip(),
                self.0.addr.port().wrapping_add(1)
            ),
            broker_id: 0,
            ..Default::default()
        }
    }

    async fn register_all(&self) {
        let body = RegisterBrokerBody {
            topic_config_serialize_wrapper: self.0.topics.snapshot(),
            filter_server_list: Vec::new(),
        };
        // All name servers at once: a silent one delays none of the others.
        let calls = self.0.config.name_servers.iter().map(|ns| {
            let body = &body;
            async move {
                match self
                    .0
                    .api
                    .register_broker(ns, self.register_header(), body, Duration::from_secs(6))
                    .await
                {
                    Ok(_) => debug!(namesrv = %ns, "registered"),
                    Err(e) => warn!(namesrv = %ns, cause = %e, "registration failed"),
                }
            }
        });
        futures_util::future::join_all(calls).await;
    }

    async fn unregister_all(&self) {
        let h = self.register_header();
        let header = UnregisterBrokerRequestHeader {
            broker_name: h.broker_name,
            broker_addr: h.broker_addr,
            cluster_name: h.cluster_name,
            broker_id: 0,
        };
        for ns in &self.0.config.name_servers {
            if let Err(e) = self
                .0
                .api
                .unregister_broker(ns, &header, Duration::from_secs(3))
                .await
            {
                warn!(namesrv = %ns, cause = %e, "unregistration failed");
            }
        }
    }

    /// Answers one request: each code (or family of codes) has its handler; codes this
    /// broker does not serve get REQUEST_CODE_NOT_SUPPORTED naming the feature.
    async fn handle(
        self: Arc<Self>,
        ctx: RequestContext,
        req: RemotingCommand,
    ) -> Option<RemotingCommand> {
        let answer = match pop_code(RequestCode(req.code)) {
            RequestCode::SEND_MESSAGE
            | RequestCode::SEND_MESSAGE_V2
            | RequestCode::SEND_BATCH_MESSAGE => self.send(&ctx, req).await,
            RequestCode::SEND_REPLY_MESSAGE | RequestCode::SEND_REPLY_MESSAGE_V2 => {
                self.reply(&ctx, req).await
            }
            // 5.x lite pull consumers (Java's DefaultLitePullConsumer too) pull with 361.
            RequestCode::PULL_MESSAGE | RequestCode::LITE_PULL_MESSAGE => self.pull(req).await,
            RequestCode::POP_MESSAGE => self.pop(req).await,
            RequestCode::ACK_MESSAGE => self.ack(&req),
            RequestCode::CHANGE_MESSAGE_INVISIBLETIME => self.change_invisible_time(&req),
            RequestCode::QUERY_CONSUMER_OFFSET => self.query_consumer_offset(&req),
            RequestCode::UPDATE_CONSUMER_OFFSET => self.update_consumer_offset(&req),
            RequestCode::HEART_BEAT => self.heartbeat(&ctx, &req).await,
            RequestCode::UNREGISTER_CLIENT => self.unregister_client(&req).await,
            RequestCode::GET_CONSUMER_LIST_BY_GROUP => self.consumer_list(&req),
            RequestCode::GET_MAX_OFFSET | RequestCode::GET_MIN_OFFSET => self.queue_bound(&req),
            RequestCode::SEARCH_OFFSET_BY_TIMESTAMP => self.search_offset(&req),
            RequestCode::GET_EARLIEST_MSG_STORETIME => self.earliest_store_time(&req),
            RequestCode::VIEW_MESSAGE_BY_ID => self.view_message(&req),
            RequestCode::QUERY_MESSAGE => self.query_message(&req),
            RequestCode::UPDATE_AND_CREATE_TOPIC => self.create_topic(&req).await,
            RequestCode::GET_TOPIC_CONFIG => self.topic_config(&req),
            RequestCode::UPDATE_AND_CREATE_SUBSCRIPTIONGROUP => self.update_group(&req),
            RequestCode::GET_SUBSCRIPTIONGROUP_CONFIG => self.group_config(&req),
            RequestCode::GET_ALL_SUBSCRIPTIONGROUP_CONFIG => self.all_groups(&req),
            RequestCode::DELETE_SUBSCRIPTIONGROUP => self.delete_group(&req),
            RequestCode::CONSUMER_SEND_MSG_BACK => self.send_back(&req).await,
            RequestCode::RECALL_MESSAGE => self.recall(&ctx, &req).await,
            RequestCode::LOCK_BATCH_MQ | RequestCode::UNLOCK_BATCH_MQ => self.lock_batch(&req),
            // A oneway request: no answer.
            RequestCode::END_TRANSACTION => return self.end_transaction(&req).await,
            other => respond(
                &req,
                ResponseCode::REQUEST_CODE_NOT_SUPPORTED,
                Some(match unsupported_feature(other) {
                    Some((name, feature)) => format!(
                        "{name} ({}): {feature} is not supported by this broker",
                        req.code
                    ),
                    None => format!(" request type {} not supported", req.code),
                }),
            ),
        };
        Some(answer)
    }

    pub(crate) fn spawn_register(self: &Arc<Self>) {
        let c = Arc::clone(self);
        self.0.tasks.spawn(async move { c.register_all().await });
    }
}

/// The broker's request processor: every code goes to [`CoreHandle::handle`]; sends queued
/// back to back on one connection are stored as one group.
struct Processor(Arc<CoreHandle>);

impl mq_remoting::RequestProcessor for Processor {
    fn process(
        &self,
        ctx: RequestContext,
        req: RemotingCommand,
    ) -> mq_remoting::BoxFuture<'static, Option<RemotingCommand>> {
        let core = Arc::clone(&self.0);
        Box::pin(async move { core.handle(ctx, req).await })
    }

    fn process_ordered(
        &self,
        ctx: RequestContext,
        reqs: Vec<RemotingCommand>,
    ) -> mq_remoting::BoxFuture<'static, Vec<Option<RemotingCommand>>> {
        let core = Arc::clone(&self.0);
        Box::pin(async move {
            let sends = reqs.iter().all(|r| {
                matches!(
                    RequestCode(r.code),
                    RequestCode::SEND_MESSAGE
                        | RequestCode::SEND_MESSAGE_V2
                        | RequestCode::SEND_BATCH_MESSAGE
                )
            });
            if sends {
                return core.send_group(&ctx, reqs).await;
            }
            let mut out = Vec::with_capacity(reqs.len());
            for req in reqs {
                out.push(Arc::clone(&core).handle(ctx.clone(), req).await);
            }
            out
        })
    }
}
