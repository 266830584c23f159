//! The stack's alarms: an SNS topic with email subscriptions, and a few
//! CloudWatch alarms (metric math over every function, both tables or the
//! stage) that notify it. Read, diff, create or update (PutMetricAlarm
//! does both), and delete.

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use aws_sdk_cloudwatch::types::{ComparisonOperator, Dimension, Metric, MetricDataQuery, MetricStat};
use serde::Serialize;

use super::base::{Action, Detail, Found, Kind, Report, Stack, step, tag_changes};
use super::desired::{API_ID, AlarmSpec, AlarmsSpec, MetricSpec};
use super::tags::{Tagged, retag};
use super::{Names, STACK_TAG};
use crate::aws::{Aws, failed, is_code};

/// What SNS shows for an email subscription nobody has confirmed yet.
pub const PENDING: &str = "PendingConfirmation";
/// The alarms `[alarms]` can make, by name suffix.
pub const KINDS: [&str; 6] = [
    "function-errors",
    "function-throttles",
    "function-duration",
    "stage-errors",
    "dynamodb-throttles",
    "failed-deliveries",
];

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TopicState {
    pub arn: String,
    /// Endpoint → confirmed (an email address not confirmed yet is pending).
    pub subscriptions: BTreeMap<String, bool>,
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlarmState {
    pub arn: String,
    /// OK, ALARM or INSUFFICIENT_DATA.
    pub state: String,
    /// The rule as read, in the form a spec is compared in.
    pub rule: String,
    pub tags: BTreeMap<String, String>,
}

/// The topic, found by name among every page of ListTopics: SNS reads a
/// topic by ARN only, and the read of the stack runs before the account id
/// (part of the ARN) is known.
pub async fn read_topic(aws: &Aws, names: &Names) -> Result<Found<TopicState>> {
    let suffix = format!(":{}", names.alarm_topic());
    let mut pages = aws.sns.list_topics().into_paginator().send();
    let mut arn = None;
    while let Some(page) = pages.next().await {
        let page = page.map_err(failed("cannot list SNS topics"))?;
        arn = arn.or_else(|| {
            page.topics()
                .iter()
                .filter_map(|t| t.topic_arn())
                .find(|a| a.ends_with(&suffix))
                .map(str::to_string)
        });
    }
    let Some(arn) = arn else {
        return Ok(Found::Missing);
    };
    let tags = aws
        .sns
        .list_tags_for_resource()
        .resource_arn(&arn)
        .send()
        .await
        .map_err(failed(format!("cannot read the tags of SNS topic {arn}")))?;
    let tags: BTreeMap<String, String> = tags
        .tags()
        .iter()
        .map(|t| (t.key().to_string(), t.value().to_string()))
        .collect();
    let mut subscriptions = BTreeMap::new();
    let mut pages = aws
        .sns
        .list_subscriptions_by_topic()
        .topic_arn(&arn)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(failed(format!("cannot list the subscriptions of SNS topic {arn}")))?;
        for subscription in page.subscriptions() {
            if subscription.protocol() == Some("email")
                && let Some(endpoint) = subscription.endpoint()
            {
                subscriptions.insert(endpoint.to_string(), subscription.subscription_arn() != Some(PENDING));
            }
        }
    }
    let tag = tags.get(STACK_TAG).cloned();
    Ok(Found::classify(
        &names.stack,
        tag.as_deref(),
        TopicState {
            arn,
            subscriptions,
            tags,
        },
    ))
}

