use chat_core::event::WebSocketEvent;
use chat_core::handlers::{connect, disconnect};
use chat_testkit::events;
use serde_json::json;

use crate::support::{Stack, ws_event};

fn connect_event(id: &str, authorizer: Option<(&str, &str)>, protocol: Option<&str>) -> WebSocketEvent {
    ws_event(events::connect(id, authorizer, &[], protocol))
}

#[tokio::test]
async fn connect_stores_user_room_and_time_and_counts_the_connection() {
    let stack = Stack::start().await;
    let response = stack.connect("conn-A=", "alice", "general").await;
    assert_eq!(response.status_code, 200);
    assert!(response.headers.get("sec-websocket-protocol").is_none());

    let record = stack.services.connections.get("conn-A=").await.unwrap().unwrap();
    assert_eq!((record.user.as_str(), record.room.as_str()), ("alice", "general"));
    assert_eq!(record.connected_at, events::CONNECTED_AT);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(record.ttl > now + 7000 && record.ttl < now + 8000, "ttl {}", record.ttl);
    assert_eq!(stack.open_count().await, 1);
    assert_eq!(
        stack.services.connections.in_room("general").await.unwrap(),
        vec!["conn-A="]
    );
    assert_eq!(
        stack.services.connections.of_user("alice").await.unwrap(),
        vec!["conn-A="]
    );
}

#[tokio::test]
async fn connect_echoes_exactly_one_offered_subprotocol() {
    let stack = Stack::start().await;
    let event = connect_event("conn-P=", Some(("alice", "general")), Some("TOKEN.abc.def, general"));
    let response = connect::handle(&stack.services, event).await;
    assert_eq!(response.status_code, 200);
    assert_eq!(response.headers.get("sec-websocket-protocol").unwrap(), "TOKEN.abc.def");
}

#[tokio::test]
async fn bad_connects_are_refused_with_a_clear_status_and_store_nothing() {
    let stack = Stack::start().await;
    let mut no_connection_id = events::connect("x", Some(("alice", "lobby")), &[], None);
    no_connection_id["requestContext"]
        .as_object_mut()
        .unwrap()
        .remove("connectionId");
    let cases = [
        ("no authorizer context", connect_event("c1=", None, None), 401),
        (
            "invalid room",
            connect_event("c2=", Some(("alice", "no spaces")), None),
            400,
        ),
        (
            "oversized room",
            connect_event("c3=", Some(("alice", &"r".repeat(65))), None),
            400,
        ),
        ("invalid user", connect_event("c4=", Some(("a#b", "lobby")), None), 403),
        (
            "wrong subprotocol",
            connect_event("c5=", Some(("alice", "lobby")), Some("a, b, c")),
            400,
        ),
        (
            "empty subprotocol",
            connect_event("c6=", Some(("alice", "lobby")), Some(", lobby")),
            400,
        ),
        ("no connection id", ws_event(no_connection_id), 400),
    ];
    for (case, event, status) in cases {
        let response = connect::handle(&stack.services, event).await;
        assert_eq!(response.status_code, status, "{case}");
    }
    assert!(stack.items(&stack.services.config.connections_table).await.is_empty());
    assert_eq!(stack.open_count().await, 0);
}

#[tokio::test]
async fn the_connection_limit_holds_under_concurrent_connects() {
    let stack = Stack::start_with(|config| config.max_connections = 5).await;
    let attempts = (0..80).map(|i| {
        let stack = &stack;
        async move {
            stack
                .connect(&format!("conn-{i}="), &format!("user{i}"), "lobby")
                .await
                .status_code
        }
    });
    let statuses = futures::future::join_all(attempts).await;
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 5, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 75, "{statuses:?}");
    assert_eq!(stack.open_count().await, 5);
    assert_eq!(stack.services.connections.in_room("lobby").await.unwrap().len(), 5);

    // A disconnect frees a place.
    let admitted = stack.services.connections.in_room("lobby").await.unwrap();
    let response = disconnect::handle(&stack.services, ws_event(events::disconnect(&admitted[0], None))).await;
    assert_eq!(response.status_code, 200);
    assert_eq!(stack.connect("late=", "late", "lobby").await.status_code, 200);
    assert_eq!(stack.connect("later=", "later", "lobby").await.status_code, 429);
}

