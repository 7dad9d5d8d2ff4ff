//! TLS of the servers (`receive: {tls: {cert, key, client-ca}}`, `api: {tls}`) and the PEM
//! files both ends of a link read (the forward sink's `tls: {ca, cert, key}` uses
//! [`read_certs`] and [`read_key`] too).
//!
//! rustls with the ring provider, TLS 1.2 and 1.3 (rustls' safe defaults), ALPN `http/1.1`.
//! With `client-ca` every client must present a certificate that CA signed (mutual TLS); keys and
//! tokens are checked after the handshake as without TLS. Files are read at start, each at most
//! [`MAX_PEM_BYTES`]; every error names the file and what is wrong with it. Owns nothing on
//! disk; called by `receive::start`, `api::start` and the forward sink.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Largest PEM file read (a chain of a few certificates is a few KiB).
pub const MAX_PEM_BYTES: u64 = 1 << 20;

/// `receive: {tls}`: the receiver's certificate and key, and optionally the CA its clients'
/// certificates must be signed by.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct TlsOptions {
    /// The receiver's certificate chain, PEM (its own certificate first).
    pub cert: PathBuf,
    /// Its private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CA certificates, PEM: when set, every sender must present a client certificate one of
    /// them signed (its `tls: {cert, key}`), else the handshake fails. None by default.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
}

/// Why TLS cannot be set up; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}: larger than {MAX_PEM_BYTES} bytes: not a PEM file of certificates or a key", path.display())]
    TooLarge { path: PathBuf },
    #[error("{}: not PEM ({message})", path.display())]
    Pem { path: PathBuf, message: String },
    #[error("{}: no certificate in it (expected -----BEGIN CERTIFICATE-----)", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{}: no private key in it (expected a PKCS#8, PKCS#1 or SEC1 PEM key)", path.display())]
    NoKey { path: PathBuf },
    #[error("{}: {message}", path.display())]
    Unusable { path: PathBuf, message: String },
}

/// The crypto provider both ends use.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The bytes of the PEM file at `path` (at most [`MAX_PEM_BYTES`]).
pub fn read_pem(path: &Path) -> Result<Vec<u8>, TlsError> {
    let read_error = |source| TlsError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(TlsError::TooLarge { path: path.to_owned() });
    }
    Ok(bytes)
}

/// Every certificate of the PEM file at `path` (at least one).
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read_pem(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { path: path.to_owned() });
    }
    Ok(certs)
}

/// The (first) private key of the PEM file at `path`.
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read_pem(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoKey { path: path.to_owned() },
        e => TlsError::Pem {
            path: path.to_owned(),
            message: e.to_string(),
        },
    })
}

/// The roots in the PEM file at `path`, for verifying peers.
pub fn read_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path)? {
        roots.add(cert).map_err(|e| TlsError::Unusable {
            path: path.to_owned(),
            message: format!("not a CA certificate rustls can use: {e}"),
        })?;
    }
    Ok(roots)
}

/// The receiver's TLS configuration from its options.
pub fn server_config(options: &TlsOptions) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let unusable = |path: &Path, e: rustls::Error| TlsError::Unusable {
        path: path.to_owned(),
        message: e.to_string(),
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| unusable(&options.cert, e))?;
    let builder = match &options.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(read_roots(ca)?), provider)
                .build()
                .map_err(|e| TlsError::Unusable {
                    path: ca.clone(),
                    message: format!("cannot verify clients with it: {e}"),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let certs = read_certs(&options.cert)?;
    let key = read_key(&options.key)?;
    let mut config = builder.with_single_cert(certs, key).map_err(|e| TlsError::Unusable {
        path: options.key.clone(),
        message: format!("does not go with the certificate {}: {e}", options.cert.display()),
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_that_are_not_certificates_or_keys_are_errors_naming_them() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("missing.pem");
        assert!(read_certs(&missing).unwrap_err().to_string().contains("missing.pem"));
        let empty = tmp.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let e = read_certs(&empty).unwrap_err().to_string();
        assert!(e.contains("empty.pem") && e.contains("no certificate"), "{e}");
        let e = read_key(&empty).unwrap_err().to_string();
        assert!(e.contains("no private key"), "{e}");
        let garbage = tmp.path().join("garbage.pem");
        std::fs::write(
            &garbage,
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let e = read_certs(&garbage).unwrap_err().to_string();
        assert!(e.contains("garbage.pem") && e.contains("not PEM"), "{e}");
        let huge = tmp.path().join("huge.pem");
        std::fs::write(&huge, vec![b'a'; MAX_PEM_BYTES as usize + 1]).unwrap();
        assert!(read_certs(&huge).unwrap_err().to_string().contains("larger than"));
        let options = TlsOptions {
            cert: empty.clone(),
            key: empty,
            client_ca: None,
        };
        assert!(server_config(&options).is_err());
    }
}
