//! Releases: a deploy that changes the functions' code or configuration
//! publishes a version of each of the seven and moves their alias `live` to
//! it; the API (integrations, authorizer, invoke permissions) calls `live`
//! only, so the switch from one release to the next is the seven alias
//! moves, done together once every version is ready, and `rollback` moves
//! them back without building, uploading or deploying anything.
//!
//! The releases are recorded in the stack's bucket (`releases.json`):
//! number, time, code hash, configuration fingerprint and the version of
//! each function; which one is live is what the aliases say.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use futures::future::try_join_all;
use serde::{Deserialize, Serialize};

use super::base::{Action, Detail, Kind, Polled, Report, poll, step};
use super::desired::{Desired, FunctionSpec};
use super::function::{FUNCTION_SETTLING, FunctionState, function_changes, wait_for_function};
use super::{Function, Names};
use crate::aws::{Aws, aws_error, failed, is_code, retry, retry_error};

pub use super::function::ALIAS;

/// The releases' record in the stack's bucket.
pub const RECORD_KEY: &str = "releases.json";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Release {
    pub number: u32,
    /// When it was published, in milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// Lambda's CodeSha256 of the build.
    pub code_sha256: Option<String>,
    /// A hash of the functions' configuration (memory, timeout, role,
    /// environment, architecture): two releases of one build differ here.
    pub config: String,
    /// Function name → version.
    pub versions: BTreeMap<String, String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Record {
    releases: Vec<Release>,
}

/// The recorded releases, oldest first; none when the bucket or the record
/// does not exist yet.
pub async fn read_releases(aws: &Aws, names: &Names) -> Result<Vec<Release>> {
    let bucket = names.bucket();
    let got = match aws.s3.get_object().bucket(&bucket).key(RECORD_KEY).send().await {
        Err(err) if is_code(&err, &["NoSuchKey", "NoSuchBucket"]) => return Ok(vec![]),
        other => other.map_err(failed(format!("cannot read s3://{bucket}/{RECORD_KEY}")))?,
    };
    let bytes = got
        .body
        .collect()
        .await
        .with_context(|| format!("cannot read s3://{bucket}/{RECORD_KEY}"))?
        .into_bytes();
    let record: Record = serde_json::from_slice(&bytes).with_context(|| {
        format!(
            "s3://{bucket}/{RECORD_KEY} is not a releases record chatctl can read; delete it to start the record again"
        )
    })?;
    Ok(record.releases)
}

async fn write_releases(aws: &Aws, names: &Names, releases: &[Release]) -> Result<()> {
    let bucket = names.bucket();
    let body = serde_json::to_vec_pretty(&Record {
        releases: releases.to_vec(),
    })?;
    aws.s3
        .put_object()
        .bucket(&bucket)
        .key(RECORD_KEY)
        .body(aws_sdk_s3::primitives::ByteStream::from(body))
        .content_type("application/json")
        .send()
        .await
        .map_err(failed(format!("cannot write s3://{bucket}/{RECORD_KEY}")))?;
    Ok(())
}

/// The release whose versions the aliases run (function name → version).
pub fn live_release<'a>(releases: &'a [Release], live: &BTreeMap<String, String>) -> Option<&'a Release> {
    releases.iter().rev().find(|r| !live.is_empty() && r.versions == *live)
}

