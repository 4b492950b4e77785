//! Between the gRPC contract and the remoting vocabulary: statuses, resources, messages.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use mq_client_api::ClientApiError;
use mq_client_api::message::{Message, MessageExt, SendTraits, property};
use mq_client_api::{ResponseCode, validate};

use crate::v2;

/// The property a 5.x client's FIFO message group travels under in remoting (Java
/// `MessageConst.PROPERTY_SHARDING_KEY`).
pub const SHARDING_KEY: &str = "__SHARDINGKEY";

/// The hash that keeps a FIFO message group on one queue (FNV-1a of its name): the proxy picks
/// the queue by it, and so does our gRPC producer, so both agree.
pub fn group_hash(group: &str) -> u32 {
    group.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// A status with `code` and `message`.
pub fn status(code: v2::Code, message: impl Into<String>) -> v2::Status {
    v2::Status {
        code: code as i32,
        message: message.into(),
    }
}

/// The OK status.
pub fn ok() -> v2::Status {
    status(v2::Code::Ok, "OK")
}

/// The status a remoting failure maps to: the broker's refusals to their gRPC codes, transport
/// failures to PROXY_TIMEOUT or INTERNAL_SERVER_ERROR.
pub fn status_of(e: &ClientApiError) -> v2::Status {
    let code = match e.response_code() {
        Some(ResponseCode::TOPIC_NOT_EXIST) => v2::Code::TopicNotFound,
        Some(ResponseCode::NO_PERMISSION) => v2::Code::Forbidden,
        Some(ResponseCode::MESSAGE_ILLEGAL) => v2::Code::BadRequest,
        Some(ResponseCode::SYSTEM_BUSY) => v2::Code::TooManyRequests,
        Some(ResponseCode::FLUSH_DISK_TIMEOUT) => v2::Code::MasterPersistenceTimeout,
        Some(ResponseCode::SUBSCRIPTION_GROUP_NOT_EXIST) => v2::Code::ConsumerGroupNotFound,
        Some(_) => v2::Code::InternalServerError,
        None if matches!(
            e,
            ClientApiError::Remoting(mq_remoting::RemotingError::Timeout { .. })
        ) =>
        {
            v2::Code::ProxyTimeout
        }
        None => v2::Code::InternalServerError,
    };
    status(code, e.to_string())
}

/// The status of a call made of entries: theirs when they all agree, MULTIPLE_RESULTS
/// otherwise (and OK for no entry).
pub fn overall<'a>(mut statuses: impl Iterator<Item = Option<&'a v2::Status>>) -> v2::Status {
    let Some(first) = statuses.next() else {
        return ok();
    };
    let first = first.cloned().unwrap_or_else(ok);
    if statuses.all(|s| s.map(|s| s.code) == Some(first.code)) {
        first
    } else {
        status(
            v2::Code::MultipleResults,
            "the entries have different outcomes",
        )
    }
}

/// The resource's name, with its namespace as remoting writes it (`ns%name`).
pub fn resource_name(r: Option<&v2::Resource>) -> String {
    match r {
        Some(r) if !r.resource_namespace.is_empty() => {
            format!("{}%{}", r.resource_namespace, r.name)
        }
        Some(r) => r.name.clone(),
        None => String::new(),
    }
}

/// A timestamp as ms since the epoch.
pub fn timestamp_ms(t: &prost_types::Timestamp) -> i64 {
    t.seconds
        .saturating_mul(1000)
        .saturating_add(i64::from(t.nanos / 1_000_000))
}

/// Now as a protobuf timestamp.
pub fn now_timestamp() -> prost_types::Timestamp {
    let since = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    prost_types::Timestamp {
        seconds: i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(since.subsec_nanos()).unwrap_or(0),
    }
}

/// A `Duration` for the contract.
pub fn duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// Why a gRPC message cannot be stored: its status.
pub type Refusal = v2::Status;

/// How the cluster behind a proxy keeps a message's delivery time.
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum DeliveryTimes {
    /// As a RocketMQ 5 timer message (`TIMER_DELIVER_MS`), delivered at that time to the
    /// broker's precision (a second), at most `max_delay` ahead (Java's proxy:
    /// `maxDelayTimeMills`, a day).
    Timer {
        /// The longest wait accepted.
        max_delay: Duration,
    },
    /// By the first of these delay levels (level 1 first) not earlier than it, so never early;
    /// for 4.x brokers, which have no timer.
    DelayLevels(Vec<Duration>),
}

impl Default for DeliveryTimes {
    fn default() -> Self {
        Self::Timer {
            max_delay: Duration::from_secs(24 * 3600),
        }
    }
}

