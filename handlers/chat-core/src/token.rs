//! Connection tokens: HS256 JWTs with `sub` (the user id) and `exp`, and in
//! their header the `kid` of the secret's version that signed them (see
//! [`crate::token_secret`]). `chatctl token` and app servers mint them; the
//! authorizer verifies them.

use std::time::{Duration, SystemTime};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::validate;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub exp: u64,
    #[serde(default)]
    pub iat: u64,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("token has expired")]
    Expired,
    #[error("token signature does not match")]
    BadSignature,
    #[error("token names a key the authorizer does not have (kid {0:?})")]
    UnknownKey(String),
    #[error("token is malformed: {0}")]
    Malformed(String),
    #[error("token user is not a valid user id")]
    InvalidUser,
    #[error("could not sign token: {0}")]
    Signing(String),
}

/// The longest a token may live: a leaked token stays valid until it
/// expires, and a rotated secret's previous version is accepted this long.
pub const MAX_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// Mints a token for `user`, valid for `ttl` from `issued_at`, with no `kid`.
pub fn mint(secret: &[u8], user: &str, ttl: Duration, issued_at: SystemTime) -> Result<String, TokenError> {
    mint_signed_by(None, secret, user, ttl, issued_at)
}

/// Mints a token like [`mint`], naming the secret's version in `kid`.
pub fn mint_signed_by(
    version: Option<&str>,
    secret: &[u8],
    user: &str,
    ttl: Duration,
    issued_at: SystemTime,
) -> Result<String, TokenError> {
    validate::user(user).map_err(|_| TokenError::InvalidUser)?;
    let iat = epoch_seconds(issued_at);
    let claims = Claims {
        sub: user.to_string(),
        exp: iat + ttl.as_secs(),
        iat,
    };
    let mut header = Header::new(Algorithm::HS256);
    header.kid = version.map(str::to_string);
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(secret))
        .map_err(|e| TokenError::Signing(e.to_string()))
}

/// The `kid` of a token's header: the secret's version that signed it, if named.
pub fn key_id(token: &str) -> Result<Option<String>, TokenError> {
    jsonwebtoken::decode_header(token)
        .map(|header| header.kid)
        .map_err(|e| TokenError::Malformed(e.to_string()))
}

/// Verifies a token's signature (HS256 only), expiry and user id.
pub fn verify(secret: &[u8], token: &str) -> Result<Claims, TokenError> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_required_spec_claims(&["exp", "sub"]);
    validation.leeway = 0;
    let data = jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(secret), &validation).map_err(|e| {
        match e.kind() {
            ErrorKind::ExpiredSignature => TokenError::Expired,
            ErrorKind::InvalidSignature => TokenError::BadSignature,
            _ => TokenError::Malformed(e.to_string()),
        }
    })?;
    validate::user(&data.claims.sub).map_err(|_| TokenError::InvalidUser)?;
    // A rotated secret's previous version is accepted as long as a token may
    // live: one that lives longer would outlast it.
    if data.claims.exp > epoch_seconds(SystemTime::now()) + MAX_TTL.as_secs() {
        return Err(TokenError::Malformed("it expires more than 30 days from now".into()));
    }
    Ok(data.claims)
}

fn epoch_seconds(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn a_minted_token_verifies() {
        let token = mint(SECRET, "alice", Duration::from_secs(3600), SystemTime::now()).unwrap();
        assert_eq!(verify(SECRET, &token).unwrap().sub, "alice");
        assert_eq!(key_id(&token), Ok(None));
        let versioned =
            mint_signed_by(Some("v2"), SECRET, "alice", Duration::from_secs(60), SystemTime::now()).unwrap();
        assert_eq!(key_id(&versioned), Ok(Some("v2".to_string())));
        assert_eq!(verify(SECRET, &versioned).unwrap().sub, "alice");
        assert!(matches!(key_id("not a token"), Err(TokenError::Malformed(_))));
    }

    #[test]
    fn expired_forged_and_malformed_tokens_are_rejected() {
        let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
        let expired = mint(SECRET, "alice", Duration::from_secs(60), an_hour_ago).unwrap();
        assert_eq!(verify(SECRET, &expired), Err(TokenError::Expired));

        let forged = mint(
            b"another-secret-another-secret-xx",
            "alice",
            Duration::from_secs(60),
            SystemTime::now(),
        )
        .unwrap();
        assert_eq!(verify(SECRET, &forged), Err(TokenError::BadSignature));

        for malformed in ["", "abc", "a.b.c", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIn0."] {
            assert!(
                matches!(verify(SECRET, malformed), Err(TokenError::Malformed(_))),
                "{malformed}"
            );
        }
    }

    #[test]
    fn tokens_with_other_algorithms_are_rejected() {
        let claims = Claims {
            sub: "alice".into(),
            exp: epoch_seconds(SystemTime::now()) + 60,
            iat: 0,
        };
        let hs512 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert!(verify(SECRET, &hs512).is_err());
    }

    #[test]
    fn a_token_living_longer_than_30_days_is_refused() {
        let forever = mint(SECRET, "alice", MAX_TTL + Duration::from_secs(3600), SystemTime::now()).unwrap();
        assert!(matches!(verify(SECRET, &forever), Err(TokenError::Malformed(_))));
        let month = mint(SECRET, "alice", MAX_TTL, SystemTime::now()).unwrap();
        assert_eq!(verify(SECRET, &month).unwrap().sub, "alice");
    }

    #[test]
    fn a_token_needs_a_valid_user() {
        assert_eq!(
            mint(SECRET, "not valid", Duration::from_secs(60), SystemTime::now()),
            Err(TokenError::InvalidUser)
        );
        let claims = Claims {
            sub: "a#b".into(),
            exp: epoch_seconds(SystemTime::now()) + 60,
            iat: 0,
        };
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert_eq!(verify(SECRET, &token), Err(TokenError::InvalidUser));
    }
}
