//! Invariant checks shared by the fuzz targets and the corpus-replay tests. Not a public API.
//!
//! Each function panics when an invariant is broken: that is how a fuzzer reports a finding.

#![allow(clippy::expect_used)]

use bytes::Bytes;

use crate::body::{ClusterInfo, HeartbeatData, TopicRouteData, from_json, to_json};
use crate::message::{decode_batch, decode_record, encode_batch, encode_record};

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

/// Reads `data` as a pop checkpoint (the `extraInfo` a broker is acked with): whatever parses
/// must read back the same after it is written out again.
pub fn check_pop_checkpoint(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(ck) = crate::header::PopExtraInfo::parse(text) {
        let again =
            crate::header::PopExtraInfo::parse(&ck.to_string()).expect("checkpoint re-parses");
        assert_eq!(again, ck);
    }
}

/// Decodes `data` as stored records; re-encoding a decoded record and decoding it again must
/// give the same record (a fixpoint: the first decode may normalise, e.g. drop malformed
/// property segments or pick the V1 magic for a short topic). BODYCRC is recomputed on
/// encode, so it is compared only when the input's CRC was right.
pub fn check_records(data: &[u8]) {
    let mut src = Bytes::copy_from_slice(data);
    while let Ok(msg) = decode_record(&mut src, false, false) {
        let encoded = encode_record(&msg).expect("a decoded record re-encodes");
        let mut again = decode_record(&mut encoded.clone(), true, false).expect("re-decodes");
        if msg.body_crc != again.body_crc {
            again.body_crc = msg.body_crc;
        }
        assert_eq!(again, msg, "decode(encode(decode(x))) == decode(x)");
    }
}

/// Splits `data` as a SEND_BATCH_MESSAGE body (the broker side); whatever splits must re-encode
/// and split back to the same messages when the batch rules allow re-encoding.
pub fn check_batch(data: &[u8]) {
    let body = Bytes::copy_from_slice(data);
    if let Ok(msgs) = decode_batch("T", &body)
        && let Ok(encoded) = encode_batch(&msgs)
    {
        assert_eq!(decode_batch("T", &encoded).expect("re-splits"), msgs);
    }
}
