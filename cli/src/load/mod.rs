//! `chatctl load`: a chat-shaped load test. Users with one or more
//! connections each, spread over rooms, open their connections at a paced
//! rate, then each sends messages at a steady rate (some of them direct)
//! for a while. Every message carries its sender, its sequence number and
//! the time it was sent, so every delivery is timed and every recipient's
//! losses, duplicates and reorderings are counted.

pub mod command;
pub mod report;
pub mod slo;
pub mod tally;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use futures::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::{self, Message, protocol::CloseFrame, protocol::frame::coding::CloseCode};

use tally::{Connection, Figures, Tally, Target};

/// API Gateway's quota of new connections per second, per account and
/// region (aws-facts.md §9, "500 new connections per second"): the default
/// pace stays well under it, leaving room for the chat's real users.
pub const CONNECT_QUOTA_PER_SECOND: u32 = 500;
/// A handshake that takes longer counts as failed.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a close handshake may take before the connection is dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Open files the process needs besides its connections (stdio, the
/// runtime, the AWS client).
const SPARE_FILES: u64 = 64;
/// Marks the run's messages: `lt1 RUN SENDER SEQ SENT_US ` then padding.
const MARK: &str = "lt1";

/// What to run.
#[derive(Debug, Clone, Serialize)]
pub struct Shape {
    pub users: u32,
    pub connections_per_user: u32,
    pub rooms: u32,
    pub messages_per_minute_per_user: f64,
    pub message_bytes: usize,
    pub direct_percent: u8,
    #[serde(serialize_with = "as_seconds")]
    pub duration: Duration,
    pub connect_rate: u32,
    #[serde(serialize_with = "as_seconds")]
    pub drain: Duration,
}

fn as_seconds<S: serde::Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(duration.as_secs_f64())
}

impl Shape {
    pub fn connections(&self) -> u64 {
        u64::from(self.users) * u64::from(self.connections_per_user)
    }

    /// Refuses shapes that mean nothing; the header of a message needs room.
    pub fn check(&self) -> Result<()> {
        if self.users == 0 || self.connections_per_user == 0 || self.rooms == 0 {
            bail!("--users, --connections and --rooms must each be at least 1");
        }
        if self.rooms > self.users {
            bail!(
                "--rooms {} is more than --users {}: a room needs a user",
                self.rooms,
                self.users
            );
        }
        if !(self.messages_per_minute_per_user.is_finite() && self.messages_per_minute_per_user >= 0.0) {
            bail!("--rate must be a number of messages per minute per user, 0 or more");
        }
        if self.message_bytes < MIN_MESSAGE_BYTES {
            bail!(
                "--size must be at least {MIN_MESSAGE_BYTES} bytes: each message carries its sender, number and time"
            );
        }
        if self.direct_percent > 100 {
            bail!("--direct is a share of the messages, 0 to 100 (%)");
        }
        if self.direct_percent > 0 && self.users < 2 {
            bail!("direct messages need at least 2 --users");
        }
        if self.connect_rate == 0 {
            bail!("--connect-rate must be at least 1 per second");
        }
        Ok(())
    }

    /// How long one connection waits between its messages.
    fn send_interval(&self) -> Option<Duration> {
        let per_connection = self.messages_per_minute_per_user / f64::from(self.connections_per_user);
        (per_connection > 0.0).then(|| Duration::from_secs_f64(60.0 / per_connection))
    }
}

/// `lt1 ` + run (8) + sender, seq (10 digits each) + time (13 digits) and spaces.
pub const MIN_MESSAGE_BYTES: usize = 64;

/// Mints a token for a user.
pub type Mint = Box<dyn Fn(&str) -> Result<String> + Send + Sync>;

/// How connections get in: a token per user, or `?user=` (auth = "none").
pub enum Credentials {
    Tokens(Mint),
    UserName,
}

/// Checks that the process may open the shape's connections, raising its
/// soft limit of open files up to the hard one when that is enough.
pub fn ensure_open_files(connections: u64) -> Result<()> {
    let needed = connections + SPARE_FILES;
    let (soft, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE)?;
    if needed <= soft {
        return Ok(());
    }
    if needed <= hard {
        rlimit::setrlimit(rlimit::Resource::NOFILE, needed, hard)?;
        return Ok(());
    }
    bail!(
        "this shape opens {connections} connections, but this process may hold at most {hard} open files (its hard limit); \
         raise it (`ulimit -n {needed}` in a shell allowed to, or `nofile` in /etc/security/limits.conf) or run fewer --users or --connections"
    );
}

