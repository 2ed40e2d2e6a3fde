//! From a scenario's options to a plan: which clients exist, with which
//! client ids, topics and filters, what each subscriber expects, and how
//! the clients are spread over the executor threads.

use std::ops::Range;
use std::time::Duration;

use super::cli::{LoadOpts, Scenario, SnTopics};
use shardmq::mqtt::QoS;

/// A publishing client.
#[derive(Debug, Clone, PartialEq)]
pub struct PubSpec {
    /// Written in every payload; dense from 0.
    pub id: u32,
    pub client_id: String,
    pub topic: String,
    /// Delay of this publisher's first message after the start, so that
    /// rate-limited publishers take turns instead of sending in step.
    pub offset_ns: u64,
}

/// A subscribing client.
#[derive(Debug, Clone, PartialEq)]
pub struct SubSpec {
    pub client_id: String,
    pub filter: String,
    /// Ids of the publishers whose every message this subscriber gets.
    pub publishers: Range<u32>,
}

/// How the publishers publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Load {
    pub qos: QoS,
    pub payload: usize,
    pub inflight: usize,
    /// Messages per second per publisher; 0 means as fast as possible.
    pub rate: f64,
    pub warmup: Duration,
    pub duration: Duration,
    pub drain: Duration,
    pub write_buffer: usize,
}

impl Load {
    fn new(opts: &LoadOpts, rate: f64) -> Load {
        Load {
            qos: QoS::from_u8(opts.qos).unwrap_or(QoS::AtMostOnce),
            payload: opts.payload,
            inflight: usize::from(opts.inflight),
            rate,
            warmup: opts.warmup,
            duration: opts.duration,
            drain: opts.drain,
            write_buffer: opts.write_buffer as usize,
        }
    }

    /// Nanoseconds between two messages of one publisher (0: unpaced).
    pub fn period_ns(&self) -> f64 {
        if self.rate > 0.0 {
            1e9 / self.rate
        } else {
            0.0
        }
    }
}

/// How the publishers of `sn` reach the broker: MQTT-SN over UDP.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SnPlan {
    /// The gateway's UDP port, at `--host`.
    pub port: u16,
    pub topics: SnTopics,
    /// Publisher `i` publishes to predefined id `predefined_first + i`.
    pub predefined_first: u16,
    /// Tretry of unacknowledged QoS 1 messages.
    pub retry: Duration,
}

/// The clients of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub scenario: &'static str,
    pub publishers: Vec<PubSpec>,
    pub subscribers: Vec<SubSpec>,
    /// Client ids of idle connections (`conns`).
    pub idle: Vec<String>,
    /// Copies the broker delivers of each publish.
    pub deliveries_per_publish: u64,
    /// `None` for `conns`.
    pub load: Option<Load>,
    /// The publishers speak MQTT-SN (`sn`); `None`: MQTT.
    pub sn: Option<SnPlan>,
}

/// One thread's share of a plan.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ThreadPlan {
    pub publishers: Vec<PubSpec>,
    pub subscribers: Vec<SubSpec>,
    pub idle: Vec<String>,
}

