//! What the transport tests share: certificates made at test time (rcgen),
//! a broker process with TLS, PROXY and `/metrics` listeners on free
//! loopback ports and its log at debug, a blocking MQTT-over-TLS client
//! (rustls), and `mosquitto_pub`/`mosquitto_sub` runs.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// Upper bound of any wait; it never measures speed.
pub const WAIT: Duration = Duration::from_secs(10);

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A fresh directory for one test's files.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "shardmq-{name}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// PEM files of a test PKI: a CA, a server certificate for
/// localhost/127.0.0.1, client certificates good, untrusted and expired.
pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        let dir = temp_dir(name);
        let (ca_pem, ca) = make_ca("shardmq test CA");
        std::fs::write(dir.join("ca.pem"), ca_pem).unwrap();
        let (_, stranger) = make_ca("somebody else's CA");

        let server = leaf(&["localhost", "127.0.0.1"], "localhost", false);
        write_pair(&dir, "server", &server, &ca);

        let client = leaf(&[], "device-1", true);
        write_pair(&dir, "client", &client, &ca);
        let untrusted = leaf(&[], "device-2", true);
        write_pair(&dir, "untrusted", &untrusted, &stranger);
        let mut expired = leaf(&[], "device-3", true);
        expired.0.not_before = rcgen::date_time_ymd(2019, 1, 1);
        expired.0.not_after = rcgen::date_time_ymd(2020, 1, 1);
        write_pair(&dir, "expired", &expired, &ca);
        // No CN: the identity is the first DNS name.
        let mut san_only = leaf(&["meter-9.example"], "", true);
        san_only.0.distinguished_name = rcgen::DistinguishedName::new();
        write_pair(&dir, "san-only", &san_only, &ca);
        Pki { dir }
    }

    pub fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }

    /// The `[tls]` lines for this PKI's server certificate.
    pub fn tls_section(&self, listen: u16, extra: &str) -> String {
        format!(
            "[tls]\nlisten = \"127.0.0.1:{listen}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n\
             ca_file = \"{}\"\n{extra}\n",
            self.path("server.pem"),
            self.path("server.key"),
            self.path("ca.pem"),
        )
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn make_ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), Issuer::new(params, key))
}

fn leaf(names: &[&str], cn: &str, client: bool) -> (CertificateParams, KeyPair) {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = CertificateParams::new(names).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.extended_key_usages = vec![if client {
        ExtendedKeyUsagePurpose::ClientAuth
    } else {
        ExtendedKeyUsagePurpose::ServerAuth
    }];
    (params, KeyPair::generate().unwrap())
}

fn write_pair(
    dir: &Path,
    name: &str,
    (params, key): &(CertificateParams, KeyPair),
    issuer: &Issuer<'_, KeyPair>,
) {
    let cert = params.signed_by(key, issuer).unwrap();
    std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
}

/// A broker process, killed on drop; its output (log at debug) is kept and
/// printed if the test fails.
pub struct Server {
    child: Child,
    pub mqtt: u16,
    pub tls: u16,
    pub http: u16,
    output: Arc<Mutex<String>>,
    config: PathBuf,
}

impl Server {
    /// Starts shardmq with `toml` (which may use the `{tls}` placeholder for
    /// the TLS port) plus an `[http]` listener for `/metrics`.
    pub fn start(shards: usize, toml: &str, tls: u16) -> Server {
        let mqtt = free_port();
        let http = free_port();
        let config = temp_dir("config").join("shardmq.toml");
        std::fs::write(
            &config,
            format!("{toml}\n[http]\nlisten = \"127.0.0.1:{http}\"\n"),
        )
        .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_shardmq"))
            .arg("--config")
            .arg(&config)
            .arg("--listen")
            .arg(format!("127.0.0.1:{mqtt}"))
            .arg("--shards")
            .arg(shards.to_string())
            .arg("--log")
            .arg("warn,shardmq=debug")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("shardmq runs");
        let output = Arc::new(Mutex::new(String::new()));
        collect(child.stdout.take().unwrap(), output.clone());
        collect(child.stderr.take().unwrap(), output.clone());
        let server = Server {
            child,
            mqtt,
            tls,
            http,
            output,
            config,
        };
        server.wait_ready();
        server
    }

