//! The stack's CloudWatch log groups (each function's, and the stage's
//! access log): read, diff (retention, tags), create (or adopt one a
//! function made), update and delete.

use std::collections::{BTreeMap, HashMap};

use anyhow::{Result, bail};
use serde::Serialize;

use super::base::{Action, Detail, Found, Kind, Report, Stack, step, tag_changes};
use super::desired::LogGroupSpec;
use super::tags::{Tagged, retag};
use super::{Function, Names, STACK_TAG};
use crate::aws::{Aws, aws_error, failed, is_code};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogGroupState {
    pub retention_days: Option<i32>,
    /// Every tag, the stack's included.
    pub tags: BTreeMap<String, String>,
}

/// Whether a log group of exactly that name exists (every page of those it
/// prefixes is looked at: a list may come in pages, aws-facts.md §10).
pub(super) async fn log_group_exists(aws: &Aws, name: &str) -> Result<bool> {
    let mut pages = aws
        .logs
        .describe_log_groups()
        .log_group_name_prefix(name)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(failed("cannot list CloudWatch log groups"))?;
        if page
            .log_groups()
            .iter()
            .any(|group| group.log_group_name() == Some(name))
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Every log group the stack may have, by name: each function's and the
/// stage's access log group (read whether or not chatctl.toml asks for
/// access logs, so `down` finds it).
pub(super) async fn read_log_groups(aws: &Aws, names: &Names) -> Result<BTreeMap<String, Found<LogGroupState>>> {
    let access = names.access_log_group();
    // name → (retention, ARN without the trailing ":*")
    let mut groups: HashMap<String, (Option<i32>, String)> = HashMap::new();
    for prefix in [format!("/aws/lambda/{}-", names.stack), access.clone()] {
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
    }
    let wanted = Function::ALL.into_iter().map(|f| names.log_group(f)).chain([access]);
    let reads = wanted.map(|name| {
        let found = groups.get(&name).cloned();
        async move {
            let Some((retention_days, arn)) = found else {
                return Ok::<_, anyhow::Error>((name, Found::Missing));
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
            let found = Found::classify(&names.stack, tag.as_deref(), state);
            Ok((name, found))
        }
    });
    Ok(futures::future::try_join_all(reads).await?.into_iter().collect())
}

pub fn log_group_action(spec: &LogGroupSpec, state: Option<&LogGroupState>, tags: &BTreeMap<String, String>) -> Action {
    let Some(state) = state else {
        return Action::Create;
    };
    let mut changes = vec![];
    if state.retention_days != Some(spec.retention_days) {
        changes.push(Detail::Retention {
            from: state.retention_days,
            to: spec.retention_days,
        });
    }
    changes.extend(tag_changes(&state.tags, tags));
    Action::update_or_nothing(changes)
}

pub(super) async fn apply_log_group(
    aws: &Aws,
    stack: Stack<'_>,
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
                .set_tags(Some(stack.tags.clone().into_iter().collect()))
                .send()
                .await;
            match created {
                // A function invoked before `up` finished may have made it already.
                Err(err) if is_code(&err, &["ResourceAlreadyExistsException"]) => {
                    adopt_log_group(aws, stack, spec).await?
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
                        let arn = stack.names.log_group_arn_of(&spec.name);
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
            "log group {}: the plan asks to {} it, which chatctl cannot do here",
            other.verb(),
            spec.name
        ),
    }
    Ok(())
}

/// A log group that appeared between read and apply is taken over only if
/// it is this stack's already; anyone else's is a conflict.
pub(super) async fn adopt_log_group(aws: &Aws, stack: Stack<'_>, spec: &super::desired::LogGroupSpec) -> Result<()> {
    let arn = stack.names.log_group_arn_of(&spec.name);
    let tags = aws
        .logs
        .list_tags_for_resource()
        .resource_arn(&arn)
        .send()
        .await
        .map_err(failed(format!("cannot read the tags of log group {}", spec.name)))?;
    let owner = tags.tags().and_then(|t| t.get(super::STACK_TAG));
    if owner != Some(&stack.names.stack) {
        bail!(
            "log group {} was created meanwhile by someone else; chatctl leaves it alone",
            spec.name
        );
    }
    aws.logs
        .tag_resource()
        .resource_arn(stack.names.log_group_arn_of(&spec.name))
        .set_tags(Some(stack.tags.clone().into_iter().collect()))
        .send()
        .await
        .map_err(failed(format!("cannot tag log group {}", spec.name)))?;
    Ok(())
}

pub(super) async fn set_retention(aws: &Aws, name: &str, days: i32) -> Result<()> {
    aws.logs
        .put_retention_policy()
        .log_group_name(name)
        .retention_in_days(days)
        .send()
        .await
        .map_err(failed(format!("cannot set the retention of log group {name}")))?;
    Ok(())
}

/// Deletes a log group; one already gone is fine.
pub(super) async fn delete_log_group(aws: &Aws, name: &str) -> Result<()> {
    match aws.logs.delete_log_group().log_group_name(name).send().await {
        Err(err) if !is_code(&err, &["ResourceNotFoundException"]) => {
            Err(aws_error(format!("cannot delete log group {name}"), err))
        }
        _ => Ok(()),
    }
}
