//! Removes every resource of a stack, in an order that leaves nothing
//! behind: the API, the functions, then roles and tables, log groups last
//! (a late invocation could otherwise recreate a log group).

use anyhow::Result;
use aws_sdk_dynamodb::types::AttributeValue;
use futures::future::try_join_all;
use serde::Serialize;

use super::Names;
use super::actual::{Actual, Found};
use super::api_writes::ApiWrites;
use super::apply::{Report, Step, delete_api, delete_table_and_wait};
use crate::aws::{Aws, Budget, aws_error, failed, is_code, retry, retry_error};

/// How long a function may take to leave Pending or an update InProgress.
const FUNCTION_SETTLING: Budget = Budget::new(std::time::Duration::from_secs(300));

/// What `down` deletes, keeps and leaves alone, decided once from what
/// exists: `destroy` carries it out and `down --dry-run` prints it.
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct Teardown {
    /// The stack's API, by id: its own and any duplicate an interrupted `up` left.
    #[serde(skip)]
    pub api_ids: Vec<String>,
    /// Everything deleted, as "kind name", in the order `down` goes.
    pub delete: Vec<String>,
    /// Tables kept by `--keep-data`.
    pub kept: Vec<String>,
    /// Resources with the stack's names that are not the stack's; left alone.
    pub skipped: Vec<String>,
    #[serde(skip)]
    functions: Vec<String>,
    #[serde(skip)]
    roles: Vec<String>,
    #[serde(skip)]
    tables: Vec<String>,
    #[serde(skip)]
    log_groups: Vec<String>,
}

