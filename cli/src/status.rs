//! `chatctl status`: every resource of the stack as the plan sees it
//! (present, missing, drifted, foreign), the outputs, and the open
//! connections. A count that cannot be read is said to be unknown, with why,
//! and the rest of the report stands.

use std::collections::BTreeMap;

use anyhow::Result;
use serde::Serialize;

use crate::EXIT_DRIFT;
use crate::output::{Outputs, print_json};
use crate::session::{Session, read};
use crate::stack::desired::Desired;
use crate::stack::plan::{self, Action};

#[derive(Serialize)]
struct ResourceStatus {
    kind: &'static str,
    name: String,
    state: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    details: Vec<String>,
}

#[derive(Serialize)]
struct StatusReport {
    stack: String,
    healthy: bool,
    resources: Vec<ResourceStatus>,
    outputs: Option<Outputs>,
    /// `null` when there is no connections table of the stack, or when the
    /// count could not be read (then `open_connections_error` says why).
    open_connections: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    open_connections_error: Option<String>,
}

/// The open connections: not asked when the stack has no connections
/// table of its own; else the count, or why it could not be read.
enum OpenConnections {
    NoTable,
    Count(i64),
    Unknown(String),
}

async fn open_connections(session: &Session, actual: &crate::stack::actual::Actual) -> OpenConnections {
    let Session { aws, names, .. } = session;
    let table = names.connections_table();
    if actual.tables.get(&table).and_then(|t| t.ours()).is_none() {
        return OpenConnections::NoTable;
    }
    match chat_core::store::ConnectionStore::for_operator(aws.dynamodb.clone(), table)
        .open_count()
        .await
    {
        Ok(count) => OpenConnections::Count(count),
        Err(err) => OpenConnections::Unknown(err.to_string()),
    }
}

/// Which recorded release the functions' aliases run, and the latest.
fn release_detail(actual: &crate::stack::actual::Actual, names: &crate::stack::Names) -> String {
    let live: BTreeMap<String, String> = actual
        .functions
        .iter()
        .filter_map(|(function, found)| {
            let version = found.ours()?.live.as_deref()?.version.clone()?;
            Some((names.function(*function), version))
        })
        .collect();
    let latest = actual.releases.last().map(|r| r.number);
    match (crate::stack::release::live_release(&actual.releases, &live), latest) {
        (Some(live), Some(latest)) if live.number == latest => format!("release {latest} is live"),
        (Some(live), Some(latest)) => format!("release {} is live, not the latest ({latest})", live.number),
        _ => "no recorded release is live".into(),
    }
}

/// The domain name's state and target, and its certificate's state and expiry.
fn domain_details(domain: &crate::stack::domain::DomainActual, name: &str) -> Vec<String> {
    let mut details = vec![];
    if let Some(state) = domain.ours().into_iter().find(|d| d.name == name) {
        details.push(format!(
            "{} → {}",
            state.status.as_deref().unwrap_or("status unknown"),
            state.target.as_deref().unwrap_or("no target yet")
        ));
    }
    if let Some(certificate) = &domain.certificate {
        details.push(certificate_summary(certificate));
    }
    details
}

/// "certificate ISSUED, expires 2027-01-02 (arn…)"
fn certificate_summary(certificate: &crate::stack::domain::CertificateState) -> String {
    let expiry = certificate
        .not_after
        .and_then(utc_date)
        .map(|date| format!(", expires {date}"))
        .unwrap_or_default();
    format!("certificate {}{expiry} ({})", certificate.status, certificate.arn)
}

/// A time as a UTC date (YYYY-MM-DD).
fn utc_date(secs: i64) -> Option<String> {
    let time = std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_secs(u64::try_from(secs).ok()?))?;
    let text = humantime::format_rfc3339_seconds(time).to_string();
    Some(text.get(..10)?.to_string())
}

