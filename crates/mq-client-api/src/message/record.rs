//! The stored message record (spec §6.5): what the commit log holds and what PULL, VIEW_MESSAGE,
//! QUERY_MESSAGE and CHECK_TRANSACTION_STATE bodies carry.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::id::encode_offset_msg_id;
use super::{Message, properties_len, put_properties, sys_flag};

/// Magic of a V1 record (1-byte topic length).
pub const MAGIC_V1: i32 = 0xDAA3_20A7_u32 as i32;
/// Magic of a V2 record (2-byte topic length, 5.x).
pub const MAGIC_V2: i32 = 0xDAA3_20AB_u32 as i32;
/// Magic of the blank filler at the end of a commit-log file.
pub const MAGIC_BLANK: i32 = 0xCBD4_3194_u32 as i32;

/// A stored message with its broker-side metadata. Java: `MessageExt`.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct MessageExt {
    /// Topic, flag, properties and body (the body as stored: compressed when the sysFlag
    /// says so, unless decoded with decompression).
    pub message: Message,
    /// Queue id.
    pub queue_id: i32,
    /// Consume-queue offset.
    pub queue_offset: i64,
    /// Commit-log offset.
    pub commit_log_offset: i64,
    /// sysFlag bits.
    pub sys_flag: i32,
    /// Client time of sending, ms.
    pub born_timestamp: i64,
    /// Client address.
    pub born_host: SocketAddr,
    /// Broker time of storing, ms.
    pub store_timestamp: i64,
    /// Broker address.
    pub store_host: SocketAddr,
    /// Reconsume count.
    pub reconsume_times: i32,
    /// Commit-log offset of the prepared message (transactions).
    pub prepared_transaction_offset: i64,
    /// CRC32 of the body & 0x7FFFFFFF (as stored).
    pub body_crc: i32,
}

impl Default for MessageExt {
    fn default() -> Self {
        let unspecified = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0));
        Self {
            message: Message::default(),
            queue_id: 0,
            queue_offset: 0,
            commit_log_offset: 0,
            sys_flag: 0,
            born_timestamp: 0,
            born_host: unspecified,
            store_timestamp: 0,
            store_host: unspecified,
            reconsume_times: 0,
            prepared_transaction_offset: 0,
            body_crc: 0,
        }
    }
}

impl MessageExt {
    /// The broker-generated offset message id (spec §6.6).
    pub fn offset_msg_id(&self) -> String {
        encode_offset_msg_id(self.store_host, self.commit_log_offset)
    }

    /// The client message id: `UNIQ_KEY` when present, else the offset id.
    pub fn msg_id(&self) -> String {
        self.message
            .uniq_key()
            .map_or_else(|| self.offset_msg_id(), str::to_owned)
    }

    /// The size of this record once encoded.
    pub fn encoded_len(&self) -> usize {
        self.record_len(properties_len(&self.message.properties))
    }

    /// The size of this record with a properties string of `props` bytes.
    fn record_len(&self, props: usize) -> usize {
        record_len(
            self.message.body.len(),
            self.message.topic.len(),
            props,
            self.born_host.is_ipv6(),
            self.store_host.is_ipv6(),
        )
    }
}

fn record_len(body: usize, topic: usize, props: usize, born_v6: bool, store_v6: bool) -> usize {
    let topic_len_size = if topic > 127 { 2 } else { 1 };
    84 + 4
        + body
        + topic_len_size
        + topic
        + 2
        + props
        + if born_v6 { 12 } else { 0 }
        + if store_v6 { 12 } else { 0 }
}

/// A record could not be decoded or encoded.
#[derive(Clone, Debug, Eq, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// Fewer bytes than the record needs.
    #[error("record truncated: need {need} bytes, have {have}")]
    Truncated {
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// Unknown magic code.
    #[error("bad magic code {0:#x}")]
    BadMagic(i32),
    /// The commit log's end-of-file filler.
    #[error("blank filler record")]
    Blank,
    /// TOTALSIZE disagrees with the fields.
    #[error("record size {declared} disagrees with its fields ({actual})")]
    SizeMismatch {
        /// TOTALSIZE.
        declared: i32,
        /// Computed from the fields.
        actual: usize,
    },
    /// The body does not match its CRC.
    #[error("body CRC mismatch: stored {stored:#x}, computed {computed:#x}")]
    CrcMismatch {
        /// Stored.
        stored: i32,
        /// Computed.
        computed: i32,
    },
    /// Topic or properties not UTF-8.
    #[error("record text is not UTF-8")]
    Utf8,
    /// Topic or properties too long for the format.
    #[error("{what} of {len} bytes is too long for a record")]
    TooLong {
        /// Which field.
        what: &'static str,
        /// Its length.
        len: usize,
    },
}