/// A message a gRPC client sent, as the remoting message to store, with its delivery time
/// kept as `delivery` says (a time past what it can keep is refused).
///
/// # Errors
/// The status to answer: an empty or undecodable body, a bad topic, tag, key or property, or
/// a delivery time too far ahead.
pub fn to_remoting(
    m: &v2::Message,
    delivery: &DeliveryTimes,
    max_body: usize,
) -> Result<(Message, bool), Refusal> {
    let topic = resource_name(m.topic.as_ref());
    validate::validate_topic(&topic).map_err(|e| status(v2::Code::IllegalTopic, e.to_string()))?;
    let sys = m.system_properties.clone().unwrap_or_default();
    let body = match v2::Encoding::try_from(sys.body_encoding) {
        Ok(v2::Encoding::Gzip) => Bytes::from(gunzip(&m.body, max_body)?),
        _ => m.body.clone(),
    };
    if body.is_empty() {
        return Err(status(
            v2::Code::MessageBodyEmpty,
            "the message body is empty",
        ));
    }
    if body.len() > max_body {
        return Err(status(
            v2::Code::MessageBodyTooLarge,
            format!("the body is {} bytes, more than {max_body}", body.len()),
        ));
    }
    let mut msg = Message::new(topic, body);
    for (k, v) in &m.user_properties {
        msg.put_user_property(k, v)
            .map_err(|e| status(v2::Code::IllegalMessagePropertyKey, e.to_string()))?;
    }
    if let Some(tag) = sys.tag.as_deref().filter(|t| !t.is_empty()) {
        if tag.contains('|') {
            return Err(status(
                v2::Code::IllegalMessageTag,
                format!("tag {tag:?} holds '|'"),
            ));
        }
        msg.set_property(property::TAGS, tag);
    }
    if !sys.keys.is_empty() {
        msg.set_property(property::KEYS, sys.keys.join(" "));
    }
    if !sys.message_id.is_empty() {
        msg.set_property(
            property::UNIQ_CLIENT_MESSAGE_ID_KEYIDX,
            sys.message_id.clone(),
        );
    }
    if let Some(group) = sys.message_group.as_deref().filter(|g| !g.is_empty()) {
        msg.set_property(SHARDING_KEY, group);
    }
    if let Some(at) = &sys.delivery_timestamp {
        let at = timestamp_ms(at);
        let wait = Duration::from_millis(
            u64::try_from(at - mq_client_api::wire_time::now_millis()).unwrap_or(0),
        );
        match delivery {
            DeliveryTimes::Timer { max_delay } => {
                if wait > *max_delay {
                    return Err(status(
                        v2::Code::IllegalDeliveryTime,
                        format!(
                            "the max delay time of message is too large, max is {}",
                            max_delay.as_millis()
                        ),
                    ));
                }
                msg.set_property(property::TIMER_DELIVER_MS, at.to_string());
            }
            DeliveryTimes::DelayLevels(levels) if !wait.is_zero() => {
                let Some(level) = levels.iter().position(|d| *d >= wait) else {
                    return Err(status(
                        v2::Code::IllegalDeliveryTime,
                        format!(
                            "delivery in {wait:?} is past the longest delay level, {:?}",
                            levels.last().copied().unwrap_or_default()
                        ),
                    ));
                };
                msg.set_property(property::DELAY_TIME_LEVEL, (level + 1).to_string());
            }
            DeliveryTimes::DelayLevels(_) => {}
        }
    }
    let transactional =
        v2::MessageType::try_from(sys.message_type) == Ok(v2::MessageType::Transaction);
    if transactional {
        msg.set_property(property::TRANSACTION_PREPARED, "true");
    }
    validate::validate_message(&msg, max_body)
        .map_err(|e| status(v2::Code::BadRequest, e.to_string()))?;
    Ok((msg, transactional))
}

/// A gzip (or zlib, as some clients write it) body, inflated to at most `max` bytes.
fn gunzip(body: &[u8], max: usize) -> Result<Vec<u8>, Refusal> {
    use std::io::Read as _;
    let corrupt = |e: std::io::Error| {
        status(
            v2::Code::MessageCorrupted,
            format!("cannot inflate the body: {e}"),
        )
    };
    let mut out = Vec::new();
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    if body.starts_with(&[0x1f, 0x8b]) {
        flate2::read::GzDecoder::new(body)
            .take(limit)
            .read_to_end(&mut out)
            .map_err(corrupt)?;
    } else {
        flate2::read::ZlibDecoder::new(body)
            .take(limit)
            .read_to_end(&mut out)
            .map_err(corrupt)?;
    }
    Ok(out)
}

