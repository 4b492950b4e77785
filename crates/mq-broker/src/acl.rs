//! Access control, in the shape of Apache RocketMQ's ACL 1.0 (`plain_acl.yml`): accounts with
//! a secret key, address white lists, an admin flag and per-topic and per-group permissions.
//!
//! Each request is checked in Java's order: a global white-listed address passes; then the
//! request must name a known `AccessKey`; an address on the account's white list passes without
//! a signature; otherwise the `Signature` must match ([`mq_client_api::acl::verify`]); then
//! admin-only codes need an admin account, and every topic and group the request touches needs
//! its permission. Groups are checked as their retry topic (`%RETRY%group`), as Java does.
//!
//! A refusal answers NO_PERMISSION (16) with a remark naming what was denied, as 5.3's ACL 2.0
//! does; Java's ACL 1.0 answers SYSTEM_ERROR (1) with the same remarks (see
//! `docs/servers.md`).

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use mq_client_api::acl::{AccessControl, AccessRequest, Credentials, Resource, perm};
use mq_client_api::answer::respond;
use mq_client_api::body::{HeartbeatData, from_json};
use mq_client_api::names::{RETRY_PREFIX, is_retry_topic, retry_topic};
use mq_client_api::{RequestCode, ResponseCode};
use mq_remoting::{BoxFuture, HookAction, RemotingCommand, RequestContext, RpcHook};
use serde::Deserialize;

/// Codes only admin accounts may send: create/update topic, update broker config, delete
/// topic, create/update and delete subscription group.
const ADMIN_CODES: [i32; 5] = [17, 25, 215, 200, 207];

/// The ACL file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AclError {
    /// The file could not be read.
    #[error("cannot read the ACL file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not an ACL file.
    #[error("bad ACL file: {0}")]
    Parse(String),
    /// An address pattern is malformed.
    #[error("bad address pattern {0:?}")]
    BadAddress(String),
    /// An account without an access key or secret key, or two accounts with one access key.
    #[error("bad account: {0}")]
    BadAccount(String),
}

/// The accounts and white lists a broker checks requests against.
#[derive(Clone)]
pub struct Acl {
    global_white: Vec<AddressPattern>,
    accounts: HashMap<String, Account>,
}

impl fmt::Debug for Acl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut keys: Vec<&String> = self.accounts.keys().collect();
        keys.sort();
        f.debug_struct("Acl")
            .field("global_white", &self.global_white.len())
            .field("accounts", &keys)
            .finish()
    }
}

