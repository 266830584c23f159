//! The API's stage and its deployments: what the stage serves (a
//! fingerprint of the routes), create, retag and deploy.

use std::collections::{BTreeMap, HashMap};

use anyhow::{Context, Result};
use aws_sdk_apigatewayv2::types::{AccessLogSettings, LoggingLevel, RouteSettings};
use sha2::{Digest, Sha256};

use super::api::{ApiState, RouteSettingsState, StageState};
use super::api_writes::{ApiWrites, sent_once};
use super::base::{Action, Detail, Kind, Report, Stack, step, tag_changes, tag_detail};
pub use super::desired::{ACCESS_LOG_FIELDS, access_log_format};
use super::desired::{AccessLog, ApiSpec};
use super::tags::{Tagged, retag};
use crate::aws::{Aws, AwsError, failed, is_code};
use crate::settings::{StageSettings, Throttling};

/// Stage descriptions start with this, followed by the routes' fingerprint,
/// so a stage serving stale routes is seen as drift.
pub const DEPLOYMENT_MARKER: &str = "chatctl deployment ";

/// A route as a deployment serves it: what it targets, by id and URI.
#[derive(Debug, Clone, PartialEq)]
pub struct ServedRoute {
    pub key: String,
    pub target: Option<String>,
    pub integration_uri: Option<String>,
    pub integration_type: Option<String>,
    pub authorization: String,
    pub authorizer_id: Option<String>,
    pub authorizer_name: Option<String>,
    pub authorizer_uri: Option<String>,
}

/// What the stage serves for the keep-alive route once deployed.
pub fn keep_alive_route(integration_id: &str) -> ServedRoute {
    ServedRoute {
        key: super::keep_alive::ROUTE_KEY.into(),
        target: Some(format!("integrations/{integration_id}")),
        integration_uri: None,
        integration_type: Some(super::keep_alive::MOCK.into()),
        authorization: "NONE".into(),
        authorizer_id: None,
        authorizer_name: None,
        authorizer_uri: None,
    }
}

/// The routes an API has now, resolved to their integrations and authorizer.
pub fn served_routes(api: &ApiState) -> Vec<ServedRoute> {
    api.routes
        .iter()
        .map(|route| {
            let integration = route
                .target
                .as_deref()
                .and_then(|t| t.strip_prefix("integrations/"))
                .and_then(|id| api.integrations.iter().find(|i| i.id == id));
            let authorization = route.authorization_type.clone().unwrap_or_else(|| "NONE".into());
            let authorizer_id = route.authorizer_id.clone().filter(|_| authorization == "CUSTOM");
            let authorizer = authorizer_id
                .as_deref()
                .and_then(|id| api.authorizers.iter().find(|a| a.id == id));
            ServedRoute {
                key: route.key.clone(),
                target: route.target.clone(),
                integration_uri: integration.and_then(|i| i.uri.clone()),
                integration_type: integration.and_then(|i| i.integration_type.clone()),
                authorization,
                // An authorizer that is gone is named by its id.
                authorizer_name: authorizer.map(|a| a.name.clone()).or_else(|| authorizer_id.clone()),
                authorizer_uri: authorizer.and_then(|a| a.uri.clone()),
                authorizer_id,
            }
        })
        .collect()
}

/// The stage's description after a deployment: a fingerprint of the routes
/// it serves, resolved to ids. A stage whose description differs from the
/// fingerprint of the API's routes now serves stale routes (for instance
/// after an `up` that changed a route and failed before deploying).
pub fn deployment_description(routes: &[ServedRoute]) -> String {
    let mut routes: Vec<&ServedRoute> = routes.iter().collect();
    routes.sort_by(|a, b| a.key.cmp(&b.key));
    let mut hasher = Sha256::new();
    for r in routes {
        hasher.update(format!(
            "{}|{}|{}|{}|{}|{}\n",
            r.key,
            r.target.as_deref().unwrap_or(""),
            r.integration_uri.as_deref().unwrap_or(""),
            r.authorization,
            r.authorizer_id.as_deref().unwrap_or(""),
            r.authorizer_uri.as_deref().unwrap_or("")
        ));
    }
    let digest = hasher.finalize();
    let fingerprint: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("{DEPLOYMENT_MARKER}{fingerprint}")
}

fn access_log_settings(access_log: &AccessLog) -> AccessLogSettings {
    AccessLogSettings::builder()
        .destination_arn(&access_log.destination_arn)
        .format(&access_log.format)
        .build()
}

