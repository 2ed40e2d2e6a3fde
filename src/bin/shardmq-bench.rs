//! `shardmq-bench`: MQTT 3.1.1 load generator; see `shardmq-bench --help`
//! and the `shardmq::bench` module.

use std::process::ExitCode;

use clap::Parser;
use shardmq::bench::{self, cli::Cli};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    bench::main(Cli::parse())
}
