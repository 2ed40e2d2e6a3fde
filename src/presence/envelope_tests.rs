use serde_json::{json, Value};

use super::*;

/// The registration of seed 000 §4.2, in the §4.1 envelope.
fn seed_registration() -> Value {
    json!({
        "version": "2.0.0",
        "timestamp": 1698765432,
        "trace_id": "5b0e5d9c-3f1a-4a8e-9d5e-1c2b3a4d5e6f",
        "message_type": "node_register",
        "payload": {
            "node_id": "analysis-001",
            "node_type": "analysis",
            "group_id": "group-001",
            "capabilities": {
                "models": ["yolov8"],
                "analysis_types": ["detection", "segmentation", "tracking"],
                "gpu_info": {"available": true, "name": "NVIDIA A100", "memory": "40GB"},
                "max_concurrent_tasks": 4
            },
            "metadata": {
                "version": "2.0.0",
                "region": "cn-shanghai",
                "tags": ["gpu", "prod"],
                "ip_address": "192.168.1.100"
            }
        }
    })
}

fn check(v: &Value) -> Result<Registration, EnvelopeError> {
    registration(parse(&serde_json::to_vec(v).unwrap())?)
}

/// `v` with `path` (`a` or `a.b`) set to `value`, or removed for `None`.
fn with(path: &str, value: Option<Value>) -> Value {
    let mut v = seed_registration();
    let (obj, key) = match path.split_once('.') {
        Some((outer, key)) => (v.get_mut(outer).unwrap(), key),
        None => (&mut v, path),
    };
    let map = obj.as_object_mut().unwrap();
    match value {
        Some(x) => map.insert(key.to_string(), x),
        None => map.remove(key),
    };
    v
}

#[test]
fn the_seeds_registration_is_accepted_whole() {
    let r = check(&seed_registration()).unwrap();
    assert_eq!(r.node_id, "analysis-001");
    assert_eq!(r.node_type, "analysis");
    assert_eq!(r.group_id.as_deref(), Some("group-001"));
    assert_eq!(r.timestamp, 1698765432);
    assert_eq!(r.capabilities["gpu_info"]["name"], "NVIDIA A100");
    assert_eq!(r.metadata["region"], "cn-shanghai");
}

#[test]
fn bytes_that_are_not_a_json_object_are_a_parse_error() {
    for bad in [
        &b"not json"[..],
        b"[1,2]",
        b"\"node_register\"",
        b"",
        b"{\"version\":",
    ] {
        let e = parse(bad).unwrap_err();
        assert_eq!(e, EnvelopeError::NotJson, "{bad:?}");
        assert_eq!(e.code(), ("ERR_002", "PARSE_ERROR"));
    }
}

#[test]
fn version_must_be_2_x_y() {
    assert!(check(&with("version", Some(json!("2.1.7")))).is_ok());
    assert_eq!(
        check(&with("version", None)).unwrap_err(),
        EnvelopeError::Missing(Field::Version)
    );
    for bad in [
        json!(2),
        json!("2"),
        json!("2.0"),
        json!("2.0.x"),
        json!("v2.0.0"),
        json!("2.0.0.1"),
    ] {
        let e = check(&with("version", Some(bad.clone()))).unwrap_err();
        assert_eq!(e.field(), Field::Version, "{bad}");
        assert_eq!(e.code().0, "ERR_001", "{bad}");
    }
    let e = check(&with("version", Some(json!("1.0.0")))).unwrap_err();
    assert_eq!(e, EnvelopeError::Version("1.0.0".into()));
    assert_eq!(e.code(), ("ERR_003", "VERSION_ERROR"));
}

#[test]
fn timestamp_must_be_non_negative_integer_seconds() {
    assert_eq!(
        check(&with("timestamp", None)).unwrap_err(),
        EnvelopeError::Missing(Field::Timestamp)
    );
    for bad in [json!(-1), json!(1.5), json!("1698765432"), json!(true)] {
        assert_eq!(
            check(&with("timestamp", Some(bad.clone())))
                .unwrap_err()
                .field(),
            Field::Timestamp,
            "{bad}"
        );
    }
}

