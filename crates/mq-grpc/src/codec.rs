//! The codec of the generated client and server: prost's, except that a message to send gets
//! its room in the frame's buffer before it is written.
//!
//! Prost's own encoder writes a message into a buffer of 8 KiB that grows as it fills: a
//! request of many messages (a batch of 256 KiB) was copied into each larger buffer in turn,
//! about 2,000 instructions a batched message. Its length is known before it is written, so the
//! buffer grows once.

use std::marker::PhantomData;

use tonic::Status;
use tonic::codec::{Codec, EncodeBuf, Encoder};
use tonic_prost::ProstDecoder;

/// Prost's codec, with [`SizedEncoder`] (set as the codec of the generated code).
#[derive(Debug, Clone)]
pub struct SizedCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for SizedCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for SizedCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = SizedEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        SizedEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::default()
    }
}

/// Writes a message after making room for all of it.
#[derive(Debug, Clone)]
pub struct SizedEncoder<T>(PhantomData<T>);

impl<T: prost::Message> Encoder for SizedEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.reserve(item.encoded_len());
        // The buffer grows as it is written, so there is always room (what `encode` would
        // check, with a second pass over the message for its length).
        item.encode_raw(buf);
        Ok(())
    }
}
