//! [`ClientInstance`]: the state one client id shares across its producers and consumers, and
//! the process-wide [`ClientManager`] that hands instances out.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use tokio::time::Instant;

use mq_client_api::answer::respond;
use mq_client_api::body::{ConsumerData, HeartbeatData, MASTER_ID, ProducerData, TopicRouteData};
use mq_client_api::header::{
    CheckTransactionStateRequestHeader, CommandHeader, NotifyConsumerIdsChangedRequestHeader,
    ReplyMessageRequestHeader, UnregisterClientRequestHeader,
};
use mq_client_api::message::{MessageExt, decode_record, property};
use mq_client_api::{ApiConfig, ClientApi, ClientApiError, RequestCode, ResponseCode};
use mq_remoting::{RemotingClient, processor_fn};
use parking_lot::{Mutex, RwLock};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, warn};

use crate::config::{ClientConfig, ConfigError};
use crate::error::InstanceError;
use crate::reply::{PendingReply, ReplyTable, read_pushed_reply};
use crate::state::{ServiceState, StateMachine};

/// The internal producer group Java clients announce in every heartbeat.
pub const CLIENT_INNER_PRODUCER: &str = "CLIENT_INNER_PRODUCER";

/// A producer as the instance sees it. The instance knows nothing else of its internals.
pub trait ProducerMember: Send + Sync + 'static {
    /// The group (namespace-wrapped).
    fn group(&self) -> String;
    /// Topics whose routes this producer publishes to (refreshed periodically).
    fn topics(&self) -> Vec<String>;
    /// A route changed.
    fn route_updated(&self, topic: &str, route: &TopicRouteData);
    /// A broker asks about a half message (CHECK_TRANSACTION_STATE).
    fn check_transaction_state(
        &self,
        broker_addr: String,
        message: MessageExt,
        header: CheckTransactionStateRequestHeader,
    );
}

/// A consumer as the instance sees it.
pub trait ConsumerMember: Send + Sync + 'static {
    /// The group (namespace-wrapped).
    fn group(&self) -> String;
    /// What the heartbeat says about this consumer.
    fn consumer_data(&self) -> ConsumerData;
    /// A route changed.
    fn route_updated(&self, topic: &str, route: &TopicRouteData);
    /// The broker says the group's membership changed.
    fn ids_changed(&self);
}

/// The shared client of one client id. Java: `MQClientInstance`.
pub struct ClientInstance {
    config: ClientConfig,
    client_id: String,
    api: ClientApi,
    state: StateMachine,
    producers: RwLock<HashMap<String, Arc<dyn ProducerMember>>>,
    consumers: RwLock<HashMap<String, Arc<dyn ConsumerMember>>>,
    routes: RwLock<HashMap<String, TopicRouteData>>,
    brokers: RwLock<HashMap<String, BTreeMap<i64, String>, foldhash::fast::RandomState>>,
    /// The master address of each broker of `brokers` that has one (its VIP address when
    /// configured), shared with the sends to it. Rebuilt whenever `brokers` changes.
    masters: RwLock<HashMap<String, Arc<str>, foldhash::fast::RandomState>>,
    route_lock: tokio::sync::Mutex<()>,
    replies: Arc<ReplyTable>,
    /// Brokers that took a heartbeat of this instance (it is known to them by client id).
    heartbeated: Mutex<std::collections::HashSet<String>>,
    token: CancellationToken,
    tasks: TaskTracker,
}

