//! Executes a plan: exactly its steps, in dependency order, with independent
//! steps running concurrently, resolving the ids that exist only once a step
//! has run (a new API's, integration's, authorizer's), and waits until every
//! resource is usable. Nothing is decided here that the plan did not say.
//!
//! Order (each arrow a real dependency): role → function → integration →
//! route → deployment. Tables, log groups and the API run beside the roles.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures::future::try_join_all;

use super::Function;
use super::actual::Found;
use super::api_writes::ApiWrites;
use super::desired::Desired;
use super::plan::{self, Action, Detail, Kind, Plan};
use super::{api, authorizer, function, integration, log_group, permission, role, route, stage, table};
use crate::aws::Aws;

/// How often a state is polled while waiting for it: short enough that a
/// wait ends at most this much after its cause; seven functions polled this
/// often make 28 GetFunction calls a second, within its quota of 100/s
/// (aws-facts.md §10, "Lambda control-plane quota").
pub(super) const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// A resource that "already exists" when chatctl created it (the answer to
/// its create was lost and the SDK sent it again, aws-facts.md §10): taken
/// when it carries the stack's tag, else it is someone else's.
pub(super) fn taken_if_ours<T>(found: &Found<T>, kind: &str, name: &str) -> Result<()> {
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

pub(super) fn step(report: Report, kind: Kind, name: &str, done: impl Into<String>) {
    report(Step {
        kind: kind.as_str(),
        name: name.to_string(),
        done: done.into(),
    });
}

/// The tags to set and remove, if an update's changes include them.
pub(super) fn tag_detail(changes: &[Detail]) -> Option<(&BTreeMap<String, String>, &[String])> {
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
            .map(|spec| table::apply_table(aws, desired, spec, plan.action(Kind::Table, &spec.name), report)),
    );
    let writes = &ApiWrites::default();
    let probes = &function::RoleProbes::new(desired);
    let compute = async {
        // The log groups exist before the stage that writes its access log to one.
        let (_, api_id, _) = tokio::try_join!(
            try_join_all(desired.roles.iter().map(|spec| {
                let action = plan.action(Kind::Role, &spec.name);
                role::create_role(aws, desired, spec, action, report)
            })),
            api::ensure_api(aws, desired, plan, writes, report),
            try_join_all(desired.log_groups.iter().map(|spec| {
                let action = plan.action(Kind::LogGroup, &spec.name);
                log_group::apply_log_group(aws, desired, spec, action, report)
            })),
        )?;
        // An integration needs only its function's ARN, known from the name:
        // the API's parts are written while the functions are created and
        // wait for their role and Active state; only the permissions, which
        // name the authorizer's id, wait for both.
        let (_, _, authorizer_id) = tokio::try_join!(
            try_join_all(desired.roles.iter().map(|spec| {
                let action = plan.action(Kind::Role, &spec.name);
                role::update_role(aws, desired, spec, action, &api_id, report)
            })),
            try_join_all(desired.functions.iter().map(|spec| {
                let action = plan.action(Kind::Function, &spec.name);
                function::apply_function(aws, desired, spec, action, probes, report)
            })),
            async {
                stage::ensure_stage(aws, desired, plan, &api_id, writes, report).await?;
                apply_api_parts(aws, desired, plan, &api_id, writes, report).await
            },
        )?;
        permission::grant_permissions(aws, desired, plan, &api_id, &authorizer_id, report).await?;
        Ok::<_, anyhow::Error>(api_id)
    };
    let (tables, api_id) = tokio::join!(tables, compute);
    tables?;
    api_id
}

/// The plan's step for a resource it must list.
pub(super) fn planned<'a>(plan: &'a Plan, kind: Kind, name: &str) -> Result<&'a plan::Change> {
    plan.step(kind, name)
        .with_context(|| format!("the plan has no step for {kind} {name}; make a new plan"))
}

/// The id of a live API part the plan changes or keeps.
pub(super) fn live_id(change: &plan::Change) -> Result<String> {
    change.id.clone().with_context(|| {
        format!(
            "the plan names no id for {} {}; make a new plan",
            change.kind, change.name
        )
    })
}

/// The authorizer, integrations and routes, then a deployment when the
/// plan asks for one; returns the authorizer's id.
async fn apply_api_parts(
    aws: &Aws,
    desired: &Desired,
    plan: &Plan,
    api_id: &str,
    writes: &ApiWrites,
    report: Report<'_>,
) -> Result<String> {
    let names = &desired.names;
    // The authorizer and the integrations need only the functions' names.
    let (authorizer_id, integrations) = tokio::try_join!(
        authorizer::apply_authorizer(aws, desired, plan, api_id, writes, report),
        try_join_all(desired.api.routes.iter().map(|route| async move {
            let id =
                integration::apply_integration(aws, desired, plan, route.function, (api_id, writes), report).await?;
            Ok::<_, anyhow::Error>((route.function, id))
        })),
    )?;
    let integration_id = |function: Function| {
        integrations
            .iter()
            .find(|(f, _)| *f == function)
            .map(|(_, id)| id.clone())
            .unwrap_or_default()
    };

    let routes = try_join_all(desired.api.routes.iter().map(|spec| {
        let write = route::RouteWrite {
            key: &spec.key,
            target: format!("integrations/{}", integration_id(spec.function)),
            authorizer_id: spec.authorized.then(|| authorizer_id.clone()),
        };
        async move { route::apply_route(aws, plan, write, (api_id, writes), report).await }
    }));
    let extra_routes = try_join_all(
        plan.deletions(Kind::Route)
            .map(|change| route::delete_route(aws, change, (api_id, writes), report)),
    );
    tokio::try_join!(routes, extra_routes)?;
    stage::apply_route_settings(aws, desired, plan, api_id, writes).await?;

    let stage = planned(plan, Kind::Stage, &desired.api.stage)?;
    let deploy_now = match &stage.action {
        Action::Create => true,
        Action::Update { changes } => changes.contains(&Detail::Deployment),
        _ => false,
    };
    if deploy_now {
        let authorizer_uri = names.invocation_uri(Function::Authorizer);
        let served: Vec<stage::ServedRoute> = desired
            .api
            .routes
            .iter()
            .map(|route| stage::ServedRoute {
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
        stage::deploy(aws, desired, (api_id, writes), &served, report).await?;
    }
    Ok(authorizer_id)
}
