//! Custom headers (spec §4): typed views of a command's `extFields`, one encode/decode pair per
//! Java header class.
//!
//! Java only logs a missing required field or an unparsable number and carries on; we reject
//! both with a [`HeaderError`] that names the header and the field.

use mq_remoting::ExtFields;

mod admin;
mod client;
mod namesrv;
mod offset;
mod pop;
mod pull;
mod send;
mod transaction;

pub use admin::{
    CreateTopicRequestHeader, DeleteSubscriptionGroupRequestHeader,
    GetSubscriptionGroupConfigRequestHeader, GetTopicConfigRequestHeader, ViewMessageRequestHeader,
};
pub use client::{
    GetConsumerListByGroupRequestHeader, NotifyConsumerIdsChangedRequestHeader,
    UnregisterClientRequestHeader,
};
pub use namesrv::{
    GetKvConfigRequestHeader, GetKvConfigResponseHeader, GetRouteInfoRequestHeader,
    PutKvConfigRequestHeader, RegisterBrokerRequestHeader, RegisterBrokerResponseHeader,
    UnregisterBrokerRequestHeader,
};
pub use offset::{
    GetEarliestMsgStoretimeRequestHeader, GetEarliestMsgStoretimeResponseHeader,
    GetMaxOffsetRequestHeader, GetMaxOffsetResponseHeader, GetMinOffsetRequestHeader,
    GetMinOffsetResponseHeader, QueryConsumerOffsetRequestHeader,
    QueryConsumerOffsetResponseHeader, QueryMessageRequestHeader, QueryMessageResponseHeader,
    SearchOffsetRequestHeader, SearchOffsetResponseHeader, UpdateConsumerOffsetRequestHeader,
};
pub use pop::{
    AckMessageRequestHeader, ChangeInvisibleTimeRequestHeader, ChangeInvisibleTimeResponseHeader,
    POP_ORDER_REVIVE_QUEUE, PopExtraInfo, PopMessageRequestHeader, PopMessageResponseHeader,
    consume_init_mode, pop_topic_mark,
};
pub use pull::{
    ConsumerSendMsgBackRequestHeader, PullMessageRequestHeader, PullMessageResponseHeader,
    pull_sys_flag,
};
pub use send::{
    RecallMessageRequestHeader, RecallMessageResponseHeader, ReplyMessageRequestHeader,
    SendHeaderRef, SendMessageRequestHeader, SendMessageRequestHeaderV2, SendMessageResponseHeader,
    SendResponseRef, SendV2Fields,
};
pub use transaction::{
    CheckTransactionStateRequestHeader, EndTransactionRequestHeader, transaction_type,
};

/// A header's fields could not be read from `extFields`. The peer is at fault.
#[derive(Clone, Debug, Eq, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// A field Java marks `@CFNotNull` is absent.
    #[error("{header}: required field `{field}` is missing")]
    MissingField {
        /// The Java header class.
        header: &'static str,
        /// The ext-field key.
        field: &'static str,
    },
    /// A field's text does not parse as its type, or fails the header's own check.
    #[error("{header}: field `{field}` has an invalid value {value:?}")]
    InvalidField {
        /// The Java header class.
        header: &'static str,
        /// The ext-field key.
        field: &'static str,
        /// The offending text.
        value: String,
    },
}

/// A typed custom header: encodes into and decodes from `extFields`.
pub trait CommandHeader: Sized {
    /// The Java class this header mirrors.
    const JAVA_CLASS: &'static str;

    /// Writes every present field into `ext` (absent optional fields are left out, as Java
    /// leaves out null fields).
    fn encode(&self, ext: &mut ExtFields);

    /// Reads the header from `ext`.
    ///
    /// # Errors
    /// [`HeaderError`] when a required field is missing or a value does not parse.
    fn decode(ext: &ExtFields) -> Result<Self, HeaderError>;

    /// The header as a fresh ext-field map.
    fn to_ext_fields(&self) -> ExtFields {
        let mut ext = ExtFields::with_capacity(16, 256);
        self.encode(&mut ext);
        ext
    }
}

