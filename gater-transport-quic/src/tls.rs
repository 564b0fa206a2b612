//! TLS for the QUIC transport: rustls with the ring provider, TLS 1.3 only,
//! ALPN `gater/1`, and mutual authentication (the server requires a client
//! certificate signed by its configured CA).

use std::path::Path;
use std::sync::Arc;

use gater_core::wire::ALPN;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;

use crate::certs::{CA_CERT, CLIENT_CERT, CLIENT_KEY, SERVER_CERT, SERVER_KEY};

/// Why TLS material could not be made, loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A file does not hold the PEM it should.
    #[error("{path}: {detail}")]
    Pem {
        /// The file.
        path: String,
        /// What is wrong with it.
        detail: String,
    },
    /// A certificate directory is only partly there.
    #[error("{dir}: {detail}")]
    Incomplete {
        /// The directory.
        dir: String,
        /// What is missing.
        detail: String,
    },
    /// Certificate generation failed.
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the configuration.
    #[error("tls configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client certificate verifier could not be built (e.g. no CA).
    #[error("client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// quinn refused the rustls configuration.
    #[error("quic tls configuration: {0}")]
    Quic(String),
    /// A key exists already and replacing it was not asked for.
    #[error("{path} exists already; not replaced without force")]
    Exists {
        /// The file.
        path: String,
    },
    /// An identity or server name is not usable.
    #[error("invalid name: {0}")]
    Name(String),
}

impl TlsError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        TlsError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

/// The server's identity and the CA its clients must be signed by.
#[derive(Debug)]
pub struct ServerTls {
    cert_chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_ca: Vec<CertificateDer<'static>>,
}

impl Clone for ServerTls {
    fn clone(&self) -> Self {
        ServerTls {
            cert_chain: self.cert_chain.clone(),
            key: self.key.clone_key(),
            client_ca: self.client_ca.clone(),
        }
    }
}

impl ServerTls {
    /// A server identity; clients must present a certificate signed by one of `client_ca`.
    pub fn new(
        cert_chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        client_ca: Vec<CertificateDer<'static>>,
    ) -> Self {
        ServerTls {
            cert_chain,
            key,
            client_ca,
        }
    }

    /// Loads `server.crt`, `server.key` and `ca.crt` from `dir` (see [`crate::certs`]).
    pub fn from_dir(dir: &Path) -> Result<Self, TlsError> {
        Ok(ServerTls {
            cert_chain: load_certs(&dir.join(SERVER_CERT))?,
            key: load_key(&dir.join(SERVER_KEY))?,
            client_ca: load_certs(&dir.join(CA_CERT))?,
        })
    }

    /// The quinn server configuration, with `transport` settings.
    pub fn quinn_config(
        &self,
        transport: Arc<quinn::TransportConfig>,
    ) -> Result<quinn::ServerConfig, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = root_store(&self.client_ca)?;
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
                .build()?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.cert_chain.clone(), self.key.clone_key())?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        let crypto =
            QuicServerConfig::try_from(config).map_err(|e| TlsError::Quic(e.to_string()))?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        server.transport_config(transport);
        Ok(server)
    }
}

/// The CA a client trusts and the certificate it presents.
#[derive(Debug)]
pub struct ClientTls {
    roots: Vec<CertificateDer<'static>>,
    cert_chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Clone for ClientTls {
    fn clone(&self) -> Self {
        ClientTls {
            roots: self.roots.clone(),
            cert_chain: self.cert_chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl ClientTls {
    /// A client trusting servers signed by `roots` and presenting `cert_chain`.
    pub fn new(
        roots: Vec<CertificateDer<'static>>,
        cert_chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Self {
        ClientTls {
            roots,
            cert_chain,
            key,
        }
    }

    /// Loads `ca.crt`, `client.crt` and `client.key` from `dir` (see [`crate::certs`]).
    pub fn from_dir(dir: &Path) -> Result<Self, TlsError> {
        Ok(ClientTls {
            roots: load_certs(&dir.join(CA_CERT))?,
            cert_chain: load_certs(&dir.join(CLIENT_CERT))?,
            key: load_key(&dir.join(CLIENT_KEY))?,
        })
    }

    /// The quinn client configuration, with `transport` settings.
    pub fn quinn_config(
        &self,
        transport: Arc<quinn::TransportConfig>,
    ) -> Result<quinn::ClientConfig, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(root_store(&self.roots)?)
            .with_client_auth_cert(self.cert_chain.clone(), self.key.clone_key())?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        let crypto =
            QuicClientConfig::try_from(config).map_err(|e| TlsError::Quic(e.to_string()))?;
        let mut client = quinn::ClientConfig::new(Arc::new(crypto));
        client.transport_config(transport);
        Ok(client)
    }
}

fn root_store(certs: &[CertificateDer<'static>]) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert.clone())?;
    }
    Ok(roots)
}

/// Every certificate of a PEM file; at least one.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem_error = |detail: String| TlsError::Pem {
        path: path.display().to_string(),
        detail,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(e.to_string()))?;
    if certs.is_empty() {
        return Err(pem_error("no certificate in the file".into()));
    }
    Ok(certs)
}

/// The private key of a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Pem {
        path: path.display().to_string(),
        detail: e.to_string(),
    })
}
