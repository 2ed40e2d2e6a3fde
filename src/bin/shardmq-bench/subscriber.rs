//! The subscriber driver: reads deliveries in large chunks, acknowledges
//! them as their QoS requires, and per message records its latency and its
//! sequence number against the publisher it came from.
//!
//! One clock reading timestamps a whole read: every message in it arrived
//! by then. The thread's histogram and counters are borrowed once per read,
//! not per message.

use std::ops::Range;
use std::rc::Rc;
use std::task::{Context, Poll};

use super::client::{Conn, Keepalive};
use super::clock;
use super::control::bump;
use super::payload;
use super::publisher::answer_publish;
use super::scenario::SubSpec;
use super::stats::{PairTally, Problem, SeqTracker, ThreadStats};
use super::worker::{drive, Local, Step, Timeline};
use shardmq::mqtt::codec::{self, Packet, Publish};

/// Socket reads per poll before giving other clients a turn.
const READS_PER_POLL: usize = 4;

/// A subscribing client.
pub struct Subscriber {
    local: Rc<Local>,
    slot: usize,
    conn: Conn,
    /// The publisher ids it expects, and one tracker per id.
    publishers: Range<u32>,
    trackers: Vec<SeqTracker>,
    timeline: Timeline,
    keepalive: Keepalive,
}

impl Subscriber {
    /// Acknowledgements follow each delivery's own QoS, whatever the
    /// SUBACK granted.
    pub fn new(local: Rc<Local>, slot: usize, spec: SubSpec, conn: Conn) -> Subscriber {
        let trackers = spec.publishers.clone().map(|_| SeqTracker::default());
        Subscriber {
            slot,
            conn,
            publishers: spec.publishers,
            trackers: trackers.collect(),
            timeline: local.timeline.get(),
            keepalive: Keepalive::new(local.settings.keepalive_s),
            local,
        }
    }

    /// Receives until the run stops, then disconnects.
    pub async fn run(mut self) {
        let outcome = drive(|cx| self.step(cx)).await;
        {
            let mut stats = self.local.stats.borrow_mut();
            for (publisher, t) in self.publishers.clone().zip(&self.trackers) {
                stats.pairs.push(PairTally {
                    publisher,
                    distinct: t.distinct,
                    duplicated: t.duplicated,
                    reordered: t.reordered,
                });
            }
        }
        self.local.finish(self.conn, outcome).await;
    }

    fn step(&mut self, cx: &mut Context<'_>) -> Result<Step, Problem> {
        self.local.park(self.slot, cx.waker());
        if self.local.stopping() {
            return Ok(Step::Finished);
        }
        let more_input = self.read(cx)?;
        self.keepalive.check(clock::now_ns(), &mut self.conn);
        if let Poll::Ready(result) = self.conn.poll_flush(cx) {
            result?;
        }
        Ok(if more_input { Step::Again } else { Step::Wait })
    }

    /// Reads and handles deliveries; true if there may be more.
    fn read(&mut self, cx: &mut Context<'_>) -> Result<bool, Problem> {
        for _ in 0..READS_PER_POLL {
            match self.conn.poll_read(cx) {
                Poll::Ready(Ok(_)) => self.handle_input(clock::now_ns())?,
                Poll::Ready(Err(problem)) => return Err(problem),
                Poll::Pending => return Ok(false),
            }
        }
        Ok(true)
    }

    /// Handles every whole packet in the read buffer, received at `now`.
    fn handle_input(&mut self, now: u64) -> Result<(), Problem> {
        let local = self.local.clone();
        let mut stats = local.stats.borrow_mut();
        let mut delivered = 0;
        let mut unexpected = 0;
        while let Some(packet) = self.conn.next_packet()? {
            match packet {
                Packet::Publish(publish) => {
                    delivered += 1;
                    self.record(&publish, now, &mut stats);
                    answer_publish(&mut self.conn, publish.qos, publish.pkid);
                }
                Packet::PubRel(pkid) => codec::encode_pubcomp(&mut self.conn.wbuf, pkid),
                Packet::PingResp => {}
                _ => unexpected += 1,
            }
        }
        for _ in 0..unexpected {
            stats.problems.add(Problem::UnexpectedPacket);
        }
        stats.delivered_total += delivered;
        if self.timeline.in_window(now) {
            stats.delivered_window += delivered;
        }
        bump(&local.control.progress(local.index).delivered, delivered);
        Ok(())
    }

    /// Tracks the sequence number and, for messages sent in the measured
    /// window, the latency of one delivery.
    fn record(&mut self, publish: &Publish, now: u64, stats: &mut ThreadStats) {
        let header =
            payload::read(&publish.payload).filter(|h| self.publishers.contains(&h.publisher));
        let Some(header) = header else {
            stats.problems.add(Problem::ForeignPayload);
            return;
        };
        self.trackers[(header.publisher - self.publishers.start) as usize].record(header.seq);
        if self.timeline.in_window(header.sent_ns) {
            let latency = now.saturating_sub(header.sent_ns).max(1);
            stats.latency.saturating_record(latency);
        }
    }
}
