//! Send headers (spec §4.1–§4.3): V1 with field names, V2 with single-letter keys, and the
//! response.

use std::sync::Arc;

use mq_remoting::{ExtFields, FieldSink, TypedFields};

use super::{HeaderError, header, optional, required, required_text};

header! {
    /// The V1 send request header (SEND_MESSAGE, code 10).
    SendMessageRequestHeader("SendMessageRequestHeader") {
        /// Producer group.
        req producer_group: Arc<str> => "producerGroup",
        /// Topic (namespace-wrapped).
        req topic: Arc<str> => "topic",
        /// Topic whose config auto-creation copies (`TBW102`).
        req default_topic: Arc<str> => "defaultTopic",
        /// Queue count of an auto-created topic (4).
        req default_topic_queue_nums: i32 => "defaultTopicQueueNums",
        /// Target queue; negative lets the broker choose.
        req queue_id: i32 => "queueId",
        /// Message sysFlag bits.
        req sys_flag: i32 => "sysFlag",
        /// Client time at header build, ms since the epoch.
        req born_timestamp: i64 => "bornTimestamp",
        /// The message's user flag.
        req flag: i32 => "flag",
        /// The properties string.
        opt properties: String => "properties",
        /// Reconsume count (retry topics).
        opt reconsume_times: i32 => "reconsumeTimes",
        /// Unit mode (a Java primitive: always sent).
        prim unit_mode: bool => "unitMode",
        /// Whether the body is a batch (a Java primitive: always sent).
        prim batch: bool => "batch",
        /// Max reconsume times (retry topics).
        opt max_reconsume_times: i32 => "maxReconsumeTimes",
        /// 5.x: the broker name the producer chose.
        opt broker_name: String => "bname",
    }
}

header! {
    /// The V2 send request header (SEND_MESSAGE_V2 310, SEND_BATCH_MESSAGE 320): the V1 fields
    /// under single-letter keys.
    SendMessageRequestHeaderV2("SendMessageRequestHeaderV2") {
        /// producerGroup.
        req a: String => "a",
        /// topic.
        req b: String => "b",
        /// defaultTopic.
        req c: String => "c",
        /// defaultTopicQueueNums.
        req d: i32 => "d",
        /// queueId.
        req e: i32 => "e",
        /// sysFlag.
        req f: i32 => "f",
        /// bornTimestamp.
        req g: i64 => "g",
        /// flag.
        req h: i32 => "h",
        /// properties.
        opt i: String => "i",
        /// reconsumeTimes.
        opt j: i32 => "j",
        /// unitMode.
        prim k: bool => "k",
        /// maxReconsumeTimes.
        opt l: i32 => "l",
        /// batch.
        prim m: bool => "m",
        /// 5.x brokerName.
        opt n: String => "n",
    }
}

impl From<SendMessageRequestHeader> for SendMessageRequestHeaderV2 {
    fn from(v1: SendMessageRequestHeader) -> Self {
        Self {
            a: v1.producer_group.to_string(),
            b: v1.topic.to_string(),
            c: v1.default_topic.to_string(),
            d: v1.default_topic_queue_nums,
            e: v1.queue_id,
            f: v1.sys_flag,
            g: v1.born_timestamp,
            h: v1.flag,
            i: v1.properties,
            j: v1.reconsume_times,
            k: v1.unit_mode,
            l: v1.max_reconsume_times,
            m: v1.batch,
            n: v1.broker_name,
        }
    }
}

impl SendMessageRequestHeader {
    /// Writes this header as a [`SendMessageRequestHeaderV2`] (single-letter keys) without
    /// converting it first.
    pub fn encode_v2(&self, ext: &mut ExtFields) {
        self.write_v2(ext);
    }

