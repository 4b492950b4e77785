//! POP_MESSAGE, ACK_MESSAGE and CHANGE_MESSAGE_INVISIBLETIME: RocketMQ 5's pop consumption,
//! which Apache RocketMQ's gRPC proxy and Java's pop consumers use. The bookkeeping is in
//! [`crate::pop`]; here the requests are checked, the store read and the answers written.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::BytesMut;
use futures_util::future::select_all;
use mq_client_api::ResponseCode;
use mq_client_api::answer::{respond, respond_with};
use mq_client_api::header::{
    AckMessageRequestHeader, ChangeInvisibleTimeRequestHeader, ChangeInvisibleTimeResponseHeader,
    CommandHeader, POP_ORDER_REVIVE_QUEUE, PopExtraInfo, PopMessageRequestHeader,
    PopMessageResponseHeader, consume_init_mode, pop_topic_mark,
};
use mq_client_api::message::{decode_record, encode_record};
use mq_client_api::names::{expression_tags, is_retry_topic};
use mq_client_api::validate::java_hash;
use mq_client_api::wire_time::{
    duration_millis, from_millis, millis_duration, now_millis, to_millis,
};
use mq_remoting::RemotingCommand;
use tokio::time::Instant;
use tracing::debug;

use super::CoreHandle;
use crate::pop::{QueuePop, Stale};
use crate::store::GetStatus;

/// Most messages one pop may ask for (Java's limit).
const MAX_POP_NUMS: i32 = 32;

/// What one pass over the queues found.
#[derive(Default)]
struct Popped {
    body: BytesMut,
    count: usize,
    start_offset_info: String,
    msg_offset_info: String,
    rest: i64,
    /// When the next message in flight becomes visible again (a pop waiting for messages
    /// wakes then).
    next_visible: Option<SystemTime>,
}

/// The pop's request, read once.
struct PopRequest {
    group: String,
    topic: String,
    queues: Vec<i32>,
    max: usize,
    invisible: Duration,
    order: bool,
    init_mode: i32,
    tags: Option<Vec<i64>>,
}

