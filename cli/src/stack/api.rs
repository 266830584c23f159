//! The WebSocket API itself: find it (and duplicates), read it with its
//! parts, create, update, replace and delete it.

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use aws_sdk_apigatewayv2::types::{ProtocolType, RouteSettings};
use serde::Serialize;

use super::api_writes::{ApiWrites, sent_once};
use super::authorizer::{AuthorizerState, read_authorizers};
use super::base::{Action, Change, Detail, Found, Kind, Report, Stack, all_pages, live_id, step, tag_changes};
use super::desired::{AccessLog, ROUTE_SELECTION_EXPRESSION};
use super::integration::{IntegrationState, read_integrations};
use super::keep_alive::{KeepAliveState, read_keep_alive};
use super::log_group::log_group_exists;
use super::route::{RouteState, read_routes};
use super::tags::{Tagged, retag};
use super::{Names, STACK_TAG};
use crate::aws::{Aws, failed, is_code};
use crate::settings::Throttling;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApiState {
    pub id: String,
    pub protocol: Option<String>,
    pub route_selection_expression: Option<String>,
    pub routes: Vec<RouteState>,
    pub integrations: Vec<IntegrationState>,
    pub authorizers: Vec<AuthorizerState>,
    pub stage: Option<StageState>,
    /// The responses of the keep-alive's integration and route.
    pub keep_alive: KeepAliveState,
    /// Other APIs of this stack with the same name (an interrupted run or
    /// two runs at once made them): `up` and `down` delete them.
    pub duplicates: Vec<String>,
    /// Every tag, the stack's included.
    pub tags: BTreeMap<String, String>,
    /// The API's own `execute-api` endpoint is off (`[domain]
    /// disable_execute_api`).
    pub execute_api_disabled: bool,
    /// The stage's execution log group, once API Gateway has made it: ours
    /// by its name (it holds the API's id), deleted by `down`. Not part of a
    /// saved plan's fingerprint: API Gateway makes it when it likes.
    #[serde(skip)]
    pub execution_log_group: Option<String>,
}

/// This stack's APIs (by name and tag), oldest first: one, unless two runs
/// at once or a lost create sent again made more.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StageState {
    /// The settings of every route, unless a route has its own.
    pub default_route: Option<RouteSettingsState>,
    /// Route key → its own settings.
    pub routes: BTreeMap<String, RouteSettingsState>,
    /// Where and how it writes its access log, if it does.
    pub access_log: Option<AccessLog>,
    pub deployment_id: Option<String>,
    pub description: Option<String>,
    /// Every tag, the stack's included.
    pub tags: BTreeMap<String, String>,
}

impl StageState {
    /// Whether API Gateway publishes per-route metrics (the default route's setting).
    pub fn detailed_metrics(&self) -> bool {
        self.default_route
            .as_ref()
            .and_then(|d| d.detailed_metrics)
            .unwrap_or(false)
    }
}

/// A route's settings as API Gateway reports them.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RouteSettingsState {
    pub throttling_burst: Option<i32>,
    pub throttling_rate: Option<f64>,
    pub detailed_metrics: Option<bool>,
    pub logging_level: Option<String>,
}

impl From<&RouteSettings> for RouteSettingsState {
    fn from(settings: &RouteSettings) -> RouteSettingsState {
        RouteSettingsState {
            throttling_burst: settings.throttling_burst_limit(),
            throttling_rate: settings.throttling_rate_limit(),
            detailed_metrics: settings.detailed_metrics_enabled(),
            logging_level: settings.logging_level().map(|l| l.as_str().to_string()),
        }
    }
}

impl RouteSettingsState {
    pub(super) fn throttling(&self) -> Option<Throttling> {
        Some(Throttling {
            burst: self.throttling_burst?,
            rate: self.throttling_rate?,
        })
    }
}

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

/// The stack's deployed API; an error that says to run `up` when there is none.
pub async fn deployed_api(aws: &Aws, names: &Names) -> Result<ApiState> {
    match read_api(aws, names).await? {
        Found::Ours(api) => Ok(api),
        _ => bail!("stack {} is not deployed; run `chatctl up` first", names.stack),
    }
}

