//! What a chat's functions meet in the first seconds after `up` on a real
//! account (aws-facts.md §11 "permissions right after `up`"), as the test kit
//! reproduces it: the behaviour layer refuses the role's DynamoDB calls
//! after a PutRolePolicy, and the `@connections` stand-in answers 403 for a
//! while. Each test fails on plain moto / a plain endpoint.

use std::time::{Duration, Instant};

use aws_sdk_apigatewaymanagement::operation::post_to_connection::PostToConnectionError;
use aws_sdk_apigatewaymanagement::primitives::Blob;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::ScalarAttributeType;
use aws_sdk_dynamodb::types::{AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType};
use chat_testkit::aws_behaviour::{Behaviours, Timings};
use chat_testkit::moto::{role_sdk_config_for, sdk_config_for};
use chat_testkit::{AwsProxy, ConnectionsEndpoint, Moto};

const TRUST_POLICY: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"lambda.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
const DATA_POLICY: &str =
    r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"dynamodb:PutItem","Resource":"*"}]}"#;

fn no_retries(config: &aws_config::SdkConfig) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(config)
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .build(),
    )
}

async fn put(client: &aws_sdk_dynamodb::Client, id: &str) -> Result<(), aws_sdk_dynamodb::Error> {
    client
        .put_item()
        .table_name("items")
        .item("pk", AttributeValue::S(id.into()))
        .send()
        .await
        .map(|_| ())
        .map_err(Into::into)
}

/// The deployer makes a table and a role, then changes the role's policy;
/// returns when the change was answered, and the deployer's and the role's
/// DynamoDB clients.
async fn deploy(proxy: &AwsProxy) -> (Instant, aws_sdk_dynamodb::Client, aws_sdk_dynamodb::Client) {
    let deployer = sdk_config_for(&proxy.endpoint()).await;
    let role = role_sdk_config_for(&proxy.endpoint()).await;
    let (dynamodb, as_role) = (no_retries(&deployer), no_retries(&role));
    dynamodb
        .create_table()
        .table_name("items")
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let iam = aws_sdk_iam::Client::new(&deployer);
    iam.create_role()
        .role_name("chat-handlers")
        .assume_role_policy_document(TRUST_POLICY)
        .send()
        .await
        .unwrap();
    put(&as_role, "before")
        .await
        .expect("no policy change yet: the role's call passes");
    iam.put_role_policy()
        .role_name("chat-handlers")
        .policy_name("data")
        .policy_document(DATA_POLICY)
        .send()
        .await
        .unwrap();
    (Instant::now(), dynamodb, as_role)
}

#[tokio::test]
async fn after_put_role_policy_the_roles_dynamodb_calls_are_refused_for_a_while() {
    let moto = Moto::start();
    let behaviours = Behaviours {
        permission_propagation: true,
        ..Behaviours::none()
    };
    let window = behaviours.timings.permission_propagation;
    let proxy = AwsProxy::start_with_behaviours(moto.endpoint(), behaviours).await;
    let (changed, deployer, role) = deploy(&proxy).await;

    let err = put(&role, "during").await.unwrap_err();
    assert_eq!(err.code(), Some("AccessDeniedException"), "{err}");
    let message = err.message().unwrap();
    assert!(
        message.starts_with("User: arn:aws:sts::123456789012:assumed-role/chat-handlers/")
            && message.contains(
                "is not authorized to perform: dynamodb:PutItem on resource: \
                 arn:aws:dynamodb:us-east-1:123456789012:table/items"
            ),
        "{message}"
    );
    assert!(changed.elapsed() < window, "refused within the window");
    // The deployer's own calls (no session token) are not the role's.
    put(&deployer, "deployer").await.unwrap();
    deployer.describe_table().table_name("items").send().await.unwrap();

    tokio::time::sleep_until((changed + window + Duration::from_millis(50)).into()).await;
    put(&role, "after").await.expect("the change has propagated");
    assert_eq!(proxy.layer_answers("AccessDeniedException"), 1);
}

#[tokio::test]
async fn without_the_behaviour_a_policy_change_refuses_nothing() {
    let moto = Moto::start();
    let proxy = AwsProxy::start_with_behaviours(moto.endpoint(), Behaviours::none()).await;
    let (_, _, role) = deploy(&proxy).await;
    put(&role, "during").await.unwrap();
    assert_eq!(Timings::real_scale().permission_propagation, Duration::from_secs(8));
    assert!(Behaviours::all(Timings::compressed()).permission_propagation);
    assert!(!Behaviours::none().permission_propagation);
}

async fn post(client: &aws_sdk_apigatewaymanagement::Client, id: &str) -> Result<(), PostToConnectionError> {
    client
        .post_to_connection()
        .connection_id(id)
        .data(Blob::new("hi"))
        .send()
        .await
        .map(|_| ())
        .map_err(|e| e.into_service_error())
}

