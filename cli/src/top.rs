//! `chatctl top`: the live chat at a glance. Open connections come from the
//! connections table's counter items (no Scan); traffic, errors and latency
//! from CloudWatch (GetMetricData on AWS/ApiGateway and AWS/Lambda, see
//! [`crate::metrics`]), which `chatctl dev` fills the same way for the local
//! stack. A metric without data (a new stack, a quiet hour) reads as 0.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Metric, MetricDataQuery, MetricStat};
use serde::Serialize;

use crate::aws::{Aws, failed};
use crate::metrics::*;
use crate::stack::{Function, Names};

/// CloudWatch's finest period for metrics AWS publishes (one a minute).
const MIN_PERIOD_SECONDS: i64 = 60;
/// Points per series: enough for a trend, few enough for one line.
const POINTS: i64 = 60;
/// One-minute data is kept 15 days (CloudWatch User Guide, "Metrics retention").
const MAX_SINCE: Duration = Duration::from_secs(15 * 24 * 3600);
/// GetMetricData takes at most 500 queries per request.
const MAX_QUERIES: usize = 500;

/// The time the metrics cover: `points` periods of `period_seconds`, ending
/// at the end of the current period.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Window {
    pub start: i64,
    pub end: i64,
    pub period_seconds: i64,
}

impl Window {
    /// The window for `--since`, ending now: periods of a whole number of
    /// minutes (CloudWatch wants multiples of 60), at most [`POINTS`] of them.
    pub fn new(since: Duration, now: SystemTime) -> Result<Window> {
        if since < Duration::from_secs(MIN_PERIOD_SECONDS as u64) || since > MAX_SINCE {
            bail!(
                "--since {} is out of range: use 1m to 15d (CloudWatch keeps one-minute data 15 days)",
                humantime::format_duration(since)
            );
        }
        let since = since.as_secs() as i64;
        let minutes = (since + MIN_PERIOD_SECONDS - 1) / MIN_PERIOD_SECONDS;
        let period_seconds = ((minutes + POINTS - 1) / POINTS) * MIN_PERIOD_SECONDS;
        let now = now.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs() as i64;
        let end = (now / period_seconds + 1) * period_seconds;
        let points = (since + period_seconds - 1) / period_seconds;
        Ok(Window {
            start: end - points * period_seconds,
            end,
            period_seconds,
        })
    }

    fn points(&self) -> usize {
        ((self.end - self.start) / self.period_seconds) as usize
    }

    pub fn minutes(&self) -> f64 {
        (self.end - self.start) as f64 / 60.0
    }
}

/// A count over the window: its total, per minute, and per period.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Count {
    pub total: f64,
    pub per_minute: f64,
    pub points: Vec<f64>,
}

/// API Gateway's metrics for the whole stage or one route.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ApiStats {
    pub connects: Count,
    pub messages: Count,
    pub client_errors: Count,
    pub integration_errors: Count,
    pub execution_errors: Count,
    pub latency_p50_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouteStats {
    pub route: String,
    #[serde(flatten)]
    pub stats: ApiStats,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FunctionStats {
    pub function: String,
    pub invocations: Count,
    pub errors: Count,
    pub throttles: Count,
    pub duration_p99_ms: Option<f64>,
}

/// One look at the stack.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Snapshot {
    pub stack: String,
    pub api_id: String,
    pub stage: String,
    pub at: String,
    pub window: Window,
    pub open_connections: i64,
    /// Per-route metrics exist only when the stage has detailed metrics.
    pub detailed_metrics: bool,
    pub total: ApiStats,
    pub routes: Vec<RouteStats>,
    pub functions: Vec<FunctionStats>,
    /// The stack's alarms in ALARM (`[alarms]`), by name.
    pub alarming: Vec<String>,
    /// Why the alarms could not be read, when they could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alarms_error: Option<String>,
}

