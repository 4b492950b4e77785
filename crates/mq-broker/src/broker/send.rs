//! SEND_MESSAGE, SEND_MESSAGE_V2 and SEND_BATCH_MESSAGE: a request checked and planned,
//! the topic created from its template when allowed, and sends of one connection stored as one
//! group.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use mq_client_api::body::{TopicConfig, perm};
use mq_client_api::header::SendHeaderRef;
use mq_client_api::message::{
    Message, MessageExt, decode_batch_with, decode_properties, property, sys_flag,
};
use mq_client_api::validate::TOPIC_MAX_LEN;
use mq_client_api::{RequestCode, ResponseCode};
use mq_remoting::{ExtFields, FieldSink, RemotingCommand, RequestContext, TypedFields};
use tracing::{info, warn};

use mq_client_api::answer::{header_error, respond};

use super::{CoreHandle, MAX_MESSAGE_SIZE, MAX_PROPERTIES_LEN};
use crate::state::TBW102;

impl CoreHandle {
    /// The config of `topic`, creating it from `default_topic` when allowed (spec §8.2), and
    /// whether it was created now.
    fn topic_or_create(
        self: &Arc<Self>,
        topic: &str,
        default_topic: &str,
        client_queues: i32,
    ) -> Result<(Writable, bool), String> {
        if let Some(w) = self.0.topics.read(topic, Writable::of) {
            return Ok((w, false));
        }
        let created = if mq_client_api::names::is_retry_topic(topic) {
            Some(TopicConfig::new(topic, 1))
        } else {
            self.0
                .topics
                .get(default_topic)
                .filter(|d| d.perm & perm::INHERIT != 0)
                .map(|d| {
                    let mut tc =
                        TopicConfig::new(topic, client_queues.min(d.write_queue_nums).max(0));
                    tc.perm = d.perm & !perm::INHERIT;
                    tc.topic_filter_type = d.topic_filter_type;
                    tc
                })
        };
        match created {
            Some(tc) if tc.write_queue_nums > 0 => {
                let w = Writable::of(&tc);
                self.0.topics.put(tc).map_err(|e| e.to_string())?;
                info!(topic, queues = w.write_queue_nums, "topic auto-created");
                Ok((w, true))
            }
            _ => Err(format!("topic[{topic}] not exist, apply first please!")),
        }
    }

    pub(crate) async fn send(
        self: &Arc<Self>,
        ctx: &RequestContext,
        req: RemotingCommand,
    ) -> RemotingCommand {
        let mut answers = self.send_group(ctx, vec![req]).await;
        answers
            .pop()
            .flatten()
            .unwrap_or_else(|| RemotingCommand::response(ResponseCode::SYSTEM_ERROR.0, None))
    }

    /// Sends that arrived back to back on one connection: every message is appended in
    /// arrival order with one write to the commit log (one fsync wait in SYNC mode), and each
    /// request gets its own answer.
    pub(crate) async fn send_group(
        self: &Arc<Self>,
        ctx: &RequestContext,
        reqs: Vec<RemotingCommand>,
    ) -> Vec<Option<RemotingCommand>> {
        let mut answers: Vec<Option<RemotingCommand>> = Vec::with_capacity(reqs.len());
        let mut planned: Vec<(usize, i32, AnswerExtras)> = Vec::new();
        let mut groups: Vec<Vec<MessageExt>> = Vec::new();
        let mut created = false;
        for (i, req) in reqs.iter().enumerate() {
            match self.plan_send(ctx, req) {
                Ok(plan) => {
                    created |= plan.created;
                    let mut messages = plan.messages;
                    let mut extras = AnswerExtras::default();
                    // A batch is appended as it is, one unit taking contiguous offsets; a single
                    // message may be diverted (half, delayed or timer).
                    if let (false, [ext]) = (plan.batch, messages.as_mut_slice()) {
                        if let Err(remark) = self.route_message(ext) {
                            answers.push(Some(respond(
                                req,
                                ResponseCode::MESSAGE_ILLEGAL,
                                Some(remark),
                            )));
                            continue;
                        }
                        extras.recall_handle = self.recall_handle(ext);
                        // A half message's answer names its transaction, which Apache
                        // RocketMQ's proxy hands its gRPC producer to end it with (a Java 5
                        // broker answers every single send so).
                        if sys_flag::transaction_value(ext.sys_flag)
                            == sys_flag::TRANSACTION_PREPARED_TYPE
                        {
                            extras.transaction_id = ext.message.uniq_key().map(str::to_owned);
                        }
                    }
                    planned.push((i, plan.queue_id, extras));
                    groups.push(messages);
                    answers.push(None);
                }
                Err(answer) => answers.push(Some(answer)),
            }
        }
        if groups.is_empty() {
            return answers;
        }
        // Every stored message names the cluster (4.6+): a replier sends its reply to the
        // cluster's reply topic. Stamped as the records are written, after the message's own
        // properties, which are then copied as they came.
        let stored = self
            .0
            .store
            .put_groups_stamped(groups, self.0.addr, &self.0.cluster_stamp)
            .await;
        if created {
            // As a Java broker does: the route of a topic a send created is registered before
            // the send is answered, so a consumer started on that answer finds it.
            self.register_all().await;
        }
        for ((i, queue_id, extras), stored) in planned.into_iter().zip(stored) {
            answers[i] = Some(send_answer(&reqs[i], queue_id, extras, stored));
        }
        answers
    }

