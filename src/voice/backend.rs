//! Chat backends (shell): the configured URLs made ready at start-up (for
//! `wss://`, the TLS client configuration and its roots, read once), and
//! on each shard the addresses a backend's name resolves to.
//!
//! Names are resolved on the shard's glommio blocking thread, never on the
//! shard's own: `getaddrinfo` can wait seconds on a slow DNS server, and
//! every connection of the shard would wait with it. One lookup per backend
//! runs at a time and every conversation waiting for it gets its answer; a
//! result is kept for [`RESOLVED_TTL`] (a failure for [`FAILED_TTL`]), so a
//! burst of hellos makes one lookup and a conversation opened after that
//! looks the name up again. An IP address in the URL is not looked up.
//!
//! Roots: the system's (`rustls-native-certs`, which reads the bundle the
//! distribution keeps, e.g. Debian's `/etc/ssl/certs/ca-certificates.crt`,
//! or `SSL_CERT_FILE`), or `voice.chat_ca_file` instead of them.

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use rustls::crypto::ring;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};

use crate::transport::client::{HandshakeError, TlsTarget};
use crate::voice::config::BackendUrl;
use crate::voice::metrics::BackendTlsFailure;

/// How long a backend's addresses are used before they are looked up again.
pub const RESOLVED_TTL: Duration = Duration::from_secs(30);

/// How long a failed lookup is the answer: conversations opened meanwhile
/// fail at once instead of queueing lookups on the blocking thread.
pub const FAILED_TTL: Duration = Duration::from_secs(2);

/// Why the backends cannot be used; checked before anything starts.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("invalid backend URL {url:?}: {message}")]
    Url { url: String, message: String },
    #[error("cannot use voice.chat_ca_file {path}: {message}")]
    CaFile { path: String, message: String },
    #[error(
        "no system root certificates for wss:// backends ({0}); install ca-certificates or set voice.chat_ca_file"
    )]
    NoRoots(String),
    #[error("TLS client configuration refused: {0}")]
    Rustls(String),
}

/// A backend as configured: made once at start-up, given to every shard.
#[derive(Debug, Clone)]
pub struct BackendSpec {
    pub url: String,
    host: String,
    port: u16,
    /// The URL names an IP address: nothing to resolve.
    literal: Option<IpAddr>,
    tls: Option<TlsTarget>,
}

/// The backends of `urls`; the TLS client configuration is made (and the
/// roots read) only when one of them is `wss://`.
pub fn specs<'a>(
    urls: impl IntoIterator<Item = &'a String>,
    ca_file: &str,
) -> Result<Vec<BackendSpec>, BackendError> {
    let mut config: Option<Arc<ClientConfig>> = None;
    let mut specs = Vec::new();
    for url in urls {
        let parsed = BackendUrl::parse(url).map_err(|message| BackendError::Url {
            url: url.clone(),
            message,
        })?;
        let literal = parsed.host.parse::<IpAddr>().ok();
        let tls = if parsed.tls {
            let config = match &config {
                Some(c) => c.clone(),
                None => config.insert(client_config(ca_file)?).clone(),
            };
            let name =
                ServerName::try_from(parsed.host.clone()).map_err(|e| BackendError::Url {
                    url: url.clone(),
                    message: e.to_string(),
                })?;
            Some(TlsTarget { config, name })
        } else {
            None
        };
        specs.push(BackendSpec {
            url: url.clone(),
            host: parsed.host,
            port: parsed.port,
            literal,
            tls,
        });
    }
    Ok(specs)
}

/// The client configuration for `wss://` backends: TLS 1.2 and 1.3 with the
/// ring provider, the server verified against `ca_file` or the system's
/// roots, no client certificate.
pub fn client_config(ca_file: &str) -> Result<Arc<ClientConfig>, BackendError> {
    let mut roots = RootCertStore::empty();
    if ca_file.is_empty() {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::warn!(error = %e, "a system root certificate source could not be read");
        }
        let (added, _ignored) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            let why = match found.errors.first() {
                Some(e) => e.to_string(),
                None => "none found".to_string(),
            };
            return Err(BackendError::NoRoots(why));
        }
    } else {
        let ca_error = |message: String| BackendError::CaFile {
            path: ca_file.to_string(),
            message,
        };
        let certs = CertificateDer::pem_file_iter(Path::new(ca_file))
            .map_err(|e| ca_error(e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ca_error(e.to_string()))?;
        if certs.is_empty() {
            return Err(ca_error("no certificate in it".to_string()));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| ca_error(e.to_string()))?;
        }
    }
    let mut config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| BackendError::Rustls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // The upgrade is HTTP/1.1; some TLS front ends refuse a client that
    // names no protocol.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Sorts a failed handshake with a backend.
