//! Backends: URLs and roots at start-up, name lookups shared and cached on
//! a shard, and TLS to a backend over real loopback sockets (certificates
//! made by the test).

use std::net::Ipv4Addr;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::PrivateKeyDer;

use super::*;
use crate::transport::client::ClientStream;
use crate::transport::Stream;

/// A fresh directory for one test's files.
fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("shardmq-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn make_ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), Issuer::new(params, key))
}

/// A server certificate for localhost and 127.0.0.1 signed by `ca`, as a
/// rustls server configuration.
fn server_config(ca: &Issuer<'_, KeyPair>) -> Arc<rustls::ServerConfig> {
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert = params.signed_by(&key, ca).unwrap();
    let key = PrivateKeyDer::try_from(key.serialize_der()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key)
        .unwrap();
    Arc::new(config)
}

/// Runs `f` on a glommio executor on this thread.
fn on_executor<T>(f: impl std::future::Future<Output = T>) -> T {
    glommio::LocalExecutorBuilder::default()
        .make()
        .unwrap()
        .run(f)
}

#[test]
fn urls_give_specs_and_only_wss_gets_tls() {
    let dir = temp_dir("backend-specs");
    let (ca_pem, _) = make_ca("backend test CA");
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
    let urls = vec![
        "ws://127.0.0.1:8000/xiaozhi/v1/".to_string(),
        "wss://chat.example/xiaozhi/v1/".to_string(),
        "wss://10.1.2.3:9443/".to_string(),
    ];
    let specs = specs(&urls, &ca_file.display().to_string()).unwrap();
    assert!(specs[0].tls.is_none());
    assert_eq!(specs[0].literal, Some(IpAddr::from(Ipv4Addr::LOCALHOST)));
    let tls = specs[1].tls.as_ref().unwrap();
    assert_eq!(tls.name, ServerName::try_from("chat.example").unwrap());
    assert_eq!((specs[1].port, specs[1].literal), (443, None));
    // An IP address is the name the certificate must carry.
    let tls = specs[2].tls.as_ref().unwrap();
    assert_eq!(tls.name, ServerName::try_from("10.1.2.3").unwrap());
    // One configuration for every wss backend.
    assert!(Arc::ptr_eq(
        &specs[1].tls.as_ref().unwrap().config,
        &specs[2].tls.as_ref().unwrap().config
    ));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_ca_file_that_cannot_be_used_stops_the_start() {
    let dir = temp_dir("backend-ca");
    let urls = vec!["wss://chat.example/".to_string()];
    let absent = dir.join("absent.pem").display().to_string();
    let e = specs(&urls, &absent).unwrap_err().to_string();
    assert!(
        e.contains("voice.chat_ca_file") && e.contains("absent.pem"),
        "{e}"
    );
    let empty = dir.join("empty.pem");
    std::fs::write(&empty, "no PEM here\n").unwrap();
    let e = specs(&urls, &empty.display().to_string())
        .unwrap_err()
        .to_string();
    assert!(e.contains("no certificate"), "{e}");
    // Without a wss backend, the file is not read at all.
    let plain = vec!["ws://chat.example/".to_string()];
    assert!(specs(&plain, &absent).is_ok());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn handshake_failures_are_sorted_by_reason() {
    use rustls::{AlertDescription, CertificateError, Error};
    let of = |e: Error| tls_failure(&HandshakeError::Tls(e));
    assert_eq!(
        of(Error::InvalidCertificate(CertificateError::UnknownIssuer)),
        BackendTlsFailure::Certificate
    );
    assert_eq!(
        of(Error::InvalidCertificate(CertificateError::Expired)),
        BackendTlsFailure::Certificate
    );
    assert_eq!(
        of(Error::AlertReceived(AlertDescription::HandshakeFailure)),
        BackendTlsFailure::AlertReceived
    );
    assert_eq!(
        tls_failure(&HandshakeError::Closed),
        BackendTlsFailure::Closed
    );
    assert_eq!(of(Error::DecryptError), BackendTlsFailure::Protocol);
}

#[test]
fn an_ip_address_is_not_looked_up() {
    let spec = BackendSpec {
        url: "ws://127.0.0.1:8000/".into(),
        host: "127.0.0.1".into(),
        port: 8000,
        literal: Some(IpAddr::from(Ipv4Addr::LOCALHOST)),
        tls: None,
    };
    // No executor: a lookup would need one.
    let backend = Backend::new(spec);
    let addrs = futures_lite::future::block_on(backend.addresses()).unwrap();
    assert_eq!(&addrs[..], &[SocketAddr::from(([127, 0, 0, 1], 8000))]);
}

#[test]
fn a_name_is_looked_up_once_for_concurrent_askers_then_cached() {
    on_executor(async {
        let urls = vec!["ws://localhost:8000/".to_string()];
        let backend = Backend::new(specs(&urls, "").unwrap().remove(0));
        let (a, b) = futures_lite::future::zip(backend.addresses(), backend.addresses()).await;
        let (a, b) = (a.unwrap(), b.unwrap());
        assert!(a.iter().any(|s| s.ip().is_loopback() && s.port() == 8000));
        assert!(Rc::ptr_eq(&a, &b), "one lookup answers both");
        let again = backend.addresses().await.unwrap();
        assert!(Rc::ptr_eq(&a, &again), "fresh: from the cache");
        backend.forget_addresses();
        let fresh = backend.addresses().await.unwrap();
        assert!(!Rc::ptr_eq(&a, &fresh), "forgotten: looked up again");
    });
}

/// Released by the test's other task; a lookup that runs on the shard
/// thread would keep that task from ever running.
static GATE: std::sync::Mutex<Option<std::sync::mpsc::Receiver<()>>> = std::sync::Mutex::new(None);

fn gated_lookup(_host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    let gate = GATE.lock().unwrap().take().ok_or("no gate")?;
    gate.recv_timeout(Duration::from_secs(10))
        .map_err(|_| "the shard never ran while the lookup waited".to_string())?;
    Ok(vec![SocketAddr::from(([127, 0, 0, 2], port))])
}

#[test]
fn a_lookup_leaves_the_shard_thread_free() {
    let (open, gate) = std::sync::mpsc::channel();
    *GATE.lock().unwrap() = Some(gate);
    on_executor(async move {
        let urls = vec!["ws://backend.example:8000/".to_string()];
        let backend = Backend::with_lookup(specs(&urls, "").unwrap().remove(0), gated_lookup);
        let asking = glommio::spawn_local({
            let backend = backend.clone();
            async move { backend.addresses().await }
        });
        // Runs only if the shard thread is free while the lookup waits.
        glommio::spawn_local(async move { open.send(()).unwrap() }).await;
        let addrs = asking.await.unwrap();
        assert_eq!(&addrs[..], &[SocketAddr::from(([127, 0, 0, 2], 8000))]);
    });
}

#[test]
fn a_failed_lookup_is_an_error_for_every_asker() {
    on_executor(async {
        // `.invalid` never resolves (RFC 6761).
        let urls = vec!["ws://backend.invalid/".to_string()];
        let backend = Backend::new(specs(&urls, "").unwrap().remove(0));
        let (a, b) = futures_lite::future::zip(backend.addresses(), backend.addresses()).await;
        let e = a.unwrap_err().to_string();
        assert!(e.contains("backend.invalid"), "{e}");
        assert!(b.is_err());
    });
}

/// Runs one TLS connection: a server with a certificate from `server_ca`,
/// a client trusting `client_ca` and asking for `name`. `Ok` carries what
/// the server echoed.
fn tls_exchange(server_ca: &str, client_ca: &str, name: &str) -> Result<Vec<u8>, String> {
    let dir = temp_dir(&format!("backend-tls-{server_ca}-{client_ca}-{name}"));
    let (ca_pem, ca) = make_ca(server_ca);
    let server = server_config(&ca);
    let trusted = if client_ca == server_ca {
        ca_pem
    } else {
        make_ca(client_ca).0
    };
    let ca_file = dir.join("trusted.pem");
    std::fs::write(&ca_file, trusted).unwrap();
    let config = client_config(&ca_file.display().to_string()).unwrap();
    let target = TlsTarget {
        config,
        name: ServerName::try_from(name.to_string()).unwrap(),
    };
    let result = on_executor(async move {
        let listener = glommio::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let served = glommio::spawn_local(async move {
            let tcp = listener.accept().await.unwrap();
            let mut stream = Stream::tls(tcp, server, &[]).unwrap();
            if stream.handshake().await.is_err() {
                return;
            }
            let mut buf = [0u8; 4];
            if stream.read_exact(&mut buf).await.is_ok() {
                let _ = stream.write_all(&buf).await;
                let _ = stream.flush().await;
            }
        });
        let stream = ClientStream::connect(addr).await.unwrap();
        let outcome = match stream.start_tls(&target).await {
            Ok(mut tls) => {
                assert!(tls.is_tls());
                tls.write_all(b"ping").await.unwrap();
                tls.flush().await.unwrap();
                let mut echoed = vec![0u8; 4];
                tls.read_exact(&mut echoed).await.unwrap();
                Ok(echoed)
            }
            Err(e) => Err(format!("{}: {e}", tls_failure(&e).name())),
        };
        served.await;
        outcome
    });
    std::fs::remove_dir_all(&dir).ok();
    result
}

#[test]
fn tls_to_a_backend_verifies_its_certificate_and_name() {
    assert_eq!(
        tls_exchange("ca-a", "ca-a", "localhost"),
        Ok(b"ping".to_vec())
    );
    assert_eq!(
        tls_exchange("ca-a", "ca-a", "127.0.0.1"),
        Ok(b"ping".to_vec())
    );
    let untrusted = tls_exchange("ca-a", "ca-b", "localhost").unwrap_err();
    assert!(untrusted.starts_with("certificate:"), "{untrusted}");
    let wrong_name = tls_exchange("ca-a", "ca-a", "chat.example").unwrap_err();
    assert!(wrong_name.starts_with("certificate:"), "{wrong_name}");
}
