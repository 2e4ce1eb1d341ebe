//! TLS for the control API (`server.tls.cert`, `server.tls.key`): rustls with the *ring*
//! provider (pure Rust and C from the crate itself, so the default build still needs no
//! system library), TLS 1.2 and 1.3, HTTP/1.1 (the API speaks nothing else).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why the TLS files cannot be used, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file cannot be read or holds no PEM block of the kind needed.
    #[error("server.tls: {path}: {detail}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// rustls refuses the pair (for example a key that does not match the certificate).
    #[error("server.tls: {cert} and {key} cannot be used together: {detail}")]
    Pair {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls's reason.
        detail: String,
    },
}

/// The largest PEM file read: a certificate chain or a key is a few KiB.
const MAX_PEM_BYTES: u64 = 1024 * 1024;

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    let fail = |detail: String| TlsError::File { path: path.to_path_buf(), detail };
    let meta = std::fs::metadata(path).map_err(|e| fail(e.to_string()))?;
    if meta.len() > MAX_PEM_BYTES {
        return Err(fail(format!("{} bytes; a PEM file here is at most {MAX_PEM_BYTES}", meta.len())));
    }
    std::fs::read(path).map_err(|e| fail(e.to_string()))
}

/// The server configuration for the two PEM files.
pub fn server_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, TlsError> {
    let cert_pem = read(cert)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem).collect::<Result<Vec<_>, _>>().map_err(|e| {
        TlsError::File { path: cert.to_path_buf(), detail: format!("not a PEM certificate: {e}") }
    })?;
    if chain.is_empty() {
        return Err(TlsError::File { path: cert.to_path_buf(), detail: "holds no CERTIFICATE block".into() });
    }
    let key_pem = read(key)?;
    let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::File {
        path: key.to_path_buf(),
        detail: format!("holds no private key in PEM (PKCS#8, PKCS#1 or SEC1): {e}"),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(chain, private))
        .map(|mut c| {
            c.alpn_protocols = vec![b"http/1.1".to_vec()];
            c
        })
        .map_err(|e| TlsError::Pair {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            detail: e.to_string(),
        })
}
