//! `chatctl cost`: what the chat costs. Measured: the stack's CloudWatch
//! metrics over `--since` (API Gateway's messages, Lambda's invocations and
//! duration × memory, DynamoDB's consumed units, the log groups' ingested
//! bytes) and the connection minutes, for which AWS publishes no metric,
//! estimated from the open connections now. Projected (`--project`): a day
//! of a traffic shape you describe. Both × the region's prices.

pub mod model;
pub mod prices;

use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::metrics::{
    API_NAMESPACE, DURATION, Dimensions, INVOCATIONS, LAMBDA_NAMESPACE, MESSAGE_COUNT, function_dimensions,
    stage_dimensions,
};
use crate::session::Session;
use crate::stack::Function;
use crate::top::{Query, Window, metric_data};
use model::{Bill, Usage};
use prices::{PriceSource, Prices};

const DYNAMODB_NAMESPACE: &str = "AWS/DynamoDB";
const CONSUMED_WRITES: &str = "ConsumedWriteCapacityUnits";
const CONSUMED_READS: &str = "ConsumedReadCapacityUnits";
const LOGS_NAMESPACE: &str = "AWS/Logs";
const INCOMING_BYTES: &str = "IncomingBytes";
/// Lambda bills each invocation's duration rounded up to the millisecond;
/// the Duration metric is not rounded: half a millisecond each, on average.
const ROUNDING_MS: f64 = 0.5;

/// What `cost` prints.
#[derive(Debug, Clone, Serialize)]
pub struct Estimate {
    pub stack: String,
    /// "measured" or "projected".
    pub basis: &'static str,
    /// What was measured or projected, in words.
    pub over: String,
    pub prices: PriceSource,
    /// A day's usage.
    pub usage_per_day: Usage,
    #[serde(flatten)]
    pub bill: Bill,
    /// What the estimate leaves out or assumes.
    pub notes: Vec<String>,
}

/// Which metric each query reads.
#[derive(Clone, Copy)]
enum Reading {
    ApiMessages,
    SendMessages,
    Invocations,
    DurationMs,
    Writes,
    Reads,
    LogBytes,
}

/// The stack's usage over `since`, scaled to a day.
pub async fn measured(session: &Session, since: Duration) -> Result<(Usage, String, Vec<String>)> {
    let Session {
        aws, names, settings, ..
    } = session;
    let window = Window::new(since, SystemTime::now())?;
    let api = crate::stack::api::deployed_api(aws, names).await?;
    let mut queries: Vec<(Query, Reading)> = vec![];
    let sum = |namespace, name, dimensions: Dimensions| Query {
        namespace,
        name,
        dimensions,
        stat: "Sum",
        whole_window: true,
    };
    queries.push((
        sum(API_NAMESPACE, MESSAGE_COUNT, stage_dimensions(&api.id, &names.stage)),
        Reading::ApiMessages,
    ));
    for function in Function::ALL {
        let name = names.function(function);
        queries.push((
            sum(LAMBDA_NAMESPACE, INVOCATIONS, function_dimensions(&name)),
            if function == Function::SendMessage {
                Reading::SendMessages
            } else {
                Reading::Invocations
            },
        ));
        queries.push((
            sum(LAMBDA_NAMESPACE, DURATION, function_dimensions(&name)),
            Reading::DurationMs,
        ));
        queries.push((
            sum(
                LOGS_NAMESPACE,
                INCOMING_BYTES,
                vec![("LogGroupName", names.log_group(function))],
            ),
            Reading::LogBytes,
        ));
    }
    queries.push((
        sum(
            LOGS_NAMESPACE,
            INCOMING_BYTES,
            vec![("LogGroupName", names.access_log_group())],
        ),
        Reading::LogBytes,
    ));
    // A table's own units, and each index's: indexes are billed too.
    let tables = [
        (names.connections_table(), vec![None, Some("by-room"), Some("by-user")]),
        (names.messages_table(), vec![None]),
    ];
    for (table, indexes) in &tables {
        for index in indexes {
            let mut dimensions: Dimensions = vec![("TableName", table.clone())];
            if let Some(index) = index {
                dimensions.push(("GlobalSecondaryIndexName", index.to_string()));
            }
            queries.push((
                sum(DYNAMODB_NAMESPACE, CONSUMED_WRITES, dimensions.clone()),
                Reading::Writes,
            ));
            queries.push((sum(DYNAMODB_NAMESPACE, CONSUMED_READS, dimensions), Reading::Reads));
        }
    }
    let answers = metric_data(aws, &window, &queries).await?;
    let mut totals = [0.0f64; 7];
    let mut seen = [false; 7];
    for (index, (_, reading)) in queries.iter().enumerate() {
        let slot = *reading as usize;
        if let Some(points) = answers.get(&index).filter(|p| !p.is_empty()) {
            totals[slot] += points.iter().map(|(_, v)| v).sum::<f64>();
            seen[slot] = true;
        }
    }
    let [
        api_messages,
        send_messages,
        other_invocations,
        duration_ms,
        writes,
        reads,
        log_bytes,
    ] = totals;
    let invocations = send_messages + other_invocations;
    let minutes = window.minutes();
    let open = chat_core::store::ConnectionStore::for_operator(aws.dynamodb.clone(), names.connections_table())
        .open_count()
        .await
        .context("cannot count the open connections")?;
    let gb = f64::from(settings.memory_mb) / 1024.0;
    let per_day = 24.0 * 60.0 / minutes;
    let usage = Usage {
        api_messages,
        connection_minutes: open as f64 * minutes,
        lambda_requests: invocations,
        lambda_gb_seconds: (duration_ms + ROUNDING_MS * invocations) / 1000.0 * gb,
        dynamodb_write_units: writes,
        dynamodb_read_units: reads,
        logs_gb: log_bytes / 1e9,
        chat_messages: send_messages,
    }
    .scaled(per_day);
    let mut notes = vec![format!(
        "connection minutes: AWS publishes no metric for them; estimated as the {open} connection(s) open now, open all along"
    )];
    let max_event = settings.max_message_bytes as u64 + 200;
    if model::metered(max_event) > 1.0 {
        notes.push(format!(
            "messages are counted once each; with max_message_bytes = {}, a long one is metered as up to {} (32 KB each)",
            settings.max_message_bytes,
            model::metered(max_event)
        ));
    }
    for (slot, what) in [
        (Reading::ApiMessages, "API Gateway messages"),
        (Reading::Writes, "DynamoDB consumed units"),
        (Reading::LogBytes, "CloudWatch Logs ingested bytes"),
    ] {
        if !seen[slot as usize] {
            notes.push(format!("no data for {what} over this window: counted as 0"));
        }
    }
    let over = format!(
        "the last {} of metrics (periods of {} min), scaled to a day",
        humantime::format_duration(Duration::from_secs((window.end - window.start) as u64)),
        window.period_seconds / 60
    );
    Ok((usage, over, notes))
}