#[tokio::test]
async fn the_connections_endpoint_forbids_every_post_for_a_while() {
    let endpoint = ConnectionsEndpoint::start().await;
    let sdk = sdk_config_for(endpoint.url()).await;
    let client = aws_sdk_apigatewaymanagement::Client::from_conf(
        aws_sdk_apigatewaymanagement::config::Builder::from(&sdk)
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .build(),
    );
    post(&client, "c1").await.expect("not forbidden before");

    let window = Duration::from_millis(500);
    let forbidden_at = Instant::now();
    endpoint.forbid_for(window);
    let err = post(&client, "c1").await.unwrap_err();
    assert!(err.is_forbidden_exception(), "{err:?}");
    assert!(
        err.meta()
            .message()
            .unwrap()
            .contains("is not authorized to perform: execute-api:ManageConnections"),
        "{err:?}"
    );
    assert_eq!(endpoint.received("c1"), ["hi"], "the refused POST delivered nothing");

    tokio::time::sleep_until((forbidden_at + window).into()).await;
    post(&client, "c1").await.expect("allowed again after the window");
    assert_eq!(endpoint.received("c1"), ["hi", "hi"]);
    assert_eq!(endpoint.attempts("c1"), 3);
}

/// The authorizer's read of the token secret meets the same propagation,
/// with Secrets Manager's message.
#[tokio::test]
async fn after_put_role_policy_the_roles_secret_reads_are_refused_for_a_while() {
    let moto = Moto::start();
    let behaviours = Behaviours {
        permission_propagation: true,
        ..Behaviours::none()
    };
    let window = behaviours.timings.permission_propagation;
    let proxy = AwsProxy::start_with_behaviours(moto.endpoint(), behaviours).await;
    let secrets = |config: &aws_config::SdkConfig| {
        aws_sdk_secretsmanager::Client::from_conf(
            aws_sdk_secretsmanager::config::Builder::from(config)
                .retry_config(aws_config::retry::RetryConfig::disabled())
                .build(),
        )
    };
    let deployer = sdk_config_for(&proxy.endpoint()).await;
    let (as_deployer, as_role) = (
        secrets(&deployer),
        secrets(&role_sdk_config_for(&proxy.endpoint()).await),
    );
    as_deployer
        .create_secret()
        .name("chatctl/chat/token")
        .secret_string("a-secret-a-secret-a-secret-a-secret")
        .send()
        .await
        .unwrap();
    deploy(&proxy).await;
    let changed = Instant::now();

    let err = as_role
        .get_secret_value()
        .secret_id("chatctl/chat/token")
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("AccessDeniedException"), "{err:?}");
    let message = err.message().unwrap();
    assert!(
        message.starts_with("User: arn:aws:sts::123456789012:assumed-role/chat-handlers/")
            && message.contains(
                "is not authorized to perform: secretsmanager:GetSecretValue on resource: chatctl/chat/token"
            ),
        "{message}"
    );
    as_deployer
        .get_secret_value()
        .secret_id("chatctl/chat/token")
        .send()
        .await
        .expect("the deployer's own read is not the role's");

    // Refused until the window ends, then read: asked again every 50 ms.
    let read = until_it_passes(changed + window, || async {
        as_role
            .get_secret_value()
            .secret_id("chatctl/chat/token")
            .send()
            .await
            .map(|_| ())
            .map_err(|err| err.code().map(str::to_string))
    })
    .await;
    assert_eq!(read, Some("AccessDeniedException".to_string()), "refused meanwhile");
}

