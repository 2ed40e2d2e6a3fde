//! Retained messages (§3.3.1.3): the last retained PUBLISH of each topic
//! name, looked up by filter when a client subscribes.
//!
//! A trie over name levels, each node's children in a `HashMap` keyed by
//! level. An exact filter is one hash lookup per level; a wildcard filter
//! walks only the subtrees its levels allow, so `a/+/c` over 100k topics
//! visits the children of `a` and not the rest of the store.
//!
//! # Invariants
//!
//! 1. A node holds the message whose topic name is the path to it; the root
//!    holds none, since names are non-empty.
//! 2. No message has an empty payload: `set` with an empty payload removes
//!    the topic instead (§3.3.1.3).
//! 3. Every node other than the root holds a message or has a descendant
//!    that does: `remove` prunes what it empties.
//! 4. `len` counts the messages, `payload_bytes` sums their payloads and
//!    `topic_bytes` their topic names.
//!
//! # Ownership
//!
//! The store keeps the `Bytes` it is given. A topic or payload sliced from a
//! large read buffer keeps that whole buffer alive for as long as it is
//! retained; callers that retain from shared buffers should hand in compact
//! copies.
//!
//! # Walks
//!
//! Lookups never recurse and do not allocate for filters and trie paths
//! under `LEVEL_STACK_INLINE` levels: both depths are chosen by peers.
//! Exact children use the standard `HashMap` hasher, since SipHash keeps
//! peer-chosen levels from forcing collisions.

use std::collections::{hash_map, HashMap};

use bytes::Bytes;

use super::topic::{self, LevelNode, LevelStack, TopicName, LEVEL_STACK_INLINE};
use super::QoS;

/// A retained PUBLISH: what a new matching subscriber receives first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetainedMessage {
    pub topic: TopicName,
    pub payload: Bytes,
    pub qos: QoS,
}

/// Bounds of the store; 0 turns each off. A message on a new topic that
/// would take the store past either is not retained; one replacing a
/// retained topic's message is, within `max_bytes`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetainedLimits {
    pub max_messages: usize,
    /// Topic names and payloads together.
    pub max_bytes: usize,
}

/// The retained messages of the broker, keyed by topic name.
pub struct RetainedStore {
    root: Node,
    len: usize,
    payload_bytes: usize,
    topic_bytes: usize,
}

/// One trie node; see the module doc.
#[derive(Default)]
struct Node {
    children: HashMap<Box<str>, Node>,
    message: Option<RetainedMessage>,
}

/// The not yet visited children of a node. At the root, a wildcard level
/// skips the `$` topics (§4.7.2).
struct Children<'t> {
    iter: hash_map::Iter<'t, Box<str>, Node>,
    skip_dollar: bool,
}

/// A pending part of a filter lookup.
enum Frame<'t, 'f> {
    /// `node` matched the filter levels consumed so far; `rest` is what is
    /// left of the filter (`None`: nothing).
    Filter(&'t Node, Option<&'f str>),
    /// The children of a node at a `+` level; each continues with `rest`.
    Plus(Children<'t>, Option<&'f str>),
    /// Children under a `#` level: each, and all below it, matches.
    Subtree(Children<'t>),
}

type FrameStack<'t, 'f> = LevelStack<Frame<'t, 'f>, LEVEL_STACK_INLINE>;

impl RetainedStore {
    pub fn new() -> Self {
        RetainedStore {
            root: Node::default(),
            len: 0,
            payload_bytes: 0,
            topic_bytes: 0,
        }
    }

    /// Whether `limits` let `topic` retain `payload_len` bytes of payload
    /// (a non-empty one: clearing a topic is always allowed).
    pub fn admits(&self, limits: &RetainedLimits, topic: &str, payload_len: usize) -> bool {
        let old = self.get(topic);
        if old.is_none() && limits.max_messages > 0 && self.len >= limits.max_messages {
            return false;
        }
        if limits.max_bytes == 0 {
            return true;
        }
        let freed = old.map_or(0, |m| m.payload.len() + topic.len());
        let after = self
            .bytes()
            .saturating_sub(freed)
            .saturating_add(topic.len())
            .saturating_add(payload_len);
        after <= limits.max_bytes
    }

    /// Topic names and payloads together, in bytes.
    pub fn bytes(&self) -> usize {
        self.payload_bytes + self.topic_bytes
    }

