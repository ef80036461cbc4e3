//! The XMPP line's TLS server configuration (rustls with the ring provider).
//!
//! XMPP clients refuse to send credentials in the clear, so the line cannot run without a
//! certificate. When the operator configures none (`xmpp.certificate` / `xmpp.private_key`), a
//! self-signed one is generated once and kept under the data directory, so that a client which
//! was told to trust it keeps trusting it after a restart.
//!
//! The base configuration advertises no ALPN protocol: STARTTLS clients (RFC 6120) do not send
//! ALPN, and those that do must not be turned away for offering a protocol list we do not match.
//! Direct TLS (XEP-0368) derives its own configuration with [`with_alpn`].

use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The ALPN protocol id of XMPP client-to-server over direct TLS (XEP-0368).
pub const XMPP_CLIENT_ALPN: &[u8] = b"xmpp-client";

/// Where the TLS identity comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// Configured PEM files (`xmpp.certificate`, `xmpp.private_key`); both or neither. The
    /// certificate file holds the chain, leaf first.
    pub certificate: Option<PathBuf>,
    pub private_key: Option<PathBuf>,
    /// Where a generated self-signed certificate is kept: `<data_dir>/xmpp-tls/cert.pem` and
    /// `key.pem` (key file mode 0600, directory created 0700).
    pub data_dir: PathBuf,
    /// Names the generated certificate is for (the realms; "localhost" is always added).
    /// Only used when a certificate is generated: an existing generated certificate is reused
    /// as it is, so after adding a realm delete `<data_dir>/xmpp-tls` to get one that names it.
    pub hostnames: Vec<String>,
}

/// Why no TLS configuration could be built. The text names the file or configuration key and
/// what was wrong with it, so it can be shown to the operator as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsError(pub String);

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsError {}

/// A ready TLS server configuration and where its certificate came from.
#[derive(Debug, Clone)]
pub struct TlsIdentity {
    /// Without ALPN; see the module documentation.
    pub config: Arc<ServerConfig>,
    /// The certificate file in use (configured or generated), so tests and operators can trust
    /// it.
    pub certificate_path: PathBuf,
    /// True when the certificate is the server's own self-signed one (generated now or on an
    /// earlier start), false when it was configured.
    pub generated: bool,
}

/// Builds the TLS configuration from the configured files, or from the generated self-signed
/// certificate, generating it on first use.
pub fn load_or_generate(settings: &TlsSettings) -> Result<TlsIdentity, TlsError> {
    match (&settings.certificate, &settings.private_key) {
        (Some(cert), Some(key)) => {
            let config = load(
                PemFile::configured(cert, "xmpp.certificate"),
                PemFile::configured(key, "xmpp.private_key"),
            )?;
            Ok(TlsIdentity {
                config,
                certificate_path: cert.clone(),
                generated: false,
            })
        }
        (Some(_), None) => Err(TlsError(
            "xmpp.certificate is set but xmpp.private_key is not: set both, or neither to use a \
             generated self-signed certificate"
                .into(),
        )),
        (None, Some(_)) => Err(TlsError(
            "xmpp.private_key is set but xmpp.certificate is not: set both, or neither to use a \
             generated self-signed certificate"
                .into(),
        )),
        (None, None) => load_or_generate_self_signed(settings),
    }
}

/// A copy of `config` that negotiates one of `protocols` by ALPN, for direct TLS (XEP-0368,
/// [`XMPP_CLIENT_ALPN`]). A client that offers ALPN but none of these is refused by rustls, which
/// is what a port dedicated to one protocol should do; a client offering no ALPN is served.
pub fn with_alpn(config: &Arc<ServerConfig>, protocols: &[&[u8]]) -> Arc<ServerConfig> {
    let mut config = ServerConfig::clone(config);
    config.alpn_protocols = protocols.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// A PEM file and how to name it in an error message.
struct PemFile<'a> {
    path: &'a Path,
    /// "the certificate file … (xmpp.certificate)" or "the generated private key …".
    description: String,
}

