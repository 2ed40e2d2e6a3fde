//! Each shard's store on disk: loading it before the listeners accept, the
//! writer task that appends the broker's journal with one `fdatasync` per
//! batch (group commit), compaction, and the flush the shutdown path calls.
//!
//! # Files
//! ```text
//! DIR/lock              flock(2)ed by the running server
//! DIR/shards            the shard count that wrote the stores
//! DIR/shard-<i>/store.log   shard i's log (format: `crate::mqtt::store`)
//! ```
//! A client id's shard is `owner_shard(id, shards)`, so the stores are only
//! meaningful for the shard count that wrote them: another count is refused
//! at start with a clear message.
//!
//! # Ownership
//! 1. A shard's `Log` is touched by its writer task only, and by the
//!    blocking thread it lends the log to for one write (`spawn_blocking`):
//!    the shard's reactor never waits on the disk.
//! 2. Stores are read on the starting thread, all shards in parallel,
//!    before any executor runs.

mod check;
pub mod config;

pub use check::check;
pub use config::{PersistenceConfig, PersistenceSettings};

use std::cell::{Cell, RefCell};
use std::fs::{File, OpenOptions};
use std::future::poll_fn;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::task::{Poll, Waker};

use crate::mqtt::broker::{Durability, ShardId};
use crate::mqtt::store::{self, state::State, StoreError};

use super::Shard;

/// Why a store cannot be used; start-up stops with it.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("store {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("store {path}: {source}")]
    Format { path: PathBuf, source: StoreError },
    #[error(
        "store {dir} was written by {found} shards, this server runs {configured}: client ids \
         map to shards by their count, so start with {found} shards or move the store away"
    )]
    ShardCount {
        dir: PathBuf,
        found: usize,
        configured: usize,
    },
    #[error("store {dir} is in use by another process")]
    Locked { dir: PathBuf },
}

/// A shard's log file, open for appends.
pub struct Log {
    path: PathBuf,
    file: File,
    /// Bytes in the file.
    len: u64,
    /// Bytes right after the last compaction (or load): the live state's
    /// size, roughly; the log is compacted when it outgrows it.
    base: u64,
    compact_min: u64,
}

/// A compaction is due when the log is this many times its live size.
const COMPACT_RATIO: u64 = 4;

impl Log {
    fn due(&self) -> bool {
        self.len >= self.compact_min && self.len >= self.base.saturating_mul(COMPACT_RATIO)
    }

    /// Appends `bytes` and syncs; or, for a snapshot, writes a new file
    /// with them, syncs it and renames it over the log.
    fn write(&mut self, bytes: &[u8], snapshot: bool) -> std::io::Result<()> {
        if snapshot {
            return self.replace(bytes);
        }
        if bytes.is_empty() {
            return Ok(());
        }
        self.file.write_all(bytes)?;
        self.file.sync_data()?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    fn replace(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let tmp = self.path.with_extension("log.new");
        let mut file = File::create(&tmp)?;
        file.write_all(&store::header())?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        sync_dir(&self.path)?;
        self.file = OpenOptions::new().append(true).open(&self.path)?;
        self.len = (store::HEADER_LEN + bytes.len()) as u64;
        self.base = self.len;
        Ok(())
    }
}

fn sync_dir(file: &Path) -> std::io::Result<()> {
    match file.parent() {
        Some(dir) => File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

/// One shard's part of what start-up read.
pub struct Restored {
    pub state: State,
    pub log: Log,
    /// Every shard's restored filters (`Loaded::routes`).
    pub routes: std::sync::Arc<Vec<(ShardId, String)>>,
}

/// What start-up read: per shard, its state and its log.
pub struct Loaded {
    pub shards: Vec<(State, Log)>,
    /// Every restored session's filters, by shard: each shard routes them
    /// from the start.
    pub routes: Vec<(ShardId, String)>,
    /// Held for the server's life: the `flock` on `DIR/lock`.
    pub lock: File,
}

/// Opens (or creates) the stores of `shards` shards under `settings.dir`,
/// cuts torn tails (logged), and replays them.
pub fn load(settings: &PersistenceSettings, shards: usize) -> Result<Loaded, LoadError> {
    let dir = &settings.dir;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| LoadError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let lock = lock_dir(dir)?;
    check_shard_count(dir, shards)?;
    let results: Vec<Result<(State, Log), LoadError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..shards)
            .map(|i| scope.spawn(move || load_shard(settings, i)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| panic!("store loader panicked")))
            .collect()
    });
    let mut loaded = Loaded {
        shards: Vec::with_capacity(shards),
        routes: Vec::new(),
        lock,
    };
    for (i, result) in results.into_iter().enumerate() {
        let (state, log) = result?;
        for filter in state.filters() {
            loaded.routes.push((ShardId(i as u16), filter));
        }
        loaded.shards.push((state, log));
    }
    Ok(loaded)
}

