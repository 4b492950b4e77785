//! Header and frame codec benchmarks: JSON vs ROCKETMQ headers, frames of 128 B to 4 MiB.

#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mq_remoting::{FrameCodec, RemotingCommand, SerializeType};

/// A SEND_MESSAGE_V2 request as the Java producer sends it (single-letter keys a..m).
fn send_v2(ty: SerializeType, body: usize) -> RemotingCommand {
    let mut cmd = RemotingCommand::request(310)
        .with_opaque(42)
        .with_serialize_type(ty)
        .with_body(vec![b'x'; body]);
    for (k, v) in [
        ("a", "please_rename_unique_group_name"),
        ("b", "TopicTest"),
        ("c", "TBW102"),
        ("d", "4"),
        ("e", "3"),
        ("f", "0"),
        ("g", "1700000000000"),
        ("h", "0"),
        (
            "i",
            "TAGS\u{1}TagA\u{2}WAIT\u{1}true\u{2}UNIQ_KEY\u{1}7F0000010C2A18B4AAC2123456780000\u{2}",
        ),
        ("j", "0"),
        ("k", "false"),
        ("m", "false"),
    ] {
        cmd.ext_fields.insert(k, v);
    }
    cmd
}

fn headers(c: &mut Criterion) {
    let codec = FrameCodec::default();
    let mut g = c.benchmark_group("header");
    for (name, ty) in [
        ("json", SerializeType::Json),
        ("rocketmq", SerializeType::RocketMq),
    ] {
        let cmd = send_v2(ty, 0);
        g.bench_function(BenchmarkId::new("encode", name), |b| {
            let mut buf = BytesMut::with_capacity(1024);
            b.iter(|| {
                buf.clear();
                codec.encode(black_box(&cmd), &mut buf).unwrap();
            });
        });
        let mut encoded = BytesMut::new();
        codec.encode(&cmd, &mut encoded).unwrap();
        let encoded = encoded.freeze();
        g.bench_function(BenchmarkId::new("decode", name), |b| {
            b.iter(|| {
                let mut buf = BytesMut::from(&encoded[..]);
                black_box(codec.decode(&mut buf).unwrap().unwrap());
            });
        });
    }
    g.finish();
}

/// The typed SEND_MESSAGE_V2 header as the producer sends it: written from the header struct
/// into a frame, and read from a frame back into the struct (the broker's side).
fn typed_send_header(c: &mut Criterion) {
    use mq_client_api::header::{
        CommandHeader, SendMessageRequestHeader, SendMessageRequestHeaderV2,
    };
    let codec = FrameCodec::default();
    let header = SendMessageRequestHeader {
        producer_group: "please_rename_unique_group_name".into(),
        topic: "TopicTest".into(),
        default_topic: "TBW102".into(),
        default_topic_queue_nums: 4,
        queue_id: 3,
        sys_flag: 0,
        born_timestamp: 1_700_000_000_000,
        flag: 0,
        properties: Some(
            "TAGS\u{1}TagA\u{2}WAIT\u{1}true\u{2}UNIQ_KEY\u{1}7F0000010C2A18B4AAC2123456780000\u{2}"
                .into(),
        ),
        reconsume_times: Some(0),
        ..Default::default()
    };
    let mut g = c.benchmark_group("send_v2_header");
    for (name, ty) in [
        ("json", SerializeType::Json),
        ("rocketmq", SerializeType::RocketMq),
    ] {
        g.bench_function(BenchmarkId::new("encode", name), |b| {
            let mut buf = BytesMut::with_capacity(1024);
            b.iter(|| {
                buf.clear();
                let mut cmd = RemotingCommand::request(310)
                    .with_opaque(42)
                    .with_serialize_type(ty);
                black_box(&header).encode_v2(&mut cmd.ext_fields);
                codec.encode_head(&cmd, &mut buf).unwrap();
            });
        });
        let mut cmd = RemotingCommand::request(310)
            .with_opaque(42)
            .with_serialize_type(ty);
        header.encode_v2(&mut cmd.ext_fields);
        let mut encoded = BytesMut::new();
        codec.encode(&cmd, &mut encoded).unwrap();
        let encoded = encoded.freeze();
        g.bench_function(BenchmarkId::new("decode", name), |b| {
            b.iter(|| {
                let mut buf = BytesMut::from(&encoded[..]);
                let cmd = codec.decode(&mut buf).unwrap().unwrap();
                black_box(SendMessageRequestHeaderV2::decode(&cmd.ext_fields).unwrap());
            });
        });
    }
    g.finish();
}

fn frames(c: &mut Criterion) {
    let codec = FrameCodec::default();
    let mut g = c.benchmark_group("frame");
    for size in [128usize, 1024, 4 * 1024 * 1024] {
        let cmd = send_v2(SerializeType::RocketMq, size);
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
        let mut encoded = BytesMut::new();
        codec.encode(&cmd, &mut encoded).unwrap();
        let encoded = encoded.freeze();
        g.bench_function(BenchmarkId::new("decode", size), |b| {
            // Decoding slices the body out of the buffer; only the copy into a fresh buffer
            // (as a socket read would make) is paid per iteration.
            b.iter(|| {
                let mut buf = BytesMut::from(&encoded[..]);
                black_box(codec.decode(&mut buf).unwrap().unwrap());
            });
        });
    }
    g.finish();
}

criterion_group!(benches, headers, typed_send_header, frames);
criterion_main!(benches);
