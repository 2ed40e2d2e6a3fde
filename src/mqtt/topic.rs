//! Topic names and topic filters: validation and matching (MQTT 3.1.1 §4.7),
//! plus the level-walking helpers shared by the subscription index and the
//! retained store.
//!
//! # Rules
//!
//! 1. A topic is split into levels at every `/`; empty levels are levels
//!    (`"/a"` has the levels `""` and `"a"`, `"a//b"` has three).
//! 2. A topic name (PUBLISH, will) is non-empty, at most 65,535 bytes, has no
//!    U+0000 and no wildcard character at all.
//! 3. A topic filter (SUBSCRIBE) obeys the same length and U+0000 rules; `+`
//!    may only be a whole level, `#` only the whole last level.
//! 4. `+` matches exactly one level, possibly empty; `#` matches the rest of
//!    the levels including none, so `a/#` matches `a` (§4.7.1.2).
//! 5. A filter whose first level is `+` or `#` never matches a name whose
//!    first character is `$` (§4.7.2): `$SYS/...` is seen only by filters
//!    that spell out `$SYS`.
//! 6. Levels compare byte-wise; no normalisation (§4.7.3).
//!
//! # Panics
//!
//! Nothing here panics on any input: topics come from peers. Levels are
//! found with `split('/')`/`split_once('/')` on the ASCII `/`, never by
//! indexing, so a topic starting with a multi-byte character such as U+FEFF
//! is just another level.

use bytes::Bytes;
use bytestring::ByteString;

/// A validated topic name: UTF-8, non-empty, no wildcard, no U+0000, at most
/// 65,535 bytes. Shares the read buffer it was parsed from: `ByteString` is
/// `Bytes` checked as UTF-8 once, so the name reads as text with no second
/// check and no `unsafe` here.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TopicName(ByteString);

impl TopicName {
    /// Validates `bytes` as a topic name.
    pub fn new(bytes: Bytes) -> Result<TopicName, TopicError> {
        let text = ByteString::try_from(bytes).map_err(|_| TopicError::InvalidUtf8)?;
        validate_name(&text)?;
        Ok(TopicName(text))
    }

