//! The MQTT-SN publishers of `sn`: clients of shardmq's MQTT-SN gateway,
//! each on its own connected UDP socket, whose messages the scenario's MQTT
//! subscriber counts as it counts any publisher's.
//!
//! At setup a client sends CONNECT and, unless its topic is predefined,
//! REGISTER, each again until answered (UDP may lose either). Then one task
//! publishes on the thread's schedule and a second reads what the gateway
//! sends back: PUBACKs free the window and wake the first. At QoS 1 a
//! message unacknowledged for `--retry` goes out again with DUP (MQTT-SN 1.2
//! §6.13), with the payload it had, so a loss shows as a retransmission
//! and at most a duplicate, never as a missing message.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use glommio::net::UdpSocket;

use super::cli::SnTopics;
use super::client::within;
use super::clock;
use super::control::bump;
use super::payload::Template;
use super::publisher::Pace;
use super::scenario::PubSpec;
use super::stats::{Problem, PublisherTally};
use super::voice::device::connected_udp;
use super::worker::{Local, Timeline};
use shardmq::mqtt::QoS;
use shardmq::sn::codec::{self, Flags, Message, ReturnCode, SnQoS, TopicIdType};

/// How long a client waits for CONNACK or REGACK before sending again.
const HANDSHAKE_RETRY: Duration = Duration::from_millis(500);

/// PUBLISH datagrams one client sends before the others get a turn.
const BATCH: usize = 64;

/// Receive buffer: what comes back to a publisher (CONNACK, REGACK,
/// PUBACK, PINGRESP) is a few octets. glommio stages every receive that
/// has to wait in a buffer of this size, so it stays small; a longer
/// datagram is cut, fails to decode and is counted.
const RECEIVE_BUFFER: usize = 2048;

/// The message id of the setup's REGISTER.
const REGISTER_MSG_ID: u16 = 1;

/// A connected (and registered) MQTT-SN client, before the go.
pub struct SnClient {
    socket: UdpSocket,
    topic_id: u16,
    topic_type: TopicIdType,
}

impl SnClient {
    /// CONNECT (clean session) and, for a registered topic, REGISTER, as
    /// publisher `spec` of the plan; each sent again every
    /// `HANDSHAKE_RETRY` until answered, within `--connect-timeout`.
    pub async fn open(local: &Local, spec: &PubSpec) -> Result<SnClient, Problem> {
        let settings = &local.settings;
        let sn = settings.sn.as_ref().ok_or(Problem::ProtocolError)?;
        let mut socket = connected_udp(sn.gateway).map_err(|_| Problem::UdpError)?;
        socket.set_buffer_size(RECEIVE_BUFFER);
        let deadline = clock::now_ns() + clock::ns(settings.connect_timeout);
        let mut out = Vec::new();
        let mut buf = vec![0u8; RECEIVE_BUFFER];
        let connect = Message::Connect {
            flags: Flags {
                clean_session: true,
                ..Flags::new(SnQoS::AtMostOnce, TopicIdType::Normal)
            },
            protocol_id: codec::PROTOCOL_ID,
            duration_s: settings.keepalive_s,
            client_id: spec.client_id.as_bytes(),
        };
        encode(&connect, &mut out)?;
        exchange(&socket, &out, &mut buf, deadline, |m| match m {
            Message::ConnAck(ReturnCode::Accepted) => Some(Ok(())),
            Message::ConnAck(_) => Some(Err(Problem::ConnackRefused)),
            _ => None,
        })
        .await?;
        let (topic_id, topic_type) = match sn.plan.topics {
            SnTopics::Predefined => {
                let id = u32::from(sn.plan.predefined_first) + spec.id;
                let id = u16::try_from(id).map_err(|_| Problem::RegisterRefused)?;
                (id, TopicIdType::Predefined)
            }
            SnTopics::Register => {
                let register = Message::Register {
                    topic_id: 0,
                    msg_id: REGISTER_MSG_ID,
                    topic_name: spec.topic.as_bytes(),
                };
                out.clear();
                encode(&register, &mut out)?;
                let id = exchange(&socket, &out, &mut buf, deadline, |m| match m {
                    Message::RegAck {
                        topic_id,
                        msg_id: REGISTER_MSG_ID,
                        code: ReturnCode::Accepted,
                    } => Some(Ok(topic_id)),
                    Message::RegAck {
                        msg_id: REGISTER_MSG_ID,
                        ..
                    } => Some(Err(Problem::RegisterRefused)),
                    _ => None,
                })
                .await?;
                (id, TopicIdType::Normal)
            }
        };
        Ok(SnClient {
            socket,
            topic_id,
            topic_type,
        })
    }

