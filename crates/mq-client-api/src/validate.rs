//! Client-side validation (spec §7.2) and the Java `String.hashCode` used for key-based queue
//! selection and tag codes.

use crate::message::Message;

/// Longest topic accepted: the broker store's 127-byte limit (4.5.1 clients allow 255 and then
/// fail at the broker; 5.x clients check 127).
pub const TOPIC_MAX_LEN: usize = 127;
/// Longest group name (4.5.1).
pub const GROUP_MAX_LEN: usize = 255;
/// Default largest body (Java `maxMessageSize`, 4 MiB).
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 4 * 1024 * 1024;
/// The auto-create template topic, which may not be sent to.
pub const AUTO_CREATE_TOPIC_KEY: &str = "TBW102";
/// System topics no producer may send to (5.x list).
pub const SYSTEM_TOPICS: [&str; 6] = [
    "SCHEDULE_TOPIC_XXXX",
    "RMQ_SYS_TRANS_HALF_TOPIC",
    "RMQ_SYS_TRANS_OP_HALF_TOPIC",
    "TRANS_CHECK_MAX_TIME_TOPIC",
    "SELF_TEST_TOPIC",
    "OFFSET_MOVED_EVENT",
];

/// A name or message was refused before any I/O. The caller is at fault.
#[derive(Clone, Debug, Eq, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ValidationError {
    /// Blank name.
    #[error("the specified {what} is blank")]
    Blank {
        /// `topic` or `group`.
        what: &'static str,
    },
    /// Characters outside `[%|a-zA-Z0-9_-]`.
    #[error(
        "the specified {what} {name:?} contains illegal characters, allowing only ^[%|a-zA-Z0-9_-]+$"
    )]
    IllegalCharacters {
        /// `topic` or `group`.
        what: &'static str,
        /// The name.
        name: String,
    },
    /// Too long.
    #[error("the specified {what} is longer than {max} characters")]
    TooLong {
        /// `topic` or `group`.
        what: &'static str,
        /// The limit.
        max: usize,
    },
    /// A reserved or system topic.
    #[error("the topic {0:?} is reserved for the system")]
    ReservedTopic(String),
    /// Empty body.
    #[error("the message body length is zero")]
    EmptyBody,
    /// Body over the limit.
    #[error("the message body size {size} is over the max value {max}")]
    BodyTooLarge {
        /// Body size.
        size: usize,
        /// Limit.
        max: usize,
    },
    /// A property whose name is blank, or whose name or value holds a separator of the
    /// properties string (`\u{1}`, `\u{2}`) and would corrupt it.
    #[error("the message property {name:?} cannot be sent: blank, or holding \\u0001 or \\u0002")]
    BadProperty {
        /// The property's name.
        name: String,
    },
}

/// Whether a byte may stand in a topic or group name: ASCII letters and digits, `%`, `|`, `_`
/// and `-` (Java's `^[%|a-zA-Z0-9_-]+$`), looked up rather than tested per byte.
const NAME_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric() || matches!(c, b'%' | b'|' | b'_' | b'-');
        b += 1;
    }
    table
};

fn check_name(what: &'static str, name: &str, max: usize) -> Result<(), ValidationError> {
    // A name of legal characters only is blank only when empty: the (Unicode) trim is paid by
    // names that fail.
    if name.is_empty() {
        return Err(ValidationError::Blank { what });
    }
    if !name.bytes().all(|b| NAME_BYTES[usize::from(b)]) {
        if name.trim().is_empty() {
            return Err(ValidationError::Blank { what });
        }
        return Err(ValidationError::IllegalCharacters {
            what,
            name: name.to_owned(),
        });
    }
    if name.len() > max {
        return Err(ValidationError::TooLong { what, max });
    }
    Ok(())
}

/// Checks a topic a producer sends to.
///
/// # Errors
/// [`ValidationError`] for blank, illegal, too long, or reserved names.
pub fn validate_topic(topic: &str) -> Result<(), ValidationError> {
    check_name("topic", topic, TOPIC_MAX_LEN)?;
    if topic == AUTO_CREATE_TOPIC_KEY || SYSTEM_TOPICS.contains(&topic) {
        return Err(ValidationError::ReservedTopic(topic.to_owned()));
    }
    Ok(())
}

/// Checks a producer or consumer group name.
///
/// # Errors
/// [`ValidationError`] for blank, illegal or too long names.
pub fn validate_group(group: &str) -> Result<(), ValidationError> {
    check_name("group", group, GROUP_MAX_LEN)
}

