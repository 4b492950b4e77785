//! Server behaviour against raw sockets: bad input closes only the offending connection,
//! oneway requests are never answered, shutdown drains.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use mq_remoting::{
    FrameCodec, RemotingCommand, RemotingServer, SerializeType, ServerConfig, processor_fn,
    sys_code,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc};

use super::{ECHO, client, echo_server};

const LONG: Duration = Duration::from_secs(60);

async fn send_frame(stream: &mut TcpStream, cmd: &RemotingCommand) {
    let mut buf = BytesMut::new();
    FrameCodec::default().encode(cmd, &mut buf).unwrap();
    stream.write_all(&buf).await.unwrap();
}

async fn read_frame(stream: &mut TcpStream, buf: &mut BytesMut) -> Option<RemotingCommand> {
    loop {
        if let Some(cmd) = FrameCodec::default().decode(buf).unwrap() {
            return Some(cmd);
        }
        if stream.read_buf(buf).await.unwrap() == 0 {
            return None;
        }
    }
}

/// Reads until the server closes the connection; returns the bytes it sent first.
async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    // A reset instead of an orderly close is also a close.
    let _ = stream.read_to_end(&mut out).await;
    out
}

async fn assert_still_serving(server: &RemotingServer) {
    let resp = client()
        .invoke(
            &server.local_addr().to_string(),
            RemotingCommand::request(ECHO),
            LONG,
        )
        .await
        .unwrap();
    assert_eq!(resp.code, sys_code::SUCCESS);
}

#[tokio::test]
async fn oversize_length_prefix_closes_only_that_connection() {
    let server = echo_server().await;
    let mut healthy = TcpStream::connect(server.local_addr()).await.unwrap();
    let mut bad = TcpStream::connect(server.local_addr()).await.unwrap();
    // Announces a 2 GiB frame; the server must refuse it from the prefix alone.
    bad.write_all(&[0x7F, 0xFF, 0xFF, 0xFF]).await.unwrap();
    assert!(read_to_close(&mut bad).await.is_empty());
    let mut buf = BytesMut::new();
    send_frame(&mut healthy, &RemotingCommand::request(ECHO).with_opaque(5)).await;
    let resp = read_frame(&mut healthy, &mut buf).await.unwrap();
    assert_eq!((resp.opaque, resp.code), (5, sys_code::SUCCESS));
    assert_still_serving(&server).await;
}

#[tokio::test]
async fn random_garbage_never_takes_the_server_down() {
    let server = echo_server().await;
    let mut rng = fastrand_seed();
    for round in 0..50 {
        let mut s = TcpStream::connect(server.local_addr()).await.unwrap();
        let len = 1 + (rng() % 512) as usize;
        let mut garbage: Vec<u8> = (0..len).map(|_| rng() as u8).collect();
        if round % 2 == 0 {
            // A plausible length prefix so the garbage reaches the header parsers.
            let body = (garbage.len() - 4.min(garbage.len())) as u32;
            if garbage.len() >= 8 {
                garbage[..4].copy_from_slice(&body.to_be_bytes());
                garbage[4] = (round / 2 % 2) as u8;
                garbage[5] = 0;
            }
        }
        s.write_all(&garbage).await.unwrap();
        // Either the server closes on the garbage, or it waits for more; both are fine as long
        // as it keeps serving everybody else.
        drop(s);
    }
    assert_still_serving(&server).await;
}

/// A tiny deterministic generator (xorshift) so failures reproduce.
fn fastrand_seed() -> impl FnMut() -> u64 {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}

#[tokio::test]
async fn malformed_header_closes_the_connection() {
    let server = echo_server().await;
    let mut s = TcpStream::connect(server.local_addr()).await.unwrap();
    let json = b"{not json";
    let mut frame = Vec::new();
    frame.extend_from_slice(&(4 + json.len() as u32).to_be_bytes());
    frame.extend_from_slice(&(json.len() as u32).to_be_bytes());
    frame.extend_from_slice(json);
    s.write_all(&frame).await.unwrap();
    assert!(read_to_close(&mut s).await.is_empty());
    assert_still_serving(&server).await;
}

