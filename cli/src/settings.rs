//! The stack's settings: defaults, overridden by `chatctl.toml`, overridden
//! by command-line flags.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use chat_core::config as limits;
use chat_core::oidc::OidcSettings;
use serde::{Deserialize, Serialize};

pub const DEFAULT_CONFIG_FILE: &str = "chatctl.toml";
pub const DEFAULT_STACK: &str = "chat";
pub const DEFAULT_STAGE: &str = "dev";
pub const DEFAULT_MEMORY_MB: i32 = 128;
pub const DEFAULT_TIMEOUT_SECONDS: i32 = 10;
pub const DEFAULT_LOG_RETENTION_DAYS: i32 = 14;
/// The longest stack name that keeps every derived name within AWS limits
/// (`{stack}-getmessages` and role names must fit in 64 characters).
const MAX_STACK_NAME: usize = 32;
/// Retention values CloudWatch Logs accepts.
const LOG_RETENTION_DAYS: [i32; 22] = [
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    #[default]
    #[serde(rename = "x86_64")]
    X86_64,
    Arm64,
}

impl Arch {
    pub fn as_lambda(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Arm64 => "arm64",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    #[default]
    Token,
    /// Tokens of the app's OpenID Connect provider, `[oidc]`.
    Oidc,
    None,
}

impl AuthMode {
    pub fn as_env(self) -> &'static str {
        match self {
            AuthMode::Token => "token",
            AuthMode::Oidc => "oidc",
            AuthMode::None => "none",
        }
    }
}

/// `[oidc]`: the identity provider whose tokens `auth = "oidc"` accepts.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcFile {
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub user_claim: Option<String>,
    pub jwks_url: Option<String>,
}

/// `chatctl.toml`. Every field is optional; unknown fields are errors, so a
/// typo never silently does nothing.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub stack: Option<String>,
    pub stage: Option<String>,
    pub region: Option<String>,
    pub arch: Option<Arch>,
    /// Lambda memory, MB.
    pub memory: Option<i32>,
    /// Lambda timeout, seconds.
    pub timeout: Option<i32>,
    pub auth: Option<AuthMode>,
    pub oidc: Option<OidcFile>,
    pub log_retention_days: Option<i32>,
    #[serde(default)]
    pub limits: LimitsFile,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    pub stage_settings: StageSettingsFile,
    #[serde(default)]
    pub alarms: AlarmsFile,
    #[serde(default)]
    pub releases: ReleasesFile,
    /// `[domain]`: the chat on a name of its own.
    pub domain: Option<DomainFile>,
    /// `[prices]`: `chatctl cost`'s prices, over AWS's published ones.
    #[serde(default)]
    pub prices: BTreeMap<String, f64>,
}

/// `[domain]`: the chat at `wss://NAME`, through an API Gateway custom
/// domain name, its certificate and a Route 53 alias record.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainFile {
    pub name: Option<String>,
    /// A Route 53 hosted zone id; default: the zone whose name is the
    /// longest suffix of `name`.
    pub zone_id: Option<String>,
    /// An ACM certificate covering `name`, in the stack's region.
    pub certificate_arn: Option<String>,
    /// Turn off the API's own `execute-api` endpoint.
    pub disable_execute_api: Option<bool>,
}

/// `[domain]`, checked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DomainSettings {
    /// Lowercase, without a trailing dot.
    pub name: String,
    pub zone_id: Option<String>,
    pub certificate_arn: Option<String>,
    pub disable_execute_api: bool,
}

