//! The REQUEST authorizer on `$connect`: who is connecting, and to which room.
//!
//! API Gateway answers the client 401 when the function fails with exactly the
//! message `Unauthorized`, 403 on a Deny, 500 on anything else.

use aws_lambda_events::apigw::{
    ApiGatewayCustomAuthorizerPolicy, ApiGatewayCustomAuthorizerRequestTypeRequest, ApiGatewayCustomAuthorizerResponse,
};
use aws_lambda_events::iam::{IamPolicyEffect, IamPolicyStatement};
use serde_json::json;
use thiserror::Error;

use crate::config::AuthMode;
use crate::event::{ConnectParams, context};
use crate::oidc::Verifier;
use crate::{token, validate};

pub type AuthorizerRequest = ApiGatewayCustomAuthorizerRequestTypeRequest;
pub type AuthorizerResponse = ApiGatewayCustomAuthorizerResponse;

/// Room names are validated by `$connect`, which can answer with a clear
/// status; the context only needs to stay small (8 KB limit for all of it).
const MAX_CONTEXT_ROOM_CHARS: usize = 65;

#[derive(Debug, Error)]
pub enum AuthorizerError {
    /// The message must be exactly `Unauthorized` for API Gateway to answer 401.
    #[error("Unauthorized")]
    Unauthorized { reason: String },
    #[error("malformed authorizer event: {0}")]
    BadEvent(String),
}

/// Lambda reports the error's message to API Gateway, which matches it exactly.
impl From<AuthorizerError> for lambda_runtime::Diagnostic {
    fn from(error: AuthorizerError) -> Self {
        lambda_runtime::Diagnostic {
            error_type: "AuthorizerError".into(),
            error_message: error.to_string(),
        }
    }
}

fn unauthorized(reason: impl Into<String>) -> AuthorizerError {
    AuthorizerError::Unauthorized { reason: reason.into() }
}

/// The user a connect request proves to be, and the room it asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    pub user: String,
    pub room: String,
}

/// The authorizer of one function instance: its mode and, with OIDC, the
/// issuer's keys it keeps between invocations.
pub struct Authorizer {
    mode: AuthMode,
    oidc: Option<Verifier>,
}

impl Authorizer {
    pub fn new(mode: AuthMode) -> Self {
        let oidc = match &mode {
            AuthMode::Oidc(settings) => Some(Verifier::new(settings.clone())),
            _ => None,
        };
        Authorizer { mode, oidc }
    }

    pub async fn identify(&self, request: &AuthorizerRequest) -> Result<Identity, AuthorizerError> {
        let credential_key = match self.mode {
            AuthMode::Token { .. } | AuthMode::Oidc(_) => "token",
            AuthMode::None => "user",
        };
        let params = ConnectParams::parse(&request.headers, &request.query_string_parameters, credential_key)
            .map_err(|e| unauthorized(e.to_string()))?;
        let credential = params.credential.ok_or_else(|| {
            unauthorized(format!(
                "no {credential_key} in the query string or Sec-WebSocket-Protocol"
            ))
        })?;
        let user = match (&self.mode, &self.oidc) {
            (AuthMode::Token { secret }, _) => {
                token::verify(secret, &credential)
                    .map_err(|e| unauthorized(e.to_string()))?
                    .sub
            }
            (AuthMode::Oidc(_), Some(verifier)) => verifier
                .verify(&credential)
                .await
                .map_err(|e| unauthorized(e.to_string()))?,
            (AuthMode::Oidc(_), None) => unreachable!("Authorizer::new makes the verifier of an OIDC mode"),
            (AuthMode::None, _) => validate::sanitize_user(&credential)
                .ok_or_else(|| unauthorized("the user name has no allowed characters"))?,
        };
        Ok(Identity {
            user,
            room: params.room.chars().take(MAX_CONTEXT_ROOM_CHARS).collect(),
        })
    }

    /// Identifies the caller and allows it to invoke `$connect`, passing
    /// user and room to every later event of the connection.
    pub async fn authorize(&self, request: &AuthorizerRequest) -> Result<AuthorizerResponse, AuthorizerError> {
        let method_arn = request
            .method_arn
            .clone()
            .filter(|arn| !arn.is_empty())
            .ok_or_else(|| AuthorizerError::BadEvent("no methodArn".into()))?;
        let identity = self.identify(request).await?;
        Ok(allow_policy(&identity, method_arn))
    }
}

