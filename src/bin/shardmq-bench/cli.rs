//! The command line: options shared by every scenario, then one subcommand
//! per scenario with its own options and an example in its `--help`.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use super::payload::HEADER_LEN;
use super::transport::Transport;
use super::voice::frame::HEADER_LEN as FRAME_HEADER_LEN;

const ABOUT: &str = "MQTT 3.1.1 load generator for shardmq, mosquitto, rumqttd or any broker";

const LONG_ABOUT: &str = "\
MQTT 3.1.1 load generator for shardmq, mosquitto, rumqttd or any broker.

Each executor thread (--threads) runs one io_uring event loop that drives
many connections with coalesced writes and large reads, so one core of load
generator can saturate a broker core. Connections are spread over the
threads round-robin; --cpus pins thread i to the i-th listed CPU.

Every payload starts with a 20-byte header (publisher id u32, sequence u64,
send time u64 ns on CLOCK_MONOTONIC), so subscribers measure end-to-end
latency and count lost, duplicated and reordered messages per
(publisher, subscriber) pair.

A run connects every client (CONNECT clean session, waits for CONNACK),
subscribes every subscriber (waits for SUBACK), then publishes for
--warmup + --duration; only the --duration window after the warm-up is
measured. Publishers then stop and the run drains (at most --drain) until
every QoS 1/2 message is acknowledged and delivered.

The `sn` scenario publishes through shardmq's MQTT-SN gateway over UDP
to an MQTT subscriber (see `shardmq-bench sn --help`).

The `voice` scenario is different: simulated xiaozhi devices against
shardmq's voice gateway, the bench being their chat backend as well (see
`shardmq-bench voice --help`).

Output: a table on stdout (on stderr when --json -), JSON with --json, and
a progress line on stderr about once per second. Exit status 0 after a
report, 1 when the clients could not be set up, 2 on bad usage.";

const EXAMPLES: &str = "\
Examples:
  shardmq-bench --port 1883 p2p --pairs 50 --qos 1
  shardmq-bench fanout --publishers 1 --subscribers 100 --duration 5s
  shardmq-bench fanin --publishers 200 --rate 1000 --qos 2
  shardmq-bench latency --rate 10000 --pairs 10 --json lat.json
  shardmq-bench conns --count 15000 --server-pid $(pidof mosquitto)
  shardmq-bench churn --clients 100 --duration 10s
  shardmq-bench --transport tls --port 8883 --cafile ca.pem p2p --pairs 50
  shardmq-bench --transport ws --port 8083 --ws-path /mqtt p2p --pairs 50 --qos 1
  shardmq-bench latency --rate 20000 --pairs 4000 --qos 1 --server-perf --server-pid $(pidof shardmq)
  shardmq-bench voice --devices 200 --backend-listen 127.0.0.1:8000
  shardmq-bench sn --clients 100 --qos 1 --sn-port 1884
  taskset -c 1 shardmq-bench --server-pid $(pidof shardmq) p2p --pairs 50";

/// `shardmq-bench [GLOBAL OPTIONS] <SCENARIO> [SCENARIO OPTIONS]`.
#[derive(Debug, Parser)]
#[command(
    name = "shardmq-bench",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_help = EXAMPLES
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalOpts,
    #[command(subcommand)]
    pub scenario: Scenario,
}

