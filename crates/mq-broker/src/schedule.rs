//! Delay levels (messages wait in `SCHEDULE_TOPIC_XXXX`, queue `level − 1`, until their level
//! elapses) and consumer send-back to `%RETRY%group`, or `%DLQ%group` past max reconsume times.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use mq_client_api::ResponseCode;
use mq_client_api::body::TopicConfig;
use mq_client_api::header::{CommandHeader, ConsumerSendMsgBackRequestHeader};
use mq_client_api::message::{MessageExt, decode_record, property, sys_flag};
use mq_remoting::RemotingCommand;
use tracing::{Instrument, warn};

use mq_client_api::answer::respond;

use crate::broker::CoreHandle;
use crate::store::{GetStatus, PutResult, now_ms};
use crate::transaction::HALF_TOPIC;

/// The topic delayed messages wait in.
pub(crate) const SCHEDULE_TOPIC: &str = "SCHEDULE_TOPIC_XXXX";
/// The offset-table group that records how far each delay queue was delivered.
const SCHEDULE_GROUP: &str = "%SCHEDULE%";
const SCHEDULE_TICK: Duration = Duration::from_millis(100);

impl CoreHandle {
    /// Stores a message sent by a client, diverting it as [`CoreHandle::route_message`] says.
    ///
    /// # Errors
    /// Store errors, and [`io::ErrorKind::InvalidInput`] with the reason for a timer message
    /// that cannot be kept.
    pub(crate) async fn store_message(&self, mut ext: MessageExt) -> io::Result<PutResult> {
        self.route_message(&mut ext)
            .map_err(|remark| io::Error::new(io::ErrorKind::InvalidInput, remark))?;
        self.0.store.put(ext, self.0.addr).await
    }

    /// Where a client's message is stored: half messages go to the transaction topic, delayed
    /// messages to the schedule topic and timer messages to the timer topic (keeping
    /// `REAL_TOPIC` / `REAL_QID`). A delay level wins over a timer, as on a Java 5.x broker.
    ///
    /// # Errors
    /// The remark of the MESSAGE_ILLEGAL answer for a timer message that cannot be kept.
    pub(crate) fn route_message(&self, ext: &mut MessageExt) -> Result<(), String> {
        let tx = sys_flag::transaction_value(ext.sys_flag);
        if tx == sys_flag::TRANSACTION_PREPARED_TYPE {
            divert(ext, HALF_TOPIC, 0);
        } else if tx != sys_flag::TRANSACTION_ROLLBACK_TYPE {
            let levels = self.0.config.delay_levels.len() as i32;
            let level = ext.message.delay_level().min(levels);
            if level > 0 {
                for timer in [
                    property::TIMER_DELIVER_MS,
                    property::TIMER_DELAY_SEC,
                    property::TIMER_DELAY_MS,
                ] {
                    ext.message.clear_property(timer);
                }
                ext.message
                    .set_property(property::DELAY_TIME_LEVEL, level.to_string());
                divert(ext, SCHEDULE_TOPIC, level - 1);
            } else {
                self.route_timer(ext)?;
            }
        }
        Ok(())
    }

    pub(crate) fn spawn_scheduler(self: &Arc<Self>) {
        self.spawn_every(
            SCHEDULE_TICK,
            tracing::debug_span!("delay_scheduler"),
            |c| async move {
                for level in 1..=c.0.config.delay_levels.len() as i32 {
                    if let Err(e) = c.deliver_due(level).await {
                        warn!(level, cause = %e, "delivering delayed messages failed");
                    }
                }
            },
        );
    }

