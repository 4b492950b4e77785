//! Topics and lookups: topic creation, a stored message by its offset, messages by key.

use bytes::BytesMut;
use mq_client_api::ResponseCode;
use mq_client_api::body::{SubscriptionGroupConfig, TopicConfig};
use mq_client_api::header::{
    CreateTopicRequestHeader, DeleteSubscriptionGroupRequestHeader,
    GetSubscriptionGroupConfigRequestHeader, GetTopicConfigRequestHeader,
    QueryMessageRequestHeader, QueryMessageResponseHeader, ViewMessageRequestHeader,
};
use mq_client_api::validate::TOPIC_MAX_LEN;
use mq_remoting::RemotingCommand;

use mq_client_api::answer::{respond, respond_with};

use super::CoreHandle;
use crate::state::TBW102;

impl CoreHandle {
    /// UPDATE_AND_CREATE_TOPIC: creates or updates a topic, then registers with the name
    /// servers before answering, as Java does, so a route lookup right after sees this broker.
    pub(super) async fn create_topic(&self, req: &RemotingCommand) -> RemotingCommand {
        let h = decode_or_answer!(CreateTopicRequestHeader, req);
        if h.topic == TBW102 || h.topic.len() > TOPIC_MAX_LEN {
            return respond(
                req,
                ResponseCode::SYSTEM_ERROR,
                Some(format!(
                    "The topic[{}] is conflict with system reserved words or too long.",
                    h.topic
                )),
            );
        }
        let tc = TopicConfig {
            topic_name: h.topic,
            read_queue_nums: h.read_queue_nums,
            write_queue_nums: h.write_queue_nums,
            perm: h.perm,
            topic_filter_type: h.topic_filter_type,
            topic_sys_flag: h.topic_sys_flag.unwrap_or(0),
            order: h.order,
            attributes: h
                .attributes
                .as_deref()
                .map(topic_attributes)
                .unwrap_or_default(),
        };
        match self.0.topics.put(tc) {
            Ok(()) => {
                self.register_all().await;
                respond(req, ResponseCode::SUCCESS, None)
            }
            Err(e) => respond(req, ResponseCode::SYSTEM_ERROR, Some(e.to_string())),
        }
    }

    /// GET_TOPIC_CONFIG: a topic's config as JSON (Java's `TopicConfigAndQueueMapping`, with no
    /// static queue mapping); TOPIC_NOT_EXIST when the broker has no such topic.
    pub(super) fn topic_config(&self, req: &RemotingCommand) -> RemotingCommand {
        let h = decode_or_answer!(GetTopicConfigRequestHeader, req);
        let Some(tc) = self.0.topics.get(&h.topic) else {
            return respond(
                req,
                ResponseCode::TOPIC_NOT_EXIST,
                Some(format!("No topic in this broker. topic: {}", h.topic)),
            );
        };
        match serde_json::to_vec(&tc) {
            Ok(body) => respond(req, ResponseCode::SUCCESS, None).with_body(body),
            Err(e) => respond(req, ResponseCode::SYSTEM_ERROR, Some(e.to_string())),
        }
    }

    /// UPDATE_AND_CREATE_SUBSCRIPTIONGROUP: stores the group config of the body (JSON).
    pub(super) fn update_group(&self, req: &RemotingCommand) -> RemotingCommand {
        let config = match mq_client_api::body::from_json::<SubscriptionGroupConfig>(
            "SubscriptionGroupConfig",
            &req.body,
        ) {
            Ok(c) => c,
            Err(e) => return respond(req, ResponseCode::SYSTEM_ERROR, Some(e.to_string())),
        };
        if let Err(e) = mq_client_api::validate::validate_group(&config.group_name) {
            return respond(req, ResponseCode::SYSTEM_ERROR, Some(e.to_string()));
        }
        let group = config.group_name.clone();
        match self.0.groups.set(&group, Some(config)) {
            Ok(_) => respond(req, ResponseCode::SUCCESS, None),
            Err(e) => respond(req, ResponseCode::SYSTEM_ERROR, Some(e.to_string())),
        }
    }

