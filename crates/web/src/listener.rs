//! The TCP listener every HTTP connection comes through: it enforces the per-client
//! connection limit and counts connections, so limits are written once for the web line.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// Open connections per client address.
#[derive(Default)]
struct Counts(Mutex<HashMap<IpAddr, usize>>);

pub struct LimitedListener {
    inner: TcpListener,
    per_ip: usize,
    counts: Arc<Counts>,
    open: Gauge,
}

impl LimitedListener {
    /// `open` counts the connections currently open (the `connections` metric).
    pub fn new(inner: TcpListener, per_ip: usize, open: Gauge) -> LimitedListener {
        LimitedListener {
            inner,
            per_ip,
            counts: Arc::default(),
            open,
        }
    }
}

/// Answers a connection over the per-address limit with an HTTP error that says so, then
/// closes it, rather than dropping it without a word.
async fn refuse(mut stream: TcpStream, limit: usize) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = format!(
        "{{\"error\":{{\"code\":\"rate_limited\",\"message\":\"too many connections from your address (the limit is {limit})\"}}}}"
    );
    let response = format!(
        "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
        // Read the request head first: an HTTP client that gets an answer before it has sent
        // its request takes it for a broken server, not for a refusal.
        let mut head = Vec::with_capacity(1024);
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// A connection that gives its slot back when it closes.
pub struct CountedStream {
    stream: TcpStream,
    ip: IpAddr,
    counts: Arc<Counts>,
    open: Gauge,
}

impl Drop for CountedStream {
    fn drop(&mut self) {
        self.open.dec();
        let mut counts = self.counts.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

impl axum::serve::Listener for LimitedListener {
    type Io = CountedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (stream, addr) = match self.inner.accept().await {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and similar: wait a moment rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let ip = addr.ip();
            {
                let mut counts = self.counts.0.lock().unwrap_or_else(|e| e.into_inner());
                let n = counts.entry(ip).or_insert(0);
                if self.per_ip > 0 && *n >= self.per_ip {
                    tracing::debug!(%ip, "connection refused: too many from this address");
                    tokio::spawn(refuse(stream, self.per_ip));
                    continue;
                }
                *n += 1;
            }
            let _ = stream.set_nodelay(true);
            self.open.inc();
            return (
                CountedStream {
                    stream,
                    ip,
                    counts: self.counts.clone(),
                    open: self.open.clone(),
                },
                addr,
            );
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

impl AsyncRead for CountedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for CountedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// The client's socket address, as handlers see it through `ConnectInfo`.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, LimitedListener>>
    for PeerAddr
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, LimitedListener>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}
