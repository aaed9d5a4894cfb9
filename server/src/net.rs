//! The listening socket. Every accepted connection gets TCP_NODELAY (tokens
//! leave at once) and a write timeout: a client that stops reading while an
//! answer streams blocks our writes, and after the bound the connection is
//! reset, which drops the answer's stream and so cancels its generation.

use axum::serve::Listener;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_io_timeout::TimeoutStream;

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
