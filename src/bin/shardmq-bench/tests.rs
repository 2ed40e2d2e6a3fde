//! End to end: each scenario against an in-process shardmq on a free
//! port. The assertions are about correctness (every message delivered
//! once at QoS 1/2, every client set up, no problem counted), never about
//! speed, so they hold on a loaded machine too.

use clap::Parser;

use super::cli::{Cli, Scenario};
use super::scenario::Plan;
use super::{churn, conns, load, voice};
use shardmq::config::Config;
use shardmq::shard::Server;

/// Starts a one-shard broker; its threads live until the test process ends.
fn broker() -> u16 {
    let config = Config::from_toml(
        "[server]\nshards = 1\npin_cores = false\nlog = \"warn\"\n\
         [mqtt]\nlisten = \"127.0.0.1:0\"\nsys_interval_s = 0\n",
    )
    .expect("test config is valid");
    Server::start(config.shard_settings(), Vec::new())
        .expect("broker starts")
        .listen
        .expect("broker listens")
        .port()
}

fn cli(port: u16, args: &str) -> Cli {
    let port = port.to_string();
    let words = ["shardmq-bench", "--quiet", "--port", &port]
        .into_iter()
        .chain(args.split_whitespace());
    Cli::try_parse_from(words).expect("test arguments parse")
}

/// Runs a publishing scenario and checks that nothing went missing.
fn assert_lossless(port: u16, args: &str) {
    let cli = cli(port, args);
    let plan = Plan::new(&cli.scenario);
    let report = load::run(&cli.global, &plan).expect("the run takes place");
    let i = report.integrity;
    assert!(
        report.delivered > 0,
        "{args}: nothing delivered in the window"
    );
    assert!(i.expected > 0, "{args}: nothing published");
    assert_eq!(i.lost, 0, "{args}: lost messages");
    assert_eq!(i.duplicated, 0, "{args}: duplicated messages");
    assert_eq!(i.unacked, 0, "{args}: unacknowledged messages");
    assert_eq!(report.errors.total(), 0, "{args}: {}", report.errors);
    assert!(report.latency.samples > 0, "{args}: no latency samples");
}

#[test]
fn scenarios_run_against_shardmq() {
    let port = broker();
    let short = "--duration 300ms --warmup 100ms --drain 3s";
    assert_lossless(port, &format!("p2p --pairs 3 --qos 1 {short}"));
    assert_lossless(port, &format!("p2p --pairs 2 --qos 2 --rate 2000 {short}"));
    assert_lossless(
        port,
        &format!("fanout --publishers 2 --subscribers 3 --qos 1 --rate 1000 {short}"),
    );
    assert_lossless(
        port,
        &format!("fanin --publishers 4 --qos 2 --rate 500 {short}"),
    );
    assert_lossless(
        port,
        &format!("latency --rate 2000 --pairs 2 --qos 1 {short}"),
    );

    let cli = cli(port, "--threads 2 conns --count 40 --hold 200ms");
    let Scenario::Conns(args) = &cli.scenario else {
        unreachable!("parsed as conns");
    };
    let report = conns::run(&cli.global, args, &Plan::new(&cli.scenario)).unwrap();
    assert_eq!(report.established, 40);
    assert_eq!(report.held, 40);
    assert_eq!(report.errors.total(), 0, "{}", report.errors);
}

#[test]
fn churn_connects_and_disconnects_over_and_over() {
    let port = broker();
    let cli = cli(
        port,
        "--threads 2 churn --clients 5 --warmup 100ms --duration 400ms",
    );
    let Scenario::Churn(args) = &cli.scenario else {
        unreachable!("parsed as churn");
    };
    let report = churn::run(&cli.global, args).expect("the run takes place");
    assert_eq!(report.errors.total(), 0, "{}", report.errors);
    // Every client completes cycles, a new client id each time: a broker
    // that kept sessions or refused ids would fail them.
    assert!(report.cycles > 5, "{report:?}");
    assert!(report.cycles_total >= report.cycles);
    assert!(report.connect_latency.samples > 0);
    assert!(report.cycle_latency.samples > 0);
    assert!(report.cycles_per_s > 0.0);
}

#[test]
fn an_unreachable_broker_is_an_error_not_a_hang() {
    // A port nobody listens on: bind one, then close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let cli = cli(port, "p2p --pairs 2 --duration 100ms --warmup 0s");
    let error = load::run(&cli.global, &Plan::new(&cli.scenario)).unwrap_err();
    assert!(error.contains("connect_error"), "{error}");

    let cli = self::cli(port, "churn --clients 2 --warmup 0s --duration 100ms");
    let Scenario::Churn(args) = &cli.scenario else {
        unreachable!("parsed as churn");
    };
    let error = churn::run(&cli.global, args).unwrap_err();
    assert!(error.contains("connect_error"), "{error}");
}

