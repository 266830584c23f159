//! IAM roles: read, diff (trust policy, inline policy grant by grant, tags),
//! create, update and delete.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{Result, bail};
use serde::Serialize;
use serde_json::Value;

use super::base::{Action, Detail, Found, Kind, Polled, Report, Stack, poll, step, tag_changes, taken_if_ours};
use super::desired::{POLICY_NAME, RoleSpec, trust_policy};
use super::tags::{Tagged, retag};
use super::{Names, STACK_TAG};
use crate::aws::{Aws, aws_error, decode_policy, failed, is_code};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RoleState {
    pub trust_policy: Option<Value>,
    /// Our inline policy, when present.
    pub policy: Option<Value>,
    /// Every tag, the stack's included.
    pub tags: BTreeMap<String, String>,
}

pub async fn read_role(aws: &Aws, names: &Names, name: &str) -> Result<(String, Found<RoleState>)> {
    let (role, policy) = tokio::join!(
        aws.iam.get_role().role_name(name).send(),
        aws.iam
            .get_role_policy()
            .role_name(name)
            .policy_name(POLICY_NAME)
            .send(),
    );
    let role = match role {
        Err(err) if is_code(&err, &["NoSuchEntity"]) => return Ok((name.to_string(), Found::Missing)),
        other => other.map_err(failed(format!("cannot read IAM role {name}")))?,
    };
    let Some(role) = role.role else {
        return Ok((name.to_string(), Found::Missing));
    };
    let tags: BTreeMap<String, String> = role
        .tags()
        .iter()
        .map(|t| (t.key().to_string(), t.value().to_string()))
        .collect();
    let tag = tags.get(STACK_TAG).cloned();
    let policy = match policy {
        Err(err) if is_code(&err, &["NoSuchEntity"]) => None,
        other => Some(decode_policy(
            other
                .map_err(failed(format!("cannot read the policy of IAM role {name}")))?
                .policy_document(),
        )?),
    };
    let state = RoleState {
        trust_policy: role.assume_role_policy_document().map(decode_policy).transpose()?,
        policy,
        tags,
    };
    Ok((name.to_string(), Found::classify(&names.stack, tag.as_deref(), state)))
}

/// `policy` is None while the API (which the policy names) does not exist yet.
pub fn role_action(state: Option<&RoleState>, policy: Option<&Value>, tags: &BTreeMap<String, String>) -> Action {
    let Some(state) = state else {
        return Action::Create;
    };
    let mut changes = vec![];
    if state.trust_policy.as_ref() != Some(&trust_policy()) {
        changes.push(Detail::TrustPolicy);
    }
    match (policy, &state.policy) {
        (Some(want), Some(have)) if have == want => {}
        (Some(want), Some(have)) => changes.push(Detail::InlinePolicy {
            grants: Some(policy_changes(have, want)),
        }),
        _ => changes.push(Detail::InlinePolicy { grants: None }),
    }
    changes.extend(tag_changes(&state.tags, tags));
    Action::update_or_nothing(changes)
}

/// What a new inline policy grants and revokes, for people: "+ Allow
/// dynamodb:BatchGetItem on table/chat-connections; - Allow …". Statements
/// are compared grant by grant (effect, action, resource), so one action
/// added to a statement reads as that action alone.
pub(super) fn policy_changes(have: &Value, want: &Value) -> String {
    fn list(value: &Value) -> Vec<String> {
        match value {
            Value::Array(items) => items.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
            Value::String(one) => vec![one.clone()],
            _ => vec![],
        }
    }
    fn grants(policy: &Value) -> BTreeSet<(String, String, String)> {
        let statements = list_of_statements(&policy["Statement"]);
        let mut grants = BTreeSet::new();
        for statement in statements {
            let effect = statement["Effect"].as_str().unwrap_or("?").to_string();
            for action in list(&statement["Action"]) {
                for resource in list(&statement["Resource"]) {
                    grants.insert((effect.clone(), action.clone(), resource));
                }
            }
        }
        grants
    }
    fn list_of_statements(value: &Value) -> Vec<&Value> {
        match value {
            Value::Array(items) => items.iter().collect(),
            Value::Null => vec![],
            one => vec![one],
        }
    }
    /// An ARN without its partition, service, region and account.
    fn short(resource: &str) -> &str {
        match resource.splitn(6, ':').nth(5) {
            Some(rest) if resource.starts_with("arn:") => rest,
            _ => resource,
        }
    }
    fn render(sign: char, grants: Vec<&(String, String, String)>) -> Vec<String> {
        let mut by_action: BTreeMap<(&str, &str), Vec<&str>> = BTreeMap::new();
        for (effect, action, resource) in grants {
            by_action.entry((effect, action)).or_default().push(short(resource));
        }
        by_action
            .into_iter()
            .map(|((effect, action), resources)| format!("{sign} {effect} {action} on {}", resources.join(", ")))
            .collect()
    }
    let (have, want) = (grants(have), grants(want));
    let mut lines = render('+', want.difference(&have).collect());
    lines.extend(render('-', have.difference(&want).collect()));
    if lines.is_empty() {
        // Same grants, written differently (Sids, order): rewritten as ours.
        return "rewritten, same grants".into();
    }
    lines.join("; ")
}

/// How long a role that IAM says exists may take to be readable.
pub(super) const ROLE_READ: Duration = Duration::from_secs(10);

