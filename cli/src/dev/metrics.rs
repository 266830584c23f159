//! `chatctl dev` publishes the metrics API Gateway and Lambda would (see
//! [`crate::metrics`]) to the emulator's CloudWatch, so that `chatctl top`
//! reads the local stack as it reads one on AWS.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{MetricDatum, StandardUnit, StatisticSet};

use crate::metrics::{Dimensions, sdk_dimensions, unit_of};

/// How often recorded values are sent. AWS publishes every minute; a second
/// keeps `top` on the local stack close to live.
pub const PUBLISH_INTERVAL: Duration = Duration::from_secs(1);
/// PutMetricData takes at most 1,000 metrics per request and 150 distinct
/// values per metric (CloudWatch API reference, PutMetricData).
const MAX_DATA_PER_REQUEST: usize = 1000;
const MAX_VALUES_PER_DATUM: usize = 150;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Series {
    namespace: &'static str,
    name: &'static str,
    dimensions: Dimensions,
}

/// Values recorded since the last publish, by metric and dimensions.
#[derive(Default)]
pub struct Recorder {
    pending: Mutex<HashMap<Series, Vec<f64>>>,
}

impl Recorder {
    pub fn record(&self, namespace: &'static str, name: &'static str, dimensions: Dimensions, value: f64) {
        let series = Series {
            namespace,
            name,
            dimensions,
        };
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(series)
            .or_default()
            .push(value);
    }

    fn take(&self) -> HashMap<Series, Vec<f64>> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// The data for PutMetricData, by namespace. A count is sent as one
/// statistic set per series (its sum, sample count, minimum and maximum, as
/// AWS aggregates its own per minute); a time as its distinct values and
/// their counts, so that percentiles stay computable.
fn data(pending: HashMap<Series, Vec<f64>>, at: SystemTime) -> BTreeMap<&'static str, Vec<MetricDatum>> {
    let mut by_namespace: BTreeMap<&'static str, Vec<MetricDatum>> = BTreeMap::new();
    for (series, values) in pending {
        let unit = unit_of(series.name);
        let datum = || {
            MetricDatum::builder()
                .metric_name(series.name)
                .set_dimensions(Some(sdk_dimensions(&series.dimensions)))
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
                .entry(series.namespace)
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
            by_namespace.entry(series.namespace).or_default().push(datum);
        }
    }
    by_namespace
}

/// Publishes what `recorder` collects every [`PUBLISH_INTERVAL`] until aborted.
pub async fn publish(recorder: Arc<Recorder>, cloudwatch: aws_sdk_cloudwatch::Client) {
    let mut ticks = tokio::time::interval(PUBLISH_INTERVAL);
    loop {
        ticks.tick().await;
        publish_pending(&recorder, &cloudwatch).await;
    }
}

/// Publishes what was recorded since the last publish. A failed publish is
/// logged and its values dropped, as a lost datagram would be.
pub async fn publish_pending(recorder: &Recorder, cloudwatch: &aws_sdk_cloudwatch::Client) {
    for (namespace, data) in data(recorder.take(), SystemTime::now()) {
        for chunk in data.chunks(MAX_DATA_PER_REQUEST) {
            let sent = cloudwatch
                .put_metric_data()
                .namespace(namespace)
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
}
