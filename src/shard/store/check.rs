//! `shardmq store check DIR`: what a store holds and any damage, read
//! without changing a byte (a torn tail is reported, not cut).

use std::io::Write;
use std::path::Path;

use crate::mqtt::store::{self, state::State, StoreError};

/// Writes a report of the store under `dir` to `out`; `Ok(true)` when every
/// shard's log is whole (no damage, no torn tail).
pub fn check(dir: &Path, out: &mut impl Write) -> std::io::Result<bool> {
    writeln!(out, "store {}", dir.display())?;
    let shards = match std::fs::read_to_string(dir.join("shards")) {
        Ok(text) => match text.trim().parse::<usize>() {
            Ok(n) => n,
            Err(_) => {
                writeln!(
                    out,
                    "  damage: {}/shards is not a shard count",
                    dir.display()
                )?;
                return Ok(false);
            }
        },
        Err(e) => {
            writeln!(out, "  damage: cannot read {}/shards: {e}", dir.display())?;
            return Ok(false);
        }
    };
    writeln!(out, "  shards: {shards}")?;
    writeln!(out, "  format version: {}", store::FORMAT_VERSION)?;
    let mut clean = true;
    let mut total = State::default().summary();
    for i in 0..shards {
        let path = super::log_path(dir, i);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) => {
                writeln!(
                    out,
                    "  shard {i}: damage: cannot read {}: {e}",
                    path.display()
                )?;
                clean = false;
                continue;
            }
        };
        let scan = match store::scan(&bytes) {
            Ok(scan) => scan,
            Err(e) => {
                let what = match e {
                    StoreError::Version { .. } => "other format",
                    _ => "damage",
                };
                writeln!(out, "  shard {i}: {what}: {}: {e}", path.display())?;
                clean = false;
                continue;
            }
        };
        let records = scan.records.len();
        let mut state = State::default();
        for r in scan.records {
            state.apply(r);
        }
        let s = state.summary();
        writeln!(
            out,
            "  shard {i}: {} bytes, {records} records, {} sessions, {} subscriptions, \
             {} queued, {} in flight, {} inbound QoS 2 awaiting PUBREL, \
             {} retained ({} bytes)",
            bytes.len(),
            s.sessions,
            s.subscriptions,
            s.queued,
            s.inflight,
            s.inbound_qos2,
            s.retained,
            s.retained_bytes,
        )?;
        if scan.torn_bytes > 0 {
            writeln!(
                out,
                "  shard {i}: torn tail: {} bytes after byte {} of {} (cut at the next start)",
                scan.torn_bytes,
                scan.good_len,
                path.display()
            )?;
            clean = false;
        }
        if s.ignored_records > 0 {
            writeln!(
                out,
                "  shard {i}: {} records about no held session or packet id",
                s.ignored_records
            )?;
        }
        total.sessions += s.sessions;
        total.subscriptions += s.subscriptions;
        total.queued += s.queued;
        total.inflight += s.inflight;
        total.inbound_qos2 += s.inbound_qos2;
        total.retained = total.retained.max(s.retained);
        total.retained_bytes = total.retained_bytes.max(s.retained_bytes);
    }
    writeln!(
        out,
        "  total: {} sessions, {} subscriptions, {} queued, {} in flight, \
         {} inbound QoS 2; retained (each shard keeps a replica): {} ({} bytes)",
        total.sessions,
        total.subscriptions,
        total.queued,
        total.inflight,
        total.inbound_qos2,
        total.retained,
        total.retained_bytes,
    )?;
    writeln!(out, "  {}", if clean { "ok" } else { "DAMAGED" })?;
    Ok(clean)
}
