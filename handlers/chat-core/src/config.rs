//! Configuration of the chat functions. Environment variables are the only
//! source, so that `chatctl up` and `chatctl dev` configure them the same way.

use thiserror::Error;

pub use crate::oidc::OidcSettings;

/// The environment variables the functions read. `chatctl` sets them; their
/// names are part of the deployment contract and documented in the README.
pub mod vars {
    /// Name of the connections table.
    pub const CONNECTIONS_TABLE: &str = "CHAT_CONNECTIONS_TABLE";
    /// Name of the messages table.
    pub const MESSAGES_TABLE: &str = "CHAT_MESSAGES_TABLE";
    /// `token` (default), `oidc` or `none`.
    pub const AUTH_MODE: &str = "CHAT_AUTH_MODE";
    /// `oidc` mode: the tokens' issuer (`iss`), https.
    pub const OIDC_ISSUER: &str = "CHAT_OIDC_ISSUER";
    /// `oidc` mode: the tokens' audience (`aud`, or Cognito's `client_id`).
    pub const OIDC_AUDIENCE: &str = "CHAT_OIDC_AUDIENCE";
    /// `oidc` mode: the claim naming the user (default `sub`).
    pub const OIDC_USER_CLAIM: &str = "CHAT_OIDC_USER_CLAIM";
    /// `oidc` mode: the JWKS URL (default: from the discovery document).
    pub const OIDC_JWKS_URL: &str = "CHAT_OIDC_JWKS_URL";
    /// `token` mode: the name of the Secrets Manager secret tokens are
    /// signed with (never its value); authorizer only.
    pub const TOKEN_SECRET_ID: &str = "CHAT_TOKEN_SECRET_ID";
    /// Open connections allowed at once across the stack.
    pub const MAX_CONNECTIONS: &str = "CHAT_MAX_CONNECTIONS";
    /// Largest message text, in bytes of UTF-8.
    pub const MAX_MESSAGE_BYTES: &str = "CHAT_MAX_MESSAGE_BYTES";
    /// Days a message is kept (DynamoDB TTL).
    pub const MESSAGE_RETENTION_DAYS: &str = "CHAT_MESSAGE_RETENTION_DAYS";
    /// History page size when the client gives no `limit` (at most 100).
    pub const HISTORY_PAGE_SIZE: &str = "CHAT_HISTORY_PAGE_SIZE";
    /// Messages a user may send per minute across all their connections (0: no limit).
    pub const MESSAGES_PER_MINUTE_PER_USER: &str = "CHAT_MESSAGES_PER_MINUTE_PER_USER";
    /// Connections a user may hold open at once (0: no limit).
    pub const CONNECTIONS_PER_USER: &str = "CHAT_CONNECTIONS_PER_USER";
    /// Overrides the `@connections` endpoint derived from the event
    /// (`https://{domainName}/{stage}`); `chatctl dev` points it at its gateway.
    pub const CALLBACK_URL: &str = "CHAT_CALLBACK_URL";
}

pub const DEFAULT_MAX_CONNECTIONS: u64 = 10_000;
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4096;
pub const DEFAULT_MESSAGE_RETENTION_DAYS: u32 = 30;
pub const DEFAULT_HISTORY_PAGE_SIZE: u32 = 50;
/// Generous for a person (two a second, sustained), tight for a script.
pub const DEFAULT_MESSAGES_PER_MINUTE_PER_USER: u32 = 120;
/// Generous for a person (tabs, devices), tight for one identity shared by a crowd.
pub const DEFAULT_CONNECTIONS_PER_USER: u32 = 20;
/// A user's slots are read in one go (BatchGetItem, 100 keys a call) when
/// one is found taken: a bound keeps that cheap.
pub const MAX_CONNECTIONS_PER_USER: u32 = 1000;
/// The largest history page a client may ask for.
pub const MAX_HISTORY_PAGE_SIZE: u32 = 100;
/// A message must still fit in one API Gateway message (128 KB) once wrapped.
const MAX_MESSAGE_BYTES_CEILING: usize = 32 * 1024;
/// The minimum length of a token secret: HS256 wants at least 256 bits.
pub const MIN_TOKEN_SECRET_BYTES: usize = 32;

