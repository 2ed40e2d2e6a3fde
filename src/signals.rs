//! The process's signals, handled on the main thread once the shards run.
//!
//! - SIGHUP reloads: the configuration file is read again; the log filter,
//!   the users and ACL, the TLS certificates and the shutdown settings take
//!   effect, and sections changed in ways that need a restart are logged as
//!   such (`Config::reloaded`). A file that does not parse changes nothing
//!   but the users, ACL and certificates, read again from the files in
//!   force.
//! - SIGTERM or SIGINT drains: `STOPPING=1`, every shard stops accepting,
//!   flushes and closes its connections (`shard::Control`), and the process
//!   exits 0, at the latest after `server.shutdown_timeout_s` (then with a
//!   warning). A second SIGTERM or SIGINT during the drain exits at once,
//!   with status 1.

use std::process::ExitCode;

use shardmq::config::{Config, ConfigError};
use shardmq::shard::Server;
use shardmq::systemd::{Notifier, State};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

/// Changes the log filter of the running process.
pub type LogHandle = reload::Handle<EnvFilter, Registry>;

/// Installs the log subscriber with `filter` (checked by `load`), behind a
/// reload layer so that SIGHUP can change it.
pub fn init_logging(filter: &str) -> LogHandle {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_target(false))
        .init();
    handle
}

/// What a reload needs: how to read the configuration again (with the
/// command line's overrides), and the log filter's handle.
pub struct Reload {
    pub load: Box<dyn Fn() -> Result<Config, ConfigError>>,
    pub log: LogHandle,
}

/// The signals the process handles; registered before the shards start.
pub struct Signals(signal_hook::iterator::Signals);

impl Signals {
    pub fn new() -> std::io::Result<Signals> {
        signal_hook::iterator::Signals::new([SIGHUP, SIGTERM, SIGINT]).map(Signals)
    }

    /// Reloads on every SIGHUP until SIGTERM or SIGINT; returns the
    /// configuration then in force.
    pub fn serve(&mut self, config: Config, server: &Server, reload: &Reload) -> Config {
        let mut config = config;
        for signal in self.0.forever() {
            if signal != SIGHUP {
                tracing::info!(signal = name(signal), "stopping");
                break;
            }
            config = reload_config(config, server, reload);
        }
        config
    }
}

fn name(signal: i32) -> &'static str {
    match signal {
        SIGTERM => "SIGTERM",
        SIGINT => "SIGINT",
        SIGHUP => "SIGHUP",
        _ => "signal",
    }
}

/// One SIGHUP: see the module docs.
fn reload_config(current: Config, server: &Server, reload: &Reload) -> Config {
    let config = match (reload.load)() {
        Ok(new) => {
            let (kept, restart) = current.reloaded(&new);
            if !restart.is_empty() {
                tracing::warn!(
                    sections = ?restart,
                    "changed settings take effect only after a restart"
                );
            }
            if kept.server.log != current.server.log {
                match EnvFilter::try_new(&kept.server.log) {
                    Ok(filter) => match reload.log.reload(filter) {
                        Ok(()) => tracing::info!(log = %kept.server.log, "log filter reloaded"),
                        Err(e) => tracing::warn!(error = %e, "cannot change the log filter"),
                    },
                    Err(e) => tracing::warn!(error = %e, "log filter refused"),
                }
            }
            kept
        }
        Err(e) => {
            tracing::warn!(
                error = %e,
                "configuration not reloaded; reading the users, ACL and certificates again"
            );
            current
        }
    };
    server.reloader.reload_auth(&config.auth);
    server.reloader.reload_tls(&config.tls);
    config
}

/// The drain after the first SIGTERM or SIGINT; see the module docs.
pub fn stop(server: Server, config: &Config, notifier: &Notifier, signals: Signals) -> ExitCode {
    let timeout = config.shutdown_timeout();
    notifier.notify(&[
        State::Stopping,
        State::Status("draining connections".to_string()),
    ]);
    let mut signals = signals;
    let spawned = std::thread::Builder::new()
        .name("signals".to_string())
        .spawn(move || {
            for signal in signals.0.forever() {
                if signal != SIGHUP {
                    tracing::warn!(signal = name(signal), "second stop signal: exiting now");
                    std::process::exit(1);
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot watch for a second stop signal");
    }
    server.drain(config.server.will_on_shutdown);
    if server.control.wait_stopped(timeout) {
        server.join();
        tracing::info!("stopped: every connection flushed and closed");
    } else {
        let stopped = server.control.stopped();
        let shards = server.control.shards();
        tracing::warn!(
            ?timeout,
            stopped,
            shards,
            "drain not finished within server.shutdown_timeout_s; exiting anyway"
        );
    }
    ExitCode::SUCCESS
}
