//! The recording, fault-injecting proxy (`chat_testkit::AwsProxy`) between
//! real SDK clients and moto: which calls it records, and that the SDK parses
//! and retries the faults it injects like real AWS errors.

use std::time::Duration;

use aws_config::SdkConfig;
use aws_config::retry::RetryConfig;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
};
use chat_testkit::aws_proxy::{AwsCall, Faults};
use chat_testkit::moto::sdk_config_for;
use chat_testkit::{AwsProxy, Moto};

const TABLE: &str = "chat-connections";
const TRUST_POLICY: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"lambda.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;

type Seen = (String, String, bool, bool);

fn call(service: &str, operation: &str, mutating: bool) -> Seen {
    (service.to_string(), operation.to_string(), mutating, false)
}

/// What a call was, without when it happened.
fn seen(calls: Vec<AwsCall>) -> Vec<Seen> {
    calls
        .into_iter()
        .map(|c| (c.service, c.operation, c.mutating, c.faulted))
        .collect()
}

/// The standard retry strategy with `max_attempts`, backing off briefly.
fn standard_retry(max_attempts: u32) -> RetryConfig {
    RetryConfig::standard()
        .with_max_attempts(max_attempts)
        .with_initial_backoff(Duration::from_millis(20))
}

async fn config(proxy: &AwsProxy) -> SdkConfig {
    sdk_config_for(&proxy.endpoint()).await
}

fn dynamodb(config: &SdkConfig, retry: RetryConfig) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(config)
            .retry_config(retry)
            .build(),
    )
}

fn iam(config: &SdkConfig, retry: RetryConfig) -> aws_sdk_iam::Client {
    aws_sdk_iam::Client::from_conf(aws_sdk_iam::config::Builder::from(config).retry_config(retry).build())
}

fn lambda(config: &SdkConfig, retry: RetryConfig) -> aws_sdk_lambda::Client {
    aws_sdk_lambda::Client::from_conf(
        aws_sdk_lambda::config::Builder::from(config)
            .retry_config(retry)
            .build(),
    )
}

async fn create_table(client: &aws_sdk_dynamodb::Client) {
    client
        .create_table()
        .table_name(TABLE)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
}

async fn put_item(client: &aws_sdk_dynamodb::Client, pk: &str) -> Result<(), aws_sdk_dynamodb::Error> {
    client
        .put_item()
        .table_name(TABLE)
        .item("pk", AttributeValue::S(pk.to_string()))
        .send()
        .await
        .map(|_| ())
        .map_err(Into::into)
}

#[tokio::test]
async fn records_dynamodb_calls() {
    let moto = Moto::start();
    let proxy = AwsProxy::start(moto.endpoint()).await;
    let client = dynamodb(&config(&proxy).await, RetryConfig::disabled());

    create_table(&client).await;
    let table = client.describe_table().table_name(TABLE).send().await.unwrap();
    assert_eq!(table.table().unwrap().table_name(), Some(TABLE));
    put_item(&client, "c1").await.unwrap();
    let item = client
        .get_item()
        .table_name(TABLE)
        .key("pk", AttributeValue::S("c1".into()))
        .send()
        .await
        .unwrap();
    assert!(item.item().is_some(), "the proxy passed moto's answer through");

    assert_eq!(
        seen(proxy.calls()),
        [
            call("dynamodb", "CreateTable", true),
            call("dynamodb", "DescribeTable", false),
            call("dynamodb", "PutItem", true),
            call("dynamodb", "GetItem", false),
        ]
    );
    assert_eq!(
        seen(proxy.mutating_calls()),
        [call("dynamodb", "CreateTable", true), call("dynamodb", "PutItem", true)]
    );
    proxy.clear();
    assert!(proxy.calls().is_empty());
}

#[tokio::test]
async fn records_iam_calls() {
    let moto = Moto::start();
    let proxy = AwsProxy::start(moto.endpoint()).await;
    let client = iam(&config(&proxy).await, RetryConfig::disabled());

    client
        .create_role()
        .role_name("chat-lambda")
        .assume_role_policy_document(TRUST_POLICY)
        .send()
        .await
        .unwrap();
    let role = client.get_role().role_name("chat-lambda").send().await.unwrap();
    assert_eq!(role.role().unwrap().role_name(), "chat-lambda");

    assert_eq!(
        seen(proxy.calls()),
        [call("iam", "CreateRole", true), call("iam", "GetRole", false)]
    );
}

