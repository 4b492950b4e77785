//! The engine both consumers share: subscriptions, rebalance, one fetch task per assigned
//! queue (long polling, flow control), process queues that track what is in flight, offset
//! commits, and the client-instance membership.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use mq_client_api::body::{
    ConsumeFromWhere, ConsumeType, ConsumerData, MessageModel, SubscriptionData, TopicRouteData,
    perm,
};
use mq_client_api::header::{
    ConsumerSendMsgBackRequestHeader, PullMessageRequestHeader, pull_sys_flag,
};
use mq_client_api::message::property;
use mq_client_api::{MessageExt, MessageQueue, PullStatus};
use mq_client_instance::{
    ClientInstance, ClientManager, ConsumerMember, ServiceState, StateMachine,
};
use parking_lot::{Mutex, RwLock};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, warn};

use crate::config::{ConsumeFrom, ConsumerConfig, subscription};
use crate::error::ConsumerError;
use crate::offset::{LocalOffsetStore, OffsetStore, RemoteOffsetStore};

/// Messages handed from a fetch task to the consumer.
#[derive(Debug)]
pub(crate) struct Delivery {
    pub(crate) mq: MessageQueue,
    pub(crate) pq: Arc<ProcessQueue>,
    pub(crate) msgs: Vec<MessageExt>,
}

/// What is pulled but not yet acknowledged for one queue. Java: `ProcessQueue`.
#[derive(Debug)]
pub(crate) struct ProcessQueue {
    /// The offsets in flight, each with its message's body size: all the queue needs of a
    /// message (the listener has the message itself), so none is copied to be held here.
    msgs: Mutex<BTreeMap<i64, usize>>,
    bytes: AtomicUsize,
    /// One past the highest offset pulled.
    pulled_end: AtomicI64,
    space: Notify,
    pub(crate) dropped: CancellationToken,
}

impl ProcessQueue {
    fn new(start: i64, parent: &CancellationToken) -> Self {
        Self {
            msgs: Mutex::new(BTreeMap::new()),
            bytes: AtomicUsize::new(0),
            pulled_end: AtomicI64::new(start),
            space: Notify::new(),
            dropped: parent.child_token(),
        }
    }

    fn put(&self, msgs: &[MessageExt]) {
        let mut held = self.msgs.lock();
        for m in msgs {
            let size = m.message.body.len();
            // An offset pulled again (after an offset reset) is counted once.
            let before = held.insert(m.queue_offset, size).unwrap_or(0);
            self.bytes.fetch_add(size, Ordering::Relaxed);
            self.bytes.fetch_sub(before, Ordering::Relaxed);
            self.pulled_end
                .fetch_max(m.queue_offset + 1, Ordering::Relaxed);
        }
    }

    /// Acknowledges messages; returns the offset to commit (the lowest still in flight, or
    /// everything pulled so far). `record` runs under the queue's lock, so concurrent
    /// acknowledgements record their offsets in order and the committed offset never goes back.
    pub(crate) fn remove_and_record(&self, offsets: &[i64], record: impl FnOnce(i64)) -> i64 {
        let next = {
            let mut held = self.msgs.lock();
            for o in offsets {
                if let Some(size) = held.remove(o) {
                    self.bytes.fetch_sub(size, Ordering::Relaxed);
                }
            }
            let next = held
                .keys()
                .next()
                .copied()
                .unwrap_or_else(|| self.pulled_end.load(Ordering::Relaxed));
            record(next);
            next
        };
        self.space.notify_waiters();
        next
    }

    fn over_limit(&self, max_messages: usize, max_bytes: usize) -> bool {
        self.msgs.lock().len() >= max_messages || self.bytes.load(Ordering::Relaxed) >= max_bytes
    }

    /// Messages held.
    pub(crate) fn len(&self) -> usize {
        self.msgs.lock().len()
    }
}

