//! Topic ids (§2.3, §6.5): the ids one client registered or was given,
//! the predefined ids every client shares, and two-character short names.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::Arc;

use super::codec::TopicIdType;
use super::config::Predefined as PredefinedEntry;
use crate::mqtt::topic::{validate_name, TopicName};

/// The predefined ids of the configuration, the same for every client.
#[derive(Debug, Default)]
pub struct Predefined {
    /// As the broker takes them: a PUBLISH costs a reference, not a copy.
    by_id: HashMap<u16, TopicName>,
    by_name: HashMap<Arc<str>, u16>,
}

impl Predefined {
    pub fn new(entries: &[PredefinedEntry]) -> Predefined {
        let mut p = Predefined::default();
        for e in entries {
            // The configuration's names are checked (`SnConfig::validate`).
            let Ok(topic) = TopicName::from_string(e.topic.clone()) else {
                continue;
            };
            p.by_id.insert(e.id, topic);
            p.by_name.insert(Arc::from(e.topic.as_str()), e.id);
        }
        p
    }

    pub fn name(&self, id: u16) -> Option<&str> {
        self.topic(id).map(TopicName::as_str)
    }

    pub fn topic(&self, id: u16) -> Option<&TopicName> {
        self.by_id.get(&id)
    }

    pub fn id(&self, name: &str) -> Option<u16> {
        self.by_name.get(name).copied()
    }
}

/// The name a short topic's two octets spell, if they are a valid topic
/// name (no wildcard, UTF-8).
pub fn short_name(octets: [u8; 2]) -> Option<String> {
    let name = std::str::from_utf8(&octets).ok()?;
    validate_name(name).ok()?;
    Some(name.to_string())
}

/// Ids of one client, given from 1 up (0x0000 and 0xFFFF are reserved).
#[derive(Debug, Default)]
pub struct Topics {
    /// Index `id - 1`; `None` once deleted.
    names: Vec<Option<TopicName>>,
    ids: HashMap<Arc<str>, u16>,
}

/// No id for the name: none left (`max_topics_per_client`), or not a
/// topic name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

impl Topics {
    /// The id of `name`, given now if it has none.
    pub fn register(&mut self, name: &str, max: usize) -> Result<u16, Full> {
        if let Some(&id) = self.ids.get(name) {
            return Ok(id);
        }
        let slot = match self.names.iter().position(Option::is_none) {
            Some(free) => free,
            None if self.names.len() < max.min(usize::from(u16::MAX) - 1) => {
                self.names.push(None);
                self.names.len() - 1
            }
            None => return Err(Full),
        };
        let topic = TopicName::from_string(name.to_string()).map_err(|_| Full)?;
        let id = (slot + 1) as u16;
        self.names[slot] = Some(topic);
        self.ids.insert(Arc::from(name), id);
        Ok(id)
    }

    pub fn name(&self, id: u16) -> Option<&str> {
        self.topic(id).map(TopicName::as_str)
    }

    /// The id's name as the broker takes it.
    pub fn topic(&self, id: u16) -> Option<&TopicName> {
        usize::from(id)
            .checked_sub(1)
            .and_then(|i| self.names.get(i))
            .and_then(Option::as_ref)
    }

    pub fn id(&self, name: &str) -> Option<u16> {
        self.ids.get(name).copied()
    }

    /// Forgets `id` (the client answered that it does not know it).
    pub fn remove(&mut self, id: u16) {
        let Some(slot) = usize::from(id)
            .checked_sub(1)
            .and_then(|i| self.names.get_mut(i))
        else {
            return;
        };
        if let Some(name) = slot.take() {
            self.ids.remove(name.as_str());
        }
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// How a message on `name` reaches a client: its own id, a predefined id,
/// a short name, or `None` (the gateway must REGISTER it first).
pub fn downlink_id(
    topics: &Topics,
    predefined: &Predefined,
    name: &str,
) -> Option<(TopicIdType, u16)> {
    if let Some(id) = topics.id(name) {
        return Some((TopicIdType::Normal, id));
    }
    if let Some(id) = predefined.id(name) {
        return Some((TopicIdType::Predefined, id));
    }
    match name.as_bytes() {
        [a, b] => Some((TopicIdType::Short, u16::from_be_bytes([*a, *b]))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_start_at_one_are_reused_once_freed_and_are_bounded() {
        let mut t = Topics::default();
        assert_eq!(t.register("a/b", 2), Ok(1));
        assert_eq!(t.register("a/b", 2), Ok(1));
        assert_eq!(t.register("a/c", 2), Ok(2));
        assert_eq!(t.register("a/d", 2), Err(Full));
        t.remove(1);
        assert_eq!(t.name(1), None);
        assert_eq!(t.register("a/d", 2), Ok(1));
        assert_eq!(t.name(1), Some("a/d"));
        assert_eq!(t.name(0), None);
        assert_eq!(t.name(u16::MAX), None);
    }

    #[test]
    fn the_downlink_prefers_the_clients_id_then_predefined_then_short() {
        let p = Predefined::new(&[PredefinedEntry {
            id: 7,
            topic: "pre/x".into(),
        }]);
        let mut t = Topics::default();
        assert_eq!(
            downlink_id(&t, &p, "pre/x"),
            Some((TopicIdType::Predefined, 7))
        );
        assert_eq!(
            downlink_id(&t, &p, "ab"),
            Some((TopicIdType::Short, 0x6162))
        );
        assert_eq!(downlink_id(&t, &p, "abc"), None);
        t.register("pre/x", 10).unwrap();
        assert_eq!(downlink_id(&t, &p, "pre/x"), Some((TopicIdType::Normal, 1)));
        assert_eq!(short_name(*b"a+"), None);
        assert_eq!(short_name(*b"ab").as_deref(), Some("ab"));
    }
}
