//! ACL credentials and the request signature Apache RocketMQ's ACL checks (spec: ACL,
//! remoting): Java's `AclClientRPCHook`.
//!
//! A signed request carries `AccessKey` (and `SecurityToken`) among its ext fields, and
//! `Signature`: the HmacSHA1, under the secret key, of every other ext field's *value* in key
//! order followed by the body, in standard Base64. [`AclSigner`] signs every request a
//! [`mq_remoting::RemotingClient`] sends when installed as its
//! [`mq_remoting::RequestHook`].

use std::fmt;

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
}