/// The consumer engine.
pub(crate) struct Core {
    pub(crate) config: ConsumerConfig,
    pub(crate) consume_type: ConsumeType,
    /// Whether the engine moves committed offsets itself (push consumers, and pull consumers
    /// with auto-commit); otherwise only an explicit commit does.
    manage_offsets: bool,
    pub(crate) state: StateMachine,
    pub(crate) instance: RwLock<Option<Arc<ClientInstance>>>,
    pub(crate) group: RwLock<String>,
    subscriptions: RwLock<HashMap<String, SubscriptionData>>,
    /// Explicitly assigned queues (pull consumer `assign`), bypassing rebalance.
    assigned_by_user: RwLock<Option<Vec<MessageQueue>>>,
    pub(crate) queues: Mutex<HashMap<MessageQueue, Arc<ProcessQueue>>>,
    pub(crate) offsets: RwLock<Option<Arc<OffsetStore>>>,
    sink: mpsc::Sender<Delivery>,
    rebalance_now: Notify,
    /// Set when the last rebalance could not place every subscribed topic (e.g. a retry topic
    /// not yet routed); the engine then tries again every second instead of every 20 s.
    incomplete: std::sync::atomic::AtomicBool,
    /// Orderly consumption: queues are locked on the broker before they are fetched.
    pub(crate) orderly: std::sync::atomic::AtomicBool,
    pub(crate) token: CancellationToken,
    pub(crate) tasks: TaskTracker,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerCore")
            .field("group", &self.config.group)
            .field("state", &self.state.get())
            .finish_non_exhaustive()
    }
}

struct Member(Weak<Core>, String);

impl ConsumerMember for Member {
    fn group(&self) -> String {
        self.1.clone()
    }

    fn consumer_data(&self) -> ConsumerData {
        match self.0.upgrade() {
            Some(core) => core.consumer_data(),
            None => ConsumerData {
                group_name: self.1.clone(),
                consume_type: ConsumeType::Passively,
                message_model: MessageModel::Clustering,
                consume_from_where: ConsumeFromWhere::LastOffset,
                subscription_data_set: Vec::new(),
                unit_mode: false,
            },
        }
    }

    fn route_updated(&self, _topic: &str, _route: &TopicRouteData) {}

    fn ids_changed(&self) {
        if let Some(core) = self.0.upgrade() {
            core.rebalance_now.notify_one();
        }
    }
}

/// The engine as a consumer facade holds it: dropping the facade of a running consumer
/// stops the engine at once (see [`Core::abandon`]).
#[derive(Debug)]
pub(crate) struct Handle(pub(crate) Arc<Core>);

impl std::ops::Deref for Handle {
    type Target = Arc<Core>;

    fn deref(&self) -> &Arc<Core> {
        &self.0
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.0.abandon();
    }
}

impl Core {
    pub(crate) fn new(
        config: ConsumerConfig,
        consume_type: ConsumeType,
    ) -> (Arc<Self>, mpsc::Receiver<Delivery>) {
        let (sink, rx) = mpsc::channel(1024);
        let manage_offsets = consume_type == ConsumeType::Passively || config.auto_commit;
        let core = Arc::new(Self {
            config,
            consume_type,
            manage_offsets,
            state: StateMachine::default(),
            instance: RwLock::new(None),
            group: RwLock::new(String::new()),
            subscriptions: RwLock::new(HashMap::new()),
            assigned_by_user: RwLock::new(None),
            queues: Mutex::new(HashMap::new()),
            offsets: RwLock::new(None),
            sink,
            rebalance_now: Notify::new(),
            incomplete: std::sync::atomic::AtomicBool::new(false),
            orderly: std::sync::atomic::AtomicBool::new(false),
            token: CancellationToken::new(),
            tasks: TaskTracker::new(),
        });
        (core, rx)
    }

    pub(crate) fn subscribe(&self, topic: &str, expression: &str) -> Result<(), ConsumerError> {
        if self.state.get() != ServiceState::Created {
            return Err(ConsumerError::State(self.state.get()));
        }
        if topic.trim().is_empty() {
            return Err(ConsumerError::Subscription(topic.to_owned()));
        }
        let wrapped = self.config.client.wrap(topic);
        self.subscriptions
            .write()
            .insert(wrapped.clone(), subscription(&wrapped, expression));
        Ok(())
    }

    pub(crate) fn assign(&self, queues: Vec<MessageQueue>) {
        let wrapped = queues
            .into_iter()
            .map(|q| {
                MessageQueue::new(self.config.client.wrap(&q.topic), q.broker_name, q.queue_id)
            })
            .collect();
        *self.assigned_by_user.write() = Some(wrapped);
        self.rebalance_now.notify_one();
    }

