//! The AWS behaviour layer of the proxy (`chat_testkit::aws_behaviour`):
//! real SDK clients through the proxy to a real moto server, one behaviour on
//! at a time. Each test asserts what real AWS does and moto does not, so each
//! fails on a plain moto server (or with the behaviour off).

use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use aws_config::retry::RetryConfig;
use aws_sdk_apigatewayv2::operation::create_route::CreateRouteError;
use aws_sdk_apigatewayv2::types::{IntegrationType, ProtocolType};
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, CreateGlobalSecondaryIndexAction,
    DeleteGlobalSecondaryIndexAction, GlobalSecondaryIndex, GlobalSecondaryIndexUpdate, KeySchemaElement, KeyType,
    Projection, ProjectionType, Put, ScalarAttributeType, TableDescription, Tag, TimeToLiveSpecification,
    TransactWriteItem, Update,
};
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::{Environment, FunctionCode, LastUpdateStatus, Runtime, State, StateReasonCode};
use chat_testkit::aws_behaviour::{Behaviours, Timings};
use chat_testkit::moto::sdk_config_for;
use chat_testkit::{AwsProxy, Moto};

const TRUST_POLICY: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"lambda.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
const POLICY: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"logs:*","Resource":"*"}]}"#;
/// An empty zip archive (its end-of-central-directory record): moto stores
/// the code without running it.
const EMPTY_ZIP: &[u8] = b"PK\x05\x06\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0";

struct Clients {
    apigw: aws_sdk_apigatewayv2::Client,
    dynamodb: aws_sdk_dynamodb::Client,
    iam: aws_sdk_iam::Client,
    lambda: aws_sdk_lambda::Client,
    logs: aws_sdk_cloudwatchlogs::Client,
}

impl Clients {
    fn new(config: &SdkConfig, retry: RetryConfig) -> Clients {
        Clients {
            apigw: aws_sdk_apigatewayv2::Client::from_conf(
                aws_sdk_apigatewayv2::config::Builder::from(config)
                    .retry_config(retry.clone())
                    .build(),
            ),
            dynamodb: aws_sdk_dynamodb::Client::from_conf(
                aws_sdk_dynamodb::config::Builder::from(config)
                    .retry_config(retry.clone())
                    .build(),
            ),
            iam: aws_sdk_iam::Client::from_conf(
                aws_sdk_iam::config::Builder::from(config)
                    .retry_config(retry.clone())
                    .build(),
            ),
            lambda: aws_sdk_lambda::Client::from_conf(
                aws_sdk_lambda::config::Builder::from(config)
                    .retry_config(retry.clone())
                    .build(),
            ),
            logs: aws_sdk_cloudwatchlogs::Client::from_conf(
                aws_sdk_cloudwatchlogs::config::Builder::from(config)
                    .retry_config(retry)
                    .build(),
            ),
        }
    }
}

/// A moto server, the proxy in front of it with `behaviours`, and clients
/// without retries.
async fn setup(behaviours: Behaviours) -> (Moto, AwsProxy, Clients) {
    setup_with_retry(behaviours, RetryConfig::disabled()).await
}

async fn setup_with_retry(behaviours: Behaviours, retry: RetryConfig) -> (Moto, AwsProxy, Clients) {
    let moto = Moto::start();
    let proxy = AwsProxy::start_with_behaviours(moto.endpoint(), behaviours).await;
    let clients = Clients::new(&sdk_config_for(&proxy.endpoint()).await, retry);
    (moto, proxy, clients)
}

/// The codes the layer answered with, in order.
fn layer_answers(proxy: &AwsProxy) -> Vec<(String, String)> {
    proxy
        .calls()
        .into_iter()
        .filter_map(|c| c.answered_by_layer.map(|by| (c.operation, by)))
        .collect()
}

async fn create_api(clients: &Clients, name: &str) -> String {
    clients
        .apigw
        .create_api()
        .name(name)
        .protocol_type(ProtocolType::Websocket)
        .route_selection_expression("$request.body.action")
        .send()
        .await
        .unwrap()
        .api_id()
        .unwrap()
        .to_string()
}

async fn create_route(clients: &Clients, api: &str, key: &str) -> Result<(), CreateRouteError> {
    clients
        .apigw
        .create_route()
        .api_id(api)
        .route_key(key)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| e.into_service_error())
}

async fn create_role(clients: &Clients, name: &str) -> String {
    clients
        .iam
        .create_role()
        .role_name(name)
        .assume_role_policy_document(TRUST_POLICY)
        .send()
        .await
        .unwrap()
        .role()
        .unwrap()
        .arn()
        .to_string()
}

fn create_function(
    clients: &Clients,
    name: &str,
    role_arn: &str,
    environment: bool,
) -> aws_sdk_lambda::operation::create_function::builders::CreateFunctionFluentBuilder {
    let mut request = clients
        .lambda
        .create_function()
        .function_name(name)
        .runtime(Runtime::Providedal2023)
        .handler("bootstrap")
        .role(role_arn)
        .code(FunctionCode::builder().zip_file(Blob::new(EMPTY_ZIP)).build());
    if environment {
        request = request.environment(Environment::builder().variables("TABLE", "chat").build());
    }
    request
}

fn table_request(
    clients: &Clients,
    name: &str,
) -> aws_sdk_dynamodb::operation::create_table::builders::CreateTableFluentBuilder {
    let key = |name: &str, key_type| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(key_type)
            .build()
            .unwrap()
    };
    let attribute = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .unwrap()
    };
    clients
        .dynamodb
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attribute("pk"))
        .attribute_definitions(attribute("room"))
        .key_schema(key("pk", KeyType::Hash))
        .global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name("by-room")
                .key_schema(key("room", KeyType::Hash))
                .projection(Projection::builder().projection_type(ProjectionType::All).build())
                .build()
                .unwrap(),
        )
}

fn tag(key: &str, value: &str) -> Tag {
    Tag::builder().key(key).value(value).build().unwrap()
}

async fn table_tags(clients: &Clients, arn: &str) -> Vec<String> {
    let tags = clients
        .dynamodb
        .list_tags_of_resource()
        .resource_arn(arn)
        .send()
        .await
        .unwrap();
    let mut keys: Vec<String> = tags.tags().iter().map(|t| t.key().to_string()).collect();
    keys.sort();
    keys
}

/// Waits until `at`.
async fn sleep_until(at: Instant) {
    tokio::time::sleep(at.saturating_duration_since(Instant::now())).await;
}

// --- off by default ----------------------------------------------------------

/// With the layer off (the plain `AwsProxy::start`, or `Behaviours::none()`),
/// moto's answers pass unchanged: what every other test here asserts fails.
#[tokio::test]
async fn the_layer_is_off_by_default() {
    let moto = Moto::start();
    for proxy in [
        AwsProxy::start(moto.endpoint()).await,
        AwsProxy::start_with_behaviours(moto.endpoint(), Behaviours::none()).await,
    ] {
        let clients = Clients::new(&sdk_config_for(&proxy.endpoint()).await, RetryConfig::disabled());
        let suffix = proxy.endpoint().rsplit(':').next().unwrap().to_string();

        let api = create_api(&clients, "chat").await;
        let (a, b) = tokio::join!(
            create_route(&clients, &api, "$connect"),
            create_route(&clients, &api, "$disconnect")
        );
        a.unwrap();
        b.unwrap();
        let role = create_role(&clients, &format!("role-{suffix}")).await;
        let function = create_function(&clients, &format!("fn-{suffix}"), &role, true)
            .send()
            .await
            .unwrap();
        assert_eq!(function.state(), Some(&State::Active));
        let table = table_request(&clients, &format!("table-{suffix}"))
            .tags(tag("app", "chat"))
            .send()
            .await
            .unwrap();
        let description = table.table_description().unwrap();
        assert_eq!(description.table_status().unwrap().as_str(), "ACTIVE");
        assert_eq!(table_tags(&clients, description.table_arn().unwrap()).await, ["app"]);
        let apis = clients.apigw.get_apis().send().await.unwrap();
        assert!(apis.next_token().is_none());

        assert!(proxy.faulted_calls().is_empty());
        assert!(layer_answers(&proxy).is_empty());
    }
}

// --- API Gateway concurrent modification -------------------------------------