    /// Writes this header's fields under the V2 keys, in key order, into `sink`: an
    /// [`ExtFields`](mq_remoting::ExtFields), or a frame being encoded (see [`SendV2Fields`]).
    pub fn write_v2(&self, sink: &mut dyn FieldSink) {
        let flag = |b: bool| if b { "true" } else { "false" };
        sink.str_field("a", &self.producer_group);
        sink.str_field("b", &self.topic);
        sink.str_field("c", &self.default_topic);
        sink.int_field("d", i64::from(self.default_topic_queue_nums));
        sink.int_field("e", i64::from(self.queue_id));
        sink.int_field("f", i64::from(self.sys_flag));
        sink.int_field("g", self.born_timestamp);
        sink.int_field("h", i64::from(self.flag));
        if let Some(v) = &self.properties {
            sink.str_field("i", v);
        }
        if let Some(v) = self.reconsume_times {
            sink.int_field("j", i64::from(v));
        }
        sink.str_field("k", flag(self.unit_mode));
        if let Some(v) = self.max_reconsume_times {
            sink.int_field("l", i64::from(v));
        }
        sink.str_field("m", flag(self.batch));
        if let Some(v) = &self.broker_name {
            sink.str_field("n", v);
        }
    }
}

/// A send header as the typed fields of a SEND_MESSAGE_V2 (or batch, or reply V2) request:
/// written straight into the frame, with the bytes [`SendMessageRequestHeader::encode_v2`]
/// gives.
#[derive(Debug)]
pub struct SendV2Fields(pub SendMessageRequestHeader);

impl TypedFields for SendV2Fields {
    fn write_fields(&self, sink: &mut dyn FieldSink) {
        self.0.write_v2(sink);
    }

    fn text_len_hint(&self) -> usize {
        let h = &self.0;
        // Keys, digits and flags: at most 14 × 1 + 6 × 20 + 2 × 5 bytes.
        144 + h.producer_group.len()
            + h.topic.len()
            + h.default_topic.len()
            + h.properties.as_ref().map_or(0, String::len)
            + h.broker_name.as_ref().map_or(0, String::len)
    }
}

impl From<SendMessageRequestHeaderV2> for SendMessageRequestHeader {
    fn from(v2: SendMessageRequestHeaderV2) -> Self {
        Self {
            producer_group: v2.a.into(),
            topic: v2.b.into(),
            default_topic: v2.c.into(),
            default_topic_queue_nums: v2.d,
            queue_id: v2.e,
            sys_flag: v2.f,
            born_timestamp: v2.g,
            flag: v2.h,
            properties: v2.i,
            reconsume_times: v2.j,
            unit_mode: v2.k,
            batch: v2.m,
            max_reconsume_times: v2.l,
            broker_name: v2.n,
        }
    }
}

/// A send request header read in place: the fields of [`SendMessageRequestHeader`], from the
/// V1 names or the V2 letters, with its text borrowed from the command's fields. What a broker
/// reads from every send, without copying four strings.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
#[allow(missing_docs)] // The fields of `SendMessageRequestHeader`, documented there.
pub struct SendHeaderRef<'a> {
    pub producer_group: &'a str,
    pub topic: &'a str,
    pub default_topic: &'a str,
    pub default_topic_queue_nums: i32,
    pub queue_id: i32,
    pub sys_flag: i32,
    pub born_timestamp: i64,
    pub flag: i32,
    pub properties: Option<&'a str>,
    pub reconsume_times: Option<i32>,
    pub unit_mode: bool,
    pub batch: bool,
    pub max_reconsume_times: Option<i32>,
    pub broker_name: Option<&'a str>,
}

/// The V1 names of the send header's fields, in the order of the V2 letters `a` to `n`.
const V1_NAMES: [&str; 14] = [
    "producerGroup",
    "topic",
    "defaultTopic",
    "defaultTopicQueueNums",
    "queueId",
    "sysFlag",
    "bornTimestamp",
    "flag",
    "properties",
    "reconsumeTimes",
    "unitMode",
    "maxReconsumeTimes",
    "batch",
    "bname",
];

/// The V2 letters, `a` to `n`.
const V2_NAMES: [&str; 14] = [
    "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n",
];