impl<'a> PemFile<'a> {
    fn configured(path: &'a Path, key: &str) -> Self {
        let kind = if key == "xmpp.certificate" {
            "certificate"
        } else {
            "private key"
        };
        PemFile {
            path,
            description: format!("the {kind} file {} ({key})", path.display()),
        }
    }

    fn generated(path: &'a Path, kind: &str) -> Self {
        PemFile {
            path,
            description: format!(
                "the generated {kind} file {} (delete its directory to generate a new one)",
                path.display()
            ),
        }
    }

    fn read(&self) -> Result<Vec<u8>, TlsError> {
        fs::read(self.path).map_err(|e| TlsError(format!("cannot read {}: {e}", self.description)))
    }

    fn certificates(&self) -> Result<Vec<CertificateDer<'static>>, TlsError> {
        let bytes = self.read()?;
        let chain = CertificateDer::pem_slice_iter(&bytes)
            .collect::<Result<Vec<_>, pem::Error>>()
            .map_err(|e| TlsError(format!("{} is not valid PEM: {e}", self.description)))?;
        if chain.is_empty() {
            return Err(TlsError(format!(
                "{} contains no PEM CERTIFICATE block",
                self.description
            )));
        }
        Ok(chain)
    }

    fn private_key(&self) -> Result<PrivateKeyDer<'static>, TlsError> {
        let bytes = self.read()?;
        PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
            pem::Error::NoItemsFound => TlsError(format!(
                "{} contains no PEM private key (PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY \
                 block)",
                self.description
            )),
            e => TlsError(format!("{} is not valid PEM: {e}", self.description)),
        })
    }
}

/// Reads both files and builds the server configuration.
fn load(cert: PemFile<'_>, key: PemFile<'_>) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = cert.certificates()?;
    let private_key = key.private_key()?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(format!("cannot set up TLS protocol versions: {e}")))?
        .with_no_client_auth()
        // Also checks that the key belongs to the leaf certificate, so a mismatched pair fails
        // here at start-up rather than in every handshake.
        .with_single_cert(chain, private_key)
        .map_err(|e| {
            TlsError(format!(
                "cannot use {} with {}: {e}",
                cert.description, key.description
            ))
        })?;
    Ok(Arc::new(config))
}

fn load_or_generate_self_signed(settings: &TlsSettings) -> Result<TlsIdentity, TlsError> {
    let dir = settings.data_dir.join("xmpp-tls");
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");

    let have_cert = cert_path.is_file();
    let have_key = key_path.is_file();
    if !(have_cert && have_key) {
        if have_cert || have_key {
            // Only possible after a crash between the two writes (the key is written first)
            // or a hand deletion; a half identity is useless, so start again.
            tracing::warn!(
                dir = %dir.display(),
                "the generated TLS certificate or its key is missing; generating both anew"
            );
        }
        generate(&dir, &cert_path, &key_path, &settings.hostnames)?;
    }

    let config = load(
        PemFile::generated(&cert_path, "certificate"),
        PemFile::generated(&key_path, "private key"),
    )?;
    Ok(TlsIdentity {
        config,
        certificate_path: cert_path,
        generated: true,
    })
}

