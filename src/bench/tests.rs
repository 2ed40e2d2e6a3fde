//! End to end: each scenario against an in-process shardmq on a free
//! port. The assertions are about correctness (every message delivered
//! once at QoS 1/2, every client set up, no problem counted), never about
//! speed, so they hold on a loaded machine too.

use clap::Parser;

use super::cli::{Cli, Scenario};
use super::scenario::Plan;
use super::{conns, load};
use crate::config::Config;
use crate::shard::Server;

/// Starts a one-shard broker; its threads live until the test process ends.
fn broker() -> u16 {
    let config = Config::from_toml(
        "[server]\nshards = 1\npin_cores = false\nlog = \"warn\"\n\
         [mqtt]\nlisten = \"127.0.0.1:0\"\nsys_interval_s = 0\n",
    )
    .expect("test config is valid");
    Server::start(config, None)
        .expect("broker starts")
        .listen
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
fn an_unreachable_broker_is_an_error_not_a_hang() {
    // A port nobody listens on: bind one, then close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let cli = cli(port, "p2p --pairs 2 --duration 100ms --warmup 0s");
    let error = load::run(&cli.global, &Plan::new(&cli.scenario)).unwrap_err();
    assert!(error.contains("connect_error"), "{error}");
}