#[derive(Debug, Error, PartialEq)]
pub enum ConfigError {
    #[error("environment variable {0} is not set")]
    Missing(&'static str),
    #[error("environment variable {name} has an invalid value {value:?}: {reason}")]
    Invalid {
        name: &'static str,
        value: String,
        reason: String,
    },
}

/// What the message-handling functions need to know.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatConfig {
    pub connections_table: String,
    pub messages_table: String,
    pub max_connections: u64,
    pub max_message_bytes: usize,
    pub message_retention_days: u32,
    pub history_page_size: u32,
    /// 0: no limit.
    pub messages_per_minute_per_user: u32,
    /// 0: no limit.
    pub connections_per_user: u32,
    pub callback_url: Option<String>,
}

impl ChatConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `lookup`, so tests need no process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let required = |name: &'static str| {
            lookup(name)
                .filter(|v| !v.trim().is_empty())
                .ok_or(ConfigError::Missing(name))
        };
        Ok(Self {
            connections_table: required(vars::CONNECTIONS_TABLE)?,
            messages_table: required(vars::MESSAGES_TABLE)?,
            max_connections: number(&lookup, vars::MAX_CONNECTIONS, DEFAULT_MAX_CONNECTIONS, 1..=u64::MAX)?,
            max_message_bytes: number(
                &lookup,
                vars::MAX_MESSAGE_BYTES,
                DEFAULT_MAX_MESSAGE_BYTES,
                1..=MAX_MESSAGE_BYTES_CEILING,
            )?,
            message_retention_days: number(
                &lookup,
                vars::MESSAGE_RETENTION_DAYS,
                DEFAULT_MESSAGE_RETENTION_DAYS,
                1..=3650,
            )?,
            history_page_size: number(
                &lookup,
                vars::HISTORY_PAGE_SIZE,
                DEFAULT_HISTORY_PAGE_SIZE,
                1..=MAX_HISTORY_PAGE_SIZE,
            )?,
            messages_per_minute_per_user: number(
                &lookup,
                vars::MESSAGES_PER_MINUTE_PER_USER,
                DEFAULT_MESSAGES_PER_MINUTE_PER_USER,
                0..=100_000,
            )?,
            connections_per_user: number(
                &lookup,
                vars::CONNECTIONS_PER_USER,
                DEFAULT_CONNECTIONS_PER_USER,
                0..=MAX_CONNECTIONS_PER_USER,
            )?,
            callback_url: lookup(vars::CALLBACK_URL).filter(|v| !v.trim().is_empty()),
        })
    }
}

/// How the authorizer decides who a client is.
#[derive(Debug, Clone, PartialEq)]
pub enum AuthMode {
    /// A signed token (HS256 JWT) minted by `chatctl token` or the app's
    /// server, with the secret Secrets Manager keeps under this name.
    Token { secret_id: String },
    /// A token of the app's OpenID Connect provider (RS256/ES256 JWT).
    Oidc(OidcSettings),
    /// Public demo: the user names itself with `?user=`.
    None,
}

