//! Under TLS 1.3 the server judges the client certificate after the client's handshake is
//! done, so its alert can reach the client after the client started writing its startup
//! packet. If the server has already closed, that write fails with a reset while the alert is
//! still readable. libpq then reads before it reports the failed write; this wrapper does the
//! same for tokio-postgres stacks, so the outcome does not depend on which came first.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};

/// Wraps a driver's TLS connector (`MakeTlsConnect`).
pub(crate) struct ReadAfterReset<M>(pub M);

pub(crate) struct Connect<T>(T);

pub(crate) struct Stream<S> {
    inner: S,
    /// The first failed write; later writes are dropped and reads decide the outcome.
    write_failed: Option<io::Error>,
}

fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
    )
}

impl<M, S> MakeTlsConnect<S> for ReadAfterReset<M>
where
    M: MakeTlsConnect<S>,
    <M::TlsConnect as TlsConnect<S>>::Future: Send + 'static,
{
    type Stream = Stream<M::Stream>;
    type TlsConnect = Connect<M::TlsConnect>;
    type Error = M::Error;

    fn make_tls_connect(&mut self, domain: &str) -> Result<Self::TlsConnect, Self::Error> {
        self.0.make_tls_connect(domain).map(Connect)
    }
}

impl<T, S> TlsConnect<S> for Connect<T>
where
    T: TlsConnect<S>,
    T::Future: Send + 'static,
{
    type Stream = Stream<T::Stream>;
    type Error = T::Error;
    type Future = futures_util::future::BoxFuture<'static, Result<Self::Stream, T::Error>>;

    fn connect(self, stream: S) -> Self::Future {
        let fut = self.0.connect(stream);
        Box::pin(async move {
            fut.await.map(|inner| Stream {
                inner,
                write_failed: None,
            })
        })
    }
}

impl<S: TlsStream + Unpin> TlsStream for Stream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        self.inner.channel_binding()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Stream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            // Nothing more to read after a failed write: the write's error is the outcome.
            Poll::Ready(Ok(())) if buf.filled().len() == before => match this.write_failed.take() {
                Some(e) => Poll::Ready(Err(e)),
                None => Poll::Ready(Ok(())),
            },
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Stream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.write_failed.is_some() {
            return Poll::Ready(Ok(buf.len()));
        }
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Ready(Err(e)) if is_reset(&e) => {
                self.write_failed = Some(e);
                Poll::Ready(Ok(buf.len()))
            }
            other => other,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.write_failed.is_some() {
            return Poll::Ready(Ok(()));
        }
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Ready(Err(e)) if is_reset(&e) => {
                self.write_failed = Some(e);
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
