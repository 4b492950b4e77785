//! Messages (spec §6): the [`Message`] value with typed accessors for reserved properties, the
//! properties string codec, sysFlag bits, compression, stored records, message ids and batches.

use std::fmt;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use mq_remoting::{ExtFields, ExtFieldsIter};

mod batch;
mod compression;
pub(crate) mod id;
mod recall;
mod record;

pub use batch::{
    BatchError, check_batch, decode_batch, decode_batch_with, encode_batch, put_batch_record,
};
pub use compression::{
    CompressionError, CompressionType, Compressor, DEFAULT_COMPRESS_LEVEL, DEFAULT_COMPRESS_OVER,
    MAX_DECOMPRESSED, decompress_for,
};
pub use id::{
    IdClock, IdError, UniqueIdGenerator, UniqueIdParts, decode_offset_msg_id, encode_offset_msg_id,
    parse_unique_id, push_offset_msg_id,
};
pub use recall::{RecallHandle, RecallHandleError};
pub(crate) use record::decode_records_with;
pub use record::{
    MAGIC_BLANK, MAGIC_V1, MAGIC_V2, MessageExt, PreparedRecord, RecordError, body_crc,
    decode_record, decode_records, encode_record,
};

/// Reserved property keys (Java `MessageConst`).
pub mod property {
    /// Business keys, separated by a single space.
    pub const KEYS: &str = "KEYS";
    /// Tag.
    pub const TAGS: &str = "TAGS";
    /// Wait for store (`true`/`false`, absent = true).
    pub const WAIT_STORE_MSG_OK: &str = "WAIT";
    /// Delay level.
    pub const DELAY_TIME_LEVEL: &str = "DELAY";
    /// Original topic of a retried message.
    pub const RETRY_TOPIC: &str = "RETRY_TOPIC";
    /// Original topic of delayed and half messages.
    pub const REAL_TOPIC: &str = "REAL_TOPIC";
    /// Original queue id.
    pub const REAL_QUEUE_ID: &str = "REAL_QID";
    /// `true` for half (prepared transactional) messages.
    pub const TRANSACTION_PREPARED: &str = "TRAN_MSG";
    /// Producer group of a transactional message.
    pub const PRODUCER_GROUP: &str = "PGROUP";
    /// Queue min offset (set on pulled messages).
    pub const MIN_OFFSET: &str = "MIN_OFFSET";
    /// Queue max offset (set on pulled messages).
    pub const MAX_OFFSET: &str = "MAX_OFFSET";
    /// Buyer id.
    pub const BUYER_ID: &str = "BUYER_ID";
    /// Original message id.
    pub const ORIGIN_MESSAGE_ID: &str = "ORIGIN_MESSAGE_ID";
    /// Transfer flag.
    pub const TRANSFER_FLAG: &str = "TRANSFER_FLAG";
    /// Correction flag.
    pub const CORRECTION_FLAG: &str = "CORRECTION_FLAG";
    /// MQ2 flag.
    pub const MQ2_FLAG: &str = "MQ2_FLAG";
    /// Reconsume count.
    pub const RECONSUME_TIME: &str = "RECONSUME_TIME";
    /// Broker region.
    pub const MSG_REGION: &str = "MSG_REGION";
    /// Trace switch.
    pub const TRACE_SWITCH: &str = "TRACE_ON";
    /// Client unique message id.
    pub const UNIQ_CLIENT_MESSAGE_ID_KEYIDX: &str = "UNIQ_KEY";
    /// Max reconsume times.
    pub const MAX_RECONSUME_TIMES: &str = "MAX_RECONSUME_TIMES";
    /// Consume start time.
    pub const CONSUME_START_TIMESTAMP: &str = "CONSUME_START_TIME";
    /// Queue offset of a prepared transaction.
    pub const TRANSACTION_PREPARED_QUEUE_OFFSET: &str = "TRAN_PREPARED_QUEUE_OFFSET";
    /// Transaction check count.
    pub const TRANSACTION_CHECK_TIMES: &str = "TRANSACTION_CHECK_TIMES";
    /// Seconds before the first transaction check.
    pub const CHECK_IMMUNITY_TIME_IN_SECONDS: &str = "CHECK_IMMUNITY_TIME_IN_SECONDS";
    /// Namespace instance id.
    pub const INSTANCE_ID: &str = "INSTANCE_ID";
    /// Transaction id set on a message after its half send.
    pub const TRANSACTION_ID: &str = "__transactionId__";
    /// Start-deliver time (classifies delay messages for hooks).
    pub const START_DELIVER_TIME: &str = "__STARTDELIVERTIME";
    /// Request-reply: the id that pairs a reply with its request.
    pub const CORRELATION_ID: &str = "CORRELATION_ID";
    /// Request-reply: the client id of the requester, which the broker pushes the reply to.
    pub const REPLY_TO_CLIENT: &str = "REPLY_TO_CLIENT";
    /// Request-reply: how long the requester waits, in ms.
    pub const TTL: &str = "TTL";
    /// Request-reply: when the reply reached the requester, ms since the epoch.
    pub const ARRIVE_TIME: &str = "ARRIVE_TIME";
    /// Request-reply: when the broker pushed the reply, ms since the epoch.
    pub const PUSH_REPLY_TIME: &str = "PUSH_REPLY_TIME";
    /// The cluster of the broker that stored the message (stamped by brokers since 4.6).
    pub const CLUSTER: &str = "CLUSTER";
    /// The message's type: [`REPLY_MESSAGE_FLAG`] marks a reply.
    pub const MSG_TYPE: &str = "MSG_TYPE";
    /// The [`MSG_TYPE`] of a reply.
    pub const REPLY_MESSAGE_FLAG: &str = "reply";
    /// Timer message (5.x): when to deliver, ms since the epoch.
    pub const TIMER_DELIVER_MS: &str = "TIMER_DELIVER_MS";
    /// Timer message (5.x): how long to wait from arrival, in seconds.
    pub const TIMER_DELAY_SEC: &str = "TIMER_DELAY_SEC";
    /// Timer message (5.x): how long to wait from arrival, in ms.
    pub const TIMER_DELAY_MS: &str = "TIMER_DELAY_MS";
    /// Set by the broker on a timer message: the delivery time it keeps, ms since the epoch
    /// (the time asked for, rounded down to the timer's precision).
    pub const TIMER_OUT_MS: &str = "TIMER_OUT_MS";
    /// Set by the broker when a timer message arrived, ms since the epoch.
    pub const TIMER_ENQUEUE_MS: &str = "TIMER_ENQUEUE_MS";
    /// Set by the broker when a timer message was delivered, ms since the epoch.
    pub const TIMER_DEQUEUE_MS: &str = "TIMER_DEQUEUE_MS";
    /// A recall (5.3): the timer message `topic+uniqueKey` that is not to be delivered.
    pub const TIMER_DEL_UNIQKEY: &str = "TIMER_DEL_UNIQKEY";

