//! Batch body encoding (spec §6.8): one record per message, `TOTALSIZE MAGIC(0) BODYCRC(0) FLAG
//! BODYLEN BODY PROPSLEN PROPS`, with `MessageBatch.generateFromList`'s rules.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::{
    Message, NAME_VALUE_SEPARATOR, PROPERTY_SEPARATOR, SendTraits, TraitsSeen, decode_properties,
    properties_len, put_properties,
};

/// A batch was refused. The caller is at fault.
#[derive(Clone, Debug, Eq, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum BatchError {
    /// No messages.
    #[error("a batch needs at least one message")]
    Empty,
    /// A message has a delay level.
    #[error("TimeDelayLevel is not supported for batching")]
    DelayNotSupported,
    /// A timer message (a delivery time or a wait): brokers keep its time only when it is
    /// sent alone.
    #[error("timer messages are not supported for batching")]
    TimerNotSupported,
    /// A retry topic.
    #[error("retry group topics are not supported for batching")]
    RetryTopic,
    /// Topics differ.
    #[error("the topic of the messages in one batch should be the same")]
    MixedTopics,
    /// waitStoreMsgOK differs.
    #[error("the waitStoreMsgOK of the messages in one batch should be the same")]
    MixedWaitStore,
    /// Properties too long for the 2-byte length.
    #[error("properties of {0} bytes are too long")]
    PropertiesTooLong(usize),
    /// A malformed batch body (broker side).
    #[error("malformed batch body at byte {0}")]
    Malformed(usize),
}

/// Checks `messages` by the rules of [`encode_batch`] without encoding them; the size of
/// their batch body.
///
/// # Errors
/// [`BatchError`] when a rule is broken.
pub fn check_batch(messages: &[Message]) -> Result<usize, BatchError> {
    checked(messages).map(|(size, _)| size)
}

/// `m`'s facts, when it keeps the rules that concern a message alone.
fn checked_facts(m: &Message) -> Result<SendTraits, BatchError> {
    let facts = m.send_traits();
    keeps_the_rules(&facts, m)?;
    Ok(facts)
}

/// Whether a message of `facts` keeps the rules that concern a message alone: no delay level,
/// no timer, no retry topic, properties that fit their 2-byte length.
fn keeps_the_rules(facts: &SendTraits, m: &Message) -> Result<(), BatchError> {
    if facts.delay_level > 0 {
        return Err(BatchError::DelayNotSupported);
    }
    if facts.timer {
        return Err(BatchError::TimerNotSupported);
    }
    if crate::names::is_retry_topic(&m.topic) {
        return Err(BatchError::RetryTopic);
    }
    if facts.properties_len > i16::MAX as usize {
        return Err(BatchError::PropertiesTooLong(facts.properties_len));
    }
    Ok(())
}

/// [`check_batch`], with each message's properties length.
fn checked(messages: &[Message]) -> Result<(usize, Vec<usize>), BatchError> {
    let first = messages.first().ok_or(BatchError::Empty)?;
    let mut wait = None;
    let mut size = 0;
    let mut lens = Vec::with_capacity(messages.len());
    for m in messages {
        let facts = checked_facts(m)?;
        if m.topic != first.topic {
            return Err(BatchError::MixedTopics);
        }
        if *wait.get_or_insert(facts.wait) != facts.wait {
            return Err(BatchError::MixedWaitStore);
        }
        size += record_len(m, facts.properties_len);
        lens.push(facts.properties_len);
    }
    Ok((size, lens))
}

/// Checks the batch rules and encodes the body. Each message should already carry its
/// `UNIQ_KEY`. Bodies are never compressed.
///
/// # Errors
/// [`BatchError`] when a rule is broken.
pub fn encode_batch(messages: &[Message]) -> Result<Bytes, BatchError> {
    let (size, lens) = checked(messages)?;
    let mut out = BytesMut::with_capacity(size);
    for (m, props_len) in messages.iter().zip(lens) {
        // The properties are written straight into the body: their length is known first.
        put_record_head(m, props_len, &mut out);
        put_properties(&m.properties, &mut out);
    }
    Ok(out.freeze())
}