/// Options every scenario takes; they may come before or after the
/// scenario name.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalOpts {
    /// Broker host name or address.
    #[arg(long, global = true, default_value = "127.0.0.1")]
    pub host: String,

    /// Broker TCP port.
    #[arg(long, global = true, default_value_t = 1883)]
    pub port: u16,

    /// How clients reach the broker: MQTT over TCP, over TLS, over
    /// WebSocket (ws), or over WebSocket over TLS (wss). Not for `voice`,
    /// whose devices use TCP.
    #[arg(long, global = true, value_enum, default_value_t = Transport::Tcp)]
    pub transport: Transport,

    /// CA certificates (PEM) the broker's certificate must chain to
    /// (tls, wss).
    #[arg(long, global = true, value_name = "PATH")]
    pub cafile: Option<String>,

    /// Client certificate chain (PEM) to present (tls, wss).
    #[arg(long, global = true, value_name = "PATH", requires = "key")]
    pub cert: Option<String>,

    /// The client certificate's private key (PEM).
    #[arg(long, global = true, value_name = "PATH", requires = "cert")]
    pub key: Option<String>,

    /// Name the broker's certificate must carry (tls, wss); default:
    /// --host.
    #[arg(long, global = true)]
    pub server_name: Option<String>,

    /// Path of the WebSocket upgrade request (ws, wss).
    #[arg(long, global = true, default_value = "/mqtt")]
    pub ws_path: String,

    /// Executor threads, each one io_uring event loop with its share of
    /// the connections.
    #[arg(long, global = true, default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    pub threads: u16,

    /// CPUs to pin the threads to, in order (e.g. `1`, `2,3`, `0-3`);
    /// the list repeats if shorter than --threads. Default: unpinned.
    #[arg(long, global = true, value_parser = parse_cpu_list)]
    pub cpus: Option<CpuList>,

    /// Broker process id: report its CPU time over the measured window
    /// (CPU-seconds per million delivered messages) and its memory.
    #[arg(long, global = true)]
    pub server_pid: Option<u32>,

    /// With --server-pid: also count the broker's system calls and
    /// io_uring submissions over the measured window with `perf stat`
    /// (needs perf and the right to trace the broker; skipped with a
    /// warning otherwise).
    #[arg(long, global = true)]
    pub server_perf: bool,

    /// CONNECT with clean session 0: persistent sessions, which a broker
    /// with a store journals (restart the broker between runs: the
    /// sessions stay).
    #[arg(long, global = true)]
    pub persistent: bool,

    /// Also write the report as JSON to this file (`-` for stdout, which
    /// moves the table to stderr).
    #[arg(long, global = true, value_name = "FILE")]
    pub json: Option<String>,

    /// A name for this run, copied into the report (e.g. the broker).
    #[arg(long, global = true)]
    pub label: Option<String>,

    /// Deadline for one client's TCP connect + CONNACK (+ SUBACK).
    #[arg(long, global = true, default_value = "5s", value_parser = parse_duration)]
    pub connect_timeout: Duration,

    /// Connection attempts in flight at once, over all threads; more
    /// overflows the broker's listen backlog and costs SYN retries.
    #[arg(long, global = true, default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub connect_concurrency: u32,

    /// MQTT keepalive in seconds sent in CONNECT; clients send PINGREQ
    /// after half of it without other traffic.
    #[arg(long, global = true, default_value_t = 60,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub keepalive: u16,

    /// No progress line on stderr.
    #[arg(long, global = true)]
    pub quiet: bool,
}

/// CPU numbers for `--cpus`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuList(pub Vec<usize>);

