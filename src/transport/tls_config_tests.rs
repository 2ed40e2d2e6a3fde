//! Loading the `[tls]` files: what is refused, and why it says so.

use super::*;

#[test]
fn relations_between_keys_are_checked() {
    let base = TlsConfig {
        cert_file: "server.pem".into(),
        key_file: "server.key".into(),
        ..TlsConfig::default()
    };
    base.validate().unwrap();
    assert!(!TlsConfig::default().enabled());
    let lone_cert = TlsConfig {
        key_file: String::new(),
        ..base.clone()
    };
    assert!(lone_cert.validate().is_err());
    let no_ca = TlsConfig {
        client_certs: ClientCerts::Required,
        ..base.clone()
    };
    assert!(no_ca.validate().is_err());
    let identity_without_required = TlsConfig {
        ca_file: "ca.pem".into(),
        client_certs: ClientCerts::Optional,
        use_identity_as_username: true,
        ..base.clone()
    };
    assert!(identity_without_required.validate().is_err());
}

#[test]
fn missing_and_empty_files_name_the_file() {
    let dir = std::env::temp_dir().join(format!("shardmq-tls-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let empty = dir.join("empty.pem");
    std::fs::write(&empty, "no PEM here\n").unwrap();
    let config = TlsConfig {
        cert_file: dir.join("absent.pem").display().to_string(),
        key_file: empty.display().to_string(),
        ..TlsConfig::default()
    };
    let error = load(&config).unwrap_err().to_string();
    assert!(
        error.contains("cert_file") && error.contains("absent.pem"),
        "{error}"
    );
    let config = TlsConfig {
        cert_file: empty.display().to_string(),
        ..config
    };
    let error = load(&config).unwrap_err().to_string();
    assert!(error.contains("holds no certificate"), "{error}");
    std::fs::remove_dir_all(&dir).ok();
}

/// A certificate and key for localhost, as PEM files in `dir`.
fn write_server_pair(dir: &Path, name: &str) -> TlsConfig {
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    let cert_file = dir.join(format!("{name}.pem"));
    let key_file = dir.join(format!("{name}.key"));
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    TlsConfig {
        cert_file: cert_file.display().to_string(),
        key_file: key_file.display().to_string(),
        ..TlsConfig::default()
    }
}

#[test]
fn reload_swaps_good_files_and_keeps_the_old_on_bad_ones() {
    let dir = std::env::temp_dir().join(format!("shardmq-tls-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let first = write_server_pair(&dir, "first");
    let holder = ServerConfigHolder::new(load(&first).unwrap());
    let in_force = holder.current();

    // A key that does not match the certificate: refused, old one stays.
    let second = write_server_pair(&dir, "second");
    let mismatched = TlsConfig {
        key_file: first.key_file.clone(),
        ..second.clone()
    };
    let error = holder.reload(&mismatched).unwrap_err();
    assert!(error.to_string().contains("certificate and key"), "{error}");
    assert!(Arc::ptr_eq(&holder.current(), &in_force));
    // A missing file: the same.
    let missing = TlsConfig {
        cert_file: dir.join("gone.pem").display().to_string(),
        ..second.clone()
    };
    assert!(holder.reload(&missing).is_err());
    assert!(Arc::ptr_eq(&holder.current(), &in_force));

    // Good files: swapped for new connections; a clone of the holder (as
    // every shard has) sees the new one too.
    let shard_view = holder.clone();
    holder.reload(&second).unwrap();
    assert!(!Arc::ptr_eq(&shard_view.current(), &in_force));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn tls13_only_and_client_certificate_modes_build() {
    let dir = std::env::temp_dir().join(format!("shardmq-tls-modes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let base = write_server_pair(&dir, "server");
    load(&TlsConfig {
        tls13_only: true,
        ..base.clone()
    })
    .unwrap();
    for mode in [ClientCerts::Optional, ClientCerts::Required] {
        let config = TlsConfig {
            ca_file: base.cert_file.clone(),
            client_certs: mode,
            ..base.clone()
        };
        load(&config).unwrap();
    }
    std::fs::remove_dir_all(&dir).ok();
}
