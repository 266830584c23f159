//! The token secret of `auth = "token"`, a Secrets Manager secret of the
//! stack: read, diff (tags, a deletion to undo), create (with a new value, or
//! the one the authorizer's environment held before), delete, and rotate.
//! Its value is never in a plan, an environment or an output.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Result, bail};
use chat_core::token_secret::{self, SecretVersions};
use serde::Serialize;

use super::base::{Action, Detail, Found, Kind, Report, Stack, step, tag_changes, taken_if_ours};
use super::desired::SecretSpec;
use super::tags::{Tagged, retag};
use super::{Function, Names, STACK_TAG};
use crate::aws::{Aws, Budget, aws_error, failed, is_code, jitter, retry_error};

pub use super::desired::LEGACY_ENV;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SecretState {
    pub arn: String,
    /// Deleted with a recovery window, restorable until then.
    pub scheduled_for_deletion: bool,
    /// Every tag, the stack's included.
    pub tags: BTreeMap<String, String>,
}

/// A secret deleted without recovery keeps its name for "a short delay"
/// (Secrets Manager API reference, DeleteSecret: "use appropriate back off
/// and retry logic"); a `down` then `up` waits that long at most.
const NAME_FREED: Budget = Budget::new(Duration::from_secs(60));

pub async fn read_secret(aws: &Aws, names: &Names) -> Result<Found<SecretState>> {
    let name = names.token_secret();
    let described = match aws.secrets.describe_secret().secret_id(&name).send().await {
        Err(err) if is_code(&err, &["ResourceNotFoundException"]) => return Ok(Found::Missing),
        other => other.map_err(failed(format!("cannot read secret {name}")))?,
    };
    let tags: BTreeMap<String, String> = described
        .tags()
        .iter()
        .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or_default().to_string())))
        .collect();
    let state = SecretState {
        arn: described.arn().unwrap_or_default().to_string(),
        scheduled_for_deletion: described.deleted_date().is_some(),
        tags,
    };
    let tag = state.tags.get(STACK_TAG).cloned();
    Ok(Found::classify(&names.stack, tag.as_deref(), state))
}

pub fn secret_action(state: Option<&SecretState>, tags: &BTreeMap<String, String>) -> Action {
    let Some(state) = state else {
        return Action::Create;
    };
    let mut changes = vec![];
    if state.scheduled_for_deletion {
        changes.push(Detail::RestoreSecret);
    }
    changes.extend(tag_changes(&state.tags, tags));
    Action::update_or_nothing(changes)
}

/// Creates, restores or retags the secret. A create takes the value the
/// authorizer's environment holds when `move_from_environment` (the plan's
/// [`Detail::MoveTokenSecret`]), so the tokens issued stay valid; it runs
/// before the functions are updated, which removes that value.
pub(super) async fn apply_secret(
    aws: &Aws,
    stack: Stack<'_>,
    spec: &SecretSpec,
    action: &Action,
    move_from_environment: bool,
    report: Report<'_>,
) -> Result<()> {
    match action {
        Action::Create => {
            let value = if move_from_environment {
                legacy_value(aws, stack.names).await?
            } else {
                super::desired::new_secret()
            };
            create_secret(aws, stack, spec, &value).await?;
            let done = if move_from_environment {
                "created (the authorizer's secret, moved)"
            } else {
                "created"
            };
            step(report, Kind::Secret, &spec.name, done);
        }
        Action::Update { changes } => {
            let state = match read_secret(aws, stack.names).await? {
                Found::Ours(state) => state,
                found => return taken_if_ours(&found, "secret", &spec.name),
            };
            for change in changes {
                match change {
                    Detail::RestoreSecret => {
                        let restored = aws.secrets.restore_secret().secret_id(&state.arn).send().await;
                        match restored {
                            Ok(_) => {}
                            // Deleted without recovery a moment ago, and still
                            // shown while Secrets Manager removes it: made anew
                            // once the name is free.
                            Err(err) if is_code(&err, &["InvalidRequestException"]) => {
                                create_secret(aws, stack, spec, &super::desired::new_secret()).await?;
                                step(
                                    report,
                                    Kind::Secret,
                                    &spec.name,
                                    "created (the old one was deleted for good)",
                                );
                                return Ok(());
                            }
                            Err(err) => return Err(aws_error(format!("cannot restore secret {}", spec.name), err)),
                        }
                    }
                    Detail::Tags { set, remove } => retag(aws, Tagged::Secret(&state.arn), set, remove).await?,
                    other => bail!("a secret has no {other} to change"),
                }
            }
            step(report, Kind::Secret, &spec.name, "updated");
        }
        Action::NoChange => {}
        Action::Replace { .. } | Action::Delete => bail!("the plan cannot {} secret {}", action.verb(), spec.name),
    }
    Ok(())
}

