//! Executes a plan: exactly its steps, in dependency order, with independent
//! steps running concurrently, resolving the ids that exist only once a step
//! has run (a new API's, integration's, authorizer's), and waits until every
//! resource is usable. Nothing is decided here that the plan did not say.
//!
//! Order (each arrow a real dependency): role → function → integration →
//! route → deployment. Tables, log groups and the API run beside the roles.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use aws_sdk_apigatewayv2::types::{AuthorizationType, AuthorizerType, IntegrationType, ProtocolType};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, CreateGlobalSecondaryIndexAction, DeleteGlobalSecondaryIndexAction,
    GlobalSecondaryIndex, GlobalSecondaryIndexUpdate, IndexStatus, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, TableDescription, TableStatus, TimeToLiveSpecification, TimeToLiveStatus,
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
use super::actual::Found;
use super::api_writes::{ApiWrites, sent_once};
use super::desired::{
    Desired, FunctionSpec, LogGroupSpec, POLICY_NAME, ROUTE_SELECTION_EXPRESSION, RoleSpec, TableSpec,
};
use super::plan::{self, Action, Detail, Kind, PERMISSION_ID, Plan, deployment_description, permission_source_arn};
use super::tags::{Tagged, retag};
use crate::aws::{Aws, Budget, failed, is_code, retry, retry_error};

/// How often a state is polled while waiting for it: short enough that a
/// wait ends at most this much after its cause; seven functions polled this
/// often make 28 GetFunction calls a second, within its quota of 100/s
/// (aws-facts.md §10, "Lambda control-plane quota").
const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// How long a table may take to become ACTIVE: creating it, or building a
/// new index over its items (backfilling takes longer the more items).
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

fn step(report: Report, kind: Kind, name: &str, done: impl Into<String>) {
    report(Step {
        kind: kind.as_str(),
        name: name.to_string(),
        done: done.into(),
    });
}

/// The tags to set and remove, if an update's changes include them.
fn tag_detail(changes: &[Detail]) -> Option<(&BTreeMap<String, String>, &[String])> {
    changes.iter().find_map(|c| match c {
        Detail::Tags { set, remove } => Some((set, remove.as_slice())),
        _ => None,
    })
}

/// Executes `plan`, made for `desired`; returns the API id.
pub async fn apply(aws: &Aws, desired: &Desired, plan: &Plan, report: Report<'_>) -> Result<String> {
    let tables = try_join_all(
        desired
            .tables
            .iter()
            .map(|spec| apply_table(aws, desired, spec, plan.action(Kind::Table, &spec.name), report)),
    );
    let log_groups = try_join_all(
        desired
            .log_groups
            .iter()
            .map(|spec| apply_log_group(aws, desired, spec, plan.action(Kind::LogGroup, &spec.name), report)),
    );
    let writes = &ApiWrites::default();
    let probes = &RoleProbes::new(desired);
    let compute = async {
        let (_, api_id) = tokio::try_join!(
            try_join_all(desired.roles.iter().map(|spec| {
                let action = plan.action(Kind::Role, &spec.name);
                create_role(aws, desired, spec, action, report)
            })),
            ensure_api(aws, desired, plan, writes, report),
        )?;
        // An integration needs only its function's ARN, known from the name:
        // the API's parts are written while the functions are created and
        // wait for their role and Active state; only the permissions, which
        // name the authorizer's id, wait for both.
        let (_, _, authorizer_id) = tokio::try_join!(
            try_join_all(desired.roles.iter().map(|spec| {
                let action = plan.action(Kind::Role, &spec.name);
                update_role(aws, desired, spec, action, &api_id, report)
            })),
            try_join_all(desired.functions.iter().map(|spec| {
                let action = plan.action(Kind::Function, &spec.name);
                apply_function(aws, desired, spec, action, probes, report)
            })),
            async {
                ensure_stage(aws, desired, plan, &api_id, writes, report).await?;
                apply_api_parts(aws, desired, plan, &api_id, writes, report).await
            },
        )?;
        grant_permissions(aws, desired, plan, &api_id, &authorizer_id, report).await?;
        Ok::<_, anyhow::Error>(api_id)
    };
    let (tables, log_groups, api_id) = tokio::join!(tables, log_groups, compute);
    tables?;
    log_groups?;
    api_id
}

