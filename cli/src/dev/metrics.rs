//! `chatctl dev` publishes the metrics API Gateway and Lambda would (see
//! [`crate::metrics`]) to the emulator's CloudWatch, so that `chatctl top`
//! reads the local stack as it reads one on AWS.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit, StatisticSet};

use super::alarms::AlarmWatch;
use crate::metrics::{Dimensions, Series, unit_of};

/// How often recorded values are sent. AWS publishes every minute; a second
/// keeps `top` on the local stack close to live.
pub const PUBLISH_INTERVAL: Duration = Duration::from_secs(1);
/// PutMetricData takes at most 1,000 metrics per request and 150 distinct
/// values per metric (CloudWatch API reference, PutMetricData).
const MAX_DATA_PER_REQUEST: usize = 1000;
const MAX_VALUES_PER_DATUM: usize = 150;

/// Values recorded since the last publish, by metric and dimensions.
#[derive(Default)]
pub struct Recorder {
    pending: Mutex<HashMap<Series, Vec<f64>>>,
}

impl Recorder {
    pub fn record(&self, namespace: &str, name: &str, dimensions: Dimensions, value: f64) {
        let dimensions = dimensions.into_iter().map(|(name, value)| (name.to_string(), value));
        self.record_series(Series::new(namespace, name, dimensions), [value]);
    }

    fn record_series(&self, series: Series, values: impl IntoIterator<Item = f64>) {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(series)
            .or_default()
            .extend(values);
    }

    /// Records the metrics of a function's log line in CloudWatch's
    /// embedded metric format, as CloudWatch Logs extracts them on AWS;
    /// any other line records nothing.
    pub fn record_embedded(&self, line: &str) {
        for (series, values) in embedded_metrics(line) {
            self.record_series(series, values);
        }
    }

