//! The base of the stack's modules, under every kind: the step types a
//! plan is made of, what a read finds, the walk over a list's pages, the
//! progress report and the poll helper. It imports no kind, so the layers
//! point one way: base ← kinds ← plan, apply, destroy ← commands.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use crate::settings::Throttling;

/// The kinds of resource a stack has, in the order `up` plans them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Table,
    Role,
    #[serde(rename = "log group")]
    LogGroup,
    Function,
    Api,
    Authorizer,
    Integration,
    Route,
    Permission,
    Stage,
    Secret,
    Topic,
    Alarm,
    Bucket,
    Release,
    /// The ACM certificate chatctl requests for `[domain]`.
    Certificate,
    /// An API Gateway custom domain name (`[domain]`).
    Domain,
    /// The API mapping of the stage on the domain name.
    Mapping,
    /// The Route 53 alias records (A, AAAA) of the domain name.
    Record,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Table => "table",
            Kind::Role => "role",
            Kind::LogGroup => "log group",
            Kind::Function => "function",
            Kind::Api => "api",
            Kind::Authorizer => "authorizer",
            Kind::Integration => "integration",
            Kind::Route => "route",
            Kind::Permission => "permission",
            Kind::Stage => "stage",
            Kind::Secret => "secret",
            Kind::Topic => "topic",
            Kind::Alarm => "alarm",
            Kind::Bucket => "bucket",
            Kind::Release => "release",
            Kind::Certificate => "certificate",
            Kind::Domain => "domain",
            Kind::Mapping => "mapping",
            Kind::Record => "record",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One difference inside a resource. `apply` acts on the variant; the text
/// is only for people.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum Detail {
    /// Table: to on-demand billing (UpdateTable).
    Billing { from: Option<String> },
    /// Table: TTL on this attribute (UpdateTimeToLive).
    Ttl { attribute: String },
    /// Table: a global secondary index to add (UpdateTable, data kept).
    AddIndex { name: String, key: String },
    /// Table: a global secondary index to delete (UpdateTable, data kept).
    DeleteIndex { name: String },
    /// Table: indexes still being built (or deleted): waited for.
    IndexNotReady { names: Vec<String> },
    /// Role: who may assume it.
    TrustPolicy,
    /// Role: its inline policy; `grants` says what changes, None while the
    /// API the policy names is still to be made.
    InlinePolicy { grants: Option<String> },
    /// Log group: how long it keeps events (None: never expire).
    Retention { from: Option<i32>, to: i32 },
    /// Function: new code (CodeSha256, live → built).
    Code { from: Option<String>, to: String },
    /// Function: another architecture, which ships with the code.
    Architecture { from: Option<String>, to: String },
    /// Function: one configuration setting (runtime, handler, memory,
    /// timeout, role).
    Setting {
        name: String,
        from: Option<String>,
        to: String,
    },
    /// Function: environment variables, by name only (values may be secrets).
    Environment { names: Vec<String> },
    /// API: its route selection expression.
    RouteSelection,
    /// Authorizer or integration: its type.
    Type { to: String },
    /// Integration: its HTTP method.
    Method,
    /// Authorizer: the function it invokes.
    AuthorizerFunction,
    /// Route: the integration it targets.
    Target,
    /// Route: its authorization type.
    Authorization { to: String },
    /// Route: the authorizer it runs.
    Authorizer,
    /// Keep-alive integration: its request template and its `$default`
    /// integration response, which answers `reply`.
    MockReply { reply: String },
    /// Keep-alive route: two-way (RouteResponseSelectionExpression and a
    /// `$default` route response).
    TwoWay,
    /// Permission: the API or authorizer allowed to invoke.
    SourceArn,
    /// Stage: serve the routes as they are now (a new deployment).
    Deployment,
    /// Stage: the throttling of every route (`route` None) or of one.
    Throttling {
        route: Option<String>,
        from: Option<Throttling>,
        to: Throttling,
    },
    /// Stage: CloudWatch metrics per route.
    DetailedMetrics { to: bool },
    /// Stage: execution logging.
    LoggingLevel { from: Option<String>, to: String },
    /// Stage: the access log turned on (or pointed at the stack's group,
    /// in its format) or off.
    AccessLogs { to: bool },
    /// Stage: a route's own throttling removed (DeleteRouteSettings).
    RouteSettingsRemoved { route: String },
    /// Function: the authorizer's token secret moves from its environment to
    /// the stack's secret in Secrets Manager, keeping its value.
    MoveTokenSecret,
    /// Topic: email addresses to subscribe and to unsubscribe.
    Subscriptions { add: Vec<String>, remove: Vec<String> },
    /// Alarm: its metrics, threshold, periods or action.
    AlarmRule,
    /// Secret: deleted with a recovery window (by hand), restored.
    RestoreSecret,
    /// Release: the functions whose alias `live` runs other code or
    /// configuration than asked: a version of each is published.
    Publish { functions: Vec<String> },
    /// Release: the live release is an older one than the latest
    /// (`chatctl rollback` moved the alias back).
    LiveNotLatest { live: u32, latest: u32 },
    /// Integration: to invoke the function's alias `live`.
    InvokeAlias,
    /// Permission: the function-wide statement of stacks from before the
    /// alias, replaced by the alias's own.
    UnqualifiedPermission,
    /// API: its own `execute-api` endpoint turned off or on.
    ExecuteApiEndpoint { disabled: bool },
    /// Certificate: still to be validated (its DNS record written, waited
    /// until ISSUED).
    Validation,
    /// Domain name: another certificate.
    Certificate { from: Option<String>, to: String },
    /// Mapping: to the stack's API and stage, from another.
    MappingTarget { from: String },
    /// Records: to alias the domain name's regional target.
    AliasTarget,
    /// Tags to set and to remove (tags AWS reserves, `aws:*`, are never touched).
    Tags {
        set: BTreeMap<String, String>,
        remove: Vec<String>,
    },
}

