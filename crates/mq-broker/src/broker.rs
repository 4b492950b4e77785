//! The broker: configuration, start and shutdown, name-server registration, and the request
//! processors over the store and tables.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use mq_client_api::body::{
    ConsumerListByGroupBody, HeartbeatData, RegisterBrokerBody, TopicConfig, from_json, perm,
    to_json,
};
use mq_client_api::header::{
    CommandHeader, CreateTopicRequestHeader, GetConsumerListByGroupRequestHeader,
    GetEarliestMsgStoretimeRequestHeader, GetMaxOffsetRequestHeader, GetMinOffsetRequestHeader,
    HeaderError, NotifyConsumerIdsChangedRequestHeader, PullMessageRequestHeader,
    QueryConsumerOffsetRequestHeader, QueryMessageRequestHeader, RegisterBrokerRequestHeader,
    SearchOffsetRequestHeader, SendMessageRequestHeader, SendMessageRequestHeaderV2,
    UnregisterBrokerRequestHeader, UnregisterClientRequestHeader,
    UpdateConsumerOffsetRequestHeader, ViewMessageRequestHeader, pull_sys_flag,
};
use mq_client_api::message::{Message, MessageExt, decode_batch, decode_properties, property};
use mq_client_api::validate::{TOPIC_MAX_LEN, java_hash};
use mq_client_api::{ApiConfig, ClientApi, RequestCode, ResponseCode};
use mq_remoting::{
    ClientConfig, ConnectionHandle, RemotingClient, RemotingCommand, RemotingServer,
    RequestContext, ServerConfig, ShutdownReport,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, warn};

use crate::state::{ClientRegistry, Member, OffsetTable, TBW102, TopicTable};
use crate::store::{FlushMode, GetStatus, MessageStore, StoreConfig};

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
}