/// Properties that travel as system properties (or are the broker's own), never as user
/// properties.
const SYSTEM_KEYS: [&str; 19] = [
    property::TAGS,
    property::KEYS,
    property::UNIQ_CLIENT_MESSAGE_ID_KEYIDX,
    SHARDING_KEY,
    property::DELAY_TIME_LEVEL,
    property::WAIT_STORE_MSG_OK,
    property::MIN_OFFSET,
    property::MAX_OFFSET,
    property::REAL_TOPIC,
    property::REAL_QUEUE_ID,
    property::CLUSTER,
    property::CONSUME_START_TIMESTAMP,
    property::TIMER_DELIVER_MS,
    property::TIMER_DELAY_SEC,
    property::TIMER_DELAY_MS,
    property::TIMER_OUT_MS,
    property::TIMER_ENQUEUE_MS,
    property::TIMER_DEQUEUE_MS,
    property::TIMER_DEL_UNIQKEY,
];

/// A protobuf timestamp of `ms` since the epoch.
pub fn timestamp_of(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: i32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    }
}

/// The parts of a gRPC message that come from the message alone: topic, body, user
/// properties, and tag, keys, id (`UNIQ_KEY`), FIFO group ([`SHARDING_KEY`]) and type as system
/// properties. Callers add what belongs to sending or to a delivery. `traits` are the
/// message's ([`Message::send_traits`]: its delay and timer read in the same pass as the rest).
fn outline(msg: &Message, traits: &SendTraits) -> v2::Message {
    // One pass over the properties: the system ones read, the user ones kept.
    let mut user_properties = std::collections::HashMap::new();
    let (mut tag, mut keys, mut id, mut group, mut prepared) = (None, "", "", None, false);
    for (k, v) in msg.properties().iter() {
        match k {
            property::TAGS => tag = Some(v),
            property::KEYS => keys = v,
            property::UNIQ_CLIENT_MESSAGE_ID_KEYIDX => id = v,
            SHARDING_KEY => group = Some(v),
            property::TRANSACTION_PREPARED => prepared = v == "true",
            _ => {}
        }
        // What Java's proxy leaves out too: the system's own properties.
        if !SYSTEM_KEYS.contains(&k) && !property::RESERVED.contains(&k) && !k.starts_with("__") {
            user_properties.insert(k.to_owned(), v.to_owned());
        }
    }
    let message_type = if prepared {
        v2::MessageType::Transaction
    } else if group.is_some() {
        v2::MessageType::Fifo
    } else if traits.delay_level > 0 || traits.timer {
        v2::MessageType::Delay
    } else {
        v2::MessageType::Normal
    };
    v2::Message {
        topic: Some(v2::Resource {
            resource_namespace: String::new(),
            name: msg.topic.clone(),
        }),
        user_properties,
        system_properties: Some(v2::SystemProperties {
            tag: tag.map(str::to_owned),
            // As `Message::keys` splits them.
            keys: keys
                .split(' ')
                .filter(|k| !k.is_empty())
                .map(str::to_owned)
                .collect(),
            message_id: id.to_owned(),
            body_encoding: v2::Encoding::Identity as i32,
            message_type: message_type as i32,
            message_group: group.map(str::to_owned),
            ..Default::default()
        }),
        body: msg.body.clone(),
    }
}

/// A stored message as a gRPC consumer receives it, with its receipt handle, attempt and
/// invisible time. Its body digest is MD5 in upper-case hex, as Apache RocketMQ's proxy writes
/// it: the clients disagree on how CRC32 is written (Node: decimal, Java: hex), not on MD5.
pub fn to_grpc(m: &MessageExt, handle: &str, attempt: u32, invisible: Duration) -> v2::Message {
    let mut out = outline(&m.message, &m.message.send_traits());
    let md5 = {
        use md5::Digest as _;
        let digest = md5::Md5::digest(&m.message.body);
        digest.iter().fold(String::with_capacity(32), |mut hex, b| {
            use std::fmt::Write as _;
            let _ = write!(hex, "{b:02X}");
            hex
        })
    };
    if let Some(sys) = out.system_properties.as_mut() {
        sys.body_digest = Some(v2::Digest {
            r#type: v2::DigestType::Md5 as i32,
            checksum: md5,
        });
        sys.born_timestamp = Some(timestamp_of(m.born_timestamp));
        sys.born_host = m.born_host.ip().to_string();
        sys.store_timestamp = Some(timestamp_of(m.store_timestamp));
        sys.store_host = m.store_host.to_string();
        sys.receipt_handle = Some(handle.to_owned());
        sys.queue_id = m.queue_id;
        sys.queue_offset = Some(m.queue_offset);
        sys.invisible_duration = Some(duration(invisible));
        sys.delivery_attempt = Some(i32::try_from(attempt).unwrap_or(i32::MAX));
        sys.delivery_timestamp = m.message.deliver_time().map(prost_types::Timestamp::from);
    }
    out
}

