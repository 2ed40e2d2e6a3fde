use super::*;
use serde_json::json;

const UNIT: &str = "MS500-H090-EP-2549-0038";
const MD5: &str = "5d41402abc4b2a76b9719d911017c592";

/// A valid command of each type, as a backend would send it.
pub(crate) fn valid(kind: CommandType) -> Value {
    let mut v = json!({ "type": kind.as_str(), "camera": "30eda0e27100", "unit": UNIT });
    let extra = match kind {
        CommandType::Aim => json!({
            "model_id": 5, "link": "/media/Organization1/AIModel/yolov8n.rpk", "md5": MD5
        }),
        CommandType::Fmw => {
            json!({ "firmware_id": "fw-2.1.0", "link": "/media/fw.bin", "md5": MD5 })
        }
        CommandType::App => json!({ "application_id": 7, "link": "/media/app.bin", "md5": MD5 }),
        CommandType::Cdn => json!({ "coordinates": [[0, 0], [100, 0], [100, 80], [0, 80]] }),
        CommandType::Cfg => json!({ "configs": { "threshold": 0.5 } }),
        CommandType::Cts => json!({ "cs_picEnable": true, "cs_vidFps": 15, "cs_other": "x" }),
        CommandType::Wfi => json!({ "wifi_enabled": 1, "wifi_password": "secret" }),
        CommandType::Uds => json!({ "settings": { "tz": "UTC" } }),
        CommandType::Frs => json!({ "reset_level": 2 }),
        CommandType::Scs | CommandType::Img | CommandType::Rsr => json!({}),
    };
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    v
}

fn check(v: &Value) -> Result<Command, CommandError> {
    validate(v.to_string().as_bytes(), 128)
}

#[test]
fn every_type_is_accepted_with_its_fields() {
    for kind in CommandType::ALL {
        let got = check(&valid(kind)).unwrap_or_else(|e| panic!("{kind:?}: {e}"));
        assert_eq!(got.kind, kind);
        assert_eq!(got.unit, UNIT);
    }
}

#[test]
fn each_required_field_missing_is_named() {
    for kind in CommandType::ALL {
        let mut fields: Vec<&str> = kind.fields().iter().map(|(f, _)| *f).collect();
        fields.extend(["type", "unit"]);
        for field in fields {
            let mut v = valid(kind);
            v.as_object_mut().unwrap().remove(field);
            let e = check(&v).unwrap_err();
            assert_eq!(e, CommandError::Missing { field }, "{kind:?}");
            assert_eq!(e.field(), Some(field));
            assert_eq!(e.reason(), Reason::MissingField);
        }
    }
    let mut cts = valid(CommandType::Cts);
    cts.as_object_mut()
        .unwrap()
        .retain(|k, _| !k.starts_with("cs_"));
    assert_eq!(check(&cts), Err(CommandError::Missing { field: "cs_*" }));
}

#[test]
fn fields_of_the_wrong_kind_are_named() {
    let cases: &[(CommandType, &str, Value)] = &[
        (CommandType::Aim, "model_id", json!(-1)),
        (CommandType::Aim, "model_id", json!("")),
        (CommandType::Aim, "link", json!(3)),
        (
            CommandType::Aim,
            "md5",
            json!("5d41402abc4b2a76b9719d911017c59"),
        ),
        (
            CommandType::Aim,
            "md5",
            json!("5d41402abc4b2a76b9719d911017c59z"),
        ),
        (CommandType::Fmw, "firmware_id", json!(null)),
        (CommandType::Fmw, "md5", json!(12)),
        (CommandType::App, "application_id", json!([1])),
        (CommandType::App, "link", json!("")),
        (CommandType::Cdn, "coordinates", json!({"x": 1})),
        (CommandType::Cfg, "configs", json!("a=b")),
        (CommandType::Cts, "cs_picEnable", json!(2)),
        (CommandType::Cts, "cs_vidFps", json!(-5)),
        (CommandType::Cts, "cs_other", json!({"nested": 1})),
        (CommandType::Wfi, "wifi_enabled", json!("yes")),
        (CommandType::Wfi, "wifi_password", json!(1234)),
        (CommandType::Uds, "settings", json!([])),
        (CommandType::Frs, "reset_level", json!(1.5)),
        (CommandType::Frs, "reset_level", json!("hard")),
    ];
    for (kind, field, bad) in cases {
        let mut v = valid(*kind);
        v[*field] = bad.clone();
        let e = check(&v).unwrap_err();
        assert!(
            matches!(&e, CommandError::Invalid { field: f, .. } if f == field),
            "{kind:?} {field} = {bad}: {e:?}"
        );
        assert_eq!(e.field(), Some(*field));
        assert_eq!(e.reason(), Reason::InvalidField);
    }
}

