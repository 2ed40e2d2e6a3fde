//! The publisher driver: publishes stamped payloads on its topic at its
//! rate, within its inflight window (QoS 1/2) or write-buffer bound
//! (QoS 0), and completes the QoS handshakes.
//!
//! One poll reads and handles acks, appends as many PUBLISH packets as
//! allowed to the write buffer (one clock reading stamps the whole batch),
//! then writes the buffer with one syscall. Publishing stops at the end of
//! the window; the driver then waits for its last acks and disconnects.

use std::rc::Rc;
use std::task::{Context, Poll};

use super::client::{Conn, Keepalive};
use super::clock;
use super::control::bump;
use super::payload::Template;
use super::scenario::PubSpec;
use super::stats::{Problem, PublisherTally};
use super::worker::{drive, Local, Step, Timeline};
use shardmq::mqtt::codec::{self, Packet};
use shardmq::mqtt::QoS;

/// Socket reads per poll before giving other clients a turn.
const READS_PER_POLL: usize = 4;

/// Packet ids in use, one bit each.
struct PkidSet(Box<[u64; 1024]>);

impl PkidSet {
    fn new() -> PkidSet {
        PkidSet(Box::new([0; 1024]))
    }

    fn contains(&self, pkid: u16) -> bool {
        self.0[usize::from(pkid / 64)] & (1 << (pkid % 64)) != 0
    }

    fn insert(&mut self, pkid: u16) {
        self.0[usize::from(pkid / 64)] |= 1 << (pkid % 64);
    }

    /// Removes `pkid`; false if it was not there.
    fn remove(&mut self, pkid: u16) -> bool {
        let present = self.contains(pkid);
        self.0[usize::from(pkid / 64)] &= !(1 << (pkid % 64));
        present
    }
}

/// The QoS 1/2 messages awaiting acknowledgement (§4.3).
struct Window {
    qos: QoS,
    limit: usize,
    len: usize,
    last_pkid: u16,
    /// QoS 1: awaiting PUBACK; QoS 2: awaiting PUBREC.
    sent: PkidSet,
    /// QoS 2: PUBREL sent, awaiting PUBCOMP.
    released: PkidSet,
}

impl Window {
    fn new(qos: QoS, limit: usize) -> Window {
        Window {
            qos,
            limit,
            len: 0,
            last_pkid: 0,
            sent: PkidSet::new(),
            released: PkidSet::new(),
        }
    }

    fn has_room(&self) -> bool {
        self.qos == QoS::AtMostOnce || self.len < self.limit
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A packet id for the next PUBLISH (0 at QoS 0). Ids are handed out in
    /// turn, skipping those still in use, so none is reused while unacked.
    fn acquire(&mut self) -> u16 {
        if self.qos == QoS::AtMostOnce {
            return 0;
        }
        loop {
            self.last_pkid = self.last_pkid.checked_add(1).unwrap_or(1);
            let pkid = self.last_pkid;
            if !self.sent.contains(pkid) && !self.released.contains(pkid) {
                self.sent.insert(pkid);
                self.len += 1;
                return pkid;
            }
        }
    }

    /// PUBACK: false if `pkid` was not awaiting one.
    fn acked(&mut self, pkid: u16) -> bool {
        let known = self.qos == QoS::AtLeastOnce && self.sent.remove(pkid);
        self.len -= usize::from(known);
        known
    }

    /// PUBREC: true if a PUBREL is due, also for a repeated PUBREC.
    fn received(&mut self, pkid: u16) -> bool {
        if self.qos != QoS::ExactlyOnce {
            return false;
        }
        if self.sent.remove(pkid) {
            self.released.insert(pkid);
        }
        self.released.contains(pkid)
    }

    /// PUBCOMP: false if `pkid` was not awaiting one.
    fn completed(&mut self, pkid: u16) -> bool {
        let known = self.released.remove(pkid);
        self.len -= usize::from(known);
        known
    }
}

/// When messages are due: the `n`-th (from 0) at `start + n * period`.
pub struct Pace {
    pub start: u64,
    /// 0: no pacing.
    pub period_ns: f64,
}

impl Pace {
    /// How many messages may have been sent by `now`.
    pub fn allowed(&self, now: u64) -> u64 {
        if now < self.start {
            0
        } else if self.period_ns == 0.0 {
            u64::MAX
        } else {
            ((now - self.start) as f64 / self.period_ns) as u64 + 1
        }
    }