#[test]
fn trace_id_must_be_a_short_printable_string() {
    assert_eq!(
        check(&with("trace_id", None)).unwrap_err(),
        EnvelopeError::Missing(Field::TraceId)
    );
    for bad in [
        json!(""),
        json!(7),
        json!("a\u{0}b"),
        json!("x".repeat(129)),
    ] {
        assert_eq!(
            check(&with("trace_id", Some(bad.clone())))
                .unwrap_err()
                .field(),
            Field::TraceId,
            "{bad}"
        );
    }
}

#[test]
fn message_type_must_be_node_register_on_the_registration_topic() {
    assert_eq!(
        check(&with("message_type", None)).unwrap_err(),
        EnvelopeError::Missing(Field::MessageType)
    );
    for bad in [json!(""), json!(1), json!("task_request")] {
        assert_eq!(
            check(&with("message_type", Some(bad.clone())))
                .unwrap_err()
                .field(),
            Field::MessageType,
            "{bad}"
        );
    }
}

#[test]
fn payload_must_be_an_object() {
    assert_eq!(
        check(&with("payload", None)).unwrap_err(),
        EnvelopeError::Missing(Field::Payload)
    );
    for bad in [json!([]), json!("x"), json!(3)] {
        assert_eq!(
            check(&with("payload", Some(bad.clone())))
                .unwrap_err()
                .field(),
            Field::Payload,
            "{bad}"
        );
    }
}

#[test]
fn node_id_must_be_one_topic_level() {
    assert_eq!(
        check(&with("payload.node_id", None)).unwrap_err(),
        EnvelopeError::Missing(Field::NodeId)
    );
    for bad in [
        json!(""),
        json!(1),
        json!("a/b"),
        json!("+"),
        json!("#"),
        json!("a\nb"),
        json!("n".repeat(129)),
    ] {
        assert_eq!(
            check(&with("payload.node_id", Some(bad.clone())))
                .unwrap_err()
                .field(),
            Field::NodeId,
            "{bad}"
        );
    }
}

#[test]
fn node_type_is_analysis_or_api() {
    assert!(check(&with("payload.node_type", Some(json!("api")))).is_ok());
    assert_eq!(
        check(&with("payload.node_type", None)).unwrap_err(),
        EnvelopeError::Missing(Field::NodeType)
    );
    for bad in [json!("gpu"), json!("Analysis"), json!(1)] {
        assert_eq!(
            check(&with("payload.node_type", Some(bad.clone())))
                .unwrap_err()
                .field(),
            Field::NodeType,
            "{bad}"
        );
    }
}

#[test]
fn group_id_is_optional_but_a_topic_level_when_given() {
    assert_eq!(
        check(&with("payload.group_id", None)).unwrap().group_id,
        None
    );
    for bad in [json!(""), json!(5), json!("g/1")] {
        assert_eq!(
            check(&with("payload.group_id", Some(bad.clone())))
                .unwrap_err()
                .field(),
            Field::GroupId,
            "{bad}"
        );
    }
}

#[test]
fn capabilities_and_metadata_are_optional_objects() {
    let r = check(&with("payload.capabilities", None)).unwrap();
    assert_eq!(r.capabilities, json!({}));
    let r = check(&with("payload.metadata", None)).unwrap();
    assert_eq!(r.metadata, json!({}));
    assert_eq!(
        check(&with("payload.capabilities", Some(json!(["yolov8"]))))
            .unwrap_err()
            .field(),
        Field::Capabilities
    );
    assert_eq!(
        check(&with("payload.metadata", Some(json!("prod"))))
            .unwrap_err()
            .field(),
        Field::Metadata
    );
}

