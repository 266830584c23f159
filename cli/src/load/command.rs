//! `chatctl load` as a command: the shape from the arguments, credentials
//! for the stack's auth mode, the live view, the summary, the exit code.

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::{Credentials, Progress, Report, Shape};
use crate::cli::LoadArgs;
use crate::output::print_json;
use crate::session::Session;
use crate::token::Auth;

/// The exit code of a run stopped by Ctrl-C, as shells report SIGINT.
pub const EXIT_INTERRUPTED: u8 = 130;

pub fn shape_of(args: &LoadArgs) -> Result<Shape> {
    let duration = |flag: &str, text: &str| {
        humantime::parse_duration(text)
            .with_context(|| format!("invalid --{flag} {text:?}: use a duration like 30s or 5m"))
    };
    let shape = Shape {
        users: args.users,
        connections_per_user: args.connections,
        rooms: args.rooms,
        messages_per_minute_per_user: args.rate,
        message_bytes: args.size,
        direct_percent: args.direct,
        duration: duration("duration", &args.duration)?,
        connect_rate: args.connect_rate,
        drain: duration("drain", &args.drain)?,
    };
    shape.check()?;
    Ok(shape)
}

pub async fn run(context: &Session, args: &LoadArgs) -> Result<u8> {
    let shape = shape_of(args)?;
    let slo = args.slo.as_deref().map(super::slo::parse).transpose()?;
    super::ensure_open_files(shape.connections())?;
    if let Some(ports) = super::local_ports()
        && shape.connections() > ports
    {
        bail!(
            "this shape opens {} connections to one address, but this machine has {ports} local ports for them \
             (net.ipv4.ip_local_port_range); widen the range or run fewer --users or --connections",
            shape.connections()
        );
    }
    if shape.connect_rate > super::CONNECT_QUOTA_PER_SECOND {
        eprintln!(
            "warning: --connect-rate {} is over API Gateway's default quota of {} new connections per second (per account and region): handshakes past it get 429",
            shape.connect_rate,
            super::CONNECT_QUOTA_PER_SECOND
        );
    }
    let url = crate::smoke::websocket_url(context, args.url.as_deref()).await?;
    let credentials = match crate::token::deployed_auth(&context.aws, &context.names).await? {
        Auth::Token(key) => {
            // Valid for the whole run: connecting, sending, draining, with room to spare.
            let connecting = Duration::from_secs_f64(shape.connections() as f64 / f64::from(shape.connect_rate));
            let ttl = (connecting + shape.duration + shape.drain + Duration::from_secs(600)).min(crate::token::MAX_TTL);
            Credentials::Tokens(Box::new(move |user: &str| {
                Ok(crate::token::mint_with(&key, user, ttl)?.token)
            }))
        }
        Auth::None => Credentials::UserName,
        Auth::Oidc { issuer } => bail!(
            "chatctl load needs a token for each of its users, and with auth = \"oidc\" tokens come from your identity provider ({issuer}); run it against a stack with auth = \"token\" or \"none\" (e.g. `chatctl dev --config` with one)"
        ),
    };
    let live = !context.json && std::io::stderr().is_terminal();
    if !context.json {
        outln!(
            "Load test of {url}: {} users × {} connection(s) in {} room(s), {} messages/min per user, {} bytes, {}% direct, {} s",
            shape.users,
            shape.connections_per_user,
            shape.rooms,
            shape.messages_per_minute_per_user,
            shape.message_bytes,
            shape.direct_percent,
            shape.duration.as_secs_f64()
        )?;
    }
    let bar = live.then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    });
    let view = bar.clone();
    let progress = move |p: Progress| {
        if let Some(bar) = &view {
            bar.set_message(format!(
                "{}: {}/{} connections open, {} sent, {} delivered/s, p99 {} ms",
                p.phase, p.open, p.wanted, p.sent, p.delivered_last_second, p.p99_ms
            ));
        }
    };
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let mut report = super::run(&url, shape, credentials, interrupt, progress).await?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if let Some(clauses) = &slo {
        report.slo = Some(super::slo::judge(clauses, &report.figures));
    }
    if let Some(path) = &args.report {
        std::fs::write(path, super::report::html(&report))
            .with_context(|| format!("cannot write the report to {}", path.display()))?;
    }
    if context.json {
        print_json(&report)?;
    } else {
        outln!("{}", summary(&report))?;
        if let Some(path) = &args.report {
            outln!("Report: {}", path.display())?;
        }
    }
    Ok(exit_code(&report))
}

/// 130 when interrupted; 1 when an SLO clause was missed or nothing
/// connected; 0 otherwise.
fn exit_code(report: &Report) -> u8 {
    if report.interrupted {
        return EXIT_INTERRUPTED;
    }
    let missed: Vec<&str> = report
        .slo
        .iter()
        .flatten()
        .filter(|v| !v.met)
        .map(|v| v.clause.as_str())
        .collect();
    if !missed.is_empty() {
        eprintln!("error: the run missed its SLO: {}", missed.join(", "));
        return 1;
    }
    if report.figures.connections.opened == 0 {
        eprintln!("error: no connection opened; see the errors above");
        return 1;
    }
    0
}

/// The text summary: connections, messages, a latency table, errors, SLO.
pub fn summary(report: &Report) -> String {
    let figures = &report.figures;
    let (connections, messages) = (&figures.connections, &figures.messages);
    let mut lines = vec![];
    if report.interrupted {
        lines.push(format!(
            "Interrupted after {:.1} s: the figures so far.",
            report.elapsed_seconds
        ));
    }
    lines.push(format!(
        "Connections: {} of {} opened, {} failed, {} lost before the end",
        connections.opened, connections.wanted, connections.failed, connections.lost
    ));
    lines.push(format!(
        "Messages:    {} sent ({:.1}/s), {} refused; {} of {} deliveries received ({:.1}/s)",
        messages.sent,
        messages.sent_per_second,
        messages.refused,
        messages.delivered,
        messages.expected,
        messages.delivered_per_second
    ));
    lines.push(format!(
        "Lost {}, duplicated {}, out of order {}",
        messages.lost, messages.duplicated, messages.out_of_order
    ));
    let mut table = comfy_table::Table::new();
    table.load_style(comfy_table::presets::NOTHING);
    table.set_header(["LATENCY (ms)", "COUNT", "P50", "P95", "P99", "MAX"]);
    for (name, latency) in [
        ("handshake", &connections.handshake),
        ("send → receive", &figures.latency),
    ] {
        table.add_row([
            name.to_string(),
            latency.count.to_string(),
            latency.p50_ms.to_string(),
            latency.p95_ms.to_string(),
            latency.p99_ms.to_string(),
            latency.max_ms.to_string(),
        ]);
    }
    lines.push(table.to_string());
    if figures.errors.is_empty() {
        lines.push("Errors: none".into());
    } else {
        lines.push("Errors:".into());
        lines.extend(
            figures
                .errors
                .iter()
                .map(|(kind, count)| format!("  {count:>6}  {kind}")),
        );
    }
    lines.push(match report.generator.cpu_ms_per_1000_deliveries {
        Some(per) => format!(
            "Load generator: {:.0} ms of CPU, {per:.1} ms per 1,000 deliveries",
            report.generator.cpu_ms
        ),
        None => format!("Load generator: {:.0} ms of CPU", report.generator.cpu_ms),
    });
    for verdict in report.slo.iter().flatten() {
        lines.push(format!(
            "SLO {}: {} (measured {})",
            verdict.clause,
            if verdict.met { "met" } else { "MISSED" },
            verdict.measured
        ));
    }
    lines.join("\n")
}
