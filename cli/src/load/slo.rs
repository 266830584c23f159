//! `--slo 'p99<500ms,lost=0'`: what a load run must meet, clause by clause.

use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use serde::Serialize;

use super::tally::Figures;

/// The figures a clause may name: latencies take a duration, the rest a number.
const LATENCIES: [&str; 8] = [
    "p50",
    "p95",
    "p99",
    "max",
    "handshake_p50",
    "handshake_p95",
    "handshake_p99",
    "handshake_max",
];
const COUNTS: [&str; 7] = [
    "lost",
    "duplicated",
    "out_of_order",
    "refused",
    "errors",
    "failed_connections",
    "delivered_per_second",
];

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum Op {
    #[serde(rename = "<")]
    Less,
    #[serde(rename = "<=")]
    AtMost,
    #[serde(rename = "=")]
    Equal,
    #[serde(rename = ">=")]
    AtLeast,
    #[serde(rename = ">")]
    More,
}

impl Op {
    fn holds(self, value: f64, bound: f64) -> bool {
        match self {
            Op::Less => value < bound,
            Op::AtMost => value <= bound,
            Op::Equal => value == bound,
            Op::AtLeast => value >= bound,
            Op::More => value > bound,
        }
    }
}

/// One clause: `p99<500ms` is (p99, Less, 500 ms).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Clause {
    pub text: String,
    pub figure: String,
    pub op: Op,
    /// Milliseconds for a latency, the number otherwise.
    pub bound: f64,
}

/// A clause and what the run measured for it.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub clause: String,
    pub measured: f64,
    pub met: bool,
}

pub fn parse(text: &str) -> Result<Vec<Clause>> {
    let clauses: Vec<Clause> = text
        .split(',')
        .map(str::trim)
        .filter(|clause| !clause.is_empty())
        .map(parse_clause)
        .collect::<Result<_>>()?;
    if clauses.is_empty() {
        bail!("invalid --slo {text:?}: give clauses like 'p99<500ms,lost=0'");
    }
    Ok(clauses)
}

fn parse_clause(text: &str) -> Result<Clause> {
    let at = text
        .find(['<', '>', '='])
        .ok_or_else(|| anyhow!("invalid --slo clause {text:?}: expected FIGURE<VALUE, <=, =, >= or >"))?;
    let (figure, rest) = text.split_at(at);
    let (op, value) = [
        ("<=", Op::AtMost),
        (">=", Op::AtLeast),
        ("<", Op::Less),
        (">", Op::More),
        ("=", Op::Equal),
    ]
    .into_iter()
    .find_map(|(symbol, op)| rest.strip_prefix(symbol).map(|value| (op, value.trim())))
    .expect("the clause has one of the operators");
    let figure = figure.trim().to_ascii_lowercase();
    let bound = if LATENCIES.contains(&figure.as_str()) {
        let duration: Duration = humantime::parse_duration(value)
            .map_err(|_| anyhow!("invalid --slo clause {text:?}: {figure} takes a duration like 500ms or 2s"))?;
        duration.as_secs_f64() * 1000.0
    } else if COUNTS.contains(&figure.as_str()) {
        value
            .parse::<f64>()
            .ok()
            .filter(|n| n.is_finite() && *n >= 0.0)
            .ok_or_else(|| anyhow!("invalid --slo clause {text:?}: {figure} takes a number"))?
    } else {
        bail!(
            "invalid --slo clause {text:?}: unknown figure {figure:?}; use one of {}, {}",
            LATENCIES.join(", "),
            COUNTS.join(", ")
        );
    };
    Ok(Clause {
        text: text.to_string(),
        figure,
        op,
        bound,
    })
}

/// The figure a clause names, as measured.
fn measured(figure: &str, figures: &Figures) -> f64 {
    let (latency, handshake, messages) = (&figures.latency, &figures.connections.handshake, &figures.messages);
    match figure {
        "p50" => latency.p50_ms,
        "p95" => latency.p95_ms,
        "p99" => latency.p99_ms,
        "max" => latency.max_ms,
        "handshake_p50" => handshake.p50_ms,
        "handshake_p95" => handshake.p95_ms,
        "handshake_p99" => handshake.p99_ms,
        "handshake_max" => handshake.max_ms,
        "lost" => messages.lost as f64,
        "duplicated" => messages.duplicated as f64,
        "out_of_order" => messages.out_of_order as f64,
        "refused" => messages.refused as f64,
        "errors" => figures.errors.values().sum::<u64>() as f64,
        "failed_connections" => figures.connections.failed as f64,
        "delivered_per_second" => messages.delivered_per_second,
        other => unreachable!("parse admits only known figures, not {other}"),
    }
}

pub fn judge(clauses: &[Clause], figures: &Figures) -> Vec<Verdict> {
    clauses
        .iter()
        .map(|clause| {
            let value = measured(&clause.figure, figures);
            Verdict {
                clause: clause.text.clone(),
                measured: value,
                met: clause.op.holds(value, clause.bound),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::tally::{Connection, Tally, Target};

    #[test]
    fn clauses_read_latencies_as_durations_and_counts_as_numbers() {
        let clauses = parse("p99<500ms, lost=0,handshake_max<=2s,delivered_per_second>=10").unwrap();
        let summary: Vec<(&str, Op, f64)> = clauses.iter().map(|c| (c.figure.as_str(), c.op, c.bound)).collect();
        assert_eq!(
            summary,
            [
                ("p99", Op::Less, 500.0),
                ("lost", Op::Equal, 0.0),
                ("handshake_max", Op::AtMost, 2000.0),
                ("delivered_per_second", Op::AtLeast, 10.0),
            ]
        );
    }

    #[test]
    fn bad_clauses_say_what_is_wrong() {
        for (text, expected) in [
            ("", "give clauses like"),
            ("p99", "expected FIGURE<VALUE"),
            ("p99<fast", "takes a duration"),
            ("lost=none", "takes a number"),
            ("lost=-1", "takes a number"),
            ("latency<1s", "unknown figure \"latency\"; use one of p50"),
        ] {
            let error = parse(text).unwrap_err().to_string();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }

    #[test]
    fn a_run_meets_or_misses_each_clause() {
        let mut tally = Tally::new(vec![Connection {
            user: 0,
            room: 0,
            opened_us: None,
            lost_us: None,
        }]);
        tally.opened(0, 5_000, 0);
        tally.sent(0, 0, Target::Room(0), 10);
        tally.delivered(0, 0, 0, 10, 20_010);
        tally.sent(0, 1, Target::Room(0), 20);
        let figures = tally.summary(1_000_000);
        let verdicts = judge(&parse("p99<500ms,lost=0,handshake_p50<1ms").unwrap(), &figures);
        let met: Vec<(&str, bool)> = verdicts.iter().map(|v| (v.clause.as_str(), v.met)).collect();
        assert_eq!(
            met,
            [("p99<500ms", true), ("lost=0", false), ("handshake_p50<1ms", false)]
        );
        assert_eq!(verdicts[1].measured, 1.0);
    }
}
