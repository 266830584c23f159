//! `chatctl dev` end to end: a real WebSocket client against the local
//! gateway, the functions' real binaries, and the emulator.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

struct Dev {
    child: tokio::process::Child,
    url: String,
    /// The `@connections` URL it prints.
    callback: String,
    endpoint: String,
    token: String,
    /// What `chatctl dev` prints on stderr, line by line.
    stderr: tokio::sync::mpsc::UnboundedReceiver<String>,
    /// `--stack NAME` when the stack is not the default one.
    stack: Vec<String>,
    _workdir: tempfile::TempDir,
}

async fn start_dev() -> Dev {
    start_dev_with(&[]).await
}

/// `chatctl dev` on the binaries already built, not watching the sources
/// (other tests' dev servers must not restart when one test touches them).
async fn start_dev_with(extra: &[&str]) -> Dev {
    let mut args = vec!["--no-build", "--no-watch"];
    args.extend(extra);
    spawn_dev(&args).await
}

async fn spawn_dev(extra: &[&str]) -> Dev {
    let workdir = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_chatctl"))
        .args(["dev", "--port", "0", "--instances", "2"])
        .args(extra)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env("HOME", workdir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        // Its own process group, so a test can kill it with its functions.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut url, mut callback, mut endpoint, mut token) = (String::new(), String::new(), String::new(), String::new());
    let ready = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let value = |prefix: &str| line.strip_prefix(prefix).map(|v| v.trim().to_string());
            if let Some(v) = value("WebSocket URL:") {
                url = v;
            } else if let Some(v) = value("@connections URL:") {
                callback = v;
            } else if let Some(v) = value("AWS endpoint:") {
                endpoint = v.split_whitespace().next().unwrap().to_string();
            } else if let Some(v) = value("Token for alice:") {
                token = v;
            } else if line.starts_with("Ready.") {
                return;
            }
        }
        panic!("chatctl dev exited before it was ready");
    };
    tokio::time::timeout(Duration::from_secs(180), ready)
        .await
        .expect("chatctl dev was not ready in time");
    // Keep draining stdout so the process never blocks on a full pipe; pass stderr on.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let (stderr_lines, stderr) = tokio::sync::mpsc::unbounded_channel();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            let _ = stderr_lines.send(line);
        }
    });
    Dev {
        child,
        url,
        callback,
        endpoint,
        token,
        stderr,
        stack: extra
            .windows(2)
            .find(|pair| pair[0] == "--stack")
            .map(|pair| pair.iter().map(|s| s.to_string()).collect())
            .unwrap_or_default(),
        _workdir: workdir,
    }
}

impl Dev {
    /// SIGKILL to chatctl dev's process group: nothing gets to clean up. Its
    /// functions and emulator run in groups of their own and end by themselves.
    async fn kill_everything(&mut self) {
        self.signal("-KILL");
        let _ = self.child.wait().await;
    }

    /// Ctrl-C as a terminal sends it, to the whole foreground group; the exit code.
    async fn interrupt(&mut self) -> Option<i32> {
        self.signal("-INT");
        let status = tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("chatctl dev did not stop within 20 s after Ctrl-C")
            .unwrap();
        status.code()
    }

    fn signal(&self, signal: &str) {
        let group = format!("-{}", self.child.id().unwrap());
        let sent = std::process::Command::new("kill")
            .args([signal, "--", &group])
            .status()
            .unwrap();
        assert!(sent.success());
    }

    async fn chatctl(&self, args: &[&str]) -> std::process::Output {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_chatctl"))
            .args(args)
            .args(["--endpoint-url", &self.endpoint])
            // As the README says: the printed endpoint is all other commands need.
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("AWS_REGION")
            .env_remove("AWS_DEFAULT_REGION")
            .output()
            .await
            .unwrap()
    }

    async fn token(&self, user: &str) -> String {
        let mut args = vec!["token", "--user", user];
        args.extend(self.stack.iter().map(String::as_str));
        let output = self.chatctl(&args).await;
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap().trim().to_string()
    }

    async fn connect(&self, query: &str) -> Result<Socket, tungstenite::Error> {
        tokio_tungstenite::connect_async(format!("{}?{query}", self.url))
            .await
            .map(|(socket, _)| socket)
    }
}