/// Appends `m`'s record to the batch body `out`, as [`encode_batch`] writes it, and returns
/// the record's length: for a caller that gathers a batch one message at a time and keeps
/// the messages apart from it. The rules that concern a message alone are checked (its delay
/// level, its timer, a retry topic, its properties' length); keeping one topic and one
/// wait-store flag per batch is the caller's part. `m` should already carry its `UNIQ_KEY`.
///
/// # Errors
/// [`BatchError`] when a rule is broken; `out` is then as it was.
pub fn put_batch_record(m: &Message, out: &mut BytesMut) -> Result<usize, BatchError> {
    let start = out.len();
    out.reserve(record_len(m, properties_len(&m.properties)));
    // One pass over the properties writes them and reads the rules' facts; the lengths are
    // patched in once known.
    put_record_head(m, 0, out);
    let props_at = out.len();
    let mut seen = TraitsSeen::default();
    for (name, value) in m.properties.0.iter_key_bytes() {
        seen.note(name, value);
        out.put_slice(name);
        out.put_u8(NAME_VALUE_SEPARATOR as u8);
        out.put_slice(value.as_bytes());
        out.put_u8(PROPERTY_SEPARATOR as u8);
    }
    if let Err(e) = keeps_the_rules(&seen.traits(), m) {
        out.truncate(start);
        return Err(e);
    }
    let props_len = out.len() - props_at;
    let len = record_len(m, props_len);
    // Both fit: the rules bound the properties to 15 bits; a body is at most `i32::MAX` bytes
    // on the wire.
    out[start..start + 4].copy_from_slice(&(len as i32).to_be_bytes());
    out[props_at - 2..props_at].copy_from_slice(&(props_len as i16).to_be_bytes());
    Ok(len)
}

/// A record's fields up to its properties, which come next; `props_len` fits 15 bits.
fn put_record_head(m: &Message, props_len: usize, out: &mut BytesMut) {
    // Lengths fit: a body is at most `i32::MAX` bytes on the wire, properties 32 767.
    out.put_i32(record_len(m, props_len) as i32);
    out.put_i32(0);
    out.put_i32(0);
    out.put_i32(m.flag);
    out.put_i32(m.body.len() as i32);
    out.put_slice(&m.body);
    out.put_i16(props_len as i16);
}

/// The length of a message's record in a batch body, with a properties string of
/// `props_len` bytes.
fn record_len(m: &Message, props_len: usize) -> usize {
    4 + 4 + 4 + 4 + 4 + m.body.len() + 2 + props_len
}

/// Splits a batch body into messages of `topic` (the broker side of SEND_BATCH_MESSAGE).
///
/// # Errors
/// [`BatchError::Malformed`] when a record's lengths do not add up.
pub fn decode_batch(topic: &str, body: &Bytes) -> Result<Vec<Message>, BatchError> {
    decode_batch_with(topic, body, |m| m)
}

/// [`decode_batch`], each message passed through `wrap` as it is read: a broker builds its
/// stored form (a message with its queue and hosts) in place instead of moving every message
/// from one list into another.
///
/// # Errors
/// [`BatchError::Malformed`] when a record's lengths do not add up.
pub fn decode_batch_with<T>(
    topic: &str,
    body: &Bytes,
    mut wrap: impl FnMut(Message) -> T,
) -> Result<Vec<T>, BatchError> {
    let mut src = body.clone();
    // Room for every entry at once, up to a bound: a malformed body claiming many small
    // entries makes no large allocation before it fails.
    let mut out = Vec::with_capacity(entries_in(body).min(4096));
    while src.has_remaining() {
        let at = body.len() - src.remaining();
        let bad = || BatchError::Malformed(at);
        if src.remaining() < 20 {
            return Err(bad());
        }
        let total = usize::try_from(src.get_i32()).map_err(|_| bad())?;
        let _magic = src.get_i32();
        let _crc = src.get_i32();
        let flag = src.get_i32();
        let body_len = usize::try_from(src.get_i32()).map_err(|_| bad())?;
        if src.remaining() < body_len + 2 {
            return Err(bad());
        }
        let msg_body = src.split_to(body_len);
        let props_len = usize::from(src.get_u16());
        if src.remaining() < props_len || total != 22 + body_len + props_len {
            return Err(bad());
        }
        // Read in place: the properties are copied into the message's own fields.
        let props = std::str::from_utf8(&src[..props_len]).map_err(|_| bad())?;
        let properties = decode_properties(props);
        src.advance(props_len);
        out.push(wrap(Message {
            topic: topic.to_owned(),
            flag,
            properties,
            body: msg_body,
            transaction_id: None,
        }));
    }
    if out.is_empty() {
        return Err(BatchError::Empty);
    }
    Ok(out)
}