/// Exit 0 when every resource is present, 3 otherwise.
pub(crate) async fn run(session: &mut Session) -> Result<u8> {
    let actual = read(session).await?;
    let Session { settings, names, .. } = &*session;
    // No build: code is not compared, everything else is.
    let desired = Desired::new(settings, names.clone(), &BTreeMap::new());
    let plan = plan::plan(&desired, &actual);
    let mut resources: Vec<ResourceStatus> = plan
        .changes
        .iter()
        .map(|change| {
            let (state, details) = match &change.action {
                Action::NoChange => ("present", vec![]),
                Action::Create => ("missing", vec![]),
                Action::Update { changes } => ("drifted", changes.iter().map(|c| c.to_string()).collect()),
                Action::Replace { reason } => ("drifted", vec![reason.clone()]),
                Action::Delete => ("drifted", vec!["not part of the stack".into()]),
            };
            ResourceStatus {
                kind: change.kind.as_str(),
                name: change.name.clone(),
                state,
                details,
            }
        })
        .collect();
    // An index being backfilled is not a change to make: it ends by itself,
    // and queries on it fail until then (aws-facts.md §11).
    for resource in &mut resources {
        let backfilling = actual
            .tables
            .get(&resource.name)
            .and_then(|found| found.ours())
            .map(|table| table.backfilling_indexes.clone())
            .unwrap_or_default();
        if resource.kind == "table" && !backfilling.is_empty() {
            if resource.state == "present" {
                resource.state = "backfilling";
            }
            resource.details.push(format!(
                "index {} backfilling: queries on it fail until it is ACTIVE",
                backfilling.join(", ")
            ));
        }
    }
    // The secret's versions, never its value.
    for resource in resources
        .iter_mut()
        .filter(|r| r.kind == "secret" && r.state != "missing")
    {
        match crate::stack::secret::version_details(&session.aws, names).await {
            Ok(details) => resource.details.extend(details),
            Err(err) => resource.details.push(format!("versions unknown: {err:#}")),
        }
    }
    // Each alarm's state; one in ALARM is not healthy (exit 3). The topic's
    // email subscriptions nobody confirmed yet (SNS sends nothing to them).
    for resource in &mut resources {
        match resource.kind {
            "alarm" => {
                if let Some(alarm) = actual.alarms.get(&resource.name).and_then(|f| f.ours()) {
                    resource.details.push(format!("state {}", alarm.state));
                    if alarm.state == "ALARM" && resource.state == "present" {
                        resource.state = "alarm";
                    }
                }
            }
            "topic" => {
                for (email, confirmed) in actual.topic.ours().map(|t| &t.subscriptions).into_iter().flatten() {
                    if *confirmed {
                        continue;
                    }
                    let detail = if session.settings.alarms.email.contains(email) {
                        format!("{email}: pending confirmation (see its inbox)")
                    } else {
                        format!(
                            "{email}: pending confirmation, no longer in [alarms] email (SNS drops it after 3 days)"
                        )
                    };
                    resource.details.push(detail);
                }
            }
            "release" => resource.details.push(release_detail(&actual, names)),
            "domain" => resource.details.extend(domain_details(&actual.domain, &resource.name)),
            "certificate" => {
                let owned = actual.domain.owned_certificates.iter();
                for certificate in owned.filter(|c| c.names.first() == Some(&resource.name)) {
                    resource.details.push(certificate_summary(certificate));
                    if certificate.status == "PENDING_VALIDATION" {
                        for (name, value) in &certificate.validation {
                            resource.details.push(format!("validation record {name} CNAME {value}"));
                        }
                    }
                }
            }
            "mapping" => {
                let domain = actual.domain.ours().into_iter().find(|d| d.name == resource.name);
                for mapping in domain.map(|d| d.mappings.as_slice()).unwrap_or_default() {
                    let path = if mapping.key.is_empty() { "/" } else { &mapping.key };
                    resource
                        .details
                        .push(format!("{path} → API {} stage {}", mapping.api_id, mapping.stage));
                }
            }
            "record" if actual.domain.zone.is_none() => {
                let target = actual.domain.ours().into_iter().find(|d| d.name == resource.name);
                let target = target
                    .and_then(|d| d.target.as_deref())
                    .unwrap_or("(the domain name's target)");
                let answer = actual.domain.by_hand.as_deref().unwrap_or("no CNAME, or not asked");
                resource.details.push(format!(
                    "by hand, no zone of the account holds it: {} CNAME {target}; the DNS answers {answer}",
                    resource.name
                ));
            }
            "record" => {
                for record in &actual.domain.records {
                    let to = record.alias.as_deref().unwrap_or("(not an alias)");
                    resource.details.push(format!("{} → {to}", record.kind));
                }
            }
            _ => {}
        }
    }
    for problem in &plan.problems {
        resources.push(ResourceStatus {
            kind: "problem",
            name: problem.clone(),
            state: "invalid",
            details: vec![],
        });
    }
    for conflict in &plan.conflicts {
        resources.push(ResourceStatus {
            kind: "conflict",
            name: conflict.clone(),
            state: "foreign",
            details: vec![],
        });
    }
    let (open_connections, open_connections_error) = match open_connections(session, &actual).await {
        OpenConnections::NoTable => (None, None),
        OpenConnections::Count(count) => (Some(count), None),
        OpenConnections::Unknown(why) => (None, Some(why)),
    };
    let healthy = resources.iter().all(|r| r.state == "present");
    let report = StatusReport {
        stack: names.stack.clone(),
        healthy,
        outputs: actual
            .api
            .ours()
            .map(|api| crate::output::Outputs::of(names, &api.id, desired.domain.as_ref())),
        resources,
        open_connections,
        open_connections_error,
    };
    if session.json {
        print_json(&report)?;
    } else {
        print_text(&report)?;
    }
    Ok(if healthy { 0 } else { EXIT_DRIFT })
}

fn print_text(report: &StatusReport) -> Result<()> {
    let mut table = comfy_table::Table::new();
    table.load_style(comfy_table::presets::NOTHING);
    table.set_header(["KIND", "NAME", "STATE", "DETAILS"]);
    for r in &report.resources {
        table.add_row([r.kind, r.name.as_str(), r.state, &r.details.join("; ")]);
    }
    outln!("{table}")?;
    if let Some(outputs) = &report.outputs {
        outln!("{outputs}")?;
    }
    match (report.open_connections, &report.open_connections_error) {
        (Some(count), _) => outln!("Open connections:  {count}")?,
        (None, Some(why)) => outln!("Open connections:  unknown ({why})")?,
        (None, None) => {}
    }
    let problems = report.resources.iter().filter(|r| r.state != "present").count();
    if report.healthy {
        outln!("Stack {} is up: every resource is present.", report.stack)?;
    } else {
        outln!(
            "Stack {}: {problems} resources missing, drifted or foreign.",
            report.stack
        )?;
    }
    Ok(())
}