/// A plain HTTP/1.1 GET to `server` with the given Host header: (status, body).
async fn http_get(server: &str, path: &str, host: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(server).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn refused_with(result: Result<Socket, tungstenite::Error>) -> u16 {
    match result {
        Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("the connection was accepted"),
    }
}

async fn send(socket: &mut Socket, frame: Value) {
    socket.send(Message::Text(frame.to_string().into())).await.unwrap();
}

/// The next JSON event, within a few seconds.
async fn event(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("no event within 10 s")
            .expect("the connection closed")
            .unwrap();
        if let Message::Text(text) = message {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

async fn nothing_arrives(socket: &mut Socket) {
    if let Ok(Some(Ok(Message::Text(text)))) = tokio::time::timeout(Duration::from_millis(700), socket.next()).await {
        panic!("unexpected event {text}");
    }
}

async fn closed_with(socket: &mut Socket) -> u16 {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("not closed")
        {
            Some(Ok(Message::Close(Some(frame)))) => return u16::from(frame.code),
            Some(Ok(_)) => continue,
            other => panic!("closed without a close frame: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_serves_the_chat_end_to_end() {
    let mut dev = start_dev().await;

    // The authorizer guards $connect.
    assert_eq!(refused_with(dev.connect("room=lobby").await), 401);
    let forged = chat_core::token::mint(
        b"not-the-stack-secret-not-the-stack-secret",
        "mallory",
        Duration::from_secs(60),
        std::time::SystemTime::now(),
    )
    .unwrap();
    assert_eq!(refused_with(dev.connect(&format!("token={forged}")).await), 401);
    let bob_token = dev.token("bob").await;
    assert_eq!(
        refused_with(dev.connect(&format!("token={bob_token}&room=no%20spaces")).await),
        400
    );

    let mut alice = dev.connect(&format!("token={}&room=lobby", dev.token)).await.unwrap();
    let mut bob = dev.connect(&format!("token={bob_token}")).await.unwrap();
    let carol_token = dev.token("carol").await;
    // Browsers pass the token and room as subprotocols; the first is echoed.
    let mut request = dev.url.as_str().into_client_request().unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        format!("{carol_token}, general").parse().unwrap(),
    );
    let (mut carol, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], carol_token.as_str());

    // Room messages reach the room, sender included.
    send(&mut alice, json!({"action": "sendmessage", "message": "hello lobby"})).await;
    for socket in [&mut alice, &mut bob] {
        let message = event(socket).await;
        assert_eq!(
            (message["type"].as_str(), message["from"].as_str()),
            (Some("message"), Some("alice"))
        );
        assert_eq!(message["room"], "lobby");
        assert_eq!(message["text"], "hello lobby");
    }
    nothing_arrives(&mut carol).await;

    // Direct messages.
    send(
        &mut alice,
        json!({"action": "sendmessage", "message": "psst", "to": "carol"}),
    )
    .await;
    let direct = event(&mut carol).await;
    assert_eq!(
        (direct["to"].as_str(), direct["from"].as_str()),
        (Some("carol"), Some("alice"))
    );
    assert_eq!(event(&mut alice).await["text"], "psst");
    nothing_arrives(&mut bob).await;

    // History, join, $default, invalid input.
    send(&mut bob, json!({"action": "getmessages"})).await;
    let history = event(&mut bob).await;
    assert_eq!(history["type"], "history");
    assert_eq!(history["messages"][0]["text"], "hello lobby");
    send(&mut bob, json!({"action": "join", "room": "general"})).await;
    assert_eq!(event(&mut bob).await, json!({"type": "joined", "room": "general"}));
    send(&mut carol, json!({"action": "sendmessage", "message": "hi general"})).await;
    assert_eq!(event(&mut bob).await["text"], "hi general");
    assert_eq!(event(&mut carol).await["text"], "hi general");
    send(&mut bob, json!({"action": "dance"})).await;
    let help = event(&mut bob).await;
    assert_eq!(help["code"], "unknown_action");
    assert_eq!(help["user"], "bob");
    assert_eq!(help["room"], "general");
    assert!(help["connection_id"].as_str().unwrap().len() >= 16);
    // The lifecycle routes are not for messages: such a frame reaches
    // $default, which answers, and the connection stays open.
    for lifecycle in ["$connect", "$disconnect"] {
        send(&mut bob, json!({"action": lifecycle})).await;
        let help = event(&mut bob).await;
        assert_eq!(help["code"], "unknown_action", "{lifecycle}: {help}");
    }
    bob.send(Message::Text("not json".into())).await.unwrap();
    assert_eq!(event(&mut bob).await["code"], "invalid_json");
    send(&mut bob, json!({"action": "sendmessage", "message": ""})).await;
    assert_eq!(event(&mut bob).await["code"], "empty_message");

    // Frame limits close the connection as API Gateway does.
    let mut big = dev.connect(&format!("token={bob_token}")).await.unwrap();
    send(
        &mut big,
        json!({"action": "sendmessage", "message": "x".repeat(40 * 1024)}),
    )
    .await;
    assert_eq!(closed_with(&mut big).await, 1009);
    bob.send(Message::Binary(vec![1, 2, 3].into())).await.unwrap();
    assert_eq!(closed_with(&mut bob).await, 1003);

    // The @connections API: info, delivery, 410, 413, and closing a connection.
    send(&mut alice, json!({"action": "whoami"})).await;
    let alice_id = event(&mut alice).await["connection_id"].as_str().unwrap().to_string();
    let callback = dev.url.replace("ws://", "http://");
    let sdk = chat_testkit::moto::sdk_config_for(&callback).await;
    let connections = aws_sdk_apigatewaymanagement::Client::new(&sdk);
    let info = connections
        .get_connection()
        .connection_id(&alice_id)
        .send()
        .await
        .unwrap();
    assert_eq!(info.identity().unwrap().source_ip(), Some("127.0.0.1"));
    assert!(info.connected_at().is_some() && info.last_active_at().is_some());
    connections
        .post_to_connection()
        .connection_id(&alice_id)
        .data(aws_sdk_apigatewaymanagement::primitives::Blob::new(
            b"{\"hello\":\"from the server\"}".to_vec(),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(event(&mut alice).await, json!({"hello": "from the server"}));
    let gone = connections
        .post_to_connection()
        .connection_id("NoSuchConnection=")
        .data(aws_sdk_apigatewaymanagement::primitives::Blob::new(b"x".to_vec()))
        .send()
        .await
        .unwrap_err();
    assert!(gone.as_service_error().unwrap().is_gone_exception(), "{gone:?}");
    let too_large = connections
        .post_to_connection()
        .connection_id(&alice_id)
        .data(aws_sdk_apigatewaymanagement::primitives::Blob::new(vec![
            b'x';
            129 * 1024
        ]))
        .send()
        .await
        .unwrap_err();
    assert!(
        too_large.as_service_error().unwrap().is_payload_too_large_exception(),
        "{too_large:?}"
    );
    let status = |output: std::process::Output| -> Value { serde_json::from_slice(&output.stdout).unwrap() };
    let before = status(dev.chatctl(&["status", "--output", "json"]).await)["open_connections"]
        .as_i64()
        .unwrap();
    connections
        .delete_connection()
        .connection_id(&alice_id)
        .send()
        .await
        .unwrap();
    closed_with(&mut alice).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let after = status(dev.chatctl(&["status", "--output", "json"]).await)["open_connections"]
        .as_i64()
        .unwrap();
    assert_eq!(after, before - 1, "$disconnect ran for the closed connection");
    let gone = connections
        .get_connection()
        .connection_id(&alice_id)
        .send()
        .await
        .unwrap_err();
    assert!(gone.as_service_error().unwrap().is_gone_exception());

    // The functions' logs reach the emulator's CloudWatch Logs.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let logs = dev.chatctl(&["logs", "sendmessage", "--since", "5m"]).await;
    let logs = String::from_utf8_lossy(&logs.stdout);
    assert!(
        logs.contains("[sendmessage]") && logs.contains("message sent"),
        "{logs}"
    );
    let routes = dev.chatctl(&["routes", "list"]).await;
    assert!(String::from_utf8_lossy(&routes.stdout).contains("chat-sendmessage"));

    // The web client, its settings, and tokens for the page, on loopback names only.
    let server = dev
        .url
        .trim_start_matches("ws://")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let (status, page) = http_get(&server, "/", &server).await;
    assert_eq!(status, 200);
    assert!(page.contains("app.js"), "{page}");
    let (_, config) = http_get(&server, "/config.json", "localhost").await;
    let config: Value = serde_json::from_str(&config).unwrap();
    assert_eq!(config["url"], dev.url.as_str());
    assert_eq!(config["auth"], "token");
    let (status, minted) = http_get(&server, "/token.json?user=bob", &server).await;
    assert_eq!(status, 200);
    let minted: Value = serde_json::from_str(&minted).unwrap();
    assert!(
        dev.connect(&format!("token={}", minted["token"].as_str().unwrap()))
            .await
            .is_ok()
    );
    let (status, refused) = http_get(&server, "/token.json?user=bob", "attacker.example").await;
    assert_eq!(status, 403, "a rebound host name: {refused}");
    let (status, refused) = http_get(&server, "/token.json?user=bad%20name", &server).await;
    assert_eq!(status, 400, "{refused}");

    // Ctrl-C stops everything, with success.
    assert_eq!(dev.interrupt().await, Some(0));
    let emulator = dev.endpoint.trim_start_matches("http://").to_string();
    assert!(
        std::net::TcpStream::connect(emulator).is_err(),
        "the emulator was stopped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_and_disconnected() {
    let mut dev = start_dev_with(&["--idle-timeout", "2s", "--max-lifetime", "6s", "--stack", "idle"]).await;
    let opened = std::time::Instant::now();
    let mut quiet = dev.connect(&format!("token={}", dev.token)).await.unwrap();
    let mut chatty = dev.connect(&format!("token={}", dev.token)).await.unwrap();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(900)).await;
        send(&mut chatty, json!({"action": "getmessages"})).await;
        assert_eq!(event(&mut chatty).await["type"], "history");
    }
    assert_eq!(closed_with(&mut quiet).await, 1001, "idle for 2 s");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = dev.chatctl(&["status", "--stack", "idle", "--output", "json"]).await;
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["open_connections"], 1, "$disconnect ran for the idle one only");
    // However busy, a connection ends at --max-lifetime (API Gateway: 2 h).
    let ended = loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if chatty.send(Message::text(r#"{"action":"getmessages"}"#)).await.is_err() {
            break None;
        }
        match tokio::time::timeout(Duration::from_secs(2), chatty.next()).await {
            Ok(Some(Ok(Message::Close(Some(frame))))) => break Some(u16::from(frame.code)),
            Ok(Some(Ok(_))) => assert!(opened.elapsed() < Duration::from_secs(12), "still open"),
            other => panic!("closed without a close frame: {other:?}"),
        }
    };
    assert_eq!(ended, Some(1001), "closed at the end of its life");
    assert!(opened.elapsed() >= Duration::from_secs(6), "{:?}", opened.elapsed());
    dev.interrupt().await;
}

/// Whether `condition` holds within 10 s.
async fn eventually<F, Fut>(condition: F) -> bool
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if condition().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// Open connection records of a stack, as (connection id, connected_at), and its count.
async fn connection_records(dynamodb: &aws_sdk_dynamodb::Client, stack: &str) -> (Vec<(String, i64)>, i64) {
    use chat_core::store::schema;
    let scan = dynamodb
        .scan()
        .table_name(format!("{stack}-connections"))
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    let number = |item: &std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>, name: &str| {
        item.get(name)
            .and_then(|v| v.as_n().ok())
            .map(|n| n.parse::<i64>().unwrap())
    };
    let (mut records, mut counter) = (vec![], 0);
    for item in scan.items() {
        let id = item[schema::CONNECTION_ID].as_s().unwrap().clone();
        if schema::is_bookkeeping_id(&id) {
            // This window's count and the previous one's, on every shard (see chat_core::store::count_window).
            let window = chat_core::store::count_window(chat_core::ids::epoch_ms(std::time::SystemTime::now()));
            counter += [window, window - 1]
                .into_iter()
                .filter_map(|w| number(item, &schema::count_attribute(w)))
                .sum::<i64>();
        } else {
            records.push((id, number(item, schema::CONNECTED_AT).unwrap()));
        }
    }
    (records, counter)
}

/// A connection that went away without `$disconnect` running (aws-facts.md
/// §5: 410 comes for such connections) is pruned the first time a delivery
/// finds it gone. Here it vanishes with the gateway that held it, killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_connection_is_pruned_by_the_next_delivery() {
    use aws_sdk_dynamodb::types::AttributeValue;
    use chat_core::store::schema;

    let moto = chat_testkit::Moto::start();
    let dynamodb = aws_sdk_dynamodb::Client::new(&moto.sdk_config().await);
    let args = ["--endpoint-url", moto.endpoint(), "--stack", "vanish"];

    let mut first = start_dev_with(&args).await;
    let vanished = first
        .connect(&format!("token={}&room=attic", first.token))
        .await
        .unwrap();
    first.kill_everything().await;
    drop(vanished);
    let (records, counter) = connection_records(&dynamodb, "vanish").await;
    assert_eq!((records.len(), counter), (1, 1), "no $disconnect ran: {records:?}");
    // Make the record older than the grace that a connect still in flight gets.
    let (vanished_id, connected_at) = records[0].clone();
    dynamodb
        .update_item()
        .table_name("vanish-connections")
        .key(schema::CONNECTION_ID, AttributeValue::S(vanished_id.clone()))
        .update_expression("SET #at = :at")
        .expression_attribute_names("#at", schema::CONNECTED_AT)
        .expression_attribute_values(":at", AttributeValue::N((connected_at - 60_000).to_string()))
        .send()
        .await
        .unwrap();

    let mut second = start_dev_with(&args).await;
    let mut bob = second
        .connect(&format!("token={}&room=attic", second.token("bob").await))
        .await
        .unwrap();
    send(&mut bob, json!({"action": "sendmessage", "message": "anyone here?"})).await;
    let echoed = event(&mut bob).await;
    assert_eq!(echoed["text"], "anyone here?", "{echoed}");
    // The delivery to bob and the one that finds the vanished connection gone run together.
    let only_bob = eventually(|| async {
        let (records, counter) = connection_records(&dynamodb, "vanish").await;
        records.len() == 1 && records[0].0 != vanished_id && counter == 1
    });
    assert!(only_bob.await, "{:?}", connection_records(&dynamodb, "vanish").await);

    // A client that drops its TCP connection without a close frame is disconnected at once.
    let carol = second
        .connect(&format!("token={}&room=attic", second.token("carol").await))
        .await
        .unwrap();
    assert_eq!(connection_records(&dynamodb, "vanish").await.1, 2);
    drop(carol);
    let disconnected = eventually(|| async { connection_records(&dynamodb, "vanish").await.1 == 1 });
    assert!(disconnected.await, "carol's $disconnect did not run");

    // Ctrl-C closes the open connections as going away, and `$disconnect` runs for them.
    assert_eq!(second.interrupt().await, Some(0));
    assert_eq!(closed_with(&mut bob).await, 1001);
    assert_eq!(connection_records(&dynamodb, "vanish").await, (vec![], 0));
}

/// A file removed when dropped.
struct TemporaryFile(std::path::PathBuf);

impl Drop for TemporaryFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Editing a handler rebuilds the functions' binary and restarts every
/// function, which serves again afterwards. The test adds a source file to
/// handlers/ that no module uses: the watcher sees a change, and cargo has
/// nothing to relink under the other tests running the same binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_handler_is_rebuilt_and_restarted() {
    let mut dev = spawn_dev(&["--stack", "rebuild"]).await;
    let mut alice = dev.connect(&format!("token={}", dev.token)).await.unwrap();
    send(&mut alice, json!({"action": "join", "room": "before"})).await;
    assert_eq!(event(&mut alice).await, json!({"type": "joined", "room": "before"}));

    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../handlers/chat-functions/src/watch_test.rs");
    std::fs::write(&source, "// Written by chatctl's dev test; safe to delete.\n").unwrap();
    let _source = TemporaryFile(source);
    let restarted = tokio::time::timeout(Duration::from_secs(600), async {
        loop {
            let line = dev.stderr.recv().await.expect("chatctl dev exited");
            if line.contains("rebuilt and restarted") || line.contains("build failed") {
                return line;
            }
        }
    })
    .await
    .expect("no rebuild within 10 minutes");
    assert!(
        restarted.contains("rebuilt and restarted the 7 functions in"),
        "{restarted}"
    );

    send(&mut alice, json!({"action": "join", "room": "after"})).await;
    assert_eq!(event(&mut alice).await, json!({"type": "joined", "room": "after"}));
    send(&mut alice, json!({"action": "sendmessage", "message": "still here"})).await;
    assert_eq!(event(&mut alice).await["room"], "after");
    assert_eq!(dev.interrupt().await, Some(0));
}

/// `chatctl dev` provisions with the same code as `up`, so it meets real
/// AWS's behaviours the same way: through the AWS behaviour layer, the stack
/// comes up and the chat works end to end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_provisions_through_the_aws_behaviour_layer() {
    use chat_testkit::aws_behaviour::{Behaviours, Timings};
    let moto = chat_testkit::Moto::start();
    let proxy =
        chat_testkit::AwsProxy::start_with_behaviours(moto.endpoint(), Behaviours::all(Timings::compressed())).await;
    let endpoint = proxy.endpoint();
    let dev = start_dev_with(&["--endpoint-url", &endpoint]).await;
    assert!(
        proxy.calls().iter().any(|c| c.faulted),
        "the layer answered some calls as AWS does"
    );
    let mut alice = dev.connect(&format!("token={}&room=lobby", dev.token)).await.unwrap();
    send(
        &mut alice,
        json!({"action": "sendmessage", "message": "through the layer"}),
    )
    .await;
    assert_eq!(event(&mut alice).await["text"], "through the layer");
}

