//! PULL_MESSAGE and LITE_PULL_MESSAGE: reads from a queue, parked (long polling) until
//! something arrives or the suspend time passes.

use std::sync::Arc;

use bytes::Bytes;
use mq_client_api::ResponseCode;
use mq_client_api::body::{TopicConfig, perm};
use mq_client_api::header::{
    CommandHeader, PullMessageRequestHeader, PullMessageResponseHeader, pull_sys_flag,
};
use mq_client_api::names::expression_tags;
use mq_client_api::validate::java_hash;
use mq_remoting::RemotingCommand;
use tokio::time::Instant;

use mq_client_api::answer::{header_error, respond};

use super::CoreHandle;
use crate::store::GetStatus;

impl CoreHandle {
    /// The config of `topic` when it exists, is readable and has queue `queue_id`, or the code and a Java broker's remark saying why not (`reading` names the read
    /// in it; `bad_queue` is the code for a queue it does not have).
    pub(super) fn readable_queue(
        &self,
        topic: &str,
        queue_id: i32,
        reading: &str,
        bad_queue: ResponseCode,
    ) -> Result<TopicConfig, (ResponseCode, String)> {
        let Some(tc) = self.0.topics.get(topic) else {
            return Err((
                ResponseCode::TOPIC_NOT_EXIST,
                format!("topic[{topic}] not exist, apply first please!"),
            ));
        };
        if tc.perm & perm::READ == 0 {
            return Err((
                ResponseCode::NO_PERMISSION,
                format!("the topic[{topic}] {reading} message is forbidden"),
            ));
        }
        if queue_id < -1
            || queue_id >= tc.read_queue_nums
            || (queue_id == -1 && reading == "pulling")
        {
            return Err((
                bad_queue,
                format!(
                    "queueId[{queue_id}] is illegal, topic:[{topic}] topicConfig.readQueueNums:[{}]",
                    tc.read_queue_nums
                ),
            ));
        }
        Ok(tc)
    }

    pub(crate) async fn pull(self: &Arc<Self>, req: RemotingCommand) -> RemotingCommand {
        let h = match PullMessageRequestHeader::decode(&req.ext_fields) {
            Ok(h) => h,
            Err(e) => return header_error(&req, &e),
        };
        if let Err((code, remark)) =
            self.readable_queue(&h.topic, h.queue_id, "pulling", ResponseCode::SYSTEM_ERROR)
        {
            return respond(&req, code, Some(remark));
        }
        if h.sys_flag & pull_sys_flag::COMMIT_OFFSET != 0 && h.commit_offset >= 0 {
            self.0
                .offsets
                .commit(&h.consumer_group, &h.topic, h.queue_id, h.commit_offset);
        }
        let tags: Option<Vec<i64>> = h
            .subscription
            .as_deref()
            .and_then(expression_tags)
            .map(|tags| tags.map(|t| i64::from(java_hash(t))).collect());
        let max = usize::try_from(h.max_msg_nums).unwrap_or(0).clamp(1, 512);
        let suspend = h.sys_flag & pull_sys_flag::SUSPEND != 0 && h.suspend_timeout_millis > 0;
        let deadline =
            Instant::now() + mq_client_api::wire_time::millis_duration(h.suspend_timeout_millis);
        // Only a pull that may park watches its queue.
        let watch = suspend.then(|| self.0.store.watch_queue(&h.topic, h.queue_id));
        loop {
            // Registered before reading, so an append racing with the read wakes the wait
            // below.
            let mut appended = watch.as_ref().map(|w| Box::pin(w.notified()));
            if let Some(n) = appended.as_mut() {
                n.as_mut().enable();
            }
            let got =
                match self
                    .0
                    .store
                    .get(&h.topic, h.queue_id, h.queue_offset, max, tags.as_deref())
                {
                    Ok(g) => g,
                    Err(e) => {
                        return respond(&req, ResponseCode::SYSTEM_ERROR, Some(e.to_string()));
                    }
                };
            let (code, next) = match got.status {
                GetStatus::Found => (ResponseCode::SUCCESS, got.next_begin_offset),
                GetStatus::NoMatchedMessage => {
                    (ResponseCode::PULL_RETRY_IMMEDIATELY, got.next_begin_offset)
                }
                GetStatus::NoMessageInQueue if h.queue_offset != 0 => {
                    (ResponseCode::PULL_OFFSET_MOVED, got.next_begin_offset)
                }
                GetStatus::NoMessageInQueue | GetStatus::OffsetOverflowOne => {
                    (ResponseCode::PULL_NOT_FOUND, got.next_begin_offset)
                }
                GetStatus::OffsetTooSmall | GetStatus::OffsetOverflowBadly => {
                    (ResponseCode::PULL_OFFSET_MOVED, got.next_begin_offset)
                }
            };
            let park = code == ResponseCode::PULL_NOT_FOUND && Instant::now() < deadline;
            if park && let Some(appended) = appended {
                let woke = tokio::select! {
                    () = self.0.token.cancelled() => false,
                    r = tokio::time::timeout_at(deadline, appended) => r.is_ok(),
                };
                if woke {
                    continue;
                }
            }
            let mut answer = respond(&req, code, None);
            PullMessageResponseHeader {
                suggest_which_broker_id: 0,
                next_begin_offset: next,
                min_offset: got.min_offset,
                max_offset: got.max_offset,
            }
            .encode(&mut answer.ext_fields);
            return answer.with_body(if code == ResponseCode::SUCCESS {
                got.body
            } else {
                Bytes::new()
            });
        }
    }
}
