//! Sans-IO half of layer 1: the [`RemotingCommand`] value and its frame codec.
//!
//! Nothing here touches sockets, clocks or tokio; the transport drives it with byte buffers.

mod binary;
mod codec;
mod command;
mod ext;
mod json;
mod out;

pub use codec::{DEFAULT_MAX_FRAME_LEN, FrameCodec};
pub use command::{
    ExtFields, ExtFieldsIter, FLAG_ONEWAY, FLAG_RESPONSE, FieldSink, LanguageCode, RemotingCommand,
    SerializeType, TypedFields, VERSION_4_5_1, VERSION_5_3_3,
};

/// Generic response codes every RocketMQ endpoint may answer (spec §1.8, `RemotingSysResponseCode`).
pub mod sys_code {
    /// The request succeeded.
    pub const SUCCESS: i32 = 0;
    /// The responder failed while processing.
    pub const SYSTEM_ERROR: i32 = 1;
    /// The responder is overloaded; try later or elsewhere.
    pub const SYSTEM_BUSY: i32 = 2;
    /// No processor is registered for the request code.
    pub const REQUEST_CODE_NOT_SUPPORTED: i32 = 3;
    /// A transaction operation failed.
    pub const TRANSACTION_FAILED: i32 = 4;
}

#[cfg(test)]
mod tests;
