//! The `$connect` authorizer with `auth = "token"`: tokens signed with the
//! stack's secret, which Secrets Manager keeps (the emulator's here, through
//! the AWS behaviour layer, read with a function role's credentials).

use std::time::{Duration, Instant, SystemTime};

use chat_core::authorizer::{Authorizer, AuthorizerError, AuthorizerRequest};
use chat_core::config::AuthMode;
use chat_core::token;
use chat_core::token_secret::REREAD_AT_MOST_EVERY;
use chat_testkit::aws_behaviour::{Behaviours, Timings};
use chat_testkit::events;

use crate::support::Stack;

const SECRET_ID: &str = "chatctl/chat/token";
const FIRST: &str = "integration-secret-integration-secret";
const SECOND: &str = "rotated-secret-rotated-secret-rotated";

fn request(query: &[(&str, &str)], protocol: Option<&str>) -> AuthorizerRequest {
    serde_json::from_value(events::authorizer_request(query, protocol)).expect("authorizer event shape")
}

/// A stack whose token secret exists, with its first version's id.
async fn stack_with_secret(behaviours: Behaviours) -> (Stack, String) {
    let stack = Stack::start_through(behaviours, |_| {}).await;
    let created = secrets(&stack)
        .create_secret()
        .name(SECRET_ID)
        .secret_string(FIRST)
        .send()
        .await
        .unwrap();
    let version = created.version_id().unwrap().to_string();
    (stack, version)
}

fn secrets(stack: &Stack) -> aws_sdk_secretsmanager::Client {
    aws_sdk_secretsmanager::Client::new(&stack.sdk)
}

/// An authorizer instance as Lambda runs it: the role's credentials.
fn authorizer(stack: &Stack) -> Authorizer {
    Authorizer::new(
        AuthMode::Token {
            secret_id: SECRET_ID.into(),
        },
        &stack.role_sdk,
    )
}

fn signed(version: Option<&str>, secret: &str, user: &str) -> String {
    token::mint_signed_by(
        version,
        secret.as_bytes(),
        user,
        Duration::from_secs(60),
        SystemTime::now(),
    )
    .unwrap()
}

async fn user_of(authorizer: &Authorizer, token: &str) -> Result<String, AuthorizerError> {
    let response = authorizer.authorize(&request(&[("token", token)], None)).await?;
    Ok(response.principal_id.unwrap_or_default())
}

fn secret_reads(stack: &Stack) -> usize {
    let proxy = stack.proxy.as_ref().expect("through the layer");
    proxy.calls().iter().filter(|c| c.operation == "GetSecretValue").count()
}

#[tokio::test]
async fn a_token_from_the_query_or_the_subprotocol_is_allowed() {
    let (stack, version) = stack_with_secret(Behaviours::none()).await;
    let authorizer = authorizer(&stack);
    let token = signed(Some(&version), FIRST, "alice");
    let response = authorizer
        .authorize(&request(&[("token", &token), ("room", "general")], None))
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
    let response = authorizer.authorize(&request(&[], Some(&protocol))).await.unwrap();
    assert_eq!(serde_json::to_value(&response).unwrap()["context"]["room"], "general");
    // A token minted before the secret moved to Secrets Manager names no version.
    assert_eq!(
        user_of(&authorizer, &signed(None, FIRST, "carol")).await.unwrap(),
        "carol"
    );
    assert_eq!(secret_reads(&stack), 2, "read once (current and previous), then kept");
}

#[tokio::test]
async fn bad_tokens_are_unauthorized() {
    let (stack, version) = stack_with_secret(Behaviours::none()).await;
    let expired = token::mint_signed_by(
        Some(&version),
        FIRST.as_bytes(),
        "alice",
        Duration::from_secs(1),
        SystemTime::now() - Duration::from_secs(10),
    )
    .unwrap();
    let forged = signed(Some(&version), "not-the-secret-not-the-secret-xxx", "alice");
    let unknown_version = signed(Some("not-a-version"), FIRST, "alice");
    let cases: [(&str, AuthorizerRequest); 7] = [
        ("missing", request(&[("room", "lobby")], None)),
        ("malformed", request(&[("token", "abc.def")], None)),
        ("expired", request(&[("token", &expired)], None)),
        ("forged", request(&[("token", &forged)], None)),
        ("unknown version", request(&[("token", &unknown_version)], None)),
        ("wrong subprotocol", request(&[], Some("a, b, c"))),
        ("user instead of token", request(&[("user", "alice")], None)),
    ];
    let authorizer = authorizer(&stack);
    for (case, request) in cases {
        let error = authorizer.authorize(&request).await.unwrap_err();
        assert!(
            matches!(error, AuthorizerError::Unauthorized { .. }),
            "{case}: {error:?}"
        );
        let diagnostic: lambda_runtime::Diagnostic = error.into();
        assert_eq!(diagnostic.error_message, "Unauthorized", "{case}");
    }
}

