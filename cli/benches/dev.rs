//! `chatctl dev` speed: time to ready (first and warm start, and the rebuild
//! after a handler change), sendmessage round trip between two clients,
//! fan-out to a room of 100, a burst of 200 simultaneous connects with and
//! without DynamoDB's transaction conflicts (through the test kit's AWS
//! behaviour layer), and 1,000 connections opened 50 at a time, then one
//! message to all of them, none lost; the fan-out's CPU per delivery on the
//! functions' Lambda build (`chatctl dev --lambda-build`, a room of 1,000,
//! read from sendmessage's `fanout_cpu_us`); and `chatctl load` against dev
//! with the largest shape this machine holds.
//!
//! Run: `cargo bench -p chatctl --bench dev` (scripts/bench-dev builds first).
//! `CHATCTL_BENCH_DEV_ARGS` adds arguments to `chatctl dev` (e.g.
//! `--instances 2 --max-instances 2`); `CHATCTL_BENCH_ROOT` runs it in
//! another checkout (whose target/debug holds the handlers to measure);
//! `CHATCTL_BENCH_ONLY=burst,crowd,cpu,load,start` runs only those parts.

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_tungstenite::tungstenite::Message;

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

struct Dev {
    child: tokio::process::Child,
    url: String,
    token: String,
    /// The emulator's endpoint, for other chatctl commands.
    endpoint: String,
    ready_after: Duration,
    /// chatctl dev's stderr, drained so it never blocks on a full pipe.
    stderr: tokio::sync::mpsc::UnboundedReceiver<String>,
}

/// `chatctl dev`, against `endpoint` when given (else its own emulator).
async fn start(endpoint: Option<&str>) -> Dev {
    start_with(endpoint, &[]).await
}

async fn start_with(endpoint: Option<&str>, extra: &[&str]) -> Dev {
    let started = Instant::now();
    let mut args: Vec<String> = ["dev", "--port", "0", "--no-build"].map(String::from).into();
    args.extend(extra.iter().map(|a| a.to_string()));
    if let Some(endpoint) = endpoint {
        args.extend(["--endpoint-url".to_string(), endpoint.to_string()]);
    }
    // Every connection is alice's: the per-user limit is off, the stack's
    // counter is what the connect figures measure.
    let config = std::env::temp_dir().join(format!("chatctl-bench-dev-{}.toml", std::process::id()));
    std::fs::write(&config, "[limits]\nconnections_per_user = 0\n").expect("write the bench's chatctl.toml");
    args.extend(["--config".to_string(), config.to_string_lossy().into_owned()]);
    if let Ok(extra) = std::env::var("CHATCTL_BENCH_DEV_ARGS") {
        args.extend(extra.split_whitespace().map(String::from));
    }
    let root = std::env::var("CHATCTL_BENCH_ROOT").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string());
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_chatctl"))
        .args(&args)
        .current_dir(root)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut url, mut token, mut aws) = (String::new(), String::new(), String::new());
    while let Some(line) = lines.next_line().await.unwrap() {
        if let Some(v) = line.strip_prefix("AWS endpoint:") {
            aws = v.split_whitespace().next().unwrap_or_default().into();
        } else if let Some(v) = line.strip_prefix("WebSocket URL:") {
            url = v.trim().into();
        } else if let Some(v) = line.strip_prefix("Token for alice:") {
            token = v.trim().into();
        } else if line.starts_with("Ready.") {
            break;
        }
    }
    let ready_after = started.elapsed();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let (sender, stderr) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            let _ = sender.send(line);
        }
    });
    Dev {
        child,
        url,
        token,
        endpoint: aws,
        ready_after,
        stderr,
    }
}

async fn connect(dev: &Dev, room: &str) -> Socket {
    let url = format!("{}?token={}&room={room}", dev.url, dev.token);
    tokio_tungstenite::connect_async(url).await.expect("connect").0
}

