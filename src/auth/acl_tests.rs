use super::*;

fn rights(allow: u8, deny: u8) -> Rights {
    Rights { allow, deny }
}

const READ: u8 = Access::Subscribe as u8 | Access::Receive as u8;
const WRITE: u8 = Access::Publish as u8;

#[test]
fn reads_mosquittos_example_file() {
    // The shape of mosquitto's aclfile.example.
    let text = "\
# This affects access control for clients with no username.
topic read $SYS/#

# This only affects clients with username \"roger\".
user roger
topic foo/bar

# This affects all clients.
pattern write $SYS/broker/connection/%c/state
";
    let file = AclFile::parse(text).unwrap();
    assert_eq!(
        file.anonymous.topics,
        [Rule {
            filter: "$SYS/#".into(),
            rights: rights(READ, 0)
        }]
    );
    assert_eq!(
        file.users["roger"].topics,
        [Rule {
            filter: "foo/bar".into(),
            rights: rights(ALL, 0)
        }]
    );
    // A pattern after a user line is still everyone's, as in mosquitto.
    assert_eq!(file.patterns.len(), 1);
    assert_eq!(file.patterns[0].rights, rights(WRITE, 0));
}

#[test]
fn access_words_and_lists() {
    let file = AclFile::parse(
        "topic read a\ntopic write b\ntopic readwrite c\ntopic deny d\n\
         topic subscribe e\ntopic receive f\ntopic subscribe,write g\n",
    )
    .unwrap();
    let got: Vec<Rights> = file.anonymous.topics.iter().map(|r| r.rights).collect();
    assert_eq!(
        got,
        [
            rights(READ, 0),
            rights(WRITE, 0),
            rights(ALL, 0),
            rights(0, ALL),
            rights(Access::Subscribe as u8, 0),
            rights(Access::Receive as u8, 0),
            rights(Access::Subscribe as u8 | WRITE, 0),
        ]
    );
}

#[test]
fn user_names_and_filters_keep_their_spaces() {
    let file = AclFile::parse("user  John Smith  \ntopic read a b/c d\n").unwrap();
    assert_eq!(file.users["John Smith"].topics[0].filter, "a b/c d");
}

#[test]
fn roles_are_blocks_and_users_join_them() {
    let text = "\
role api
topic write /meek/tasks/+/request
pattern read /meek/nodes/%c/config
user api-1
roles api, ops
role ops
topic read $SYS/#
";
    let file = AclFile::parse(text).unwrap();
    assert_eq!(file.users["api-1"].roles, ["api", "ops"]);
    assert_eq!(file.roles["api"].topics.len(), 1);
    assert_eq!(file.roles["api"].patterns.len(), 1);
    assert!(file.patterns.is_empty(), "a role's pattern is the role's");
    assert_eq!(file.roles["ops"].topics.len(), 1);
}

#[test]
fn malformed_lines_name_their_line() {
    let cases: [(&str, usize, AclErrorKind); 9] = [
        (
            "tpoic read a",
            1,
            AclErrorKind::UnknownStatement("tpoic".into()),
        ),
        ("\n\ntopic", 3, AclErrorKind::EmptyTopic),
        ("topic reed a", 1, AclErrorKind::BadAccess("reed".into())),
        (
            "topic deny,read a",
            1,
            AclErrorKind::BadAccess("deny,read".into()),
        ),
        (
            "topic read a/#/b",
            1,
            AclErrorKind::BadFilter("a/#/b".into()),
        ),
        ("user", 1, AclErrorKind::MissingName("user")),
        ("role x\nroles y", 2, AclErrorKind::RolesOutsideUser),
        (
            "user u\nroles nope",
            2,
            AclErrorKind::UnknownRole("nope".into()),
        ),
        ("role r\nrole r", 2, AclErrorKind::DuplicateRole("r".into())),
    ];
    for (text, line, reason) in cases {
        assert_eq!(
            AclFile::parse(text).unwrap_err(),
            AclError { line, reason },
            "{text:?}"
        );
    }
    let e = AclFile::parse("topic read a\n\nbogus\n").unwrap_err();
    assert_eq!(e.to_string(), "line 3: unknown statement \"bogus\"");
}

#[test]
fn comments_and_blank_lines_are_skipped() {
    let file = AclFile::parse("# x\n   \n\t# indented\n").unwrap();
    assert_eq!(file, AclFile::default());
}

#[test]
fn shipped_examples_parse_and_decide_as_documented() {
    use crate::auth::{AclDefault, ClientAcl};
    let meek = AclFile::parse(include_str!("../../examples/meekyolo-acl.conf")).unwrap();
    let api = ClientAcl::compile(&meek, Some("api-server"), "api", AclDefault::Deny);
    let node = ClientAcl::compile(&meek, Some("analysis-node-1"), "n1", AclDefault::Deny);
    assert!(api.may_publish("/meek/tasks/t1/request"));
    assert!(!node.may_publish("/meek/tasks/t1/request"));
    assert!(node.may_subscribe("/meek/tasks/+/request"));
    assert!(!api.may_subscribe("/meek/tasks/+/request"));
    assert!(node.may_publish("/meek/nodes/n1/health"));
    assert!(api.may_subscribe("/meek/tasks/+/result"));
    assert!(!node.may_subscribe("#"));
    let stranger = ClientAcl::compile(&meek, Some("guest"), "g", AclDefault::Deny);
    assert!(!stranger.may_subscribe("/meek/system/nodes"));
    // Every topic of the spec's §3 is in both roles, one way or the other.
    for topic in [
        "/meek/system/nodes",
        "/meek/system/broadcast",
        "/meek/system/config",
        "/meek/nodes/x/status",
        "/meek/nodes/x/health",
        "/meek/nodes/x/resource",
        "/meek/nodes/x/config",
        "/meek/tasks/x/request",
        "/meek/tasks/x/status",
        "/meek/tasks/x/result",
        "/meek/tasks/x/control",
        "/meek/groups/x/tasks",
        "/meek/groups/x/nodes",
        "/meek/groups/x/status",
    ] {
        for acl in [&api, &node] {
            assert!(acl.may_publish(topic) || acl.may_receive(topic), "{topic}");
        }
    }
    let nosub = AclFile::parse(include_str!("../../examples/acl-nosubscribe.conf")).unwrap();
    for user in [None, Some("anyone")] {
        let acl = ClientAcl::compile(&nosub, user, "c", AclDefault::Deny);
        assert!(!acl.may_subscribe("test/nosubscribe"));
        assert!(!acl.may_publish("test/nosubscribe"));
        assert!(acl.may_subscribe("test/#"));
        assert!(acl.may_publish("test/other"));
    }
}
