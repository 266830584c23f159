//! The one place that builds the AWS SDK configuration (region chain,
//! profile, endpoint override, retries) and turns SDK errors into messages
//! that say what failed and what to do.

use std::fmt::Display;
use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};

/// Where to find AWS: all optional, the standard chain fills the rest.
#[derive(Debug, Clone, Default)]
pub struct AwsOptions {
    pub region: Option<String>,
    pub profile: Option<String>,
    pub endpoint_url: Option<String>,
    /// Fixed credentials, for a local emulator that accepts any.
    pub static_credentials: bool,
}

/// Credentials for the local emulator, which accepts any.
pub const LOCAL_ACCESS_KEY: &str = "chatctl-dev";
/// The region of a local emulator when none is given.
pub const LOCAL_REGION: &str = "us-east-1";

/// Whether `url` is on this machine (127.0.0.1, ::1, localhost): for an
/// endpoint, a local emulator, which accepts any credentials.
pub fn is_local_endpoint(url: &str) -> bool {
    let host = url
        .parse::<axum::http::Uri>()
        .ok()
        .and_then(|uri| uri.host().map(|h| h.trim_matches(['[', ']']).to_ascii_lowercase()));
    match host.as_deref() {
        Some("localhost") => true,
        Some(host) => host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

/// The region a local emulator is used in: the flag or chatctl.toml, else
/// AWS_REGION or AWS_DEFAULT_REGION, else us-east-1 (never a profile lookup).
pub fn local_region(configured: Option<String>) -> String {
    configured
        .or_else(|| {
            ["AWS_REGION", "AWS_DEFAULT_REGION"]
                .into_iter()
                .find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
        })
        .unwrap_or_else(|| LOCAL_REGION.to_string())
}

/// The SDK clients chatctl uses, built once per command.
#[derive(Clone, Debug)]
pub struct Aws {
    pub sdk: SdkConfig,
    pub region: String,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub iam: aws_sdk_iam::Client,
    pub lambda: aws_sdk_lambda::Client,
    pub apigateway: aws_sdk_apigatewayv2::Client,
    pub logs: aws_sdk_cloudwatchlogs::Client,
    pub cloudwatch: aws_sdk_cloudwatch::Client,
    pub secrets: aws_sdk_secretsmanager::Client,
    pub sns: aws_sdk_sns::Client,
    pub s3: aws_sdk_s3::Client,
    pub acm: aws_sdk_acm::Client,
    pub route53: aws_sdk_route53::Client,
}

impl Aws {
    /// The account id of the credentials in use; fails clearly without credentials.
    pub async fn account_id(&self) -> Result<String> {
        let sts = aws_sdk_sts::Client::new(&self.sdk);
        let identity = sts.get_caller_identity().send().await.map_err(|err| {
            // The credentials chain's own error type, somewhere in the chain of sources.
            let no_credentials = std::iter::successors(Some(&err as &(dyn std::error::Error + 'static)), |e| e.source())
                .any(|e| e.downcast_ref::<CredentialsError>().is_some());
            if no_credentials {
                anyhow!(
                    "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, run `aws sso login`, or pass --profile"
                )
            } else {
                aws_error("cannot check the AWS credentials (sts:GetCallerIdentity)", err)
            }
        })?;
        identity.account.context("sts:GetCallerIdentity returned no account id")
    }
}

/// Throttling and 5xx are retried by the SDK's standard mode; more attempts
/// and longer backoff than its default suit a provisioning tool.
fn retry_config() -> RetryConfig {
    RetryConfig::standard()
        .with_max_attempts(8)
        .with_initial_backoff(Duration::from_millis(200))
        .with_max_backoff(Duration::from_secs(10))
}

/// A call that hangs is given up and retried (or, for a create that must not
/// be resent blindly, looked for) instead of blocking `up` for ever. Long
/// enough for CreateFunction to upload a zip over a slow link.
fn timeout_config() -> aws_config::timeout::TimeoutConfig {
    aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(10))
        .operation_attempt_timeout(Duration::from_secs(120))
        .build()
}

impl Aws {
    pub async fn connect(options: &AwsOptions) -> Result<Aws> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(retry_config())
            .timeout_config(timeout_config());
        if let Some(profile) = &options.profile {
            loader = loader.profile_name(profile);
        }
        if let Some(region) = &options.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(url) = &options.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        if options.static_credentials {
            loader = loader.credentials_provider(aws_sdk_sts::config::Credentials::new(
                LOCAL_ACCESS_KEY,
                LOCAL_ACCESS_KEY,
                None,
                None,
                "chatctl-dev",
            ));
        }
        Aws::from_sdk(loader.load().await)
    }

    /// The clients of one SDK configuration.
    pub fn from_sdk(sdk: SdkConfig) -> Result<Aws> {
        let Some(region) = sdk.region().map(|r| r.to_string()) else {
            bail!(
                "no AWS region: pass --region, set `region` in chatctl.toml, set AWS_REGION, or configure one in your AWS profile"
            );
        };
        Ok(Aws {
            region,
            dynamodb: aws_sdk_dynamodb::Client::new(&sdk),
            iam: aws_sdk_iam::Client::new(&sdk),
            lambda: aws_sdk_lambda::Client::new(&sdk),
            apigateway: aws_sdk_apigatewayv2::Client::new(&sdk),
            logs: aws_sdk_cloudwatchlogs::Client::new(&sdk),
            cloudwatch: aws_sdk_cloudwatch::Client::new(&sdk),
            secrets: aws_sdk_secretsmanager::Client::new(&sdk),
            sns: aws_sdk_sns::Client::new(&sdk),
            acm: aws_sdk_acm::Client::new(&sdk),
            route53: aws_sdk_route53::Client::new(&sdk),
            // An emulator on an address answers path-style requests only
            // (no bucket.host names to resolve).
            s3: aws_sdk_s3::Client::from_conf(
                aws_sdk_s3::config::Builder::from(&sdk)
                    .force_path_style(sdk.endpoint_url().is_some())
                    .build(),
            ),
            sdk,
        })
    }
}

/// The service's error code, when AWS answered with one.
pub fn error_code<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> Option<&str> {
    match err {
        SdkError::ServiceError(context) => context.err().code(),
        _ => None,
    }
}

pub fn is_code<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>, codes: &[&str]) -> bool {
    error_code(err).is_some_and(|code| codes.contains(&code))
}

/// `what` failed: the AWS message, and for access denied, what to do.
pub fn aws_error<E, R>(what: impl Display, err: SdkError<E, R>) -> anyhow::Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let code = error_code(&err).map(str::to_string);
    let message = match &err {
        SdkError::ServiceError(context) => match context.err().message() {
            Some(message) => message.to_string(),
            // Without a code either: the error's own words.
            None if code.is_none() => error_chain(&err),
            None => String::new(),
        },
        _ => no_answer(&err).unwrap_or_else(|| error_chain(&err)),
    };
    anyhow::Error::new(AwsError {
        what: what.to_string(),
        code,
        message,
        gave_up: None,
    })
}

/// An AWS call that failed, as chatctl says it: what it was doing, AWS's
/// error code and message. Kept typed inside the `anyhow` chain, so a caller
/// decides on the code (`AwsError::of`), never on the printed text.
#[derive(Debug, thiserror::Error)]
pub struct AwsError {
    pub what: String,
    pub code: Option<String>,
    pub message: String,
    /// Why chatctl stopped retrying, and what to do.
    pub gave_up: Option<String>,
}

impl AwsError {
    /// The AWS error in `error`'s chain, if there is one.
    pub fn of(error: &anyhow::Error) -> Option<&AwsError> {
        error.chain().find_map(|e| e.downcast_ref::<AwsError>())
    }
}

impl Display for AwsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.code, self.message.as_str()) {
            (Some(code), "") => write!(f, "{}: {code}", self.what)?,
            (Some(code), message) => write!(f, "{}: {code}: {message}", self.what)?,
            (None, message) => write!(f, "{}: {message}", self.what)?,
        }
        if matches!(
            self.code.as_deref(),
            Some("AccessDenied" | "AccessDeniedException" | "UnauthorizedOperation" | "UnrecognizedClientException")
        ) {
            f.write_str(
                "\n  the credentials in use lack this permission; see the README for the IAM permissions chatctl needs",
            )?;
        }
        if let Some(gave_up) = &self.gave_up {
            write!(f, "\n  {gave_up}")?;
        }
        Ok(())
    }
}