    /// DISCONNECT, for a client whose run does not take place.
    pub async fn close(self) {
        let mut out = Vec::new();
        if encode(&Message::Disconnect(None), &mut out).is_ok() {
            let _ = self.socket.send(&out).await;
        }
    }
}

/// Sends `request` until a datagram `answer` accepts comes back, or the
/// deadline passes. Datagrams `answer` does not recognise are skipped.
async fn exchange<T>(
    socket: &UdpSocket,
    request: &[u8],
    buf: &mut [u8],
    deadline: u64,
    mut answer: impl FnMut(Message<'_>) -> Option<Result<T, Problem>>,
) -> Result<T, Problem> {
    loop {
        let left = clock::until(deadline);
        if left.is_zero() {
            return Err(Problem::ConnectTimeout);
        }
        socket.send(request).await.map_err(|e| udp_problem(&e))?;
        let wait = glommio::timer::sleep(left.min(HANDSHAKE_RETRY));
        let got = within(wait, Problem::ConnectTimeout, async {
            loop {
                let n = socket.recv(buf).await.map_err(|e| udp_problem(&e))?;
                let Some(datagram) = buf.get(..n) else {
                    continue;
                };
                if let Some(result) = codec::decode(datagram).ok().and_then(&mut answer) {
                    return result;
                }
            }
        })
        .await;
        match got {
            // Not answered yet: send again.
            Err(Problem::ConnectTimeout) => continue,
            other => return other,
        }
    }
}

fn encode(message: &Message<'_>, out: &mut Vec<u8>) -> Result<(), Problem> {
    if message.encode(out) {
        Ok(())
    } else {
        Err(Problem::ProtocolError)
    }
}

/// A refused datagram (ICMP port unreachable) means nothing listens on
/// the gateway's port.
fn udp_problem(error: &glommio::GlommioError<()>) -> Problem {
    match error {
        glommio::GlommioError::IoError(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            Problem::ConnectError
        }
        _ => Problem::UdpError,
    }
}

/// A QoS 1 message awaiting its PUBACK: enough to send it again as it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Waiting {
    seq: u64,
    sent_ns: u64,
}

/// The QoS 1 messages of one client awaiting PUBACK (§6.13), bounded by
/// `--inflight`, and when each is due again.
#[derive(Debug)]
pub struct Unacked {
    limit: usize,
    retry_ns: u64,
    last_id: u16,
    waiting: HashMap<u16, Waiting>,
    /// (due, msg id, seq) in due order: every entry is due `retry_ns` after
    /// it was queued, so appending keeps the order. Entries of acked
    /// messages stay until their turn and are then skipped.
    due: VecDeque<(u64, u16, u64)>,
}

impl Unacked {
    pub fn new(limit: usize, retry: Duration) -> Unacked {
        Unacked {
            limit,
            retry_ns: clock::ns(retry).max(1),
            last_id: 0,
            waiting: HashMap::with_capacity(limit),
            due: VecDeque::new(),
        }
    }

    pub fn has_room(&self) -> bool {
        self.waiting.len() < self.limit
    }

    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// A message id for message `seq` sent at `now`: ids are handed out in
    /// turn, never 0, skipping those still awaiting their PUBACK.
    pub fn insert(&mut self, seq: u64, now: u64) -> u16 {
        loop {
            self.last_id = self.last_id.checked_add(1).unwrap_or(1);
            let id = self.last_id;
            if let std::collections::hash_map::Entry::Vacant(slot) = self.waiting.entry(id) {
                slot.insert(Waiting { seq, sent_ns: now });
                self.due.push_back((now + self.retry_ns, id, seq));
                return id;
            }
        }
    }

    /// PUBACK of `id`: false if no message awaited it.
    pub fn acked(&mut self, id: u16) -> bool {
        self.waiting.remove(&id).is_some()
    }

    /// Whether the queue entry still stands for a waiting message.
    fn live(&self, id: u16, seq: u64) -> bool {
        self.waiting.get(&id).is_some_and(|w| w.seq == seq)
    }

