//! The difference between what the stack should be and what exists: a pure
//! function of the two, so every case is unit-tested without AWS.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::actual::{Actual, ApiState, Found, FunctionState, LogGroupState, RoleState, TableState};
use super::desired::{
    Desired, FunctionSpec, LogGroupSpec, ROUTE_SELECTION_EXPRESSION, RUNTIME, TableSpec, trust_policy,
};
use super::{Function, Names};

/// The statement id of the invoke permission chatctl adds to each function.
pub const PERMISSION_ID: &str = "chatctl-invoke";
/// Stage descriptions start with this, followed by the routes' fingerprint,
/// so a stage serving stale routes is seen as drift.
pub const DEPLOYMENT_MARKER: &str = "chatctl deployment ";

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum Action {
    Create,
    Update {
        changes: Vec<String>,
    },
    /// Delete and create again: destructive, so `up` asks first.
    Replace {
        reason: String,
    },
    Delete,
    #[serde(rename = "no-change")]
    NoChange,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    pub kind: &'static str,
    pub name: String,
    #[serde(flatten)]
    pub action: Action,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Plan {
    pub changes: Vec<Change>,
    /// Names taken by resources that are not this stack's.
    pub conflicts: Vec<String>,
}

impl Plan {
    pub fn pending(&self) -> impl Iterator<Item = &Change> {
        self.changes.iter().filter(|c| c.action != Action::NoChange)
    }

    pub fn is_noop(&self) -> bool {
        self.pending().next().is_none()
    }

    pub fn destructive(&self) -> Vec<&Change> {
        self.changes
            .iter()
            .filter(|c| matches!(c.action, Action::Replace { .. } | Action::Delete))
            .collect()
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (sign, detail) = match &self.action {
            Action::Create => ("+", String::new()),
            Action::Update { changes } => ("~", format!(" ({})", changes.join(", "))),
            Action::Replace { reason } => ("-/+", format!(" (replace: {reason})")),
            Action::Delete => ("-", String::new()),
            Action::NoChange => ("=", String::new()),
        };
        write!(f, "{sign:>3} {} {}{detail}", self.kind, self.name)
    }
}

fn foreign_message(kind: &str, name: &str, tag: &Option<String>) -> String {
    match tag {
        Some(other) => format!("{kind} {name} exists but belongs to stack {other:?}; chatctl leaves it alone"),
        None => format!(
            "{kind} {name} exists but was not created by chatctl (no {} tag); rename your stack with --stack or remove it yourself",
            super::STACK_TAG
        ),
    }
}

/// Compares every resource, in the order `up` applies them.
pub fn plan(desired: &Desired, actual: &Actual) -> Plan {
    let mut plan = Plan::default();
    let mut add = |kind: &'static str, name: &str, action: Option<Action>, conflict: Option<String>| {
        if let Some(conflict) = conflict {
            plan.conflicts.push(conflict);
        } else if let Some(action) = action {
            plan.changes.push(Change {
                kind,
                name: name.to_string(),
                action,
            });
        }
    };
    let api_id = actual.api.ours().map(|a| a.id.as_str());

    for spec in &desired.tables {
        let found = actual.tables.get(&spec.name).unwrap_or(&Found::Missing);
        match found {
            Found::Foreign(tag) => add(
                "table",
                &spec.name,
                None,
                Some(foreign_message("table", &spec.name, tag)),
            ),
            _ => add("table", &spec.name, Some(table_action(spec, found.ours())), None),
        }
    }
    for spec in &desired.roles {
        let found = actual.roles.get(&spec.name).unwrap_or(&Found::Missing);
        match found {
            Found::Foreign(tag) => add(
                "role",
                &spec.name,
                None,
                Some(foreign_message("IAM role", &spec.name, tag)),
            ),
            _ => {
                let policy = api_id.map(|id| desired.role_policy(spec, id));
                add(
                    "role",
                    &spec.name,
                    Some(role_action(found.ours(), policy.as_ref())),
                    None,
                )
            }
        }
    }
    for spec in &desired.log_groups {
        let found = actual.log_groups.get(&spec.function).unwrap_or(&Found::Missing);
        match found {
            Found::Foreign(tag) => add(
                "log group",
                &spec.name,
                None,
                Some(foreign_message("log group", &spec.name, tag)),
            ),
            _ => add(
                "log group",
                &spec.name,
                Some(log_group_action(spec, found.ours())),
                None,
            ),
        }
    }
    for spec in &desired.functions {
        let found = actual.functions.get(&spec.function).unwrap_or(&Found::Missing);
        match found {
            Found::Foreign(tag) => add(
                "function",
                &spec.name,
                None,
                Some(foreign_message("Lambda function", &spec.name, tag)),
            ),
            _ => {
                let role_arn = desired.names.role_arn(&spec.role);
                let action = match found.ours() {
                    None => Action::Create,
                    Some(state) => function_diff(spec, state, &role_arn).into_action(),
                };
                add("function", &spec.name, Some(action), None)
            }
        }
    }
    for change in api_changes(desired, actual.api.ours(), actual) {
        plan.changes.push(change);
    }
    plan
}

