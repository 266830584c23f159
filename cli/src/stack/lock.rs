//! One writer at a time: `up` and `down` hold the stack's lock while they
//! change it. The lock is an object in the stack's bucket, written with S3's
//! conditional writes ("How to prevent object overwrites with conditional
//! writes", S3 user guide): taken with `If-None-Match: *` (412
//! PreconditionFailed when someone holds it), renewed and taken over with
//! `If-Match: <etag>` (412 when it changed meanwhile), removed with
//! `If-Match` too. It names its holder and carries a lease, renewed while
//! the run lasts, so a killed run's lock expires by itself within
//! [`LEASE`]. Two conditional writes of one key at once may get 409
//! ConditionalRequestConflict: tried again.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use aws_sdk_s3::primitives::ByteStream;
use serde::{Deserialize, Serialize};

use super::Names;
use super::base::Found;
use super::bucket::{ensure_bucket, read_bucket};
use crate::aws::{Aws, aws_error, is_code};

/// The lock's key in the stack's bucket.
pub const KEY: &str = "chatctl.lock";
/// How long a lock lasts unless renewed: a killed run's lock is free after
/// it. `CHATCTL_LOCK_LEASE` sets another (a CI whose cancelled jobs should
/// free the stack sooner); a run renews its lock every quarter of it.
pub const LEASE: Duration = Duration::from_secs(60);
pub const LEASE_VAR: &str = "CHATCTL_LOCK_LEASE";
const SHORTEST_LEASE: Duration = Duration::from_secs(2);

/// The lease this run takes: [`LEASE`], or `CHATCTL_LOCK_LEASE`.
fn lease() -> Result<Duration> {
    let Some(text) = std::env::var(LEASE_VAR).ok().filter(|v| !v.is_empty()) else {
        return Ok(LEASE);
    };
    match humantime::parse_duration(&text) {
        Ok(lease) if lease >= SHORTEST_LEASE => Ok(lease),
        _ => bail!("invalid {LEASE_VAR} {text:?}: use a duration of 2s or more, like 30s or 2m"),
    }
}
/// How often a waiting run looks at the lock again.
const WAIT_POLL: Duration = Duration::from_millis(500);

/// Who holds the lock, and until when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Holder {
    /// `up`, `down`, …
    pub command: String,
    pub user: String,
    pub host: String,
    pub pid: u32,
    /// The CI run's page, when run by CI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ci_run: Option<String>,
    /// Milliseconds since the epoch.
    pub since_ms: i64,
    pub expires_ms: i64,
    /// The holder's lease, renewed every quarter of it.
    #[serde(default = "default_lease_ms")]
    pub lease_ms: i64,
}

fn default_lease_ms() -> i64 {
    LEASE.as_millis() as i64
}

impl Holder {
    fn of_this_process(command: &str, lease: Duration) -> Holder {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let now = chat_core::ids::epoch_ms(SystemTime::now());
        Holder {
            command: command.to_string(),
            user: env("USER")
                .or_else(|| env("USERNAME"))
                .unwrap_or_else(|| "unknown".into()),
            host: env("HOSTNAME")
                .or_else(|| {
                    std::fs::read_to_string("/etc/hostname")
                        .ok()
                        .map(|h| h.trim().to_string())
                })
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "unknown host".into()),
            pid: std::process::id(),
            ci_run: ci_run(&env),
            since_ms: now,
            expires_ms: now + lease.as_millis() as i64,
            lease_ms: lease.as_millis() as i64,
        }
    }

    /// The same run (its lease renewed meanwhile, or not).
    fn same_run(&self, other: &Holder) -> bool {
        (&self.command, &self.user, &self.host, self.pid, self.since_ms)
            == (&other.command, &other.user, &other.host, other.pid, other.since_ms)
    }

    fn expired(&self, now: SystemTime) -> bool {
        self.expires_ms <= chat_core::ids::epoch_ms(now)
    }

    /// Expired a whole lease ago by this machine's clock: no clock skew
    /// smaller than the lease could make a live lock look so.
    fn long_expired(&self, now: SystemTime) -> bool {
        self.expires_ms + self.lease_ms <= chat_core::ids::epoch_ms(now)
    }

    /// "`chatctl up` by alice on laptop (pid 4242) since 12:00:01Z, lease until 12:01:16Z".
    pub fn describe(&self) -> String {
        let at = |ms: i64| chat_core::ids::format_timestamp_ms(ms.max(0) as u64);
        let ci = self
            .ci_run
            .as_ref()
            .map(|url| format!(", CI run {url}"))
            .unwrap_or_default();
        format!(
            "`chatctl {}` by {} on {} (pid {}{ci}) since {}, lease until {}",
            self.command,
            self.user,
            self.host,
            self.pid,
            at(self.since_ms),
            at(self.expires_ms)
        )
    }
}

