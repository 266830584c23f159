//! The stack's token secret, kept in Secrets Manager (`auth = "token"`).
//!
//! `chatctl up` makes it a secret of the stack; the authorizer's environment
//! names it ([`crate::config::vars::TOKEN_SECRET_ID`]), never holds its
//! value. `chatctl token rotate` puts a new version: Secrets Manager labels
//! it AWSCURRENT and moves AWSPREVIOUS to the one before (PutSecretValue,
//! Secrets Manager API reference). A token names the version that signed it
//! in its header's `kid`. The authorizer accepts the current version, and
//! the previous one for as long as a token signed with it may live
//! ([`crate::token::MAX_TTL`] after the current one was made), then drops it.

use std::time::{Duration, Instant, SystemTime};

use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::error::ProvideErrorMetadata;
use thiserror::Error;

use crate::config::MIN_TOKEN_SECRET_BYTES;
use crate::retry::send_retrying;
use crate::token::{self, Claims, MAX_TTL, TokenError};

/// The staging labels Secrets Manager moves on each new version.
pub const CURRENT: &str = "AWSCURRENT";
pub const PREVIOUS: &str = "AWSPREVIOUS";

/// How long an authorizer instance keeps the versions it read: a version
/// revoked with `chatctl token rotate --revoke-previous` stops working
/// within this.
pub const REFRESH_EVERY: Duration = Duration::from_secs(300);
/// A token naming a version the instance does not know makes it read the
/// secret again, at most this often, so a flood of made-up `kid`s cannot
/// make it call Secrets Manager for each.
pub const REREAD_AT_MOST_EVERY: Duration = Duration::from_secs(5);

/// One version of the secret.
#[derive(Clone, PartialEq)]
pub struct SecretVersion {
    /// Secrets Manager's VersionId: what a token's `kid` names.
    pub version: String,
    pub value: Vec<u8>,
    pub created: SystemTime,
}

impl std::fmt::Debug for SecretVersion {
    // Never print the value, not even in a debug dump.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretVersion")
            .field("version", &self.version)
            .field("created", &self.created)
            .finish_non_exhaustive()
    }
}

/// The versions a token may be signed with.
#[derive(Debug, Clone, PartialEq)]
pub struct SecretVersions {
    pub current: SecretVersion,
    pub previous: Option<SecretVersion>,
}

impl SecretVersions {
    /// Until when a token signed with the previous version is accepted: the
    /// longest a token lives, counted from the rotation.
    pub fn previous_accepted_until(&self) -> Option<SystemTime> {
        self.previous.as_ref().map(|_| self.current.created + MAX_TTL)
    }

    /// The versions that sign valid tokens at `now`, the current one first.
    pub fn accepted(&self, now: SystemTime) -> Vec<&SecretVersion> {
        let previous = self
            .previous
            .as_ref()
            .filter(|_| self.previous_accepted_until().is_some_and(|until| now < until));
        std::iter::once(&self.current).chain(previous).collect()
    }

    /// Verifies a token against the versions accepted now: the one its `kid`
    /// names, or each in turn for a token without one (minted before the
    /// secret moved to Secrets Manager, with the value its first version has).
    pub fn verify(&self, token: &str, kid: Option<&str>) -> Result<Claims, TokenError> {
        let accepted = self.accepted(SystemTime::now());
        match kid {
            Some(kid) => {
                let version = accepted
                    .iter()
                    .find(|v| v.version == kid)
                    .ok_or_else(|| TokenError::UnknownKey(kid.to_string()))?;
                token::verify(&version.value, token)
            }
            None => {
                let mut result = Err(TokenError::BadSignature);
                for version in accepted {
                    result = token::verify(&version.value, token);
                    if result.as_ref().is_ok() || result != Err(TokenError::BadSignature) {
                        break;
                    }
                }
                result
            }
        }
    }

    fn knows(&self, kid: &str) -> bool {
        self.current.version == kid || self.previous.as_ref().is_some_and(|p| p.version == kid)
    }
}

