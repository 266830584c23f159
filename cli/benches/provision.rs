//! How much `chatctl up` (fresh, after the functions' code changed, no-op)
//! and `chatctl down` cost, the build excluded: AWS calls made, mutating
//! calls, the longest chain of calls that ran one after another, and wall
//! time; first against plain moto, then through the AWS behaviour layer at
//! real-scale timings (aws-facts.md §10), where it also prints the critical
//! path of waits the model makes unavoidable and the ratio of wall time to it.
//!
//! Run: `cargo bench -p chatctl --bench provision` (after scripts/build-handlers),
//! or scripts/bench-provision. `CHATCTL_BENCH_RUNS` sets the repetitions (default 3);
//! `CHATCTL_BENCH_TRACE=1` prints every call with its start and end (ms).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use chat_testkit::aws_behaviour::{Behaviours, Timings};
use chat_testkit::aws_proxy::{longest_chain, longest_chain_calls};
use chat_testkit::{AwsProxy, Moto};

struct Measured {
    what: &'static str,
    /// The operations of the longest chain.
    links: Vec<String>,
    calls: usize,
    mutating: usize,
    chain: usize,
    /// Calls the layer refused for a request quota (Lambda, Logs).
    throttled: usize,
    /// Megabytes sent in requests' bodies (the functions' code, mostly).
    sent_mb: f64,
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
    if std::env::var_os("CHATCTL_BENCH_TRACE").is_some() {
        let t0 = calls.first().map(|c| c.started).unwrap_or_default();
        for c in &calls {
            println!(
                "  {:>6} {:>6} {:<28} {}",
                (c.started - t0).as_millis(),
                (c.finished.max(c.started) - t0).as_millis(),
                c.operation,
                c.answered_by_layer.clone().unwrap_or_default()
            );
        }
    }
    Measured {
        what,
        links: longest_chain_calls(&calls).into_iter().map(|c| c.operation).collect(),
        calls: calls.len(),
        mutating: calls.iter().filter(|c| c.mutating).count(),
        chain: longest_chain(&calls),
        throttled: calls
            .iter()
            .filter(|c| {
                matches!(
                    c.answered_by_layer.as_deref(),
                    Some("TooManyRequestsException" | "ThrottlingException")
                )
            })
            .count(),
        sent_mb: calls.iter().map(|c| c.request_bytes).sum::<usize>() as f64 / 1e6,
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
    let binary = chatctl::build::BINARY;
    let built = root.join("target/lambda").join(binary).join("bootstrap.zip");
    assert!(
        built.exists(),
        "{} is missing: run scripts/build-handlers",
        built.display()
    );
    std::fs::create_dir_all(lambda_dir.path().join(binary)).unwrap();
    std::fs::copy(&built, lambda_dir.path().join(binary).join("bootstrap.zip")).unwrap();
    let lambda_dir = lambda_dir.path().to_string_lossy().into_owned();
    let up = ["up", "--no-build", "--lambda-dir", lambda_dir.as_str()];

    for (model, behaviours) in [
        ("plain moto", Behaviours::none()),
        // AWS's timings as a typical run meets them: latency, conflicts,
        // propagation, states, CREATING tables, lagging tags and quotas.
        // Lost answers and two-item pages are faults a run rarely meets;
        // the tests have them on.
        (
            "AWS behaviour layer, real-scale timings",
            Behaviours {
                lost_create_responses: false,
                small_pages: false,
                ..Behaviours::all(Timings::real_scale())
            },
        ),
    ] {
        println!("\n{model}");
        println!(
            "{:<17} {:>4} {:>6} {:>9} {:>9} {:>7} {:>6} {:>9} {:>9} {:>6}",
            "command", "run", "calls", "mutating", "throttled", "sent MB", "chain", "wall ms", "path ms", "ratio"
        );
        let timings = (behaviours != Behaviours::none()).then_some(behaviours.timings);
        for run in 1..=runs {
            let moto = Moto::start();
            warm_up(&moto).await;
            let proxy = AwsProxy::start_with_behaviours(moto.endpoint(), behaviours).await;
            let workdir = tempfile::tempdir().unwrap();
            let fresh = measure(&proxy, workdir.path(), "up (fresh)", &up).await;
            change_code(&lambda_dir);
            let changed = measure(&proxy, workdir.path(), "up (new code)", &up).await;
            let no_op = measure(&proxy, workdir.path(), "up (no-op)", &up).await;
            let rollback = measure(&proxy, workdir.path(), "rollback", &["rollback"]).await;
            let down = measure(&proxy, workdir.path(), "down", &["down", "--yes"]).await;
            for (measured, path) in [
                (fresh, timings.map(fresh_up_path)),
                (changed, timings.map(code_update_path)),
                (no_op, timings.map(no_op_path)),
                (rollback, timings.map(rollback_path)),
                (down, timings.map(down_path)),
            ] {
                let wall_ms = measured.wall.as_secs_f64() * 1000.0;
                let (path_ms, ratio) = match path {
                    Some(path) => {
                        let path_ms = path.as_secs_f64() * 1000.0;
                        (format!("{path_ms:.0}"), format!("{:.2}", wall_ms / path_ms))
                    }
                    None => ("-".into(), "-".into()),
                };
                println!(
                    "{:<17} {:>4} {:>6} {:>9} {:>9} {:>7.1} {:>6} {:>9.0} {:>9} {:>6}",
                    measured.what,
                    run,
                    measured.calls,
                    measured.mutating,
                    measured.throttled,
                    measured.sent_mb,
                    measured.chain,
                    wall_ms,
                    path_ms,
                    ratio
                );
                if run == 1 {
                    println!("    chain: {}", measured.links.join(" → "));
                }
            }
        }
    }
}

/// moto builds each service's backend on its first call (IAM loads every
/// managed policy), seconds that AWS does not take: paid before measuring.
async fn warm_up(moto: &Moto) {
    let sdk = moto.sdk_config().await;
    let (tables, roles, functions, apis, groups, identity) = tokio::join!(
        aws_sdk_dynamodb::Client::new(&sdk).list_tables().send(),
        aws_sdk_iam::Client::new(&sdk).list_roles().send(),
        aws_sdk_lambda::Client::new(&sdk).list_functions().send(),
        aws_sdk_apigatewayv2::Client::new(&sdk).get_apis().send(),
        aws_sdk_cloudwatchlogs::Client::new(&sdk).describe_log_groups().send(),
        aws_sdk_sts::Client::new(&sdk).get_caller_identity().send(),
    );
    tables.unwrap();
    roles.unwrap();
    functions.unwrap();
    apis.unwrap();
    groups.unwrap();
    identity.unwrap();
}

/// Gives the functions new code: one more file in their zip.
fn change_code(lambda_dir: &str) {
    use std::io::Write;
    let zip = PathBuf::from(lambda_dir)
        .join(chatctl::build::BINARY)
        .join("bootstrap.zip");
    let file = std::fs::OpenOptions::new().read(true).write(true).open(zip).unwrap();
    let mut writer = zip::ZipWriter::new_append(file).unwrap();
    let name = format!("changed-{}.txt", ulid::Ulid::generate());
    writer
        .start_file(name, zip::write::SimpleFileOptions::default())
        .unwrap();
    writer.write_all(b"new code").unwrap();
    writer.finish().unwrap();
}

/// Reading the stack: credentials and names, then what needs an id.
fn read_path(t: &Timings) -> Duration {
    t.latency.read * 3
}

/// An `up` that changes something: the lock (one conditional write; the
/// bucket known from the read), the read again under it, and the release.
fn locked(t: &Timings) -> Duration {
    t.latency.write + read_path(t) + t.latency.write
}

/// The first `up` also makes the bucket: HeadBucket, CreateBucket, its
/// public access block, encryption and tags, one after another.
fn bucket_made(t: &Timings) -> Duration {
    t.latency.read + t.latency.write * 4
}

/// The release, once the functions are ready: PublishVersion → the new
/// version Pending → Active (read), the record written (read beside the
/// publish), UpdateAlias or CreateAlias (settled as its answer shows).
fn release(t: &Timings) -> Duration {
    let (r, w) = (t.latency.read, t.latency.write);
    w + t.function_pending + r + w + w
}

/// The waits a fresh `up` cannot avoid under the model: the read, the
/// bucket and the lock, the read again, then the longest of:
/// role → propagation (the zip's upload beside it) → CreateFunction →
/// Pending → Active → the release → AddPermission, and CreateApi → the
/// API's 15 writes, one at a time (a second meanwhile is a conflict), then
/// the deployment; CreateTable → CREATING → ACTIVE → UpdateTimeToLive.
fn fresh_up_path(t: Timings) -> Duration {
    let (r, w) = (t.latency.read, t.latency.write);
    let upload = r + w;
    let functions = (w + t.role_propagation.max(w)).max(upload) + w + t.function_pending + r + release(&t) + w;
    let tables = w + t.table_creating + r + w;
    let api_writes = 15; // stage, authorizer, 6 integrations, 6 routes, stage update
    let api = w + t.api_write.max(w) * api_writes;
    read_path(&t) + bucket_made(&t) + locked(&t) + (functions.max(api) + t.latency.create_deployment).max(tables)
}

/// New code (the seven functions at once): the lock and the read again, the
/// zip's upload (HeadObject, PutObject), then UpdateFunctionCode →
/// InProgress → Successful, and the release.
fn code_update_path(t: Timings) -> Duration {
    let (r, w) = (t.latency.read, t.latency.write);
    read_path(&t) + locked(&t) + r + w + w + t.function_update + r + release(&t)
}

/// `rollback`: the account id, the lock, the record and the aliases read,
/// then UpdateAlias (seven at once, settled as their answers show), and the
/// lock released.
fn rollback_path(t: Timings) -> Duration {
    let (r, w) = (t.latency.read, t.latency.write);
    r + w + r + w + w
}

fn no_op_path(t: Timings) -> Duration {
    read_path(&t)
}

/// The lock (the bucket's read, a conditional write), then DeleteApi →
/// DeleteFunction → (DeleteTable → DELETING → gone | the role's policies →
/// DeleteRole) → DeleteLogGroup → the bucket emptied (list, delete the lock)
/// and deleted.
fn down_path(t: Timings) -> Duration {
    let w = t.latency.write;
    let tables = t.latency.read + w + t.table_deleting + t.latency.read;
    let roles = t.latency.read * 2 + w * 2;
    let lock = t.latency.read * 2 + w;
    let bucket = t.latency.read + w + w;
    lock + read_path(&t) + w + w + tables.max(roles) + w + bucket
}