/// A burst of connects through DynamoDB's transaction conflicts (aws-facts.md
/// §10), served by the real handler binaries, which dev scales up: every
/// handshake succeeds, the count is exact, and it is back to 0 once all close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_connects_through_transaction_conflicts_is_admitted_and_uncounted() {
    use chat_testkit::aws_behaviour::{Behaviours, Timings};
    let moto = chat_testkit::Moto::start();
    let behaviours = Behaviours {
        transaction_conflicts: true,
        timings: Timings::real_scale(),
        ..Behaviours::none()
    };
    let proxy = chat_testkit::AwsProxy::start_with_behaviours(moto.endpoint(), behaviours).await;
    let endpoint = proxy.endpoint();
    // One user's 100 connections: the stack's counter is what is tested here,
    // not the per-user limit.
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(config.path(), "[limits]\nconnections_per_user = 0\n").unwrap();
    let path = config.path().to_string_lossy().to_string();
    let dev = start_dev_with(&["--endpoint-url", &endpoint, "--stack", "burst", "--config", &path]).await;
    let query = format!("token={}", dev.token);
    let sockets = futures::future::join_all((0..100).map(|_| dev.connect(&query))).await;
    let sockets: Vec<Socket> = sockets
        .into_iter()
        .map(|socket| socket.expect("every handshake succeeds"))
        .collect();
    // How many DynamoDB cancelled depends on timing (chat-core's tests
    // pin the conflict path itself); every handshake succeeds regardless.
    let cancelled = proxy.layer_answers("TransactionCanceledException");
    eprintln!("{cancelled} transactions cancelled");
    let dynamodb = aws_sdk_dynamodb::Client::new(&chat_testkit::moto::sdk_config_for(&endpoint).await);
    let (records, counted) = connection_records(&dynamodb, "burst").await;
    assert_eq!((records.len(), counted), (100, 100));
    for mut socket in sockets {
        let _ = socket.close(None).await;
    }
    assert!(
        eventually(|| async { connection_records(&dynamodb, "burst").await == (vec![], 0) }).await,
        "every $disconnect ran and was uncounted: {:?}",
        connection_records(&dynamodb, "burst").await.1
    );
}

/// `chatctl smoke` against `chatctl dev`: every step passes and is timed,
/// in text and JSON. Where nothing listens it fails at once and says so;
/// against a stopped `dev` it fails with exit 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke_passes_against_dev_and_fails_clearly_when_nothing_answers() {
    let mut dev = start_dev().await;
    let run = dev.chatctl(&["smoke", "--url", &dev.url]).await;
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    for step in ["connect", "message echoed", "history", "close", "Passed in"] {
        assert!(stdout.contains(step), "{step}: {stdout}");
    }

    let run = dev.chatctl(&["smoke", "--url", &dev.url, "--output", "json"]).await;
    assert!(run.status.success());
    let report: Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(report["passed"], true);
    assert_eq!(report["attempts"], 1);
    assert_eq!(report["user"], "chatctl-smoke");
    let steps: Vec<&str> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["connect", "message echoed", "history", "close"]);
    assert!(report["room"].as_str().unwrap().starts_with("smoke-"));

    // A port nobody listens on: no retries, a message that says what to check.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let nowhere = format!("ws://127.0.0.1:{port}/dev");
    let started = std::time::Instant::now();
    let run = dev.chatctl(&["smoke", "--url", &nowhere]).await;
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("smoke test failed at connect: cannot reach {nowhere}")),
        "{stderr}"
    );
    assert!(stderr.contains("is the stack running"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(10), "failed at once");

    let run = dev.chatctl(&["smoke", "--url", "http://127.0.0.1/dev"]).await;
    assert_eq!(run.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&run.stderr).contains("a WebSocket URL starts with ws:// or wss://"));

    // `dev` stopped: the same command fails, exit 1, with an error.
    let url = dev.url.clone();
    assert_eq!(dev.interrupt().await, Some(0));
    let run = dev.chatctl(&["smoke", "--url", &url, "--wait", "5s"]).await;
    assert_eq!(run.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&run.stderr).contains("error:"));
}

