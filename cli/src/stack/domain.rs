//! The chat on a name of its own (`[domain]`): an API Gateway custom domain
//! name (REGIONAL, TLS 1.2) with a certificate, the API mapping of the stage
//! at its root, and Route 53 alias records (A and AAAA) from the name to the
//! domain name's regional target. Read, checked, diffed, applied, deleted.
//!
//! Which domain names are the stack's: the ones tagged with it. The zone
//! chatctl wrote the records in is a tag of the domain name too
//! ([`ZONE_TAG`]), so `down` finds the records without chatctl.toml.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use aws_sdk_acm::types::{CertificateStatus, Tag, ValidationMethod};
use aws_sdk_apigatewayv2::types::{DomainNameConfiguration, EndpointType, SecurityPolicy};
use aws_sdk_route53::types::{AliasTarget, ChangeAction, ChangeBatch, ChangeStatus, ResourceRecordSet, RrType};
use serde::{Deserialize, Serialize};

use super::base::{Action, Detail, Found, Kind, Polled, Report, Stack, poll, step, tag_changes, taken_if_ours};
use super::tags::{Tagged, retag};
use super::{Names, STACK_TAG};
use crate::aws::{Aws, Budget, failed, is_code, retry, retry_error};
use crate::settings::DomainSettings;

/// The domain name's tag naming the hosted zone of its records.
pub const ZONE_TAG: &str = "chatctl:zone";

/// What `[domain]` asks for, as the plan holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DomainSpec {
    /// Lowercase, without the trailing dot.
    pub name: String,
    /// The hosted zone given in chatctl.toml; else the one found.
    pub zone_id: Option<String>,
    pub certificate_arn: Option<String>,
    pub disable_execute_api: bool,
}

impl DomainSpec {
    pub fn of(settings: &DomainSettings) -> DomainSpec {
        DomainSpec {
            name: settings.name.clone(),
            zone_id: settings.zone_id.clone(),
            certificate_arn: settings.certificate_arn.clone(),
            disable_execute_api: settings.disable_execute_api,
        }
    }
}

/// An API Gateway custom domain name.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DomainState {
    pub name: String,
    pub certificate_arn: Option<String>,
    /// Where its alias records point: `d-….execute-api.REGION.amazonaws.com`
    /// and the region's API Gateway hosted zone.
    pub target: Option<String>,
    pub target_zone: Option<String>,
    /// AVAILABLE, UPDATING, PENDING_CERTIFICATE_REIMPORT, …
    pub status: Option<String>,
    pub tags: BTreeMap<String, String>,
    pub mappings: Vec<MappingState>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MappingState {
    pub id: String,
    pub api_id: String,
    pub stage: String,
    /// "" is the root.
    pub key: String,
}

/// A Route 53 hosted zone.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ZoneState {
    /// Without the `/hostedzone/` prefix.
    pub id: String,
    /// Lowercase, without the trailing dot.
    pub name: String,
    pub private: bool,
    /// The name servers Route 53 serves it from (GetHostedZone's
    /// delegation set); read only for the delegation check.
    pub name_servers: Vec<String>,
}

/// One of the name's A or AAAA records, as Route 53 has it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecordState {
    /// A or AAAA.
    pub kind: String,
    /// The alias target (lowercase, no trailing dot), when it is an alias.
    pub alias: Option<String>,
    pub alias_zone: Option<String>,
}

/// An ACM certificate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CertificateState {
    pub arn: String,
    /// ISSUED, PENDING_VALIDATION, EXPIRED, …
    pub status: String,
    /// The domain name and the subject alternative names.
    pub names: Vec<String>,
    /// Seconds since the epoch.
    pub not_after: Option<i64>,
    /// The CNAME records (name, value) DNS validation asks for, once ACM
    /// has made them.
    pub validation: Vec<(String, String)>,
    pub tags: BTreeMap<String, String>,
}

/// What exists of the stack's domain.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DomainActual {
    /// The name `[domain]` asks for.
    pub name: Option<String>,
    /// The domain name of that name, when `[domain]` asks for one.
    pub wanted: Option<Found<DomainState>>,
    /// The APIs the wanted name maps when it is not the stack's.
    pub foreign_mapped: Vec<String>,
    /// The stack's other domain names (a name `[domain]` no longer asks for).
    pub others: Vec<DomainState>,
    /// The hosted zone of the wanted name, when one was found.
    pub zone: Option<ZoneState>,
    /// The wanted name's A and AAAA records in that zone.
    pub records: Vec<RecordState>,
    /// Without a zone: what the public DNS answers for the name's CNAME
    /// record, made by hand (None when not asked: against an emulator
    /// without `CHATCTL_DNS_RESOLVER`).
    pub by_hand: Option<String>,
    /// The other domain names' records, by domain name.
    pub other_records: BTreeMap<String, (String, Vec<RecordState>)>,
    /// The certificate `[domain]` serves the name with: the one given, or
    /// the stack's own for the name.
    pub certificate: Option<CertificateState>,
    /// The certificates chatctl requested for the stack (tagged with it).
    pub owned_certificates: Vec<CertificateState>,
    /// Why `[domain]` cannot be applied as it stands (checked before any change).
    pub problems: Vec<String>,
}

impl DomainActual {
    /// The stack's own domain names.
    pub fn ours(&self) -> Vec<&DomainState> {
        let wanted = self.wanted.as_ref().and_then(|f| f.ours());
        wanted.into_iter().chain(&self.others).collect()
    }
}

/// How AWS names a domain name for tagging.
pub fn domain_arn(names: &Names, domain: &str) -> String {
    let (partition, _) = names.partition();
    format!("arn:{partition}:apigateway:{}::/domainnames/{domain}", names.region)
}

/// A DNS name as chatctl compares it: lowercase, no trailing dot, Route 53's
/// octal escape of `*` undone.
fn dns(name: &str) -> String {
    name.trim_end_matches('.').replace("\\052", "*").to_ascii_lowercase()
}

/// Whether a certificate for `pattern` (a name or a `*.` wildcard of one
/// label) covers `name`.
pub fn covers(pattern: &str, name: &str) -> bool {
    let (pattern, name) = (dns(pattern), dns(name));
    match pattern.strip_prefix("*.") {
        Some(parent) => name
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == parent),
        None => pattern == name,
    }
}

/// Whether `name` is `zone` or inside it.
pub fn in_zone(name: &str, zone: &str) -> bool {
    let (name, zone) = (dns(name), dns(zone));
    name == zone || name.ends_with(&format!(".{zone}"))
}

/// The zone among `zones` whose name is the longest suffix of `name`
/// (public zones only: a private zone answers inside a VPC, not to users).
pub fn zone_for<'a>(zones: &'a [ZoneState], name: &str) -> Option<&'a ZoneState> {
    zones
        .iter()
        .filter(|z| !z.private && in_zone(name, &z.name))
        .max_by_key(|z| z.name.len())
}

