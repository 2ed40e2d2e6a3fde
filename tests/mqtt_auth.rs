//! Users and ACL end to end: a password file written by the real
//! `mosquitto_passwd`, CONNACK 4 and 5, the per-address failure budget, an
//! ACL allow/deny matrix (roles, `%c`/`%u` patterns, retained messages),
//! reload on SIGHUP and the counters on `/metrics`.

#[macro_use]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

shard_tests!(credentials_decide_the_connack, acl_matrix);

/// A fresh directory for one test's files.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("shardmq-auth-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Adds `user` to `file` with the real `mosquitto_passwd` (installed here
/// and in CI: its absence is a failure, not a skip). `sha512` writes the
/// older `$6$` hash instead of the default `$7$`.
fn mosquitto_passwd(file: &Path, user: &str, password: &str, sha512: bool) {
    let mut cmd = Command::new("mosquitto_passwd");
    if sha512 {
        cmd.args(["-H", "sha512"]);
    }
    if !file.exists() {
        cmd.arg("-c");
    }
    let status = cmd
        .arg("-b")
        .arg(file)
        .arg(user)
        .arg(password)
        .status()
        .expect("mosquitto_passwd must be installed (Debian package mosquitto)");
    assert!(status.success(), "mosquitto_passwd failed");
}

/// A CONNECT with a user name and password (either may be absent).
fn connect_packet(id: &str, user: Option<&str>, password: Option<&str>) -> Vec<u8> {
    let mut flags = 0x02u8;
    let mut body = Vec::new();
    put(&mut body, b"MQTT");
    body.push(4);
    if user.is_some() {
        flags |= 0x80;
    }
    if password.is_some() {
        flags |= 0x40;
    }
    body.push(flags);
    body.extend_from_slice(&60u16.to_be_bytes());
    put(&mut body, id.as_bytes());
    if let Some(u) = user {
        put(&mut body, u.as_bytes());
    }
    if let Some(p) = password {
        put(&mut body, p.as_bytes());
    }
    frame(0x10, &body)
}

fn put(buf: &mut Vec<u8>, s: &[u8]) {
    buf.extend_from_slice(&(s.len() as u16).to_be_bytes());
    buf.extend_from_slice(s);
}

/// Connects and returns the connection and the CONNACK return code.
async fn login(broker: &Broker, id: &str, user: Option<&str>, password: Option<&str>) -> (Raw, u8) {
    let mut raw = Raw::open(broker).await;
    raw.send(&connect_packet(id, user, password)).await;
    let ack = raw.read_packet().await;
    assert_eq!(ack.header, 0x20, "expected CONNACK, got {ack:?}");
    (raw, ack.body[1])
}

/// Connects and expects CONNACK 0.
async fn login_ok(broker: &Broker, id: &str, user: &str, password: &str) -> Raw {
    let (raw, code) = login(broker, id, Some(user), Some(password)).await;
    assert_eq!(code, 0, "{user} refused");
    raw
}

fn users(dir: &Path) -> PathBuf {
    let file = dir.join("passwd");
    mosquitto_passwd(&file, "api", "api-pw", false);
    mosquitto_passwd(&file, "node", "node-pw", true);
    mosquitto_passwd(&file, "admin", "admin-pw", false);
    file
}

fn config(passwd: &Path, acl: Option<&Path>, extra: &str) -> String {
    let mut text = format!(
        "[auth]\npassword_file = {:?}\n",
        passwd.display().to_string()
    );
    if let Some(acl) = acl {
        text.push_str(&format!("acl_file = {:?}\n", acl.display().to_string()));
    }
    text.push_str(extra);
    text
}

