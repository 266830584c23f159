//! Applies a plan: creates and updates what differs, in dependency order,
//! with independent steps running concurrently, and waits until every
//! resource is usable.
//!
//! Order (each arrow a real dependency): role → function → integration →
//! route → deployment. Tables, log groups and the API run beside the roles.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use aws_sdk_apigatewayv2::types::{AuthorizationType, AuthorizerType, IntegrationType, ProtocolType};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType, TableDescription, TableStatus, TimeToLiveSpecification, TimeToLiveStatus,
};
use aws_sdk_lambda::config::http::HttpResponse;
use aws_sdk_lambda::error::SdkError;
use aws_sdk_lambda::operation::create_function::CreateFunctionError;
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::{
    Architecture, Environment, FunctionCode, FunctionConfiguration, LastUpdateStatus, Runtime, State,
};
use futures::future::try_join_all;

use super::Function;
use super::actual::{Actual, ApiState, Found};
use super::api_writes::{ApiWrites, sent_once};
use super::desired::{Desired, FunctionSpec, POLICY_NAME, ROUTE_SELECTION_EXPRESSION, RoleSpec, TableSpec};
use super::plan::{
    self, Action, PERMISSION_ID, RouteTarget, deployment_description, function_diff, permission_source_arn,
    role_action, route_diff, table_action,
};
use crate::aws::{Aws, Budget, failed, is_code, retry, retry_error};

/// How often a state is polled while waiting for it: short enough that a
/// wait ends at most this much after its cause; seven functions polled this
/// often make 28 GetFunction calls a second, within its quota of 100/s
/// (aws-facts.md §10, "Lambda control-plane quota").
const POLL_INTERVAL: Duration = Duration::from_millis(250);
const TABLE_TIMEOUT: Duration = Duration::from_secs(600);
const FUNCTION_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a role that IAM says exists may take to be readable.
const ROLE_READ: Duration = Duration::from_secs(10);

/// How long a new IAM role may take to become usable by Lambda: 5–30 s
/// usually, rarely minutes (aws-facts.md §8). Retried at most half a second
/// apart: one probe per role (see [`RoleProbes`]) keeps that within
/// Lambda's quota.
const ROLE_PROPAGATION: Budget = Budget {
    total: Duration::from_secs(180),
    first_delay: Duration::from_millis(100),
    max_delay: Duration::from_millis(500),
};

/// Whether Lambda can use each of the stack's roles yet, by role ARN. While
/// IAM propagates a new role, one function per role probes with
/// CreateFunction and the role's other functions wait for its success, so
/// that the retries stay within Lambda's control-plane quota of about 15
/// requests/s (aws-facts.md §10) however many functions share a role.
struct RoleProbes(HashMap<String, tokio::sync::Mutex<bool>>);

impl RoleProbes {
    fn new(desired: &Desired) -> RoleProbes {
        RoleProbes(
            desired
                .roles
                .iter()
                .map(|role| (desired.names.role_arn(&role.name), tokio::sync::Mutex::new(false)))
                .collect(),
        )
    }
}

/// A resource that "already exists" when chatctl created it (the answer to
/// its create was lost and the SDK sent it again, aws-facts.md §10): taken
/// when it carries the stack's tag, else it is someone else's.
fn taken_if_ours<T>(found: &Found<T>, kind: &str, name: &str) -> Result<()> {
    match found {
        Found::Ours(_) => Ok(()),
        _ => bail!("{kind} {name} was created meanwhile by someone else; chatctl leaves it alone"),
    }
}

/// One finished step, for progress output.
#[derive(Debug, Clone)]
pub struct Step {
    pub kind: &'static str,
    pub name: String,
    pub done: String,
}

pub type Report<'a> = &'a (dyn Fn(Step) + Sync);

fn step(report: Report, kind: &'static str, name: &str, done: impl Into<String>) {
    report(Step {
        kind,
        name: name.to_string(),
        done: done.into(),
    });
}