#[tokio::test]
async fn api_conflicts_answer_concurrent_writes_to_one_api_with_409() {
    let (_moto, proxy, clients) = setup(Behaviours {
        api_conflicts: true,
        ..Behaviours::none()
    })
    .await;
    let api = create_api(&clients, "chat").await;
    let other = create_api(&clients, "other").await;

    let (first, second) = tokio::join!(
        create_route(&clients, &api, "$connect"),
        create_route(&clients, &api, "$disconnect")
    );
    let (ok, conflict) = match (first, second) {
        (Ok(()), Err(e)) | (Err(e), Ok(())) => ((), e),
        other => panic!("expected one success and one conflict: {other:?}"),
    };
    let () = ok;
    assert!(
        matches!(conflict, CreateRouteError::ConflictException(_)),
        "{conflict:?}"
    );
    assert_eq!(
        conflict.meta().message(),
        Some("Unable to complete operation due to concurrent modification. Please try again later.")
    );
    // Another API is not held.
    create_route(&clients, &other, "$connect").await.unwrap();
    // Once the write is over, the API takes writes again.
    tokio::time::sleep(Duration::from_millis(100)).await;
    create_route(&clients, &api, "$disconnect").await.unwrap();
    // A write right after another (within api_write of its start) conflicts too.
    let err = create_route(&clients, &api, "$default").await.unwrap_err();
    assert!(err.is_conflict_exception());

    let conflicts = proxy
        .calls()
        .into_iter()
        .filter(|c| c.answered_by_layer.as_deref() == Some("ConflictException"))
        .collect::<Vec<_>>();
    assert_eq!(conflicts.len(), 2);
    assert!(conflicts.iter().all(|c| c.faulted && c.operation == "CreateRoute"));
}

// --- IAM propagation ------------------------------------------------------------

#[tokio::test]
async fn role_propagation_rejects_functions_with_a_fresh_role() {
    let (_moto, proxy, clients) = setup(Behaviours {
        role_propagation: true,
        ..Behaviours::none()
    })
    .await;
    let role = create_role(&clients, "chat-lambda").await;
    let created = Instant::now();

    let err = create_function(&clients, "chat-connect", &role, false)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_invalid_parameter_value_exception(), "{err:?}");
    assert_eq!(
        err.meta().message(),
        Some("The role defined for the function cannot be assumed by Lambda.")
    );

    // Second half of the window (0.75 s to 1.5 s): a function without
    // environment variables passes; one with them gets the KMS message.
    sleep_until(created + Duration::from_millis(900)).await;
    let err = create_function(&clients, "chat-message", &role, true)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_invalid_parameter_value_exception(), "{err:?}");
    assert_eq!(
        err.meta().message().unwrap(),
        "Lambda was unable to configure access to your environment variables because the KMS key is invalid \
         for CreateGrant. Please check your KMS key settings. KMS Exception: InvalidArnException KMS Message: \
         ARN does not refer to a valid principal: arn:aws:iam::123456789012:role/chat-lambda"
    );
    create_function(&clients, "chat-connect", &role, false)
        .send()
        .await
        .unwrap();

    sleep_until(created + Duration::from_millis(1600)).await;
    create_function(&clients, "chat-message", &role, true)
        .send()
        .await
        .unwrap();
    assert_eq!(
        layer_answers(&proxy),
        [
            (
                "CreateFunction".to_string(),
                "InvalidParameterValueException".to_string()
            ),
            (
                "CreateFunction".to_string(),
                "InvalidParameterValueException".to_string()
            ),
        ]
    );
}

// --- Lambda states ----------------------------------------------------------------

#[tokio::test]
async fn function_states_are_pending_then_in_progress_after_updates() {
    let (_moto, _proxy, clients) = setup(Behaviours {
        function_states: true,
        ..Behaviours::none()
    })
    .await;
    let role = create_role(&clients, "chat-lambda").await;
    let created = create_function(&clients, "chat-connect", &role, false)
        .send()
        .await
        .unwrap();
    assert_eq!(created.state(), Some(&State::Pending));
    let function = clients
        .lambda
        .get_function()
        .function_name("chat-connect")
        .send()
        .await
        .unwrap();
    let configuration = function.configuration().unwrap();
    assert_eq!(configuration.state(), Some(&State::Pending));
    assert_eq!(configuration.last_update_status(), Some(&LastUpdateStatus::InProgress));

    let err = clients
        .lambda
        .update_function_configuration()
        .function_name("chat-connect")
        .timeout(10)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_resource_conflict_exception(), "{err:?}");

    tokio::time::sleep(Duration::from_millis(350)).await;
    let configuration = clients
        .lambda
        .get_function_configuration()
        .function_name("arn:aws:lambda:us-east-1:123456789012:function:chat-connect")
        .send()
        .await
        .unwrap();
    assert_eq!(configuration.state(), Some(&State::Active));
    assert_eq!(configuration.last_update_status(), Some(&LastUpdateStatus::Successful));

    let updated = clients
        .lambda
        .update_function_code()
        .function_name("chat-connect")
        .zip_file(Blob::new(EMPTY_ZIP))
        .send()
        .await
        .unwrap();
    assert_eq!(updated.last_update_status(), Some(&LastUpdateStatus::InProgress));
    let err = clients
        .lambda
        .update_function_configuration()
        .function_name("chat-connect")
        .timeout(10)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_resource_conflict_exception(), "{err:?}");
    assert_eq!(
        err.meta().message(),
        Some(
            "The operation cannot be performed at this time. An update is in progress for resource: \
             arn:aws:lambda:us-east-1:123456789012:function:chat-connect"
        )
    );

    tokio::time::sleep(Duration::from_millis(250)).await;
    let function = clients
        .lambda
        .get_function()
        .function_name("chat-connect")
        .send()
        .await
        .unwrap();
    assert_eq!(
        function.configuration().unwrap().last_update_status(),
        Some(&LastUpdateStatus::Successful)
    );
    clients
        .lambda
        .update_function_configuration()
        .function_name("chat-connect")
        .timeout(10)
        .send()
        .await
        .unwrap();
}

/// Versions and aliases: PublishVersion refused while an update is in
/// progress, as updates are; a new version Pending a moment, an alias
/// refused the version meanwhile. On plain moto, both calls succeed at once.
/// Waits (5 s at most) until a function or version is Active and no update
/// of it is in progress.
async fn settled(lambda: &aws_sdk_lambda::Client, name: &str) {
    let started = Instant::now();
    loop {
        let function = lambda.get_function().function_name(name).send().await.unwrap();
        let configuration = function.configuration().unwrap();
        if configuration.state() == Some(&State::Active)
            && configuration.last_update_status() != Some(&LastUpdateStatus::InProgress)
        {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "{name} never settled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_version_is_published_after_an_update_and_an_alias_waits_for_it() {
    let (_moto, proxy, clients) = setup(Behaviours {
        function_states: true,
        ..Behaviours::none()
    })
    .await;
    let role = create_role(&clients, "chat-lambda").await;
    create_function(&clients, "chat-join", &role, false)
        .send()
        .await
        .unwrap();
    let lambda = &clients.lambda;
    settled(lambda, "chat-join").await;
    lambda
        .update_function_code()
        .function_name("chat-join")
        .zip_file(Blob::new(EMPTY_ZIP))
        .send()
        .await
        .unwrap();
    let err = lambda
        .publish_version()
        .function_name("chat-join")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_resource_conflict_exception(), "{err:?}");

    settled(lambda, "chat-join").await;
    let version = lambda
        .publish_version()
        .function_name("chat-join")
        .send()
        .await
        .unwrap()
        .version
        .unwrap();
    let published = lambda
        .get_function()
        .function_name(format!("chat-join:{version}"))
        .send()
        .await
        .unwrap();
    assert_eq!(published.configuration().unwrap().state(), Some(&State::Pending));
    let err = lambda
        .create_alias()
        .function_name("chat-join")
        .name("live")
        .function_version(&version)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_resource_conflict_exception(), "{err:?}");

    settled(lambda, &format!("chat-join:{version}")).await;
    let published = lambda
        .get_function()
        .function_name(format!("chat-join:{version}"))
        .send()
        .await
        .unwrap();
    assert_eq!(published.configuration().unwrap().state(), Some(&State::Active));
    lambda
        .create_alias()
        .function_name("chat-join")
        .name("live")
        .function_version(&version)
        .send()
        .await
        .unwrap();
    assert_eq!(
        layer_answers(&proxy),
        [
            ("PublishVersion".to_string(), "ResourceConflictException".to_string()),
            ("CreateAlias".to_string(), "ResourceConflictException".to_string()),
        ]
    );
}

