//! The listening socket. Every accepted connection gets TCP_NODELAY (tokens
//! leave at once) and a write timeout: a client that stops reading while an
//! answer streams blocks our writes, and after the bound the connection is
//! reset, which drops the answer's stream and so cancels its generation.
//!
//! A client that hangs up is noticed at once too, even while nothing is
//! being written (a long prompt): hyper learns of a closed connection only
//! when a write fails, so [`end_with_client`] watches the socket itself for
//! the client's FIN and ends the request, which cancels its generation.

use axum::extract::{ConnectInfo, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::serve::Listener;
use axum::Router;
use futures::StreamExt;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_io_timeout::TimeoutStream;
use tower::Service as _;

/// A TCP listener whose connections time out blocked writes.
pub struct GuardedListener {
    inner: TcpListener,
    write_timeout: Duration,
}

impl GuardedListener {
    /// Wrap `inner`; writes blocked longer than `write_timeout` fail.
    pub fn new(inner: TcpListener, write_timeout: Duration) -> Self {
        Self {
            inner,
            write_timeout,
        }
    }
}

impl Listener for GuardedListener {
    type Io = GuardedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    let mut stream = TimeoutStream::new(stream);
                    stream.set_write_timeout(Some(self.write_timeout));
                    return (
                        GuardedStream {
                            inner: Box::pin(stream),
                        },
                        addr,
                    );
                }
                Err(err) => {
                    // Out of file descriptors and the like: wait, then retry.
                    tracing::warn!(%err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// What a request knows of its connection: the client's address, and a
/// second handle on the socket to watch for the client hanging up. Set on
/// every request by [`serve`].
#[derive(Debug, Clone)]
pub struct ClientConn {
    /// The client's address.
    pub addr: SocketAddr,
    socket: Option<Arc<std::net::TcpStream>>,
}

impl ClientConn {
    /// What a request on `stream` from `addr` knows of its connection.
    fn new(stream: &GuardedStream, addr: SocketAddr) -> Self {
        let tcp = stream.inner.get_ref();
        // A duplicate of the socket's descriptor: reading readiness and
        // peeking through it leaves hyper's reads untouched.
        let socket = socket2::SockRef::from(tcp)
            .try_clone()
            .map(|s| Arc::new(std::net::TcpStream::from(s)))
            .ok();
        Self { addr, socket }
    }
}

/// Serve `app` on `listener` until `shutdown` resolves; then stop accepting,
/// ask open connections to finish, and wait for them.
///
/// HTTP/1.1 only (what browsers and API clients speak to a plain-HTTP
/// server). A client gets `header_read_timeout` to send a request's headers,
/// counted from when the server starts waiting for them, on a new or an idle
/// kept-alive connection; then the connection is closed. So silent or
/// trickling connections (slowloris) go away on their own, and each request
/// knows its [`ClientConn`].
pub async fn serve(
    mut listener: GuardedListener,
    app: Router,
    header_read_timeout: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, addr) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let conn = ClientConn::new(&stream, addr);
        let router = app.clone();
        let service = tower::service_fn(move |mut req: Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(ConnectInfo(conn.clone()));
            router.clone().call(req.map(axum::body::Body::new))
        });
        let connection = builder
            // Not `serve_connection_with_upgrades`: that one first reads the
            // protocol version with no timeout at all.
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(%addr, %err, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

impl ClientConn {
    /// Resolves when the client has closed its side of the connection.
    /// Never resolves while unread request bytes wait (the handler reads
    /// them) or when the socket cannot be watched. A client that half-closes
    /// and still reads counts as gone; HTTP clients do not do that.
    pub async fn hung_up(&self) {
        let watched = self
            .socket
            .as_ref()
            .and_then(|s| s.try_clone().ok())
            .and_then(|s| tokio::net::TcpStream::from_std(s).ok());
        let Some(socket) = watched else {
            return std::future::pending().await;
        };
        let mut byte = [0u8; 1];
        loop {
            match socket.peek(&mut byte).await {
                Ok(0) => return,
                // Request bytes not read yet, or a pipelined request: look
                // again later.
                Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }
}

/// Middleware: when the client hangs up, drop the request's handler (while
/// it runs) or end its streaming body, so the answer behind it is cancelled
/// at once rather than at the next write.
pub async fn end_with_client(req: Request, next: Next) -> Response {
    let Some(conn) = req
        .extensions()
        .get::<ConnectInfo<ClientConn>>()
        .map(|c| c.0.clone())
    else {
        return next.run(req).await;
    };
    let watch = tokio::spawn(async move { conn.hung_up().await });
    let stop_watching = AbortOnDrop(watch.abort_handle());
    let mut watch = watch;
    let response = tokio::select! {
        r = next.run(req) => r,
        _ = &mut watch => {
            tracing::debug!("client hung up before the answer started");
            // Nobody reads this; the handler (and its generation) is dropped.
            return axum::http::StatusCode::REQUEST_TIMEOUT.into_response();
        }
    };
    let streaming = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| {
            t.starts_with("text/event-stream") || t.starts_with("application/x-ndjson")
        });
    if !streaming {
        return response;
    }
    let (parts, body) = response.into_parts();
    let gone = async move {
        let _stop = stop_watching;
        let _ = watch.await;
        tracing::debug!("client hung up during the answer");
    };
    let body = axum::body::Body::from_stream(body.into_data_stream().take_until(gone));
    Response::from_parts(parts, body)
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A connection whose blocked writes time out. On a timeout the socket is
/// set to reset when closed, so the stalled client is cut off at once
/// instead of the kernel holding its unread data.
pub struct GuardedStream {
    inner: Pin<Box<TimeoutStream<TcpStream>>>,
}

impl GuardedStream {
    fn on_write<T>(&mut self, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if let Poll::Ready(Err(e)) = &r {
            if e.kind() == io::ErrorKind::TimedOut {
                tracing::info!("cutting off a client that stopped reading");
                let _ = self.inner.get_ref().set_zero_linger();
            }
        }
        r
    }
}

impl AsyncRead for GuardedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.inner.as_mut().poll_read(cx, buf)
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = self.inner.as_mut().poll_write(cx, buf);
        self.on_write(r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = self.inner.as_mut().poll_write_vectored(cx, bufs);
        self.on_write(r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = self.inner.as_mut().poll_flush(cx);
        self.on_write(r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = self.inner.as_mut().poll_shutdown(cx);
        self.on_write(r)
    }
}
