//! Admin headers: topic creation and view by id (spec §4.6, §4.8).

use super::{HeaderError, header};

header! {
    /// Create or update a topic (UPDATE_AND_CREATE_TOPIC, 17).
    CreateTopicRequestHeader("CreateTopicRequestHeader", check = check_create_topic) {
        /// Topic.
        req topic: String => "topic",
        /// Template topic.
        req default_topic: String => "defaultTopic",
        /// Read queues.
        req read_queue_nums: i32 => "readQueueNums",
        /// Write queues.
        req write_queue_nums: i32 => "writeQueueNums",
        /// Permission bits.
        req perm: i32 => "perm",
        /// `SINGLE_TAG` or `MULTI_TAG`.
        req topic_filter_type: String => "topicFilterType",
        /// Topic sysFlag.
        opt topic_sys_flag: i32 => "topicSysFlag",
        /// Ordered topic.
        prim order: bool => "order",
        /// 5.x attributes, `+key=value` joined by commas (`+message.type=FIFO`).
        opt attributes: String => "attributes",
    }
}

header! {
    /// One topic's config (GET_TOPIC_CONFIG, 351).
    GetTopicConfigRequestHeader("GetTopicConfigRequestHeader") {
        /// Topic.
        req topic: String => "topic",
    }
}

header! {
    /// One subscription group's config (GET_SUBSCRIPTIONGROUP_CONFIG, 352).
    GetSubscriptionGroupConfigRequestHeader("GetSubscriptionGroupConfigRequestHeader") {
        /// Group.
        req group: String => "group",
    }
}

header! {
    /// Deletes a subscription group (DELETE_SUBSCRIPTIONGROUP, 207).
    DeleteSubscriptionGroupRequestHeader("DeleteSubscriptionGroupRequestHeader") {
        /// Group.
        req group_name: String => "groupName",
        /// Whether the group's committed offsets go too (a Java primitive: always sent).
        prim clean_offset: bool => "cleanOffset",
    }
}

fn check_create_topic(h: &CreateTopicRequestHeader) -> Result<(), HeaderError> {
    if matches!(h.topic_filter_type.as_str(), "SINGLE_TAG" | "MULTI_TAG") {
        Ok(())
    } else {
        Err(HeaderError::InvalidField {
            header: "CreateTopicRequestHeader",
            field: "topicFilterType",
            value: h.topic_filter_type.clone(),
        })
    }
}

header! {
    /// One message by commit-log offset (VIEW_MESSAGE_BY_ID, 33).
    ViewMessageRequestHeader("ViewMessageRequestHeader") {
        /// Commit-log offset (from the offset message id).
        req offset: i64 => "offset",
    }
}
