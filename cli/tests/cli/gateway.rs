//! The local gateway's authorizer semantics that the chat's own authorizer
//! never exercises (Deny, malformed output, identity sources), through a real
//! WebSocket client, the real gateway and runtime, and functions in Python.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chatctl::dev::gateway::{self, GatewayConfig, RouteTable};
use chatctl::dev::runtime::{LocalFunction, LogSink};
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::{self, Message};

/// Answers according to `?mode=` and counts its invocations in a file.
const AUTHORIZER: &str = r#"
import os
def handle(event):
    with open(os.environ["INVOCATIONS"], "a") as f:
        f.write("invoked\n")
    mode = event["queryStringParameters"]["mode"]
    if mode == "unauthorized":
        raise Exception("Unauthorized")
    if mode == "malformed":
        return {"principalId": "someone", "policy": "allow me"}
    if mode == "crash":
        raise RuntimeError("the authorizer failed")
    effect = "Deny" if mode == "deny" else "Allow"
    statement = {"Action": "execute-api:Invoke", "Effect": effect, "Resource": event["methodArn"]}
    return {
        "principalId": "carol",
        "policyDocument": {"Version": "2012-10-17", "Statement": [statement]},
        "context": {"user": "carol", "plan": "free"},
    }
"#;

/// Accepts, unless `?connect=` asks for a status or a failure.
/// Notes each `$disconnect` with its status code.
const DISCONNECT: &str = r#"
import os
def handle(event):
    with open(os.environ["DISCONNECTS"], "a") as f:
        f.write(str(event["requestContext"]["disconnectStatusCode"]) + "\n")
    return {"statusCode": 200}
"#;

const CONNECT: &str = r#"
def handle(event):
    answer = (event.get("queryStringParameters") or {}).get("connect", "200")
    if answer == "fail":
        raise RuntimeError("the connect function failed")
    return {"statusCode": int(answer)}
"#;

/// Sends the route it ran for and the authorizer context back to the caller.
const ECHO: &str = r#"
import json, os, urllib.parse, urllib.request
def handle(event):
    context = event["requestContext"]
    reply = {"route": context["routeKey"], "authorizer": context.get("authorizer"), "body": event.get("body")}
    url = os.environ["CALLBACK"] + "/@connections/" + urllib.parse.quote(context["connectionId"], safe="")
    urllib.request.urlopen(urllib.request.Request(url, data=json.dumps(reply).encode(), method="POST"))
    return {"statusCode": 200}
"#;