#[tokio::test]
async fn inactive_functions_stay_inactive_through_updates() {
    let (_moto, proxy, clients) = setup(Behaviours {
        function_states: true,
        timings: Timings {
            function_pending: Duration::ZERO,
            ..Timings::compressed()
        },
        ..Behaviours::none()
    })
    .await;
    let role = create_role(&clients, "chat-lambda").await;
    create_function(&clients, "chat-connect", &role, false)
        .send()
        .await
        .unwrap();
    proxy.make_function_inactive("chat-connect");

    let configuration = clients
        .lambda
        .get_function_configuration()
        .function_name("chat-connect")
        .send()
        .await
        .unwrap();
    assert_eq!(configuration.state(), Some(&State::Inactive));
    assert_eq!(configuration.state_reason_code(), Some(&StateReasonCode::Idle));

    let updated = clients
        .lambda
        .update_function_code()
        .function_name("chat-connect")
        .zip_file(Blob::new(EMPTY_ZIP))
        .send()
        .await
        .unwrap();
    assert_eq!(updated.state(), Some(&State::Inactive));
    assert_eq!(updated.last_update_status(), Some(&LastUpdateStatus::InProgress));
    tokio::time::sleep(Duration::from_millis(250)).await;
    let function = clients
        .lambda
        .get_function()
        .function_name("chat-connect")
        .send()
        .await
        .unwrap();
    let configuration = function.configuration().unwrap();
    assert_eq!(configuration.state(), Some(&State::Inactive));
    assert_eq!(configuration.last_update_status(), Some(&LastUpdateStatus::Successful));
}

// --- DynamoDB CREATING / DELETING -----------------------------------------------

#[tokio::test]
async fn tables_are_creating_before_active_and_deleting_before_gone() {
    let (_moto, _proxy, clients) = setup(Behaviours {
        table_creating: true,
        ..Behaviours::none()
    })
    .await;
    let db = &clients.dynamodb;
    let created = table_request(&clients, "chat").send().await.unwrap();
    // CREATING from moto's answer on.
    let created_at = Instant::now();
    let description = created.table_description().unwrap();
    assert_eq!(description.table_status().unwrap().as_str(), "CREATING");
    let arn = description.table_arn().unwrap().to_string();

    let table = db.describe_table().table_name("chat").send().await.unwrap();
    let table = table.table().unwrap();
    assert_eq!(table.table_status().unwrap().as_str(), "CREATING");
    assert_eq!(
        table.global_secondary_indexes()[0].index_status().unwrap().as_str(),
        "CREATING"
    );
    let err = db
        .update_time_to_live()
        .table_name("chat")
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .enabled(true)
                .attribute_name("expires")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_resource_in_use_exception(), "{err:?}");
    assert_eq!(
        err.meta().message(),
        Some("Attempt to change a resource which is still in use: Table is being created: chat")
    );
    let err = db.delete_table().table_name("chat").send().await.unwrap_err();
    assert!(err.into_service_error().is_resource_in_use_exception());
    let err = db
        .list_tags_of_resource()
        .resource_arn(&arn)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_resource_not_found_exception(), "{err:?}");
    assert_eq!(
        err.meta().message(),
        Some(format!("Requested resource not found: ResourcArn: {arn} not found").as_str())
    );
    let err = db
        .put_item()
        .table_name("chat")
        .item("pk", AttributeValue::S("c1".into()))
        .send()
        .await
        .unwrap_err();
    assert!(err.into_service_error().is_resource_not_found_exception());
    assert!(
        created_at.elapsed() < Duration::from_secs(1),
        "the test itself was too slow"
    );

    sleep_until(created_at + Duration::from_millis(1050)).await;
    let table = db.describe_table().table_name("chat").send().await.unwrap();
    assert_eq!(table.table().unwrap().table_status().unwrap().as_str(), "ACTIVE");
    db.put_item()
        .table_name("chat")
        .item("pk", AttributeValue::S("c1".into()))
        .send()
        .await
        .unwrap();

    let deleted = db.delete_table().table_name("chat").send().await.unwrap();
    assert_eq!(
        deleted.table_description().unwrap().table_status().unwrap().as_str(),
        "DELETING"
    );
    let table = db.describe_table().table_name("chat").send().await.unwrap();
    assert_eq!(table.table().unwrap().table_status().unwrap().as_str(), "DELETING");
    tokio::time::sleep(Duration::from_millis(350)).await;
    let err = db.describe_table().table_name("chat").send().await.unwrap_err();
    assert!(err.into_service_error().is_resource_not_found_exception());
}

/// DescribeTimeToLive of a table CREATING or DELETING: 400
/// ValidationException (aws-controllers-k8s/dynamodb-controller
/// docs/api-quirks, DDB-TABLE-115/118; aws-facts.md §11). moto answers it.
#[tokio::test]
async fn the_ttl_of_a_table_being_created_or_deleted_cannot_be_read() {
    let timings = Timings::compressed();
    let (_moto, _proxy, clients) = setup(Behaviours {
        table_creating: true,
        ..Behaviours::none()
    })
    .await;
    let db = &clients.dynamodb;
    table_request(&clients, "chat").send().await.unwrap();
    let created_at = Instant::now();
    let err = db
        .describe_time_to_live()
        .table_name("chat")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_eq!(err.code(), Some("ValidationException"), "{err:?}");
    assert!(
        err.meta()
            .message()
            .unwrap()
            .starts_with("Cannot describe time to live while table is in CREATING state"),
        "{err:?}"
    );
    assert!(
        created_at.elapsed() < timings.table_creating,
        "the test itself was too slow"
    );
    sleep_until(created_at + timings.table_creating + Duration::from_millis(50)).await;
    db.describe_time_to_live().table_name("chat").send().await.unwrap();

    db.delete_table().table_name("chat").send().await.unwrap();
    let err = db.describe_time_to_live().table_name("chat").send().await.unwrap_err();
    assert_eq!(err.code(), Some("ValidationException"), "{err:?}");
    assert!(err.message().unwrap().contains("DELETING state"), "{err:?}");

    // moto answers at once.
    let (_moto, _proxy, clients) = setup(Behaviours::none()).await;
    table_request(&clients, "chat").send().await.unwrap();
    clients
        .dynamodb
        .describe_time_to_live()
        .table_name("chat")
        .send()
        .await
        .unwrap();
}

/// A table takes one tag write at a time: another within ~2 s gets
/// LimitExceededException "Table tags are being updated", a DeleteTable
/// ResourceInUseException (DDB-TABLE-103, aws-facts.md §11).
#[tokio::test]
async fn a_table_takes_one_tag_write_at_a_time() {
    let timings = Timings::compressed();
    let (_moto, proxy, clients) = setup(Behaviours {
        table_tag_writes: true,
        ..Behaviours::none()
    })
    .await;
    let db = &clients.dynamodb;
    let created = table_request(&clients, "chat")
        .tags(tag("old", "x"))
        .send()
        .await
        .unwrap();
    let arn = created.table_description().unwrap().table_arn().unwrap().to_string();
    // Tags set with the table do not hold the next tag write.
    db.untag_resource()
        .resource_arn(&arn)
        .tag_keys("old")
        .send()
        .await
        .unwrap();
    let tagged_at = Instant::now();
    let err = db
        .tag_resource()
        .resource_arn(&arn)
        .tags(tag("stage", "dev"))
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_limit_exceeded_exception(), "{err:?}");
    assert_eq!(
        err.meta().message(),
        Some("Subscriber limit exceeded: Table tags are being updated: chat")
    );
    let err = db.delete_table().table_name("chat").send().await.unwrap_err();
    assert_eq!(err.code(), Some("ResourceInUseException"), "{err:?}");
    assert!(
        err.message().unwrap().contains("Table tags are being updated"),
        "{err:?}"
    );
    // Other tables are not held.
    table_request(&clients, "other").send().await.unwrap();
    db.delete_table().table_name("other").send().await.unwrap();
    assert!(tagged_at.elapsed() < timings.tag_write, "the test itself was too slow");

    sleep_until(tagged_at + timings.tag_write + Duration::from_millis(30)).await;
    db.tag_resource()
        .resource_arn(&arn)
        .tags(tag("stage", "dev"))
        .send()
        .await
        .unwrap();
    assert_eq!(table_tags(&clients, &arn).await, ["stage"]);
    assert_eq!(
        layer_answers(&proxy),
        [
            ("TagResource".to_string(), "LimitExceededException".to_string()),
            ("DeleteTable".to_string(), "ResourceInUseException".to_string()),
        ]
    );

    // moto takes them back to back.
    let (_moto, _proxy, clients) = setup(Behaviours::none()).await;
    let created = table_request(&clients, "chat").send().await.unwrap();
    let arn = created.table_description().unwrap().table_arn().unwrap().to_string();
    let db = &clients.dynamodb;
    db.untag_resource()
        .resource_arn(&arn)
        .tag_keys("old")
        .send()
        .await
        .unwrap();
    db.tag_resource()
        .resource_arn(&arn)
        .tags(tag("stage", "dev"))
        .send()
        .await
        .unwrap();
    db.delete_table().table_name("chat").send().await.unwrap();
}