impl DomainSettings {
    fn from_file(file: &DomainFile) -> Result<DomainSettings> {
        let name = file
            .name
            .as_deref()
            .context("[domain] name is required: the chat's host name, e.g. name = \"chat.example.com\"")?;
        let name = validate_domain_name(name)?;
        let zone_id = match file.zone_id.as_deref() {
            None => None,
            Some(zone) => {
                // The API answers ids as `/hostedzone/Z…`; either form is taken.
                let id = zone.trim().trim_start_matches("/hostedzone/");
                let valid =
                    (1..=32).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
                if !valid {
                    bail!("[domain] zone_id {zone:?} is not a Route 53 hosted zone id (like Z0123456789ABCDEFGHIJ)");
                }
                Some(id.to_string())
            }
        };
        let certificate_arn = match file.certificate_arn.as_deref() {
            None => None,
            Some(arn) => {
                let parts: Vec<&str> = arn.split(':').collect();
                let valid = parts.len() == 6
                    && parts[0] == "arn"
                    && parts[2] == "acm"
                    && parts[5].starts_with("certificate/")
                    && parts[5].len() > "certificate/".len();
                if !valid {
                    bail!(
                        "[domain] certificate_arn {arn:?} is not an ACM certificate ARN \
                         (arn:aws:acm:REGION:ACCOUNT:certificate/ID)"
                    );
                }
                Some(arn.to_string())
            }
        };
        Ok(DomainSettings {
            name,
            zone_id,
            certificate_arn,
            disable_execute_api: file.disable_execute_api.unwrap_or(false),
        })
    }
}

/// A host name for `[domain] name`: lowercased, without its trailing dot,
/// at least two labels of 1–63 letters, digits and hyphens (not at either
/// end), 253 characters at most (RFC 1035), no wildcard.
pub fn validate_domain_name(name: &str) -> Result<String> {
    let lower = name.trim().trim_end_matches('.').to_ascii_lowercase();
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    let labels: Vec<&str> = lower.split('.').collect();
    let valid = lower.len() <= 253 && labels.len() >= 2 && labels.iter().all(|l| label_ok(l));
    if !valid {
        bail!(
            "[domain] name {name:?} is not a DNS host name: use labels of letters, digits and '-' separated by dots, \
             like chat.example.com"
        );
    }
    Ok(lower)
}

/// `[releases]`: how many releases `rollback` can go back to.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleasesFile {
    /// Releases kept (the live one always is); older versions are deleted.
    pub keep: Option<usize>,
}

/// `[releases] keep` unless set.
pub const DEFAULT_RELEASES_KEPT: usize = 5;

/// `[alarms]`: CloudWatch alarms on the stack, and who hears of them.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlarmsFile {
    pub enabled: Option<bool>,
    /// Email addresses subscribed to the stack's alarm topic.
    #[serde(default)]
    pub email: Vec<String>,
    pub function_errors: Option<u32>,
    pub function_throttles: Option<u32>,
    pub duration_p99_percent: Option<u32>,
    pub stage_errors: Option<u32>,
    pub dynamodb_throttles: Option<u32>,
    pub failed_deliveries: Option<u32>,
    pub period_minutes: Option<u32>,
}

/// The alarms' rules; a threshold of 0 turns its alarm off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlarmSettings {
    pub enabled: bool,
    pub email: Vec<String>,
    /// Errors of all functions together in a period.
    pub function_errors: u32,
    /// Throttled invocations of all functions together in a period.
    pub function_throttles: u32,
    /// A function's p99 duration above this share of its timeout (%).
    pub duration_p99_percent: u32,
    /// The stage's integration and execution errors in a period.
    pub stage_errors: u32,
    /// Throttled reads and writes of both tables in a period.
    pub dynamodb_throttles: u32,
    /// Messages that did not reach an open connection in a period.
    pub failed_deliveries: u32,
    pub period_minutes: u32,
}

