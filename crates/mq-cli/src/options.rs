//! Client options shared by `quickstart` and `bench`: the header codec and body compression.

use mq_client_api::message::CompressionType;
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
