//! `chatctl dev` speed: time to ready (first and warm start, and the rebuild
//! after a handler change), sendmessage round trip between two clients,
//! fan-out to a room of 100, and 1,000 connections held with no message lost.
//!
//! Run: `cargo bench -p chatctl --bench dev` (scripts/bench-dev builds first).

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_tungstenite::tungstenite::Message;

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

struct Dev {
    child: tokio::process::Child,
    url: String,
    token: String,
    ready_after: Duration,
    /// chatctl dev's stderr, drained so it never blocks on a full pipe.
    stderr: tokio::sync::mpsc::UnboundedReceiver<String>,
}

async fn start() -> Dev {
    let started = Instant::now();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_chatctl"))
        .args(["dev", "--port", "0", "--no-build", "--instances", "4"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut url, mut token) = (String::new(), String::new());
    while let Some(line) = lines.next_line().await.unwrap() {
        if let Some(v) = line.strip_prefix("WebSocket URL:") {
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

#[tokio::main]
async fn main() {
    let first = start().await;
    println!(
        "ready (first start, build excluded): {:>8.0} ms",
        first.ready_after.as_secs_f64() * 1000.0
    );
    drop(first);
    let mut dev = start().await;
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

    // 1,000 connections held; one message to all of them; none lost.
    let started = Instant::now();
    let mut crowd = vec![];
    for chunk in 0..10 {
        let batch = futures::future::join_all((0..100).map(|_| connect(&dev, "crowd"))).await;
        crowd.extend(batch);
        let _ = chunk;
    }
    println!(
        "1000 connections opened:            {:>8.0} ms",
        started.elapsed().as_secs_f64() * 1000.0
    );
    let started = Instant::now();
    crowd[0]
        .send(Message::Text(r#"{"action":"sendmessage","message":"crowd"}"#.into()))
        .await
        .unwrap();
    let received = futures::future::join_all(crowd.iter_mut().map(next_text)).await;
    let delivered = received.iter().filter(|t| t.contains("\"crowd\"")).count();
    println!(
        "message to 1000 held connections:   {delivered}/1000 delivered in {:.0} ms",
        started.elapsed().as_secs_f64() * 1000.0
    );
    drop(crowd);

    // A handler change: touch a source file, wait for the restart.
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../handlers/join/src/main.rs");
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
