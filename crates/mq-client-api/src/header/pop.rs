//! Pop consumption headers (RocketMQ 5: POP_MESSAGE, ACK_MESSAGE, CHANGE_MESSAGE_INVISIBLETIME)
//! and the checkpoint text ("extra info") that names one popped message.

use std::fmt;
use std::time::{Duration, SystemTime};

use super::{HeaderError, header};
use crate::wire_time::{duration_millis, from_millis, to_millis};

/// `PopMessageRequestHeader.initMode`: where a group that never consumed a queue starts.
pub mod consume_init_mode {
    /// From the queue's first message.
    pub const MIN: i32 = 0;
    /// From the queue's last message (Java: `ConsumeInitMode.MAX`).
    pub const MAX: i32 = 1;
}

/// The revive queue id that marks an orderly (FIFO) pop (Java: `KeyBuilder.POP_ORDER_REVIVE_QUEUE`).
pub const POP_ORDER_REVIVE_QUEUE: i32 = 999;

header! {
    /// Pop request (POP_MESSAGE, 200050): take up to `maxMsgNums` messages of a group, which
    /// stay invisible to the group's other pops for `invisibleTime` unless acknowledged.
    PopMessageRequestHeader("PopMessageRequestHeader") {
        /// Consumer group.
        req consumer_group: String => "consumerGroup",
        /// Topic.
        req topic: String => "topic",
        /// Queue id, or -1 for any queue of the topic on this broker.
        req queue_id: i32 => "queueId",
        /// Most messages to return (at most 32).
        req max_msg_nums: i32 => "maxMsgNums",
        /// How long the popped messages stay invisible, ms.
        req invisible_time: i64 => "invisibleTime",
        /// How long the broker may hold the request when nothing is there (long polling), ms.
        req poll_time: i64 => "pollTime",
        /// When the client sent it, ms since the epoch (0: unknown).
        req born_time: i64 => "bornTime",
        /// Where a group with no offset starts ([`consume_init_mode`]).
        req init_mode: i32 => "initMode",
        /// `TAG` or `SQL92`.
        opt exp_type: String => "expType",
        /// The subscription expression, e.g. `*` or `TagA || TagB`.
        opt exp: String => "exp",
        /// An orderly (FIFO) pop: a queue's next messages wait until the popped ones are
        /// acknowledged.
        opt order: bool => "order",
        /// The client's id for this attempt (retries of one receive share it).
        opt attempt_id: String => "attemptId",
    }
}

impl PopMessageRequestHeader {
    /// Whether this is an orderly pop.
    pub fn is_order(&self) -> bool {
        self.order == Some(true)
    }
}

header! {
    /// Pop response. The client builds each message's checkpoint ([`PopExtraInfo`]) from
    /// `startOffsetInfo` and `msgOffsetInfo`.
    PopMessageResponseHeader("PopMessageResponseHeader") {
        /// When the messages were popped, ms since the epoch.
        req pop_time: i64 => "popTime",
        /// How long they stay invisible, ms.
        req invisible_time: i64 => "invisibleTime",
        /// The revive queue ([`POP_ORDER_REVIVE_QUEUE`] for an orderly pop).
        req revive_qid: i32 => "reviveQid",
        /// Messages left in the queues after these.
        req rest_num: i64 => "restNum",
        /// `mark queueId checkpointOffset` per queue, `;`-separated.
        opt start_offset_info: String => "startOffsetInfo",
        /// `mark queueId offset,offset,…` per queue, `;`-separated, in the body's order.
        opt msg_offset_info: String => "msgOffsetInfo",
        /// `mark queueId count` per queue (orderly pops).
        opt order_count_info: String => "orderCountInfo",
    }
}

header! {
    /// Acknowledge one popped message (ACK_MESSAGE, 200051).
    AckMessageRequestHeader("AckMessageRequestHeader") {
        /// Consumer group.
        req consumer_group: String => "consumerGroup",
        /// Topic.
        req topic: String => "topic",
        /// Queue id.
        req queue_id: i32 => "queueId",
        /// The message's checkpoint ([`PopExtraInfo`]).
        req extra_info: String => "extraInfo",
        /// The message's queue offset.
        req offset: i64 => "offset",
    }
}