/// `chatctl connections` against `chatctl dev`: the open connections by
/// room and by user, a system message to a room and to one connection,
/// and a kick that closes a user's connection and runs its `$disconnect`.
/// Unknown targets and bad input fail clearly, with exit 1 or 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_listed_messaged_and_kicked() {
    let dev = start_dev().await;
    let bob_token = dev.token("bob").await;
    let mut alice = dev.connect(&format!("token={}&room=lobby", dev.token)).await.unwrap();
    let mut bob = dev.connect(&format!("token={bob_token}&room=lobby")).await.unwrap();
    let mut bob_elsewhere = dev.connect(&format!("token={bob_token}&room=general")).await.unwrap();

    let run = dev.chatctl(&["connections", "list", "--output", "json"]).await;
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let all: Vec<Value> = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(all.len(), 3, "{all:?}");
    let list = |args: &'static [&'static str]| {
        let dev = &dev;
        async move {
            let mut full = vec!["connections", "list", "--output", "json"];
            full.extend_from_slice(args);
            let run = dev.chatctl(&full).await;
            assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
            serde_json::from_slice::<Vec<Value>>(&run.stdout).unwrap()
        }
    };
    let lobby = list(&["--room", "lobby"]).await;
    let mut users: Vec<&str> = lobby.iter().map(|r| r["user"].as_str().unwrap()).collect();
    users.sort();
    assert_eq!(users, ["alice", "bob"]);
    let bobs = list(&["--user", "bob"]).await;
    let mut rooms: Vec<&str> = bobs.iter().map(|r| r["room"].as_str().unwrap()).collect();
    rooms.sort();
    assert_eq!(rooms, ["general", "lobby"]);
    assert!(bobs.iter().all(|r| r["connected_at"].as_str().unwrap().ends_with('Z')));
    let text = dev.chatctl(&["connections", "list", "--room", "lobby"]).await;
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("CONNECTION") && text.contains("alice") && text.contains("lobby"),
        "{text}"
    );

    // A system message to the lobby reaches both of its connections, in
    // the protocol's message event, and nobody else.
    let run = dev
        .chatctl(&[
            "connections",
            "send",
            "--room",
            "lobby",
            "maintenance at five",
            "--url",
            &dev.callback,
        ])
        .await;
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(String::from_utf8_lossy(&run.stdout).contains("sent to 2 of 2 connections"));
    for socket in [&mut alice, &mut bob] {
        let message = event(socket).await;
        assert_eq!(message["type"], "message");
        assert_eq!(message["from"], "system");
        assert_eq!(message["room"], "lobby");
        assert_eq!(message["text"], "maintenance at five");
    }
    nothing_arrives(&mut bob_elsewhere).await;

    // To one connection, by id.
    let alice_id = lobby.iter().find(|r| r["user"] == "alice").unwrap()["connection_id"]
        .as_str()
        .unwrap()
        .to_string();
    let run = dev
        .chatctl(&["connections", "send", &alice_id, "just you", "--url", &dev.callback])
        .await;
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert_eq!(event(&mut alice).await["text"], "just you");
    nothing_arrives(&mut bob).await;

    // Kick: bob's connections close, their $disconnect removes them.
    let run = dev
        .chatctl(&["connections", "kick", "--user", "bob", "--url", &dev.callback])
        .await;
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(String::from_utf8_lossy(&run.stdout).contains("closed 2 of 2 connections"));
    closed_with(&mut bob).await;
    closed_with(&mut bob_elsewhere).await;
    assert!(
        eventually(|| async { list(&["--user", "bob"]).await.is_empty() }).await,
        "bob's records are gone once $disconnect ran"
    );
    assert_eq!(list(&[]).await.len(), 1, "alice stays");

    // Unknown targets: exit 1, a clear message; bad input: the same before any call.
    let url = dev.callback.as_str();
    for (args, expected) in [
        (
            vec!["connections", "kick", "nosuchid", "--url", url],
            "no open connection for connection nosuchid",
        ),
        (
            vec!["connections", "send", "--user", "nobody", "hi", "--url", url],
            "no open connection for user nobody",
        ),
        (vec!["connections", "list", "--room", "no spaces"], "invalid --room"),
        (
            vec!["connections", "send", "hi", "--url", url],
            "say who gets the message",
        ),
    ] {
        let run = dev.chatctl(&args).await;
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    let run = dev
        .chatctl(&["connections", "send", "--room", "lobby", "--user", "bob", "hi"])
        .await;
    assert_eq!(
        run.status.code(),
        Some(2),
        "--room and --user together is a usage error"
    );

    // A ban closes the user's connections and refuses their handshakes (403) until lifted.
    let run = dev
        .chatctl(&[
            "connections",
            "ban",
            "--user",
            "alice",
            "--for",
            "1h",
            "--reason",
            "spam",
            "--url",
            url,
        ])
        .await;
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{stdout}{}", String::from_utf8_lossy(&run.stderr));
    assert!(
        stdout.contains("Banned alice until ") && stdout.contains("closed 1 of 1 connections"),
        "{stdout}"
    );
    closed_with(&mut alice).await;
    assert_eq!(refused_status(dev.connect(&format!("token={}", dev.token)).await), 403);
    let bans = dev.chatctl(&["connections", "bans", "--output", "json"]).await;
    let bans: Value = serde_json::from_slice(&bans.stdout).unwrap();
    assert_eq!(bans[0]["user"], "alice");
    assert_eq!(bans[0]["reason"], "spam");
    for (args, expected) in [
        (
            vec!["connections", "ban", "--user", "bob", "--for", "soon"],
            "invalid --for",
        ),
        (
            vec!["connections", "ban", "--user", "bob", "--for", "0s"],
            "invalid --for",
        ),
        (vec!["connections", "ban", "--user", "no spaces"], "invalid --user"),
    ] {
        let run = dev.chatctl(&args).await;
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    let unban = dev.chatctl(&["connections", "unban", "--user", "alice"]).await;
    assert!(String::from_utf8_lossy(&unban.stdout).contains("Lifted the ban on alice."));
    assert!(dev.connect(&format!("token={}", dev.token)).await.is_ok(), "back in");
    let none = dev.chatctl(&["connections", "bans"]).await;
    assert!(String::from_utf8_lossy(&none.stdout).contains("No ban in force."));
}

/// The stage's throttling from chatctl.toml holds in `chatctl dev` as on
/// AWS: a handshake over `$connect`'s limit is refused with 429, a message
/// over its route's limit gets API Gateway's "Too Many Requests" frame and
/// the connection stays open; other routes keep their own limits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_throttles_connects_and_messages_as_the_stage_says() {
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        config.path(),
        "[stage_settings.routes.\"$connect\"]\nthrottling_burst = 2\nthrottling_rate = 0.01\n\n\
         [stage_settings.routes.sendmessage]\nthrottling_burst = 1\nthrottling_rate = 0.01\n",
    )
    .unwrap();
    let path = config.path().to_string_lossy().to_string();
    let dev = start_dev_with(&["--config", &path]).await;
    let mut alice = dev.connect(&format!("token={}&room=lobby", dev.token)).await.unwrap();
    let _second = dev.connect(&format!("token={}&room=lobby", dev.token)).await.unwrap();
    assert_eq!(
        refused_with(dev.connect(&format!("token={}&room=lobby", dev.token)).await),
        429,
        "the third connect is over the burst of 2"
    );

    send(&mut alice, json!({"action": "sendmessage", "message": "one"})).await;
    assert_eq!(event(&mut alice).await["text"], "one");
    send(&mut alice, json!({"action": "sendmessage", "message": "two"})).await;
    let throttled = event(&mut alice).await;
    assert_eq!(throttled["message"], "Too Many Requests", "{throttled}");
    assert!(throttled["connectionId"].is_string() && throttled["requestId"].is_string());

    // Still open, and another route is not throttled by sendmessage's limit.
    send(&mut alice, json!({"action": "getmessages"})).await;
    let history = event(&mut alice).await;
    assert_eq!(history["type"], "history");
    let texts: Vec<&str> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["text"].as_str())
        .collect();
    assert_eq!(texts, ["one"], "the throttled message never reached the function");
}