impl CoreHandle {
    /// POP_MESSAGE: up to `maxMsgNums` messages of the group from one queue or all, those
    /// visible again first; parked (long polling) up to `pollTime` when there are none.
    pub(crate) async fn pop(self: &Arc<Self>, req: RemotingCommand) -> RemotingCommand {
        let h = decode_or_answer!(PopMessageRequestHeader, req);
        let me = self.0.addr;
        if h.born_time > 0 && now_millis() - h.born_time - h.poll_time > 500 {
            return respond(
                &req,
                ResponseCode::POLLING_TIMEOUT,
                Some(format!("the broker[{me}] pop message is timeout too much")),
            );
        }
        if h.max_msg_nums > MAX_POP_NUMS {
            return respond(
                &req,
                ResponseCode::INVALID_PARAMETER,
                Some(format!(
                    "the broker[{me}] pop message's num is greater than {MAX_POP_NUMS}"
                )),
            );
        }
        // Queue -1 is any queue: the topic needs one at least.
        let tc = match self.readable_queue(
            &h.topic,
            if h.queue_id == -1 { 0 } else { h.queue_id },
            "peeking",
            ResponseCode::INVALID_PARAMETER,
        ) {
            Ok(tc) => tc,
            Err((code, remark)) => return respond(&req, code, Some(remark)),
        };
        if h.exp_type.as_deref() == Some("SQL92") {
            return respond(
                &req,
                ResponseCode::SYSTEM_ERROR,
                Some("The broker does not support consumer to filter message by SQL92".into()),
            );
        }
        let queues = if h.queue_id >= 0 {
            vec![h.queue_id]
        } else {
            let n = usize::try_from(tc.read_queue_nums).unwrap_or(0);
            let start = self.0.pop.next_start(n);
            (0..n)
                .filter_map(|i| i32::try_from((start + i) % n).ok())
                .collect()
        };
        let order = h.is_order();
        let p = PopRequest {
            tags: h
                .exp
                .as_deref()
                .and_then(expression_tags)
                .map(|tags| tags.map(|t| i64::from(java_hash(t))).collect()),
            group: h.consumer_group,
            topic: h.topic,
            queues,
            max: usize::try_from(h.max_msg_nums.clamp(1, MAX_POP_NUMS)).unwrap_or(1),
            invisible: millis_duration(h.invisible_time),
            order,
            init_mode: h.init_mode,
        };
        let deadline = Instant::now() + millis_duration(h.poll_time);
        // Only a pop that may park watches its queues.
        let watches: Vec<_> = if h.poll_time > 0 {
            p.queues
                .iter()
                .map(|&q| self.0.store.watch_queue(&p.topic, q))
                .collect()
        } else {
            Vec::new()
        };
        loop {
            // Registered before reading, so an append racing with the read wakes the wait.
            let mut appended: Vec<_> = watches.iter().map(|w| Box::pin(w.notified())).collect();
            for n in &mut appended {
                n.as_mut().enable();
            }
            // Checkpoint times are whole milliseconds on the wire: keep them so here too, so
            // that an ack's time matches the one handed out.
            let now_ms = now_millis();
            let popped = match self.pop_once(&p, from_millis(now_ms)) {
                Ok(popped) => popped,
                Err(e) => return respond(&req, ResponseCode::SYSTEM_ERROR, Some(e)),
            };
            let now = Instant::now();
            if popped.count == 0 && !appended.is_empty() && now < deadline {
                // Wake at an append, when something in flight becomes visible again, or at
                // the end of the poll time.
                let wake = wake_at(popped.next_visible, SystemTime::now(), now, deadline);
                tokio::select! {
                    () = self.0.token.cancelled() => {}
                    _ = tokio::time::timeout_at(wake, select_all(appended)) => continue,
                }
            }
            let mut answer = respond(
                &req,
                if popped.count > 0 {
                    ResponseCode::SUCCESS
                } else {
                    ResponseCode::PULL_NOT_FOUND
                },
                None,
            );
            PopMessageResponseHeader {
                pop_time: now_ms,
                invisible_time: duration_millis(p.invisible),
                revive_qid: if order { POP_ORDER_REVIVE_QUEUE } else { 0 },
                rest_num: popped.rest,
                start_offset_info: Some(popped.start_offset_info),
                msg_offset_info: Some(popped.msg_offset_info),
                order_count_info: None,
            }
            .encode(&mut answer.ext_fields);
            if popped.count == 0 {
                answer.remark = Some("NO_MESSAGE_IN_QUEUE".into());
                return answer;
            }
            return answer.with_body(popped.body.freeze());
        }
    }

