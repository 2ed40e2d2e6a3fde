use super::*;
use crate::auth::acl::AclFile;

fn compile(text: &str, user: Option<&str>, client_id: &str) -> ClientAcl {
    ClientAcl::compile(
        &AclFile::parse(text).unwrap(),
        user,
        client_id,
        AclDefault::Deny,
    )
}

#[test]
fn filter_containment() {
    let yes = [
        ("#", "a/b"),
        ("#", "#"),
        ("#", "+/x"),
        ("a/#", "a"),
        ("a/#", "a/#"),
        ("a/#", "a/+/c"),
        ("a/+", "a/b"),
        ("a/+", "a/+"),
        ("+/+", "a/+"),
        ("$SYS/#", "$SYS/broker/uptime"),
    ];
    let no = [
        ("a/#", "#"),
        ("a/+", "a/#"),
        ("a/b", "a/+"),
        ("a/b", "a"),
        ("a", "a/b"),
        ("#", "$SYS/x"),
        ("+/x", "$SYS/x"),
        ("a/+", "a/b/c"),
    ];
    for (rule, filter) in yes {
        assert!(covers(rule, filter), "{rule} covers {filter}");
    }
    for (rule, filter) in no {
        assert!(!covers(rule, filter), "{rule} does not cover {filter}");
    }
}

#[test]
fn topics_match_rules_through_the_trie() {
    let acl = compile(
        "topic read a/+/c\ntopic write b/#\ntopic readwrite x\ntopic read #\n",
        None,
        "c1",
    );
    assert!(acl.may_receive("a/b/c"));
    assert!(!acl.may_publish("a/b/c"));
    assert!(acl.may_publish("b"));
    assert!(acl.may_publish("b/c/d"));
    assert!(acl.may_publish("x") && acl.may_receive("x"));
    assert!(!acl.may_publish("x/y"));
    // `#` reads everything but `$` topics [MQTT-4.7.2-1].
    assert!(acl.may_receive("any/thing"));
    assert!(!acl.may_receive("$SYS/broker/uptime"));
}

#[test]
fn deny_wins_wherever_it_is() {
    let acl = compile(
        "topic readwrite test/#\ntopic deny test/nosubscribe\n",
        None,
        "c",
    );
    assert!(acl.may_subscribe("test/a"));
    assert!(!acl.may_subscribe("test/nosubscribe"));
    assert!(!acl.may_publish("test/nosubscribe"));
    assert!(!acl.may_receive("test/nosubscribe"));
    // A filter only partly denied is granted, its denied part filtered.
    assert!(acl.may_subscribe("test/#"));
    assert!(acl.may_subscribe("test/+"));
}

#[test]
fn subscribe_needs_a_rule_covering_the_whole_filter() {
    let acl = compile("topic read sensors/#\ntopic receive alerts/#\n", None, "c");
    assert!(acl.may_subscribe("sensors/+/temp"));
    assert!(!acl.may_subscribe("#"));
    assert!(
        !acl.may_subscribe("alerts/fire"),
        "receive alone is not subscribe"
    );
    assert!(acl.may_receive("alerts/fire"));
    let sub_only = compile("topic subscribe news/#\n", None, "c");
    assert!(sub_only.may_subscribe("news/#"));
    assert!(!sub_only.may_receive("news/today"));
}

#[test]
fn patterns_take_the_client_id_and_user_name() {
    let text = "\
pattern readwrite clients/%c/#
pattern read users/%u/inbox
user alice
topic read shared/#
";
    let acl = compile(text, Some("alice"), "dev-7");
    assert!(acl.may_publish("clients/dev-7/state"));
    assert!(!acl.may_publish("clients/dev-8/state"));
    assert!(acl.may_receive("users/alice/inbox"));
    assert!(!acl.may_receive("users/bob/inbox"));
    assert!(acl.may_receive("shared/x"));
    // Anonymous: the `%u` pattern does not apply, the `%c` one does; the
    // user's rules are not the anonymous section's.
    let anon = compile(text, None, "dev-9");
    assert!(anon.may_publish("clients/dev-9/x"));
    assert!(!anon.may_receive("users//inbox"));
    assert!(!anon.may_receive("shared/x"));
}

#[test]
fn wildcards_in_substituted_values_refuse_everything() {
    let text = "pattern readwrite clients/%c/#\ntopic read public/#\n";
    for id in ["+", "#", "a/b"] {
        let acl = compile(text, None, id);
        assert!(!acl.may_publish("clients/x/y"), "{id}");
        assert!(!acl.may_receive("public/x"), "{id}");
        assert!(!acl.may_subscribe("clients/#"), "{id}");
    }
    let acl = compile("pattern read u/%u\n", Some("ev+il"), "ok");
    assert!(!acl.may_receive("u/ev+il"));
}

