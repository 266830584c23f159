//! A local Lambda: runs a function's real binary behind the Lambda runtime
//! API (aws-facts.md §7), as Lambda does, so the very code deployed to AWS
//! serves `chatctl dev`.
//!
//! Each instance is one process with its own runtime API listener; it serves
//! one event at a time. Invocations wait in one queue that every instance
//! polls. As on Lambda, which runs another sandbox when an event arrives and
//! every sandbox is busy, a function starts another instance when events
//! wait and none is free, up to `max_instances`; instances then stay warm
//! until `chatctl dev` stops. An instance that exceeds the timeout or exits
//! is replaced, as Lambda replaces a sandbox.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{mpsc, oneshot};

const API_PREFIX: &str = "/2018-06-01/runtime";
/// A replaced instance waits this long before starting again, so a binary
/// that fails at once does not spin.
const RESTART_DELAY: Duration = Duration::from_millis(200);

/// How a function is run.
#[derive(Debug, Clone)]
pub struct FunctionConfig {
    pub name: String,
    pub binary: PathBuf,
    /// The function's Handler setting, given to the process as `_HANDLER`.
    pub handler: String,
    pub memory_mb: i32,
    pub timeout: Duration,
    /// The function's own environment, plus whatever the local stack adds.
    pub env: BTreeMap<String, String>,
    pub region: String,
    /// Instances started at once.
    pub instances: usize,
    /// Instances the function may scale up to under load.
    pub max_instances: usize,
}

/// The result of one invocation, as Lambda reports it.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The function returned this body.
    Response(Bytes),
    /// The function failed (`X-Amz-Function-Error: Unhandled` on AWS).
    Error { error_type: String, error_message: String },
    /// No answer within the function's timeout; the instance was replaced.
    Timeout,
    /// The process exited while handling the event.
    Crashed(String),
}

/// One line a function printed, for the logs.
#[derive(Debug, Clone)]
pub struct LogLine {
    pub function: String,
    pub instance: usize,
    pub line: String,
}

pub type LogSink = Arc<dyn Fn(LogLine) + Send + Sync>;

struct Invocation {
    id: String,
    event: Bytes,
}

struct Shared {
    config: FunctionConfig,
    queue: tokio::sync::Mutex<mpsc::UnboundedReceiver<Invocation>>,
    /// Puts back an event that a process being replaced took at the last moment.
    requeue: mpsc::UnboundedSender<Invocation>,
    /// Per instance, the generation of the process that may take events; 0
    /// while it is being replaced. A `/next` call serves the generation that
    /// was current when it came in.
    accepting: Vec<tokio::sync::watch::Sender<u64>>,
    /// Answers awaited, by request id.
    waiting: Mutex<HashMap<String, oneshot::Sender<Outcome>>>,
    /// The request each instance is handling.
    handling: Mutex<HashMap<usize, String>>,
    /// Tells an instance's supervisor to replace its process (after a
    /// timeout, or a rebuild); see [`Shared::request_restart`].
    restart: Vec<tokio::sync::Notify>,
    /// Whether a replacement is asked for and not yet done: a wake-up that
    /// finds it false is stale (the process asked about is already gone).
    restart_requested: Vec<std::sync::atomic::AtomicBool>,
    /// Whether each instance's current process has polled for an event yet.
    polled: Vec<std::sync::atomic::AtomicBool>,
    /// Instances started so far (the first of the per-instance slots).
    started: Mutex<usize>,
    /// Invocations in the queue, not yet taken by an instance.
    queued: std::sync::atomic::AtomicUsize,
    /// The tasks of every started instance, aborted when the function stops.
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    logs: LogSink,
    /// Its next invocation fails, as an Inactive function's does on AWS.
    inactive: std::sync::atomic::AtomicBool,
}

impl Shared {
    fn answer(&self, id: &str, outcome: Outcome) -> bool {
        let sender = self.waiting.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
        match sender {
            Some(sender) => sender.send(outcome).is_ok(),
            None => false,
        }
    }

    /// Fails every invocation still waiting in the queue: what Lambda does
    /// when the runtime cannot start (Runtime.ExitError).
    fn fail_queued(&self, reason: &str) {
        let handling: Vec<String> = self
            .handling
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        let queued: Vec<String> = self
            .waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .filter(|id| !handling.contains(id))
            .cloned()
            .collect();
        for id in queued {
            self.answer(&id, Outcome::Crashed(reason.to_string()));
        }
    }

    fn request_restart(&self, instance: usize) {
        self.restart_requested[instance].store(true, std::sync::atomic::Ordering::SeqCst);
        self.restart[instance].notify_one();
    }

    fn is_handling(&self, instance: usize) -> bool {
        self.handling
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&instance)
    }

    fn handled_by(&self, instance: usize) -> Option<String> {
        self.handling
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&instance)
    }
}

