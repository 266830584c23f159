//! The difference between what the stack should be and what exists: a pure
//! function of the two, so every case is unit-tested without AWS.
//!
//! A plan is a list of typed steps. `Display` renders them for people,
//! `Serialize` for `--output json` and saved plans, and `apply` executes
//! exactly them: every decision is made here, once.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::actual::Actual;
use super::base::Found;
pub use super::base::{Action, Change, Detail, Kind, tag_changes};
use super::desired::Desired;
use super::{
    Function, alarms, api, authorizer, domain, integration, keep_alive, log_group, permission, release, role, route,
    secret, stage, table,
};

/// Whether two plans would change different things, the stack's bucket
/// aside (the lock makes it before a run plans again under it).
pub fn pending_differ(one: &Plan, other: &Plan) -> bool {
    let pending = |plan: &Plan| -> Vec<Change> {
        plan.changes
            .iter()
            .filter(|c| c.action != Action::NoChange && c.kind != Kind::Bucket)
            .cloned()
            .collect()
    };
    pending(one) != pending(other)
}

/// What `apply` executes, and all it reads: the steps, and the values they
/// write (terraform's plan file holds the planned values for the same
/// reason: what runs is what was reviewed, whatever the settings say later).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The stack's resources as the steps leave them.
    pub values: Desired,
    pub changes: Vec<Change>,
    /// Names taken by resources that are not this stack's.
    pub conflicts: Vec<String>,
    /// Why the settings cannot be applied as they stand (a `[domain]` whose
    /// zone or certificate does not fit): each says what to do.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

/// What the plan says of a resource it does not list: nothing to do.
static NO_CHANGE: Action = Action::NoChange;

impl Plan {
    pub fn pending(&self) -> impl Iterator<Item = &Change> {
        self.changes.iter().filter(|c| c.action != Action::NoChange)
    }

    pub fn is_noop(&self) -> bool {
        self.pending().next().is_none()
    }

    /// The steps that delete something: a replacement, a deletion, or an
    /// index deleted from a live table (its queries fail until it is built
    /// again).
    pub fn destructive(&self) -> Vec<&Change> {
        self.changes
            .iter()
            .filter(|c| {
                matches!(c.action, Action::Replace { .. } | Action::Delete)
                    || c.action
                        .changes()
                        .iter()
                        .any(|d| matches!(d, Detail::DeleteIndex { .. }))
            })
            .collect()
    }

    /// The step for one resource (the first, for a name listed twice).
    pub fn step(&self, kind: Kind, name: &str) -> Option<&Change> {
        self.changes
            .iter()
            .find(|c| c.kind == kind && c.name == name && c.action != Action::Delete)
    }

    /// What to do with one resource; nothing when the plan does not list it.
    pub fn action(&self, kind: Kind, name: &str) -> &Action {
        self.step(kind, name).map_or(&NO_CHANGE, |c| &c.action)
    }

    /// The resources of a kind to delete.
    pub fn deletions(&self, kind: Kind) -> impl Iterator<Item = &Change> {
        self.changes
            .iter()
            .filter(move |c| c.kind == kind && c.action == Action::Delete)
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
    let mut plan = Plan {
        values: desired.clone(),
        changes: vec![],
        conflicts: vec![],
        problems: vec![],
    };
    let mut add =
        |kind: Kind, name: &str, found_foreign: Option<(&str, &Option<String>)>, action: Action| match found_foreign {
            Some((what, tag)) => plan.conflicts.push(foreign_message(what, name, tag)),
            None => plan.changes.push(Change {
                kind,
                name: name.to_string(),
                id: None,
                action,
            }),
        };
    fn foreign<'a, T>(found: &'a Found<T>, what: &'a str) -> Option<(&'a str, &'a Option<String>)> {
        match found {
            Found::Foreign(tag) => Some((what, tag)),
            _ => None,
        }
    }
    // The API the roles' policy names: none while it is to be made or replaced.
    let api_id = actual
        .api
        .ours()
        .filter(|a| api::is_websocket(a))
        .map(|a| a.id.as_str());