/// An index added with UpdateTable: the table is UPDATING for a while, then
/// reads ACTIVE while the index still backfills (CREATING, Backfilling):
/// it cannot be queried, another index change and a DeleteTable are
/// refused (DDB-TABLE-148/150/159, aws-facts.md §11).
#[tokio::test]
async fn an_added_index_backfills_while_the_table_reads_active() {
    let timings = Timings::compressed();
    let (_moto, proxy, clients) = setup(Behaviours {
        table_creating: true,
        index_backfill: true,
        ..Behaviours::none()
    })
    .await;
    let db = &clients.dynamodb;
    table_request(&clients, "chat").send().await.unwrap();
    sleep_until(Instant::now() + timings.table_creating + Duration::from_millis(50)).await;
    add_index_request(&clients, "chat").send().await.unwrap();
    let updated_at = Instant::now();
    sleep_until(updated_at + timings.table_creating + Duration::from_millis(50)).await;
    let backfilling = (
        "ACTIVE".to_string(),
        vec![
            index_status("by-author", "CREATING", true),
            index_status("by-room", "ACTIVE", false),
        ],
    );
    let table = db.describe_table().table_name("chat").send().await.unwrap();
    assert_eq!(table_and_index_statuses(table.table().unwrap()), backfilling);
    let err = db
        .query()
        .table_name("chat")
        .index_name("by-author")
        .key_condition_expression("author = :a")
        .expression_attribute_values(":a", s("ann"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("ValidationException"), "{err:?}");
    assert_eq!(
        err.message(),
        Some("Cannot read from backfilling global secondary index: by-author")
    );
    // The other index reads.
    db.query()
        .table_name("chat")
        .index_name("by-room")
        .key_condition_expression("room = :r")
        .expression_attribute_values(":r", s("lobby"))
        .send()
        .await
        .unwrap();
    let err = delete_index_request(&clients, "chat", "by-room")
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("LimitExceededException"), "{err:?}");
    let err = db.delete_table().table_name("chat").send().await.unwrap_err();
    assert_eq!(err.code(), Some("ResourceInUseException"), "{err:?}");
    assert_eq!(
        err.message(),
        Some("Cannot delete table while indexes are being created, updated, or deleted")
    );
    assert!(
        updated_at.elapsed() < timings.table_creating + timings.index_backfill,
        "the test itself was too slow"
    );
    assert_eq!(layer_answers(&proxy).len(), 3);

    sleep_until(updated_at + timings.table_creating + timings.index_backfill + Duration::from_millis(50)).await;
    let table = db.describe_table().table_name("chat").send().await.unwrap();
    assert_eq!(
        table_and_index_statuses(table.table().unwrap()),
        (
            "ACTIVE".to_string(),
            vec![
                index_status("by-author", "ACTIVE", false),
                index_status("by-room", "ACTIVE", false)
            ]
        )
    );
    db.delete_table().table_name("chat").send().await.unwrap();
}

/// An UpdateTable adding a global secondary index to `table` (`pk`,
/// `by-room`): index `by-author`, with every attribute definition (moto
/// replaces them with the request's).
fn add_index_request(
    clients: &Clients,
    table: &str,
) -> aws_sdk_dynamodb::operation::update_table::builders::UpdateTableFluentBuilder {
    let attribute = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .unwrap()
    };
    let create = CreateGlobalSecondaryIndexAction::builder()
        .index_name("by-author")
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("author")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .projection(Projection::builder().projection_type(ProjectionType::All).build())
        .build()
        .unwrap();
    clients
        .dynamodb
        .update_table()
        .table_name(table)
        .attribute_definitions(attribute("pk"))
        .attribute_definitions(attribute("room"))
        .attribute_definitions(attribute("author"))
        .global_secondary_index_updates(GlobalSecondaryIndexUpdate::builder().create(create).build())
}

/// An UpdateTable deleting index `index` of `table`.
fn delete_index_request(
    clients: &Clients,
    table: &str,
    index: &str,
) -> aws_sdk_dynamodb::operation::update_table::builders::UpdateTableFluentBuilder {
    clients
        .dynamodb
        .update_table()
        .table_name(table)
        .global_secondary_index_updates(
            GlobalSecondaryIndexUpdate::builder()
                .delete(
                    DeleteGlobalSecondaryIndexAction::builder()
                        .index_name(index)
                        .build()
                        .unwrap(),
                )
                .build(),
        )
}

/// A table description's status and its indexes' (name, status,
/// backfilling), by name.
fn table_and_index_statuses(table: &TableDescription) -> (String, Vec<(String, String, bool)>) {
    let mut indexes: Vec<(String, String, bool)> = table
        .global_secondary_indexes()
        .iter()
        .map(|index| {
            (
                index.index_name().unwrap().to_string(),
                index.index_status().unwrap().as_str().to_string(),
                index.backfilling() == Some(true),
            )
        })
        .collect();
    indexes.sort();
    (table.table_status().unwrap().as_str().to_string(), indexes)
}

/// An index's (name, status, backfilling), as `table_and_index_statuses` lists it.
fn index_status(name: &str, status: &str, backfilling: bool) -> (String, String, bool) {
    (name.to_string(), status.to_string(), backfilling)
}

/// An UpdateTable that creates a global secondary index leaves the table
/// `UPDATING` (the new index `CREATING`, backfilling) for a while: another
/// index change meanwhile gets `LimitExceededException`, any other change
/// `ResourceInUseException`; items stay writable. DynamoDB API reference,
/// UpdateTable; architect/architect #334.
#[tokio::test]
async fn an_index_change_keeps_the_table_updating_and_refuses_another_meanwhile() {
    let timings = Timings::compressed();
    let (_moto, proxy, clients) = setup(Behaviours {
        table_creating: true,
        ..Behaviours::none()
    })
    .await;
    let db = &clients.dynamodb;
    table_request(&clients, "chat").send().await.unwrap();
    let created_at = Instant::now();
    sleep_until(created_at + timings.table_creating + Duration::from_millis(50)).await;
    let table = db.describe_table().table_name("chat").send().await.unwrap();
    assert_eq!(
        table_and_index_statuses(table.table().unwrap()),
        ("ACTIVE".to_string(), vec![index_status("by-room", "ACTIVE", false)])
    );

    let updated = add_index_request(&clients, "chat").send().await.unwrap();
    let updated_at = Instant::now();
    let updating = (
        "UPDATING".to_string(),
        vec![
            index_status("by-author", "CREATING", true),
            index_status("by-room", "ACTIVE", false),
        ],
    );
    assert_eq!(table_and_index_statuses(updated.table_description().unwrap()), updating);
    let table = db.describe_table().table_name("chat").send().await.unwrap();
    assert_eq!(table_and_index_statuses(table.table().unwrap()), updating);

    // Another index change: LimitExceededException.
    let err = delete_index_request(&clients, "chat", "by-room")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_limit_exceeded_exception(), "{err:?}");
    assert_eq!(
        err.meta().message(),
        Some("Subscriber limit exceeded: Only 1 online index can be created or deleted simultaneously per table")
    );
    // Any other change: ResourceInUseException.
    let err = db
        .update_table()
        .table_name("chat")
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_resource_in_use_exception(), "{err:?}");
    assert_eq!(
        err.meta().message(),
        Some("Attempt to change a resource which is still in use: Table is being updated: chat")
    );
    let err = db.delete_table().table_name("chat").send().await.unwrap_err();
    assert_eq!(err.code(), Some("ResourceInUseException"), "{err:?}");
    // The table itself takes writes while its index is built.
    db.put_item()
        .table_name("chat")
        .item("pk", s("c1"))
        .item("author", s("ann"))
        .send()
        .await
        .unwrap();
    let table = db.describe_table().table_name("chat").send().await.unwrap();
    assert_eq!(table_and_index_statuses(table.table().unwrap()), updating);
    assert!(
        updated_at.elapsed() < timings.table_creating,
        "the test itself was too slow"
    );
    assert_eq!(
        layer_answers(&proxy),
        [
            ("UpdateTable".to_string(), "LimitExceededException".to_string()),
            ("UpdateTable".to_string(), "ResourceInUseException".to_string()),
            ("DeleteTable".to_string(), "ResourceInUseException".to_string()),
        ]
    );

    // After the window: ACTIVE, both indexes ACTIVE, and the next index
    // change is taken (and makes its own window).
    sleep_until(updated_at + timings.table_creating + Duration::from_millis(50)).await;
    let table = db.describe_table().table_name("chat").send().await.unwrap();
    assert_eq!(
        table_and_index_statuses(table.table().unwrap()),
        (
            "ACTIVE".to_string(),
            vec![
                index_status("by-author", "ACTIVE", false),
                index_status("by-room", "ACTIVE", false)
            ]
        )
    );
    let deleted = delete_index_request(&clients, "chat", "by-room").send().await.unwrap();
    assert_eq!(
        deleted.table_description().unwrap().table_status().unwrap().as_str(),
        "UPDATING"
    );
    let err = add_index_request(&clients, "chat").send().await.unwrap_err();
    assert_eq!(err.code(), Some("LimitExceededException"), "{err:?}");

    // With the layer off, moto answers ACTIVE at once and takes the next
    // index change.
    let (_moto, proxy, clients) = setup(Behaviours::none()).await;
    table_request(&clients, "chat").send().await.unwrap();
    let updated = add_index_request(&clients, "chat").send().await.unwrap();
    assert_eq!(
        table_and_index_statuses(updated.table_description().unwrap()),
        (
            "ACTIVE".to_string(),
            vec![
                index_status("by-author", "ACTIVE", false),
                index_status("by-room", "ACTIVE", false)
            ]
        )
    );
    delete_index_request(&clients, "chat", "by-room").send().await.unwrap();
    assert!(layer_answers(&proxy).is_empty());
}