/// The value an authorizer deployed before the move holds in its environment.
async fn legacy_value(aws: &Aws, names: &Names) -> Result<String> {
    let function = names.function(Function::Authorizer);
    let configuration = super::function::function_configuration(aws, &function).await?;
    configuration
        .environment()
        .and_then(|e| e.variables())
        .and_then(|vars| vars.get(LEGACY_ENV))
        .cloned()
        .ok_or_else(|| {
            anyhow::anyhow!("function {function} no longer has {LEGACY_ENV} to move; make a new plan (`chatctl up`)")
        })
}

async fn create_secret(aws: &Aws, stack: Stack<'_>, spec: &SecretSpec, value: &str) -> Result<()> {
    let tags: Vec<aws_sdk_secretsmanager::types::Tag> = stack
        .tags
        .iter()
        .map(|(k, v)| aws_sdk_secretsmanager::types::Tag::builder().key(k).value(v).build())
        .collect();
    let description = format!(
        "chatctl stack {}: signs its connection tokens (auth = \"token\")",
        stack.names.stack
    );
    let started = Instant::now();
    let mut delay = NAME_FREED.first_delay;
    loop {
        // The SDK gives CreateSecret an idempotency token (ClientRequestToken),
        // so its own retry after a lost answer is the same request.
        let created = aws
            .secrets
            .create_secret()
            .name(&spec.name)
            .description(&description)
            .secret_string(value)
            .set_tags(Some(tags.clone()))
            .send()
            .await;
        let err = match created {
            Ok(_) => return Ok(()),
            Err(err) => err,
        };
        // Made by a try whose answer was lost (an emulator may not honour
        // the idempotency token): ours if tagged so.
        if is_code(&err, &["ResourceExistsException"]) {
            return taken_if_ours(&read_secret(aws, stack.names).await?, "secret", &spec.name);
        }
        // InvalidRequestException says more than this; it is waited through
        // only while the name is still held by a deleted secret.
        let being_freed = is_code(&err, &["InvalidRequestException"])
            && match read_secret(aws, stack.names).await? {
                Found::Missing => true,
                Found::Ours(state) => state.scheduled_for_deletion,
                Found::Foreign(_) => false,
            };
        if !being_freed {
            return Err(aws_error(format!("cannot create secret {}", spec.name), err));
        }
        if started.elapsed() + delay > NAME_FREED.total {
            return Err(retry_error(
                format!("cannot create secret {}", spec.name),
                NAME_FREED,
                "a secret of this name was deleted moments ago and is still being removed; run `chatctl up` again in a minute",
                (err, true),
            ));
        }
        tokio::time::sleep(jitter(delay)).await;
        delay = (delay * 2).min(NAME_FREED.max_delay);
    }
}

/// Deletes the secret at once: no recovery window, so that `down` leaves
/// nothing (a deleted secret otherwise lingers, and blocks its name, for
/// 7–30 days).
pub(super) async fn delete_secret(aws: &Aws, name: &str) -> Result<()> {
    match aws
        .secrets
        .delete_secret()
        .secret_id(name)
        .force_delete_without_recovery(true)
        .send()
        .await
    {
        Err(err) if is_code(&err, &["ResourceNotFoundException"]) => Ok(()),
        other => other
            .map(|_| ())
            .map_err(failed(format!("cannot delete secret {name}"))),
    }
}