async fn credentials_decide_the_connack(shards: usize) {
    if shardmq_only() {
        return;
    }
    let dir = scratch(&format!("connack-{shards}"));
    let passwd = users(&dir);
    let broker = Broker::start_with(shards, &config(&passwd, None, "failures_max = 0\n"));
    // `$7$` (mosquitto 2.0's default) and `$6$` (`-H sha512`) both verify.
    let mut api = login_ok(&broker, "c-api", "api", "api-pw").await;
    api.ping().await;
    let mut node = login_ok(&broker, "c-node", "node", "node-pw").await;
    node.ping().await;
    // Wrong password, unknown user, no password: 4; then the server closes
    // the connection and the CONNACK's session present is 0
    // [MQTT-3.2.2-4] [MQTT-3.2.2-5].
    for (user, password) in [
        (Some("api"), Some("wrong")),
        (Some("mallory"), Some("api-pw")),
        (Some("api"), None),
    ] {
        let (mut raw, code) = login(&broker, "c-bad", user, password).await;
        assert_eq!(code, 4, "{user:?} {password:?}");
        raw.expect_closed().await;
    }
    // No user name while a password file is configured: 5.
    let (mut raw, code) = login(&broker, "c-anon", None, None).await;
    assert_eq!(code, 5);
    raw.expect_closed().await;
    drop(broker);
    // allow_anonymous = true lets it in again.
    let broker = Broker::start_with(shards, &config(&passwd, None, "allow_anonymous = true\n"));
    let (mut raw, code) = login(&broker, "c-anon", None, None).await;
    assert_eq!(code, 0);
    raw.ping().await;
}

const MATRIX_ACL: &str = "\
# Anonymous clients: nothing.
pattern readwrite clients/%c/#
pattern read users/%u/inbox

role api
topic write /meek/tasks/+/request
topic read /meek/tasks/+/status
topic write /meek/system/#

role analysis
topic read /meek/tasks/+/request
topic write /meek/tasks/+/status
topic read /meek/system/#

user api
roles api

user node
roles analysis
topic deny /meek/system/config

user admin
topic readwrite #
topic deny test/nosubscribe
";

