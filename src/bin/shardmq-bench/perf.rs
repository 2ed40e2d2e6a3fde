//! System calls and io_uring submissions of the broker over the measured
//! window (`--server-perf`), counted by `perf stat` on two tracepoints:
//! at a light load every message is its own wake-up, and what a wake-up
//! costs in kernel crossings is what CPU time alone does not explain.
//!
//! `perf` is an outside program and needs the right to trace another
//! process (root, or a low `kernel.perf_event_paranoid`). Without it the
//! run goes on with a warning and the report has no such figures.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde::Serialize;

/// One system call entered, by any thread of the process.
const SYSCALLS: &str = "raw_syscalls:sys_enter";

/// One io_uring request submitted; the name changed in Linux 5.18.
const SUBMISSIONS: [&str; 2] = [
    "io_uring:io_uring_submit_req",
    "io_uring:io_uring_submit_sqe",
];

/// Where the kernel lists its tracepoints, newer mount point first.
const TRACEFS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// Counts of the window, and per message (delivered message, or datagram
/// for `voice`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct KernelEvents {
    /// How long `perf` counted: the window's length, started with it.
    pub counted_s: f64,
    pub syscalls: u64,
    /// `None` when the kernel has no io_uring submission tracepoint.
    pub io_uring_submissions: Option<u64>,
    pub syscalls_per_message: f64,
    pub io_uring_submissions_per_message: Option<f64>,
}

/// A `perf stat` running over the window.
pub struct Counting {
    child: Option<Child>,
    output: PathBuf,
    window: Duration,
}

impl Counting {
    /// Starts counting for `window` the events of every thread of `pid`.
    pub fn start(pid: u32, window: Duration) -> Result<Counting, String> {
        let mut events = vec![SYSCALLS];
        events.extend(SUBMISSIONS.iter().find(|e| tracepoint_exists(e)));
        let output = std::env::temp_dir().join(format!(
            "shardmq-bench-perf-{}-{pid}.csv",
            std::process::id()
        ));
        let child = Command::new("perf")
            .args(["stat", "-x", ","])
            .arg("-o")
            .arg(&output)
            .args(["-e", &events.join(","), "-p", &pid.to_string()])
            .args(["--", "sleep", &format!("{:.3}", window.as_secs_f64())])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run perf: {e}"))?;
        Ok(Counting {
            child: Some(child),
            output,
            window,
        })
    }

    /// Waits for the count to end and reads it, per `messages`.
    pub fn finish(mut self, messages: u64) -> Result<KernelEvents, String> {
        let child = self.child.take().ok_or("perf is not running")?;
        let run = child.wait_with_output().map_err(|e| format!("perf: {e}"))?;
        if !run.status.success() {
            let said = String::from_utf8_lossy(&run.stderr);
            let last = said.lines().rev().find(|l| !l.trim().is_empty());
            return Err(format!(
                "perf stat failed ({}): {}",
                run.status,
                last.unwrap_or("no message")
            ));
        }
        let text = std::fs::read_to_string(&self.output)
            .map_err(|e| format!("cannot read perf's output: {e}"))?;
        let syscalls = count_of(&text, SYSCALLS)
            .ok_or("perf counted no system calls (is the process traceable?)")?;
        let submissions = SUBMISSIONS.iter().find_map(|e| count_of(&text, e));
        let per = |n: u64| {
            if messages == 0 {
                0.0
            } else {
                n as f64 / messages as f64
            }
        };
        Ok(KernelEvents {
            counted_s: self.window.as_secs_f64(),
            syscalls,
            io_uring_submissions: submissions,
            syscalls_per_message: per(syscalls),
            io_uring_submissions_per_message: submissions.map(per),
        })
    }
}

impl Drop for Counting {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.output);
    }
}

/// Starts counting if `--server-perf` asked for it; a failure to start
/// is a warning, not the end of the run.
pub fn start_if_asked(asked: bool, pid: Option<u32>, window: Duration) -> Option<Counting> {
    if !asked {
        return None;
    }
    let Some(pid) = pid else {
        eprintln!("shardmq-bench: warning: --server-perf needs --server-pid");
        return None;
    };
    Counting::start(pid, window)
        .map_err(|e| eprintln!("shardmq-bench: warning: no system call counts: {e}"))
        .ok()
}

/// The counts of a finished `start_if_asked`, or a warning.
pub fn finish(counting: Option<Counting>, messages: u64) -> Option<KernelEvents> {
    counting?
        .finish(messages)
        .map_err(|e| eprintln!("shardmq-bench: warning: no system call counts: {e}"))
        .ok()
}

fn tracepoint_exists(event: &str) -> bool {
    let Some((group, name)) = event.split_once(':') else {
        return false;
    };
    TRACEFS.iter().any(|root| {
        Path::new(root)
            .join("events")
            .join(group)
            .join(name)
            .is_dir()
    })
}

/// The count of `event` in `perf stat -x ,` output: `value,unit,event,...`
/// lines, the value `<not counted>` or `<not supported>` when there is none.
fn count_of(text: &str, event: &str) -> Option<u64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .map(|line| line.split(',').collect::<Vec<_>>())
        .find(|fields| fields.get(2) == Some(&event))
        .and_then(|fields| fields.first()?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_read_from_perf_csv() {
        let text = "# started on Thu Dec  3 10:32:04 2026\n\n\
                    1763245,,raw_syscalls:sys_enter,404093726,100.00,,\n\
                    <not counted>,,io_uring:io_uring_submit_req,0,100.00,,\n";
        assert_eq!(count_of(text, SYSCALLS), Some(1_763_245));
        assert_eq!(count_of(text, SUBMISSIONS[0]), None);
        assert_eq!(count_of(text, SUBMISSIONS[1]), None);
    }
}
