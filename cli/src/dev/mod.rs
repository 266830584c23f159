//! `chatctl dev`: the whole stack on a laptop, no AWS account, no Docker.
//! The emulator stands in for AWS; the stack is provisioned into it by the
//! same code as `up`; the functions' real binaries run behind a local Lambda
//! runtime; a local gateway serves the WebSocket API the way API Gateway does.

pub mod alarms;
pub mod emulator;
pub mod gateway;
pub mod logs;
pub mod metrics;
pub mod runtime;
pub mod watch;
pub mod web;

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{Context, Result};

use crate::build;
use crate::cli::{Cli, DevArgs};
use crate::session::{Approval, Session, connect, converge, plan_for, read};
use crate::stack::apply;
use emulator::Emulator;
use gateway::{GatewayConfig, RouteTable};
use logs as dev_logs;
use runtime::{FunctionConfig, LocalFunction};

/// `chatctl dev`: provisions the stack into a local emulator (unless
/// `--endpoint-url` names one) with the same code as `up`, then serves it
/// from the functions' real binaries until Ctrl-C.
pub async fn run(cli: &Cli, args: &DevArgs) -> Result<u8> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let root = build::find_root(&cwd)
        .context("chatctl dev runs inside the chatctl repository: it builds and runs the crates in handlers/")?;
    let idle_timeout = humantime::parse_duration(&args.idle_timeout).with_context(|| {
        format!(
            "invalid --idle-timeout {:?}: use a duration like 10m",
            args.idle_timeout
        )
    })?;
    let max_lifetime = humantime::parse_duration(&args.max_lifetime)
        .ok()
        .filter(|lifetime| !lifetime.is_zero())
        .with_context(|| {
            format!(
                "invalid --max-lifetime {:?}: use a duration like 2h or 30s",
                args.max_lifetime
            )
        })?;
    let permission_lag = match &args.permission_lag {
        Some(lag) => Some(
            humantime::parse_duration(lag)
                .with_context(|| format!("invalid --permission-lag {lag:?}: use a duration like 10s"))?,
        ),
        None => None,
    };
    anyhow::ensure!(
        (1..=64).contains(&args.instances),
        "--instances must be between 1 and 64, not {}",
        args.instances
    );
    anyhow::ensure!(
        (args.instances..=64).contains(&args.max_instances),
        "--max-instances must be between --instances ({}) and 64, not {}",
        args.instances,
        args.max_instances
    );

    let emulator = match &cli.global.endpoint_url {
        Some(_) => None,
        None => Some(Emulator::start(&root)?),
    };
    let endpoint = match (&cli.global.endpoint_url, &emulator) {
        (Some(url), _) => url.clone(),
        (None, Some(emulator)) => emulator.endpoint().to_string(),
        (None, None) => unreachable!("an emulator is started when no endpoint is given"),
    };
    let mut session = connect(cli, Some(&endpoint)).await?;
    // The local stack is served at ws://127.0.0.1:PORT: no certificate,
    // domain name or DNS records of `[domain]` in the emulator.
    session.settings.domain = None;

    eprintln!(
        "chatctl dev: building the functions and provisioning stack {} into {endpoint}",
        session.names.stack
    );
    if args.lambda_build && !cfg!(all(target_arch = "x86_64", target_os = "linux")) {
        anyhow::bail!("--lambda-build runs the x86_64 Lambda binary, so only on an x86_64 Linux machine");
    }
    let binary = match args.lambda_build {
        true => build::target_dir(&root)
            .join(build::LAMBDA_X86_64_TARGET)
            .join("release")
            .join(build::BINARY),
        false => build::target_dir(&root).join("debug").join(build::BINARY),
    };
    let build_step = async {
        match (args.no_build, args.lambda_build) {
            (true, _) => {}
            (false, true) => {
                build::build(&root, crate::settings::Arch::X86_64, |_| {}).await?;
            }
            (false, false) => build::build_host(&root).await?,
        }
        Ok::<_, anyhow::Error>(())
    };
    let provision = async {
        // Lambda code is not run by the emulator; a placeholder zip stands in for it.
        let code = build::for_every_function(build::placeholder_zip(&root)?);
        let actual = read(&mut session).await?;
        let plan = plan_for(&session, &actual, &code)?;
        if !plan.is_noop() {
            // As `up`: destroying data (a replaced table, say) is asked first,
            // and refused without a terminal unless --yes.
            let approval = if args.yes { Approval::Given } else { Approval::Ask };
            let report = |step: apply::Step| tracing::debug!("{} {}: {}", step.kind, step.name, step.done);
            converge(&session.aws, &plan, approval, crate::output::confirm, &report).await?;
        }
        Ok::<_, anyhow::Error>(plan.values)
    };
    let ((), desired) = tokio::try_join!(build_step, provision)?;
    let Session { aws, names, .. } = &session;
    let api = crate::stack::api::read_api(aws, names).await?;
    let api = api.ours().context("the API was not provisioned")?;
    let routes = RouteTable::from_api(api);

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port))
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{}; pass another --port", args.port))?;
    let port = listener.local_addr()?.port();
    gateway::local_url::record(aws, names, &api.id, port).await;
    let callback = format!("http://127.0.0.1:{port}/{}", names.stage);
    let metrics_recorder = Arc::new(metrics::Recorder::default());
    let (sink, shipper, log_task) = dev_logs::forwarder(aws.logs.clone(), true, metrics_recorder.clone());
    let alarm_specs = desired.alarms.as_ref().map(|a| a.alarms.as_slice()).unwrap_or_default();
    let alarm_watch = alarms::AlarmWatch::new(alarm_specs, &api.id);
    let metrics_task = tokio::spawn(metrics::publish(
        metrics_recorder.clone(),
        aws.cloudwatch.clone(),
        alarm_watch,
    ));
    let mut functions = HashMap::new();
    for spec in &desired.functions {
        let mut env = spec.env.clone();
        env.insert("AWS_ENDPOINT_URL".into(), endpoint.clone());
        env.insert(chat_core::config::vars::CALLBACK_URL.into(), callback.clone());
        env.insert("AWS_ACCESS_KEY_ID".into(), crate::aws::LOCAL_ACCESS_KEY.into());
        env.insert("AWS_SECRET_ACCESS_KEY".into(), crate::aws::LOCAL_ACCESS_KEY.into());
        env.insert("AWS_EC2_METADATA_DISABLED".into(), "true".into());
        let config = FunctionConfig {
            name: spec.name.clone(),
            binary: binary.clone(),
            handler: spec.function.short_name().into(),
            memory_mb: spec.memory_mb,
            timeout: std::time::Duration::from_secs(spec.timeout_seconds as u64),
            env,
            region: names.region.clone(),
            instances: args.instances,
            max_instances: args.max_instances,
        };
        functions.insert(
            spec.name.clone(),
            Arc::new(LocalFunction::start(config, sink.clone()).await?),
        );
    }
    let gateway_config = GatewayConfig {
        api_id: api.id.clone(),
        stage: names.stage.clone(),
        region: names.region.clone(),
        account: names.account.clone(),
        routes,
        functions,
        idle_timeout,
        max_lifetime,
        limits: gateway::Limits::from_api(api),
        metrics: metrics_recorder.clone(),
        detailed_metrics: api.stage.as_ref().is_some_and(|s| s.detailed_metrics()),
        access_log: gateway::AccessLogTarget::of_stage(api, &shipper),
    };
    let running: Vec<Arc<LocalFunction>> = gateway_config.functions.values().cloned().collect();
    if args.inactive_functions {
        for function in &running {
            function.make_inactive();
        }
    }
    let url = format!("ws://127.0.0.1:{port}/{}", names.stage);
    let token_mode = session.settings.auth == crate::settings::AuthMode::Token;
    let page = crate::dev::web::PageConfig {
        url: url.clone(),
        auth: session.settings.auth.as_env().into(),
        user: "alice".into(),
        room: "lobby".into(),
        token_endpoint: token_mode.then(|| "token.json".into()),
        user_claim: session.settings.oidc.as_ref().map(|oidc| oidc.user_claim.clone()),
        keep_alive_ms: (idle_timeout < gateway::DEFAULT_IDLE_TIMEOUT).then_some(idle_timeout.as_millis() as u64 / 2),
    };
    let site = crate::dev::web::router(page, token_mode.then(|| (aws.clone(), names.clone())));
    let (api_router, gateway_handle) = gateway::router(gateway_config);
    let server = tokio::spawn(gateway::serve(listener, api_router.merge(site)));
    // The watcher rebuilds the debug build: not what --lambda-build runs.
    let watcher = (!args.no_watch && !args.lambda_build).then(|| {
        tokio::spawn(crate::dev::watch::watch(root.clone(), running, |message| {
            eprintln!("chatctl dev: {message}")
        }))
    });

    outln!("Stack {} runs locally.", names.stack)?;
    outln!("Web client:        http://127.0.0.1:{port}/")?;
    outln!("WebSocket URL:     {url}")?;
    outln!("@connections URL:  {callback}/@connections")?;
    outln!("AWS endpoint:      {endpoint}  (pass --endpoint-url {endpoint} to other chatctl commands)")?;
    if token_mode {
        let token = crate::token::mint(aws, names, "alice", crate::dev::web::DEV_TOKEN_TTL)
            .await?
            .token;
        outln!("Token for alice:   {token}")?;
        outln!("Try:               npx wscat -c '{url}?token={token}&room=lobby'")?;
    } else if let Some(oidc) = &session.settings.oidc {
        outln!(
            "Tokens:            from your identity provider {} (audience {})",
            oidc.issuer,
            oidc.audience
        )?;
        outln!("Try:               npx wscat -c '{url}?token=<its token>&room=lobby'")?;
    } else {
        outln!("Try:               npx wscat -c '{url}?user=alice&room=lobby'")?;
    }
    if args.inactive_functions {
        outln!("Functions:         Inactive: each one's first invocation fails, as after weeks idle on AWS")?;
    }
    if let Some(lag) = permission_lag {
        gateway_handle.permissions_propagate_for(lag);
        outln!(
            "Permissions:       propagating for {}: handshakes get 500, posts to @connections 403",
            humantime::format_duration(lag)
        )?;
    }
    outln!("Ready. Ctrl-C stops everything.")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        result = server => {
            result.context("the local gateway stopped")?.context("the local gateway failed")?;
        }
    }
    eprintln!("chatctl dev: stopping");
    // Clients see 1001 (going away) and `$disconnect` runs, so a stack in a
    // lasting emulator (--endpoint-url) keeps no records of dead connections.
    let closed = gateway_handle.shut_down(std::time::Duration::from_secs(5)).await;
    if closed > 0 {
        eprintln!("chatctl dev: closed {closed} connections");
    }
    if let Some(watcher) = watcher {
        watcher.abort();
    }
    // The last lines and metrics (`$disconnect`'s among them) reach the
    // emulator, which a lasting one (--endpoint-url) keeps.
    metrics_task.abort();
    let last = async {
        tokio::join!(
            shipper.flush(),
            metrics::publish_pending(&metrics_recorder, &aws.cloudwatch),
            gateway::local_url::forget(aws, names, &api.id),
        )
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(3), last).await;
    log_task.abort();
    Ok(0)
}
