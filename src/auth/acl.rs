//! ACL files: mosquitto's `acl_file` format as it is, plus roles.
//!
//! # The format
//! One statement per line; blank lines and lines starting with `#` are
//! skipped. mosquitto's statements:
//!
//! - `user NAME`: the following `topic` lines are NAME's (the rest of the
//!   line, trimmed, is the name, spaces included, as in mosquitto).
//! - `topic [ACCESS] FILTER`: a rule for the current user, or, before any
//!   `user` line, for clients that connect without a user name.
//! - `pattern [ACCESS] FILTER`: a rule for every client, where `%c` stands
//!   for its client id and `%u` for its user name (a pattern with `%u`
//!   does not apply to a client without one).
//!
//! ACCESS is `read`, `write`, `readwrite` (the default) or `deny`. shardmq
//! adds:
//!
//! - `role NAME`: the following `topic` and `pattern` lines are the role's
//!   (a `pattern` in a role block applies to the role's members only);
//! - `roles R1,R2`: in a `user` block (or the anonymous section), makes the
//!   user a member of those roles;
//! - the access words `subscribe` and `receive`, which `read` is the sum
//!   of, and lists of words joined by commas (`subscribe,write`).
//!
//! # Permissions
//! Three, checked separately: *subscribe* (hold a filter), *receive*
//! (be delivered a message on a topic) and *publish*. mosquitto's `read` is
//! subscribe and receive, `write` is publish. `deny` takes all three away
//! and wins over any grant, wherever it is written (mosquitto also checks
//! denials first). What no rule grants is refused, unless the
//! configuration makes the default `allow`.

use std::collections::HashMap;

use crate::mqtt::topic;

/// What a rule grants or takes away: a set of [`Access`] bits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rights {
    pub allow: u8,
    pub deny: u8,
}

/// The three permissions, as bits of [`Rights`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Access {
    Subscribe = 1,
    Receive = 2,
    Publish = 4,
}

/// All three bits.
pub(crate) const ALL: u8 = Access::Subscribe as u8 | Access::Receive as u8 | Access::Publish as u8;

impl Rights {
    pub(crate) fn merge(&mut self, other: Rights) {
        self.allow |= other.allow;
        self.deny |= other.deny;
    }

    /// Reads an access word or a comma-joined list of them.
    fn parse(word: &str) -> Option<Rights> {
        let mut rights = Rights::default();
        for part in word.split(',') {
            let bits = match part {
                "read" => Access::Subscribe as u8 | Access::Receive as u8,
                "write" => Access::Publish as u8,
                "readwrite" => ALL,
                "subscribe" => Access::Subscribe as u8,
                "receive" => Access::Receive as u8,
                "deny" if !word.contains(',') => {
                    return Some(Rights {
                        allow: 0,
                        deny: ALL,
                    })
                }
                _ => return None,
            };
            rights.allow |= bits;
        }
        Some(rights)
    }
}

/// One `topic` or `pattern` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub filter: String,
    pub rights: Rights,
}

/// The rules and roles of one user, of the anonymous section, or of a role.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Section {
    pub(crate) topics: Vec<Rule>,
    /// `pattern` lines of a role block (roles only).
    pub(crate) patterns: Vec<Rule>,
    pub(crate) roles: Vec<String>,
}

/// Why an ACL file cannot be used; `line` counts from 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct AclError {
    pub line: usize,
    pub reason: AclErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AclErrorKind {
    #[error("unknown statement {0:?}")]
    UnknownStatement(String),
    #[error("{0} needs a name")]
    MissingName(&'static str),
    #[error("empty topic")]
    EmptyTopic,
    #[error("invalid access {0:?} (read, write, readwrite, deny, subscribe, receive)")]
    BadAccess(String),
    #[error("invalid topic filter {0:?}")]
    BadFilter(String),
    #[error("roles outside a user block")]
    RolesOutsideUser,
    #[error("unknown role {0:?}")]
    UnknownRole(String),
    #[error("role {0:?} defined twice")]
    DuplicateRole(String),
}

/// A parsed ACL file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AclFile {
    pub(crate) anonymous: Section,
    pub(crate) users: HashMap<String, Section>,
    pub(crate) roles: HashMap<String, Section>,
    /// Global `pattern` lines.
    pub(crate) patterns: Vec<Rule>,
}