    for spec in &desired.tables {
        let found = actual.tables.get(&spec.name).unwrap_or(&Found::Missing);
        let action = table::table_action(spec, found.ours(), &desired.tags);
        add(Kind::Table, &spec.name, foreign(found, "table"), action);
    }
    for spec in &desired.roles {
        let found = actual.roles.get(&spec.name).unwrap_or(&Found::Missing);
        let policy = api_id.map(|id| desired.role_policy(spec, id));
        let action = role::role_action(found.ours(), policy.as_ref(), &desired.tags);
        add(Kind::Role, &spec.name, foreign(found, "IAM role"), action);
    }
    for spec in &desired.log_groups {
        let found = actual.log_groups.get(&spec.name).unwrap_or(&Found::Missing);
        let action = log_group::log_group_action(spec, found.ours(), &desired.tags);
        add(Kind::LogGroup, &spec.name, foreign(found, "log group"), action);
    }
    match &desired.secret {
        Some(spec) => {
            let action = secret::secret_action(actual.secret.ours(), &desired.tags);
            add(Kind::Secret, &spec.name, foreign(&actual.secret, "secret"), action);
        }
        // Another auth mode: a secret of the stack's is not needed any more.
        None if actual.secret.ours().is_some() => {
            add(Kind::Secret, &desired.names.token_secret(), None, Action::Delete);
        }
        None => {}
    }
    // The alarms' topic, then the alarms, which name it and the API.
    let topic = desired.names.alarm_topic();
    let topic_arn = actual.topic.ours().map(|t| t.arn.as_str());
    if let Some(spec) = &desired.alarms {
        let action = alarms::topic_action(spec, actual.topic.ours(), &desired.tags);
        add(Kind::Topic, &topic, foreign(&actual.topic, "SNS topic"), action);
        for alarm in &spec.alarms {
            let found = actual.alarms.get(&alarm.name).unwrap_or(&Found::Missing);
            let live = api_id.zip(topic_arn);
            let action = alarms::alarm_action(alarm, found.ours(), live, &desired.tags);
            add(Kind::Alarm, &alarm.name, foreign(found, "alarm"), action);
        }
    }
    let wanted_alarms: Vec<&str> = desired
        .alarms
        .iter()
        .flat_map(|a| a.alarms.iter().map(|alarm| alarm.name.as_str()))
        .collect();
    for (name, found) in &actual.alarms {
        if found.ours().is_some() && !wanted_alarms.contains(&name.as_str()) {
            add(Kind::Alarm, name, None, Action::Delete);
        }
    }
    if desired.alarms.is_none() && actual.topic.ours().is_some() {
        add(Kind::Topic, &topic, None, Action::Delete);
    }
    // The bucket of the stack's lock: a real `up` has made it (to lock) by
    // the time it plans; a dry run may not have.
    let bucket_action = match actual.bucket.ours() {
        None => Action::Create,
        Some(state) => Action::update_or_nothing(tag_changes(&state.tags, &desired.tags).into_iter().collect()),
    };
    add(
        Kind::Bucket,
        &desired.names.bucket(),
        foreign(&actual.bucket, "S3 bucket"),
        bucket_action,
    );
    for spec in &desired.functions {
        let found = actual.functions.get(&spec.function).unwrap_or(&Found::Missing);
        let role_arn = desired.names.role_arn(&spec.role);
        let action = match found.ours() {
            None => Action::Create,
            Some(state) => {
                let mut changes = super::function::function_changes(spec, state, &role_arn, &desired.tags);
                // A stack deployed before the secret moved to Secrets Manager:
                // its value moves there, so the tokens issued stay valid.
                if spec.function == Function::Authorizer
                    && desired.secret.is_some()
                    && actual.secret.is_missing()
                    && actual.authorizer_holds_the_secret()
                {
                    changes.push(Detail::MoveTokenSecret);
                }
                Action::update_or_nothing(changes)
            }
        };
        add(Kind::Function, &spec.name, foreign(found, "Lambda function"), action);
    }
    // Then a release of the functions as they will be.
    let functions = desired
        .functions
        .iter()
        .map(|spec| {
            (
                spec.function,
                actual.functions.get(&spec.function).and_then(|f| f.ours()),
            )
        })
        .collect();
    let action = release::release_action(desired, &functions, &actual.releases);
    add(Kind::Release, release::ALIAS, None, action);
    plan.changes.extend(api_changes(desired, actual));
    // The domain, mapped to the stage of the live API.
    let live_api = actual
        .api
        .ours()
        .filter(|a| api::is_websocket(a))
        .map(|a| (a.id.as_str(), desired.api.stage.as_str()));
    let domain = domain::domain_changes(desired.domain.as_ref(), &actual.domain, live_api, &desired.tags);
    plan.changes.extend(domain);
    if desired.domain.is_some() {
        plan.problems.extend(actual.domain.problems.iter().cloned());
    }
    plan
}

