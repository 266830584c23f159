//! Executes a plan: exactly its steps, in dependency order, with independent
//! steps running concurrently, resolving the ids that exist only once a step
//! has run (a new API's, integration's, authorizer's), and waits until every
//! resource is usable. Nothing is decided here that the plan did not say.
//!
//! Order (each arrow a real dependency): bucket → code upload → function →
//! release (versions, alias `live`) → permission → deployment; integration
//! → route → deployment. Tables, log groups and the API run beside the roles.

use anyhow::{Context, Result, bail};
use futures::future::try_join_all;

use super::Function;
use super::api_writes::ApiWrites;
use super::base::{self, live_id};
pub use super::base::{Report, Step};
use super::desired::Desired;
use super::plan::{self, Action, Detail, Kind, Plan};
use super::{
    alarms, api, authorizer, bucket, domain, function, integration, keep_alive, log_group, permission, release, role,
    route, secret, stage, table,
};
use crate::aws::Aws;

/// Executes `plan` with the values it holds, and nothing else; returns the
/// API id.
pub async fn apply(aws: &Aws, plan: &Plan, report: Report<'_>) -> Result<String> {
    let desired = &plan.values;
    let stack = desired.stack();
    let tables = try_join_all(
        desired
            .tables
            .iter()
            .map(|spec| table::apply_table(aws, stack, spec, plan.action(Kind::Table, &spec.name), report)),
    );
    let writes = &ApiWrites::default();
    let probes = &function::RoleProbes::new(stack, &desired.roles);
    let compute = async {
        // The log groups exist before the stage that writes its access log to
        // one; the secret before the authorizer is updated (a secret moved
        // from its environment is read there first).
        let (_, api_id, _, _, _, _) = tokio::try_join!(
            try_join_all(desired.roles.iter().map(|spec| {
                let action = plan.action(Kind::Role, &spec.name);
                role::create_role(aws, stack, spec, action, report)
            })),
            async {
                let duplicates: Vec<&plan::Change> = plan.deletions(Kind::Api).collect();
                let api = planned(plan, Kind::Api, &desired.api.name)?;
                let disable_execute_api = desired.domain.as_ref().is_some_and(|d| d.disable_execute_api);
                let name = (stack, desired.api.name.as_str(), disable_execute_api);
                api::ensure_api(aws, name, (api, &duplicates), writes, report).await
            },
            try_join_all(desired.log_groups.iter().map(|spec| {
                let action = plan.action(Kind::LogGroup, &spec.name);
                log_group::apply_log_group(aws, stack, spec, action, report)
            })),
            async {
                let Some(spec) = &desired.secret else {
                    return Ok(());
                };
                let authorizer = plan.action(Kind::Function, &desired.names.function(Function::Authorizer));
                let moved = authorizer.changes().contains(&Detail::MoveTokenSecret);
                secret::apply_secret(aws, stack, spec, plan.action(Kind::Secret, &spec.name), moved, report).await
            },
            // The bucket, then the code the functions are made from.
            async {
                apply_bucket(aws, desired, plan.action(Kind::Bucket, &desired.names.bucket()), report).await?;
                upload_code(aws, desired, plan).await
            },
            // The domain name needs only its certificate, its records only it.
            apply_domain(aws, desired, plan, report),
        )?;
        // An integration needs only its function's ARN, known from the name:
        // the API's parts are written while the functions are created and
        // wait for their role and Active state; only the permissions, which
        // name the authorizer's id, wait for both.
        let (_, _, (authorizer_id, deployment), _) = tokio::try_join!(
            try_join_all(desired.roles.iter().map(|spec| {
                let action = plan.action(Kind::Role, &spec.name);
                let policy = desired.role_policy(spec, &api_id);
                async move { role::update_role(aws, spec, action, &policy, report).await }
            })),
            // The functions, then their release: the API runs it once the
            // seven aliases move.
            async {
                try_join_all(desired.functions.iter().map(|spec| {
                    let action = plan.action(Kind::Function, &spec.name);
                    function::apply_function(aws, stack, spec, action, probes, report)
                }))
                .await?;
                release::apply_release(aws, desired, plan.action(Kind::Release, release::ALIAS), report).await
            },
            async {
                let stage = &planned(plan, Kind::Stage, &desired.api.stage)?.action;
                stage::ensure_stage(aws, (stack, &desired.api), stage, &api_id, writes, report).await?;
                apply_api_parts(aws, desired, plan, &api_id, writes, report).await
            },
            // The alarms name the topic and the API.
            async {
                let Some(spec) = &desired.alarms else {
                    return Ok(());
                };
                let topic = plan.action(Kind::Topic, &spec.topic);
                let topic_arn = alarms::apply_topic(aws, stack, spec, topic, report).await?;
                try_join_all(spec.alarms.iter().map(|alarm| {
                    let action = plan.action(Kind::Alarm, &alarm.name);
                    alarms::apply_alarm(aws, stack, alarm, action, (&api_id, &topic_arn), report)
                }))
                .await
                .map(|_| ())
            },
        )?;
        let permissions: Vec<(Function, &Action)> = Function::ALL
            .into_iter()
            .map(|f| (f, plan.action(Kind::Permission, &desired.names.function(f))))
            .collect();
        permission::grant_permissions(aws, stack, &permissions, &api_id, &authorizer_id, report).await?;
        // Served once what it invokes can be invoked: the aliases and
        // their permissions.
        if let Some(served) = deployment {
            stage::deploy(aws, &desired.api, (&api_id, writes), &served, report).await?;
        }
        // The domain serves the stage once the stage serves the routes.
        if let Some(spec) = &desired.domain {
            let mapping = planned(plan, Kind::Mapping, &spec.name)?;
            domain::apply_mapping(aws, mapping, (&api_id, &desired.api.stage), report).await?;
        }
        // Domain names `[domain]` no longer names go with their records and
        // mappings; other paths on the stack's domain name go.
        for step in plan.deletions(Kind::Domain) {
            domain::delete_domain(aws, &step.name).await?;
            base::step(report, Kind::Domain, &step.name, "deleted");
        }
        for step in plan.deletions(Kind::Mapping) {
            if plan.deletions(Kind::Domain).all(|d| d.name != step.name) {
                domain::delete_mapping(aws, &step.name, &live_id(step)?).await?;
                base::step(report, Kind::Mapping, &step.name, "deleted");
            }
        }
        // Certificates of the stack's no domain name serves with any more;
        // their validation records stay while `[domain]` names a domain
        // (another certificate for the name shares them).
        for step in plan.deletions(Kind::Certificate) {
            domain::delete_certificate(aws, &live_id(step)?, desired.domain.is_none()).await?;
            base::step(report, Kind::Certificate, &step.name, "deleted");
        }
        // Alarms `[alarms]` no longer asks for; the topic when it asks for none.
        for step in plan.deletions(Kind::Alarm) {
            alarms::delete_alarm(aws, &step.name).await?;
            base::step(report, Kind::Alarm, &step.name, "deleted");
        }
        for step in plan.deletions(Kind::Topic) {
            alarms::delete_topic(aws, &desired.names.alarm_topic_arn()).await?;
            base::step(report, Kind::Topic, &step.name, "deleted");
        }
        // Once the authorizer no longer reads it (another auth mode).
        for step in plan.deletions(Kind::Secret) {
            secret::delete_secret(aws, &step.name).await?;
            base::step(report, Kind::Secret, &step.name, "deleted");
        }
        Ok::<_, anyhow::Error>(api_id)
    };
    let (tables, api_id) = tokio::join!(tables, compute);
    tables?;
    api_id
}

