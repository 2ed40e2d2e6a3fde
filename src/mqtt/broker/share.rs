//! Shared subscriptions, `$share/<group>/<filter>`: each message matching a
//! group goes to one member of the group, whichever shard holds it.
//!
//! No state is shared between shards. Every shard keeps a view of each
//! group: its own members (sessions holding the shared filter) and, per
//! other shard, how many members that shard has, online and in all, as the
//! shard last announced them (`ShareCount`, absolute numbers, sent on every
//! change before the SUBACK's barrier). The shard a message is published on
//! numbers the members of all shards, online ones first, picks one slot by
//! the strategy, and the shard that holds the slot delivers to its local
//! member at that position. When that shard's members changed meanwhile
//! (the one chosen left), it takes another local member, or forwards the
//! message on with a hop count, so a message is never copied, only moved.
//!
//! Offline persistent members receive only when the group has no online
//! member anywhere (their session queues it, as mosquitto does). A member
//! whose session ends (clean session closing, expiry, a clean reconnect)
//! gives back what it had not acknowledged: queued, or in flight without
//! a PUBACK or PUBREC. Those go to another member, as a new dispatch.

use std::collections::HashMap;
use std::sync::Arc;

use super::{Broker, RemoteMsg, SessionId, ShardId};
use crate::mqtt::index::SubscriptionIndex;
use crate::mqtt::session::Message;
use crate::mqtt::topic;
use crate::mqtt::QoS;

/// How the member of a group is chosen for each message
/// (`[mqtt] shared_subscription_strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ShareStrategy {
    /// Each publishing shard takes the members of all shards in turn.
    #[default]
    RoundRobin,
    /// A member at random (from the seed the shell gives).
    Random,
    /// By the publisher's client id: one publisher's messages keep reaching
    /// the same member while the group's membership is stable.
    HashClientId,
    /// By the topic: one topic's messages keep reaching the same member
    /// while the group's membership is stable.
    HashTopic,
}

/// The groups this shard knows of. See the module docs.
#[derive(Default)]
pub(super) struct Shares {
    by_key: HashMap<Arc<str>, u32>,
    groups: Vec<Option<Group>>,
    free: Vec<u32>,
    /// The groups by the filter their messages match.
    index: SubscriptionIndex<u32>,
    /// xorshift64 state for `ShareStrategy::Random`; never 0.
    rng: u64,
    scratch: Vec<u32>,
}

struct Group {
    /// The whole filter, `$share/<group>/<filter>`.
    key: Arc<str>,
    filter: Box<str>,
    /// This shard's members in the order they joined (pending ones, whose
    /// SUBACK waits for its barrier, included: no retained message goes to
    /// a shared subscription, so nothing can arrive twice).
    members: Vec<(SessionId, QoS)>,
    /// (online, all) members of each shard as last announced; this shard's
    /// entry is unused, its numbers come from `members`.
    counts: Vec<(u32, u32)>,
    /// The next round-robin slot of messages published on this shard.
    cursor: u64,
}

impl Shares {
    pub(super) fn new(seed: u64) -> Shares {
        Shares {
            rng: seed | 1,
            ..Shares::default()
        }
    }

    fn group(&self, gid: u32) -> Option<&Group> {
        self.groups.get(gid as usize).and_then(Option::as_ref)
    }

    fn group_mut(&mut self, gid: u32) -> Option<&mut Group> {
        self.groups.get_mut(gid as usize).and_then(Option::as_mut)
    }

    /// The group of `key`, created when absent; `None` for a key that is
    /// not a well-formed shared filter (never from the codec).
    fn group_or_insert(&mut self, key: &str, shards: usize) -> Option<u32> {
        if let Some(&gid) = self.by_key.get(key) {
            return Some(gid);
        }
        let (_, filter) = topic::parse_share(key)?.ok()?;
        let key: Arc<str> = Arc::from(key);
        let group = Group {
            key: key.clone(),
            filter: filter.into(),
            members: Vec::new(),
            counts: vec![(0, 0); shards],
            cursor: 0,
        };
        let gid = match self.free.pop() {
            Some(gid) => {
                self.groups[gid as usize] = Some(group);
                gid
            }
            None => {
                self.groups.push(Some(group));
                (self.groups.len() - 1) as u32
            }
        };
        self.index.subscribe(filter, gid, QoS::AtMostOnce);
        self.by_key.insert(key, gid);
        Some(gid)
    }

    /// Forgets a group with no member on any shard.
    fn drop_if_empty(&mut self, gid: u32, this: ShardId) {
        let Some(g) = self.group(gid) else { return };
        let remote = g
            .counts
            .iter()
            .enumerate()
            .any(|(s, c)| s != usize::from(this.0) && c.1 > 0);
        if remote || !g.members.is_empty() {
            return;
        }
        let g = self.groups[gid as usize].take().expect("present");
        self.index.unsubscribe(&g.filter, gid);
        self.by_key.remove(&g.key);
        self.free.push(gid);
    }

