//! ACL credentials and the request signature Apache RocketMQ's ACL checks (spec: ACL,
//! remoting): Java's `AclClientRPCHook`.
//!
//! A signed request carries `AccessKey` (and `SecurityToken`) among its ext fields, and
//! `Signature`: the HmacSHA1, under the secret key, of every other ext field's *value* in key
//! order followed by the body, in standard Base64. [`AclSigner`] signs every request a
//! [`mq_remoting::RemotingClient`] sends when installed as its
//! [`mq_remoting::RequestHook`].
//!
//! gRPC calls (RocketMQ 5) carry the same account in their metadata instead: `x-mq-date-time`
//! and `authorization: MQv2-HMAC-SHA1 Credential=<AK>, SignedHeaders=x-mq-date-time,
//! Signature=<hex HmacSHA1(secret, date-time)>` ([`grpc_authorization`],
//! [`GrpcAuthorization`]).
//!
//! A server checks either kind through one [`AccessControl`]: who the caller says it is, a
//! test of its signature under a secret key, and what the request touches ([`Resource`],
//! [`perm`]).

use std::fmt;
use std::net::IpAddr;
use std::time::SystemTime;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use mq_remoting::{RemotingCommand, RequestHook};
use sha1::Sha1;

/// The ext field naming the account.
pub const ACCESS_KEY: &str = "AccessKey";
/// The ext field carrying the optional security token.
pub const SECURITY_TOKEN: &str = "SecurityToken";
/// The ext field carrying the signature.
pub const SIGNATURE: &str = "Signature";

/// An ACL account's credentials. Java: `SessionCredentials`. The secret key never shows in
/// `Debug`.
#[derive(Clone, Eq, PartialEq)]
pub struct Credentials {
    access_key: String,
    secret_key: String,
    security_token: Option<String>,
}

impl Credentials {
    /// The credentials of an account.
    pub fn new(access_key: impl Into<String>, secret_key: impl Into<String>) -> Self {
        Self {
            access_key: access_key.into(),
            secret_key: secret_key.into(),
            security_token: None,
        }
    }

    /// Adds a security token (sent as `SecurityToken`, and signed).
    #[must_use]
    pub fn with_security_token(mut self, token: impl Into<String>) -> Self {
        self.security_token = Some(token.into());
        self
    }

    /// The access key.
    pub fn access_key(&self) -> &str {
        &self.access_key
    }

