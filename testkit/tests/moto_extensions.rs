//! The API Gateway v2 operations that our launcher (`moto_server.py`) adds to
//! moto, driven through the real Rust SDK: GetAuthorizers, CreateDeployment,
//! GetDeployments, GetDeployment, DeleteDeployment and UpdateStage. On a plain
//! moto server each of these fails with 404 or 500. Also DynamoDB transactions
//! backed up item by item instead of table by table, a DynamoDB tag given
//! again replacing its value, a stage's tags changed in place, and
//! DeleteAccessLogSettings, a route key and a stage name taken once, route
//! settings that must name a route of the API, CloudWatch over the SDK's CBOR protocol with
//! percentiles (p50, p99) in GetMetricData, and custom domain names as AWS
//! answers them (regional target, one type of API, UpdateApiMapping,
//! UpdateDomainName, DeleteDomainName with its mappings).

use aws_sdk_apigatewayv2::Client;
use aws_sdk_apigatewayv2::types::{
    AuthorizationType, AuthorizerType, DeploymentStatus, IntegrationType, ProtocolType, RouteSettings,
};
use chat_testkit::Moto;

const FUNCTION_URI: &str = "arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/arn:aws:lambda:us-east-1:123456789012:function:chat/invocations";
const AUTHORIZER_URI: &str = "arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/arn:aws:lambda:us-east-1:123456789012:function:chat-authorizer/invocations";

struct ChatApi {
    id: String,
    authorizer_id: String,
}

async fn client(moto: &Moto) -> Client {
    Client::new(&moto.sdk_config().await)
}

/// A WebSocket API with a Lambda proxy integration and a REQUEST authorizer,
/// and (if `with_route`) a `$connect` route that uses both.
async fn chat_api(client: &Client, with_route: bool) -> ChatApi {
    let api = client
        .create_api()
        .name("chat")
        .protocol_type(ProtocolType::Websocket)
        .route_selection_expression("$request.body.action")
        .send()
        .await
        .unwrap();
    let id = api.api_id().unwrap().to_string();
    let integration = client
        .create_integration()
        .api_id(&id)
        .integration_type(IntegrationType::AwsProxy)
        .integration_method("POST")
        .integration_uri(FUNCTION_URI)
        .send()
        .await
        .unwrap();
    let authorizer = client
        .create_authorizer()
        .api_id(&id)
        .name("chat-authorizer")
        .authorizer_type(AuthorizerType::Request)
        .authorizer_uri(AUTHORIZER_URI)
        .identity_source("route.request.querystring.token")
        .send()
        .await
        .unwrap();
    let authorizer_id = authorizer.authorizer_id().unwrap().to_string();
    if with_route {
        client
            .create_route()
            .api_id(&id)
            .route_key("$connect")
            .target(format!("integrations/{}", integration.integration_id().unwrap()))
            .authorization_type(AuthorizationType::Custom)
            .authorizer_id(&authorizer_id)
            .send()
            .await
            .unwrap();
    }
    ChatApi { id, authorizer_id }
}

