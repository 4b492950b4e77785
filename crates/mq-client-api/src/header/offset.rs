//! Offset and query headers (spec §4.6).

use super::header;

header! {
    /// Read a committed offset (QUERY_CONSUMER_OFFSET, 14).
    QueryConsumerOffsetRequestHeader("QueryConsumerOffsetRequestHeader") {
        /// Consumer group.
        req consumer_group: String => "consumerGroup",
        /// Topic.
        req topic: String => "topic",
        /// Queue id.
        req queue_id: i32 => "queueId",
        /// 5.x: answer 0 instead of QUERY_NOT_FOUND.
        opt set_zero_if_not_found: bool => "setZeroIfNotFound",
    }
}

header! {
    /// Committed offset.
    QueryConsumerOffsetResponseHeader("QueryConsumerOffsetResponseHeader") {
        /// The offset.
        req offset: i64 => "offset",
    }
}

header! {
    /// Commit an offset (UPDATE_CONSUMER_OFFSET, 15).
    UpdateConsumerOffsetRequestHeader("UpdateConsumerOffsetRequestHeader") {
        /// Consumer group.
        req consumer_group: String => "consumerGroup",
        /// Topic.
        req topic: String => "topic",
        /// Queue id.
        req queue_id: i32 => "queueId",
        /// Offset to commit.
        req commit_offset: i64 => "commitOffset",
    }
}

header! {
    /// Max offset of a queue (GET_MAX_OFFSET, 30).
    GetMaxOffsetRequestHeader("GetMaxOffsetRequestHeader") {
        /// Topic.
        req topic: String => "topic",
        /// Queue id.
        req queue_id: i32 => "queueId",
    }
}

header! {
    /// Max offset.
    GetMaxOffsetResponseHeader("GetMaxOffsetResponseHeader") {
        /// The offset.
        req offset: i64 => "offset",
    }
}

header! {
    /// Min offset of a queue (GET_MIN_OFFSET, 31).
    GetMinOffsetRequestHeader("GetMinOffsetRequestHeader") {
        /// Topic.
        req topic: String => "topic",
        /// Queue id.
        req queue_id: i32 => "queueId",
    }
}

header! {
    /// Min offset.
    GetMinOffsetResponseHeader("GetMinOffsetResponseHeader") {
        /// The offset.
        req offset: i64 => "offset",
    }
}

header! {
    /// Offset by time (SEARCH_OFFSET_BY_TIMESTAMP, 29).
    SearchOffsetRequestHeader("SearchOffsetRequestHeader") {
        /// Topic.
        req topic: String => "topic",
        /// Queue id.
        req queue_id: i32 => "queueId",
        /// Store time, ms since the epoch.
        req timestamp: i64 => "timestamp",
    }
}

header! {
    /// Offset found by time.
    SearchOffsetResponseHeader("SearchOffsetResponseHeader") {
        /// The offset.
        req offset: i64 => "offset",
    }
}

header! {
    /// Earliest store time of a queue (GET_EARLIEST_MSG_STORETIME, 32).
    GetEarliestMsgStoretimeRequestHeader("GetEarliestMsgStoretimeRequestHeader") {
        /// Topic.
        req topic: String => "topic",
        /// Queue id.
        req queue_id: i32 => "queueId",
    }
}

header! {
    /// Earliest store time.
    GetEarliestMsgStoretimeResponseHeader("GetEarliestMsgStoretimeResponseHeader") {
        /// Store time, ms since the epoch.
        req timestamp: i64 => "timestamp",
    }
}

header! {
    /// Messages by key (QUERY_MESSAGE, 12).
    QueryMessageRequestHeader("QueryMessageRequestHeader") {
        /// Topic.
        req topic: String => "topic",
        /// Key (or unique id with `_UNIQUE_KEY_QUERY`).
        req key: String => "key",
        /// Most messages to return.
        req max_num: i32 => "maxNum",
        /// Range start, ms.
        req begin_timestamp: i64 => "beginTimestamp",
        /// Range end, ms.
        req end_timestamp: i64 => "endTimestamp",
        /// Whether `key` is a unique message id.
        opt unique_key_query: bool => "_UNIQUE_KEY_QUERY",
    }
}

header! {
    /// Query response.
    QueryMessageResponseHeader("QueryMessageResponseHeader") {
        /// Index last update time.
        req index_last_update_timestamp: i64 => "indexLastUpdateTimestamp",
        /// Index last update physical offset.
        req index_last_update_phyoffset: i64 => "indexLastUpdatePhyoffset",
    }
}