    fn take(&self) -> HashMap<Series, Vec<f64>> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// The metrics of an embedded-metric-format document ("Specification:
/// Embedded metric format", CloudWatch user guide): each directive of
/// `_aws.CloudWatchMetrics` names a namespace, dimension sets (each one a
/// metric of its own) and metrics, whose values (a number or an array of
/// them) and dimension values are the document's members of those names.
fn embedded_metrics(line: &str) -> Vec<(Series, Vec<f64>)> {
    if !line.trim_start().starts_with('{') {
        return vec![];
    }
    let Ok(document) = serde_json::from_str::<serde_json::Value>(line.trim()) else {
        return vec![];
    };
    let directives = document["_aws"]["CloudWatchMetrics"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut found = vec![];
    for directive in directives {
        let Some(namespace) = directive["Namespace"].as_str() else {
            continue;
        };
        let dimension_sets = directive["Dimensions"].as_array().cloned().unwrap_or_default();
        for metric in directive["Metrics"].as_array().cloned().unwrap_or_default() {
            let Some(name) = metric["Name"].as_str() else { continue };
            let values: Vec<f64> = match &document[name] {
                serde_json::Value::Array(values) => values.iter().filter_map(|v| v.as_f64()).collect(),
                value => value.as_f64().into_iter().collect(),
            };
            if values.is_empty() {
                continue;
            }
            for set in &dimension_sets {
                let keys = set.as_array().cloned().unwrap_or_default();
                let dimensions: Option<Vec<(String, String)>> = keys
                    .iter()
                    .map(|key| {
                        let key = key.as_str()?;
                        Some((key.to_string(), document[key].as_str()?.to_string()))
                    })
                    .collect();
                if let Some(dimensions) = dimensions {
                    found.push((Series::new(namespace, name, dimensions), values.clone()));
                }
            }
        }
    }
    found
}

/// The data for PutMetricData, by namespace. A count is sent as one
/// statistic set per series (its sum, sample count, minimum and maximum, as
/// AWS aggregates its own per minute); a time as its distinct values and
/// their counts, so that percentiles stay computable.
fn data(pending: HashMap<Series, Vec<f64>>, at: SystemTime) -> BTreeMap<String, Vec<MetricDatum>> {
    let mut by_namespace: BTreeMap<String, Vec<MetricDatum>> = BTreeMap::new();
    for (series, values) in pending {
        let unit = unit_of(&series.name);
        let dimensions: Vec<Dimension> = series
            .dimensions
            .iter()
            .map(|(name, value)| Dimension::builder().name(name).value(value).build())
            .collect();
        let datum = || {
            MetricDatum::builder()
                .metric_name(&series.name)
                .set_dimensions(Some(dimensions.clone()))
                .unit(unit.clone())
                .timestamp(DateTime::from(at))
        };
        if unit == StandardUnit::Count {
            let statistics = StatisticSet::builder()
                .sample_count(values.len() as f64)
                .sum(values.iter().sum())
                .minimum(values.iter().copied().fold(f64::INFINITY, f64::min))
                .maximum(values.iter().copied().fold(f64::NEG_INFINITY, f64::max))
                .build();
            by_namespace
                .entry(series.namespace.clone())
                .or_default()
                .push(datum().statistic_values(statistics).build());
            continue;
        }
        let mut counts: Vec<(f64, f64)> = vec![];
        let mut sorted = values;
        sorted.sort_by(f64::total_cmp);
        for value in sorted {
            match counts.last_mut() {
                Some((last, count)) if *last == value => *count += 1.0,
                _ => counts.push((value, 1.0)),
            }
        }
        for chunk in counts.chunks(MAX_VALUES_PER_DATUM) {
            let datum = datum()
                .set_values(Some(chunk.iter().map(|(value, _)| *value).collect()))
                .set_counts(Some(chunk.iter().map(|(_, count)| *count).collect()))
                .build();
            by_namespace.entry(series.namespace.clone()).or_default().push(datum);
        }
    }
    by_namespace
}

/// Publishes what `recorder` collects every [`PUBLISH_INTERVAL`], and
/// evaluates the stack's alarms over it, until aborted.
pub async fn publish(recorder: Arc<Recorder>, cloudwatch: aws_sdk_cloudwatch::Client, mut alarms: AlarmWatch) {
    let mut ticks = tokio::time::interval(PUBLISH_INTERVAL);
    loop {
        ticks.tick().await;
        let recorded = recorder.take();
        let now = std::time::Instant::now();
        alarms.observe(now, &recorded);
        send(recorded, &cloudwatch).await;
        super::alarms::report(alarms.evaluate(now), &cloudwatch).await;
    }
}

/// Publishes what was recorded since the last publish.
pub async fn publish_pending(recorder: &Recorder, cloudwatch: &aws_sdk_cloudwatch::Client) {
    send(recorder.take(), cloudwatch).await;
}

/// A failed publish is logged and its values dropped, as a lost datagram
/// would be.
async fn send(recorded: HashMap<Series, Vec<f64>>, cloudwatch: &aws_sdk_cloudwatch::Client) {
    for (namespace, data) in data(recorded, SystemTime::now()) {
        for chunk in data.chunks(MAX_DATA_PER_REQUEST) {
            let sent = cloudwatch
                .put_metric_data()
                .namespace(&namespace)
                .set_metric_data(Some(chunk.to_vec()))
                .send()
                .await;
            if let Err(error) = sent {
                tracing::warn!(
                    "{:#}",
                    crate::aws::aws_error(format!("cannot publish {namespace} metrics"), error)
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{API_NAMESPACE, CLIENT_ERROR, INTEGRATION_LATENCY, stage_dimensions};

    #[test]
    fn times_are_sent_with_their_counts_in_chunks_of_150_and_counts_as_one_statistic_set() {
        let recorder = Recorder::default();
        let dev = || stage_dimensions("a1", "dev");
        for value in [5.0, 3.0, 5.0, 5.0] {
            recorder.record(API_NAMESPACE, INTEGRATION_LATENCY, dev(), value);
        }
        for value in 0..200 {
            recorder.record(
                API_NAMESPACE,
                INTEGRATION_LATENCY,
                stage_dimensions("a1", "prod"),
                f64::from(value),
            );
        }
        for value in [1.0, 0.0, 1.0] {
            recorder.record(API_NAMESPACE, CLIENT_ERROR, dev(), value);
        }
        let data = data(recorder.take(), SystemTime::now());
        let sent = &data[API_NAMESPACE];
        let of_stage = |d: &&MetricDatum, stage: &str| d.dimensions().iter().any(|x| x.value() == Some(stage));
        let latency = sent
            .iter()
            .find(|d| d.metric_name() == Some(INTEGRATION_LATENCY) && of_stage(d, "dev"))
            .unwrap();
        assert_eq!(latency.values(), [3.0, 5.0]);
        assert_eq!(latency.counts(), [1.0, 3.0]);
        assert_eq!(latency.unit(), Some(&StandardUnit::Milliseconds));
        let mut chunks: Vec<usize> = sent
            .iter()
            .filter(|d| d.metric_name() == Some(INTEGRATION_LATENCY) && of_stage(d, "prod"))
            .map(|d| d.values().len())
            .collect();
        chunks.sort();
        assert_eq!(chunks, [50, 150]);
        let errors = sent.iter().find(|d| d.metric_name() == Some(CLIENT_ERROR)).unwrap();
        let set = errors.statistic_values().unwrap();
        assert_eq!(
            (set.sample_count(), set.sum(), set.minimum(), set.maximum()),
            (Some(3.0), Some(2.0), Some(0.0), Some(1.0))
        );
        assert!(errors.values().is_empty());
        assert!(recorder.take().is_empty(), "taken values are not sent twice");
    }

    #[test]
    fn embedded_metric_lines_of_the_handlers_are_recorded_and_other_lines_ignored() {
        let recorder = Recorder::default();
        let at = SystemTime::now();
        let line = chat_core::metrics::embedded_count("chat-sendmessage", "FailedDeliveries", 2.0, at);
        recorder.record_embedded(&line);
        recorder.record_embedded("INFO message sent targets=3");
        recorder.record_embedded(r#"{"level":"INFO","message":"json, but no metrics"}"#);
        // Two dimension sets make two metrics; an array holds several values.
        recorder.record_embedded(
            r#"{"_aws":{"Timestamp":1,"CloudWatchMetrics":[{"Namespace":"app","Dimensions":[["Room"],[]],
                "Metrics":[{"Name":"Sizes","Unit":"Count"},{"Name":"Missing"}]}]},"Room":"lobby","Sizes":[1,2]}"#,
        );
        let taken = recorder.take();
        let failed = Series::new(
            "chatctl",
            "FailedDeliveries",
            [("FunctionName".to_string(), "chat-sendmessage".to_string())],
        );
        assert_eq!(taken[&failed], [2.0]);
        let by_room = Series::new("app", "Sizes", [("Room".to_string(), "lobby".to_string())]);
        assert_eq!(taken[&by_room], [1.0, 2.0]);
        assert_eq!(taken[&Series::new("app", "Sizes", [])], [1.0, 2.0]);
        assert_eq!(taken.len(), 3, "{taken:?}");
    }
}
