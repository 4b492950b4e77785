//! Body compression (spec §6.4): zlib (4.x and the 5.x default), LZ4 frame and zstd frame, with
//! the 5.x type bits in sysFlag. Type bits 0 mean zlib, so 4.x peers interoperate.

use std::io::{Read, Write};

use super::sys_flag;

/// Default threshold: bodies of at least this many bytes are compressed.
pub const DEFAULT_COMPRESS_OVER: usize = 4096;
/// Default level (Java `rocketmq.message.compressLevel`).
pub const DEFAULT_COMPRESS_LEVEL: i32 = 5;
/// Cap on a decompressed body (the largest frame), so a hostile body cannot exhaust memory.
pub const MAX_DECOMPRESSED: u64 = 64 * 1024 * 1024;

/// A compression codec.
#[derive(Clone, Copy, Debug, Default, Eq, Hash, PartialEq)]
#[non_exhaustive]
pub enum CompressionType {
    /// zlib stream (RFC 1950), what every 4.x client sends.
    #[default]
    Zlib,
    /// LZ4 frame format (5.x).
    Lz4,
    /// zstd frame (5.x).
    Zstd,
}

impl CompressionType {
    /// The sysFlag type bits; zlib is sent without type bits so that 4.x consumers read it.
    pub const fn type_bits(self) -> i32 {
        match self {
            Self::Zlib => 0,
            Self::Lz4 => 0x100,
            Self::Zstd => 0x200,
        }
    }

    /// The codec a sysFlag names (type 0 and 3 are zlib).
    ///
    /// # Errors
    /// [`CompressionError::UnknownType`] for other type values.
    pub fn from_sys_flag(flag: i32) -> Result<Self, CompressionError> {
        match (flag & sys_flag::COMPRESSION_TYPE_MASK) >> 8 {
            0 | 3 => Ok(Self::Zlib),
            1 => Ok(Self::Lz4),
            2 => Ok(Self::Zstd),
            other => Err(CompressionError::UnknownType(other)),
        }
    }

    /// Compresses `data` at `level`.
    ///
    /// # Errors
    /// [`CompressionError::Io`] when the codec fails.
    pub fn compress(self, data: &[u8], level: i32) -> Result<Vec<u8>, CompressionError> {
        let io = |e: std::io::Error| CompressionError::Io(e.to_string());
        match self {
            Self::Zlib => {
                let level = u32::try_from(level.clamp(0, 9)).unwrap_or(5);
                let mut z = flate2::write::ZlibEncoder::new(
                    Vec::with_capacity(data.len() / 2),
                    flate2::Compression::new(level),
                );
                z.write_all(data).map_err(io)?;
                z.finish().map_err(io)
            }
            Self::Lz4 => {
                let mut enc =
                    lz4_flex::frame::FrameEncoder::new(Vec::with_capacity(data.len() / 2));
                enc.write_all(data).map_err(io)?;
                enc.finish()
                    .map_err(|e| CompressionError::Io(e.to_string()))
            }
            Self::Zstd => zstd::encode_all(data, level).map_err(io),
        }
    }

    /// Decompresses `data`, refusing output over [`MAX_DECOMPRESSED`].
    ///
    /// # Errors
    /// [`CompressionError`] when the data is not a valid stream of this codec or too large.
    pub fn decompress(self, data: &[u8]) -> Result<Vec<u8>, CompressionError> {
        let mut out = Vec::with_capacity(data.len() * 2);
        let read = match self {
            Self::Zlib => flate2::read::ZlibDecoder::new(data)
                .take(MAX_DECOMPRESSED + 1)
                .read_to_end(&mut out),
            Self::Lz4 => lz4_flex::frame::FrameDecoder::new(data)
                .take(MAX_DECOMPRESSED + 1)
                .read_to_end(&mut out),
            Self::Zstd => match zstd::stream::read::Decoder::new(data) {
                Ok(d) => d.take(MAX_DECOMPRESSED + 1).read_to_end(&mut out),
                Err(e) => Err(e),
            },
        };
        read.map_err(|e| CompressionError::Io(e.to_string()))?;
        if out.len() as u64 > MAX_DECOMPRESSED {
            return Err(CompressionError::TooLarge);
        }
        Ok(out)
    }
}