/// A running function: its instances and their runtime API listeners.
/// Dropping it stops every process it started.
pub struct LocalFunction {
    shared: Arc<Shared>,
    queue: mpsc::UnboundedSender<Invocation>,
}

impl Drop for LocalFunction {
    fn drop(&mut self) {
        for task in self.shared.tasks.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            task.abort();
        }
    }
}

impl LocalFunction {
    pub async fn start(config: FunctionConfig, logs: LogSink) -> Result<LocalFunction> {
        anyhow::ensure!(
            config.binary.exists(),
            "function {} has no binary at {}; build the handlers first",
            config.name,
            config.binary.display()
        );
        let slots = config.max_instances.max(config.instances).max(1);
        let (queue, receiver) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            queue: tokio::sync::Mutex::new(receiver),
            requeue: queue.clone(),
            accepting: (0..slots).map(|_| tokio::sync::watch::Sender::new(0)).collect(),
            waiting: Mutex::new(HashMap::new()),
            handling: Mutex::new(HashMap::new()),
            restart: (0..slots).map(|_| tokio::sync::Notify::new()).collect(),
            restart_requested: (0..slots).map(|_| std::sync::atomic::AtomicBool::new(false)).collect(),
            polled: (0..slots).map(|_| std::sync::atomic::AtomicBool::new(false)).collect(),
            started: Mutex::new(0),
            queued: Default::default(),
            tasks: Mutex::new(vec![]),
            logs,
            inactive: Default::default(),
            config,
        });
        for _ in 0..shared.config.instances.max(1) {
            start_instance(&shared).await?;
        }
        Ok(LocalFunction { shared, queue })
    }

    /// Instances started so far.
    pub fn instances(&self) -> usize {
        *self.shared.started.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn name(&self) -> &str {
        &self.shared.config.name
    }

    /// Makes the function Inactive, as one idle for weeks is on AWS: its next
    /// invocation fails while Lambda reactivates it, and the ones after
    /// pass. Lambda docs "functions-states": "When you try to invoke a
    /// function that is inactive, the invocation fails and Lambda sets the
    /// function to pending state" (aws-facts.md §11).
    pub fn make_inactive(&self) {
        self.shared.inactive.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Replaces every instance's process, e.g. after the binary was rebuilt.
    /// An instance stops taking events at once and finishes the one in hand
    /// first, so no invocation fails for it.
    pub fn restart(&self) {
        for instance in 0..self.instances() {
            self.shared.request_restart(instance);
        }
    }

    /// Invokes the function with `event` and waits for its outcome.
    pub async fn invoke(&self, event: Bytes) -> Outcome {
        if self.shared.inactive.swap(false, std::sync::atomic::Ordering::SeqCst) {
            (self.shared.logs)(LogLine {
                function: self.shared.config.name.clone(),
                instance: 0,
                line: "the function was Inactive: this invocation failed while Lambda reactivates it".into(),
            });
            return Outcome::Error {
                error_type: "ResourceConflictException".into(),
                error_message: "The operation cannot be performed at this time. \
                                The function is currently in the following state: Inactive"
                    .into(),
            };
        }
        let id = ulid::Ulid::from_datetime(SystemTime::now()).to_string().to_lowercase();
        let timeout = self.shared.config.timeout;
        let (sender, receiver) = oneshot::channel();
        self.shared
            .waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone(), sender);
        self.shared.queued.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if self.queue.send(Invocation { id: id.clone(), event }).is_err() {
            return Outcome::Crashed("the function is stopped".into());
        }
        if let Err(error) = scale_up(&self.shared).await {
            (self.shared.logs)(LogLine {
                function: self.shared.config.name.clone(),
                instance: 0,
                line: format!("cannot start another instance: {error:#}"),
            });
        }
        // The timeout counts from when an instance takes the event, as on Lambda;
        // a queued event waits, bounded by a generous multiple.
        match tokio::time::timeout(timeout * 4 + Duration::from_secs(5), receiver).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Outcome::Crashed("the function stopped".into()),
            Err(_) => {
                self.shared
                    .waiting
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id);
                Outcome::Timeout
            }
        }
    }
}

/// Starts another instance when more events wait than instances are free
/// (not handling an event), below `max_instances`.
async fn scale_up(shared: &Arc<Shared>) -> Result<()> {
    let started = *shared.started.lock().unwrap_or_else(|e| e.into_inner());
    let busy = shared.handling.lock().unwrap_or_else(|e| e.into_inner()).len();
    let queued = shared.queued.load(std::sync::atomic::Ordering::SeqCst);
    if started < shared.config.max_instances && queued > started.saturating_sub(busy) {
        start_instance(shared).await?;
    }
    Ok(())
}

