//! [`PushConsumer`]: messages are fetched for the assigned queues and handed to a listener on a
//! bounded pool of workers; failures go back to the broker for a delayed retry (and to the
//! DLQ after max reconsume times). Java: `DefaultMQPushConsumer` (concurrent listener).

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;

use mq_client_api::body::{ConsumeType, MessageModel};
use mq_client_api::header::ConsumerSendMsgBackRequestHeader;
use mq_client_api::{MessageExt, MessageQueue};
use mq_client_instance::ServiceState;
use parking_lot::Mutex;
use tokio::sync::{Semaphore, mpsc};
use tracing::{Instrument, debug, warn};

use crate::config::ConsumerConfig;
use crate::core::{Core, Delivery, Handle, restore_retry_topic};
use crate::error::ConsumerError;
use crate::pool::{Call, CallPool};

/// What the listener did with a batch.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
#[non_exhaustive]
pub enum ConsumeStatus {
    /// Consumed; the offset may move past these messages.
    Success,
    /// Failed; deliver again later (through the retry topic).
    ReconsumeLater,
}

/// Per-call context a listener may adjust.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ConsumeContext {
    /// The queue the messages came from.
    pub queue: MessageQueue,
    /// Delay level of the retry when the listener answers `ReconsumeLater`; 0 lets the broker
    /// choose (3 + reconsume times).
    pub delay_level: i32,
}

/// Consumes messages with blocking code: each call runs on tokio's blocking pool
/// (`spawn_blocking`), so it may block, on any runtime flavour. A listener that panics counts as
/// [`ConsumeStatus::ReconsumeLater`], as an exception does in Java.
pub trait MessageListener: Send + Sync + 'static {
    /// Consumes a batch (of `consume_batch_size` messages at most).
    fn consume(&self, msgs: &[MessageExt], ctx: &mut ConsumeContext) -> ConsumeStatus;
}

impl<F> MessageListener for F
where
    F: Fn(&[MessageExt], &mut ConsumeContext) -> ConsumeStatus + Send + Sync + 'static,
{
    fn consume(&self, msgs: &[MessageExt], ctx: &mut ConsumeContext) -> ConsumeStatus {
        self(msgs, ctx)
    }
}

/// Consumes messages with async code, on the runtime's own workers: it must not block (use
/// [`MessageListener`] for blocking code). A panic counts as [`ConsumeStatus::ReconsumeLater`].
///
/// For the simple case a closure taking the messages by value will do: see
/// [`async_listener`].
pub trait AsyncMessageListener: Send + Sync + 'static {
    /// Consumes a batch (of `consume_batch_size` messages at most).
    fn consume<'a>(
        &'a self,
        msgs: &'a [MessageExt],
        ctx: &'a mut ConsumeContext,
    ) -> BoxFuture<'a, ConsumeStatus>;
}

/// An [`AsyncMessageListener`] made from a closure that takes each batch by value.
///
/// ```
/// use mq_consumer::{ConsumeStatus, async_listener};
///
/// let listener = async_listener(|msgs, _queue| async move {
///     for m in &msgs {
///         println!("{}", String::from_utf8_lossy(&m.message.body));
///     }
///     ConsumeStatus::Success
/// });
/// # let _ = listener;
/// ```
pub fn async_listener<F, Fut>(f: F) -> Arc<dyn AsyncMessageListener>
where
    F: Fn(Vec<MessageExt>, MessageQueue) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ConsumeStatus> + Send + 'static,
{
    struct ByValue<F>(F);
    impl<F, Fut> AsyncMessageListener for ByValue<F>
    where
        F: Fn(Vec<MessageExt>, MessageQueue) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ConsumeStatus> + Send + 'static,
    {
        fn consume<'a>(
            &'a self,
            msgs: &'a [MessageExt],
            ctx: &'a mut ConsumeContext,
        ) -> BoxFuture<'a, ConsumeStatus> {
            Box::pin((self.0)(msgs.to_vec(), ctx.queue.clone()))
        }
    }
    Arc::new(ByValue(f))
}

