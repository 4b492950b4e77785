//! Header and frame codec benchmarks: JSON vs ROCKETMQ headers, the typed SEND_MESSAGE_V2
//! header to and from its struct, frames of 128 B to 4 MiB.

#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use criterion::{
    BenchmarkGroup, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main,
    measurement::WallTime,
};
use mq_benches::java_send_header;
use mq_client_api::header::{
    CommandHeader, SendHeaderRef, SendMessageRequestHeader, SendMessageRequestHeaderV2,
    SendV2Fields,
};
use mq_remoting::{ExtFields, FrameCodec, RemotingCommand, SerializeType};

const CODECS: [(&str, SerializeType); 2] = [
    ("json", SerializeType::Json),
    ("rocketmq", SerializeType::RocketMq),
];

/// A SEND_MESSAGE_V2 request (single-letter keys) of `header` with a body of `body` bytes.
fn send_v2(header: &SendMessageRequestHeader, ty: SerializeType, body: usize) -> RemotingCommand {
    let mut cmd = RemotingCommand::request(310)
        .with_opaque(42)
        .with_serialize_type(ty);
    if body > 0 {
        cmd.body = Bytes::from(vec![b'x'; body]);
    }
    header.encode_v2(&mut cmd.ext_fields);
    cmd
}

fn encoded(cmd: &RemotingCommand) -> Bytes {
    let mut buf = BytesMut::new();
    FrameCodec::default().encode(cmd, &mut buf).unwrap();
    buf.freeze()
}

/// Benchmarks reading `frame` the way a connection does: copied into its read buffer (as a
/// socket read is; the buffer is reused, as the connection's is once the frames cut from it
/// are dropped), then decoded, then `then` on the command.
fn bench_decode<T>(
    g: &mut BenchmarkGroup<'_, WallTime>,
    id: BenchmarkId,
    frame: &Bytes,
    then: impl Fn(RemotingCommand) -> T,
) {
    let codec = FrameCodec::default();
    g.bench_function(id, |b| {
        let mut buf = BytesMut::with_capacity(frame.len());
        b.iter(|| {
            buf.extend_from_slice(frame);
            black_box(then(codec.decode(&mut buf).unwrap().unwrap()));
        });
    });
}

/// The frame codec on a request whose fields are already set.
fn headers(c: &mut Criterion) {
    let codec = FrameCodec::default();
    let mut g = c.benchmark_group("header");
    for (name, ty) in CODECS {
        let cmd = send_v2(&java_send_header(), ty, 0);
        g.bench_function(BenchmarkId::new("encode", name), |b| {
            let mut buf = BytesMut::with_capacity(1024);
            b.iter(|| {
                buf.clear();
                codec.encode(black_box(&cmd), &mut buf).unwrap();
            });
        });
        bench_decode(
            &mut g,
            BenchmarkId::new("decode", name),
            &encoded(&cmd),
            |c| c,
        );
    }
    g.finish();
}

/// The typed SEND_MESSAGE_V2 header as the producer sends it: written from the header struct
/// straight into a frame (`ExtFields::typed`); read from a frame back into the struct, and in
/// place as the broker reads it.
fn typed_send_header(c: &mut Criterion) {
    let codec = FrameCodec::default();
    let header = java_send_header();
    let typed = Arc::new(SendV2Fields(header.clone()));
    let mut g = c.benchmark_group("send_v2_header");
    for (name, ty) in CODECS {
        g.bench_function(BenchmarkId::new("encode", name), |b| {
            let mut buf = BytesMut::with_capacity(1024);
            b.iter(|| {
                buf.clear();
                let cmd = RemotingCommand::request(310)
                    .with_opaque(42)
                    .with_serialize_type(ty)
                    .with_ext_fields(ExtFields::typed(black_box(typed.clone())));
                codec.encode_head(&cmd, &mut buf).unwrap();
            });
        });
        let frame = encoded(&send_v2(&header, ty, 0));
        bench_decode(&mut g, BenchmarkId::new("decode", name), &frame, |c| {
            SendMessageRequestHeaderV2::decode(&c.ext_fields).unwrap()
        });
        // The broker's read: the same fields, their text borrowed from the command.
        bench_decode(
            &mut g,
            BenchmarkId::new("decode_borrowed", name),
            &frame,
            |c| {
                SendHeaderRef::decode(&c.ext_fields, true)
                    .unwrap()
                    .born_timestamp
            },
        );
    }
    g.finish();
}

fn frames(c: &mut Criterion) {
    let codec = FrameCodec::default();
    let mut g = c.benchmark_group("frame");
    for size in [128usize, 1024, 4 * 1024 * 1024] {
        let cmd = send_v2(&java_send_header(), SerializeType::RocketMq, size);
        g.throughput(Throughput::Bytes(size as u64));
        if size > 1 << 20 {
            g.sample_size(20);
        }
        g.bench_function(BenchmarkId::new("encode", size), |b| {
            let mut buf = BytesMut::with_capacity(size + 1024);
            b.iter(|| {
                buf.clear();
                codec.encode(black_box(&cmd), &mut buf).unwrap();
            });
        });
        // Decoding slices the body out of the buffer; only the copy into a fresh buffer is
        // paid per iteration.
        bench_decode(
            &mut g,
            BenchmarkId::new("decode", size),
            &encoded(&cmd),
            |c| c,
        );
    }
    g.finish();
}

criterion_group!(benches, headers, typed_send_header, frames);
criterion_main!(benches);
