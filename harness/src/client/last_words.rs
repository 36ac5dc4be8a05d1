//! A socket that lets the server's last words through, for the stacks whose TLS runs inside
//! tokio-postgres (rustls, native-tls). When the server refuses the client certificate it
//! sends an alert and closes. Under TLS 1.2 the client may still be writing its flight; under
//! TLS 1.3 the verdict comes after the client's handshake is done and it is writing its
//! startup packet. Either write then fails with a reset or a broken pipe, a matter of timing,
//! while the alert is still readable. Here a failed write is swallowed and reported only once
//! reading shows nothing more is coming, so the TLS library sees the alert, as libpq does (it
//! reads before it reports a failed write).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};

/// A driver's TLS connector with the socket wrapped in [`LastWords`].
#[derive(Clone)]
pub(crate) struct LastWordsConnect<M>(pub M);

impl<S, M> MakeTlsConnect<S> for LastWordsConnect<M>
where
    M: MakeTlsConnect<LastWords<S>>,
{
    type Stream = M::Stream;
    type TlsConnect = Connect<M::TlsConnect>;
    type Error = M::Error;

    fn make_tls_connect(&mut self, domain: &str) -> Result<Self::TlsConnect, Self::Error> {
        self.0.make_tls_connect(domain).map(Connect)
    }
}

pub(crate) struct Connect<T>(T);

impl<S, T: TlsConnect<LastWords<S>>> TlsConnect<S> for Connect<T> {
    type Stream = T::Stream;
    type Error = T::Error;
    type Future = T::Future;

    fn connect(self, stream: S) -> T::Future {
        self.0.connect(LastWords {
            inner: stream,
            write_error: None,
        })
    }
}

pub(crate) struct LastWords<S> {
    inner: S,
    /// The first failed write; later writes are dropped and reads decide the outcome.
    write_error: Option<io::Error>,
}

impl<S: AsyncRead + Unpin> AsyncRead for LastWords<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        let eof = matches!(res, Poll::Ready(Ok(()))) && buf.filled().len() == before;
        if eof || matches!(res, Poll::Ready(Err(_))) {
            if let Some(e) = self.write_error.take() {
                return Poll::Ready(Err(e));
            }
        }
        res
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for LastWords<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.write_error.is_some() {
            return Poll::Ready(Ok(buf.len()));
        }
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Ready(Err(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
                ) =>
            {
                self.write_error = Some(e);
                Poll::Ready(Ok(buf.len()))
            }
            other => other,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.write_error.is_some() {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A peer that has gone: writes fail with `write_error`, reads give `readable`, then EOF.
    struct Gone {
        write_error: io::ErrorKind,
        readable: Vec<u8>,
    }

    impl AsyncRead for Gone {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let data = std::mem::take(&mut self.readable);
            buf.put_slice(&data);
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for Gone {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &[u8],
        ) -> Poll<io::Result<usize>> {
            Poll::Ready(Err(self.write_error.into()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn stream(write_error: io::ErrorKind, readable: &[u8]) -> LastWords<Gone> {
        LastWords {
            inner: Gone {
                write_error,
                readable: readable.to_vec(),
            },
            write_error: None,
        }
    }

    #[tokio::test]
    async fn a_reset_write_lets_the_read_decide() {
        // What the server said is read after the write failed.
        let mut s = stream(io::ErrorKind::ConnectionReset, b"alert");
        s.write_all(b"startup").await.unwrap();
        s.flush().await.unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(s.read(&mut buf).await.unwrap(), 5);
        // Nothing more to read: the write's reset is the outcome, not a clean EOF.
        let e = s.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
    }

    #[tokio::test]
    async fn other_write_errors_pass_through() {
        let mut s = stream(io::ErrorKind::PermissionDenied, b"");
        let e = s.write_all(b"startup").await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
        let mut buf = [0u8; 4];
        assert_eq!(s.read(&mut buf).await.unwrap(), 0);
    }
}
