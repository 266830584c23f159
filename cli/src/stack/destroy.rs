//! What `down` deletes: a plan of delete steps, decided once from what
//! exists, in the order that leaves nothing behind (the API, the functions,
//! then roles and tables, log groups last: a late invocation could otherwise
//! recreate a log group). `down --dry-run` prints it; `apply::delete`
//! executes it.

use serde::Serialize;

use super::Names;
use super::actual::Actual;
use super::base::{Action, Change, Found, Kind};

/// What `down` deletes, keeps and leaves alone.
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct Teardown {
    /// The delete steps, in the order `down` goes; shown as "kind name".
    #[serde(rename = "delete", serialize_with = "as_names")]
    pub steps: Vec<Change>,
    /// Tables kept by `--keep-data`.
    pub kept: Vec<String>,
    /// Resources with the stack's names that are not the stack's; left alone.
    pub skipped: Vec<String>,
}

/// A delete step as `down --output json` has always listed it: "table t",
/// "api chat (a1b2c3)".
pub fn step_name(step: &Change) -> String {
    match &step.id {
        Some(id) => format!("{} {} ({id})", step.kind, step.name),
        None => format!("{} {}", step.kind, step.name),
    }
}

fn as_names<S: serde::Serializer>(steps: &[Change], to: S) -> Result<S::Ok, S::Error> {
    to.collect_seq(steps.iter().map(step_name))
}

fn delete(kind: Kind, name: &str, id: Option<&str>) -> Change {
    Change {
        kind,
        name: name.to_string(),
        id: id.map(str::to_string),
        action: Action::Delete,
    }
}