async fn acl_matrix(shards: usize) {
    if shardmq_only() {
        return;
    }
    let dir = scratch(&format!("matrix-{shards}"));
    let passwd = users(&dir);
    let acl = dir.join("acl");
    std::fs::write(&acl, MATRIX_ACL).unwrap();
    let broker = Broker::start_with(shards, &config(&passwd, Some(&acl), ""));
    let mut api = login_ok(&broker, "api-1", "api", "api-pw").await;
    let mut node = login_ok(&broker, "n1", "node", "node-pw").await;
    let mut admin = login_ok(&broker, "root", "admin", "admin-pw").await;

    // Retained before anyone subscribes: the node may read the broadcast
    // but not the config.
    api.send(&publish("/meek/system/config", 1, 1, b"cfg"))
        .await;
    api.expect(&puback(1)).await;
    api.send(&retained("/meek/system/config", b"cfg")).await;
    api.send(&retained("/meek/system/broadcast", b"hello"))
        .await;
    api.ping().await;

    // SUBSCRIBE: each filter answered on its own, 0x80 where the ACL says
    // no [MQTT-3.8.4-5] [MQTT-3.9.3-1].
    node.subscribe(
        1,
        &[
            ("/meek/tasks/+/request", 2),
            ("/meek/tasks/+/status", 1),
            ("#", 0),
            ("clients/n1/#", 1),
            ("users/node/inbox", 1),
            ("users/api/inbox", 1),
        ],
        &[2, 0x80, 0x80, 1, 1, 0x80],
    )
    .await;
    admin
        .subscribe(2, &[("#", 1), ("test/nosubscribe", 0)], &[1, 0x80])
        .await;
    api.subscribe(3, &[("/meek/tasks/+/status", 1)], &[1]).await;
    // The retained messages of a granted filter: only those it may read.
    node.subscribe(4, &[("/meek/system/#", 0)], &[0]).await;
    let got = node.recv_publish().await;
    assert_eq!(
        (text(&got.topic), got.retain),
        ("/meek/system/broadcast".to_string(), true)
    );

    // Denied PUBLISHes are acknowledged as usual [MQTT-3.3.5-2] and go
    // nowhere; allowed ones are delivered.
    node.send(&publish("/meek/tasks/t1/request", 1, 10, b"denied"))
        .await;
    node.expect(&puback(10)).await;
    node.send(&publish("/meek/tasks/t1/request", 2, 11, b"denied"))
        .await;
    node.expect(&pubrec(11)).await;
    node.send(&pubrel(11)).await;
    node.expect(&pubcomp(11)).await;
    node.send(&publish("clients/n2/state", 1, 12, b"denied"))
        .await;
    node.expect(&puback(12)).await;
    node.send(&publish("clients/n1/state", 1, 13, b"own")).await;
    node.expect(&puback(13)).await;
    // Its own subtree (`%c`), which it also reads.
    let own = node.recv_publish_acked().await;
    assert_eq!(text(&own.topic), "clients/n1/state");
    node.send(&publish("/meek/tasks/t1/status", 1, 14, b"running"))
        .await;
    node.expect(&puback(14)).await;
    // The API role reads task status.
    let status = api.recv_publish_acked().await;
    assert_eq!(text(&status.topic), "/meek/tasks/t1/status");
    api.send(&publish("/meek/tasks/t1/request", 2, 20, b"task"))
        .await;
    api.expect(&pubrec(20)).await;
    api.send(&pubrel(20)).await;
    api.expect(&pubcomp(20)).await;
    admin
        .send(&publish("users/node/inbox", 0, 0, b"mail"))
        .await;
    admin
        .send(&publish("users/api/inbox", 0, 0, b"not yours"))
        .await;
    admin
        .send(&publish("/meek/system/config", 0, 0, b"hidden"))
        .await;
    admin
        .send(&publish("test/nosubscribe", 0, 0, b"denied"))
        .await;
    admin.send(&publish("end", 0, 0, b"")).await;

    let seen = |ps: Vec<RawPublish>| -> Vec<String> {
        let mut v: Vec<String> = ps.iter().map(|p| text(&p.topic)).collect();
        v.sort();
        v
    };
    assert_eq!(
        seen(admin.recv_until("end").await),
        [
            // The two retained ones, at its SUBSCRIBE.
            "/meek/system/broadcast",
            "/meek/system/config",
            "/meek/system/config",
            "/meek/tasks/t1/request",
            "/meek/tasks/t1/status",
            "clients/n1/state",
            "users/api/inbox",
            "users/node/inbox",
        ]
    );
    // The node gets the task and its inbox; not the hidden config nor the
    // other inbox. A last allowed message closes the list.
    api.send(&publish("/meek/tasks/t2/request", 0, 0, b""))
        .await;
    let mut got = Vec::new();
    loop {
        let p = node.recv_publish_acked().await;
        if text(&p.topic) == "/meek/tasks/t2/request" {
            break;
        }
        got.push(text(&p.topic));
    }
    got.sort();
    assert_eq!(got, ["/meek/tasks/t1/request", "users/node/inbox"]);
}

fn retained(topic: &str, payload: &[u8]) -> Vec<u8> {
    publish_raw(0x01, topic.as_bytes(), 0, payload)
}

#[tokio::test]
async fn one_address_spends_its_budget_while_another_is_served() {
    if shardmq_only() {
        return;
    }
    let dir = scratch("budget");
    let passwd = users(&dir);
    let extra = "failures_max = 3\nfailure_window_s = 60\nfailure_block_s = 60\n";
    let broker = Broker::start_with(1, &config(&passwd, None, extra));
    let from = |last: u8| std::net::SocketAddr::from(([127, 0, 0, last], 0));
    for _ in 0..3 {
        assert_eq!(login_from(&broker, from(2), "api", "wrong").await, 4);
    }
    // Blocked: even the right password gets 5 from that address...
    assert_eq!(login_from(&broker, from(2), "api", "api-pw").await, 5);
    // ...while another address is served normally.
    assert_eq!(login_from(&broker, from(1), "api", "api-pw").await, 0);
    assert_eq!(login_from(&broker, from(3), "api", "wrong").await, 4);
}

