//! shardmq: a thread-per-core, io_uring MQTT 3.1.1 broker and device-fleet
//! data plane. See `README.md` for operation and `DESIGN.md` for the
//! architecture.

pub mod auth;
pub mod config;
pub mod external;
pub mod http;
pub mod mqtt;
pub mod presence;
pub mod relay;
pub mod shard;
pub mod sn;
pub mod systemd;
pub mod transport;
pub mod voice;