    /// Runs `job` every `period` (the first at once) until the broker shuts down, in `span`;
    /// a run in progress completes before the task stops.
    pub(crate) fn spawn_every<F, Fut>(
        self: &Arc<Self>,
        period: Duration,
        span: tracing::Span,
        job: F,
    ) where
        F: Fn(Arc<Self>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let c = Arc::clone(self);
        self.0.tasks.spawn(
            async move {
                let mut tick = tokio::time::interval(period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        () = c.0.token.cancelled() => break,
                        _ = tick.tick() => job(Arc::clone(&c)).await,
                    }
                }
            }
            .instrument(span),
        );
    }

    /// Moves every message of `level` whose delay has elapsed to its real topic.
    async fn deliver_due(&self, level: i32) -> io::Result<()> {
        let queue = level - 1;
        let delay = self.0.config.delay_levels[(level - 1) as usize];
        let delay_ms = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
        loop {
            let offset = self
                .0
                .offsets
                .get(SCHEDULE_GROUP, SCHEDULE_TOPIC, queue)
                .unwrap_or(0);
            let got = self.0.store.get(SCHEDULE_TOPIC, queue, offset, 32, None)?;
            if got.status != GetStatus::Found {
                return Ok(());
            }
            let mut body = got.body.clone();
            let mut delivered = 0;
            while let Ok(mut ext) = decode_record(&mut body, false, false) {
                if now_ms() < ext.store_timestamp.saturating_add(delay_ms) {
                    break;
                }
                undivert(&mut ext);
                ext.message.clear_property(property::DELAY_TIME_LEVEL);
                self.0.store.put(ext, self.0.addr).await?;
                delivered += 1;
                self.0
                    .offsets
                    .commit(SCHEDULE_GROUP, SCHEDULE_TOPIC, queue, offset + delivered);
            }
            if delivered < got.count as i64 || delivered == 0 {
                return Ok(());
            }
        }
    }

    /// CONSUMER_SEND_MSG_BACK: the consumer failed a message; schedule a retry or give up to
    /// the DLQ.
    pub(crate) async fn send_back(self: &Arc<Self>, req: &RemotingCommand) -> RemotingCommand {
        let h = match ConsumerSendMsgBackRequestHeader::decode(&req.ext_fields) {
            Ok(h) => h,
            Err(e) => return respond(req, ResponseCode::SYSTEM_ERROR, Some(e.to_string())),
        };
        let record = match self.0.store.read_record(h.offset) {
            Ok(r) => r,
            Err(e) => {
                return respond(
                    req,
                    ResponseCode::SYSTEM_ERROR,
                    Some(format!("look message by offset failed, {}: {e}", h.offset)),
                );
            }
        };
        let Ok(original) = decode_record(&mut record.clone(), false, false) else {
            return respond(
                req,
                ResponseCode::SYSTEM_ERROR,
                Some("stored record is unreadable".into()),
            );
        };
        let mut ext = original.clone();
        let origin_topic = original
            .message
            .property(property::RETRY_TOPIC)
            .map_or_else(|| original.message.topic.clone(), str::to_owned);
        ext.message
            .set_property(property::RETRY_TOPIC, origin_topic);
        let origin_id = h
            .origin_msg_id
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| original.offset_msg_id());
        ext.message
            .set_property(property::ORIGIN_MESSAGE_ID, origin_id);
        let max = h
            .max_reconsume_times
            .unwrap_or(self.0.config.max_reconsume_times);
        let to_dlq = h.delay_level < 0 || original.reconsume_times >= max;
        let topic = if to_dlq {
            mq_client_api::names::dlq_topic(&h.group)
        } else {
            mq_client_api::names::retry_topic(&h.group)
        };
        if self.0.topics.get(&topic).is_none() {
            if let Err(e) = self.0.topics.put(TopicConfig::new(topic.clone(), 1)) {
                return respond(req, ResponseCode::SYSTEM_ERROR, Some(e.to_string()));
            }
            self.spawn_register();
        }
        ext.message.topic = topic;
        ext.queue_id = 0;
        ext.reconsume_times = original.reconsume_times + 1;
        ext.message.clear_property(property::DELAY_TIME_LEVEL);
        let stored = if to_dlq {
            self.0.store.put(ext, self.0.addr).await
        } else {
            let level = if h.delay_level == 0 {
                3 + original.reconsume_times
            } else {
                h.delay_level
            };
            ext.message
                .set_property(property::DELAY_TIME_LEVEL, level.to_string());
            self.store_message(ext).await
        };
        match stored {
            Ok(_) => respond(req, ResponseCode::SUCCESS, None),
            Err(e) => respond(req, ResponseCode::SYSTEM_ERROR, Some(e.to_string())),
        }
    }
}

/// Parks a message in `topic`/`queue_id`, remembering where it really belongs.
pub(crate) fn divert(ext: &mut MessageExt, topic: &str, queue_id: i32) {
    let real_topic = std::mem::replace(&mut ext.message.topic, topic.to_owned());
    ext.message.set_property(property::REAL_TOPIC, real_topic);
    ext.message
        .set_property(property::REAL_QUEUE_ID, ext.queue_id.to_string());
    ext.queue_id = queue_id;
}

/// Restores a diverted message's real topic and queue.
pub(crate) fn undivert(ext: &mut MessageExt) {
    if let Some(topic) = ext.message.clear_property(property::REAL_TOPIC) {
        ext.message.topic = topic;
    }
    if let Some(q) = ext
        .message
        .clear_property(property::REAL_QUEUE_ID)
        .and_then(|q| q.parse().ok())
    {
        ext.queue_id = q;
    }
}