/// The listener a consumer was started with.
#[derive(Clone)]
pub(crate) enum Listener {
    Blocking(Arc<dyn MessageListener>),
    Async(Arc<dyn AsyncMessageListener>),
}

impl Listener {
    /// Runs the listener on `msgs`; its context comes back with the status (the listener may
    /// have set a delay level).
    async fn call(
        &self,
        msgs: &[MessageExt],
        mut ctx: ConsumeContext,
    ) -> (ConsumeStatus, ConsumeContext) {
        let queue = ctx.queue.clone();
        let outcome = match self {
            Self::Blocking(l) => {
                // A call of its own on the blocking pool: only batches consumed again after a
                // failed send-back come here (the others run on the consumer's `CallPool`).
                let l = Arc::clone(l);
                on_blocking_pool(msgs.to_vec(), ctx, move |msgs, ctx| l.consume(msgs, ctx)).await
            }
            Self::Async(l) => {
                let run = async { l.consume(msgs, &mut ctx).await };
                match AssertUnwindSafe(run).catch_unwind().await {
                    Ok(status) => Ok((status, ctx)),
                    Err(_) => Err("the listener panicked".to_owned()),
                }
            }
        };
        outcome.unwrap_or_else(|cause| {
            warn!(queue = %queue, %cause, "listener failed; reconsuming later");
            (
                ConsumeStatus::ReconsumeLater,
                ConsumeContext {
                    queue,
                    delay_level: 0,
                },
            )
        })
    }
}

/// Runs blocking listener code on tokio's blocking pool (allowed on any runtime flavour);
/// its context comes back with its answer. `Err` says why it did not answer (it panicked).
async fn on_blocking_pool<C: Send + 'static, S: Send + 'static>(
    msgs: Vec<MessageExt>,
    mut ctx: C,
    consume: impl FnOnce(&[MessageExt], &mut C) -> S + Send + 'static,
) -> Result<(S, C), String> {
    tokio::task::spawn_blocking(move || {
        let status = consume(&msgs, &mut ctx);
        (status, ctx)
    })
    .await
    .map_err(|e| e.to_string())
}

/// What an orderly listener did with a batch.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
#[non_exhaustive]
pub enum ConsumeOrderlyStatus {
    /// Consumed.
    Success,
    /// Not now: pause this queue for `ConsumeOrderlyContext::suspend` and try the same
    /// messages again (later messages of the queue wait).
    SuspendCurrentQueueAMoment,
}

/// Per-call context of an orderly listener.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ConsumeOrderlyContext {
    /// The queue the messages came from.
    pub queue: MessageQueue,
    /// How long to pause the queue after a suspend. Default 1 s.
    pub suspend: Duration,
}

/// Consumes the messages of each queue strictly in order, one call at a time per queue.
pub trait MessageListenerOrderly: Send + Sync + 'static {
    /// Consumes a batch.
    fn consume(&self, msgs: &[MessageExt], ctx: &mut ConsumeOrderlyContext)
    -> ConsumeOrderlyStatus;
}

impl<F> MessageListenerOrderly for F
where
    F: Fn(&[MessageExt], &mut ConsumeOrderlyContext) -> ConsumeOrderlyStatus
        + Send
        + Sync
        + 'static,
{
    fn consume(
        &self,
        msgs: &[MessageExt],
        ctx: &mut ConsumeOrderlyContext,
    ) -> ConsumeOrderlyStatus {
        self(msgs, ctx)
    }
}

/// A push consumer. Subscribe, set a listener, start.
///
/// ```no_run
/// # async fn demo() -> Result<(), mq_consumer::ConsumerError> {
/// use mq_consumer::{ConsumeStatus, ConsumerConfig, PushConsumer, async_listener};
///
/// let consumer = PushConsumer::new(ConsumerConfig::new("orders_service", "127.0.0.1:9876"));
/// consumer.subscribe("Orders", "TagA || TagB")?;
/// consumer
///     .start_async(async_listener(|msgs, _queue| async move {
///         for m in &msgs {
///             println!("{}", String::from_utf8_lossy(&m.message.body));
///         }
///         ConsumeStatus::Success // ReconsumeLater retries through the retry topic
///     }))
///     .await?;
/// # Ok(()) }
/// ```
///
/// Dropping a running consumer without [`PushConsumer::shutdown`] stops it at once: its tasks
/// are cancelled and it leaves the group (brokers notice when the connection closes). Offsets
/// kept locally are written; offsets kept on the brokers and committed since the last
/// persist interval are not sent, so those messages are consumed again.
#[derive(Debug)]
pub struct PushConsumer {
    core: Handle,
    rx: Mutex<Option<mpsc::Receiver<Delivery>>>,
}