/// CRC32 of a body masked with 0x7FFFFFFF, as the broker computes BODYCRC.
pub fn body_crc(body: &[u8]) -> i32 {
    (crc32fast::hash(body) & 0x7FFF_FFFF) as i32
}

/// Encodes a record. The IPv6 flags are set from the host addresses, BODYCRC is computed, and
/// the V2 magic is used only for topics over 127 bytes.
///
/// # Errors
/// [`RecordError::TooLong`] when the topic exceeds 32767 bytes or the properties 32767 bytes.
pub fn encode_record(msg: &MessageExt) -> Result<Bytes, RecordError> {
    let prepared = PreparedRecord::new(msg)?;
    let mut b = BytesMut::with_capacity(prepared.len());
    prepared.write(msg, &mut b);
    Ok(b.freeze())
}

/// A record whose variable parts are encoded and measured, so that a store can learn its size
/// (to place it), then set its offsets and write it straight into its own buffer.
#[derive(Clone, Debug)]
pub struct PreparedRecord {
    /// The length of the properties string, written from the message's properties (and the
    /// extra properties text after them).
    props: usize,
    /// The length of the extra properties text.
    extra: usize,
    total: usize,
}

impl PreparedRecord {
    /// Encodes the properties of `msg` once and measures the record.
    ///
    /// # Errors
    /// [`RecordError::TooLong`] when the topic or properties do not fit the format.
    pub fn new(msg: &MessageExt) -> Result<Self, RecordError> {
        Self::with_extra_properties(msg, "")
    }

    /// As [`PreparedRecord::new`], for a record whose properties string ends with `extra`, a
    /// properties string itself (`name\u{1}value\u{2}`…; see
    /// [`PreparedRecord::write_with_extra`]). A name in both is read with its value in `extra`,
    /// the last one, as every client reads repeated names: a broker stamps what it adds to
    /// every message (its `CLUSTER`) so, as a Java broker appends a batch's properties to each
    /// of its messages, without changing the message's own.
    ///
    /// # Errors
    /// [`RecordError::TooLong`] when the topic or properties do not fit the format.
    pub fn with_extra_properties(msg: &MessageExt, extra: &str) -> Result<Self, RecordError> {
        let props = properties_len(&msg.message.properties) + extra.len();
        let topic = msg.message.topic.len();
        if props > i16::MAX as usize {
            return Err(RecordError::TooLong {
                what: "properties",
                len: props,
            });
        }
        if topic > i16::MAX as usize {
            return Err(RecordError::TooLong {
                what: "topic",
                len: topic,
            });
        }
        let total = msg.record_len(props);
        Ok(Self {
            props,
            extra: extra.len(),
            total,
        })
    }

    /// The record's size in bytes.
    pub const fn len(&self) -> usize {
        self.total
    }

    /// Whether the record is empty (never: a record has a fixed header).
    pub const fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Appends the record of `msg` (the message this was prepared from, offsets now set) to
    /// `b`. The IPv6 flags are set from the host addresses, BODYCRC is computed, and the V2
    /// magic is used only for topics over 127 bytes.
    pub fn write(&self, msg: &MessageExt, b: &mut BytesMut) {
        self.write_with_extra(msg, "", b);
    }