    /// Every listener is bound before the process serves HTTP; `/metrics`
    /// answering means the shards run.
    fn wait_ready(&self) {
        let deadline = Instant::now() + WAIT;
        while self.try_metrics().is_none() {
            assert!(
                Instant::now() < deadline,
                "no /metrics; output:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (bounded) for `needle` in the log.
    pub fn wait_log(&self, needle: &str) {
        let deadline = Instant::now() + WAIT;
        while !self.output().contains(needle) {
            assert!(Instant::now() < deadline, "no {needle:?} in the log");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn try_metrics(&self) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.http)).ok()?;
        s.set_read_timeout(Some(WAIT)).ok()?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        text.starts_with("HTTP/1.1 200").then_some(text)
    }

    /// The value of one metric line (`name{labels}`), 0 when absent.
    pub fn metric(&self, line: &str) -> u64 {
        let text = self.try_metrics().expect("/metrics answers");
        text.lines()
            .find_map(|l| l.strip_prefix(line)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0)
    }

    /// Waits (bounded) until a metric reaches `at_least`.
    pub fn wait_metric(&self, line: &str, at_least: u64) {
        let deadline = Instant::now() + WAIT;
        loop {
            let value = self.metric(line);
            if value >= at_least {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{line} stayed at {value}, wanted {at_least}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// How many of `ids` were accepted on one shard and run on another,
    /// read from the "CONNECT received" and "connection runs" debug lines.
    pub fn handed_off(&self, ids: impl Iterator<Item = String>) -> usize {
        let output = self.output();
        let shard_of = |kind: &str, id: &str| {
            output
                .lines()
                .find(|l| l.contains(kind) && l.contains(&format!("client_id={id} ")))
                .and_then(|l| l.split("shard=").nth(1))
                .and_then(|rest| rest.split(' ').next())
                .map(str::to_string)
        };
        ids.filter(|id| shard_of("CONNECT received", id) != shard_of("connection runs", id))
            .count()
    }

    pub fn tls_failures(&self, reason: &str) -> u64 {
        self.metric(&format!(
            "shardmq_tls_handshake_failures_total{{reason=\"{reason}\"}}"
        ))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- broker output ---\n{}--- end ---", self.output());
        }
        if let Some(dir) = self.config.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn collect(mut pipe: impl Read + Send + 'static, sink: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
}

// ---------------------------------------------------------------------------
// MQTT bytes
// ---------------------------------------------------------------------------

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn frame(header: u8, body: &[u8]) -> Vec<u8> {
    assert!(body.len() < 128);
    let mut out = vec![header, body.len() as u8];
    out.extend_from_slice(body);
    out
}

pub fn connect_packet(client_id: &str) -> Vec<u8> {
    let mut body = Vec::new();
    put_str(&mut body, "MQTT");
    body.extend_from_slice(&[4, 0x02, 0, 60]);
    put_str(&mut body, client_id);
    frame(0x10, &body)
}

pub fn subscribe_packet(pkid: u16, filter: &str) -> Vec<u8> {
    let mut body = pkid.to_be_bytes().to_vec();
    put_str(&mut body, filter);
    body.push(1);
    frame(0x82, &body)
}

pub fn publish_qos1(topic: &str, pkid: u16, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    put_str(&mut body, topic);
    body.extend_from_slice(&pkid.to_be_bytes());
    body.extend_from_slice(payload);
    frame(0x32, &body)
}

pub const CONNACK_OK: [u8; 4] = [0x20, 2, 0, 0];

/// Reads one packet (short remaining length only) from a blocking stream.
pub fn read_packet(s: &mut impl Read) -> std::io::Result<(u8, Vec<u8>)> {
    let mut head = [0u8; 2];
    s.read_exact(&mut head)?;
    assert!(head[1] < 128, "test packets are short");
    let mut body = vec![0u8; usize::from(head[1])];
    s.read_exact(&mut body)?;
    Ok((head[0], body))
}

/// Reads until the peer closes; true when it closed (end of stream or
/// reset) within the wait, whatever it sent first.
pub fn closed_within_wait(s: &mut impl Read) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return false,
            Err(_) => return true,
        }
    }
}

// ---------------------------------------------------------------------------
// A blocking MQTT-over-TLS client
// ---------------------------------------------------------------------------

pub type TlsClient = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A TLS connection to `port` trusting the PKI's CA, with the client
/// certificate `client` (`"client"`, `"expired"`...) when given. The
/// handshake is driven to its end, so a refusal shows as an error here or
/// at the first read.
pub fn tls_connect(pki: &Pki, port: u16, client: Option<&str>) -> std::io::Result<TlsClient> {
    tls_connect_with(pki, port, client, rustls::DEFAULT_VERSIONS)
}

pub const TLS12_ONLY: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];

/// [`tls_connect`] offering only `versions`.
pub fn tls_connect_with(
    pki: &Pki,
    port: u16,
    client: Option<&str>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> std::io::Result<TlsClient> {
    let tcp = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port)))?;
    handshake(client_config(pki, client, versions), tcp)
}