#[derive(Debug, Error)]
pub enum SecretError {
    #[error("cannot read secret {secret} ({stage}): {code}: {message}")]
    Aws {
        secret: String,
        stage: &'static str,
        code: String,
        message: String,
    },
    #[error("secret {secret} ({stage}) {problem}; run `chatctl up` to repair it, or `chatctl token rotate`")]
    Unusable {
        secret: String,
        stage: &'static str,
        problem: String,
    },
}

/// Reads the current and the previous version (none before the first
/// rotation) at once. AccessDeniedException right after a deploy is waited
/// through, as the other functions do (aws-facts.md §11), when
/// `waits_for_permissions` (an operator's read, `chatctl token`, is told at
/// once). A previous version that cannot be used (no value, too short) is
/// left out with a warning: the current one decides.
pub async fn read(
    client: &Client,
    secret_id: &str,
    waits_for_permissions: bool,
) -> Result<SecretVersions, SecretError> {
    let (current, previous) = tokio::join!(
        read_version(client, secret_id, CURRENT, waits_for_permissions),
        read_version(client, secret_id, PREVIOUS, waits_for_permissions)
    );
    let current = current?.ok_or_else(|| SecretError::Unusable {
        secret: secret_id.to_string(),
        stage: CURRENT,
        problem: "has no current version".into(),
    })?;
    let previous = match previous {
        Ok(previous) => previous,
        Err(error @ SecretError::Unusable { .. }) => {
            tracing::warn!(%error, "the previous version of the token secret is left out");
            None
        }
        Err(error) => return Err(error),
    };
    Ok(SecretVersions { current, previous })
}

/// One labelled version; None when no version has the label (or no secret exists).
async fn read_version(
    client: &Client,
    secret_id: &str,
    stage: &'static str,
    waits_for_permissions: bool,
) -> Result<Option<SecretVersion>, SecretError> {
    let got = send_retrying(
        ("Secrets Manager", "GetSecretValue", secret_id),
        waits_for_permissions,
        || {
            client
                .get_secret_value()
                .secret_id(secret_id)
                .version_stage(stage)
                .send()
        },
    )
    .await;
    let got = match got {
        Ok(got) => got,
        // The previous version before the first rotation.
        Err(err) if stage == PREVIOUS && err.code() == Some("ResourceNotFoundException") => return Ok(None),
        Err(err) => {
            return Err(SecretError::Aws {
                secret: secret_id.to_string(),
                stage,
                code: err.code().unwrap_or("error").to_string(),
                message: err
                    .message()
                    .map(str::to_string)
                    .unwrap_or_else(|| crate::store::error_text(&err)),
            });
        }
    };
    let unusable = |problem: &str| SecretError::Unusable {
        secret: secret_id.to_string(),
        stage,
        problem: problem.to_string(),
    };
    let value = got.secret_string().ok_or_else(|| unusable("has no string value"))?;
    if value.len() < MIN_TOKEN_SECRET_BYTES {
        return Err(unusable(&format!("is shorter than {MIN_TOKEN_SECRET_BYTES} bytes")));
    }
    let created = got
        .created_date()
        .and_then(|d| SystemTime::try_from(*d).ok())
        .unwrap_or(SystemTime::UNIX_EPOCH);
    Ok(Some(SecretVersion {
        version: got
            .version_id()
            .ok_or_else(|| unusable("has no version id"))?
            .to_string(),
        value: value.as_bytes().to_vec(),
        created,
    }))
}

/// The versions one authorizer instance keeps between invocations.
pub struct TokenKeys {
    client: Client,
    secret_id: String,
    kept: tokio::sync::Mutex<Option<(SecretVersions, Instant)>>,
}

impl TokenKeys {
    pub fn new(client: Client, secret_id: &str) -> Self {
        TokenKeys {
            client,
            secret_id: secret_id.to_string(),
            kept: tokio::sync::Mutex::new(None),
        }
    }