/// Opens the next instance's runtime API and starts its process.
async fn start_instance(shared: &Arc<Shared>) -> Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot open a local runtime API port")?;
    let instance = {
        let mut started = shared.started.lock().unwrap_or_else(|e| e.into_inner());
        if *started >= shared.accepting.len() {
            return Ok(());
        }
        *started += 1;
        *started - 1
    };
    let address = listener.local_addr()?.to_string();
    let app = Router::new()
        .route(&format!("{API_PREFIX}/invocation/next"), get(next))
        .route(&format!("{API_PREFIX}/invocation/{{id}}/response"), post(response))
        .route(&format!("{API_PREFIX}/invocation/{{id}}/error"), post(error))
        .route(&format!("{API_PREFIX}/init/error"), post(init_error))
        .with_state((shared.clone(), instance));
    let mut tasks = shared.tasks.lock().unwrap_or_else(|e| e.into_inner());
    tasks.push(tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    }));
    tasks.push(tokio::spawn(supervise(shared.clone(), instance, address)));
    Ok(())
}

/// Runs one instance's process, replacing it when it exits or overruns.
async fn supervise(shared: Arc<Shared>, instance: usize, runtime_api: String) {
    let mut generation = 0;
    loop {
        generation += 1;
        let config = &shared.config;
        let mut command = tokio::process::Command::new(&config.binary);
        command
            .env_clear()
            .envs(&config.env)
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("AWS_LAMBDA_RUNTIME_API", &runtime_api)
            .env("AWS_LAMBDA_FUNCTION_NAME", &config.name)
            // The function's Handler setting, as Lambda passes it (its reserved
            // variables: docs.aws.amazon.com/lambda/latest/dg/configuration-envvars.html).
            .env("_HANDLER", &config.handler)
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", config.memory_mb.to_string())
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{}", config.name))
            .env("AWS_LAMBDA_LOG_STREAM_NAME", format!("local/[$LATEST]{instance}"))
            .env("AWS_REGION", &config.region)
            .env("AWS_DEFAULT_REGION", &config.region)
            .env("TZ", "UTC")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: a Ctrl-C in the terminal reaches only
            // chatctl dev, which still needs the functions for `$disconnect`.
            // A function exits by itself once its runtime API is gone.
            .process_group(0)
            .kill_on_drop(true);
        shared.polled[instance].store(false, std::sync::atomic::Ordering::SeqCst);
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(err) => {
                (shared.logs)(LogLine {
                    function: config.name.clone(),
                    instance,
                    line: format!("cannot start {}: {err}", config.binary.display()),
                });
                tokio::time::sleep(RESTART_DELAY * 10).await;
                continue;
            }
        };
        if let Some(stdout) = child.stdout.take() {
            tokio::spawn(forward_lines(stdout, shared.clone(), instance));
        }
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(forward_lines(stderr, shared.clone(), instance));
        }
        // A replacement asked for before this process started is done by starting it.
        shared.restart_requested[instance].store(false, std::sync::atomic::Ordering::SeqCst);
        shared.accepting[instance].send_replace(generation);
        let (status, replaced) = loop {
            tokio::select! {
                status = child.wait() => break (status, false),
                _ = shared.restart[instance].notified() => {
                    if shared.restart_requested[instance].swap(false, std::sync::atomic::Ordering::SeqCst) {
                        break (replace(&shared, instance, &mut child).await, true);
                    }
                }
            }
        };
        shared.accepting[instance].send_replace(0);
        if let Some(id) = shared.handled_by(instance) {
            let reason = match &status {
                Ok(status) => format!("the process exited ({status}) while handling the event"),
                Err(err) => format!("the process was lost: {err}"),
            };
            shared.answer(&id, Outcome::Crashed(reason));
        } else if !replaced && !shared.polled[instance].load(std::sync::atomic::Ordering::SeqCst) {
            let status = status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
            shared.fail_queued(&format!(
                "Runtime.ExitError: {} exited ({status}) before it asked for an event; see its log",
                config.binary.display()
            ));
        }
        tokio::time::sleep(RESTART_DELAY).await;
    }
}

/// Stops an instance's process for a replacement: it takes no new event,
/// and the one in hand (a timed-out one was already taken off it) runs to its
/// end unless the process dies first.
async fn replace(
    shared: &Shared,
    instance: usize,
    child: &mut tokio::process::Child,
) -> std::io::Result<std::process::ExitStatus> {
    {
        let _handling = shared.handling.lock().unwrap_or_else(|e| e.into_inner());
        shared.accepting[instance].send_replace(0);
    }
    let deadline = tokio::time::Instant::now() + shared.config.timeout;
    while shared.is_handling(instance) && tokio::time::Instant::now() < deadline {
        tokio::select! {
            status = child.wait() => return status,
            _ = tokio::time::sleep(Duration::from_millis(10)) => {}
        }
    }
    let _ = child.kill().await;
    child.wait().await
}