/// One metric asked of GetMetricData.
pub struct Query {
    pub namespace: &'static str,
    pub name: &'static str,
    pub dimensions: Dimensions,
    pub stat: &'static str,
    /// The whole window as one period (a percentile over the window), or per period.
    pub whole_window: bool,
}

/// Where each answer goes, by query index.
#[derive(Clone, Copy)]
enum Slot {
    Api(Option<usize>, ApiField),
    Function(usize, FunctionField),
}

#[derive(Clone, Copy)]
enum ApiField {
    Connects,
    Messages,
    ClientErrors,
    IntegrationErrors,
    ExecutionErrors,
    LatencyP50,
    LatencyP99,
}

#[derive(Clone, Copy)]
enum FunctionField {
    Invocations,
    Errors,
    Throttles,
    DurationP99,
}

fn api_queries(dimensions: &Dimensions, route: Option<usize>) -> Vec<(Query, Slot)> {
    use ApiField::*;
    let query = |name, stat, whole_window| Query {
        namespace: API_NAMESPACE,
        name,
        dimensions: dimensions.clone(),
        stat,
        whole_window,
    };
    vec![
        (query(CONNECT_COUNT, "Sum", false), Slot::Api(route, Connects)),
        (query(MESSAGE_COUNT, "Sum", false), Slot::Api(route, Messages)),
        (query(CLIENT_ERROR, "Sum", false), Slot::Api(route, ClientErrors)),
        (
            query(INTEGRATION_ERROR, "Sum", false),
            Slot::Api(route, IntegrationErrors),
        ),
        (query(EXECUTION_ERROR, "Sum", false), Slot::Api(route, ExecutionErrors)),
        (query(INTEGRATION_LATENCY, "p50", true), Slot::Api(route, LatencyP50)),
        (query(INTEGRATION_LATENCY, "p99", true), Slot::Api(route, LatencyP99)),
    ]
}

fn function_queries(function: &str, index: usize) -> Vec<(Query, Slot)> {
    use FunctionField::*;
    let query = |name, stat, whole_window| Query {
        namespace: LAMBDA_NAMESPACE,
        name,
        dimensions: function_dimensions(function),
        stat,
        whole_window,
    };
    vec![
        (query(INVOCATIONS, "Sum", false), Slot::Function(index, Invocations)),
        (query(ERRORS, "Sum", false), Slot::Function(index, Errors)),
        (query(THROTTLES, "Sum", false), Slot::Function(index, Throttles)),
        (query(DURATION, "p99", true), Slot::Function(index, DurationP99)),
    ]
}

/// A count from a series' data points (timestamps in epoch seconds); the
/// periods without a point are 0.
fn count(window: &Window, points: &[(i64, f64)]) -> Count {
    let mut values = vec![0.0; window.points()];
    for (at, value) in points {
        let index = (at - window.start).div_euclid(window.period_seconds);
        if let Some(slot) = usize::try_from(index).ok().and_then(|i| values.get_mut(i)) {
            *slot += value;
        }
    }
    let total: f64 = values.iter().sum();
    Count {
        total,
        per_minute: total / window.minutes(),
        points: values,
    }
}

/// What the stack's API is, for `top`.
struct Target {
    api_id: String,
    routes: Vec<String>,
    detailed_metrics: bool,
}

async fn target(aws: &Aws, names: &Names) -> Result<Target> {
    let api = crate::stack::api::deployed_api(aws, names).await?;
    let mut routes: Vec<String> = api.routes.iter().map(|r| r.key.clone()).collect();
    routes.sort();
    Ok(Target {
        api_id: api.id,
        routes,
        detailed_metrics: api.stage.as_ref().is_some_and(|s| s.detailed_metrics()),
    })
}

/// How often `top` asks CloudWatch again on AWS: API Gateway and Lambda
/// publish these metrics once a minute, and GetMetricData is billed per
/// metric asked for (CloudWatch pricing), so asking more often costs
/// without showing anything new. The open connections are read every refresh.
pub const METRICS_REFRESH: Duration = Duration::from_secs(60);

