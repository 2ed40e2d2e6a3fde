//! A bounded cache of recent successful password checks, one per shard.
//!
//! A `$7$` check costs thousands of HMAC-SHA512 rounds on the shard's own
//! thread. When a fleet reconnects at once (a broker restart, a network
//! blip) every client presents the password that succeeded a moment ago;
//! remembering those successes keeps a reconnect storm from burning a core
//! on hashing. Only successes are kept, so a guess is never cheaper than
//! the slow hash, and the cache is emptied whenever the password file is
//! reloaded, so a changed or removed password takes effect at once.
//!
//! An entry is HMAC-SHA256 over the user name and the password under a
//! random per-shard key: the cache holds no password, nor a fast hash of
//! one that could be brute-forced from a memory dump.

use std::collections::{HashSet, VecDeque};

use hmac::{Hmac, Mac};
use sha2::Sha256;

type Fingerprint = [u8; 32];

/// See the module docs.
pub struct VerifyCache {
    key: [u8; 32],
    entries: HashSet<Fingerprint>,
    /// Insertion order, for evicting the oldest.
    order: VecDeque<Fingerprint>,
    capacity: usize,
}

impl std::fmt::Debug for VerifyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyCache")
            .field("len", &self.entries.len())
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl VerifyCache {
    /// `key` comes from the caller's randomness.
    pub fn new(capacity: usize, key: [u8; 32]) -> VerifyCache {
        VerifyCache {
            key,
            entries: HashSet::new(),
            order: VecDeque::new(),
            capacity,
        }
    }

    fn fingerprint(&self, user: &str, password: &[u8]) -> Fingerprint {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.key) else {
            unreachable!("HMAC takes a key of any length")
        };
        mac.update(&(user.len() as u64).to_le_bytes());
        mac.update(user.as_bytes());
        mac.update(password);
        mac.finalize().into_bytes().into()
    }

    /// Whether this user and password succeeded recently.
    pub fn contains(&self, user: &str, password: &[u8]) -> bool {
        self.capacity > 0 && self.entries.contains(&self.fingerprint(user, password))
    }

    /// Remembers a success, forgetting the oldest beyond the capacity.
    pub fn insert(&mut self, user: &str, password: &[u8]) {
        if self.capacity == 0 {
            return;
        }
        let fp = self.fingerprint(user, password);
        if !self.entries.insert(fp) {
            return;
        }
        self.order.push_back(fp);
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.entries.remove(&old);
            }
        }
        debug_assert_eq!(self.entries.len(), self.order.len());
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.order.clear();
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_user_and_password_together_and_stays_bounded() {
        let mut c = VerifyCache::new(2, [9; 32]);
        c.insert("alice", b"pw");
        assert!(c.contains("alice", b"pw"));
        assert!(!c.contains("alice", b"pw2"));
        assert!(!c.contains("bob", b"pw"));
        // The length prefix keeps "ab"+"c" apart from "a"+"bc".
        c.insert("ab", b"c");
        assert!(!c.contains("a", b"bc"));
        c.insert("carol", b"x");
        assert_eq!(c.len(), 2);
        assert!(!c.contains("alice", b"pw"), "the oldest went first");
        c.clear();
        assert!(c.is_empty());
    }
}
