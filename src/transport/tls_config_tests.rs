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