/// The data points (epoch seconds, value) of each query, by index.
pub type Answers = HashMap<usize, Vec<(i64, f64)>>;

/// Reads snapshots of the stack: the API once, CloudWatch at most every
/// `metrics_every`, the open connections every time.
pub struct Watcher<'a> {
    aws: &'a Aws,
    names: &'a Names,
    since: Duration,
    metrics_every: Duration,
    target: Option<Target>,
    metrics: Option<(std::time::Instant, Window, Answers)>,
}

impl<'a> Watcher<'a> {
    pub fn new(aws: &'a Aws, names: &'a Names, since: Duration, metrics_every: Duration) -> Watcher<'a> {
        Watcher {
            aws,
            names,
            since,
            metrics_every,
            target: None,
            metrics: None,
        }
    }

    pub async fn snapshot(&mut self) -> Result<Snapshot> {
        let (aws, names) = (self.aws, self.names);
        let target = match self.target.take() {
            Some(target) => target,
            None => target(aws, names).await?,
        };
        let queries = queries(names, &target);
        let now = SystemTime::now();
        let store = chat_core::store::ConnectionStore::for_operator(aws.dynamodb.clone(), names.connections_table());
        let stale = self
            .metrics
            .as_ref()
            .is_none_or(|(at, _, _)| at.elapsed() >= self.metrics_every);
        let fetch = async {
            if !stale {
                return Ok(None);
            }
            let window = Window::new(self.since, now)?;
            Ok::<_, anyhow::Error>(Some((window, metric_data(aws, &window, &queries).await?)))
        };
        let (fetched, open, alarms) = tokio::join!(fetch, store.open_count(), alarming(aws, names));
        if let Some((window, answers)) = fetched? {
            self.metrics = Some((std::time::Instant::now(), window, answers));
        }
        let open =
            open.with_context(|| format!("cannot read the open connections of {}", names.connections_table()))?;
        let Some((_, window, answers)) = &self.metrics else {
            bail!("no metrics read yet");
        };
        let mut snapshot = assemble(names, &target, &queries, window, answers, open, now);
        match alarms {
            Ok(alarming) => snapshot.alarming = alarming,
            Err(err) => snapshot.alarms_error = Some(format!("{err:#}")),
        }
        self.target = Some(target);
        Ok(snapshot)
    }
}

/// The stack's alarms in ALARM now.
async fn alarming(aws: &Aws, names: &Names) -> Result<Vec<String>> {
    let wanted = crate::stack::alarms::KINDS.iter().map(|kind| names.alarm(kind));
    let described = aws
        .cloudwatch
        .describe_alarms()
        .set_alarm_names(Some(wanted.collect()))
        .state_value(aws_sdk_cloudwatch::types::StateValue::Alarm)
        .send()
        .await
        .map_err(failed("cannot read the stack's alarms"))?;
    // Checked here too: the emulator lists every named alarm, whatever its state.
    Ok(described
        .metric_alarms()
        .iter()
        .filter(|a| a.state_value() == Some(&aws_sdk_cloudwatch::types::StateValue::Alarm))
        .filter_map(|a| a.alarm_name().map(str::to_string))
        .collect())
}

/// What to ask CloudWatch for the stack: the stage's metrics, each route's
/// (with detailed metrics), each function's.
fn queries(names: &Names, target: &Target) -> Vec<(Query, Slot)> {
    let mut queries = api_queries(&stage_dimensions(&target.api_id, &names.stage), None);
    if target.detailed_metrics {
        for (index, route) in target.routes.iter().enumerate() {
            let dimensions = route_dimensions(&target.api_id, &names.stage, route);
            queries.extend(api_queries(&dimensions, Some(index)));
        }
    }
    for (index, function) in Function::ALL.iter().enumerate() {
        queries.extend(function_queries(&names.function(*function), index));
    }
    queries
}

