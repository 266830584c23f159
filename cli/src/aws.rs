//! The one place that builds the AWS SDK configuration (region chain,
//! profile, endpoint override, retries) and turns SDK errors into messages
//! that say what failed and what to do.

use std::fmt::Display;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

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
}

impl Aws {
    /// The account id of the credentials in use; fails clearly without credentials.
    pub async fn account_id(&self) -> Result<String> {
        let sts = aws_sdk_sts::Client::new(&self.sdk);
        let identity = sts.get_caller_identity().send().await.map_err(|err| {
            let text = DisplayErrorContext(&err).to_string();
            if text.contains("no credentials") || text.contains("NoCredentials") || text.contains("credentials provider")
            {
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

impl Aws {
    pub async fn connect(options: &AwsOptions) -> Result<Aws> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).retry_config(retry_config());
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
        let sdk = loader.load().await;
        let Some(region) = sdk.region().map(|r| r.to_string()) else {
            bail!(
                "no AWS region: pass --region, set AWS_REGION, set `region` in chatctl.toml, or configure one in your AWS profile"
            );
        };
        Ok(Aws {
            region,
            dynamodb: aws_sdk_dynamodb::Client::new(&sdk),
            iam: aws_sdk_iam::Client::new(&sdk),
            lambda: aws_sdk_lambda::Client::new(&sdk),
            apigateway: aws_sdk_apigatewayv2::Client::new(&sdk),
            logs: aws_sdk_cloudwatchlogs::Client::new(&sdk),
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
        SdkError::ServiceError(context) => context
            .err()
            .message()
            .map(str::to_string)
            .unwrap_or_else(|| DisplayErrorContext(&err).to_string()),
        _ => DisplayErrorContext(&err).to_string(),
    };
    let mut text = match &code {
        Some(code) => format!("{what}: {code}: {message}"),
        None => format!("{what}: {message}"),
    };
    if matches!(
        code.as_deref(),
        Some("AccessDenied" | "AccessDeniedException" | "UnauthorizedOperation" | "UnrecognizedClientException")
    ) {
        text.push_str(
            "\n  the credentials in use lack this permission; see the README for the IAM permissions chatctl needs",
        );
    }
    anyhow!(text)
}

/// `aws_error` as a closure for `map_err`.
pub fn failed<E, R>(what: impl Display) -> impl FnOnce(SdkError<E, R>) -> anyhow::Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    move |err| aws_error(what, err)
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