#[test]
fn the_error_message_has_the_four_fields_of_7_1_and_names_the_message() {
    let bad = with("payload.node_type", Some(json!("gpu")));
    let bytes = serde_json::to_vec(&bad).unwrap();
    let e = check(&bad).unwrap_err();
    let m = error_message(&e, &bytes);
    assert_eq!(m["error_code"], "ERR_001");
    assert_eq!(m["error_type"], "VALIDATION_ERROR");
    assert!(m["message"].is_string());
    assert_eq!(m["details"]["field"], "payload.node_type");
    assert!(m["details"]["reason"]
        .as_str()
        .unwrap()
        .contains("analysis"));
    assert_eq!(m["details"]["trace_id"], bad["trace_id"]);
    assert_eq!(m["details"]["node_id"], "analysis-001");
    assert_eq!(m.as_object().unwrap().len(), 4);

    let m = error_message(&EnvelopeError::NotJson, b"\xff{");
    assert_eq!(m["error_code"], "ERR_002");
    assert_eq!(m["details"]["field"], "message");
    assert!(m["details"].get("trace_id").is_none());
}

#[test]
fn report_topics_name_a_node_and_a_kind() {
    assert_eq!(
        report_topic("/meek/nodes/analysis-001/health"),
        Some(("analysis-001", Report::Health))
    );
    assert_eq!(
        report_topic("/meek/nodes/n/status"),
        Some(("n", Report::Status))
    );
    assert_eq!(
        report_topic("/meek/nodes/n/resource"),
        Some(("n", Report::Resource))
    );
    for bad in [
        "/meek/nodes/n/config",
        "/meek/nodes//health",
        "/meek/nodes/a/b/health",
        "/meek/system/nodes",
        "/meek/nodes/n",
    ] {
        assert_eq!(report_topic(bad), None, "{bad}");
    }
}

#[test]
fn a_report_is_the_envelopes_payload_or_the_message_or_its_text() {
    let env = br#"{"version":"2.0.0","timestamp":1,"trace_id":"t","message_type":"node_status","payload":{"status":"busy"}}"#;
    let body = report_body(env).unwrap();
    assert_eq!(body, json!({"status": "busy"}));
    assert_eq!(status_of(&body), Some("busy"));
    let body = report_body(br#"{"status":"offline"}"#).unwrap();
    assert_eq!(status_of(&body), Some("offline"));
    let body = report_body(b"offline").unwrap();
    assert_eq!(status_of(&body), Some("offline"));
    assert_eq!(report_body(b"\xff\xfe"), None);
    assert_eq!(report_body(b""), None);
    assert_eq!(status_of(&json!(3)), None);
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    /// Bytes near a registration: the seed's, cut, with a byte changed.
    fn near_registration() -> impl Strategy<Value = Vec<u8>> {
        let seed = serde_json::to_vec(&seed_registration()).unwrap();
        let len = seed.len();
        (0..len, 0..len, any::<u8>()).prop_map(move |(cut, at, byte)| {
            let mut b = seed.clone();
            if let Some(x) = b.get_mut(at) {
                *x = byte;
            }
            b.truncate(cut.max(at + 1));
            b
        })
    }

    proptest! {
        /// A peer's bytes, whatever they are, give a message or a typed
        /// error with a §7.1 answer; never a panic.
        #[test]
        fn any_bytes_are_checked_without_panic(
            bytes in prop_oneof![prop::collection::vec(any::<u8>(), 0..256), near_registration()]
        ) {
            match parse(&bytes).and_then(registration) {
                Ok(r) => prop_assert!(valid_id(&r.node_id)),
                Err(e) => {
                    let m = error_message(&e, &bytes);
                    prop_assert!(m["error_code"].is_string() && m["details"]["field"].is_string());
                }
            }
            let _ = report_body(&bytes).as_ref().map(status_of);
        }
    }
}