header! {
    /// Make a popped message invisible for another while, counted from now
    /// (CHANGE_MESSAGE_INVISIBLETIME, 200053).
    ChangeInvisibleTimeRequestHeader("ChangeInvisibleTimeRequestHeader") {
        /// Consumer group.
        req consumer_group: String => "consumerGroup",
        /// Topic.
        req topic: String => "topic",
        /// Queue id.
        req queue_id: i32 => "queueId",
        /// The message's checkpoint ([`PopExtraInfo`]).
        req extra_info: String => "extraInfo",
        /// The message's queue offset.
        req offset: i64 => "offset",
        /// The new invisible time, ms from now.
        req invisible_time: i64 => "invisibleTime",
    }
}

header! {
    /// The answer to CHANGE_MESSAGE_INVISIBLETIME: the message's new checkpoint times.
    ChangeInvisibleTimeResponseHeader("ChangeInvisibleTimeResponseHeader") {
        /// The new pop time, ms since the epoch.
        req pop_time: i64 => "popTime",
        /// The invisible time from it, ms.
        req invisible_time: i64 => "invisibleTime",
        /// The revive queue.
        req revive_qid: i32 => "reviveQid",
    }
}

/// Which topic a popped message was read from, as the checkpoint's one-character mark
/// (Java: `ExtraInfoUtil.getRetry`): `0` the topic itself, `1` a `%RETRY%` topic, `2` a
/// 5.x pop retry topic (`%RETRY%group+topic`).
pub fn pop_topic_mark(topic: &str) -> &'static str {
    if crate::names::is_retry_topic(topic) {
        if topic.contains('+') { "2" } else { "1" }
    } else {
        "0"
    }
}

/// A popped message's checkpoint, as the broker hands it out (the `POP_CK` property the client
/// builds, the `extraInfo` of an ack): `checkpointOffset popTime invisibleTime reviveQid mark
/// brokerName queueId queueOffset`, space-separated, and a gRPC proxy's receipt handle adds the
/// commit-log offset. The times are ms on the wire.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct PopExtraInfo {
    /// The first offset of the pop's messages in the queue.
    pub checkpoint_offset: i64,
    /// When the message was popped, ms since the epoch.
    pub pop_time: i64,
    /// How long it stays invisible from then, ms.
    pub invisible_time: i64,
    /// The revive queue ([`POP_ORDER_REVIVE_QUEUE`] for an orderly pop).
    pub revive_qid: i32,
    /// The topic mark ([`pop_topic_mark`]).
    pub topic_mark: String,
    /// The broker that popped it.
    pub broker_name: String,
    /// Queue id.
    pub queue_id: i32,
    /// The message's queue offset (absent in the short form, 7 fields).
    pub queue_offset: Option<i64>,
    /// The message's commit-log offset (a proxy's receipt handle only).
    pub commit_log_offset: Option<i64>,
}

impl PopExtraInfo {
    /// Reads a checkpoint text; at least the first 7 fields must be there and be numbers where
    /// numbers belong.
    ///
    /// # Errors
    /// [`HeaderError::InvalidField`] naming `extraInfo`.
    pub fn parse(text: &str) -> Result<Self, HeaderError> {
        let bad = || HeaderError::InvalidField {
            header: "ExtraInfoUtil",
            field: "extraInfo",
            value: text.to_owned(),
        };
        let f: Vec<&str> = text.split(' ').collect();
        if f.len() < 7 {
            return Err(bad());
        }
        let num = |i: usize| f[i].parse::<i64>().map_err(|_| bad());
        let opt = |i: usize| {
            f.get(i)
                .map(|s| s.parse::<i64>().map_err(|_| bad()))
                .transpose()
        };
        Ok(Self {
            checkpoint_offset: num(0)?,
            pop_time: num(1)?,
            invisible_time: num(2)?,
            revive_qid: f[3].parse().map_err(|_| bad())?,
            topic_mark: f[4].to_owned(),
            broker_name: f[5].to_owned(),
            queue_id: f[6].parse().map_err(|_| bad())?,
            queue_offset: opt(7)?,
            commit_log_offset: opt(8)?,
        })
    }

