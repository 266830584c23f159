//! Reads what exists of a stack, in two rounds of concurrent calls: every
//! resource whose name is known at once, then what needs an id or ARN from
//! the first round (the API's parts, tags). Only names are used, not the
//! account id, so the read can run while the credentials are checked.

use std::collections::BTreeMap;

use anyhow::Result;
use serde::Serialize;

use super::alarms::{AlarmState, TopicState, read_alarms, read_topic};
use super::api::{ApiState, read_api};
pub use super::base::{Found, all_pages};
use super::bucket::BucketState;
use super::domain::{DomainActual, DomainSpec, read_domain};
use super::function::{FunctionState, read_function};
use super::log_group::{LogGroupState, read_log_groups};
use super::role::{RoleState, read_role};
use super::secret::{SecretState, read_secret};
use super::table::{TableState, read_table};
use super::{Function, Names};
use crate::aws::Aws;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Actual {
    pub tables: BTreeMap<String, Found<TableState>>,
    pub roles: BTreeMap<String, Found<RoleState>>,
    /// By name: the functions' groups and the stage's access log group.
    pub log_groups: BTreeMap<String, Found<LogGroupState>>,
    pub functions: BTreeMap<Function, Found<FunctionState>>,
    pub api: Found<ApiState>,
    /// The token secret (whatever the auth mode, so `down` finds it).
    pub secret: Found<SecretState>,
    /// The alarms' topic, and each alarm the stack may have, by name.
    pub topic: Found<TopicState>,
    pub alarms: BTreeMap<String, Found<AlarmState>>,
    /// The stack's bucket (its lock), read once the account id is known
    /// (see `session::read`); Missing until then.
    pub bucket: Found<BucketState>,
    /// The releases recorded in the bucket, oldest first.
    pub releases: Vec<super::release::Release>,
    /// The stack's domain names, and what `[domain]` names.
    pub domain: DomainActual,
}

impl Actual {
    /// Whether the authorizer still holds the token secret in its
    /// environment, as stacks deployed before it moved to Secrets Manager do.
    pub fn authorizer_holds_the_secret(&self) -> bool {
        self.functions
            .get(&Function::Authorizer)
            .and_then(|f| f.ours())
            .is_some_and(|f| f.env.contains_key(super::secret::LEGACY_ENV))
    }

    /// True when nothing of the stack exists.
    pub fn is_empty(&self) -> bool {
        self.tables.values().all(|t| t.ours().is_none())
            && self.roles.values().all(|r| r.ours().is_none())
            && self.log_groups.values().all(|l| l.ours().is_none())
            && self.functions.values().all(|f| f.ours().is_none())
            && self.api.ours().is_none()
            && self.secret.ours().is_none()
            && self.topic.ours().is_none()
            && self.alarms.values().all(|a| a.ours().is_none())
            && self.bucket.ours().is_none()
            && self.domain.ours().is_empty()
    }
}

/// `domain` is what `[domain]` asks for: its zone and certificate are read
/// with the stack's own domain names.
pub async fn read(aws: &Aws, names: &Names, domain: Option<&DomainSpec>) -> Result<Actual> {
    let tables = [names.connections_table(), names.messages_table()];
    let roles = [names.handlers_role(), names.authorizer_role()];
    let (tables, roles, log_groups, functions, api, secret, topic, alarms, domain) = tokio::try_join!(
        futures::future::try_join_all(tables.iter().map(|t| read_table(aws, names, t))),
        futures::future::try_join_all(roles.iter().map(|r| read_role(aws, names, r))),
        read_log_groups(aws, names),
        futures::future::try_join_all(Function::ALL.into_iter().map(|f| read_function(aws, names, f))),
        read_api(aws, names),
        read_secret(aws, names),
        read_topic(aws, names),
        read_alarms(aws, names),
        read_domain(aws, names, domain),
    )?;
    Ok(Actual {
        tables: tables.into_iter().collect(),
        roles: roles.into_iter().collect(),
        log_groups,
        functions: functions.into_iter().collect(),
        api,
        secret,
        topic,
        alarms,
        bucket: Found::Missing,
        releases: vec![],
        domain,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn all_pages_follows_every_token_until_the_last_page() {
        let pages = &[
            (vec![1, 2], Some("a")),
            (vec![], Some("b")),
            (vec![3], Some("")),
            (vec![9], None),
        ];
        let items = all_pages("test", |token| async move {
            let at = match token.as_deref() {
                None => 0,
                Some("a") => 1,
                Some("b") => 2,
                Some(other) => panic!("unexpected token {other}"),
            };
            let (items, next) = pages[at].clone();
            Ok((items, next.map(str::to_string)))
        })
        .await
        .unwrap();
        assert_eq!(items, [1, 2, 3]);
    }

    #[test]
    fn only_a_matching_tag_makes_a_resource_ours() {
        assert_eq!(Found::classify("chat", Some("chat"), 1), Found::Ours(1));
        assert_eq!(
            Found::classify("chat", Some("other"), 1),
            Found::Foreign(Some("other".into()))
        );
        assert_eq!(Found::classify("chat", None, 1), Found::Foreign(None));
    }
}