    /// Names a user property may not take (the 4.5.1 reserved set).
    pub const RESERVED: [&str; 23] = [
        TRACE_SWITCH,
        MSG_REGION,
        KEYS,
        TAGS,
        WAIT_STORE_MSG_OK,
        DELAY_TIME_LEVEL,
        RETRY_TOPIC,
        REAL_TOPIC,
        REAL_QUEUE_ID,
        TRANSACTION_PREPARED,
        PRODUCER_GROUP,
        MIN_OFFSET,
        MAX_OFFSET,
        BUYER_ID,
        ORIGIN_MESSAGE_ID,
        TRANSFER_FLAG,
        CORRECTION_FLAG,
        MQ2_FLAG,
        RECONSUME_TIME,
        UNIQ_CLIENT_MESSAGE_ID_KEYIDX,
        MAX_RECONSUME_TIMES,
        CONSUME_START_TIMESTAMP,
        INSTANCE_ID,
    ];
}

/// sysFlag bits (spec §6.3, Java `MessageSysFlag`).
pub mod sys_flag {
    /// Body compressed.
    pub const COMPRESSED: i32 = 0x1;
    /// Multiple tags (set by the broker).
    pub const MULTI_TAGS: i32 = 0x2;
    /// Transaction bits: none.
    pub const TRANSACTION_NOT_TYPE: i32 = 0;
    /// Transaction bits: half message.
    pub const TRANSACTION_PREPARED_TYPE: i32 = 0x4;
    /// Transaction bits: commit.
    pub const TRANSACTION_COMMIT_TYPE: i32 = 0x8;
    /// Transaction bits: rollback.
    pub const TRANSACTION_ROLLBACK_TYPE: i32 = 0xC;
    /// Born host is IPv6.
    pub const BORNHOST_V6: i32 = 0x10;
    /// Store host is IPv6.
    pub const STOREHOSTADDRESS_V6: i32 = 0x20;
    /// Needs unwrapping (5.x).
    pub const NEED_UNWRAP: i32 = 0x40;
    /// Inner batch (5.x).
    pub const INNER_BATCH: i32 = 0x80;
    /// Compression type mask (5.x); the type is `(flag & mask) >> 8`, 0 meaning zlib.
    pub const COMPRESSION_TYPE_MASK: i32 = 0x700;