/// A hash of the functions' configuration, code aside.
pub fn config_fingerprint(functions: &[FunctionSpec]) -> String {
    use sha2::Digest;
    let settings: Vec<_> = functions
        .iter()
        .map(|f| {
            (
                &f.name,
                &f.role,
                f.arch.as_lambda(),
                f.memory_mb,
                f.timeout_seconds,
                &f.env,
            )
        })
        .collect();
    let digest = sha2::Sha256::digest(serde_json::to_vec(&settings).unwrap_or_default());
    digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// What the release step does: nothing when every alias runs what the
/// stack asks for; a first release when no alias exists; else a new
/// release of the functions whose live version differs (`functions`: the
/// functions read, by function; `releases`: the record).
pub fn release_action(
    desired: &Desired,
    functions: &BTreeMap<Function, Option<&FunctionState>>,
    releases: &[Release],
) -> Action {
    let mut behind = vec![];
    let mut live_versions = BTreeMap::new();
    for spec in &desired.functions {
        let live = functions
            .get(&spec.function)
            .copied()
            .flatten()
            .and_then(|f| f.live.as_deref());
        let Some(live) = live else {
            behind.push(spec.name.clone());
            continue;
        };
        if let Some(version) = &live.version {
            live_versions.insert(spec.name.clone(), version.clone());
        }
        let role_arn = desired.names.role_arn(&spec.role);
        let changes = function_changes(spec, live, &role_arn, &live.tags);
        if changes.iter().any(|d| !matches!(d, Detail::Tags { .. })) {
            behind.push(spec.name.clone());
        }
    }
    if live_versions.is_empty() {
        return Action::Create;
    }
    let mut changes = vec![];
    if !behind.is_empty() {
        changes.push(Detail::Publish { functions: behind });
    }
    let latest = releases.last().map(|r| r.number);
    if let (Some(live), Some(latest)) = (live_release(releases, &live_versions), latest)
        && live.number < latest
        && !changes.is_empty()
    {
        changes.push(Detail::LiveNotLatest {
            live: live.number,
            latest,
        });
    }
    Action::update_or_nothing(changes)
}

/// Publishes a version of each function (their `$LATEST` as the plan left
/// it), records the release, then moves the seven aliases to it together,
/// and deletes the versions of releases no longer kept.
pub async fn apply_release(aws: &Aws, desired: &Desired, action: &Action, report: Report<'_>) -> Result<()> {
    if *action == Action::NoChange {
        return Ok(());
    }
    let names = &desired.names;
    let (published, mut releases) = tokio::try_join!(
        try_join_all(desired.functions.iter().map(|spec| publish(aws, names, spec))),
        read_releases(aws, names),
    )?;
    let versions: BTreeMap<String, String> = published.into_iter().collect();
    // A build published before (an `up` after a rollback, or after a run
    // cut short once it published) is that release again: Lambda publishes
    // no new version of unchanged code and configuration.
    let number = match releases.iter().find(|r| r.versions == versions) {
        Some(release) => release.number,
        None => {
            let number = releases.last().map_or(1, |r| r.number + 1);
            releases.push(Release {
                number,
                created_ms: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64),
                code_sha256: desired
                    .functions
                    .first()
                    .and_then(|f| f.code.as_ref())
                    .map(|c| c.sha256.clone()),
                config: config_fingerprint(&desired.functions),
                versions: versions.clone(),
            });
            number
        }
    };
    let dropped = keep_latest(&mut releases, desired.releases_kept, number);
    // Recorded before the aliases move: a run cut short in between leaves
    // the release recorded, and the next `up` moves them.
    write_releases(aws, names, &releases).await?;
    move_aliases(aws, &versions, *action == Action::Create).await?;
    delete_versions(aws, &dropped, &releases).await?;
    step(report, Kind::Release, ALIAS, format!("release {number} is live"));
    Ok(())
}

/// Keeps the last `keep` releases and `live`; returns the others.
fn keep_latest(releases: &mut Vec<Release>, keep: usize, live: u32) -> Vec<Release> {
    let cut = releases.len().saturating_sub(keep);
    let mut dropped = vec![];
    let mut index = 0;
    releases.retain(|release| {
        let old = index < cut && release.number != live;
        index += 1;
        if old {
            dropped.push(release.clone());
        }
        !old
    });
    dropped
}

/// Publishes a version of a function's `$LATEST`, retrying while an update
/// of it is in progress (PublishVersion then gets ResourceConflictException,
/// as updates do: Lambda docs, "functions-states"), naming the code it must
/// hold (CodeSha256: Lambda refuses when `$LATEST` changed meanwhile);
/// waits until the version is Active. Returns (function name, version).
async fn publish(aws: &Aws, names: &Names, spec: &FunctionSpec) -> Result<(String, String)> {
    let name = &spec.name;
    let published = retry(
        FUNCTION_SETTLING,
        |err| is_code(err, &["ResourceConflictException"]),
        || {
            aws.lambda
                .publish_version()
                .function_name(name)
                .set_code_sha256(spec.code.as_ref().map(|c| c.sha256.clone()))
                .description(format!("chatctl stack {}", names.stack))
                .send()
        },
    )
    .await
    .map_err(|failure| {
        retry_error(
            format!("cannot publish a version of Lambda function {name}"),
            FUNCTION_SETTLING,
            "an update of the function from elsewhere is still running; run `chatctl up` again later",
            failure,
        )
    })?;
    let version = published
        .version
        .with_context(|| format!("PublishVersion of {name} answered without a version"))?;
    wait_for_function(aws, &format!("{name}:{version}")).await?;
    Ok((name.clone(), version))
}

