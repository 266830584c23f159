use std::time::{Duration, Instant};

use crate::harness::Env;

/// Asserts that nothing named for stack `chat` exists in any service.
pub async fn assert_nothing_left(env: &Env) {
    let tables = env.dynamodb().list_tables().send().await.unwrap();
    assert!(
        !tables.table_names().iter().any(|t| t.starts_with("chat-")),
        "{:?}",
        tables.table_names()
    );
    let functions = env.lambda().list_functions().send().await.unwrap();
    assert!(functions.functions().is_empty(), "{:?}", functions.functions());
    let roles = env.iam().list_roles().send().await.unwrap();
    assert!(!roles.roles().iter().any(|r| r.role_name().starts_with("chat-")));
    let groups = env
        .logs()
        .describe_log_groups()
        .log_group_name_prefix("/aws/lambda/chat-")
        .send()
        .await
        .unwrap();
    assert!(groups.log_groups().is_empty());
    let access = env
        .logs()
        .describe_log_groups()
        .log_group_name_prefix("/aws/apigateway/chat/")
        .send()
        .await
        .unwrap();
    assert!(access.log_groups().is_empty(), "{:?}", access.log_groups());
    assert!(env.api_id("chat").await.is_none());
    let secrets = env.secrets().list_secrets().send().await.unwrap();
    assert!(secrets.secret_list().is_empty(), "{:?}", secrets.secret_list());
}

/// A secret deleted without recovery keeps its name for a moment (Secrets
/// Manager API reference, DeleteSecret): an `up` right after `down` waits
/// for it instead of failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_right_after_down_waits_for_the_secrets_name() {
    let mut behaviours = chat_testkit::aws_behaviour::Behaviours {
        secret_deletion: true,
        ..chat_testkit::aws_behaviour::Behaviours::none()
    };
    // Long enough to outlast what the next `up` does before CreateSecret
    // (its read, the lock and the bucket, the read under the lock).
    behaviours.timings.secret_deletion = std::time::Duration::from_secs(4);
    let env = Env::start_with(behaviours).await;
    env.up(&[]).await.assert_ok();
    env.chatctl(&["down"]).await.assert_ok();
    env.up(&[]).await.assert_ok();
    assert!(
        env.proxy.layer_answers("InvalidRequestException") > 0,
        "the name was still taken at first"
    );
    let secret = env
        .secrets()
        .describe_secret()
        .secret_id("chatctl/chat/token")
        .send()
        .await;
    assert!(secret.is_ok(), "{secret:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_leaves_nothing_and_a_second_down_succeeds() {
    let env = Env::start().await;
    env.up(&[]).await.assert_ok();
    let run = env.chatctl(&["down"]).await;
    run.assert_ok();
    assert!(run.stdout.contains("Stack chat is down"), "{run:?}");
    assert_nothing_left(&env).await;

    let again = env.chatctl(&["down"]).await;
    again.assert_ok();
    assert!(again.stdout.contains("nothing to delete"), "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_after_an_interrupted_up_cleans_everything() {
    let env = Env::start().await;
    let up_args = env.up_args();
    // The killed run's lock lasts 2 s here (60 s by default): `down` waits it out.
    let lease = [("CHATCTL_LOCK_LEASE", "2s")];
    let mut up = env.spawn_env(&up_args.iter().map(String::as_str).collect::<Vec<_>>(), &lease);
    // Stop it once functions are being created: tables, roles and the API exist, routes do not.
    let started = Instant::now();
    while !env.proxy.calls().iter().any(|c| c.operation == "CreateFunction") {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "up never created a function"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    up.kill().await.unwrap();
    let status = env.chatctl(&["status"]).await;
    assert_eq!(status.code, 3, "a partial stack: {status:?}");

    env.chatctl_env(&["down", "--yes"], &lease).await.assert_ok();
    assert_nothing_left(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_asks_before_deleting_data_and_keep_data_keeps_the_tables() {
    let env = Env::start().await;
    env.up(&[]).await.assert_ok();
    env.dynamodb()
        .put_item()
        .table_name("chat-messages")
        .item(
            "conversation",
            aws_sdk_dynamodb::types::AttributeValue::S("room#lobby".into()),
        )
        .item("message_id", aws_sdk_dynamodb::types::AttributeValue::S("01J".into()))
        .send()
        .await
        .unwrap();

    // --dry-run lists what `down` would delete, marks the table that holds
    // data, and deletes nothing.
    env.proxy.clear();
    let plan = env.chatctl(&["down", "--dry-run"]).await;
    plan.assert_ok();
    for line in [
        "`down` would delete 28 resources of stack chat:",
        "  - function chat-join\n",
        "  - secret chatctl/chat/token (at once, no recovery window)\n",
        "  - role chat-handlers\n",
        "  - table chat-messages (holds data)\n",
        "  - table chat-connections\n",
        "  - log group /aws/lambda/chat-join\n",
    ] {
        assert!(plan.stdout.contains(line), "{line:?} in {plan:?}");
    }
    assert!(plan.stdout.starts_with("`down` would delete") && plan.stdout.contains("  - api chat ("));
    let plan = env
        .chatctl(&["down", "--dry-run", "--keep-data", "--output", "json"])
        .await;
    plan.assert_ok();
    let plan: serde_json::Value = serde_json::from_str(&plan.stdout).unwrap();
    assert_eq!(plan["dry_run"], true);
    assert_eq!(plan["kept"], serde_json::json!(["chat-connections", "chat-messages"]));
    assert_eq!(plan["delete"].as_array().unwrap().len(), 26);
    assert_eq!(plan["skipped"], serde_json::json!([]));
    assert_eq!(env.mutating_operations(), Vec::<String>::new());

    let run = env.chatctl(&["down"]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("chat-messages") && run.stderr.contains("--yes"),
        "{run:?}"
    );
    assert!(env.api_id("chat").await.is_some(), "nothing deleted");

    let run = env.chatctl(&["down", "--keep-data"]).await;
    run.assert_ok();
    assert!(run.stdout.contains("kept table chat-messages"), "{run:?}");
    assert!(env.api_id("chat").await.is_none());
    let tables = env.dynamodb().list_tables().send().await.unwrap();
    assert_eq!(tables.table_names().len(), 2);

    env.chatctl(&["down", "--yes"]).await.assert_ok();
    assert_nothing_left(&env).await;
}
