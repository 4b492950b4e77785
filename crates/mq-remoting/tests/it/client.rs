//! Client behaviour: correlation, timeouts, closes, permits, callbacks, name servers.

use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use mq_remoting::{
    ClientConfig, InvokeKind, RemotingClient, RemotingCommand, RemotingError, RemotingServer,
    SerializeType, ServerConfig, processor_fn, sys_code,
};
use tokio::sync::{Notify, mpsc};

use mq_test_support::trace_init;

use super::{ECHO, client, echo_server};

const STALL: i32 = 1001;
const LONG: Duration = Duration::from_secs(60);

/// A server whose STALL processor reports each request on `seen` and never answers until
/// `release` is notified.
async fn stalling_server() -> (RemotingServer, mpsc::UnboundedReceiver<i32>, Arc<Notify>) {
    let server = echo_server().await;
    let (tx, rx) = mpsc::unbounded_channel();
    let release = Arc::new(Notify::new());
    let r = Arc::clone(&release);
    server.register_processor(
        STALL,
        processor_fn(move |_ctx, req: RemotingCommand| {
            let tx = tx.clone();
            let r = Arc::clone(&r);
            async move {
                let _ = tx.send(req.opaque);
                r.notified().await;
                Some(RemotingCommand::response_to(&req, sys_code::SUCCESS, None))
            }
        }),
    );
    (server, rx, release)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_concurrent_requests_reach_the_right_callers() {
    trace_init();
    let server = echo_server().await;
    let addr = server.local_addr().to_string();
    let client = client();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..10_000u32 {
        let client = client.clone();
        let addr = addr.clone();
        tasks.spawn(async move {
            let ty = if i % 2 == 0 {
                SerializeType::Json
            } else {
                SerializeType::RocketMq
            };
            let req = RemotingCommand::request(ECHO)
                .with_ext("n", i.to_string())
                .with_body(i.to_be_bytes().to_vec())
                .with_serialize_type(ty);
            let resp = client.invoke(&addr, req, LONG).await.unwrap();
            (i, resp)
        });
    }
    let mut seen = 0;
    while let Some(r) = tasks.join_next().await {
        let (i, resp) = r.unwrap();
        assert_eq!(resp.code, sys_code::SUCCESS);
        assert_eq!(resp.ext("n"), Some(i.to_string().as_str()));
        assert_eq!(&resp.body[..], &i.to_be_bytes());
        assert!(resp.is_response());
        seen += 1;
    }
    assert_eq!(seen, 10_000);
    assert_eq!(client.pending_requests(), 0);
    assert!(client.shutdown(LONG).await.completed);
    let _ = server.shutdown(LONG).await;
}

/// Requests and answers of sizes on both sides of the read loop's limits (a large frame read
/// up to its end, a buffer of 64 KiB), many in flight at once and all kept until the end (so
/// that the buffers they were cut from stay shared), come back whole to their callers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_of_every_size_around_the_read_limits_arrive_whole() {
    const SIZES: [usize; 9] = [
        100,
        4095,
        32 * 1024 - 40,
        32 * 1024,
        40 * 1024,
        64 * 1024 - 10,
        64 * 1024 + 10,
        100 * 1024,
        300 * 1024,
    ];
    let server = echo_server().await;
    let addr = server.local_addr().to_string();
    let client = client();
    let mut tasks = tokio::task::JoinSet::new();
    for lane in 0..32usize {
        let (client, addr) = (client.clone(), addr.clone());
        tasks.spawn(async move {
            let mut kept = Vec::new();
            for n in 0..12usize {
                let size = SIZES[(lane + n) % SIZES.len()];
                let body: Vec<u8> = (0..size).map(|i| (i * 7 + lane + n) as u8).collect();
                let req = RemotingCommand::request(ECHO).with_body(body.clone());
                let resp = client.invoke(&addr, req, LONG).await.unwrap();
                kept.push((body, resp));
            }
            kept
        });
    }
    let mut seen = 0;
    while let Some(r) = tasks.join_next().await {
        for (body, resp) in r.unwrap() {
            assert_eq!(resp.code, sys_code::SUCCESS);
            assert!(
                resp.body[..] == body[..],
                "a body of {} bytes came back whole",
                body.len()
            );
            seen += 1;
        }
    }
    assert_eq!(seen, 32 * 12);
    assert!(client.shutdown(LONG).await.completed);
    let _ = server.shutdown(LONG).await;
}

