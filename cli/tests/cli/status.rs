use serde_json::Value;

use crate::harness::Env;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_lists_every_resource_with_outputs_and_connections() {
    let env = Env::start().await;
    let run = env.chatctl(&["status"]).await;
    assert_eq!(run.code, 3, "nothing deployed: {run:?}");
    assert!(run.stdout.contains("chat-connections") && run.stdout.contains("missing"));

    env.up(&[]).await.assert_ok();
    env.proxy.clear();
    let run = env.chatctl(&["status"]).await;
    run.assert_ok();
    assert!(run.stdout.contains("every resource is present"), "{run:?}");
    assert!(run.stdout.contains("Open connections:  0"));
    assert!(run.stdout.contains("wss://"));
    assert_eq!(env.mutating_operations(), Vec::<String>::new(), "status only reads");

    let json = env.chatctl(&["status", "--output", "json"]).await;
    json.assert_ok();
    let report: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(report["healthy"], true);
    assert_eq!(report["open_connections"], 0);
    assert!(
        report["outputs"]["websocket_url"]
            .as_str()
            .unwrap()
            .starts_with("wss://")
    );
    let resources = report["resources"].as_array().unwrap();
    assert_eq!(resources.len(), 52);
    let release = resources.iter().find(|r| r["kind"] == "release").unwrap();
    assert_eq!(release["details"][0], "release 1 is live", "{release}");
    // The token secret: its versions, never its value.
    let secret = resources.iter().find(|r| r["kind"] == "secret").unwrap();
    assert_eq!(secret["name"], "chatctl/chat/token");
    assert_eq!(secret["state"], "present");
    let details = secret["details"].to_string();
    assert!(
        details.contains("current version") && details.contains(" since "),
        "{details}"
    );
    let (_, value) = env.token_secret().await;
    assert!(!json.stdout.contains(&value));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resources_deleted_out_of_band_are_named_by_status_and_repaired_alone_by_up() {
    let env = Env::start().await;
    env.up(&[]).await.assert_ok();
    let api_id = env.api_id("chat").await.unwrap();
    let apigw = env.apigateway();
    let routes = apigw.get_routes().api_id(&api_id).send().await.unwrap();
    let join = routes.items().iter().find(|r| r.route_key() == Some("join")).unwrap();
    apigw
        .delete_route()
        .api_id(&api_id)
        .route_id(join.route_id().unwrap())
        .send()
        .await
        .unwrap();
    env.logs()
        .delete_log_group()
        .log_group_name("/aws/lambda/chat-default")
        .send()
        .await
        .unwrap();
    env.lambda()
        .update_function_configuration()
        .function_name("chat-connect")
        .timeout(99)
        .send()
        .await
        .unwrap();

    let run = env.chatctl(&["status"]).await;
    assert_eq!(run.code, 3, "{run:?}");
    let line = |kind: &str, name: &str| {
        run.stdout
            .lines()
            .find(|l| {
                let words: Vec<&str> = l.split_whitespace().collect();
                words.first() == Some(&kind) && words.get(1) == Some(&name)
            })
            .unwrap_or_default()
            .to_string()
    };
    assert!(line("route", "join").contains("missing"), "{run:?}");
    let log_group = run
        .stdout
        .lines()
        .find(|l| l.contains("/aws/lambda/chat-default"))
        .unwrap_or_default();
    assert!(log_group.contains("missing"), "{run:?}");
    let function = line("function", "chat-connect");
    assert!(
        function.contains("drifted") && function.contains("timeout 99 → 10"),
        "{run:?}"
    );
    assert!(
        line("stage", "dev").contains("drifted"),
        "the stage no longer serves the routes"
    );
    assert!(line("function", "chat-join").contains("present"));

    env.proxy.clear();
    let run = env.up(&[]).await;
    run.assert_ok();
    assert_eq!(
        env.mutating_operations(),
        [
            "CreateDeployment",
            "CreateLogGroup",
            "CreateRoute",
            "PutRetentionPolicy",
            "UpdateFunctionConfiguration",
            "UpdateStage"
        ]
    );
    env.chatctl(&["status"]).await.assert_ok();
}

/// Issue 21: with no region and no credentials anywhere, `status` says so in
/// chatctl's one sentence. The SDK's own warnings (its IMDS probe's
/// `FailedToLoadToken(FailedToLoadToken { source: ServiceError(…`) are
/// logs, shown with -v, not before the error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_region_is_one_sentence_without_the_sdks_warnings() {
    let home = tempfile::tempdir().unwrap();
    let run = crate::harness::unconfigured(&["status"], home.path()).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(
        run.stderr,
        "error: no AWS region: pass --region, set `region` in chatctl.toml, set AWS_REGION, \
         or configure one in your AWS profile\n",
        "{run:?}"
    );
    assert_eq!(run.stdout, "");
}