/// The scenarios.
#[derive(Debug, Subcommand)]
pub enum Scenario {
    /// N publishers -> N subscribers, one topic per pair.
    #[command(
        long_about = "N publishers -> N subscribers, one topic per pair \
                      (<prefix>/p2p/<i>): measures plain routing throughput.",
        after_help = "Example:\n  shardmq-bench p2p --pairs 50 --qos 1 --inflight 32 --duration 10s"
    )]
    P2p(P2pArgs),

    /// P publishers -> S subscribers, all on one topic.
    #[command(
        long_about = "P publishers -> S subscribers, all on one topic \
                      (<prefix>/fanout): every message is delivered S times.",
        after_help = "Example:\n  shardmq-bench fanout --publishers 1 --subscribers 100 --rate 5000"
    )]
    Fanout(FanoutArgs),

    /// P publishers on distinct topics -> one subscriber on a wildcard.
    #[command(
        long_about = "P publishers on distinct topics (<prefix>/fanin/<i>) -> one \
                      subscriber on <prefix>/fanin/+.",
        after_help = "Example:\n  shardmq-bench fanin --publishers 100 --rate 1000 --qos 1"
    )]
    Fanin(FaninArgs),

    /// Open and hold N idle connections; report connect rate and, with
    /// --server-pid, the broker's memory per connection.
    #[command(
        long_about = "Open N connections (CONNECT, clean session, --keepalive), hold \
                      them idle for --hold while answering keepalive with PINGREQ, \
                      then disconnect. Reports the connect rate and latency and, with \
                      --server-pid, the broker's RSS growth per connection (VmRSS of \
                      /proc/PID/status, and Anonymous of /proc/PID/smaps_rollup); \
                      measure a freshly started broker, whose heap holds nothing \
                      from earlier runs. The open-files limit is raised to its hard \
                      limit first.",
        after_help = "Example:\n  shardmq-bench conns --count 15000 --hold 10s --server-pid $(pidof shardmq)"
    )]
    Conns(ConnsArgs),

    /// Clients connecting and disconnecting in a loop; report cycles/s.
    #[command(
        long_about = "--clients clients each loop, for --warmup + --duration: TCP \
                      connect, CONNECT (clean session, a new client id every time), \
                      wait for CONNACK, DISCONNECT, wait for the broker to close \
                      (at most 200 ms), close. Reports the cycles completed per second \
                      in the window, connect latency (TCP connect to CONNACK) and, with \
                      --server-pid, the broker's CPU per 1,000 cycles: what a fleet \
                      reconnecting in a storm costs the broker.",
        after_help = "Example:\n  shardmq-bench --server-pid $(pidof mosquitto) churn --clients 100 --duration 10s"
    )]
    Churn(ChurnArgs),

    /// Fixed offered total rate over --pairs pairs; latency percentiles.
    #[command(
        long_about = "Publish at a fixed total rate (--rate msg/s, spread evenly over \
                      --pairs p2p pairs and staggered in time) and report the latency \
                      distribution; the offered load is kept even if the broker falls \
                      behind.",
        after_help = "Example:\n  shardmq-bench latency --rate 10000 --pairs 10 --qos 0"
    )]
    Latency(LatencyArgs),

    /// N xiaozhi devices talking to shardmq's voice gateway, with the
    /// bench as the chat backend that echoes their audio.
    #[command(long_about = VOICE_ABOUT, after_help = VOICE_EXAMPLE)]
    Voice(VoiceArgs),

    /// N MQTT-SN publishers over UDP on distinct topics -> one MQTT
    /// subscriber on a wildcard.
    #[command(long_about = SN_ABOUT, after_help = SN_EXAMPLE)]
    Sn(SnArgs),
}

const SN_ABOUT: &str = "\
N MQTT-SN 1.2 clients publish through shardmq's MQTT-SN gateway, one MQTT
subscriber on <prefix>/sn/# counts what reaches it: the shape of `fanin`,
so that the two set MQTT-SN publishers beside MQTT publishers for the same
subscriber.

Each client has its own connected UDP socket to --host:--sn-port. At
setup it sends CONNECT (clean session, Duration --keepalive) and, with
--topics register, REGISTERs <prefix>/sn/<i> and publishes to the id of
the REGACK; with --topics predefined it publishes to the predefined id
--predefined-first + i, which the gateway's [[mqtt_sn.predefined]] must
map to <prefix>/sn/<i>. CONNECT and REGISTER are sent again every 500 ms
until answered, for at most --connect-timeout.

Then it publishes at --qos 0 or 1 for --warmup + --duration, as fast as
possible or at --rate per client. At QoS 1 at most --inflight messages
per client await their PUBACK; one unacknowledged for --retry is sent
again with DUP (MQTT-SN 1.2 section 6.13), as a client must over UDP, where
a gateway that cannot keep up loses datagrams. Retransmissions are counted
(`retransmitted`), and the duplicates they may cause too. At QoS 0 nothing
comes back: what the gateway's socket could not take in is lost, and
published/s is the offered load.

The subscriber connects over MQTT to --host:--port (--transport applies to
it alone) and subscribes at --qos. The gateway's per-address limits
(max_clients_per_address, max_datagrams_per_second) count every client of
the bench against 127.0.0.1: raise them for a run.";