/// The CI run's URL from the environment of GitHub Actions, GitLab CI,
/// CircleCI or Jenkins.
fn ci_run(env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    if let (Some(server), Some(repository), Some(run)) =
        (env("GITHUB_SERVER_URL"), env("GITHUB_REPOSITORY"), env("GITHUB_RUN_ID"))
    {
        return Some(format!("{server}/{repository}/actions/runs/{run}"));
    }
    env("CI_JOB_URL")
        .or_else(|| env("CIRCLE_BUILD_URL"))
        .or_else(|| env("BUILD_URL"))
}

/// A lock this process holds, renewed until [`Lock::release`] (or the
/// process ends, after which it expires).
pub struct Lock {
    aws: Aws,
    bucket: String,
    holder: Arc<Mutex<(Holder, String)>>,
    renewal: tokio::task::JoinHandle<()>,
    lost: tokio::sync::watch::Receiver<Option<String>>,
}

/// Says when a held lock is lost (taken over after a stall longer than the
/// lease, or removed by `chatctl unlock`): the run must stop changing the
/// stack.
pub struct Lost(tokio::sync::watch::Receiver<Option<String>>);

impl Lost {
    /// Waits until the lock is lost; what happened to it. Never ends while
    /// the lock is held, nor once it is released.
    pub async fn wait(mut self) -> String {
        loop {
            if let Some(why) = self.0.borrow_and_update().clone() {
                return why;
            }
            if self.0.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }
}

/// What a run knows of the stack's bucket, where the lock goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BucketKnown {
    /// The run's read found it, finished: nothing to check.
    Found,
    /// Make it when missing (`up`).
    MakeIfMissing,
    /// Take no lock when it is missing (`down`: nothing of the stack
    /// exists, or it predates the lock, and a second `down` must not make a
    /// bucket to delete).
    NoLockIfMissing,
    /// Take no lock when it is missing, learnt from the lock's own write
    /// (`rollback`: no bucket, no releases).
    Existing,
}

