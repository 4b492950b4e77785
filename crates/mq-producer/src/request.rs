//! Request-reply (4.6+): [`Producer::request`] sends a message and waits for the reply a
//! consumer of it sends back; [`reply_message`] and [`Producer::reply`] build and send that reply.
//!
//! The request carries `CORRELATION_ID` (a random UUID), `REPLY_TO_CLIENT` (this client's id)
//! and `TTL` (the timeout in ms). Its broker stamps `CLUSTER` on it. The replier sends its reply
//! to `<CLUSTER>_REPLY_TOPIC` with `MSG_TYPE=reply` (SEND_REPLY_MESSAGE_V2), and the broker pushes
//! it over the requester's connection (PUSH_REPLY_MESSAGE_TO_CLIENT), where the client instance
//! hands it to the waiting request by its correlation id.
//!
//! ```no_run
//! # async fn demo(requester: mq_producer::Producer, replier: mq_producer::Producer,
//! #     request: mq_client_api::message::MessageExt) -> Result<(), mq_producer::ProducerError> {
//! use std::time::Duration;
//! use mq_client_api::Message;
//!
//! // The requester: one call, one reply (or an error by the deadline).
//! let reply = requester
//!     .request(Message::new("Prices", "EURUSD?"), Duration::from_secs(3))
//!     .await?;
//! println!("answered {:?}", reply.message.body);
//!
//! // The replier, given a request its consumer received:
//! replier.reply(&request.message, "1.0842").await?;
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use mq_client_api::message::{MessageExt, property};
use mq_client_api::{Message, MessageQueue, SendResult};
use tokio::time::Instant;

use crate::error::{ProducerError, SendError};
use crate::hook::CommunicationMode;
use crate::producer::{Engine, Payload, Producer, Target, handed_back, same_topic, stored};

/// The future of [`Producer::request_async`]: the reply, or the request handed back with why.
pub type RequestFuture = mq_remoting::BoxFuture<'static, Result<MessageExt, SendError>>;

impl Producer {
    /// Sends `msg` as a request and waits for its reply, all within `timeout`: the send with
    /// its retries, then the reply.
    ///
    /// # Errors
    /// As for [`Producer::send`], and [`ProducerError::NoReply`] when the request was stored
    /// but no reply came in time (one that comes later is dropped). The request is handed
    /// back.
    pub async fn request(&self, msg: Message, timeout: Duration) -> Result<MessageExt, SendError> {
        Arc::clone(&self.inner).request(msg, None, timeout).await
    }

    /// [`Producer::request`] to an explicit queue.
    ///
    /// # Errors
    /// [`ProducerError::TopicMismatch`] when the queue belongs to another topic; as for
    /// [`Producer::request`] otherwise.
    pub async fn request_to_queue(
        &self,
        msg: Message,
        queue: MessageQueue,
        timeout: Duration,
    ) -> Result<MessageExt, SendError> {
        let (msg, queue) = same_topic(msg, queue)?;
        Arc::clone(&self.inner)
            .request(msg, Some(queue), timeout)
            .await
    }

    /// [`Producer::request`] as a `'static` future, which keeps the producer running until it
    /// has its outcome. The deadline starts now.
    pub fn request_async(&self, msg: Message, timeout: Duration) -> RequestFuture {
        let engine = Arc::clone(&self.inner);
        let owner = self.owner.clone();
        let started = Instant::now();
        Box::pin(async move {
            let _owner = owner;
            let left = timeout.saturating_sub(started.elapsed());
            engine.request(msg, None, left).await
        })
    }

    /// [`Producer::request`] in the background: `callback` is called exactly once with the
    /// reply or the failure. The task is owned by the producer: [`Producer::shutdown`] waits
    /// for it.
    ///
    /// # Errors
    /// [`ProducerError::State`] when the producer is not running (the callback is then not
    /// called), with the message handed back.
    pub fn request_with_callback<F>(
        &self,
        msg: Message,
        timeout: Duration,
        callback: F,
    ) -> Result<(), SendError>
    where
        F: FnOnce(Result<MessageExt, SendError>) + Send + 'static,
    {
        if let Err(e) = self.inner.ensure_running() {
            return Err(SendError::new(e, msg));
        }
        self.inner
            .spawn_callback(self.request_async(msg, timeout), callback);
        Ok(())
    }