const SN_EXAMPLE: &str = "\
Example (gateway with [mqtt_sn] enabled = true on UDP 1884):
  taskset -c 1 shardmq-bench --server-pid $(pidof shardmq) sn --clients 100 --qos 1
  shardmq-bench sn --clients 100 --qos 0 --rate 500 --topics predefined --predefined-first 1";

const VOICE_ABOUT: &str = "\
N simulated xiaozhi devices against shardmq's voice gateway, the bench
playing the chat backend too, so that every audio frame makes the whole
trip: device -> UDP -> gateway -> WebSocket -> backend -> WebSocket ->
gateway -> UDP -> device.

Each device connects over MQTT as firmware does (client id
GID_bench@@@<mac>@@@<uuid>, with the password of --signature-key), sends
its hello on `device-server` at its turn within --ramp, reads the reply's
UDP key and nonce, then sends one encrypted frame every --frame-ms on its
own connected UDP socket. A frame's payload carries the device index, a
sequence number and the send time, so the backend counts loss,
duplicates and reordering upstream, and the device, getting the echo
back, counts them downstream and measures the round trip.

The backend is a WebSocket server on --backend-listen: it answers the
gateway's hello with {\"type\":\"hello\",\"transport\":\"websocket\",
\"session_id\":..,\"audio_params\":{opus, 16000 Hz, mono, --frame-ms}} and
echoes every binary frame unchanged. Start the gateway separately with a
configuration that points at it, e.g. voice.toml:

  [server]
  shards = 1
  [mqtt]
  listen = \"127.0.0.1:1883\"
  [voice]
  enabled = true
  udp_listen = \"127.0.0.1:8884\"
  public_host = \"127.0.0.1\"
  chat_servers = [\"ws://127.0.0.1:8000/xiaozhi/v1/?from=mqtt_gateway\"]
  # signature_key = \"...\"    (then pass the same --signature-key)

The run connects every device, ramps the hellos over --ramp, warms up for
--warmup, measures --duration, stops sending and drains (at most --drain),
then says goodbye and disconnects. Needs three descriptors per device
(MQTT, UDP, backend WebSocket).";

const VOICE_EXAMPLE: &str = "\
Example:
  taskset -c 0 shardmq --config voice.toml &
  taskset -c 1 shardmq-bench --server-pid $! voice --devices 400 --duration 20s";

/// `voice` options.
#[derive(Debug, Clone, Args)]
pub struct VoiceArgs {
    /// Simulated devices, each with one conversation for the whole run.
    #[arg(long, default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub devices: u32,
    /// Where the bench's chat backend listens; the gateway's
    /// `chat_servers` must name it.
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub backend_listen: SocketAddr,
    /// The gateway's `signature_key`: devices send the matching password.
    #[arg(long)]
    pub signature_key: Option<String>,
    /// Bytes of each audio frame (the Opus payload); at least the
    /// bench's 20-byte header, at most what fits a 1500-byte datagram.
    #[arg(long, default_value_t = 120, value_parser = parse_frame_bytes)]
    pub frame_bytes: usize,
    /// Milliseconds between two frames of a device (firmware: 60).
    #[arg(long, default_value_t = 60,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub frame_ms: u32,
    /// Time over which the devices' hellos are spread.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub ramp: Duration,
    /// Measured window, after the ramp and the warm-up.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Streaming after the ramp before the measured window, not counted.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Longest wait after the devices stop sending for echoes still under
    /// way (capped at 5s).
    #[arg(long, default_value = "3s", value_parser = parse_drain)]
    pub drain: Duration,
    /// How long a device waits for the hello reply (firmware: 10s).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub hello_timeout: Duration,
}

/// `p2p` options.
#[derive(Debug, Clone, Args)]
pub struct P2pArgs {
    /// Publisher/subscriber pairs.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    pub pairs: u32,
    #[command(flatten)]
    pub rate: PerPublisherRate,
    #[command(flatten)]
    pub load: LoadOpts,
}

/// `fanout` options.
#[derive(Debug, Clone, Args)]
pub struct FanoutArgs {
    /// Publishers, all on the one topic.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub publishers: u32,
    /// Subscribers, each receiving every message.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub subscribers: u32,
    #[command(flatten)]
    pub rate: PerPublisherRate,
    #[command(flatten)]
    pub load: LoadOpts,
}

/// `fanin` options.
#[derive(Debug, Clone, Args)]
pub struct FaninArgs {
    /// Publishers, each on its own topic under the wildcard.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub publishers: u32,
    #[command(flatten)]
    pub rate: PerPublisherRate,
    #[command(flatten)]
    pub load: LoadOpts,
}

/// `conns` options.
#[derive(Debug, Clone, Args)]
pub struct ConnsArgs {
    /// Connections to open and hold.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub count: u32,
    /// How long to hold them once all are open.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub hold: Duration,
}

/// `churn` options.
#[derive(Debug, Clone, Args)]
pub struct ChurnArgs {
    /// Clients cycling at once, over all threads.
    #[arg(long, default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub clients: u32,
    /// Measured window, after the warm-up.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Cycling before the measured window, not counted.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,
}

/// `latency` options.
#[derive(Debug, Clone, Args)]
pub struct LatencyArgs {
    /// Offered total rate in messages per second, over all pairs.
    #[arg(long, default_value_t = 10_000.0, value_parser = parse_positive_rate)]
    pub rate: f64,
    /// Publisher/subscriber pairs sharing the rate.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub pairs: u32,
    #[command(flatten)]
    pub load: LoadOpts,
}

/// How MQTT-SN clients name their topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SnTopics {
    /// REGISTER the topic name and publish to the id of the REGACK.
    Register,
    /// Publish to a predefined topic id, no REGISTER.
    Predefined,
}

