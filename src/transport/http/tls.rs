//! HTTPS: a rustls server configuration from PEM files, optionally requiring client
//! certificates (mTLS) signed by a given CA.
//!
//! Why rustls with the ring provider named explicitly: no OpenSSL on the build or target
//! machine, and naming the provider keeps the choice independent of which rustls features
//! other dependencies turn on. Handshakes run on the shard's executor through
//! futures-rustls, over glommio's stream, and are bounded by `read_timeout` in `serve`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{VerifierBuilderError, WebPkiClientVerifier};
use rustls::{RootCertStore, ServerConfig};
use thiserror::Error;

/// The only application protocol this layer speaks.
const ALPN_HTTP_1_1: &[u8] = b"http/1.1";

/// Why a TLS configuration could not be built.
#[derive(Debug, Error)]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("cannot read the {what} from {}: {source}", path.display())]
    Pem {
        what: &'static str,
        path: PathBuf,
        source: pem::Error,
    },
    /// A certificate file holds no certificate.
    #[error("{} holds no certificate", path.display())]
    NoCertificate { path: PathBuf },
    /// A client CA certificate was refused as a trust anchor.
    #[error("client CA {}: {source}", path.display())]
    ClientCa {
        path: PathBuf,
        source: rustls::Error,
    },
    /// The client-certificate verifier could not be built.
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] VerifierBuilderError),
    /// rustls refused the configuration (e.g. the key does not match the certificate).
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// Accepts TLS connections for `serve`. Cheap to clone (the configuration is shared).
#[derive(Clone)]
pub struct TlsAcceptor {
    inner: futures_rustls::TlsAcceptor,
}

impl TlsAcceptor {
    /// The server certificate chain and key from PEM files. With `client_ca`, every client
    /// must present a certificate signed by that CA (mTLS); without, none is asked for.
    pub fn from_pem_files(
        cert: &Path,
        key: &Path,
        client_ca: Option<&Path>,
    ) -> Result<TlsAcceptor, TlsError> {
        let chain = load_certs(cert, "certificate chain")?;
        let key = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Pem {
            what: "private key",
            path: key.to_path_buf(),
            source,
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?;
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => builder.with_client_cert_verifier(client_verifier(ca, provider)?),
        };
        let mut config = builder.with_single_cert(chain, key)?;
        config.alpn_protocols = vec![ALPN_HTTP_1_1.to_vec()];
        Ok(TlsAcceptor::from_config(Arc::new(config)))
    }

    /// An acceptor over a configuration built elsewhere.
    pub fn from_config(config: Arc<ServerConfig>) -> TlsAcceptor {
        TlsAcceptor {
            inner: futures_rustls::TlsAcceptor::from(config),
        }
    }

    pub(crate) fn acceptor(&self) -> &futures_rustls::TlsAcceptor {
        &self.inner
    }
}

impl std::fmt::Debug for TlsAcceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsAcceptor")
    }
}

fn client_verifier(
    ca: &Path,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(ca, "client CA")? {
        roots.add(cert).map_err(|source| TlsError::ClientCa {
            path: ca.to_path_buf(),
            source,
        })?;
    }
    Ok(WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build()?)
}

pub(crate) fn load_certs(
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem_error = |source| TlsError::Pem {
        what,
        path: path.to_path_buf(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(pem_error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_error)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}