/// A login from a chosen loopback source address.
async fn login_from(
    broker: &Broker,
    source: std::net::SocketAddr,
    user: &str,
    password: &str,
) -> u8 {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(source).unwrap();
    let mut stream = within(socket.connect(broker.addr())).await.unwrap();
    stream
        .write_all(&connect_packet("budget", Some(user), Some(password)))
        .await
        .unwrap();
    let mut ack = [0u8; 4];
    within(stream.read_exact(&mut ack)).await.unwrap();
    assert_eq!(ack[..2], [0x20, 2]);
    ack[3]
}

#[tokio::test]
async fn sighup_reloads_users_and_keeps_them_on_a_bad_file() {
    if shardmq_only() {
        return;
    }
    let dir = scratch("reload");
    let passwd = dir.join("passwd");
    mosquitto_passwd(&passwd, "alice", "old", false);
    let broker = Broker::start_with(2, &config(&passwd, None, "failures_max = 0\n"));
    login_ok(&broker, "a", "alice", "old").await;
    // Changed with shardmq's own command this time.
    let status = Command::new(env!("CARGO_BIN_EXE_shardmq"))
        .args(["passwd", "--stdin"])
        .arg(&passwd)
        .arg("alice")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(b"new\n")?;
            child.wait()
        })
        .unwrap();
    assert!(status.success());
    hangup(&broker);
    eventually(&broker, "alice", "new").await;
    assert_eq!(login(&broker, "a", Some("alice"), Some("old")).await.1, 4);
    // A file that does not parse: one warning, and the users stay.
    std::fs::write(&passwd, "alice:not-a-hash\n").unwrap();
    hangup(&broker);
    let deadline = Instant::now() + WAIT;
    while !broker.output().contains("reload refused") {
        assert!(Instant::now() < deadline, "no warning: {}", broker.output());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(broker.output().contains("line 1"), "{}", broker.output());
    login_ok(&broker, "a", "alice", "new").await;
}

