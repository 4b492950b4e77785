//! The pieces of one send: which queue an attempt goes to, one attempt (hooks, latency
//! statistics, the broker's answer), and the policy that decides whether another attempt
//! follows. [`Engine::send_core_inner`](crate::producer) strings them together under the
//! send's deadline; the [`OrderedSender`](crate::OrderedSender) uses the written-now form of an
//! attempt, [`Engine::begin_attempt`], so that its pipelined sends keep call order.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use mq_client_api::{ClientApiError, Message, MessageQueue, ResponseCode, SendResult, SendStatus};
use mq_client_instance::ClientInstance;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::config::ProducerConfig;
use crate::error::ProducerError;
use crate::hook::{CommunicationMode, SendContext, SendHook};
use crate::producer::{Engine, Payload, Target, left};
use crate::select::TopicPublishInfo;

/// What an attempt ends with: a result (`None` for oneway) or the broker's or transport's
/// error.
pub(crate) type AttemptOutcome = Result<Option<SendResult>, ClientApiError>;

/// How a send is retried.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RetryPolicy {
    /// Attempts in all, the first included.
    pub(crate) max_attempts: u32,
    /// Whether the engine chooses the queue (so another broker may be tried).
    pub(crate) automatic: bool,
    /// Whether a result that is not SEND_OK moves on to another broker.
    retry_not_stored: bool,
}

/// What follows an attempt.
#[derive(Debug)]
pub(crate) enum Next {
    /// The send is over with this result.
    Done(Option<SendResult>),
    /// Stored but not SEND_OK, and another broker may do better: kept in case none does.
    NotStored(SendResult),
    /// Failed; another attempt may succeed.
    Retry(ClientApiError),
    /// Failed for good.
    Fail(ClientApiError),
}

impl RetryPolicy {
    /// The policy of a send to `target` in `mode` under `config`: sync sends get
    /// `1 + retries` attempts, async ones `1 + retries_async`; sends to an explicit queue or
    /// through a selector get one, since another queue would break the caller's choice.
    pub(crate) fn new(
        config: &ProducerConfig,
        target: &Target<'_>,
        mode: CommunicationMode,
    ) -> Self {
        let automatic = matches!(target, Target::Auto);
        let max_attempts = match (automatic, mode) {
            (true, CommunicationMode::Sync) => 1 + config.retries,
            (true, CommunicationMode::Async) => 1 + config.retries_async,
            _ => 1,
        };
        Self {
            max_attempts,
            automatic,
            retry_not_stored: automatic && config.retry_another_broker_when_not_stored,
        }
    }

    /// Decides what follows `outcome`.
    pub(crate) fn next(&self, outcome: AttemptOutcome) -> Next {
        match outcome {
            Ok(Some(r)) if r.status != SendStatus::SendOk && self.retry_not_stored => {
                Next::NotStored(r)
            }
            Ok(r) => Next::Done(r),
            Err(e) if self.automatic && e.is_retryable() => Next::Retry(e),
            Err(e) => Next::Fail(e),
        }
    }
}

/// Where one attempt goes and what it is part of.
pub(crate) struct AttemptTo<'a> {
    pub(crate) instance: &'a ClientInstance,
    pub(crate) queue: &'a MessageQueue,
    pub(crate) addr: &'a str,
    /// The queue's topic, shared.
    pub(crate) topic: &'a Arc<str>,
    /// The topic as the user named it (without the namespace).
    pub(crate) user_topic: &'a str,
    pub(crate) mode: CommunicationMode,
    /// 1 for the first attempt.
    pub(crate) attempt: u32,
    /// The born timestamp when the clock was read for this attempt already (the first
    /// attempt of a message given its id just before); read anew otherwise.
    pub(crate) born: Option<SystemTime>,
}

/// The hooks of an attempt and what they see of it.
struct Watched {
    hooks: Vec<Arc<dyn SendHook>>,
    message: Message,
    queue: MessageQueue,
}

/// What the after-hooks and the latency statistics need of an attempt once it is over.
struct Finish {
    /// Set when there are hooks.
    hooks: Option<Watched>,
    addr: Arc<str>,
    broker_name: String,
    user_topic: String,
    mode: CommunicationMode,
    attempt: u32,
    /// When the attempt began, read only when latencies are recorded.
    started: Option<std::time::Instant>,
}