fn domain_state(domain: &aws_sdk_apigatewayv2::types::DomainName) -> DomainState {
    let tags = domain
        .tags()
        .map(|t| t.iter().map(|(k, v)| (k.clone(), v.clone())).collect());
    let name = domain.domain_name().unwrap_or_default();
    state_of(name, domain.domain_name_configurations(), tags.unwrap_or_default())
}

/// A domain name as GetDomainName and GetDomainNames answer it (two types).
fn state_of(name: &str, configurations: &[DomainNameConfiguration], tags: BTreeMap<String, String>) -> DomainState {
    let configuration = configurations.first();
    DomainState {
        name: dns(name),
        certificate_arn: configuration.and_then(|c| c.certificate_arn()).map(str::to_string),
        target: configuration.and_then(|c| c.api_gateway_domain_name()).map(dns),
        target_zone: configuration.and_then(|c| c.hosted_zone_id()).map(str::to_string),
        status: configuration
            .and_then(|c| c.domain_name_status())
            .map(|s| s.as_str().to_string()),
        tags,
        mappings: vec![],
    }
}

async fn read_mappings(aws: &Aws, domain: &str) -> Result<Vec<MappingState>> {
    super::base::all_pages(&format!("API mappings of {domain}"), |token| async move {
        let page = aws
            .apigateway
            .get_api_mappings()
            .domain_name(domain)
            .set_next_token(token)
            .send()
            .await
            .map_err(failed(format!("cannot list the API mappings of domain name {domain}")))?;
        let mappings = page
            .items()
            .iter()
            .map(|m| MappingState {
                id: m.api_mapping_id().unwrap_or_default().to_string(),
                api_id: m.api_id().unwrap_or_default().to_string(),
                stage: m.stage().unwrap_or_default().to_string(),
                key: m.api_mapping_key().unwrap_or_default().to_string(),
            })
            .collect();
        Ok((mappings, page.next_token().map(str::to_string)))
    })
    .await
}

/// Every domain name of the account in the region, with its tags.
async fn read_domain_names(aws: &Aws) -> Result<Vec<DomainState>> {
    super::base::all_pages("API Gateway domain names", |token| async move {
        let page = aws
            .apigateway
            .get_domain_names()
            .set_next_token(token)
            .send()
            .await
            .map_err(failed("cannot list API Gateway domain names"))?;
        let items = page.items().iter().map(domain_state).collect();
        Ok((items, page.next_token().map(str::to_string)))
    })
    .await
}

fn zone_state(zone: &aws_sdk_route53::types::HostedZone) -> ZoneState {
    ZoneState {
        id: zone.id().trim_start_matches("/hostedzone/").to_string(),
        name: dns(zone.name()),
        private: zone.config().is_some_and(|c| c.private_zone()),
        name_servers: vec![],
    }
}

/// The zone given by id, or the public zone whose name is the longest suffix
/// of `name`; `Ok(None)` when there is none.
async fn read_zone(aws: &Aws, spec: &DomainSpec) -> Result<Option<ZoneState>> {
    if let Some(id) = &spec.zone_id {
        return match aws.route53.get_hosted_zone().id(id).send().await {
            Ok(answer) => Ok(answer.hosted_zone().map(|zone| ZoneState {
                name_servers: answer
                    .delegation_set()
                    .map(|d| d.name_servers().iter().map(|n| dns(n)).collect())
                    .unwrap_or_default(),
                ..zone_state(zone)
            })),
            Err(err) if is_code(&err, &["NoSuchHostedZone"]) => Ok(None),
            Err(err) => Err(failed(format!("cannot read Route 53 hosted zone {id}"))(err)),
        };
    }
    let mut zones = vec![];
    let mut pages = aws.route53.list_hosted_zones().into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(failed("cannot list Route 53 hosted zones"))?;
        zones.extend(page.hosted_zones().iter().map(zone_state));
    }
    Ok(zone_for(&zones, &spec.name).cloned())
}

/// The A and AAAA records of `name` in `zone`.
/// The record sets of `zone` from `name` and `kind` on, as Route 53 lists
/// them: in order of name, then type, so the name's own come first (Route 53
/// API reference, ListResourceRecordSets).
async fn record_sets_from(aws: &Aws, zone: &str, name: &str, kind: RrType) -> Result<Vec<ResourceRecordSet>> {
    let answer = aws
        .route53
        .list_resource_record_sets()
        .hosted_zone_id(zone)
        .start_record_name(name)
        .start_record_type(kind)
        .max_items(10)
        .send()
        .await
        .map_err(failed(format!(
            "cannot list the records of {name} in hosted zone {zone}"
        )))?;
    Ok(answer.resource_record_sets().to_vec())
}