#[tokio::test]
async fn records_rest_calls() {
    let moto = Moto::start();
    let proxy = AwsProxy::start(moto.endpoint()).await;
    let config = config(&proxy).await;
    let lambda = lambda(&config, RetryConfig::disabled());
    let apigw = aws_sdk_apigatewayv2::Client::from_conf(
        aws_sdk_apigatewayv2::config::Builder::from(&config)
            .retry_config(RetryConfig::disabled())
            .build(),
    );

    lambda.list_functions().send().await.unwrap();
    let missing = lambda
        .get_function()
        .function_name("chat-connect")
        .send()
        .await
        .unwrap_err();
    assert!(missing.into_service_error().is_resource_not_found_exception());
    let api = apigw
        .create_api()
        .name("chat")
        .protocol_type(aws_sdk_apigatewayv2::types::ProtocolType::Websocket)
        .route_selection_expression("$request.body.action")
        .send()
        .await
        .unwrap();
    apigw.get_apis().send().await.unwrap();
    apigw.delete_api().api_id(api.api_id().unwrap()).send().await.unwrap();

    assert_eq!(
        seen(proxy.calls()),
        [
            call("lambda", "ListFunctions", false),
            call("lambda", "GetFunction", false),
            call("apigateway", "CreateApi", true),
            call("apigateway", "GetApis", false),
            call("apigateway", "DeleteApi", true),
        ]
    );
}

/// 20 PutItems through the standard retry (5 attempts) while half of the
/// requests are faulted with `faults`: all succeed, and every fault shows.
async fn put_items_despite(faults: Faults) {
    let moto = Moto::start();
    let proxy = AwsProxy::start(moto.endpoint()).await;
    let client = dynamodb(&config(&proxy).await, standard_retry(5));
    create_table(&client).await;
    proxy.set_faults(Some(faults));
    proxy.clear();

    for i in 0..20 {
        put_item(&client, &format!("c{i}")).await.unwrap();
    }

    let calls = proxy.calls();
    let faulted = proxy.faulted_calls().len();
    assert!(faulted > 0, "no faults injected");
    assert!(
        calls
            .iter()
            .all(|c| c.service == "dynamodb" && c.operation == "PutItem" && c.mutating)
    );
    assert_eq!(calls.len(), 20 + faulted, "each faulted attempt was retried once");
    proxy.set_faults(None);
    let scan = client.scan().table_name(TABLE).send().await.unwrap();
    assert_eq!(scan.count(), 20);
}

#[tokio::test]
async fn standard_retry_gets_through_throttling() {
    put_items_despite(Faults {
        throttle_ratio: 0.5,
        server_error_ratio: 0.0,
        seed: 1,
    })
    .await;
}

#[tokio::test]
async fn standard_retry_gets_through_server_errors() {
    put_items_despite(Faults {
        throttle_ratio: 0.0,
        server_error_ratio: 0.5,
        seed: 2,
    })
    .await;
}

#[tokio::test]
async fn standard_retry_gets_through_mixed_faults() {
    put_items_despite(Faults {
        throttle_ratio: 0.25,
        server_error_ratio: 0.25,
        seed: 3,
    })
    .await;
}

const ALWAYS_THROTTLE: Faults = Faults {
    throttle_ratio: 1.0,
    server_error_ratio: 0.0,
    seed: 0,
};
const ALWAYS_FAIL: Faults = Faults {
    throttle_ratio: 0.0,
    server_error_ratio: 1.0,
    seed: 0,
};

/// The HTTP status and error code a faulted call surfaces with, without retries.
fn status_and_code<E: ProvideErrorMetadata, R>(
    err: &aws_sdk_dynamodb::error::SdkError<E, R>,
    status: impl Fn(&R) -> u16,
) -> (u16, String) {
    let raw = err.raw_response().expect("the fault is a service response");
    (status(raw), err.code().unwrap_or_default().to_string())
}

