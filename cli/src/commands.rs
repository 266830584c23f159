//! The commands: load settings, connect to AWS, call the library, print.

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::EXIT_DRIFT;
use crate::build;
use crate::cli::{Cli, Command, ConnectionsCommand, DownArgs, LogsArgs, RoutesCommand, TokenArgs, UpArgs};
use crate::output::{Outputs, Progress, confirm, print_json};
use crate::session::{Approval, Session, connect, converge, lock, lock_timeout, plan_for, read, release, until_lost};
use crate::stack::domain::DomainSpec;
use crate::stack::lock::BucketKnown;
use crate::stack::plan::{self, Plan};
use crate::stack::{apply, destroy};

pub async fn run(cli: Cli) -> Result<u8> {
    if let Command::Dev(args) = &cli.command {
        return crate::dev::run(&cli, args).await;
    }
    let mut context = connect(&cli, None).await?;
    let context = &mut context;
    match cli.command {
        Command::Up(args) => up(context, &args).await,
        Command::Down(args) => down(context, &args).await,
        Command::Status => crate::status::run(context).await,
        Command::Routes {
            command: RoutesCommand::List,
        } => routes_list(context).await,
        Command::Logs(args) => logs(context, &args).await,
        Command::Token(args) => token(context, &args).await,
        Command::Connections { command } => connections(context, command).await,
        Command::Smoke(args) => {
            let wait = humantime::parse_duration(&args.wait)
                .with_context(|| format!("invalid --wait {:?}: use a duration like 30s or 2m", args.wait))?;
            smoke(context, args.url.as_deref(), args.token.as_deref(), wait).await
        }
        Command::Top(args) => top(context, &args).await,
        Command::Load(args) => crate::load::command::run(context, &args).await,
        Command::Cost(args) => crate::cost::command(context, &args).await,
        Command::Unlock(args) => unlock(context, args.yes).await,
        Command::Releases => crate::releases::list(context).await,
        Command::Rollback(args) => crate::releases::rollback(context, args.to, &args.lock_timeout).await,
        Command::Dev(_) => unreachable!("handled above"),
    }
}

#[derive(Serialize)]
struct UpReport<'a> {
    stack: &'a str,
    dry_run: bool,
    plan: &'a Plan,
    outputs: Option<Outputs>,
    /// `up --smoke`: the smoke test's report.
    #[serde(skip_serializing_if = "Option::is_none")]
    smoke: Option<crate::smoke::Report>,
}

fn print_plan(plan: &Plan) -> Result<()> {
    if plan.is_noop() {
        outln!("No changes: the stack is up to date.")?;
        return Ok(());
    }
    outln!("Plan:")?;
    for change in plan.pending() {
        outln!("{change}")?;
    }
    let summary: Vec<String> = plan::summary(plan).iter().map(|(k, v)| format!("{v} to {k}")).collect();
    outln!("{}.", summary.join(", "))?;
    Ok(())
}

/// Builds the functions, showing which crates cargo is compiling (on a
/// terminal) and a line once the functions' binary is compiled.
async fn build_with_progress(
    root: &std::path::Path,
    arch: crate::settings::Arch,
    progress: &Progress,
) -> Result<build::Built> {
    let mut compiling: Vec<String> = vec![];
    build::build(root, arch, |event| match event {
        build::BuildProgress::Compiling(unit) => {
            compiling.push(unit);
            let recent: Vec<&str> = compiling.iter().rev().take(4).map(String::as_str).collect();
            progress.set_message(format!(
                "building the functions: compiling {} ({} crates so far)",
                recent.join(", "),
                compiling.len()
            ));
        }
        build::BuildProgress::Built => {
            progress.line(&format!(
                "  compiled {}, the binary of all {} functions",
                build::BINARY,
                crate::stack::Function::ALL.len()
            ));
        }
    })
    .await
}

