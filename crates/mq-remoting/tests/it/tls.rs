//! TLS over loopback: requests over TLS, the three server modes, and a client that trusts
//! another root.

use std::time::Duration;

use bytes::Bytes;
use mq_remoting::{
    ClientConfig, ClientTls, RemotingClient, RemotingCommand, RemotingError, RemotingServer,
    ServerConfig, ServerTls, TlsMode,
};
use mq_test_support::TestCert;

use crate::{ECHO, echo};

const T: Duration = Duration::from_secs(5);

async fn server(cert: &TestCert, mode: TlsMode) -> RemotingServer {
    let tls = ServerTls::from_pem(cert.cert_pem.as_bytes(), cert.key_pem.as_bytes())
        .unwrap()
        .with_mode(mode);
    let server = RemotingServer::bind(ServerConfig::default().with_tls(tls))
        .await
        .unwrap();
    server.register_processor(ECHO, echo());
    server
}

fn tls_client(trusted: &TestCert) -> RemotingClient {
    let tls = ClientTls::with_roots_pem(trusted.cert_pem.as_bytes()).unwrap();
    RemotingClient::new(ClientConfig::default().with_tls(tls))
}

fn plain_client() -> RemotingClient {
    RemotingClient::new(ClientConfig::default())
}

async fn echo_through(
    client: &RemotingClient,
    server: &RemotingServer,
) -> Result<Bytes, RemotingError> {
    let body = Bytes::from(vec![7u8; 100_000]);
    let r = client
        .invoke(
            &server.local_addr().to_string(),
            RemotingCommand::request(ECHO).with_body(body.clone()),
            T,
        )
        .await?;
    assert_eq!(r.body, body, "the body comes back whole");
    Ok(r.body)
}

#[tokio::test]
async fn requests_go_over_tls_and_permissive_also_serves_plain() {
    let cert = TestCert::loopback();
    let server = server(&cert, TlsMode::Permissive).await;
    let tls = tls_client(&cert);
    for _ in 0..3 {
        echo_through(&tls, &server).await.unwrap();
    }
    // Many in flight on the one TLS connection.
    let addr = server.local_addr().to_string();
    let calls = (0..200).map(|i| {
        let (tls, addr) = (tls.clone(), addr.clone());
        async move {
            let r = tls
                .invoke(
                    &addr,
                    RemotingCommand::request(ECHO).with_body(format!("m{i}")),
                    T,
                )
                .await
                .unwrap();
            assert_eq!(r.body, format!("m{i}").as_bytes());
        }
    });
    futures_util::future::join_all(calls).await;
    echo_through(&plain_client(), &server).await.unwrap();
    assert!(server.shutdown(T).await.completed);
}

#[tokio::test]
async fn enforcing_refuses_plain_clients() {
    let cert = TestCert::loopback();
    let server = server(&cert, TlsMode::Enforcing).await;
    echo_through(&tls_client(&cert), &server).await.unwrap();
    let refused = echo_through(&plain_client(), &server).await.unwrap_err();
    assert!(
        matches!(refused, RemotingError::ConnectionClosed { .. }),
        "{refused:?}"
    );
    assert!(server.shutdown(T).await.completed);
}

#[tokio::test]
async fn disabled_refuses_tls_clients() {
    let cert = TestCert::loopback();
    let server = server(&cert, TlsMode::Disabled).await;
    echo_through(&plain_client(), &server).await.unwrap();
    let refused = echo_through(&tls_client(&cert), &server).await.unwrap_err();
    assert!(matches!(refused, RemotingError::Tls { .. }), "{refused:?}");
    assert!(server.shutdown(T).await.completed);
}

#[tokio::test]
async fn a_client_that_trusts_another_root_fails_with_a_tls_error() {
    let cert = TestCert::loopback();
    let server = server(&cert, TlsMode::Enforcing).await;
    let stranger = TestCert::loopback();
    let e = echo_through(&tls_client(&stranger), &server)
        .await
        .unwrap_err();
    let RemotingError::Tls { addr, source } = &e else {
        panic!("expected a TLS error, got {e:?}");
    };
    assert_eq!(addr, &server.local_addr().to_string());
    let cause = source
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    assert!(
        matches!(cause, Some(rustls::Error::InvalidCertificate(_))),
        "{source:?}"
    );
    // A certificate for another name is refused too, and a chosen name that matches passes.
    let other = TestCert::for_names(&["broker.example"]);
    let named = server_with(&other).await;
    let e = echo_through(&tls_client(&other), &named).await.unwrap_err();
    assert!(matches!(e, RemotingError::Tls { .. }), "{e:?}");
    let tls = ClientTls::with_roots_pem(other.cert_pem.as_bytes())
        .unwrap()
        .with_server_name("broker.example")
        .unwrap();
    echo_through(
        &RemotingClient::new(ClientConfig::default().with_tls(tls)),
        &named,
    )
    .await
    .unwrap();
    // The named "dangerous" option skips every check.
    let anyone = RemotingClient::new(
        ClientConfig::default().with_tls(ClientTls::dangerous_no_verify().unwrap()),
    );
    echo_through(&anyone, &server).await.unwrap();
    assert!(server.shutdown(T).await.completed);
    assert!(named.shutdown(T).await.completed);
}

async fn server_with(cert: &TestCert) -> RemotingServer {
    server(cert, TlsMode::Enforcing).await
}

#[test]
fn bad_pem_and_modes_are_typed_errors() {
    let e = ServerTls::from_pem(b"not pem", b"not pem").unwrap_err();
    assert!(
        matches!(e, mq_remoting::TlsError::NoCertificate { .. }),
        "{e}"
    );
    let cert = TestCert::loopback();
    let e = ServerTls::from_pem(cert.cert_pem.as_bytes(), b"").unwrap_err();
    assert!(
        matches!(e, mq_remoting::TlsError::NoPrivateKey { .. }),
        "{e}"
    );
    assert!(ClientTls::with_roots_pem(b"").is_err());
    assert!(
        ClientTls::dangerous_no_verify()
            .unwrap()
            .with_server_name("bad name!")
            .is_err()
    );
    assert_eq!("enforcing".parse::<TlsMode>(), Ok(TlsMode::Enforcing));
    assert!("strict".parse::<TlsMode>().is_err());
}