/// `sn` options.
#[derive(Debug, Clone, Args)]
pub struct SnArgs {
    /// MQTT-SN clients, each on its own UDP socket and topic.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=60_000))]
    pub clients: u32,
    /// The gateway's UDP port, at --host.
    #[arg(long, default_value_t = 1884)]
    pub sn_port: u16,
    /// How a client names its topic <prefix>/sn/<i>.
    #[arg(long, value_enum, default_value_t = SnTopics::Register)]
    pub topics: SnTopics,
    /// With --topics predefined: client i publishes to id FIRST + i.
    #[arg(long, value_name = "FIRST", default_value_t = 1)]
    pub predefined_first: u16,
    /// A QoS 1 PUBLISH without PUBACK for this long is sent again (Tretry).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub retry: Duration,
    #[command(flatten)]
    pub rate: PerPublisherRate,
    #[command(flatten)]
    pub load: LoadOpts,
}

impl SnArgs {
    /// What the command line cannot say by itself: QoS 0 or 1 only, a
    /// payload that fits an MQTT-SN message, predefined ids that fit
    /// (0x0000 and 0xFFFF are reserved, MQTT-SN 1.2 §5.3.11).
    pub fn check(&self) -> Result<(), String> {
        if self.load.qos > 1 {
            return Err("sn publishes at QoS 0 or 1 (--qos 0|1)".to_string());
        }
        if self.load.payload > SN_PAYLOAD_MAX {
            return Err(format!(
                "sn: --payload at most {SN_PAYLOAD_MAX} (one MQTT-SN message; the gateway's \
                 max_datagram, 1024 by default, allows {})",
                1024 - SN_PUBLISH_OVERHEAD
            ));
        }
        if self.retry.is_zero() {
            return Err("sn: --retry must be more than 0".to_string());
        }
        let last = u32::from(self.predefined_first) + self.clients - 1;
        if self.topics == SnTopics::Predefined && (self.predefined_first == 0 || last > 0xFFFE) {
            return Err(format!(
                "sn: predefined ids {}..={last} do not fit 1..=65534",
                self.predefined_first
            ));
        }
        Ok(())
    }
}

/// Octets of an MQTT-SN PUBLISH besides its data in the three-octet
/// length form: length 3, type, flags, topic id 2, message id 2.
pub const SN_PUBLISH_OVERHEAD: usize = 9;

/// The largest `--payload` of `sn`: one MQTT-SN message.
pub const SN_PAYLOAD_MAX: usize = shardmq::sn::codec::MAX_MESSAGE - SN_PUBLISH_OVERHEAD;