/// The A and AAAA records of `name` in `zone`.
async fn read_records(aws: &Aws, zone: &str, name: &str) -> Result<Vec<RecordState>> {
    Ok(record_sets_from(aws, zone, name, RrType::A)
        .await?
        .iter()
        .filter(|r| dns(r.name()) == name && matches!(r.r#type(), RrType::A | RrType::Aaaa))
        .map(|r| RecordState {
            kind: r.r#type().as_str().to_string(),
            alias: r.alias_target().map(|a| dns(a.dns_name())),
            alias_zone: r.alias_target().map(|a| a.hosted_zone_id().to_string()),
        })
        .collect())
}

async fn read_certificate(aws: &Aws, arn: &str) -> Result<Option<CertificateState>> {
    let answer = match aws.acm.describe_certificate().certificate_arn(arn).send().await {
        Ok(answer) => answer,
        Err(err) if is_code(&err, &["ResourceNotFoundException"]) => return Ok(None),
        Err(err) => return Err(failed(format!("cannot read ACM certificate {arn}"))(err)),
    };
    let Some(detail) = answer.certificate() else {
        return Ok(None);
    };
    let mut names: Vec<String> = detail.domain_name().map(dns).into_iter().collect();
    for other in detail.subject_alternative_names() {
        if !names.contains(&dns(other)) {
            names.push(dns(other));
        }
    }
    let validation = detail
        .domain_validation_options()
        .iter()
        .filter_map(|option| option.resource_record())
        .map(|record| (dns(record.name()), dns(record.value())))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    Ok(Some(CertificateState {
        arn: arn.to_string(),
        status: detail.status().map(|s| s.as_str().to_string()).unwrap_or_default(),
        names,
        not_after: detail.not_after().map(|t| t.secs()),
        validation,
        tags: BTreeMap::new(),
    }))
}

/// Every status a certificate can have: ListCertificates answers only
/// those it is asked for.
const CERTIFICATE_STATUSES: [CertificateStatus; 7] = [
    CertificateStatus::PendingValidation,
    CertificateStatus::Issued,
    CertificateStatus::Inactive,
    CertificateStatus::Expired,
    CertificateStatus::ValidationTimedOut,
    CertificateStatus::Revoked,
    CertificateStatus::Failed,
];

async fn certificate_tags(aws: &Aws, arn: &str) -> Result<BTreeMap<String, String>> {
    let tags = aws
        .acm
        .list_tags_for_certificate()
        .certificate_arn(arn)
        .send()
        .await
        .map_err(failed(format!("cannot read the tags of ACM certificate {arn}")))?;
    Ok(tags
        .tags()
        .iter()
        .map(|t| (t.key().to_string(), t.value().unwrap_or_default().to_string()))
        .collect())
}

/// The certificates of the account for one of `names` that are tagged with
/// the stack: the ones chatctl requested.
async fn read_owned_certificates(aws: &Aws, stack: &str, names: &[String]) -> Result<Vec<CertificateState>> {
    let mut arns = vec![];
    let mut pages = aws
        .acm
        .list_certificates()
        .set_certificate_statuses(Some(CERTIFICATE_STATUSES.to_vec()))
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(failed("cannot list ACM certificates"))?;
        for summary in page.certificate_summary_list() {
            let name = summary.domain_name().map(dns).unwrap_or_default();
            if names.contains(&name)
                && let Some(arn) = summary.certificate_arn()
            {
                arns.push(arn.to_string());
            }
        }
    }
    let mut owned = vec![];
    for arn in arns {
        let tags = certificate_tags(aws, &arn).await?;
        if tags.get(STACK_TAG).map(String::as_str) != Some(stack) {
            continue;
        }
        if let Some(mut certificate) = read_certificate(aws, &arn).await? {
            certificate.tags = tags;
            owned.push(certificate);
        }
    }
    Ok(owned)
}

impl DomainActual {
    /// The stack's own certificate for `name` that can serve it: an issued
    /// one, else one still being validated.
    pub fn owned_certificate(&self, name: &str) -> Option<&CertificateState> {
        let of = |status: &str| {
            self.owned_certificates
                .iter()
                .find(|c| c.status == status && c.names.first().map(String::as_str) == Some(name))
        };
        of("ISSUED").or_else(|| of("PENDING_VALIDATION"))
    }
}

/// The DNS resolver of the delegation check, `IP` or `IP:PORT`, instead of
/// the system's.
pub const RESOLVER_VAR: &str = "CHATCTL_DNS_RESOLVER";

/// A resolver of the public DNS: this machine's, or the one
/// `CHATCTL_DNS_RESOLVER` names. A new one for each question, so that no
/// answer is taken from its cache.
fn resolver() -> Result<hickory_resolver::TokioResolver> {
    use hickory_resolver::Resolver;
    use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig};
    use hickory_resolver::name_server::TokioConnectionProvider;
    Ok(match std::env::var(RESOLVER_VAR) {
        Ok(text) => {
            let address: std::net::SocketAddr = text
                .parse()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(|ip| (ip, 53).into()))
                .with_context(|| format!("{RESOLVER_VAR}={text:?} is not IP or IP:PORT"))?;
            let servers = NameServerConfigGroup::from_ips_clear(&[address.ip()], address.port(), true);
            let config = ResolverConfig::from_parts(None, vec![], servers);
            Resolver::builder_with_config(config, TokioConnectionProvider::default()).build()
        }
        Err(_) => Resolver::builder_tokio()
            .context("cannot read this machine's DNS configuration")?
            .build(),
    })
}

/// The name servers the public DNS gives for `zone`: `Ok(None)` when it
/// has none (NXDOMAIN, no NS records).
async fn public_name_servers(zone: &str) -> Result<Option<Vec<String>>> {
    match resolver()?.ns_lookup(format!("{zone}.")).await {
        Ok(answer) => Ok(Some(answer.iter().map(|ns| dns(&ns.0.to_ascii())).collect())),
        Err(err) if err.is_no_records_found() => Ok(None),
        Err(err) => bail!("cannot ask the DNS which name servers serve {zone}: {err}"),
    }
}

/// What the public DNS answers for `name`'s CNAME record, if anything.
async fn public_cname(name: &str) -> Result<Option<String>> {
    use hickory_resolver::proto::rr::{RData, RecordType};
    match resolver()?.lookup(format!("{name}."), RecordType::CNAME).await {
        Ok(answer) => Ok(answer.iter().find_map(|rdata| match rdata {
            RData::CNAME(target) => Some(dns(&target.0.to_ascii())),
            _ => None,
        })),
        Err(err) if err.is_no_records_found() => Ok(None),
        Err(err) => bail!("cannot ask the DNS for the CNAME record of {name}: {err}"),
    }
}

/// How long `up` waits for a record made by hand to be answered by the DNS.
const BY_HAND_WITHIN: Duration = Duration::from_secs(30 * 60);

/// Waits until the public DNS answers `name` CNAME `target`, a record
/// the user makes at their DNS provider.
async fn wait_for_cname(name: &str, target: &str) -> Result<()> {
    poll(BY_HAND_WITHIN, || async {
        Ok(match public_cname(name).await? {
            Some(answer) if answer == target => Polled::Ready(()),
            answer => Polled::Waiting(format!(
                "the DNS still answers {} for {name} after {} min, not CNAME {target}: create that record where \
                 {name} is served, then run `chatctl up` again",
                answer.map_or_else(|| "no CNAME".to_string(), |a| format!("CNAME {a}")),
                BY_HAND_WITHIN.as_secs() / 60
            )),
        })
    })
    .await
}

/// Why ACM would never see the validation record in `zone`: the public DNS
/// does not send queries for the zone to the name servers Route 53 serves it
/// from (the registrar names others). ACM would leave the certificate
/// PENDING_VALIDATION, for hours (anomalyco/sst #5781, #4946).
fn delegation_problem(zone: &ZoneState, public: Option<&[String]>) -> Option<String> {
    let ours: std::collections::BTreeSet<&str> = zone.name_servers.iter().map(String::as_str).collect();
    let fix = format!(
        "set the name servers of {} at its registrar (or its parent zone) to {}, then run `chatctl up` again \
         (or give a certificate_arn validated some other way)",
        zone.name,
        zone.name_servers.join(", ")
    );
    match public {
        None => Some(format!(
            "the public DNS has no name servers for {}: ACM could not validate a certificate through hosted zone {}; {fix}",
            zone.name, zone.id
        )),
        Some(public) if public.iter().any(|ns| ours.contains(ns.as_str())) => None,
        Some(public) => Some(format!(
            "the public DNS sends {} to {}, not to hosted zone {} ({}): ACM would never see the validation record \
             and the certificate would stay PENDING_VALIDATION; {fix}",
            zone.name,
            public.join(", "),
            zone.id,
            zone.name_servers.join(", ")
        )),
    }
}