#[tokio::test]
async fn oneway_requests_are_never_answered() {
    let server = echo_server().await;
    let mut s = TcpStream::connect(server.local_addr()).await.unwrap();
    let mut oneway = RemotingCommand::request(ECHO).with_opaque(1);
    oneway.mark_oneway();
    send_frame(&mut s, &oneway).await;
    // Unknown code, oneway: Java 4.5.1 would answer NOT_SUPPORTED; we stay silent.
    let mut unknown = RemotingCommand::request(4242).with_opaque(2);
    unknown.mark_oneway();
    send_frame(&mut s, &unknown).await;
    send_frame(&mut s, &RemotingCommand::request(ECHO).with_opaque(3)).await;
    let mut buf = BytesMut::new();
    let first = read_frame(&mut s, &mut buf).await.unwrap();
    assert_eq!(
        first.opaque, 3,
        "the first frame back answers the normal request"
    );
    assert!(buf.is_empty());
}

#[tokio::test]
async fn responses_mirror_the_request_serialize_type_unless_configured() {
    let server = echo_server().await;
    let mut s = TcpStream::connect(server.local_addr()).await.unwrap();
    let mut buf = BytesMut::new();
    for ty in [SerializeType::RocketMq, SerializeType::Json] {
        send_frame(
            &mut s,
            &RemotingCommand::request(ECHO).with_serialize_type(ty),
        )
        .await;
        assert_eq!(
            read_frame(&mut s, &mut buf).await.unwrap().serialize_type,
            ty
        );
    }
    let fixed =
        RemotingServer::bind(ServerConfig::default().with_response_serialize(SerializeType::Json))
            .await
            .unwrap();
    fixed.register_processor(ECHO, super::echo());
    let mut s = TcpStream::connect(fixed.local_addr()).await.unwrap();
    send_frame(
        &mut s,
        &RemotingCommand::request(ECHO).with_serialize_type(SerializeType::RocketMq),
    )
    .await;
    assert_eq!(
        read_frame(&mut s, &mut BytesMut::new())
            .await
            .unwrap()
            .serialize_type,
        SerializeType::Json
    );
}

#[tokio::test]
async fn panicking_processor_is_answered_with_system_error() {
    let server = echo_server().await;
    server.register_processor(
        77,
        processor_fn(|_ctx, req: RemotingCommand| async move {
            if req.code == 77 {
                panic!("processor bug");
            }
            None
        }),
    );
    let resp = client()
        .invoke(
            &server.local_addr().to_string(),
            RemotingCommand::request(77),
            LONG,
        )
        .await
        .unwrap();
    assert_eq!(resp.code, sys_code::SYSTEM_ERROR);
    assert_still_serving(&server).await;
}

#[tokio::test]
async fn saturated_server_answers_system_busy() {
    let server = RemotingServer::bind(ServerConfig::default().with_max_concurrent_requests(1))
        .await
        .unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let release = Arc::new(Notify::new());
    let r = Arc::clone(&release);
    server.register_processor(
        ECHO,
        processor_fn(move |_ctx, req: RemotingCommand| {
            let tx = tx.clone();
            let r = Arc::clone(&r);
            async move {
                tx.send(()).unwrap();
                r.notified().await;
                Some(RemotingCommand::response_to(&req, 0, None))
            }
        }),
    );
    let addr = server.local_addr().to_string();
    let c = client();
    let (c2, a2) = (c.clone(), addr.clone());
    let held =
        tokio::spawn(async move { c2.invoke(&a2, RemotingCommand::request(ECHO), LONG).await });
    rx.recv().await.unwrap();
    let busy = c
        .invoke(&addr, RemotingCommand::request(ECHO), LONG)
        .await
        .unwrap();
    assert_eq!(busy.code, sys_code::SYSTEM_BUSY);
    assert!(busy.remark.unwrap().starts_with("[OVERLOAD]"));
    release.notify_one();
    assert_eq!(held.await.unwrap().unwrap().code, 0);
}

