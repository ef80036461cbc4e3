//! Client-to-server streams over TCP (RFC 6120): STARTTLS on the c2s port, direct TLS
//! (XEP-0368) on the other. TLS is required before anything else: the only feature a plain
//! stream offers is `<starttls><required/></starttls>`.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use switchboard_xmpp_proto::{
    Element, Frame, NS_STREAMS, StreamError, StreamOpen, StreamParser, escape,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::Line;
use crate::auth;
use crate::session::{self, Incoming, Transport};
use crate::stanza::{self, NS_CLIENT, NS_TLS, StreamPrefix};

/// Bytes taken from the TLS layer at a time. Small, because every idle connection holds it;
/// the TLS layer does the socket reads in whole records anyway.
const READ_CHUNK: usize = 2048;

/// Open connections per client address, shared by both listeners.
#[derive(Default)]
struct Counts(Mutex<HashMap<IpAddr, usize>>);

struct CountGuard {
    counts: Arc<Counts>,
    ip: IpAddr,
}

impl Drop for CountGuard {
    fn drop(&mut self) {
        let mut counts = self.counts.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

impl Counts {
    fn admit(self: &Arc<Self>, ip: IpAddr, limit: usize) -> Option<CountGuard> {
        let mut counts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = counts.entry(ip).or_default();
        if limit != 0 && *n >= limit {
            return None;
        }
        *n += 1;
        Some(CountGuard {
            counts: self.clone(),
            ip,
        })
    }
}

/// Serves XMPP clients on the STARTTLS listener and the direct TLS listener until
/// `shutdown` completes.
pub async fn serve(
    line: Arc<Line>,
    starttls: TcpListener,
    direct_tls: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send,
) {
    let counts = Arc::new(Counts::default());
    let direct_acceptor = TlsAcceptor::from(crate::tls::with_alpn(
        &line.tls,
        &[crate::tls::XMPP_CLIENT_ALPN],
    ));
    let both = async {
        let plain = accept_loop(&line, &starttls, None, &counts);
        let direct = async {
            match &direct_tls {
                Some(l) => accept_loop(&line, l, Some(&direct_acceptor), &counts).await,
                None => std::future::pending().await,
            }
        };
        tokio::join!(plain, direct)
    };
    tokio::select! {
        () = shutdown => {}
        _ = both => {}
    }
}

/// Accepts connections on one listener forever. `direct`: the TLS acceptor of a direct TLS
/// listener; `None` for STARTTLS.
async fn accept_loop(
    line: &Arc<Line>,
    listener: &TcpListener,
    direct: Option<&TlsAcceptor>,
    counts: &Arc<Counts>,
) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "XMPP accept failed");
                continue;
            }
        };
        let Some(guard) = counts.admit(peer.ip(), line.config.connections_per_ip) else {
            tracing::info!(client = %peer.ip(), "XMPP connection refused: too many from this address");
            tokio::spawn(refuse(tcp));
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let line = line.clone();
        let acceptor = direct.cloned();
        let open = line.connection();
        tokio::spawn(async move {
            let _guard = (guard, open);
            connection(line, tcp, peer, acceptor).await;
        });
    }
}

/// Tells a client over the connection limit why it is refused, then closes.
async fn refuse(mut tcp: TcpStream) {
    let text = format!(
        "<?xml version='1.0'?><stream:stream xmlns='{NS_CLIENT}' xmlns:stream='{NS_STREAMS}' version='1.0'>{}</stream:stream>",
        switchboard_xmpp_proto::stream_error_xml(
            "policy-violation",
            Some("too many connections from your address")
        )
    );
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        tcp.write_all(text.as_bytes()),
    )
    .await;
}

/// The stream header the server answers with.
fn stream_header(domain: &str, id: &str) -> String {
    format!(
        "<?xml version='1.0'?><stream:stream xmlns='{NS_CLIENT}' xmlns:stream='{NS_STREAMS}' id='{id}' from='{}' version='1.0' xml:lang='en'>",
        escape(domain, true)
    )
}

