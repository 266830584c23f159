//! How much `chatctl up` (fresh and no-op) and `chatctl down` cost against a
//! moto server, the build excluded: AWS calls made, mutating calls, the
//! longest chain of calls that ran one after another, and wall time.
//!
//! Run: `cargo bench -p chatctl --bench provision` (after scripts/build-handlers),
//! or scripts/bench-provision. `CHATCTL_BENCH_RUNS` sets the repetitions (default 3).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use chat_testkit::aws_proxy::{longest_chain, longest_chain_calls};
use chat_testkit::{AwsProxy, Moto};

const FUNCTIONS: [&str; 7] = chatctl::stack::Function::SHORT_NAMES;

struct Measured {
    what: &'static str,
    /// The operations of the longest chain.
    links: Vec<String>,
    calls: usize,
    mutating: usize,
    chain: usize,
    wall: Duration,
}

async fn chatctl(proxy: &AwsProxy, workdir: &std::path::Path, args: &[&str]) -> Duration {
    let started = Instant::now();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_chatctl"))
        .args(args)
        .arg("--endpoint-url")
        .arg(proxy.endpoint())
        .current_dir(workdir)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .output()
        .await
        .expect("cannot run chatctl");
    let elapsed = started.elapsed();
    assert!(
        output.status.success(),
        "chatctl {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    elapsed
}

async fn measure(proxy: &AwsProxy, workdir: &std::path::Path, what: &'static str, args: &[&str]) -> Measured {
    proxy.clear();
    let wall = chatctl(proxy, workdir, args).await;
    let calls = proxy.calls();
    Measured {
        what,
        links: longest_chain_calls(&calls).into_iter().map(|c| c.operation).collect(),
        calls: calls.len(),
        mutating: calls.iter().filter(|c| c.mutating).count(),
        chain: longest_chain(&calls),
        wall,
    }
}

#[tokio::main]
async fn main() {
    let runs: usize = std::env::var("CHATCTL_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let lambda_dir = tempfile::tempdir().unwrap();
    for function in FUNCTIONS {
        let built = root.join("target/lambda").join(function).join("bootstrap.zip");
        assert!(
            built.exists(),
            "{} is missing: run scripts/build-handlers",
            built.display()
        );
        std::fs::create_dir_all(lambda_dir.path().join(function)).unwrap();
        std::fs::copy(&built, lambda_dir.path().join(function).join("bootstrap.zip")).unwrap();
    }
    let lambda_dir = lambda_dir.path().to_string_lossy().into_owned();
    let up = ["up", "--no-build", "--lambda-dir", lambda_dir.as_str()];

    println!(
        "{:<10} {:>4} {:>6} {:>9} {:>6} {:>9}",
        "command", "run", "calls", "mutating", "chain", "wall ms"
    );
    for run in 1..=runs {
        let moto = Moto::start();
        let proxy = AwsProxy::start(moto.endpoint()).await;
        let workdir = tempfile::tempdir().unwrap();
        for measured in [
            measure(&proxy, workdir.path(), "up (fresh)", &up).await,
            measure(&proxy, workdir.path(), "up (no-op)", &up).await,
            measure(&proxy, workdir.path(), "down", &["down", "--yes"]).await,
        ] {
            println!(
                "{:<10} {:>4} {:>6} {:>9} {:>6} {:>9.0}",
                measured.what,
                run,
                measured.calls,
                measured.mutating,
                measured.chain,
                measured.wall.as_secs_f64() * 1000.0
            );
            if run == 1 {
                println!("    chain: {}", measured.links.join(" → "));
            }
        }
    }
}
