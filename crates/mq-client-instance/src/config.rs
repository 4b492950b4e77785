//! [`ClientConfig`]: what every producer and consumer of one client id shares.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use mq_client_api::acl::Credentials;
use mq_remoting::{ClientTls, NameServerList, SerializeType};

/// Default route refresh period (Java `pollNameServerInterval`, 30 s).
pub const DEFAULT_POLL_NAME_SERVER_INTERVAL: Duration = Duration::from_secs(30);
/// Default heartbeat period (Java `heartbeatBrokerInterval`, 30 s).
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(30);
/// Default instance name (Java `rocketmq.client.name`); replaced by the process id at start.
pub const DEFAULT_INSTANCE_NAME: &str = "DEFAULT";

/// Client settings shared by the producers and consumers of one client id.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ClientConfig {
    /// Name servers. Java: `namesrvAddr` (`;`-separated).
    pub name_servers: Vec<String>,
    /// Instance name; `DEFAULT` becomes the process id. Java: `instanceName`.
    pub instance_name: String,
    /// The address this client announces in its id and message ids. Default 127.0.0.1: no
    /// network interface is probed. Java: `clientIP`.
    pub client_ip: IpAddr,
    /// Unit name appended to the client id. Java: `unitName`.
    pub unit_name: Option<String>,
    /// Route refresh period. Default 30 s. Java: `pollNameServerInterval`.
    pub poll_name_server_interval: Duration,
    /// Heartbeat period. Default 30 s. Java: `heartbeatBrokerInterval`.
    pub heartbeat_interval: Duration,
    /// Request header codec. Default JSON. Java: `rocketmq.serialize.type`.
    pub serialize_type: SerializeType,
    /// Namespace prefixed to topics and groups (`ns%topic`). Java: `namespace`.
    pub namespace: Option<String>,
    /// Send through the broker's VIP port (listen port − 2). Default false. Java:
    /// `vipChannelEnabled`.
    pub vip_channel: bool,
    /// Timeout of route lookups and heartbeats. Default 3 s.
    pub request_timeout: Duration,
    /// ACL credentials: when set, every request is signed (Java `AclClientRPCHook`).
    pub credentials: Option<Credentials>,
    /// TLS to every name server and broker (Java `tls.enable`). Default none: plain TCP.
    pub tls: Option<ClientTls>,
    /// Coalesce each connection's writes (default true); see
    /// [`ClientConfig::with_coalesced_writes`].
    pub coalesce_writes: bool,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            name_servers: Vec::new(),
            instance_name: DEFAULT_INSTANCE_NAME.to_owned(),
            client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            unit_name: None,
            poll_name_server_interval: DEFAULT_POLL_NAME_SERVER_INTERVAL,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            serialize_type: SerializeType::Json,
            namespace: None,
            vip_channel: false,
            request_timeout: Duration::from_secs(3),
            credentials: None,
            tls: None,
            coalesce_writes: true,
        }
    }
}

/// A configuration value was refused. The caller is at fault.
#[derive(Clone, Debug, Eq, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A name-server address is not `host:port`.
    #[error("name server address {0:?} is not host:port")]
    BadNameServer(String),
    /// A period or timeout is zero.
    #[error("{0} must be greater than zero")]
    ZeroDuration(&'static str),
    /// The instance or unit name is blank or contains `@`.
    #[error("{0} must be non-blank and free of '@'")]
    BadName(&'static str),
    /// A live client instance has this client id with other settings: sharing it would run
    /// this client with settings it did not ask for.
    #[error(
        "client id {client_id} is in use with other settings ({}); give this client its own instance name",
        settings.join(", ")
    )]
    ClientIdInUse {
        /// The client id.
        client_id: String,
        /// The settings that differ.
        settings: Vec<&'static str>,
    },
    /// A producer or consumer setting is out of range.
    #[error("{field}: {reason}")]
    Invalid {
        /// The setting.
        field: &'static str,
        /// Why.
        reason: String,
    },
}