/// The secret's versions as the authorizer reads them.
pub async fn versions(aws: &Aws, names: &Names) -> Result<SecretVersions> {
    token_secret::read(&aws.secrets, &names.token_secret(), false)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// What `status` says of the secret: its current and previous versions and
/// since when, read from their metadata (ListSecretVersionIds, every page),
/// never their values.
pub async fn version_details(aws: &Aws, names: &Names) -> Result<Vec<String>> {
    let name = names.token_secret();
    let mut pages = aws
        .secrets
        .list_secret_version_ids()
        .secret_id(&name)
        .into_paginator()
        .send();
    let (mut current, mut previous) = (None, None);
    while let Some(page) = pages.next().await {
        let page = page.map_err(failed(format!("cannot list the versions of secret {name}")))?;
        for version in page.versions() {
            let stages = version.version_stages();
            let created = version.created_date().and_then(|d| SystemTime::try_from(*d).ok());
            let entry = (version.version_id().unwrap_or_default().to_string(), created);
            if stages.iter().any(|s| s == token_secret::CURRENT) {
                current = Some(entry);
            } else if stages.iter().any(|s| s == token_secret::PREVIOUS) {
                previous = Some(entry);
            }
        }
    }
    let mut details = vec![];
    if let Some((version, since)) = &current {
        let since = since.map(timestamp).unwrap_or_else(|| "-".into());
        details.push(format!("current version {version} since {since}"));
    }
    if let Some((version, _)) = previous {
        let until = current
            .and_then(|(_, since)| since)
            .map(|since| timestamp(since + chat_core::token::MAX_TTL));
        details.push(format!(
            "tokens of version {version} accepted until {}",
            until.unwrap_or_else(|| "-".into())
        ));
    }
    Ok(details)
}

/// What `chatctl token rotate` did.
#[derive(Debug, Clone, Serialize)]
pub struct Rotated {
    pub secret: String,
    /// The new current version.
    pub version: String,
    /// The version before, whose tokens stay valid until `previous_valid_until`
    /// (none when revoked).
    pub previous: Option<String>,
    pub previous_valid_until: Option<String>,
    /// A version that was previous until now: its tokens stop working.
    pub dropped: Option<String>,
}

/// Puts a new version of the secret (AWSCURRENT), the one before becoming
/// AWSPREVIOUS; with `revoke_previous`, that one is unlabelled at once, so
/// tokens it signed stop working as soon as the authorizers read the secret
/// again (within [`token_secret::REFRESH_EVERY`]).
pub async fn rotate(aws: &Aws, names: &Names, revoke_previous: bool) -> Result<Rotated> {
    let name = names.token_secret();
    let before = versions(aws, names).await?;
    let put = aws
        .secrets
        .put_secret_value()
        .secret_id(&name)
        .secret_string(super::desired::new_secret())
        .send()
        .await
        .map_err(failed(format!("cannot put a new version of secret {name}")))?;
    let version = put.version_id().unwrap_or_default().to_string();
    if revoke_previous {
        aws.secrets
            .update_secret_version_stage()
            .secret_id(&name)
            .version_stage(token_secret::PREVIOUS)
            .remove_from_version_id(&before.current.version)
            .send()
            .await
            .map_err(failed(format!(
                "the new version {version} is current, but the previous one could not be revoked"
            )))?;
    }
    let until = SystemTime::now() + chat_core::token::MAX_TTL;
    Ok(Rotated {
        secret: name,
        version,
        previous: (!revoke_previous).then(|| before.current.version.clone()),
        previous_valid_until: (!revoke_previous).then(|| timestamp(until)),
        dropped: before.previous.map(|p| p.version),
    })
}

pub fn timestamp(at: SystemTime) -> String {
    let ms = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    chat_core::ids::format_timestamp_ms(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(scheduled_for_deletion: bool, tags: &[(&str, &str)]) -> SecretState {
        SecretState {
            arn: "arn:aws:secretsmanager:us-east-1:123456789012:secret:chatctl/chat/token-AbCdEf".into(),
            scheduled_for_deletion,
            tags: tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    #[test]
    fn a_secret_is_made_restored_or_retagged() {
        let want = BTreeMap::from([(STACK_TAG.to_string(), "chat".to_string())]);
        assert_eq!(secret_action(None, &want), Action::Create);
        assert_eq!(
            secret_action(Some(&state(false, &[(STACK_TAG, "chat")])), &want),
            Action::NoChange
        );
        assert_eq!(
            secret_action(Some(&state(true, &[(STACK_TAG, "chat"), ("team", "a")])), &want),
            Action::Update {
                changes: vec![
                    Detail::RestoreSecret,
                    Detail::Tags {
                        set: BTreeMap::new(),
                        remove: vec!["team".into()]
                    }
                ]
            }
        );
    }
}