fn lock_dir(dir: &Path) -> Result<File, LoadError> {
    let path = dir.join("lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| LoadError::Io {
            path: path.clone(),
            source,
        })?;
    // SAFETY: flock on a descriptor this function owns; no memory is shared.
    let rc = unsafe {
        libc::flock(
            std::os::fd::AsRawFd::as_raw_fd(&file),
            libc::LOCK_EX | libc::LOCK_NB,
        )
    };
    if rc != 0 {
        return Err(LoadError::Locked {
            dir: dir.to_path_buf(),
        });
    }
    Ok(file)
}

fn check_shard_count(dir: &Path, shards: usize) -> Result<(), LoadError> {
    let path = dir.join("shards");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let found = text
                .trim()
                .parse::<usize>()
                .map_err(|_| LoadError::Format {
                    path: path.clone(),
                    source: StoreError::Damaged {
                        offset: 0,
                        reason: "not a shard count",
                    },
                })?;
            if found != shards {
                return Err(LoadError::ShardCount {
                    dir: dir.to_path_buf(),
                    found,
                    configured: shards,
                });
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let write = || -> std::io::Result<()> {
                let mut f = File::create(&path)?;
                writeln!(f, "{shards}")?;
                f.sync_all()?;
                sync_dir(&path)
            };
            write().map_err(|source| LoadError::Io { path, source })
        }
        Err(source) => Err(LoadError::Io { path, source }),
    }
}

/// The log of shard `i` under `dir`.
pub fn log_path(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("shard-{i}")).join("store.log")
}

fn load_shard(settings: &PersistenceSettings, i: usize) -> Result<(State, Log), LoadError> {
    let path = log_path(&settings.dir, i);
    let io = |source| LoadError::Io {
        path: path.clone(),
        source,
    };
    let mut state = State::default();
    let read = match std::fs::read(&path) {
        Ok(bytes) if store::is_unfinished_header(&bytes) => {
            tracing::warn!(path = %path.display(), "store was never finished; created again");
            Err(std::io::ErrorKind::NotFound.into())
        }
        other => other,
    };
    let len = match read {
        Ok(bytes) => {
            let scan = store::scan(&bytes).map_err(|source| LoadError::Format {
                path: path.clone(),
                source,
            })?;
            if scan.torn_bytes > 0 {
                tracing::warn!(
                    path = %path.display(),
                    bytes_cut = scan.torn_bytes,
                    "store ends in a torn write; cut"
                );
                let file = OpenOptions::new().write(true).open(&path).map_err(io)?;
                file.set_len(scan.good_len).map_err(io)?;
                file.sync_all().map_err(io)?;
            }
            for record in scan.records {
                state.apply(record);
            }
            if state.ignored > 0 {
                tracing::warn!(
                    path = %path.display(),
                    records = state.ignored,
                    "store records about no held session or packet id were ignored"
                );
            }
            scan.good_len
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(io)?;
            }
            let mut file = File::create(&path).map_err(io)?;
            file.write_all(&store::header()).map_err(io)?;
            file.sync_all().map_err(io)?;
            sync_dir(&path).map_err(io)?;
            store::HEADER_LEN as u64
        }
        Err(e) => return Err(io(e)),
    };
    let file = OpenOptions::new().append(true).open(&path).map_err(io)?;
    let sum = state.summary();
    tracing::info!(
        shard = i,
        sessions = sum.sessions,
        retained = sum.retained,
        queued = sum.queued + sum.inflight,
        bytes = len,
        "store loaded"
    );
    Ok((
        state,
        Log {
            path,
            file,
            len,
            base: len,
            compact_min: settings.compact_min_bytes,
        },
    ))
}

