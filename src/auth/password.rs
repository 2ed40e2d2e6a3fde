//! Password files: one `user:hash` line per user, in mosquitto's
//! `password_file` format, so a file written by `mosquitto_passwd` and one
//! written by `shardmq passwd` are interchangeable.
//!
//! # Hashes
//! - `$7$<iterations>$<base64 salt>$<base64 hash>`: PBKDF2-HMAC-SHA512 over
//!   the password and the 12-byte salt, 64-byte hash (mosquitto 2.0's
//!   default). What `shardmq passwd` writes, with [`ITERATIONS_DEFAULT`].
//! - `$6$<base64 salt>$<base64 hash>`: one SHA-512 of the password followed
//!   by the salt (mosquitto before 2.0, and `mosquitto_passwd -H sha512`).
//!   Read, never written: it is fast to brute-force.
//!
//! The base64 is the standard alphabet with padding, as OpenSSL writes it.
//! Lines starting with `#` and lines without `:` are skipped, as mosquitto
//! does; a line with `:` whose hash cannot be read is an error here (where
//! mosquitto drops the user with a log line) so that a typo is seen at load.

use std::collections::HashMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;

/// Salt bytes of a hash we write (mosquitto's `SALT_LEN`).
pub const SALT_LEN: usize = 12;

/// Bytes of a SHA-512 digest: the stored hash of both formats.
const HASH_LEN: usize = 64;

/// PBKDF2 iterations of the hashes `shardmq passwd` writes. mosquitto
/// writes 101; a hundred times that makes an offline guess a hundred times
/// dearer while one verification stays in the low milliseconds, which the
/// per-shard cache of recent successes (`cache`) pays once per client, not
/// once per reconnect.
pub const ITERATIONS_DEFAULT: u32 = 10_000;

/// A bound on the iterations a file may ask for: one verification runs on
/// a shard thread and must not stall it for seconds.
pub const ITERATIONS_MAX: u32 = 1_000_000;

/// Why a password file cannot be used; `line` counts from 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordFileError {
    #[error("line {line}: empty user name")]
    EmptyUser { line: usize },
    #[error("line {line}: user {user:?} appears twice")]
    DuplicateUser { line: usize, user: String },
    #[error("line {line}: {reason}")]
    BadHash { line: usize, reason: HashError },
}

/// Why one stored hash cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HashError {
    #[error("the hash is neither $6$ nor $7$")]
    UnknownKind,
    #[error("the hash has missing fields")]
    MissingField,
    #[error("the iteration count is not within 1..=1000000")]
    BadIterations,
    #[error("the salt is not base64 of 12 bytes")]
    BadSalt,
    #[error("the hash is not base64 of 64 bytes")]
    BadDigest,
}

/// One stored password hash.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredHash {
    kind: HashKind,
    salt: [u8; SALT_LEN],
    digest: [u8; HASH_LEN],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HashKind {
    /// `$6$`: SHA-512(password ‖ salt).
    Sha512,
    /// `$7$`: PBKDF2-HMAC-SHA512 with this many iterations.
    Pbkdf2 { iterations: u32 },
}

impl std::fmt::Debug for StoredHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The digest is a secret's hash: never in logs.
        f.debug_struct("StoredHash")
            .field("kind", &self.kind)
            .finish()
    }
}

impl StoredHash {
    /// A `$7$` hash of `password` with the caller's random `salt`.
    pub fn pbkdf2(password: &[u8], salt: [u8; SALT_LEN], iterations: u32) -> StoredHash {
        assert!((1..=ITERATIONS_MAX).contains(&iterations));
        let mut digest = [0u8; HASH_LEN];
        pbkdf2::pbkdf2_hmac::<Sha512>(password, &salt, iterations, &mut digest);
        StoredHash {
            kind: HashKind::Pbkdf2 { iterations },
            salt,
            digest,
        }
    }