    /// [`PreparedRecord::write`] for a record prepared with
    /// [`PreparedRecord::with_extra_properties`]: `extra` must be the same text.
    pub fn write_with_extra(&self, msg: &MessageExt, extra: &str, b: &mut BytesMut) {
        debug_assert_eq!(
            extra.len(),
            self.extra,
            "the extra text the record was prepared with"
        );
        let topic = msg.message.topic.as_bytes();
        let body = &msg.message.body;
        let mut flag = msg.sys_flag & !(sys_flag::BORNHOST_V6 | sys_flag::STOREHOSTADDRESS_V6);
        if msg.born_host.is_ipv6() {
            flag |= sys_flag::BORNHOST_V6;
        }
        if msg.store_host.is_ipv6() {
            flag |= sys_flag::STOREHOSTADDRESS_V6;
        }
        let v2 = topic.len() > 127;
        b.reserve(self.total);
        // Lengths were checked by `new` (topic and properties ≤ i16::MAX, so the total and
        // the body length fit an i32 for any body a frame can carry). The fixed fields are
        // put together on the stack and appended at once.
        let mut head = Head::default();
        head.put(&(self.total as i32).to_be_bytes());
        head.put(&(if v2 { MAGIC_V2 } else { MAGIC_V1 }).to_be_bytes());
        head.put(&body_crc(body).to_be_bytes());
        head.put(&msg.queue_id.to_be_bytes());
        head.put(&msg.message.flag.to_be_bytes());
        head.put(&msg.queue_offset.to_be_bytes());
        head.put(&msg.commit_log_offset.to_be_bytes());
        head.put(&flag.to_be_bytes());
        head.put(&msg.born_timestamp.to_be_bytes());
        head.put_host(msg.born_host);
        head.put(&msg.store_timestamp.to_be_bytes());
        head.put_host(msg.store_host);
        head.put(&msg.reconsume_times.to_be_bytes());
        head.put(&msg.prepared_transaction_offset.to_be_bytes());
        head.put(&(body.len() as i32).to_be_bytes());
        b.put_slice(head.bytes());
        b.put_slice(body);
        if v2 {
            b.put_i16(topic.len() as i16);
        } else {
            b.put_i8(topic.len() as i8);
        }
        b.put_slice(topic);
        b.put_i16(self.props as i16);
        put_properties(&msg.message.properties, b);
        b.put_slice(extra.as_bytes());
    }
}

/// A record's fixed fields, up to the body: at most 112 bytes (both hosts IPv6).
struct Head {
    buf: [u8; 112],
    len: usize,
}

impl Default for Head {
    fn default() -> Self {
        Self {
            buf: [0; 112],
            len: 0,
        }
    }
}

impl Head {
    /// Appends `bytes`; the fields of one record always fit (see the size above).
    fn put(&mut self, bytes: &[u8]) {
        let end = self.len + bytes.len();
        self.buf[self.len..end].copy_from_slice(bytes);
        self.len = end;
    }