    /// Checks a send request and turns it into the messages to store, or its answer.
    // The error is the answer itself, sent as it is: boxing it would only add an allocation
    // on the rejection path.
    #[allow(clippy::result_large_err)]
    pub(super) fn plan_send(
        self: &Arc<Self>,
        ctx: &RequestContext,
        req: &RemotingCommand,
    ) -> Result<SendPlan, RemotingCommand> {
        let v1 = req.code == RequestCode::SEND_MESSAGE.0
            || req.code == RequestCode::SEND_REPLY_MESSAGE.0;
        let header = match SendHeaderRef::decode(&req.ext_fields, !v1) {
            Ok(h) => h,
            Err(e) => return Err(header_error(req, &e)),
        };
        let topic = header.topic;
        if topic == TBW102 {
            return Err(respond(
                req,
                ResponseCode::SYSTEM_ERROR,
                Some(format!(
                    "the topic[{topic}] is conflict with system reserved words."
                )),
            ));
        }
        if topic.is_empty() || topic.len() > TOPIC_MAX_LEN {
            return Err(respond(
                req,
                ResponseCode::MESSAGE_ILLEGAL,
                Some(format!("message topic length too long {}", topic.len())),
            ));
        }
        if req.body.is_empty() || req.body.len() > MAX_MESSAGE_SIZE {
            return Err(respond(
                req,
                ResponseCode::MESSAGE_ILLEGAL,
                Some(format!(
                    "the message body size {} is illegal",
                    req.body.len()
                )),
            ));
        }
        let props = header.properties.unwrap_or("");
        if props.len() > MAX_PROPERTIES_LEN {
            return Err(respond(
                req,
                ResponseCode::MESSAGE_ILLEGAL,
                Some(format!(
                    "message properties length too long {}",
                    props.len()
                )),
            ));
        }
        let (tc, created) = match self.topic_or_create(
            topic,
            header.default_topic,
            header.default_topic_queue_nums,
        ) {
            Ok(created) => created,
            Err(remark) => return Err(respond(req, ResponseCode::TOPIC_NOT_EXIST, Some(remark))),
        };
        if tc.perm & perm::WRITE == 0 {
            return Err(respond(
                req,
                ResponseCode::NO_PERMISSION,
                Some(format!("the topic[{topic}] sending message is forbidden")),
            ));
        }
        let queues = tc.write_queue_nums.max(tc.read_queue_nums);
        let queue_id = if header.queue_id < 0 {
            fastrand::i32(0..tc.write_queue_nums.max(1))
        } else if header.queue_id >= queues {
            return Err(respond(
                req,
                ResponseCode::SYSTEM_ERROR,
                Some(format!(
                    "request queueId[{}] is illegal, {} Producer: {}",
                    header.queue_id,
                    topic,
                    ctx.peer_addr()
                )),
            ));
        } else {
            header.queue_id
        };
        let born_host = ctx
            .connection()
            .peer_socket_addr()
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        let batch = header.batch;
        let ext = |message, sys_flag| MessageExt {
            message,
            queue_id,
            sys_flag,
            born_timestamp: header.born_timestamp,
            born_host,
            reconsume_times: header.reconsume_times.unwrap_or(0),
            ..MessageExt::default()
        };
        let exts: Vec<MessageExt> = if batch {
            match decode_batch_with(topic, &req.body, |m| ext(m, 0)) {
                Ok(m) => m,
                Err(e) => {
                    return Err(respond(
                        req,
                        ResponseCode::MESSAGE_ILLEGAL,
                        Some(e.to_string()),
                    ));
                }
            }
        } else {
            // Built where it is kept: one allocation for the one message.
            vec![ext(
                Message::from_parts(
                    topic.to_owned(),
                    header.flag,
                    decode_properties(props),
                    req.body.clone(),
                ),
                header.sys_flag,
            )]
        };
        Ok(SendPlan {
            messages: exts,
            queue_id,
            batch,
            created,
        })
    }
}

