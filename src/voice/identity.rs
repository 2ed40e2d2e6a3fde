//! Device identities and credentials: the MQTT client id of a xiaozhi
//! device, its password, and the token the gateway shows the backend
//! (protocol reference §3.2 and §7).
//!
//! # Rules
//!
//! 1. A client id containing `@@@` belongs to a device. It is
//!    `group@@@mac_@@@uuid` or, legacy, `group@@@mac_`; anything else is
//!    refused.
//! 2. `mac_` is six hex pairs joined by `_`, either case. It is kept verbatim
//!    for the reply topic `devices/p2p/<mac_>` and also given lower-case with
//!    colons (`aa:bb:..`), the form the backend and the dev-MAC list use.
//! 3. The group and the uuid are non-empty and have no control characters:
//!    the uuid goes into the backend's `client-id` HTTP header, where a CR or
//!    LF would split the header.
//! 4. Passwords are compared in constant time.
//!
//! # Panics
//!
//! Nothing here panics on any input: ids are arbitrary UTF-8 from the
//! network. Parts are found with `split("@@@")`, the MAC with `split('_')`
//! and byte checks, never by indexing into a `str`.

#![forbid(unsafe_code)]

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// What separates the parts of a device client id.
pub const SEPARATOR: &str = "@@@";

/// The backend token's client id when the device id has no uuid (GWX).
pub const DEFAULT_BACKEND_CLIENT_ID: &str = "default-client-id";

/// A parsed device client id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceId {
    /// Part 1, e.g. `GID_test`.
    pub group: String,
    /// The MAC lower-case with colons: `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    /// Part 2 verbatim, e.g. `AA_bb_cc_dd_ee_ff`: the reply topic's last level.
    pub mac_underscored: String,
    /// Part 3; `None` for the legacy two-part form.
    pub uuid: Option<String>,
}

impl DeviceId {
    /// The id the backend token is computed over: the uuid, or
    /// [`DEFAULT_BACKEND_CLIENT_ID`].
    pub fn backend_client_id(&self) -> &str {
        self.uuid.as_deref().unwrap_or(DEFAULT_BACKEND_CLIENT_ID)
    }
}

/// Why a device client id is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("client id has {0} `@@@`-separated parts, not 2 or 3")]
    PartCount(usize),
    #[error("group is empty")]
    EmptyGroup,
    #[error("uuid is empty")]
    EmptyUuid,
    #[error("MAC is not six hex pairs joined by `_`")]
    BadMac,
    #[error("client id contains a control character")]
    ControlChar,
}

/// Whether `id` is a device's client id (rule 1); others are ordinary MQTT
/// clients.
pub fn is_device_client_id(id: &str) -> bool {
    id.contains(SEPARATOR)
}

/// Parses a device client id (rules 1–3).
pub fn parse_client_id(id: &str) -> Result<DeviceId, IdError> {
    let mut parts = id.split(SEPARATOR);
    // `split` always yields at least one part.
    let group = parts.next().unwrap_or_default();
    let mac_underscored = parts.next();
    let uuid = parts.next();
    let extra = parts.count();
    let Some(mac_underscored) = mac_underscored else {
        return Err(IdError::PartCount(1));
    };
    if extra > 0 {
        return Err(IdError::PartCount(3 + extra));
    }
    if group.is_empty() {
        return Err(IdError::EmptyGroup);
    }
    if uuid.is_some_and(str::is_empty) {
        return Err(IdError::EmptyUuid);
    }
    if group
        .chars()
        .chain(uuid.unwrap_or_default().chars())
        .any(char::is_control)
    {
        return Err(IdError::ControlChar);
    }
    Ok(DeviceId {
        group: group.to_owned(),
        mac: mac_with_colons(mac_underscored)?,
        mac_underscored: mac_underscored.to_owned(),
        uuid: uuid.map(str::to_owned),
    })
}