pub fn allow_policy(identity: &Identity, method_arn: String) -> AuthorizerResponse {
    let mut statement = IamPolicyStatement::default();
    statement.action = vec!["execute-api:Invoke".to_string()];
    statement.effect = IamPolicyEffect::Allow;
    statement.resource = vec![method_arn];
    let mut policy = ApiGatewayCustomAuthorizerPolicy::default();
    policy.version = Some("2012-10-17".to_string());
    policy.statement = vec![statement];
    let mut response = AuthorizerResponse::default();
    response.principal_id = Some(identity.user.clone());
    response.policy_document = policy;
    response.context = json!({ context::USER: identity.user, context::ROOM: identity.room });
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use std::time::{Duration, SystemTime};

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const ARN: &str = "arn:aws:execute-api:us-east-1:123456789012:abc123/dev/$connect";

    fn request(query: Value, headers: Value) -> AuthorizerRequest {
        serde_json::from_value(json!({
            "type": "REQUEST",
            "methodArn": ARN,
            "headers": headers,
            "queryStringParameters": query,
            "stageVariables": {},
            "requestContext": {
                "routeKey": "$connect", "eventType": "CONNECT", "extendedRequestId": "X",
                "requestTime": "09/Feb/2024:10:00:00 +0000", "messageDirection": "IN",
                "stage": "dev", "connectedAt": 1707472800000_i64, "requestTimeEpoch": 1707472800000_i64,
                "identity": {"sourceIp": "127.0.0.1"}, "requestId": "X",
                "domainName": "abc123.execute-api.us-east-1.amazonaws.com",
                "connectionId": "abc=", "apiId": "abc123"
            }
        }))
        .unwrap()
    }

    async fn authorize(mode: &AuthMode, request: &AuthorizerRequest) -> Result<AuthorizerResponse, AuthorizerError> {
        Authorizer::new(mode.clone()).authorize(request).await
    }

    async fn identify(mode: &AuthMode, request: &AuthorizerRequest) -> Result<Identity, AuthorizerError> {
        Authorizer::new(mode.clone()).identify(request).await
    }

    fn token_mode() -> AuthMode {
        AuthMode::Token {
            secret: SECRET.to_vec(),
        }
    }

    fn valid_token(user: &str) -> String {
        token::mint(SECRET, user, Duration::from_secs(600), SystemTime::now()).unwrap()
    }

    #[tokio::test]
    async fn a_valid_token_is_allowed_on_the_method_arn_with_user_and_room() {
        let response = authorize(
            &token_mode(),
            &request(json!({"token": valid_token("alice"), "room": "general"}), json!({})),
        )
        .await
        .unwrap();
        let value = serde_json::to_value(&response).unwrap();
        assert_eq!(value["principalId"], "alice");
        assert_eq!(value["policyDocument"]["Version"], "2012-10-17");
        assert_eq!(value["policyDocument"]["Statement"][0]["Effect"], "Allow");
        assert_eq!(
            value["policyDocument"]["Statement"][0]["Action"],
            json!(["execute-api:Invoke"])
        );
        assert_eq!(value["policyDocument"]["Statement"][0]["Resource"], json!([ARN]));
        assert_eq!(value["context"], json!({"user": "alice", "room": "general"}));
    }

    #[tokio::test]
    async fn the_token_may_come_as_a_subprotocol() {
        let protocol = format!("{}, general", valid_token("bob"));
        let identity = identify(
            &token_mode(),
            &request(json!({}), json!({"Sec-WebSocket-Protocol": protocol})),
        )
        .await
        .unwrap();
        assert_eq!(
            identity,
            Identity {
                user: "bob".into(),
                room: "general".into()
            }
        );
    }

    #[tokio::test]
    async fn bad_credentials_fail_with_exactly_unauthorized() {
        let expired = token::mint(
            SECRET,
            "alice",
            Duration::from_secs(1),
            SystemTime::now() - Duration::from_secs(60),
        )
        .unwrap();
        let forged = token::mint(
            b"another-secret-another-secret-xx",
            "alice",
            Duration::from_secs(60),
            SystemTime::now(),
        )
        .unwrap();
        let cases = [
            request(json!({}), json!({})),
            request(json!({"token": ""}), json!({})),
            request(json!({"token": "not-a-jwt"}), json!({})),
            request(json!({"token": expired}), json!({})),
            request(json!({"token": forged}), json!({})),
            request(json!({}), json!({"Sec-WebSocket-Protocol": ", lobby"})),
            request(json!({"user": "alice"}), json!({})),
        ];
        for case in cases {
            let err = authorize(&token_mode(), &case).await.unwrap_err();
            assert!(matches!(err, AuthorizerError::Unauthorized { .. }), "{err:?}");
            assert_eq!(err.to_string(), "Unauthorized");
        }
    }

    #[tokio::test]
    async fn mode_none_takes_a_sanitised_user_name() {
        let identity = identify(&AuthMode::None, &request(json!({"user": "Ali ce!"}), json!({})))
            .await
            .unwrap();
        assert_eq!(identity.user, "Alice");
        assert_eq!(identity.room, "lobby");
        assert!(
            identify(&AuthMode::None, &request(json!({"user": "!!!"}), json!({})))
                .await
                .is_err()
        );
        assert!(identify(&AuthMode::None, &request(json!({}), json!({}))).await.is_err());
    }

    #[tokio::test]
    async fn a_missing_method_arn_is_a_bad_event_not_a_401() {
        let mut req = request(json!({"token": valid_token("alice")}), json!({}));
        req.method_arn = None;
        assert!(matches!(
            authorize(&token_mode(), &req).await,
            Err(AuthorizerError::BadEvent(_))
        ));
    }

    #[tokio::test]
    async fn an_oversized_room_is_cut_to_keep_the_context_small() {
        let room = "r".repeat(10_000);
        let identity = identify(
            &token_mode(),
            &request(json!({"token": valid_token("a"), "room": room}), json!({})),
        )
        .await
        .unwrap();
        assert_eq!(identity.room.len(), MAX_CONTEXT_ROOM_CHARS);
        assert!(validate::room(&identity.room).is_err(), "still rejected by $connect");
    }
}
