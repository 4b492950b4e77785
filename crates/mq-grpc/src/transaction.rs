//! Transactions through the proxy: half messages, EndTransaction, and the recovery of orphaned
//! transactions (a broker's CHECK_TRANSACTION_STATE, asked of a gRPC producer over its
//! Telemetry stream, answered by its EndTransaction).
//!
//! A transaction id names the half message where it is stored, `broker/commitlog/queue`, so
//! that ending it needs no state in the proxy and survives the proxy's restart.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use mq_client_api::body::{HeartbeatData, ProducerData};
use mq_client_api::header::{
    CheckTransactionStateRequestHeader, CommandHeader, EndTransactionRequestHeader,
    transaction_type,
};
use mq_client_api::message::{decode_record, property};
use mq_client_api::{ClientApi, RequestCode};
use mq_remoting::processor_fn;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::convert;
use crate::v2;

/// The producer group of the proxy's half messages, whose checks it answers.
pub const PROXY_TRANSACTION_GROUP: &str = "MQ_GRPC_PROXY_TX";

/// The transaction id of a half message stored on `broker` at `commit_log_offset`, queue
/// offset `queue_offset`.
pub fn transaction_id(broker: &str, commit_log_offset: i64, queue_offset: i64) -> String {
    format!("{broker}/{commit_log_offset}/{queue_offset}")
}

/// (broker, commit-log offset, queue offset) of a transaction id.
pub fn parse_transaction_id(id: &str) -> Option<(&str, i64, i64)> {
    let mut parts = id.rsplitn(3, '/');
    let queue = parts.next()?.parse().ok()?;
    let commit = parts.next()?.parse().ok()?;
    let broker = parts.next().filter(|b| !b.is_empty())?;
    Some((broker, commit, queue))
}

/// The END_TRANSACTION header that ends transaction `id` as `resolution`, or `None` for an id
/// this proxy did not make, or a resolution that decides nothing.
pub fn end_header(
    id: &str,
    message_id: &str,
    resolution: v2::TransactionResolution,
    from_check: bool,
) -> Option<(String, EndTransactionRequestHeader)> {
    let (broker, commit_log_offset, queue_offset) = parse_transaction_id(id)?;
    let commit_or_rollback = match resolution {
        v2::TransactionResolution::Commit => transaction_type::COMMIT,
        v2::TransactionResolution::Rollback => transaction_type::ROLLBACK,
        v2::TransactionResolution::Unspecified => return None,
    };
    Some((
        broker.to_owned(),
        EndTransactionRequestHeader {
            producer_group: PROXY_TRANSACTION_GROUP.to_owned(),
            tran_state_table_offset: queue_offset,
            commit_log_offset,
            commit_or_rollback,
            from_transaction_check: Some(from_check),
            msg_id: message_id.to_owned(),
            transaction_id: Some(id.to_owned()),
            topic: None,
        },
    ))
}

/// The producers connected over Telemetry: who may be asked to recover a transaction.
#[derive(Debug, Default)]
pub(crate) struct Producers {
    by_client: Mutex<HashMap<String, Producer>>,
    /// Brokers holding this proxy's half messages: they are heartbeaten, so that their checks
    /// find the proxy.
    brokers: Mutex<std::collections::BTreeSet<String>>,
}

#[derive(Debug)]
struct Producer {
    topics: Vec<String>,
    tx: mpsc::Sender<Result<v2::TelemetryCommand, tonic::Status>>,
}

impl Producers {
    /// A producer's Telemetry stream, publishing `topics`.
    pub(crate) fn connected(
        &self,
        client_id: &str,
        topics: Vec<String>,
        tx: mpsc::Sender<Result<v2::TelemetryCommand, tonic::Status>>,
    ) {
        self.by_client
            .lock()
            .insert(client_id.to_owned(), Producer { topics, tx });
    }

    /// The stream of `client_id` ended.
    pub(crate) fn gone(&self, client_id: &str) {
        self.by_client.lock().remove(client_id);
    }

    /// Remembers that `broker` holds half messages of this proxy.
    pub(crate) fn holds_halves(&self, broker: &str) -> bool {
        self.brokers.lock().insert(broker.to_owned())
    }

