//! Offsets: a group's committed offset of a queue (read and commit), and a queue's min and max
//! offsets, the offset of a time and its earliest store time.

use mq_client_api::RequestCode;
use mq_client_api::ResponseCode;
use mq_client_api::header::{
    GetEarliestMsgStoretimeRequestHeader, GetEarliestMsgStoretimeResponseHeader,
    GetMaxOffsetRequestHeader, GetMaxOffsetResponseHeader, GetMinOffsetRequestHeader,
    GetMinOffsetResponseHeader, QueryConsumerOffsetRequestHeader,
    QueryConsumerOffsetResponseHeader, SearchOffsetRequestHeader, SearchOffsetResponseHeader,
    UpdateConsumerOffsetRequestHeader,
};
use mq_remoting::RemotingCommand;

use mq_client_api::answer::{respond, respond_with};

use super::CoreHandle;

impl CoreHandle {
    /// QUERY_CONSUMER_OFFSET: the group's committed offset; 0 for a queue never consumed
    /// unless the client asked for QUERY_NOT_FOUND (`setZeroIfNotFound=false`).
    pub(super) fn query_consumer_offset(&self, req: &RemotingCommand) -> RemotingCommand {
        let h = decode_or_answer!(QueryConsumerOffsetRequestHeader, req);
        let found = self.0.offsets.get(&h.consumer_group, &h.topic, h.queue_id);
        match found {
            Some(offset) => respond_with(req, &QueryConsumerOffsetResponseHeader { offset }),
            // Never consumed and nothing was ever removed from the queue: start at 0.
            None if h.set_zero_if_not_found != Some(false) => {
                respond_with(req, &QueryConsumerOffsetResponseHeader { offset: 0 })
            }
            None => respond(
                req,
                ResponseCode::QUERY_NOT_FOUND,
                Some("Not found, V3_0_6_SNAPSHOT maybe".into()),
            ),
        }
    }

    /// UPDATE_CONSUMER_OFFSET: commits a group's offset of a queue.
    pub(super) fn update_consumer_offset(&self, req: &RemotingCommand) -> RemotingCommand {
        let h = decode_or_answer!(UpdateConsumerOffsetRequestHeader, req);
        self.0
            .offsets
            .commit(&h.consumer_group, &h.topic, h.queue_id, h.commit_offset);
        respond(req, ResponseCode::SUCCESS, None)
    }

    /// GET_MAX_OFFSET and GET_MIN_OFFSET: the queue's ends (the min moves up as retention
    /// deletes the oldest commit-log segments).
    pub(super) fn queue_bound(&self, req: &RemotingCommand) -> RemotingCommand {
        if req.code == RequestCode::GET_MAX_OFFSET.0 {
            let h = decode_or_answer!(GetMaxOffsetRequestHeader, req);
            let offset = self.0.store.max_offset(&h.topic, h.queue_id);
            respond_with(req, &GetMaxOffsetResponseHeader { offset })
        } else {
            let h = decode_or_answer!(GetMinOffsetRequestHeader, req);
            let offset = self.0.store.min_offset(&h.topic, h.queue_id);
            respond_with(req, &GetMinOffsetResponseHeader { offset })
        }
    }

    /// SEARCH_OFFSET_BY_TIMESTAMP: the first offset stored at or after a time.
    pub(super) fn search_offset(&self, req: &RemotingCommand) -> RemotingCommand {
        let h = decode_or_answer!(SearchOffsetRequestHeader, req);
        match self
            .0
            .store
            .search_offset(&h.topic, h.queue_id, h.timestamp)
        {
            Ok(offset) => respond_with(req, &SearchOffsetResponseHeader { offset }),
            Err(e) => respond(req, ResponseCode::SYSTEM_ERROR, Some(e.to_string())),
        }
    }

    /// GET_EARLIEST_MSG_STORETIME: the store time of the queue's first message.
    pub(super) fn earliest_store_time(&self, req: &RemotingCommand) -> RemotingCommand {
        let h = decode_or_answer!(GetEarliestMsgStoretimeRequestHeader, req);
        match self.0.store.earliest_store_time(&h.topic, h.queue_id) {
            Ok(Some(timestamp)) => {
                respond_with(req, &GetEarliestMsgStoretimeResponseHeader { timestamp })
            }
            Ok(None) => respond(
                req,
                ResponseCode::SYSTEM_ERROR,
                Some("queue is empty".into()),
            ),
            Err(e) => respond(req, ResponseCode::SYSTEM_ERROR, Some(e.to_string())),
        }
    }
}