pub fn tls_failure(error: &HandshakeError) -> BackendTlsFailure {
    use rustls::Error;
    match error {
        HandshakeError::Closed => BackendTlsFailure::Closed,
        HandshakeError::Tls(e) => match e {
            Error::InvalidCertificate(_) | Error::NoCertificatesPresented => {
                BackendTlsFailure::Certificate
            }
            Error::AlertReceived(_) => BackendTlsFailure::AlertReceived,
            Error::PeerIncompatible(_) => BackendTlsFailure::Incompatible,
            Error::InvalidMessage(_)
            | Error::InappropriateMessage { .. }
            | Error::InappropriateHandshakeMessage { .. }
            | Error::PeerMisbehaved(_)
            | Error::DecryptError => BackendTlsFailure::Protocol,
            _ => BackendTlsFailure::Other,
        },
    }
}

/// A lookup that failed, as every conversation waiting on it sees it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot resolve {host}: {message}")]
pub struct ResolveError {
    host: String,
    message: String,
}

/// A name lookup, run on the blocking thread: the system's, or a test's.
type LookupFn = fn(&str, u16) -> Result<Vec<SocketAddr>, String>;

fn system_lookup(host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    (host, port)
        .to_socket_addrs()
        .map(Iterator::collect)
        .map_err(|e| e.to_string())
}

/// One shard's handle on a backend: the spec, and its last lookup.
pub struct Backend {
    spec: BackendSpec,
    lookup: RefCell<Lookup>,
    lookup_fn: LookupFn,
}

enum Lookup {
    Never,
    /// On the blocking thread; the tasks to wake when it is done.
    Running(Vec<Waker>),
    Done {
        result: Result<Rc<[SocketAddr]>, ResolveError>,
        at: Instant,
    },
}

impl Backend {
    pub fn new(spec: BackendSpec) -> Rc<Backend> {
        Self::with_lookup(spec, system_lookup)
    }

    fn with_lookup(spec: BackendSpec, lookup_fn: LookupFn) -> Rc<Backend> {
        Rc::new(Backend {
            spec,
            lookup: RefCell::new(Lookup::Never),
            lookup_fn,
        })
    }

    pub fn url(&self) -> &str {
        &self.spec.url
    }

    /// How to verify a `wss://` backend; `None` for `ws://`.
    pub fn tls(&self) -> Option<&TlsTarget> {
        self.spec.tls.as_ref()
    }

    /// The backend's addresses, from the last lookup while it is fresh,
    /// else from a new one (shared with every task that asks meanwhile).
    pub async fn addresses(self: &Rc<Self>) -> Result<Rc<[SocketAddr]>, ResolveError> {
        if let Some(ip) = self.spec.literal {
            return Ok(Rc::from([SocketAddr::new(ip, self.spec.port)]));
        }
        loop {
            {
                let mut lookup = self.lookup.borrow_mut();
                match &*lookup {
                    Lookup::Done { result, at } if at.elapsed() < ttl(result) => {
                        return result.clone();
                    }
                    Lookup::Running(_) => {}
                    Lookup::Never | Lookup::Done { .. } => {
                        *lookup = Lookup::Running(Vec::new());
                        // Detached: the lookup finishes for the others even
                        // if the task that started it gives up waiting.
                        glommio::spawn_local(self.clone().resolve()).detach();
                    }
                }
            }
            std::future::poll_fn(|cx| match &mut *self.lookup.borrow_mut() {
                Lookup::Running(waiters) => {
                    if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
                        waiters.push(cx.waker().clone());
                    }
                    Poll::Pending
                }
                _ => Poll::Ready(()),
            })
            .await;
        }
    }

    /// None of the addresses took a connection: the next conversation
    /// looks the name up again rather than trusting them for the TTL.
    pub fn forget_addresses(&self) {
        let mut lookup = self.lookup.borrow_mut();
        if matches!(*lookup, Lookup::Done { .. }) {
            *lookup = Lookup::Never;
        }
    }

    async fn resolve(self: Rc<Self>) {
        let host = self.spec.host.clone();
        let port = self.spec.port;
        let lookup = self.lookup_fn;
        let found = glommio::executor()
            .spawn_blocking(move || lookup(&host, port))
            .await;
        let result = match found {
            Ok(addrs) if !addrs.is_empty() => Ok(Rc::from(addrs)),
            Ok(_) => Err("no address".to_string()),
            Err(message) => Err(message),
        }
        .map_err(|message| ResolveError {
            host: self.spec.host.clone(),
            message,
        });
        let done = Lookup::Done {
            result,
            at: Instant::now(),
        };
        let before = std::mem::replace(&mut *self.lookup.borrow_mut(), done);
        if let Lookup::Running(waiters) = before {
            for w in waiters {
                w.wake();
            }
        }
    }
}

fn ttl(result: &Result<Rc<[SocketAddr]>, ResolveError>) -> Duration {
    match result {
        Ok(_) => RESOLVED_TTL,
        Err(_) => FAILED_TTL,
    }
}

#[cfg(test)]
#[path = "backend_tests.rs"]
mod tests;
