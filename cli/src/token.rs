//! `chatctl token`: mints a connection token that the deployed authorizer
//! accepts, with the current version of the stack's secret (Secrets
//! Manager), named in the token's `kid`; `chatctl token rotate` makes a new
//! version (see `stack::secret::rotate`).

use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use chat_core::config::vars;
use serde::Serialize;

use crate::aws::{Aws, failed, is_code};
use crate::stack::{Function, Names, STACK_TAG};

pub use chat_core::token::MAX_TTL;

#[derive(Debug, Clone, Serialize)]
pub struct Minted {
    pub token: String,
    pub user: String,
    pub expires_at: String,
}

/// `24h`, `30m`, `7d`, `1h 30m`: between one second and 30 days.
pub fn parse_ttl(text: &str) -> Result<Duration> {
    let ttl = humantime::parse_duration(text)
        .with_context(|| format!("invalid --ttl {text:?}: use a duration like 30m, 24h or 7d"))?;
    if ttl < Duration::from_secs(1) || ttl > MAX_TTL {
        bail!("invalid --ttl {text:?}: must be between 1s and 30d");
    }
    Ok(ttl)
}

/// What signs a token: a version of the stack's secret.
#[derive(Clone, PartialEq)]
pub struct SigningKey {
    /// Secrets Manager's VersionId, the token's `kid`; none for a stack
    /// whose authorizer still holds the secret in its environment.
    pub version: Option<String>,
    pub secret: String,
}

impl std::fmt::Debug for SigningKey {
    // Never print the secret, not even in a debug dump.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// How the deployed authorizer lets clients in.
#[derive(Debug, Clone, PartialEq)]
pub enum Auth {
    /// A token signed with the stack's secret.
    Token(SigningKey),
    /// `auth = "oidc"`: a token of the app's identity provider, this issuer.
    Oidc { issuer: String },
    /// `auth = "none"`: anyone, naming themselves with `?user=NAME`.
    None,
}

/// Reads the deployed authorizer's mode (and secret) from its function.
pub async fn deployed_auth(aws: &Aws, names: &Names) -> Result<Auth> {
    let name = names.function(Function::Authorizer);
    let got = match aws.lambda.get_function().function_name(&name).send().await {
        Err(err) if is_code(&err, &["ResourceNotFoundException"]) => {
            bail!(
                "stack {} is not deployed: no function {name}; run `chatctl up` first",
                names.stack
            )
        }
        other => other.map_err(failed(format!("cannot read Lambda function {name}")))?,
    };
    if let Some(error) = got.tags_error() {
        bail!(
            "cannot read the tags of function {name} ({}): chatctl needs lambda:ListTags",
            error.message()
        );
    }
    if got.tags().and_then(|t| t.get(STACK_TAG)) != Some(&names.stack) {
        bail!("function {name} is not stack {}'s (no {STACK_TAG} tag)", names.stack);
    }
    let env = got
        .configuration()
        .and_then(|c| c.environment())
        .and_then(|e| e.variables())
        .cloned()
        .unwrap_or_default();
    match env.get(vars::AUTH_MODE).map(String::as_str) {
        Some("none") => return Ok(Auth::None),
        Some("oidc") => {
            let issuer = env.get(vars::OIDC_ISSUER).cloned().unwrap_or_default();
            return Ok(Auth::Oidc { issuer });
        }
        _ => {}
    }
    if env.contains_key(vars::TOKEN_SECRET_ID) {
        let current = crate::stack::secret::versions(aws, names).await?.current;
        return Ok(Auth::Token(SigningKey {
            version: Some(current.version),
            secret: String::from_utf8_lossy(&current.value).into_owned(),
        }));
    }
    // Deployed before the secret moved to Secrets Manager (until the next `up`).
    let secret = env.get(crate::stack::secret::LEGACY_ENV).with_context(|| {
        format!(
            "function {name} has no {}; run `chatctl up` to repair the stack",
            vars::TOKEN_SECRET_ID
        )
    })?;
    Ok(Auth::Token(SigningKey {
        version: None,
        secret: secret.clone(),
    }))
}

pub async fn mint(aws: &Aws, names: &Names, user: &str, ttl: Duration) -> Result<Minted> {
    chat_core::validate::user(user).map_err(|e| anyhow::anyhow!("{e}"))?;
    match deployed_auth(aws, names).await? {
        Auth::Token(key) => mint_with(&key, user, ttl),
        Auth::None => bail!(
            "stack {} runs with auth = \"none\": no token is needed; connect with ?user=NAME",
            names.stack
        ),
        Auth::Oidc { issuer } => bail!("{}", oidc_tokens_come_from_the_idp(&names.stack, &issuer)),
    }
}

/// What to do for a token when the stack takes the identity provider's.
pub fn oidc_tokens_come_from_the_idp(stack: &str, issuer: &str) -> String {
    format!(
        "stack {stack} runs with auth = \"oidc\": its tokens come from your identity provider ({issuer}), \
         not from chatctl; sign a user in there and pass its token (an ID or access token for the [oidc] \
         audience), e.g. `chatctl smoke --token TOKEN`"
    )
}

/// Mints a token with a version of the secret read before.
pub fn mint_with(key: &SigningKey, user: &str, ttl: Duration) -> Result<Minted> {
    chat_core::validate::user(user).map_err(|e| anyhow::anyhow!("{e}"))?;
    let now = SystemTime::now();
    let token = chat_core::token::mint_signed_by(key.version.as_deref(), key.secret.as_bytes(), user, ttl, now)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let expires_ms = (now + ttl)
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() * 1000)
        .unwrap_or(0);
    Ok(Minted {
        token,
        user: user.to_string(),
        expires_at: chat_core::ids::format_timestamp_ms(expires_ms),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls() {
        assert_eq!(parse_ttl("24h").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse_ttl("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_ttl("1h 30m").unwrap(), Duration::from_secs(5400));
        for bad in ["", "soon", "0s", "31d", "-1h"] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
    }
}