/// `top --once --output json` until `done` holds, for at most 20 s (the
/// local gateway publishes its metrics every second).
async fn top_until(dev: &Dev, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let run = dev
            .chatctl(&["top", "--once", "--output", "json", "--since", "15m"])
            .await;
        assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
        let snapshot: Value = serde_json::from_slice(&run.stdout).unwrap();
        if done(&snapshot) {
            return snapshot;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "top never showed the traffic: {snapshot:#}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn top_shows_the_traffic_errors_and_latency_a_real_client_makes() {
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        config.path(),
        "[stage_settings]\ndetailed_metrics = true\n\n\
         [stage_settings.routes.sendmessage]\nthrottling_burst = 1\nthrottling_rate = 0.01\n",
    )
    .unwrap();
    let path = config.path().to_string_lossy().to_string();
    let dev = start_dev_with(&["--config", &path]).await;

    // A stack without traffic yet: every metric is 0, none is an error.
    let quiet = top_until(&dev, |_| true).await;
    assert_eq!(quiet["open_connections"], 0);
    assert_eq!(quiet["total"]["messages"]["total"], 0.0);
    assert_eq!(quiet["total"]["latency_p99_ms"], Value::Null);
    assert_eq!(quiet["detailed_metrics"], true);
    assert_eq!(quiet["window"]["period_seconds"], 60);
    assert_eq!(quiet["total"]["messages"]["points"].as_array().unwrap().len(), 15);

    let mut alice = dev.connect(&format!("token={}&room=lobby", dev.token)).await.unwrap();
    let _bob = dev.connect(&format!("token={}&room=lobby", dev.token)).await.unwrap();
    send(&mut alice, json!({"action": "sendmessage", "message": "one"})).await;
    assert_eq!(event(&mut alice).await["text"], "one");
    send(&mut alice, json!({"action": "sendmessage", "message": "two"})).await;
    assert_eq!(event(&mut alice).await["message"], "Too Many Requests");

    let route = |snapshot: &Value, key: &str| {
        snapshot["routes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["route"] == key)
            .cloned()
            .unwrap_or_default()
    };
    let busy = top_until(&dev, |s| {
        s["total"]["connects"]["total"] == 2.0 && route(s, "sendmessage")["messages"]["total"] == 2.0
    })
    .await;
    assert_eq!(busy["open_connections"], 2, "{busy:#}");
    let sendmessage = route(&busy, "sendmessage");
    assert_eq!(
        sendmessage["client_errors"]["total"], 1.0,
        "the throttled message: {sendmessage:#}"
    );
    assert_eq!(sendmessage["execution_errors"]["total"], 0.0);
    assert!(sendmessage["latency_p99_ms"].as_f64().unwrap() > 0.0, "{sendmessage:#}");
    assert_eq!(route(&busy, "$connect")["connects"]["total"], 2.0);
    // Two messages in, and the echo to each of the room's two connections out.
    assert!(busy["total"]["messages"]["total"].as_f64().unwrap() >= 4.0, "{busy:#}");
    let function = busy["functions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["function"].as_str().unwrap().ends_with("sendmessage"))
        .unwrap();
    assert_eq!(function["invocations"]["total"], 1.0, "{function:#}");
    assert_eq!(function["errors"]["total"], 0.0);
    assert!(function["duration_p99_ms"].as_f64().unwrap() > 0.0);

    // The same snapshot as text, for a pipe.
    let run = dev.chatctl(&["top", "--once", "--since", "15m"]).await;
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let text = String::from_utf8_lossy(&run.stdout);
    for expected in ["open connections 2", "sendmessage", "client err", "invocations", "▁"] {
        assert!(text.contains(expected), "{expected:?} missing from:\n{text}");
    }

    // A stage without access logs has none to show, and says how to have them.
    let run = dev.chatctl(&["logs", "access"]).await;
    assert_eq!(run.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&run.stderr).contains("set access_logs = true in [stage_settings]"));

    // Bad input says what to write instead.
    let run = dev.chatctl(&["top", "--once", "--since", "soon"]).await;
    assert_eq!(run.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&run.stderr).contains("invalid --since \"soon\""));
}

/// `access_logs = true`: the local gateway writes API Gateway's access log
/// line for each request to the stage's log group, and `chatctl logs
/// access` shows them.
#[tokio::test]
async fn dev_writes_an_access_log_line_per_request_that_logs_shows() {
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(config.path(), "[stage_settings]\naccess_logs = true\n").unwrap();
    let path = config.path().to_string_lossy().to_string();
    let dev = start_dev_with(&["--config", &path]).await;
    let mut alice = dev.connect(&format!("token={}&room=lobby", dev.token)).await.unwrap();
    send(&mut alice, json!({"action": "sendmessage", "message": "logged"})).await;
    assert_eq!(event(&mut alice).await["text"], "logged");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let lines: Vec<Value> = loop {
        let run = dev.chatctl(&["logs", "access", "--output", "json"]).await;
        assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
        let lines: Vec<Value> = String::from_utf8_lossy(&run.stdout)
            .lines()
            .map(|line| serde_json::from_str::<Value>(line).unwrap())
            .collect();
        let entries: Vec<Value> = lines
            .iter()
            .map(|line| serde_json::from_str(line["message"].as_str().unwrap()).unwrap())
            .collect();
        if entries.iter().any(|e| e["routeKey"] == "sendmessage") {
            assert!(lines.iter().all(|l| l["function"] == "access"), "{lines:?}");
            break entries;
        }
        assert!(tokio::time::Instant::now() < deadline, "no access log line: {lines:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let connect = lines.iter().find(|e| e["eventType"] == "CONNECT").unwrap();
    assert_eq!(connect["routeKey"], "$connect");
    assert_eq!(connect["status"], "200");
    let message = lines.iter().find(|e| e["routeKey"] == "sendmessage").unwrap();
    assert_eq!(message["eventType"], "MESSAGE");
    assert_eq!(message["status"], "200");
    assert_eq!(message["error"], "-");
    assert_eq!(message["connectionId"], connect["connectionId"]);
    assert!(message["requestId"].as_str().is_some_and(|id| !id.is_empty()));
    assert!(
        message["integrationLatency"].as_str().unwrap().parse::<u64>().is_ok(),
        "{message}"
    );
}

/// Ctrl-C: the `$disconnect` of the connections it closes is logged in the
/// access log before `dev` exits, so a lasting emulator (--endpoint-url)
/// keeps the whole story.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_dev_sends_the_last_access_log_lines_first() {
    let moto = chat_testkit::Moto::start();
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(config.path(), "[stage_settings]\naccess_logs = true\n").unwrap();
    let path = config.path().to_string_lossy().to_string();
    let mut dev = start_dev_with(&["--endpoint-url", moto.endpoint(), "--config", &path]).await;
    let mut alice = dev.connect(&format!("token={}&room=lobby", dev.token)).await.unwrap();
    send(&mut alice, json!({"action": "getmessages"})).await;
    assert_eq!(event(&mut alice).await["type"], "history");
    assert_eq!(dev.interrupt().await, Some(0));

    let logs = aws_sdk_cloudwatchlogs::Client::new(&moto.sdk_config().await);
    let events = logs
        .filter_log_events()
        .log_group_name("/aws/apigateway/chat/dev")
        .send()
        .await
        .unwrap();
    let kinds: Vec<String> = events
        .events()
        .iter()
        .map(|e| serde_json::from_str::<Value>(e.message().unwrap()).unwrap()["eventType"].to_string())
        .collect();
    assert!(kinds.iter().any(|k| k == "\"DISCONNECT\""), "{kinds:?}");

    // The stage no longer names the stopped gateway.
    let apigateway = aws_sdk_apigatewayv2::Client::new(&moto.sdk_config().await);
    let apis = apigateway.get_apis().send().await.unwrap();
    let api = apis.items().iter().find(|a| a.name() == Some("chat")).unwrap();
    let stage = apigateway
        .get_stage()
        .api_id(api.api_id().unwrap())
        .stage_name("dev")
        .send()
        .await
        .unwrap();
    assert!(
        !stage.tags().is_some_and(|t| t.contains_key("chatctl:local-url")),
        "{:?}",
        stage.tags()
    );
}

/// Issue 21: `chatctl dev` records where its gateway listens in the
/// emulator (a tag on its stage), so `smoke` and `connections send`/`kick`
/// given only the printed AWS endpoint reach it, not the execute-api
/// hostname only AWS serves; and `status` against that emulator does not
/// take the tag for drift.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke_and_connections_find_dev_through_the_aws_endpoint_alone() {
    let dev = start_dev().await;
    let run = dev.chatctl(&["smoke"]).await;
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains(&format!("Smoke test of {}", dev.url)), "{stdout}");
    assert!(stdout.contains("Passed in"), "{stdout}");

    let mut alice = dev.connect(&format!("token={}&room=ops", dev.token)).await.unwrap();
    let run = dev
        .chatctl(&["connections", "send", "--room", "ops", "back in 5 minutes"])
        .await;
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(String::from_utf8_lossy(&run.stdout).contains("sent to 1 of 1 connections"));
    let message = event(&mut alice).await;
    assert_eq!(message["from"], "system");
    assert_eq!(message["text"], "back in 5 minutes");

    let run = dev.chatctl(&["connections", "kick", "--user", "alice"]).await;
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    closed_with(&mut alice).await;

    let run = dev.chatctl(&["status"]).await;
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stage = stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some("stage"))
        .unwrap_or_default();
    assert!(stage.contains("present"), "the tag is not drift: {stdout}");
    assert!(!stdout.contains("chatctl:local-url"), "{stdout}");
}