    fn consumer_data(&self) -> ConsumerData {
        ConsumerData {
            group_name: self.group.read().clone(),
            consume_type: self.consume_type,
            message_model: self.config.message_model,
            consume_from_where: match self.config.consume_from {
                ConsumeFrom::LastOffset => ConsumeFromWhere::LastOffset,
                ConsumeFrom::FirstOffset => ConsumeFromWhere::FirstOffset,
                ConsumeFrom::Timestamp(_) => ConsumeFromWhere::Timestamp,
            },
            subscription_data_set: self.subscriptions.read().values().cloned().collect(),
            unit_mode: false,
        }
    }

    pub(crate) fn instance(&self) -> Result<Arc<ClientInstance>, ConsumerError> {
        self.instance
            .read()
            .clone()
            .ok_or_else(|| ConsumerError::State(self.state.get()))
    }

    fn offsets(&self) -> Option<Arc<OffsetStore>> {
        self.offsets.read().clone()
    }

    /// The store, when the engine itself may move committed offsets.
    fn managed_offsets(&self) -> Option<Arc<OffsetStore>> {
        if self.manage_offsets {
            self.offsets()
        } else {
            None
        }
    }

    /// Joins the client instance and starts rebalancing and offset persistence.
    pub(crate) async fn start(self: &Arc<Self>) -> Result<(), ConsumerError> {
        self.state
            .transition(ServiceState::Created, ServiceState::StartFailed)
            .map_err(|s| ConsumerError::State(s.found))?;
        self.config.validate()?;
        let instance = ClientManager::global().get_or_create(&self.config.client)?;
        let group = instance.config().wrap(&self.config.group);
        *self.group.write() = group.clone();
        if self.config.message_model == MessageModel::Clustering
            && self.consume_type == ConsumeType::Passively
        {
            // Failed messages come back through the group's retry topic.
            let retry = mq_client_api::names::retry_topic(&group);
            self.subscriptions
                .write()
                .insert(retry.clone(), subscription(&retry, "*"));
        }
        let store = match self.config.message_model {
            MessageModel::Clustering => {
                OffsetStore::Remote(RemoteOffsetStore::new(Arc::clone(&instance), group.clone()))
            }
            MessageModel::Broadcasting => {
                let dir = self.config.offset_dir.clone().unwrap_or_else(|| {
                    std::env::temp_dir()
                        .join("mq-offsets")
                        .join(instance.client_id().replace([':', '@'], "_"))
                        .join(&group)
                });
                OffsetStore::Local(LocalOffsetStore::open(dir)?)
            }
        };
        *self.offsets.write() = Some(Arc::new(store));
        instance.register_consumer(Arc::new(Member(Arc::downgrade(self), group.clone())))?;
        instance.start()?;
        *self.instance.write() = Some(Arc::clone(&instance));
        self.state
            .transition(ServiceState::StartFailed, ServiceState::Running)
            .map_err(|s| ConsumerError::State(s.found))?;
        // Learn the brokers, say hello, then take our share, all within one request timeout: a
        // name server or broker that does not answer delays the start by no more than that
        // (the background rebalance takes over what did not finish).
        let deadline = Instant::now() + instance.config().request_timeout;
        let topics: Vec<String> = self.subscriptions.read().keys().cloned().collect();
        let lookups = topics
            .iter()
            .map(|topic| instance.update_route(topic, left(deadline)));
        let _ = tokio::time::timeout_at(deadline, async {
            futures_util::future::join_all(lookups).await;
            instance.heartbeat_all().await;
            self.rebalance(left(deadline)).await;
        })
        .await;
        self.spawn_background();
        info!(group = %group, client_id = %instance.client_id(), "consumer started");
        Ok(())
    }

    fn spawn_background(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let token = self.token.clone();
        let (rebalance_every, persist_every) =
            (self.config.rebalance_interval, self.config.persist_interval);
        self.tasks.spawn(
            async move {
                // First ticks one period from now (start rebalanced already); a cancellation
                // is seen at once, with no timer to wait for first.
                let start = Instant::now();
                let every = |period| tokio::time::interval_at(start + period, period);
                let mut rebalance = every(rebalance_every);
                let mut persist = every(persist_every);
                let mut retry = every(Duration::from_secs(1));
                loop {
                    let Some(core) = weak.upgrade() else { break };
                    let rebalance_now = core.rebalance_now.notified();
                    let persist_now = tokio::select! {
                        () = token.cancelled() => break,
                        _ = rebalance.tick() => false,
                        () = rebalance_now => false,
                        _ = persist.tick() => true,
                        _ = retry.tick() => {
                            if !core.incomplete.load(Ordering::Relaxed) {
                                continue;
                            }
                            false
                        }
                    };
                    let timeout = core.config.client.request_timeout;
                    // Shutdown does not wait for a peer that stopped answering (it persists the
                    // offsets itself).
                    tokio::select! {
                        () = token.cancelled() => break,
                        () = async {
                            if persist_now {
                                core.persist_offsets().await;
                            } else {
                                core.rebalance(timeout).await;
                            }
                        } => {}
                    }
                }
            }
            .instrument(tracing::debug_span!("consumer_background")),
        );
    }