/// What a send needs of its topic's config.
#[derive(Clone, Copy, Debug)]
struct Writable {
    perm: i32,
    read_queue_nums: i32,
    write_queue_nums: i32,
}

impl Writable {
    fn of(tc: &TopicConfig) -> Self {
        Self {
            perm: tc.perm,
            read_queue_nums: tc.read_queue_nums,
            write_queue_nums: tc.write_queue_nums,
        }
    }
}

/// A send request checked and turned into the messages to store.
pub(super) struct SendPlan {
    pub(super) messages: Vec<MessageExt>,
    pub(super) queue_id: i32,
    pub(super) batch: bool,
    /// The send auto-created its topic: the name servers must hear of it before the answer.
    pub(super) created: bool,
}

/// What a single send's answer says besides where the message was stored.
#[derive(Debug, Default)]
struct AnswerExtras {
    /// A timer message's recall handle.
    recall_handle: Option<String>,
    /// A half message's transaction id (its unique key).
    transaction_id: Option<String>,
}

/// The answer to a send whose messages the store took (or failed to).
fn send_answer(
    req: &RemotingCommand,
    queue_id: i32,
    extras: AnswerExtras,
    stored: io::Result<Vec<crate::store::PutResult>>,
) -> RemotingCommand {
    let results = match stored {
        Ok(r) => r,
        Err(e) => {
            warn!(cause = %e, "store append failed");
            return respond(
                req,
                ResponseCode::SYSTEM_ERROR,
                Some(format!("store failed: {e}")),
            );
        }
    };
    let first_offset = results.first().map_or(0, |r| r.queue_offset);
    let code = if results.iter().all(|r| r.flushed_in_time) {
        ResponseCode::SUCCESS
    } else {
        ResponseCode::FLUSH_DISK_TIMEOUT
    };
    // A batch's ids joined as they are written, in one string sized once.
    let mut msg_id = String::with_capacity(results.len() * 33);
    for (i, r) in results.iter().enumerate() {
        if i > 0 {
            msg_id.push(',');
        }
        r.push_msg_id(&mut msg_id);
    }
    let mut answer = respond(req, code, None);
    stored_at(&mut answer, msg_id, queue_id, first_offset);
    if let Some(handle) = extras.recall_handle {
        answer.ext_fields.insert("recallHandle", handle);
    }
    if let Some(id) = extras.transaction_id {
        answer.ext_fields.insert("transactionId", id);
    }
    answer
}

/// Writes where a send (or reply) was stored into its answer: the send response header's
/// fields, and the broker's region and trace switch.
pub(super) fn stored_at(answer: &mut RemotingCommand, msg_id: String, queue_id: i32, offset: i64) {
    let fields = StoredAt {
        msg_id,
        queue_id,
        offset,
    };
    if answer.ext_fields.is_empty() {
        // Written straight into the frame.
        answer.ext_fields = ExtFields::typed(Arc::new(fields));
    } else {
        fields.write_fields(&mut answer.ext_fields);
    }
}

/// The fields [`stored_at`] writes, in key order.
#[derive(Debug)]
struct StoredAt {
    msg_id: String,
    queue_id: i32,
    offset: i64,
}

impl TypedFields for StoredAt {
    fn write_fields(&self, sink: &mut dyn FieldSink) {
        sink.str_field(property::MSG_REGION, "DefaultRegion");
        sink.str_field(property::TRACE_SWITCH, "true");
        sink.str_field("msgId", &self.msg_id);
        sink.int_field("queueId", i64::from(self.queue_id));
        sink.int_field("queueOffset", self.offset);
    }

    fn text_len_hint(&self) -> usize {
        // Keys, region, switch and digits.
        96 + self.msg_id.len()
    }
}

#[cfg(test)]
mod stored_at_tests {
    use super::*;

    /// The keys a typed header writes.
    struct Keys(Vec<&'static str>);

    impl FieldSink for Keys {
        fn str_field(&mut self, key: &'static str, _: &str) {
            self.0.push(key);
        }

        fn int_field(&mut self, key: &'static str, _: i64) {
            self.0.push(key);
        }
    }

    /// Out of order, the codec would write them from sorted entries instead: the same bytes,
    /// without the shortcut.
    #[test]
    fn the_send_answer_writes_its_fields_in_key_order() {
        let mut keys = Keys(Vec::new());
        StoredAt {
            msg_id: "7F00000100002A9F0000000000000000".into(),
            queue_id: 1,
            offset: 2,
        }
        .write_fields(&mut keys);
        assert_eq!(keys.0.len(), 5);
        assert!(keys.0.windows(2).all(|w| w[0] < w[1]), "{:?}", keys.0);
    }
}
