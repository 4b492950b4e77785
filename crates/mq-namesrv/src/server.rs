//! The name server: request processors over [`RouteInfoManager`], the liveness scan, and the
//! watch that drops a broker when its connection closes.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mq_client_api::answer::{header_error, respond};
use mq_client_api::body::{
    KvTable, RegisterBrokerBody, TopicConfigSerializeWrapper, TopicList, body_crc32, from_json,
    to_json,
};
use mq_client_api::header::{
    CommandHeader, GetKvConfigRequestHeader, GetKvConfigResponseHeader, GetRouteInfoRequestHeader,
    PutKvConfigRequestHeader, RegisterBrokerRequestHeader, RegisterBrokerResponseHeader,
    UnregisterBrokerRequestHeader,
};
use mq_client_api::{RequestCode, ResponseCode};
use mq_remoting::{
    RemotingCommand, RemotingServer, RequestContext, ServerConfig, ShutdownReport, processor_fn,
};
use parking_lot::RwLock;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, warn};

use crate::routes::{Registration, RouteInfoManager};

/// KV namespace of ordered-topic configs.
pub const ORDER_TOPIC_CONFIG: &str = "ORDER_TOPIC_CONFIG";
/// Versions below this (V3_0_11) register with a bare topic-config wrapper as the body.
const VERSION_WITH_REGISTER_BODY: i32 = 37;

/// Name server settings.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct NamesrvConfig {
    /// Listen address. Default `127.0.0.1:0`; the Java default port is 9876.
    pub listen: SocketAddr,
    /// How often silent brokers are looked for. Default 10 s.
    pub scan_interval: Duration,
    /// A broker silent this long is dropped. Default 120 s.
    pub broker_expiry: Duration,
    /// Put `orderTopicConf` from the `ORDER_TOPIC_CONFIG` KV namespace into routes. Default
    /// false, as Java's `orderMessageEnable`.
    pub order_message_enable: bool,
    /// TLS: certificate, key and mode. Default none: plain TCP.
    pub tls: Option<mq_remoting::ServerTls>,
}

impl Default for NamesrvConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            scan_interval: Duration::from_secs(10),
            broker_expiry: Duration::from_secs(120),
            order_message_enable: false,
            tls: None,
        }
    }
}

impl NamesrvConfig {
    /// Serves TLS as `tls` says (its mode decides whether plain clients are served too).
    #[must_use]
    pub fn with_tls(mut self, tls: mq_remoting::ServerTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Sets the listen address.
    #[must_use]
    pub fn with_listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// Enables `orderTopicConf` in routes.
    #[must_use]
    pub fn with_order_message_enable(mut self, on: bool) -> Self {
        self.order_message_enable = on;
        self
    }
}

struct State {
    config: NamesrvConfig,
    routes: RouteInfoManager,
    kv: RwLock<HashMap<String, BTreeMap<String, String>>>,
    watched: mq_remoting::ConnectionWatches,
    token: CancellationToken,
    tasks: TaskTracker,
}

/// A running name server.
#[derive(Debug)]
pub struct NameServer {
    server: RemotingServer,
    state: Arc<StateHandle>,
}

/// Shared state of the processors and background tasks.
struct StateHandle(State);

impl std::fmt::Debug for StateHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NameServerState").finish_non_exhaustive()
    }
}

