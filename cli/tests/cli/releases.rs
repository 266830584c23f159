//! Releases: each `up` that changes the functions publishes a version of
//! each and moves their alias `live`; `releases` lists them; `rollback`
//! moves the aliases back without building, uploading or deploying; `up`
//! brings the build at hand back; `[releases] keep` bounds the versions.

use serde_json::Value;

use crate::harness::Env;

const FUNCTIONS: [&str; 7] = [
    "authorizer",
    "connect",
    "disconnect",
    "default",
    "join",
    "sendmessage",
    "getmessages",
];

/// The version each function's alias `live` runs.
async fn live_versions(env: &Env) -> Vec<String> {
    let mut versions = vec![];
    for function in FUNCTIONS {
        let alias = env
            .lambda()
            .get_alias()
            .function_name(format!("chat-{function}"))
            .name("live")
            .send()
            .await
            .unwrap();
        versions.push(alias.function_version().unwrap().to_string());
    }
    versions
}

async fn releases(env: &Env) -> Value {
    let run = env.chatctl(&["releases", "--output", "json"]).await;
    run.assert_ok();
    serde_json::from_str(&run.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_moves_the_aliases_back_and_up_brings_the_new_release_back() {
    let env = Env::start().await;
    env.up(&[]).await.assert_ok();
    assert_eq!(live_versions(&env).await, vec!["1"; 7]);
    env.change_code();
    env.up(&[]).await.assert_ok();
    assert_eq!(live_versions(&env).await, vec!["2"; 7]);
    let listed = releases(&env).await;
    assert_eq!(listed["live"], 2, "{listed}");
    let numbers: Vec<&Value> = listed["releases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["number"])
        .collect();
    assert_eq!(numbers, [1, 2]);
    let [first, second] = listed["releases"].as_array().unwrap().as_slice() else {
        panic!("two releases: {listed}")
    };
    assert_ne!(first["code_sha256"], second["code_sha256"], "two builds");
    assert_eq!(first["versions"]["chat-join"], "1");

    // Rollback: the seven aliases, nothing else (no build, upload, deployment).
    env.proxy.clear();
    let run = env.chatctl(&["rollback"]).await;
    run.assert_ok();
    assert!(
        run.stdout.contains("Rolled back stack chat to release 1 (code "),
        "{run:?}"
    );
    assert_eq!(live_versions(&env).await, vec!["1"; 7]);
    assert_eq!(env.mutating_operations(), vec!["UpdateAlias"; 7]);
    let run = env.chatctl(&["releases"]).await;
    run.assert_ok();
    assert!(run.stdout.contains("Release 1 is live, not the latest"), "{run:?}");
    assert_eq!(releases(&env).await["live"], 1);
    let (code, release) = env.status_of("live").await;
    assert_eq!(code, 0, "a rollback is no drift: {release}");
    assert_eq!(
        release["details"][0], "release 1 is live, not the latest (2)",
        "{release}"
    );

    // `up` with the build at hand says so and makes it live again: the same
    // versions (Lambda publishes none for unchanged code), release 2 again.
    let run = env.up(&["--dry-run", "--exit-code"]).await;
    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stdout.contains("live is release 1, not the latest (2)"), "{run:?}");
    env.proxy.clear();
    env.up(&[]).await.assert_ok();
    assert_eq!(live_versions(&env).await, vec!["2"; 7]);
    let mut expected = vec!["PublishVersion"; 7];
    expected.extend(["UpdateAlias"; 7]);
    assert_eq!(env.mutating_operations(), expected);
    let listed = releases(&env).await;
    assert_eq!(listed["live"], 2);
    assert_eq!(listed["releases"].as_array().unwrap().len(), 2, "{listed}");
    let run = env.up(&["--dry-run", "--exit-code"]).await;
    assert_eq!(run.code, 0, "{run:?}");

    // A release that is not kept: refused, naming those that are.
    let run = env.chatctl(&["rollback", "--to", "9"]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr
            .contains("there is no release 9 to roll back to; the releases kept are 1, 2"),
        "{run:?}"
    );
    let run = env.chatctl(&["rollback", "--to", "2"]).await;
    run.assert_ok();
    assert!(run.stdout.contains("Release 2 is live already"), "{run:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_releases_kept_keep_their_versions_and_down_removes_everything() {
    let env = Env::start().await;
    env.write_config("[releases]\nkeep = 2\n");
    env.up(&[]).await.assert_ok();
    for _ in 0..2 {
        env.change_code();
        env.up(&[]).await.assert_ok();
    }
    let listed = releases(&env).await;
    let numbers: Vec<&Value> = listed["releases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["number"])
        .collect();
    assert_eq!(numbers, [2, 3], "{listed}");
    let gone = env
        .lambda()
        .get_function()
        .function_name("chat-join")
        .qualifier("1")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(gone.is_resource_not_found_exception(), "version 1 is deleted: {gone:?}");
    let kept = env
        .lambda()
        .get_function()
        .function_name("chat-join")
        .qualifier("2")
        .send()
        .await;
    assert!(kept.is_ok(), "{kept:?}");

    let run = env.chatctl(&["rollback", "--to", "1"]).await;
    assert_eq!(run.code, 1, "{run:?}");

    env.write_config("[releases]\nkeep = 1\n");
    let run = env.up(&["--dry-run"]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("[releases] keep must be between 2 and 100"),
        "{run:?}"
    );
    env.write_config("");

    let run = env.chatctl(&["down", "--yes"]).await;
    run.assert_ok();
    let functions = env.lambda().list_functions().send().await.unwrap();
    assert!(functions.functions().is_empty(), "{functions:?}");
    let buckets = env.s3().list_buckets().send().await.unwrap();
    assert!(buckets.buckets().is_empty(), "{buckets:?}");
    // A stack without releases: nothing to roll back.
    let run = env.chatctl(&["rollback"]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("run `chatctl up` first"), "{run:?}");
}

/// A stack deployed before releases: integrations and the authorizer invoke
/// the functions themselves, each function has a function-wide permission,
/// no alias. Its next `up` makes release 1, retargets the integrations and
/// the authorizer to `live` (updated, none left behind), moves the
/// permissions to the alias and redeploys; then nothing is pending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stack_from_before_releases_moves_to_the_alias() {
    let env = Env::start().await;
    env.up(&[]).await.assert_ok();
    let api_id = env.api_id("chat").await.unwrap();
    let (lambda, apigw) = (env.lambda(), env.apigateway());
    for function in FUNCTIONS {
        let name = format!("chat-{function}");
        let policy = lambda
            .get_policy()
            .function_name(&name)
            .qualifier("live")
            .send()
            .await
            .unwrap();
        let policy: Value = serde_json::from_str(policy.policy().unwrap()).unwrap();
        let statement = policy["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["Sid"] == "chatctl-invoke-live")
            .unwrap()
            .clone();
        let source = statement["Condition"]["ArnLike"]["AWS:SourceArn"].as_str().unwrap();
        lambda
            .remove_permission()
            .function_name(&name)
            .qualifier("live")
            .statement_id("chatctl-invoke-live")
            .send()
            .await
            .unwrap();
        lambda
            .delete_alias()
            .function_name(&name)
            .name("live")
            .send()
            .await
            .unwrap();
        lambda
            .add_permission()
            .function_name(&name)
            .statement_id("chatctl-invoke")
            .action("lambda:InvokeFunction")
            .principal("apigateway.amazonaws.com")
            .source_arn(source)
            .send()
            .await
            .unwrap();
    }
    let unqualified = |uri: &str| uri.replace(":live/invocations", "/invocations");
    let integrations = apigw.get_integrations().api_id(&api_id).send().await.unwrap();
    for integration in integrations.items() {
        if let Some(uri) = integration.integration_uri() {
            apigw
                .update_integration()
                .api_id(&api_id)
                .integration_id(integration.integration_id().unwrap())
                .integration_uri(unqualified(uri))
                .send()
                .await
                .unwrap();
        }
    }
    let authorizers = apigw.get_authorizers().api_id(&api_id).send().await.unwrap();
    let authorizer = &authorizers.items()[0];
    apigw
        .update_authorizer()
        .api_id(&api_id)
        .authorizer_id(authorizer.authorizer_id().unwrap())
        .authorizer_uri(unqualified(authorizer.authorizer_uri().unwrap()))
        .send()
        .await
        .unwrap();

    let run = env.up(&["--dry-run"]).await;
    run.assert_ok();
    for line in [
        "+ release live",
        "~ integration chat-join (invokes alias live)",
        "~ permission chat-join (source ARN, - function-wide statement, now on alias live)",
        "~ authorizer chat-authorizer (",
        "~ stage dev (",
    ] {
        assert!(run.stdout.contains(line), "{line}: {run:?}");
    }
    env.up(&[]).await.assert_ok();
    assert_eq!(live_versions(&env).await, vec!["1"; 7]);
    let integrations = apigw.get_integrations().api_id(&api_id).send().await.unwrap();
    let uris: Vec<&str> = integrations
        .items()
        .iter()
        .filter_map(|i| i.integration_uri())
        .collect();
    assert_eq!(uris.len(), 6, "updated, not made anew: {uris:?}");
    assert!(uris.iter().all(|uri| uri.ends_with(":live/invocations")), "{uris:?}");
    let policy = lambda.get_policy().function_name("chat-join").send().await.unwrap();
    assert!(!policy.policy().unwrap().contains("\"chatctl-invoke\""), "{policy:?}");
    let run = env.up(&["--dry-run", "--exit-code"]).await;
    assert_eq!(run.code, 0, "{run:?}");
}
