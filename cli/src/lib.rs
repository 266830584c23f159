//! chatctl: provisions, operates and tears down a serverless WebSocket chat
//! on AWS through direct SDK calls.

pub mod aws;
pub mod build;
pub mod cli;
pub mod commands;
pub mod connections;
pub mod dev;
pub mod logs;
pub mod metrics;
pub mod output;
pub mod routes;
pub mod session;
pub mod settings;
pub mod smoke;
pub mod stack;
pub mod token;
pub mod top;

use std::process::ExitCode;

use clap::Parser;

/// Exit codes: 0 success, 1 failure, 2 usage error (clap), 3 `status` found
/// something missing or drifted.
pub const EXIT_FAILURE: u8 = 1;
pub const EXIT_DRIFT: u8 = 3;

pub fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    init_tracing(cli.global.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn init_tracing(verbose: u8) {
    let filter = match verbose {
        0 => "warn",
        1 => "chatctl=debug,warn",
        _ => "chatctl=trace,aws_smithy_runtime=debug,aws_config=debug,info",
    };
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| filter.to_string());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}