/// The default delay levels.
pub fn default_delay_levels() -> Vec<Duration> {
    [
        1u64, 5, 10, 30, 60, 120, 180, 240, 300, 360, 420, 480, 540, 600, 1200, 1800, 3600, 7200,
    ]
    .into_iter()
    .map(Duration::from_secs)
    .collect()
}

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
            max_reconsume_times: 16,
            transaction_timeout: Duration::from_secs(6),
            transaction_check_interval: Duration::from_secs(1),
            transaction_max_checks: 15,
            ordered_sends: true,
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
    pub(crate) clients: ClientRegistry,
    pub(crate) api: ClientApi,
    watched: parking_lot::Mutex<std::collections::HashSet<u64>>,
    pub(crate) transactions: crate::transaction::TransactionState,
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
        let offsets = OffsetTable::load(dir.join("config/consumerOffset.json"))?;
        let server =
            RemotingServer::bind(ServerConfig::default().with_listen(config.listen)).await?;
        let remoting = RemotingClient::new(ClientConfig::default());
        let core = Arc::new(CoreHandle(Core {
            addr: server.local_addr(),
            config,
            store,
            topics,
            offsets,
            clients: ClientRegistry::default(),
            api: ClientApi::new(remoting, ApiConfig::default()),
            watched: parking_lot::Mutex::new(std::collections::HashSet::new()),
            transactions: crate::transaction::TransactionState::default(),
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
        core.recover_transactions();
        core.register_all().await;
        core.spawn_periodic();
        core.spawn_scheduler();
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

/// The 5.x client-facing codes this broker does not serve, with their name and the feature each
/// belongs to, so that a client hears what is missing (spec §10 #9). The pop codes come in two
/// numberings: 5.3's (200050…, above 16 bits, so JSON headers only) and the newer 3442… that
/// fits a ROCKETMQ header, read here as 5.3's.
fn unsupported_feature(code: RequestCode) -> Option<(&'static str, &'static str)> {
    const POP: &str = "pop consumption (receive, ack, change invisible time)";
    const SERVER_REBALANCE: &str = "server-side queue assignment (pop mode)";
    let code = match code.0 {
        3442 => RequestCode::POP_MESSAGE,
        3443 => RequestCode::ACK_MESSAGE,
        3444 => RequestCode::PEEK_MESSAGE,
        3445 => RequestCode::CHANGE_MESSAGE_INVISIBLETIME,
        3446 => RequestCode::NOTIFICATION,
        3447 => RequestCode::POLLING_INFO,
        3543 => RequestCode::BATCH_ACK_MESSAGE,
        _ => code,
    };
    let feature = match code {
        RequestCode::POP_MESSAGE
        | RequestCode::ACK_MESSAGE
        | RequestCode::BATCH_ACK_MESSAGE
        | RequestCode::PEEK_MESSAGE
        | RequestCode::CHANGE_MESSAGE_INVISIBLETIME
        | RequestCode::NOTIFICATION
        | RequestCode::POLLING_INFO => POP,
        RequestCode::QUERY_ASSIGNMENT
        | RequestCode::SET_MESSAGE_REQUEST_MODE
        | RequestCode::GET_ALL_MESSAGE_REQUEST_MODE => SERVER_REBALANCE,
        RequestCode::RECALL_MESSAGE => "message recall",
        RequestCode::SEND_REPLY_MESSAGE | RequestCode::SEND_REPLY_MESSAGE_V2 => "request-reply",
        _ => return None,
    };
    Some((code.name()?, feature))
}

pub(crate) fn resp(
    req: &RemotingCommand,
    code: ResponseCode,
    remark: impl Into<Option<String>>,
) -> RemotingCommand {
    RemotingCommand::response_to(req, code.0, remark.into())
}

fn header_error(req: &RemotingCommand, e: &HeaderError) -> RemotingCommand {
    resp(req, ResponseCode::SYSTEM_ERROR, Some(e.to_string()))
}

macro_rules! decode_or_answer {
    ($ty:ty, $req:expr) => {
        match <$ty>::decode(&$req.ext_fields) {
            Ok(h) => h,
            Err(e) => return Some(header_error(&$req, &e)),
        }
    };
}

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

    async fn handle(
        self: Arc<Self>,
        ctx: RequestContext,
        req: RemotingCommand,
    ) -> Option<RemotingCommand> {
        match RequestCode(req.code) {
            RequestCode::SEND_MESSAGE
            | RequestCode::SEND_MESSAGE_V2
            | RequestCode::SEND_BATCH_MESSAGE => Some(self.send(&ctx, req).await),
            // 5.x lite pull consumers (Java's DefaultLitePullConsumer too) pull with 361.
            RequestCode::PULL_MESSAGE | RequestCode::LITE_PULL_MESSAGE => {
                Some(self.pull(req).await)
            }
            RequestCode::QUERY_CONSUMER_OFFSET => {
                let h = decode_or_answer!(QueryConsumerOffsetRequestHeader, req);
                let found = self.0.offsets.get(&h.consumer_group, &h.topic, h.queue_id);
                Some(match found {
                    Some(offset) => resp(&req, ResponseCode::SUCCESS, None)
                        .with_ext("offset", offset.to_string()),
                    // Never consumed and nothing was ever removed from the queue: start at 0.
                    None if h.set_zero_if_not_found != Some(false) => {
                        resp(&req, ResponseCode::SUCCESS, None).with_ext("offset", "0")
                    }
                    None => resp(
                        &req,
                        ResponseCode::QUERY_NOT_FOUND,
                        Some("Not found, V3_0_6_SNAPSHOT maybe".into()),
                    ),
                })
            }
            RequestCode::UPDATE_CONSUMER_OFFSET => {
                let h = decode_or_answer!(UpdateConsumerOffsetRequestHeader, req);
                self.0
                    .offsets
                    .commit(&h.consumer_group, &h.topic, h.queue_id, h.commit_offset);
                Some(resp(&req, ResponseCode::SUCCESS, None))
            }
            RequestCode::HEART_BEAT => Some(self.heartbeat(&ctx, &req).await),
            RequestCode::UNREGISTER_CLIENT => {
                let h = decode_or_answer!(UnregisterClientRequestHeader, req);
                if let Some(g) = &h.producer_group {
                    self.0.clients.remove_producer(g, &h.client_id);
                }
                if let Some(g) = &h.consumer_group
                    && self.0.clients.remove_consumer(g, &h.client_id)
                {
                    self.notify_group_changed(g).await;
                }
                Some(resp(&req, ResponseCode::SUCCESS, None))
            }
            RequestCode::GET_CONSUMER_LIST_BY_GROUP => {
                let h = decode_or_answer!(GetConsumerListByGroupRequestHeader, req);
                let ids = self.0.clients.consumer_ids(&h.consumer_group);
                Some(if ids.is_empty() {
                    resp(
                        &req,
                        ResponseCode::SYSTEM_ERROR,
                        Some(format!("no consumer for this group, {}", h.consumer_group)),
                    )
                } else {
                    resp(&req, ResponseCode::SUCCESS, None).with_body(to_json(
                        &ConsumerListByGroupBody {
                            consumer_id_list: ids,
                        },
                    ))
                })
            }
            RequestCode::GET_MAX_OFFSET => {
                let h = decode_or_answer!(GetMaxOffsetRequestHeader, req);
                let offset = self.0.store.max_offset(&h.topic, h.queue_id);
                Some(resp(&req, ResponseCode::SUCCESS, None).with_ext("offset", offset.to_string()))
            }
            RequestCode::GET_MIN_OFFSET => {
                let h = decode_or_answer!(GetMinOffsetRequestHeader, req);
                // Moves up as retention deletes the oldest commit-log segments.
                let offset = self.0.store.min_offset(&h.topic, h.queue_id);
                Some(resp(&req, ResponseCode::SUCCESS, None).with_ext("offset", offset.to_string()))
            }
            RequestCode::SEARCH_OFFSET_BY_TIMESTAMP => {
                let h = decode_or_answer!(SearchOffsetRequestHeader, req);
                Some(
                    match self
                        .0
                        .store
                        .search_offset(&h.topic, h.queue_id, h.timestamp)
                    {
                        Ok(offset) => resp(&req, ResponseCode::SUCCESS, None)
                            .with_ext("offset", offset.to_string()),
                        Err(e) => resp(&req, ResponseCode::SYSTEM_ERROR, Some(e.to_string())),
                    },
                )
            }
            RequestCode::GET_EARLIEST_MSG_STORETIME => {
                let h = decode_or_answer!(GetEarliestMsgStoretimeRequestHeader, req);
                Some(
                    match self.0.store.earliest_store_time(&h.topic, h.queue_id) {
                        Ok(Some(t)) => resp(&req, ResponseCode::SUCCESS, None)
                            .with_ext("timestamp", t.to_string()),
                        Ok(None) => resp(
                            &req,
                            ResponseCode::SYSTEM_ERROR,
                            Some("queue is empty".into()),
                        ),
                        Err(e) => resp(&req, ResponseCode::SYSTEM_ERROR, Some(e.to_string())),
                    },
                )
            }
            RequestCode::VIEW_MESSAGE_BY_ID => {
                let h = decode_or_answer!(ViewMessageRequestHeader, req);
                Some(match self.0.store.read_record(h.offset) {
                    Ok(record) => resp(&req, ResponseCode::SUCCESS, None).with_body(record),
                    Err(e) => resp(
                        &req,
                        ResponseCode::SYSTEM_ERROR,
                        Some(format!(
                            "can not find message by the offset {}: {e}",
                            h.offset
                        )),
                    ),
                })
            }
            RequestCode::QUERY_MESSAGE => {
                let h = decode_or_answer!(QueryMessageRequestHeader, req);
                let max = usize::try_from(h.max_num).unwrap_or(0).clamp(1, 64);
                Some(match self.0.store.query_by_key(&h.topic, &h.key, max) {
                    Ok(records) if !records.is_empty() => {
                        let mut body = BytesMut::new();
                        for r in records {
                            body.extend_from_slice(&r);
                        }
                        resp(&req, ResponseCode::SUCCESS, None)
                            .with_ext(
                                "indexLastUpdateTimestamp",
                                crate::store::now_ms().to_string(),
                            )
                            .with_ext("indexLastUpdatePhyoffset", "0")
                            .with_body(body.freeze())
                    }
                    Ok(_) => resp(
                        &req,
                        ResponseCode::QUERY_NOT_FOUND,
                        Some("can not find message, maybe time range not correct".into()),
                    ),
                    Err(e) => resp(&req, ResponseCode::SYSTEM_ERROR, Some(e.to_string())),
                })
            }
            RequestCode::UPDATE_AND_CREATE_TOPIC => {
                let h = decode_or_answer!(CreateTopicRequestHeader, req);
                if h.topic == TBW102 || h.topic.len() > TOPIC_MAX_LEN {
                    return Some(resp(
                        &req,
                        ResponseCode::SYSTEM_ERROR,
                        Some(format!(
                            "The topic[{}] is conflict with system reserved words or too long.",
                            h.topic
                        )),
                    ));
                }
                let tc = TopicConfig {
                    topic_name: h.topic,
                    read_queue_nums: h.read_queue_nums,
                    write_queue_nums: h.write_queue_nums,
                    perm: h.perm,
                    topic_filter_type: h.topic_filter_type,
                    topic_sys_flag: h.topic_sys_flag.unwrap_or(0),
                    order: h.order,
                };
                Some(match self.0.topics.put(tc) {
                    Ok(()) => {
                        // As Java does: the name servers know the topic before the caller hears
                        // it was created, so a route lookup right after sees this broker.
                        self.register_all().await;
                        resp(&req, ResponseCode::SUCCESS, None)
                    }
                    Err(e) => resp(&req, ResponseCode::SYSTEM_ERROR, Some(e.to_string())),
                })
            }
            RequestCode::CONSUMER_SEND_MSG_BACK => Some(self.send_back(&req).await),
            RequestCode::LOCK_BATCH_MQ | RequestCode::UNLOCK_BATCH_MQ => {
                Some(self.lock_batch(&req))
            }
            RequestCode::END_TRANSACTION => self.end_transaction(&req).await,
            other => Some(resp(
                &req,
                ResponseCode::REQUEST_CODE_NOT_SUPPORTED,
                Some(match unsupported_feature(other) {
                    Some((name, feature)) => format!(
                        "{name} ({}): {feature} is not supported by this broker",
                        other.0
                    ),
                    None => format!(" request type {} not supported", other.0),
                }),
            )),
        }
    }

    /// LOCK_BATCH_MQ / UNLOCK_BATCH_MQ: a queue is locked by one client of a group at a time,
    /// until it unlocks or the lock is not renewed for 60 s (Java `RebalanceLockManager`).
    fn lock_batch(&self, req: &RemotingCommand) -> RemotingCommand {
        const LOCK_EXPIRY: Duration = Duration::from_secs(60);
        let body: mq_client_api::body::LockBatchRequestBody =
            match from_json("LockBatchRequestBody", &req.body) {
                Ok(b) => b,
                Err(e) => return resp(req, ResponseCode::SYSTEM_ERROR, Some(e.to_string())),
            };
        let now = Instant::now();
        let mut locks = self.0.locks.lock();
        if req.code == RequestCode::UNLOCK_BATCH_MQ.0 {
            for mq in body.mq_set {
                let key = (body.consumer_group.clone(), mq);
                if locks
                    .get(&key)
                    .is_some_and(|(owner, _)| *owner == body.client_id)
                {
                    locks.remove(&key);
                }
            }
            return resp(req, ResponseCode::SUCCESS, None);
        }
        let mut locked = Vec::new();
        for mq in body.mq_set {
            let key = (body.consumer_group.clone(), mq.clone());
            let free = locks
                .get(&key)
                .is_none_or(|(owner, until)| *owner == body.client_id || now >= *until);
            if free {
                locks.insert(key, (body.client_id.clone(), now + LOCK_EXPIRY));
                locked.push(mq);
            }
        }
        resp(req, ResponseCode::SUCCESS, None).with_body(to_json(
            &mq_client_api::body::LockBatchResponseBody {
                lock_ok_mq_set: locked,
            },
        ))
    }

    pub(crate) fn spawn_register(self: &Arc<Self>) {
        let c = Arc::clone(self);
        self.0.tasks.spawn(async move { c.register_all().await });
    }

    /// The config of `topic`, creating it from `default_topic` when allowed (spec §8.2).
    fn topic_or_create(
        self: &Arc<Self>,
        topic: &str,
        default_topic: &str,
        client_queues: i32,
    ) -> Result<TopicConfig, String> {
        if let Some(tc) = self.0.topics.get(topic) {
            return Ok(tc);
        }
        let created = if topic.starts_with("%RETRY%") {
            Some(TopicConfig::new(topic, 1))
        } else {
            self.0
                .topics
                .get(default_topic)
                .filter(|d| d.perm & perm::INHERIT != 0)
                .map(|d| {
                    let mut tc =
                        TopicConfig::new(topic, client_queues.min(d.write_queue_nums).max(0));
                    tc.perm = d.perm & !perm::INHERIT;
                    tc.topic_filter_type = d.topic_filter_type;
                    tc
                })
        };
        match created {
            Some(tc) if tc.write_queue_nums > 0 => {
                self.0.topics.put(tc.clone()).map_err(|e| e.to_string())?;
                info!(topic, queues = tc.write_queue_nums, "topic auto-created");
                self.spawn_register();
                Ok(tc)
            }
            _ => Err(format!("topic[{topic}] not exist, apply first please!")),
        }
    }

    async fn send(self: &Arc<Self>, ctx: &RequestContext, req: RemotingCommand) -> RemotingCommand {
        let mut answers = self.send_group(ctx, vec![req]).await;
        answers
            .pop()
            .flatten()
            .unwrap_or_else(|| RemotingCommand::response(ResponseCode::SYSTEM_ERROR.0, None))
    }

    /// Sends that arrived back to back on one connection: every message is appended in
    /// arrival order with one write to the commit log (one fsync wait in SYNC mode), and each
    /// request gets its own answer.
    async fn send_group(
        self: &Arc<Self>,
        ctx: &RequestContext,
        reqs: Vec<RemotingCommand>,
    ) -> Vec<Option<RemotingCommand>> {
        let mut answers: Vec<Option<RemotingCommand>> = Vec::with_capacity(reqs.len());
        let mut planned: Vec<(usize, i32)> = Vec::new();
        let mut groups: Vec<Vec<MessageExt>> = Vec::new();
        for (i, req) in reqs.iter().enumerate() {
            match self.plan_send(ctx, req) {
                Ok(plan) => {
                    let mut messages = plan.messages;
                    // A batch is appended as it is, one unit taking contiguous offsets; a single
                    // message may be diverted (half or delayed).
                    if !plan.batch {
                        for ext in &mut messages {
                            self.route_message(ext);
                        }
                    }
                    planned.push((i, plan.queue_id));
                    groups.push(messages);
                    answers.push(None);
                }
                Err(answer) => answers.push(Some(answer)),
            }
        }
        if groups.is_empty() {
            return answers;
        }
        let stored = self.0.store.put_groups(groups, self.0.addr).await;
        for ((i, queue_id), stored) in planned.into_iter().zip(stored) {
            answers[i] = Some(send_answer(&reqs[i], queue_id, stored));
        }
        answers
    }

    /// Checks a send request and turns it into the messages to store, or its answer.
    // The error is the answer itself, sent as it is: boxing it would only add an allocation
    // on the rejection path.
    #[allow(clippy::result_large_err)]
    fn plan_send(
        self: &Arc<Self>,
        ctx: &RequestContext,
        req: &RemotingCommand,
    ) -> Result<SendPlan, RemotingCommand> {
        let header: SendMessageRequestHeader = if req.code == RequestCode::SEND_MESSAGE.0 {
            match SendMessageRequestHeader::decode(&req.ext_fields) {
                Ok(h) => h,
                Err(e) => return Err(header_error(req, &e)),
            }
        } else {
            match SendMessageRequestHeaderV2::decode(&req.ext_fields) {
                Ok(h) => h.into(),
                Err(e) => return Err(header_error(req, &e)),
            }
        };
        let topic = header.topic.clone();
        if topic == TBW102 {
            return Err(resp(
                req,
                ResponseCode::SYSTEM_ERROR,
                Some(format!(
                    "the topic[{topic}] is conflict with system reserved words."
                )),
            ));
        }
        if topic.is_empty() || topic.len() > TOPIC_MAX_LEN {
            return Err(resp(
                req,
                ResponseCode::MESSAGE_ILLEGAL,
                Some(format!("message topic length too long {}", topic.len())),
            ));
        }
        if req.body.is_empty() || req.body.len() > MAX_MESSAGE_SIZE {
            return Err(resp(
                req,
                ResponseCode::MESSAGE_ILLEGAL,
                Some(format!(
                    "the message body size {} is illegal",
                    req.body.len()
                )),
            ));
        }
        let props = header.properties.as_deref().unwrap_or("");
        if props.len() > MAX_PROPERTIES_LEN {
            return Err(resp(
                req,
                ResponseCode::MESSAGE_ILLEGAL,
                Some(format!(
                    "message properties length too long {}",
                    props.len()
                )),
            ));
        }
        let tc = match self.topic_or_create(
            &topic,
            &header.default_topic,
            header.default_topic_queue_nums,
        ) {
            Ok(tc) => tc,
            Err(remark) => return Err(resp(req, ResponseCode::TOPIC_NOT_EXIST, Some(remark))),
        };
        if tc.perm & perm::WRITE == 0 {
            return Err(resp(
                req,
                ResponseCode::NO_PERMISSION,
                Some(format!("the topic[{topic}] sending message is forbidden")),
            ));
        }
        let queues = tc.write_queue_nums.max(tc.read_queue_nums);
        let queue_id = if header.queue_id < 0 {
            fastrand::i32(0..tc.write_queue_nums.max(1))
        } else if header.queue_id >= queues {
            return Err(resp(
                req,
                ResponseCode::SYSTEM_ERROR,
                Some(format!(
                    "request queueId[{}] is illegal, {} Producer: {}",
                    header.queue_id,
                    tc.topic_name,
                    ctx.peer_addr()
                )),
            ));
        } else {
            header.queue_id
        };
        let messages: Vec<Message> = if header.batch {
            match decode_batch(&topic, &req.body) {
                Ok(m) => m,
                Err(e) => {
                    return Err(resp(
                        req,
                        ResponseCode::MESSAGE_ILLEGAL,
                        Some(e.to_string()),
                    ));
                }
            }
        } else {
            vec![Message::from_parts(
                topic.clone(),
                header.flag,
                decode_properties(props),
                req.body.clone(),
            )]
        };
        let born_host = ctx
            .connection()
            .peer_socket_addr()
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        let batch = header.batch;
        let exts: Vec<MessageExt> = messages
            .into_iter()
            .map(|message| MessageExt {
                message,
                queue_id,
                sys_flag: if batch { 0 } else { header.sys_flag },
                born_timestamp: header.born_timestamp,
                born_host,
                reconsume_times: header.reconsume_times.unwrap_or(0),
                ..MessageExt::default()
            })
            .collect();
        Ok(SendPlan {
            messages: exts,
            queue_id,
            batch,
        })
    }

    async fn pull(self: &Arc<Self>, req: RemotingCommand) -> RemotingCommand {
        let h = match PullMessageRequestHeader::decode(&req.ext_fields) {
            Ok(h) => h,
            Err(e) => return header_error(&req, &e),
        };
        let Some(tc) = self.0.topics.get(&h.topic) else {
            return resp(
                &req,
                ResponseCode::TOPIC_NOT_EXIST,
                Some(format!("topic[{}] not exist, apply first please!", h.topic)),
            );
        };
        if tc.perm & perm::READ == 0 {
            return resp(
                &req,
                ResponseCode::NO_PERMISSION,
                Some(format!(
                    "the topic[{}] pulling message is forbidden",
                    h.topic
                )),
            );
        }
        if h.queue_id < 0 || h.queue_id >= tc.read_queue_nums {
            return resp(
                &req,
                ResponseCode::SYSTEM_ERROR,
                Some(format!(
                    "queueId[{}] is illegal, topic:[{}] topicConfig.readQueueNums:[{}]",
                    h.queue_id, h.topic, tc.read_queue_nums
                )),
            );
        }
        if h.sys_flag & pull_sys_flag::COMMIT_OFFSET != 0 && h.commit_offset >= 0 {
            self.0
                .offsets
                .commit(&h.consumer_group, &h.topic, h.queue_id, h.commit_offset);
        }
        let tags: Option<Vec<i64>> = h.subscription.as_deref().and_then(|s| {
            let s = s.trim();
            (!s.is_empty() && s != "*").then(|| {
                s.split("||")
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(|t| i64::from(java_hash(t)))
                    .collect()
            })
        });
        let max = usize::try_from(h.max_msg_nums).unwrap_or(0).clamp(1, 512);
        let suspend = h.sys_flag & pull_sys_flag::SUSPEND != 0 && h.suspend_timeout_millis > 0;
        let deadline = Instant::now()
            + Duration::from_millis(u64::try_from(h.suspend_timeout_millis).unwrap_or(0));
        // Only a pull that may park watches its queue.
        let watch = suspend.then(|| self.0.store.watch_queue(&h.topic, h.queue_id));
        loop {
            // Registered before reading, so an append racing with the read wakes the wait
            // below.
            let mut appended = watch.as_ref().map(|w| Box::pin(w.notified()));
            if let Some(n) = appended.as_mut() {
                n.as_mut().enable();
            }
            let got =
                match self
                    .0
                    .store
                    .get(&h.topic, h.queue_id, h.queue_offset, max, tags.as_deref())
                {
                    Ok(g) => g,
                    Err(e) => return resp(&req, ResponseCode::SYSTEM_ERROR, Some(e.to_string())),
                };
            let (code, next) = match got.status {
                GetStatus::Found => (ResponseCode::SUCCESS, got.next_begin_offset),
                GetStatus::NoMatchedMessage => {
                    (ResponseCode::PULL_RETRY_IMMEDIATELY, got.next_begin_offset)
                }
                GetStatus::NoMessageInQueue if h.queue_offset != 0 => {
                    (ResponseCode::PULL_OFFSET_MOVED, got.next_begin_offset)
                }
                GetStatus::NoMessageInQueue | GetStatus::OffsetOverflowOne => {
                    (ResponseCode::PULL_NOT_FOUND, got.next_begin_offset)
                }
                GetStatus::OffsetTooSmall | GetStatus::OffsetOverflowBadly => {
                    (ResponseCode::PULL_OFFSET_MOVED, got.next_begin_offset)
                }
            };
            let park = code == ResponseCode::PULL_NOT_FOUND && Instant::now() < deadline;
            if park && let Some(appended) = appended {
                let woke = tokio::select! {
                    () = self.0.token.cancelled() => false,
                    r = tokio::time::timeout_at(deadline, appended) => r.is_ok(),
                };
                if woke {
                    continue;
                }
            }
            return resp(&req, code, None)
                .with_ext("suggestWhichBrokerId", "0")
                .with_ext("nextBeginOffset", next.to_string())
                .with_ext("minOffset", got.min_offset.to_string())
                .with_ext("maxOffset", got.max_offset.to_string())
                .with_body(if code == ResponseCode::SUCCESS {
                    got.body
                } else {
                    Bytes::new()
                });
        }
    }

    async fn heartbeat(
        self: &Arc<Self>,
        ctx: &RequestContext,
        req: &RemotingCommand,
    ) -> RemotingCommand {
        let data: HeartbeatData = match from_json("HeartbeatData", &req.body) {
            Ok(d) => d,
            Err(e) => return resp(req, ResponseCode::SYSTEM_ERROR, Some(e.to_string())),
        };
        let connection = ctx.connection().clone();
        let member = Member {
            client_id: data.client_id.clone(),
            connection: connection.clone(),
        };
        for p in &data.producer_data_set {
            self.0.clients.add_producer(&p.group_name, member.clone());
        }
        let mut changed = Vec::new();
        for c in &data.consumer_data_set {
            let retry = format!("%RETRY%{}", c.group_name);
            if self.0.topics.get(&retry).is_none() {
                match self.0.topics.put(TopicConfig::new(retry, 1)) {
                    // Clients find the new retry topic through the name server.
                    Ok(()) => self.spawn_register(),
                    Err(e) => warn!(cause = %e, "creating retry topic failed"),
                }
            }
            if self.0.clients.add_consumer(&c.group_name, member.clone()) {
                changed.push(c.group_name.clone());
            }
        }
        for g in &changed {
            self.notify_group_changed(g).await;
        }
        self.watch_connection(connection);
        resp(req, ResponseCode::SUCCESS, None)
    }

    /// Drops a connection's clients when it closes (one watch per connection).
    fn watch_connection(self: &Arc<Self>, connection: ConnectionHandle) {
        if !self.0.watched.lock().insert(connection.id()) {
            return;
        }
        let c = Arc::clone(self);
        self.0.tasks.spawn(async move {
            tokio::select! {
                () = c.0.token.cancelled() => {}
                () = connection.closed() => {
                    for g in c.0.clients.connection_closed(connection.id()) {
                        c.notify_group_changed(&g).await;
                    }
                }
            }
            c.0.watched.lock().remove(&connection.id());
        });
    }

    /// Tells every consumer of `group` that its membership changed (oneway, as Java does).
    async fn notify_group_changed(&self, group: &str) {
        let header = NotifyConsumerIdsChangedRequestHeader {
            consumer_group: group.to_owned(),
        };
        for m in self.0.clients.consumers(group) {
            let req = RemotingCommand::request(RequestCode::NOTIFY_CONSUMER_IDS_CHANGED.0)
                .with_ext_fields(header.to_ext_fields());
            if let Err(e) = m
                .connection
                .invoke_oneway(req, Duration::from_millis(10))
                .await
            {
                debug!(client = %m.client_id, cause = %e, "notify consumer ids changed failed");
            }
        }
    }
}

/// A send request checked and turned into the messages to store.
struct SendPlan {
    messages: Vec<MessageExt>,
    queue_id: i32,
    batch: bool,
}

/// The answer to a send whose messages the store took (or failed to).
fn send_answer(
    req: &RemotingCommand,
    queue_id: i32,
    stored: io::Result<Vec<crate::store::PutResult>>,
) -> RemotingCommand {
    let results = match stored {
        Ok(r) => r,
        Err(e) => {
            warn!(cause = %e, "store append failed");
            return resp(
                req,
                ResponseCode::SYSTEM_ERROR,
                Some(format!("store failed: {e}")),
            );
        }
    };
    let ids: Vec<&str> = results.iter().map(|r| r.msg_id.as_str()).collect();
    let first_offset = results.first().map_or(0, |r| r.queue_offset);
    let code = if results.iter().all(|r| r.flushed_in_time) {
        ResponseCode::SUCCESS
    } else {
        ResponseCode::FLUSH_DISK_TIMEOUT
    };
    let mut answer = resp(req, code, None);
    let ext = &mut answer.ext_fields;
    ext.insert("msgId", ids.join(","));
    ext.insert_int("queueId", i64::from(queue_id));
    ext.insert_int("queueOffset", first_offset);
    ext.insert(property::MSG_REGION, "DefaultRegion");
    ext.insert(property::TRACE_SWITCH, "true");
    answer
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