    /// The transaction bits of `flag`.
    pub const fn transaction_value(flag: i32) -> i32 {
        flag & TRANSACTION_ROLLBACK_TYPE
    }

    /// `flag` with its transaction bits replaced.
    pub const fn with_transaction_value(flag: i32, ty: i32) -> i32 {
        (flag & !TRANSACTION_ROLLBACK_TYPE) | ty
    }
}

/// Message properties, reserved and user ones: names to values, in name order.
///
/// Kept as [`ExtFields`] are, in one text arena: reading a properties string copies it once,
/// where a map of owned strings took two allocations and a tree node per property.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Properties(ExtFields);

impl Properties {
    /// No property.
    pub fn new() -> Self {
        Self::default()
    }

    /// Room for `count` properties of `text` bytes of names and values together.
    pub fn with_capacity(count: usize, text: usize) -> Self {
        Self(ExtFields::with_capacity(count, text))
    }

    /// The value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name)
    }

    /// Whether `name` is set.
    pub fn contains_key(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    /// Whether some property's name starts with `prefix` (one lookup: names are kept sorted).
    pub fn any_name_starts_with(&self, prefix: &str) -> bool {
        self.0.any_key_starts_with(prefix)
    }

    /// Whether every name is non-empty and no name or value holds a separator of the
    /// properties string (`\x01`, `\x02`).
    pub fn separators_free(&self) -> bool {
        self.0
            .keys_present_and_free_of(NAME_VALUE_SEPARATOR as u8, PROPERTY_SEPARATOR as u8)
    }

    /// Sets `name` to `value`, replacing an earlier value.
    pub fn insert(&mut self, name: &str, value: &str) {
        self.0.insert_str(name, value);
    }

    /// Removes `name`; its value.
    pub fn remove(&mut self, name: &str) -> Option<String> {
        self.0.remove(name)
    }

    /// The properties in name order, as `(name, value)`.
    pub fn iter(&self) -> ExtFieldsIter<'_> {
        self.0.iter()
    }

    /// How many properties there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Properties {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<'a> IntoIterator for &'a Properties {
    type Item = (&'a str, &'a str);
    type IntoIter = ExtFieldsIter<'a>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<K: AsRef<str>, V: AsRef<str>> FromIterator<(K, V)> for Properties {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut props = Self::new();
        for (k, v) in iter {
            props.insert(k.as_ref(), v.as_ref());
        }
        props
    }
}

