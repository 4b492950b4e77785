//! Broker registration bodies (spec §4.5, §5.7): topic configs, data version, and the plain
//! and zlib-compressed forms of `RegisterBrokerBody`.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use bytes::{Buf, BufMut};
use serde::{Deserialize, Serialize};

use super::{BodyError, from_json, to_json};

/// Permission bits (spec §8.3, Java `PermName`).
pub mod perm {
    /// Inherit (topic templates).
    pub const INHERIT: i32 = 0x1;
    /// Writable.
    pub const WRITE: i32 = 0x2;
    /// Readable.
    pub const READ: i32 = 0x4;
    /// Read and write, the default.
    pub const READ_WRITE: i32 = READ | WRITE;

    /// Whether `perm` allows reads.
    pub const fn is_readable(perm: i32) -> bool {
        perm & READ != 0
    }

    /// Whether `perm` allows writes.
    pub const fn is_writeable(perm: i32) -> bool {
        perm & WRITE != 0
    }
}

/// Version of a broker's topic config table. Java: `DataVersion`.
#[derive(Clone, Debug, Default, Deserialize, Eq, PartialEq, Serialize)]
pub struct DataVersion {
    /// Change counter.
    #[serde(default)]
    pub counter: i64,
    /// Time of the last change, ms.
    #[serde(default)]
    pub timestamp: i64,
}

/// A topic's config on a broker. Java: `TopicConfig`.
#[derive(Clone, Debug, Deserialize, Eq, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TopicConfig {
    /// Topic.
    pub topic_name: String,
    /// Readable queues (class default 16).
    #[serde(default = "sixteen")]
    pub read_queue_nums: i32,
    /// Writable queues (class default 16).
    #[serde(default = "sixteen")]
    pub write_queue_nums: i32,
    /// Permission bits (default read+write).
    #[serde(default = "rw")]
    pub perm: i32,
    /// `SINGLE_TAG` or `MULTI_TAG`.
    #[serde(default = "single_tag")]
    pub topic_filter_type: String,
    /// Topic sysFlag.
    #[serde(default)]
    pub topic_sys_flag: i32,
    /// Ordered topic.
    #[serde(default)]
    pub order: bool,
    /// 5.x attributes (`message.type`: NORMAL, FIFO, DELAY, TRANSACTION); none by default,
    /// which 5.x reads as NORMAL.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}

fn sixteen() -> i32 {
    16
}
fn rw() -> i32 {
    perm::READ_WRITE
}
fn single_tag() -> String {
    "SINGLE_TAG".to_owned()
}

impl TopicConfig {
    /// A config with `queues` read and write queues and Java's other defaults.
    pub fn new(topic_name: impl Into<String>, queues: i32) -> Self {
        Self {
            topic_name: topic_name.into(),
            read_queue_nums: queues,
            write_queue_nums: queues,
            perm: perm::READ_WRITE,
            topic_filter_type: single_tag(),
            topic_sys_flag: 0,
            order: false,
            attributes: BTreeMap::new(),
        }
    }
}

/// Topic configs with their version. Java: `TopicConfigSerializeWrapper`.
#[derive(Clone, Debug, Default, Deserialize, Eq, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TopicConfigSerializeWrapper {
    /// Topic → config.
    #[serde(default)]
    pub topic_config_table: BTreeMap<String, TopicConfig>,
    /// Version.
    #[serde(default)]
    pub data_version: DataVersion,
}

/// REGISTER_BROKER body. Java: `RegisterBrokerBody`.
#[derive(Clone, Debug, Default, Deserialize, Eq, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisterBrokerBody {
    /// Topic configs.
    #[serde(default)]
    pub topic_config_serialize_wrapper: TopicConfigSerializeWrapper,
    /// Filter servers.
    #[serde(default)]
    pub filter_server_list: Vec<String>,
}

const WHAT: &str = "RegisterBrokerBody";

impl RegisterBrokerBody {
    /// The plain JSON form (`compressed=false`).
    pub fn encode_json(&self) -> Vec<u8> {
        to_json(self)
    }

