//! The MQTT-SN 1.2 gateway: MQTT-SN clients over UDP as first-class
//! clients of the broker.
//!
//! A transparent gateway (§3.1): each MQTT-SN client gets its own broker
//! connection, on the shard that owns its client id, and the client
//! machine translates between the two protocols. The broker sees an
//! ordinary client (session, will, retained messages, ACL); the machine
//! adds what MQTT-SN has and MQTT has not: topic ids, the will's dialogue
//! and updates, sleep with its buffer, retransmission to the client.
//!
//! - `codec/`: datagrams to messages and back (sans-IO);
//! - `topics.rs`: one client's topic ids, predefined ones, short names;
//! - `client.rs`: one client's machine on the caller's clock (sans-IO);
//! - `gateway.rs`: one shard's clients, addresses and limits (sans-IO);
//! - `service.rs`: the UDP socket and the broker connections (shell).

pub mod client;
pub mod codec;
pub mod config;
pub mod gateway;
pub mod metrics;
pub mod service;
pub mod topics;

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use socket2::Socket;

use crate::mqtt::broker::ShardId;
use crate::shard::ServiceFactory;

pub use config::SnConfig;

/// Why the gateway cannot start.
#[derive(Debug, thiserror::Error)]
pub enum SnStartError {
    #[error("mqtt_sn: {0}")]
    Invalid(#[from] config::Invalid),
    #[error("mqtt_sn: cannot bind UDP {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// The gateway, ready to run on every shard.
pub struct Started {
    pub factory: ServiceFactory,
    /// The bound address (the port chosen when 0 was asked for).
    pub listen: SocketAddr,
}

/// Binds the UDP group (here, so that a taken port fails the start with a
/// clear error) and makes each shard's gateway.
pub fn start(config: &SnConfig, shards: usize) -> Result<Started, SnStartError> {
    config.validate()?;
    let bind_error = |source| SnStartError::Bind {
        addr: config.listen,
        source,
    };
    let advertise = config.advertise_address_parsed().ok().flatten().map(|to| {
        (
            to,
            Duration::from_secs(u64::from(config.advertise_interval_s)),
        )
    });
    let first = bind_one(config.listen, advertise.is_some()).map_err(bind_error)?;
    let listen = first
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .unwrap_or(config.listen);
    let mut sockets = vec![Some(OwnedFd::from(first))];
    for _ in 1..shards {
        sockets.push(Some(OwnedFd::from(
            bind_one(listen, false).map_err(bind_error)?,
        )));
    }
    let sockets = Mutex::new(sockets);
    let metrics = Arc::new(metrics::SnMetrics::new(shards));
    let config = config.clone();
    let factory = ServiceFactory::new(move |shard: usize| {
        let socket = sockets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(shard)
            .and_then(Option::take);
        let shared = client::Shared {
            retry: Duration::from_millis(config.retry_interval_ms),
            max_retries: config.max_retries,
            max_topics: config.max_topics_per_client,
            sleep_buffer: config.sleep_buffer_messages,
            predefined: topics::Predefined::new(&config.predefined),
            username: (!config.username.is_empty()).then(|| config.username.clone()),
            password: (!config.password.is_empty()).then(|| Bytes::from(config.password.clone())),
        };
        let limits = gateway::Limits {
            gateway_id: config.gateway_id,
            qos_minus_one: config.qos_minus_one,
            max_clients_per_address: config.max_clients_per_address,
            max_datagrams_per_second: config.max_datagrams_per_second,
            max_datagram: config.max_datagram,
        };
        let gateway = gateway::Gateway::new(
            ShardId(shard as u16),
            shards,
            shared,
            limits,
            metrics.clone(),
        );
        std::rc::Rc::new(service::SnService::new(
            shard,
            socket,
            gateway,
            metrics.clone(),
            advertise,
            config.max_datagram,
        ))
    });
    Ok(Started { factory, listen })
}

/// The socket receive buffer asked for.
const RECV_BUFFER: usize = 4 << 20;

/// One shard's socket of the group: SO_BROADCAST where ADVERTISE goes
/// out, and a receive buffer for bursts.
fn bind_one(addr: SocketAddr, broadcast: bool) -> std::io::Result<Socket> {
    let socket = crate::transport::udp::bind_reuseport(addr)?;
    if broadcast {
        socket.set_broadcast(true)?;
    }
    // A burst of small datagrams overflows the default buffer long before
    // the shard is busy; the kernel caps this at net.core.rmem_max
    // (`tuning/check` shows it).
    socket.set_recv_buffer_size(RECV_BUFFER)?;
    Ok(socket)
}
