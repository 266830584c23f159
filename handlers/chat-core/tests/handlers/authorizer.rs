use std::time::{Duration, SystemTime};

use chat_core::authorizer::{self, AuthorizerError, AuthorizerRequest};
use chat_core::config::AuthMode;
use chat_core::token;
use chat_testkit::events;

const SECRET: &[u8] = b"integration-secret-integration-secret";

fn request(query: &[(&str, &str)], protocol: Option<&str>) -> AuthorizerRequest {
    serde_json::from_value(events::authorizer_request(query, protocol)).expect("authorizer event shape")
}

async fn authorize(
    mode: &AuthMode,
    request: &AuthorizerRequest,
) -> Result<authorizer::AuthorizerResponse, AuthorizerError> {
    authorizer::Authorizer::new(mode.clone()).authorize(request).await
}

fn mode() -> AuthMode {
    AuthMode::Token {
        secret: SECRET.to_vec(),
    }
}

#[tokio::test]
async fn a_token_from_the_query_or_the_subprotocol_is_allowed() {
    let token = token::mint(SECRET, "alice", Duration::from_secs(60), SystemTime::now()).unwrap();
    let response = authorize(&mode(), &request(&[("token", &token), ("room", "general")], None))
        .await
        .unwrap();
    let json = serde_json::to_value(&response).unwrap();
    assert_eq!(json["context"]["user"], "alice");
    assert_eq!(json["context"]["room"], "general");
    assert!(
        json["policyDocument"]["Statement"][0]["Resource"][0]
            .as_str()
            .unwrap()
            .ends_with("/dev/$connect")
    );

    let protocol = format!("{token}, general");
    let response = authorize(&mode(), &request(&[], Some(&protocol))).await.unwrap();
    assert_eq!(serde_json::to_value(&response).unwrap()["context"]["room"], "general");
}

#[tokio::test]
async fn bad_tokens_are_unauthorized() {
    let expired = token::mint(
        SECRET,
        "alice",
        Duration::from_secs(1),
        SystemTime::now() - Duration::from_secs(10),
    )
    .unwrap();
    let forged = token::mint(
        b"not-the-secret-not-the-secret-xxx",
        "alice",
        Duration::from_secs(60),
        SystemTime::now(),
    )
    .unwrap();
    let cases: [(&str, AuthorizerRequest); 6] = [
        ("missing", request(&[("room", "lobby")], None)),
        ("malformed", request(&[("token", "abc.def")], None)),
        ("expired", request(&[("token", &expired)], None)),
        ("forged", request(&[("token", &forged)], None)),
        ("wrong subprotocol", request(&[], Some("a, b, c"))),
        ("user instead of token", request(&[("user", "alice")], None)),
    ];
    for (case, request) in cases {
        let error = authorize(&mode(), &request).await.unwrap_err();
        assert!(matches!(error, AuthorizerError::Unauthorized { .. }), "{case}");
        let diagnostic: lambda_runtime::Diagnostic = error.into();
        assert_eq!(diagnostic.error_message, "Unauthorized", "{case}");
    }
}

#[tokio::test]
async fn mode_none_takes_the_user_from_the_query() {
    let response = authorize(&AuthMode::None, &request(&[("user", "dave")], None))
        .await
        .unwrap();
    assert_eq!(response.principal_id.as_deref(), Some("dave"));
    assert!(authorize(&AuthMode::None, &request(&[], None)).await.is_err());
}