/// Whether to check the delegation: against AWS, or an emulator when a
/// resolver is named (the public DNS knows nothing of an emulator's zones).
fn checks_delegation(aws: &Aws) -> bool {
    let local = aws.sdk.endpoint_url().is_some_and(crate::aws::is_local_endpoint);
    !local || std::env::var_os(RESOLVER_VAR).is_some()
}

/// Reads the stack's domain names, and with `[domain]`, the zone, records and
/// certificate it names, with what stops it from being applied.
pub async fn read_domain(aws: &Aws, names: &Names, spec: Option<&DomainSpec>) -> Result<DomainActual> {
    let all = read_domain_names(aws).await?;
    let mut actual = DomainActual::default();
    let ours = |d: &DomainState| d.tags.get(STACK_TAG).map(String::as_str) == Some(names.stack.as_str());
    for mut domain in all {
        let wanted = spec.is_some_and(|s| s.name == domain.name);
        if !wanted && !ours(&domain) {
            continue;
        }
        domain.mappings = read_mappings(aws, &domain.name).await?;
        if wanted {
            if !ours(&domain) {
                actual.foreign_mapped = domain.mappings.iter().map(|m| m.api_id.clone()).collect();
            }
            let tag = domain.tags.get(STACK_TAG).cloned();
            actual.wanted = Some(Found::classify(&names.stack, tag.as_deref(), domain));
        } else {
            if let Some(zone) = domain.tags.get(ZONE_TAG) {
                let records = read_records(aws, zone, &domain.name).await?;
                actual
                    .other_records
                    .insert(domain.name.clone(), (zone.clone(), records));
            }
            actual.others.push(domain);
        }
    }
    let mut candidates: Vec<String> = actual.others.iter().map(|d| d.name.clone()).collect();
    candidates.extend(spec.map(|s| s.name.clone()));
    // A stack without a domain has no certificate to look for.
    if !candidates.is_empty() {
        actual.owned_certificates = read_owned_certificates(aws, &names.stack, &candidates).await?;
    }
    let Some(spec) = spec else {
        return Ok(actual);
    };
    actual.name = Some(spec.name.clone());
    let wanted = actual.wanted.get_or_insert(Found::Missing);
    let (zone, certificate) = tokio::try_join!(read_zone(aws, spec), async {
        match &spec.certificate_arn {
            Some(arn) => read_certificate(aws, arn).await,
            None => Ok(None),
        }
    })?;
    match &zone {
        Some(zone) => actual.records = read_records(aws, &zone.id, &spec.name).await?,
        None if checks_delegation(aws) => actual.by_hand = public_cname(&spec.name).await?,
        None => {}
    }
    let found = (&*wanted, actual.foreign_mapped.as_slice());
    actual.problems = problems(names, spec, found, zone.as_ref(), certificate.as_ref(), &actual.records);
    actual.zone = zone;
    actual.certificate = certificate.or_else(|| actual.owned_certificate(&spec.name).cloned());
    // Before a certificate is validated through the zone: the zone must be
    // the one the public DNS asks.
    let validates = spec.certificate_arn.is_none() && actual.certificate.as_ref().is_none_or(|c| c.status != "ISSUED");
    if let Some(zone) = actual.zone.as_mut().filter(|_| validates && checks_delegation(aws)) {
        if zone.name_servers.is_empty() {
            let answer = aws
                .route53
                .get_hosted_zone()
                .id(&zone.id)
                .send()
                .await
                .map_err(failed(format!("cannot read Route 53 hosted zone {}", zone.id)))?;
            let servers = answer.delegation_set().map(|d| d.name_servers()).unwrap_or_default();
            zone.name_servers = servers.iter().map(|n| dns(n)).collect();
        }
        let public = public_name_servers(&zone.name).await?;
        actual.problems.extend(delegation_problem(zone, public.as_deref()));
    }
    Ok(actual)
}

/// Why `[domain]` cannot be applied: each a sentence that says what to do.
pub fn problems(
    names: &Names,
    spec: &DomainSpec,
    (domain, foreign_mapped): (&Found<DomainState>, &[String]),
    zone: Option<&ZoneState>,
    certificate: Option<&CertificateState>,
    records: &[RecordState],
) -> Vec<String> {
    let mut problems = vec![];
    let name = &spec.name;
    match (zone, &spec.zone_id) {
        (None, Some(id)) => problems.push(format!(
            "[domain] zone_id {id}: Route 53 has no such hosted zone in this account; \
             give the id of the zone that holds {name}"
        )),
        // No zone of the account: the records are made by hand.
        (None, None) => {}
        (Some(zone), _) if !in_zone(name, &zone.name) => problems.push(format!(
            "[domain] zone_id {}: the zone is {}, which does not contain {name}; give the zone that holds it",
            zone.id, zone.name
        )),
        (Some(zone), Some(_)) if zone.private => problems.push(format!(
            "[domain] zone_id {}: the zone {} is private (answers only inside its VPCs); give a public zone",
            zone.id, zone.name
        )),
        _ => {}
    }
    match (&spec.certificate_arn, certificate) {
        // chatctl requests one (its validation record goes in the zone).
        (None, _) => {}
        (Some(arn), _) if arn.split(':').nth(3) != Some(names.region.as_str()) => problems.push(format!(
            "[domain] certificate_arn {arn} is in region {}, the stack in {}: a REGIONAL domain name needs \
             a certificate of its own region; request or import one there",
            arn.split(':').nth(3).unwrap_or("?"),
            names.region
        )),
        (Some(arn), None) => problems.push(format!(
            "[domain] certificate_arn {arn}: ACM has no such certificate in this account"
        )),
        (Some(arn), Some(cert)) => {
            if !cert.names.iter().any(|pattern| covers(pattern, name)) {
                problems.push(format!(
                    "[domain] certificate_arn {arn} is for {}, not {name}; give a certificate that covers {name}",
                    cert.names.join(", ")
                ));
            }
            if cert.status != "ISSUED" {
                problems.push(format!(
                    "[domain] certificate_arn {arn} is {}, not ISSUED; API Gateway takes only an issued certificate",
                    cert.status
                ));
            }
        }
    }
    match domain {
        Found::Foreign(tag) => {
            let owner = match tag {
                Some(stack) => format!("belongs to stack {stack:?}"),
                None => "was not created by chatctl".to_string(),
            };
            let mapped = if foreign_mapped.is_empty() {
                String::new()
            } else {
                format!(", mapped to API {}", foreign_mapped.join(", "))
            };
            problems.push(format!(
                "API Gateway domain name {name} exists and {owner}{mapped}; chatctl leaves it alone: \
                 choose another [domain] name or remove it"
            ));
        }
        Found::Ours(_) | Found::Missing => {}
    }
    // A record chatctl did not write is never overwritten. Once the domain
    // name is the stack's, the name's records are the ones it wrote, and a
    // change to them is drift that `up` undoes.
    for record in records.iter().filter(|_| domain.ours().is_none()) {
        problems.push(format!(
            "Route 53 already has an {} record for {name}{}; chatctl does not overwrite records it did not \
             write: delete it, or choose another [domain] name",
            record.kind,
            record
                .alias
                .as_ref()
                .map(|a| format!(" (alias to {a})"))
                .unwrap_or_default()
        ));
    }
    problems
}

