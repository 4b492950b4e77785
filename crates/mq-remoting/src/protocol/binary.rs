//! The ROCKETMQ binary header (serialize type 1, spec §1.4): fixed fields, then a length-prefixed
//! remark and a length-prefixed block of `(i16 key length, key, i32 value length, value)` entries.

use bytes::{Bytes, BytesMut};

use super::command::{ExtFields, LanguageCode, RemotingCommand, SerializeType};
use super::ext::{Entry, FieldSink, KeyOrder, key_before};
use super::out::{Out, copy_short, write_sized};
use crate::error::{DecodeError, EncodeError};

/// Appends the binary header of `cmd` to `dst`.
///
/// The header is written into room made in `dst` up front ([`Out`]), sized from the fields'
/// text; when they need more, the writer has counted the exact length and writes once more.
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
    let remark_len = len_i32(remark.len())?;
    // The fixed part, and the fields' text with room to spare for their lengths (a JSON
    // member's quotes, colon and comma take as much as an entry's six length bytes).
    let room = 25 + remark.len() + cmd.ext_fields.json_len_unescaped();
    let (start, written) = write_sized(dst, room, |out| {
        out.array(code.to_be_bytes());
        out.byte(cmd.language.to_byte());
        out.array(version.to_be_bytes());
        out.array(cmd.opaque.to_be_bytes());
        out.array(cmd.flag.to_be_bytes());
        out.array(remark_len.to_be_bytes());
        out.put(remark.as_bytes());
        // The block's length is patched in once the block is written.
        let len_at = out.at;
        out.array([0; 4]);
        write_ext(&cmd.ext_fields, out)?;
        Ok((len_at, len_i32(out.at - len_at - 4)?))
    });
    match written {
        Ok((len_at, ext_len)) => {
            let at = start + len_at;
            dst[at..at + 4].copy_from_slice(&ext_len.to_be_bytes());
            Ok(())
        }
        Err(e) => {
            dst.truncate(start);
            Err(e)
        }
    }
}

/// The entries of the ext block: typed fields as written when they come in key order, else
/// the fields' sorted entries.
fn write_ext(ext: &ExtFields, out: &mut Out<'_>) -> Result<(), EncodeError> {
    let block = out.at;
    if let Some(typed) = ext.typed_fields() {
        let mut sink = BinaryFields {
            out: &mut *out,
            order: KeyOrder::default(),
            error: None,
        };
        typed.write_fields(&mut sink);
        let (error, sorted) = (sink.error, sink.order.sorted());
        if let Some(e) = error {
            return Err(e);
        }
        if sorted {
            return Ok(());
        }
        // Not in key order after all: written again from the sorted entries.
        out.at = block;
    }
    for (k, v) in ext.iter() {
        put_field(out, k, v.as_bytes())?;
    }
    Ok(())
}

/// One `(i16 key length, key, i32 value length, value)` entry; the lengths and a key of one
/// byte (typed headers' keys) in one copy.
fn put_field(out: &mut Out<'_>, key: &str, value: &[u8]) -> Result<(), EncodeError> {
    let key_len = i16::try_from(key.len()).map_err(|_| EncodeError::StringTooLong(key.len()))?;
    let [v0, v1, v2, v3] = len_i32(value.len())?.to_be_bytes();
    if let &[k] = key.as_bytes() {
        out.array([0, 1, k, v0, v1, v2, v3]);
    } else {
        out.array(key_len.to_be_bytes());
        out.put(key.as_bytes());
        out.array([v0, v1, v2, v3]);
    }
    out.put(value);
    Ok(())
}

/// Typed fields written as entries of the block.
struct BinaryFields<'o, 'a> {
    out: &'o mut Out<'a>,
    order: KeyOrder,
    /// The first field that could not be written.
    error: Option<EncodeError>,
}

