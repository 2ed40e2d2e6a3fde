//! What the bench reads from the system: its own CPU time, a broker's CPU
//! time and memory from `/proc/PID`, and the open-files limit it raises.

use std::io;
use std::time::Duration;

use serde::Serialize;

/// CPU time (user + system) of this process, all threads.
pub fn self_cpu() -> Duration {
    // SAFETY: `rusage` is plain old data, so all-zero is a valid value, and
    // getrusage only writes into the struct we pass.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    timeval(usage.ru_utime) + timeval(usage.ru_stime)
}

fn timeval(tv: libc::timeval) -> Duration {
    Duration::from_secs(tv.tv_sec.max(0) as u64) + Duration::from_micros(tv.tv_usec.max(0) as u64)
}

/// CPU time of a process, in user space (utime) and in the kernel on its
/// behalf (stime).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTimes {
    pub user: Duration,
    pub system: Duration,
}

impl CpuTimes {
    pub fn total(&self) -> Duration {
        self.user + self.system
    }

    /// What was spent since `earlier`.
    pub fn since(&self, earlier: &CpuTimes) -> CpuTimes {
        CpuTimes {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
        }
    }
}

/// CPU time (utime + stime, all threads) of process `pid`, from
/// `/proc/PID/stat`, in clock ticks converted to a duration.
pub fn process_cpu(pid: u32) -> io::Result<Duration> {
    process_cpu_times(pid).map(|t| t.total())
}

/// utime and stime (all threads) of process `pid`, from `/proc/PID/stat`.
pub fn process_cpu_times(pid: u32) -> io::Result<CpuTimes> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat_cpu(&stat, clock_ticks_per_second())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unexpected /proc/PID/stat"))
}

fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf reads a configuration value and has no memory effects.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as u64
    } else {
        100
    }
}

/// utime + stime from a `/proc/PID/stat` line. The command name (field 2)
/// may hold spaces and parentheses, so fields are counted from the last
/// `)`: after it come field 3 (state), ..., field 14 (utime), 15 (stime).
fn parse_stat_cpu(stat: &str, ticks_per_s: u64) -> Option<CpuTimes> {
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let mut fields = rest.split_whitespace().skip(14 - 3);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    let time = |ticks: u64| Duration::from_nanos(ticks * 1_000_000_000 / ticks_per_s);
    Some(CpuTimes {
        user: time(utime),
        system: time(stime),
    })
}

/// Memory of a process, in KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Memory {
    /// `VmRSS` of /proc/PID/status.
    pub vm_rss_kib: u64,
    /// `VmHWM` (peak RSS) of /proc/PID/status.
    pub vm_hwm_kib: u64,
    /// `Pss` of /proc/PID/smaps_rollup (0 if unreadable).
    pub pss_kib: u64,
    /// `Anonymous` of /proc/PID/smaps_rollup: heap and stacks, not files.
    pub anonymous_kib: u64,
}

/// Memory of process `pid` ("self" for this one).
pub fn memory(pid: &str) -> io::Result<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    // smaps_rollup needs Linux 4.14 and ptrace access; without it the
    // figures from status still stand.
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    Ok(Memory {
        vm_rss_kib: kib_field(&status, "VmRSS:").unwrap_or(0),
        vm_hwm_kib: kib_field(&status, "VmHWM:").unwrap_or(0),
        pss_kib: kib_field(&rollup, "Pss:").unwrap_or(0),
        anonymous_kib: kib_field(&rollup, "Anonymous:").unwrap_or(0),
    })
}

/// The value of a `Name:   1234 kB` line.
fn kib_field(text: &str, name: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(name))?;
    line[name.len()..].split_whitespace().next()?.parse().ok()
}

/// The signal that interrupts a stuck executor (see `doorbell`). SIGURG
/// is ignored by default, so a stray one harms nothing.
const INTERRUPT: libc::c_int = libc::SIGURG;

extern "C" fn ignore(_: libc::c_int) {}

/// Installs a handler for the interrupt signal that does nothing: the
/// point is only that a blocking wait returns. `SA_RESTART` keeps every
/// other interrupted call going as if nothing happened.
pub fn install_interrupt_handler() -> io::Result<()> {
    // SAFETY: `sigaction` is plain old data, so all-zero is a valid value
    // and an empty mask; the handler is an `extern "C"` function that does
    // nothing, which is async-signal-safe.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = ignore as extern "C" fn(libc::c_int) as libc::sighandler_t;
        action.sa_flags = libc::SA_RESTART;
        if libc::sigaction(INTERRUPT, &action, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The calling thread's id, for `interrupt_thread`.
pub fn current_thread() -> u64 {
    // SAFETY: pthread_self has no preconditions. `pthread_t` is an
    // unsigned long on Linux, which fits a u64.
    unsafe { libc::pthread_self() as u64 }
}

/// The calling thread's kernel id, for `thread_sleeps`.
pub fn current_tid() -> u32 {
    // SAFETY: gettid has no preconditions and cannot fail.
    let tid = unsafe { libc::gettid() };
    tid.max(0) as u32
}

/// True if thread `tid` of this process is asleep in the kernel (state S
/// or D in /proc/self/task/TID/stat), false if running, runnable or gone.
pub fn thread_sleeps(tid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")) else {
        return false;
    };
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next());
    matches!(state, Some("S" | "D"))
}

/// Sends the interrupt signal to a thread of this process, as returned by
/// `current_thread` on that thread, which must still be running.
pub fn interrupt_thread(thread: u64) {
    // SAFETY: the id comes from pthread_self on a thread of this process
    // that has not been joined (the caller joins only after its last
    // ring), and the signal has a handler (`install_interrupt_handler`),
    // so it cannot end the process.
    unsafe {
        libc::pthread_kill(thread as libc::pthread_t, INTERRUPT);
    }
}

/// Raises the soft open-files limit to the hard limit and returns the new
/// soft limit: `conns` holds one descriptor per connection.
pub fn raise_open_files_limit() -> io::Result<u64> {
    // SAFETY: `rlimit` is plain old data; getrlimit/setrlimit only read or
    // write the struct we pass.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(io::Error::last_os_error());
        }
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(limit.rlim_cur)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_cpu_skips_odd_command_names() {
        let stat = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 4 0 1 2 3";
        let times = parse_stat_cpu(stat, 100).unwrap();
        assert_eq!(times.user, Duration::from_millis(2500));
        assert_eq!(times.system, Duration::from_millis(500));
        assert_eq!(times.total(), Duration::from_secs(3));
    }

    #[test]
    fn own_process_is_readable() {
        assert!(memory("self").unwrap().vm_rss_kib > 0);
        assert!(process_cpu(std::process::id()).is_ok());
    }

    #[test]
    fn a_thread_waiting_on_a_channel_sleeps() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || {
            tid_tx.send(current_tid()).unwrap();
            let _ = rx.recv();
        });
        let tid = tid_rx.recv().unwrap();
        // The thread goes to sleep soon after sending its id.
        let asleep = (0..200).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(5));
            thread_sleeps(tid)
        });
        drop(tx);
        waiter.join().unwrap();
        assert!(asleep);
        assert!(!thread_sleeps(tid), "a finished thread is not asleep");
    }

    #[test]
    fn kib_fields_parse() {
        let status = "Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n";
        assert_eq!(kib_field(status, "VmRSS:"), Some(1024));
        assert_eq!(kib_field(status, "VmHWM:"), Some(2048));
        assert_eq!(kib_field(status, "Pss:"), None);
    }
}