async fn create_stage(client: &Client, api: &ChatApi, name: &str) {
    client
        .create_stage()
        .api_id(&api.id)
        .stage_name(name)
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn get_authorizers_lists_the_apis_authorizers() {
    let moto = Moto::start();
    let client = client(&moto).await;
    let api = chat_api(&client, true).await;

    let listed = client.get_authorizers().api_id(&api.id).send().await.unwrap();

    let [authorizer] = listed.items() else {
        panic!("expected one authorizer: {listed:?}");
    };
    assert_eq!(authorizer.authorizer_id(), Some(api.authorizer_id.as_str()));
    assert_eq!(authorizer.name(), Some("chat-authorizer"));
    assert_eq!(authorizer.authorizer_type(), Some(&AuthorizerType::Request));
    assert_eq!(authorizer.authorizer_uri(), Some(AUTHORIZER_URI));
    assert_eq!(authorizer.identity_source(), ["route.request.querystring.token"]);

    let missing = client.get_authorizers().api_id("nosuchapi").send().await.unwrap_err();
    assert!(missing.into_service_error().is_not_found_exception());
}

#[tokio::test]
async fn create_deployment_fails_on_an_api_without_routes() {
    let moto = Moto::start();
    let client = client(&moto).await;
    let api = chat_api(&client, false).await;

    let error = client.create_deployment().api_id(&api.id).send().await.unwrap_err();

    let error = error.into_service_error();
    assert!(error.is_bad_request_exception(), "{error:?}");
    let listed = client.get_deployments().api_id(&api.id).send().await.unwrap();
    assert!(listed.items().is_empty());
}

#[tokio::test]
async fn deployments_are_created_listed_fetched_and_deleted() {
    let moto = Moto::start();
    let client = client(&moto).await;
    let api = chat_api(&client, true).await;

    let created = client
        .create_deployment()
        .api_id(&api.id)
        .description("first")
        .send()
        .await
        .unwrap();
    let id = created.deployment_id().unwrap().to_string();
    assert_eq!(created.deployment_status(), Some(&DeploymentStatus::Deployed));
    assert_eq!(created.description(), Some("first"));
    assert_eq!(created.auto_deployed(), Some(false));
    assert!(created.created_date().is_some());

    let listed = client.get_deployments().api_id(&api.id).send().await.unwrap();
    let ids: Vec<_> = listed.items().iter().filter_map(|d| d.deployment_id()).collect();
    assert_eq!(ids, [id.as_str()]);
    assert_eq!(listed.items()[0].description(), Some("first"));

    let fetched = client
        .get_deployment()
        .api_id(&api.id)
        .deployment_id(&id)
        .send()
        .await
        .unwrap();
    assert_eq!(fetched.deployment_id(), Some(id.as_str()));
    assert_eq!(fetched.deployment_status(), Some(&DeploymentStatus::Deployed));

    client
        .delete_deployment()
        .api_id(&api.id)
        .deployment_id(&id)
        .send()
        .await
        .unwrap();
    let listed = client.get_deployments().api_id(&api.id).send().await.unwrap();
    assert!(listed.items().is_empty());
    let gone = client
        .get_deployment()
        .api_id(&api.id)
        .deployment_id(&id)
        .send()
        .await
        .unwrap_err();
    assert!(gone.into_service_error().is_not_found_exception());
    let gone = client
        .delete_deployment()
        .api_id(&api.id)
        .deployment_id(&id)
        .send()
        .await
        .unwrap_err();
    assert!(gone.into_service_error().is_not_found_exception());
}

#[tokio::test]
async fn create_deployment_with_a_stage_name_points_that_stage_at_it() {
    let moto = Moto::start();
    let client = client(&moto).await;
    let api = chat_api(&client, true).await;
    create_stage(&client, &api, "prod").await;

    let created = client
        .create_deployment()
        .api_id(&api.id)
        .stage_name("prod")
        .send()
        .await
        .unwrap();

    let stage = client
        .get_stage()
        .api_id(&api.id)
        .stage_name("prod")
        .send()
        .await
        .unwrap();
    assert_eq!(stage.deployment_id(), created.deployment_id());

    let no_stage = client
        .create_deployment()
        .api_id(&api.id)
        .stage_name("nosuchstage")
        .send()
        .await
        .unwrap_err();
    assert!(no_stage.into_service_error().is_not_found_exception());
}

#[tokio::test]
async fn update_stage_sets_the_deployment_and_settings_and_get_stage_shows_them() {
    let moto = Moto::start();
    let client = client(&moto).await;
    let api = chat_api(&client, true).await;
    create_stage(&client, &api, "prod").await;
    let before = client
        .get_stage()
        .api_id(&api.id)
        .stage_name("prod")
        .send()
        .await
        .unwrap();
    assert_eq!(before.deployment_id(), None);
    let deployment = client.create_deployment().api_id(&api.id).send().await.unwrap();
    let deployment_id = deployment.deployment_id().unwrap();

    let updated = client
        .update_stage()
        .api_id(&api.id)
        .stage_name("prod")
        .deployment_id(deployment_id)
        .description("chat, production")
        .auto_deploy(false)
        .default_route_settings(
            RouteSettings::builder()
                .throttling_burst_limit(100)
                .throttling_rate_limit(50.0)
                .build(),
        )
        .stage_variables("room", "general")
        .send()
        .await
        .unwrap();
    assert_eq!(updated.stage_name(), Some("prod"));
    assert_eq!(updated.deployment_id(), Some(deployment_id));

    let stage = client
        .get_stage()
        .api_id(&api.id)
        .stage_name("prod")
        .send()
        .await
        .unwrap();
    assert_eq!(stage.deployment_id(), Some(deployment_id));
    assert_eq!(stage.description(), Some("chat, production"));
    assert_eq!(stage.auto_deploy(), Some(false));
    let settings = stage.default_route_settings().unwrap();
    assert_eq!(settings.throttling_burst_limit(), Some(100));
    assert_eq!(settings.throttling_rate_limit(), Some(50.0));
    assert_eq!(
        stage.stage_variables().and_then(|v| v.get("room")).map(String::as_str),
        Some("general")
    );

    let unknown = client
        .update_stage()
        .api_id(&api.id)
        .stage_name("prod")
        .deployment_id("nosuchdeployment")
        .send()
        .await
        .unwrap_err();
    assert!(unknown.into_service_error().is_not_found_exception());
    let no_stage = client
        .update_stage()
        .api_id(&api.id)
        .stage_name("nosuchstage")
        .description("x")
        .send()
        .await
        .unwrap_err();
    assert!(no_stage.into_service_error().is_not_found_exception());
}

#[tokio::test]
async fn delete_api_takes_its_deployments() {
    let moto = Moto::start();
    let client = client(&moto).await;
    let api = chat_api(&client, true).await;
    client.create_deployment().api_id(&api.id).send().await.unwrap();

    client.delete_api().api_id(&api.id).send().await.unwrap();

    let gone = client.get_deployments().api_id(&api.id).send().await.unwrap_err();
    assert!(gone.into_service_error().is_not_found_exception());
}

/// The launcher's cheaper transaction backup (items, not whole tables): a
/// cancelled TransactWriteItems leaves every item as it was, whether the
/// transaction created, changed or deleted it before the failing check.
#[tokio::test]
async fn a_cancelled_transaction_leaves_every_item_as_it_was() {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, AttributeValue, BillingMode, ConditionCheck, Delete, KeySchemaElement, KeyType, Put,
        ScalarAttributeType, TransactWriteItem, Update,
    };
    let moto = Moto::start();
    let dynamodb = aws_sdk_dynamodb::Client::new(&moto.sdk_config().await);
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
    let s = |v: &str| AttributeValue::S(v.into());
    for pk in ["changed", "deleted"] {
        dynamodb
            .put_item()
            .table_name("items")
            .item("pk", s(pk))
            .item("v", s("old"))
            .send()
            .await
            .unwrap();
    }
    let put = Put::builder()
        .table_name("items")
        .item("pk", s("created"))
        .build()
        .unwrap();
    let update = Update::builder()
        .table_name("items")
        .key("pk", s("changed"))
        .update_expression("SET v = :new")
        .expression_attribute_values(":new", s("new"))
        .build()
        .unwrap();
    let delete = Delete::builder()
        .table_name("items")
        .key("pk", s("deleted"))
        .build()
        .unwrap();
    let failing = ConditionCheck::builder()
        .table_name("items")
        .key("pk", s("absent"))
        .condition_expression("attribute_exists(pk)")
        .build()
        .unwrap();
    let err = dynamodb
        .transact_write_items()
        .transact_items(TransactWriteItem::builder().put(put).build())
        .transact_items(TransactWriteItem::builder().update(update).build())
        .transact_items(TransactWriteItem::builder().delete(delete).build())
        .transact_items(TransactWriteItem::builder().condition_check(failing).build())
        .send()
        .await
        .unwrap_err();
    assert!(
        err.as_service_error()
            .is_some_and(|e| e.is_transaction_canceled_exception()),
        "{err:?}"
    );
    let mut items: Vec<(String, String)> = dynamodb
        .scan()
        .table_name("items")
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .items()
        .iter()
        .map(|item| (item["pk"].as_s().unwrap().clone(), item["v"].as_s().unwrap().clone()))
        .collect();
    items.sort();
    assert_eq!(
        items,
        [
            ("changed".to_string(), "old".to_string()),
            ("deleted".to_string(), "old".to_string())
        ]
    );
}