#[test]
fn unknown_types_and_non_objects_are_refused() {
    let mut v = valid(CommandType::Aim);
    v["type"] = json!("XYZ");
    assert_eq!(check(&v), Err(CommandError::UnknownType("XYZ".into())));
    v["type"] = json!("aim");
    assert_eq!(check(&v).unwrap_err().reason(), Reason::UnknownType);
    v["type"] = json!(1);
    assert_eq!(check(&v).unwrap_err().field(), Some("type"));
    for bad in [
        &b"[1,2]"[..],
        b"\"AIM\"",
        b"{\"type\":",
        b"{\"a\":1,}",
        b"\xff{}",
    ] {
        assert_eq!(
            validate(bad, 128).unwrap_err().reason(),
            Reason::InvalidJson,
            "{bad:?}"
        );
    }
}

#[test]
fn units_that_would_change_the_topic_are_refused() {
    for bad in [
        "", "a/b", "/", "+", "a+", "#", "dev#", "a\0b", "a\nb", "a\tb", "\u{7f}", "\u{85}",
    ] {
        let mut v = valid(CommandType::Scs);
        v["unit"] = json!(bad);
        let e = check(&v).unwrap_err();
        assert_eq!(e.reason(), Reason::InvalidUnit, "{bad:?}");
        assert_eq!(e.field(), Some("unit"));
    }
    let mut v = valid(CommandType::Scs);
    v["unit"] = json!("u".repeat(129));
    assert_eq!(check(&v), Err(CommandError::Unit(UnitError::TooLong(128))));
    v["unit"] = json!("u".repeat(128));
    assert!(check(&v).is_ok());
    v["unit"] = json!(7);
    assert_eq!(check(&v).unwrap_err().field(), Some("unit"));
    // Characters that are fine in a level pass: spaces, `$` inside, UTF-8.
    for good in ["MS500 01", "a$b", "设备-1", "a.b_c"] {
        assert_eq!(check_unit(good, 128), Ok(()), "{good:?}");
    }
}

#[test]
fn the_topic_template_takes_the_unit() {
    assert_eq!(
        topic("/service/ms500/{unit}/socket", UNIT),
        "/service/ms500/MS500-H090-EP-2549-0038/socket"
    );
}

#[test]
fn replies_are_one_json_line() {
    let ok = reply(&Ok("/service/ms500/u/socket".to_string()));
    assert_eq!(ok, b"{\"ok\":true,\"topic\":\"/service/ms500/u/socket\"}\n");
    let err = reply(&Err(CommandError::Missing { field: "md5" }));
    let v: Value = serde_json::from_slice(&err).unwrap();
    assert_eq!(
        v,
        json!({"ok": false, "error": "missing field md5", "field": "md5"})
    );
    assert_eq!(err.iter().filter(|&&b| b == b'\n').count(), 1);
    let err = reply(&Err(CommandError::NotObject));
    let v: Value = serde_json::from_slice(&err).unwrap();
    assert_eq!(v["field"], Value::Null);
}