/// The local ports one client address has for connections to one server
/// (Linux's net.ipv4.ip_local_port_range); none known elsewhere.
pub fn local_ports() -> Option<u64> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut bounds = range.split_whitespace().filter_map(|n| n.parse::<u64>().ok());
    let (low, high) = (bounds.next()?, bounds.next()?);
    Some(high.saturating_sub(low) + 1)
}

/// What a run measured, with its shape and target.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub url: String,
    pub run: String,
    pub shape: Shape,
    /// Stopped by Ctrl-C before the end.
    pub interrupted: bool,
    pub elapsed_seconds: f64,
    #[serde(flatten)]
    pub figures: Figures,
    /// The load generator's own CPU time: what it costs to measure.
    pub generator: Generator,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slo: Option<Vec<slo::Verdict>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Generator {
    pub cpu_ms: f64,
    /// Per 1,000 deliveries received (and the messages sent for them).
    pub cpu_ms_per_1000_deliveries: Option<f64>,
}

/// Where the run stands: connecting, sending, draining, closing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Connect,
    Send,
    Drain,
    Close,
}

struct Shared {
    started: Instant,
    run: String,
    shape: Shape,
    tally: Mutex<Tally>,
    phase: watch::Sender<Phase>,
}

impl Shared {
    fn now_us(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }

