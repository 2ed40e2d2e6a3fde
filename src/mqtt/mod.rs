//! The MQTT 3.1.1 protocol core: codec, topics, subscription index, retained
//! store, per-client session state and the per-shard broker machine.
//!
//! Everything under `mqtt` is sans-IO: no glommio, no sockets, no clock. Time
//! comes in as an argument (`now: Instant`), bytes come in as `BytesMut` and go
//! out into caller-owned buffers. The shard shell (`crate::shard`) drives it.
//! It parses peer bytes and needs no `unsafe`: the compiler holds it to that.

#![forbid(unsafe_code)]

pub mod broker;
pub mod codec;
pub mod index;
pub mod retained;
pub mod session;
pub mod store;
pub mod topic;

/// Quality of service of a PUBLISH or a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum QoS {
    AtMostOnce = 0,
    AtLeastOnce = 1,
    ExactlyOnce = 2,
}

impl QoS {
    /// The QoS of a wire value; 3 (and above) is not a QoS.
    pub fn from_u8(v: u8) -> Option<QoS> {
        match v {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }
}
