//! The subscription index: which subscribers want a topic name.
//!
//! A trie over filter levels. Each node has its exact children in a
//! `HashMap` keyed by level, plus one slot for a `+` child and one for a `#`
//! child, so matching a name costs one hash lookup per level and branch
//! instead of a scan over every filter. A node's subscribers are those whose
//! filter ends at that node, kept in a small `Vec`.
//!
//! # Invariants
//!
//! 1. A key appears at most once in a node's subscribers: subscribing again
//!    to the same filter replaces the QoS (§3.8.4).
//! 2. Every node other than the root holds subscribers or has a descendant
//!    that does: `unsubscribe` prunes what it empties.
//! 3. `filters` counts the nodes with subscribers; `subscriptions` counts the
//!    `(filter, key)` pairs.
//! 4. Filters are assumed valid (`topic::validate_filter`). An invalid filter
//!    is stored without panicking; a `#` in the middle only creates nodes that
//!    matching never reaches.
//!
//! # Matching
//!
//! `for_each_match` reports one call per matching `(filter, key)`: a key whose
//! filters overlap (`a/+` and `a/#`) is reported once per filter and the
//! caller deduplicates, taking the highest QoS. The walk does not allocate
//! for names under `LEVEL_STACK_INLINE` levels and never recurses, since the
//! depth of the trie and of the name are both chosen by peers.
//!
//! Exact children use the standard `HashMap` hasher: the levels come from
//! peers, and SipHash keeps them from forcing collisions.

use std::collections::HashMap;
use std::hash::Hash;

use super::topic::{self, LevelNode, LevelStack, LEVEL_STACK_INLINE};
use super::QoS;

/// What `subscribe` changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscribeOutcome {
    /// The key already had this exact filter; only its QoS was updated.
    pub replaced: bool,
    /// No key had this filter before the call (implies `!replaced`).
    pub filter_was_empty: bool,
}

/// What `unsubscribe` changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnsubscribeOutcome {
    /// The key had this filter and no longer has it.
    pub removed: bool,
    /// The call removed the filter's last key (implies `removed`). A filter
    /// that had no key at all gives `false`.
    pub filter_now_empty: bool,
}

/// The subscriptions of one shard, keyed by subscriber identity `K`.
pub struct SubscriptionIndex<K> {
    root: Node<K>,
    filters: usize,
    subscriptions: usize,
}

/// One trie node; see the module doc.
struct Node<K> {
    exact: HashMap<Box<str>, Node<K>>,
    plus: Option<Box<Node<K>>>,
    hash: Option<Box<Node<K>>>,
    subscribers: Vec<(K, QoS)>,
}

/// A pending branch of a match: a node reached by the levels consumed so far,
/// and the levels still to match (`None`: the whole name is consumed).
type MatchFrame<'t, 'n, K> = (&'t Node<K>, Option<&'n str>);

impl<K: Copy + Eq + Hash> SubscriptionIndex<K> {
    pub fn new() -> Self {
        SubscriptionIndex {
            root: Node::default(),
            filters: 0,
            subscriptions: 0,
        }
    }

    /// Subscribes `key` to `filter` at `qos`, or updates its QoS if `key`
    /// already has `filter`.
    pub fn subscribe(&mut self, filter: &str, key: K, qos: QoS) -> SubscribeOutcome {
        let node = self.root.descend_or_insert(filter);
        if let Some(entry) = node.subscribers.iter_mut().find(|(k, _)| *k == key) {
            entry.1 = qos;
            return SubscribeOutcome {
                replaced: true,
                filter_was_empty: false,
            };
        }
        let filter_was_empty = node.subscribers.is_empty();
        node.subscribers.push((key, qos));
        self.subscriptions += 1;
        self.filters += usize::from(filter_was_empty);
        SubscribeOutcome {
            replaced: false,
            filter_was_empty,
        }
    }