/// Creates the stage when the plan says so, or retags it; deployments
/// come once the routes are written.
pub(super) async fn ensure_stage(
    aws: &Aws,
    (stack, api): (Stack<'_>, &ApiSpec),
    action: &Action,
    api_id: &str,
    writes: &ApiWrites,
    report: Report<'_>,
) -> Result<()> {
    let stage_name = &api.stage;
    match action {
        Action::Create => {}
        Action::Update { changes } => {
            // The stage-wide settings now; each route's own once the
            // routes exist (see `apply_route_settings`).
            let stage_wide = changes.iter().any(|c| {
                matches!(
                    c,
                    Detail::Throttling { route: None, .. }
                        | Detail::DetailedMetrics { .. }
                        | Detail::LoggingLevel { .. }
                )
            });
            if let Some(default) = default_route_settings(&api.settings).filter(|_| stage_wide) {
                writes
                    .send(format!("cannot update the settings of stage {stage_name}"), || {
                        aws.apigateway
                            .update_stage()
                            .api_id(api_id)
                            .stage_name(stage_name)
                            .default_route_settings(default.clone())
                            .send()
                    })
                    .await
                    .map_err(explain_logging_role)?;
                step(report, Kind::Stage, stage_name, "settings updated");
            }
            if changes.iter().any(|c| matches!(c, Detail::AccessLogs { .. })) {
                set_access_log(aws, api, api_id, writes).await?;
                step(report, Kind::Stage, stage_name, "access log set");
            }
            if let Some((set, remove)) = tag_detail(changes) {
                let arn = stack.names.stage_arn(api_id);
                retag(aws, Tagged::Stage(&arn), set, remove).await?;
            }
            return Ok(());
        }
        _ => return Ok(()),
    }
    let default = default_route_settings(&api.settings);
    writes
        .create_or_adopt(
            format!("cannot create stage {stage_name}"),
            || async {
                aws.apigateway
                    .create_stage()
                    .api_id(api_id)
                    .stage_name(stage_name)
                    .set_default_route_settings(default.clone())
                    .set_access_log_settings(api.access_log.as_ref().map(access_log_settings))
                    .set_tags(Some(stack.tags.clone().into_iter().collect()))
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
        .await
        .map_err(explain_logging_role)?;
    step(report, Kind::Stage, stage_name, "created");
    Ok(())
}

/// Points the stage's access log at the stack's log group, or turns it off.
async fn set_access_log(aws: &Aws, api: &ApiSpec, api_id: &str, writes: &ApiWrites) -> Result<()> {
    let stage_name = &api.stage;
    match &api.access_log {
        Some(access_log) => writes
            .send(format!("cannot set the access log of stage {stage_name}"), || {
                aws.apigateway
                    .update_stage()
                    .api_id(api_id)
                    .stage_name(stage_name)
                    .access_log_settings(access_log_settings(access_log))
                    .send()
            })
            .await
            .map(|_| ())
            .map_err(explain_logging_role),
        None => {
            writes
                .send(
                    format!("cannot turn off the access log of stage {stage_name}"),
                    || async {
                        match aws
                            .apigateway
                            .delete_access_log_settings()
                            .api_id(api_id)
                            .stage_name(stage_name)
                            .send()
                            .await
                        {
                            // Already off.
                            Err(err) if is_code(&err, &["NotFoundException"]) => Ok(()),
                            other => other.map(|_| ()),
                        }
                    },
                )
                .await
        }
    }
}

/// Makes the stage serve the routes as written: a new deployment, marked
/// with their fingerprint.
pub(super) async fn deploy(
    aws: &Aws,
    api: &ApiSpec,
    (api_id, writes): (&str, &ApiWrites),
    served: &[ServedRoute],
    report: Report<'_>,
) -> Result<()> {
    let client = &aws.apigateway;
    let stage_name = &api.stage;
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

/// What the stage needs: a new deployment when a part of the API changes
/// or it serves stale routes, and its tags.
pub fn stage_action(
    stage: Option<(&ApiState, &StageState)>,
    parts_changed: bool,
    tags: &BTreeMap<String, String>,
    spec: &ApiSpec,
) -> Action {
    let Some((api, stage)) = stage else {
        return Action::Create;
    };
    let mut changes = vec![];
    let wanted_description = deployment_description(&served_routes(api));
    if parts_changed
        || stage.deployment_id.is_none()
        || stage.description.as_deref() != Some(wanted_description.as_str())
    {
        changes.push(Detail::Deployment);
    }
    changes.extend(settings_changes(stage, &spec.settings));
    if stage.access_log != spec.access_log {
        changes.push(Detail::AccessLogs {
            to: spec.access_log.is_some(),
        });
    }
    changes.extend(tag_changes(&stage.tags, tags));
    Action::update_or_nothing(changes)
}

/// What differs in the stage's settings.
fn settings_changes(stage: &StageState, want: &StageSettings) -> Vec<Detail> {
    let mut changes = vec![];
    let have = stage.default_route.clone().unwrap_or_default();
    if !want.manages_defaults {
        // Left to the account's limits: nothing to compare.
    } else if have.throttling() != Some(want.throttling) {
        changes.push(Detail::Throttling {
            route: None,
            from: have.throttling(),
            to: want.throttling,
        });
    }
    if want.manages_defaults && have.detailed_metrics.unwrap_or(false) != want.detailed_metrics {
        changes.push(Detail::DetailedMetrics {
            to: want.detailed_metrics,
        });
    }
    if want.manages_defaults && have.logging_level.as_deref().unwrap_or("OFF") != want.logging_level.as_aws() {
        changes.push(Detail::LoggingLevel {
            from: have.logging_level.clone(),
            to: want.logging_level.as_aws().into(),
        });
    }
    for (route, limits) in &want.routes {
        let have = stage.routes.get(route).and_then(RouteSettingsState::throttling);
        if have != Some(*limits) {
            changes.push(Detail::Throttling {
                route: Some(route.clone()),
                from: have,
                to: *limits,
            });
        }
    }
    for route in stage.routes.keys().filter(|r| !want.routes.contains_key(*r)) {
        changes.push(Detail::RouteSettingsRemoved { route: route.clone() });
    }
    changes
}

/// Settings as API Gateway takes them: always with both throttling values,
/// since a missing one is taken as 0 (aws-facts.md §10, "stage settings";
/// terraform-provider-aws #14742), and the stage's metrics and logging.
fn route_settings(limits: Throttling, settings: &StageSettings) -> RouteSettings {
    RouteSettings::builder()
        .throttling_burst_limit(limits.burst)
        .throttling_rate_limit(limits.rate)
        .detailed_metrics_enabled(settings.detailed_metrics)
        .logging_level(LoggingLevel::from(settings.logging_level.as_aws()))
        .data_trace_enabled(false)
        .build()
}

/// The stage's default route settings, when chatctl.toml sets them.
fn default_route_settings(settings: &StageSettings) -> Option<RouteSettings> {
    settings
        .manages_defaults
        .then(|| route_settings(settings.throttling, settings))
}

/// Every route's own settings.
fn own_route_settings(settings: &StageSettings) -> HashMap<String, RouteSettings> {
    settings
        .routes
        .iter()
        .map(|(route, limits)| (route.clone(), route_settings(*limits, settings)))
        .collect()
}

/// Each route's own settings, once the routes exist: API Gateway refuses
/// settings for a route key it does not have yet ("Unable to find Route by
/// key … within the provided RouteSettings", terraform-aws-apigateway-v2
/// PR #80). Runs when the stage is new or its settings change; removes the
/// route settings chatctl.toml no longer has.
pub(super) async fn apply_route_settings(
    aws: &Aws,
    api: &ApiSpec,
    action: &Action,
    api_id: &str,
    writes: &ApiWrites,
) -> Result<()> {
    let stage_name = &api.stage;
    let routes = own_route_settings(&api.settings);
    let (new_stage, changes) = match action {
        Action::Create => (true, &[][..]),
        Action::Update { changes } => (false, changes.as_slice()),
        _ => return Ok(()),
    };
    let settings_changed = changes.iter().any(|c| {
        matches!(
            c,
            Detail::Throttling { .. } | Detail::DetailedMetrics { .. } | Detail::LoggingLevel { .. }
        )
    });
    if !routes.is_empty() && (new_stage || settings_changed) {
        writes
            .send(format!("cannot set the route settings of stage {stage_name}"), || {
                aws.apigateway
                    .update_stage()
                    .api_id(api_id)
                    .stage_name(stage_name)
                    .set_route_settings(Some(routes.clone()))
                    .send()
            })
            .await
            .map_err(explain_logging_role)?;
    }
    for change in changes {
        if let Detail::RouteSettingsRemoved { route } = change {
            writes
                .send(format!("cannot remove the settings of route {route}"), || async {
                    match aws
                        .apigateway
                        .delete_route_settings()
                        .api_id(api_id)
                        .stage_name(stage_name)
                        .route_key(route)
                        .send()
                        .await
                    {
                        Err(err) if is_code(&err, &["NotFoundException"]) => Ok(()),
                        other => other.map(|_| ()),
                    }
                })
                .await?;
        }
    }
    Ok(())
}

/// API Gateway logs only once the account has a CloudWatch Logs role: its
/// answer otherwise, BadRequestException "CloudWatch Logs role ARN must be
/// set in account settings to enable logging" (aws-facts.md §10, "stage
/// settings"), becomes what to do.
fn explain_logging_role(error: anyhow::Error) -> anyhow::Error {
    // API Gateway gives this refusal no code of its own: the code and AWS's
    // message are read from the typed error, not from the printed chain.
    let no_logging_role = AwsError::of(&error).is_some_and(|e| {
        e.code.as_deref() == Some("BadRequestException") && e.message.contains("CloudWatch Logs role ARN must be set")
    });
    if no_logging_role {
        return error.context(
            "API Gateway cannot write logs in this account and region: it has no CloudWatch Logs role. \
             Set one once (a role that apigateway.amazonaws.com may assume, with the managed policy \
             AmazonAPIGatewayPushToCloudWatchLogs): `aws apigateway update-account --patch-operations \
             op=replace,path=/cloudwatchRoleArn,value=ROLE_ARN`; or set logging_level = \"off\" in \
             [stage_settings]. chatctl does not change account-wide settings",
        );
    }
    error
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{ACCOUNT_THROTTLING, LoggingLevel as Level};

    fn settings() -> StageSettings {
        StageSettings {
            manages_defaults: true,
            throttling: Throttling {
                burst: 200,
                rate: 100.0,
            },
            detailed_metrics: true,
            logging_level: Level::Off,
            access_logs: false,
            routes: BTreeMap::from([("sendmessage".to_string(), Throttling { burst: 20, rate: 10.0 })]),
        }
    }

    #[test]
    fn every_settings_object_carries_both_throttling_values() {
        let (default, routes) = (
            default_route_settings(&settings()).unwrap(),
            own_route_settings(&settings()),
        );
        for object in std::iter::once(&default).chain(routes.values()) {
            assert!(object.throttling_burst_limit().is_some() && object.throttling_rate_limit().is_some());
            assert_eq!(object.detailed_metrics_enabled(), Some(true));
        }
        assert_eq!(routes["sendmessage"].throttling_burst_limit(), Some(20));
    }

    #[test]
    fn settings_changes_name_what_differs() {
        let want = settings();
        let state = |burst: i32, routes: &[&str]| StageState {
            default_route: Some(RouteSettingsState {
                throttling_burst: Some(burst),
                throttling_rate: Some(100.0),
                detailed_metrics: Some(true),
                logging_level: Some("OFF".into()),
            }),
            routes: routes
                .iter()
                .map(|r| {
                    let limits = RouteSettingsState {
                        throttling_burst: Some(20),
                        throttling_rate: Some(10.0),
                        ..Default::default()
                    };
                    (r.to_string(), limits)
                })
                .collect(),
            access_log: None,
            deployment_id: None,
            description: None,
            tags: BTreeMap::new(),
        };
        assert_eq!(settings_changes(&state(200, &["sendmessage"]), &want), []);
        let changes = settings_changes(&state(1, &["join"]), &want);
        let text: Vec<String> = changes.iter().map(|c| c.to_string()).collect();
        assert_eq!(
            text,
            [
                "throttling 1 burst, 100/s → 200 burst, 100/s",
                "throttling of sendmessage - → 20 burst, 10/s",
                "- throttling of join"
            ]
        );
        // Settings chatctl.toml does not set are left as they are.
        let unmanaged = StageSettings {
            manages_defaults: false,
            routes: BTreeMap::new(),
            ..settings()
        };
        assert_eq!(settings_changes(&state(1, &[]), &unmanaged), []);
        // A stage made before chatctl set throttling, now asked for metrics:
        // the account's default limits go with them, explicitly.
        let mut bare = state(0, &[]);
        bare.default_route = None;
        let defaults = StageSettings {
            manages_defaults: true,
            throttling: ACCOUNT_THROTTLING,
            detailed_metrics: false,
            logging_level: Level::Off,
            access_logs: false,
            routes: BTreeMap::new(),
        };
        assert_eq!(
            settings_changes(&bare, &defaults),
            [Detail::Throttling {
                route: None,
                from: None,
                to: ACCOUNT_THROTTLING
            }]
        );
    }

    #[test]
    fn the_access_log_format_is_json_of_context_variables_with_the_request_id() {
        let format: serde_json::Value = serde_json::from_str(&access_log_format()).unwrap();
        assert_eq!(format["requestId"], "$context.requestId");
        assert_eq!(format["status"], "$context.status");
        assert_eq!(format.as_object().unwrap().len(), ACCESS_LOG_FIELDS.len());
    }
}
