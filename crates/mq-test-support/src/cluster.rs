//! An in-process cluster: a real name server and N real brokers on ephemeral loopback ports,
//! each broker with its own temporary store and fault injector.

use std::sync::Arc;
use std::time::Duration;

use mq_broker::{Broker, BrokerConfig, FlushMode};
use mq_client_api::{ApiConfig, ClientApi};
use mq_namesrv::{NameServer, NamesrvConfig};
use mq_remoting::{ClientConfig, ClientTls, RemotingClient, ServerTls, TlsMode};
use tempfile::TempDir;

use crate::fault::FaultInjector;
use crate::tls::TestCert;

/// Builds a [`Cluster`].
#[derive(Clone, Debug)]
pub struct ClusterBuilder {
    brokers: usize,
    flush_mode: FlushMode,
    segment_size: i64,
    auto_create_topic: bool,
    configure: Option<fn(BrokerConfig) -> BrokerConfig>,
    tls: Option<(TestCert, TlsMode)>,
}

impl Default for ClusterBuilder {
    fn default() -> Self {
        Self {
            brokers: 1,
            flush_mode: FlushMode::Async,
            segment_size: 4 * 1024 * 1024,
            auto_create_topic: true,
            configure: None,
            tls: None,
        }
    }
}

impl ClusterBuilder {
    /// Number of brokers (default 1), named `broker-a`, `broker-b`, ...
    #[must_use]
    pub fn brokers(mut self, n: usize) -> Self {
        self.brokers = n;
        self
    }

    /// Flush mode of every broker (default ASYNC).
    #[must_use]
    pub fn flush_mode(mut self, mode: FlushMode) -> Self {
        self.flush_mode = mode;
        self
    }

    /// Commit-log segment size (default 4 MiB).
    #[must_use]
    pub fn segment_size(mut self, bytes: i64) -> Self {
        self.segment_size = bytes;
        self
    }

    /// Topic auto-creation (default on).
    #[must_use]
    pub fn auto_create_topic(mut self, on: bool) -> Self {
        self.auto_create_topic = on;
        self
    }

    /// Serves TLS with `cert` in `mode` on the name server and every broker; brokers register
    /// over TLS, trusting `cert`. Clients trust it with [`TestCert::cert_pem`].
    #[must_use]
    pub fn tls(mut self, cert: TestCert, mode: TlsMode) -> Self {
        self.tls = Some((cert, mode));
        self
    }

    /// Further broker settings.
    #[must_use]
    pub fn configure(mut self, f: fn(BrokerConfig) -> BrokerConfig) -> Self {
        self.configure = Some(f);
        self
    }

    /// Starts the name server, then the brokers (each registers before this returns).
    ///
    /// # Errors
    /// Bind and store errors.
    pub async fn start(self) -> std::io::Result<Cluster> {
        let dir = tempfile::tempdir()?;
        let tls = match &self.tls {
            Some((cert, mode)) => {
                let server = ServerTls::from_pem(cert.cert_pem.as_bytes(), cert.key_pem.as_bytes())
                    .map_err(std::io::Error::other)?
                    .with_mode(*mode);
                let client = ClientTls::with_roots_pem(cert.cert_pem.as_bytes())
                    .map_err(std::io::Error::other)?;
                Some((server, client))
            }
            None => None,
        };
        let mut namesrv_config = NamesrvConfig::default();
        if let Some((server, _)) = &tls {
            namesrv_config = namesrv_config.with_tls(server.clone());
        }
        let namesrv = NameServer::start(namesrv_config).await?;
        let namesrv_faults = FaultInjector::default();
        namesrv.add_rpc_hook(Arc::new(namesrv_faults.clone()));
        let ns_addr = namesrv.local_addr().to_string();
        let mut brokers = Vec::with_capacity(self.brokers);
        for i in 0..self.brokers {
            let name = format!("broker-{}", char::from(b'a' + (i % 26) as u8));
            let mut config = BrokerConfig::new(dir.path().join(&name))
                .with_broker_name(name)
                .with_name_servers(vec![ns_addr.clone()])
                .with_flush_mode(self.flush_mode)
                .with_segment_size(self.segment_size)
                .with_auto_create_topic(self.auto_create_topic)
                // A test's data never goes to the host's disk use: retention by age only
                // (72 h, so never within a test) unless a test configures otherwise.
                .with_retention(Duration::from_secs(72 * 3600), 1.0);
            if let Some((server, client)) = &tls {
                config = config
                    .with_tls(server.clone())
                    .with_name_server_tls(client.clone());
            }
            if let Some(f) = self.configure {
                config = f(config);
            }
            let broker = Broker::start(config).await?;
            let faults = FaultInjector::default();
            broker.add_rpc_hook(Arc::new(faults.clone()));
            brokers.push((broker, faults));
        }
        Ok(Cluster {
            namesrv,
            namesrv_faults,
            brokers,
            _dir: dir,
        })
    }
}

/// A running in-process cluster. Shut it down with [`Cluster::shutdown`]; dropping it only
/// cancels its tasks.
#[derive(Debug)]
pub struct Cluster {
    namesrv: NameServer,
    namesrv_faults: FaultInjector,
    brokers: Vec<(Broker, FaultInjector)>,
    _dir: TempDir,
}

impl Cluster {
    /// A builder with one broker.
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder::default()
    }

    /// The name server's `ip:port`.
    pub fn namesrv_addr(&self) -> String {
        self.namesrv.local_addr().to_string()
    }

    /// The name server.
    pub fn namesrv(&self) -> &NameServer {
        &self.namesrv
    }

    /// The name server's fault injector.
    pub fn namesrv_faults(&self) -> &FaultInjector {
        &self.namesrv_faults
    }

    /// Broker `i`.
    pub fn broker(&self, i: usize) -> &Broker {
        &self.brokers[i].0
    }

    /// Broker `i`'s `ip:port`.
    pub fn broker_addr(&self, i: usize) -> String {
        self.brokers[i].0.local_addr().to_string()
    }

    /// Broker `i`'s fault injector.
    pub fn faults(&self, i: usize) -> &FaultInjector {
        &self.brokers[i].1
    }

    /// Number of brokers.
    pub fn len(&self) -> usize {
        self.brokers.len()
    }

    /// Whether the cluster has no broker.
    pub fn is_empty(&self) -> bool {
        self.brokers.is_empty()
    }

    /// A typed API whose name-server list points at this cluster.
    pub fn client_api(&self) -> ClientApi {
        let remoting = RemotingClient::new(ClientConfig::default());
        remoting.name_servers().update(vec![self.namesrv_addr()]);
        ClientApi::new(remoting, ApiConfig::default())
    }

    /// Shuts down broker `i` (it unregisters from the name server).
    pub async fn stop_broker(&self, i: usize) {
        self.brokers[i].1.clear();
        let _ = self.brokers[i].0.shutdown(Duration::from_secs(5)).await;
    }

    /// Kills broker `i` as `kill -9` would (see `Broker::kill`): no unregistration, its
    /// connections close and its port refuses connections.
    pub async fn kill_broker(&self, i: usize) {
        self.brokers[i].1.clear();
        self.brokers[i].0.kill().await;
    }

    /// Shuts everything down: brokers first, then the name server.
    pub async fn shutdown(self) {
        self.namesrv_faults.clear();
        for (broker, faults) in &self.brokers {
            faults.clear();
            let _ = broker.shutdown(Duration::from_secs(5)).await;
        }
        let _ = self.namesrv.shutdown(Duration::from_secs(5)).await;
    }
}