/// Why a call got no answer from the service, when it got none: it could
/// not connect (what the operating system said: "connection refused", the
/// name lookup's failure, …) or no answer came in time. `None` for an
/// answer, error or not. From the SDK's typed variants; the wording is the
/// innermost I/O error's, never the SDK's Debug text.
pub fn no_answer<E, R>(err: &SdkError<E, R>) -> Option<String>
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    match err {
        SdkError::DispatchFailure(failure) => {
            let io = sources(err).filter_map(|e| e.downcast_ref::<std::io::Error>()).last();
            Some(match (io, failure.as_connector_error()) {
                (Some(io), _) => io_reason(io),
                (None, Some(connector)) if connector.is_timeout() => "no connection within the connect timeout".into(),
                (None, _) => error_chain(err),
            })
        }
        SdkError::TimeoutError(_) => Some("no answer within the call's timeout".into()),
        _ => None,
    }
}

/// An I/O error in words, lowercase for the middle of a sentence.
fn io_reason(io: &std::io::Error) -> String {
    use std::io::ErrorKind;
    match io.kind() {
        ErrorKind::ConnectionRefused => "connection refused".into(),
        ErrorKind::ConnectionReset => "the connection was reset".into(),
        ErrorKind::TimedOut => "the connection timed out".into(),
        ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable => "no route to the host".into(),
        _ => {
            let text = io.to_string();
            let mut chars = text.chars();
            match chars.next() {
                Some(first) => first.to_lowercase().chain(chars).collect(),
                None => format!("{:?}", io.kind()).to_lowercase(),
            }
        }
    }
}