/// With coalesced writes, many callers that each await one request at a time, and then one
/// caller alone (whose waits gain nothing, so that the writer mostly stops waiting), all get
/// their own answers, within a bound that a writer holding a frame back would miss.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coalesced_writes_answer_every_caller() {
    trace_init();
    let server = echo_server().await;
    let addr = server.local_addr().to_string();
    let client = RemotingClient::new(ClientConfig::default().with_coalesced_writes(true));
    let call = |client: RemotingClient, addr: String, n: u32| async move {
        let req = RemotingCommand::request(ECHO).with_ext("n", n.to_string());
        let resp = client
            .invoke(&addr, req, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(resp.ext("n"), Some(n.to_string().as_str()));
    };
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..64u32 {
        let (client, addr) = (client.clone(), addr.clone());
        tasks.spawn(async move {
            for i in 0..50 {
                call(client.clone(), addr.clone(), t * 1000 + i).await;
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    for i in 0..200 {
        call(client.clone(), addr.clone(), i).await;
    }
    assert_eq!(client.pending_requests(), 0);
    assert!(client.shutdown(LONG).await.completed);
    let _ = server.shutdown(LONG).await;
}

fn within_a_tick(d: Duration, secs: u64) -> bool {
    d >= Duration::from_secs(secs) && d <= Duration::from_secs(secs) + Duration::from_millis(2)
}

#[tokio::test]
async fn timeout_removes_the_entry_and_reports_elapsed_time() {
    let (server, mut seen, release) = stalling_server().await;
    let addr = server.local_addr().to_string();
    let client = client();
    client.connect(&addr, LONG).await.unwrap();
    tokio::time::pause();
    let started = tokio::time::Instant::now();
    let err = client
        .invoke(
            &addr,
            RemotingCommand::request(STALL),
            Duration::from_secs(3),
        )
        .await
        .unwrap_err();
    match err {
        // Paused time: exactly the timeout, give or take the timer wheel's 1 ms tick.
        RemotingError::Timeout { elapsed, .. } => assert!(within_a_tick(elapsed, 3)),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(within_a_tick(started.elapsed(), 3));
    assert_eq!(client.pending_requests(), 0);
    tokio::time::resume();
    // The late response is dropped and the connection keeps working.
    seen.recv().await.unwrap();
    release.notify_one();
    let resp = client
        .invoke(&addr, RemotingCommand::request(ECHO), LONG)
        .await
        .unwrap();
    assert_eq!(resp.code, sys_code::SUCCESS);
}

/// A request within a deadline: answered before it, or ended at it (not at a timeout counted
/// from some other moment), its entry gone; a deadline already past ends it without a wait
/// (the request is still written, as one with a zero timeout is).
#[tokio::test]
async fn invoke_until_ends_at_the_deadline() {
    let (server, mut seen, release) = stalling_server().await;
    let addr = server.local_addr().to_string();
    let client = client();
    client.connect(&addr, LONG).await.unwrap();
    let group = mq_remoting::RequestGroup::NONE;
    let resp = client
        .invoke_until(
            &addr,
            RemotingCommand::request(ECHO),
            tokio::time::Instant::now() + LONG,
            group,
        )
        .await
        .unwrap();
    assert_eq!(resp.code, sys_code::SUCCESS);
    tokio::time::pause();
    let started = tokio::time::Instant::now();
    // A deadline set earlier, with part of it spent before the request is made.
    let deadline = started + Duration::from_secs(5);
    tokio::time::advance(Duration::from_secs(2)).await;
    let err = client
        .invoke_until(&addr, RemotingCommand::request(STALL), deadline, group)
        .await
        .unwrap_err();
    match err {
        RemotingError::Timeout { elapsed, .. } => assert!(within_a_tick(elapsed, 3)),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(within_a_tick(started.elapsed(), 5));
    assert_eq!(client.pending_requests(), 0);
    seen.recv().await.unwrap();
    let before = tokio::time::Instant::now();
    let err = client
        .invoke_until(&addr, RemotingCommand::request(STALL), started, group)
        .await
        .unwrap_err();
    assert!(matches!(err, RemotingError::Timeout { .. }), "{err:?}");
    assert_eq!(before.elapsed(), Duration::ZERO);
    assert_eq!(client.pending_requests(), 0);
    // A request with a callback and no time is refused before it is written too, and its
    // callback is not called.
    let err = client
        .invoke_with_callback(
            &addr,
            RemotingCommand::request(STALL),
            Duration::ZERO,
            |reply| panic!("called back with {reply:?}"),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, RemotingError::Timeout { .. }), "{err:?}");
    // Neither was sent: the next request the server sees is the one after them (the
    // connection delivers in order), known by the opaque its timeout reports.
    let err = client
        .invoke_until(
            &addr,
            RemotingCommand::request(STALL),
            tokio::time::Instant::now() + Duration::from_secs(1),
            group,
        )
        .await
        .unwrap_err();
    let RemotingError::Timeout { opaque, .. } = err else {
        panic!("expected a timeout, got {err:?}");
    };
    assert_eq!(seen.recv().await, Some(opaque));
    tokio::time::resume();
    // The stalled processors never answer: the server is stopped without waiting for them.
    drop(release);
    let _ = server.shutdown(Duration::ZERO).await;
}

#[tokio::test]
async fn server_going_away_fails_pending_calls_at_once() {
    let (server, mut seen, _release) = stalling_server().await;
    let addr = server.local_addr().to_string();
    let client = client();
    let c = client.clone();
    let a = addr.clone();
    let call =
        tokio::spawn(async move { c.invoke(&a, RemotingCommand::request(STALL), LONG).await });
    seen.recv().await.unwrap();
    let report = server.shutdown(Duration::ZERO).await;
    assert!(!report.completed, "the stalled request could not finish");
    // Not a timeout: the close fails the call as soon as it is seen.
    let err = call.await.unwrap().unwrap_err();
    assert!(
        matches!(err, RemotingError::ConnectionClosed { .. }),
        "{err:?}"
    );
    assert_eq!(client.pending_requests(), 0);
    let err = client
        .invoke(&addr, RemotingCommand::request(ECHO), LONG)
        .await
        .unwrap_err();
    assert!(matches!(err, RemotingError::Connect { .. }), "{err:?}");
}

#[tokio::test]
async fn client_reconnects_after_the_connection_closes() {
    let server = echo_server().await;
    let addr = server.local_addr().to_string();
    let client = client();
    let first = client.connect(&addr, LONG).await.unwrap();
    // A round trip guarantees the server has attached the connection.
    client
        .invoke(&addr, RemotingCommand::request(ECHO), LONG)
        .await
        .unwrap();
    assert_eq!(server.connections().len(), 1);
    for conn in server.connections() {
        conn.close();
    }
    first.closed().await;
    let resp = client
        .invoke(&addr, RemotingCommand::request(ECHO), LONG)
        .await
        .unwrap();
    assert_eq!(resp.code, sys_code::SUCCESS);
    let second = client.connect(&addr, LONG).await.unwrap();
    assert_ne!(first.id(), second.id());
}

/// A client dropped without being shut down closes its connections: a handle on one sees it
/// close, and so does the server (before, the connection lived on as long as the server kept
/// it, with its tasks and the client's callback threads).
#[tokio::test]
async fn a_dropped_client_closes_its_connections() {
    let server = echo_server().await;
    let addr = server.local_addr().to_string();
    let client = client();
    let ours = client.connect(&addr, LONG).await.unwrap();
    client
        .invoke(&addr, RemotingCommand::request(ECHO), LONG)
        .await
        .unwrap();
    let theirs = server.connections();
    assert_eq!(theirs.len(), 1);
    drop(client);
    let bound = Duration::from_secs(10);
    tokio::time::timeout(bound, ours.closed())
        .await
        .expect("the dropped client's connection closes");
    tokio::time::timeout(bound, theirs[0].closed())
        .await
        .expect("the server sees the connection close");
}

#[tokio::test]
async fn unknown_code_is_answered_not_supported() {
    let server = echo_server().await;
    let client = client();
    let resp = client
        .invoke(
            &server.local_addr().to_string(),
            RemotingCommand::request(4242),
            LONG,
        )
        .await
        .unwrap();
    assert_eq!(resp.code, sys_code::REQUEST_CODE_NOT_SUPPORTED);
    assert_eq!(
        resp.remark.as_deref(),
        Some(" request type 4242 not supported")
    );
}

#[tokio::test]
async fn exhausted_permits_give_a_typed_error() {
    let (server, mut seen, release) = stalling_server().await;
    let addr = server.local_addr().to_string();
    let client = RemotingClient::new(ClientConfig::default().with_permits(1, 1, 1));
    let c = client.clone();
    let a = addr.clone();
    let held =
        tokio::spawn(async move { c.invoke(&a, RemotingCommand::request(STALL), LONG).await });
    seen.recv().await.unwrap();
    let err = client
        .invoke(
            &addr,
            RemotingCommand::request(ECHO),
            Duration::from_millis(20),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            RemotingError::TooManyRequests {
                kind: InvokeKind::Sync,
                permits: 1
            }
        ),
        "{err:?}"
    );
    // Async permits are separate: take the only one, then the next call is refused.
    client
        .invoke_with_callback(&addr, RemotingCommand::request(STALL), LONG, |_| {})
        .await
        .unwrap();
    seen.recv().await.unwrap();
    let err = client
        .invoke_with_callback(
            &addr,
            RemotingCommand::request(ECHO),
            Duration::ZERO,
            |_| {},
        )
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        RemotingError::TooManyRequests {
            kind: InvokeKind::Async,
            ..
        }
    ));
    release.notify_waiters();
    held.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_run_off_the_read_loop() {
    let server = echo_server().await;
    let addr = server.local_addr().to_string();
    let client = RemotingClient::new(ClientConfig::default().with_callback_workers(2));
    client.connect(&addr, LONG).await.unwrap();
    let (b_done_tx, b_done_rx) = std_mpsc::channel::<()>();
    let (result_tx, result_rx) = std_mpsc::channel::<bool>();
    // Callback A blocks its thread until callback B has run. Were callbacks run on the read
    // loop, B's response could not be read while A blocks, and A would give up.
    client
        .invoke_with_callback(&addr, RemotingCommand::request(ECHO), LONG, move |r| {
            assert!(r.is_ok());
            let ok = b_done_rx.recv_timeout(Duration::from_secs(30)).is_ok();
            result_tx.send(ok).unwrap();
        })
        .await
        .unwrap();
    client
        .invoke_with_callback(&addr, RemotingCommand::request(ECHO), LONG, move |r| {
            assert!(r.is_ok());
            b_done_tx.send(()).unwrap();
        })
        .await
        .unwrap();
    let ok = tokio::task::spawn_blocking(move || result_rx.recv().unwrap())
        .await
        .unwrap();
    assert!(ok, "callback B never ran while callback A blocked");
}

#[tokio::test]
async fn async_callback_gets_the_close_error_and_shutdown_runs_it() {
    let (server, mut seen, _release) = stalling_server().await;
    let addr = server.local_addr().to_string();
    let client = client();
    let (tx, mut rx) = mpsc::unbounded_channel();
    client
        .invoke_with_callback(&addr, RemotingCommand::request(STALL), LONG, move |r| {
            tx.send(r).unwrap();
        })
        .await
        .unwrap();
    seen.recv().await.unwrap();
    let report = client.shutdown(LONG).await;
    assert!(report.completed);
    let outcome = rx.recv().await.expect("callback ran exactly once");
    assert!(matches!(
        outcome,
        Err(RemotingError::ConnectionClosed { .. })
    ));
    let err = client
        .invoke(&addr, RemotingCommand::request(ECHO), LONG)
        .await
        .unwrap_err();
    assert!(matches!(err, RemotingError::Shutdown));
}

#[tokio::test]
async fn name_server_selection_skips_dead_addresses() {
    let server = echo_server().await;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let client = client();
    assert!(matches!(
        client
            .invoke_name_server(RemotingCommand::request(ECHO), LONG)
            .await,
        Err(RemotingError::NoNameServer)
    ));
    client
        .name_servers()
        .update(vec![dead.clone(), server.local_addr().to_string()]);
    for _ in 0..4 {
        let resp = client
            .invoke_name_server(RemotingCommand::request(ECHO), LONG)
            .await
            .unwrap();
        assert_eq!(resp.code, sys_code::SUCCESS);
        assert_eq!(
            client.name_servers().chosen(),
            Some(server.local_addr().to_string())
        );
    }
    client.name_servers().update(vec![dead]);
    let err = client
        .invoke_name_server(RemotingCommand::request(ECHO), LONG)
        .await
        .unwrap_err();
    assert!(matches!(err, RemotingError::Connect { .. }), "{err:?}");
}

#[tokio::test]
async fn server_can_call_back_into_the_client() {
    const CHECK: i32 = 39;
    const REGISTER: i32 = 34;
    let server = RemotingServer::bind(ServerConfig::default()).await.unwrap();
    server.register_processor(
        REGISTER,
        processor_fn(|ctx, req: RemotingCommand| async move {
            // Ask the client something before answering its request.
            let answer = ctx
                .connection()
                .invoke(RemotingCommand::request(CHECK).with_ext("q", "ping"), LONG)
                .await;
            let text = match answer {
                Ok(resp) => resp.ext("a").unwrap_or("none").to_owned(),
                Err(e) => e.to_string(),
            };
            Some(RemotingCommand::response_to(&req, 0, None).with_ext("a", text))
        }),
    );
    let client = client();
    client.register_processor(
        CHECK,
        processor_fn(|_ctx, req: RemotingCommand| async move {
            let q = req.ext("q").unwrap_or_default().to_owned();
            Some(RemotingCommand::response_to(&req, 0, None).with_ext("a", format!("{q}-pong")))
        }),
    );
    let resp = client
        .invoke(
            &server.local_addr().to_string(),
            RemotingCommand::request(REGISTER),
            LONG,
        )
        .await
        .unwrap();
    assert_eq!(resp.ext("a"), Some("ping-pong"));
}

#[tokio::test]
async fn oneway_is_delivered_without_a_pending_entry() {
    let server = RemotingServer::bind(ServerConfig::default()).await.unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    server.register_processor(
        ECHO,
        processor_fn(move |_ctx, req: RemotingCommand| {
            let tx = tx.clone();
            async move {
                tx.send(req.is_oneway()).unwrap();
                Some(RemotingCommand::response_to(&req, 0, None))
            }
        }),
    );
    let client = client();
    client
        .invoke_oneway(
            &server.local_addr().to_string(),
            RemotingCommand::request(ECHO),
            LONG,
        )
        .await
        .unwrap();
    assert!(rx.recv().await.unwrap(), "request carried the ONEWAY flag");
    assert_eq!(client.pending_requests(), 0);
}
