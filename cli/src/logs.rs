//! `chatctl logs`: the functions' CloudWatch logs, and the stage's access
//! log, merged by time.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

use anyhow::{Result, bail};
use futures::future::join_all;
use serde::Serialize;

use crate::aws::{Aws, aws_error, is_code};
use crate::stack::{Function, Names};

/// How often `--follow` asks for new events.
pub const FOLLOW_INTERVAL: Duration = Duration::from_secs(2);
/// `--follow` asks again for this much of the past, because CloudWatch may
/// store an event after later ones; event ids keep it from printing twice.
const FOLLOW_LOOKBACK_MS: i64 = 30_000;
/// FilterLogEvents' largest page.
pub const MAX_PAGE_SIZE: i32 = 10_000;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogLine {
    pub function: String,
    pub timestamp: String,
    #[serde(skip)]
    pub timestamp_ms: i64,
    pub message: String,
    pub log_stream: String,
    pub event_id: String,
}

/// Where log lines come from: a function, or the stage's access log.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Source {
    Function(Function),
    Access,
}

/// The name `logs` takes for the stage's access log.
pub const ACCESS: &str = "access";

impl Source {
    /// The name on the command line and in front of each line.
    pub fn name(self) -> &'static str {
        match self {
            Source::Function(function) => function.short_name(),
            Source::Access => ACCESS,
        }
    }

    fn log_group(self, names: &Names) -> String {
        match self {
            Source::Function(function) => names.log_group(function),
            Source::Access => names.access_log_group(),
        }
    }
}

/// The sources named on the command line, by short name (`access` for the
/// stage's access log); every function's when none is named.
pub fn select_sources(names: &[String]) -> Result<Vec<Source>> {
    if names.is_empty() {
        return Ok(Function::ALL.into_iter().map(Source::Function).collect());
    }
    let mut selected = vec![];
    for name in names {
        let source = match Function::from_short_name(name) {
            Some(function) => Source::Function(function),
            None if name == ACCESS => Source::Access,
            None => {
                let valid: Vec<&str> = Function::ALL.iter().map(|f| f.short_name()).collect();
                bail!(
                    "unknown function {name:?}; valid functions: {}; or `{ACCESS}` for the stage's access log",
                    valid.join(", ")
                );
            }
        };
        if !selected.contains(&source) {
            selected.push(source);
        }
    }
    Ok(selected)
}

/// `10m`, `2h` (that long ago) or an RFC 3339 time; epoch milliseconds.
pub fn parse_since(text: &str, now: SystemTime) -> Result<i64> {
    if let Some(at) = chat_core::ids::parse_timestamp(text) {
        return Ok((at.unix_timestamp_nanos() / 1_000_000) as i64);
    }
    match humantime::parse_duration(text) {
        Ok(ago) => Ok(chat_core::ids::epoch_ms(
            now.checked_sub(ago).unwrap_or(SystemTime::UNIX_EPOCH),
        )),
        Err(_) => bail!(
            "invalid --since {text:?}: use a duration like 10m or 2h, or an RFC 3339 time like 2026-11-22T03:00:00Z"
        ),
    }
}

pub struct Query<'a> {
    pub sources: &'a [Source],
    pub start_ms: i64,
    pub filter: Option<&'a str>,
    pub page_size: i32,
}

/// Every event since `start_ms` in the functions' log groups, every page,
/// merged by time. Log groups that do not exist are skipped; if none does,
/// the stack is not deployed.
pub async fn fetch(aws: &Aws, names: &Names, query: &Query<'_>) -> Result<Vec<LogLine>> {
    let pace = &FilterPace::new();
    let reads = query.sources.iter().map(|source| async move {
        let group = source.log_group(names);
        let mut lines = vec![];
        let mut next_token = None;
        loop {
            pace.wait().await;
            let page = aws
                .logs
                .filter_log_events()
                .log_group_name(&group)
                .start_time(query.start_ms)
                .set_filter_pattern(query.filter.map(str::to_string))
                .limit(query.page_size)
                .set_next_token(next_token)
                .send()
                .await;
            let page = match page {
                Err(err) if is_code(&err, &["ResourceNotFoundException"]) => return Ok(None),
                Err(err) => return Err(aws_error(format!("cannot read log group {group}"), err)),
                Ok(page) => page,
            };
            for event in page.events() {
                let timestamp_ms = event.timestamp().unwrap_or(0);
                lines.push(LogLine {
                    function: source.name().to_string(),
                    timestamp: chat_core::ids::format_timestamp_ms(timestamp_ms.max(0) as u64),
                    timestamp_ms,
                    message: event.message().unwrap_or_default().trim_end().to_string(),
                    log_stream: event.log_stream_name().unwrap_or_default().to_string(),
                    event_id: event.event_id().unwrap_or_default().to_string(),
                });
            }
            match page.next_token {
                Some(token) if !token.is_empty() => next_token = Some(token),
                _ => return Ok::<_, anyhow::Error>(Some(lines)),
            }
        }
    });
    let mut found_any = false;
    let mut merged = vec![];
    for result in join_all(reads).await {
        if let Some(lines) = result? {
            found_any = true;
            merged.extend(lines);
        }
    }
    if !found_any && query.sources == [Source::Access] {
        bail!(
            "stack {} has no access log ({} does not exist): set access_logs = true in [stage_settings] and run `chatctl up`",
            names.stack,
            names.access_log_group()
        );
    }
    if !found_any {
        bail!(
            "no log group of stack {} exists (looked for /aws/lambda/{}-*); run `chatctl up` first",
            names.stack,
            names.stack
        );
    }
    // Stable: within a millisecond, each group's own order is kept.
    merged.sort_by_key(|line| line.timestamp_ms);
    Ok(merged)
}