// --- DynamoDB tag lag ---------------------------------------------------------------

#[tokio::test]
async fn tags_lag_behind_their_writes() {
    let (_moto, _proxy, clients) = setup(Behaviours {
        tag_lag: true,
        ..Behaviours::none()
    })
    .await;
    let db = &clients.dynamodb;
    let created = table_request(&clients, "chat")
        .tags(tag("app", "chat"))
        .send()
        .await
        .unwrap();
    let arn = created.table_description().unwrap().table_arn().unwrap().to_string();
    assert!(table_tags(&clients, &arn).await.is_empty());
    tokio::time::sleep(Duration::from_millis(550)).await;
    assert_eq!(table_tags(&clients, &arn).await, ["app"]);

    db.tag_resource()
        .resource_arn(&arn)
        .tags(tag("stage", "dev"))
        .send()
        .await
        .unwrap();
    assert_eq!(table_tags(&clients, &arn).await, ["app"], "the tags before the change");
    db.untag_resource()
        .resource_arn(&arn)
        .tag_keys("app")
        .send()
        .await
        .unwrap();
    assert_eq!(
        table_tags(&clients, &arn).await,
        ["app"],
        "still the tags before the first change"
    );
    tokio::time::sleep(Duration::from_millis(550)).await;
    assert_eq!(table_tags(&clients, &arn).await, ["stage"]);
}

// --- small pages ------------------------------------------------------------------------

#[tokio::test]
async fn small_pages_cut_every_list_chatctl_uses() {
    let (_moto, _proxy, clients) = setup(Behaviours {
        small_pages: true,
        ..Behaviours::none()
    })
    .await;
    let apigw = &clients.apigw;

    // API Gateway v2: GetApis, GetRoutes, GetIntegrations, GetAuthorizers.
    for name in ["a", "b", "c"] {
        create_api(&clients, name).await;
    }
    let first = apigw.get_apis().max_results("100").send().await.unwrap();
    assert_eq!(first.items().len(), 2);
    let token = first.next_token().expect("a continuation token").to_string();
    let second = apigw.get_apis().next_token(token).send().await.unwrap();
    assert_eq!(second.items().len(), 1);
    assert!(second.next_token().is_none());
    let mut names: Vec<&str> = first
        .items()
        .iter()
        .chain(second.items())
        .filter_map(|a| a.name())
        .collect();
    names.sort();
    assert_eq!(names, ["a", "b", "c"]);

    let api = first.items()[0].api_id().unwrap().to_string();
    for key in ["$connect", "$disconnect", "$default", "send"] {
        create_route(&clients, &api, key).await.unwrap();
    }
    for _ in 0..3 {
        apigw
            .create_integration()
            .api_id(&api)
            .integration_type(IntegrationType::Mock)
            .send()
            .await
            .unwrap();
        apigw
            .create_authorizer()
            .api_id(&api)
            .name("auth")
            .authorizer_type(aws_sdk_apigatewayv2::types::AuthorizerType::Request)
            .authorizer_uri("arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/arn:aws:lambda:us-east-1:123456789012:function:a/invocations")
            .identity_source("route.request.querystring.token")
            .send()
            .await
            .unwrap();
    }
    let (mut routes, mut token) = (Vec::new(), None);
    loop {
        let page = apigw
            .get_routes()
            .api_id(&api)
            .set_next_token(token)
            .send()
            .await
            .unwrap();
        assert!(page.items().len() <= 2);
        routes.extend(page.items().iter().map(|r| r.route_key().unwrap().to_string()));
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    assert_eq!(routes.len(), 4);
    let integrations = apigw.get_integrations().api_id(&api).send().await.unwrap();
    assert_eq!(integrations.items().len(), 2);
    assert!(integrations.next_token().is_some());
    let authorizers = apigw.get_authorizers().api_id(&api).send().await.unwrap();
    assert_eq!(authorizers.items().len(), 2);
    let rest = apigw
        .get_authorizers()
        .api_id(&api)
        .next_token(authorizers.next_token().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(rest.items().len(), 1);
    assert!(rest.next_token().is_none());

    // DynamoDB ListTagsOfResource.
    let created = table_request(&clients, "chat")
        .tags(tag("a", "1"))
        .tags(tag("b", "2"))
        .tags(tag("c", "3"))
        .send()
        .await
        .unwrap();
    let arn = created.table_description().unwrap().table_arn().unwrap();
    let first = clients
        .dynamodb
        .list_tags_of_resource()
        .resource_arn(arn)
        .send()
        .await
        .unwrap();
    assert_eq!(first.tags().len(), 2);
    let second = clients
        .dynamodb
        .list_tags_of_resource()
        .resource_arn(arn)
        .next_token(first.next_token().expect("a continuation token"))
        .send()
        .await
        .unwrap();
    assert_eq!(second.tags().len(), 1);
    assert!(second.next_token().is_none());

    // IAM ListRolePolicies, ListAttachedRolePolicies.
    create_role(&clients, "chat-lambda").await;
    for name in ["p1", "p2", "p3"] {
        clients
            .iam
            .put_role_policy()
            .role_name("chat-lambda")
            .policy_name(name)
            .policy_document(POLICY)
            .send()
            .await
            .unwrap();
        let policy = clients
            .iam
            .create_policy()
            .policy_name(format!("managed-{name}"))
            .policy_document(POLICY)
            .send()
            .await
            .unwrap();
        clients
            .iam
            .attach_role_policy()
            .role_name("chat-lambda")
            .policy_arn(policy.policy().unwrap().arn().unwrap())
            .send()
            .await
            .unwrap();
    }
    let first = clients
        .iam
        .list_role_policies()
        .role_name("chat-lambda")
        .max_items(100)
        .send()
        .await
        .unwrap();
    assert_eq!(first.policy_names(), ["p1", "p2"]);
    assert!(first.is_truncated());
    let second = clients
        .iam
        .list_role_policies()
        .role_name("chat-lambda")
        .marker(first.marker().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(second.policy_names(), ["p3"]);
    assert!(!second.is_truncated());
    let attached: Vec<String> = clients
        .iam
        .list_attached_role_policies()
        .role_name("chat-lambda")
        .into_paginator()
        .items()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.policy_name().unwrap().to_string())
        .collect();
    assert_eq!(attached, ["managed-p1", "managed-p2", "managed-p3"]);
    let first = clients
        .iam
        .list_attached_role_policies()
        .role_name("chat-lambda")
        .send()
        .await
        .unwrap();
    assert_eq!(first.attached_policies().len(), 2);
    assert!(first.is_truncated());

    // CloudWatch Logs DescribeLogGroups, FilterLogEvents.
    for name in ["/aws/lambda/a", "/aws/lambda/b", "/aws/lambda/c"] {
        clients
            .logs
            .create_log_group()
            .log_group_name(name)
            .send()
            .await
            .unwrap();
    }
    let first = clients
        .logs
        .describe_log_groups()
        .log_group_name_prefix("/aws/lambda/")
        .limit(50)
        .send()
        .await
        .unwrap();
    assert_eq!(first.log_groups().len(), 2);
    let second = clients
        .logs
        .describe_log_groups()
        .log_group_name_prefix("/aws/lambda/")
        .next_token(first.next_token().expect("a continuation token"))
        .send()
        .await
        .unwrap();
    assert_eq!(second.log_groups().len(), 1);
    assert!(second.next_token().is_none());

    clients
        .logs
        .create_log_stream()
        .log_group_name("/aws/lambda/a")
        .log_stream_name("s")
        .send()
        .await
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let mut put = clients
        .logs
        .put_log_events()
        .log_group_name("/aws/lambda/a")
        .log_stream_name("s");
    for i in 0..3 {
        put = put.log_events(
            aws_sdk_cloudwatchlogs::types::InputLogEvent::builder()
                .timestamp(now + i)
                .message(format!("event {i}"))
                .build()
                .unwrap(),
        );
    }
    put.send().await.unwrap();
    let first = clients
        .logs
        .filter_log_events()
        .log_group_name("/aws/lambda/a")
        .send()
        .await
        .unwrap();
    assert_eq!(first.events().len(), 2);
    let second = clients
        .logs
        .filter_log_events()
        .log_group_name("/aws/lambda/a")
        .next_token(first.next_token().expect("a continuation token"))
        .send()
        .await
        .unwrap();
    assert_eq!(second.events()[0].message(), Some("event 2"));
    assert!(second.next_token().is_none());
}

// --- lost create responses --------------------------------------------------------------

#[tokio::test]
async fn lost_create_responses_make_the_retry_meet_the_first_attempt() {
    let (_moto, proxy, clients) = setup_with_retry(
        Behaviours {
            lost_create_responses: true,
            ..Behaviours::none()
        },
        RetryConfig::standard()
            .with_max_attempts(2)
            .with_initial_backoff(Duration::from_millis(10)),
    )
    .await;

    // CreateApi: the retry makes a second API.
    create_api(&clients, "chat").await;
    let apis = clients.apigw.get_apis().send().await.unwrap();
    assert_eq!(apis.items().len(), 2, "a duplicate API");
    let api = apis.items()[0].api_id().unwrap().to_string();
    // CreateRoute: the retry meets the route the first attempt made (moto
    // answers as it does to a second CreateRoute).
    let _ = create_route(&clients, &api, "$connect").await;

    // CreateRole: EntityAlreadyExists, though the role is there.
    let err = clients
        .iam
        .create_role()
        .role_name("chat-lambda")
        .assume_role_policy_document(TRUST_POLICY)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_entity_already_exists_exception(), "{err:?}");
    let role = clients.iam.get_role().role_name("chat-lambda").send().await.unwrap();
    let role_arn = role.role().unwrap().arn().to_string();

    // CreateFunction: ResourceConflictException.
    let err = create_function(&clients, "chat-connect", &role_arn, false)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_resource_conflict_exception(), "{err:?}");

    // CreateTable: ResourceInUseException.
    let err = table_request(&clients, "chat")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_resource_in_use_exception(), "{err:?}");

    // CreateLogGroup: ResourceAlreadyExistsException.
    let err = clients
        .logs
        .create_log_group()
        .log_group_name("/aws/lambda/chat")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_resource_already_exists_exception(), "{err:?}");

    let lost: Vec<String> = proxy
        .calls()
        .into_iter()
        .filter(|c| c.answered_by_layer.as_deref() == Some("LostResponse"))
        .map(|c| c.operation)
        .collect();
    assert_eq!(
        lost,
        [
            "CreateApi",
            "CreateRoute",
            "CreateRole",
            "CreateFunction",
            "CreateTable",
            "CreateLogGroup"
        ]
    );
    assert!(proxy.faulted_calls().iter().all(|c| c.answered_by_layer.is_some()));

    // Without retries, the first attempt surfaces as an HTTP 500.
    let once = Clients::new(&sdk_config_for(&proxy.endpoint()).await, RetryConfig::disabled());
    let err = once
        .apigw
        .create_api()
        .name("lost")
        .protocol_type(ProtocolType::Websocket)
        .route_selection_expression("$request.body.action")
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.raw_response().unwrap().status().as_u16(), 500);
}

