//! `routes list`, `logs` and `token` against a deployed stack.

use std::time::{Duration, SystemTime};

use aws_sdk_cloudwatchlogs::types::InputLogEvent;
use serde_json::Value;

use crate::harness::Env;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_list_reads_the_live_api_in_text_and_json() {
    let env = Env::start().await;
    let run = env.chatctl(&["routes", "list"]).await;
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("stack chat is not deployed"), "{run:?}");

    env.up(&[]).await.assert_ok();
    let run = env.chatctl(&["routes", "list"]).await;
    run.assert_ok();
    let rows: Vec<Vec<&str>> = run
        .stdout
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    let keys: Vec<&str> = rows.iter().map(|r| r[0]).collect();
    assert_eq!(
        keys,
        [
            "$connect",
            "$disconnect",
            "$default",
            "getmessages",
            "join",
            "ping",
            "sendmessage"
        ],
        "{run:?}"
    );
    assert_eq!(
        rows[0],
        ["$connect", "chat-connect", "CUSTOM", "(chat-authorizer)", "AWS_PROXY"]
    );
    assert_eq!(
        rows[5],
        ["ping", "-", "NONE", "MOCK"],
        "the keep-alive: API Gateway answers"
    );
    assert_eq!(rows[6], ["sendmessage", "chat-sendmessage", "NONE", "AWS_PROXY"]);

    let json = env.chatctl(&["routes", "list", "--output", "json"]).await;
    json.assert_ok();
    let rows: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(
        rows[0],
        serde_json::json!({
            "route_key": "$connect",
            "function": "chat-connect",
            "authorization": "CUSTOM",
            "authorizer": "chat-authorizer",
            "integration_type": "AWS_PROXY"
        })
    );
    assert_eq!(rows.as_array().unwrap().len(), 7);

    // Read from API Gateway, not from the config: a route removed out of band is gone.
    let api_id = env.api_id("chat").await.unwrap();
    let routes = env.apigateway().get_routes().api_id(&api_id).send().await.unwrap();
    let join = routes.items().iter().find(|r| r.route_key() == Some("join")).unwrap();
    env.apigateway()
        .delete_route()
        .api_id(&api_id)
        .route_id(join.route_id().unwrap())
        .send()
        .await
        .unwrap();
    let run = env.chatctl(&["routes", "list"]).await;
    assert!(!run.stdout.contains("chat-join"), "{run:?}");
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

async fn write_events(env: &Env, function: &str, events: &[(i64, &str)]) {
    let logs = env.logs();
    let group = format!("/aws/lambda/chat-{function}");
    let stream = format!("2026/11/22/[$LATEST]{}", events[0].0);
    logs.create_log_stream()
        .log_group_name(&group)
        .log_stream_name(&stream)
        .send()
        .await
        .unwrap();
    let mut request = logs.put_log_events().log_group_name(&group).log_stream_name(&stream);
    for (timestamp, message) in events {
        request = request.log_events(
            InputLogEvent::builder()
                .timestamp(*timestamp)
                .message(*message)
                .build()
                .unwrap(),
        );
    }
    request.send().await.unwrap();
}