/// A stage tagged in place through its ARN shows its tags in GetStage and
/// GetTags, as on AWS; a plain moto server keeps them apart (GetStage shows
/// only the tags given to CreateStage).
#[tokio::test]
async fn a_stage_is_tagged_and_untagged_in_place() {
    let moto = Moto::start();
    let client = client(&moto).await;
    let api = chat_api(&client, true).await;
    client
        .create_stage()
        .api_id(&api.id)
        .stage_name("dev")
        .tags("chatctl:stack", "chat")
        .tags("old", "x")
        .send()
        .await
        .unwrap();
    let arn = format!("arn:aws:apigateway:us-east-1::/apis/{}/stages/dev", api.id);

    client
        .tag_resource()
        .resource_arn(&arn)
        .tags("team", "chat")
        .send()
        .await
        .unwrap();
    client
        .untag_resource()
        .resource_arn(&arn)
        .tag_keys("old")
        .send()
        .await
        .unwrap();

    let stage = client
        .get_stage()
        .api_id(&api.id)
        .stage_name("dev")
        .send()
        .await
        .unwrap();
    let tags = stage.tags().unwrap();
    assert_eq!(tags.get("team").map(String::as_str), Some("chat"));
    assert_eq!(tags.get("chatctl:stack").map(String::as_str), Some("chat"));
    assert!(!tags.contains_key("old"), "{tags:?}");
    let listed = client.get_tags().resource_arn(&arn).send().await.unwrap();
    assert_eq!(listed.tags(), Some(tags));
}

