//! The `[tls]` section and the rustls server configuration made from it.
//!
//! [`load`] reads the PEM files and builds an `Arc<ServerConfig>`; it is
//! plain blocking file I/O, run at start-up and by a reload, never on a
//! shard's hot path. [`ServerConfigHolder`] is what the listeners read at
//! each accept: a reload swaps the configuration inside it, connections
//! already established keep the one they started with.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::ring;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;

/// `[tls]`: the MQTT-over-TLS listener. It runs only when `cert_file` and
/// `key_file` are both set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    pub listen: SocketAddr,
    /// The server's certificate chain, leaf first (PEM).
    pub cert_file: String,
    /// The server's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: String,
    /// CA certificates that client certificates must chain to (PEM).
    pub ca_file: String,
    pub client_certs: ClientCerts,
    /// Refuse TLS 1.2.
    pub tls13_only: bool,
    /// The client certificate's CN (else its first DNS name) replaces the
    /// CONNECT's user name; needs `client_certs = "required"`.
    pub use_identity_as_username: bool,
    /// Time a new socket has to complete the TLS handshake (PROXY header
    /// included); the CONNECT deadline starts after it.
    pub handshake_timeout_s: u64,
    /// Expect a PROXY protocol header (v1 or v2) before the handshake.
    pub proxy_protocol: bool,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 8883)),
            cert_file: String::new(),
            key_file: String::new(),
            ca_file: String::new(),
            client_certs: ClientCerts::Off,
            tls13_only: false,
            use_identity_as_username: false,
            handshake_timeout_s: 10,
            proxy_protocol: false,
        }
    }
}

/// Whether clients present certificates, checked against `ca_file`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientCerts {
    Off,
    /// A certificate is verified when one is sent; clients may send none.
    Optional,
    Required,
}

/// Why the TLS configuration cannot be used. One line for the operator.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("invalid setting {key}: {message}")]
    Invalid { key: &'static str, message: String },
    #[error("cannot read {what} {path}: {message}")]
    File {
        what: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("{what} {path} holds no {item}")]
    Empty {
        what: &'static str,
        path: PathBuf,
        item: &'static str,
    },
    #[error("TLS configuration refused: {0}")]
    Rustls(String),
}

impl TlsConfig {
    /// True when the listener is to run.
    pub fn enabled(&self) -> bool {
        !self.cert_file.is_empty() && !self.key_file.is_empty()
    }

    /// Checks the relations between keys, without reading any file.
    pub fn validate(&self) -> Result<(), TlsError> {
        let invalid = |key, message: &str| {
            Err(TlsError::Invalid {
                key,
                message: message.to_string(),
            })
        };
        if self.cert_file.is_empty() != self.key_file.is_empty() {
            return invalid("tls.cert_file", "cert_file and key_file go together");
        }
        if self.client_certs != ClientCerts::Off && self.ca_file.is_empty() {
            return invalid("tls.ca_file", "client certificates need a ca_file");
        }
        if self.use_identity_as_username && self.client_certs != ClientCerts::Required {
            return invalid(
                "tls.use_identity_as_username",
                "needs client_certs = \"required\"",
            );
        }
        if self.handshake_timeout_s == 0 {
            return invalid("tls.handshake_timeout_s", "must be at least 1");
        }
        Ok(())
    }
}

/// Reads the files named by `config` and builds the server configuration.
/// Every failure says which file and why, so a reload that fails can keep
/// the old configuration and log the reason.
pub fn load(config: &TlsConfig) -> Result<Arc<ServerConfig>, TlsError> {
    config.validate()?;
    let chain = read_certs("cert_file", &config.cert_file)?;
    let key = read_key(&config.key_file)?;
    let provider = Arc::new(ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = if config.tls13_only {
        &[&rustls::version::TLS13]
    } else {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let builder = match config.client_certs {
        ClientCerts::Off => builder.with_no_client_auth(),
        mode => {
            let mut roots = RootCertStore::empty();
            for ca in read_certs("ca_file", &config.ca_file)? {
                roots.add(ca).map_err(|e| TlsError::File {
                    what: "ca_file",
                    path: PathBuf::from(&config.ca_file),
                    message: e.to_string(),
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if mode == ClientCerts::Optional {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier
                .build()
                .map_err(|e| TlsError::Rustls(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let server = builder
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Rustls(format!("certificate and key: {e}")))?;
    Ok(Arc::new(server))
}

fn read_certs(what: &'static str, path: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let file_error = |message: String| TlsError::File {
        what,
        path: PathBuf::from(path),
        message,
    };
    let certs = CertificateDer::pem_file_iter(Path::new(path))
        .map_err(|e| file_error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            what,
            path: PathBuf::from(path),
            item: "certificate",
        });
    }
    Ok(certs)
}

fn read_key(path: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(Path::new(path)).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::Empty {
            what: "key_file",
            path: PathBuf::from(path),
            item: "private key",
        },
        other => TlsError::File {
            what: "key_file",
            path: PathBuf::from(path),
            message: other.to_string(),
        },
    })
}

/// The server configuration the TLS listeners of every shard use, swapped
/// whole by a reload.
///
/// Shared by all shards rather than one per shard: a reload is one
/// [`ServerConfigHolder::replace`] from whichever thread loaded the files,
/// and an accept takes a read lock for the time of an `Arc` clone, which a
/// handshake's cost dwarfs.
#[derive(Clone)]
pub struct ServerConfigHolder(Arc<RwLock<Arc<ServerConfig>>>);

impl ServerConfigHolder {
    pub fn new(config: Arc<ServerConfig>) -> ServerConfigHolder {
        ServerConfigHolder(Arc::new(RwLock::new(config)))
    }

    /// The configuration for a connection accepted now.
    pub fn current(&self) -> Arc<ServerConfig> {
        // A writer cannot panic while holding the lock (it only swaps an
        // `Arc`), so a poisoned lock still holds a whole value.
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Makes `config` the one new connections get; established connections
    /// keep theirs.
    pub fn replace(&self, config: Arc<ServerConfig>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = config;
    }

    /// Loads `config`'s files and, when they are good, makes them current;
    /// when not, the configuration in force stays and the error says why.
    pub fn reload(&self, config: &TlsConfig) -> Result<(), TlsError> {
        let fresh = load(config)?;
        self.replace(fresh);
        Ok(())
    }
}

impl fmt::Debug for ServerConfigHolder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServerConfigHolder")
    }
}

#[cfg(test)]
#[path = "tls_config_tests.rs"]
mod tests;
