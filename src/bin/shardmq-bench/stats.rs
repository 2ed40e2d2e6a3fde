//! What a run counts: problems by kind, per-pair sequence tracking, and the
//! per-thread tallies merged into the report at the end.
//!
//! Everything here is touched by one executor thread only; the threads
//! hand their `ThreadStats` back when they finish, and only then are they
//! merged. Cross-thread progress during the run goes through `control`.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Things that go wrong with a client. The first group ends the
/// connection; the second is counted and the connection goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    ConnectTimeout,
    ConnectError,
    ConnackRefused,
    SubscribeTimeout,
    SubscribeRefused,
    /// The broker closed or reset the connection.
    ClosedByBroker,
    IoError,
    /// Undecodable bytes or a packet that makes no sense at that point.
    ProtocolError,
    /// A packet the client did not expect, e.g. an ack for an unknown id.
    UnexpectedPacket,
    /// A delivered payload without our header or from an unknown publisher.
    ForeignPayload,
    /// Voice: no hello reply within the firmware's wait.
    HelloTimeout,
    /// Voice: the hello was answered with an error, or with a reply the
    /// firmware would refuse.
    HelloRefused,
    /// Voice: the gateway ended a conversation (goodbye) before the run did.
    ConversationEnded,
    /// Voice: a datagram the device would drop (framing, conn id, source).
    BadDatagram,
    /// Voice: a UDP socket could not be opened or written.
    UdpError,
    /// Voice: a WebSocket to the bench's backend failed its handshake or
    /// broke.
    BackendError,
    /// A TLS handshake or record the client could not accept.
    TlsError,
    /// The broker did not accept the WebSocket upgrade.
    UpgradeRefused,
    /// MQTT-SN: REGACK with a return code other than accepted.
    RegisterRefused,
    /// MQTT-SN: PUBACK with a return code other than accepted (congestion,
    /// invalid topic id, not supported); that message is lost.
    PublishRefused,
    /// MQTT-SN: a QoS 1 PUBLISH sent again after --retry without its
    /// PUBACK. Not an error in itself: the datagram or its ack was lost.
    Retransmitted,
}

impl Problem {
    const ALL: [Problem; 21] = [
        Problem::ConnectTimeout,
        Problem::ConnectError,
        Problem::ConnackRefused,
        Problem::SubscribeTimeout,
        Problem::SubscribeRefused,
        Problem::ClosedByBroker,
        Problem::IoError,
        Problem::ProtocolError,
        Problem::UnexpectedPacket,
        Problem::ForeignPayload,
        Problem::HelloTimeout,
        Problem::HelloRefused,
        Problem::ConversationEnded,
        Problem::BadDatagram,
        Problem::UdpError,
        Problem::BackendError,
        Problem::TlsError,
        Problem::UpgradeRefused,
        Problem::RegisterRefused,
        Problem::PublishRefused,
        Problem::Retransmitted,
    ];

    /// The name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Problem::ConnectTimeout => "connect_timeout",
            Problem::ConnectError => "connect_error",
            Problem::ConnackRefused => "connack_refused",
            Problem::SubscribeTimeout => "subscribe_timeout",
            Problem::SubscribeRefused => "subscribe_refused",
            Problem::ClosedByBroker => "closed_by_broker",
            Problem::IoError => "io_error",
            Problem::ProtocolError => "protocol_error",
            Problem::UnexpectedPacket => "unexpected_packet",
            Problem::ForeignPayload => "foreign_payload",
            Problem::HelloTimeout => "hello_timeout",
            Problem::HelloRefused => "hello_refused",
            Problem::ConversationEnded => "conversation_ended",
            Problem::BadDatagram => "bad_datagram",
            Problem::UdpError => "udp_error",
            Problem::BackendError => "backend_error",
            Problem::TlsError => "tls_error",
            Problem::UpgradeRefused => "ws_upgrade_refused",
            Problem::RegisterRefused => "register_refused",
            Problem::PublishRefused => "publish_refused",
            Problem::Retransmitted => "retransmitted",
        }
    }
}

/// How many times each [`Problem`] happened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProblemCounts([u64; Problem::ALL.len()]);

impl ProblemCounts {
    pub fn add(&mut self, problem: Problem) {
        self.0[problem as usize] += 1;
    }

    pub fn merge(&mut self, other: &ProblemCounts) {
        for (mine, theirs) in self.0.iter_mut().zip(other.0) {
            *mine += theirs;
        }
    }

