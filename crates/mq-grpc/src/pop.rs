//! Pop-style consumption (what RocketMQ 5's SimpleConsumer does) served by the proxy over plain
//! pulls, so that it works in front of any broker, 4.x included.
//!
//! Per (group, topic) the proxy keeps, for each queue, the next offset to pull and the
//! messages handed out and not yet acknowledged. A received message is invisible until its
//! invisible time passes; then the next receive hands it out again with its attempt count
//! raised, under a new receipt handle (the old one stops working). After the last attempt it
//! goes to the group's dead-letter queue (CONSUMER_SEND_MSG_BACK with no reconsume left). An
//! acknowledgement removes it, and the group's committed offset of the queue (sent to its
//! broker) moves up to the lowest offset still unacknowledged, so a restarted proxy hands out
//! again only what was never acknowledged.
//!
//! A receive may ask the proxy to renew what it hands out (`auto_renew`, as push consumers
//! do): those messages stay invisible while their client is connected, until acknowledged,
//! given a new invisible time by the client, or [`RENEW_MAX`] has passed. When the client goes
//! away they are handed out again after [`INVISIBLE_WHEN_CLEARED`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use mq_client_api::header::{
    ConsumerSendMsgBackRequestHeader, PullMessageRequestHeader, QueryConsumerOffsetRequestHeader,
    UpdateConsumerOffsetRequestHeader, pull_sys_flag,
};
use mq_client_api::message::MessageExt;
use mq_client_api::{ClientApi, MessageQueue, PullStatus};
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::{debug, warn};

/// A queue of a topic: its broker's name and master address, and its id.
#[derive(Clone, Debug, Eq, Hash, PartialEq)]
pub(crate) struct QueueRef {
    pub(crate) broker: String,
    pub(crate) addr: String,
    pub(crate) id: i32,
}

/// Releases a receive's claimed queues when dropped.
struct Release<'a> {
    owner: &'a GroupTopic,
    queues: Vec<QueueRef>,
}

impl Drop for Release<'_> {
    fn drop(&mut self) {
        self.owner.release(&self.queues);
    }
}

/// How long the proxy renews a message for a connected client at most (Apache RocketMQ's
/// proxy: `renewMaxTimeMillis`, 3 hours).
pub(crate) const RENEW_MAX: Duration = Duration::from_secs(3 * 3600);

/// How soon a renewed message is handed out again once its client is gone (Apache RocketMQ's
/// proxy: `invisibleTimeMillisWhenClear`, 1 second).
pub(crate) const INVISIBLE_WHEN_CLEARED: Duration = Duration::from_secs(1);

/// How long what a receive hands out stays invisible.
#[derive(Clone, Debug)]
pub(crate) enum Lease {
    /// For the given time.
    For(Duration),
    /// Renewed by the proxy for the client `owner` (its client id) while it is connected, up
    /// to [`RENEW_MAX`]; `shown` is the invisible time the client is told.
    Renewed { owner: String, shown: Duration },
}

impl Lease {
    /// The invisible time the client is told.
    pub(crate) fn shown(&self) -> Duration {
        match self {
            Self::For(d) | Self::Renewed { shown: d, .. } => *d,
        }
    }

    /// When a message leased at `now` may be handed out again, and the client whose
    /// departure ends a renewal.
    fn until(&self, now: Instant) -> (Instant, Option<String>) {
        match self {
            Self::For(d) => (now + *d, None),
            Self::Renewed { owner, .. } => (now + RENEW_MAX, Some(owner.clone())),
        }
    }
}

/// A message handed out and not acknowledged yet.
#[derive(Debug)]
struct InFlight {
    message: MessageExt,
    /// When it may be handed out again.
    visible_at: Instant,
    /// The connected client the proxy renews it for, if any.
    renewed_for: Option<String>,
    /// Deliveries so far (1 for the first).
    attempt: u32,
    /// Changes at each delivery and invisibility change: a receipt handle names it.
    seq: u64,
}

#[derive(Debug, Default)]
struct QueueState {
    /// The next offset to pull; `None` until looked up.
    next: Option<i64>,
    /// Handed out, not acknowledged, by queue offset.
    inflight: BTreeMap<i64, InFlight>,
    /// A receive is pulling this queue (no other may, or both would get the same messages).
    pulling: bool,
    /// The offset last committed to the broker.
    committed: i64,
}