    /// Appends to `out` the (msg id, seq, first send time) of every
    /// message due again by `now`, and queues each for `retry` later.
    pub fn take_due(&mut self, now: u64, out: &mut Vec<(u16, u64, u64)>) {
        while let Some(&(at, id, seq)) = self.due.front() {
            if at > now {
                break;
            }
            self.due.pop_front();
            if let Some(w) = self.waiting.get(&id).filter(|w| w.seq == seq) {
                out.push((id, seq, w.sent_ns));
                self.due.push_back((now + self.retry_ns, id, seq));
            }
        }
    }

    /// When the next message is due again, if one waits.
    pub fn next_due(&mut self) -> Option<u64> {
        while let Some(&(at, id, seq)) = self.due.front() {
            if self.live(id, seq) {
                return Some(at);
            }
            self.due.pop_front();
        }
        None
    }
}

/// What the publishing task and the receiving task of a client share.
struct Shared {
    unacked: RefCell<Unacked>,
    /// Set by the receiver when the socket fails or the gateway says
    /// DISCONNECT: the publisher ends with it.
    failed: Cell<Option<Problem>>,
    /// Messages sent again so far: after one, a second PUBACK for the
    /// same id is the gateway's answer to the duplicate, not a mistake.
    retransmitted: Cell<u64>,
}

/// A publishing MQTT-SN client.
pub struct SnPublisher {
    local: Rc<Local>,
    slot: usize,
    socket: Rc<UdpSocket>,
    id: u32,
    topic_id: u16,
    flags: Flags,
    qos: QoS,
    template: Template,
    /// Next sequence number, i.e. messages published so far.
    seq: u64,
    shared: Rc<Shared>,
    pace: Pace,
    timeline: Timeline,
    keepalive_half_ns: u64,
    last_send_ns: u64,
    published_window: u64,
    out: Vec<u8>,
    resend: Vec<(u16, u64, u64)>,
}

impl SnPublisher {
    pub fn new(local: Rc<Local>, slot: usize, spec: PubSpec, client: SnClient) -> SnPublisher {
        let load = local.settings.load.clone().expect("publishers have a load");
        let retry = local
            .settings
            .sn
            .as_ref()
            .map_or(Duration::from_secs(1), |sn| sn.plan.retry);
        let timeline = local.timeline.get();
        let qos = if load.qos == QoS::AtMostOnce {
            SnQoS::AtMostOnce
        } else {
            SnQoS::AtLeastOnce
        };
        SnPublisher {
            slot,
            socket: Rc::new(client.socket),
            id: spec.id,
            topic_id: client.topic_id,
            flags: Flags::new(qos, client.topic_type),
            qos: load.qos,
            template: Template::new(spec.id, load.payload),
            seq: 0,
            shared: Rc::new(Shared {
                unacked: RefCell::new(Unacked::new(load.inflight, retry)),
                failed: Cell::new(None),
                retransmitted: Cell::new(0),
            }),
            pace: Pace {
                start: timeline.start + spec.offset_ns,
                period_ns: load.period_ns(),
            },
            timeline,
            keepalive_half_ns: u64::from(local.settings.keepalive_s) * 500_000_000,
            last_send_ns: clock::now_ns(),
            published_window: 0,
            out: Vec::with_capacity(load.payload + 16),
            resend: Vec::new(),
            local,
        }
    }

    /// Publishes until the end of the window, waits for the last PUBACKs,
    /// then says DISCONNECT.
    pub async fn run(mut self) {
        let receiver = glommio::spawn_local(receive(
            self.local.clone(),
            self.slot,
            self.socket.clone(),
            self.shared.clone(),
        ));
        let outcome = self.publish_all().await;
        drop(receiver);
        let progress = self.local.control.progress(self.local.index);
        {
            let mut stats = self.local.stats.borrow_mut();
            stats.published_window += self.published_window;
            stats.publishers.push(PublisherTally {
                id: self.id,
                sent: self.seq,
                unacked: self.shared.unacked.borrow().len() as u64,
            });
        }
        bump(&progress.publishers_finished, 1);
        match outcome {
            Ok(()) => {
                let _ = self.send(&Message::Disconnect(None)).await;
            }
            Err(problem) => self.local.problem(problem, true),
        }
    }