    /// What dropping a running consumer without a shutdown does: its tasks are cancelled
    /// (listeners running now finish; messages not yet consumed come again, since their
    /// offsets are not committed), offsets kept locally are written, and the group leaves its
    /// instance at once. Offsets kept on the brokers are not sent: those committed since the
    /// last persist interval are consumed again.
    pub(crate) fn abandon(&self) {
        if self
            .state
            .transition(ServiceState::Running, ServiceState::ShutdownAlready)
            .is_err()
        {
            return;
        }
        warn!(group = %self.config.group, "consumer dropped without shutdown; stopping now");
        self.token.cancel();
        self.tasks.close();
        if let Some(store) = self.offsets()
            && let OffsetStore::Local(local) = store.as_ref()
            && let Err(e) = local.persist()
        {
            warn!(cause = %e, "persisting local offsets failed");
        }
        let instance = self.instance.write().take();
        if let Some(instance) = instance {
            instance.release_consumer(&self.group.read());
        }
    }

    pub(crate) async fn persist_offsets(&self) {
        if let Some(store) = self.offsets() {
            let mqs: Vec<MessageQueue> = self.queues.lock().keys().cloned().collect();
            store.persist(&mqs).await;
        }
    }

    /// Recomputes this member's queues for every subscription and starts or stops fetchers.
    /// Takes this consumer's share of the queues; each route lookup gets `timeout`.
    pub(crate) async fn rebalance(self: &Arc<Self>, timeout: Duration) {
        let Ok(instance) = self.instance() else {
            return;
        };
        let user = self.assigned_by_user.read().clone();
        let wanted: Vec<MessageQueue> = match user {
            Some(queues) => queues,
            None => {
                let topics: Vec<String> = self.subscriptions.read().keys().cloned().collect();
                let mut all = Vec::new();
                let mut incomplete = false;
                for topic in topics {
                    match self.share_of(&instance, &topic, timeout).await {
                        Ok(q) => all.extend(q),
                        Err(e) => {
                            incomplete = true;
                            debug!(topic, cause = %e, "rebalance skipped a topic");
                        }
                    }
                }
                self.incomplete.store(incomplete, Ordering::Relaxed);
                if incomplete {
                    // Keep what a skipped topic had rather than releasing it.
                    let kept: Vec<MessageQueue> = self
                        .queues
                        .lock()
                        .keys()
                        .filter(|q| !all.iter().any(|a| a.topic == q.topic))
                        .filter(|q| self.subscriptions.read().contains_key(&q.topic))
                        .cloned()
                        .collect();
                    all.extend(kept);
                }
                all
            }
        };
        let locking = self.orderly.load(Ordering::Relaxed)
            && self.config.message_model == MessageModel::Clustering;
        let wanted = if locking {
            // One consumer per queue at a time: take (or renew) the broker locks first, and
            // consume only what is locked.
            let locked = self.lock_queues(&instance, &wanted, true).await;
            if locked.len() < wanted.len() {
                self.incomplete.store(true, Ordering::Relaxed);
            }
            locked
        } else {
            wanted
        };
        let current: Vec<MessageQueue> = self.queues.lock().keys().cloned().collect();
        let released: Vec<MessageQueue> = current
            .iter()
            .filter(|q| !wanted.contains(q))
            .cloned()
            .collect();
        if locking && !released.is_empty() {
            self.lock_queues(&instance, &released, false).await;
        }
        for mq in current.iter().filter(|q| !wanted.contains(q)) {
            let pq = self.queues.lock().remove(mq);
            if let Some(pq) = pq {
                pq.dropped.cancel();
                if let Some(store) = self.offsets() {
                    store.remove(mq).await;
                }
                info!(queue = %mq, "queue released by rebalance");
            }
        }
        for mq in wanted.into_iter().filter(|q| !current.contains(q)) {
            match self.start_offset(&instance, &mq).await {
                Ok(offset) => self.start_fetch(mq, offset),
                Err(e) => warn!(queue = %mq, cause = %e, "cannot compute the start offset"),
            }
        }
    }

