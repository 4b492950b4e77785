//! Pull and send-back headers (spec §4.6).

use super::header;

/// PullSysFlag bits.
pub mod pull_sys_flag {
    /// Commit the given offset along with the pull.
    pub const COMMIT_OFFSET: i32 = 0x1;
    /// Long polling: the broker may hold the request.
    pub const SUSPEND: i32 = 0x2;
    /// The request carries a subscription expression.
    pub const SUBSCRIPTION: i32 = 0x4;
    /// Class filter mode.
    pub const CLASS_FILTER: i32 = 0x8;
    /// 5.x lite pull.
    pub const LITE_PULL: i32 = 0x10;
}

header! {
    /// Pull request (PULL_MESSAGE, 11).
    PullMessageRequestHeader("PullMessageRequestHeader") {
        /// Consumer group.
        req consumer_group: String => "consumerGroup",
        /// Topic.
        req topic: String => "topic",
        /// Queue id.
        req queue_id: i32 => "queueId",
        /// Offset to read from.
        req queue_offset: i64 => "queueOffset",
        /// Most messages to return.
        req max_msg_nums: i32 => "maxMsgNums",
        /// PullSysFlag bits.
        req sys_flag: i32 => "sysFlag",
        /// Offset to commit (with COMMIT_OFFSET).
        req commit_offset: i64 => "commitOffset",
        /// How long the broker may hold the request (long polling), ms.
        req suspend_timeout_millis: i64 => "suspendTimeoutMillis",
        /// Subscription expression, e.g. `*` or `TagA || TagB`.
        opt subscription: String => "subscription",
        /// Subscription version.
        req sub_version: i64 => "subVersion",
        /// `TAG` or `SQL92`.
        opt expression_type: String => "expressionType",
        /// 5.x: most bytes to return.
        opt max_msg_bytes: i32 => "maxMsgBytes",
    }
}

header! {
    /// Pull response.
    PullMessageResponseHeader("PullMessageResponseHeader") {
        /// Broker id to pull this queue from next.
        req suggest_which_broker_id: i64 => "suggestWhichBrokerId",
        /// Offset for the next pull.
        req next_begin_offset: i64 => "nextBeginOffset",
        /// Queue min offset.
        req min_offset: i64 => "minOffset",
        /// Queue max offset.
        req max_offset: i64 => "maxOffset",
    }
}

header! {
    /// Return a message for redelivery (CONSUMER_SEND_MSG_BACK, 36).
    ConsumerSendMsgBackRequestHeader("ConsumerSendMsgBackRequestHeader") {
        /// Commit-log offset of the message.
        req offset: i64 => "offset",
        /// Consumer group.
        req group: String => "group",
        /// Delay level for the retry (0 = by reconsume times).
        req delay_level: i32 => "delayLevel",
        /// Original message id.
        opt origin_msg_id: String => "originMsgId",
        /// Original topic.
        opt origin_topic: String => "originTopic",
        /// Unit mode.
        prim unit_mode: bool => "unitMode",
        /// Max reconsume times before the DLQ.
        opt max_reconsume_times: i32 => "maxReconsumeTimes",
    }
}