/// The first characters of a CodeSha256, enough to tell two builds apart.
fn short_hash(sha: Option<&str>) -> String {
    match sha {
        Some(sha) => format!("{}…", sha.chars().take(8).collect::<String>()),
        None => "-".into(),
    }
}

pub(super) fn or_dash(value: &Option<String>) -> &str {
    value.as_deref().unwrap_or("-")
}

impl fmt::Display for Detail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Detail::Billing { from } => write!(
                f,
                "billing {} → PAY_PER_REQUEST",
                from.as_deref().unwrap_or("PROVISIONED")
            ),
            Detail::Ttl { attribute } => write!(f, "ttl on {attribute}"),
            Detail::AddIndex { name, key } => write!(f, "+ index {name} on {key}"),
            Detail::DeleteIndex { name } => write!(f, "- index {name}"),
            Detail::IndexNotReady { names } => write!(f, "index {} still being built", names.join(", ")),
            Detail::TrustPolicy => f.write_str("trust policy"),
            Detail::InlinePolicy { grants: None } => f.write_str("inline policy"),
            Detail::InlinePolicy { grants: Some(grants) } => write!(f, "inline policy: {grants}"),
            Detail::Retention { from, to } => write!(
                f,
                "retention {} → {to} days",
                from.map_or_else(|| "never expire".to_string(), |d| d.to_string())
            ),
            Detail::Code { from, to } => write!(f, "code {} → {}", short_hash(from.as_deref()), short_hash(Some(to))),
            Detail::Architecture { from, to } => write!(f, "architecture {} → {to}", or_dash(from)),
            Detail::Setting { name, from, to } => write!(f, "{name} {} → {to}", or_dash(from)),
            Detail::Environment { names } => write!(f, "environment {}", names.join(" ")),
            Detail::RouteSelection => f.write_str("route selection expression"),
            Detail::Type { to } => write!(f, "type → {to}"),
            Detail::Method => f.write_str("method"),
            Detail::AuthorizerFunction => f.write_str("function"),
            Detail::Target => f.write_str("target"),
            Detail::Authorization { to } => write!(f, "authorization → {to}"),
            Detail::Authorizer => f.write_str("authorizer"),
            Detail::MockReply { reply } => write!(f, "reply {reply}"),
            Detail::TwoWay => f.write_str("two-way: a $default route response"),
            Detail::SourceArn => f.write_str("source ARN"),
            Detail::Deployment => f.write_str("new deployment"),
            Detail::Throttling { route, from, to } => {
                let limits = |t: &Throttling| format!("{} burst, {}/s", t.burst, t.rate);
                let whose = route.as_ref().map(|r| format!(" of {r}")).unwrap_or_default();
                let from = from.as_ref().map_or_else(|| "-".to_string(), limits);
                write!(f, "throttling{whose} {from} → {}", limits(to))
            }
            Detail::DetailedMetrics { to } => write!(f, "detailed metrics {}", if *to { "on" } else { "off" }),
            Detail::LoggingLevel { from, to } => write!(f, "logging {} → {to}", or_dash(from)),
            Detail::AccessLogs { to } => write!(f, "access logs {}", if *to { "on" } else { "off" }),
            Detail::RouteSettingsRemoved { route } => write!(f, "- throttling of {route}"),
            Detail::MoveTokenSecret => f.write_str("token secret → Secrets Manager, tokens issued stay valid"),
            Detail::RestoreSecret => f.write_str("restore: it is scheduled for deletion"),
            Detail::Publish { functions } => write!(f, "new version of {}", functions.join(", ")),
            Detail::LiveNotLatest { live, latest } => {
                write!(f, "live is release {live}, not the latest ({latest})")
            }
            Detail::InvokeAlias => f.write_str("invokes alias live"),
            Detail::UnqualifiedPermission => f.write_str("- function-wide statement, now on alias live"),
            Detail::ExecuteApiEndpoint { disabled: true } => f.write_str("execute-api endpoint off"),
            Detail::ExecuteApiEndpoint { disabled: false } => f.write_str("execute-api endpoint on"),
            Detail::Validation => f.write_str("pending validation: its DNS record, then ISSUED"),
            Detail::Certificate { from, to } => write!(f, "certificate {} → {to}", or_dash(from)),
            Detail::MappingTarget { from } => write!(f, "mapped to {from} → the stack's stage"),
            Detail::AliasTarget => f.write_str("alias → the domain name's regional target"),
            Detail::Subscriptions { add, remove } => {
                let mut parts: Vec<String> = add.iter().map(|e| format!("+ {e}")).collect();
                parts.extend(remove.iter().map(|e| format!("- {e}")));
                write!(f, "email {}", parts.join(", "))
            }
            Detail::AlarmRule => f.write_str("rule"),
            Detail::Tags { set, remove } => {
                let mut parts: Vec<String> = set.iter().map(|(k, v)| format!("+ {k}={v}")).collect();
                parts.extend(remove.iter().map(|k| format!("- {k}")));
                write!(f, "tags {}", parts.join(", "))
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum Action {
    Create,
    Update {
        changes: Vec<Detail>,
    },
    /// Delete and create again: destructive, so `up` asks first.
    Replace {
        reason: String,
    },
    Delete,
    #[serde(rename = "no-change")]
    NoChange,
}

impl Action {
    /// The details of an update; none for any other action.
    pub fn changes(&self) -> &[Detail] {
        match self {
            Action::Update { changes } => changes,
            _ => &[],
        }
    }

    /// What the action does, as a verb a sentence can take.
    pub fn verb(&self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update { .. } => "update",
            Action::Replace { .. } => "replace",
            Action::Delete => "delete",
            Action::NoChange => "leave unchanged",
        }
    }

    pub(super) fn update_or_nothing(changes: Vec<Detail>) -> Action {
        if changes.is_empty() {
            Action::NoChange
        } else {
            Action::Update { changes }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub kind: Kind,
    pub name: String,
    /// The live resource's id, where AWS names it by id (API parts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(flatten)]
    pub action: Action,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (sign, detail) = match &self.action {
            Action::Create => ("+", String::new()),
            Action::Update { changes } => (
                "~",
                format!(
                    " ({})",
                    changes.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(", ")
                ),
            ),
            Action::Replace { reason } => ("-/+", format!(" (replace: {reason})")),
            // A secret is deleted without the usual 7–30 days to restore it.
            Action::Delete if self.kind == Kind::Secret => ("-", " (at once, no recovery window)".to_string()),
            Action::Delete => ("-", self.id.as_ref().map(|id| format!(" ({id})")).unwrap_or_default()),
            Action::NoChange => ("=", String::new()),
        };
        write!(f, "{sign:>3} {} {}{detail}", self.kind, self.name)
    }
}

/// The tag `chatctl dev` sets on the stage it serves in an emulator: its
/// gateway's WebSocket URL (`ws://127.0.0.1:PORT/STAGE`), for `smoke` and
/// `connections` given only `--endpoint-url` (see `dev::gateway::local_url`).
pub const LOCAL_URL_TAG: &str = "chatctl:local-url";

/// Tags that are not chatctl.toml's to set or remove, and never drift: the
/// ones AWS reserves (`aws:*`) and the one `chatctl dev` records its
/// gateway's URL in.
pub fn is_unmanaged_tag(key: &str) -> bool {
    key.starts_with("aws:") || key == LOCAL_URL_TAG
}

/// The tags to set and remove so that `have` becomes `want`; tags AWS
/// reserves (`aws:` prefix) cannot be changed by anyone and are left alone
/// (AWS tagging best practices, "tag naming limits and requirements").
pub fn tag_changes(have: &BTreeMap<String, String>, want: &BTreeMap<String, String>) -> Option<Detail> {
    let set: BTreeMap<String, String> = want
        .iter()
        .filter(|(k, v)| have.get(*k) != Some(v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let remove: Vec<String> = have
        .keys()
        .filter(|k| !want.contains_key(*k) && !is_unmanaged_tag(k))
        .cloned()
        .collect();
    (!set.is_empty() || !remove.is_empty()).then_some(Detail::Tags { set, remove })
}

/// A resource found by name: absent, ours (tagged with this stack), or someone else's.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Found<T> {
    Missing,
    Ours(T),
    /// Exists without this stack's tag; never touched. Holds what the tag says, if anything.
    Foreign(Option<String>),
}

impl<T> Found<T> {
    pub fn ours(&self) -> Option<&T> {
        match self {
            Found::Ours(value) => Some(value),
            _ => None,
        }
    }

    pub fn is_missing(&self) -> bool {
        matches!(self, Found::Missing)
    }

    pub(super) fn classify(stack: &str, tag: Option<&str>, value: T) -> Found<T> {
        if tag == Some(stack) {
            Found::Ours(value)
        } else {
            Found::Foreign(tag.map(str::to_string))
        }
    }
}

/// Every item of a list call that pages with a token. AWS may answer fewer
/// items than asked, with a token, on any page; API Gateway documents no
/// largest page (aws-facts.md §10, "pagination").
pub async fn all_pages<T, F, Fut>(what: &str, mut page: F) -> Result<Vec<T>>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: std::future::Future<Output = Result<(Vec<T>, Option<String>)>>,
{
    let mut items = vec![];
    let mut token = None;
    for _ in 0..MAX_PAGES {
        let (mut got, next) = page(token.take()).await?;
        items.append(&mut got);
        match next {
            Some(next) if !next.is_empty() => token = Some(next),
            _ => return Ok(items),
        }
    }
    anyhow::bail!("{what}: AWS still had more after {MAX_PAGES} pages")
}

/// More pages than any list of this stack's can take; a guard against a
/// token that never ends.
const MAX_PAGES: usize = 10_000;

/// How often a state is polled while waiting for it: short enough that a
/// wait ends at most this much after its cause; seven functions polled this
/// often make 28 GetFunction calls a second, within its quota of 100/s
/// (aws-facts.md §10, "Lambda control-plane quota").
const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// How often a wait that has lasted past `SLOW_WAIT` polls: a table
/// building an index over its items for minutes needs no 4 reads a second.
const SLOW_POLL_INTERVAL: Duration = Duration::from_secs(1);
const SLOW_WAIT: Duration = Duration::from_secs(10);

/// What one look at a resource found while waiting for it.
pub(super) enum Polled<T> {
    Ready(T),
    /// Not yet; the sentence to fail with if the wait runs out of time.
    Waiting(String),
}

/// Waits for a state: calls `look` every `POLL_INTERVAL`, then every
/// `SLOW_POLL_INTERVAL` once the wait has lasted `SLOW_WAIT`, until it is
/// `Ready` or errs, for at most `timeout`; then fails with its last
/// `Waiting` sentence. Not the SDK's waiters: they end with a generic
/// "exceeded max wait time" that loses the resource's last state (which a
/// user needs to act on), cannot tell a state that will never come (a
/// table DELETING, a function Failed) from one still coming, and do not
/// model the states chatctl waits for on its own (a function's
/// LastUpdateStatus together with its State, a table's indexes).
pub(super) async fn poll<T, F, Fut>(timeout: Duration, mut look: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Polled<T>>>,
{
    let started = std::time::Instant::now();
    loop {
        match look().await? {
            Polled::Ready(value) => return Ok(value),
            Polled::Waiting(why) if started.elapsed() >= timeout => bail!("{why}"),
            Polled::Waiting(_) => {}
        }
        let interval = if started.elapsed() < SLOW_WAIT {
            POLL_INTERVAL
        } else {
            SLOW_POLL_INTERVAL
        };
        tokio::time::sleep(interval).await;
    }
}
/// A resource that "already exists" when chatctl created it (the answer to
/// its create was lost and the SDK sent it again, aws-facts.md §10): taken
/// when it carries the stack's tag, else it is someone else's.
pub(super) fn taken_if_ours<T>(found: &Found<T>, kind: &str, name: &str) -> Result<()> {
    match found {
        Found::Ours(_) => Ok(()),
        _ => bail!("{kind} {name} was created meanwhile by someone else; chatctl leaves it alone"),
    }
}

/// Where a step writes: the stack's names and the tags every resource of
/// it carries. A kind gets this and its own step's values, never the
/// whole desired state.
#[derive(Debug, Clone, Copy)]
pub struct Stack<'a> {
    pub names: &'a super::Names,
    pub tags: &'a BTreeMap<String, String>,
}

/// One finished step, for progress output.
#[derive(Debug, Clone)]
pub struct Step {
    pub kind: &'static str,
    pub name: String,
    pub done: String,
}

pub type Report<'a> = &'a (dyn Fn(Step) + Sync);

pub(super) fn step(report: Report, kind: Kind, name: &str, done: impl Into<String>) {
    report(Step {
        kind: kind.as_str(),
        name: name.to_string(),
        done: done.into(),
    });
}

/// The tags to set and remove, if an update's changes include them.
pub(super) fn tag_detail(changes: &[Detail]) -> Option<(&BTreeMap<String, String>, &[String])> {
    changes.iter().find_map(|c| match c {
        Detail::Tags { set, remove } => Some((set, remove.as_slice())),
        _ => None,
    })
}

/// The id of a live API part a step changes or keeps.
pub(super) fn live_id(change: &Change) -> Result<String> {
    use anyhow::Context;
    change.id.clone().with_context(|| {
        format!(
            "the plan names no id for {} {}; make a new plan",
            change.kind, change.name
        )
    })
}