/// Takes the stack's lock for `command`, waiting up to `wait` for another
/// holder to finish (0: not at all); `None` when there is no bucket and
/// `bucket` says not to make one.
pub async fn acquire(
    aws: &Aws,
    names: &Names,
    tags: &BTreeMap<String, String>,
    (command, bucket_known): (&str, BucketKnown),
    wait: Duration,
) -> Result<Option<Lock>> {
    let lease = lease()?;
    let bucket = names.bucket();
    match bucket_known {
        BucketKnown::Found | BucketKnown::Existing => {}
        BucketKnown::MakeIfMissing => ensure_bucket(aws, names, tags).await?,
        BucketKnown::NoLockIfMissing => match read_bucket(aws, names).await? {
            Found::Ours(_) => {}
            Found::Missing => return Ok(None),
            Found::Foreign(_) => {
                eprintln!("warning: S3 bucket {bucket} is not this stack's; `{command}` runs without the stack's lock");
                return Ok(None);
            }
        },
    }
    let deadline = tokio::time::Instant::now() + wait;
    let mut said_waiting = false;
    // A lock that looks expired is taken over once seen unchanged (not
    // renewed) for half its lease on this machine's clock, or at once when
    // it expired a whole lease ago: another machine's clock may differ.
    let mut unchanged_since: Option<(String, tokio::time::Instant)> = None;
    loop {
        let mine = Holder::of_this_process(command, lease);
        match write(aws, &bucket, &mine, Condition::Absent).await {
            Ok(Written::Done(etag)) => return Ok(Some(Lock::held(aws, bucket, mine, etag, lease))),
            Ok(Written::Conflict) => {}
            // Deleted meanwhile (a `down` that just finished): made again,
            // unless this is a `down`.
            Ok(Written::NoBucket) if matches!(bucket_known, BucketKnown::NoLockIfMissing | BucketKnown::Existing) => {
                return Ok(None);
            }
            Ok(Written::NoBucket) => {
                ensure_bucket(aws, names, tags).await?;
                continue;
            }
            Err(err) => return Err(err),
        }
        // Held: by whom, and is its lease over?
        let Some((theirs, etag)) = read(aws, &bucket).await? else {
            continue; // Released meanwhile.
        };
        let now = tokio::time::Instant::now();
        let seen_since = match &unchanged_since {
            Some((seen, since)) if *seen == etag => *since,
            _ => {
                unchanged_since = Some((etag.clone(), now));
                now
            }
        };
        let half_lease = Duration::from_millis(theirs.lease_ms.max(0) as u64 / 2);
        let wall = SystemTime::now();
        let stale = theirs.long_expired(wall) || (theirs.expired(wall) && now - seen_since >= half_lease);
        if stale {
            if let Written::Done(etag) = write(aws, &bucket, &mine, Condition::Matches(&etag)).await? {
                eprintln!(
                    "Took over the stack's lock from {} (its lease ran out).",
                    theirs.describe()
                );
                return Ok(Some(Lock::held(aws, bucket, mine, etag, lease)));
            }
            continue;
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "stack {} is locked by {}. Wait for it to finish{}; if that run is gone, its lock expires \
                 by itself at the end of its lease, or `chatctl unlock` removes it now",
                names.stack,
                theirs.describe(),
                if wait.is_zero() {
                    " (or pass --lock-timeout 5m to wait)".to_string()
                } else {
                    format!(" (waited {})", humantime::format_duration(wait))
                }
            );
        }
        if !said_waiting {
            eprintln!("Waiting for the stack's lock, held by {}…", theirs.describe());
            said_waiting = true;
        }
        tokio::time::sleep(WAIT_POLL).await;
    }
}

/// The current lock, if any: its holder and its ETag.
pub async fn read(aws: &Aws, bucket: &str) -> Result<Option<(Holder, String)>> {
    let object = match aws.s3.get_object().bucket(bucket).key(KEY).send().await {
        Ok(object) => object,
        Err(err) if is_code(&err, &["NoSuchKey", "NoSuchBucket"]) => return Ok(None),
        Err(err) => return Err(aws_error(format!("cannot read the lock in S3 bucket {bucket}"), err)),
    };
    let etag = object.e_tag().unwrap_or_default().to_string();
    let body = object
        .body
        .collect()
        .await
        .with_context(|| format!("cannot read the lock in S3 bucket {bucket}"))?
        .into_bytes();
    let holder: Holder = serde_json::from_slice(&body).with_context(|| {
        format!("the lock in S3 bucket {bucket} ({KEY}) is not chatctl's; `chatctl unlock` removes it")
    })?;
    Ok(Some((holder, etag)))
}

/// Removes the lock `chatctl unlock` showed (its ETag); false when it
/// changed meanwhile (renewed, released or taken by another run).
pub async fn remove(aws: &Aws, names: &Names, etag: &str) -> Result<bool> {
    delete(aws, &names.bucket(), etag).await
}