fn messages(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .map(|l| l.split_once(' ').map(|(_, rest)| rest).unwrap_or_default().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_merge_functions_by_time_with_filters_pages_and_since() {
    let env = Env::start().await;
    let run = env.chatctl(&["logs"]).await;
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("run `chatctl up` first"), "{run:?}");

    env.up(&[]).await.assert_ok();
    let t = now_ms() - 120_000;
    write_events(
        &env,
        "sendmessage",
        &[(t, "send one"), (t + 20, "send two ERROR"), (t + 40, "send three")],
    )
    .await;
    write_events(&env, "join", &[(t + 10, "join one"), (t + 30, "join two ERROR")]).await;
    write_events(&env, "connect", &[(t - 3_600_000, "an hour ago")]).await;

    let run = env.chatctl(&["logs"]).await;
    run.assert_ok();
    assert_eq!(
        messages(&run.stdout),
        [
            "[sendmessage] send one",
            "[join] join one",
            "[sendmessage] send two ERROR",
            "[join] join two ERROR",
            "[sendmessage] send three"
        ],
        "{run:?}"
    );
    let first = run.stdout.lines().next().unwrap();
    assert!(
        first.starts_with(&chat_core::ids::format_timestamp_ms(t as u64)),
        "{first}"
    );
    // Colours only where wanted: none into a pipe, CLICOLOR_FORCE asks for
    // them, NO_COLOR turns them off even then.
    assert!(!run.stdout.contains('\x1b'), "{run:?}");
    let coloured = env.chatctl_env(&["logs"], &[("CLICOLOR_FORCE", "1")]).await;
    assert!(
        coloured.stdout.contains("\x1b[34m[sendmessage]\x1b[0m send one"),
        "{coloured:?}"
    );
    let plain = env
        .chatctl_env(&["logs"], &[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")])
        .await;
    assert_eq!(plain.stdout, run.stdout);

    env.proxy.clear();
    let paged = env.chatctl(&["logs", "--page-size", "1"]).await;
    paged.assert_ok();
    assert_eq!(paged.stdout, run.stdout, "every page is followed");
    let filter_calls = env
        .proxy
        .calls()
        .iter()
        .filter(|c| c.operation == "FilterLogEvents")
        .count();
    assert!(filter_calls > 7, "more than one page per group: {filter_calls}");

    let filtered = env.chatctl(&["logs", "--filter", "ERROR"]).await;
    assert_eq!(
        messages(&filtered.stdout),
        ["[sendmessage] send two ERROR", "[join] join two ERROR"]
    );

    let one = env.chatctl(&["logs", "join"]).await;
    assert_eq!(messages(&one.stdout), ["[join] join one", "[join] join two ERROR"]);

    let since = env.chatctl(&["logs", "--since", "2h"]).await;
    assert_eq!(messages(&since.stdout)[0], "[connect] an hour ago");
    let at = chat_core::ids::format_timestamp_ms((t + 25) as u64);
    let since_time = env.chatctl(&["logs", "--since", &at]).await;
    assert_eq!(
        messages(&since_time.stdout),
        ["[join] join two ERROR", "[sendmessage] send three"]
    );

    let json = env.chatctl(&["logs", "--output", "json"]).await;
    let lines: Vec<Value> = json.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 5);
    assert_eq!(lines[0]["function"], "sendmessage");
    assert_eq!(lines[0]["message"], "send one");
    assert!(lines[0]["event_id"].is_string() && lines[0]["log_stream"].is_string());

    let unknown = env.chatctl(&["logs", "sendmesage"]).await;
    assert_eq!(unknown.code, 1);
    assert!(
        unknown.stderr.contains("valid functions: authorizer, connect"),
        "{unknown:?}"
    );
    let bad_since = env.chatctl(&["logs", "--since", "last week"]).await;
    assert_eq!(bad_since.code, 1);
    assert!(bad_since.stderr.contains("invalid --since"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_follow_prints_new_events_once_and_stops_cleanly_on_ctrl_c() {
    use tokio::io::{AsyncBufReadExt, BufReader};

    let env = Env::start().await;
    env.up(&[]).await.assert_ok();
    write_events(&env, "default", &[(now_ms() - 5_000, "before follow")]).await;

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_chatctl"))
        .args(["logs", "--follow", "--endpoint-url", &env.proxy.endpoint()])
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .current_dir(env.workdir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let next_line = async |lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>| {
        tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("no line within 20 s")
            .unwrap()
            .unwrap()
    };
    assert!(next_line(&mut lines).await.ends_with("[default] before follow"));

    write_events(&env, "join", &[(now_ms(), "while following")]).await;
    assert!(next_line(&mut lines).await.ends_with("[join] while following"));

    // Two more polls: nothing is printed twice.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let pid = child.id().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0), "Ctrl-C ends --follow with success");
    assert_eq!(
        lines.next_line().await.unwrap(),
        None,
        "no duplicates after the new line"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_is_accepted_by_the_authorizers_own_check_until_it_expires() {
    let env = Env::start().await;
    let run = env.chatctl(&["token", "--user", "alice"]).await;
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("not deployed"), "{run:?}");

    env.up(&[]).await.assert_ok();
    let (version, secret) = env.token_secret().await;

    let run = env.chatctl(&["token", "--user", "alice"]).await;
    run.assert_ok();
    let token = run.stdout.trim();
    let claims = chat_core::token::verify(secret.as_bytes(), token).unwrap();
    assert_eq!(claims.sub, "alice");
    assert_eq!(
        chat_core::token::key_id(token),
        Ok(Some(version)),
        "the token names the version"
    );
    let day = claims.exp - claims.iat;
    assert_eq!(day, 86_400);
    assert_eq!(
        chat_core::token::verify(b"some-other-secret-some-other-secret", token),
        Err(chat_core::token::TokenError::BadSignature)
    );

    let short = env
        .chatctl(&["token", "--user", "bob", "--ttl", "1s", "--output", "json"])
        .await;
    short.assert_ok();
    let minted: Value = serde_json::from_str(&short.stdout).unwrap();
    assert_eq!(minted["user"], "bob");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        chat_core::token::verify(secret.as_bytes(), minted["token"].as_str().unwrap()),
        Err(chat_core::token::TokenError::Expired)
    );

    for (args, message) in [
        (["token", "--user", "not valid"], "invalid user name"),
        (["token", "--user", "a#b"], "invalid user name"),
    ] {
        let run = env.chatctl(&args).await;
        assert_eq!(run.code, 1);
        assert!(run.stderr.contains(message), "{run:?}");
    }
    let run = env.chatctl(&["token", "--user", "alice", "--ttl", "forever"]).await;
    assert!(run.stderr.contains("invalid --ttl"), "{run:?}");
    let run = env.chatctl(&["token"]).await;
    assert_eq!(run.code, 2, "--user is required: {run:?}");
}

/// `chatctl token rotate`: a new current version signs new tokens, the one
/// before stays (AWSPREVIOUS) unless revoked, and two rotations drop the
/// oldest; moving to another auth mode deletes the secret at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_rotate_makes_a_new_version_and_keeps_or_revokes_the_previous() {
    let env = Env::start().await;
    let run = env.chatctl(&["token", "rotate"]).await;
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("not deployed"), "{run:?}");
    env.up(&[]).await.assert_ok();
    let (first, first_value) = env.token_secret().await;
    let old_token = env
        .chatctl(&["token", "--user", "alice"])
        .await
        .stdout
        .trim()
        .to_string();

    let run = env.chatctl(&["token", "rotate"]).await;
    run.assert_ok();
    let (second, second_value) = env.token_secret().await;
    assert_ne!(first, second);
    assert_ne!(first_value, second_value);
    assert!(
        run.stdout
            .contains(&format!("new tokens are signed with version {second}"))
            && run.stdout.contains(&format!(
                "Tokens signed with version {first} stay valid until they expire"
            )),
        "{run:?}"
    );
    assert!(!run.stdout.contains(&second_value), "never the value");
    let previous = env
        .secrets()
        .get_secret_value()
        .secret_id("chatctl/chat/token")
        .version_stage("AWSPREVIOUS")
        .send()
        .await
        .unwrap();
    assert_eq!(previous.version_id(), Some(first.as_str()));
    assert_eq!(
        chat_core::token::verify(first_value.as_bytes(), &old_token)
            .unwrap()
            .sub,
        "alice"
    );
    let new_token = env.chatctl(&["token", "--user", "bob"]).await.stdout.trim().to_string();
    assert_eq!(chat_core::token::key_id(&new_token), Ok(Some(second.clone())));
    assert_eq!(
        chat_core::token::verify(second_value.as_bytes(), &new_token)
            .unwrap()
            .sub,
        "bob"
    );

    // A leaked secret: the version before is unlabelled at once.
    let run = env
        .chatctl(&["token", "rotate", "--revoke-previous", "--output", "json"])
        .await;
    run.assert_ok();
    let rotated: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(rotated["previous"], Value::Null);
    assert_eq!(rotated["dropped"], first.as_str());
    let previous = env
        .secrets()
        .get_secret_value()
        .secret_id("chatctl/chat/token")
        .version_stage("AWSPREVIOUS")
        .send()
        .await;
    assert!(
        previous.is_err(),
        "no previous version is accepted any more: {previous:?}"
    );
    let (third, _) = env.token_secret().await;
    assert_eq!(rotated["version"], third.as_str());

    // `status` shows the secret, never its value; `up` has nothing to do.
    let status = env.chatctl(&["status"]).await;
    assert!(status.stdout.contains("chatctl/chat/token"), "{status:?}");
    let run = env.up(&["--dry-run", "--exit-code"]).await;
    assert_eq!(run.code, 0, "rotation is not drift: {run:?}");

    // Another auth mode: the secret is deleted, without a recovery window,
    // once approved.
    env.write_config("auth = \"none\"\n");
    let run = env.up(&["--dry-run"]).await;
    assert!(
        run.stdout
            .contains("- secret chatctl/chat/token (at once, no recovery window)"),
        "{run:?}"
    );
    env.up(&["--yes"]).await.assert_ok();
    let gone = env
        .secrets()
        .describe_secret()
        .secret_id("chatctl/chat/token")
        .send()
        .await;
    assert!(gone.is_err(), "{gone:?}");
    let run = env.chatctl(&["token", "rotate"]).await;
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("no secret to rotate"), "{run:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_explains_that_auth_mode_none_needs_none() {
    let env = Env::start_plain().await;
    env.write_config("auth = \"none\"\n");
    env.up(&[]).await.assert_ok();
    let run = env.chatctl(&["token", "--user", "alice"]).await;
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("auth = \"none\"") && run.stderr.contains("?user="),
        "{run:?}"
    );
}

/// `top` through the behaviour layer: GetMetricData answered in pages of two
/// results with a NextToken (CloudWatch API reference, GetMetricData), at
/// AWS-like latency; every page is read and each metric lands where it belongs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_reads_every_page_of_metrics_through_the_behaviour_layer() {
    use aws_sdk_cloudwatch::primitives::DateTime;
    use aws_sdk_cloudwatch::types::{Dimension, MetricDatum};

    let env = Env::start().await;
    env.up(&[]).await.assert_ok();
    let api_id = env.api_id("chat").await.unwrap();
    let dimension = |name: &str, value: &str| Dimension::builder().name(name).value(value).build();
    let stage = vec![dimension("ApiId", &api_id), dimension("Stage", "dev")];
    let now = DateTime::from(std::time::SystemTime::now());
    let datum = |name: &str, dimensions: &Vec<Dimension>, values: &[f64]| {
        MetricDatum::builder()
            .metric_name(name)
            .set_dimensions(Some(dimensions.clone()))
            .set_values(Some(values.to_vec()))
            .timestamp(now)
            .build()
    };
    let cloudwatch = aws_sdk_cloudwatch::Client::new(&env.sdk);
    let put = |namespace: &str, data: Vec<MetricDatum>| {
        cloudwatch
            .put_metric_data()
            .namespace(namespace)
            .set_metric_data(Some(data))
            .send()
    };
    put(
        "AWS/ApiGateway",
        vec![
            datum("MessageCount", &stage, &[4.0, 3.0]),
            datum("IntegrationLatency", &stage, &[10.0, 20.0, 30.0]),
        ],
    )
    .await
    .unwrap();
    // The last function's metrics come in the last page.
    let join = vec![dimension("FunctionName", "chat-join")];
    put("AWS/Lambda", vec![datum("Invocations", &join, &[3.0])])
        .await
        .unwrap();

    env.proxy.clear();
    let run = env
        .chatctl(&["top", "--once", "--output", "json", "--since", "15m"])
        .await;
    run.assert_ok();
    let snapshot: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(snapshot["total"]["messages"]["total"], 7.0, "{snapshot:#}");
    assert_eq!(snapshot["total"]["latency_p99_ms"], 30.0);
    assert_eq!(snapshot["total"]["connects"]["total"], 0.0, "no data reads as 0");
    let functions = snapshot["functions"].as_array().unwrap();
    let join = functions.iter().find(|f| f["function"] == "chat-join").unwrap();
    assert_eq!(join["invocations"]["total"], 3.0, "{join:#}");
    let pages = env
        .proxy
        .calls()
        .iter()
        .filter(|call| call.operation == "GetMetricData")
        .count();
    assert_eq!(pages, 18, "35 results in pages of 2");
}

/// Issue 21: `connections send` and `kick` to an `@connections` URL where
/// nothing listens say once what they tried to reach and why it failed,
/// exit 1, quickly; no SDK Debug text, no line per connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_say_once_when_the_connections_api_cannot_be_reached() {
    use chat_core::store::{ConnectionRecord, ConnectionStore};

    let env = Env::start_plain().await;
    env.up(&[]).await.assert_ok();
    let store = ConnectionStore::new(env.dynamodb(), "chat-connections");
    for (id, user) in [("c1", "alice"), ("c2", "bob"), ("c3", "alice")] {
        let record = ConnectionRecord {
            connection_id: id.into(),
            user: user.into(),
            room: "lobby".into(),
            connected_at: now_ms(),
            ttl: 0,
        };
        store.add(&record, 100, 0).await.unwrap();
    }
    // A loopback port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/dev");
    for args in [
        vec!["connections", "send", "--room", "lobby", "hi", "--url", &url],
        vec!["connections", "kick", "--user", "alice", "--url", &url],
        vec!["connections", "kick", "c2", "--url", &url],
    ] {
        let started = std::time::Instant::now();
        let run = env.chatctl(&args).await;
        assert_eq!(run.code, 1, "{args:?}: {run:?}");
        assert_eq!(
            run.stderr,
            format!(
                "error: cannot reach the @connections API at {url}: connection refused; \
                 is the stack (or `chatctl dev`) running?\n"
            ),
            "{args:?}"
        );
        assert_eq!(run.stdout, "", "{args:?}");
        assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    }
}

/// Issue 21: a broken pipe is not an error (ripgrep's rule). With stdout
/// closed before they write (`| head -c 0`), commands exit 0 and say
/// nothing: `top` in text and JSON, `status`, `routes list`, and `up
/// --dry-run`, whose plan is printed by code that still uses `println!`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_stdout_ends_a_command_quietly() {
    let env = Env::start_plain().await;
    // Rooms sendmessage reaches at 128 MB: no warning from `up` either.
    env.write_config("[limits]\nmax_connections = 1000\n");
    env.up(&[]).await.assert_ok();
    let up = env.up_args();
    let mut dry_run: Vec<&str> = up.iter().map(String::as_str).collect();
    dry_run.push("--dry-run");
    env.change_code();
    for args in [
        vec!["top", "--once"],
        vec!["top", "--once", "--output", "json"],
        vec!["top", "--interval", "1s"],
        vec!["status"],
        vec!["status", "--output", "json"],
        vec!["routes", "list"],
        dry_run,
    ] {
        let run = env.chatctl_into_closed_pipe(&args).await;
        assert_eq!((run.code, run.stderr.as_str()), (0, ""), "{args:?}");
    }
}