/// With `auth = "oidc"`: whether the issuer's discovery document and keys
/// can be read from here; a warning when not (not an error: the
/// authorizer's network may reach what this machine cannot).
async fn check_issuer(oidc: Option<&chat_core::oidc::OidcSettings>) -> Option<String> {
    let oidc = oidc?;
    let failed = match chat_core::oidc::fetch_keys(oidc).await {
        Ok(keys) if !keys.is_empty() => return None,
        Ok(_) => "it publishes no signing keys with a kid".to_string(),
        Err(error) => error.to_string(),
    };
    let url = oidc.jwks_url.clone().unwrap_or_else(|| oidc.discovery_url());
    Some(format!(
        "the identity provider {} cannot be checked from here ({url}): {failed}. The authorizer reads its keys at the first token; if it cannot either, every connection is refused with 401.",
        oidc.issuer
    ))
}

async fn up(context: &mut Session, args: &UpArgs) -> Result<u8> {
    let lock_wait = lock_timeout(&args.lock_timeout)?;
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let root = build::find_root(&cwd);
    let lambda_dir = match (&args.lambda_dir, &root) {
        (Some(dir), _) => dir.clone(),
        (None, Some(root)) => build::target_dir(root).join("lambda"),
        (None, None) => bail!(
            "cannot find the handlers to build: run chatctl inside its repository, or pass --no-build --lambda-dir DIR"
        ),
    };
    // A saved plan deploys the zips it was made with.
    let no_build = args.no_build || args.plan.is_some();
    let first = if no_build {
        "reading the stack"
    } else {
        "building the functions"
    };
    let progress = Progress::start(first, context.json);
    let arch = context.settings.arch;
    let build_step = async {
        if !no_build {
            let root = root
                .as_deref()
                .context("cannot build outside the chatctl repository; pass --no-build")?;
            let built = build_with_progress(root, arch, &progress).await?;
            let elapsed = built.elapsed.as_secs_f64();
            progress.line(&if built.compiled {
                format!("built the functions in {elapsed:.1} s")
            } else {
                format!("functions up to date ({elapsed:.1} s)")
            });
            progress.set_message("reading the stack".into());
        }
        build::read_zips(&lambda_dir)
    };
    let oidc = context.settings.oidc.clone();
    let (actual, code, issuer) = tokio::join!(read(context), build_step, check_issuer(oidc.as_ref()));
    progress.finish();
    if let Some(warning) = issuer {
        eprintln!("warning: {warning}");
    }
    let settings = &context.settings;
    if let Some(warning) =
        crate::cost::model::room_warning(settings.max_connections, settings.memory_mb, settings.timeout_seconds)
    {
        eprintln!("warning: {warning}");
    }
    let (actual, code) = (actual?, code?);
    up_read(context, args, actual, code, lock_wait).await
}

type Zips = std::collections::BTreeMap<crate::stack::Function, crate::stack::desired::Code>;

