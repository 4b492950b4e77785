//! Recall handles (RocketMQ 5.3): what a timer message's send answers with, and what recalls
//! it before it is delivered. On the wire, URL-safe base64 of `v1 TOPIC BROKER_NAME MS ID`
//! (the delivery time the broker keeps plus one millisecond, and the message's unique id).

use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

use crate::wire_time;

/// Java's `Base64.getUrlEncoder()` pads; its decoder takes text with or without padding.
const URL_SAFE: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A timer message's recall handle (Java `RecallMessageHandle.HandleV1`).
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct RecallHandle {
    /// The message's topic.
    pub topic: String,
    /// The broker that holds it.
    pub broker_name: String,
    /// Just after the time the broker is to deliver it.
    pub deliver_time: SystemTime,
    /// The message's unique id (`UNIQ_KEY`).
    pub message_id: String,
}

/// A recall handle could not be read.
#[derive(Clone, Debug, Eq, PartialEq, thiserror::Error)]
#[error("recall handle is invalid")]
pub struct RecallHandleError;

impl RecallHandle {
    /// The handle's wire text.
    pub fn encode(&self) -> String {
        let raw = format!(
            "v1 {} {} {} {}",
            self.topic,
            self.broker_name,
            wire_time::to_millis(self.deliver_time),
            self.message_id
        );
        URL_SAFE.encode(raw)
    }

    /// Reads a handle's wire text.
    ///
    /// # Errors
    /// [`RecallHandleError`] when it is not base64 of a version-1 handle.
    pub fn decode(text: &str) -> Result<Self, RecallHandleError> {
        let raw = URL_SAFE.decode(text).map_err(|_| RecallHandleError)?;
        let raw = String::from_utf8(raw).map_err(|_| RecallHandleError)?;
        let mut items = raw.split(' ');
        if items.next() != Some("v1") {
            return Err(RecallHandleError);
        }
        let mut next = || {
            items
                .next()
                .filter(|s| !s.is_empty())
                .ok_or(RecallHandleError)
        };
        let (topic, broker_name, ms, message_id) = (next()?, next()?, next()?, next()?);
        let ms: i64 = ms.parse().map_err(|_| RecallHandleError)?;
        Ok(Self {
            topic: topic.to_owned(),
            broker_name: broker_name.to_owned(),
            deliver_time: wire_time::from_millis(ms),
            message_id: message_id.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_java_writes_and_writes_it_back() {
        // What Java's `RecallMessageHandle.HandleV1.buildHandle("TopicA", "broker-a",
        // "1700000000001", "7F0000010001")` writes: URL-safe base64 of the joined text (45
        // bytes, so no padding).
        let java = "djEgVG9waWNBIGJyb2tlci1hIDE3MDAwMDAwMDAwMDEgN0YwMDAwMDEwMDAx";
        let h = RecallHandle::decode(java).unwrap();
        assert_eq!(h.topic, "TopicA");
        assert_eq!(h.broker_name, "broker-a");
        assert_eq!(wire_time::to_millis(h.deliver_time), 1_700_000_000_001);
        assert_eq!(h.message_id, "7F0000010001");
        assert_eq!(h.encode(), java);
        // Without its padding, as Java's decoder also takes it.
        let padded = RecallHandle {
            topic: "T".into(),
            ..h.clone()
        }
        .encode();
        assert!(padded.ends_with('='), "{padded}");
        assert_eq!(
            RecallHandle::decode(padded.trim_end_matches('='))
                .unwrap()
                .topic,
            "T"
        );
    }

    proptest::proptest! {
        /// Any text reads as a handle or is refused, without a panic; what our brokers write
        /// reads back as written.
        #[test]
        fn any_text_is_read_or_refused_and_handles_read_back(
            text in ".{0,80}",
            topic in "[A-Za-z0-9_%-]{1,20}",
            broker in "[a-z0-9-]{1,12}",
            ms in proptest::prelude::any::<i64>(),
            id in "[0-9A-F]{32}",
        ) {
            let _ = RecallHandle::decode(&text);
            let _ = RecallHandle::decode(&URL_SAFE.encode(&text));
            let handle = RecallHandle {
                topic,
                broker_name: broker,
                deliver_time: wire_time::from_millis(ms),
                message_id: id,
            };
            proptest::prop_assert_eq!(RecallHandle::decode(&handle.encode()), Ok(handle));
        }
    }

    #[test]
    fn refuses_what_is_not_a_version_1_handle() {
        for bad in [
            "",
            "not base64!",
            &URL_SAFE.encode("v2 T b 1 id"),
            &URL_SAFE.encode("v1 T b 1"),
            &URL_SAFE.encode("v1 T b soon id"),
        ] {
            assert_eq!(RecallHandle::decode(bad), Err(RecallHandleError), "{bad}");
        }
    }
}
