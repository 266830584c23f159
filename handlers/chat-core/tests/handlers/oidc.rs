//! `auth = "oidc"` against a real OIDC issuer on loopback (discovery and
//! JWKS over HTTP, keys the test makes): who gets in, who gets a 401 and
//! why, and how the issuer's keys are fetched.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chat_core::authorizer::{Authorizer, AuthorizerError, AuthorizerRequest};
use chat_core::config::{AuthMode, OidcSettings};
use chat_testkit::events;
use chat_testkit::oidc::{AUDIENCE, OidcIssuer};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

fn request(token: &str) -> AuthorizerRequest {
    serde_json::from_value(events::authorizer_request(
        &[("token", token), ("room", "general")],
        None,
    ))
    .expect("authorizer event shape")
}

fn authorizer(issuer: &OidcIssuer, user_claim: Option<&str>) -> Authorizer {
    let settings = OidcSettings::new(issuer.url(), AUDIENCE, user_claim, None).unwrap();
    Authorizer::new(AuthMode::Oidc(settings), &aws_config::SdkConfig::builder().build())
}

/// The reason of a 401 (the error API Gateway gets says only `Unauthorized`).
async fn refused(authorizer: &Authorizer, token: &str) -> String {
    match authorizer.authorize(&request(token)).await {
        Err(error @ AuthorizerError::Unauthorized { .. }) => {
            assert_eq!(error.to_string(), "Unauthorized");
            let AuthorizerError::Unauthorized { reason } = error else {
                unreachable!()
            };
            assert!(!reason.contains(token), "the reason quotes the token: {reason}");
            reason
        }
        other => panic!("expected a 401, got {other:?}"),
    }
}

#[tokio::test]
async fn rs256_and_es256_tokens_of_the_issuer_connect_as_their_user() {
    let issuer = OidcIssuer::start().await;
    let authorizer = authorizer(&issuer, None);
    let rs256 = issuer.token("alice");
    let response = authorizer.authorize(&request(&rs256)).await.unwrap();
    let value = serde_json::to_value(&response).unwrap();
    assert_eq!(value["principalId"], "alice");
    assert_eq!(value["context"], json!({"user": "alice", "room": "general"}));

    let es256 = issuer.sign(&issuer.claims("bob"), Algorithm::ES256);
    let identity = authorizer.identify(&request(&es256)).await.unwrap();
    assert_eq!(identity.user, "bob");
    assert_eq!(issuer.jwks_fetches(), 1, "the keys are fetched once and kept");
}

#[tokio::test]
async fn the_user_claim_and_cognitos_client_id_are_honoured() {
    let issuer = OidcIssuer::start().await;
    let by_email = authorizer(&issuer, Some("username"));
    let mut claims = issuer.claims("ignored-sub");
    claims["username"] = json!("carol");
    let token = issuer.sign(&claims, Algorithm::RS256);
    assert_eq!(by_email.identify(&request(&token)).await.unwrap().user, "carol");

    // A Cognito access token: `client_id` instead of `aud`.
    let mut access = issuer.claims("dave");
    access.as_object_mut().unwrap().remove("aud");
    access["client_id"] = json!(AUDIENCE);
    let token = issuer.sign(&access, Algorithm::RS256);
    let authorizer = authorizer(&issuer, None);
    assert_eq!(authorizer.identify(&request(&token)).await.unwrap().user, "dave");
}

