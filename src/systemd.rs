//! The service manager's notification protocol (`sd_notify(3)`) without
//! libsystemd: newline-separated `KEY=VALUE` assignments in one datagram to
//! the unix socket `$NOTIFY_SOCKET` names (a path, or an abstract socket
//! when it starts with `@`). Outside systemd the variable is unset and
//! every call does nothing.
//!
//! The watchdog (`WatchdogSec=` in the unit) sends `WATCHDOG=1` every half
//! period, and only when every shard answered a health ping within it
//! (`shard::Control`): a shard stuck in a task stops the keep-alives, so
//! systemd restarts the service.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::Arc;
use std::time::Duration;

use crate::shard::Control;

/// One assignment of a notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Start-up is finished: every listener is bound.
    Ready,
    /// The service is stopping.
    Stopping,
    /// Free text for `systemctl status`.
    Status(String),
    /// The watchdog keep-alive.
    Watchdog,
}

impl State {
    fn write(&self, out: &mut String) {
        match self {
            State::Ready => out.push_str("READY=1"),
            State::Stopping => out.push_str("STOPPING=1"),
            State::Watchdog => out.push_str("WATCHDOG=1"),
            State::Status(text) => {
                out.push_str("STATUS=");
                // One line per assignment: a newline would start another.
                out.extend(text.chars().map(|c| if c == '\n' { ' ' } else { c }));
            }
        }
    }
}

/// The datagram for `states`: one assignment per line.
pub fn message(states: &[State]) -> String {
    let mut out = String::new();
    for state in states {
        if !out.is_empty() {
            out.push('\n');
        }
        state.write(&mut out);
    }
    out
}

/// The socket address `NOTIFY_SOCKET` names: a path, or `@name` for an
/// abstract socket. `None` for an empty or relative value, which systemd
/// never sets.
pub fn notify_address(value: &str) -> Option<io::Result<SocketAddr>> {
    if let Some(name) = value.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        return Some(SocketAddr::from_abstract_name(name.as_bytes()));
    }
    value
        .starts_with('/')
        .then(|| SocketAddr::from_pathname(value))
}

/// Where notifications go; does nothing without `NOTIFY_SOCKET`.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    target: Option<Arc<(UnixDatagram, SocketAddr)>>,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`; an unusable value is logged and ignored.
    pub fn from_env() -> Notifier {
        let Some(value) = std::env::var_os("NOTIFY_SOCKET") else {
            return Notifier::default();
        };
        let value = value.to_string_lossy();
        let target = match notify_address(&value) {
            Some(Ok(addr)) => UnixDatagram::unbound().map(|socket| (socket, addr)),
            Some(Err(e)) => Err(e),
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a socket path",
            )),
        };
        match target {
            Ok(target) => Notifier {
                target: Some(Arc::new(target)),
            },
            Err(e) => {
                tracing::warn!(socket = %value, error = %e, "NOTIFY_SOCKET unusable; not notifying");
                Notifier::default()
            }
        }
    }

    /// Whether a service manager listens.
    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Sends `states` in one datagram; a failure is logged, never fatal.
    pub fn notify(&self, states: &[State]) {
        let Some(target) = &self.target else { return };
        let (socket, addr) = &**target;
        if let Err(e) = socket.send_to_addr(message(states).as_bytes(), addr) {
            tracing::warn!(error = %e, "cannot notify the service manager");
        }
    }
}

/// The keep-alive period: half of `WATCHDOG_USEC`, when it is set and
/// `WATCHDOG_PID` is unset or names this process (`sd_watchdog_enabled(3)`).
pub fn watchdog_period(usec: Option<&str>, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|&u| u > 0)?;
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok()? != own_pid {
            return None;
        }
    }
    Some(Duration::from_micros(usec) / 2)
}

/// Starts the watchdog thread when the environment asks for one: each
/// period it pings every shard and, if all answered by the end of the
/// period, sends `WATCHDOG=1`. `None` without a watchdog.
pub fn start_watchdog(
    notifier: &Notifier,
    control: Arc<Control>,
) -> io::Result<Option<std::thread::JoinHandle<()>>> {
    let usec = std::env::var("WATCHDOG_USEC").ok();
    let pid = std::env::var("WATCHDOG_PID").ok();
    let Some(period) = watchdog_period(usec.as_deref(), pid.as_deref(), std::process::id()) else {
        return Ok(None);
    };
    if !notifier.enabled() {
        return Ok(None);
    }
    let notifier = notifier.clone();
    tracing::info!(?period, "watchdog keep-alives on");
    std::thread::Builder::new()
        .name("watchdog".to_string())
        .spawn(move || loop {
            let round = control.ping();
            std::thread::sleep(period);
            let late = control.late(round);
            if late.is_empty() {
                notifier.notify(&[State::Watchdog]);
            } else {
                tracing::warn!(
                    ?late,
                    ?period,
                    "shards did not answer in time; WATCHDOG=1 withheld"
                );
            }
        })
        .map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_one_assignment_per_line() {
        assert_eq!(message(&[State::Ready]), "READY=1");
        assert_eq!(
            message(&[State::Ready, State::Status("serving on :1883".into())]),
            "READY=1\nSTATUS=serving on :1883"
        );
        assert_eq!(message(&[State::Stopping]), "STOPPING=1");
        assert_eq!(message(&[State::Watchdog]), "WATCHDOG=1");
        // A newline in the text would be read as another assignment.
        assert_eq!(
            message(&[State::Status("a\nWATCHDOG=1".into())]),
            "STATUS=a WATCHDOG=1"
        );
    }

    #[test]
    fn watchdog_period_is_half_of_usec_for_this_process() {
        let half = Some(Duration::from_secs(15));
        assert_eq!(watchdog_period(Some("30000000"), None, 7), half);
        assert_eq!(watchdog_period(Some("30000000"), Some("7"), 7), half);
        assert_eq!(watchdog_period(Some("30000000"), Some("8"), 7), None);
        assert_eq!(watchdog_period(Some("30000000"), Some("x"), 7), None);
        assert_eq!(watchdog_period(None, Some("7"), 7), None);
        assert_eq!(watchdog_period(Some("0"), None, 7), None);
        assert_eq!(watchdog_period(Some("soon"), None, 7), None);
    }

    #[test]
    fn notify_address_takes_paths_and_abstract_names() {
        use std::os::linux::net::SocketAddrExt;
        let path = notify_address("/run/systemd/notify").unwrap().unwrap();
        assert_eq!(
            path.as_pathname(),
            Some(std::path::Path::new("/run/systemd/notify"))
        );
        let abstract_name = notify_address("@shardmq/notify").unwrap().unwrap();
        assert_eq!(
            abstract_name.as_abstract_name(),
            Some(&b"shardmq/notify"[..])
        );
        assert!(notify_address("").is_none());
        assert!(notify_address("relative").is_none());
    }

    #[test]
    fn a_notification_arrives_as_one_datagram() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("shardmq-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&addr).unwrap();
        let notifier = Notifier {
            target: Some(Arc::new((UnixDatagram::unbound().unwrap(), addr))),
        };
        notifier.notify(&[State::Stopping, State::Status("draining".into())]);
        let mut buf = [0u8; 256];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1\nSTATUS=draining");
    }

    #[test]
    fn without_notify_socket_nothing_is_sent() {
        let notifier = Notifier::default();
        assert!(!notifier.enabled());
        notifier.notify(&[State::Ready]);
    }
}