/// Brings the stack to `desired`; returns the API id.
pub async fn apply(aws: &Aws, desired: &Desired, actual: &Actual, report: Report<'_>) -> Result<String> {
    let tables = try_join_all(desired.tables.iter().map(|spec| {
        let state = actual.tables.get(&spec.name).and_then(|t| t.ours());
        apply_table(aws, desired, spec, state, report)
    }));
    let log_groups = try_join_all(desired.log_groups.iter().map(|spec| {
        let state = actual.log_groups.get(&spec.function).and_then(|l| l.ours());
        async move {
            match plan::log_group_action(spec, state) {
                Action::NoChange => Ok::<_, anyhow::Error>(()),
                Action::Create => {
                    let created = aws
                        .logs
                        .create_log_group()
                        .log_group_name(&spec.name)
                        .set_tags(Some(desired.tags.clone().into_iter().collect()))
                        .send()
                        .await;
                    match created {
                        // A function invoked before `up` finished may have made it already.
                        Err(err) if is_code(&err, &["ResourceAlreadyExistsException"]) => {
                            adopt_log_group(aws, desired, spec).await?
                        }
                        other => {
                            other.map_err(failed(format!("cannot create log group {}", spec.name)))?;
                        }
                    }
                    set_retention(aws, &spec.name, spec.retention_days).await?;
                    step(report, "log group", &spec.name, "created");
                    Ok(())
                }
                _ => {
                    set_retention(aws, &spec.name, spec.retention_days).await?;
                    step(report, "log group", &spec.name, "updated");
                    Ok(())
                }
            }
        }
    }));
    let writes = &ApiWrites::default();
    let probes = &RoleProbes::new(desired);
    let compute = async {
        let (_, api_id) = tokio::try_join!(
            try_join_all(desired.roles.iter().map(|spec| {
                let state = actual.roles.get(&spec.name).and_then(|r| r.ours());
                create_role(aws, desired, spec, state.is_none(), report)
            })),
            ensure_api(aws, desired, actual.api.ours(), writes, report),
        )?;
        // An integration needs only its function's ARN, known from the name:
        // the API's parts are written while the functions are created and
        // wait for their role and Active state; only the permissions, which
        // name the authorizer's id, wait for both.
        let (_, _, authorizer_id) = tokio::try_join!(
            try_join_all(desired.roles.iter().map(|spec| {
                let state = actual.roles.get(&spec.name).and_then(|r| r.ours());
                put_role_policy(aws, desired, spec, state, &api_id, report)
            })),
            try_join_all(desired.functions.iter().map(|spec| {
                let state = actual.functions.get(&spec.function).and_then(|f| f.ours());
                apply_function(aws, desired, spec, state, probes, report)
            })),
            async {
                let existing = actual.api.ours().filter(|a| a.id == api_id);
                ensure_stage(aws, desired, existing, &api_id, writes, report).await?;
                apply_api_parts(aws, desired, actual, &api_id, writes, report).await
            },
        )?;
        grant_permissions(aws, desired, actual, &api_id, &authorizer_id, report).await?;
        Ok::<_, anyhow::Error>(api_id)
    };
    let (tables, log_groups, api_id) = tokio::join!(tables, log_groups, compute);
    tables?;
    log_groups?;
    api_id
}

/// A log group that appeared between read and apply is taken over only if
/// it is this stack's already; anyone else's is a conflict.
async fn adopt_log_group(aws: &Aws, desired: &Desired, spec: &super::desired::LogGroupSpec) -> Result<()> {
    let arn = desired.names.log_group_arn(spec.function);
    let tags = aws
        .logs
        .list_tags_for_resource()
        .resource_arn(&arn)
        .send()
        .await
        .map_err(failed(format!("cannot read the tags of log group {}", spec.name)))?;
    let owner = tags.tags().and_then(|t| t.get(super::STACK_TAG));
    if owner != Some(&desired.names.stack) {
        bail!(
            "log group {} was created meanwhile by someone else; chatctl leaves it alone",
            spec.name
        );
    }
    aws.logs
        .tag_resource()
        .resource_arn(desired.names.log_group_arn(spec.function))
        .set_tags(Some(desired.tags.clone().into_iter().collect()))
        .send()
        .await
        .map_err(failed(format!("cannot tag log group {}", spec.name)))?;
    Ok(())
}

async fn set_retention(aws: &Aws, name: &str, days: i32) -> Result<()> {
    aws.logs
        .put_retention_policy()
        .log_group_name(name)
        .retention_in_days(days)
        .send()
        .await
        .map_err(failed(format!("cannot set the retention of log group {name}")))?;
    Ok(())
}

fn key(name: &str, key_type: KeyType) -> Result<KeySchemaElement> {
    Ok(KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(key_type)
        .build()?)
}

async fn apply_table(
    aws: &Aws,
    desired: &Desired,
    spec: &TableSpec,
    state: Option<&super::actual::TableState>,
    report: Report<'_>,
) -> Result<()> {
    let action = table_action(spec, state);
    match &action {
        Action::NoChange => {
            if state.is_some_and(|s| s.status != "ACTIVE") {
                wait_for_table(aws, &spec.name).await?;
            }
            return Ok(());
        }
        Action::Replace { .. } => {
            delete_table_and_wait(aws, &spec.name).await?;
            create_table(aws, desired, spec).await?;
        }
        Action::Create => create_table(aws, desired, spec).await?,
        Action::Update { changes } => {
            if changes.iter().any(|c| c.starts_with("billing")) {
                wait_for_table(aws, &spec.name).await?;
                aws.dynamodb
                    .update_table()
                    .table_name(&spec.name)
                    .billing_mode(BillingMode::PayPerRequest)
                    .send()
                    .await
                    .map_err(failed(format!("cannot update DynamoDB table {}", spec.name)))?;
            }
        }
        Action::Delete => {}
    }
    wait_for_table(aws, &spec.name).await?;
    if state.is_none_or(|s| s.ttl_attribute.as_deref() != Some(spec.ttl_attribute.as_str()))
        || matches!(action, Action::Replace { .. })
    {
        enable_ttl(aws, spec).await?;
    }
    let done = match action {
        Action::Create => "created",
        Action::Replace { .. } => "replaced",
        _ => "updated",
    };
    step(report, "table", &spec.name, done);
    Ok(())
}

