//! SEND_REPLY_MESSAGE (324) and SEND_REPLY_MESSAGE_V2 (325): a replier's reply is checked as a
//! send is, pushed to the requester's connection (PUSH_REPLY_MESSAGE_TO_CLIENT, 326), found by
//! the `REPLY_TO_CLIENT` client id, and stored in the reply topic when the broker keeps replies.

use std::sync::Arc;
use std::time::Duration;

use mq_client_api::answer::respond;
use mq_client_api::header::{
    CommandHeader, ReplyMessageRequestHeader, SendMessageRequestHeader, SendMessageRequestHeaderV2,
};
use mq_client_api::message::{MessageExt, property};
use mq_client_api::{RequestCode, ResponseCode, wire_time};
use mq_remoting::{RemotingCommand, RequestContext};
use tracing::{debug, warn};

use super::CoreHandle;

/// How long the requester's client has to take a pushed reply (Java waits 10 s; a requester
/// waits no longer than its own send timeout, 3 s by default).
const PUSH_TIMEOUT: Duration = Duration::from_secs(3);

impl CoreHandle {
    pub(crate) async fn reply(
        self: &Arc<Self>,
        ctx: &RequestContext,
        req: RemotingCommand,
    ) -> RemotingCommand {
        let plan = match self.plan_send(ctx, &req) {
            Ok(p) => p,
            Err(answer) => return answer,
        };
        if plan.created {
            self.spawn_register();
        }
        let queue_id = plan.queue_id;
        let Some(mut reply) = plan.messages.into_iter().next().filter(|_| !plan.batch) else {
            return respond(
                &req,
                ResponseCode::MESSAGE_ILLEGAL,
                Some("a reply is one message, not a batch".into()),
            );
        };
        // The reply names the cluster, pushed and stored (see `send_group`).
        reply
            .message
            .set_property(property::CLUSTER, &self.0.config.cluster_name);
        let pushed = self.push_reply(&req, &mut reply).await;
        let mut answer = match &pushed {
            Ok(()) => respond(&req, ResponseCode::SUCCESS, None),
            Err(remark) => respond(&req, ResponseCode::SYSTEM_ERROR, Some(remark.clone())),
        };
        // Java answers "0" when the reply is not stored: the client's decoder needs the fields.
        let (mut msg_id, mut queue_offset) = ("0".to_owned(), 0);
        if self.0.config.store_replies {
            match self
                .0
                .store
                .put_groups(vec![vec![reply]], self.0.addr)
                .await
                .pop()
            {
                Some(Ok(stored)) => {
                    if let Some(r) = stored.into_iter().next() {
                        (msg_id, queue_offset) = (r.msg_id(), r.queue_offset);
                    }
                }
                Some(Err(e)) => warn!(cause = %e, "storing a reply failed"),
                None => {}
            }
        }
        super::send::stored_at(&mut answer, msg_id, queue_id, queue_offset);
        answer
    }

    /// Pushes `reply` to the connection of the client its `REPLY_TO_CLIENT` names, stamping
    /// `PUSH_REPLY_TIME` on it. The error is the remark of the SYSTEM_ERROR answer.
    async fn push_reply(
        &self,
        req: &RemotingCommand,
        reply: &mut MessageExt,
    ) -> Result<(), String> {
        let Some(requester) = reply
            .message
            .property(property::REPLY_TO_CLIENT)
            .map(str::to_owned)
        else {
            return Err(format!(
                "reply message properties[{}] is null",
                property::REPLY_TO_CLIENT
            ));
        };
        let Some(connection) = self.0.clients.producer_connection(&requester) else {
            return Err(format!(
                "push reply message fail, channel of <{requester}> not found."
            ));
        };
        let send: SendMessageRequestHeader = if req.code == RequestCode::SEND_REPLY_MESSAGE.0 {
            SendMessageRequestHeader::decode(&req.ext_fields).map_err(|e| e.to_string())?
        } else {
            SendMessageRequestHeaderV2::decode(&req.ext_fields)
                .map_err(|e| e.to_string())?
                .into()
        };
        reply.message.set_property(
            property::PUSH_REPLY_TIME,
            wire_time::now_millis().to_string(),
        );
        let header = ReplyMessageRequestHeader {
            producer_group: send.producer_group.to_string(),
            topic: send.topic.to_string(),
            default_topic: send.default_topic.to_string(),
            default_topic_queue_nums: send.default_topic_queue_nums,
            queue_id: send.queue_id,
            sys_flag: send.sys_flag,
            born_timestamp: send.born_timestamp,
            flag: send.flag,
            properties: Some(reply.message.properties_string()),
            reconsume_times: send.reconsume_times,
            unit_mode: send.unit_mode,
            born_host: reply.born_host.to_string(),
            store_host: self.0.addr.to_string(),
            store_timestamp: wire_time::now_millis(),
        };
        let push = RemotingCommand::request(RequestCode::PUSH_REPLY_MESSAGE_TO_CLIENT.0)
            .with_ext_fields(header.to_ext_fields())
            .with_body(req.body.clone());
        match connection.invoke(push, PUSH_TIMEOUT).await {
            Ok(r) if r.code == ResponseCode::SUCCESS.0 => {
                debug!(requester, "reply pushed");
                Ok(())
            }
            Ok(r) => {
                warn!(requester, code = r.code, remark = ?r.remark, "the requester refused a reply");
                Err(format!("push reply message to {requester} fail."))
            }
            Err(e) => {
                warn!(requester, cause = %e, "pushing a reply failed");
                Err(format!("push reply message to {requester} fail: {e}"))
            }
        }
    }
}