/// `--rate` of the throughput scenarios.
#[derive(Debug, Clone, Args)]
pub struct PerPublisherRate {
    /// Messages per second per publisher; 0 publishes as fast as the
    /// inflight window (QoS 1/2) or the write buffer (QoS 0) allows.
    #[arg(long = "rate", default_value_t = 0.0, value_parser = parse_rate)]
    pub per_publisher: f64,
}

/// Options of every publishing scenario.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Load options")]
pub struct LoadOpts {
    /// QoS of PUBLISH and SUBSCRIBE.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub qos: u8,
    /// Payload bytes per message, header included (at least 20).
    #[arg(long, default_value_t = 64, value_parser = parse_payload)]
    pub payload: usize,
    /// QoS 1/2 messages a publisher may have unacknowledged.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=16384))]
    pub inflight: u16,
    /// Measured window, after the warm-up.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Publishing before the measured window, not counted.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Longest wait after publishing stops for acknowledgements and
    /// deliveries still under way (capped at 5s).
    #[arg(long, default_value = "3s", value_parser = parse_drain)]
    pub drain: Duration,
    /// First topic level of every topic the run uses.
    #[arg(long, default_value = "bench")]
    pub topic_prefix: String,
    /// Bytes a connection queues before writing to its socket; QoS 0
    /// publishers wait for the socket beyond it.
    #[arg(long, default_value_t = 64 * 1024,
          value_parser = clap::value_parser!(u32).range(1024..=16 * 1024 * 1024))]
    pub write_buffer: u32,
}

fn parse_frame_bytes(text: &str) -> Result<usize, String> {
    let bytes: usize = text.parse().map_err(|e| format!("{e}"))?;
    let (min, max) = (FRAME_HEADER_LEN, shardmq::voice::packet::MAX_PAYLOAD);
    if !(min..=max).contains(&bytes) {
        return Err(format!(
            "must be {min}..={max} (a {min}-byte header, one 1500-byte datagram)"
        ));
    }
    Ok(bytes)
}

/// Largest accepted `--payload`: far beyond benchmarking needs, far below
/// the MQTT packet limit.
const PAYLOAD_MAX: usize = 16 * 1024 * 1024;

/// Longest drain: the run must end soon after the window.
pub const DRAIN_MAX: Duration = Duration::from_secs(5);

fn parse_payload(text: &str) -> Result<usize, String> {
    let bytes: usize = text.parse().map_err(|e| format!("{e}"))?;
    if !(HEADER_LEN..=PAYLOAD_MAX).contains(&bytes) {
        return Err(format!(
            "must be {HEADER_LEN}..={PAYLOAD_MAX} (the payload holds a {HEADER_LEN}-byte header)"
        ));
    }
    Ok(bytes)
}

fn parse_rate(text: &str) -> Result<f64, String> {
    let rate: f64 = text.parse().map_err(|e| format!("{e}"))?;
    if !rate.is_finite() || rate < 0.0 {
        return Err("must be a number >= 0".to_string());
    }
    Ok(rate)
}

fn parse_positive_rate(text: &str) -> Result<f64, String> {
    match parse_rate(text)? {
        rate if rate > 0.0 => Ok(rate),
        _ => Err("must be > 0".to_string()),
    }
}

fn parse_drain(text: &str) -> Result<Duration, String> {
    let drain = parse_duration(text)?;
    if drain > DRAIN_MAX {
        return Err(format!("at most {}s", DRAIN_MAX.as_secs()));
    }
    Ok(drain)
}

/// Parses `10s`, `500ms`, `2m`, `1.5s`, `250us`, or a bare number of
/// seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 10s, 500ms or 2m"))?;
    let scale = match unit.trim() {
        "" | "s" => 1.0,
        "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        "ns" => 1e-9,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        other => return Err(format!("unknown unit `{other}` (use ns, us, ms, s, m, h)")),
    };
    Duration::try_from_secs_f64(value * scale).map_err(|e| e.to_string())
}