async fn create_table(aws: &Aws, desired: &Desired, spec: &TableSpec) -> Result<()> {
    let attribute = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
    };
    let mut request = aws
        .dynamodb
        .create_table()
        .table_name(&spec.name)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key(&spec.partition_key, KeyType::Hash)?)
        .attribute_definitions(attribute(&spec.partition_key)?);
    if let Some(sort_key) = &spec.sort_key {
        request = request
            .key_schema(key(sort_key, KeyType::Range)?)
            .attribute_definitions(attribute(sort_key)?);
    }
    for (index, index_key) in &spec.indexes {
        request = request
            .attribute_definitions(attribute(index_key)?)
            .global_secondary_indexes(
                GlobalSecondaryIndex::builder()
                    .index_name(index)
                    .key_schema(key(index_key, KeyType::Hash)?)
                    .projection(Projection::builder().projection_type(ProjectionType::KeysOnly).build())
                    .build()?,
            );
    }
    for (k, v) in &desired.tags {
        request = request.tags(aws_sdk_dynamodb::types::Tag::builder().key(k).value(v).build()?);
    }
    match request.send().await {
        Ok(_) => Ok(()),
        // The answer to an earlier attempt was lost and the SDK sent it again
        // (aws-facts.md §10, "lost responses"): the table is there.
        Err(err) if is_code(&err, &["ResourceInUseException"]) => {
            let (_, found) = super::actual::read_table(aws, &desired.names, &spec.name).await?;
            taken_if_ours(&found, "DynamoDB table", &spec.name)
        }
        Err(err) => Err(crate::aws::aws_error(
            format!("cannot create DynamoDB table {}", spec.name),
            err,
        )),
    }
}

async fn enable_ttl(aws: &Aws, spec: &TableSpec) -> Result<()> {
    let result = aws
        .dynamodb
        .update_time_to_live()
        .table_name(&spec.name)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .attribute_name(&spec.ttl_attribute)
                .enabled(true)
                .build()?,
        )
        .send()
        .await;
    let err = match result {
        Ok(_) => return Ok(()),
        Err(err) if is_code(&err, &["ValidationException"]) => err,
        Err(err) => {
            return Err(crate::aws::aws_error(
                format!("cannot enable TTL on DynamoDB table {}", spec.name),
                err,
            ));
        }
    };
    // Enabling takes up to an hour, and a second change within it is refused
    // with ValidationException (aws-facts.md §10, "DynamoDB TTL"): done when
    // TTL is already on, or being turned on, for the attribute wanted.
    let described = aws
        .dynamodb
        .describe_time_to_live()
        .table_name(&spec.name)
        .send()
        .await
        .map_err(failed(format!("cannot read the TTL of DynamoDB table {}", spec.name)))?;
    let ttl = described.time_to_live_description();
    let on = matches!(
        ttl.and_then(|d| d.time_to_live_status()),
        Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)
    );
    if on && ttl.and_then(|d| d.attribute_name()) == Some(spec.ttl_attribute.as_str()) {
        return Ok(());
    }
    Err(crate::aws::aws_error(
        format!(
            "cannot enable TTL on DynamoDB table {} (DynamoDB takes one TTL change per hour; run `chatctl up` again later)",
            spec.name
        ),
        err,
    ))
}