/// The tags of the stack's domain name: the stack's, and the zone of its records.
fn domain_tags(tags: &BTreeMap<String, String>, zone: Option<&str>) -> BTreeMap<String, String> {
    let mut tags = tags.clone();
    if let Some(zone) = zone {
        tags.insert(ZONE_TAG.to_string(), zone.to_string());
    }
    tags
}

/// The steps of the domain: its name, the mapping, the records; and the
/// deletion of the stack's domain names `[domain]` no longer asks for.
/// `api` is the live API's id and stage (None while the API is to be made).
pub fn domain_changes(
    spec: Option<&DomainSpec>,
    actual: &DomainActual,
    api: Option<(&str, &str)>,
    tags: &BTreeMap<String, String>,
) -> Vec<super::base::Change> {
    let change = |kind: Kind, name: &str, id: Option<&str>, action: Action| super::base::Change {
        kind,
        name: name.to_string(),
        id: id.map(str::to_string),
        action,
    };
    let mut changes = vec![];
    for other in &actual.others {
        if let Some((_, records)) = actual.other_records.get(&other.name)
            && !records.is_empty()
        {
            changes.push(change(Kind::Record, &other.name, None, Action::Delete));
        }
        for mapping in &other.mappings {
            changes.push(change(Kind::Mapping, &other.name, Some(&mapping.id), Action::Delete));
        }
        changes.push(change(Kind::Domain, &other.name, None, Action::Delete));
    }
    // The stack's certificates `[domain]` no longer serves with go last.
    let owned = spec
        .filter(|s| s.certificate_arn.is_none())
        .and_then(|s| actual.owned_certificate(&s.name));
    let unused_certificates = actual
        .owned_certificates
        .iter()
        .filter(|c| Some(&c.arn) != owned.map(|o| &o.arn))
        .map(|c| {
            let name = c.names.first().map(String::as_str).unwrap_or_default();
            change(Kind::Certificate, name, Some(&c.arn), Action::Delete)
        })
        .collect::<Vec<_>>();
    let Some(spec) = spec else {
        changes.extend(unused_certificates);
        return changes;
    };
    // None: no zone of the account holds the name; its records are made by hand.
    let zone = actual.zone.as_ref().map(|z| z.id.as_str());
    // The certificate chatctl requests when none is given: validated
    // through a record in the zone.
    let certificate_arn = match &spec.certificate_arn {
        Some(arn) => Some(arn.clone()),
        None => {
            let action = match owned {
                None => Action::Create,
                Some(c) if c.status == "ISSUED" => Action::NoChange,
                Some(_) => Action::Update {
                    changes: vec![Detail::Validation],
                },
            };
            changes.push(change(
                Kind::Certificate,
                &spec.name,
                owned.map(|c| c.arn.as_str()),
                action,
            ));
            owned.map(|c| c.arn.clone())
        }
    };
    let wanted = actual.wanted.as_ref().and_then(|f| f.ours());
    let domain_action = match wanted {
        None => Action::Create,
        Some(domain) => {
            let mut details = vec![];
            if domain.certificate_arn != certificate_arn || certificate_arn.is_none() {
                details.push(Detail::Certificate {
                    from: domain.certificate_arn.clone(),
                    to: certificate_arn
                        .clone()
                        .unwrap_or_else(|| "the certificate requested".into()),
                });
            }
            details.extend(tag_changes(&domain.tags, &domain_tags(tags, zone)));
            Action::update_or_nothing(details)
        }
    };
    changes.push(change(Kind::Domain, &spec.name, None, domain_action));

    let root = wanted.and_then(|d| d.mappings.iter().find(|m| m.key.is_empty()));
    let mapping_action = match (root, api) {
        (None, _) => Action::Create,
        (Some(m), Some((api_id, stage))) if m.api_id == api_id && m.stage == stage => Action::NoChange,
        (Some(m), _) => Action::Update {
            changes: vec![Detail::MappingTarget {
                from: format!("{}/{}", m.api_id, m.stage),
            }],
        },
    };
    changes.push(change(
        Kind::Mapping,
        &spec.name,
        root.map(|m| m.id.as_str()),
        mapping_action,
    ));
    // Other mappings on the stack's domain name (paths chatctl never made).
    for extra in wanted.iter().flat_map(|d| &d.mappings).filter(|m| !m.key.is_empty()) {
        changes.push(change(Kind::Mapping, &spec.name, Some(&extra.id), Action::Delete));
    }

    let target = wanted.and_then(|d| d.target.as_deref());
    let record_ok = |kind: &str| {
        actual
            .records
            .iter()
            .any(|r| r.kind == kind && r.alias.as_deref() == target && target.is_some())
    };
    let record_action = if zone.is_none() {
        match (&actual.by_hand, target) {
            (Some(answer), Some(target)) if answer == target => Action::NoChange,
            _ => Action::Create,
        }
    } else if actual.records.is_empty() {
        Action::Create
    } else if record_ok("A") && record_ok("AAAA") {
        Action::NoChange
    } else {
        Action::Update {
            changes: vec![Detail::AliasTarget],
        }
    };
    changes.push(change(Kind::Record, &spec.name, zone, record_action));
    changes.extend(unused_certificates);
    changes
}

/// Domain name writes that may meet a change still being made to it
/// (TooManyRequests is API Gateway's answer to writes in quick succession,
/// aws-facts.md §10).
const DOMAIN_WRITES: Budget = Budget::new(Duration::from_secs(60));

fn too_many<E: aws_sdk_apigatewayv2::error::ProvideErrorMetadata, R>(
    err: &aws_sdk_apigatewayv2::error::SdkError<E, R>,
) -> bool {
    is_code(err, &["TooManyRequestsException"])
}

fn configuration(certificate_arn: &str) -> DomainNameConfiguration {
    DomainNameConfiguration::builder()
        .certificate_arn(certificate_arn)
        // WebSocket APIs take only REGIONAL domain names (API Gateway
        // developer guide, "Custom domain names for WebSocket APIs").
        .endpoint_type(EndpointType::Regional)
        .security_policy(SecurityPolicy::Tls12)
        .build()
}