fn hangup(broker: &Broker) {
    let status = Command::new("kill")
        .args(["-HUP", &broker.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Retries a login until it is accepted (a reload reaches each shard on
/// its next tick).
async fn eventually(broker: &Broker, user: &str, password: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        if login(broker, "a", Some(user), Some(password)).await.1 == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "{user} never accepted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn refusals_are_counted_on_metrics() {
    if shardmq_only() {
        return;
    }
    let dir = scratch("metrics");
    let passwd = users(&dir);
    let http = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let extra = format!("failures_max = 0\n[http]\nlisten = \"{http}\"\n");
    let broker = Broker::start_with(1, &config(&passwd, None, &extra));
    assert_eq!(login(&broker, "x", Some("api"), Some("bad")).await.1, 4);
    assert_eq!(login(&broker, "y", None, None).await.1, 5);
    let mut stream = within(tokio::net::TcpStream::connect(http)).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    within(stream.read_to_string(&mut body)).await.unwrap();
    assert!(
        body.contains("shardmq_auth_bad_credentials_total 1\n"),
        "{body}"
    );
    // The harness's readiness probe is anonymous too.
    assert!(
        body.contains("shardmq_auth_anonymous_refused_total "),
        "{body}"
    );
}

#[test]
fn a_bad_file_at_start_is_a_one_line_error() {
    if shardmq_only() {
        return;
    }
    let dir = scratch("start");
    let acl = dir.join("acl");
    std::fs::write(&acl, "user a\ntopic raed x\n").unwrap();
    let conf = dir.join("shardmq.toml");
    std::fs::write(
        &conf,
        format!("[auth]\nacl_file = {:?}\n", acl.display().to_string()),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_shardmq"))
        .args(["--listen", "127.0.0.1:0", "--shards", "1", "--config"])
        .arg(&conf)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 2") && err.contains("\"raed\""), "{err}");
}

#[test]
fn passwd_command_shares_its_file_with_mosquitto() {
    if shardmq_only() {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch("passwd");
    let file = dir.join("passwd");
    let passwd = |args: &[&str], stdin: &str| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_shardmq"))
            .arg("passwd")
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let f = file.to_str().unwrap();
    assert!(passwd(&["--stdin", f, "carol"], "carol-pw\n")
        .status
        .success());
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    mosquitto_passwd(&file, "dave", "dave-pw", false);
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.starts_with("carol:$7$10000$"), "{text}");
    assert!(text.contains("\ndave:$7$101$"), "{text}");
    assert!(passwd(&["-D", f, "dave"], "").status.success());
    assert!(!std::fs::read_to_string(&file).unwrap().contains("dave"));
    let missing = passwd(&["-D", f, "dave"], "");
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("not in the file"));

    // The real mosquitto broker accepts the hash shardmq wrote.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\npassword_file {f}\nallow_anonymous false\nuser root\n"),
    )
    .unwrap();
    let mut mosquitto = Command::new("mosquitto")
        .arg("-c")
        .arg(&conf)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("mosquitto must be installed (Debian package mosquitto)");
    let publish = |password: &str| {
        Command::new("mosquitto_pub")
            .args([
                "-p",
                &port.to_string(),
                "-u",
                "carol",
                "-P",
                password,
                "-t",
                "t",
                "-m",
                "m",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap()
            .success()
    };
    let deadline = Instant::now() + WAIT;
    while !publish("carol-pw") {
        assert!(Instant::now() < deadline, "mosquitto never accepted carol");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!publish("wrong"));
    let _ = mosquitto.kill();
    let _ = mosquitto.wait();
}

/// Real clients: rumqttc and mosquitto's command-line clients see the
/// CONNACK codes and the refused SUBSCRIBE.
#[tokio::test]
async fn real_clients_see_the_refusals() {
    if shardmq_only() {
        return;
    }
    let dir = scratch("clients");
    let passwd = users(&dir);
    let acl = dir.join("acl");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/acl-nosubscribe.conf"),
        &acl,
    )
    .unwrap();
    let broker = Broker::start_with(2, &config(&passwd, Some(&acl), "failures_max = 0\n"));

    use rumqttc::{ConnectReturnCode, ConnectionError};
    for (user, code) in [
        (Some(("api", "bad")), ConnectReturnCode::BadUserNamePassword),
        (None, ConnectReturnCode::NotAuthorized),
    ] {
        let mut opts = options(&broker, "rumqttc-client");
        if let Some((u, p)) = user {
            opts.set_credentials(u, p);
        }
        let (_client, mut eventloop) = rumqttc::AsyncClient::new(opts, 8);
        match within(eventloop.poll()).await {
            Err(ConnectionError::ConnectionRefused(got)) => assert_eq!(got, code),
            other => panic!("expected a refused connection, got {other:?}"),
        }
    }

    let port = broker.port().to_string();
    let pub_status = |creds: &[&str]| {
        Command::new("mosquitto_pub")
            .args(["-p", &port, "-t", "t", "-m", "m"])
            .args(creds)
            .output()
            .unwrap()
            .status
            .code()
    };
    // mosquitto_pub exits with the CONNACK return code.
    assert_eq!(pub_status(&["-u", "api", "-P", "bad"]), Some(4));
    assert_eq!(pub_status(&[]), Some(5));
    assert_eq!(pub_status(&["-u", "api", "-P", "api-pw"]), Some(0));
    let sub = Command::new("mosquitto_sub")
        .args([
            "-p",
            &port,
            "-u",
            "api",
            "-P",
            "api-pw",
            "-t",
            "test/nosubscribe",
            "-C",
            "1",
        ])
        .args(["-W", "5"])
        .output()
        .unwrap();
    let said =
        String::from_utf8_lossy(&sub.stderr).to_string() + &String::from_utf8_lossy(&sub.stdout);
    assert!(said.contains("denied"), "{said}");
}