impl fmt::Debug for ClientInstance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientInstance")
            .field("client_id", &self.client_id)
            .field("state", &self.state.get())
            .field(
                "producers",
                &self.producers.read().keys().collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl ClientInstance {
    /// A new instance (state CREATED). Prefer [`ClientManager::get_or_create`], which shares one
    /// instance per client id.
    ///
    /// # Errors
    /// [`ConfigError`] when the configuration is invalid.
    pub fn new(config: ClientConfig) -> Result<Arc<Self>, ConfigError> {
        config.validate()?;
        let remoting = RemotingClient::new(config.remoting());
        remoting.name_servers().update(config.name_servers.clone());
        let api = ClientApi::new(
            remoting,
            ApiConfig::default().with_serialize_type(config.serialize_type),
        );
        Ok(Arc::new(Self {
            client_id: config.client_id(),
            config,
            api,
            state: StateMachine::default(),
            producers: RwLock::new(HashMap::new()),
            consumers: RwLock::new(HashMap::new()),
            routes: RwLock::new(HashMap::new()),
            brokers: RwLock::new(HashMap::default()),
            masters: RwLock::new(HashMap::default()),
            route_lock: tokio::sync::Mutex::new(()),
            replies: Arc::default(),
            heartbeated: Mutex::default(),
            token: CancellationToken::new(),
            tasks: TaskTracker::new(),
        }))
    }

    /// The client id `ip@instance[@unit]`.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// The typed RPCs this instance sends with.
    pub fn api(&self) -> &ClientApi {
        &self.api
    }

    /// The lifecycle state.
    pub fn state(&self) -> ServiceState {
        self.state.get()
    }

    /// Starts the instance: server-initiated request processors, then the scheduled tasks
    /// (route refresh, heartbeat with offline-broker cleanup). Starting a running instance is
    /// a no-op, as in Java.
    ///
    /// # Errors
    /// [`InstanceError::State`] after a failed start or a shutdown.
    pub fn start(self: &Arc<Self>) -> Result<(), InstanceError> {
        match self.state.get() {
            ServiceState::Running => return Ok(()),
            ServiceState::Created => {}
            other => return Err(InstanceError::State(other)),
        }
        self.state
            .transition(ServiceState::Created, ServiceState::StartFailed)?;
        self.register_processors();
        self.register_reply_processor();
        self.spawn_tasks();
        self.state
            .transition(ServiceState::StartFailed, ServiceState::Running)?;
        info!(client_id = %self.client_id, "client instance started");
        Ok(())
    }

    fn register_processors(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        self.api.remoting().register_processor(
            RequestCode::CHECK_TRANSACTION_STATE.0,
            processor_fn(move |ctx, req| {
                let weak = weak.clone();
                async move {
                    let me = weak.upgrade()?;
                    let header = match CheckTransactionStateRequestHeader::decode(&req.ext_fields) {
                        Ok(h) => h,
                        Err(e) => {
                            warn!(cause = %e, "bad transaction check from broker");
                            return None;
                        }
                    };
                    let msg = match decode_record(&mut req.body.clone(), true, true) {
                        Ok(m) => m,
                        Err(e) => {
                            warn!(cause = %e, "bad half message in transaction check");
                            return None;
                        }
                    };
                    let group = msg
                        .message
                        .property(property::PRODUCER_GROUP)
                        .map(str::to_owned);
                    let producer = group.and_then(|g| me.producers.read().get(&g).cloned());
                    match producer {
                        Some(p) => {
                            p.check_transaction_state(ctx.peer_addr().to_owned(), msg, header)
                        }
                        None => debug!("transaction check for a group with no producer here"),
                    }
                    // CHECK_TRANSACTION_STATE is oneway: no response.
                    None
                }
            }),
        );
        let weak = Arc::downgrade(self);
        self.api.remoting().register_processor(
            RequestCode::NOTIFY_CONSUMER_IDS_CHANGED.0,
            processor_fn(move |_ctx, req| {
                let weak = weak.clone();
                async move {
                    let me = weak.upgrade()?;
                    if let Ok(h) = NotifyConsumerIdsChangedRequestHeader::decode(&req.ext_fields)
                        && let Some(c) = me.consumers.read().get(&h.consumer_group).cloned()
                    {
                        c.ids_changed();
                    }
                    None
                }
            }),
        );
    }

    /// Registers a request-reply request by its correlation id, before the request is sent:
    /// the reply the broker pushes (PUSH_REPLY_MESSAGE_TO_CLIENT) completes the returned wait.
    /// A reply nobody waits for any more is dropped with a log event.
    pub fn expect_reply(&self, correlation_id: impl Into<String>) -> PendingReply {
        self.replies.expect(correlation_id.into())
    }

    /// Requests waiting for their reply.
    pub fn pending_replies(&self) -> usize {
        self.replies.len()
    }

    fn register_reply_processor(&self) {
        let replies = Arc::clone(&self.replies);
        self.api.remoting().register_processor(
            RequestCode::PUSH_REPLY_MESSAGE_TO_CLIENT.0,
            processor_fn(move |ctx, req| {
                let replies = Arc::clone(&replies);
                async move {
                    let reply = ReplyMessageRequestHeader::decode(&req.ext_fields)
                        .map_err(|e| e.to_string())
                        .and_then(|h| read_pushed_reply(h, &req.body).map_err(|e| e.to_string()));
                    let answer = match reply {
                        Ok(reply) => {
                            let correlation_id = reply
                                .message
                                .property(property::CORRELATION_ID)
                                .unwrap_or("")
                                .to_owned();
                            if !replies.complete(reply) {
                                info!(
                                    correlation_id,
                                    broker = %ctx.peer_addr(),
                                    "a reply came for no waiting request (late, or not ours); dropped"
                                );
                            }
                            respond(&req, ResponseCode::SUCCESS, None)
                        }
                        Err(cause) => {
                            warn!(cause, broker = %ctx.peer_addr(), "unreadable reply pushed");
                            respond(
                                &req,
                                ResponseCode::SYSTEM_ERROR,
                                Some(format!("process reply message fail: {cause}")),
                            )
                        }
                    };
                    Some(answer)
                }
            }),
        );
    }

    fn spawn_tasks(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let token = self.token.clone();
        let (routes_every, heartbeat_every) = (
            self.config.poll_name_server_interval,
            self.config.heartbeat_interval,
        );
        self.tasks.spawn(
            async move {
                let start = Instant::now();
                let mut routes =
                    tokio::time::interval_at(start + Duration::from_millis(10), routes_every);
                let mut heartbeat =
                    tokio::time::interval_at(start + Duration::from_secs(1), heartbeat_every);
                loop {
                    let refresh_routes = tokio::select! {
                        () = token.cancelled() => break,
                        _ = routes.tick() => true,
                        _ = heartbeat.tick() => false,
                    };
                    let Some(me) = weak.upgrade() else { break };
                    // A shutdown does not wait for a name server or broker that stopped
                    // answering: the work in progress is dropped with its requests.
                    let work = async {
                        if refresh_routes {
                            me.refresh_all_routes().await;
                        } else {
                            me.clean_offline_brokers();
                            me.heartbeat_all().await;
                        }
                    };
                    tokio::select! {
                        () = token.cancelled() => break,
                        () = work => {}
                    }
                }
            }
            .instrument(tracing::debug_span!("client_instance_tasks")),
        );
    }

    /// Registers a producer group.
    ///
    /// # Errors
    /// [`InstanceError::DuplicateGroup`] when the group is registered already.
    pub fn register_producer(&self, member: Arc<dyn ProducerMember>) -> Result<(), InstanceError> {
        let group = member.group();
        let mut producers = self.producers.write();
        if producers.contains_key(&group) {
            return Err(InstanceError::DuplicateGroup(group));
        }
        producers.insert(group, member);
        Ok(())
    }

    /// Registers a consumer group.
    ///
    /// # Errors
    /// [`InstanceError::DuplicateGroup`] when the group is registered already.
    pub fn register_consumer(&self, member: Arc<dyn ConsumerMember>) -> Result<(), InstanceError> {
        let group = member.group();
        let mut consumers = self.consumers.write();
        if consumers.contains_key(&group) {
            return Err(InstanceError::DuplicateGroup(group));
        }
        consumers.insert(group, member);
        Ok(())
    }

    /// Removes a producer group and tells every known broker (UNREGISTER_CLIENT, to all at
    /// once). When no member is left the instance shuts down and leaves the [`ClientManager`].
    /// Everything ends within `timeout`: a broker that has not answered by then is left to
    /// notice the closed connection.
    pub async fn unregister_producer(&self, group: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        self.producers.write().remove(group);
        self.unregister_client(Some(group), None, deadline).await;
        self.shutdown_if_unused(deadline).await;
    }

    /// Removes a consumer group, like [`ClientInstance::unregister_producer`].
    pub async fn unregister_consumer(&self, group: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        self.consumers.write().remove(group);
        self.unregister_client(None, Some(group), deadline).await;
        self.shutdown_if_unused(deadline).await;
    }

    /// Removes a producer group at once, without telling the brokers: for a producer dropped
    /// without a shutdown, where nothing can be awaited. Brokers forget the group when the
    /// connection closes. When no member is left the instance stops at once (see
    /// [`ClientInstance::stop_now`]).
    pub fn release_producer(&self, group: &str) {
        self.producers.write().remove(group);
        self.stop_now_if_unused();
    }

    /// Removes a consumer group at once, like [`ClientInstance::release_producer`].
    pub fn release_consumer(&self, group: &str) {
        self.consumers.write().remove(group);
        self.stop_now_if_unused();
    }

    fn stop_now_if_unused(&self) {
        if !self.has_members() {
            self.stop_now();
            ClientManager::global().forget(self);
        }
    }

    /// Stops without waiting: the scheduled tasks are cancelled and every connection closes
    /// (requests in flight fail with a closed-connection error; their callbacks still run).
    /// [`ClientInstance::stopped`] waits until every task has ended. Idempotent.
    pub fn stop_now(&self) {
        self.stop_tasks();
        self.api.remoting().close();
    }

    /// Marks the instance shut down and tells its scheduled tasks to end.
    fn stop_tasks(&self) {
        self.state.force(ServiceState::ShutdownAlready);
        self.token.cancel();
        self.tasks.close();
    }

    /// Waits until a stopped instance's tasks, its connections' tasks and its queued
    /// callbacks have all ended.
    pub async fn stopped(&self) {
        self.tasks.wait().await;
        self.api.remoting().closed().await;
    }

    /// Whether any producer or consumer is registered.
    pub fn has_members(&self) -> bool {
        !self.producers.read().is_empty() || !self.consumers.read().is_empty()
    }

    async fn unregister_client(
        &self,
        producer: Option<&str>,
        consumer: Option<&str>,
        deadline: Instant,
    ) {
        let header = UnregisterClientRequestHeader {
            client_id: self.client_id.clone(),
            producer_group: producer.map(str::to_owned),
            consumer_group: consumer.map(str::to_owned),
        };
        let timeout = deadline
            .saturating_duration_since(Instant::now())
            .min(self.config.request_timeout);
        let calls = self.all_broker_addrs().into_iter().map(|addr| {
            let header = &header;
            async move {
                if let Err(e) = self.api.unregister_client(&addr, header, timeout).await {
                    debug!(broker = %addr, cause = %e, "unregister client failed");
                }
            }
        });
        futures_util::future::join_all(calls).await;
    }

    async fn shutdown_if_unused(&self, deadline: Instant) {
        if !self.has_members() {
            self.shutdown_by(deadline).await;
            ClientManager::global().forget(self);
        }
    }

    /// Stops the scheduled tasks and closes every connection, giving requests in flight up to
    /// the request timeout. Idempotent.
    pub async fn shutdown(&self) {
        self.shutdown_by(Instant::now() + self.config.request_timeout)
            .await;
    }

    async fn shutdown_by(&self, deadline: Instant) {
        if self.state.get() == ServiceState::ShutdownAlready {
            return;
        }
        self.stop_tasks();
        self.tasks.wait().await;
        let grace = deadline.saturating_duration_since(Instant::now());
        let _ = self.api.remoting().shutdown(grace).await;
        info!(client_id = %self.client_id, "client instance shut down");
    }

    // ----- routes -----

    /// The cached route of `topic`.
    pub fn route(&self, topic: &str) -> Option<TopicRouteData> {
        self.routes.read().get(topic).cloned()
    }

    /// Fetches the route of `topic` from the name servers, caches it and tells the members.
    /// Everything, waiting for another lookup in progress included, ends within `timeout`.
    ///
    /// # Errors
    /// [`InstanceError::NoNameServer`] when none is configured;
    /// [`InstanceError::NameServerTimeout`] when the name server did not answer in time; the
    /// API error otherwise (a TOPIC_NOT_EXIST broker error when the name server knows no route).
    pub async fn update_route(
        &self,
        topic: &str,
        timeout: Duration,
    ) -> Result<TopicRouteData, InstanceError> {
        let route = self.fetch_route(topic, timeout).await?;
        self.store_route(topic, route.clone());
        Ok(route)
    }

    /// One route lookup under the route lock, within `timeout`.
    async fn fetch_route(
        &self,
        topic: &str,
        timeout: Duration,
    ) -> Result<TopicRouteData, InstanceError> {
        if self.config.name_servers.is_empty() {
            return Err(InstanceError::NoNameServer);
        }
        let started = Instant::now();
        let deadline = started + timeout;
        let silent = |waited| InstanceError::NameServerTimeout {
            addr: self
                .api
                .remoting()
                .name_servers()
                .chosen()
                .unwrap_or_else(|| self.config.name_servers.join(";")),
            waited,
        };
        // Another lookup may hold the lock while its name server is silent: wait no longer
        // than this caller's time.
        let Ok(_guard) = tokio::time::timeout_at(deadline, self.route_lock.lock()).await else {
            return Err(silent(started.elapsed()));
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(silent(started.elapsed()));
        }
        self.api
            .topic_route(topic, left)
            .await
            .map_err(|e| match e {
                ClientApiError::Remoting(mq_remoting::RemotingError::Timeout { addr, .. }) => {
                    InstanceError::NameServerTimeout {
                        addr,
                        waited: started.elapsed(),
                    }
                }
                other => other.into(),
            })
    }

    /// Builds a route for a topic the name server does not know yet from the route of
    /// `template` (TBW102), with `min(queue_nums, template read queues)` queues per broker, so
    /// that the first send makes a broker auto-create the topic.
    ///
    /// # Errors
    /// As for [`ClientInstance::update_route`], for the template.
    pub async fn update_route_from_template(
        &self,
        topic: &str,
        template: &str,
        queue_nums: i32,
        timeout: Duration,
    ) -> Result<TopicRouteData, InstanceError> {
        let mut route = self.fetch_route(template, timeout).await?;
        for q in &mut route.queue_datas {
            let n = queue_nums.min(q.read_queue_nums);
            q.read_queue_nums = n;
            q.write_queue_nums = n;
        }
        self.store_route(topic, route.clone());
        Ok(route)
    }

    fn store_route(&self, topic: &str, route: TopicRouteData) {
        let new_addrs: Vec<String> = {
            let mut brokers = self.brokers.write();
            let known: Vec<String> = brokers.values().flat_map(|a| a.values().cloned()).collect();
            for b in &route.broker_datas {
                brokers.insert(b.broker_name.clone(), b.broker_addrs.clone());
            }
            self.refresh_masters(&brokers);
            route
                .broker_datas
                .iter()
                .flat_map(|b| b.broker_addrs.values().cloned())
                .filter(|a| !known.contains(a))
                .collect()
        };
        // A broker we just learned of hears from us at once, not at the next heartbeat tick:
        // consumers cannot be given queues by a broker that does not know them.
        if !new_addrs.is_empty() && self.state.get() == ServiceState::Running {
            let data = self.heartbeat_data();
            for addr in new_addrs {
                let (api, data, timeout) =
                    (self.api.clone(), data.clone(), self.config.request_timeout);
                let token = self.token.clone();
                self.tasks.spawn(async move {
                    tokio::select! {
                        () = token.cancelled() => {}
                        r = api.heartbeat(&addr, &data, timeout) => if let Err(e) = r {
                            debug!(broker = %addr, cause = %e, "first heartbeat failed");
                        }
                    }
                });
            }
        }
        let changed = self.routes.read().get(topic) != Some(&route);
        self.routes.write().insert(topic.to_owned(), route.clone());
        if changed {
            debug!(topic, "route changed");
        }
        let producers: Vec<_> = self.producers.read().values().cloned().collect();
        for p in producers {
            p.route_updated(topic, &route);
        }
        let consumers: Vec<_> = self.consumers.read().values().cloned().collect();
        for c in consumers {
            c.route_updated(topic, &route);
        }
    }

    async fn refresh_all_routes(&self) {
        let mut topics: Vec<String> = self
            .producers
            .read()
            .values()
            .flat_map(|p| p.topics())
            .collect();
        topics.sort();
        topics.dedup();
        for topic in topics {
            if let Err(e) = self.update_route(&topic, self.config.request_timeout).await {
                debug!(topic, cause = %e, "route refresh failed");
            }
        }
    }

    /// The master address of `broker_name`, with the VIP port when configured.
    pub fn broker_master(&self, broker_name: &str) -> Option<Arc<str>> {
        self.masters.read().get(broker_name).cloned()
    }

    /// Rebuilds `masters` from `brokers`, which the caller holds locked for writing (so that
    /// two rebuilds cannot cross).
    fn refresh_masters(
        &self,
        brokers: &HashMap<String, BTreeMap<i64, String>, foldhash::fast::RandomState>,
    ) {
        let masters = brokers
            .iter()
            .filter_map(|(name, addrs)| {
                let addr = addrs.get(&MASTER_ID)?;
                let addr = if self.config.vip_channel {
                    vip_addr(addr)
                } else {
                    addr.clone()
                };
                Some((name.clone(), Arc::from(addr)))
            })
            .collect();
        *self.masters.write() = masters;
    }

    fn all_broker_addrs(&self) -> Vec<String> {
        let mut addrs: Vec<String> = self
            .brokers
            .read()
            .values()
            .flat_map(|a| a.values().cloned())
            .collect();
        addrs.sort();
        addrs.dedup();
        addrs
    }

    /// Drops brokers that no cached route mentions any more.
    pub fn clean_offline_brokers(&self) {
        let routes = self.routes.read();
        let mut brokers = self.brokers.write();
        brokers.retain(|name, addrs| {
            addrs.retain(|_, addr| {
                routes.values().any(|r| {
                    r.broker_datas
                        .iter()
                        .any(|b| b.broker_addrs.values().any(|a| a == addr))
                })
            });
            let keep = !addrs.is_empty();
            if !keep {
                debug!(broker = %name, "broker offline; removed");
            }
            keep
        });
        self.refresh_masters(&brokers);
        drop(brokers);
        let brokers = self.brokers.read();
        self.heartbeated
            .lock()
            .retain(|a| brokers.values().any(|addrs| addrs.values().any(|x| x == a)));
    }

    /// The heartbeat body: every producer group (plus the inner producer group Java announces)
    /// and every consumer.
    pub fn heartbeat_data(&self) -> HeartbeatData {
        let mut producer_data_set: Vec<ProducerData> = self
            .producers
            .read()
            .keys()
            .map(|g| ProducerData {
                group_name: g.clone(),
            })
            .collect();
        producer_data_set.push(ProducerData {
            group_name: CLIENT_INNER_PRODUCER.to_owned(),
        });
        HeartbeatData {
            client_id: self.client_id.clone(),
            producer_data_set,
            consumer_data_set: self
                .consumers
                .read()
                .values()
                .map(|c| c.consumer_data())
                .collect(),
        }
    }

    /// Heartbeats every master broker (every broker when consumers exist). Failures are logged.
    pub async fn heartbeat_all(&self) {
        let data = self.heartbeat_data();
        let all = !data.consumer_data_set.is_empty();
        let targets = self.broker_addrs(|id| all || id == MASTER_ID);
        self.heartbeat(targets, &data).await;
    }

    /// Heartbeats the master brokers this instance has not heartbeated yet, so that each knows
    /// this client by its id: a broker pushes request-reply replies to the connection a client
    /// heartbeated it on.
    pub async fn heartbeat_unseen_brokers(&self) {
        let mut targets = self.broker_addrs(|id| id == MASTER_ID);
        {
            let seen = self.heartbeated.lock();
            targets.retain(|a| !seen.contains(a));
        }
        if !targets.is_empty() {
            self.heartbeat(targets, &self.heartbeat_data()).await;
        }
    }

    /// The addresses of the known brokers whose id passes `keep`.
    fn broker_addrs(&self, keep: impl Fn(i64) -> bool) -> Vec<String> {
        self.brokers
            .read()
            .values()
            .flat_map(|addrs| {
                addrs
                    .iter()
                    .filter(|(id, _)| keep(**id))
                    .map(|(_, a)| a.clone())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    async fn heartbeat(&self, targets: Vec<String>, data: &HeartbeatData) {
        // All at once: a broker that stopped answering does not delay the others' heartbeats.
        let calls = targets.into_iter().map(|addr| async move {
            match self
                .api
                .heartbeat(&addr, data, self.config.request_timeout)
                .await
            {
                Ok(_) => {
                    debug!(broker = %addr, "heartbeat sent");
                    self.heartbeated.lock().insert(addr);
                }
                Err(e) => warn!(broker = %addr, cause = %e, "heartbeat failed"),
            }
        });
        futures_util::future::join_all(calls).await;
    }

    /// Heartbeats one broker now (used right after a route first names it).
    ///
    /// # Errors
    /// The API error.
    pub async fn heartbeat_broker(&self, addr: &str) -> Result<(), ClientApiError> {
        self.api
            .heartbeat(addr, &self.heartbeat_data(), self.config.request_timeout)
            .await
            .map(drop)
    }

    /// Whether `code` from a broker means the route may be stale.
    pub fn is_route_error(code: ResponseCode) -> bool {
        code == ResponseCode::TOPIC_NOT_EXIST
    }
}

impl Drop for ClientInstance {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

/// `host:port` with port − 2 (the broker's VIP channel).
fn vip_addr(addr: &str) -> String {
    match addr.rsplit_once(':') {
        Some((host, port)) => match port.parse::<u16>() {
            Ok(p) if p >= 2 => format!("{host}:{}", p - 2),
            _ => addr.to_owned(),
        },
        None => addr.to_owned(),
    }
}

/// Hands out [`ClientInstance`]s. Java: `MQClientManager`, which keeps one per client id and
/// gives every later caller that one, whatever it asked for. Here callers of one client id
/// share an instance only when it serves the same name servers and namespace; for other
/// name servers or another namespace they get an instance of their own (the same id on
/// other clusters, or for other groups, confuses no broker), and for other settings on the
/// same cluster a typed refusal ([`ConfigError::ClientIdInUse`]).
#[derive(Debug, Default)]
pub struct ClientManager {
    instances: Mutex<HashMap<String, Vec<Arc<ClientInstance>>>>,
}

static GLOBAL: LazyLock<ClientManager> = LazyLock::new(ClientManager::default);

impl ClientManager {
    /// The process-wide manager.
    pub fn global() -> &'static Self {
        &GLOBAL
    }

    /// The live instance for `config` (its client id, name servers and namespace), or a new
    /// one. Instances that were shut down are replaced.
    ///
    /// # Errors
    /// [`ConfigError`] when the configuration is invalid, or when a live instance of the same
    /// client id, name servers and namespace has other settings.
    pub fn get_or_create(&self, config: &ClientConfig) -> Result<Arc<ClientInstance>, ConfigError> {
        config.validate()?;
        let id = config.client_id();
        let mut map = self.instances.lock();
        let same_id = map.entry(id.clone()).or_default();
        same_id.retain(|i| i.state() != ServiceState::ShutdownAlready);
        let same_cluster = same_id.iter().find(|i| {
            let c = i.config();
            c.name_servers == config.name_servers && c.namespace == config.namespace
        });
        if let Some(existing) = same_cluster {
            let settings = existing.config().differences(config);
            if !settings.is_empty() {
                return Err(ConfigError::ClientIdInUse {
                    client_id: id,
                    settings,
                });
            }
            return Ok(Arc::clone(existing));
        }
        let instance = ClientInstance::new(config.clone())?;
        same_id.push(Arc::clone(&instance));
        Ok(instance)
    }

    /// A live instance of `client_id`, if any (the first made, when several serve other
    /// clusters).
    pub fn get(&self, client_id: &str) -> Option<Arc<ClientInstance>> {
        self.instances
            .lock()
            .get(client_id)
            .and_then(|v| v.first().cloned())
    }

    /// Forgets every instance of `client_id`.
    pub fn remove(&self, client_id: &str) {
        self.instances.lock().remove(client_id);
    }

    /// Forgets `instance`.
    fn forget(&self, instance: &ClientInstance) {
        let mut map = self.instances.lock();
        if let Some(same_id) = map.get_mut(&instance.client_id) {
            same_id.retain(|i| !std::ptr::eq(Arc::as_ptr(i), instance));
            if same_id.is_empty() {
                map.remove(&instance.client_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vip_port_is_two_below() {
        assert_eq!(vip_addr("127.0.0.1:10911"), "127.0.0.1:10909");
        assert_eq!(vip_addr("bad"), "bad");
    }

    #[tokio::test]
    async fn manager_shares_one_instance_per_client_id() {
        let m = ClientManager::default();
        let c = ClientConfig::new("127.0.0.1:9876").with_instance_name("shared-test");
        let a = m.get_or_create(&c).unwrap();
        let b = m.get_or_create(&c).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        let other = m
            .get_or_create(&c.clone().with_instance_name("other"))
            .unwrap();
        assert!(!Arc::ptr_eq(&a, &other));
        a.shutdown().await;
        let c2 = m.get_or_create(&c).unwrap();
        assert!(!Arc::ptr_eq(&a, &c2), "a shut-down instance is replaced");
    }

    /// Two callers of one client id with other name servers (or another namespace) each get
    /// an instance that serves what they asked for; other settings on the same cluster are
    /// refused by name, never swapped for the first caller's.
    #[tokio::test]
    async fn callers_get_their_own_settings_or_a_typed_refusal() {
        let m = ClientManager::default();
        let a_cfg = ClientConfig::new("127.0.0.1:9876").with_instance_name("mine");
        let b_cfg = ClientConfig::new("127.0.0.1:9877").with_instance_name("mine");
        let a = m.get_or_create(&a_cfg).unwrap();
        let b = m.get_or_create(&b_cfg).unwrap();
        assert!(!Arc::ptr_eq(&a, &b));
        assert_eq!(a.config().name_servers, ["127.0.0.1:9876"]);
        assert_eq!(b.config().name_servers, ["127.0.0.1:9877"]);
        assert!(Arc::ptr_eq(&a, &m.get_or_create(&a_cfg).unwrap()));
        let ns = m
            .get_or_create(&a_cfg.clone().with_namespace("tenant"))
            .unwrap();
        assert!(!Arc::ptr_eq(&a, &ns));
        assert_eq!(ns.config().namespace.as_deref(), Some("tenant"));
        let json_vs_binary = a_cfg
            .clone()
            .with_serialize_type(mq_remoting::SerializeType::RocketMq);
        match m.get_or_create(&json_vs_binary) {
            Err(ConfigError::ClientIdInUse { settings, .. }) => {
                assert_eq!(settings, ["serialize_type"]);
            }
            other => panic!("expected ClientIdInUse, got {other:?}"),
        }
        for i in [a, b, ns] {
            i.shutdown().await;
        }
    }

    #[tokio::test]
    async fn lifecycle_transitions() {
        let i = ClientInstance::new(ClientConfig::new("127.0.0.1:9876")).unwrap();
        assert_eq!(i.state(), ServiceState::Created);
        i.start().unwrap();
        assert_eq!(i.state(), ServiceState::Running);
        i.start().unwrap();
        i.shutdown().await;
        assert_eq!(i.state(), ServiceState::ShutdownAlready);
        assert!(matches!(
            i.start(),
            Err(InstanceError::State(ServiceState::ShutdownAlready))
        ));
    }

    #[tokio::test]
    async fn no_name_server_is_a_typed_error() {
        let i = ClientInstance::new(ClientConfig::default()).unwrap();
        assert!(matches!(
            i.update_route("T", Duration::from_secs(3)).await,
            Err(InstanceError::NoNameServer)
        ));
    }
}