async fn apply_log_group(
    aws: &Aws,
    desired: &Desired,
    spec: &LogGroupSpec,
    action: &Action,
    report: Report<'_>,
) -> Result<()> {
    match action {
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
            step(report, Kind::LogGroup, &spec.name, "created");
        }
        Action::Update { changes } => {
            for change in changes {
                match change {
                    Detail::Retention { to, .. } => set_retention(aws, &spec.name, *to).await?,
                    Detail::Tags { set, remove } => {
                        let arn = desired.names.log_group_arn(spec.function);
                        retag(aws, Tagged::LogGroup(&arn), set, remove).await?
                    }
                    other => bail!(
                        "log group {}: the plan asks for {other}, which chatctl cannot apply",
                        spec.name
                    ),
                }
            }
            step(report, Kind::LogGroup, &spec.name, "updated");
        }
        Action::NoChange => {}
        other => bail!(
            "log group {}: the plan asks to {other:?}, which chatctl cannot apply",
            spec.name
        ),
    }
    Ok(())
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

fn string_attribute(name: &str) -> Result<AttributeDefinition> {
    Ok(AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(ScalarAttributeType::S)
        .build()?)
}

fn keys_only_index(name: &str, index_key: &str) -> Result<GlobalSecondaryIndex> {
    Ok(GlobalSecondaryIndex::builder()
        .index_name(name)
        .key_schema(key(index_key, KeyType::Hash)?)
        .projection(Projection::builder().projection_type(ProjectionType::KeysOnly).build())
        .build()?)
}

async fn apply_table(
    aws: &Aws,
    desired: &Desired,
    spec: &TableSpec,
    action: &Action,
    report: Report<'_>,
) -> Result<()> {
    let done = match action {
        Action::NoChange => return Ok(()),
        Action::Create => {
            create_table(aws, desired, spec).await?;
            wait_for_table(aws, &spec.name).await?;
            enable_ttl(aws, spec).await?;
            "created"
        }
        Action::Replace { .. } => {
            delete_table_and_wait(aws, &spec.name).await?;
            create_table(aws, desired, spec).await?;
            wait_for_table(aws, &spec.name).await?;
            enable_ttl(aws, spec).await?;
            "replaced"
        }
        Action::Update { changes } => {
            for change in changes {
                update_table(aws, desired, spec, change).await?;
            }
            "updated"
        }
        Action::Delete => bail!("table {}: chatctl deletes tables only with `down`", spec.name),
    };
    step(report, Kind::Table, &spec.name, done);
    Ok(())
}

