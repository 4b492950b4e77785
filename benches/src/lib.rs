//! Benchmark support (not a library layer): the raw framed TCP echo baseline that every
//! throughput figure is compared with, and a matching driver for our remoting stack.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, BytesMut};
use mq_remoting::{
    ClientConfig, RemotingClient, RemotingCommand, RemotingServer, ServerConfig, processor_fn,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// Request code our echo server answers.
pub const ECHO_CODE: i32 = 1000;

/// A raw echo server: reads `u32` length-prefixed frames and writes each back unchanged.
/// Returns its address; the accept loop lives as long as the runtime.
pub async fn raw_echo_server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            stream.set_nodelay(true).unwrap();
            tokio::spawn(async move {
                let (mut r, mut w) = stream.into_split();
                let mut buf = BytesMut::with_capacity(64 * 1024);
                loop {
                    if r.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                        return;
                    }
                    // Echo every complete frame in the buffer with one write.
                    let mut end = 0;
                    while buf.len() - end >= 4 {
                        let len =
                            u32::from_be_bytes(buf[end..end + 4].try_into().unwrap()) as usize;
                        if buf.len() - end < 4 + len {
                            break;
                        }
                        end += 4 + len;
                    }
                    if end > 0 {
                        let out = buf.split_to(end);
                        if w.write_all(&out).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

/// Sends `count` frames of `size` payload bytes over one connection to a raw echo server,
/// keeping `depth` in flight, and returns the time taken.
///
/// The run is a task of the runtime, as the sends it is compared with are: awaited from
/// `block_on`, every answer would also wake the blocked thread. With one frame in flight it
/// writes and reads in turn, one task; deeper, a task of its own writes as answers free room.
pub async fn raw_echo_run(
    addr: std::net::SocketAddr,
    size: usize,
    depth: usize,
    count: u64,
) -> Duration {
    tokio::spawn(echo_run(addr, size, depth, count))
        .await
        .unwrap()
}

async fn echo_run(addr: std::net::SocketAddr, size: usize, depth: usize, count: u64) -> Duration {
    let stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let mut frame = BytesMut::with_capacity(4 + size);
    frame.put_u32(size as u32);
    frame.put_bytes(7, size);
    let frame = frame.freeze();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    if depth <= 1 {
        let (mut r, mut w) = stream.into_split();
        let started = Instant::now();
        for _ in 0..count {
            w.write_all(&frame).await.unwrap();
            while buf.len() < frame.len() {
                if r.read_buf(&mut buf).await.unwrap() == 0 {
                    panic!("echo server closed");
                }
            }
            buf.advance(frame.len());
        }
        return started.elapsed();
    }
    let (mut r, mut w) = stream.into_split();
    let permits = Arc::new(Semaphore::new(depth));
    let started = Instant::now();
    let p = Arc::clone(&permits);
    let writer = tokio::spawn(async move {
        for _ in 0..count {
            p.acquire().await.unwrap().forget();
            w.write_all(&frame).await.unwrap();
        }
        w
    });
    let mut got = 0;
    while got < count {
        while buf.len() >= 4 {
            let len = u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
            if buf.len() < 4 + len {
                break;
            }
            buf.advance(4 + len);
            got += 1;
            permits.add_permits(1);
        }
        if got < count && r.read_buf(&mut buf).await.unwrap() == 0 {
            panic!("echo server closed");
        }
    }
    let elapsed = started.elapsed();
    drop(writer.await.unwrap());
    elapsed
}

/// Runs `count` operations on `depth` concurrent tasks (`lane(n)` performs `n` of them, one
/// after another) and returns the time taken.
pub async fn spread<F, Fut>(count: u64, depth: usize, lane: F) -> Duration
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let depth = depth.max(1) as u64;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..depth {
        tasks.spawn(lane(count / depth + u64::from(i < count % depth)));
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    started.elapsed()
}

/// An mq-remoting server answering [`ECHO_CODE`] with the request's body.
pub async fn remoting_echo_server() -> RemotingServer {
    let server = RemotingServer::bind(ServerConfig::default()).await.unwrap();
    server.register_processor(
        ECHO_CODE,
        processor_fn(|_ctx, req: RemotingCommand| async move {
            Some(RemotingCommand::response_to(&req, 0, None).with_body(req.body.clone()))
        }),
    );
    server
}

/// A client for [`remoting_echo_server`].
pub fn remoting_client() -> RemotingClient {
    RemotingClient::new(ClientConfig::default())
}

/// Sends `count` echo requests of `size` body bytes with `depth` in flight over one
/// connection and returns the time taken.
pub async fn remoting_run(
    client: &RemotingClient,
    addr: &str,
    size: usize,
    depth: usize,
    count: u64,
) -> Duration {
    let body = bytes::Bytes::from(vec![7u8; size]);
    client.connect(addr, Duration::from_secs(5)).await.unwrap();
    spread(count, depth, |n| {
        let (client, addr, body) = (client.clone(), addr.to_owned(), body.clone());
        async move {
            for _ in 0..n {
                let req = RemotingCommand::request(ECHO_CODE).with_body(body.clone());
                let resp = client
                    .invoke(&addr, req, Duration::from_secs(30))
                    .await
                    .unwrap();
                assert_eq!(resp.body.len(), body.len());
            }
        }
    })
    .await
}

/// The send header as the Java producer fills it: what the header benchmarks encode and
/// decode.
pub fn java_send_header() -> mq_client_api::header::SendMessageRequestHeader {
    mq_client_api::header::SendMessageRequestHeader {
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
    }
}
