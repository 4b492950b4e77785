//! TLS on the gRPC port and to it, with the remoting side's [`ServerTls`] and [`ClientTls`]
//! (rustls, `ring`): the protocol is negotiated by ALPN as `h2`, which gRPC's clients and
//! servers insist on.
//!
//! A proxy with TLS tells its clients apart by their first byte as a remoting server does: in
//! [`TlsMode::Permissive`] plain clients are served too, in [`TlsMode::Enforcing`] only TLS
//! ones, and in [`TlsMode::Disabled`] only plain ones. Each connection is classified and its
//! handshake made on a task of its own, bounded in time, so a silent client holds up no other.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use mq_remoting::{ClientTls, ServerTls, TlsMode, starts_tls};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tracing::debug;

/// The protocol gRPC runs on.
const H2: &[u8] = b"h2";

/// How long an accepted connection may take to show what it speaks and finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// An accepted connection, plain or TLS.
pub(crate) enum Conn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl Connected for Conn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        let tcp = match self {
            Self::Plain(s) => s,
            Self::Tls(s) => s.get_ref().0,
        };
        tcp.connect_info()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The connections of `listener` as `tls` admits them, handshakes done, until `token` is
/// cancelled. The accepting and the handshakes run on `tasks`.
pub(crate) fn incoming(
    listener: TcpListener,
    tls: &ServerTls,
    token: &CancellationToken,
    tasks: &TaskTracker,
) -> mpsc::Receiver<io::Result<Conn>> {
    let tls = tls.with_alpn(&[H2]);
    let (tx, rx) = mpsc::channel(64);
    let (stop, handshakes) = (token.clone(), tasks.clone());
    tasks.spawn(async move {
        loop {
            let stream = tokio::select! {
                () = stop.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        debug!(cause = %e, "gRPC accept failed");
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let (tls, tx, stop) = (tls.clone(), tx.clone(), stop.clone());
            handshakes.spawn(async move {
                let admitted = tokio::select! {
                    () = stop.cancelled() => return,
                    r = tokio::time::timeout(HANDSHAKE_TIMEOUT, admit(stream, &tls)) => r,
                };
                match admitted {
                    Ok(Ok(conn)) => {
                        let _ = tx.send(Ok(conn)).await;
                    }
                    Ok(Err(why)) => debug!(%why, "gRPC connection closed"),
                    Err(_) => debug!("gRPC connection closed: no handshake in time"),
                }
            });
        }
    });
    rx
}

/// `stream` as the mode admits it: plain, or after the server's handshake.
async fn admit(stream: TcpStream, tls: &ServerTls) -> Result<Conn, String> {
    let is_tls = starts_tls(&stream)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("closed before its first byte")?;
    match (is_tls, tls.mode()) {
        (false, TlsMode::Disabled | TlsMode::Permissive) => Ok(Conn::Plain(stream)),
        (false, TlsMode::Enforcing) => Err("plain connection refused: TLS is enforced".into()),
        (true, TlsMode::Disabled) => Err("TLS connection refused: TLS is disabled".into()),
        (true, TlsMode::Permissive | TlsMode::Enforcing) => tls
            .accept(stream)
            .await
            .map(|s| Conn::Tls(Box::new(s)))
            .map_err(|e| format!("TLS handshake failed: {e}")),
    }
}

/// A TCP connection to `endpoint` (`host:port`) with TLS by `tls`, offering `h2`.
pub(crate) async fn connect(
    endpoint: String,
    tls: ClientTls,
) -> io::Result<hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<TcpStream>>> {
    let stream = TcpStream::connect(&endpoint).await?;
    stream.set_nodelay(true)?;
    let stream = tls.with_alpn(&[H2]).connect(&endpoint, stream).await?;
    Ok(hyper_util::rt::TokioIo::new(stream))
}
