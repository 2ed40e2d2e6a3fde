//! The channel mesh between shards: one bounded SPSC channel per ordered
//! pair, carrying batches of broker messages and connection hand-offs.
//!
//! A shard never blocks on a full channel: what it sends is staged in a
//! per-destination queue drained by a flusher task that awaits channel space.
//! The staged total is bounded softly: above `STAGED_BATCHES_MAX`, connections
//! stop reading from their sockets until the flushers catch up, which pushes
//! back on publishers instead of dropping acknowledged messages.

use bytes::BytesMut;
use glommio::channels::shared_channel::{self, SharedReceiver, SharedSender};

use crate::mqtt::broker::RemoteMsg;
use crate::mqtt::codec::Connect;
use crate::transport::Moving;

/// Batches a channel holds. Generous on purpose: tiny SPSC channels under
/// contention are where glommio's mesh has had deadlock reports.
pub const CHANNEL_BATCHES: usize = 4096;

/// Staged batches (all destinations) above which connections stop reading.
pub const STAGED_BATCHES_MAX: usize = 1024;

/// What travels between shards.
pub enum ShardMsg {
    Batch(Vec<RemoteMsg>),
    Handoff(Box<Handoff>),
    /// For one of the services running on the shards (`super::Service`).
    Service(super::service::Tagged),
}

/// A connection moving to the shard that owns its client id: the stream,
/// the CONNECT already read, and bytes read after it.
pub struct Handoff {
    pub stream: Moving,
    pub connect: Connect,
    pub unread: BytesMut,
    /// The client's ACL, compiled where its CONNECT was authenticated.
    pub acl: Option<std::sync::Arc<dyn crate::mqtt::broker::Access>>,
    /// The socket's place in the connection total.
    pub slot: super::limits::Slot,
    /// The largest packet its listener takes.
    pub max_packet_size: usize,
}

/// The two ends a shard holds: `senders[j]` to shard j, `receivers[i]` from
/// shard i (`None` for itself).
pub struct Endpoints {
    pub senders: Vec<Option<SharedSender<ShardMsg>>>,
    pub receivers: Vec<Option<SharedReceiver<ShardMsg>>>,
}

/// Creates the full mesh for `shards` shards; element i goes to shard i.
pub fn full_mesh(shards: usize) -> Vec<Endpoints> {
    let mut endpoints: Vec<Endpoints> = (0..shards)
        .map(|_| Endpoints {
            senders: (0..shards).map(|_| None).collect(),
            receivers: (0..shards).map(|_| None).collect(),
        })
        .collect();
    for from in 0..shards {
        for to in 0..shards {
            if from != to {
                let (tx, rx) = shared_channel::new_bounded(CHANNEL_BATCHES);
                endpoints[from].senders[to] = Some(tx);
                endpoints[to].receivers[from] = Some(rx);
            }
        }
    }
    endpoints
}
