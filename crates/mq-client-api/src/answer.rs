//! The answers a server builds: a response code with a remark, SUCCESS carrying a typed
//! response header, or the SYSTEM_ERROR that says a request's header was not one (as Java
//! answers a missing or malformed field). The broker and the name server both answer with
//! these.

use mq_remoting::RemotingCommand;

use crate::code::ResponseCode;
use crate::header::{CommandHeader, HeaderError};

/// The answer to `req`: `code`, with `remark`.
pub fn respond(
    req: &RemotingCommand,
    code: ResponseCode,
    remark: impl Into<Option<String>>,
) -> RemotingCommand {
    RemotingCommand::response_to(req, code.0, remark.into())
}

/// A SUCCESS answer to `req` carrying the typed response `header`.
pub fn respond_with(req: &RemotingCommand, header: &impl CommandHeader) -> RemotingCommand {
    let mut r = respond(req, ResponseCode::SUCCESS, None);
    header.encode(&mut r.ext_fields);
    r
}

/// The answer to a request whose header could not be read.
pub fn header_error(req: &RemotingCommand, e: &HeaderError) -> RemotingCommand {
    respond(req, ResponseCode::SYSTEM_ERROR, Some(e.to_string()))
}
