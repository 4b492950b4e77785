//! The JSON header (serialize type 0, spec §1.3): written by hand in fastjson's order, read
//! leniently (numbers and booleans inside `extFields`, unknown fields, missing remark).

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

use super::command::{ExtFields, LanguageCode, RemotingCommand, SerializeType};
use crate::error::DecodeError;

/// Appends the JSON header of `cmd` to `dst`, properties in the alphabetical order fastjson uses:
/// `code, extFields, flag, language, opaque, remark, serializeTypeCurrentRPC, version`.
/// Null properties (remark, empty extFields) are omitted, as fastjson does.
pub(crate) fn encode_header(cmd: &RemotingCommand, dst: &mut BytesMut) {
    dst.put_slice(b"{\"code\":");
    put_int(dst, i64::from(cmd.code));
    if !cmd.ext_fields.is_empty() {
        dst.put_slice(b",\"extFields\":{");
        for (i, (k, v)) in cmd.ext_fields.iter().enumerate() {
            if i > 0 {
                dst.put_u8(b',');
            }
            put_string(dst, k);
            dst.put_u8(b':');
            put_string(dst, v);
        }
        dst.put_u8(b'}');
    }
    dst.put_slice(b",\"flag\":");
    put_int(dst, i64::from(cmd.flag));
    dst.put_slice(b",\"language\":\"");
    dst.put_slice(cmd.language.name().as_bytes());
    dst.put_slice(b"\",\"opaque\":");
    put_int(dst, i64::from(cmd.opaque));
    if let Some(remark) = &cmd.remark {
        dst.put_slice(b",\"remark\":");
        put_string(dst, remark);
    }
    dst.put_slice(b",\"serializeTypeCurrentRPC\":\"JSON\",\"version\":");
    put_int(dst, i64::from(cmd.version));
    dst.put_u8(b'}');
}

/// Parses a JSON header into a command with an empty body.
pub(crate) fn decode_header(src: &[u8]) -> Result<RemotingCommand, DecodeError> {
    let raw: RawHeader = serde_json::from_slice(src).map_err(|_| DecodeError::InvalidJsonHeader)?;
    Ok(RemotingCommand {
        code: raw.code.0,
        language: raw.language.0,
        version: raw.version.0,
        opaque: raw.opaque.0,
        flag: raw.flag.0,
        remark: raw.remark,
        ext_fields: raw.ext_fields.map(|e| e.0).unwrap_or_default(),
        body: Bytes::new(),
        serialize_type: SerializeType::Json,
    })
}

fn put_int(dst: &mut BytesMut, v: i64) {
    // i64::MIN has 20 characters including the sign.
    let mut buf = [0u8; 20];
    let mut n = v.unsigned_abs();
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if v < 0 {
        i -= 1;
        buf[i] = b'-';
    }
    dst.put_slice(&buf[i..]);
}

/// Writes a JSON string literal. Control characters (the `\x01`/`\x02` separators of the
/// properties string among them) are escaped; non-ASCII text is written raw, as fastjson does.
fn put_string(dst: &mut BytesMut, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    dst.reserve(s.len() + 2);
    dst.put_u8(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: Option<&[u8]> = match b {
            b'"' => Some(b"\\\""),
            b'\\' => Some(b"\\\\"),
            b'\n' => Some(b"\\n"),
            b'\r' => Some(b"\\r"),
            b'\t' => Some(b"\\t"),
            0x08 => Some(b"\\b"),
            0x0c => Some(b"\\f"),
            0..=0x1f => Some(b""),
            _ => None,
        };
        if let Some(esc) = escape {
            dst.put_slice(&bytes[start..i]);
            if esc.is_empty() {
                dst.put_slice(&[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[usize::from(b >> 4)],
                    HEX[usize::from(b & 0xf)],
                ]);
            } else {
                dst.put_slice(esc);
            }
            start = i + 1;
        }
    }
    dst.put_slice(&bytes[start..]);
    dst.put_u8(b'"');
}

#[derive(Deserialize)]
struct RawHeader {
    #[serde(default)]
    code: LenientInt,
    #[serde(default)]
    language: LenientLanguage,
    #[serde(default)]
    version: LenientInt,
    #[serde(default)]
    opaque: LenientInt,
    #[serde(default)]
    flag: LenientInt,
    #[serde(default)]
    remark: Option<String>,
    #[serde(default, rename = "extFields")]
    ext_fields: Option<LenientExtFields>,
}

/// An `int` property: a JSON number, a numeric string, or null (0), as fastjson accepts.
#[derive(Default)]
struct LenientInt(i32);

impl<'de> Deserialize<'de> for LenientInt {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = LenientInt;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a 32-bit integer")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<LenientInt, E> {
                i32::try_from(v).map(LenientInt).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<LenientInt, E> {
                i32::try_from(v).map(LenientInt).map_err(E::custom)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<LenientInt, E> {
                v.trim().parse().map(LenientInt).map_err(E::custom)
            }
            fn visit_unit<E: de::Error>(self) -> Result<LenientInt, E> {
                Ok(LenientInt(0))
            }
        }
        d.deserialize_any(V)
    }
}

/// The `language` property: the enum name, or (as fastjson also accepts) its ordinal.
/// Unknown names become `OTHER`, where Java would read null.
#[derive(Default)]
struct LenientLanguage(LanguageCode);

impl<'de> Deserialize<'de> for LenientLanguage {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = LenientLanguage;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a language name or ordinal")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<LenientLanguage, E> {
                Ok(LenientLanguage(
                    LanguageCode::from_name(v).unwrap_or(LanguageCode::Other),
                ))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<LenientLanguage, E> {
                Ok(LenientLanguage(language_from_ordinal(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<LenientLanguage, E> {
                Ok(LenientLanguage(
                    u64::try_from(v).map_or(LanguageCode::Other, language_from_ordinal),
                ))
            }
            fn visit_unit<E: de::Error>(self) -> Result<LenientLanguage, E> {
                Ok(LenientLanguage(LanguageCode::Other))
            }
        }
        d.deserialize_any(V)
    }
}

/// An ordinal names a language only if RocketMQ defines it; anything else reads as `OTHER`,
/// since a JSON header can only carry defined names back out.
fn language_from_ordinal(v: u64) -> LanguageCode {
    match u8::try_from(v).map(LanguageCode::from_byte) {
        Ok(LanguageCode::Unknown(_)) | Err(_) => LanguageCode::Other,
        Ok(known) => known,
    }
}

/// `extFields`: values should be strings, but JS and C++ clients send numbers and booleans
/// (spec §10), which are kept as their JSON text. Null values are skipped.
struct LenientExtFields(ExtFields);

impl<'de> Deserialize<'de> for LenientExtFields {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = LenientExtFields;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<LenientExtFields, A::Error> {
                let mut out = ExtFields::new();
                while let Some(key) = map.next_key::<String>()? {
                    let value: serde_json::Value = map.next_value()?;
                    let text = match value {
                        serde_json::Value::Null => continue,
                        serde_json::Value::String(s) => s,
                        other => other.to_string(),
                    };
                    out.insert(key, text);
                }
                Ok(LenientExtFields(out))
            }
        }
        d.deserialize_map(V)
    }
}
