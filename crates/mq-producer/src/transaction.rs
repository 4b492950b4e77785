//! Transactional sends (spec §7.15): a half message, the user's local transaction, then
//! END_TRANSACTION; the broker's CHECK_TRANSACTION_STATE is answered by the listener.

use std::sync::Arc;
use std::time::Duration;

use mq_client_api::header::{
    CheckTransactionStateRequestHeader, EndTransactionRequestHeader, transaction_type,
};
use mq_client_api::message::{decode_offset_msg_id, property};
use mq_client_api::{Message, MessageExt, SendResult, SendStatus};
use tracing::{debug, warn};

use crate::error::ProducerError;
use crate::producer::Producer;

/// The outcome of a local transaction. Java: `LocalTransactionState`.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
#[non_exhaustive]
pub enum LocalTransactionState {
    /// Make the message visible.
    Commit,
    /// Discard the message.
    Rollback,
    /// Not known yet: the broker will ask again (CHECK_TRANSACTION_STATE).
    Unknown,
}

impl LocalTransactionState {
    fn wire(self) -> i32 {
        match self {
            Self::Commit => transaction_type::COMMIT,
            Self::Rollback => transaction_type::ROLLBACK,
            Self::Unknown => transaction_type::NOT_TYPE,
        }
    }
}

/// Runs the local transaction and answers the broker's checks. Java: `TransactionListener`.
pub trait TransactionListener: Send + Sync + 'static {
    /// Runs the local transaction for a half message that was stored. `arg` is what the
    /// caller passed to [`TransactionProducer::send_in_transaction`].
    fn execute(&self, msg: &Message, arg: &str) -> LocalTransactionState;
    /// The broker asks about a half message left undecided.
    fn check(&self, msg: &MessageExt) -> LocalTransactionState;
}

/// What a transactional send reports.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct TransactionSendResult {
    /// The half message's send result.
    pub send: SendResult,
    /// What the local transaction decided (rollback without running it when the half
    /// message was not stored safely).
    pub local_state: LocalTransactionState,
}

/// A producer that sends in transactions. Java: `TransactionMQProducer`.
///
/// ```no_run
/// # async fn demo() -> Result<(), mq_producer::ProducerError> {
/// use std::sync::Arc;
/// use mq_client_api::{Message, MessageExt};
/// use mq_producer::{
///     LocalTransactionState, Producer, ProducerConfig, TransactionListener, TransactionProducer,
/// };
///
/// struct Payments;
/// impl TransactionListener for Payments {
///     fn execute(&self, _msg: &Message, order: &str) -> LocalTransactionState {
///         // Run the local transaction for `order`; commit makes the message visible.
///         LocalTransactionState::Commit
///     }
///     fn check(&self, _msg: &MessageExt) -> LocalTransactionState {
///         // The broker asks about a message left undecided: look the order up.
///         LocalTransactionState::Rollback
///     }
/// }
///
/// let producer = Producer::new(ProducerConfig::new("payments_producer", "127.0.0.1:9876"));
/// let tx = TransactionProducer::new(producer, Arc::new(Payments));
/// tx.producer().start().await?;
/// let r = tx.send_in_transaction(Message::new("Payments", "order 42 paid"), "42").await?;
/// println!("{:?}", r.local_state);
/// tx.producer().shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct TransactionProducer {
    producer: Producer,
}

impl TransactionProducer {
    /// Wraps a (not yet started) producer, installing `listener` for local transactions and
    /// broker checks.
    pub fn new(producer: Producer, listener: Arc<dyn TransactionListener>) -> Self {
        producer.set_transaction_listener(listener);
        Self { producer }
    }

    /// The producer underneath.
    pub fn producer(&self) -> &Producer {
        &self.producer
    }

    /// Sends `msg` as a half message, runs the local transaction, and commits or rolls back
    /// (END_TRANSACTION, oneway as Java sends it). `Unknown` leaves the decision to the
    /// broker's later check.
    ///
    /// # Errors
    /// As for [`Producer::send`] for the half message. A failure to send END_TRANSACTION is
    /// only logged: the broker's check decides then.
    pub async fn send_in_transaction(
        &self,
        mut msg: Message,
        arg: &str,
    ) -> Result<TransactionSendResult, ProducerError> {
        msg.set_property(property::TRANSACTION_PREPARED, "true");
        msg.set_property(
            property::PRODUCER_GROUP,
            self.producer.config().group.clone(),
        );
        let send = self.producer.send(msg.clone()).await?;
        let local_state = if send.status == SendStatus::SendOk {
            msg.transaction_id = Some(send.msg_id.clone());
            match self.producer.transaction_listener() {
                Some(l) => l.execute(&msg, arg),
                None => LocalTransactionState::Unknown,
            }
        } else {
            LocalTransactionState::Rollback
        };
        let header = EndTransactionRequestHeader {
            producer_group: self.producer.config().group.clone(),
            tran_state_table_offset: send.queue_offset,
            commit_log_offset: decode_offset_msg_id(&send.offset_msg_id).map_or(0, |(_, o)| o),
            commit_or_rollback: local_state.wire(),
            from_transaction_check: Some(false),
            msg_id: send.msg_id.clone(),
            transaction_id: send.transaction_id.clone(),
            topic: None,
        };
        let addr = decode_offset_msg_id(&send.offset_msg_id)
            .map(|(a, _)| a.to_string())
            .ok();
        match (self.producer.instance(), addr) {
            (Some(instance), Some(addr)) => {
                if let Err(e) = instance
                    .api()
                    .end_transaction_oneway(
                        &addr,
                        &header,
                        None,
                        self.producer.config().send_timeout,
                    )
                    .await
                {
                    warn!(cause = %e, "END_TRANSACTION not sent; the broker will check");
                }
            }
            _ => warn!("no broker address for END_TRANSACTION; the broker will check"),
        }
        Ok(TransactionSendResult { send, local_state })
    }

    /// Starts the producer.
    ///
    /// # Errors
    /// As for [`Producer::start`].
    pub async fn start(&self) -> Result<(), ProducerError> {
        self.producer.start().await
    }

    /// Shuts the producer down.
    pub async fn shutdown(&self) {
        self.producer.shutdown().await;
    }
}

/// Answers one CHECK_TRANSACTION_STATE with END_TRANSACTION to the asking broker.
pub(crate) async fn answer_check(
    producer: Producer,
    listener: Arc<dyn TransactionListener>,
    broker_addr: String,
    mut msg: MessageExt,
    header: CheckTransactionStateRequestHeader,
) {
    msg.message.transaction_id = msg.message.uniq_key().map(str::to_owned);
    let state = listener.check(&msg);
    let end = EndTransactionRequestHeader {
        producer_group: producer.config().group.clone(),
        tran_state_table_offset: header.tran_state_table_offset,
        commit_log_offset: header.commit_log_offset,
        commit_or_rollback: state.wire(),
        from_transaction_check: Some(true),
        msg_id: msg
            .message
            .uniq_key()
            .map_or_else(|| msg.msg_id(), str::to_owned),
        transaction_id: header.transaction_id.clone(),
        topic: None,
    };
    let Some(instance) = producer.instance() else {
        return;
    };
    match instance
        .api()
        .end_transaction_oneway(&broker_addr, &end, None, Duration::from_secs(3))
        .await
    {
        Ok(()) => debug!(broker = %broker_addr, ?state, "transaction check answered"),
        Err(e) => warn!(broker = %broker_addr, cause = %e, "answering a transaction check failed"),
    }
}