    async fn publish_all(&mut self) -> Result<(), Problem> {
        loop {
            if self.local.stopping() {
                return Ok(());
            }
            if let Some(problem) = self.shared.failed.take() {
                return Err(problem);
            }
            let now = clock::now_ns();
            self.retransmit(now).await?;
            let sent = self.publish(now).await?;
            if now.saturating_sub(self.last_send_ns) >= self.keepalive_half_ns {
                self.send(&Message::PingReq(None)).await?;
            }
            let publishing = now < self.timeline.end;
            let room = self.shared.unacked.borrow().has_room();
            if !publishing && self.shared.unacked.borrow().is_empty() {
                return Ok(());
            }
            if sent == BATCH {
                futures_lite::future::yield_now().await;
                continue;
            }
            let mut wake = self.shared.unacked.borrow_mut().next_due();
            if publishing && room {
                let next = self.pace.due(self.seq);
                wake = Some(wake.map_or(next, |at| at.min(next)));
            }
            if let Some(at) = wake {
                self.local.wake_at(self.slot, at);
            }
            // Woken by the pacer, a PUBACK, the watcher (every second and
            // at the end of the window) or the stop.
            self.parked().await;
        }
    }

    /// Returns once the task has been woken.
    async fn parked(&self) {
        let mut parked = false;
        poll_fn(|cx| {
            if parked {
                return Poll::Ready(());
            }
            self.local.park(self.slot, cx.waker());
            parked = true;
            Poll::Pending
        })
        .await
    }

    /// Sends every message allowed now, at most `BATCH`; returns how many.
    async fn publish(&mut self, now: u64) -> Result<usize, Problem> {
        let mut count = 0;
        while count < BATCH && self.may_publish(now) {
            let msg_id = match self.qos {
                QoS::AtMostOnce => 0,
                _ => self.shared.unacked.borrow_mut().insert(self.seq, now),
            };
            self.send_publish(msg_id, self.seq, now, false).await?;
            self.seq += 1;
            count += 1;
        }
        let n = count as u64;
        bump(&self.local.control.progress(self.local.index).published, n);
        if self.timeline.in_window(now) {
            self.published_window += n;
        }
        Ok(count)
    }

    fn may_publish(&self, now: u64) -> bool {
        now < self.timeline.end
            && self.shared.unacked.borrow().has_room()
            && self.seq < self.pace.allowed(now)
    }

    /// Sends again, with DUP, every QoS 1 message due by `now`.
    async fn retransmit(&mut self, now: u64) -> Result<(), Problem> {
        let mut due = std::mem::take(&mut self.resend);
        self.shared.unacked.borrow_mut().take_due(now, &mut due);
        let mut outcome = Ok(());
        for &(msg_id, seq, sent_ns) in &due {
            self.local.problem(Problem::Retransmitted, false);
            let retransmitted = &self.shared.retransmitted;
            retransmitted.set(retransmitted.get() + 1);
            outcome = self.send_publish(msg_id, seq, sent_ns, true).await;
            if outcome.is_err() {
                break;
            }
        }
        due.clear();
        self.resend = due;
        outcome
    }

    /// One PUBLISH of message `seq` first sent at `sent_ns`.
    async fn send_publish(
        &mut self,
        msg_id: u16,
        seq: u64,
        sent_ns: u64,
        dup: bool,
    ) -> Result<(), Problem> {
        self.out.clear();
        let publish = Message::Publish {
            flags: Flags { dup, ..self.flags },
            topic_id: self.topic_id,
            msg_id,
            data: self.template.stamp(seq, sent_ns),
        };
        encode(&publish, &mut self.out)?;
        self.flush().await
    }

    async fn send(&mut self, message: &Message<'_>) -> Result<(), Problem> {
        self.out.clear();
        encode(message, &mut self.out)?;
        self.flush().await
    }

    async fn flush(&mut self) -> Result<(), Problem> {
        self.last_send_ns = clock::now_ns();
        match self.socket.send(&self.out).await {
            Ok(_) => Ok(()),
            Err(e) => Err(udp_problem(&e)),
        }
    }
}