/// An error and its sources, outermost first.
fn sources<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(err), |e| e.source())
}

/// An error and its sources' Display text, joined by ": ", a part that
/// repeats the previous one left out (no Debug text, unlike the SDK's
/// `DisplayErrorContext`).
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    use aws_sdk_dynamodb::error::ErrorMetadata;
    let mut parts: Vec<String> = vec![];
    // The metadata under an unmodelled service error displays as a struct
    // (`Error { code: …, message: … }`): its message, if any, instead.
    let readable = sources(err).filter_map(|e| match e.downcast_ref::<ErrorMetadata>() {
        Some(meta) => meta.message().map(str::to_string),
        None => Some(e.to_string()),
    });
    for part in readable {
        if !parts.last().is_some_and(|last| last.contains(&part)) {
            parts.push(part);
        }
    }
    parts.join(": ")
}

/// `aws_error` as a closure for `map_err`.
pub fn failed<E, R>(what: impl Display) -> impl FnOnce(SdkError<E, R>) -> anyhow::Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    move |err| aws_error(what, err)
}

/// How long and how often to retry one AWS condition. Delays double from
/// `first_delay` up to `max_delay`: at most a second, so that a wait is
/// never overshot by more than that.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub total: Duration,
    pub first_delay: Duration,
    pub max_delay: Duration,
}

impl Budget {
    pub const fn new(total: Duration) -> Budget {
        Budget {
            total,
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
        }
    }
}

/// A call retried while `retryable` says so, until the budget is spent.
/// `Err((err, spent))`: the last error, and whether it outlasted the budget.
pub async fn retry<T, E, F, Fut>(
    budget: Budget,
    retryable: impl Fn(&E) -> bool,
    mut call: F,
) -> std::result::Result<T, (E, bool)>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = std::result::Result<T, E>>,
{
    let started = Instant::now();
    let mut delay = budget.first_delay;
    loop {
        match call().await {
            Ok(value) => return Ok(value),
            Err(err) if !retryable(&err) => return Err((err, false)),
            Err(err) if started.elapsed() + delay > budget.total => return Err((err, true)),
            Err(_) => {
                tokio::time::sleep(jitter(delay)).await;
                delay = (delay * 2).min(budget.max_delay);
            }
        }
    }
}

/// Between half and all of `delay`, so that concurrent retries spread out.
pub fn jitter(delay: Duration) -> Duration {
    delay.mul_f64(0.5 + rand::random::<f64>() / 2.0)
}

/// [`aws_error`] for the outcome of [`retry`]: past the budget, it says how
/// long chatctl tried and what to do.
pub fn retry_error<E, R>(
    what: impl Display,
    budget: Budget,
    todo: &str,
    (err, spent): (SdkError<E, R>, bool),
) -> anyhow::Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let mut error = aws_error(what, err);
    if spent && let Some(aws) = error.downcast_mut::<AwsError>() {
        aws.gave_up = Some(format!(
            "still failing after {}s of retries: {todo}",
            budget.total.as_secs()
        ));
    }
    error
}