/// A DynamoDB tag given again replaces its value (on a plain moto server the
/// table then holds the key twice).
#[tokio::test]
async fn a_dynamodb_tag_given_again_replaces_its_value() {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, Tag,
    };
    let moto = Moto::start();
    let dynamodb = aws_sdk_dynamodb::Client::new(&moto.sdk_config().await);
    let tag = |key: &str, value: &str| Tag::builder().key(key).value(value).build().unwrap();
    let created = dynamodb
        .create_table()
        .table_name("tagged")
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
        .tags(tag("team", "web"))
        .send()
        .await
        .unwrap();
    let arn = created.table_description().unwrap().table_arn().unwrap().to_string();

    dynamodb
        .tag_resource()
        .resource_arn(&arn)
        .tags(tag("team", "chat"))
        .send()
        .await
        .unwrap();

    let listed = dynamodb
        .list_tags_of_resource()
        .resource_arn(&arn)
        .send()
        .await
        .unwrap();
    let tags: Vec<(&str, &str)> = listed.tags().iter().map(|t| (t.key(), t.value())).collect();
    assert_eq!(tags, [("team", "chat")]);
}

/// UpdateStage replaces the default route settings whole (on AWS an
/// omitted throttling value becomes 0) and merges route settings by route;
/// DeleteRouteSettings removes one route's (404 on a plain moto server).
#[tokio::test]
async fn route_settings_are_replaced_merged_and_deleted_as_on_aws() {
    let moto = Moto::start();
    let client = client(&moto).await;
    let api = chat_api(&client, true).await;
    add_route(&client, &api, "sendmessage").await.unwrap();
    add_route(&client, &api, "join").await.unwrap();
    create_stage(&client, &api, "dev").await;
    let limits = |burst: i32, rate: f64| {
        RouteSettings::builder()
            .throttling_burst_limit(burst)
            .throttling_rate_limit(rate)
            .build()
    };
    client
        .update_stage()
        .api_id(&api.id)
        .stage_name("dev")
        .default_route_settings(limits(100, 50.0))
        .route_settings("sendmessage", limits(10, 5.0))
        .route_settings("join", limits(20, 10.0))
        .send()
        .await
        .unwrap();
    client
        .update_stage()
        .api_id(&api.id)
        .stage_name("dev")
        .default_route_settings(RouteSettings::builder().detailed_metrics_enabled(true).build())
        .route_settings("join", limits(30, 15.0))
        .send()
        .await
        .unwrap();

    let stage = client
        .get_stage()
        .api_id(&api.id)
        .stage_name("dev")
        .send()
        .await
        .unwrap();
    let default = stage.default_route_settings().unwrap();
    assert_eq!(default.detailed_metrics_enabled(), Some(true));
    assert_eq!(default.throttling_burst_limit(), None, "replaced whole, not merged");
    let routes = stage.route_settings().unwrap();
    assert_eq!(routes["sendmessage"].throttling_burst_limit(), Some(10), "kept");
    assert_eq!(routes["join"].throttling_burst_limit(), Some(30), "replaced");

    client
        .delete_route_settings()
        .api_id(&api.id)
        .stage_name("dev")
        .route_key("sendmessage")
        .send()
        .await
        .unwrap();
    let stage = client
        .get_stage()
        .api_id(&api.id)
        .stage_name("dev")
        .send()
        .await
        .unwrap();
    assert!(!stage.route_settings().unwrap().contains_key("sendmessage"));
    let again = client
        .delete_route_settings()
        .api_id(&api.id)
        .stage_name("dev")
        .route_key("sendmessage")
        .send()
        .await
        .unwrap_err();
    assert!(again.into_service_error().is_not_found_exception());
}