/// How long an alias may refuse an update (its function being updated, the
/// version not ready) or show the routing weights Lambda puts on it while
/// it moves (terraform-provider-aws #48116).
const ALIAS_SETTLING: crate::aws::Budget = crate::aws::Budget {
    total: Duration::from_secs(120),
    first_delay: Duration::from_millis(50),
    max_delay: Duration::from_millis(500),
};

/// Moves each function's alias `live` to its version (function name →
/// version), all at once, and waits until each has settled; `first`: the
/// aliases are made (an alias found missing is made either way).
pub async fn move_aliases(aws: &Aws, versions: &BTreeMap<String, String>, first: bool) -> Result<()> {
    try_join_all(
        versions
            .iter()
            .map(|(name, version)| point_alias(aws, name, version, first)),
    )
    .await?;
    Ok(())
}

async fn point_alias(aws: &Aws, name: &str, version: &str, first: bool) -> Result<()> {
    let failure = |what: &str| format!("cannot {what} alias {ALIAS} of {name} (to version {version})");
    const TODO: &str = "the function or its version is still being changed; run again later";
    // Refused while the version is Pending or the function is being updated.
    let update = || {
        retry(
            ALIAS_SETTLING,
            |err| is_code(err, &["ResourceConflictException"]),
            || {
                aws.lambda
                    .update_alias()
                    .function_name(name)
                    .name(ALIAS)
                    .function_version(version)
                    .send()
            },
        )
    };
    // The alias as the write left it: (version, routing weights shown).
    let mut written = None;
    let missing = first
        || match update().await {
            Ok(alias) => {
                written = Some((alias.function_version, weighted(alias.routing_config.as_ref())));
                false
            }
            Err((err, _)) if is_code(&err, &["ResourceNotFoundException"]) => true,
            Err(err) => return Err(retry_error(failure("move"), ALIAS_SETTLING, TODO, err)),
        };
    if missing {
        let created = retry(
            ALIAS_SETTLING,
            |err| is_code(err, &["ResourceConflictException"]) && !alias_exists(err),
            || {
                aws.lambda
                    .create_alias()
                    .function_name(name)
                    .name(ALIAS)
                    .function_version(version)
                    .description("the version the chat's API invokes (chatctl)")
                    .send()
            },
        )
        .await;
        match created {
            Ok(alias) => written = Some((alias.function_version, weighted(alias.routing_config.as_ref()))),
            // There already (an answer lost and the call sent again, or a
            // run cut short made it): moved instead.
            Err((err, _)) if alias_exists(&err) => {
                let alias = update()
                    .await
                    .map_err(|err| retry_error(failure("move"), ALIAS_SETTLING, TODO, err))?;
                written = Some((alias.function_version, weighted(alias.routing_config.as_ref())));
            }
            Err(err) => return Err(retry_error(failure("create"), ALIAS_SETTLING, TODO, err)),
        }
    }
    // Settled as written: no need to read it again.
    if written == Some((Some(version.to_string()), false)) {
        return Ok(());
    }
    wait_for_alias(aws, name, version).await
}

/// Whether an alias splits its invocations with other versions.
fn weighted(routing: Option<&aws_sdk_lambda::types::AliasRoutingConfiguration>) -> bool {
    routing
        .and_then(|r| r.additional_version_weights())
        .is_some_and(|weights| !weights.is_empty())
}

/// CreateAlias's answer for an alias that exists: ResourceConflictException
/// "Alias already exists" (Lambda API reference, CreateAlias), the code a
/// version not ready gets too: told apart by the message.
fn alias_exists<E: aws_sdk_lambda::error::ProvideErrorMetadata, R>(
    err: &aws_sdk_lambda::error::SdkError<E, R>,
) -> bool {
    is_code(err, &["ResourceConflictException"])
        && aws_sdk_lambda::error::ProvideErrorMetadata::message(err).is_some_and(|m| m.contains("already exists"))
}