struct LocalApi {
    url: String,
    invocations: std::path::PathBuf,
    disconnects: std::path::PathBuf,
    handle: gateway::GatewayHandle,
    _dir: tempfile::TempDir,
    _server: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn serve_api(identity_sources: &[&str]) -> LocalApi {
    serve_api_with(identity_sources, gateway::MAX_CONNECTION_LIFETIME).await
}

async fn serve_api_with(identity_sources: &[&str], max_lifetime: Duration) -> LocalApi {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let invocations = dir.path().join("invocations");
    let disconnects = dir.path().join("disconnects");
    let logs: LogSink = Arc::new(|_| {});
    let mut functions = HashMap::new();
    let functions_code = [
        ("authorizer", AUTHORIZER),
        ("connect", CONNECT),
        ("echo", ECHO),
        ("disconnect", DISCONNECT),
    ];
    for (name, code) in functions_code {
        let mut config = crate::harness::python_function(dir.path(), name, code);
        config
            .env
            .insert("INVOCATIONS".into(), invocations.display().to_string());
        config
            .env
            .insert("DISCONNECTS".into(), disconnects.display().to_string());
        config
            .env
            .insert("CALLBACK".into(), format!("http://127.0.0.1:{port}/test"));
        let function = LocalFunction::start(config, logs.clone()).await.unwrap();
        functions.insert(name.to_string(), Arc::new(function));
    }
    let config = GatewayConfig {
        api_id: "abc123".into(),
        stage: "test".into(),
        region: "us-east-1".into(),
        account: "123456789012".into(),
        routes: RouteTable {
            selection_path: vec!["action".into()],
            routes: HashMap::from([
                ("$connect".to_string(), "connect".to_string()),
                ("$default".to_string(), "echo".to_string()),
                ("$disconnect".to_string(), "disconnect".to_string()),
            ]),
            // A two-way MOCK route (the keep-alive) and a one-way one.
            mocks: HashMap::from([
                ("ping".to_string(), Some(r#"{"type":"pong"}"#.to_string())),
                ("drop".to_string(), None),
            ]),
            authorizer: Some("authorizer".into()),
            identity_sources: identity_sources.iter().map(|s| s.to_string()).collect(),
        },
        functions,
        idle_timeout: gateway::DEFAULT_IDLE_TIMEOUT,
        max_lifetime,
        limits: gateway::Limits::default(),
        metrics: Default::default(),
        detailed_metrics: true,
        access_log: None,
    };
    let (router, handle) = gateway::router(config);
    LocalApi {
        url: format!("ws://127.0.0.1:{port}/test"),
        invocations,
        disconnects,
        handle,
        _dir: dir,
        _server: tokio::spawn(gateway::serve(listener, router)),
    }
}

impl LocalApi {
    async fn handshake(&self, query: &str) -> Result<(), u16> {
        match tokio_tungstenite::connect_async(format!("{}?{query}", self.url)).await {
            Ok(_) => Ok(()),
            Err(tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
            Err(other) => panic!("{other}"),
        }
    }

    fn invocations(&self) -> usize {
        std::fs::read_to_string(&self.invocations)
            .map(|text| text.lines().count())
            .unwrap_or(0)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorizer_answers_decide_the_handshake() {
    let api = serve_api(&["route.request.querystring.mode"]).await;

    assert_eq!(api.handshake("").await, Err(401), "identity source missing");
    assert_eq!(api.handshake("mode=").await, Err(401), "identity source empty");
    assert_eq!(api.invocations(), 0, "refused without invoking the authorizer");

    assert_eq!(api.handshake("mode=unauthorized").await, Err(401));
    assert_eq!(api.handshake("mode=deny").await, Err(403));
    assert_eq!(api.handshake("mode=malformed").await, Err(500));
    assert_eq!(api.handshake("mode=crash").await, Err(500));
    assert_eq!(api.invocations(), 4);
    assert_eq!(api.handshake("mode=allow").await, Ok(()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connect_function_decides_the_handshake() {
    let api = serve_api(&[]).await;
    assert_eq!(api.handshake("mode=allow&connect=200").await, Ok(()));
    assert_eq!(api.handshake("mode=allow&connect=204").await, Ok(()));
    assert_eq!(api.handshake("mode=allow&connect=429").await, Err(429));
    assert_eq!(api.handshake("mode=allow&connect=403").await, Err(403));
    assert_eq!(
        api.handshake("mode=allow&connect=fail").await,
        Err(502),
        "a failing function"
    );
}

/// Sends `total` bytes of text as one message in frames of at most 30 KB.
async fn send_fragmented(socket: &mut Socket, total: usize) {
    use tungstenite::protocol::frame::Frame;
    use tungstenite::protocol::frame::coding::{Data, OpCode};
    let text = "x".repeat(total);
    let chunks: Vec<&[u8]> = text.as_bytes().chunks(30 * 1024).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let opcode = if i == 0 { Data::Text } else { Data::Continue };
        let frame = Frame::message(chunk.to_vec(), OpCode::Data(opcode), i + 1 == chunks.len());
        socket.send(Message::Frame(frame)).await.unwrap();
    }
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_128_kb_closes_with_1009_even_in_small_frames() {
    let api = serve_api(&[]).await;
    let (mut socket, _) = tokio_tungstenite::connect_async(format!("{}?mode=allow", api.url))
        .await
        .unwrap();
    send_fragmented(&mut socket, 120 * 1024).await;
    let reply = next_text(&mut socket).await;
    assert_eq!(
        reply["body"].as_str().map(str::len),
        Some(120 * 1024),
        "120 KB in 4 frames is delivered"
    );

    send_fragmented(&mut socket, 129 * 1024).await;
    assert_eq!(close_code(&mut socket).await, Some(1009));
}

/// The code of the close frame that ends `socket`, within 10 s.
async fn close_code(socket: &mut Socket) -> Option<u16> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("not closed within 10 s")
        {
            Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => continue,
            other => panic!("closed without a close frame: {other:?}"),
        }
    }
}

async fn next_text(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("no reply within 10 s")
            .unwrap()
            .unwrap();
        if let Message::Text(text) = message {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

/// A route on a MOCK integration is answered by the gateway itself, as API
/// Gateway does: a two-way one with its integration response's template, a
/// one-way one with nothing; no function runs for either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mock_route_is_answered_without_invoking_a_function() {
    let api = serve_api(&[]).await;
    let (mut socket, _) = tokio_tungstenite::connect_async(format!("{}?mode=allow", api.url))
        .await
        .unwrap();
    socket.send(Message::Text(r#"{"action":"drop"}"#.into())).await.unwrap();
    socket.send(Message::Text(r#"{"action":"ping"}"#.into())).await.unwrap();
    assert_eq!(
        next_text(&mut socket).await,
        serde_json::json!({"type": "pong"}),
        "the one-way route answered nothing"
    );
    // The next reply is the function's own: none came for either mock.
    socket
        .send(Message::Text(r#"{"action":"other"}"#.into()))
        .await
        .unwrap();
    assert_eq!(next_text(&mut socket).await["body"], r#"{"action":"other"}"#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_authorizer_context_reaches_every_later_event() {
    let api = serve_api(&[]).await;
    let (mut socket, _) = tokio_tungstenite::connect_async(format!("{}?mode=allow", api.url))
        .await
        .unwrap();
    for frame in ["not json", r#"{"action":"unknown"}"#, r#"{"action":{"nested":1}}"#] {
        socket.send(Message::Text(frame.into())).await.unwrap();
        let reply = next_text(&mut socket).await;
        assert_eq!(reply["route"], "$default", "{frame}");
        assert_eq!(reply["body"], frame);
        assert_eq!(
            reply["authorizer"],
            serde_json::json!({"principalId": "carol", "user": "carol", "plan": "free"})
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_ends_at_its_maximum_lifetime_however_busy() {
    let api = serve_api_with(&[], Duration::from_millis(1500)).await;
    // The lifetime counts from the start of the handshake.
    let started = std::time::Instant::now();
    let (mut socket, _) = tokio_tungstenite::connect_async(format!("{}?mode=allow", api.url))
        .await
        .unwrap();
    let code = loop {
        socket.send(Message::Text("busy".into())).await.unwrap_or_default();
        match tokio::time::timeout(Duration::from_millis(300), socket.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => break frame.map(|f| u16::from(f.code)),
            Ok(Some(Ok(_))) | Err(_) => {}
            other => panic!("{other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(10), "still open");
    };
    assert_eq!(code, Some(1001));
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutting_down_closes_as_going_away_and_runs_every_disconnect() {
    let api = serve_api(&[]).await;
    let mut sockets = vec![];
    for _ in 0..3 {
        let (socket, _) = tokio_tungstenite::connect_async(format!("{}?mode=allow", api.url))
            .await
            .unwrap();
        sockets.push(socket);
    }
    assert_eq!(api.handle.shut_down(Duration::from_secs(10)).await, 3);
    let disconnects = std::fs::read_to_string(&api.disconnects).unwrap();
    assert_eq!(
        disconnects.lines().collect::<Vec<_>>(),
        ["1001"; 3],
        "ran before shut_down returned"
    );
    for socket in &mut sockets {
        assert_eq!(close_code(socket).await, Some(1001));
    }
    assert_eq!(
        api.handshake("mode=allow").await,
        Err(503),
        "no new connection while stopping"
    );
}