#[tokio::test]
async fn a_repeated_connect_counts_once() {
    let stack = Stack::start().await;
    assert_eq!(stack.connect("same=", "alice", "lobby").await.status_code, 200);
    assert_eq!(stack.connect("same=", "alice", "lobby").await.status_code, 200);
    assert_eq!(stack.open_count().await, 1);
}

#[tokio::test]
async fn disconnect_removes_the_record_once_and_is_idempotent() {
    let stack = Stack::start().await;
    stack.connect("conn-A=", "alice", "lobby").await;
    stack.connect("conn-B=", "bob", "lobby").await;
    for _ in 0..2 {
        let response = disconnect::handle(
            &stack.services,
            ws_event(events::disconnect("conn-A=", Some(("alice", "lobby")))),
        )
        .await;
        assert_eq!(response.status_code, 200);
    }
    assert!(stack.services.connections.get("conn-A=").await.unwrap().is_none());
    assert_eq!(stack.open_count().await, 1);
    assert_eq!(
        stack.services.connections.in_room("lobby").await.unwrap(),
        vec!["conn-B="]
    );

    let mut malformed = events::disconnect("x", None);
    malformed["requestContext"]["connectionId"] = json!("");
    let response = disconnect::handle(&stack.services, ws_event(malformed)).await;
    assert_eq!(response.status_code, 400);
    assert_eq!(stack.open_count().await, 1);
}

/// Records whose `$disconnect` never ran (TTL removes them later) leave
/// their count behind; it stops counting once API Gateway's 2-hour limit
/// guarantees those connections are closed, so the stack never locks up.
#[tokio::test]
async fn counts_left_by_lost_disconnects_expire_with_their_window() {
    use aws_sdk_dynamodb::types::AttributeValue;
    use chat_core::store::{count_window, schema};

    let stack = Stack::start_with(|config| config.max_connections = 2).await;
    let now = count_window(chat_core::ids::epoch_ms(std::time::SystemTime::now()));
    let n = |count: i64| AttributeValue::N(count.to_string());
    stack
        .dynamodb()
        .put_item()
        .table_name("test-connections")
        .item(schema::CONNECTION_ID, AttributeValue::S(schema::counter_id(0)))
        // Two windows ago: all closed by now, whatever the count says.
        .item(schema::count_attribute(now - 2), n(2))
        // The previous window: one may still be open.
        .item(schema::count_attribute(now - 1), n(1))
        .send()
        .await
        .unwrap();
    assert_eq!(stack.open_count().await, 1);

    assert_eq!(stack.connect("new=", "alice", "lobby").await.status_code, 200);
    assert_eq!(
        stack.connect("newer=", "bob", "lobby").await.status_code,
        429,
        "1 + 1 = the limit"
    );
    assert_eq!(stack.open_count().await, 2);
    // A disconnect lowers the count of the window the connection was counted in.
    let response = disconnect::handle(&stack.services, ws_event(events::disconnect("new=", None))).await;
    assert_eq!(response.status_code, 200);
    assert_eq!(stack.open_count().await, 1);
    assert_eq!(stack.connect("newer=", "bob", "lobby").await.status_code, 200);
}

/// DynamoDB cancels transactions that write one item at once (aws-facts.md
/// §10 "DynamoDB transactions"), as the behaviour layer does here, each
/// transaction taking 25 ms as on AWS.
fn conflicts() -> chat_testkit::aws_behaviour::Behaviours {
    chat_testkit::aws_behaviour::Behaviours {
        transaction_conflicts: true,
        timings: chat_testkit::aws_behaviour::Timings::real_scale(),
        ..chat_testkit::aws_behaviour::Behaviours::none()
    }
}