/// A value that travels as ext-field text.
pub trait FieldValue: Sized {
    /// Writes the wire text (Java `toString()`) under `key`, straight into `ext`'s arena.
    fn put_field(&self, key: &'static str, ext: &mut ExtFields);
    /// Parses the wire text; `None` when it does not parse.
    fn from_field(s: &str) -> Option<Self>;
}

impl FieldValue for String {
    fn put_field(&self, key: &'static str, ext: &mut ExtFields) {
        ext.insert(key, self);
    }
    fn from_field(s: &str) -> Option<Self> {
        Some(s.to_owned())
    }
}

/// Text shared between requests: a producer's group and its default topic are the same in
/// every send, and a topic's name in every send to it, so a send header holds them without a
/// copy each.
impl FieldValue for std::sync::Arc<str> {
    fn put_field(&self, key: &'static str, ext: &mut ExtFields) {
        ext.insert(key, self);
    }
    fn from_field(s: &str) -> Option<Self> {
        Some(Self::from(s))
    }
}

impl FieldValue for i32 {
    fn put_field(&self, key: &'static str, ext: &mut ExtFields) {
        ext.insert_int(key, i64::from(*self));
    }
    fn from_field(s: &str) -> Option<Self> {
        match plain_decimal(s) {
            Some(v) => Self::try_from(v).ok(),
            None => s.trim().parse().ok(),
        }
    }
}

impl FieldValue for i64 {
    fn put_field(&self, key: &'static str, ext: &mut ExtFields) {
        ext.insert_int(key, *self);
    }
    fn from_field(s: &str) -> Option<Self> {
        plain_decimal(s).or_else(|| s.trim().parse().ok())
    }
}

/// The value of `s` when it is an optional `-` and 1 to 18 ASCII digits, the text a peer sends
/// for a number (what `str::parse` makes of it, without its general checks); `None` for any
/// other text, which the callers then trim and parse.
fn plain_decimal(s: &str) -> Option<i64> {
    let (negative, digits) = match s.as_bytes() {
        [b'-', rest @ ..] => (true, rest),
        all => (false, all),
    };
    if digits.is_empty() || digits.len() > 18 {
        return None;
    }
    let mut v: i64 = 0;
    for &c in digits {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        // 18 digits stay below i64::MAX.
        v = v * 10 + i64::from(d);
    }
    Some(if negative { -v } else { v })
}

impl FieldValue for bool {
    fn put_field(&self, key: &'static str, ext: &mut ExtFields) {
        ext.insert(key, if *self { "true" } else { "false" });
    }
    /// Java `Boolean.parseBoolean`: `true` in any case is true, anything else (including the
    /// `"1"` the C++ client sends) is false.
    fn from_field(s: &str) -> Option<Self> {
        // What writers send, decided without a trim; any other text takes the general rule.
        Some(match s {
            "false" => false,
            "true" => true,
            _ => s.trim().eq_ignore_ascii_case("true"),
        })
    }
}

pub(crate) fn required<T: FieldValue>(
    text: Option<&str>,
    header: &'static str,
    field: &'static str,
) -> Result<T, HeaderError> {
    match text {
        None => Err(HeaderError::MissingField { header, field }),
        Some(v) => T::from_field(v).ok_or_else(|| HeaderError::InvalidField {
            header,
            field,
            value: v.to_owned(),
        }),
    }
}

/// A required text field, borrowed (the rule of [`required`] for a `String` field).
pub(crate) fn required_text<'a>(
    text: Option<&'a str>,
    header: &'static str,
    field: &'static str,
) -> Result<&'a str, HeaderError> {
    text.ok_or(HeaderError::MissingField { header, field })
}

pub(crate) fn optional<T: FieldValue>(
    text: Option<&str>,
    header: &'static str,
    field: &'static str,
) -> Result<Option<T>, HeaderError> {
    match text {
        None => Ok(None),
        Some(v) => T::from_field(v)
            .map(Some)
            .ok_or_else(|| HeaderError::InvalidField {
                header,
                field,
                value: v.to_owned(),
            }),
    }
}