/// A route without authorization, to the API's first integration.
async fn add_route(
    client: &Client,
    api: &ChatApi,
    key: &str,
) -> Result<(), aws_sdk_apigatewayv2::error::SdkError<aws_sdk_apigatewayv2::operation::create_route::CreateRouteError>>
{
    let integrations = client.get_integrations().api_id(&api.id).send().await.unwrap();
    let integration = integrations.items()[0].integration_id().unwrap();
    client
        .create_route()
        .api_id(&api.id)
        .route_key(key)
        .target(format!("integrations/{integration}"))
        .send()
        .await
        .map(|_| ())
}

/// CreateRoute for a key the API has, and CreateStage for a name it has:
/// 409 ConflictException (anomalyco/sst #5031; terraform-provider-aws
/// #1153). A plain moto server makes a second route and replaces the stage.
#[tokio::test]
async fn a_route_key_and_a_stage_name_are_taken_once() {
    let moto = Moto::start();
    let client = client(&moto).await;
    let api = chat_api(&client, true).await;
    let err = add_route(&client, &api, "$connect").await.unwrap_err();
    let err = err.into_service_error();
    assert!(err.is_conflict_exception(), "{err:?}");
    assert_eq!(
        aws_sdk_apigatewayv2::error::ProvideErrorMetadata::message(&err),
        Some("Route with key $connect already exists for this API")
    );
    let routes = client.get_routes().api_id(&api.id).send().await.unwrap();
    assert_eq!(routes.items().len(), 1);
    add_route(&client, &api, "sendmessage").await.unwrap();

    create_stage(&client, &api, "dev").await;
    let err = client
        .create_stage()
        .api_id(&api.id)
        .stage_name("dev")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_conflict_exception(), "{err:?}");
    assert_eq!(
        aws_sdk_apigatewayv2::error::ProvideErrorMetadata::message(&err),
        Some("Stage already exists")
    );
    create_stage(&client, &api, "prod").await;
}

/// Route settings for a key the API has no route for: 404
/// NotFoundException, in CreateStage and UpdateStage
/// (terraform-aws-modules/terraform-aws-apigateway-v2 PR #80). A plain moto
/// server keeps them.
#[tokio::test]
async fn route_settings_must_name_a_route_of_the_api() {
    let moto = Moto::start();
    let client = client(&moto).await;
    let api = chat_api(&client, true).await;
    let limits = RouteSettings::builder()
        .throttling_burst_limit(10)
        .throttling_rate_limit(5.0)
        .build();
    let err = client
        .create_stage()
        .api_id(&api.id)
        .stage_name("dev")
        .route_settings("sendmessage", limits.clone())
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_not_found_exception(), "{err:?}");
    assert_eq!(
        aws_sdk_apigatewayv2::error::ProvideErrorMetadata::message(&err),
        Some("Unable to find Route by key sendmessage within the provided RouteSettings")
    );
    create_stage(&client, &api, "dev").await;
    let err = client
        .update_stage()
        .api_id(&api.id)
        .stage_name("dev")
        .route_settings("sendmessage", limits.clone())
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_not_found_exception(), "{err:?}");
    add_route(&client, &api, "sendmessage").await.unwrap();
    client
        .update_stage()
        .api_id(&api.id)
        .stage_name("dev")
        .route_settings("sendmessage", limits)
        .send()
        .await
        .unwrap();
}

/// Execution logging makes a log group `API-Gateway-Execution-Logs_{api}/{stage}`
/// (aws-facts.md §11; on AWS at the first logged request), which the
/// stack's `down` must delete: the emulator makes it once a stage logs at
/// ERROR or INFO, and not for a stage that logs nothing.
#[tokio::test]
async fn a_stage_that_logs_execution_gets_its_execution_log_group() {
    use aws_sdk_apigatewayv2::types::LoggingLevel;
    let moto = Moto::start();
    let client = client(&moto).await;
    let logs = aws_sdk_cloudwatchlogs::Client::new(&moto.sdk_config().await);
    let api = chat_api(&client, true).await;
    let groups = || async {
        let listed = logs
            .describe_log_groups()
            .log_group_name_prefix("API-Gateway-Execution-Logs_")
            .send()
            .await
            .unwrap();
        let names: Vec<String> = listed
            .log_groups()
            .iter()
            .filter_map(|g| g.log_group_name().map(String::from))
            .collect();
        names
    };
    create_stage(&client, &api, "quiet").await;
    assert!(groups().await.is_empty(), "a stage that logs nothing makes none");
    let logging = RouteSettings::builder()
        .throttling_burst_limit(10)
        .throttling_rate_limit(5.0)
        .logging_level(LoggingLevel::Error)
        .build();
    client
        .create_stage()
        .api_id(&api.id)
        .stage_name("dev")
        .default_route_settings(logging.clone())
        .send()
        .await
        .unwrap();
    let expected = format!("API-Gateway-Execution-Logs_{}/dev", api.id);
    assert_eq!(groups().await, std::slice::from_ref(&expected));
    // Turned on later by UpdateStage: made then, and only once.
    client
        .update_stage()
        .api_id(&api.id)
        .stage_name("quiet")
        .default_route_settings(logging)
        .send()
        .await
        .unwrap();
    let mut all = groups().await;
    all.sort();
    let mut wanted = vec![expected, format!("API-Gateway-Execution-Logs_{}/quiet", api.id)];
    wanted.sort();
    assert_eq!(all, wanted);
}