/// `aa_BB_cc_dd_ee_ff` → `aa:bb:cc:dd:ee:ff`, or `BadMac`.
fn mac_with_colons(mac_underscored: &str) -> Result<String, IdError> {
    let mut out = String::with_capacity(17);
    let mut pairs = 0;
    for pair in mac_underscored.split('_') {
        let is_pair = pair.len() == 2 && pair.bytes().all(|b| b.is_ascii_hexdigit());
        if !is_pair || pairs == 6 {
            return Err(IdError::BadMac);
        }
        if pairs > 0 {
            out.push(':');
        }
        out.push_str(&pair.to_ascii_lowercase());
        pairs += 1;
    }
    if pairs != 6 {
        return Err(IdError::BadMac);
    }
    Ok(out)
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> HmacSha256 {
    // HMAC takes keys of any length; the error case does not exist for it.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    for part in parts {
        mac.update(part);
    }
    mac
}

/// A device's MQTT password: standard base64 (padded) of
/// HMAC-SHA256(key, `client_id|username`).
pub fn password(key: &[u8], client_id: &str, username: &str) -> String {
    let mac = hmac_sha256(key, &[client_id.as_bytes(), b"|", username.as_bytes()]);
    STANDARD.encode(mac.finalize().into_bytes())
}

/// Whether `password` is [`password`]`(key, client_id, username)`, compared
/// in constant time on the decoded MAC.
pub fn check_password(key: &[u8], client_id: &str, username: &str, password: &[u8]) -> bool {
    // 32 bytes encode to 44 characters; anything else cannot match, and this
    // bounds the decoding work a peer can cause.
    if password.len() != 44 {
        return false;
    }
    let Ok(tag) = STANDARD.decode(password) else {
        return false;
    };
    hmac_sha256(key, &[client_id.as_bytes(), b"|", username.as_bytes()])
        .verify_slice(&tag)
        .is_ok()
}

/// The username the gateway's tools give a device: base64 of `{"ip":"<ip>"}`,
/// byte for byte what `JSON.stringify` writes.
pub fn username_for_ip(ip: &str) -> String {
    let json = serde_json::json!({ "ip": ip }).to_string();
    STANDARD.encode(json)
}

