//! Transactional half messages (spec §7.15 broker side): a half message waits in
//! `RMQ_SYS_TRANS_HALF_TOPIC`; END_TRANSACTION commits it to its real topic or rolls it back;
//! each decision is recorded in `RMQ_SYS_TRANS_OP_HALF_TOPIC` (so it survives restarts); and
//! half messages left undecided past the timeout are checked with a producer of their group.

use std::collections::{HashMap, HashSet};
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use bytes::Bytes;
use mq_client_api::header::{
    CheckTransactionStateRequestHeader, CommandHeader, EndTransactionRequestHeader,
    transaction_type,
};
use mq_client_api::message::{
    Message, MessageExt, decode_record, encode_record, property, sys_flag,
};
use mq_client_api::{RequestCode, ResponseCode};
use mq_remoting::RemotingCommand;
use parking_lot::Mutex;
use tracing::{debug, info, warn};

use mq_client_api::answer::respond;

use crate::broker::CoreHandle;
use crate::schedule::undivert;
use crate::store::{GetStatus, now_ms};

/// Where half messages wait.
pub(crate) const HALF_TOPIC: &str = "RMQ_SYS_TRANS_HALF_TOPIC";
/// Where decisions are recorded (body: the half message's commit-log offset as text).
pub(crate) const OP_TOPIC: &str = "RMQ_SYS_TRANS_OP_HALF_TOPIC";

/// Decisions and check counts.
#[derive(Debug, Default)]
pub(crate) struct TransactionState {
    decided: Mutex<HashSet<i64>>,
    checks: Mutex<HashMap<i64, u32>>,
    /// Half-queue offset before which everything is decided.
    scan_from: AtomicI64,
}

impl CoreHandle {
    /// Rebuilds the decided set from the op topic.
    pub(crate) fn recover_transactions(&self) {
        let mut offset = 0;
        loop {
            let Ok(got) = self.0.store.get(OP_TOPIC, 0, offset, 256, None) else {
                return;
            };
            if got.status != GetStatus::Found {
                break;
            }
            let mut body = got.body.clone();
            while let Ok(op) = decode_record(&mut body, false, false) {
                if let Some(half) = std::str::from_utf8(&op.message.body)
                    .ok()
                    .and_then(|s| s.parse().ok())
                {
                    self.0.transactions.decided.lock().insert(half);
                }
            }
            offset = got.next_begin_offset;
        }
        let n = self.0.transactions.decided.lock().len();
        if n > 0 {
            info!(decided = n, "transaction decisions recovered");
        }
    }

    async fn record_decision(&self, half_offset: i64) -> io::Result<()> {
        let op = MessageExt {
            message: Message::new(OP_TOPIC, Bytes::from(half_offset.to_string())),
            ..MessageExt::default()
        };
        self.0.store.put(op, self.0.addr).await?;
        self.0.transactions.decided.lock().insert(half_offset);
        self.0.transactions.checks.lock().remove(&half_offset);
        Ok(())
    }

    fn half_message(&self, commit_log_offset: i64) -> Option<MessageExt> {
        let record = self.0.store.read_record(commit_log_offset).ok()?;
        decode_record(&mut record.clone(), false, false)
            .ok()
            .filter(|m| m.message.topic == HALF_TOPIC)
    }