/// Reads what the gateway sends a publisher until the socket fails; wakes
/// the publisher after each datagram.
async fn receive(local: Rc<Local>, slot: usize, socket: Rc<UdpSocket>, shared: Rc<Shared>) {
    let mut buf = vec![0u8; RECEIVE_BUFFER];
    loop {
        let n = match socket.recv(&mut buf).await {
            Ok(n) => n,
            Err(e) => {
                shared.failed.set(Some(udp_problem(&e)));
                local.wake(slot);
                return;
            }
        };
        let message = buf.get(..n).map(codec::decode);
        match message {
            Some(Ok(Message::PubAck {
                code: ReturnCode::Congestion,
                ..
            })) => {
                // "Rejected: congestion" (§6.9): the message stays in the
                // window and is sent again when its retry is due, as a
                // client waits before it tries again (the gateway counts
                // these in shardmq_sn_congested_total).
            }
            Some(Ok(Message::PubAck { msg_id, code, .. })) => {
                let known = shared.unacked.borrow_mut().acked(msg_id);
                if code != ReturnCode::Accepted {
                    local.problem(Problem::PublishRefused, false);
                } else if !known && shared.retransmitted.get() == 0 {
                    local.problem(Problem::UnexpectedPacket, false);
                }
            }
            Some(Ok(Message::PingResp)) => {}
            Some(Ok(Message::Disconnect(_))) => {
                shared.failed.set(Some(Problem::ClosedByBroker));
                local.wake(slot);
                return;
            }
            Some(Ok(_)) => local.problem(Problem::UnexpectedPacket, false),
            Some(Err(_)) | None => local.problem(Problem::ProtocolError, false),
        }
        local.wake(slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    #[test]
    fn the_window_bounds_messages_awaiting_puback() {
        let mut u = Unacked::new(2, Duration::from_secs(1));
        let a = u.insert(0, 10);
        let b = u.insert(1, 10);
        assert_eq!((a, b), (1, 2));
        assert!(!u.has_room());
        assert!(u.acked(a));
        assert!(!u.acked(a), "a second PUBACK frees nothing");
        assert!(u.has_room());
        assert_eq!(u.insert(2, 20), 3);
        assert_eq!(u.len(), 2);
    }

    #[test]
    fn message_ids_wrap_past_zero_and_skip_those_in_use() {
        let mut u = Unacked::new(10, Duration::from_secs(1));
        u.last_id = u16::MAX - 1;
        assert_eq!(u.insert(0, 0), u16::MAX);
        assert_eq!(u.insert(1, 0), 1, "0 is not a message id");
        u.last_id = u16::MAX - 1;
        assert_eq!(u.insert(2, 0), 2, "65535 and 1 still await their PUBACK");
    }

    #[test]
    fn unacknowledged_messages_are_due_again_after_the_retry() {
        let mut u = Unacked::new(8, Duration::from_secs(1));
        let a = u.insert(0, 0);
        let b = u.insert(1, SECOND / 2);
        assert_eq!(u.next_due(), Some(SECOND));
        let mut due = Vec::new();
        u.take_due(SECOND - 1, &mut due);
        assert!(due.is_empty());
        u.take_due(SECOND, &mut due);
        assert_eq!(due, vec![(a, 0, 0)], "the first send time, for latency");
        // Sent again at 1 s: due at 2 s, after b.
        assert_eq!(u.next_due(), Some(SECOND + SECOND / 2));
        assert!(u.acked(b));
        assert_eq!(u.next_due(), Some(2 * SECOND), "acked b is skipped");
        due.clear();
        u.take_due(3 * SECOND, &mut due);
        assert_eq!(due, vec![(a, 0, 0)]);
        assert!(u.acked(a));
        assert_eq!(u.next_due(), None);
        due.clear();
        u.take_due(10 * SECOND, &mut due);
        assert!(due.is_empty());
    }

    #[test]
    fn a_reused_id_is_not_sent_again_for_its_old_message() {
        let mut u = Unacked::new(1, Duration::from_secs(1));
        let a = u.insert(0, 0);
        assert!(u.acked(a));
        u.last_id = 0;
        assert_eq!(u.insert(1, SECOND / 2), a);
        let mut due = Vec::new();
        u.take_due(SECOND, &mut due);
        assert!(due.is_empty(), "the entry for seq 0 is stale");
        u.take_due(SECOND + SECOND / 2, &mut due);
        assert_eq!(due, vec![(a, 1, SECOND / 2)]);
    }
}
