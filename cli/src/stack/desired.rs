//! What the stack should be, derived from the settings alone (plus the code
//! hashes), so it can be compared with what exists. No secret value is
//! part of it: the token secret's value lives in Secrets Manager only.

use std::collections::BTreeMap;
use std::path::PathBuf;

use chat_core::config::vars;
use chat_core::store::schema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Function, Names, STACK_TAG};
use crate::settings::{Arch, AuthMode, Settings, StageSettings};

pub const RUNTIME: &str = "provided.al2023";
pub const ROUTE_SELECTION_EXPRESSION: &str = "$request.body.action";
/// The name of the inline policy on each of the stack's roles.
pub const POLICY_NAME: &str = "chatctl";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableSpec {
    pub name: String,
    pub partition_key: String,
    pub sort_key: Option<String>,
    /// (index name, partition key), keys-only projections.
    pub indexes: Vec<(String, String)>,
    pub ttl_attribute: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoleSpec {
    pub name: String,
    /// The authorizer's role may only write its logs.
    pub for_authorizer: bool,
}

/// The environment variable that held the token secret itself before it
/// moved to Secrets Manager: a stack deployed then still has it until its
/// next `up`.
pub const LEGACY_ENV: &str = "CHAT_TOKEN_SECRET";

/// The stack's alarms and the SNS topic they notify.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlarmsSpec {
    pub topic: String,
    /// Email addresses subscribed to the topic.
    pub email: Vec<String>,
    pub alarms: Vec<AlarmSpec>,
}

/// One CloudWatch alarm: `expression` (metric math over `metrics`) at or
/// above `threshold` for `evaluation_periods` periods.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlarmSpec {
    pub name: String,
    pub description: String,
    pub expression: String,
    pub metrics: Vec<MetricSpec>,
    pub period_seconds: i32,
    pub threshold: f64,
    pub evaluation_periods: i32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricSpec {
    pub namespace: String,
    pub name: String,
    /// (name, value); the value [`API_ID`] stands for the API's id, known
    /// once the API exists.
    pub dimensions: Vec<(String, String)>,
    pub stat: String,
}

/// Stands for the API's id in an alarm's dimensions until it is known.
pub const API_ID: &str = "(the API's id)";

/// The Secrets Manager secret that signs tokens (`auth = "token"`); its
/// value is made when it is created, never planned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecretSpec {
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogGroupSpec {
    pub name: String,
    pub retention_days: i32,
}

