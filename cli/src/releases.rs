//! `chatctl releases` (what `up` published, which is live) and `chatctl
//! rollback` (the aliases moved back to an earlier release).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Result, bail};
use serde::Serialize;

use crate::output::print_json;
use crate::session::{Session, lock, lock_timeout, release, until_lost};
use crate::stack::lock::BucketKnown;
use crate::stack::release::{Release, live_release, live_versions, move_aliases, read_releases, rollback_target};

#[derive(Serialize)]
struct ReleaseRow<'a> {
    #[serde(flatten)]
    release: &'a Release,
    created: String,
    live: bool,
}

fn created(release: &Release) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(release.created_ms);
    humantime::format_rfc3339_seconds(at).to_string()
}

fn short(sha: Option<&str>) -> String {
    sha.map_or("-".into(), |sha| {
        format!("{}…", sha.chars().take(8).collect::<String>())
    })
}

/// `chatctl releases`: the recorded releases, oldest first, the live one marked.
pub async fn list(context: &mut Session) -> Result<u8> {
    context.names.account = context.aws.account_id().await?;
    let Session { aws, names, json, .. } = &*context;
    let (releases, live) = tokio::try_join!(read_releases(aws, names), live_versions(aws, names))?;
    let live = live_release(&releases, &live).map(|r| r.number);
    let rows: Vec<ReleaseRow> = releases
        .iter()
        .map(|release| ReleaseRow {
            release,
            created: created(release),
            live: Some(release.number) == live,
        })
        .collect();
    if *json {
        print_json(&serde_json::json!({ "stack": names.stack, "live": live, "releases": rows }))?;
        return Ok(0);
    }
    if rows.is_empty() {
        outln!(
            "Stack {} has no releases yet: `chatctl up` makes the first.",
            names.stack
        )?;
        return Ok(0);
    }
    let mut table = comfy_table::Table::new();
    table.load_style(comfy_table::presets::NOTHING);
    table.set_header(["RELEASE", "CREATED", "CODE", "CONFIG", "LIVE"]);
    for row in &rows {
        table.add_row([
            row.release.number.to_string(),
            row.created.clone(),
            short(row.release.code_sha256.as_deref()),
            row.release.config.clone(),
            if row.live { "*".into() } else { String::new() },
        ]);
    }
    outln!("{table}")?;
    match live {
        None => outln!("No recorded release is live (the aliases were changed by hand, or an `up` was cut short).")?,
        Some(live) if Some(live) != releases.last().map(|r| r.number) => {
            outln!("Release {live} is live, not the latest: `chatctl up` makes the build you have live.")?
        }
        Some(_) => {}
    }
    Ok(0)
}

#[derive(Serialize)]
struct RollbackReport {
    stack: String,
    from: Option<u32>,
    to: u32,
    seconds: f64,
}

/// `chatctl rollback [--to N]`: under the stack's lock, moves the seven
/// aliases to an earlier release's versions and waits until they run it.
pub async fn rollback(context: &mut Session, to: Option<u32>, wait: &str) -> Result<u8> {
    let wait = lock_timeout(wait)?;
    let held = lock(context, ("rollback", BucketKnown::Existing), wait).await?;
    let Some(held) = held else {
        bail!(
            "stack {} has no releases (no bucket of the stack's in this account and region): run `chatctl up` first",
            context.names.stack
        );
    };
    let lost = held.lost();
    let result = until_lost(move_back(context, to), Some(lost)).await;
    release(Some(held)).await;
    let report = result?;
    if context.json {
        print_json(&report)?;
    }
    Ok(0)
}

async fn move_back(context: &Session, to: Option<u32>) -> Result<RollbackReport> {
    let Session { aws, names, json, .. } = context;
    let (releases, live) = tokio::try_join!(read_releases(aws, names), live_versions(aws, names))?;
    if releases.is_empty() {
        bail!("stack {} has no releases yet: run `chatctl up` first", names.stack);
    }
    let from = live_release(&releases, &live);
    let target = rollback_target(&releases, from, to)?;
    let mut report = RollbackReport {
        stack: names.stack.clone(),
        from: from.map(|r| r.number),
        to: target.number,
        seconds: 0.0,
    };
    if from.map(|r| r.number) == Some(target.number) {
        if !json {
            outln!("Release {} is live already; nothing changed.", target.number)?;
        }
        return Ok(report);
    }
    let moving = target
        .versions
        .iter()
        .filter(|(name, version)| live.get(*name) != Some(*version))
        .map(|(name, version)| (name.clone(), version.clone()))
        .collect();
    let started = Instant::now();
    move_aliases(aws, &moving, false).await?;
    report.seconds = started.elapsed().as_secs_f64();
    if !json {
        let age = SystemTime::now()
            .duration_since(UNIX_EPOCH + Duration::from_millis(target.created_ms))
            .map(|d| humantime::format_duration(Duration::from_secs(d.as_secs())).to_string())
            .unwrap_or_else(|_| "-".into());
        outln!(
            "Rolled back stack {} to release {} (code {}, published {age} ago) in {:.2}s.",
            names.stack,
            target.number,
            short(target.code_sha256.as_deref()),
            report.seconds
        )?;
        outln!("`chatctl up` makes the build you have live again; `chatctl releases` lists them.")?;
    }
    Ok(report)
}