    /// When message `seq` is due: rounded up and 1 ns late, so that
    /// `allowed` at that instant surely counts it despite float rounding,
    /// and the pacer does not wake the publisher too early.
    pub fn due(&self, seq: u64) -> u64 {
        self.start + (seq as f64 * self.period_ns).ceil() as u64 + 1
    }
}

/// A publishing client.
pub struct Publisher {
    local: Rc<Local>,
    slot: usize,
    conn: Conn,
    id: u32,
    topic: String,
    qos: QoS,
    template: Template,
    /// Next sequence number, i.e. messages published so far.
    seq: u64,
    window: Window,
    pace: Pace,
    timeline: Timeline,
    write_buffer: usize,
    keepalive: Keepalive,
    published_window: u64,
}

impl Publisher {
    pub fn new(local: Rc<Local>, slot: usize, spec: PubSpec, conn: Conn) -> Publisher {
        let load = local.settings.load.clone().expect("publishers have a load");
        let timeline = local.timeline.get();
        Publisher {
            slot,
            conn,
            id: spec.id,
            topic: spec.topic,
            qos: load.qos,
            template: Template::new(spec.id, load.payload),
            seq: 0,
            window: Window::new(load.qos, load.inflight),
            pace: Pace {
                start: timeline.start + spec.offset_ns,
                period_ns: load.period_ns(),
            },
            timeline,
            write_buffer: load.write_buffer,
            keepalive: Keepalive::new(local.settings.keepalive_s),
            published_window: 0,
            local,
        }
    }

    /// Publishes until the end of the window, then drains and disconnects.
    pub async fn run(mut self) {
        let outcome = drive(|cx| self.step(cx)).await;
        let progress = self.local.control.progress(self.local.index);
        {
            let mut stats = self.local.stats.borrow_mut();
            stats.published_window += self.published_window;
            stats.publishers.push(PublisherTally {
                id: self.id,
                sent: self.seq,
                unacked: self.window.len as u64,
            });
        }
        bump(&progress.publishers_finished, 1);
        self.local.finish(self.conn, outcome).await;
    }

    fn step(&mut self, cx: &mut Context<'_>) -> Result<Step, Problem> {
        self.local.park(self.slot, cx.waker());
        if self.local.stopping() {
            return Ok(Step::Finished);
        }
        let more_input = self.read(cx)?;
        let now = clock::now_ns();
        self.publish(now);
        self.keepalive.check(now, &mut self.conn);
        let flushed = match self.conn.poll_flush(cx) {
            Poll::Ready(result) => result.map(|()| true)?,
            Poll::Pending => false,
        };
        if flushed && !self.publishing(now) && self.window.is_empty() {
            return Ok(Step::Finished);
        }
        if more_input || (flushed && self.may_publish(now)) {
            return Ok(Step::Again);
        }
        if flushed && self.publishing(now) && self.window.has_room() {
            // Waiting for the schedule: the pacer wakes us.
            self.local.wake_at(self.slot, self.pace.due(self.seq));
        }
        Ok(Step::Wait)
    }

    /// Reads and handles what the broker sent; true if there may be more.
    fn read(&mut self, cx: &mut Context<'_>) -> Result<bool, Problem> {
        for _ in 0..READS_PER_POLL {
            match self.conn.poll_read(cx) {
                Poll::Ready(Ok(_)) => self.handle_input()?,
                Poll::Ready(Err(problem)) => return Err(problem),
                Poll::Pending => return Ok(false),
            }
        }
        Ok(true)
    }

