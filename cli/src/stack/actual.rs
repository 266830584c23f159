//! Reads what exists of a stack, in two rounds of concurrent calls: every
//! resource whose name is known at once, then what needs an id or ARN from
//! the first round (the API's parts, tags). Only names are used, not the
//! account id, so the read can run while the credentials are checked.

use std::collections::BTreeMap;

use anyhow::Result;
use serde::Serialize;

use super::api::{ApiState, read_api};
use super::function::{FunctionState, read_function};
use super::log_group::{LogGroupState, read_log_groups};
use super::role::{RoleState, read_role};
use super::table::{TableState, read_table};
use super::{Function, Names};
use crate::aws::Aws;

/// A resource found by name: absent, ours (tagged with this stack), or someone else's.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Found<T> {
    Missing,
    Ours(T),
    /// Exists without this stack's tag; never touched. Holds what the tag says, if anything.
    Foreign(Option<String>),
}

impl<T> Found<T> {
    pub fn ours(&self) -> Option<&T> {
        match self {
            Found::Ours(value) => Some(value),
            _ => None,
        }
    }

    pub fn is_missing(&self) -> bool {
        matches!(self, Found::Missing)
    }

    pub(super) fn classify(stack: &str, tag: Option<&str>, value: T) -> Found<T> {
        if tag == Some(stack) {
            Found::Ours(value)
        } else {
            Found::Foreign(tag.map(str::to_string))
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Actual {
    pub tables: BTreeMap<String, Found<TableState>>,
    pub roles: BTreeMap<String, Found<RoleState>>,
    /// By name: the functions' groups and the stage's access log group.
    pub log_groups: BTreeMap<String, Found<LogGroupState>>,
    pub functions: BTreeMap<Function, Found<FunctionState>>,
    pub api: Found<ApiState>,
}

impl Actual {
    /// The token secret an earlier `up` gave the authorizer, if any.
    pub fn token_secret(&self) -> Option<String> {
        self.functions
            .get(&Function::Authorizer)?
            .ours()?
            .env
            .get(chat_core::config::vars::TOKEN_SECRET)
            .cloned()
    }

    /// True when nothing of the stack exists.
    pub fn is_empty(&self) -> bool {
        self.tables.values().all(|t| t.ours().is_none())
            && self.roles.values().all(|r| r.ours().is_none())
            && self.log_groups.values().all(|l| l.ours().is_none())
            && self.functions.values().all(|f| f.ours().is_none())
            && self.api.ours().is_none()
    }
}

pub async fn read(aws: &Aws, names: &Names) -> Result<Actual> {
    let tables = [names.connections_table(), names.messages_table()];
    let roles = [names.handlers_role(), names.authorizer_role()];
    let (tables, roles, log_groups, functions, api) = tokio::try_join!(
        futures::future::try_join_all(tables.iter().map(|t| read_table(aws, names, t))),
        futures::future::try_join_all(roles.iter().map(|r| read_role(aws, names, r))),
        read_log_groups(aws, names),
        futures::future::try_join_all(Function::ALL.into_iter().map(|f| read_function(aws, names, f))),
        read_api(aws, names),
    )?;
    Ok(Actual {
        tables: tables.into_iter().collect(),
        roles: roles.into_iter().collect(),
        log_groups,
        functions: functions.into_iter().collect(),
        api,
    })
}

/// Every item of a list call that pages with a token. AWS may answer fewer
/// items than asked, with a token, on any page; API Gateway documents no
/// largest page (aws-facts.md §10, "pagination").
pub async fn all_pages<T, F, Fut>(what: &str, mut page: F) -> Result<Vec<T>>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: std::future::Future<Output = Result<(Vec<T>, Option<String>)>>,
{
    let mut items = vec![];
    let mut token = None;
    for _ in 0..MAX_PAGES {
        let (mut got, next) = page(token.take()).await?;
        items.append(&mut got);
        match next {
            Some(next) if !next.is_empty() => token = Some(next),
            _ => return Ok(items),
        }
    }
    anyhow::bail!("{what}: AWS still had more after {MAX_PAGES} pages")
}

/// More pages than any list of this stack's can take; a guard against a
/// token that never ends.
const MAX_PAGES: usize = 10_000;

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