/// Starts a one-shard broker with its MQTT-SN gateway, at most
/// `datagrams_per_second` from one address (0: no limit; every client is
/// on 127.0.0.1), and predefined ids 7 and 8 for the first two
/// publishers' topics; returns the MQTT port and the gateway's UDP port.
fn sn_gateway(datagrams_per_second: u32) -> (u16, u16) {
    let config = Config::from_toml(&format!(
        "[server]\nshards = 1\npin_cores = false\nlog = \"warn\"\n\
         [mqtt]\nlisten = \"127.0.0.1:0\"\nsys_interval_s = 0\n\
         [mqtt_sn]\nenabled = true\nlisten = \"127.0.0.1:0\"\n\
         max_clients_per_address = 100\nmax_datagrams_per_second = {datagrams_per_second}\n\
         [[mqtt_sn.predefined]]\nid = 7\ntopic = \"bench/sn/0\"\n\
         [[mqtt_sn.predefined]]\nid = 8\ntopic = \"bench/sn/1\"\n",
    ))
    .expect("test config is valid");
    let started =
        shardmq::sn::start(&config.mqtt_sn, config.shard_count()).expect("MQTT-SN gateway starts");
    let sn_port = started.listen.port();
    let port = Server::start(config.shard_settings(), vec![started.factory])
        .expect("broker starts")
        .listen
        .expect("broker listens")
        .port();
    (port, sn_port)
}

#[test]
fn sn_publishers_reach_an_mqtt_subscriber() {
    let (port, sn_port) = sn_gateway(0);
    let short = "--duration 300ms --warmup 100ms --drain 3s";
    let sn = format!("sn --sn-port {sn_port} --clients");
    // One subscriber takes what all publish: unpaced, several publishers
    // would outrun a debug build's delivery and overflow its queue.
    assert_lossless(port, &format!("{sn} 1 --qos 1 --inflight 4 {short}"));
    assert_lossless(port, &format!("{sn} 3 --qos 1 --rate 500 {short}"));
    assert_lossless(port, &format!("{sn} 3 --qos 0 --rate 1000 {short}"));
    assert_lossless(
        port,
        &format!(
            "--threads 2 {sn} 2 --qos 1 --rate 500 --topics predefined --predefined-first 7 {short}"
        ),
    );
}

#[test]
fn sn_publishes_dropped_by_the_gateway_are_sent_again() {
    // The gateway takes 100 datagrams a second from the bench and drops
    // the rest: only retransmission gets every QoS 1 message through.
    let (port, sn_port) = sn_gateway(100);
    let cli = cli(
        port,
        &format!(
            "sn --sn-port {sn_port} --clients 1 --qos 1 --rate 1000 --inflight 8 \
             --retry 100ms --warmup 0s --duration 300ms --drain 5s"
        ),
    );
    let report = load::run(&cli.global, &Plan::new(&cli.scenario)).expect("the run takes place");
    let i = report.integrity;
    assert!(i.expected > 0, "nothing published");
    assert_eq!(i.lost, 0, "{}", report.table());
    assert_eq!(i.unacked, 0, "{}", report.table());
    let retransmitted = report.errors.nonzero();
    assert!(
        matches!(retransmitted.as_slice(), [("retransmitted", n)] if *n > 0),
        "{}",
        report.table()
    );
}

#[test]
fn sn_without_a_gateway_is_an_error_not_a_hang() {
    let port = broker();
    // A UDP port nobody listens on: the CONNECT comes back refused.
    let sn_port = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .unwrap()
        .port();
    let cli = cli(
        port,
        &format!("sn --clients 2 --sn-port {sn_port} --duration 100ms --warmup 0s"),
    );
    let error = load::run(&cli.global, &Plan::new(&cli.scenario)).unwrap_err();
    assert!(error.contains("connect_error"), "{error}");
}

/// Starts a one-shard gateway whose chat backend is `backend`, devices
/// signing with `key`; returns its MQTT port.
fn gateway(backend: std::net::SocketAddr, key: &str) -> u16 {
    let config = Config::from_toml(&format!(
        "[server]\nshards = 1\npin_cores = false\nlog = \"warn\"\n\
         [mqtt]\nlisten = \"127.0.0.1:0\"\nsys_interval_s = 0\n\
         [voice]\nenabled = true\nsignature_key = \"{key}\"\n\
         udp_listen = \"127.0.0.1:0\"\npublic_host = \"127.0.0.1\"\n\
         chat_servers = [\"ws://{backend}/xiaozhi/v1/?from=mqtt_gateway\"]\n"
    ))
    .expect("test config is valid");
    let started =
        shardmq::voice::start(&config.voice, config.shard_count()).expect("voice gateway starts");
    Server::start(config.shard_settings(), vec![started.factory])
        .expect("gateway starts")
        .listen
        .expect("broker listens")
        .port()
}