/// Which block the lines being read belong to.
enum Block {
    Anonymous,
    User(String),
    Role(String),
}

impl AclFile {
    pub fn parse(text: &str) -> Result<AclFile, AclError> {
        let mut file = AclFile::default();
        let mut block = Block::Anonymous;
        // Where each role was named, to point at an unknown one.
        let mut role_uses: Vec<(usize, String)> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let fail = |reason| AclError { line, reason };
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let (word, rest) = trimmed.split_once([' ', '\t']).unwrap_or((trimmed, ""));
            let rest = rest.trim();
            match word {
                "user" | "role" if rest.is_empty() => {
                    return Err(fail(AclErrorKind::MissingName(if word == "user" {
                        "user"
                    } else {
                        "role"
                    })))
                }
                "user" => {
                    file.users.entry(rest.to_string()).or_default();
                    block = Block::User(rest.to_string());
                }
                "role" => {
                    if file.roles.contains_key(rest) {
                        return Err(fail(AclErrorKind::DuplicateRole(rest.to_string())));
                    }
                    file.roles.insert(rest.to_string(), Section::default());
                    block = Block::Role(rest.to_string());
                }
                "roles" => {
                    let section = match &block {
                        Block::Anonymous => &mut file.anonymous,
                        Block::User(u) => file.users.entry(u.clone()).or_default(),
                        Block::Role(_) => return Err(fail(AclErrorKind::RolesOutsideUser)),
                    };
                    for role in rest.split(',').map(str::trim).filter(|r| !r.is_empty()) {
                        section.roles.push(role.to_string());
                        role_uses.push((line, role.to_string()));
                    }
                }
                "topic" | "pattern" => {
                    let rule = parse_rule(rest).map_err(fail)?;
                    let section = match &block {
                        Block::Anonymous => &mut file.anonymous,
                        Block::User(u) => file.users.entry(u.clone()).or_default(),
                        Block::Role(r) => file.roles.entry(r.clone()).or_default(),
                    };
                    match (word, &block) {
                        ("topic", _) => section.topics.push(rule),
                        // A role's patterns are its members' only; elsewhere
                        // a pattern is global wherever it is written.
                        (_, Block::Role(_)) => section.patterns.push(rule),
                        _ => file.patterns.push(rule),
                    }
                }
                other => return Err(fail(AclErrorKind::UnknownStatement(other.to_string()))),
            }
        }
        for (line, role) in role_uses {
            if !file.roles.contains_key(&role) {
                return Err(AclError {
                    line,
                    reason: AclErrorKind::UnknownRole(role),
                });
            }
        }
        Ok(file)
    }
}

/// `[ACCESS] FILTER` after `topic` or `pattern`. As in mosquitto, a single
/// word is the filter with `readwrite`, and the filter is the rest of the
/// line after the access word (it may contain spaces).
fn parse_rule(rest: &str) -> Result<Rule, AclErrorKind> {
    if rest.is_empty() {
        return Err(AclErrorKind::EmptyTopic);
    }
    let (rights, filter) = match rest.split_once([' ', '\t']) {
        None => (
            Rights {
                allow: ALL,
                deny: 0,
            },
            rest,
        ),
        Some((access, filter)) => (
            Rights::parse(access).ok_or_else(|| AclErrorKind::BadAccess(access.to_string()))?,
            filter.trim(),
        ),
    };
    if topic::validate_filter(filter).is_err() {
        return Err(AclErrorKind::BadFilter(filter.to_string()));
    }
    Ok(Rule {
        filter: filter.to_string(),
        rights,
    })
}

#[cfg(test)]
#[path = "acl_tests.rs"]
mod tests;
