//! The ROCKETMQ binary header (serialize type 1, spec §1.4): fixed fields, then a length-prefixed
//! remark and a length-prefixed block of `(i16 key length, key, i32 value length, value)` entries.

use bytes::{BufMut, Bytes, BytesMut};

use super::command::{ExtFields, LanguageCode, RemotingCommand, SerializeType};
use super::ext::{Entry, FieldSink, KeyOrder, key_before, span_at};
use crate::error::{DecodeError, EncodeError};

/// Appends the binary header of `cmd` to `dst`.
///
/// # Errors
/// [`EncodeError::NotRepresentable`] when the code or version does not fit 16 bits (use JSON),
/// [`EncodeError::StringTooLong`] when a key exceeds 32767 bytes.
pub(crate) fn encode_header(cmd: &RemotingCommand, dst: &mut BytesMut) -> Result<(), EncodeError> {
    let code = i16::try_from(cmd.code).map_err(|_| EncodeError::NotRepresentable {
        field: "code",
        value: cmd.code,
    })?;
    let version = i16::try_from(cmd.version).map_err(|_| EncodeError::NotRepresentable {
        field: "version",
        value: cmd.version,
    })?;
    let remark = cmd.remark.as_deref().unwrap_or("");
    dst.reserve(21 + remark.len() + 256);
    dst.put_i16(code);
    dst.put_u8(cmd.language.to_byte());
    dst.put_i16(version);
    dst.put_i32(cmd.opaque);
    dst.put_i32(cmd.flag);
    dst.put_i32(len_i32(remark.len())?);
    dst.put_slice(remark.as_bytes());
    // The block's length is patched in once the block is written: one pass over the fields.
    let len_at = dst.len();
    dst.put_i32(0);
    let typed_written = match cmd.ext_fields.typed_fields() {
        Some(typed) => {
            let mut sink = BinaryFields {
                dst: &mut *dst,
                order: KeyOrder::default(),
                error: None,
            };
            typed.write_fields(&mut sink);
            let (error, sorted) = (sink.error, sink.order.sorted());
            if let Some(e) = error {
                return Err(e);
            }
            if !sorted {
                // Not in key order after all: written again from the sorted entries.
                dst.truncate(len_at + 4);
            }
            sorted
        }
        None => false,
    };
    if !typed_written {
        for (k, v) in cmd.ext_fields.iter() {
            put_field(dst, k, v.as_bytes())?;
        }
    }
    let ext_len = len_i32(dst.len() - len_at - 4)?;
    dst[len_at..len_at + 4].copy_from_slice(&ext_len.to_be_bytes());
    Ok(())
}

/// One `(i16 key length, key, i32 value length, value)` entry.
fn put_field(dst: &mut BytesMut, key: &str, value: &[u8]) -> Result<(), EncodeError> {
    let key_len = i16::try_from(key.len()).map_err(|_| EncodeError::StringTooLong(key.len()))?;
    dst.reserve(6 + key.len() + value.len());
    dst.put_i16(key_len);
    dst.put_slice(key.as_bytes());
    dst.put_i32(len_i32(value.len())?);
    dst.put_slice(value);
    Ok(())
}

/// Typed fields written as entries of the block.
struct BinaryFields<'a> {
    dst: &'a mut BytesMut,
    order: KeyOrder,
    /// The first field that could not be written.
    error: Option<EncodeError>,
}

impl BinaryFields<'_> {
    fn field(&mut self, key: &'static str, value: &[u8]) {
        self.order.see(key);
        if self.error.is_none()
            && let Err(e) = put_field(self.dst, key, value)
        {
            self.error = Some(e);
        }
    }
}

impl FieldSink for BinaryFields<'_> {
    fn str_field(&mut self, key: &'static str, value: &str) {
        self.field(key, value.as_bytes());
    }

    fn int_field(&mut self, key: &'static str, value: i64) {
        let mut digits = [0u8; 20];
        self.field(key, super::ext::int_digits(value, &mut digits));
    }
}

fn len_i32(len: usize) -> Result<i32, EncodeError> {
    i32::try_from(len).map_err(|_| EncodeError::StringTooLong(len))
}