    /// Locks (or unlocks) `mqs` on their brokers; returns the queues now held.
    async fn lock_queues(
        &self,
        instance: &ClientInstance,
        mqs: &[MessageQueue],
        lock: bool,
    ) -> Vec<MessageQueue> {
        let mut by_broker: HashMap<String, Vec<MessageQueue>> = HashMap::new();
        for mq in mqs {
            by_broker
                .entry(mq.broker_name.clone())
                .or_default()
                .push(mq.clone());
        }
        let mut held = Vec::new();
        for (broker, queues) in by_broker {
            let Some(addr) = instance.broker_master(&broker) else {
                continue;
            };
            let body = mq_client_api::body::LockBatchRequestBody {
                consumer_group: self.group.read().clone(),
                client_id: instance.client_id().to_owned(),
                mq_set: queues,
            };
            let timeout = instance.config().request_timeout;
            if lock {
                match instance.api().lock_batch_mq(&addr, &body, timeout).await {
                    Ok(locked) => held.extend(locked),
                    Err(e) => debug!(broker, cause = %e, "locking queues failed"),
                }
            } else if let Err(e) = instance.api().unlock_batch_mq(&addr, &body, timeout).await {
                debug!(broker, cause = %e, "unlocking queues failed");
            }
        }
        held
    }

    async fn share_of(
        &self,
        instance: &ClientInstance,
        topic: &str,
        timeout: Duration,
    ) -> Result<Vec<MessageQueue>, ConsumerError> {
        let route = instance.update_route(topic, timeout).await?;
        let mut mqs = Vec::new();
        for q in &route.queue_datas {
            if perm::is_readable(q.perm) {
                mqs.extend(
                    (0..q.read_queue_nums).map(|i| MessageQueue::new(topic, &q.broker_name, i)),
                );
            }
        }
        if self.config.message_model == MessageModel::Broadcasting {
            return Ok(mqs);
        }
        let Some(addr) = route
            .broker_datas
            .iter()
            .find_map(|b| b.master_addr().map(str::to_owned))
        else {
            return Ok(Vec::new());
        };
        let group = self.group.read().clone();
        let cids = instance
            .api()
            .consumer_list_by_group(&addr, &group, instance.config().request_timeout)
            .await?;
        Ok(self
            .config
            .allocate
            .allocate(instance.client_id(), &mqs, &cids))
    }

    async fn start_offset(
        &self,
        instance: &ClientInstance,
        mq: &MessageQueue,
    ) -> Result<i64, ConsumerError> {
        if let Some(store) = self.offsets()
            && let Some(o) = store.read(mq).await?
            && o >= 0
        {
            return Ok(o);
        }
        let addr = instance
            .broker_master(&mq.broker_name)
            .ok_or_else(|| ConsumerError::BrokerNotFound(mq.broker_name.clone()))?;
        let timeout = instance.config().request_timeout;
        Ok(match self.config.consume_from {
            _ if mq_client_api::names::is_retry_topic(&mq.topic) => 0,
            ConsumeFrom::FirstOffset => 0,
            ConsumeFrom::LastOffset => instance.api().max_offset(&addr, mq, timeout).await?,
            ConsumeFrom::Timestamp(t) => {
                instance.api().search_offset(&addr, mq, t, timeout).await?
            }
        })
    }

    pub(crate) fn start_fetch(self: &Arc<Self>, mq: MessageQueue, offset: i64) {
        let pq = Arc::new(ProcessQueue::new(offset, &self.token));
        if let Some(old) = self.queues.lock().insert(mq.clone(), Arc::clone(&pq)) {
            old.dropped.cancel();
        }
        if let Some(store) = self.managed_offsets() {
            store.update(&mq, offset);
        }
        debug!(queue = %mq, offset, "fetching");
        let core = Arc::clone(self);
        let span = tracing::debug_span!("fetch", queue = %mq);
        self.tasks
            .spawn(async move { core.fetch_loop(mq, pq, offset).await }.instrument(span));
    }