/// A function's code: the zip cargo-lambda built and its SHA-256, base64 as Lambda reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Code {
    pub zip: PathBuf,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionSpec {
    pub function: Function,
    pub name: String,
    pub role: String,
    pub arch: Arch,
    pub memory_mb: i32,
    pub timeout_seconds: i32,
    pub env: BTreeMap<String, String>,
    /// None when the code is not known (status without a build).
    pub code: Option<Code>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteSpec {
    pub key: String,
    pub function: Function,
    /// `$connect` runs the authorizer first.
    pub authorized: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiSpec {
    pub name: String,
    pub stage: String,
    pub routes: Vec<RouteSpec>,
    pub authorizer: String,
    /// The stage's throttling, metrics and logging.
    pub settings: StageSettings,
    /// Where and how the stage writes its access log, when it does.
    pub access_log: Option<AccessLog>,
}

/// A stage's access log settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccessLog {
    /// The log group's ARN, without `:*`.
    pub destination_arn: String,
    pub format: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Desired {
    pub names: Names,
    pub tags: BTreeMap<String, String>,
    pub tables: Vec<TableSpec>,
    pub roles: Vec<RoleSpec>,
    pub log_groups: Vec<LogGroupSpec>,
    pub functions: Vec<FunctionSpec>,
    pub api: ApiSpec,
    /// The token secret, with `auth = "token"`.
    #[serde(default)]
    pub secret: Option<SecretSpec>,
    /// Unless `[alarms] enabled = false`.
    #[serde(default)]
    pub alarms: Option<AlarmsSpec>,
    /// `[releases] keep`.
    #[serde(default = "releases_kept")]
    pub releases_kept: usize,
    /// `[domain]`: the chat on a name of its own.
    #[serde(default)]
    pub domain: Option<super::domain::DomainSpec>,
}

fn releases_kept() -> usize {
    crate::settings::DEFAULT_RELEASES_KEPT
}

/// The tags of every resource of the stack: `[tags]` and the stack's own.
pub fn stack_tags(settings: &Settings, names: &Names) -> BTreeMap<String, String> {
    let mut tags = settings.tags.clone();
    tags.insert(STACK_TAG.to_string(), names.stack.clone());
    tags
}

impl Desired {
    /// `code` is the built zips, when known.
    pub fn new(settings: &Settings, names: Names, code: &BTreeMap<Function, Code>) -> Desired {
        let tags = stack_tags(settings, &names);
        let tables = vec![
            TableSpec {
                name: names.connections_table(),
                partition_key: schema::CONNECTION_ID.into(),
                sort_key: None,
                indexes: vec![
                    (schema::ROOM_INDEX.into(), schema::ROOM.into()),
                    (schema::USER_INDEX.into(), schema::USER.into()),
                ],
                ttl_attribute: schema::TTL.into(),
            },
            TableSpec {
                name: names.messages_table(),
                partition_key: schema::CONVERSATION.into(),
                sort_key: Some(schema::MESSAGE_ID.into()),
                indexes: vec![],
                ttl_attribute: schema::TTL.into(),
            },
        ];
        let roles = vec![
            RoleSpec {
                name: names.handlers_role(),
                for_authorizer: false,
            },
            RoleSpec {
                name: names.authorizer_role(),
                for_authorizer: true,
            },
        ];
        let mut log_groups: Vec<LogGroupSpec> = Function::ALL
            .into_iter()
            .map(|function| LogGroupSpec {
                name: names.log_group(function),
                retention_days: settings.log_retention_days,
            })
            .collect();
        if settings.stage_settings.access_logs {
            log_groups.push(LogGroupSpec {
                name: names.access_log_group(),
                retention_days: settings.log_retention_days,
            });
        }
        let functions = Function::ALL
            .into_iter()
            .map(|function| FunctionSpec {
                function,
                name: names.function(function),
                role: if function == Function::Authorizer {
                    names.authorizer_role()
                } else {
                    names.handlers_role()
                },
                arch: settings.arch,
                memory_mb: settings.memory_mb,
                timeout_seconds: settings.timeout_seconds,
                env: function_env(settings, &names, function),
                code: code.get(&function).cloned(),
            })
            .collect();
        let routes = Function::routed()
            .map(|function| RouteSpec {
                key: function.route_key().unwrap_or_default().to_string(),
                function,
                authorized: function == Function::Connect,
            })
            .collect();
        let api = ApiSpec {
            name: names.api(),
            stage: names.stage.clone(),
            routes,
            authorizer: names.authorizer(),
            settings: settings.stage_settings.clone(),
            access_log: settings.stage_settings.access_logs.then(|| AccessLog {
                destination_arn: names.log_group_arn_of(&names.access_log_group()),
                format: access_log_format(),
            }),
        };
        let names_for_alarms = names.clone();
        let secret = (settings.auth == AuthMode::Token).then(|| SecretSpec {
            name: names.token_secret(),
        });
        Desired {
            names,
            tags,
            tables,
            roles,
            log_groups,
            functions,
            api,
            secret,
            alarms: settings.alarms.enabled.then(|| alarms(settings, &names_for_alarms)),
            releases_kept: settings.releases_kept,
            domain: settings.domain.as_ref().map(super::domain::DomainSpec::of),
        }
    }

    /// Where the stack's steps write.
    pub fn stack(&self) -> super::base::Stack<'_> {
        super::base::Stack {
            names: &self.names,
            tags: &self.tags,
        }
    }

    pub fn function(&self, function: Function) -> &FunctionSpec {
        // Every function is in the list by construction.
        self.functions
            .iter()
            .find(|f| f.function == function)
            .unwrap_or(&self.functions[0])
    }

    /// The inline policy of a role: exactly this stack's tables, API and log groups.
    pub fn role_policy(&self, role: &RoleSpec, api_id: &str) -> Value {
        let names = &self.names;
        let log_groups: Vec<Value> = Function::ALL
            .into_iter()
            .filter(|f| (*f == Function::Authorizer) == role.for_authorizer)
            .map(|f| json!(format!("{}:*", names.log_group_arn(f))))
            .collect();
        let mut statements = vec![json!({
            "Sid": "WriteOwnLogs",
            "Effect": "Allow",
            "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
            "Resource": log_groups,
        })];
        if role.for_authorizer && self.secret.is_some() {
            statements.push(json!({
                "Sid": "ReadTokenSecret",
                "Effect": "Allow",
                "Action": ["secretsmanager:GetSecretValue"],
                "Resource": [self.names.token_secret_arn_pattern()],
            }));
        }
        if !role.for_authorizer {
            let connections = names.table_arn(&names.connections_table());
            let messages = names.table_arn(&names.messages_table());
            statements.push(json!({
                "Sid": "ChatTables",
                "Effect": "Allow",
                "Action": chat_core::store::IAM_ACTIONS,
                "Resource": [connections.clone(), format!("{connections}/index/*"), messages],
            }));
            statements.push(json!({
                "Sid": "ReplyToConnections",
                "Effect": "Allow",
                "Action": ["execute-api:ManageConnections"],
                // Any stage of this API: a stage renamed by a later `up` keeps working until removed.
                "Resource": [format!("{}/*/POST/@connections/*", names.execute_api_arn(api_id))],
            }));
        }
        json!({"Version": "2012-10-17", "Statement": statements})
    }
}

/// The access log's fields: a JSON object per request, made of API
/// Gateway's `$context` variables for WebSocket APIs. The format must hold
/// `$context.requestId` (API Gateway developer guide, "Configure logging for
/// WebSocket APIs"; aws-cdk #11100). `chatctl dev` writes the same lines.
pub const ACCESS_LOG_FIELDS: [(&str, &str); 8] = [
    ("requestId", "$context.requestId"),
    ("requestTime", "$context.requestTime"),
    ("connectionId", "$context.connectionId"),
    ("eventType", "$context.eventType"),
    ("routeKey", "$context.routeKey"),
    ("status", "$context.status"),
    ("error", "$context.error.message"),
    ("integrationLatency", "$context.integrationLatency"),
];

/// The access log format given to API Gateway.
pub fn access_log_format() -> String {
    let fields = ACCESS_LOG_FIELDS
        .iter()
        .map(|(name, variable)| (name.to_string(), serde_json::Value::from(*variable)));
    serde_json::Value::Object(fields.collect()).to_string()
}

/// The alarms `[alarms]` asks for, each over every function, both tables or
/// the stage at once (metric math), so that a stack has a handful of alarms
/// rather than one per function and metric.
fn alarms(settings: &Settings, names: &Names) -> AlarmsSpec {
    let alarm = &settings.alarms;
    let period_seconds = alarm.period_minutes as i32 * 60;
    let of_functions = |metric: &str, stat: &str| -> Vec<MetricSpec> {
        Function::ALL
            .into_iter()
            .map(|f| MetricSpec {
                namespace: "AWS/Lambda".into(),
                name: metric.into(),
                dimensions: vec![("FunctionName".into(), names.function(f))],
                stat: stat.into(),
            })
            .collect()
    };
    let of_stage: Vec<MetricSpec> = ["IntegrationError", "ExecutionError"]
        .into_iter()
        .map(|metric| MetricSpec {
            namespace: "AWS/ApiGateway".into(),
            name: metric.into(),
            dimensions: vec![("ApiId".into(), API_ID.into()), ("Stage".into(), names.stage.clone())],
            stat: "Sum".into(),
        })
        .collect();
    let of_tables: Vec<MetricSpec> = [names.connections_table(), names.messages_table()]
        .into_iter()
        .flat_map(|table| {
            ["ReadThrottleEvents", "WriteThrottleEvents"].map(|metric| MetricSpec {
                namespace: "AWS/DynamoDB".into(),
                name: metric.into(),
                dimensions: vec![("TableName".into(), table.clone())],
                stat: "Sum".into(),
            })
        })
        .collect();
    // Published by the sendmessage handler in its log (embedded metric format).
    let failed_deliveries = vec![MetricSpec {
        namespace: chat_core::metrics::NAMESPACE.into(),
        name: chat_core::metrics::FAILED_DELIVERIES.into(),
        dimensions: vec![(
            chat_core::metrics::DIMENSION.into(),
            names.function(Function::SendMessage),
        )],
        stat: "Sum".into(),
    }];
    let timeout_ms = f64::from(settings.timeout_seconds) * 1000.0;
    let rules = [
        (
            "function-errors",
            "errors of the chat's functions",
            "SUM(METRICS())",
            of_functions("Errors", "Sum"),
            alarm.function_errors,
            f64::from(alarm.function_errors),
            1,
        ),
        (
            "function-throttles",
            "throttled invocations of the chat's functions",
            "SUM(METRICS())",
            of_functions("Throttles", "Sum"),
            alarm.function_throttles,
            f64::from(alarm.function_throttles),
            1,
        ),
        (
            "function-duration",
            "the slowest function's p99 duration near its timeout (ms)",
            "MAX(METRICS())",
            of_functions("Duration", "p99"),
            alarm.duration_p99_percent,
            timeout_ms * f64::from(alarm.duration_p99_percent) / 100.0,
            3,
        ),
        (
            "stage-errors",
            "integration and execution errors of the stage",
            "SUM(METRICS())",
            of_stage,
            alarm.stage_errors,
            f64::from(alarm.stage_errors),
            1,
        ),
        (
            "dynamodb-throttles",
            "throttled reads and writes of the chat's tables",
            "SUM(METRICS())",
            of_tables,
            alarm.dynamodb_throttles,
            f64::from(alarm.dynamodb_throttles),
            1,
        ),
        (
            "failed-deliveries",
            "messages that did not reach an open connection",
            "SUM(METRICS())",
            failed_deliveries,
            alarm.failed_deliveries,
            f64::from(alarm.failed_deliveries),
            1,
        ),
    ];
    AlarmsSpec {
        topic: names.alarm_topic(),
        email: alarm.email.clone(),
        alarms: rules
            .into_iter()
            .filter(|(_, _, _, _, setting, _, _)| *setting > 0)
            .map(
                |(suffix, what, expression, metrics, _, threshold, evaluation_periods)| AlarmSpec {
                    name: names.alarm(suffix),
                    description: format!(
                        "chatctl stack {}: {what} at or above {threshold} per {} min",
                        names.stack, alarm.period_minutes
                    ),
                    expression: expression.into(),
                    metrics,
                    period_seconds,
                    threshold,
                    evaluation_periods,
                },
            )
            .collect(),
    }
}

/// Who may assume the stack's roles: Lambda, nobody else.
pub fn trust_policy() -> Value {
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Service": "lambda.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }],
    })
}

