//! The `[persistence]` section: where the stores live, the durability
//! mode, and when persistent sessions expire.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::mqtt::broker::Durability;

/// `[persistence]` as written in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PersistenceConfig {
    /// The store directory (one `shard-<i>` directory per shard inside);
    /// empty keeps everything in memory, as `durability = "none"` does.
    pub dir: String,
    /// `none`, `periodic` or `sync` (see README, "Durability").
    pub durability: DurabilityWord,
    /// `periodic`: the journal is written and synced this often; what a
    /// crash can lose is what was acknowledged within this window.
    pub flush_interval_ms: u64,
    /// Persistent sessions offline longer than this end and leave the
    /// store: seconds, or a number with a unit `s`, `m`, `h`, `d`, `w`, `y`
    /// (mosquitto's `persistent_client_expiration`); 0 never.
    pub persistent_session_expiry: ExpiryValue,
    /// The log is compacted when it is 4 times the live state and at
    /// least this big.
    pub compact_min_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DurabilityWord {
    None,
    Periodic,
    Sync,
}

/// Seconds as a number, or a duration string.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum ExpiryValue {
    Seconds(u64),
    Text(String),
}

impl Default for PersistenceConfig {
    fn default() -> Self {
        PersistenceConfig {
            dir: String::new(),
            durability: DurabilityWord::Periodic,
            flush_interval_ms: 100,
            persistent_session_expiry: ExpiryValue::Seconds(0),
            compact_min_bytes: 64 << 20,
        }
    }
}

/// What the shell runs on: `None` from `store` keeps no store.
#[derive(Debug, Clone)]
pub struct PersistenceSettings {
    pub dir: PathBuf,
    pub durability: Durability,
    pub flush_interval: Duration,
    pub session_expiry: Option<Duration>,
    pub compact_min_bytes: u64,
}

impl PersistenceConfig {
    /// Checks the section; the error names the key.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        parse_expiry(&self.persistent_session_expiry)
            .map_err(|m| ("persistence.persistent_session_expiry", m))?;
        if self.flush_interval_ms == 0 && self.durability == DurabilityWord::Periodic {
            return Err((
                "persistence.flush_interval_ms",
                "must be at least 1 with durability \"periodic\"".to_string(),
            ));
        }
        Ok(())
    }

    /// Session expiry applies with or without a store.
    pub fn session_expiry(&self) -> Option<Duration> {
        parse_expiry(&self.persistent_session_expiry).unwrap_or(None)
    }

    /// The store the shards run, if any: a directory and a mode other
    /// than `none`.
    pub fn settings(&self) -> Option<PersistenceSettings> {
        let durability = match self.durability {
            DurabilityWord::None => return None,
            DurabilityWord::Periodic => Durability::Periodic,
            DurabilityWord::Sync => Durability::Sync,
        };
        if self.dir.is_empty() {
            return None;
        }
        Some(PersistenceSettings {
            dir: PathBuf::from(&self.dir),
            durability,
            flush_interval: Duration::from_millis(self.flush_interval_ms.max(1)),
            session_expiry: self.session_expiry(),
            compact_min_bytes: self.compact_min_bytes,
        })
    }
}

/// `0` or `"0"`: never. Otherwise seconds, or `<n><unit>`.
pub fn parse_expiry(value: &ExpiryValue) -> Result<Option<Duration>, String> {
    let seconds = match value {
        ExpiryValue::Seconds(s) => *s,
        ExpiryValue::Text(text) => {
            let text = text.trim();
            let split = text
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(text.len());
            let (number, unit) = text.split_at(split);
            let n: u64 = number
                .parse()
                .map_err(|_| format!("{text:?} is not a duration like 3600, \"2h\" or \"7d\""))?;
            let unit_s: u64 = match unit {
                "" | "s" => 1,
                "m" => 60,
                "h" => 3600,
                "d" => 86_400,
                "w" => 7 * 86_400,
                "y" => 365 * 86_400,
                _ => return Err(format!("{text:?}: unit must be s, m, h, d, w or y")),
            };
            n.checked_mul(unit_s)
                .ok_or_else(|| format!("{text:?} is too long"))?
        }
    };
    Ok((seconds > 0).then(|| Duration::from_secs(seconds)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_takes_seconds_and_units() {
        let text = |s: &str| parse_expiry(&ExpiryValue::Text(s.to_string()));
        assert_eq!(parse_expiry(&ExpiryValue::Seconds(0)), Ok(None));
        assert_eq!(text("0"), Ok(None));
        assert_eq!(
            parse_expiry(&ExpiryValue::Seconds(90)),
            Ok(Some(Duration::from_secs(90)))
        );
        assert_eq!(text("2h"), Ok(Some(Duration::from_secs(7200))));
        assert_eq!(text("1w"), Ok(Some(Duration::from_secs(604_800))));
        assert!(text("2x").is_err());
        assert!(text("h").is_err());
    }

    #[test]
    fn no_dir_or_none_keeps_no_store() {
        let mut c = PersistenceConfig::default();
        assert!(c.settings().is_none(), "off by default");
        c.dir = "/var/lib/shardmq".to_string();
        let s = c.settings().expect("a store");
        assert_eq!(s.durability, Durability::Periodic);
        assert_eq!(s.flush_interval, Duration::from_millis(100));
        c.durability = DurabilityWord::None;
        assert!(c.settings().is_none());
    }
}