    fn put_host(&mut self, addr: SocketAddr) {
        match addr.ip() {
            IpAddr::V4(ip) => self.put(&ip.octets()),
            IpAddr::V6(ip) => self.put(&ip.octets()),
        }
        self.put(&i32::from(addr.port()).to_be_bytes());
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// Decodes one record from the front of `src`, advancing it past the record. With
/// `check_crc` the body must match BODYCRC; with `decompress` a compressed body is inflated
/// (Java's client decode) and the COMPRESSED flag cleared.
///
/// # Errors
/// [`RecordError`]; `src` is not advanced then.
pub fn decode_record(
    src: &mut Bytes,
    check_crc: bool,
    decompress: bool,
) -> Result<MessageExt, RecordError> {
    decode_record_with(src, check_crc, decompress, &[])
}

/// [`decode_record`], with `extra` numeric properties set on the message (a pull's
/// MIN_OFFSET and MAX_OFFSET) as its properties are read, rather than inserted one by one
/// afterwards.
fn decode_record_with(
    src: &mut Bytes,
    check_crc: bool,
    decompress: bool,
    extra: &[(&'static str, i64)],
) -> Result<MessageExt, RecordError> {
    let mut r = src.clone();
    let need = |n: usize, r: &Bytes| {
        if r.remaining() < n {
            Err(RecordError::Truncated {
                need: n,
                have: r.remaining(),
            })
        } else {
            Ok(())
        }
    };
    need(8, &r)?;
    let total = r.get_i32();
    let magic = r.get_i32();
    let v2 = match magic {
        MAGIC_V1 => false,
        MAGIC_V2 => true,
        MAGIC_BLANK => return Err(RecordError::Blank),
        other => return Err(RecordError::BadMagic(other)),
    };
    let total_len = usize::try_from(total).map_err(|_| RecordError::SizeMismatch {
        declared: total,
        actual: 0,
    })?;
    need(total_len.saturating_sub(8), &r)?;
    need(4 + 4 + 4 + 8 + 8 + 4 + 8, &r)?;
    let stored_crc = r.get_i32();
    let queue_id = r.get_i32();
    let flag = r.get_i32();
    let queue_offset = r.get_i64();
    let commit_log_offset = r.get_i64();
    let sys = r.get_i32();
    let born_timestamp = r.get_i64();
    let born_host = get_host(&mut r, sys & sys_flag::BORNHOST_V6 != 0)?;
    need(8, &r)?;
    let store_timestamp = r.get_i64();
    let store_host = get_host(&mut r, sys & sys_flag::STOREHOSTADDRESS_V6 != 0)?;
    need(4 + 8 + 4, &r)?;
    let reconsume_times = r.get_i32();
    let prepared_transaction_offset = r.get_i64();
    let body_len = usize::try_from(r.get_i32()).map_err(|_| RecordError::SizeMismatch {
        declared: total,
        actual: 0,
    })?;
    need(body_len, &r)?;
    let body = r.split_to(body_len);
    let topic_len = if v2 {
        need(2, &r)?;
        usize::from(r.get_u16())
    } else {
        need(1, &r)?;
        usize::from(r.get_u8())
    };
    need(topic_len, &r)?;
    let topic = String::from_utf8(r.split_to(topic_len).to_vec()).map_err(|_| RecordError::Utf8)?;
    need(2, &r)?;
    let props_len = usize::from(r.get_u16());
    need(props_len, &r)?;
    let props_text = r.split_to(props_len);
    let props = std::str::from_utf8(&props_text).map_err(|_| RecordError::Utf8)?;
    let consumed = src.remaining() - r.remaining();
    if consumed != total_len {
        return Err(RecordError::SizeMismatch {
            declared: total,
            actual: consumed,
        });
    }
    if check_crc {
        let computed = body_crc(&body);
        if computed != stored_crc {
            return Err(RecordError::CrcMismatch {
                stored: stored_crc,
                computed,
            });
        }
    }
    let mut sys_out = sys;
    let body = if decompress && sys & sys_flag::COMPRESSED != 0 {
        match super::compression::decompress_for(sys, &body) {
            Ok(Some(plain)) => {
                sys_out &= !(sys_flag::COMPRESSED | sys_flag::COMPRESSION_TYPE_MASK);
                Bytes::from(plain)
            }
            // Java keeps the raw body when inflation fails.
            Ok(None) | Err(_) => body,
        }
    } else {
        body
    };
    let msg = MessageExt {
        message: Message {
            topic,
            flag,
            properties: super::decode_properties_with(props, extra),
            body,
            transaction_id: None,
        },
        queue_id,
        queue_offset,
        commit_log_offset,
        sys_flag: sys_out,
        born_timestamp,
        born_host,
        store_timestamp,
        store_host,
        reconsume_times,
        prepared_transaction_offset,
        body_crc: stored_crc,
    };
    *src = r;
    Ok(msg)
}

fn get_host(r: &mut Bytes, v6: bool) -> Result<SocketAddr, RecordError> {
    let n = if v6 { 20 } else { 8 };
    if r.remaining() < n {
        return Err(RecordError::Truncated {
            need: n,
            have: r.remaining(),
        });
    }
    let ip = if v6 {
        let mut o = [0u8; 16];
        r.copy_to_slice(&mut o);
        IpAddr::V6(Ipv6Addr::from(o))
    } else {
        let mut o = [0u8; 4];
        r.copy_to_slice(&mut o);
        IpAddr::V4(Ipv4Addr::from(o))
    };
    let port = r.get_i32();
    Ok(SocketAddr::new(ip, u16::try_from(port).unwrap_or(0)))
}

/// Decodes a concatenation of records (a PULL or QUERY_MESSAGE body), stopping at the end or
/// at the first record that does not decode, as Java does.
pub fn decode_records(body: &Bytes, check_crc: bool, decompress: bool) -> Vec<MessageExt> {
    decode_records_with(body, check_crc, decompress, &[])
}

/// [`decode_records`], each message with the `extra` numeric properties set.
pub(crate) fn decode_records_with(
    body: &Bytes,
    check_crc: bool,
    decompress: bool,
    extra: &[(&'static str, i64)],
) -> Vec<MessageExt> {
    let mut src = body.clone();
    let mut out = Vec::new();
    while src.has_remaining() {
        match decode_record_with(&mut src, check_crc, decompress, extra) {
            Ok(m) => out.push(m),
            Err(_) => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::message::property;

    fn sample() -> MessageExt {
        let mut m = Message::new("TopicTest", &b"hello"[..]).with_tags("TagA");
        m.set_property(property::UNIQ_CLIENT_MESSAGE_ID_KEYIDX, "0A");
        MessageExt {
            message: m,
            queue_id: 3,
            queue_offset: 42,
            commit_log_offset: 4096,
            sys_flag: 0,
            born_timestamp: 1_700_000_000_000,
            born_host: "10.0.0.5:53000".parse().unwrap(),
            store_timestamp: 1_700_000_000_005,
            store_host: "127.0.0.1:10911".parse().unwrap(),
            reconsume_times: 1,
            prepared_transaction_offset: 0,
            body_crc: body_crc(b"hello"),
        }
    }

    #[test]
    fn ipv4_layout_has_an_84_byte_prefix() {
        let m = sample();
        let b = encode_record(&m).unwrap();
        assert_eq!(b.len(), m.encoded_len());
        assert_eq!(&b[4..8], &MAGIC_V1.to_be_bytes());
        assert_eq!(&b[16..20], &m.message.flag.to_be_bytes());
        assert_eq!(&b[28..36], &4096i64.to_be_bytes());
        assert_eq!(&b[56..64], &1_700_000_000_005i64.to_be_bytes());
        assert_eq!(&b[84..88], &5i32.to_be_bytes());
        assert_eq!(&b[88..93], b"hello");
        assert_eq!(b[93], 9);
    }

    #[test]
    fn tampering_is_detected() {
        let b = encode_record(&sample()).unwrap();
        let mut t = b.to_vec();
        t[89] ^= 0xFF;
        let err = decode_record(&mut Bytes::from(t.clone()), true, false).unwrap_err();
        assert!(matches!(err, RecordError::CrcMismatch { .. }));
        // Without the check the record still decodes.
        assert!(decode_record(&mut Bytes::from(t), false, false).is_ok());
    }

    #[test]
    fn truncated_and_blank_records_are_errors() {
        let b = encode_record(&sample()).unwrap();
        for cut in [0, 7, 50, b.len() - 1] {
            let mut src = b.slice(..cut);
            assert!(decode_record(&mut src, true, false).is_err());
            assert_eq!(src.len(), cut, "not advanced on error");
        }
        let mut blank = BytesMut::new();
        blank.put_i32(8);
        blank.put_i32(MAGIC_BLANK);
        assert_eq!(
            decode_record(&mut blank.freeze(), true, false),
            Err(RecordError::Blank)
        );
    }

    #[test]
    fn compressed_body_is_inflated_on_client_decode() {
        let mut m = sample();
        let plain = vec![b'z'; 10_000];
        let (c, bits) = crate::message::Compressor::default()
            .maybe_compress(&plain, false)
            .unwrap();
        m.message.body = Bytes::from(c);
        m.sys_flag |= bits;
        let b = encode_record(&m).unwrap();
        let got = decode_record(&mut b.clone(), true, true).unwrap();
        assert_eq!(&got.message.body[..], &plain[..]);
        assert_eq!(got.sys_flag & sys_flag::COMPRESSED, 0);
        let raw = decode_record(&mut b.clone(), true, false).unwrap();
        assert_eq!(raw.message.body, m.message.body);
    }

    #[test]
    fn records_concatenate_and_decoding_stops_at_garbage() {
        let mut body = BytesMut::new();
        body.put(encode_record(&sample()).unwrap());
        body.put(encode_record(&sample()).unwrap());
        body.put_slice(b"garbage!garbage!");
        assert_eq!(decode_records(&body.freeze(), true, false).len(), 2);
    }

    fn arb_host() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::from((ip, p))),
            (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::from((ip, p))),
        ]
    }

    proptest! {
        #[test]
        fn records_round_trip(
            topic in "[a-zA-Z0-9_%|-]{1,200}",
            body in proptest::collection::vec(any::<u8>(), 0..512),
            props in proptest::collection::btree_map("[a-zA-Z]{1,8}", "[^\u{1}\u{2}]{1,16}", 0..5),
            (queue_id, flag, sys) in (any::<i32>(), any::<i32>(), 0i32..0x10),
            (qo, clo, bt, st, pto) in (any::<i64>(), any::<i64>(), any::<i64>(), any::<i64>(), any::<i64>()),
            born in arb_host(), store in arb_host(), reconsume in any::<i32>(),
        ) {
            let body = Bytes::from(body);
            let mut m = MessageExt {
                message: Message { topic, flag, properties: props.into_iter().collect(), body: body.clone(), transaction_id: None },
                queue_id, queue_offset: qo, commit_log_offset: clo, sys_flag: sys & !1,
                born_timestamp: bt, born_host: born, store_timestamp: st, store_host: store,
                reconsume_times: reconsume, prepared_transaction_offset: pto, body_crc: body_crc(&body),
            };
            let encoded = encode_record(&m).unwrap();
            let mut src = encoded.clone();
            let back = decode_record(&mut src, true, false).unwrap();
            prop_assert!(src.is_empty());
            if born.is_ipv6() { m.sys_flag |= sys_flag::BORNHOST_V6; }
            if store.is_ipv6() { m.sys_flag |= sys_flag::STOREHOSTADDRESS_V6; }
            prop_assert_eq!(back, m);
        }
    }
}
