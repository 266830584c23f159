//! The API's stage and its deployments: what the stage serves (a
//! fingerprint of the routes), create, retag and deploy.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::api::ApiState;
use super::api_writes::{ApiWrites, sent_once};
use super::apply::{Report, step, tag_detail};
use super::desired::Desired;
use super::plan::{Action, Detail, Kind, Plan, tag_changes};
use super::tags::{Tagged, retag};
use crate::aws::{Aws, failed, is_code};

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

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StageState {
    pub deployment_id: Option<String>,
    pub description: Option<String>,
    /// Every tag, the stack's included.
    pub tags: BTreeMap<String, String>,
}

/// Creates the stage when the plan says so, or retags it; deployments
/// come once the routes are written.
pub(super) async fn ensure_stage(
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
pub(super) async fn deploy(
    aws: &Aws,
    desired: &Desired,
    (api_id, writes): (&str, &ApiWrites),
    served: &[ServedRoute],
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

/// What the stage needs: a new deployment when a part of the API changes
/// or it serves stale routes, and its tags.
pub fn stage_action(
    stage: Option<(&ApiState, &StageState)>,
    parts_changed: bool,
    tags: &BTreeMap<String, String>,
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
    changes.extend(tag_changes(&stage.tags, tags));
    Action::update_or_nothing(changes)
}