impl AlarmSettings {
    fn from_file(file: &AlarmsFile) -> Result<AlarmSettings> {
        let settings = AlarmSettings {
            enabled: file.enabled.unwrap_or(true),
            email: file.email.clone(),
            function_errors: file.function_errors.unwrap_or(5),
            function_throttles: file.function_throttles.unwrap_or(1),
            duration_p99_percent: file.duration_p99_percent.unwrap_or(80),
            stage_errors: file.stage_errors.unwrap_or(5),
            dynamodb_throttles: file.dynamodb_throttles.unwrap_or(1),
            failed_deliveries: file.failed_deliveries.unwrap_or(10),
            period_minutes: file.period_minutes.unwrap_or(5),
        };
        for address in &settings.email {
            if !is_email_address(address) {
                bail!("[alarms] email: {address:?} is not an email address (name@example.com)");
            }
        }
        if settings.duration_p99_percent > 100 {
            bail!("[alarms] duration_p99_percent must be between 0 (off) and 100");
        }
        // CloudWatch periods of a minute or more are multiples of 60 s; a
        // day is the most an alarm evaluates over (PutMetricAlarm reference).
        if !(1..=1440).contains(&settings.period_minutes) {
            bail!("[alarms] period_minutes must be between 1 and 1440");
        }
        Ok(settings)
    }
}

/// `name@domain.tld`: what SNS takes for an email subscription, roughly.
fn is_email_address(text: &str) -> bool {
    let Some((name, domain)) = text.split_once('@') else {
        return false;
    };
    !name.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !text.chars().any(|c| c.is_whitespace() || c.is_control())
        && !domain.contains('@')
}

/// `[stage_settings]`: the API stage's throttling, metrics and logging.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageSettingsFile {
    pub throttling_burst: Option<i32>,
    pub throttling_rate: Option<f64>,
    pub detailed_metrics: Option<bool>,
    pub logging_level: Option<LoggingLevel>,
    /// A JSON line per request in a log group of the stack's.
    pub access_logs: Option<bool>,
    /// `[stage_settings.routes.ROUTE]`: throttling of one route.
    #[serde(default)]
    pub routes: BTreeMap<String, RouteThrottlingFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteThrottlingFile {
    pub throttling_burst: Option<i32>,
    pub throttling_rate: Option<f64>,
}

/// API Gateway's execution logging level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LoggingLevel {
    #[default]
    Off,
    Error,
    Info,
}

impl LoggingLevel {
    /// As API Gateway names it.
    pub fn as_aws(self) -> &'static str {
        match self {
            LoggingLevel::Off => "OFF",
            LoggingLevel::Error => "ERROR",
            LoggingLevel::Info => "INFO",
        }
    }
}

/// A token bucket: `burst` requests at once, refilled at `rate` per second.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Throttling {
    pub burst: i32,
    pub rate: f64,
}

/// The account's default limits in most regions (API Gateway developer
/// guide, "Amazon API Gateway quotas"): the stage's when `[stage_settings]`
/// sets metrics or logging but no throttling, since the default route
/// settings are never sent without both values. chatctl always sends
/// both values: route settings sent without them set both to 0, which
/// refuses every connection and message (aws-facts.md §10, "stage
/// settings"; terraform-provider-aws #14742).
pub const ACCOUNT_THROTTLING: Throttling = Throttling {
    burst: 5000,
    rate: 10000.0,
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageSettings {
    /// Whether `[stage_settings]` sets any stage-wide value. When it sets
    /// none, chatctl leaves the stage's default route settings alone, so
    /// the account's own limits apply, whatever they were raised to.
    pub manages_defaults: bool,
    pub throttling: Throttling,
    pub detailed_metrics: bool,
    pub logging_level: LoggingLevel,
    /// The stage's access log, in a log group of the stack's.
    pub access_logs: bool,
    /// Route key → its own throttling.
    pub routes: BTreeMap<String, Throttling>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    pub max_connections: Option<u64>,
    pub max_message_bytes: Option<usize>,
    pub message_retention_days: Option<u32>,
    pub history_page_size: Option<u32>,
    /// Across all of a user's connections; 0: no limit.
    pub messages_per_minute_per_user: Option<u32>,
    /// Open at once; 0: no limit.
    pub connections_per_user: Option<u32>,
}

/// Everything that decides what the stack looks like.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Settings {
    pub stack: String,
    pub stage: String,
    pub arch: Arch,
    pub memory_mb: i32,
    pub timeout_seconds: i32,
    pub auth: AuthMode,
    /// With `auth = "oidc"`: the issuer, checked.
    pub oidc: Option<OidcSettings>,
    pub log_retention_days: i32,
    pub max_connections: u64,
    pub max_message_bytes: usize,
    pub message_retention_days: u32,
    pub history_page_size: u32,
    pub messages_per_minute_per_user: u32,
    pub connections_per_user: u32,
    pub tags: BTreeMap<String, String>,
    pub stage_settings: StageSettings,
    pub alarms: AlarmSettings,
    /// `[releases] keep`: at least 2, so there is one to roll back to.
    pub releases_kept: usize,
    pub domain: Option<DomainSettings>,
    /// `[prices]`, checked: names of `cost::prices::KEYS`, US dollars.
    pub prices: BTreeMap<String, f64>,
}