/// Waits until a table is ACTIVE: a new one is CREATING for seconds, longer
/// with indexes, and takes no TTL or update meanwhile (aws-facts.md §8, §10).
pub async fn wait_for_table(aws: &Aws, name: &str) -> Result<TableDescription> {
    let started = Instant::now();
    loop {
        let described = aws
            .dynamodb
            .describe_table()
            .table_name(name)
            .send()
            .await
            .map_err(failed(format!("cannot read DynamoDB table {name}")))?;
        let table = described
            .table
            .with_context(|| format!("DynamoDB table {name}: DescribeTable returned no table"))?;
        match table.table_status() {
            Some(TableStatus::Active) => return Ok(table),
            Some(TableStatus::Deleting) => bail!("DynamoDB table {name} is being deleted; run the command again"),
            _ => {}
        }
        if started.elapsed() > TABLE_TIMEOUT {
            bail!(
                "DynamoDB table {name} is still {} after {}s; see it in the DynamoDB console, then run the command again",
                table.table_status().map(|s| s.as_str()).unwrap_or("-"),
                TABLE_TIMEOUT.as_secs()
            );
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Waits until a deleted table is gone (DescribeTable says it is not found).
pub async fn wait_until_table_gone(aws: &Aws, name: &str) -> Result<()> {
    let started = Instant::now();
    loop {
        match aws.dynamodb.describe_table().table_name(name).send().await {
            Err(err) if is_code(&err, &["ResourceNotFoundException"]) => return Ok(()),
            Err(err) => return Err(crate::aws::aws_error(format!("cannot read DynamoDB table {name}"), err)),
            Ok(_) if started.elapsed() > TABLE_TIMEOUT => bail!(
                "DynamoDB table {name} is still being deleted after {}s; run the command again later",
                TABLE_TIMEOUT.as_secs()
            ),
            Ok(_) => tokio::time::sleep(POLL_INTERVAL).await,
        }
    }
}

/// Deletes a table once it takes a deletion (not while CREATING or
/// UPDATING: ResourceInUseException) and waits until it is gone.
pub async fn delete_table_and_wait(aws: &Aws, name: &str) -> Result<()> {
    let status = match aws.dynamodb.describe_table().table_name(name).send().await {
        Err(err) if is_code(&err, &["ResourceNotFoundException"]) => return Ok(()),
        other => other
            .map_err(failed(format!("cannot read DynamoDB table {name}")))?
            .table
            .and_then(|t| t.table_status),
    };
    if status != Some(TableStatus::Deleting) {
        wait_for_table(aws, name).await?;
        match aws.dynamodb.delete_table().table_name(name).send().await {
            Ok(_) => {}
            Err(err) if is_code(&err, &["ResourceNotFoundException"]) => return Ok(()),
            Err(err) => {
                return Err(crate::aws::aws_error(
                    format!("cannot delete DynamoDB table {name}"),
                    err,
                ));
            }
        }
    }
    wait_until_table_gone(aws, name).await
}

async fn create_role(aws: &Aws, desired: &Desired, spec: &RoleSpec, missing: bool, report: Report<'_>) -> Result<()> {
    if !missing {
        return Ok(());
    }
    let mut request = aws
        .iam
        .create_role()
        .role_name(&spec.name)
        .assume_role_policy_document(super::desired::trust_policy().to_string())
        .description(format!("chatctl stack {}", desired.names.stack));
    for (k, v) in &desired.tags {
        request = request.tags(aws_sdk_iam::types::Tag::builder().key(k).value(v).build()?);
    }
    match request.send().await {
        Ok(_) => {}
        // A create whose answer was lost, sent again (aws-facts.md §10).
        Err(err) if is_code(&err, &["EntityAlreadyExists"]) => {
            // IAM reads are eventually consistent: a role just made may not
            // be readable yet (IAM user guide, "changes that I make are not
            // always immediately visible").
            let started = Instant::now();
            loop {
                match super::actual::read_role(aws, &desired.names, &spec.name).await?.1 {
                    Found::Ours(_) => break,
                    found @ Found::Foreign(_) => return taken_if_ours(&found, "IAM role", &spec.name),
                    Found::Missing if started.elapsed() < ROLE_READ => tokio::time::sleep(POLL_INTERVAL).await,
                    Found::Missing => bail!(
                        "IAM role {} exists (EntityAlreadyExists) but IAM still does not show it after {}s; run `chatctl up` again",
                        spec.name,
                        ROLE_READ.as_secs()
                    ),
                }
            }
        }
        Err(err) => {
            return Err(crate::aws::aws_error(
                format!("cannot create IAM role {}", spec.name),
                err,
            ));
        }
    }
    step(report, "role", &spec.name, "created");
    Ok(())
}

async fn put_role_policy(
    aws: &Aws,
    desired: &Desired,
    spec: &RoleSpec,
    state: Option<&super::actual::RoleState>,
    api_id: &str,
    report: Report<'_>,
) -> Result<()> {
    let policy = desired.role_policy(spec, api_id);
    let action = role_action(state, Some(&policy));
    let Action::Update { changes } = action else {
        if state.is_none() {
            // A new role: its policy goes on now.
            put_policy(aws, &spec.name, &policy).await?;
        }
        return Ok(());
    };
    if changes.iter().any(|c| c == "trust policy") {
        aws.iam
            .update_assume_role_policy()
            .role_name(&spec.name)
            .policy_document(super::desired::trust_policy().to_string())
            .send()
            .await
            .map_err(failed(format!(
                "cannot update the trust policy of IAM role {}",
                spec.name
            )))?;
    }
    if changes.iter().any(|c| c.starts_with("inline policy")) {
        put_policy(aws, &spec.name, &policy).await?;
    }
    step(report, "role", &spec.name, "updated");
    Ok(())
}

async fn put_policy(aws: &Aws, role: &str, policy: &serde_json::Value) -> Result<()> {
    aws.iam
        .put_role_policy()
        .role_name(role)
        .policy_name(POLICY_NAME)
        .policy_document(policy.to_string())
        .send()
        .await
        .map_err(failed(format!("cannot set the policy of IAM role {role}")))?;
    Ok(())
}

async fn apply_function(
    aws: &Aws,
    desired: &Desired,
    spec: &FunctionSpec,
    state: Option<&super::actual::FunctionState>,
    probes: &RoleProbes,
    report: Report<'_>,
) -> Result<()> {
    let role_arn = desired.names.role_arn(&spec.role);
    let Some(state) = state else {
        create_function(aws, desired, spec, &role_arn, probes).await?;
        wait_for_function(aws, &spec.name).await?;
        step(report, "function", &spec.name, "created");
        return Ok(());
    };
    let diff = function_diff(spec, state, &role_arn);
    if !diff.code && diff.configuration.is_empty() {
        return Ok(());
    }
    wait_until_updatable(aws, &spec.name).await?;
    if diff.configuration.iter().any(|c| !c.starts_with("architecture")) {
        aws.lambda
            .update_function_configuration()
            .function_name(&spec.name)
            .role(&role_arn)
            .runtime(Runtime::from(super::desired::RUNTIME))
            .handler(spec.function.short_name())
            .memory_size(spec.memory_mb)
            .timeout(spec.timeout_seconds)
            .environment(environment(spec))
            .send()
            .await
            .map_err(failed(format!("cannot update the configuration of {}", spec.name)))?;
        wait_for_function(aws, &spec.name).await?;
    }
    if diff.code {
        let zip = read_code(spec)?;
        aws.lambda
            .update_function_code()
            .function_name(&spec.name)
            .zip_file(Blob::new(zip))
            .architectures(Architecture::from(spec.arch.as_lambda()))
            .send()
            .await
            .map_err(failed(format!("cannot update the code of {}", spec.name)))?;
        wait_for_function(aws, &spec.name).await?;
    }
    let what = match (diff.code, diff.configuration.is_empty()) {
        (true, true) => "code updated",
        (false, false) => "configuration updated",
        _ => "code and configuration updated",
    };
    step(report, "function", &spec.name, what);
    Ok(())
}

fn environment(spec: &FunctionSpec) -> Environment {
    Environment::builder()
        .set_variables(Some(spec.env.clone().into_iter().collect()))
        .build()
}

fn read_code(spec: &FunctionSpec) -> Result<Vec<u8>> {
    let code = spec
        .code
        .as_ref()
        .ok_or_else(|| anyhow!("no built code for {}; run without --no-build", spec.name))?;
    std::fs::read(&code.zip).with_context(|| format!("cannot read {}", code.zip.display()))
}

/// Lambda's two answers while a new role propagates through IAM, both
/// `InvalidParameterValueException` (aws-facts.md §8 and §10): "The role
/// defined for the function cannot be assumed by Lambda", and for a function
/// with environment variables "Lambda was unable to configure access to your
/// environment variables because the KMS key is invalid for CreateGrant"
/// (terraform-provider-aws retries both in internal/service/lambda/function.go).
fn is_role_propagating(err: &SdkError<CreateFunctionError, HttpResponse>) -> bool {
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
async fn create_function(
    aws: &Aws,
    desired: &Desired,
    spec: &FunctionSpec,
    role_arn: &str,
    probes: &RoleProbes,
) -> Result<()> {
    let zip = read_code(spec)?;
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
            .code(FunctionCode::builder().zip_file(Blob::new(zip.clone())).build())
            .set_tags(Some(desired.tags.clone().into_iter().collect()))
            .description(format!(
                "chatctl stack {}: {}",
                desired.names.stack,
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
            let (_, found) = super::actual::read_function(aws, &desired.names, spec.function).await?;
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
async fn function_configuration(aws: &Aws, name: &str) -> Result<FunctionConfiguration> {
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
async fn wait_until_updatable(aws: &Aws, name: &str) -> Result<()> {
    let started = Instant::now();
    loop {
        let config = function_configuration(aws, name).await?;
        let pending = config.state() == Some(&State::Pending);
        let updating = config.last_update_status() == Some(&LastUpdateStatus::InProgress);
        if !pending && !updating {
            return Ok(());
        }
        if started.elapsed() > FUNCTION_TIMEOUT {
            bail!(
                "Lambda function {name} is still busy ({}) after {}s; an update from elsewhere may be running: wait and run `chatctl up` again",
                if pending { "Pending" } else { "update InProgress" },
                FUNCTION_TIMEOUT.as_secs()
            );
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Waits until a function chatctl created or updated is usable: created →
/// `Active` (it is `Pending` first); updated → `LastUpdateStatus` no longer
/// `InProgress`. An `Inactive` function (idle for weeks) stays Inactive after
/// an update until it is invoked, so it counts as settled (Lambda docs,
/// "functions-states"). Fails with Lambda's reason when it failed.
pub async fn wait_for_function(aws: &Aws, name: &str) -> Result<()> {
    let started = Instant::now();
    loop {
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
            return Ok(());
        }
        if started.elapsed() > FUNCTION_TIMEOUT {
            bail!(
                "Lambda function {name} is still {}/{} after {}s; see it in the Lambda console, then run `chatctl up` again",
                state.map_or("-", |s| s.as_str()),
                update.map_or("-", |u| u.as_str()),
                FUNCTION_TIMEOUT.as_secs()
            );
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

async fn ensure_api(
    aws: &Aws,
    desired: &Desired,
    api: Option<&ApiState>,
    writes: &ApiWrites,
    report: Report<'_>,
) -> Result<String> {
    // An API of ours with another protocol (HTTP) cannot become a WebSocket
    // API: the plan replaces it (a confirmed replacement), so delete it first.
    let replaced = api.filter(|api| api.protocol.as_deref() != Some("WEBSOCKET"));
    if let Some(old) = replaced {
        delete_api(aws, writes, &desired.api.name, &old.id).await?;
    }
    if let Some(api) = api.filter(|_| replaced.is_none()) {
        if api.route_selection_expression.as_deref() != Some(ROUTE_SELECTION_EXPRESSION) {
            writes
                .send("cannot update the API", || {
                    aws.apigateway
                        .update_api()
                        .api_id(&api.id)
                        .route_selection_expression(ROUTE_SELECTION_EXPRESSION)
                        .send()
                })
                .await?;
            step(report, "api", &desired.api.name, "updated");
        }
        for duplicate in &api.duplicates {
            delete_api(aws, writes, &desired.api.name, duplicate).await?;
            step(
                report,
                "api",
                &format!("{} {duplicate} (duplicate)", desired.api.name),
                "deleted",
            );
        }
        return Ok(api.id.clone());
    }
    let id = writes
        .create_or_adopt(
            format!("cannot create WebSocket API {}", desired.api.name),
            || async move {
                let created = aws
                    .apigateway
                    .create_api()
                    .name(&desired.api.name)
                    .protocol_type(ProtocolType::Websocket)
                    .route_selection_expression(ROUTE_SELECTION_EXPRESSION)
                    .description(format!("chatctl stack {}", desired.names.stack))
                    .set_tags(Some(desired.tags.clone().into_iter().collect()))
                    .customize()
                    .config_override(sent_once())
                    .send()
                    .await?;
                Ok(created.api_id.unwrap_or_default())
            },
            || async move {
                let found = super::actual::find_apis(aws, &desired.names).await?;
                Ok(found.first().and_then(|api| api.api_id.clone()))
            },
        )
        .await?;
    let done = if replaced.is_some() { "replaced" } else { "created" };
    anyhow::ensure!(!id.is_empty(), "CreateApi answered without an API id");
    step(report, "api", &desired.api.name, format!("{done} ({id})"));
    Ok(id)
}

/// Deletes an API (with its routes, integrations, authorizers and stages);
/// one already gone is fine.
pub async fn delete_api(aws: &Aws, writes: &ApiWrites, name: &str, id: &str) -> Result<()> {
    writes
        .send(format!("cannot delete API {name} ({id})"), || async move {
            match aws.apigateway.delete_api().api_id(id).send().await {
                Err(err) if is_code(&err, &["NotFoundException"]) => Ok(()),
                other => other.map(|_| ()),
            }
        })
        .await
}

/// What an API part was: its id, and whether chatctl changed it.
type Part = (String, bool);

async fn apply_api_parts(
    aws: &Aws,
    desired: &Desired,
    actual: &Actual,
    api_id: &str,
    writes: &ApiWrites,
    report: Report<'_>,
) -> Result<String> {
    let names = &desired.names;
    let client = &aws.apigateway;
    let existing = actual.api.ours().filter(|a| a.id == api_id);
    let changes = plan::api_changes(desired, existing, actual);
    let action_of = |kind: &str, name: &str| {
        changes
            .iter()
            .find(|c| c.kind == kind && c.name == name)
            .map(|c| c.action.clone())
            .unwrap_or(Action::Create)
    };
    let mut parts_changed = false;

    // The authorizer and the integrations need only the functions' names.
    let authorizer_uri = names.invocation_uri(Function::Authorizer);
    let authorizer_name = &desired.api.authorizer;
    let authorizer = async {
        let found = existing.and_then(|a| a.authorizers.iter().find(|x| &x.name == authorizer_name));
        match (found, action_of("authorizer", authorizer_name)) {
            (Some(a), Action::NoChange) => Ok::<Part, anyhow::Error>((a.id.clone(), false)),
            (Some(a), _) => {
                writes
                    .send("cannot update the authorizer", || {
                        client
                            .update_authorizer()
                            .api_id(api_id)
                            .authorizer_id(&a.id)
                            .authorizer_type(AuthorizerType::Request)
                            .authorizer_uri(&authorizer_uri)
                            .send()
                    })
                    .await?;
                step(report, "authorizer", authorizer_name, "updated");
                Ok((a.id.clone(), true))
            }
            (None, _) => {
                let id = writes
                    .create_or_adopt(
                        "cannot create the authorizer",
                        || async {
                            let created = client
                                .create_authorizer()
                                .api_id(api_id)
                                .name(authorizer_name)
                                .authorizer_type(AuthorizerType::Request)
                                .authorizer_uri(&authorizer_uri)
                                .customize()
                                .config_override(sent_once())
                                .send()
                                .await?;
                            Ok(created.authorizer_id.unwrap_or_default())
                        },
                        || async {
                            let found = super::actual::read_authorizers(aws, api_id).await?;
                            Ok(found.into_iter().find(|a| &a.name == authorizer_name).map(|a| a.id))
                        },
                    )
                    .await?;
                anyhow::ensure!(!id.is_empty(), "CreateAuthorizer answered without an id");
                step(report, "authorizer", authorizer_name, "created");
                Ok((id, true))
            }
        }
    };
    let integrations = try_join_all(desired.api.routes.iter().map(|route| async move {
        let uri = names.invocation_uri(route.function);
        let uri = uri.as_str();
        let name = names.function(route.function);
        let found = existing.and_then(|a| a.integrations.iter().find(|i| i.uri.as_deref() == Some(uri)));
        let (id, changed) = match (found, action_of("integration", &name)) {
            (Some(i), Action::NoChange) => (i.id.clone(), false),
            (Some(i), _) => {
                writes
                    .send(format!("cannot update the integration of {name}"), || {
                        client
                            .update_integration()
                            .api_id(api_id)
                            .integration_id(&i.id)
                            .integration_type(IntegrationType::AwsProxy)
                            .integration_method("POST")
                            .integration_uri(uri)
                            .send()
                    })
                    .await?;
                step(report, "integration", &name, "updated");
                (i.id.clone(), true)
            }
            (None, _) => {
                let id = writes
                    .create_or_adopt(
                        format!("cannot create the integration of {name}"),
                        || async {
                            let created = client
                                .create_integration()
                                .api_id(api_id)
                                .integration_type(IntegrationType::AwsProxy)
                                .integration_method("POST")
                                .integration_uri(uri)
                                .customize()
                                .config_override(sent_once())
                                .send()
                                .await?;
                            Ok(created.integration_id.unwrap_or_default())
                        },
                        || async {
                            let found = super::actual::read_integrations(aws, api_id).await?;
                            Ok(found.into_iter().find(|i| i.uri.as_deref() == Some(uri)).map(|i| i.id))
                        },
                    )
                    .await?;
                anyhow::ensure!(!id.is_empty(), "CreateIntegration answered without an id");
                step(report, "integration", &name, "created");
                (id, true)
            }
        };
        Ok::<_, anyhow::Error>((route.function, id, changed))
    }));
    let ((authorizer_id, authorizer_changed), integrations) = tokio::try_join!(authorizer, integrations)?;
    parts_changed |= authorizer_changed || integrations.iter().any(|(_, _, changed)| *changed);

    let routes = try_join_all(desired.api.routes.iter().map(|route| {
        let integration_id = integrations
            .iter()
            .find(|(f, _, _)| *f == route.function)
            .map(|(_, id, _)| id.clone());
        let authorizer_id = authorizer_id.clone();
        async move {
            let target = RouteTarget {
                target: integration_id.map(|id| format!("integrations/{id}")),
                authorizer_id: route.authorized.then_some(authorizer_id),
            };
            let authorization = if route.authorized {
                AuthorizationType::Custom
            } else {
                AuthorizationType::None
            };
            let found = existing.and_then(|a| a.routes.iter().find(|r| r.key == route.key));
            match found {
                Some(r) if route_diff(r, &target, route.authorized) == Action::NoChange => {
                    Ok::<_, anyhow::Error>(false)
                }
                Some(r) => {
                    writes
                        .send(format!("cannot update route {}", route.key), || {
                            client
                                .update_route()
                                .api_id(api_id)
                                .route_id(&r.id)
                                .set_target(target.target.clone())
                                .authorization_type(authorization.clone())
                                .set_authorizer_id(target.authorizer_id.clone())
                                .send()
                        })
                        .await?;
                    step(report, "route", &route.key, "updated");
                    Ok(true)
                }
                None => {
                    // A route that exists already (made by a create whose
                    // answer was lost) is updated to the target wanted.
                    let id = writes
                        .create_or_adopt(
                            format!("cannot create route {}", route.key),
                            || async {
                                let created = client
                                    .create_route()
                                    .api_id(api_id)
                                    .route_key(&route.key)
                                    .set_target(target.target.clone())
                                    .authorization_type(authorization.clone())
                                    .set_authorizer_id(target.authorizer_id.clone())
                                    .customize()
                                    .config_override(sent_once())
                                    .send()
                                    .await?;
                                Ok((created.route_id.unwrap_or_default(), true))
                            },
                            || async {
                                let found = super::actual::read_routes(aws, api_id).await?;
                                Ok(found.into_iter().find(|r| r.key == route.key).map(|r| {
                                    let current = route_diff(&r, &target, route.authorized) == Action::NoChange;
                                    (r.id, current)
                                }))
                            },
                        )
                        .await?;
                    if !id.1 {
                        writes
                            .send(format!("cannot update route {}", route.key), || {
                                client
                                    .update_route()
                                    .api_id(api_id)
                                    .route_id(&id.0)
                                    .set_target(target.target.clone())
                                    .authorization_type(authorization.clone())
                                    .set_authorizer_id(target.authorizer_id.clone())
                                    .send()
                            })
                            .await?;
                    }
                    step(report, "route", &route.key, "created");
                    Ok(true)
                }
            }
        }
    }));
    let extra_routes = try_join_all(
        existing
            .map(|a| a.routes.clone())
            .unwrap_or_default()
            .into_iter()
            .filter(|r| !desired.api.routes.iter().any(|s| s.key == r.key))
            .map(|r| async move {
                writes
                    .send(format!("cannot delete route {}", r.key), || async {
                        match client.delete_route().api_id(api_id).route_id(&r.id).send().await {
                            // Gone already: a resent delete whose first answer was lost.
                            Err(err) if is_code(&err, &["NotFoundException"]) => Ok(()),
                            other => other.map(|_| ()),
                        }
                    })
                    .await?;
                step(report, "route", &r.key, "deleted");
                Ok::<_, anyhow::Error>(true)
            }),
    );
    let (routes, extra) = tokio::try_join!(routes, extra_routes)?;
    parts_changed |= routes.iter().any(|c| *c) || !extra.is_empty();

    let served: Vec<plan::ServedRoute> = desired
        .api
        .routes
        .iter()
        .map(|route| {
            let integration_id = integrations
                .iter()
                .find(|(f, _, _)| *f == route.function)
                .map(|(_, id, _)| id.clone());
            plan::ServedRoute {
                key: route.key.clone(),
                target: integration_id.map(|id| format!("integrations/{id}")),
                integration_uri: Some(names.invocation_uri(route.function)),
                integration_type: Some("AWS_PROXY".into()),
                authorization: if route.authorized { "CUSTOM" } else { "NONE" }.to_string(),
                authorizer_id: route.authorized.then(|| authorizer_id.clone()),
                authorizer_name: route.authorized.then(|| desired.api.authorizer.clone()),
                authorizer_uri: route.authorized.then(|| authorizer_uri.clone()),
            }
        })
        .collect();
    deploy(aws, desired, existing, (api_id, writes), &served, parts_changed, report).await?;
    Ok(authorizer_id)
}

/// Lets API Gateway invoke each function, from this API's routes and
/// authorizer only (aws-facts.md §8).
async fn grant_permissions(
    aws: &Aws,
    desired: &Desired,
    actual: &Actual,
    api_id: &str,
    authorizer_id: &str,
    report: Report<'_>,
) -> Result<()> {
    let names = &desired.names;
    try_join_all(Function::ALL.into_iter().map(|function| async move {
        let name = names.function(function);
        let source_arn = permission_source_arn(names, function, api_id, Some(authorizer_id));
        let have = actual
            .functions
            .get(&function)
            .and_then(|f| f.ours())
            .and_then(|f| f.permissions.get(PERMISSION_ID));
        if have == Some(&source_arn) {
            return Ok::<_, anyhow::Error>(());
        }
        if have.is_some() {
            let removed = aws
                .lambda
                .remove_permission()
                .function_name(&name)
                .statement_id(PERMISSION_ID)
                .send()
                .await;
            if let Err(err) = removed
                && !is_code(&err, &["ResourceNotFoundException"])
            {
                return Err(crate::aws::aws_error(
                    format!("cannot replace the permission of {name}"),
                    err,
                ));
            }
        }
        let added = aws
            .lambda
            .add_permission()
            .function_name(&name)
            .statement_id(PERMISSION_ID)
            .action("lambda:InvokeFunction")
            .principal("apigateway.amazonaws.com")
            .source_arn(&source_arn)
            .send()
            .await;
        if let Err(err) = added {
            // The statement is there when an earlier answer was lost and the
            // SDK sent it again (aws-facts.md §10, "lost responses").
            let resent = if is_code(&err, &["ResourceConflictException"]) {
                let (_, found) = super::actual::read_function(aws, names, function).await?;
                found.ours().and_then(|f| f.permissions.get(PERMISSION_ID)) == Some(&source_arn)
            } else {
                false
            };
            if !resent {
                return Err(crate::aws::aws_error(
                    format!("cannot let API Gateway invoke {name}"),
                    err,
                ));
            }
        }
        step(report, "permission", &name, "granted");
        Ok(())
    }))
    .await?;
    Ok(())
}

/// Creates the stage when the API has none; deployments come later.
async fn ensure_stage(
    aws: &Aws,
    desired: &Desired,
    existing: Option<&ApiState>,
    api_id: &str,
    writes: &ApiWrites,
    report: Report<'_>,
) -> Result<()> {
    if existing.is_some_and(|api| api.stage.is_some()) {
        return Ok(());
    }
    let stage_name = &desired.api.stage;
    writes
        .create_or_adopt(
            format!("cannot create stage {stage_name}"),
            || async {
                aws.apigateway
                    .create_stage()
                    .api_id(api_id)
                    .stage_name(stage_name)
                    .set_tags(Some(desired.tags.clone().into_iter().collect()))
                    .customize()
                    .config_override(sent_once())
                    .send()
                    .await
                    .map(|_| ())
            },
            || async {
                let found = aws
                    .apigateway
                    .get_stage()
                    .api_id(api_id)
                    .stage_name(stage_name)
                    .send()
                    .await;
                match found {
                    Err(err) if is_code(&err, &["NotFoundException"]) => Ok(None),
                    other => other
                        .map(|_| Some(()))
                        .map_err(failed(format!("cannot read stage {stage_name}"))),
                }
            },
        )
        .await?;
    step(report, "stage", stage_name, "created");
    Ok(())
}

/// Makes the stage serve the current routes: a new deployment whenever a
/// route, integration or authorizer changed, or the stage's marker is stale.
async fn deploy(
    aws: &Aws,
    desired: &Desired,
    existing: Option<&ApiState>,
    (api_id, writes): (&str, &ApiWrites),
    served: &[plan::ServedRoute],
    parts_changed: bool,
    report: Report<'_>,
) -> Result<()> {
    let client = &aws.apigateway;
    let stage_name = &desired.api.stage;
    let description = deployment_description(served);
    let stage = existing.and_then(|a| a.stage.as_ref());
    let current = stage.is_some_and(|s| s.deployment_id.is_some() && s.description.as_deref() == Some(&description));
    if stage.is_some() && current && !parts_changed {
        return Ok(());
    }
    // A deployment made twice (its answer lost) is harmless: only the one
    // the stage points at serves, and DeleteApi takes them all.
    let deployment = writes
        .send("cannot deploy the API", || {
            client
                .create_deployment()
                .api_id(api_id)
                .description(&description)
                .send()
        })
        .await?;
    let deployment_id = deployment.deployment_id.context("CreateDeployment returned no id")?;
    writes
        .send(format!("cannot point stage {stage_name} at the new deployment"), || {
            client
                .update_stage()
                .api_id(api_id)
                .stage_name(stage_name)
                .deployment_id(&deployment_id)
                .description(&description)
                .send()
        })
        .await?;
    step(report, "stage", stage_name, format!("deployed ({deployment_id})"));
    Ok(())
}

/// Checks that a foreign resource does not hold a name the stack needs.
pub fn check_conflicts(actual: &Actual, desired: &Desired) -> Result<()> {
    let plan = plan::plan(desired, actual);
    if plan.conflicts.is_empty() {
        return Ok(());
    }
    bail!("{}", plan.conflicts.join("\n"))
}