/// The names for the generated certificate: the realms, lower-cased and without a trailing
/// dot, plus "localhost", without duplicates. Names a certificate cannot carry as they are
/// (empty, non-ASCII: IDNs would need punycode) are left out with a warning rather than
/// preventing the server from starting.
fn certificate_names(hostnames: &[String]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let candidates = hostnames.iter().map(String::as_str).chain(["localhost"]);
    for raw in candidates {
        let name = raw.trim().trim_end_matches('.').to_ascii_lowercase();
        if name.is_empty() || !name.is_ascii() {
            tracing::warn!(
                name = raw,
                "left out of the generated TLS certificate: not an ASCII host name"
            );
            continue;
        }
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

fn generate(
    dir: &Path,
    cert_path: &Path,
    key_path: &Path,
    hostnames: &[String],
) -> Result<(), TlsError> {
    let names = certificate_names(hostnames);
    let mut params = rcgen::CertificateParams::new(names.clone()).map_err(|e| {
        TlsError(format!(
            "cannot generate a TLS certificate for {names:?}: {e} (check the realm names, or set \
             xmpp.certificate and xmpp.private_key)"
        ))
    })?;
    // A readable subject, so an operator inspecting the certificate sees what it is for.
    let mut subject = rcgen::DistinguishedName::new();
    subject.push(
        rcgen::DnType::CommonName,
        names.first().cloned().unwrap_or_default(),
    );
    subject.push(rcgen::DnType::OrganizationName, "Switchboard (self-signed)");
    params.distinguished_name = subject;
    let key_pair = rcgen::KeyPair::generate()
        .map_err(|e| TlsError(format!("cannot generate a TLS private key: {e}")))?;
    let certificate = params
        .self_signed(&key_pair)
        .map_err(|e| TlsError(format!("cannot sign the generated TLS certificate: {e}")))?;

    create_private_dir(dir)?;
    // Key first: a certificate without its key is never left behind as if it were complete.
    write_atomically(key_path, key_pair.serialize_pem().as_bytes(), true)?;
    write_atomically(cert_path, certificate.pem().as_bytes(), false)?;
    tracing::info!(
        certificate = %cert_path.display(),
        names = ?names,
        "generated a self-signed TLS certificate for the XMPP line; clients must be told to \
         trust it, or set xmpp.certificate and xmpp.private_key"
    );
    Ok(())
}

fn create_private_dir(dir: &Path) -> Result<(), TlsError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|e| {
        TlsError(format!(
            "cannot create {} for the generated TLS certificate: {e} (make the data directory \
             writable, or set xmpp.certificate and xmpp.private_key)",
            dir.display()
        ))
    })
}