#[tokio::test]
async fn graceful_shutdown_lets_in_flight_requests_finish() {
    let server = RemotingServer::bind(ServerConfig::default()).await.unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let release = Arc::new(Notify::new());
    let r = Arc::clone(&release);
    server.register_processor(
        ECHO,
        processor_fn(move |_ctx, req: RemotingCommand| {
            let tx = tx.clone();
            let r = Arc::clone(&r);
            async move {
                tx.send(()).unwrap();
                r.notified().await;
                Some(RemotingCommand::response_to(&req, 0, None).with_remark("finished"))
            }
        }),
    );
    let addr = server.local_addr().to_string();
    let c = client();
    let a = addr.clone();
    let call =
        tokio::spawn(async move { c.invoke(&a, RemotingCommand::request(ECHO), LONG).await });
    rx.recv().await.unwrap();
    let shutdown = async {
        let report = server.shutdown(LONG).await;
        assert!(report.completed);
        assert_eq!(report.unfinished_tasks, 0);
    };
    let finish = async {
        release.notify_one();
    };
    tokio::join!(shutdown, finish);
    let resp = call.await.unwrap().unwrap();
    assert_eq!(resp.remark.as_deref(), Some("finished"));
    // No longer accepting.
    assert!(TcpStream::connect(&addr).await.is_err());
}

struct BusyFor(i32);

impl mq_remoting::RpcHook for BusyFor {
    fn before_request(
        &self,
        _ctx: &mq_remoting::RequestContext,
        request: &RemotingCommand,
    ) -> mq_remoting::BoxFuture<'static, mq_remoting::HookAction> {
        let action = if request.code == self.0 {
            mq_remoting::HookAction::Respond(RemotingCommand::response(sys_code::SYSTEM_BUSY, None))
        } else if request.code == self.0 + 1 {
            mq_remoting::HookAction::CloseConnection
        } else {
            mq_remoting::HookAction::Continue
        };
        Box::pin(async move { action })
    }
}

#[tokio::test]
async fn rpc_hooks_can_answer_or_close_before_the_processor() {
    hooks_answer_or_close(false).await;
}

/// Ordered requests (a broker's sends) pass the hooks too.
#[tokio::test]
async fn rpc_hooks_can_answer_or_close_before_an_ordered_processor() {
    hooks_answer_or_close(true).await;
}

async fn hooks_answer_or_close(ordered: bool) {
    let server = echo_server().await;
    server.register_processor(ECHO + 1, super::echo());
    if ordered {
        for code in [ECHO, ECHO + 1, 4242] {
            server.set_ordered(code);
        }
    }
    server.add_rpc_hook(Arc::new(BusyFor(ECHO)));
    let addr = server.local_addr().to_string();
    let c = client();
    let resp = c
        .invoke(&addr, RemotingCommand::request(ECHO), LONG)
        .await
        .unwrap();
    assert_eq!(resp.code, sys_code::SYSTEM_BUSY);
    let err = c
        .invoke(&addr, RemotingCommand::request(ECHO + 1), LONG)
        .await
        .unwrap_err();
    assert!(
        matches!(err, mq_remoting::RemotingError::ConnectionClosed { .. }),
        "{err:?}"
    );
    // Other codes pass through, on a fresh connection.
    let resp = c
        .invoke(&addr, RemotingCommand::request(4242), LONG)
        .await
        .unwrap();
    assert_eq!(resp.code, sys_code::REQUEST_CODE_NOT_SUPPORTED);
}

