//! Connection tokens: HS256 JWTs with `sub` (the user id) and `exp`.
//! `chatctl token` mints them; the authorizer verifies them.

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
    #[error("token is malformed: {0}")]
    Malformed(String),
    #[error("token user is not a valid user id")]
    InvalidUser,
    #[error("could not sign token: {0}")]
    Signing(String),
}

/// Mints a token for `user`, valid for `ttl` from `issued_at`.
pub fn mint(secret: &[u8], user: &str, ttl: Duration, issued_at: SystemTime) -> Result<String, TokenError> {
    validate::user(user).map_err(|_| TokenError::InvalidUser)?;
    let iat = epoch_seconds(issued_at);
    let claims = Claims {
        sub: user.to_string(),
        exp: iat + ttl.as_secs(),
        iat,
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|e| TokenError::Signing(e.to_string()))
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