/// Creates or updates the domain name; returns it as it then is.
pub async fn apply_domain(
    aws: &Aws,
    stack: Stack<'_>,
    (name, certificate): (&str, &str),
    zone: Option<&str>,
    action: &Action,
    report: Report<'_>,
) -> Result<DomainState> {
    match action {
        Action::Create => {
            let tags: HashMap<String, String> = domain_tags(stack.tags, zone).into_iter().collect();
            let created = retry(DOMAIN_WRITES, too_many, || {
                aws.apigateway
                    .create_domain_name()
                    .domain_name(name)
                    .domain_name_configurations(configuration(certificate))
                    .set_tags(Some(tags.clone()))
                    .send()
            })
            .await;
            match created {
                Ok(_) => {}
                // The answer to a create was lost and the SDK sent it again
                // (aws-facts.md §10, "lost answers").
                Err((err, false)) if is_code(&err, &["ConflictException"]) => {
                    let found = read_domain_names(aws)
                        .await?
                        .into_iter()
                        .find(|d| d.name == name)
                        .map(|d| {
                            let tag = d.tags.get(STACK_TAG).cloned();
                            Found::classify(&stack.names.stack, tag.as_deref(), d)
                        })
                        .unwrap_or(Found::Missing);
                    taken_if_ours(&found, "API Gateway domain name", name)?;
                }
                Err(err) => {
                    return Err(retry_error(
                        format!("cannot create API Gateway domain name {name}"),
                        DOMAIN_WRITES,
                        "run `chatctl up` again",
                        err,
                    ));
                }
            }
            step(report, Kind::Domain, name, "created");
        }
        Action::Update { changes } => {
            for change in changes {
                match change {
                    Detail::Certificate { .. } => {
                        retry(DOMAIN_WRITES, too_many, || {
                            aws.apigateway
                                .update_domain_name()
                                .domain_name(name)
                                .domain_name_configurations(configuration(certificate))
                                .send()
                        })
                        .await
                        .map_err(|err| {
                            retry_error(
                                format!("cannot change the certificate of domain name {name}"),
                                DOMAIN_WRITES,
                                "run `chatctl up` again",
                                err,
                            )
                        })?;
                    }
                    Detail::Tags { set, remove } => {
                        retag(aws, Tagged::DomainName(&domain_arn(stack.names, name)), set, remove).await?;
                    }
                    _ => {}
                }
            }
            step(report, Kind::Domain, name, "updated");
        }
        _ => {}
    }
    let domain = aws
        .apigateway
        .get_domain_name()
        .domain_name(name)
        .send()
        .await
        .map_err(failed(format!("cannot read API Gateway domain name {name}")))?;
    Ok(state_of(name, domain.domain_name_configurations(), BTreeMap::new()))
}

/// How long ACM takes to show the validation record of a new certificate:
/// DescribeCertificate answers without ResourceRecord for a few seconds
/// after RequestCertificate (terraform-provider-aws waits for it too).
const VALIDATION_RECORD_SHOWN: Duration = Duration::from_secs(120);

/// How long `up` waits for ACM to issue a certificate once its validation
/// record is in the zone: usually minutes (ACM user guide, "DNS
/// validation"); when the registrar does not delegate to the zone, never
/// (sst #5781: a build hung 2 h).
const ISSUED_WITHIN: Duration = Duration::from_secs(30 * 60);

/// A new certificate's idempotency token: the same request sent again
/// within an hour (a lost answer) gets the same certificate back (ACM API
/// reference, RequestCertificate). Letters and digits, at most 32.
fn idempotency_token(names: &Names, name: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("{}/{}/{}/{name}", names.account, names.region, names.stack));
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// Requests the certificate (Create), writes its validation record in the
/// zone and waits until ACM issues it; returns its ARN.
pub async fn apply_certificate(
    aws: &Aws,
    stack: Stack<'_>,
    change: &super::base::Change,
    zone: Option<&str>,
    report: Report<'_>,
) -> Result<String> {
    let name = change.name.as_str();
    let arn = match &change.action {
        Action::NoChange => return super::base::live_id(change),
        Action::Create => {
            let tags: Vec<Tag> = domain_tags(stack.tags, zone)
                .into_iter()
                .map(|(key, value)| Tag::builder().key(key).value(value).build())
                .collect::<std::result::Result<_, _>>()?;
            let requested = aws
                .acm
                .request_certificate()
                .domain_name(name)
                .validation_method(ValidationMethod::Dns)
                .idempotency_token(idempotency_token(stack.names, name))
                .set_tags(Some(tags))
                .send()
                .await
                .map_err(failed(format!("cannot request an ACM certificate for {name}")))?;
            let arn = requested
                .certificate_arn()
                .context("RequestCertificate answered without a certificate ARN")?
                .to_string();
            step(report, Kind::Certificate, name, format!("requested ({arn})"));
            arn
        }
        _ => super::base::live_id(change)?,
    };
    // The validation record, once ACM shows it.
    let validation = poll(VALIDATION_RECORD_SHOWN, || async {
        let certificate = read_certificate(aws, &arn).await?;
        Ok(match certificate {
            Some(c) if c.status == "ISSUED" || !c.validation.is_empty() => Polled::Ready(c),
            _ => Polled::Waiting(format!(
                "ACM shows no validation record for certificate {arn} after {} s; run `chatctl up` again",
                VALIDATION_RECORD_SHOWN.as_secs()
            )),
        })
    })
    .await?;
    if validation.status == "ISSUED" {
        return Ok(arn);
    }
    let records = validation.validation.iter();
    match zone {
        Some(zone) => {
            let mut batch = ChangeBatch::builder().comment(format!("chatctl: validation of {name}"));
            for (record, value) in records {
                let set = ResourceRecordSet::builder()
                    .name(record)
                    .r#type(RrType::Cname)
                    .ttl(300)
                    .resource_records(aws_sdk_route53::types::ResourceRecord::builder().value(value).build()?)
                    .build()?;
                batch = batch.changes(record_change(ChangeAction::Upsert, set)?);
            }
            let what = format!("write the validation record of {name}");
            change_records(aws, zone, batch.build()?, &what).await?;
            step(
                report,
                Kind::Record,
                &validation.validation[0].0,
                "written (certificate validation)",
            );
        }
        None => {
            for (record, value) in records {
                let todo = format!("create it where {name} is served: {record} CNAME {value}; waiting for ACM");
                step(report, Kind::Record, record, todo);
            }
        }
    }
    let zone = zone.unwrap_or("(none: records made by hand)");
    poll(ISSUED_WITHIN, || async {
        let certificate = read_certificate(aws, &arn).await?;
        let status = certificate.map(|c| c.status).unwrap_or_default();
        Ok(match status.as_str() {
            "ISSUED" => Polled::Ready(()),
            "PENDING_VALIDATION" => Polled::Waiting(format!(
                "ACM certificate {arn} for {name} is still PENDING_VALIDATION after {} min, its validation \
                 record in hosted zone {zone}: check that the registrar of the name delegates to that zone's \
                 name servers (`dig NS {name}` against `aws route53 get-hosted-zone --id {zone}`); then run \
                 `chatctl up` again to go on waiting",
                ISSUED_WITHIN.as_secs() / 60
            )),
            other => Polled::Waiting(format!(
                "ACM certificate {arn} for {name} is {other}, not ISSUED; see its details in the ACM console, \
                 then run `chatctl up` again (chatctl requests a new one)"
            )),
        })
    })
    .await?;
    step(report, Kind::Certificate, name, "issued");
    Ok(arn)
}

