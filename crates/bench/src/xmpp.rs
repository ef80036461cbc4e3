//! A minimal XMPP client for the benchmarks: STARTTLS, SCRAM-SHA-256, resource binding,
//! initial presence; then it stays idle. Only what the measurements need.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use switchboard_xmpp_proto::{Element, Frame, Limits, StreamParser};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls;

const HEADER: &str = "<?xml version='1.0'?><stream:stream to='localhost' xmlns='jabber:client' \
                      xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>";

/// A TLS client configuration that trusts the server's generated certificate.
pub fn tls_config(certificate: &Path) -> Result<Arc<rustls::ClientConfig>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(certificate)
        .with_context(|| format!("reading {}", certificate.display()))?
    {
        roots.add(cert?)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

/// SaltedPassword per salt: real clients keep it too, so the client's PBKDF2 work is not
/// what a login benchmark measures.
#[derive(Default)]
pub struct SaltCache(Mutex<HashMap<SaltKey, Vec<u8>>>);

/// A salt and an iteration count.
type SaltKey = (Vec<u8>, u32);

impl SaltCache {
    fn salted(&self, password: &str, salt: &[u8], iterations: u32) -> Vec<u8> {
        let key = (salt.to_vec(), iterations);
        if let Some(v) = self.0.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return v.clone();
        }
        let mut out = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), salt, iterations, &mut out);
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, out.to_vec());
        out.to_vec()
    }
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("any key");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

pub struct Reader {
    parser: StreamParser,
    buf: Vec<u8>,
}

impl Reader {
    fn new() -> Reader {
        Reader {
            parser: StreamParser::new(Limits::default()),
            buf: vec![0u8; 4096],
        }
    }

    async fn frame<S: AsyncRead + Unpin>(&mut self, s: &mut S) -> Result<Frame> {
        loop {
            if let Some(frame) = self.parser.next()? {
                return Ok(frame);
            }
            let n = s.read(&mut self.buf).await?;
            if n == 0 {
                bail!("the server closed the connection");
            }
            self.parser.feed(&self.buf[..n]);
        }
    }

    pub async fn stanza<S: AsyncRead + Unpin>(&mut self, s: &mut S) -> Result<Element> {
        loop {
            match self.frame(s).await? {
                Frame::Stanza(el) => return Ok(el),
                Frame::StreamOpen(_) => continue,
                Frame::StreamClose => bail!("the server closed the stream"),
            }
        }
    }
}

async fn send<S: AsyncWrite + Unpin>(s: &mut S, text: &str) -> Result<()> {
    s.write_all(text.as_bytes()).await?;
    s.flush().await?;
    Ok(())
}

/// An online XMPP client.
pub struct Client {
    pub tls: TlsStream<TcpStream>,
    /// The stream's parser, in the state the login left it.
    pub reader: Reader,
}

/// Writes a stanza (or several) to a client's stream.
pub async fn write<S: AsyncWrite + Unpin>(s: &mut S, text: &str) -> Result<()> {
    send(s, text).await
}

/// Logs in over STARTTLS with SCRAM-SHA-256, binds a resource and sends initial presence.
pub async fn login(
    addr: SocketAddr,
    tls: &Arc<rustls::ClientConfig>,
    salts: &SaltCache,
    user: &str,
    password: &str,
) -> Result<Client> {
    let mut tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let mut reader = Reader::new();
    send(&mut tcp, HEADER).await?;
    reader.stanza(&mut tcp).await?; // features: starttls
    send(
        &mut tcp,
        "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>",
    )
    .await?;
    let proceed = reader.stanza(&mut tcp).await?;
    if proceed.name() != "proceed" {
        bail!("STARTTLS refused: {}", proceed.to_xml());
    }
    let name = rustls::pki_types::ServerName::try_from("localhost")?;
    let mut tls = TlsConnector::from(tls.clone()).connect(name, tcp).await?;
    let mut reader = Reader::new();
    send(&mut tls, HEADER).await?;
    reader.stanza(&mut tls).await?; // features: mechanisms

    let nonce = STANDARD.encode(switchboard_core::credentials::random_bytes::<18>());
    let first_bare = format!("n={user},r={nonce}");
    send(
        &mut tls,
        &format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>{}</auth>",
            STANDARD.encode(format!("n,,{first_bare}"))
        ),
    )
    .await?;
    let challenge = reader.stanza(&mut tls).await?;
    let server_first = String::from_utf8(STANDARD.decode(challenge.text().trim())?)?;
    let mut r = None;
    let mut salt = None;
    let mut iterations = None;
    for part in server_first.split(',') {
        match part.split_once('=') {
            Some(("r", v)) => r = Some(v.to_string()),
            Some(("s", v)) => salt = Some(STANDARD.decode(v)?),
            Some(("i", v)) => iterations = Some(v.parse::<u32>()?),
            _ => {}
        }
    }
    let (r, salt, iterations) = (
        r.context("no nonce")?,
        salt.context("no salt")?,
        iterations.context("no iterations")?,
    );
    let salted = salts.salted(password, &salt, iterations);
    let client_key = hmac(&salted, b"Client Key");
    let stored_key = Sha256::digest(&client_key);
    let without_proof = format!("c=biws,r={r}");
    let auth_message = format!("{first_bare},{server_first},{without_proof}");
    let signature = hmac(&stored_key, auth_message.as_bytes());
    let proof: Vec<u8> = client_key
        .iter()
        .zip(&signature)
        .map(|(a, b)| a ^ b)
        .collect();
    send(
        &mut tls,
        &format!(
            "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</response>",
            STANDARD.encode(format!("{without_proof},p={}", STANDARD.encode(proof)))
        ),
    )
    .await?;
    let outcome = reader.stanza(&mut tls).await?;
    if outcome.name() != "success" {
        bail!("SASL failed: {}", outcome.to_xml());
    }

    let mut reader = Reader::new();
    send(&mut tls, HEADER).await?;
    reader.stanza(&mut tls).await?; // features: bind
    send(
        &mut tls,
        "<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq><presence/>",
    )
    .await?;
    let bound = reader.stanza(&mut tls).await?;
    if bound.attr("type") != Some("result") {
        bail!("bind failed: {}", bound.to_xml());
    }
    reader.stanza(&mut tls).await?; // own presence back
    Ok(Client { tls, reader })
}