/// `chatctl dev` converges as `up` does: a step that destroys data (here a
/// table of the stack's whose key schema changed, replaced) is asked first,
/// and without a terminal refused unless --yes; the table and its items stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_asks_before_destroying_data_as_up_does() {
    use aws_sdk_dynamodb::types::{AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, Tag};

    let moto = chat_testkit::Moto::start();
    let dynamodb = aws_sdk_dynamodb::Client::new(&moto.sdk_config().await);
    dynamodb
        .create_table()
        .table_name("guard-messages")
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("id")
                .attribute_type("S".into())
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("id")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .tags(Tag::builder().key("chatctl:stack").value("guard").build().unwrap())
        .send()
        .await
        .unwrap();
    dynamodb
        .put_item()
        .table_name("guard-messages")
        .item("id", AttributeValue::S("kept".into()))
        .send()
        .await
        .unwrap();

    let workdir = tempfile::tempdir().unwrap();
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_chatctl"))
        .args(["dev", "--port", "0", "--no-build", "--no-watch", "--stack", "guard"])
        .args(["--endpoint-url", moto.endpoint()])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("HOME", workdir.path())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let run = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("chatctl dev stops at the question")
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("These changes delete resources and their data:")
            && stderr.contains("-/+ table guard-messages (replace: key schema is id/-")
            && stderr.contains("pass --yes to proceed"),
        "{stderr}"
    );
    let item = dynamodb
        .get_item()
        .table_name("guard-messages")
        .key("id", AttributeValue::S("kept".into()))
        .send()
        .await
        .unwrap();
    assert!(item.item.is_some(), "the table and its items stay");
}

/// The HTTP status of a refused handshake.
fn refused_status(result: Result<Socket, tungstenite::Error>) -> u16 {
    match result {
        Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("not an HTTP refusal: {other}"),
        Ok(_) => panic!("the handshake succeeded"),
    }
}

/// `--inactive-functions`: every function starts Inactive, as after weeks
/// idle on AWS (aws-facts.md §11): the first handshake fails at the
/// authorizer (500), the next at `$connect` (502), as API Gateway answers
/// them; the one after passes. `chatctl smoke` against such a stack tries
/// again and passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inactive_functions_fail_their_first_invocation_and_smoke_retries_through_them() {
    let dev = start_dev_with(&["--stack", "idle", "--inactive-functions"]).await;
    let query = format!("token={}", dev.token);
    assert_eq!(
        refused_status(dev.connect(&query).await),
        500,
        "the authorizer was Inactive"
    );
    assert_eq!(refused_status(dev.connect(&query).await), 502, "$connect was Inactive");
    let mut alice = dev.connect(&query).await.expect("both reactivated");
    send(&mut alice, json!({"action": "sendmessage", "message": "lost"})).await;
    assert_eq!(
        event(&mut alice).await["message"],
        "Internal server error",
        "sendmessage was Inactive"
    );
    send(&mut alice, json!({"action": "sendmessage", "message": "kept"})).await;
    assert_eq!(event(&mut alice).await["text"], "kept");
    drop(alice);

    let dev = start_dev_with(&["--stack", "idle2", "--inactive-functions"]).await;
    let run = dev.chatctl(&["smoke", "--stack", "idle2", "--url", &dev.url]).await;
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("attempt 1 failed at connect: HTTP 500"), "{stdout}");
    assert!(stdout.contains("attempt 2 failed at connect: HTTP 502"), "{stdout}");
    assert!(stdout.contains("Passed in"), "{stdout}");
}

/// `--permission-lag`: for a while once ready, handshakes get 500 as while
/// API Gateway's invoke permission propagates (aws-facts.md §11); then the
/// chat works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permission_lag_refuses_handshakes_for_a_while() {
    let dev = start_dev_with(&["--stack", "fresh", "--permission-lag", "3s"]).await;
    let ready = std::time::Instant::now();
    let query = format!("token={}", dev.token);
    assert_eq!(refused_status(dev.connect(&query).await), 500);
    let mut alice = loop {
        match dev.connect(&query).await {
            Ok(socket) => break socket,
            Err(error) => {
                assert!(ready.elapsed() < Duration::from_secs(10), "still refused: {error}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    assert!(ready.elapsed() >= Duration::from_secs(2), "refused for the window");
    send(&mut alice, json!({"action": "sendmessage", "message": "hi"})).await;
    assert_eq!(event(&mut alice).await["text"], "hi");
}

/// `auth = "oidc"` against a real OIDC issuer on loopback (discovery and
/// JWKS over HTTP, keys the test makes): its tokens connect as the user
/// they name, bad ones get 401, a key rotation is picked up by the running
/// authorizer, `smoke --token` uses such a token and `token` says where
/// tokens come from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_tokens_of_the_apps_issuer_connect_and_bad_ones_get_401() {
    use chat_testkit::oidc::{AUDIENCE, OidcIssuer};
    use jsonwebtoken::Algorithm;
    let issuer = OidcIssuer::start().await;
    let impostor = OidcIssuer::start().await;
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        config.path(),
        format!(
            "auth = \"oidc\"\n[oidc]\nissuer = \"{}\"\naudience = \"{AUDIENCE}\"\nuser_claim = \"email_name\"\n",
            issuer.url()
        ),
    )
    .unwrap();
    let config_path = config.path().to_str().unwrap();
    let dev = start_dev_with(&["--stack", "oidc", "--config", config_path]).await;
    let token_for = |user: &str, alg| {
        let mut claims = issuer.claims("sub-1234");
        claims["email_name"] = json!(user);
        issuer.sign(&claims, alg)
    };

    let mut alice = dev
        .connect(&format!("token={}&room=lobby", token_for("alice", Algorithm::RS256)))
        .await
        .expect("a token of the issuer connects");
    send(&mut alice, json!({"action": "sendmessage", "message": "hi"})).await;
    assert_eq!(event(&mut alice).await["from"], "alice", "the user is the user_claim's");
    let bob = dev
        .connect(&format!("token={}", token_for("bob", Algorithm::ES256)))
        .await;
    assert!(bob.is_ok(), "ES256 too");

    let mut expired = issuer.claims("x");
    expired["email_name"] = json!("carol");
    expired["exp"] = json!(expired["iat"].as_u64().unwrap() - 300);
    let mut other_audience = issuer.claims("x");
    other_audience["email_name"] = json!("carol");
    other_audience["aud"] = json!("another-app");
    let mut forged = issuer.claims("x");
    forged["email_name"] = json!("carol");
    for (case, token) in [
        ("forged", impostor.sign(&forged, Algorithm::RS256)),
        ("expired", issuer.sign(&expired, Algorithm::RS256)),
        ("another audience", issuer.sign(&other_audience, Algorithm::RS256)),
        ("no user claim", issuer.token("carol")),
        ("not a JWT", "abc".to_string()),
    ] {
        assert_eq!(
            refused_status(dev.connect(&format!("token={token}")).await),
            401,
            "{case}"
        );
    }

    // The IdP rotates its keys: the running authorizer fetches the new ones.
    issuer.rotate_keys();
    let rotated = token_for("dave", Algorithm::RS256);
    assert!(
        dev.connect(&format!("token={rotated}")).await.is_ok(),
        "a token of the new key connects"
    );

    let smoke = dev
        .chatctl(&[
            "smoke",
            "--stack",
            "oidc",
            "--config",
            config_path,
            "--url",
            &dev.url,
            "--token",
            &rotated,
        ])
        .await;
    let stdout = String::from_utf8_lossy(&smoke.stdout);
    assert!(
        smoke.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&smoke.stderr)
    );
    assert!(stdout.contains("user dave"), "{stdout}");
    let refused = dev.chatctl(&["smoke", "--stack", "oidc", "--url", &dev.url]).await;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        stderr.contains("its tokens come from your identity provider"),
        "{stderr}"
    );
    let token = dev.chatctl(&["token", "--stack", "oidc", "--user", "erin"]).await;
    let stderr = String::from_utf8_lossy(&token.stderr);
    assert_eq!(token.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(issuer.url()), "{stderr}");
}