pub fn table_action(spec: &TableSpec, state: Option<&TableState>) -> Action {
    let Some(state) = state else {
        return Action::Create;
    };
    let wanted_indexes: Vec<(String, String, String)> = spec
        .indexes
        .iter()
        .map(|(name, key)| (name.clone(), key.clone(), "KEYS_ONLY".to_string()))
        .collect();
    let mut have_indexes = state.indexes.clone();
    have_indexes.sort();
    let mut want_sorted = wanted_indexes.clone();
    want_sorted.sort();
    if state.partition_key.as_deref() != Some(spec.partition_key.as_str()) || state.sort_key != spec.sort_key {
        return Action::Replace {
            reason: format!(
                "key schema is {}/{}, should be {}/{}",
                state.partition_key.as_deref().unwrap_or("-"),
                state.sort_key.as_deref().unwrap_or("-"),
                spec.partition_key,
                spec.sort_key.as_deref().unwrap_or("-")
            ),
        };
    }
    if have_indexes != want_sorted {
        let names: Vec<&str> = have_indexes.iter().map(|i| i.0.as_str()).collect();
        return Action::Replace {
            reason: format!("indexes are {names:?}, should be by-room/by-user keys-only"),
        };
    }
    let mut changes = vec![];
    if state.billing_mode.as_deref() != Some("PAY_PER_REQUEST") {
        changes.push(format!(
            "billing {} → PAY_PER_REQUEST",
            state.billing_mode.as_deref().unwrap_or("PROVISIONED")
        ));
    }
    if state.ttl_attribute.as_deref() != Some(spec.ttl_attribute.as_str()) {
        changes.push(format!("ttl on {}", spec.ttl_attribute));
    }
    update_or_nothing(changes)
}

fn update_or_nothing(changes: Vec<String>) -> Action {
    if changes.is_empty() {
        Action::NoChange
    } else {
        Action::Update { changes }
    }
}

/// `policy` is None while the API (which the policy names) does not exist yet.
pub fn role_action(state: Option<&RoleState>, policy: Option<&Value>) -> Action {
    let Some(state) = state else {
        return Action::Create;
    };
    let mut changes = vec![];
    if state.trust_policy.as_ref() != Some(&trust_policy()) {
        changes.push("trust policy".to_string());
    }
    match (policy, &state.policy) {
        (Some(want), Some(have)) if have == want => {}
        (Some(want), Some(have)) => changes.push(format!("inline policy: {}", policy_changes(have, want))),
        _ => changes.push("inline policy".to_string()),
    }
    update_or_nothing(changes)
}

