use serde_json::json;

use crate::support::Stack;

#[tokio::test]
async fn join_moves_the_connection_and_later_messages_follow_it() {
    let stack = Stack::start().await;
    stack.connect("alice-1=", "alice", "lobby").await;
    stack.connect("bob-1=", "bob", "lobby").await;
    stack.connect("carol-1=", "carol", "general").await;

    stack
        .send("alice-1=", "join", r#"{"action":"join","room":"general"}"#)
        .await;
    assert_eq!(stack.last_event("alice-1="), json!({"type":"joined","room":"general"}));
    assert_eq!(
        stack.services.connections.get("alice-1=").await.unwrap().unwrap().room,
        "general"
    );

    stack
        .send(
            "alice-1=",
            "sendmessage",
            r#"{"action":"sendmessage","message":"hi general"}"#,
        )
        .await;
    assert_eq!(stack.last_event("carol-1=")["room"], "general");
    assert!(stack.endpoint.received("bob-1=").is_empty());
    assert_eq!(stack.open_count().await, 3, "a move is not a new connection");
}

#[tokio::test]
async fn bad_joins_get_an_error_event_and_change_nothing() {
    let stack = Stack::start().await;
    stack.connect("alice-1=", "alice", "lobby").await;
    let cases = [
        (r#"{"action":"join"}"#, "invalid_request"),
        (r#"{"action":"join","room":5}"#, "invalid_request"),
        (r#"{"action":"join","room":""}"#, "invalid_room"),
        (r#"{"action":"join","room":"has space"}"#, "invalid_room"),
        ("join general", "invalid_json"),
    ];
    for (body, code) in cases {
        stack.send("alice-1=", "join", body).await;
        assert_eq!(stack.last_event("alice-1=")["code"], code, "{body}");
    }
    let long_room = format!(r#"{{"action":"join","room":"{}"}}"#, "r".repeat(65));
    stack.send("alice-1=", "join", &long_room).await;
    assert_eq!(stack.last_event("alice-1=")["code"], "invalid_room");
    assert_eq!(
        stack.services.connections.get("alice-1=").await.unwrap().unwrap().room,
        "lobby"
    );

    stack
        .send("ghost=", "join", r#"{"action":"join","room":"general"}"#)
        .await;
    assert_eq!(stack.last_event("ghost=")["code"], "not_connected");
}

#[tokio::test]
async fn default_names_the_valid_actions_and_the_caller() {
    let stack = Stack::start().await;
    stack.connect("alice-1=", "alice", "lobby").await;
    stack
        .send("alice-1=", "join", r#"{"action":"join","room":"general"}"#)
        .await;

    stack.send("alice-1=", "$default", r#"{"action":"dance"}"#).await;
    let event = stack.last_event("alice-1=");
    assert_eq!(event["type"], "error");
    assert_eq!(event["code"], "unknown_action");
    assert_eq!(event["actions"], json!(["sendmessage", "getmessages", "join"]));
    assert_eq!(event["connection_id"], "alice-1=");
    assert_eq!(event["user"], "alice");
    assert_eq!(event["room"], "general", "the current room, after the join");
    assert!(event["message"].as_str().unwrap().contains("dance"));

    stack.send("alice-1=", "$default", "just text").await;
    assert_eq!(stack.last_event("alice-1=")["code"], "invalid_json");
    stack.send("alice-1=", "$default", r#"{"message":"no action"}"#).await;
    assert_eq!(stack.last_event("alice-1=")["code"], "unknown_action");
}
