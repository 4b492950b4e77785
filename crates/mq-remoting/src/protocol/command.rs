//! The `RemotingCommand` value (spec §1.5): the unit every RocketMQ peer sends, request or response.

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;

/// Flag bit 0: the command is a response (clear means request).
pub const FLAG_RESPONSE: i32 = 0x1;
/// Flag bit 1: the request expects no response.
pub const FLAG_ONEWAY: i32 = 0x2;

/// `MQVersion.Version` ordinal of Apache RocketMQ 4.5.1, the default version we announce.
///
/// Servers gate some behaviour on it (spec §1.5): ≥ 37 makes a name server read a full
/// `RegisterBrokerBody`.
pub const VERSION_4_5_1: i32 = 315;
/// `MQVersion.Version` ordinal of Apache RocketMQ 5.3.3.
pub const VERSION_5_3_3: i32 = 479;

pub use super::ext::{ExtFields, ExtFieldsIter, FieldSink, TypedFields};

/// How a command's header is serialised (the top byte of the header-length word, spec §1.2).
///
/// Java name: `SerializeType`.
#[derive(Clone, Copy, Debug, Default, Eq, Hash, PartialEq)]
pub enum SerializeType {
    /// Type 0: a JSON object (fastjson output on the Java side).
    #[default]
    Json,
    /// Type 1: the compact binary layout Java calls `ROCKETMQ`.
    RocketMq,
}

impl SerializeType {
    /// The byte value carried in the header-length word.
    pub const fn to_byte(self) -> u8 {
        match self {
            Self::Json => 0,
            Self::RocketMq => 1,
        }
    }

    /// Parses the header-length word's type byte; `None` for values Java does not know.
    pub const fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 => Some(Self::Json),
            1 => Some(Self::RocketMq),
            _ => None,
        }
    }

    /// The enum name Java uses (`JSON` or `ROCKETMQ`).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Json => "JSON",
            Self::RocketMq => "ROCKETMQ",
        }
    }
}

/// The sender's client language (spec §1.5, Java `LanguageCode`).
///
/// A byte in binary headers and the enum name in JSON headers. `RUST` and `NODE_JS` exist only
/// in 5.x; a 4.5.1 peer turns them into null, so requests default to [`LanguageCode::Java`].
#[derive(Clone, Copy, Debug, Default, Eq, Hash, PartialEq)]
pub enum LanguageCode {
    /// `JAVA` (0).
    #[default]
    Java,
    /// `CPP` (1).
    Cpp,
    /// `DOTNET` (2).
    DotNet,
    /// `PYTHON` (3).
    Python,
    /// `DELPHI` (4).
    Delphi,
    /// `ERLANG` (5).
    Erlang,
    /// `RUBY` (6).
    Ruby,
    /// `OTHER` (7).
    Other,
    /// `HTTP` (8).
    Http,
    /// `GO` (9).
    Go,
    /// `PHP` (10).
    Php,
    /// `OMS` (11).
    Oms,
    /// `RUST` (12, 5.x only).
    Rust,
    /// `NODE_JS` (13, 5.x only).
    NodeJs,
    /// A byte value no version of RocketMQ defines; kept so that it survives a round trip.
    Unknown(u8),
}

const LANGUAGES: [(LanguageCode, &str); 14] = [
    (LanguageCode::Java, "JAVA"),
    (LanguageCode::Cpp, "CPP"),
    (LanguageCode::DotNet, "DOTNET"),
    (LanguageCode::Python, "PYTHON"),
    (LanguageCode::Delphi, "DELPHI"),
    (LanguageCode::Erlang, "ERLANG"),
    (LanguageCode::Ruby, "RUBY"),
    (LanguageCode::Other, "OTHER"),
    (LanguageCode::Http, "HTTP"),
    (LanguageCode::Go, "GO"),
    (LanguageCode::Php, "PHP"),
    (LanguageCode::Oms, "OMS"),
    (LanguageCode::Rust, "RUST"),
    (LanguageCode::NodeJs, "NODE_JS"),
];

impl LanguageCode {
    /// The byte value used in binary headers.
    pub const fn to_byte(self) -> u8 {
        // The values of `LANGUAGES`, whose position is the byte.
        match self {
            Self::Java => 0,
            Self::Cpp => 1,
            Self::DotNet => 2,
            Self::Python => 3,
            Self::Delphi => 4,
            Self::Erlang => 5,
            Self::Ruby => 6,
            Self::Other => 7,
            Self::Http => 8,
            Self::Go => 9,
            Self::Php => 10,
            Self::Oms => 11,
            Self::Rust => 12,
            Self::NodeJs => 13,
            Self::Unknown(b) => b,
        }
    }

