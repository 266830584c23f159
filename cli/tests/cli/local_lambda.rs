//! The local Lambda runtime running the functions' real binaries.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use chatctl::dev::runtime::{FunctionConfig, LocalFunction, LogLine, LogSink, Outcome};

const SECRET: &str = "local-lambda-secret-local-lambda-secret";

/// The functions' binary, which serves the function its `_HANDLER` names.
fn binary() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/debug")
        .join(chatctl::build::BINARY);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace`",
        path.display()
    );
    path
}

fn collecting_logs() -> (LogSink, Arc<Mutex<Vec<LogLine>>>) {
    let lines = Arc::new(Mutex::new(vec![]));
    let sink_lines = lines.clone();
    (Arc::new(move |line| sink_lines.lock().unwrap().push(line)), lines)
}

/// The authorizer in token mode, its secret in an emulator's Secrets
/// Manager (kept alive by the returned server).
async fn authorizer_config(instances: usize) -> (FunctionConfig, chat_testkit::Moto) {
    let moto = chat_testkit::Moto::start();
    aws_sdk_secretsmanager::Client::new(&moto.sdk_config().await)
        .create_secret()
        .name("chatctl/chat/token")
        .secret_string(SECRET)
        .send()
        .await
        .unwrap();
    let env = [
        ("CHAT_AUTH_MODE", "token"),
        ("CHAT_TOKEN_SECRET_ID", "chatctl/chat/token"),
        ("AWS_ENDPOINT_URL", moto.endpoint()),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ];
    let config = FunctionConfig {
        name: "chat-authorizer".into(),
        binary: binary(),
        handler: "authorizer".into(),
        memory_mb: 128,
        timeout: Duration::from_secs(5),
        env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        region: "us-east-1".into(),
        instances,
        max_instances: instances,
    };
    (config, moto)
}

fn authorizer_event(token: &str) -> Bytes {
    Bytes::from(chat_testkit::events::authorizer_request(&[("token", token), ("room", "general")], None).to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_authorizer_binary_answers_through_the_runtime_api() {
    let (logs, lines) = collecting_logs();
    let (config, _moto) = authorizer_config(1).await;
    let function = LocalFunction::start(config, logs).await.unwrap();

    let token = chat_core::token::mint(SECRET.as_bytes(), "alice", Duration::from_secs(60), SystemTime::now()).unwrap();
    let Outcome::Response(body) = function.invoke(authorizer_event(&token)).await else {
        panic!("no response");
    };
    let policy: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(policy["principalId"], "alice");
    assert_eq!(policy["policyDocument"]["Statement"][0]["Effect"], "Allow");
    assert_eq!(policy["context"]["room"], "general");

    let forged = chat_core::token::mint(
        b"forged-secret-forged-secret-forged",
        "alice",
        Duration::from_secs(60),
        SystemTime::now(),
    )
    .unwrap();
    match function.invoke(authorizer_event(&forged)).await {
        Outcome::Error { error_message, .. } => assert_eq!(error_message, "Unauthorized"),
        other => panic!("expected an error, got {other:?}"),
    }
    // The function's output is forwarded as it comes: the line of the last
    // invocation may arrive just after its answer.
    let logged = || {
        lines
            .lock()
            .unwrap()
            .iter()
            .map(|l| l.line.clone())
            .collect::<Vec<_>>()
            .join("\n")
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !logged().contains("unauthorized") && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        logged().contains("unauthorized"),
        "the function's own log lines are collected: {}",
        logged()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_invocations_queue_for_one_instance_or_spread_over_several() {
    for instances in [1, 3] {
        let (logs, _) = collecting_logs();
        let (config, _moto) = authorizer_config(instances).await;
        let function = LocalFunction::start(config, logs).await.unwrap();
        let invocations = (0..20).map(|i| {
            let function = &function;
            async move {
                let user = format!("user{i}");
                let token =
                    chat_core::token::mint(SECRET.as_bytes(), &user, Duration::from_secs(60), SystemTime::now())
                        .unwrap();
                match function.invoke(authorizer_event(&token)).await {
                    Outcome::Response(body) => {
                        let policy: serde_json::Value = serde_json::from_slice(&body).unwrap();
                        assert_eq!(policy["principalId"], user, "each caller gets its own answer");
                    }
                    other => panic!("{other:?}"),
                }
            }
        });
        futures::future::join_all(invocations).await;
    }
}

/// A function in Python: sleeps on "sleep", exits on "exit", takes half a
/// second on "slow", tells its process id on "pid", else echoes.
const SCRIPTED_FUNCTION: &str = r#"
import json, os, sys, time
def handle(event):
    if event == "sleep":
        time.sleep(60)
    if event == "exit":
        sys.exit(3)
    if event == "slow":
        time.sleep(0.5)
    if event == "pid":
        return {"pid": os.getpid()}
    return {"echo": event, "function": os.environ["AWS_LAMBDA_FUNCTION_NAME"], "handler": os.environ["_HANDLER"]}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overrunning_or_crashing_instance_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let (logs, lines) = collecting_logs();
    let config = FunctionConfig {
        timeout: Duration::from_secs(1),
        ..crate::harness::python_function(dir.path(), "scripted", SCRIPTED_FUNCTION)
    };
    let function = LocalFunction::start(config, logs).await.unwrap();
    let echo = |text: &str| Bytes::from(serde_json::to_vec(text).unwrap());

    assert_eq!(
        function.invoke(echo("hello")).await,
        Outcome::Response(Bytes::from_static(
            br#"{"echo": "hello", "function": "scripted", "handler": "scripted.handle"}"#
        ))
    );
    assert_eq!(function.invoke(echo("sleep")).await, Outcome::Timeout);
    assert!(
        lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.line.contains("Task timed out after 1.00 seconds"))
    );
    assert!(
        matches!(function.invoke(echo("again")).await, Outcome::Response(_)),
        "a new instance serves"
    );
    assert!(matches!(function.invoke(echo("exit")).await, Outcome::Crashed(_)));
    assert!(matches!(function.invoke(echo("after")).await, Outcome::Response(_)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binary_that_cannot_start_fails_its_invocations_at_once() {
    let (logs, _) = collecting_logs();
    let config = FunctionConfig {
        name: "broken".into(),
        binary: PathBuf::from("/bin/false"),
        handler: "broken".into(),
        memory_mb: 128,
        timeout: Duration::from_secs(30),
        env: BTreeMap::new(),
        region: "us-east-1".into(),
        instances: 1,
        max_instances: 1,
    };
    let function = LocalFunction::start(config, logs).await.unwrap();
    let started = std::time::Instant::now();
    match function.invoke(Bytes::from_static(b"{}")).await {
        Outcome::Crashed(reason) => assert!(reason.contains("Runtime.ExitError"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "not left to the 30 s timeout"
    );
}

/// The functions' binary started with a Handler it does not know (a function
/// configured by hand) exits at init, naming the Handler and the valid ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_functions_binary_refuses_a_handler_it_does_not_know() {
    let (logs, lines) = collecting_logs();
    let (config, _moto) = authorizer_config(1).await;
    let config = FunctionConfig {
        handler: "bootstrap".into(),
        ..config
    };
    let function = LocalFunction::start(config, logs).await.unwrap();
    match function.invoke(authorizer_event("x")).await {
        Outcome::Crashed(reason) => assert!(reason.contains("Runtime.ExitError"), "{reason}"),
        other => panic!("{other:?}"),
    }
    let logged: Vec<String> = lines.lock().unwrap().iter().map(|l| l.line.clone()).collect();
    assert!(
        logged
            .iter()
            .any(|l| l.contains("_HANDLER=bootstrap is not a chat function")
                && l.contains("authorizer, connect, disconnect")),
        "{logged:?}"
    );
}

/// Restarts `function` while it handles `in_hand`, with `queued` more events
/// arriving meanwhile, which must all succeed; `in_hand`'s outcome.
async fn restart_during(function: &Arc<LocalFunction>, in_hand: &str, queued: usize) -> Outcome {
    let in_hand = tokio::spawn({
        let function = function.clone();
        let event = Bytes::from(serde_json::to_vec(in_hand).unwrap());
        async move { function.invoke(event).await }
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    function.restart();
    let queued = (0..queued).map(|i| {
        let function = function.clone();
        async move { function.invoke(Bytes::from(format!("\"queued {i}\""))).await }
    });
    for outcome in futures::future::join_all(queued).await {
        assert!(matches!(outcome, Outcome::Response(_)), "{outcome:?}");
    }
    in_hand.await.unwrap()
}

/// A restart (after a rebuild) replaces the process without failing an
/// invocation: the event in hand finishes, new ones wait for the new process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_loses_no_invocation() {
    let dir = tempfile::tempdir().unwrap();
    let (logs, _) = collecting_logs();
    let config = crate::harness::python_function(dir.path(), "scripted", SCRIPTED_FUNCTION);
    let function = Arc::new(LocalFunction::start(config, logs).await.unwrap());
    let event = |text: &str| Bytes::from(serde_json::to_vec(text).unwrap());
    let pid = |outcome: Outcome| match outcome {
        Outcome::Response(body) => serde_json::from_slice::<serde_json::Value>(&body).unwrap()["pid"].clone(),
        other => panic!("{other:?}"),
    };
    let before = pid(function.invoke(event("pid")).await);

    assert!(
        matches!(restart_during(&function, "slow", 10).await, Outcome::Response(_)),
        "the event in hand finished"
    );
    assert_ne!(pid(function.invoke(event("pid")).await), before, "a new process serves");
}

/// A restart while the event in hand overruns: that one times out, as on
/// Lambda, and the events queued meanwhile are served by the new process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_during_an_overrunning_event_fails_only_that_event() {
    let dir = tempfile::tempdir().unwrap();
    let (logs, _) = collecting_logs();
    let config = FunctionConfig {
        timeout: Duration::from_secs(1),
        ..crate::harness::python_function(dir.path(), "scripted", SCRIPTED_FUNCTION)
    };
    let function = Arc::new(LocalFunction::start(config, logs).await.unwrap());
    let event = |text: &str| Bytes::from(serde_json::to_vec(text).unwrap());
    assert!(matches!(function.invoke(event("warm")).await, Outcome::Response(_)));

    assert_eq!(restart_during(&function, "sleep", 5).await, Outcome::Timeout);
    // A later rebuild replaces the process again, without failing anything.
    function.restart();
    assert!(matches!(function.invoke(event("after")).await, Outcome::Response(_)));
}

/// As Lambda runs another sandbox when every one is busy, a function starts
/// instances while events wait, up to its maximum, and keeps them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_scales_a_function_up_to_its_maximum_instances() {
    let dir = tempfile::tempdir().unwrap();
    let (logs, _) = collecting_logs();
    let config = FunctionConfig {
        instances: 1,
        max_instances: 4,
        ..crate::harness::python_function(dir.path(), "scripted", SCRIPTED_FUNCTION)
    };
    let function = LocalFunction::start(config, logs).await.unwrap();
    let slow = Bytes::from_static(br#""slow""#);
    let started = std::time::Instant::now();
    let outcomes = futures::future::join_all((0..8).map(|_| function.invoke(slow.clone()))).await;
    let elapsed = started.elapsed();
    assert!(
        outcomes.iter().all(|o| matches!(o, Outcome::Response(_))),
        "{outcomes:?}"
    );
    assert_eq!(function.instances(), 4, "scaled to the maximum, not past it");
    // 8 × 0.5 s: 4 s on one instance, about 1 s on four.
    assert!(elapsed < Duration::from_millis(3500), "{elapsed:?}");
    let again = futures::future::join_all((0..4).map(|_| function.invoke(slow.clone()))).await;
    assert_eq!(function.instances(), 4);
    assert!(
        again.iter().all(|o| matches!(o, Outcome::Response(_))),
        "the warm instances serve"
    );
}