/// `up` once the stack is read: the plan, and when it changes anything, the
/// lock and the plan made again under it.
async fn up_read(
    context: &mut Session,
    args: &UpArgs,
    actual: crate::stack::actual::Actual,
    code: Zips,
    lock_wait: std::time::Duration,
) -> Result<u8> {
    let mut plan = plan_for(context, &actual, &code)?;
    let Session { names, .. } = &*context;
    if !context.json {
        print_plan(&plan)?;
    }
    // What this plan was computed on, for a plan saved now or one to apply.
    if args.out.is_some() || args.plan.is_some() {
        let saved = crate::stack::saved::SavedPlan::new(names, &code, &actual, &plan)?;
        if let Some(file) = &args.out {
            saved.write(file)?;
            eprintln!(
                "Plan saved to {}; apply exactly it with `chatctl up --plan {}`.",
                file.display(),
                file.display()
            );
        }
        if let Some(file) = &args.plan {
            // What runs is the saved plan's steps, shown to be still right.
            plan = crate::stack::saved::check(file, &saved, &code)?;
        }
    }
    let existing_outputs = actual
        .api
        .ours()
        .map(|api| Outputs::of(names, &api.id, plan.values.domain.as_ref()));
    if plan.is_noop() || args.dry_run {
        if !context.json
            && let Some(outputs) = existing_outputs.as_ref().filter(|_| !args.dry_run)
        {
            outln!("{outputs}")?;
        }
        // `up --smoke` on a stack already up checks it all the same.
        let smoke = match args.smoke && !args.dry_run {
            true => Some(run_smoke(context, None, None, SMOKE_AFTER_UP).await?),
            false => None,
        };
        if context.json {
            print_json(&UpReport {
                stack: &context.names.stack,
                dry_run: args.dry_run,
                plan: &plan,
                outputs: existing_outputs,
                smoke: smoke.clone(),
            })?;
        }
        if let Some(report) = &smoke {
            return Ok(smoke_exit(report, context.json));
        }
        // As `status` and `terraform plan -detailed-exitcode`: CI can gate on drift.
        let pending = args.exit_code && !plan.is_noop();
        return Ok(if pending { EXIT_DRIFT } else { 0 });
    }
    // One writer at a time: a run that changes the stack takes its lock, and
    // applies what a read under the lock says (another run may have changed
    // the stack meanwhile). A run that changes nothing, or fails before,
    // writes nothing, not even the lock.
    let bucket = match actual.bucket.ours() {
        Some(state) if state.finished() => BucketKnown::Found,
        _ => BucketKnown::MakeIfMissing,
    };
    let lock = lock(context, ("up", bucket), lock_wait).await?;
    let lost = lock.as_ref().map(|lock| lock.lost());
    let applied = apply_under_lock(context, args, &code, &plan, lost).await;
    // Released before the smoke test, which changes nothing.
    release(lock).await;
    let (plan, api_id) = applied?;
    let names = &context.names;
    let outputs = Outputs::of(names, &api_id, plan.values.domain.as_ref());
    if !context.json {
        outln!("Stack {} is up.", names.stack)?;
        outln!("{outputs}")?;
    }
    let smoke = match args.smoke {
        true => Some(run_smoke(context, None, None, SMOKE_AFTER_UP).await?),
        false => None,
    };
    if context.json {
        print_json(&UpReport {
            stack: &context.names.stack,
            dry_run: false,
            plan: &plan,
            outputs: Some(outputs),
            smoke: smoke.clone(),
        })?;
    }
    Ok(smoke.map_or(0, |report| smoke_exit(&report, context.json)))
}

/// The plan made again from a read under the lock (said when it differs
/// from the one printed; a saved plan is checked against that read), then
/// confirmed and applied; the plan applied and the API's id.
async fn apply_under_lock(
    context: &mut Session,
    args: &UpArgs,
    code: &Zips,
    printed: &Plan,
    lost: Option<crate::stack::lock::Lost>,
) -> Result<(Plan, String)> {
    let actual = read(context).await?;
    let mut plan = plan_for(context, &actual, code)?;
    if let Some(file) = &args.plan {
        let saved = crate::stack::saved::SavedPlan::new(&context.names, code, &actual, &plan)?;
        plan = crate::stack::saved::check(file, &saved, code)?;
    } else if plan::pending_differ(printed, &plan) && !context.json {
        outln!("The stack changed while this run waited for its lock; the plan is now:")?;
        print_plan(&plan)?;
    }
    let aws = &context.aws;
    let approval = match (args.plan.is_some(), args.yes) {
        (true, _) => Approval::Saved,
        (false, true) => Approval::Given,
        (false, false) => Approval::Ask,
    };
    let progress = Progress::start("applying", context.json);
    let report = |step| progress.step(step);
    let ask = |question: &str| progress.suspend(|| confirm(question));
    let result = until_lost(converge(aws, &plan, approval, ask, &report), lost).await;
    progress.finish();
    Ok((plan, result?))
}

/// How long `up --smoke` keeps trying while IAM propagates what `up` made.
const SMOKE_AFTER_UP: std::time::Duration = std::time::Duration::from_secs(120);

