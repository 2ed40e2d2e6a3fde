//! Opening one thread's clients: CONNECT and CONNACK for each, SUBSCRIBE
//! and SUBACK for subscribers, a bounded number at a time so the broker's
//! listen backlog does not overflow.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use super::client::Conn;
use super::clock;
use super::control::bump;
use super::scenario::{PubSpec, SubSpec, ThreadPlan};
use super::sn::SnClient;
use super::stats::Problem;
use super::worker::Local;
use shardmq::mqtt::QoS;

/// The clients of one thread once set up.
pub struct Opened {
    pub publishers: Vec<(PubSpec, Conn)>,
    /// `sn`: the publishers are MQTT-SN clients.
    pub sn_publishers: Vec<(PubSpec, SnClient)>,
    pub subscribers: Vec<(SubSpec, Conn)>,
    pub idle: Vec<Conn>,
}

/// Opens every client of `plan`, at most `connect_concurrency` at a time.
/// Returns the clients that made it and whether any did not.
pub async fn open_all(local: &Rc<Local>, plan: ThreadPlan) -> (Opened, bool) {
    let jobs = Rc::new(Jobs {
        plan,
        next: Cell::new(0),
        opened: RefCell::new(Opened {
            publishers: Vec::new(),
            sn_publishers: Vec::new(),
            subscribers: Vec::new(),
            idle: Vec::new(),
        }),
        failed: Cell::new(false),
    });
    let workers: Vec<_> = (0..local.settings.connect_concurrency.max(1))
        .map(|_| glommio::spawn_local(open_worker(local.clone(), jobs.clone())))
        .collect();
    for w in workers {
        w.await;
    }
    let jobs = Rc::try_unwrap(jobs).unwrap_or_else(|_| unreachable!("open workers are done"));
    (jobs.opened.into_inner(), jobs.failed.get())
}

/// The clients to open, shared by the open workers.
struct Jobs {
    plan: ThreadPlan,
    next: Cell<usize>,
    opened: RefCell<Opened>,
    failed: Cell<bool>,
}

impl Jobs {
    fn take(&self) -> Option<usize> {
        let i = self.next.get();
        let total = self.plan.publishers.len() + self.plan.subscribers.len() + self.plan.idle.len();
        (i < total).then(|| {
            self.next.set(i + 1);
            i
        })
    }
}

async fn open_worker(local: Rc<Local>, jobs: Rc<Jobs>) {
    let pubs = jobs.plan.publishers.len();
    let subs = jobs.plan.subscribers.len();
    while let Some(i) = jobs.take() {
        let give_up = jobs.failed.get() && local.settings.all_or_nothing;
        if give_up || local.control.stopped() {
            return;
        }
        let outcome = if i < pubs && local.settings.sn.is_some() {
            let spec = &jobs.plan.publishers[i];
            open_sn(&local, spec).await.map(|client| {
                jobs.opened
                    .borrow_mut()
                    .sn_publishers
                    .push((spec.clone(), client))
            })
        } else if i < pubs {
            let spec = &jobs.plan.publishers[i];
            open_one(&local, &spec.client_id).await.map(|conn| {
                jobs.opened
                    .borrow_mut()
                    .publishers
                    .push((spec.clone(), conn))
            })
        } else if i < pubs + subs {
            let spec = &jobs.plan.subscribers[i - pubs];
            open_subscriber(&local, spec).await.map(|conn| {
                jobs.opened
                    .borrow_mut()
                    .subscribers
                    .push((spec.clone(), conn))
            })
        } else {
            open_one(&local, &jobs.plan.idle[i - pubs - subs])
                .await
                .map(|conn| jobs.opened.borrow_mut().idle.push(conn))
        };
        if let Err(problem) = outcome {
            local.problem(problem, true);
            jobs.failed.set(true);
        }
    }
}

/// Connects one client and records how long it took.
async fn open_one(local: &Local, client_id: &str) -> Result<Conn, Problem> {
    let settings = &local.settings;
    let began = clock::now_ns();
    let mut conn = Conn::open(
        &settings.endpoint,
        client_id,
        settings.keepalive_s,
        settings.connect_timeout,
    )
    .await?;
    conn.shrink_idle();
    let mut stats = local.stats.borrow_mut();
    stats
        .connect_latency
        .saturating_record((clock::now_ns() - began).max(1));
    stats.connected += 1;
    bump(&local.control.progress(local.index).connected, 1);
    Ok(conn)
}

/// Connects and registers an MQTT-SN publisher, and records how long it
/// took.
async fn open_sn(local: &Local, spec: &PubSpec) -> Result<SnClient, Problem> {
    let began = clock::now_ns();
    let client = SnClient::open(local, spec).await?;
    let mut stats = local.stats.borrow_mut();
    stats
        .connect_latency
        .saturating_record((clock::now_ns() - began).max(1));
    stats.connected += 1;
    bump(&local.control.progress(local.index).connected, 1);
    Ok(client)
}

/// Connects a subscriber and waits for its SUBACK.
async fn open_subscriber(local: &Local, spec: &SubSpec) -> Result<Conn, Problem> {
    let mut conn = open_one(local, &spec.client_id).await?;
    let qos = local
        .settings
        .load
        .as_ref()
        .map_or(QoS::AtMostOnce, |l| l.qos);
    conn.subscribe(&spec.filter, qos, local.settings.connect_timeout)
        .await?;
    Ok(conn)
}
