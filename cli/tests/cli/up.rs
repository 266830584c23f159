use std::collections::HashMap;

use chat_testkit::aws_behaviour::{Behaviours, Timings};
use chat_testkit::aws_proxy::Faults;
use serde_json::Value;

use crate::harness::{BINARY, Env, functions};

fn decode(document: &str) -> Value {
    let text = percent_encoding::percent_decode_str(document).decode_utf8().unwrap();
    serde_json::from_str(&text).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_up_creates_every_resource_as_specified() {
    let env = Env::start().await;
    let run = env.up(&[]).await;
    run.assert_ok();
    let api_id = env.api_id("chat").await.expect("an API named chat");
    assert!(
        run.stdout
            .contains(&format!("wss://{api_id}.execute-api.us-east-1.amazonaws.com/dev")),
        "{run:?}"
    );
    assert!(run.stdout.contains("/dev/@connections"));

    // Tables: keys, keys-only indexes, on-demand, TTL, tag.
    let dynamodb = env.dynamodb();
    let connections = dynamodb
        .describe_table()
        .table_name("chat-connections")
        .send()
        .await
        .unwrap();
    let table = connections.table.unwrap();
    assert_eq!(table.key_schema()[0].attribute_name(), "connection_id");
    let mut indexes: Vec<_> = table
        .global_secondary_indexes()
        .iter()
        .map(|i| {
            (
                i.index_name().unwrap().to_string(),
                i.key_schema()[0].attribute_name().to_string(),
            )
        })
        .collect();
    indexes.sort();
    assert_eq!(
        indexes,
        [("by-room".into(), "room".into()), ("by-user".into(), "user".into())]
    );
    assert_eq!(
        table.billing_mode_summary().unwrap().billing_mode().unwrap().as_str(),
        "PAY_PER_REQUEST"
    );
    let messages = dynamodb
        .describe_table()
        .table_name("chat-messages")
        .send()
        .await
        .unwrap()
        .table
        .unwrap();
    let keys: Vec<_> = messages
        .key_schema()
        .iter()
        .map(|k| k.attribute_name().to_string())
        .collect();
    assert_eq!(keys, ["conversation", "message_id"]);
    for name in ["chat-connections", "chat-messages"] {
        let ttl = dynamodb.describe_time_to_live().table_name(name).send().await.unwrap();
        let ttl = ttl.time_to_live_description.unwrap();
        assert_eq!(ttl.attribute_name(), Some("ttl"));
        assert_eq!(ttl.time_to_live_status().unwrap().as_str(), "ENABLED");
        let arn = format!("arn:aws:dynamodb:us-east-1:123456789012:table/{name}");
        let tags = dynamodb.list_tags_of_resource().resource_arn(arn).send().await.unwrap();
        assert!(
            tags.tags()
                .iter()
                .any(|t| t.key() == "chatctl:stack" && t.value() == "chat")
        );
    }

    // Roles: Lambda trust, least-privilege inline policy, tag.
    let iam = env.iam();
    for role in ["chat-handlers", "chat-authorizer"] {
        let got = iam.get_role().role_name(role).send().await.unwrap().role.unwrap();
        let trust = decode(got.assume_role_policy_document().unwrap());
        assert_eq!(trust["Statement"][0]["Principal"]["Service"], "lambda.amazonaws.com");
        assert!(
            got.tags()
                .iter()
                .any(|t| t.key() == "chatctl:stack" && t.value() == "chat")
        );
        let attached = iam.list_attached_role_policies().role_name(role).send().await.unwrap();
        assert!(attached.attached_policies().is_empty(), "no managed policies");
    }
    let policy = iam
        .get_role_policy()
        .role_name("chat-handlers")
        .policy_name("chatctl")
        .send()
        .await
        .unwrap();
    let policy = decode(policy.policy_document()).to_string();
    assert!(policy.contains("arn:aws:dynamodb:us-east-1:123456789012:table/chat-connections/index/*"));
    assert!(policy.contains(&format!(
        "arn:aws:execute-api:us-east-1:123456789012:{api_id}/*/POST/@connections/*"
    )));
    assert!(!policy.contains("\"*\""), "no wildcard resource: {policy}");
    let authorizer_policy = iam
        .get_role_policy()
        .role_name("chat-authorizer")
        .policy_name("chatctl")
        .send()
        .await
        .unwrap();
    let authorizer_policy = decode(authorizer_policy.policy_document()).to_string();
    assert!(!authorizer_policy.contains("dynamodb"));

    // The token secret: tagged, its value never in the environment, and the
    // authorizer's role may read that one secret only.
    let secret = env
        .secrets()
        .describe_secret()
        .secret_id("chatctl/chat/token")
        .send()
        .await
        .unwrap();
    assert!(
        secret
            .tags()
            .iter()
            .any(|t| t.key() == Some("chatctl:stack") && t.value() == Some("chat"))
    );
    assert!(
        authorizer_policy.contains(
            r#""Action":["secretsmanager:GetSecretValue"],"Effect":"Allow","Resource":["arn:aws:secretsmanager:us-east-1:123456789012:secret:chatctl/chat/token-??????"]"#
        ),
        "{authorizer_policy}"
    );
    let arn = secret.arn().unwrap();
    let suffix = arn.strip_prefix("arn:aws:secretsmanager:us-east-1:123456789012:secret:chatctl/chat/token-");
    assert_eq!(
        suffix.map(str::len),
        Some(6),
        "the policy's `-??????` names the secret made: {arn}"
    );
    let (_, value) = env.token_secret().await;
    assert!(value.len() >= 32);

    // Log groups with retention and the tag.
    let logs = env.logs();
    let groups = logs
        .describe_log_groups()
        .log_group_name_prefix("/aws/lambda/chat-")
        .send()
        .await
        .unwrap();
    assert_eq!(groups.log_groups().len(), 7);
    assert!(groups.log_groups().iter().all(|g| g.retention_in_days() == Some(14)));

    // Functions.
    let lambda = env.lambda();
    for function in functions() {
        let got = lambda
            .get_function()
            .function_name(format!("chat-{function}"))
            .send()
            .await
            .unwrap();
        let config = got.configuration().unwrap();
        assert_eq!(config.runtime().unwrap().as_str(), "provided.al2023");
        // One zip behind every function: the Handler tells its binary which to serve.
        assert_eq!(config.handler(), Some(function));
        assert_eq!(config.architectures()[0].as_str(), "x86_64");
        assert_eq!(config.memory_size(), Some(128));
        assert_eq!(config.timeout(), Some(10));
        let expected_role = if function == "authorizer" {
            "chat-authorizer"
        } else {
            "chat-handlers"
        };
        assert!(config.role().unwrap().ends_with(&format!("role/{expected_role}")));
        let env_vars = config.environment().unwrap().variables().unwrap();
        if function == "authorizer" {
            assert_eq!(env_vars["CHAT_AUTH_MODE"], "token");
            assert_eq!(env_vars["CHAT_TOKEN_SECRET_ID"], "chatctl/chat/token");
            assert!(
                env_vars.values().all(|v| v != &value),
                "the value is not in the environment"
            );
        } else {
            assert_eq!(env_vars["CHAT_CONNECTIONS_TABLE"], "chat-connections");
            assert_eq!(env_vars["CHAT_MESSAGES_TABLE"], "chat-messages");
            assert!(!env_vars.contains_key("CHAT_TOKEN_SECRET_ID"));
        }
        assert_eq!(got.tags().unwrap()["chatctl:stack"], "chat");
        // Release 1: version 1 of each, its alias `live`, which the API invokes.
        let alias = lambda
            .get_alias()
            .function_name(format!("chat-{function}"))
            .name("live")
            .send()
            .await
            .unwrap();
        assert_eq!(alias.function_version(), Some("1"));
        let policy = lambda
            .get_policy()
            .function_name(format!("chat-{function}"))
            .qualifier("live")
            .send()
            .await
            .unwrap();
        let policy: Value = serde_json::from_str(policy.policy().unwrap()).unwrap();
        let statements = policy["Statement"].as_array().unwrap();
        let statement = statements.iter().find(|s| s["Sid"] == "chatctl-invoke-live").unwrap();
        assert!(
            statement["Resource"].as_str().unwrap().ends_with(":live"),
            "{statement}"
        );
        assert_eq!(statement["Principal"]["Service"], "apigateway.amazonaws.com");
        let source = statement["Condition"]["ArnLike"]["AWS:SourceArn"].as_str().unwrap();
        assert!(
            source.starts_with(&format!("arn:aws:execute-api:us-east-1:123456789012:{api_id}/")),
            "{source}"
        );
    }

    // The API: routes, integrations, authorizer on $connect only, deployed stage.
    let apigw = env.apigateway();
    let api = apigw.get_api().api_id(&api_id).send().await.unwrap();
    assert_eq!(api.protocol_type().unwrap().as_str(), "WEBSOCKET");
    assert_eq!(api.route_selection_expression(), Some("$request.body.action"));
    let integrations = apigw.get_integrations().api_id(&api_id).send().await.unwrap();
    let (mocks, lambdas): (Vec<_>, Vec<_>) = integrations
        .items()
        .iter()
        .partition(|i| i.integration_type().unwrap().as_str() == "MOCK");
    let by_id: HashMap<String, String> = lambdas
        .iter()
        .map(|i| {
            assert_eq!(i.integration_type().unwrap().as_str(), "AWS_PROXY");
            (
                i.integration_id().unwrap().to_string(),
                i.integration_uri().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(by_id.len(), 6);
    // The keep-alive: a MOCK integration answering {"type":"pong"} on a two-way route `ping`.
    let [mock] = mocks.as_slice() else {
        panic!("one MOCK integration: {mocks:?}");
    };
    let mock_id = mock.integration_id().unwrap();
    assert_eq!(mock.request_templates().unwrap()["$default"], r#"{"statusCode": 200}"#);
    assert_eq!(mock.template_selection_expression(), Some("\\$default"));
    let responses = apigw
        .get_integration_responses()
        .api_id(&api_id)
        .integration_id(mock_id)
        .send()
        .await
        .unwrap();
    let [reply] = responses.items() else {
        panic!("one integration response: {responses:?}");
    };
    assert_eq!(reply.integration_response_key(), Some("$default"));
    assert_eq!(reply.response_templates().unwrap()["$default"], r#"{"type":"pong"}"#);
    let authorizers = apigw.get_authorizers().api_id(&api_id).send().await.unwrap();
    assert_eq!(authorizers.items().len(), 1);
    let authorizer = &authorizers.items()[0];
    assert_eq!(authorizer.authorizer_type().unwrap().as_str(), "REQUEST");
    assert!(
        authorizer
            .authorizer_uri()
            .unwrap()
            .contains("function:chat-authorizer:live/invocations")
    );
    let routes = apigw.get_routes().api_id(&api_id).send().await.unwrap();
    let mut keys: Vec<_> = routes
        .items()
        .iter()
        .map(|r| r.route_key().unwrap().to_string())
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "$connect",
            "$default",
            "$disconnect",
            "getmessages",
            "join",
            "ping",
            "sendmessage"
        ]
    );
    for route in routes.items() {
        let key = route.route_key().unwrap();
        if key == "ping" {
            assert_eq!(route.target(), Some(format!("integrations/{mock_id}").as_str()));
            assert_eq!(route.route_response_selection_expression(), Some("$default"));
            let responses = apigw
                .get_route_responses()
                .api_id(&api_id)
                .route_id(route.route_id().unwrap())
                .send()
                .await
                .unwrap();
            let keys: Vec<_> = responses.items().iter().map(|r| r.route_response_key()).collect();
            assert_eq!(keys, [Some("$default")], "two-way");
            continue;
        }
        let integration = route.target().unwrap().strip_prefix("integrations/").unwrap();
        let function = match key {
            "$connect" => "connect",
            "$disconnect" => "disconnect",
            "$default" => "default",
            other => other,
        };
        assert!(
            by_id[integration].contains(&format!("function:chat-{function}:live/invocations")),
            "{key}"
        );
        if key == "$connect" {
            assert_eq!(route.authorization_type().unwrap().as_str(), "CUSTOM");
            assert_eq!(route.authorizer_id(), authorizer.authorizer_id());
        } else {
            assert_eq!(route.authorization_type().map(|a| a.as_str()).unwrap_or("NONE"), "NONE");
        }
    }
    let stage = apigw
        .get_stage()
        .api_id(&api_id)
        .stage_name("dev")
        .send()
        .await
        .unwrap();
    assert_eq!(
        stage.tags().and_then(|t| t.get("chatctl:stack")).map(String::as_str),
        Some("chat"),
        "the stage is tagged"
    );
    let deployment = stage.deployment_id().expect("the stage serves a deployment");
    let deployments = apigw.get_deployments().api_id(&api_id).send().await.unwrap();
    assert!(
        deployments
            .items()
            .iter()
            .any(|d| d.deployment_id() == Some(deployment))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_up_makes_no_mutating_call_and_keeps_the_secret() {
    let env = Env::start().await;
    env.up(&[]).await.assert_ok();
    let before = env.token_secret().await;
    env.proxy.clear();
    let run = env.up(&[]).await;
    run.assert_ok();
    assert!(run.stdout.contains("No changes"), "{run:?}");
    assert_eq!(env.mutating_operations(), Vec::<String>::new());
    assert_eq!(env.token_secret().await, before);
    let run = env.up(&["--dry-run", "--exit-code"]).await;
    assert_eq!(run.code, 0, "nothing pending: {run:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_code_updates_only_the_functions_running_other_code_and_memory_only_configuration() {
    let env = Env::start().await;
    env.up(&[]).await.assert_ok();
    let first_build = std::fs::read(env.lambda_dir.path().join(BINARY).join("bootstrap.zip")).unwrap();

    // A rebuild: the seven functions run one binary, so each takes the new zip.
    env.change_code();
    env.proxy.clear();
    let run = env.up(&[]).await;
    run.assert_ok();
    assert!(run.stdout.contains("~ function chat-sendmessage (code "), "{run:?}");
    assert!(
        run.stdout.contains("~ release live (new version of chat-authorizer, "),
        "{run:?}"
    );
    // One upload of the zip (its PutObject is counted with the lock's, not
    // here), seven updates from it, then release 2.
    let mut expected = vec!["PublishVersion"; 7];
    expected.push("PutBucketLifecycleConfiguration");
    expected.extend(["UpdateAlias"; 7]);
    expected.extend(["UpdateFunctionCode"; 7]);
    assert_eq!(env.mutating_operations(), expected);
    let artifacts: Vec<String> = env
        .bucket_keys()
        .await
        .into_iter()
        .filter(|k| k.starts_with("artifacts/"))
        .collect();
    assert_eq!(artifacts.len(), 2, "one zip per build: {artifacts:?}");

    // One function left on other code (changed by hand, or by an `up`
    // interrupted midway): only it is updated.
    env.lambda()
        .update_function_code()
        .function_name("chat-sendmessage")
        .zip_file(aws_sdk_lambda::primitives::Blob::new(first_build))
        .send()
        .await
        .unwrap();
    env.proxy.clear();
    let run = env.up(&[]).await;
    run.assert_ok();
    assert!(run.stdout.contains("~ function chat-sendmessage (code "), "{run:?}");
    assert!(!run.stdout.contains("chat-join"), "{run:?}");
    assert_eq!(env.mutating_operations(), ["UpdateFunctionCode"]);

    // A function deployed when each had a binary of its own (Handler
    // "bootstrap"): its Handler is set to its name, so the binary knows it.
    env.lambda()
        .update_function_configuration()
        .function_name("chat-join")
        .handler("bootstrap")
        .send()
        .await
        .unwrap();
    env.proxy.clear();
    let run = env.up(&[]).await;
    run.assert_ok();
    assert!(run.stdout.contains("handler bootstrap → join"), "{run:?}");
    assert_eq!(env.mutating_operations(), ["UpdateFunctionConfiguration"]);

    env.write_config("memory = 256\n");
    env.proxy.clear();
    let run = env.up(&[]).await;
    run.assert_ok();
    assert!(run.stdout.contains("memory 128 → 256"), "{run:?}");
    let mut expected = vec!["PublishVersion"; 7];
    expected.extend(["UpdateAlias"; 7]);
    expected.extend(["UpdateFunctionConfiguration"; 7]);
    assert_eq!(env.mutating_operations(), expected, "no upload: the code is the same");
    let config = env
        .lambda()
        .get_function_configuration()
        .function_name("chat-join")
        .send()
        .await
        .unwrap();
    assert_eq!(config.memory_size(), Some(256));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_prints_the_plan_and_changes_nothing() {
    let env = Env::start_plain().await;
    // --exit-code: 3 while changes are pending, for CI to gate on.
    let run = env.up(&["--dry-run", "--exit-code"]).await;
    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stdout.contains("+ table chat-connections"), "{run:?}");
    let run = env.up(&["--exit-code"]).await;
    assert_eq!(run.code, 2, "--exit-code needs --dry-run: {run:?}");
    let run = env.up(&["--dry-run"]).await;
    run.assert_ok();
    assert!(run.stdout.contains("+ table chat-connections"), "{run:?}");
    assert!(run.stdout.contains("+ function chat-sendmessage"));
    assert!(run.stdout.contains("+ route $connect"));
    assert_eq!(env.mutating_operations(), Vec::<String>::new());
    assert!(env.api_id("chat").await.is_none());
    // The defaults (rooms of up to 10,000 at 128 MB, 10 s) are within
    // sendmessage's reach; rooms of 20,000 are not: said, with the memory
    // that would reach them.
    assert!(!run.stderr.contains("warning: a room"), "{run:?}");
    env.write_config("[limits]\nmax_connections = 20000\n");
    let run = env.up(&["--dry-run"]).await;
    assert!(
        run.stderr.contains("warning: a room may hold up to 20000 connections"),
        "{run:?}"
    );
    assert!(run.stderr.contains("memory = "), "{run:?}");
    env.write_config("memory = 256\n[limits]\nmax_connections = 20000\n");
    let run = env.up(&["--dry-run"]).await;
    assert!(!run.stderr.contains("warning: a room"), "{run:?}");
    env.write_config("");

    let json = env
        .chatctl(&[
            "up",
            "--dry-run",
            "--no-build",
            "--lambda-dir",
            &env.lambda_dir.path().to_string_lossy(),
            "--output",
            "json",
        ])
        .await;
    json.assert_ok();
    let report: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(report["dry_run"], true);
    assert!(
        report["plan"]["changes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["kind"] == "route" && c["action"] == "create")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_resource_with_our_name_is_reported_and_left_alone() {
    let env = Env::start().await;
    env.iam()
        .create_role()
        .role_name("chat-handlers")
        .assume_role_policy_document(r#"{"Version":"2012-10-17","Statement":[]}"#)
        .send()
        .await
        .unwrap();
    let run = env.up(&[]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr
            .contains("IAM role chat-handlers exists but was not created by chatctl"),
        "{run:?}"
    );
    assert_eq!(env.mutating_operations(), Vec::<String>::new());

    let plan = env.chatctl(&["down", "--dry-run"]).await;
    plan.assert_ok();
    assert!(
        plan.stdout
            .contains("  leave IAM role chat-handlers alone: it is not this stack's"),
        "{plan:?}"
    );
    let down = env.chatctl(&["down", "--yes"]).await;
    down.assert_ok();
    assert!(down.stderr.contains("left IAM role chat-handlers alone"), "{down:?}");
    assert!(env.iam().get_role().role_name("chat-handlers").send().await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_and_down_converge_through_throttling_and_server_errors() {
    let faults = Faults {
        throttle_ratio: 0.15,
        server_error_ratio: 0.1,
        seed: 7,
    };
    let env = Env::start().await;
    env.proxy.set_faults(Some(faults));
    env.up(&[]).await.assert_ok();
    assert!(!env.proxy.faulted_calls().is_empty(), "faults were injected");
    let status = env.chatctl(&["status"]).await;
    assert_eq!(status.code, 0, "{status:?}");
    env.chatctl(&["down", "--yes"]).await.assert_ok();
    env.proxy.set_faults(None);
    let status = env.chatctl(&["status"]).await;
    assert_eq!(status.code, 3);
    assert!(!status.stdout.contains(" present "), "{status:?}");
}

/// Credentials without a permission chatctl needs: a clear error naming the
/// call and pointing to the permissions list, no retry storm, and a later
/// `up` with the permission finishes the job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_denied_stops_with_a_pointer_to_the_permissions() {
    let env = Env::start().await;
    env.proxy.deny(&["CreateRole"]);
    let run = env.up(&[]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("chat-handlers") || run.stderr.contains("chat-authorizer"),
        "{run:?}"
    );
    assert!(run.stderr.contains("AccessDenied"), "{run:?}");
    assert!(
        run.stderr.contains("not authorized to perform: iam:CreateRole"),
        "{run:?}"
    );
    assert!(
        run.stderr
            .contains("see the README for the IAM permissions chatctl needs"),
        "{run:?}"
    );
    assert!(!run.stderr.contains("panicked"), "{run:?}");
    let attempts = env.proxy.calls().iter().filter(|c| c.operation == "CreateRole").count();
    assert!(
        attempts <= 2,
        "access denied is not retried: {attempts} CreateRole calls"
    );

    env.proxy.deny(&["GetFunction", "ListFunctions"]);
    let status = env.chatctl(&["status"]).await;
    assert_eq!(status.code, 1, "{status:?}");
    assert!(
        status.stderr.contains("see the README for the IAM permissions"),
        "{status:?}"
    );

    env.proxy.deny(&[]);
    env.up(&[]).await.assert_ok();
    assert_eq!(env.chatctl(&["status"]).await.code, 0);
}

/// An HTTP API of ours under the stack's API name cannot be turned into a
/// WebSocket API: `up` replaces it, after confirmation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_of_ours_with_the_wrong_protocol_is_replaced() {
    use aws_sdk_apigatewayv2::types::ProtocolType;
    let env = Env::start().await;
    let http = env
        .apigateway()
        .create_api()
        .name("chat")
        .protocol_type(ProtocolType::Http)
        .tags("chatctl:stack", "chat")
        .send()
        .await
        .unwrap();
    let http_id = http.api_id().unwrap().to_string();

    let refused = env.up(&[]).await;
    assert_ne!(refused.code, 0, "{refused:?}");
    assert!(
        refused.stdout.contains("protocol is HTTP"),
        "the plan says why: {refused:?}"
    );
    assert!(refused.stderr.contains("--yes"), "{refused:?}");

    let run = env.up(&["--yes"]).await;
    run.assert_ok();
    assert!(run.stderr.contains("api chat: replaced"), "{run:?}");
    let apis = env.apigateway().get_apis().send().await.unwrap();
    let apis: Vec<_> = apis.items().iter().filter(|a| a.name() == Some("chat")).collect();
    assert_eq!(apis.len(), 1, "{apis:?}");
    assert_ne!(apis[0].api_id(), Some(http_id.as_str()), "the HTTP API is gone");
    assert_eq!(apis[0].protocol_type(), Some(&ProtocolType::Websocket));
    let status = env.chatctl(&["status"]).await;
    assert_eq!(status.code, 0, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replacement_without_a_terminal_is_refused_with_a_pointer_to_yes() {
    let env = Env::start().await;
    env.up(&[]).await.assert_ok();
    // Our table, with a key schema chatctl did not make: only a replacement fixes it.
    let dynamodb = env.dynamodb();
    dynamodb
        .delete_table()
        .table_name("chat-messages")
        .send()
        .await
        .unwrap();
    dynamodb
        .create_table()
        .table_name("chat-messages")
        .billing_mode(aws_sdk_dynamodb::types::BillingMode::PayPerRequest)
        .key_schema(
            aws_sdk_dynamodb::types::KeySchemaElement::builder()
                .attribute_name("id")
                .key_type(aws_sdk_dynamodb::types::KeyType::Hash)
                .build()
                .unwrap(),
        )
        .attribute_definitions(
            aws_sdk_dynamodb::types::AttributeDefinition::builder()
                .attribute_name("id")
                .attribute_type(aws_sdk_dynamodb::types::ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .tags(
            aws_sdk_dynamodb::types::Tag::builder()
                .key("chatctl:stack")
                .value("chat")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    env.proxy.clear();
    let run = env.up(&[]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("-/+ table chat-messages"), "{run:?}");
    assert!(run.stderr.contains("--yes"), "{run:?}");
    assert_eq!(env.mutating_operations(), Vec::<String>::new());

    env.up(&["--yes"]).await.assert_ok();
    let table = dynamodb
        .describe_table()
        .table_name("chat-messages")
        .send()
        .await
        .unwrap()
        .table
        .unwrap();
    assert_eq!(table.key_schema()[0].attribute_name(), "conversation");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let env = Env::start_plain().await;
    env.write_config("stack = \"chat\"\nmemroy = 512\n");
    let run = env.up(&[]).await;
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("chatctl.toml") && run.stderr.contains("line 2"),
        "{run:?}"
    );
    assert!(!run.stderr.contains("panicked"));

    env.write_config("log_retention_days = 10\n");
    let run = env.chatctl(&["status"]).await;
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("log_retention_days must be one of"), "{run:?}");

    std::fs::remove_file(env.workdir.path().join("chatctl.toml")).unwrap();
    let run = env.chatctl(&["up", "--stack", "bad_name!"]).await;
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("invalid stack name"), "{run:?}");

    // Against AWS (an endpoint not on this machine, never reached), a region and credentials are needed.
    let remote = "https://aws.invalid";
    let run = env.chatctl_without(&["status"], remote, &["AWS_REGION"]).await;
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("no AWS region: pass --region"), "{run:?}");
    let run = env
        .chatctl_without(&["status"], remote, &["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"])
        .await;
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("no AWS credentials found"), "{run:?}");
    assert!(
        !run.stderr.contains("panicked") && !run.stderr.contains("Error {"),
        "{run:?}"
    );

    let run = env.chatctl(&["up", "--no-such-flag"]).await;
    assert_eq!(run.code, 2, "usage errors exit 2: {run:?}");

    let run = env.chatctl(&["up", "--no-build", "--lambda-dir", "/nonexistent"]).await;
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("/nonexistent/chat-functions/bootstrap.zip"),
        "{run:?}"
    );
    assert_eq!(env.mutating_operations(), Vec::<String>::new());
}

/// `up` run anywhere inside the repository builds the functions itself, as
/// a step of its own with its time (scripts/test has built the zip, so cargo
/// usually finds it up to date).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_inside_the_repository_builds_the_functions_as_a_step_of_its_own() {
    let env = Env::start_plain().await;
    let repository = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let run = env
        .chatctl_in(&repository.join("handlers/chat-core/src"), &["up", "--dry-run"])
        .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr
            .lines()
            .any(|line| line.starts_with("functions up to date (") || line.starts_with("built ")),
        "{}",
        run.stderr
    );
    assert!(run.stdout.contains("+ function chat-join"), "{}", run.stdout);
}

/// A build that fails stops `up` before it changes anything, with cargo's
/// error and the command that shows it again. The repository here is a
/// stand-in whose functions' binary does not compile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_build_shows_cargos_error_and_the_command_to_reproduce_it() {
    let env = Env::start_plain().await;
    let repository = tempfile::tempdir().unwrap();
    let write = |path: &str, text: &str| {
        let path = repository.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write(
        "Cargo.toml",
        "[workspace]\nresolver = \"3\"\nmembers = [\"handlers/*\"]\n",
    );
    write(
        "handlers/chat-core/Cargo.toml",
        "[package]\nname = \"chat-core\"\nversion = \"0.1.0\"\nedition = \"2024\"\n",
    );
    write("handlers/chat-core/src/lib.rs", "");
    write(
        "handlers/chat-functions/Cargo.toml",
        "[package]\nname = \"chat-functions\"\nversion = \"0.1.0\"\nedition = \"2024\"\n",
    );
    write(
        "handlers/chat-functions/src/main.rs",
        "fn main() {\n    let count: u32 = \"seven\";\n}\n",
    );
    let run = env.chatctl_in(repository.path(), &["up", "--yes"]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("building the functions failed"), "{}", run.stderr);
    assert!(
        run.stderr.contains("mismatched types"),
        "cargo's own error: {}",
        run.stderr
    );
    assert!(
        run.stderr.contains(&format!(
            "to see it again: (cd {} && cargo lambda build --release --output-format zip)",
            repository.path().display()
        )),
        "{}",
        run.stderr
    );
    assert_eq!(env.mutating_operations(), Vec::<String>::new());
}

/// `up --dry-run --out FILE` saves the plan; `up --plan FILE` applies
/// exactly it, and refuses, changing nothing, once what it was computed on
/// changed: the live stack, the code, the stack it was made for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_plan_applies_exactly_or_not_at_all() {
    let env = Env::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    let first = file("first.json");

    // Issue 21: on a fresh stack every step is a `+ create`; the values it
    // reviewed (token auth, 128 MB) are pinned, so settings edited after
    // `--out` are refused, not silently created.
    env.write_config("auth = \"token\"\nmemory = 128\n");
    let run = env.up(&["--dry-run", "--out", &first]).await;
    run.assert_ok();
    let saved = std::fs::read_to_string(&first).unwrap();
    assert!(
        saved.contains("\"memory_mb\": 128"),
        "the plan holds its values: {saved}"
    );
    assert!(
        saved.contains("\"secret\": {\n        \"name\": \"chatctl/chat/token\"\n      }"),
        "the secret is a resource of the plan, its value made when applied: {saved}"
    );
    env.write_config("auth = \"none\"\nmemory = 512\n");
    let run = env.up(&["--plan", &first]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains(&format!(
            "cannot apply the plan in {first}: the settings (chatctl.toml or options) changed since it was made: \
             functions.chat-authorizer.env.CHAT_AUTH_MODE \"token\" → \"none\""
        )),
        "{run:?}"
    );
    assert!(run.stderr.contains("memory_mb 128 → 512"), "{run:?}");
    assert!(run.stderr.contains("Nothing was changed"), "{run:?}");
    assert_eq!(env.mutating_operations(), Vec::<String>::new());
    assert_eq!(env.api_id("chat").await, None);
    env.write_config("");

    let run = env.up(&["--dry-run", "--out", &first]).await;
    run.assert_ok();
    assert!(
        run.stderr
            .contains(&format!("apply exactly it with `chatctl up --plan {first}`")),
        "{run:?}"
    );
    assert_eq!(env.mutating_operations(), Vec::<String>::new());
    let run = env.up(&["--plan", &first]).await;
    run.assert_ok();
    assert!(run.stdout.contains("Stack chat is up."), "{run:?}");
    assert_eq!(
        env.up(&["--dry-run", "--exit-code"]).await.code,
        0,
        "the plan did it all"
    );

    // The same plan again: the live stack is no longer the one it was made on.
    env.proxy.clear();
    let run = env.up(&["--plan", &first]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains(&format!(
            "cannot apply the plan in {first}: the live stack changed since it was made"
        )),
        "{run:?}"
    );
    assert_eq!(env.mutating_operations(), Vec::<String>::new());

    // A change out of band after the plan was saved.
    let memory = file("memory.json");
    env.write_config("memory = 256\n");
    env.up(&["--dry-run", "--out", &memory]).await.assert_ok();
    env.lambda()
        .update_function_configuration()
        .function_name("chat-join")
        .timeout(20)
        .send()
        .await
        .unwrap();
    env.proxy.clear();
    let run = env.up(&["--plan", &memory]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("the live stack changed since it was made"),
        "{run:?}"
    );
    assert!(run.stderr.contains("Nothing was changed"), "{run:?}");
    assert_eq!(env.mutating_operations(), Vec::<String>::new());

    // New code after the plan was saved; then another stack.
    let code = file("code.json");
    env.up(&["--dry-run", "--out", &code]).await.assert_ok();
    env.change_code();
    let run = env.up(&["--plan", &code]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr
            .contains("the functions' code changed since (the zip of authorizer"),
        "{run:?}"
    );
    let run = env.up(&["--plan", &code, "--stack", "other"]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("it was made for stack chat, not other"), "{run:?}");
    assert_eq!(env.mutating_operations(), Vec::<String>::new());

    // Not a plan at all, and flags that do not go together.
    std::fs::write(dir.path().join("junk.json"), "{}").unwrap();
    let run = env.up(&["--plan", &file("junk.json")]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr
            .contains("is not a plan saved by `chatctl up --dry-run --out FILE`"),
        "{run:?}"
    );
    assert_eq!(
        env.up(&["--out", &file("x.json")]).await.code,
        2,
        "--out needs --dry-run"
    );
    assert_eq!(env.up(&["--plan", &code, "--dry-run"]).await.code, 2);
}

/// A role whose inline policy was narrowed by hand: the plan names the
/// grants `up` puts back, and `up` rewrites only that policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_narrowed_role_policy_is_shown_grant_by_grant_and_restored() {
    let env = Env::start().await;
    env.up(&[]).await.assert_ok();
    let got = env
        .iam()
        .get_role_policy()
        .role_name("chat-handlers")
        .policy_name("chatctl")
        .send()
        .await
        .unwrap();
    let mut policy = decode(got.policy_document());
    for statement in policy["Statement"].as_array_mut().unwrap() {
        if let Some(actions) = statement["Action"].as_array_mut() {
            actions.retain(|a| a != "dynamodb:BatchGetItem");
        }
    }
    env.iam()
        .put_role_policy()
        .role_name("chat-handlers")
        .policy_name("chatctl")
        .policy_document(policy.to_string())
        .send()
        .await
        .unwrap();
    env.proxy.clear();
    let run = env.up(&[]).await;
    run.assert_ok();
    assert!(
        run.stdout.contains(
            "~ role chat-handlers (inline policy: + Allow dynamodb:BatchGetItem on table/chat-connections, table/chat-connections/index/*, table/chat-messages)"
        ),
        "{run:?}"
    );
    assert_eq!(env.mutating_operations(), ["PutRolePolicy"]);
    assert!(env.up(&[]).await.stdout.contains("No changes"));
}

/// Tags in chatctl.toml reach a live stack in place: `status` reports the
/// drift, the plan names each tag, `up` tags and untags every resource
/// without replacing anything, and the next `up` changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_change_in_place_and_status_reports_their_drift() {
    let env = Env::start().await;
    env.write_config("[tags]\nowner = \"web\"\ncostcentre = \"42\"\n");
    env.up(&[]).await.assert_ok();

    env.write_config("[tags]\nowner = \"chat\"\n");
    let status = env.chatctl(&["status", "--output", "json"]).await;
    assert_eq!(status.code, 3, "{status:?}");
    let report: Value = serde_json::from_str(&status.stdout).unwrap();
    let drifted: Vec<&Value> = report["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["state"] == "drifted")
        .collect();
    // 2 tables, 2 roles, the secret, the alarms' topic and 6 alarms, the bucket, 7 log
    // groups, 7 functions, the API and its stage.
    assert_eq!(drifted.len(), 29, "{drifted:#?}");
    assert!(
        drifted
            .iter()
            .all(|r| r["details"][0] == "tags + owner=chat, - costcentre"),
        "{drifted:#?}"
    );

    env.proxy.clear();
    let run = env.up(&[]).await;
    run.assert_ok();
    assert!(
        run.stdout
            .contains("~ table chat-connections (tags + owner=chat, - costcentre)"),
        "{run:?}"
    );
    assert!(
        run.stdout.contains("~ stage dev (tags + owner=chat, - costcentre)"),
        "{run:?}"
    );
    let mut operations = env.mutating_operations();
    operations.dedup();
    // S3 replaces a bucket's whole tag set: one PutBucketTagging.
    assert_eq!(
        operations,
        [
            "PutBucketTagging",
            "TagResource",
            "TagRole",
            "UntagResource",
            "UntagRole"
        ]
    );
    // A table takes one tag write at a time (aws-facts.md §11): the layer
    // refused the Tag that came right after the Untag, and `up` waited its turn.
    assert!(
        env.proxy
            .calls()
            .iter()
            .any(|c| c.service == "dynamodb" && c.operation == "TagResource" && c.faulted),
        "{:?}",
        env.proxy.calls()
    );

    let tags = env
        .lambda()
        .list_tags()
        .resource(format!(
            "arn:aws:lambda:{}:{}:function:chat-join",
            chat_testkit::moto::REGION,
            chat_testkit::moto::ACCOUNT_ID
        ))
        .send()
        .await
        .unwrap();
    let tags = tags.tags().unwrap();
    assert_eq!(tags.get("owner").map(String::as_str), Some("chat"));
    assert!(!tags.contains_key("costcentre"));
    assert_eq!(tags.get("chatctl:stack").map(String::as_str), Some("chat"));

    let again = env.up(&["--dry-run", "--exit-code"]).await;
    assert_eq!(again.code, 0, "{again:?}");
    assert_eq!(env.chatctl(&["status"]).await.code, 0);
}

/// An index missing from a live table is added in place (UpdateTable), and
/// the table keeps its items; the behaviour layer keeps the table UPDATING
/// while the index is built, and `up` waits for that, then the index
/// backfills for minutes on a real table while the table reads ACTIVE
/// (aws-facts.md §11): `up` says so and does not wait, `status` reports it,
/// and it is no change to make.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_index_is_added_in_place_and_the_items_stay() {
    use aws_sdk_dynamodb::types::{AttributeValue, DeleteGlobalSecondaryIndexAction, GlobalSecondaryIndexUpdate};
    let mut behaviours = Behaviours::all(Timings::compressed());
    behaviours.timings.index_backfill = std::time::Duration::from_secs(20);
    let env = Env::start_with(behaviours).await;
    env.up(&[]).await.assert_ok();
    let dynamodb = env.dynamodb();
    dynamodb
        .put_item()
        .table_name("chat-messages")
        .item("conversation", AttributeValue::S("room#lobby".into()))
        .item("message_id", AttributeValue::S("01J".into()))
        .send()
        .await
        .unwrap();
    dynamodb
        .update_table()
        .table_name("chat-connections")
        .global_secondary_index_updates(
            GlobalSecondaryIndexUpdate::builder()
                .delete(
                    DeleteGlobalSecondaryIndexAction::builder()
                        .index_name("by-user")
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    // The layer keeps the table UPDATING a while: wait until it takes changes.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;

    let plan = env.up(&["--dry-run", "--exit-code"]).await;
    assert_eq!(plan.code, 3, "{plan:?}");
    assert!(
        plan.stdout
            .contains("~ table chat-connections (+ index by-user on user)"),
        "{plan:?}"
    );
    assert!(!plan.stdout.contains("replace"), "{plan:?}");

    env.proxy.clear();
    let started = std::time::Instant::now();
    let run = env.up(&[]).await;
    run.assert_ok();
    assert!(started.elapsed() < std::time::Duration::from_secs(15), "{run:?}");
    assert!(run.stderr.contains("index by-user added, now backfilling"), "{run:?}");
    assert_eq!(env.mutating_operations(), ["UpdateTable"]);
    let (code, table) = env.status_of("chat-connections").await;
    assert_eq!(code, 3, "{table}");
    assert_eq!(table["state"], "backfilling", "{table}");
    assert_eq!(
        env.up(&["--dry-run", "--exit-code"]).await.code,
        0,
        "not a change to make"
    );
    let table = dynamodb
        .describe_table()
        .table_name("chat-connections")
        .send()
        .await
        .unwrap();
    let indexes: Vec<&str> = table
        .table()
        .unwrap()
        .global_secondary_indexes()
        .iter()
        .filter_map(|i| i.index_name())
        .collect();
    assert!(
        indexes.contains(&"by-user") && indexes.contains(&"by-room"),
        "{indexes:?}"
    );
    let kept = dynamodb
        .get_item()
        .table_name("chat-messages")
        .key("conversation", AttributeValue::S("room#lobby".into()))
        .key("message_id", AttributeValue::S("01J".into()))
        .send()
        .await
        .unwrap();
    assert!(kept.item().is_some(), "the other table was not touched");
    assert_eq!(env.up(&["--dry-run", "--exit-code"]).await.code, 0);
}

/// `[stage_settings]` reaches the stage: throttling (always both values),
/// per-route throttling, detailed metrics; the plan names each change,
/// `status` reports settings changed by hand, and a route dropped from the
/// file loses its own settings (DeleteRouteSettings).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stage_settings_are_applied_shown_checked_and_removed() {
    let env = Env::start().await;
    env.write_config(
        "[stage_settings]\nthrottling_burst = 200\nthrottling_rate = 100\ndetailed_metrics = true\n\n\
         [stage_settings.routes.sendmessage]\nthrottling_burst = 20\nthrottling_rate = 10\n",
    );
    env.up(&[]).await.assert_ok();
    let api_id = env.api_id("chat").await.unwrap();
    let stage = || async {
        env.apigateway()
            .get_stage()
            .api_id(&api_id)
            .stage_name("dev")
            .send()
            .await
            .unwrap()
    };
    let got = stage().await;
    let default = got.default_route_settings().unwrap();
    assert_eq!(
        (default.throttling_burst_limit(), default.throttling_rate_limit()),
        (Some(200), Some(100.0))
    );
    assert_eq!(default.detailed_metrics_enabled(), Some(true));
    let send = &got.route_settings().unwrap()["sendmessage"];
    assert_eq!(
        (send.throttling_burst_limit(), send.throttling_rate_limit()),
        (Some(20), Some(10.0))
    );
    assert_eq!(env.chatctl(&["status"]).await.code, 0);

    // Changed by hand: status reports it, up puts it back.
    env.apigateway()
        .update_stage()
        .api_id(&api_id)
        .stage_name("dev")
        .default_route_settings(
            aws_sdk_apigatewayv2::types::RouteSettings::builder()
                .throttling_burst_limit(1)
                .throttling_rate_limit(1.0)
                .detailed_metrics_enabled(true)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let status = env.chatctl(&["status"]).await;
    assert_eq!(status.code, 3, "{status:?}");
    assert!(
        status.stdout.contains("throttling 1 burst, 1/s → 200 burst, 100/s"),
        "{status:?}"
    );

    // The route's own settings dropped from the file, the default changed.
    env.write_config("[stage_settings]\nthrottling_burst = 300\nthrottling_rate = 150\n");
    env.proxy.clear();
    let run = env.up(&[]).await;
    run.assert_ok();
    assert!(run.stdout.contains("~ stage dev ("), "{run:?}");
    assert!(run.stdout.contains("- throttling of sendmessage"), "{run:?}");
    assert!(run.stdout.contains("detailed metrics off"), "{run:?}");
    assert_eq!(env.mutating_operations(), ["DeleteRouteSettings", "UpdateStage"]);
    let got = stage().await;
    assert_eq!(
        got.default_route_settings().unwrap().throttling_burst_limit(),
        Some(300)
    );
    assert!(got.route_settings().is_none_or(|r| r.is_empty()), "{got:?}");
    assert_eq!(env.up(&["--dry-run", "--exit-code"]).await.code, 0);

    // Bad settings are refused before any call.
    env.write_config("[stage_settings.routes.sendmessage]\nthrottling_burst = 5\n");
    let run = env.up(&["--dry-run"]).await;
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("give both throttling_burst and throttling_rate"),
        "{run:?}"
    );
    env.write_config("[stage_settings.routes.nosuchroute]\nthrottling_burst = 5\nthrottling_rate = 1\n");
    let run = env.up(&["--dry-run"]).await;
    assert!(run.stderr.contains("the stack has no route \"nosuchroute\""), "{run:?}");
    env.write_config("[stage_settings]\nthrottling_rate = 0\n");
    assert!(env.up(&["--dry-run"]).await.stderr.contains("must be above 0"));
}

/// `up --smoke` checks the stack once it is up, and on an unchanged stack
/// too. The emulator's stack has no reachable WebSocket endpoint, so the
/// check fails, clearly:
/// exit 1, the step and the URL named, and one JSON document with the
/// smoke report in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_smoke_runs_the_check_and_fails_clearly_where_nothing_answers() {
    let env = Env::start().await;
    let run = env.up(&["--smoke"]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("Stack chat is up."), "{run:?}");
    assert!(run.stdout.contains("Smoke test of wss://"), "{run:?}");
    // No route to the stack's wss:// URL here (cannot reach it, or refused
    // where a network reaches AWS): either way the connect step fails.
    assert!(run.stderr.contains("error: smoke test failed at connect: "), "{run:?}");

    let again = env.up(&["--smoke", "--output", "json"]).await;
    assert_eq!(again.code, 1, "{again:?}");
    let report: Value = serde_json::from_str(&again.stdout).expect("one JSON document");
    assert_eq!(report["smoke"]["passed"], false);
    assert!(report["smoke"]["error"].as_str().unwrap().starts_with("connect: "));
    assert!(
        report["outputs"]["websocket_url"]
            .as_str()
            .unwrap()
            .starts_with("wss://")
    );
    assert_eq!(
        env.up(&["--smoke", "--dry-run"]).await.code,
        2,
        "nothing to check in a dry run"
    );
}

/// Execution logging in an account without API Gateway's CloudWatch Logs
/// role: `up` stops with what to do, and changes no account-wide setting;
/// with logging off again the next `up` converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logging_without_the_accounts_role_says_how_to_set_it() {
    let env = Env::start().await;
    env.up(&[]).await.assert_ok();
    env.write_config("[stage_settings]\nlogging_level = \"error\"\n");
    let run = env.up(&[]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("it has no CloudWatch Logs role"), "{run:?}");
    assert!(run.stderr.contains("aws apigateway update-account"), "{run:?}");
    assert!(
        run.stderr
            .contains("CloudWatch Logs role ARN must be set in account settings"),
        "AWS's own words: {run:?}"
    );
    assert!(
        !env.mutating_operations().iter().any(|op| op == "UpdateAccount"),
        "never an account-wide change"
    );
    // Access logs need the same role, and say the same.
    env.write_config("[stage_settings]\naccess_logs = true\n");
    let run = env.up(&[]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("it has no CloudWatch Logs role"), "{run:?}");
    env.write_config("[stage_settings]\nlogging_level = \"off\"\n");
    env.up(&[]).await.assert_ok();
    assert_eq!(env.up(&["--dry-run", "--exit-code"]).await.code, 0);
}

/// `access_logs = true`: a log group of the stack's (tagged, with the
/// configured retention) made before the stage that writes to it, the stage
/// pointed at it with a JSON format holding `$context.requestId`; off again,
/// the stage stops writing (DeleteAccessLogSettings) and the group stays
/// until `down`, which takes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_logs_get_a_log_group_of_the_stacks_that_down_removes() {
    let behaviours = Behaviours {
        no_logging_role: false,
        ..Behaviours::all(Timings::compressed())
    };
    let env = Env::start_with(behaviours).await;
    env.write_config("log_retention_days = 7\n\n[stage_settings]\naccess_logs = true\n");
    let run = env.up(&[]).await;
    run.assert_ok();
    assert!(run.stdout.contains("+ log group /aws/apigateway/chat/dev"), "{run:?}");
    let operations = env.mutating_operations();
    let last_group = operations.iter().rposition(|op| op == "CreateLogGroup").unwrap();
    let stage_made = operations.iter().position(|op| op == "CreateStage").unwrap();
    assert!(
        last_group < stage_made,
        "the group exists before the stage names it: {operations:?}"
    );

    let api_id = env.api_id("chat").await.unwrap();
    let stage = || async {
        env.apigateway()
            .get_stage()
            .api_id(&api_id)
            .stage_name("dev")
            .send()
            .await
            .unwrap()
    };
    let got = stage().await;
    let settings = got.access_log_settings().expect("the stage writes an access log");
    assert_eq!(
        settings.destination_arn(),
        Some("arn:aws:logs:us-east-1:123456789012:log-group:/aws/apigateway/chat/dev")
    );
    let format: serde_json::Value = serde_json::from_str(settings.format().unwrap()).unwrap();
    assert_eq!(format["requestId"], "$context.requestId");
    assert_eq!(format["routeKey"], "$context.routeKey");
    let groups = env
        .logs()
        .describe_log_groups()
        .log_group_name_prefix("/aws/apigateway/chat/dev")
        .send()
        .await
        .unwrap();
    let group = &groups.log_groups()[0];
    assert_eq!(group.retention_in_days(), Some(7));
    let tags = env
        .logs()
        .list_tags_for_resource()
        .resource_arn(group.arn().unwrap().trim_end_matches(":*"))
        .send()
        .await
        .unwrap();
    assert_eq!(tags.tags().unwrap()["chatctl:stack"], "chat");
    assert_eq!(env.chatctl(&["status"]).await.code, 0);
    assert_eq!(env.up(&["--dry-run", "--exit-code"]).await.code, 0);

    // Changed by hand: status reports it.
    env.apigateway()
        .update_stage()
        .api_id(&api_id)
        .stage_name("dev")
        .access_log_settings(
            aws_sdk_apigatewayv2::types::AccessLogSettings::builder()
                .destination_arn("arn:aws:logs:us-east-1:123456789012:log-group:elsewhere")
                .format("$context.requestId")
                .build(),
        )
        .send()
        .await
        .unwrap();
    let status = env.chatctl(&["status"]).await;
    assert_eq!(status.code, 3, "{status:?}");
    assert!(status.stdout.contains("access logs on"), "{status:?}");

    // Off: one call; the group and its lines stay.
    env.write_config("log_retention_days = 7\n");
    env.proxy.clear();
    let run = env.up(&[]).await;
    run.assert_ok();
    assert!(run.stdout.contains("access logs off"), "{run:?}");
    assert_eq!(env.mutating_operations(), ["DeleteAccessLogSettings"]);
    assert!(stage().await.access_log_settings().is_none());
    assert_eq!(env.up(&["--dry-run", "--exit-code"]).await.code, 0);

    env.chatctl(&["down", "--yes"]).await.assert_ok();
    crate::down::assert_nothing_left(&env).await;
}

/// With a logging level set, API Gateway makes the stage's execution log
/// group itself (untagged, never expiring; aws-facts.md §11): `down` deletes
/// it with the stack, and only it: another API's stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_deletes_the_execution_log_group_api_gateway_made_and_no_other() {
    let behaviours = Behaviours {
        no_logging_role: false,
        ..Behaviours::all(Timings::compressed())
    };
    let env = Env::start_with(behaviours).await;
    env.write_config("[stage_settings]\nlogging_level = \"error\"\n");
    env.up(&[]).await.assert_ok();
    let api_id = env.api_id("chat").await.unwrap();
    let ours = format!("API-Gateway-Execution-Logs_{api_id}/dev");
    let other = "API-Gateway-Execution-Logs_other1/dev";
    env.logs()
        .create_log_group()
        .log_group_name(other)
        .send()
        .await
        .unwrap();
    let groups = || async {
        let listed = env
            .logs()
            .describe_log_groups()
            .log_group_name_prefix("API-Gateway-Execution-Logs_")
            .send()
            .await
            .unwrap();
        let mut names: Vec<String> = listed
            .log_groups()
            .iter()
            .filter_map(|g| g.log_group_name().map(str::to_string))
            .collect();
        names.sort();
        names
    };
    let mut both = vec![ours.clone(), other.to_string()];
    both.sort();
    assert_eq!(groups().await, both, "API Gateway made the stage's group");
    // Not a change to make: `up` and `status` leave it alone.
    assert_eq!(env.up(&["--dry-run", "--exit-code"]).await.code, 0);
    assert_eq!(env.chatctl(&["status"]).await.code, 0);

    let dry = env.chatctl(&["down", "--dry-run"]).await;
    dry.assert_ok();
    assert!(dry.stdout.contains(&format!("log group {ours}")), "{dry:?}");
    env.chatctl(&["down", "--yes"]).await.assert_ok();
    assert_eq!(groups().await, [other]);
    crate::down::assert_nothing_left(&env).await;
}

/// A stack deployed by an older chatctl keeps the token secret in the
/// authorizer's environment. Its next `up` moves the value to Secrets
/// Manager as a typed step the plan shows, so tokens already issued (no
/// `kid`) stay valid, and the environment holds only the secret's name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_stacks_secret_moves_to_secrets_manager_and_its_tokens_stay_valid() {
    let env = Env::start().await;
    env.up(&[]).await.assert_ok();
    // Made into what an older chatctl left: the value in the environment, no secret.
    let legacy = "an-older-stacks-secret-an-older-stacks-secret";
    let lambda = env.lambda();
    let mut vars = env.authorizer_env().await;
    vars.remove("CHAT_TOKEN_SECRET_ID");
    vars.insert("CHAT_TOKEN_SECRET".into(), legacy.into());
    lambda
        .update_function_configuration()
        .function_name("chat-authorizer")
        .environment(
            aws_sdk_lambda::types::Environment::builder()
                .set_variables(Some(vars))
                .build(),
        )
        .send()
        .await
        .unwrap();
    env.secrets()
        .delete_secret()
        .secret_id("chatctl/chat/token")
        .force_delete_without_recovery(true)
        .send()
        .await
        .unwrap();
    let issued = env.chatctl(&["token", "--user", "alice"]).await;
    issued.assert_ok();
    let issued = issued.stdout.trim().to_string();
    assert_eq!(
        chat_core::token::key_id(&issued),
        Ok(None),
        "an older stack's token names no version"
    );

    let plan = env.up(&["--dry-run"]).await;
    plan.assert_ok();
    for line in [
        "  + secret chatctl/chat/token\n",
        "  ~ function chat-authorizer (environment CHAT_TOKEN_SECRET CHAT_TOKEN_SECRET_ID, token secret → Secrets \
         Manager, tokens issued stay valid)\n",
    ] {
        assert!(plan.stdout.contains(line), "{line:?} in {plan:?}");
    }
    assert!(!plan.stdout.contains(legacy), "never the value");
    env.up(&[]).await.assert_ok();

    let (_, moved) = env.token_secret().await;
    assert_eq!(moved, legacy, "the value moved, unchanged");
    let vars = env.authorizer_env().await;
    assert!(!vars.contains_key("CHAT_TOKEN_SECRET"));
    assert_eq!(vars["CHAT_TOKEN_SECRET_ID"], "chatctl/chat/token");
    assert_eq!(
        chat_core::token::verify(legacy.as_bytes(), &issued).unwrap().sub,
        "alice"
    );
    let run = env.up(&["--dry-run", "--exit-code"]).await;
    assert_eq!(run.code, 0, "moved once: {run:?}");
}
