//! Send hooks: code that sees every attempt before and after it goes out (tracing, auditing).
//! Java: `SendMessageHook` with `SendMessageContext`.

use mq_client_api::{ClientApiError, Message, MessageQueue, SendResult};

/// How a send was made.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
#[non_exhaustive]
pub enum CommunicationMode {
    /// Awaited by the caller.
    Sync,
    /// Completed through a future or callback.
    Async,
    /// No answer expected.
    Oneway,
}

/// What a hook sees of one attempt.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct SendContext<'a> {
    /// Producer group.
    pub producer_group: &'a str,
    /// The message as sent (its `UNIQ_KEY` set; the body as the user gave it).
    pub message: &'a Message,
    /// The queue of this attempt.
    pub queue: &'a MessageQueue,
    /// The broker address of this attempt.
    pub broker_addr: &'a str,
    /// How the send was made.
    pub mode: CommunicationMode,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// The broker's answer (after-hook of a sync or async success).
    pub result: Option<&'a SendResult>,
    /// The failure (after-hook of a failed attempt).
    pub error: Option<&'a ClientApiError>,
}

/// Runs before and after every send attempt. Panics in hooks are not caught; keep them small.
pub trait SendHook: Send + Sync {
    /// A name for logs.
    fn name(&self) -> &str;
    /// Before the attempt is written (`result` and `error` are `None`).
    fn before(&self, ctx: &SendContext<'_>);
    /// After the attempt's outcome is known.
    fn after(&self, ctx: &SendContext<'_>);
}