/// Sends each line a process prints to the log sink.
async fn forward_lines(stream: impl tokio::io::AsyncRead + Unpin, shared: Arc<Shared>, instance: usize) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        (shared.logs)(LogLine {
            function: shared.config.name.clone(),
            instance,
            line,
        });
    }
}

type Instance = State<(Arc<Shared>, usize)>;

/// `GET /next`: hands the instance the next event, blocking until there is one.
async fn next(State((shared, instance)): Instance) -> axum::response::Response {
    shared.polled[instance].store(true, std::sync::atomic::Ordering::SeqCst);
    let mut accepting = shared.accepting[instance].subscribe();
    let generation = *accepting.borrow_and_update();
    if generation == 0 {
        return StatusCode::GONE.into_response();
    }
    // Events nobody waits for any more (timed out in the queue, or failed
    // because the runtime could not start) are dropped, never run late.
    let invocation = loop {
        // A process being replaced stops waiting for events.
        let replaced = accepting.wait_for(|current| *current != generation);
        let next = tokio::select! {
            next = async { shared.queue.lock().await.recv().await } => next,
            _ = replaced => return StatusCode::GONE.into_response(),
        };
        let Some(invocation) = next else {
            return StatusCode::GONE.into_response();
        };
        shared.queued.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        let awaited = shared
            .waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&invocation.id);
        if !awaited {
            continue;
        }
        // Under the lock the supervisor takes to stop the instance: either
        // it sees this event in hand and waits for it, or the event goes back.
        let mut handling = shared.handling.lock().unwrap_or_else(|e| e.into_inner());
        if *shared.accepting[instance].borrow() != generation {
            drop(handling);
            shared.queued.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let _ = shared.requeue.send(invocation);
            return StatusCode::GONE.into_response();
        }
        handling.insert(instance, invocation.id.clone());
        break invocation;
    };
    // Enforce the timeout from the moment the instance takes the event.
    let watchdog = shared.clone();
    let id = invocation.id.clone();
    let timeout = shared.config.timeout;
    tokio::spawn(async move {
        tokio::time::sleep(timeout).await;
        let still_handling = watchdog
            .handling
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&instance)
            == Some(&id);
        if still_handling {
            watchdog.handled_by(instance);
            (watchdog.logs)(LogLine {
                function: watchdog.config.name.clone(),
                instance,
                line: format!("Task timed out after {:.2} seconds", timeout.as_secs_f64()),
            });
            watchdog.request_restart(instance);
            watchdog.answer(&id, Outcome::Timeout);
        }
    });
    let arn = format!(
        "arn:aws:lambda:{}:000000000000:function:{}",
        shared.config.region, shared.config.name
    );
    let mut headers = HeaderMap::new();
    let mut set = |name: &'static str, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    };
    set("lambda-runtime-aws-request-id", &invocation.id);
    // As on Lambda, the time limit counts from when an instance takes the
    // event, not from when it was queued.
    let deadline_ms = SystemTime::now()
        .checked_add(timeout)
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64);
    set("lambda-runtime-deadline-ms", &deadline_ms.to_string());
    set("lambda-runtime-invoked-function-arn", &arn);
    set("lambda-runtime-trace-id", &format!("Root=1-{}", invocation.id));
    set("content-type", "application/json");
    (StatusCode::OK, headers, invocation.event).into_response()
}

async fn response(State((shared, instance)): Instance, Path(id): Path<String>, body: Bytes) -> StatusCode {
    finish(&shared, instance, &id, Outcome::Response(body))
}

async fn error(State((shared, instance)): Instance, Path(id): Path<String>, body: Bytes) -> StatusCode {
    let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let outcome = Outcome::Error {
        error_type: parsed["errorType"].as_str().unwrap_or("Unhandled").to_string(),
        error_message: parsed["errorMessage"].as_str().unwrap_or_default().to_string(),
    };
    finish(&shared, instance, &id, outcome)
}

fn finish(shared: &Shared, instance: usize, id: &str, outcome: Outcome) -> StatusCode {
    let mut handling = shared.handling.lock().unwrap_or_else(|e| e.into_inner());
    if handling.get(&instance).map(String::as_str) == Some(id) {
        handling.remove(&instance);
    }
    drop(handling);
    // An answer after a timeout finds nobody waiting; Lambda ignores it too.
    shared.answer(id, outcome);
    StatusCode::ACCEPTED
}

async fn init_error(State((shared, instance)): Instance, body: Bytes) -> StatusCode {
    (shared.logs)(LogLine {
        function: shared.config.name.clone(),
        instance,
        line: format!("init error: {}", String::from_utf8_lossy(&body)),
    });
    StatusCode::ACCEPTED
}