#[tokio::test]
async fn after_a_rotation_old_tokens_stay_valid_and_new_ones_are_picked_up() {
    let (stack, first) = stack_with_secret(Behaviours::none()).await;
    let authorizer = authorizer(&stack);
    let old = signed(Some(&first), FIRST, "alice");
    assert_eq!(user_of(&authorizer, &old).await.unwrap(), "alice");

    // `chatctl token rotate`: a new version becomes AWSCURRENT.
    let rotated_at = Instant::now();
    let put = secrets(&stack)
        .put_secret_value()
        .secret_id(SECRET_ID)
        .secret_string(SECOND)
        .send()
        .await
        .unwrap();
    let new = signed(put.version_id(), SECOND, "bob");

    // A warm instance reads the secret again for the unknown version, at
    // most every REREAD_AT_MOST_EVERY: a flood of made-up versions costs
    // no more reads than that.
    let reads_before = secret_reads(&stack);
    let deadline = rotated_at + REREAD_AT_MOST_EVERY + Duration::from_secs(3);
    loop {
        for made_up in 0..20 {
            let flood = signed(Some(&format!("made-up-{made_up}")), SECOND, "mallory");
            assert!(user_of(&authorizer, &flood).await.is_err());
        }
        match user_of(&authorizer, &new).await {
            Ok(user) => {
                assert_eq!(user, "bob");
                break;
            }
            Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(250)).await,
            Err(error) => panic!("a token of the new version is still refused: {error:?}"),
        }
    }
    assert!(
        secret_reads(&stack) - reads_before <= 4,
        "at most two reads again (current and previous each): {}",
        secret_reads(&stack) - reads_before
    );
    assert_eq!(
        user_of(&authorizer, &old).await.unwrap(),
        "alice",
        "the previous version still signs"
    );
    // A new instance (a cold start) takes both at once.
    let cold = self::authorizer(&stack);
    assert_eq!(user_of(&cold, &old).await.unwrap(), "alice");
    assert_eq!(user_of(&cold, &new).await.unwrap(), "bob");
}

/// A previous version that cannot be used (too short: written by hand, then
/// rotated away) is left out; the current one still lets tokens in.
#[tokio::test]
async fn an_unusable_previous_version_does_not_lock_everyone_out() {
    let (stack, _) = stack_with_secret(Behaviours::none()).await;
    let put = |value: &'static str| {
        secrets(&stack)
            .put_secret_value()
            .secret_id(SECRET_ID)
            .secret_string(value)
            .send()
    };
    put("too-short").await.unwrap();
    let current = put(SECOND).await.unwrap();
    let token = signed(current.version_id(), SECOND, "alice");
    assert_eq!(user_of(&authorizer(&stack), &token).await.unwrap(), "alice");
}

#[tokio::test]
async fn a_secret_that_cannot_be_read_is_a_server_error_not_a_401() {
    let stack = Stack::start_through(Behaviours::none(), |_| {}).await;
    let error = authorizer(&stack)
        .authorize(&request(&[("token", &signed(None, FIRST, "alice"))], None))
        .await
        .unwrap_err();
    assert!(matches!(error, AuthorizerError::Secret(_)), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains(SECRET_ID) && message.contains("ResourceNotFoundException"),
        "{message}"
    );
    let diagnostic: lambda_runtime::Diagnostic = error.into();
    assert_ne!(
        diagnostic.error_message, "Unauthorized",
        "API Gateway answers 500, not 401"
    );
}

/// aws-facts.md §11 "permissions right after `up`": the authorizer's role
/// may not read the secret for seconds after `up` wrote its policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_read_refused_right_after_a_policy_change_is_tried_again() {
    let behaviours = Behaviours {
        permission_propagation: true,
        timings: Timings {
            permission_propagation: Duration::from_secs(1),
            ..Timings::compressed()
        },
        ..Behaviours::none()
    };
    let (stack, version) = stack_with_secret(behaviours).await;
    stack.change_role_policy().await;
    let started = Instant::now();
    let user = user_of(&authorizer(&stack), &signed(Some(&version), FIRST, "alice")).await;
    assert_eq!(user.unwrap(), "alice");
    assert!(
        stack.layer_answers("AccessDeniedException") > 0,
        "the layer refused it first"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn mode_none_takes_the_user_from_the_query() {
    let authorizer = Authorizer::new(AuthMode::None, &aws_config::SdkConfig::builder().build());
    let response = authorizer.authorize(&request(&[("user", "dave")], None)).await.unwrap();
    assert_eq!(response.principal_id.as_deref(), Some("dave"));
    assert!(authorizer.authorize(&request(&[], None)).await.is_err());
}
