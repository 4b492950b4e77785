//! Timer messages (RocketMQ 5): a message that names a delivery time (`TIMER_DELIVER_MS`) or a
//! wait (`TIMER_DELAY_SEC`, `TIMER_DELAY_MS`) waits in `rmq_sys_wheel_timer`, queue 0, with the
//! time it is due in `TIMER_OUT_MS`, and is moved to its real topic once that time has come.
//! A recall (RECALL_MESSAGE, 5.3) stores a deletion for it in the same queue.
//!
//! The queue holds arrivals in order, not due times: the broker keeps the due times of the
//! waiting messages in memory, read again from the queue at start. When one is delivered a
//! small record in the same queue says so, so that a restart delivers it only once (a crash
//! between the delivery and that record delivers it again: at least once, as on a Java broker).
//! The offset-table entry of group `%TIMER%` remembers the oldest record still waiting, where
//! the next start reads from.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use mq_client_api::ResponseCode;
use mq_client_api::answer::respond;
use mq_client_api::header::{
    CommandHeader, RecallMessageRequestHeader, RecallMessageResponseHeader,
};
use mq_client_api::message::{Message, MessageExt, RecallHandle, decode_record, property};
use mq_client_api::wire_time;
use mq_remoting::{RemotingCommand, RequestContext};
use tracing::warn;

use crate::broker::CoreHandle;
use crate::schedule::{divert, undivert};
use crate::store::{GetStatus, now_ms};

/// The topic timer messages wait in (Java `TimerMessageStore.TIMER_TOPIC`).
pub(crate) const TIMER_TOPIC: &str = "rmq_sys_wheel_timer";
/// The offset-table group that remembers where the next start reads the timer queue from.
const TIMER_GROUP: &str = "%TIMER%";
/// Due times are kept to the second, rounded down (Java `timerPrecisionMs`).
const PRECISION_MS: i64 = 1000;
const TIMER_TICK: Duration = Duration::from_millis(100);
/// On a record of ours in the timer queue: the queue offset of a timer message delivered.
const TIMER_DONE_OFFSET: &str = "TIMER_DONE_OFFSET";
/// The tag of a recall's deletion record (as Java's).
const RECALL_TAG: &str = "_RECALL_TAG_";
/// Records read from the timer queue at a time.
const SCAN_BATCH: usize = 64;

/// The timer messages waiting.
#[derive(Default)]
pub(crate) struct Timers(parking_lot::Mutex<Waiting>);

#[derive(Default)]
struct Waiting {
    /// The next offset of the timer queue to read.
    scanned: Option<i64>,
    /// (due ms, queue offset) of each waiting message.
    by_due: BTreeSet<(i64, i64)>,
    /// The same, by queue offset: the oldest is where a restart reads from.
    by_offset: BTreeMap<i64, i64>,
}

impl Waiting {
    fn insert(&mut self, due: i64, offset: i64) {
        self.by_due.insert((due, offset));
        self.by_offset.insert(offset, due);
    }

    fn remove(&mut self, due: i64, offset: i64) {
        self.by_due.remove(&(due, offset));
        self.by_offset.remove(&offset);
    }

    /// Where a restart must read from: the oldest waiting message, or past everything read.
    fn restart_offset(&self) -> Option<i64> {
        self.by_offset.keys().next().copied().or(self.scanned)
    }
}

/// The key a deletion names its message by (Java `TimerMessageStore.buildDeleteKey`).
fn delete_key(real_topic: &str, unique_id: &str) -> String {
    format!("{real_topic}+{unique_id}")
}

/// Why a timer message is refused (Java's remark for `WHEEL_TIMER_MSG_ILLEGAL`).
fn illegal(max_delay: Duration) -> String {
    format!(
        "timer message illegal, the delay time should not be bigger than the max delay {}ms; \
         or if set del msg, the delay time should be bigger than the current time",
        max_delay.as_millis()
    )
}

impl CoreHandle {
    /// Parks a timer message in the timer queue, as a 5.x broker does: the due time from
    /// `TIMER_DELAY_SEC`, else `TIMER_DELAY_MS` (both from now), else `TIMER_DELIVER_MS`; a
    /// time already past is stored as a plain message. The caller has ruled out delay levels
    /// and half or rolled-back messages.
    ///
    /// # Errors
    /// The remark of the MESSAGE_ILLEGAL answer: a time that is not a number, beyond the
    /// longest wait, or a deletion for a time already past.
    pub(crate) fn route_timer(&self, ext: &mut MessageExt) -> Result<(), String> {
        let m = &ext.message;
        // Most messages are not timers: one lookup, nothing more.
        if !m.is_timer() || m.topic == TIMER_TOPIC || m.property(property::TIMER_OUT_MS).is_some() {
            return Ok(());
        }
        let max_delay = self.0.config.timer_max_delay;
        let now = now_ms();
        let due = match m.timer_due(wire_time::from_millis(now)) {
            Ok(Some(due)) => wire_time::to_millis(due),
            // Only a deletion key, no time: a plain message, as on a Java broker.
            Ok(None) => return Ok(()),
            Err(_) => return Err(illegal(max_delay)),
        };
        if due <= now {
            if m.property(property::TIMER_DEL_UNIQKEY).is_some() {
                return Err(illegal(max_delay));
            }
            return Ok(());
        }
        if due - now > wire_time::duration_millis(max_delay) {
            return Err(illegal(max_delay));
        }
        // Rounded down to the second; a whole second is kept one earlier, as Java does.
        let kept = if due % PRECISION_MS == 0 {
            due - PRECISION_MS
        } else {
            due / PRECISION_MS * PRECISION_MS
        };
        ext.message
            .set_property(property::TIMER_OUT_MS, kept.to_string());
        divert(ext, TIMER_TOPIC, 0);
        Ok(())
    }

