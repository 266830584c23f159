use std::time::Instant;

use chat_core::ids;
use chat_core::store::HistoryFrom;
use serde_json::Value;

use crate::support::Stack;

fn codes(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["code"].as_str().unwrap_or("-").to_string())
        .collect()
}

#[tokio::test]
async fn a_room_message_reaches_the_room_only_sender_included_and_is_stored() {
    let stack = Stack::start().await;
    stack.connect("alice-1=", "alice", "general").await;
    stack.connect("bob-1=", "bob", "general").await;
    stack.connect("carol-1=", "carol", "lobby").await;

    let response = stack
        .send(
            "alice-1=",
            "sendmessage",
            r#"{"action":"sendmessage","message":"hello room"}"#,
        )
        .await;
    assert_eq!(response.status_code, 200);

    let delivered = stack.last_event("bob-1=");
    assert_eq!(delivered, stack.last_event("alice-1="));
    assert_eq!(delivered["type"], "message");
    assert_eq!(delivered["room"], "general");
    assert_eq!(delivered["from"], "alice");
    assert_eq!(delivered["text"], "hello room");
    assert!(delivered.get("to").is_none());
    let ts = delivered["ts"].as_str().unwrap();
    assert!(
        ts.ends_with('Z') && ts.len() == 24,
        "RFC 3339 UTC with milliseconds: {ts}"
    );
    assert!(ids::parse_timestamp(ts).is_some());
    let id = delivered["id"].as_str().unwrap();
    assert!(ids::parse_cursor(id).is_ok(), "id is a ULID: {id}");
    assert!(
        stack.endpoint.received("carol-1=").is_empty(),
        "other rooms get nothing"
    );

    let page = stack
        .services
        .messages
        .page(&ids::room_conversation("general"), HistoryFrom::Latest, 10)
        .await
        .unwrap();
    assert_eq!(page.messages.len(), 1);
    assert_eq!(page.messages[0].id, id);
    assert_eq!(page.messages[0].text, "hello room");
    let stored = stack.items(&stack.services.config.messages_table).await;
    assert!(stored[0].contains_key("ttl"), "messages expire through TTL");
}

#[tokio::test]
async fn a_direct_message_reaches_both_users_connections_only() {
    let stack = Stack::start().await;
    stack.connect("alice-1=", "alice", "general").await;
    stack.connect("alice-2=", "alice", "lobby").await;
    stack.connect("bob-1=", "bob", "lobby").await;
    stack.connect("bob-2=", "bob", "other").await;
    stack.connect("carol-1=", "carol", "general").await;

    stack
        .send(
            "alice-1=",
            "sendmessage",
            r#"{"action":"sendmessage","message":"psst","to":"bob"}"#,
        )
        .await;
    for id in ["alice-1=", "alice-2=", "bob-1=", "bob-2="] {
        let event = stack.last_event(id);
        assert_eq!(event["type"], "message", "{id}");
        assert_eq!(event["to"], "bob");
        assert_eq!(event["from"], "alice");
        assert!(event.get("room").is_none());
    }
    assert!(stack.endpoint.received("carol-1=").is_empty());
    let page = stack
        .services
        .messages
        .page(&ids::direct_conversation("bob", "alice"), HistoryFrom::Latest, 10)
        .await
        .unwrap();
    assert_eq!(page.messages.len(), 1);
}