enum Condition<'a> {
    /// No lock yet.
    Absent,
    /// The lock is still this version.
    Matches(&'a str),
}

enum Written {
    Done(String),
    /// The condition did not hold.
    Conflict,
    NoBucket,
}

async fn write(aws: &Aws, bucket: &str, holder: &Holder, condition: Condition<'_>) -> Result<Written> {
    let body = serde_json::to_vec(holder)?;
    for _ in 0..20 {
        let mut put = aws
            .s3
            .put_object()
            .bucket(bucket)
            .key(KEY)
            .content_type("application/json")
            .body(ByteStream::from(body.clone()));
        put = match condition {
            Condition::Absent => put.if_none_match("*"),
            Condition::Matches(etag) => put.if_match(etag),
        };
        match put.send().await {
            Ok(written) => return Ok(Written::Done(written.e_tag().unwrap_or_default().to_string())),
            // A lock removed meanwhile cannot match.
            Err(err) if is_code(&err, &["PreconditionFailed", "NoSuchKey"]) => return Ok(Written::Conflict),
            Err(err) if is_code(&err, &["NoSuchBucket"]) => return Ok(Written::NoBucket),
            // Another conditional write of the key at that moment: again.
            Err(err) if is_code(&err, &["ConditionalRequestConflict"]) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => return Err(aws_error(format!("cannot write the lock in S3 bucket {bucket}"), err)),
        }
    }
    bail!("cannot write the lock in S3 bucket {bucket}: S3 kept answering ConditionalRequestConflict; run again")
}

/// Deletes the lock if it is still the version `etag` (DeleteObject with
/// If-Match; S3 API reference, DeleteObject); whether it did.
async fn delete(aws: &Aws, bucket: &str, etag: &str) -> Result<bool> {
    for _ in 0..20 {
        let deleted = aws
            .s3
            .delete_object()
            .bucket(bucket)
            .key(KEY)
            .if_match(etag)
            .send()
            .await;
        match deleted {
            Ok(_) => return Ok(true),
            Err(err) if is_code(&err, &["NoSuchKey", "NoSuchBucket", "PreconditionFailed"]) => {
                return Ok(false);
            }
            Err(err) if is_code(&err, &["ConditionalRequestConflict"]) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => return Err(aws_error(format!("cannot remove the lock in S3 bucket {bucket}"), err)),
        }
    }
    bail!("cannot remove the lock in S3 bucket {bucket}: S3 kept answering ConditionalRequestConflict")
}

impl Lock {
    fn held(aws: &Aws, bucket: String, holder: Holder, etag: String, lease: Duration) -> Lock {
        let state = Arc::new(Mutex::new((holder, etag)));
        let (lost_sender, lost) = tokio::sync::watch::channel(None);
        let renewal = tokio::spawn(renew(aws.clone(), bucket.clone(), state.clone(), lease, lost_sender));
        Lock {
            aws: aws.clone(),
            bucket,
            holder: state,
            renewal,
            lost,
        }
    }

    /// What says when this lock is lost.
    pub fn lost(&self) -> Lost {
        Lost(self.lost.clone())
    }

    /// Stops renewing and removes the lock, if it is still this run's. A
    /// renewal cut short may have landed (a new ETag this run never saw):
    /// the lock is read again and removed if its holder is this run.
    pub async fn release(self) -> Result<()> {
        self.renewal.abort();
        let _ = self.renewal.await;
        let (mine, etag) = self.holder.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if delete(&self.aws, &self.bucket, &etag).await? {
            return Ok(());
        }
        for _ in 0..5 {
            match read(&self.aws, &self.bucket).await? {
                Some((holder, etag)) if holder.same_run(&mine) => {
                    if delete(&self.aws, &self.bucket, &etag).await? {
                        return Ok(());
                    }
                }
                // Gone, or another run's now.
                _ => return Ok(()),
            }
        }
        bail!(
            "cannot remove this run's lock in S3 bucket {}: it keeps changing",
            self.bucket
        )
    }
}