    fn tally(&self) -> MutexGuard<'_, Tally> {
        self.tally.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The run's names for users and rooms (lowercase letters, digits and
/// dashes: valid room names, and `?user=` names the stack keeps as they are).
pub fn user_name(run: &str, user: u32) -> String {
    format!("load-{run}-u{user}")
}

fn room_name(run: &str, room: u32) -> String {
    format!("load-{run}-r{room}")
}

/// What the live view shows, every half second.
pub struct Progress {
    pub phase: &'static str,
    pub open: usize,
    pub wanted: u64,
    pub sent: usize,
    pub delivered_last_second: u64,
    pub p99_ms: f64,
}

/// Runs `shape` against `url` until it ends or `interrupt` resolves.
pub async fn run(
    url: &str,
    shape: Shape,
    credentials: Credentials,
    interrupt: impl std::future::Future<Output = ()>,
    progress: impl Fn(Progress) + Send + Sync + 'static,
) -> Result<Report> {
    let run = ulid::Ulid::from_datetime(std::time::SystemTime::now())
        .to_string()
        .to_lowercase()[18..]
        .to_string();
    let connections: Vec<Connection> = (0..shape.connections() as u32)
        .map(|index| {
            let user = index / shape.connections_per_user;
            Connection {
                user,
                room: user % shape.rooms,
                opened_us: None,
                lost_us: None,
            }
        })
        .collect();
    let mut urls = Vec::with_capacity(connections.len());
    for connection in &connections {
        let user = user_name(&run, connection.user);
        let mut query = form_urlencoded::Serializer::new(String::new());
        match &credentials {
            Credentials::Tokens(mint) => query.append_pair("token", &mint(&user)?),
            Credentials::UserName => query.append_pair("user", &user),
        };
        query.append_pair("room", &room_name(&run, connection.room));
        let separator = if url.contains('?') { '&' } else { '?' };
        urls.push(format!("{url}{separator}{}", query.finish()));
    }
    let cpu_before = chat_core::cpu::process_time();
    let (phase, _) = watch::channel(Phase::Connect);
    let shared = Arc::new(Shared {
        started: Instant::now(),
        run: run.clone(),
        shape: shape.clone(),
        tally: Mutex::new(Tally::new(connections)),
        phase,
    });
    let reporter = tokio::spawn(report_progress(shared.clone(), progress));
    let interrupted = tokio::select! {
        () = drive(&shared, urls) => false,
        () = interrupt => true,
    };
    shared.phase.send_replace(Phase::Close);
    // Every connection closes (or is dropped after CLOSE_TIMEOUT) before the figures.
    while shared.phase.receiver_count() > 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    reporter.abort();
    let ended_us = shared.now_us();
    let figures = shared.tally().summary(ended_us);
    let cpu_ms = (chat_core::cpu::process_time() - cpu_before).as_secs_f64() * 1000.0;
    let delivered = figures.messages.delivered;
    Ok(Report {
        url: url.to_string(),
        run,
        shape,
        interrupted,
        elapsed_seconds: ended_us as f64 / 1e6,
        generator: Generator {
            cpu_ms: round2(cpu_ms),
            cpu_ms_per_1000_deliveries: (delivered > 0).then(|| round2(cpu_ms / delivered as f64 * 1000.0)),
        },
        figures,
        slo: None,
    })
}

fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

/// Connects every connection at the shape's pace, sends for its duration,
/// then waits for the last deliveries.
async fn drive(shared: &Arc<Shared>, urls: Vec<String>) {
    let mut pace = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(shared.shape.connect_rate)));
    let mut handshakes = tokio::task::JoinSet::new();
    for (index, url) in urls.into_iter().enumerate() {
        pace.tick().await;
        let (shared, phase) = (shared.clone(), shared.phase.subscribe());
        let (opened, handshake) = tokio::sync::oneshot::channel();
        tokio::spawn(connection(index as u32, url, shared, phase, opened));
        handshakes.spawn(handshake);
    }
    // Every handshake ended, one way or the other.
    while handshakes.join_next().await.is_some() {}
    shared.phase.send_replace(Phase::Send);
    tokio::time::sleep(shared.shape.duration).await;
    shared.phase.send_replace(Phase::Drain);
    // Until every delivery owed has arrived, or --drain is over (a message
    // lost or refused is never owed in vain for longer).
    let deadline = Instant::now() + shared.shape.drain;
    while Instant::now() < deadline && !shared.tally().all_delivered() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn report_progress(shared: Arc<Shared>, progress: impl Fn(Progress)) {
    let mut every = tokio::time::interval(Duration::from_millis(500));
    loop {
        every.tick().await;
        let phase = match *shared.phase.borrow() {
            Phase::Connect => "connecting",
            Phase::Send => "sending",
            Phase::Drain => "draining",
            Phase::Close => "closing",
        };
        let now = shared.now_us();
        let tally = shared.tally();
        let (delivered_last_second, p99_ms) = tally.live(now);
        let update = Progress {
            phase,
            open: tally.open(),
            wanted: shared.shape.connections(),
            sent: tally.sent_count(),
            delivered_last_second,
            p99_ms,
        };
        drop(tally);
        progress(update);
    }
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One connection: its handshake, its messages while the run sends, and
/// everything it receives until the run closes it.
async fn connection(
    index: u32,
    url: String,
    shared: Arc<Shared>,
    mut phase: watch::Receiver<Phase>,
    opened: tokio::sync::oneshot::Sender<()>,
) {
    let started = Instant::now();
    let handshake = tokio::select! {
        handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, tokio_tungstenite::connect_async(&url)) => handshake,
        // Interrupted while connecting.
        _ = phase.wait_for(|p| *p == Phase::Close) => return,
    };
    let socket: Socket = match handshake {
        Ok(Ok((socket, _))) => {
            shared
                .tally()
                .opened(index, started.elapsed().as_micros() as u64, shared.now_us());
            socket
        }
        Ok(Err(error)) => {
            shared.tally().handshake_failed(handshake_error(&error));
            return;
        }
        Err(_) => {
            shared
                .tally()
                .handshake_failed(format!("handshake: no answer in {} s", HANDSHAKE_TIMEOUT.as_secs()));
            return;
        }
    };
    let _ = opened.send(());
    let (mut sink, mut stream) = socket.split();
    let closing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (shared, closing) = (shared.clone(), closing.clone());
        async move {
            while let Some(frame) = stream.next().await {
                let now_us = shared.now_us();
                match frame {
                    Ok(Message::Text(text)) => received(&shared, index, &text, now_us),
                    Ok(Message::Close(frame)) => {
                        if !closing.load(std::sync::atomic::Ordering::SeqCst) {
                            let code = frame.map_or("no code".to_string(), |f| u16::from(f.code).to_string());
                            shared
                                .tally()
                                .lost_connection(index, format!("closed by the server: {code}"), now_us);
                        }
                    }
                    Ok(_) => {}
                    Err(error) => {
                        if !closing.load(std::sync::atomic::Ordering::SeqCst) {
                            shared.tally().lost_connection(
                                index,
                                format!("connection failed: {}", kind_of(&error)),
                                now_us,
                            );
                        }
                        return;
                    }
                }
            }
        }
    };
    let reading = tokio::spawn(reader);
    if phase.wait_for(|p| *p >= Phase::Send).await.is_ok()
        && *phase.borrow() == Phase::Send
        && let Some(interval) = shared.shape.send_interval()
    {
        send_messages(index, &shared, &mut sink, &mut phase, interval).await;
    }
    let _ = phase.wait_for(|p| *p == Phase::Close).await;
    closing.store(true, std::sync::atomic::Ordering::SeqCst);
    let close = sink.send(Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "load test over".into(),
    })));
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, close).await;
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, reading).await;
    // `phase` drops here: the run counts the connection as closed.
}

