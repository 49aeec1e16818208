//! SMPP over TLS (feature `tls`): rustls with the *ring* provider.
//!
//! A [`TlsConfig`] says whom to trust, and [`Client::connect_tls`] connects,
//! makes the TLS handshake (bounded by `response_timeout`) and binds over the
//! encrypted stream. Three ways to trust the SMSC:
//!
//! - [`TlsConfig::public_roots`]: a certificate for the server name from a
//!   CA in the Mozilla root list (the `webpki-roots` crate);
//! - [`TlsConfig::ca_file`]: a certificate for the server name from the CAs in
//!   a PEM file (an operator's private CA);
//! - [`TlsConfig::pinned`]: exactly the certificate whose DER encoding has
//!   this SHA-256, whoever signed it and whatever names it carries (an SMSC
//!   with a self-signed certificate). The handshake signature is still
//!   checked against its key, so only the holder of that key gets through.
//!
//! A refused certificate fails the connection with [`Error::Tls`], whose
//! text names the reason (`invalid peer certificate: UnknownIssuer`, or the
//! SHA-256 the SMSC showed against the one pinned). No client certificate is
//! sent.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_rustls::TlsConnector;

use crate::client::{BindConfig, Client, Inbound};
use crate::error::Error;

/// A setting [`TlsConfig`] cannot use.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    /// The server name is neither a DNS name nor an IP address.
    #[error("{0:?} is not a DNS name or an IP address")]
    ServerName(String),
    /// The CA file cannot be read.
    #[error("cannot read the CA file {path}: {reason}")]
    CaFile {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The CA file holds no usable certificate.
    #[error("the CA file {path} holds no usable PEM certificate")]
    NoCertificates {
        /// The file.
        path: String,
    },
    /// A pin is not 32 bytes of hex.
    #[error(
        "a certificate pin is the SHA-256 of the certificate's DER: 64 hex digits, pairs may be \
         separated by ':' (openssl x509 -noout -fingerprint -sha256)"
    )]
    Pin,
}

/// Whom to trust when connecting to an SMSC over TLS. Cheap to clone.
#[derive(Clone)]
pub struct TlsConfig {
    connector: TlsConnector,
    server_name: ServerName<'static>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn parse_server_name(name: &str) -> Result<ServerName<'static>, TlsConfigError> {
    ServerName::try_from(name.to_owned()).map_err(|_| TlsConfigError::ServerName(name.to_owned()))
}

fn with_roots(name: &str, roots: RootCertStore) -> Result<TlsConfig, TlsConfigError> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConfig {
        connector: TlsConnector::from(Arc::new(config)),
        server_name: parse_server_name(name)?,
    })
}

impl TlsConfig {
    /// Trusts certificates for `server_name` from the Mozilla root CAs.
    pub fn public_roots(server_name: &str) -> Result<Self, TlsConfigError> {
        let roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        with_roots(server_name, roots)
    }

    /// Trusts certificates for `server_name` from the CAs in the PEM file at
    /// `path` (every `CERTIFICATE` block in it).
    pub fn ca_file(server_name: &str, path: &Path) -> Result<Self, TlsConfigError> {
        let shown = path.display().to_string();
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| TlsConfigError::CaFile {
                path: shown.clone(),
                reason: e.to_string(),
            })?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsConfigError::CaFile {
                path: shown.clone(),
                reason: e.to_string(),
            })?;
        let mut roots = RootCertStore::empty();
        let (added, _ignored) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(TlsConfigError::NoCertificates { path: shown });
        }
        with_roots(server_name, roots)
    }

    /// Trusts exactly the certificate whose DER encoding has this SHA-256
    /// (see [`parse_sha256_pin`]). `server_name` only goes into the
    /// handshake (SNI); it is not checked against the certificate.
    pub fn pinned(server_name: &str, sha256: [u8; 32]) -> Result<Self, TlsConfigError> {
        let provider = provider();
        let verifier = PinnedCertificate {
            sha256,
            algorithms: provider.signature_verification_algorithms,
        };
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        Ok(TlsConfig {
            connector: TlsConnector::from(Arc::new(config)),
            server_name: parse_server_name(server_name)?,
        })
    }

    /// Makes the TLS handshake over `stream`, bounded by `limit`.
    pub async fn handshake<S>(
        &self,
        stream: S,
        limit: std::time::Duration,
    ) -> Result<tokio_rustls::client::TlsStream<S>, Error>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let handshake = self.connector.connect(self.server_name.clone(), stream);
        match timeout(limit, handshake).await {
            Ok(Ok(tls)) => Ok(tls),
            Ok(Err(e)) => Err(Error::Tls(readable(e))),
            Err(_) => Err(Error::Tls(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no handshake within {limit:?}"),
            ))),
        }
    }
}

/// rustls shows a verifier's own error with `Debug`; ours reads better as
/// its `Display`.
fn readable(e: std::io::Error) -> std::io::Error {
    let inner = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
    if let Some(rustls::Error::InvalidCertificate(CertificateError::Other(other))) = inner {
        let text = format!("invalid peer certificate: {}", other.0);
        return std::io::Error::new(e.kind(), text);
    }
    e
}

/// Reads a certificate pin: the SHA-256 of a certificate's DER as 64 hex
/// digits, either case, with or without `:` between pairs (as
/// `openssl x509 -noout -fingerprint -sha256` prints it).
pub fn parse_sha256_pin(text: &str) -> Result<[u8; 32], TlsConfigError> {
    let hex: Vec<u8> = text.trim().bytes().filter(|&b| b != b':').collect();
    if hex.len() != 64 {
        return Err(TlsConfigError::Pin);
    }
    let mut pin = [0u8; 32];
    for (i, pair) in hex.chunks(2).enumerate() {
        let digits = std::str::from_utf8(pair).map_err(|_| TlsConfigError::Pin)?;
        pin[i] = u8::from_str_radix(digits, 16).map_err(|_| TlsConfigError::Pin)?;
    }
    Ok(pin)
}

fn colon_hex(bytes: &[u8]) -> String {
    let parts: Vec<String> = bytes.iter().map(|b| format!("{b:02X}")).collect();
    parts.join(":")
}

/// The SMSC showed a certificate other than the pinned one.
#[derive(Debug, thiserror::Error)]
#[error("the SMSC's certificate has SHA-256 {got}, not the pinned {want}")]
struct PinMismatch {
    got: String,
    want: String,
}

#[derive(Debug)]
struct PinnedCertificate {
    sha256: [u8; 32],
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if got == self.sha256 {
            return Ok(ServerCertVerified::assertion());
        }
        let mismatch = PinMismatch {
            got: colon_hex(&got),
            want: colon_hex(&self.sha256),
        };
        Err(rustls::Error::InvalidCertificate(CertificateError::Other(
            rustls::OtherError(Arc::new(mismatch)),
        )))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

impl Client {
    /// Connects over TCP, makes the TLS handshake that `tls` describes and
    /// binds over it. Connecting and the handshake are each bounded by
    /// `response_timeout`; a refused certificate is [`Error::Tls`].
    pub async fn connect_tls(
        addr: impl ToSocketAddrs,
        tls: &TlsConfig,
        config: BindConfig,
    ) -> Result<(Client, mpsc::Receiver<Inbound>), Error> {
        let stream = timeout(config.response_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| {
                Error::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connecting to the SMSC timed out",
                ))
            })??;
        stream.set_nodelay(true)?;
        let stream = tls
            .handshake(crate::quickack::QuickAck(stream), config.response_timeout)
            .await?;
        Client::bind(stream, config).await
    }
}
