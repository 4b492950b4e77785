//! TLS for remoting connections, with rustls (no OpenSSL) and the `ring` provider.
//!
//! A server takes a [`ServerTls`] (certificate chain and key) and a [`TlsMode`]: as Java's
//! `tls.server.mode`, `disabled` serves plain TCP only, `permissive` serves both, telling a TLS
//! client by its first byte (0x16, a handshake record), and `enforcing` serves TLS only. A client
//! takes a [`ClientTls`]: the roots it trusts and the name it expects, or, for tests only,
//! [`ClientTls::dangerous_no_verify`].

use std::fmt;
use std::io;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// The first byte of a TLS connection: a handshake record.
pub(crate) const TLS_HANDSHAKE_BYTE: u8 = 0x16;

/// How a server treats TLS (Java `tls.server.mode`).
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq)]
pub enum TlsMode {
    /// Plain TCP only; a connection that starts a TLS handshake is closed.
    Disabled,
    /// Both: TLS when the client's first byte starts a handshake, plain otherwise. Java's
    /// default.
    #[default]
    Permissive,
    /// TLS only; a plain connection is closed.
    Enforcing,
}

impl FromStr for TlsMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "disabled" => Ok(Self::Disabled),
            "permissive" => Ok(Self::Permissive),
            "enforcing" => Ok(Self::Enforcing),
            other => Err(format!(
                "TLS mode {other:?}: expected disabled, permissive or enforcing"
            )),
        }
    }
}

impl fmt::Display for TlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Disabled => "disabled",
            Self::Permissive => "permissive",
            Self::Enforcing => "enforcing",
        })
    }
}

/// TLS settings could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// PEM text held no certificate.
    #[error("no certificate in {what}")]
    NoCertificate {
        /// Where it was looked for.
        what: String,
    },
    /// PEM text held no private key (PKCS#8, PKCS#1 or SEC1).
    #[error("no private key in {what}")]
    NoPrivateKey {
        /// Where it was looked for.
        what: String,
    },
    /// PEM text did not parse.
    #[error("bad PEM in {what}: {reason}")]
    Pem {
        /// Where.
        what: String,
        /// The parser's reason.
        reason: String,
    },
    /// rustls refused the certificates, key or settings.
    #[error(transparent)]
    Rustls(#[from] rustls::Error),
    /// A server name that is neither a DNS name nor an IP address.
    #[error("{0:?} is not a valid TLS server name")]
    BadServerName(String),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })
}

fn certificates(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            what: what.to_owned(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            what: what.to_owned(),
        });
    }
    Ok(certs)
}

/// A server's TLS: its certificate chain, its key and its [`TlsMode`].
#[derive(Clone)]
pub struct ServerTls {
    pub(crate) config: Arc<rustls::ServerConfig>,
    pub(crate) mode: TlsMode,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// From PEM text: the certificate chain (leaf first) and the private key. Mode
    /// [`TlsMode::Permissive`].
    ///
    /// # Errors
    /// [`TlsError`] when either does not parse or rustls refuses the pair.
    pub fn from_pem(cert_chain: &[u8], key: &[u8]) -> Result<Self, TlsError> {
        let certs = certificates(cert_chain, "the certificate chain")?;
        let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| match e {
            rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoPrivateKey {
                what: "the key".into(),
            },
            e => TlsError::Pem {
                what: "the key".into(),
                reason: e.to_string(),
            },
        })?;
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs, key)?;
        Ok(Self {
            config: Arc::new(config),
            mode: TlsMode::Permissive,
        })
    }

    /// From PEM files, as [`ServerTls::from_pem`].
    ///
    /// # Errors
    /// [`TlsError::Read`], and as for [`ServerTls::from_pem`].
    pub fn from_pem_files(cert_chain: &Path, key: &Path) -> Result<Self, TlsError> {
        Self::from_pem(&read(cert_chain)?, &read(key)?)
    }

    /// Sets the mode (default [`TlsMode::Permissive`]).
    #[must_use]
    pub fn with_mode(mut self, mode: TlsMode) -> Self {
        self.mode = mode;
        self
    }

    /// The mode.
    pub fn mode(&self) -> TlsMode {
        self.mode
    }

    /// The same certificate, key and mode, offering `protocols` by ALPN (gRPC's clients
    /// insist on `h2`).
    #[must_use]
    pub fn with_alpn(&self, protocols: &[&[u8]]) -> Self {
        let mut config = (*self.config).clone();
        config.alpn_protocols = alpn(protocols);
        Self {
            config: Arc::new(config),
            mode: self.mode,
        }
    }

    /// The server's side of a TLS handshake on `stream`, for protocols other than remoting
    /// (remoting servers take a [`ServerTls`] in their config and do this themselves).
    ///
    /// # Errors
    /// The handshake's.
    pub async fn accept(
        &self,
        stream: tokio::net::TcpStream,
    ) -> io::Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>> {
        tokio_rustls::TlsAcceptor::from(Arc::clone(&self.config))
            .accept(stream)
            .await
    }
}