#[derive(Serialize)]
struct DownReport {
    stack: String,
    deleted: Vec<String>,
    skipped: Vec<String>,
    kept: Vec<String>,
}

#[derive(Serialize)]
struct DownPlanReport<'a> {
    stack: &'a str,
    dry_run: bool,
    #[serde(flatten)]
    teardown: &'a destroy::Teardown,
    /// The tables to delete that hold chat data.
    with_data: &'a [String],
}

async fn down(context: &mut Session, args: &DownArgs) -> Result<u8> {
    let lock_wait = lock_timeout(&args.lock_timeout)?;
    let mut lock = match args.dry_run {
        true => None,
        false => lock(context, ("down", BucketKnown::NoLockIfMissing), lock_wait).await?,
    };
    let result = down_locked(context, args, &mut lock, lock_wait).await;
    // Released with the bucket by a whole `down`; here after a failure.
    release(lock).await;
    result
}

async fn down_locked(
    context: &mut Session,
    args: &DownArgs,
    lock_held: &mut Option<crate::stack::lock::Lock>,
    lock_wait: std::time::Duration,
) -> Result<u8> {
    let mut actual = read(context).await?;
    // A stack from before the lock (no bucket) is locked once seen to
    // exist, and read again under the lock.
    if !args.dry_run && lock_held.is_none() && !actual.is_empty() {
        *lock_held = lock(context, ("down", BucketKnown::MakeIfMissing), lock_wait).await?;
        actual = read(context).await?;
    }
    let Session { aws, names, .. } = &*context;
    let teardown = destroy::Teardown::of(names, &actual, args.keep_data);
    let mut with_data = vec![];
    if args.dry_run || !args.yes {
        for name in teardown.tables() {
            if crate::stack::table::table_has_items(aws, name).await? {
                with_data.push(name.to_string());
            }
        }
    }
    if args.dry_run {
        if context.json {
            print_json(&DownPlanReport {
                stack: &names.stack,
                dry_run: true,
                teardown: &teardown,
                with_data: &with_data,
            })?;
        } else {
            print_teardown(&names.stack, &teardown, &with_data)?;
        }
        return Ok(0);
    }
    if !with_data.is_empty() {
        let question = format!(
            "Tables {} hold data that will be deleted (--keep-data keeps them). Delete?",
            with_data.join(", ")
        );
        if !confirm(&question)? {
            bail!("cancelled; nothing was deleted");
        }
    }
    let progress = Progress::start("deleting", context.json);
    let deleted = std::sync::Mutex::new(vec![]);
    let report = |step: apply::Step| {
        if let Ok(mut list) = deleted.lock() {
            list.push(format!("{} {}", step.kind, step.name));
        }
        progress.step(step)
    };
    let lost = lock_held.as_ref().map(|lock| lock.lost());
    let result = until_lost(apply::delete(aws, &teardown.steps, &report, lock_held), lost).await;
    progress.finish();
    result?;
    let deleted = deleted.into_inner().unwrap_or_default();
    if context.json {
        print_json(&DownReport {
            stack: names.stack.clone(),
            deleted,
            skipped: teardown.skipped,
            kept: teardown.kept,
        })?;
        return Ok(0);
    }
    if deleted.is_empty() {
        outln!("Nothing of stack {} exists; nothing to delete.", names.stack)?;
    } else {
        outln!("Stack {} is down: {} resources deleted.", names.stack, deleted.len())?;
    }
    for kept in &teardown.kept {
        outln!("kept table {kept} (--keep-data)")?;
    }
    for skipped in &teardown.skipped {
        eprintln!("warning: left {skipped} alone: it is not this stack's");
    }
    Ok(0)
}