impl Plan {
    /// The plan of a scenario as given on the command line.
    pub fn new(scenario: &Scenario) -> Plan {
        match scenario {
            Scenario::P2p(a) => {
                let load = Load::new(&a.load, a.rate.per_publisher);
                pairs("p2p", a.pairs, &a.load.topic_prefix, load)
            }
            Scenario::Latency(a) => {
                let load = Load::new(&a.load, a.rate / f64::from(a.pairs));
                pairs("latency", a.pairs, &a.load.topic_prefix, load)
            }
            Scenario::Fanout(a) => {
                let load = Load::new(&a.load, a.rate.per_publisher);
                fanout(a.publishers, a.subscribers, &a.load.topic_prefix, load)
            }
            Scenario::Fanin(a) => {
                let load = Load::new(&a.load, a.rate.per_publisher);
                fanin(a.publishers, &a.load.topic_prefix, load)
            }
            Scenario::Sn(a) => {
                let load = Load::new(&a.load, a.rate.per_publisher);
                let sn = SnPlan {
                    port: a.sn_port,
                    topics: a.topics,
                    predefined_first: a.predefined_first,
                    retry: a.retry,
                };
                sn_fanin(a.clients, &a.load.topic_prefix, load, sn)
            }
            // Voice devices are not MQTT publishers or subscribers: the
            // scenario plans its own fleet (`voice`).
            // Churning clients come and go: the scenario runs its own
            // loop (`churn`).
            Scenario::Churn(_) => Plan {
                scenario: "churn",
                publishers: Vec::new(),
                subscribers: Vec::new(),
                idle: Vec::new(),
                deliveries_per_publish: 0,
                load: None,
                sn: None,
            },
            Scenario::Voice(_) => Plan {
                scenario: "voice",
                publishers: Vec::new(),
                subscribers: Vec::new(),
                idle: Vec::new(),
                deliveries_per_publish: 0,
                load: None,
                sn: None,
            },
            Scenario::Conns(a) => Plan {
                scenario: "conns",
                publishers: Vec::new(),
                subscribers: Vec::new(),
                idle: (0..a.count)
                    .map(|i| client_id("conns", "idle", i))
                    .collect(),
                deliveries_per_publish: 0,
                load: None,
                sn: None,
            },
        }
    }

    /// Spreads the clients over `threads` round-robin, publishers first,
    /// subscribers continuing where publishers ended, so that every thread
    /// gets its share of both.
    pub fn split(&self, threads: usize) -> Vec<ThreadPlan> {
        let mut out = vec![ThreadPlan::default(); threads];
        let mut next = 0..;
        let mut thread = || next.next().unwrap_or(0) % threads;
        for p in &self.publishers {
            out[thread()].publishers.push(p.clone());
        }
        for s in &self.subscribers {
            out[thread()].subscribers.push(s.clone());
        }
        for id in &self.idle {
            out[thread()].idle.push(id.clone());
        }
        out
    }

    pub fn connections(&self) -> usize {
        self.publishers.len() + self.subscribers.len() + self.idle.len()
    }
}

/// `bench-<scenario>-<role>-<i>`.
fn client_id(scenario: &str, role: &str, i: u32) -> String {
    format!("bench-{scenario}-{role}-{i}")
}

/// Publisher `i` of `count` starts `i / count` of a period late.
fn offset_ns(load: &Load, i: u32, count: u32) -> u64 {
    (load.period_ns() * f64::from(i) / f64::from(count)) as u64
}

fn publishers(
    scenario: &'static str,
    count: u32,
    load: &Load,
    topic: impl Fn(u32) -> String,
) -> Vec<PubSpec> {
    (0..count)
        .map(|i| PubSpec {
            id: i,
            client_id: client_id(scenario, "pub", i),
            topic: topic(i),
            offset_ns: offset_ns(load, i, count),
        })
        .collect()
}

fn pairs(scenario: &'static str, count: u32, prefix: &str, load: Load) -> Plan {
    let topic = |i| format!("{prefix}/{scenario}/{i}");
    Plan {
        scenario,
        publishers: publishers(scenario, count, &load, topic),
        subscribers: (0..count)
            .map(|i| SubSpec {
                client_id: client_id(scenario, "sub", i),
                filter: topic(i),
                publishers: i..i + 1,
            })
            .collect(),
        idle: Vec::new(),
        deliveries_per_publish: 1,
        load: Some(load),
        sn: None,
    }
}

fn fanout(pubs: u32, subs: u32, prefix: &str, load: Load) -> Plan {
    let topic = format!("{prefix}/fanout");
    Plan {
        scenario: "fanout",
        publishers: publishers("fanout", pubs, &load, |_| topic.clone()),
        subscribers: (0..subs)
            .map(|i| SubSpec {
                client_id: client_id("fanout", "sub", i),
                filter: topic.clone(),
                publishers: 0..pubs,
            })
            .collect(),
        idle: Vec::new(),
        deliveries_per_publish: u64::from(subs),
        load: Some(load),
        sn: None,
    }
}

