//! The check at CONNECT, on the shard that read the packet and before any
//! hand-off: credentials against the shard's `auth::Gate`, the refusal
//! counted, and the client's compiled ACL returned to travel with the
//! connection.

use std::sync::Arc;
use std::time::Instant;

use super::Shard;
use crate::auth::Verdict;
use crate::mqtt::broker::{Access, AuthRefusal};
use crate::mqtt::codec::{Connect, ConnectReturnCode};

/// `Ok` with the client's ACL (`None`: no ACL), or the CONNACK code that
/// refuses it: 4 for a wrong user name or password, 5 for a client not
/// authorized (anonymous where that is off, or an address over its
/// failure budget). `certified`: the user name is a verified client
/// certificate's identity, which stands in for the password.
pub(super) fn authenticate(
    shard: &Shard,
    peer: Option<std::net::SocketAddr>,
    connect: &Connect,
    certified: bool,
) -> Result<Option<Arc<dyn Access>>, ConnectReturnCode> {
    if shard.authenticates_itself(connect) {
        // A service (the voice gateway) checks its devices' credentials.
        return Ok(None);
    }
    check(shard, peer, connect, certified).map_err(|(refusal, code)| {
        shard.broker.borrow_mut().note_auth_refused(refusal);
        code
    })
}

impl Shard {
    /// Checks the credentials of a client a service connects to the broker
    /// on its own (the MQTT-SN gateway's), as for a CONNECT read from a
    /// socket: its ACL, or why it is refused. Does not borrow the broker:
    /// the caller counts the refusal (`Broker::note_auth_refused`).
    pub fn authorize(
        &self,
        peer: Option<std::net::SocketAddr>,
        connect: &Connect,
    ) -> Result<Option<Arc<dyn Access>>, (AuthRefusal, ConnectReturnCode)> {
        check(self, peer, connect, false)
    }
}

fn check(
    shard: &Shard,
    peer: Option<std::net::SocketAddr>,
    connect: &Connect,
    certified: bool,
) -> Result<Option<Arc<dyn Access>>, (AuthRefusal, ConnectReturnCode)> {
    let verdict = match (certified, connect.username.as_deref()) {
        (true, Some(user)) => shard
            .gate
            .borrow_mut()
            .check_certified(user, &connect.client_id),
        _ => shard.gate.borrow_mut().check(
            Instant::now(),
            peer.map(|p| p.ip()),
            connect.username.as_deref(),
            connect.password.as_deref(),
            &connect.client_id,
        ),
    };
    let (refusal, code) = match verdict {
        Verdict::Accept(acl) => return Ok(acl.map(|a| a as Arc<dyn Access>)),
        Verdict::BadCredentials => (
            AuthRefusal::BadCredentials,
            ConnectReturnCode::BadUserNamePassword,
        ),
        Verdict::AnonymousRefused => (
            AuthRefusal::AnonymousRefused,
            ConnectReturnCode::NotAuthorized,
        ),
        Verdict::Throttled => (AuthRefusal::Throttled, ConnectReturnCode::NotAuthorized),
    };
    tracing::debug!(
        ?peer,
        client_id = %connect.client_id,
        username = connect.username.as_deref().unwrap_or(""),
        ?refusal,
        "CONNECT refused"
    );
    Err((refusal, code))
}
