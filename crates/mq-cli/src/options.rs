//! Client options shared by the commands: the header codec, body compression and ACL
//! credentials.

use mq_client_api::message::CompressionType;
use mq_client_instance::ClientConfig;
use mq_producer::ProducerConfig;
use mq_remoting::SerializeType;

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

/// ACL credentials, for clusters with ACL on: every request is then signed.
#[derive(Clone, Debug, Default, clap::Args)]
pub(crate) struct Acl {
    /// ACL access key (with --secret-key).
    #[arg(long, requires = "secret_key")]
    pub(crate) access_key: Option<String>,
    /// ACL secret key (with --access-key).
    #[arg(long, requires = "access_key")]
    pub(crate) secret_key: Option<String>,
}

impl Acl {
    /// The credentials, when given.
    pub(crate) fn credentials(&self) -> Option<mq_client_api::acl::Credentials> {
        let (Some(ak), Some(sk)) = (&self.access_key, &self.secret_key) else {
            return None;
        };
        Some(mq_client_api::acl::Credentials::new(ak, sk))
    }

    /// `config` signing with these credentials, when given.
    pub(crate) fn apply(&self, config: ClientConfig) -> ClientConfig {
        match self.credentials() {
            Some(c) => config.with_credentials(c),
            None => config,
        }
    }

    /// A remoting client that signs with these credentials, when given.
    pub(crate) fn remoting(&self) -> mq_remoting::RemotingClient {
        let mut config = mq_remoting::ClientConfig::default();
        if let Some(c) = self.credentials() {
            config =
                config.with_request_hook(std::sync::Arc::new(mq_client_api::acl::AclSigner(c)));
        }
        mq_remoting::RemotingClient::new(config)
    }
}