/// The alarms the stack may have, by name (DescribeAlarms by exact names:
/// another stack's `chat-prod-…` never matches `chat`'s).
pub async fn read_alarms(aws: &Aws, names: &Names) -> Result<BTreeMap<String, Found<AlarmState>>> {
    let wanted: Vec<String> = KINDS.iter().map(|kind| names.alarm(kind)).collect();
    let described = aws
        .cloudwatch
        .describe_alarms()
        .set_alarm_names(Some(wanted.clone()))
        .send()
        .await
        .map_err(failed("cannot read the stack's CloudWatch alarms"))?;
    let mut found: BTreeMap<String, Found<AlarmState>> =
        wanted.into_iter().map(|name| (name, Found::Missing)).collect();
    // Each alarm's tags at once: they tell ours from another's.
    let reads = described.metric_alarms().iter().filter_map(|alarm| {
        let (name, arn) = (alarm.alarm_name()?, alarm.alarm_arn()?);
        Some(async move {
            let tags = aws
                .cloudwatch
                .list_tags_for_resource()
                .resource_arn(arn)
                .send()
                .await
                .map_err(failed(format!("cannot read the tags of alarm {name}")))?;
            let tags: BTreeMap<String, String> = tags
                .tags()
                .iter()
                .filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string())))
                .collect();
            let rule = rule_of(
                alarm.alarm_description(),
                alarm.metrics(),
                alarm.threshold(),
                alarm.evaluation_periods(),
                alarm.alarm_actions(),
            );
            let state = AlarmState {
                arn: arn.to_string(),
                state: alarm.state_value().map(|s| s.as_str().to_string()).unwrap_or_default(),
                rule,
                tags: tags.clone(),
            };
            let tag = tags.get(STACK_TAG).cloned();
            Ok::<_, anyhow::Error>((name.to_string(), Found::classify(&names.stack, tag.as_deref(), state)))
        })
    });
    found.extend(futures::future::try_join_all(reads).await?);
    Ok(found)
}

/// An alarm's rule as one comparable line: what it says, its metrics, its
/// threshold and periods, whom it notifies.
fn rule_of(
    description: Option<&str>,
    queries: &[MetricDataQuery],
    threshold: Option<f64>,
    evaluation_periods: Option<i32>,
    actions: &[String],
) -> String {
    let metrics: Vec<String> = queries
        .iter()
        .map(|q| match (q.expression(), q.metric_stat()) {
            (Some(expression), _) => expression.to_string(),
            (None, Some(stat)) => {
                let metric = stat.metric();
                let dimensions: Vec<String> = metric
                    .map(|m| m.dimensions())
                    .unwrap_or_default()
                    .iter()
                    .map(|d| format!("{}={}", d.name().unwrap_or(""), d.value().unwrap_or("")))
                    .collect();
                format!(
                    "{}/{}[{}] {} {}s",
                    metric.and_then(|m| m.namespace()).unwrap_or(""),
                    metric.and_then(|m| m.metric_name()).unwrap_or(""),
                    dimensions.join(","),
                    stat.stat().unwrap_or(""),
                    stat.period().unwrap_or(0)
                )
            }
            (None, None) => String::new(),
        })
        .collect();
    format!(
        "{} | {} | >= {} x{} | {}",
        description.unwrap_or(""),
        metrics.join("; "),
        threshold.unwrap_or(0.0),
        evaluation_periods.unwrap_or(0),
        actions.join(",")
    )
}

/// The metric queries of a spec: each metric (not returned), then the expression.
fn queries(spec: &AlarmSpec, api_id: &str) -> Vec<MetricDataQuery> {
    let mut queries: Vec<MetricDataQuery> = spec
        .metrics
        .iter()
        .enumerate()
        .map(|(i, metric)| {
            MetricDataQuery::builder()
                .id(format!("m{i}"))
                .metric_stat(stat(metric, spec.period_seconds, api_id))
                .return_data(false)
                .build()
        })
        .collect();
    queries.push(
        MetricDataQuery::builder()
            .id("alarm")
            .expression(&spec.expression)
            .label(&spec.name)
            .return_data(true)
            .build(),
    );
    queries
}

fn stat(metric: &MetricSpec, period_seconds: i32, api_id: &str) -> MetricStat {
    let dimensions = metric
        .dimensions
        .iter()
        .map(|(name, value)| {
            let value = if value == API_ID { api_id } else { value.as_str() };
            Dimension::builder().name(name).value(value).build()
        })
        .collect();
    MetricStat::builder()
        .metric(
            Metric::builder()
                .namespace(&metric.namespace)
                .metric_name(&metric.name)
                .set_dimensions(Some(dimensions))
                .build(),
        )
        .period(period_seconds)
        .stat(&metric.stat)
        .build()
}