    /// When the message was popped.
    pub fn popped_at(&self) -> SystemTime {
        from_millis(self.pop_time)
    }

    /// When it becomes visible again unless acknowledged.
    pub fn visible_at(&self) -> SystemTime {
        from_millis(self.pop_time.saturating_add(self.invisible_time))
    }

    /// Whether this checkpoint came from an orderly pop.
    pub fn is_order(&self) -> bool {
        self.revive_qid == POP_ORDER_REVIVE_QUEUE
    }

    /// A checkpoint for a message popped at `popped_at`, invisible for `invisible`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        checkpoint_offset: i64,
        popped_at: SystemTime,
        invisible: Duration,
        revive_qid: i32,
        topic: &str,
        broker_name: &str,
        queue_id: i32,
        queue_offset: i64,
    ) -> Self {
        Self {
            checkpoint_offset,
            pop_time: to_millis(popped_at),
            invisible_time: duration_millis(invisible),
            revive_qid,
            topic_mark: pop_topic_mark(topic).to_owned(),
            broker_name: broker_name.to_owned(),
            queue_id,
            queue_offset: Some(queue_offset),
            commit_log_offset: None,
        }
    }
}

impl fmt::Display for PopExtraInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} {} {} {} {}",
            self.checkpoint_offset,
            self.pop_time,
            self.invisible_time,
            self.revive_qid,
            self.topic_mark,
            self.broker_name,
            self.queue_id
        )?;
        if let Some(o) = self.queue_offset {
            write!(f, " {o}")?;
            if let Some(c) = self.commit_log_offset {
                write!(f, " {c}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_info_reads_a_brokers_checkpoint_and_a_proxys_receipt_handle() {
        let ck = PopExtraInfo::parse("5 1700000000000 60000 0 0 broker-a 3 7").unwrap();
        assert_eq!(ck.checkpoint_offset, 5);
        assert_eq!(ck.queue_id, 3);
        assert_eq!(ck.queue_offset, Some(7));
        assert_eq!(
            ck.visible_at(),
            SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_060_000)
        );
        assert_eq!(ck.to_string(), "5 1700000000000 60000 0 0 broker-a 3 7");
        let handle = PopExtraInfo::parse("5 1700000000000 60000 999 1 broker-a 3 7 4096").unwrap();
        assert!(handle.is_order());
        assert_eq!(handle.commit_log_offset, Some(4096));
        assert_eq!(
            handle.to_string(),
            "5 1700000000000 60000 999 1 broker-a 3 7 4096"
        );
        for bad in [
            "",
            "1 2 3",
            "x 1 2 0 0 b 3 7",
            "5 1 2 0 0 b q 7",
            "5 1 2 0 0 b 3 seven",
        ] {
            assert!(PopExtraInfo::parse(bad).is_err(), "{bad:?}");
        }
    }

    proptest::proptest! {
        /// Any checkpoint a broker writes reads back the same; any text either reads as one
        /// that writes out and reads back the same, or is refused (never a panic).
        #[test]
        fn checkpoints_round_trip(
            start in 0i64..1 << 40,
            popped in 0i64..1 << 42,
            invisible in 0u64..1 << 30,
            order: bool,
            retry: bool,
            queue in 0i32..1024,
            offset in 0i64..1 << 40,
            text in "[0-9 a-z%+-]{0,60}",
        ) {
            let ck = PopExtraInfo::new(
                start,
                from_millis(popped),
                Duration::from_millis(invisible),
                if order { POP_ORDER_REVIVE_QUEUE } else { 0 },
                if retry { "%RETRY%g+T" } else { "T" },
                "broker-a",
                queue,
                offset,
            );
            proptest::prop_assert_eq!(PopExtraInfo::parse(&ck.to_string()), Ok(ck));
            crate::fuzz_oracle::check_pop_checkpoint(text.as_bytes());
        }
    }

    #[test]
    fn topic_marks_follow_the_retry_topic_kinds() {
        assert_eq!(pop_topic_mark("T"), "0");
        assert_eq!(pop_topic_mark("%RETRY%g"), "1");
        assert_eq!(pop_topic_mark("%RETRY%g+T"), "2");
    }
}