/// Declares a header struct and its [`CommandHeader`] impl. Field kinds: `req` (required,
/// always sent), `opt` (an `Option`, sent when present), `prim` (a Java primitive: always sent,
/// defaulted when a peer leaves it out).
macro_rules! header {
    (
        $(#[$meta:meta])*
        $name:ident($java:literal $(, check = $check:path)?) {
            $( $(#[$fdoc:meta])* $kind:ident $field:ident: $ty:ty => $key:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, Default, Eq, PartialEq)]
        #[doc = concat!("\n\nJava: `", $java, "`.")]
        pub struct $name {
            $( $(#[$fdoc])* #[doc = concat!("\n\nKey `", $key, "`.")] pub $field: header!(@ty $kind $ty), )*
        }

        impl $crate::header::CommandHeader for $name {
            const JAVA_CLASS: &'static str = $java;

            fn encode(&self, ext: &mut mq_remoting::ExtFields) {
                $( header!(@enc $kind self.$field, ext, $key); )*
            }

            fn decode(ext: &mq_remoting::ExtFields) -> Result<Self, $crate::header::HeaderError> {
                // One pass over what arrived, each key matched once, rather than a lookup
                // per field.
                $( let mut $field: Option<&str> = None; )*
                for (key, text) in ext.iter() {
                    match key {
                        $( $key => $field = Some(text), )*
                        _ => {}
                    }
                }
                let h = Self {
                    $( $field: header!(@dec $kind $ty, $field, $java, $key), )*
                };
                $( $check(&h)?; )?
                Ok(h)
            }
        }
    };
    (@ty req $ty:ty) => { $ty };
    (@ty prim $ty:ty) => { $ty };
    (@ty opt $ty:ty) => { Option<$ty> };
    (@enc req $v:expr, $ext:ident, $key:literal) => {
        $crate::header::FieldValue::put_field(&$v, $key, $ext);
    };
    (@enc prim $v:expr, $ext:ident, $key:literal) => {
        $crate::header::FieldValue::put_field(&$v, $key, $ext);
    };
    (@dec req $ty:ty, $text:ident, $java:literal, $key:literal) => {
        $crate::header::required::<$ty>($text, $java, $key)?
    };
    (@dec opt $ty:ty, $text:ident, $java:literal, $key:literal) => {
        $crate::header::optional::<$ty>($text, $java, $key)?
    };
    (@dec prim $ty:ty, $text:ident, $java:literal, $key:literal) => {
        $crate::header::optional::<$ty>($text, $java, $key)?.unwrap_or_default()
    };
    (@enc opt $v:expr, $ext:ident, $key:literal) => {
        if let Some(v) = &$v {
            $crate::header::FieldValue::put_field(v, $key, $ext);
        }
    };
}
pub(crate) use header;

#[cfg(test)]
mod field_value_tests {
    use super::FieldValue;
    use proptest::prelude::*;

    proptest! {
        /// The shortcut for plain digits reads every text as trimming and parsing does.
        #[test]
        fn integers_read_as_trim_and_parse(
            s in prop_oneof![
                "-?[0-9]{1,20}",
                "[ +-]?[0-9]{0,19}[ x]?",
                any::<i64>().prop_map(|v| v.to_string()),
                any::<i32>().prop_map(|v| format!(" {v}\t")),
            ]
        ) {
            prop_assert_eq!(i64::from_field(&s), s.trim().parse::<i64>().ok());
            prop_assert_eq!(i32::from_field(&s), s.trim().parse::<i32>().ok());
        }

        /// The shortcut for `true` and `false` reads every text as the general rule does.
        #[test]
        fn booleans_read_as_trim_and_compare(s in "[ \t]?(true|false|TRUE|True|1|tru|truex)?[ ]?") {
            prop_assert_eq!(bool::from_field(&s), Some(s.trim().eq_ignore_ascii_case("true")));
        }
    }
}
