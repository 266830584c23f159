//! `auth = "oidc"`: tokens from the app's own OpenID Connect provider
//! (Cognito, Auth0, Okta, Keycloak…), verified against the issuer's
//! published keys (JWKS).
//!
//! What a token must be: signed RS256 or ES256 by a key of the issuer's JWKS
//! named by its `kid` (the algorithm is the key's, never the token's
//! choice: `none` and HS256 are refused), `iss` the configured issuer, `aud`
//! the configured audience (or `client_id`, which Cognito access tokens carry
//! instead of `aud`), `exp` in the future and `nbf` past, within
//! [`LEEWAY`]; the user is the `user_claim` claim, a valid user name.
//!
//! The JWKS is fetched at the first token and kept across invocations; a
//! token naming a `kid` the keys lack makes it fetch them again (the IdP
//! rotated its keys), at most once per [`REFETCH_INTERVAL`], so a flood of
//! tokens with made-up kids cannot make the function hammer the IdP.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use thiserror::Error;
use tokio::sync::Mutex;

use crate::validate;

/// Clock skew allowed on `exp` and `nbf`.
pub const LEEWAY: Duration = Duration::from_secs(60);
/// The least time between two fetches of the JWKS caused by an unknown `kid`.
pub const REFETCH_INTERVAL: Duration = Duration::from_secs(30);
/// How long one fetch of the discovery document or the JWKS may take: the
/// authorizer's whole invocation has API Gateway's 29 s at most, the
/// client's handshake less.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest discovery document or JWKS read.
const MAX_DOCUMENT_BYTES: usize = 256 * 1024;

/// `[oidc]`: who issues the tokens and for whom.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OidcSettings {
    /// `https://…` (http only on a loopback host), exactly as the tokens' `iss`.
    pub issuer: String,
    /// The tokens' `aud` (or `client_id`).
    pub audience: String,
    /// The claim naming the chat user.
    pub user_claim: String,
    /// The JWKS URL; `None`: the discovery document's `jwks_uri`.
    pub jwks_url: Option<String>,
}

pub const DEFAULT_USER_CLAIM: &str = "sub";

impl OidcSettings {
    /// Checks each value; the error says which and why.
    pub fn new(issuer: &str, audience: &str, user_claim: Option<&str>, jwks_url: Option<&str>) -> Result<Self, String> {
        check_url("issuer", issuer)?;
        if let Some(url) = jwks_url {
            check_url("jwks_url", url)?;
        }
        if audience.trim().is_empty() {
            return Err("audience is empty: set it to the client id the tokens are issued for".into());
        }
        let user_claim = user_claim.unwrap_or(DEFAULT_USER_CLAIM);
        if user_claim.trim().is_empty() {
            return Err("user_claim is empty: name the claim that holds the user (e.g. \"sub\")".into());
        }
        Ok(OidcSettings {
            issuer: issuer.to_string(),
            audience: audience.to_string(),
            user_claim: user_claim.to_string(),
            jwks_url: jwks_url.map(str::to_string),
        })
    }

    /// The issuer's discovery document (OpenID Connect Discovery 1.0, §4).
    pub fn discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.issuer.trim_end_matches('/'))
    }
}

