//! A transaction: the message is stored as a half message, the local transaction runs, and
//! the message is committed (becomes visible) or rolled back. The broker asks `check` about
//! a half message left undecided.
//!
//! ```sh
//! cargo run -p mq-producer --example transaction
//! ```

use std::sync::Arc;

use mq_client_api::{Message, MessageExt};
use mq_producer::{
    LocalTransactionState, Producer, ProducerConfig, TransactionListener, TransactionProducer,
};

/// Commits even-numbered orders and rolls the others back.
struct Orders;

impl TransactionListener for Orders {
    fn execute(&self, _msg: &Message, arg: &str) -> LocalTransactionState {
        match arg.parse::<u32>() {
            Ok(n) if n % 2 == 0 => LocalTransactionState::Commit,
            _ => LocalTransactionState::Rollback,
        }
    }

    fn check(&self, _msg: &MessageExt) -> LocalTransactionState {
        // A real service looks its own database up here.
        LocalTransactionState::Rollback
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let namesrv = std::env::var("NAMESRV_ADDR").unwrap_or_else(|_| "127.0.0.1:9876".into());
    let producer = Producer::new(ProducerConfig::new("example_tx", namesrv.as_str()));
    let tx = TransactionProducer::new(producer, Arc::new(Orders));
    tx.producer().start().await?;
    for n in 0..4 {
        let msg = Message::new("ExampleTransactions", format!("order {n}"));
        let r = tx.send_in_transaction(msg, &n.to_string()).await?;
        println!("order {n}: {:?} ({})", r.local_state, r.send.msg_id);
    }
    tx.producer().shutdown().await;
    Ok(())
}