    /// Retains `msg` in place of any message on its topic. An empty payload
    /// removes the topic's message instead and retains nothing (§3.3.1.3).
    pub fn set(&mut self, msg: RetainedMessage) {
        if msg.payload.is_empty() {
            self.remove(msg.topic.as_str());
            return;
        }
        let payload_len = msg.payload.len();
        let topic_len = msg.topic.as_str().len();
        let node = self.root.descend_or_insert(msg.topic.as_str());
        match node.message.replace(msg) {
            Some(old) => self.payload_bytes -= old.payload.len(),
            None => {
                self.len += 1;
                self.topic_bytes += topic_len;
            }
        }
        self.payload_bytes += payload_len;
    }

    /// Removes the message of topic `name`, if any, and prunes the nodes
    /// that no longer lead to a message.
    pub fn remove(&mut self, name: &str) {
        let Some(old) = self.root.descend_mut(name).and_then(|n| n.message.take()) else {
            return;
        };
        debug_assert!(self.len > 0);
        debug_assert!(self.payload_bytes >= old.payload.len());
        self.len -= 1;
        self.payload_bytes -= old.payload.len();
        self.topic_bytes -= old.topic.as_str().len();
        topic::prune_path(&mut self.root, name);
    }

    /// The message retained on topic `name`.
    pub fn get(&self, name: &str) -> Option<&RetainedMessage> {
        let mut node = &self.root;
        for level in name.split('/') {
            node = node.child(level)?;
        }
        node.message.as_ref()
    }

    /// Calls `f` once per retained message whose topic matches `filter`, `$`
    /// rule included (§4.7.2). `filter` is assumed valid
    /// (`topic::validate_filter`); an invalid one never panics. Order is
    /// unspecified.
    pub fn for_each_match(&self, filter: &str, mut f: impl FnMut(&RetainedMessage)) {
        let mut stack = FrameStack::new();
        match_level(&self.root, filter, true, &mut stack, &mut f);
        while let Some(frame) = stack.pop() {
            match frame {
                Frame::Filter(node, None) => report(node, &mut f),
                Frame::Filter(node, Some(rest)) => {
                    match_level(node, rest, false, &mut stack, &mut f)
                }
                Frame::Plus(children, rest) => step_plus(children, rest, &mut stack),
                Frame::Subtree(children) => step_subtree(children, &mut stack, &mut f),
            }
        }
    }

    /// Calls `f` once per retained message, `$` topics included. Order is
    /// unspecified. An explicit stack: depth is chosen by peers.
    pub fn for_each(&self, mut f: impl FnMut(&RetainedMessage)) {
        let mut stack: Vec<&Node> = vec![&self.root];
        while let Some(node) = stack.pop() {
            if let Some(m) = &node.message {
                f(m);
            }
            stack.extend(node.children.values());
        }
    }

    /// How many messages are retained.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The sum of the retained payloads, in bytes (topics not included).
    pub fn payload_bytes(&self) -> usize {
        self.payload_bytes
    }
}

impl Default for RetainedStore {
    fn default() -> Self {
        RetainedStore::new()
    }
}

// Written by hand: a derived `Debug` would print the trie recursively.
impl std::fmt::Debug for RetainedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetainedStore")
            .field("len", &self.len)
            .field("payload_bytes", &self.payload_bytes)
            .finish_non_exhaustive()
    }
}

/// Matches the first level of `levels` (the rest of the filter) below `node`.
/// `at_root` applies the `$` rule to wildcard levels.
fn match_level<'t, 'f>(
    node: &'t Node,
    levels: &'f str,
    at_root: bool,
    stack: &mut FrameStack<'t, 'f>,
    f: &mut impl FnMut(&RetainedMessage),
) {
    let (level, rest) = topic::split_level(levels);
    match level {
        "#" => {
            // '#' also matches the parent level: "a/#" matches "a".
            report(node, f);
            stack.push(Frame::Subtree(node.children(at_root)));
        }
        "+" => stack.push(Frame::Plus(node.children(at_root), rest)),
        _ => {
            if let Some(child) = node.children.get(level) {
                stack.push(Frame::Filter(child, rest));
            }
        }
    }
}

/// Takes the next child of a `+` level, keeping the others for later.
fn step_plus<'t, 'f>(
    mut children: Children<'t>,
    rest: Option<&'f str>,
    stack: &mut FrameStack<'t, 'f>,
) {
    if let Some(child) = children.next() {
        stack.push(Frame::Plus(children, rest));
        stack.push(Frame::Filter(child, rest));
    }
}

/// Reports the next child under a `#` level, then goes down into it.
fn step_subtree<'t>(
    mut children: Children<'t>,
    stack: &mut FrameStack<'t, '_>,
    f: &mut impl FnMut(&RetainedMessage),
) {
    if let Some(child) = children.next() {
        stack.push(Frame::Subtree(children));
        report(child, f);
        if !child.children.is_empty() {
            stack.push(Frame::Subtree(child.children(false)));
        }
    }
}