/// Parses `1`, `2,3`, `0-3` or `0-1,4`.
pub fn parse_cpu_list(text: &str) -> Result<CpuList, String> {
    let mut cpus = Vec::new();
    for part in text.split(',').map(str::trim) {
        let bad = || format!("`{part}` is not a CPU number or range like 2-3");
        match part.split_once('-') {
            Some((lo, hi)) => {
                let lo: usize = lo.trim().parse().map_err(|_| bad())?;
                let hi: usize = hi.trim().parse().map_err(|_| bad())?;
                if lo > hi {
                    return Err(bad());
                }
                cpus.extend(lo..=hi);
            }
            None => cpus.push(part.parse().map_err(|_| bad())?),
        }
    }
    if cpus.is_empty() {
        return Err("empty CPU list".to_string());
    }
    Ok(CpuList(cpus))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5 parsecs").is_err());
    }

    #[test]
    fn cpu_lists_parse() {
        assert_eq!(parse_cpu_list("1"), Ok(CpuList(vec![1])));
        assert_eq!(parse_cpu_list("0-2,5"), Ok(CpuList(vec![0, 1, 2, 5])));
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("a").is_err());
    }

    #[test]
    fn options_go_before_or_after_the_scenario() {
        let cli = Cli::try_parse_from([
            "shardmq-bench",
            "--port",
            "1884",
            "p2p",
            "--pairs",
            "3",
            "--threads",
            "2",
        ])
        .unwrap();
        assert_eq!(cli.global.port, 1884);
        assert_eq!(cli.global.threads, 2);
        match cli.scenario {
            Scenario::P2p(args) => assert_eq!(args.pairs, 3),
            other => panic!("parsed {other:?}"),
        }
    }

    #[test]
    fn voice_frames_hold_the_header_and_fit_a_datagram() {
        let parse =
            |bytes: &str| Cli::try_parse_from(["shardmq-bench", "voice", "--frame-bytes", bytes]);
        assert!(parse("19").is_err());
        assert!(parse("20").is_ok());
        assert!(parse("1484").is_ok());
        assert!(parse("1485").is_err());
    }

    #[test]
    fn transports_parse_and_a_certificate_needs_its_key() {
        let cli = Cli::try_parse_from([
            "shardmq-bench",
            "--transport",
            "wss",
            "--cafile",
            "ca.pem",
            "p2p",
        ])
        .unwrap();
        assert_eq!(cli.global.transport, Transport::Wss);
        assert_eq!(cli.global.ws_path, "/mqtt");
        let only_cert = ["shardmq-bench", "--cert", "c.pem", "p2p"];
        assert!(Cli::try_parse_from(only_cert).is_err());
        assert!(Cli::try_parse_from(["shardmq-bench", "--transport", "quic", "p2p"]).is_err());
    }

    #[test]
    fn sn_takes_what_an_mqtt_sn_client_can_send() {
        let check = |args: &str| {
            let words = ["shardmq-bench", "sn"]
                .into_iter()
                .chain(args.split_whitespace());
            match Cli::try_parse_from(words).unwrap().scenario {
                Scenario::Sn(sn) => sn.check(),
                other => panic!("parsed {other:?}"),
            }
        };
        assert!(check("--qos 0").is_ok());
        assert!(check("--qos 1 --payload 1015").is_ok());
        assert!(check("--qos 2").is_err(), "QoS 0 and 1 only");
        assert!(check(&format!("--payload {}", SN_PAYLOAD_MAX + 1)).is_err());
        assert!(check("--retry 0s").is_err());
        let predefined = "--topics predefined --clients 10 --predefined-first";
        assert!(check(&format!("{predefined} 65525")).is_ok());
        assert!(check(&format!("{predefined} 65526")).is_err(), "id 0xFFFF");
        assert!(check(&format!("{predefined} 0")).is_err(), "id 0");
    }

    #[test]
    fn payload_must_hold_the_header() {
        assert!(Cli::try_parse_from(["shardmq-bench", "p2p", "--payload", "19"]).is_err());
        assert!(Cli::try_parse_from(["shardmq-bench", "p2p", "--payload", "20"]).is_ok());
    }
}