/// One change to a live table. DynamoDB takes one UpdateTable at a time
/// per table, and one index created or deleted per call; another while the
/// table is UPDATING gets ResourceInUseException, and another index change
/// while one is being built LimitExceededException (DynamoDB API reference,
/// UpdateTable; architect/architect #334): each waits until the table and
/// its indexes are ACTIVE before and after.
async fn update_table(aws: &Aws, desired: &Desired, spec: &TableSpec, change: &Detail) -> Result<()> {
    let name = &spec.name;
    let request = || aws.dynamodb.update_table().table_name(name);
    match change {
        Detail::Billing { .. } => {
            wait_for_table(aws, name).await?;
            request()
                .billing_mode(BillingMode::PayPerRequest)
                .send()
                .await
                .map_err(failed(format!(
                    "cannot switch DynamoDB table {name} to on-demand billing"
                )))?;
        }
        Detail::DeleteIndex { name: index } => {
            wait_for_table(aws, name).await?;
            request()
                .global_secondary_index_updates(
                    GlobalSecondaryIndexUpdate::builder()
                        .delete(DeleteGlobalSecondaryIndexAction::builder().index_name(index).build()?)
                        .build(),
                )
                .send()
                .await
                .map_err(failed(format!("cannot delete index {index} of DynamoDB table {name}")))?;
        }
        Detail::AddIndex {
            name: index,
            key: index_key,
        } => {
            let table = wait_for_table(aws, name).await?;
            // The key attributes of the table and of its indexes after this
            // one is added: AWS needs the new index's key among them.
            let mut attributes = table.attribute_definitions().to_vec();
            if !attributes.iter().any(|a| a.attribute_name() == index_key) {
                attributes.push(string_attribute(index_key)?);
            }
            let index_spec = keys_only_index(index, index_key)?;
            request()
                .set_attribute_definitions(Some(attributes))
                .global_secondary_index_updates(
                    GlobalSecondaryIndexUpdate::builder()
                        .create(
                            CreateGlobalSecondaryIndexAction::builder()
                                .index_name(index)
                                .set_key_schema(Some(index_spec.key_schema().to_vec()))
                                .set_projection(index_spec.projection().cloned())
                                .build()?,
                        )
                        .build(),
                )
                .send()
                .await
                .map_err(failed(format!(
                    "cannot add index {index} to DynamoDB table {name} (DynamoDB builds one index at a time; if another is being built, run `chatctl up` again once it is ACTIVE)"
                )))?;
        }
        Detail::Ttl { .. } => {
            wait_for_table(aws, name).await?;
            enable_ttl(aws, spec).await?;
        }
        Detail::Tags { set, remove } => {
            let arn = desired.names.table_arn(name);
            retag(aws, Tagged::Table(&arn), set, remove).await?;
        }
        other => bail!("table {name}: the plan asks for {other}, which chatctl cannot apply to a table"),
    }
    wait_for_table(aws, name).await?;
    Ok(())
}