#[tokio::test]
async fn delete_access_log_settings_turns_a_stages_access_log_off() {
    let moto = Moto::start();
    let client = client(&moto).await;
    let api = chat_api(&client, true).await;
    create_stage(&client, &api, "dev").await;
    let stage = || async {
        let got = client.get_stage().api_id(&api.id).stage_name("dev").send().await;
        got.unwrap()
    };
    client
        .update_stage()
        .api_id(&api.id)
        .stage_name("dev")
        .access_log_settings(
            aws_sdk_apigatewayv2::types::AccessLogSettings::builder()
                .destination_arn("arn:aws:logs:us-east-1:123456789012:log-group:/aws/apigateway/chat/dev")
                .format("$context.requestId")
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        stage().await.access_log_settings().and_then(|s| s.format()),
        Some("$context.requestId")
    );
    client
        .delete_access_log_settings()
        .api_id(&api.id)
        .stage_name("dev")
        .send()
        .await
        .unwrap();
    assert!(stage().await.access_log_settings().is_none());
}

#[tokio::test]
async fn get_metric_data_answers_percentiles_and_leaves_empty_periods_out() {
    use aws_sdk_cloudwatch::primitives::DateTime;
    use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricDatum, MetricStat, StandardUnit};
    let moto = Moto::start();
    let cloudwatch = aws_sdk_cloudwatch::Client::new(&moto.sdk_config().await);
    let dimensions = [("ApiId", "abc123"), ("Stage", "dev")]
        .map(|(name, value)| Dimension::builder().name(name).value(value).build());
    let now = std::time::SystemTime::now();
    // 1..=100 ms, given once as Values (50 of them twice, by Counts) and once one by one.
    let latency = MetricDatum::builder()
        .metric_name("IntegrationLatency")
        .set_dimensions(Some(dimensions.to_vec()))
        .set_values(Some((1..=100).map(f64::from).collect()))
        .unit(StandardUnit::Milliseconds)
        .timestamp(DateTime::from(now))
        .build();
    let connects = MetricDatum::builder()
        .metric_name("ConnectCount")
        .set_dimensions(Some(dimensions.to_vec()))
        .value(3.0)
        .unit(StandardUnit::Count)
        .timestamp(DateTime::from(now))
        .build();
    cloudwatch
        .put_metric_data()
        .namespace("AWS/ApiGateway")
        .metric_data(latency)
        .metric_data(connects.clone())
        .metric_data(connects)
        .send()
        .await
        .unwrap();

    let query = |id: &str, name: &str, stat: &str| {
        let metric = Metric::builder()
            .namespace("AWS/ApiGateway")
            .metric_name(name)
            .set_dimensions(Some(dimensions.to_vec()))
            .build();
        MetricDataQuery::builder()
            .id(id)
            .metric_stat(MetricStat::builder().metric(metric).period(3600).stat(stat).build())
            .build()
    };
    let answer = cloudwatch
        .get_metric_data()
        .start_time(DateTime::from(now - std::time::Duration::from_secs(1800)))
        .end_time(DateTime::from(now + std::time::Duration::from_secs(1800)))
        .metric_data_queries(query("p50", "IntegrationLatency", "p50"))
        .metric_data_queries(query("p99", "IntegrationLatency", "p99"))
        .metric_data_queries(query("connects", "ConnectCount", "Sum"))
        .metric_data_queries(query("none", "MessageCount", "p99"))
        .send()
        .await
        .unwrap();
    let values = |id: &str| {
        let result = answer
            .metric_data_results()
            .iter()
            .find(|r| r.id() == Some(id))
            .unwrap();
        result.values().to_vec()
    };
    assert_eq!(values("p50"), vec![50.0]);
    assert_eq!(values("p99"), vec![99.0]);
    assert_eq!(values("connects"), vec![6.0]);
    assert_eq!(
        values("none"),
        Vec::<f64>::new(),
        "a metric without data has no data point"
    );
}