#[tokio::test]
async fn every_bad_token_is_a_401_that_says_why() {
    let issuer = OidcIssuer::start().await;
    let impostor = OidcIssuer::start().await;
    let authorizer = authorizer(&issuer, None);
    let now = issuer.claims("alice")["iat"].as_u64().unwrap();
    let with = |change: serde_json::Value| {
        let mut claims = issuer.claims("alice");
        for (name, value) in change.as_object().unwrap() {
            match value {
                serde_json::Value::Null => {
                    claims.as_object_mut().unwrap().remove(name);
                }
                value => claims[name] = value.clone(),
            }
        }
        claims
    };
    // Same kid (`rsa-0`), the impostor's key: a forged signature.
    let forged = impostor.sign(&issuer.claims("alice"), Algorithm::RS256);
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT","kid":"rsa-0"}"#),
        URL_SAFE_NO_PAD.encode(issuer.claims("alice").to_string())
    );
    let mut hs256_header = Header::new(Algorithm::HS256);
    hs256_header.kid = Some("rsa-0".into());
    let hs256 = jsonwebtoken::encode(
        &hs256_header,
        &issuer.claims("alice"),
        &EncodingKey::from_secret(b"the-public-key-is-no-secret-at-all"),
    )
    .unwrap();
    let cases = [
        ("forged signature", forged, "signature does not match"),
        (
            "another issuer",
            issuer.sign(&with(json!({"iss": "https://evil.example"})), Algorithm::RS256),
            "issuer is not",
        ),
        (
            "another audience",
            issuer.sign(&with(json!({"aud": "another-app"})), Algorithm::RS256),
            "audience is not",
        ),
        (
            "no audience",
            issuer.sign(&with(json!({"aud": null})), Algorithm::RS256),
            "audience is not",
        ),
        (
            "expired beyond the leeway",
            issuer.sign(&with(json!({"exp": now - 120})), Algorithm::RS256),
            "expired",
        ),
        (
            "not valid yet",
            issuer.sign(&with(json!({"nbf": now + 600})), Algorithm::ES256),
            "not valid yet",
        ),
        ("alg none", none, "malformed"),
        ("HS256 against the RSA key", hs256, "algorithm HS256 is not accepted"),
        (
            "no user claim",
            issuer.sign(&with(json!({"sub": null})), Algorithm::RS256),
            "no string claim \"sub\"",
        ),
        (
            "a user claim that is no user name",
            issuer.sign(&with(json!({"sub": "alice smith!"})), Algorithm::RS256),
            "not a valid user name",
        ),
        ("not a JWT", "abc.def".to_string(), "malformed"),
    ];
    for (case, token, says) in cases {
        let reason = refused(&authorizer, &token).await;
        assert!(reason.contains(says), "{case}: {reason}");
    }
    // Within the leeway, an expired token still passes (clock skew).
    let skewed = issuer.sign(&with(json!({"exp": now - 30})), Algorithm::RS256);
    assert!(authorizer.identify(&request(&skewed)).await.is_ok());
}

#[tokio::test]
async fn a_rotated_key_is_fetched_and_unknown_kids_cannot_hammer_the_issuer() {
    let issuer = OidcIssuer::start().await;
    let authorizer = authorizer(&issuer, None);
    assert!(authorizer.identify(&request(&issuer.token("alice"))).await.is_ok());
    assert_eq!(issuer.jwks_fetches(), 1);

    // The IdP rotates its keys: a token with the new kid gets in, after one fetch.
    let new_kid = issuer.rotate_keys();
    let token = issuer.token("alice");
    assert!(token.len() > 20 && jsonwebtoken::decode_header(&token).unwrap().kid == Some(new_kid));
    assert_eq!(authorizer.identify(&request(&token)).await.unwrap().user, "alice");
    assert_eq!(issuer.jwks_fetches(), 2);

    // Tokens naming kids nobody published: one more fetch at most.
    let stranger = OidcIssuer::start().await;
    for _ in 0..3 {
        stranger.rotate_keys();
    }
    for _ in 0..20 {
        let mut claims = stranger.claims("mallory");
        claims["iss"] = json!(issuer.url());
        let token = stranger.sign(&claims, Algorithm::RS256);
        let reason = refused(&authorizer, &token).await;
        assert!(reason.contains("have no key"), "{reason}");
    }
    assert!(
        issuer.jwks_fetches() == 2,
        "20 unknown kids right after a fetch cause no fetch: {}",
        issuer.jwks_fetches()
    );
}

#[tokio::test]
async fn an_issuer_that_cannot_be_reached_is_a_401_naming_the_url() {
    let issuer = OidcIssuer::start().await;
    let token = issuer.token("alice");
    let url = issuer.url().to_string();
    drop(issuer);
    let settings = OidcSettings::new(&url, AUDIENCE, None, None).unwrap();
    let authorizer = Authorizer::new(AuthMode::Oidc(settings), &aws_config::SdkConfig::builder().build());
    let reason = refused(&authorizer, &token).await;
    assert!(
        reason.contains("cannot read the issuer's keys") && reason.contains(&url),
        "{reason}"
    );
}
