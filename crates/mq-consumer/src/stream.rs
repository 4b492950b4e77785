//! [`StreamConsumer`]: the consumer engine's messages as a [`futures_util::Stream`], one
//! [`Received`] message at a time, each acknowledged explicitly, in the style of rdkafka's
//! `StreamConsumer`.
//!
//! The engine is the push consumer's: subscriptions, rebalancing, one long-polling fetch per
//! queue with flow control, the group's retry topic, and offsets the engine commits itself.
//! The committed offset of a queue is the lowest offset not yet acknowledged there, so a
//! message that is never acknowledged is delivered again after a restart or a rebalance, and
//! holds back every later message of its queue. Unacknowledged messages also count against
//! the queue's flow-control limits (`queue_max_messages`, `queue_max_bytes`): a consumer that
//! stops acknowledging stops fetching.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::Stream;
use mq_client_api::{MessageExt, MessageQueue};
use mq_client_instance::{ClientInstance, ServiceState};
use tokio::sync::mpsc;
use tokio_util::sync::WaitForCancellationFutureOwned;

use crate::config::ConsumerConfig;
use crate::core::{Core, Delivery, ProcessQueue, restore_retry_topic};
use crate::error::ConsumerError;
use crate::push::PushConsumer;

/// A consumer whose messages arrive as a [`Stream`] of [`Received`] messages.
///
/// ```no_run
/// # async fn demo() -> Result<(), mq_consumer::ConsumerError> {
/// use futures_util::StreamExt;
/// use mq_consumer::{ConsumerConfig, StreamConsumer};
///
/// let consumer = StreamConsumer::new(ConsumerConfig::new("my_group", "127.0.0.1:9876"));
/// consumer.subscribe("TopicTest", "*")?;
/// consumer.start().await?;
/// let mut messages = consumer.stream()?;
/// while let Some(received) = messages.next().await {
///     println!("{}", String::from_utf8_lossy(&received.message().message.body));
///     received.ack();
/// }
/// # Ok(()) }
/// ```
///
/// Dropping it without [`StreamConsumer::shutdown`] stops it at once, as for a
/// [`PushConsumer`]; its stream then ends.
#[derive(Debug)]
pub struct StreamConsumer {
    /// The push consumer's engine, whose deliveries the stream takes instead of a listener.
    push: PushConsumer,
}

impl StreamConsumer {
    /// A consumer with `config` (state CREATED).
    pub fn new(config: ConsumerConfig) -> Self {
        Self {
            push: PushConsumer::new(config),
        }
    }

    /// As [`PushConsumer::subscribe`]: before start.
    ///
    /// # Errors
    /// As for [`PushConsumer::subscribe`].
    pub fn subscribe(&self, topic: &str, expression: &str) -> Result<(), ConsumerError> {
        self.push.subscribe(topic, expression)
    }

    /// Joins the group and starts fetching.
    ///
    /// # Errors
    /// As for [`PushConsumer::start`].
    pub async fn start(&self) -> Result<(), ConsumerError> {
        self.push.core().start().await
    }

    /// The messages, in arrival order per queue. There is one stream per consumer; it ends
    /// when the consumer shuts down or is dropped.
    ///
    /// # Errors
    /// [`ConsumerError::State`] before start, or when the stream was taken already.
    pub fn stream(&self) -> Result<MessageStream, ConsumerError> {
        let core = self.push.core();
        let state = core.state.get();
        if state != ServiceState::Running {
            return Err(ConsumerError::State(state));
        }
        let rx = self.push.take_deliveries()?;
        Ok(MessageStream {
            group: core.group.read().clone(),
            core: Arc::clone(core),
            rx,
            stopped: Box::pin(core.token.clone().cancelled_owned()),
            ready: VecDeque::new(),
        })
    }

    /// As [`PushConsumer::state`].
    pub fn state(&self) -> ServiceState {
        self.push.state()
    }

    /// As [`PushConsumer::instance`].
    pub fn instance(&self) -> Option<Arc<ClientInstance>> {
        self.push.instance()
    }