pub(super) async fn create_role(
    aws: &Aws,
    stack: Stack<'_>,
    spec: &RoleSpec,
    action: &Action,
    report: Report<'_>,
) -> Result<()> {
    if *action != Action::Create {
        return Ok(());
    }
    let mut request = aws
        .iam
        .create_role()
        .role_name(&spec.name)
        .assume_role_policy_document(super::desired::trust_policy().to_string())
        .description(format!("chatctl stack {}", stack.names.stack));
    for (k, v) in stack.tags {
        request = request.tags(aws_sdk_iam::types::Tag::builder().key(k).value(v).build()?);
    }
    match request.send().await {
        Ok(_) => {}
        // A create whose answer was lost, sent again (aws-facts.md §10).
        Err(err) if is_code(&err, &["EntityAlreadyExists"]) => {
            // IAM reads are eventually consistent: a role just made may not
            // be readable yet (IAM user guide, "changes that I make are not
            // always immediately visible").
            poll(ROLE_READ, || async {
                match read_role(aws, stack.names, &spec.name).await?.1 {
                    Found::Ours(_) => Ok(Polled::Ready(())),
                    found @ Found::Foreign(_) => taken_if_ours(&found, "IAM role", &spec.name).map(Polled::Ready),
                    Found::Missing => Ok(Polled::Waiting(format!(
                        "IAM role {} exists (EntityAlreadyExists) but IAM still does not show it after {}s; run `chatctl up` again",
                        spec.name,
                        ROLE_READ.as_secs()
                    ))),
                }
            })
            .await?;
        }
        Err(err) => {
            return Err(crate::aws::aws_error(
                format!("cannot create IAM role {}", spec.name),
                err,
            ));
        }
    }
    step(report, Kind::Role, &spec.name, "created");
    Ok(())
}

/// A new role's policy, or the changes to a live role; the policy names
/// the API, so this runs once its id is known.
pub(super) async fn update_role(
    aws: &Aws,
    spec: &RoleSpec,
    action: &Action,
    policy: &serde_json::Value,
    report: Report<'_>,
) -> Result<()> {
    match action {
        Action::Create => put_policy(aws, &spec.name, policy).await,
        Action::Update { changes } => {
            for change in changes {
                match change {
                    Detail::TrustPolicy => {
                        aws.iam
                            .update_assume_role_policy()
                            .role_name(&spec.name)
                            .policy_document(super::desired::trust_policy().to_string())
                            .send()
                            .await
                            .map_err(failed(format!(
                                "cannot update the trust policy of IAM role {}",
                                spec.name
                            )))?;
                    }
                    Detail::InlinePolicy { .. } => put_policy(aws, &spec.name, policy).await?,
                    Detail::Tags { set, remove } => retag(aws, Tagged::Role(&spec.name), set, remove).await?,
                    other => bail!(
                        "role {}: the plan asks for {other}, which chatctl cannot apply to a role",
                        spec.name
                    ),
                }
            }
            step(report, Kind::Role, &spec.name, "updated");
            Ok(())
        }
        Action::NoChange => Ok(()),
        other => bail!(
            "role {}: the plan asks to {} it, which chatctl cannot do here",
            other.verb(),
            spec.name
        ),
    }
}

pub(super) async fn put_policy(aws: &Aws, role: &str, policy: &serde_json::Value) -> Result<()> {
    aws.iam
        .put_role_policy()
        .role_name(role)
        .policy_name(POLICY_NAME)
        .policy_document(policy.to_string())
        .send()
        .await
        .map_err(failed(format!("cannot set the policy of IAM role {role}")))?;
    Ok(())
}

/// Inline policies are deleted and managed ones detached first: IAM refuses
/// to delete a role that has any (DeleteConflict).
pub(super) async fn delete_role(aws: &Aws, name: &str) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::stack::scripted::{Scripted, answer, desired, ignore};

    fn empty(action: &str) -> String {
        format!("<{action}Response><ResponseMetadata><RequestId>1</RequestId></ResponseMetadata></{action}Response>")
    }

    /// A role whose tags drifted: untagged and tagged in place, its
    /// policies left as they are.
    #[tokio::test]
    async fn a_roles_tags_change_in_place_and_nothing_else() {
        let desired = desired(&BTreeMap::new());
        let (aws, script) = Scripted::clients(vec![
            answer("UntagRole", empty("UntagRole")),
            answer("TagRole", empty("TagRole")),
        ]);
        let action = Action::Update {
            changes: vec![Detail::Tags {
                set: BTreeMap::from([("team".to_string(), "chat".to_string())]),
                remove: vec!["old".into()],
            }],
        };
        update_role(
            &aws,
            &desired.roles[0],
            &action,
            &desired.role_policy(&desired.roles[0], "api1"),
            &ignore,
        )
        .await
        .unwrap();
        assert_eq!(script.calls(), ["UntagRole", "TagRole"]);
    }

    /// A new role gets its policy once the API's id is known; an unchanged
    /// one gets no call at all.
    #[tokio::test]
    async fn a_new_role_gets_its_policy_and_an_unchanged_one_nothing() {
        let desired = desired(&BTreeMap::new());
        let (aws, script) = Scripted::clients(vec![answer("PutRolePolicy", empty("PutRolePolicy"))]);
        update_role(
            &aws,
            &desired.roles[0],
            &Action::Create,
            &desired.role_policy(&desired.roles[0], "api1"),
            &ignore,
        )
        .await
        .unwrap();
        update_role(
            &aws,
            &desired.roles[1],
            &Action::NoChange,
            &desired.role_policy(&desired.roles[1], "api1"),
            &ignore,
        )
        .await
        .unwrap();
        assert_eq!(script.calls(), ["PutRolePolicy"]);
    }
}