impl ClientConfig {
    /// The names of the settings in which `self` and `other` differ.
    pub fn differences(&self, other: &Self) -> Vec<&'static str> {
        let Self {
            name_servers,
            instance_name,
            client_ip,
            unit_name,
            poll_name_server_interval,
            heartbeat_interval,
            serialize_type,
            namespace,
            vip_channel,
            request_timeout,
            credentials,
            tls,
            coalesce_writes,
        } = self;
        [
            ("name_servers", *name_servers == other.name_servers),
            ("instance_name", *instance_name == other.instance_name),
            ("client_ip", *client_ip == other.client_ip),
            ("unit_name", *unit_name == other.unit_name),
            (
                "poll_name_server_interval",
                *poll_name_server_interval == other.poll_name_server_interval,
            ),
            (
                "heartbeat_interval",
                *heartbeat_interval == other.heartbeat_interval,
            ),
            ("serialize_type", *serialize_type == other.serialize_type),
            ("namespace", *namespace == other.namespace),
            ("vip_channel", *vip_channel == other.vip_channel),
            ("request_timeout", *request_timeout == other.request_timeout),
            ("credentials", *credentials == other.credentials),
            ("tls", *tls == other.tls),
            ("coalesce_writes", *coalesce_writes == other.coalesce_writes),
        ]
        .into_iter()
        .filter_map(|(name, same)| (!same).then_some(name))
        .collect()
    }

    /// A configuration with these name servers: `"host:port;host:port"` as Java's
    /// `namesrvAddr`, or a list of `host:port`.
    ///
    /// ```
    /// use mq_client_instance::ClientConfig;
    ///
    /// let a = ClientConfig::new("10.0.0.1:9876;10.0.0.2:9876");
    /// let b = ClientConfig::new(["10.0.0.1:9876", "10.0.0.2:9876"]);
    /// assert_eq!(a.name_servers, b.name_servers);
    /// ```
    pub fn new(name_servers: impl IntoNameServers) -> Self {
        Self {
            name_servers: name_servers.into_name_servers(),
            ..Self::default()
        }
    }

    /// Sets the name servers, given as for [`ClientConfig::new`].
    #[must_use]
    pub fn with_name_servers(mut self, addrs: impl IntoNameServers) -> Self {
        self.name_servers = addrs.into_name_servers();
        self
    }

    /// Signs every request with ACL `credentials`, for clusters with ACL on.
    #[must_use]
    pub fn with_credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// The remoting client settings these ask for: requests signed with the credentials, and
    /// TLS, when given.
    pub fn remoting(&self) -> mq_remoting::ClientConfig {
        let mut config = mq_remoting::ClientConfig::default();
        if let Some(credentials) = &self.credentials {
            config = config.with_request_hook(std::sync::Arc::new(mq_client_api::acl::AclSigner(
                credentials.clone(),
            )));
        }
        if let Some(tls) = &self.tls {
            config = config.with_tls(tls.clone());
        }
        config.with_coalesced_writes(self.coalesce_writes)
    }

    /// Speaks TLS to every name server and broker, trusting and verifying as `tls` says.
    #[must_use]
    pub fn with_tls(mut self, tls: ClientTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Sets the instance name (default `DEFAULT`, which becomes the process id).
    #[must_use]
    pub fn with_instance_name(mut self, name: impl Into<String>) -> Self {
        self.instance_name = name.into();
        self
    }

    /// Sets the client address (default 127.0.0.1).
    #[must_use]
    pub fn with_client_ip(mut self, ip: IpAddr) -> Self {
        self.client_ip = ip;
        self
    }

    /// Sets the unit name.
    #[must_use]
    pub fn with_unit_name(mut self, unit: impl Into<String>) -> Self {
        self.unit_name = Some(unit.into());
        self
    }

    /// Sets the route refresh period (default 30 s).
    #[must_use]
    pub fn with_poll_name_server_interval(mut self, d: Duration) -> Self {
        self.poll_name_server_interval = d;
        self
    }

    /// Sets the heartbeat period (default 30 s).
    #[must_use]
    pub fn with_heartbeat_interval(mut self, d: Duration) -> Self {
        self.heartbeat_interval = d;
        self
    }

    /// Sets the header codec (default JSON). With ROCKETMQ, requests whose code a binary
    /// header cannot hold (the 5.x pop codes) still go with JSON headers.
    #[must_use]
    pub fn with_serialize_type(mut self, ty: SerializeType) -> Self {
        self.serialize_type = ty;
        self
    }

    /// Sets the namespace.
    #[must_use]
    pub fn with_namespace(mut self, ns: impl Into<String>) -> Self {
        self.namespace = Some(ns.into());
        self
    }

    /// Coalesces each connection's writes (default on): before a write, the tasks that are
    /// ready queue their requests too, so that one write carries them all, while at most 128
    /// requests await answers (deeper pipelines write at once, their writes being full
    /// already). Pays for services where many tasks each await one send at a time: fewer
    /// syscalls, about a third less CPU per message on each side, more messages a second.
    /// Off, the writer writes as soon as it is woken. See `docs/performance.md` for both.
    #[must_use]
    pub fn with_coalesced_writes(mut self, on: bool) -> Self {
        self.coalesce_writes = on;
        self
    }

    /// Enables the VIP channel (broker port − 2).
    #[must_use]
    pub fn with_vip_channel(mut self, on: bool) -> Self {
        self.vip_channel = on;
        self
    }

    /// Checks every value.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first bad value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for addr in &self.name_servers {
            let ok = addr
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !ok {
                return Err(ConfigError::BadNameServer(addr.clone()));
            }
        }
        let bad_name = |s: &str| s.trim().is_empty() || s.contains('@');
        if bad_name(&self.instance_name) {
            return Err(ConfigError::BadName("instance name"));
        }
        if self.unit_name.as_deref().is_some_and(bad_name) {
            return Err(ConfigError::BadName("unit name"));
        }
        for (name, d) in [
            ("poll_name_server_interval", self.poll_name_server_interval),
            ("heartbeat_interval", self.heartbeat_interval),
            ("request_timeout", self.request_timeout),
        ] {
            if d.is_zero() {
                return Err(ConfigError::ZeroDuration(name));
            }
        }
        Ok(())
    }

    /// The instance name after `DEFAULT` is replaced by the process id.
    pub fn effective_instance_name(&self) -> String {
        if self.instance_name == DEFAULT_INSTANCE_NAME {
            std::process::id().to_string()
        } else {
            self.instance_name.clone()
        }
    }

    /// `ip@instance[@unit]`.
    pub fn client_id(&self) -> String {
        let mut id = format!("{}@{}", self.client_ip, self.effective_instance_name());
        if let Some(unit) = &self.unit_name {
            id.push('@');
            id.push_str(unit);
        }
        id
    }

    /// `topic` with the namespace prefix (`ns%topic`), unless it already has it or is a
    /// retry/DLQ topic that carries it inside.
    pub fn wrap(&self, name: &str) -> String {
        self.wrapped(name).into_owned()
    }

    /// [`ClientConfig::wrap`] without a copy when there is nothing to add.
    pub fn wrapped<'a>(&self, name: &'a str) -> Cow<'a, str> {
        match &self.namespace {
            Some(ns)
                if !ns.is_empty()
                    && !name
                        .strip_prefix(ns.as_str())
                        .is_some_and(|rest| rest.starts_with('%')) =>
            {
                Cow::Owned(format!("{ns}%{name}"))
            }
            _ => Cow::Borrowed(name),
        }
    }

    /// `name` without the namespace prefix.
    pub fn unwrap_name<'a>(&self, name: &'a str) -> &'a str {
        match &self.namespace {
            Some(ns) if !ns.is_empty() => name
                .strip_prefix(ns.as_str())
                .and_then(|rest| rest.strip_prefix('%'))
                .unwrap_or(name),
            _ => name,
        }
    }
}