/// Calls `call` every 50 ms until it succeeds, which must be around `from`
/// (not before it, by more than the layer's own bookkeeping); returns the
/// error code it answered meanwhile, the same each time.
async fn until_it_passes<F, Fut>(from: Instant, mut call: F) -> Option<String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), Option<String>>>,
{
    let mut refused = None;
    loop {
        match call().await {
            Ok(()) => {
                assert!(
                    Instant::now() + Duration::from_millis(200) >= from,
                    "passed before the window's end"
                );
                return refused;
            }
            Err(code) => {
                assert!(refused.is_none() || refused == code, "{refused:?} then {code:?}");
                assert!(
                    Instant::now() < from + Duration::from_secs(5),
                    "still refused 5 s after the window"
                );
                refused = code;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Secrets Manager API reference, DeleteSecret: a secret deleted without
/// recovery is removed "with an asynchronous background process": its name
/// cannot be used again at once. Plain moto frees it at once.
#[tokio::test]
async fn a_secret_deleted_without_recovery_keeps_its_name_for_a_moment() {
    let moto = Moto::start();
    let behaviours = Behaviours {
        secret_deletion: true,
        ..Behaviours::none()
    };
    let window = behaviours.timings.secret_deletion;
    let proxy = AwsProxy::start_with_behaviours(moto.endpoint(), behaviours).await;
    let secrets = aws_sdk_secretsmanager::Client::from_conf(
        aws_sdk_secretsmanager::config::Builder::from(&sdk_config_for(&proxy.endpoint()).await)
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .build(),
    );
    let create = || {
        secrets
            .create_secret()
            .name("chatctl/chat/token")
            .secret_string("a-secret-a-secret-a-secret-a-secret")
            .send()
    };
    create().await.unwrap();
    secrets
        .delete_secret()
        .secret_id("chatctl/chat/token")
        .force_delete_without_recovery(true)
        .send()
        .await
        .unwrap();
    let deleted = Instant::now();
    let err = create().await.unwrap_err();
    assert_eq!(err.code(), Some("InvalidRequestException"), "{err:?}");
    assert!(
        err.message().unwrap().contains("already scheduled for deletion"),
        "{err:?}"
    );
    assert!(deleted.elapsed() < window);
    // Meanwhile, the secret itself is gone.
    let described = secrets.describe_secret().secret_id("chatctl/chat/token").send().await;
    assert_eq!(described.unwrap_err().code(), Some("ResourceNotFoundException"));

    let refused = until_it_passes(deleted + window, || async {
        create().await.map(|_| ()).map_err(|err| err.code().map(str::to_string))
    })
    .await;
    assert_eq!(
        refused,
        Some("InvalidRequestException".to_string()),
        "the name was taken meanwhile"
    );
    assert!(!Behaviours::none().secret_deletion && Behaviours::all(Timings::compressed()).secret_deletion);
}

/// A new alarm is INSUFFICIENT_DATA until its first evaluation (unless
/// SetAlarmState sets it), and an email subscription stays pending:
/// nobody follows SNS's link. Plain moto makes alarms OK and confirms
/// subscriptions at once.
#[tokio::test]
async fn new_alarms_wait_for_their_first_evaluation_and_email_subscriptions_for_confirmation() {
    use aws_sdk_cloudwatch::types::{ComparisonOperator, StateValue, Statistic};
    let moto = Moto::start();
    let behaviours = Behaviours {
        alarm_evaluation: true,
        email_confirmation: true,
        timings: Timings {
            alarm_evaluation: Duration::from_secs(2),
            ..Timings::compressed()
        },
        ..Behaviours::none()
    };
    let proxy = AwsProxy::start_with_behaviours(moto.endpoint(), behaviours).await;
    let config = sdk_config_for(&proxy.endpoint()).await;
    let cloudwatch = aws_sdk_cloudwatch::Client::new(&config);
    let put = |name: &'static str| {
        cloudwatch
            .put_metric_alarm()
            .alarm_name(name)
            .namespace("AWS/Lambda")
            .metric_name("Errors")
            .statistic(Statistic::Sum)
            .period(60)
            .evaluation_periods(1)
            .threshold(1.0)
            .comparison_operator(ComparisonOperator::GreaterThanOrEqualToThreshold)
            .send()
    };
    let states = || async {
        let described = cloudwatch.describe_alarms().send().await.unwrap();
        let mut states: Vec<(String, String)> = described
            .metric_alarms()
            .iter()
            .map(|a| {
                let state = a.state_value().map(|s| s.as_str().to_string()).unwrap_or_default();
                (a.alarm_name().unwrap_or_default().to_string(), state)
            })
            .collect();
        states.sort();
        states
    };
    let made = Instant::now();
    put("errors").await.unwrap();
    put("forced").await.unwrap();
    cloudwatch
        .set_alarm_state()
        .alarm_name("forced")
        .state_value(StateValue::Alarm)
        .state_reason("test")
        .send()
        .await
        .unwrap();
    // Setting it again does not make it new.
    put("errors").await.unwrap();
    let first = states().await;
    assert!(made.elapsed() < Duration::from_secs(2), "too slow to see the window");
    assert_eq!(
        first,
        [
            ("errors".to_string(), "INSUFFICIENT_DATA".to_string()),
            ("forced".to_string(), "ALARM".to_string())
        ]
    );
    // Evaluated once the window has passed: moto's OK shows.
    while states().await[0].1 != "OK" {
        assert!(made.elapsed() < Duration::from_secs(5), "never evaluated");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(made.elapsed() >= Duration::from_secs(2));

    let sns = aws_sdk_sns::Client::new(&config);
    let topic = sns.create_topic().name("alarms").send().await.unwrap();
    let topic = topic.topic_arn().unwrap();
    let subscribed = sns
        .subscribe()
        .topic_arn(topic)
        .protocol("email")
        .endpoint("ops@example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(subscribed.subscription_arn(), Some("pending confirmation"));
    sns.subscribe()
        .topic_arn(topic)
        .protocol("sqs")
        .endpoint(format!("arn:aws:sqs:us-east-1:{}:q", chat_testkit::moto::ACCOUNT_ID))
        .send()
        .await
        .unwrap();
    let listed = sns.list_subscriptions_by_topic().topic_arn(topic).send().await.unwrap();
    let arns: Vec<(&str, &str)> = listed
        .subscriptions()
        .iter()
        .map(|s| (s.protocol().unwrap(), s.subscription_arn().unwrap()))
        .collect();
    assert_eq!(arns.len(), 2, "{arns:?}");
    assert!(arns.contains(&("email", "PendingConfirmation")), "{arns:?}");
    assert!(
        arns.iter()
            .any(|(protocol, arn)| *protocol == "sqs" && arn.starts_with(topic)),
        "{arns:?}"
    );
}
