//! The `shardmq` server binary: command line, configuration, logging, start,
//! and the process's life under a service manager: READY=1 once every
//! listener is bound, SIGHUP reloads, SIGTERM or SIGINT drains (see
//! `signals`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use shardmq::config::{Config, Shards};
use shardmq::shard::Server;
use shardmq::systemd::{self, State};

mod passwd;
mod signals;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Thread-per-core MQTT 3.1.1 broker.
///
/// With no arguments it serves MQTT on 0.0.0.0:1883 with one shard per
/// available core, from embedded defaults.
#[derive(Debug, Parser)]
#[command(name = "shardmq", version, about, long_about)]
struct Cli {
    /// TOML configuration file; every key is optional (see README.md).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address of the MQTT TCP listener [default: 0.0.0.0:1883].
    #[arg(long, value_name = "ADDR")]
    listen: Option<std::net::SocketAddr>,
    /// Number of shards (threads, each pinned to a core) [default: one per core].
    #[arg(long, value_name = "N")]
    shards: Option<usize>,
    /// Log filter: error, warn, info, debug, trace, or per-module directives
    /// such as `shardmq=debug` [default: info].
    #[arg(long, value_name = "LEVEL")]
    log: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Adds a user to a password file, or changes its password (asked
    /// twice, not echoed); the file is created with mode 0600. The format
    /// is mosquitto's: `mosquitto_passwd` and shardmq read each other's.
    Passwd {
        /// The password file.
        file: PathBuf,
        /// The user name.
        user: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        stdin: bool,
        /// Delete the user instead.
        #[arg(short = 'D', long)]
        delete: bool,
        /// PBKDF2-SHA512 iterations of the new hash.
        #[arg(long, value_name = "N", default_value_t = passwd::DEFAULT_ITERATIONS)]
        iterations: u32,
    },
    /// Reads the persistence store.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
}

#[derive(Debug, Subcommand)]
enum StoreCommand {
    /// Prints what the store in DIR holds (sessions, subscriptions, queued
    /// messages, retained messages, format version) and any damage; exits
    /// 1 on damage or a torn tail. Changes nothing.
    Check {
        /// The store directory (`[persistence] dir`).
        dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Passwd {
        file,
        user,
        stdin,
        delete,
        iterations,
    }) = &cli.command
    {
        let command = passwd::Passwd {
            file: file.clone(),
            user: user.clone(),
            delete: *delete,
            stdin: *stdin,
            iterations: *iterations,
        };
        return match command.run() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("shardmq passwd: {e}");
                ExitCode::from(1)
            }
        };
    }
    if let Some(Command::Store {
        command: StoreCommand::Check { dir },
    }) = &cli.command
    {
        return match shardmq::shard::store::check(dir, &mut std::io::stdout()) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(1),
            Err(e) => {
                eprintln!("shardmq store check: {e}");
                ExitCode::from(1)
            }
        };
    }
    let config = match load(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("shardmq: {e}");
            return ExitCode::from(2);
        }
    };
    let log = signals::init_logging(&config.server.log);
    // Before the shards start: a SIGTERM during start-up then drains
    // rather than kills, and SIGHUP never ends the process.
    let mut signals = match signals::Signals::new() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("shardmq: cannot handle signals: {e}");
            return ExitCode::from(1);
        }
    };
    let shards = config.shard_count();
    let mut services = Vec::new();
    if config.voice.enabled {
        match shardmq::voice::start(&config.voice, shards) {
            Ok(started) => {
                tracing::info!(
                    udp = %started.udp,
                    steering = ?started.steering,
                    "voice gateway enabled"
                );
                services.push(started.factory);
            }
            Err(e) => {
                eprintln!("shardmq: {e}");
                return ExitCode::from(1);
            }
        }
    }
    if config.relay.enabled {
        match shardmq::relay::start(&config.relay) {
            Ok(started) => {
                tracing::info!(listen = %started.listen, "device command relay enabled");
                services.push(started.factory);
            }
            Err(e) => {
                eprintln!("shardmq: {e}");
                return ExitCode::from(1);
            }
        }
    }
    if config.mqtt_sn.enabled {
        match shardmq::sn::start(&config.mqtt_sn, shards) {
            Ok(started) => {
                tracing::info!(udp = %started.listen, "MQTT-SN gateway enabled");
                services.push(started.factory);
            }
            Err(e) => {
                eprintln!("shardmq: {e}");
                return ExitCode::from(1);
            }
        }
    }
    if config.presence.enabled {
        match shardmq::presence::start(&config.presence) {
            Ok(factory) => {
                tracing::info!(
                    external = config.presence.external_broker.enabled(),
                    "MeekYolo fleet presence enabled"
                );
                services.push(factory);
            }
            Err(e) => {
                eprintln!("shardmq: {e}");
                return ExitCode::from(1);
            }
        }
    }
    let mut settings = config.shard_settings();
    settings.tls = match config.tls_listener() {
        Ok(tls) => tls,
        Err(e) => {
            eprintln!("shardmq: {e}");
            return ExitCode::from(2);
        }
    };
    let tls_listen = settings.tls.as_ref().map(|t| t.listen);
    let server = match Server::start(settings, services) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("shardmq: {e}");
            return ExitCode::from(1);
        }
    };
    if let Some(listen) = server.ws_listen {
        tracing::info!(%listen, path = %config.websocket.path, "serving MQTT over WebSocket");
    }
    if let Some(listen) = server.wss_listen {
        tracing::info!(%listen, path = %config.websocket.path, "serving MQTT over WebSocket over TLS");
    }
    if let Some(listen) = tls_listen {
        tracing::info!(%listen, "shardmq serving MQTT over TLS");
    }
    let status = match server.listen {
        Some(listen) => {
            tracing::info!(%listen, shards, "shardmq serving MQTT");
            format!("serving MQTT on {listen} with {shards} shards")
        }
        None => {
            tracing::info!(
                shards,
                "shardmq running without its broker (external broker mode)"
            );
            format!("running {shards} shards without the broker")
        }
    };
    // Every shard has bound its listeners (and loaded its store) by now.
    let notifier = systemd::Notifier::from_env();
    notifier.notify(&[State::Ready, State::Status(status)]);
    if let Err(e) = systemd::start_watchdog(&notifier, server.control.clone()) {
        tracing::warn!(error = %e, "cannot start the watchdog thread");
    }
    let reload = signals::Reload {
        load: Box::new(move || load(&cli)),
        log,
    };
    let config = signals.serve(config, &server, &reload);
    signals::stop(server, &config, &notifier, signals)
}

fn load(cli: &Cli) -> Result<Config, shardmq::config::ConfigError> {
    let mut config = match &cli.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if let Some(listen) = cli.listen {
        config.mqtt.listen = listen;
    }
    if let Some(n) = cli.shards {
        config.server.shards = Shards::Count(n);
    }
    if let Some(log) = &cli.log {
        config.server.log.clone_from(log);
    }
    if tracing_subscriber::EnvFilter::try_new(&config.server.log).is_err() {
        return Err(shardmq::config::ConfigError::Invalid {
            key: "server.log",
            message: format!("{:?} is not a log filter", config.server.log),
        });
    }
    config.validate()?;
    Ok(config)
}