    /// The versions to check a token naming `kid` against: those kept,
    /// read again when they are older than [`REFRESH_EVERY`], or when `kid`
    /// is unknown and the last read is older than [`REREAD_AT_MOST_EVERY`].
    /// A failed read again keeps the versions it has.
    pub async fn versions(&self, kid: Option<&str>) -> Result<SecretVersions, SecretError> {
        let mut kept = self.kept.lock().await;
        let before = match kept.take() {
            Some((versions, read_at)) => {
                let stale = read_at.elapsed() >= REFRESH_EVERY
                    || kid.is_some_and(|kid| !versions.knows(kid) && read_at.elapsed() >= REREAD_AT_MOST_EVERY);
                if !stale {
                    *kept = Some((versions.clone(), read_at));
                    return Ok(versions);
                }
                Some(versions)
            }
            None => None,
        };
        match (read(&self.client, &self.secret_id, true).await, before) {
            (Ok(versions), _) => {
                *kept = Some((versions.clone(), Instant::now()));
                Ok(versions)
            }
            (Err(error), None) => Err(error),
            // Kept, and read again after REREAD_AT_MOST_EVERY rather than a
            // whole REFRESH_EVERY: a revoked version must not outlive a
            // passing failure by minutes.
            (Err(error), Some(versions)) => {
                tracing::warn!(%error, "cannot read the token secret again; keeping the versions read before");
                let retry_soon = Instant::now()
                    .checked_sub(REFRESH_EVERY - REREAD_AT_MOST_EVERY)
                    .unwrap_or_else(Instant::now);
                *kept = Some((versions.clone(), retry_soon));
                Ok(versions)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(name: &str, value: &str, created: SystemTime) -> SecretVersion {
        SecretVersion {
            version: name.into(),
            value: value.as_bytes().to_vec(),
            created,
        }
    }

    const OLD: &str = "old-secret-old-secret-old-secret-old";
    const NEW: &str = "new-secret-new-secret-new-secret-new";

    fn rotated(ago: Duration) -> SecretVersions {
        let now = SystemTime::now();
        SecretVersions {
            current: version("v2", NEW, now - ago),
            previous: Some(version("v1", OLD, now - ago - Duration::from_secs(3600))),
        }
    }

    fn signed(kid: Option<&str>, secret: &str) -> String {
        token::mint_signed_by(
            kid,
            secret.as_bytes(),
            "alice",
            Duration::from_secs(60),
            SystemTime::now(),
        )
        .unwrap()
    }

    #[test]
    fn the_previous_version_is_accepted_until_its_tokens_have_expired() {
        let versions = rotated(Duration::from_secs(60));
        assert_eq!(
            versions.verify(&signed(Some("v2"), NEW), Some("v2")).unwrap().sub,
            "alice"
        );
        assert_eq!(
            versions.verify(&signed(Some("v1"), OLD), Some("v1")).unwrap().sub,
            "alice"
        );
        // A token from before the move to Secrets Manager has no kid.
        assert_eq!(versions.verify(&signed(None, OLD), None).unwrap().sub, "alice");

        let long_ago = rotated(MAX_TTL + Duration::from_secs(1));
        assert_eq!(
            long_ago.verify(&signed(Some("v1"), OLD), Some("v1")),
            Err(TokenError::UnknownKey("v1".into()))
        );
        assert_eq!(long_ago.verify(&signed(None, OLD), None), Err(TokenError::BadSignature));
        assert_eq!(long_ago.accepted(SystemTime::now()).len(), 1);
    }

    #[test]
    fn a_kid_is_checked_against_the_version_it_names_only() {
        let versions = rotated(Duration::from_secs(60));
        // Signed with the old value but claiming the new version.
        assert_eq!(
            versions.verify(&signed(Some("v2"), OLD), Some("v2")),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            versions.verify(&signed(Some("v9"), NEW), Some("v9")),
            Err(TokenError::UnknownKey("v9".into()))
        );
        let forged = "forged-forged-forged-forged-forged-forged";
        assert_eq!(
            versions.verify(&signed(None, forged), None),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn a_versions_value_is_never_printed() {
        let printed = format!("{:?}", rotated(Duration::ZERO));
        assert!(!printed.contains(NEW) && !printed.contains(OLD), "{printed}");
    }
}