    /// The compressed form (`compressed=true`): a zlib stream (level 9) of length-prefixed
    /// data version JSON, topic configs as `name read write perm filterType` text, and the
    /// filter server list JSON. sysFlag and order do not travel in this form.
    pub fn encode_compressed(&self) -> Vec<u8> {
        let mut raw = Vec::new();
        put_chunk(
            &mut raw,
            &to_json(&self.topic_config_serialize_wrapper.data_version),
        );
        let table = &self.topic_config_serialize_wrapper.topic_config_table;
        raw.put_i32(table.len() as i32);
        for tc in table.values() {
            let text = format!(
                "{} {} {} {} {}",
                tc.topic_name,
                tc.read_queue_nums,
                tc.write_queue_nums,
                tc.perm,
                tc.topic_filter_type
            );
            put_chunk(&mut raw, text.as_bytes());
        }
        put_chunk(&mut raw, &to_json(&self.filter_server_list));
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(9));
        // Writing into a Vec cannot fail.
        let _ = z.write_all(&raw);
        z.finish().unwrap_or_default()
    }

    /// Reads either form.
    ///
    /// # Errors
    /// [`BodyError`] on malformed JSON or a malformed compressed stream.
    pub fn decode(bytes: &[u8], compressed: bool) -> Result<Self, BodyError> {
        if !compressed {
            return from_json(WHAT, bytes);
        }
        let mut raw = Vec::new();
        flate2::read::ZlibDecoder::new(bytes)
            .take(64 * 1024 * 1024)
            .read_to_end(&mut raw)
            .map_err(|e| malformed(e.to_string()))?;
        let mut cur = &raw[..];
        let data_version: DataVersion = from_json(WHAT, take_chunk(&mut cur)?)?;
        let count = take_i32(&mut cur)?;
        let mut table = BTreeMap::new();
        for _ in 0..count.max(0) {
            let text = std::str::from_utf8(take_chunk(&mut cur)?)
                .map_err(|_| malformed("topic config is not UTF-8".into()))?;
            let tc = parse_topic_config_text(text)?;
            table.insert(tc.topic_name.clone(), tc);
        }
        let filter_server_list: Vec<String> = from_json(WHAT, take_chunk(&mut cur)?)?;
        Ok(Self {
            topic_config_serialize_wrapper: TopicConfigSerializeWrapper {
                topic_config_table: table,
                data_version,
            },
            filter_server_list,
        })
    }
}

/// CRC32 of a registration body masked with 0x7FFFFFFF (header `bodyCrc32`): the same
/// checksum the store puts on message bodies.
pub fn body_crc32(body: &[u8]) -> i32 {
    crate::message::body_crc(body)
}

fn malformed(reason: String) -> BodyError {
    BodyError::Malformed { what: WHAT, reason }
}

fn put_chunk(dst: &mut Vec<u8>, data: &[u8]) {
    dst.put_i32(data.len() as i32);
    dst.put_slice(data);
}

fn take_i32(cur: &mut &[u8]) -> Result<i32, BodyError> {
    if cur.remaining() < 4 {
        return Err(malformed("truncated".into()));
    }
    Ok(cur.get_i32())
}

fn take_chunk<'a>(cur: &mut &'a [u8]) -> Result<&'a [u8], BodyError> {
    let len = take_i32(cur)?;
    let len = usize::try_from(len).map_err(|_| malformed(format!("negative length {len}")))?;
    if cur.len() < len {
        return Err(malformed("truncated".into()));
    }
    let (chunk, rest) = cur.split_at(len);
    *cur = rest;
    Ok(chunk)
}

fn parse_topic_config_text(text: &str) -> Result<TopicConfig, BodyError> {
    let parts: Vec<&str> = text.split(' ').collect();
    let bad = || malformed(format!("bad topic config {text:?}"));
    let [name, read, write, perm, filter] = parts[..] else {
        return Err(bad());
    };
    Ok(TopicConfig {
        topic_name: name.to_owned(),
        read_queue_nums: read.parse().map_err(|_| bad())?,
        write_queue_nums: write.parse().map_err(|_| bad())?,
        perm: perm.parse().map_err(|_| bad())?,
        topic_filter_type: filter.to_owned(),
        topic_sys_flag: 0,
        order: false,
        attributes: BTreeMap::new(),
    })
}