    #[cfg(test)]
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// `(name, count)` of every problem that happened.
    pub fn nonzero(&self) -> Vec<(&'static str, u64)> {
        Problem::ALL
            .iter()
            .map(|p| (p.name(), self.0[*p as usize]))
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

/// `none`, or `name=count, ...`.
impl std::fmt::Display for ProblemCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let nonzero = self.nonzero();
        if nonzero.is_empty() {
            return f.write_str("none");
        }
        for (i, (name, count)) in nonzero.iter().enumerate() {
            let sep = if i > 0 { ", " } else { "" };
            write!(f, "{sep}{name}={count}")?;
        }
        Ok(())
    }
}

impl Serialize for ProblemCounts {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let nonzero = self.nonzero();
        let mut map = serializer.serialize_map(Some(nonzero.len()))?;
        for (name, count) in nonzero {
            map.serialize_entry(name, &count)?;
        }
        map.end()
    }
}

/// Which sequence numbers of one publisher one subscriber has seen.
///
/// A bit per sequence number, grown by doubling: amortised, not one
/// allocation per message, and one bit per delivery in memory.
#[derive(Debug, Default)]
pub struct SeqTracker {
    seen: Vec<u64>,
    /// One past the highest sequence number seen.
    next: u64,
    pub distinct: u64,
    pub duplicated: u64,
    /// Arrived after a higher sequence number.
    pub reordered: u64,
}

impl SeqTracker {
    /// Records one delivery of `seq`.
    pub fn record(&mut self, seq: u64) {
        let word = (seq / 64) as usize;
        let bit = 1u64 << (seq % 64);
        if word >= self.seen.len() {
            self.seen.resize((word + 1).next_power_of_two(), 0);
        }
        if self.seen[word] & bit != 0 {
            self.duplicated += 1;
            return;
        }
        self.seen[word] |= bit;
        self.distinct += 1;
        if seq < self.next {
            self.reordered += 1;
        } else {
            self.next = seq + 1;
        }
    }

    /// Distinct sequence numbers seen within `range`.
    pub fn count_in(&self, range: std::ops::Range<u64>) -> u64 {
        let mut count = 0;
        for (i, word) in self.seen.iter().enumerate() {
            let base = i as u64 * 64;
            if base >= range.end {
                break;
            }
            if base + 64 <= range.start {
                continue;
            }
            let mut mask = u64::MAX;
            if range.start > base {
                mask &= u64::MAX << (range.start - base);
            }
            if range.end < base + 64 {
                mask &= u64::MAX >> (base + 64 - range.end);
            }
            count += u64::from((word & mask).count_ones());
        }
        count
    }

    /// Adds what `other` saw of the same sender (over another connection):
    /// numbers seen by both count as duplicates.
    pub fn merge(&mut self, other: &SeqTracker) {
        if other.seen.len() > self.seen.len() {
            self.seen.resize(other.seen.len(), 0);
        }
        let mut both = 0;
        for (mine, theirs) in self.seen.iter_mut().zip(&other.seen) {
            both += u64::from((*mine & theirs).count_ones());
            *mine |= theirs;
        }
        self.distinct += other.distinct - both;
        self.duplicated += other.duplicated + both;
        self.reordered += other.reordered;
        self.next = self.next.max(other.next);
    }
}

/// What one subscriber saw of one publisher, handed back at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PairTally {
    pub publisher: u32,
    pub distinct: u64,
    pub duplicated: u64,
    pub reordered: u64,
}

/// What one publisher did, handed back at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublisherTally {
    pub id: u32,
    /// Messages published in total (warm-up and drain included).
    pub sent: u64,
    /// QoS 1/2 messages still unacknowledged when the run ended.
    pub unacked: u64,
}

/// Latency histograms record nanoseconds, 1 ns to 10 minutes, 3 digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000_000, 3).expect("static histogram bounds are valid")
}

/// Everything one executor thread counted.
#[derive(Debug)]
pub struct ThreadStats {
    /// Publish-to-delivery latency (ns) of messages sent in the window.
    pub latency: Histogram<u64>,
    /// TCP connect to CONNACK (ns) of every client.
    pub connect_latency: Histogram<u64>,
    pub published_window: u64,
    pub delivered_window: u64,
    pub delivered_total: u64,
    pub connected: u64,
    pub pings: u64,
    /// Times the main thread had to interrupt a stuck executor.
    pub executor_stalls: u64,
    pub problems: ProblemCounts,
    pub publishers: Vec<PublisherTally>,
    pub pairs: Vec<PairTally>,
}

impl Default for ThreadStats {
    fn default() -> ThreadStats {
        ThreadStats {
            latency: new_histogram(),
            connect_latency: new_histogram(),
            published_window: 0,
            delivered_window: 0,
            delivered_total: 0,
            connected: 0,
            pings: 0,
            executor_stalls: 0,
            problems: ProblemCounts::default(),
            publishers: Vec::new(),
            pairs: Vec::new(),
        }
    }
}