    /// The recall handle for a message [`CoreHandle::route_timer`] parked (none for a retry,
    /// or a message without a unique id).
    pub(crate) fn recall_handle(&self, ext: &MessageExt) -> Option<String> {
        let m = &ext.message;
        if m.topic != TIMER_TOPIC {
            return None;
        }
        let topic = m.property(property::REAL_TOPIC)?;
        let kept: i64 = m.property(property::TIMER_OUT_MS)?.parse().ok()?;
        if mq_client_api::names::is_retry_topic(topic) {
            return None;
        }
        Some(
            RecallHandle {
                topic: topic.to_owned(),
                broker_name: self.0.config.broker_name.clone(),
                // One past the time kept, so that rounding it down finds it again.
                deliver_time: wire_time::from_millis(kept + 1),
                message_id: m.uniq_key()?.to_owned(),
            }
            .encode(),
        )
    }

    /// RECALL_MESSAGE: stores a deletion for a timer message that is still to come.
    pub(crate) async fn recall(
        self: &Arc<Self>,
        ctx: &RequestContext,
        req: &RemotingCommand,
    ) -> RemotingCommand {
        let h = match RecallMessageRequestHeader::decode(&req.ext_fields) {
            Ok(h) => h,
            Err(e) => return mq_client_api::answer::header_error(req, &e),
        };
        let refuse = |code, remark: &str| respond(req, code, Some(remark.to_owned()));
        if !self.0.config.recall_enabled {
            return refuse(
                ResponseCode::NO_PERMISSION,
                "recall failed, operation is forbidden",
            );
        }
        if self.0.topics.get(&h.topic).is_none() {
            return refuse(
                ResponseCode::TOPIC_NOT_EXIST,
                &format!("recall failed, the topic[{}] not exist", h.topic),
            );
        }
        let handle = match RecallHandle::decode(&h.recall_handle) {
            Ok(handle) => handle,
            Err(e) => return refuse(ResponseCode::ILLEGAL_OPERATION, &e.to_string()),
        };
        if handle.topic != h.topic {
            return refuse(
                ResponseCode::ILLEGAL_OPERATION,
                "recall failed, topic not match",
            );
        }
        if handle.broker_name != self.0.config.broker_name {
            return refuse(
                ResponseCode::ILLEGAL_OPERATION,
                "recall failed, broker service not available",
            );
        }
        let at = wire_time::to_millis(handle.deliver_time);
        let left = at - now_ms();
        if left <= 0 || left >= wire_time::duration_millis(self.0.config.timer_max_delay) {
            return refuse(
                ResponseCode::ILLEGAL_OPERATION,
                "recall failed, timestamp invalid",
            );
        }
        let mut message =
            Message::new(&handle.topic, Bytes::from_static(b"0")).with_tags(RECALL_TAG);
        message.set_property(
            property::TIMER_DEL_UNIQKEY,
            delete_key(&handle.topic, &handle.message_id),
        );
        message.set_property(property::UNIQ_CLIENT_MESSAGE_ID_KEYIDX, &handle.message_id);
        message.set_property(property::TIMER_DELIVER_MS, at.to_string());
        if let Some(group) = h.producer_group.as_deref().filter(|g| !g.is_empty()) {
            message.set_property(property::PRODUCER_GROUP, group);
        }
        let deletion = MessageExt {
            message,
            queue_id: 0,
            born_timestamp: now_ms(),
            born_host: ctx
                .connection()
                .peer_socket_addr()
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
            ..MessageExt::default()
        };
        match self.store_message(deletion).await {
            Ok(_) => {
                let mut answer = respond(req, ResponseCode::SUCCESS, None);
                RecallMessageResponseHeader {
                    msg_id: handle.message_id,
                }
                .encode(&mut answer.ext_fields);
                answer
            }
            Err(e) => {
                warn!(cause = %e, "storing a recall failed");
                refuse(ResponseCode::SYSTEM_ERROR, "recall failed, execute error")
            }
        }
    }

