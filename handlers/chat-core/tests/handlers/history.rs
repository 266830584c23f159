use chat_core::ids;
use serde_json::{Value, json};

use crate::support::Stack;

async fn history(stack: &Stack, id: &str, request: Value) -> Value {
    let mut request = request;
    request["action"] = json!("getmessages");
    stack.send(id, "getmessages", &request.to_string()).await;
    stack.last_event(id)
}

fn texts(event: &Value) -> Vec<String> {
    event["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn history_pages_oldest_first_with_a_cursor_until_the_start() {
    let stack = Stack::start().await;
    stack.connect("alice-1=", "alice", "lobby").await;
    for i in 0..7 {
        stack
            .send(
                "alice-1=",
                "sendmessage",
                &json!({"action":"sendmessage","message":format!("m{i}")}).to_string(),
            )
            .await;
        // Distinct milliseconds, so the expected order is unambiguous.
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    stack.endpoint.clear();

    let first = history(&stack, "alice-1=", json!({"limit": 3})).await;
    assert_eq!(first["type"], "history");
    assert_eq!(texts(&first), ["m4", "m5", "m6"]);
    let next = first["next"].as_str().unwrap().to_string();
    assert_eq!(next, first["messages"][0]["id"]);

    let second = history(&stack, "alice-1=", json!({"limit": 3, "before": next})).await;
    assert_eq!(texts(&second), ["m1", "m2", "m3"]);
    let third = history(&stack, "alice-1=", json!({"limit": 3, "before": second["next"]})).await;
    assert_eq!(texts(&third), ["m0"]);
    assert_eq!(third["next"], Value::Null);

    let all = history(&stack, "alice-1=", json!({})).await;
    assert_eq!(all["messages"].as_array().unwrap().len(), 7);
    assert_eq!(all["next"], Value::Null);
    assert_eq!(
        stack.endpoint.received_json("alice-1=").len(),
        4,
        "history goes to the caller only"
    );
}

/// A client back from a cut asks for what came `after` the last message it
/// has: every message since, oldest first, in pages that say where the
/// next one starts, none twice, none missed.
#[tokio::test]
async fn what_came_after_a_message_comes_oldest_first_in_pages() {
    let stack = Stack::start().await;
    stack.connect("alice-1=", "alice", "lobby").await;
    for i in 0..8 {
        stack
            .send(
                "alice-1=",
                "sendmessage",
                &json!({"action":"sendmessage","message":format!("m{i}")}).to_string(),
            )
            .await;
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let all = history(&stack, "alice-1=", json!({})).await;
    let seen = all["messages"][1]["id"].as_str().unwrap().to_string();

    let first = history(&stack, "alice-1=", json!({"after": seen, "limit": 3})).await;
    assert_eq!(texts(&first), ["m2", "m3", "m4"]);
    assert_eq!(first["next"], Value::Null);
    assert_eq!(first["newer"], first["messages"][2]["id"]);
    let second = history(&stack, "alice-1=", json!({"after": first["newer"], "limit": 3})).await;
    assert_eq!(texts(&second), ["m5", "m6", "m7"]);
    assert!(second.get("newer").is_none(), "the newest page has no cursor: {second}");
    let newest = all["messages"][7]["id"].as_str().unwrap();
    let nothing = history(&stack, "alice-1=", json!({"after": newest})).await;
    assert_eq!(texts(&nothing), Vec::<String>::new());
    assert!(nothing.get("newer").is_none(), "nothing newer: no cursor");
}

#[tokio::test]
async fn a_direct_conversation_has_its_own_history() {
    let stack = Stack::start().await;
    stack.connect("alice-1=", "alice", "lobby").await;
    stack.connect("bob-1=", "bob", "lobby").await;
    stack
        .send(
            "alice-1=",
            "sendmessage",
            r#"{"action":"sendmessage","message":"room talk"}"#,
        )
        .await;
    stack
        .send(
            "alice-1=",
            "sendmessage",
            r#"{"action":"sendmessage","message":"to bob","to":"bob"}"#,
        )
        .await;
    stack
        .send(
            "bob-1=",
            "sendmessage",
            r#"{"action":"sendmessage","message":"to alice","to":"alice"}"#,
        )
        .await;

    let from_bob = history(&stack, "bob-1=", json!({"with": "alice"})).await;
    assert_eq!(texts(&from_bob), ["to bob", "to alice"]);
    let from_alice = history(&stack, "alice-1=", json!({"with": "bob"})).await;
    assert_eq!(texts(&from_alice), texts(&from_bob));
    let room = history(&stack, "alice-1=", json!({})).await;
    assert_eq!(texts(&room), ["room talk"]);
}

#[tokio::test]
async fn the_page_size_is_capped_at_100() {
    let stack = Stack::start().await;
    stack.connect("alice-1=", "alice", "lobby").await;
    let conversation = ids::room_conversation("lobby");
    let start = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    for i in 0..105u64 {
        let (id, ts) = ids::new_message_id(start + std::time::Duration::from_millis(i));
        let message = chat_core::protocol::ChatMessage {
            id,
            room: Some("lobby".into()),
            to: None,
            from: "alice".into(),
            text: format!("m{i}"),
            ts,
        };
        stack.services.messages.put(&conversation, &message, 0).await.unwrap();
    }
    let page = history(&stack, "alice-1=", json!({"limit": 500})).await;
    assert_eq!(page["messages"].as_array().unwrap().len(), 100);
    assert_eq!(page["messages"][99]["text"], "m104");
    assert!(page["next"].is_string());
}

#[tokio::test]
async fn bad_history_requests_get_an_error_event() {
    let stack = Stack::start().await;
    stack.connect("alice-1=", "alice", "lobby").await;
    let cases = [
        (json!({"limit": 0}), "invalid_limit"),
        (json!({"limit": -5}), "invalid_limit"),
        (json!({"limit": "ten"}), "invalid_request"),
        (json!({"limit": 2.5}), "invalid_request"),
        (json!({"before": "not-a-cursor"}), "invalid_cursor"),
        (json!({"before": ""}), "invalid_cursor"),
        (json!({"before": 7}), "invalid_request"),
        (json!({"with": "not valid"}), "invalid_user"),
        (json!({"after": "not-a-cursor"}), "invalid_cursor"),
        (json!({"after": ["x"]}), "invalid_request"),
        (
            json!({"after": "01ARZ3NDEKTSV4RRFFQ69G5FAV", "before": "01ARZ3NDEKTSV4RRFFQ69G5FAV"}),
            "invalid_request",
        ),
    ];
    for (request, code) in cases {
        let event = history(&stack, "alice-1=", request.clone()).await;
        assert_eq!(event["type"], "error", "{request}");
        assert_eq!(event["code"], code, "{request}");
    }
}
