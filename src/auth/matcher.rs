//! A client's ACL, compiled at CONNECT: its own rules (its user's, its
//! roles', the patterns with `%c` and `%u` replaced) in a small trie of
//! filter levels, so that "may publish T" and "may receive T" walk the
//! topic's levels once instead of every rule of the file per message.
//!
//! # Rules of the decision
//! 1. A request is refused when any rule that covers it denies it, granted
//!    when one grants it, and otherwise gets the configured default.
//! 2. A topic is covered by a rule whose filter matches it (MQTT matching:
//!    `+` and `#` at the first level do not match `$` topics).
//! 3. A SUBSCRIBE filter is covered by a rule when every topic the filter
//!    matches, the rule matches too (`a/+` is within `a/#`, `#` is not
//!    within `a/#`). A filter only partly inside a denied area is granted,
//!    and the messages of that area are then not delivered (rule 1).
//! 4. A client whose client id or user name contains `+`, `#` or `/` gets
//!    nothing from a pattern that would put that value in a filter: it could
//!    otherwise widen the pattern or reach into another client's subtree.
//!    It is refused everything, as mosquitto does for `+` and `#`.

use super::acl::{Access, AclFile, Rights, Rule, ALL};

/// What a request gets when no rule covers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AclDefault {
    #[default]
    Deny,
    Allow,
}

/// A client's compiled ACL. Immutable and `Send`: it is built on the shard
/// that read the CONNECT and travels with the connection to its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAcl {
    trie: Node,
    /// The same rules, flat: SUBSCRIBE compares filters with filters.
    rules: Vec<Rule>,
    default_allow: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Node {
    /// Rules whose filter ends at this node.
    here: Rights,
    /// Rules whose filter ends with `#` below this node.
    rest: Rights,
    plus: Option<Box<Node>>,
    children: Vec<(Box<str>, Node)>,
}

impl Node {
    fn insert(&mut self, filter: &str, rights: Rights) {
        let mut node = self;
        for level in filter.split('/') {
            node = match level {
                "#" => {
                    node.rest.merge(rights);
                    return;
                }
                "+" => node.plus.get_or_insert_with(Box::default),
                literal => {
                    let i = match node.children.iter().position(|(l, _)| &**l == literal) {
                        Some(i) => i,
                        None => {
                            node.children.push((literal.into(), Node::default()));
                            node.children.len() - 1
                        }
                    };
                    &mut node.children[i].1
                }
            };
        }
        node.here.merge(rights);
    }

    /// Merges the rights of every filter matching the levels in `levels`;
    /// `first` is true at the topic's first level (rule 2).
    fn collect<'a>(
        &self,
        mut levels: impl Iterator<Item = &'a str> + Clone,
        first: bool,
        out: &mut Rights,
    ) {
        let Some(level) = levels.next() else {
            out.merge(self.here);
            // `a/#` matches `a` (§4.7.1.2).
            out.merge(self.rest);
            return;
        };
        let dollar = first && level.starts_with('$');
        if !dollar {
            out.merge(self.rest);
        }
        if let Some((_, child)) = self.children.iter().find(|(l, _)| &**l == level) {
            child.collect(levels.clone(), false, out);
        }
        if let (Some(plus), false) = (&self.plus, dollar) {
            plus.collect(levels, false, out);
        }
    }
}

impl ClientAcl {
    /// The rules of `file` that apply to a client with this user name and
    /// client id.
    pub fn compile(
        file: &AclFile,
        username: Option<&str>,
        client_id: &str,
        default: AclDefault,
    ) -> ClientAcl {
        let default_allow = default == AclDefault::Allow;
        let unsafe_value = |v: &str| v.contains(['+', '#', '/']);
        let mut rules: Vec<Rule> = Vec::new();
        let section = match username {
            Some(u) => file.users.get(u),
            None => Some(&file.anonymous),
        };
        let mut patterns: Vec<&Rule> = file.patterns.iter().collect();
        if let Some(section) = section {
            rules.extend(section.topics.iter().cloned());
            for role in &section.roles {
                if let Some(r) = file.roles.get(role) {
                    rules.extend(r.topics.iter().cloned());
                    patterns.extend(r.patterns.iter());
                }
            }
        }
        for p in patterns {
            let uses_client = p.filter.contains("%c");
            let uses_user = p.filter.contains("%u");
            if uses_user && username.is_none() {
                continue;
            }
            if (uses_client && unsafe_value(client_id))
                || (uses_user && username.is_some_and(unsafe_value))
            {
                return ClientAcl::deny_all();
            }
            let mut filter = p.filter.replace("%c", client_id);
            if let Some(u) = username {
                filter = filter.replace("%u", u);
            }
            rules.push(Rule {
                filter,
                rights: p.rights,
            });
        }
        let mut trie = Node::default();
        for rule in &rules {
            trie.insert(&rule.filter, rule.rights);
        }
        ClientAcl {
            trie,
            rules,
            default_allow,
        }
    }

    /// Refuses everything (rule 4).
    pub fn deny_all() -> ClientAcl {
        ClientAcl {
            trie: Node::default(),
            rules: Vec::new(),
            default_allow: false,
        }
    }

    pub fn may_publish(&self, topic: &str) -> bool {
        self.decide(self.topic_rights(topic), Access::Publish)
    }

    pub fn may_receive(&self, topic: &str) -> bool {
        self.decide(self.topic_rights(topic), Access::Receive)
    }

    /// Whether the client may hold `filter` (rule 3).
    pub fn may_subscribe(&self, filter: &str) -> bool {
        let mut rights = Rights::default();
        for rule in &self.rules {
            if covers(&rule.filter, filter) {
                rights.merge(rule.rights);
            }
        }
        self.decide(rights, Access::Subscribe)
    }

    fn topic_rights(&self, topic: &str) -> Rights {
        let mut rights = Rights::default();
        self.trie.collect(topic.split('/'), true, &mut rights);
        rights
    }

    fn decide(&self, rights: Rights, access: Access) -> bool {
        let bit = access as u8;
        debug_assert!(bit & ALL == bit);
        if rights.deny & bit != 0 {
            return false;
        }
        rights.allow & bit != 0 || self.default_allow
    }
}

impl crate::mqtt::broker::Access for ClientAcl {
    fn may_publish(&self, topic: &str) -> bool {
        ClientAcl::may_publish(self, topic)
    }

    fn may_subscribe(&self, filter: &str) -> bool {
        ClientAcl::may_subscribe(self, filter)
    }

    fn may_receive(&self, topic: &str) -> bool {
        ClientAcl::may_receive(self, topic)
    }
}

/// Whether every topic that `filter` matches is matched by `rule`.
pub fn covers(rule: &str, filter: &str) -> bool {
    let mut rule_levels = rule.split('/');
    let mut filter_levels = filter.split('/');
    let mut first = true;
    loop {
        match (rule_levels.next(), filter_levels.next()) {
            (Some("#"), Some(f)) => return !(first && f.starts_with('$')),
            (Some("#"), None) => return true,
            (Some(_), None) => return false,
            (None, Some(_)) => return false,
            (None, None) => return true,
            (Some(r), Some(f)) => {
                let level_ok = match (r, f) {
                    (_, "#") => false,
                    ("+", "+") => true,
                    ("+", f) => !(first && f.starts_with('$')),
                    (_, "+") => false,
                    (r, f) => r == f,
                };
                if !level_ok {
                    return false;
                }
            }
        }
        first = false;
    }
}

#[cfg(test)]
#[path = "matcher_tests.rs"]
mod tests;