    /// Removes `key`'s subscription to `filter`, pruning the nodes that no
    /// longer lead to any subscriber.
    pub fn unsubscribe(&mut self, filter: &str, key: K) -> UnsubscribeOutcome {
        let not_found = UnsubscribeOutcome {
            removed: false,
            filter_now_empty: false,
        };
        let Some(node) = self.root.descend(filter) else {
            return not_found;
        };
        let Some(position) = node.subscribers.iter().position(|(k, _)| *k == key) else {
            return not_found;
        };
        node.subscribers.swap_remove(position);
        let filter_now_empty = node.subscribers.is_empty();
        debug_assert!(self.subscriptions > 0);
        self.subscriptions -= 1;
        if filter_now_empty {
            debug_assert!(self.filters > 0);
            self.filters -= 1;
            topic::prune_path(&mut self.root, filter);
        }
        UnsubscribeOutcome {
            removed: true,
            filter_now_empty,
        }
    }

    /// Calls `f(key, qos)` once per `(filter, key)` whose filter matches the
    /// topic name `name`, `$` rule included (§4.7.2). Order is unspecified.
    pub fn for_each_match(&self, name: &str, mut f: impl FnMut(K, QoS)) {
        let mut stack: LevelStack<MatchFrame<'_, '_, K>, LEVEL_STACK_INLINE> = LevelStack::new();
        self.match_root(name, &mut stack, &mut f);
        while let Some((node, rest)) = stack.pop() {
            node.match_step(rest, &mut stack, &mut f);
        }
    }

    /// The root's step of a match: like `Node::match_step`, except that a
    /// `$` name skips the root's `+` and `#` children.
    fn match_root<'t, 'n>(
        &'t self,
        name: &'n str,
        stack: &mut LevelStack<MatchFrame<'t, 'n, K>, LEVEL_STACK_INLINE>,
        f: &mut impl FnMut(K, QoS),
    ) {
        let (first, rest) = topic::split_level(name);
        if !first.starts_with('$') {
            if let Some(hash) = self.root.hash.as_deref() {
                report(hash, f);
            }
            if let Some(plus) = self.root.plus.as_deref() {
                stack.push((plus, rest));
            }
        }
        if let Some(child) = self.root.exact.get(first) {
            stack.push((child, rest));
        }
    }

    /// How many distinct filters have at least one subscriber.
    pub fn filter_count(&self) -> usize {
        self.filters
    }

    /// How many `(filter, key)` subscriptions there are.
    pub fn subscription_count(&self) -> usize {
        self.subscriptions
    }
}

impl<K: Copy + Eq + Hash> Default for SubscriptionIndex<K> {
    fn default() -> Self {
        SubscriptionIndex::new()
    }
}

// Written by hand: a derived `Debug` would print the trie recursively.
impl<K> std::fmt::Debug for SubscriptionIndex<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubscriptionIndex")
            .field("filters", &self.filters)
            .field("subscriptions", &self.subscriptions)
            .finish_non_exhaustive()
    }
}

/// Reports every subscriber of `node`.
fn report<K: Copy>(node: &Node<K>, f: &mut impl FnMut(K, QoS)) {
    for &(key, qos) in &node.subscribers {
        f(key, qos);
    }
}

impl<K: Copy> Node<K> {
    /// One step of a match at `self`, reached with `rest` of the name left:
    /// a `#` child matches whatever is left (including nothing), the node's
    /// own subscribers match if nothing is left, otherwise the next level
    /// continues into the exact child and the `+` child.
    fn match_step<'t, 'n>(
        &'t self,
        rest: Option<&'n str>,
        stack: &mut LevelStack<MatchFrame<'t, 'n, K>, LEVEL_STACK_INLINE>,
        f: &mut impl FnMut(K, QoS),
    ) {
        if let Some(hash) = self.hash.as_deref() {
            report(hash, f);
        }
        let Some(levels) = rest else {
            report(self, f);
            return;
        };
        let (level, rest) = topic::split_level(levels);
        if let Some(child) = self.exact.get(level) {
            stack.push((child, rest));
        }
        if let Some(plus) = self.plus.as_deref() {
            stack.push((plus, rest));
        }
    }
}

impl<K> Node<K> {
    /// The node of `filter`, if it exists.
    fn descend(&mut self, filter: &str) -> Option<&mut Node<K>> {
        let mut node = self;
        for level in filter.split('/') {
            node = node.child_mut(level)?;
        }
        Some(node)
    }