#[tokio::test]
async fn shutdown_of_an_ordered_server_drains_without_waiting_for_idle_connections() {
    let server = echo_server().await;
    server.set_ordered(ECHO);
    let addr = server.local_addr().to_string();
    let c = client();
    // Pipelined ordered requests are answered in order; the connection then stays open, idle.
    let calls: Vec<_> = (0..16)
        .map(|i| {
            let (c, a) = (c.clone(), addr.clone());
            tokio::spawn(async move {
                c.invoke(
                    &a,
                    RemotingCommand::request(ECHO).with_remark(i.to_string()),
                    LONG,
                )
                .await
            })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap().code, sys_code::SUCCESS);
    }
    // The idle connection's ordered worker must not hold the drain until the grace runs out.
    let report = server.shutdown(Duration::from_secs(10)).await;
    assert!(report.completed, "{report:?}");
    assert_eq!(report.unfinished_tasks, 0);
}

/// Echoes the remark; the first request (remark "block") waits for `release`. Records the
/// size of every group handed to `process_ordered`.
struct Grouping {
    started: Arc<Notify>,
    release: Arc<Notify>,
    groups: Arc<parking_lot::Mutex<Vec<usize>>>,
}

impl mq_remoting::RequestProcessor for Grouping {
    fn process(
        &self,
        _ctx: mq_remoting::RequestContext,
        req: RemotingCommand,
    ) -> mq_remoting::BoxFuture<'static, Option<RemotingCommand>> {
        let (started, release) = (Arc::clone(&self.started), Arc::clone(&self.release));
        Box::pin(async move {
            if req.remark.as_deref() == Some("block") {
                started.notify_one();
                release.notified().await;
            }
            let remark = req.remark.clone();
            Some(RemotingCommand::response_to(
                &req,
                sys_code::SUCCESS,
                remark,
            ))
        })
    }

    fn process_ordered(
        &self,
        _ctx: mq_remoting::RequestContext,
        reqs: Vec<RemotingCommand>,
    ) -> mq_remoting::BoxFuture<'static, Vec<Option<RemotingCommand>>> {
        self.groups.lock().push(reqs.len());
        Box::pin(async move {
            reqs.iter()
                .map(|r| {
                    // The last request of the group is left unanswered on purpose.
                    (r.remark.as_deref() != Some("silent")).then(|| {
                        RemotingCommand::response_to(r, sys_code::SUCCESS, r.remark.clone())
                    })
                })
                .collect()
        })
    }
}