impl ThreadStats {
    /// Adds another thread's counts to these.
    pub fn merge(&mut self, other: ThreadStats) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.latency.add(&other.latency);
        let _ = self.connect_latency.add(&other.connect_latency);
        self.published_window += other.published_window;
        self.delivered_window += other.delivered_window;
        self.delivered_total += other.delivered_total;
        self.connected += other.connected;
        self.pings += other.pings;
        self.executor_stalls += other.executor_stalls;
        self.problems.merge(&other.problems);
        self.publishers.extend(other.publishers);
        self.pairs.extend(other.pairs);
    }
}

/// Loss and duplication over every (publisher, subscriber) pair.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Integrity {
    /// Messages published in total (warm-up and drain included).
    pub expected: u64,
    pub received: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub reordered: u64,
    pub unacked: u64,
}

impl Integrity {
    /// Compares what each subscriber saw with what each publisher sent.
    pub fn of(publishers: &[PublisherTally], pairs: &[PairTally]) -> Integrity {
        let mut sent = std::collections::HashMap::new();
        let mut integrity = Integrity::default();
        for p in publishers {
            sent.insert(p.id, p.sent);
            integrity.unacked += p.unacked;
        }
        for pair in pairs {
            let expected = sent.get(&pair.publisher).copied().unwrap_or(0);
            integrity.expected += expected;
            integrity.received += pair.distinct;
            integrity.lost += expected.saturating_sub(pair.distinct);
            integrity.duplicated += pair.duplicated;
            integrity.reordered += pair.reordered;
        }
        integrity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracker_counts_duplicates_and_reordering() {
        let mut t = SeqTracker::default();
        for seq in [0, 1, 2, 4, 3, 3, 200, 0] {
            t.record(seq);
        }
        assert_eq!(t.distinct, 6);
        assert_eq!(t.duplicated, 2);
        assert_eq!(t.reordered, 1);
    }

    #[test]
    fn tracker_counts_ranges() {
        let mut t = SeqTracker::default();
        for seq in (0..200).filter(|s| s % 3 != 0) {
            t.record(seq);
        }
        let expected =
            |r: std::ops::Range<u64>| r.filter(|s| s % 3 != 0 && *s < 200).count() as u64;
        for range in [
            0..0,
            0..1,
            0..64,
            1..63,
            60..70,
            64..128,
            63..129,
            10..200,
            150..1000,
            500..600,
        ] {
            assert_eq!(
                t.count_in(range.clone()),
                expected(range.clone()),
                "{range:?}"
            );
        }
    }

    #[test]
    fn trackers_merge_as_one() {
        let (mut a, mut b, mut both) = Default::default();
        for seq in [0, 1, 2, 70] {
            SeqTracker::record(&mut a, seq);
            SeqTracker::record(&mut both, seq);
        }
        for seq in [2, 3, 130, 3] {
            SeqTracker::record(&mut b, seq);
            SeqTracker::record(&mut both, seq);
        }
        a.merge(&b);
        assert_eq!(
            (a.distinct, a.duplicated, a.count_in(0..200)),
            (both.distinct, both.duplicated, both.count_in(0..200))
        );
    }

    #[test]
    fn integrity_counts_each_pair() {
        let publishers = [
            PublisherTally {
                id: 0,
                sent: 10,
                unacked: 0,
            },
            PublisherTally {
                id: 1,
                sent: 5,
                unacked: 1,
            },
        ];
        let pair = |publisher, distinct, duplicated| PairTally {
            publisher,
            distinct,
            duplicated,
            reordered: 0,
        };
        let pairs = [pair(0, 10, 0), pair(0, 9, 2), pair(1, 5, 0)];
        let i = Integrity::of(&publishers, &pairs);
        assert_eq!(i.expected, 25);
        assert_eq!(i.received, 24);
        assert_eq!(i.lost, 1);
        assert_eq!(i.duplicated, 2);
        assert_eq!(i.unacked, 1);
    }

    #[test]
    fn problem_counts_name_what_happened() {
        let mut counts = ProblemCounts::default();
        counts.add(Problem::ClosedByBroker);
        counts.add(Problem::ClosedByBroker);
        assert_eq!(counts.nonzero(), vec![("closed_by_broker", 2)]);
        counts.add(Problem::ConnectTimeout);
        assert_eq!(counts.to_string(), "connect_timeout=1, closed_by_broker=2");
        assert_eq!(ProblemCounts::default().to_string(), "none");
        assert_eq!(
            serde_json::to_string(&counts).unwrap(),
            r#"{"connect_timeout":1,"closed_by_broker":2}"#
        );
    }
}