#[tokio::test]
async fn bad_messages_get_an_error_event_and_write_nothing() {
    let stack = Stack::start_with(|config| config.max_message_bytes = 100).await;
    stack.connect("alice-1=", "alice", "lobby").await;
    stack.connect("bob-1=", "bob", "lobby").await;
    let cases = [
        ("not JSON", "hello", "invalid_json"),
        (
            "truncated JSON",
            r#"{"action":"sendmessage","message":"#,
            "invalid_json",
        ),
        ("missing message", r#"{"action":"sendmessage"}"#, "invalid_request"),
        (
            "message not a string",
            r#"{"action":"sendmessage","message":42}"#,
            "invalid_request",
        ),
        (
            "to not a string",
            r#"{"action":"sendmessage","message":"hi","to":7}"#,
            "invalid_request",
        ),
        ("an array", r#"["sendmessage"]"#, "invalid_request"),
        (
            "empty text",
            r#"{"action":"sendmessage","message":""}"#,
            "empty_message",
        ),
        (
            "blank text",
            r#"{"action":"sendmessage","message":"   "}"#,
            "empty_message",
        ),
        (
            "oversized text",
            &format!(r#"{{"action":"sendmessage","message":"{}"}}"#, "x".repeat(101)),
            "message_too_large",
        ),
        (
            "invalid to",
            r#"{"action":"sendmessage","message":"hi","to":"no one"}"#,
            "invalid_user",
        ),
        (
            "unknown to",
            r#"{"action":"sendmessage","message":"hi","to":"nobody"}"#,
            "unknown_recipient",
        ),
    ];
    for (case, body, code) in cases {
        let response = stack.send("alice-1=", "sendmessage", body).await;
        assert_eq!(response.status_code, 200, "{case}");
        assert_eq!(stack.last_event("alice-1=")["code"], code, "{case}");
        assert_eq!(stack.last_event("alice-1=")["type"], "error", "{case}");
    }
    assert!(stack.endpoint.received("bob-1=").is_empty(), "nothing reached the room");
    assert_eq!(stack.message_count().await, 0, "nothing was stored");

    // A connection that was never registered (or was pruned) is told so.
    stack
        .send("ghost=", "sendmessage", r#"{"action":"sendmessage","message":"boo"}"#)
        .await;
    assert_eq!(codes(&stack.endpoint.received_json("ghost=")), vec!["not_connected"]);
    assert_eq!(stack.message_count().await, 0);
}

#[tokio::test]
async fn a_gone_connection_is_removed_by_the_first_delivery_that_finds_it() {
    let stack = Stack::start().await;
    stack.connect("alice-1=", "alice", "lobby").await;
    stack.connect("bob-1=", "bob", "lobby").await;
    stack.endpoint.mark_gone("bob-1=");

    stack
        .send(
            "alice-1=",
            "sendmessage",
            r#"{"action":"sendmessage","message":"anyone?"}"#,
        )
        .await;
    assert_eq!(stack.last_event("alice-1=")["text"], "anyone?");
    assert!(stack.services.connections.get("bob-1=").await.unwrap().is_none());
    assert_eq!(stack.open_count().await, 1);
    assert_eq!(stack.endpoint.attempts("bob-1="), 1, "a 410 is not retried");

    stack
        .send(
            "alice-1=",
            "sendmessage",
            r#"{"action":"sendmessage","message":"again"}"#,
        )
        .await;
    assert_eq!(
        stack.endpoint.attempts("bob-1="),
        1,
        "no delivery to a pruned connection"
    );
}

#[tokio::test]
async fn throttled_deliveries_are_retried_until_they_land() {
    let stack = Stack::start().await;
    stack.connect("alice-1=", "alice", "lobby").await;
    stack.connect("bob-1=", "bob", "lobby").await;
    stack.endpoint.throttle("bob-1=", 2);

    stack
        .send(
            "alice-1=",
            "sendmessage",
            r#"{"action":"sendmessage","message":"slow down"}"#,
        )
        .await;
    assert_eq!(stack.last_event("bob-1=")["text"], "slow down");
    assert_eq!(stack.endpoint.attempts("bob-1="), 3);
    assert!(
        stack.services.connections.get("bob-1=").await.unwrap().is_some(),
        "429 does not prune"
    );
}

#[tokio::test]
async fn a_message_fans_out_to_200_connections() {
    let stack = Stack::start().await;
    let connects = (0..200).map(|i| {
        let stack = &stack;
        async move {
            stack
                .connect(&format!("member-{i}="), &format!("user{i}"), "crowd")
                .await
                .status_code
        }
    });
    assert!(futures::future::join_all(connects).await.iter().all(|s| *s == 200));

    let started = Instant::now();
    stack
        .send(
            "member-0=",
            "sendmessage",
            r#"{"action":"sendmessage","message":"hi all"}"#,
        )
        .await;
    let elapsed = started.elapsed();
    assert_eq!(stack.endpoint.recipients().len(), 200);
    for i in 0..200 {
        let received = stack.endpoint.received(&format!("member-{i}="));
        assert_eq!(received.len(), 1, "member {i} got exactly one message");
    }
    eprintln!("fan-out to 200 connections: {elapsed:?}");
}

/// The indexes lag behind the table, as on DynamoDB (aws-facts.md §10
/// "DynamoDB GSI"); the behaviour layer keeps fresh writes out of them for
/// 500 ms.
async fn lagging_indexes() -> Stack {
    let behaviours = chat_testkit::aws_behaviour::Behaviours {
        gsi_lag: true,
        ..chat_testkit::aws_behaviour::Behaviours::none()
    };
    Stack::start_through(behaviours, |_| {}).await
}

/// Waits (at most 5 s) until the room index lists `count` connections in `room`.
async fn listed(stack: &Stack, room: &str, count: usize) {
    let deadline = Instant::now() + std::time::Duration::from_secs(5);
    while stack.services.connections.in_room(room).await.unwrap().len() < count {
        assert!(Instant::now() < deadline, "the index never listed {count} in {room}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

fn texts(stack: &Stack, id: &str) -> Vec<String> {
    stack
        .endpoint
        .received_json(id)
        .iter()
        .filter_map(|event| event["text"].as_str().map(String::from))
        .collect()
}

#[tokio::test]
async fn the_sender_gets_its_message_even_before_the_index_shows_its_connection() {
    let stack = lagging_indexes().await;
    assert_eq!(stack.connect("alice-1=", "alice", "lobby").await.status_code, 200);
    stack
        .send(
            "alice-1=",
            "sendmessage",
            r#"{"action":"sendmessage","message":"first"}"#,
        )
        .await;
    assert_eq!(texts(&stack, "alice-1="), ["first"]);
}

#[tokio::test]
async fn a_join_holds_for_the_joiners_next_frame() {
    let stack = lagging_indexes().await;
    assert_eq!(stack.connect("alice-1=", "alice", "lobby").await.status_code, 200);
    listed(&stack, "lobby", 1).await;
    stack
        .send("alice-1=", "join", r#"{"action":"join","room":"general"}"#)
        .await;
    stack
        .send(
            "alice-1=",
            "sendmessage",
            r#"{"action":"sendmessage","message":"in general"}"#,
        )
        .await;
    let last = stack.last_event("alice-1=");
    assert_eq!(
        (last["room"].as_str(), last["text"].as_str()),
        (Some("general"), Some("in general"))
    );
    stack.assert_calls_allowed();
}

#[tokio::test]
async fn a_direct_message_to_a_user_connected_a_moment_ago_is_delivered() {
    let stack = lagging_indexes().await;
    assert_eq!(stack.connect("alice-1=", "alice", "lobby").await.status_code, 200);
    assert_eq!(stack.connect("bob-1=", "bob", "lobby").await.status_code, 200);
    stack
        .send(
            "alice-1=",
            "sendmessage",
            r#"{"action":"sendmessage","message":"hi bob","to":"bob"}"#,
        )
        .await;
    assert_eq!(texts(&stack, "bob-1="), ["hi bob"]);
    assert_eq!(texts(&stack, "alice-1="), ["hi bob"]);
    stack
        .send("alice-1=", "getmessages", r#"{"action":"getmessages","with":"bob"}"#)
        .await;
    stack.assert_calls_allowed();
}

/// A connection that left the room (or closed) a moment ago is still
/// listed by the room index (aws-facts.md §11 "GSI staleness"): it gets
/// none of the room's messages, not even an attempt.
#[tokio::test]
async fn who_left_the_room_a_moment_ago_gets_none_of_its_messages() {
    let stack = lagging_indexes().await;
    for (id, user) in [("alice-1=", "alice"), ("bob-1=", "bob"), ("carol-1=", "carol")] {
        assert_eq!(stack.connect(id, user, "lobby").await.status_code, 200);
    }
    listed(&stack, "lobby", 3).await;
    stack
        .send("bob-1=", "join", r#"{"action":"join","room":"general"}"#)
        .await;
    let closed = chat_core::handlers::disconnect::handle(
        &stack.services,
        crate::support::ws_event(chat_testkit::events::disconnect("carol-1=", None)),
    )
    .await;
    assert_eq!(closed.status_code, 200);
    stack.endpoint.clear();
    stack
        .send(
            "alice-1=",
            "sendmessage",
            r#"{"action":"sendmessage","message":"lobby only"}"#,
        )
        .await;
    assert_eq!(texts(&stack, "alice-1="), ["lobby only"]);
    assert_eq!(
        stack.endpoint.recipients(),
        std::collections::HashSet::from(["alice-1=".to_string()]),
        "bob moved to general and carol closed: neither is sent the lobby's message"
    );
    stack.assert_calls_allowed();
}

/// Deliveries stop a second before the function's timeout; the sender
/// learns how far the message got, and it is in the history for the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_too_large_for_the_time_left_tells_the_sender_how_far_the_message_got() {
    let stack = Stack::start().await;
    let connects = (0..300).map(|i| {
        let stack = &stack;
        async move {
            stack
                .connect(&format!("member-{i:03}="), &format!("user{i}"), "crowd")
                .await
                .status_code
        }
    });
    assert!(futures::future::join_all(connects).await.iter().all(|s| *s == 200));
    // 64 at a time, 400 ms each: 300 deliveries need 2 s; 0.3 s are left.
    stack.endpoint.set_latency(std::time::Duration::from_millis(400));
    let deadline = std::time::SystemTime::now() + std::time::Duration::from_millis(1300);
    let response = chat_core::runtime::with_deadline(
        deadline,
        stack.send(
            "member-150=",
            "sendmessage",
            r#"{"action":"sendmessage","message":"hi all"}"#,
        ),
    )
    .await;
    assert_eq!(response.status_code, 200);
    let sender = stack.endpoint.received_json("member-150=");
    assert_eq!(sender[0]["text"], "hi all", "the sender's own copy goes first");
    let last = sender.last().unwrap();
    assert_eq!(last["code"], "delivery_incomplete");
    let message = last["message"].as_str().unwrap();
    let delivered: usize = message
        .split("only ")
        .nth(1)
        .and_then(|rest| rest.split(" of 300").next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{message}"));
    // A delivery cut off at the deadline may still have landed.
    let landed = stack.endpoint.recipients().len();
    assert!(delivered > 0 && delivered < 300, "{message}");
    assert!(
        (delivered..delivered + 64).contains(&landed),
        "{landed} landed, {message}"
    );
    assert_eq!(stack.message_count().await, 1, "stored for everyone's history");
}

/// A short timeout still delivers: the margin is at most a quarter of the
/// time left.
#[tokio::test]
async fn a_short_timeout_still_delivers_to_a_small_room() {
    let stack = Stack::start().await;
    stack.connect("alice-1=", "alice", "lobby").await;
    stack.connect("bob-1=", "bob", "lobby").await;
    let deadline = std::time::SystemTime::now() + std::time::Duration::from_millis(500);
    chat_core::runtime::with_deadline(
        deadline,
        stack.send(
            "alice-1=",
            "sendmessage",
            r#"{"action":"sendmessage","message":"quick"}"#,
        ),
    )
    .await;
    assert_eq!(texts(&stack, "alice-1="), ["quick"]);
    assert_eq!(texts(&stack, "bob-1="), ["quick"]);
}

/// A room full of stale records is pruned at most 50 per message, after the
/// deliveries: one message never fires a burst of transactions at the
/// counter, and the next messages prune the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_connections_are_pruned_at_most_50_per_message() {
    let stack = Stack::start().await;
    assert_eq!(stack.connect("alice-1=", "alice", "stale").await.status_code, 200);
    for i in 0..60 {
        let id = format!("gone-{i:02}=");
        assert_eq!(stack.connect(&id, &format!("user{i}"), "stale").await.status_code, 200);
        stack.endpoint.mark_gone(&id);
    }
    let message = r#"{"action":"sendmessage","message":"anyone?"}"#;
    stack.send("alice-1=", "sendmessage", message).await;
    assert_eq!(stack.last_event("alice-1=")["text"], "anyone?");
    let pruned = chat_core::services::PRUNE_PER_INVOCATION;
    assert_eq!(stack.open_count().await, 61 - pruned as i64);
    stack.send("alice-1=", "sendmessage", message).await;
    assert_eq!(stack.open_count().await, 1, "the next message prunes the rest");
    assert_eq!(stack.services.connections.in_room("stale").await.unwrap(), ["alice-1="]);
}

/// `[limits] messages_per_minute_per_user`: a burst from several of one
/// user's connections passes exactly the limit; the rest is refused with
/// `rate_limited` and when to retry, and neither stored nor sent; another
/// user in the room is unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_over_the_per_minute_limit_is_told_when_to_retry_and_others_are_not() {
    let stack = Stack::start_with(|config| config.messages_per_minute_per_user = 5).await;
    let alice = ["alice-1=", "alice-2=", "alice-3="];
    for id in alice {
        assert_eq!(stack.connect(id, "alice", "lobby").await.status_code, 200);
    }
    assert_eq!(stack.connect("bob-1=", "bob", "lobby").await.status_code, 200);
    // The count is per minute: a burst across a minute's edge counts in two.
    let into_minute = ids::epoch_ms(std::time::SystemTime::now()) % 60_000;
    if into_minute > 55_000 {
        tokio::time::sleep(std::time::Duration::from_millis(60_100 - into_minute as u64)).await;
    }
    let burst = (0..9).map(|i| {
        let body = serde_json::json!({"action": "sendmessage", "message": format!("burst {i}")}).to_string();
        let stack = &stack;
        async move { stack.send(alice[i % 3], "sendmessage", &body).await }
    });
    futures::future::join_all(burst).await;

    let refusals: Vec<Value> = alice
        .iter()
        .flat_map(|id| stack.endpoint.received_json(id))
        .filter(|event| event["code"] == "rate_limited")
        .collect();
    assert_eq!(refusals.len(), 4, "9 sent, 5 allowed: {refusals:?}");
    for refusal in &refusals {
        let wait = refusal["retry_after_ms"].as_u64().unwrap();
        assert!((1..=60_000).contains(&wait), "{refusal}");
        assert!(
            refusal["message"].as_str().unwrap().contains("5 messages this minute"),
            "{refusal}"
        );
    }
    assert_eq!(stack.message_count().await, 5, "refused messages are not stored");
    let bursts = texts(&stack, "bob-1=")
        .iter()
        .filter(|t| t.starts_with("burst"))
        .count();
    assert_eq!(bursts, 5, "and not sent");

    stack
        .send(
            "bob-1=",
            "sendmessage",
            r#"{"action":"sendmessage","message":"bob is fine"}"#,
        )
        .await;
    assert_eq!(texts(&stack, "bob-1=").last().map(String::as_str), Some("bob is fine"));
    assert_eq!(stack.message_count().await, 6);
}