impl NameServer {
    /// Binds and starts serving.
    ///
    /// # Errors
    /// The bind error.
    pub async fn start(config: NamesrvConfig) -> io::Result<Self> {
        let server = RemotingServer::bind(server_config(config.listen, config.tls.clone())).await?;
        let state = Arc::new(StateHandle(State {
            config,
            routes: RouteInfoManager::default(),
            kv: RwLock::new(HashMap::new()),
            watched: mq_remoting::ConnectionWatches::default(),
            token: CancellationToken::new(),
            tasks: TaskTracker::new(),
        }));
        let s = Arc::clone(&state);
        server.set_default_processor(processor_fn(move |ctx, req| {
            let s = Arc::clone(&s);
            async move { Some(s.handle(&ctx, req)) }
        }));
        let s = Arc::clone(&state);
        state.0.tasks.spawn(
            async move {
                let mut tick = tokio::time::interval(s.0.config.scan_interval);
                tick.tick().await;
                loop {
                    tokio::select! {
                        () = s.0.token.cancelled() => break,
                        _ = tick.tick() => {
                            for addr in s.0.routes.scan_not_active(Instant::now(), s.0.config.broker_expiry) {
                                warn!(broker = %addr, "broker expired; removed from routes");
                            }
                        }
                    }
                }
            }
            .instrument(tracing::debug_span!("namesrv_scan")),
        );
        info!(addr = %server.local_addr(), "name server started");
        Ok(Self { server, state })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// Adds a hook that sees every request before its processor (auditing, fault injection).
    pub fn add_rpc_hook(&self, hook: Arc<dyn mq_remoting::RpcHook>) {
        self.server.add_rpc_hook(hook);
    }

    /// The route tables.
    pub fn routes(&self) -> &RouteInfoManager {
        &self.state.0.routes
    }

    /// Stops the scan and connection watches, then the server (see
    /// [`RemotingServer::shutdown`]).
    pub async fn shutdown(&self, grace: Duration) -> ShutdownReport {
        self.state.0.token.cancel();
        self.state.0.tasks.close();
        let report = self.server.shutdown(grace).await;
        self.state.0.tasks.wait().await;
        report
    }
}

impl Drop for NameServer {
    fn drop(&mut self) {
        self.state.0.token.cancel();
    }
}

impl StateHandle {
    fn handle(self: &Arc<Self>, ctx: &RequestContext, req: RemotingCommand) -> RemotingCommand {
        match RequestCode(req.code) {
            RequestCode::REGISTER_BROKER => self.register(ctx, &req),
            RequestCode::UNREGISTER_BROKER => {
                match UnregisterBrokerRequestHeader::decode(&req.ext_fields) {
                    Ok(h) => {
                        self.0.routes.unregister(
                            &h.cluster_name,
                            &h.broker_addr,
                            &h.broker_name,
                            h.broker_id,
                        );
                        info!(broker = %h.broker_addr, "broker unregistered");
                        respond(&req, ResponseCode::SUCCESS, None)
                    }
                    Err(e) => header_error(&req, &e),
                }
            }
            RequestCode::GET_ROUTEINFO_BY_TOPIC => self.route(&req),
            RequestCode::GET_BROKER_CLUSTER_INFO => respond(&req, ResponseCode::SUCCESS, None)
                .with_body(to_json(&self.0.routes.cluster_info())),
            RequestCode::GET_ALL_TOPIC_LIST_FROM_NAMESERVER => {
                let list = TopicList {
                    topic_list: self.0.routes.topics(),
                };
                respond(&req, ResponseCode::SUCCESS, None).with_body(to_json(&list))
            }
            RequestCode::PUT_KV_CONFIG => match PutKvConfigRequestHeader::decode(&req.ext_fields) {
                Ok(h) => {
                    self.0
                        .kv
                        .write()
                        .entry(h.namespace)
                        .or_default()
                        .insert(h.key, h.value);
                    respond(&req, ResponseCode::SUCCESS, None)
                }
                Err(e) => header_error(&req, &e),
            },
            RequestCode::GET_KV_CONFIG => match GetKvConfigRequestHeader::decode(&req.ext_fields) {
                Ok(h) => match self.kv_get(&h.namespace, &h.key) {
                    Some(v) => respond(&req, ResponseCode::SUCCESS, None).with_ext_fields(
                        GetKvConfigResponseHeader { value: Some(v) }.to_ext_fields(),
                    ),
                    None => respond(
                        &req,
                        ResponseCode::QUERY_NOT_FOUND,
                        Some(format!(
                            "No config item, Namespace: {} Key: {}",
                            h.namespace, h.key
                        )),
                    ),
                },
                Err(e) => header_error(&req, &e),
            },
            RequestCode::DELETE_KV_CONFIG => {
                match GetKvConfigRequestHeader::decode(&req.ext_fields) {
                    Ok(h) => {
                        if let Some(ns) = self.0.kv.write().get_mut(&h.namespace) {
                            ns.remove(&h.key);
                        }
                        respond(&req, ResponseCode::SUCCESS, None)
                    }
                    Err(e) => header_error(&req, &e),
                }
            }
            other => respond(
                &req,
                ResponseCode::REQUEST_CODE_NOT_SUPPORTED,
                Some(format!(" request type {} not supported", other.0)),
            ),
        }
    }

