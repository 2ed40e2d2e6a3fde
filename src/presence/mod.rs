//! Fleet presence of MeekYolo service nodes (seed 000): nodes register on
//! `/meek/system/nodes` with the `node_register` envelope (§4.1, §4.2)
//! and report status, health and resources on `/meek/nodes/{node_id}/…`
//! (§3.2); the service keeps them in a registry, answers a malformed
//! registration with the §7.1 error on a configurable topic, publishes the
//! registry as a retained snapshot when it changes, and shows it on
//! `GET /api/nodes` and in `/metrics`. Through the built-in broker
//! in-process, or as a client of an external broker.
//!
//! # Offline
//! The seed has nodes set a will (§6.1) but names neither its topic nor
//! its payload. The convention here: the will is published on the node's
//! own `/meek/nodes/{node_id}/status`, and a status `offline` (the plain
//! text, `{"status":"offline"}`, or an envelope whose payload says so)
//! takes the node offline. An envelope on `/meek/system/nodes` of type
//! `node_offline` or `node_unregister` naming the node does the same.
//! A node whose health reports stop for `health_timeout_s` goes offline
//! too.
//!
//! Sans-IO parts: `envelope` (validation, the §7.1 error, report topics),
//! `registry` (nodes, transitions, snapshot pacing), `metrics`, `config`.
//! Shell: `service`, on shard 0 only (a fleet is thousands of nodes at
//! most, reporting every few seconds).

pub mod config;
pub mod envelope;
pub mod metrics;
pub mod registry;
mod service;

use std::net::SocketAddr;

use crate::shard::ServiceFactory;
use config::PresenceConfig;

/// Where nodes register (§3.1).
pub const REGISTER_TOPIC: &str = "/meek/system/nodes";

/// The filters the service subscribes to.
pub const FILTERS: [&str; 4] = [
    REGISTER_TOPIC,
    "/meek/nodes/+/status",
    "/meek/nodes/+/health",
    "/meek/nodes/+/resource",
];

/// Message types on `REGISTER_TOPIC` that take a node offline.
pub const OFFLINE_TYPES: [&str; 2] = ["node_offline", "node_unregister"];

/// Why the service cannot start.
#[derive(Debug, thiserror::Error)]
#[error("cannot resolve the presence service's external broker {address:?}: {source}")]
pub struct PresenceStartError {
    address: String,
    source: std::io::Error,
}

/// Resolves the external broker, if any, and makes the shards' factory.
pub fn start(config: &PresenceConfig) -> Result<ServiceFactory, PresenceStartError> {
    let external = resolve(&config.external_broker.address)?;
    let config = config.clone();
    Ok(ServiceFactory::new(move |shard: usize| {
        std::rc::Rc::new(service::PresenceService::new(
            config.clone(),
            shard,
            external.clone(),
        ))
    }))
}

/// The external broker's addresses; empty for the built-in broker.
fn resolve(address: &str) -> Result<Vec<SocketAddr>, PresenceStartError> {
    if address.is_empty() {
        return Ok(Vec::new());
    }
    let error = |source| PresenceStartError {
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
