//! The binary as an operator meets it: exit codes for a bad configuration
//! and a busy port, and a restart on the port of a killed instance.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CONNECT: &[u8] = &[
    0x10, 0x0d, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3c, 0x00, 0x01, b'c',
];
const CONNACK: &[u8] = &[0x20, 0x02, 0x00, 0x00];

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_shardmq"))
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--shards",
            "2",
            "--log",
            "warn",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("shardmq runs")
}

/// Connects and completes CONNECT/CONNACK, retrying while the server starts.
fn handshake(port: u16) -> TcpStream {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut ack = [0u8; 4];
            if s.write_all(CONNECT).is_ok() && s.read_exact(&mut ack).is_ok() {
                assert_eq!(ack, CONNACK);
                return s;
            }
        }
        assert!(Instant::now() < deadline, "no CONNACK on port {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn exit_code(args: &[&str]) -> Option<i32> {
    let out = Command::new(env!("CARGO_BIN_EXE_shardmq"))
        .args(args)
        .output()
        .expect("shardmq runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "one line of reason: {stderr:?}");
    out.status.code()
}

#[test]
fn busy_port_and_bad_config_exit_with_one_line() {
    let port = free_port();
    let mut first = start(port);
    let _client = handshake(port);
    assert_eq!(
        exit_code(&["--listen", &format!("127.0.0.1:{port}")]),
        Some(1)
    );
    let config = std::env::temp_dir().join(format!("shardmq-bad-{port}.toml"));
    std::fs::write(&config, "[mqtt]\nmax_packet_size = \"big\"\n").unwrap();
    assert_eq!(exit_code(&["--config", config.to_str().unwrap()]), Some(2));
    std::fs::remove_file(&config).ok();
    first.kill().ok();
    first.wait().ok();
}

#[test]
fn restarts_on_the_port_of_a_killed_instance() {
    let port = free_port();
    let mut first = start(port);
    let client = handshake(port);
    first.kill().unwrap();
    first.wait().unwrap();
    // The server side of the connection closed first: it lingers in
    // TIME_WAIT, which must not keep the next instance from binding.
    drop(client);
    // The killed process's io_uring teardown may hold the listener a moment
    // longer; TIME_WAIT would hold the port for a minute.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut second = loop {
        let mut candidate = start(port);
        std::thread::sleep(Duration::from_millis(300));
        match candidate.try_wait().unwrap() {
            None => break candidate,
            Some(status) => assert!(Instant::now() < deadline, "cannot restart: {status}"),
        }
    };
    drop(handshake(port));
    assert!(
        second.try_wait().unwrap().is_none(),
        "the new instance is serving"
    );
    second.kill().ok();
    second.wait().ok();
}