/// Waits until the alias runs `version` alone: while an alias moves,
/// Lambda shows routing weights on it for a moment (terraform-provider-aws
/// #48116, which waits for them to clear for the same reason).
async fn wait_for_alias(aws: &Aws, name: &str, version: &str) -> Result<()> {
    poll(ALIAS_SETTLING.total, || async {
        let alias = aws
            .lambda
            .get_alias()
            .function_name(name)
            .name(ALIAS)
            .send()
            .await
            .map_err(failed(format!("cannot read alias {ALIAS} of {name}")))?;
        if alias.function_version() == Some(version) && !weighted(alias.routing_config()) {
            return Ok(Polled::Ready(()));
        }
        Ok(Polled::Waiting(format!(
            "alias {ALIAS} of {name} still does not run version {version} alone after {}s; run again later",
            ALIAS_SETTLING.total.as_secs()
        )))
    })
    .await
}

/// Deletes the versions of releases no longer kept, unless a kept release
/// runs them too (a function unchanged across releases keeps its version)
/// or an alias still names them (Lambda refuses: ResourceConflictException
/// "Unable to delete version because the following aliases reference it").
async fn delete_versions(aws: &Aws, dropped: &[Release], kept: &[Release]) -> Result<()> {
    let in_use = |name: &str, version: &str| kept.iter().any(|r| r.versions.get(name).is_some_and(|v| v == version));
    let mut old: Vec<(&String, &String)> = dropped
        .iter()
        .flat_map(|r| r.versions.iter())
        .filter(|(name, version)| !in_use(name, version))
        .collect();
    old.sort();
    old.dedup();
    try_join_all(old.into_iter().map(|(name, version)| async move {
        let deleted = aws
            .lambda
            .delete_function()
            .function_name(name)
            .qualifier(version)
            .send()
            .await;
        match deleted {
            Ok(_) => Ok(()),
            Err(err) if is_code(&err, &["ResourceNotFoundException", "ResourceConflictException"]) => Ok(()),
            Err(err) => Err(aws_error(format!("cannot delete version {version} of {name}"), err)),
        }
    }))
    .await?;
    Ok(())
}

/// The version each function's alias runs (function name → version); the
/// functions without one are left out. Read with GetFunction, whose quota
/// (100/s) is its own, not the control plane's 15/s that UpdateAlias uses
/// (aws-facts.md §11).
pub async fn live_versions(aws: &Aws, names: &Names) -> Result<BTreeMap<String, String>> {
    let read = try_join_all(Function::ALL.into_iter().map(|function| async move {
        let name = names.function(function);
        match aws
            .lambda
            .get_function()
            .function_name(&name)
            .qualifier(ALIAS)
            .send()
            .await
        {
            Ok(got) => Ok(got.configuration.and_then(|c| c.version).map(|v| (name, v))),
            Err(err) if is_code(&err, &["ResourceNotFoundException"]) => Ok(None),
            Err(err) => Err(aws_error(format!("cannot read alias {ALIAS} of {name}"), err)),
        }
    }))
    .await?;
    Ok(read.into_iter().flatten().collect())
}