/// The keep-alive route's route response, listed (moto stores it but has no
/// handler for the list).
#[tokio::test]
async fn get_route_responses_lists_a_routes_responses() {
    let moto = Moto::start();
    let client = client(&moto).await;
    let api = chat_api(&client, false).await;
    let route = client
        .create_route()
        .api_id(&api.id)
        .route_key("ping")
        .route_response_selection_expression("$default")
        .send()
        .await
        .unwrap();
    let route_id = route.route_id().unwrap();
    let none = client
        .get_route_responses()
        .api_id(&api.id)
        .route_id(route_id)
        .send()
        .await
        .unwrap();
    assert!(none.items().is_empty());
    client
        .create_route_response()
        .api_id(&api.id)
        .route_id(route_id)
        .route_response_key("$default")
        .send()
        .await
        .unwrap();
    let listed = client
        .get_route_responses()
        .api_id(&api.id)
        .route_id(route_id)
        .send()
        .await
        .unwrap();
    let [response] = listed.items() else {
        panic!("expected one route response: {listed:?}");
    };
    assert_eq!(response.route_response_key(), Some("$default"));
    let routes = client.get_routes().api_id(&api.id).send().await.unwrap();
    let ping = routes.items().iter().find(|r| r.route_key() == Some("ping")).unwrap();
    assert_eq!(ping.route_response_selection_expression(), Some("$default"));

    let missing = client
        .get_route_responses()
        .api_id(&api.id)
        .route_id("nosuchroute")
        .send()
        .await;
    assert!(missing.unwrap_err().into_service_error().is_not_found_exception());
}

#[tokio::test]
async fn a_domain_name_answers_its_regional_target_and_serves_one_type_of_api() {
    use aws_sdk_apigatewayv2::types::DomainNameConfiguration;
    let moto = Moto::start();
    let client = client(&moto).await;
    let websocket = chat_api(&client, true).await;
    create_stage(&client, &websocket, "dev").await;
    create_stage(&client, &websocket, "prod").await;
    let certificate = "arn:aws:acm:us-east-1:123456789012:certificate/00000000-0000-0000-0000-000000000000";
    let created = client
        .create_domain_name()
        .domain_name("chat.example.com")
        .domain_name_configurations(DomainNameConfiguration::builder().certificate_arn(certificate).build())
        .send()
        .await
        .unwrap();
    let configuration = &created.domain_name_configurations()[0];
    let target = configuration.api_gateway_domain_name().unwrap().to_string();
    assert!(
        target.starts_with("d-") && target.ends_with(".execute-api.us-east-1.amazonaws.com"),
        "{target}"
    );
    assert_eq!(configuration.hosted_zone_id(), Some("Z1UJRXOUMOOFQ8"));
    assert_eq!(configuration.endpoint_type().map(|e| e.as_str()), Some("REGIONAL"));
    assert_eq!(configuration.security_policy().map(|p| p.as_str()), Some("TLS_1_2"));
    assert_eq!(
        configuration.domain_name_status().map(|s| s.as_str()),
        Some("AVAILABLE")
    );

    let mapping = client
        .create_api_mapping()
        .domain_name("chat.example.com")
        .api_id(&websocket.id)
        .stage("dev")
        .send()
        .await
        .unwrap();
    // An HTTP API on the same domain name: refused, as on AWS.
    let http = client
        .create_api()
        .name("http")
        .protocol_type(ProtocolType::Http)
        .send()
        .await
        .unwrap();
    client
        .create_stage()
        .api_id(http.api_id().unwrap())
        .stage_name("$default")
        .send()
        .await
        .unwrap();
    let err = client
        .create_api_mapping()
        .domain_name("chat.example.com")
        .api_id(http.api_id().unwrap())
        .api_mapping_key("v1")
        .stage("$default")
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.into_service_error().meta().code(), Some("BadRequestException"));

    // The mapping moves to another stage in place; the certificate changes.
    let moved = client
        .update_api_mapping()
        .domain_name("chat.example.com")
        .api_mapping_id(mapping.api_mapping_id().unwrap())
        .api_id(&websocket.id)
        .stage("prod")
        .send()
        .await
        .unwrap();
    assert_eq!(moved.api_mapping_id(), mapping.api_mapping_id());
    assert_eq!(moved.stage(), Some("prod"));
    let other = "arn:aws:acm:us-east-1:123456789012:certificate/11111111-1111-1111-1111-111111111111";
    let updated = client
        .update_domain_name()
        .domain_name("chat.example.com")
        .domain_name_configurations(DomainNameConfiguration::builder().certificate_arn(other).build())
        .send()
        .await
        .unwrap();
    let configuration = &updated.domain_name_configurations()[0];
    assert_eq!(configuration.certificate_arn(), Some(other));
    assert_eq!(
        configuration.api_gateway_domain_name(),
        Some(target.as_str()),
        "the target stays"
    );

    // A domain name with a mapping is deleted with it.
    client
        .delete_domain_name()
        .domain_name("chat.example.com")
        .send()
        .await
        .unwrap();
    let left = client.get_domain_names().send().await.unwrap();
    assert!(left.items().is_empty(), "{left:?}");
}