/// A shard's side of its store: the log between writes, and who waits.
pub(crate) struct ShardStore {
    durability: Durability,
    flush_interval: std::time::Duration,
    log: RefCell<Option<Log>>,
    writer: RefCell<Option<Waker>>,
    /// A flush was asked for: write now, whatever the interval.
    urgent: Cell<bool>,
    flush_waiters: RefCell<Vec<Waker>>,
}

impl ShardStore {
    pub(crate) fn new(settings: &PersistenceSettings, log: Log) -> ShardStore {
        ShardStore {
            durability: settings.durability,
            flush_interval: settings.flush_interval,
            log: RefCell::new(Some(log)),
            writer: RefCell::new(None),
            urgent: Cell::new(false),
            flush_waiters: RefCell::new(Vec::new()),
        }
    }

    /// After the broker took input: in `sync` mode new records go out now.
    pub(crate) fn after_input(&self, uncommitted: bool) {
        if uncommitted && self.durability == Durability::Sync {
            self.wake_writer();
        }
    }

    fn wake_writer(&self) {
        if let Some(w) = self.writer.borrow_mut().take() {
            w.wake();
        }
    }
}

impl Shard {
    /// Makes everything the broker journaled so far durable; returns once
    /// it is (at once without a store). The shutdown path calls this after
    /// the last input, before the process exits.
    pub async fn flush_store(&self) {
        let Some(store) = &self.store else {
            return;
        };
        let target = self.broker.borrow().appended();
        poll_fn(|cx| {
            if self.broker.borrow().committed() >= target {
                return Poll::Ready(());
            }
            store.flush_waiters.borrow_mut().push(cx.waker().clone());
            store.urgent.set(true);
            store.wake_writer();
            Poll::Pending
        })
        .await;
    }
}

/// The writer task of a shard: waits for work (at once in `sync` mode, each
/// flush interval in `periodic` mode, or when a flush is asked for), hands
/// the journal and the log to the blocking thread for one write and one
/// `fdatasync`, and reports the commit to the broker.
pub(crate) async fn run_writer(shard: Rc<Shard>) {
    let Some(store) = &shard.store else {
        return;
    };
    loop {
        wait_for_work(&shard, store).await;
        store.urgent.set(false);
        let Some(mut log) = store.log.borrow_mut().take() else {
            return;
        };
        let batch = shard.broker.borrow_mut().take_journal(log.due());
        let snapshot = batch.snapshot;
        let (log, result) = glommio::executor()
            .spawn_blocking(move || {
                let result = log.write(&batch.bytes, batch.snapshot);
                (log, result.map(|()| batch.end))
            })
            .await;
        match result {
            Ok(end) => {
                if snapshot {
                    tracing::info!(shard = shard.id.0, bytes = log.len, "store compacted");
                }
                *store.log.borrow_mut() = Some(log);
                shard.broker.borrow_mut().handle_committed(end);
                for w in store.flush_waiters.borrow_mut().drain(..) {
                    w.wake();
                }
                shard.after_input();
            }
            Err(e) => {
                // What was acknowledged may not be on disk, and a retry
                // after a failed fsync cannot tell: stop, as databases do.
                tracing::error!(path = %log.path.display(), error = %e, "store write failed; stopping");
                std::process::exit(1);
            }
        }
    }
}

async fn wait_for_work(shard: &Shard, store: &ShardStore) {
    let sync = store.durability == Durability::Sync;
    loop {
        // `sync`: woken by `after_input` as soon as records are appended.
        // `periodic`: the interval, or an urgent flush, whichever first.
        let woken = poll_fn(|cx| {
            if store.urgent.get() || (sync && shard.broker.borrow().uncommitted()) {
                return Poll::Ready(());
            }
            *store.writer.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        });
        if sync {
            woken.await;
        } else {
            futures_lite::future::or(woken, glommio::timer::sleep(store.flush_interval)).await;
        }
        if store.urgent.get() || shard.broker.borrow().uncommitted() {
            return;
        }
    }
}
