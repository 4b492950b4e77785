//! Errors of layer 1: [`DecodeError`] and [`EncodeError`] from the codec, [`RemotingError`] from
//! the transport.

use std::io;
use std::time::Duration;

/// A frame could not be decoded. The peer is at fault; the connection that carried it is closed.
///
/// Small and `Copy` because the decoder runs on the hot path.
#[derive(Clone, Copy, Debug, Eq, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The length prefix announces a frame larger than the configured maximum (checked before
    /// anything is allocated).
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// The announced frame length, prefix included.
        len: u64,
        /// The configured maximum, prefix included.
        max: usize,
    },
    /// The length prefix is too small to hold the header-length word.
    #[error("frame length {0} is too small for a header-length word")]
    FrameTooShort(u32),
    /// The header-length word declares more header bytes than the frame holds.
    #[error("header length {header} exceeds the frame's {available} bytes")]
    HeaderLengthExceedsFrame {
        /// Declared header length.
        header: u32,
        /// Bytes left in the frame after the header-length word.
        available: u32,
    },
    /// The serialize-type byte is neither 0 (JSON) nor 1 (ROCKETMQ).
    #[error("unknown header serialize type {0}")]
    UnknownSerializeType(u8),
    /// The JSON header is not a JSON object of the expected shape.
    #[error("malformed JSON header")]
    InvalidJsonHeader,
    /// A binary header ended before a field it declared.
    #[error("binary header truncated at byte {0}")]
    TruncatedHeader(usize),
    /// A length inside a binary header is negative or larger than what remains.
    #[error("invalid length {0} inside a binary header")]
    InvalidLength(i32),
    /// A string inside a binary header is not UTF-8.
    #[error("string in a binary header is not UTF-8")]
    InvalidUtf8,
}

/// A command could not be encoded. The caller is at fault (the values do not fit the format).
#[derive(Clone, Copy, Debug, Eq, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// Binary headers carry the code and version as 16-bit integers; use JSON for larger codes.
    #[error("{field} {value} does not fit the 16 bits of a ROCKETMQ header")]
    NotRepresentable {
        /// `code` or `version`.
        field: &'static str,
        /// The value that did not fit.
        value: i32,
    },
    /// The header would exceed the 24-bit header length.
    #[error("header of {0} bytes exceeds the 24-bit limit")]
    HeaderTooLarge(usize),
    /// The whole frame would exceed the configured maximum.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// The frame length, prefix included.
        len: usize,
        /// The configured maximum, prefix included.
        max: usize,
    },
    /// A string inside a binary header is longer than its length field allows.
    #[error("a string of {0} bytes is too long for its length field")]
    StringTooLong(usize),
}

/// Which invoke style a semaphore limits.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum InvokeKind {
    /// A request awaited by the caller.
    Sync,
    /// A request whose response goes to a callback.
    Async,
    /// A request with no response.
    Oneway,
}

/// A remoting call failed.
///
/// Who is at fault is stated on each variant: the caller (bad arguments, too many requests), the
/// peer (sent garbage), or the transport (connection refused, closed, timed out).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RemotingError {
    /// Transport: an I/O error on a socket.
    #[error("I/O error talking to {addr}: {source}")]
    Io {
        /// The peer address.
        addr: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Transport: a connection could not be established within the connect timeout.
    #[error("could not connect to {addr}: {source}")]
    Connect {
        /// The address dialled.
        addr: String,
        /// What went wrong: the socket's error, or [`io::ErrorKind::TimedOut`] when the connect
        /// timeout (or the caller's deadline) passed first.
        #[source]
        source: io::Error,
    },
    /// Transport: the TLS handshake failed: the server's certificate is not trusted or not
    /// for the name dialled, or the server does not speak TLS.
    #[error("TLS with {addr} failed: {source}")]
    Tls {
        /// The address dialled.
        addr: String,
        /// The handshake's error; a `rustls::Error` inside it says which check failed.
        #[source]
        source: io::Error,
    },
    /// Transport: the connection closed before the response arrived.
    #[error("connection to {addr} closed")]
    ConnectionClosed {
        /// The peer address.
        addr: String,
    },
    /// Transport: no response within the caller's timeout.
    #[error("request {opaque} to {addr} timed out after {elapsed:?}")]
    Timeout {
        /// The request's opaque.
        opaque: i32,
        /// The peer address.
        addr: String,
        /// Time spent waiting.
        elapsed: Duration,
    },
    /// Caller: every permit of this invoke style is taken and none freed up within the timeout.
    #[error(
        "too many {kind:?} requests in flight ({permits} permits); none freed within the timeout"
    )]
    TooManyRequests {
        /// The invoke style whose semaphore is exhausted.
        kind: InvokeKind,
        /// The semaphore's size.
        permits: usize,
    },
    /// Caller: the command could not be encoded.
    #[error("cannot encode command: {0}")]
    Encode(#[from] EncodeError),
    /// Peer: the peer sent a frame that cannot be decoded; the connection was closed.
    #[error("peer {addr} sent an undecodable frame: {source}")]
    Decode {
        /// The peer address.
        addr: String,
        /// What was wrong with the frame.
        #[source]
        source: DecodeError,
    },
    /// Caller: no name server address is configured.
    #[error("no name server address is configured")]
    NoNameServer,
    /// Caller: the client or server has been shut down.
    #[error("the remoting endpoint is shut down")]
    Shutdown,
    /// Caller: the request's group was aborted by its owner
    /// ([`crate::RemotingClient::abort_group`]); it may have been written.
    #[error("the request's group was aborted")]
    Aborted,
}

impl RemotingError {
    /// Whether the request may have reached the peer (so retrying may duplicate it).
    ///
    /// False only when the failure happened before anything was written (an aborted request
    /// may have been written, or not).
    pub fn possibly_delivered(&self) -> bool {
        matches!(
            self,
            Self::Timeout { .. } | Self::ConnectionClosed { .. } | Self::Io { .. } | Self::Aborted
        )
    }

    /// Whether the failure is in the transport (connect, I/O, close, timeout) rather than a
    /// caller mistake; such failures are worth retrying on another endpoint.
    pub fn is_transport(&self) -> bool {
        matches!(
            self,
            Self::Io { .. }
                | Self::Connect { .. }
                | Self::ConnectionClosed { .. }
                | Self::Timeout { .. }
                | Self::Decode { .. }
        )
    }
}