/// How long a deleted domain name keeps its certificate in use: minutes,
/// up to 20 (aws-cdk #36265; serverless-domain-manager #32: "10-20
/// minutes"); terraform-provider-aws retries the deletion for 10 (#3868).
const CERTIFICATE_RELEASED: Budget = Budget::new(Duration::from_secs(20 * 60));

/// Deletes a certificate chatctl requested, once no domain name uses it;
/// with `records`, its validation records too (a certificate for the same
/// name shares them, so `up` replacing one keeps them).
pub async fn delete_certificate(aws: &Aws, arn: &str, records: bool) -> Result<()> {
    let Some(certificate) = read_certificate(aws, arn).await? else {
        return Ok(());
    };
    let tags = certificate_tags(aws, arn).await?;
    let zone = tags.get(ZONE_TAG);
    if let (true, Some(zone)) = (records, zone) {
        for (name, value) in &certificate.validation {
            let sets = record_sets_from(aws, zone, name, RrType::Cname).await?;
            // A deletion names the record exactly as it is; one changed by
            // someone else is left alone.
            let Some(set) = sets.iter().find(|r| {
                dns(r.name()) == *name
                    && r.r#type() == &RrType::Cname
                    && r.resource_records().iter().any(|v| dns(v.value()) == *value)
            }) else {
                continue;
            };
            let batch = ChangeBatch::builder()
                .changes(record_change(ChangeAction::Delete, set.clone())?)
                .build()?;
            change_records(aws, zone, batch, &format!("delete the validation record {name}")).await?;
        }
    }
    let deleted = retry(
        CERTIFICATE_RELEASED,
        |err| is_code(err, &["ResourceInUseException"]),
        || aws.acm.delete_certificate().certificate_arn(arn).send(),
    )
    .await;
    match deleted {
        Ok(_) => Ok(()),
        Err((err, _)) if is_code(&err, &["ResourceNotFoundException"]) => Ok(()),
        Err(err) => Err(retry_error(
            format!("cannot delete ACM certificate {arn}"),
            CERTIFICATE_RELEASED,
            "API Gateway has not released it yet; run the command again later",
            err,
        )),
    }
}

/// Maps the stage at the root of the domain name, or moves the mapping to it.
pub async fn apply_mapping(
    aws: &Aws,
    change: &super::base::Change,
    (api_id, stage): (&str, &str),
    report: Report<'_>,
) -> Result<()> {
    let name = change.name.as_str();
    match &change.action {
        Action::Create => {
            let created = retry(DOMAIN_WRITES, too_many, || {
                aws.apigateway
                    .create_api_mapping()
                    .domain_name(name)
                    .api_id(api_id)
                    .stage(stage)
                    .send()
            })
            .await;
            match created {
                Ok(_) => {}
                // A lost answer: the mapping is there, to this stage.
                Err((err, false)) if is_code(&err, &["ConflictException"]) => {
                    let mappings = read_mappings(aws, name).await?;
                    if !mappings
                        .iter()
                        .any(|m| m.key.is_empty() && m.api_id == api_id && m.stage == stage)
                    {
                        bail!(
                            "domain name {name} was mapped meanwhile to another API; run `chatctl up` again to see it"
                        );
                    }
                }
                Err(err) => {
                    return Err(retry_error(
                        format!("cannot map API {api_id} stage {stage} to domain name {name}"),
                        DOMAIN_WRITES,
                        "run `chatctl up` again",
                        err,
                    ));
                }
            }
            step(report, Kind::Mapping, name, format!("mapped to {stage}"));
        }
        Action::Update { .. } => {
            let id = super::base::live_id(change)?;
            retry(DOMAIN_WRITES, too_many, || {
                aws.apigateway
                    .update_api_mapping()
                    .domain_name(name)
                    .api_mapping_id(&id)
                    .api_id(api_id)
                    .stage(stage)
                    .send()
            })
            .await
            .map_err(|err| {
                retry_error(
                    format!("cannot move the API mapping of domain name {name}"),
                    DOMAIN_WRITES,
                    "run `chatctl up` again",
                    err,
                )
            })?;
            step(report, Kind::Mapping, name, format!("mapped to {stage}"));
        }
        _ => {}
    }
    Ok(())
}

/// How long Route 53 takes to make a change INSYNC on all its name servers:
/// usually within 60 s (Route 53 API reference, GetChange).
const RECORDS_IN_SYNC: Duration = Duration::from_secs(300);

/// Route 53 takes one change batch of a zone at a time and refuses a second
/// meanwhile with PriorRequestNotComplete (Route 53 API reference, Errors).
const RECORD_WRITES: Budget = Budget::new(Duration::from_secs(60));

/// One change of a record set.
fn record_change(action: ChangeAction, set: ResourceRecordSet) -> Result<aws_sdk_route53::types::Change> {
    Ok(aws_sdk_route53::types::Change::builder()
        .action(action)
        .resource_record_set(set)
        .build()?)
}

/// An alias record of `name` to a domain name's regional target.
fn alias_record(kind: RrType, name: &str, target: &str, target_zone: &str) -> Result<ResourceRecordSet> {
    let alias = AliasTarget::builder()
        .hosted_zone_id(target_zone)
        .dns_name(target)
        .evaluate_target_health(false)
        .build()?;
    Ok(ResourceRecordSet::builder()
        .name(name)
        .r#type(kind)
        .alias_target(alias)
        .build()?)
}

fn alias_records(action: ChangeAction, name: &str, target: &str, target_zone: &str) -> Result<ChangeBatch> {
    let mut batch = ChangeBatch::builder().comment(format!("chatctl: {name}"));
    for kind in [RrType::A, RrType::Aaaa] {
        batch = batch.changes(record_change(
            action.clone(),
            alias_record(kind, name, target, target_zone)?,
        )?);
    }
    Ok(batch.build()?)
}