/// The bearer token for the backend WebSocket when a shared secret is set:
/// base64url without padding of HMAC-SHA256(secret,
/// `<client_id>|<mac>|<unix_sec>`), then `.` and `unix_sec` (the backend's
/// `core/auth.py`). `client_id` is [`DeviceId::backend_client_id`], `mac`
/// the colon form.
pub fn backend_token(secret: &[u8], client_id: &str, mac: &str, unix_sec: u64) -> String {
    let unix_sec = unix_sec.to_string();
    let parts: [&[u8]; 5] = [
        client_id.as_bytes(),
        b"|",
        mac.as_bytes(),
        b"|",
        unix_sec.as_bytes(),
    ];
    let tag = hmac_sha256(secret, &parts).finalize().into_bytes();
    format!("{}.{unix_sec}", URL_SAFE_NO_PAD.encode(tag))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ID: &str = "GID_test@@@aa_bb_cc_dd_ee_ff@@@0f4b1a9c-3c3e-4b8e-9f7a-2d1c5e6f7a8b";

    #[test]
    fn three_part_id() {
        let id = parse_client_id(ID).unwrap();
        assert_eq!(
            id,
            DeviceId {
                group: "GID_test".into(),
                mac: "aa:bb:cc:dd:ee:ff".into(),
                mac_underscored: "aa_bb_cc_dd_ee_ff".into(),
                uuid: Some("0f4b1a9c-3c3e-4b8e-9f7a-2d1c5e6f7a8b".into()),
            }
        );
        assert_eq!(
            id.backend_client_id(),
            "0f4b1a9c-3c3e-4b8e-9f7a-2d1c5e6f7a8b"
        );
    }

    #[test]
    fn two_part_id_and_upper_case_mac() {
        let id = parse_client_id("GID_x@@@A0_b1_C2_d3_E4_f5").unwrap();
        assert_eq!(id.mac, "a0:b1:c2:d3:e4:f5");
        assert_eq!(id.mac_underscored, "A0_b1_C2_d3_E4_f5");
        assert_eq!(id.uuid, None);
        assert_eq!(id.backend_client_id(), DEFAULT_BACKEND_CLIENT_ID);
    }

    #[test]
    fn device_detection() {
        assert!(is_device_client_id(ID));
        assert!(is_device_client_id("@@@"));
        assert!(!is_device_client_id("sensor-42"));
        assert!(!is_device_client_id("a@@b"));
    }

    #[test]
    fn refused_ids() {
        let cases = [
            ("plain", IdError::PartCount(1)),
            ("", IdError::PartCount(1)),
            ("g@@@aa_bb_cc_dd_ee_ff@@@u@@@x", IdError::PartCount(4)),
            ("g@@@aa_bb_cc_dd_ee_ff@@@u@@@x@@@y", IdError::PartCount(5)),
            ("@@@aa_bb_cc_dd_ee_ff", IdError::EmptyGroup),
            ("@@@", IdError::EmptyGroup),
            ("g@@@aa_bb_cc_dd_ee_ff@@@", IdError::EmptyUuid),
            ("g@@@", IdError::BadMac),
            ("g@@@aa:bb:cc:dd:ee:ff", IdError::BadMac),
            ("g@@@aa_bb_cc_dd_ee", IdError::BadMac),
            ("g@@@aa_bb_cc_dd_ee_ff_00", IdError::BadMac),
            ("g@@@aa_bb_cc_dd_ee_f", IdError::BadMac),
            ("g@@@aa_bb_cc_dd_ee_fff", IdError::BadMac),
            ("g@@@aa_bb_cc_dd_ee_fg", IdError::BadMac),
            ("g@@@aa_bb_cc_dd_ee_ff_", IdError::BadMac),
            ("g@@@_aa_bb_cc_dd_ee_ff", IdError::BadMac),
            ("g@@@aa__bb_cc_dd_ee_ff", IdError::BadMac),
            ("g@@@aabbccddeeff", IdError::BadMac),
            ("g@@@aa_bb_cc_dd_ee_\u{ff}", IdError::BadMac),
            (
                "g@@@aa_bb_cc_dd_ee_ff@@@u\r\nX-Evil: 1",
                IdError::ControlChar,
            ),
            ("g\n@@@aa_bb_cc_dd_ee_ff", IdError::ControlChar),
            ("g@@@aa_bb_cc_dd_ee_ff@@@u\0", IdError::ControlChar),
            // `@@@@` splits as `@@@` + `@`: the next part starts with `@`.
            ("g@@@@aa_bb_cc_dd_ee_ff", IdError::BadMac),
        ];
        for (id, err) in cases {
            assert_eq!(parse_client_id(id), Err(err), "{id:?}");
        }
    }

    #[test]
    fn multi_byte_chars_at_every_position() {
        // U+FEFF (3 bytes) and é (2 bytes) inserted at every char boundary of
        // a valid id: never a panic; accepted only inside the group or uuid.
        for ch in ['\u{feff}', 'é', '😀'] {
            for (at, _) in ID.char_indices().chain([(ID.len(), ' ')]) {
                let mut id = ID.to_owned();
                id.insert(at, ch);
                let parsed = parse_client_id(&id);
                let group_end = ID.find(SEPARATOR).unwrap();
                let uuid_start = ID.rfind(SEPARATOR).unwrap() + SEPARATOR.len();
                let in_free_text = at <= group_end || at >= uuid_start;
                assert_eq!(parsed.is_ok(), in_free_text, "{id:?}");
            }
        }
        assert_eq!(
            parse_client_id("\u{feff}@@@aa_bb_cc_dd_ee_ff").map(|d| d.group),
            Ok("\u{feff}".to_owned())
        );
    }

    // Vectors from Python:
    //   base64.b64encode(hmac.new(key, (cid + "|" + user).encode(),
    //                    hashlib.sha256).digest())
    #[test]
    fn password_vectors() {
        let user = username_for_ip("222.222.222.222");
        assert_eq!(user, "eyJpcCI6IjIyMi4yMjIuMjIyLjIyMiJ9");
        let pw = password(b"test-signature-key", ID, &user);
        assert_eq!(pw, "c9hXZvYR9LRY9DX6WfoNO5QyvieE+CgmToXAXLWUSK4=");
        assert!(check_password(
            b"test-signature-key",
            ID,
            &user,
            pw.as_bytes()
        ));
        assert_eq!(
            password(
                b"k",
                "GID_x@@@a0_b1_c2_d3_e4_f5",
                "eyJpcCI6IjEuMi4zLjQifQ=="
            ),
            "I76gyYolHtE6aUUCzhEpQD8D2e2w6Ib3ghkIAM6Iujo="
        );
        assert_eq!(
            password(b"", "", ""),
            "sW6FFS345bOXQiaMF51wJl/RVHY1Hir4f+x7D0ubfSA="
        );
    }

    #[test]
    fn check_password_refusals() {
        let key = b"test-signature-key";
        let user = username_for_ip("1.2.3.4");
        let pw = password(key, ID, &user);
        assert!(check_password(key, ID, &user, pw.as_bytes()));
        assert!(!check_password(b"other", ID, &user, pw.as_bytes()));
        assert!(!check_password(key, ID, "other", pw.as_bytes()));
        assert!(!check_password(key, ID, &user, b""));
        assert!(!check_password(key, ID, &user, &pw.as_bytes()[..43]));
        assert!(!check_password(
            key,
            ID,
            &user,
            pw.trim_end_matches('=').as_bytes()
        ));
        assert!(!check_password(key, ID, &user, &[0xff; 44]));
        let mut flipped = pw.clone().into_bytes();
        flipped[0] = if flipped[0] == b'A' { b'B' } else { b'A' };
        assert!(!check_password(key, ID, &user, &flipped));
    }

    #[test]
    fn username_escapes_json() {
        // Python: base64.b64encode(json.dumps({"ip": s}, separators=(",", ":"),
        //                          ensure_ascii=False).encode())
        assert_eq!(username_for_ip("1.2.3.4"), "eyJpcCI6IjEuMi4zLjQifQ==");
        assert_eq!(username_for_ip("a\"b\\"), "eyJpcCI6ImFcImJcXCJ9");
        assert_eq!(username_for_ip("::1"), "eyJpcCI6Ijo6MSJ9");
    }

    // Python (core/auth.py `_sign`):
    //   base64.urlsafe_b64encode(hmac.new(secret, f"{cid}|{mac}|{ts}".encode(),
    //                            hashlib.sha256).digest()).decode().rstrip("=")
    #[test]
    fn backend_token_vectors() {
        assert_eq!(
            backend_token(
                b"server-secret",
                "0f4b1a9c-3c3e-4b8e-9f7a-2d1c5e6f7a8b",
                "aa:bb:cc:dd:ee:ff",
                1_767_225_600
            ),
            "pPAX4PRlwtzBBLVCh9Fpr4p2AEnmTOPntF0Y48Xm6zg.1767225600"
        );
        assert_eq!(
            backend_token(b"s", DEFAULT_BACKEND_CLIENT_ID, "a0:b1:c2:d3:e4:f5", 0),
            "_bV50yQw8BY1WPuL_eJw_OOzKLYLzVa3axwDkPZRlTk.0"
        );
    }

    proptest! {
        #[test]
        fn parse_never_panics(id in "\\PC*") {
            let _ = parse_client_id(&id);
        }

        #[test]
        fn parse_never_panics_near_valid(
            group in "[^@]{0,4}",
            mac in "[0-9a-fA-F_:\u{feff}é]{0,20}",
            uuid in proptest::option::of(".{0,6}"),
        ) {
            let id = match &uuid {
                Some(u) => format!("{group}@@@{mac}@@@{u}"),
                None => format!("{group}@@@{mac}"),
            };
            if let Ok(parsed) = parse_client_id(&id) {
                prop_assert_eq!(parsed.mac.len(), 17);
                prop_assert_eq!(parsed.mac_underscored, mac);
            }
        }

        #[test]
        fn password_round_trips(key: Vec<u8>, client_id in ".{0,40}", user in ".{0,40}") {
            let pw = password(&key, &client_id, &user);
            prop_assert!(check_password(&key, &client_id, &user, pw.as_bytes()));
        }
    }
}
