//! [`GrpcProxy`]: `apache.rocketmq.v2.MessagingService` in front of a remoting cluster, as
//! Apache RocketMQ's proxy does in cluster mode: routes come from the name servers, sends go to
//! the brokers over remoting, and every endpoint a client learns is the proxy's own.
//!
//! Served so far: QueryRoute (a topic the name servers do not know is answered with TBW102's
//! queues when auto-creation is on, as a remoting producer would send), Heartbeat, Telemetry
//! (the settings exchange every client waits for), SendMessage (normal, FIFO by message group,
//! delayed by `delivery_timestamp`, transactional), EndTransaction with the recovery of
//! orphaned transactions over Telemetry (see `transaction.rs`), NotifyClientTermination, and
//! SimpleConsumer's pop-style
//! consumption (QueryAssignment, ReceiveMessage, AckMessage, ChangeInvisibleDuration,
//! ForwardMessageToDeadLetterQueue; see `pop.rs`). The other RPCs answer NOT_IMPLEMENTED
//! naming themselves.
//!
//! With an ACL ([`GrpcProxyConfig::with_access_control`]) every call is checked before it is
//! served: its signature, and the topics and groups it touches, by Apache RocketMQ's proxy's
//! table (`Core::allowed`).

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use mq_client_api::Message;
use mq_client_api::acl::{
    AccessControl, AccessRequest, AclSigner, Credentials, GRPC_AUTHORIZATION, GRPC_DATE_TIME,
    GrpcAuthorization, Resource, perm as acl_perm,
};
use mq_client_api::body::{TopicRouteData, perm};
use mq_client_api::header::SendMessageRequestHeader;
use mq_client_api::message::{UniqueIdGenerator, encode_batch};
use mq_client_api::{ApiConfig, ClientApi, SendRequest, wire_time};
use mq_remoting::{
    ClientConfig, ClientTls, NameServerList, RemotingClient, SerializeType, ServerTls,
};
use parking_lot::Mutex;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Status};
use tracing::{debug, info, warn};

use crate::convert::{self, DeliveryTimes, SHARDING_KEY, ok, status, status_of};
use crate::pop::{GroupTopic, Lease, QueueRef};
use crate::transaction::{self, PROXY_TRANSACTION_GROUP, Producers};
use crate::v2;
use crate::v2::messaging_service_server::{MessagingService, MessagingServiceServer};

/// The producer group the proxy sends under.
pub const PROXY_PRODUCER_GROUP: &str = "MQ_GRPC_PROXY";

/// How long a route is used before it is looked up again.
const ROUTE_TTL: Duration = Duration::from_secs(30);

/// How many topics' routes the cache holds before it forgets those past [`ROUTE_TTL`].
const ROUTE_CACHE_SWEEP: usize = 1024;

/// How long the proxy keeps a consumer group's FIFO setting before asking a broker again
/// (Apache RocketMQ's proxy: `subscriptionGroupConfigCacheRefreshSeconds`, 20).
const GROUP_TTL: Duration = Duration::from_secs(20);

/// How many groups the FIFO cache holds before it forgets those past [`GROUP_TTL`].
const GROUP_CACHE_SWEEP: usize = 1024;

/// Deliveries of a message before it goes to the dead-letter queue (Java's default, 16
/// reconsumes, plus the first).
const MAX_ATTEMPTS: u32 = 17;

/// How long a consumer group's state on a topic is kept unused, once it holds nothing, before
/// the proxy forgets it (its next receive starts from the committed offsets).
const POP_IDLE: Duration = Duration::from_secs(300);

/// The most messages one receive hands out.
const MAX_BATCH: usize = 32;

/// The longest a receive waits for messages.
const MAX_POLL: Duration = Duration::from_secs(30);

/// How often the proxy pings a quiet client connection, and how long it waits for the answer
/// before it closes the connection.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// The invisible time of what a receive with `auto_renew` hands out, renewed by the proxy
/// (Apache RocketMQ's proxy: `defaultInvisibleTimeMills`, 60 seconds).
const RENEWED_INVISIBLE: Duration = Duration::from_secs(60);

/// Proxy settings. Build with [`GrpcProxyConfig::new`] and the `with_*` setters.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct GrpcProxyConfig {
    /// Address to listen on. Default `127.0.0.1:8081`.
    pub listen: SocketAddr,
    /// The cluster's name servers.
    pub name_servers: Vec<String>,
    /// Deadline of each call to the cluster. Default 3 s.
    pub request_timeout: Duration,
    /// Largest message body accepted. Default 4 MiB (the broker's limit).
    pub max_body_size: usize,
    /// How the cluster keeps a message's delivery time. Default: as a 5.x timer message, at
    /// most a day ahead (4.x brokers have no timer: see [`GrpcProxyConfig::with_delay_levels`]).
    pub delivery: DeliveryTimes,
    /// TLS on the gRPC port (ALPN `h2`), in its mode: permissive serves plain clients too.
    /// Default none: plain only.
    pub tls: Option<ServerTls>,
    /// The ACL every call is checked against (its `authorization` signature over
    /// `x-mq-date-time`, and the topics and groups it touches, as Apache RocketMQ's proxy
    /// checks them); a refused call is answered UNAUTHORIZED (40100) with the reason, as 5.3's
    /// proxy does. Default none: every call goes on.
    pub access_control: Option<Arc<dyn AccessControl>>,
    /// The account the proxy signs its requests to the cluster with, when the brokers check
    /// ACL. Default none.
    pub credentials: Option<Credentials>,
    /// TLS to the cluster's name servers and brokers (the roots trusted, the name verified),
    /// for a cluster that serves it. Default none: plain remoting.
    pub cluster_tls: Option<ClientTls>,
    /// The header type of the proxy's requests to the cluster. Default ROCKETMQ: brokers
    /// (ours, and Java's) read and answer it, and it costs both ends about half what JSON does
    /// to write and read.
    pub cluster_headers: SerializeType,
}

impl GrpcProxyConfig {
    /// A proxy of the cluster behind `name_servers` (`host:port;host:port`).
    pub fn new(name_servers: &str) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            name_servers: NameServerList::parse(name_servers),
            request_timeout: Duration::from_secs(3),
            max_body_size: 4 * 1024 * 1024,
            delivery: DeliveryTimes::default(),
            tls: None,
            access_control: None,
            credentials: None,
            cluster_tls: None,
            cluster_headers: SerializeType::RocketMq,
        }
    }

    /// Sends the proxy's requests to the cluster with `headers` (default ROCKETMQ).
    #[must_use]
    pub fn with_cluster_headers(mut self, headers: SerializeType) -> Self {
        self.cluster_headers = headers;
        self
    }

    /// Speaks TLS to the cluster, as `tls` says.
    #[must_use]
    pub fn with_cluster_tls(mut self, tls: ClientTls) -> Self {
        self.cluster_tls = Some(tls);
        self
    }

    /// Checks every call against `access_control`.
    #[must_use]
    pub fn with_access_control(mut self, access_control: Arc<dyn AccessControl>) -> Self {
        self.access_control = Some(access_control);
        self
    }

    /// Signs the proxy's requests to the cluster with `credentials`.
    #[must_use]
    pub fn with_credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// Serves TLS by `tls` (its certificate, key and mode).
    #[must_use]
    pub fn with_tls(mut self, tls: ServerTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Sets the listen address (port 0: any free port).
    #[must_use]
    pub fn with_listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// Serves delivery times with the cluster's delay levels (level 1 first): the first level
    /// not earlier than the time asked for. For 4.x brokers, which have no timer messages.
    #[must_use]
    pub fn with_delay_levels(mut self, levels: Vec<Duration>) -> Self {
        self.delivery = DeliveryTimes::DelayLevels(levels);
        self
    }
}

