//! Persistence across `kill -9`: the real binary with a store directory,
//! killed under QoS 1 load and restarted on the same store; damaged
//! stores; `shardmq store check`.

#[macro_use]
mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

static DIR_SEQ: AtomicUsize = AtomicUsize::new(0);

/// A fresh store directory, removed on drop.
struct StoreDir(PathBuf);

impl StoreDir {
    fn new() -> StoreDir {
        let n = DIR_SEQ.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("shardmq-store-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        StoreDir(dir)
    }

    fn toml(&self, durability: &str) -> String {
        format!(
            "[mqtt]\nmax_queued_messages = 100000\nmax_inflight = 64\n\
             [persistence]\ndir = \"{}\"\ndurability = \"{durability}\"\n\
             flush_interval_ms = 100\n",
            self.0.display()
        )
    }

    fn log(&self, shard: usize) -> PathBuf {
        self.0.join(format!("shard-{shard}")).join("store.log")
    }
}

impl Drop for StoreDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn kill9(broker: Broker) {
    let status = Command::new("kill")
        .args(["-9", &broker.pid().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    drop(broker);
}

/// Runs the binary on `toml` expecting it to stop at start-up; returns its
/// exit code and output.
fn start_fails(toml: &str, shards: usize) -> (i32, String) {
    let path = std::env::temp_dir().join(format!(
        "shardmq-store-fail-{}-{}.toml",
        std::process::id(),
        DIR_SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, toml).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_shardmq"))
        .args(["--listen", "127.0.0.1:0", "--shards", &shards.to_string()])
        .arg("--config")
        .arg(&path)
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the server started on a store it should refuse");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().unwrap();
    let _ = std::fs::remove_file(&path);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (status.code().unwrap_or(-1), text)
}

fn store_check(dir: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_shardmq"))
        .args(["store", "check"])
        .arg(dir)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// A persistent session subscribed to `filter`, then disconnected.
async fn park_subscriber(broker: &Broker, id: &str, filter: &str, qos: u8) {
    let mut c = Connect::new(id);
    c.clean = false;
    let mut sub = Raw::connect_with(broker, &c).await;
    sub.subscribe(1, &[(filter, qos)], &[qos]).await;
    sub.send(&DISCONNECT).await;
    sub.expect_closed().await;
}

/// Each acknowledged payload and when its PUBACK came.
type Acked = Arc<Mutex<Vec<(String, Instant)>>>;

/// `publishers` clients publish QoS 1 to `load/<n>` one after another,
/// each recording its PUBACKs, until the broker dies.
fn start_load(
    broker: &Broker,
    publishers: usize,
    acked: &Acked,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..publishers)
        .map(|p| {
            let acked = acked.clone();
            let addr = broker.addr();
            tokio::spawn(async move {
                let Ok(stream) = tokio::net::TcpStream::connect(addr).await else {
                    return;
                };
                publish_until_closed(stream, p, acked).await;
            })
        })
        .collect()
}

async fn publish_until_closed(mut stream: tokio::net::TcpStream, p: usize, acked: Acked) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let id = format!("loadpub-{p}");
    if stream.write_all(&Connect::new(&id).encode()).await.is_err() {
        return;
    }
    let mut buf = [0u8; 4];
    if stream.read_exact(&mut buf).await.is_err() {
        return;
    }
    for i in 0u32.. {
        let pkid = (i % 60_000 + 1) as u16;
        let payload = format!("{p}-{i}");
        let packet = publish(&format!("load/{p}"), 1, pkid, payload.as_bytes());
        if stream.write_all(&packet).await.is_err() {
            return;
        }
        if stream.read_exact(&mut buf).await.is_err() || buf != puback(pkid) {
            return;
        }
        acked.lock().unwrap().push((payload, Instant::now()));
    }
}

/// Connects the persistent subscriber again and takes what it is sent
/// until `sentinel`; payload → DUP flags of its copies.
async fn drain_subscriber(broker: &Broker, id: &str) -> HashMap<String, Vec<bool>> {
    let mut c = Connect::new(id);
    c.clean = false;
    let mut sub = Raw::connect_with(broker, &c).await;
    let mut publisher = Raw::connect(broker, "sentinel").await;
    publisher.send(&publish("load/end", 1, 1, b"end")).await;
    publisher.expect(&puback(1)).await;
    let mut got: HashMap<String, Vec<bool>> = HashMap::new();
    for p in sub.recv_until("load/end").await {
        got.entry(text(&p.payload)).or_default().push(p.dup);
    }
    got
}

/// Load, `kill -9` once enough is acknowledged, restart; returns what was
/// acknowledged (with times), when the kill came, and what the subscriber
/// got after the restart.
/// How `crash_under_load` ends the broker.
#[derive(Clone, Copy)]
enum Stop {
    Kill9,
    /// SIGTERM, and the exit with status 0 within the drain's bound.
    Term,
}

async fn sigterm(mut broker: Broker) {
    let status = Command::new("kill")
        .args(["-TERM", &broker.pid().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let deadline = Instant::now() + WAIT + Duration::from_secs(10);
    while !broker.exited() {
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(broker.exit_code(), Some(0), "{}", broker.output());
}

async fn crash_under_load(
    shards: usize,
    store: &StoreDir,
    durability: &str,
) -> (Vec<(String, Instant)>, Instant, HashMap<String, Vec<bool>>) {
    stop_under_load(shards, store, durability, Stop::Kill9).await
}

async fn stop_under_load(
    shards: usize,
    store: &StoreDir,
    durability: &str,
    stop: Stop,
) -> (Vec<(String, Instant)>, Instant, HashMap<String, Vec<bool>>) {
    let toml = store.toml(durability);
    let broker = Broker::start_with(shards, &toml);
    park_subscriber(&broker, "durable-sub", "load/#", 1).await;
    // The session itself must be older than a `periodic` window.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let acked: Acked = Arc::default();
    let tasks = start_load(&broker, 4, &acked);
    // Long enough that some acknowledgements are older than the window.
    let started = Instant::now();
    let deadline = started + WAIT;
    while (acked.lock().unwrap().len() < 300 || started.elapsed() < Duration::from_millis(1500))
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let killed = Instant::now();
    match stop {
        Stop::Kill9 => kill9(broker),
        Stop::Term => sigterm(broker).await,
    }
    for t in tasks {
        let _ = t.await;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 300, "the load ran: {} acked", acked.len());
    let broker = Broker::start_with(shards, &toml);
    let got = within(drain_subscriber(&broker, "durable-sub")).await;
    (acked, killed, got)
}

/// Every acknowledged message reached the subscriber after the restart,
/// copies after the first only with DUP.
fn assert_nothing_acknowledged_lost(acked: &[(String, Instant)], got: &HashMap<String, Vec<bool>>) {
    let lost: Vec<_> = acked.iter().filter(|(p, _)| !got.contains_key(p)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged messages lost, e.g. {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(5)]
    );
    assert_duplicates_marked(got);
}

/// Duplicates come only with DUP set [MQTT-3.3.1-1]: every copy after the
/// first of a payload is marked.
fn assert_duplicates_marked(got: &HashMap<String, Vec<bool>>) {
    for (payload, dups) in got {
        for &dup in dups.iter().skip(1) {
            assert!(dup, "{payload} came again without DUP");
        }
    }
}

async fn kill9_under_sync_loses_nothing_acknowledged(shards: usize) {
    if shardmq_only() {
        return;
    }
    let store = StoreDir::new();
    let (acked, _, got) = crash_under_load(shards, &store, "sync").await;
    // Every PUBACK was a promise [MQTT-4.3.2-2]: the message is delivered
    // to the persistent session after the crash [MQTT-3.1.2-4].
    assert_nothing_acknowledged_lost(&acked, &got);
}

/// A clean stop under load writes the `periodic` window too: nothing
/// acknowledged is lost, whichever shard queued it.
async fn sigterm_under_load_exits_0_and_loses_nothing(shards: usize) {
    if shardmq_only() {
        return;
    }
    let store = StoreDir::new();
    let (acked, _, got) = stop_under_load(shards, &store, "periodic", Stop::Term).await;
    assert_nothing_acknowledged_lost(&acked, &got);
}

async fn kill9_under_periodic_loses_only_the_last_window(shards: usize) {
    if shardmq_only() {
        return;
    }
    let store = StoreDir::new();
    let (acked, killed, got) = crash_under_load(shards, &store, "periodic").await;
    // The stated window is flush_interval_ms (100 ms) plus one write; the
    // margin covers a busy machine's scheduling, it measures no speed.
    let window = Duration::from_millis(100) + Duration::from_millis(900);
    let lost_early: Vec<_> = acked
        .iter()
        .filter(|(p, at)| killed.duration_since(*at) > window && !got.contains_key(p))
        .collect();
    assert!(
        lost_early.is_empty(),
        "{} messages acknowledged before the last window were lost, e.g. {:?}",
        lost_early.len(),
        &lost_early[..lost_early.len().min(5)]
    );
    assert_duplicates_marked(&got);
}

async fn retained_values_survive_kill9(shards: usize) {
    if shardmq_only() {
        return;
    }
    let store = StoreDir::new();
    let toml = store.toml("sync");
    let broker = Broker::start_with(shards, &toml);
    let mut p = Raw::connect(&broker, "retainer").await;
    for (i, topic) in ["r/a", "r/b", "r/c"].iter().enumerate() {
        let pkid = i as u16 + 1;
        p.send(&publish_raw(
            0x02 | 0x01,
            topic.as_bytes(),
            pkid,
            topic.as_bytes(),
        ))
        .await;
        p.expect(&puback(pkid)).await;
    }
    // Cleared by an empty retained payload [MQTT-3.3.1-10].
    p.send(&publish_raw(0x02 | 0x01, b"r/c", 9, b"")).await;
    p.expect(&puback(9)).await;
    kill9(broker);
    let broker = Broker::start_with(shards, &toml);
    let mut s = Raw::connect(&broker, "late").await;
    s.subscribe(1, &[("r/#", 1)], &[1]).await;
    let mut got = Vec::new();
    for _ in 0..2 {
        let p = s.recv_publish_acked().await;
        assert!(p.retain, "sent as retained [MQTT-3.3.1-8]");
        got.push(text(&p.topic));
    }
    got.sort();
    assert_eq!(got, ["r/a", "r/b"]);
    s.ping().await;
}

shard_tests!(
    kill9_under_sync_loses_nothing_acknowledged,
    kill9_under_periodic_loses_only_the_last_window,
    retained_values_survive_kill9,
    sigterm_under_load_exits_0_and_loses_nothing,
);

#[tokio::test]
async fn qos2_is_exactly_once_across_kill9() {
    if shardmq_only() {
        return;
    }
    let store = StoreDir::new();
    let toml = store.toml("sync");
    let broker = Broker::start_with(2, &toml);
    park_subscriber(&broker, "q2-sub", "q2/#", 2).await;
    // Outbound in flight: a second subscriber gets the first message,
    // answers PUBREC, receives PUBREL and dies before PUBCOMP.
    let mut c = Connect::new("q2-rel");
    c.clean = false;
    let mut rel = Raw::connect_with(&broker, &c).await;
    rel.subscribe(1, &[("q2/#", 2)], &[2]).await;
    let mut c = Connect::new("q2-pub");
    c.clean = false;
    let mut p = Raw::connect_with(&broker, &c).await;
    // Inbound awaiting PUBREL: PUBREC came, PUBREL not yet sent.
    p.send(&publish("q2/x", 2, 7, b"once")).await;
    p.expect(&pubrec(7)).await;
    let got = rel.recv_publish().await;
    assert_eq!((got.qos, text(&got.payload)), (2, "once".to_string()));
    rel.send(&pubrec(got.pkid)).await;
    rel.expect(&pubrel(got.pkid)).await;
    rel.ping().await;
    // PUBREL's record is written without an ack to wait for: give the
    // writer its turn.
    tokio::time::sleep(Duration::from_millis(300)).await;
    kill9(broker);

    let broker = Broker::start_with(2, &toml);
    let mut c = Connect::new("q2-pub");
    c.clean = false;
    let mut p = Raw::open(&broker).await;
    p.send(&c.encode()).await;
    p.expect(&connack(true, 0)).await;
    // The resend is acknowledged, not routed again [MQTT-4.3.3-2].
    p.send(&publish_raw(0x08 | 0x04, b"q2/x", 7, b"once")).await;
    p.expect(&pubrec(7)).await;
    p.send(&pubrel(7)).await;
    p.expect(&pubcomp(7)).await;
    p.send(&publish("q2/end", 2, 8, b"end")).await;
    p.expect(&pubrec(8)).await;
    p.send(&pubrel(8)).await;
    p.expect(&pubcomp(8)).await;

    let mut c = Connect::new("q2-sub");
    c.clean = false;
    let mut sub = Raw::connect_with(&broker, &c).await;
    let got: Vec<String> = sub
        .recv_until("q2/end")
        .await
        .iter()
        .map(|p| text(&p.payload))
        .collect();
    assert_eq!(got, ["once"], "exactly once across the crash");

    // The released flow resumes at PUBREL [MQTT-4.4.0-1].
    let mut c = Connect::new("q2-rel");
    c.clean = false;
    let mut rel = Raw::open(&broker).await;
    rel.send(&c.encode()).await;
    rel.expect(&connack(true, 0)).await;
    let packet = rel.read_packet().await;
    assert_eq!(packet.header, 0x62, "PUBREL first, got {packet:?}");
    let pkid = u16::from_be_bytes([packet.body[0], packet.body[1]]);
    rel.send(&pubcomp(pkid)).await;
    let next = rel.recv_publish_acked().await;
    assert_eq!(
        text(&next.payload),
        "end",
        "the first message is not sent again"
    );
}

/// A store with a persistent session and a retained message, the broker
/// killed; returns the store.
async fn written_store() -> StoreDir {
    let store = StoreDir::new();
    let broker = Broker::start_with(1, &store.toml("sync"));
    park_subscriber(&broker, "kept", "k/#", 1).await;
    let mut p = Raw::connect(&broker, "p").await;
    p.send(&publish("k/1", 1, 1, b"one")).await;
    p.expect(&puback(1)).await;
    p.send(&publish_raw(0x02 | 0x01, b"k/r", 2, b"kept")).await;
    p.expect(&puback(2)).await;
    kill9(broker);
    store
}

#[tokio::test]
async fn a_torn_tail_is_cut_and_reported() {
    if shardmq_only() {
        return;
    }
    let store = written_store().await;
    let log = store.log(0);
    let good = std::fs::metadata(&log).unwrap().len();
    // The start of a record whose body never reached the disk.
    let mut bytes = std::fs::read(&log).unwrap();
    bytes.extend_from_slice(&[40, 0, 0, 0, 1, 2]);
    std::fs::write(&log, &bytes).unwrap();
    let (code, out) = store_check(&store.0);
    assert_eq!(code, 1, "check reports the torn tail: {out}");
    assert!(out.contains("torn tail: 6 bytes"), "{out}");

    let broker = Broker::start_with(1, &store.toml("sync"));
    let mut c = Connect::new("kept");
    c.clean = false;
    let mut sub = Raw::open(&broker).await;
    sub.send(&c.encode()).await;
    sub.expect(&connack(true, 0)).await;
    assert_eq!(text(&sub.recv_publish_acked().await.payload), "one");
    let deadline = Instant::now() + WAIT;
    while !broker.output().contains("bytes_cut") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let output = broker.output();
    assert!(
        output.contains("torn") && output.contains(&log.display().to_string()),
        "the cut is logged with the path: {output}"
    );
    assert!(output.contains("bytes_cut=6"), "{output}");
    drop(broker);
    // Cut at the last whole record; what the restarted server appended
    // after it is whole too.
    let (code, out) = store_check(&store.0);
    assert_eq!(code, 0, "{out}");
    assert!(std::fs::metadata(&log).unwrap().len() >= good);
}

#[tokio::test]
async fn a_flipped_bit_stops_the_start_and_names_the_file() {
    if shardmq_only() {
        return;
    }
    let store = written_store().await;
    let log = store.log(0);
    let mut bytes = std::fs::read(&log).unwrap();
    // Inside the first record's body, with records after it.
    bytes[16 + 12 + 2] ^= 0x10;
    std::fs::write(&log, &bytes).unwrap();
    let (code, out) = start_fails(&store.toml("sync"), 1);
    assert_ne!(code, 0);
    assert!(out.contains(&log.display().to_string()), "{out}");
    assert!(out.contains("damaged record"), "{out}");
    let (code, out) = store_check(&store.0);
    assert_eq!(code, 1);
    assert!(out.contains("damage"), "{out}");
}

#[tokio::test]
async fn a_store_of_a_future_format_is_refused() {
    if shardmq_only() {
        return;
    }
    let store = written_store().await;
    let log = store.log(0);
    let mut bytes = std::fs::read(&log).unwrap();
    bytes[8] = 2;
    std::fs::write(&log, &bytes).unwrap();
    let (code, out) = start_fails(&store.toml("sync"), 1);
    assert_ne!(code, 0);
    assert!(out.contains("format version 2"), "{out}");
    assert!(out.contains(&log.display().to_string()), "{out}");
}

#[tokio::test]
async fn another_shard_count_is_refused() {
    if shardmq_only() {
        return;
    }
    let store = written_store().await;
    let (code, out) = start_fails(&store.toml("sync"), 2);
    assert_ne!(code, 0);
    assert!(out.contains("written by 1 shards"), "{out}");
}

#[tokio::test]
async fn store_check_prints_what_the_store_holds() {
    if shardmq_only() {
        return;
    }
    let store = written_store().await;
    let (code, out) = store_check(&store.0);
    assert_eq!(code, 0, "{out}");
    for expected in [
        "shards: 1",
        "format version: 1",
        "1 sessions, 1 subscriptions, 2 queued",
        "1 retained (7 bytes)",
        "ok",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
}

#[tokio::test]
async fn compaction_keeps_the_live_state_and_shrinks_the_log() {
    if shardmq_only() {
        return;
    }
    let store = StoreDir::new();
    let toml = store.toml("sync") + "compact_min_bytes = 4096\n";
    let broker = Broker::start_with(1, &toml);
    park_subscriber(&broker, "compacted", "c/q", 1).await;
    let mut p = Raw::connect(&broker, "p").await;
    p.send(&publish("c/q", 1, 1, b"queued")).await;
    p.expect(&puback(1)).await;
    // One retained topic rewritten many times: the log grows, the live
    // state does not.
    let mut written = 0;
    for i in 0..400u16 {
        let payload = format!("value-{i:03}-{}", "x".repeat(100));
        p.send(&publish_raw(0x03, b"c/r", i + 2, payload.as_bytes()))
            .await;
        p.expect(&puback(i + 2)).await;
        written += payload.len();
    }
    let log_len = std::fs::metadata(store.log(0)).unwrap().len() as usize;
    assert!(
        log_len < written / 4,
        "compacted: {log_len} bytes on disk for {written} bytes written"
    );
    kill9(broker);
    let broker = Broker::start_with(1, &toml);
    let mut s = Raw::connect(&broker, "late").await;
    s.subscribe(1, &[("c/r", 0)], &[0]).await;
    let r = s.recv_publish().await;
    assert!(
        text(&r.payload).starts_with("value-399-"),
        "{}",
        text(&r.payload)
    );
    let mut c = Connect::new("compacted");
    c.clean = false;
    let mut sub = Raw::open(&broker).await;
    sub.send(&c.encode()).await;
    sub.expect(&connack(true, 0)).await;
    assert_eq!(text(&sub.recv_publish_acked().await.payload), "queued");
}

/// Not a check (no timing is asserted): QoS 1 p2p over persistent
/// sessions for each durability mode, printed. Run with
/// `cargo test --test store_durability durability_throughput -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn durability_throughput() {
    let pairs: usize = std::env::var("PAIRS").map_or(50, |v| v.parse().unwrap());
    let secs: u64 = std::env::var("SECS").map_or(5, |v| v.parse().unwrap());
    for durability in ["none", "periodic", "sync"] {
        let store = StoreDir::new();
        let broker = Broker::start_with(1, &store.toml(durability));
        let delivered = Arc::new(AtomicUsize::new(0));
        let acked = Arc::new(AtomicUsize::new(0));
        let stop = Instant::now() + Duration::from_secs(secs);
        let mut tasks = Vec::new();
        for i in 0..pairs {
            let topic = format!("p2p/{i}");
            let (sub_id, pub_id) = (format!("tp-sub-{i}"), format!("tp-pub-{i}"));
            let mut c = Connect::new(&sub_id);
            c.clean = false;
            let mut sub = Raw::connect_with(&broker, &c).await;
            sub.subscribe(1, &[(&topic, 1)], &[1]).await;
            let delivered = delivered.clone();
            tasks.push(tokio::spawn(async move {
                while Instant::now() < stop {
                    let Ok(p) =
                        tokio::time::timeout(Duration::from_millis(200), sub.recv_publish_acked())
                            .await
                    else {
                        continue;
                    };
                    let _ = p;
                    delivered.fetch_add(1, Ordering::Relaxed);
                }
            }));
            let addr = broker.addr();
            let acked = acked.clone();
            tasks.push(tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
                stream.set_nodelay(true).unwrap();
                let (mut rd, mut wr) = stream.into_split();
                let mut c = Connect::new(&pub_id);
                c.clean = false;
                wr.write_all(&c.encode()).await.unwrap();
                let mut ack = [0u8; 4];
                rd.read_exact(&mut ack).await.unwrap();
                let (mut next, mut inflight) = (0u32, 0u32);
                while Instant::now() < stop {
                    let mut batch = Vec::new();
                    while inflight < 32 {
                        let pkid = (next % 60_000 + 1) as u16;
                        batch.extend_from_slice(&publish(&topic, 1, pkid, &[b'x'; 64]));
                        next += 1;
                        inflight += 1;
                    }
                    if !batch.is_empty() && wr.write_all(&batch).await.is_err() {
                        return;
                    }
                    match tokio::time::timeout(Duration::from_millis(200), rd.read_exact(&mut ack))
                        .await
                    {
                        Ok(Ok(_)) => {
                            inflight -= 1;
                            acked.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(Err(_)) => return,
                        Err(_) => {}
                    }
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
        println!(
            "durability {durability:8}: {pairs} pairs, {:8.0} PUBACKs/s, {:8.0} delivered/s",
            acked.load(Ordering::Relaxed) as f64 / secs as f64,
            delivered.load(Ordering::Relaxed) as f64 / secs as f64,
        );
        drop(broker);
    }
}

#[tokio::test]
async fn sigterm_flushes_what_the_periodic_window_holds() {
    if shardmq_only() {
        return;
    }
    let store = StoreDir::new();
    // A window far longer than the test: only the shutdown's flush can
    // have written the message.
    let toml = store
        .toml("periodic")
        .replace("flush_interval_ms = 100", "flush_interval_ms = 600000");
    let mut broker = Broker::start_with(1, &toml);
    park_subscriber(&broker, "drained", "d/#", 1).await;
    let mut p = Raw::connect(&broker, "p").await;
    p.send(&publish("d/1", 1, 1, b"kept")).await;
    p.expect(&puback(1)).await;
    let status = Command::new("kill")
        .args(["-TERM", &broker.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + WAIT;
    while !broker.exited() {
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(broker);
    let broker = Broker::start_with(1, &toml);
    let mut c = Connect::new("drained");
    c.clean = false;
    let mut sub = Raw::open(&broker).await;
    sub.send(&c.encode()).await;
    sub.expect(&connack(true, 0)).await;
    assert_eq!(text(&sub.recv_publish_acked().await.payload), "kept");
}

#[tokio::test]
async fn a_store_file_cut_inside_its_header_is_created_again() {
    if shardmq_only() {
        return;
    }
    let store = StoreDir::new();
    let toml = store.toml("sync");
    drop(Broker::start_with(1, &toml));
    // A crash between creating the file and syncing its header.
    let log = store.log(0);
    let bytes = std::fs::read(&log).unwrap();
    std::fs::write(&log, &bytes[..5]).unwrap();
    let broker = Broker::start_with(1, &toml);
    let deadline = Instant::now() + WAIT;
    while !broker.output().contains("never finished") {
        assert!(Instant::now() < deadline, "{}", broker.output());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(broker);
    assert_eq!(store_check(&store.0).0, 0);
}