/// Writes through a temporary file and a rename, so that a crash never leaves a truncated PEM
/// file that would stop the next start. A secret file is created 0600 from the first byte.
fn write_atomically(path: &Path, contents: &[u8], secret: bool) -> Result<(), TlsError> {
    let error = |e: std::io::Error| TlsError(format!("cannot write {}: {e}", path.display()));
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    // A leftover temporary file would keep its old mode; start from nothing.
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(error(e)),
    }
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut file = options.open(&tmp).map_err(error)?;
    file.write_all(contents).map_err(error)?;
    file.sync_all().map_err(error)?;
    drop(file);
    fs::rename(&tmp, path).map_err(error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::ServerName;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A fresh directory under the system temp dir, removed when the test ends.
    struct TestDir(PathBuf);

    impl TestDir {
        fn new(name: &str) -> Self {
            let path = std::env::temp_dir().join(format!(
                "switchboard-xmpp-tls-{name}-{}",
                uuid::Uuid::new_v4()
            ));
            fs::create_dir_all(&path).unwrap();
            TestDir(path)
        }
    }

    impl Drop for TestDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn settings(dir: &TestDir) -> TlsSettings {
        TlsSettings {
            certificate: None,
            private_key: None,
            data_dir: dir.0.join("data"),
            hostnames: vec!["Example.ORG.".into(), "localhost".into()],
        }
    }

    #[test]
    fn generates_once_then_reuses() {
        let dir = TestDir::new("reuse");
        let settings = settings(&dir);
        let first = load_or_generate(&settings).unwrap();
        assert!(first.generated);
        assert_eq!(
            first.certificate_path,
            settings.data_dir.join("xmpp-tls/cert.pem")
        );
        assert!(first.config.alpn_protocols.is_empty());
        let cert = fs::read(&first.certificate_path).unwrap();
        let key_path = settings.data_dir.join("xmpp-tls/key.pem");
        let key = fs::read(&key_path).unwrap();
        assert!(String::from_utf8_lossy(&cert).contains("BEGIN CERTIFICATE"));

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&key_path), 0o600);
            assert_eq!(mode(&settings.data_dir.join("xmpp-tls")), 0o700);
        }

        let second = load_or_generate(&settings).unwrap();
        assert!(second.generated);
        assert_eq!(fs::read(&second.certificate_path).unwrap(), cert);
        assert_eq!(fs::read(&key_path).unwrap(), key);

        // A half identity is regenerated rather than used.
        fs::remove_file(&key_path).unwrap();
        let third = load_or_generate(&settings).unwrap();
        assert_ne!(fs::read(&third.certificate_path).unwrap(), cert);
        assert!(key_path.is_file());
    }

    #[test]
    fn configured_files_are_used() {
        let dir = TestDir::new("configured");
        let generated = load_or_generate(&settings(&dir)).unwrap();
        let tls_dir = dir.0.join("data/xmpp-tls");
        let configured = TlsSettings {
            certificate: Some(tls_dir.join("cert.pem")),
            private_key: Some(tls_dir.join("key.pem")),
            data_dir: dir.0.join("elsewhere"),
            hostnames: vec![],
        };
        let identity = load_or_generate(&configured).unwrap();
        assert!(!identity.generated);
        assert_eq!(identity.certificate_path, generated.certificate_path);
        // Nothing was generated for the configured case.
        assert!(!dir.0.join("elsewhere").exists());
    }

    #[test]
    fn only_one_configured_path_is_an_error() {
        let dir = TestDir::new("one");
        let mut only_cert = settings(&dir);
        only_cert.certificate = Some(dir.0.join("cert.pem"));
        let err = load_or_generate(&only_cert).unwrap_err().to_string();
        assert!(err.contains("xmpp.private_key is not"), "{err}");

        let mut only_key = settings(&dir);
        only_key.private_key = Some(dir.0.join("key.pem"));
        let err = load_or_generate(&only_key).unwrap_err().to_string();
        assert!(err.contains("xmpp.certificate is not"), "{err}");
    }

    #[test]
    fn bad_files_are_named() {
        let dir = TestDir::new("garbage");
        load_or_generate(&settings(&dir)).unwrap();
        let tls_dir = dir.0.join("data/xmpp-tls");
        let garbage = dir.0.join("garbage.pem");
        fs::write(&garbage, "this is not PEM\n").unwrap();
        let truncated = dir.0.join("truncated.pem");
        let cert_text = fs::read_to_string(tls_dir.join("cert.pem")).unwrap();
        fs::write(&truncated, &cert_text[..cert_text.len() / 2]).unwrap();

        let with = |cert: &Path, key: &Path| TlsSettings {
            certificate: Some(cert.to_path_buf()),
            private_key: Some(key.to_path_buf()),
            data_dir: dir.0.clone(),
            hostnames: vec![],
        };
        let err = |s: TlsSettings| load_or_generate(&s).unwrap_err().to_string();

        let e = err(with(&garbage, &tls_dir.join("key.pem")));
        assert!(e.contains(&garbage.display().to_string()), "{e}");
        assert!(
            e.contains("xmpp.certificate") && e.contains("no PEM CERTIFICATE"),
            "{e}"
        );

        let e = err(with(&tls_dir.join("cert.pem"), &garbage));
        assert!(e.contains(&garbage.display().to_string()), "{e}");
        assert!(
            e.contains("xmpp.private_key") && e.contains("no PEM private key"),
            "{e}"
        );

        let e = err(with(&truncated, &tls_dir.join("key.pem")));
        assert!(e.contains(&truncated.display().to_string()), "{e}");
        assert!(e.contains("not valid PEM"), "{e}");

        let missing = dir.0.join("missing.pem");
        let e = err(with(&missing, &tls_dir.join("key.pem")));
        assert!(
            e.contains("cannot read") && e.contains("missing.pem"),
            "{e}"
        );

        // A key that does not belong to the certificate.
        let other = TestDir::new("garbage-other");
        load_or_generate(&settings(&other)).unwrap();
        let e = err(with(
            &tls_dir.join("cert.pem"),
            &other.0.join("data/xmpp-tls/key.pem"),
        ));
        assert!(e.starts_with("cannot use"), "{e}");

        // A corrupted generated file is reported, not silently replaced.
        fs::write(tls_dir.join("key.pem"), "garbage").unwrap();
        let e = err(settings(&dir));
        assert!(
            e.contains("generated private key") && e.contains("key.pem"),
            "{e}"
        );
    }

    #[test]
    fn certificate_names_are_normalized() {
        let names = certificate_names(&[
            "Example.ORG.".into(),
            "example.org".into(),
            " ".into(),
            "bücher.example".into(),
            "127.0.0.1".into(),
        ]);
        assert_eq!(names, ["example.org", "127.0.0.1", "localhost"]);
    }

    fn client_config(certificate: &Path, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(certificate).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }

    /// Runs one handshake and a ping/pong; returns the ALPN protocol the server negotiated.
    async fn handshake(
        server: Arc<ServerConfig>,
        client: Arc<rustls::ClientConfig>,
        name: &str,
    ) -> Result<Option<Vec<u8>>, std::io::Error> {
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let acceptor = tokio_rustls::TlsAcceptor::from(server);
        let connector = tokio_rustls::TlsConnector::from(client);
        let name = ServerName::try_from(name.to_owned()).unwrap();
        let server_side = async move {
            let mut stream = acceptor.accept(server_io).await?;
            let mut buf = [0u8; 4];
            stream.read_exact(&mut buf).await?;
            assert_eq!(&buf, b"ping");
            stream.write_all(b"pong").await?;
            stream.flush().await?;
            Ok::<_, std::io::Error>(stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec))
        };
        let client_side = async move {
            let mut stream = connector.connect(name, client_io).await?;
            stream.write_all(b"ping").await?;
            stream.flush().await?;
            let mut buf = [0u8; 4];
            stream.read_exact(&mut buf).await?;
            assert_eq!(&buf, b"pong");
            Ok::<_, std::io::Error>(())
        };
        let (server_result, client_result) = tokio::join!(server_side, client_side);
        client_result?;
        server_result
    }

    #[tokio::test]
    async fn real_handshakes() {
        let dir = TestDir::new("handshake");
        let identity = load_or_generate(&settings(&dir)).unwrap();
        let path = &identity.certificate_path;

        // STARTTLS: no ALPN on the server, even when the client offers some.
        let alpn = handshake(
            identity.config.clone(),
            client_config(path, &[XMPP_CLIENT_ALPN]),
            "localhost",
        )
        .await
        .unwrap();
        assert_eq!(alpn, None);
        // The realm is in the certificate too.
        handshake(
            identity.config.clone(),
            client_config(path, &[]),
            "example.org",
        )
        .await
        .unwrap();

        // Direct TLS: xmpp-client is negotiated; a client without ALPN is still served.
        let direct = with_alpn(&identity.config, &[XMPP_CLIENT_ALPN]);
        assert!(identity.config.alpn_protocols.is_empty());
        let alpn = handshake(
            direct.clone(),
            client_config(path, &[b"h2", XMPP_CLIENT_ALPN]),
            "localhost",
        )
        .await
        .unwrap();
        assert_eq!(alpn.as_deref(), Some(XMPP_CLIENT_ALPN));
        handshake(direct.clone(), client_config(path, &[]), "localhost")
            .await
            .unwrap();
        assert!(
            handshake(direct, client_config(path, &[b"h2"]), "localhost")
                .await
                .is_err()
        );

        // A name the certificate does not carry is refused by the client.
        assert!(
            handshake(identity.config, client_config(path, &[]), "example.net")
                .await
                .is_err()
        );
    }
}