    fn handle_input(&mut self) -> Result<(), Problem> {
        while let Some(packet) = self.conn.next_packet()? {
            let expected = match packet {
                Packet::PubAck(pkid) => self.window.acked(pkid),
                Packet::PubRec(pkid) => {
                    let release = self.window.received(pkid);
                    if release {
                        codec::encode_pubrel(&mut self.conn.wbuf, pkid);
                    }
                    release
                }
                Packet::PubComp(pkid) => self.window.completed(pkid),
                Packet::PingResp => true,
                // Nothing subscribes on this connection, but answer
                // whatever comes the way the protocol wants.
                Packet::Publish(publish) => {
                    answer_publish(&mut self.conn, publish.qos, publish.pkid);
                    false
                }
                Packet::PubRel(pkid) => {
                    codec::encode_pubcomp(&mut self.conn.wbuf, pkid);
                    false
                }
                _ => false,
            };
            if !expected {
                self.local.problem(Problem::UnexpectedPacket, false);
            }
        }
        Ok(())
    }

    /// True while inside the publishing schedule.
    fn publishing(&self, now: u64) -> bool {
        now < self.timeline.end
    }

    /// True if a message could be appended right now.
    fn may_publish(&self, now: u64) -> bool {
        self.publishing(now)
            && self.window.has_room()
            && self.conn.wbuf.len() < self.write_buffer
            && self.seq < self.pace.allowed(now)
    }

    /// Appends every message allowed now to the write buffer.
    fn publish(&mut self, now: u64) {
        let mut count = 0;
        while self.may_publish(now) {
            let pkid = self.window.acquire();
            let payload = self.template.stamp(self.seq, now);
            codec::encode_publish(
                &mut self.conn.wbuf,
                &self.topic,
                payload,
                self.qos,
                false,
                false,
                pkid,
            );
            self.seq += 1;
            count += 1;
        }
        if count > 0 {
            bump(
                &self.local.control.progress(self.local.index).published,
                count,
            );
            if self.timeline.in_window(now) {
                self.published_window += count;
            }
        }
    }
}

/// The acknowledgement a received PUBLISH calls for (§4.3).
pub fn answer_publish(conn: &mut Conn, qos: QoS, pkid: u16) {
    match qos {
        QoS::AtMostOnce => {}
        QoS::AtLeastOnce => codec::encode_puback(&mut conn.wbuf, pkid),
        QoS::ExactlyOnce => codec::encode_pubrec(&mut conn.wbuf, pkid),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_bounds_and_frees_ids() {
        let mut w = Window::new(QoS::AtLeastOnce, 2);
        let a = w.acquire();
        let b = w.acquire();
        assert_eq!((a, b), (1, 2));
        assert!(!w.has_room());
        assert!(w.acked(a));
        assert!(!w.acked(a), "a second PUBACK is not expected");
        assert!(w.has_room());
        assert_eq!(w.acquire(), 3);
    }

    #[test]
    fn qos2_releases_then_completes() {
        let mut w = Window::new(QoS::ExactlyOnce, 4);
        let id = w.acquire();
        assert!(w.received(id));
        assert!(w.received(id), "a repeated PUBREC gets PUBREL again");
        assert!(!w.acked(id));
        assert!(w.completed(id));
        assert!(w.is_empty());
        assert!(!w.received(id));
    }

    #[test]
    fn ids_wrap_and_skip_those_in_use() {
        let mut w = Window::new(QoS::AtLeastOnce, 10);
        w.last_pkid = u16::MAX - 1;
        let a = w.acquire();
        let b = w.acquire();
        assert_eq!((a, b), (u16::MAX, 1));
        w.last_pkid = u16::MAX - 1;
        assert!(w.acked(b));
        w.acked(a);
        w.sent.insert(1);
        w.len += 1;
        assert_eq!(w.acquire(), u16::MAX);
        assert_eq!(w.acquire(), 2);
    }

    #[test]
    fn pace_spreads_messages() {
        let pace = Pace {
            start: 1_000,
            period_ns: 100.0,
        };
        assert_eq!(pace.allowed(999), 0);
        assert_eq!(pace.allowed(1_000), 1);
        assert_eq!(pace.allowed(1_250), 3);
        assert_eq!(pace.due(3), 1_301);
        for seq in [1, 7, 1_000_003] {
            let odd = Pace {
                start: 5,
                period_ns: 1e9 / 3.0,
            };
            assert!(odd.allowed(odd.due(seq)) > seq);
        }
        let unpaced = Pace {
            start: 0,
            period_ns: 0.0,
        };
        assert_eq!(unpaced.allowed(1), u64::MAX);
    }
}