/// What a receive hands out: the message, its attempt, and its receipt handle.
#[derive(Debug)]
pub(crate) struct Delivery {
    pub(crate) message: MessageExt,
    pub(crate) attempt: u32,
    pub(crate) handle: String,
    /// The invisible time the client is told.
    pub(crate) invisible: Duration,
}

/// Why an acknowledgement or invisibility change was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandleError {
    #[error("receipt handle {0:?} is malformed")]
    Malformed(String),
    #[error("receipt handle {0:?} is stale: the message was handed out again, or acknowledged")]
    Stale(String),
}

/// The consumption state of one (group, topic).
#[derive(Debug)]
pub(crate) struct GroupTopic {
    group: String,
    topic: String,
    queues: Mutex<HashMap<QueueRef, QueueState>>,
    /// Woken when a queue is released by a receive.
    released: Notify,
    seq: std::sync::atomic::AtomicU64,
}

impl GroupTopic {
    pub(crate) fn new(group: String, topic: String) -> Self {
        Self {
            group,
            topic,
            queues: Mutex::new(HashMap::new()),
            released: Notify::new(),
            seq: std::sync::atomic::AtomicU64::new(1),
        }
    }

    fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    fn handle(q: &QueueRef, offset: i64, seq: u64) -> String {
        format!("{}_{}_{}_{}", q.id, offset, seq, q.broker)
    }

    /// (queue id, offset, seq, broker) of a receipt handle.
    fn parse(handle: &str) -> Result<(i32, i64, u64, &str), HandleError> {
        let bad = || HandleError::Malformed(handle.to_owned());
        let mut parts = handle.splitn(4, '_');
        let id = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let offset = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let seq = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let broker = parts.next().filter(|b| !b.is_empty()).ok_or_else(bad)?;
        Ok((id, offset, seq, broker))
    }