/// A spec's rule, in [`rule_of`]'s form.
fn wanted_rule(spec: &AlarmSpec, api_id: &str, topic_arn: &str) -> String {
    rule_of(
        Some(&spec.description),
        &queries(spec, api_id),
        Some(spec.threshold),
        Some(spec.evaluation_periods),
        &[topic_arn.to_string()],
    )
}

/// The topic's step: made, or its subscriptions and tags changed.
pub fn topic_action(spec: &AlarmsSpec, state: Option<&TopicState>, tags: &BTreeMap<String, String>) -> Action {
    let Some(state) = state else {
        return Action::Create;
    };
    let add: Vec<String> = spec
        .email
        .iter()
        .filter(|e| !state.subscriptions.contains_key(*e))
        .cloned()
        .collect();
    // A pending subscription cannot be removed (it has no ARN yet); SNS
    // drops it after 3 days unconfirmed (SNS developer guide).
    let remove: Vec<String> = state
        .subscriptions
        .iter()
        .filter(|(e, confirmed)| **confirmed && !spec.email.contains(e))
        .map(|(e, _)| e.clone())
        .collect();
    let mut changes = vec![];
    if !add.is_empty() || !remove.is_empty() {
        changes.push(Detail::Subscriptions { add, remove });
    }
    changes.extend(tag_changes(&state.tags, tags));
    Action::update_or_nothing(changes)
}

/// An alarm's step. Its rule names the API and the topic, which a new
/// stack does not have yet: then it is made or set again when applied.
pub fn alarm_action(
    spec: &AlarmSpec,
    state: Option<&AlarmState>,
    live: Option<(&str, &str)>,
    tags: &BTreeMap<String, String>,
) -> Action {
    let Some(state) = state else {
        return Action::Create;
    };
    let mut changes = vec![];
    let same_rule = live.is_some_and(|(api_id, topic_arn)| state.rule == wanted_rule(spec, api_id, topic_arn));
    if !same_rule {
        changes.push(Detail::AlarmRule);
    }
    changes.extend(tag_changes(&state.tags, tags));
    Action::update_or_nothing(changes)
}

/// Creates or updates the topic; returns its ARN.
pub(super) async fn apply_topic(
    aws: &Aws,
    stack: Stack<'_>,
    spec: &AlarmsSpec,
    action: &Action,
    report: Report<'_>,
) -> Result<String> {
    let arn = match action {
        // A topic's ARN is made of its name (SNS API reference, CreateTopic),
        // and CreateTopic is idempotent: a lost answer sent again gets it.
        Action::Create => {
            let mut request = aws.sns.create_topic().name(&spec.topic);
            for (key, value) in stack.tags {
                request = request.tags(aws_sdk_sns::types::Tag::builder().key(key).value(value).build()?);
            }
            request
                .send()
                .await
                .map_err(failed(format!("cannot create SNS topic {}", spec.topic)))?
                .topic_arn
                .unwrap_or_default()
        }
        Action::NoChange | Action::Update { .. } => stack.names.alarm_topic_arn(),
        other => bail!("SNS topic {}: the plan asks to {} it", spec.topic, other.verb()),
    };
    let mut add = if *action == Action::Create {
        spec.email.clone()
    } else {
        vec![]
    };
    for change in action.changes() {
        match change {
            Detail::Subscriptions { add: more, remove } => {
                add.extend(more.iter().cloned());
                unsubscribe(aws, &arn, remove).await?;
            }
            Detail::Tags { set, remove } => retag(aws, Tagged::Topic(&arn), set, remove).await?,
            other => bail!("an SNS topic has no {other} to change"),
        }
    }
    for email in &add {
        aws.sns
            .subscribe()
            .topic_arn(&arn)
            .protocol("email")
            .endpoint(email)
            .send()
            .await
            .map_err(failed(format!("cannot subscribe {email} to SNS topic {}", spec.topic)))?;
    }
    match action {
        Action::Create => step(report, Kind::Topic, &spec.topic, "created"),
        Action::Update { .. } => step(report, Kind::Topic, &spec.topic, "updated"),
        _ => {}
    }
    Ok(arn)
}