/// `down --dry-run`: what would be deleted, kept and left alone.
fn print_teardown(stack: &str, teardown: &destroy::Teardown, with_data: &[String]) -> Result<()> {
    if teardown.steps.is_empty() {
        outln!("Nothing of stack {stack} exists; `down` would delete nothing.")?;
    } else {
        outln!(
            "`down` would delete {} resources of stack {stack}:",
            teardown.steps.len()
        )?;
    }
    for step in &teardown.steps {
        let data = step.kind == plan::Kind::Table && with_data.contains(&step.name);
        outln!("{step}{}", if data { " (holds data)" } else { "" })?;
    }
    for kept in &teardown.kept {
        outln!("  keep table {kept} (--keep-data)")?;
    }
    for skipped in &teardown.skipped {
        outln!("  leave {skipped} alone: it is not this stack's")?;
    }
    Ok(())
}

/// Runs `work` while checking the credentials; a credentials problem is the
/// error reported, since it explains any failure of `work`.
async fn checked<T>(session: &Session, work: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    let (account, result) = tokio::join!(session.aws.account_id(), work);
    account?;
    result
}

async fn connections(context: &mut Session, command: ConnectionsCommand) -> Result<u8> {
    use crate::connections::{self as conns, Target};

    let Session { aws, names, json, .. } = &*context;
    let domain = context.settings.domain.as_ref().map(DomainSpec::of);
    let domain = domain.as_ref();
    let (rows, outcome, verb) = match command {
        ConnectionsCommand::List { room, user } => {
            if let Some(room) = &room {
                Target::Room(room.clone()).checked()?;
            }
            if let Some(user) = &user {
                Target::User(user.clone()).checked()?;
            }
            let rows = checked(context, conns::list(aws, names, room.as_deref(), user.as_deref())).await?;
            if *json {
                print_json(&rows)?;
            } else if rows.is_empty() {
                outln!("No open connection.")?;
            } else {
                outln!("{}", conns::table(&rows))?;
            }
            return Ok(0);
        }
        ConnectionsCommand::Send {
            mut args,
            room,
            user,
            url,
        } => {
            let text = args.pop().unwrap_or_default();
            let target = match (args.pop(), room, user) {
                (Some(id), None, None) => Target::Connection(id),
                (None, Some(room), None) => Target::Room(room),
                (None, None, Some(user)) => Target::User(user),
                (None, None, None) => {
                    bail!("say who gets the message: `send ID TEXT`, `send --room R TEXT` or `send --user U TEXT`")
                }
                _ => bail!("name one target: a connection id, --room or --user"),
            }
            .checked()?;
            let (endpoint, rows) = tokio::try_join!(
                conns::endpoint(aws, names, domain, url.as_deref()),
                conns::targets(aws, names, &target)
            )?;
            let room = match &target {
                Target::Room(room) => Some(room.as_str()),
                _ => None,
            };
            let outcome = conns::send(aws, &endpoint, &rows, room, &text).await?;
            (rows, outcome, "sent to")
        }
        ConnectionsCommand::Kick { id, user, url } => {
            let target = match (id, user) {
                (Some(id), None) => Target::Connection(id),
                (None, Some(user)) => Target::User(user),
                _ => bail!("name one target: a connection id or --user"),
            }
            .checked()?;
            let (endpoint, rows) = tokio::try_join!(
                conns::endpoint(aws, names, domain, url.as_deref()),
                conns::targets(aws, names, &target)
            )?;
            let outcome = conns::kick(aws, &endpoint, &rows).await?;
            (rows, outcome, "closed")
        }
        ConnectionsCommand::Ban {
            user,
            duration,
            reason,
            url,
        } => {
            Target::User(user.clone()).checked()?;
            let until = conns::ban_end(duration.as_deref(), std::time::SystemTime::now())?;
            let ban = checked(context, conns::ban(aws, names, &user, until, reason.as_deref())).await?;
            if !*json {
                outln!("Banned {user} {}.", conns::ban_span(&ban))?;
            }
            // Banned first: a connect after this point is refused; then the open ones go.
            let rows = conns::list(aws, names, None, Some(&user)).await?;
            let outcome = match rows.is_empty() {
                true => conns::Outcome::default(),
                false => {
                    let endpoint = conns::endpoint(aws, names, domain, url.as_deref()).await?;
                    conns::kick(aws, &endpoint, &rows).await?
                }
            };
            (rows, outcome, "closed")
        }
        ConnectionsCommand::Unban { user } => {
            Target::User(user.clone()).checked()?;
            let lifted = checked(context, conns::unban(aws, names, &user)).await?;
            if *json {
                print_json(&serde_json::json!({ "user": user, "lifted": lifted }))?;
            } else if lifted {
                outln!("Lifted the ban on {user}.")?;
            } else {
                outln!("{user} was not banned.")?;
            }
            return Ok(0);
        }
        ConnectionsCommand::Bans => {
            let bans = checked(context, conns::bans(aws, names)).await?;
            if *json {
                print_json(&bans)?;
            } else if bans.is_empty() {
                outln!("No ban in force.")?;
            } else {
                outln!("{}", conns::bans_table(&bans))?;
            }
            return Ok(0);
        }
    };
    if *json {
        print_json(&outcome)?;
    } else {
        outln!("{verb} {} of {} connections", outcome.done.len(), rows.len())?;
        for id in &outcome.gone {
            outln!("  {id}: already closed")?;
        }
    }
    for (id, error) in &outcome.failed {
        eprintln!("error: {id}: {error}");
    }
    Ok(if outcome.failed.is_empty() { 0 } else { 1 })
}