/// The API, its integrations, authorizer, routes, permissions and stage.
/// Each step carries the id of the live part it changes, so `apply` needs
/// nothing else to find it.
pub fn api_changes(desired: &Desired, actual: &Actual) -> Vec<Change> {
    let names = &desired.names;
    let spec = &desired.api;
    let change = |kind: Kind, name: &str, id: Option<&str>, action: Action| Change {
        kind,
        name: name.to_string(),
        id: id.map(str::to_string),
        action,
    };
    let mut changes = vec![];
    let api = actual.api.ours();
    // An API of another protocol is replaced: every part is made anew.
    let live = api.filter(|a| api::is_websocket(a));
    changes.push(change(
        Kind::Api,
        &spec.name,
        api.map(|a| a.id.as_str()),
        api::api_action(
            api,
            &desired.tags,
            desired.domain.as_ref().is_some_and(|d| d.disable_execute_api),
        ),
    ));
    for duplicate in api.map(|a| a.duplicates.as_slice()).unwrap_or_default() {
        changes.push(change(Kind::Api, &spec.name, Some(duplicate), Action::Delete));
    }

    let authorizer = live.and_then(|api| api.authorizers.iter().find(|a| a.name == spec.authorizer));
    let authorizer_action = authorizer::authorizer_action(authorizer, &names.invocation_uri(Function::Authorizer));
    let mut parts_changed = authorizer_action != Action::NoChange;
    changes.push(change(
        Kind::Authorizer,
        &spec.authorizer,
        authorizer.map(|a| a.id.as_str()),
        authorizer_action,
    ));

    for route in &spec.routes {
        let uri = names.invocation_uri(route.function);
        let integration = live.and_then(|api| integration::find(&api.integrations, &uri));
        let integration_action = integration::integration_action(integration, &uri);
        parts_changed |= integration_action != Action::NoChange;
        changes.push(change(
            Kind::Integration,
            &names.function(route.function),
            integration.map(|i| i.id.as_str()),
            integration_action,
        ));

        let target = route::RouteTarget {
            target: integration.map(|i| format!("integrations/{}", i.id)),
            authorizer_id: authorizer.filter(|_| route.authorized).map(|a| a.id.clone()),
        };
        let found = live.and_then(|api| api.routes.iter().find(|r| r.key == route.key));
        let route_action = match found {
            None => Action::Create,
            Some(r) => Action::update_or_nothing(route::route_changes(r, &target, route.authorized)),
        };
        parts_changed |= route_action != Action::NoChange;
        changes.push(change(
            Kind::Route,
            &route.key,
            found.map(|r| r.id.as_str()),
            route_action,
        ));
    }
    // The keep-alive: answered by API Gateway itself (see keep_alive).
    let no_routes = (Vec::new(), Vec::new(), keep_alive::KeepAliveState::default());
    let (routes, integrations, keep_alive_state) = live
        .map(|api| (api.routes.clone(), api.integrations.clone(), api.keep_alive.clone()))
        .unwrap_or(no_routes);
    for change in keep_alive::keep_alive_changes(&routes, &integrations, &keep_alive_state) {
        parts_changed |= change.action != Action::NoChange;
        changes.push(change);
    }
    for extra in live
        .map(|api| api.routes.as_slice())
        .unwrap_or_default()
        .iter()
        .filter(|r| r.key != keep_alive::ROUTE_KEY && !spec.routes.iter().any(|s| s.key == r.key))
    {
        parts_changed = true;
        changes.push(change(Kind::Route, &extra.key, Some(&extra.id), Action::Delete));
    }

    for function in Function::ALL {
        let state = actual.functions.get(&function).and_then(|f| f.ours());
        let have = state
            .and_then(|f| f.live.as_deref())
            .and_then(|live| live.permissions.get(permission::PERMISSION_ID));
        // Stacks from before the alias granted the function as a whole.
        let unqualified = state.is_some_and(|f| f.permissions.contains_key(permission::UNQUALIFIED_PERMISSION_ID));
        // Known once the API (and, for the authorizer, its authorizer) is.
        let wanted = live
            .filter(|_| function != Function::Authorizer || authorizer.is_some())
            .map(|api| permission::permission_source_arn(names, function, &api.id, authorizer.map(|a| a.id.as_str())));
        let action = permission::permission_action(have.map(String::as_str), wanted.as_deref(), unqualified);
        changes.push(change(Kind::Permission, &names.function(function), None, action));
    }

    let stage = live.and_then(|api| api.stage.as_ref().map(|stage| (api, stage)));
    let stage_action = stage::stage_action(stage, parts_changed, &desired.tags, spec);
    changes.push(change(Kind::Stage, &spec.stage, None, stage_action));
    changes
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
    use crate::stack::Names;
    use crate::stack::desired::{Code, FunctionSpec, LogGroupSpec, RUNTIME, TableSpec, trust_policy};
    use crate::stack::function::{FunctionState, function_changes};
    use crate::stack::log_group::log_group_action;
    use crate::stack::role::role_action;
    use crate::stack::route::{RouteState, RouteTarget, route_changes};
    use crate::stack::stage::{DEPLOYMENT_MARKER, ServedRoute, deployment_description};
    use crate::stack::table::{KEYS_ONLY, TableState, table_action};

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
        Desired::new(&settings, names, &code)
    }

    fn table_state(spec: &TableSpec, tags: &BTreeMap<String, String>) -> TableState {
        TableState {
            status: "ACTIVE".into(),
            partition_key: Some(spec.partition_key.clone()),
            sort_key: spec.sort_key.clone(),
            indexes: spec
                .indexes
                .iter()
                .map(|(n, k)| (n.clone(), k.clone(), KEYS_ONLY.into()))
                .collect(),
            billing_mode: Some("PAY_PER_REQUEST".into()),
            ttl_attribute: Some("ttl".into()),
            unready_indexes: vec![],
            backfilling_indexes: vec![],
            item_count: 0,
            tags: tags.clone(),
        }
    }

    fn update(changes: Vec<Detail>) -> Action {
        Action::Update { changes }
    }

    #[test]
    fn table_cases() {
        let d = desired();
        let (spec, tags) = (&d.tables[0], &d.tags);
        let same = table_state(spec, tags);
        assert_eq!(table_action(spec, None, tags), Action::Create);
        assert_eq!(table_action(spec, Some(&same), tags), Action::NoChange);
        let mut no_ttl = same.clone();
        no_ttl.ttl_attribute = None;
        assert_eq!(
            table_action(spec, Some(&no_ttl), tags),
            update(vec![Detail::Ttl {
                attribute: "ttl".into()
            }])
        );
        let mut provisioned = same.clone();
        provisioned.billing_mode = Some("PROVISIONED".into());
        assert_eq!(
            table_action(spec, Some(&provisioned), tags).to_string_for_test(),
            "billing PROVISIONED → PAY_PER_REQUEST"
        );
        let mut other_key = same.clone();
        other_key.partition_key = Some("id".into());
        assert!(matches!(
            table_action(spec, Some(&other_key), tags),
            Action::Replace { .. }
        ));
    }

    #[test]
    fn indexes_change_in_place_one_by_one_and_a_changed_index_is_made_again() {
        let d = desired();
        let (spec, tags) = (&d.tables[0], &d.tags);
        let (first, first_key) = spec.indexes[0].clone();
        let (second, second_key) = spec.indexes[1].clone();
        let mut missing = table_state(spec, tags);
        missing.indexes.remove(0);
        missing
            .indexes
            .push(("by-email".into(), "email".into(), KEYS_ONLY.into()));
        assert_eq!(
            table_action(spec, Some(&missing), tags),
            update(vec![
                Detail::DeleteIndex {
                    name: "by-email".into()
                },
                Detail::AddIndex {
                    name: first.clone(),
                    key: first_key
                },
            ]),
            "an index added, one not chatctl's removed: the table and its items stay"
        );
        let mut building = table_state(spec, tags);
        building.unready_indexes = vec![second.clone()];
        assert_eq!(
            table_action(spec, Some(&building), tags).to_string_for_test(),
            "index by-user still being built",
            "an index a timed-out `up` left building is waited for, not taken as there"
        );
        let mut projected = table_state(spec, tags);
        projected.indexes[1].2 = "ALL".into();
        assert_eq!(
            table_action(spec, Some(&projected), tags),
            update(vec![
                Detail::DeleteIndex { name: second.clone() },
                Detail::AddIndex {
                    name: second,
                    key: second_key
                },
            ]),
            "DynamoDB cannot change an index's projection: deleted, then made again"
        );
    }

    #[test]
    fn tags_are_set_and_removed_but_never_aws_ones() {
        let want = BTreeMap::from([
            ("chatctl:stack".to_string(), "chat".to_string()),
            ("team".to_string(), "chat".to_string()),
        ]);
        let have = BTreeMap::from([
            ("chatctl:stack".to_string(), "chat".to_string()),
            ("team".to_string(), "web".to_string()),
            ("old".to_string(), "x".to_string()),
            ("aws:cloudformation:stack-name".to_string(), "s".to_string()),
        ]);
        let detail = tag_changes(&have, &want).unwrap();
        assert_eq!(
            detail,
            Detail::Tags {
                set: BTreeMap::from([("team".to_string(), "chat".to_string())]),
                remove: vec!["old".into()],
            }
        );
        assert_eq!(detail.to_string(), "tags + team=chat, - old");
        assert_eq!(tag_changes(&want, &want), None);
    }

    impl Action {
        /// The details of an update as the plan prints them.
        fn to_string_for_test(&self) -> String {
            self.changes()
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        }
    }

    #[test]
    fn role_and_log_group_cases() {
        let d = desired();
        let tags = &d.tags;
        let policy = d.role_policy(&d.roles[0], "api");
        let state = crate::stack::role::RoleState {
            trust_policy: Some(trust_policy()),
            policy: Some(policy.clone()),
            tags: tags.clone(),
        };
        assert_eq!(role_action(None, Some(&policy), tags), Action::Create);
        assert_eq!(role_action(Some(&state), Some(&policy), tags), Action::NoChange);
        assert_eq!(
            role_action(Some(&state), None, tags),
            update(vec![Detail::InlinePolicy { grants: None }]),
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
        let state_before = crate::stack::role::RoleState {
            policy: Some(older),
            ..state.clone()
        };
        assert_eq!(
            role_action(Some(&state_before), Some(&policy), tags).to_string_for_test(),
            "inline policy: + Allow dynamodb:BatchGetItem on table/chat-connections, \
             table/chat-connections/index/*, table/chat-messages; - Allow dynamodb:Scan on \
             table/chat-connections, table/chat-connections/index/*, table/chat-messages"
        );
        let spec = LogGroupSpec {
            name: "g".into(),
            retention_days: 14,
        };
        assert_eq!(log_group_action(&spec, None, tags), Action::Create);
        let state = crate::stack::log_group::LogGroupState {
            retention_days: Some(14),
            tags: tags.clone(),
        };
        assert_eq!(log_group_action(&spec, Some(&state), tags), Action::NoChange);
        let never = crate::stack::log_group::LogGroupState {
            retention_days: None,
            tags: BTreeMap::new(),
        };
        assert_eq!(
            log_group_action(&spec, Some(&never), tags).to_string_for_test(),
            "retention never expire → 14 days, tags + chatctl:stack=chat"
        );
    }

    fn function_state(spec: &FunctionSpec, role_arn: &str, tags: &BTreeMap<String, String>) -> FunctionState {
        FunctionState {
            version: Some("$LATEST".into()),
            live: None,
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
            tags: tags.clone(),
        }
    }

    /// A stack whose authorizer holds the secret in its environment (an
    /// older chatctl's): the secret moves to Secrets Manager, as one typed
    /// step of the authorizer; with another auth mode, the secret goes.
    #[test]
    fn the_secret_moves_from_the_environment_and_goes_with_another_auth_mode() {
        let d = desired();
        let spec = d.function(Function::Authorizer);
        let mut old = function_state(spec, &d.names.role_arn(&spec.role), &d.tags);
        old.env.remove(chat_core::config::vars::TOKEN_SECRET_ID);
        old.env
            .insert(secret::LEGACY_ENV.into(), "old-value-old-value-old-value-old".into());
        let actual = Actual {
            tables: BTreeMap::new(),
            roles: BTreeMap::new(),
            log_groups: BTreeMap::new(),
            functions: BTreeMap::from([(Function::Authorizer, Found::Ours(old))]),
            api: Found::Missing,
            secret: Found::Missing,
            topic: Found::Missing,
            alarms: BTreeMap::new(),
            bucket: Found::Missing,
            releases: vec![],
            domain: Default::default(),
        };
        let moving = plan(&d, &actual);
        assert_eq!(moving.action(Kind::Secret, "chatctl/chat/token"), &Action::Create);
        let authorizer = moving.step(Kind::Function, "chat-authorizer").unwrap();
        assert_eq!(
            authorizer.to_string(),
            "  ~ function chat-authorizer (environment CHAT_TOKEN_SECRET CHAT_TOKEN_SECRET_ID, token secret → \
             Secrets Manager, tokens issued stay valid)"
        );
        assert!(!authorizer.to_string().contains("old-value"));

        let oidc =
            ConfigFile::parse("auth = \"oidc\"\n[oidc]\nissuer = \"https://idp.example.com\"\naudience = \"app\"")
                .unwrap();
        let settings = Settings::resolve(&oidc, &Overrides::default()).unwrap();
        let without = Desired::new(&settings, d.names.clone(), &BTreeMap::new());
        let state = secret::SecretState {
            arn: "arn:aws:secretsmanager:eu-west-1:123456789012:secret:chatctl/chat/token-AbCdEf".into(),
            scheduled_for_deletion: false,
            tags: d.tags.clone(),
        };
        let leaving = plan(
            &without,
            &Actual {
                secret: Found::Ours(state),
                ..actual
            },
        );
        let deleted: Vec<String> = leaving.deletions(Kind::Secret).map(|c| c.to_string()).collect();
        assert_eq!(deleted, ["  - secret chatctl/chat/token (at once, no recovery window)"]);
        assert_eq!(leaving.destructive().len(), 1, "asked first");
    }

    #[test]
    fn function_cases_tell_code_from_configuration() {
        let d = desired();
        let tags = &d.tags;
        let spec = d.function(Function::SendMessage);
        let role = d.names.role_arn(&spec.role);
        let same = function_state(spec, &role, tags);
        let changes = |spec: &FunctionSpec, state: &FunctionState| function_changes(spec, state, &role, tags);
        assert_eq!(changes(spec, &same), []);

        let mut old_code = same.clone();
        old_code.code_sha256 = Some("OLD".into());
        let code = changes(spec, &old_code);
        assert!(code.iter().all(Detail::is_function_code));
        assert_eq!(update(code).to_string_for_test(), "code OLD… → NEW…");

        let mut small = same.clone();
        small.memory_mb = Some(256);
        let memory = changes(spec, &small);
        assert!(memory.iter().all(Detail::is_function_configuration));
        assert_eq!(update(memory).to_string_for_test(), "memory 256 → 128");

        // A stack deployed when each function had a binary of its own: the
        // Handler now names the function, for the one binary to dispatch on.
        let mut own_binary = same.clone();
        own_binary.handler = Some("bootstrap".into());
        assert_eq!(
            update(changes(spec, &own_binary)).to_string_for_test(),
            "handler bootstrap → sendmessage"
        );

        let mut env = same.clone();
        env.env.insert("CHAT_MAX_CONNECTIONS".into(), "5".into());
        assert_eq!(
            changes(spec, &env),
            [Detail::Environment {
                names: vec!["CHAT_MAX_CONNECTIONS".into()]
            }],
            "names only, never values"
        );

        let mut arm = spec.clone();
        arm.arch = Arch::Arm64;
        let moved = changes(&arm, &same);
        assert!(
            !moved.is_empty() && moved.iter().all(Detail::is_function_code),
            "a new architecture ships with new code"
        );

        let mut untagged = same.clone();
        untagged.tags.insert("team".into(), "web".into());
        let retag = changes(spec, &untagged);
        assert!(
            !retag
                .iter()
                .any(|c| c.is_function_code() || c.is_function_configuration())
        );
        assert_eq!(update(retag).to_string_for_test(), "tags - team");

        let mut unknown_code = spec.clone();
        unknown_code.code = None;
        assert_eq!(changes(&unknown_code, &old_code), [], "status without a build");
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
            route_response_selection_expression: None,
        };
        assert_eq!(route_changes(&route, &target, true), []);
        let mut open = route.clone();
        open.authorization_type = Some("NONE".into());
        open.authorizer_id = None;
        assert_eq!(
            route_changes(&open, &target, true),
            [Detail::Authorization { to: "CUSTOM".into() }, Detail::Authorizer]
        );
        let mut elsewhere = route.clone();
        elsewhere.target = Some("integrations/i9".into());
        assert_eq!(route_changes(&elsewhere, &target, true), [Detail::Target]);
    }

    #[test]
    fn a_new_stack_plans_every_step_and_a_plan_reads_back_as_it_was_written() {
        let d = desired();
        let empty = Actual {
            tables: BTreeMap::new(),
            roles: BTreeMap::new(),
            log_groups: BTreeMap::new(),
            functions: BTreeMap::new(),
            api: Found::Missing,
            secret: Found::Missing,
            topic: Found::Missing,
            alarms: BTreeMap::new(),
            bucket: Found::Missing,
            releases: vec![],
            domain: Default::default(),
        };
        let new = plan(&d, &empty);
        assert!(new.changes.iter().all(|c| c.action == Action::Create));
        // Tables, roles, log groups, the secret, the alarms' topic and six alarms, the bucket, functions,
        // the release, the API, its authorizer, integrations and routes, the keep-alive's two,
        // permissions, the stage.
        assert_eq!(
            new.changes.len(),
            2 + 2 + 7 + 1 + 1 + 6 + 1 + 7 + 1 + 1 + 1 + 6 + 6 + 2 + 7 + 1
        );
        assert_eq!(new.action(Kind::Secret, "chatctl/chat/token"), &Action::Create);
        assert_eq!(new.action(Kind::Route, "$connect"), &Action::Create);
        assert_eq!(new.action(Kind::Route, "nosuchroute"), &Action::NoChange);

        let mut with_details = new.clone();
        with_details.changes.push(Change {
            kind: Kind::Route,
            name: "old".into(),
            id: Some("r9".into()),
            action: Action::Delete,
        });
        with_details.changes[0].action = update(vec![
            Detail::AddIndex {
                name: "by-room".into(),
                key: "room".into(),
            },
            Detail::Tags {
                set: BTreeMap::from([("team".to_string(), "chat".to_string())]),
                remove: vec![],
            },
        ]);
        let json = serde_json::to_string(&with_details).unwrap();
        let back: Plan = serde_json::from_str(&json).unwrap();
        assert_eq!(back, with_details);
        assert!(
            !json.contains(&format!("\"{}\"", secret::LEGACY_ENV)),
            "no secret variable"
        );
        assert_eq!(with_details.deletions(Kind::Route).count(), 1);
        assert_eq!(with_details.changes.last().unwrap().to_string(), "  - route old (r9)");
    }

    #[test]
    fn deleting_an_index_asks_first_adding_one_does_not() {
        let change = |details: Vec<Detail>| Change {
            kind: Kind::Table,
            name: "chat-connections".into(),
            id: None,
            action: update(details),
        };
        let add = Plan {
            values: desired(),
            changes: vec![change(vec![Detail::AddIndex {
                name: "by-user".into(),
                key: "user".into(),
            }])],
            conflicts: vec![],
            problems: vec![],
        };
        assert!(add.destructive().is_empty());
        let remake = Plan {
            values: desired(),
            changes: vec![change(vec![Detail::DeleteIndex { name: "by-user".into() }])],
            conflicts: vec![],
            problems: vec![],
        };
        assert_eq!(remake.destructive().len(), 1);
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