impl BinaryFields<'_, '_> {
    #[inline]
    fn field(&mut self, key: &'static str, value: &[u8]) {
        self.order.see(key);
        // A key of one byte (the V2 send header's): the entry under one bounds check, its
        // lengths and key in one copy.
        if let &[k] = key.as_bytes()
            && let Ok(len) = i32::try_from(value.len())
        {
            let (at, n) = (self.out.at, value.len());
            if let Some(d) = self.out.buf.get_mut(at..at + 7 + n) {
                let [v0, v1, v2, v3] = len.to_be_bytes();
                d[..7].copy_from_slice(&[0, 1, k, v0, v1, v2, v3]);
                copy_short(&mut d[7..], value);
            }
            self.out.at = at + 7 + n;
            return;
        }
        self.long_key_field(key, value);
    }

    /// [`BinaryFields::field`] for other keys (typed answers'): the entry under one bounds
    /// check too.
    #[inline(never)]
    fn long_key_field(&mut self, key: &'static str, value: &[u8]) {
        let (k, v) = (key.as_bytes(), value);
        let (Ok(key_len), Ok(value_len)) = (i16::try_from(k.len()), i32::try_from(v.len())) else {
            if self.error.is_none()
                && let Err(e) = put_field(self.out, key, value)
            {
                self.error = Some(e);
            }
            return;
        };
        let n = k.len();
        let end = self.out.at + 6 + n + v.len();
        if let Some(d) = self.out.buf.get_mut(self.out.at..end) {
            d[..2].copy_from_slice(&key_len.to_be_bytes());
            copy_short(&mut d[2..2 + n], k);
            d[2 + n..6 + n].copy_from_slice(&value_len.to_be_bytes());
            copy_short(&mut d[6 + n..], v);
        }
        self.out.at = end;
    }
}

impl FieldSink for BinaryFields<'_, '_> {
    fn str_field(&mut self, key: &'static str, value: &str) {
        self.field(key, value.as_bytes());
    }

    fn int_field(&mut self, key: &'static str, value: i64) {
        // Most numbers of a send header are one digit (queue id, flags, counts).
        if let Ok(d @ 0..=9) = u8::try_from(value) {
            self.field(key, &[b'0' + d]);
            return;
        }
        let mut digits = itoa::Buffer::new();
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
///
/// One pass with one bounds check per length read (this loop was ~110 instructions an entry
/// through a checked reader; each test here stands for one of its errors).
fn ext_block(block: &[u8], at: usize) -> Result<(String, Vec<Entry>, bool), DecodeError> {
    let n = block.len();
    // A header's length is a 24-bit field (checked by the frame codec before this is called),
    // so every offset in it fits a `u32` and `as` cannot truncate.
    debug_assert!(u32::try_from(n).is_ok());
    let span = |start: usize, end: usize| (start as u32, end as u32);
    let mut text = block.to_vec();
    let mut entries = Vec::with_capacity(16);
    let mut sorted = true;
    let mut prev = 0..0;
    let mut pos = 0;
    while pos < n {
        let &[k0, k1, ..] = &block[pos..] else {
            return Err(DecodeError::TruncatedHeader(at + pos));
        };
        let key_len = i16::from_be_bytes([k0, k1]);
        let Ok(key_len) = usize::try_from(key_len) else {
            return Err(DecodeError::InvalidLength(i32::from(key_len)));
        };
        let key_at = pos + 2;
        let len_at = key_at + key_len;
        let Some(&[v0, v1, v2, v3]) = block.get(len_at..len_at + 4) else {
            return Err(DecodeError::TruncatedHeader(at + n));
        };
        let val_len = i32::from_be_bytes([v0, v1, v2, v3]);
        let val_at = len_at + 4;
        let val_end = match usize::try_from(val_len) {
            Ok(len) if len <= n - val_at => val_at + len,
            _ => return Err(DecodeError::InvalidLength(val_len)),
        };
        text[pos..key_at].copy_from_slice(b"  ");
        text[len_at..val_at].copy_from_slice(b"    ");
        let key = &block[key_at..len_at];
        sorted &= entries.is_empty() || key_before(&block[prev], key);
        prev = key_at..len_at;
        entries.push(Entry::decoded(span(key_at, len_at), span(val_at, val_end)));
        pos = val_end;
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
