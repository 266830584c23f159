//! Reads what exists of a stack, in two rounds of concurrent calls: every
//! resource whose name is known at once, then what needs an id or ARN from
//! the first round (the API's parts, tags). Only names are used, not the
//! account id, so the read can run while the credentials are checked.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use anyhow::Result;
use aws_sdk_dynamodb::types::{TableDescription, TableStatus};
use serde::Serialize;
use serde_json::Value;

use super::desired::POLICY_NAME;
use super::{Function, Names, STACK_TAG};
use crate::aws::{Aws, decode_policy, failed, is_code};

/// A resource found by name: absent, ours (tagged with this stack), or someone else's.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Found<T> {
    Missing,
    Ours(T),
    /// Exists without this stack's tag; never touched. Holds what the tag says, if anything.
    Foreign(Option<String>),
}

impl<T> Found<T> {
    pub fn ours(&self) -> Option<&T> {
        match self {
            Found::Ours(value) => Some(value),
            _ => None,
        }
    }

    pub fn is_missing(&self) -> bool {
        matches!(self, Found::Missing)
    }

    fn classify(stack: &str, tag: Option<&str>, value: T) -> Found<T> {
        if tag == Some(stack) {
            Found::Ours(value)
        } else {
            Found::Foreign(tag.map(str::to_string))
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TableState {
    pub status: String,
    pub partition_key: Option<String>,
    pub sort_key: Option<String>,
    /// (index name, partition key, projection type)
    pub indexes: Vec<(String, String, String)>,
    pub billing_mode: Option<String>,
    /// The TTL attribute when TTL is enabled or being enabled.
    pub ttl_attribute: Option<String>,
    /// Not part of a saved plan's fingerprint: DynamoDB refreshes it about every 6 hours.
    #[serde(skip)]
    pub item_count: i64,
    /// Every tag, the stack's included.
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RoleState {
    pub trust_policy: Option<Value>,
    /// Our inline policy, when present.
    pub policy: Option<Value>,
    /// Every tag, the stack's included.
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogGroupState {
    pub retention_days: Option<i32>,
    /// Every tag, the stack's included.
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FunctionState {
    pub arn: String,
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
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouteState {
    pub id: String,
    pub key: String,
    pub target: Option<String>,
    pub authorization_type: Option<String>,
    pub authorizer_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IntegrationState {
    pub id: String,
    pub integration_type: Option<String>,
    pub uri: Option<String>,
    pub method: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuthorizerState {
    pub id: String,
    pub name: String,
    pub authorizer_type: Option<String>,
    pub uri: Option<String>,
    /// `route.request.header.X`, `route.request.querystring.Y`, …: each must
    /// be present or the client gets 401 without the authorizer running.
    pub identity_sources: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StageState {
    pub deployment_id: Option<String>,
    pub description: Option<String>,
    /// Every tag, the stack's included.
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApiState {
    pub id: String,
    pub protocol: Option<String>,
    pub route_selection_expression: Option<String>,
    pub routes: Vec<RouteState>,
    pub integrations: Vec<IntegrationState>,
    pub authorizers: Vec<AuthorizerState>,
    pub stage: Option<StageState>,
    /// Other APIs of this stack with the same name (an interrupted run or
    /// two runs at once made them): `up` and `down` delete them.
    pub duplicates: Vec<String>,
    /// Every tag, the stack's included.
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Actual {
    pub tables: BTreeMap<String, Found<TableState>>,
    pub roles: BTreeMap<String, Found<RoleState>>,
    pub log_groups: BTreeMap<Function, Found<LogGroupState>>,
    pub functions: BTreeMap<Function, Found<FunctionState>>,
    pub api: Found<ApiState>,
}

impl Actual {
    /// The token secret an earlier `up` gave the authorizer, if any.
    pub fn token_secret(&self) -> Option<String> {
        self.functions
            .get(&Function::Authorizer)?
            .ours()?
            .env
            .get(chat_core::config::vars::TOKEN_SECRET)
            .cloned()
    }

    /// True when nothing of the stack exists.
    pub fn is_empty(&self) -> bool {
        self.tables.values().all(|t| t.ours().is_none())
            && self.roles.values().all(|r| r.ours().is_none())
            && self.log_groups.values().all(|l| l.ours().is_none())
            && self.functions.values().all(|f| f.ours().is_none())
            && self.api.ours().is_none()
    }
}

pub async fn read(aws: &Aws, names: &Names) -> Result<Actual> {
    let tables = [names.connections_table(), names.messages_table()];
    let roles = [names.handlers_role(), names.authorizer_role()];
    let (tables, roles, log_groups, functions, api) = tokio::try_join!(
        futures::future::try_join_all(tables.iter().map(|t| read_table(aws, names, t))),
        futures::future::try_join_all(roles.iter().map(|r| read_role(aws, names, r))),
        read_log_groups(aws, names),
        futures::future::try_join_all(Function::ALL.into_iter().map(|f| read_function(aws, names, f))),
        read_api(aws, names),
    )?;
    Ok(Actual {
        tables: tables.into_iter().collect(),
        roles: roles.into_iter().collect(),
        log_groups,
        functions: functions.into_iter().collect(),
        api,
    })
}

pub async fn read_table(aws: &Aws, names: &Names, name: &str) -> Result<(String, Found<TableState>)> {
    let (described, ttl) = tokio::join!(
        aws.dynamodb.describe_table().table_name(name).send(),
        aws.dynamodb.describe_time_to_live().table_name(name).send(),
    );
    let described = match described {
        Err(err) if is_code(&err, &["ResourceNotFoundException"]) => return Ok((name.to_string(), Found::Missing)),
        other => other.map_err(failed(format!("cannot read DynamoDB table {name}")))?,
    };
    let Some(mut table) = described.table else {
        return Ok((name.to_string(), Found::Missing));
    };
    if table.table_status() == Some(&TableStatus::Deleting) {
        // An interrupted `down`: the table is on its way out.
        super::apply::wait_until_table_gone(aws, name).await?;
        return Ok((name.to_string(), Found::Missing));
    }
    let tags = match read_table_tags(aws, name, &table).await? {
        TableTag::Read(tags) => tags,
        TableTag::Creating => {
            // ListTagsOfResource answers ResourceNotFoundException while the
            // table is CREATING (aws-facts.md §10; cortex #1369): its owner
            // is known once it is ACTIVE.
            table = super::apply::wait_for_table(aws, name).await?;
            match read_table_tags(aws, name, &table).await? {
                TableTag::Read(tags) => tags,
                TableTag::Creating => anyhow::bail!("DynamoDB table {name} is ACTIVE but its tags cannot be read"),
            }
        }
    };
    let key = |key_type: aws_sdk_dynamodb::types::KeyType| {
        table
            .key_schema()
            .iter()
            .find(|k| *k.key_type() == key_type)
            .map(|k| k.attribute_name().to_string())
    };
    let ttl = ttl.map_err(failed(format!("cannot read the TTL of DynamoDB table {name}")))?;
    let ttl_attribute = ttl.time_to_live_description.and_then(|d| {
        let on = matches!(
            d.time_to_live_status.as_ref().map(|s| s.as_str()),
            Some("ENABLED" | "ENABLING")
        );
        if on { d.attribute_name } else { None }
    });
    let state = TableState {
        status: table.table_status().map(|s| s.as_str().to_string()).unwrap_or_default(),
        partition_key: key(aws_sdk_dynamodb::types::KeyType::Hash),
        sort_key: key(aws_sdk_dynamodb::types::KeyType::Range),
        indexes: table
            .global_secondary_indexes()
            .iter()
            .map(|index| {
                let key = index
                    .key_schema()
                    .iter()
                    .find(|k| *k.key_type() == aws_sdk_dynamodb::types::KeyType::Hash)
                    .map(|k| k.attribute_name().to_string())
                    .unwrap_or_default();
                let projection = index
                    .projection()
                    .and_then(|p| p.projection_type())
                    .map(|p| p.as_str().to_string())
                    .unwrap_or_default();
                (index.index_name().unwrap_or_default().to_string(), key, projection)
            })
            .collect(),
        billing_mode: table
            .billing_mode_summary()
            .and_then(|b| b.billing_mode())
            .map(|b| b.as_str().to_string()),
        ttl_attribute,
        item_count: table.item_count().unwrap_or(0),
        tags,
    };
    let tag = state.tags.get(STACK_TAG).cloned();
    Ok((name.to_string(), Found::classify(&names.stack, tag.as_deref(), state)))
}

enum TableTag {
    /// Every tag of the table.
    Read(BTreeMap<String, String>),
    /// The tags cannot be read yet: the table is being created.
    Creating,
}

/// How long after its creation a table's tags may still be unreadable:
/// DynamoDB's TagResource is eventually consistent (aws-facts.md §10;
/// terraform-provider-aws PR #39326 waits for tags after tagging).
const TAG_LAG_WINDOW: Duration = Duration::from_secs(300);
/// How long chatctl waits for the tags of a table made that recently, and
/// how often it reads them meanwhile.
const TAG_LAG_WAIT: Duration = Duration::from_secs(10);
const TAG_POLL_INTERVAL: Duration = Duration::from_millis(500);

/// The tags of a table. A table without any tag that was created in the
/// last minutes may be ours with tags not yet readable, so its tags are read
/// again for a while before it is taken for someone else's.
async fn read_table_tags(aws: &Aws, name: &str, table: &TableDescription) -> Result<TableTag> {
    let arn = table.table_arn().unwrap_or_default();
    let recent = table
        .creation_date_time()
        .and_then(|created| std::time::SystemTime::try_from(*created).ok())
        .and_then(|created| created.elapsed().ok())
        .is_some_and(|age| age < TAG_LAG_WINDOW);
    let started = Instant::now();
    loop {
        let Some(tags) = list_table_tags(aws, name, arn).await? else {
            return Ok(TableTag::Creating);
        };
        if !(recent && tags.is_empty() && started.elapsed() < TAG_LAG_WAIT) {
            return Ok(TableTag::Read(tags));
        }
        tokio::time::sleep(TAG_POLL_INTERVAL).await;
    }
}

/// Every tag of a table, every page; None while the table is being created
/// (ListTagsOfResource then answers ResourceNotFoundException).
pub async fn list_table_tags(aws: &Aws, name: &str, arn: &str) -> Result<Option<BTreeMap<String, String>>> {
    let what = format!("cannot read the tags of DynamoDB table {name}");
    let pages = all_pages(&what, |token| {
        let what = &what;
        async move {
            match aws
                .dynamodb
                .list_tags_of_resource()
                .resource_arn(arn)
                .set_next_token(token)
                .send()
                .await
            {
                Err(err) if is_code(&err, &["ResourceNotFoundException"]) => Ok((vec![None], None)),
                other => {
                    let page = other.map_err(failed(what))?;
                    let tags = page
                        .tags()
                        .iter()
                        .map(|t| Some((t.key().to_string(), t.value().to_string())));
                    Ok((tags.collect(), page.next_token))
                }
            }
        }
    })
    .await?;
    Ok(pages.into_iter().collect())
}

pub async fn read_role(aws: &Aws, names: &Names, name: &str) -> Result<(String, Found<RoleState>)> {
    let (role, policy) = tokio::join!(
        aws.iam.get_role().role_name(name).send(),
        aws.iam
            .get_role_policy()
            .role_name(name)
            .policy_name(POLICY_NAME)
            .send(),
    );
    let role = match role {
        Err(err) if is_code(&err, &["NoSuchEntity"]) => return Ok((name.to_string(), Found::Missing)),
        other => other.map_err(failed(format!("cannot read IAM role {name}")))?,
    };
    let Some(role) = role.role else {
        return Ok((name.to_string(), Found::Missing));
    };
    let tags: BTreeMap<String, String> = role
        .tags()
        .iter()
        .map(|t| (t.key().to_string(), t.value().to_string()))
        .collect();
    let tag = tags.get(STACK_TAG).cloned();
    let policy = match policy {
        Err(err) if is_code(&err, &["NoSuchEntity"]) => None,
        other => Some(decode_policy(
            other
                .map_err(failed(format!("cannot read the policy of IAM role {name}")))?
                .policy_document(),
        )?),
    };
    let state = RoleState {
        trust_policy: role.assume_role_policy_document().map(decode_policy).transpose()?,
        policy,
        tags,
    };
    Ok((name.to_string(), Found::classify(&names.stack, tag.as_deref(), state)))
}

async fn read_log_groups(aws: &Aws, names: &Names) -> Result<BTreeMap<Function, Found<LogGroupState>>> {
    let prefix = format!("/aws/lambda/{}-", names.stack);
    // name → (retention, ARN without the trailing ":*")
    let mut groups: HashMap<String, (Option<i32>, String)> = HashMap::new();
    let mut pages = aws
        .logs
        .describe_log_groups()
        .log_group_name_prefix(&prefix)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(failed("cannot list CloudWatch log groups"))?;
        for group in page.log_groups() {
            if let Some(name) = group.log_group_name() {
                let arn = group.arn().unwrap_or_default().trim_end_matches(":*").to_string();
                groups.insert(name.to_string(), (group.retention_in_days(), arn));
            }
        }
    }
    let reads = Function::ALL.into_iter().map(|function| {
        let name = names.log_group(function);
        let found = groups.get(&name).cloned();
        async move {
            let Some((retention_days, arn)) = found else {
                return Ok::<_, anyhow::Error>((function, Found::Missing));
            };
            let tags = aws
                .logs
                .list_tags_for_resource()
                .resource_arn(arn)
                .send()
                .await
                .map_err(failed(format!("cannot read the tags of log group {name}")))?;
            let tags: BTreeMap<String, String> = tags.tags.unwrap_or_default().into_iter().collect();
            let tag = tags.get(STACK_TAG).cloned();
            let state = LogGroupState { retention_days, tags };
            Ok((function, Found::classify(&names.stack, tag.as_deref(), state)))
        }
    });
    Ok(futures::future::try_join_all(reads).await?.into_iter().collect())
}

pub async fn read_function(aws: &Aws, names: &Names, function: Function) -> Result<(Function, Found<FunctionState>)> {
    let name = names.function(function);
    let (got, policy) = tokio::join!(
        aws.lambda.get_function().function_name(&name).send(),
        aws.lambda.get_policy().function_name(&name).send(),
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
    let permissions = match policy {
        Err(err) if is_code(&err, &["ResourceNotFoundException"]) => BTreeMap::new(),
        other => {
            let text = other
                .map_err(failed(format!("cannot read the resource policy of {name}")))?
                .policy
                .unwrap_or_default();
            permission_statements(&text)
        }
    };
    let state = FunctionState {
        arn: config.function_arn().unwrap_or_default().to_string(),
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
    };
    Ok((function, Found::classify(&names.stack, tag.as_deref(), state)))
}

/// Statement ids and their `AWS:SourceArn` conditions from a resource policy.
fn permission_statements(policy: &str) -> BTreeMap<String, String> {
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

/// Every item of a list call that pages with a token. AWS may answer fewer
/// items than asked, with a token, on any page; API Gateway documents no
/// largest page (aws-facts.md §10, "pagination").
pub async fn all_pages<T, F, Fut>(what: &str, mut page: F) -> Result<Vec<T>>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: std::future::Future<Output = Result<(Vec<T>, Option<String>)>>,
{
    let mut items = vec![];
    let mut token = None;
    for _ in 0..MAX_PAGES {
        let (mut got, next) = page(token.take()).await?;
        items.append(&mut got);
        match next {
            Some(next) if !next.is_empty() => token = Some(next),
            _ => return Ok(items),
        }
    }
    anyhow::bail!("{what}: AWS still had more after {MAX_PAGES} pages")
}

/// More pages than any list of this stack's can take; a guard against a
/// token that never ends.
const MAX_PAGES: usize = 10_000;

/// This stack's APIs (by name and tag), oldest first: one, unless two runs
/// at once or a lost create sent again made more.
pub async fn find_apis(aws: &Aws, names: &Names) -> Result<Vec<aws_sdk_apigatewayv2::types::Api>> {
    let mut apis = all_pages("cannot list API Gateway APIs", |token| async move {
        let page = aws
            .apigateway
            .get_apis()
            .set_next_token(token)
            .send()
            .await
            .map_err(failed("cannot list API Gateway APIs"))?;
        Ok((page.items.unwrap_or_default(), page.next_token))
    })
    .await?;
    apis.retain(|api| {
        let ours = api.tags().and_then(|t| t.get(STACK_TAG)).map(String::as_str) == Some(names.stack.as_str());
        api.name() == Some(names.api().as_str()) && ours
    });
    apis.sort_by_key(|api| api.created_date().map(|d| (d.secs(), d.subsec_nanos())));
    Ok(apis)
}

pub async fn read_api(aws: &Aws, names: &Names) -> Result<Found<ApiState>> {
    let apis = find_apis(aws, names).await?;
    let chosen = match apis.len() {
        0 => return Ok(Found::Missing),
        1 => 0,
        // Two runs at once, or a lost create that was sent again, made more
        // than one: the one with the most routes is the one in use, then the
        // oldest.
        _ => {
            let routes = futures::future::try_join_all(
                apis.iter()
                    .map(|api| read_routes(aws, api.api_id().unwrap_or_default())),
            )
            .await?;
            (0..apis.len())
                .max_by_key(|i| (routes[*i].len(), std::cmp::Reverse(*i)))
                .unwrap_or(0)
        }
    };
    let api = &apis[chosen];
    let id = api.api_id().unwrap_or_default();
    let (routes, integrations, authorizers, stage) = tokio::join!(
        read_routes(aws, id),
        read_integrations(aws, id),
        read_authorizers(aws, id),
        aws.apigateway.get_stage().api_id(id).stage_name(&names.stage).send(),
    );
    let stage = match stage {
        Err(err) if is_code(&err, &["NotFoundException"]) => None,
        other => {
            let stage = other.map_err(failed("cannot read the API's stage"))?;
            Some(StageState {
                deployment_id: stage.deployment_id,
                description: stage.description,
                tags: stage.tags.unwrap_or_default().into_iter().collect(),
            })
        }
    };
    Ok(Found::Ours(ApiState {
        id: id.to_string(),
        protocol: api.protocol_type().map(|p| p.as_str().to_string()),
        route_selection_expression: api.route_selection_expression().map(str::to_string),
        routes: routes?,
        integrations: integrations?,
        authorizers: authorizers?,
        stage,
        duplicates: apis
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != chosen)
            .filter_map(|(_, api)| api.api_id().map(str::to_string))
            .collect(),
        tags: api.tags.clone().unwrap_or_default().into_iter().collect(),
    }))
}

/// Every route of an API, every page.
pub async fn read_routes(aws: &Aws, api_id: &str) -> Result<Vec<RouteState>> {
    all_pages("cannot read the API's routes", |token| async move {
        let page = aws
            .apigateway
            .get_routes()
            .api_id(api_id)
            .set_next_token(token)
            .send()
            .await
            .map_err(failed("cannot read the API's routes"))?;
        let routes = page
            .items()
            .iter()
            .map(|r| RouteState {
                id: r.route_id().unwrap_or_default().to_string(),
                key: r.route_key().unwrap_or_default().to_string(),
                target: r.target().map(str::to_string),
                authorization_type: r.authorization_type().map(|a| a.as_str().to_string()),
                authorizer_id: r.authorizer_id().map(str::to_string),
            })
            .collect();
        Ok((routes, page.next_token))
    })
    .await
}

/// Every integration of an API, every page.
pub async fn read_integrations(aws: &Aws, api_id: &str) -> Result<Vec<IntegrationState>> {
    all_pages("cannot read the API's integrations", |token| async move {
        let page = aws
            .apigateway
            .get_integrations()
            .api_id(api_id)
            .set_next_token(token)
            .send()
            .await
            .map_err(failed("cannot read the API's integrations"))?;
        let integrations = page
            .items()
            .iter()
            .map(|i| IntegrationState {
                id: i.integration_id().unwrap_or_default().to_string(),
                integration_type: i.integration_type().map(|t| t.as_str().to_string()),
                uri: i.integration_uri().map(str::to_string),
                method: i.integration_method().map(str::to_string),
            })
            .collect();
        Ok((integrations, page.next_token))
    })
    .await
}

/// Every authorizer of an API, every page.
pub async fn read_authorizers(aws: &Aws, api_id: &str) -> Result<Vec<AuthorizerState>> {
    all_pages("cannot read the API's authorizers", |token| async move {
        let page = aws
            .apigateway
            .get_authorizers()
            .api_id(api_id)
            .set_next_token(token)
            .send()
            .await
            .map_err(failed("cannot read the API's authorizers"))?;
        let authorizers = page
            .items()
            .iter()
            .map(|a| AuthorizerState {
                identity_sources: a.identity_source().to_vec(),
                id: a.authorizer_id().unwrap_or_default().to_string(),
                name: a.name().unwrap_or_default().to_string(),
                authorizer_type: a.authorizer_type().map(|t| t.as_str().to_string()),
                uri: a.authorizer_uri().map(str::to_string),
            })
            .collect();
        Ok((authorizers, page.next_token))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_statements_are_read_from_the_policy() {
        let policy = r#"{"Version":"2012-10-17","Statement":[{"Sid":"chatctl-invoke","Effect":"Allow","Principal":{"Service":"apigateway.amazonaws.com"},"Action":"lambda:InvokeFunction","Resource":"arn","Condition":{"ArnLike":{"AWS:SourceArn":"arn:aws:execute-api:r:1:abc/*/$connect"}}}]}"#;
        let statements = permission_statements(policy);
        assert_eq!(statements["chatctl-invoke"], "arn:aws:execute-api:r:1:abc/*/$connect");
        assert!(permission_statements("not json").is_empty());
    }

    #[tokio::test]
    async fn all_pages_follows_every_token_until_the_last_page() {
        let pages = &[
            (vec![1, 2], Some("a")),
            (vec![], Some("b")),
            (vec![3], Some("")),
            (vec![9], None),
        ];
        let items = all_pages("test", |token| async move {
            let at = match token.as_deref() {
                None => 0,
                Some("a") => 1,
                Some("b") => 2,
                Some(other) => panic!("unexpected token {other}"),
            };
            let (items, next) = pages[at].clone();
            Ok((items, next.map(str::to_string)))
        })
        .await
        .unwrap();
        assert_eq!(items, [1, 2, 3]);
    }

    #[test]
    fn only_a_matching_tag_makes_a_resource_ours() {
        assert_eq!(Found::classify("chat", Some("chat"), 1), Found::Ours(1));
        assert_eq!(
            Found::classify("chat", Some("other"), 1),
            Found::Foreign(Some("other".into()))
        );
        assert_eq!(Found::classify("chat", None, 1), Found::Foreign(None));
    }
}