/// Flags that override the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub stack: Option<String>,
    pub stage: Option<String>,
}

impl ConfigFile {
    /// Reads `path`, or `./chatctl.toml` when present and no path is given.
    pub fn load(path: Option<&Path>) -> Result<(ConfigFile, Option<PathBuf>)> {
        let path = match path {
            Some(path) => path.to_path_buf(),
            None => {
                let default = PathBuf::from(DEFAULT_CONFIG_FILE);
                if !default.exists() {
                    return Ok((ConfigFile::default(), None));
                }
                default
            }
        };
        let text =
            std::fs::read_to_string(&path).with_context(|| format!("cannot read config file {}", path.display()))?;
        let file = Self::parse(&text).with_context(|| format!("invalid config file {}", path.display()))?;
        Ok((file, Some(path)))
    }

    pub fn parse(text: &str) -> Result<ConfigFile> {
        // toml's message names the line and column and shows the offending text.
        toml::from_str(text).map_err(|e| anyhow::anyhow!("{}", e.to_string().trim_end()))
    }
}

/// `[oidc]`, checked: required by `auth = "oidc"`, refused with another mode
/// (it would do nothing).
fn oidc_settings(file: &ConfigFile) -> Result<Option<OidcSettings>> {
    let auth = file.auth.unwrap_or_default();
    let Some(oidc) = &file.oidc else {
        if auth == AuthMode::Oidc {
            bail!("auth = \"oidc\" needs an [oidc] section with issuer = \"https://…\" and audience = \"<client id>\"");
        }
        return Ok(None);
    };
    if auth != AuthMode::Oidc {
        bail!(
            "[oidc] is set but auth is \"{}\": set auth = \"oidc\" to accept the identity provider's tokens, or remove [oidc]",
            auth.as_env()
        );
    }
    let issuer = oidc
        .issuer
        .as_deref()
        .context("[oidc]: issuer is required (the tokens' iss, e.g. https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbC123)")?;
    let audience = oidc
        .audience
        .as_deref()
        .context("[oidc]: audience is required (the client id the tokens are issued for)")?;
    OidcSettings::new(issuer, audience, oidc.user_claim.as_deref(), oidc.jwks_url.as_deref())
        .map(Some)
        .map_err(|reason| anyhow::anyhow!("[oidc]: {reason}"))
}

/// The stage settings of `[stage_settings]`, checked.
fn stage_settings(file: &StageSettingsFile) -> Result<StageSettings> {
    let throttling = Throttling {
        burst: file.throttling_burst.unwrap_or(ACCOUNT_THROTTLING.burst),
        rate: file.throttling_rate.unwrap_or(ACCOUNT_THROTTLING.rate),
    };
    check_throttling("[stage_settings]", throttling)?;
    let mut routes = BTreeMap::new();
    for (route, limits) in &file.routes {
        if !crate::stack::Function::routed().any(|f| f.route_key() == Some(route.as_str())) {
            let keys: Vec<&str> = crate::stack::Function::routed().filter_map(|f| f.route_key()).collect();
            bail!(
                "[stage_settings.routes.{route}]: the stack has no route {route:?}; its routes are {}",
                keys.join(", ")
            );
        }
        let (Some(burst), Some(rate)) = (limits.throttling_burst, limits.throttling_rate) else {
            bail!(
                "[stage_settings.routes.{route}]: give both throttling_burst and throttling_rate (API Gateway takes a missing one as 0, refusing every request)"
            );
        };
        let limits = Throttling { burst, rate };
        check_throttling(&format!("[stage_settings.routes.{route}]"), limits)?;
        routes.insert(route.clone(), limits);
    }
    Ok(StageSettings {
        manages_defaults: file.throttling_burst.is_some()
            || file.throttling_rate.is_some()
            || file.detailed_metrics.is_some()
            || file.logging_level.is_some(),
        throttling,
        detailed_metrics: file.detailed_metrics.unwrap_or(false),
        logging_level: file.logging_level.unwrap_or_default(),
        access_logs: file.access_logs.unwrap_or(false),
        routes,
    })
}