    pub(crate) fn spawn_timers(self: &Arc<Self>) {
        self.spawn_every(TIMER_TICK, tracing::debug_span!("timers"), |c| async move {
            if let Err(e) = c.timer_tick().await {
                warn!(cause = %e, "delivering timer messages failed");
            }
        });
    }

    /// Reads what arrived in the timer queue, delivers what is due, and notes where a restart
    /// would read from.
    async fn timer_tick(&self) -> io::Result<()> {
        self.scan_timers()?;
        let delivered = self.deliver_due_timers().await;
        let restart = self.0.timers.0.lock().restart_offset();
        if let Some(offset) = restart {
            self.0.offsets.commit(TIMER_GROUP, TIMER_TOPIC, 0, offset);
        }
        delivered
    }

    /// Reads the timer queue from where it was last read (at start, from the oldest record
    /// that was still waiting).
    fn scan_timers(&self) -> io::Result<()> {
        let mut waiting = self.0.timers.0.lock();
        let mut next = match waiting.scanned {
            Some(n) => n,
            None => self.0.offsets.get(TIMER_GROUP, TIMER_TOPIC, 0).unwrap_or(0),
        };
        loop {
            let got = self.0.store.get(TIMER_TOPIC, 0, next, SCAN_BATCH, None)?;
            match got.status {
                GetStatus::Found => {}
                // Retention took the oldest records: read on from what is left.
                GetStatus::OffsetTooSmall => {
                    next = got.next_begin_offset;
                    continue;
                }
                _ => break,
            }
            let mut body = got.body.clone();
            while let Ok(ext) = decode_record(&mut body, false, false) {
                self.note_timer_record(&mut waiting, &ext);
            }
            next = got.next_begin_offset;
        }
        waiting.scanned = Some(next);
        Ok(())
    }

    /// One record of the timer queue: a message to wait for, or the news that one was
    /// delivered or recalled.
    fn note_timer_record(&self, waiting: &mut Waiting, ext: &MessageExt) {
        let m = &ext.message;
        let Some(due) = m
            .property(property::TIMER_OUT_MS)
            .and_then(|v| v.parse::<i64>().ok())
        else {
            warn!(
                offset = ext.queue_offset,
                "a timer record without its due time"
            );
            return;
        };
        if let Some(done) = m
            .property(TIMER_DONE_OFFSET)
            .and_then(|v| v.parse::<i64>().ok())
        {
            waiting.remove(due, done);
        } else if let Some(key) = m.property(property::TIMER_DEL_UNIQKEY) {
            // The message recalled waits for the same due time: read those to find it.
            let same_time: Vec<i64> = waiting
                .by_due
                .range((due, i64::MIN)..=(due, i64::MAX))
                .map(|&(_, offset)| offset)
                .collect();
            for offset in same_time {
                let recalled = self.timer_record(offset).is_some_and(|t| {
                    let real = t.message.property(property::REAL_TOPIC).unwrap_or_default();
                    t.message
                        .uniq_key()
                        .is_some_and(|id| delete_key(real, id) == key)
                });
                if recalled {
                    waiting.remove(due, offset);
                }
            }
        } else {
            waiting.insert(due, ext.queue_offset);
        }
    }

    /// The record at `offset` of the timer queue, if the store still holds it.
    fn timer_record(&self, offset: i64) -> Option<MessageExt> {
        let got = self.0.store.get(TIMER_TOPIC, 0, offset, 1, None).ok()?;
        if got.status != GetStatus::Found {
            return None;
        }
        decode_record(&mut got.body.clone(), false, false).ok()
    }

    /// Moves every message that is due to its real topic, each followed by the record that it
    /// was delivered.
    async fn deliver_due_timers(&self) -> io::Result<()> {
        loop {
            let now = now_ms();
            let next = self
                .0
                .timers
                .0
                .lock()
                .by_due
                .first()
                .copied()
                .filter(|&(due, _)| due <= now);
            let Some((due, offset)) = next else {
                return Ok(());
            };
            match self.timer_record(offset) {
                Some(mut ext) => {
                    let enqueued = ext.store_timestamp;
                    undivert(&mut ext);
                    let m = &mut ext.message;
                    m.set_property(property::TIMER_ENQUEUE_MS, enqueued.to_string());
                    m.set_property(property::TIMER_DEQUEUE_MS, now.to_string());
                    self.0.store.put(ext, self.0.addr).await?;
                }
                None => warn!(offset, "a timer message was removed before it was due"),
            }
            let mut done = Message::new(TIMER_TOPIC, Bytes::from_static(b"0"));
            done.set_property(property::TIMER_OUT_MS, due.to_string());
            done.set_property(TIMER_DONE_OFFSET, offset.to_string());
            let record = MessageExt {
                message: done,
                queue_id: 0,
                born_timestamp: now,
                born_host: self.0.addr,
                ..MessageExt::default()
            };
            // Delivered: not again in this run, even if its record cannot be stored (then only
            // a restart may deliver it again).
            self.0.timers.0.lock().remove(due, offset);
            self.0.store.put(record, self.0.addr).await?;
        }
    }
}