    /// Stops fetching, commits the offsets acknowledged so far and leaves the group; the
    /// stream ends.
    pub async fn shutdown(&self) {
        self.push.shutdown().await;
    }
}

/// The [`Stream`] of a [`StreamConsumer`].
pub struct MessageStream {
    core: Arc<Core>,
    group: String,
    rx: mpsc::Receiver<Delivery>,
    stopped: Pin<Box<WaitForCancellationFutureOwned>>,
    /// Messages of deliveries already taken from the engine, not yet yielded.
    ready: VecDeque<Received>,
}

impl std::fmt::Debug for MessageStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageStream")
            .field("group", &self.group)
            .field("ready", &self.ready.len())
            .finish_non_exhaustive()
    }
}

impl Stream for MessageStream {
    type Item = Received;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Received>> {
        let this = &mut *self;
        loop {
            // Messages not yielded by then are not acknowledged: they come again.
            if this.stopped.as_mut().poll(cx).is_ready() {
                return Poll::Ready(None);
            }
            if let Some(r) = this.ready.pop_front() {
                // A queue rebalanced away since: its messages belong to another member now.
                if r.from.pq.dropped.is_cancelled() {
                    continue;
                }
                return Poll::Ready(Some(r));
            }
            match this.rx.poll_recv(cx) {
                Poll::Ready(Some(d)) => {
                    // One source for the delivery's messages, not a copy each.
                    let from = Arc::new(Source {
                        queue: d.mq,
                        pq: d.pq,
                        core: Arc::clone(&this.core),
                    });
                    for mut message in d.msgs {
                        restore_retry_topic(&this.group, &mut message);
                        this.ready.push_back(Received {
                            message,
                            from: Arc::clone(&from),
                        });
                    }
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// One message from a [`MessageStream`], to be acknowledged with [`Received::ack`] or handed
/// back with [`Received::retry_later`]. Dropped without either, it counts as not consumed: it
/// comes again after a restart or a rebalance.
pub struct Received {
    message: MessageExt,
    from: Arc<Source>,
}

/// Where the messages of one delivery came from, shared by them.
struct Source {
    /// The queue pulled, whose topic is the one the messages are stored under (the retry
    /// topic for a redelivery).
    queue: MessageQueue,
    pq: Arc<ProcessQueue>,
    core: Arc<Core>,
}

impl std::fmt::Debug for Received {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Received")
            .field("queue", &self.from.queue)
            .field("queue_offset", &self.message.queue_offset)
            .finish_non_exhaustive()
    }
}

impl Received {
    /// The message, under the topic it was sent to (also when it is a redelivery through the
    /// group's retry topic).
    pub fn message(&self) -> &MessageExt {
        &self.message
    }

    /// The queue it came from (the retry topic's queue for a redelivery).
    pub fn queue(&self) -> &MessageQueue {
        &self.from.queue
    }

    /// Takes the message out of the acknowledgement: it then counts as not consumed.
    pub fn into_message(self) -> MessageExt {
        self.message
    }

    /// Marks the message consumed: the committed offset of its queue moves past it once every
    /// earlier message of the queue is acknowledged too.
    pub fn ack(self) {
        let from = &self.from;
        from.core
            .ack_offsets(&from.queue, &from.pq, &[self.message.queue_offset]);
    }

    /// Hands the message back to the broker for a delayed retry (through the group's retry
    /// topic; to the DLQ after `max_reconsume_times`) and marks it consumed here.
    /// `delay_level` 0 lets the broker choose (3 + reconsume times).
    ///
    /// # Errors
    /// When the broker does not take it back; the message is then not consumed, and comes
    /// again after a restart or a rebalance.
    pub async fn retry_later(self, delay_level: i32) -> Result<(), ConsumerError> {
        let from = &self.from;
        from.core
            .send_back(&from.queue, &self.message, &from.queue.topic, delay_level)
            .await?;
        self.ack();
        Ok(())
    }
}