    /// END_TRANSACTION. Answered only when the request is not oneway.
    pub(crate) async fn end_transaction(&self, req: &RemotingCommand) -> Option<RemotingCommand> {
        let reply = |code: ResponseCode, remark: Option<String>| {
            (!req.is_oneway()).then(|| respond(req, code, remark))
        };
        let h = match EndTransactionRequestHeader::decode(&req.ext_fields) {
            Ok(h) => h,
            Err(e) => return reply(ResponseCode::SYSTEM_ERROR, Some(e.to_string())),
        };
        if h.commit_or_rollback == transaction_type::NOT_TYPE {
            debug!(msg_id = %h.msg_id, "transaction state unknown; the broker will check");
            return reply(ResponseCode::SUCCESS, None);
        }
        if self
            .0
            .transactions
            .decided
            .lock()
            .contains(&h.commit_log_offset)
        {
            return reply(ResponseCode::SUCCESS, None);
        }
        let Some(mut half) = self.half_message(h.commit_log_offset) else {
            return reply(
                ResponseCode::SYSTEM_ERROR,
                Some(format!(
                    "find prepared transaction message failed at {}",
                    h.commit_log_offset
                )),
            );
        };
        if half.message.property(property::PRODUCER_GROUP) != Some(h.producer_group.as_str()) {
            return reply(
                ResponseCode::SYSTEM_ERROR,
                Some("the producer group wrong".into()),
            );
        }
        if h.commit_or_rollback == transaction_type::COMMIT {
            undivert(&mut half);
            half.sys_flag =
                sys_flag::with_transaction_value(half.sys_flag, sys_flag::TRANSACTION_COMMIT_TYPE);
            half.prepared_transaction_offset = h.commit_log_offset;
            if let Err(e) = self.store_message(half).await {
                return reply(ResponseCode::SYSTEM_ERROR, Some(e.to_string()));
            }
        }
        match self.record_decision(h.commit_log_offset).await {
            Ok(()) => reply(ResponseCode::SUCCESS, None),
            Err(e) => reply(ResponseCode::SYSTEM_ERROR, Some(e.to_string())),
        }
    }

    pub(crate) fn spawn_transaction_checker(self: &Arc<Self>) {
        self.spawn_every(
            self.0.config.transaction_check_interval,
            tracing::debug_span!("transaction_checker"),
            |c| async move {
                if let Err(e) = c.check_half_messages().await {
                    warn!(cause = %e, "transaction check failed");
                }
            },
        );
    }

    /// Asks producers about half messages undecided past the timeout; rolls back those
    /// checked too often.
    async fn check_half_messages(&self) -> io::Result<()> {
        let state = &self.0.transactions;
        let timeout_ms =
            i64::try_from(self.0.config.transaction_timeout.as_millis()).unwrap_or(i64::MAX);
        let mut offset = state.scan_from.load(Ordering::Relaxed);
        let mut prefix_decided = true;
        loop {
            let got = self.0.store.get(HALF_TOPIC, 0, offset, 64, None)?;
            if got.status != GetStatus::Found {
                return Ok(());
            }
            let mut body = got.body.clone();
            let mut queue_offset = offset;
            while let Ok(half) = decode_record(&mut body, false, false) {
                queue_offset = half.queue_offset;
                let phys = half.commit_log_offset;
                if state.decided.lock().contains(&phys) {
                    if prefix_decided {
                        state.scan_from.store(queue_offset + 1, Ordering::Relaxed);
                    }
                    continue;
                }
                prefix_decided = false;
                if now_ms() - half.store_timestamp < timeout_ms {
                    // Later half messages are newer still.
                    return Ok(());
                }
                let checks = {
                    let mut c = state.checks.lock();
                    let n = c.entry(phys).or_insert(0);
                    *n += 1;
                    *n
                };
                if checks > self.0.config.transaction_max_checks {
                    warn!(
                        offset = phys,
                        "half message checked too often; rolling back"
                    );
                    self.record_decision(phys).await?;
                    continue;
                }
                self.send_check(half).await;
            }
            offset = queue_offset + 1;
            if offset >= got.max_offset {
                return Ok(());
            }
        }
    }

    async fn send_check(&self, half: MessageExt) {
        let Some(group) = half
            .message
            .property(property::PRODUCER_GROUP)
            .map(str::to_owned)
        else {
            return;
        };
        let Some(producer) = self.0.clients.any_producer(&group) else {
            debug!(group, "no producer online to check a half message");
            return;
        };
        let uniq = half.message.uniq_key().map(str::to_owned);
        let header = CheckTransactionStateRequestHeader {
            tran_state_table_offset: half.queue_offset,
            commit_log_offset: half.commit_log_offset,
            msg_id: uniq.clone(),
            transaction_id: uniq,
            offset_msg_id: Some(half.offset_msg_id()),
            topic: None,
        };
        let mut real = half;
        undivert(&mut real);
        let Ok(body) = encode_record(&real) else {
            return;
        };
        let req = RemotingCommand::request(RequestCode::CHECK_TRANSACTION_STATE.0)
            .with_ext_fields(header.to_ext_fields())
            .with_body(body);
        if let Err(e) = producer
            .connection
            .invoke_oneway(req, std::time::Duration::from_millis(10))
            .await
        {
            debug!(cause = %e, "sending a transaction check failed");
        }
    }
}