    /// Hands out up to `batch` messages of `queues`: first those whose invisible time is over
    /// (again, with their attempt raised; past `max_attempts` they go to the dead-letter queue
    /// instead), then new ones, waiting up to `poll` for any.
    ///
    /// For a `fifo` group a queue hands out nothing new while any message it handed out is
    /// unacknowledged: while one is still invisible the queue is blocked, and once all are
    /// visible again they go out again, in queue order, before anything after them.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn receive(
        self: &Arc<Self>,
        api: &ClientApi,
        queues: &[QueueRef],
        expression: &str,
        batch: usize,
        lease: &Lease,
        poll: Duration,
        max_attempts: u32,
        fifo: bool,
        timeout: Duration,
    ) -> Vec<Delivery> {
        let deadline = Instant::now() + poll;
        loop {
            let released = self.released.notified();
            let (mut out, dead, claimed, next_visible) =
                self.claim(queues, batch, lease, max_attempts, fifo);
            // The claimed queues are released when this iteration ends, however it ends: a
            // receive whose client went away (its future dropped mid-pull) leaves none behind.
            let _release = Release {
                owner: self,
                queues: claimed.iter().map(|(q, _)| q.clone()).collect(),
            };
            let had_dead = !dead.is_empty();
            for (q, m) in dead {
                if self
                    .to_dead_letters(api, &q, &m, max_attempts, timeout)
                    .await
                {
                    if let Some(offset) = self.commit_point(&q) {
                        self.commit(api, &q, offset, timeout).await;
                    }
                } else {
                    // Kept, and tried again when the next receive finds it expired.
                    self.put_back(&q, m, max_attempts, lease.shown());
                }
            }
            if !claimed.is_empty() && out.len() < batch {
                // Wait for new messages only while nothing is at hand, and no longer than until
                // a message handed out earlier becomes visible again.
                let wait = if out.is_empty() {
                    next_visible
                        .map_or(deadline, |v| v.min(deadline))
                        .saturating_duration_since(Instant::now())
                } else {
                    Duration::ZERO
                };
                let pulled = self
                    .pull_claimed(api, &claimed, expression, batch - out.len(), wait, timeout)
                    .await;
                out.extend(self.hand_out(pulled, lease));
            }
            if !out.is_empty() || Instant::now() >= deadline {
                return out;
            }
            // A FIFO queue whose messages went to the dead-letter queue goes on with what
            // follows them: claimed again at once.
            if had_dead {
                continue;
            }
            // Every queue is being pulled by another receive: wait for one to be released.
            if claimed.is_empty() {
                let until = next_visible.map_or(deadline, |v| v.min(deadline));
                let _ = tokio::time::timeout_at(until, released).await;
            }
        }
    }

    /// Under the lock: the expired messages to hand out again (or to the dead-letter queue),
    /// and the queues this receive may pull (marked as pulled).
    /// Also returns when the first message still invisible becomes visible again.
    #[allow(clippy::type_complexity)]
    fn claim(
        &self,
        queues: &[QueueRef],
        batch: usize,
        lease: &Lease,
        max_attempts: u32,
        fifo: bool,
    ) -> (
        Vec<Delivery>,
        Vec<(QueueRef, MessageExt)>,
        Vec<(QueueRef, Option<i64>)>,
        Option<Instant>,
    ) {
        let now = Instant::now();
        let mut out = Vec::new();
        let mut dead = Vec::new();
        let mut claimed = Vec::new();
        let mut next_visible: Option<Instant> = None;
        let mut states = self.queues.lock();
        for q in queues {
            let state = states.entry(q.clone()).or_default();
            let waiting = state
                .inflight
                .values()
                .map(|f| f.visible_at)
                .filter(|v| *v > now)
                .min();
            if let Some(v) = waiting {
                next_visible = Some(next_visible.map_or(v, |n| n.min(v)));
                if fifo {
                    // Blocked until what it handed out is acknowledged or visible again.
                    continue;
                }
            }
            let redelivering = fifo && !state.inflight.is_empty();
            let expired: Vec<i64> = state
                .inflight
                .iter()
                .filter(|(_, f)| f.visible_at <= now)
                .map(|(o, _)| *o)
                .collect();
            for offset in expired {
                if out.len() >= batch {
                    break;
                }
                let Some(f) = state.inflight.get_mut(&offset) else {
                    continue;
                };
                if f.attempt >= max_attempts {
                    if let Some(f) = state.inflight.remove(&offset) {
                        dead.push((q.clone(), f.message));
                    }
                    continue;
                }
                f.attempt += 1;
                f.seq = self.next_seq();
                (f.visible_at, f.renewed_for) = lease.until(now);
                out.push(Delivery {
                    message: f.message.clone(),
                    attempt: f.attempt,
                    handle: Self::handle(q, offset, f.seq),
                    invisible: lease.shown(),
                });
            }
            // A FIFO queue goes on only after what it handed out before.
            if !state.pulling && !redelivering {
                state.pulling = true;
                claimed.push((q.clone(), state.next));
            }
        }
        (out, dead, claimed, next_visible)
    }

    /// Pulls the claimed queues at once (long polling for `wait` when nothing is at hand) and
    /// returns what each gave and where it goes on from.
    async fn pull_claimed(
        &self,
        api: &ClientApi,
        claimed: &[(QueueRef, Option<i64>)],
        expression: &str,
        max: usize,
        wait: Duration,
        timeout: Duration,
    ) -> Vec<(QueueRef, i64, Vec<MessageExt>)> {
        let pulls = claimed.iter().map(|(q, next)| async move {
            let from = match next {
                Some(o) => *o,
                None => self.start_offset(api, q, timeout).await,
            };
            let header = tag_pull(
                &self.group,
                &self.topic,
                (q.id, from),
                i32::try_from(max).unwrap_or(32).min(32),
                expression,
                wait,
            );
            match api.pull(&q.addr, &header, wait + timeout).await {
                Ok(r) => {
                    let next = if r.status == PullStatus::NoNewMsg {
                        from
                    } else {
                        r.next_begin_offset
                    };
                    (q.clone(), next, r.messages)
                }
                Err(e) => {
                    debug!(queue = q.id, broker = %q.broker, cause = %e, "pull failed");
                    (q.clone(), from, Vec::new())
                }
            }
        });
        if wait.is_zero() {
            return futures_util::future::join_all(pulls).await;
        }
        // Long polling: the first queue with messages answers; the others are asked again
        // without waiting, so none of their messages is left behind or handed out twice.
        let mut pending: Vec<_> = pulls.map(Box::pin).collect();
        let mut done = Vec::new();
        while !pending.is_empty() {
            let (r, _, rest) = futures_util::future::select_all(pending).await;
            let found = !r.2.is_empty();
            done.push(r);
            pending = rest;
            if found {
                break;
            }
        }
        if !pending.is_empty() {
            drop(pending);
            let again: Vec<(QueueRef, Option<i64>)> = claimed
                .iter()
                .filter(|(q, _)| !done.iter().any(|(d, _, _)| d == q))
                .cloned()
                .collect();
            let more =
                Box::pin(self.pull_claimed(api, &again, expression, max, Duration::ZERO, timeout))
                    .await;
            done.extend(more);
        }
        done
    }

    /// Where a queue this proxy has not read yet starts: the group's committed offset, else
    /// the queue's first message.
    async fn start_offset(&self, api: &ClientApi, q: &QueueRef, timeout: Duration) -> i64 {
        let header = QueryConsumerOffsetRequestHeader {
            consumer_group: self.group.clone(),
            topic: self.topic.clone(),
            queue_id: q.id,
            set_zero_if_not_found: None,
        };
        match api.query_consumer_offset(&q.addr, &header, timeout).await {
            Ok(o) if o >= 0 => o,
            _ => api
                .min_offset(
                    &q.addr,
                    &MessageQueue::new(&self.topic, &q.broker, q.id),
                    timeout,
                )
                .await
                .unwrap_or(0),
        }
    }

    /// Records what the claimed queues gave as handed out.
    fn hand_out(
        &self,
        pulled: Vec<(QueueRef, i64, Vec<MessageExt>)>,
        lease: &Lease,
    ) -> Vec<Delivery> {
        let now = Instant::now();
        let invisible = lease.shown();
        let mut out = Vec::new();
        let mut states = self.queues.lock();
        for (q, next, messages) in pulled {
            let state = states.entry(q.clone()).or_default();
            state.next = Some(next);
            for m in messages {
                let seq = self.next_seq();
                out.push(Delivery {
                    message: m.clone(),
                    attempt: 1,
                    handle: Self::handle(&q, m.queue_offset, seq),
                    invisible,
                });
                let (visible_at, renewed_for) = lease.until(now);
                state.inflight.insert(
                    m.queue_offset,
                    InFlight {
                        message: m,
                        visible_at,
                        renewed_for,
                        attempt: 1,
                        seq,
                    },
                );
            }
        }
        out
    }

    /// Ends a receive's pull of `queues`, and wakes the receives waiting for one.
    fn release(&self, queues: &[QueueRef]) {
        if queues.is_empty() {
            return;
        }
        let mut states = self.queues.lock();
        for q in queues {
            if let Some(state) = states.get_mut(q) {
                state.pulling = false;
            }
        }
        drop(states);
        self.released.notify_waiters();
    }

    /// The offset to commit on `q` when it moved: the lowest offset handed out and not
    /// acknowledged, or the next to pull.
    pub(crate) fn commit_point(&self, q: &QueueRef) -> Option<i64> {
        let mut states = self.queues.lock();
        let state = states.get_mut(q)?;
        let commit = state.inflight.keys().next().copied().or(state.next)?;
        (commit > state.committed).then(|| {
            state.committed = commit;
            commit
        })
    }

    /// Puts a message whose move to the dead-letter queue failed back among the handed out.
    /// It was handed to nobody, so nobody renews it: it is tried again once `retry_in` passed.
    fn put_back(&self, q: &QueueRef, message: MessageExt, attempt: u32, retry_in: Duration) {
        let seq = self.next_seq();
        self.queues
            .lock()
            .entry(q.clone())
            .or_default()
            .inflight
            .insert(
                message.queue_offset,
                InFlight {
                    message,
                    visible_at: Instant::now() + retry_in,
                    renewed_for: None,
                    attempt,
                    seq,
                },
            );
    }

    /// Runs `f` on the in-flight message `handle` names (its queue, the queue's in-flight
    /// messages, its offset), under the lock; a handle that names no message, or an older
    /// delivery of it, is stale.
    fn named<R>(
        &self,
        handle: &str,
        f: impl FnOnce(&QueueRef, &mut BTreeMap<i64, InFlight>, i64) -> R,
    ) -> Result<R, HandleError> {
        let (id, offset, seq, broker) = Self::parse(handle)?;
        let mut states = self.queues.lock();
        let found = states
            .iter_mut()
            .find(|(q, _)| q.id == id && q.broker == broker)
            .filter(|(_, state)| state.inflight.get(&offset).is_some_and(|f| f.seq == seq));
        let Some((q, state)) = found else {
            return Err(HandleError::Stale(handle.to_owned()));
        };
        Ok(f(q, &mut state.inflight, offset))
    }

    /// Acknowledges the message of `handle`; returns the queue and the offset to commit when
    /// the committed offset moves.
    pub(crate) fn ack(&self, handle: &str) -> Result<Option<(QueueRef, i64)>, HandleError> {
        let q = self.named(handle, |q, inflight, offset| {
            inflight.remove(&offset);
            q.clone()
        })?;
        Ok(self.commit_point(&q).map(|offset| (q, offset)))
    }

    /// Makes the message of `handle` invisible for `invisible` from now (a renewal ends: the
    /// client has taken over); returns its new handle.
    pub(crate) fn change_invisible(
        &self,
        handle: &str,
        invisible: Duration,
    ) -> Result<String, HandleError> {
        let seq = self.next_seq();
        self.named(handle, |q, inflight, offset| {
            if let Some(f) = inflight.get_mut(&offset) {
                f.seq = seq;
                f.visible_at = Instant::now() + invisible;
                f.renewed_for = None;
            }
            Self::handle(q, offset, seq)
        })
    }

    /// Ends the renewals of client `owner`, which went away: its messages are handed out
    /// again after [`INVISIBLE_WHEN_CLEARED`].
    pub(crate) fn client_gone(&self, owner: &str) {
        let visible_at = Instant::now() + INVISIBLE_WHEN_CLEARED;
        let mut states = self.queues.lock();
        for f in states.values_mut().flat_map(|s| s.inflight.values_mut()) {
            if f.renewed_for.as_deref() == Some(owner) {
                f.renewed_for = None;
                f.visible_at = f.visible_at.min(visible_at);
            }
        }
    }

    /// The message of `handle`, taken out of the in-flight set (for the dead-letter queue).
    pub(crate) fn take(&self, handle: &str) -> Result<(QueueRef, MessageExt), HandleError> {
        self.named(handle, |q, inflight, offset| {
            inflight.remove(&offset).map(|f| (q.clone(), f.message))
        })?
        .ok_or_else(|| HandleError::Stale(handle.to_owned()))
    }

    /// Commits `offset` for the group on the queue's broker.
    pub(crate) async fn commit(
        &self,
        api: &ClientApi,
        q: &QueueRef,
        offset: i64,
        timeout: Duration,
    ) -> bool {
        let header = UpdateConsumerOffsetRequestHeader {
            consumer_group: self.group.clone(),
            topic: self.topic.clone(),
            queue_id: q.id,
            commit_offset: offset,
        };
        match api.update_consumer_offset(&q.addr, &header, timeout).await {
            Ok(()) => true,
            Err(e) => {
                warn!(group = %self.group, queue = q.id, cause = %e, "committing an offset failed");
                false
            }
        }
    }

    /// Whether nothing of this state is needed any more: no message handed out and not
    /// acknowledged, no receive pulling, and every queue's next offset committed, so that a
    /// receive without it starts where this one would have.
    pub(crate) fn settled(&self) -> bool {
        self.uncommitted().is_some_and(|left| left.is_empty())
    }

    /// For a state with nothing handed out and no receive pulling: the queues whose next
    /// offset is past the committed one (skipped messages that match no tag), each with that
    /// offset. `None` while anything is in flight.
    pub(crate) fn uncommitted(&self) -> Option<Vec<(QueueRef, i64)>> {
        let states = self.queues.lock();
        if states.values().any(|s| !s.inflight.is_empty() || s.pulling) {
            return None;
        }
        Some(
            states
                .iter()
                .filter_map(|(q, s)| Some((q.clone(), s.next.filter(|n| *n > s.committed)?)))
                .collect(),
        )
    }

    /// Notes that `offset` of `q` was committed to its broker.
    pub(crate) fn committed_to(&self, q: &QueueRef, offset: i64) {
        if let Some(s) = self.queues.lock().get_mut(q) {
            s.committed = s.committed.max(offset);
        }
    }

    /// Moves `m` to the group's dead-letter queue: a send-back with no reconsume left.
    pub(crate) async fn to_dead_letters(
        &self,
        api: &ClientApi,
        q: &QueueRef,
        m: &MessageExt,
        max_attempts: u32,
        timeout: Duration,
    ) -> bool {
        let header = ConsumerSendMsgBackRequestHeader {
            offset: m.commit_log_offset,
            group: self.group.clone(),
            delay_level: 0,
            origin_msg_id: m.message.uniq_key().map(str::to_owned),
            origin_topic: Some(self.topic.clone()),
            unit_mode: false,
            // The broker moves it to %DLQ%group when its reconsume times reach this.
            max_reconsume_times: Some(0),
        };
        match api.consumer_send_back(&q.addr, &header, timeout).await {
            Ok(()) => {
                debug!(group = %self.group, attempts = max_attempts, "message moved to the dead-letter queue");
                true
            }
            Err(e) => {
                warn!(group = %self.group, cause = %e, "moving a message to the dead-letter queue failed");
                false
            }
        }
    }
}