/// `chatctl top`: the live view on a terminal; else a snapshot every
/// `--interval` (one with `--once`), as text or JSON (one document per line).
async fn top(context: &mut Session, args: &crate::cli::TopArgs) -> Result<u8> {
    use std::io::IsTerminal;

    let since = humantime::parse_duration(&args.since)
        .with_context(|| format!("invalid --since {:?}: use a duration like 15m, 1h or 1d", args.since))?;
    let interval = humantime::parse_duration(&args.interval)
        .with_context(|| format!("invalid --interval {:?}: use a duration like 5s", args.interval))?;
    anyhow::ensure!(
        interval >= std::time::Duration::from_secs(1),
        "--interval must be at least 1s, not {}",
        args.interval
    );
    crate::top::Window::new(since, std::time::SystemTime::now())?;
    let Session { aws, names, json, .. } = &*context;
    // No credentials explains a failure better than GetMetricData's own error.
    aws.account_id().await?;
    // A local emulator (`chatctl dev`) has new metrics every second and
    // costs nothing to ask.
    let local = aws.sdk.endpoint_url().is_some_and(crate::aws::is_local_endpoint);
    let metrics_every = if local { interval } else { crate::top::METRICS_REFRESH };
    let mut watcher = crate::top::Watcher::new(aws, names, since, metrics_every);
    if !args.once && !json && std::io::stdout().is_terminal() {
        crate::top::live(&mut watcher, interval).await?;
        return Ok(0);
    }
    // One listener for the whole run: a Ctrl-C during a read ends it too.
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        let snapshot = tokio::select! {
            read = watcher.snapshot() => read?,
            _ = &mut interrupted => return Ok(0),
        };
        match (json, args.once) {
            (true, true) => print_json(&snapshot)?,
            (true, false) => crate::output::print_json_line(&snapshot)?,
            (false, _) => outln!("{}\n", crate::top::text(&snapshot))?,
        }
        if args.once {
            return Ok(0);
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = &mut interrupted => return Ok(0),
        }
    }
}

async fn smoke(context: &mut Session, url: Option<&str>, token: Option<&str>, wait: std::time::Duration) -> Result<u8> {
    let report = run_smoke(context, url, token, wait).await?;
    if context.json {
        print_json(&report)?;
    }
    Ok(smoke_exit(&report, context.json))
}

