//! `chatctl smoke`: the check an operator makes by hand with wscat after a
//! deployment, done for them. It connects as a user of its own to a private
//! room, sends a message and expects its echo, asks for the history and
//! expects the message in it, and closes, timing each step.
//!
//! Right after `up`, IAM may still be propagating a new role or policy
//! (aws-facts.md §8: 5–30 s usually): the authorizer or a function fails
//! (HTTP 500 at the handshake) or cannot post to `@connections` yet (no
//! echo). Those failures are tried again for a bounded time, saying so;
//! a refusal (4xx) or nothing listening fails at once.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use futures::{SinkExt, StreamExt};
use serde::Serialize;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{self, Message};

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The user the check connects as.
pub const USER: &str = "chatctl-smoke";
/// How long one step may take before the attempt counts as failed.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait between attempts.
const RETRY_PAUSE: Duration = Duration::from_secs(2);

/// One step that passed, and how long it took.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub step: &'static str,
    pub ms: u128,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub url: String,
    pub room: String,
    pub user: String,
    pub passed: bool,
    pub attempts: u32,
    /// The steps of the last attempt that passed.
    pub steps: Vec<Step>,
    /// What failed, when it did.
    pub error: Option<String>,
}

/// Why an attempt failed, and whether another may pass.
#[derive(Debug)]
enum Failure {
    /// Nothing listens, or the stack refuses: another attempt fails the same way.
    Final(&'static str, anyhow::Error),
    /// What a stack whose IAM changes are still propagating does.
    Transient(&'static str, anyhow::Error),
}

/// How to connect: the query string's credentials for the stack's auth mode.
#[derive(Debug, Clone)]
pub enum Credentials {
    Token(String),
    /// `auth = "none"`: the user names itself.
    User,
}

/// Runs the check against `url`, trying again for up to `budget` while the
/// failures look like IAM propagation; `progress` hears every step and retry.
pub async fn run(url: &str, credentials: &Credentials, budget: Duration, progress: &dyn Fn(&str)) -> Report {
    let room = format!(
        "smoke-{}",
        ulid::Ulid::from_datetime(std::time::SystemTime::now())
            .to_string()
            .to_lowercase()
    );
    let started = Instant::now();
    let mut report = Report {
        url: url.to_string(),
        room: room.clone(),
        user: USER.to_string(),
        passed: false,
        attempts: 0,
        steps: vec![],
        error: None,
    };
    loop {
        report.attempts += 1;
        report.steps.clear();
        match attempt(url, credentials, &room, &mut report.steps, progress).await {
            Ok(user) => {
                report.user = user;
                report.passed = true;
                return report;
            }
            Err(Failure::Final(step, error)) => {
                report.error = Some(format!("{step}: {error:#}"));
                return report;
            }
            Err(Failure::Transient(step, error)) => {
                let left = budget.saturating_sub(started.elapsed());
                if left < RETRY_PAUSE {
                    report.error = Some(format!(
                        "{step}: {error:#} (still failing after {} s and {} attempts)",
                        started.elapsed().as_secs(),
                        report.attempts
                    ));
                    return report;
                }
                progress(&format!(
                    "attempt {} failed at {step}: {error:#}; right after `up` IAM changes may still be propagating: trying again for up to {} s",
                    report.attempts,
                    left.as_secs()
                ));
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }
}

/// `url` when given (checked), else the deployed stack's WebSocket URL:
/// `chatctl dev`'s local one, the domain's, or the API's own.
pub async fn websocket_url(context: &crate::session::Session, url: Option<&str>) -> Result<String> {
    let crate::session::Session { aws, names, .. } = context;
    let url = match url {
        Some(url) => url.to_string(),
        None => {
            let api = crate::stack::api::deployed_api(aws, names).await?;
            let domain = context
                .settings
                .domain
                .as_ref()
                .map(crate::stack::domain::DomainSpec::of);
            crate::dev::gateway::local_url::websocket_url(aws, &api)
                .unwrap_or_else(|| crate::output::Outputs::of(names, &api.id, domain.as_ref()).websocket_url)
        }
    };
    if !(url.starts_with("ws://") || url.starts_with("wss://")) {
        anyhow::bail!("invalid --url {url:?}: a WebSocket URL starts with ws:// or wss://");
    }
    Ok(url)
}

/// The URL with the query string that lets the check in to `room`.
pub fn connect_url(url: &str, credentials: &Credentials, room: &str) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    match credentials {
        Credentials::Token(token) => query.append_pair("token", token),
        Credentials::User => query.append_pair("user", USER),
    };
    query.append_pair("room", room);
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}{}", query.finish())
}

/// What a refused handshake means, and whether it may pass later.
fn handshake_failure(url: &str, error: tungstenite::Error) -> Failure {
    match error {
        tungstenite::Error::Http(response) => {
            let status = response.status();
            let why = match status.as_u16() {
                401 => "the authorizer refused the credentials",
                403 => "the authorizer denied the connection",
                429 => "the stack is throttling connections",
                400 => "the connect function refused the connection",
                _ => "the authorizer or the connect function failed",
            };
            let error = anyhow!("HTTP {status}: {why}");
            if status.is_server_error() {
                Failure::Transient("connect", error)
            } else {
                Failure::Final("connect", error)
            }
        }
        tungstenite::Error::Io(io) => Failure::Final(
            "connect",
            anyhow!("cannot reach {url}: {io}; is the stack running (`chatctl dev` prints its URL)?"),
        ),
        other => Failure::Final("connect", anyhow!("cannot connect to {url}: {other}")),
    }
}

/// One try of every step; the user the stack took the check for.
async fn attempt(
    url: &str,
    credentials: &Credentials,
    room: &str,
    steps: &mut Vec<Step>,
    progress: &dyn Fn(&str),
) -> Result<String, Failure> {
    let mut done = |step: &'static str, since: Instant| {
        let ms = since.elapsed().as_millis();
        progress(&format!("  {step:<16} {ms:>6} ms"));
        steps.push(Step { step, ms });
    };
    let started = Instant::now();
    let connecting = tokio_tungstenite::connect_async(connect_url(url, credentials, room));
    let mut socket = match tokio::time::timeout(STEP_TIMEOUT, connecting).await {
        Ok(Ok((socket, _))) => socket,
        Ok(Err(error)) => return Err(handshake_failure(url, error)),
        Err(_) => {
            return Err(Failure::Transient(
                "connect",
                anyhow!("no handshake within {} s", STEP_TIMEOUT.as_secs()),
            ));
        }
    };
    done("connect", started);

    let text = format!("smoke test {}", ulid::Ulid::from_datetime(std::time::SystemTime::now()));
    let started = Instant::now();
    send(&mut socket, json!({"action": "sendmessage", "message": text}), "send").await?;
    let echo = expect(&mut socket, "echo", |event| {
        event["type"] == "message" && event["text"] == text.as_str()
    })
    .await
    .map_err(|error| match error {
        Failure::Transient(step, error) => Failure::Transient(
            step,
            error.context("the function may not be allowed to post to @connections yet"),
        ),
        other => other,
    })?;
    done("message echoed", started);
    // Who the stack took the check for: the token's user.
    let user = echo["from"].as_str().unwrap_or(USER).to_string();

    let started = Instant::now();
    send(&mut socket, json!({"action": "getmessages"}), "history").await?;
    expect(&mut socket, "history", |event| {
        event["type"] == "history"
            && event["messages"]
                .as_array()
                .is_some_and(|messages| messages.iter().any(|m| m["text"] == text.as_str()))
    })
    .await?;
    done("history", started);

    let started = Instant::now();
    let closing = async {
        socket.close(None).await?;
        while socket.next().await.transpose()?.is_some() {}
        Ok::<_, tungstenite::Error>(())
    };
    match tokio::time::timeout(STEP_TIMEOUT, closing).await {
        // Closed either way: by the handshake, or by a peer that dropped
        // the connection without one.
        Ok(Ok(()))
        | Ok(Err(
            tungstenite::Error::ConnectionClosed
            | tungstenite::Error::AlreadyClosed
            | tungstenite::Error::Protocol(tungstenite::error::ProtocolError::ResetWithoutClosingHandshake),
        )) => {}
        Ok(Err(error)) => return Err(Failure::Final("close", anyhow!("{error}"))),
        Err(_) => return Err(Failure::Final("close", anyhow!("the close was not answered"))),
    }
    done("close", started);
    Ok(user)
}

async fn send(socket: &mut Socket, frame: Value, step: &'static str) -> Result<(), Failure> {
    socket
        .send(Message::text(frame.to_string()))
        .await
        .map_err(|error| Failure::Final(step, anyhow!("cannot send: {error}")))
}

/// Reads events until one satisfies `wanted`; an `error` event fails the
/// step with the stack's code and message.
async fn expect(socket: &mut Socket, step: &'static str, wanted: impl Fn(&Value) -> bool) -> Result<Value, Failure> {
    let reading = async {
        while let Some(frame) = socket.next().await {
            let frame = frame.map_err(|error| Failure::Final(step, anyhow!("the connection failed: {error}")))?;
            let Message::Text(text) = frame else { continue };
            let event: Value = serde_json::from_str(&text)
                .with_context(|| format!("the stack sent something that is not JSON: {text}"))
                .map_err(|error| Failure::Final(step, error))?;
            if event["type"] == "error" {
                return Err(Failure::Final(
                    step,
                    anyhow!("the stack answered error {}: {}", event["code"], event["message"]),
                ));
            }
            if wanted(&event) {
                return Ok(event);
            }
        }
        Err(Failure::Final(step, anyhow!("the stack closed the connection")))
    };
    tokio::time::timeout(STEP_TIMEOUT, reading).await.unwrap_or_else(|_| {
        Err(Failure::Transient(
            step,
            anyhow!("nothing within {} s", STEP_TIMEOUT.as_secs()),
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connect_url_carries_the_credentials_and_the_room() {
        assert_eq!(
            connect_url("wss://a.example/dev", &Credentials::Token("t+k/=".into()), "smoke-1"),
            "wss://a.example/dev?token=t%2Bk%2F%3D&room=smoke-1"
        );
        assert_eq!(
            connect_url("ws://127.0.0.1:8787/dev?x=1", &Credentials::User, "r"),
            "ws://127.0.0.1:8787/dev?x=1&user=chatctl-smoke&room=r"
        );
    }

    #[test]
    fn server_errors_at_the_handshake_may_pass_later_refusals_never() {
        let http = |status: u16| {
            let response = tungstenite::http::Response::builder()
                .status(status)
                .body(None)
                .unwrap();
            handshake_failure("ws://x", tungstenite::Error::Http(Box::new(response)))
        };
        assert!(matches!(http(500), Failure::Transient("connect", _)));
        assert!(matches!(http(502), Failure::Transient("connect", _)));
        let Failure::Final(_, refused) = http(401) else {
            panic!("401 is final")
        };
        assert!(refused.to_string().contains("authorizer refused"), "{refused}");
        let unreachable = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let Failure::Final(_, error) = handshake_failure("ws://127.0.0.1:9/dev", tungstenite::Error::Io(unreachable))
        else {
            panic!("nothing listening is final")
        };
        assert!(
            error.to_string().contains("cannot reach ws://127.0.0.1:9/dev"),
            "{error}"
        );
    }
}