/// A message as a gRPC producer sends it (see `outline`), born now on `born_host`, with the
/// delivery time it asks for: a timer's ([`Message::with_deliver_time`],
/// [`Message::with_delay`]), else its delay level's by `delay_levels`. The id must have been
/// set.
pub fn from_message(msg: &Message, born_host: &str, delay_levels: &[Duration]) -> v2::Message {
    let traits = msg.send_traits();
    let mut out = outline(msg, &traits);
    let now = SystemTime::now();
    let leveled = usize::try_from(traits.delay_level)
        .ok()
        .filter(|l| *l > 0)
        .and_then(|l| delay_levels.get(l - 1))
        .map(|d| now + *d);
    if let Some(sys) = out.system_properties.as_mut() {
        sys.born_timestamp = Some(prost_types::Timestamp::from(now));
        sys.born_host = born_host.to_owned();
        // Only a timer message names a due time.
        sys.delivery_timestamp = leveled
            .or_else(|| {
                traits
                    .timer
                    .then(|| msg.timer_due(now).ok().flatten())
                    .flatten()
            })
            .map(prost_types::Timestamp::from);
    }
    out
}

/// A message a gRPC consumer received, as the remoting vocabulary holds a stored message:
/// system properties become the properties remoting keeps them under (tag, keys, id, FIFO
/// group), times and places become the record's fields. A gzip body is inflated (up to
/// `max_body` bytes).
///
/// # Errors
/// The body cannot be inflated.
pub fn to_message_ext(m: &v2::Message, max_body: usize) -> Result<MessageExt, Refusal> {
    let sys = m.system_properties.clone().unwrap_or_default();
    let body = match v2::Encoding::try_from(sys.body_encoding) {
        Ok(v2::Encoding::Gzip) => Bytes::from(gunzip(&m.body, max_body)?),
        _ => m.body.clone(),
    };
    let mut msg = Message::new(resource_name(m.topic.as_ref()), body);
    // What a server sends is kept as it came, reserved names included (a proxy may pass the
    // broker's own properties on); only what would corrupt the properties string is left out.
    let separator = |s: &str| s.contains(['\u{1}', '\u{2}']);
    for (k, v) in &m.user_properties {
        if !separator(k) && !separator(v) {
            msg.set_property(k, v);
        }
    }
    if let Some(tag) = sys.tag.as_deref().filter(|t| !t.is_empty()) {
        msg.set_property(property::TAGS, tag);
    }
    if !sys.keys.is_empty() {
        msg.set_property(property::KEYS, sys.keys.join(" "));
    }
    if !sys.message_id.is_empty() {
        msg.set_property(property::UNIQ_CLIENT_MESSAGE_ID_KEYIDX, sys.message_id);
    }
    if let Some(group) = sys.message_group.filter(|g| !g.is_empty()) {
        msg.set_property(SHARDING_KEY, group);
    }
    let unspecified = std::net::SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, 0));
    let host = |h: &str| {
        h.parse::<std::net::SocketAddr>()
            .or_else(|_| h.parse::<std::net::IpAddr>().map(|ip| (ip, 0).into()))
            .unwrap_or(unspecified)
    };
    Ok(MessageExt {
        message: msg,
        queue_id: sys.queue_id,
        queue_offset: sys.queue_offset.unwrap_or(-1),
        born_timestamp: sys.born_timestamp.as_ref().map_or(0, timestamp_ms),
        born_host: host(&sys.born_host),
        store_timestamp: sys.store_timestamp.as_ref().map_or(0, timestamp_ms),
        store_host: host(&sys.store_host),
        reconsume_times: sys.delivery_attempt.unwrap_or(1).saturating_sub(1),
        ..MessageExt::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delayed(at: SystemTime) -> v2::Message {
        v2::Message {
            topic: Some(v2::Resource {
                resource_namespace: String::new(),
                name: "T".into(),
            }),
            system_properties: Some(v2::SystemProperties {
                delivery_timestamp: Some(prost_types::Timestamp::from(at)),
                message_type: v2::MessageType::Delay as i32,
                ..Default::default()
            }),
            body: Bytes::from_static(b"x"),
            ..Default::default()
        }
    }

    /// What a gRPC producer sends of a message: system properties from its own, the rest as
    /// user properties, and the type its properties make it.
    #[test]
    fn a_sent_message_carries_its_properties_where_the_contract_puts_them() {
        let mut m = Message::new("T", "body").with_tags("TagA");
        m.set_property(property::KEYS, "k1  k2");
        m.set_property(property::UNIQ_CLIENT_MESSAGE_ID_KEYIDX, "0A01");
        m.set_property(SHARDING_KEY, "group-1");
        m.set_property("color", "blue");
        m.set_property(property::WAIT_STORE_MSG_OK, "true");
        m.set_property("__internal", "x");
        let delays = [Duration::from_secs(1)];
        let sent = from_message(&m, "10.0.0.1", &delays);
        let sys = sent.system_properties.clone().unwrap_or_default();
        assert_eq!(sys.tag.as_deref(), Some("TagA"));
        assert_eq!(sys.keys, ["k1", "k2"]);
        assert_eq!(sys.message_id, "0A01");
        assert_eq!(sys.message_group.as_deref(), Some("group-1"));
        assert_eq!(sys.message_type, v2::MessageType::Fifo as i32);
        assert_eq!(sys.born_host, "10.0.0.1");
        assert_eq!(sys.delivery_timestamp, None);
        let user: Vec<(&str, &str)> = sent
            .user_properties
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(user, [("color", "blue")]);
        // A half message is a transaction's, whatever else it is.
        m.set_property(property::TRANSACTION_PREPARED, "true");
        let sys = from_message(&m, "", &delays)
            .system_properties
            .unwrap_or_default();
        assert_eq!(sys.message_type, v2::MessageType::Transaction as i32);
        // A delay level: due after its delay; a plain message is normal.
        let delayed = Message::new("T", "b").with_delay_level(1);
        let sys = from_message(&delayed, "", &delays)
            .system_properties
            .unwrap_or_default();
        assert_eq!(sys.message_type, v2::MessageType::Delay as i32);
        assert!(sys.delivery_timestamp.is_some());
        let plain = Message::new("T", "b");
        let sys = from_message(&plain, "", &delays)
            .system_properties
            .unwrap_or_default();
        assert_eq!(sys.message_type, v2::MessageType::Normal as i32);
        assert!(sys.tag.is_none() && sys.keys.is_empty() && sys.message_group.is_none());
    }

    #[test]
    fn a_delivery_time_is_a_timer_message_up_to_the_longest_wait() {
        let timer = DeliveryTimes::Timer {
            max_delay: Duration::from_secs(60),
        };
        let at = SystemTime::now() + Duration::from_secs(30);
        let (msg, _) = to_remoting(&delayed(at), &timer, 1024).unwrap();
        let ms = mq_client_api::wire_time::to_millis;
        assert_eq!(msg.deliver_time().map(ms), Some(ms(at)));
        assert_eq!(msg.delay_level(), 0);
        let too_far = to_remoting(
            &delayed(SystemTime::now() + Duration::from_secs(61)),
            &timer,
            1024,
        )
        .unwrap_err();
        assert_eq!(too_far.code, v2::Code::IllegalDeliveryTime as i32);
        assert!(
            too_far.message.contains("max is 60000"),
            "{}",
            too_far.message
        );
        // With delay levels, the first level not earlier.
        let levels =
            DeliveryTimes::DelayLevels(vec![Duration::from_secs(10), Duration::from_secs(40)]);
        let (msg, _) = to_remoting(&delayed(at), &levels, 1024).unwrap();
        assert_eq!((msg.delay_level(), msg.deliver_time()), (2, None));
    }

    #[test]
    fn a_delivered_timer_message_shows_its_delivery_time_and_no_timer_property() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let mut ext = MessageExt {
            message: Message::new("T", "x").with_deliver_time(at),
            ..MessageExt::default()
        };
        ext.message
            .set_property(property::TIMER_OUT_MS, "1700000000000");
        let m = to_grpc(&ext, "handle", 1, Duration::from_secs(30));
        let sys = m.system_properties.unwrap();
        assert_eq!(
            sys.delivery_timestamp,
            Some(prost_types::Timestamp::from(at))
        );
        assert_eq!(sys.message_type, v2::MessageType::Delay as i32);
        assert!(m.user_properties.is_empty(), "{:?}", m.user_properties);
    }
}