fn report(node: &Node, f: &mut impl FnMut(&RetainedMessage)) {
    if let Some(message) = &node.message {
        f(message);
    }
}

impl<'t> Iterator for Children<'t> {
    type Item = &'t Node;

    fn next(&mut self) -> Option<&'t Node> {
        let skip_dollar = self.skip_dollar;
        self.iter
            .by_ref()
            .find(|(level, _)| !(skip_dollar && level.starts_with('$')))
            .map(|(_, child)| child)
    }
}

impl Node {
    fn children(&self, skip_dollar: bool) -> Children<'_> {
        Children {
            iter: self.children.iter(),
            skip_dollar,
        }
    }

    fn descend_mut(&mut self, name: &str) -> Option<&mut Node> {
        let mut node = self;
        for level in name.split('/') {
            node = node.child_mut(level)?;
        }
        Some(node)
    }

    fn descend_or_insert(&mut self, name: &str) -> &mut Node {
        let mut node = self;
        for level in name.split('/') {
            node = node.children.entry(Box::from(level)).or_default();
        }
        node
    }
}

impl LevelNode for Node {
    fn child(&self, level: &str) -> Option<&Self> {
        self.children.get(level)
    }

    fn child_mut(&mut self, level: &str) -> Option<&mut Self> {
        self.children.get_mut(level)
    }

    fn remove_child(&mut self, level: &str) {
        self.children.remove(level);
    }

    fn child_count(&self) -> usize {
        self.children.len()
    }

    fn holds_value(&self) -> bool {
        self.message.is_some()
    }