/// Sends at `interval`, starting at a random point of the first one so
/// that connections do not send in step, until the phase moves on.
async fn send_messages(
    index: u32,
    shared: &Shared,
    sink: &mut futures::stream::SplitSink<Socket, Message>,
    phase: &mut watch::Receiver<Phase>,
    interval: Duration,
) {
    let shape = &shared.shape;
    let offset = interval.mul_f64(rand::random::<f64>());
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + offset, interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let user = index / shape.connections_per_user;
    let mut seq = 0u32;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = phase.changed() => return,
        }
        let direct = rand::random_range(0..100u8) < shape.direct_percent;
        let target = if direct {
            // Another user, any room.
            let other = rand::random_range(0..shape.users - 1);
            Target::User(if other >= user { other + 1 } else { other })
        } else {
            Target::Room(user % shape.rooms)
        };
        let sent_us = shared.now_us();
        let text = message_text(&shared.run, index, seq, sent_us, shape.message_bytes);
        let frame = match target {
            Target::User(to) => {
                serde_json::json!({"action": "sendmessage", "message": text, "to": user_name(&shared.run, to)})
            }
            Target::Room(_) => serde_json::json!({"action": "sendmessage", "message": text}),
        };
        if let Err(error) = sink.send(Message::text(frame.to_string())).await {
            shared
                .tally()
                .lost_connection(index, format!("send failed: {}", kind_of(&error)), shared.now_us());
            return;
        }
        // Counted once it left: a frame that could not be sent is owed to nobody.
        shared.tally().sent(index, seq, target, sent_us);
        seq += 1;
    }
}

/// `lt1 RUN SENDER SEQ SENT_US ` padded with `x` to `bytes`.
pub fn message_text(run: &str, sender: u32, seq: u32, sent_us: u64, bytes: usize) -> String {
    let mut text = format!("{MARK} {run} {sender} {seq} {sent_us} ");
    let padding = bytes.saturating_sub(text.len());
    text.extend(std::iter::repeat_n('x', padding));
    text
}

/// (sender, seq, sent_us) of one of this run's messages.
pub fn parse_message_text(run: &str, text: &str) -> Option<(u32, u32, u64)> {
    let mut parts = text.splitn(6, ' ');
    if parts.next()? != MARK || parts.next()? != run {
        return None;
    }
    Some((
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
    ))
}

/// The part of an event the run reads: the chat's events have a `type`;
/// API Gateway's own frames (`{"message": "Internal server error",
/// "connectionId", "requestId"}` when the route's function failed or timed
/// out, `"Too Many Requests"` when throttled) have a `message` instead.
#[derive(serde::Deserialize)]
struct Event<'a> {
    #[serde(rename = "type", default, borrow)]
    kind: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    text: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    code: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    message: Option<std::borrow::Cow<'a, str>>,
}

fn received(shared: &Shared, recipient: u32, text: &str, now_us: u64) {
    let Ok(event) = serde_json::from_str::<Event>(text) else {
        shared.tally().error("not a JSON frame".into(), now_us);
        return;
    };
    match (event.kind.as_deref(), event.message.as_deref()) {
        (Some("message"), _) => {
            if let Some((sender, seq, sent_us)) = event.text.as_deref().and_then(|t| parse_message_text(&shared.run, t))
            {
                shared.tally().delivered(recipient, sender, seq, sent_us, now_us);
            }
        }
        (Some("error"), _) => {
            let code = event.code.as_deref().unwrap_or("without a code");
            shared.tally().refused(recipient, format!("error event {code}"), now_us);
        }
        (None, Some(message)) => {
            shared
                .tally()
                .refused(recipient, format!("API Gateway: {message}"), now_us);
        }
        _ => {}
    }
}