/// FilterLogEvents is limited to 5 requests/s per account and region
/// (aws-facts.md §10, AWS Knowledge Center); past it AWS answers
/// ThrottlingException. One `fetch` reads many groups and pages, so it
/// spaces its own requests to stay within that, leaving room for others.
pub const FILTER_REQUESTS_PER_SECOND: u32 = 4;

/// Spaces the FilterLogEvents requests of one fetch.
struct FilterPace(tokio::sync::Mutex<tokio::time::Interval>);

impl FilterPace {
    fn new() -> FilterPace {
        let mut interval = tokio::time::interval(Duration::from_secs(1) / FILTER_REQUESTS_PER_SECOND);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        FilterPace(tokio::sync::Mutex::new(interval))
    }

    async fn wait(&self) {
        self.0.lock().await.tick().await;
    }
}

/// Remembers printed events so `--follow` prints each exactly once.
pub struct Follower {
    seen: HashMap<String, i64>,
    since_ms: i64,
    newest_ms: i64,
}

impl Follower {
    pub fn new(since_ms: i64) -> Self {
        Follower {
            seen: HashMap::new(),
            since_ms,
            newest_ms: since_ms,
        }
    }

    /// Where the next poll starts: a lookback before the newest event seen
    /// (or now, when an event claims a future time), never before `--since`.
    pub fn next_start(&self) -> i64 {
        let now = chat_core::ids::epoch_ms(SystemTime::now());
        (self.newest_ms.min(now) - FOLLOW_LOOKBACK_MS).max(self.since_ms)
    }

    /// The lines not printed before; forgets what is older than the lookback.
    pub fn fresh(&mut self, lines: Vec<LogLine>) -> Vec<LogLine> {
        let mut fresh = vec![];
        let mut printed_now = HashSet::new();
        for line in lines {
            let key = format!("{}/{}", line.function, line.event_id);
            if self.seen.contains_key(&key) || !printed_now.insert(key.clone()) {
                continue;
            }
            self.newest_ms = self.newest_ms.max(line.timestamp_ms);
            self.seen.insert(key, line.timestamp_ms);
            fresh.push(line);
        }
        let horizon = self.next_start();
        self.seen.retain(|_, ts| *ts >= horizon);
        fresh
    }
}

/// The function prefix's colour; anstream leaves it out when stdout is not
/// a terminal or NO_COLOR is set.
pub fn colour(function: &str) -> anstyle::Style {
    use anstyle::AnsiColor::{Blue, BrightCyan, Cyan, Green, Magenta, Red, Yellow};
    const PALETTE: [anstyle::AnsiColor; 7] = [Cyan, Green, Yellow, Magenta, Blue, Red, BrightCyan];
    let index = Function::ALL
        .iter()
        .position(|f| f.short_name() == function)
        .unwrap_or(0);
    anstyle::Style::new().fg_color(Some(PALETTE[index % PALETTE.len()].into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(function: &str, id: &str, ts: i64) -> LogLine {
        LogLine {
            function: function.into(),
            timestamp: String::new(),
            timestamp_ms: ts,
            message: id.into(),
            log_stream: "s".into(),
            event_id: id.into(),
        }
    }

    #[test]
    fn sources_are_chosen_by_short_name() {
        assert_eq!(select_sources(&[]).unwrap().len(), 7);
        assert_eq!(
            select_sources(&["sendmessage".into(), "access".into(), "sendmessage".into()]).unwrap(),
            [Source::Function(Function::SendMessage), Source::Access]
        );
        let err = select_sources(&["sendmesage".into()]).unwrap_err().to_string();
        assert!(
            err.contains("\"sendmesage\"") && err.contains("authorizer, connect") && err.contains("access"),
            "{err}"
        );
    }

    #[test]
    fn since_takes_durations_and_times() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(10_000);
        assert_eq!(parse_since("10m", now).unwrap(), (10_000 - 600) * 1000);
        assert_eq!(parse_since("2h", now).unwrap(), (10_000 - 7200) * 1000);
        assert_eq!(parse_since("1970-01-01T00:00:05Z", now).unwrap(), 5000);
        assert_eq!(parse_since("1970-01-01T01:00:05+01:00", now).unwrap(), 5000);
        assert!(parse_since("yesterday", now).is_err());
    }

    #[test]
    fn following_prints_each_event_once_and_catches_late_ones() {
        let mut follower = Follower::new(0);
        assert_eq!(follower.next_start(), 0, "never before --since");
        let first = follower.fresh(vec![line("a", "1", 1000), line("b", "2", 2000)]);
        assert_eq!(first.len(), 2);
        // The next poll overlaps: old events are dropped, a late one is kept.
        let second = follower.fresh(vec![line("a", "1", 1000), line("a", "3", 1500), line("b", "2", 2000)]);
        assert_eq!(second.iter().map(|l| l.event_id.as_str()).collect::<Vec<_>>(), ["3"]);
        assert!(follower.next_start() <= 1500);
    }
}