/// A running gRPC proxy. [`GrpcProxy::shutdown`] stops it; dropping it stops it too, without
/// waiting.
pub struct GrpcProxy {
    local_addr: SocketAddr,
    token: CancellationToken,
    tasks: TaskTracker,
    core: Arc<Core>,
}

impl std::fmt::Debug for GrpcProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcProxy")
            .field("local_addr", &self.local_addr)
            .field("consumer_states", &self.consumer_states())
            .finish_non_exhaustive()
    }
}

impl GrpcProxy {
    /// Binds and starts serving.
    ///
    /// # Errors
    /// The bind error.
    pub async fn start(config: GrpcProxyConfig) -> io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(config.listen).await?;
        let local_addr = listener.local_addr()?;
        let mut client = ClientConfig::default();
        if let Some(credentials) = &config.credentials {
            client = client.with_request_hook(Arc::new(AclSigner(credentials.clone())));
        }
        if let Some(tls) = &config.cluster_tls {
            client = client.with_tls(tls.clone());
        }
        let remoting = RemotingClient::new(client);
        remoting.name_servers().update(config.name_servers.clone());
        let token = CancellationToken::new();
        let tasks = TaskTracker::new();
        let service = Proxy(Arc::new(Core {
            api: ClientApi::new(
                remoting,
                ApiConfig::default().with_serialize_type(config.cluster_headers),
            ),
            config,
            local_addr,
            routes: Mutex::new(HashMap::new()),
            fifo_groups: Mutex::new(HashMap::new()),
            next: AtomicUsize::new(0),
            ids: UniqueIdGenerator::new(Some(local_addr.ip())),
            pops: Mutex::new(HashMap::new()),
            producers: Arc::default(),
            client_id: format!("{}@mq-grpc-proxy-{}", local_addr.ip(), local_addr.port()),
            token: token.clone(),
            tasks: tasks.clone(),
        }));
        transaction::serve_checks(&service.0.api, &service.0.producers);
        // Brokers holding half messages hear from the proxy every 20 s, or forget it (Java
        // brokers after 120 s) and stop asking it about them; consumer states unused for
        // POP_IDLE are forgotten then too.
        let kept = Arc::clone(&service.0);
        let core = Arc::clone(&service.0);
        let stop = token.clone();
        tasks.spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(20));
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    _ = every.tick() => {
                        let chores = async {
                            transaction::heartbeat(&core.api, &core.producers, &core.client_id)
                                .await;
                            core.forget_idle(POP_IDLE).await;
                        };
                        tokio::select! {
                            () = stop.cancelled() => break,
                            () = chores => {}
                        }
                    }
                }
            }
        });
        let core = Arc::clone(&service.0);
        let stop = token.clone();
        let tls = core.config.tls.clone();
        let accepting = tasks.clone();
        tasks.spawn(async move {
            // HTTP/2 pings find a client that vanished without closing its connection, so
            // its Telemetry stream ends and the proxy stops renewing what it received.
            let router = tonic::transport::Server::builder()
                .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
                .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
                .add_service(MessagingServiceServer::new(service));
            let served = match tls {
                None => {
                    router
                        .serve_with_incoming_shutdown(
                            tonic::transport::server::TcpIncoming::from(listener)
                                .with_nodelay(Some(true)),
                            stop.cancelled_owned(),
                        )
                        .await
                }
                Some(tls) => {
                    let conns = crate::tls::incoming(listener, &tls, &stop, &accepting);
                    let conns = futures_util::stream::unfold(conns, |mut conns| async move {
                        conns.recv().await.map(|c| (c, conns))
                    });
                    router
                        .serve_with_incoming_shutdown(conns, stop.cancelled_owned())
                        .await
                }
            };
            if let Err(e) = served {
                warn!(cause = %e, "gRPC proxy stopped");
            }
            let _ = core.api.remoting().shutdown(Duration::from_secs(1)).await;
        });
        info!(addr = %local_addr, "gRPC proxy listening");
        Ok(Self {
            local_addr,
            token,
            tasks,
            core: kept,
        })
    }

    /// How many (consumer group, topic) consumption states the proxy holds: one is made by a
    /// group's first receive on a topic, and forgotten once it has been unused for five
    /// minutes with nothing handed out and not acknowledged.
    pub fn consumer_states(&self) -> usize {
        self.core.pops.lock().len()
    }

    /// Forgets now the consumption states unused for `idle` that hold nothing, committing
    /// first the offsets read past and not committed (what the proxy does every 20 s with
    /// five minutes).
    pub async fn forget_idle_consumers(&self, idle: Duration) {
        self.core.forget_idle(idle).await;
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops serving: open streams end, calls in progress finish, then the tasks end.
    pub async fn shutdown(&self) {
        self.token.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

impl Drop for GrpcProxy {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

/// Consumption states by (group, topic), with when each was last used.
type Pops = HashMap<(String, String), (Arc<GroupTopic>, Instant)>;

pub(crate) struct Core {
    pub(crate) api: ClientApi,
    pub(crate) config: GrpcProxyConfig,
    local_addr: SocketAddr,
    routes: Mutex<HashMap<String, (Instant, Arc<Route>)>>,
    /// Whether a consumer group consumes in order (its broker-side config), by group.
    fifo_groups: Mutex<HashMap<String, (Instant, bool)>>,
    next: AtomicUsize,
    /// Ids for messages that come without one (every official client sets its own).
    ids: UniqueIdGenerator,
    /// Pop-style consumption state by (group, topic).
    pops: Mutex<Pops>,
    /// Producers on Telemetry, and the brokers holding this proxy's half messages.
    producers: Arc<Producers>,
    /// The proxy's client id towards the brokers.
    client_id: String,
    token: CancellationToken,
    tasks: TaskTracker,
}

/// A topic's route as the proxy uses it.
#[derive(Debug)]
struct Route {
    /// Writable queues: (broker name, master address, queue id).
    writable: Vec<(String, String, i32)>,
    /// The name servers' route (or TBW102's, for a topic to auto-create).
    data: TopicRouteData,
    /// Whether the topic does not exist yet and sends create it from TBW102.
    template: bool,
}

/// The send header of a message the proxy sends to `queue_id` (its producer group's, not
/// transactional, not a batch: callers change what differs).
fn send_header(msg: &Message, queue_id: i32, born_timestamp: i64) -> SendMessageRequestHeader {
    SendMessageRequestHeader {
        producer_group: PROXY_PRODUCER_GROUP.into(),
        topic: msg.topic.as_str().into(),
        default_topic: "TBW102".into(),
        default_topic_queue_nums: 4,
        queue_id,
        sys_flag: 0,
        born_timestamp,
        flag: 0,
        properties: Some(msg.properties_string()),
        reconsume_times: Some(0),
        ..Default::default()
    }
}

#[derive(Clone)]
struct Proxy(Arc<Core>);

type Stream2<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

impl Core {
    /// Whether the call with `request`'s metadata may touch `resources`, by the ACL when there
    /// is one: `Err` is the UNAUTHORIZED status to answer.
    fn allowed<T>(
        &self,
        request: &Request<T>,
        resources: &[(Resource, u8)],
    ) -> Result<(), v2::Status> {
        self.allowed_by(request.metadata(), request.remote_addr(), resources)
    }

    /// [`Core::allowed`] for a call's metadata `md` from `remote`.
    fn allowed_by(
        &self,
        md: &tonic::metadata::MetadataMap,
        remote: Option<SocketAddr>,
        resources: &[(Resource, u8)],
    ) -> Result<(), v2::Status> {
        let Some(access) = &self.config.access_control else {
            return Ok(());
        };
        let text = |key: &str| md.get(key).and_then(|v| v.to_str().ok());
        let date_time = text(GRPC_DATE_TIME).unwrap_or_default();
        // A missing or unreadable signature still lets white-listed callers in; the ACL
        // refuses the others for want of an account.
        let signed = text(GRPC_AUTHORIZATION).map(GrpcAuthorization::parse);
        let refused = |reason: String| status(v2::Code::Unauthorized, reason);
        let (access_key, signature) = match &signed {
            Some(Ok(a)) => (Some(a.access_key.as_str()), Some(a)),
            _ => (None, None),
        };
        let verdict = access.check(&AccessRequest {
            remote: remote.map(|a| a.ip()),
            access_key,
            signed_under: &|secret| signature.is_some_and(|a| a.signed(date_time, secret)),
            code: None,
            resources,
        });
        verdict.map_err(|reason| match &signed {
            Some(Err(bad)) => refused(format!("{reason} ({bad})")),
            _ => refused(reason),
        })
    }

    /// Recalls a timer message of `topic` by its handle; the message's unique id.
    async fn recall(&self, topic: &str, handle: &str) -> Result<String, v2::Status> {
        let parsed = mq_client_api::message::RecallHandle::decode(handle)
            .map_err(|e| status(v2::Code::BadRequest, e.to_string()))?;
        let route = self.route(topic).await?;
        let addr = route
            .data
            .broker_datas
            .iter()
            .find(|b| b.broker_name == parsed.broker_name)
            .and_then(|b| b.master_addr())
            .ok_or_else(|| {
                status(
                    v2::Code::BadRequest,
                    format!(
                        "the broker {} of the handle is not in the route of {topic}",
                        parsed.broker_name
                    ),
                )
            })?
            .to_owned();
        let header = mq_client_api::header::RecallMessageRequestHeader {
            producer_group: Some(PROXY_PRODUCER_GROUP.into()),
            topic: topic.to_owned(),
            recall_handle: handle.to_owned(),
            broker_name: Some(parsed.broker_name),
        };
        self.api
            .recall_message(&addr, &header, self.config.request_timeout)
            .await
            .map_err(|e| status_of(&e))
    }

    /// The route of `topic`, cached for [`ROUTE_TTL`]; a name no topic may have is
    /// ILLEGAL_TOPIC, and asks the cluster nothing.
    async fn route(&self, topic: &str) -> Result<Arc<Route>, v2::Status> {
        mq_client_api::validate::validate_topic(topic)
            .map_err(|e| status(v2::Code::IllegalTopic, e.to_string()))?;
        if let Some((at, r)) = self.routes.lock().get(topic)
            && at.elapsed() < ROUTE_TTL
        {
            return Ok(Arc::clone(r));
        }
        let timeout = self.config.request_timeout;
        let (data, template) = match self.api.topic_route(topic, timeout).await {
            Ok(d) => (d, false),
            Err(e) if e.response_code() == Some(mq_client_api::ResponseCode::TOPIC_NOT_EXIST) => {
                match self.api.topic_route("TBW102", timeout).await {
                    Ok(d) => (d, true),
                    Err(_) => {
                        return Err(status(
                            v2::Code::TopicNotFound,
                            format!("topic {topic} does not exist"),
                        ));
                    }
                }
            }
            Err(e) => return Err(status_of(&e)),
        };
        let mut writable = Vec::new();
        for q in &data.queue_datas {
            if q.perm & perm::WRITE == 0 {
                continue;
            }
            let Some(addr) = data
                .broker_datas
                .iter()
                .find(|b| b.broker_name == q.broker_name)
                .and_then(|b| b.broker_addrs.get(&0))
            else {
                continue;
            };
            let queues = if template {
                q.write_queue_nums.min(4)
            } else {
                q.write_queue_nums
            };
            writable.extend((0..queues).map(|i| (q.broker_name.clone(), addr.clone(), i)));
        }
        let route = Arc::new(Route {
            writable,
            data,
            template,
        });
        let mut routes = self.routes.lock();
        // Every name a client asks about is cached (unknown ones as the template's route while
        // auto-creation is on): the stale ones go once there are many.
        if routes.len() >= ROUTE_CACHE_SWEEP {
            routes.retain(|_, (at, _)| at.elapsed() < ROUTE_TTL);
        }
        routes.insert(topic.to_owned(), (Instant::now(), Arc::clone(&route)));
        Ok(route)
    }

    /// Whether `group` consumes in order: its config on a master broker of `topic` (cached for
    /// [`GROUP_TTL`]). A broker without GET_SUBSCRIPTIONGROUP_CONFIG (4.x) is asked for all its
    /// groups; a group no broker can tell about consumes concurrently.
    pub(crate) async fn fifo_group(&self, group: &str, topic: &str) -> bool {
        if let Some((at, fifo)) = self.fifo_groups.lock().get(group)
            && at.elapsed() < GROUP_TTL
        {
            return *fifo;
        }
        let timeout = self.config.request_timeout;
        let addr = match self.readable(topic, None).await {
            Ok(queues) => queues.into_iter().next().map(|q| q.addr),
            Err(_) => None,
        };
        let fifo = match addr {
            Some(addr) => match self
                .api
                .find_subscription_group(&addr, group, timeout)
                .await
            {
                Ok(c) => c.is_some_and(|c| c.consume_message_orderly),
                Err(e) => {
                    debug!(group, broker = %addr, cause = %e, "group config lookup failed");
                    false
                }
            },
            None => false,
        };
        let mut groups = self.fifo_groups.lock();
        // Groups named once and never again go with their age, so clients naming ever new
        // groups do not grow the cache without end.
        if groups.len() >= GROUP_CACHE_SWEEP {
            groups.retain(|_, (at, _)| at.elapsed() < GROUP_TTL);
        }
        groups.insert(group.to_owned(), (Instant::now(), fifo));
        fifo
    }

    /// The consumption state of (group, topic), made on a receive's first use.
    fn pop(&self, group: &str, topic: &str) -> Arc<GroupTopic> {
        let mut pops = self.pops.lock();
        let (state, used) = pops
            .entry((group.to_owned(), topic.to_owned()))
            .or_insert_with(|| {
                let state = GroupTopic::new(group.to_owned(), topic.to_owned());
                (Arc::new(state), Instant::now())
            });
        *used = Instant::now();
        Arc::clone(state)
    }

    /// The consumption state `handle` of (group, topic) must be in: a receive made it. A
    /// handle of any other (group, topic) names nothing this proxy handed out, and makes no
    /// state.
    fn handed_out(
        &self,
        group: &str,
        topic: &str,
        handle: &str,
    ) -> Result<Arc<GroupTopic>, v2::Status> {
        let mut pops = self.pops.lock();
        match pops.get_mut(&(group.to_owned(), topic.to_owned())) {
            Some((state, used)) => {
                *used = Instant::now();
                Ok(Arc::clone(state))
            }
            None => Err(status(
                v2::Code::InvalidReceiptHandle,
                format!(
                    "receipt handle {handle:?} names nothing this proxy handed out to group {group} on topic {topic}"
                ),
            )),
        }
    }

    /// Forgets the consumption states unused for `idle` that hold nothing: no message handed
    /// out and not acknowledged, no receive under way. Offsets read past but not committed
    /// (messages no tag matched) are committed first; a state whose commit fails is kept.
    /// What is forgotten costs nothing: a later receive starts from the committed offsets.
    async fn forget_idle(&self, idle: Duration) {
        let candidates: Vec<((String, String), Arc<GroupTopic>)> = self
            .pops
            .lock()
            .iter()
            .filter(|(_, (_, used))| used.elapsed() >= idle)
            .map(|(key, (state, _))| (key.clone(), Arc::clone(state)))
            .collect();
        for (key, state) in candidates {
            let Some(points) = state.uncommitted() else {
                continue;
            };
            let mut all = true;
            for (q, offset) in points {
                if state
                    .commit(&self.api, &q, offset, self.config.request_timeout)
                    .await
                {
                    state.committed_to(&q, offset);
                } else {
                    all = false;
                }
            }
            let mut pops = self.pops.lock();
            // Only the map and this sweep hold it, and nothing moved since: no receive can
            // take it from the map while the lock is held.
            let unused = pops
                .get(&key)
                .is_some_and(|(s, used)| Arc::ptr_eq(s, &state) && used.elapsed() >= idle);
            if all && unused && Arc::strong_count(&state) == 2 && state.settled() {
                pops.remove(&key);
            }
        }
    }

    /// Ends the proxy's renewals for client `id`, whose telemetry stream ended.
    fn client_gone(&self, id: &str) {
        let pops: Vec<Arc<GroupTopic>> = self
            .pops
            .lock()
            .values()
            .map(|(s, _)| Arc::clone(s))
            .collect();
        for state in pops {
            state.client_gone(id);
        }
    }

    /// The readable queues of `topic` on `broker` (every broker when `None`).
    pub(crate) async fn readable(
        &self,
        topic: &str,
        broker: Option<&str>,
    ) -> Result<Vec<QueueRef>, v2::Status> {
        let route = self.route(topic).await?;
        if route.template {
            return Err(status(
                v2::Code::TopicNotFound,
                format!("topic {topic} does not exist"),
            ));
        }
        let mut out = Vec::new();
        for q in &route.data.queue_datas {
            if q.perm & perm::READ == 0 || broker.is_some_and(|b| b != q.broker_name) {
                continue;
            }
            let Some(addr) = route
                .data
                .broker_datas
                .iter()
                .find(|b| b.broker_name == q.broker_name)
                .and_then(|b| b.broker_addrs.get(&0))
            else {
                continue;
            };
            for i in 0..q.read_queue_nums {
                out.push(QueueRef {
                    broker: q.broker_name.clone(),
                    addr: addr.clone(),
                    id: i,
                });
            }
        }
        Ok(out)
    }

    /// The endpoints a client should use: the proxy, as the client reached it.
    fn endpoints(&self, asked: Option<&v2::Endpoints>) -> v2::Endpoints {
        asked.cloned().unwrap_or_else(|| v2::Endpoints {
            scheme: v2::AddressScheme::IPv4 as i32,
            addresses: vec![v2::Address {
                host: self.local_addr.ip().to_string(),
                port: i32::from(self.local_addr.port()),
            }],
        })
    }

    async fn send_one(&self, m: &v2::Message) -> v2::SendResultEntry {
        let refused = |s: v2::Status| v2::SendResultEntry {
            status: Some(s),
            ..Default::default()
        };
        let (mut msg, transactional) =
            match convert::to_remoting(m, &self.config.delivery, self.config.max_body_size) {
                Ok(x) => x,
                Err(s) => return refused(s),
            };
        if transactional {
            msg.set_property(
                mq_client_api::message::property::PRODUCER_GROUP,
                PROXY_TRANSACTION_GROUP,
            );
        }
        if msg.uniq_key().is_none() {
            msg.set_property(
                mq_client_api::message::property::UNIQ_CLIENT_MESSAGE_ID_KEYIDX,
                self.ids.next_id(),
            );
        }
        let route = match self.route(&msg.topic).await {
            Ok(r) => r,
            Err(s) => return refused(s),
        };
        if route.writable.is_empty() {
            return refused(status(
                v2::Code::Forbidden,
                format!("topic {} has no writable queue", msg.topic),
            ));
        }
        let (broker_name, addr, queue_id) = self.pick(&route, &msg);
        let born = m
            .system_properties
            .as_ref()
            .and_then(|s| s.born_timestamp.as_ref())
            .map_or_else(wire_time::now_millis, convert::timestamp_ms);
        let mut header = send_header(&msg, *queue_id, born);
        if transactional {
            header.producer_group = PROXY_TRANSACTION_GROUP.into();
            header.sys_flag = mq_client_api::message::sys_flag::TRANSACTION_PREPARED_TYPE;
        }
        let id = msg.uniq_key().unwrap_or_default().to_owned();
        let req = SendRequest {
            header,
            body: msg.body.clone(),
            msg_id: id.clone(),
            broker_name: broker_name.clone(),
            reply: false,
        };
        match self.send_request(&route, &msg.topic, addr, req).await {
            Ok(r) => {
                let transaction_id = if transactional {
                    if self.producers.holds_halves(addr) {
                        // The broker's checks of this half message must find the proxy.
                        transaction::heartbeat(&self.api, &self.producers, &self.client_id).await;
                    }
                    let commit_log_offset =
                        mq_client_api::message::decode_offset_msg_id(&r.offset_msg_id)
                            .map_or(0, |(_, o)| o);
                    transaction::transaction_id(addr, commit_log_offset, r.queue_offset)
                } else {
                    String::new()
                };
                v2::SendResultEntry {
                    status: Some(ok()),
                    message_id: id,
                    transaction_id,
                    offset: r.queue_offset,
                    recall_handle: r.recall_handle.unwrap_or_default(),
                }
            }
            Err(s) => refused(s),
        }
    }

    /// Sends `req` for `topic` to `addr` by `route`: once a send has created a topic that
    /// only had the template's route, its own route replaces it; after a failure the route
    /// is asked for again.
    async fn send_request(
        &self,
        route: &Route,
        topic: &str,
        addr: &str,
        req: SendRequest,
    ) -> Result<mq_client_api::SendResult, v2::Status> {
        match self.api.send(addr, req, self.config.request_timeout).await {
            Ok(r) => {
                if route.template {
                    self.routes.lock().remove(topic);
                }
                Ok(r)
            }
            Err(e) => {
                self.routes.lock().remove(topic);
                Err(status_of(&e))
            }
        }
    }

    /// The queue of `route` a message goes to: its message group's (a group keeps to one
    /// queue), or the next in turn. `route` has a writable queue.
    fn pick<'r>(&self, route: &'r Route, msg: &Message) -> &'r (String, String, i32) {
        let n = route.writable.len();
        let pick = match msg.property(SHARDING_KEY) {
            Some(group) => convert::group_hash(group) as usize % n,
            None => self.next.fetch_add(1, Ordering::Relaxed) % n,
        };
        &route.writable[pick]
    }

    /// The messages of one request (two or more) sent as one SEND_BATCH_MESSAGE, as Apache
    /// RocketMQ's proxy sends them: stored together or not at all, in one queue (the first
    /// message's group's, or the next in turn), at consecutive offsets. Answered as that proxy
    /// answers: one entry for the batch (the messages' ids joined by `,`, the first one's
    /// offset), or the status that refused it all.
    async fn send_batch(&self, ms: &[v2::Message]) -> Result<v2::SendResultEntry, v2::Status> {
        let mut msgs = Vec::with_capacity(ms.len());
        for m in ms {
            match convert::to_remoting(m, &self.config.delivery, self.config.max_body_size) {
                Ok((_, true)) => {
                    return Err(status(
                        v2::Code::BadRequest,
                        "a transactional message cannot be sent in a batch",
                    ));
                }
                Ok((mut msg, false)) => {
                    if msg.uniq_key().is_none() {
                        msg.set_property(
                            mq_client_api::message::property::UNIQ_CLIENT_MESSAGE_ID_KEYIDX,
                            self.ids.next_id(),
                        );
                    }
                    msgs.push(msg);
                }
                Err(s) => return Err(s),
            }
        }
        let body = match encode_batch(&msgs) {
            Ok(b) if b.len() > self.config.max_body_size => {
                return Err(status(
                    v2::Code::MessageBodyTooLarge,
                    format!(
                        "the batch is {} bytes, more than {}",
                        b.len(),
                        self.config.max_body_size
                    ),
                ));
            }
            Ok(b) => b,
            Err(e) => return Err(status(v2::Code::BadRequest, e.to_string())),
        };
        // encode_batch refused an empty batch, and one of several topics.
        let first = &msgs[0];
        let route = match self.route(&first.topic).await {
            Ok(r) if r.writable.is_empty() => {
                return Err(status(
                    v2::Code::Forbidden,
                    format!("topic {} has no writable queue", first.topic),
                ));
            }
            Ok(r) => r,
            Err(s) => return Err(s),
        };
        let (broker_name, addr, queue_id) = self.pick(&route, first);
        // The batch's own properties are those a producer gives one: the wait flag.
        let outer = Message::new(first.topic.clone(), Bytes::new())
            .with_wait_store_msg_ok(first.wait_store_msg_ok());
        let mut header = send_header(&outer, *queue_id, wire_time::now_millis());
        header.batch = true;
        let ids: Vec<String> = msgs
            .iter()
            .map(|m| m.uniq_key().unwrap_or_default().to_owned())
            .collect();
        let req = SendRequest {
            header,
            body,
            msg_id: ids.join(","),
            broker_name: broker_name.clone(),
            reply: false,
        };
        let r = self.send_request(&route, &first.topic, addr, req).await?;
        Ok(v2::SendResultEntry {
            status: Some(ok()),
            message_id: r.msg_id,
            transaction_id: String::new(),
            offset: r.queue_offset,
            recall_handle: String::new(),
        })
    }

    /// The settings the server answers a client's with: what the client declared, and the
    /// server's limits and policies; `fifo` tells a consumer its group consumes in order.
    fn settings(&self, theirs: v2::Settings, fifo: bool) -> v2::Settings {
        let backoff = |attempts: i32| v2::RetryPolicy {
            max_attempts: attempts,
            strategy: Some(v2::retry_policy::Strategy::ExponentialBackoff(
                v2::ExponentialBackoff {
                    initial: Some(convert::duration(Duration::from_millis(10))),
                    max: Some(convert::duration(Duration::from_secs(1))),
                    multiplier: 2.0,
                },
            )),
        };
        let pub_sub = match theirs.pub_sub {
            Some(v2::settings::PubSub::Publishing(p)) => {
                Some(v2::settings::PubSub::Publishing(v2::Publishing {
                    topics: p.topics,
                    // Python copies this: never 0.
                    max_body_size: i32::try_from(self.config.max_body_size).unwrap_or(i32::MAX),
                    validate_message_type: false,
                }))
            }
            Some(v2::settings::PubSub::Subscription(s)) => {
                Some(v2::settings::PubSub::Subscription(v2::Subscription {
                    group: s.group,
                    subscriptions: s.subscriptions,
                    fifo: Some(fifo),
                    receive_batch_size: Some(32),
                    long_polling_timeout: Some(convert::duration(Duration::from_secs(20))),
                    ..Default::default()
                }))
            }
            None => None,
        };
        let consumer = matches!(pub_sub, Some(v2::settings::PubSub::Subscription(_)));
        v2::Settings {
            client_type: theirs.client_type,
            access_point: theirs.access_point,
            backoff_policy: Some(backoff(if consumer { 16 } else { 3 })),
            request_timeout: Some(convert::duration(self.config.request_timeout)),
            pub_sub,
            user_agent: theirs.user_agent,
            metric: Some(v2::Metric {
                on: false,
                endpoints: None,
            }),
            client_properties: theirs.client_properties,
        }
    }
}

/// The client id a request names (`x-mq-client-id`).
fn client_id<T>(request: &Request<T>) -> Option<String> {
    request
        .metadata()
        .get("x-mq-client-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// What a call touches, for the ACL: a topic or group resource (by its name in the call) and
/// the permission it needs.
fn topic(resource: Option<&v2::Resource>, needed: u8) -> (Resource, u8) {
    (Resource::Topic(convert::resource_name(resource)), needed)
}

fn group(resource: Option<&v2::Resource>) -> (Resource, u8) {
    (
        Resource::Group(convert::resource_name(resource)),
        acl_perm::SUB,
    )
}

/// A consumer's call: its group and its topic, both to subscribe (Apache RocketMQ's proxy's
/// table for receive, ack, change of invisible time, dead-lettering and assignments).
fn consuming(
    group_name: Option<&v2::Resource>,
    topic_name: Option<&v2::Resource>,
) -> Vec<(Resource, u8)> {
    vec![group(group_name), topic(topic_name, acl_perm::SUB)]
}

/// [`consuming`] of a call that names its topic by a message queue.
fn consuming_queue(
    group_name: Option<&v2::Resource>,
    queue: Option<&v2::MessageQueue>,
) -> Vec<(Resource, u8)> {
    consuming(group_name, queue.and_then(|q| q.topic.as_ref()))
}

/// What a client's settings name: the topics it publishes to, or its group and the topics it
/// subscribes to.
fn settings_resources(settings: &v2::Settings) -> Vec<(Resource, u8)> {
    match &settings.pub_sub {
        Some(v2::settings::PubSub::Publishing(p)) => p
            .topics
            .iter()
            .map(|t| topic(Some(t), acl_perm::PUB))
            .collect(),
        Some(v2::settings::PubSub::Subscription(sub)) => std::iter::once(group(sub.group.as_ref()))
            .chain(
                sub.subscriptions
                    .iter()
                    .map(|e| topic(e.topic.as_ref(), acl_perm::SUB)),
            )
            .collect(),
        None => Vec::new(),
    }
}

/// The items of a ReceiveMessage answer, in Apache RocketMQ's proxy's order: the status, the
/// messages, and the time of delivery (Python's push consumer needs it to count latency).
fn receive_answer(
    status: v2::Status,
    messages: Vec<v2::Message>,
) -> Vec<v2::ReceiveMessageResponse> {
    use v2::receive_message_response::Content;
    let item = |content| v2::ReceiveMessageResponse {
        content: Some(content),
    };
    std::iter::once(item(Content::Status(status)))
        .chain(messages.into_iter().map(|m| item(Content::Message(m))))
        .chain([item(Content::DeliveryTimestamp(
            prost_types::Timestamp::from(std::time::SystemTime::now()),
        ))])
        .collect()
}

/// The answer of an RPC this proxy does not serve yet.
fn not_served(rpc: &str) -> v2::Status {
    status(
        v2::Code::NotImplemented,
        format!("{rpc} is not served by this proxy yet"),
    )
}

#[tonic::async_trait]
impl MessagingService for Proxy {
    async fn query_route(
        &self,
        request: Request<v2::QueryRouteRequest>,
    ) -> Result<Response<v2::QueryRouteResponse>, Status> {
        let needs = [topic(request.get_ref().topic.as_ref(), acl_perm::ANY)];
        if let Err(s) = self.0.allowed(&request, &needs) {
            return Ok(Response::new(v2::QueryRouteResponse {
                status: Some(s),
                ..Default::default()
            }));
        }
        let req = request.into_inner();
        let topic = convert::resource_name(req.topic.as_ref());
        let route = match self.0.route(&topic).await {
            Ok(r) => r,
            Err(s) => {
                return Ok(Response::new(v2::QueryRouteResponse {
                    status: Some(s),
                    message_queues: Vec::new(),
                }));
            }
        };
        let endpoints = self.0.endpoints(req.endpoints.as_ref());
        let mut queues = Vec::new();
        for q in &route.data.queue_datas {
            let nums = q.read_queue_nums.max(q.write_queue_nums);
            let nums = if route.template { nums.min(4) } else { nums };
            for id in 0..nums {
                let read = q.perm & perm::READ != 0 && id < q.read_queue_nums;
                let write = q.perm & perm::WRITE != 0 && id < q.write_queue_nums;
                let permission = match (read, write) {
                    (true, true) => v2::Permission::ReadWrite,
                    (true, false) => v2::Permission::Read,
                    (false, true) => v2::Permission::Write,
                    (false, false) => v2::Permission::None,
                };
                queues.push(v2::MessageQueue {
                    topic: req.topic.clone(),
                    id,
                    permission: permission as i32,
                    broker: Some(v2::Broker {
                        name: q.broker_name.clone(),
                        id: 0,
                        endpoints: Some(endpoints.clone()),
                    }),
                    accept_message_types: vec![
                        v2::MessageType::Normal as i32,
                        v2::MessageType::Fifo as i32,
                        v2::MessageType::Delay as i32,
                        v2::MessageType::Transaction as i32,
                    ],
                });
            }
        }
        Ok(Response::new(v2::QueryRouteResponse {
            status: Some(ok()),
            message_queues: queues,
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<v2::HeartbeatRequest>,
    ) -> Result<Response<v2::HeartbeatResponse>, Status> {
        // A consumer's heartbeat names its group, which it must be allowed to consume in.
        let req = request.get_ref();
        let consumer = [v2::ClientType::PushConsumer, v2::ClientType::SimpleConsumer]
            .map(|t| t as i32)
            .contains(&req.client_type);
        let needs = if consumer {
            vec![group(req.group.as_ref())]
        } else {
            Vec::new()
        };
        let status = match self.0.allowed(&request, &needs) {
            Ok(()) => ok(),
            Err(s) => s,
        };
        Ok(Response::new(v2::HeartbeatResponse {
            status: Some(status),
        }))
    }

    async fn send_message(
        &self,
        request: Request<v2::SendMessageRequest>,
    ) -> Result<Response<v2::SendMessageResponse>, Status> {
        let mut needs: Vec<(Resource, u8)> = Vec::new();
        for m in &request.get_ref().messages {
            let t = topic(m.topic.as_ref(), acl_perm::PUB);
            if !needs.contains(&t) {
                needs.push(t);
            }
        }
        if let Err(s) = self.0.allowed(&request, &needs) {
            return Ok(Response::new(v2::SendMessageResponse {
                status: Some(s),
                entries: Vec::new(),
            }));
        }
        let req = request.into_inner();
        if req.messages.is_empty() {
            return Ok(Response::new(v2::SendMessageResponse {
                status: Some(status(v2::Code::BadRequest, "no message to send")),
                entries: Vec::new(),
            }));
        }
        let (status, entries) = match req.messages.as_slice() {
            [one] => {
                let entry = self.0.send_one(one).await;
                (entry.status.clone().unwrap_or_else(ok), vec![entry])
            }
            several => match self.0.send_batch(several).await {
                Ok(entry) => (ok(), vec![entry]),
                Err(s) => (s, Vec::new()),
            },
        };
        Ok(Response::new(v2::SendMessageResponse {
            status: Some(status),
            entries,
        }))
    }

    async fn query_assignment(
        &self,
        request: Request<v2::QueryAssignmentRequest>,
    ) -> Result<Response<v2::QueryAssignmentResponse>, Status> {
        let needs = consuming(
            request.get_ref().group.as_ref(),
            request.get_ref().topic.as_ref(),
        );
        if let Err(s) = self.0.allowed(&request, &needs) {
            return Ok(Response::new(v2::QueryAssignmentResponse {
                status: Some(s),
                assignments: Vec::new(),
            }));
        }
        let req = request.into_inner();
        let topic = convert::resource_name(req.topic.as_ref());
        let queues = match self.0.readable(&topic, None).await {
            Ok(q) => q,
            Err(s) => {
                return Ok(Response::new(v2::QueryAssignmentResponse {
                    status: Some(s),
                    assignments: Vec::new(),
                }));
            }
        };
        // One assignment per broker, queue -1: a receive there pops from all its queues. A
        // FIFO group gets one per queue, as from Apache RocketMQ's proxy: its clients then
        // receive each queue in turn.
        let group = convert::resource_name(req.group.as_ref());
        let fifo = !group.is_empty() && self.0.fifo_group(&group, &topic).await;
        let endpoints = self.0.endpoints(req.endpoints.as_ref());
        let mut targets: Vec<(&str, i32)> = queues
            .iter()
            .map(|q| (q.broker.as_str(), if fifo { q.id } else { -1 }))
            .collect();
        targets.dedup();
        let assignments = targets
            .into_iter()
            .map(|(b, id)| v2::Assignment {
                message_queue: Some(v2::MessageQueue {
                    topic: req.topic.clone(),
                    id,
                    permission: v2::Permission::ReadWrite as i32,
                    broker: Some(v2::Broker {
                        name: b.to_owned(),
                        id: 0,
                        endpoints: Some(endpoints.clone()),
                    }),
                    accept_message_types: vec![
                        v2::MessageType::Normal as i32,
                        v2::MessageType::Fifo as i32,
                        v2::MessageType::Delay as i32,
                    ],
                }),
            })
            .collect();
        Ok(Response::new(v2::QueryAssignmentResponse {
            status: Some(ok()),
            assignments,
        }))
    }

    type ReceiveMessageStream = Stream2<v2::ReceiveMessageResponse>;

    async fn receive_message(
        &self,
        request: Request<v2::ReceiveMessageRequest>,
    ) -> Result<Response<Self::ReceiveMessageStream>, Status> {
        let client_id = client_id(&request);
        let only = |s: v2::Status| -> Self::ReceiveMessageStream {
            Box::pin(futures_util::stream::iter(
                receive_answer(s, Vec::new()).into_iter().map(Ok),
            ))
        };
        let asked = request.get_ref();
        let needs = consuming_queue(asked.group.as_ref(), asked.message_queue.as_ref());
        if let Err(s) = self.0.allowed(&request, &needs) {
            return Ok(Response::new(only(s)));
        }
        let req = request.into_inner();
        let group = match crate::offset::consumer_group(req.group.as_ref()) {
            Ok(g) => g,
            Err(s) => return Ok(Response::new(only(s))),
        };
        let Some(mq) = req.message_queue.as_ref() else {
            return Ok(Response::new(only(status(
                v2::Code::BadRequest,
                "no message queue",
            ))));
        };
        let topic = convert::resource_name(mq.topic.as_ref());
        let expression = match crate::offset::tag_expression(req.filter_expression.as_ref()) {
            Ok(e) => e,
            Err(s) => return Ok(Response::new(only(s))),
        };
        // Push consumers ask the proxy to renew what they receive, as long as they are
        // connected (their telemetry stream names them), instead of naming a time.
        let lease = match (req.auto_renew, client_id) {
            (true, Some(owner)) => Lease::Renewed {
                owner,
                shown: RENEWED_INVISIBLE,
            },
            (true, None) => Lease::For(RENEWED_INVISIBLE),
            (false, _) => match req
                .invisible_duration
                .and_then(|d| Duration::try_from(d).ok())
                .filter(|d| !d.is_zero())
            {
                Some(d) => Lease::For(d),
                None => {
                    return Ok(Response::new(only(status(
                        v2::Code::IllegalInvisibleTime,
                        "the invisible duration must be positive",
                    ))));
                }
            },
        };
        // Every queue of the broker, whatever queue the client names, as Apache RocketMQ's
        // proxy pops: Java's client names the assignment's -1, Node's always queue 0. A FIFO
        // group's receive takes the queue it names (its assignment's), when there is one.
        let fifo = self.0.fifo_group(&group, &topic).await;
        let queues = match self
            .0
            .readable(&topic, mq.broker.as_ref().map(|b| b.name.as_str()))
            .await
        {
            Ok(mut q) if !q.is_empty() => {
                if fifo && q.iter().any(|r| r.id == mq.id) {
                    q.retain(|r| r.id == mq.id);
                }
                q
            }
            Ok(_) => {
                return Ok(Response::new(only(status(
                    v2::Code::Forbidden,
                    format!("topic {topic} has no readable queue there"),
                ))));
            }
            Err(s) => return Ok(Response::new(only(s))),
        };
        let batch = usize::try_from(req.batch_size)
            .unwrap_or(1)
            .clamp(1, MAX_BATCH);
        let poll = req
            .long_polling_timeout
            .and_then(|d| Duration::try_from(d).ok())
            .unwrap_or(Duration::from_secs(20))
            .min(MAX_POLL);
        let state = self.0.pop(&group, &topic);
        let deliveries = state
            .receive(
                &self.0.api,
                &queues,
                &expression,
                batch,
                &lease,
                poll,
                MAX_ATTEMPTS,
                fifo,
                self.0.config.request_timeout,
            )
            .await;
        // One status, OK or MESSAGE_NOT_FOUND when none came, then the messages.
        let last = if deliveries.is_empty() {
            status(v2::Code::MessageNotFound, "no new message")
        } else {
            ok()
        };
        let messages = deliveries
            .iter()
            .map(|d| convert::to_grpc(&d.message, &d.handle, d.attempt, d.invisible))
            .collect();
        let items = receive_answer(last, messages).into_iter().map(Ok);
        Ok(Response::new(Box::pin(futures_util::stream::iter(items))))
    }

    async fn ack_message(
        &self,
        request: Request<v2::AckMessageRequest>,
    ) -> Result<Response<v2::AckMessageResponse>, Status> {
        let needs = consuming(
            request.get_ref().group.as_ref(),
            request.get_ref().topic.as_ref(),
        );
        if let Err(s) = self.0.allowed(&request, &needs) {
            return Ok(Response::new(v2::AckMessageResponse {
                status: Some(s),
                entries: Vec::new(),
            }));
        }
        let req = request.into_inner();
        let group = convert::resource_name(req.group.as_ref());
        let topic = convert::resource_name(req.topic.as_ref());
        let mut entries = Vec::with_capacity(req.entries.len());
        for e in req.entries {
            let s = match self.0.handed_out(&group, &topic, &e.receipt_handle) {
                Err(s) => s,
                Ok(state) => match state.ack(&e.receipt_handle) {
                    Ok(commit) => {
                        if let Some((q, offset)) = commit {
                            state
                                .commit(&self.0.api, &q, offset, self.0.config.request_timeout)
                                .await;
                        }
                        ok()
                    }
                    Err(err) => status(v2::Code::InvalidReceiptHandle, err.to_string()),
                },
            };
            entries.push(v2::AckMessageResultEntry {
                message_id: e.message_id,
                receipt_handle: e.receipt_handle,
                status: Some(s),
            });
        }
        let overall = convert::overall(entries.iter().map(|e| e.status.as_ref()));
        Ok(Response::new(v2::AckMessageResponse {
            status: Some(overall),
            entries,
        }))
    }

    async fn forward_message_to_dead_letter_queue(
        &self,
        request: Request<v2::ForwardMessageToDeadLetterQueueRequest>,
    ) -> Result<Response<v2::ForwardMessageToDeadLetterQueueResponse>, Status> {
        let needs = consuming(
            request.get_ref().group.as_ref(),
            request.get_ref().topic.as_ref(),
        );
        if let Err(s) = self.0.allowed(&request, &needs) {
            return Ok(Response::new(v2::ForwardMessageToDeadLetterQueueResponse {
                status: Some(s),
            }));
        }
        let req = request.into_inner();
        let group = convert::resource_name(req.group.as_ref());
        let topic = convert::resource_name(req.topic.as_ref());
        let timeout = self.0.config.request_timeout;
        let state = match self.0.handed_out(&group, &topic, &req.receipt_handle) {
            Ok(state) => state,
            Err(s) => {
                return Ok(Response::new(v2::ForwardMessageToDeadLetterQueueResponse {
                    status: Some(s),
                }));
            }
        };
        let s = match state.take(&req.receipt_handle) {
            Ok((q, m)) => {
                let attempts = u32::try_from(req.max_delivery_attempts).unwrap_or(MAX_ATTEMPTS);
                if state
                    .to_dead_letters(&self.0.api, &q, &m, attempts, timeout)
                    .await
                {
                    if let Some(offset) = state.commit_point(&q) {
                        state.commit(&self.0.api, &q, offset, timeout).await;
                    }
                    ok()
                } else {
                    status(
                        v2::Code::InternalServerError,
                        "the broker did not take the message into the dead-letter queue",
                    )
                }
            }
            Err(err) => status(v2::Code::InvalidReceiptHandle, err.to_string()),
        };
        Ok(Response::new(v2::ForwardMessageToDeadLetterQueueResponse {
            status: Some(s),
        }))
    }

    type PullMessageStream = Stream2<v2::PullMessageResponse>;

    async fn pull_message(
        &self,
        request: Request<v2::PullMessageRequest>,
    ) -> Result<Response<Self::PullMessageStream>, Status> {
        use v2::pull_message_response::Content;
        let asked = request.get_ref();
        let needs = consuming_queue(asked.group.as_ref(), asked.message_queue.as_ref());
        let pulled = match self.0.allowed(&request, &needs) {
            Ok(()) => self.0.pull(asked, MAX_POLL).await,
            Err(s) => crate::offset::Pulled::refused(s),
        };
        // The status, the messages, then where to pull next.
        let answer = std::iter::once(Content::Status(pulled.status))
            .chain(pulled.messages.into_iter().map(Content::Message))
            .chain(pulled.next_offset.map(Content::NextOffset))
            .map(|content| {
                Ok(v2::PullMessageResponse {
                    content: Some(content),
                })
            })
            .collect::<Vec<_>>();
        Ok(Response::new(Box::pin(futures_util::stream::iter(answer))))
    }

    async fn update_offset(
        &self,
        request: Request<v2::UpdateOffsetRequest>,
    ) -> Result<Response<v2::UpdateOffsetResponse>, Status> {
        let asked = request.get_ref();
        let needs = consuming_queue(asked.group.as_ref(), asked.message_queue.as_ref());
        let status = match self.0.allowed(&request, &needs) {
            Ok(()) => self.0.update_offset(asked).await,
            Err(s) => s,
        };
        Ok(Response::new(v2::UpdateOffsetResponse {
            status: Some(status),
        }))
    }

    async fn get_offset(
        &self,
        request: Request<v2::GetOffsetRequest>,
    ) -> Result<Response<v2::GetOffsetResponse>, Status> {
        let asked = request.get_ref();
        let needs = consuming_queue(asked.group.as_ref(), asked.message_queue.as_ref());
        let (status, offset) = match self.0.allowed(&request, &needs) {
            Ok(()) => self.0.get_offset(asked).await,
            Err(s) => (s, 0),
        };
        Ok(Response::new(v2::GetOffsetResponse {
            status: Some(status),
            offset,
        }))
    }

    async fn query_offset(
        &self,
        request: Request<v2::QueryOffsetRequest>,
    ) -> Result<Response<v2::QueryOffsetResponse>, Status> {
        let asked = request.get_ref();
        let needs = [topic(
            asked.message_queue.as_ref().and_then(|q| q.topic.as_ref()),
            acl_perm::SUB,
        )];
        let (status, offset) = match self.0.allowed(&request, &needs) {
            Ok(()) => self.0.query_offset(asked).await,
            Err(s) => (s, 0),
        };
        Ok(Response::new(v2::QueryOffsetResponse {
            status: Some(status),
            offset,
        }))
    }

    async fn end_transaction(
        &self,
        request: Request<v2::EndTransactionRequest>,
    ) -> Result<Response<v2::EndTransactionResponse>, Status> {
        let needs = [topic(request.get_ref().topic.as_ref(), acl_perm::PUB)];
        if let Err(s) = self.0.allowed(&request, &needs) {
            return Ok(Response::new(v2::EndTransactionResponse {
                status: Some(s),
            }));
        }
        let req = request.into_inner();
        let resolution = v2::TransactionResolution::try_from(req.resolution)
            .unwrap_or(v2::TransactionResolution::Unspecified);
        let from_check = req.source == v2::TransactionSource::SourceServerCheck as i32;
        let Some((broker, header)) =
            transaction::end_header(&req.transaction_id, &req.message_id, resolution, from_check)
        else {
            return Ok(Response::new(v2::EndTransactionResponse {
                status: Some(status(
                    v2::Code::InvalidTransactionId,
                    format!(
                        "transaction {:?} is not one of this proxy's, or the resolution is unspecified",
                        req.transaction_id
                    ),
                )),
            }));
        };
        let s = match self
            .0
            .api
            .end_transaction_oneway(&broker, &header, None, self.0.config.request_timeout)
            .await
        {
            Ok(()) => ok(),
            Err(e) => status_of(&e),
        };
        Ok(Response::new(v2::EndTransactionResponse {
            status: Some(s),
        }))
    }

    type TelemetryStream = Stream2<v2::TelemetryCommand>;

    async fn telemetry(
        &self,
        request: Request<tonic::Streaming<v2::TelemetryCommand>>,
    ) -> Result<Response<Self::TelemetryStream>, Status> {
        let client_id = client_id(&request);
        let (metadata, remote) = (request.metadata().clone(), request.remote_addr());
        let mut incoming = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<v2::TelemetryCommand, Status>>(16);
        let core = Arc::clone(&self.0);
        let token = self.0.token.clone();
        // The stream's reader: answers each settings command; ends with the client's stream,
        // a broken one, or the proxy's shutdown.
        self.0.tasks.spawn(async move {
            loop {
                let next = tokio::select! {
                    () = token.cancelled() => break,
                    next = incoming.next() => next,
                };
                let command = match next {
                    Some(Ok(c)) => c,
                    Some(Err(e)) => {
                        debug!(cause = %e, "telemetry stream broke");
                        break;
                    }
                    None => break,
                };
                let answer = match command.command {
                    Some(v2::telemetry_command::Command::Settings(s)) => {
                        // Settings name what the client publishes to or consumes: it must be
                        // allowed to, or it hears why instead of settings.
                        if let Err(refused) =
                            core.allowed_by(&metadata, remote, &settings_resources(&s))
                        {
                            let answer = v2::TelemetryCommand {
                                status: Some(refused),
                                command: None,
                            };
                            if tx.send(Ok(answer)).await.is_err() {
                                break;
                            }
                            continue;
                        }
                        // A producer may be asked about its orphaned transactions.
                        if let (Some(id), Some(v2::settings::PubSub::Publishing(p))) =
                            (&client_id, &s.pub_sub)
                        {
                            let topics = p
                                .topics
                                .iter()
                                .map(|t| convert::resource_name(Some(t)))
                                .collect();
                            core.producers.connected(id, topics, tx.clone());
                        }
                        let fifo = match &s.pub_sub {
                            Some(v2::settings::PubSub::Subscription(sub)) => {
                                let group = convert::resource_name(sub.group.as_ref());
                                let topic = sub
                                    .subscriptions
                                    .first()
                                    .map(|e| convert::resource_name(e.topic.as_ref()));
                                match topic {
                                    Some(t) if !group.is_empty() => {
                                        core.fifo_group(&group, &t).await
                                    }
                                    _ => false,
                                }
                            }
                            _ => false,
                        };
                        v2::TelemetryCommand {
                            status: Some(ok()),
                            command: Some(v2::telemetry_command::Command::Settings(
                                core.settings(s, fifo),
                            )),
                        }
                    }
                    // Results of commands this proxy never sends, and anything newer: ignored.
                    _ => continue,
                };
                if tx.send(Ok(answer)).await.is_err() {
                    break;
                }
            }
            if let Some(id) = &client_id {
                core.producers.gone(id);
                core.client_gone(id);
            }
        });
        let out = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        Ok(Response::new(Box::pin(out)))
    }

    async fn notify_client_termination(
        &self,
        request: Request<v2::NotifyClientTerminationRequest>,
    ) -> Result<Response<v2::NotifyClientTerminationResponse>, Status> {
        let needs: Vec<_> = request
            .get_ref()
            .group
            .iter()
            .map(|g| group(Some(g)))
            .collect();
        let status = match self.0.allowed(&request, &needs) {
            Ok(()) => ok(),
            Err(s) => s,
        };
        Ok(Response::new(v2::NotifyClientTerminationResponse {
            status: Some(status),
        }))
    }

    async fn change_invisible_duration(
        &self,
        request: Request<v2::ChangeInvisibleDurationRequest>,
    ) -> Result<Response<v2::ChangeInvisibleDurationResponse>, Status> {
        let needs = consuming(
            request.get_ref().group.as_ref(),
            request.get_ref().topic.as_ref(),
        );
        if let Err(s) = self.0.allowed(&request, &needs) {
            return Ok(Response::new(v2::ChangeInvisibleDurationResponse {
                status: Some(s),
                receipt_handle: String::new(),
            }));
        }
        let req = request.into_inner();
        let group = convert::resource_name(req.group.as_ref());
        let topic = convert::resource_name(req.topic.as_ref());
        let Some(invisible) = req
            .invisible_duration
            .and_then(|d| Duration::try_from(d).ok())
        else {
            return Ok(Response::new(v2::ChangeInvisibleDurationResponse {
                status: Some(status(
                    v2::Code::IllegalInvisibleTime,
                    "the invisible duration must not be negative",
                )),
                receipt_handle: String::new(),
            }));
        };
        let changed = self
            .0
            .handed_out(&group, &topic, &req.receipt_handle)
            .and_then(|state| {
                state
                    .change_invisible(&req.receipt_handle, invisible)
                    .map_err(|err| status(v2::Code::InvalidReceiptHandle, err.to_string()))
            });
        let (s, handle) = match changed {
            Ok(h) => (ok(), h),
            Err(s) => (s, String::new()),
        };
        Ok(Response::new(v2::ChangeInvisibleDurationResponse {
            status: Some(s),
            receipt_handle: handle,
        }))
    }

    /// RecallMessage: RECALL_MESSAGE to the broker the handle names (5.3 brokers and ours).
    async fn recall_message(
        &self,
        request: Request<v2::RecallMessageRequest>,
    ) -> Result<Response<v2::RecallMessageResponse>, Status> {
        let needs = [topic(request.get_ref().topic.as_ref(), acl_perm::PUB)];
        let answer = |s: v2::Status, message_id: String| {
            Ok(Response::new(v2::RecallMessageResponse {
                status: Some(s),
                message_id,
            }))
        };
        if let Err(s) = self.0.allowed(&request, &needs) {
            return answer(s, String::new());
        }
        let req = request.into_inner();
        let name = convert::resource_name(req.topic.as_ref());
        match self.0.recall(&name, &req.recall_handle).await {
            Ok(id) => answer(ok(), id),
            Err(s) => answer(s, String::new()),
        }
    }

    async fn sync_lite_subscription(
        &self,
        _request: Request<v2::SyncLiteSubscriptionRequest>,
    ) -> Result<Response<v2::SyncLiteSubscriptionResponse>, Status> {
        Ok(Response::new(v2::SyncLiteSubscriptionResponse {
            status: Some(not_served("SyncLiteSubscription")),
        }))
    }
}