/// Decompresses a stored body according to its sysFlag (no-op when not compressed).
///
/// # Errors
/// As for [`CompressionType::decompress`].
pub fn decompress_for(
    sys_flag_value: i32,
    body: &[u8],
) -> Result<Option<Vec<u8>>, CompressionError> {
    if sys_flag_value & sys_flag::COMPRESSED == 0 {
        return Ok(None);
    }
    CompressionType::from_sys_flag(sys_flag_value)?
        .decompress(body)
        .map(Some)
}

/// A producer's compression policy: codec, level and threshold.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct Compressor {
    /// Codec.
    pub kind: CompressionType,
    /// Level.
    pub level: i32,
    /// Bodies of at least this many bytes are compressed.
    pub threshold: usize,
}

impl Default for Compressor {
    fn default() -> Self {
        Self {
            kind: CompressionType::Zlib,
            level: DEFAULT_COMPRESS_LEVEL,
            threshold: DEFAULT_COMPRESS_OVER,
        }
    }
}

impl Compressor {
    /// Compresses a single message's body when it reaches the threshold; batches are never
    /// compressed. Returns the compressed body and the sysFlag bits to add, or `None` to send
    /// the body as it is (also when compression fails, as Java does).
    pub fn maybe_compress(&self, body: &[u8], is_batch: bool) -> Option<(Vec<u8>, i32)> {
        if is_batch || body.len() < self.threshold {
            return None;
        }
        self.kind
            .compress(body, self.level)
            .ok()
            .map(|c| (c, sys_flag::COMPRESSED | self.kind.type_bits()))
    }
}

/// Compression failed.
#[derive(Clone, Debug, Eq, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum CompressionError {
    /// The sysFlag names a type no version defines.
    #[error("unknown compression type {0}")]
    UnknownType(i32),
    /// The codec failed (corrupt data).
    #[error("compression codec failed: {0}")]
    Io(String),
    /// The decompressed body would exceed the limit.
    #[error("decompressed body exceeds {MAX_DECOMPRESSED} bytes")]
    TooLarge,
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn zlib_output_is_a_zlib_stream() {
        let c = CompressionType::Zlib.compress(&[b'a'; 5000], 5).unwrap();
        // RFC 1950 header: CMF 0x78, and (CMF*256 + FLG) divisible by 31.
        assert_eq!(c[0], 0x78);
        assert_eq!((u16::from(c[0]) * 256 + u16::from(c[1])) % 31, 0);
    }

    #[test]
    fn threshold_rule_and_batches() {
        let comp = Compressor::default();
        assert!(comp.maybe_compress(&[1u8; 4095], false).is_none());
        let (body, bits) = comp.maybe_compress(&[1u8; 4096], false).unwrap();
        assert_eq!(bits, sys_flag::COMPRESSED);
        assert_eq!(
            decompress_for(bits, &body).unwrap().unwrap(),
            vec![1u8; 4096]
        );
        assert!(comp.maybe_compress(&[1u8; 100_000], true).is_none());
        let lz4 = Compressor {
            kind: CompressionType::Lz4,
            ..Compressor::default()
        };
        let (_, bits) = lz4.maybe_compress(&[1u8; 5000], false).unwrap();
        assert_eq!(bits, 0x101);
    }

    #[test]
    fn type_bits_select_the_codec() {
        assert_eq!(
            CompressionType::from_sys_flag(0x1),
            Ok(CompressionType::Zlib)
        );
        assert_eq!(
            CompressionType::from_sys_flag(0x301),
            Ok(CompressionType::Zlib)
        );
        assert_eq!(
            CompressionType::from_sys_flag(0x101),
            Ok(CompressionType::Lz4)
        );
        assert_eq!(
            CompressionType::from_sys_flag(0x201),
            Ok(CompressionType::Zstd)
        );
        assert_eq!(
            CompressionType::from_sys_flag(0x701),
            Err(CompressionError::UnknownType(7))
        );
    }

    #[test]
    fn corrupt_data_is_an_error() {
        for kind in [
            CompressionType::Zlib,
            CompressionType::Lz4,
            CompressionType::Zstd,
        ] {
            assert!(
                kind.decompress(b"definitely not compressed").is_err(),
                "{kind:?}"
            );
        }
    }

    proptest! {
        #[test]
        fn every_codec_round_trips(data in proptest::collection::vec(any::<u8>(), 0..4096), level in 1i32..9) {
            for kind in [CompressionType::Zlib, CompressionType::Lz4, CompressionType::Zstd] {
                let c = kind.compress(&data, level).unwrap();
                prop_assert_eq!(kind.decompress(&c).unwrap(), data.clone());
            }
        }
    }
}