    /// The secret key (for a server that checks signatures made with it).
    pub fn secret_key(&self) -> &str {
        &self.secret_key
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key", &self.access_key)
            .field("secret_key", &"<redacted>")
            .field(
                "security_token",
                &self.security_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Signs `request` with `credentials`: adds `AccessKey` (and `SecurityToken`), then
/// `Signature` over every other field's value in key order and the body. A signature already
/// there is replaced.
pub fn sign(request: &mut RemotingCommand, credentials: &Credentials) {
    let fields = &mut request.ext_fields;
    fields.insert(ACCESS_KEY, credentials.access_key.as_str());
    if let Some(token) = &credentials.security_token {
        fields.insert(SECURITY_TOKEN, token.as_str());
    }
    // Fields are kept in key order (byte order, which is Java's TreeMap order for the ASCII
    // keys every header uses).
    let mut mac = hmac_sha1(&credentials.secret_key);
    for (key, value) in fields.iter() {
        if key != SIGNATURE {
            mac.update(value.as_bytes());
        }
    }
    mac.update(&request.body);
    let signature = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    request.ext_fields.insert(SIGNATURE, signature);
}

/// The ext field a 4.9.3+ server leaves out of the signed content (Java
/// `MixAll.UNIQUE_MSG_QUERY_FLAG`).
pub const UNIQUE_KEY_QUERY: &str = "_UNIQUE_KEY_QUERY";

/// Whether `request` carries a valid `Signature` under `secret_key`: the server's side of
/// [`sign`], over every field but `Signature` and `_UNIQUE_KEY_QUERY` (as servers since 4.9.3
/// compute it), compared in constant time.
pub fn verify(request: &RemotingCommand, secret_key: &str) -> bool {
    let Some(given) = request.ext_fields.get(SIGNATURE) else {
        return false;
    };
    let Ok(given) = base64::engine::general_purpose::STANDARD.decode(given) else {
        return false;
    };
    let mut mac = hmac_sha1(secret_key);
    for (key, value) in request.ext_fields.iter() {
        if key != SIGNATURE && key != UNIQUE_KEY_QUERY {
            mac.update(value.as_bytes());
        }
    }
    mac.update(&request.body);
    mac.verify_slice(&given).is_ok()
}

/// The signature of `content` under `secret_key`: HmacSHA1, standard Base64. Java:
/// `AclUtils.calSignature`.
pub fn signature(content: &[u8], secret_key: &str) -> String {
    let mut mac = hmac_sha1(secret_key);
    mac.update(content);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

fn hmac_sha1(secret_key: &str) -> Hmac<Sha1> {
    // HMAC takes a key of any length (longer keys are hashed first): this never fails.
    <Hmac<Sha1> as Mac>::new_from_slice(secret_key.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"))
}

/// Signs every request of the client it is installed in (see
/// [`mq_remoting::ClientConfig::with_request_hook`]). Java: `AclClientRPCHook`.
#[derive(Debug)]
pub struct AclSigner(pub Credentials);

impl RequestHook for AclSigner {
    fn before_request(&self, request: &mut RemotingCommand) {
        sign(request, &self.0);
    }
}

/// Permission bits (Java `Permission`): what a request needs of a topic or group, and what an
/// account holds.
pub mod perm {
    /// Nothing.
    pub const DENY: u8 = 1;
    /// Publish or subscribe, either.
    pub const ANY: u8 = 2;
    /// Publish.
    pub const PUB: u8 = 4;
    /// Subscribe.
    pub const SUB: u8 = 8;
}

/// A topic or consumer group a request touches.
#[derive(Clone, Debug, Eq, Hash, PartialEq)]
pub enum Resource {
    /// A topic.
    Topic(String),
    /// A consumer group (Java checks it as its retry topic, `%RETRY%group`).
    Group(String),
}

/// One request, as an [`AccessControl`] checks it.
pub struct AccessRequest<'a> {
    /// The caller's address, for white lists.
    pub remote: Option<IpAddr>,
    /// The account the caller names; `None` when it names none.
    pub access_key: Option<&'a str>,
    /// Whether the request is signed under a secret key: the account's is given.
    pub signed_under: &'a dyn Fn(&str) -> bool,
    /// The remoting request code, for the codes only admin accounts may send; `None` for a
    /// gRPC call.
    pub code: Option<i32>,
    /// What the request touches, with the [`perm`] bits it needs of each.
    pub resources: &'a [(Resource, u8)],
}

impl fmt::Debug for AccessRequest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessRequest")
            .field("remote", &self.remote)
            .field("access_key", &self.access_key)
            .field("code", &self.code)
            .field("resources", &self.resources)
            .finish_non_exhaustive()
    }
}

/// Decides whether a request may go on (a broker's or a proxy's ACL).
pub trait AccessControl: fmt::Debug + Send + Sync {
    /// `Ok` when `request` may go on; otherwise the reason, for the caller to read.
    ///
    /// # Errors
    /// The reason of the refusal: an unknown account, a bad signature, a missing permission.
    fn check(&self, request: &AccessRequest<'_>) -> Result<(), String>;
}

/// The gRPC metadata key of the date and time a call signs.
pub const GRPC_DATE_TIME: &str = "x-mq-date-time";
/// The gRPC metadata key of the signature.
pub const GRPC_AUTHORIZATION: &str = "authorization";

/// `time` as `x-mq-date-time` writes it: `yyyyMMdd'T'HHmmss'Z'`, UTC.
pub fn grpc_date_time(time: SystemTime) -> String {
    let secs = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let (y, m, d) = crate::message::id::civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// The `authorization` value of a gRPC call signed by `credentials` at `date_time` (the call's
/// `x-mq-date-time`): the signature in upper-case hex, as Java's client writes it.
pub fn grpc_authorization(credentials: &Credentials, date_time: &str) -> String {
    let mut mac = hmac_sha1(&credentials.secret_key);
    mac.update(date_time.as_bytes());
    let hex = crate::message::id::to_hex(&mac.finalize().into_bytes());
    format!(
        "MQv2-HMAC-SHA1 Credential={}, SignedHeaders={GRPC_DATE_TIME}, Signature={hex}",
        credentials.access_key
    )
}

/// A gRPC call's `authorization`, read as Java's proxy reads it (`AuthorizationHeader`): the
/// method, then comma-separated `key=value` items, of which `Credential` (its part before any
/// `/`) names the account and `Signature` is hex.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct GrpcAuthorization {
    /// The account.
    pub access_key: String,
    /// The signature's bytes.
    pub signature: Vec<u8>,
}

impl GrpcAuthorization {
    /// Reads `value`.
    ///
    /// # Errors
    /// What is wrong with it.
    pub fn parse(value: &str) -> Result<Self, String> {
        let Some((_method, items)) = value.split_once(' ') else {
            return Err("the authorization header is incorrect".into());
        };
        let (mut access_key, mut signature) = (None, None);
        for item in items.split(',') {
            let Some((key, value)) = item.trim().split_once('=') else {
                return Err(format!(
                    "the authorization item {:?} is not key=value",
                    item.trim()
                ));
            };
            match key {
                "Credential" => access_key = value.split('/').next().map(str::to_owned),
                "Signature" => {
                    signature = Some(
                        crate::message::id::hex_bytes(value)
                            .ok_or_else(|| format!("the signature {value:?} is not hex"))?,
                    );
                }
                _ => {}
            }
        }
        match (access_key, signature) {
            (Some(access_key), Some(signature)) if !access_key.is_empty() => Ok(Self {
                access_key,
                signature,
            }),
            _ => Err("the authorization header names no credential or no signature".into()),
        }
    }

    /// Whether the signature is HmacSHA1 of `date_time` under `secret_key`, compared in
    /// constant time.
    pub fn signed(&self, date_time: &str, secret_key: &str) -> bool {
        let mut mac = hmac_sha1(secret_key);
        mac.update(date_time.as_bytes());
        mac.verify_slice(&self.signature).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A SEND_MESSAGE_V2 request as the Java producer fills it.
    fn send_v2(body: &'static str) -> RemotingCommand {
        let header = crate::header::SendMessageRequestHeader {
            producer_group: "please_rename_unique_group_name".into(),
            topic: "TopicTest".into(),
            default_topic: "TBW102".into(),
            default_topic_queue_nums: 4,
            queue_id: 3,
            born_timestamp: 1_700_000_000_000,
            properties: Some("TAGS\u{1}TagA\u{2}WAIT\u{1}true\u{2}".into()),
            reconsume_times: Some(0),
            unit_mode: false,
            ..Default::default()
        };
        let mut cmd = RemotingCommand::request(310).with_body(body);
        header.encode_v2(&mut cmd.ext_fields);
        cmd
    }

    /// Vectors computed by a Java 17 program doing `AclClientRPCHook`'s steps with
    /// `javax.crypto.Mac` ("HmacSHA1") and `java.util.Base64`: the header's V2 fields `a` to `m`
    /// (`a`=please_rename_unique_group_name, `b`=TopicTest, `c`=TBW102, `d`=4, `e`=3, `f`=0,
    /// `g`=1700000000000, `h`=0, `i`=`TAGS\u1TagA\u2WAIT\u1true\u2`, `j`=0, `k`=false,
    /// `m`=false) plus `AccessKey=RocketMQ`, secret key `12345678`; body `Hello RocketMQ` →
    /// `0iOHQVPxB4Xkc1BknPATz0QUwd4=`; with `SecurityToken=token-1` and no body →
    /// `uRG4ZvnmMDNf2XlYDuE3djby1J4=`.
    #[test]
    fn signatures_match_java() {
        let mut cmd = send_v2("Hello RocketMQ");
        sign(&mut cmd, &Credentials::new("RocketMQ", "12345678"));
        assert_eq!(cmd.ext(ACCESS_KEY), Some("RocketMQ"));
        assert_eq!(cmd.ext(SIGNATURE), Some("0iOHQVPxB4Xkc1BknPATz0QUwd4="));
        // Signing again replaces the signature and leaves it the same.
        sign(&mut cmd, &Credentials::new("RocketMQ", "12345678"));
        assert_eq!(cmd.ext(SIGNATURE), Some("0iOHQVPxB4Xkc1BknPATz0QUwd4="));

        let mut cmd = send_v2("");
        let with_token = Credentials::new("RocketMQ", "12345678").with_security_token("token-1");
        sign(&mut cmd, &with_token);
        assert_eq!(cmd.ext(SECURITY_TOKEN), Some("token-1"));
        assert_eq!(cmd.ext(SIGNATURE), Some("uRG4ZvnmMDNf2XlYDuE3djby1J4="));
        assert!(!format!("{with_token:?}").contains("12345678"));
        assert!(!format!("{with_token:?}").contains("token-1"));
    }

    #[test]
    fn a_changed_field_or_body_changes_the_signature() {
        let credentials = Credentials::new("RocketMQ", "12345678");
        let signed = |cmd: &mut RemotingCommand| {
            sign(cmd, &credentials);
            cmd.ext(SIGNATURE).map(str::to_owned)
        };
        let base = signed(&mut send_v2("Hello RocketMQ"));
        assert_ne!(base, signed(&mut send_v2("Hello RocketMQ!")));
        let mut other = send_v2("Hello RocketMQ");
        other.ext_fields.insert("b", "OtherTopic");
        assert_ne!(base, signed(&mut other));
        assert_eq!(
            signature(b"content", "secret"),
            signature(b"content", "secret")
        );
        assert_ne!(
            signature(b"content", "secret"),
            signature(b"content", "other")
        );
    }

    #[test]
    fn verify_takes_what_sign_makes_and_nothing_else() {
        let credentials = Credentials::new("RocketMQ", "12345678");
        let mut cmd = send_v2("Hello RocketMQ");
        assert!(!verify(&cmd, "12345678"), "unsigned");
        sign(&mut cmd, &credentials);
        assert!(verify(&cmd, "12345678"));
        assert!(!verify(&cmd, "87654321"), "another secret");
        // The server leaves the unique-key query flag out of the content.
        cmd.ext_fields.insert(UNIQUE_KEY_QUERY, "true");
        assert!(verify(&cmd, "12345678"));
        let mut tampered = cmd.clone();
        tampered.ext_fields.insert("b", "OtherTopic");
        assert!(!verify(&tampered, "12345678"));
        let mut garbage = cmd;
        garbage.ext_fields.insert(SIGNATURE, "not base64!");
        assert!(!verify(&garbage, "12345678"));
    }

    /// Vectors from a Java 17 program: `javax.crypto.Mac` ("HmacSHA1", key `12345678`) over
    /// `20261203T040506Z`, as `%02X` hex; and `DateTimeFormatter.ofPattern("yyyyMMdd'T'HHmmss'Z'")`
    /// in UTC of second 1796270706.
    #[test]
    fn grpc_signatures_match_java_and_read_back() {
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_796_270_706);
        assert_eq!(grpc_date_time(at), "20261203T040506Z");
        let credentials = Credentials::new("RocketMQ", "12345678");
        let header = grpc_authorization(&credentials, "20261203T040506Z");
        assert_eq!(
            header,
            "MQv2-HMAC-SHA1 Credential=RocketMQ, SignedHeaders=x-mq-date-time, \
             Signature=8435BEA34691870B231B4A34C8F1AE1217711FE2"
        );
        let read = GrpcAuthorization::parse(&header).unwrap();
        assert_eq!(read.access_key, "RocketMQ");
        assert!(read.signed("20261203T040506Z", "12345678"));
        assert!(!read.signed("20261203T040507Z", "12345678"));
        assert!(!read.signed("20261203T040506Z", "12345679"));
        // Python's and Rust's clients write lower-case hex; a credential may carry a scope.
        let lower = GrpcAuthorization::parse(
            "MQv2-HMAC-SHA1 Credential=RocketMQ/x, SignedHeaders=x-mq-date-time, \
             Signature=8435bea34691870b231b4a34c8f1ae1217711fe2",
        )
        .unwrap();
        assert_eq!(lower, read);
        for bad in [
            "",
            "MQv2-HMAC-SHA1",
            "MQv2-HMAC-SHA1 Credential=RocketMQ",
            "MQv2-HMAC-SHA1 Credential=RocketMQ, Signature=XYZ1",
            "MQv2-HMAC-SHA1 Credential=, Signature=00",
            "MQv2-HMAC-SHA1 Credential=RocketMQ, Signature",
        ] {
            assert!(GrpcAuthorization::parse(bad).is_err(), "{bad:?}");
        }
    }

    proptest::proptest! {
        /// What our clients write, Java's proxy's reading takes back: any account without a
        /// comma, space or slash, any date-time.
        #[test]
        fn grpc_authorizations_read_back(
            access_key in "[A-Za-z0-9_-]{1,24}",
            secret_key in "[ -~]{1,24}",
            date_time in "[0-9TZ]{0,20}",
        ) {
            let credentials = Credentials::new(access_key.clone(), secret_key.clone());
            let read = GrpcAuthorization::parse(&grpc_authorization(&credentials, &date_time)).unwrap();
            proptest::prop_assert_eq!(&read.access_key, &access_key);
            proptest::prop_assert!(read.signed(&date_time, &secret_key));
        }

        /// Any text is read or refused, never a panic.
        #[test]
        fn any_authorization_text_is_read_or_refused(text in "\\PC{0,80}") {
            if let Ok(read) = GrpcAuthorization::parse(&text) {
                proptest::prop_assert!(!read.access_key.is_empty());
            }
        }
    }
}