#[derive(Clone)]
struct Account {
    secret_key: String,
    white: Option<AddressPattern>,
    admin: bool,
    default_topic_perm: u8,
    default_group_perm: u8,
    /// By topic, and by retry topic for groups.
    perms: HashMap<String, u8>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AclFile {
    #[serde(default)]
    global_white_remote_addresses: Vec<Scalar>,
    #[serde(default)]
    accounts: Vec<AccountFile>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AccountFile {
    access_key: Option<Scalar>,
    secret_key: Option<Scalar>,
    white_remote_address: Option<Scalar>,
    #[serde(default)]
    admin: Option<Scalar>,
    default_topic_perm: Option<Scalar>,
    default_group_perm: Option<Scalar>,
    #[serde(default)]
    topic_perms: Vec<Scalar>,
    #[serde(default)]
    group_perms: Vec<Scalar>,
}

/// A YAML scalar read as text: `secretKey: 12345678` is a number to YAML and a string to Java.
#[derive(Deserialize)]
#[serde(untagged)]
enum Scalar {
    Text(String),
    Int(i64),
    Bool(bool),
    Float(f64),
}

impl Scalar {
    fn text(&self) -> String {
        match self {
            Self::Text(s) => s.trim().to_owned(),
            Self::Int(n) => n.to_string(),
            Self::Bool(b) => b.to_string(),
            Self::Float(x) => x.to_string(),
        }
    }
}

/// `PUB`, `SUB`, `PUB|SUB` (or `SUB|PUB`); anything else is DENY, as in Java.
fn parse_perm(text: Option<&str>) -> u8 {
    match text.map(str::trim) {
        Some("PUB") => perm::PUB,
        Some("SUB") => perm::SUB,
        Some("PUB|SUB" | "SUB|PUB") => perm::PUB | perm::SUB,
        _ => perm::DENY,
    }
}

/// Whether `owned` grants `needed` (Java `Permission.checkPermission`).
fn grants(needed: u8, owned: u8) -> bool {
    if owned & perm::DENY != 0 {
        return false;
    }
    if needed & perm::ANY != 0 {
        return owned & (perm::PUB | perm::SUB) != 0;
    }
    needed & owned != 0
}

impl Acl {
    /// Reads a `plain_acl.yml`-shaped file.
    ///
    /// # Errors
    /// [`AclError`] when it cannot be read or is not an ACL file.
    pub fn load(path: &Path) -> Result<Self, AclError> {
        let text = std::fs::read_to_string(path).map_err(|source| AclError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_yaml(&text)
    }

    /// Parses `plain_acl.yml` text.
    ///
    /// # Errors
    /// [`AclError`] for text that is not an ACL file, a malformed address pattern, an account
    /// without keys, or two accounts with one access key.
    pub fn from_yaml(text: &str) -> Result<Self, AclError> {
        let file: AclFile =
            yaml_serde::from_str(text).map_err(|e| AclError::Parse(e.to_string()))?;
        let global_white = file
            .global_white_remote_addresses
            .iter()
            .map(|a| AddressPattern::parse(&a.text()))
            .collect::<Result<Vec<_>, _>>()?;
        let mut accounts = HashMap::new();
        for a in file.accounts {
            let access_key = a.access_key.map(|k| k.text()).unwrap_or_default();
            let secret_key = a.secret_key.map(|k| k.text()).unwrap_or_default();
            if access_key.chars().count() <= 6 || secret_key.chars().count() <= 6 {
                return Err(AclError::BadAccount(format!(
                    "access key {access_key:?}: access and secret keys need more than 6 characters, as in Java"
                )));
            }
            let white = match a.white_remote_address.map(|w| w.text()) {
                Some(w) if !w.is_empty() => Some(AddressPattern::parse(&w)?),
                _ => None,
            };
            let mut perms = HashMap::new();
            for (entries, as_group) in [(&a.topic_perms, false), (&a.group_perms, true)] {
                for entry in entries {
                    let entry = entry.text();
                    let Some((name, p)) = entry.split_once('=') else {
                        return Err(AclError::BadAccount(format!(
                            "{access_key}: permission {entry:?} is not name=PERM"
                        )));
                    };
                    let name = name.trim();
                    let key = if as_group {
                        retry_topic(name)
                    } else {
                        name.to_owned()
                    };
                    perms.insert(key, parse_perm(Some(p)));
                }
            }
            let account = Account {
                secret_key,
                white,
                admin: a.admin.is_some_and(|v| v.text() == "true"),
                default_topic_perm: parse_perm(a.default_topic_perm.map(|p| p.text()).as_deref()),
                default_group_perm: parse_perm(a.default_group_perm.map(|p| p.text()).as_deref()),
                perms,
            };
            if accounts.insert(access_key.clone(), account).is_some() {
                return Err(AclError::BadAccount(format!(
                    "access key {access_key} is given twice"
                )));
            }
        }
        Ok(Self {
            global_white,
            accounts,
        })
    }

    /// Adds the account a server's own clients sign with (a gRPC proxy in front of this
    /// broker, as Apache RocketMQ 5.3's `innerClientAuthenticationCredentials`): an admin
    /// that may publish and subscribe everything.
    ///
    /// # Errors
    /// [`AclError::BadAccount`] when an account already has its access key.
    pub fn with_inner_account(mut self, credentials: &Credentials) -> Result<Self, AclError> {
        let key = credentials.access_key().to_owned();
        if self.accounts.contains_key(&key) {
            return Err(AclError::BadAccount(format!(
                "access key {key} is given twice"
            )));
        }
        let all = perm::PUB | perm::SUB;
        self.accounts.insert(
            key,
            Account {
                secret_key: credentials.secret_key().to_owned(),
                white: None,
                admin: true,
                default_topic_perm: all,
                default_group_perm: all,
                perms: HashMap::new(),
            },
        );
        Ok(self)
    }

    /// Checks `request` from `remote` (the peer's IP address). `Err` holds the remark of the
    /// refusal.
    pub fn check(&self, request: &RemotingCommand, remote: Option<IpAddr>) -> Result<(), String> {
        // A white-listed address needs no account: its request is not read further.
        if remote.is_some_and(|ip| self.global_white.iter().any(|p| p.matches(ip))) {
            return Ok(());
        }
        let resources = resources(request)?;
        AccessControl::check(
            self,
            &AccessRequest {
                remote,
                access_key: request.ext_fields.get(mq_client_api::acl::ACCESS_KEY),
                signed_under: &|secret| mq_client_api::acl::verify(request, secret),
                code: Some(request.code),
                resources: &resources,
            },
        )
    }
}

impl AccessControl for Acl {
    /// Java's order: a global white-listed address passes; the request must name a known
    /// account; an address on the account's white list passes without a signature; the
    /// signature must match; admin-only codes need an admin; every resource needs its
    /// permission (a group's as its retry topic's).
    fn check(&self, request: &AccessRequest<'_>) -> Result<(), String> {
        let remote = request.remote;
        if remote.is_some_and(|ip| self.global_white.iter().any(|p| p.matches(ip))) {
            return Ok(());
        }
        let Some(access_key) = request.access_key else {
            return Err("No accessKey is configured".into());
        };
        let Some(account) = self.accounts.get(access_key) else {
            return Err(format!("No acl config for {access_key}"));
        };
        if let (Some(white), Some(ip)) = (&account.white, remote)
            && white.matches(ip)
        {
            return Ok(());
        }
        if !(request.signed_under)(&account.secret_key) {
            return Err(format!("Check signature failed for accessKey={access_key}"));
        }
        if let Some(code) = request.code
            && ADMIN_CODES.contains(&code)
            && !account.admin
        {
            return Err(format!(
                "Need admin permission for request code={code}, but accessKey={access_key} is not"
            ));
        }
        for (resource, needed) in request.resources {
            let (key, group) = match resource {
                Resource::Group(g) => (retry_topic(g), true),
                Resource::Topic(t) => (t.clone(), is_retry_topic(t)),
            };
            let owned = account.perms.get(&key).copied().unwrap_or(if group {
                account.default_group_perm
            } else {
                account.default_topic_perm
            });
            if !grants(*needed, owned) {
                let what = match key.strip_prefix(RETRY_PREFIX) {
                    Some(g) => format!("group:{g}"),
                    None => format!("topic:{key}"),
                };
                return Err(format!(
                    "No permission for {what}: accessKey={access_key} may not {}",
                    match *needed {
                        perm::PUB => "publish",
                        perm::SUB => "subscribe",
                        _ => "publish or subscribe",
                    }
                ));
            }
        }
        Ok(())
    }
}

/// The topics and groups `request` touches, with the permission each needs:
/// Java ACL 1.0's table, plus batch and reply sends, which it leaves unchecked.
fn resources(request: &RemotingCommand) -> Result<Vec<(Resource, u8)>, String> {
    let ext = |key: &str| request.ext_fields.get(key).map(str::to_owned);
    let group = |key: &str| ext(key).map(|g| (Resource::Group(g), perm::SUB));
    // A send to a retry topic is a consumer handing a message back: it needs the group's SUB.
    let send = |topic: Option<String>| {
        topic.map(|t| {
            if is_retry_topic(&t) {
                (Resource::Topic(t), perm::SUB)
            } else {
                (Resource::Topic(t), perm::PUB)
            }
        })
    };
    let topic_sub = |key: &str| ext(key).map(|t| (Resource::Topic(t), perm::SUB));
    let out = match crate::broker::pop_code(RequestCode(request.code)) {
        RequestCode::SEND_MESSAGE | RequestCode::SEND_REPLY_MESSAGE => {
            send(ext("topic")).into_iter().collect()
        }
        RequestCode::SEND_MESSAGE_V2
        | RequestCode::SEND_BATCH_MESSAGE
        | RequestCode::SEND_REPLY_MESSAGE_V2 => send(ext("b")).into_iter().collect(),
        RequestCode::CONSUMER_SEND_MSG_BACK => group("group").into_iter().collect(),
        // 5.3's action for a recall: PUB on its topic.
        RequestCode::RECALL_MESSAGE => ext("topic")
            .map(|t| (Resource::Topic(t), perm::PUB))
            .into_iter()
            .collect(),
        RequestCode::PULL_MESSAGE
        | RequestCode::LITE_PULL_MESSAGE
        | RequestCode::POP_MESSAGE
        | RequestCode::ACK_MESSAGE
        | RequestCode::CHANGE_MESSAGE_INVISIBLETIME => topic_sub("topic")
            .into_iter()
            .chain(group("consumerGroup"))
            .collect(),
        RequestCode::QUERY_MESSAGE => topic_sub("topic").into_iter().collect(),
        RequestCode::HEART_BEAT => {
            let data: HeartbeatData = from_json("HeartbeatData", &request.body)
                .map_err(|e| format!("cannot read the heartbeat to check it: {e}"))?;
            let mut out = Vec::new();
            for c in data.consumer_data_set {
                out.push((Resource::Group(c.group_name), perm::SUB));
                out.extend(
                    c.subscription_data_set
                        .into_iter()
                        .map(|s| (Resource::Topic(s.topic), perm::SUB)),
                );
            }
            out
        }
        RequestCode::UNREGISTER_CLIENT | RequestCode::GET_CONSUMER_LIST_BY_GROUP => {
            group("consumerGroup").into_iter().collect()
        }
        RequestCode::UPDATE_CONSUMER_OFFSET => group("consumerGroup")
            .into_iter()
            .chain(topic_sub("topic"))
            .collect(),
        _ => Vec::new(),
    };
    Ok(out)
}

/// An address white-list entry (Java `RemoteAddressStrategy`): `*` (any), one address, a
/// range per IPv4 part (`192.168.1.*`, `192.168.1.10-20`), a set in the last part
/// (`192.168.1.{1,2}`) or a comma-separated list of any of those.
#[derive(Clone, Debug)]
enum AddressPattern {
    Any,
    One(IpAddr),
    /// Per IPv4 part: inclusive bounds.
    Range([(u8, u8); 4]),
    Some(Vec<Self>),
}

impl AddressPattern {
    fn parse(text: &str) -> Result<Self, AclError> {
        let text = text.trim();
        let bad = || AclError::BadAddress(text.to_owned());
        if text == "*" || text == "*.*.*.*" || text == "*:*:*:*:*:*:*:*" {
            return Ok(Self::Any);
        }
        if let Some(prefix) = text.strip_suffix('}') {
            let (head, set) = prefix.rsplit_once('{').ok_or_else(bad)?;
            return set
                .split(',')
                .map(|last| Self::parse(&format!("{head}{}", last.trim())))
                .collect::<Result<Vec<_>, _>>()
                .map(Self::Some);
        }
        if text.contains(',') {
            return text
                .split(',')
                .map(Self::parse)
                .collect::<Result<Vec<_>, _>>()
                .map(Self::Some);
        }
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Ok(Self::One(ip));
        }
        let parts: Vec<&str> = text.split('.').collect();
        if parts.len() != 4 {
            return Err(bad());
        }
        let mut range = [(0u8, 255u8); 4];
        for (slot, part) in range.iter_mut().zip(parts) {
            *slot = match part {
                "*" => (0, 255),
                p => match p.split_once('-') {
                    Some((lo, hi)) => (
                        lo.parse().map_err(|_| bad())?,
                        hi.parse().map_err(|_| bad())?,
                    ),
                    None => {
                        let n = p.parse().map_err(|_| bad())?;
                        (n, n)
                    }
                },
            };
        }
        Ok(Self::Range(range))
    }

    fn matches(&self, ip: IpAddr) -> bool {
        match self {
            Self::Any => true,
            Self::One(one) => *one == ip,
            Self::Range(range) => match ip {
                IpAddr::V4(v4) => range
                    .iter()
                    .zip(v4.octets())
                    .all(|((lo, hi), o)| (*lo..=*hi).contains(&o)),
                IpAddr::V6(_) => false,
            },
            Self::Some(all) => all.iter().any(|p| p.matches(ip)),
        }
    }
}

/// The broker's hook that checks every request against an [`Acl`].
#[derive(Debug)]
pub(crate) struct AclHook(pub(crate) Arc<Acl>);

impl RpcHook for AclHook {
    fn before_request(
        &self,
        ctx: &RequestContext,
        request: &RemotingCommand,
    ) -> BoxFuture<'static, HookAction> {
        let remote = ctx.connection().peer_socket_addr().map(|a| a.ip());
        let action = match self.0.check(request, remote) {
            Ok(()) => HookAction::Continue,
            Err(remark) => {
                tracing::debug!(code = request.code, remark, "request refused by ACL");
                HookAction::Respond(respond(request, ResponseCode::NO_PERMISSION, Some(remark)))
            }
        };
        Box::pin(std::future::ready(action))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_patterns_match_as_java_reads_them() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let p = |s: &str| AddressPattern::parse(s).unwrap();
        assert!(p("*").matches(ip("10.1.2.3")));
        assert!(p("192.168.1.*").matches(ip("192.168.1.77")));
        assert!(!p("192.168.1.*").matches(ip("192.168.2.77")));
        assert!(p("192.168.1.10-20").matches(ip("192.168.1.15")));
        assert!(!p("192.168.1.10-20").matches(ip("192.168.1.21")));
        assert!(p("192.168.1.{1,2}").matches(ip("192.168.1.2")));
        assert!(!p("192.168.1.{1,2}").matches(ip("192.168.1.3")));
        assert!(p("10.0.0.1,127.0.0.1").matches(ip("127.0.0.1")));
        assert!(AddressPattern::parse("300.1.1.1").is_err());
        assert!(AddressPattern::parse("a.b").is_err());
    }

    #[test]
    fn permissions_read_and_grant_as_in_java() {
        assert_eq!(parse_perm(Some("PUB|SUB")), perm::PUB | perm::SUB);
        assert_eq!(parse_perm(Some(" SUB ")), perm::SUB);
        assert_eq!(parse_perm(Some("READ")), perm::DENY);
        assert_eq!(parse_perm(None), perm::DENY);
        assert!(grants(perm::PUB, perm::PUB | perm::SUB));
        assert!(!grants(perm::PUB, perm::SUB));
        assert!(!grants(perm::SUB, perm::DENY | perm::SUB));
        assert!(grants(perm::ANY, perm::SUB));
    }
}
