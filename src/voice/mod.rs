//! The xiaozhi voice gateway: devices hold their control channel over MQTT
//! and stream Opus over AES-128-CTR encrypted UDP; each conversation is
//! bridged to a chat backend over WebSocket (`protocols/xiaozhi.md`).
//!
//! Sans-IO parts: `packet` (the UDP header and cipher), `audio` (one
//! conversation's UDP state), `identity` (device ids and credentials),
//! `control` (JSON messages), `gateway` (one shard's machine), `config`
//! (the `[voice]` section). Shell: `service` (the shard's side, plugged in
//! as a `shard::Service`), `bridge` (backend WebSockets), `backend`
//! (backend URLs, name lookups, the TLS client configuration), `external`
//! (external broker mode), `routes` (OTA and the management API on the HTTP
//! listener), `bpf` (UDP steering), `udp` (batched UDP system calls).

pub mod audio;
mod backend;
pub mod bpf;
mod bridge;
pub mod config;
pub mod control;
mod external;
pub mod gateway;
pub mod identity;
pub mod metrics;
pub mod packet;
pub mod routes;
mod service;

use std::net::SocketAddr;
use std::sync::Mutex;

use crate::shard::ServiceFactory;
use config::{Steering, VoiceConfig};
use gateway::{Gateway, GatewayConfig};

/// Why the gateway cannot start.
#[derive(Debug, thiserror::Error)]
pub enum VoiceStartError {
    #[error("cannot bind UDP {addr}: {source}")]
    Udp {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Backend(#[from] backend::BackendError),
    #[error("cannot resolve the external broker {address:?}: {source}")]
    ExternalBroker {
        address: String,
        source: std::io::Error,
    },
}

/// How UDP datagrams reach their shard, as started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SteeringInForce {
    Bpf,
    Forward,
}

/// What `start` set up: the factory for the shards, and facts to log.
pub struct Started {
    pub factory: ServiceFactory,
    pub udp: SocketAddr,
    pub steering: SteeringInForce,
}

/// Binds the UDP group (one socket per shard, in shard order, so the
/// reuseport program's index is the shard) and readies the backends (their
/// URLs checked, the TLS roots read; names are resolved later, per
/// conversation, off the shard threads).
pub fn start(config: &VoiceConfig, shards: usize) -> Result<Started, VoiceStartError> {
    let backends = backend::specs(
        config.chat_servers.iter().chain(&config.dev_chat_servers),
        &config.chat_ca_file,
    )?;
    let external_broker = resolve_external_broker(config)?;
    let addr = config.udp_listen;
    let want_bpf = config.steering == Steering::Bpf && shards > 1;
    let group = bpf::bind_group(addr, shards, want_bpf)
        .map_err(|source| VoiceStartError::Udp { addr, source })?;
    if let bpf::Steering::Failed(e) = &group.steering {
        tracing::warn!(error = %e, "UDP steering program refused; datagrams are forwarded between shards");
    }
    for fd in &group.sockets {
        enlarge_receive_buffer(fd);
    }
    let udp = group.local_addr;
    let steering = if group.steering.is_attached() || shards == 1 {
        SteeringInForce::Bpf
    } else {
        SteeringInForce::Forward
    };
    let fds = group.sockets;
    let public_port = match config.public_port {
        0 => udp.port(),
        p => p,
    };
    let sockets = Mutex::new(fds.into_iter().map(Some).collect::<Vec<_>>());
    let config = config.clone();
    let factory = ServiceFactory::new(move |shard: usize| {
        let socket = sockets
            .lock()
            .expect("not poisoned")
            .get_mut(shard)
            .and_then(Option::take)
            .expect("one socket per shard");
        let voice = &config;
        let gateway_config = GatewayConfig {
            // External broker mode: conversations live on shard 0, where
            // the broker client runs.
            shard: if voice.external_broker.enabled() {
                0
            } else {
                shard as u32
            },
            shards: shards as u32,
            public_host: voice.public_host.clone(),
            public_port,
            chat_servers: voice.chat_servers.clone(),
            dev_chat_servers: voice.dev_chat_servers.clone(),
            dev_macs: voice
                .dev_macs
                .iter()
                .map(|m| m.to_ascii_lowercase())
                .collect(),
            backend_token: voice.backend_token.clone(),
            backend_secret: voice.backend_secret.clone(),
            hello_timeout: std::time::Duration::from_secs(voice.backend_hello_timeout_s),
            idle_timeout: std::time::Duration::from_secs(voice.idle_timeout_s),
        };
        let gateway = Gateway::new(gateway_config, os_seed());
        std::rc::Rc::new(service::VoiceService::new(
            config.clone(),
            shard,
            shards,
            gateway,
            socket,
            backends.clone(),
            external_broker.clone(),
        ))
    });
    Ok(Started {
        factory,
        udp,
        steering,
    })
}

/// The external broker's addresses, resolved here so that no shard thread
/// ever waits on DNS; empty when devices use the built-in broker.
fn resolve_external_broker(config: &VoiceConfig) -> Result<Vec<SocketAddr>, VoiceStartError> {
    let broker = &config.external_broker;
    if !broker.enabled() {
        return Ok(Vec::new());
    }
    let error = |source| VoiceStartError::ExternalBroker {
        address: broker.address.clone(),
        source,
    };
    let addrs: Vec<SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(broker.address.as_str())
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

/// A fresh seed for one shard's gateway machine, from the OS.
fn os_seed() -> [u8; 32] {
    use rand::RngCore;
    let mut seed = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut seed);
    seed
}

/// Bytes of datagrams a shard's UDP socket can hold while the shard is busy.
/// The default (about 208 KiB, some 270 audio datagrams) overflowed in a
/// few milliseconds at 800 conversations per shard.
const UDP_RECEIVE_BUFFER: usize = 8 << 20;

/// Asks for `UDP_RECEIVE_BUFFER`, beyond `net.core.rmem_max` where the
/// process may (`SO_RCVBUFFORCE`, CAP_NET_ADMIN), else up to that limit
/// (`tuning/sysctl.conf` raises it).
fn enlarge_receive_buffer(fd: &std::os::fd::OwnedFd) {
    use std::os::fd::AsRawFd;
    let size = UDP_RECEIVE_BUFFER as libc::c_int;
    // SAFETY: `fd` is an open socket for the duration of the call, and the
    // option value is a live `c_int` whose size is passed with it.
    let forced = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            std::ptr::addr_of!(size).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if forced != 0 {
        let _ = socket2::SockRef::from(fd).set_recv_buffer_size(UDP_RECEIVE_BUFFER);
    }
}