pub fn estimate(
    session: &Session,
    basis: &'static str,
    over: String,
    usage: Usage,
    (prices, source): (Prices, PriceSource),
    mut notes: Vec<String>,
) -> Estimate {
    let bill = model::bill(&usage, &prices, session.settings.arch);
    notes.push("list prices: no free tier, no savings plans, no data transfer; first pricing tier only".into());
    Estimate {
        stack: session.names.stack.clone(),
        basis,
        over,
        prices: source,
        usage_per_day: usage,
        bill,
        notes,
    }
}

/// The estimate as a table and a few lines.
pub fn text(estimate: &Estimate) -> String {
    let bill = &estimate.bill;
    let mut table = comfy_table::Table::new();
    table.load_style(comfy_table::presets::NOTHING);
    table.set_header(["PART", "PER DAY", "UNIT", "$/DAY", "SHARE"]);
    for part in &bill.parts {
        table.add_row([
            part.part.to_string(),
            quantity(part.quantity_per_day),
            part.unit.to_string(),
            dollars(part.dollars_per_day),
            format!("{:.1}%", part.share),
        ]);
    }
    let mut lines = vec![
        format!(
            "Cost of stack {}, {} from {}, at {}:",
            estimate.stack, estimate.basis, estimate.over, estimate.prices.from
        ),
        table.to_string(),
        format!(
            "Total: {}/day, {}/month at this rate{}",
            dollars(bill.dollars_per_day),
            dollars(bill.dollars_per_month),
            match bill.dollars_per_1000_messages {
                Some(per) => format!(", {} per 1,000 messages sent", dollars(per)),
                None => String::new(),
            }
        ),
    ];
    lines.extend(estimate.notes.iter().map(|note| format!("Note: {note}")));
    lines.join("\n")
}

fn dollars(value: f64) -> String {
    match value {
        v if v >= 100.0 => format!("${v:.0}"),
        v if v >= 1.0 => format!("${v:.2}"),
        0.0 => "$0".into(),
        v => format!("${v:.4}"),
    }
}

fn quantity(value: f64) -> String {
    match value {
        v if v >= 1e6 => format!("{:.2} M", v / 1e6),
        v if v >= 1e3 => format!("{:.1} k", v / 1e3),
        v if v == v.round() => format!("{v:.0}"),
        v if v < 0.01 => format!("{v:.2e}"),
        v => format!("{v:.2}"),
    }
}

/// `chatctl cost`: the measured or projected estimate, as text or JSON.
pub async fn command(context: &Session, args: &crate::cli::CostArgs) -> Result<u8> {
    let prices = prices::for_region(&context.names.region, &context.settings.prices)?;
    let settings = &context.settings;
    let estimate = match &args.project {
        Some(text) => {
            let shape = model::Shape::parse(text)?;
            let mut notes = vec![format!(
                "assumed: {:.0} µs of CPU per delivery (measured on the Lambda build), a function's share of a vCPU \
                 in proportion to its memory ({} MB), typical durations of the other functions, 12 reconnections a day \
                 (API Gateway's 2-hour cut), the request units of the handlers' DynamoDB calls",
                model::CPU_PER_DELIVERY.as_secs_f64() * 1e6,
                settings.memory_mb
            )];
            let largest = model::largest_room(settings.memory_mb, settings.timeout_seconds);
            if shape.room_size > largest as f64 {
                notes.push(format!(
                    "a room of {} is more than sendmessage reaches in its {} s timeout at {} MB (about {largest}): raise memory or timeout",
                    shape.room_size, settings.timeout_seconds, settings.memory_mb
                ));
            }
            let over = format!(
                "{} users, {} messages per user per hour, rooms of {}, {}-byte messages, {}% direct, {} h a day, a ping every {} min",
                shape.users,
                shape.messages_per_user_per_hour,
                shape.room_size,
                shape.message_bytes,
                shape.direct_percent,
                shape.hours_per_day,
                shape.ping_minutes
            );
            estimate(
                context,
                "projected",
                over,
                shape.usage(settings.memory_mb),
                prices,
                notes,
            )
        }
        None => {
            let since = humantime::parse_duration(&args.since)
                .with_context(|| format!("invalid --since {:?}: use a duration like 1h, 24h or 7d", args.since))?;
            let (usage, over, notes) = measured(context, since).await?;
            estimate(context, "measured", over, usage, prices, notes)
        }
    };
    if context.json {
        crate::output::print_json(&estimate)?;
    } else {
        outln!("{}", text(&estimate))?;
    }
    Ok(0)
}