fn function_env(settings: &Settings, names: &Names, function: Function) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    if function == Function::Authorizer {
        env.insert(vars::AUTH_MODE.to_string(), settings.auth.as_env().to_string());
        if settings.auth == AuthMode::Token {
            env.insert(vars::TOKEN_SECRET_ID.to_string(), names.token_secret());
        }
        if let Some(oidc) = &settings.oidc {
            env.insert(vars::OIDC_ISSUER.to_string(), oidc.issuer.clone());
            env.insert(vars::OIDC_AUDIENCE.to_string(), oidc.audience.clone());
            env.insert(vars::OIDC_USER_CLAIM.to_string(), oidc.user_claim.clone());
            if let Some(url) = &oidc.jwks_url {
                env.insert(vars::OIDC_JWKS_URL.to_string(), url.clone());
            }
        }
        return env;
    }
    env.insert(vars::CONNECTIONS_TABLE.to_string(), names.connections_table());
    env.insert(vars::MESSAGES_TABLE.to_string(), names.messages_table());
    env.extend(settings.function_limits_env());
    // With the API's own endpoint off, replies go through the domain, whose
    // root maps the stage (aws-facts.md §11, "custom domain and `@connections`").
    if let Some(domain) = settings.domain.as_ref().filter(|d| d.disable_execute_api) {
        env.insert(vars::CALLBACK_URL.to_string(), format!("https://{}", domain.name));
    }
    env
}