// --- quotas -----------------------------------------------------------------------------

#[tokio::test]
async fn lambda_quota_throttles_the_control_plane_beyond_15_per_second() {
    let (_moto, _proxy, clients) = setup(Behaviours {
        lambda_quota: true,
        ..Behaviours::none()
    })
    .await;
    // 25 at once: 15 pass (the burst), the rest are throttled.
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..25 {
        let lambda = clients.lambda.clone();
        calls.spawn(async move { lambda.list_functions().send().await });
    }
    let mut throttled = 0;
    for answer in calls.join_all().await {
        match answer {
            Ok(_) => {}
            Err(err) => {
                let retry_after = err
                    .raw_response()
                    .and_then(|r| r.headers().get("retry-after"))
                    .map(str::to_string);
                assert!(retry_after.is_some(), "Retry-After");
                let err = err.into_service_error();
                assert!(err.is_too_many_requests_exception(), "{err:?}");
                assert_eq!(err.meta().message(), Some("Rate exceeded"));
                throttled += 1;
            }
        }
    }
    assert!(throttled >= 8, "{throttled} of 25 throttled");
    // GetPolicy has its own 15/s (aws-facts.md §11 corrects §10): the
    // control plane's throttling above does not hold it, 25 at once do.
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..25 {
        let lambda = clients.lambda.clone();
        calls.spawn(async move { lambda.get_policy().function_name("missing").send().await });
    }
    let throttled = calls
        .join_all()
        .await
        .into_iter()
        .filter(|answer| {
            answer
                .as_ref()
                .is_err_and(|err| err.code() == Some("TooManyRequestsException"))
        })
        .count();
    assert!((8..=10).contains(&throttled), "{throttled} of 25 GetPolicy throttled");
    // GetFunction has its own, larger quota.
    for _ in 0..40 {
        let err = clients
            .lambda
            .get_function()
            .function_name("missing")
            .send()
            .await
            .unwrap_err()
            .into_service_error();
        assert!(err.is_resource_not_found_exception(), "{err:?}");
    }
}

#[tokio::test]
async fn logs_quota_throttles_filter_log_events_beyond_5_per_second() {
    let (_moto, _proxy, clients) = setup(Behaviours {
        logs_quota: true,
        ..Behaviours::none()
    })
    .await;
    clients
        .logs
        .create_log_group()
        .log_group_name("/aws/lambda/chat")
        .send()
        .await
        .unwrap();
    let mut throttled = 0;
    for _ in 0..10 {
        if let Err(err) = clients
            .logs
            .filter_log_events()
            .log_group_name("/aws/lambda/chat")
            .send()
            .await
        {
            assert_eq!(err.code(), Some("ThrottlingException"), "{err:?}");
            throttled += 1;
        }
    }
    assert!(throttled >= 3, "{throttled} of 10 throttled");
}

// --- latency ------------------------------------------------------------------------

#[tokio::test]
async fn latency_delays_every_answer() {
    let timings = Timings {
        latency: chat_testkit::aws_behaviour::Latency {
            read: Duration::from_millis(40),
            write: Duration::from_millis(80),
            create_deployment: Duration::from_millis(200),
        },
        ..Timings::compressed()
    };
    let (_moto, _proxy, clients) = setup(Behaviours {
        latency: true,
        timings,
        ..Behaviours::none()
    })
    .await;
    let timed = Instant::now();
    clients.apigw.get_apis().send().await.unwrap();
    assert!(timed.elapsed() >= Duration::from_millis(40));
    let timed = Instant::now();
    let api = create_api(&clients, "chat").await;
    assert!(timed.elapsed() >= Duration::from_millis(80));
    create_route(&clients, &api, "$connect").await.unwrap();
    let timed = Instant::now();
    clients.apigw.create_deployment().api_id(&api).send().await.unwrap();
    assert!(timed.elapsed() >= Duration::from_millis(200));
}

#[test]
fn timings_are_as_documented() {
    let real = Timings::real_scale();
    assert_eq!(real.role_propagation, Duration::from_secs(8));
    assert_eq!(real.api_write, Duration::from_millis(300));
    assert_eq!(real.latency.create_deployment, Duration::from_secs(1));
    let all = Behaviours::all(real);
    assert!(all.api_conflicts && all.latency && all.small_pages && all.lost_create_responses);
    assert_eq!(Behaviours::none().timings, Timings::compressed());
    assert!(!Behaviours::none().api_conflicts);
    assert!(all.transaction_conflicts && all.gsi_lag);
    assert_eq!(real.gsi_lag, Duration::from_millis(500));
    assert!(all.table_tag_writes && all.index_backfill);
    assert_eq!(real.tag_write, Duration::from_secs(2));
    assert_eq!(real.index_backfill, Duration::from_secs(600));
}

