//! Users and access control: password files, ACL files, the check at
//! CONNECT and the per-address failure budget.
//!
//! Sans-IO like `mqtt`: parsers take text, checks take `now` and the
//! caller's randomness; reading the files and delivering new snapshots on
//! SIGHUP is the shell's job (`shard::reload`).
//!
//! # Ownership
//! 1. An [`AuthSnapshot`] (the parsed files and the policy) is immutable
//!    and shared by `Arc`; a reload replaces it whole, on every shard.
//! 2. Each shard has one [`Gate`]: its snapshot, its cache of recent
//!    successes and its failure budget. Nothing in it is shared.
//! 3. A client's [`ClientAcl`] is compiled once, at CONNECT, from the
//!    snapshot of that moment, and stays with the connection (and its
//!    session) until it ends: a reload applies to new connections.
//!
//! # Files
//! `password.rs` the password file, `acl.rs` the ACL file, `matcher.rs` the
//! compiled per-client ACL, `cache.rs` the verification cache, `budget.rs`
//! the failure budget, `config.rs` the `[auth]` section.

#![forbid(unsafe_code)]

pub mod acl;
pub mod budget;
pub mod cache;
pub mod config;
pub mod matcher;
pub mod password;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

pub use acl::{AclError, AclFile};
pub use budget::{BudgetConfig, FailureBudget};
pub use cache::VerifyCache;
pub use config::AuthConfig;
pub use matcher::{AclDefault, ClientAcl};
pub use password::{PasswordFile, PasswordFileError, StoredHash};

use password::{ITERATIONS_DEFAULT, SALT_LEN};

/// The users and rules in force: what a reload replaces.
#[derive(Debug, Clone, Default)]
pub struct AuthSnapshot {
    /// `None`: user names are not checked.
    pub passwords: Option<PasswordFile>,
    /// `None`: no ACL, everything is allowed.
    pub acl: Option<AclFile>,
    pub allow_anonymous: bool,
    pub acl_default: AclDefault,
}

impl AuthSnapshot {
    /// Nothing to check: anonymous, no password file, no ACL.
    pub fn open() -> AuthSnapshot {
        AuthSnapshot {
            passwords: None,
            acl: None,
            allow_anonymous: true,
            acl_default: AclDefault::Deny,
        }
    }

    /// Whether any check applies; without one the CONNECT path skips
    /// the gate entirely.
    pub fn is_open(&self) -> bool {
        self.passwords.is_none() && self.acl.is_none() && self.allow_anonymous
    }
}

/// The outcome of a CONNECT at the gate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Accepted, with the client's compiled ACL (`None`: no ACL file).
    Accept(Option<Arc<ClientAcl>>),
    /// Wrong user name or password: CONNACK 4 (§3.2.2.3, table 3.1).
    BadCredentials,
    /// No user name where one is required: CONNACK 5.
    AnonymousRefused,
    /// The source address spent its failure budget: CONNACK 5, and the
    /// password is not even checked.
    Throttled,
}

/// One shard's authentication state (rule 2 of the module docs).
#[derive(Debug)]
pub struct Gate {
    snapshot: Arc<AuthSnapshot>,
    cache: VerifyCache,
    budget: FailureBudget,
    /// Checked for an unknown user, so that a wrong user name costs what a
    /// wrong password does and timing does not tell which users exist.
    /// Made at the first unknown user.
    dummy: Option<StoredHash>,
}

impl Gate {
    pub fn new(snapshot: Arc<AuthSnapshot>, budget: BudgetConfig, cache: VerifyCache) -> Gate {
        Gate {
            snapshot,
            cache,
            budget: FailureBudget::new(budget),
            dummy: None,
        }
    }

    pub fn snapshot(&self) -> &Arc<AuthSnapshot> {
        &self.snapshot
    }

    /// A reload: new connections are checked against `snapshot`; the cache
    /// of successes under the old one is dropped.
    pub fn replace(&mut self, snapshot: Arc<AuthSnapshot>) {
        self.snapshot = snapshot;
        self.cache.clear();
    }

    /// Checks a CONNECT from `peer` (if known) at `now`.
    pub fn check(
        &mut self,
        now: Instant,
        peer: Option<IpAddr>,
        username: Option<&str>,
        password: Option<&[u8]>,
        client_id: &str,
    ) -> Verdict {
        if self.snapshot.is_open() {
            return Verdict::Accept(None);
        }
        if let Some(addr) = peer {
            if self.budget.check(addr, now).is_err() {
                return Verdict::Throttled;
            }
        }
        let verdict = self.authenticate(username, password);
        if let Some(addr) = peer {
            match verdict {
                Ok(()) => self.budget.record_success(addr),
                Err(Verdict::BadCredentials) => self.budget.record_failure(addr, now),
                Err(_) => {}
            }
        }
        if let Err(refused) = verdict {
            return refused;
        }
        self.accept(username, client_id)
    }

    /// Admits a client whose user name is the identity of a client
    /// certificate the TLS handshake verified (`use_identity_as_username`).
    /// As in mosquitto, the certificate is the credential: no password is
    /// checked and no failure can be spent, but the ACL applies to that
    /// user name like to any other.
    pub fn check_certified(&mut self, username: &str, client_id: &str) -> Verdict {
        if self.snapshot.is_open() {
            return Verdict::Accept(None);
        }
        self.accept(Some(username), client_id)
    }

    fn accept(&self, username: Option<&str>, client_id: &str) -> Verdict {
        let acl = self.snapshot.acl.as_ref().map(|file| {
            Arc::new(ClientAcl::compile(
                file,
                username,
                client_id,
                self.snapshot.acl_default,
            ))
        });
        Verdict::Accept(acl)
    }

    fn authenticate(
        &mut self,
        username: Option<&str>,
        password: Option<&[u8]>,
    ) -> Result<(), Verdict> {
        let Some(user) = username else {
            return match self.snapshot.allow_anonymous {
                true => Ok(()),
                false => Err(Verdict::AnonymousRefused),
            };
        };
        let Some(passwords) = &self.snapshot.passwords else {
            return Ok(());
        };
        let password = password.unwrap_or(&[]);
        if self.cache.contains(user, password) {
            return Ok(());
        }
        match passwords.get(user) {
            Some(hash) if hash.verify(password) => {
                self.cache.insert(user, password);
                Ok(())
            }
            Some(_) => Err(Verdict::BadCredentials),
            None => {
                let dummy = self.dummy.get_or_insert_with(|| {
                    StoredHash::pbkdf2(b"", [0; SALT_LEN], ITERATIONS_DEFAULT)
                });
                let _ = dummy.verify(password);
                Err(Verdict::BadCredentials)
            }
        }
    }
}

#[cfg(test)]
mod gate_tests;
