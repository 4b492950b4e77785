//! Transaction headers (spec §4.8).

use super::{HeaderError, header};

/// `commitOrRollback` values (sysFlag transaction bits).
pub mod transaction_type {
    /// Unknown: let the broker check later.
    pub const NOT_TYPE: i32 = 0;
    /// Half message.
    pub const PREPARED: i32 = 0x4;
    /// Commit.
    pub const COMMIT: i32 = 0x8;
    /// Roll back.
    pub const ROLLBACK: i32 = 0xC;
}

header! {
    /// End a transaction (END_TRANSACTION, 37, oneway).
    EndTransactionRequestHeader("EndTransactionRequestHeader", check = check_end_transaction) {
        /// Producer group.
        req producer_group: String => "producerGroup",
        /// Queue offset of the half message.
        req tran_state_table_offset: i64 => "tranStateTableOffset",
        /// Commit-log offset of the half message.
        req commit_log_offset: i64 => "commitLogOffset",
        /// 0 unknown, 8 commit, 12 rollback.
        req commit_or_rollback: i32 => "commitOrRollback",
        /// Whether this answers a broker check.
        opt from_transaction_check: bool => "fromTransactionCheck",
        /// The message's unique id.
        req msg_id: String => "msgId",
        /// Transaction id.
        opt transaction_id: String => "transactionId",
        /// 5.x: topic.
        opt topic: String => "topic",
    }
}

fn check_end_transaction(h: &EndTransactionRequestHeader) -> Result<(), HeaderError> {
    match h.commit_or_rollback {
        transaction_type::NOT_TYPE | transaction_type::COMMIT | transaction_type::ROLLBACK => {
            Ok(())
        }
        other => Err(HeaderError::InvalidField {
            header: "EndTransactionRequestHeader",
            field: "commitOrRollback",
            value: other.to_string(),
        }),
    }
}

header! {
    /// The broker asks about a half message (CHECK_TRANSACTION_STATE, 39, oneway).
    CheckTransactionStateRequestHeader("CheckTransactionStateRequestHeader") {
        /// Queue offset of the half message.
        req tran_state_table_offset: i64 => "tranStateTableOffset",
        /// Commit-log offset of the half message.
        req commit_log_offset: i64 => "commitLogOffset",
        /// Unique id.
        opt msg_id: String => "msgId",
        /// Transaction id.
        opt transaction_id: String => "transactionId",
        /// Offset message id of the half message.
        opt offset_msg_id: String => "offsetMsgId",
        /// 5.x: topic.
        opt topic: String => "topic",
    }
}