async fn unsubscribe(aws: &Aws, topic_arn: &str, emails: &[String]) -> Result<()> {
    if emails.is_empty() {
        return Ok(());
    }
    let mut pages = aws
        .sns
        .list_subscriptions_by_topic()
        .topic_arn(topic_arn)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(failed(format!("cannot list the subscriptions of {topic_arn}")))?;
        for subscription in page.subscriptions() {
            let chosen = subscription.endpoint().is_some_and(|e| emails.iter().any(|x| x == e));
            // A pending subscription has no ARN yet: SNS drops it after 3
            // days unconfirmed (SNS developer guide).
            match subscription.subscription_arn() {
                Some(arn) if chosen && arn != PENDING => {
                    aws.sns
                        .unsubscribe()
                        .subscription_arn(arn)
                        .send()
                        .await
                        .map_err(failed(format!("cannot unsubscribe {arn}")))?;
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// Creates or sets an alarm (PutMetricAlarm does both).
pub(super) async fn apply_alarm(
    aws: &Aws,
    stack: Stack<'_>,
    spec: &AlarmSpec,
    action: &Action,
    (api_id, topic_arn): (&str, &str),
    report: Report<'_>,
) -> Result<()> {
    let rule_changes = match action {
        Action::NoChange => return Ok(()),
        Action::Create => true,
        Action::Update { changes } => changes.contains(&Detail::AlarmRule),
        other => bail!("alarm {}: the plan asks to {} it", spec.name, other.verb()),
    };
    if rule_changes {
        let mut request = aws
            .cloudwatch
            .put_metric_alarm()
            .alarm_name(&spec.name)
            .alarm_description(&spec.description)
            .set_metrics(Some(queries(spec, api_id)))
            .threshold(spec.threshold)
            .comparison_operator(ComparisonOperator::GreaterThanOrEqualToThreshold)
            .evaluation_periods(spec.evaluation_periods)
            // No traffic is no trouble.
            .treat_missing_data("notBreaching")
            .alarm_actions(topic_arn)
            .ok_actions(topic_arn);
        if *action == Action::Create {
            for (key, value) in stack.tags {
                request = request.tags(aws_sdk_cloudwatch::types::Tag::builder().key(key).value(value).build());
            }
        }
        request
            .send()
            .await
            .map_err(failed(format!("cannot put alarm {}", spec.name)))?;
    }
    if let Action::Update { changes } = action {
        for change in changes {
            if let Detail::Tags { set, remove } = change {
                let arn = stack.names.alarm_arn(&spec.name);
                retag(aws, Tagged::Alarm(&arn), set, remove).await?;
            }
        }
    }
    let done = if *action == Action::Create {
        "created"
    } else {
        "updated"
    };
    step(report, Kind::Alarm, &spec.name, done);
    Ok(())
}

pub(super) async fn delete_alarm(aws: &Aws, name: &str) -> Result<()> {
    // DeleteAlarms of a name that does not exist succeeds.
    aws.cloudwatch
        .delete_alarms()
        .alarm_names(name)
        .send()
        .await
        .map_err(failed(format!("cannot delete alarm {name}")))?;
    Ok(())
}

/// Deletes the topic and with it its subscriptions.
pub(super) async fn delete_topic(aws: &Aws, arn: &str) -> Result<()> {
    match aws.sns.delete_topic().topic_arn(arn).send().await {
        Err(err) if is_code(&err, &["NotFound"]) => Ok(()),
        other => other
            .map(|_| ())
            .map_err(failed(format!("cannot delete SNS topic {arn}"))),
    }
}