/// Name server addresses as a caller gives them: one `"host:port;host:port"` string (Java's
/// `namesrvAddr`), or a list of `host:port`. Blank entries are dropped and each is trimmed.
pub trait IntoNameServers {
    /// The addresses, in order.
    fn into_name_servers(self) -> Vec<String>;
}

impl IntoNameServers for &str {
    fn into_name_servers(self) -> Vec<String> {
        NameServerList::parse(self)
    }
}

impl IntoNameServers for &String {
    fn into_name_servers(self) -> Vec<String> {
        NameServerList::parse(self)
    }
}

impl IntoNameServers for String {
    fn into_name_servers(self) -> Vec<String> {
        NameServerList::parse(&self)
    }
}

impl<S: AsRef<str>> IntoNameServers for Vec<S> {
    fn into_name_servers(self) -> Vec<String> {
        self.iter()
            .flat_map(|a| NameServerList::parse(a.as_ref()))
            .collect()
    }
}

impl<S: AsRef<str>> IntoNameServers for &[S] {
    fn into_name_servers(self) -> Vec<String> {
        self.iter()
            .flat_map(|a| NameServerList::parse(a.as_ref()))
            .collect()
    }
}

impl<S: AsRef<str>, const N: usize> IntoNameServers for [S; N] {
    fn into_name_servers(self) -> Vec<String> {
        self.as_slice().into_name_servers()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_id_and_validation() {
        let c = ClientConfig::new("127.0.0.1:9876;10.0.0.1:9876")
            .with_instance_name("app")
            .with_unit_name("u1");
        assert_eq!(c.name_servers.len(), 2);
        assert_eq!(c.client_id(), "127.0.0.1@app@u1");
        assert!(c.validate().is_ok());
        let pid = std::process::id().to_string();
        assert_eq!(
            ClientConfig::default().client_id(),
            format!("127.0.0.1@{pid}")
        );
        assert_eq!(
            ClientConfig::new("nohost").validate(),
            Err(ConfigError::BadNameServer("nohost".into()))
        );
        assert_eq!(
            ClientConfig::default().with_instance_name("a@b").validate(),
            Err(ConfigError::BadName("instance name"))
        );
        assert_eq!(
            ClientConfig::default()
                .with_heartbeat_interval(Duration::ZERO)
                .validate(),
            Err(ConfigError::ZeroDuration("heartbeat_interval"))
        );
    }

    #[test]
    fn namespaces_wrap_and_unwrap() {
        let c = ClientConfig::default().with_namespace("ns");
        assert_eq!(c.wrap("T"), "ns%T");
        assert_eq!(c.wrap("ns%T"), "ns%T");
        assert_eq!(c.unwrap_name("ns%T"), "T");
        assert_eq!(ClientConfig::default().wrap("T"), "T");
    }
}