fn features_xml(features: Element) -> String {
    stanza::features_xml(&features, StreamPrefix::Declared)
}

/// A TLS stream with its parser: what the session reads and writes.
pub struct TcpTransport {
    domain: String,
    reader: ReadHalf<TlsStream<TcpStream>>,
    writer: WriteHalf<TlsStream<TcpStream>>,
    parser: StreamParser,
    buf: Box<[u8]>,
}

impl TcpTransport {
    /// The next frame, reading as needed. `Ok(None)`: the connection is gone.
    async fn frame(&mut self) -> Result<Option<Frame>, StreamError> {
        read_frame(&mut self.reader, &mut self.parser, &mut self.buf).await
    }
}

impl Transport for TcpTransport {
    async fn read(&mut self) -> Incoming {
        match self.frame().await {
            Ok(Some(Frame::Stanza(el))) => Incoming::Stanza(el),
            Ok(Some(Frame::StreamClose)) => Incoming::Close,
            Ok(Some(Frame::StreamOpen(open))) if open.namespace != NS_CLIENT => Incoming::Error(
                StreamError::InvalidNamespace("this port serves clients (jabber:client)".into()),
            ),
            Ok(Some(Frame::StreamOpen(open))) => Incoming::Open { to: open.to },
            Ok(None) => Incoming::Gone,
            Err(e) => Incoming::Error(e),
        }
    }

    async fn write(&mut self, items: &[String]) -> io::Result<()> {
        // One write: each write to a TLS stream can become its own record and system call.
        self.writer.write_all(items.concat().as_bytes()).await?;
        self.writer.flush().await
    }

    async fn open(&mut self, features: Option<Element>) -> io::Result<()> {
        let mut out = stream_header(&self.domain, &new_stream_id());
        if let Some(features) = features {
            out.push_str(&features_xml(features));
        }
        self.write(&[out]).await
    }

    fn restart(&mut self) {
        self.parser.reset();
    }

    fn secure(&self) -> bool {
        true
    }

    async fn close(&mut self, error: Option<(&str, Option<&str>)>) {
        let mut out = String::new();
        if let Some((condition, text)) = error {
            out.push_str(&switchboard_xmpp_proto::stream_error_xml(condition, text));
        }
        out.push_str("</stream:stream>");
        let _ = self.writer.write_all(out.as_bytes()).await;
        let _ = self.writer.flush().await;
        let _ = self.writer.shutdown().await;
    }
}

async fn write_all<S: AsyncWrite + Unpin>(s: &mut S, data: &str) -> io::Result<()> {
    s.write_all(data.as_bytes()).await?;
    s.flush().await
}

/// Reads frames from a not-yet-split stream.
async fn read_frame<S: AsyncRead + Unpin>(
    s: &mut S,
    parser: &mut StreamParser,
    buf: &mut [u8],
) -> Result<Option<Frame>, StreamError> {
    loop {
        if let Some(frame) = parser.next()? {
            return Ok(Some(frame));
        }
        match s.read(buf).await {
            Ok(0) | Err(_) => return Ok(None),
            Ok(n) => parser.feed(&buf[..n]),
        }
    }
}