/// Issue 21: `--region` help says the order the code follows: the flag,
/// then chatctl.toml's `region`, then AWS_REGION (which the harness sets to
/// the emulator's us-east-1), then the profile's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn region_comes_from_the_flag_then_chatctl_toml_then_aws_region_as_the_help_says() {
    let home = tempfile::tempdir().unwrap();
    let help = crate::harness::unconfigured(&["--help"], home.path()).await;
    help.assert_ok();
    let region: String = help
        .stdout
        .split("--region <REGION>")
        .nth(1)
        .and_then(|rest| rest.split("\n      --").next())
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert_eq!(
        region,
        "AWS region [default: `region` in chatctl.toml, else AWS_REGION, else AWS_DEFAULT_REGION, \
         else the profile's; us-east-1 for a local emulator]",
        "{help:?}"
    );

    let env = Env::start_plain().await;
    env.up(&[]).await.assert_ok();
    env.chatctl(&["status"]).await.assert_ok();
    // chatctl.toml's region wins over AWS_REGION: the stack is not there.
    env.write_config("region = \"eu-west-1\"\n");
    let run = env.chatctl(&["status"]).await;
    assert_eq!(run.code, 3, "{run:?}");
    assert!(
        run.stdout.contains("missing") && !run.stdout.contains("present"),
        "{run:?}"
    );
    // The flag wins over chatctl.toml.
    env.chatctl(&["status", "--region", "us-east-1"]).await.assert_ok();
}

/// Issue 21: an open-connection count that cannot be read (BatchGetItem
/// denied) is said to be unknown, with DynamoDB's reason, in text and JSON;
/// the rest of `status` stands and its exit code is the resources'.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_says_why_the_open_connections_are_unknown() {
    let env = Env::start_plain().await;
    env.up(&[]).await.assert_ok();
    env.proxy.deny(&["BatchGetItem"]);

    let run = env.chatctl(&["status"]).await;
    run.assert_ok();
    let line = run
        .stdout
        .lines()
        .find(|l| l.starts_with("Open connections:"))
        .unwrap_or_default();
    assert!(
        line.starts_with("Open connections:  unknown (BatchGetItem on table chat-connections failed: AccessDenied"),
        "{run:?}"
    );
    assert!(
        !run.stdout.contains("{ source:") && !run.stdout.contains("Error {"),
        "{run:?}"
    );
    assert!(run.stdout.contains("every resource is present"), "{run:?}");

    let json = env.chatctl(&["status", "--output", "json"]).await;
    json.assert_ok();
    let report: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(report["healthy"], true);
    assert_eq!(report["open_connections"], Value::Null);
    let error = report["open_connections_error"].as_str().unwrap_or_default();
    assert!(error.contains("AccessDenied"), "{report:#}");

    // Readable again: the count, and no error field.
    env.proxy.deny(&[]);
    let json = env.chatctl(&["status", "--output", "json"]).await;
    let report: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(report["open_connections"], 0);
    assert!(report.get("open_connections_error").is_none(), "{report:#}");
}