/// A table `pk` with index `by-room`, made and waited for.
async fn items_table(clients: &Clients, name: &str) {
    table_request(clients, name).send().await.unwrap();
}

fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.into())
}

/// A transaction like the connect handler's: count on one shared item,
/// register one item of its own.
async fn count_and_register(
    clients: &Clients,
    table: &str,
    id: &str,
) -> Result<(), aws_sdk_dynamodb::error::SdkError<TransactWriteItemsError>> {
    let count = Update::builder()
        .table_name(table)
        .key("pk", s("#counter"))
        .update_expression("ADD #n :one")
        .expression_attribute_names("#n", "n")
        .expression_attribute_values(":one", AttributeValue::N("1".into()))
        .build()
        .unwrap();
    let register = Put::builder()
        .table_name(table)
        .item("pk", s(id))
        .item("room", s("lobby"))
        .build()
        .unwrap();
    clients
        .dynamodb
        .transact_write_items()
        .transact_items(TransactWriteItem::builder().update(count).build())
        .transact_items(TransactWriteItem::builder().put(register).build())
        .send()
        .await
        .map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_conflicts_cancel_overlapping_transactions_on_one_item() {
    // A long hold, so that 20 sent at once overlap however slow the machine.
    let (_moto, _proxy, clients) = setup(Behaviours {
        transaction_conflicts: true,
        timings: Timings {
            transaction: Duration::from_millis(300),
            ..Timings::compressed()
        },
        ..Behaviours::none()
    })
    .await;
    items_table(&clients, "items").await;
    let results = futures::future::join_all((0..20).map(|i| {
        let clients = &clients;
        async move { count_and_register(clients, "items", &format!("c{i}")).await }
    }))
    .await;
    let mut committed = 0;
    let mut conflicts = 0;
    for result in results {
        match result {
            Ok(()) => committed += 1,
            Err(err) => {
                let Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) = err.as_service_error()
                else {
                    panic!("unexpected error: {err:?}");
                };
                let codes: Vec<Option<&str>> = cancelled.cancellation_reasons().iter().map(|r| r.code()).collect();
                assert_eq!(
                    codes,
                    [Some("TransactionConflict"), Some("None")],
                    "the shared item conflicts"
                );
                conflicts += 1;
            }
        }
    }
    assert!(
        conflicts > 0,
        "20 transactions at once on one item: DynamoDB cancels some"
    );
    let counter = clients
        .dynamodb
        .get_item()
        .table_name("items")
        .key("pk", s("#counter"))
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    let counted = counter.item().unwrap()["n"].as_n().unwrap().parse::<i32>().unwrap();
    assert_eq!(counted, committed, "a cancelled transaction writes nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_to_an_item_in_a_transaction_conflicts_and_other_items_do_not() {
    let (_moto, _proxy, clients) = setup(Behaviours {
        transaction_conflicts: true,
        timings: Timings {
            transaction: Duration::from_millis(800),
            ..Timings::compressed()
        },
        ..Behaviours::none()
    })
    .await;
    items_table(&clients, "items").await;
    count_and_register(&clients, "items", "c1").await.unwrap();
    // The transaction still holds its items: a single write to one of them
    // conflicts, a transaction on other items passes.
    let update = clients
        .dynamodb
        .update_item()
        .table_name("items")
        .key("pk", s("c1"))
        .update_expression("SET room = :r")
        .expression_attribute_values(":r", s("other"))
        .send()
        .await
        .unwrap_err();
    assert!(
        matches!(
            update.as_service_error(),
            Some(aws_sdk_dynamodb::operation::update_item::UpdateItemError::TransactionConflictException(_))
        ),
        "{update:?}"
    );
    let other = Put::builder().table_name("items").item("pk", s("c2")).build().unwrap();
    clients
        .dynamodb
        .transact_write_items()
        .transact_items(TransactWriteItem::builder().put(other).build())
        .send()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(900)).await;
    count_and_register(&clients, "items", "c3").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gsi_lag_keeps_fresh_writes_out_of_indexes_for_a_while() {
    let (_moto, _proxy, clients) = setup(Behaviours {
        gsi_lag: true,
        timings: Timings {
            gsi_lag: Duration::from_millis(600),
            ..Timings::compressed()
        },
        ..Behaviours::none()
    })
    .await;
    items_table(&clients, "items").await;
    let in_room = || async {
        let output = clients
            .dynamodb
            .query()
            .table_name("items")
            .index_name("by-room")
            .key_condition_expression("room = :r")
            .expression_attribute_values(":r", s("lobby"))
            .send()
            .await
            .unwrap();
        let mut ids: Vec<String> = output.items().iter().map(|i| i["pk"].as_s().unwrap().clone()).collect();
        ids.sort();
        assert_eq!(output.count() as usize, ids.len());
        ids
    };
    let put = |id: &'static str| {
        clients
            .dynamodb
            .put_item()
            .table_name("items")
            .item("pk", s(id))
            .item("room", s("lobby"))
            .send()
    };
    put("old").await.unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    put("new").await.unwrap();
    count_and_register(&clients, "items", "txn").await.unwrap();
    assert_eq!(in_room().await, ["old"], "fresh writes are not in the index yet");
    // The table itself has them at once.
    let read = clients
        .dynamodb
        .get_item()
        .table_name("items")
        .key("pk", s("new"))
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    assert!(read.item().is_some());
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(in_room().await, ["new", "old", "txn"]);
    // An update that leaves the index's key alone leaves the item there.
    clients
        .dynamodb
        .update_item()
        .table_name("items")
        .key("pk", s("old"))
        .update_expression("SET #note = :n")
        .expression_attribute_names("#note", "note")
        .expression_attribute_values(":n", s("seen"))
        .send()
        .await
        .unwrap();
    assert_eq!(in_room().await, ["new", "old", "txn"]);
    // One that sets the index's key to the value it had: the index shows
    // the item as it was until then, under that same key.
    clients
        .dynamodb
        .update_item()
        .table_name("items")
        .key("pk", s("new"))
        .update_expression("SET room = :r")
        .expression_attribute_values(":r", s("lobby"))
        .send()
        .await
        .unwrap();
    assert_eq!(in_room().await, ["new", "old", "txn"]);
}