/// The release `rollback` goes to: `to`, or the one before the live one.
pub fn rollback_target<'a>(releases: &'a [Release], live: Option<&Release>, to: Option<u32>) -> Result<&'a Release> {
    let numbers = || {
        releases
            .iter()
            .map(|r| r.number.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(to) = to {
        return releases.iter().find(|r| r.number == to).with_context(|| {
            format!(
                "there is no release {to} to roll back to; the releases kept are {}",
                numbers()
            )
        });
    }
    let Some(live) = live else {
        bail!(
            "the functions do not run a recorded release (changed by hand?); name one with --to: {}",
            numbers()
        );
    };
    releases.iter().rev().find(|r| r.number < live.number).with_context(|| {
        format!(
            "release {} is the oldest kept; there is none before it to roll back to",
            live.number
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stack::desired::Code;
    use crate::stack::scripted::desired;

    fn release(number: u32, version: &str) -> Release {
        Release {
            number,
            created_ms: 0,
            code_sha256: None,
            config: String::new(),
            versions: Function::ALL
                .into_iter()
                .map(|f| (format!("chat-{}", f.short_name()), version.to_string()))
                .collect(),
        }
    }

    /// Each function's `$LATEST` and the version its alias runs, as the
    /// stack asks for them (`sha256` the alias's code).
    fn functions(d: &Desired, live: Option<(&str, &str)>) -> Vec<(Function, FunctionState)> {
        d.functions
            .iter()
            .map(|spec| {
                let state = |version: &str, sha: &str| FunctionState {
                    arn: "arn".into(),
                    version: Some(version.into()),
                    runtime: Some(super::super::desired::RUNTIME.into()),
                    handler: Some(spec.function.short_name().into()),
                    architecture: Some(spec.arch.as_lambda().into()),
                    memory_mb: Some(spec.memory_mb),
                    timeout_seconds: Some(spec.timeout_seconds),
                    role_arn: Some(d.names.role_arn(&spec.role)),
                    env: spec.env.clone(),
                    code_sha256: Some(sha.into()),
                    permissions: BTreeMap::new(),
                    tags: BTreeMap::new(),
                    live: None,
                };
                let mut latest = state("$LATEST", "NEW");
                latest.live = live.map(|(version, sha)| Box::new(state(version, sha)));
                (spec.function, latest)
            })
            .collect()
    }

    fn action(d: &Desired, states: &[(Function, FunctionState)], releases: &[Release]) -> Action {
        let read = states.iter().map(|(f, s)| (*f, Some(s))).collect();
        release_action(d, &read, releases)
    }

    fn built() -> Desired {
        let code = Function::ALL
            .into_iter()
            .map(|f| {
                let code = Code {
                    zip: "z".into(),
                    sha256: "NEW".into(),
                };
                (f, code)
            })
            .collect();
        desired(&code)
    }

    #[test]
    fn a_release_is_made_when_the_aliases_run_other_code_and_not_otherwise() {
        let d = built();
        assert_eq!(action(&d, &functions(&d, None), &[]), Action::Create, "no alias yet");
        let releases = [release(1, "1")];
        assert_eq!(
            action(&d, &functions(&d, Some(("1", "NEW"))), &releases),
            Action::NoChange
        );
        let Action::Update { changes } = action(&d, &functions(&d, Some(("1", "OLD"))), &releases) else {
            panic!("an update")
        };
        let Detail::Publish { functions: published } = &changes[0] else {
            panic!("{changes:?}")
        };
        assert_eq!(published.len(), 7);
        assert_eq!(changes.len(), 1, "live is the latest: {changes:?}");

        // Rolled back: release 1 live, 2 the latest.
        let releases = [release(1, "1"), release(2, "2")];
        let Action::Update { changes } = action(&d, &functions(&d, Some(("1", "OLD"))), &releases) else {
            panic!("an update")
        };
        assert_eq!(changes[1], Detail::LiveNotLatest { live: 1, latest: 2 });

        // Without a build (status), only the configuration is compared.
        let unbuilt = desired(&BTreeMap::new());
        assert_eq!(
            action(&unbuilt, &functions(&unbuilt, Some(("1", "OLD"))), &releases),
            Action::NoChange
        );
    }

    #[test]
    fn the_releases_kept_are_the_latest_and_the_live_one() {
        let mut releases: Vec<Release> = (1..=6).map(|n| release(n, &n.to_string())).collect();
        let dropped = keep_latest(&mut releases, 3, 2);
        let numbers = |list: &[Release]| list.iter().map(|r| r.number).collect::<Vec<_>>();
        assert_eq!(numbers(&releases), [2, 4, 5, 6]);
        assert_eq!(numbers(&dropped), [1, 3]);
        let mut few = vec![release(1, "1")];
        assert!(keep_latest(&mut few, 5, 1).is_empty());
    }

    #[test]
    fn rollback_goes_to_the_release_before_the_live_one_or_the_one_named() {
        let releases = [release(1, "1"), release(3, "3"), release(4, "4")];
        let live = live_release(&releases, &releases[2].versions);
        assert_eq!(live.map(|r| r.number), Some(4));
        assert_eq!(rollback_target(&releases, live, None).unwrap().number, 3);
        assert_eq!(rollback_target(&releases, live, Some(1)).unwrap().number, 1);
        let error = rollback_target(&releases, live, Some(2)).unwrap_err().to_string();
        assert_eq!(
            error,
            "there is no release 2 to roll back to; the releases kept are 1, 3, 4"
        );
        let oldest = live_release(&releases, &releases[0].versions);
        let error = rollback_target(&releases, oldest, None).unwrap_err().to_string();
        assert!(error.contains("release 1 is the oldest kept"), "{error}");
        let mixed = BTreeMap::from([("chat-join".to_string(), "3".to_string())]);
        assert_eq!(live_release(&releases, &mixed), None, "a mix is no release");
        let error = rollback_target(&releases, None, None).unwrap_err().to_string();
        assert!(error.contains("name one with --to: 1, 3, 4"), "{error}");
    }
}