/// `[alarms]`: `up` makes the topic (an email subscribed) and the alarms;
/// `status` shows each alarm's state, and one in ALARM (forced with
/// SetAlarmState) makes it exit 3; `down` deletes them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarms_are_made_shown_with_their_state_and_deleted() {
    let env = Env::start().await;
    env.write_config("[alarms]\nemail = [\"ops@example.com\"]\nfunction_errors = 3\n");
    env.up(&[]).await.assert_ok();
    // Right after `up`, as on AWS: the alarms not evaluated yet, the email
    // not confirmed. Neither is a failure.
    let (code, alarm) = env.status_of("chat-function-errors").await;
    assert_eq!(code, 0, "{alarm}");
    assert_eq!(alarm["details"], serde_json::json!(["state INSUFFICIENT_DATA"]));
    let (_, topic) = env.status_of("chat-alarms").await;
    assert_eq!(
        topic["details"],
        serde_json::json!(["ops@example.com: pending confirmation (see its inbox)"])
    );
    let cloudwatch = aws_sdk_cloudwatch::Client::new(&env.sdk);
    let described = cloudwatch
        .describe_alarms()
        .alarm_name_prefix("chat-")
        .send()
        .await
        .unwrap();
    let mut names: Vec<&str> = described
        .metric_alarms()
        .iter()
        .filter_map(|a| a.alarm_name())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "chat-dynamodb-throttles",
            "chat-failed-deliveries",
            "chat-function-duration",
            "chat-function-errors",
            "chat-function-throttles",
            "chat-stage-errors"
        ]
    );
    let errors = described
        .metric_alarms()
        .iter()
        .find(|a| a.alarm_name() == Some("chat-function-errors"))
        .unwrap();
    assert_eq!(errors.threshold(), Some(3.0));
    assert_eq!(errors.metrics().len(), 8, "seven functions and the sum");
    let topic = errors.alarm_actions()[0].clone();
    assert!(topic.ends_with(":chat-alarms"), "{topic}");
    let sns = aws_sdk_sns::Client::new(&env.sdk);
    let subscriptions = sns
        .list_subscriptions_by_topic()
        .topic_arn(&topic)
        .send()
        .await
        .unwrap();
    let emails: Vec<_> = subscriptions
        .subscriptions()
        .iter()
        .filter_map(|s| s.endpoint())
        .collect();
    assert_eq!(emails, ["ops@example.com"]);
    let again = env.up(&["--dry-run", "--exit-code"]).await;
    assert_eq!(again.code, 0, "nothing pending: {again:?}");
    // Another address: the new one is subscribed; the old one, pending,
    // cannot be unsubscribed (SNS drops it in 3 days), and is not planned
    // again and again.
    env.write_config("[alarms]\nemail = [\"oncall@example.com\"]\nfunction_errors = 3\n");
    env.up(&["--yes"]).await.assert_ok();
    let again = env.up(&["--dry-run", "--exit-code"]).await;
    assert_eq!(again.code, 0, "nothing pending: {again:?}");
    let details = env.status_of("chat-alarms").await.1["details"].to_string();
    assert!(
        details.contains("oncall@example.com: pending confirmation (see its inbox)"),
        "{details}"
    );
    assert!(
        details.contains("ops@example.com: pending confirmation, no longer in [alarms] email"),
        "{details}"
    );
    env.write_config("[alarms]\nemail = [\"ops@example.com\"]\nfunction_errors = 3\n");

    let status = env.chatctl(&["status", "--output", "json"]).await;
    assert_eq!(status.code, 0, "{status:?}");
    cloudwatch
        .set_alarm_state()
        .alarm_name("chat-function-errors")
        .state_value(aws_sdk_cloudwatch::types::StateValue::Alarm)
        .state_reason("test")
        .send()
        .await
        .unwrap();
    let (code, alarm) = env.status_of("chat-function-errors").await;
    assert_eq!(code, 3, "{alarm}");
    assert_eq!(alarm["state"], "alarm");
    assert_eq!(alarm["details"], serde_json::json!(["state ALARM"]));
    let text = env.chatctl(&["status"]).await;
    assert!(
        text.stdout.contains("chat-function-errors") && text.stdout.contains("ALARM"),
        "{text:?}"
    );
    // `top` names it too.
    let top = env.chatctl(&["top", "--once", "--output", "json"]).await;
    top.assert_ok();
    let snapshot: Value = serde_json::from_str(&top.stdout).unwrap();
    assert_eq!(snapshot["alarming"], serde_json::json!(["chat-function-errors"]));
    let top = env.chatctl(&["top", "--once"]).await;
    assert!(top.stdout.contains("ALARM: chat-function-errors"), "{top:?}");

    // A threshold of 0 turns its alarm off: `up` deletes it, as planned.
    env.write_config("[alarms]\nemail = [\"ops@example.com\"]\nfunction_errors = 0\n");
    let plan = env.up(&["--dry-run"]).await;
    assert!(plan.stdout.contains("  - alarm chat-function-errors"), "{plan:?}");
    env.up(&["--yes"]).await.assert_ok();
    let gone = cloudwatch
        .describe_alarms()
        .alarm_names("chat-function-errors")
        .send()
        .await
        .unwrap();
    assert!(gone.metric_alarms().is_empty(), "{gone:?}");

    env.chatctl(&["down", "--yes"]).await.assert_ok();
    let left = cloudwatch
        .describe_alarms()
        .alarm_name_prefix("chat-")
        .send()
        .await
        .unwrap();
    assert!(left.metric_alarms().is_empty(), "{left:?}");
    let topics = sns.list_topics().send().await.unwrap();
    assert!(topics.topics().is_empty(), "{topics:?}");
}

/// `[alarms]` bad input: an address that is not one, a percent over 100, an
/// unknown setting, a threshold that is not a number: a clear error, nothing changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_alarm_settings_are_refused_before_any_change() {
    let env = Env::start().await;
    for (config, message) in [
        ("[alarms]\nemail = [\"ops\"]\n", "\"ops\" is not an email address"),
        (
            "[alarms]\nduration_p99_percent = 150\n",
            "duration_p99_percent must be between 0 (off) and 100",
        ),
        ("[alarms]\nfunction_errros = 3\n", "unknown field `function_errros`"),
        (
            "[alarms]\nfunction_errors = \"many\"\n",
            "invalid type: string \"many\"",
        ),
    ] {
        env.write_config(config);
        let run = env.up(&[]).await;
        assert_eq!(run.code, 1, "{config}: {run:?}");
        assert!(run.stderr.contains(message), "{config}: {run:?}");
    }
    assert!(env.proxy.mutating_calls().is_empty(), "nothing changed");
}
