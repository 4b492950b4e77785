//! What the gRPC fuzz target checks, shared with the corpus replay in the tests: bytes a client
//! sends as a request decode or fail cleanly, and every message the proxy would store converts
//! or is refused with a status, never a panic; the same bytes as an `authorization` header are
//! read or refused, never a panic.

use prost::Message as _;

use mq_client_api::message::RecallHandle;

use crate::{convert, v2};

/// Decodes `data` as each request the proxy reads a message from, and converts what decodes.
///
/// # Panics
/// When a converted message breaks an invariant: its topic is the resource's name and its body
/// is never empty; or when an authorization read names no account.
pub fn check_request(data: &[u8]) {
    let deliveries = [
        convert::DeliveryTimes::default(),
        convert::DeliveryTimes::DelayLevels(vec![
            std::time::Duration::from_secs(1),
            std::time::Duration::from_secs(5),
        ]),
    ];
    if let Ok(req) = v2::SendMessageRequest::decode(data) {
        for m in &req.messages {
            for delivery in &deliveries {
                if let Ok((msg, _)) = convert::to_remoting(m, delivery, 64 * 1024) {
                    assert_eq!(msg.topic, convert::resource_name(m.topic.as_ref()));
                    assert!(!msg.body.is_empty());
                }
            }
        }
    }
    if let Ok(cmd) = v2::TelemetryCommand::decode(data) {
        let _ = cmd.command;
    }
    if let Ok(req) = v2::QueryRouteRequest::decode(data) {
        let _ = convert::resource_name(req.topic.as_ref());
    }
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(read) = mq_client_api::acl::GrpcAuthorization::parse(text)
    {
        assert!(!read.access_key.is_empty());
        let _ = read.signed(text, text);
    }
    // A recall handle, as RecallMessage carries it (and RECALL_MESSAGE to a broker): what
    // reads writes back to the same handle.
    let handles = v2::RecallMessageRequest::decode(data)
        .map(|r| r.recall_handle)
        .into_iter()
        .chain(std::str::from_utf8(data).map(str::to_owned));
    for text in handles {
        if let Ok(handle) = RecallHandle::decode(&text) {
            assert_eq!(RecallHandle::decode(&handle.encode()), Ok(handle));
        }
    }
}