impl Teardown {
    pub fn of(names: &Names, actual: &Actual, keep_data: bool) -> Teardown {
        let mut t = Teardown::default();
        /// Delete steps for `found`'s resources that are ours; the others go to `skipped`.
        fn sort<'a, T: 'a>(
            t: &mut Teardown,
            kind: Kind,
            what: &str,
            found: impl IntoIterator<Item = (String, &'a Found<T>)>,
        ) -> Vec<Change> {
            let mut ours = vec![];
            for (name, found) in found {
                match found {
                    Found::Ours(_) => ours.push(delete(kind, &name, None)),
                    Found::Foreign(_) => t.skipped.push(format!("{what} {name}")),
                    Found::Missing => {}
                }
            }
            ours
        }
        let tables = sort(
            &mut t,
            Kind::Table,
            "table",
            actual.tables.iter().map(|(n, f)| (n.clone(), f)),
        );
        let roles = sort(
            &mut t,
            Kind::Role,
            "IAM role",
            actual.roles.iter().map(|(n, f)| (n.clone(), f)),
        );
        let functions = sort(
            &mut t,
            Kind::Function,
            "Lambda function",
            actual.functions.iter().map(|(f, found)| (names.function(*f), found)),
        );
        let log_groups = sort(
            &mut t,
            Kind::LogGroup,
            "log group",
            actual.log_groups.iter().map(|(name, found)| (name.clone(), found)),
        );
        let mut log_groups = log_groups;
        // The domain names first: their records and mappings, then themselves.
        for domain in actual.domain.ours() {
            let records = match actual.domain.other_records.get(&domain.name) {
                Some((_, records)) => records.as_slice(),
                None => actual.domain.records.as_slice(),
            };
            if records.iter().any(|r| r.alias.is_some() && r.alias == domain.target) {
                t.steps.push(delete(Kind::Record, &domain.name, None));
            }
            for mapping in &domain.mappings {
                t.steps.push(delete(Kind::Mapping, &domain.name, Some(&mapping.id)));
            }
            t.steps.push(delete(Kind::Domain, &domain.name, None));
        }
        for certificate in &actual.domain.owned_certificates {
            let name = certificate.names.first().cloned().unwrap_or_default();
            t.steps.push(delete(Kind::Certificate, &name, Some(&certificate.arn)));
        }
        if let (Some(Found::Foreign(_)), Some(name)) = (&actual.domain.wanted, &actual.domain.name) {
            t.skipped.push(format!("API Gateway domain name {name}"));
        }
        if let Some(api) = actual.api.ours() {
            let ids = std::iter::once(&api.id).chain(&api.duplicates);
            t.steps.extend(ids.map(|id| delete(Kind::Api, &names.api(), Some(id))));
            if let Some(group) = &api.execution_log_group {
                log_groups.push(delete(Kind::LogGroup, group, None));
            }
        }
        t.steps.extend(functions);
        t.steps.extend(roles);
        let secret = sort(&mut t, Kind::Secret, "secret", [(names.token_secret(), &actual.secret)]);
        t.steps.extend(secret);
        let alarms = sort(
            &mut t,
            Kind::Alarm,
            "alarm",
            actual.alarms.iter().map(|(name, found)| (name.clone(), found)),
        );
        t.steps.extend(alarms);
        match &actual.topic {
            Found::Ours(topic) => t
                .steps
                .push(delete(Kind::Topic, &names.alarm_topic(), Some(&topic.arn))),
            Found::Foreign(_) => t.skipped.push(format!("SNS topic {}", names.alarm_topic())),
            Found::Missing => {}
        }
        if keep_data {
            t.kept = tables.into_iter().map(|step| step.name).collect();
        } else {
            t.steps.extend(tables);
        }
        t.steps.extend(log_groups);
        match &actual.bucket {
            Found::Ours(_) => t.steps.push(delete(Kind::Bucket, &names.bucket(), None)),
            Found::Foreign(_) => t.skipped.push(format!("S3 bucket {}", names.bucket())),
            Found::Missing => {}
        }
        t
    }

    /// The names of the tables it deletes.
    pub fn tables(&self) -> impl Iterator<Item = &str> {
        self.steps
            .iter()
            .filter(|s| s.kind == Kind::Table)
            .map(|s| s.name.as_str())
    }
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

    /// A partial stack: the API (and a duplicate an interrupted `up` left)
    /// with the execution log group API Gateway made for its stage, one
    /// role, no function, one log group, and a role and a table that
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
            keep_alive: Default::default(),
            duplicates: vec!["a2".into()],
            tags: Default::default(),
            execute_api_disabled: false,
            execution_log_group: Some("API-Gateway-Execution-Logs_a1/dev".into()),
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
            secret: Found::Ours(crate::stack::secret::SecretState {
                arn: "arn:aws:secretsmanager:us-east-1:123456789012:secret:chatctl/chat/token-AbCdEf".into(),
                scheduled_for_deletion: false,
                tags: Default::default(),
            }),
            topic: Found::Missing,
            alarms: BTreeMap::new(),
            bucket: Found::Missing,
            releases: vec![],
            domain: Default::default(),
        }
    }

    #[test]
    fn teardown_deletes_only_what_is_ours_in_order_and_names_the_rest() {
        let teardown = Teardown::of(&names(), &partial(), false);
        let delete: Vec<String> = teardown.steps.iter().map(step_name).collect();
        assert_eq!(
            delete,
            [
                "api chat (a1)",
                "api chat (a2)",
                "role chat-authorizer",
                "secret chatctl/chat/token",
                "log group /aws/lambda/chat-join",
                "log group API-Gateway-Execution-Logs_a1/dev"
            ]
        );
        assert_eq!(teardown.skipped, ["table chat-connections", "IAM role chat-handlers"]);
        assert!(teardown.kept.is_empty() && teardown.tables().next().is_none());
        assert_eq!(teardown.steps[0].to_string(), "  - api chat (a1)", "as a plan shows it");
        let json = serde_json::to_value(&teardown).unwrap();
        assert_eq!(
            json["delete"][4], "log group /aws/lambda/chat-join",
            "down's JSON as before"
        );
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
            backfilling_indexes: vec![],
            billing_mode: None,
            ttl_attribute: None,
            item_count: 3,
            tags: Default::default(),
        };
        actual.tables.insert("chat-messages".into(), Found::Ours(table));
        let all = Teardown::of(&names(), &actual, false);
        assert_eq!(all.tables().collect::<Vec<_>>(), ["chat-messages"]);
        let kept = Teardown::of(&names(), &actual, true);
        assert_eq!(kept.kept, ["chat-messages"]);
        assert!(kept.tables().next().is_none());
        assert!(!kept.steps.iter().any(|s| s.kind == Kind::Table));
    }
}