    /// Sends the reply to `request` (a message a consumer received, sent with
    /// [`Producer::request`] or Java's `request`): see [`reply_message`].
    ///
    /// # Errors
    /// [`ProducerError::NotARequest`] when `request` lacks the request-reply properties; as
    /// for [`Producer::send`] otherwise (SYSTEM_ERROR when the requester is gone).
    pub async fn reply(
        &self,
        request: &Message,
        body: impl Into<Bytes>,
    ) -> Result<SendResult, SendError> {
        let body = body.into();
        match reply_message(request, body.clone()) {
            Ok(reply) => self.send(reply).await,
            Err(e) => Err(SendError::new(e, Message::new("", body))),
        }
    }
}

/// The reply to `request`: to `<CLUSTER>_REPLY_TOPIC`, `MSG_TYPE=reply`, with the request's
/// correlation id, reply-to client and TTL. Send it with any producer ([`Producer::send`]): a
/// reply goes out as SEND_REPLY_MESSAGE_V2, which its broker pushes to the requester. Java:
/// `MessageUtil.createReplyMessage`.
///
/// # Errors
/// [`ProducerError::NotARequest`] naming the first property of `CLUSTER` (stamped by the
/// broker), `CORRELATION_ID` and `REPLY_TO_CLIENT` that `request` lacks.
pub fn reply_message(request: &Message, body: impl Into<Bytes>) -> Result<Message, ProducerError> {
    let get = |name: &'static str| {
        request
            .property(name)
            .filter(|v| !v.is_empty())
            .ok_or(ProducerError::NotARequest { missing: name })
    };
    let cluster = get(property::CLUSTER)?;
    let correlation_id = get(property::CORRELATION_ID)?;
    let reply_to = get(property::REPLY_TO_CLIENT)?;
    let mut reply = Message::new(mq_client_api::names::reply_topic(cluster), body);
    reply.set_property(property::MSG_TYPE, property::REPLY_MESSAGE_FLAG);
    reply.set_property(property::CORRELATION_ID, correlation_id);
    reply.set_property(property::REPLY_TO_CLIENT, reply_to);
    if let Some(ttl) = request.property(property::TTL) {
        reply.set_property(property::TTL, ttl);
    }
    Ok(reply)
}

impl Engine {
    /// One request: registered by its correlation id before it is sent (a reply cannot
    /// outrun its waiter), sent as a sync send, then the reply awaited, all within `timeout`.
    pub(crate) async fn request(
        self: Arc<Self>,
        mut msg: Message,
        queue: Option<MessageQueue>,
        timeout: Duration,
    ) -> Result<MessageExt, SendError> {
        let deadline = Instant::now() + timeout;
        let instance = match self.running_instance() {
            Ok(i) => i,
            Err(e) => return Err(SendError::new(e, msg)),
        };
        let correlation_id = uuid::Uuid::new_v4().to_string();
        msg.set_property(property::CORRELATION_ID, &correlation_id);
        msg.set_property(property::REPLY_TO_CLIENT, instance.client_id());
        msg.set_property(property::TTL, timeout.as_millis().to_string());
        let pending = instance.expect_reply(correlation_id);
        // Brokers push the reply over the connection this client heartbeats them on: learn the
        // topic's brokers, and heartbeat those that do not know this client yet.
        let topic = instance.config().wrap(&msg.topic);
        if let Err(e) = self.publish_info(&instance, &topic, deadline).await {
            return Err(SendError::new(e, msg));
        }
        // Bounded by the deadline; a failed heartbeat shows as no reply (or a failed send).
        let _ = tokio::time::timeout_at(deadline, instance.heartbeat_unseen_brokers()).await;
        let target = queue.map_or(Target::Auto, Target::Queue);
        let mut payload = Payload::Single(msg);
        let sent = self
            .send_core(&mut payload, &target, CommunicationMode::Sync, deadline)
            .await
            .and_then(stored);
        if let Err(e) = sent {
            return handed_back(Err(e), payload);
        }
        let correlation_id = pending.correlation_id().to_owned();
        match pending.wait_until(deadline).await {
            Some(reply) => Ok(reply),
            None => {
                let msg = payload.into_message();
                let e = ProducerError::NoReply {
                    topic: msg.topic.clone(),
                    correlation_id,
                    timeout,
                };
                Err(SendError::new(e, msg))
            }
        }
    }
}