/// An `https://` URL, or `http://` to a loopback host (a test or local IdP).
fn check_url(what: &str, url: &str) -> Result<(), String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("{what} {url:?} is not a URL: expected https://host/…"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.rsplit_once(':').map_or(authority, |(host, _)| host),
    };
    if host.is_empty() || authority.contains('@') || url.contains(char::is_whitespace) {
        return Err(format!("{what} {url:?} is not a URL: expected https://host/…"));
    }
    let loopback = matches!(host, "localhost" | "127.0.0.1" | "::1");
    match scheme {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        "http" => Err(format!(
            "{what} {url:?} uses http: tokens and keys must come over https (http only for a loopback issuer)"
        )),
        _ => Err(format!("{what} {url:?} is not an https URL")),
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum OidcError {
    #[error("token is malformed: {0}")]
    Malformed(String),
    #[error("token algorithm {0} is not accepted (RS256 or ES256 only)")]
    Algorithm(String),
    #[error("token names no key id (kid)")]
    NoKeyId,
    #[error("the issuer's keys have no key {0:?}")]
    UnknownKey(String),
    #[error("key {kid:?} does not fit algorithm {alg}")]
    KeyMismatch { kid: String, alg: String },
    #[error("token signature does not match")]
    BadSignature,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet (nbf)")]
    NotYetValid,
    #[error("token issuer is not {0}")]
    Issuer(String),
    #[error("token audience is not {0}")]
    Audience(String),
    #[error("token has no string claim {0:?}")]
    NoUserClaim(String),
    #[error("token claim {0:?} is not a valid user name")]
    InvalidUser(String),
    #[error("cannot read the issuer's keys: {0}")]
    Keys(String),
}

/// Verifies tokens of one issuer; its keys are kept between calls.
pub struct Verifier {
    settings: OidcSettings,
    keys: Mutex<KeyCache>,
}

#[derive(Default)]
struct KeyCache {
    keys: HashMap<String, Jwk>,
    fetched: bool,
    /// When an unknown kid last made it fetch again.
    last_refetch: Option<Instant>,
}

impl Verifier {
    pub fn new(settings: OidcSettings) -> Self {
        Verifier {
            settings,
            keys: Mutex::new(KeyCache::default()),
        }
    }

    pub fn settings(&self) -> &OidcSettings {
        &self.settings
    }

    /// The user a token names, once it is proven to be the issuer's.
    pub async fn verify(&self, token: &str) -> Result<String, OidcError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| OidcError::Malformed(e.to_string()))?;
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
            return Err(OidcError::Algorithm(format!("{:?}", header.alg)));
        }
        let kid = header.kid.ok_or(OidcError::NoKeyId)?;
        let jwk = self.key(&kid).await?;
        let key_alg = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Algorithm::RS256,
            AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => Algorithm::ES256,
            _ => {
                return Err(OidcError::KeyMismatch {
                    kid,
                    alg: format!("{:?}", header.alg),
                });
            }
        };
        let declared = jwk.common.key_algorithm.map(|a| format!("{a:?}"));
        if key_alg != header.alg || declared.is_some_and(|a| a != format!("{key_alg:?}")) {
            return Err(OidcError::KeyMismatch {
                kid,
                alg: format!("{:?}", header.alg),
            });
        }
        let key = DecodingKey::from_jwk(&jwk).map_err(|e| OidcError::Keys(format!("key {kid:?}: {e}")))?;
        let mut validation = Validation::new(key_alg);
        validation.leeway = LEEWAY.as_secs();
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.settings.issuer]);
        // Checked below: Cognito access tokens carry `client_id`, not `aud`.
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp", "iss"]);
        let claims = jsonwebtoken::decode::<Value>(token, &key, &validation)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                match e.kind() {
                    ErrorKind::InvalidSignature => OidcError::BadSignature,
                    ErrorKind::ExpiredSignature => OidcError::Expired,
                    ErrorKind::ImmatureSignature => OidcError::NotYetValid,
                    ErrorKind::InvalidIssuer => OidcError::Issuer(self.settings.issuer.clone()),
                    _ => OidcError::Malformed(e.to_string()),
                }
            })?
            .claims;
        if !audience_matches(&claims, &self.settings.audience) {
            return Err(OidcError::Audience(self.settings.audience.clone()));
        }
        let claim = &self.settings.user_claim;
        let user = claims[claim.as_str()]
            .as_str()
            .ok_or_else(|| OidcError::NoUserClaim(claim.clone()))?;
        validate::user(user).map_err(|_| OidcError::InvalidUser(claim.clone()))?;
        Ok(user.to_string())
    }

    /// The key `kid` of the issuer: from the cache, or fetched (the first
    /// time, or again when it is unknown and the last refetch is old).
    async fn key(&self, kid: &str) -> Result<Jwk, OidcError> {
        let mut cache = self.keys.lock().await;
        if let Some(jwk) = cache.keys.get(kid) {
            return Ok(jwk.clone());
        }
        let may_refetch = cache.last_refetch.is_none_or(|at| at.elapsed() >= REFETCH_INTERVAL);
        if cache.fetched && !may_refetch {
            return Err(OidcError::UnknownKey(kid.to_string()));
        }
        if cache.fetched {
            cache.last_refetch = Some(Instant::now());
        }
        let keys = fetch_keys(&self.settings).await?;
        tracing::info!(keys = keys.len(), "fetched the issuer's keys");
        cache.keys = keys;
        cache.fetched = true;
        cache
            .keys
            .get(kid)
            .cloned()
            .ok_or_else(|| OidcError::UnknownKey(kid.to_string()))
    }
}

/// `aud` (a string or a list) holds `audience`; without `aud`, `client_id` is it.
fn audience_matches(claims: &Value, audience: &str) -> bool {
    match &claims["aud"] {
        Value::String(aud) => aud == audience,
        Value::Array(auds) => auds.iter().any(|aud| aud.as_str() == Some(audience)),
        Value::Null => claims["client_id"].as_str() == Some(audience),
        _ => false,
    }
}