/// `count` connects at once, each of a user of its own, spread over 20
/// function instances as Lambda would run them; their statuses.
async fn burst(stack: &Stack, count: usize) -> Vec<i64> {
    burst_of(stack, count, |i| format!("user{i}")).await
}

/// `count` connects at once, of the users `user_of` names.
async fn burst_of(stack: &Stack, count: usize, user_of: impl Fn(usize) -> String) -> Vec<i64> {
    let instances: Vec<chat_core::Services> = (0..20).map(|_| stack.instance()).collect();
    let connects = (0..count).map(|i| {
        let services = &instances[i % instances.len()];
        let user = user_of(i);
        async move {
            let event = ws_event(events::connect(
                &format!("burst-{i}="),
                Some((&user, "lobby")),
                &[],
                None,
            ));
            connect::handle(services, event).await.status_code
        }
    });
    futures::future::join_all(connects).await
}

async fn disconnect_all(stack: &Stack, count: usize) {
    let disconnects = (0..count).map(|i| async move {
        let event = ws_event(events::disconnect(&format!("burst-{i}="), None));
        disconnect::handle(&stack.services, event).await.status_code
    });
    for status in futures::future::join_all(disconnects).await {
        assert_eq!(status, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_connects_through_transaction_conflicts_is_all_admitted() {
    let stack = Stack::start_through(conflicts(), |_| {}).await;
    let statuses = burst(&stack, 200).await;
    assert!(
        statuses.iter().all(|s| *s == 200),
        "every handshake succeeds: {statuses:?}"
    );
    assert!(
        stack.layer_answers("TransactionCanceledException") > 0,
        "DynamoDB cancelled some of the transactions"
    );
    assert_eq!(stack.open_count().await, 200);
    disconnect_all(&stack, 200).await;
    assert_eq!(
        stack.open_count().await,
        0,
        "every close is uncounted, conflicts or not"
    );
    stack.assert_calls_allowed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_past_the_limit_admits_exactly_the_limit_and_refuses_the_rest_with_429() {
    let stack = Stack::start_through(conflicts(), |config| config.max_connections = 100).await;
    let statuses = burst(&stack, 200).await;
    let admitted = statuses.iter().filter(|s| **s == 200).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!((admitted, refused), (100, 100), "{statuses:?}");
    assert_eq!(stack.open_count().await, 100);
    disconnect_all(&stack, 200).await;
    assert_eq!(stack.open_count().await, 0);
    assert_eq!(burst(&stack, 1).await, [200], "room again once they closed");
    stack.assert_calls_allowed();
}

/// `chatctl connections ban`: a banned user's handshake gets 403 and
/// nothing is registered or counted; a ban that ended, or was lifted, keeps
/// nobody out; others are never affected.
#[tokio::test]
async fn a_banned_user_is_refused_until_the_ban_ends_or_is_lifted() {
    let stack = Stack::start().await;
    let store = &stack.services.connections;
    store.ban("mallory", None, Some("spam")).await.unwrap();
    let refused = stack.connect("mallory-1=", "mallory", "lobby").await;
    assert_eq!(refused.status_code, 403);
    assert!(
        matches!(&refused.body, Some(aws_lambda_events::encodings::Body::Text(text)) if text == "user mallory is banned"),
        "{:?}",
        refused.body
    );
    assert_eq!(stack.open_count().await, 0, "nothing counted");
    assert_eq!(stack.connect("alice-1=", "alice", "lobby").await.status_code, 200);

    let bans = store.bans().await.unwrap();
    assert_eq!(bans.len(), 1);
    assert_eq!(
        (bans[0].user.as_str(), bans[0].reason.as_deref(), bans[0].until),
        ("mallory", Some("spam"), None)
    );

    assert!(store.unban("mallory").await.unwrap());
    assert!(!store.unban("mallory").await.unwrap(), "lifted once");
    assert_eq!(stack.connect("mallory-2=", "mallory", "lobby").await.status_code, 200);

    // A ban that has ended keeps nobody out, and is not listed.
    let ended = chat_core::ids::epoch_ms(std::time::SystemTime::now()) - 1;
    store.ban("trudy", Some(ended), None).await.unwrap();
    assert_eq!(stack.connect("trudy-1=", "trudy", "lobby").await.status_code, 200);
    assert!(store.bans().await.unwrap().is_empty());
}

/// `[limits] connections_per_user`: a user past it gets 429 and nothing is
/// stored; another user is not affected; a close frees a slot.
#[tokio::test]
async fn a_user_past_connections_per_user_is_refused_and_a_close_frees_a_slot() {
    let stack = Stack::start_with(|config| config.connections_per_user = 3).await;
    for id in ["a1=", "a2=", "a3="] {
        assert_eq!(stack.connect(id, "alice", "lobby").await.status_code, 200);
    }
    let refused = stack.connect("a4=", "alice", "lobby").await;
    assert_eq!(refused.status_code, 429);
    assert_eq!(
        refused
            .body
            .as_ref()
            .map(|b| String::from_utf8_lossy(b).to_string())
            .as_deref(),
        Some("user alice already has its maximum of 3 open connections")
    );
    assert_eq!(stack.open_count().await, 3, "the refused connect is not counted");
    assert_eq!(stack.connect("b1=", "bob", "lobby").await.status_code, 200);

    let event = ws_event(events::disconnect("a2=", None));
    assert_eq!(disconnect::handle(&stack.services, event).await.status_code, 200);
    assert_eq!(stack.connect("a4=", "alice", "lobby").await.status_code, 200);
    assert_eq!(stack.connect("a5=", "alice", "lobby").await.status_code, 429);
}

/// One user's connects at once, through DynamoDB's transaction conflicts:
/// exactly the limit gets in (its slots are items of their own, so the
/// burst does not queue on one item), the rest get 429, and every close
/// gives its slot back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_users_burst_admits_exactly_its_limit() {
    let stack = Stack::start_through(conflicts(), |config| config.connections_per_user = 10).await;
    let statuses = burst_of(&stack, 30, |_| "alice".to_string()).await;
    let admitted = statuses.iter().filter(|s| **s == 200).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!((admitted, refused), (10, 20), "{statuses:?}");
    assert_eq!(stack.open_count().await, 10);
    disconnect_all(&stack, 30).await;
    assert_eq!(stack.open_count().await, 0);
    stack.assert_calls_allowed();
    let slots = stack.items("test-connections").await;
    assert!(
        slots
            .iter()
            .all(|item| !item["connection_id"].as_s().unwrap().starts_with("#slot#")),
        "every slot given back: {slots:?}"
    );
    let again = burst_of(&stack, 10, |_| "alice".to_string()).await;
    assert!(again.iter().all(|s| *s == 200), "{again:?}");
}

/// A connection whose `$disconnect` never ran (API Gateway has closed it by
/// the time its record expires) holds its slot until then, not for ever.
#[tokio::test]
async fn a_slot_held_past_its_expiry_is_taken_again() {
    use aws_sdk_dynamodb::types::AttributeValue;
    let stack = Stack::start_with(|config| config.connections_per_user = 1).await;
    let expired = (std::time::SystemTime::now() - std::time::Duration::from_secs(60))
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    stack
        .dynamodb()
        .put_item()
        .table_name("test-connections")
        .item(
            "connection_id",
            AttributeValue::S(chat_core::store::schema::slot_id("alice", 0)),
        )
        .item("holder", AttributeValue::S("lost=".into()))
        .item("expires", AttributeValue::N(expired.to_string()))
        .send()
        .await
        .unwrap();
    assert_eq!(stack.connect("a1=", "alice", "lobby").await.status_code, 200);
    assert_eq!(stack.connect("a2=", "alice", "lobby").await.status_code, 429);
}