async fn next_text(socket: &mut Socket) -> String {
    loop {
        match tokio::time::timeout(Duration::from_secs(30), socket.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => return text.to_string(),
            Ok(Some(Ok(_))) => continue,
            other => panic!("no message: {other:?}"),
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// A handshake, timed; the error when it is refused.
async fn timed_connect(dev: &Dev, room: &str) -> (Duration, Result<Socket, String>) {
    let url = format!("{}?token={}&room={room}", dev.url, dev.token);
    let started = Instant::now();
    let result = tokio_tungstenite::connect_async(url).await;
    (
        started.elapsed(),
        result.map(|(socket, _)| socket).map_err(|e| e.to_string()),
    )
}

fn wanted(part: &str) -> bool {
    std::env::var("CHATCTL_BENCH_ONLY").map_or(true, |only| only.split(',').any(|p| p == part))
}

/// The open-connection count of dev's stack at `endpoint`.
async fn open_count(endpoint: &str) -> i64 {
    let config = chat_testkit::moto::sdk_config_for(endpoint).await;
    let store = chat_core::store::ConnectionStore::new(aws_sdk_dynamodb::Client::new(&config), "chat-connections");
    store.open_count().await.unwrap()
}

/// 200 simultaneous connects, with DynamoDB's transaction conflicts or
/// without; the handshake p99.
async fn burst(conflicts: bool) -> Duration {
    use chat_testkit::aws_behaviour::Behaviours;
    // DynamoDB's typical time per transaction (25 ms), nothing else modelled.
    let behaviours = Behaviours {
        transaction_conflicts: conflicts,
        timings: chat_testkit::aws_behaviour::Timings::real_scale(),
        ..Behaviours::none()
    };
    let moto = chat_testkit::Moto::start();
    let proxy = chat_testkit::AwsProxy::start_with_behaviours(moto.endpoint(), behaviours).await;
    let dev = start(Some(&proxy.endpoint())).await;
    let results = futures::future::join_all((0..200).map(|_| timed_connect(&dev, "burst"))).await;
    let mut times: Vec<Duration> = results.iter().map(|(time, _)| *time).collect();
    times.sort();
    let failures: Vec<String> = results
        .iter()
        .filter_map(|(_, result)| result.as_ref().err().cloned())
        .collect();
    let cancelled = proxy.layer_answers("TransactionCanceledException");
    let sockets: Vec<Socket> = results.into_iter().filter_map(|(_, result)| result.ok()).collect();
    let open = open_count(&proxy.endpoint()).await;
    for mut socket in sockets {
        let _ = socket.close(None).await;
    }
    // `$disconnect` runs after the close; wait for the count to settle.
    let mut closed = open_count(&proxy.endpoint()).await;
    for _ in 0..100 {
        if closed == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        closed = open_count(&proxy.endpoint()).await;
    }
    println!(
        "burst of 200 connects, conflicts {}: p50 {:.0} ms, p99 {:.0} ms, {} failed{}, {cancelled} transactions cancelled, open {open} then {closed} after closing",
        if conflicts { "on " } else { "off" },
        ms(percentile(&times, 0.5)),
        ms(percentile(&times, 0.99)),
        failures.len(),
        failures.first().map(|f| format!(" (first: {f})")).unwrap_or_default(),
    );
    percentile(&times, 0.99)
}

/// 1,000 connections opened 50 at a time (each timed), then one message to
/// all of them: when each copy arrives, and whether any is lost.
async fn crowd(dev: &Dev) {
    let started = Instant::now();
    let results: Vec<(Duration, Result<Socket, String>)> = futures::stream::iter(0..1000)
        .map(|_| timed_connect(dev, "crowd"))
        .buffer_unordered(50)
        .collect()
        .await;
    let opened = started.elapsed();
    let mut times: Vec<Duration> = results.iter().map(|(time, _)| *time).collect();
    times.sort();
    let mut crowd: Vec<Socket> = results.into_iter().filter_map(|(_, result)| result.ok()).collect();
    println!(
        "1000 connects, 50 at a time:        p50 {:.0} ms, p99 {:.0} ms, {} failed, all in {:.0} ms",
        ms(percentile(&times, 0.5)),
        ms(percentile(&times, 0.99)),
        1000 - crowd.len(),
        ms(opened)
    );
    let started = Instant::now();
    crowd[0]
        .send(Message::Text(r#"{"action":"sendmessage","message":"crowd"}"#.into()))
        .await
        .unwrap();
    let arrivals = futures::future::join_all(crowd.iter_mut().map(|socket| async move {
        let text = next_text(socket).await;
        (started.elapsed(), text.contains("\"crowd\""))
    }))
    .await;
    let mut times: Vec<Duration> = arrivals.iter().map(|(time, _)| *time).collect();
    times.sort();
    let delivered = arrivals.iter().filter(|(_, ok)| *ok).count();
    println!(
        "fan-out to {} connections:         p50 {:.0} ms, p99 {:.0} ms, last {:.0} ms, lost {}",
        crowd.len(),
        ms(percentile(&times, 0.5)),
        ms(percentile(&times, 0.99)),
        ms(*times.last().unwrap()),
        crowd.len() - delivered
    );
}

/// chatctl with `args` against dev's emulator: its stdout.
async fn chatctl(dev: &Dev, args: &[&str]) -> String {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_chatctl"))
        .args(args)
        .args(["--endpoint-url", &dev.endpoint])
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

/// The fan-out's CPU per delivery on the Lambda build: 1,000 connections in
/// one room, 5 messages to all of them; each sendmessage logs its fan-out's
/// CPU time (`fanout_cpu_us`) and deliveries.
async fn fan_out_cpu() {
    let dev = start_with(None, &["--lambda-build"]).await;
    let mut crowd: Vec<Socket> = futures::stream::iter(0..1000)
        .map(|_| connect(&dev, "cpu"))
        .buffer_unordered(50)
        .collect()
        .await;
    for n in 0..5 {
        let frame = format!(r#"{{"action":"sendmessage","message":"cpu {n}"}}"#);
        crowd[0].send(Message::Text(frame.into())).await.unwrap();
        futures::future::join_all(crowd.iter_mut().map(next_text)).await;
    }
    let logs = chatctl(&dev, &["logs", "sendmessage", "--since", "10m"]).await;
    let field = |line: &str, name: &str| -> Option<f64> {
        line.split_whitespace()
            .find_map(|word| word.strip_prefix(name)?.parse().ok())
    };
    let per_message: Vec<(f64, f64)> = logs
        .lines()
        .filter_map(|line| Some((field(line, "delivered=")?, field(line, "fanout_cpu_us=")?)))
        .filter(|(delivered, _)| *delivered > 0.0)
        .collect();
    let (delivered, cpu_us) = per_message
        .iter()
        .fold((0.0, 0.0), |(d, c), (delivered, cpu)| (d + delivered, c + cpu));
    let each: Vec<String> = per_message.iter().map(|(d, c)| format!("{:.0}", c / d)).collect();
    println!(
        "fan-out CPU per delivery (Lambda build, room of 1000, {} messages): {:.0} µs (each: {} µs)",
        per_message.len(),
        cpu_us / delivered,
        each.join(", ")
    );
}

/// `chatctl load` against dev: the summary, as a user sees it.
async fn load() {
    let dev = start(None).await;
    let shape = std::env::var("CHATCTL_BENCH_LOAD")
        // The largest shape this 2-core machine holds within a p99 of 1 s (README, Benchmarks).
        .unwrap_or_else(|_| "--users 500 --rooms 50 --rate 0.6 --duration 60s --connect-rate 50".into());
    let mut args = vec!["load", "--url", &dev.url];
    args.extend(shape.split_whitespace());
    println!("chatctl load {shape}");
    println!("{}", chatctl(&dev, &args).await);
}

#[tokio::main]
async fn main() {
    if wanted("cpu") {
        fan_out_cpu().await;
    }
    if wanted("load") {
        load().await;
    }
    if wanted("burst") {
        let without = burst(false).await;
        let with = burst(true).await;
        println!(
            "burst p99 with conflicts / without: {:.2}",
            with.as_secs_f64() / without.as_secs_f64()
        );
    }
    if wanted("crowd") {
        let dev = start(None).await;
        crowd(&dev).await;
    }
    if !wanted("start") {
        return;
    }
    let first = start(None).await;
    println!(
        "ready (first start, build excluded): {:>8.0} ms",
        first.ready_after.as_secs_f64() * 1000.0
    );
    drop(first);
    let mut dev = start(None).await;
    println!(
        "ready (warm restart):               {:>8.0} ms",
        dev.ready_after.as_secs_f64() * 1000.0
    );

    // Round trip: alice sends, bob receives.
    let mut alice = connect(&dev, "rt").await;
    let mut bob = connect(&dev, "rt").await;
    let mut samples = vec![];
    for i in 0..200 {
        let started = Instant::now();
        let frame = format!(r#"{{"action":"sendmessage","message":"m{i}"}}"#);
        alice.send(Message::Text(frame.into())).await.unwrap();
        let text = next_text(&mut bob).await;
        samples.push(started.elapsed());
        assert!(text.contains(&format!("\"m{i}\"")));
        next_text(&mut alice).await;
    }
    samples.sort();
    println!(
        "sendmessage round trip (200):       p50 {:.1} ms, p99 {:.1} ms",
        percentile(&samples, 0.5).as_secs_f64() * 1000.0,
        percentile(&samples, 0.99).as_secs_f64() * 1000.0
    );

    // Fan-out to a room of 100.
    let mut room = futures::future::join_all((0..100).map(|_| connect(&dev, "hundred"))).await;
    let started = Instant::now();
    room[0]
        .send(Message::Text(r#"{"action":"sendmessage","message":"to all"}"#.into()))
        .await
        .unwrap();
    futures::future::join_all(room.iter_mut().map(next_text)).await;
    println!(
        "fan-out to 100 (last one received): {:>8.0} ms",
        started.elapsed().as_secs_f64() * 1000.0
    );
    drop(room);

    // A handler change: touch a source file, wait for the restart.
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../handlers/chat-functions/src/main.rs");
    let started = Instant::now();
    let file = std::fs::OpenOptions::new().append(true).open(&source).unwrap();
    file.set_modified(std::time::SystemTime::now()).unwrap();
    loop {
        let line = tokio::time::timeout(Duration::from_secs(600), dev.stderr.recv())
            .await
            .unwrap();
        match line {
            Some(line) if line.contains("rebuilt and restarted") => break,
            Some(line) if line.contains("build failed") => panic!("{line}"),
            Some(_) => continue,
            None => panic!("chatctl dev stopped"),
        }
    }
    println!(
        "rebuild + restart after a change:   {:>8.0} ms",
        started.elapsed().as_secs_f64() * 1000.0
    );
    let _ = dev.child.kill().await;
}
