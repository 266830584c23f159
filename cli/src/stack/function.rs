//! Lambda functions: read, diff (code, architecture, configuration, tags),
//! create (through IAM's propagation), update, wait for their states, and
//! delete.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use aws_sdk_lambda::config::http::HttpResponse;
use aws_sdk_lambda::error::SdkError;
use aws_sdk_lambda::operation::create_function::CreateFunctionError;
use aws_sdk_lambda::types::{
    Architecture, Environment, FunctionCode, FunctionConfiguration, LastUpdateStatus, Runtime, State,
};
use serde::Serialize;
use serde_json::Value;

use super::base::{
    Action, Detail, Found, Kind, Polled, Report, Stack, poll, step, tag_changes, tag_detail, taken_if_ours,
};
use super::desired::{FunctionSpec, RUNTIME, RoleSpec};
use super::tags::{Tagged, retag};
use super::{Function, Names, STACK_TAG};
use crate::aws::{Aws, Budget, failed, is_code, retry, retry_error};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FunctionState {
    pub arn: String,
    /// `$LATEST`, or the number of a published version.
    pub version: Option<String>,
    pub runtime: Option<String>,
    pub handler: Option<String>,
    pub architecture: Option<String>,
    pub memory_mb: Option<i32>,
    pub timeout_seconds: Option<i32>,
    pub role_arn: Option<String>,
    pub env: BTreeMap<String, String>,
    pub code_sha256: Option<String>,
    /// Statement id → source ARN of the resource policy's statements.
    pub permissions: BTreeMap<String, String>,
    /// Every tag, the stack's included.
    pub tags: BTreeMap<String, String>,
    /// The version the alias `live` runs (and its alias's policy); None
    /// before the first release.
    pub live: Option<Box<FunctionState>>,
}

pub async fn read_function(aws: &Aws, names: &Names, function: Function) -> Result<(Function, Found<FunctionState>)> {
    let name = names.function(function);
    let alias = ALIAS;
    // $LATEST and the version the alias `live` runs, and the alias's own
    // resource policy (a qualified ARN has a policy of its own).
    let (got, live, live_policy) = tokio::join!(
        aws.lambda.get_function().function_name(&name).send(),
        aws.lambda.get_function().function_name(&name).qualifier(alias).send(),
        aws.lambda.get_policy().function_name(&name).qualifier(alias).send(),
    );
    let got = match got {
        Err(err) if is_code(&err, &["ResourceNotFoundException"]) => return Ok((function, Found::Missing)),
        other => other.map_err(failed(format!("cannot read Lambda function {name}")))?,
    };
    if let Some(error) = got.tags_error() {
        anyhow::bail!(
            "cannot read the tags of Lambda function {name} ({}): chatctl needs lambda:ListTags to tell its functions from others'",
            error.message()
        );
    }
    let tags: BTreeMap<String, String> = got.tags.clone().unwrap_or_default().into_iter().collect();
    let tag = tags.get(STACK_TAG).cloned();
    let Some(config) = got.configuration else {
        return Ok((function, Found::Missing));
    };
    let live_statements = permission_statements(&policy_text(live_policy, &format!("{name}:{alias}"))?);
    // The function-wide policy holds the permission of stacks from before
    // the alias: read only while the alias holds none (GetPolicy has a
    // quota of 15/s of its own: aws-facts.md §11).
    let statements = match live_statements.is_empty() {
        true => permission_statements(&policy_text(
            aws.lambda.get_policy().function_name(&name).send().await,
            &name,
        )?),
        false => BTreeMap::new(),
    };
    let mut state = function_state(&config, statements, tags);
    state.live = match live {
        Err(err) if is_code(&err, &["ResourceNotFoundException"]) => None,
        other => other
            .map_err(failed(format!("cannot read alias {alias} of Lambda function {name}")))?
            .configuration
            .map(|config| Box::new(function_state(&config, live_statements, BTreeMap::new()))),
    };
    Ok((function, Found::classify(&names.stack, tag.as_deref(), state)))
}