/// What a new inline policy grants and revokes, for people: "+ Allow
/// dynamodb:BatchGetItem on table/chat-connections; - Allow …". Statements
/// are compared grant by grant (effect, action, resource), so one action
/// added to a statement reads as that action alone.
fn policy_changes(have: &Value, want: &Value) -> String {
    use std::collections::{BTreeMap, BTreeSet};
    fn list(value: &Value) -> Vec<String> {
        match value {
            Value::Array(items) => items.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
            Value::String(one) => vec![one.clone()],
            _ => vec![],
        }
    }
    fn grants(policy: &Value) -> BTreeSet<(String, String, String)> {
        let statements = list_of_statements(&policy["Statement"]);
        let mut grants = BTreeSet::new();
        for statement in statements {
            let effect = statement["Effect"].as_str().unwrap_or("?").to_string();
            for action in list(&statement["Action"]) {
                for resource in list(&statement["Resource"]) {
                    grants.insert((effect.clone(), action.clone(), resource));
                }
            }
        }
        grants
    }
    fn list_of_statements(value: &Value) -> Vec<&Value> {
        match value {
            Value::Array(items) => items.iter().collect(),
            Value::Null => vec![],
            one => vec![one],
        }
    }
    /// An ARN without its partition, service, region and account.
    fn short(resource: &str) -> &str {
        match resource.splitn(6, ':').nth(5) {
            Some(rest) if resource.starts_with("arn:") => rest,
            _ => resource,
        }
    }
    fn render(sign: char, grants: Vec<&(String, String, String)>) -> Vec<String> {
        let mut by_action: BTreeMap<(&str, &str), Vec<&str>> = BTreeMap::new();
        for (effect, action, resource) in grants {
            by_action.entry((effect, action)).or_default().push(short(resource));
        }
        by_action
            .into_iter()
            .map(|((effect, action), resources)| format!("{sign} {effect} {action} on {}", resources.join(", ")))
            .collect()
    }
    let (have, want) = (grants(have), grants(want));
    let mut lines = render('+', want.difference(&have).collect());
    lines.extend(render('-', have.difference(&want).collect()));
    if lines.is_empty() {
        // Same grants, written differently (Sids, order): rewritten as ours.
        return "rewritten, same grants".into();
    }
    lines.join("; ")
}

pub fn log_group_action(spec: &LogGroupSpec, state: Option<&LogGroupState>) -> Action {
    match state {
        None => Action::Create,
        Some(state) if state.retention_days == Some(spec.retention_days) => Action::NoChange,
        Some(state) => Action::Update {
            changes: vec![format!(
                "retention {} → {} days",
                state
                    .retention_days
                    .map(|d| d.to_string())
                    .unwrap_or_else(|| "never expire".into()),
                spec.retention_days
            )],
        },
    }
}

/// What differs in a function: its code, its configuration, or both.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FunctionDiff {
    pub code: bool,
    /// How the code changes, for people: "code 3f2a1c9b… → 9b1c0d2e…"
    /// (CodeSha256, live → new), or "code" when only the architecture moves.
    pub code_change: String,
    pub configuration: Vec<String>,
}

impl FunctionDiff {
    pub fn into_action(self) -> Action {
        let mut changes = self.configuration;
        if self.code {
            changes.insert(0, self.code_change);
        }
        update_or_nothing(changes)
    }
}

/// The first characters of a CodeSha256, enough to tell two builds apart.
fn short_hash(sha: Option<&str>) -> String {
    match sha {
        Some(sha) => format!("{}…", sha.chars().take(8).collect::<String>()),
        None => "-".into(),
    }
}