/// `auth = "oidc"` through the behaviour layer: `up` gives the authorizer
/// the issuer and no secret, warns (and goes on) when the issuer cannot be
/// read from here, says nothing when it can; moving back to `auth = "token"`
/// drops the issuer and brings a secret back; a bad `[oidc]` changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_with_oidc_configures_the_authorizer_and_checks_the_issuer() {
    let env = Env::start().await;
    env.write_config("auth = \"oidc\"\n[oidc]\nissuer = \"http://idp.example.com\"\naudience = \"app\"\n");
    let refused = env.up(&[]).await;
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(
        refused.stderr.contains("[oidc]: issuer") && refused.stderr.contains("uses http"),
        "{refused:?}"
    );
    assert!(env.proxy.mutating_calls().is_empty(), "a bad [oidc] changes nothing");

    // An issuer nobody answers for: a warning naming it, and the stack is up.
    let gone = chat_testkit::OidcIssuer::start().await;
    let gone_url = gone.url().to_string();
    drop(gone);
    env.write_config(&format!(
        "auth = \"oidc\"\n[oidc]\nissuer = \"{gone_url}\"\naudience = \"app\"\nuser_claim = \"email\"\n"
    ));
    let run = env.up(&[]).await;
    run.assert_ok();
    assert!(
        run.stderr.contains(&format!(
            "warning: the identity provider {gone_url} cannot be checked from here"
        )),
        "{run:?}"
    );
    let vars = env.authorizer_env().await;
    assert_eq!(vars["CHAT_AUTH_MODE"], "oidc");
    assert_eq!(vars["CHAT_OIDC_ISSUER"], gone_url);
    assert_eq!(vars["CHAT_OIDC_AUDIENCE"], "app");
    assert_eq!(vars["CHAT_OIDC_USER_CLAIM"], "email");
    assert!(!vars.contains_key("CHAT_TOKEN_SECRET_ID"));
    let token = env.chatctl(&["token", "--user", "alice"]).await;
    assert_eq!(token.code, 1);
    assert!(
        token.stderr.contains("its tokens come from your identity provider"),
        "{token:?}"
    );

    // A reachable issuer: no warning.
    let issuer = chat_testkit::OidcIssuer::start().await;
    env.write_config(&format!(
        "auth = \"oidc\"\n[oidc]\nissuer = \"{}\"\naudience = \"app\"\n",
        issuer.url()
    ));
    let run = env.up(&[]).await;
    run.assert_ok();
    assert!(!run.stderr.contains("warning: the identity provider"), "{run:?}");
    assert_eq!(issuer.jwks_fetches(), 1, "up read the keys once");

    env.write_config("");
    env.up(&[]).await.assert_ok();
    let vars = env.authorizer_env().await;
    assert_eq!(vars["CHAT_AUTH_MODE"], "token");
    assert!(!vars.contains_key("CHAT_OIDC_ISSUER"));
    assert_eq!(vars["CHAT_TOKEN_SECRET_ID"], "chatctl/chat/token");
    assert!(env.token_secret().await.1.len() >= 32);
}