/// Writes one change batch and waits until Route 53 serves it everywhere.
async fn change_records(aws: &Aws, zone: &str, batch: ChangeBatch, what: &str) -> Result<()> {
    let answer = retry(
        RECORD_WRITES,
        |err| is_code(err, &["PriorRequestNotComplete", "Throttling"]),
        || {
            aws.route53
                .change_resource_record_sets()
                .hosted_zone_id(zone)
                .change_batch(batch.clone())
                .send()
        },
    )
    .await
    .map_err(|err| retry_error(format!("cannot {what}"), RECORD_WRITES, "run the command again", err))?;
    let Some(change) = answer.change_info().map(|c| c.id().to_string()) else {
        return Ok(());
    };
    poll(RECORDS_IN_SYNC, || async {
        let answer = aws
            .route53
            .get_change()
            .id(&change)
            .send()
            .await
            .map_err(failed(format!("cannot read Route 53 change {change}")))?;
        let status = answer.change_info().map(|c| c.status().clone());
        Ok(match status {
            Some(ChangeStatus::Insync) | None => Polled::Ready(()),
            Some(other) => Polled::Waiting(format!(
                "Route 53 change {change} ({what}) is still {} after {} s; it will finish by itself, \
                 run the command again later",
                other.as_str(),
                RECORDS_IN_SYNC.as_secs()
            )),
        })
    })
    .await
}

/// Points the name's A and AAAA records at the domain name (UPSERT: the
/// plan has checked that any record there is chatctl's).
pub async fn apply_records(
    aws: &Aws,
    change: &super::base::Change,
    domain: &DomainState,
    report: Report<'_>,
) -> Result<()> {
    if !matches!(change.action, Action::Create | Action::Update { .. }) {
        return Ok(());
    }
    let (Some(target), Some(target_zone)) = (&domain.target, &domain.target_zone) else {
        bail!(
            "API Gateway domain name {} has no regional target yet; run `chatctl up` again",
            domain.name
        );
    };
    let Some(zone) = &change.id else {
        // No zone of the account: the user makes the record.
        let name = &change.name;
        step(
            report,
            Kind::Record,
            name,
            format!("create it where {name} is served: {name} CNAME {target}"),
        );
        if checks_delegation(aws) {
            wait_for_cname(name, target).await?;
            step(report, Kind::Record, name, "answered by the DNS");
        }
        return Ok(());
    };
    let batch = alias_records(ChangeAction::Upsert, &change.name, target, target_zone)?;
    change_records(aws, zone, batch, &format!("point {} at {target}", change.name)).await?;
    step(report, Kind::Record, &change.name, format!("A/AAAA → {target}"));
    Ok(())
}

/// Deletes a domain name of the stack's: its records (those aliasing it,
/// in the zone its tag names), its mappings, then itself, in the order AWS
/// accepts; whatever is already gone is skipped, so an interrupted `down`
/// converges.
pub async fn delete_domain(aws: &Aws, name: &str) -> Result<()> {
    let domain = match aws.apigateway.get_domain_name().domain_name(name).send().await {
        Ok(answer) => answer,
        Err(err) if is_code(&err, &["NotFoundException"]) => return Ok(()),
        Err(err) => return Err(failed(format!("cannot read API Gateway domain name {name}"))(err)),
    };
    let configuration = domain.domain_name_configurations().first();
    let target = configuration.and_then(|c| c.api_gateway_domain_name()).map(dns);
    let zone = domain.tags().and_then(|t| t.get(ZONE_TAG));
    if let (Some(zone), Some(target)) = (zone, &target) {
        let records = read_records(aws, zone, name).await?;
        let mut batch = ChangeBatch::builder().comment(format!("chatctl: {name} deleted"));
        for record in records.iter().filter(|r| r.alias.as_ref() == Some(target)) {
            // A deletion names the record exactly as it is.
            let zone_of_target = record.alias_zone.clone().unwrap_or_default();
            let set = alias_record(RrType::from(record.kind.as_str()), name, target, &zone_of_target)?;
            batch = batch.changes(record_change(ChangeAction::Delete, set)?);
        }
        let batch = batch.build()?;
        if !batch.changes().is_empty() {
            change_records(aws, zone, batch, &format!("delete the records of {name}")).await?;
        }
    }
    for mapping in read_mappings(aws, name).await? {
        delete_mapping(aws, name, &mapping.id).await?;
    }
    match aws.apigateway.delete_domain_name().domain_name(name).send().await {
        Ok(_) => Ok(()),
        Err(err) if is_code(&err, &["NotFoundException"]) => Ok(()),
        Err(err) => Err(failed(format!("cannot delete API Gateway domain name {name}"))(err)),
    }
}

/// Deletes one API mapping, unless it is gone.
pub async fn delete_mapping(aws: &Aws, name: &str, id: &str) -> Result<()> {
    match aws
        .apigateway
        .delete_api_mapping()
        .domain_name(name)
        .api_mapping_id(id)
        .send()
        .await
    {
        Ok(_) => Ok(()),
        Err(err) if is_code(&err, &["NotFoundException"]) => Ok(()),
        Err(err) => Err(failed(format!("cannot delete API mapping {id} of domain name {name}"))(
            err,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_covers_its_name_and_one_label_under_its_wildcard() {
        assert!(covers("chat.example.com", "chat.example.com"));
        assert!(covers("CHAT.example.com.", "chat.example.com"));
        assert!(covers("*.example.com", "chat.example.com"));
        assert!(covers("\\052.example.com", "chat.example.com"));
        assert!(!covers("*.example.com", "a.chat.example.com"));
        assert!(!covers("*.example.com", "example.com"));
        assert!(!covers("example.com", "chat.example.com"));
    }

    #[test]
    fn the_zone_is_the_longest_public_suffix_of_the_name() {
        let zone = |id: &str, name: &str, private: bool| ZoneState {
            id: id.into(),
            name: name.into(),
            private,
            name_servers: vec![],
        };
        let zones = [
            zone("Z1", "example.com", false),
            zone("Z2", "chat.example.com", true),
            zone("Z3", "eu.example.com", false),
            zone("Z4", "ample.com", false),
        ];
        assert_eq!(zone_for(&zones, "chat.eu.example.com").unwrap().id, "Z3");
        assert_eq!(zone_for(&zones, "chat.example.com").unwrap().id, "Z1");
        assert!(zone_for(&zones, "chat.example.org").is_none());
        assert!(!in_zone("chat.myexample.com", "example.com"));
    }

    #[test]
    fn a_zone_is_delegated_to_when_the_public_dns_names_one_of_its_servers() {
        let zone = ZoneState {
            id: "Z1".into(),
            name: "example.com".into(),
            private: false,
            name_servers: vec!["ns-1.awsdns-01.org".into(), "ns-2.awsdns-02.com".into()],
        };
        let servers = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        assert_eq!(delegation_problem(&zone, Some(&servers(&["ns-2.awsdns-02.com"]))), None);
        let elsewhere = delegation_problem(&zone, Some(&servers(&["ns1.registrar.example"]))).unwrap();
        assert!(
            elsewhere.contains("sends example.com to ns1.registrar.example"),
            "{elsewhere}"
        );
        assert!(
            elsewhere.contains("to ns-1.awsdns-01.org, ns-2.awsdns-02.com"),
            "{elsewhere}"
        );
        let nowhere = delegation_problem(&zone, None).unwrap();
        assert!(nowhere.contains("no name servers for example.com"), "{nowhere}");
    }
}