pub fn function_diff(spec: &FunctionSpec, state: &FunctionState, role_arn: &str) -> FunctionDiff {
    let mut diff = FunctionDiff::default();
    let architecture = spec.arch.as_lambda();
    // A changed architecture needs new code too: it goes with UpdateFunctionCode.
    diff.code = spec
        .code
        .as_ref()
        .is_some_and(|code| state.code_sha256.as_deref() != Some(code.sha256.as_str()))
        || state.architecture.as_deref() != Some(architecture);
    if diff.code {
        let new = spec.code.as_ref().map(|code| code.sha256.as_str());
        diff.code_change = match new {
            Some(new) if state.code_sha256.as_deref() != Some(new) => format!(
                "code {} → {}",
                short_hash(state.code_sha256.as_deref()),
                short_hash(Some(new))
            ),
            _ => "code".into(),
        };
    }
    let mut config = vec![];
    let mut compare = |what: &str, have: Option<String>, want: String| {
        if have.as_deref() != Some(want.as_str()) {
            config.push(format!("{what} {} → {want}", have.unwrap_or_else(|| "-".into())));
        }
    };
    compare("runtime", state.runtime.clone(), RUNTIME.into());
    compare("handler", state.handler.clone(), spec.function.short_name().into());
    compare(
        "memory",
        state.memory_mb.map(|m| m.to_string()),
        spec.memory_mb.to_string(),
    );
    compare(
        "timeout",
        state.timeout_seconds.map(|t| t.to_string()),
        spec.timeout_seconds.to_string(),
    );
    compare("role", state.role_arn.clone(), role_arn.to_string());
    if state.architecture.as_deref() != Some(architecture) {
        config.push(format!(
            "architecture {} → {architecture}",
            state.architecture.as_deref().unwrap_or("-")
        ));
    }
    if state.env != spec.env {
        // Names only: values may be secrets.
        let mut keys: Vec<&String> = spec
            .env
            .keys()
            .chain(state.env.keys())
            .filter(|k| spec.env.get(*k) != state.env.get(*k))
            .collect();
        keys.sort();
        keys.dedup();
        config.push(format!(
            "environment {}",
            keys.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(" ")
        ));
    }
    // Architecture is applied with the code, not the configuration.
    diff.configuration = config.into_iter().filter(|c| !c.starts_with("architecture")).collect();
    if state.architecture.as_deref() != Some(architecture) {
        diff.configuration.push(format!("architecture → {architecture}"));
    }
    diff
}

/// The source ARN of each function's invoke permission.
pub fn permission_source_arn(names: &Names, function: Function, api_id: &str, authorizer_id: Option<&str>) -> String {
    let api = names.execute_api_arn(api_id);
    match function.route_key() {
        Some(route) => format!("{api}/*/{route}"),
        None => format!("{api}/authorizers/{}", authorizer_id.unwrap_or("*")),
    }
}

/// A route as a deployment serves it: what it targets, by id and URI.
#[derive(Debug, Clone, PartialEq)]
pub struct ServedRoute {
    pub key: String,
    pub target: Option<String>,
    pub integration_uri: Option<String>,
    pub integration_type: Option<String>,
    pub authorization: String,
    pub authorizer_id: Option<String>,
    pub authorizer_name: Option<String>,
    pub authorizer_uri: Option<String>,
}

/// The routes an API has now, resolved to their integrations and authorizer.
pub fn served_routes(api: &ApiState) -> Vec<ServedRoute> {
    api.routes
        .iter()
        .map(|route| {
            let integration = route
                .target
                .as_deref()
                .and_then(|t| t.strip_prefix("integrations/"))
                .and_then(|id| api.integrations.iter().find(|i| i.id == id));
            let authorization = route.authorization_type.clone().unwrap_or_else(|| "NONE".into());
            let authorizer_id = route.authorizer_id.clone().filter(|_| authorization == "CUSTOM");
            let authorizer = authorizer_id
                .as_deref()
                .and_then(|id| api.authorizers.iter().find(|a| a.id == id));
            ServedRoute {
                key: route.key.clone(),
                target: route.target.clone(),
                integration_uri: integration.and_then(|i| i.uri.clone()),
                integration_type: integration.and_then(|i| i.integration_type.clone()),
                authorization,
                // An authorizer that is gone is named by its id.
                authorizer_name: authorizer.map(|a| a.name.clone()).or_else(|| authorizer_id.clone()),
                authorizer_uri: authorizer.and_then(|a| a.uri.clone()),
                authorizer_id,
            }
        })
        .collect()
}