/// Ordered requests that queued up while their connection's worker was busy reach the
/// processor as one group, in arrival order, and each gets its own answer (or none, when the
/// processor gives none).
#[tokio::test]
async fn queued_ordered_requests_reach_the_processor_as_one_group() {
    let server = RemotingServer::bind(ServerConfig::default()).await.unwrap();
    let (started, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let groups = Arc::new(parking_lot::Mutex::new(Vec::new()));
    server.register_processor(
        ECHO,
        Arc::new(Grouping {
            started: Arc::clone(&started),
            release: Arc::clone(&release),
            groups: Arc::clone(&groups),
        }),
    );
    server.set_ordered(ECHO);
    const PING: i32 = ECHO + 1;
    server.register_processor(PING, super::echo());
    let mut stream = TcpStream::connect(server.local_addr()).await.unwrap();
    let request = |opaque: i32, code: i32, remark: &str| {
        RemotingCommand::request(code)
            .with_opaque(opaque)
            .with_remark(remark)
    };
    send_frame(&mut stream, &request(1, ECHO, "block")).await;
    // The worker is busy with the first request before the others arrive.
    started.notified().await;
    for i in 2..=11 {
        send_frame(&mut stream, &request(i, ECHO, &format!("r{i}"))).await;
    }
    send_frame(&mut stream, &request(12, ECHO, "silent")).await;
    // PING is not ordered: its answer proves the read loop has queued everything before it.
    send_frame(&mut stream, &request(13, PING, "ping")).await;
    let mut buf = BytesMut::new();
    let first = read_frame(&mut stream, &mut buf).await.unwrap();
    assert_eq!(first.opaque, 13);
    release.notify_one();
    let mut answered = Vec::new();
    for _ in 1..=11 {
        let r = read_frame(&mut stream, &mut buf).await.unwrap();
        assert_eq!(
            r.remark.as_deref(),
            Some(expected_remark(r.opaque).as_str())
        );
        answered.push(r.opaque);
    }
    answered.sort_unstable();
    assert_eq!(answered, (1..=11).collect::<Vec<_>>());
    // The blocked request ran alone; the eleven queued behind it ran as one group.
    assert_eq!(*groups.lock(), vec![11]);
    let report = server.shutdown(Duration::from_secs(10)).await;
    assert!(report.completed, "{report:?}");
}

/// A group of queued ordered requests goes to its processors in runs: consecutive requests of
/// one processor (under any of its codes) together, a request whose code has no processor
/// answered on its own as not supported, every answer to its own request.
#[tokio::test]
async fn a_queued_group_reaches_each_processor_as_its_consecutive_runs() {
    let server = RemotingServer::bind(ServerConfig::default()).await.unwrap();
    let (started, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let (a_groups, b_groups) = (
        Arc::new(parking_lot::Mutex::new(Vec::new())),
        Arc::new(parking_lot::Mutex::new(Vec::new())),
    );
    let a: Arc<dyn mq_remoting::RequestProcessor> = Arc::new(Grouping {
        started: Arc::clone(&started),
        release: Arc::clone(&release),
        groups: Arc::clone(&a_groups),
    });
    let b = Arc::new(Grouping {
        started: Arc::new(Notify::new()),
        release: Arc::new(Notify::new()),
        groups: Arc::clone(&b_groups),
    });
    const PING: i32 = ECHO + 1;
    const A2: i32 = ECHO + 2;
    const B: i32 = ECHO + 3;
    const NONE: i32 = ECHO + 4;
    server.register_processor(ECHO, Arc::clone(&a));
    server.register_processor(A2, a);
    server.register_processor(B, b);
    server.register_processor(PING, super::echo());
    for code in [ECHO, A2, B, NONE] {
        server.set_ordered(code);
    }
    let mut stream = TcpStream::connect(server.local_addr()).await.unwrap();
    let request = |opaque: i32, code: i32| {
        RemotingCommand::request(code)
            .with_opaque(opaque)
            .with_remark(if opaque == 1 {
                "block".to_owned()
            } else {
                format!("r{opaque}")
            })
    };
    send_frame(&mut stream, &request(1, ECHO)).await;
    started.notified().await;
    let queued = [
        (2, ECHO),
        (3, A2),
        (4, ECHO),
        (5, B),
        (6, B),
        (7, NONE),
        (8, A2),
        (9, ECHO),
        (10, B),
    ];
    for (opaque, code) in queued {
        send_frame(&mut stream, &request(opaque, code)).await;
    }
    send_frame(&mut stream, &request(13, PING)).await;
    let mut buf = BytesMut::new();
    assert_eq!(read_frame(&mut stream, &mut buf).await.unwrap().opaque, 13);
    release.notify_one();
    let mut answered = Vec::new();
    for _ in 0..10 {
        let r = read_frame(&mut stream, &mut buf).await.unwrap();
        if r.opaque == 7 {
            assert_eq!(r.code, sys_code::REQUEST_CODE_NOT_SUPPORTED);
        } else {
            assert_eq!(r.code, sys_code::SUCCESS);
            assert_eq!(
                r.remark.as_deref(),
                Some(expected_remark(r.opaque).as_str())
            );
        }
        answered.push(r.opaque);
    }
    // Answers come in request order: each run is answered before the next one runs.
    assert_eq!(answered, (1..=10).collect::<Vec<_>>());
    // A: 2-4 (two codes, one processor), then 8-9; B: 5-6, then 10 alone (not a group).
    assert_eq!(*a_groups.lock(), vec![3, 2]);
    assert_eq!(*b_groups.lock(), vec![2]);
    let report = server.shutdown(Duration::from_secs(10)).await;
    assert!(report.completed, "{report:?}");
}

fn expected_remark(opaque: i32) -> String {
    if opaque == 1 {
        "block".to_owned()
    } else {
        format!("r{opaque}")
    }
}