impl Teardown {
    pub fn of(names: &Names, actual: &Actual, keep_data: bool) -> Teardown {
        /// The names of `found`'s resources that are ours; the others' go to `skipped`.
        fn sort<'a, T: 'a>(
            kind: &str,
            found: impl IntoIterator<Item = (String, &'a Found<T>)>,
            skipped: &mut Vec<String>,
        ) -> Vec<String> {
            let mut ours = vec![];
            for (name, found) in found {
                match found {
                    Found::Ours(_) => ours.push(name),
                    Found::Foreign(_) => skipped.push(format!("{kind} {name}")),
                    Found::Missing => {}
                }
            }
            ours
        }
        let mut t = Teardown::default();
        let skipped = &mut t.skipped;
        let tables = sort("table", actual.tables.iter().map(|(n, f)| (n.clone(), f)), skipped);
        t.roles = sort("IAM role", actual.roles.iter().map(|(n, f)| (n.clone(), f)), skipped);
        t.functions = sort(
            "Lambda function",
            actual.functions.iter().map(|(f, found)| (names.function(*f), found)),
            skipped,
        );
        t.log_groups = sort(
            "log group",
            actual.log_groups.iter().map(|(f, found)| (names.log_group(*f), found)),
            skipped,
        );
        if keep_data {
            t.kept = tables;
        } else {
            t.tables = tables;
        }
        if let Some(api) = actual.api.ours() {
            t.api_ids = std::iter::once(&api.id).chain(&api.duplicates).cloned().collect();
        }
        let api = t.api_ids.iter().map(|id| format!("api {} ({id})", names.api()));
        let named = |kind: &str, list: &[String]| list.iter().map(|n| format!("{kind} {n}")).collect::<Vec<_>>();
        t.delete = api
            .chain(named("function", &t.functions))
            .chain(named("role", &t.roles))
            .chain(named("table", &t.tables))
            .chain(named("log group", &t.log_groups))
            .collect();
        t
    }

    /// The tables it deletes.
    pub fn tables(&self) -> &[String] {
        &self.tables
    }
}

fn done(report: Report, kind: &'static str, name: &str) {
    report(Step {
        kind,
        name: name.to_string(),
        done: "deleted".into(),
    });
}

/// Carries out `teardown`: the API, the functions, then roles and tables,
/// log groups last.
pub async fn destroy(aws: &Aws, names: &Names, teardown: &Teardown, report: Report<'_>) -> Result<()> {
    let writes = ApiWrites::default();
    for id in &teardown.api_ids {
        delete_api(aws, &writes, &names.api(), id).await?;
        done(report, "api", &names.api());
    }

    try_join_all(teardown.functions.iter().map(|name| {
        async move {
            // A function being created or updated (an `up` killed midway)
            // refuses deletion with ResourceConflictException until it
            // settles (aws-facts.md §10, "Lambda states").
            let deleted = retry(
                FUNCTION_SETTLING,
                |err| is_code(err, &["ResourceConflictException"]),
                || aws.lambda.delete_function().function_name(name).send(),
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
            done(report, "function", name);
            Ok(())
        }
    }))
    .await?;

    let roles = try_join_all(teardown.roles.iter().map(|name| async move {
        delete_role(aws, name).await?;
        done(report, "role", name);
        Ok::<_, anyhow::Error>(())
    }));
    let tables = try_join_all(teardown.tables.iter().map(|name| async move {
        delete_table_and_wait(aws, name).await?;
        done(report, "table", name);
        Ok::<_, anyhow::Error>(())
    }));
    tokio::try_join!(roles, tables)?;

    try_join_all(teardown.log_groups.iter().map(|name| async move {
        match aws.logs.delete_log_group().log_group_name(name).send().await {
            Err(err) if !is_code(&err, &["ResourceNotFoundException"]) => {
                return Err(aws_error(format!("cannot delete log group {name}"), err));
            }
            _ => done(report, "log group", name),
        }
        Ok(())
    }))
    .await?;
    Ok(())
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::stack::Function;
    use crate::stack::actual::{ApiState, LogGroupState, RoleState};

    fn names() -> Names {
        Names {
            stack: "chat".into(),
            stage: "dev".into(),
            region: "us-east-1".into(),
            account: "123456789012".into(),
        }
    }

    /// A partial stack: the API (and a duplicate an interrupted `up` left),
    /// one role, no function, one log group, and a role and a table that
    /// carry our names but not our tag.
    fn partial() -> Actual {
        let api = ApiState {
            id: "a1".into(),
            protocol: Some("WEBSOCKET".into()),
            route_selection_expression: None,
            routes: vec![],
            integrations: vec![],
            authorizers: vec![],
            stage: None,
            duplicates: vec!["a2".into()],
            tags: Default::default(),
        };
        let role = RoleState {
            trust_policy: None,
            policy: None,
            tags: Default::default(),
        };
        Actual {
            tables: BTreeMap::from([
                ("chat-connections".to_string(), Found::Foreign(None)),
                ("chat-messages".to_string(), Found::Missing),
            ]),
            roles: BTreeMap::from([
                ("chat-authorizer".to_string(), Found::Ours(role)),
                ("chat-handlers".to_string(), Found::Foreign(Some("other".into()))),
            ]),
            log_groups: BTreeMap::from([(
                Function::Join,
                Found::Ours(LogGroupState {
                    retention_days: Some(14),
                    tags: Default::default(),
                }),
            )]),
            functions: BTreeMap::from([(Function::Join, Found::Missing)]),
            api: Found::Ours(api),
        }
    }

    #[test]
    fn teardown_deletes_only_what_is_ours_in_order_and_names_the_rest() {
        let teardown = Teardown::of(&names(), &partial(), false);
        assert_eq!(teardown.api_ids, ["a1", "a2"]);
        assert_eq!(
            teardown.delete,
            [
                "api chat (a1)",
                "api chat (a2)",
                "role chat-authorizer",
                "log group /aws/lambda/chat-join"
            ]
        );
        assert_eq!(teardown.skipped, ["table chat-connections", "IAM role chat-handlers"]);
        assert!(teardown.kept.is_empty() && teardown.tables().is_empty());
    }

    #[test]
    fn keep_data_keeps_every_table_of_ours_and_deletes_the_rest() {
        let mut actual = partial();
        let table = crate::stack::actual::TableState {
            status: "ACTIVE".into(),
            partition_key: None,
            sort_key: None,
            indexes: vec![],
            billing_mode: None,
            ttl_attribute: None,
            item_count: 3,
            tags: Default::default(),
        };
        actual.tables.insert("chat-messages".into(), Found::Ours(table));
        assert_eq!(Teardown::of(&names(), &actual, false).tables(), ["chat-messages"]);
        let kept = Teardown::of(&names(), &actual, true);
        assert_eq!(kept.kept, ["chat-messages"]);
        assert!(kept.tables().is_empty());
        assert!(!kept.delete.iter().any(|d| d.starts_with("table")));
    }
}