impl PushConsumer {
    /// A consumer with `config` (state CREATED).
    pub fn new(config: ConsumerConfig) -> Self {
        let (core, rx) = Core::new(config, ConsumeType::Passively);
        Self {
            core: Handle(core),
            rx: Mutex::new(Some(rx)),
        }
    }

    /// Subscribes to `topic` with a tag expression (`*`, `TagA || TagB`). Before start.
    ///
    /// # Errors
    /// [`ConsumerError::State`] after start; [`ConsumerError::Subscription`] for a blank topic.
    pub fn subscribe(&self, topic: &str, expression: &str) -> Result<(), ConsumerError> {
        self.core.subscribe(topic, expression)
    }

    /// The lifecycle state.
    pub fn state(&self) -> ServiceState {
        self.core.state.get()
    }

    /// The shared client instance (after start, until shutdown).
    pub fn instance(&self) -> Option<Arc<mq_client_instance::ClientInstance>> {
        self.core.instance.read().clone()
    }

    pub(crate) fn core(&self) -> &Arc<Core> {
        &self.core
    }

    /// The deliveries, for whoever consumes them (once).
    pub(crate) fn take_deliveries(&self) -> Result<mpsc::Receiver<Delivery>, ConsumerError> {
        self.rx
            .lock()
            .take()
            .ok_or_else(|| ConsumerError::State(self.core.state.get()))
    }

    /// Queues currently assigned to this member.
    pub fn assigned_queues(&self) -> Vec<MessageQueue> {
        let mut q: Vec<MessageQueue> = self.core.queues.lock().keys().cloned().collect();
        q.sort();
        q
    }

    /// Starts consuming with `listener`.
    ///
    /// # Errors
    /// [`ConsumerError::State`] when started twice; configuration and instance errors.
    pub async fn start(&self, listener: Arc<dyn MessageListener>) -> Result<(), ConsumerError> {
        self.start_with(Listener::Blocking(listener)).await
    }

    /// Starts consuming with an async `listener`, run on the runtime's workers.
    ///
    /// # Errors
    /// As for [`PushConsumer::start`].
    pub async fn start_async(
        &self,
        listener: Arc<dyn AsyncMessageListener>,
    ) -> Result<(), ConsumerError> {
        self.start_with(Listener::Async(listener)).await
    }

    async fn start_with(&self, listener: Listener) -> Result<(), ConsumerError> {
        let rx = self.take_deliveries()?;
        self.core.start().await?;
        let core = Arc::clone(&self.core);
        self.core
            .tasks
            .spawn(dispatch(core, rx, listener).instrument(tracing::debug_span!("push_dispatch")));
        Ok(())
    }

    /// Starts consuming each queue strictly in order with `listener`: queues are locked on
    /// the broker (clustering), so one member at a time consumes a queue, and one worker at a
    /// time per queue. A batch suspended more than max-reconsume-times goes to the DLQ.
    ///
    /// # Errors
    /// As for [`PushConsumer::start`].
    pub async fn start_orderly(
        &self,
        listener: Arc<dyn MessageListenerOrderly>,
    ) -> Result<(), ConsumerError> {
        let rx = self.take_deliveries()?;
        self.core
            .orderly
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.core.start().await?;
        let core = Arc::clone(&self.core);
        self.core.tasks.spawn(
            dispatch_orderly(core, rx, listener)
                .instrument(tracing::debug_span!("orderly_dispatch")),
        );
        Ok(())
    }

    /// Stops fetching, lets running listener calls finish, persists offsets and leaves the
    /// group.
    pub async fn shutdown(&self) {
        self.core.shutdown().await;
    }
}