#[test]
fn roles_give_their_members_topics_and_patterns() {
    let text = "\
role analysis
topic read /meek/tasks/+/request
pattern write /meek/nodes/%c/status
user node-a
roles analysis
user other
topic read x
";
    let acl = compile(text, Some("node-a"), "n1");
    assert!(acl.may_subscribe("/meek/tasks/+/request"));
    assert!(acl.may_publish("/meek/nodes/n1/status"));
    assert!(!acl.may_publish("/meek/nodes/n2/status"));
    let other = compile(text, Some("other"), "n1");
    assert!(!other.may_publish("/meek/nodes/n1/status"), "not a member");
    assert!(other.may_receive("x"));
}

#[test]
fn default_allow_only_fills_what_no_rule_speaks_to() {
    let file = AclFile::parse("topic deny secret/#\ntopic read pub/#\n").unwrap();
    let acl = ClientAcl::compile(&file, None, "c", AclDefault::Allow);
    assert!(acl.may_publish("anything"));
    assert!(acl.may_publish("pub/x"), "read does not deny write");
    assert!(!acl.may_receive("secret/x"));
    let acl = ClientAcl::compile(&file, None, "c", AclDefault::Deny);
    assert!(!acl.may_publish("anything"));
    assert!(!acl.may_publish("pub/x"));
}

#[test]
fn empty_levels_and_odd_topics_do_not_panic() {
    let acl = compile("topic readwrite /\ntopic read +/+\n", None, "c");
    for topic in ["/", "//", "a", "\u{feff}/x", "$", "$/x"] {
        let _ = (acl.may_publish(topic), acl.may_receive(topic));
    }
    assert!(acl.may_publish("/"));
    assert!(acl.may_receive("a/b"));
    assert!(!acl.may_receive("$x/b"));
}

#[test]
fn compiled_acl_can_cross_threads() {
    fn send<T: Send + Sync>() {}
    send::<ClientAcl>();
}

mod differential {
    use proptest::prelude::*;

    use super::*;
    use crate::auth::acl::Rights;
    use crate::mqtt::topic;

    fn level() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("a".to_string()),
            Just("b".to_string()),
            Just(String::new()),
            Just("$s".to_string()),
        ]
    }

    fn filter() -> impl Strategy<Value = String> {
        let filter_level = prop_oneof![level(), Just("+".to_string())];
        (prop::collection::vec(filter_level, 1..4), any::<bool>()).prop_map(|(mut levels, hash)| {
            if hash {
                levels.push("#".to_string());
            }
            levels.join("/")
        })
    }

    fn name() -> impl Strategy<Value = String> {
        prop::collection::vec(level(), 1..5).prop_map(|l| l.join("/"))
    }

    fn access() -> impl Strategy<Value = &'static str> {
        prop_oneof![
            Just("read"),
            Just("write"),
            Just("readwrite"),
            Just("deny"),
            Just("subscribe"),
            Just("receive"),
        ]
    }

    proptest! {
        /// The trie decides as a walk over every rule would.
        #[test]
        fn trie_agrees_with_every_rule_walked(
            rules in prop::collection::vec((access(), filter()), 0..8),
            topics in prop::collection::vec(name(), 1..8),
        ) {
            let text: String = rules.iter().map(|(a, f)| format!("topic {a} {f}\n")).collect();
            let file = AclFile::parse(&text).unwrap();
            let acl = ClientAcl::compile(&file, None, "c", AclDefault::Deny);
            for t in &topics {
                let mut want = Rights::default();
                for rule in &file.anonymous.topics {
                    if topic::matches(&rule.filter, t) {
                        want.merge(rule.rights);
                    }
                }
                let allowed = |bit: u8| want.deny & bit == 0 && want.allow & bit != 0;
                prop_assert_eq!(acl.may_publish(t), allowed(4), "publish {} under {}", t, text);
                prop_assert_eq!(acl.may_receive(t), allowed(2), "receive {} under {}", t, text);
            }
        }

        /// A filter covered by a rule matches no topic the rule does not.
        #[test]
        fn covered_filters_match_only_within_the_rule(
            rule in filter(),
            sub in filter(),
            topics in prop::collection::vec(name(), 1..16),
        ) {
            if covers(&rule, &sub) {
                for t in &topics {
                    if topic::matches(&sub, t) {
                        prop_assert!(topic::matches(&rule, t), "{} covers {} but not {}", rule, sub, t);
                    }
                }
            }
        }
    }
}