#[tokio::test]
async fn dynamodb_faults_parse_as_modeled_errors() {
    let moto = Moto::start();
    let proxy = AwsProxy::start(moto.endpoint()).await;
    let client = dynamodb(&config(&proxy).await, RetryConfig::disabled());
    create_table(&client).await;

    proxy.set_faults(Some(ALWAYS_THROTTLE));
    let err = client
        .put_item()
        .table_name(TABLE)
        .item("pk", AttributeValue::S("a".into()))
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        status_and_code(&err, |r| r.status().as_u16()),
        (400, "ThrottlingException".to_string())
    );
    assert!(err.into_service_error().is_throttling_exception());
    // The same request is never faulted twice in a row.
    put_item(&client, "a").await.unwrap();

    proxy.set_faults(Some(ALWAYS_FAIL));
    let err = client
        .put_item()
        .table_name(TABLE)
        .item("pk", AttributeValue::S("b".into()))
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        status_and_code(&err, |r| r.status().as_u16()),
        (500, "InternalServerError".to_string())
    );
    assert!(err.into_service_error().is_internal_server_error());

    let faulted: Vec<_> = proxy.faulted_calls().into_iter().map(|c| c.operation).collect();
    assert_eq!(faulted, ["PutItem", "PutItem"]);
}

#[tokio::test]
async fn iam_faults_parse_as_query_errors() {
    let moto = Moto::start();
    let proxy = AwsProxy::start_with_faults(moto.endpoint(), ALWAYS_THROTTLE).await;
    let client = iam(&config(&proxy).await, RetryConfig::disabled());

    let err = client.list_roles().send().await.unwrap_err();
    assert_eq!(
        status_and_code(&err, |r| r.status().as_u16()),
        (400, "Throttling".to_string())
    );
    client.list_roles().send().await.unwrap();

    proxy.set_faults(Some(ALWAYS_FAIL));
    let err = client.get_role().role_name("nobody").send().await.unwrap_err();
    assert_eq!(
        status_and_code(&err, |r| r.status().as_u16()),
        (500, "ServiceFailure".to_string())
    );
    assert!(err.into_service_error().is_service_failure_exception());
}

#[tokio::test]
async fn lambda_faults_parse_as_rest_json_errors() {
    let moto = Moto::start();
    let proxy = AwsProxy::start_with_faults(moto.endpoint(), ALWAYS_THROTTLE).await;
    let client = lambda(&config(&proxy).await, RetryConfig::disabled());

    let err = client.list_functions().send().await.unwrap_err();
    assert_eq!(
        status_and_code(&err, |r| r.status().as_u16()),
        (429, "TooManyRequestsException".to_string())
    );
    client.list_functions().send().await.unwrap();

    proxy.set_faults(Some(ALWAYS_FAIL));
    let err = client.list_functions().send().await.unwrap_err();
    assert_eq!(
        status_and_code(&err, |r| r.status().as_u16()),
        (500, "ServiceException".to_string())
    );
    assert!(err.into_service_error().is_service_exception());
}

/// Every fault shape is one the standard retry retries: with every first
/// attempt faulted, two attempts suffice for each protocol.
#[tokio::test]
async fn standard_retry_retries_every_fault_shape() {
    let moto = Moto::start();
    let proxy = AwsProxy::start(moto.endpoint()).await;
    let config = config(&proxy).await;
    let dynamodb = dynamodb(&config, standard_retry(2));
    let iam = iam(&config, standard_retry(2));
    let lambda = lambda(&config, standard_retry(2));
    let apigw = aws_sdk_apigatewayv2::Client::from_conf(
        aws_sdk_apigatewayv2::config::Builder::from(&config)
            .retry_config(standard_retry(2))
            .build(),
    );
    create_table(&dynamodb).await;

    for faults in [ALWAYS_THROTTLE, ALWAYS_FAIL] {
        proxy.set_faults(Some(faults));
        proxy.clear();
        dynamodb.describe_table().table_name(TABLE).send().await.unwrap();
        iam.list_roles().send().await.unwrap();
        lambda.list_functions().send().await.unwrap();
        apigw.get_apis().send().await.unwrap();
        let calls: Vec<_> = proxy.calls().into_iter().map(|c| (c.operation, c.faulted)).collect();
        assert_eq!(
            calls,
            [
                ("DescribeTable".to_string(), true),
                ("DescribeTable".to_string(), false),
                ("ListRoles".to_string(), true),
                ("ListRoles".to_string(), false),
                ("ListFunctions".to_string(), true),
                ("ListFunctions".to_string(), false),
                ("GetApis".to_string(), true),
                ("GetApis".to_string(), false),
            ],
            "{faults:?}"
        );
    }
}