/// API Gateway's answer to concurrent writes to one API: `409
/// ConflictException` ("concurrent modification"), which the SDK does not
/// retry (aws-facts.md §10; terraform-provider-aws #18018, #37897).
pub fn is_api_conflict<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> bool {
    is_code(err, &["ConflictException"])
}

/// Whether a failed create may have happened all the same: its answer was
/// lost (timeout, connection, 5xx). A create that cannot be retried safely
/// looks for what it made before trying again (aws-facts.md §10, "lost
/// responses").
pub fn may_have_happened<E>(err: &SdkError<E, HttpResponse>) -> bool {
    match err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => true,
        SdkError::ServiceError(context) => context.raw().status().is_server_error(),
        _ => false,
    }
}

/// Whether AWS refused a call for now, without doing it: a conflict with
/// another write, or a throttle (429 and the throttling codes).
pub fn refused_for_now<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> bool {
    let throttled = matches!(err, SdkError::ServiceError(context) if context.raw().status().as_u16() == 429);
    throttled || is_api_conflict(err) || is_code(err, &["ThrottlingException", "TooManyRequestsException"])
}

/// IAM returns policy documents URL-encoded.
pub fn decode_policy(text: &str) -> Result<serde_json::Value> {
    let decoded = if text.trim_start().starts_with('{') {
        text.to_string()
    } else {
        percent_encoding::percent_decode_str(text)
            .decode_utf8()
            .context("policy document is not valid UTF-8")?
            .into_owned()
    };
    serde_json::from_str(&decoded).context("policy document is not JSON")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHORT: Budget = Budget {
        total: Duration::from_millis(200),
        first_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(40),
    };

    #[tokio::test]
    async fn retry_stops_at_success_at_a_final_error_or_past_its_budget() {
        let calls = std::sync::atomic::AtomicU32::new(0);
        let count = || calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        let third_time_lucky = retry(
            SHORT,
            |e: &&str| *e == "busy",
            || async { if count() < 3 { Err("busy") } else { Ok("done") } },
        )
        .await;
        assert_eq!(third_time_lucky, Ok("done"));

        let final_error = retry(SHORT, |e: &&str| *e == "busy", || async { Err::<(), _>("denied") }).await;
        assert_eq!(final_error, Err(("denied", false)));

        let started = Instant::now();
        let spent = retry(SHORT, |e: &&str| *e == "busy", || async { Err::<(), _>("busy") }).await;
        assert_eq!(spent, Err(("busy", true)));
        assert!(
            started.elapsed() <= SHORT.total + Duration::from_millis(100),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn sdk_errors_read_as_sentences_without_debug_text() {
        use aws_sdk_dynamodb::error::ErrorMetadata;
        use aws_sdk_dynamodb::operation::get_item::GetItemError;

        let response = || {
            aws_smithy_runtime_api::http::Response::new(
                aws_smithy_runtime_api::http::StatusCode::try_from(400).unwrap(),
                aws_smithy_types::body::SdkBody::empty(),
            )
        };
        let unmodelled = |meta: ErrorMetadata| SdkError::service_error(GetItemError::generic(meta), response());
        let denied = unmodelled(
            ErrorMetadata::builder()
                .code("AccessDeniedException")
                .message("not allowed")
                .build(),
        );
        assert_eq!(
            aws_error("cannot read", denied).to_string().lines().next(),
            Some("cannot read: AccessDeniedException: not allowed")
        );
        let no_message = unmodelled(ErrorMetadata::builder().code("Busy").build());
        assert_eq!(aws_error("cannot read", no_message).to_string(), "cannot read: Busy");

        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused (os error 111)");
        let dispatch: SdkError<GetItemError, HttpResponse> = SdkError::dispatch_failure(
            aws_smithy_runtime_api::client::result::ConnectorError::io(Box::new(refused)),
        );
        assert_eq!(no_answer(&dispatch).as_deref(), Some("connection refused"));
        assert_eq!(
            aws_error("cannot read", dispatch).to_string(),
            "cannot read: connection refused"
        );
    }

    #[test]
    fn local_endpoints_are_told_from_remote_ones() {
        for url in [
            "http://127.0.0.1:4566",
            "http://localhost:5000/",
            "http://[::1]:80",
            "http://127.0.0.2",
        ] {
            assert!(is_local_endpoint(url), "{url}");
        }
        for url in [
            "https://dynamodb.eu-west-1.amazonaws.com",
            "http://10.0.0.5:4566",
            "not a url",
            "",
        ] {
            assert!(!is_local_endpoint(url), "{url}");
        }
    }
}