/// Checks a message before it is sent: topic, non-empty body, size (before compression).
///
/// # Errors
/// [`ValidationError`].
pub fn validate_message(msg: &Message, max_size: usize) -> Result<(), ValidationError> {
    validate_topic(&msg.topic)?;
    validate_body(msg, max_size)
}

/// The half of [`validate_message`] past the topic: a body that is non-empty and at most
/// `max_size` bytes, and properties that fit the properties string.
///
/// # Errors
/// [`ValidationError::EmptyBody`], [`ValidationError::BodyTooLarge`],
/// [`ValidationError::BadProperty`].
pub fn validate_body(msg: &Message, max_size: usize) -> Result<(), ValidationError> {
    if msg.body.is_empty() {
        return Err(ValidationError::EmptyBody);
    }
    if msg.body.len() > max_size {
        return Err(ValidationError::BodyTooLarge {
            size: msg.body.len(),
            max: max_size,
        });
    }
    // One search of the properties' text settles the common case; the walk names the culprit.
    if msg.properties().separators_free() {
        return Ok(());
    }
    let separator = |s: &str| s.bytes().any(|b| b == 1 || b == 2);
    if let Some((name, _)) = msg
        .properties()
        .iter()
        .find(|(k, v)| k.is_empty() || separator(k) || separator(v))
    {
        return Err(ValidationError::BadProperty {
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// Java `String.hashCode()`: `h = 31*h + c` over UTF-16 code units, wrapping at 32 bits.
pub fn java_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_hash_matches_known_values() {
        assert_eq!(java_hash(""), 0);
        assert_eq!(java_hash("a"), 97);
        assert_eq!(java_hash("hello"), 99_162_322);
        assert_eq!(java_hash("TagA"), 2_598_919);
        // Overflow wraps like Java's int arithmetic.
        assert_eq!(java_hash("polygenelubricants"), i32::MIN);
        // Non-ASCII: UTF-16 code units, including a surrogate pair.
        assert_eq!(java_hash("é"), 233);
        assert_eq!(java_hash("中文"), 646_394);
        assert_eq!(java_hash("😀"), 1_772_899);
    }

    #[test]
    fn topics() {
        assert!(validate_topic("TopicTest").is_ok());
        assert!(validate_topic("%RETRY%g|a-b_c").is_ok());
        for blank in ["", " ", "\t \u{3000}"] {
            assert_eq!(
                validate_topic(blank),
                Err(ValidationError::Blank { what: "topic" }),
                "{blank:?}"
            );
        }
        assert!(matches!(
            validate_topic("a b"),
            Err(ValidationError::IllegalCharacters { .. })
        ));
        assert!(matches!(
            validate_topic(&"a".repeat(128)),
            Err(ValidationError::TooLong { max: 127, .. })
        ));
        assert!(validate_topic(&"a".repeat(127)).is_ok());
        assert!(matches!(
            validate_topic("TBW102"),
            Err(ValidationError::ReservedTopic(_))
        ));
        assert!(matches!(
            validate_topic("SCHEDULE_TOPIC_XXXX"),
            Err(ValidationError::ReservedTopic(_))
        ));
    }

    /// Java's rule, `^[%|a-zA-Z0-9_-]+$`, byte by byte: every ASCII character, and one
    /// beyond ASCII.
    #[test]
    fn a_name_takes_exactly_the_characters_java_allows() {
        for c in (0u8..128).map(char::from).chain(['\u{e9}']) {
            let legal = c.is_ascii_alphanumeric() || "%|_-".contains(c);
            let r = validate_topic(&format!("t{c}t"));
            assert_eq!(r.is_ok(), legal, "{c:?}: {r:?}");
            if !legal {
                assert!(
                    matches!(r, Err(ValidationError::IllegalCharacters { .. })),
                    "{c:?}: {r:?}"
                );
            }
        }
    }

    #[test]
    fn messages() {
        assert_eq!(
            validate_message(&Message::new("T", ""), 10),
            Err(ValidationError::EmptyBody)
        );
        assert_eq!(
            validate_message(&Message::new("T", vec![0u8; 11]), 10),
            Err(ValidationError::BodyTooLarge { size: 11, max: 10 })
        );
        assert!(validate_message(&Message::new("T", vec![0u8; 10]), 10).is_ok());
        assert!(validate_group("please_rename_unique_group_name").is_ok());
        assert!(validate_group("bad group").is_err());
    }
}