fn fanin(pubs: u32, prefix: &str, load: Load) -> Plan {
    Plan {
        scenario: "fanin",
        publishers: publishers("fanin", pubs, &load, |i| format!("{prefix}/fanin/{i}")),
        subscribers: vec![SubSpec {
            client_id: client_id("fanin", "sub", 0),
            filter: format!("{prefix}/fanin/+"),
            publishers: 0..pubs,
        }],
        idle: Vec::new(),
        deliveries_per_publish: 1,
        load: Some(load),
        sn: None,
    }
}

/// `fanin` with MQTT-SN publishers: client `i` on `<prefix>/sn/<i>`, one
/// MQTT subscriber on `<prefix>/sn/#`.
fn sn_fanin(clients: u32, prefix: &str, load: Load, sn: SnPlan) -> Plan {
    Plan {
        scenario: "sn",
        publishers: publishers("sn", clients, &load, |i| format!("{prefix}/sn/{i}")),
        subscribers: vec![SubSpec {
            client_id: client_id("sn", "sub", 0),
            filter: format!("{prefix}/sn/#"),
            publishers: 0..clients,
        }],
        idle: Vec::new(),
        deliveries_per_publish: 1,
        load: Some(load),
        sn: Some(sn),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::Parser;

    fn plan(args: &[&str]) -> Plan {
        let cli = Cli::try_parse_from(std::iter::once("shardmq-bench").chain(args.iter().copied()))
            .unwrap();
        Plan::new(&cli.scenario)
    }

    #[test]
    fn p2p_pairs_one_topic_each() {
        let p = plan(&["p2p", "--pairs", "3", "--topic-prefix", "t"]);
        assert_eq!(p.publishers.len(), 3);
        assert_eq!(p.publishers[2].topic, "t/p2p/2");
        assert_eq!(p.publishers[2].client_id, "bench-p2p-pub-2");
        assert_eq!(p.subscribers[2].filter, "t/p2p/2");
        assert_eq!(p.subscribers[2].client_id, "bench-p2p-sub-2");
        assert_eq!(p.subscribers[2].publishers, 2..3);
        assert_eq!(p.deliveries_per_publish, 1);
    }

    #[test]
    fn fanin_subscribes_to_a_wildcard() {
        let p = plan(&["fanin", "--publishers", "4"]);
        assert_eq!(p.subscribers.len(), 1);
        assert_eq!(p.subscribers[0].filter, "bench/fanin/+");
        assert_eq!(p.subscribers[0].publishers, 0..4);
        assert_eq!(p.publishers[3].topic, "bench/fanin/3");
    }

    #[test]
    fn sn_publishers_fan_in_to_one_mqtt_subscriber() {
        let p = plan(&["sn", "--clients", "3", "--qos", "1", "--sn-port", "11884"]);
        assert_eq!(p.scenario, "sn");
        assert_eq!(p.publishers.len(), 3);
        assert_eq!(p.publishers[2].topic, "bench/sn/2");
        assert_eq!(p.publishers[2].client_id, "bench-sn-pub-2");
        assert_eq!(p.subscribers.len(), 1);
        assert_eq!(p.subscribers[0].filter, "bench/sn/#");
        assert_eq!(p.subscribers[0].publishers, 0..3);
        let sn = p.sn.unwrap();
        assert_eq!((sn.port, sn.topics), (11884, SnTopics::Register));
        assert_eq!(p.load.unwrap().qos, QoS::AtLeastOnce);
        assert_eq!(plan(&["fanin"]).sn, None);
    }

    #[test]
    fn latency_spreads_the_rate_and_staggers_publishers() {
        let p = plan(&["latency", "--rate", "1000", "--pairs", "4"]);
        let load = p.load.unwrap();
        assert_eq!(load.rate, 250.0);
        let offsets: Vec<u64> = p.publishers.iter().map(|s| s.offset_ns).collect();
        assert_eq!(offsets, vec![0, 1_000_000, 2_000_000, 3_000_000]);
    }

    #[test]
    fn split_shares_both_roles() {
        let p = plan(&["fanout", "--publishers", "1", "--subscribers", "5"]);
        let threads = p.split(2);
        assert_eq!(threads[0].publishers.len(), 1);
        assert_eq!(threads[0].subscribers.len(), 2);
        assert_eq!(threads[1].subscribers.len(), 3);
    }
}
