//! Runs one header codec step in a loop, for instruction counts under callgrind, which are
//! stable on a noisy machine where wall-clock benchmarks are not:
//!
//! ```text
//! cargo build --release -p mq-benches --example header_loop
//! valgrind --tool=callgrind target/release/examples/header_loop request 1000
//! valgrind --tool=callgrind target/release/examples/header_loop request 11000
//! ```
//!
//! The difference of the two totals over 10 000 is the cost of one step. A third argument,
//! `rocketmq`, runs the step with ROCKETMQ headers instead of JSON ones. Steps: `request`
//! (the broker reads a SEND_MESSAGE_V2 request frame and its header, in place), `response`
//! (the producer reads a send response frame and its header), `encode` (the producer writes
//! a SEND_MESSAGE_V2 request header from its typed fields), `encode_owned` (the same fields
//! from an owned map), `answer` (the broker writes a send's answer header).

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::hint::black_box;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use mq_benches::java_send_header;
use mq_client_api::header::{
    CommandHeader, SendHeaderRef, SendMessageResponseHeader, SendV2Fields,
};
use mq_remoting::{ExtFields, FieldSink, FrameCodec, RemotingCommand, SerializeType, TypedFields};

/// The frame of `cmd`, header of type `ty`, no body.
fn frame(mut cmd: RemotingCommand, ty: SerializeType) -> Bytes {
    cmd = cmd.with_opaque(42).with_serialize_type(ty);
    let mut buf = BytesMut::new();
    FrameCodec::default().encode(&cmd, &mut buf).unwrap();
    buf.freeze()
}

/// The fields our broker answers a send with, written as its typed answer writes them.
#[derive(Debug)]
struct SendAnswer {
    msg_id: String,
    queue_id: i32,
    offset: i64,
}

impl TypedFields for SendAnswer {
    fn write_fields(&self, sink: &mut dyn FieldSink) {
        sink.str_field("MSG_REGION", "DefaultRegion");
        sink.str_field("TRACE_ON", "true");
        sink.str_field("msgId", &self.msg_id);
        sink.int_field("queueId", i64::from(self.queue_id));
        sink.int_field("queueOffset", self.offset);
    }

    fn text_len_hint(&self) -> usize {
        96 + self.msg_id.len()
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let step = args.next().unwrap_or_default();
    let n: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(10_000);
    let ty = match args.next().as_deref() {
        Some("rocketmq") => SerializeType::RocketMq,
        _ => SerializeType::Json,
    };
    let codec = FrameCodec::default();
    let frame = match step.as_str() {
        "request" => {
            let mut cmd = RemotingCommand::request(310);
            java_send_header().encode_v2(&mut cmd.ext_fields);
            frame(cmd, ty)
        }
        "response" => {
            // The fields our broker answers a send with.
            let mut cmd = RemotingCommand::request(0);
            cmd.flag = 1;
            for (k, v) in [
                ("MSG_REGION", "DefaultRegion"),
                ("TRACE_ON", "true"),
                ("msgId", "7F00000100002A9F00000000001E8480"),
                ("queueId", "3"),
                ("queueOffset", "123456"),
            ] {
                cmd.ext_fields.insert(k, v);
            }
            frame(cmd, ty)
        }
        "encode" => {
            let typed: Arc<dyn TypedFields> = Arc::new(SendV2Fields(java_send_header()));
            let mut buf = BytesMut::with_capacity(1024);
            for _ in 0..n {
                buf.clear();
                let cmd = RemotingCommand::request(310)
                    .with_opaque(42)
                    .with_serialize_type(ty)
                    .with_ext_fields(ExtFields::typed(black_box(Arc::clone(&typed))));
                codec.encode_head(&cmd, &mut buf).unwrap();
            }
            println!("{} bytes", buf.len());
            return;
        }
        "encode_owned" => {
            // The same fields as an owned map (V1 headers, every other request).
            let mut cmd = RemotingCommand::request(310)
                .with_opaque(42)
                .with_serialize_type(ty);
            java_send_header().encode_v2(&mut cmd.ext_fields);
            let mut buf = BytesMut::with_capacity(1024);
            for _ in 0..n {
                buf.clear();
                codec.encode_head(black_box(&cmd), &mut buf).unwrap();
            }
            println!("{} bytes", buf.len());
            return;
        }
        "answer" => {
            let mut buf = BytesMut::with_capacity(1024);
            for i in 0..n {
                buf.clear();
                let fields = Arc::new(SendAnswer {
                    msg_id: "7F00000100002A9F00000000001E8480".into(),
                    queue_id: 3,
                    offset: 123_456 + i as i64,
                });
                let mut cmd = RemotingCommand::response(0, None)
                    .with_opaque(42)
                    .with_serialize_type(ty)
                    .with_ext_fields(ExtFields::typed(fields));
                cmd.flag = 1;
                codec.encode_head(&cmd, &mut buf).unwrap();
            }
            println!("{} bytes", buf.len());
            return;
        }
        _ => {
            eprintln!(
                "usage: header_loop request|response|encode|encode_owned|answer [count [json|rocketmq]]"
            );
            std::process::exit(2);
        }
    };
    let mut buf = BytesMut::with_capacity(frame.len());
    let mut sum = 0i64;
    for _ in 0..n {
        // As a connection reads: copied into its buffer, cut out, decoded.
        buf.extend_from_slice(&frame);
        let cmd = codec.decode(&mut buf).unwrap().unwrap();
        sum += if step == "request" {
            SendHeaderRef::decode(&cmd.ext_fields, true)
                .unwrap()
                .born_timestamp
        } else {
            SendMessageResponseHeader::decode(&cmd.ext_fields)
                .unwrap()
                .queue_offset
        };
    }
    println!("{sum}");
}