/// The snapshot the answers make.
fn assemble(
    names: &Names,
    target: &Target,
    queries: &[(Query, Slot)],
    window: &Window,
    answers: &Answers,
    open: i64,
    now: SystemTime,
) -> Snapshot {
    let mut total = ApiStats::default();
    let mut routes: Vec<RouteStats> = target
        .routes
        .iter()
        .map(|route| RouteStats {
            route: route.clone(),
            stats: ApiStats::default(),
        })
        .collect();
    let mut function_stats: Vec<FunctionStats> = Function::ALL
        .iter()
        .map(|function| FunctionStats {
            function: names.function(*function),
            invocations: Count::default(),
            errors: Count::default(),
            throttles: Count::default(),
            duration_p99_ms: None,
        })
        .collect();
    for (index, (_, slot)) in queries.iter().enumerate() {
        let points = answers.get(&index).map(Vec::as_slice).unwrap_or_default();
        let counted = count(window, points);
        let single = points.first().map(|(_, value)| *value);
        match *slot {
            Slot::Api(route, field) => {
                let stats = match route {
                    None => &mut total,
                    Some(route) => &mut routes[route].stats,
                };
                match field {
                    ApiField::Connects => stats.connects = counted,
                    ApiField::Messages => stats.messages = counted,
                    ApiField::ClientErrors => stats.client_errors = counted,
                    ApiField::IntegrationErrors => stats.integration_errors = counted,
                    ApiField::ExecutionErrors => stats.execution_errors = counted,
                    ApiField::LatencyP50 => stats.latency_p50_ms = single,
                    ApiField::LatencyP99 => stats.latency_p99_ms = single,
                }
            }
            Slot::Function(function, field) => {
                let stats = &mut function_stats[function];
                match field {
                    FunctionField::Invocations => stats.invocations = counted,
                    FunctionField::Errors => stats.errors = counted,
                    FunctionField::Throttles => stats.throttles = counted,
                    FunctionField::DurationP99 => stats.duration_p99_ms = single,
                }
            }
        }
    }
    if !target.detailed_metrics {
        routes.clear();
    }
    Snapshot {
        stack: names.stack.clone(),
        api_id: target.api_id.clone(),
        stage: names.stage.clone(),
        at: chat_core::ids::format_timestamp_ms(chat_core::ids::epoch_ms(now).max(0) as u64),
        window: *window,
        open_connections: open,
        detailed_metrics: target.detailed_metrics,
        total,
        routes,
        functions: function_stats,
        alarming: vec![],
        alarms_error: None,
    }
}

/// Asks GetMetricData for every query, every page; the data points
/// (epoch seconds, value) by query index.
pub async fn metric_data<T>(aws: &Aws, window: &Window, queries: &[(Query, T)]) -> Result<Answers> {
    let mut answers = Answers::new();
    for (chunk_index, chunk) in queries.chunks(MAX_QUERIES).enumerate() {
        let first = chunk_index * MAX_QUERIES;
        let data_queries = chunk.iter().enumerate().map(|(i, (query, _))| {
            let metric = Metric::builder()
                .namespace(query.namespace)
                .metric_name(query.name)
                .set_dimensions(Some(sdk_dimensions(&query.dimensions)))
                .build();
            let period = match query.whole_window {
                true => window.end - window.start,
                false => window.period_seconds,
            };
            MetricDataQuery::builder()
                .id(format!("q{}", first + i))
                .metric_stat(
                    MetricStat::builder()
                        .metric(metric)
                        .period(period as i32)
                        .stat(query.stat)
                        .build(),
                )
                .build()
        });
        // GetMetricData pages its answer (CloudWatch API reference, NextToken).
        let mut pages = aws
            .cloudwatch
            .get_metric_data()
            .start_time(DateTime::from_secs(window.start))
            .end_time(DateTime::from_secs(window.end))
            .set_metric_data_queries(Some(data_queries.collect()))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(failed("cannot read the stack's CloudWatch metrics (GetMetricData)"))?;
            for result in page.metric_data_results() {
                let Some(index) = result.id().and_then(|id| id.strip_prefix('q')?.parse::<usize>().ok()) else {
                    continue;
                };
                let points = result
                    .timestamps()
                    .iter()
                    .map(|t| t.secs())
                    .zip(result.values().iter().copied());
                answers.entry(index).or_default().extend(points);
            }
        }
    }
    Ok(answers)
}