    /// One pass over the request's queues at `now`.
    fn pop_once(&self, p: &PopRequest, now: SystemTime) -> Result<Popped, String> {
        let mut out = Popped::default();
        for &q in &p.queues {
            if out.count >= p.max {
                break;
            }
            let mut positions = self.0.pop.lock();
            let qp = positions.queue((p.group.clone(), p.topic.clone(), q), || {
                self.pop_start(&p.group, &p.topic, q, p.init_mode)
            });
            let offsets = self.pop_queue(p, q, qp, now, p.max - out.count, &mut out.body)?;
            self.0.offsets.commit(&p.group, &p.topic, q, qp.committed());
            out.rest += (self.0.store.max_offset(&p.topic, q) - qp.cursor).max(0);
            out.next_visible = match (out.next_visible, qp.next_visible()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            drop(positions);
            if let Some(&first) = offsets.first() {
                out.count += offsets.len();
                let mark = pop_topic_mark(&p.topic);
                for info in [&mut out.start_offset_info, &mut out.msg_offset_info] {
                    if !info.is_empty() {
                        info.push(';');
                    }
                }
                let _ = write!(out.start_offset_info, "{mark} {q} {first}");
                let _ = write!(out.msg_offset_info, "{mark} {q} ");
                for (i, o) in offsets.iter().enumerate() {
                    let sep = if i == 0 { "" } else { "," };
                    let _ = write!(out.msg_offset_info, "{sep}{o}");
                }
            }
        }
        Ok(out)
    }

    /// Pops up to `room` messages of queue `q` into `body`: those visible again first (an
    /// orderly pop takes only those while it has any), then new ones. Returns their offsets
    /// in the body's order.
    fn pop_queue(
        &self,
        p: &PopRequest,
        q: i32,
        qp: &mut QueuePop,
        now: SystemTime,
        room: usize,
        body: &mut BytesMut,
    ) -> Result<Vec<i64>, String> {
        let mut offsets = Vec::new();
        if p.order && qp.held(now) {
            return Ok(offsets);
        }
        let store = &self.0.store;
        for again in qp.visible_again(now, room) {
            let got = store
                .get(&p.topic, q, again.offset, 1, None)
                .map_err(|e| e.to_string())?;
            if got.status != GetStatus::Found {
                // Retention removed it: nothing to hand out again.
                qp.drop_offset(again.offset);
                continue;
            }
            // The count a consumer sees (and a proxy compares with its max attempts) grows
            // with each redelivery.
            let mut record = got.body.clone();
            let mut ext = decode_record(&mut record, false, false).map_err(|e| e.to_string())?;
            ext.reconsume_times = ext.reconsume_times.saturating_add(again.redeliveries + 1);
            body.extend_from_slice(&encode_record(&ext).map_err(|e| e.to_string())?);
            qp.popped(again.offset, now, p.invisible);
            offsets.push(again.offset);
        }
        if (p.order && !offsets.is_empty()) || qp.full() || offsets.len() >= room {
            return Ok(offsets);
        }
        let room = room - offsets.len();
        for _ in 0..2 {
            let got = store
                .get(&p.topic, q, qp.cursor, room, p.tags.as_deref())
                .map_err(|e| e.to_string())?;
            match got.status {
                GetStatus::Found => {
                    let mut rest = got.body.clone();
                    while !rest.is_empty() {
                        let start = rest.clone();
                        let ext = decode_record(&mut rest, false, false)
                            .map_err(|e| format!("stored record is unreadable: {e}"))?;
                        body.extend_from_slice(&start[..start.len() - rest.len()]);
                        qp.popped(ext.queue_offset, now, p.invisible);
                        offsets.push(ext.queue_offset);
                    }
                    qp.cursor = got.next_begin_offset;
                }
                GetStatus::NoMatchedMessage => qp.cursor = got.next_begin_offset,
                GetStatus::OffsetTooSmall => {
                    // Retention moved the queue's start past the cursor: go on from there.
                    qp.cursor = got.min_offset;
                    continue;
                }
                GetStatus::OffsetOverflowBadly => qp.cursor = got.max_offset,
                GetStatus::NoMessageInQueue | GetStatus::OffsetOverflowOne => {}
            }
            break;
        }
        Ok(offsets)
    }

    /// Where a group that never consumed queue `q` starts popping: its committed offset when
    /// it has one; else the queue's first message (`initMode` MIN, or a retry topic), or with
    /// MAX its last one, unless the queue still holds its first message ever, which a Java
    /// broker reads from memory and starts at (`initPopOffsetByCheckMsgInMem`).
    fn pop_start(&self, group: &str, topic: &str, q: i32, init_mode: i32) -> i64 {
        if let Some(o) = self.0.offsets.get(group, topic, q) {
            return o;
        }
        let min = self.0.store.min_offset(topic, q);
        if init_mode == consume_init_mode::MIN || is_retry_topic(topic) || min <= 0 {
            min
        } else {
            (self.0.store.max_offset(topic, q) - 1).max(0)
        }
    }

    /// ACK_MESSAGE: the message its checkpoint names is consumed.
    pub(crate) fn ack(&self, req: &RemotingCommand) -> RemotingCommand {
        let h = decode_or_answer!(AckMessageRequestHeader, req);
        let ck = match self.checkpoint(&h.topic, h.queue_id, h.offset, &h.extra_info, true) {
            Ok(ck) => ck,
            Err((code, remark)) => return respond(req, code, Some(remark)),
        };
        let key = (h.consumer_group, h.topic, h.queue_id);
        let mut positions = self.0.pop.lock();
        if let Some(qp) = positions.get_mut(&key) {
            match qp.ack(h.offset, ck.popped_at()) {
                Ok(()) => self.0.offsets.commit(&key.0, &key.1, key.2, qp.committed()),
                // As a Java broker: an ack that finds nothing to acknowledge succeeds.
                Err(stale) => debug!(?key, offset = h.offset, ?stale, "ack of a stale checkpoint"),
            }
        }
        respond(req, ResponseCode::SUCCESS, None)
    }

    /// CHANGE_MESSAGE_INVISIBLETIME: the message its checkpoint names stays invisible for the
    /// given time from now; the answer carries its new checkpoint's times.
    pub(crate) fn change_invisible_time(&self, req: &RemotingCommand) -> RemotingCommand {
        let h = decode_or_answer!(ChangeInvisibleTimeRequestHeader, req);
        let ck = match self.checkpoint(&h.topic, h.queue_id, h.offset, &h.extra_info, false) {
            Ok(ck) => ck,
            Err((code, remark)) => return respond(req, code, Some(remark)),
        };
        let invisible = millis_duration(h.invisible_time);
        let now_ms = now_millis();
        let key = (h.consumer_group, h.topic, h.queue_id);
        let mut positions = self.0.pop.lock();
        let changed = positions
            .get_mut(&key)
            .map_or(Err(Stale::NotInFlight), |qp| {
                qp.change_invisible(h.offset, ck.popped_at(), from_millis(now_ms), invisible)
            });
        drop(positions);
        match changed {
            Ok(popped_at) => respond_with(
                req,
                &ChangeInvisibleTimeResponseHeader {
                    pop_time: to_millis(popped_at),
                    invisible_time: duration_millis(invisible),
                    revive_qid: ck.revive_qid,
                },
            ),
            Err(stale) => respond(
                req,
                ResponseCode::NO_MESSAGE,
                Some(format!(
                    "the message at {}@{} offset {} is not in flight for group {} with this \
                     checkpoint: {}",
                    key.1,
                    key.2,
                    h.offset,
                    key.0,
                    match stale {
                        Stale::NotInFlight =>
                            "acknowledged already, or popped before the broker restarted",
                        Stale::Superseded =>
                            "it was popped again or its invisible time changed since",
                    }
                )),
            ),
        }
    }

    /// The checks an ack and a change of invisible time share (a Java broker's remarks): the
    /// topic, the queue, the offset within the queue (its max included for an ack) and the
    /// checkpoint text.
    fn checkpoint(
        &self,
        topic: &str,
        queue_id: i32,
        offset: i64,
        extra_info: &str,
        max_included: bool,
    ) -> Result<PopExtraInfo, (ResponseCode, String)> {
        self.readable_queue(topic, queue_id, "peeking", ResponseCode::MESSAGE_ILLEGAL)?;
        let min = self.0.store.min_offset(topic, queue_id);
        let max = self.0.store.max_offset(topic, queue_id);
        if offset < min || offset > max || (offset == max && !max_included) {
            return Err((
                ResponseCode::NO_MESSAGE,
                format!(
                    "offset is illegal, key:{topic}@{queue_id}, commit:{offset}, store:{min}~{max}"
                ),
            ));
        }
        PopExtraInfo::parse(extra_info).map_err(|e| (ResponseCode::MESSAGE_ILLEGAL, e.to_string()))
    }
}

/// When a pop that found nothing wakes to look again: when the first message in flight
/// becomes visible (`next_visible`), or at `deadline`. A time that passed while the pop looked
/// (the pop reads the clock in whole milliseconds) means a millisecond from `now`, not the
/// deadline: such a pop waited out its whole poll time for a message visible all along.
fn wake_at(
    next_visible: Option<SystemTime>,
    now: SystemTime,
    now_instant: Instant,
    deadline: Instant,
) -> Instant {
    next_visible.map_or(deadline, |t| {
        let after = t.duration_since(now).unwrap_or(Duration::from_millis(1));
        deadline.min(now_instant + after)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pop_looks_again_when_a_message_becomes_visible_even_one_visible_already() {
        let (now, at) = (SystemTime::now(), Instant::now());
        let deadline = at + Duration::from_secs(15);
        let ms = Duration::from_millis;
        assert_eq!(wake_at(None, now, at, deadline), deadline);
        assert_eq!(wake_at(Some(now + ms(20)), now, at, deadline), at + ms(20));
        assert_eq!(
            wake_at(Some(now - ms(1)), now, at, deadline),
            at + ms(1),
            "visible since the pop looked: look again at once"
        );
        assert_eq!(wake_at(Some(now + ms(60_000)), now, at, deadline), deadline);
    }
}