async fn apply_bucket(aws: &Aws, desired: &Desired, action: &Action, report: Report<'_>) -> Result<()> {
    let name = desired.names.bucket();
    match action {
        Action::Create => {
            bucket::ensure_bucket(aws, &desired.names, &desired.tags).await?;
            base::step(report, Kind::Bucket, &name, "created");
        }
        Action::Update { changes } => {
            for change in changes {
                if let Detail::Tags { set, remove } = change {
                    bucket::retag_bucket(aws, &name, set, remove).await?;
                }
            }
            base::step(report, Kind::Bucket, &name, "updated");
        }
        _ => {}
    }
    Ok(())
}

/// Creates or updates the domain name, then points its records at it.
async fn apply_domain(aws: &Aws, desired: &Desired, plan: &Plan, report: Report<'_>) -> Result<()> {
    let Some(spec) = &desired.domain else {
        return Ok(());
    };
    let (domain_action, records) = (
        plan.action(Kind::Domain, &spec.name),
        planned(plan, Kind::Record, &spec.name)?,
    );
    // None: no zone of the account holds the name (records by hand).
    let zone = records.id.as_deref();
    let certificate = match &spec.certificate_arn {
        Some(arn) => arn.clone(),
        None => {
            let step = planned(plan, Kind::Certificate, &spec.name)?;
            domain::apply_certificate(aws, desired.stack(), step, zone, report).await?
        }
    };
    if *domain_action == Action::NoChange && records.action == Action::NoChange {
        return Ok(());
    }
    let name = (spec.name.as_str(), certificate.as_str());
    let domain = domain::apply_domain(aws, desired.stack(), name, zone, domain_action, report).await?;
    domain::apply_records(aws, records, &domain, report).await
}

