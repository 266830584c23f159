//! chatctl through the AWS behaviour layer with every behaviour on: write
//! conflicts on one API, IAM propagation, Lambda and DynamoDB states, lagging
//! tags, small pages, lost create responses, request quotas and latency
//! (aws-facts.md §10). What a first `up` on a real account meets.

use std::collections::HashSet;
use std::time::Duration;

use chat_testkit::aws_behaviour::Behaviours;
use serde_json::Value;

use crate::down::assert_nothing_left;
use crate::harness::Env;

/// Exactly one API named chat, one authorizer, one integration per function
/// and one route per key: nothing duplicated by a retried or interrupted create.
async fn assert_one_of_each(env: &Env) {
    let apigateway = env.apigateway();
    let apis = apigateway.get_apis().send().await.unwrap();
    let ours: Vec<_> = apis.items().iter().filter(|a| a.name() == Some("chat")).collect();
    assert_eq!(ours.len(), 1, "{ours:?}");
    let api_id = ours[0].api_id().unwrap();
    let integrations = apigateway.get_integrations().api_id(api_id).send().await.unwrap();
    // The functions' (by URI) and the keep-alive's MOCK one (no URI).
    let uris: Vec<_> = integrations
        .items()
        .iter()
        .filter_map(|i| i.integration_uri())
        .collect();
    assert_eq!(uris.len(), 6, "{uris:?}");
    assert_eq!(uris.iter().collect::<HashSet<_>>().len(), 6, "{uris:?}");
    assert_eq!(integrations.items().len(), 7, "one keep-alive integration");
    let mock = integrations
        .items()
        .iter()
        .find(|i| i.integration_uri().is_none())
        .unwrap();
    let replies = apigateway
        .get_integration_responses()
        .api_id(api_id)
        .integration_id(mock.integration_id().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(replies.items().len(), 1, "one reply: {replies:?}");
    let routes = apigateway.get_routes().api_id(api_id).send().await.unwrap();
    let keys: HashSet<_> = routes.items().iter().map(|r| r.route_key().unwrap()).collect();
    assert_eq!(keys.len(), 7, "{keys:?}");
    assert_eq!(routes.items().len(), 7);
    let ping = routes.items().iter().find(|r| r.route_key() == Some("ping")).unwrap();
    let responses = apigateway
        .get_route_responses()
        .api_id(api_id)
        .route_id(ping.route_id().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(responses.items().len(), 1, "one route response: {responses:?}");
    // moto has no GetAuthorizers of its own; the launcher adds it.
    let authorizers = apigateway.get_authorizers().api_id(api_id).send().await.unwrap();
    assert_eq!(authorizers.items().len(), 1, "{:?}", authorizers.items());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_up_succeeds_the_next_changes_nothing_and_down_leaves_nothing() {
    let env = Env::start().await;
    let run = env.up(&[]).await;
    run.assert_ok();
    let answered: HashSet<String> = env
        .proxy
        .calls()
        .into_iter()
        .filter(|c| c.faulted)
        .map(|c| c.operation)
        .collect();
    // The layer did answer as AWS does: conflicts, propagation, lost creates.
    assert!(answered.contains("CreateFunction"), "{answered:?}");
    assert!(answered.contains("CreateApi"), "{answered:?}");
    assert_one_of_each(&env).await;

    env.proxy.clear();
    let again = env.up(&[]).await;
    again.assert_ok();
    assert!(again.stdout.contains("No changes"), "{again:?}");
    assert_eq!(env.mutating_operations(), Vec::<String>::new());

    let status = env.chatctl(&["status"]).await;
    assert_eq!(status.code, 0, "{status:?}");
    let routes = env.chatctl(&["routes", "list", "--output", "json"]).await;
    routes.assert_ok();
    let rows: Vec<Value> = serde_json::from_str(&routes.stdout).unwrap();
    assert_eq!(rows.len(), 7, "six functions' routes and the keep-alive: {rows:?}");

    env.chatctl(&["down", "--yes"]).await.assert_ok();
    assert_nothing_left(&env).await;
}

/// Kills `run` once the proxy has seen a new call of `operation` (or after
/// a minute, if it never comes).
async fn killed_at(env: &Env, run: &mut tokio::process::Child, operation: &str) {
    let count = || env.proxy.calls().iter().filter(|c| c.operation == operation).count();
    let before = count();
    let started = std::time::Instant::now();
    while count() == before && started.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    run.kill().await.unwrap();
}

/// An `up` or `down` killed at any moment converges on the next run, with no
/// duplicate and nothing orphaned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_up_or_down_killed_midway_converges_on_the_next_run() {
    let env = Env::start().await;
    let up_args = env.up_args();
    let up_args: Vec<&str> = up_args.iter().map(String::as_str).collect();
    // Killed while tables are CREATING and roles propagate, while functions
    // are Pending, and while the permissions are granted: at its first call
    // of each (not after a fixed time, which a loaded machine may not reach).
    // Each killed run leaves its lock, with a lease of 2 s here: the next
    // run waits it out.
    let lease = [("CHATCTL_LOCK_LEASE", "2s")];
    for operation in ["CreateTable", "CreateFunction", "AddPermission"] {
        let mut up = env.spawn_env(&up_args, &lease);
        killed_at(&env, &mut up, operation).await;
    }
    let run = env.chatctl_env(&up_args, &lease).await;
    run.assert_ok();
    assert!(
        run.stderr.contains("Took over the stack's lock from `chatctl up`"),
        "the killed run's lock: {run:?}"
    );
    assert_one_of_each(&env).await;
    let status = env.chatctl(&["status"]).await;
    assert_eq!(status.code, 0, "{status:?}");

    for operation in ["DeleteApi", "DeleteFunction"] {
        let mut down = env.spawn_env(&["down", "--yes"], &lease);
        killed_at(&env, &mut down, operation).await;
    }
    env.chatctl_env(&["down", "--yes"], &lease).await.assert_ok();
    assert_nothing_left(&env).await;
}

/// A function idle for weeks is Inactive: updates are allowed and it stays
/// Inactive until invoked, so `up` must not wait for Active.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inactive_function_takes_new_code_without_waiting_for_active() {
    let env = Env::start().await;
    env.up(&[]).await.assert_ok();
    env.proxy.make_function_inactive("chat-join");
    env.change_code();
    let started = std::time::Instant::now();
    let run = env.up(&[]).await;
    run.assert_ok();
    assert!(run.stdout.contains("chat-join"), "{run:?}");
    assert!(started.elapsed() < Duration::from_secs(60), "{:?}", started.elapsed());
    let config = env
        .lambda()
        .get_function_configuration()
        .function_name("chat-join")
        .send()
        .await
        .unwrap();
    assert!(config.code_sha256().is_some());
}

/// A condition that outlasts its retry budget: another writer holds the API
/// for minutes. `up` stops after its budget with the call, AWS's words and
/// what to do, and the next `up` finishes the job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflict_past_its_budget_says_what_failed_and_what_to_do() {
    let mut behaviours = Behaviours {
        api_conflicts: true,
        ..Behaviours::none()
    };
    behaviours.timings.api_write = Duration::from_secs(600);
    let env = Env::start_with(behaviours).await;
    let run = env.up(&[]).await;
    assert_eq!(run.code, 1, "{run:?}");
    for expected in [
        "ConflictException",
        "concurrent modification",
        "still failing after 60s of retries",
        "another change to this API is in progress",
    ] {
        assert!(run.stderr.contains(expected), "{expected:?} in {run:?}");
    }
    assert!(
        run.stderr.contains("cannot create") || run.stderr.contains("cannot update"),
        "{run:?}"
    );

    env.proxy.set_behaviours(Behaviours::none());
    env.up(&[]).await.assert_ok();
    assert_one_of_each(&env).await;
}