/// The id of the stack's deployed API; an error that says to run `up` when
/// there is none.
pub async fn deployed_api_id(aws: &Aws, names: &Names) -> Result<String> {
    Ok(deployed_api(aws, names).await?.id)
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
    let execution_log_group = names.execution_log_group(id);
    let (routes, integrations, authorizers, stage, execution_logs) = tokio::join!(
        read_routes(aws, id),
        read_integrations(aws, id),
        read_authorizers(aws, id),
        aws.apigateway.get_stage().api_id(id).stage_name(&names.stage).send(),
        log_group_exists(aws, &execution_log_group),
    );
    let execution_log_group = execution_logs?.then_some(execution_log_group);
    let (routes, integrations) = (routes?, integrations?);
    // A round of its own: it needs the routes' and integrations' ids.
    let keep_alive = read_keep_alive(aws, id, &routes, &integrations).await?;
    let stage = match stage {
        Err(err) if is_code(&err, &["NotFoundException"]) => None,
        other => {
            let stage = other.map_err(failed("cannot read the API's stage"))?;
            Some(StageState {
                default_route: stage.default_route_settings.as_ref().map(RouteSettingsState::from),
                routes: stage
                    .route_settings
                    .iter()
                    .flatten()
                    .map(|(route, settings)| (route.clone(), RouteSettingsState::from(settings)))
                    .collect(),
                access_log: stage.access_log_settings.and_then(|settings| {
                    Some(AccessLog {
                        destination_arn: settings.destination_arn?.trim_end_matches(":*").to_string(),
                        format: settings.format.unwrap_or_default(),
                    })
                }),
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
        routes,
        integrations,
        authorizers: authorizers?,
        stage,
        keep_alive,
        duplicates: apis
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != chosen)
            .filter_map(|(_, api)| api.api_id().map(str::to_string))
            .collect(),
        tags: api.tags.clone().unwrap_or_default().into_iter().collect(),
        execute_api_disabled: api.disable_execute_api_endpoint().unwrap_or(false),
        execution_log_group,
    }))
}

/// Makes the API its step says (deleting the duplicates first); returns its id.
pub(super) async fn ensure_api(
    aws: &Aws,
    (stack, name, disable_execute_api): (Stack<'_>, &str, bool),
    (api, duplicates): (&Change, &[&Change]),
    writes: &ApiWrites,
    report: Report<'_>,
) -> Result<String> {
    for duplicate in duplicates {
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
                    Detail::ExecuteApiEndpoint { disabled } => {
                        writes
                            .send("cannot turn the API's own endpoint on or off", || {
                                aws.apigateway
                                    .update_api()
                                    .api_id(&id)
                                    .disable_execute_api_endpoint(*disabled)
                                    .send()
                            })
                            .await?;
                    }
                    Detail::Tags { set, remove } => {
                        let arn = stack.names.api_arn(&id);
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
                    .disable_execute_api_endpoint(disable_execute_api)
                    .description(format!("chatctl stack {}", stack.names.stack))
                    .set_tags(Some(stack.tags.clone().into_iter().collect()))
                    .customize()
                    .config_override(sent_once())
                    .send()
                    .await?;
                Ok(created.api_id.unwrap_or_default())
            },
            || async move {
                let found = find_apis(aws, stack.names).await?;
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

/// Whether an API is a WebSocket API: one of another protocol (HTTP)
/// cannot become one, and is replaced.
pub fn is_websocket(api: &ApiState) -> bool {
    api.protocol.as_deref() == Some("WEBSOCKET")
}

/// What the API itself needs (its parts are planned on their own).
/// `disable_execute_api`: whether the API's own endpoint is to be off.
pub fn api_action(api: Option<&ApiState>, tags: &BTreeMap<String, String>, disable_execute_api: bool) -> Action {
    let Some(api) = api else {
        return Action::Create;
    };
    if !is_websocket(api) {
        return Action::Replace {
            reason: format!("protocol is {}", super::base::or_dash(&api.protocol)),
        };
    }
    let mut changes = vec![];
    if api.route_selection_expression.as_deref() != Some(ROUTE_SELECTION_EXPRESSION) {
        changes.push(Detail::RouteSelection);
    }
    if api.execute_api_disabled != disable_execute_api {
        changes.push(Detail::ExecuteApiEndpoint {
            disabled: disable_execute_api,
        });
    }
    changes.extend(tag_changes(&api.tags, tags));
    Action::update_or_nothing(changes)
}