impl<'a> SendHeaderRef<'a> {
    /// Reads the V2 letters (`v2`, SEND_MESSAGE_V2 and the batch and reply codes) or the V1
    /// names, by the rules and with the errors of [`SendMessageRequestHeaderV2`]'s and
    /// [`SendMessageRequestHeader`]'s decoders.
    ///
    /// # Errors
    /// [`HeaderError`] when a required field is missing or a number does not parse.
    pub fn decode(ext: &'a ExtFields, v2: bool) -> Result<Self, HeaderError> {
        let (java, names) = if v2 {
            ("SendMessageRequestHeaderV2", &V2_NAMES)
        } else {
            ("SendMessageRequestHeader", &V1_NAMES)
        };
        let mut text: [Option<&'a str>; 14] = [None; 14];
        for (key, value) in ext.iter_key_bytes() {
            let slot = match (v2, key) {
                (true, &[c @ b'a'..=b'n']) => Some(usize::from(c - b'a')),
                (true, _) => None,
                (false, _) => V1_NAMES.iter().position(|n| n.as_bytes() == key),
            };
            if let Some(i) = slot {
                text[i] = Some(value);
            }
        }
        Ok(Self {
            producer_group: required_text(text[0], java, names[0])?,
            topic: required_text(text[1], java, names[1])?,
            default_topic: required_text(text[2], java, names[2])?,
            default_topic_queue_nums: required(text[3], java, names[3])?,
            queue_id: required(text[4], java, names[4])?,
            sys_flag: required(text[5], java, names[5])?,
            born_timestamp: required(text[6], java, names[6])?,
            flag: required(text[7], java, names[7])?,
            properties: text[8],
            reconsume_times: optional(text[9], java, names[9])?,
            unit_mode: optional(text[10], java, names[10])?.unwrap_or_default(),
            max_reconsume_times: optional(text[11], java, names[11])?,
            batch: optional(text[12], java, names[12])?.unwrap_or_default(),
            broker_name: text[13],
        })
    }

    /// The header with its text copied.
    pub fn to_header(&self) -> SendMessageRequestHeader {
        SendMessageRequestHeader {
            producer_group: self.producer_group.into(),
            topic: self.topic.into(),
            default_topic: self.default_topic.into(),
            default_topic_queue_nums: self.default_topic_queue_nums,
            queue_id: self.queue_id,
            sys_flag: self.sys_flag,
            born_timestamp: self.born_timestamp,
            flag: self.flag,
            properties: self.properties.map(str::to_owned),
            reconsume_times: self.reconsume_times,
            unit_mode: self.unit_mode,
            batch: self.batch,
            max_reconsume_times: self.max_reconsume_times,
            broker_name: self.broker_name.map(str::to_owned),
        }
    }
}

header! {
    /// The send response header; also carries the broker's `MSG_REGION` and `TRACE_ON`.
    SendMessageResponseHeader("SendMessageResponseHeader") {
        /// Offset message id(s): comma-joined for a batch.
        req msg_id: String => "msgId",
        /// The queue used.
        req queue_id: i32 => "queueId",
        /// Consume-queue offset of the (first) stored message.
        req queue_offset: i64 => "queueOffset",
        /// Transaction id.
        opt transaction_id: String => "transactionId",
        /// 5.x batch unique id.
        opt batch_uniq_id: String => "batchUniqId",
        /// The broker's region (default `DefaultRegion`).
        opt msg_region: String => "MSG_REGION",
        /// Whether tracing is on (`false` turns it off).
        opt trace_on: String => "TRACE_ON",
        /// 5.3: the handle that recalls a timer message before it is delivered
        /// ([`crate::message::RecallHandle`]).
        opt recall_handle: String => "recallHandle",
    }
}

/// [`SendMessageResponseHeader`]'s fields as a producer reads them, their text borrowed from
/// the answer and found in one walk over its fields (`batchUniqId` is not read).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SendResponseRef<'a> {
    /// Offset message id(s): comma-joined for a batch.
    pub msg_id: &'a str,
    /// The queue used.
    pub queue_id: i32,
    /// Consume-queue offset of the (first) stored message.
    pub queue_offset: i64,
    /// Transaction id.
    pub transaction_id: Option<&'a str>,
    /// The broker's region.
    pub msg_region: Option<&'a str>,
    /// Whether tracing is on (`false` turns it off).
    pub trace_on: Option<&'a str>,
    /// 5.3: a timer message's recall handle.
    pub recall_handle: Option<&'a str>,
}

