//! The RPCs of the contract that name a queue and an offset: UpdateOffset and GetOffset (a
//! group's committed offset in a queue, kept by the queue's broker), QueryOffset (a queue's
//! first or next offset, or the first at a time) and PullMessage (messages from an offset),
//! each one remoting call to the queue's master.

use std::time::{Duration, SystemTime};

use mq_client_api::header::{QueryConsumerOffsetRequestHeader, UpdateConsumerOffsetRequestHeader};
use mq_client_api::{MessageQueue, PullStatus, ResponseCode};

use crate::convert::{self, ok, status, status_of};
use crate::proxy::Core;
use crate::v2;

/// Messages a pull asks for when the request names no batch size, and the most it may name.
const PULL_BATCH: i32 = 32;
const MAX_PULL_BATCH: i32 = 1024;

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

/// What a PullMessage answers: a status, the messages found, and the offset to pull from next.
pub(crate) struct Pulled {
    pub(crate) status: v2::Status,
    pub(crate) messages: Vec<v2::Message>,
    pub(crate) next_offset: Option<i64>,
}

impl Pulled {
    pub(crate) fn refused(status: v2::Status) -> Self {
        Self {
            status,
            messages: Vec::new(),
            next_offset: None,
        }
    }
}

impl Core {
    /// Up to the request's batch size of messages of the request's queue from its offset,
    /// matching its tag expression, waiting up to its long-polling time (at most `max_poll`)
    /// for the first when there is none yet. OK with the messages; MESSAGE_NOT_FOUND when none
    /// came; ILLEGAL_OFFSET when the offset is outside the queue; each with where to go on.
    pub(crate) async fn pull(&self, req: &v2::PullMessageRequest, max_poll: Duration) -> Pulled {
        let group = match consumer_group(req.group.as_ref()) {
            Ok(g) => g,
            Err(s) => return Pulled::refused(s),
        };
        if req.offset < 0 {
            return Pulled::refused(status(
                v2::Code::IllegalOffset,
                format!("offset {} is negative", req.offset),
            ));
        }
        if req.batch_size < 0 || req.batch_size > MAX_PULL_BATCH {
            return Pulled::refused(status(
                v2::Code::BadRequest,
                format!(
                    "batch size {} is not within 1..={MAX_PULL_BATCH}",
                    req.batch_size
                ),
            ));
        }
        let expression = match tag_expression(req.filter_expression.as_ref()) {
            Ok(e) => e,
            Err(s) => return Pulled::refused(s),
        };
        let wait = req
            .long_polling_timeout
            .and_then(|d| Duration::try_from(d).ok())
            .unwrap_or_default()
            .min(max_poll);
        let t = match self.target(req.message_queue.as_ref()).await {
            Ok(t) => t,
            Err(s) => return Pulled::refused(s),
        };
        let batch = if req.batch_size == 0 {
            PULL_BATCH
        } else {
            req.batch_size
        };
        let header = crate::pop::tag_pull(
            &group,
            &t.queue.topic,
            (t.queue.queue_id, req.offset),
            batch,
            &expression,
            wait,
        );
        let pulled = match self
            .api
            .pull(&t.addr, &header, wait + self.config.request_timeout)
            .await
        {
            Ok(r) => r,
            Err(e) => return Pulled::refused(status_of(&e)),
        };
        let status = match pulled.status {
            PullStatus::Found => ok(),
            PullStatus::NoNewMsg | PullStatus::NoMatchedMsg => status(
                v2::Code::MessageNotFound,
                format!("no message in {} from offset {}", t.queue, req.offset),
            ),
            PullStatus::OffsetIllegal => status(
                v2::Code::IllegalOffset,
                format!(
                    "offset {} is outside {} ({}..{})",
                    req.offset, t.queue, pulled.min_offset, pulled.max_offset
                ),
            ),
            other => status(
                v2::Code::InternalServerError,
                format!("the broker answered the pull with {other:?}"),
            ),
        };
        let messages = pulled
            .messages
            .iter()
            .map(|m| {
                let mut out = convert::to_grpc(m, "", 1, Duration::ZERO);
                // Pulled, not received: no handle to settle and no invisible time.
                if let Some(sys) = out.system_properties.as_mut() {
                    sys.receipt_handle = None;
                    sys.invisible_duration = None;
                    sys.delivery_attempt = None;
                }
                out
            })
            .collect();
        Pulled {
            status,
            messages,
            next_offset: Some(pulled.next_begin_offset),
        }
    }
}

/// The tag expression of a request's filter (`*` when it names none); SQL92 is not served.
pub(crate) fn tag_expression(filter: Option<&v2::FilterExpression>) -> Result<String, v2::Status> {
    match filter {
        Some(f) if f.r#type == v2::FilterType::Sql as i32 => Err(status(
            v2::Code::IllegalFilterExpression,
            "SQL92 filters are not served; use tags",
        )),
        Some(f) if !f.expression.trim().is_empty() => Ok(f.expression.clone()),
        _ => Ok("*".to_owned()),
    }
}

/// The request's consumer group, which must be named.
pub(crate) fn consumer_group(group: Option<&v2::Resource>) -> Result<String, v2::Status> {
    let name = convert::resource_name(group);
    if name.is_empty() {
        return Err(status(v2::Code::IllegalConsumerGroup, "no consumer group"));
    }
    Ok(name)
}