#[tokio::test]
async fn a_requested_certificate_is_issued_once_its_validation_record_exists_and_cannot_go_while_in_use() {
    use aws_sdk_apigatewayv2::types::DomainNameConfiguration;
    use aws_sdk_route53::types::{Change, ChangeAction, ChangeBatch, ResourceRecord, ResourceRecordSet, RrType};
    let moto = Moto::start();
    let sdk = moto.sdk_config().await;
    let (acm, route53) = (aws_sdk_acm::Client::new(&sdk), aws_sdk_route53::Client::new(&sdk));
    let arn = acm
        .request_certificate()
        .domain_name("chat.example.com")
        .validation_method(aws_sdk_acm::types::ValidationMethod::Dns)
        .send()
        .await
        .unwrap()
        .certificate_arn()
        .unwrap()
        .to_string();
    let describe = || async {
        acm.describe_certificate()
            .certificate_arn(&arn)
            .send()
            .await
            .unwrap()
            .certificate()
            .unwrap()
            .clone()
    };
    let pending = describe().await;
    assert_eq!(pending.status().unwrap().as_str(), "PENDING_VALIDATION");
    let record = pending.domain_validation_options()[0]
        .resource_record()
        .unwrap()
        .clone();
    // Long past moto's own wait, still pending: no record yet.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(describe().await.status().unwrap().as_str(), "PENDING_VALIDATION");

    let zone = route53
        .create_hosted_zone()
        .name("example.com")
        .caller_reference("test")
        .send()
        .await
        .unwrap();
    let zone = zone.hosted_zone().unwrap().id().to_string();
    let set = ResourceRecordSet::builder()
        .name(record.name())
        .r#type(RrType::Cname)
        .ttl(300)
        .resource_records(ResourceRecord::builder().value(record.value()).build().unwrap())
        .build()
        .unwrap();
    let change = Change::builder()
        .action(ChangeAction::Upsert)
        .resource_record_set(set)
        .build()
        .unwrap();
    route53
        .change_resource_record_sets()
        .hosted_zone_id(&zone)
        .change_batch(ChangeBatch::builder().changes(change).build().unwrap())
        .send()
        .await
        .unwrap();
    // Issued a while (MOTO_ACM_VALIDATION_WAIT, 1 s here) after the record.
    assert_eq!(describe().await.status().unwrap().as_str(), "PENDING_VALIDATION");
    let started = std::time::Instant::now();
    while describe().await.status().unwrap().as_str() != "ISSUED" {
        assert!(started.elapsed().as_secs() < 10, "not issued");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }

    // In use by a domain name: not deleted until the domain name goes.
    let apigateway = client(&moto).await;
    apigateway
        .create_domain_name()
        .domain_name("chat.example.com")
        .domain_name_configurations(DomainNameConfiguration::builder().certificate_arn(&arn).build())
        .send()
        .await
        .unwrap();
    assert_eq!(describe().await.in_use_by().len(), 1);
    let err = acm.delete_certificate().certificate_arn(&arn).send().await.unwrap_err();
    assert_eq!(err.into_service_error().meta().code(), Some("ResourceInUseException"));
    apigateway
        .delete_domain_name()
        .domain_name("chat.example.com")
        .send()
        .await
        .unwrap();
    acm.delete_certificate().certificate_arn(&arn).send().await.unwrap();
}