/// `▁▂▃▄▅▆▇█` for `points`, summed into at most `width` columns.
pub fn sparkline(points: &[f64], width: usize) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    if points.is_empty() || width == 0 {
        return String::new();
    }
    let per_column = points.len().div_ceil(width);
    let columns: Vec<f64> = points.chunks(per_column).map(|c| c.iter().sum()).collect();
    let max = columns.iter().copied().fold(0.0, f64::max);
    columns
        .iter()
        .map(|value| match max > 0.0 {
            true => BARS[((value / max) * 7.0).round() as usize],
            false => BARS[0],
        })
        .collect()
}

fn number(value: f64) -> String {
    match value.fract() == 0.0 {
        true => format!("{value:.0}"),
        false => format!("{value:.1}"),
    }
}

fn millis(value: Option<f64>) -> String {
    value.map(|ms| format!("{ms:.0} ms")).unwrap_or_else(|| "-".into())
}

/// A table: its header and rows of cells, drawn as text or in the live view.
pub struct Grid {
    pub header: Vec<&'static str>,
    pub rows: Vec<Vec<String>>,
}

const TREND_WIDTH: usize = 30;

/// The stage's counts: total, per minute and trend.
pub fn stage_grid(snapshot: &Snapshot) -> Grid {
    let stats = &snapshot.total;
    let row = |name: &str, count: &Count| {
        vec![
            name.to_string(),
            number(count.total),
            format!("{:.1}", count.per_minute),
            sparkline(&count.points, TREND_WIDTH),
        ]
    };
    Grid {
        header: vec!["stage", "total", "/min", "trend"],
        rows: vec![
            row("connects", &stats.connects),
            row("messages", &stats.messages),
            row("client errors", &stats.client_errors),
            row("integration errors", &stats.integration_errors),
            row("execution errors", &stats.execution_errors),
        ],
    }
}

pub fn routes_grid(snapshot: &Snapshot) -> Grid {
    let rows = snapshot
        .routes
        .iter()
        .map(|route| {
            let stats = &route.stats;
            let calls = match route.route.as_str() {
                "$connect" => &stats.connects,
                _ => &stats.messages,
            };
            vec![
                route.route.clone(),
                number(calls.total),
                number(stats.client_errors.total),
                number(stats.integration_errors.total),
                number(stats.execution_errors.total),
                millis(stats.latency_p99_ms),
                sparkline(&calls.points, TREND_WIDTH),
            ]
        })
        .collect();
    Grid {
        header: vec![
            "route",
            "requests",
            "client err",
            "integration err",
            "execution err",
            "p99",
            "trend",
        ],
        rows,
    }
}

pub fn functions_grid(snapshot: &Snapshot) -> Grid {
    let rows = snapshot
        .functions
        .iter()
        .map(|function| {
            vec![
                function.function.clone(),
                number(function.invocations.total),
                number(function.errors.total),
                number(function.throttles.total),
                millis(function.duration_p99_ms),
                sparkline(&function.invocations.points, TREND_WIDTH),
            ]
        })
        .collect();
    Grid {
        header: vec!["function", "invocations", "errors", "throttles", "p99", "trend"],
        rows,
    }
}