    /// A topic name from a string the caller knows to be valid (config,
    /// `$SYS`); still validated.
    pub fn from_string(s: String) -> Result<TopicName, TopicError> {
        TopicName::new(Bytes::from(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn as_bytes(&self) -> &Bytes {
        self.0.as_bytes()
    }

    /// A copy in its own allocation, for values kept long (retained
    /// messages): a slice would pin the whole read buffer it came from.
    pub fn compact(&self) -> TopicName {
        TopicName(ByteString::from(&*self.0))
    }
}

impl std::fmt::Debug for TopicName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

/// Why a topic name or filter is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("topic is empty")]
    Empty,
    #[error("topic is longer than 65535 bytes")]
    TooLong,
    #[error("topic is not valid UTF-8")]
    InvalidUtf8,
    #[error("topic contains U+0000")]
    NulChar,
    #[error("topic name contains a wildcard")]
    Wildcard,
    #[error("wildcard not alone in its level, or '#' not last")]
    BadWildcard,
    #[error("shared subscription is not $share/<group>/<filter> with a group free of '+', '#'")]
    BadShare,
}

/// The longest topic, in bytes: the wire length prefix is a `u16` (§1.5.3).
pub const TOPIC_BYTES_MAX: usize = u16::MAX as usize;

/// Checks a topic name (PUBLISH, will): non-empty, at most 65,535 bytes, no
/// U+0000, no `+` or `#`.
pub fn validate_name(topic: &str) -> Result<(), TopicError> {
    validate_common(topic)?;
    if topic.bytes().any(|b| b == b'+' || b == b'#') {
        return Err(TopicError::Wildcard);
    }
    Ok(())
}

/// Checks a topic filter (SUBSCRIBE, UNSUBSCRIBE): non-empty, at most 65,535
/// bytes, no U+0000, `+` only as a whole level, `#` only as the whole last
/// level.
pub fn validate_filter(filter: &str) -> Result<(), TopicError> {
    validate_common(filter)?;
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        let is_last = levels.peek().is_none();
        let wildcard_ok = match level {
            "+" => true,
            "#" => is_last,
            _ => !level.bytes().any(|b| b == b'+' || b == b'#'),
        };
        if !wildcard_ok {
            return Err(TopicError::BadWildcard);
        }
    }
    Ok(())
}

/// The prefix of a shared subscription's filter, `$share/<group>/<filter>`.
pub const SHARE_PREFIX: &str = "$share/";

/// A shared subscription's filter split into its group and the filter
/// its messages match: `None` for a filter that does not start with
/// `$share/`. The syntax is MQTT 5's (§4.8.2); MQTT 3.1.1 has none, and
/// shardmq reads it in 3.1.1 as mosquitto does. The group is non-empty,
/// without `/`, `+` or `#`; the filter after it is any valid filter.
pub fn parse_share(filter: &str) -> Option<Result<(&str, &str), TopicError>> {
    let rest = filter.strip_prefix(SHARE_PREFIX)?;
    let Some((group, inner)) = rest.split_once('/') else {
        return Some(Err(TopicError::BadShare));
    };
    if group.is_empty() || group.bytes().any(|b| b == b'+' || b == b'#') {
        return Some(Err(TopicError::BadShare));
    }
    Some(validate_filter(inner).map(|()| (group, inner)))
}

/// Checks a SUBSCRIBE or UNSUBSCRIBE filter: a valid filter, and when it
/// starts with `$share/`, a well-formed shared subscription.
pub fn validate_subscription(filter: &str) -> Result<(), TopicError> {
    validate_filter(filter)?;
    match parse_share(filter) {
        Some(Err(e)) => Err(e),
        _ => Ok(()),
    }
}

/// The rules names and filters share: length and U+0000.
fn validate_common(topic: &str) -> Result<(), TopicError> {
    if topic.is_empty() {
        return Err(TopicError::Empty);
    }
    if topic.len() > TOPIC_BYTES_MAX {
        return Err(TopicError::TooLong);
    }
    // U+0000 is the only code point whose UTF-8 encoding contains a 0 byte.
    if topic.bytes().any(|b| b == 0) {
        return Err(TopicError::NulChar);
    }
    Ok(())
}

/// Whether `filter` matches the topic name `name`.
///
/// `filter` is assumed valid (`validate_filter`); an invalid one gives an
/// unspecified answer but never a panic. This is the reference the index and
/// the retained store are tested against.
pub fn matches(filter: &str, name: &str) -> bool {
    if name.starts_with('$') && starts_with_wildcard(filter) {
        return false;
    }
    let mut filter_levels = filter.split('/');
    let mut name_levels = name.split('/');
    loop {
        match (filter_levels.next(), name_levels.next()) {
            // '#' takes whatever is left, including nothing ("a/#" matches "a").
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(filter_level), Some(name_level)) if filter_level == name_level => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Whether the first level of `filter` is a wildcard, which hides `$` topics
/// from it (§4.7.2).
fn starts_with_wildcard(filter: &str) -> bool {
    let (first, _) = split_level(filter);
    first == "+" || first == "#"
}

/// Splits the first level off `levels`: `("a", Some("b/c"))` for `"a/b/c"`,
/// `("c", None)` for `"c"`. `Some("")` is a trailing empty level, `None`
/// means no level is left.
pub(crate) fn split_level(levels: &str) -> (&str, Option<&str>) {
    match levels.split_once('/') {
        Some((first, rest)) => (first, Some(rest)),
        None => (levels, None),
    }
}

/// How many frames a [`LevelStack`] holds before it allocates. One frame per
/// pending branch; a walk needs about one per topic level, and real topics
/// have far fewer than 32 levels.
pub(crate) const LEVEL_STACK_INLINE: usize = 32;

/// The explicit stack of a trie walk: the first `N` frames live inline, on
/// the caller's stack, so ordinary walks do not allocate; deeper walks spill
/// to the heap.
///
/// The walks are not recursive because a peer controls the depth: a 65,535
/// byte topic has up to 65,536 levels, enough to overflow a thread stack.
///
/// Invariant: `spilled` is empty unless all `N` inline slots are in use, so
/// popping `spilled` first keeps the order last-in, first-out.
pub(crate) struct LevelStack<T, const N: usize> {
    inline: [Option<T>; N],
    inline_len: usize,
    spilled: Vec<T>,
}

impl<T, const N: usize> LevelStack<T, N> {
    pub(crate) fn new() -> Self {
        LevelStack {
            inline: std::array::from_fn(|_| None),
            inline_len: 0,
            spilled: Vec::new(),
        }
    }

    pub(crate) fn push(&mut self, frame: T) {
        match self.inline.get_mut(self.inline_len) {
            Some(slot) => {
                debug_assert!(self.spilled.is_empty());
                *slot = Some(frame);
                self.inline_len += 1;
            }
            None => self.spilled.push(frame),
        }
    }

    pub(crate) fn pop(&mut self) -> Option<T> {
        if let Some(frame) = self.spilled.pop() {
            return Some(frame);
        }
        let top = self.inline_len.checked_sub(1)?;
        self.inline_len = top;
        let frame = self.inline.get_mut(top).and_then(Option::take);
        debug_assert!(frame.is_some());
        frame
    }
}

/// A trie node keyed by topic levels, as far as pruning and dropping need to
/// know it. Implemented by the subscription index and the retained store.
pub(crate) trait LevelNode: Sized {
    fn child(&self, level: &str) -> Option<&Self>;
    fn child_mut(&mut self, level: &str) -> Option<&mut Self>;
    fn remove_child(&mut self, level: &str);
    fn child_count(&self) -> usize;
    /// Whether the node itself holds something (subscribers, a message).
    fn holds_value(&self) -> bool;
    /// Moves every child into `out`, leaving the node childless.
    fn take_children(&mut self, out: &mut Vec<Self>);
}

/// Removes the nodes at the end of `path` that no longer hold a value nor
/// lead to one. The root is never removed. Three walks down `path` and no
/// recursion (see [`LevelStack`] for why).
pub(crate) fn prune_path<N: LevelNode>(root: &mut N, path: &str) {
    let Some(cut) = first_dead_level(root, path) else {
        return;
    };
    let mut levels = path.split('/');
    let mut parent = root;
    for level in levels.by_ref().take(cut) {
        match parent.child_mut(level) {
            Some(child) => parent = child,
            None => return,
        }
    }
    if let Some(level) = levels.next() {
        parent.remove_child(level);
    }
}

/// The index of the first level of `path` from which every node down to the
/// end of `path` is dead: it holds no value and its only child, if any, is
/// the next node of the path. `None` if the last node is alive or missing.
fn first_dead_level<N: LevelNode>(root: &N, path: &str) -> Option<usize> {
    let mut node = root;
    let mut first_dead = None;
    let mut levels = path.split('/').enumerate().peekable();
    while let Some((index, level)) = levels.next() {
        node = node.child(level)?;
        let children_on_path = usize::from(levels.peek().is_some());
        let dead = !node.holds_value() && node.child_count() == children_on_path;
        first_dead = match (dead, first_dead) {
            (false, _) => None,
            (true, None) => Some(index),
            (true, Some(first)) => Some(first),
        };
    }
    first_dead
}

/// Drops the subtrees below `node` one node at a time. Dropping a deep
/// trie field by field would recurse once per level (see [`LevelStack`]).
/// Meant to be called from the node type's `Drop`.
pub(crate) fn drop_children<N: LevelNode>(node: &mut N) {
    if node.child_count() == 0 {
        return;
    }
    let mut pending = Vec::new();
    node.take_children(&mut pending);
    while let Some(mut child) = pending.pop() {
        child.take_children(&mut pending);
        // `child` is childless now: its own drop does not recurse.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_subscription_syntax() {
        assert_eq!(parse_share("a/b"), None);
        assert_eq!(parse_share("$share"), None, "a plain 3.1.1 filter");
        assert_eq!(parse_share("$sharex/g/a"), None);
        assert_eq!(parse_share("$share/g/a/+"), Some(Ok(("g", "a/+"))));
        assert_eq!(parse_share("$share/g/#"), Some(Ok(("g", "#"))));
        assert_eq!(parse_share("$share/g//"), Some(Ok(("g", "/"))));
        for bad in [
            "$share/",
            "$share/g",
            "$share//a",
            "$share/+/a",
            "$share/#/a",
            "$share/g+/a",
        ] {
            assert!(validate_subscription(bad).is_err(), "{bad}");
        }
        assert_eq!(
            validate_subscription("$share/g/"),
            Err(TopicError::Empty),
            "the filter part must be a valid filter"
        );
        assert_eq!(
            validate_subscription("$share/g/a#"),
            Err(TopicError::BadWildcard)
        );
        assert_eq!(validate_subscription("$share/g/x/#"), Ok(()));
    }

    #[test]
    fn name_validation_table() {
        let long = "a".repeat(TOPIC_BYTES_MAX);
        let too_long = "a".repeat(TOPIC_BYTES_MAX + 1);
        let accepted = [
            "a",
            "/",
            "//",
            "a/b/c",
            "/finance",
            "sport/tennis/",
            "$SYS/broker/load",
            " ",
            "\u{feff}a/b",
            "é/ü",
            long.as_str(),
        ];
        for name in accepted {
            assert_eq!(validate_name(name), Ok(()), "{name:?}");
        }
        let refused = [
            ("", TopicError::Empty),
            (too_long.as_str(), TopicError::TooLong),
            ("a\0b", TopicError::NulChar),
            ("+", TopicError::Wildcard),
            ("#", TopicError::Wildcard),
            ("a/+/b", TopicError::Wildcard),
            ("sport/tennis#", TopicError::Wildcard),
            ("a/#", TopicError::Wildcard),
        ];
        for (name, error) in refused {
            assert_eq!(validate_name(name), Err(error), "{name:?}");
        }
    }

    #[test]
    fn filter_validation_table() {
        let long = "a".repeat(TOPIC_BYTES_MAX);
        let too_long = "a".repeat(TOPIC_BYTES_MAX + 1);
        let accepted = [
            "#",
            "+",
            "/",
            "sport/tennis/player1/#",
            "sport/#",
            "sport/tennis/#",
            "+/+",
            "/+",
            "+/tennis/#",
            "sport/+/player1",
            "+/#",
            "/#",
            "$SYS/#",
            "a//+//#",
            "\u{feff}/+",
            long.as_str(),
        ];
        for filter in accepted {
            assert_eq!(validate_filter(filter), Ok(()), "{filter:?}");
        }
        let refused = [
            ("", TopicError::Empty),
            (too_long.as_str(), TopicError::TooLong),
            ("a/\0", TopicError::NulChar),
            ("sport/tennis#", TopicError::BadWildcard),
            ("sport/tennis/#/ranking", TopicError::BadWildcard),
            ("sport+", TopicError::BadWildcard),
            ("#/", TopicError::BadWildcard),
            ("##", TopicError::BadWildcard),
            ("++", TopicError::BadWildcard),
            ("a/+b", TopicError::BadWildcard),
            ("#/#", TopicError::BadWildcard),
        ];
        for (filter, error) in refused {
            assert_eq!(validate_filter(filter), Err(error), "{filter:?}");
        }
    }

    /// The examples of §4.7.1.2, §4.7.1.3 and §4.7.2, plus edge cases.
    #[test]
    fn matching_table() {
        let cases = [
            ("sport/tennis/player1/#", "sport/tennis/player1", true),
            (
                "sport/tennis/player1/#",
                "sport/tennis/player1/ranking",
                true,
            ),
            (
                "sport/tennis/player1/#",
                "sport/tennis/player1/score/wimbledon",
                true,
            ),
            ("sport/tennis/player1/#", "sport/tennis/player2", false),
            ("sport/#", "sport", true),
            ("#", "sport/tennis", true),
            ("sport/tennis/+", "sport/tennis/player1", true),
            ("sport/tennis/+", "sport/tennis/player1/ranking", false),
            ("sport/+", "sport", false),
            ("sport/+", "sport/", true),
            ("+/+", "/finance", true),
            ("/+", "/finance", true),
            ("+", "/finance", false),
            ("+", "finance", true),
            ("+/b", "/b", true),
            ("a/+/b", "a//b", true),
            ("a//b", "a//b", true),
            ("a/b", "a/b/", false),
            ("a/b/", "a/b/", true),
            ("a/b", "a/B", false),
            ("#", "$SYS/broker", false),
            ("+/monitor/Clients", "$SYS/monitor/Clients", false),
            ("$SYS/#", "$SYS/monitor/Clients", true),
            ("$SYS/monitor/+", "$SYS/monitor/Clients", true),
            ("$SYS/#", "$SYS", true),
            ("+", "$", false),
            ("a/+", "a/$x", true),
            ("a/#", "a/$x", true),
            ("+/#", "\u{feff}x/y", true),
            ("\u{feff}x/+", "\u{feff}x/y", true),
            ("x/+", "\u{feff}x/y", false),
        ];
        for (filter, name, expected) in cases {
            assert_eq!(validate_filter(filter), Ok(()), "{filter:?}");
            assert_eq!(validate_name(name), Ok(()), "{name:?}");
            assert_eq!(matches(filter, name), expected, "{filter:?} vs {name:?}");
        }
    }

    #[test]
    fn matching_never_panics_on_invalid_input() {
        let odd = ["", "#/a", "a#", "+x", "\u{feff}", "/", "$", "\0"];
        for filter in odd {
            for name in odd {
                let _ = matches(filter, name);
            }
        }
    }

    #[test]
    fn split_level_keeps_empty_levels() {
        assert_eq!(split_level("a/b/c"), ("a", Some("b/c")));
        assert_eq!(split_level("a/"), ("a", Some("")));
        assert_eq!(split_level("/a"), ("", Some("a")));
        assert_eq!(split_level(""), ("", None));
        assert_eq!(split_level("\u{feff}/x"), ("\u{feff}", Some("x")));
    }

    #[test]
    fn level_stack_is_lifo_across_the_spill() {
        let mut stack: LevelStack<usize, 2> = LevelStack::new();
        for value in 0..5 {
            stack.push(value);
        }
        assert_eq!(stack.pop(), Some(4));
        stack.push(40);
        let drained: Vec<usize> = std::iter::from_fn(|| stack.pop()).collect();
        assert_eq!(drained, [40, 3, 2, 1, 0]);
        stack.push(7);
        assert_eq!(stack.pop(), Some(7));
        assert_eq!(stack.pop(), None);
    }
}