/// A message to send, or the user part of a received one. Java: `Message`.
#[derive(Clone, Debug, Default, Eq, PartialEq)]
pub struct Message {
    /// Topic.
    pub topic: String,
    /// User flag (opaque to RocketMQ).
    pub flag: i32,
    /// Properties: read with [`Message::property`] and [`Message::properties`], written with
    /// the setters, so that what is sent is checked ([`crate::validate::validate_message`]).
    pub(crate) properties: Properties,
    /// Body.
    pub body: Bytes,
    /// Transaction id (not sent; filled on transactional results).
    pub transaction_id: Option<String>,
}

impl Message {
    /// A message with `WAIT=true`, as Java's constructors set it.
    pub fn new(topic: impl Into<String>, body: impl Into<Bytes>) -> Self {
        // Room for the properties a send adds (UNIQ_KEY, tags, keys) without growing.
        let mut properties = Properties::with_capacity(4, 96);
        // The name is the program's: kept by reference, not copied into the text.
        properties.0.insert(property::WAIT_STORE_MSG_OK, "true");
        Self {
            topic: topic.into(),
            flag: 0,
            properties,
            body: body.into(),
            transaction_id: None,
        }
    }

    /// A message of parts already decoded (from a record or a request), properties included.
    pub fn from_parts(
        topic: impl Into<String>,
        flag: i32,
        properties: Properties,
        body: impl Into<Bytes>,
    ) -> Self {
        Self {
            topic: topic.into(),
            flag,
            properties,
            body: body.into(),
            transaction_id: None,
        }
    }

    /// Every property, reserved ones included, by name.
    pub fn properties(&self) -> &Properties {
        &self.properties
    }

    /// Sets the tag.
    #[must_use]
    pub fn with_tags(mut self, tags: impl AsRef<str>) -> Self {
        self.set_property(property::TAGS, tags);
        self
    }

    /// Sets the business keys (joined by a space).
    #[must_use]
    pub fn with_keys<I, S>(mut self, keys: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let joined: Vec<String> = keys.into_iter().map(|k| k.as_ref().to_owned()).collect();
        self.set_property(property::KEYS, joined.join(" "));
        self
    }

    /// Sets the delay level (1..=18 with the default broker levels).
    #[must_use]
    pub fn with_delay_level(mut self, level: i32) -> Self {
        self.set_property(property::DELAY_TIME_LEVEL, level.to_string());
        self
    }

    /// Makes this a timer message (RocketMQ 5): delivered at `at`, to the broker's precision
    /// (a second by default; 5.x brokers deliver up to that much early). Java:
    /// `setDeliverTimeMs`. A delay level, if also set, wins, as on a Java broker.
    #[must_use]
    pub fn with_deliver_time(mut self, at: SystemTime) -> Self {
        self.set_property(
            property::TIMER_DELIVER_MS,
            crate::wire_time::to_millis(at).to_string(),
        );
        self
    }

