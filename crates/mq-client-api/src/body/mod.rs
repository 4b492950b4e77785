//! JSON bodies (spec §5): a reader that accepts fastjson's output and a writer of standard JSON.
//!
//! fastjson writes non-string map keys bare (`{0:"127.0.0.1:10911"}`) and object keys as
//! objects (`{{"topic":"t",...}:5}`). [`normalize_fastjson`] rewrites such keys as JSON strings
//! before serde reads the text; everything we emit is standard JSON, which Java also accepts.

use std::fmt;

use serde::Serialize;
use serde::de::{self, DeserializeOwned, Deserializer, Visitor};

mod group;
mod heartbeat;
mod misc;
mod register;
mod route;

pub use group::{SubscriptionGroupConfig, SubscriptionGroupWrapper};
pub use heartbeat::{
    ConsumeFromWhere, ConsumeType, ConsumerData, HeartbeatData, MessageModel, ProducerData,
    SubscriptionData,
};
pub use misc::{
    ConsumerListByGroupBody, KvTable, LockBatchRequestBody, LockBatchResponseBody, MessageQueue,
    TopicList, UnlockBatchRequestBody,
};
pub use register::{
    DataVersion, RegisterBrokerBody, TopicConfig, TopicConfigSerializeWrapper, body_crc32, perm,
};
pub use route::{BrokerData, ClusterInfo, MASTER_ID, QueueData, TopicRouteData};

/// A body could not be read. The peer is at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    /// Not JSON of the expected shape, even after fastjson normalisation.
    #[error("malformed {what} body: {source}")]
    Json {
        /// The body type.
        what: &'static str,
        /// The parser's complaint.
        #[source]
        source: serde_json::Error,
    },
    /// Not UTF-8.
    #[error("{0} body is not UTF-8")]
    Utf8(&'static str),
    /// A compressed or binary body is malformed.
    #[error("malformed {what} body: {reason}")]
    Malformed {
        /// The body type.
        what: &'static str,
        /// What was wrong.
        reason: String,
    },
}

/// Parses a JSON body as Java sends it (fastjson quirks included).
///
/// # Errors
/// [`BodyError`] when the bytes are not UTF-8 or not JSON of `T`'s shape.
pub fn from_json<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, BodyError> {
    let text = std::str::from_utf8(bytes).map_err(|_| BodyError::Utf8(what))?;
    // Fast path: standard JSON needs no rewriting.
    match serde_json::from_str(text) {
        Ok(v) => Ok(v),
        Err(_) => serde_json::from_str(&normalize_fastjson(text))
            .map_err(|source| BodyError::Json { what, source }),
    }
}

/// Writes a body as standard JSON.
pub fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    // Serialising our own plain data structures (string/number maps, vectors) cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

#[derive(Clone, Copy)]
enum Ctx {
    Object { expect_key: bool },
    Array,
}

/// Rewrites fastjson's non-standard member names (bare numbers, identifiers, objects or arrays
/// in key position) as JSON strings. Standard JSON passes through unchanged.
pub fn normalize_fastjson(text: &str) -> String {
    normalize_at_depth(text, 0)
}

/// How deep object keys may nest inside object keys (fastjson writes one level, e.g. a
/// `MessageQueue` key). Deeper keys are left as they are, and serde rejects the text; without
/// this bound each level would re-escape the rest of the input and memory would grow
/// exponentially.
const MAX_KEY_NESTING: usize = 4;

fn normalize_at_depth(text: &str, depth: usize) -> String {
    if depth > MAX_KEY_NESTING {
        return text.to_owned();
    }
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len() + 16);
    let mut stack: Vec<Ctx> = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            out.push(c as char);
            i += 1;
            continue;
        }
        if let Some(Ctx::Object { expect_key: true }) = stack.last()
            && c != b'"'
            && c != b'}'
        {
            let end = key_end(b, i);
            let raw = &text[i..end];
            let key = if raw.starts_with('{') || raw.starts_with('[') {
                normalize_at_depth(raw, depth + 1)
            } else {
                raw.trim().to_owned()
            };
            // Quote through serde so every character is escaped correctly.
            out.push_str(&serde_json::Value::String(key).to_string());
            if let Some(Ctx::Object { expect_key }) = stack.last_mut() {
                *expect_key = false;
            }
            i = end;
            continue;
        }
        match c {
            b'"' => {
                let end = string_end(b, i);
                out.push_str(&text[i..end]);
                if let Some(Ctx::Object { expect_key }) = stack.last_mut() {
                    *expect_key = false;
                }
                i = end;
                continue;
            }
            b'{' => stack.push(Ctx::Object { expect_key: true }),
            b'[' => stack.push(Ctx::Array),
            b'}' | b']' => {
                stack.pop();
            }
            b',' => {
                if let Some(Ctx::Object { expect_key }) = stack.last_mut() {
                    *expect_key = true;
                }
            }
            _ => {}
        }
        // Copy one UTF-8 character.
        let len = utf8_len(c);
        out.push_str(&text[i..(i + len).min(b.len())]);
        i += len;
    }
    out
}