async fn dispatch(core: Arc<Core>, mut rx: mpsc::Receiver<Delivery>, listener: Listener) {
    let workers = Arc::new(Semaphore::new(core.config.workers));
    // A blocking listener runs on threads of the consumer's own (`CallPool`), closed when
    // this loop ends: they finish what is queued.
    let pool = match &listener {
        Listener::Blocking(l) => Some(CallPool::new(&core, l)),
        Listener::Async(_) => None,
    };
    loop {
        let delivery = tokio::select! {
            () = core.token.cancelled() => break,
            d = rx.recv() => match d {
                Some(d) => d,
                None => break,
            },
        };
        let Delivery { mq, pq, msgs } = delivery;
        let mq = Arc::new(mq);
        // Each message moves into its batch: none is copied.
        let mut msgs = msgs.into_iter();
        loop {
            let batch: Vec<MessageExt> =
                msgs.by_ref().take(core.config.consume_batch_size).collect();
            if batch.is_empty() {
                break;
            }
            let permit = tokio::select! {
                () = core.token.cancelled() => return,
                p = Arc::clone(&workers).acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => return,
                },
            };
            let (mq, pq) = (Arc::clone(&mq), Arc::clone(&pq));
            match &pool {
                Some(pool) => pool.submit(Call {
                    mq,
                    pq,
                    batch,
                    permit,
                }),
                None => {
                    let (core2, listener) = (Arc::clone(&core), listener.clone());
                    core.tasks.spawn(async move {
                        consume_batch(&core2, &listener, &mq, &pq, batch).await;
                        drop(permit);
                    });
                }
            }
        }
    }
}

/// `batch` as the listener sees it when some of it came from the group's retry topic: a copy
/// with their original topics back; `None` when none did (the listener sees `batch` itself).
pub(crate) fn shown(core: &Core, batch: &[MessageExt]) -> Option<Vec<MessageExt>> {
    let retried = |m: &MessageExt| {
        m.message
            .topic
            .starts_with(mq_client_api::names::RETRY_PREFIX)
    };
    if !batch.iter().any(retried) {
        return None;
    }
    let group = core.group.read().clone();
    let mut shown = batch.to_vec();
    for m in &mut shown {
        restore_retry_topic(&group, m);
    }
    Some(shown)
}

/// Runs the listener on `batch` until every message is consumed or handed back to the broker.
/// Messages whose send-back fails are consumed again locally after a pause; they stay in the
/// process queue meanwhile, so the committed offset cannot pass them.
async fn consume_batch(
    core: &Arc<Core>,
    listener: &Listener,
    mq: &MessageQueue,
    pq: &Arc<crate::core::ProcessQueue>,
    batch: Vec<MessageExt>,
) {
    if pq.dropped.is_cancelled() || batch.is_empty() {
        return;
    }
    let restored = shown(core, &batch);
    let ctx = ConsumeContext {
        queue: mq.clone(),
        delay_level: 0,
    };
    let (status, ctx) = listener
        .call(restored.as_deref().unwrap_or(&batch), ctx)
        .await;
    if status == ConsumeStatus::Success || core.config.message_model == MessageModel::Broadcasting {
        core.ack(mq, pq, &batch);
        return;
    }
    settle_failed(core, listener, mq, pq, batch, ctx.delay_level).await;
}

/// A batch the listener did not consume: each message is sent back to the broker for a
/// delayed retry (`delay_level`), and those whose send-back fails are consumed again here
/// after a pause.
pub(crate) async fn settle_failed(
    core: &Arc<Core>,
    listener: &Listener,
    mq: &MessageQueue,
    pq: &Arc<crate::core::ProcessQueue>,
    batch: Vec<MessageExt>,
    delay_level: i32,
) {
    if core.instance().is_err() {
        return;
    }
    let mut kept = Vec::new();
    for m in batch {
        let sent = core.send_back(mq, &m, &m.message.topic, delay_level).await;
        match sent {
            Ok(()) => core.ack(mq, pq, std::slice::from_ref(&m)),
            Err(e) => {
                warn!(queue = %mq, offset = m.queue_offset, cause = %e, "send-back failed; consuming again locally");
                kept.push(m);
            }
        }
    }
    if kept.is_empty() {
        return;
    }
    debug!(queue = %mq, count = kept.len(), "retrying locally");
    tokio::select! {
        () = pq.dropped.cancelled() => return,
        () = tokio::time::sleep(Duration::from_secs(1)) => {}
    }
    Box::pin(consume_batch(core, listener, mq, pq, kept)).await;
}