    /// GET_SUBSCRIPTIONGROUP_CONFIG: a group's config as JSON. A group never configured gets
    /// the defaults, as from a Java broker that creates group configs on demand (its default).
    pub(super) fn group_config(&self, req: &RemotingCommand) -> RemotingCommand {
        let h = decode_or_answer!(GetSubscriptionGroupConfigRequestHeader, req);
        let config = self
            .0
            .groups
            .get(&h.group)
            .unwrap_or_else(|| SubscriptionGroupConfig::new(h.group));
        respond(req, ResponseCode::SUCCESS, None).with_body(mq_client_api::body::to_json(&config))
    }

    /// GET_ALL_SUBSCRIPTIONGROUP_CONFIG: every group config, with the table's version.
    pub(super) fn all_groups(&self, req: &RemotingCommand) -> RemotingCommand {
        respond(req, ResponseCode::SUCCESS, None)
            .with_body(mq_client_api::body::to_json(&self.0.groups.snapshot()))
    }

    /// DELETE_SUBSCRIPTIONGROUP: forgets a group's config, and its committed offsets when asked.
    pub(super) fn delete_group(&self, req: &RemotingCommand) -> RemotingCommand {
        let h = decode_or_answer!(DeleteSubscriptionGroupRequestHeader, req);
        if let Err(e) = self.0.groups.set(&h.group_name, None) {
            return respond(req, ResponseCode::SYSTEM_ERROR, Some(e.to_string()));
        }
        if h.clean_offset {
            self.0.offsets.remove_group(&h.group_name);
            self.0.pop.remove_group(&h.group_name);
        }
        respond(req, ResponseCode::SUCCESS, None)
    }

    /// VIEW_MESSAGE_BY_ID: the stored record at a commit-log offset.
    pub(super) fn view_message(&self, req: &RemotingCommand) -> RemotingCommand {
        let h = decode_or_answer!(ViewMessageRequestHeader, req);
        match self.0.store.read_record(h.offset) {
            Ok(record) => respond(req, ResponseCode::SUCCESS, None).with_body(record),
            Err(e) => respond(
                req,
                ResponseCode::SYSTEM_ERROR,
                Some(format!(
                    "can not find message by the offset {}: {e}",
                    h.offset
                )),
            ),
        }
    }

    /// QUERY_MESSAGE: up to 64 stored records of a topic with a key, newest first.
    pub(super) fn query_message(&self, req: &RemotingCommand) -> RemotingCommand {
        let h = decode_or_answer!(QueryMessageRequestHeader, req);
        let max = usize::try_from(h.max_num).unwrap_or(0).clamp(1, 64);
        match self.0.store.query_by_key(&h.topic, &h.key, max) {
            Ok(records) if !records.is_empty() => {
                let mut body = BytesMut::new();
                for r in records {
                    body.extend_from_slice(&r);
                }
                let header = QueryMessageResponseHeader {
                    index_last_update_timestamp: crate::store::now_ms(),
                    index_last_update_phyoffset: 0,
                };
                respond_with(req, &header).with_body(body.freeze())
            }
            Ok(_) => respond(
                req,
                ResponseCode::QUERY_NOT_FOUND,
                Some("can not find message, maybe time range not correct".into()),
            ),
            Err(e) => respond(req, ResponseCode::SYSTEM_ERROR, Some(e.to_string())),
        }
    }
}

/// 5.x topic attributes from their header text, `+key=value` joined by commas; a `-key`
/// (delete) or a piece without `=` is left out.
fn topic_attributes(text: &str) -> std::collections::BTreeMap<String, String> {
    text.split(',')
        .filter_map(|piece| piece.trim().strip_prefix('+')?.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}