/// `auth = "token"` in dev: the secret lives in the emulator's Secrets
/// Manager. An app server mints tokens with the README's example
/// (examples/app-server/mint_token.py, its own read of the secret); after
/// `chatctl token rotate`, a token of the version before still connects,
/// and a token of the new version connects too, without restarting anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_from_the_app_servers_example_survive_a_rotation() {
    let dev = start_dev().await;
    let app_server = |user: &'static str| {
        let endpoint = dev.endpoint.clone();
        async move {
            let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/app-server/mint_token.py");
            let output = tokio::process::Command::new(chat_testkit::moto::python())
                .args([script, "--stack", "chat", "--user", user, "--region", "us-east-1"])
                // The server's own credentials; here, the emulator's.
                .env("AWS_ENDPOINT_URL", &endpoint)
                .env("AWS_ACCESS_KEY_ID", "app-server")
                .env("AWS_SECRET_ACCESS_KEY", "app-server")
                .output()
                .await
                .unwrap();
            assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
            String::from_utf8(output.stdout).unwrap().trim().to_string()
        }
    };
    let before = app_server("alice").await;
    let mut alice = dev.connect(&format!("token={before}")).await.unwrap();
    send(&mut alice, json!({"action": "sendmessage", "message": "before"})).await;
    assert_eq!(event(&mut alice).await["text"], "before");

    let rotated = dev.chatctl(&["token", "rotate"]).await;
    assert!(rotated.status.success(), "{}", String::from_utf8_lossy(&rotated.stderr));
    let after = app_server("bob").await;
    assert_ne!(
        chat_core::token::key_id(&after).unwrap(),
        chat_core::token::key_id(&before).unwrap()
    );
    // The authorizers read the secret again for a version they do not know,
    // at most every few seconds (chat_core::token_secret::REREAD_AT_MOST_EVERY).
    let deadline = std::time::Instant::now() + chat_core::token_secret::REREAD_AT_MOST_EVERY + Duration::from_secs(5);
    let mut bob = loop {
        match dev.connect(&format!("token={after}")).await {
            Ok(socket) => break socket,
            Err(tungstenite::Error::Http(response))
                if response.status() == 401 && std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(other) => panic!("a token of the new version is refused: {other}"),
        }
    };
    send(&mut bob, json!({"action": "sendmessage", "message": "after"})).await;
    assert_eq!(event(&mut bob).await["text"], "after");
    let mut alice_again = dev.connect(&format!("token={before}")).await.unwrap();
    send(
        &mut alice_again,
        json!({"action": "sendmessage", "message": "still in"}),
    )
    .await;
    assert_eq!(event(&mut alice_again).await["text"], "still in");
    // A forged token naming the new version is still refused.
    let kid = chat_core::token::key_id(&after).unwrap();
    let forged = chat_core::token::mint_signed_by(
        kid.as_deref(),
        b"forged-forged-forged-forged-forged-forged",
        "mallory",
        Duration::from_secs(60),
        std::time::SystemTime::now(),
    )
    .unwrap();
    assert_eq!(refused_with(dev.connect(&format!("token={forged}")).await), 401);
}

/// `[limits] connections_per_user` in dev: the user's next handshake past it
/// gets 429 (the real `$connect` function refuses it), another user's does
/// not, and `connections list` shows connections only, not the slots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_past_connections_per_user_gets_429() {
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(config.path(), "[limits]\nconnections_per_user = 2\n").unwrap();
    let path = config.path().to_string_lossy().to_string();
    let dev = start_dev_with(&["--config", &path]).await;
    let query = format!("token={}", dev.token);
    let _first = dev.connect(&query).await.unwrap();
    let _second = dev.connect(&query).await.unwrap();
    assert_eq!(refused_with(dev.connect(&query).await), 429);
    let bob = dev.token("bob").await;
    let _bob = dev.connect(&format!("token={bob}")).await.unwrap();
    let listed = dev.chatctl(&["connections", "list", "--output", "json"]).await;
    assert!(listed.status.success(), "{}", String::from_utf8_lossy(&listed.stderr));
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed.as_array().map(Vec::len), Some(3), "{listed}");
}

/// The keep-alive: `{"action":"ping"}` is answered `{"type":"pong"}` by the
/// gateway from the MOCK integration `up` provisioned, as API Gateway would,
/// and no function runs for it (nothing in the functions' log).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_is_answered_pong_without_a_function() {
    let dev = start_dev().await;
    let mut alice = dev.connect(&format!("token={}", dev.token)).await.unwrap();
    for _ in 0..3 {
        send(&mut alice, json!({"action": "ping"})).await;
        assert_eq!(event(&mut alice).await, json!({"type": "pong"}));
    }
    // A message still reaches its function; the pongs came from no function.
    send(&mut alice, json!({"action": "sendmessage", "message": "after pings"})).await;
    assert_eq!(event(&mut alice).await["text"], "after pings");
    let routes = dev.chatctl(&["routes", "list", "--output", "json"]).await;
    let routes: Value = serde_json::from_slice(&routes.stdout).unwrap();
    let ping = routes
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["route_key"] == "ping")
        .unwrap();
    assert_eq!(ping["integration_type"], "MOCK");
    assert_eq!(ping["function"], Value::Null);
}