    /// The node of `filter`, created with its missing ancestors.
    fn descend_or_insert(&mut self, filter: &str) -> &mut Node<K> {
        let mut node = self;
        for level in filter.split('/') {
            node = match level {
                "+" => node.plus.get_or_insert_with(Box::default),
                "#" => node.hash.get_or_insert_with(Box::default),
                _ => node.exact.entry(Box::from(level)).or_default(),
            };
        }
        node
    }
}

impl<K> Default for Node<K> {
    fn default() -> Self {
        Node {
            exact: HashMap::new(),
            plus: None,
            hash: None,
            subscribers: Vec::new(),
        }
    }
}

impl<K> LevelNode for Node<K> {
    fn child(&self, level: &str) -> Option<&Self> {
        match level {
            "+" => self.plus.as_deref(),
            "#" => self.hash.as_deref(),
            _ => self.exact.get(level),
        }
    }

    fn child_mut(&mut self, level: &str) -> Option<&mut Self> {
        match level {
            "+" => self.plus.as_deref_mut(),
            "#" => self.hash.as_deref_mut(),
            _ => self.exact.get_mut(level),
        }
    }

    fn remove_child(&mut self, level: &str) {
        match level {
            "+" => self.plus = None,
            "#" => self.hash = None,
            _ => {
                self.exact.remove(level);
            }
        }
    }

    fn child_count(&self) -> usize {
        self.exact.len() + usize::from(self.plus.is_some()) + usize::from(self.hash.is_some())
    }

    fn holds_value(&self) -> bool {
        !self.subscribers.is_empty()
    }

    fn take_children(&mut self, out: &mut Vec<Self>) {
        out.extend(self.exact.drain().map(|(_, child)| child));
        out.extend(self.plus.take().map(|child| *child));
        out.extend(self.hash.take().map(|child| *child));
    }
}