    /// The language for a binary-header byte.
    pub fn from_byte(b: u8) -> Self {
        LANGUAGES
            .get(usize::from(b))
            .map_or(Self::Unknown(b), |(l, _)| *l)
    }

    /// The Java enum name used in JSON headers; unknown values are written as `OTHER`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Unknown(_) => "OTHER",
            known => LANGUAGES
                .get(usize::from(known.to_byte()))
                .map_or("OTHER", |(_, n)| n),
        }
    }

    /// The language for a JSON enum name; `None` when the name is unknown (Java reads null).
    pub fn from_name(name: &str) -> Option<Self> {
        LANGUAGES.iter().find(|(_, n)| *n == name).map(|(l, _)| *l)
    }
}

impl fmt::Display for LanguageCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One RocketMQ remoting command: a request, a oneway request or a response.
///
/// Java name: `RemotingCommand`. The body is reference-counted, so cloning a command or slicing
/// it out of a received frame copies no payload.
#[derive(Clone, Debug, Default, Eq, PartialEq)]
pub struct RemotingCommand {
    /// Request code in requests, response code in responses.
    pub code: i32,
    /// The sender's language.
    pub language: LanguageCode,
    /// The sender's `MQVersion` ordinal.
    pub version: i32,
    /// Request id, echoed by the response.
    pub opaque: i32,
    /// Flag bits: [`FLAG_RESPONSE`], [`FLAG_ONEWAY`].
    pub flag: i32,
    /// Free text, typically an error description on responses.
    ///
    /// Binary headers cannot tell an empty remark from a missing one; both decode to `None`.
    pub remark: Option<String>,
    /// Custom header fields as strings (spec §1.6).
    pub ext_fields: ExtFields,
    /// The payload; empty means absent.
    pub body: Bytes,
    /// How the header is (or was) serialised.
    pub serialize_type: SerializeType,
}

impl RemotingCommand {
    /// A request with `code`, opaque 0 (the client assigns one when sending) and our version.
    pub fn request(code: i32) -> Self {
        Self {
            code,
            version: VERSION_4_5_1,
            ..Self::default()
        }
    }

    /// A response with `code` and an optional remark, to be matched to a request by opaque.
    pub fn response(code: i32, remark: Option<String>) -> Self {
        Self {
            code,
            version: VERSION_4_5_1,
            flag: FLAG_RESPONSE,
            remark,
            ..Self::default()
        }
    }

    /// A response that answers `request`: same opaque and serialize type, RESPONSE flag set.
    pub fn response_to(request: &Self, code: i32, remark: Option<String>) -> Self {
        Self {
            opaque: request.opaque,
            serialize_type: request.serialize_type,
            ..Self::response(code, remark)
        }
    }

    /// Sets the body.
    #[must_use]
    pub fn with_body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// Adds one extension field.
    #[must_use]
    pub fn with_ext(mut self, key: impl Into<Cow<'static, str>>, value: impl AsRef<str>) -> Self {
        self.ext_fields.insert(key, value);
        self
    }

    /// Replaces the extension fields.
    #[must_use]
    pub fn with_ext_fields(mut self, ext_fields: ExtFields) -> Self {
        self.ext_fields = ext_fields;
        self
    }

    /// Sets the remark.
    #[must_use]
    pub fn with_remark(mut self, remark: impl Into<String>) -> Self {
        self.remark = Some(remark.into());
        self
    }

    /// Sets the header serialisation.
    #[must_use]
    pub fn with_serialize_type(mut self, serialize_type: SerializeType) -> Self {
        self.serialize_type = serialize_type;
        self
    }

    /// Sets the language.
    #[must_use]
    pub fn with_language(mut self, language: LanguageCode) -> Self {
        self.language = language;
        self
    }

    /// Sets the opaque.
    #[must_use]
    pub fn with_opaque(mut self, opaque: i32) -> Self {
        self.opaque = opaque;
        self
    }

    /// Whether the RESPONSE flag bit is set. Peers must decide request vs response by this
    /// bit, never by the opaque (both sides allocate opaques independently).
    pub const fn is_response(&self) -> bool {
        self.flag & FLAG_RESPONSE != 0
    }

    /// Whether the ONEWAY flag bit is set.
    pub const fn is_oneway(&self) -> bool {
        self.flag & FLAG_ONEWAY != 0
    }

    /// Sets the RESPONSE flag bit.
    pub fn mark_response(&mut self) {
        self.flag |= FLAG_RESPONSE;
    }

    /// Sets the ONEWAY flag bit.
    pub fn mark_oneway(&mut self) {
        self.flag |= FLAG_ONEWAY;
    }

    /// The value of one extension field.
    pub fn ext(&self, key: &str) -> Option<&str> {
        self.ext_fields.get(key)
    }
}
