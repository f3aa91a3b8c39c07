//! Dialing the controller: a gRPC channel over plain text (`http://`, loopback and labs that
//! chose `--insecure`) or TLS (`https://`), with a client certificate when the caller has
//! one. Agents and `controllerctl` both dial through here.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// Errors of dialing the controller.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("controller address {0:?}: {1}")]
    Address(String, String),
    #[error("connecting to {0}: {1}")]
    Connect(String, #[source] tonic::transport::Error),
}

/// The TLS files of a client (PEM). All optional: `ca` defaults to none (then an
/// `https://` controller cannot be verified and dialing fails), no certificate means the
/// client authenticates otherwise (operators: a token) or not at all.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientTls {
    /// The CA that signed the controller's certificate.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// This client's certificate (agents: with SAN URI `fleetbench://agent/<name>`).
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// The private key of `cert`.
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// The controller's name in its certificate when it differs from the address's host.
    #[serde(default)]
    pub server_name: Option<String>,
}

impl ClientTls {
    /// Whether any TLS file is configured.
    pub fn is_configured(&self) -> bool {
        self.ca.is_some() || self.cert.is_some() || self.key.is_some()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, DialError> {
    std::fs::read(path).map_err(|source| DialError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// An endpoint for `url` with `tls` applied (not yet connected).
pub fn endpoint(url: &str, tls: &ClientTls) -> Result<Endpoint, DialError> {
    let bad = |why: &str| DialError::Address(url.to_owned(), why.to_owned());
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| bad(&e.to_string()))?
        .connect_timeout(Duration::from_secs(10))
        .tcp_nodelay(true);
    if url.starts_with("http://") {
        if tls.is_configured() {
            return Err(bad(
                "TLS files are configured but the address is http://; use https://",
            ));
        }
        return Ok(endpoint);
    }
    if !url.starts_with("https://") {
        return Err(bad("must start with http:// or https://"));
    }
    let mut config = ClientTlsConfig::new();
    if let Some(ca) = &tls.ca {
        config = config.ca_certificate(Certificate::from_pem(read(ca)?));
    }
    match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => {
            config = config.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        (None, None) => {}
        _ => return Err(bad("a client certificate needs both cert and key")),
    }
    if let Some(name) = &tls.server_name {
        config = config.domain_name(name.clone());
    }
    endpoint
        .tls_config(config)
        .map_err(|e| bad(&format!("TLS: {e}")))
}

/// Connects to the controller at `url`.
pub async fn connect(url: &str, tls: &ClientTls) -> Result<Channel, DialError> {
    endpoint(url, tls)?
        .connect()
        .await
        .map_err(|e| DialError::Connect(url.to_owned(), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_tls_files_must_agree() {
        let none = ClientTls::default();
        assert!(endpoint("http://127.0.0.1:50051", &none).is_ok());
        let e = endpoint("ftp://x", &none).unwrap_err();
        assert!(e.to_string().contains("http:// or https://"), "{e}");
        let ca = ClientTls {
            ca: Some("/nonexistent/ca.pem".into()),
            ..ClientTls::default()
        };
        let e = endpoint("http://127.0.0.1:1", &ca).unwrap_err();
        assert!(e.to_string().contains("use https://"), "{e}");
        let e = endpoint("https://127.0.0.1:1", &ca).unwrap_err();
        assert!(matches!(e, DialError::Read { .. }), "{e}");
        let half = ClientTls {
            cert: Some("c.pem".into()),
            ..ClientTls::default()
        };
        let e = endpoint("https://127.0.0.1:1", &half).unwrap_err();
        assert!(e.to_string().contains("both cert and key"), "{e}");
    }
}
