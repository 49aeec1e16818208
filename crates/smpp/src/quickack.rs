//! A TCP stream that acknowledges what it reads at once.
//!
//! Many SMSCs leave Nagle's algorithm on: a small PDU they write (a
//! submit_sm_resp, a deliver_sm) waits until their last segment is
//! acknowledged. Linux delays an acknowledgement for up to 40 ms when it has
//! nothing to send back, so a submit sent on its own can wait 40 ms for its
//! answer. After every read this stream sets `TCP_QUICKACK`, which sends the
//! pending acknowledgement now (the kernel leaves quick-ack mode again on its
//! own, hence every read). Elsewhere than Linux it is the plain stream.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// See the module.
pub(crate) struct QuickAck(pub TcpStream);

impl AsyncRead for QuickAck {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let filled = buf.filled().len();
        let read = Pin::new(&mut self.0).poll_read(cx, buf);
        if matches!(read, Poll::Ready(Ok(()))) && buf.filled().len() > filled {
            acknowledge(&self.0);
        }
        read
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn acknowledge(stream: &TcpStream) {
    // Best effort: a failure only leaves the kernel's usual delay.
    let _ = stream.set_quickack(true);
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn acknowledge(_stream: &TcpStream) {}

impl AsyncWrite for QuickAck {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

#[cfg(all(test, any(target_os = "linux", target_os = "android")))]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::QuickAck;

    /// After a read the socket is in quick-ack mode again, even when it had
    /// left it (as the kernel does once an exchange looks interactive), and
    /// the bytes pass both ways unchanged.
    #[tokio::test]
    async fn a_read_puts_the_socket_back_in_quick_ack_mode() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let peer = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut got = [0u8; 4];
            s.read_exact(&mut got).await.unwrap();
            s.write_all(b"pong").await.unwrap();
            got
        });
        let stream = TcpStream::connect(address).await.unwrap();
        let mut quick = QuickAck(stream);
        quick.write_all(b"ping").await.unwrap();
        quick.0.set_quickack(false).unwrap();
        assert!(!quick.0.quickack().unwrap(), "delayed acknowledgements on");
        let mut answer = [0u8; 4];
        quick.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"pong");
        assert!(quick.0.quickack().unwrap(), "the read asked for quick acks");
        assert_eq!(&peer.await.unwrap(), b"ping");
    }
}