/// Parses a binary header. Zero-length remarks decode to `None`; zero-length values to `""`
/// (4.5.1 behaviour). Every length is checked against what remains, so a lying length can
/// neither over-read nor make us allocate.
pub(crate) fn decode_header(src: &[u8]) -> Result<RemotingCommand, DecodeError> {
    let mut r = Reader { buf: src, pos: 0 };
    let code = i32::from(r.i16()?);
    let language = LanguageCode::from_byte(r.u8()?);
    let version = i32::from(r.i16()?);
    let opaque = r.i32()?;
    let flag = r.i32()?;
    let remark_len = r.len32()?;
    let remark = if remark_len == 0 {
        None
    } else {
        Some(r.str(remark_len)?.to_owned())
    };
    let ext_len = r.len32()?;
    let ext_start = r.pos;
    let (text, entries, sorted) = ext_block(r.take(ext_len)?, ext_start)?;
    let ext_fields = ExtFields::from_decoded(text, entries, sorted);
    Ok(RemotingCommand {
        code,
        language,
        version,
        opaque,
        flag,
        remark,
        ext_fields,
        body: Bytes::new(),
        serialize_type: SerializeType::RocketMq,
    })
}

/// The fields of the block of `(i16 key length, key, i32 value length, value)` entries that
/// starts at byte `at` of the header: the arena (the block itself, copied once, with its length
/// bytes blanked), the spans of each key and value in it, and whether the keys arrived in
/// order.
///
/// With the length bytes turned into spaces the arena is UTF-8 exactly when every key and
/// value is UTF-8 on its own: a piece that starts or ends inside a character would leave a
/// continuation byte beside a space. So the whole is checked once.
fn ext_block(block: &[u8], at: usize) -> Result<(String, Vec<Entry>, bool), DecodeError> {
    let mut text = block.to_vec();
    let mut entries = Vec::with_capacity(16);
    let mut sorted = true;
    let mut prev: &[u8] = &[];
    let mut r = Reader { buf: block, pos: 0 };
    while r.pos < block.len() {
        let len_at = r.pos;
        let key_len = r
            .i16()
            .map_err(|_| DecodeError::TruncatedHeader(at + len_at))?;
        let key_len =
            usize::try_from(key_len).map_err(|_| DecodeError::InvalidLength(i32::from(key_len)))?;
        let key_at = r.pos;
        let key = r
            .take(key_len)
            .map_err(|_| DecodeError::TruncatedHeader(at + block.len()))?;
        let val_len_at = r.pos;
        let val_len = r.len32().map_err(|e| match e {
            DecodeError::TruncatedHeader(_) => DecodeError::TruncatedHeader(at + block.len()),
            other => other,
        })?;
        let val_at = r.pos;
        r.pos += val_len; // len32 checked it fits in the block
        text[len_at..key_at].fill(b' ');
        text[val_len_at..val_at].fill(b' ');
        sorted &= entries.is_empty() || key_before(prev, key);
        prev = key;
        entries.push(Entry::decoded(
            span_at(key_at, key_len),
            span_at(val_at, val_len),
        ));
    }
    let text = String::from_utf8(text).map_err(|_| DecodeError::InvalidUtf8)?;
    Ok((text, entries, sorted))
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|end| *end <= self.buf.len())
            .ok_or(DecodeError::TruncatedHeader(self.pos))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn i16(&mut self) -> Result<i16, DecodeError> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn i32(&mut self) -> Result<i32, DecodeError> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// An `i32` length that must be non-negative and fit in what remains.
    fn len32(&mut self) -> Result<usize, DecodeError> {
        let v = self.i32()?;
        let len = usize::try_from(v).map_err(|_| DecodeError::InvalidLength(v))?;
        if len > self.buf.len() - self.pos {
            return Err(DecodeError::InvalidLength(v));
        }
        Ok(len)
    }

    fn str(&mut self, len: usize) -> Result<&'a str, DecodeError> {
        let b = self.take(len)?;
        std::str::from_utf8(b).map_err(|_| DecodeError::InvalidUtf8)
    }
}