/// Routes each queue's deliveries to that queue's single worker, in arrival order.
async fn dispatch_orderly(
    core: Arc<Core>,
    mut rx: mpsc::Receiver<Delivery>,
    listener: Arc<dyn MessageListenerOrderly>,
) {
    let mut workers: std::collections::HashMap<
        MessageQueue,
        (
            Arc<crate::core::ProcessQueue>,
            mpsc::UnboundedSender<Delivery>,
        ),
    > = std::collections::HashMap::new();
    loop {
        let delivery = tokio::select! {
            () = core.token.cancelled() => break,
            d = rx.recv() => match d {
                Some(d) => d,
                None => break,
            },
        };
        let stale = workers
            .get(&delivery.mq)
            .is_none_or(|(pq, tx)| !Arc::ptr_eq(pq, &delivery.pq) || tx.is_closed());
        if stale {
            let (tx, queue_rx) = mpsc::unbounded_channel();
            let (c, l) = (Arc::clone(&core), Arc::clone(&listener));
            core.tasks.spawn(orderly_worker(c, l, queue_rx));
            workers.insert(delivery.mq.clone(), (Arc::clone(&delivery.pq), tx));
        }
        if let Some((_, tx)) = workers.get(&delivery.mq) {
            let _ = tx.send(delivery);
        }
        workers.retain(|_, (pq, _)| !pq.dropped.is_cancelled());
    }
}

async fn orderly_worker(
    core: Arc<Core>,
    listener: Arc<dyn MessageListenerOrderly>,
    mut rx: mpsc::UnboundedReceiver<Delivery>,
) {
    let size = core.config.consume_batch_size;
    while let Some(d) = rx.recv().await {
        let Delivery { mq, pq, msgs } = d;
        let (mq, msgs) = (Arc::new(mq), Arc::new(msgs));
        let chunks = msgs.len().div_ceil(size);
        let mut next = 0;
        while next < chunks {
            // The batches from `next` on, in order, in one call of the blocking pool, until one
            // is not consumed at the first try: a hand-off to another thread per delivery
            // rather than per batch.
            let (c, l, m, q, p) = (
                Arc::clone(&core),
                Arc::clone(&listener),
                Arc::clone(&msgs),
                Arc::clone(&mq),
                Arc::clone(&pq),
            );
            let run =
                tokio::task::spawn_blocking(move || consume_in_order(&c, &*l, &m, next, &q, &p));
            let Ok((at, stop)) = run.await else {
                return;
            };
            match stop {
                InOrder::Done => break,
                InOrder::Dropped => return,
                InOrder::Suspended(suspend) => {
                    let Some(chunk) = msgs.chunks(size).nth(at) else {
                        break;
                    };
                    if !retry_in_order(&core, &listener, &mq, &pq, chunk, suspend).await {
                        return;
                    }
                    next = at + 1;
                }
            }
        }
    }
}

/// Where [`consume_in_order`] stopped.
enum InOrder {
    /// Every batch was consumed.
    Done,
    /// The queue was dropped (rebalanced away).
    Dropped,
    /// The listener suspended the queue (or panicked) on the batch it stopped at; the queue
    /// pauses for this long.
    Suspended(Duration),
}

