//! MQTT over TLS, as mosquitto's clients and a rustls client meet it:
//! round trips, client certificates required, refused handshakes counted
//! by reason, the handshake deadline, hand-off of TLS sessions between
//! shards, and users and ACL over TLS (the certificate's identity as the
//! user name).

mod transport_support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use transport_support::*;

fn tls_server(shards: usize, pki: &Pki, extra: &str) -> Server {
    let port = free_port();
    Server::start(shards, &pki.tls_section(port, extra), port)
}

#[test]
fn mosquitto_clients_round_trip_over_tls() {
    let pki = Pki::new("tls-round-trip");
    let server = tls_server(2, &pki, "");
    let mut sub_args = mosquitto_tls_args(&pki, server.tls, None);
    sub_args.extend(
        [
            "-d", "-t", "tls/rt", "-q", "1", "-C", "1", "-W", "15", "-i", "rt-sub",
        ]
        .map(String::from),
    );
    // Line-buffered, so the SUBACK line is seen when it happens.
    let mut sub = Command::new("stdbuf")
        .arg("-oL")
        .arg("mosquitto_sub")
        .args(&sub_args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mosquitto_sub runs");
    // -d prints the SUBACK: publish only once the subscription stands.
    let mut lines = BufReader::new(sub.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    loop {
        let line = lines.next().expect("mosquitto_sub output").unwrap();
        seen.push(line.clone());
        if line.contains("SUBACK") {
            break;
        }
    }
    let mut pub_args = mosquitto_tls_args(&pki, server.tls, None);
    pub_args
        .extend(["-t", "tls/rt", "-q", "1", "-m", "over-tls", "-i", "rt-pub"].map(String::from));
    let out = mosquitto_pub(&pub_args);
    assert!(out.status.success(), "mosquitto_pub: {out:?}");
    let received: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(
        sub.wait().unwrap().success(),
        "mosquitto_sub: {seen:?} {received:?}"
    );
    assert!(
        received.iter().any(|l| l == "over-tls"),
        "payload not received: {received:?}"
    );
    assert!(server.metric("shardmq_tls_handshakes_total") >= 2);
}

#[test]
fn required_client_certificates_refuse_missing_untrusted_and_expired() {
    let pki = Pki::new("tls-mtls");
    let server = tls_server(1, &pki, "client_certs = \"required\"");
    // The good certificate is served.
    let mut args = mosquitto_tls_args(&pki, server.tls, Some("client"));
    args.extend(["-t", "mtls/ok", "-m", "x", "-q", "1"].map(String::from));
    let out = mosquitto_pub(&args);
    assert!(out.status.success(), "good certificate refused: {out:?}");

    for (client, case) in [
        (None, "none"),
        (Some("untrusted"), "untrusted"),
        (Some("expired"), "expired"),
    ] {
        let before = server.tls_failures("client_certificate");
        let mut args = mosquitto_tls_args(&pki, server.tls, client);
        args.extend(["-t", "mtls/no", "-m", "x", "-q", "1"].map(String::from));
        let out = mosquitto_pub(&args);
        assert!(!out.status.success(), "{case}: published: {out:?}");
        server.wait_metric(
            "shardmq_tls_handshake_failures_total{reason=\"client_certificate\"}",
            before + 1,
        );
        // And a client that would ignore the refusal gets no CONNACK.
        match tls_connect(&pki, server.tls, client) {
            Err(_) => {}
            Ok(mut s) => {
                let _ = s.write_all(&connect_packet("sneaky"));
                assert!(
                    read_packet(&mut s).is_err(),
                    "{case}: CONNACK after refusal"
                );
            }
        }
    }
    // Logged, but at debug only: a scanner must not flood the log.
    let output = server.output();
    let logged: Vec<&str> = output
        .lines()
        .filter(|l| l.contains("TLS handshake failed"))
        .collect();
    assert!(!logged.is_empty());
    assert!(logged.iter().all(|l| l.contains("DEBUG")), "{logged:?}");
}

#[test]
fn tls12_client_against_tls13_only_listener_is_refused() {
    let pki = Pki::new("tls-13-only");
    let server = tls_server(1, &pki, "tls13_only = true");
    // mosquitto's `--tls-version tlsv1.2` only sets a floor, so the TLS 1.2
    // client here is rustls limited to 1.2.
    assert!(tls_connect_with(&pki, server.tls, None, TLS12_ONLY).is_err());
    server.wait_metric(
        "shardmq_tls_handshake_failures_total{reason=\"incompatible\"}",
        1,
    );
    // TLS 1.3 still is served, mosquitto's client included.
    let mut args = mosquitto_tls_args(&pki, server.tls, None);
    args.extend(["--tls-version", "tlsv1.3", "-t", "v/13", "-m", "x"].map(String::from));
    assert!(mosquitto_pub(&args).status.success());
    // Without the switch, TLS 1.2 is served.
    let open = tls_server(1, &pki, "");
    let mut s = tls_connect_with(&pki, open.tls, None, TLS12_ONLY).expect("TLS 1.2");
    assert_eq!(
        s.conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    s.write_all(&connect_packet("tls12")).unwrap();
    let (header, body) = read_packet(&mut s).unwrap();
    assert_eq!([header, 2, body[0], body[1]], CONNACK_OK);
}

#[test]
fn plaintext_mqtt_on_the_tls_port_is_closed_without_harm_to_others() {
    let pki = Pki::new("tls-plaintext");
    let server = tls_server(1, &pki, "");
    let mut established = tls_mqtt(&pki, server.tls, None, "bystander");
    let mut plain = TcpStream::connect(("127.0.0.1", server.tls)).unwrap();
    plain.set_read_timeout(Some(WAIT)).unwrap();
    plain.write_all(&connect_packet("plain")).unwrap();
    assert!(
        closed_within_wait(&mut plain),
        "plaintext connection left open"
    );
    server.wait_metric(
        "shardmq_tls_handshake_failures_total{reason=\"protocol\"}",
        1,
    );
    // The established TLS connection still serves: SUBSCRIBE, SUBACK.
    established
        .write_all(&subscribe_packet(7, "still/here"))
        .unwrap();
    let (header, body) = read_packet(&mut established).unwrap();
    assert_eq!((header, body), (0x90, vec![0, 7, 1]));
    // And new ones are accepted.
    let _again = tls_mqtt(&pki, server.tls, None, "after-plain");
}

#[test]
fn a_handshake_that_never_completes_is_closed_at_its_deadline() {
    let pki = Pki::new("tls-deadline");
    // The CONNECT deadline is far off: a close within the wait can only be
    // the handshake deadline's.
    let port = free_port();
    let toml = format!(
        "[mqtt]\nconnect_timeout_s = 600\n{}",
        pki.tls_section(port, "handshake_timeout_s = 1")
    );
    let server = Server::start(1, &toml, port);
    let started = Instant::now();
    let mut silent = TcpStream::connect(("127.0.0.1", server.tls)).unwrap();
    silent.set_read_timeout(Some(WAIT)).unwrap();
    assert!(closed_within_wait(&mut silent), "silent socket left open");
    assert!(started.elapsed() < Duration::from_secs(600));
    server.wait_metric(
        "shardmq_tls_handshake_failures_total{reason=\"timeout\"}",
        1,
    );
    // The handshake done, the CONNECT has its own deadline (600 s here), so
    // a client that sends its CONNECT late is still served.
    let mut late = tls_connect(&pki, server.tls, None).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    late.write_all(&connect_packet("late")).unwrap();
    let (header, body) = read_packet(&mut late).unwrap();
    assert_eq!([header, 2, body[0], body[1]], CONNACK_OK);
}

#[test]
fn identity_becomes_the_username() {
    let pki = Pki::new("tls-identity");
    let server = tls_server(
        1,
        &pki,
        "client_certs = \"required\"\nuse_identity_as_username = true",
    );
    let _cn = tls_mqtt(&pki, server.tls, Some("client"), "id-cn");
    server.wait_log("client_id=id-cn");
    let line = server
        .output()
        .lines()
        .find(|l| l.contains("client_id=id-cn"))
        .unwrap()
        .to_string();
    assert!(line.contains("username=Some(\"device-1\")"), "{line}");
    let _san = tls_mqtt(&pki, server.tls, Some("san-only"), "id-san");
    server.wait_log("client_id=id-san");
    let line = server
        .output()
        .lines()
        .find(|l| l.contains("client_id=id-san"))
        .unwrap()
        .to_string();
    assert!(
        line.contains("username=Some(\"meter-9.example\")"),
        "{line}"
    );
}

#[test]
fn tls_sessions_are_handed_to_the_owner_shard() {
    let pki = Pki::new("tls-handoff");
    let server = tls_server(2, &pki, "");
    let mut subscriber = tls_mqtt(&pki, server.tls, None, "handoff-sub");
    subscriber
        .write_all(&subscribe_packet(1, "handoff/#"))
        .unwrap();
    assert_eq!(read_packet(&mut subscriber).unwrap().0, 0x90);
    // Sixteen ids spread over both shards; whichever shard accepts, the
    // owner runs the session, so some of these cross with their TLS state
    // (none crossing: one chance in 65,536).
    let mut publishers: Vec<TlsClient> = (0..16)
        .map(|i| tls_mqtt(&pki, server.tls, None, &format!("handoff-pub-{i}")))
        .collect();
    for (i, publisher) in publishers.iter_mut().enumerate() {
        let payload = format!("from-{i}");
        publisher
            .write_all(&publish_qos1(
                &format!("handoff/{i}"),
                1,
                payload.as_bytes(),
            ))
            .unwrap();
        let (header, body) = read_packet(publisher).unwrap();
        assert_eq!((header, body), (0x40, vec![0, 1]), "PUBACK for {i}");
    }
    let mut got = Vec::new();
    while got.len() < 16 {
        let (header, body) = read_packet(&mut subscriber).unwrap();
        assert_eq!(header & 0xf0, 0x30);
        let topic_len = usize::from(u16::from_be_bytes([body[0], body[1]]));
        let payload = &body[2 + topic_len + 2..];
        got.push(String::from_utf8_lossy(payload).into_owned());
        let pkid = [body[2 + topic_len], body[3 + topic_len]];
        subscriber.write_all(&[0x40, 2, pkid[0], pkid[1]]).unwrap();
    }
    got.sort();
    let mut want: Vec<String> = (0..16).map(|i| format!("from-{i}")).collect();
    want.sort();
    assert_eq!(got, want);
    let moved = server.handed_off((0..16).map(|i| format!("handoff-pub-{i}")));
    assert!(moved > 0, "no TLS session crossed shards");
}

#[test]
fn reload_swaps_certificates_without_dropping_live_connections() {
    let old = Pki::new("tls-reload-old");
    let new = Pki::new("tls-reload-new");
    let toml = format!(
        "[server]\nshards = 1\npin_cores = false\n[mqtt]\nlisten = \"127.0.0.1:0\"\n{}",
        old.tls_section(0, "")
    );
    let config = shardmq::config::Config::from_toml(&toml).unwrap();
    config.validate().unwrap();
    let mut settings = config.shard_settings();
    settings.tls = config.tls_listener().unwrap();
    let server = shardmq::shard::Server::start(settings, Vec::new()).unwrap();
    let port = server.tls_listen.unwrap().port();
    let mut live = tls_mqtt(&old, port, None, "before-reload");

    // A bad file: refused, the old certificate stays in force.
    let mut broken = config.tls.clone();
    broken.key_file = new.path("absent.key");
    let error = server.reload_tls(&broken).unwrap_err().to_string();
    assert!(error.contains("absent.key"), "{error}");
    let _still_old = tls_mqtt(&old, port, None, "after-bad-reload");

    // Good files: new connections get the new certificate.
    let fresh = shardmq::config::Config::from_toml(&format!(
        "[server]\nshards = 1\n{}",
        new.tls_section(0, "")
    ))
    .unwrap();
    server.reload_tls(&fresh.tls).unwrap();
    assert!(
        tls_connect(&old, port, None).is_err(),
        "old CA still served"
    );
    let _new = tls_mqtt(&new, port, None, "after-reload");
    // The connection made before is still served, on its own session.
    live.write_all(&subscribe_packet(3, "reload/#")).unwrap();
    assert_eq!(read_packet(&mut live).unwrap(), (0x90, vec![0, 3, 1]));
}

/// mosquitto_passwd's `$7$` line for alice / secret.
const ALICE: &str = "alice:$7$101$fWcz3ZIazCmPS96M$QPQuO7fiu8nvrmAL9nv1R49JEJcNJxksYWR2PcI17zBd01C1zxcCPfhN/FsNiqsdYmpd7z8oqADYMyRW/vxwNA==";

/// A CONNECT with a user name and password.
fn connect_with(id: &str, user: &str, password: &str) -> Vec<u8> {
    fn put(body: &mut Vec<u8>, s: &[u8]) {
        body.extend_from_slice(&(s.len() as u16).to_be_bytes());
        body.extend_from_slice(s);
    }
    let mut body = Vec::new();
    put(&mut body, b"MQTT");
    body.extend_from_slice(&[4, 0xc2, 0, 60]);
    for field in [id, user, password] {
        put(&mut body, field.as_bytes());
    }
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend_from_slice(&body);
    packet
}

fn auth_files(pki: &Pki) -> String {
    std::fs::write(pki.dir.join("passwd"), format!("{ALICE}\n")).unwrap();
    std::fs::write(
        pki.dir.join("acl"),
        "user device-1\ntopic readwrite devices/1/#\nuser alice\ntopic read alice/#\n",
    )
    .unwrap();
    format!(
        "[auth]\npassword_file = \"{}\"\nacl_file = \"{}\"\n",
        pki.path("passwd"),
        pki.path("acl")
    )
}

/// The CONNACK's return code after a TLS handshake and `connect`.
fn tls_connack(pki: &Pki, port: u16, client: Option<&str>, connect: &[u8]) -> (TlsClient, u8) {
    let mut s = tls_connect(pki, port, client).expect("TLS handshake");
    s.write_all(connect).unwrap();
    let (header, body) = read_packet(&mut s).expect("CONNACK");
    assert_eq!(header, 0x20);
    (s, body[1])
}

#[test]
fn tls_connections_meet_the_password_file() {
    // [MQTT-3.1.4-2]/[MQTT-3.2.2-5]: the server may refuse a CONNECT with a
    // non-zero return code, then closes.
    let pki = Pki::new("tls-auth");
    let port = free_port();
    let toml = format!("{}{}", pki.tls_section(port, ""), auth_files(&pki));
    let server = Server::start(1, &toml, port);
    let (_ok, rc) = tls_connack(&pki, port, None, &connect_with("a1", "alice", "secret"));
    assert_eq!(rc, 0, "good password");
    let (mut bad, rc) = tls_connack(&pki, port, None, &connect_with("a2", "alice", "wrong"));
    assert_eq!(rc, 4, "wrong password: bad user name or password");
    assert!(closed_within_wait(&mut bad));
    let (_, rc) = tls_connack(&pki, port, None, &connect_packet("anon"));
    assert_eq!(rc, 5, "anonymous with a password file: not authorized");
    assert!(server.metric("shardmq_auth_bad_credentials_total") >= 1);
}

#[test]
fn a_certificate_identity_needs_no_password_and_gets_its_acl() {
    let pki = Pki::new("tls-auth-identity");
    let port = free_port();
    let toml = format!(
        "{}{}",
        pki.tls_section(
            port,
            "client_certs = \"required\"\nuse_identity_as_username = true"
        ),
        auth_files(&pki)
    );
    let _server = Server::start(1, &toml, port);
    // device-1 is in no password file, and sends no credentials: the
    // certificate (CN device-1) is the credential, as in mosquitto.
    let (mut device, rc) = tls_connack(&pki, port, Some("client"), &connect_packet("dev"));
    assert_eq!(rc, 0, "certified identity refused");
    // Its ACL is device-1's, whatever the CONNECT said [MQTT-3.8.4-3].
    device
        .write_all(&subscribe_packet(1, "devices/1/#"))
        .unwrap();
    assert_eq!(read_packet(&mut device).unwrap(), (0x90, vec![0, 1, 1]));
    device.write_all(&subscribe_packet(2, "alice/#")).unwrap();
    assert_eq!(read_packet(&mut device).unwrap(), (0x90, vec![0, 2, 0x80]));
    // A password sent along changes nothing: it is not checked.
    let (_, rc) = tls_connack(
        &pki,
        port,
        Some("client"),
        &connect_with("dev2", "alice", "wrong"),
    );
    assert_eq!(rc, 0, "the certificate's identity replaces the user name");
}

#[test]
fn sighup_reloads_the_certificate_files_and_keeps_them_on_a_bad_one() {
    let old = Pki::new("tls-sighup-old");
    let new = Pki::new("tls-sighup-new");
    // The files the server is configured with; replaced under it.
    let served = temp_dir("tls-sighup-served");
    let serve = |from: &Pki| {
        for file in ["server.pem", "server.key", "ca.pem"] {
            std::fs::copy(from.dir.join(file), served.join(file)).unwrap();
        }
    };
    serve(&old);
    let port = free_port();
    let path = |file: &str| served.join(file).display().to_string();
    let toml = format!(
        "[tls]\nlisten = \"127.0.0.1:{port}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n\
         ca_file = \"{}\"\n",
        path("server.pem"),
        path("server.key"),
        path("ca.pem"),
    );
    let server = Server::start(1, &toml, port);
    let mut live = tls_mqtt(&old, port, None, "before-sighup");
    let hup = || {
        let pid = libc::pid_t::try_from(server.pid()).unwrap();
        // SAFETY: kill(2) with a valid signal number; the pid is the child
        // this test started, still running.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    };

    // A key that is not PEM: one warning, the old certificate stays.
    std::fs::write(served.join("server.key"), "not a key\n").unwrap();
    hup();
    server.wait_log("TLS reload refused");
    let _still_old = tls_mqtt(&old, port, None, "after-bad-sighup");

    // The new files: new connections get the new certificate.
    serve(&new);
    hup();
    server.wait_log("TLS certificates reloaded");
    assert!(
        tls_connect(&old, port, None).is_err(),
        "old certificate still served"
    );
    let _new = tls_mqtt(&new, port, None, "after-sighup");
    // The connection made before the reloads is still served.
    live.write_all(&subscribe_packet(4, "sighup/#")).unwrap();
    assert_eq!(read_packet(&mut live).unwrap(), (0x90, vec![0, 4, 1]));
    let warnings = server
        .output()
        .lines()
        .filter(|l| l.contains("TLS reload refused"))
        .count();
    assert_eq!(warnings, 1, "one warning line per bad reload");
    let _ = std::fs::remove_dir_all(&served);
}

#[test]
fn the_tls_listener_has_its_own_max_packet_size() {
    let pki = Pki::new("tls-max-packet");
    let server = tls_server(1, &pki, "[mqtt]\ntls_max_packet_size = 64\n");
    let big = publish_qos1("big", 1, &[7u8; 100]);
    // The plain listener keeps `max_packet_size` (1 MiB).
    let mut tcp = TcpStream::connect(("127.0.0.1", server.mqtt)).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    tcp.write_all(&connect_packet("plain-big")).unwrap();
    assert_eq!(read_packet(&mut tcp).unwrap().0, 0x20);
    tcp.write_all(&big).unwrap();
    assert_eq!(read_packet(&mut tcp).unwrap(), (0x40, vec![0, 1]), "PUBACK");
    // Past 64 bytes on the TLS listener: closed, nothing acknowledged.
    let mut tls = tls_mqtt(&pki, server.tls, None, "tls-big");
    tls.write_all(&big).unwrap();
    assert!(closed_within_wait(&mut tls), "{}", server.output());
    server.wait_metric("shardmq_limit_packet_too_large_total", 1);
}