    fn take_children(&mut self, out: &mut Vec<Self>) {
        out.extend(self.children.drain().map(|(_, child)| child));
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        topic::drop_children(self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn message(topic: &str, payload: &'static str) -> RetainedMessage {
        RetainedMessage {
            topic: TopicName::from_string(topic.to_owned()).expect("valid test topic"),
            payload: Bytes::from_static(payload.as_bytes()),
            qos: QoS::AtLeastOnce,
        }
    }

    fn store_of(topics: &[&str]) -> RetainedStore {
        let mut store = RetainedStore::new();
        for topic in topics {
            store.set(message(topic, "x"));
        }
        store
    }

    /// The topics retained under `filter`, sorted.
    fn topics(store: &RetainedStore, filter: &str) -> Vec<String> {
        let mut found = Vec::new();
        store.for_each_match(filter, |m| found.push(m.topic.as_str().to_owned()));
        found.sort();
        found
    }

    #[test]
    fn set_get_replace_and_clear() {
        let mut store = RetainedStore::new();
        assert!(store.is_empty());
        store.set(message("a/b", "12345"));
        assert_eq!(store.len(), 1);
        assert_eq!(store.payload_bytes(), 5);
        assert_eq!(store.get("a/b"), Some(&message("a/b", "12345")));
        assert_eq!(store.get("a"), None);
        assert_eq!(store.get("a/b/c"), None);

        store.set(message("a/b", "xy"));
        assert_eq!(store.len(), 1);
        assert_eq!(store.payload_bytes(), 2);
        assert_eq!(store.get("a/b").map(|m| &m.payload[..]), Some(&b"xy"[..]));

        // An empty payload clears the topic and is not itself retained.
        store.set(message("a/b", ""));
        assert!(store.is_empty());
        assert_eq!(store.payload_bytes(), 0);
        assert_eq!(store.get("a/b"), None);
        assert_eq!(store.root.child_count(), 0);

        // Clearing a topic that holds nothing is a no-op.
        store.set(message("never/set", ""));
        assert!(store.is_empty());
        assert_eq!(store.root.child_count(), 0);
    }

    #[test]
    fn remove_prunes_only_what_it_empties() {
        let mut store = store_of(&["a", "a/b/c", "a/b/d", "x//y"]);
        assert_eq!(store.len(), 4);
        store.remove("a/b/c");
        store.remove("a/b/c");
        store.remove("not/there");
        assert_eq!(store.len(), 3);
        assert!(store.get("a/b/d").is_some());
        store.remove("a/b/d");
        let a = store.root.child("a").expect("a still retained");
        assert_eq!(a.child_count(), 0);
        store.remove("a");
        store.remove("x//y");
        assert!(store.is_empty());
        assert_eq!(store.payload_bytes(), 0);
        assert_eq!(store.root.child_count(), 0);
    }

    #[test]
    fn wildcard_lookups() {
        let store = store_of(&[
            "sport",
            "sport/tennis",
            "sport/tennis/player1",
            "sport/tennis/player1/ranking",
            "sport/tennis/player2",
            "sport/",
            "/finance",
            "finance",
        ]);
        assert_eq!(
            topics(&store, "sport/tennis/player1/#"),
            ["sport/tennis/player1", "sport/tennis/player1/ranking"]
        );
        assert_eq!(
            topics(&store, "sport/tennis/+"),
            ["sport/tennis/player1", "sport/tennis/player2"]
        );
        assert_eq!(topics(&store, "sport/+"), ["sport/", "sport/tennis"]);
        assert_eq!(
            topics(&store, "+/+"),
            ["/finance", "sport/", "sport/tennis"]
        );
        assert_eq!(topics(&store, "/+"), ["/finance"]);
        assert_eq!(topics(&store, "+"), ["finance", "sport"]);
        assert_eq!(topics(&store, "#").len(), 8);
        assert_eq!(topics(&store, "sport/tennis"), ["sport/tennis"]);
        assert_eq!(topics(&store, "sport/tennis/player3"), Vec::<String>::new());
    }

    #[test]
    fn dollar_topics_hidden_from_leading_wildcards() {
        let store = store_of(&[
            "$SYS/x",
            "$SYS/monitor/Clients",
            "a/x",
            "a/$y",
            "\u{feff}/x",
        ]);
        assert_eq!(topics(&store, "#"), ["a/$y", "a/x", "\u{feff}/x"]);
        assert_eq!(topics(&store, "+/x"), ["a/x", "\u{feff}/x"]);
        assert_eq!(topics(&store, "+/monitor/Clients"), Vec::<String>::new());
        assert_eq!(topics(&store, "$SYS/#"), ["$SYS/monitor/Clients", "$SYS/x"]);
        assert_eq!(topics(&store, "$SYS/+"), ["$SYS/x"]);
        assert_eq!(topics(&store, "a/+"), ["a/$y", "a/x"]);
        assert_eq!(store.get("$SYS/x").map(|m| m.qos), Some(QoS::AtLeastOnce));
    }

    #[test]
    fn deep_topics_do_not_overflow_the_stack() {
        let worker = std::thread::Builder::new().stack_size(256 * 1024);
        let handle = worker.spawn(|| {
            let deep = "/".repeat(65_535);
            let plus_filter = vec!["+"; 32_768].join("/");
            let mut store = store_of(&[&deep, "a"]);
            assert_eq!(topics(&store, "#").len(), 2);
            assert_eq!(topics(&store, &plus_filter), Vec::<String>::new());
            assert_eq!(topics(&store, &format!("{deep}/#")), [deep.as_str()]);
            store.remove(&deep);
            assert_eq!(store.len(), 1);
            store.set(message(&deep, "x"));
            drop(store);
        });
        handle.expect("spawn").join().expect("no stack overflow");
    }

    fn name_strategy() -> impl Strategy<Value = String> {
        let level = prop::sample::select(vec!["", "a", "b", "$x"]);
        prop::collection::vec(level, 1..5)
            .prop_map(|levels| levels.join("/"))
            .prop_filter("valid name", |n| topic::validate_name(n).is_ok())
    }

    fn filter_strategy() -> impl Strategy<Value = String> {
        let level = prop::sample::select(vec!["", "a", "b", "$x", "+", "#"]);
        prop::collection::vec(level, 1..5)
            .prop_map(|levels| levels.join("/"))
            .prop_filter("valid filter", |f| topic::validate_filter(f).is_ok())
    }

    proptest! {
        #[test]
        fn lookup_agrees_with_matches(
            names in prop::collection::vec(name_strategy(), 0..24),
            removals in prop::collection::vec(name_strategy(), 0..8),
            filters in prop::collection::vec(filter_strategy(), 1..16),
        ) {
            let mut store = RetainedStore::new();
            let mut retained: Vec<String> = Vec::new();
            for name in &names {
                store.set(message(name, "x"));
                if !retained.contains(name) {
                    retained.push(name.clone());
                }
            }
            for name in &removals {
                store.remove(name);
                retained.retain(|kept| kept != name);
            }
            retained.sort();
            prop_assert_eq!(store.len(), retained.len());
            prop_assert_eq!(topics(&store, "#").len() + topics(&store, "$x/#").len(), retained.len());
            for filter in &filters {
                let expected: Vec<String> = retained
                    .iter()
                    .filter(|name| topic::matches(filter, name))
                    .cloned()
                    .collect();
                prop_assert_eq!(topics(&store, filter), expected);
            }
            for name in &retained {
                store.remove(name);
            }
            prop_assert!(store.is_empty());
            prop_assert_eq!(store.root.child_count(), 0);
        }
    }
}