/// Runs the smoke test against `url` or the deployed stack's URL, with
/// `token` or one chatctl mints, showing each step on a terminal (text output).
async fn run_smoke(
    context: &Session,
    url: Option<&str>,
    token: Option<&str>,
    wait: std::time::Duration,
) -> Result<crate::smoke::Report> {
    use crate::smoke::Credentials;
    use crate::token::Auth;

    let Session { aws, names, .. } = context;
    let url = crate::smoke::websocket_url(context, url).await?;
    let credentials = match (token, crate::token::deployed_auth(aws, names).await?) {
        (Some(token), _) => Credentials::Token(token.to_string()),
        (None, Auth::Oidc { issuer }) => {
            bail!("{}", crate::token::oidc_tokens_come_from_the_idp(&names.stack, &issuer))
        }
        (None, Auth::Token(key)) => {
            // Valid for every attempt: a token expiring mid-way would read as a refusal.
            let ttl = wait + std::time::Duration::from_secs(600);
            Credentials::Token(crate::token::mint_with(&key, crate::smoke::USER, ttl)?.token)
        }
        (None, Auth::None) => Credentials::User,
    };
    let json = context.json;
    if !json {
        outln!("Smoke test of {url}")?;
    }
    // A closed stdout is met again, and ends the command, at the next print.
    let progress = |line: &str| {
        if !json {
            let _ = outln!("{line}");
        }
    };
    Ok(crate::smoke::run(&url, &credentials, wait, &progress).await)
}

/// The exit code of a smoke test, after its last line.
fn smoke_exit(report: &crate::smoke::Report, json: bool) -> u8 {
    match &report.error {
        None => {
            if !json {
                let total: u128 = report.steps.iter().map(|s| s.ms).sum();
                let _ = outln!("Passed in {total} ms (room {}, user {}).", report.room, report.user);
            }
            0
        }
        Some(error) => {
            eprintln!("error: smoke test failed at {error}");
            1
        }
    }
}

async fn routes_list(context: &mut Session) -> Result<u8> {
    let rows = checked(context, crate::routes::list(&context.aws, &context.names)).await?;
    if context.json {
        print_json(&rows)?;
    } else {
        outln!("{}", crate::routes::table(&rows))?;
    }
    Ok(0)
}

async fn token(context: &mut Session, args: &TokenArgs) -> Result<u8> {
    if let Some(crate::cli::TokenCommand::Rotate(rotate)) = &args.command {
        return token_rotate(context, rotate.revoke_previous).await;
    }
    let user = args.user.as_deref().unwrap_or_default();
    let ttl = crate::token::parse_ttl(&args.ttl)?;
    let minted = checked(context, crate::token::mint(&context.aws, &context.names, user, ttl)).await?;
    if context.json {
        print_json(&minted)?;
    } else {
        outln!("{}", minted.token)?;
    }
    Ok(0)
}

/// `chatctl token rotate`: a new version of the stack's secret.
async fn token_rotate(context: &mut Session, revoke_previous: bool) -> Result<u8> {
    use crate::token::Auth;

    let (aws, names) = (&context.aws, &context.names);
    match checked(context, crate::token::deployed_auth(aws, names)).await? {
        Auth::Token(key) if key.version.is_some() => {}
        Auth::Token(_) => bail!(
            "stack {} keeps its token secret in the authorizer's environment (deployed by an older chatctl); \
             run `chatctl up` to move it to Secrets Manager, then rotate it",
            names.stack
        ),
        Auth::Oidc { issuer } => bail!(
            "stack {} runs with auth = \"oidc\": its tokens are signed by your identity provider ({issuer}); \
             rotate its keys there",
            names.stack
        ),
        Auth::None => bail!(
            "stack {} runs with auth = \"none\": there is no secret to rotate",
            names.stack
        ),
    }
    let rotated = crate::stack::secret::rotate(aws, names, revoke_previous).await?;
    if context.json {
        print_json(&rotated)?;
        return Ok(0);
    }
    outln!(
        "Secret {} rotated: new tokens are signed with version {}.",
        rotated.secret,
        rotated.version
    )?;
    match (&rotated.previous, &rotated.previous_valid_until) {
        (Some(previous), Some(until)) => {
            outln!("Tokens signed with version {previous} stay valid until they expire (all by {until}).")?
        }
        _ => outln!(
            "Tokens signed with any earlier version stop working within {} minutes (as the authorizers read the secret again).",
            chat_core::token_secret::REFRESH_EVERY.as_secs() / 60
        )?,
    }
    if let (Some(dropped), Some(_)) = (&rotated.dropped, &rotated.previous) {
        outln!(
            "Tokens signed with version {dropped} (two rotations ago) stop working within {} minutes.",
            chat_core::token_secret::REFRESH_EVERY.as_secs() / 60
        )?;
    }
    Ok(0)
}