/// TLS over a socket already open (a PROXY header sent on it first).
pub fn tls_over(pki: &Pki, tcp: TcpStream) -> TlsClient {
    let config = client_config(pki, None, rustls::DEFAULT_VERSIONS);
    handshake(config, tcp).expect("TLS handshake")
}

fn handshake(config: Arc<rustls::ClientConfig>, tcp: TcpStream) -> std::io::Result<TlsClient> {
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(config, name).unwrap();
    tcp.set_read_timeout(Some(WAIT))?;
    let mut stream = rustls::StreamOwned::new(conn, tcp);
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock)?;
    }
    Ok(stream)
}

fn client_config(
    pki: &Pki,
    client: Option<&str>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(pki.path("ca.pem")).unwrap() {
        roots.add(ca.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots);
    let config = match client {
        Some(name) => {
            let chain = CertificateDer::pem_file_iter(pki.path(&format!("{name}.pem")))
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_file(pki.path(&format!("{name}.key"))).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    Arc::new(config)
}

/// TLS, CONNECT, CONNACK 0.
pub fn tls_mqtt(pki: &Pki, port: u16, client: Option<&str>, id: &str) -> TlsClient {
    let mut s = tls_connect(pki, port, client).expect("TLS handshake");
    s.write_all(&connect_packet(id)).unwrap();
    let (header, body) = read_packet(&mut s).expect("CONNACK");
    assert_eq!([header, 2, body[0], body[1]], CONNACK_OK, "{id}");
    s
}

// ---------------------------------------------------------------------------
// mosquitto clients
// ---------------------------------------------------------------------------

/// Common arguments of a mosquitto client on the TLS port.
pub fn mosquitto_tls_args(pki: &Pki, port: u16, client: Option<&str>) -> Vec<String> {
    let mut args = vec![
        "-h".to_string(),
        "localhost".to_string(),
        "-p".to_string(),
        port.to_string(),
        "--cafile".to_string(),
        pki.path("ca.pem"),
    ];
    if let Some(name) = client {
        args.extend([
            "--cert".to_string(),
            pki.path(&format!("{name}.pem")),
            "--key".to_string(),
            pki.path(&format!("{name}.key")),
        ]);
    }
    args
}

/// Runs `mosquitto_pub` (bounded by `timeout`) and returns its output.
pub fn mosquitto_pub(args: &[String]) -> Output {
    Command::new("timeout")
        .arg("20")
        .arg("mosquitto_pub")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("mosquitto_pub runs")
}
