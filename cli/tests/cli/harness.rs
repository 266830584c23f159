use std::path::{Path, PathBuf};
use std::process::Stdio;

use aws_config::SdkConfig;
use chat_testkit::aws_behaviour::{Behaviours, Timings};
use chat_testkit::aws_proxy::AwsCall;
use chat_testkit::{AwsProxy, Moto};

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn assert_ok(&self) -> &Self {
        assert_eq!(self.code, 0, "stdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }
}

/// Runs `command` to its end.
async fn run(mut command: tokio::process::Command) -> Run {
    let output = command.output().await.expect("cannot run chatctl");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs chatctl as on a machine where AWS was never configured: no AWS_*
/// variable, HOME an empty directory (no ~/.aws), no --endpoint-url.
pub async fn unconfigured(args: &[&str], home: &Path) -> Run {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_chatctl"));
    command
        .args(args)
        .current_dir(home)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .stdin(Stdio::null());
    run(command).await
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// A moto server, a recording proxy in front of it, the functions' zips in a
/// directory of the test's own, and a working directory for chatctl.toml.
pub struct Env {
    pub proxy: AwsProxy,
    pub sdk: SdkConfig,
    pub lambda_dir: tempfile::TempDir,
    pub workdir: tempfile::TempDir,
    _moto: Moto,
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

impl Env {
    /// Through the AWS behaviour layer with every behaviour on, at compressed
    /// timings: what a real account does that moto does not.
    pub async fn start() -> Env {
        Self::start_with(Behaviours::all(Timings::compressed())).await
    }

    /// Plain moto, for what does not depend on AWS's timing.
    pub async fn start_plain() -> Env {
        Self::start_with(Behaviours::none()).await
    }

    pub async fn start_with(behaviours: Behaviours) -> Env {
        let moto = Moto::start();
        let proxy = AwsProxy::start_with_behaviours(moto.endpoint(), behaviours).await;
        let sdk = moto.sdk_config().await;
        let lambda_dir = tempfile::tempdir().unwrap();
        let built = workspace_root()
            .join("target/lambda")
            .join(BINARY)
            .join("bootstrap.zip");
        assert!(
            built.exists(),
            "{} is missing: build the functions first with scripts/build-handlers",
            built.display()
        );
        std::fs::create_dir_all(lambda_dir.path().join(BINARY)).unwrap();
        std::fs::copy(&built, lambda_dir.path().join(BINARY).join("bootstrap.zip")).unwrap();
        Env {
            proxy,
            sdk,
            lambda_dir,
            workdir: tempfile::tempdir().unwrap(),
            _moto: moto,
        }
    }

    /// Runs chatctl with `args` against the proxy, stdin closed.
    pub async fn chatctl(&self, args: &[&str]) -> Run {
        self.chatctl_without(args, &self.proxy.endpoint(), &[]).await
    }

    /// Runs chatctl with `args` and these environment variables set.
    pub async fn chatctl_env(&self, args: &[&str], vars: &[(&str, &str)]) -> Run {
        let mut command = self.command(args, &self.proxy.endpoint(), &[]);
        command.envs(vars.iter().copied());
        run(command).await
    }

    /// Runs chatctl without the environment variables `unset`, against
    /// `endpoint` (an endpoint on this machine is taken for an emulator,
    /// which needs no credentials or region).
    pub async fn chatctl_without(&self, args: &[&str], endpoint: &str, unset: &[&str]) -> Run {
        run(self.command(args, endpoint, unset)).await
    }

    /// Runs chatctl with `args` against the proxy from `dir`, with the
    /// user's HOME and toolchain, and the cargo-lambda scripts/setup installs
    /// (it builds; cargo-lambda's linker wrappers live under HOME: another
    /// HOME would make cargo link everything again).
    pub async fn chatctl_in(&self, dir: &std::path::Path, args: &[&str]) -> Run {
        let mut command = self.command(args, &self.proxy.endpoint(), &[]);
        for var in ["HOME", "CARGO_HOME", "RUSTUP_HOME", "CARGO_TARGET_DIR"] {
            if let Some(value) = std::env::var_os(var) {
                command.env(var, value);
            }
        }
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut paths = vec![workspace_root().join(".venv/bin")];
        paths.extend(std::env::split_paths(&path));
        command.env("PATH", std::env::join_paths(paths).unwrap());
        command.current_dir(dir);
        run(command).await
    }

    /// Runs chatctl with its stdout a pipe whose reader is gone before
    /// chatctl writes (`chatctl … | head -c 0`); stdout is empty.
    pub async fn chatctl_into_closed_pipe(&self, args: &[&str]) -> Run {
        let mut child = self
            .command(args, &self.proxy.endpoint(), &[])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start chatctl");
        drop(child.stdout.take());
        let output = child.wait_with_output().await.expect("cannot run chatctl");
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::new(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Starts chatctl with `args` and these environment variables set,
    /// against the proxy, to be killed midway.
    pub fn spawn_env(&self, args: &[&str], vars: &[(&str, &str)]) -> tokio::process::Child {
        self.command(args, &self.proxy.endpoint(), &[])
            .envs(vars.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start chatctl")
    }

    /// Starts chatctl with `args` and these environment variables set,
    /// its stdout and stderr piped, to be read while it runs.
    pub fn spawn_piped(&self, args: &[&str], vars: &[(&str, &str)]) -> tokio::process::Child {
        self.command(args, &self.proxy.endpoint(), &[])
            .envs(vars.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start chatctl")
    }

    /// `up --no-build` with the test's zips, as [`Env::up`] runs it.
    pub fn up_args(&self) -> Vec<String> {
        let lambda_dir = self.lambda_dir.path().to_string_lossy().into_owned();
        vec!["up".into(), "--no-build".into(), "--lambda-dir".into(), lambda_dir]
    }

    fn command(&self, args: &[&str], endpoint: &str, unset: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_chatctl"));
        command
            .args(args)
            .arg("--endpoint-url")
            .arg(endpoint)
            .current_dir(self.workdir.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.workdir.path())
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", chat_testkit::moto::REGION)
            .env("AWS_CONFIG_FILE", self.workdir.path().join("no-aws-config"))
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                self.workdir.path().join("no-aws-credentials"),
            )
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .stdin(Stdio::null());
        for name in unset {
            command.env_remove(name);
        }
        command
    }

    /// `chatctl up --no-build` with the test's zips, plus `args`.
    pub async fn up(&self, args: &[&str]) -> Run {
        let up = self.up_args();
        let mut all: Vec<&str> = up.iter().map(String::as_str).collect();
        all.extend_from_slice(args);
        self.chatctl(&all).await
    }

    pub fn write_config(&self, text: &str) {
        std::fs::write(self.workdir.path().join("chatctl.toml"), text).unwrap();
    }

    /// Gives the functions new code: a zip with one more file in it.
    pub fn change_code(&self) {
        append_to_zip(&self.lambda_dir.path().join(BINARY).join("bootstrap.zip"));
    }

    /// The mutating calls, but for the writes of the stack's lock object
    /// (S3 PutObject / DeleteObject, as are the zip's upload and the releases' record)
    /// that every `up` that changes something and `down` make: tests count
    /// changes to the stack.
    pub fn mutating_calls(&self) -> Vec<AwsCall> {
        self.proxy
            .mutating_calls()
            .into_iter()
            .filter(|c| !(c.service == "s3" && matches!(c.operation.as_str(), "PutObject" | "DeleteObject")))
            .collect()
    }

    /// The mutating operations that reached AWS (moto): not those the proxy
    /// answered itself with an error, such as a conflict or a throttle; a
    /// create whose answer the layer lost did reach it.
    pub fn mutating_operations(&self) -> Vec<String> {
        let mut operations: Vec<String> = self
            .mutating_calls()
            .into_iter()
            .filter(|c| !c.faulted || c.answered_by_layer.as_deref() == Some("LostResponse"))
            .map(|c| c.operation)
            .collect();
        operations.sort();
        operations
    }

    pub fn dynamodb(&self) -> aws_sdk_dynamodb::Client {
        aws_sdk_dynamodb::Client::new(&self.sdk)
    }

    pub fn iam(&self) -> aws_sdk_iam::Client {
        aws_sdk_iam::Client::new(&self.sdk)
    }

    pub fn s3(&self) -> aws_sdk_s3::Client {
        aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&self.sdk)
                .force_path_style(true)
                .build(),
        )
    }

    /// The keys of the objects in the stack's bucket.
    pub async fn bucket_keys(&self) -> Vec<String> {
        let listed = self.s3().list_objects_v2().bucket(stack_bucket()).send().await.unwrap();
        listed
            .contents()
            .iter()
            .filter_map(|o| o.key())
            .map(str::to_string)
            .collect()
    }

    pub fn lambda(&self) -> aws_sdk_lambda::Client {
        aws_sdk_lambda::Client::new(&self.sdk)
    }

    pub fn secrets(&self) -> aws_sdk_secretsmanager::Client {
        aws_sdk_secretsmanager::Client::new(&self.sdk)
    }

    /// The stack's token secret in Secrets Manager: its current version and value.
    pub async fn token_secret(&self) -> (String, String) {
        let got = self
            .secrets()
            .get_secret_value()
            .secret_id("chatctl/chat/token")
            .send()
            .await
            .unwrap();
        (
            got.version_id().unwrap().to_string(),
            got.secret_string().unwrap().to_string(),
        )
    }

    /// The live authorizer function's environment variables.
    pub async fn authorizer_env(&self) -> std::collections::HashMap<String, String> {
        let config = self
            .lambda()
            .get_function_configuration()
            .function_name("chat-authorizer")
            .send()
            .await
            .unwrap();
        config.environment().unwrap().variables().unwrap().clone()
    }

    pub fn apigateway(&self) -> aws_sdk_apigatewayv2::Client {
        aws_sdk_apigatewayv2::Client::new(&self.sdk)
    }

    pub fn route53(&self) -> aws_sdk_route53::Client {
        aws_sdk_route53::Client::new(&self.sdk)
    }

    pub fn acm(&self) -> aws_sdk_acm::Client {
        aws_sdk_acm::Client::new(&self.sdk)
    }

    pub fn logs(&self) -> aws_sdk_cloudwatchlogs::Client {
        aws_sdk_cloudwatchlogs::Client::new(&self.sdk)
    }

    /// The resource `name` of `status --output json`, and its exit code.
    pub async fn status_of(&self, name: &str) -> (i32, serde_json::Value) {
        let status = self.chatctl(&["status", "--output", "json"]).await;
        let report: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
        let resource = report["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("status shows no {name}: {report}"))
            .clone();
        (status.code, resource)
    }

    /// The id of the API named `name`, if one exists.
    pub async fn api_id(&self, name: &str) -> Option<String> {
        let apis = self.apigateway().get_apis().send().await.unwrap();
        apis.items()
            .iter()
            .find(|a| a.name() == Some(name))
            .and_then(|a| a.api_id().map(str::to_string))
    }
}

fn append_to_zip(zip: &Path) {
    use std::io::Write;
    let file = std::fs::OpenOptions::new().read(true).write(true).open(zip).unwrap();
    let mut writer = zip::ZipWriter::new_append(file).unwrap();
    let name = format!("changed-{}.txt", ulid::Ulid::generate());
    writer
        .start_file(name, zip::write::SimpleFileOptions::default())
        .unwrap();
    writer.write_all(b"new code").unwrap();
    writer.finish().unwrap();
}

/// Every function's short name, as the product names them.
pub fn functions() -> impl Iterator<Item = &'static str> {
    chatctl::stack::Function::ALL.into_iter().map(|f| f.short_name())
}
/// The binary behind every function, zipped at <lambda dir>/chat-functions/bootstrap.zip.
pub const BINARY: &str = chatctl::build::BINARY;

/// The runtime-API loop of a function written in Python: `handle(event)`'s
/// return value is the response; an exception is the invocation's error,
/// with its text as `errorMessage`.
const PYTHON_RUNTIME_LOOP: &str = r#"
import json, os, sys, traceback, urllib.request
api = "http://" + os.environ["AWS_LAMBDA_RUNTIME_API"] + "/2018-06-01/runtime/invocation/"
while True:
    with urllib.request.urlopen(api + "next") as r:
        request_id = r.headers["Lambda-Runtime-Aws-Request-Id"]
        assert r.headers["Lambda-Runtime-Deadline-Ms"]
        event = json.loads(r.read())
    try:
        outcome, body = "response", handle(event)
    except Exception as e:
        outcome, body = "error", {"errorMessage": str(e), "errorType": type(e).__name__}
    request = urllib.request.Request(api + request_id + "/" + outcome, data=json.dumps(body).encode(), method="POST")
    urllib.request.urlopen(request)
"#;

/// A function whose code is `handler` (Python defining `handle(event)`), run
/// by the emulator's Python through the local runtime.
pub fn python_function(dir: &Path, name: &str, handler: &str) -> chatctl::dev::runtime::FunctionConfig {
    use std::os::unix::fs::PermissionsExt;
    let script = dir.join(format!("{name}.py"));
    std::fs::write(&script, format!("{handler}\n{PYTHON_RUNTIME_LOOP}")).unwrap();
    let launcher = dir.join(name);
    let python = chat_testkit::moto::python();
    std::fs::write(
        &launcher,
        format!("#!/bin/sh\nexec '{}' '{}'\n", python.display(), script.display()),
    )
    .unwrap();
    std::fs::set_permissions(&launcher, std::fs::Permissions::from_mode(0o755)).unwrap();
    chatctl::dev::runtime::FunctionConfig {
        name: name.into(),
        binary: launcher,
        handler: format!("{name}.handle"),
        memory_mb: 128,
        timeout: std::time::Duration::from_secs(5),
        env: std::collections::BTreeMap::new(),
        region: "us-east-1".into(),
        instances: 1,
        max_instances: 1,
    }
}

/// The bucket's name for stack `chat` in the test account and region.
pub fn stack_bucket() -> String {
    chatctl::stack::Names {
        stack: "chat".into(),
        stage: "dev".into(),
        region: chat_testkit::moto::REGION.into(),
        account: chat_testkit::moto::ACCOUNT_ID.into(),
    }
    .bucket()
}
