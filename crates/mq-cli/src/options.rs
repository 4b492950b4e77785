//! Client options shared by the commands: the header codec, body compression, ACL credentials
//! and TLS.

use mq_client_api::message::CompressionType;
use mq_client_instance::ClientConfig;
use mq_producer::ProducerConfig;
use mq_remoting::{ClientTls, SerializeType};

/// Header codec.
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq, clap::ValueEnum)]
pub(crate) enum Codec {
    /// JSON headers.
    #[default]
    Json,
    /// ROCKETMQ binary headers.
    Rocketmq,
}

impl Codec {
    /// The wire serialize type.
    pub(crate) fn serialize_type(self) -> SerializeType {
        match self {
            Self::Json => SerializeType::Json,
            Self::Rocketmq => SerializeType::RocketMq,
        }
    }
}

/// Body compression of the producer.
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq, clap::ValueEnum)]
pub(crate) enum Compress {
    /// Never compress.
    #[default]
    None,
    /// zlib (4.x compatible).
    Zlib,
    /// LZ4 frame (5.x).
    Lz4,
    /// zstd (5.x).
    Zstd,
}

impl Compress {
    /// `config` compressing bodies of `over` bytes and more with this codec (or never).
    pub(crate) fn apply(self, config: ProducerConfig, over: usize) -> ProducerConfig {
        let (kind, level) = match self {
            Self::None => return config.with_compress_over(usize::MAX),
            Self::Zlib => (CompressionType::Zlib, 5),
            Self::Lz4 => (CompressionType::Lz4, 5),
            Self::Zstd => (CompressionType::Zstd, 3),
        };
        config
            .with_compression(kind, level)
            .with_compress_over(over)
    }
}

/// How a client secures its connections: ACL credentials, for clusters with ACL on (every
/// request is then signed), and TLS, for clusters that serve it.
#[derive(Clone, Debug, Default, clap::Args)]
pub(crate) struct Security {
    /// ACL access key (with --secret-key).
    #[arg(long, requires = "secret_key")]
    pub(crate) access_key: Option<String>,
    /// ACL secret key (with --access-key).
    #[arg(long, requires = "access_key")]
    pub(crate) secret_key: Option<String>,
    /// Speak TLS, trusting the certificates in this PEM file as roots.
    #[arg(long, conflicts_with = "tls_insecure")]
    pub(crate) tls_ca: Option<std::path::PathBuf>,
    /// Speak TLS without checking the server's certificate (tests only: anyone on the path can
    /// pose as the server).
    #[arg(long)]
    pub(crate) tls_insecure: bool,
    /// The name the server's certificate must carry (default: the host dialled).
    #[arg(long, requires = "tls_ca")]
    pub(crate) tls_server_name: Option<String>,
}

impl Security {
    /// The credentials, when given.
    pub(crate) fn credentials(&self) -> Option<mq_client_api::acl::Credentials> {
        let (Some(ak), Some(sk)) = (&self.access_key, &self.secret_key) else {
            return None;
        };
        Some(mq_client_api::acl::Credentials::new(ak, sk))
    }

    /// The TLS settings, when TLS is asked for.
    ///
    /// # Errors
    /// An unreadable or invalid root file, or a bad server name.
    pub(crate) fn tls(&self) -> Result<Option<ClientTls>, String> {
        let tls = if self.tls_insecure {
            ClientTls::dangerous_no_verify()
        } else if let Some(ca) = &self.tls_ca {
            ClientTls::with_roots_pem_file(ca)
        } else {
            return Ok(None);
        };
        let mut tls = tls.map_err(|e| e.to_string())?;
        if let Some(name) = &self.tls_server_name {
            tls = tls.with_server_name(name).map_err(|e| e.to_string())?;
        }
        Ok(Some(tls))
    }

    /// `config` signing with the credentials and speaking TLS, as given.
    ///
    /// # Errors
    /// As for [`Security::tls`].
    pub(crate) fn apply(&self, mut config: ClientConfig) -> Result<ClientConfig, String> {
        if let Some(c) = self.credentials() {
            config = config.with_credentials(c);
        }
        if let Some(tls) = self.tls()? {
            config = config.with_tls(tls);
        }
        Ok(config)
    }

    /// A remoting client that signs and speaks TLS, as given.
    ///
    /// # Errors
    /// As for [`Security::tls`].
    pub(crate) fn remoting(&self) -> Result<mq_remoting::RemotingClient, String> {
        let config = self.apply(ClientConfig::default())?;
        Ok(mq_remoting::RemotingClient::new(config.remoting()))
    }
}

/// TLS of a server (`mq serve`, `mq namesrv`, `mq broker`).
#[derive(Clone, Debug, Default, clap::Args)]
pub(crate) struct ServerTlsArgs {
    /// Serve TLS with this certificate chain (PEM, leaf first; with --tls-key).
    #[arg(long, requires = "tls_key")]
    pub(crate) tls_cert: Option<std::path::PathBuf>,
    /// The certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, requires = "tls_cert")]
    pub(crate) tls_key: Option<std::path::PathBuf>,
    /// disabled (plain only), permissive (TLS and plain, told apart by the first byte) or
    /// enforcing (TLS only), as Java's `tls.server.mode`.
    #[arg(long, default_value = "permissive", requires = "tls_cert")]
    pub(crate) tls_mode: mq_remoting::TlsMode,
    /// Roots a broker trusts when it registers with name servers over TLS (default: its own
    /// certificate, enough when one self-signed certificate serves the whole cluster).
    #[arg(long, requires = "tls_cert")]
    pub(crate) tls_ca: Option<std::path::PathBuf>,
}

impl ServerTlsArgs {
    /// The server's TLS, when a certificate is given.
    ///
    /// # Errors
    /// Unreadable or invalid certificate or key.
    pub(crate) fn server(&self) -> Result<Option<mq_remoting::ServerTls>, String> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        mq_remoting::ServerTls::from_pem_files(cert, key)
            .map(|tls| Some(tls.with_mode(self.tls_mode)))
            .map_err(|e| format!("TLS: {e}"))
    }

    /// How a broker registers with its name servers: over TLS when it serves TLS (unless
    /// disabled), trusting `--tls-ca` or its own certificate.
    ///
    /// # Errors
    /// An unreadable or invalid root file.
    pub(crate) fn registration(&self) -> Result<Option<ClientTls>, String> {
        if self.tls_mode == mq_remoting::TlsMode::Disabled {
            return Ok(None);
        }
        let Some(roots) = self.tls_ca.as_ref().or(self.tls_cert.as_ref()) else {
            return Ok(None);
        };
        ClientTls::with_roots_pem_file(roots)
            .map(Some)
            .map_err(|e| format!("TLS: {e}"))
    }
}
