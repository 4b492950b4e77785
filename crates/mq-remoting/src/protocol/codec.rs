//! Frame codec (spec §1.1–§1.2): `i32 frameLength | i32 headerLengthWord | header | body`.
//!
//! [`FrameCodec::decode`] follows the `check`/`parse` split: `Ok(None)` leaves the buffer
//! untouched when a frame is incomplete, `Ok(Some)` consumes exactly one frame, and the length
//! limit is checked before any allocation.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::command::{RemotingCommand, SerializeType};
use super::{binary, json};
use crate::error::{DecodeError, EncodeError};

/// Default largest frame, length prefix included: 16 MiB, Java's `frameMaxLength`.
pub const DEFAULT_MAX_FRAME_LEN: usize = 16 * 1024 * 1024;

/// Encodes and decodes frames with a maximum length.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct FrameCodec {
    max_frame_len: usize,
}

impl Default for FrameCodec {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME_LEN)
    }
}

impl FrameCodec {
    /// A codec accepting frames up to `max_frame_len` bytes, the 4-byte length prefix included
    /// (so with the 16 MiB default the largest accepted length field is 16777212, as in Java).
    pub const fn new(max_frame_len: usize) -> Self {
        Self { max_frame_len }
    }

    /// The maximum frame length, prefix included.
    pub const fn max_frame_len(&self) -> usize {
        self.max_frame_len
    }

    /// Checks whether `src` starts with a whole frame and returns its total length (prefix
    /// included) without consuming anything; `Ok(None)` when more bytes are needed.
    ///
    /// # Errors
    /// [`DecodeError::FrameTooLarge`] or [`DecodeError::FrameTooShort`] as soon as the length
    /// prefix is readable, before the rest has arrived.
    pub fn check(&self, src: &[u8]) -> Result<Option<usize>, DecodeError> {
        let Some(prefix) = src.get(..4) else {
            return Ok(None);
        };
        let frame_len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
        let total = u64::from(frame_len) + 4;
        if total > self.max_frame_len as u64 || frame_len > i32::MAX as u32 {
            return Err(DecodeError::FrameTooLarge {
                len: total,
                max: self.max_frame_len,
            });
        }
        if frame_len < 4 {
            return Err(DecodeError::FrameTooShort(frame_len));
        }
        // `total` ≤ max_frame_len, which is a usize.
        let total = total as usize;
        Ok((src.len() >= total).then_some(total))
    }

    /// Decodes one frame from the front of `src`.
    ///
    /// Returns `Ok(None)` without consuming when the frame is incomplete, after reserving room
    /// for it (the length was checked first). On success exactly one frame is consumed and the
    /// body is a zero-copy slice of it.
    ///
    /// # Errors
    /// Any [`DecodeError`]; the stream is then unusable and the connection should be closed.
    pub fn decode(&self, src: &mut BytesMut) -> Result<Option<RemotingCommand>, DecodeError> {
        match self.check(src)? {
            None => {
                if src.len() >= 4 {
                    let want = u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize + 4;
                    src.reserve(want - src.len());
                }
                Ok(None)
            }
            Some(total) => parse_frame(src.split_to(total).freeze()).map(Some),
        }
    }

    /// Appends one frame for `cmd` to `dst`.
    ///
    /// # Errors
    /// [`EncodeError`] when the header cannot be represented or the frame exceeds the maximum;
    /// `dst` is then left as it was.
    pub fn encode(&self, cmd: &RemotingCommand, dst: &mut BytesMut) -> Result<(), EncodeError> {
        self.encode_head(cmd, dst)?;
        dst.extend_from_slice(&cmd.body);
        Ok(())
    }

    /// Appends the length prefix, header-length word and header of `cmd` (everything but the
    /// body, whose length is counted) so that a large body can be written without copying.
    ///
    /// # Errors
    /// As for [`FrameCodec::encode`]; `dst` is then left as it was.
    pub fn encode_head(
        &self,
        cmd: &RemotingCommand,
        dst: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        let start = dst.len();
        dst.put_u64(0); // length prefix and header-length word, patched below
        let encoded = match cmd.serialize_type {
            SerializeType::Json => {
                json::encode_header(cmd, dst);
                Ok(())
            }
            SerializeType::RocketMq => binary::encode_header(cmd, dst),
        };
        if let Err(e) = encoded {
            dst.truncate(start);
            return Err(e);
        }
        let header_len = dst.len() - start - 8;
        if header_len > 0x00FF_FFFF {
            dst.truncate(start);
            return Err(EncodeError::HeaderTooLarge(header_len));
        }
        let total = 8 + header_len + cmd.body.len();
        if total > self.max_frame_len {
            dst.truncate(start);
            return Err(EncodeError::FrameTooLarge {
                len: total,
                max: self.max_frame_len,
            });
        }
        // total ≤ max_frame_len and header_len ≤ 0xFFFFFF, so both fit 32 bits.
        let word = (u32::from(cmd.serialize_type.to_byte()) << 24) | header_len as u32;
        dst[start..start + 4].copy_from_slice(&((total - 4) as u32).to_be_bytes());
        dst[start + 4..start + 8].copy_from_slice(&word.to_be_bytes());
        Ok(())
    }
}

/// Parses a whole frame, length prefix included. The header is read where it stands; the body
/// is the rest of the frame's buffer, without a second handle on it when there is none.
fn parse_frame(mut frame: Bytes) -> Result<RemotingCommand, DecodeError> {
    // check() guarantees the prefix and the header-length word.
    let available = frame.len() as u32 - 8;
    let word = u32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let ty = (word >> 24) as u8;
    let header_len = word & 0x00FF_FFFF;
    if header_len > available {
        return Err(DecodeError::HeaderLengthExceedsFrame {
            header: header_len,
            available,
        });
    }
    let body_at = 8 + header_len as usize;
    let header = &frame[8..body_at];
    let mut cmd = match SerializeType::from_byte(ty) {
        Some(SerializeType::Json) => json::decode_header(header)?,
        Some(SerializeType::RocketMq) => binary::decode_header(header)?,
        None => return Err(DecodeError::UnknownSerializeType(ty)),
    };
    if body_at < frame.len() {
        frame.advance(body_at);
        cmd.body = frame;
    }
    Ok(cmd)
}