/// Runs the orderly listener on the batches of `msgs` from the `from`th on, acknowledging each
/// it consumes; returns the batch it stopped at and why.
fn consume_in_order(
    core: &Core,
    listener: &dyn MessageListenerOrderly,
    msgs: &[MessageExt],
    from: usize,
    mq: &MessageQueue,
    pq: &crate::core::ProcessQueue,
) -> (usize, InOrder) {
    let chunks = msgs.chunks(core.config.consume_batch_size);
    // One context for the delivery's batches: its queue is copied again only if the listener
    // changed it.
    let mut ctx = ConsumeOrderlyContext {
        queue: mq.clone(),
        suspend: Duration::from_secs(1),
    };
    for (at, chunk) in chunks.enumerate().skip(from) {
        if pq.dropped.is_cancelled() {
            return (at, InOrder::Dropped);
        }
        let restored = shown(core, chunk);
        if ctx.queue != *mq {
            ctx.queue = mq.clone();
        }
        ctx.suspend = Duration::from_secs(1);
        let view = restored.as_deref().unwrap_or(chunk);
        // A panic suspends the queue.
        let status = std::panic::catch_unwind(AssertUnwindSafe(|| listener.consume(view, &mut ctx)))
            .unwrap_or_else(|_| {
                warn!(queue = %mq, cause = "the listener panicked", "orderly listener failed; suspending");
                ctx.suspend = Duration::from_secs(1);
                ConsumeOrderlyStatus::SuspendCurrentQueueAMoment
            });
        if status != ConsumeOrderlyStatus::Success {
            return (at, InOrder::Suspended(ctx.suspend));
        }
        core.ack(mq, pq, chunk);
    }
    (msgs.len(), InOrder::Done)
}

/// A batch the orderly listener suspended once: after each pause it is consumed again (its
/// reconsume times raised by the attempts so far), until consumed, or dead-lettered after max
/// reconsume times; later messages of the queue wait. `false` when the queue was dropped
/// meanwhile.
async fn retry_in_order(
    core: &Arc<Core>,
    listener: &Arc<dyn MessageListenerOrderly>,
    mq: &MessageQueue,
    pq: &Arc<crate::core::ProcessQueue>,
    chunk: &[MessageExt],
    mut suspend: Duration,
) -> bool {
    let group = core.group.read().clone();
    let mut attempts = 1;
    loop {
        if attempts > core.config.max_reconsume_times {
            // Give up on these messages: dead-letter them and move on, in order.
            if let Ok(instance) = core.instance()
                && let Some(addr) = instance.broker_master(&mq.broker_name)
            {
                for m in chunk {
                    let header = ConsumerSendMsgBackRequestHeader {
                        offset: m.commit_log_offset,
                        group: group.clone(),
                        delay_level: -1,
                        origin_msg_id: Some(m.msg_id()),
                        origin_topic: Some(m.message.topic.clone()),
                        unit_mode: false,
                        max_reconsume_times: Some(core.config.max_reconsume_times),
                    };
                    if let Err(e) = instance
                        .api()
                        .consumer_send_back(&addr, &header, instance.config().request_timeout)
                        .await
                    {
                        warn!(queue = %mq, cause = %e, "dead-lettering failed");
                    }
                }
            }
            core.ack(mq, pq, chunk);
            return true;
        }
        tokio::select! {
            () = pq.dropped.cancelled() => return false,
            () = tokio::time::sleep(suspend) => {}
        }
        if pq.dropped.is_cancelled() {
            return false;
        }
        let mut shown = chunk.to_vec();
        for m in &mut shown {
            restore_retry_topic(&group, m);
            m.reconsume_times += attempts;
        }
        let ctx = ConsumeOrderlyContext {
            queue: mq.clone(),
            suspend: Duration::from_secs(1),
        };
        // A panic suspends the queue.
        let l = Arc::clone(listener);
        let (status, ctx) = on_blocking_pool(shown, ctx, move |msgs, ctx| l.consume(msgs, ctx))
            .await
            .unwrap_or_else(|e| {
                warn!(queue = %mq, cause = %e, "orderly listener failed; suspending");
                (
                    ConsumeOrderlyStatus::SuspendCurrentQueueAMoment,
                    ConsumeOrderlyContext {
                        queue: mq.clone(),
                        suspend: Duration::from_secs(1),
                    },
                )
            });
        if status == ConsumeOrderlyStatus::Success {
            core.ack(mq, pq, chunk);
            return true;
        }
        attempts += 1;
        suspend = ctx.suspend;
    }
}
