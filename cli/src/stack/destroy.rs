//! Removes every resource of a stack, in an order that leaves nothing
//! behind: the API, the functions, then roles and tables, log groups last
//! (a late invocation could otherwise recreate a log group).

use anyhow::Result;
use aws_sdk_dynamodb::types::AttributeValue;
use futures::future::try_join_all;

use super::Names;
use super::actual::{Actual, Found};
use super::api_writes::ApiWrites;
use super::apply::{Report, Step, delete_api, delete_table_and_wait};
use crate::aws::{Aws, Budget, aws_error, failed, is_code, retry, retry_error};

/// How long a function may take to leave Pending or an update InProgress.
const FUNCTION_SETTLING: Budget = Budget::new(std::time::Duration::from_secs(300));

#[derive(Debug, Default, Clone)]
pub struct Destroyed {
    /// Resources with the stack's names that are not the stack's; left alone.
    pub skipped: Vec<String>,
    /// Tables kept by `--keep-data`.
    pub kept: Vec<String>,
}

fn done(report: Report, kind: &'static str, name: &str) {
    report(Step {
        kind,
        name: name.to_string(),
        done: "deleted".into(),
    });
}

pub async fn destroy(
    aws: &Aws,
    names: &Names,
    actual: &Actual,
    keep_data: bool,
    report: Report<'_>,
) -> Result<Destroyed> {
    let mut outcome = Destroyed::default();
    let mut skip = |kind: &str, name: &str, found_foreign: bool| {
        if found_foreign {
            outcome.skipped.push(format!("{kind} {name}"));
        }
    };
    for (name, found) in &actual.tables {
        skip("table", name, matches!(found, Found::Foreign(_)));
    }
    for (name, found) in &actual.roles {
        skip("IAM role", name, matches!(found, Found::Foreign(_)));
    }
    for (function, found) in &actual.functions {
        skip(
            "Lambda function",
            &names.function(*function),
            matches!(found, Found::Foreign(_)),
        );
    }
    for (function, found) in &actual.log_groups {
        skip(
            "log group",
            &names.log_group(*function),
            matches!(found, Found::Foreign(_)),
        );
    }

    if let Some(api) = actual.api.ours() {
        let writes = ApiWrites::default();
        for id in std::iter::once(&api.id).chain(&api.duplicates) {
            delete_api(aws, &writes, &names.api(), id).await?;
            done(report, "api", &names.api());
        }
    }

    try_join_all(actual.functions.iter().filter_map(|(function, found)| {
        found.ours()?;
        let name = names.function(*function);
        Some(async move {
            // A function being created or updated (an `up` killed midway)
            // refuses deletion with ResourceConflictException until it
            // settles (aws-facts.md §10, "Lambda states").
            let deleted = retry(
                FUNCTION_SETTLING,
                |err| is_code(err, &["ResourceConflictException"]),
                || aws.lambda.delete_function().function_name(&name).send(),
            )
            .await;
            match deleted {
                Ok(_) => {}
                Err((err, _)) if is_code(&err, &["ResourceNotFoundException"]) => {}
                Err(failure) => {
                    return Err(retry_error(
                        format!("cannot delete Lambda function {name}"),
                        FUNCTION_SETTLING,
                        "an update of the function from elsewhere is still running; run `chatctl down` again later",
                        failure,
                    ));
                }
            }
            done(report, "function", &name);
            Ok(())
        })
    }))
    .await?;

    let roles = try_join_all(actual.roles.iter().filter_map(|(name, found)| {
        found.ours()?;
        Some(async move {
            delete_role(aws, name).await?;
            done(report, "role", name);
            Ok::<_, anyhow::Error>(())
        })
    }));
    let tables = try_join_all(actual.tables.iter().filter_map(|(name, found)| {
        found.ours()?;
        if keep_data {
            return None;
        }
        Some(async move {
            delete_table_and_wait(aws, name).await?;
            done(report, "table", name);
            Ok::<_, anyhow::Error>(())
        })
    }));
    tokio::try_join!(roles, tables)?;
    if keep_data {
        outcome.kept = actual
            .tables
            .iter()
            .filter(|(_, f)| f.ours().is_some())
            .map(|(n, _)| n.clone())
            .collect();
    }

    try_join_all(actual.log_groups.iter().filter_map(|(function, found)| {
        found.ours()?;
        let name = names.log_group(*function);
        Some(async move {
            match aws.logs.delete_log_group().log_group_name(&name).send().await {
                Err(err) if !is_code(&err, &["ResourceNotFoundException"]) => {
                    return Err(aws_error(format!("cannot delete log group {name}"), err));
                }
                _ => done(report, "log group", &name),
            }
            Ok(())
        })
    }))
    .await?;
    Ok(outcome)
}

/// Inline policies are deleted and managed ones detached first: IAM refuses
/// to delete a role that has any (DeleteConflict).
async fn delete_role(aws: &Aws, name: &str) -> Result<()> {
    // IAM may answer fewer items than asked with a marker, on any page
    // (aws-facts.md §10, "pagination"): the paginators follow it.
    let inline = aws
        .iam
        .list_role_policies()
        .role_name(name)
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await;
    let inline = match inline {
        Err(err) if is_code(&err, &["NoSuchEntity"]) => return Ok(()),
        other => other.map_err(failed(format!("cannot list the policies of IAM role {name}")))?,
    };
    for policy in &inline {
        match aws
            .iam
            .delete_role_policy()
            .role_name(name)
            .policy_name(policy)
            .send()
            .await
        {
            Err(err) if !is_code(&err, &["NoSuchEntity"]) => {
                return Err(aws_error(
                    format!("cannot delete policy {policy} of IAM role {name}"),
                    err,
                ));
            }
            _ => {}
        }
    }
    let attached = aws
        .iam
        .list_attached_role_policies()
        .role_name(name)
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .map_err(failed(format!("cannot list the managed policies of IAM role {name}")))?;
    for policy in &attached {
        if let Some(arn) = policy.policy_arn() {
            aws.iam
                .detach_role_policy()
                .role_name(name)
                .policy_arn(arn)
                .send()
                .await
                .map_err(failed(format!("cannot detach {arn} from IAM role {name}")))?;
        }
    }
    match aws.iam.delete_role().role_name(name).send().await {
        Err(err) if !is_code(&err, &["NoSuchEntity"]) => Err(aws_error(format!("cannot delete IAM role {name}"), err)),
        _ => Ok(()),
    }
}

/// Whether a table holds chat data (anything but the connection counter's
/// shards). Scan pages may be empty after the filter, so every page is read
/// until an item turns up.
pub async fn table_has_items(aws: &Aws, name: &str) -> Result<bool> {
    use chat_core::store::schema;
    let mut pages = aws
        .dynamodb
        .scan()
        .table_name(name)
        .filter_expression("attribute_not_exists(#id) OR NOT begins_with(#id, :counter)")
        .expression_attribute_names("#id", schema::CONNECTION_ID)
        .expression_attribute_values(":counter", AttributeValue::S(schema::COUNTER_ID.to_string()))
        .limit(100)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(failed(format!("cannot look into DynamoDB table {name}")))?;
        if !page.items().is_empty() {
            return Ok(true);
        }
    }
    Ok(false)
}