async fn create_table(aws: &Aws, desired: &Desired, spec: &TableSpec) -> Result<()> {
    let mut request = aws
        .dynamodb
        .create_table()
        .table_name(&spec.name)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key(&spec.partition_key, KeyType::Hash)?)
        .attribute_definitions(string_attribute(&spec.partition_key)?);
    if let Some(sort_key) = &spec.sort_key {
        request = request
            .key_schema(key(sort_key, KeyType::Range)?)
            .attribute_definitions(string_attribute(sort_key)?);
    }
    for (index, index_key) in &spec.indexes {
        request = request
            .attribute_definitions(string_attribute(index_key)?)
            .global_secondary_indexes(keys_only_index(index, index_key)?);
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

/// Waits until a table and its indexes are ACTIVE: a new table is CREATING
/// for seconds, longer with indexes, a new index CREATING while it is built
/// over the table's items, and the table takes no TTL or update meanwhile
/// (aws-facts.md §8, §10; DynamoDB API reference, GlobalSecondaryIndexDescription).
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
        let indexes_active = table
            .global_secondary_indexes()
            .iter()
            .all(|index| index.index_status().is_none_or(|s| *s == IndexStatus::Active));
        match table.table_status() {
            Some(TableStatus::Active) if indexes_active => return Ok(table),
            Some(TableStatus::Deleting) => bail!("DynamoDB table {name} is being deleted; run the command again"),
            _ => {}
        }
        if started.elapsed() > TABLE_TIMEOUT {
            bail!(
                "DynamoDB table {name} is still {} after {}s; see it in the DynamoDB console, then run the command again",
                match table.table_status() {
                    Some(TableStatus::Active) => "building an index",
                    status => status.map_or("-", |s| s.as_str()),
                },
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

async fn create_role(aws: &Aws, desired: &Desired, spec: &RoleSpec, action: &Action, report: Report<'_>) -> Result<()> {
    if *action != Action::Create {
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
    step(report, Kind::Role, &spec.name, "created");
    Ok(())
}

/// A new role's policy, or the changes to a live role; the policy names
/// the API, so this runs once its id is known.
async fn update_role(
    aws: &Aws,
    desired: &Desired,
    spec: &RoleSpec,
    action: &Action,
    api_id: &str,
    report: Report<'_>,
) -> Result<()> {
    let policy = desired.role_policy(spec, api_id);
    match action {
        Action::Create => put_policy(aws, &spec.name, &policy).await,
        Action::Update { changes } => {
            for change in changes {
                match change {
                    Detail::TrustPolicy => {
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
                    Detail::InlinePolicy { .. } => put_policy(aws, &spec.name, &policy).await?,
                    Detail::Tags { set, remove } => retag(aws, Tagged::Role(&spec.name), set, remove).await?,
                    other => bail!(
                        "role {}: the plan asks for {other}, which chatctl cannot apply to a role",
                        spec.name
                    ),
                }
            }
            step(report, Kind::Role, &spec.name, "updated");
            Ok(())
        }
        Action::NoChange => Ok(()),
        other => bail!(
            "role {}: the plan asks to {other:?}, which chatctl cannot apply",
            spec.name
        ),
    }
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
    action: &Action,
    probes: &RoleProbes,
    report: Report<'_>,
) -> Result<()> {
    let role_arn = desired.names.role_arn(&spec.role);
    let changes = match action {
        Action::NoChange => return Ok(()),
        Action::Create => {
            create_function(aws, desired, spec, &role_arn, probes).await?;
            wait_for_function(aws, &spec.name).await?;
            step(report, Kind::Function, &spec.name, "created");
            return Ok(());
        }
        Action::Update { changes } => changes,
        other => bail!(
            "function {}: the plan asks to {other:?}, which chatctl cannot apply",
            spec.name
        ),
    };
    let code = changes.iter().any(Detail::is_function_code);
    let configuration = changes.iter().any(Detail::is_function_configuration);
    if code || configuration {
        wait_until_updatable(aws, &spec.name).await?;
    }
    // The configuration first: the Handler names the function for the one
    // binary, so new code never runs with an old Handler.
    if configuration {
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
    if code {
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
    if let Some((set, remove)) = tag_detail(changes) {
        let arn = desired.names.function_arn(spec.function);
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

/// The plan's step for a resource it must list.
fn planned<'a>(plan: &'a Plan, kind: Kind, name: &str) -> Result<&'a plan::Change> {
    plan.step(kind, name)
        .with_context(|| format!("the plan has no step for {kind} {name}; make a new plan"))
}

/// The id of a live API part the plan changes or keeps.
fn live_id(change: &plan::Change) -> Result<String> {
    change.id.clone().with_context(|| {
        format!(
            "the plan names no id for {} {}; make a new plan",
            change.kind, change.name
        )
    })
}

async fn ensure_api(
    aws: &Aws,
    desired: &Desired,
    plan: &Plan,
    writes: &ApiWrites,
    report: Report<'_>,
) -> Result<String> {
    let name = &desired.api.name;
    let api = planned(plan, Kind::Api, name)?;
    for duplicate in plan.deletions(Kind::Api) {
        let id = live_id(duplicate)?;
        delete_api(aws, writes, name, &id).await?;
        step(report, Kind::Api, &format!("{name} {id} (duplicate)"), "deleted");
    }
    let done = match &api.action {
        Action::NoChange => return live_id(api),
        Action::Update { changes } => {
            let id = live_id(api)?;
            for change in changes {
                match change {
                    Detail::RouteSelection => {
                        writes
                            .send("cannot update the API", || {
                                aws.apigateway
                                    .update_api()
                                    .api_id(&id)
                                    .route_selection_expression(ROUTE_SELECTION_EXPRESSION)
                                    .send()
                            })
                            .await?;
                    }
                    Detail::Tags { set, remove } => {
                        let arn = desired.names.api_arn(&id);
                        retag(aws, Tagged::Api(&arn), set, remove).await?;
                    }
                    other => bail!("API {name}: the plan asks for {other}, which chatctl cannot apply to an API"),
                }
            }
            step(report, Kind::Api, name, "updated");
            return Ok(id);
        }
        // An API of another protocol cannot become a WebSocket API: the
        // confirmed replacement deletes it first.
        Action::Replace { .. } => {
            delete_api(aws, writes, name, &live_id(api)?).await?;
            "replaced"
        }
        Action::Create => "created",
        Action::Delete => bail!("the plan deletes API {name}; only `down` does that"),
    };
    let id = writes
        .create_or_adopt(
            format!("cannot create WebSocket API {name}"),
            || async move {
                let created = aws
                    .apigateway
                    .create_api()
                    .name(name)
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
    anyhow::ensure!(!id.is_empty(), "CreateApi answered without an API id");
    step(report, Kind::Api, name, format!("{done} ({id})"));
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

/// What an API part is: its id, and whether chatctl changed it.
type Part = (String, bool);

async fn apply_authorizer(
    aws: &Aws,
    desired: &Desired,
    plan: &Plan,
    api_id: &str,
    writes: &ApiWrites,
    report: Report<'_>,
) -> Result<Part> {
    let client = &aws.apigateway;
    let name = &desired.api.authorizer;
    let uri = desired.names.invocation_uri(Function::Authorizer);
    let planned = planned(plan, Kind::Authorizer, name)?;
    match &planned.action {
        Action::NoChange => Ok((live_id(planned)?, false)),
        Action::Update { .. } => {
            let id = live_id(planned)?;
            writes
                .send("cannot update the authorizer", || {
                    client
                        .update_authorizer()
                        .api_id(api_id)
                        .authorizer_id(&id)
                        .authorizer_type(AuthorizerType::Request)
                        .authorizer_uri(&uri)
                        .send()
                })
                .await?;
            step(report, Kind::Authorizer, name, "updated");
            Ok((id, true))
        }
        Action::Create => {
            let id = writes
                .create_or_adopt(
                    "cannot create the authorizer",
                    || async {
                        let created = client
                            .create_authorizer()
                            .api_id(api_id)
                            .name(name)
                            .authorizer_type(AuthorizerType::Request)
                            .authorizer_uri(&uri)
                            .customize()
                            .config_override(sent_once())
                            .send()
                            .await?;
                        Ok(created.authorizer_id.unwrap_or_default())
                    },
                    || async {
                        let found = super::actual::read_authorizers(aws, api_id).await?;
                        Ok(found.into_iter().find(|a| &a.name == name).map(|a| a.id))
                    },
                )
                .await?;
            anyhow::ensure!(!id.is_empty(), "CreateAuthorizer answered without an id");
            step(report, Kind::Authorizer, name, "created");
            Ok((id, true))
        }
        other => bail!("authorizer {name}: the plan asks to {other:?}, which chatctl cannot apply"),
    }
}

async fn apply_integration(
    aws: &Aws,
    desired: &Desired,
    plan: &Plan,
    function: Function,
    (api_id, writes): (&str, &ApiWrites),
    report: Report<'_>,
) -> Result<Part> {
    let client = &aws.apigateway;
    let uri = desired.names.invocation_uri(function);
    let uri = uri.as_str();
    let name = desired.names.function(function);
    let planned = planned(plan, Kind::Integration, &name)?;
    match &planned.action {
        Action::NoChange => Ok((live_id(planned)?, false)),
        Action::Update { .. } => {
            let id = live_id(planned)?;
            writes
                .send(format!("cannot update the integration of {name}"), || {
                    client
                        .update_integration()
                        .api_id(api_id)
                        .integration_id(&id)
                        .integration_type(IntegrationType::AwsProxy)
                        .integration_method("POST")
                        .integration_uri(uri)
                        .send()
                })
                .await?;
            step(report, Kind::Integration, &name, "updated");
            Ok((id, true))
        }
        Action::Create => {
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
            step(report, Kind::Integration, &name, "created");
            Ok((id, true))
        }
        other => bail!("integration {name}: the plan asks to {other:?}, which chatctl cannot apply"),
    }
}

/// A route's wanted settings, with the ids resolved at apply time.
struct RouteWrite<'a> {
    key: &'a str,
    target: String,
    authorizer_id: Option<String>,
}

impl RouteWrite<'_> {
    fn authorization(&self) -> AuthorizationType {
        if self.authorizer_id.is_some() {
            AuthorizationType::Custom
        } else {
            AuthorizationType::None
        }
    }

    async fn update(&self, aws: &Aws, (api_id, writes): (&str, &ApiWrites), route_id: &str) -> Result<()> {
        writes
            .send(format!("cannot update route {}", self.key), || {
                aws.apigateway
                    .update_route()
                    .api_id(api_id)
                    .route_id(route_id)
                    .target(&self.target)
                    .authorization_type(self.authorization())
                    .set_authorizer_id(self.authorizer_id.clone())
                    .send()
            })
            .await?;
        Ok(())
    }

    /// Creates the route; one that exists already (made by a create whose
    /// answer was lost) is updated to what is wanted.
    async fn create(&self, aws: &Aws, (api_id, writes): (&str, &ApiWrites)) -> Result<()> {
        let client = &aws.apigateway;
        let (id, current) = writes
            .create_or_adopt(
                format!("cannot create route {}", self.key),
                || async {
                    let created = client
                        .create_route()
                        .api_id(api_id)
                        .route_key(self.key)
                        .target(&self.target)
                        .authorization_type(self.authorization())
                        .set_authorizer_id(self.authorizer_id.clone())
                        .customize()
                        .config_override(sent_once())
                        .send()
                        .await?;
                    Ok((created.route_id.unwrap_or_default(), true))
                },
                || async {
                    let found = super::actual::read_routes(aws, api_id).await?;
                    Ok(found.into_iter().find(|r| r.key == self.key).map(|r| {
                        let current = r.target.as_deref() == Some(self.target.as_str())
                            && r.authorization_type.as_deref() == Some(self.authorization().as_str())
                            && r.authorizer_id == self.authorizer_id;
                        (r.id, current)
                    }))
                },
            )
            .await?;
        if !current {
            self.update(aws, (api_id, writes), &id).await?;
        }
        Ok(())
    }
}

async fn apply_api_parts(
    aws: &Aws,
    desired: &Desired,
    plan: &Plan,
    api_id: &str,
    writes: &ApiWrites,
    report: Report<'_>,
) -> Result<String> {
    let names = &desired.names;
    let client = &aws.apigateway;
    // The authorizer and the integrations need only the functions' names.
    let (authorizer, integrations) = tokio::try_join!(
        apply_authorizer(aws, desired, plan, api_id, writes, report),
        try_join_all(desired.api.routes.iter().map(|route| async move {
            let part = apply_integration(aws, desired, plan, route.function, (api_id, writes), report).await?;
            Ok::<_, anyhow::Error>((route.function, part.0))
        })),
    )?;
    let authorizer_id = authorizer.0;
    let integration_id = |function: Function| {
        integrations
            .iter()
            .find(|(f, _)| *f == function)
            .map(|(_, id)| id.clone())
            .unwrap_or_default()
    };

    let routes = try_join_all(desired.api.routes.iter().map(|route| {
        let write = RouteWrite {
            key: &route.key,
            target: format!("integrations/{}", integration_id(route.function)),
            authorizer_id: route.authorized.then(|| authorizer_id.clone()),
        };
        async move {
            let planned = planned(plan, Kind::Route, &route.key)?;
            match &planned.action {
                Action::NoChange => {}
                Action::Update { .. } => {
                    write.update(aws, (api_id, writes), &live_id(planned)?).await?;
                    step(report, Kind::Route, &route.key, "updated");
                }
                Action::Create => {
                    write.create(aws, (api_id, writes)).await?;
                    step(report, Kind::Route, &route.key, "created");
                }
                other => bail!(
                    "route {}: the plan asks to {other:?}, which chatctl cannot apply",
                    route.key
                ),
            }
            Ok::<_, anyhow::Error>(())
        }
    }));
    let extra_routes = try_join_all(plan.deletions(Kind::Route).map(|route| async move {
        let id = live_id(route)?;
        writes
            .send(format!("cannot delete route {}", route.name), || async {
                match client.delete_route().api_id(api_id).route_id(&id).send().await {
                    // Gone already: a resent delete whose first answer was lost.
                    Err(err) if is_code(&err, &["NotFoundException"]) => Ok(()),
                    other => other.map(|_| ()),
                }
            })
            .await?;
        step(report, Kind::Route, &route.name, "deleted");
        Ok::<_, anyhow::Error>(())
    }));
    tokio::try_join!(routes, extra_routes)?;

    let stage = planned(plan, Kind::Stage, &desired.api.stage)?;
    let deploy_now = match &stage.action {
        Action::Create => true,
        Action::Update { changes } => changes.contains(&Detail::Deployment),
        _ => false,
    };
    if deploy_now {
        let authorizer_uri = names.invocation_uri(Function::Authorizer);
        let served: Vec<plan::ServedRoute> = desired
            .api
            .routes
            .iter()
            .map(|route| plan::ServedRoute {
                key: route.key.clone(),
                target: Some(format!("integrations/{}", integration_id(route.function))),
                integration_uri: Some(names.invocation_uri(route.function)),
                integration_type: Some("AWS_PROXY".into()),
                authorization: if route.authorized { "CUSTOM" } else { "NONE" }.to_string(),
                authorizer_id: route.authorized.then(|| authorizer_id.clone()),
                authorizer_name: route.authorized.then(|| desired.api.authorizer.clone()),
                authorizer_uri: route.authorized.then(|| authorizer_uri.clone()),
            })
            .collect();
        deploy(aws, desired, (api_id, writes), &served, report).await?;
    }
    Ok(authorizer_id)
}

/// Lets API Gateway invoke each function, from this API's routes and
/// authorizer only (aws-facts.md §8).
async fn grant_permissions(
    aws: &Aws,
    desired: &Desired,
    plan: &Plan,
    api_id: &str,
    authorizer_id: &str,
    report: Report<'_>,
) -> Result<()> {
    let names = &desired.names;
    try_join_all(Function::ALL.into_iter().map(|function| async move {
        let name = names.function(function);
        let replace = match plan.action(Kind::Permission, &name) {
            Action::NoChange => return Ok::<_, anyhow::Error>(()),
            Action::Create => false,
            Action::Update { .. } => true,
            other => bail!("permission of {name}: the plan asks to {other:?}, which chatctl cannot apply"),
        };
        let source_arn = permission_source_arn(names, function, api_id, Some(authorizer_id));
        if replace {
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
        step(report, Kind::Permission, &name, "granted");
        Ok(())
    }))
    .await?;
    Ok(())
}

/// Creates the stage when the plan says so, or retags it; deployments
/// come once the routes are written.
async fn ensure_stage(
    aws: &Aws,
    desired: &Desired,
    plan: &Plan,
    api_id: &str,
    writes: &ApiWrites,
    report: Report<'_>,
) -> Result<()> {
    let stage_name = &desired.api.stage;
    match plan.action(Kind::Stage, stage_name) {
        Action::Create => {}
        Action::Update { changes } => {
            if let Some((set, remove)) = tag_detail(changes) {
                let arn = desired.names.stage_arn(api_id);
                retag(aws, Tagged::Stage(&arn), set, remove).await?;
            }
            return Ok(());
        }
        _ => return Ok(()),
    }
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
    step(report, Kind::Stage, stage_name, "created");
    Ok(())
}

/// Makes the stage serve the routes as written: a new deployment, marked
/// with their fingerprint.
async fn deploy(
    aws: &Aws,
    desired: &Desired,
    (api_id, writes): (&str, &ApiWrites),
    served: &[plan::ServedRoute],
    report: Report<'_>,
) -> Result<()> {
    let client = &aws.apigateway;
    let stage_name = &desired.api.stage;
    let description = deployment_description(served);
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
    step(report, Kind::Stage, stage_name, format!("deployed ({deployment_id})"));
    Ok(())
}
