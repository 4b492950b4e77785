//! [`PullConsumer`]: the lite pull consumer. Subscribe (rebalanced with the group) or assign
//! queues, then `poll`; offsets are committed automatically or with [`PullConsumer::commit`].
//! Java: `DefaultLitePullConsumer`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use mq_client_api::body::ConsumeType;
use mq_client_api::{MessageExt, MessageQueue};
use mq_client_instance::ServiceState;
use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::config::ConsumerConfig;
use crate::core::{Core, Delivery, Handle, restore_retry_topic};
use crate::error::ConsumerError;

/// A lite pull consumer.
///
/// ```no_run
/// # async fn demo() -> Result<(), mq_consumer::ConsumerError> {
/// use std::time::Duration;
/// use mq_consumer::{ConsumerConfig, PullConsumer};
///
/// let consumer = PullConsumer::new(
///     ConsumerConfig::new("orders_reader", "127.0.0.1:9876").with_auto_commit(false),
/// );
/// consumer.subscribe("Orders", "*")?;
/// consumer.start().await?;
/// for m in consumer.poll(Duration::from_secs(1)).await? {
///     println!("{} #{}", m.message.topic, m.queue_offset);
/// }
/// consumer.commit().await; // what poll returned counts as consumed
/// consumer.shutdown().await;
/// # Ok(()) }
/// ```
///
/// Dropping a running consumer without [`PullConsumer::shutdown`] stops it at once, as for a
/// [`PushConsumer`](crate::PushConsumer): offsets committed since the last persist interval
/// and kept on the brokers are not sent, so those messages are consumed again.
#[derive(Debug)]
pub struct PullConsumer {
    core: Handle,
    rx: tokio::sync::Mutex<mpsc::Receiver<Delivery>>,
    /// Next offset after what `poll` returned, per queue, not yet committed.
    polled: Mutex<HashMap<MessageQueue, i64>>,
}

impl PullConsumer {
    /// A consumer with `config` (state CREATED).
    pub fn new(config: ConsumerConfig) -> Self {
        let (core, rx) = Core::new(config, ConsumeType::Actively);
        Self {
            core: Handle(core),
            rx: tokio::sync::Mutex::new(rx),
            polled: Mutex::new(HashMap::new()),
        }
    }

    /// Subscribes to `topic` with a tag expression; queues are shared with the group.
    ///
    /// # Errors
    /// [`ConsumerError::State`] after start.
    pub fn subscribe(&self, topic: &str, expression: &str) -> Result<(), ConsumerError> {
        self.core.subscribe(topic, expression)
    }

    /// Takes exactly these queues instead of rebalancing.
    pub fn assign(&self, queues: Vec<MessageQueue>) {
        self.core.assign(queues);
    }

    /// The lifecycle state.
    pub fn state(&self) -> ServiceState {
        self.core.state.get()
    }

    /// The shared client instance (after start, until shutdown).
    pub fn instance(&self) -> Option<Arc<mq_client_instance::ClientInstance>> {
        self.core.instance.read().clone()
    }

    /// Queues currently assigned.
    pub fn assignment(&self) -> Vec<MessageQueue> {
        let mut q: Vec<MessageQueue> = self.core.queues.lock().keys().cloned().collect();
        q.sort();
        q
    }

    /// Starts fetching.
    ///
    /// # Errors
    /// [`ConsumerError::State`] when started twice; configuration and instance errors.
    pub async fn start(&self) -> Result<(), ConsumerError> {
        self.core.start().await
    }

    /// Waits up to `timeout` for messages; returns at most one pull batch, possibly empty.
    /// With auto-commit on, what is returned counts as consumed.
    ///
    /// # Errors
    /// [`ConsumerError::State`] when not running.
    pub async fn poll(&self, timeout: Duration) -> Result<Vec<MessageExt>, ConsumerError> {
        if self.core.state.get() != ServiceState::Running {
            return Err(ConsumerError::State(self.core.state.get()));
        }
        let max = usize::try_from(self.core.config.pull_batch_size).unwrap_or(32);
        let mut rx = self.rx.lock().await;
        let mut out = Vec::new();
        let first = tokio::time::timeout(timeout, rx.recv()).await;
        let mut next = match first {
            Ok(Some(d)) => Some(d),
            Ok(None) | Err(_) => None,
        };
        while let Some(d) = next.take() {
            self.take(d, &mut out);
            if out.len() >= max {
                break;
            }
            next = rx.try_recv().ok();
        }
        Ok(out)
    }

    fn take(&self, d: Delivery, out: &mut Vec<MessageExt>) {
        // A delivery from before a seek or a rebalance is stale.
        if d.pq.dropped.is_cancelled() {
            return;
        }
        let group = self.core.group.read().clone();
        let offsets: Vec<i64> = d.msgs.iter().map(|m| m.queue_offset).collect();
        let store = self.core.offsets.read().clone();
        d.pq.remove_and_record(&offsets, |next| {
            if self.core.config.auto_commit {
                if let Some(store) = store {
                    store.update(&d.mq, next);
                }
            } else {
                self.polled.lock().insert(d.mq.clone(), next);
            }
        });
        for mut m in d.msgs {
            restore_retry_topic(&group, &mut m);
            out.push(m);
        }
    }

    /// Commits the offsets of everything polled so far and writes them out now.
    pub async fn commit(&self) {
        let polled: Vec<(MessageQueue, i64)> = self.polled.lock().drain().collect();
        if let Some(store) = self.core.offsets.read().clone() {
            for (mq, o) in &polled {
                store.update(mq, *o);
            }
        }
        self.core.persist_offsets().await;
    }

    /// Continues `mq` from `offset`.
    ///
    /// # Errors
    /// [`ConsumerError::NotAssigned`] when the queue is not assigned to this consumer.
    pub fn seek(&self, mq: &MessageQueue, offset: i64) -> Result<(), ConsumerError> {
        let wrapped = MessageQueue::new(
            self.core.config.client.wrap(&mq.topic),
            &mq.broker_name,
            mq.queue_id,
        );
        if !self.core.queues.lock().contains_key(&wrapped) {
            return Err(ConsumerError::NotAssigned(mq.to_string()));
        }
        self.polled.lock().remove(&wrapped);
        self.core.start_fetch(wrapped, offset);
        Ok(())
    }

    /// Stops fetching, persists offsets (auto-commit) and leaves the group.
    pub async fn shutdown(&self) {
        self.core.shutdown().await;
    }
}
