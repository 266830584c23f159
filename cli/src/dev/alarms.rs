//! `chatctl dev` evaluates the stack's alarm rules (`[alarms]`, the same
//! specs `up` puts in CloudWatch) against the metrics it records, prints a
//! line when an alarm goes into ALARM or back to OK, and sets the
//! emulator's alarm to match, so that `status` and `top` on the local stack
//! show it as they would on AWS.
//!
//! As CloudWatch: an alarm is in ALARM when each of its last
//! `evaluation_periods` periods breaches (its metric math at or above the
//! threshold), missing data does not breach (the alarms' TreatMissingData
//! is notBreaching). Unlike CloudWatch, periods end now rather than on the
//! minute, so a rule fires as soon as its threshold is reached.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use aws_sdk_cloudwatch::types::StateValue;

use crate::metrics::Series;
use crate::stack::desired::{API_ID, AlarmSpec};

/// A rule as dev evaluates it: the spec, and its metrics as series.
struct Rule {
    spec: AlarmSpec,
    metrics: Vec<(Series, String)>,
}

/// An alarm whose state changed.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub alarm: String,
    pub alarming: bool,
    /// What the rule saw, for the line printed and the state's reason.
    pub reason: String,
}

/// The recent values of the metrics the rules read, and each alarm's state.
pub struct AlarmWatch {
    rules: Vec<Rule>,
    /// Each publish's values of the watched series: counts as their sum,
    /// times as their values (for percentiles).
    history: VecDeque<(Instant, HashMap<Series, Vec<f64>>)>,
    alarming: HashMap<String, bool>,
}

impl AlarmWatch {
    pub fn new(specs: &[AlarmSpec], api_id: &str) -> AlarmWatch {
        let rules = specs
            .iter()
            .map(|spec| Rule {
                spec: spec.clone(),
                metrics: spec
                    .metrics
                    .iter()
                    .map(|metric| {
                        let dimensions = metric.dimensions.iter().map(|(name, value)| {
                            let value = if value == API_ID { api_id } else { value };
                            (name.clone(), value.to_string())
                        });
                        (
                            Series::new(&metric.namespace, &metric.name, dimensions),
                            metric.stat.clone(),
                        )
                    })
                    .collect(),
            })
            .collect();
        AlarmWatch {
            rules,
            history: VecDeque::new(),
            alarming: HashMap::new(),
        }
    }

    /// The longest stretch of history a rule reads.
    fn kept_for(&self) -> Duration {
        self.rules
            .iter()
            .map(|rule| period(&rule.spec) * rule.spec.evaluation_periods.max(1) as u32)
            .max()
            .unwrap_or_default()
    }

