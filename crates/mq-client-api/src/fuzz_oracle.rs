//! Invariant checks shared by the fuzz targets and the corpus-replay tests. Not a public API.
//!
//! Each function panics when an invariant is broken: that is how a fuzzer reports a finding.

#![allow(clippy::expect_used)]

use bytes::Bytes;

use crate::body::{ClusterInfo, HeartbeatData, TopicRouteData, from_json, to_json};
use crate::message::{decode_record, encode_record};

/// Parses `data` as each JSON body type; whatever parses must survive emit-then-parse.
pub fn check_json_bodies(data: &[u8]) {
    if let Ok(route) = from_json::<TopicRouteData>("fuzz", data) {
        let again: TopicRouteData = from_json("fuzz", &to_json(&route)).expect("route re-parses");
        assert_eq!(again, route);
    }
    if let Ok(cluster) = from_json::<ClusterInfo>("fuzz", data) {
        let again: ClusterInfo = from_json("fuzz", &to_json(&cluster)).expect("cluster re-parses");
        assert_eq!(again, cluster);
    }
    if let Ok(hb) = from_json::<HeartbeatData>("fuzz", data) {
        let again: HeartbeatData = from_json("fuzz", &to_json(&hb)).expect("heartbeat re-parses");
        assert_eq!(again, hb);
    }
}

/// Decodes `data` as stored records; every record decoded must re-encode to the same bytes.
pub fn check_records(data: &[u8]) {
    let mut src = Bytes::copy_from_slice(data);
    while let Ok(msg) = decode_record(&mut src.clone(), false, false) {
        let before = src.len();
        let Ok(_) = decode_record(&mut src, false, false) else {
            break;
        };
        let consumed = before - src.len();
        let encoded = encode_record(&msg).expect("a decoded record re-encodes");
        assert_eq!(
            encoded.len(),
            consumed,
            "re-encoded length equals the consumed length"
        );
        let again = decode_record(&mut encoded.clone(), false, false).expect("re-decodes");
        assert_eq!(again.message.body, msg.message.body);
        assert_eq!(again.message.topic, msg.message.topic);
        assert_eq!(again.commit_log_offset, msg.commit_log_offset);
    }
}