/// A resource policy's text; empty when there is none.
fn policy_text<E, R>(
    policy: Result<aws_sdk_lambda::operation::get_policy::GetPolicyOutput, SdkError<E, R>>,
    name: &str,
) -> Result<String>
where
    E: aws_sdk_lambda::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match policy {
        Err(err) if is_code(&err, &["ResourceNotFoundException"]) => Ok(String::new()),
        other => Ok(other
            .map_err(failed(format!("cannot read the resource policy of {name}")))?
            .policy
            .unwrap_or_default()),
    }
}

fn function_state(
    config: &FunctionConfiguration,
    permissions: BTreeMap<String, String>,
    tags: BTreeMap<String, String>,
) -> FunctionState {
    FunctionState {
        arn: config.function_arn().unwrap_or_default().to_string(),
        version: config.version().map(str::to_string),
        runtime: config.runtime().map(|r| r.as_str().to_string()),
        handler: config.handler().map(str::to_string),
        architecture: config.architectures().first().map(|a| a.as_str().to_string()),
        memory_mb: config.memory_size(),
        timeout_seconds: config.timeout(),
        role_arn: config.role().map(str::to_string),
        env: config
            .environment()
            .and_then(|e| e.variables())
            .map(|vars| vars.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default(),
        code_sha256: config.code_sha256().map(str::to_string),
        permissions,
        tags,
        live: None,
    }
}

/// Statement ids and their `AWS:SourceArn` conditions from a resource policy.
pub(super) fn permission_statements(policy: &str) -> BTreeMap<String, String> {
    let Ok(value) = serde_json::from_str::<Value>(policy) else {
        return BTreeMap::new();
    };
    let statements = value["Statement"].as_array().cloned().unwrap_or_default();
    statements
        .iter()
        .filter_map(|s| {
            let sid = s["Sid"].as_str()?.to_string();
            let arn = s["Condition"]["ArnLike"]["AWS:SourceArn"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            Some((sid, arn))
        })
        .collect()
}

impl Detail {
    /// Applied with UpdateFunctionCode: the code, and the architecture it is built for.
    pub fn is_function_code(&self) -> bool {
        matches!(self, Detail::Code { .. } | Detail::Architecture { .. })
    }

    /// Applied with UpdateFunctionConfiguration.
    pub fn is_function_configuration(&self) -> bool {
        matches!(self, Detail::Setting { .. } | Detail::Environment { .. })
    }
}

/// What differs in a function: code (when it is known), architecture,
/// configuration and tags.
pub fn function_changes(
    spec: &FunctionSpec,
    state: &FunctionState,
    role_arn: &str,
    tags: &BTreeMap<String, String>,
) -> Vec<Detail> {
    let mut changes = vec![];
    if let Some(code) = &spec.code
        && state.code_sha256.as_deref() != Some(code.sha256.as_str())
    {
        changes.push(Detail::Code {
            from: state.code_sha256.clone(),
            to: code.sha256.clone(),
        });
    }
    let architecture = spec.arch.as_lambda();
    if state.architecture.as_deref() != Some(architecture) {
        changes.push(Detail::Architecture {
            from: state.architecture.clone(),
            to: architecture.into(),
        });
    }
    let settings = [
        ("runtime", state.runtime.clone(), RUNTIME.to_string()),
        ("handler", state.handler.clone(), spec.function.short_name().to_string()),
        (
            "memory",
            state.memory_mb.map(|m| m.to_string()),
            spec.memory_mb.to_string(),
        ),
        (
            "timeout",
            state.timeout_seconds.map(|t| t.to_string()),
            spec.timeout_seconds.to_string(),
        ),
        ("role", state.role_arn.clone(), role_arn.to_string()),
    ];
    for (name, from, to) in settings {
        if from.as_deref() != Some(to.as_str()) {
            changes.push(Detail::Setting {
                name: name.into(),
                from,
                to,
            });
        }
    }
    if state.env != spec.env {
        let names: BTreeSet<&String> = spec
            .env
            .keys()
            .chain(state.env.keys())
            .filter(|k| spec.env.get(*k) != state.env.get(*k))
            .collect();
        changes.push(Detail::Environment {
            names: names.into_iter().cloned().collect(),
        });
    }
    changes.extend(tag_changes(&state.tags, tags));
    changes
}

/// The alias of each function that the API invokes (see `release`).
pub const ALIAS: &str = "live";

pub(super) const FUNCTION_TIMEOUT: Duration = Duration::from_secs(300);

/// How long a new IAM role may take to become usable by Lambda: 5–30 s
/// usually, rarely minutes (aws-facts.md §8). Retried at most half a second
/// apart: one probe per role (see [`RoleProbes`]) keeps that within
/// Lambda's quota.
pub(super) const ROLE_PROPAGATION: Budget = Budget {
    total: Duration::from_secs(180),
    first_delay: Duration::from_millis(100),
    max_delay: Duration::from_millis(500),
};

/// Whether Lambda can use each of the stack's roles yet, by role ARN. While
/// IAM propagates a new role, one function per role probes with
/// CreateFunction and the role's other functions wait for its success, so
/// that the retries stay within Lambda's control-plane quota of about 15
/// requests/s (aws-facts.md §10) however many functions share a role.
pub(super) struct RoleProbes(HashMap<String, tokio::sync::Mutex<bool>>);

impl RoleProbes {
    pub(super) fn new(stack: Stack<'_>, roles: &[RoleSpec]) -> RoleProbes {
        RoleProbes(
            roles
                .iter()
                .map(|role| (stack.names.role_arn(&role.name), tokio::sync::Mutex::new(false)))
                .collect(),
        )
    }
}

pub(super) async fn apply_function(
    aws: &Aws,
    stack: Stack<'_>,
    spec: &FunctionSpec,
    action: &Action,
    probes: &RoleProbes,
    report: Report<'_>,
) -> Result<()> {
    let role_arn = stack.names.role_arn(&spec.role);
    let changes = match action {
        Action::NoChange => return Ok(()),
        Action::Create => {
            create_function(aws, stack, spec, &role_arn, probes).await?;
            wait_for_function(aws, &spec.name).await?;
            step(report, Kind::Function, &spec.name, "created");
            return Ok(());
        }
        Action::Update { changes } => changes,
        other => bail!(
            "function {}: the plan asks to {} it, which chatctl cannot do here",
            other.verb(),
            spec.name
        ),
    };
    let code = changes.iter().any(Detail::is_function_code);
    let configuration = changes.iter().any(Detail::is_function_configuration);
    if code || configuration {
        wait_until_updatable(aws, &spec.name).await?;
    }
    // A token secret moving to Secrets Manager: the configuration keeps the
    // old variable until the new code runs, so that neither the old code
    // (which reads it) nor the new (which reads the secret's name) ever
    // starts without what it needs; it goes once the new code is in.
    let moving_secret = configuration && code && changes.contains(&Detail::MoveTokenSecret);
    let kept = match moving_secret {
        true => function_configuration(aws, &spec.name)
            .await?
            .environment()
            .and_then(|e| e.variables())
            .and_then(|vars| vars.get(super::desired::LEGACY_ENV))
            .map(|value| (super::desired::LEGACY_ENV, value.clone())),
        false => None,
    };
    // The configuration first: the Handler names the function for the one
    // binary, so new code never runs with an old Handler.
    if configuration {
        update_configuration(aws, spec, &role_arn, kept.clone()).await?;
    }
    if code {
        let (bucket, key) = artifact(stack, spec)?;
        aws.lambda
            .update_function_code()
            .function_name(&spec.name)
            .s3_bucket(bucket)
            .s3_key(key)
            .architectures(Architecture::from(spec.arch.as_lambda()))
            .send()
            .await
            .map_err(failed(format!("cannot update the code of {}", spec.name)))?;
        wait_for_function(aws, &spec.name).await?;
    }
    if kept.is_some() {
        update_configuration(aws, spec, &role_arn, None).await?;
    }
    if let Some((set, remove)) = tag_detail(changes) {
        let arn = stack.names.function_arn(spec.function);
        retag(aws, Tagged::Function(&arn), set, remove).await?;
    }
    let what = match (code, configuration) {
        (true, false) => "code updated",
        (false, true) => "configuration updated",
        (true, true) => "code and configuration updated",
        (false, false) => "tags updated",
    };
    step(report, Kind::Function, &spec.name, what);
    Ok(())
}

/// Sets every configuration setting as `spec` says, with `extra` in the
/// environment too, and waits until the update is done.
async fn update_configuration(
    aws: &Aws,
    spec: &FunctionSpec,
    role_arn: &str,
    extra: Option<(&str, String)>,
) -> Result<()> {
    let mut environment = environment(spec);
    if let Some((name, value)) = extra {
        let mut variables = environment.variables.take().unwrap_or_default();
        variables.insert(name.to_string(), value);
        environment.variables = Some(variables);
    }
    aws.lambda
        .update_function_configuration()
        .function_name(&spec.name)
        .role(role_arn)
        .runtime(Runtime::from(super::desired::RUNTIME))
        .handler(spec.function.short_name())
        .memory_size(spec.memory_mb)
        .timeout(spec.timeout_seconds)
        .environment(environment)
        .send()
        .await
        .map_err(failed(format!("cannot update the configuration of {}", spec.name)))?;
    wait_for_function(aws, &spec.name).await
}

pub(super) fn environment(spec: &FunctionSpec) -> Environment {
    Environment::builder()
        .set_variables(Some(spec.env.clone().into_iter().collect()))
        .build()
}

/// The built code of a function: its zip, uploaded once for all seven
/// functions into the stack's bucket (see `apply`), as bucket and key.
pub(super) fn artifact(stack: Stack<'_>, spec: &FunctionSpec) -> Result<(String, String)> {
    let code = spec
        .code
        .as_ref()
        .ok_or_else(|| anyhow!("no built code for {}; run without --no-build", spec.name))?;
    Ok((stack.names.bucket(), super::bucket::artifact_key(&code.sha256)))
}

/// Lambda's two answers while a new role propagates through IAM, both
/// `InvalidParameterValueException` (aws-facts.md §8 and §10): "The role
/// defined for the function cannot be assumed by Lambda", and for a function
/// with environment variables "Lambda was unable to configure access to your
/// environment variables because the KMS key is invalid for CreateGrant"
/// (terraform-provider-aws retries both in internal/service/lambda/function.go).
pub(super) fn is_role_propagating(err: &SdkError<CreateFunctionError, HttpResponse>) -> bool {
    match err.as_service_error() {
        Some(CreateFunctionError::InvalidParameterValueException(e)) => e.message().is_some_and(|m| {
            m.contains("cannot be assumed by Lambda") || m.contains("KMS key is invalid for CreateGrant")
        }),
        _ => false,
    }
}

/// Creates a function, retrying while its new role is not yet usable by
/// Lambda. A create whose answer was lost and that the SDK sent again gets
/// `ResourceConflictException`: the function is there, made by this create,
/// so it is taken when it carries the stack's tag.
pub(super) async fn create_function(
    aws: &Aws,
    stack: Stack<'_>,
    spec: &FunctionSpec,
    role_arn: &str,
    probes: &RoleProbes,
) -> Result<()> {
    let (bucket, key) = artifact(stack, spec)?;
    // Probe while the role is not known usable; once it is, go at once.
    let mut probe = match probes.0.get(role_arn) {
        Some(usable) => Some(usable.lock().await),
        None => None,
    };
    if probe.as_deref() == Some(&true) {
        probe = None;
    }
    let created = retry(ROLE_PROPAGATION, is_role_propagating, || {
        aws.lambda
            .create_function()
            .function_name(&spec.name)
            .runtime(Runtime::from(super::desired::RUNTIME))
            .handler(spec.function.short_name())
            .role(role_arn)
            .architectures(Architecture::from(spec.arch.as_lambda()))
            .memory_size(spec.memory_mb)
            .timeout(spec.timeout_seconds)
            .environment(environment(spec))
            .code(FunctionCode::builder().s3_bucket(&bucket).s3_key(&key).build())
            .set_tags(Some(stack.tags.clone().into_iter().collect()))
            .description(format!(
                "chatctl stack {}: {}",
                stack.names.stack,
                spec.function.short_name()
            ))
            .send()
    })
    .await;
    if created.is_ok()
        && let Some(mut usable) = probe
    {
        *usable = true;
    }
    match created {
        Ok(_) => Ok(()),
        Err((err, _))
            if matches!(
                err.as_service_error(),
                Some(CreateFunctionError::ResourceConflictException(_))
            ) =>
        {
            let (_, found) = read_function(aws, stack.names, spec.function).await?;
            taken_if_ours(&found, "Lambda function", &spec.name)
        }
        Err(failure) => Err(retry_error(
            format!("cannot create Lambda function {}", spec.name),
            ROLE_PROPAGATION,
            &format!(
                "IAM role {role_arn} is still not usable by Lambda; IAM can take minutes to propagate a new role: run `chatctl up` again"
            ),
            failure,
        )),
    }
}

/// A function's configuration and state, read with GetFunction: it has a
/// quota of its own (100 requests/s), while GetFunctionConfiguration shares
/// the control plane's 15 requests/s with every create and update
/// (aws-facts.md §10).
pub(super) async fn function_configuration(aws: &Aws, name: &str) -> Result<FunctionConfiguration> {
    aws.lambda
        .get_function()
        .function_name(name)
        .send()
        .await
        .map_err(failed(format!("cannot read Lambda function {name}")))?
        .configuration
        .with_context(|| format!("Lambda function {name}: GetFunction returned no configuration"))
}

/// Waits until a function can take an update: not Pending, no update in
/// progress (either way an update gets ResourceConflictException). A failed
/// earlier update or an Inactive function is left to the update, which is
/// what repairs it: updates are allowed on Active and Inactive functions
/// (Lambda docs, "functions-states").
pub(super) async fn wait_until_updatable(aws: &Aws, name: &str) -> Result<()> {
    poll(FUNCTION_TIMEOUT, || async {
        let config = function_configuration(aws, name).await?;
        let pending = config.state() == Some(&State::Pending);
        let updating = config.last_update_status() == Some(&LastUpdateStatus::InProgress);
        if !pending && !updating {
            return Ok(Polled::Ready(()));
        }
        Ok(Polled::Waiting(format!(
            "Lambda function {name} is still busy ({}) after {}s; an update from elsewhere may be running: wait and run `chatctl up` again",
            if pending { "Pending" } else { "update InProgress" },
            FUNCTION_TIMEOUT.as_secs()
        )))
    })
    .await
}

/// Waits until a function chatctl created or updated is usable: created →
/// `Active` (it is `Pending` first); updated → `LastUpdateStatus` no longer
/// `InProgress`. An `Inactive` function (idle for weeks) stays Inactive after
/// an update until it is invoked, so it counts as settled (Lambda docs,
/// "functions-states"). Fails with Lambda's reason when it failed.
pub async fn wait_for_function(aws: &Aws, name: &str) -> Result<()> {
    poll(FUNCTION_TIMEOUT, || async {
        let config = function_configuration(aws, name).await?;
        let (state, update) = (config.state(), config.last_update_status());
        if state == Some(&State::Failed) || update == Some(&LastUpdateStatus::Failed) {
            bail!(
                "Lambda function {name} failed: {}",
                config
                    .state_reason()
                    .or(config.last_update_status_reason())
                    .unwrap_or("no reason given")
            );
        }
        let usable = state.is_none_or(|s| matches!(s, State::Active | State::Inactive));
        let settled = update != Some(&LastUpdateStatus::InProgress);
        if usable && settled {
            return Ok(Polled::Ready(()));
        }
        Ok(Polled::Waiting(format!(
            "Lambda function {name} is still {}/{} after {}s; see it in the Lambda console, then run `chatctl up` again",
            state.map_or("-", |s| s.as_str()),
            update.map_or("-", |u| u.as_str()),
            FUNCTION_TIMEOUT.as_secs()
        )))
    })
    .await
}

/// How long a function may take to leave Pending or an update InProgress.
pub(super) const FUNCTION_SETTLING: Budget = Budget::new(std::time::Duration::from_secs(300));

/// Deletes a function. One being created or updated (an `up` killed
/// midway) refuses deletion with ResourceConflictException until it
/// settles (aws-facts.md §10, "Lambda states"); one already gone is fine.
pub(super) async fn delete_function(aws: &Aws, name: &str) -> Result<()> {
    let deleted = retry(
        FUNCTION_SETTLING,
        |err| is_code(err, &["ResourceConflictException"]),
        || aws.lambda.delete_function().function_name(name).send(),
    )
    .await;
    match deleted {
        Ok(_) => Ok(()),
        Err((err, _)) if is_code(&err, &["ResourceNotFoundException"]) => Ok(()),
        Err(failure) => Err(retry_error(
            format!("cannot delete Lambda function {name}"),
            FUNCTION_SETTLING,
            "an update of the function from elsewhere is still running; run `chatctl down` again later",
            failure,
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;
    use crate::stack::desired::Code;
    use crate::stack::scripted::{Scripted, answer, desired, ignore};

    /// The one binary dispatches on the Handler: a function whose Handler
    /// and code both change gets its configuration first, and runs the new
    /// code only once the configuration is in place; each update waits for
    /// the function to settle.
    #[tokio::test]
    async fn configuration_goes_before_code_and_each_update_is_waited_for() {
        let zip = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(zip.path(), b"zip").unwrap();
        let code = Function::ALL
            .into_iter()
            .map(|f| {
                let code = Code {
                    zip: zip.path().to_path_buf(),
                    sha256: "NEW".into(),
                };
                (f, code)
            })
            .collect();
        let desired = desired(&code);
        let spec = desired.function(Function::Join);
        let state = |state: &str, update: &str| {
            json!({"Configuration": {"FunctionName": "chat-join", "State": state, "LastUpdateStatus": update}})
                .to_string()
        };
        let path = "/2015-03-31/functions/chat-join";
        let (aws, script) = Scripted::clients(vec![
            answer("GET /2015-03-31/functions/chat-join", state("Active", "InProgress")),
            answer("GET /2015-03-31/functions/chat-join", state("Active", "Successful")),
            answer("PUT /2015-03-31/functions/chat-join/configuration", "{}"),
            answer("GET /2015-03-31/functions/chat-join", state("Active", "InProgress")),
            answer("GET /2015-03-31/functions/chat-join", state("Active", "Successful")),
            answer("PUT /2015-03-31/functions/chat-join/code", "{}"),
            answer("GET /2015-03-31/functions/chat-join", state("Active", "Successful")),
        ]);
        let action = Action::Update {
            changes: vec![
                Detail::Code {
                    from: Some("OLD".into()),
                    to: "NEW".into(),
                },
                Detail::Setting {
                    name: "handler".into(),
                    from: Some("bootstrap".into()),
                    to: "join".into(),
                },
            ],
        };
        let probes = RoleProbes::new(desired.stack(), &desired.roles);
        apply_function(&aws, desired.stack(), spec, &action, &probes, &ignore)
            .await
            .unwrap();
        assert!(script.finished(), "{:?}", script.calls());
        assert_eq!(script.json_body(2)["Handler"], "join");
        assert!(script.calls()[5].starts_with(&format!("PUT {path}/code")));
    }

    /// A token secret moving to Secrets Manager on an authorizer whose code
    /// changes too: the first configuration keeps the old variable beside the
    /// new one, the code goes in, then a second configuration drops it; so
    /// the old code and the new each find what they read.
    #[tokio::test]
    async fn a_moving_secret_stays_in_the_environment_until_the_new_code_runs() {
        let zip = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(zip.path(), b"zip").unwrap();
        let code = Function::ALL
            .into_iter()
            .map(|f| {
                (
                    f,
                    Code {
                        zip: zip.path().to_path_buf(),
                        sha256: "NEW".into(),
                    },
                )
            })
            .collect();
        let desired = desired(&code);
        let spec = desired.function(Function::Authorizer);
        let state = |update: &str| {
            json!({"Configuration": {"FunctionName": "chat-authorizer", "State": "Active", "LastUpdateStatus": update}})
                .to_string()
        };
        let legacy = json!({"Configuration": {
            "FunctionName": "chat-authorizer", "State": "Active", "LastUpdateStatus": "Successful",
            "Environment": {"Variables": {"CHAT_TOKEN_SECRET": "old-value"}}
        }});
        let function = "GET /2015-03-31/functions/chat-authorizer";
        let configuration = "PUT /2015-03-31/functions/chat-authorizer/configuration";
        let (aws, script) = Scripted::clients(vec![
            answer(function, state("Successful")),
            answer(function, legacy.to_string()),
            answer(configuration, "{}"),
            answer(function, state("Successful")),
            answer("PUT /2015-03-31/functions/chat-authorizer/code", "{}"),
            answer(function, state("Successful")),
            answer(configuration, "{}"),
            answer(function, state("Successful")),
        ]);
        let action = Action::Update {
            changes: vec![
                Detail::Code {
                    from: Some("OLD".into()),
                    to: "NEW".into(),
                },
                Detail::Environment {
                    names: vec!["CHAT_TOKEN_SECRET".into(), "CHAT_TOKEN_SECRET_ID".into()],
                },
                Detail::MoveTokenSecret,
            ],
        };
        let probes = RoleProbes::new(desired.stack(), &desired.roles);
        apply_function(&aws, desired.stack(), spec, &action, &probes, &ignore)
            .await
            .unwrap();
        assert!(script.finished(), "{:?}", script.calls());
        let first = &script.json_body(2)["Environment"]["Variables"];
        assert_eq!(first["CHAT_TOKEN_SECRET"], "old-value", "kept while the old code runs");
        assert_eq!(first["CHAT_TOKEN_SECRET_ID"], "chatctl/chat/token");
        let last = &script.json_body(6)["Environment"]["Variables"];
        assert_eq!(last.get("CHAT_TOKEN_SECRET"), None, "dropped once the new code runs");
        assert_eq!(last["CHAT_TOKEN_SECRET_ID"], "chatctl/chat/token");
    }

    /// A function that failed to update: the wait ends with Lambda's reason.
    #[tokio::test]
    async fn a_failed_update_ends_the_wait_with_lambdas_reason() {
        let (aws, _script) = Scripted::clients(vec![answer(
            "GET /2015-03-31/functions/chat-join",
            json!({"Configuration": {
                "FunctionName": "chat-join",
                "State": "Active",
                "LastUpdateStatus": "Failed",
                "LastUpdateStatusReason": "The runtime failed to start",
            }})
            .to_string(),
        )]);
        let error = wait_for_function(&aws, "chat-join").await.unwrap_err().to_string();
        assert_eq!(error, "Lambda function chat-join failed: The runtime failed to start");
    }

    /// Tags alone change with TagResource / UntagResource, never an update
    /// of the code or configuration.
    #[tokio::test]
    async fn tags_alone_are_changed_without_touching_the_function() {
        let desired = desired(&BTreeMap::new());
        let spec = desired.function(Function::Join);
        let (aws, script) = Scripted::clients(vec![
            answer("DELETE /2017-03-31/tags/", "{}"),
            answer("POST /2017-03-31/tags/", "{}"),
        ]);
        let action = Action::Update {
            changes: vec![Detail::Tags {
                set: BTreeMap::from([("team".to_string(), "chat".to_string())]),
                remove: vec!["old".into()],
            }],
        };
        let probes = RoleProbes::new(desired.stack(), &desired.roles);
        apply_function(&aws, desired.stack(), spec, &action, &probes, &ignore)
            .await
            .unwrap();
        assert!(script.finished(), "{:?}", script.calls());
    }

    #[test]
    fn permission_statements_are_read_from_the_policy() {
        let policy = r#"{"Version":"2012-10-17","Statement":[{"Sid":"chatctl-invoke","Effect":"Allow","Principal":{"Service":"apigateway.amazonaws.com"},"Action":"lambda:InvokeFunction","Resource":"arn","Condition":{"ArnLike":{"AWS:SourceArn":"arn:aws:execute-api:r:1:abc/*/$connect"}}}]}"#;
        let statements = permission_statements(policy);
        assert_eq!(statements["chatctl-invoke"], "arn:aws:execute-api:r:1:abc/*/$connect");
        assert!(permission_statements("not json").is_empty());
    }
}