/// A refused or failed handshake, as counted: the HTTP status when there is one.
fn handshake_error(error: &tungstenite::Error) -> String {
    match error {
        tungstenite::Error::Http(response) => format!("handshake HTTP {}", response.status().as_u16()),
        other => format!("handshake: {}", kind_of(other)),
    }
}

fn kind_of(error: &tungstenite::Error) -> String {
    match error {
        tungstenite::Error::Io(io) => io.kind().to_string(),
        tungstenite::Error::Protocol(protocol) => protocol.to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> Shape {
        Shape {
            users: 4,
            connections_per_user: 2,
            rooms: 2,
            messages_per_minute_per_user: 60.0,
            message_bytes: 100,
            direct_percent: 25,
            duration: Duration::from_secs(3),
            connect_rate: 100,
            drain: Duration::from_secs(5),
        }
    }

    #[test]
    fn a_message_carries_its_sender_number_and_time_at_the_size_asked() {
        let text = message_text("abcd1234", 7, 42, 1_234_567, 100);
        assert_eq!(text.len(), 100);
        assert_eq!(parse_message_text("abcd1234", &text), Some((7, 42, 1_234_567)));
        assert_eq!(parse_message_text("other123", &text), None, "another run's message");
        assert_eq!(parse_message_text("abcd1234", "hello"), None);
        let longest = message_text("abcd1234", u32::MAX, u32::MAX, 9_999_999_999_999, MIN_MESSAGE_BYTES);
        assert!(longest.len() <= MIN_MESSAGE_BYTES, "{}", longest.len());
    }

    #[test]
    fn api_gateways_own_error_frames_are_told_from_the_chats_events() {
        let gateway: Event =
            serde_json::from_str(r#"{"message": "Internal server error", "connectionId": "c=", "requestId": "r"}"#)
                .unwrap();
        assert_eq!(
            (gateway.kind, gateway.message.as_deref()),
            (None, Some("Internal server error"))
        );
        let chat: Event =
            serde_json::from_str(r#"{"type":"error","code":"rate_limited","message":"slow down"}"#).unwrap();
        assert_eq!(
            (chat.kind.as_deref(), chat.code.as_deref()),
            (Some("error"), Some("rate_limited"))
        );
    }

    #[test]
    fn shapes_that_mean_nothing_are_refused() {
        assert!(shape().check().is_ok());
        for (change, expected) in [
            (
                Box::new(|s: &mut Shape| s.users = 0) as Box<dyn Fn(&mut Shape)>,
                "at least 1",
            ),
            (Box::new(|s: &mut Shape| s.rooms = 5), "a room needs a user"),
            (Box::new(|s: &mut Shape| s.message_bytes = 10), "at least 64 bytes"),
            (Box::new(|s: &mut Shape| s.direct_percent = 101), "0 to 100"),
            (
                Box::new(|s: &mut Shape| s.messages_per_minute_per_user = -1.0),
                "--rate",
            ),
            (Box::new(|s: &mut Shape| s.connect_rate = 0), "--connect-rate"),
            (
                Box::new(|s: &mut Shape| {
                    s.users = 1;
                    s.rooms = 1
                }),
                "at least 2 --users",
            ),
        ] {
            let mut shape = shape();
            change(&mut shape);
            let error = shape.check().unwrap_err().to_string();
            assert!(error.contains(expected), "{error}");
        }
    }

    #[test]
    fn a_users_rate_is_shared_by_its_connections() {
        assert_eq!(shape().send_interval(), Some(Duration::from_secs(2)));
        let idle = Shape {
            messages_per_minute_per_user: 0.0,
            ..shape()
        };
        assert_eq!(idle.send_interval(), None);
    }

    #[test]
    fn more_connections_than_open_files_allowed_are_refused_with_the_way_out() {
        let (_, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap();
        if hard == rlimit::INFINITY {
            return;
        }
        let error = ensure_open_files(hard).unwrap_err().to_string();
        assert!(error.contains(&format!("at most {hard} open files")), "{error}");
        assert!(error.contains("ulimit -n"), "{error}");
        ensure_open_files(10).unwrap();
    }
}
