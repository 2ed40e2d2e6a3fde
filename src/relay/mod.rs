//! The MS500 device command relay (seed 001): backend programs send JSON
//! commands over a local TCP socket; each valid one is published QoS 1 to
//! its device's topic (`/service/ms500/{unit}/socket`), through the
//! built-in broker in-process or through an external broker. Devices'
//! heartbeats (`/device/ms500/+/online`) are kept in a registry shown on
//! `GET /api/devices` and in `/metrics`.
//!
//! Sans-IO parts: `frame` (the backend's byte stream into JSON objects),
//! `command` (validation, topic, replies), `registry` (heartbeats and
//! online/offline), `metrics` (counters), `config` (the `[relay]`
//! section). Shell: `service` (the listener, backend connections, the
//! in-process or external broker client, the HTTP route), plugged into the
//! shards as a `shard::Service`.
//!
//! Everything runs on shard 0: backends are a few local programs, and one
//! shard publishing at QoS 1 reaches subscribers on every shard through the
//! broker's routing; the registry and `/api/devices` then need no mesh
//! traffic.

pub mod command;
pub mod config;
pub mod frame;
pub mod metrics;
pub mod registry;
mod service;

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::Mutex;

use crate::shard::ServiceFactory;
use config::RelayConfig;

/// Why the relay cannot start.
#[derive(Debug, thiserror::Error)]
pub enum RelayStartError {
    #[error("cannot listen on {addr} (relay.listen): {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot resolve the relay's external broker {address:?}: {source}")]
    ExternalBroker {
        address: String,
        source: std::io::Error,
    },
}

/// What `start` set up: the factory for the shards, and facts to log.
pub struct Started {
    pub factory: ServiceFactory,
    /// The backends' listener, bound.
    pub listen: SocketAddr,
}

/// Binds the backends' listener (here, so that a taken port fails the
/// start with a clear error) and resolves the external broker, if any.
pub fn start(config: &RelayConfig) -> Result<Started, RelayStartError> {
    let (fd, listen) = bind(config.listen).map_err(|source| RelayStartError::Listen {
        addr: config.listen,
        source,
    })?;
    let external = resolve(&config.external_broker.address)?;
    let listener = Mutex::new(Some(fd));
    let config = config.clone();
    let factory = ServiceFactory::new(move |shard: usize| {
        let fd = if shard == 0 {
            listener.lock().expect("not poisoned").take()
        } else {
            None
        };
        std::rc::Rc::new(service::RelayService::new(
            config.clone(),
            shard,
            fd,
            external.clone(),
        ))
    });
    Ok(Started { factory, listen })
}

/// A listening socket on `addr`, without `SO_REUSEPORT`: a port held by
/// anyone else is an error, not silently shared.
fn bind(addr: SocketAddr) -> std::io::Result<(OwnedFd, SocketAddr)> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(128)?;
    let local = socket
        .local_addr()?
        .as_socket()
        .ok_or_else(|| std::io::Error::other("not an IP address"))?;
    Ok((socket.into(), local))
}

/// The external broker's addresses; empty for the built-in broker.
fn resolve(address: &str) -> Result<Vec<SocketAddr>, RelayStartError> {
    if address.is_empty() {
        return Ok(Vec::new());
    }
    let error = |source| RelayStartError::ExternalBroker {
        address: address.to_string(),
        source,
    };
    let addrs: Vec<SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(address)
        .map_err(error)?
        .collect();
    if addrs.is_empty() {
        return Err(error(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no address",
        )));
    }
    Ok(addrs)
}