/// Uploads, once, the zip of each build the plan creates or updates a
/// function from (one build serves all seven functions), unless the
/// bucket has it already.
async fn upload_code(aws: &Aws, desired: &Desired, plan: &Plan) -> Result<()> {
    let mut builds = std::collections::BTreeMap::new();
    for spec in &desired.functions {
        let action = plan.action(Kind::Function, &spec.name);
        let new_code = *action == Action::Create || action.changes().iter().any(Detail::is_function_code);
        if new_code && let Some(code) = &spec.code {
            builds.insert(code.sha256.clone(), code);
        }
    }
    let bucket = desired.names.bucket();
    try_join_all(builds.values().map(|code| bucket::upload_artifact(aws, &bucket, code))).await?;
    Ok(())
}

/// The plan's step for a resource it must list.
pub(super) fn planned<'a>(plan: &'a Plan, kind: Kind, name: &str) -> Result<&'a plan::Change> {
    plan.step(kind, name)
        .with_context(|| format!("the plan has no step for {kind} {name}; make a new plan"))
}

/// The authorizer, integrations and routes; returns the authorizer's id and,
/// when the plan asks for a deployment, the routes it is to serve.
async fn apply_api_parts(
    aws: &Aws,
    desired: &Desired,
    plan: &Plan,
    api_id: &str,
    writes: &ApiWrites,
    report: Report<'_>,
) -> Result<(String, Option<Vec<stage::ServedRoute>>)> {
    let (names, stack) = (&desired.names, desired.stack());
    // The authorizer and the integrations need only the functions' names.
    let (authorizer_id, integrations) = tokio::try_join!(
        async {
            let step = planned(plan, Kind::Authorizer, &desired.api.authorizer)?;
            authorizer::apply_authorizer(aws, (stack, &desired.api.authorizer), step, api_id, writes, report).await
        },
        try_join_all(desired.api.routes.iter().map(|route| async move {
            let step = planned(plan, Kind::Integration, &names.function(route.function))?;
            let id = integration::apply_integration(aws, stack, step, route.function, (api_id, writes), report).await?;
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
        async move {
            let step = planned(plan, Kind::Route, &spec.key)?;
            route::apply_route(aws, step, write, (api_id, writes), report).await
        }
    }));
    let extra_routes = try_join_all(
        plan.deletions(Kind::Route)
            .map(|change| route::delete_route(aws, change, (api_id, writes), report)),
    );
    let keep_alive = async {
        let integration = planned(plan, Kind::Integration, keep_alive::INTEGRATION_NAME)?;
        let route = planned(plan, Kind::Route, keep_alive::ROUTE_KEY)?;
        keep_alive::apply_keep_alive(aws, (integration, route), (api_id, writes), report).await
    };
    let (_, _, keep_alive_integration) = tokio::try_join!(routes, extra_routes, keep_alive)?;
    let stage = planned(plan, Kind::Stage, &desired.api.stage)?;
    stage::apply_route_settings(aws, &desired.api, &stage.action, api_id, writes).await?;

    let deploy_now = match &stage.action {
        Action::Create => true,
        Action::Update { changes } => changes.contains(&Detail::Deployment),
        _ => false,
    };
    if !deploy_now {
        return Ok((authorizer_id, None));
    }
    let authorizer_uri = names.invocation_uri(Function::Authorizer);
    let mut served: Vec<stage::ServedRoute> = desired
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
    served.push(stage::keep_alive_route(&keep_alive_integration));
    Ok((authorizer_id, Some(served)))
}

/// Executes a plan of delete steps (`down`'s): the API, the functions,
/// then roles, tables and the secret together, log groups last; each kind's steps
/// concurrently. A step that is not a deletion is refused before anything
/// is deleted.
pub async fn delete(
    aws: &Aws,
    steps: &[plan::Change],
    report: Report<'_>,
    lock: &mut Option<super::lock::Lock>,
) -> Result<()> {
    for step in steps {
        if step.action != Action::Delete {
            bail!("{} {} is not a deletion; `down` only deletes", step.kind, step.name);
        }
        if !matches!(
            step.kind,
            Kind::Api
                | Kind::Function
                | Kind::Role
                | Kind::Table
                | Kind::LogGroup
                | Kind::Secret
                | Kind::Alarm
                | Kind::Topic
                | Kind::Bucket
                | Kind::Domain
                | Kind::Certificate
                | Kind::Mapping
                | Kind::Record
        ) {
            bail!(
                "`down` deletes a {} ({}) with its API, not on its own",
                step.kind,
                step.name
            );
        }
    }
    let writes = &ApiWrites::default();
    let of = |kind: Kind| steps.iter().filter(move |s| s.kind == kind);
    let done = |step: &plan::Change| base::step(report, step.kind, &step.name, "deleted");
    // The domain names first: their records, then mappings (which name the
    // API), then themselves.
    for step in of(Kind::Domain) {
        domain::delete_domain(aws, &step.name).await?;
        for part in steps
            .iter()
            .filter(|s| s.name == step.name && matches!(s.kind, Kind::Record | Kind::Mapping))
        {
            done(part);
        }
        done(step);
    }
    for step in of(Kind::Api) {
        api::delete_api(aws, writes, &step.name, &live_id(step)?).await?;
        done(step);
    }
    try_join_all(of(Kind::Function).map(|step| async move {
        function::delete_function(aws, &step.name).await?;
        done(step);
        Ok::<_, anyhow::Error>(())
    }))
    .await?;
    let roles = try_join_all(of(Kind::Role).map(|step| async move {
        role::delete_role(aws, &step.name).await?;
        done(step);
        Ok::<_, anyhow::Error>(())
    }));
    let tables = try_join_all(of(Kind::Table).map(|step| async move {
        table::delete_table_and_wait(aws, &step.name).await?;
        done(step);
        Ok::<_, anyhow::Error>(())
    }));
    let secrets = try_join_all(of(Kind::Secret).map(|step| async move {
        secret::delete_secret(aws, &step.name).await?;
        done(step);
        Ok::<_, anyhow::Error>(())
    }));
    let alarms = async {
        try_join_all(of(Kind::Alarm).map(|step| async move {
            alarms::delete_alarm(aws, &step.name).await?;
            done(step);
            Ok::<_, anyhow::Error>(())
        }))
        .await?;
        for step in of(Kind::Topic) {
            alarms::delete_topic(aws, &live_id(step)?).await?;
            done(step);
        }
        Ok::<_, anyhow::Error>(())
    };
    // A certificate, once API Gateway releases it (minutes after its domain
    // name is deleted), while the rest goes.
    let certificates = try_join_all(of(Kind::Certificate).map(|step| async move {
        domain::delete_certificate(aws, &live_id(step)?, true).await?;
        done(step);
        Ok::<_, anyhow::Error>(())
    }));
    tokio::try_join!(roles, tables, secrets, alarms, certificates)?;
    try_join_all(of(Kind::LogGroup).map(|step| async move {
        log_group::delete_log_group(aws, &step.name).await?;
        done(step);
        Ok::<_, anyhow::Error>(())
    }))
    .await?;
    // Last, the bucket, which holds this run's lock: emptied but for the
    // lock, the lock released, then the bucket deleted. A run waiting for
    // the lock may take it in between: the bucket then stays for it.
    for step in of(Kind::Bucket) {
        let key = super::lock::KEY;
        bucket::empty_bucket(aws, &step.name, key).await?;
        if let Some(lock) = lock.take() {
            lock.release().await?;
        }
        if bucket::delete_empty_bucket(aws, &step.name, key).await? {
            done(step);
        } else {
            base::step(
                report,
                Kind::Bucket,
                &step.name,
                "kept: another run took the stack's lock",
            );
        }
    }
    Ok(())
}
