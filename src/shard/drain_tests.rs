//! The drain of a running server: listeners closed, connections closed,
//! every shard stopped.

use std::io::{ErrorKind, Read};
use std::net::TcpStream;
use std::time::Duration;

use super::service_tests::{connect_and_publish, two_shards_on_loopback};
use super::Server;

#[test]
fn a_drain_closes_every_connection_and_stops_every_shard() {
    let server = Server::start(two_shards_on_loopback(), Vec::new()).expect("shards start");
    let addr = server.listen.expect("listening");
    // Ids on both shards, whichever owns which.
    let mut clients: Vec<TcpStream> = (0..6)
        .map(|i| connect_and_publish(addr, &format!("drained-{i}"), b"x"))
        .collect();
    assert_eq!(server.control.stopped(), 0);
    server.drain(false);
    assert!(
        server.control.wait_stopped(Duration::from_secs(10)),
        "every shard stops once its connections are closed"
    );
    for client in &mut clients {
        let mut buf = [0u8; 16];
        match client.read(&mut buf) {
            Ok(0) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            other => panic!("connection still open after the drain: {other:?}"),
        }
    }
    assert!(
        TcpStream::connect(addr).is_err(),
        "the listeners are closed"
    );
    server.join();
}