    /// Reads the text after `user:`.
    pub fn parse(text: &str) -> Result<StoredHash, HashError> {
        let mut fields = text.split('$');
        if fields.next() != Some("") {
            return Err(HashError::UnknownKind);
        }
        let kind = match fields.next() {
            Some("6") => HashKind::Sha512,
            Some("7") => {
                let iterations: u32 = fields
                    .next()
                    .ok_or(HashError::MissingField)?
                    .parse()
                    .map_err(|_| HashError::BadIterations)?;
                if !(1..=ITERATIONS_MAX).contains(&iterations) {
                    return Err(HashError::BadIterations);
                }
                HashKind::Pbkdf2 { iterations }
            }
            _ => return Err(HashError::UnknownKind),
        };
        let salt = fields.next().ok_or(HashError::MissingField)?;
        let digest = fields.next().ok_or(HashError::MissingField)?;
        if fields.next().is_some() {
            return Err(HashError::BadDigest);
        }
        Ok(StoredHash {
            kind,
            salt: decode_exact(salt).ok_or(HashError::BadSalt)?,
            digest: decode_exact(digest).ok_or(HashError::BadDigest)?,
        })
    }

    /// Whether `password` hashes to this; the comparison takes the same
    /// time wherever the bytes differ.
    pub fn verify(&self, password: &[u8]) -> bool {
        let mut digest = [0u8; HASH_LEN];
        match self.kind {
            HashKind::Sha512 => {
                let mut h = Sha512::new();
                h.update(password);
                h.update(self.salt);
                digest.copy_from_slice(&h.finalize());
            }
            HashKind::Pbkdf2 { iterations } => {
                pbkdf2::pbkdf2_hmac::<Sha512>(password, &self.salt, iterations, &mut digest);
            }
        }
        digest.ct_eq(&self.digest).into()
    }
}

impl std::fmt::Display for StoredHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let salt = STANDARD.encode(self.salt);
        let digest = STANDARD.encode(self.digest);
        match self.kind {
            HashKind::Sha512 => write!(f, "$6${salt}${digest}"),
            HashKind::Pbkdf2 { iterations } => write!(f, "$7${iterations}${salt}${digest}"),
        }
    }
}

/// Decodes base64 of exactly `N` bytes; padding optional.
fn decode_exact<const N: usize>(text: &str) -> Option<[u8; N]> {
    let text = text.trim_end_matches('=');
    let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(text)
        .ok()?;
    bytes.try_into().ok()
}

/// A parsed password file: users in file order, each with its hash.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PasswordFile {
    users: Vec<(String, StoredHash)>,
    by_name: HashMap<String, usize>,
}

impl PasswordFile {
    pub fn parse(text: &str) -> Result<PasswordFile, PasswordFileError> {
        let mut file = PasswordFile::default();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            if raw.starts_with('#') {
                continue;
            }
            let Some((user, hash)) = raw.split_once(':') else {
                continue;
            };
            let user = user.trim();
            if user.is_empty() {
                return Err(PasswordFileError::EmptyUser { line });
            }
            let hash = StoredHash::parse(hash.trim())
                .map_err(|reason| PasswordFileError::BadHash { line, reason })?;
            if file.by_name.contains_key(user) {
                return Err(PasswordFileError::DuplicateUser {
                    line,
                    user: user.to_string(),
                });
            }
            file.set(user, hash);
        }
        Ok(file)
    }

    pub fn get(&self, user: &str) -> Option<&StoredHash> {
        self.by_name.get(user).map(|&i| &self.users[i].1)
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Adds `user`, or replaces its hash in place.
    pub fn set(&mut self, user: &str, hash: StoredHash) {
        match self.by_name.get(user) {
            Some(&i) => self.users[i].1 = hash,
            None => {
                self.by_name.insert(user.to_string(), self.users.len());
                self.users.push((user.to_string(), hash));
            }
        }
    }

    /// Removes `user`; false when it was not there.
    pub fn remove(&mut self, user: &str) -> bool {
        let Some(i) = self.by_name.remove(user) else {
            return false;
        };
        self.users.remove(i);
        for (j, (name, _)) in self.users.iter().enumerate().skip(i) {
            self.by_name.insert(name.clone(), j);
        }
        true
    }

    /// The file's text, one `user:hash` line each.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for (user, hash) in &self.users {
            out.push_str(user);
            out.push(':');
            out.push_str(&hash.to_string());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
#[path = "password_tests.rs"]
mod tests;