/// The header lines: what is shown and the numbers that need no table.
pub fn summary(snapshot: &Snapshot) -> Vec<String> {
    let window = &snapshot.window;
    let mut lines = vec![
        format!(
            "stack {}  api {}  stage {}  at {}",
            snapshot.stack, snapshot.api_id, snapshot.stage, snapshot.at
        ),
        format!(
            "window {} in {}-minute points",
            humantime::format_duration(Duration::from_secs((window.end - window.start) as u64)),
            window.period_seconds / 60
        ),
        format!(
            "open connections {}   integration latency p50 {}  p99 {}",
            snapshot.open_connections,
            millis(snapshot.total.latency_p50_ms),
            millis(snapshot.total.latency_p99_ms)
        ),
    ];
    if !snapshot.alarming.is_empty() {
        lines.push(format!("ALARM: {}", snapshot.alarming.join(", ")));
    }
    if let Some(why) = &snapshot.alarms_error {
        lines.push(format!("alarms: unknown ({why})"));
    }
    if !snapshot.detailed_metrics {
        lines.push("per-route metrics: set detailed_metrics = true in [stage_settings]".into());
    }
    lines
}

fn comfy(grid: &Grid) -> comfy_table::Table {
    let mut table = comfy_table::Table::new();
    table.load_style(comfy_table::presets::NOTHING);
    table.set_header(grid.header.clone());
    for row in &grid.rows {
        table.add_row(row.clone());
    }
    table
}

/// The snapshot as plain text, for a pipe or `--once`.
pub fn text(snapshot: &Snapshot) -> String {
    let mut out = summary(snapshot).join("\n");
    for grid in [stage_grid(snapshot), routes_grid(snapshot), functions_grid(snapshot)] {
        if !grid.rows.is_empty() {
            out.push_str(&format!("\n\n{}", comfy(&grid)));
        }
    }
    out
}

/// The live view on a terminal until `q`, Esc or Ctrl-C, which also end a
/// read under way. A read that fails after the first keeps the last
/// snapshot on screen, says why, and is tried again at the next refresh.
pub async fn live(watcher: &mut Watcher<'_>, interval: Duration) -> Result<()> {
    use ratatui::crossterm::event::{self, Event, KeyCode, KeyModifiers};

    // The first read outside the view: an error then (no stack, no
    // credentials) reads best on a normal terminal.
    let mut shown = watcher.snapshot().await?;
    let (quit_sender, mut quit) = tokio::sync::mpsc::unbounded_channel();
    // crossterm reads keys blocking: a thread of its own, ended with the process.
    std::thread::spawn(move || {
        while let Ok(event) = event::read() {
            if let Event::Key(key) = event {
                let ctrl_c = key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL);
                if ctrl_c || matches!(key.code, KeyCode::Char('q') | KeyCode::Esc) {
                    let _ = quit_sender.send(());
                    return;
                }
            }
        }
    });
    let mut terminal = ratatui::init();
    let mut problem: Option<String> = None;
    let result = async {
        loop {
            terminal.draw(|frame| draw(frame, &shown, problem.as_deref()))?;
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = quit.recv() => return Ok(()),
            }
            tokio::select! {
                read = watcher.snapshot() => match read {
                    Ok(snapshot) => (shown, problem) = (snapshot, None),
                    Err(error) => problem = Some(format!("{error:#}")),
                },
                _ = quit.recv() => return Ok(()),
            }
        }
    }
    .await;
    ratatui::restore();
    result
}

