//! Invariant checks shared by the fuzz targets and the corpus-replay test. Not a public API.
//!
//! Each function panics when an invariant is broken: that is how a fuzzer reports a finding.

use bytes::BytesMut;

use crate::protocol::{FrameCodec, SerializeType};

/// Feeds `data` to the frame decoder in two chunks split at `data[0]` and checks: no panic; a
/// partial frame consumes nothing; every decoded command re-encodes (JSON when its binary form
/// is not representable) and decodes back to itself.
pub fn check_frame_stream(data: &[u8]) {
    let codec = FrameCodec::new(1 << 20);
    let split = data.first().map_or(0, |b| usize::from(*b).min(data.len()));
    let mut buf = BytesMut::new();
    for part in [&data[..split], &data[split..]] {
        buf.extend_from_slice(part);
        loop {
            let before = buf.clone();
            match codec.decode(&mut buf) {
                Ok(Some(cmd)) => {
                    assert!(buf.len() < before.len(), "a decoded frame consumes bytes");
                    let mut out = BytesMut::new();
                    let mut cmd = cmd;
                    if codec.encode(&cmd, &mut out).is_err() {
                        cmd.serialize_type = SerializeType::Json;
                        out.clear();
                        // A decoded command always fits the JSON form within the frame limit
                        // unless its body alone is too large; skip that case.
                        if codec.encode(&cmd, &mut out).is_err() {
                            continue;
                        }
                    }
                    let again = codec.decode(&mut out).ok().flatten();
                    assert_eq!(again.as_ref(), Some(&cmd), "decode(encode(cmd)) == cmd");
                    assert!(out.is_empty(), "re-encoded frame decodes completely");
                }
                Ok(None) => {
                    assert_eq!(buf, before, "an incomplete frame is not consumed");
                    break;
                }
                Err(_) => return,
            }
        }
    }
}