    /// Makes this a timer message delivered `delay` after the broker receives it. Java:
    /// `setDelayTimeMs`.
    #[must_use]
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.set_property(
            property::TIMER_DELAY_MS,
            crate::wire_time::duration_millis(delay).to_string(),
        );
        self
    }

    /// What a send decides by, of this message's properties, read in one pass (four lookups
    /// would each walk them).
    pub fn send_traits(&self) -> SendTraits {
        let mut seen = TraitsSeen::default();
        for (name, value) in self.properties.0.iter_key_bytes() {
            seen.note(name, value);
        }
        seen.traits()
    }

    /// Sets the client unique id (`UNIQ_KEY`), as a send does to a message without one.
    pub fn set_uniq_key(&mut self, id: &str) {
        // The name is the program's: kept by reference, not copied into the text.
        self.properties
            .0
            .insert(property::UNIQ_CLIENT_MESSAGE_ID_KEYIDX, id);
    }

    /// Whether this is a timer message: it names a delivery time or a wait
    /// (`TIMER_DELIVER_MS`, `TIMER_DELAY_SEC`, `TIMER_DELAY_MS`), or is a recall's deletion
    /// (`TIMER_DEL_UNIQKEY`). One lookup: the names share the prefix `TIMER_DEL`.
    pub fn is_timer(&self) -> bool {
        self.properties.any_name_starts_with(TIMER_NAME_PREFIX)
    }

    /// When a timer message is due, as a 5.x broker reads it: `TIMER_DELAY_SEC` after `now`,
    /// else `TIMER_DELAY_MS` after `now`, else `TIMER_DELIVER_MS`; `None` when it names none.
    ///
    /// # Errors
    /// When the property that counts is not a number.
    pub fn timer_due(
        &self,
        now: SystemTime,
    ) -> Result<Option<SystemTime>, std::num::ParseIntError> {
        let number = |key| self.property(key).map(str::parse::<i64>).transpose();
        let now = crate::wire_time::to_millis(now);
        let due = if let Some(secs) = number(property::TIMER_DELAY_SEC)? {
            now.saturating_add(secs.saturating_mul(1000))
        } else if let Some(ms) = number(property::TIMER_DELAY_MS)? {
            now.saturating_add(ms)
        } else if let Some(at) = number(property::TIMER_DELIVER_MS)? {
            at
        } else {
            return Ok(None);
        };
        Ok(Some(crate::wire_time::from_millis(due)))
    }

    /// When a timer message is to be delivered, if it asked for a time (`TIMER_DELIVER_MS`).
    pub fn deliver_time(&self) -> Option<SystemTime> {
        self.property(property::TIMER_DELIVER_MS)
            .and_then(|v| v.parse::<i64>().ok())
            .map(crate::wire_time::from_millis)
    }

    /// Sets the user flag.
    #[must_use]
    pub fn with_flag(mut self, flag: i32) -> Self {
        self.flag = flag;
        self
    }

    /// Sets whether the broker should answer only after storing (default true).
    #[must_use]
    pub fn with_wait_store_msg_ok(mut self, wait: bool) -> Self {
        self.set_property(
            property::WAIT_STORE_MSG_OK,
            if wait { "true" } else { "false" },
        );
        self
    }

    /// Adds a user property.
    ///
    /// # Errors
    /// [`PropertyError`] when the name is reserved or the name or value is blank or contains a
    /// property-string separator.
    pub fn put_user_property(
        &mut self,
        name: impl Into<String>,
        value: impl Into<String>,
    ) -> Result<(), PropertyError> {
        let (name, value) = (name.into(), value.into());
        if property::RESERVED.contains(&name.as_str()) {
            return Err(PropertyError::Reserved(name));
        }
        let bad = |s: &str| s.trim().is_empty() || s.contains(['\u{1}', '\u{2}']);
        if bad(&name) || bad(&value) {
            return Err(PropertyError::Invalid { name, value });
        }
        self.properties.insert(&name, &value);
        Ok(())
    }

    /// Sets any property, reserved or not. Not checked here: a name or value that is blank or
    /// holds the separators `\u{1}` or `\u{2}` makes the send fail validation
    /// ([`crate::validate::ValidationError::BadProperty`]); [`Message::put_user_property`]
    /// checks at once.
    pub fn set_property(&mut self, name: impl AsRef<str>, value: impl AsRef<str>) {
        self.properties.insert(name.as_ref(), value.as_ref());
    }

    /// Removes a property.
    pub fn clear_property(&mut self, name: &str) -> Option<String> {
        self.properties.remove(name)
    }

    /// A property's value.
    pub fn property(&self, name: &str) -> Option<&str> {
        self.properties.get(name)
    }

    /// The tag.
    pub fn tags(&self) -> Option<&str> {
        self.property(property::TAGS)
    }

    /// The business keys.
    pub fn keys(&self) -> Vec<&str> {
        self.property(property::KEYS)
            .map(|k| k.split(' ').filter(|s| !s.is_empty()).collect())
            .unwrap_or_default()
    }

    /// The delay level (0 when absent or unparsable).
    pub fn delay_level(&self) -> i32 {
        delay_level_of(self.property(property::DELAY_TIME_LEVEL))
    }

    /// Whether the broker answers only after storing (absent means true).
    pub fn wait_store_msg_ok(&self) -> bool {
        waits_for_store(self.property(property::WAIT_STORE_MSG_OK))
    }

    /// The client unique id (`UNIQ_KEY`), set once at first send.
    pub fn uniq_key(&self) -> Option<&str> {
        self.property(property::UNIQ_CLIENT_MESSAGE_ID_KEYIDX)
    }

    /// Whether this is a half (prepared transactional) message.
    pub fn is_transaction_prepared(&self) -> bool {
        self.property(property::TRANSACTION_PREPARED) == Some("true")
    }

    /// The reconsume count from `RECONSUME_TIME`.
    pub fn reconsume_times(&self) -> Option<i32> {
        self.property(property::RECONSUME_TIME)
            .and_then(|v| v.parse().ok())
    }

    /// The properties string of this message.
    pub fn properties_string(&self) -> String {
        encode_properties(&self.properties)
    }
}

