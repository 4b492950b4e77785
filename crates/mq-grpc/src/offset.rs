//! The offset RPCs of the contract: UpdateOffset and GetOffset (a group's committed offset in
//! a queue, kept by the queue's broker) and QueryOffset (a queue's first or next offset, or the
//! first at a time), each one remoting call to the queue's master.

use std::time::SystemTime;

use mq_client_api::header::{QueryConsumerOffsetRequestHeader, UpdateConsumerOffsetRequestHeader};
use mq_client_api::{MessageQueue, ResponseCode};

use crate::convert::{self, ok, status, status_of};
use crate::proxy::Core;
use crate::v2;

/// A request's queue, as remoting names it, and its broker's master address.
struct Target {
    queue: MessageQueue,
    addr: String,
}

impl Core {
    /// The queue a request names: its topic's readable queue of that id on that broker (on
    /// any broker when the request names none).
    async fn target(&self, mq: Option<&v2::MessageQueue>) -> Result<Target, v2::Status> {
        let mq = mq.ok_or_else(|| status(v2::Code::BadRequest, "no message queue"))?;
        let topic = convert::resource_name(mq.topic.as_ref());
        if topic.is_empty() {
            return Err(status(v2::Code::IllegalTopic, "no topic"));
        }
        let broker = mq
            .broker
            .as_ref()
            .map(|b| b.name.as_str())
            .filter(|b| !b.is_empty());
        let q = self
            .readable(&topic, broker)
            .await?
            .into_iter()
            .find(|q| q.id == mq.id)
            .ok_or_else(|| {
                status(
                    v2::Code::BadRequest,
                    format!(
                        "topic {topic} has no readable queue {} on broker {}",
                        mq.id,
                        broker.unwrap_or("(any)")
                    ),
                )
            })?;
        Ok(Target {
            queue: MessageQueue::new(topic, q.broker, q.id),
            addr: q.addr,
        })
    }

    /// Commits `offset` for `group` in the request's queue.
    pub(crate) async fn update_offset(&self, req: &v2::UpdateOffsetRequest) -> v2::Status {
        let group = match consumer_group(req.group.as_ref()) {
            Ok(g) => g,
            Err(s) => return s,
        };
        if req.offset < 0 {
            return status(
                v2::Code::IllegalOffset,
                format!("offset {} is negative", req.offset),
            );
        }
        let t = match self.target(req.message_queue.as_ref()).await {
            Ok(t) => t,
            Err(s) => return s,
        };
        let header = UpdateConsumerOffsetRequestHeader {
            consumer_group: group,
            topic: t.queue.topic,
            queue_id: t.queue.queue_id,
            commit_offset: req.offset,
        };
        match self
            .api
            .update_consumer_offset(&t.addr, &header, self.config.request_timeout)
            .await
        {
            Ok(()) => ok(),
            Err(e) => status_of(&e),
        }
    }

    /// The offset `group` committed in the request's queue; OFFSET_NOT_FOUND when it has none.
    pub(crate) async fn get_offset(&self, req: &v2::GetOffsetRequest) -> (v2::Status, i64) {
        let group = match consumer_group(req.group.as_ref()) {
            Ok(g) => g,
            Err(s) => return (s, 0),
        };
        let t = match self.target(req.message_queue.as_ref()).await {
            Ok(t) => t,
            Err(s) => return (s, 0),
        };
        let header = QueryConsumerOffsetRequestHeader {
            consumer_group: group.clone(),
            topic: t.queue.topic.clone(),
            queue_id: t.queue.queue_id,
            set_zero_if_not_found: Some(false),
        };
        match self
            .api
            .query_consumer_offset(&t.addr, &header, self.config.request_timeout)
            .await
        {
            Ok(offset) => (ok(), offset),
            Err(e) if e.response_code() == Some(ResponseCode::QUERY_NOT_FOUND) => (
                status(
                    v2::Code::OffsetNotFound,
                    format!("group {group} has no offset in {}", t.queue),
                ),
                0,
            ),
            Err(e) => (status_of(&e), 0),
        }
    }

    /// The request's queue's first offset (BEGINNING), the offset its next message will take
    /// (END), or the first offset stored at or after a time (TIMESTAMP).
    pub(crate) async fn query_offset(&self, req: &v2::QueryOffsetRequest) -> (v2::Status, i64) {
        let policy = v2::QueryOffsetPolicy::try_from(req.query_offset_policy);
        let at = match (policy, req.timestamp.as_ref()) {
            (Ok(v2::QueryOffsetPolicy::Timestamp), None) => {
                return (
                    status(v2::Code::BadRequest, "TIMESTAMP asked without a timestamp"),
                    0,
                );
            }
            (Ok(v2::QueryOffsetPolicy::Timestamp), Some(ts)) => match SystemTime::try_from(*ts) {
                Ok(at) => Some(at),
                Err(_) => {
                    return (
                        status(v2::Code::BadRequest, format!("invalid timestamp {ts:?}")),
                        0,
                    );
                }
            },
            (Ok(_), _) => None,
            (Err(_), _) => {
                return (
                    status(
                        v2::Code::BadRequest,
                        format!("unknown query offset policy {}", req.query_offset_policy),
                    ),
                    0,
                );
            }
        };
        let t = match self.target(req.message_queue.as_ref()).await {
            Ok(t) => t,
            Err(s) => return (s, 0),
        };
        let timeout = self.config.request_timeout;
        let offset = match (policy, at) {
            (Ok(v2::QueryOffsetPolicy::Beginning), _) => {
                self.api.min_offset(&t.addr, &t.queue, timeout).await
            }
            (_, Some(at)) => self.api.search_offset(&t.addr, &t.queue, at, timeout).await,
            _ => self.api.max_offset(&t.addr, &t.queue, timeout).await,
        };
        match offset {
            Ok(offset) => (ok(), offset),
            Err(e) => (status_of(&e), 0),
        }
    }
}

/// The request's consumer group, which must be named.
fn consumer_group(group: Option<&v2::Resource>) -> Result<String, v2::Status> {
    let name = convert::resource_name(group);
    if name.is_empty() {
        return Err(status(v2::Code::IllegalConsumerGroup, "no consumer group"));
    }
    Ok(name)
}