/// The issuer's signing keys by kid: the JWKS at `jwks_url`, or at the
/// discovery document's `jwks_uri` (whose `issuer` must be ours).
pub async fn fetch_keys(settings: &OidcSettings) -> Result<HashMap<String, Jwk>, OidcError> {
    let jwks_url = match &settings.jwks_url {
        Some(url) => url.clone(),
        None => discover_jwks_url(settings).await?,
    };
    let body = get(&jwks_url).await.map_err(OidcError::Keys)?;
    let set: JwkSet =
        serde_json::from_slice(&body).map_err(|e| OidcError::Keys(format!("{jwks_url} is not a JWKS: {e}")))?;
    Ok(set
        .keys
        .into_iter()
        .filter_map(|jwk| Some((jwk.common.key_id.clone()?, jwk)))
        .collect())
}

/// The `jwks_uri` of the issuer's discovery document.
pub async fn discover_jwks_url(settings: &OidcSettings) -> Result<String, OidcError> {
    let url = settings.discovery_url();
    let body = get(&url).await.map_err(OidcError::Keys)?;
    let document: Value =
        serde_json::from_slice(&body).map_err(|e| OidcError::Keys(format!("{url} is not JSON: {e}")))?;
    // OpenID Connect Discovery 1.0 §4.3: the document's issuer is the issuer.
    if document["issuer"].as_str() != Some(settings.issuer.as_str()) {
        return Err(OidcError::Keys(format!(
            "{url} names issuer {} instead of {}",
            document["issuer"], settings.issuer
        )));
    }
    let jwks_uri = document["jwks_uri"]
        .as_str()
        .ok_or_else(|| OidcError::Keys(format!("{url} has no jwks_uri")))?;
    check_url("jwks_uri", jwks_uri).map_err(OidcError::Keys)?;
    Ok(jwks_uri.to_string())
}

/// GETs `url` (https, or http for loopback), its body when the answer is 200.
async fn get(url: &str) -> Result<Vec<u8>, String> {
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(rustls::crypto::aws_lc_rs::default_provider())
        .map_err(|e| format!("no TLS roots to reach {url}: {e}"))?
        .https_or_http()
        .enable_http1()
        .build();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build::<_, Empty<Bytes>>(connector);
    let uri: http::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
    let fetch = async {
        let response = client.get(uri).await.map_err(|e| format!("GET {url}: {e}"))?;
        let status = response.status();
        let body = http_body_util::Limited::new(response.into_body(), MAX_DOCUMENT_BYTES)
            .collect()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?
            .to_bytes();
        if !status.is_success() {
            return Err(format!("GET {url}: HTTP {status}"));
        }
        Ok(body.to_vec())
    };
    tokio::time::timeout(FETCH_TIMEOUT, fetch)
        .await
        .map_err(|_| format!("GET {url}: no answer within {FETCH_TIMEOUT:?}"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_accept_https_and_loopback_http_only() {
        assert!(OidcSettings::new("https://idp.example.com/realms/chat", "app", None, None).is_ok());
        assert!(OidcSettings::new("http://127.0.0.1:8080", "app", None, None).is_ok());
        assert!(OidcSettings::new("http://localhost:9000/", "app", Some("email"), None).is_ok());
        assert!(OidcSettings::new("http://[::1]:9000", "app", None, None).is_ok());
        for (issuer, says) in [
            ("idp.example.com", "not a URL"),
            ("https://", "not a URL"),
            ("http://idp.example.com", "uses http"),
            ("http://127.0.0.1.evil.com", "uses http"),
            ("https://user@idp.example.com", "not a URL"),
            ("ftp://idp.example.com", "not an https URL"),
        ] {
            let error = OidcSettings::new(issuer, "app", None, None).unwrap_err();
            assert!(error.contains(says), "{issuer}: {error}");
        }
        assert!(
            OidcSettings::new("https://i", " ", None, None)
                .unwrap_err()
                .contains("audience")
        );
        assert!(
            OidcSettings::new("https://i", "a", Some(""), None)
                .unwrap_err()
                .contains("user_claim")
        );
        assert!(OidcSettings::new("https://i", "a", None, Some("http://x.com/jwks")).is_err());
        let settings = OidcSettings::new("https://i.example/", "a", None, None).unwrap();
        assert_eq!(
            settings.discovery_url(),
            "https://i.example/.well-known/openid-configuration"
        );
        assert_eq!(settings.user_claim, "sub");
    }

    #[test]
    fn the_audience_is_aud_or_cognitos_client_id() {
        use serde_json::json;
        assert!(audience_matches(&json!({"aud": "app"}), "app"));
        assert!(audience_matches(&json!({"aud": ["other", "app"]}), "app"));
        assert!(audience_matches(&json!({"client_id": "app"}), "app"));
        assert!(!audience_matches(&json!({"aud": "other", "client_id": "app"}), "app"));
        assert!(!audience_matches(&json!({"aud": ["other"]}), "app"));
        assert!(!audience_matches(&json!({}), "app"));
        assert!(!audience_matches(&json!({"aud": 7}), "app"));
    }
}
