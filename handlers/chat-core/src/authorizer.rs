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
use crate::token_secret::TokenKeys;
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
    /// The token secret could not be read: API Gateway answers 500.
    #[error("{0}")]
    Secret(String),
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

/// The authorizer of one function instance, with the keys it keeps between
/// invocations: the token secret's versions, or the OIDC issuer's keys.
pub enum Authorizer {
    Token(TokenKeys),
    Oidc(Verifier),
    None,
}

impl Authorizer {
    /// `sdk` reaches Secrets Manager in token mode.
    pub fn new(mode: AuthMode, sdk: &aws_config::SdkConfig) -> Self {
        match mode {
            AuthMode::Token { secret_id } => {
                Authorizer::Token(TokenKeys::new(aws_sdk_secretsmanager::Client::new(sdk), &secret_id))
            }
            AuthMode::Oidc(settings) => Authorizer::Oidc(Verifier::new(settings)),
            AuthMode::None => Authorizer::None,
        }
    }

    pub async fn identify(&self, request: &AuthorizerRequest) -> Result<Identity, AuthorizerError> {
        let credential_key = match self {
            Authorizer::Token(_) | Authorizer::Oidc(_) => "token",
            Authorizer::None => "user",
        };
        let params = ConnectParams::parse(&request.headers, &request.query_string_parameters, credential_key)
            .map_err(|e| unauthorized(e.to_string()))?;
        let credential = params.credential.ok_or_else(|| {
            unauthorized(format!(
                "no {credential_key} in the query string or Sec-WebSocket-Protocol"
            ))
        })?;
        let user = match self {
            Authorizer::Token(keys) => {
                let kid = token::key_id(&credential).map_err(|e| unauthorized(e.to_string()))?;
                // Not the client's fault: the handshake fails with 500, not 401.
                let versions = keys
                    .versions(kid.as_deref())
                    .await
                    .map_err(|e| AuthorizerError::Secret(e.to_string()))?;
                versions
                    .verify(&credential, kid.as_deref())
                    .map_err(|e| unauthorized(e.to_string()))?
                    .sub
            }
            Authorizer::Oidc(verifier) => verifier
                .verify(&credential)
                .await
                .map_err(|e| unauthorized(e.to_string()))?,
            Authorizer::None => validate::sanitize_user(&credential)
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

    /// Tokens are checked in the integration tests, against a secret in the
    /// emulator's Secrets Manager; here the user names itself (`auth = "none"`).
    fn open() -> Authorizer {
        Authorizer::new(AuthMode::None, &aws_config::SdkConfig::builder().build())
    }

    #[tokio::test]
    async fn a_caller_is_allowed_on_the_method_arn_with_user_and_room() {
        let response = open()
            .authorize(&request(json!({"user": "alice", "room": "general"}), json!({})))
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
    async fn the_credential_may_come_as_a_subprotocol() {
        let identity = open()
            .identify(&request(json!({}), json!({"Sec-WebSocket-Protocol": "bob, general"})))
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
    async fn mode_none_takes_a_sanitised_user_name() {
        let identity = open()
            .identify(&request(json!({"user": "Ali ce!"}), json!({})))
            .await
            .unwrap();
        assert_eq!(identity.user, "Alice");
        assert_eq!(identity.room, "lobby");
        for bad in [json!({"user": "!!!"}), json!({})] {
            let err = open().identify(&request(bad, json!({}))).await.unwrap_err();
            assert_eq!(err.to_string(), "Unauthorized");
        }
    }

    #[tokio::test]
    async fn a_missing_method_arn_is_a_bad_event_not_a_401() {
        let mut req = request(json!({"user": "alice"}), json!({}));
        req.method_arn = None;
        assert!(matches!(
            open().authorize(&req).await,
            Err(AuthorizerError::BadEvent(_))
        ));
    }

    #[tokio::test]
    async fn an_oversized_room_is_cut_to_keep_the_context_small() {
        let room = "r".repeat(10_000);
        let identity = open()
            .identify(&request(json!({"user": "a", "room": room}), json!({})))
            .await
            .unwrap();
        assert_eq!(identity.room.len(), MAX_CONTEXT_ROOM_CHARS);
        assert!(validate::room(&identity.room).is_err(), "still rejected by $connect");
    }
}