/// The pull the proxy makes for `group`: up to `max` messages of `topic`'s queue `queue.0`
/// from offset `queue.1` matching tag `expression`, the broker holding it up to `wait` when
/// there are none yet.
pub(crate) fn tag_pull(
    group: &str,
    topic: &str,
    queue: (i32, i64),
    max: i32,
    expression: &str,
    wait: Duration,
) -> PullMessageRequestHeader {
    let mut header = PullMessageRequestHeader {
        consumer_group: group.to_owned(),
        topic: topic.to_owned(),
        queue_id: queue.0,
        queue_offset: queue.1,
        max_msg_nums: max,
        // The subscription travels with the pull: Java brokers otherwise want the group
        // registered by a heartbeat, and the proxy's groups are not.
        sys_flag: pull_sys_flag::SUBSCRIPTION,
        commit_offset: 0,
        suspend_timeout_millis: 0,
        subscription: Some(expression.to_owned()),
        sub_version: 0,
        expression_type: Some("TAG".into()),
        max_msg_bytes: None,
    };
    if !wait.is_zero() {
        header.sys_flag |= pull_sys_flag::SUSPEND;
        header.suspend_timeout_millis = i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
    }
    header
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue() -> QueueRef {
        QueueRef {
            broker: "broker-a".into(),
            addr: "127.0.0.1:10911".into(),
            id: 0,
        }
    }

    /// What the first receive of `owner` hands out of one pulled message, renewed for it.
    fn handed_out_renewed(state: &GroupTopic, owner: &str) -> Vec<Delivery> {
        let m = MessageExt {
            queue_offset: 5,
            ..MessageExt::default()
        };
        let lease = Lease::Renewed {
            owner: owner.into(),
            shown: Duration::from_secs(60),
        };
        state.hand_out(vec![(queue(), 6, vec![m])], &lease)
    }

    /// Expired messages a receive with a 30 s invisible time would hand out again now.
    fn expired_now(state: &GroupTopic) -> Vec<Delivery> {
        let lease = Lease::For(Duration::from_secs(30));
        let (again, _, claimed, _) = state.claim(&[queue()], 32, &lease, 17, false);
        state.release(&claimed.into_iter().map(|(q, _)| q).collect::<Vec<_>>());
        again
    }

    #[tokio::test(start_paused = true)]
    async fn a_renewed_message_stays_invisible_until_its_client_goes() {
        let state = GroupTopic::new("g".into(), "t".into());
        let out = handed_out_renewed(&state, "client-1");
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].invisible, Duration::from_secs(60));
        // Far past the invisible time the client was told: still renewed.
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert!(expired_now(&state).is_empty());
        // Another client's departure changes nothing.
        state.client_gone("client-2");
        tokio::time::advance(INVISIBLE_WHEN_CLEARED).await;
        assert!(expired_now(&state).is_empty());
        // Its own: handed out again shortly after, as a second attempt.
        state.client_gone("client-1");
        assert!(expired_now(&state).is_empty());
        tokio::time::advance(INVISIBLE_WHEN_CLEARED).await;
        let again = expired_now(&state);
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].attempt, 2);
        assert_eq!(again[0].message.queue_offset, 5);
    }

    #[tokio::test(start_paused = true)]
    async fn a_renewal_ends_after_its_longest_time_or_when_the_client_sets_one() {
        let state = GroupTopic::new("g".into(), "t".into());
        handed_out_renewed(&state, "client-1");
        tokio::time::advance(RENEW_MAX).await;
        assert_eq!(expired_now(&state).len(), 1);

        let state = GroupTopic::new("g".into(), "t".into());
        let out = handed_out_renewed(&state, "client-1");
        // A push consumer whose listener failed asks for redelivery after a backoff.
        let handle = state
            .change_invisible(&out[0].handle, Duration::from_secs(2))
            .unwrap();
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(expired_now(&state).is_empty());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(expired_now(&state).len(), 1);
        // The handle of the change is stale now: the message was handed out again.
        assert!(state.ack(&handle).is_err());
    }
}