    /// Keeps what was recorded at `now` of the series some rule reads.
    pub fn observe(&mut self, now: Instant, recorded: &HashMap<Series, Vec<f64>>) {
        let watched: HashMap<Series, Vec<f64>> = recorded
            .iter()
            .filter_map(|(recorded, values)| {
                let mut watched = self.rules.iter().flat_map(|r| &r.metrics).map(|(s, _)| s);
                watched.find(|s| s.same_metric(recorded)).map(|series| (series, values))
            })
            .map(|(series, values)| {
                let kept = if crate::metrics::unit_of(&series.name) == aws_sdk_cloudwatch::types::StandardUnit::Count {
                    vec![values.iter().sum()]
                } else {
                    values.clone()
                };
                (series.clone(), kept)
            })
            .collect();
        if !watched.is_empty() {
            self.history.push_back((now, watched));
        }
        let kept_for = self.kept_for();
        while self
            .history
            .front()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) > kept_for)
        {
            self.history.pop_front();
        }
    }

    /// Evaluates every rule at `now`; returns the alarms whose state changed.
    /// An alarm starts OK: only going into ALARM, and back, is a change.
    pub fn evaluate(&mut self, now: Instant) -> Vec<Change> {
        let mut changes = vec![];
        for rule in &self.rules {
            let spec = &rule.spec;
            let periods: Vec<Option<f64>> = (0..spec.evaluation_periods.max(1) as u32)
                .map(|k| {
                    let end = now.checked_sub(period(spec) * k);
                    let start = now.checked_sub(period(spec) * (k + 1));
                    self.value(rule, start, end)
                })
                .collect();
            let alarming = periods.iter().all(|value| value.is_some_and(|v| v >= spec.threshold));
            let was = self.alarming.get(&spec.name).copied().unwrap_or(false);
            if alarming != was {
                let latest = periods[0].map_or("no data".to_string(), |v| format!("{}", round(v)));
                let minutes = spec.period_seconds / 60;
                changes.push(Change {
                    alarm: spec.name.clone(),
                    alarming,
                    reason: format!(
                        "{}; {latest} in the last {minutes} min (threshold {}, {} period(s))",
                        spec.description, spec.threshold, spec.evaluation_periods
                    ),
                });
            }
        }
        for change in &changes {
            self.alarming.insert(change.alarm.clone(), change.alarming);
        }
        changes
    }

    /// The rule's metric math over (start, end]: None when no metric has data.
    fn value(&self, rule: &Rule, start: Option<Instant>, end: Option<Instant>) -> Option<f64> {
        let end = end?;
        let values: Vec<f64> = rule
            .metrics
            .iter()
            .filter_map(|(series, stat)| {
                let values: Vec<f64> = self
                    .history
                    .iter()
                    .filter(|(at, _)| *at <= end && start.is_none_or(|start| *at > start))
                    .filter_map(|(_, recorded)| recorded.get(series))
                    .flatten()
                    .copied()
                    .collect();
                statistic(stat, values)
            })
            .collect();
        combine(&rule.spec.expression, &values)
    }
}

fn period(spec: &AlarmSpec) -> Duration {
    Duration::from_secs(spec.period_seconds.max(1) as u64)
}