/// A user property was refused.
#[derive(Clone, Debug, Eq, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PropertyError {
    /// The name belongs to RocketMQ.
    #[error("property name {0:?} is reserved")]
    Reserved(String),
    /// Blank, or containing `\u{1}`/`\u{2}`.
    #[error("property {name:?}={value:?} is blank or contains a separator")]
    Invalid {
        /// Name.
        name: String,
        /// Value.
        value: String,
    },
}

pub(crate) const NAME_VALUE_SEPARATOR: char = '\u{1}';
pub(crate) const PROPERTY_SEPARATOR: char = '\u{2}';

/// Encodes properties as `name\x01value\x02` per pair (spec §6.1).
pub fn encode_properties(props: &Properties) -> String {
    let mut s = String::with_capacity(properties_len(props));
    for (k, v) in props {
        s.push_str(k);
        s.push(NAME_VALUE_SEPARATOR);
        s.push_str(v);
        s.push(PROPERTY_SEPARATOR);
    }
    s
}

/// What a send decides by, of a message's properties ([`Message::send_traits`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SendTraits {
    /// The delay level ([`Message::delay_level`]).
    pub delay_level: i32,
    /// Whether it is a timer message ([`Message::is_timer`]).
    pub timer: bool,
    /// Whether the broker answers only after storing ([`Message::wait_store_msg_ok`]).
    pub wait: bool,
    /// Whether it has its client unique id ([`Message::uniq_key`]).
    pub has_id: bool,
    /// The length in bytes of its properties string ([`properties_len`]).
    pub properties_len: usize,
}

/// [`SendTraits`] as the properties are walked: for a caller that walks them for more.
#[derive(Default)]
pub(crate) struct TraitsSeen<'a> {
    delay: Option<&'a str>,
    wait: Option<&'a str>,
    timer: bool,
    has_id: bool,
    properties_len: usize,
}

impl<'a> TraitsSeen<'a> {
    /// Notes the property `name` of `value`. Names are told apart by their first byte, so
    /// most are compared with none of the names looked for.
    #[inline]
    pub(crate) fn note(&mut self, name: &[u8], value: &'a str) {
        const DELAY: &[u8] = property::DELAY_TIME_LEVEL.as_bytes();
        const WAIT: &[u8] = property::WAIT_STORE_MSG_OK.as_bytes();
        const ID: &[u8] = property::UNIQ_CLIENT_MESSAGE_ID_KEYIDX.as_bytes();
        const TIMER: &[u8] = TIMER_NAME_PREFIX.as_bytes();
        self.properties_len += name.len() + value.len() + 2;
        match name.first() {
            Some(&c) if c == DELAY[0] && name == DELAY => self.delay = Some(value),
            Some(&c) if c == WAIT[0] && name == WAIT => self.wait = Some(value),
            Some(&c) if c == ID[0] && name == ID => self.has_id = true,
            Some(&c) if c == TIMER[0] => self.timer |= name.starts_with(TIMER),
            _ => {}
        }
    }

