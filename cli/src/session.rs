//! What `up` and `dev` (and every other command) share: the settings and
//! AWS clients of a session, the read of the stack, the one planning step,
//! and `converge`, which confirms a plan's destructive steps and applies it.
//! It sits under both `commands` and `dev`, which import it, not each other.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};

use crate::aws::{Aws, AwsOptions, is_local_endpoint, local_region};
use crate::cli::{Cli, OutputFormat};
use crate::settings::{ConfigFile, Overrides, Settings};
use crate::stack::desired::{Code, Desired};
use crate::stack::plan::{self, Plan};
use crate::stack::{Function, Names, actual, apply, lock};

/// What every command works with: the settings, AWS clients, the stack's names.
pub struct Session {
    pub settings: Settings,
    pub aws: Aws,
    pub names: Names,
    pub json: bool,
}

/// Settings from flags and file, and AWS clients. `local_emulator` is the
/// endpoint of the emulator `chatctl dev` runs, which takes any credentials.
pub async fn connect(cli: &Cli, local_emulator: Option<&str>) -> Result<Session> {
    let (file, _) = ConfigFile::load(cli.global.config.as_deref())?;
    let overrides = Overrides {
        stack: cli.global.stack.clone(),
        stage: cli.global.stage.clone(),
    };
    let settings = Settings::resolve(&file, &overrides)?;
    let region = cli.global.region.clone().or(file.region.clone());
    // An endpoint on this machine is an emulator (the one `chatctl dev` prints, say).
    let local_endpoint = local_emulator
        .map(str::to_string)
        .or_else(|| cli.global.endpoint_url.clone().filter(|url| is_local_endpoint(url)));
    let options = match local_endpoint {
        None => AwsOptions {
            region,
            profile: cli.global.profile.clone(),
            endpoint_url: cli.global.endpoint_url.clone(),
            static_credentials: false,
        },
        Some(endpoint) => AwsOptions {
            region: Some(local_region(region)),
            profile: None,
            endpoint_url: Some(endpoint),
            static_credentials: true,
        },
    };
    let aws = Aws::connect(&options).await?;
    let names = Names {
        stack: settings.stack.clone(),
        stage: settings.stage.clone(),
        region: aws.region.clone(),
        // Filled by `read`, concurrently with the first reads.
        account: String::new(),
    };
    Ok(Session {
        settings,
        aws,
        names,
        json: cli.global.output == OutputFormat::Json,
    })
}

/// Checks the credentials (learning the account id) while reading the stack:
/// a no-op `up` thus costs two rounds of calls.
pub async fn read(session: &mut Session) -> Result<actual::Actual> {
    let account = async {
        let known = !session.names.account.is_empty();
        let account = if known {
            session.names.account.clone()
        } else {
            session.aws.account_id().await?
        };
        // The bucket's name holds a hash of the account id.
        let names = Names {
            account: account.clone(),
            ..session.names.clone()
        };
        let (bucket, releases) = tokio::join!(
            crate::stack::bucket::read_bucket(&session.aws, &names),
            crate::stack::release::read_releases(&session.aws, &names),
        );
        Ok::<_, anyhow::Error>((account, bucket, releases))
    };
    let domain = session
        .settings
        .domain
        .as_ref()
        .map(crate::stack::domain::DomainSpec::of);
    let (account, actual) = tokio::join!(account, actual::read(&session.aws, &session.names, domain.as_ref()));
    // A credentials problem explains a failed read better than the read's own error.
    let (account, bucket, releases) = account?;
    session.names.account = account;
    let mut actual = actual?;
    actual.bucket = bucket?;
    // Another account's bucket of that name is no record of ours.
    if actual.bucket.ours().is_some() {
        actual.releases = releases?;
    }
    Ok(actual)
}

/// Takes the stack's lock for `command` (`up`, `down`), waiting up to
/// `wait` for another run's (see [`lock::acquire`]); learns the account id
/// on the way.
pub async fn lock(
    session: &mut Session,
    command: (&str, lock::BucketKnown),
    wait: std::time::Duration,
) -> Result<Option<lock::Lock>> {
    if session.names.account.is_empty() {
        session.names.account = session.aws.account_id().await?;
    }
    let tags = crate::stack::desired::stack_tags(&session.settings, &session.names);
    lock::acquire(&session.aws, &session.names, &tags, command, wait).await
}

/// Runs `work` (changes to the stack) unless the run's lock is lost
/// meanwhile: then it stops where it is, as a killed run would, which the
/// next run finishes.
pub async fn until_lost<T>(
    work: impl std::future::Future<Output = Result<T>>,
    lost: Option<crate::stack::lock::Lost>,
) -> Result<T> {
    let Some(lost) = lost else {
        return work.await;
    };
    tokio::select! {
        done = work => done,
        why = lost.wait() => bail!(
            "stopped: {why}, so another run may be changing the stack. Run this command again once that run \
             is done: it finishes the job"
        ),
    }
}