fn round(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

/// A CloudWatch statistic of some values: Sum, Average, Minimum, Maximum,
/// SampleCount or a percentile (p99); None without values.
fn statistic(stat: &str, mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let count = values.len() as f64;
    match stat {
        "Sum" => Some(values.iter().sum()),
        "Average" => Some(values.iter().sum::<f64>() / count),
        "Minimum" => values.into_iter().reduce(f64::min),
        "Maximum" => values.into_iter().reduce(f64::max),
        "SampleCount" => Some(count),
        percentile => {
            let p: f64 = percentile.strip_prefix('p')?.parse().ok()?;
            values.sort_by(f64::total_cmp);
            // Nearest rank.
            let rank = ((p / 100.0) * count).ceil().max(1.0) as usize;
            values.get(rank.min(values.len()) - 1).copied()
        }
    }
}

/// The metric-math expressions the alarms use, over the metrics with data.
fn combine(expression: &str, values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    match expression {
        "SUM(METRICS())" => Some(values.iter().sum()),
        "MAX(METRICS())" => values.iter().copied().reduce(f64::max),
        other => {
            tracing::warn!("chatctl dev cannot evaluate the metric math {other:?}");
            None
        }
    }
}

/// Prints each change and sets the emulator's alarm to the same state.
pub async fn report(changes: Vec<Change>, cloudwatch: &aws_sdk_cloudwatch::Client) {
    for change in changes {
        let (state, said) = if change.alarming {
            (StateValue::Alarm, "is in ALARM")
        } else {
            (StateValue::Ok, "is OK again")
        };
        eprintln!("chatctl dev: alarm {} {said}: {}", change.alarm, change.reason);
        let set = cloudwatch
            .set_alarm_state()
            .alarm_name(&change.alarm)
            .state_value(state)
            .state_reason(&change.reason)
            .send()
            .await;
        if let Err(error) = set {
            tracing::warn!(
                "{:#}",
                crate::aws::aws_error(format!("cannot set alarm {}", change.alarm), error)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stack::desired::MetricSpec;

    fn spec(expression: &str, stat: &str, threshold: f64, evaluation_periods: i32) -> AlarmSpec {
        let metric = |function: &str| MetricSpec {
            namespace: "AWS/Lambda".into(),
            name: if stat == "Sum" { "Errors" } else { "Duration" }.into(),
            dimensions: vec![("FunctionName".into(), function.into())],
            stat: stat.into(),
        };
        AlarmSpec {
            name: "chat-rule".into(),
            description: "the rule".into(),
            expression: expression.into(),
            metrics: vec![metric("chat-a"), metric("chat-b")],
            period_seconds: 60,
            threshold,
            evaluation_periods,
        }
    }

    fn recorded(name: &str, function: &str, values: &[f64]) -> HashMap<Series, Vec<f64>> {
        let series = Series::new("AWS/Lambda", name, [("FunctionName".into(), function.into())]);
        HashMap::from([(series, values.to_vec())])
    }

    #[test]
    fn a_sum_over_functions_fires_at_its_threshold_and_clears_when_the_period_passes() {
        let mut watch = AlarmWatch::new(&[spec("SUM(METRICS())", "Sum", 3.0, 1)], "a1");
        let start = Instant::now();
        assert!(watch.evaluate(start).is_empty(), "no data: OK, no change");
        watch.observe(start, &recorded("Errors", "chat-a", &[1.0, 0.0, 1.0]));
        assert!(watch.evaluate(start).is_empty(), "2 < 3");
        let later = start + Duration::from_secs(10);
        watch.observe(later, &recorded("Errors", "chat-b", &[1.0]));
        // Another function's errors, another stack's series: not counted.
        watch.observe(later, &recorded("Errors", "other-a", &[9.0]));
        let changes = watch.evaluate(later);
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert!(changes[0].alarming);
        assert!(changes[0].reason.contains("3 in the last 1 min"), "{changes:?}");
        assert!(watch.evaluate(later).is_empty(), "still in ALARM: no change");
        // A minute after the first errors, only one is left in the period.
        let changes = watch.evaluate(start + Duration::from_secs(61));
        assert_eq!(changes.len(), 1);
        assert!(!changes[0].alarming, "{changes:?}");
    }

    #[test]
    fn a_percentile_rule_needs_every_evaluation_period_to_breach() {
        let mut watch = AlarmWatch::new(&[spec("MAX(METRICS())", "p99", 100.0, 2)], "a1");
        let start = Instant::now();
        watch.observe(start, &recorded("Duration", "chat-a", &[5.0, 150.0]));
        assert!(watch.evaluate(start).is_empty(), "one period of two");
        let next = start + Duration::from_secs(70);
        watch.observe(next, &recorded("Duration", "chat-b", &[120.0]));
        let changes = watch.evaluate(next);
        assert!(changes.len() == 1 && changes[0].alarming, "{changes:?}");
        // Old history is let go once no rule reads it.
        watch.observe(start + Duration::from_secs(500), &HashMap::new());
        assert!(watch.history.is_empty());
    }

    #[test]
    fn statistics_as_cloudwatch_names_them() {
        let values = || vec![4.0, 1.0, 3.0, 2.0];
        assert_eq!(statistic("Sum", values()), Some(10.0));
        assert_eq!(statistic("Average", values()), Some(2.5));
        assert_eq!(statistic("Maximum", values()), Some(4.0));
        assert_eq!(statistic("Minimum", values()), Some(1.0));
        assert_eq!(statistic("SampleCount", values()), Some(4.0));
        assert_eq!(statistic("p50", values()), Some(2.0));
        assert_eq!(statistic("p99", values()), Some(4.0));
        assert_eq!(statistic("p99", vec![]), None);
        assert_eq!(statistic("tm99", values()), None);
        assert_eq!(combine("SUM(METRICS())", &[1.0, 2.0]), Some(3.0));
        assert_eq!(combine("MAX(METRICS())", &[1.0, 2.0]), Some(2.0));
        assert_eq!(combine("AVG(METRICS())", &[1.0]), None);
    }
}