    fn next_random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    /// How many groups this shard knows of (tests, `$SYS` later).
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.by_key.len()
    }
}

/// FNV-1a, stable across runs: the hash strategies must give the same
/// member on every shard and after a restart.
fn fnv(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// The hash of a publisher's client id, for `ShareStrategy::HashClientId`.
pub(super) fn publisher_hash(client_id: &str) -> u64 {
    fnv(client_id.as_bytes())
}

impl Broker {
    /// The session holds `key` (a shared filter) at `qos`.
    pub(super) fn share_join(&mut self, sid: SessionId, key: &str, qos: QoS) {
        let Some(gid) = self.shares.group_or_insert(key, self.shards) else {
            return;
        };
        let g = self.shares.group_mut(gid).expect("present");
        match g.members.iter_mut().find(|m| m.0 == sid) {
            Some(m) => m.1 = qos,
            None => g.members.push((sid, qos)),
        }
        self.share_announce(gid);
    }

    /// The session no longer holds `key`.
    pub(super) fn share_leave(&mut self, sid: SessionId, key: &str) {
        let Some(&gid) = self.shares.by_key.get(key) else {
            return;
        };
        if let Some(g) = self.shares.group_mut(gid) {
            g.members.retain(|m| m.0 != sid);
        }
        self.share_announce(gid);
        self.shares.drop_if_empty(gid, self.shard);
    }

    /// The session went online or offline: its groups' numbers changed.
    pub(super) fn share_presence(&mut self, sid: SessionId) {
        if self.shares.by_key.is_empty() {
            return;
        }
        let Some(s) = self.sessions[sid.0 as usize].as_ref() else {
            return;
        };
        let gids: Vec<u32> = s
            .subscriptions()
            .filter_map(|(f, _)| self.shares.by_key.get(f).copied())
            .collect();
        for gid in gids {
            self.share_announce(gid);
        }
    }

    fn is_online(&self, sid: SessionId) -> bool {
        self.session_conn
            .get(sid.0 as usize)
            .is_some_and(Option::is_some)
    }

    /// This shard's (online, all) members of a group.
    fn local_counts(&self, gid: u32) -> (u32, u32) {
        let Some(g) = self.shares.group(gid) else {
            return (0, 0);
        };
        let online = g.members.iter().filter(|m| self.is_online(m.0)).count();
        (online as u32, g.members.len() as u32)
    }

    fn share_announce(&mut self, gid: u32) {
        if self.shards == 1 {
            return;
        }
        let Some(key) = self.shares.group(gid).map(|g| g.key.clone()) else {
            return;
        };
        let (online, total) = self.local_counts(gid);
        self.broadcast(RemoteMsg::ShareCount { key, online, total });
    }

    /// Another shard's numbers for a group.
    pub(super) fn handle_share_count(&mut self, from: ShardId, key: &str, online: u32, total: u32) {
        let gid = if total == 0 {
            match self.shares.by_key.get(key) {
                Some(&gid) => gid,
                None => return,
            }
        } else {
            match self.shares.group_or_insert(key, self.shards) {
                Some(gid) => gid,
                None => return,
            }
        };
        if let Some(c) = self
            .shares
            .group_mut(gid)
            .and_then(|g| g.counts.get_mut(usize::from(from.0)))
        {
            *c = (online, total);
        }
        self.shares.drop_if_empty(gid, self.shard);
    }

    /// A restored session of another shard holds `key` (offline, until
    /// that shard announces its numbers).
    pub(super) fn restore_remote_member(&mut self, shard: ShardId, key: &str) {
        if let Some(gid) = self.shares.group_or_insert(key, self.shards) {
            if let Some(c) = self
                .shares
                .group_mut(gid)
                .and_then(|g| g.counts.get_mut(usize::from(shard.0)))
            {
                c.1 += 1;
            }
        }
    }

    /// Gives a message published on this shard to one member of each
    /// group it matches. `message` is the live copy (retain 0);
    /// `publisher` the hash of its publisher's client id. Returns the
    /// shards it was forwarded to, a bit each.
    pub(super) fn dispatch_shares(&mut self, message: &Message, publisher: Option<u64>) -> u64 {
        if self.shares.by_key.is_empty() {
            return 0;
        }
        let mut gids = std::mem::take(&mut self.shares.scratch);
        gids.clear();
        self.shares
            .index
            .for_each_match(message.topic.as_str(), |gid, _| gids.push(gid));
        let mut targets = 0;
        for &gid in &gids {
            let pick = self.share_pick(gid, message, publisher);
            targets |= self.share_send(gid, message, pick, 0).unwrap_or(0);
        }
        self.shares.scratch = gids;
        targets
    }

    /// The number that picks a member: a slot among all members.
    fn share_pick(&mut self, gid: u32, message: &Message, publisher: Option<u64>) -> u64 {
        let topic_hash = || fnv(message.topic.as_str().as_bytes());
        match self.config.share_strategy {
            ShareStrategy::RoundRobin => match self.shares.group_mut(gid) {
                Some(g) => {
                    g.cursor = g.cursor.wrapping_add(1);
                    g.cursor - 1
                }
                None => 0,
            },
            ShareStrategy::Random => self.shares.next_random(),
            ShareStrategy::HashClientId => publisher.unwrap_or_else(topic_hash),
            ShareStrategy::HashTopic => topic_hash(),
        }
    }

    /// Sends `message` to the member at `pick` (modulo the members): the
    /// online ones of every shard in shard order, or, when none is online
    /// anywhere, all of them. Returns the shard it was forwarded to as a
    /// bit (0: delivered here), `None` when the group has no member.
    fn share_send(&mut self, gid: u32, message: &Message, pick: u64, hops: u8) -> Option<u64> {
        let g = self.shares.group(gid)?;
        let this = usize::from(self.shard.0);
        let local = self.local_counts(gid);
        let weights = |online: bool| {
            g.counts.iter().enumerate().map(move |(s, c)| {
                let c = if s == this { local } else { *c };
                u64::from(if online { c.0 } else { c.1 })
            })
        };
        let online = weights(true).sum::<u64>() > 0;
        let sum: u64 = weights(online).sum();
        if sum == 0 {
            return None;
        }
        let mut slot = pick % sum;
        let mut shard = this;
        for (s, w) in weights(online).enumerate() {
            if slot < w {
                shard = s;
                break;
            }
            slot -= w;
        }
        if shard == this {
            self.share_deliver_local(gid, message, slot, online);
            return Some(0);
        }
        let key = g.key.clone();
        self.send(
            ShardId(shard as u16),
            RemoteMsg::SharedPublish {
                key,
                message: message.clone(),
                slot,
                hops,
            },
        );
        Some(1 << shard)
    }

    /// A message another shard chose one of this shard's members for.
    pub(super) fn handle_shared_publish(
        &mut self,
        key: &str,
        message: Message,
        slot: u64,
        hops: u8,
    ) {
        let Some(&gid) = self.shares.by_key.get(key) else {
            self.stats.messages_dropped += 1;
            return;
        };
        let (online, total) = self.local_counts(gid);
        if online > 0 {
            self.share_deliver_local(gid, &message, slot, true);
        } else if usize::from(hops) < self.shards {
            // The member chosen left meanwhile: choose again, from this
            // shard's view; the hop count bounds a chase of stale views.
            if self.share_send(gid, &message, slot, hops + 1).is_none() {
                self.stats.messages_dropped += 1;
            }
        } else if total > 0 {
            self.share_deliver_local(gid, &message, slot, false);
        } else {
            self.stats.messages_dropped += 1;
        }
    }

    /// Delivers to the local member at `slot` among the online members
    /// (`online`) or all of them.
    fn share_deliver_local(&mut self, gid: u32, message: &Message, slot: u64, online: bool) {
        let Some(g) = self.shares.group(gid) else {
            return;
        };
        let members: Vec<(SessionId, QoS)> = g
            .members
            .iter()
            .copied()
            .filter(|m| !online || self.is_online(m.0))
            .collect();
        if members.is_empty() {
            return;
        }
        // The member at the slot, or the next one that may read the topic:
        // a member whose ACL refuses it must not take the group's copy.
        let start = (slot % members.len() as u64) as usize;
        let topic = message.topic.as_str();
        let (sid, qos) = (0..members.len())
            .map(|k| members[(start + k) % members.len()])
            .find(|m| {
                self.session_acl[m.0 .0 as usize]
                    .as_ref()
                    .map_or(true, |acl| acl.may_receive(topic))
            })
            .unwrap_or(members[start]);
        let key = g.key.clone();
        self.deliver_to(sid, qos, message, Some(&key));
    }

    /// What a session that ends had not acknowledged of its shared
    /// subscriptions goes to other members (see the module docs).
    pub(super) fn redispatch(&mut self, unacked: Vec<(Arc<str>, Message)>) {
        for (key, message) in unacked {
            let Some(&gid) = self.shares.by_key.get(&key) else {
                continue;
            };
            let pick = self.share_pick(gid, &message, None);
            // No member left at all: as for any message with no
            // subscriber, nobody is owed it.
            let _ = self.share_send(gid, &message, pick, 0);
        }
    }
}

#[cfg(test)]
#[path = "share_tests.rs"]
mod tests;