#[test]
fn voice_round_trips_through_the_gateway() {
    // A port for the bench's backend, free a moment ago.
    let backend = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap();
    let port = gateway(backend, "Bench-Key-42");
    let cli = cli(
        port,
        &format!(
            "--threads 2 voice --devices 6 --backend-listen {backend} \
             --signature-key Bench-Key-42 --frame-ms 20 --ramp 200ms \
             --warmup 200ms --duration 500ms --drain 2s"
        ),
    );
    let Scenario::Voice(args) = &cli.scenario else {
        unreachable!("parsed as voice");
    };
    let report = voice::run(&cli.global, args).expect("the run takes place");
    assert_eq!(report.errors.total(), 0, "{}", report.errors);
    assert_eq!(report.devices_connected, 6);
    assert_eq!(report.conversations_opened, 6);
    assert_eq!(report.in_conversation, 6);
    assert_eq!(report.hello_latency.samples, 6);
    for (name, flow) in [("up", report.up), ("down", report.down)] {
        assert!(flow.window_expected > 0, "{name}: nothing sent");
        assert!(flow.expected > flow.window_expected, "{name}: {flow:?}");
        assert_eq!(flow.lost, 0, "{name}: {flow:?}");
        assert_eq!(flow.window_lost, 0, "{name}: {flow:?}");
        assert_eq!(flow.duplicated, 0, "{name}: {flow:?}");
    }
    assert_eq!(report.down.expected, report.up.received);
    assert!(report.rtt.samples > 0, "no round trip measured");
    assert!(report.down_received_per_s > 0.0);
}

#[test]
fn voice_devices_with_a_wrong_password_are_refused() {
    let backend = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap();
    let port = gateway(backend, "Bench-Key-42");
    let cli = cli(
        port,
        &format!(
            "voice --devices 2 --backend-listen {backend} --signature-key wrong \
             --ramp 0s --warmup 0s --duration 100ms"
        ),
    );
    let Scenario::Voice(args) = &cli.scenario else {
        unreachable!("parsed as voice");
    };
    let error = voice::run(&cli.global, args).unwrap_err();
    assert!(error.contains("connack_refused"), "{error}");
}

/// A one-shard broker with TLS, `ws` and `wss` listeners.
struct SecureBroker {
    tls: u16,
    ws: u16,
    wss: u16,
    /// The CA that signed the broker's certificate (for `localhost`).
    cafile: String,
}

fn secure_broker() -> SecureBroker {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let dir = std::env::temp_dir().join(format!("shardmq-bench-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let path = |name: &str| dir.join(name).to_string_lossy().into_owned();
    std::fs::write(path("ca.pem"), ca_pem).unwrap();
    std::fs::write(path("server.pem"), cert.pem()).unwrap();
    std::fs::write(path("server.key"), key.serialize_pem()).unwrap();
    let config = Config::from_toml(&format!(
        "[server]\nshards = 1\npin_cores = false\nlog = \"warn\"\n\
         [mqtt]\nlisten = \"127.0.0.1:0\"\nsys_interval_s = 0\n\
         [tls]\nlisten = \"127.0.0.1:0\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n\
         [websocket]\nenabled = true\nlisten = \"127.0.0.1:0\"\ntls_listen = \"127.0.0.1:0\"\n",
        path("server.pem"),
        path("server.key"),
    ))
    .expect("test config is valid");
    let mut settings = config.shard_settings();
    settings.tls = config.tls_listener().expect("certificates load");
    let started = Server::start(settings, Vec::new()).expect("broker starts");
    let port = |addr: Option<std::net::SocketAddr>| addr.expect("listener is up").port();
    SecureBroker {
        tls: port(started.tls_listen),
        ws: port(started.ws_listen),
        wss: port(started.wss_listen),
        cafile: path("ca.pem"),
    }
}

#[test]
fn p2p_runs_over_tls_websocket_and_both() {
    let broker = secure_broker();
    let short = "--duration 300ms --warmup 100ms --drain 3s";
    for (transport, port) in [("tls", broker.tls), ("ws", broker.ws), ("wss", broker.wss)] {
        let via = format!(
            "--transport {transport} --cafile {} --server-name localhost",
            broker.cafile
        );
        assert_lossless(port, &format!("{via} p2p --pairs 3 --qos 1 {short}"));
        assert_lossless(
            port,
            &format!("{via} p2p --pairs 2 --qos 0 --rate 2000 --payload 300 {short}"),
        );
    }
}

#[test]
fn a_broker_certificate_the_ca_does_not_vouch_for_is_refused() {
    let broker = secure_broker();
    // The bench trusts only a CA of its own making, not the broker's.
    let other = secure_broker_ca_elsewhere();
    let cli = cli(
        broker.tls,
        &format!("--transport tls --cafile {other} --server-name localhost p2p --pairs 1 --duration 100ms --warmup 0s"),
    );
    let error = load::run(&cli.global, &Plan::new(&cli.scenario)).unwrap_err();
    assert!(error.contains("tls_error"), "{error}");
}

/// A CA certificate that signed nothing the broker holds.
fn secure_broker_ca_elsewhere() -> String {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let path =
        std::env::temp_dir().join(format!("shardmq-bench-other-ca-{}.pem", std::process::id()));
    std::fs::write(&path, ca.self_signed(&key).unwrap().pem()).unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn voice_refuses_a_transport_its_devices_do_not_speak() {
    let cli = cli(1, "--transport ws voice --devices 1");
    let Scenario::Voice(args) = &cli.scenario else {
        unreachable!("parsed as voice");
    };
    let error = voice::run(&cli.global, args).unwrap_err();
    assert!(error.contains("--transport"), "{error}");
}