impl<K> Drop for Node<K> {
    fn drop(&mut self) {
        topic::drop_children(self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const Q0: QoS = QoS::AtMostOnce;
    const Q1: QoS = QoS::AtLeastOnce;
    const Q2: QoS = QoS::ExactlyOnce;

    /// Every `(key, qos)` reported for `name`, sorted.
    fn matched(index: &SubscriptionIndex<u32>, name: &str) -> Vec<(u32, QoS)> {
        let mut found = Vec::new();
        index.for_each_match(name, |key, qos| found.push((key, qos)));
        found.sort();
        found
    }

    fn index_of(filters: &[&str]) -> SubscriptionIndex<u32> {
        let mut index = SubscriptionIndex::new();
        for (key, filter) in (0..).zip(filters) {
            index.subscribe(filter, key, Q1);
        }
        index
    }

    fn keys(index: &SubscriptionIndex<u32>, name: &str) -> Vec<u32> {
        matched(index, name)
            .into_iter()
            .map(|(key, _)| key)
            .collect()
    }

    #[test]
    fn spec_examples() {
        let index = index_of(&[
            "sport/tennis/player1/#", // 0
            "sport/#",                // 1
            "sport/tennis/+",         // 2
            "sport/+",                // 3
            "+/+",                    // 4
            "/+",                     // 5
            "+",                      // 6
            "#",                      // 7
        ]);
        assert_eq!(keys(&index, "sport/tennis/player1"), [0, 1, 2, 7]);
        assert_eq!(keys(&index, "sport/tennis/player1/ranking"), [0, 1, 7]);
        assert_eq!(
            keys(&index, "sport/tennis/player1/score/wimbledon"),
            [0, 1, 7]
        );
        assert_eq!(keys(&index, "sport"), [1, 6, 7]);
        assert_eq!(keys(&index, "sport/"), [1, 3, 4, 7]);
        assert_eq!(keys(&index, "/finance"), [4, 5, 7]);
        assert_eq!(keys(&index, "finance"), [6, 7]);
    }

    #[test]
    fn dollar_topics_hidden_from_leading_wildcards() {
        let index = index_of(&[
            "#",                 // 0
            "+/monitor/Clients", // 1
            "$SYS/#",            // 2
            "$SYS/monitor/+",    // 3
            "+",                 // 4
            "a/+",               // 5
            "a/#",               // 6
        ]);
        assert_eq!(keys(&index, "$SYS/monitor/Clients"), [2, 3]);
        assert_eq!(keys(&index, "$SYS"), [2]);
        assert_eq!(keys(&index, "$"), Vec::<u32>::new());
        assert_eq!(keys(&index, "a/$x"), [0, 5, 6]);
    }

    #[test]
    fn empty_levels_and_multibyte_levels() {
        let index = index_of(&["a/+/b", "+/b", "\u{feff}/+", "//"]);
        assert_eq!(keys(&index, "a//b"), [0]);
        assert_eq!(keys(&index, "/b"), [1]);
        assert_eq!(keys(&index, "\u{feff}/x"), [2]);
        assert_eq!(keys(&index, "//"), [3]);
        assert_eq!(keys(&index, "x/b/"), Vec::<u32>::new());
    }

    #[test]
    fn overlapping_filters_reported_once_per_filter() {
        let mut index = SubscriptionIndex::new();
        index.subscribe("a/+", 7u32, Q0);
        index.subscribe("a/#", 7, Q2);
        index.subscribe("a/b", 7, Q1);
        index.subscribe("a/b", 8, Q0);
        assert_eq!(matched(&index, "a/b"), [(7, Q0), (7, Q1), (7, Q2), (8, Q0)]);
        assert_eq!(matched(&index, "a"), [(7, Q2)]);
    }

    #[test]
    fn subscribe_outcomes() {
        let mut index = SubscriptionIndex::new();
        let first = index.subscribe("a/b", 1u32, Q0);
        assert!(!first.replaced);
        assert!(first.filter_was_empty);
        let second_key = index.subscribe("a/b", 2, Q1);
        assert!(!second_key.replaced);
        assert!(!second_key.filter_was_empty);
        let again = index.subscribe("a/b", 1, Q2);
        assert!(again.replaced);
        assert!(!again.filter_was_empty);
        assert_eq!(matched(&index, "a/b"), [(1, Q2), (2, Q1)]);
        assert_eq!(index.filter_count(), 1);
        assert_eq!(index.subscription_count(), 2);
    }

    #[test]
    fn unsubscribe_outcomes() {
        let mut index = SubscriptionIndex::new();
        index.subscribe("a/#", 1u32, Q0);
        index.subscribe("a/#", 2, Q0);
        let absent_key = index.unsubscribe("a/#", 3);
        assert!(!absent_key.removed);
        assert!(!absent_key.filter_now_empty);
        let absent_filter = index.unsubscribe("a/+", 1);
        assert!(!absent_filter.removed);
        assert!(!absent_filter.filter_now_empty);
        let one_left = index.unsubscribe("a/#", 1);
        assert!(one_left.removed);
        assert!(!one_left.filter_now_empty);
        let last = index.unsubscribe("a/#", 2);
        assert!(last.removed);
        assert!(last.filter_now_empty);
        let twice = index.unsubscribe("a/#", 2);
        assert!(!twice.removed);
        assert_eq!(matched(&index, "a/b"), []);
    }

    #[test]
    fn unsubscribe_prunes_back_to_an_empty_root() {
        let filters = [
            "a/b/c",
            "a/b",
            "a/+/c",
            "a/#",
            "+/+",
            "#",
            "//",
            "a/b/c/d/e",
        ];
        let mut index = index_of(&filters);
        assert_eq!(index.filter_count(), filters.len());
        assert_eq!(index.subscription_count(), filters.len());
        for (key, filter) in (0..).zip(&filters) {
            assert!(index.unsubscribe(filter, key).filter_now_empty);
            // What is left still matches as before.
            let expected: Vec<u32> = (0..)
                .zip(&filters)
                .skip(key as usize + 1)
                .filter(|(_, f)| topic::matches(f, "a/b/c"))
                .map(|(k, _)| k)
                .collect();
            assert_eq!(keys(&index, "a/b/c"), expected);
        }
        assert_eq!(index.filter_count(), 0);
        assert_eq!(index.subscription_count(), 0);
        assert_eq!(index.root.child_count(), 0);
    }

    #[test]
    fn pruning_keeps_nodes_that_lead_elsewhere() {
        let mut index = index_of(&["a/b/c", "a"]);
        index.unsubscribe("a/b/c", 0);
        assert_eq!(index.root.child_count(), 1);
        let a = index.root.child("a").expect("a still subscribed");
        assert_eq!(a.child_count(), 0);
        assert_eq!(keys(&index, "a"), [1]);
    }

    #[test]
    fn deep_topics_do_not_overflow_the_stack() {
        // A small stack shows that matching, pruning and dropping do not
        // recurse once per level.
        let worker = std::thread::Builder::new().stack_size(256 * 1024);
        let handle = worker.spawn(|| {
            let plus_filter = vec!["+"; 32_768].join("/");
            let exact_filter = vec!["a"; 32_768].join("/");
            let name = exact_filter.clone();
            let mut index = SubscriptionIndex::new();
            index.subscribe(&plus_filter, 1u32, Q0);
            index.subscribe(&exact_filter, 2, Q0);
            index.subscribe(&"/".repeat(65_535), 3, Q0);
            assert_eq!(keys(&index, &name), [1, 2]);
            assert!(index.unsubscribe(&exact_filter, 2).filter_now_empty);
            assert_eq!(keys(&index, &name), [1]);
            drop(index);
        });
        handle.expect("spawn").join().expect("no stack overflow");
    }

    /// Filter levels for the property test: empty, plain, `$` and wildcard
    /// levels, so every rule of §4.7 gets exercised.
    fn filter_strategy() -> impl Strategy<Value = String> {
        let level = prop::sample::select(vec!["", "a", "b", "$x", "+", "#"]);
        prop::collection::vec(level, 1..5)
            .prop_map(|levels| levels.join("/"))
            .prop_filter("valid filter", |f| topic::validate_filter(f).is_ok())
    }

    fn name_strategy() -> impl Strategy<Value = String> {
        let level = prop::sample::select(vec!["", "a", "b", "$x"]);
        prop::collection::vec(level, 1..5).prop_map(|levels| levels.join("/"))
    }

    /// The keys whose filters `topic::matches` says match, once per filter.
    fn brute_force(subscriptions: &[(String, u32)], name: &str) -> Vec<u32> {
        let mut found: Vec<u32> = subscriptions
            .iter()
            .filter(|(filter, _)| topic::matches(filter, name))
            .map(|&(_, key)| key)
            .collect();
        found.sort();
        found
    }

    proptest! {
        #[test]
        fn index_agrees_with_matches(
            filters in prop::collection::vec(filter_strategy(), 0..24),
            names in prop::collection::vec(name_strategy(), 1..16),
            removals in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
        ) {
            let mut index = SubscriptionIndex::new();
            let mut subscriptions: Vec<(String, u32)> = Vec::new();
            for (position, filter) in filters.iter().enumerate() {
                // Two keys share every filter: a key per filter, one shared key.
                let key = u32::try_from(position).expect("small") + 1;
                index.subscribe(filter, key, Q0);
                index.subscribe(filter, 0, Q0);
                for k in [key, 0] {
                    if !subscriptions.contains(&(filter.clone(), k)) {
                        subscriptions.push((filter.clone(), k));
                    }
                }
            }
            for removal in &removals {
                if subscriptions.is_empty() {
                    break;
                }
                let (filter, key) = subscriptions.swap_remove(removal.index(subscriptions.len()));
                prop_assert!(index.unsubscribe(&filter, key).removed);
            }
            let mut distinct: Vec<&String> = subscriptions.iter().map(|(f, _)| f).collect();
            distinct.sort();
            distinct.dedup();
            prop_assert_eq!(index.subscription_count(), subscriptions.len());
            prop_assert_eq!(index.filter_count(), distinct.len());
            for name in &names {
                prop_assert_eq!(keys(&index, name), brute_force(&subscriptions, name));
            }
            for (filter, key) in &subscriptions {
                prop_assert!(index.unsubscribe(filter, *key).removed);
            }
            prop_assert_eq!(index.filter_count(), 0);
            prop_assert_eq!(index.root.child_count(), 0);
        }
    }
}
