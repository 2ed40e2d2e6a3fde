//! External broker mode (seed 004 §7): the gateway is an MQTT client of
//! another broker (EMQX, mosquitto, …) instead of the devices' broker.
//! Devices' messages arrive on `/p2p/device_public/<mac_>` (the broker maps
//! `device-server` there), replies go to `/p2p/device_sub/<mac_>`; UDP
//! audio stays direct to the gateway.
//!
//! The MQTT client itself is `crate::external`, shared with the command
//! relay; this module maps devices to topics. The client runs on shard 0
//! and so do the conversations: their conn ids
//! steer there. The broker's address is resolved once at start-up
//! (`voice::start`): a DNS lookup on the shard would stall its connections. With `share_group`, several gateway instances subscribe
//! through `$share/<group>/` and the broker spreads devices over them (use
//! a sticky strategy, e.g. EMQX `hash_topic`, so a device's messages keep
//! reaching the instance that holds its conversation).

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;

use crate::external::{Client, Options, Outbox};
use crate::mqtt::QoS;
use crate::shard::Shard;
use crate::voice::gateway::DeviceKey;
use crate::voice::identity::{self, DeviceId, IdError};
use crate::voice::service::VoiceService;

const INBOUND_PREFIX: &str = "/p2p/device_public/";
const OUTBOUND_PREFIX: &str = "/p2p/device_sub/";
const KEEPALIVE_S: u16 = 60;

/// Bytes of replies kept for the broker. While it is down nothing drains
/// the outbox, and replies to devices that cannot hear them must not grow
/// the shard's memory: past this, replies are dropped and counted. A
/// connected broker drains it every turn, so only an outage fills it.
pub(crate) const OUTBOX_MAX: usize = 256 * 1024;

/// A device first seen through the external broker.
#[derive(Debug)]
pub(crate) struct NewDevice {
    pub(crate) id: DeviceId,
    /// The client id the gateway knows it by: the external broker
    /// authenticated the device, and only its MAC reaches the gateway.
    pub(crate) client_id: String,
}

/// The devices seen through the external broker, the broker's address,
/// and what waits to be published.
pub(crate) struct Link {
    /// The broker, resolved at start-up; tried in order.
    broker: Vec<SocketAddr>,
    by_mac: HashMap<String, DeviceKey>,
    macs: HashMap<DeviceKey, String>,
    next_key: u64,
    outbox: Rc<RefCell<Outbox>>,
}

impl Link {
    pub(crate) fn new(broker: Vec<SocketAddr>) -> Link {
        Link {
            broker,
            by_mac: HashMap::new(),
            macs: HashMap::new(),
            next_key: 0,
            outbox: Rc::new(RefCell::new(Outbox::new(OUTBOX_MAX))),
        }
    }

    /// The key of a device by its `mac_` topic level, with its identity
    /// when it is new. A level that is not a MAC is refused before any
    /// state is kept for it.
    pub(crate) fn device(&mut self, mac: &str) -> Result<(DeviceKey, Option<NewDevice>), IdError> {
        if let Some(key) = self.by_mac.get(mac) {
            return Ok((*key, None));
        }
        let client_id = format!("GID_external@@@{mac}");
        let id = identity::parse_client_id(&client_id)?;
        if id.uuid.is_some() {
            // The level held `@@@` of its own: a client id, not a MAC.
            return Err(IdError::PartCount(3));
        }
        self.next_key += 1;
        let key = DeviceKey(self.next_key);
        self.by_mac.insert(mac.to_string(), key);
        self.macs.insert(key, mac.to_string());
        Ok((key, Some(NewDevice { id, client_id })))
    }

    /// Queues a reply to a device; `false` when the outbox is full and the
    /// reply was dropped (the caller counts it).
    #[must_use]
    pub(crate) fn publish(&mut self, device: DeviceKey, payload: &[u8]) -> bool {
        let Some(mac) = self.macs.get(&device) else {
            return true;
        };
        let topic = format!("{OUTBOUND_PREFIX}{mac}");
        self.outbox
            .borrow_mut()
            .publish(&topic, payload, QoS::AtMostOnce)
    }
}

/// The gateway as a client of the external broker (`crate::external`).
struct VoiceClient {
    service: Rc<VoiceService>,
    shard: Rc<Shard>,
    outbox: Rc<RefCell<Outbox>>,
}

impl Client for VoiceClient {
    fn outbox(&self) -> &RefCell<Outbox> {
        &self.outbox
    }

    fn message(&self, topic: &str, payload: &[u8]) {
        if let Some(mac) = device_of_topic(topic) {
            self.service.external_message(&self.shard, mac, payload);
        }
    }
}