/// The stage's description after a deployment: a fingerprint of the routes
/// it serves, resolved to ids. A stage whose description differs from the
/// fingerprint of the API's routes now serves stale routes (for instance
/// after an `up` that changed a route and failed before deploying).
pub fn deployment_description(routes: &[ServedRoute]) -> String {
    let mut routes: Vec<&ServedRoute> = routes.iter().collect();
    routes.sort_by(|a, b| a.key.cmp(&b.key));
    let mut hasher = Sha256::new();
    for r in routes {
        hasher.update(format!(
            "{}|{}|{}|{}|{}|{}\n",
            r.key,
            r.target.as_deref().unwrap_or(""),
            r.integration_uri.as_deref().unwrap_or(""),
            r.authorization,
            r.authorizer_id.as_deref().unwrap_or(""),
            r.authorizer_uri.as_deref().unwrap_or("")
        ));
    }
    let digest = hasher.finalize();
    let fingerprint: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("{DEPLOYMENT_MARKER}{fingerprint}")
}

/// What a route should point at, given the ids that exist.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteTarget {
    pub target: Option<String>,
    pub authorizer_id: Option<String>,
}

/// The API, its integrations, authorizer, routes, permissions and stage.
pub fn api_changes(desired: &Desired, api: Option<&ApiState>, actual: &Actual) -> Vec<Change> {
    let names = &desired.names;
    let spec = &desired.api;
    let change = |kind: &'static str, name: String, action: Action| Change { kind, name, action };
    let Some(api) = api else {
        let mut changes = vec![change("api", spec.name.clone(), Action::Create)];
        changes.push(change("authorizer", spec.authorizer.clone(), Action::Create));
        for route in &spec.routes {
            changes.push(change("integration", names.function(route.function), Action::Create));
            changes.push(change("route", route.key.clone(), Action::Create));
        }
        for function in Function::ALL {
            changes.push(change("permission", names.function(function), Action::Create));
        }
        changes.push(change("stage", spec.stage.clone(), Action::Create));
        return changes;
    };
    let mut changes = vec![];
    let mut api_changes = vec![];
    if api.protocol.as_deref() != Some("WEBSOCKET") {
        changes.push(change(
            "api",
            spec.name.clone(),
            Action::Replace {
                reason: format!("protocol is {}", api.protocol.as_deref().unwrap_or("-")),
            },
        ));
        return changes;
    }
    if api.route_selection_expression.as_deref() != Some(ROUTE_SELECTION_EXPRESSION) {
        api_changes.push("route selection expression".to_string());
    }
    changes.push(change("api", spec.name.clone(), update_or_nothing(api_changes)));
    for duplicate in &api.duplicates {
        changes.push(change(
            "api",
            format!("{} {duplicate} (duplicate)", spec.name),
            Action::Delete,
        ));
    }

    let authorizer_uri = names.invocation_uri(Function::Authorizer);
    let authorizer = api.authorizers.iter().find(|a| a.name == spec.authorizer);
    let authorizer_action = match authorizer {
        None => Action::Create,
        Some(a) => {
            let mut diffs = vec![];
            if a.authorizer_type.as_deref() != Some("REQUEST") {
                diffs.push("type".to_string());
            }
            if a.uri.as_deref() != Some(authorizer_uri.as_str()) {
                diffs.push("function".to_string());
            }
            update_or_nothing(diffs)
        }
    };
    let deploy_needed_by_parts = authorizer_action != Action::NoChange;
    changes.push(change("authorizer", spec.authorizer.clone(), authorizer_action));

    let mut parts_changed = deploy_needed_by_parts;
    for route in &spec.routes {
        let uri = names.invocation_uri(route.function);
        let integration = api.integrations.iter().find(|i| i.uri.as_deref() == Some(uri.as_str()));
        let integration_action = match integration {
            None => Action::Create,
            Some(i) => {
                let mut diffs = vec![];
                if i.integration_type.as_deref() != Some("AWS_PROXY") {
                    diffs.push("type".to_string());
                }
                if i.method.as_deref() != Some("POST") {
                    diffs.push("method".to_string());
                }
                update_or_nothing(diffs)
            }
        };
        parts_changed |= integration_action != Action::NoChange;
        changes.push(change(
            "integration",
            names.function(route.function),
            integration_action,
        ));

        let target = RouteTarget {
            target: integration.map(|i| format!("integrations/{}", i.id)),
            authorizer_id: if route.authorized {
                authorizer.map(|a| a.id.clone())
            } else {
                None
            },
        };
        let route_action = match api.routes.iter().find(|r| r.key == route.key) {
            None => Action::Create,
            Some(r) => route_diff(r, &target, route.authorized),
        };
        parts_changed |= route_action != Action::NoChange;
        changes.push(change("route", route.key.clone(), route_action));
    }
    for extra in api
        .routes
        .iter()
        .filter(|r| !spec.routes.iter().any(|s| s.key == r.key))
    {
        parts_changed = true;
        changes.push(change("route", extra.key.clone(), Action::Delete));
    }

    for function in Function::ALL {
        let wanted = permission_source_arn(names, function, &api.id, authorizer.map(|a| a.id.as_str()));
        let have = actual
            .functions
            .get(&function)
            .and_then(|f| f.ours())
            .and_then(|f| f.permissions.get(PERMISSION_ID));
        let action = match have {
            Some(arn) if *arn == wanted && (function != Function::Authorizer || authorizer.is_some()) => {
                Action::NoChange
            }
            Some(_) => Action::Update {
                changes: vec!["source ARN".into()],
            },
            None => Action::Create,
        };
        changes.push(change("permission", names.function(function), action));
    }

    let wanted_description = deployment_description(&served_routes(api));
    let stage_action = match &api.stage {
        None => Action::Create,
        Some(stage) => {
            if parts_changed
                || stage.deployment_id.is_none()
                || stage.description.as_deref() != Some(wanted_description.as_str())
            {
                Action::Update {
                    changes: vec!["new deployment".into()],
                }
            } else {
                Action::NoChange
            }
        }
    };
    changes.push(change("stage", spec.stage.clone(), stage_action));
    changes
}