fn draw(frame: &mut ratatui::Frame, snapshot: &Snapshot, problem: Option<&str>) {
    use ratatui::layout::{Constraint, Layout};
    use ratatui::style::{Modifier, Style};
    use ratatui::text::Line;
    use ratatui::widgets::{Block, Paragraph, Row, Sparkline, Table};

    let table = |grid: Grid, title: &'static str| {
        let widths: Vec<Constraint> = grid
            .header
            .iter()
            .enumerate()
            .map(|(column, header)| {
                let widest = grid.rows.iter().map(|r| r[column].chars().count()).max().unwrap_or(0);
                Constraint::Length(widest.max(header.len()) as u16 + 1)
            })
            .collect();
        let height = grid.rows.len() as u16 + 3;
        let rows = grid.rows.into_iter().map(Row::new);
        let header = Row::new(grid.header).style(Style::default().add_modifier(Modifier::BOLD));
        (
            Table::new(rows, widths)
                .header(header)
                .block(Block::bordered().title(title)),
            height,
        )
    };
    let mut summary: Vec<Line> = summary(snapshot).into_iter().map(Line::from).collect();
    if let Some(problem) = problem {
        let warning = Style::default().add_modifier(Modifier::BOLD);
        summary.push(Line::styled(
            format!("last refresh failed, showing the one before: {problem}"),
            warning,
        ));
    }
    let (stage, stage_height) = table(stage_grid(snapshot), " stage ");
    let (routes, routes_height) = table(routes_grid(snapshot), " routes ");
    let (functions, functions_height) = table(functions_grid(snapshot), " functions ");
    let [top, charts, stage_area, routes_area, functions_area, _] = Layout::vertical([
        Constraint::Length(summary.len() as u16 + 2),
        Constraint::Length(6),
        Constraint::Length(stage_height),
        Constraint::Length(if snapshot.routes.is_empty() { 0 } else { routes_height }),
        Constraint::Length(functions_height),
        Constraint::Min(0),
    ])
    .areas(frame.area());
    frame.render_widget(
        Paragraph::new(summary).block(Block::bordered().title(" chatctl top (q quits) ")),
        top,
    );
    let [messages_area, connects_area] = Layout::horizontal([Constraint::Fill(1), Constraint::Fill(1)]).areas(charts);
    let bars = |count: &Count| {
        count
            .points
            .iter()
            .map(|v| v.max(0.0).round() as u64)
            .collect::<Vec<u64>>()
    };
    let period = snapshot.window.period_seconds / 60;
    let messages = bars(&snapshot.total.messages);
    let connects = bars(&snapshot.total.connects);
    frame.render_widget(
        Sparkline::default()
            .block(Block::bordered().title(format!(" messages per {period} min ")))
            .data(&messages),
        messages_area,
    );
    frame.render_widget(
        Sparkline::default()
            .block(Block::bordered().title(format!(" connects per {period} min ")))
            .data(&connects),
        connects_area,
    );
    frame.render_widget(stage, stage_area);
    if !snapshot.routes.is_empty() {
        frame.render_widget(routes, routes_area);
    }
    frame.render_widget(functions, functions_area);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn the_window_has_whole_minute_periods_and_at_most_sixty_points() {
        let hour = Window::new(Duration::from_secs(3600), at(1_000_030)).unwrap();
        assert_eq!(hour.period_seconds, 60);
        assert_eq!(hour.end, 1_000_080, "ends at the end of the current minute");
        assert_eq!(hour.points(), 60);
        let day = Window::new(Duration::from_secs(86_400), at(1_000_030)).unwrap();
        assert_eq!(day.period_seconds, 1440);
        assert_eq!(day.points(), 60);
        let odd = Window::new(Duration::from_secs(150), at(1_000_030)).unwrap();
        assert_eq!((odd.period_seconds, odd.points()), (60, 3));
        for bad in [Duration::from_secs(30), Duration::from_secs(16 * 86_400)] {
            let error = Window::new(bad, at(1_000_030)).unwrap_err().to_string();
            assert!(error.contains("use 1m to 15d"), "{error}");
        }
    }

    #[test]
    fn counts_fill_missing_periods_with_zero() {
        let window = Window {
            start: 600,
            end: 900,
            period_seconds: 60,
        };
        let count = count(&window, &[(600, 2.0), (780, 4.0), (900, 9.0), (540, 9.0)]);
        assert_eq!(count.points, vec![2.0, 0.0, 0.0, 4.0, 0.0]);
        assert_eq!(count.total, 6.0);
        assert_eq!(count.per_minute, 1.2);
        assert_eq!(super::count(&window, &[]).points, vec![0.0; 5]);
    }

    fn busy_snapshot() -> Snapshot {
        let window = Window {
            start: 0,
            end: 600,
            period_seconds: 60,
        };
        let counted = |points: &[(i64, f64)]| count(&window, points);
        let stats = ApiStats {
            connects: counted(&[(0, 3.0), (540, 1.0)]),
            messages: counted(&[(0, 10.0), (300, 40.0), (540, 25.0)]),
            client_errors: counted(&[(300, 2.0)]),
            latency_p50_ms: Some(12.0),
            latency_p99_ms: Some(48.0),
            ..ApiStats::default()
        };
        Snapshot {
            stack: "chat".into(),
            api_id: "a1b2c3".into(),
            stage: "dev".into(),
            at: "2026-12-01T21:50:00Z".into(),
            window,
            open_connections: 4,
            detailed_metrics: true,
            total: stats.clone(),
            routes: vec![RouteStats {
                route: "sendmessage".into(),
                stats,
            }],
            functions: vec![FunctionStats {
                function: "chat-sendmessage".into(),
                invocations: counted(&[(300, 38.0)]),
                errors: Count::default(),
                throttles: Count::default(),
                duration_p99_ms: Some(41.0),
            }],
            alarming: vec!["chat-function-errors".into()],
            alarms_error: None,
        }
    }

    #[test]
    fn the_live_view_draws_the_numbers_charts_and_tables() {
        let backend = ratatui::backend::TestBackend::new(110, 40);
        let mut terminal = ratatui::Terminal::new(backend).unwrap();
        let snapshot = busy_snapshot();
        terminal.draw(|frame| draw(frame, &snapshot, None)).unwrap();
        let screen: String = terminal
            .backend()
            .buffer()
            .content()
            .chunks(110)
            .map(|row| row.iter().map(|cell| cell.symbol()).collect::<String>() + "\n")
            .collect();
        for expected in [
            "chatctl top (q quits)",
            "open connections 4",
            "p50 12 ms  p99 48 ms",
            "messages per 1 min",
            "sendmessage",
            "chat-sendmessage",
            "41 ms",
            "client errors",
        ] {
            assert!(screen.contains(expected), "{expected:?} missing from:\n{screen}");
        }
        assert!(screen.contains('█'), "the charts draw bars:\n{screen}");
        if std::env::var_os("CHATCTL_PRINT_TOP").is_some() {
            println!("{screen}");
        }
    }

    #[test]
    fn the_text_view_has_every_table_and_says_when_routes_are_missing() {
        let mut snapshot = busy_snapshot();
        let text = text(&snapshot);
        assert!(
            text.contains("messages") && text.contains("75") && text.contains("7.5"),
            "{text}"
        );
        assert!(text.contains("sendmessage") && text.contains("48 ms"), "{text}");
        assert!(text.contains("ALARM: chat-function-errors"), "{text}");
        snapshot.alarming.clear();
        snapshot.alarms_error = Some("AccessDenied".into());
        assert!(super::text(&snapshot).contains("alarms: unknown (AccessDenied)"));
        snapshot.alarms_error = None;
        assert!(
            !super::text(&snapshot).contains("ALARM"),
            "no line when none is in ALARM"
        );
        snapshot.detailed_metrics = false;
        snapshot.routes.clear();
        let text = super::text(&snapshot);
        assert!(text.contains("set detailed_metrics = true"), "{text}");
    }

    #[test]
    fn sparklines_scale_to_the_largest_column_and_fit_the_width() {
        assert_eq!(sparkline(&[0.0, 1.0, 2.0, 4.0], 10), "▁▃▅█");
        assert_eq!(sparkline(&[0.0; 4], 10), "▁▁▁▁");
        assert_eq!(sparkline(&[1.0; 60], 30).chars().count(), 30);
        assert_eq!(sparkline(&[], 30), "");
    }
}