    async fn fetch_loop(self: Arc<Self>, mq: MessageQueue, pq: Arc<ProcessQueue>, mut offset: i64) {
        let Ok(instance) = self.instance() else {
            return;
        };
        let backoff = Duration::from_millis(200);
        loop {
            // Flow control: wait until the listener has made room.
            while pq.over_limit(self.config.queue_max_messages, self.config.queue_max_bytes) {
                let space = pq.space.notified();
                tokio::select! {
                    () = pq.dropped.cancelled() => return,
                    () = space => {}
                }
            }
            if pq.dropped.is_cancelled() {
                return;
            }
            let Some(addr) = instance.broker_master(&mq.broker_name) else {
                let _ = instance
                    .update_route(&mq.topic, instance.config().request_timeout)
                    .await;
                tokio::select! {
                    () = pq.dropped.cancelled() => return,
                    () = tokio::time::sleep(backoff) => continue,
                }
            };
            let sub = self.subscriptions.read().get(&mq.topic).cloned();
            let header = PullMessageRequestHeader {
                consumer_group: self.group.read().clone(),
                topic: mq.topic.clone(),
                queue_id: mq.queue_id,
                queue_offset: offset,
                max_msg_nums: self.config.pull_batch_size,
                sys_flag: pull_sys_flag::SUSPEND | pull_sys_flag::SUBSCRIPTION,
                commit_offset: 0,
                suspend_timeout_millis: i64::try_from(self.config.suspend_timeout.as_millis())
                    .unwrap_or(15_000),
                subscription: Some(
                    sub.as_ref()
                        .map_or_else(|| "*".to_owned(), |s| s.sub_string.clone()),
                ),
                sub_version: sub.as_ref().map_or(0, |s| s.sub_version),
                expression_type: Some("TAG".into()),
                max_msg_bytes: None,
            };
            let timeout = self.config.suspend_timeout + Duration::from_secs(15);
            let result = tokio::select! {
                () = pq.dropped.cancelled() => return,
                r = instance.api().pull(&addr, &header, timeout) => r,
            };
            match result {
                Ok(r) => {
                    let next = r.next_begin_offset;
                    match r.status {
                        PullStatus::Found => {
                            let tags = sub.map(|s| s.tags_set).unwrap_or_default();
                            let msgs: Vec<MessageExt> = r
                                .messages
                                .into_iter()
                                .filter(|m| {
                                    tags.is_empty()
                                        || m.message
                                            .tags()
                                            .is_some_and(|t| tags.iter().any(|x| x == t))
                                })
                                .collect();
                            // Advance even when the tag filter removed everything.
                            pq.pulled_end.fetch_max(next, Ordering::Relaxed);
                            if !msgs.is_empty() {
                                pq.put(&msgs);
                                let delivery = Delivery {
                                    mq: mq.clone(),
                                    pq: Arc::clone(&pq),
                                    msgs,
                                };
                                tokio::select! {
                                    () = pq.dropped.cancelled() => return,
                                    sent = self.sink.send(delivery) => if sent.is_err() { return },
                                }
                            } else if pq.len() == 0
                                && let Some(store) = self.managed_offsets()
                            {
                                store.update(&mq, next);
                            }
                        }
                        PullStatus::OffsetIllegal => {
                            warn!(queue = %mq, offset, next, "offset illegal; moving on");
                            pq.pulled_end.store(next, Ordering::Relaxed);
                            if let Some(store) = self.managed_offsets() {
                                store.update(&mq, next);
                            }
                        }
                        _ => {}
                    }
                    offset = next;
                }
                Err(e) => {
                    debug!(queue = %mq, cause = %e, "pull failed; backing off");
                    tokio::select! {
                        () = pq.dropped.cancelled() => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                }
            }
        }
    }

    /// Acknowledges `msgs` of `mq` and records the offset to resume from.
    pub(crate) fn ack(&self, mq: &MessageQueue, pq: &ProcessQueue, msgs: &[MessageExt]) {
        let offsets: Vec<i64> = msgs.iter().map(|m| m.queue_offset).collect();
        self.ack_offsets(mq, pq, &offsets);
    }

    /// Hands `m` back to the broker for a delayed retry (through the group's retry topic,
    /// and to the DLQ after max reconsume times). `raw_topic` is the topic it was pulled from.
    ///
    /// # Errors
    /// [`ConsumerError::BrokerNotFound`] or the broker's answer.
    pub(crate) async fn send_back(
        &self,
        mq: &MessageQueue,
        m: &MessageExt,
        raw_topic: &str,
        delay_level: i32,
    ) -> Result<(), ConsumerError> {
        let instance = self.instance()?;
        let addr = instance
            .broker_master(&mq.broker_name)
            .ok_or_else(|| ConsumerError::BrokerNotFound(mq.broker_name.clone()))?;
        let header = ConsumerSendMsgBackRequestHeader {
            offset: m.commit_log_offset,
            group: self.group.read().clone(),
            delay_level,
            origin_msg_id: Some(m.msg_id()),
            origin_topic: Some(raw_topic.to_owned()),
            unit_mode: false,
            max_reconsume_times: Some(self.config.max_reconsume_times),
        };
        instance
            .api()
            .consumer_send_back(&addr, &header, instance.config().request_timeout)
            .await?;
        Ok(())
    }

    /// Acknowledges the messages at `offsets` of `mq` and records the offset to resume from.
    pub(crate) fn ack_offsets(&self, mq: &MessageQueue, pq: &ProcessQueue, offsets: &[i64]) {
        // A queue released by rebalance belongs to another member now; but at shutdown (every
        // queue dropped at once) the last acknowledgements must still count.
        let released = pq.dropped.is_cancelled() && !self.token.is_cancelled();
        let store = if released {
            None
        } else {
            self.managed_offsets()
        };
        pq.remove_and_record(offsets, |next| {
            if let Some(store) = store {
                store.update(mq, next);
            }
        });
    }

    /// Stops fetching, persists offsets, leaves the instance, all within one request timeout
    /// (offsets a broker did not take by then are lost to it; the consumer that takes the
    /// queue next starts from the last offset the broker has).
    pub(crate) async fn shutdown(&self) {
        if self
            .state
            .transition(ServiceState::Running, ServiceState::ShutdownAlready)
            .is_err()
        {
            self.state.force(ServiceState::ShutdownAlready);
            return;
        }
        self.token.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        let deadline = Instant::now() + self.config.client.request_timeout;
        let _ = tokio::time::timeout_at(deadline, async {
            self.persist_offsets().await;
            if self.orderly.load(Ordering::Relaxed)
                && let Ok(instance) = self.instance()
            {
                let held: Vec<MessageQueue> = self.queues.lock().keys().cloned().collect();
                self.lock_queues(&instance, &held, false).await;
            }
        })
        .await;
        let instance = self.instance.write().take();
        if let Some(instance) = instance {
            let group = self.group.read().clone();
            instance.unregister_consumer(&group, left(deadline)).await;
        }
        info!(group = %self.config.group, "consumer shut down");
    }
}

/// A message from a retry topic looks like its original again (Java
/// `resetRetryAndNamespace`).
pub(crate) fn restore_retry_topic(group: &str, msg: &mut MessageExt) {
    let retry = mq_client_api::names::retry_topic(group);
    if let Some(original) = msg
        .message
        .property(property::RETRY_TOPIC)
        .map(str::to_owned)
        && msg.message.topic == retry
    {
        msg.message.topic = original;
    }
}

/// The time left until `deadline` (zero once it has passed).
fn left(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(offset: i64, body: &str) -> MessageExt {
        let mut m = MessageExt {
            queue_offset: offset,
            ..MessageExt::default()
        };
        m.message.body = bytes::Bytes::copy_from_slice(body.as_bytes());
        m
    }

    /// The queue counts each offset in flight once, with its body's size, so that pulling an
    /// offset again (after an offset reset) does not hold up its fetching for good.
    #[test]
    fn a_process_queue_counts_each_offset_once() {
        let pq = ProcessQueue::new(0, &CancellationToken::new());
        pq.put(&[message(0, "aaaa"), message(1, "bb")]);
        pq.put(&[message(1, "bb"), message(2, "c")]);
        assert_eq!(pq.len(), 3);
        assert_eq!(pq.bytes.load(Ordering::Relaxed), 7);
        assert!(!pq.over_limit(4, 8) && pq.over_limit(3, 8) && pq.over_limit(4, 7));
        let mut recorded = None;
        let next = pq.remove_and_record(&[0, 1], |n| recorded = Some(n));
        assert_eq!(
            (next, recorded),
            (2, Some(2)),
            "the lowest offset still in flight"
        );
        assert_eq!(pq.bytes.load(Ordering::Relaxed), 1);
        pq.remove_and_record(&[2], |_| {});
        assert_eq!(pq.bytes.load(Ordering::Relaxed), 0);
        assert_eq!(
            pq.remove_and_record(&[], |_| {}),
            3,
            "everything pulled so far"
        );
    }
}