/// §11 "GSI staleness": an item moved to another index key, or deleted,
/// is still found under its old key for a while, as it was; then no more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gsi_lag_keeps_moved_and_deleted_items_under_their_old_key_for_a_while() {
    let (_moto, _proxy, clients) = setup(Behaviours {
        gsi_lag: true,
        timings: Timings {
            gsi_lag: Duration::from_millis(600),
            ..Timings::compressed()
        },
        ..Behaviours::none()
    })
    .await;
    items_table(&clients, "items").await;
    let in_room = |room: &'static str| {
        let clients = &clients;
        async move {
            let output = clients
                .dynamodb
                .query()
                .table_name("items")
                .index_name("by-room")
                .key_condition_expression("#room = :r")
                .expression_attribute_names("#room", "room")
                .expression_attribute_values(":r", s(room))
                .send()
                .await
                .unwrap();
            let mut found: Vec<(String, String)> = output
                .items()
                .iter()
                .map(|i| (i["pk"].as_s().unwrap().clone(), i["room"].as_s().unwrap().clone()))
                .collect();
            found.sort();
            assert_eq!(output.count() as usize, found.len());
            found
        }
    };
    let entry = |pk: &str, room: &str| (pk.to_string(), room.to_string());
    for id in ["mover", "leaver", "stayer"] {
        clients
            .dynamodb
            .put_item()
            .table_name("items")
            .item("pk", s(id))
            .item("room", s("lobby"))
            .send()
            .await
            .unwrap();
    }
    // Until the index has the three puts.
    let lag_over = Instant::now() + Duration::from_secs(5);
    while in_room("lobby").await.len() < 3 {
        assert!(Instant::now() < lag_over, "the puts never reached the index");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    clients
        .dynamodb
        .update_item()
        .table_name("items")
        .key("pk", s("mover"))
        .update_expression("SET room = :r")
        .expression_attribute_values(":r", s("general"))
        .send()
        .await
        .unwrap();
    let deleted = clients
        .dynamodb
        .delete_item()
        .table_name("items")
        .key("pk", s("leaver"))
        .send()
        .await
        .unwrap();
    assert!(
        deleted.attributes().is_none(),
        "the caller gets what it asked for, no old image"
    );
    assert_eq!(
        in_room("lobby").await,
        [
            entry("leaver", "lobby"),
            entry("mover", "lobby"),
            entry("stayer", "lobby")
        ],
        "the index still has them under their old key, as they were"
    );
    assert_eq!(in_room("general").await, [], "and not yet under the new one");
    // A range condition or a filter the layer cannot evaluate adds nothing.
    let filtered = clients
        .dynamodb
        .query()
        .table_name("items")
        .index_name("by-room")
        .key_condition_expression("room = :r")
        .filter_expression("attribute_exists(pk)")
        .expression_attribute_values(":r", s("lobby"))
        .send()
        .await
        .unwrap();
    assert_eq!(filtered.count(), 1);
    // Then the index catches up: the old images go, the move shows.
    let lag_over = Instant::now() + Duration::from_secs(5);
    while in_room("lobby").await != [entry("stayer", "lobby")] {
        assert!(Instant::now() < lag_over, "the old images outlived the lag");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(in_room("general").await, [entry("mover", "general")]);
}

/// An account without API Gateway's CloudWatch Logs role (sst/ion #373):
/// a stage that turns on execution or access logging is refused with
/// BadRequestException; one that logs nothing is created.
#[tokio::test]
async fn logging_needs_the_accounts_cloudwatch_role() {
    use aws_sdk_apigatewayv2::types::{AccessLogSettings, LoggingLevel, RouteSettings};
    let (_moto, proxy, clients) = setup(Behaviours {
        no_logging_role: true,
        ..Behaviours::none()
    })
    .await;
    let api = create_api(&clients, "chat").await;
    let limits = |level: LoggingLevel| {
        RouteSettings::builder()
            .throttling_burst_limit(10)
            .throttling_rate_limit(5.0)
            .logging_level(level)
            .build()
    };
    let refused = clients
        .apigw
        .create_stage()
        .api_id(&api)
        .stage_name("dev")
        .default_route_settings(limits(LoggingLevel::Error))
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(refused.is_bad_request_exception(), "{refused:?}");
    assert_eq!(
        refused.meta().message(),
        Some("CloudWatch Logs role ARN must be set in account settings to enable logging")
    );
    clients
        .apigw
        .create_stage()
        .api_id(&api)
        .stage_name("dev")
        .default_route_settings(limits(LoggingLevel::Off))
        .send()
        .await
        .unwrap();
    let access = clients
        .apigw
        .update_stage()
        .api_id(&api)
        .stage_name("dev")
        .access_log_settings(
            AccessLogSettings::builder()
                .destination_arn("arn:aws:logs:us-east-1:123456789012:log-group:access")
                .format("$context.requestId")
                .build(),
        )
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(access.is_bad_request_exception(), "{access:?}");
    assert_eq!(
        layer_answers(&proxy),
        [
            ("CreateStage".to_string(), "BadRequestException".to_string()),
            ("UpdateStage".to_string(), "BadRequestException".to_string())
        ]
    );
}

fn s3_client(config: &SdkConfig) -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(config)
            .force_path_style(true)
            .retry_config(RetryConfig::disabled())
            .build(),
    )
}

/// Conditional writes of one key at once: one wins, the others get 412
/// PreconditionFailed or, while the winner is in flight, 409
/// ConditionalRequestConflict. Plain moto answers 412 only.
#[tokio::test]
async fn concurrent_conditional_writes_of_a_key_conflict() {
    let moto = Moto::start();
    let behaviours = Behaviours {
        s3_conditional_conflicts: true,
        latency: true,
        ..Behaviours::none()
    };
    let proxy = AwsProxy::start_with_behaviours(moto.endpoint(), behaviours).await;
    let s3 = s3_client(&sdk_config_for(&proxy.endpoint()).await);
    s3.create_bucket().bucket("locks").send().await.unwrap();
    let put = |n: usize| {
        s3.put_object()
            .bucket("locks")
            .key("stack.lock")
            .if_none_match("*")
            .body(format!("writer {n}").into_bytes().into())
            .send()
    };
    let results = futures::future::join_all((0..8).map(put)).await;
    let codes: Vec<Option<String>> = results
        .iter()
        .map(|r| r.as_ref().err().and_then(|e| e.code()).map(str::to_string))
        .collect();
    assert_eq!(codes.iter().filter(|c| c.is_none()).count(), 1, "{codes:?}");
    assert!(
        codes
            .iter()
            .flatten()
            .all(|c| c == "PreconditionFailed" || c == "ConditionalRequestConflict"),
        "{codes:?}"
    );
    assert!(
        codes.iter().flatten().any(|c| c == "ConditionalRequestConflict"),
        "{codes:?}"
    );
    // One at a time, the condition decides alone.
    let err = put(9).await.unwrap_err();
    assert_eq!(err.code(), Some("PreconditionFailed"));
}

/// A bucket name just deleted cannot be made again for a while
/// (OperationAborted); a name another account holds never (BucketAlreadyExists,
/// HeadBucket 403).
#[tokio::test]
async fn bucket_names_are_released_late_and_some_are_taken() {
    let moto = Moto::start();
    let behaviours = Behaviours {
        bucket_name_release: true,
        ..Behaviours::none()
    };
    let window = behaviours.timings.bucket_name_release;
    let proxy = AwsProxy::start_with_behaviours(moto.endpoint(), behaviours).await;
    let s3 = s3_client(&sdk_config_for(&proxy.endpoint()).await);
    s3.create_bucket().bucket("artifacts").send().await.unwrap();
    s3.delete_bucket().bucket("artifacts").send().await.unwrap();
    let deleted = Instant::now();
    let err = s3.create_bucket().bucket("artifacts").send().await.unwrap_err();
    assert_eq!(err.code(), Some("OperationAborted"), "{err:?}");
    assert!(deleted.elapsed() < window);
    loop {
        match s3.create_bucket().bucket("artifacts").send().await {
            Ok(_) => break,
            Err(err) => {
                assert_eq!(err.code(), Some("OperationAborted"));
                assert!(deleted.elapsed() < window * 3, "never released");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    assert!(deleted.elapsed() >= window);

    proxy.take_bucket_name("someone-elses");
    let err = s3.create_bucket().bucket("someone-elses").send().await.unwrap_err();
    assert_eq!(err.code(), Some("BucketAlreadyExists"), "{err:?}");
    let head = s3.head_bucket().bucket("someone-elses").send().await.unwrap_err();
    assert_eq!(head.raw_response().map(|r| r.status().as_u16()), Some(403));
}

#[tokio::test]
async fn a_deleted_domain_name_keeps_its_certificate_in_use_for_a_while() {
    use aws_sdk_apigatewayv2::types::DomainNameConfiguration;
    let moto = Moto::start();
    let behaviours = Behaviours {
        certificate_release: true,
        ..Behaviours::none()
    };
    let window = behaviours.timings.certificate_release;
    let proxy = AwsProxy::start_with_behaviours(moto.endpoint(), behaviours).await;
    let sdk = sdk_config_for(&proxy.endpoint()).await;
    let (acm, apigateway) = (aws_sdk_acm::Client::new(&sdk), aws_sdk_apigatewayv2::Client::new(&sdk));
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../cli/tests/fixtures");
    let read = |ext: &str| std::fs::read(fixtures.join(format!("example.com.{ext}"))).unwrap();
    let imported = acm
        .import_certificate()
        .certificate(aws_sdk_acm::primitives::Blob::new(read("crt")))
        .private_key(aws_sdk_acm::primitives::Blob::new(read("key")))
        .send()
        .await
        .unwrap();
    let arn = imported.certificate_arn().unwrap();
    apigateway
        .create_domain_name()
        .domain_name("chat.example.com")
        .domain_name_configurations(DomainNameConfiguration::builder().certificate_arn(arn).build())
        .send()
        .await
        .unwrap();
    apigateway
        .delete_domain_name()
        .domain_name("chat.example.com")
        .send()
        .await
        .unwrap();
    let deleted = Instant::now();
    let err = acm.delete_certificate().certificate_arn(arn).send().await.unwrap_err();
    assert_eq!(err.code(), Some("ResourceInUseException"), "{err:?}");
    assert!(deleted.elapsed() < window);
    loop {
        match acm.delete_certificate().certificate_arn(arn).send().await {
            Ok(_) => break,
            Err(err) => {
                assert_eq!(err.code(), Some("ResourceInUseException"));
                assert!(deleted.elapsed() < window * 3, "never released");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    assert!(deleted.elapsed() >= window);
}
