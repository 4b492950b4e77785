//! Request-reply (4.6+), the requester's side: requests waiting for their reply by correlation
//! id, and the reading of the replies brokers push (PUSH_REPLY_MESSAGE_TO_CLIENT, 326).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use mq_client_api::header::ReplyMessageRequestHeader;
use mq_client_api::message::{MessageExt, decode_properties, decompress_for, property};
use mq_client_api::{Message, wire_time};
use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// Requests waiting for their reply, by correlation id.
#[derive(Debug, Default)]
pub(crate) struct ReplyTable {
    waiting: Mutex<HashMap<String, oneshot::Sender<MessageExt>, foldhash::fast::RandomState>>,
}

impl ReplyTable {
    /// Registers `correlation_id`; the reply is awaited on the returned [`PendingReply`].
    pub(crate) fn expect(self: &Arc<Self>, correlation_id: String) -> PendingReply {
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().insert(correlation_id.clone(), tx);
        PendingReply {
            table: Arc::clone(self),
            correlation_id,
            rx,
        }
    }

    /// Hands a reply to its request. `false` when no request waits for it (it came late, or
    /// was not meant for this client): the reply is dropped.
    pub(crate) fn complete(&self, reply: MessageExt) -> bool {
        let Some(id) = reply.message.property(property::CORRELATION_ID) else {
            return false;
        };
        let waiter = self.waiting.lock().remove(id);
        waiter.is_some_and(|tx| tx.send(reply).is_ok())
    }

    /// Requests waiting.
    pub(crate) fn len(&self) -> usize {
        self.waiting.lock().len()
    }
}

/// A request waiting for its reply. Dropping it stops the wait: a reply that comes later is
/// dropped.
#[derive(Debug)]
pub struct PendingReply {
    table: Arc<ReplyTable>,
    correlation_id: String,
    rx: oneshot::Receiver<MessageExt>,
}

impl PendingReply {
    /// The correlation id the reply must carry.
    pub fn correlation_id(&self) -> &str {
        &self.correlation_id
    }

    /// Waits for the reply until `deadline`; `None` when none came by then.
    pub async fn wait_until(mut self, deadline: Instant) -> Option<MessageExt> {
        tokio::time::timeout_at(deadline, &mut self.rx)
            .await
            .ok()
            .and_then(Result::ok)
    }
}

impl Drop for PendingReply {
    fn drop(&mut self) {
        self.table.waiting.lock().remove(&self.correlation_id);
    }
}

/// The reply a broker pushed: the replier's message as the broker saw it, its body
/// decompressed, with `ARRIVE_TIME` set to now.
///
/// # Errors
/// A body that does not decompress as its sysFlag says.
pub(crate) fn read_pushed_reply(
    header: ReplyMessageRequestHeader,
    body: &bytes::Bytes,
) -> Result<MessageExt, mq_client_api::message::CompressionError> {
    let body = match decompress_for(header.sys_flag, body)? {
        Some(plain) => bytes::Bytes::from(plain),
        None => body.clone(),
    };
    let mut properties = decode_properties(header.properties.as_deref().unwrap_or(""));
    properties.insert(property::ARRIVE_TIME, &wire_time::now_millis().to_string());
    let unknown = || SocketAddr::from(([0, 0, 0, 0], 0));
    Ok(MessageExt {
        message: Message::from_parts(header.topic, header.flag, properties, body),
        queue_id: header.queue_id,
        sys_flag: header.sys_flag,
        born_timestamp: header.born_timestamp,
        born_host: header.born_host.parse().unwrap_or_else(|_| unknown()),
        store_timestamp: header.store_timestamp,
        store_host: header.store_host.parse().unwrap_or_else(|_| unknown()),
        reconsume_times: header.reconsume_times.unwrap_or(0),
        ..MessageExt::default()
    })
}
