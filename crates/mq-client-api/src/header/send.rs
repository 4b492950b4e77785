//! Send headers (spec §4.1–§4.3): V1 with field names, V2 with single-letter keys, and the
//! response.

use mq_remoting::{FieldSink, TypedFields};

use super::header;

header! {
    /// The V1 send request header (SEND_MESSAGE, code 10).
    SendMessageRequestHeader("SendMessageRequestHeader") {
        /// Producer group.
        req producer_group: String => "producerGroup",
        /// Topic (namespace-wrapped).
        req topic: String => "topic",
        /// Topic whose config auto-creation copies (`TBW102`).
        req default_topic: String => "defaultTopic",
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
            a: v1.producer_group,
            b: v1.topic,
            c: v1.default_topic,
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
    pub fn encode_v2(&self, ext: &mut mq_remoting::ExtFields) {
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
            producer_group: v2.a,
            topic: v2.b,
            default_topic: v2.c,
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