async fn logs(context: &mut Session, args: &LogsArgs) -> Result<u8> {
    use std::io::Write;

    use crate::logs::{Follower, Query, colour, fetch, parse_since, select_sources};

    let sources = select_sources(&args.functions)?;
    let start_ms = parse_since(&args.since, std::time::SystemTime::now())?;
    if !(1..=crate::logs::MAX_PAGE_SIZE).contains(&args.page_size) {
        bail!("--page-size must be between 1 and {}", crate::logs::MAX_PAGE_SIZE);
    }
    let mut follower = Follower::new(start_ms);
    let mut query = Query {
        sources: &sources,
        start_ms,
        filter: args.filter.as_deref(),
        page_size: args.page_size,
    };
    // Following ends with Ctrl-C, and that is a success.
    let interrupted = async {
        if args.follow {
            tokio::signal::ctrl_c().await.ok();
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::pin!(interrupted);
    let mut first = true;
    loop {
        let fetched = tokio::select! {
            _ = &mut interrupted => return Ok(0),
            fetched = async {
                if first {
                    checked(context, fetch(&context.aws, &context.names, &query)).await
                } else {
                    fetch(&context.aws, &context.names, &query).await
                }
            } => fetched,
        };
        first = false;
        let lines = follower.fresh(fetched?);
        let mut stdout = anstream::AutoStream::auto(std::io::stdout().lock());
        for line in &lines {
            let written = if context.json {
                serde_json::to_writer(&mut stdout, line)
                    .map_err(std::io::Error::other)
                    .and_then(|_| writeln!(stdout))
            } else {
                let style = colour(&line.function);
                writeln!(
                    stdout,
                    "{} {style}[{}]{style:#} {}",
                    line.timestamp, line.function, line.message
                )
            };
            // A closed pipe (`| head`) ends the output; it is not an error.
            if let Err(err) = written.and_then(|_| stdout.flush()) {
                if err.kind() == std::io::ErrorKind::BrokenPipe {
                    return Ok(0);
                }
                return Err(err.into());
            }
        }
        drop(stdout);
        if !args.follow {
            return Ok(0);
        }
        query.start_ms = follower.next_start();
        tokio::select! {
            _ = &mut interrupted => return Ok(0),
            _ = tokio::time::sleep(crate::logs::FOLLOW_INTERVAL) => {}
        }
    }
}

/// `chatctl unlock`: shows who holds the stack's lock, asks, removes it.
async fn unlock(context: &mut Session, yes: bool) -> Result<u8> {
    context.names.account = context.aws.account_id().await?;
    let Session { aws, names, .. } = &*context;
    let Some((holder, etag)) = crate::stack::lock::read(aws, &names.bucket()).await? else {
        outln!("Stack {} is not locked.", names.stack)?;
        return Ok(0);
    };
    outln!("Stack {} is locked by {}.", names.stack, holder.describe())?;
    let question = "Remove the lock? Only if that run is gone: two runs at once can leave the stack half changed.";
    if !yes && !confirm(question)? {
        bail!("cancelled; the lock is still there");
    }
    if !crate::stack::lock::remove(aws, names, &etag).await? {
        bail!(
            "the lock changed meanwhile (renewed, released or taken by another run); not removed. Run `chatctl unlock` again to see it"
        );
    }
    outln!("Lock removed.")?;
    Ok(0)
}