impl AuthMode {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        match lookup(vars::AUTH_MODE).as_deref().unwrap_or("token") {
            "none" => Ok(AuthMode::None),
            "token" => {
                let secret_id = lookup(vars::TOKEN_SECRET_ID)
                    .filter(|v| !v.trim().is_empty())
                    .ok_or(ConfigError::Missing(vars::TOKEN_SECRET_ID))?;
                Ok(AuthMode::Token { secret_id })
            }
            "oidc" => {
                let issuer = lookup(vars::OIDC_ISSUER).ok_or(ConfigError::Missing(vars::OIDC_ISSUER))?;
                let audience = lookup(vars::OIDC_AUDIENCE).ok_or(ConfigError::Missing(vars::OIDC_AUDIENCE))?;
                let user_claim = lookup(vars::OIDC_USER_CLAIM);
                let jwks_url = lookup(vars::OIDC_JWKS_URL);
                OidcSettings::new(&issuer, &audience, user_claim.as_deref(), jwks_url.as_deref())
                    .map(AuthMode::Oidc)
                    .map_err(|reason| ConfigError::Invalid {
                        name: vars::AUTH_MODE,
                        value: "oidc".into(),
                        reason,
                    })
            }
            other => Err(ConfigError::Invalid {
                name: vars::AUTH_MODE,
                value: other.to_string(),
                reason: "expected `token`, `oidc` or `none`".into(),
            }),
        }
    }
}

fn number<T>(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<T, ConfigError>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    let Some(raw) = lookup(name).filter(|v| !v.trim().is_empty()) else {
        return Ok(default);
    };
    let invalid = |reason: String| ConfigError::Invalid {
        name,
        value: raw.clone(),
        reason,
    };
    let value: T = raw.trim().parse().map_err(|_| invalid("not a whole number".into()))?;
    if !range.contains(&value) {
        return Err(invalid(format!(
            "must be between {} and {}",
            range.start(),
            range.end()
        )));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name| map.get(name).cloned()
    }

    const TABLES: [(&str, &str); 2] = [
        (vars::CONNECTIONS_TABLE, "chat-connections"),
        (vars::MESSAGES_TABLE, "chat-messages"),
    ];

    #[test]
    fn defaults_apply_when_only_tables_are_set() {
        let config = ChatConfig::from_lookup(lookup(&TABLES)).unwrap();
        assert_eq!(config.connections_table, "chat-connections");
        assert_eq!(config.max_connections, DEFAULT_MAX_CONNECTIONS);
        assert_eq!(config.max_message_bytes, DEFAULT_MAX_MESSAGE_BYTES);
        assert_eq!(config.history_page_size, DEFAULT_HISTORY_PAGE_SIZE);
        assert_eq!(config.callback_url, None);
    }

    #[test]
    fn missing_table_is_named() {
        let err = ChatConfig::from_lookup(lookup(&[(vars::CONNECTIONS_TABLE, "c")])).unwrap_err();
        assert_eq!(err, ConfigError::Missing(vars::MESSAGES_TABLE));
    }

    #[test]
    fn bad_numbers_are_rejected_with_the_variable_named() {
        for (name, value) in [
            (vars::MAX_CONNECTIONS, "lots"),
            (vars::MAX_CONNECTIONS, "0"),
            (vars::MAX_MESSAGE_BYTES, "-1"),
            (vars::MAX_MESSAGE_BYTES, "1000000"),
            (vars::HISTORY_PAGE_SIZE, "101"),
            (vars::MESSAGE_RETENTION_DAYS, "0"),
        ] {
            let mut pairs = TABLES.to_vec();
            pairs.push((name, value));
            let err = ChatConfig::from_lookup(lookup(&pairs)).unwrap_err();
            assert!(err.to_string().contains(name), "{err}");
        }
    }

    #[test]
    fn auth_mode_token_names_its_secret() {
        assert_eq!(
            AuthMode::from_lookup(lookup(&[])).unwrap_err(),
            ConfigError::Missing(vars::TOKEN_SECRET_ID)
        );
        assert_eq!(
            AuthMode::from_lookup(lookup(&[(vars::TOKEN_SECRET_ID, "chatctl/chat/token")])).unwrap(),
            AuthMode::Token {
                secret_id: "chatctl/chat/token".into()
            }
        );
        assert_eq!(
            AuthMode::from_lookup(lookup(&[(vars::AUTH_MODE, "none")])).unwrap(),
            AuthMode::None
        );
        assert!(AuthMode::from_lookup(lookup(&[(vars::AUTH_MODE, "open")])).is_err());
    }
}