fn utf8_len(first: u8) -> usize {
    match first {
        0xF0..=0xFF => 4,
        0xE0..=0xEF => 3,
        0xC0..=0xDF => 2,
        _ => 1,
    }
}

/// End (exclusive) of the string literal starting at `start` (a `"`).
fn string_end(b: &[u8], start: usize) -> usize {
    let mut i = start + 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    b.len()
}

/// End (exclusive) of a bare key starting at `start`: a balanced `{...}`/`[...]`, or a token
/// running up to the `:`.
fn key_end(b: &[u8], start: usize) -> usize {
    if b[start] == b'{' || b[start] == b'[' {
        let mut depth = 0usize;
        let mut i = start;
        while i < b.len() {
            match b[i] {
                b'"' => {
                    i = string_end(b, i);
                    continue;
                }
                b'{' | b'[' => depth += 1,
                b'}' | b']' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        return i + 1;
                    }
                }
                _ => {}
            }
            i += 1;
        }
        return b.len();
    }
    let mut i = start;
    while i < b.len() && b[i] != b':' && b[i] != b'}' {
        i += 1;
    }
    i
}

/// Deserialises an `i64` from a JSON number or a numeric string (the C++ client sends
/// `subVersion` as a string).
pub(crate) fn lenient_i64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = i64;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an integer or a numeric string")
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<i64, E> {
            Ok(v)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<i64, E> {
            i64::try_from(v).map_err(E::custom)
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<i64, E> {
            Ok(v as i64)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<i64, E> {
            v.trim().parse().map_err(E::custom)
        }
    }
    d.deserialize_any(V)
}

/// Declares a Java enum that serialises as its name and deserialises from its name or its
/// ordinal (the C++ client sends ordinals).
macro_rules! java_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$doc:meta])* $variant:ident = $java:literal,)* }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
        pub enum $name { $($(#[$doc])* $variant,)* }

        impl $name {
            const ALL: &'static [($name, &'static str)] = &[$(($name::$variant, $java),)*];

            /// The Java enum name.
            pub fn name(self) -> &'static str {
                Self::ALL.iter().find(|(v, _)| *v == self).map_or("", |(_, n)| n)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.name())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl serde::de::Visitor<'_> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str(concat!("a ", stringify!($name), " name or ordinal"))
                    }
                    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<$name, E> {
                        $name::ALL
                            .iter()
                            .find(|(_, n)| *n == v)
                            .map(|(x, _)| *x)
                            .ok_or_else(|| E::unknown_variant(v, &[]))
                    }
                    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<$name, E> {
                        usize::try_from(v)
                            .ok()
                            .and_then(|i| $name::ALL.get(i))
                            .map(|(x, _)| *x)
                            .ok_or_else(|| E::custom(format!("ordinal {v} out of range")))
                    }
                    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<$name, E> {
                        u64::try_from(v)
                            .map_err(E::custom)
                            .and_then(|u| self.visit_u64(u))
                    }
                }
                d.deserialize_any(V)
            }
        }
    };
}
pub(crate) use java_enum;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_numeric_keys_are_quoted() {
        assert_eq!(
            normalize_fastjson(r#"{"brokerAddrs":{0:"127.0.0.1:10911",1:"b"}}"#),
            r#"{"brokerAddrs":{"0":"127.0.0.1:10911","1":"b"}}"#
        );
    }

    #[test]
    fn object_keys_become_their_json_text() {
        let n = normalize_fastjson(r#"{"t":{{"brokerName":"b","queueId":0,"topic":"t"}:5}}"#);
        let v: serde_json::Value = serde_json::from_str(&n).unwrap();
        let key = v["t"].as_object().unwrap().keys().next().unwrap().clone();
        let mq: serde_json::Value = serde_json::from_str(&key).unwrap();
        assert_eq!(mq["queueId"], 0);
        assert_eq!(v["t"][&key], 5);
    }

    #[test]
    fn standard_json_and_strings_with_colons_pass_through() {
        let s = r#"{"a":"x:{1:2}","b":[1,{"c":"d"}],"e":{"0":"f"}}"#;
        assert_eq!(normalize_fastjson(s), s);
    }

    #[test]
    fn deeply_nested_keys_stay_bounded() {
        let text = format!("{{\"a\":{}:1}}", "{".repeat(5000));
        let out = normalize_fastjson(&text);
        assert!(out.len() < text.len() * 8, "output grew to {}", out.len());
    }

    #[test]
    fn non_ascii_survives() {
        let s = r#"{1:"主题","k":"ü"}"#;
        assert_eq!(normalize_fastjson(s), r#"{"1":"主题","k":"ü"}"#);
    }
}