pub(crate) fn start(service: Rc<VoiceService>, shard: Rc<Shard>) {
    let Some((broker, outbox)) = service.with_link(|l| (l.broker.clone(), l.outbox.clone())) else {
        return;
    };
    let cfg = &service.config.external_broker;
    let options = Options {
        service: "voice",
        address: cfg.address.clone(),
        client_id: cfg.client_id.clone(),
        username: cfg.username.clone(),
        password: cfg.password.clone(),
        keepalive_s: KEEPALIVE_S,
        subscriptions: vec![(inbound_filter(&cfg.share_group), QoS::AtMostOnce)],
    };
    let client = Rc::new(VoiceClient {
        service: service.clone(),
        shard,
        outbox,
    });
    crate::external::spawn(client, broker, options);
}

/// The topic filter the gateway subscribes to.
///
/// ```text
/// ""      -> /p2p/device_public/#
/// "voice" -> $share/voice//p2p/device_public/#
/// ```
pub(crate) fn inbound_filter(share_group: &str) -> String {
    if share_group.is_empty() {
        format!("{INBOUND_PREFIX}#")
    } else {
        // The share name ends at the next `/`: the filter that follows is
        // `/p2p/...`, which starts with a `/` of its own.
        format!("$share/{share_group}/{INBOUND_PREFIX}#")
    }
}

/// The `mac_` level of an inbound topic.
pub(crate) fn device_of_topic(topic: &str) -> Option<&str> {
    let mac = topic.strip_prefix(INBOUND_PREFIX)?;
    (!mac.is_empty() && !mac.contains('/')).then_some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mqtt::codec::{self, Packet};

    #[test]
    fn shared_filters_keep_the_leading_slash_of_the_topic() {
        assert_eq!(inbound_filter(""), "/p2p/device_public/#");
        assert_eq!(inbound_filter("voice"), "$share/voice//p2p/device_public/#");
    }

    #[test]
    fn a_level_that_is_not_a_mac_leaves_no_state() {
        let mut link = Link::new(Vec::new());
        for bad in [
            "not-a-mac",
            "aa_bb_cc_dd_ee",
            "aa_bb_cc_dd_ee_ff_00",
            "aa_bb_cc_dd_ee_ff@@@uuid",
            "@@@",
            "",
        ] {
            assert!(link.device(bad).is_err(), "{bad:?}");
        }
        assert!(link.by_mac.is_empty() && link.macs.is_empty());
        assert_eq!(link.next_key, 0, "no key spent on refused levels");

        let (key, new) = link.device("aa_bb_cc_dd_ee_ff").unwrap();
        let new = new.expect("first sight");
        assert_eq!(new.id.mac, "aa:bb:cc:dd:ee:ff");
        assert_eq!(new.client_id, "GID_external@@@aa_bb_cc_dd_ee_ff");
        let (again, none) = link.device("aa_bb_cc_dd_ee_ff").unwrap();
        assert_eq!((again, none.is_none()), (key, true));
        assert_eq!(link.by_mac.len(), 1);
    }

    #[test]
    fn the_outbox_is_bounded_while_nothing_drains_it() {
        let mut link = Link::new(Vec::new());
        let (device, _) = link.device("aa_bb_cc_dd_ee_ff").unwrap();
        let reply = [b'x'; 1000];
        let mut queued = 0;
        let mut dropped = 0;
        for _ in 0..(2 * OUTBOX_MAX / reply.len()) {
            if link.publish(device, &reply) {
                queued += 1;
            } else {
                dropped += 1;
            }
        }
        assert!(link.outbox.borrow().len() <= OUTBOX_MAX);
        assert!(
            queued > 0 && dropped > 0,
            "{queued} queued, {dropped} dropped"
        );
        // Each queued reply is whole: the outbox decodes to `queued` publishes.
        let mut out = bytes::BytesMut::from(link.outbox.borrow().bytes());
        let mut decoded = 0;
        while let Some(p) = codec::decode(&mut out, 1 << 20).unwrap() {
            assert!(
                matches!(p, Packet::Publish(ref p) if p.topic.as_str() == "/p2p/device_sub/aa_bb_cc_dd_ee_ff")
            );
            decoded += 1;
        }
        assert_eq!(decoded, queued);
        // Once the broker drains it, replies queue again.
        link.outbox.borrow_mut().clear();
        assert!(link.publish(device, &reply));
    }

    #[test]
    fn device_topics_name_one_level() {
        assert_eq!(device_of_topic("/p2p/device_public/aa_bb"), Some("aa_bb"));
        assert_eq!(device_of_topic("/p2p/device_public/"), None);
        assert_eq!(device_of_topic("/p2p/device_public/a/b"), None);
        assert_eq!(device_of_topic("p2p/device_public/a"), None);
    }
}
