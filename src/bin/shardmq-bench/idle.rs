//! The idle driver of `conns`: holds a connection open, sends PINGREQ
//! every half keepalive and counts the PINGRESPs, until the run stops.
//!
//! Each connection has its own timer, first armed at a random point of the
//! interval so that thousands of connections do not ping in step, and it
//! is polled only when that timer fires or the broker sends something.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use glommio::timer::Timer;
use rand::Rng;

use super::client::Conn;
use super::stats::Problem;
use super::worker::{drive, Local, Step};
use shardmq::mqtt::codec::Packet;

/// An idle client.
pub struct Idle {
    local: Rc<Local>,
    slot: usize,
    conn: Conn,
    interval: Duration,
    ping: Timer,
}

impl Idle {
    pub fn new(local: Rc<Local>, slot: usize, conn: Conn) -> Idle {
        let interval = Duration::from_secs(u64::from(local.settings.keepalive_s)) / 2;
        let first = interval.mul_f64(rand::thread_rng().gen_range(0.5..1.0));
        Idle {
            slot,
            conn,
            interval,
            ping: Timer::new(first),
            local,
        }
    }

    /// Holds the connection until the run stops, then disconnects.
    pub async fn run(mut self) {
        let outcome = drive(|cx| self.step(cx)).await;
        self.local.finish(self.conn, outcome).await;
    }

    fn step(&mut self, cx: &mut Context<'_>) -> Result<Step, Problem> {
        self.local.park(self.slot, cx.waker());
        if self.local.stopping() {
            return Ok(Step::Finished);
        }
        if Pin::new(&mut self.ping).poll(cx).is_ready() {
            Packet::PingReq.encode(&mut self.conn.wbuf);
            self.ping.reset(self.interval);
            // Polling the re-armed timer registers this task with it.
            let _ = Pin::new(&mut self.ping).poll(cx);
        }
        loop {
            match self.conn.poll_read(cx) {
                Poll::Ready(Ok(_)) => self.handle_input()?,
                Poll::Ready(Err(problem)) => return Err(problem),
                Poll::Pending => break,
            }
        }
        self.conn.shrink_idle();
        if let Poll::Ready(result) = self.conn.poll_flush(cx) {
            result?;
        }
        Ok(Step::Wait)
    }

    fn handle_input(&mut self) -> Result<(), Problem> {
        while let Some(packet) = self.conn.next_packet()? {
            match packet {
                Packet::PingResp => self.local.stats.borrow_mut().pings += 1,
                _ => self.local.problem(Problem::UnexpectedPacket, false),
            }
        }
        Ok(())
    }
}