/// A new token secret: 32 random bytes, base64url.
pub fn new_secret() -> String {
    use base64::Engine;
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{ConfigFile, Overrides};

    pub fn names() -> Names {
        Names {
            stack: "chat".into(),
            stage: "dev".into(),
            region: "eu-west-1".into(),
            account: "123456789012".into(),
        }
    }

    fn desired() -> Desired {
        let settings = Settings::resolve(&ConfigFile::default(), &Overrides::default()).unwrap();
        Desired::new(&settings, names(), &BTreeMap::new())
    }

    #[test]
    fn names_derive_from_the_stack() {
        let d = desired();
        assert_eq!(d.tables[0].name, "chat-connections");
        assert_eq!(d.functions.len(), 7);
        assert_eq!(d.function(Function::SendMessage).name, "chat-sendmessage");
        assert_eq!(d.log_groups[0].name, "/aws/lambda/chat-authorizer");
        assert_eq!(d.tags[STACK_TAG], "chat");
        assert_eq!(d.api.routes.len(), 6);
        assert!(d.api.routes.iter().any(|r| r.key == "$connect" && r.authorized));
        assert_eq!(d.api.routes.iter().filter(|r| r.authorized).count(), 1);
    }

    #[test]
    fn only_the_authorizer_knows_the_secret_and_only_the_handlers_know_the_tables() {
        let d = desired();
        let authorizer = d.function(Function::Authorizer);
        assert_eq!(authorizer.env[vars::TOKEN_SECRET_ID], "chatctl/chat/token");
        assert_eq!(d.secret.as_ref().unwrap().name, "chatctl/chat/token");
        assert!(!authorizer.env.contains_key(vars::CONNECTIONS_TABLE));
        let join = d.function(Function::Join);
        assert!(!join.env.contains_key(vars::TOKEN_SECRET_ID));
        assert_eq!(join.env[vars::CONNECTIONS_TABLE], "chat-connections");
        assert_eq!(join.role, "chat-handlers");
        assert_eq!(authorizer.role, "chat-authorizer");
    }

    #[test]
    fn with_oidc_the_authorizer_knows_the_issuer_and_no_secret() {
        let file =
            ConfigFile::parse("auth = \"oidc\"\n[oidc]\nissuer = \"https://idp.example.com\"\naudience = \"app\"")
                .unwrap();
        let settings = Settings::resolve(&file, &Overrides::default()).unwrap();
        let d = Desired::new(&settings, names(), &BTreeMap::new());
        let env = &d.function(Function::Authorizer).env;
        assert_eq!(env[vars::AUTH_MODE], "oidc");
        assert_eq!(env[vars::OIDC_ISSUER], "https://idp.example.com");
        assert_eq!(env[vars::OIDC_AUDIENCE], "app");
        assert_eq!(env[vars::OIDC_USER_CLAIM], "sub");
        assert!(!env.contains_key(vars::OIDC_JWKS_URL));
        assert!(!env.contains_key(vars::TOKEN_SECRET_ID));
        assert_eq!(d.secret, None);
        // What the function reads back is what was meant.
        let mode = chat_core::config::AuthMode::from_lookup(|name| env.get(name).cloned()).unwrap();
        assert_eq!(mode, chat_core::config::AuthMode::Oidc(settings.oidc.clone().unwrap()));
    }

    #[test]
    fn policies_are_scoped_to_the_stack() {
        let d = desired();
        let handlers = d.role_policy(&d.roles[0], "abc123");
        let text = handlers.to_string();
        assert!(text.contains("arn:aws:dynamodb:eu-west-1:123456789012:table/chat-connections/index/*"));
        assert!(text.contains("arn:aws:execute-api:eu-west-1:123456789012:abc123/*/POST/@connections/*"));
        assert!(!text.contains("\"*\""), "no wildcard resources: {text}");
        let authorizer = d.role_policy(&d.roles[1], "abc123").to_string();
        assert!(!authorizer.contains("dynamodb") && !authorizer.contains("execute-api"));
        // The one secret, whatever random suffix AWS gave its ARN.
        assert!(authorizer.contains(
            "\"Action\":[\"secretsmanager:GetSecretValue\"],\"Effect\":\"Allow\",\"Resource\":[\"arn:aws:secretsmanager:eu-west-1:123456789012:secret:chatctl/chat/token-??????\"]"
        ), "{authorizer}");
        assert!(authorizer.contains("log-group:/aws/lambda/chat-authorizer:*"));
        assert!(!authorizer.contains("chat-join"));
    }

    #[test]
    fn secrets_are_random_and_long() {
        let (a, b) = (new_secret(), new_secret());
        assert_ne!(a, b);
        assert!(a.len() >= chat_core::config::MIN_TOKEN_SECRET_BYTES);
    }
}