/// Extends the lease every quarter of it; a lock that changed meanwhile
/// (taken over after a stall longer than the lease, or removed with
/// `chatctl unlock`) is said through `lost` and no longer renewed.
async fn renew(
    aws: Aws,
    bucket: String,
    state: Arc<Mutex<(Holder, String)>>,
    lease: Duration,
    lost: tokio::sync::watch::Sender<Option<String>>,
) {
    loop {
        tokio::time::sleep(lease / 4).await;
        let (mut holder, etag) = state.lock().unwrap_or_else(|e| e.into_inner()).clone();
        holder.expires_ms = chat_core::ids::epoch_ms(SystemTime::now()) + lease.as_millis() as i64;
        match write(&aws, &bucket, &holder, Condition::Matches(&etag)).await {
            Ok(Written::Done(etag)) => *state.lock().unwrap_or_else(|e| e.into_inner()) = (holder, etag),
            Ok(Written::Conflict) => {
                // Our own write may have landed with its answer lost (the
                // SDK's retry then fails its condition): still ours?
                match read(&aws, &bucket).await {
                    Ok(Some((current, etag))) if current.same_run(&holder) => {
                        *state.lock().unwrap_or_else(|e| e.into_inner()) = (current, etag);
                    }
                    Ok(Some((current, _))) => {
                        let _ = lost.send(Some(format!(
                            "the stack's lock was taken over by {}",
                            current.describe()
                        )));
                        return;
                    }
                    Ok(None) => {
                        let _ = lost.send(Some("the stack's lock was removed (chatctl unlock?)".into()));
                        return;
                    }
                    Err(err) => tracing::warn!("{err:#}"),
                }
            }
            Ok(Written::NoBucket) => {
                let _ = lost.send(Some("the stack's bucket, and the lock in it, were deleted".into()));
                return;
            }
            // Tried again at the next beat, well within the lease.
            Err(err) => tracing::warn!("{err:#}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_holder_names_its_ci_run_and_says_when_its_lease_ends() {
        let github = |name: &str| match name {
            "GITHUB_SERVER_URL" => Some("https://github.com".to_string()),
            "GITHUB_REPOSITORY" => Some("acme/chat".to_string()),
            "GITHUB_RUN_ID" => Some("42".to_string()),
            _ => None,
        };
        assert_eq!(
            ci_run(&github).as_deref(),
            Some("https://github.com/acme/chat/actions/runs/42")
        );
        let gitlab = |name: &str| (name == "CI_JOB_URL").then(|| "https://gitlab.com/j/1".to_string());
        assert_eq!(ci_run(&gitlab).as_deref(), Some("https://gitlab.com/j/1"));
        assert_eq!(ci_run(&|_: &str| None), None);

        let holder = Holder {
            command: "up".into(),
            user: "alice".into(),
            host: "laptop".into(),
            pid: 4242,
            ci_run: None,
            since_ms: 1_000,
            expires_ms: 61_000,
            lease_ms: 60_000,
        };
        assert_eq!(
            holder.describe(),
            "`chatctl up` by alice on laptop (pid 4242) since 1970-01-01T00:00:01.000Z, lease until 1970-01-01T00:01:01.000Z"
        );
        let at = |ms: u64| SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
        assert!(!holder.expired(at(60_999)));
        assert!(holder.expired(at(61_000)));
        assert!(!holder.long_expired(at(120_999)));
        assert!(holder.long_expired(at(121_000)));
        let renewed = Holder {
            expires_ms: 99_000,
            ..holder.clone()
        };
        assert!(renewed.same_run(&holder));
        assert!(
            !Holder {
                pid: 1,
                ..holder.clone()
            }
            .same_run(&holder)
        );
        let mine = Holder::of_this_process("down", LEASE);
        assert_eq!(mine.expires_ms - mine.since_ms, 60_000);
        assert_eq!(mine.pid, std::process::id());
    }
}
