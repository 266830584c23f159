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

/// chatctl's own warnings always; the AWS SDK's logs (targets `aws_config`,
/// `aws_smithy_*`, `aws_sdk_*`, …: an EnvFilter target matches by prefix)
/// only with `-v` and `-vv`. Without them, a missing region or credentials
/// would first print the SDK's warnings about its IMDS probe, Debug text
/// and all, before chatctl's own sentence saying what to do.
fn tracing_filter(verbose: u8) -> &'static str {
    match verbose {
        0 => "warn,aws=off",
        1 => "chatctl=debug,warn",
        _ => "chatctl=trace,aws_smithy_runtime=debug,aws_config=debug,info",
    }
}

fn init_tracing(verbose: u8) {
    let filter = tracing_filter(verbose);
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| filter.to_string());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}