/// A table of the stack still CREATING (another `up` is making it, or a
/// lost CreateTable answer made it): DescribeTimeToLive answers
/// ValidationException meanwhile (aws-facts.md §11). `status` reads it once
/// it is ACTIVE instead of failing, and `down` deletes it once it takes a
/// deletion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_still_being_created_is_read_and_deleted_once_it_is_active() {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, Tag,
    };
    // CREATING long enough for `status` to start on a busy machine.
    let mut behaviours = Behaviours::all(chat_testkit::aws_behaviour::Timings::compressed());
    behaviours.timings.table_creating = Duration::from_secs(4);
    let env = Env::start_with(behaviours).await;
    let through_layer = chat_testkit::moto::sdk_config_for(&env.proxy.endpoint()).await;
    let created = aws_sdk_dynamodb::Client::new(&through_layer)
        .create_table()
        .table_name("chat-connections")
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("connection_id")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("connection_id")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .tags(Tag::builder().key("chatctl:stack").value("chat").build().unwrap())
        .send()
        .await;
    // The layer may lose the answer to the first try; the SDK's retry then
    // meets the table that try made.
    if let Err(err) = created {
        assert!(
            err.as_service_error().is_some_and(|e| e.is_resource_in_use_exception()),
            "{err:?}"
        );
    }
    let (code, table) = env.status_of("chat-connections").await;
    assert_eq!(code, 3, "the rest is missing, nothing failed: {table}");
    assert_ne!(table["state"], "missing", "{table}");
    assert!(
        env.proxy
            .calls()
            .iter()
            .any(|c| c.operation == "DescribeTimeToLive" && c.faulted),
        "the layer refused DescribeTimeToLive while the table was CREATING"
    );

    env.chatctl(&["down", "--yes"]).await.assert_ok();
    assert_nothing_left(&env).await;
}