/// The names [`SendResponseRef`] reads, in the order of its fields.
const RESPONSE_NAMES: [&str; 7] = [
    "msgId",
    "queueId",
    "queueOffset",
    "transactionId",
    "MSG_REGION",
    "TRACE_ON",
    "recallHandle",
];

impl<'a> SendResponseRef<'a> {
    /// Reads the fields by the rules and with the errors of [`SendMessageResponseHeader`]'s
    /// decoder.
    ///
    /// # Errors
    /// [`HeaderError`] when a required field is missing or a number does not parse.
    pub fn decode(ext: &'a ExtFields) -> Result<Self, HeaderError> {
        const JAVA: &str = "SendMessageResponseHeader";
        let mut text: [Option<&'a str>; 7] = [None; 7];
        for (key, value) in ext.iter_key_bytes() {
            if let Some(i) = RESPONSE_NAMES.iter().position(|n| n.as_bytes() == key) {
                text[i] = Some(value);
            }
        }
        Ok(Self {
            msg_id: required_text(text[0], JAVA, RESPONSE_NAMES[0])?,
            queue_id: required(text[1], JAVA, RESPONSE_NAMES[1])?,
            queue_offset: required(text[2], JAVA, RESPONSE_NAMES[2])?,
            transaction_id: text[3],
            msg_region: text[4],
            trace_on: text[5],
            recall_handle: text[6],
        })
    }
}

header! {
    /// Recall a timer message before it is delivered (RECALL_MESSAGE, 370; 5.3).
    RecallMessageRequestHeader("RecallMessageRequestHeader") {
        /// The recalling producer's group.
        opt producer_group: String => "producerGroup",
        /// The message's topic.
        req topic: String => "topic",
        /// The handle its send answered with.
        req recall_handle: String => "recallHandle",
        /// The broker the handle names.
        opt broker_name: String => "bname",
    }
}

header! {
    /// The answer to RECALL_MESSAGE.
    RecallMessageResponseHeader("RecallMessageResponseHeader") {
        /// The recalled message's unique id.
        req msg_id: String => "msgId",
    }
}

header! {
    /// A reply the broker pushes to its requester (PUSH_REPLY_MESSAGE_TO_CLIENT, 326): the
    /// replier's send header, with the hosts and the store time added.
    ReplyMessageRequestHeader("ReplyMessageRequestHeader") {
        /// The replier's producer group.
        req producer_group: String => "producerGroup",
        /// The reply topic.
        req topic: String => "topic",
        /// The replier's template topic.
        req default_topic: String => "defaultTopic",
        /// The replier's template queue count.
        req default_topic_queue_nums: i32 => "defaultTopicQueueNums",
        /// The queue the replier chose.
        req queue_id: i32 => "queueId",
        /// The reply's sysFlag (its body may be compressed).
        req sys_flag: i32 => "sysFlag",
        /// When the replier built the reply, ms since the epoch.
        req born_timestamp: i64 => "bornTimestamp",
        /// The reply's user flag.
        req flag: i32 => "flag",
        /// The reply's properties string (with `PUSH_REPLY_TIME`).
        opt properties: String => "properties",
        /// Reconsume count.
        opt reconsume_times: i32 => "reconsumeTimes",
        /// Unit mode (a Java primitive: always sent).
        prim unit_mode: bool => "unitMode",
        /// The replier's `ip:port`.
        req born_host: String => "bornHost",
        /// The broker's `ip:port`.
        req store_host: String => "storeHost",
        /// When the broker pushed the reply, ms since the epoch.
        req store_timestamp: i64 => "storeTimestamp",
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::header::CommandHeader;

    /// A field's text: usually what its type reads, sometimes not.
    fn any_text() -> impl Strategy<Value = String> {
        prop_oneof![
            6 => "-?[0-9]{1,9}",
            1 => "[0-9]{10,12}",
            1 => Just("true".to_owned()),
            1 => Just(" 7 ".to_owned()),
            1 => "[a-zA-Z%|\u{1}\u{2}]{0,10}",
        ]
    }

    proptest! {
        /// The borrowed reader gives what the owned V1 and V2 decoders give (the same header,
        /// or the same error) for any subset of the fields, with any text, under either key set.
        #[test]
        fn the_borrowed_send_header_reads_as_the_owned_decoders(
            fields in proptest::collection::vec(proptest::option::weighted(0.95, any_text()), 14),
            other in proptest::option::of(any_text()),
        ) {
            for v2 in [false, true] {
                let names = if v2 { &V2_NAMES } else { &V1_NAMES };
                let mut ext = ExtFields::new();
                for (name, text) in names.iter().zip(&fields) {
                    if let Some(text) = text {
                        ext.insert(*name, text);
                    }
                }
                if let Some(text) = &other {
                    ext.insert("unknownField", text);
                }
                let borrowed = SendHeaderRef::decode(&ext, v2).map(|h| h.to_header());
                let owned = if v2 {
                    SendMessageRequestHeaderV2::decode(&ext).map(Into::into)
                } else {
                    SendMessageRequestHeader::decode(&ext)
                };
                prop_assert_eq!(borrowed, owned);
            }
        }

        /// The producer's borrowed reader of a send's answer gives the owned decoder's fields
        /// (or its error) for any subset of them, with any text.
        #[test]
        fn the_borrowed_send_answer_reads_as_the_owned_decoder(
            fields in proptest::collection::vec(proptest::option::weighted(0.9, any_text()), 7),
            batch_id in proptest::option::of(any_text()),
        ) {
            let mut ext = ExtFields::new();
            for (name, text) in RESPONSE_NAMES.iter().zip(&fields) {
                if let Some(text) = text {
                    ext.insert(*name, text);
                }
            }
            if let Some(text) = &batch_id {
                ext.insert("batchUniqId", text);
            }
            let borrowed = SendResponseRef::decode(&ext).map(|h| {
                (h.msg_id.to_owned(), h.queue_id, h.queue_offset, h.transaction_id.map(str::to_owned),
                    h.msg_region.map(str::to_owned), h.trace_on.map(str::to_owned),
                    h.recall_handle.map(str::to_owned))
            });
            let owned = SendMessageResponseHeader::decode(&ext).map(|h| {
                (h.msg_id, h.queue_id, h.queue_offset, h.transaction_id, h.msg_region, h.trace_on,
                    h.recall_handle)
            });
            prop_assert_eq!(borrowed, owned);
        }

        /// A well-formed header reads back as written, under either key set.
        #[test]
        fn a_written_send_header_reads_back(
            group in "[a-zA-Z_]{1,8}", topic in "[a-zA-Z%|]{1,12}",
            queue_id in any::<i32>(), born in any::<i64>(), props in proptest::option::of("[a-z\u{1}\u{2}]{1,20}"),
            batch in any::<bool>(), reconsume in proptest::option::of(any::<i32>()),
        ) {
            let header = SendMessageRequestHeader {
                producer_group: group.into(),
                topic: topic.into(),
                default_topic: "TBW102".into(),
                default_topic_queue_nums: 4,
                queue_id,
                born_timestamp: born,
                properties: props,
                batch,
                reconsume_times: reconsume,
                ..SendMessageRequestHeader::default()
            };
            let mut v1 = ExtFields::new();
            header.encode(&mut v1);
            let mut v2 = ExtFields::new();
            header.encode_v2(&mut v2);
            prop_assert_eq!(SendHeaderRef::decode(&v1, false)?.to_header(), header.clone());
            prop_assert_eq!(SendHeaderRef::decode(&v2, true)?.to_header(), header);
        }
    }
}
