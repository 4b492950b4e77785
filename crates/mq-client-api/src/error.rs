//! [`ClientApiError`]: everything a typed RPC can fail with.

use mq_remoting::RemotingError;

use crate::body::BodyError;
use crate::code::{ResponseCode, is_retryable_send_code};
use crate::header::HeaderError;
use crate::message::{BatchError, RecordError};
use crate::validate::ValidationError;

/// A typed RPC failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientApiError {
    /// Transport: the remoting layer failed (connect, timeout, closed connection, permits).
    #[error(transparent)]
    Remoting(#[from] RemotingError),
    /// Peer: the server answered with an error code. The code and remark are data.
    #[error("{addr} answered {code}: {}", remark.as_deref().unwrap_or(""))]
    Broker {
        /// The response code.
        code: ResponseCode,
        /// The response remark.
        remark: Option<String>,
        /// Who answered.
        addr: String,
    },
    /// Peer: a response header is missing a field or has a bad value.
    #[error("bad response header from {addr}: {source}")]
    Header {
        /// Who answered.
        addr: String,
        /// What was wrong.
        #[source]
        source: HeaderError,
    },
    /// Peer: a response body is malformed or missing.
    #[error("bad response body from {addr}: {source}")]
    Body {
        /// Who answered.
        addr: String,
        /// What was wrong.
        #[source]
        source: BodyError,
    },
    /// Peer: a response body holds a malformed message record.
    #[error("bad message record from {addr}: {source}")]
    Record {
        /// Who answered.
        addr: String,
        /// What was wrong.
        #[source]
        source: RecordError,
    },
    /// Caller: a name or message failed validation.
    #[error(transparent)]
    Validation(#[from] ValidationError),
    /// Caller: a batch broke a batching rule.
    #[error(transparent)]
    Batch(#[from] BatchError),
}

impl ClientApiError {
    /// The server's response code, for [`ClientApiError::Broker`].
    pub fn response_code(&self) -> Option<ResponseCode> {
        match self {
            Self::Broker { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether a send that failed this way is worth retrying (on another broker when there is
    /// one): transport failures, and the broker codes of [`crate::code::RETRYABLE_SEND_CODES`].
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Remoting(e) => e.is_transport(),
            Self::Broker { code, .. } => is_retryable_send_code(*code),
            _ => false,
        }
    }

    /// Whether the request may have reached the server (a retry may then duplicate it).
    pub fn possibly_delivered(&self) -> bool {
        match self {
            Self::Remoting(e) => e.possibly_delivered(),
            Self::Validation(_) | Self::Batch(_) => false,
            _ => true,
        }
    }
}
