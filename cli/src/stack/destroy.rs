//! Removes every resource of a stack, in an order that leaves nothing
//! behind: the API, the functions, then roles and tables, log groups last
//! (a late invocation could otherwise recreate a log group).

use anyhow::Result;
use futures::future::try_join_all;
use serde::Serialize;

use super::Names;
use super::actual::{Actual, Found};
use super::api::delete_api;
use super::api_writes::ApiWrites;
use super::apply::{Report, Step};
use super::function::delete_function;
use super::log_group::delete_log_group;
use super::role::delete_role;
use super::table::delete_table_and_wait;
use crate::aws::Aws;

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
            actual.log_groups.iter().map(|(name, found)| (name.clone(), found)),
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

    try_join_all(teardown.functions.iter().map(|name| async move {
        delete_function(aws, name).await?;
        done(report, "function", name);
        Ok::<_, anyhow::Error>(())
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
        delete_log_group(aws, name).await?;
        done(report, "log group", name);
        Ok::<_, anyhow::Error>(())
    }))
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::stack::Function;
    use crate::stack::api::ApiState;
    use crate::stack::log_group::LogGroupState;
    use crate::stack::role::RoleState;

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
                "/aws/lambda/chat-join".to_string(),
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
        let table = crate::stack::table::TableState {
            status: "ACTIVE".into(),
            partition_key: None,
            sort_key: None,
            indexes: vec![],
            unready_indexes: vec![],
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
