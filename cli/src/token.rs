//! `chatctl token`: mints a connection token that the deployed authorizer
//! accepts, with the secret `up` gave it.

use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use chat_core::config::vars;
use serde::Serialize;

use crate::aws::{Aws, failed, is_code};
use crate::stack::{Function, Names, STACK_TAG};

/// The longest a token may live: a leaked token stays valid until it expires.
pub const MAX_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

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

/// How the deployed authorizer lets clients in.
#[derive(Debug, Clone, PartialEq)]
pub enum Auth {
    /// A token signed with this secret.
    Token { secret: String },
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
    let secret = env.get(vars::TOKEN_SECRET).with_context(|| {
        format!(
            "function {name} has no {}; run `chatctl up` to repair the stack",
            vars::TOKEN_SECRET
        )
    })?;
    Ok(Auth::Token { secret: secret.clone() })
}

pub async fn mint(aws: &Aws, names: &Names, user: &str, ttl: Duration) -> Result<Minted> {
    chat_core::validate::user(user).map_err(|e| anyhow::anyhow!("{e}"))?;
    match deployed_auth(aws, names).await? {
        Auth::Token { secret } => mint_with(&secret, user, ttl),
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

/// Mints a token with a known secret (`chatctl dev` knows its stack's).
pub fn mint_with(secret: &str, user: &str, ttl: Duration) -> Result<Minted> {
    chat_core::validate::user(user).map_err(|e| anyhow::anyhow!("{e}"))?;
    let now = SystemTime::now();
    let token = chat_core::token::mint(secret.as_bytes(), user, ttl, now).map_err(|e| anyhow::anyhow!("{e}"))?;
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