/// How many entries `body` holds by its entries' total sizes (what `decode_batch` makes room
/// for at once): a count, not a check; a size that does not fit ends it.
fn entries_in(body: &[u8]) -> usize {
    let mut at = 0usize;
    let mut n = 0;
    while let Some(&[a, b, c, d]) = body.get(at..at + 4) {
        let Ok(total) = usize::try_from(i32::from_be_bytes([a, b, c, d])) else {
            break;
        };
        n += 1;
        // Every entry is at least 22 bytes long; a smaller size is malformed, and the decoder
        // says so.
        at = match at.checked_add(total.max(22)) {
            Some(next) => next,
            None => break,
        };
    }
    n
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn rules_are_enforced() {
        assert_eq!(encode_batch(&[]), Err(BatchError::Empty));
        let a = Message::new("T", "a");
        assert_eq!(
            encode_batch(&[a.clone(), Message::new("U", "b")]),
            Err(BatchError::MixedTopics)
        );
        assert_eq!(
            encode_batch(&[a.clone().with_delay_level(2)]),
            Err(BatchError::DelayNotSupported)
        );
        assert_eq!(
            encode_batch(&[a.clone().with_delay(std::time::Duration::from_secs(5))]),
            Err(BatchError::TimerNotSupported)
        );
        assert_eq!(
            encode_batch(&[Message::new("%RETRY%g", "a")]),
            Err(BatchError::RetryTopic)
        );
        assert_eq!(
            encode_batch(&[a.clone(), a.with_wait_store_msg_ok(false)]),
            Err(BatchError::MixedWaitStore)
        );
    }

    /// Records appended one at a time make the body `encode_batch` makes of the list; a
    /// message that breaks a rule of its own appends nothing.
    #[test]
    fn records_put_one_by_one_make_the_batch_body() {
        let msgs = [
            Message::new("T", "a").with_flag(3),
            Message::new("T", vec![7u8; 300]).with_keys(["k1", "k2"]),
            Message::new("T", "c").with_tags("t"),
            // Properties past the room made for them.
            Message::new("T", "d").with_keys(["k".repeat(200)]),
        ];
        let mut out = BytesMut::new();
        let mut total = 0;
        for m in &msgs {
            total += put_batch_record(m, &mut out).unwrap();
        }
        assert_eq!(out.len(), total);
        assert_eq!(out.freeze(), encode_batch(&msgs).unwrap());

        let mut out = BytesMut::from(&b"kept"[..]);
        let refused = [
            (
                msgs[0].clone().with_delay_level(2),
                BatchError::DelayNotSupported,
            ),
            (
                msgs[0]
                    .clone()
                    .with_delay(std::time::Duration::from_secs(5)),
                BatchError::TimerNotSupported,
            ),
            (Message::new("%RETRY%g", "a"), BatchError::RetryTopic),
        ];
        for (m, e) in refused {
            assert_eq!(put_batch_record(&m, &mut out), Err(e));
        }
        let mut long = Message::new("T", "a");
        long.set_property("Long", "x".repeat(40_000));
        assert!(matches!(
            put_batch_record(&long, &mut out),
            Err(BatchError::PropertiesTooLong(_))
        ));
        assert_eq!(&out[..], b"kept");
    }

    #[test]
    fn layout_of_one_record() {
        let m = Message::new("T", "ab").with_flag(7);
        let b = encode_batch(std::slice::from_ref(&m)).unwrap();
        let props = m.properties_string();
        assert_eq!(b.len(), 22 + 2 + props.len());
        assert_eq!(&b[0..4], &((22 + 2 + props.len()) as i32).to_be_bytes());
        assert_eq!(&b[4..12], &[0; 8]);
        assert_eq!(&b[12..16], &7i32.to_be_bytes());
        assert_eq!(&b[16..22], &[0, 0, 0, 2, b'a', b'b']);
    }

    #[test]
    fn truncated_body_is_malformed() {
        let b = encode_batch(&[Message::new("T", "abc")]).unwrap();
        assert!(matches!(
            decode_batch("T", &b.slice(..b.len() - 1)),
            Err(BatchError::Malformed(0))
        ));
    }

    proptest! {
        #[test]
        fn batches_round_trip(bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 1..8)) {
            let msgs: Vec<Message> = bodies
                .into_iter()
                .enumerate()
                .map(|(i, b)| Message::new("T", b).with_tags(format!("t{i}")).with_flag(i as i32))
                .collect();
            let body = encode_batch(&msgs).unwrap();
            prop_assert_eq!(decode_batch("T", &body).unwrap(), msgs);
        }
    }
}
