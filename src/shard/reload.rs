//! Reloading on SIGHUP: the process's main thread takes the signal (the
//! binary's `signals`), reads the files again and, when they parse, sends
//! each shard the new immutable snapshot through its own bounded channel. A file that does
//! not parse leaves every shard on the snapshot it has, with one warning
//! saying why. The same signal reloads the TLS certificates and keys.
//!
//! # Ownership
//! 1. Shards share nothing mutable: each gets its own `Arc` of the snapshot
//!    through its own channel and takes it on its next tick.
//! 2. What a shard takes is a [`Reload`] variant, so other per-shard state
//!    is one more variant, not another mechanism. The TLS configuration is
//!    not per shard: its `ServerConfigHolder` is already shared by every
//!    shard (read once per accept), so the reload thread swaps it in place.
//! 3. Connections keep what they started with (their compiled ACL, their
//!    TLS session); new connections see the new files.

use std::path::Path;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;

use crate::auth::{AclFile, AuthConfig, AuthSnapshot, PasswordFile};
use crate::transport::{ServerConfigHolder, TlsConfig};

/// What a reload gives a shard.
#[derive(Debug, Clone)]
pub enum Reload {
    /// Users and ACL rules for new connections.
    Auth(Arc<AuthSnapshot>),
}

/// Reloads a shard holds before it takes them; a shard takes them every
/// broker tick, so more than a few pending means it is stuck.
const PENDING_MAX: usize = 4;

/// Why the files cannot be used; one line for the operator.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("password file {path}: {source}")]
    Passwords {
        path: String,
        source: crate::auth::PasswordFileError,
    },
    #[error("ACL file {path}: {source}")]
    Acl {
        path: String,
        source: crate::auth::AclError,
    },
}

/// Reads the files `config` names into a snapshot.
pub fn load_auth(config: &AuthConfig) -> Result<AuthSnapshot, LoadError> {
    let passwords = match &config.password_file {
        Some(path) => {
            let text = read(path)?;
            Some(
                PasswordFile::parse(&text).map_err(|source| LoadError::Passwords {
                    path: path.display().to_string(),
                    source,
                })?,
            )
        }
        None => None,
    };
    let acl = match &config.acl_file {
        Some(path) => {
            let text = read(path)?;
            Some(AclFile::parse(&text).map_err(|source| LoadError::Acl {
                path: path.display().to_string(),
                source,
            })?)
        }
        None => None,
    };
    Ok(AuthSnapshot {
        passwords,
        acl,
        allow_anonymous: config.anonymous_allowed(),
        acl_default: config.acl_default,
    })
}

fn read(path: &Path) -> Result<String, LoadError> {
    std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// The sending ends, one per shard, and the TLS listener's configuration.
#[derive(Debug, Clone)]
pub struct Reloader {
    senders: Vec<SyncSender<Reload>>,
    /// `None` without a TLS listener.
    tls: Option<ServerConfigHolder>,
}

/// A shard's receiving end.
pub(crate) type ReloadReceiver = Receiver<Reload>;

/// Channels for `shards` shards: the sender side and one receiver each.
pub(crate) fn channels(
    shards: usize,
    tls: Option<ServerConfigHolder>,
) -> (Reloader, Vec<ReloadReceiver>) {
    let (senders, receivers) = (0..shards).map(|_| mpsc::sync_channel(PENDING_MAX)).unzip();
    (Reloader { senders, tls }, receivers)
}

impl Reloader {
    /// Offers `reload` to every shard; never blocks. A shard whose channel
    /// is full is skipped with a warning (it keeps its previous state).
    pub fn send(&self, reload: &Reload) {
        for (shard, tx) in self.senders.iter().enumerate() {
            match tx.try_send(reload.clone()) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    tracing::warn!(shard, "shard has not taken earlier reloads; skipped")
                }
                Err(TrySendError::Disconnected(_)) => {}
            }
        }
    }

    /// Reads the auth files again and sends the snapshot, or keeps the old
    /// one and logs why.
    pub fn reload_auth(&self, config: &AuthConfig) {
        match load_auth(config) {
            Ok(snapshot) => {
                self.send(&Reload::Auth(Arc::new(snapshot)));
                tracing::info!("users and ACL reloaded");
            }
            Err(e) => tracing::warn!(error = %e, "reload refused; the previous users and ACL stay"),
        }
    }

    /// Reads the certificate, key and CA files of `config` again and
    /// swaps them in for new TLS connections, or keeps the configuration in
    /// force and logs why. Nothing to do without a TLS listener.
    pub fn reload_tls(&self, config: &TlsConfig) {
        let Some(holder) = &self.tls else { return };
        match holder.reload(config) {
            Ok(()) => tracing::info!("TLS certificates reloaded"),
            Err(e) => tracing::warn!(
                error = %e,
                "TLS reload refused; the previous certificates stay"
            ),
        }
    }
}

/// Takes what reached this shard since its last tick.
pub(super) fn apply_pending(shard: &super::Shard) {
    let Some(rx) = &shard.reloads else { return };
    while let Ok(reload) = rx.try_recv() {
        match reload {
            Reload::Auth(snapshot) => shard.gate.borrow_mut().replace(snapshot),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_file_is_an_error_with_its_line() {
        let dir = std::env::temp_dir().join(format!("shardmq-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let acl = dir.join("acl");
        std::fs::write(&acl, "topic read a\nbogus\n").unwrap();
        let config = AuthConfig {
            acl_file: Some(acl.clone()),
            ..AuthConfig::default()
        };
        let e = load_auth(&config).unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
        std::fs::write(&acl, "topic read a\n").unwrap();
        let snapshot = load_auth(&config).unwrap();
        assert!(snapshot.acl.is_some() && snapshot.allow_anonymous);
        let missing = AuthConfig {
            password_file: Some(dir.join("none")),
            ..AuthConfig::default()
        };
        assert!(matches!(load_auth(&missing), Err(LoadError::Read { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn every_shard_gets_the_reload_and_a_full_channel_does_not_block() {
        let (reloader, receivers) = channels(2, None);
        let reload = Reload::Auth(Arc::new(AuthSnapshot::open()));
        for _ in 0..PENDING_MAX + 2 {
            reloader.send(&reload);
        }
        for rx in &receivers {
            assert_eq!(rx.try_iter().count(), PENDING_MAX);
        }
    }
}
