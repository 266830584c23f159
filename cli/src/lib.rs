//! chatctl: provisions, operates and tears down a serverless WebSocket chat
//! on AWS through direct SDK calls.

/// `println!` that returns the write's error instead of panicking, for `?`:
/// a closed stdout (`chatctl … | head -1`) then ends the command through
/// [`main`], which takes a broken pipe for the end of the output it is.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)
    }};
}

pub mod aws;
pub mod build;
pub mod cli;
pub mod commands;
pub mod connections;
pub mod cost;
pub mod dev;
pub mod load;
pub mod logs;
pub mod metrics;
pub mod output;
pub mod releases;
pub mod routes;
pub mod session;
pub mod settings;
pub mod smoke;
pub mod stack;
pub mod status;
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
        // A broken pipe is not an error (ripgrep's rule): whoever read the
        // output (`| head -1`) has all they wanted.
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// Whether an error comes from writing to a closed stdout, anywhere in its chain.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
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