/// Why negotiation stopped.
enum Stop {
    /// The connection is gone or answered already.
    Quiet,
    /// Send this stream error and close.
    Error(&'static str, String),
}

impl From<StreamError> for Stop {
    fn from(e: StreamError) -> Self {
        Stop::Error(e.condition(), e.text().to_string())
    }
}

/// Expects a stream header and checks it is for this server.
fn check_header(line: &Line, frame: Option<Frame>) -> Result<StreamOpen, Stop> {
    match frame {
        Some(Frame::StreamOpen(open)) => {
            if open.namespace != NS_CLIENT {
                return Err(Stop::Error(
                    "invalid-namespace",
                    "this port serves clients (jabber:client)".into(),
                ));
            }
            match open.to.as_deref() {
                Some(to) if line.hub.config().serves(&to.to_ascii_lowercase()) => Ok(open),
                Some(to) => Err(Stop::Error(
                    "host-unknown",
                    format!("this server does not serve {to}"),
                )),
                None => Ok(open),
            }
        }
        None => Err(Stop::Quiet),
        Some(_) => Err(Stop::Error(
            "bad-format",
            "the stream must start with a stream header".into(),
        )),
    }
}

async fn connection(
    line: Arc<Line>,
    mut tcp: TcpStream,
    peer: SocketAddr,
    direct: Option<TlsAcceptor>,
) {
    let timeout = line.config.negotiation_timeout;
    let client = peer.ip().to_string();
    let tls = match direct {
        Some(acceptor) => match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => tls,
            _ => return,
        },
        None => {
            let mut parser = StreamParser::new(line.config.limits());
            let mut buf = vec![0u8; READ_CHUNK];
            let upgraded = tokio::time::timeout(timeout, async {
                let result = starttls(&line, &mut tcp, &mut parser, &mut buf).await;
                if let Err(Stop::Error(condition, text)) = &result {
                    let _ = write_all(
                        &mut tcp,
                        &format!(
                            "{}</stream:stream>",
                            switchboard_xmpp_proto::stream_error_xml(condition, Some(text))
                        ),
                    )
                    .await;
                }
                result
            })
            .await;
            match upgraded {
                Ok(Ok(())) => {}
                _ => return,
            }
            let acceptor = TlsAcceptor::from(line.tls.clone());
            match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                _ => return,
            }
        }
    };
    let (reader, writer) = tokio::io::split(tls);
    let mut t = TcpTransport {
        domain: line.domain().to_string(),
        reader,
        writer,
        parser: StreamParser::new(line.config.limits()),
        buf: vec![0u8; READ_CHUNK].into_boxed_slice(),
    };
    if let Some(principal) = auth::negotiate(&line, &mut t, &client).await {
        session::run(line, &mut t, principal).await;
    }
}

fn new_stream_id() -> String {
    switchboard_core::credentials::new_public_id()
}

/// The plain part of a connection: header, `<starttls/>`, `<proceed/>`.
async fn starttls(
    line: &Line,
    tcp: &mut TcpStream,
    parser: &mut StreamParser,
    buf: &mut [u8],
) -> Result<(), Stop> {
    let frame = read_frame(tcp, parser, buf).await;
    let header = stream_header(line.domain(), &new_stream_id());
    // Errors before the server's header still get one, so the client can read the error.
    if let Err(stop) = frame
        .map_err(Stop::from)
        .and_then(|f| check_header(line, f))
    {
        let _ = write_all(tcp, &header).await;
        return Err(stop);
    }
    let features = Element::new("features", NS_STREAMS)
        .with_child(Element::new("starttls", NS_TLS).with_child(Element::new("required", NS_TLS)));
    write_all(tcp, &format!("{header}{}", features_xml(features)))
        .await
        .map_err(|_| Stop::Quiet)?;
    match read_frame(tcp, parser, buf).await? {
        Some(Frame::Stanza(el)) if el.is("starttls", NS_TLS) => {
            if parser.buffered() > 0 {
                // Bytes after <starttls/> before the handshake would be read as plaintext
                // inside TLS: a known injection attack (CVE-2011-0411 and kin).
                return Err(Stop::Error(
                    "policy-violation",
                    "data was sent after <starttls/> before the TLS handshake".into(),
                ));
            }
            write_all(tcp, &format!("<proceed xmlns='{NS_TLS}'/>"))
                .await
                .map_err(|_| Stop::Quiet)
        }
        Some(Frame::StreamClose) | None => Err(Stop::Quiet),
        Some(_) => Err(Stop::Error(
            "policy-violation",
            "this server requires TLS: send <starttls/> first".into(),
        )),
    }
}