/// `[alarms]` in dev: the rules `up` puts in CloudWatch are evaluated over
/// the metrics dev records. Two refused tokens (the authorizer's
/// `Unauthorized` is a function error, on AWS too) put function-errors in
/// ALARM: dev prints it and sets the emulator's alarm, so that `status`
/// exits 3 and `top` names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_rule_fires_in_dev_and_status_shows_it() {
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(config.path(), "[alarms]\nfunction_errors = 2\nperiod_minutes = 1\n").unwrap();
    let path = config.path().to_string_lossy().to_string();
    let mut dev = start_dev_with(&["--config", &path]).await;
    let status = dev.chatctl(&["status", "--output", "json", "--config", &path]).await;
    assert_eq!(
        status.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&status.stdout)
    );
    for _ in 0..2 {
        assert_eq!(refused_with(dev.connect("token=not-a-token").await), 401);
    }
    let fired = async {
        while let Some(line) = dev.stderr.recv().await {
            if line.contains("alarm chat-function-errors is in ALARM") {
                return line;
            }
        }
        panic!("chatctl dev stopped");
    };
    let line = tokio::time::timeout(Duration::from_secs(20), fired)
        .await
        .expect("dev never said the alarm fired");
    assert!(line.contains("2 in the last 1 min"), "{line}");
    let status = dev.chatctl(&["status", "--output", "json", "--config", &path]).await;
    assert_eq!(
        status.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let report: Value = serde_json::from_slice(&status.stdout).unwrap();
    let alarm = report["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "chat-function-errors")
        .cloned()
        .unwrap();
    assert_eq!(alarm["state"], "alarm", "{alarm:#}");
    let top = dev
        .chatctl(&["top", "--once", "--output", "json", "--config", &path])
        .await;
    let snapshot: Value = serde_json::from_slice(&top.stdout).unwrap();
    assert_eq!(snapshot["alarming"], json!(["chat-function-errors"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_serves_a_stack_with_a_domain_locally_without_one() {
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(config.path(), "[domain]\nname = \"chat.example.com\"\n").unwrap();
    let path = config.path().to_string_lossy().to_string();
    let mut dev = start_dev_with(&["--config", &path]).await;
    assert!(dev.url.starts_with("ws://127.0.0.1:"), "{}", dev.url);
    let mut alice = dev.connect(&format!("token={}&room=lobby", dev.token)).await.unwrap();
    send(&mut alice, json!({"action": "sendmessage", "message": "hi"})).await;
    assert_eq!(event(&mut alice).await["text"], "hi");
    dev.kill_everything().await;
}

/// A WebSocket relay in front of `upstream` (a ws:// base URL) that passes
/// every frame both ways, but drops the first chat message it carries to a
/// client: a delivery the network lost. Its ws:// URL.
async fn lossy_relay(upstream: &str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let upstream = upstream
        .trim_start_matches("ws://")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let dropped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (upstream, dropped) = (upstream.clone(), dropped.clone());
            tokio::spawn(async move {
                let mut path = String::new();
                #[allow(clippy::result_large_err)] // tungstenite's callback type
                let callback = |request: &tungstenite::handshake::server::Request, response| {
                    path = request.uri().to_string();
                    Ok(response)
                };
                let Ok(client) = tokio_tungstenite::accept_hdr_async(tcp, callback).await else {
                    return;
                };
                let Ok((server, _)) = tokio_tungstenite::connect_async(format!("ws://{upstream}{path}")).await else {
                    return;
                };
                let (mut to_client, mut from_client) = client.split();
                let (mut to_server, mut from_server) = server.split();
                let up = async {
                    while let Some(Ok(frame)) = from_client.next().await {
                        if to_server.send(frame).await.is_err() {
                            break;
                        }
                    }
                };
                let down = async {
                    while let Some(Ok(frame)) = from_server.next().await {
                        let is_message = matches!(&frame, Message::Text(text) if text.contains(r#""type":"message""#));
                        if is_message && !dropped.swap(true, std::sync::atomic::Ordering::SeqCst) {
                            continue;
                        }
                        if to_client.send(frame).await.is_err() {
                            break;
                        }
                    }
                };
                tokio::join!(up, down);
            });
        }
    });
    format!("ws://{address}/dev")
}

/// `chatctl load` against `chatctl dev`: a small shape's JSON adds up (every
/// delivery owed arrives, each timed), its SLO is met (exit 0), the HTML
/// report is written; through a relay that loses one delivery, the loss is
/// counted and `lost=0` is missed (exit 1) while the latency clause is met;
/// shapes it cannot run are refused before any connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_measures_the_chat_and_counts_a_lost_delivery() {
    let dev = start_dev().await;
    let workdir = tempfile::tempdir().unwrap();
    let report = workdir.path().join("load.html");
    let shape = [
        "--users",
        "4",
        "--connections",
        "2",
        "--rooms",
        "2",
        "--rate",
        "60",
        "--direct",
        "25",
        "--duration",
        "2s",
    ];
    let mut args = vec!["load", "--url", &dev.url, "--output", "json", "--slo", "p99<10s,lost=0"];
    args.extend(shape);
    args.extend(["--report", report.to_str().unwrap()]);
    let run = dev.chatctl(&args).await;
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(0), "{stderr}");
    let figures: Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(figures["connections"]["opened"], 8, "{figures}");
    assert_eq!(figures["connections"]["failed"], 0, "{figures}");
    let messages = &figures["messages"];
    // 4 users × 60/min × 2 s, give or take the random start of each sender.
    let sent = messages["sent"].as_u64().unwrap();
    assert!((4..=12).contains(&sent), "{figures}");
    assert_eq!(messages["delivered"], messages["expected"], "{figures}");
    // A room message goes to the room's 4 connections, a direct one to both users' 4.
    assert_eq!(messages["expected"].as_u64().unwrap(), 4 * sent, "{figures}");
    assert_eq!(messages["lost"], 0);
    assert_eq!(messages["duplicated"], 0);
    assert_eq!(figures["latency"]["count"], messages["delivered"]);
    assert!(figures["latency"]["p99_ms"].as_f64().unwrap() > 0.0);
    assert!(figures["errors"].as_object().unwrap().is_empty(), "{figures}");
    assert!(
        figures["slo"].as_array().unwrap().iter().all(|v| v["met"] == true),
        "{figures}"
    );
    assert!(figures["generator"]["cpu_ms"].as_f64().unwrap() > 0.0);
    let page = std::fs::read_to_string(&report).unwrap();
    for part in ["<svg", "Latency over time", "Latency histograms", "p99&lt;10s"] {
        assert!(page.contains(part), "{part} in the report");
    }

    // `cost` from the metrics dev published for that traffic, by hand: every
    // message in and every delivery out is an API Gateway message; each
    // connection ran the authorizer, connect and disconnect, each message
    // sendmessage; 5 minutes of metrics scaled to a day is × 288.
    let (delivered, sent) = (messages["delivered"].as_f64().unwrap(), sent as f64);
    let wanted = (sent + delivered, 8.0 * 3.0 + sent);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let (estimate, counted) = loop {
        let run = dev.chatctl(&["cost", "--since", "5m", "--output", "json"]).await;
        assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
        let estimate: Value = serde_json::from_slice(&run.stdout).unwrap();
        let usage = &estimate["usage_per_day"];
        let got = (
            usage["api_messages"].as_f64().unwrap() / 288.0,
            usage["lambda_requests"].as_f64().unwrap() / 288.0,
        );
        let counted = (got.0 - wanted.0).abs() < 1e-6 && (got.1 - wanted.1).abs() < 1e-6;
        if counted || std::time::Instant::now() > deadline {
            break (estimate, counted);
        }
        // dev publishes its metrics every second.
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(counted, "messages and requests {wanted:?}: {estimate:#}");
    assert_eq!(estimate["basis"], "measured");
    assert_eq!(
        estimate["usage_per_day"]["chat_messages"].as_f64().unwrap(),
        sent * 288.0
    );
    let api = &estimate["parts"][0];
    assert_eq!(api["part"], "API Gateway messages");
    let by_hand = (sent + delivered) * 288.0 / 1e6 * 1.00;
    assert!(
        (api["dollars_per_day"].as_f64().unwrap() - by_hand).abs() < 1e-9,
        "{estimate:#}"
    );
    let total: f64 = estimate["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["dollars_per_day"].as_f64().unwrap())
        .sum();
    assert!((estimate["dollars_per_day"].as_f64().unwrap() - total).abs() < 1e-9);
    let per_1000 = estimate["dollars_per_1000_messages"].as_f64().unwrap();
    assert!((per_1000 - total / (sent * 288.0) * 1000.0).abs() < 1e-9);

    let relay = lossy_relay(&dev.url).await;
    // The lost delivery is waited for until --drain is over.
    let mut args = vec!["load", "--url", &relay, "--slo", "p99<10s,lost=0", "--drain", "2s"];
    args.extend(shape);
    let run = dev.chatctl(&args).await;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr),
    );
    assert_eq!(run.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains("Lost 1, duplicated 0"), "{stdout}");
    assert!(stdout.contains("SLO p99<10s: met"), "{stdout}");
    assert!(stdout.contains("SLO lost=0: MISSED (measured 1)"), "{stdout}");
    assert!(stderr.contains("the run missed its SLO: lost=0"), "{stderr}");

    for (bad, expected) in [
        (vec!["--users", "0"], "must each be at least 1"),
        (vec!["--slo", "latency<1s"], "unknown figure \"latency\""),
        (vec!["--duration", "soon"], "invalid --duration \"soon\""),
        (vec!["--size", "10"], "at least 64 bytes"),
    ] {
        let mut args = vec!["load", "--url", &dev.url];
        args.extend(bad);
        let run = dev.chatctl(&args).await;
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(expected), "{expected}: {stderr}");
    }
    // Ctrl-C mid-run: every connection closed, the figures so far, exit 130.
    let load = tokio::process::Command::new(env!("CARGO_BIN_EXE_chatctl"))
        .args([
            "load",
            "--url",
            &dev.url,
            "--endpoint-url",
            &dev.endpoint,
            "--users",
            "3",
            "--rate",
            "120",
        ])
        .args(["--duration", "10m"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let load_connections = || async {
        let run = dev.chatctl(&["connections", "list", "--output", "json"]).await;
        let rows: Vec<Value> = serde_json::from_slice(&run.stdout).unwrap();
        rows.iter()
            .filter(|row| row["user"].as_str().unwrap().starts_with("load-"))
            .count()
    };
    assert!(
        eventually(|| async { load_connections().await == 3 }).await,
        "the run's 3 connections open"
    );
    let sent = std::process::Command::new("kill")
        .args(["-INT", &load.id().unwrap().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let output = tokio::time::timeout(Duration::from_secs(20), load.wait_with_output())
        .await
        .expect("load stops within 20 s of Ctrl-C")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(130), "{stdout}");
    assert!(stdout.contains("Interrupted after"), "{stdout}");
    assert!(stdout.contains("Connections: 3 of 3 opened"), "{stdout}");
    assert!(
        eventually(|| async { load_connections().await == 0 }).await,
        "every connection closed"
    );

    // More connections than the process may open: refused with the way out.
    let command = format!(
        "ulimit -n 200 && exec '{}' load --url {} --endpoint-url {} --users 300",
        env!("CARGO_BIN_EXE_chatctl"),
        dev.url,
        dev.endpoint
    );
    let run = tokio::process::Command::new("bash")
        .args(["-c", &command])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("this shape opens 300 connections"), "{stderr}");
    assert!(stderr.contains("ulimit -n 364"), "{stderr}");
}
