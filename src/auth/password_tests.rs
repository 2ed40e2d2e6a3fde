use super::*;

/// Written by `mosquitto_passwd -b -c` (mosquitto 2.0): user alice,
/// password "secret".
const MOSQUITTO_7: &str = "alice:$7$101$fWcz3ZIazCmPS96M$QPQuO7fiu8nvrmAL9nv1R49JEJcNJxksYWR2PcI17zBd01C1zxcCPfhN/FsNiqsdYmpd7z8oqADYMyRW/vxwNA==";
/// Written by `mosquitto_passwd -H sha512 -b`: user bob, password "hunter2".
const MOSQUITTO_6: &str = "bob:$6$L02ZwJIkM4xLtmMR$y8FTZj/OrEyvIoKE3Y+p3EyEFvTVXkWyPWFsJz4yHxutwbJ6ghODudIWubx1xYSnVRrbLRp/SznoovJM4Guz6w==";

#[test]
fn mosquitto_hashes_verify() {
    let file = PasswordFile::parse(&format!("# users\n{MOSQUITTO_7}\n{MOSQUITTO_6}\n")).unwrap();
    assert_eq!(file.len(), 2);
    assert!(file.get("alice").unwrap().verify(b"secret"));
    assert!(!file.get("alice").unwrap().verify(b"Secret"));
    assert!(file.get("bob").unwrap().verify(b"hunter2"));
    assert!(!file.get("bob").unwrap().verify(b"hunter"));
    assert!(file.get("carol").is_none());
}

#[test]
fn written_hash_reads_back_and_keeps_its_text() {
    let hash = StoredHash::pbkdf2(b"pw", [7; SALT_LEN], 1000);
    let text = hash.to_string();
    assert!(text.starts_with("$7$1000$"), "{text}");
    let back = StoredHash::parse(&text).unwrap();
    assert_eq!(back, hash);
    assert!(back.verify(b"pw"));
    assert!(!back.verify(b"pw "));
    // mosquitto's own line survives a read and write unchanged.
    let file = PasswordFile::parse(MOSQUITTO_7).unwrap();
    assert_eq!(file.to_text(), format!("{MOSQUITTO_7}\n"));
}

#[test]
fn set_and_remove_keep_order() {
    let mut file = PasswordFile::default();
    for user in ["a", "b", "c"] {
        file.set(user, StoredHash::pbkdf2(user.as_bytes(), [1; SALT_LEN], 1));
    }
    assert!(file.remove("a"));
    assert!(!file.remove("a"));
    file.set("b", StoredHash::pbkdf2(b"new", [1; SALT_LEN], 1));
    let text = file.to_text();
    let users: Vec<&str> = text.lines().map(|l| l.split(':').next().unwrap()).collect();
    assert_eq!(users, ["b", "c"]);
    let back = PasswordFile::parse(&text).unwrap();
    assert!(back.get("b").unwrap().verify(b"new"));
    assert!(back.get("c").unwrap().verify(b"c"));
}

#[test]
fn comments_and_lines_without_colon_are_skipped_as_mosquitto_does() {
    let file = PasswordFile::parse("#alice:x\nnot a user\n\n  \n").unwrap();
    assert!(file.is_empty());
}

#[test]
fn malformed_lines_name_their_line() {
    let cases: [(&str, PasswordFileError); 7] = [
        (":$6$x$y", PasswordFileError::EmptyUser { line: 1 }),
        ("# c\nu:plain", bad(2, HashError::UnknownKind)),
        ("u:$5$abc$def", bad(1, HashError::UnknownKind)),
        (
            "u:$7$0$fWcz3ZIazCmPS96M$QQ==",
            bad(1, HashError::BadIterations),
        ),
        (
            "u:$7$x$fWcz3ZIazCmPS96M$QQ==",
            bad(1, HashError::BadIterations),
        ),
        ("u:$6$fWcz$QQ==", bad(1, HashError::BadSalt)),
        ("u:$6$fWcz3ZIazCmPS96M$QQ==", bad(1, HashError::BadDigest)),
    ];
    for (text, want) in cases {
        assert_eq!(PasswordFile::parse(text).unwrap_err(), want, "{text:?}");
    }
    assert_eq!(
        PasswordFile::parse("u:$6$fWcz3ZIazCmPS96M").unwrap_err(),
        bad(1, HashError::MissingField)
    );
    let twice = format!("{MOSQUITTO_7}\n{MOSQUITTO_7}\n");
    assert_eq!(
        PasswordFile::parse(&twice).unwrap_err(),
        PasswordFileError::DuplicateUser {
            line: 2,
            user: "alice".to_string()
        }
    );
}

#[test]
fn peer_bytes_of_any_shape_only_fail_to_verify() {
    let hash = StoredHash::parse(MOSQUITTO_6.split_once(':').unwrap().1).unwrap();
    for password in [&b""[..], &[0xff, 0, 0xfe], &[b'x'; 70_000]] {
        assert!(!hash.verify(password));
    }
    assert!(!format!("{hash:?}").contains("y8FTZ"), "no digest in logs");
}

fn bad(line: usize, reason: HashError) -> PasswordFileError {
    PasswordFileError::BadHash { line, reason }
}