/// Releases a lock this run holds; a failure is said, not fatal (the lock
/// expires by itself).
pub async fn release(lock: Option<crate::stack::lock::Lock>) {
    if let Some(lock) = lock
        && let Err(err) = lock.release().await
    {
        eprintln!("warning: {err:#} (it expires by itself within a minute)");
    }
}

/// `--lock-timeout`'s value.
pub fn lock_timeout(text: &str) -> Result<std::time::Duration> {
    humantime::parse_duration(text)
        .with_context(|| format!("invalid --lock-timeout {text:?}: use a duration like 0s, 30s or 5m"))
}

/// What the stack should be for `code`, and the plan from `actual` to it:
/// the one planning step of `up` and `dev`. Names taken by resources that
/// are not the stack's stop it here.
pub fn plan_for(session: &Session, actual: &actual::Actual, code: &BTreeMap<Function, Code>) -> Result<Plan> {
    let desired = Desired::new(&session.settings, session.names.clone(), code);
    let plan = plan::plan(&desired, actual);
    if !plan.conflicts.is_empty() {
        bail!("names this stack needs are taken:\n  {}", plan.conflicts.join("\n  "));
    }
    if !plan.problems.is_empty() {
        bail!(
            "chatctl.toml cannot be applied as it stands (nothing was changed):\n  {}",
            plan.problems.join("\n  ")
        );
    }
    Ok(plan)
}

/// Who approved a plan's destructive steps (replacements, deletions, an
/// index deleted from a live table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Approval {
    /// Ask on the terminal; refused without one.
    Ask,
    /// `--yes`.
    Given,
    /// A saved plan: approved when it was saved and reviewed.
    Saved,
}

/// The question `converge` asks before destroying anything; None when the
/// plan destroys nothing.
fn destructive_question(plan: &Plan) -> Option<String> {
    let destructive = plan.destructive();
    if destructive.is_empty() {
        return None;
    }
    let list: Vec<String> = destructive.iter().map(|c| c.to_string()).collect();
    Some(format!(
        "These changes delete resources and their data:\n{}\nGo on?",
        list.join("\n")
    ))
}

/// Confirms the plan's destructive steps (`confirm` asks the question),
/// then applies exactly the plan; returns the API id. Refused, nothing
/// changed, when a destructive step is not approved.
pub async fn converge(
    aws: &Aws,
    plan: &Plan,
    approval: Approval,
    confirm: impl FnOnce(&str) -> Result<bool>,
    report: apply::Report<'_>,
) -> Result<String> {
    if let Some(question) = destructive_question(plan)
        && approval == Approval::Ask
        && !confirm(&question)?
    {
        bail!("cancelled; nothing was changed");
    }
    apply::apply(aws, plan, report).await
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::stack::plan::{Action, Change, Kind};
    use crate::stack::scripted::{Scripted, desired, ignore};

    /// A plan that replaces the messages table (and so deletes its items).
    fn replacing_a_table() -> Plan {
        Plan {
            values: desired(&BTreeMap::new()),
            changes: vec![Change {
                kind: Kind::Table,
                name: "chat-messages".into(),
                id: None,
                action: Action::Replace {
                    reason: "key schema is id/-, should be conversation/message_id".into(),
                },
            }],
            conflicts: vec![],
            problems: vec![],
        }
    }

    #[tokio::test]
    async fn a_destructive_step_refused_at_the_question_changes_nothing() {
        let (aws, script) = Scripted::clients(vec![]);
        let asked = std::sync::Mutex::new(None);
        let confirm = |question: &str| {
            *asked.lock().unwrap() = Some(question.to_string());
            Ok(false)
        };
        let error = converge(&aws, &replacing_a_table(), Approval::Ask, confirm, &ignore)
            .await
            .unwrap_err();
        assert_eq!(error.to_string(), "cancelled; nothing was changed");
        assert_eq!(
            asked.lock().unwrap().as_deref(),
            Some(
                "These changes delete resources and their data:\n-/+ table chat-messages (replace: key schema is \
                 id/-, should be conversation/message_id)\nGo on?"
            )
        );
        assert_eq!(script.calls(), Vec::<String>::new(), "no AWS call before the answer");
    }

    #[test]
    fn only_destructive_steps_are_asked_about() {
        let mut plan = replacing_a_table();
        assert!(destructive_question(&plan).is_some());
        plan.changes[0].action = Action::Create;
        assert_eq!(destructive_question(&plan), None);
    }
}