/// ALPN protocol names as rustls takes them.
fn alpn(protocols: &[&[u8]]) -> Vec<Vec<u8>> {
    protocols.iter().map(|p| p.to_vec()).collect()
}

/// Whether a connection's first byte starts a TLS handshake (what a [`TlsMode::Permissive`]
/// server tells its clients apart by); `None` when the connection ends before sending one.
///
/// # Errors
/// The socket's.
pub async fn starts_tls(stream: &tokio::net::TcpStream) -> io::Result<Option<bool>> {
    let mut first = [0u8; 1];
    Ok(match stream.peek(&mut first).await? {
        0 => None,
        _ => Some(first[0] == TLS_HANDSHAKE_BYTE),
    })
}

/// A client's TLS: the roots it trusts and, optionally, the server name to verify (by default
/// the host of the address dialled, an IP address or a DNS name).
#[derive(Clone)]
pub struct ClientTls {
    pub(crate) config: Arc<rustls::ClientConfig>,
    pub(crate) server_name: Option<ServerName<'static>>,
    verifies: bool,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("server_name", &self.server_name)
            .field("verifies", &self.verifies)
            .finish_non_exhaustive()
    }
}

/// Two settings are equal when they are clones of one (rustls settings have no equality).
impl PartialEq for ClientTls {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.config, &other.config) && self.server_name == other.server_name
    }
}

impl ClientTls {
    /// Trusts the certificates in `pem` as roots (a self-signed server certificate may be its
    /// own root).
    ///
    /// # Errors
    /// [`TlsError`] when `pem` holds no certificate or rustls refuses one.
    pub fn with_roots_pem(pem: &[u8]) -> Result<Self, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in certificates(pem, "the trusted roots")? {
            roots.add(cert)?;
        }
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self {
            config: Arc::new(config),
            server_name: None,
            verifies: true,
        })
    }

    /// Trusts the roots in a PEM file, as [`ClientTls::with_roots_pem`].
    ///
    /// # Errors
    /// [`TlsError::Read`], and as for [`ClientTls::with_roots_pem`].
    pub fn with_roots_pem_file(path: &Path) -> Result<Self, TlsError> {
        Self::with_roots_pem(&read(path)?)
    }

    /// Encrypts without checking who the server is: any certificate, any name. For tests and
    /// local experiments only: anyone on the path can impersonate the server.
    ///
    /// # Errors
    /// [`TlsError::Rustls`] if the crypto provider supports no safe protocol version.
    pub fn dangerous_no_verify() -> Result<Self, TlsError> {
        let provider = provider();
        let verifier = Arc::new(NoVerify(Arc::clone(&provider)));
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(Self {
            config: Arc::new(config),
            server_name: None,
            verifies: false,
        })
    }

    /// Verifies the server's certificate against `name` instead of the host dialled.
    ///
    /// # Errors
    /// [`TlsError::BadServerName`] for a name that is neither a DNS name nor an IP address.
    pub fn with_server_name(mut self, name: &str) -> Result<Self, TlsError> {
        self.server_name = Some(
            ServerName::try_from(name.to_owned())
                .map_err(|_| TlsError::BadServerName(name.to_owned()))?,
        );
        Ok(self)
    }

    /// The same roots and name, offering `protocols` by ALPN (gRPC servers insist on `h2`).
    #[must_use]
    pub fn with_alpn(&self, protocols: &[&[u8]]) -> Self {
        let mut config = (*self.config).clone();
        config.alpn_protocols = alpn(protocols);
        Self {
            config: Arc::new(config),
            server_name: self.server_name.clone(),
            verifies: self.verifies,
        }
    }

    /// The client's side of a TLS handshake on `stream` to `addr` (`host:port`, whose host is
    /// the name verified unless [`ClientTls::with_server_name`] set one), for protocols other
    /// than remoting.
    ///
    /// # Errors
    /// An `addr` whose host is no valid server name, and the handshake's.
    pub async fn connect(
        &self,
        addr: &str,
        stream: tokio::net::TcpStream,
    ) -> io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        let name = self.server_name_for(addr)?;
        tokio_rustls::TlsConnector::from(Arc::clone(&self.config))
            .connect(name, stream)
            .await
    }

    /// The name to verify for a connection to `addr` (`host:port`).
    pub(crate) fn server_name_for(&self, addr: &str) -> io::Result<ServerName<'static>> {
        if let Some(name) = &self.server_name {
            return Ok(name.clone());
        }
        let host = addr
            .rsplit_once(':')
            .map_or(addr, |(host, _)| host)
            .trim_start_matches('[')
            .trim_end_matches(']');
        ServerName::try_from(host.to_owned()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{host:?} is not a valid TLS server name"),
            )
        })
    }
}

/// Accepts any server certificate; still checks the handshake signatures, so the connection
/// is encrypted to whoever holds the presented certificate's key.
#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