fn check_throttling(section: &str, limits: Throttling) -> Result<()> {
    if limits.burst < 1 || limits.rate.is_nan() || limits.rate <= 0.0 {
        bail!(
            "{section}: throttling_burst and throttling_rate must be above 0 (0 refuses every connection and message)"
        );
    }
    Ok(())
}

impl Settings {
    pub fn resolve(file: &ConfigFile, overrides: &Overrides) -> Result<Settings> {
        let settings = Settings {
            stack: overrides
                .stack
                .clone()
                .or_else(|| file.stack.clone())
                .unwrap_or_else(|| DEFAULT_STACK.into()),
            stage: overrides
                .stage
                .clone()
                .or_else(|| file.stage.clone())
                .unwrap_or_else(|| DEFAULT_STAGE.into()),
            arch: file.arch.unwrap_or_default(),
            memory_mb: file.memory.unwrap_or(DEFAULT_MEMORY_MB),
            timeout_seconds: file.timeout.unwrap_or(DEFAULT_TIMEOUT_SECONDS),
            auth: file.auth.unwrap_or_default(),
            oidc: oidc_settings(file)?,
            log_retention_days: file.log_retention_days.unwrap_or(DEFAULT_LOG_RETENTION_DAYS),
            max_connections: file.limits.max_connections.unwrap_or(limits::DEFAULT_MAX_CONNECTIONS),
            max_message_bytes: file
                .limits
                .max_message_bytes
                .unwrap_or(limits::DEFAULT_MAX_MESSAGE_BYTES),
            message_retention_days: file
                .limits
                .message_retention_days
                .unwrap_or(limits::DEFAULT_MESSAGE_RETENTION_DAYS),
            history_page_size: file
                .limits
                .history_page_size
                .unwrap_or(limits::DEFAULT_HISTORY_PAGE_SIZE),
            messages_per_minute_per_user: file
                .limits
                .messages_per_minute_per_user
                .unwrap_or(limits::DEFAULT_MESSAGES_PER_MINUTE_PER_USER),
            connections_per_user: file
                .limits
                .connections_per_user
                .unwrap_or(limits::DEFAULT_CONNECTIONS_PER_USER),
            tags: file.tags.clone(),
            stage_settings: stage_settings(&file.stage_settings)?,
            alarms: AlarmSettings::from_file(&file.alarms)?,
            releases_kept: file.releases.keep.unwrap_or(DEFAULT_RELEASES_KEPT),
            domain: file.domain.as_ref().map(DomainSettings::from_file).transpose()?,
            prices: file.prices.clone(),
        };
        crate::cost::prices::check(&settings.prices)?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<()> {
        validate_stack_name(&self.stack)?;
        if !(2..=100).contains(&self.releases_kept) {
            bail!(
                "[releases] keep must be between 2 and 100 (the live release and one to roll back to, at least), not {}",
                self.releases_kept
            );
        }
        let stage_ok = (1..=64).contains(&self.stage.len())
            && self
                .stage
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !stage_ok {
            bail!(
                "invalid stage name {:?}: use 1-64 characters from A-Z, a-z, 0-9, '_' and '-'",
                self.stage
            );
        }
        if !(128..=10240).contains(&self.memory_mb) {
            bail!("memory must be between 128 and 10240 MB, not {}", self.memory_mb);
        }
        if !(1..=900).contains(&self.timeout_seconds) {
            bail!(
                "timeout must be between 1 and 900 seconds, not {}",
                self.timeout_seconds
            );
        }
        if !LOG_RETENTION_DAYS.contains(&self.log_retention_days) {
            bail!(
                "log_retention_days must be one of {:?} (what CloudWatch Logs accepts), not {}",
                LOG_RETENTION_DAYS,
                self.log_retention_days
            );
        }
        // The functions check these again at start; failing here is kinder.
        let env = self.function_limits_env();
        chat_core::ChatConfig::from_lookup(|name| {
            if name == limits::vars::CONNECTIONS_TABLE || name == limits::vars::MESSAGES_TABLE {
                return Some("table".into());
            }
            env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        })
        .map_err(|e| anyhow::anyhow!("invalid limits: {e}"))?;
        for (key, value) in &self.tags {
            if key.starts_with("aws:") || key == crate::stack::STACK_TAG {
                bail!("tag {key:?} is reserved");
            }
            if key.is_empty() || key.len() > 128 || value.len() > 256 {
                bail!("tag {key:?}: keys take 1-128 characters, values at most 256");
            }
        }
        Ok(())
    }

    /// The limits as the functions' environment variables.
    pub fn function_limits_env(&self) -> Vec<(String, String)> {
        vec![
            (limits::vars::MAX_CONNECTIONS.into(), self.max_connections.to_string()),
            (
                limits::vars::MAX_MESSAGE_BYTES.into(),
                self.max_message_bytes.to_string(),
            ),
            (
                limits::vars::MESSAGE_RETENTION_DAYS.into(),
                self.message_retention_days.to_string(),
            ),
            (
                limits::vars::HISTORY_PAGE_SIZE.into(),
                self.history_page_size.to_string(),
            ),
            (
                limits::vars::MESSAGES_PER_MINUTE_PER_USER.into(),
                self.messages_per_minute_per_user.to_string(),
            ),
            (
                limits::vars::CONNECTIONS_PER_USER.into(),
                self.connections_per_user.to_string(),
            ),
        ]
    }
}

pub fn validate_stack_name(name: &str) -> Result<()> {
    let valid = (1..=MAX_STACK_NAME).contains(&name.len())
        && name.as_bytes()[0].is_ascii_alphabetic()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if !valid {
        bail!(
            "invalid stack name {name:?}: use 1-{MAX_STACK_NAME} characters from A-Z, a-z, 0-9 and '-', starting with a letter"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_files_are_valid() {
        let examples = [
            ("chatctl.toml", include_str!("../../examples/chatctl.toml")),
            ("chatctl.demo.toml", include_str!("../../examples/chatctl.demo.toml")),
            (
                "chatctl.production.toml",
                include_str!("../../examples/chatctl.production.toml"),
            ),
        ];
        for (name, text) in examples {
            let file = ConfigFile::parse(text).unwrap_or_else(|e| panic!("{name}: {e}"));
            Settings::resolve(&file, &Overrides::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let default = ConfigFile::parse(examples[0].1).unwrap();
        let default = Settings::resolve(&default, &Overrides::default()).unwrap();
        let nothing = Settings::resolve(&ConfigFile::default(), &Overrides::default()).unwrap();
        assert_eq!(default, nothing, "examples/chatctl.toml shows the defaults");
    }

    #[test]
    fn defaults_without_a_file() {
        let settings = Settings::resolve(&ConfigFile::default(), &Overrides::default()).unwrap();
        assert_eq!(settings.stack, "chat");
        assert_eq!(settings.stage, "dev");
        assert_eq!(settings.arch, Arch::X86_64);
        assert_eq!(settings.auth, AuthMode::Token);
        assert_eq!(settings.log_retention_days, 14);
    }

    #[test]
    fn oidc_needs_its_section_and_checks_it_before_anything() {
        let resolve = |text: &str| Settings::resolve(&ConfigFile::parse(text).unwrap(), &Overrides::default());
        let settings = resolve(
            r#"
            auth = "oidc"
            [oidc]
            issuer = "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbC123"
            audience = "app-client"
            user_claim = "cognito:username"
            "#,
        )
        .unwrap();
        assert_eq!(settings.auth, AuthMode::Oidc);
        let oidc = settings.oidc.unwrap();
        assert_eq!(oidc.audience, "app-client");
        assert_eq!(oidc.user_claim, "cognito:username");
        for (text, says) in [
            ("auth = \"oidc\"", "needs an [oidc] section"),
            ("auth = \"oidc\"\n[oidc]\naudience = \"a\"", "issuer is required"),
            (
                "auth = \"oidc\"\n[oidc]\nissuer = \"https://i.example\"",
                "audience is required",
            ),
            (
                "auth = \"oidc\"\n[oidc]\nissuer = \"http://idp.example.com\"\naudience = \"a\"",
                "uses http",
            ),
            (
                "auth = \"oidc\"\n[oidc]\nissuer = \"idp\"\naudience = \"a\"",
                "not a URL",
            ),
            (
                "[oidc]\nissuer = \"https://i.example\"\naudience = \"a\"",
                "set auth = \"oidc\"",
            ),
        ] {
            let error = format!("{:#}", resolve(text).unwrap_err());
            assert!(error.contains(says), "{text}: {error}");
        }
        let unknown = ConfigFile::parse("auth = \"oidc\"\n[oidc]\nissuer_url = \"x\"").unwrap_err();
        assert!(unknown.to_string().contains("issuer_url"), "{unknown}");
    }

    #[test]
    fn a_full_file_is_read_and_flags_win() {
        let file = ConfigFile::parse(
            r#"
            stack = "demo"
            stage = "prod"
            arch = "arm64"
            memory = 256
            timeout = 20
            auth = "none"
            log_retention_days = 30
            [limits]
            max_connections = 50
            max_message_bytes = 1000
            message_retention_days = 7
            history_page_size = 20
            [tags]
            team = "chat"
            "#,
        )
        .unwrap();
        let overrides = Overrides {
            stack: Some("other".into()),
            stage: None,
        };
        let settings = Settings::resolve(&file, &overrides).unwrap();
        assert_eq!(settings.stack, "other");
        assert_eq!(settings.stage, "prod");
        assert_eq!(settings.arch, Arch::Arm64);
        assert_eq!((settings.memory_mb, settings.timeout_seconds), (256, 20));
        assert_eq!(settings.auth, AuthMode::None);
        assert_eq!(settings.max_connections, 50);
        assert_eq!(settings.tags["team"], "chat");
    }

    #[test]
    fn file_errors_name_the_line() {
        let err = ConfigFile::parse("stack = \"a\"\nmemroy = 5\n").unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("line 2") && text.contains("memroy"), "{text}");
        let err = ConfigFile::parse("arch = \"sparc\"").unwrap_err();
        assert!(format!("{err:#}").contains("line 1"));
        assert!(ConfigFile::parse("stack = ").is_err());
    }

    #[test]
    fn bad_values_are_refused_with_what_is_allowed() {
        let cases = [
            ("stack = \"1abc\"", "invalid stack name"),
            ("stack = \"a_b\"", "invalid stack name"),
            ("stage = \"a b\"", "invalid stage name"),
            ("memory = 64", "between 128 and 10240"),
            ("timeout = 0", "between 1 and 900"),
            ("log_retention_days = 10", "log_retention_days must be one of"),
            ("[limits]\nhistory_page_size = 500", "CHAT_HISTORY_PAGE_SIZE"),
            ("[tags]\n\"chatctl:stack\" = \"x\"", "reserved"),
        ];
        for (text, expected) in cases {
            let file = ConfigFile::parse(text).unwrap();
            let err = Settings::resolve(&file, &Overrides::default()).unwrap_err();
            assert!(format!("{err:#}").contains(expected), "{text}: {err:#}");
        }
    }
}