    fn kv_get(&self, namespace: &str, key: &str) -> Option<String> {
        self.0
            .kv
            .read()
            .get(namespace)
            .and_then(|ns| ns.get(key).cloned())
    }

    fn route(&self, req: &RemotingCommand) -> RemotingCommand {
        let h = match GetRouteInfoRequestHeader::decode(&req.ext_fields) {
            Ok(h) => h,
            Err(e) => return header_error(req, &e),
        };
        match self.0.routes.route(&h.topic) {
            Some(mut route) => {
                if self.0.config.order_message_enable {
                    route.order_topic_conf = self.kv_get(ORDER_TOPIC_CONFIG, &h.topic);
                }
                // Standard JSON always: Java clients of every version accept it.
                respond(req, ResponseCode::SUCCESS, None).with_body(to_json(&route))
            }
            None => respond(
                req,
                ResponseCode::TOPIC_NOT_EXIST,
                Some(format!(
                    "No topic route info in name server for the topic: {}\nSee http://rocketmq.apache.org/docs/faq/ for further details.",
                    h.topic
                )),
            ),
        }
    }

    fn register(self: &Arc<Self>, ctx: &RequestContext, req: &RemotingCommand) -> RemotingCommand {
        let h = match RegisterBrokerRequestHeader::decode(&req.ext_fields) {
            Ok(h) => h,
            Err(e) => return header_error(req, &e),
        };
        if h.body_crc32 != 0 && h.body_crc32 != body_crc32(&req.body) {
            warn!(broker = %h.broker_addr, "registration body CRC mismatch");
            return respond(
                req,
                ResponseCode::SYSTEM_ERROR,
                Some("crc32 not match".into()),
            );
        }
        let (topics, filter_server_list) = if req.body.is_empty() {
            (TopicConfigSerializeWrapper::default(), Vec::new())
        } else if req.version >= VERSION_WITH_REGISTER_BODY {
            match RegisterBrokerBody::decode(&req.body, h.compressed) {
                Ok(b) => (b.topic_config_serialize_wrapper, b.filter_server_list),
                Err(e) => return respond(req, ResponseCode::SYSTEM_ERROR, Some(e.to_string())),
            }
        } else {
            match from_json::<TopicConfigSerializeWrapper>("TopicConfigSerializeWrapper", &req.body)
            {
                Ok(w) => (w, Vec::new()),
                Err(e) => return respond(req, ResponseCode::SYSTEM_ERROR, Some(e.to_string())),
            }
        };
        let connection = ctx.connection().clone();
        let outcome = self.0.routes.register(
            Registration {
                cluster_name: h.cluster_name,
                broker_addr: h.broker_addr.clone(),
                broker_name: h.broker_name,
                broker_id: h.broker_id,
                ha_server_addr: h.ha_server_addr,
                topics,
                filter_server_list,
                connection_id: connection.id(),
            },
            Instant::now(),
        );
        debug!(broker = %h.broker_addr, "broker registered");
        self.watch(connection);
        let mut resp = respond(req, ResponseCode::SUCCESS, None).with_ext_fields(
            RegisterBrokerResponseHeader {
                ha_server_addr: outcome.ha_server_addr,
                master_addr: outcome.master_addr,
            }
            .to_ext_fields(),
        );
        if let Some(ns) = self.0.kv.read().get(ORDER_TOPIC_CONFIG) {
            resp = resp.with_body(to_json(&KvTable { table: ns.clone() }));
        }
        resp
    }

    /// Drops the brokers of a connection as soon as it closes (once per connection).
    fn watch(self: &Arc<Self>, connection: mq_remoting::ConnectionHandle) {
        let s = Arc::clone(self);
        self.0
            .watched
            .watch(connection, &self.0.tasks, &self.0.token, |id| async move {
                for addr in s.0.routes.connection_closed(id) {
                    info!(broker = %addr, "broker connection closed; removed from routes");
                }
            });
    }
}

/// The remoting server's settings: `listen`, with TLS when given.
fn server_config(listen: SocketAddr, tls: Option<mq_remoting::ServerTls>) -> ServerConfig {
    let config = ServerConfig::default().with_listen(listen);
    match tls {
        Some(tls) => config.with_tls(tls),
        None => config,
    }
}