pub fn route_diff(route: &super::actual::RouteState, target: &RouteTarget, authorized: bool) -> Action {
    let mut diffs = vec![];
    if target.target.is_none() || route.target != target.target {
        diffs.push("target".to_string());
    }
    let wanted_auth = if authorized { "CUSTOM" } else { "NONE" };
    if route.authorization_type.as_deref().unwrap_or("NONE") != wanted_auth {
        diffs.push(format!("authorization → {wanted_auth}"));
    }
    if authorized && (target.authorizer_id.is_none() || route.authorizer_id != target.authorizer_id) {
        diffs.push("authorizer".to_string());
    }
    update_or_nothing(diffs)
}

/// Counts of pending changes by action, for the summary line.
pub fn summary(plan: &Plan) -> BTreeMap<&'static str, usize> {
    let mut counts = BTreeMap::new();
    for change in plan.pending() {
        let key = match change.action {
            Action::Create => "create",
            Action::Update { .. } => "update",
            Action::Replace { .. } => "replace",
            Action::Delete => "delete",
            Action::NoChange => continue,
        };
        *counts.entry(key).or_default() += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::settings::{Arch, ConfigFile, Overrides, Settings};
    use crate::stack::actual::{FunctionState, RouteState, TableState};
    use crate::stack::desired::{Code, LogGroupSpec};

    fn desired() -> Desired {
        let settings = Settings::resolve(&ConfigFile::default(), &Overrides::default()).unwrap();
        let names = Names {
            stack: "chat".into(),
            stage: "dev".into(),
            region: "eu-west-1".into(),
            account: "123456789012".into(),
        };
        let code = Function::ALL
            .into_iter()
            .map(|f| {
                (
                    f,
                    Code {
                        zip: "z".into(),
                        sha256: "NEW".into(),
                    },
                )
            })
            .collect();
        Desired::new(&settings, names, "secret", &code)
    }

    fn table_state(spec: &TableSpec) -> TableState {
        TableState {
            status: "ACTIVE".into(),
            partition_key: Some(spec.partition_key.clone()),
            sort_key: spec.sort_key.clone(),
            indexes: spec
                .indexes
                .iter()
                .map(|(n, k)| (n.clone(), k.clone(), "KEYS_ONLY".into()))
                .collect(),
            billing_mode: Some("PAY_PER_REQUEST".into()),
            ttl_attribute: Some("ttl".into()),
            item_count: 0,
        }
    }

    #[test]
    fn table_cases() {
        let d = desired();
        let spec = &d.tables[0];
        assert_eq!(table_action(spec, None), Action::Create);
        assert_eq!(table_action(spec, Some(&table_state(spec))), Action::NoChange);
        let mut no_ttl = table_state(spec);
        no_ttl.ttl_attribute = None;
        assert_eq!(
            table_action(spec, Some(&no_ttl)),
            Action::Update {
                changes: vec!["ttl on ttl".into()]
            }
        );
        let mut provisioned = table_state(spec);
        provisioned.billing_mode = Some("PROVISIONED".into());
        assert!(matches!(table_action(spec, Some(&provisioned)), Action::Update { .. }));
        let mut other_key = table_state(spec);
        other_key.partition_key = Some("id".into());
        assert!(matches!(table_action(spec, Some(&other_key)), Action::Replace { .. }));
        let mut missing_index = table_state(spec);
        missing_index.indexes.pop();
        assert!(matches!(
            table_action(spec, Some(&missing_index)),
            Action::Replace { .. }
        ));
    }

    #[test]
    fn role_and_log_group_cases() {
        let d = desired();
        let policy = d.role_policy(&d.roles[0], "api");
        let state = crate::stack::actual::RoleState {
            trust_policy: Some(trust_policy()),
            policy: Some(policy.clone()),
        };
        assert_eq!(role_action(None, Some(&policy)), Action::Create);
        assert_eq!(role_action(Some(&state), Some(&policy)), Action::NoChange);
        assert_eq!(
            role_action(Some(&state), None),
            Action::Update {
                changes: vec!["inline policy".into()]
            },
            "a policy for an API still to be made"
        );
        // A policy from before BatchGetItem was granted: the plan names what it adds.
        let mut older = policy.clone();
        let tables = older["Statement"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|s| s["Sid"] == "ChatTables")
            .unwrap();
        tables["Action"]
            .as_array_mut()
            .unwrap()
            .retain(|a| a != "dynamodb:BatchGetItem");
        tables["Action"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!("dynamodb:Scan"));
        let state_before = crate::stack::actual::RoleState {
            policy: Some(older),
            ..state.clone()
        };
        assert_eq!(
            role_action(Some(&state_before), Some(&policy)),
            Action::Update {
                changes: vec![
                    "inline policy: + Allow dynamodb:BatchGetItem on table/chat-connections, \
                     table/chat-connections/index/*, table/chat-messages; - Allow dynamodb:Scan on \
                     table/chat-connections, table/chat-connections/index/*, table/chat-messages"
                        .into()
                ]
            }
        );
        let spec = LogGroupSpec {
            function: Function::Join,
            name: "g".into(),
            retention_days: 14,
        };
        assert_eq!(log_group_action(&spec, None), Action::Create);
        let state = crate::stack::actual::LogGroupState {
            retention_days: Some(14),
        };
        assert_eq!(log_group_action(&spec, Some(&state)), Action::NoChange);
        let never = crate::stack::actual::LogGroupState { retention_days: None };
        assert_eq!(
            log_group_action(&spec, Some(&never)),
            Action::Update {
                changes: vec!["retention never expire → 14 days".into()]
            }
        );
    }

    fn function_state(spec: &FunctionSpec, role_arn: &str) -> FunctionState {
        FunctionState {
            arn: "arn".into(),
            runtime: Some(RUNTIME.into()),
            handler: Some(spec.function.short_name().into()),
            architecture: Some("x86_64".into()),
            memory_mb: Some(spec.memory_mb),
            timeout_seconds: Some(spec.timeout_seconds),
            role_arn: Some(role_arn.into()),
            env: spec.env.clone(),
            code_sha256: Some("NEW".into()),
            permissions: BTreeMap::new(),
        }
    }

    #[test]
    fn function_cases_tell_code_from_configuration() {
        let d = desired();
        let spec = d.function(Function::SendMessage);
        let role = d.names.role_arn(&spec.role);
        let same = function_state(spec, &role);
        assert_eq!(function_diff(spec, &same, &role), FunctionDiff::default());

        let mut old_code = same.clone();
        old_code.code_sha256 = Some("OLD".into());
        let diff = function_diff(spec, &old_code, &role);
        assert!(diff.code && diff.configuration.is_empty());
        assert_eq!(
            diff.into_action(),
            Action::Update {
                changes: vec!["code OLD… → NEW…".into()]
            }
        );

        let mut small = same.clone();
        small.memory_mb = Some(256);
        let diff = function_diff(spec, &small, &role);
        assert!(!diff.code);
        assert_eq!(diff.configuration, ["memory 256 → 128"]);

        // A stack deployed when each function had a binary of its own: the
        // Handler now names the function, for the one binary to dispatch on.
        let mut own_binary = same.clone();
        own_binary.handler = Some("bootstrap".into());
        let diff = function_diff(spec, &own_binary, &role);
        assert_eq!(diff.configuration, ["handler bootstrap → sendmessage"]);

        let mut env = same.clone();
        env.env.insert("CHAT_MAX_CONNECTIONS".into(), "5".into());
        let diff = function_diff(spec, &env, &role);
        assert_eq!(
            diff.configuration,
            ["environment CHAT_MAX_CONNECTIONS"],
            "names only, never values"
        );

        let mut arm = spec.clone();
        arm.arch = Arch::Arm64;
        let diff = function_diff(&arm, &same, &role);
        assert!(diff.code, "a new architecture ships with new code");

        let mut unknown_code = spec.clone();
        unknown_code.code = None;
        assert_eq!(
            function_diff(&unknown_code, &old_code, &role),
            FunctionDiff::default(),
            "status without a build"
        );
    }

    #[test]
    fn route_cases() {
        let target = RouteTarget {
            target: Some("integrations/i1".into()),
            authorizer_id: Some("a1".into()),
        };
        let route = RouteState {
            id: "r".into(),
            key: "$connect".into(),
            target: Some("integrations/i1".into()),
            authorization_type: Some("CUSTOM".into()),
            authorizer_id: Some("a1".into()),
        };
        assert_eq!(route_diff(&route, &target, true), Action::NoChange);
        let mut open = route.clone();
        open.authorization_type = Some("NONE".into());
        open.authorizer_id = None;
        assert!(matches!(route_diff(&open, &target, true), Action::Update { .. }));
        let mut elsewhere = route.clone();
        elsewhere.target = Some("integrations/i9".into());
        assert_eq!(
            route_diff(&elsewhere, &target, true),
            Action::Update {
                changes: vec!["target".into()]
            }
        );
    }

    #[test]
    fn the_deployment_fingerprint_follows_what_routes_serve() {
        let route = |key: &str, target: &str| ServedRoute {
            key: key.into(),
            target: Some(target.into()),
            integration_uri: Some(format!("uri-{target}")),
            integration_type: Some("AWS_PROXY".into()),
            authorization: "NONE".into(),
            authorizer_id: None,
            authorizer_name: None,
            authorizer_uri: None,
        };
        let a = deployment_description(&[route("join", "integrations/1"), route("$default", "integrations/2")]);
        let b = deployment_description(&[route("$default", "integrations/2"), route("join", "integrations/1")]);
        assert_eq!(a, b, "order does not matter");
        assert!(a.starts_with(DEPLOYMENT_MARKER));
        let c = deployment_description(&[route("join", "integrations/3"), route("$default", "integrations/2")]);
        assert_ne!(a, c, "a re-pointed route needs a new deployment");
    }
}