impl Engine {
    /// The queue of the next attempt, or `None` when the route has none left to offer.
    ///
    /// # Errors
    /// [`ProducerError::NoQueueSelected`] when a selector chose none.
    pub(crate) fn select_queue<'i>(
        &self,
        target: &Target<'_>,
        info: &'i TopicPublishInfo,
        topic: &str,
        payload: &Payload,
        last_broker: Option<&str>,
    ) -> Result<Option<Cow<'i, MessageQueue>>, ProducerError> {
        let faults = self.config.latency_fault_tolerance.then_some(&self.faults);
        let user_topic = payload.topic();
        Ok(match target {
            Target::Auto => info.select(last_broker, faults).map(Cow::Borrowed),
            Target::Queue(q) => Some(Cow::Owned(MessageQueue::new(
                topic,
                &q.broker_name,
                q.queue_id,
            ))),
            Target::Selector(selector, arg) => {
                // The selector sees the queues under the user's topic name.
                let user_queues: Vec<MessageQueue> = info
                    .queues
                    .iter()
                    .map(|q| MessageQueue::new(user_topic, &q.broker_name, q.queue_id))
                    .collect();
                let chosen = match payload {
                    Payload::Single(m) => selector.select(&user_queues, m, arg),
                    Payload::Batch { .. } => {
                        selector.select(&user_queues, &Message::new(user_topic, Bytes::new()), arg)
                    }
                };
                match chosen {
                    Some(q) => Some(Cow::Owned(MessageQueue::new(
                        topic,
                        q.broker_name,
                        q.queue_id,
                    ))),
                    None => {
                        return Err(ProducerError::NoQueueSelected {
                            topic: user_topic.to_owned(),
                        });
                    }
                }
            }
        })
    }

    /// The master address of `broker`, looking the route of `topic` up again (within the
    /// deadline) when it is not known.
    ///
    /// # Errors
    /// SERVICE_NOT_AVAILABLE naming the broker when it still has no master.
    pub(crate) async fn broker_addr(
        &self,
        instance: &ClientInstance,
        topic: &str,
        broker: &str,
        deadline: Instant,
    ) -> Result<Arc<str>, ClientApiError> {
        if let Some(a) = instance.broker_master(broker) {
            return Ok(a);
        }
        self.refresh_route(instance, topic, deadline).await;
        instance
            .broker_master(broker)
            .ok_or_else(|| ClientApiError::Broker {
                code: ResponseCode::SERVICE_NOT_AVAILABLE,
                remark: Some(format!("the broker[{broker}] not exist")),
                addr: String::new(),
            })
    }

    /// One attempt of `payload`, awaited: before-hooks, the request, then the latency
    /// statistics and after-hooks.
    pub(crate) async fn attempt(
        &self,
        to: &AttemptTo<'_>,
        payload: &Payload,
        deadline: Instant,
    ) -> AttemptOutcome {
        let (request, sent) = self.build_request(
            to.instance,
            payload,
            to.queue,
            Arc::clone(to.topic),
            to.born.unwrap_or_else(SystemTime::now),
        );
        let hooks = self.hooks();
        // What hooks see is built only when there are hooks.
        let user_mq = (!hooks.is_empty())
            .then(|| MessageQueue::new(to.user_topic, &to.queue.broker_name, to.queue.queue_id));
        let base = user_mq.as_ref().map(|queue| SendContext {
            producer_group: &self.config.group,
            message: &sent,
            queue,
            broker_addr: to.addr,
            mode: to.mode,
            attempt: to.attempt,
            result: None,
            error: None,
        });
        if let Some(base) = &base {
            for h in &hooks {
                h.before(base);
            }
        }
        // Read again: a route refresh or the hooks may have taken time since the send began.
        let started = self.latency_started();
        let api = to.instance.api();
        let mut outcome = match to.mode {
            CommunicationMode::Oneway => api
                .send_oneway(to.addr, request, left(deadline))
                .await
                .map(|()| None),
            // The deadline as it is: what is left of it is read once, where the request starts.
            _ => api
                .send_until(to.addr, request, deadline, self.group())
                .await
                .map(Some),
        };
        rename_to_user(&mut outcome, to.user_topic);
        self.record_latency(&to.queue.broker_name, started, &outcome);
        if let Some(base) = base {
            after_hooks(&hooks, &base, &outcome);
        }
        outcome
    }

    /// One attempt of `payload` to `queue` whose request is written before this returns, so
    /// that successive calls go out in call order on the queue's connection; the outcome
    /// arrives on the returned receiver, after the latency statistics and the after-hooks. A
    /// single message must have been checked with [`Engine::prepare`].
    ///
    /// # Errors
    /// What stopped the request from being written (no master for the queue's broker, a
    /// closed connection, no permit): nothing was sent then.
    pub(crate) async fn begin_attempt(
        self: &Arc<Self>,
        instance: &ClientInstance,
        payload: &Payload,
        queue: &MessageQueue,
        attempt: u32,
        deadline: Instant,
    ) -> Result<oneshot::Receiver<AttemptOutcome>, ClientApiError> {
        let addr = self
            .broker_addr(instance, &queue.topic, &queue.broker_name, deadline)
            .await?;
        let (request, sent) = self.build_request(
            instance,
            payload,
            queue,
            queue.topic.as_str().into(),
            SystemTime::now(),
        );
        let hooks = self.hooks();
        let user_topic = instance.config().unwrap_name(&queue.topic).to_owned();
        let user_mq = MessageQueue::new(&user_topic, &queue.broker_name, queue.queue_id);
        let mode = CommunicationMode::Async;
        if !hooks.is_empty() {
            let base = SendContext {
                producer_group: &self.config.group,
                message: &sent,
                queue: &user_mq,
                broker_addr: &addr,
                mode,
                attempt,
                result: None,
                error: None,
            };
            for h in &hooks {
                h.before(&base);
            }
        }
        let finish = Finish {
            hooks: (!hooks.is_empty()).then(|| Watched {
                hooks,
                message: sent.into_owned(),
                queue: user_mq,
            }),
            addr: addr.clone(),
            broker_name: queue.broker_name.clone(),
            user_topic,
            mode,
            attempt,
            started: self.latency_started(),
        };
        let (tx, rx) = oneshot::channel();
        let engine = Arc::clone(self);
        // Not called when the request is not written: this then returns the error.
        instance
            .api()
            .send_with_callback(&addr, request, left(deadline), move |r| {
                let mut outcome = r.map(Some);
                rename_to_user(&mut outcome, &finish.user_topic);
                engine.finish_attempt(&finish, &outcome);
                // The sender may have stopped waiting.
                let _ = tx.send(outcome);
            })
            .await?;
        Ok(rx)
    }

    /// The latency statistics and after-hooks of an attempt that ended in a callback.
    fn finish_attempt(&self, finish: &Finish, outcome: &AttemptOutcome) {
        self.record_latency(&finish.broker_name, finish.started, outcome);
        if let Some(watched) = &finish.hooks {
            let base = SendContext {
                producer_group: &self.config.group,
                message: &watched.message,
                queue: &watched.queue,
                broker_addr: &finish.addr,
                mode: finish.mode,
                attempt: finish.attempt,
                result: None,
                error: None,
            };
            after_hooks(&watched.hooks, &base, outcome);
        }
    }

    /// Java records latencies only when the fault strategy is on.
    fn record_latency(
        &self,
        broker: &str,
        started: Option<std::time::Instant>,
        outcome: &AttemptOutcome,
    ) {
        if let Some(started) = started {
            self.faults
                .update(broker, started.elapsed(), outcome.is_err());
        }
    }

    /// The start of an attempt whose latency is recorded; the clock is not read otherwise.
    fn latency_started(&self) -> Option<std::time::Instant> {
        self.config
            .latency_fault_tolerance
            .then(std::time::Instant::now)
    }
}

/// Puts the result under the user's topic name (the namespace-wrapped name is the
/// broker's); in place, since a result is large to move.
fn rename_to_user(outcome: &mut AttemptOutcome, user_topic: &str) {
    if let Ok(Some(r)) = outcome
        && r.message_queue.topic != user_topic
    {
        user_topic.clone_into(&mut r.message_queue.topic);
    }
}

fn after_hooks(hooks: &[Arc<dyn SendHook>], base: &SendContext<'_>, outcome: &AttemptOutcome) {
    for h in hooks {
        match outcome {
            Ok(r) => h.after(&SendContext {
                result: r.as_ref(),
                ..*base
            }),
            Err(e) => h.after(&SendContext {
                error: Some(e),
                ..*base
            }),
        }
    }
}