    /// What was seen.
    pub(crate) fn traits(self) -> SendTraits {
        SendTraits {
            delay_level: delay_level_of(self.delay),
            timer: self.timer,
            wait: waits_for_store(self.wait),
            has_id: self.has_id,
            properties_len: self.properties_len,
        }
    }
}

/// What the names of a timer message's properties start with (`TIMER_DELIVER_MS`,
/// `TIMER_DELAY_SEC`, `TIMER_DELAY_MS`).
pub(crate) const TIMER_NAME_PREFIX: &str = "TIMER_DEL";

/// The delay level a `DELAY` value names (0 when absent or unparsable).
pub(crate) fn delay_level_of(value: Option<&str>) -> i32 {
    value.and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// Whether a `WAIT` value asks the broker to answer only after storing (absent means true).
pub(crate) fn waits_for_store(value: Option<&str>) -> bool {
    value != Some("false")
}

/// The length in bytes of [`encode_properties`]' text: summed from where the names and
/// values are, without reading them.
pub fn properties_len(props: &Properties) -> usize {
    props.0.text_len() + 2 * props.0.len()
}

/// Appends [`encode_properties`]' text to `dst` without building it first: one copy when the
/// properties are still the sorted string they were read from (a broker storing what a client
/// sent).
pub fn put_properties(props: &Properties, dst: &mut impl bytes::BufMut) {
    if let Some(text) = props.0.as_properties_string() {
        dst.put_slice(text.as_bytes());
        return;
    }
    for (k, v) in props {
        dst.put_slice(k.as_bytes());
        dst.put_u8(NAME_VALUE_SEPARATOR as u8);
        dst.put_slice(v.as_bytes());
        dst.put_u8(PROPERTY_SEPARATOR as u8);
    }
}

/// Decodes a properties string the way 5.x does: each `\x02`-separated segment splits at its
/// first `\x01`, which must be neither the first nor the last character; other segments are
/// ignored. Values may contain further `\x01`.
pub fn decode_properties(s: &str) -> Properties {
    decode_properties_with(s, &[])
}

/// [`decode_properties`], with `extra` numeric properties set (the later value of a name
/// given twice).
pub(crate) fn decode_properties_with(s: &str, extra: &[(&'static str, i64)]) -> Properties {
    // Room is left for a few more that the receiver sets (the broker's CLUSTER, a consumer's
    // ARRIVE_TIME).
    Properties(ExtFields::from_properties_string_with(s, 64, extra))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// One pass over the properties says what the lookups one by one say.
    #[test]
    fn send_traits_are_what_each_lookup_says() {
        let plain = Message::new("T", "b");
        let delayed = Message::new("T", "b").with_delay_level(3).with_tags("A");
        let mut timer = Message::new("T", "b")
            .with_delay(Duration::from_secs(5))
            .with_wait_store_msg_ok(false);
        timer.set_uniq_key("0A");
        let mut bare = Message::new("T", "b");
        bare.clear_property(property::WAIT_STORE_MSG_OK);
        for m in [&plain, &delayed, &timer, &bare] {
            assert_eq!(
                m.send_traits(),
                SendTraits {
                    delay_level: m.delay_level(),
                    timer: m.is_timer(),
                    wait: m.wait_store_msg_ok(),
                    has_id: m.uniq_key().is_some(),
                    properties_len: properties_len(&m.properties),
                },
                "{:?}",
                m.properties
            );
        }
        let t = timer.send_traits();
        assert!(t.timer && !t.wait && t.has_id, "{t:?}");
        assert_eq!(delayed.send_traits().delay_level, 3);
        assert!(bare.send_traits().wait, "absent WAIT means true");
    }

    #[test]
    fn properties_string_layout() {
        let m = Message::new("T", "b")
            .with_tags("TagA")
            .with_keys(["k1", "k2"]);
        assert_eq!(
            m.properties_string(),
            "KEYS\u{1}k1 k2\u{2}TAGS\u{1}TagA\u{2}WAIT\u{1}true\u{2}"
        );
        assert_eq!(m.keys(), vec!["k1", "k2"]);
        assert!(m.wait_store_msg_ok());
        assert_eq!(encode_properties(&Properties::new()), "");
    }

    #[test]
    fn a_timer_is_due_by_its_wait_before_its_time_as_a_5x_broker_reads_it() {
        let now = crate::wire_time::from_millis(1_000_000);
        let at = |m: &Message| m.timer_due(now).map(|d| d.map(crate::wire_time::to_millis));
        let mut m = Message::new("T", "b");
        assert_eq!(at(&m), Ok(None));
        m.set_property(property::TIMER_DELIVER_MS, "5000000");
        assert_eq!(at(&m), Ok(Some(5_000_000)));
        m.set_property(property::TIMER_DELAY_MS, "250");
        assert_eq!(at(&m), Ok(Some(1_000_250)));
        m.set_property(property::TIMER_DELAY_SEC, "3");
        assert_eq!(at(&m), Ok(Some(1_003_000)));
        m.set_property(property::TIMER_DELAY_SEC, "soon");
        assert!(at(&m).is_err(), "the one that counts is not a number");
        assert!(m.is_timer());
    }

    #[test]
    fn decode_skips_malformed_segments() {
        let p = decode_properties("a\u{1}1\u{2}\u{1}x\u{2}b\u{1}\u{2}c\u{1}v\u{1}w\u{2}junk");
        assert_eq!(p.get("a"), Some("1"));
        assert_eq!(p.get("c"), Some("v\u{1}w"));
        assert_eq!(p.len(), 2);
    }

    #[test]
    fn reserved_and_blank_user_properties_are_refused() {
        let mut m = Message::new("T", "b");
        assert_eq!(
            m.put_user_property("TAGS", "x"),
            Err(PropertyError::Reserved("TAGS".into()))
        );
        assert!(m.put_user_property(" ", "x").is_err());
        assert!(m.put_user_property("a", "x\u{2}").is_err());
        assert!(m.put_user_property("a", "b").is_ok());
    }

    #[test]
    fn transaction_bits() {
        let f = sys_flag::with_transaction_value(
            sys_flag::COMPRESSED | 0x4,
            sys_flag::TRANSACTION_COMMIT_TYPE,
        );
        assert_eq!(f, 0x9);
        assert_eq!(
            sys_flag::transaction_value(f),
            sys_flag::TRANSACTION_COMMIT_TYPE
        );
    }

    proptest! {
        #[test]
        /// Any run of inserts and removes leaves what a sorted map of owned strings would hold.
        fn properties_behave_as_a_sorted_map(ops in proptest::collection::vec(
            (any::<bool>(), "[A-Z_a-c]{0,3}", "[a-z]{0,4}"), 0..40)) {
            let mut props = Properties::new();
            let mut map = std::collections::BTreeMap::new();
            for (insert, name, value) in ops {
                if insert {
                    props.insert(&name, &value);
                    map.insert(name.clone(), value);
                } else {
                    prop_assert_eq!(props.remove(&name), map.remove(&name));
                }
                prop_assert_eq!(props.get(&name), map.get(&name).map(String::as_str));
            }
            prop_assert_eq!(props.len(), map.len());
            prop_assert!(props.iter().eq(map.iter().map(|(k, v)| (k.as_str(), v.as_str()))));
        }

        #[test]
        fn properties_round_trip(props in proptest::collection::btree_map(
            "[^\u{1}\u{2}]{1,12}", "[^\u{1}\u{2}]{1,24}", 0..8)) {
            let props: Properties = props.into_iter().collect();
            prop_assert_eq!(decode_properties(&encode_properties(&props)), props);
        }
    }
}