    /// The brokers holding half messages.
    pub(crate) fn brokers(&self) -> Vec<String> {
        self.brokers.lock().iter().cloned().collect()
    }

    /// Asks a producer of `topic` to decide transaction `id`; `false` when none is connected.
    fn ask(&self, topic: &str, message: v2::Message, id: String) -> bool {
        let candidates: Vec<_> = self
            .by_client
            .lock()
            .values()
            .filter(|p| p.topics.iter().any(|t| t == topic))
            .map(|p| p.tx.clone())
            .collect();
        let Some(tx) = candidates.get(fastrand::usize(..candidates.len().max(1))) else {
            return false;
        };
        let command = v2::TelemetryCommand {
            status: Some(convert::ok()),
            command: Some(
                v2::telemetry_command::Command::RecoverOrphanedTransactionCommand(
                    v2::RecoverOrphanedTransactionCommand {
                        message: Some(message),
                        transaction_id: id,
                    },
                ),
            ),
        };
        tx.try_send(Ok(command)).is_ok()
    }
}

/// Answers the brokers' CHECK_TRANSACTION_STATE by asking a connected producer of the message's
/// topic over Telemetry; its EndTransaction ends the transaction.
pub(crate) fn serve_checks(api: &ClientApi, producers: &Arc<Producers>) {
    let producers = Arc::clone(producers);
    api.remoting().register_processor(
        RequestCode::CHECK_TRANSACTION_STATE.0,
        processor_fn(move |ctx, req| {
            let producers = Arc::clone(&producers);
            async move {
                let header = match CheckTransactionStateRequestHeader::decode(&req.ext_fields) {
                    Ok(h) => h,
                    Err(e) => {
                        warn!(cause = %e, "bad transaction check");
                        return None;
                    }
                };
                let msg = match decode_record(&mut req.body.clone(), true, true) {
                    Ok(m) => m,
                    Err(e) => {
                        warn!(cause = %e, "bad half message in a transaction check");
                        return None;
                    }
                };
                let topic = msg
                    .message
                    .property(property::REAL_TOPIC)
                    .unwrap_or(&msg.message.topic)
                    .to_owned();
                let id = transaction_id(
                    ctx.peer_addr(),
                    header.commit_log_offset,
                    header.tran_state_table_offset,
                );
                let mut grpc = convert::to_grpc(&msg, "", 1, Duration::ZERO);
                if let Some(m) = grpc.topic.as_mut() {
                    m.name.clone_from(&topic);
                }
                if !producers.ask(&topic, grpc, id) {
                    debug!(
                        topic,
                        "transaction check with no producer of the topic connected"
                    );
                }
                // CHECK_TRANSACTION_STATE is oneway.
                None
            }
        }),
    );
}

/// Heartbeats the brokers holding half messages as the proxy's transaction group, so that
/// their checks reach it.
pub(crate) async fn heartbeat(api: &ClientApi, producers: &Producers, client_id: &str) {
    let data = HeartbeatData {
        client_id: client_id.to_owned(),
        producer_data_set: vec![ProducerData {
            group_name: PROXY_TRANSACTION_GROUP.to_owned(),
        }],
        consumer_data_set: Vec::new(),
    };
    for broker in producers.brokers() {
        if let Err(e) = api.heartbeat(&broker, &data, Duration::from_secs(3)).await {
            debug!(broker, cause = %e, "heartbeat failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transaction_ids_round_trip_and_junk_is_refused() {
        let id = transaction_id("127.0.0.1:10911", 4096, 7);
        assert_eq!(
            parse_transaction_id(&id),
            Some(("127.0.0.1:10911", 4096, 7))
        );
        assert_eq!(parse_transaction_id("nonsense"), None);
        assert_eq!(parse_transaction_id("/1/2"), None);
        assert!(end_header(&id, "m", v2::TransactionResolution::Unspecified, false).is_none());
        let (broker, h) = end_header(&id, "m", v2::TransactionResolution::Rollback, true).unwrap();
        assert_eq!(broker, "127.0.0.1:10911");
        assert_eq!(h.commit_or_rollback, transaction_type::ROLLBACK);
        assert_eq!((h.commit_log_offset, h.tran_state_table_offset), (4096, 7));
    }
}
